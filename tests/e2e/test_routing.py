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


def bad(status):
    return {"type": "openai", "cluster": "mock", "headers": {"x-mock-status": str(status)}}


def priority(*deployments):
    """A model group trying `deployments` ((provider, upstream model, name), ...) in order."""
    return {"strategy": "priority", "deployments": [
        {"provider": p, "model": m, "name": n, "priority": i} for i, (p, m, n) in enumerate(deployments)]}


CODES = [429, 500, 503, 529]


@pytest.fixture(scope="module")
def failover(make_module_gateway):
    """One gateway for the failover cases: each case is its own model group (a deployment's
    health and cooldown are its group's: `model/deployment`), its failing providers its own."""
    p = providers()
    p.update({f"bad-{code}": bad(code) for code in CODES})
    p.update({"bad2": bad(500), "bad429": bad(429),
              "slow": {"type": "openai", "cluster": "mock", "timeout_ms": 300,
                       "headers": {"x-mock-latency-ms": "3000"}},
              "reset": {"type": "openai", "cluster": "mock", "headers": {"x-mock-reset": "1"}}})
    models = [{"name": f"fail-{code}", **priority((f"bad-{code}", "gpt-4o-mini", "first"),
                                                  ("oai", "gpt-4o-mini", "second"))} for code in CODES]
    models += [
        {"name": "stream", **priority(("bad-503", "gpt-4o-mini", "first"),
                                      ("ant", "claude-3-5-haiku-20241022", "claude"))},
        {"name": "gpt", "fallbacks": ["claude"], "num_retries": 0,
         "deployments": [{"provider": "bad-500", "model": "gpt-4o-mini"}]},
        {"name": "claude", "deployments": [{"provider": "ant", "model": "claude-3-5-haiku-20241022"}]},
        {"name": "all-fail", **priority(("bad-503", "gpt-4o-mini", "a"), ("bad2", "gpt-4o-mini", "b"))},
        {"name": "retry", "num_retries": 2, "deployments": [
            {"provider": "bad429", "model": "gpt-4o-mini", "name": "only"}]},
        {"name": "timeout", **priority(("slow", "gpt-4o-mini", "slow"), ("oai", "gpt-4o-mini", "fast"))},
        {"name": "reset", **priority(("reset", "gpt-4o-mini", "reset"), ("oai", "gpt-4o-mini", "ok"))},
    ]
    return make_module_gateway({"providers": p, "router": ROUTER, "models": models})


@pytest.mark.parametrize("code", CODES)
def test_failed_deployment_fails_over_to_the_next(failover, code):
    g, model = failover, f"fail-{code}"
    r = chat(g, model)
    assert r.status_code == 200, r.text
    assert r.headers["x-llmux-deployment"] == "second"
    assert r.headers["x-llmux-attempts"] == "2"
    assert r.json()["choices"][0]["message"]["content"]
    assert "x-llmux-retry" not in r.headers
    # The access log line names the serving deployment and the attempts.
    deadline = time.monotonic() + 10
    lines = []
    while time.monotonic() < deadline and not lines:
        lines = [l for l in g.access_log() if l["path"] == "/v1/chat/completions" and l["model"] == model]
        time.sleep(0.05)  # polling with a deadline for Envoy's access-log flush
    assert lines and lines[0]["deployment"] == "second" and lines[0]["attempts"] == "2", lines


