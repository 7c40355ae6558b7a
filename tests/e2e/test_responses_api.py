"""The OpenAI Responses API inbound (`POST /v1/responses`) for every provider, used by the official
`openai` SDK (`client.responses.create`, plain and `stream=True`, and the `client.responses.stream`
helper, which checks every event against the response it builds) and by the OpenAI Agents SDK,
against Anthropic-protocol and Gemini-protocol deployments on the mock (and Bedrock, Cohere and
Vertex AI ones for text, streams and a tool round trip): the request goes through the OpenAI chat
pivot, and the answer and its stream come back as a `response` object and the Responses semantic
events.

The mock validates each provider's requests as strictly as the real API (Anthropic: roles
alternate, tool results answer tool uses; Gemini: function responses answer the previous turn's
calls, the first call carries its thought signature), so a 200 proves the translation; the
recorded request shows what was sent. OpenAI-protocol deployments get the body as it is."""
import asyncio
import json
import time

import agents  # PyPI openai-agents, pinned in tests/requirements.txt
import httpx
import openai
import pytest

import prom
from harness import Gateway, Mock, new_id

CLAUDE_UPSTREAM = "claude-3-5-haiku-20241022"
GEMINI_UPSTREAM = "gemini-2.5-flash"
GEMINI_KEY = "AIza-e2e-responses"
VERTEX_TOKEN = "ya29.e2e-responses"
PRICE = {"input_per_mtok": 1, "output_per_mtok": 2}
TOOLS = [
    {"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": False,
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}, "strict": False},
]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
CONFIG = {
    "providers": {
        "ant": {"type": "anthropic", "cluster": "mock"},
        "gem": {"type": "gemini", "cluster": "mock", "api_key": GEMINI_KEY},
        "oai": {"type": "openai", "cluster": "mock"},
        "aws": {"type": "bedrock", "cluster": "mock", "region": "us-east-1",
                "aws_access_key_id": "AKIDMOCKBEDROCK", "aws_secret_access_key": "mock/bedrock+SECRET/key"},
        "co": {"type": "cohere", "cluster": "mock", "api_key": "co-key"},
        "vx": {"type": "vertex", "cluster": "mock", "project": "p", "location": "us-central1",
               "access_token": VERTEX_TOKEN},
        # Always answers 503: the first deployment of `failover`.
        "down": {"type": "anthropic", "cluster": "mock", "headers": {"x-mock-status": "503"}},
    },
    "router": {"attempts_cluster": "llmux_attempts", "status": True},
    "models": [
        {"name": "claude", "deployments": [{"provider": "ant", "model": CLAUDE_UPSTREAM, "price": PRICE}]},
        {"name": "gemini", "deployments": [{"provider": "gem", "model": GEMINI_UPSTREAM, "price": PRICE}]},
        {"name": "gpt", "deployments": [{"provider": "oai", "model": "gpt-4o-mini"}]},
        {"name": "bedrock", "deployments": [{"provider": "aws", "model": "us.anthropic.claude-3-5-haiku-20241022-v1:0"}]},
        {"name": "cohere", "deployments": [{"provider": "co", "model": "command-a-03-2025"}]},
        {"name": "vertex-gemini", "deployments": [{"provider": "vx", "model": "gemini-2.5-flash"}]},
        {"name": "vertex-claude", "deployments": [{"provider": "vx", "model": "claude-sonnet-4@20250514"}]},
        {"name": "failover", "strategy": "priority", "deployments": [
            {"provider": "down", "model": CLAUDE_UPSTREAM, "name": "first", "priority": 0},
            {"provider": "gem", "model": GEMINI_UPSTREAM, "name": "second", "priority": 1}]},
    ],
}
MODELS = ["claude", "gemini"]


@pytest.fixture(scope="module")
def mock(log_dir):
    """The mock with a Vertex AI token (the other providers' checks need no flag)."""
    m = Mock(log_dir, args=["--vertex-token", VERTEX_TOKEN])
    yield m
    m.stop()


