"""OpenAI client → Anthropic Messages API, through a real Envoy with the LLMux filter.

The mock provider validates every request as strictly as the real API (roles alternate, known
fields only, tool results reference tool uses, max_tokens present, no leaked Authorization), so a
200 here means the translation was accepted; the recorded request shows what was sent.
"""
import json

import httpx
import openai
import pytest

from harness import new_id

MODEL = "claude-3-5-haiku"
UPSTREAM = "claude-3-5-haiku-20241022"
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                      "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                     "required": ["city"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]


def client(gateway, mid, **headers):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-client-key", max_retries=0,
                         default_headers={"x-mock-id": mid, **headers})


def sent(mock, mid):
    [req] = mock.requests(mid)
    return req


def test_plain_completion_via_sdk(gateway, mock):
    mid = new_id()
    r = client(gateway, mid, **{"x-mock-cache-read": "5", "x-mock-cache-creation": "2"}).chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "Hi Claude"}],
        temperature=0.5, stop=["\n\n"], user="u-42")
    assert r.object == "chat.completion"
    assert r.model == UPSTREAM
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "Hello from the mock! You said: Hi Claude"
    assert r.choices[0].finish_reason == "stop"
    # prompt = input + cache read + cache creation; cached = cache read
    assert r.usage.prompt_tokens_details.cached_tokens == 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    req = sent(mock, mid)
    assert req["path"] == "/v1/messages"
    assert req["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in req["headers"], "the client's OpenAI key must not leak to Anthropic"
    body = req["body"]
    assert body["model"] == UPSTREAM
    assert body["system"] in ("Be brief.", [{"type": "text", "text": "Be brief."}])
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi Claude"}]}] or \
        body["messages"] == [{"role": "user", "content": "Hi Claude"}]
    assert body["max_tokens"] == 4096  # the documented default when the client sends none
    assert body["stop_sequences"] == ["\n\n"]
    assert body["temperature"] == 0.5
    assert body["metadata"] == {"user_id": "u-42"}


@pytest.mark.parametrize("finish, expected", [("end_turn", "stop"), ("max_tokens", "length"),
                                              ("stop_sequence", "stop")])
def test_finish_reasons(gateway, finish, expected):
    r = client(gateway, new_id(), **{"x-mock-finish": finish}).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=5)
    assert r.choices[0].finish_reason == expected


def test_multi_turn_developer_images_and_same_role_merge(gateway, mock):
    mid = new_id()
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    r = client(gateway, mid).chat.completions.create(model=MODEL, max_completion_tokens=100, messages=[
        {"role": "developer", "content": "Rule 1"},
        {"role": "user", "content": "first"},
        {"role": "user", "content": [{"type": "text", "text": "look:"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                                     {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]},
        {"role": "assistant", "content": "ok"},
        {"role": "system", "content": "Rule 2"},
        {"role": "user", "content": "again"},
    ])
    assert r.choices[0].message.content.endswith("again")
    body = sent(mock, mid)["body"]
    assert body["max_tokens"] == 100
    system_text = body["system"] if isinstance(body["system"], str) else " ".join(b["text"] for b in body["system"])
    assert "Rule 1" in system_text and "Rule 2" in system_text
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    blocks = body["messages"][0]["content"]
    assert {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}} in blocks
    assert {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}} in blocks


def test_tool_calls_round_trip_via_sdk(gateway, mock):
    mid = new_id()
    c = client(gateway, mid, **{"x-mock-tool-calls": "2"})
    r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "weather and time?"}],
                                  tools=TOOLS, tool_choice="required")
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    assert [t.function.name for t in msg.tool_calls] == ["get_weather", "get_time"]
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Paris", "i": 0}
    body = sent(mock, mid)["body"]
    assert body["tool_choice"] == {"type": "any"}
    assert body["tools"][0] == {"name": "get_weather", "description": "Weather for a city",
                                "input_schema": TOOLS[0]["function"]["parameters"]}

    # Send both results back (parallel tool results → one user message of tool_result blocks).
    mid2 = new_id()
    history = [{"role": "user", "content": "weather and time?"}, msg.model_dump(exclude_none=True)]
    for tc in msg.tool_calls:
        history.append({"role": "tool", "tool_call_id": tc.id, "content": f"result of {tc.function.name}"})
    r2 = client(gateway, mid2).chat.completions.create(
        model=MODEL, messages=history, tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}}, parallel_tool_calls=False)
    assert r2.choices[0].finish_reason == "stop"
    body = sent(mock, mid2)["body"]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert [b["type"] for b in body["messages"][1]["content"]] == ["tool_use", "tool_use"]
    results = body["messages"][2]["content"]
    assert [b["tool_use_id"] for b in results] == [tc.id for tc in msg.tool_calls]
    assert body["tool_choice"] == {"type": "tool", "name": "get_time", "disable_parallel_tool_use": True}


