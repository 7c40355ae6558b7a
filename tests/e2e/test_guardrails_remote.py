"""External guardrails (docs/guardrails.md, "External guardrails") through a real Envoy: the
OpenAI moderation API, a webhook, AWS Bedrock ApplyGuardrail (SigV4, verified by the mock) and
Azure AI Content Safety, each served by the mock in its own wire format. A flagged request is
refused before the provider sees it; a clean one goes on; a guardrail that fails or times out
lets the request through (`on_failure: open`) or refuses it (`closed`)."""
import hashlib
import json

import anthropic
import openai
import pytest

import prom
from harness import new_id


def sha(k):
    return hashlib.sha256(k.encode()).hexdigest()


def remote(kind, **extra):
    base = {"openai_moderation": {"type": "openai_moderation", "cluster": "mock", "authority": "mock",
                                  "api_key": "sk-mod"},
            "webhook": {"type": "webhook", "cluster": "mock", "path": "/guardrail-webhook"},
            "bedrock_guardrail": {"type": "bedrock_guardrail", "cluster": "mock", "authority": "mock",
                                  "region": "us-east-1", "guardrail_id": "gr1abc", "guardrail_version": "1",
                                  "aws_access_key_id": "AKIDMOCKBEDROCK",
                                  "aws_secret_access_key": "mock/bedrock+SECRET/key"},
            "azure_content_safety": {"type": "azure_content_safety", "cluster": "mock", "authority": "mock",
                                     "api_key": "az-key"}}[kind]
    return {**base, "timeout_ms": 2000, **extra}


def config(guardrails):
    return {"providers": {"oai": {"type": "openai", "cluster": "mock", "api_key": "sk-provider"},
                          "ant": {"type": "anthropic", "cluster": "mock", "api_key": "sk-ant"}},
            "models": [{"name": "gpt-4o-mini", "deployments": [{"provider": "oai"}]},
                       {"name": "claude", "deployments": [{"provider": "ant", "model": "claude-3-5-haiku-20241022"}]}],
            "guardrails": guardrails}


KINDS = ["openai_moderation", "webhook", "bedrock_guardrail", "azure_content_safety"]

# How a guardrail service fails (the mock steered by the guardrail's own headers), and what the
# guardrail does then: on requests, and on answers.
FAILURES = [
    ("open", {"x-mock-status": "500"}), ("closed", {"x-mock-status": "500"}),
    ("open", {"x-mock-latency-ms": "3000"}), ("closed", {"x-mock-latency-ms": "3000"}),
    ("open", {"x-mock-text": "not json"}), ("closed", {"x-mock-reset": "1"}),
]
RESPONSE_FAILURES = [
    ("open", {"x-mock-status": "500"}), ("closed", {"x-mock-status": "500"}),
    ("closed", {"x-mock-latency-ms": "3000"}), ("open", {"x-mock-reset": "1"}),
]



def failure_id(failure):
    on_failure, steer = failure
    return f"{on_failure}-{next(iter(steer)).removeprefix('x-mock-')}"


@pytest.fixture(scope="module")
def shared(make_module_gateway):
    """One gateway for the parametrized cases: each case has its own model (on provider oai)
    and its own guardrail applying to that model only, so each case's counters are its own."""
    cases = {}
    for kind in KINDS:
        cases[f"req-{kind}"] = {"name": f"ext-{kind}", "remote": remote(kind)}
        cases[f"resp-{kind}"] = {"name": f"rext-{kind}", "on": ["response"], "remote": remote(kind)}
    for i, (on_failure, steer) in enumerate(FAILURES):
        cases[f"fail-{i}"] = {"name": f"hook-{i}", "remote": remote(
            "webhook", on_failure=on_failure, timeout_ms=300, headers=steer)}
    for i, (on_failure, steer) in enumerate(RESPONSE_FAILURES):
        cases[f"rfail-{i}"] = {"name": f"rhook-{i}", "on": ["response"], "remote": remote(
            "webhook", on_failure=on_failure, timeout_ms=300, headers=steer)}
    c = config([{**guardrail, "models": [model]} for model, guardrail in cases.items()])
    c["models"] += [{"name": model, "deployments": [{"provider": "oai", "model": "gpt-4o-mini"}]}
                    for model in cases]
    return make_module_gateway(c)


