"""OpenAI client → Google Gemini API (generateContent / streamGenerateContent?alt=sse), through a
real Envoy with the LLMux filter.

The mock provider here runs with `--gemini-key`, validates every request as strictly as the real API
(unknown fields rejected with Google's wording, roles user/model only, function responses must
answer the previous turn's function calls one for one, no client Authorization header), and
streams with CRLF framing and no end sentinel, like Google. A 200 means the translation was
accepted; the recorded request shows what was sent.
"""
import json

import httpx
import openai
import pytest

from harness import Gateway, Mock, new_id

MODEL = "gemini-flash"
UPSTREAM = "gemini-2.5-flash"
KEY = "AIza-e2e-key"
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"], "additionalProperties": False},
                                      "strict": True}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


def config(key=KEY):
    return {
        "providers": {"gem": {"type": "gemini", "cluster": "mock", "api_key": key}},
        "models": [{"name": MODEL, "deployments": [{"provider": "gem", "model": UPSTREAM}]}],
    }


@pytest.fixture(scope="module")
def gmock(log_dir):
    m = Mock(log_dir, args=["--gemini-key", KEY])
    yield m
    m.stop()


@pytest.fixture(scope="module")
def gw(gmock, log_dir):
    g = Gateway(gmock, log_dir, llmux_config=config(), name="envoy-gemini")
    yield g
    g.stop()
    assert "panicked" not in g.process.log()


def client(gw, mid, **headers):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client-key", max_retries=0,
                         default_headers={"x-mock-id": mid, **headers})


def sent(gmock, mid):
    [req] = gmock.requests(mid)
    return req


def test_plain_completion_via_sdk(gw, gmock):
    mid = new_id()
    r = client(gw, mid, **{"x-mock-cache-read": "5"}).chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "Hi Gemini"}],
        temperature=0.5, top_p=0.9, stop=["\n\n"], max_completion_tokens=100, seed=7, user="u-1")
    assert r.object == "chat.completion"
    assert r.model == UPSTREAM
    assert r.id.startswith("mock-resp-")
    assert r.choices[0].message.content == "Hello from the mock! You said: Hi Gemini"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens_details.cached_tokens == 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    req = sent(gmock, mid)
    assert req["path"] == f"/v1beta/models/{UPSTREAM}:generateContent"
    assert req["query"] is None
    assert req["headers"]["x-goog-api-key"] == KEY
    assert "authorization" not in req["headers"], "the client's OpenAI key must not leak to Google"
    body = req["body"]
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hi Gemini"}]}]
    assert body["generationConfig"] == {"temperature": 0.5, "topP": 0.9, "maxOutputTokens": 100,
                                        "stopSequences": ["\n\n"], "seed": 7}


@pytest.mark.parametrize("finish, expected", [("STOP", "stop"), ("MAX_TOKENS", "length"),
                                              ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
                                              ("OTHER", "stop")])
def test_finish_reasons(gw, finish, expected):
    r = client(gw, new_id(), **{"x-mock-finish": finish}).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert r.choices[0].finish_reason == expected


def test_blocked_prompt_is_content_filter(gw):
    r = client(gw, new_id(), **{"x-mock-block-reason": "SAFETY"}).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert r.choices[0].finish_reason == "content_filter"
    assert r.choices[0].message.content == ""
    chunks = list(client(gw, new_id(), **{"x-mock-block-reason": "PROHIBITED_CONTENT"}).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True))
    assert [c.choices[0].finish_reason for c in chunks] == [None, "content_filter"]


