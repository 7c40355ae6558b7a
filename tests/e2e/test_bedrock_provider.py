"""OpenAI client → AWS Bedrock (Converse, ConverseStream, InvokeModel embeddings), through a real Envoy.
The mock checks every request's SigV4 signature with its own credentials (403 on mismatch), and
validates Converse bodies as Bedrock does (known fields, user first, alternation, no blank text,
toolResult for every toolUse). Streams come back as binary event-stream frames with real CRCs."""
import base64
import json
import re
import struct

import anthropic
import openai
import pytest

from harness import Gateway, new_id

AKID = "AKIDMOCKBEDROCK"
SECRET = "mock/bedrock+SECRET/key"
CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def bedrock_config(**creds):
    provider = {"type": "bedrock", "cluster": "mock", "region": "us-east-1",
                "aws_access_key_id": AKID, "aws_secret_access_key": SECRET, **creds}
    return {
        "providers": {"aws": provider},
        "models": [
            {"name": "claude-bedrock", "deployments": [{"provider": "aws", "model": CLAUDE}]},
            {"name": "titan-embed", "deployments": [{"provider": "aws", "model": "amazon.titan-embed-text-v2:0"}]},
            {"name": "cohere-embed", "deployments": [{"provider": "aws", "model": "cohere.embed-english-v3"}]},
        ],
    }


@pytest.fixture(scope="module")
def bedrock_gw(mock, log_dir):
    g = Gateway(mock, log_dir, name="envoy-bedrock", llmux_config=bedrock_config(aws_session_token="mock-session-token"))
    yield g
    g.stop()
    assert "panicked" not in g.process.log()


def client(g, mid, **h):
    return openai.OpenAI(base_url=g.url + "/v1", api_key="sk-client", max_retries=0,
                         default_headers={"x-mock-id": mid, **h})


def test_plain_chat_is_signed_and_translated(bedrock_gw, mock):
    mid = new_id()
    r = client(bedrock_gw, mid, **{"x-mock-cache-read": "4"}).chat.completions.create(
        model="claude-bedrock", messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_completion_tokens=20, temperature=0.3, top_p=0.5, stop=["END"])
    assert r.choices[0].message.content == "Hello from the mock! You said: Hi"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 4 and r.usage.completion_tokens > 0
    assert r.usage.prompt_tokens_details.cached_tokens == 4
    [seen] = mock.requests(mid)
    # The model id is one percent-encoded path segment; the signature covered it.
    assert seen["path"] == "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    h = seen["headers"]
    assert h["host"] == "bedrock-runtime.us-east-1.amazonaws.com"
    assert h["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/")
    assert "/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=" in h["authorization"]
    assert h["x-amz-security-token"] == "mock-session-token"
    b = seen["body"]
    assert b["system"] == [{"text": "Be brief."}]
    assert b["messages"] == [{"role": "user", "content": [{"text": "Hi"}]}]
    assert b["inferenceConfig"] == {"maxTokens": 20, "temperature": 0.3, "topP": 0.5, "stopSequences": ["END"]}


