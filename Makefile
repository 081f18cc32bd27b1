# Mizzen: entry points. `make test` is what CI runs.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

MIZZEN_CACHE ?= $(HOME)/.cache/mizzen
export MIZZEN_CACHE
# Build outputs live outside the clone, so a fresh clone reuses them and the tree stays clean.
export CARGO_TARGET_DIR ?= $(MIZZEN_CACHE)/target

CARGO ?= cargo
OPERATOR := $(CARGO_TARGET_DIR)/debug/mizzen-operator

.PHONY: help build test lint fmt unit crds check-crds

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## Build every binary
	$(CARGO) build --workspace --all-targets

test: lint unit ## Everything CI runs: format and lint checks, unit tests

lint: ## cargo fmt --check and clippy with -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

unit: ## Unit tests (API types, CEL rules, generated CRDs, operator pieces)
	$(CARGO) test --workspace

crds: ## Regenerate crds/ from the Rust types
	$(CARGO) run -q -p mizzen-operator -- crd --out-dir crds