def test_multi_turn_images_json_mode_and_candidates(gw, gmock):
    mid = new_id()
    r = client(gw, mid).chat.completions.create(model=MODEL, n=2, messages=[
        {"role": "developer", "content": "Rule 1"},
        {"role": "user", "content": "first"},
        {"role": "user", "content": [{"type": "text", "text": "look:"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]},
        {"role": "assistant", "content": "ok"},
        {"role": "system", "content": "Rule 2"},
        {"role": "user", "content": "again"},
    ], response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {
        "type": "object", "properties": {"x": {"type": "integer"}}, "additionalProperties": False}}})
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[1].message.content.endswith("again")
    body = sent(gmock, mid)["body"]
    assert body["systemInstruction"] == {"parts": [{"text": "Rule 1"}, {"text": "Rule 2"}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert body["contents"][0]["parts"] == [
        {"text": "first"}, {"text": "look:"}, {"inlineData": {"mimeType": "image/png", "data": PNG}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}}]
    assert body["generationConfig"]["candidateCount"] == 2
    assert body["generationConfig"]["responseMimeType"] == "application/json"
    assert body["generationConfig"]["responseJsonSchema"]["additionalProperties"] is False


def test_reasoning_effort_gives_reasoning_content(gw, gmock):
    mid = new_id()
    r = client(gw, mid).chat.completions.create(model=MODEL, reasoning_effort="low",
                                                messages=[{"role": "user", "content": "think"}])
    assert r.choices[0].message.model_extra["reasoning_content"] == "Thinking about the answer."
    assert r.usage.completion_tokens_details.reasoning_tokens == 5
    assert sent(gmock, mid)["body"]["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024,
                                                                             "includeThoughts": True}


def test_tool_calls_round_trip_via_sdk(gw, gmock):
    mid = new_id()
    c = client(gw, mid, **{"x-mock-tool-calls": "2"})
    r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "weather and time?"}],
                                  tools=TOOLS, tool_choice="required")
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    assert [t.function.name for t in msg.tool_calls] == ["get_weather", "get_time"]
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Paris", "i": 0}
    # The first call carries the mock's thought signature in its id.
    assert msg.tool_calls[0].id.startswith("call_0_ts_") and msg.tool_calls[1].id == "call_1"
    body = sent(gmock, mid)["body"]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert body["tools"][0]["functionDeclarations"][0] == {
        "name": "get_weather", "description": "Weather for a city",
        "parametersJsonSchema": TOOLS[0]["function"]["parameters"]}

    # Send both results back: one user turn of functionResponse parts, names looked up by id.
    mid2 = new_id()
    history = [{"role": "user", "content": "weather and time?"}, msg.model_dump(exclude_none=True)]
    history.append({"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": '{"temp": 21}'})
    history.append({"role": "tool", "tool_call_id": msg.tool_calls[1].id, "content": "12:00"})
    r2 = client(gw, mid2).chat.completions.create(
        model=MODEL, messages=history, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert r2.choices[0].finish_reason == "stop"
    body = sent(gmock, mid2)["body"]
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    calls = body["contents"][1]["parts"]
    assert calls[0]["thoughtSignature"] == "bW9jay1zaWctMA=="  # given back exactly
    assert "thoughtSignature" not in calls[1]  # Gemini signs only the first of parallel calls
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
        {"functionResponse": {"name": "get_time", "response": {"output": "12:00"}}}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}


def test_history_from_another_model_is_accepted(gw, gmock):
    """Tool calls made by another model carry no thought signature: the first gets the placeholder."""
    mid = new_id()
    r = client(gw, mid).chat.completions.create(model=MODEL, tools=TOOLS, messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_01", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "toolu_02", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "toolu_02", "content": "noon"},
        {"role": "tool", "tool_call_id": "toolu_01", "content": "rain"},
    ])
    assert r.choices[0].finish_reason == "stop"
    parts = sent(gmock, mid)["body"]["contents"][1]["parts"]
    assert parts[0]["thoughtSignature"] == "skip_thought_signature_validator"
    assert "thoughtSignature" not in parts[1]


@pytest.mark.parametrize("choice, expected", [("auto", "AUTO"), ("none", "NONE")])
def test_tool_choice_auto_none(gw, gmock, choice, expected):
    mid = new_id()
    client(gw, mid).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                            tools=TOOLS, tool_choice=choice)
    assert sent(gmock, mid)["body"]["toolConfig"] == {"functionCallingConfig": {"mode": expected}}


def test_stream_via_sdk_with_usage(gw, gmock):
    mid = new_id()
    stream = client(gw, mid, **{"x-mock-cache-read": "2"}).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream please"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the mock! You said: stream please"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 2
    assert all(c.object == "chat.completion.chunk" and c.model == UPSTREAM for c in chunks)
    req = sent(gmock, mid)
    assert req["path"] == f"/v1beta/models/{UPSTREAM}:streamGenerateContent"
    assert req["query"] == "alt=sse"
    assert "stream" not in req["body"]