@pytest.mark.parametrize("kind", KINDS)
def test_each_service_blocks_a_flagged_request_before_the_provider(shared, mock, kind):
    g, model, name = shared, f"req-{kind}", f"ext-{kind}"
    client = openai.OpenAI(base_url=f"{g.url}/v1", api_key="sk-x", max_retries=0)
    mid = new_id()
    ok = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "a harmless question"}],
        extra_headers={"x-mock-id": mid})
    assert ok.choices[0].message.content
    assert len(mock.requests(mid)) == 1
    mid = new_id()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "something Forbidden here"}],
            extra_headers={"x-mock-id": mid})
    assert e.value.body["code"] == "guardrail_blocked" and e.value.body["param"] == name
    assert "Forbidden" not in e.value.body["message"]
    assert mock.requests(mid) == [], "the provider never sees a blocked request"
    s = prom.parse(g.prometheus())
    assert prom.total(s, "llmux_guard_actions", llmux_guardrail=name, llmux_action="block") == 1
    assert prom.total(s, "llmux_guard_checks", llmux_guardrail=name) == 2


def test_anthropic_clients_get_the_block_in_their_shape_and_streams_wait(make_gateway):
    g = make_gateway(config([{"name": "ext", "remote": remote("webhook")}]))
    client = anthropic.Anthropic(base_url=g.url, api_key="sk-x", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="claude", max_tokens=20,
                               messages=[{"role": "user", "content": "forbidden"}])
    assert "guardrail `ext`" in str(e.value)
    with client.messages.stream(model="claude", max_tokens=20,
                                messages=[{"role": "user", "content": "hello"}]) as s:
        assert "".join(s.text_stream)


@pytest.mark.parametrize("case", range(len(FAILURES)), ids=lambda i: failure_id(FAILURES[i]))
def test_a_failing_guardrail_fails_open_or_closed(shared, mock, case):
    g, on_failure = shared, FAILURES[case][0]
    mid = new_id()
    r = g.post("/v1/chat/completions", {"model": f"fail-{case}",
                                        "messages": [{"role": "user", "content": "hello"}]},
               headers={"x-mock-id": mid})
    if on_failure == "open":
        assert r.status_code == 200, r.text
        assert len(mock.requests(mid)) == 1
    else:
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "guardrail_unavailable"
        assert mock.requests(mid) == []
    assert prom.total(prom.parse(g.prometheus()), "llmux_guard_errors", llmux_guardrail=f"hook-{case}") == 1


def test_remote_and_local_guardrails_together(make_gateway, mock):
    g = make_gateway(config([
        {"name": "hook", "remote": remote("webhook")},
        {"name": "pii", "restore": True, "rules": [{"detector": "email", "action": "mask"}]}]))
    client = openai.OpenAI(base_url=f"{g.url}/v1", api_key="sk-x", max_retries=0)
    mid = new_id()
    r = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "mail ann@example.org"}],
        extra_headers={"x-mock-id": mid, "x-mock-text": "ok <EMAIL_1>"})
    assert r.choices[0].message.content == "ok ann@example.org"
    [seen] = mock.requests(mid)
    assert "ann@example.org" not in str(seen["body"])


def test_a_body_the_guardrail_cannot_read_is_refused_before_any_call(make_gateway, mock):
    """A key given twice: the provider would read the last `messages`; the guardrail's walk
    cannot read the body. Refused (400), neither the guardrail service nor the provider called."""
    import httpx
    g = make_gateway(config([{"name": "ext", "remote": remote("webhook", on_failure="open")}]))
    mid = new_id()
    body = ('{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],'
            '"messages":[{"role":"user","content":"forbidden"}]}')
    r = httpx.post(f"{g.url}/v1/chat/completions", content=body,
                   headers={"content-type": "application/json", "x-mock-id": mid})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "guardrail_unreadable"
    assert mock.requests(mid) == []
    s = prom.parse(g.prometheus())
    assert prom.total(s, "llmux_guard_checks", llmux_guardrail="ext") == 0


# Remote guardrails on answers (`on: ["response"]`): the whole answer is held until the verdict.
# The mock echoes the prompt ("Hello from the mock! You said: ..."), so a prompt with "forbidden"
# gets an answer with it; the request itself is not checked (`on` has no "request").

