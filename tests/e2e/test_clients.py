"""Real Python clients, unmodified, against LLMux: LiteLLM as a client library
(`litellm.completion` with `api_base` at LLMux: `openai/<model>` over Chat Completions,
`anthropic/<model>` over the Messages API), LangChain's `ChatOpenAI` (langchain-openai) and
`ChatAnthropic` (langchain-anthropic), and the OpenAI Agents SDK over Chat Completions
(`OpenAIChatCompletionsModel`; tests/e2e/test_responses_api.py runs it over the Responses API).
Each plain, streamed, and through a tool round trip, against an Anthropic-protocol and a
Gemini-protocol deployment on the mock. Versions pinned in tests/requirements.txt.

The tool round trips: the client sends `x-mock-tool-use: get_weather {"city": "Paris"}` on every
request (let through by `client_headers: ["x-mock-*"]`); the mock answers the first request with
one call to `get_weather` and, once the conversation holds the tool's result, `The tool said:
<result>`. The client (or the agent loop) runs the tool and sends its result back; the recorded
second request shows the call and its result translated for the provider.

A client whose package is missing is skipped with the reason (and a warning), never silently."""
import asyncio
import importlib
import json
import os
import warnings

import pytest

from harness import Gateway, Mock, new_id

# LiteLLM fetches its model price map from the internet at import unless told to use its bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

CLAUDE_UPSTREAM = "claude-3-5-haiku-20241022"
GEMINI_UPSTREAM = "gemini-2.5-flash"
GEMINI_KEY = "AIza-e2e-clients"
CONFIG = {
    "providers": {
        "ant": {"type": "anthropic", "cluster": "mock"},
        "gem": {"type": "gemini", "cluster": "mock", "api_key": GEMINI_KEY},
    },
    "models": [
        {"name": "claude", "deployments": [{"provider": "ant", "model": CLAUDE_UPSTREAM}]},
        {"name": "gemini", "deployments": [{"provider": "gem", "model": GEMINI_UPSTREAM}]},
    ],
}
MODELS = ["claude", "gemini"]
KEY = "sk-client-key"
TOOL_USE = {"x-mock-tool-use": 'get_weather {"city": "Paris"}'}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def need(module):
    """The client's module, or a loud skip saying what is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        why = f"client package for `{module}` is not installed ({e}): `make venv` installs tests/requirements.txt"
        warnings.warn(why)
        pytest.skip(why)


def weather(city):
    return f"sunny in {city}"


@pytest.fixture(scope="module")
def mock(log_dir):
    m = Mock(log_dir)
    yield m
    m.stop()


@pytest.fixture(scope="module")
def gw(mock, log_dir):
    g = Gateway(mock, log_dir, llmux_config=CONFIG, name="envoy-clients")
    yield g
    g.stop()
    assert "panicked" not in g.process.log()


def upstream(mock, mid, model, stream, n=1):
    """The provider requests recorded under `mid`: n of them, each to the deployment's protocol."""
    reqs = mock.requests(mid)
    assert len(reqs) == n, [r["path"] for r in reqs]
    for r in reqs:
        assert KEY not in json.dumps(r["headers"]), "the client's key must not reach the provider"
        if model == "claude":
            assert r["path"] == "/v1/messages" and r["body"]["model"] == CLAUDE_UPSTREAM
            assert bool(r["body"].get("stream")) == stream
        else:
            method = "streamGenerateContent" if stream else "generateContent"
            assert r["path"] == f"/v1beta/models/{GEMINI_UPSTREAM}:{method}"
            assert r["headers"]["x-goog-api-key"] == GEMINI_KEY
    return reqs


def check_tool_result_sent(req, model):
    """The second turn: the model's call to get_weather and the tool's result after it."""
    body = req["body"]
    if model == "claude":
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        [use] = [b for b in body["messages"][1]["content"] if b["type"] == "tool_use"]
        assert use["name"] == "get_weather" and use["input"] == {"city": "Paris"}
        [result] = body["messages"][2]["content"]
        assert result["type"] == "tool_result" and result["tool_use_id"] == use["id"]
        assert "sunny in Paris" in json.dumps(result)
    else:
        assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
        [call] = [p for p in body["contents"][1]["parts"] if "functionCall" in p]
        assert call["functionCall"]["name"] == "get_weather"
        assert call["functionCall"]["args"] == {"city": "Paris"}
        assert "thoughtSignature" in call, "Gemini needs the call's signature back"
        [answer] = body["contents"][2]["parts"]
        assert answer["functionResponse"]["name"] == "get_weather"
        assert "sunny in Paris" in json.dumps(answer)


# --- LiteLLM ----------------------------------------------------------------------------------