def test_stream_without_usage_option_has_no_usage_chunk(gw):
    chunks = list(client(gw, new_id()).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True))
    assert all(c.choices for c in chunks)


def test_streamed_tool_calls_via_sdk(gw):
    stream = client(gw, new_id(), **{"x-mock-tool-calls": "2", "x-mock-text": "Let me check."}).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "w?"}], tools=TOOLS, stream=True)
    text, calls, finish = "", {}, None
    for c in stream:
        d = c.choices[0].delta
        text += d.content or ""
        for tc in d.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": None, "name": None, "args": ""})
            entry["id"] = entry["id"] or tc.id
            entry["name"] = entry["name"] or (tc.function.name if tc.function else None)
            entry["args"] += (tc.function.arguments or "") if tc.function else ""
        finish = c.choices[0].finish_reason or finish
    assert text == "Let me check."
    assert finish == "tool_calls"
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert [json.loads(calls[i]["args"]) for i in sorted(calls)] == [{"city": "Paris", "i": 0}, {"city": "Paris", "i": 1}]
    assert [calls[i]["id"][:6] for i in sorted(calls)] == ["call_0", "call_1"]


def raw_stream(gw, headers, body=None):
    body = body or {"model": MODEL, "stream": True, "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": "split me"}]}
    r = gw.post("/v1/chat/completions", body, headers=headers)
    assert r.status_code == 200, r.text
    return r.text


def parse_sse(text):
    events = [e for e in text.split("\n\n") if e]
    out = []
    for e in events:
        assert e.startswith("data: "), e
        data = e[len("data: "):]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def normalise(events):
    """Drops the fields that differ per request (id, created) so two streams compare equal."""
    return [{k: v for k, v in e.items() if k not in ("id", "created")} if isinstance(e, dict) else e
            for e in events]


def test_events_cut_at_every_byte_offset_come_out_intact(gw, gmock):
    reference = normalise(parse_sse(raw_stream(gw, {})))
    assert reference[-1] == "[DONE]"
    # How long is the provider's stream for this request? Ask the mock directly.
    upstream = httpx.post(f"{gmock.url}/v1beta/models/{UPSTREAM}:streamGenerateContent?alt=sse",
                          json={"contents": [{"role": "user", "parts": [{"text": "split me"}]}]},
                          headers={"x-goog-api-key": KEY}, timeout=10)
    assert upstream.status_code == 200, upstream.text
    assert b"\r\n\r\n" in upstream.content
    length = len(upstream.content)
    assert length > 500
    # The mock sends two frames [0,k) and [k,end) with a pause between, so the filter sees the
    # event stream cut at byte k (CRLF pairs included).
    for k in range(1, length):
        got = normalise(parse_sse(raw_stream(gw, {"x-mock-chunk-offset": str(k), "x-mock-chunk-delay-ms": "1"})))
        assert got == reference, f"cut at byte {k}"


def test_byte_by_byte_stream_comes_out_intact(gw):
    reference = normalise(parse_sse(raw_stream(gw, {})))
    got = normalise(parse_sse(raw_stream(gw, {"x-mock-chunk-size": "1", "x-mock-chunk-delay-ms": "0"})))
    assert got == reference


def test_raw_error_json_mid_stream_becomes_openai_error_event(gw):
    events = parse_sse(raw_stream(gw, {"x-mock-stream-error-after": "3"}))
    assert events[-1] == "[DONE]"
    err = events[-2]["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == "UNAVAILABLE"
    assert "overloaded" in err["message"]
    with pytest.raises(openai.APIError):
        list(client(gw, new_id(), **{"x-mock-stream-error-after": "3"}).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True))


def test_dropped_stream_ends_with_error_then_done(gw):
    events = parse_sse(raw_stream(gw, {"x-mock-drop-after": "4"}))
    assert events[-1] == "[DONE]"
    assert "finishReason" in events[-2]["error"]["message"]


