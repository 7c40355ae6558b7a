"""Broken and hostile providers through a real Envoy (issue 14, items 8 and 9).

Item 9: an OpenAI-protocol stream the provider drops before `[DONE]` (`x-mock-drop-after`)
ends like every other provider's stream: an OpenAI error event, then `data: [DONE]`, once.
Item 8: a provider stream with one endless line (`x-mock-endless-line`) is cut at the SSE
parser's 1 MiB cap with an `upstream_event_too_large` error event and `[DONE]`, and the
worker survives (no panic, later requests still answered)."""
import json

import openai
import pytest

from harness import new_id

OPENAI = "gpt-4o-mini"
ANTHROPIC = "claude-3-5-haiku"
USER = [{"role": "user", "content": "tell me something long"}]


def stream(g, model, headers=None, usage=False):
    body = {"model": model, "stream": True, "messages": USER}
    if usage:
        body["stream_options"] = {"include_usage": True}
    r = g.post("/v1/chat/completions", body, headers={"x-mock-id": new_id(), **(headers or {})})
    assert r.status_code == 200, r.text
    return r.text


def events(text):
    return [e for e in text.split("\n\n") if e.strip()]


def error_of(event):
    assert event.startswith("data: "), event
    return json.loads(event[len("data: "):])["error"]


def unparsed_gateway(make_gateway, provider_headers):
    """One OpenAI deployment with `stream_usage: false`: the stream is forwarded unparsed."""
    return make_gateway({
        "stream_usage": False,
        "providers": {"oai": {"type": "openai", "cluster": "mock", "headers": provider_headers}},
        "models": [{"name": OPENAI, "deployments": [{"provider": "oai", "model": OPENAI}]}],
    })


@pytest.mark.parametrize("usage", [False, True])
def test_openai_stream_cut_before_done_ends_with_an_error_then_done(gateway, usage):
    text = stream(gateway, OPENAI, {"x-mock-drop-after": "3"}, usage)
    evs = events(text)
    assert evs[-1] == "data: [DONE]"
    err = error_of(evs[-2])
    assert set(err) == {"message", "type", "param", "code"}
    assert "without its final DONE event" in err["message"]
    assert text.count("[DONE]") == 1 and text.count('"error"') == 1
    # The partial answer came first, as the provider sent it.
    chunks = [json.loads(e[len("data: "):]) for e in evs[:-2]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    # An OpenAI SDK raises instead of taking the partial answer for a complete one.
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0,
                           default_headers={"x-mock-drop-after": "3", "x-mock-id": new_id()})
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model=OPENAI, messages=USER, stream=True))


def test_unparsed_openai_stream_cut_before_done_ends_with_an_error_then_done(make_gateway):
    g = unparsed_gateway(make_gateway, {"x-mock-drop-after": "3"})
    text = stream(g, OPENAI)
    evs = events(text)
    assert evs[-1] == "data: [DONE]"
    assert "without its final DONE event" in error_of(evs[-2])["message"]
    assert text.count("[DONE]") == 1
    # A complete stream is untouched.
    g2 = unparsed_gateway(make_gateway, {})
    text = stream(g2, OPENAI)
    assert text.endswith("data: [DONE]\n\n") and '"error"' not in text
    assert "panicked" not in g.process.log() + g2.process.log()


def test_the_providers_own_error_event_gets_only_done(gateway):
    text = stream(gateway, OPENAI, {"x-mock-stream-error-after": "2"})
    evs = events(text)
    assert evs[-1] == "data: [DONE]"
    assert "server had an error" in error_of(evs[-2])["message"]
    assert text.count('"error"') == 1 and text.count("[DONE]") == 1


def test_a_complete_openai_stream_is_untouched(gateway):
    for usage in (False, True):
        text = stream(gateway, OPENAI, usage=usage)
        assert text.endswith("data: [DONE]\n\n") and text.count("[DONE]") == 1
        assert '"error"' not in text


@pytest.mark.parametrize("model", [ANTHROPIC, OPENAI])
def test_an_endless_line_is_cut_at_the_cap_with_an_error_then_done(gateway, model):
    # 3 MiB with no line end: past the parser's 1 MiB line cap.
    text = stream(gateway, model, {"x-mock-endless-line": str(3 << 20)}, usage=True)
    assert text.endswith("data: [DONE]\n\n") and text.count("[DONE]") == 1
    evs = events(text)
    err = error_of(evs[-2])
    assert err["code"] == "upstream_event_too_large", err
    assert "1048576" in err["message"]
    if model == ANTHROPIC:
        # A translating provider sends nothing of the line. (The OpenAI pass-through forwards
        # the chunks it read as they came, holding none of them: the line's bytes, then a blank
        # line ending it, the error event and [DONE].)
        assert len(text) < 4096
    # The worker is fine: the next request is answered.
    assert stream(gateway, model).endswith("data: [DONE]\n\n")
    assert "panicked" not in gateway.process.log()
