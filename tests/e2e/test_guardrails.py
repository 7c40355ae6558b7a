"""Guardrails (docs/guardrails.md) through a real Envoy: request text masked before the provider
sees it and restored in the answer (plain and streamed), requests and answers blocked with an
error in the client's API that names the rule and never the text, selectors by model group and
key, metrics, and the official SDKs reading all of it."""
import hashlib
import json
import time

import anthropic
import openai
import pytest

import prom
from harness import new_id


def sha(k):
    return hashlib.sha256(k.encode()).hexdigest()


EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"  # Luhn-valid test number
KEY = "sk-proj-Q3rT9vX2mN8bK4wZ7yH1cJ6dF0sA5gLpE2uR"
CONFIG = {
    "providers": {"oai": {"type": "openai", "cluster": "mock", "api_key": "sk-provider"},
                  "ant": {"type": "anthropic", "cluster": "mock", "api_key": "sk-ant"}},
    "models": [{"name": "gpt-4o-mini", "deployments": [{"provider": "oai"}]},
               {"name": "claude", "deployments": [{"provider": "ant", "model": "claude-3-5-haiku-20241022"}]}],
    "auth": {"keys": [{"key_sha256": sha("sk-a"), "alias": "a"},
                      {"key_sha256": sha("sk-strict"), "alias": "strict"}]},
    "guardrails": [
        {"name": "pii", "restore": True,
         "rules": [{"detector": "email", "action": "mask"},
                   {"detector": "card", "action": "block"},
                   {"detector": "phone", "action": "monitor"}]},
        {"name": "secrets", "models": ["gpt-4o-mini"],
         "rules": [{"detector": "secret", "action": "block"}]},
        {"name": "deny", "keys": ["strict"], "on": ["request"],
         "rules": [{"detector": "phrase", "name": "project_x", "phrases": ["project neptune"],
                    "action": "block"}]},
    ],
}


@pytest.fixture(scope="module")
def g(mock, log_dir):
    from harness import Gateway
    gw = Gateway(mock, log_dir, name="envoy-guard", llmux_config=CONFIG)
    yield gw
    gw.stop()


def oai(g, key="sk-a"):
    return openai.OpenAI(base_url=f"{g.url}/v1", api_key=key, max_retries=0)


def sent_text(mock, mid):
    [seen] = mock.requests(mid)
    return json.dumps(seen["body"]) if not isinstance(seen["body"], str) else seen["body"]


def test_an_email_is_masked_for_the_provider_and_restored_for_the_client(g, mock):
    mid = new_id()
    r = oai(g).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"Email {EMAIL} the report"}],
        extra_headers={"x-mock-id": mid, "x-mock-text": "Done: I wrote to <EMAIL_1>."})
    body = sent_text(mock, mid)
    assert EMAIL not in body and "<EMAIL_1>" in body
    assert r.choices[0].message.content == f"Done: I wrote to {EMAIL}."


@pytest.mark.parametrize("words", ["1", "2", "3"])
def test_restore_in_a_stream_whatever_the_deltas(g, mock, words):
    mid = new_id()
    stream = oai(g).chat.completions.create(
        model="gpt-4o-mini", stream=True,
        messages=[{"role": "user", "content": f"Email {EMAIL} the report"}],
        extra_headers={"x-mock-id": mid, "x-mock-text": "Sent to <EMAIL_1> as asked, bye.",
                       "x-mock-deltas": words})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == f"Sent to {EMAIL} as asked, bye."
    assert EMAIL not in sent_text(mock, mid)


def test_a_card_number_blocks_the_request_in_each_api(g, mock):
    mid = new_id()
    with pytest.raises(openai.BadRequestError) as e:
        oai(g).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"my card is {CARD}"}],
            extra_headers={"x-mock-id": mid})
    err = e.value.body
    assert err["code"] == "guardrail_blocked" and err["param"] == "pii.card"
    assert "4111" not in json.dumps(err)
    assert mock.requests(mid) == []
    client = anthropic.Anthropic(base_url=g.url, api_key="sk-a", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="claude", max_tokens=20,
                               messages=[{"role": "user", "content": f"card {CARD}"}])
    assert "guardrail `pii`" in str(e.value) and "4111" not in str(e.value)


