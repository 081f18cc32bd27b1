# Mizzen: entry points. `make test` is what CI runs.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

MIZZEN_CACHE ?= $(HOME)/.cache/mizzen
export MIZZEN_CACHE
# Build outputs live outside the clone, so a fresh clone reuses them and the tree stays clean.
export CARGO_TARGET_DIR ?= $(MIZZEN_CACHE)/target

CARGO ?= cargo
OPERATOR := $(CARGO_TARGET_DIR)/debug/mizzen-operator

.PHONY: help build test lint fmt unit bench demo e2e e2e-on-running-cluster cluster-up cluster-down cluster-binaries crds manifests images

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## Build every binary
	$(CARGO) build --workspace --all-targets

test: lint unit e2e ## Everything CI runs: format and lint checks, unit tests, e2e on a fresh cluster

lint: ## cargo fmt --check and clippy with -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

unit: ## Unit and service tests: API types, CEL rules, CRDs, operator; mizzen-serve (release, as attacked) with real ONNX Runtime
	$(CARGO) build --release -p mizzen-serve
	MIZZEN_SERVE_BIN=$(CARGO_TARGET_DIR)/release/mizzen-serve $(CARGO) test

e2e: ## The e2e suite on a fresh local cluster, torn down afterwards (MIZZEN_CLUSTER=kind: on kind)
	hack/e2e.sh

e2e-on-running-cluster: ## The e2e suite against the cluster that is up now (fast iteration)
	$(CARGO) build -p mizzen-operator -p mizzen-train
	$(CARGO) test -p mizzen-e2e --test e2e

cluster-up: ## Start the local cluster (kubeconfig in .cluster/kubeconfig); idempotent
	hack/cluster/up.sh

cluster-down: ## Stop the local cluster and remove its state
	hack/cluster/down.sh

cluster-binaries: ## Build the pinned Kubernetes, etcd, kwok and helm binaries into the cache
	hack/cluster/build.sh

demo: ## The end-to-end tour: serve a model, then roll ModelDeployments out blue-green on a local cluster
	hack/demo/demo.sh

bench: ## Benchmarks: mizzen-serve vs FastAPI vs MLServer; mizzen-train vs scikit-learn; mizzen-registry vs mlflow server; mizzen-features vs feast serve; the operator with 500 ModelDeployments
	$(CARGO) build --release -p mizzen-serve -p mizzen-bench -p mizzen-operator -p mizzen-train -p mizzen-registry -p mizzen-features
	hack/bench.sh

images: ## Build the images of mizzen-serve, mizzen-train and mizzen-operator without Docker, into the real node if it runs
	hack/images/build.sh

manifests: ## Render manifests/install.yaml and manifests/operator.yaml from the Helm chart
	hack/render-manifests.sh

crds: ## Regenerate crds/ and the Helm chart's crds/ from the Rust types
	$(CARGO) run -q -p mizzen-operator -- crd --out-dir crds
	$(CARGO) run -q -p mizzen-operator -- crd --out-dir charts/mizzen/crds