@pytest.fixture(scope="module")
def gw(mock, log_dir):
    g = Gateway(mock, log_dir, llmux_config=CONFIG, name="envoy-responses")
    yield g
    g.stop()
    assert "panicked" not in g.process.log()


def client(gw, mid, **headers):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-client-key", max_retries=0,
                         default_headers={"x-mock-id": mid, **headers})


def sent(mock, mid):
    [req] = mock.requests(mid)
    assert "sk-client-key" not in json.dumps(req["headers"]), "the client's key must not reach the provider"
    return req


def check_usage(u):
    assert u.input_tokens > 0 and u.output_tokens > 0
    assert u.total_tokens == u.input_tokens + u.output_tokens
    assert u.input_tokens_details.cached_tokens == 0
    assert u.output_tokens_details.reasoning_tokens >= 0


@pytest.mark.parametrize("model", MODELS)
def test_create_via_sdk(gw, mock, model):
    mid = new_id()
    r = client(gw, mid).responses.create(
        model=model, instructions="Be brief.", input="Hi there", max_output_tokens=64,
        temperature=0.5, top_p=0.9, metadata={"k": "v"}, store=False)
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status == "completed" and r.error is None
    assert r.output_text == "Hello from the mock! You said: Hi there"
    [msg] = r.output
    assert msg.type == "message" and msg.role == "assistant" and msg.status == "completed"
    assert msg.id.startswith("msg_") and msg.content[0].type == "output_text"
    check_usage(r.usage)
    assert r.metadata == {"k": "v"} and r.instructions == "Be brief."
    assert r.max_output_tokens == 64 and r.tools == [] and r.tool_choice == "auto"
    req = sent(mock, mid)
    body = req["body"]
    if model == "claude":
        assert req["path"] == "/v1/messages"
        assert body["model"] == CLAUDE_UPSTREAM
        assert body["system"] in ("Be brief.", [{"type": "text", "text": "Be brief."}])
        assert body["max_tokens"] == 64 and body["temperature"] == 0.5
        assert "metadata" not in body  # OpenAI metadata has no Anthropic meaning
    else:
        assert req["path"] == f"/v1beta/models/{GEMINI_UPSTREAM}:generateContent"
        assert req["headers"]["x-goog-api-key"] == GEMINI_KEY
        assert body["systemInstruction"]["parts"] == [{"text": "Be brief."}]
        assert body["generationConfig"]["maxOutputTokens"] == 64
        assert body["generationConfig"]["topP"] == 0.9


@pytest.mark.parametrize("model", MODELS)
def test_stream_via_sdk(gw, model):
    events = list(client(gw, new_id()).responses.create(model=model, input="Stream it", stream=True))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    text = "".join(e.delta for e in deltas)
    assert text == "Hello from the mock! You said: Stream it" and len(deltas) > 1
    item_id = events[2].item.id
    assert all(e.item_id == item_id and e.output_index == 0 for e in deltas)
    done = events[-1].response
    assert done.id == events[0].response.id and done.status == "completed"
    assert done.output_text == text
    check_usage(done.usage)

    # The SDK's stream helper rebuilds the response from the events and checks each one.
    with client(gw, new_id()).responses.stream(model=model, input="Helper") as s:
        streamed = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()
    assert streamed == final.output_text == "Hello from the mock! You said: Helper"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("stream", [False, True])
