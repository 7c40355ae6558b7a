"""LLMux in Envoy's default Wasm mode (no `allow_on_headers_stop_iteration`), the mode stock Istio
and Envoy Gateway render: Envoy withholds the body, so LLMux cannot route; it must say so within
a couple of seconds (never hang until the route timeout), in the client API's own error shape,
and log what to change. docs/deploy.md."""
import time

import anthropic
import openai
import pytest

from harness import new_id, render_envoy

WITHHELD = "Envoy withholds request bodies from this filter"


@pytest.fixture(scope="module")
def default_mode(mock, log_dir):
    from harness import Gateway

    g = Gateway(mock, log_dir, name="envoy-default-mode", allow_on_headers_stop_iteration=False)
    assert "allow_on_headers_stop_iteration" not in g.yaml
    yield g
    g.stop()
    assert "panicked" not in g.process.log()


def test_chat_gets_a_clear_error_not_a_hang(default_mode):
    start = time.monotonic()
    r = default_mode.post("/v1/chat/completions",
                          {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                          headers={"x-mock-id": new_id()}, timeout=10)
    took = time.monotonic() - start
    assert r.status_code == 500, r.text
    assert r.json()["error"]["code"] == "request_body_withheld"
    assert took < 5, f"answered after {took:.1f}s"
    log = default_mode.process.log()
    assert log.count(WITHHELD) >= 1, log[-3000:]


def test_sdk_clients_see_the_error_in_their_own_shape(default_mode):
    oai = openai.OpenAI(base_url=default_mode.url + "/v1", api_key="k", max_retries=0, timeout=10)
    with pytest.raises(openai.InternalServerError) as e:
        oai.chat.completions.create(model="gpt-4o-mini", stream=True,
                                    messages=[{"role": "user", "content": "hi"}])
    assert "cannot read request bodies" in str(e.value)
    ant = anthropic.Anthropic(base_url=default_mode.url, api_key="k", max_retries=0, timeout=10)
    with pytest.raises(anthropic.InternalServerError) as e:
        ant.messages.create(model="claude-3-5-haiku", max_tokens=10,
                            messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["type"] == "error"


def test_requests_without_a_body_still_work(default_mode):
    r = default_mode.http.get(default_mode.url + "/v1/models", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["data"]


def test_the_flag_on_delivers_bodies(gateway):
    # The control: the same config with the flag routes.
    assert "allow_on_headers_stop_iteration: true" in gateway.yaml
    r = gateway.post("/v1/chat/completions",
                     {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                     headers={"x-mock-id": new_id()})
    assert r.status_code == 200, r.text
    assert WITHHELD not in gateway.process.log()
