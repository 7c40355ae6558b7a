"""Bad input and misbehaving upstreams: each gets the right status and an OpenAI error body,
and nothing breaks the VM for the requests that follow."""
import os
import random
import subprocess

import httpx
import pytest

from harness import WASM, Gateway, envoy_path, free_port, new_id, render_envoy, static_cluster

USER = [{"role": "user", "content": "x"}]


def assert_openai_error(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return err


@pytest.mark.parametrize("body, param", [
    (b"{not json", None),
    (b"", None),
    (b"[]", None),
    (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
    (b'{"model": 42, "messages": [{"role": "user", "content": "x"}]}', "model"),
    (b'{"model": "gpt-4o-mini"}', "messages"),
    (b'{"model": "gpt-4o-mini", "messages": "hi"}', "messages"),
    (b'{"model": "gpt-4o-mini", "messages": []}', "messages"),
    # OpenAI's protocol: the messages go as they are and the provider's own error (and param)
    # comes back; translated providers: the gateway checks them.
    (b'{"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role"),
    (b'{"model": "claude-3-5-haiku", "messages": [{"role": "wizard", "content": "x"}]}', "messages[0].role"),
    (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
    (b'{"model": "claude-3-5-haiku", "messages": [{"role": "user", "content": "x"}], "stream": 1}', "stream"),
])
def test_bad_requests_are_400(gateway, body, param):
    err = assert_openai_error(gateway.post("/v1/chat/completions", body), 400)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param


def test_unknown_model_is_404_listing_models(gateway):
    err = assert_openai_error(gateway.post("/v1/chat/completions", {"model": "gpt-9", "messages": USER}), 404)
    assert err["code"] == "model_not_found"
    assert "gpt-4o-mini" in err["message"] and "claude-3-5-haiku" in err["message"]


def test_unsupported_path_and_method(gateway):
    err = assert_openai_error(gateway.post("/v1/completions/x", {"model": "gpt-4o-mini"}), 404)
    assert err["code"] == "unknown_url"
    r = httpx.get(gateway.url + "/v1/chat/completions", timeout=10)
    assert_openai_error(r, 405)


def test_body_over_limit_is_413(make_gateway):
    g = make_gateway({
        "providers": {"oai": {"type": "openai", "cluster": "mock"}},
        "models": [{"name": "m", "deployments": [{"provider": "oai"}]}],
        "max_request_bytes": 2048,
    })
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 4096}]}
    err = assert_openai_error(g.post("/v1/chat/completions", big), 413)
    assert err["code"] == "request_too_large"

    # Without content-length (chunked upload) the limit holds as the body arrives.
    def chunks():
        data = ('{"model":"m","messages":[{"role":"user","content":"' + "y" * 8192 + '"}]}').encode()
        for i in range(0, len(data), 1000):
            yield data[i:i + 1000]
    r = httpx.post(g.url + "/v1/chat/completions", content=chunks(), timeout=10)
    assert_openai_error(r, 413)
    # Just under the limit is fine.
    ok = g.post("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x" * 1900}]})
    assert ok.status_code == 200, ok.text


def test_unknown_paths_passthrough_when_configured(make_gateway, mock):
    fallback = """              - match: { prefix: "/" }
                route: { cluster: mock }"""
    g = make_gateway({
        "providers": {"oai": {"type": "openai", "cluster": "mock"}},
        "models": [{"name": "m", "deployments": [{"provider": "oai"}]}],
        "unknown_paths": "passthrough",
    }, fallback_route=fallback)
    r = httpx.get(g.url + "/health", timeout=10)
    assert r.status_code == 200 and r.text.strip() == "ok"
    # A body on a path LLMux does not serve goes upstream untouched (not parsed as chat).
    mid = new_id()
    body = b'{"purpose": "batch", "note": "not a chat request"}'
    r = httpx.post(g.url + "/v1/files", content=body,
                   headers={"x-mock-id": mid, "content-type": "application/json"}, timeout=10)
    # (LLMux routes /v1/files itself only with `files_provider` or an `llmux-provider` header.)
    assert r.status_code == 200, r.text  # the mock's files echo; what matters is what it received
    [seen] = mock.requests(mid)
    assert seen["path"] == "/v1/files"
    assert seen["body"] == {"purpose": "batch", "note": "not a chat request"}