@pytest.mark.parametrize("status, client_status, kind, code", [
    (400, 400, "invalid_request_error", "INVALID_ARGUMENT"),
    (403, 403, "permission_error", "PERMISSION_DENIED"),
    (429, 429, "rate_limit_error", "RESOURCE_EXHAUSTED"),
    (500, 500, "api_error", "INTERNAL"),
    (503, 503, "api_error", "UNAVAILABLE"),
])
def test_provider_errors_are_mapped(gw, status, client_status, kind, code):
    r = gw.post("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
                headers={"x-mock-status": str(status)})
    assert r.status_code == client_status, r.text
    err = r.json()["error"]
    assert (err["type"], err["code"]) == (kind, code)
    assert err["message"].startswith(f"gem returned {status}: {code}: ")
    if status == 429:
        # From the body's google.rpc.RetryInfo (the mock sends no retry-after header).
        assert r.headers["retry-after"] == "37"
    with pytest.raises(openai.APIStatusError) as e:
        client(gw, new_id(), **{"x-mock-status": str(status)}).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True)
    assert e.value.status_code == client_status


def test_wrong_key_is_mapped(gmock, log_dir):
    g = Gateway(gmock, log_dir, llmux_config=config(key="AIza-wrong"), name="envoy-gemini-wrong-key")
    try:
        r = g.post("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "INVALID_ARGUMENT"
        assert "API key not valid" in r.json()["error"]["message"]
    finally:
        g.stop()


def test_invalid_translation_input_is_400_before_upstream(gw, gmock):
    mid = new_id()
    for body, param in [
        ({"model": MODEL, "logprobs": True, "messages": [{"role": "user", "content": "x"}]}, "logprobs"),
        ({"model": MODEL, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/image"}}]}]}, "messages[0].content[0].image_url"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"},
                                       {"role": "tool", "tool_call_id": "nope", "content": "r"}]}, "messages[1].tool_call_id"),
        ({"model": MODEL, "seed": 2 ** 40, "messages": [{"role": "user", "content": "x"}]}, "seed"),
    ]:
        r = gw.post("/v1/chat/completions", body, headers={"x-mock-id": mid})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
    assert gmock.requests(mid) == []


def test_garbage_never_kills_the_vm(gw):
    import random
    rng = random.Random(4321)
    alphabet = b'{}[]:,"\\ 0123456789abcdefghijklmnopqrstuvwxyz\xff\x00\xe2\x82'
    seeds = [
        json.dumps({"model": MODEL, "stream": True, "tools": TOOLS, "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
            {"role": "assistant", "tool_calls": [{"id": "call_0_ts_bW9jay1zaWctMA", "type": "function",
                                                  "function": {"name": "get_time", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_0_ts_bW9jay1zaWctMA", "content": "{\"t\": 1}"}]}).encode(),
        json.dumps({"model": MODEL, "n": 2, "reasoning_effort": "low", "response_format": {"type": "json_object"},
                    "messages": [{"role": "user", "content": "x"}]}).encode(),
    ]
    for i in range(200):
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 5)):
            body[rng.randrange(len(body))] = rng.choice(alphabet)
        r = gw.post("/v1/chat/completions", bytes(body))
        assert 200 <= r.status_code < 600
        if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
            r.json()["error"]["message"]
    ok = gw.post("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
    assert ok.status_code == 200, ok.text
    assert "panicked" not in gw.process.log()


def test_anthropic_sdk_against_gemini(gw, gmock):
    import anthropic
    c = anthropic.Anthropic(base_url=gw.url, api_key="sk-ant-client", max_retries=0)
    m = c.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "Hi"}])
    assert m.content[0].text == "Hello from the mock! You said: Hi"
    with c.messages.stream(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "Yo"}]) as s:
        assert "".join(s.text_stream) == "Hello from the mock! You said: Yo"
        assert s.get_final_message().usage.output_tokens > 0
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    mid = new_id()
    m = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0,
                            default_headers={"x-mock-tool-calls": "1", "x-mock-id": mid}).messages.create(
        model=MODEL, max_tokens=50, tools=tools, messages=[{"role": "user", "content": "w?"}])
    assert m.stop_reason == "tool_use" and m.content[-1].name == "get_weather"
    assert "x-api-key" not in sent(gmock, mid)["headers"]
