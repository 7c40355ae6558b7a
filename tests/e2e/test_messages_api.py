"""The Anthropic Messages API inbound (`POST /v1/messages`), used by the official `anthropic`
SDK against both quick-start models: Claude straight through, gpt-4o-mini through the OpenAI
pivot (the mock checks the OpenAI request it gets)."""
import json

import anthropic
import pytest

from harness import new_id

TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
         {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}]


def client(g, mid, **headers):
    return anthropic.Anthropic(base_url=g.url, api_key="sk-ant-client", max_retries=0,
                               default_headers={"x-mock-id": mid, **headers})


@pytest.mark.parametrize("model", ["claude-3-5-haiku", "gpt-4o-mini"])
def test_create_via_sdk(gateway, mock, model):
    mid = new_id()
    m = client(gateway, mid).messages.create(model=model, max_tokens=64, system="Be brief.",
                                             messages=[{"role": "user", "content": "Hi there"}])
    assert m.type == "message" and m.role == "assistant"
    assert m.content[0].type == "text"
    assert m.content[0].text == "Hello from the mock! You said: Hi there"
    assert m.stop_reason == "end_turn"
    assert m.usage.output_tokens > 0 and m.usage.input_tokens > 0
    [seen] = mock.requests(mid)
    assert seen["headers"].get("x-api-key") != "sk-ant-client", "the client's key must not go upstream"
    if model == "claude-3-5-haiku":
        assert seen["path"] == "/v1/messages"
        assert seen["body"]["model"] == "claude-3-5-haiku-20241022"
        assert seen["body"]["system"] == "Be brief."
    else:
        assert seen["path"] == "/v1/chat/completions"
        assert seen["body"]["messages"] == [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Hi there"}]
        assert seen["body"]["max_completion_tokens"] == 64


@pytest.mark.parametrize("model", ["claude-3-5-haiku", "gpt-4o-mini"])
def test_stream_via_sdk(gateway, model):
    with client(gateway, new_id()).messages.stream(model=model, max_tokens=64,
                                                   messages=[{"role": "user", "content": "Stream it"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Hello from the mock! You said: Stream it"
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_tools_round_trip_through_openai_provider(gateway, mock, stream):
    c = client(gateway, new_id(), **{"x-mock-tool-calls": "2"})
    kwargs = dict(model="gpt-4o-mini", max_tokens=100, tools=TOOLS, tool_choice={"type": "any"},
                  messages=[{"role": "user", "content": "weather and time?"}])
    if stream:
        with c.messages.stream(**kwargs) as s:
            m = s.get_final_message()
    else:
        m = c.messages.create(**kwargs)
    assert m.stop_reason == "tool_use"
    uses = [b for b in m.content if b.type == "tool_use"]
    assert [u.name for u in uses] == ["get_weather", "get_time"]
    assert uses[0].input == {"city": "Paris", "i": 0}

    mid = new_id()
    follow = client(gateway, mid).messages.create(
        model="gpt-4o-mini", max_tokens=100, tools=TOOLS,
        messages=[{"role": "user", "content": "weather and time?"},
                  {"role": "assistant", "content": [u.model_dump() for u in uses]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": u.id, "content": "ok"}
                                               for u in uses]}])
    assert follow.stop_reason == "end_turn"
    sent = mock.requests(mid)[0]["body"]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "tool", "tool"]
    assert [t["function"]["name"] for t in sent["messages"][1]["tool_calls"]] == ["get_weather", "get_time"]
    assert json.loads(sent["messages"][1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris", "i": 0}


def test_claude_tools_pass_through(gateway):
    m = client(gateway, new_id(), **{"x-mock-tool-calls": "1"}).messages.create(
        model="claude-3-5-haiku", max_tokens=100, tools=TOOLS, messages=[{"role": "user", "content": "w?"}])
    assert m.stop_reason == "tool_use" and m.content[0].type == "tool_use"


def test_errors_in_anthropic_shape(gateway):
    c = client(gateway, new_id())
    with pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(model="gpt-4o-mini", max_tokens=0, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.NotFoundError) as e:
        c.messages.create(model="claude-9", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert "claude-3-5-haiku" in e.value.body["error"]["message"]
    for model, status, exc in [("gpt-4o-mini", 429, anthropic.RateLimitError),
                               ("claude-3-5-haiku", 429, anthropic.RateLimitError),
                               ("claude-3-5-haiku", 529, anthropic.InternalServerError)]:
        with pytest.raises(exc) as e:
            client(gateway, new_id(), **{"x-mock-status": str(status)}).messages.create(
                model=model, max_tokens=5, messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == status
        assert e.value.body["type"] == "error"


def test_stream_error_mid_way_through_openai_provider(gateway):
    r = gateway.post("/v1/messages", {"model": "gpt-4o-mini", "max_tokens": 10, "stream": True,
                                      "messages": [{"role": "user", "content": "x"}]},
                     headers={"x-mock-stream-error-after": "3"})
    assert r.status_code == 200
    events = [e for e in r.text.split("\n\n") if e]
    assert events[0].startswith("event: message_start")
    assert events[-1].startswith("event: error")
    assert json.loads(events[-1].split("data: ", 1)[1])["type"] == "error"
