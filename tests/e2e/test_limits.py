"""Distributed limits: RPM, TPM and budgets through the rate-limit service (llmux-ratelimit on
Redis) shared by two Envoys; fail-open / fail-closed when the service is down; parallel requests
across workers; trusted-header identities; spoofed internal headers change nothing."""
import concurrent.futures
import hashlib
import json
import time

import pytest

from harness import RateLimitService, Redis, free_port, grpc_cluster, new_id
import prom

USER = [{"role": "user", "content": "hi"}]


def sha(k):
    return hashlib.sha256(k.encode()).hexdigest()


@pytest.fixture(scope="module")
def rls(log_dir):
    r = Redis(log_dir)
    s = RateLimitService(log_dir, redis_url=r.url)
    yield s
    s.stop()
    r.stop()


def config(keys, teams=(), rls_port=None, failure_mode="open", **extra):
    """Every key `sk-<alias>`; the model `gpt` at 1000 USD per million tokens (1 milli-USD each)."""
    c = {
        "providers": {"oai": {"type": "openai", "cluster": "mock"}},
        "models": [{"name": "gpt", "deployments": [{"provider": "oai", "model": "gpt-4o-mini",
                    "price": {"input_per_mtok": 1000, "output_per_mtok": 1000}}]},
                   {"name": "gpt-4o-mini", "deployments": [{"provider": "oai"}]}],
        "auth": {"keys": [{"key_sha256": sha("sk-" + k["alias"]), **k} for k in keys],
                 "teams": list(teams)},
        **extra,
    }
    if rls_port is not None:
        c["rate_limit"] = {"cluster": "rls", "domain": "llmux", "timeout_ms": 1000,
                           "failure_mode": failure_mode}
    return c


def start(make_gateway, cfg, rls_port, **kw):
    return make_gateway(cfg, extra_clusters=grpc_cluster("rls", rls_port), **kw)


def chat(g, alias, model="gpt", stream=False, headers=None, **kw):
    body = {"model": model, "messages": USER}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    h = {"authorization": f"Bearer sk-{alias}", **(headers or {})}
    return g.post("/v1/chat/completions", body, headers=h, **kw)


def stream_usage(r):
    usage = None
    for line in r.text.splitlines():
        if line.startswith("data: {"):
            ev = json.loads(line[6:])
            usage = ev.get("usage") or usage
    return usage


@pytest.fixture(scope="module")
def pair(make_module_gateway, rls):
    """Two Envoys sharing the rate-limit service, with every key the tests below limit (each
    test its own keys and teams, so its own counters in the service): (g1, g2, alias by role)."""
    alias = {role: f"{role}-{new_id()[:8]}" for role in
             ("rpm", "tpm", "team-a", "team-b", "team", "free", "sec", "sec-team", "spoof")}
    cfg = config([{"alias": alias["rpm"], "rpm": 5},
                  {"alias": alias["tpm"], "tpm": 10},
                  {"alias": alias["team-a"], "team": alias["team"]},
                  {"alias": alias["team-b"], "team": alias["team"]},
                  {"alias": alias["free"]},
                  {"alias": alias["sec"], "team": alias["sec-team"]},
                  {"alias": alias["spoof"], "rpm": 1}],
                 teams=[{"name": alias["team"], "budget": {"amount_usd": 0.01, "period": "1d"}},
                        {"name": alias["sec-team"], "budget": {"amount_usd": 0.001, "period": "1s"}}],
                 rls_port=rls.port)
    return (start(make_module_gateway, cfg, rls.port), start(make_module_gateway, cfg, rls.port),
            alias)


def rejected(*gateways):
    return sum(prom.total(prom.parse(g.prometheus()), "llmux_ratelimit_rejected_requests")
               for g in gateways)