def test_streamed_request_fails_over_before_its_first_byte_and_still_streams(failover):
    client = openai.OpenAI(base_url=failover.url + "/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="stream", messages=USER, stream=True)
    assert raw.headers["x-llmux-deployment"] == "claude"
    assert raw.headers["x-llmux-provider"] == "ant"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text


def test_cross_provider_fallback_group(failover):
    r = chat(failover, "gpt")
    assert r.status_code == 200, r.text
    assert r.headers["x-llmux-provider"] == "ant"
    assert r.json()["model"] == "claude-3-5-haiku-20241022"  # the model that answered


def test_all_attempts_fail_gives_the_last_error(failover):
    r = chat(failover, "all-fail")
    # a (503), then b (500): the client gets the last error.
    assert r.status_code == 500, r.text
    assert "bad2 returned 500" in r.json()["error"]["message"]
    assert r.headers["x-llmux-deployment"] == "b"
    assert r.headers["x-llmux-attempts"] == "2"


def test_num_retries_retries_a_lone_deployment_with_retry_after(failover):
    t = time.monotonic()
    r = chat(failover, "retry", headers={"x-mock-retry-after": "1"})
    assert r.status_code == 429
    assert r.headers["x-llmux-attempts"] == "3"
    # Envoy's back-off waited the provider's Retry-After (1 s) before each retry.
    assert time.monotonic() - t >= 1.9
    # The only deployment is not cooled down by a 429 (LiteLLM's rule).
    assert status(failover)[("retry", "only")]["healthy"]


def test_bad_request_is_not_retried(make_gateway):
    # A gateway of its own: Envoy 1.36.4 crashes on the failover the other cases make
    # (tests/envoy-versions.txt), and this one must pass there.
    g = make_gateway({"providers": {**providers(), "bad400": bad(400)}, "router": ROUTER,
                      "models": [{"name": "bad-request", **priority(
                          ("bad400", "gpt-4o-mini", "a"), ("oai", "gpt-4o-mini", "b"))}]})
    r = chat(g, "bad-request")
    assert r.status_code == 400
    assert r.headers["x-llmux-attempts"] == "1"


def test_timeout_fails_over(failover):
    t = time.monotonic()
    r = chat(failover, "timeout")
    assert r.status_code == 200, r.text
    assert r.headers["x-llmux-deployment"] == "fast"
    assert time.monotonic() - t < 2.5
    assert status(failover)[("timeout", "slow")]["last_error_status"] in (0, 504)


def test_connection_reset_fails_over(failover):
    r = chat(failover, "reset", stream=True)
    assert r.status_code == 200, r.text
    assert r.headers["x-llmux-deployment"] == "ok"
    assert r.text.rstrip().endswith("data: [DONE]")


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


# --- strategies, with Envoy's two workers sharing the state (harness: --concurrency 2) ---

def served_by(g, model, n, parallel=8, headers=None, stream=False):
    """`n` requests, `parallel` at a time; how many each deployment served."""
    from concurrent.futures import ThreadPoolExecutor

    def one(_):
        r = chat(g, model, stream=stream, headers=headers)
        assert r.status_code == 200, r.text
        return r.headers["x-llmux-deployment"]

    with ThreadPoolExecutor(parallel) as pool:
        return collections.Counter(pool.map(one, range(n)))


def three(name, strategy, **deps):
    """A model group `name` of three OpenAI-protocol deployments on the mock, a, b and c; those
    given headers in `deps` on providers of their own (`<name>-a`, ...), the others on oai."""
    p = {}
    for n, headers in deps.items():
        p[f"{name}-{n}"] = {"type": "openai", "cluster": "mock", "headers": headers}
    model = {"name": name, "strategy": strategy, "deployments": [
        {"provider": f"{name}-{n}" if n in deps else "oai", "model": "gpt-4o-mini", "name": n}
        for n in ("a", "b", "c")]}
    return p, model


@pytest.fixture(scope="module")
def strategies(make_module_gateway):
    """One gateway, one model group per strategy case (a group's choices and counters are its
    own: the round-robin counter and each deployment's record are keyed by the group)."""
    p, models = providers(), []

    def group(name, strategy, per_deployment=None, **deps):
        extra, model = three(name, strategy, **deps)
        for d, fields in zip(model["deployments"], per_deployment or ()):
            d.update(fields)
        p.update(extra)
        models.append(model)

    group("round-robin", "round-robin")
    group("shuffle", "simple-shuffle", [{"weight": w} for w in (1, 2, 5)])
    group("latency", "lowest-latency", a={"x-mock-latency-ms": "150"}, b={"x-mock-latency-ms": "60"})
    group("busy", "least-busy", a={"x-mock-latency-ms": "1500"})
    group("usage", "usage-based", [{"rpm": rpm} for rpm in (5, 1000, 1000)])
    group("cost", "lowest-cost", [{"price": {"input_per_mtok": x, "output_per_mtok": x}}
                                  for x in (3.0, 0.1, 1.0)])
    group("priority", "priority", [{"priority": x} for x in (2, 1, 0)])
    group("tags", "simple-shuffle", [{"tags": ["eu"]}, {"tags": ["us"]}, {"tags": ["default"]}])
    return make_module_gateway({"providers": p, "router": ROUTER, "models": models})


def test_round_robin_is_exact_across_workers(strategies):
    counts = served_by(strategies, "round-robin", 60)
    assert counts == {"a": 20, "b": 20, "c": 20}


def test_simple_shuffle_follows_weights_within_tolerance(strategies):
    n = 400
    counts = served_by(strategies, "shuffle", n, parallel=16)
    # Binomial: expected n*w/8, σ = sqrt(n p (1-p)); 4σ tolerance.
    for name, w in (("a", 1), ("b", 2), ("c", 5)):
        p = w / 8
        sigma = (n * p * (1 - p)) ** 0.5
        assert abs(counts[name] - n * p) <= 4 * sigma, counts


def test_lowest_latency_sends_most_traffic_to_the_fastest(strategies):
    counts = served_by(strategies, "latency", 60, parallel=4)
    # c answers at once; a and b only get the few requests that measure them at first.
    assert counts["c"] >= 48, counts
    assert counts["a"] <= 4, counts


def test_least_busy_avoids_the_deployment_holding_requests(strategies):
    # a holds each request for 1.5 s; b and c answer at once. Once a request sits on a, its
    # in-flight count (shared by both workers) keeps new requests on b and c.
    counts = served_by(strategies, "busy", 40, parallel=4)
    assert counts["a"] <= 4, counts
    assert counts["b"] + counts["c"] >= 36, counts


def test_usage_based_prefers_headroom(strategies):
    counts = served_by(strategies, "usage", 60, parallel=4)
    assert counts["a"] <= 5, counts  # its rpm hint is spent after 5


def test_lowest_cost_and_priority(strategies):
    assert served_by(strategies, "cost", 20) == {"b": 20}
    assert served_by(strategies, "priority", 20) == {"c": 20}


def test_tags_from_header_and_body(strategies):
    g = strategies
    assert served_by(g, "tags", 10, headers={"llmux-tags": "eu"}) == {"a": 10}
    assert served_by(g, "tags", 10, headers={"llmux-tags": "asia"}) == {"c": 10}
    r = g.post("/v1/chat/completions", {"model": "tags", "messages": USER, "tags": ["us"]})
    assert r.headers["x-llmux-deployment"] == "b"


def test_aliases_and_wildcards(make_gateway):
    g = make_gateway({
        "providers": providers(),
        "models": [
            {"name": "gpt-4o-mini", "aliases": ["default", "fast"], "deployments": [{"provider": "oai"}]},
            {"name": "anthropic/*", "deployments": [{"provider": "ant"}]},
        ],
    })
    client = openai.OpenAI(base_url=g.url + "/v1", api_key="x", max_retries=0)
    r = client.chat.completions.with_raw_response.create(model="fast", messages=USER)
    assert r.headers["x-llmux-provider"] == "oai"
    r = client.chat.completions.with_raw_response.create(model="anthropic/claude-3-5-haiku-20241022", messages=USER)
    assert r.headers["x-llmux-provider"] == "ant"
    assert r.parse().model == "claude-3-5-haiku-20241022"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="mistral/x", messages=USER)


