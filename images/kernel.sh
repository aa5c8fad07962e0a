#!/usr/bin/env bash
# Fetches the pinned Debian kernel package, checks its SHA-256, and unpacks
# the kernel and the modules listed in images/modules.txt into build/kernel/.
set -euo pipefail
cd "$(dirname "$0")/.."
. images/kernel.env
out=build/kernel
deb="$out/${KERNEL_PACKAGE}_${KERNEL_VERSION}_amd64.deb"
mkdir -p "$out"
if [ -f "$out/vmlinuz" ] && [ -f "$out/.sha256" ] && [ "$(cat "$out/.sha256")" = "$KERNEL_SHA256" ]; then
  echo "kernel: $KERNEL_PACKAGE $KERNEL_VERSION already unpacked"
  exit 0
fi
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
rm -rf "$out/x" "$out/modules"
dpkg-deb -x "$deb" "$out/x"
kver=$(ls "$out/x/lib/modules")
cp "$out/x/boot/vmlinuz-$kver" "$out/vmlinuz"
mkdir -p "$out/modules"
: > "$out/modules/order"
grep -v '^#' images/modules.txt | grep . | while read -r m; do
  cp "$out/x/lib/modules/$kver/kernel/$m" "$out/modules/"
  basename "$m" >> "$out/modules/order"
done
echo "$kver" > "$out/release"
rm -rf "$out/x"
echo "$KERNEL_SHA256" > "$out/.sha256"
echo "kernel: $kver unpacked: $out/vmlinuz, $(wc -l < "$out/modules/order") modules"