@pytest.mark.parametrize("choice, expected", [("auto", {"type": "auto"}), ("none", {"type": "none"})])
def test_tool_choice_auto_none(gateway, mock, choice, expected):
    mid = new_id()
    client(gateway, mid).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                                 tools=TOOLS, tool_choice=choice)
    assert sent(mock, mid)["body"]["tool_choice"] == expected


def test_stream_via_sdk_with_usage(gateway, mock):
    mid = new_id()
    stream = client(gateway, mid, **{"x-mock-ping": "1"}).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream please"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the mock! You said: stream please"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert sent(mock, mid)["body"]["stream"] is True


def test_stream_without_usage_option_has_no_usage_chunk(gateway):
    stream = client(gateway, new_id()).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True)
    chunks = list(stream)
    assert all(c.choices for c in chunks)


def test_streamed_tool_calls_via_sdk(gateway):
    stream = client(gateway, new_id(), **{"x-mock-tool-calls": "2", "x-mock-text": "Let me check."}).chat.completions.create(
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
    assert all(calls[i]["id"].startswith("toolu_") for i in calls)


def raw_stream(gateway, headers, body=None):
    body = body or {"model": MODEL, "stream": True, "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": "split me"}]}
    r = gateway.post("/v1/chat/completions", body, headers=headers)
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
    out = []
    for e in events:
        if isinstance(e, dict):
            e = {k: v for k, v in e.items() if k not in ("id", "created")}
        out.append(e)
    return out


def test_events_cut_at_every_byte_offset_come_out_intact(gateway):
    reference = normalise(parse_sse(raw_stream(gateway, {})))
    assert reference[-1] == "[DONE]"
    # How long is the provider's stream for this request? Ask the mock directly.
    upstream = httpx.post(gateway.mock.url + "/v1/messages",
                          json={"model": UPSTREAM, "max_tokens": 10, "stream": True,
                                "messages": [{"role": "user", "content": "split me"}]},
                          headers={"anthropic-version": "2023-06-01", "x-api-key": "k"}, timeout=10)
    length = len(upstream.content)
    assert length > 500
    # The mock sends two frames [0,k) and [k,end) with a pause between, so the filter sees the
    # event stream cut at byte k.
    for k in range(1, length):
        got = normalise(parse_sse(raw_stream(gateway, {"x-mock-chunk-offset": str(k),
                                                       "x-mock-chunk-delay-ms": "1"})))
        assert got == reference, f"cut at byte {k}"


def test_byte_by_byte_stream_comes_out_intact(gateway):
    reference = normalise(parse_sse(raw_stream(gateway, {})))
    got = normalise(parse_sse(raw_stream(gateway, {"x-mock-chunk-size": "1", "x-mock-chunk-delay-ms": "0"})))
    assert got == reference


def test_in_band_error_becomes_openai_error_event(gateway):
    text = raw_stream(gateway, {"x-mock-stream-error-after": "4"})
    events = parse_sse(text)
    assert events[-1] == "[DONE]"
    err = events[-2]["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert "overloaded" in err["message"].lower()
    with pytest.raises(openai.APIError):
        list(client(gateway, new_id(), **{"x-mock-stream-error-after": "4"}).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True))


def test_dropped_stream_ends_with_error_then_done(gateway):
    events = parse_sse(raw_stream(gateway, {"x-mock-drop-after": "5"}))
    assert events[-1] == "[DONE]"
    assert "message_stop" in events[-2]["error"]["message"]


def test_invalid_translation_input_is_400_before_upstream(gateway, mock):
    mid = new_id()
    r = gateway.post("/v1/chat/completions", {"model": MODEL, "n": 2, "messages": [{"role": "user", "content": "x"}]},
                     headers={"x-mock-id": mid})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "n"
    r = gateway.post("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}]}, headers={"x-mock-id": mid})
    assert r.status_code == 400
    assert "messages[0].content[0]" in r.json()["error"]["param"]
    assert mock.requests(mid) == []
