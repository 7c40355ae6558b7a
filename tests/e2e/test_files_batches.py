"""`/v1/files` and `/v1/batches` have no model: LLMux routes them to one OpenAI-protocol provider,
named by the `llmux-provider` header or the config's `files_provider`, with that provider's path
prefix, host and key; the body (a multipart upload) streams through unread."""
import httpx
import openai
import pytest

from harness import new_id


@pytest.fixture
def g(make_gateway):
    return make_gateway({
        "providers": {
            "oai": {"type": "openai", "cluster": "mock", "api_key": "sk-files"},
            "groq": {"type": "groq", "cluster": "mock", "api_key": "gsk"},
            "ant": {"type": "anthropic", "cluster": "mock"},
        },
        "files_provider": "oai",
        "models": [{"name": "m", "deployments": [{"provider": "oai", "model": "gpt-4o-mini"}]}],
    })


def test_file_upload_goes_to_the_default_provider_with_its_key(g, mock):
    mid = new_id()
    client = openai.OpenAI(base_url=g.url + "/v1", api_key="client-key", max_retries=0,
                           default_headers={"x-mock-id": mid})
    raw = client.files.with_raw_response.create(file=("batch.jsonl", b'{"custom_id":"1"}\n'),
                                                purpose="batch")
    assert raw.http_response.json()["path"] == "/v1/files"
    [seen] = mock.requests(mid)
    assert seen["headers"]["authorization"] == "Bearer sk-files"
    assert seen["headers"]["content-type"].startswith("multipart/form-data")


def test_batches_keep_method_path_and_query_and_the_header_picks_the_provider(g, mock):
    mid = new_id()
    r = httpx.get(g.url + "/v1/batches/batch_1?limit=2", headers={"x-mock-id": mid}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["method"] == "GET" and r.json()["query"] == "limit=2"
    mid = new_id()
    r = httpx.delete(g.url + "/v1/files/file-9", headers={"x-mock-id": mid, "llmux-provider": "groq"},
                     timeout=10)
    assert r.json()["method"] == "DELETE"
    [seen] = mock.requests(mid)
    assert seen["path"] == "/openai/v1/files/file-9"
    assert seen["headers"]["authorization"] == "Bearer gsk"
    assert "llmux-provider" not in seen["headers"]


def test_providers_without_a_files_api_and_no_provider_are_400(g, make_gateway):
    r = httpx.get(g.url + "/v1/files", headers={"llmux-provider": "ant"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_endpoint"
    r = httpx.get(g.url + "/v1/files", headers={"llmux-provider": "nope"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_provider"
    g2 = make_gateway({"providers": {"oai": {"type": "openai", "cluster": "mock"}},
                       "models": [{"name": "m", "deployments": [{"provider": "oai"}]}]})
    r = httpx.get(g2.url + "/v1/batches", timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_provider"