def test_function_tool_round_trip(gw, mock, model, stream):
    c = client(gw, new_id(), **{"x-mock-tool-calls": "2"})
    kwargs = dict(model=model, input=[{"role": "user", "content": "weather and time?"}],
                  tools=TOOLS, tool_choice="required", parallel_tool_calls=True)
    if stream:
        with c.responses.stream(**kwargs) as s:
            kinds = [e.type for e in s]
            r = s.get_final_response()
        assert kinds.count("response.function_call_arguments.done") == 2
        assert "response.function_call_arguments.delta" in kinds
    else:
        r = c.responses.create(**kwargs)
    calls = [o for o in r.output if o.type == "function_call"]
    assert [f.name for f in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].arguments) == {"city": "Paris", "i": 0}
    assert all(f.call_id and f.id.startswith("fc_") and f.status == "completed" for f in calls)
    assert len({f.call_id for f in calls}) == 2

    # The next turn: the whole conversation (no stored state), the calls' outputs after them.
    mid = new_id()
    follow = client(gw, mid).responses.create(
        model=model, tools=TOOLS, store=False,
        input=[{"role": "user", "content": "weather and time?"},
               *[o.model_dump(exclude_none=True) for o in r.output],
               *[{"type": "function_call_output", "call_id": f.call_id, "output": "ok"} for f in calls]])
    assert follow.status == "completed"
    assert follow.output_text.startswith("Hello from the mock!")
    body = sent(mock, mid)["body"]
    if model == "claude":
        roles = [m["role"] for m in body["messages"]]
        assert roles == ["user", "assistant", "user"]
        uses = [b for b in body["messages"][1]["content"] if b["type"] == "tool_use"]
        assert [u["name"] for u in uses] == ["get_weather", "get_time"]
        assert uses[0]["input"] == {"city": "Paris", "i": 0}
        results = body["messages"][2]["content"]
        assert [b["tool_use_id"] for b in results] == [u["id"] for u in uses]
    else:
        assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
        calls_sent = [p for p in body["contents"][1]["parts"] if "functionCall" in p]
        assert "thoughtSignature" in calls_sent[0], "Gemini needs the signature back"
        answers = [p["functionResponse"]["name"] for p in body["contents"][2]["parts"]]
        assert answers == ["get_weather", "get_time"]


@pytest.mark.parametrize("model,path", [
    ("bedrock", "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"),
    ("cohere", "/v2/chat"),
    ("vertex-gemini", "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"),
    ("vertex-claude", "/v1/projects/p/locations/us-central1/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"),
])
def test_every_other_translated_provider(gw, mock, model, path):
    """Bedrock, Cohere and Vertex AI (Gemini and Claude): text, the stream helper, and a tool round
    trip, each accepted by the mock's strict check of that provider's API."""
    mid = new_id()
    r = client(gw, mid).responses.create(model=model, instructions="Be brief.", input="Hi there")
    assert r.output_text == "Hello from the mock! You said: Hi there"
    check_usage(r.usage)
    assert sent(mock, mid)["path"].startswith(path)
    with client(gw, new_id()).responses.stream(model=model, input="Helper") as s:
        final = s.get_final_response()
    assert final.output_text == "Hello from the mock! You said: Helper"
    r = client(gw, new_id(), **{"x-mock-tool-calls": "1"}).responses.create(
        model=model, input="weather?", tools=TOOLS[:1])
    [call] = [o for o in r.output if o.type == "function_call"]
    follow = client(gw, new_id()).responses.create(model=model, tools=TOOLS[:1], input=[
        {"role": "user", "content": "weather?"}, *[o.model_dump(exclude_none=True) for o in r.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert follow.output_text.startswith("Hello from the mock!")


def test_reasoning_summary_and_images_through_gemini(gw, mock):
    mid = new_id()
    c = client(gw, mid)
    r = c.responses.create(model="gemini", reasoning={"effort": "low", "summary": "auto"}, input=[
        {"role": "user", "content": [{"type": "input_text", "text": "What is in this picture?"},
                                     {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}",
                                      "detail": "auto"}]}])
    assert [o.type for o in r.output] == ["reasoning", "message"]
    assert r.output[0].summary[0].text == "Thinking about the answer."
    parts = sent(mock, mid)["body"]["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    with c.responses.stream(model="gemini", reasoning={"effort": "low"}, input="think") as s:
        kinds = [e.type for e in s]
        final = s.get_final_response()
    assert "response.reasoning_summary_text.delta" in kinds
    assert final.output[0].type == "reasoning"
    # The reasoning item sent back next turn (as the Agents SDK does) is dropped, not refused.
    again = c.responses.create(model="gemini", input=[
        {"role": "user", "content": "think"}, *[o.model_dump(exclude_none=True) for o in final.output],
        {"role": "user", "content": "and now?"}])
    assert again.status == "completed"


def test_structured_output_and_claude_images(gw, mock):
    mid = new_id()
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
              "additionalProperties": False}
    r = client(gw, mid).responses.create(
        model="claude", text={"format": {"type": "json_schema", "name": "a", "schema": schema, "strict": True}},
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Describe"},
                                            {"type": "input_image", "detail": "auto",
                                             "image_url": f"data:image/png;base64,{PNG}"}]}])
    assert r.status == "completed"
    body = sent(mock, mid)["body"]
    assert body["output_config"]["format"] == {"type": "json_schema", "schema": schema}
    image = body["messages"][0]["content"][1]
    assert image["type"] == "image" and image["source"]["data"] == PNG


