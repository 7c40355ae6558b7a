#!/usr/bin/env python3
"""Renders envoy/quickstart.yaml.in into plain Envoy YAML.

Used by `make run` (the quick start) and by the end-to-end tests (with their own ports and filter
configuration). Each quick-start provider goes to the bundled mock unless its API key is set in the
environment (OPENAI_API_KEY, ANTHROPIC_API_KEY): then it goes to the real API over TLS, and the key
reaches the Wasm VM through vm_config.environment_variables.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(ROOT, "envoy", "quickstart.yaml.in")
DEFAULT_WASM = os.path.join(ROOT, "target", "wasm32-wasip1", "release", "llmux.wasm")

REAL = {
    "openai": {"env": "OPENAI_API_KEY", "type": "openai", "cluster": "openai", "host": "api.openai.com"},
    "anthropic": {"env": "ANTHROPIC_API_KEY", "type": "anthropic", "cluster": "anthropic", "host": "api.anthropic.com"},
}


def quickstart_config(env=None):
    """The quick start's filter configuration; real providers where their key is set."""
    env = os.environ if env is None else env
    providers = {}
    for name, real in REAL.items():
        if env.get(real["env"]):
            providers[name] = {"type": real["type"], "cluster": real["cluster"], "host": real["host"],
                               "api_key_env": real["env"]}
        else:
            # The mock's test-control headers (x-mock-*) come from the client: this provider
            # lets them through (client headers reach providers only from an allow-list).
            providers[name] = {"type": real["type"], "cluster": "mock", "client_headers": ["x-mock-*"]}
    return {
        "providers": providers,
        "models": [
            {"name": "gpt-4o-mini", "deployments": [{"provider": "openai", "model": "gpt-4o-mini"}]},
            {"name": "claude-3-5-haiku",
             "deployments": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}]},
            {"name": "text-embedding-3-small",
             "deployments": [{"provider": "openai", "model": "text-embedding-3-small"}]},
        ],
        "max_request_bytes": 8388608,
        "timeout_ms": 600000,
        # Failover through the attempts cluster (docs/routing.md); GET /llmux/status for
        # loopback clients.
        "router": {"attempts_cluster": "llmux_attempts", "status": True},
        # The quick start's access log prints the llmux_* filter-state fields.
        "filter_state": True,
    }


# Requests LLMux does not route (unknown paths when `unknown_paths` is `passthrough`) land here.
DEFAULT_FALLBACK_ROUTE = """              - match: { prefix: "/" }
                direct_response:
                  status: 404
                  body:
                    inline_string: '{"error":{"message":"no route","type":"invalid_request_error","param":null,"code":"unknown_url"}}'"""


def render(listen_port=10000, admin_port=9901, mock_port=8081, wasm_path=DEFAULT_WASM,
           llmux_config=None, env=None, host_env_keys=None, fallback_route=DEFAULT_FALLBACK_ROUTE,
           extra_clusters="", access_log_path="/dev/stdout", extra_http_filters="",
           allow_on_headers_stop_iteration=True):
    env = os.environ if env is None else env
    if llmux_config is None:
        llmux_config = quickstart_config(env)
    if host_env_keys is None:
        host_env_keys = [r["env"] for r in REAL.values() if env.get(r["env"])]
    body = json.dumps(llmux_config, indent=2)
    indented = "\n".join("                    " + line for line in body.splitlines())
    with open(TEMPLATE) as f:
        text = f.read()
    for key, value in {
        "LISTEN_PORT": str(listen_port),
        "ADMIN_PORT": str(admin_port),
        "MOCK_PORT": str(mock_port),
        "WASM_PATH": wasm_path,
        "HOST_ENV_KEYS": ", ".join(host_env_keys),
        "LLMUX_CONFIG": indented,
        "FALLBACK_ROUTE": fallback_route,
        "EXTRA_CLUSTERS": extra_clusters,
        # HTTP filters before LLMux (e.g. jwt_authn for identity from JWT claims).
        "EXTRA_HTTP_FILTERS": extra_http_filters,
        "ACCESS_LOG_PATH": access_log_path,
    }.items():
        text = text.replace("{{" + key + "}}", value)
    if not allow_on_headers_stop_iteration:
        # Envoy's default (what Istio's WasmPlugin and Envoy Gateway render): LLMux notices that
        # bodies are withheld and says so (docs/deploy.md).
        text = "\n".join(line for line in text.split("\n")
                         if "allow_on_headers_stop_iteration" not in line
                         and "LLMux pauses the headers until it has read the body" not in line)
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listen-port", type=int, default=10000)
    ap.add_argument("--admin-port", type=int, default=9901)
    ap.add_argument("--mock-port", type=int, default=8081)
    ap.add_argument("--wasm", default=DEFAULT_WASM)
    ap.add_argument("--config", help="LLMux filter configuration (JSON file) instead of the quick start's")
    ap.add_argument("--access-log", default="/dev/stdout", help="JSON access log file")
    ap.add_argument("-o", "--output", default="-")
    a = ap.parse_args()
    cfg = None
    if a.config:
        with open(a.config) as f:
            cfg = json.load(f)
    text = render(a.listen_port, a.admin_port, a.mock_port, os.path.abspath(a.wasm), cfg,
                  access_log_path=a.access_log)
    if a.output == "-":
        sys.stdout.write(text)
    else:
        with open(a.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
