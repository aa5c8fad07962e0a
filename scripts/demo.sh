#!/usr/bin/env bash
# Runs the demo: the appliance's attestation service and swtpm-backed test
# hosts. `make demo` installs the dependencies and builds bin/ first.
# The appliance keeps its state in a throwaway PostgreSQL cluster (-store
# sqlite: in SQLite).
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/bootgate-demo ./qemu/cmd/bootgate-demo
exec bin/bootgate-demo --work build/demo --bin bin "$@"
