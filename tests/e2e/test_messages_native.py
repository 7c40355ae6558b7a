"""Anthropic Messages clients → Claude on Bedrock and on Vertex AI in Anthropic's own body
(issue 16 item 3), through a real Envoy, with the official `anthropic` SDK.

The mock serves Bedrock's InvokeModel for `anthropic.claude*` ids (SigV4 checked; the body must
carry `anthropic_version: bedrock-2023-05-31` and no `model`/`stream`; streams are event-stream
`chunk` frames of base64 Anthropic events) and Vertex's `:rawPredict`/`:streamRawPredict` for
publisher `anthropic` (no `model`, `anthropic_version: vertex-2023-10-16`); both then validate the
Messages body as strictly as the Anthropic API. With thinking enabled the mock answers a signed
`thinking` block first, and refuses a later turn whose thinking block lost its signature (or was
dropped) — so these tests fail if the gateway goes through the OpenAI pivot again."""
import anthropic
import openai
import pytest

from harness import Gateway, Mock, new_id

AKID = "AKIDMOCKBEDROCK"
SECRET = "mock/bedrock+SECRET/key"
TOKEN = "ya29.native-e2e-token"
PROJECT = "proj-native"
LOCATION = "us-east5"
BEDROCK_CLAUDE = "us.anthropic.claude-sonnet-4-20250514-v1:0"
VERTEX_CLAUDE = "claude-sonnet-4@20250514"
BEDROCK_PATH = "/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0"
VERTEX_PATH = f"/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/anthropic/models"
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
MODELS = ["claude-bedrock", "claude-vertex"]


def config():
    return {
        "providers": {
            "aws": {"type": "bedrock", "cluster": "mock", "region": "us-east-1",
                    "aws_access_key_id": AKID, "aws_secret_access_key": SECRET,
                    "anthropic_beta": ["interleaved-thinking-*", "context-management-2025-06-27"]},
            "vx": {"type": "vertex", "cluster": "mock", "project": PROJECT, "location": LOCATION,
                   "access_token": TOKEN, "anthropic_beta": ["interleaved-thinking-*"]},
        },
        "models": [
            {"name": "claude-bedrock", "deployments": [{"provider": "aws", "model": BEDROCK_CLAUDE}]},
            {"name": "claude-vertex", "deployments": [{"provider": "vx", "model": VERTEX_CLAUDE}]},
        ],
    }


@pytest.fixture(scope="module")
def nmock(log_dir):
    m = Mock(log_dir, args=["--vertex-token", TOKEN])
    yield m
    m.stop()


@pytest.fixture(scope="module")
def ngw(nmock, log_dir):
    g = Gateway(nmock, log_dir, llmux_config=config(), name="envoy-native")
    yield g
    g.stop()
    assert "panicked" not in g.process.log()


def client(g, mid, **headers):
    return anthropic.Anthropic(base_url=g.url, api_key="sk-ant-client", max_retries=0,
                               default_headers={"x-mock-id": mid, **headers})


def sent(m, mid):
    return m.requests(mid)


def path_of(model, stream):
    if model == "claude-bedrock":
        return f"{BEDROCK_PATH}/invoke-with-response-stream" if stream else f"{BEDROCK_PATH}/invoke"
    return f"{VERTEX_PATH}/{VERTEX_CLAUDE}:{'streamRawPredict' if stream else 'rawPredict'}"


def check_native(model, req, stream):
    """The request went natively, in the host's shape."""
    assert req["path"] == path_of(model, stream)
    b = req["body"]
    assert "model" not in b
    h = req["headers"]
    assert h.get("x-api-key") != "sk-ant-client", "the client's key must not go upstream"
    if model == "claude-bedrock":
        assert b["anthropic_version"] == "bedrock-2023-05-31"
        assert "stream" not in b
        assert h["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={AKID}/")
    else:
        assert b["anthropic_version"] == "vertex-2023-10-16"
        assert h["authorization"] == f"Bearer {TOKEN}"
        assert b.get("stream", False) is stream


@pytest.mark.parametrize("model", MODELS)
def test_plain_keeps_every_field(ngw, nmock, model):
    mid = new_id()
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    m = client(ngw, mid, **{"x-mock-cache-read": "3"}).messages.create(
        model=model, max_tokens=64, system=system, stop_sequences=["END"], extra_body={"temperature": 0.5},
        metadata={"user_id": "user-42"}, messages=[{"role": "user", "content": "Hi there"}])
    assert m.content[0].type == "text"
    assert m.content[0].text == "Hello from the mock! You said: Hi there"
    assert m.stop_reason == "end_turn"
    assert m.usage.cache_read_input_tokens == 3 and m.usage.output_tokens > 0
    [req] = sent(nmock, mid)
    check_native(model, req, False)
    b = req["body"]
    assert b["system"] == system, "cache_control reaches the provider"
    assert b["stop_sequences"] == ["END"]
    assert b["metadata"] == {"user_id": "user-42"}
    assert b["temperature"] == 0.5 and b["max_tokens"] == 64
    assert b["messages"] == [{"role": "user", "content": "Hi there"}]


