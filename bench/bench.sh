#!/usr/bin/env bash
# `make bench`: installs the benchmark tools (pinned, idempotent, all inside bench/), then runs
# bench/run.py, which starts and stops every process itself. BENCH_QUICK=1: a short smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."

OHA_VERSION=1.16.0
LITELLM_VERSION=1.102.4       # never 1.82.7 / 1.82.8 (withdrawn: supply-chain compromise)
PORTKEY_VERSION=1.15.2
MATPLOTLIB_VERSION=3.11.2
export OHA_VERSION LITELLM_VERSION PORTKEY_VERSION

for tool in taskset python3 cargo valgrind callgrind_control; do
  command -v "$tool" >/dev/null || { echo "bench: '$tool' is required" >&2; exit 1; }
done
[ -f /usr/include/openssl/ssl.h ] || { echo "bench: OpenSSL headers are required (apt-get install libssl-dev pkg-config)" >&2; exit 1; }

# Load generator: oha from crates.io.
if ! bench/.tools/bin/oha --version 2>/dev/null | grep -q "$OHA_VERSION"; then
  echo "bench: installing oha $OHA_VERSION into bench/.tools"
  # (oha 1.16 does not build without a TLS feature; native-tls links the system OpenSSL.)
  cargo install --locked --quiet oha --version "$OHA_VERSION" --no-default-features --features native-tls --root bench/.tools
fi

# Orchestration and chart: bench/.venv with matplotlib.
if [ ! -f bench/.venv/.stamp-$MATPLOTLIB_VERSION ]; then
  echo "bench: creating bench/.venv (matplotlib $MATPLOTLIB_VERSION)"
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install --quiet --upgrade pip
  bench/.venv/bin/pip install --quiet "matplotlib==$MATPLOTLIB_VERSION"
  touch bench/.venv/.stamp-$MATPLOTLIB_VERSION
fi

# BENCH_ONLY=pairs (`make bench-pairs`): the cache-hit and guardrail timed pairs alone.
if [ "${BENCH_ONLY:-}" = pairs ]; then
  exec bench/.venv/bin/python bench/pairs.py
fi

# BENCH_ONLY=instructions (`make bench-instructions`): callgrind counts of LLMux alone; the peers
# are not needed.
if [ "${BENCH_ONLY:-}" = instructions ]; then
  cargo build --release --quiet --target wasm32-wasip1 -p noop-filter -p reference-filter
  exec bench/.venv/bin/python bench/run.py
fi

# LiteLLM proxy in its own venv.
if [ ! -f bench/.venv-litellm/.stamp-$LITELLM_VERSION ]; then
  echo "bench: creating bench/.venv-litellm (litellm[proxy] $LITELLM_VERSION)"
  python3 -m venv bench/.venv-litellm
  bench/.venv-litellm/bin/pip install --quiet --upgrade pip
  bench/.venv-litellm/bin/pip install --quiet "litellm[proxy]==$LITELLM_VERSION"
  touch bench/.venv-litellm/.stamp-$LITELLM_VERSION
fi

# Portkey gateway from npm.
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "bench: '$tool' is required" >&2; exit 1; }
done
if [ ! -f bench/.portkey/.stamp-$PORTKEY_VERSION ]; then
  echo "bench: installing @portkey-ai/gateway $PORTKEY_VERSION into bench/.portkey"
  mkdir -p bench/.portkey
  [ -f bench/.portkey/package.json ] || echo '{"private": true}' > bench/.portkey/package.json
  (cd bench/.portkey && npm install --no-audit --no-fund --silent --save-exact "@portkey-ai/gateway@$PORTKEY_VERSION")
  touch bench/.portkey/.stamp-$PORTKEY_VERSION
fi

# The native hot-path benchmark.
cargo build --release --quiet -p core-bench
cargo build --release --quiet --target wasm32-wasip1 -p noop-filter -p reference-filter

exec bench/.venv/bin/python bench/run.py
