"""OpenAI client → Google Vertex AI (Gemini and Claude models, text embeddings), through a real
Envoy with the LLMux filter.

The mock serves Vertex's model paths (`/v1/projects/{p}/locations/{l}/publishers/{google|anthropic}/
models/{m}:{method}`) and refuses any request without `Authorization: Bearer <token it knows>`;
Claude bodies are refused when they carry `model` or lack `anthropic_version: vertex-2023-10-16`,
then validated as strictly as the Anthropic API. Gemini bodies are validated like the Gemini API.
"""
import base64
import struct

import openai
import pytest

from harness import Gateway, Mock, new_id

STATIC = "ya29.static-e2e-token"
PROJECT = "proj-e2e"
LOCATION = "us-central1"
PREFIX = f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]

MODELS = [
    {"name": "vertex-gemini", "deployments": [{"provider": "vx", "model": "gemini-2.5-flash"}]},
    {"name": "vertex-claude", "deployments": [{"provider": "vx", "model": "claude-sonnet-4@20250514"}]},
    {"name": "vertex-embed", "deployments": [{"provider": "vx", "model": "text-embedding-005"}]},
]


def static_config(token=STATIC):
    return {
        "providers": {"vx": {"type": "vertex", "cluster": "mock", "project": PROJECT,
                             "location": LOCATION, "access_token": token}},
        "models": MODELS,
    }


@pytest.fixture(scope="module")
def vmock(log_dir):
    m = Mock(log_dir, args=["--vertex-token", STATIC])
    yield m
    m.stop()


@pytest.fixture(scope="module")
def vgw(vmock, log_dir):
    g = Gateway(vmock, log_dir, llmux_config=static_config(), name="envoy-vertex")
    yield g
    g.stop()
    assert "panicked" not in g.process.log()


def client(g, mid, **headers):
    return openai.OpenAI(base_url=g.url + "/v1", api_key="sk-client-key", max_retries=0,
                         default_headers={"x-mock-id": mid, **headers})


def sent(m, mid):
    [req] = m.requests(mid)
    return req


def test_gemini_on_vertex_plain(vgw, vmock):
    mid = new_id()
    r = client(vgw, mid).chat.completions.create(
        model="vertex-gemini", messages=[{"role": "user", "content": "Hi Vertex"}], max_tokens=50)
    assert r.choices[0].message.content == "Hello from the mock! You said: Hi Vertex"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens > 0
    req = sent(vmock, mid)
    assert req["path"] == f"{PREFIX}/google/models/gemini-2.5-flash:generateContent"
    assert req["headers"]["authorization"] == f"Bearer {STATIC}"
    assert req["headers"]["host"] == f"{LOCATION}-aiplatform.googleapis.com"
    assert "x-goog-api-key" not in req["headers"]
    assert req["body"]["generationConfig"]["maxOutputTokens"] == 50