def test_an_answer_with_a_secret_is_blocked_plain_and_streamed(g, mock):
    with pytest.raises(openai.BadRequestError) as e:
        oai(g).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-mock-text": f"the key is {KEY}"})
    assert e.value.body["code"] == "guardrail_blocked"
    assert KEY not in str(e.value.body)
    stream = oai(g).chat.completions.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-mock-text": f"the key is {KEY} and more words after it", "x-mock-deltas": "2"})
    got = ""
    with pytest.raises(openai.APIError) as e:
        for c in stream:
            if c.choices:
                got += c.choices[0].delta.content or ""
    assert KEY[:12] not in got and "more words" not in got
    assert "guardrail" in str(e.value)


def test_selectors_pick_the_guardrails(g):
    # `secrets` applies to gpt-4o-mini only: the same answer through claude passes.
    r = anthropic.Anthropic(base_url=g.url, api_key="sk-a", max_retries=0).messages.create(
        model="claude", max_tokens=50, messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-mock-text": f"the key is {KEY}"})
    assert KEY in r.content[0].text
    # `deny` applies to key `strict` only.
    ok = oai(g).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "status of project neptune?"}])
    assert ok.choices
    with pytest.raises(openai.BadRequestError) as e:
        oai(g, "sk-strict").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "status of Project Neptune?"}])
    assert e.value.body["param"] == "deny.project_x"


def test_monitor_only_counts_and_metrics_name_guardrail_rule_and_action(g, mock):
    mid, rid = new_id(), new_id()
    oai(g).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "call me at +1 415 555 0100"}],
        extra_headers={"x-mock-id": mid, "x-request-id": rid})
    assert "+1 415 555 0100" in sent_text(mock, mid), "monitor leaves the text as it is"
    deadline = time.monotonic() + 15
    line = None
    while line is None and time.monotonic() < deadline:
        line = next((l for l in g.access_log() if l.get("request_id") == rid), None)
        time.sleep(0.1)  # polling the access log file, flushed every 100 ms
    assert line and line["guardrails"] == "pii", line
    s = prom.parse(g.prometheus())
    assert prom.total(s, "llmux_guard_actions", llmux_guardrail="pii", llmux_rule="phone",
                      llmux_action="monitor") >= 1
    assert prom.total(s, "llmux_guard_actions", llmux_guardrail="pii", llmux_rule="email",
                      llmux_action="mask") >= 1
    assert prom.total(s, "llmux_guard_actions", llmux_guardrail="pii", llmux_rule="card",
                      llmux_action="block") >= 1
    assert prom.total(s, "llmux_guard_checks", llmux_guardrail="pii", llmux_direction="request") >= 1


def test_embeddings_input_is_masked(g, mock):
    mid = new_id()
    r = g.post("/v1/embeddings", {"model": "gpt-4o-mini", "input": [f"mail {EMAIL}", "plain"]},
               headers={"authorization": "Bearer sk-a", "x-mock-id": mid})
    assert r.status_code == 200, r.text
    assert EMAIL not in sent_text(mock, mid)


def test_a_body_the_guardrails_cannot_read_is_refused_not_let_through(g, mock):
    """Duplicate keys: the gateway and many JSON parsers take the last value, the guardrails'
    strict walk cannot read the body. It must be refused, never forwarded unscanned."""
    import httpx
    for body in (
        '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],'
        f'"messages":[{{"role":"user","content":"my card is {CARD}"}}]}}',
        '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi",'
        f'"content":"my card is {CARD}"}}]}}',
    ):
        mid = new_id()
        r = httpx.post(f"{g.url}/v1/chat/completions", content=body,
                       headers={"authorization": "Bearer sk-a", "content-type": "application/json",
                                "x-mock-id": mid})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "guardrail_unreadable" and err["param"] == "pii", (body, r.text)
        assert "4111" not in r.text
        assert mock.requests(mid) == []


