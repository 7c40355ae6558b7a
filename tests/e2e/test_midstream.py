"""Mid-stream recovery through a real Envoy: a deployment whose stream breaks off after its first
bytes (an in-band error event, or the body ending without the terminal event) is continued on the
group's next deployment, and the client reads ONE well-formed stream: the partial text, then the
fallback's continuation, the fallback's finish_reason, a `: llmux recovered on deployment <name>`
comment and `data: [DONE]`. The mock breaks streams on demand (`x-mock-stream-error-after`,
`x-mock-drop-after` in a provider's `headers`); the fallback's provider tags its requests with
`x-mock-id` so the test reads the continuation request the mock received."""
import json

import httpx
import openai
import pytest

import prom
from harness import new_id

USER = [{"role": "user", "content": "tell me something"}]
CONTINUE = "Continue exactly where your previous message stopped, without repeating anything."
ROUTER = {"attempts_cluster": "llmux_attempts", "status": True}
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-20241022"}


def group(name, broken_kind, break_header, fallback_kind, fb_id, fallback_headers=None):
    """Group `name`: `broken` (priority 0) streams "Hello big" then breaks; `fb` (priority 1)
    answers ", wide world." with finish reason `length` (OpenAI) / `max_tokens` (Anthropic).
    Its providers are its own (`<name>-brk`, `<name>-fbp`): (providers, model)."""
    finish = "length" if fallback_kind == "openai" else "max_tokens"
    providers = {
        f"{name}-brk": {"type": broken_kind, "cluster": "mock", "headers": {
            "x-mock-text": "Hello big wide world", break_header[0]: break_header[1]}},
        f"{name}-fbp": {"type": fallback_kind, "cluster": "mock", "headers": {
            "x-mock-id": fb_id, "x-mock-text": ", wide world.", "x-mock-finish": finish,
            **(fallback_headers or {})}},
    }
    model = {"name": name, "strategy": "priority", "deployments": [
        {"provider": f"{name}-brk", "model": MODELS[broken_kind], "name": "broken", "priority": 0},
        {"provider": f"{name}-fbp", "model": MODELS[fallback_kind], "name": "fb", "priority": 1},
    ]}
    return providers, model


def config(*groups, router=None):
    providers, models = {}, []
    for p, m in groups:
        providers.update(p)
        models.append(m)
    return {"providers": providers, "router": {**ROUTER, **(router or {})}, "models": models}


# (broken provider, the header that breaks it after "Hello", " big", fallback provider)
CASES = {
    # Anthropic: message_start, content_block_start, "Hello", " big", then `event: error`
    # (overloaded_error), which the translator turns into an OpenAI error event + [DONE].
    "anthropic-overloaded": ("anthropic", ("x-mock-stream-error-after", "4"), "openai"),
    # OpenAI: role chunk, "Hello", " big", then the body ends: no finish_reason, no [DONE].
    "openai-cut": ("openai", ("x-mock-drop-after", "3"), "anthropic"),
    # OpenAI: role chunk, "Hello", " big", then `data: {"error": ...}` and the body ends.
    "openai-error": ("openai", ("x-mock-stream-error-after", "3"), "openai"),
}


# The fallback's x-mock-id of each group the shared gateway has.
FB = {name: new_id() for name in [f"continue-{c}" for c in CASES] + [
    "exact", "failing-anthropic-overloaded", "failing-openai-cut", "complete"]}


@pytest.fixture(scope="module")
def g(make_module_gateway):
    """One gateway, a model group per case (a recovery's counter is its group's: the
    gen_ai_request_model label)."""
    groups = [group(f"continue-{c}", *CASES[c], FB[f"continue-{c}"]) for c in CASES]
    groups.append(group("exact", "anthropic", ("x-mock-stream-error-after", "4"), "openai", FB["exact"]))
    groups += [group(f"failing-{c}", *CASES[c], FB[f"failing-{c}"], fallback_headers={"x-mock-status": "500"})
               for c in ("anthropic-overloaded", "openai-cut")]
    groups.append(group("complete", "openai", ("x-mock-deltas", "1"), "openai", FB["complete"]))
    c = config(*groups)
    # A lone deployment: nothing to recover on.
    c["providers"]["lone-brk"] = {"type": "anthropic", "cluster": "mock", "headers": {
        "x-mock-text": "Hello big wide world", "x-mock-stream-error-after": "4"}}
    c["models"].append({"name": "lone", "deployments": [
        {"provider": "lone-brk", "model": MODELS["anthropic"], "name": "broken"}]})
    return make_module_gateway(c)