def test_gemini_on_vertex_stream(vgw, vmock):
    mid = new_id()
    chunks = list(client(vgw, mid).chat.completions.create(
        model="vertex-gemini", messages=[{"role": "user", "content": "Stream please"}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the mock! You said: Stream please"
    assert chunks[-1].usage.completion_tokens > 0
    req = sent(vmock, mid)
    assert req["path"] == f"{PREFIX}/google/models/gemini-2.5-flash:streamGenerateContent"
    assert req["query"] == "alt=sse"


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_on_vertex_tools(vgw, stream):
    c = client(vgw, new_id(), **{"x-mock-tool-calls": "1"})
    kw = dict(model="vertex-gemini", messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS)
    if stream:
        calls = [tc for ch in c.chat.completions.create(stream=True, **kw) if ch.choices
                 for tc in (ch.choices[0].delta.tool_calls or [])]
        assert calls[0].function.name == "get_weather"
    else:
        r = c.chat.completions.create(**kw)
        assert r.choices[0].finish_reason == "tool_calls"
        assert r.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_claude_on_vertex_plain(vgw, vmock):
    mid = new_id()
    r = client(vgw, mid).chat.completions.create(
        model="vertex-claude", messages=[{"role": "system", "content": "Be brief."},
                                         {"role": "user", "content": "Hi Claude"}])
    assert r.choices[0].message.content == "Hello from the mock! You said: Hi Claude"
    assert r.usage.prompt_tokens > 0
    req = sent(vmock, mid)
    assert req["path"] == f"{PREFIX}/anthropic/models/claude-sonnet-4@20250514:rawPredict"
    assert "model" not in req["body"]
    assert req["body"]["anthropic_version"] == "vertex-2023-10-16"
    assert req["body"]["system"] == "Be brief."
    assert req["headers"]["authorization"] == f"Bearer {STATIC}"
    assert "x-api-key" not in req["headers"]


def test_claude_on_vertex_stream_with_tools(vgw, vmock):
    mid = new_id()
    chunks = list(client(vgw, mid, **{"x-mock-tool-calls": "1"}).chat.completions.create(
        model="vertex-claude", messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS,
        stream=True, stream_options={"include_usage": True}))
    calls = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "get_weather"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "tool_calls"
    assert chunks[-1].usage.total_tokens > 0
    req = sent(vmock, mid)
    assert req["path"] == f"{PREFIX}/anthropic/models/claude-sonnet-4@20250514:streamRawPredict"
    assert req["body"]["stream"] is True and "model" not in req["body"]


def test_vertex_embeddings_float_and_base64(vgw, vmock):
    mid = new_id()
    c = client(vgw, mid)
    r = c.embeddings.create(model="vertex-embed", input=["hello world", "bye"], dimensions=16,
                            encoding_format="float")
    assert [len(d.embedding) for d in r.data] == [16, 16]
    # statistics.token_count of the mock: ⌈11/4⌉ + ⌈3/4⌉
    assert r.usage.prompt_tokens == 4
    req = sent(vmock, mid)
    assert req["path"] == f"{PREFIX}/google/models/text-embedding-005:predict"
    assert req["body"] == {"instances": [{"content": "hello world"}, {"content": "bye"}],
                           "parameters": {"outputDimensionality": 16}}
    raw = vgw.post("/v1/embeddings", {"model": "vertex-embed", "input": "hello world",
                                      "dimensions": 16, "encoding_format": "base64"}).json()
    got = struct.unpack("<16f", base64.b64decode(raw["data"][0]["embedding"]))
    want = [struct.unpack("<f", struct.pack("<f", x))[0] for x in r.data[0].embedding]
    assert list(got) == want


def test_rejected_token_is_an_openai_401(vmock, log_dir):
    g = Gateway(vmock, log_dir, llmux_config=static_config("ya29.wrong"), name="envoy-vertex-bad")
    try:
        with pytest.raises(openai.AuthenticationError) as e:
            client(g, new_id()).chat.completions.create(
                model="vertex-gemini", messages=[{"role": "user", "content": "x"}])
        assert "UNAUTHENTICATED" in e.value.body["message"]
        assert e.value.body["message"].startswith("vx returned 401")
    finally:
        g.stop()


def test_vertex_errors_of_both_shapes(vgw):
    for model, status in (("vertex-gemini", 429), ("vertex-claude", 529), ("vertex-claude", 400)):
        r = vgw.post("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "x"}]},
                     headers={"x-mock-status": str(status)})
        assert r.status_code == (503 if status == 529 else status), r.text
        assert r.json()["error"]["message"].startswith(f"vx returned {status}")


# --- service-account key: JWT → token endpoint → cached token ------------------------------------

import json as _json  # noqa: E402
import os  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import httpx  # noqa: E402

from harness import ROOT, free_port, static_cluster  # noqa: E402

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "vertex")
SA_KEY = open(os.path.join(FIXTURES, "service_account.json")).read()


def sa_config(token_cluster="mock"):
    return {
        "providers": {"vx": {"type": "vertex", "cluster": "mock", "project": PROJECT,
                             "location": LOCATION, "service_account_key": SA_KEY,
                             "token_cluster": token_cluster, "token_timeout_ms": 2000}},
        "models": MODELS,
    }


def all_requests(m):
    return httpx.get(f"{m.url}/__mock/requests", timeout=5).json()


def issued(m):
    return httpx.get(f"{m.url}/__mock/tokens", timeout=5).json()["issued"]


@pytest.fixture
def samock(log_dir):
    """A mock that verifies assertions with the test key's public key (fresh token count)."""
    m = Mock(log_dir, args=["--vertex-public-key", os.path.join(FIXTURES, "service_account_public.pem")])
    yield m
    m.stop()


def test_service_account_one_token_fetch_for_many_concurrent_requests(samock, log_dir):
    g = Gateway(samock, log_dir, llmux_config=sa_config(), name="envoy-vertex-sa", concurrency=2)
    try:
        assert issued(samock) == 0
        mid = new_id()

        def one(i):
            model = ("vertex-gemini", "vertex-claude")[i % 2]
            return client(g, mid).chat.completions.create(
                model=model, messages=[{"role": "user", "content": f"n{i}"}])

        # All cold: the first requests of both worker VMs arrive before any token exists.
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(pool.map(one, range(24)))
        assert sorted(a.choices[0].message.content for a in answers) == sorted(
            f"Hello from the mock! You said: n{i}" for i in range(24))
        emb = client(g, mid).embeddings.create(model="vertex-embed", input="x", encoding_format="float")
        assert len(emb.data) == 1
        assert issued(samock) == 1, "one token fetch for all requests of all workers"
        seen = samock.requests(mid)
        assert len(seen) == 25
        assert {r["headers"]["authorization"] for r in seen} == {"Bearer ya29.mock-1"}
        [tok_req] = [r for r in all_requests(samock) if r["path"] == "/token"]
        assert tok_req["headers"]["content-type"] == "application/x-www-form-urlencoded"
        assert tok_req["headers"]["host"] == "oauth2.googleapis.com"
        assert "panicked" not in g.process.log()
    finally:
        g.stop()


def test_token_endpoint_refusal_is_a_502_naming_provider_and_status(log_dir):
    # This mock verifies with another key: the signature is refused (400 invalid_grant).
    m = Mock(log_dir, args=["--vertex-public-key", os.path.join(FIXTURES, "other_public.pem")])
    g = Gateway(m, log_dir, llmux_config=sa_config(), name="envoy-vertex-sa-bad")
    try:
        for _ in range(2):  # the failed fetch frees the lease: the next request tries again
            mid = new_id()
            r = g.post("/v1/chat/completions", {"model": "vertex-gemini",
                                                "messages": [{"role": "user", "content": "x"}]},
                       headers={"x-mock-id": mid})
            assert r.status_code == 502, r.text
            err = r.json()["error"]
            assert err["code"] == "token_fetch_failed"
            assert "vertex provider `vx`" in err["message"]
            assert "oauth2.googleapis.com/token" in err["message"]
            assert "answered 400: invalid_grant: Invalid JWT Signature." in err["message"], err
            assert m.requests(mid) == [], "nothing reaches Vertex without a token"
        assert issued(m) == 0
        assert len([r for r in all_requests(m) if r["path"] == "/token"]) == 2
    finally:
        g.stop()
        m.stop()


def test_unreachable_token_endpoint_is_a_502(samock, log_dir):
    dead = free_port()
    g = Gateway(samock, log_dir, llmux_config=sa_config("deadtoken"), name="envoy-vertex-sa-dead",
                extra_clusters=static_cluster("deadtoken", dead))
    try:
        r = g.post("/v1/chat/completions", {"model": "vertex-claude",
                                            "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 502, r.text
        # Envoy itself answers the callout: 503 and its reset reason.
        msg = r.json()["error"]["message"]
        assert "(cluster `deadtoken`) answered 503" in msg and "connection failure" in msg, msg
        assert _json.loads(r.text)["error"]["type"] == "api_error"
    finally:
        g.stop()
