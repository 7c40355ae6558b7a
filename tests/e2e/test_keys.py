"""Virtual API keys (SHA-256 digests in config): missing, wrong, expired, blocked, model not
allowed; the gateway key never reaches the provider; Anthropic clients use x-api-key."""
import hashlib

import anthropic
import openai
import pytest

from harness import new_id

USER = [{"role": "user", "content": "hi"}]


def sha(k):
    return hashlib.sha256(k.encode()).hexdigest()


@pytest.fixture(scope="module")
def keyed(mock, log_dir):
    from harness import Gateway
    g = Gateway(mock, log_dir, name="envoy-keys", llmux_config={
        "providers": {"oai": {"type": "openai", "cluster": "mock", "api_key": "sk-provider"},
                      "ant": {"type": "anthropic", "cluster": "mock"}},
        "models": [{"name": "gpt-4o-mini", "deployments": [{"provider": "oai"}]},
                   {"name": "claude", "deployments": [{"provider": "ant"}]}],
        "auth": {"keys": [
            {"key_sha256": sha("sk-team-a"), "alias": "team-a", "team": "a", "models": ["gpt-4o-mini"]},
            {"key_sha256": sha("sk-all"), "alias": "all"},
            {"key_sha256": sha("sk-expired"), "alias": "old", "expires_at": "2020-01-01"},
            {"key_sha256": sha("sk-blocked"), "alias": "blocked", "blocked": True},
        ]},
    })
    yield g
    g.stop()


def call(g, key=None, model="gpt-4o-mini", mid=None, extra=None):
    h = {"x-mock-id": mid or new_id(), **(extra or {})}
    if key:
        h["authorization"] = f"Bearer {key}"
    return g.post("/v1/chat/completions", {"model": model, "messages": USER}, headers=h)


def test_valid_key_is_served_and_never_forwarded(keyed, mock):
    mid = new_id()
    r = call(keyed, "sk-team-a", mid=mid)
    assert r.status_code == 200, r.text
    [seen] = mock.requests(mid)
    assert seen["headers"]["authorization"] == "Bearer sk-provider"
    # A provider without a key of its own gets no credential at all, never the gateway key.
    mid = new_id()
    r = call(keyed, "sk-all", model="claude", mid=mid)
    assert r.status_code == 200, r.text
    [seen] = mock.requests(mid)
    assert "authorization" not in seen["headers"] and "x-api-key" not in seen["headers"]


@pytest.mark.parametrize("key, code", [(None, "missing_api_key"), ("sk-wrong", "invalid_api_key"),
                                       ("sk-expired", "expired_api_key"), ("sk-blocked", "blocked_api_key")])
def test_bad_keys_are_401_before_anything_is_sent(keyed, mock, key, code):
    mid = new_id()
    r = call(keyed, key, mid=mid)
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["code"] == code
    assert "sk-" not in err["message"]
    assert mock.requests(mid) == []


def test_model_not_allowed_is_403(keyed):
    r = call(keyed, "sk-team-a", model="claude")
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "model_not_allowed"


def test_sdks_and_models_endpoint(keyed):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed.url + "/v1", api_key="sk-wrong", max_retries=0).models.list()
    ids = [m.id for m in openai.OpenAI(base_url=keyed.url + "/v1", api_key="sk-all").models.list().data]
    assert ids == ["gpt-4o-mini", "claude"]
    c = anthropic.Anthropic(base_url=keyed.url, api_key="sk-all", max_retries=0)
    assert c.messages.create(model="claude", max_tokens=5, messages=USER).content[0].type == "text"
    with pytest.raises(anthropic.AuthenticationError) as e:
        anthropic.Anthropic(base_url=keyed.url, api_key="sk-nope", max_retries=0).messages.create(
            model="claude", max_tokens=5, messages=USER)
    assert e.value.body["error"]["type"] == "authentication_error"


def test_access_log_names_key_alias_and_team(keyed):
    import time
    rid = new_id()
    r = keyed.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": USER},
                   headers={"authorization": "Bearer sk-team-a", "x-request-id": rid})
    assert r.status_code == 200
    deadline = time.monotonic() + 10
    line = None
    while line is None and time.monotonic() < deadline:
        line = next((l for l in keyed.access_log() if l.get("request_id") == rid), None)
        time.sleep(0.05)  # polling with a deadline for Envoy's access-log flush
    assert line is not None
    assert line["key_alias"] == "team-a" and line["team"] == "a"
    assert "sk-team-a" not in open(keyed.access_log_path).read()
