"""Azure OpenAI and the OpenAI-compatible presets (`type: groq`, ...), through a real Envoy.

The mock serves Azure's deployment paths (requiring `api-version` and `api-key`, refusing a
leaked `Authorization`) and chat completions under any prefix, so each preset's default path is
exercised as configured."""

import openai
import pytest

from harness import new_id

USER = [{"role": "user", "content": "hello"}]


def client(g, mid):
    return openai.OpenAI(base_url=g.url + "/v1", api_key="sk-client", max_retries=0,
                         default_headers={"x-mock-id": mid})


@pytest.fixture(scope="module")
def azure(make_module_gateway):
    return make_module_gateway({
        "providers": {"az": {"type": "azure", "cluster": "mock", "api_key": "az-key"},
                      "az1": {"type": "azure", "cluster": "mock", "api_key": "az-key", "api_version": "v1"}},
        "models": [{"name": "gpt-4o", "deployments": [{"provider": "az", "model": "my-gpt4o-deployment"}]},
                   {"name": "gpt-4o-v1", "deployments": [{"provider": "az1", "model": "my-gpt4o-deployment"}]}],
    })


def test_azure_classic_deployment_path(azure, mock):
    mid = new_id()
    r = client(azure, mid).chat.completions.create(model="gpt-4o", messages=USER)
    assert r.choices[0].message.content.endswith("hello")
    [seen] = mock.requests(mid)
    assert seen["path"] == "/openai/deployments/my-gpt4o-deployment/chat/completions"
    assert seen["query"] == "api-version=2024-10-21"
    assert seen["headers"]["api-key"] == "az-key"
    assert "authorization" not in seen["headers"]


