#!/usr/bin/env bash
# Benchmarks bootgate's DHCP gate against Kea (memfile backend) with perfdhcp,
# on the same pair of network namespaces, one server after the other, and
# prints leases per second for both and their ratio on the last line:
#   dhcp-gate-vs-kea: RATIO
# Needs root, Debian's kea-admin (perfdhcp) and kea-dhcp4-server.
# RATE (offered exchanges/s, default 10000) and DURATION (seconds, default 10) tune it.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-10000}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-200000}
work=$(mktemp -d /tmp/bench-dhcp.XXXXXX)
id=$$
S=bgbs$id C=bgbc$id
cleanup() {
  [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null && wait "$srv" 2>/dev/null || true
  ip netns delete $S 2>/dev/null || true
  ip netns delete $C 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for b in perfdhcp kea-dhcp4; do command -v $b >/dev/null || { echo "bench-dhcp: $b not found (Debian packages kea-admin, kea-dhcp4-server)" >&2; exit 1; }; done

ip netns add $S; ip netns add $C
ip link add vs netns $S type veth peer name vc netns $C
ip -n $S addr add 10.16.0.1/12 dev vs; ip -n $S link set vs up; ip -n $S link set lo up
ip -n $C addr add 10.16.0.2/12 dev vc; ip -n $C link set vc up; ip -n $C link set lo up

measure() { # prints the achieved 4-way exchange rate (perfdhcp exits 3 when some exchanges did not complete)
  { ip netns exec $C perfdhcp -4 -l vc -r "$RATE" -R "$CLIENTS" -p "$DURATION" 2>&1 || true; } | tee "$work/perfdhcp-$1.log" |
    awk '/^Rate:/ {print $2; exit}' || true
}

echo "==> bootgate's DHCP gate (SQLite leases, attestation gating on: every client is unknown, so quarantine pool)"
go build -o "$work/bootgate" ./verifier/cmd/bootgate
"$work/bootgate" tls init --dir "$work/tls" --host 10.16.0.1 >/dev/null
"$work/bootgate" policy learn --eventlog testdata/eventlogs/rhel8-uefi.bin > "$work/policy.yaml"
mkdir -p "$work/roots" && cp "$work/tls/ca.pem" "$work/roots/"
cat > "$work/appliance.yaml" <<CFG
listen: "10.16.0.1:18443"
tls: {cert: tls/server.pem, key: tls/server-key.pem}
policy: policy.yaml
store: bootgate.db
ek: {roots: roots}
dhcp:
  interface: vs
  server_ip: 10.16.0.1
  endpoint: https://10.16.0.1:18443
  ca: tls/ca.pem
  quarantine: {start: 10.17.0.0, end: 10.31.255.255, prefix_len: 12, lease_time: 10m}
  production: {start: 10.16.0.10, end: 10.16.0.250, prefix_len: 12, lease_time: 1h}
  relays: [10.16.0.2]   # perfdhcp sends as a relay agent (giaddr = its address)
CFG
ip netns exec $S "$work/bootgate" serve --config "$work/appliance.yaml" > "$work/bootgate.log" 2>&1 &
srv=$!
sleep 2
gate=$(measure gate)
kill $srv; wait $srv 2>/dev/null || true; srv=
echo "bootgate: $gate leases/s"

echo "==> Kea $(kea-dhcp4 -v) (memfile, persisted)"
cat > "$work/kea.json" <<CFG
{"Dhcp4": {
  "interfaces-config": {"interfaces": ["vs"], "dhcp-socket-type": "raw"},
  "lease-database": {"type": "memfile", "persist": true, "name": "$work/kea-leases.csv", "lfc-interval": 0},
  "valid-lifetime": 600,
  "subnet4": [{"id": 1, "subnet": "10.16.0.0/12", "pools": [{"pool": "10.17.0.0 - 10.31.255.255"}]}],
  "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "$work/kea.log"}], "severity": "WARN"}]
}}
CFG
KEA_PIDFILE_DIR=$work KEA_LOCKFILE_DIR=$work ip netns exec $S kea-dhcp4 -c "$work/kea.json" > "$work/kea.out" 2>&1 &
srv=$!
sleep 2
kea=$(measure kea)
kill $srv; wait $srv 2>/dev/null || true; srv=
echo "kea: $kea leases/s"
echo "offered $RATE exchanges/s for $DURATION s from up to $CLIENTS simulated clients"
awk -v g="$gate" -v k="$kea" 'BEGIN { if (k > 0) printf "dhcp-gate-vs-kea: %.2f\n", g / k; else print "dhcp-gate-vs-kea: n/a" }'