def test_wrong_secret_is_refused_by_the_mock(mock, make_gateway):
    g = make_gateway(bedrock_config(aws_secret_access_key="not-the-secret"))
    r = g.post("/v1/chat/completions", {"model": "claude-bedrock", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 403
    e = r.json()["error"]
    assert e["type"] == "permission_error" and e["code"] == "AccessDeniedException"
    assert "The request signature we calculated does not match" in e["message"]


def test_stream_reassembles_to_the_plain_answer(bedrock_gw):
    c = client(bedrock_gw, new_id())
    msgs = [{"role": "user", "content": "Stream this please"}]
    plain = c.chat.completions.create(model="claude-bedrock", messages=msgs)
    chunks = list(c.chat.completions.create(model="claude-bedrock", messages=msgs, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == plain.choices[0].message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert len({ch.id for ch in chunks}) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_tools_round_trip(bedrock_gw, mock, stream):
    c = client(bedrock_gw, new_id(), **{"x-mock-tool-calls": "2"})
    kwargs = dict(model="claude-bedrock", messages=[{"role": "user", "content": "weather?"}], tools=TOOLS, tool_choice="required")
    if stream:
        args, names, ids, finish = {}, {}, {}, None
        for ch in c.chat.completions.create(stream=True, **kwargs):
            for tc in ch.choices[0].delta.tool_calls or []:
                args[tc.index] = args.get(tc.index, "") + (tc.function.arguments or "")
                if tc.function.name:
                    names[tc.index], ids[tc.index] = tc.function.name, tc.id
            finish = ch.choices[0].finish_reason or finish
        assert finish == "tool_calls"
        assert [json.loads(args[i]) for i in sorted(args)] == [{"city": "Paris", "i": 0}, {"city": "Paris", "i": 1}]
        assert set(names.values()) == {"get_weather"} and all(ids.values())
        return
    r = c.chat.completions.create(**kwargs)
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls" and len(calls) == 2
    assert json.loads(calls[1].function.arguments) == {"city": "Paris", "i": 1}
    # The history goes back: toolUse in the assistant turn, both results merged in one user turn.
    mid = new_id()
    history = [{"role": "user", "content": "weather?"}, r.choices[0].message.model_dump(exclude_none=True)]
    history += [{"role": "tool", "tool_call_id": t.id, "content": "sunny"} for t in calls]
    r2 = client(bedrock_gw, mid).chat.completions.create(model="claude-bedrock", messages=history, tools=TOOLS)
    assert r2.choices[0].finish_reason == "stop"
    sent = mock.requests(mid)[0]["body"]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert [b["toolResult"]["toolUseId"] for b in sent["messages"][2]["content"]] == [t.id for t in calls]
    assert sent["toolConfig"]["tools"][0]["toolSpec"]["name"] == "get_weather"
    assert sent["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"] == TOOLS[0]["function"]["parameters"]


def test_image_goes_as_bytes(bedrock_gw, mock):
    mid = new_id()
    r = client(bedrock_gw, mid).chat.completions.create(model="claude-bedrock", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": PNG}}]}])
    assert r.choices[0].message.content == "Hello from the mock! You said: What is this?"
    block = mock.requests(mid)[0]["body"]["messages"][0]["content"][1]
    assert block == {"image": {"format": "png", "source": {"bytes": PNG.split(",", 1)[1]}}}
    r = bedrock_gw.post("/v1/chat/completions", {"model": "claude-bedrock", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content[0]"


@pytest.mark.parametrize("model,dims", [("titan-embed", 256), ("cohere-embed", None)])
def test_embeddings_float_and_base64(bedrock_gw, mock, model, dims):
    mid = new_id()
    c = client(bedrock_gw, mid)
    inputs = "hello bedrock" if model == "titan-embed" else ["hello bedrock", "second text"]
    extra = {"dimensions": dims} if dims else {}
    floats = c.embeddings.create(model=model, input=inputs, encoding_format="float", **extra)
    b64 = c.embeddings.create(model=model, input=inputs, **extra)  # the SDK asks for base64 by default
    n = 1 if isinstance(inputs, str) else len(inputs)
    assert len(floats.data) == len(b64.data) == n
    assert b64.data[0].embedding == pytest.approx(floats.data[0].embedding, rel=1e-6)  # the SDK decoded our base64
    assert len(floats.data[0].embedding) == (dims or 1024)
    raw = bedrock_gw.post("/v1/embeddings", {"model": model, "input": inputs, "encoding_format": "base64", **extra}).json()
    vec = struct.unpack(f"<{dims or 1024}f", base64.b64decode(raw["data"][0]["embedding"]))
    assert list(vec) == pytest.approx(floats.data[0].embedding)
    seen = mock.requests(mid)[0]
    if model == "titan-embed":
        assert seen["path"] == "/model/amazon.titan-embed-text-v2%3A0/invoke"
        assert seen["body"] == {"inputText": "hello bedrock", "dimensions": 256, "normalize": True}
        assert floats.usage.prompt_tokens > 0
    else:
        assert seen["body"] == {"texts": inputs, "input_type": "search_document", "embedding_types": ["float"]}


def test_titan_takes_one_input(bedrock_gw):
    r = bedrock_gw.post("/v1/embeddings", {"model": "titan-embed", "input": ["a", "b"]})
    assert r.status_code == 400
    e = r.json()["error"]
    assert e["param"] == "input" and "one input per request" in e["message"]


def test_errors_mapped(bedrock_gw):
    body = {"model": "claude-bedrock", "messages": [{"role": "user", "content": "x"}]}
    r = bedrock_gw.post("/v1/chat/completions", body, headers={"x-mock-status": "429", "x-mock-retry-after": "7"})
    assert r.status_code == 429 and r.headers["retry-after"] == "7"
    e = r.json()["error"]
    assert e["type"] == "rate_limit_error" and e["code"] == "ThrottlingException"
    assert "aws returned 429: Too many requests" in e["message"]
    with pytest.raises(openai.RateLimitError):
        client(bedrock_gw, new_id(), **{"x-mock-status": "429"}).chat.completions.create(**body)
    r = bedrock_gw.post("/v1/chat/completions", body, headers={"x-mock-status": "400"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "ValidationException"
    r = bedrock_gw.post("/v1/chat/completions", {**body, "n": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    r = bedrock_gw.post("/v1/chat/completions", {**body, "response_format": {"type": "json_object"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"


def test_stream_exception_becomes_error_event(bedrock_gw):
    r = bedrock_gw.post("/v1/chat/completions", {"model": "claude-bedrock", "stream": True,
                        "messages": [{"role": "user", "content": "one two three four"}]},
                        headers={"x-mock-stream-error-after": "3", "x-mock-exception": "throttlingException"})
    assert r.status_code == 200
    events = [e for e in r.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    err = json.loads(events[-2][6:])["error"]
    assert err["code"] == "throttlingException" and err["type"] == "rate_limit_error"
    assert any('"content":"Hello"' in e for e in events)
    with pytest.raises(openai.APIError):
        for _ in client(bedrock_gw, new_id(), **{"x-mock-stream-error-after": "2"}).chat.completions.create(
                model="claude-bedrock", messages=[{"role": "user", "content": "x"}], stream=True):
            pass


def normalized(text):
    out = []
    for e in text.split("\n\n"):
        if not e:
            continue
        if e == "data: [DONE]":
            out.append(e)
            continue
        d = json.loads(re.sub(r"tooluse_mock\d+_", "tooluse_mock_", e[6:]))  # per-request ids
        d.pop("id", None)
        d.pop("created", None)
        out.append(d)
    return out


def test_stream_split_byte_by_byte_and_at_offsets(bedrock_gw):
    body = {"model": "claude-bedrock", "stream": True, "stream_options": {"include_usage": True},
            "tools": TOOLS, "messages": [{"role": "user", "content": "split me"}]}
    h = {"x-mock-tool-calls": "1", "x-mock-text": "Sure, checking."}
    ref = normalized(bedrock_gw.post("/v1/chat/completions", body, headers=h).text)
    assert ref[-1] == "data: [DONE]" and not any("error" in e for e in ref if isinstance(e, dict))
    got = bedrock_gw.post("/v1/chat/completions", body, headers={**h, "x-mock-chunk-size": "1"}, timeout=60).text
    assert normalized(got) == ref
    for k in range(1, 600, 11):
        got = bedrock_gw.post("/v1/chat/completions", body, headers={**h, "x-mock-chunk-offset": str(k), "x-mock-chunk-delay-ms": "1"}).text
        assert normalized(got) == ref, k


def test_anthropic_sdk_against_bedrock(bedrock_gw):
    c = anthropic.Anthropic(base_url=bedrock_gw.url, api_key="x", max_retries=0)
    m = c.messages.create(model="claude-bedrock", max_tokens=50, messages=[{"role": "user", "content": "Hi"}])
    assert m.content[0].text == "Hello from the mock! You said: Hi"
    with c.messages.stream(model="claude-bedrock", max_tokens=50, messages=[{"role": "user", "content": "Yo"}]) as s:
        assert "".join(s.text_stream) == "Hello from the mock! You said: Yo"


@pytest.mark.parametrize("drop, path", [("region", "providers.aws.region"),
                                        ("aws_access_key_id", "providers.aws.aws_access_key_id")])
def test_bad_config_names_the_field(tmp_path, drop, path):
    from test_errors import run_envoy_until_exit
    cfg = bedrock_config()
    del cfg["providers"]["aws"][drop]
    r = run_envoy_until_exit(tmp_path, cfg)
    assert r.returncode != 0
    assert f"invalid LLMux configuration at `{path}`" in r.stderr + r.stdout
