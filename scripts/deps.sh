#!/usr/bin/env bash
# Installs what bootgate's build, tests and demo need on Debian 12, and nothing
# that is already there. Safe to run repeatedly; needs root (or sudo) to install.
set -euo pipefail

packages=(
  swtpm swtpm-tools   # TPM emulator and its manufacturing tool (EK certificates)
  tpm2-tools          # inspecting TPMs by hand
  gcc libc6-dev       # cgo, for the TPM simulator used by unit tests
  qemu-system-x86 ovmf           # test hosts: QEMU with UEFI firmware (Secure Boot build)
  systemd-boot-efi binutils      # the EFI stub and objcopy for the agent's UKI
  zstd cpio                      # the agent initramfs and the production-OS test image
  iproute2                       # the test boot network: namespace, bridge, taps
  isc-dhcp-client busybox        # real DHCP clients for the DHCP gate's tests
  nftables                       # admission at the gateway (the nft tool, to inspect it)
  systemd                        # systemd-analyze checks the appliance's unit
  kea-admin kea-dhcp4-server     # make bench-dhcp: perfdhcp, and Kea to compare with
  chromium                       # the dashboard's test in a real headless browser
  postgresql                     # the store's PostgreSQL backend: tests start a throwaway cluster
  openssl ca-certificates curl
  make git
  kmod                           # depmod and modprobe resolve the agent's NIC drivers' dependencies
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Node and npm drive the browser test; a machine may have them from elsewhere
# than Debian (whose node 18 and npm 9 do).
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "deps: all packages present"
fi

# Go: the module's go directive names the toolchain. A machine with a Go of
# 1.21 or newer fetches that toolchain through the module proxy by itself.
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
  echo "deps: no Go toolchain found; installing Debian's and letting it fetch the pinned one"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq --no-install-recommends golang-go >/dev/null
fi

# The dashboard's browser test drives Chromium with playwright-core, pinned by
# its package-lock.json; npm ci installs exactly that (no browser download).
browser=verifier/admin/testdata/browser
if [ ! -d "$browser/node_modules/playwright-core" ] || [ "$browser/package-lock.json" -nt "$browser/node_modules" ]; then
  echo "deps: npm ci in $browser"
  (cd "$browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
