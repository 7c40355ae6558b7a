"""Observability end to end: metrics scraped from /stats/prometheus after known traffic, the JSON
access log, and the export of usage records to a local HTTP collector in each format."""
import http.server
import json
import threading
import time

import pytest

import prom
from harness import free_port, new_id, static_cluster

USER = [{"role": "user", "content": "Hello there"}]

PRICES = {
    # USD per million tokens, chosen so every token costs a whole number of nano-USD.
    "openai": {"input_per_mtok": 0.15, "output_per_mtok": 0.6, "cached_input_per_mtok": 0.075},
    "anthropic": {"input_per_mtok": 0.8, "output_per_mtok": 4, "cached_input_per_mtok": 0.08,
                  "cache_creation_per_mtok": 1},
}


def config(**extra):
    return {
        "providers": {"openai": {"type": "openai", "cluster": "mock"},
                      "anthropic": {"type": "anthropic", "cluster": "mock"}},
        "models": [
            {"name": "gpt-4o-mini", "deployments": [
                {"provider": "openai", "model": "gpt-4o-mini", "price": PRICES["openai"]}]},
            {"name": "claude-3-5-haiku", "deployments": [
                {"provider": "anthropic", "model": "claude-3-5-haiku-20241022", "name": "claude.eu",
                 "price": PRICES["anthropic"]}]},
            {"name": "unpriced", "deployments": [{"provider": "openai", "model": "ft:private-model"}]},
        ],
        **extra,
    }


