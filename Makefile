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

.PHONY: test
test: deps check ## Run every test: unit (simulator), integration (swtpm) and end to end
	$(GO) test -count=1 ./...

.PHONY: bench
bench: deps ## Run the benchmarks (verification cost, API exchange)
	$(GO) test -run '^$$' -bench . -benchmem ./verifier/...

.PHONY: demo
demo: deps build ## Start the verifier and two swtpm-backed agents: one admitted, one quarantined
	@bash scripts/demo.sh

.PHONY: clean
clean: ## Remove build outputs
	rm -rf $(BIN) build
