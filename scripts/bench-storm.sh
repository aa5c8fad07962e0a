#!/usr/bin/env bash
# Boot storm: simulated hosts, each with its own TPM impersonated in software
# (an EK certified by a test manufacturer the appliance trusts, an AK,
# credential activation, a quote over a real firmware log, identity key
# certification, sealed credentials it unseals), attest over TLS to real
# appliance processes on 127.0.0.1. Prints a table row (hosts admitted per
# second, p50 and p99 per host, errors, retries, CPU seconds per admitted
# host of the appliances and of the generator); last line:
#   storm: N hosts in S s, p99 P ms, errors E
# The appliances serve the attestation API only: DHCP and the gateway need
# network namespaces and root, and the storm measures attestation, so they
# are left out (the link check still runs: each host connects from its own
# 127.x.y.z address and quotes it).
# Without STORE and REPLICAS it runs the table of the four set-ups, each
# with a fresh store: PostgreSQL with two replicas and with one, SQLite with
# two and with one (last, so that its storm: line ends the output).
# PostgreSQL is a throwaway cluster in the run's temporary directory
# (Debian's postgresql: initdb and pg_ctl, a Unix socket only, no TCP).
# Parameters (environment):
#   HOSTS (10000), CONCURRENCY (32): simulated hosts, and hosts in flight;
#   STORE: sqlite, postgres (a throwaway cluster), or a postgres:// URL;
#   REPLICAS: appliance processes on consecutive ports sharing STORE, one
#     attestation CA and one session key; host i goes to replica i mod
#     REPLICAS;
#   PROFILE (empty): set to 1 to write each appliance's CPU profile and print
#     its top functions, or to a directory to also keep the profiles and the
#     appliance binary there (go tool pprof DIR/bootgate DIR/cpu-PORT.pprof);
#   EVENTLOG (testdata/eventlogs/rhel8-uefi.bin): the firmware log every host
#     booted with; the policy is learned from it;
#   HEADER (1): set to 0 to print the table row without its header, for a
#     table of several runs (run the single SQLite appliance last: its
#     storm: line is then the last line).
set -euo pipefail
cd "$(dirname "$0")/.."
HOSTS=${HOSTS:-10000}
CONCURRENCY=${CONCURRENCY:-32}
if [ -z "${STORE:-}" ] && [ -z "${REPLICAS:-}" ]; then
  export HOSTS CONCURRENCY
  STORE=postgres REPLICAS=2 HEADER=1 bash "$0"
  STORE=postgres REPLICAS=1 HEADER=0 bash "$0"
  STORE=sqlite REPLICAS=2 HEADER=0 bash "$0"
  exec env STORE=sqlite REPLICAS=1 HEADER=0 bash "$0"
fi
STORE=${STORE:-sqlite}
REPLICAS=${REPLICAS:-1}
PROFILE=${PROFILE:-}
EVENTLOG=${EVENTLOG:-testdata/eventlogs/rhel8-uefi.bin}
PORT=${PORT:-18443}
HEADER=${HEADER:-1}
work=$(mktemp -d /tmp/bench-storm.XXXXXX)
chmod 755 "$work" # the PostgreSQL server's user reaches its directory in it
pids=()
pgctl=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ ${#pgctl[@]} -gt 0 ] && "${pgctl[@]}" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/bootgate" ./verifier/cmd/bootgate
go build -o "$work/bootgate-storm" ./verifier/cmd/bootgate-storm
"$work/bootgate" tls init --dir "$work/tls" --host 127.0.0.1 >/dev/null
"$work/bootgate" policy learn --name storm --eventlog "$EVENTLOG" > "$work/policy.yaml"
"$work/bootgate-storm" manufacture --dir "$work/manufacturer"
mkdir -p "$work/roots" && cp "$work/manufacturer/manufacturer.pem" "$work/roots/"
# pg_start starts a throwaway PostgreSQL cluster in $work/pg, listening on
# a Unix socket there only, and sets store to its URL. The server refuses
# to run as root: as root it runs as the postgres user.
pg_start() {
  local bin as=()
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -x "$bin/initdb" ] || { echo "bench-storm: no PostgreSQL server (apt-get install postgresql)" >&2; exit 1; }
  mkdir -p "$work/pg"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$work/pg"; as=(runuser -u postgres --); fi
  "${as[@]}" "$bin/initdb" -D "$work/pg/data" -A trust -U bootgate -E UTF8 --no-sync >/dev/null
  pgctl=("${as[@]}" "$bin/pg_ctl")
  "${pgctl[@]}" -D "$work/pg/data" -l "$work/pg/log" -w -o "-k $work/pg -c listen_addresses= -c max_connections=200" start >/dev/null
  "${as[@]}" "$bin/createdb" -h "$work/pg" -U bootgate storm
  store="postgres://bootgate@/storm?host=$work/pg"
}
case "$STORE" in
  sqlite) store=bootgate.db ;;
  postgres) pg_start ;;
  *) store=$STORE ;;
esac

wait_listen() { # PORT PID: until the port accepts connections (at most 20 s)
  for _ in $(seq 200); do
    kill -0 "$2" 2>/dev/null || { echo "bench-storm: the appliance on port $1 exited:" >&2; cat "$work/appliance-$1.log" >&2; exit 1; }
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench-storm: nothing listens on port $1" >&2; exit 1
}

urls=()
for ((i = 0; i < REPLICAS; i++)); do
  port=$((PORT + i))
  cat > "$work/appliance-$port.yaml" <<CFG
listen: "127.0.0.1:$port"
tls: {cert: tls/server.pem, key: tls/server-key.pem}
policy: policy.yaml
store: "$store"
session_key: session.key
ek: {roots: roots}
pki: {dir: pki}
CFG
  prof=()
  [ -n "$PROFILE" ] && prof=(--cpuprofile "$work/cpu-$port.pprof")
  "$work/bootgate" serve --config "$work/appliance-$port.yaml" "${prof[@]}" > "$work/appliance-$port.log" 2>&1 &
  pids+=($!)
  # The first replica creates the attestation CA the others load.
  wait_listen "$port" "$!"
  urls+=("https://127.0.0.1:$port")
done

echo "load: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs; $HOSTS hosts, concurrency $CONCURRENCY, store $STORE, $REPLICAS replica(s)" >&2
status=0
genprof=()
[ -n "$PROFILE" ] && genprof=(--cpuprofile "$work/cpu-generator.pprof")
"$work/bootgate-storm" run "${genprof[@]}" --manufacturer "$work/manufacturer" --ca "$work/tls/ca.pem" \
  --url "$(IFS=,; echo "${urls[*]}")" --pid "$(IFS=,; echo "${pids[*]}")" \
  --eventlog "$EVENTLOG" --hosts "$HOSTS" --concurrency "$CONCURRENCY" \
  --label "$STORE x$REPLICAS" --header="$([ "$HEADER" = 0 ] && echo false || echo true)" || status=$?

for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()
if [ -n "$PROFILE" ]; then
  for f in "$work"/cpu-[0-9]*.pprof; do
    echo "==> appliance CPU profile $(basename "$f")" >&2
    go tool pprof -top -nodecount=30 "$work/bootgate" "$f" 2>/dev/null | head -40 >&2
  done
  [ -d "$PROFILE" ] && cp "$work/bootgate" "$work/bootgate-storm" "$work"/cpu-*.pprof "$PROFILE"/
fi
exit $status
