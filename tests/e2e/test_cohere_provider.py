"""OpenAI client (and Anthropic Messages client) → Cohere v2 Chat, through a real Envoy.
The mock validates requests as Cohere does (known fields only, REQUIRED/NONE tool choice, `p`
not `top_p`, Bearer key)."""
import json

import anthropic
import openai
import pytest

from harness import new_id

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def cohere_gw(mock, log_dir):
    from harness import Gateway
    g = Gateway(mock, log_dir, name="envoy-cohere", llmux_config={
        "providers": {"co": {"type": "cohere", "cluster": "mock", "api_key": "co-key"}},
        "models": [{"name": "command-a", "deployments": [{"provider": "co", "model": "command-a-03-2025"}]}],
    })
    yield g
    g.stop()


def client(g, mid, **h):
    return openai.OpenAI(base_url=g.url + "/v1", api_key="sk-client", max_retries=0,
                         default_headers={"x-mock-id": mid, **h})


def test_plain(cohere_gw, mock):
    mid = new_id()
    r = client(cohere_gw, mid).chat.completions.create(
        model="command-a", messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        top_p=0.5, stop="END", max_completion_tokens=20)
    assert r.choices[0].message.content == "Hello from the mock! You said: Hi"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens > 0
    [seen] = mock.requests(mid)
    assert seen["path"] == "/v2/chat"
    assert seen["headers"]["authorization"] == "Bearer co-key"
    b = seen["body"]
    assert b["model"] == "command-a-03-2025" and b["p"] == 0.5 and b["stop_sequences"] == ["END"]
    assert b["max_tokens"] == 20 and b["messages"][0]["role"] == "system"


def test_stream_with_usage(cohere_gw):
    chunks = list(client(cohere_gw, new_id()).chat.completions.create(
        model="command-a", messages=[{"role": "user", "content": "Stream"}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the mock! You said: Stream"
    assert chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_tools_round_trip(cohere_gw, mock, stream):
    c = client(cohere_gw, new_id(), **{"x-mock-tool-calls": "2"})
    kwargs = dict(model="command-a", messages=[{"role": "user", "content": "w?"}], tools=TOOLS, tool_choice="required")
    if stream:
        args, names, finish = {}, {}, None
        for ch in c.chat.completions.create(stream=True, **kwargs):
            for tc in ch.choices[0].delta.tool_calls or []:
                args[tc.index] = args.get(tc.index, "") + (tc.function.arguments or "")
                if tc.function.name:
                    names[tc.index] = tc.function.name
            finish = ch.choices[0].finish_reason or finish
        assert finish == "tool_calls"
        assert [json.loads(args[i]) for i in sorted(args)] == [{"city": "Paris", "i": 0}, {"city": "Paris", "i": 1}]
        return
    r = c.chat.completions.create(**kwargs)
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls" and len(calls) == 2
    mid = new_id()
    history = [{"role": "user", "content": "w?"}, r.choices[0].message.model_dump(exclude_none=True)]
    history += [{"role": "tool", "tool_call_id": t.id, "content": "sunny"} for t in calls]
    r2 = client(cohere_gw, mid).chat.completions.create(model="command-a", messages=history, tools=TOOLS)
    assert r2.choices[0].finish_reason == "stop"
    sent = mock.requests(mid)[0]["body"]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool", "tool"]


def test_errors_mapped(cohere_gw):
    r = cohere_gw.post("/v1/chat/completions", {"model": "command-a", "messages": [{"role": "user", "content": "x"}]},
                       headers={"x-mock-status": "429"})
    assert r.status_code == 429
    assert "co returned 429" in r.json()["error"]["message"]
    r = cohere_gw.post("/v1/chat/completions", {"model": "command-a", "n": 3, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


def test_stream_error_event(cohere_gw):
    r = cohere_gw.post("/v1/chat/completions", {"model": "command-a", "stream": True, "messages": [{"role": "user", "content": "x"}]},
                       headers={"x-mock-stream-error-after": "3"})
    events = [e for e in r.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert "error" in json.loads(events[-2][6:])


def test_anthropic_sdk_against_cohere(cohere_gw):
    c = anthropic.Anthropic(base_url=cohere_gw.url, api_key="x", max_retries=0)
    m = c.messages.create(model="command-a", max_tokens=50, messages=[{"role": "user", "content": "Hi"}])
    assert m.content[0].text == "Hello from the mock! You said: Hi"
    with c.messages.stream(model="command-a", max_tokens=50, messages=[{"role": "user", "content": "Yo"}]) as s:
        assert "".join(s.text_stream) == "Hello from the mock! You said: Yo"


def test_stream_cut_at_many_offsets(cohere_gw):
    # Every offset is covered by the unit tests; through Envoy, every 7th byte keeps this quick.
    body = {"model": "command-a", "stream": True, "messages": [{"role": "user", "content": "split"}]}
    ref = cohere_gw.post("/v1/chat/completions", body).text
    norm = lambda t: [json.loads(e[6:]) if e != "data: [DONE]" else e for e in t.split("\n\n") if e]  # noqa: E731
    strip = lambda evs: [{k: v for k, v in e.items() if k not in ("id", "created")} if isinstance(e, dict) else e for e in evs]  # noqa: E731
    reference = strip(norm(ref))
    for k in range(1, 1200, 7):
        got = cohere_gw.post("/v1/chat/completions", body, headers={"x-mock-chunk-offset": str(k), "x-mock-chunk-delay-ms": "1"}).text
        assert strip(norm(got)) == reference, k