def test_rpm_holds_across_two_envoys(pair):
    g1, g2, alias = pair
    alias = alias["rpm"]
    before = rejected(g1, g2)
    # 12 requests at once, alternating between the two gateways: exactly 5 get through.
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        rs = list(pool.map(lambda i: chat((g1, g2)[i % 2], alias), range(12)))
    ok = [r for r in rs if r.status_code == 200]
    limited = [r for r in rs if r.status_code == 429]
    assert (len(ok), len(limited)) == (5, 7), [r.status_code for r in rs]
    for r in limited:
        err = r.json()["error"]
        assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
        assert r.headers["x-ratelimit-limit-requests"] == "5"
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")
        assert 1 <= int(r.headers["retry-after"]) <= 60
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == [0, 1, 2, 3, 4]
    assert all(r.headers["x-ratelimit-limit-requests"] == "5" for r in ok)
    # The rejections are counted.
    assert rejected(g1, g2) - before == 7


def test_tpm_counts_streamed_usage(pair):
    g1, g2, alias = pair
    alias = alias["tpm"]
    # The first (streamed) request passes: nothing is used yet. Its usage comes from the stream.
    r = chat(g1, alias, stream=True, headers={"x-mock-text": "one two three four five six seven"})
    assert r.status_code == 200
    usage = stream_usage(r)
    assert usage and usage["total_tokens"] >= 10
    assert r.headers["x-ratelimit-limit-tokens"] == "10"
    # The client has the whole answer, so its tokens are charged: the other gateway refuses.
    r = chat(g2, alias)
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "tokens"
    assert r.headers["x-ratelimit-limit-tokens"] == "10"
    assert r.headers["x-ratelimit-remaining-tokens"] == "0"
    assert "x-ratelimit-reset-tokens" in r.headers and "retry-after" in r.headers


def test_team_budget_stops_the_team_and_reports_cost(pair):
    g1, g2, alias = pair
    team, a, b = alias["team"], alias["team-a"], alias["team-b"]
    r = chat(g1, a)
    assert r.status_code == 200, r.text
    tokens = r.json()["usage"]["total_tokens"]
    # 1 milli-USD a token: the cost header says what was spent; more than the team's $0.01.
    assert float(r.headers["x-llmux-cost-usd"]) == pytest.approx(tokens * 0.001)
    assert tokens * 0.001 > 0.01
    # The other key of the team, on the other gateway, is stopped.
    r = chat(g2, b)
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["code"] == "budget_exceeded" and err["type"] == "insufficient_quota"
    assert f"team `{team}`" in err["message"]
    assert int(r.headers["retry-after"]) > 3600  # a day's window
    # A key outside the team is not.
    assert chat(g2, alias["free"]).status_code == 200


def test_budget_resets_with_its_period(pair):
    g, _, alias = pair
    a = alias["sec"]
    seen = []
    deadline = time.monotonic() + 20
    # Spent within a window, the next request is refused; a new window admits again. Each step
    # polls until it happens (bounded), whatever the machine's speed.
    while time.monotonic() < deadline and 429 not in seen:
        seen.append(chat(g, a).status_code)
    assert 429 in seen, seen
    while time.monotonic() < deadline and seen[-1] != 200:
        seen.append(chat(g, a).status_code)
        if seen[-1] == 429:
            time.sleep(0.05)  # polling for the next window
    assert seen[-1] == 200, seen


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_rls_down(make_gateway, mode):
    alias = f"down-{mode}-" + new_id()[:6]
    dead = free_port()  # nothing listens there
    g = start(make_gateway, config([{"alias": alias, "rpm": 2}], rls_port=dead, failure_mode=mode),
              dead, concurrency=1)
    codes = [chat(g, alias) for _ in range(3)]
    if mode == "open":
        # Passes, but the per-instance fallback counter still holds the limit.
        assert [r.status_code for r in codes] == [200, 200, 429]
        assert codes[2].json()["error"]["code"] == "rate_limit_exceeded"
        assert codes[2].headers["x-ratelimit-limit-requests"] == "2"
    else:
        assert [r.status_code for r in codes] == [503, 503, 503]
        assert codes[0].json()["error"]["code"] == "rate_limit_unavailable"
    s = prom.parse(g.prometheus())
    assert prom.total(s, "llmux_ratelimit_errors") == 3


