"""The Grafana dashboard in examples/ only queries metrics and labels the filter really exports:
checked against a real scrape of /stats/prometheus after traffic that touches every series."""
import json
import os
import re

import prom
from harness import ROOT
from test_observability import USER, Collector, config, poll

DASHBOARD = os.path.join(ROOT, "examples", "grafana-llmux.json")


def queries(dash):
    out = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        q = var.get("query")
        if isinstance(q, dict):
            out.append(q["query"])
    return out


def router_traffic(make_gateway):
    bad = lambda status: {"type": "openai", "cluster": "mock", "headers": {"x-mock-status": str(status)}}
    g = make_gateway({
        "providers": {"ok": {"type": "openai", "cluster": "mock"}, "limited": bad(429),
                      "down": bad(500), "down2": bad(503),
                      "breaks": {"type": "anthropic", "cluster": "mock",
                                 "headers": {"x-mock-stream-error-after": "3"}}},
        "router": {"attempts_cluster": "llmux_attempts"},
        "identity": {"source": "header", "headers": {"user": "x-user-id"}, "limits": {"rpm": 1}},
        "models": [
            {"name": "failover", "strategy": "priority", "deployments": [
                {"provider": "limited", "model": "gpt-4o-mini", "name": "limited", "priority": 0},
                {"provider": "ok", "model": "gpt-4o-mini", "name": "ok", "priority": 1}]},
            {"name": "broken", "deployments": [{"provider": "down", "name": "down"},
                                               {"provider": "down2", "name": "down2"}]},
            {"name": "recover", "strategy": "priority", "deployments": [
                {"provider": "breaks", "model": "claude-3-5-haiku-20241022", "name": "breaks", "priority": 0},
                {"provider": "ok", "model": "gpt-4o-mini", "name": "fallback", "priority": 1}]},
        ],
    })
    def post(model, user, stream=False):
        return g.post("/v1/chat/completions", {"model": model, "messages": USER, "stream": stream},
                      headers={"x-user-id": user})
    assert post("failover", "u1").headers["x-llmux-attempts"] == "2"
    assert post("broken", "u2").status_code >= 500
    assert post("recover", "u3", stream=True).status_code == 200
    assert post("failover", "u1").status_code == 429  # u1's rpm is 1
    return poll(lambda: (lambda t: t if "llmux_router_midstream_recoveries" in t
                         and "llmux_ratelimit_rejected_requests" in t else None)(g.prometheus()),
                "router and rate-limit series in the scrape")


def test_every_dashboard_query_names_an_exported_metric(make_gateway):
    collector = Collector()
    try:
        g = make_gateway(config(export={"format": "webhook", "cluster": "collector", "batch_size": 1}),
                         extra_clusters=collector.cluster())
        for model in ("gpt-4o-mini", "claude-3-5-haiku"):
            for stream in (False, True):
                assert g.post("/v1/chat/completions", {"model": model, "messages": USER, "stream": stream},
                              headers={"x-mock-cache-read": "1"}).status_code == 200
        poll(lambda: collector.batches, "an exported batch")
        text = poll(lambda: (lambda t: t if "llmux_gen_ai_server_time_per_output_token" in t else None)(
            g.prometheus()), "histograms in the scrape")
    finally:
        collector.stop()

    # Router and rate-limit series come from a second gateway that fails over, cools down,
    # recovers a broken stream and rejects over a limit.
    text += "\n" + router_traffic(make_gateway)

    exported = {n for n in prom.names(text) if n.startswith("llmux_")}
    labels = {"le"}
    for name, lbls, _ in prom.parse(text):
        if name.startswith("llmux_"):
            labels |= set(lbls)

    dash = json.load(open(DASHBOARD))
    qs = queries(dash)
    assert len(qs) >= 12
    used = set()
    for q in qs:
        # Metric names: what is left once label matchers and `by (...)` groupings are removed.
        bare = re.sub(r"\{[^}]*\}|\bby \([^)]*\)|label_values\(\w+, \w+\)", " ", q)
        bare += " " + " ".join(re.findall(r"label_values\((\w+),", q))
        for metric in re.findall(r"\bllmux_[a-z0-9_]+", bare):
            base = re.sub(r"_(bucket|sum|count)$", "", metric)
            name = base if base in exported and base != metric else metric
            assert name in exported, f"{metric} in {q!r} is not in /stats/prometheus"
            used.add(name)
        for group in re.findall(r"\bby \(([^)]*)\)", q):
            for label in group.split(","):
                assert label.strip() in labels, f"label {label.strip()} in {q!r}"
        for label in re.findall(r"[{,]\s*([a-z_]+)\s*=~?", q):
            assert label in labels, f"label {label} in {q!r}"
        for label in re.findall(r"label_values\(\w+, (\w+)\)", q):
            assert label in labels
    # And the dashboard shows every LLMux metric there is.
    assert used == exported, exported - used
