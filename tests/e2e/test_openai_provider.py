"""OpenAI client → OpenAI-protocol provider, through a real Envoy with the LLMux filter."""
import json

import openai
import pytest

from harness import new_id


def client(gateway, mock_id, **headers):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-client-key", max_retries=0,
                         default_headers={"x-mock-id": mock_id, **headers})


def test_models_list_served_by_filter(gateway):
    models = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x").models.list()
    ids = [m.id for m in models.data]
    assert ids == ["gpt-4o-mini", "claude-3-5-haiku", "text-embedding-3-small"]
    assert {m.owned_by for m in models.data} == {"openai", "anthropic"}


def test_chat_plain_via_sdk_and_body_untouched(gateway, mock):
    mid = new_id()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "ping  \u00e9"}],
            "temperature": 0.25, "seed": 7}
    r = client(gateway, mid).chat.completions.create(**body)
    assert r.object == "chat.completion"
    assert r.choices[0].message.content == "Hello from the mock! You said: ping  \u00e9"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0
    [seen] = mock.requests(mid)
    assert seen["path"] == "/v1/chat/completions"
    # Same model name upstream: the provider gets exactly the fields the client sent.
    assert seen["body"] == body
    # The mock provider has no key configured in the quick start; internal headers never leak.
    assert not any(h.startswith("x-llmux-") for h in seen["headers"])
    assert "x-envoy-upstream-rq-timeout-ms" not in seen["headers"]


def test_response_headers_name_provider_and_keep_request_id(gateway, mock):
    mid = new_id()
    r = gateway.post("/v1/chat/completions",
                     {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
                     headers={"x-mock-id": mid, "x-request-id": "req-abc-123"})
    assert r.status_code == 200
    assert r.headers["x-llmux-provider"] == "openai"
    assert r.headers["x-request-id"] == "req-abc-123"
    [seen] = mock.requests(mid)
    assert seen["headers"]["x-request-id"] == "req-abc-123"


def test_spoofed_internal_headers_are_stripped(gateway, mock):
    mid = new_id()
    r = gateway.post("/v1/chat/completions",
                     {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
                     headers={"x-mock-id": mid, "x-llmux-cluster": "anthropic",
                              "x-llmux-deployment": "evil"})
    assert r.status_code == 200, r.text
    [seen] = mock.requests(mid)
    assert not any(h.startswith("x-llmux-") for h in seen["headers"])


def test_stream_via_sdk_hides_injected_usage(gateway, mock):
    mid = new_id()
    stream = client(gateway, mid).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "tell me"}], stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the mock! You said: tell me"
    assert all(c.choices for c in chunks), "the usage-only chunk the gateway asked for must not reach the client"
    assert chunks[-1].choices[0].finish_reason == "stop"
    [seen] = mock.requests(mid)
    # The gateway asked the provider for usage so that streamed tokens are counted.
    assert seen["body"]["stream_options"] == {"include_usage": True}


def test_stream_with_client_usage_passes_usage_chunk(gateway, mock):
    mid = new_id()
    stream = client(gateway, mid).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "count"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens > 0


def test_stream_raw_ends_with_done(gateway):
    r = gateway.post("/v1/chat/completions",
                     {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "a b"}]},
                     headers={"x-mock-chunk-size": "7"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text.endswith("data: [DONE]\n\n")
    events = [e for e in r.text.split("\n\n") if e]
    for e in events[:-1]:
        assert e.startswith("data: ")
        json.loads(e[len("data: "):])


def test_tool_calls_via_sdk(gateway, mock):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}},
             {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    c = client(gateway, new_id(), **{"x-mock-tool-calls": "2"})
    r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "w?"}],
                                  tools=tools)
    calls = r.choices[0].message.tool_calls
    assert [t.function.name for t in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[1].function.arguments) == {"city": "Paris", "i": 1}
    assert r.choices[0].finish_reason == "tool_calls"

    stream = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "w?"}],
                                       tools=tools, stream=True)
    args = {}
    for chunk in stream:
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            args[tc.index] = args.get(tc.index, "") + (tc.function.arguments or "")
    assert {k: json.loads(v) for k, v in args.items()} == {0: {"city": "Paris", "i": 0},
                                                           1: {"city": "Paris", "i": 1}}


def test_renamed_model_is_spliced_upstream(make_gateway, mock):
    g = make_gateway({
        "providers": {"oai": {"type": "openai", "cluster": "mock", "api_key": "sk-upstream"}},
        "models": [{"name": "fast", "deployments": [{"provider": "oai", "model": "gpt-4o-mini-2024-07-18"}]}],
    })
    mid = new_id()
    r = client(g, mid).chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}])
    assert r.model == "gpt-4o-mini-2024-07-18"
    [seen] = mock.requests(mid)
    assert seen["body"]["model"] == "gpt-4o-mini-2024-07-18"
    # The provider's key replaces the client's.
    assert seen["headers"]["authorization"] == "Bearer sk-upstream"


@pytest.mark.parametrize("status", [400, 401, 429, 500, 503])
def test_provider_errors_are_openai_errors(gateway, status):
    r = gateway.post("/v1/chat/completions",
                     {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
                     headers={"x-mock-status": str(status), "x-mock-retry-after": "7"})
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert "openai" in err["message"]
    assert r.headers["retry-after"] == "7"
    assert r.headers["content-length"] == str(len(r.content))


def test_sdk_raises_rate_limit_error(gateway):
    c = client(gateway, new_id(), **{"x-mock-status": "429"})
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 429


def test_vm_memory_gauge_is_exported(gateway):
    gateway.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    stats = gateway.stats()
    # Envoy < 1.39 names it in the scope of the llmux_attempts cluster (tests/envoy-versions.txt).
    names = ("wasmcustom.llmux.vm_memory_bytes",
             "cluster.llmux_attempts.wasmcustom.llmux.vm_memory_bytes")
    [line] = [l for l in stats.splitlines() if l.split(":")[0] in names]
    value = int(line.split(":")[1])
    assert value >= 65536 and value % 65536 == 0


def test_embeddings_via_sdk(gateway, mock):
    import base64
    import struct
    mid = new_id()
    c = client(gateway, mid)
    r = c.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"], dimensions=6)
    assert [d.index for d in r.data] == [0, 1]
    assert all(len(d.embedding) == 6 for d in r.data)
    assert r.usage.prompt_tokens > 0
    # The SDK asks for base64 by default when numpy is absent; ask explicitly too.
    raw = gateway.post("/v1/embeddings", {"model": "text-embedding-3-small", "input": "alpha",
                                          "dimensions": 6, "encoding_format": "base64"},
                       headers={"x-mock-id": mid})
    floats = struct.unpack("<6f", base64.b64decode(raw.json()["data"][0]["embedding"]))
    assert list(floats) == pytest.approx(r.data[0].embedding)
    seen = mock.requests(mid)
    assert [s["path"] for s in seen] == ["/v1/embeddings", "/v1/embeddings"]
    assert seen[0]["body"]["input"] == ["alpha", "beta"]


def test_embeddings_errors(gateway):
    r = gateway.post("/v1/embeddings", {"model": "text-embedding-3-small"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    r = gateway.post("/v1/embeddings", {"model": "claude-3-5-haiku", "input": "x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_endpoint"
    r = gateway.post("/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"},
                     headers={"x-mock-status": "429"})
    assert r.status_code == 429 and "openai" in r.json()["error"]["message"]