# The Responses API (`/v1/responses`, here to the Anthropic-protocol deployment: the answer is the
# gateway's translation into a `response` object and the Responses semantic events).

def test_a_responses_answer_with_a_card_is_blocked_plain_and_streamed(g, mock):
    with pytest.raises(openai.BadRequestError) as e:
        oai(g).responses.create(model="claude", input="hi",
                                extra_headers={"x-mock-text": f"your card is {CARD}, keep it"})
    assert e.value.body["code"] == "guardrail_blocked" and e.value.body["param"] == "pii.card"
    assert "4111" not in json.dumps(e.value.body)
    stream = oai(g).responses.create(
        model="claude", input="hi", stream=True,
        extra_headers={"x-mock-text": f"your card is {CARD} and more words after it",
                       "x-mock-deltas": "2"})
    events = list(stream)
    types = [ev.type for ev in events]
    assert types[-2:] == ["error", "response.failed"], types
    assert events[-2].code == "guardrail_blocked" and events[-2].param == "pii.card"
    assert events[-1].response.status == "failed"
    assert events[-1].response.error.code == "guardrail_blocked"
    dump = json.dumps([ev.model_dump() for ev in events])
    assert "4111" not in dump and "more words" not in dump
    assert "response.completed" not in types and "response.output_text.done" not in types
    assert [ev.sequence_number for ev in events] == list(range(len(events)))


def test_a_responses_answer_is_restored_plain(g, mock):
    mid = new_id()
    r = oai(g).responses.create(
        model="claude", input=f"Email {EMAIL} the report",
        extra_headers={"x-mock-id": mid, "x-mock-text": "Done: I wrote to <EMAIL_1>, cc bob@corp.example.org."})
    assert EMAIL not in sent_text(mock, mid) and "<EMAIL_1>" in sent_text(mock, mid)
    assert r.output_text == f"Done: I wrote to {EMAIL}, cc <EMAIL_2>."


@pytest.mark.parametrize("words", ["1", "2", "3"])
def test_a_responses_stream_is_restored_and_masked_in_every_event(g, mock, words):
    mid = new_id()
    stream = oai(g).responses.create(
        model="claude", input=f"Email {EMAIL} the report", stream=True,
        extra_headers={"x-mock-id": mid, "x-mock-deltas": words,
                       "x-mock-text": "Sent to <EMAIL_1> as asked, cc bob@corp.example.org, bye."})
    events = list(stream)
    want = f"Sent to {EMAIL} as asked, cc <EMAIL_2>, bye."
    deltas = "".join(ev.delta for ev in events if ev.type == "response.output_text.delta")
    assert deltas == want
    [done] = [ev.text for ev in events if ev.type == "response.output_text.done"]
    [part] = [ev.part.text for ev in events if ev.type == "response.content_part.done"]
    [item] = [ev.item.content[0].text for ev in events
              if ev.type == "response.output_item.done" and ev.item.type == "message"]
    assert events[-1].type == "response.completed"
    assert done == part == item == events[-1].response.output_text == want
    assert [ev.sequence_number for ev in events] == list(range(len(events)))
    assert "bob@corp" not in json.dumps([ev.model_dump() for ev in events])
    assert EMAIL not in sent_text(mock, mid)
    # The SDK's stream helper checks each event against the response it builds.
    with oai(g).responses.stream(
            model="claude", input=f"Email {EMAIL} the report",
            extra_headers={"x-mock-deltas": words,
                           "x-mock-text": "Sent to <EMAIL_1> as asked, cc bob@corp.example.org, bye."}) as s:
        text = "".join(ev.delta for ev in s if ev.type == "response.output_text.delta")
        final = s.get_final_response()
    assert text == final.output_text == want
