#!/usr/bin/env bash
# Builds OVMF variable stores with bootgate's own Secure Boot keys enrolled:
#
#   build/ovmf/vars-bootgate.fd           PK, KEK; db = "bootgate test db"
#   build/ovmf/vars-bootgate-other-db.fd  same PK and KEK; db = "bootgate test db"
#                                         and "other vendor db"
#   build/ovmf/code.fd                    the Secure Boot OVMF code they belong to
#
# Keys come from build/keys (made by bootgate-keys gen if missing). Each store is
# made by booting a provisioning initramfs (u-root init + bootgate-enroll) under
# OVMF whose empty variable store is in setup mode; bootgate-enroll writes db,
# KEK and PK as signed updates. The store is then booted once more with
# `bootgate-enroll -check`, which must see SecureBoot=1, SetupMode=0 and exactly
# the expected certificates, before it is installed.
#
# Stores newer than the keys are kept; FORCE=1 rebuilds them. Logs:
# build/ovmf/ovmf.log (this script), build/ovmf/initramfs.log (u-root) and
# build/ovmf/{enroll,check}-*.log (the VMs' serial consoles).
#
# Environment: OVMF_CODE, OVMF_VARS (the empty store), BOOT_TIMEOUT (seconds per
# VM boot, default 180), FORCE.
set -euo pipefail
cd "$(dirname "$0")/.."

OVMF_CODE=${OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.secboot.fd}
OVMF_VARS=${OVMF_VARS:-/usr/share/OVMF/OVMF_VARS_4M.fd}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-180}
FORCE=${FORCE:-0}

keys=build/keys
out=build/ovmf
kernel=build/kernel/vmlinuz
efivarfs_ko=build/kernel/efivarfs.ko

# Output store and the db directories (inside the initramfs) it enrolls.
variants=(
  "vars-bootgate.fd /etc/enroll/db"
  "vars-bootgate-other-db.fd /etc/enroll/db,/etc/enroll/db-other"
)

say() { printf 'ovmf: %s\n' "$*"; }
die() { printf 'ovmf: error: %s\n' "$*" >&2; exit 1; }

for f in "$OVMF_CODE" "$OVMF_VARS"; do
  [ -f "$f" ] || die "$f not found (apt-get install ovmf)"
done
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"

mkdir -p "$out"
work=
exec > >(tee "$out/ovmf.log") 2>&1
tee_pid=$!
cleanup() {
  if [ -n "$work" ]; then rm -rf "$work"; fi
  # Let tee write the last lines before the caller goes on.
  exec >&- 2>&-
  wait "$tee_pid" 2>/dev/null || true
}
trap cleanup EXIT
start=$SECONDS

bash images/kernel.sh
for f in "$kernel" "$efivarfs_ko"; do
  [ -f "$f" ] || die "$f missing after images/kernel.sh"
done

go run ./images/cmd/bootgate-keys gen --dir "$keys" | sed 's/^/ovmf: /'
key_files=("$keys/PK.key" "$keys/PK.pem" "$keys/KEK.key" "$keys/KEK.pem" "$keys/db.der" "$keys/other-db.der")

if ! cmp -s "$OVMF_CODE" "$out/code.fd"; then
  cp "$OVMF_CODE" "$out/code.fd"
  say "copied $OVMF_CODE to $out/code.fd"
fi

# fresh FILE: FILE exists and is newer than every key and the empty store.
fresh() {
  local f=$1 k
  [ "$FORCE" = 1 ] && return 1
  [ -f "$f" ] || return 1
  for k in "${key_files[@]}" "$OVMF_VARS"; do
    [ "$f" -nt "$k" ] || return 1
  done
}

todo=()
for v in "${variants[@]}"; do
  name=${v%% *}
  if fresh "$out/$name"; then
    say "$out/$name is up to date"
  else
    todo+=("$v")
  fi
