"""Routing and resilience through a real Envoy: failover across deployments and providers
(plain and streamed), retries, cooldowns, strategies, tags, aliases, wildcards, key rotation and
the status endpoint. The mock fails on demand: a provider whose config sends `x-mock-status`
answers that status to every request; `x-mock-*` headers on a request apply to every attempt."""
import collections
import json
import time

import httpx
import openai
import pytest

from harness import new_id

USER = [{"role": "user", "content": "hi"}]
ROUTER = {"attempts_cluster": "llmux_attempts", "status": True, "cooldown_s": 30}


def providers(**bad):
    """OpenAI- and Anthropic-protocol providers on the mock; `name=status` ones always fail."""
    p = {
        "oai": {"type": "openai", "cluster": "mock"},
        "oai2": {"type": "openai", "cluster": "mock"},
        "ant": {"type": "anthropic", "cluster": "mock"},
    }
    for name, status in bad.items():
        kind = "anthropic" if name.startswith("ant") else "openai"
        p[name] = {"type": kind, "cluster": "mock", "headers": {"x-mock-status": str(status)}}
    return p


def chat(g, model, stream=False, headers=None, **extra):
    body = {"model": model, "messages": USER, "stream": stream, **extra}
    return g.post("/v1/chat/completions", body, headers=headers or {})


def status(g):
    r = httpx.get(g.url + "/llmux/status", timeout=10)
    assert r.status_code == 200, r.text
    return {(m["name"], d["name"]): d for m in r.json()["models"] for d in m["deployments"]}


@pytest.mark.parametrize("code", [429, 500, 503, 529])
def test_failed_deployment_fails_over_to_the_next(make_gateway, code):
    g = make_gateway({
        "providers": providers(bad=code),
        "router": ROUTER,
        "models": [{"name": "m", "strategy": "priority", "deployments": [
            {"provider": "bad", "model": "gpt-4o-mini", "name": "first", "priority": 0},
            {"provider": "oai", "model": "gpt-4o-mini", "name": "second", "priority": 1},
        ]}],
    })
    r = chat(g, "m")
    assert r.status_code == 200, r.text
    assert r.headers["x-llmux-deployment"] == "second"
    assert r.headers["x-llmux-attempts"] == "2"
    assert r.json()["choices"][0]["message"]["content"]
    assert "x-llmux-retry" not in r.headers