def test_context_window_fallback_before_sending(make_gateway):
    g = make_gateway({
        "providers": providers(),
        "router": ROUTER,
        "models": [
            {"name": "small", "context_window_fallbacks": ["big"],
             "deployments": [{"provider": "oai", "model": "gpt-4o-mini", "max_input_tokens": 200}]},
            {"name": "big", "deployments": [{"provider": "ant", "model": "claude-3-5-haiku-20241022"}]},
        ],
    })
    assert chat(g, "small").headers["x-llmux-provider"] == "oai"
    long = [{"role": "user", "content": "word " * 2000}]
    r = g.post("/v1/chat/completions", {"model": "small", "messages": long})
    assert r.status_code == 200, r.text
    assert r.headers["x-llmux-provider"] == "ant"
    assert r.headers["x-llmux-attempts"] == "1"


def test_api_key_rotation_on_401(mock, log_dir):
    from harness import Gateway, Mock
    strict = Mock(log_dir, args=["--openai-key", "good-key"])
    try:
        g = Gateway(strict, log_dir, name=f"envoy-keys-{new_id()[:6]}", llmux_config={
            "providers": {"oai": {"type": "openai", "cluster": "mock"}},
            "router": ROUTER,
            # round-robin: the first request starts with the first key (deterministic test).
            "models": [{"name": "m", "strategy": "round-robin", "deployments": [
                {"provider": "oai", "model": "gpt-4o-mini", "name": "k", "api_keys": ["revoked-key", "good-key"]}]}],
        })
        try:
            minute = int(time.time() // 60)
            for _ in range(4):
                r = chat(g, "m")
                assert r.status_code == 200, r.text
            st = httpx.get(g.url + "/llmux/status", timeout=10).json()
            entries = st["models"][0]["deployments"]
            by_key = {d["key"]: d for d in entries}
            # The revoked key's entry cooled down after its 401; the good one serves (all four
            # counted, unless a wall-clock minute began on the way: see the status test).
            assert not by_key[0]["healthy"] and by_key[0]["last_error_status"] == 401, entries
            assert by_key[1]["healthy"], entries
            if st["now_ms"] // 60_000 == minute:
                assert by_key[1]["requests_this_minute"] == 4, entries
            else:
                assert by_key[1]["requests_this_minute"] <= 4, entries
        finally:
            g.stop()
    finally:
        strict.stop()


def test_status_endpoint_is_loopback_only_by_config(make_gateway):
    g = make_gateway({
        "providers": providers(),
        "router": {**ROUTER, "status": {"path": "/admin/llmux", "allow": ["10.9."]}},
        "models": [{"name": "m", "deployments": [{"provider": "oai"}]}],
    })
    r = httpx.get(g.url + "/admin/llmux", timeout=10)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "forbidden"
    g2 = make_gateway({
        "providers": providers(),
        "router": ROUTER,
        "models": [{"name": "m", "deployments": [{"provider": "oai", "name": "x"},
                                                 {"provider": "oai2", "name": "y"}]}],
    })
    minute = int(time.time() // 60)
    chat(g2, "m")
    chat(g2, "m")
    r = httpx.get(g2.url + "/llmux/status", timeout=10)
    s = {(m["name"], d["name"]): d for m in r.json()["models"] for d in m["deployments"]}
    assert all(d["healthy"] and d["in_flight"] == 0 for d in s.values()), s
    # The counters are per wall-clock minute (src/routing/state.rs): both requests count unless
    # a minute began between the first request and the status (then some belong to the last).
    count = sum(d["requests_this_minute"] for d in s.values())
    if r.json()["now_ms"] // 60_000 == minute:
        assert count == 2, s
    else:
        assert count <= 2, s


def test_answer_headers_can_be_turned_off(make_gateway):
    """`answer_headers: false`: no deployment or provider names reach clients (the cost header
    has its own switch), on the direct path and through failover alike."""
    g = make_gateway({
        "providers": providers(oai_bad=500),
        "router": ROUTER,
        "answer_headers": False,
        "models": [
            {"name": "direct", "deployments": [{"provider": "ant", "model": "claude-3-5-haiku-20241022"}]},
            {"name": "failover", "strategy": "priority", "deployments": [
                {"provider": "oai_bad", "model": "gpt-4o-mini", "priority": 0},
                {"provider": "oai", "model": "gpt-4o-mini", "priority": 1}]},
        ],
    })
    for model in ("direct", "failover"):
        for stream in (False, True):
            r = chat(g, model, stream=stream)
            assert r.status_code == 200, r.text
            named = {"x-llmux-provider", "x-llmux-deployment", "x-llmux-attempts"} & set(r.headers)
            assert not named, (model, stream, dict(r.headers))
            assert r.headers.get("x-request-id")
