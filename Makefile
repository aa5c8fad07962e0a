# bootgate — `make help` lists the targets.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := bin

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install the Debian packages the build, tests and demo need
	@bash scripts/deps.sh

.PHONY: build
build: ## Build bin/bootgate (appliance and operator CLI) and bin/bootgate-agent
	$(GO) build -o $(BIN)/bootgate ./verifier/cmd/bootgate
	$(GO) build -o $(BIN)/bootgate-agent ./agent/cmd/bootgate-agent

.PHONY: check
check: ## gofmt, go vet and go mod tidy must leave nothing to change
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	@$(GO) mod tidy -diff >/dev/null || { echo "go mod tidy would change go.mod/go.sum"; exit 1; }

.PHONY: images
images: deps ## Build the kernel, agent initramfs, signed UKIs, OVMF key stores and production-OS image into build/
	@bash images/build.sh

.PHONY: test
test: deps check images ## Run every test: unit (simulator), integration (swtpm), end to end (QEMU boots)
	@# One package at a time: the QEMU boots (six TCG guests) and the storm
	@# failover tests each need the machine's cores to themselves.
	$(GO) test -count=1 -p 1 -timeout 40m ./...

.PHONY: bench
bench: deps ## Run the benchmarks (verification cost, API exchange, admin API on 10000 hosts)
	$(GO) test -run '^$$' -bench . -benchmem ./verifier/...

.PHONY: bench-dashboard
bench-dashboard: deps ## The dashboard in headless Chromium on 10000 hosts and 1000 incidents: time to list, open an incident, follow a change
	BOOTGATE_DASHBOARD_SEED=10000,1000 $(GO) test -count=1 -run TestDashboardInBrowser -v ./verifier/admin

.PHONY: bench-dhcp
bench-dhcp: deps ## perfdhcp against bootgate's DHCP gate and against Kea; last line: dhcp-gate-vs-kea: RATIO
	@bash scripts/bench-dhcp.sh

.PHONY: bench-storm
bench-storm: deps ## Boot storm: HOSTS (10000) software-TPM hosts attest over TLS; PostgreSQL and SQLite, two replicas and one; last line: storm: N hosts in S s, p99 P ms, errors E (SQLite, one appliance)
	@bash scripts/bench-storm.sh

.PHONY: demo
demo: deps build images ## Boot QEMU hosts against the appliance: who gets into the production OS, who is quarantined
	@bash scripts/demo.sh

.PHONY: demo-processes
demo-processes: deps build ## The quick demo: agent processes with swtpm replay recorded firmware logs
	@bash scripts/demo.sh -mode process

.PHONY: clean
clean: ## Remove build outputs
	rm -rf $(BIN) build