def test_streamed_request_fails_over_before_its_first_byte_and_still_streams(make_gateway):
    g = make_gateway({
        "providers": providers(bad=503),
        "router": ROUTER,
        "models": [{"name": "m", "strategy": "priority", "deployments": [
            {"provider": "bad", "model": "gpt-4o-mini", "name": "first", "priority": 0},
            {"provider": "ant", "model": "claude-3-5-haiku-20241022", "name": "claude", "priority": 1},
        ]}],
    })
    client = openai.OpenAI(base_url=g.url + "/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="m", messages=USER, stream=True)
    assert raw.headers["x-llmux-deployment"] == "claude"
    assert raw.headers["x-llmux-provider"] == "ant"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text


def test_cross_provider_fallback_group(make_gateway):
    g = make_gateway({
        "providers": providers(bad=500),
        "router": ROUTER,
        "models": [
            {"name": "gpt", "fallbacks": ["claude"], "num_retries": 0,
             "deployments": [{"provider": "bad", "model": "gpt-4o-mini"}]},
            {"name": "claude", "deployments": [{"provider": "ant", "model": "claude-3-5-haiku-20241022"}]},
        ],
    })
    r = chat(g, "gpt")
    assert r.status_code == 200, r.text
    assert r.headers["x-llmux-provider"] == "ant"
    assert r.json()["model"] == "claude-3-5-haiku-20241022"  # the model that answered


def test_all_attempts_fail_gives_the_last_error(make_gateway):
    g = make_gateway({
        "providers": providers(bad=503, bad2=500),
        "router": ROUTER,
        "models": [{"name": "m", "strategy": "priority", "deployments": [
            {"provider": "bad", "model": "gpt-4o-mini", "name": "a", "priority": 0},
            {"provider": "bad2", "model": "gpt-4o-mini", "name": "b", "priority": 1},
        ]}],
    })
    r = chat(g, "m")
    # a (503), b (500), then a again (num_retries 2): the client gets the last error.
    assert r.status_code == 503, r.text
    assert "bad returned 503" in r.json()["error"]["message"]
    assert r.headers["x-llmux-deployment"] == "a"
    assert r.headers["x-llmux-attempts"] == "3"


def test_bad_request_is_not_retried(make_gateway):
    g = make_gateway({
        "providers": providers(bad=400),
        "router": ROUTER,
        "models": [{"name": "m", "strategy": "priority", "deployments": [
            {"provider": "bad", "model": "gpt-4o-mini", "name": "a", "priority": 0},
            {"provider": "oai", "model": "gpt-4o-mini", "name": "b", "priority": 1},
        ]}],
    })
    r = chat(g, "m")
    assert r.status_code == 400
    assert r.headers["x-llmux-attempts"] == "1"


def test_429_cools_the_deployment_down_and_status_shows_it(make_gateway):
    g = make_gateway({
        "providers": providers(bad=429),
        "router": {**ROUTER, "cooldown_s": 2},
        "models": [{"name": "m", "strategy": "priority", "deployments": [
            {"provider": "bad", "model": "gpt-4o-mini", "name": "limited", "priority": 0},
            {"provider": "oai", "model": "gpt-4o-mini", "name": "spare", "priority": 1},
        ]}],
    })
    r = chat(g, "m")
    assert r.headers["x-llmux-attempts"] == "2"
    cooled_at = time.monotonic()
    s = status(g)[("m", "limited")]
    assert not s["healthy"] and s["cooldowns"] == 1 and s["last_error_status"] == 429
    assert 0 < s["cooldown_remaining_ms"] <= 2000
    # While it cools down, the priority-0 deployment is skipped: one attempt each.
    for _ in range(5):
        r = chat(g, "m")
        if time.monotonic() - cooled_at > 1.5:
            break
        assert r.headers["x-llmux-attempts"] == "1"
        assert r.headers["x-llmux-deployment"] == "spare"
    # Once the cooldown is over it is tried again (and fails over again).
    while status(g)[("m", "limited")]["cooldown_remaining_ms"] > 0:
        time.sleep(0.1)  # polling the status endpoint until the cooldown it reports has passed
    r = chat(g, "m")
    assert r.headers["x-llmux-attempts"] == "2"
    prom = g.prometheus()
    assert 'llmux_router_cooldowns{' in prom and 'llmux_deployment="limited"' in prom
    assert "llmux_router_retries" in prom


def test_timeout_fails_over(make_gateway):
    p = providers()
    p["slow"] = {"type": "openai", "cluster": "mock", "timeout_ms": 300,
                 "headers": {"x-mock-latency-ms": "3000"}}
    g = make_gateway({
        "providers": p,
        "router": ROUTER,
        "models": [{"name": "m", "strategy": "priority", "deployments": [
            {"provider": "slow", "model": "gpt-4o-mini", "name": "slow", "priority": 0},
            {"provider": "oai", "model": "gpt-4o-mini", "name": "fast", "priority": 1},
        ]}],
    })
    t = time.monotonic()
    r = chat(g, "m")
    assert r.status_code == 200, r.text
    assert r.headers["x-llmux-deployment"] == "fast"
    assert time.monotonic() - t < 2.5
    assert status(g)[("m", "slow")]["last_error_status"] in (0, 504)


def test_connection_reset_fails_over(make_gateway):
    p = providers()
    p["reset"] = {"type": "openai", "cluster": "mock", "headers": {"x-mock-reset": "1"}}
    g = make_gateway({
        "providers": p,
        "router": ROUTER,
        "models": [{"name": "m", "strategy": "priority", "deployments": [
            {"provider": "reset", "model": "gpt-4o-mini", "name": "reset", "priority": 0},
            {"provider": "oai", "model": "gpt-4o-mini", "name": "ok", "priority": 1},
        ]}],
    })
    r = chat(g, "m", stream=True)
    assert r.status_code == 200, r.text
    assert r.headers["x-llmux-deployment"] == "ok"
    assert r.text.rstrip().endswith("data: [DONE]")
