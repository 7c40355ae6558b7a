"""`POST /v1/messages/count_tokens` (issue 16 item 2) with the official `anthropic` SDK
(`client.messages.count_tokens`), through a real Envoy, against the mock's token counters.

The mock counts a token per word of the prompt's strings (roles and types excepted), in every
protocol, so one prompt must count the same through Anthropic (passed through), Gemini and Vertex
Gemini (`:countTokens`), Claude on Vertex (`count-tokens:rawPredict`) and Bedrock (`count-tokens`,
SigV4 checked): a difference means the gateway's translation lost or added prompt text. An
OpenAI-protocol model gets LLMux's own estimate (request bytes / 4), marked `x-llmux-token-count: estimate`, and nothing
reaches the provider."""
import hashlib
import json

import anthropic
import httpx
import pytest

from harness import Gateway, Mock, new_id

GEMINI_KEY = "AIza-count-key"
VERTEX_TOKEN = "ya29.count-token"
ANTHROPIC_KEY = "sk-ant-count-provider"
PROJECT, LOCATION = "proj-count", "us-central1"
BEDROCK_CLAUDE = "us.anthropic.claude-3-5-haiku-20241022-v1:0"

PROVIDER_COUNTED = ["claude-count", "gemini-count", "vertex-gemini-count", "vertex-claude-count", "bedrock-count"]
ESTIMATED = ["gpt-count"]
SYSTEM = "Be brief."
MESSAGES = [{"role": "user", "content": "How warm is Paris?"}]
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def config(auth=None):
    c = {
        "providers": {
            "ant": {"type": "anthropic", "cluster": "mock", "api_key": ANTHROPIC_KEY},
            "gem": {"type": "gemini", "cluster": "mock", "api_key": GEMINI_KEY},
            "vx": {"type": "vertex", "cluster": "mock", "project": PROJECT, "location": LOCATION,
                   "access_token": VERTEX_TOKEN},
            "aws": {"type": "bedrock", "cluster": "mock", "region": "us-east-1",
                    "aws_access_key_id": "AKIDMOCKBEDROCK", "aws_secret_access_key": "mock/bedrock+SECRET/key"},
            "oai": {"type": "openai", "cluster": "mock", "api_key": "sk-openai-provider"},
        },
        "models": [
            {"name": "claude-count", "aliases": ["claude-alias"],
             "deployments": [{"provider": "ant", "model": "claude-3-5-haiku-20241022"}]},
            {"name": "gemini-count", "deployments": [{"provider": "gem", "model": "gemini-2.5-flash"}]},
            {"name": "vertex-gemini-count", "deployments": [{"provider": "vx", "model": "gemini-2.5-pro"}]},
            {"name": "vertex-claude-count", "deployments": [{"provider": "vx", "model": "claude-sonnet-4@20250514"}]},
            {"name": "bedrock-count", "deployments": [{"provider": "aws", "model": BEDROCK_CLAUDE}]},
            {"name": "gpt-count", "deployments": [{"provider": "oai", "model": "gpt-4o-mini"}]},
        ],
    }
    if auth:
        c["auth"] = auth
    return c


@pytest.fixture(scope="module")
def cmock(log_dir):
    m = Mock(log_dir, args=["--gemini-key", GEMINI_KEY, "--vertex-token", VERTEX_TOKEN,
                            "--anthropic-key", ANTHROPIC_KEY])
    yield m
    m.stop()


@pytest.fixture(scope="module")
def cgw(cmock, log_dir):
    g = Gateway(cmock, log_dir, llmux_config=config(), name="envoy-count-tokens")
    yield g
    g.stop()
    assert "panicked" not in g.process.log()


def client(g, mid, key="sk-ant-client", **headers):
    return anthropic.Anthropic(base_url=g.url, api_key=key, max_retries=0,
                               default_headers={"x-mock-id": mid, **headers})


def count(g, mid, model, **kw):
    """(input_tokens, x-llmux-token-count) of one SDK count."""
    raw = client(g, mid).messages.with_raw_response.count_tokens(model=model, **kw)
    return raw.parse().input_tokens, raw.headers.get("x-llmux-token-count")


