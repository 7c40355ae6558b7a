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