def test_usage_cost_and_metrics_as_for_chat(gw):
    def tokens(kind):
        s = prom.parse(gw.prometheus())
        return prom.total(s, "llmux_gen_ai_client_token_usage", gen_ai_request_model="claude",
                          gen_ai_token_type=kind)

    before = (tokens("input"), tokens("output"))
    raw = client(gw, new_id()).responses.with_raw_response.create(model="claude", input="Cost me")
    r = raw.parse()
    assert raw.headers["x-llmux-provider"] == "ant"
    cost = float(raw.headers["x-llmux-cost-usd"])
    want = (r.usage.input_tokens * 1 + r.usage.output_tokens * 2) / 1e6
    assert cost == pytest.approx(want)
    events = list(client(gw, new_id()).responses.create(model="claude", input="Stream me", stream=True))
    u = events[-1].response.usage
    expect = (before[0] + r.usage.input_tokens + u.input_tokens,
              before[1] + r.usage.output_tokens + u.output_tokens)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (tokens("input"), tokens("output")) != expect:
        time.sleep(0.05)  # polling with a deadline for the stats to land
    assert (tokens("input"), tokens("output")) == expect


@pytest.mark.parametrize("stream", [False, True])
def test_failover_across_providers(gw, stream):
    c = client(gw, new_id())
    raw = c.responses.with_raw_response.create(model="failover", input="Hi", stream=stream)
    assert raw.headers["x-llmux-deployment"] == "second"
    assert raw.headers["x-llmux-attempts"] == "2"
    r = raw.parse()
    if stream:
        r = [e for e in r][-1].response
    assert r.output_text == "Hello from the mock! You said: Hi"


def test_refused_with_what_to_send_instead(gw):
    c = client(gw, new_id())
    for kwargs, param, says in [
        (dict(previous_response_id="resp_123"), "previous_response_id", "Send the whole conversation in `input`"),
        (dict(conversation="conv_123"), "conversation", "send the whole conversation in `input`"),
        (dict(background=True), "background", "`stream: true`"),
        (dict(tools=[{"type": "web_search"}]), "tools[0].type", "declare a function tool"),
        (dict(input=[{"type": "item_reference", "id": "msg_1"}]), "input[0]", "Send the item itself"),
    ]:
        args = {"model": "claude", "input": "x", **kwargs}
        with pytest.raises(openai.BadRequestError) as e:
            c.responses.create(**args)
        assert e.value.status_code == 400
        assert (e.value.code, e.value.param) == ("unsupported_parameter", param)
        assert says in e.value.message and "provider `ant` (anthropic)" in e.value.message
    with pytest.raises(openai.NotFoundError) as e:
        c.responses.create(model="no-such-model", input="x")
    assert e.value.code == "model_not_found"


def test_provider_errors_in_openai_shape(gw):
    for model, status, exc in [("claude", 429, openai.RateLimitError), ("gemini", 429, openai.RateLimitError),
                               ("claude", 529, openai.InternalServerError)]:
        with pytest.raises(exc) as e:
            client(gw, new_id(), **{"x-mock-status": str(status)}).responses.create(model=model, input="x")
        assert e.value.status_code == (503 if status == 529 else status)