def test_azure_v1_path_and_stream(azure, mock):
    mid = new_id()
    chunks = list(client(azure, mid).chat.completions.create(model="gpt-4o-v1", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).endswith("hello")
    [seen] = mock.requests(mid)
    assert seen["path"] == "/openai/v1/chat/completions"
    assert seen["body"]["model"] == "my-gpt4o-deployment"


def test_azure_errors_are_openai_errors(azure):
    r = azure.post("/v1/chat/completions", {"model": "gpt-4o", "messages": USER},
                   headers={"x-mock-status": "429", "x-mock-retry-after": "2"})
    assert r.status_code == 429
    assert "az" in r.json()["error"]["message"]
    assert r.headers["retry-after"] == "2"


PRESETS = {
    "groq": "/openai/v1/chat/completions",
    "fireworks": "/inference/v1/chat/completions",
    "deepinfra": "/v1/openai/chat/completions",
    "zhipu": "/api/paas/v4/chat/completions",
    "perplexity": "/chat/completions",
    "deepseek": "/v1/chat/completions",
}


@pytest.fixture(scope="module")
def presets(make_module_gateway):
    """One provider of each preset type, model `m-<preset>` on each."""
    return make_module_gateway({
        "providers": {f"p-{p}": {"type": p, "cluster": "mock", "api_key": f"{p}-key"} for p in PRESETS},
        "models": [{"name": f"m-{p}", "deployments": [{"provider": f"p-{p}", "model": "upstream-model"}]}
                   for p in PRESETS],
    })


@pytest.mark.parametrize("preset, path", PRESETS.items())
def test_presets_use_their_paths_and_bearer_key(presets, mock, preset, path):
    mid = new_id()
    r = client(presets, mid).chat.completions.create(model=f"m-{preset}", messages=USER)
    assert r.model == "upstream-model"
    [seen] = mock.requests(mid)
    assert seen["path"] == path
    assert seen["headers"]["authorization"] == f"Bearer {preset}-key"
    # The preset's API host is sent as the authority (what a TLS cluster to it needs).
    assert seen["headers"]["host"] == {"groq": "api.groq.com", "fireworks": "api.fireworks.ai",
                                       "deepinfra": "api.deepinfra.com", "zhipu": "open.bigmodel.cn",
                                       "perplexity": "api.perplexity.ai", "deepseek": "api.deepseek.com"}[preset]
    models = openai.OpenAI(base_url=presets.url + "/v1", api_key="x").models.list()
    assert {m.id: m.owned_by for m in models.data}[f"m-{preset}"] == preset


def test_unsupported_parameter_400_or_dropped(make_gateway, mock):
    g = make_gateway({
        "providers": {"strict": {"type": "cerebras", "cluster": "mock"},
                      "lenient": {"type": "cerebras", "cluster": "mock", "drop_params": True}},
        "models": [{"name": "strict", "deployments": [{"provider": "strict"}]},
                   {"name": "lenient", "deployments": [{"provider": "lenient"}]}],
    })
    mid = new_id()
    r = g.post("/v1/chat/completions", {"model": "strict", "messages": USER, "presence_penalty": 0.5},
               headers={"x-mock-id": mid})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "presence_penalty" and err["code"] == "unsupported_parameter"
    assert mock.requests(mid) == []  # refused before anything went upstream
    r = g.post("/v1/chat/completions", {"model": "lenient", "messages": USER, "presence_penalty": 0.5,
                                        "temperature": 0.3}, headers={"x-mock-id": mid})
    assert r.status_code == 200, r.text
    [seen] = mock.requests(mid)
    assert "presence_penalty" not in seen["body"] and seen["body"]["temperature"] == 0.3


def test_mistral_seed_is_renamed(make_gateway, mock):
    g = make_gateway({
        "providers": {"m": {"type": "mistral", "cluster": "mock"}},
        "models": [{"name": "mistral-small", "deployments": [{"provider": "m"}]}],
    })
    mid = new_id()
    r = g.post("/v1/chat/completions", {"model": "mistral-small", "messages": USER, "seed": 7},
               headers={"x-mock-id": mid})
    assert r.status_code == 200, r.text
    body = mock.requests(mid)[0]["body"]
    assert body["random_seed"] == 7 and "seed" not in body
    assert body["messages"] == USER


def test_azure_embeddings_deployment_path(azure, mock):
    mid = new_id()
    r = client(azure, mid).embeddings.create(model="gpt-4o", input="hi", encoding_format="float")
    assert len(r.data[0].embedding) == 8
    [seen] = mock.requests(mid)
    assert seen["path"] == "/openai/deployments/my-gpt4o-deployment/embeddings"
    assert seen["query"] == "api-version=2024-10-21"


@pytest.fixture(scope="module")
def renamed(make_module_gateway):
    return make_module_gateway({
        "providers": {"oai": {"type": "openai", "cluster": "mock", "api_key": "sk-upstream"},
                      "ant": {"type": "anthropic", "cluster": "mock"}},
        "models": [{"name": "fast", "deployments": [{"provider": "oai", "model": "gpt-4o-mini-2024-07-18"}]},
                   {"name": "whisper", "deployments": [{"provider": "oai", "model": "whisper-1"}]},
                   {"name": "claude", "deployments": [{"provider": "ant"}]}],
    })


@pytest.mark.parametrize("path, body", [
    ("/v1/responses", {"model": "fast", "input": "hi", "stream": True}),
    ("/v1/completions", {"model": "fast", "prompt": "Once upon"}),
    ("/v1/images/generations", {"model": "fast", "prompt": "a cat"}),
    ("/v1/audio/speech", {"model": "fast", "input": "hello", "voice": "alloy"}),
    ("/v1/moderations", {"model": "fast", "input": "hello"}),
])
def test_other_openai_endpoints_route_by_model(renamed, mock, path, body):
    mid = new_id()
    r = renamed.post(path, body, headers={"x-mock-id": mid, "authorization": "Bearer sk-client"})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "mock.echo"  # the provider's answer, untouched
    [seen] = mock.requests(mid)
    assert seen["path"] == path
    assert seen["body"] == {**body, "model": "gpt-4o-mini-2024-07-18"}
    assert seen["headers"]["authorization"] == "Bearer sk-upstream"


def test_audio_transcription_form_routes_by_model_field(renamed, mock):
    mid = new_id()
    audio = b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(range(256)) * 20
    c = openai.OpenAI(base_url=renamed.url + "/v1", api_key="sk-client", max_retries=0,
                      default_headers={"x-mock-id": mid})
    # The mock answers with its echo JSON, which the SDK reads as a transcription object.
    c.audio.transcriptions.with_raw_response.create(model="whisper", file=("a.wav", audio, "audio/wav"))
    [seen] = mock.requests(mid)
    assert seen["path"] == "/v1/audio/transcriptions"
    raw = seen["body"]
    assert isinstance(raw, str)
    assert 'name="model"\r\n\r\nwhisper-1\r\n' in raw
    assert "whisper\r\n" not in raw.replace("whisper-1", "")


def test_other_endpoints_refused_for_anthropic_models(renamed):
    r = renamed.post("/v1/images/generations", {"model": "claude", "prompt": "x"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "unsupported_endpoint"
