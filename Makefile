# Every entry point a person uses. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export PATH := $(CURDIR)/.tools/bin:$(PATH)
export CARGO_TERM_COLOR ?= never

.PHONY: help deps test lint crds checks bench demo e2e e2e-existing e2e-kind

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

deps: ## Install what the tests need (idempotent; quick when all is there)
	@bash scripts/deps.sh

test: deps ## The test command: lint, every Rust test (unit, real Postgres/Redis, kube-sim e2e), the e2e suite's existing-cluster mode, every check
	$(MAKE) --no-print-directory lint
	rm -rf target/rbac-use
	# The e2e suite records what the operator's ServiceAccount was allowed and refused (checks/rbac-use.sh).
	KUMIKO_RBAC_USE_DIR=$(CURDIR)/target/rbac-use cargo nextest run --workspace --no-fail-fast
	# nextest does not run doctests: the runtime's guide (app-runtime/README.md) must compile.
	cargo test -p kumiko-runtime --doc
	bash scripts/e2e-existing.sh
	$(MAKE) --no-print-directory checks

lint: ## cargo fmt --check and clippy -D warnings
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

checks: ## The external checks in scripts/checks/ (kubernetes-validate, helm, actionlint, ...)
	@for check in scripts/checks/*.sh; do \
	  [ -e "$$check" ] || continue; \
	  echo "check: $$check"; \
	  bash "$$check"; \
	done

crds: ## Regenerate crds/kumikoapp.yaml (and the chart's copy) from the Rust types
	cargo run --quiet -p kumiko-operator -- crd > crds/kumikoapp.yaml
	@if [ -d charts/kumiko-operator/crds ]; then cp crds/kumikoapp.yaml charts/kumiko-operator/crds/kumikoapp.yaml; fi

bench: deps ## Benchmarks, printed as figures and ratios
	@for bench in scripts/bench/*.sh; do \
	  [ -e "$$bench" ] || continue; \
	  echo "bench: $$bench"; \
	  bash "$$bench"; \
	done

demo: deps ## From nothing to a Ready KumikoApp on the local cluster (kubeconfig: target/demo/kubeconfig; Ctrl-C stops)
	@bash scripts/demo.sh

e2e: deps ## The e2e suite on the local cluster (kube-sim)
	cargo build -p kumiko-runtime --bin kumiko-app
	cargo nextest run -p kumiko-e2e --no-fail-fast

e2e-existing: deps ## The e2e suite in its existing-cluster mode (the path e2e-kind takes) against a standalone kube-sim, the operator as a 2-replica Deployment
	@bash scripts/e2e-existing.sh

e2e-kind: ## The e2e suite on a kind cluster (needs Docker, kind): STEP=cluster|cnpg|images|chart|test|example|logs|down, default all
	@bash scripts/e2e-kind.sh $(or $(STEP),all)