@pytest.mark.parametrize("status, client_status, kind", [
    (400, 400, "invalid_request_error"),
    (401, 401, "authentication_error"),
    (429, 429, "rate_limit_error"),
    (500, 500, "api_error"),
    (529, 503, "api_error"),
])
def test_anthropic_provider_errors_are_mapped(gateway, status, client_status, kind):
    r = gateway.post("/v1/chat/completions", {"model": "claude-3-5-haiku", "messages": USER},
                     headers={"x-mock-status": str(status), "x-mock-retry-after": "3"})
    err = assert_openai_error(r, client_status)
    assert err["type"] == kind
    assert "anthropic" in err["message"]
    assert r.headers["retry-after"] == "3"


def test_unreachable_provider_is_502(make_gateway):
    extra = static_cluster("dead", free_port())  # nothing listens there
    g = make_gateway({
        "providers": {"gone": {"type": "anthropic", "cluster": "dead"}},
        "models": [{"name": "m", "deployments": [{"provider": "gone"}]}],
    }, extra_clusters=extra)
    for stream in (False, True):
        r = g.post("/v1/chat/completions", {"model": "m", "messages": USER, "stream": stream})
        err = assert_openai_error(r, 502)
        assert err["code"] == "upstream_unavailable"
        assert "gone" in err["message"]


def test_provider_timeout_is_504(make_gateway):
    g = make_gateway({
        "providers": {"slow": {"type": "openai", "cluster": "mock", "timeout_ms": 300}},
        "models": [{"name": "m", "deployments": [{"provider": "slow"}]}],
    })
    r = g.post("/v1/chat/completions", {"model": "m", "messages": USER},
               headers={"x-mock-latency-ms": "3000"})
    err = assert_openai_error(r, 504)
    assert err["code"] == "upstream_timeout"
    assert "slow" in err["message"]


def test_garbage_never_kills_the_vm(gateway):
    rng = random.Random(1234)
    alphabet = b'{}[]:,"\\ 0123456789abcdefghijklmnopqrstuvwxyz\xff\x00\xe2\x82'
    seeds = [b'{"model":"claude-3-5-haiku","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]}]}',
             b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"tool","content":"x"}]}']
    for i in range(300):
        if i % 2:
            body = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        else:
            body = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 5)):
                body[rng.randrange(len(body))] = rng.choice(alphabet)
            body = bytes(body)
        r = gateway.post("/v1/chat/completions", body)
        assert 200 <= r.status_code < 600
        if r.status_code >= 400:
            r.json()["error"]["message"]
    # The VM still serves normal traffic.
    ok = gateway.post("/v1/chat/completions", {"model": "claude-3-5-haiku", "messages": USER})
    assert ok.status_code == 200, ok.text
    assert "panicked" not in gateway.process.log()


def run_envoy_until_exit(tmp_path, llmux_config):
    path = tmp_path / "bad.yaml"
    path.write_text(render_envoy.render(free_port(), free_port(), free_port(), WASM, llmux_config, env={}))
    return subprocess.run([envoy_path(), "-c", str(path), "--use-dynamic-base-id", "--concurrency", "1"],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("config, path", [
    ({"providers": {"p": {"type": "gpt", "cluster": "mock"}}, "models": []}, "providers.p.type"),
    ({"providers": {"p": {"type": "openai", "cluster": "mock"}},
      "models": [{"name": "m", "deployments": [{"provider": "q"}]}]}, "models[0].deployments[0].provider"),
    ({"providers": {"p": {"type": "anthropic", "cluster": "mock", "api_key_env": "LLMUX_NO_SUCH_VAR"}},
      "models": [{"name": "m", "deployments": [{"provider": "p"}]}]}, "providers.p.api_key_env"),
])
def test_bad_filter_config_is_rejected_at_load(tmp_path, config, path):
    r = run_envoy_until_exit(tmp_path, config)
    assert r.returncode != 0
    assert f"invalid LLMux configuration at `{path}`" in r.stderr + r.stdout
