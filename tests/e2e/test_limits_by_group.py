"""Issue 14, items 3, 4 and 11, end to end.

- A per-model limit (`rate_limit.models`) binds the model group, whatever name reached it (an
  alias, or a name a wildcard group matched), and is counted under the group's name.
- A wildcard deployment's requests are priced from the upstream model they went out with; a
  budgeted key's request whose cost cannot be known is refused (403 `unpriced_model`), unless
  `unpriced: allow`.
- A configuration with values no request could survive is refused at load, naming the field.

Limits are counted per Envoy instance here (no rate-limit service): one gateway, one worker.
"""
import hashlib
import subprocess
import time

import pytest

import prom
from harness import WASM, envoy_path, free_port, new_id, render_envoy

USER = [{"role": "user", "content": "hi"}]


def sha(k):
    return hashlib.sha256(k.encode()).hexdigest()


def chat(g, model, alias=None):
    h = {"authorization": f"Bearer sk-{alias}"} if alias else {}
    return g.post("/v1/chat/completions", {"model": model, "messages": USER}, headers=h)


def not_at_a_minute_boundary():
    """Per-minute counters restart on the minute: keep a test's requests inside one."""
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)


def test_model_limit_binds_aliases_and_wildcard_matches(make_gateway):
    cfg = {
        "providers": {"oai": {"type": "openai", "cluster": "mock"}},
        "models": [{"name": "gpt", "aliases": ["g", "gpt-latest"],
                    "deployments": [{"provider": "oai", "model": "gpt-4o-mini"}]},
                   {"name": "mock/*", "deployments": [{"provider": "oai"}]}],
        # Named by an alias: binds the group all the same.
        "rate_limit": {"models": {"g": {"rpm": 3}, "mock/*": {"rpm": 2}}},
    }
    g = make_gateway(cfg, concurrency=1)
    not_at_a_minute_boundary()
    codes = [chat(g, m).status_code for m in ("gpt", "g", "gpt-latest", "gpt", "g")]
    assert codes == [200, 200, 200, 429, 429], codes
    err = chat(g, "gpt-latest").json()["error"]
    assert err["code"] == "rate_limit_exceeded"
    assert "model `gpt`" in err["message"], err["message"]
    # Every name the wildcard group serves shares its limit.
    codes = [chat(g, m).status_code for m in ("mock/a", "mock/b", "mock/c")]
    assert codes == [200, 200, 429], codes
    assert "model `mock/*`" in chat(g, "mock/d").json()["error"]["message"]
    assert "panicked" not in g.process.log()


def test_wildcard_requests_are_priced_from_the_upstream_model(make_gateway):
    budgeted, free, allowed = ("b-" + new_id()[:8], "f-" + new_id()[:8], "a-" + new_id()[:8])
    budget = {"amount_usd": 100, "period": "1d"}
    cfg = {
        "providers": {"oai": {"type": "openai", "cluster": "mock"}},
        "models": [{"name": "mock/*", "deployments": [{"provider": "oai"}]}],
        "auth": {"keys": [
            {"key_sha256": sha("sk-" + budgeted), "alias": budgeted, "budget": budget},
            {"key_sha256": sha("sk-" + free), "alias": free},
            {"key_sha256": sha("sk-" + allowed), "alias": allowed, "budget": budget,
             "unpriced": "allow"},
        ]},
    }
    g = make_gateway(cfg)
    # A dated name the bundled table knows: priced, and charged.
    r = chat(g, "mock/gpt-4o-mini-2024-07-18", budgeted)
    assert r.status_code == 200, r.text
    assert float(r.headers["x-llmux-cost-usd"]) > 0
    assert prom.total(prom.parse(g.prometheus()), "llmux_cost_nanousd") > 0
    # A name nothing prices: a budgeted key is refused before anything reaches the provider.
    r = chat(g, "mock/my-finetune", budgeted)
    assert r.status_code == 403, r.text
    err = r.json()["error"]
    assert (err["type"], err["code"]) == ("permission_error", "unpriced_model")
    assert "my-finetune" in err["message"]
    # Without a budget, or with `unpriced: allow`, it is served.
    assert chat(g, "mock/my-finetune", free).status_code == 200
    assert chat(g, "mock/my-finetune", allowed).status_code == 200
    samples = prom.parse(g.prometheus())
    assert prom.total(samples, "llmux_ratelimit_rejected_unpriced") == 1
    assert "panicked" not in g.process.log()


def run_envoy_until_exit(tmp_path, llmux_config):
    path = tmp_path / "bad.yaml"
    path.write_text(render_envoy.render(free_port(), free_port(), free_port(), WASM, llmux_config,
                                        env={}))
    return subprocess.run([envoy_path(), "-c", str(path), "--use-dynamic-base-id",
                           "--concurrency", "1"], capture_output=True, text=True, timeout=60)


def models(price=None, strategy="lowest-cost"):
    d = {"provider": "p", "model": "gpt-4o"}
    if price is not None:
        d["price"] = {"input_per_mtok": price, "output_per_mtok": price}
    return [{"name": "m", "strategy": strategy, "deployments": [d, dict(d, model="gpt-4o-mini")]}]


@pytest.mark.parametrize("config, path", [
    ({"models": models(price=1.7e308)}, "models[0].deployments[0].price.input_per_mtok"),
    ({"models": models(), "rate_limit": {"models": {"gtp": {"rpm": 1}}}}, "rate_limit.models.gtp"),
    ({"models": models(), "export": {"format": "webhook", "cluster": "c", "max_queue": 4294967295}},
     "export.max_queue"),
])
def test_configs_no_request_could_survive_are_rejected_at_load(tmp_path, config, path):
    config = {"providers": {"p": {"type": "openai", "cluster": "mock"}}, **config}
    r = run_envoy_until_exit(tmp_path, config)
    assert r.returncode != 0
    assert f"invalid LLMux configuration at `{path}`" in r.stderr + r.stdout