@pytest.mark.parametrize("model", PROVIDER_COUNTED)
def test_the_provider_counts_and_one_prompt_counts_the_same_everywhere(cgw, cmock, model):
    mid = new_id()
    # "Be brief." + "How warm is Paris?" = 6 words.
    assert count(cgw, mid, model, system=SYSTEM, messages=MESSAGES) == (6, "provider")
    # The tool adds its name and description: 5 more, whatever the protocol it is sent in.
    assert count(cgw, mid, model, system=SYSTEM, messages=MESSAGES, tools=TOOLS) == (11, "provider")
    seen = cmock.requests(mid)
    assert len(seen) == 2, "one upstream call per count"
    req = seen[0]
    assert req["headers"].get("x-api-key") != "sk-ant-client", "the client's key never goes upstream"
    if model == "claude-count":
        assert req["path"] == "/v1/messages/count_tokens"
        assert req["headers"]["x-api-key"] == ANTHROPIC_KEY
        assert req["headers"]["anthropic-version"]
        assert req["body"]["model"] == "claude-3-5-haiku-20241022"
        assert "max_tokens" not in req["body"]
    elif model == "gemini-count":
        assert req["path"] == "/v1beta/models/gemini-2.5-flash:countTokens"
        assert req["headers"]["x-goog-api-key"] == GEMINI_KEY
        assert req["body"]["generateContentRequest"]["model"] == "models/gemini-2.5-flash"
    elif model == "vertex-gemini-count":
        assert req["path"] == (f"/v1/projects/{PROJECT}/locations/{LOCATION}"
                               "/publishers/google/models/gemini-2.5-pro:countTokens")
        assert req["headers"]["authorization"] == f"Bearer {VERTEX_TOKEN}"
        assert req["body"]["systemInstruction"]["parts"][0]["text"] == SYSTEM
    elif model == "vertex-claude-count":
        assert req["path"] == (f"/v1/projects/{PROJECT}/locations/{LOCATION}"
                               "/publishers/anthropic/models/count-tokens:rawPredict")
        assert req["headers"]["authorization"] == f"Bearer {VERTEX_TOKEN}"
        assert req["body"]["model"] == "claude-sonnet-4@20250514"
        assert req["body"]["anthropic_version"] == "vertex-2023-10-16"
        assert req["body"]["system"] == SYSTEM
    else:
        assert req["path"] == "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/count-tokens"
        assert req["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 ")
        assert req["body"]["input"]["converse"]["system"] == [{"text": SYSTEM}]


@pytest.mark.parametrize("model", ESTIMATED)
def test_other_providers_get_the_gateways_marked_estimate(cgw, cmock, model):
    mid = new_id()
    n, who = count(cgw, mid, model, system=SYSTEM, messages=MESSAGES)
    assert who == "estimate"
    assert n > 0
    assert cmock.requests(mid) == [], "an estimate never reaches the provider"
    # The estimate is the request body's bytes / 4 (Claude Code's ?beta=true path too).
    body = json.dumps({"model": model, "messages": MESSAGES, "system": SYSTEM}).encode()
    r = httpx.post(cgw.url + "/v1/messages/count_tokens?beta=true", content=body,
                   headers={"content-type": "application/json", "x-mock-id": mid}, timeout=30)
    assert r.status_code == 200
    assert r.json() == {"input_tokens": len(body) // 4}
    assert r.headers["x-llmux-token-count"] == "estimate"


def test_aliases_route_like_messages(cgw, cmock):
    mid = new_id()
    assert count(cgw, mid, "claude-alias", messages=MESSAGES) == (4, "provider")
    [req] = cmock.requests(mid)
    assert req["body"]["model"] == "claude-3-5-haiku-20241022"


def test_errors_are_in_anthropics_shape(cgw, cmock):
    mid = new_id()
    with pytest.raises(anthropic.NotFoundError) as e:
        client(cgw, mid).messages.count_tokens(model="no-such-model", messages=MESSAGES)
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        client(cgw, mid).messages.count_tokens(model="gemini-count", messages=[])
    assert "messages" in e.value.body["error"]["message"]
    # The provider's own error (Gemini 429), in Anthropic's shape with its status.
    with pytest.raises(anthropic.RateLimitError) as e:
        client(cgw, mid, **{"x-mock-status": "429"}).messages.count_tokens(
            model="gemini-count", messages=MESSAGES)
    assert e.value.response.headers.get("x-llmux-token-count") is None
    assert e.value.body["error"]["type"] == "rate_limit_error"
    assert "RESOURCE_EXHAUSTED" in e.value.body["error"]["message"]


def test_the_same_keys_and_model_permissions_apply(mock, make_gateway):
    sha = lambda k: hashlib.sha256(k.encode()).hexdigest()  # noqa: E731
    g = make_gateway(config(auth={"keys": [
        {"key_sha256": sha("sk-gem-only"), "alias": "gem-only", "models": ["gemini-count"]}]}))
    mid = new_id()
    ok = client(g, mid, key="sk-gem-only").messages.count_tokens(model="gemini-count", messages=MESSAGES)
    assert ok.input_tokens == 4
    with pytest.raises(anthropic.PermissionDeniedError):
        client(g, mid, key="sk-gem-only").messages.count_tokens(model="gpt-count", messages=MESSAGES)
    with pytest.raises(anthropic.AuthenticationError) as e:
        client(g, mid, key="sk-wrong").messages.count_tokens(model="gemini-count", messages=MESSAGES)
    assert e.value.body["error"]["type"] == "authentication_error"
    assert len(mock.requests(mid)) == 1, "only the allowed count went upstream"