done
if [ ${#todo[@]} -eq 0 ]; then
  say "nothing to do ($((SECONDS - start)) s)"
  exit 0
fi

work=$(mktemp -d "$out/.work.XXXXXX")

# The provisioning initramfs holds the PK and KEK private keys: it lives only in
# $work and is removed on exit.
say "building the provisioning initramfs (u-root, about 40 s; log: $out/initramfs.log)"
t=$SECONDS
if ! go run github.com/u-root/u-root -o "$work/provision.cpio" \
    -defaultsh="" -uinitcmd="bootgate-enroll -poweroff" \
    -files "$keys/PK.key:etc/enroll/PK.key" \
    -files "$keys/PK.pem:etc/enroll/PK.pem" \
    -files "$keys/KEK.key:etc/enroll/KEK.key" \
    -files "$keys/KEK.pem:etc/enroll/KEK.pem" \
    -files "$keys/db.der:etc/enroll/db/db.der" \
    -files "$keys/other-db.der:etc/enroll/db-other/other-db.der" \
    -files "$efivarfs_ko:lib/modules/efivarfs.ko" \
    github.com/u-root/u-root/cmds/core/init ./images/cmd/bootgate-enroll \
    >"$out/initramfs.log" 2>&1; then
  tail -n 20 "$out/initramfs.log" >&2
  die "u-root failed; see $out/initramfs.log"
fi
say "initramfs: $(stat -c %s "$work/provision.cpio") bytes ($((SECONDS - t)) s)"

# boot LOGNAME VARS ARGS TAG: boots the provisioning initramfs with VARS as the
# variable store and uroot.uinitargs=ARGS, and shows bootgate-enroll's lines as
# they come (the whole console is kept in $out/LOGNAME.log). Returns 0 on
# TAG-OK, 1 on TAG-FAIL and 2 when the VM ended without a verdict.
boot() {
  local logname=$1 vars=$2 args=$3 tag=$4
  local logf="$out/$logname.log" t=$SECONDS pid rc=0
  : >"$logf"
  say "booting $logname: uinit args '$args' (timeout $BOOT_TIMEOUT s)"
  timeout -k 5 "$BOOT_TIMEOUT" qemu-system-x86_64 \
    -accel tcg -machine q35,smm=on -m 512 \
    -display none -monitor none -serial "file:$logf" \
    -global driver=cfi.pflash01,property=secure,value=on \
    -drive "if=pflash,format=raw,unit=0,file=$OVMF_CODE,readonly=on" \
    -drive "if=pflash,format=raw,unit=1,file=$vars" \
    -kernel "$kernel" -initrd "$work/provision.cpio" \
    -append "console=ttyS0 panic=-1 uroot.uinitargs=\"$args\"" \
    -nic none -no-reboot </dev/null &
  pid=$!
  tail -n +1 -F --pid="$pid" "$logf" 2>/dev/null |
    grep -a --line-buffered -E '^(bootgate-enroll:|BOOTGATE-)' |
    sed -u 's/\r$//; s/^/  vm: /' || true
  wait "$pid" || rc=$?
  if grep -a -q "^$tag-OK" "$logf"; then
    say "$logname: $tag-OK ($((SECONDS - t)) s)"
    return 0
  fi
  if grep -a -q "^$tag-FAIL" "$logf"; then
    say "$logname: $(grep -a -m1 "^$tag-FAIL" "$logf" | tr -d '\r'); see $logf" >&2
    return 1
  fi
  if [ "$rc" = 124 ]; then
    say "$logname: no verdict within $BOOT_TIMEOUT s; see $logf" >&2
  else
    say "$logname: VM ended without a verdict (exit status $rc); see $logf" >&2
  fi
  return 2
}

# boot_fresh LOGNAME SRC VARS ARGS TAG: copies SRC to VARS and boots it; a VM
# that ends without a verdict (killed, hung) is tried once more on a fresh copy.
boot_fresh() {
  local i rc
  for i in 1 2; do
    cp "$2" "$3"
    rc=0
    boot "$1" "$3" "$4" "$5" || rc=$?
    [ "$rc" = 2 ] || return "$rc"
    [ "$i" = 2 ] || say "$1: trying once more"
  done
  return 2
}

for v in "${todo[@]}"; do
  name=${v%% *}
  db=${v#* }
  stem=${name%.fd}
  boot_fresh "enroll-$stem" "$OVMF_VARS" "$work/$name" "-db=$db" BOOTGATE-ENROLL ||
    die "enrolling keys into $name failed"
  # Check a copy: every boot changes the store (boot counters, timestamps).
  boot_fresh "check-$stem" "$work/$name" "$work/$name.check" "-check -db=$db" BOOTGATE-CHECK ||
    die "$name does not enforce Secure Boot with the expected keys"
  mv -f "$work/$name" "$out/$name"
  say "installed $out/$name"
done

for f in "$out/code.fd" "$out"/vars-bootgate*.fd; do
  say "$(stat -c '%8s bytes  %n' "$f")"
done
say "done ($((SECONDS - start)) s)"