def poll(fn, what, timeout=15):
    """fn() until it returns something truthy; histograms and logs arrive on Envoy's flushes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)  # polling with a deadline, not waiting out a race
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def compact(body):
    return json.dumps(body, separators=(",", ":"))


def stream_usage(text):
    """The usage chunk of an OpenAI-format SSE body (None when there is none)."""
    usage = None
    for line in text.splitlines():
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
    return usage


class Expect:
    """What the metrics must show, summed from the usage each response reported."""

    def __init__(self):
        self.requests = {}
        self.tokens = {}
        self.cost = {}

    def add(self, model, stream, status, usage=None):
        key = (model, stream, status // 100)
        self.requests[key] = self.requests.get(key, 0) + 1
        if not usage:
            return
        details = usage.get("prompt_tokens_details") or {}
        kinds = {
            "input": usage["prompt_tokens"],
            "output": usage["completion_tokens"],
            "cached_input": details.get("cached_tokens", 0),
            "cache_creation": details.get("cache_write_tokens", 0),
        }
        for kind, n in kinds.items():
            self.tokens[(model, kind)] = self.tokens.get((model, kind), 0) + n
        price = PRICES["openai" if model == "gpt-4o-mini" else "anthropic"]
        nano = lambda k: round(price.get(k, price["input_per_mtok"]) * 1000)  # noqa: E731
        plain = kinds["input"] - kinds["cached_input"] - kinds["cache_creation"]
        cost = (plain * nano("input_per_mtok") + kinds["cached_input"] * nano("cached_input_per_mtok")
                + kinds["cache_creation"] * nano("cache_creation_per_mtok")
                + kinds["output"] * nano("output_per_mtok"))
        self.cost[model] = self.cost.get(model, 0) + cost


def test_metrics_count_requests_tokens_and_cost_exactly(make_gateway):
    g = make_gateway(config())
    exp = Expect()

    # OpenAI, not streamed, with cached input.
    for _ in range(2):
        r = g.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": USER},
                   headers={"x-mock-cache-read": "5"})
        assert r.status_code == 200
        exp.add("gpt-4o-mini", False, 200, r.json()["usage"])

    # OpenAI streamed: once asking for usage, once not. Both bodies reach the mock as the same
    # bytes (the gateway adds the same stream_options), so the provider reports the same usage,
    # and the stream that did not ask must be counted too.
    base = {"model": "gpt-4o-mini", "messages": USER, "stream": True}
    asked = g.post("/v1/chat/completions",
                   compact({**base, "stream_options": {"include_usage": True}}))
    silent = g.post("/v1/chat/completions", compact(base))
    usage = stream_usage(asked.text)
    assert usage and stream_usage(silent.text) is None
    exp.add("gpt-4o-mini", True, 200, usage)
    exp.add("gpt-4o-mini", True, 200, usage)

    # Anthropic, not streamed, with cache read and cache creation.
    r = g.post("/v1/chat/completions", {"model": "claude-3-5-haiku", "messages": USER},
               headers={"x-mock-cache-read": "3", "x-mock-cache-creation": "4"})
    assert r.status_code == 200
    exp.add("claude-3-5-haiku", False, 200, r.json()["usage"])

    # Anthropic streamed, with and without usage asked for (the Messages API body is the same).
    body = {"model": "claude-3-5-haiku", "messages": USER, "stream": True}
    asked = g.post("/v1/chat/completions", {**body, "stream_options": {"include_usage": True}},
                   headers={"x-mock-cache-read": "2"})
    silent = g.post("/v1/chat/completions", body, headers={"x-mock-cache-read": "2"})
    usage = stream_usage(asked.text)
    assert usage and stream_usage(silent.text) is None
    exp.add("claude-3-5-haiku", True, 200, usage)
    exp.add("claude-3-5-haiku", True, 200, usage)

    # A provider error (5xx, no usage) and a request the gateway rejects (unknown model).
    r = g.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": USER},
               headers={"x-mock-status": "503"})
    assert r.status_code == 503
    exp.add("gpt-4o-mini", False, 503)
    assert g.post("/v1/chat/completions", {"model": "gpt-5-ultra", "messages": USER}).status_code == 404

    # An unpriced deployment: tokens, no cost.
    r = g.post("/v1/chat/completions", {"model": "unpriced", "messages": USER})
    assert r.status_code == 200

    s = prom.parse(g.prometheus())
    for (model, stream, cls), n in exp.requests.items():
        got = prom.total(s, "llmux_requests", gen_ai_request_model=model,
                         llmux_stream=str(stream).lower(), llmux_status_class=f"{cls}xx")
        assert got == n, (model, stream, cls)
    deployment = {"gpt-4o-mini": "openai/gpt-4o-mini", "claude-3-5-haiku": "claude_eu"}
    provider = {"gpt-4o-mini": "openai", "claude-3-5-haiku": "anthropic"}
    assert prom.total(s, "llmux_requests", gen_ai_request_model="claude-3-5-haiku",
                      gen_ai_provider_name="anthropic", llmux_deployment="claude_eu",
                      gen_ai_response_model="claude-3-5-haiku-20241022") == 3
    assert prom.total(s, "llmux_requests", gen_ai_request_model="other", gen_ai_provider_name="none",
                      llmux_status_class="4xx") == 1
    assert prom.total(s, "llmux_requests", gen_ai_request_model="unpriced") == 1
    # No raw client string became a label.
    assert not [l for n, l, _ in s if "gpt-5-ultra" in json.dumps(l)]

    for (model, kind), n in exp.tokens.items():
        got = prom.total(s, "llmux_gen_ai_client_token_usage", gen_ai_request_model=model,
                         gen_ai_token_type=kind, gen_ai_provider_name=provider[model],
                         llmux_deployment=deployment[model])
        assert got == n, (model, kind)
    assert exp.tokens[("gpt-4o-mini", "cached_input")] == 10
    assert exp.tokens[("claude-3-5-haiku", "cache_creation")] == 4
    assert prom.total(s, "llmux_gen_ai_client_token_usage", gen_ai_request_model="unpriced",
                      gen_ai_token_type="input") > 0

    for model, nano in exp.cost.items():
        assert prom.total(s, "llmux_cost_nanousd", gen_ai_request_model=model) == nano, model
    assert prom.total(s, "llmux_cost_nanousd", gen_ai_request_model="unpriced") == 0

    # Histograms (merged on Envoy's stats flush): one duration sample per routed request, TTFT
    # and time per output token per successful stream.
    def histograms():
        s = prom.parse(g.prometheus())
        got = {
            "duration_gpt": prom.total(s, "llmux_gen_ai_server_request_duration_count",
                                       gen_ai_request_model="gpt-4o-mini"),
            "duration_claude": prom.total(s, "llmux_gen_ai_server_request_duration_count",
                                          gen_ai_request_model="claude-3-5-haiku"),
            "ttft_gpt": prom.total(s, "llmux_gen_ai_server_time_to_first_token_count",
                                   gen_ai_request_model="gpt-4o-mini"),
            "ttft_claude": prom.total(s, "llmux_gen_ai_server_time_to_first_token_count",
                                      gen_ai_request_model="claude-3-5-haiku"),
            "tpot_gpt": prom.total(s, "llmux_gen_ai_server_time_per_output_token_count",
                                   gen_ai_request_model="gpt-4o-mini"),
            "tpot_claude": prom.total(s, "llmux_gen_ai_server_time_per_output_token_count",
                                      gen_ai_request_model="claude-3-5-haiku"),
        }
        want = {"duration_gpt": 5, "duration_claude": 3, "ttft_gpt": 2, "ttft_claude": 2,
                "tpot_gpt": 2, "tpot_claude": 2}
        return got if got == want else None

    poll(histograms, "histogram sample counts")


def test_access_log_has_one_json_line_per_request(make_gateway):
    g = make_gateway(config())
    ids = {name: new_id() for name in ("plain", "stream", "rejected", "error")}
    g.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": USER},
           headers={"x-request-id": ids["plain"], "x-mock-cache-read": "1"})
    r = g.post("/v1/chat/completions", {"model": "claude-3-5-haiku", "messages": USER, "stream": True,
                                        "stream_options": {"include_usage": True}},
               headers={"x-request-id": ids["stream"]})
    usage = stream_usage(r.text)
    g.post("/v1/chat/completions", {"model": "nope", "messages": USER},
           headers={"x-request-id": ids["rejected"]})
    g.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": USER},
           headers={"x-request-id": ids["error"], "x-mock-status": "429"})

    lines = poll(lambda: (lambda ls: ls if len(ls) >= 4 else None)(g.access_log()), "4 log lines")
    assert len(lines) == 4
    by_id = {line["request_id"]: line for line in lines}

    plain = by_id[ids["plain"]]
    assert plain["status"] == 200 and plain["model"] == "gpt-4o-mini"
    assert plain["provider"] == "openai" and plain["deployment"] == "openai/gpt-4o-mini"
    assert plain["cached_input_tokens"] == "1" and int(plain["input_tokens"]) > 1
    assert plain["ttft_ms"] == "-" and plain["attempts"] == "1"
    assert plain["key_alias"] == "-" and plain["team"] == "-" and plain["cache"] == "-"
    cost = (int(plain["input_tokens"]) - 1) * 150 + 75 + int(plain["output_tokens"]) * 600
    assert plain["cost_usd"] == f"{cost / 1e9:.9f}"

    stream = by_id[ids["stream"]]
    assert stream["deployment"] == "claude.eu" and stream["upstream_model"] == "claude-3-5-haiku-20241022"
    assert int(stream["input_tokens"]) == usage["prompt_tokens"]
    assert int(stream["output_tokens"]) == usage["completion_tokens"]
    assert stream["ttft_ms"].isdigit()

    rejected = by_id[ids["rejected"]]
    assert rejected["status"] == 404 and rejected["model"] is None

    error = by_id[ids["error"]]
    assert error["status"] == 429 and error["model"] == "gpt-4o-mini" and error["input_tokens"] == "0"


class Collector:
    """A local HTTP collector: records every POST (path, headers, JSON body); answers `status`."""

    def __init__(self, status=200):
        self.batches = []
        self.status = status
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with outer.lock:
                    outer.batches.append({"path": self.path, "headers": dict(self.headers),
                                          "body": json.loads(body)})
                self.send_response(outer.status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def cluster(self):
        return static_cluster("collector", self.port)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.stop()


def records_of(fmt, body):
    if fmt == "webhook":
        return body["records"]
    if fmt == "otlp":
        logs = body["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
        return [{a["key"]: next(iter(a["value"].values())) for a in lr["attributes"]} for lr in logs]
    return [e["body"] for e in body["batch"] if e["type"] == "generation-create"]


@pytest.mark.parametrize("fmt", ["webhook", "otlp", "langfuse"])
def test_export_batches_usage_records(make_gateway, collector, fmt):
    g = make_gateway(config(export={
        "format": fmt, "cluster": "collector", "batch_size": 3, "flush_interval_ms": 1500,
        "headers": {"authorization": "Basic cGs6c2s="}}),
        extra_clusters=collector.cluster(), concurrency=1)
    rid = new_id()
    for i in range(6):
        g.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": USER},
               headers={"x-request-id": f"{rid}-{i}", "x-mock-cache-read": "2"})
    r = g.post("/v1/chat/completions", {"model": "claude-3-5-haiku", "messages": USER, "stream": True,
                                        "stream_options": {"include_usage": True}},
               headers={"x-request-id": f"{rid}-s"})
    usage = stream_usage(r.text)

    poll(lambda: len(collector.batches) >= 3, "three batches")
    batches = list(collector.batches)
    # Full batches leave on the next tick (the two may arrive in either order); the last record
    # after the flush interval.
    assert [len(records_of(fmt, b["body"])) for b in batches] == [3, 3, 1]
    want_path = {"webhook": "/", "otlp": "/v1/logs", "langfuse": "/api/public/ingestion"}[fmt]
    for b in batches:
        assert b["path"] == want_path
        assert b["headers"]["authorization"] == "Basic cGs6c2s="
        assert b["headers"]["content-type"] == "application/json"

    records = [r for b in batches for r in records_of(fmt, b["body"])]
    id_key = {"webhook": "request_id", "otlp": "llmux.request_id", "langfuse": "traceId"}[fmt]
    by_id = {r[id_key].removeprefix("llmux-"): r for r in records}
    assert sorted(by_id) == sorted([f"{rid}-{i}" for i in range(6)] + [f"{rid}-s"])
    first, last = by_id[f"{rid}-0"], by_id[f"{rid}-s"]
    assert records[-1] is last
    if fmt == "webhook":
        assert first["request_id"] == f"{rid}-0" and first["model"] == "gpt-4o-mini"
        assert first["provider"] == "openai" and first["cached_input_tokens"] == 2
        assert first["status"] == 200 and first["attempts"] == 1 and first["cost_usd"] > 0
        assert first["key_alias"] is None and "request_body" not in first
        assert last["stream"] is True and last["deployment"] == "claude.eu"
        assert last["input_tokens"] == usage["prompt_tokens"]
        assert last["output_tokens"] == usage["completion_tokens"]
        assert last["ttft_ms"] is not None
    elif fmt == "otlp":
        resource = batches[0]["body"]["resourceLogs"][0]["resource"]["attributes"][0]
        assert resource == {"key": "service.name", "value": {"stringValue": "llmux"}}
        assert first["llmux.request_id"] == f"{rid}-0"
        assert first["gen_ai.request.model"] == "gpt-4o-mini"
        assert first["gen_ai.usage.cache_read.input_tokens"] == "2"
        assert first["http.response.status_code"] == "200"
        assert last["gen_ai.provider.name"] == "anthropic"
        assert last["gen_ai.usage.output_tokens"] == str(usage["completion_tokens"])
        assert last["llmux.stream"] is True
    else:
        assert first["traceId"] == f"llmux-{rid}-0"
        assert first["model"] == "gpt-4o-mini" and first["usageDetails"]["cache_read_input_tokens"] == 2
        assert first["costDetails"]["total"] > 0 and first["level"] == "DEFAULT"
        assert last["usageDetails"]["input"] == usage["prompt_tokens"]
        assert "completionStartTime" in last
        traces = [e for b in batches for e in b["body"]["batch"] if e["type"] == "trace-create"]
        assert len(traces) == 7

    s = prom.parse(g.prometheus())
    assert prom.total(s, "llmux_export_records_sent") == 7
    assert prom.total(s, "llmux_export_batches") == 3
    assert prom.total(s, "llmux_export_records_failed") == 0


def test_export_failure_is_counted_never_fatal(make_gateway):
    failing = Collector(status=500)
    try:
        g = make_gateway(config(export={"format": "webhook", "cluster": "collector", "batch_size": 2,
                                        "flush_interval_ms": 100}),
                         extra_clusters=failing.cluster(), concurrency=1)
        for _ in range(4):
            assert g.post("/v1/chat/completions",
                          {"model": "gpt-4o-mini", "messages": USER}).status_code == 200
        poll(lambda: prom.total(prom.parse(g.prometheus()), "llmux_export_records_failed") == 4,
             "4 failed records")
        # A collector cluster that does not exist: every batch fails at dispatch, still no harm.
        g2 = make_gateway(config(export={"format": "otlp", "cluster": "nowhere",
                                         "flush_interval_ms": 100}), concurrency=1)
        assert g2.post("/v1/chat/completions",
                       {"model": "gpt-4o-mini", "messages": USER}).status_code == 200
        poll(lambda: prom.total(prom.parse(g2.prometheus()), "llmux_export_records_failed") == 1,
             "1 failed record")
        assert "panicked" not in g.process.log() + g2.process.log()
    finally:
        failing.stop()


def test_bodies_are_off_by_default_and_redacted_when_on(make_gateway, collector):
    secret = "My mail is jane.doe@example.com, key sk-proj-abcdefghijklmnopqrstuvwx, card 4111 1111 1111 1111"
    g = make_gateway(config(log_bodies=True, export={
        "format": "webhook", "cluster": "collector", "batch_size": 1}),
        extra_clusters=collector.cluster(), concurrency=1)
    r = g.post("/v1/chat/completions", {"model": "gpt-4o-mini",
                                        "messages": [{"role": "user", "content": secret}]},
               headers={"x-mock-text": "Call me at +1 415 555 2671"})
    assert r.status_code == 200
    poll(lambda: collector.batches, "one batch")
    [rec] = collector.batches[0]["body"]["records"]
    for raw in ("jane.doe@example.com", "sk-proj-abcdefghijklmnopqrstuvwx", "4111 1111 1111 1111",
                "415 555 2671"):
        assert raw not in json.dumps(rec)
    req = json.loads(rec["request_body"])
    assert req["messages"][0]["content"] == (
        "My mail is [REDACTED_EMAIL], key [REDACTED_API_KEY], card [REDACTED_CARD]")
    assert "Call me at [REDACTED_PHONE]" in rec["response_body"]


def test_unreachable_provider_counts_as_5xx_with_duration(make_gateway):
    extra = static_cluster("dead", free_port())  # nothing listens there
    g = make_gateway({"providers": {"gone": {"type": "openai", "cluster": "dead"}},
                      "models": [{"name": "m", "deployments": [{"provider": "gone"}]}]},
                     extra_clusters=extra)
    for stream in (False, True):
        assert g.post("/v1/chat/completions", {"model": "m", "messages": USER,
                                               "stream": stream}).status_code == 502
    s = prom.parse(g.prometheus())
    for stream in ("false", "true"):
        assert prom.total(s, "llmux_requests", gen_ai_request_model="m", llmux_deployment="gone/m",
                          llmux_status_class="5xx", llmux_stream=stream) == 1
    assert prom.total(s, "llmux_gen_ai_client_token_usage") == 0
    poll(lambda: prom.total(prom.parse(g.prometheus()), "llmux_gen_ai_server_request_duration_count",
                            gen_ai_request_model="m") == 2, "2 duration samples")
    # No stream succeeded: no time-to-first-token sample.
    assert prom.total(prom.parse(g.prometheus()), "llmux_gen_ai_server_time_to_first_token_count") == 0


@pytest.mark.parametrize("setting", [False, None], ids=["off", "default"])
def test_filter_state_is_off_unless_asked(make_gateway, setting):
    cfg = config()
    cfg["filter_state"] = setting  # None: not in the config at all (the default is off)
    g = make_gateway(cfg)
    rid = new_id()
    r = g.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": USER}, headers={"x-request-id": rid})
    assert r.status_code == 200
    line = poll(lambda: next((l for l in g.access_log() if l.get("request_id") == rid), None), "the log line")
    # The access log still has the request, but LLMux set no fields for it.
    assert line["status"] == 200
    assert line["model"] is None and line["input_tokens"] is None