@pytest.mark.parametrize("kind", KINDS)
def test_a_response_guardrail_blocks_a_flagged_answer(shared, mock, kind):
    g, model, name = shared, f"resp-{kind}", f"rext-{kind}"
    client = openai.OpenAI(base_url=f"{g.url}/v1", api_key="sk-x", max_retries=0)
    ok = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "a harmless question"}])
    assert "harmless" in ok.choices[0].message.content
    mid = new_id()
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "say Forbidden"}],
            extra_headers={"x-mock-id": mid})
    assert e.value.body["code"] == "guardrail_blocked" and e.value.body["param"] == name
    assert e.value.body["message"].startswith(f"the answer was blocked by guardrail `{name}`")
    assert "Forbidden" not in e.value.body["message"]
    assert len(mock.requests(mid)) == 1, "the request itself was not checked"
    s = prom.parse(g.prometheus())
    assert prom.total(s, "llmux_guard_actions", llmux_guardrail=name, llmux_action="block") == 1
    assert prom.total(s, "llmux_guard_checks", llmux_guardrail=name, llmux_direction="response") == 2
    assert prom.total(s, "llmux_guard_checks", llmux_guardrail=name, llmux_direction="request") == 0


def test_a_response_guardrail_blocks_in_the_anthropic_shape_and_skips_streams(make_gateway):
    g = make_gateway(config([{"name": "ext", "on": ["response"], "remote": remote("webhook")}]))
    client = anthropic.Anthropic(base_url=g.url, api_key="sk-x", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="claude", max_tokens=50,
                               messages=[{"role": "user", "content": "say forbidden"}])
    assert "guardrail `ext`" in str(e.value)
    # Streams are not held for remote guardrails: they pass, counted as skipped.
    with client.messages.stream(model="claude", max_tokens=50,
                                messages=[{"role": "user", "content": "say forbidden"}]) as s:
        assert "forbidden" in "".join(s.text_stream)
    s = prom.parse(g.prometheus())
    assert prom.total(s, "llmux_guard_skipped", llmux_guardrail="ext") == 1


@pytest.mark.parametrize("case", range(len(RESPONSE_FAILURES)),
                         ids=lambda i: failure_id(RESPONSE_FAILURES[i]))
def test_a_failing_response_guardrail_fails_open_or_closed(shared, mock, case):
    g, on_failure = shared, RESPONSE_FAILURES[case][0]
    mid = new_id()
    r = g.post("/v1/chat/completions", {"model": f"rfail-{case}",
                                        "messages": [{"role": "user", "content": "hello"}]},
               headers={"x-mock-id": mid})
    assert len(mock.requests(mid)) == 1, "the provider answered in both cases"
    if on_failure == "open":
        assert r.status_code == 200, r.text
        assert "hello" in r.json()["choices"][0]["message"]["content"]
    else:
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "guardrail_unavailable"
        assert "could not check the answer" in r.json()["error"]["message"]
    assert prom.total(prom.parse(g.prometheus()), "llmux_guard_errors", llmux_guardrail=f"rhook-{case}") == 1


def test_request_and_response_checks_together(make_gateway, mock):
    g = make_gateway(config([{"name": "ext", "on": ["request", "response"], "remote": remote("webhook")}]))
    client = openai.OpenAI(base_url=f"{g.url}/v1", api_key="sk-x", max_retries=0)
    mid = new_id()
    # A clean prompt, a flagged answer (the mock's text): blocked after the provider answered.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-id": mid, "x-mock-text": "a Forbidden answer"})
    assert e.value.body["message"].startswith("the answer was blocked")
    assert len(mock.requests(mid)) == 1
    s = prom.parse(g.prometheus())
    assert prom.total(s, "llmux_guard_checks", llmux_guardrail="ext", llmux_direction="request") == 1
    assert prom.total(s, "llmux_guard_checks", llmux_guardrail="ext", llmux_direction="response") == 1


def test_remote_guardrails_never_see_what_the_local_ones_masked(make_gateway, mock):
    """The local guardrails mask the client's e-mail for the provider; the remote guardrail (on
    requests and answers) reads the same placeholder — the client's value leaves the gateway
    for nobody — and the client still gets its value back."""
    wid, mid = new_id(), new_id()
    hook = remote("webhook", headers={"x-mock-id": wid})
    g = make_gateway(config([
        {"name": "pii", "restore": True, "rules": [{"detector": "email", "action": "mask"}]},
        {"name": "ext", "on": ["request", "response"], "remote": hook}]))
    client = openai.OpenAI(base_url=f"{g.url}/v1", api_key="sk-x", max_retries=0)
    email = "jane.doe@example.com"
    r = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"Email {email} the report"}],
        extra_headers={"x-mock-id": mid, "x-mock-text": "Done: I wrote to <EMAIL_1>."})
    assert r.choices[0].message.content == f"Done: I wrote to {email}."
    calls = mock.requests(wid)
    assert [c["body"]["direction"] for c in calls] == ["request", "response"]
    seen = json.dumps([c["body"] for c in calls])
    assert email not in seen and seen.count("<EMAIL_1>") == 2
    assert email not in json.dumps(mock.requests(mid))