def litellm_call(gw, route, model, mid, stream, extra=None, **kw):
    """`litellm.completion` at LLMux: `openai/<model>` (Chat Completions at /v1) or
    `anthropic/<model>` (the Messages API at the root); a stream is rebuilt with LiteLLM's own
    `stream_chunk_builder`."""
    litellm = need("litellm")
    litellm.suppress_debug_info = True
    api_base = gw.url + "/v1" if route == "openai" else gw.url
    r = litellm.completion(model=f"{route}/{model}", api_base=api_base, api_key=KEY, stream=stream,
                           extra_headers={"x-mock-id": mid, **(extra or {})}, num_retries=0, **kw)
    if not stream:
        return r, None
    chunks = list(r)
    return litellm.stream_chunk_builder(chunks, messages=kw["messages"]), chunks


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("route", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_litellm_completion(gw, mock, model, route, stream):
    mid = new_id()
    # An OpenAI stream carries usage when asked (as OpenAI's does); a Messages stream always.
    ask = {"stream_options": {"include_usage": True}} if stream and route == "openai" else {}
    r, chunks = litellm_call(gw, route, model, mid, stream,
                             messages=[{"role": "user", "content": "Hi there"}], max_tokens=64, **ask)
    assert r.choices[0].message.content == "Hello from the mock! You said: Hi there"
    assert r.choices[0].finish_reason == "stop"
    if stream:
        assert len(chunks) > 2
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    upstream(mock, mid, model, stream)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("route", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_litellm_tool_round_trip(gw, mock, model, route, stream):
    mid = new_id()
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r, _ = litellm_call(gw, route, model, mid, stream, TOOL_USE, messages=messages,
                        tools=[WEATHER_TOOL], max_tokens=256)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    [call] = msg.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [msg.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": weather("Paris")}]
    r, _ = litellm_call(gw, route, model, mid, stream, TOOL_USE, messages=messages,
                        tools=[WEATHER_TOOL], max_tokens=256)
    assert r.choices[0].message.content == "The tool said: sunny in Paris"
    check_tool_result_sent(upstream(mock, mid, model, stream, n=2)[1], model)


# --- LangChain --------------------------------------------------------------------------------

def chat_model(gw, kind, model, mid, extra=None):
    headers = {"x-mock-id": mid, **(extra or {})}
    if kind == "ChatOpenAI":
        ChatOpenAI = need("langchain_openai").ChatOpenAI
        return ChatOpenAI(model=model, base_url=gw.url + "/v1", api_key=KEY, max_retries=0,
                          default_headers=headers, stream_usage=True)
    ChatAnthropic = need("langchain_anthropic").ChatAnthropic
    return ChatAnthropic(model=model, base_url=gw.url, api_key=KEY, max_retries=0,
                         default_headers=headers)


def lc_run(llm, messages, stream):
    """`invoke`, or `stream` with the chunks added up as LangChain does."""
    if not stream:
        return llm.invoke(messages), 1
    acc, n = None, 0
    for chunk in llm.stream(messages):
        acc = chunk if acc is None else acc + chunk
        n += 1
    return acc, n


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kind", ["ChatOpenAI", "ChatAnthropic"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_langchain_chat(gw, mock, model, kind, stream):
    mid = new_id()
    ai, chunks = lc_run(chat_model(gw, kind, model, mid), "Hi there", stream)
    assert ai.text == "Hello from the mock! You said: Hi there"
    assert ai.usage_metadata["input_tokens"] > 0 and ai.usage_metadata["output_tokens"] > 0
    assert chunks > 2 if stream else chunks == 1
    upstream(mock, mid, model, stream)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kind", ["ChatOpenAI", "ChatAnthropic"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_langchain_bound_tool_round_trip(gw, mock, model, kind, stream):
    core = need("langchain_core.tools")
    messages_mod = need("langchain_core.messages")

    @core.tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        return weather(city)

    mid = new_id()
    llm = chat_model(gw, kind, model, mid, TOOL_USE).bind_tools([get_weather])
    messages = [messages_mod.HumanMessage("What is the weather in Paris?")]
    ai, _ = lc_run(llm, messages, stream)
    [call] = ai.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"}
    messages += [ai, messages_mod.ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    final, _ = lc_run(llm, messages, stream)
    assert final.text == "The tool said: sunny in Paris" and not final.tool_calls
    check_tool_result_sent(upstream(mock, mid, model, stream, n=2)[1], model)


# --- OpenAI Agents SDK over Chat Completions --------------------------------------------------

@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
def test_openai_agents_sdk_over_chat_completions(gw, mock, model, streamed):
    """An agent with a function tool on `OpenAIChatCompletionsModel`: it calls the tool, the SDK
    runs it, sends the result back over /v1/chat/completions and the agent answers."""
    agents = need("agents")
    openai = need("openai")
    agents.set_tracing_disabled(True)
    calls = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        calls.append(city)
        return weather(city)

    mid = new_id()

    async def run():
        c = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0,
                               default_headers={"x-mock-id": mid, **TOOL_USE})
        # The SDK asks for usage in a stream (stream_options) only from OpenAI's own base URL.
        settings = agents.ModelSettings(include_usage=True) if streamed else agents.ModelSettings()
        agent = agents.Agent(name="weather", instructions="Answer with the weather tool.",
                             model=agents.OpenAIChatCompletionsModel(model=model, openai_client=c),
                             tools=[get_weather], model_settings=settings)
        if streamed:
            result = agents.Runner.run_streamed(agent, "What is the weather in Paris?")
            kinds = [e.type async for e in result.stream_events()]
            assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
        else:
            result = await agents.Runner.run(agent, "What is the weather in Paris?")
        await c.close()
        return result

    result = asyncio.run(run())
    assert calls == ["Paris"], "the agent ran the tool once"
    assert result.final_output == "The tool said: sunny in Paris"
    assert [i.type for i in result.new_items] == ["tool_call_item", "tool_call_output_item",
                                                  "message_output_item"]
    assert result.context_wrapper.usage.requests == 2
    assert result.context_wrapper.usage.input_tokens > 0
    reqs = upstream(mock, mid, model, streamed, n=2)
    # The agent's instructions reach the provider as its system prompt.
    system = reqs[0]["body"]["system" if model == "claude" else "systemInstruction"]
    assert "weather tool" in json.dumps(system)
    check_tool_result_sent(reqs[1], model)
