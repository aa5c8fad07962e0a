#!/usr/bin/env bash
# Builds everything the test boots need into build/, with progress:
#   build/kernel/               the pinned Debian kernel and the agent's NIC drivers (images/kernel.sh)
#   build/appliance/tls/        the appliance's TLS CA (built into the agent) and certificate
#   build/agent-initramfs.cpio.zst   u-root init + bootgate-agent, zstd
#   build/agent.efi             UKI (systemd stub + kernel + initramfs + cmdline) signed with the bootgate db key
#   build/agent-other.efi       the same UKI signed with the "other vendor" db key (firmware accepts it, policy must not)
#   build/agent-altered.efi     an agent UKI with another command line, signed with bootgate's key
#   build/prodos/               the production-OS test image: kernel + zstd initrd whose init prints a marker
#   build/ovmf/                 OVMF code and variable stores with bootgate's own PK/KEK/db enrolled
# Steps whose outputs are newer than their inputs are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
B=build
VERIFIER_ADDR=${VERIFIER_ADDR:-10.23.0.1:18443}  # the appliance on the test boot network (qemu/scenario): its TLS name
# The agent learns the attestation endpoint from the appliance's DHCP vendor
# option; bootgate.verifier=URL here would override it.
CMDLINE="console=ttyS0 quiet"
step() { printf '==> %s\n' "$*"; }
t0=$(date +%s)

step "kernel"
bash images/kernel.sh

step "keys and OVMF variable stores"
bash images/ovmf.sh

step "appliance TLS (the agent trusts its CA)"
mkdir -p $B/appliance
if [ "$(cat $B/appliance/tls/.host 2>/dev/null)" != "${VERIFIER_ADDR%:*}" ]; then
  rm -rf $B/appliance/tls
  go run ./verifier/cmd/bootgate tls init --dir $B/appliance/tls --host "${VERIFIER_ADDR%:*}" --host 127.0.0.1
  echo "${VERIFIER_ADDR%:*}" > $B/appliance/tls/.host
fi

step "agent initramfs (u-root)"
# agent_sources prints the files of this module the agent is built from, one a
# line: the Go and embedded files of every package in its dependencies (go
# list -deps, for the initramfs's target), so a package the agent starts to
# import is an input without anyone listing it.
agent_sources() {
  GOOS=linux GOARCH=amd64 CGO_ENABLED=0 go list -deps \
    -f '{{if and .Module .Module.Main}}{{range .GoFiles}}{{$.Dir}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$.Dir}}/{{.}}{{"\n"}}{{end}}{{end}}' \
    ./agent/cmd/bootgate-agent | grep -v '^$'
}
agent_list=$(agent_sources)
mapfile -t agent_inputs <<<"$agent_list"
if [ ! -f $B/agent-initramfs.cpio.zst ] || [ -n "$(find "${agent_inputs[@]}" go.mod go.sum $B/kernel/.stamp $B/appliance/tls/ca.pem -newer $B/agent-initramfs.cpio.zst -print -quit)" ]; then
  files=(-files "$B/appliance/tls/ca.pem:etc/bootgate/ca.pem")
  # The NIC drivers with their modules.dep and modules.alias, at the path
  # the kernel's release names (/lib/modules/RELEASE): u-root's init loads
  # only /lib/modules/*.ko, the agent loads the drivers for the NICs present.
  while IFS= read -r f; do files+=(-files "$f:${f#$B/kernel/modules/}"); done < <(find $B/kernel/modules -type f | sort)
  GOOS=linux GOARCH=amd64 CGO_ENABLED=0 go run github.com/u-root/u-root -o $B/agent-initramfs.cpio \
    -base /dev/null -defaultsh="" -uinitcmd="bootgate-agent -boot" "${files[@]}" \
    github.com/u-root/u-root/cmds/core/init ./agent/cmd/bootgate-agent 2>&1 | grep -E "ERROR|Successfully" || true
  zstd -q -f -19 -T0 $B/agent-initramfs.cpio -o $B/agent-initramfs.cpio.zst
  rm -f $B/agent-initramfs.cpio
fi
echo "agent initramfs: $(du -h $B/agent-initramfs.cpio.zst | cut -f1) ($(stat -c %s $B/agent-initramfs.cpio.zst) bytes, zstd)"

step "agent UKI"
go build -o $B/bin/bootgate-uki ./images/cmd/bootgate-uki
$B/bin/bootgate-uki build --kernel $B/kernel/vmlinuz --initrd $B/agent-initramfs.cpio.zst --cmdline "$CMDLINE" --out $B/agent-unsigned.efi
$B/bin/bootgate-uki sign --key $B/keys/db.key --cert $B/keys/db.pem --in $B/agent-unsigned.efi --out $B/agent.efi
$B/bin/bootgate-uki sign --key $B/keys/other-db.key --cert $B/keys/other-db.pem --in $B/agent-unsigned.efi --out $B/agent-other.efi
# An altered agent: another command line, signed with bootgate's own key, so
# firmware boots it; only its PCR 4 digest tells it apart.
$B/bin/bootgate-uki build --kernel $B/kernel/vmlinuz --initrd $B/agent-initramfs.cpio.zst --cmdline "$CMDLINE nokaslr" --out $B/agent-altered-unsigned.efi
$B/bin/bootgate-uki sign --key $B/keys/db.key --cert $B/keys/db.pem --in $B/agent-altered-unsigned.efi --out $B/agent-altered.efi
echo "agent UKI: $(du -h $B/agent.efi | cut -f1); Authenticode SHA-256 (its PCR 4 event): $($B/bin/bootgate-uki digest $B/agent.efi)"

step "production-OS test image"
mkdir -p $B/prodos/root
CGO_ENABLED=0 go build -o $B/prodos/root/init ./images/cmd/bootgate-prodinit
rm -rf $B/prodos/root/lib/modules
mkdir -p $B/prodos/root/lib $B/prodos/root/proc $B/prodos/root/sys $B/prodos/root/dev $B/prodos/root/etc
cp -r $B/kernel/modules/lib/modules $B/prodos/root/lib/modules
# zstd: the NIC drivers make the archive about 25 MB; the agent fetches,
# hashes and measures it before the kexec, and appends its attestation as a
# second, uncompressed cpio (the kernel unpacks both).
rm -f $B/prodos/initrd.cpio
(cd $B/prodos/root && find . -mindepth 1 | sed 's|^\./||' | cpio -o -H newc --quiet) | zstd -q -19 -T0 > $B/prodos/initrd.cpio.zst
# Under Secure Boot lockdown kexec_file_load trusts the kernel's builtin keys
# and the platform keyring (db); Debian's signer is in neither (the call fails
# with ENOKEY), so the production kernel carries bootgate's db signature instead.
$B/bin/bootgate-uki sign --replace --key $B/keys/db.key --cert $B/keys/db.pem --in $B/kernel/vmlinuz --out $B/prodos/vmlinuz
echo "production OS: $B/prodos/vmlinuz (signed with the bootgate db key), $B/prodos/initrd.cpio.zst ($(du -h $B/prodos/initrd.cpio.zst | cut -f1))"

step "images built in $(( $(date +%s) - t0 )) s"