def test_max_parallel_across_workers(make_gateway):
    alias = "par-" + new_id()[:8]
    # No rate-limit service: parallel slots are per Envoy instance, shared by its 2 workers.
    g = make_gateway(config([{"alias": alias, "max_parallel_requests": 2}]), concurrency=2)
    slow = {"x-mock-latency-ms": "2000"}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        rs = list(pool.map(lambda _: chat(g, alias, headers=slow), range(4)))
    codes = sorted(r.status_code for r in rs)
    assert codes == [200, 200, 429, 429], codes
    err = next(r for r in rs if r.status_code == 429).json()["error"]
    assert err["code"] == "parallel_request_limit_exceeded"
    # Slots come back when requests end (polled: on_log runs just after the last byte).
    deadline = time.monotonic() + 10
    while chat(g, alias).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_spoofed_internal_headers_change_nothing(pair):
    g, _, alias = pair
    alias = alias["spoof"]
    assert chat(g, alias).status_code == 200
    spoof = {"x-llmux-key": "someone-else", "x-llmux-team": "x", "x-llmux-cost-usd": "0",
             "x-llmux-cluster": "mock", "x-llmux-ratelimit": "ok"}
    r = chat(g, alias, headers=spoof)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"


def test_trusted_header_identity(make_gateway, rls):
    cfg = {
        "providers": {"oai": {"type": "openai", "cluster": "mock"}},
        "models": [{"name": "gpt-4o-mini", "deployments": [{"provider": "oai"}]}],
        "rate_limit": {"cluster": "rls", "failure_mode": "closed"},
        "identity": {"source": "header", "headers": {"user": "x-user-id", "team": "x-team-id"},
                     "limits": {"rpm": 2}},
    }
    g = start(make_gateway, cfg, rls.port)
    u1, u2 = "u-" + new_id()[:8], "u-" + new_id()[:8]
    h = lambda u: {"x-user-id": u, "x-team-id": "t"}  # noqa: E731
    post = lambda u: g.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": USER},  # noqa: E731
                            headers=h(u))
    assert [post(u1).status_code for _ in range(3)] == [200, 200, 429]
    assert post(u2).status_code == 200
    # Without the header there is no identity to limit: refused, not let through unlimited
    # (`identity.missing` can count such requests in one bucket instead).
    r = g.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": USER})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_identity", r.text


def hs256_jwt(secret, claims):
    import base64
    import hmac

    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def test_jwt_identity_from_envoy_jwt_authn(make_gateway, rls):
    """Envoy's jwt_authn verifies the token and puts its claims in dynamic metadata; LLMux limits
    each `sub` (user) with `identity.limits` and reads the team from the `org` claim."""
    import base64
    secret = b"llmux-jwt-test-secret-0123456789abcdef"
    jwks = json.dumps({"keys": [{"kty": "oct", "alg": "HS256",
                                 "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode()}]})
    jwt_filter = f"""          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                test:
                  issuer: llmux-test
                  local_jwks: {{ inline_string: '{jwks}' }}
                  payload_in_metadata: jwt_payload
              rules:
              - match: {{ prefix: "/" }}
                requires: {{ provider_name: test }}"""
    cfg = {
        "providers": {"oai": {"type": "openai", "cluster": "mock"}},
        "models": [{"name": "gpt-4o-mini", "deployments": [{"provider": "oai"}]}],
        "rate_limit": {"cluster": "rls", "failure_mode": "closed"},
        "identity": {"source": "jwt", "claims": {"user": "sub", "team": "org"}, "limits": {"rpm": 2}},
    }
    g = start(make_gateway, cfg, rls.port, extra_http_filters=jwt_filter)
    exp = int(time.time()) + 600

    def post(sub):
        token = hs256_jwt(secret, {"iss": "llmux-test", "sub": sub, "org": "t", "exp": exp})
        return g.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": USER},
                      headers={"authorization": f"Bearer {token}"})

    alice, bob = "alice-" + new_id()[:8], "bob-" + new_id()[:8]
    assert [post(alice).status_code for _ in range(3)] == [200, 200, 429]
    assert post(bob).status_code == 200
    # An unsigned or forged token never reaches LLMux: jwt_authn answers 401.
    forged = hs256_jwt(b"wrong-secret-wrong-secret-wrong!!", {"iss": "llmux-test", "sub": alice, "exp": exp})
    r = g.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": USER},
               headers={"authorization": f"Bearer {forged}"})
    assert r.status_code == 401