def raw_stream(g, model, **extra):
    body = {"model": model, "messages": USER, "stream": True, **extra}
    with httpx.stream("POST", g.url + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        return r.headers, r.read().decode()


def plain(content):
    if isinstance(content, str):
        return content
    return "".join(b["text"] for b in content if b.get("type") == "text")


def events(text):
    return [e for e in text.split("\n\n") if e]


def recoveries(g, model, outcome, deployment):
    return prom.total(prom.parse(g.prometheus()), "llmux_router_midstream_recoveries",
                      gen_ai_request_model=model, llmux_outcome=outcome, llmux_deployment=deployment)


@pytest.mark.parametrize("case", list(CASES))
def test_broken_stream_continues_on_the_fallback(g, mock, case):
    model = f"continue-{case}"
    client = openai.OpenAI(base_url=g.url + "/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=USER, stream=True)
    assert raw.headers["x-llmux-deployment"] == "broken"  # the first bytes came from it
    chunks = list(raw.parse())  # an error event would raise here
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello big, wide world."
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]  # the fallback's (Anthropic max_tokens maps to length)
    assert len({c.id for c in chunks}) == 1  # one stream: the tail reuses the stream's id

    # The continuation request: not streamed, the partial answer as the assistant's message.
    sent = mock.requests(FB[model])
    assert len(sent) == 1
    body = sent[0]["body"]
    assert body.get("stream") in (False, None)
    assert "stream_options" not in body
    # (Anthropic's translation puts the text in content blocks.)
    assert [(m["role"], plain(m["content"])) for m in body["messages"]] == [
        ("user", USER[0]["content"]), ("assistant", "Hello big"), ("user", CONTINUE)]
    assert recoveries(g, model, "recovered", "fb") == 1
    assert "panicked" not in g.process.log()


def test_the_client_sees_exact_bytes_and_usage_is_summed(g, mock):
    headers, text = raw_stream(g, "exact", stream_options={"include_usage": True})
    assert headers["content-type"].startswith("text/event-stream")
    evs = events(text)
    assert evs[-2:] == [": llmux recovered on deployment fb", "data: [DONE]"]
    assert text.endswith("\n\ndata: [DONE]\n\n") and text.count("[DONE]") == 1
    assert '"error"' not in text
    chunks = [json.loads(e[len("data: "):]) for e in evs[:-2]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert {c["model"] for c in chunks} == {MODELS["anthropic"]}
    assert chunks[-3]["choices"][0]["delta"] == {"content": ", wide world."}
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    # The fallback's usage (prompt ≥ 1, 3 completion tokens) plus what the broken stream had.
    assert usage["completion_tokens"] >= 3 and usage["prompt_tokens"] >= 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert len(mock.requests(FB["exact"])) == 1


def test_recovery_off_keeps_the_error_event(make_gateway, mock):
    # A gateway of its own: recovery is turned off for the whole router.
    fb_id = new_id()
    g = make_gateway(config(group("m", "anthropic", ("x-mock-stream-error-after", "4"), "openai", fb_id),
                            router={"mid_stream_recovery": False}))
    _, text = raw_stream(g, "m")
    evs = events(text)
    assert evs[-1] == "data: [DONE]"
    assert json.loads(evs[-2][len("data: "):])["error"]["code"] == "overloaded"
    assert "llmux recovered" not in text
    assert mock.requests(fb_id) == []
    client = openai.OpenAI(base_url=g.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="m", messages=USER, stream=True))


@pytest.mark.parametrize("case", ["anthropic-overloaded", "openai-cut"])
def test_a_failing_fallback_leaves_the_stream_as_it_was(g, mock, case):
    model = f"failing-{case}"
    _, text = raw_stream(g, model)
    evs = events(text)
    assert "llmux recovered" not in text
    if case == "anthropic-overloaded":
        # The held-back error event and [DONE], exactly as without recovery.
        assert evs[-1] == "data: [DONE]"
        assert json.loads(evs[-2][len("data: "):])["error"]["code"] == "overloaded"
    else:
        # The cut stream ends as every broken stream does: an error event saying so, then [DONE].
        assert evs[-1] == "data: [DONE]" and text.count("[DONE]") == 1
        err = json.loads(evs[-2][len("data: "):])["error"]
        assert "without its final DONE event" in err["message"], err
    assert len(mock.requests(FB[model])) == 1  # it was asked
    assert recoveries(g, model, "failed", "fb") == 1
    assert "panicked" not in g.process.log()


def test_no_recovery_without_another_deployment(g, mock):
    """A lone deployment (direct path): the stream ends with the error event and [DONE]."""
    _, text = raw_stream(g, "lone")
    evs = events(text)
    assert evs[-1] == "data: [DONE]" and "overloaded_error" in evs[-2]
    assert "llmux recovered" not in text


def test_a_complete_stream_is_untouched(g, mock):
    client = openai.OpenAI(base_url=g.url + "/v1", api_key="x", max_retries=0)
    chunks = list(client.chat.completions.create(model="complete", messages=USER, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        "Hello big wide world"
    _, text = raw_stream(g, "complete")
    assert "llmux recovered" not in text and text.endswith("data: [DONE]\n\n")
    assert mock.requests(FB["complete"]) == []
