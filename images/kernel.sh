#!/usr/bin/env bash
# Fetches the pinned Debian kernel package, checks its SHA-256, and unpacks
# into build/kernel/:
#   vmlinuz        the kernel
#   release        its version (uname -r)
#   efivarfs.ko    for the key-enrollment image (images/ovmf.sh)
#   modules/       a module tree for an initramfs: lib/modules/RELEASE/ with
#                  the modules named in images/modules.txt, everything they
#                  depend on, and depmod's modules.dep and modules.alias of
#                  exactly that set
# Dependencies come from the package's own modules: depmod writes the pinned
# kernel's modules.dep, and modprobe --show-depends resolves each name
# through it, so no load order is kept by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
. images/kernel.env
out=build/kernel
deb="$out/${KERNEL_PACKAGE}_${KERNEL_VERSION}_amd64.deb"
stamp="$KERNEL_SHA256 $(sha256sum images/modules.txt | cut -d' ' -f1)"
mkdir -p "$out"
if [ -f "$out/vmlinuz" ] && [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "kernel: $KERNEL_PACKAGE $KERNEL_VERSION already unpacked"
  exit 0
fi
for t in depmod modprobe; do
  command -v $t >/dev/null || [ -x /usr/sbin/$t ] || { echo "kernel: $t not found (apt-get install kmod)" >&2; exit 1; }
done
export PATH="$PATH:/usr/sbin:/sbin"
if [ ! -f "$deb" ]; then
  echo "kernel: downloading $KERNEL_PACKAGE=$KERNEL_VERSION"
  if ! (cd "$out" && apt-get download -qq "$KERNEL_PACKAGE=$KERNEL_VERSION" 2>/dev/null); then
    echo "kernel: refreshing the package lists"
    apt-get update -qq
    (cd "$out" && apt-get download -qq "$KERNEL_PACKAGE=$KERNEL_VERSION" 2>/dev/null) || {
      echo "kernel: apt-get download $KERNEL_PACKAGE=$KERNEL_VERSION failed" >&2; exit 1; }
  fi
fi
echo "$KERNEL_SHA256  $deb" | sha256sum -c --quiet - || { echo "kernel: SHA-256 mismatch for $deb" >&2; rm -f "$deb"; exit 1; }
rm -rf "$out/x" "$out/modules" "$out/.stamp"
dpkg-deb -x "$deb" "$out/x"
kver=$(ls "$out/x/lib/modules")
cp "$out/x/boot/vmlinuz-$kver" "$out/vmlinuz"
depmod -b "$out/x" "$kver"
# modprobe prints "insmod PATH" for each module in load order (dependencies
# first) and "builtin NAME" for what the kernel has built in; it fails on a
# name the kernel does not have.
mapfile -t names < <(grep -v '^#' images/modules.txt | grep .)
mods=$(for m in "${names[@]}" efivarfs; do
  modprobe -d "$out/x" -S "$kver" --show-depends "$m" || { echo "kernel: no module $m in $KERNEL_PACKAGE" >&2; exit 1; }
done | awk '$1 == "insmod" {print $2}' | sort -u)
src="$out/x/lib/modules/$kver"
dst="$out/modules/lib/modules/$kver"
for p in $mods; do
  rel=${p#*/lib/modules/$kver/}
  [ "$(basename "$rel")" = efivarfs.ko ] && { cp "$p" "$out/efivarfs.ko"; continue; }
  mkdir -p "$dst/$(dirname "$rel")"
  cp "$p" "$dst/$rel"
done
cp "$src/modules.builtin" "$src/modules.builtin.modinfo" "$src/modules.order" "$dst/"
depmod -b "$out/modules" "$kver"
# The agent reads modules.dep and modules.alias; the rest of depmod's output
# only takes room in the initramfs.
find "$dst" -maxdepth 1 -type f ! -name modules.dep ! -name modules.alias -delete
echo "$kver" > "$out/release"
rm -rf "$out/x"
echo "$stamp" > "$out/.stamp"
echo "kernel: $kver unpacked: $out/vmlinuz; $(find "$dst" -name '*.ko' | wc -l) modules ($(du -sk "$dst" | cut -f1) KiB) for ${#names[@]} drivers"
