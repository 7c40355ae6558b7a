"""OpenAI `/v1/embeddings` → Gemini `batchEmbedContents` and Cohere `/v2/embed`, through a real
Envoy with the LLMux filter, driven by the openai SDK.

The mock checks each request as the real API does (Gemini: `requests[].model` must be
`models/{model}` of the URL, known fields only, `x-goog-api-key`; Cohere: known fields only,
`input_type` required, `output_dimension` in 256/512/1024/1536, Bearer key) and answers
deterministic vectors, so float and base64 answers of the same input can be compared.
"""
import base64
import struct

import openai
import pytest

from harness import Gateway, Mock, new_id

GEM_KEY = "AIza-embed-key"


@pytest.fixture(scope="module")
def emock(log_dir):
    m = Mock(log_dir, args=["--gemini-key", GEM_KEY])
    yield m
    m.stop()


@pytest.fixture(scope="module")
def egw(emock, log_dir):
    g = Gateway(emock, log_dir, name="envoy-embeddings", llmux_config={
        "providers": {
            "gem": {"type": "gemini", "cluster": "mock", "api_key": GEM_KEY},
            "co": {"type": "cohere", "cluster": "mock", "api_key": "co-key"},
        },
        "models": [
            {"name": "gemini-embedding", "deployments": [{"provider": "gem", "model": "gemini-embedding-001"}]},
            {"name": "cohere-embed", "deployments": [{"provider": "co", "model": "embed-v4.0"}]},
        ],
    })
    yield g
    g.stop()
    assert "panicked" not in g.process.log()


def client(g, mid):
    return openai.OpenAI(base_url=g.url + "/v1", api_key="sk-client", max_retries=0,
                         default_headers={"x-mock-id": mid})


def f32(xs):
    return [struct.unpack("<f", struct.pack("<f", x))[0] for x in xs]


@pytest.mark.parametrize("model", ["gemini-embedding", "cohere-embed"])
def test_float_and_base64_agree_for_list_input(egw, model):
    dims = 256
    c = client(egw, new_id())
    floats = c.embeddings.create(model=model, input=["first text", "second"], dimensions=dims,
                                 encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1]
    assert all(len(d.embedding) == dims for d in floats.data)
    assert floats.data[0].embedding != floats.data[1].embedding
    # Raw HTTP: the base64 string is little-endian f32, exactly the float answer's values.
    r = egw.post("/v1/embeddings", {"model": model, "input": ["first text", "second"],
                                    "dimensions": dims, "encoding_format": "base64"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    for item, want in zip(body["data"], floats.data):
        raw = base64.b64decode(item["embedding"])
        assert len(raw) == 4 * dims
        assert list(struct.unpack(f"<{dims}f", raw)) == f32(want.embedding)
    # The SDK's default asks for base64 and decodes it itself.
    sdk = c.embeddings.create(model=model, input=["first text", "second"], dimensions=dims)
    assert [f32(d.embedding) for d in sdk.data] == [f32(d.embedding) for d in floats.data]


def test_gemini_request_shape_and_estimated_usage(egw, emock):
    mid = new_id()
    r = client(egw, mid).embeddings.create(model="gemini-embedding", input="hello world",
                                           encoding_format="float",
                                           extra_body={"task_type": "RETRIEVAL_QUERY"})
    assert len(r.data) == 1 and len(r.data[0].embedding) == 8  # mock default size
    assert r.model == "gemini-embedding-001"
    # The Gemini API reports no tokens: LLMux estimates ⌈11 bytes / 4⌉ = 3.
    assert r.usage.prompt_tokens == 3 and r.usage.total_tokens == 3
    [seen] = emock.requests(mid)
    assert seen["path"] == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert seen["headers"]["x-goog-api-key"] == GEM_KEY
    assert "authorization" not in seen["headers"]
    assert seen["body"] == {"requests": [{"model": "models/gemini-embedding-001",
                                          "content": {"parts": [{"text": "hello world"}]},
                                          "taskType": "RETRIEVAL_QUERY"}]}


def test_cohere_request_shape_and_billed_usage(egw, emock):
    mid = new_id()
    r = client(egw, mid).embeddings.create(model="cohere-embed", input=["abcdefgh", "x"],
                                           encoding_format="float")
    assert len(r.data) == 2
    # meta.billed_units.input_tokens of the mock: ⌈8/4⌉ + ⌈1/4⌉ = 3
    assert r.usage.prompt_tokens == 3
    [seen] = emock.requests(mid)
    assert seen["path"] == "/v2/embed"
    assert seen["headers"]["authorization"] == "Bearer co-key"
    assert seen["body"] == {"model": "embed-v4.0", "texts": ["abcdefgh", "x"],
                            "input_type": "search_document", "embedding_types": ["float"]}


def test_token_arrays_are_400_before_anything_is_sent(egw, emock):
    mid = new_id()
    with pytest.raises(openai.BadRequestError) as e:
        client(egw, mid).embeddings.create(model="cohere-embed", input=[[1, 2, 3]])
    assert e.value.body["param"] == "input"
    assert emock.requests(mid) == []


@pytest.mark.parametrize("model,status,want", [
    ("gemini-embedding", 429, 429), ("cohere-embed", 500, 500), ("cohere-embed", 429, 429)])
def test_provider_errors_are_openai_errors(egw, model, status, want):
    r = egw.post("/v1/embeddings", {"model": model, "input": "x"},
                 headers={"x-mock-status": str(status)})
    assert r.status_code == want
    err = r.json()["error"]
    assert err["message"].startswith(("gem returned", "co returned")), err
    assert set(err) == {"message", "type", "param", "code"}


def test_invalid_dimension_is_the_providers_400(egw):
    # Cohere refuses output_dimension 3: its 400 comes back as an OpenAI error.
    r = egw.post("/v1/embeddings", {"model": "cohere-embed", "input": "x", "dimensions": 3})
    assert r.status_code == 400
    assert "output_dimension" in r.json()["error"]["message"]