@pytest.mark.parametrize("model", MODELS)
def test_stream(ngw, nmock, model):
    mid = new_id()
    with client(ngw, mid, **{"x-mock-deltas": "2"}).messages.stream(
            model=model, max_tokens=64, messages=[{"role": "user", "content": "Stream it"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Hello from the mock! You said: Stream it"
    assert final.content[0].text == text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    [req] = sent(nmock, mid)
    check_native(model, req, True)


def thinking_turns(c, model, stream):
    """Turn 1 with thinking on: the model thinks, then calls the tool; turn 2 sends the thinking
    block (with its signature) and the tool_use back with the tool result."""
    kwargs = dict(model=model, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
                  tools=TOOLS, messages=[{"role": "user", "content": "Weather in Paris?"}])
    if stream:
        with c.messages.stream(**kwargs) as s:
            first = s.get_final_message()
    else:
        first = c.messages.create(**kwargs)
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    assert first.stop_reason == "tool_use"
    thinking, call = first.content
    assert thinking.thinking == "Thinking about: Weather in Paris?"
    assert thinking.signature.startswith("mocksig_")
    assert call.name == "get_weather" and call.input == {"city": "Paris"}
    history = kwargs["messages"] + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": [
            {"type": "text", "text": "sunny, 24C"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]},
    ]
    kwargs["messages"] = history
    if stream:
        with c.messages.stream(**kwargs) as s:
            second = s.get_final_message()
    else:
        second = c.messages.create(**kwargs)
    return first, second


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", MODELS)
def test_thinking_with_signature_and_a_tool_round_trip(ngw, nmock, model, stream):
    mid = new_id()
    c = client(ngw, mid, **{"x-mock-tool-use": 'get_weather {"city": "Paris"}'})
    first, second = thinking_turns(c, model, stream)
    assert [b.type for b in second.content] == ["thinking", "text"]
    assert second.content[1].text == "The tool said: sunny, 24C[image]"
    assert second.stop_reason == "end_turn"
    r1, r2 = sent(nmock, mid)
    check_native(model, r1, stream)
    check_native(model, r2, stream)
    # The provider got the thinking block byte for byte, signature included, and the image in
    # the tool result.
    assistant = r2["body"]["messages"][1]["content"]
    assert assistant[0] == {"type": "thinking", "thinking": first.content[0].thinking,
                            "signature": first.content[0].signature}
    result = r2["body"]["messages"][2]["content"][0]
    assert result["content"][1]["type"] == "image"
    assert r2["body"]["thinking"] == {"type": "enabled", "budget_tokens": 1024}


@pytest.mark.parametrize("model", MODELS)
def test_the_mock_refuses_a_thinking_block_without_its_signature(ngw, model):
    """What a gateway that drops signatures gets: the provider's 400, in Anthropic's shape."""
    c = client(ngw, new_id())
    with pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(
            model=model, max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024}, tools=TOOLS,
            messages=[{"role": "user", "content": "Weather?"},
                      {"role": "assistant", "content": [
                          {"type": "thinking", "thinking": "Use the tool."},
                          {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
                      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}]}])
    assert e.value.status_code == 400
    body = e.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "signature" in body["error"]["message"]


def test_betas_reach_bedrock_in_the_body_and_vertex_in_the_header(ngw, nmock):
    betas = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27"
    mid = new_id()
    c = client(ngw, mid, **{"anthropic-beta": betas})
    c.messages.create(model="claude-bedrock", max_tokens=64, messages=[{"role": "user", "content": "b"}],
                      extra_body={"context_management": {"edits": []}})
    c.messages.create(model="claude-vertex", max_tokens=64, messages=[{"role": "user", "content": "v"}])
    bedrock, vertex = sent(nmock, mid)
    # Only what each provider's `anthropic_beta` list allows.
    assert bedrock["body"]["anthropic_beta"] == ["interleaved-thinking-2025-05-14", "context-management-2025-06-27"]
    assert bedrock["body"]["context_management"] == {"edits": []}
    assert "anthropic_beta" not in vertex["body"]
    assert vertex["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"


@pytest.mark.parametrize("model", MODELS)
def test_provider_errors_come_back_in_anthropic_shape(ngw, model):
    c = client(ngw, new_id(), **{"x-mock-status": "429"})
    with pytest.raises(anthropic.RateLimitError) as e:
        c.messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "rate_limit_error"


def test_a_bedrock_stream_exception_is_an_anthropic_error_event(ngw):
    c = client(ngw, new_id(), **{"x-mock-stream-error-after": "3", "x-mock-exception": "throttlingException"})
    with pytest.raises(anthropic.APIStatusError) as e:
        with c.messages.stream(model="claude-bedrock", max_tokens=64,
                               messages=[{"role": "user", "content": "one two three four five"}]) as s:
            for _ in s.text_stream:
                pass
    assert "throttlingException" in str(e.value)


def test_count_tokens_on_vertex_claude_is_counted_by_vertex(ngw, nmock):
    mid = new_id()
    r = ngw.post("/v1/messages/count_tokens", {"model": "claude-vertex", "system": "Be brief.",
                                               "messages": [{"role": "user", "content": "How warm is Paris?"}]},
                 headers={"x-mock-id": mid})
    assert r.status_code == 200, r.text
    assert r.headers["x-llmux-token-count"] == "provider"
    assert r.json()["input_tokens"] > 0
    [req] = sent(nmock, mid)
    assert req["path"] == f"{VERTEX_PATH}/count-tokens:rawPredict"
    assert req["body"]["model"] == VERTEX_CLAUDE
    assert req["body"]["anthropic_version"] == "vertex-2023-10-16"


@pytest.mark.parametrize("model, path", [("claude-bedrock", f"{BEDROCK_PATH}/converse"),
                                         ("claude-vertex", f"{VERTEX_PATH}/{VERTEX_CLAUDE}:rawPredict")])
def test_chat_completions_clients_are_unchanged(ngw, nmock, model, path):
    mid = new_id()
    c = openai.OpenAI(base_url=ngw.url + "/v1", api_key="sk-client", max_retries=0,
                      default_headers={"x-mock-id": mid})
    r = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=20)
    assert r.choices[0].message.content == "Hello from the mock! You said: Hi"
    [req] = sent(nmock, mid)
    assert req["path"] == path