def sse_events(text):
    out = []
    for block in text.strip().split("\n\n"):
        name, data = block.split("\n", 1)
        assert name.startswith("event: ") and data.startswith("data: "), block
        out.append((name[7:], json.loads(data[6:])))
    return out


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("header", ["x-mock-stream-error-after", "x-mock-drop-after"])
def test_stream_broken_mid_way_ends_with_response_failed(gw, model, header):
    r = gw.post("/v1/responses", {"model": model, "input": "one two three four five", "stream": True},
                headers={header: "3"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[0][0] == "response.created"
    assert [n for n, _ in events[-2:]] == ["error", "response.failed"]
    failed = events[-1][1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"]
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
    # The SDK reads it as events (no exception), ending in response.failed.
    c = client(gw, new_id(), **{header: "3"})
    last = list(c.responses.create(model=model, input="one two three", stream=True))[-1]
    assert last.type == "response.failed"


def test_openai_deployment_passes_through_untouched(gw, mock):
    mid = new_id()
    body = {"model": "gpt", "input": "hi", "previous_response_id": "resp_1",
            "tools": [{"type": "web_search"}], "store": True}
    r = gw.post("/v1/responses", body, headers={"x-mock-id": mid})
    # The mock echoes what arrived; the answer comes back as the provider sent it.
    assert r.status_code == 200
    assert r.json()["object"] == "mock.echo" and r.json()["path"] == "/v1/responses"
    req = mock.requests(mid)[0]
    assert req["path"] == "/v1/responses"
    assert req["body"] == {**body, "model": "gpt-4o-mini"}


def agent_client(gw, mid):
    """An `AsyncOpenAI` client at LLMux whose first request asks the mock for a tool call: the
    mock then behaves like a model that calls the tool, gets its result and answers."""
    sent_requests = []

    async def first_calls_a_tool(request):
        if not sent_requests:
            request.headers["x-mock-tool-calls"] = "1"
        sent_requests.append(request)

    http = httpx.AsyncClient(event_hooks={"request": [first_calls_a_tool]}, timeout=30)
    c = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="sk-client-key", max_retries=0,
                           default_headers={"x-mock-id": mid}, http_client=http)
    return c, sent_requests


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("streamed", [False, True])
def test_openai_agents_sdk_runs_a_function_tool(gw, mock, model, streamed):
    """The OpenAI Agents SDK (PyPI openai-agents) over the Responses API: an agent with a function
    tool, unmodified, against an Anthropic- and a Gemini-protocol deployment."""
    agents.set_tracing_disabled(True)
    calls = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        calls.append(city)
        return f"sunny in {city}"

    async def run():
        mid = new_id()
        c, requests = agent_client(gw, mid)
        agent = agents.Agent(name="weather", instructions="Answer with the weather tool.",
                             model=agents.OpenAIResponsesModel(model=model, openai_client=c),
                             tools=[get_weather])
        if streamed:
            result = agents.Runner.run_streamed(agent, "What is the weather in Paris?")
            kinds = [e.type async for e in result.stream_events()]
            assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
        else:
            result = await agents.Runner.run(agent, "What is the weather in Paris?")
        await c.close()
        return mid, requests, result

    mid, requests, result = asyncio.run(run())
    assert calls == ["Paris"], "the agent ran the tool once"
    assert len(requests) == 2 and all(r.url.path == "/v1/responses" for r in requests)
    assert result.final_output.startswith("Hello from the mock!")
    kinds = [i.type for i in result.new_items]
    assert kinds[:2] == ["tool_call_item", "tool_call_output_item"] and kinds[-1] == "message_output_item"
    assert result.context_wrapper.usage.requests == 2
    assert result.context_wrapper.usage.output_tokens > 0
    # What the provider got on the second turn: the call and its output, translated.
    second = mock.requests(mid)[-1]["body"]
    if model == "claude":
        assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
        [result_block] = second["messages"][2]["content"]
        assert result_block["type"] == "tool_result" and "sunny in Paris" in json.dumps(result_block)
    else:
        assert [c["role"] for c in second["contents"]] == ["user", "model", "user"]
        assert second["contents"][2]["parts"][0]["functionResponse"]["name"] == "get_weather"
