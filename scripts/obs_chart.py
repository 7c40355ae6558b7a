#!/usr/bin/env python3
"""Load run + chart of LLMux's key series, drawn from scraped /stats/prometheus samples.

Starts the mock provider and Envoy with the built filter (as the e2e tests do; run `make build`
first), drives a mixed load (two models, two providers, streamed and not, some provider errors,
provider latency from the mock's x-mock-* headers) from several threads, scrapes
/stats/prometheus every second, and draws docs/observability-load.png:

    .venv/bin/pip install -r scripts/requirements-chart.txt
    .venv/bin/python scripts/obs_chart.py [--seconds 60] [--threads 8] [-o docs/observability-load.png]
"""
import argparse
import os
import random
import sys
import threading
import time

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import harness  # noqa: E402
import prom  # noqa: E402
from test_observability import config  # noqa: E402  (the models and prices the tests use)

MODELS = ["gpt-4o-mini", "claude-3-5-haiku"]
WORDS = ("the quick brown fox jumps over the lazy dog while the gateway counts every token "
         "it sees on the way back from the provider").split()


def worker(url, stop, seed, counts):
    rnd = random.Random(seed)
    with httpx.Client(timeout=30) as c:
        while not stop.is_set():
            model = rnd.choice(MODELS)
            stream = rnd.random() < 0.6
            n_words = rnd.randint(5, 40)
            headers = {
                "x-mock-text": " ".join(rnd.choice(WORDS) for _ in range(n_words)),
                "x-mock-latency-ms": str(rnd.randint(20, 250) if model == MODELS[0] else rnd.randint(60, 400)),
                "x-mock-cache-read": str(rnd.choice([0, 0, 8, 32])),
            }
            if stream:
                # Deltas in small frames with a gap: a token rate the TPOT histogram can see.
                headers.update({"x-mock-chunk-size": "160", "x-mock-chunk-delay-ms": str(rnd.randint(5, 25))})
            if rnd.random() < 0.04:
                headers["x-mock-status"] = rnd.choice(["503", "429"])
            prompt = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(5, 200)))
            body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]}
            try:
                r = c.post(url + "/v1/chat/completions", json=body, headers=headers)
                counts[r.status_code // 100] = counts.get(r.status_code // 100, 0) + 1
            except httpx.HTTPError:
                counts["error"] = counts.get("error", 0) + 1


def quantile_series(snaps, times, name, model, q, window=5):
    """q-quantile of `name` over a sliding window of scrapes, from cumulative bucket deltas."""
    out_t, out_v = [], []
    for i in range(window, len(snaps)):
        def buckets(s):
            b = {}
            for n, l, v in s:
                if n == name + "_bucket" and l.get("gen_ai_request_model") == model:
                    le = float("inf") if l["le"] == "+Inf" else float(l["le"])
                    b[le] = b.get(le, 0) + v
            return b
        now, before = buckets(snaps[i]), buckets(snaps[i - window])
        les = sorted(now)
        deltas = [now[le] - before.get(le, 0) for le in les]
        if not deltas or deltas[-1] <= 0:
            continue
        target = q * deltas[-1]
        prev_le, prev_c = 0.0, 0.0
        for le, c in zip(les, deltas):
            if c >= target:
                if le == float("inf"):
                    value = prev_le
                else:  # linear inside the bucket, as Prometheus' histogram_quantile does
                    value = prev_le + (le - prev_le) * ((target - prev_c) / max(c - prev_c, 1e-9))
                out_t.append(times[i])
                out_v.append(value)
                break
            prev_le, prev_c = le, c
    return out_t, out_v


def rate_series(snaps, times, name, window=5, **labels):
    totals = [prom.total(s, name, **labels) for s in snaps]
    ts, vs = [], []
    for i in range(window, len(snaps)):
        dt = times[i] - times[i - window]
        ts.append(times[i])
        vs.append((totals[i] - totals[i - window]) / dt if dt > 0 else 0)
    return ts, vs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("-o", "--output", default=os.path.join(ROOT, "docs", "observability-load.png"))
    a = ap.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log_dir = harness.tmpdir("llmux-chart-")
    mock = harness.Mock(log_dir, args=("--threads", "4", "--record", "0"))
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    gw = harness.Gateway(mock, log_dir, llmux_config=config(), env=env, concurrency=2)
    stop = threading.Event()
    counts = {}
    threads = [threading.Thread(target=worker, args=(gw.url, stop, i, counts), daemon=True)
               for i in range(a.threads)]
    snaps, times = [], []
    t0 = time.monotonic()
    try:
        for t in threads:
            t.start()
        next_scrape = t0
        while time.monotonic() - t0 < a.seconds:
            snaps.append(prom.parse(gw.prometheus()))
            times.append(time.monotonic() - t0)
            next_scrape += 1.0
            time.sleep(max(0.0, next_scrape - time.monotonic()))  # the scrape period
        stop.set()
        for t in threads:
            t.join(timeout=35)
        time.sleep(1.5)  # one more stats flush, so the last histogram samples are merged
        snaps.append(prom.parse(gw.prometheus()))
        times.append(time.monotonic() - t0)
    finally:
        stop.set()
        gw.stop()
        mock.stop()

    last = snaps[-1]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    fig.suptitle(f"LLMux under load: {a.threads} clients, {a.seconds} s, mock providers "
                 f"(samples from /stats/prometheus every 1 s)", fontsize=12)

    ax = axes[0][0]
    for model in MODELS:
        for cls in ("2xx", "4xx", "5xx"):
            ts, vs = rate_series(snaps, times, "llmux_requests", gen_ai_request_model=model,
                                 llmux_status_class=cls)
            if any(vs):
                ax.plot(ts, vs, label=f"{model} {cls}", linestyle="-" if cls == "2xx" else ":")
    ax.set_title("llmux_requests: rate (req/s, 5 s window)")
    ax.set_xlabel("s")
    ax.legend(fontsize=8)

    ax = axes[0][1]
    for tt in ("input", "output", "cached_input", "cache_creation"):
        ts, vs = rate_series(snaps, times, "llmux_gen_ai_client_token_usage", gen_ai_token_type=tt)
        if any(vs):
            ax.plot(ts, vs, label=tt)
    ax.set_title("llmux_gen_ai_client_token_usage: rate by gen_ai_token_type (tokens/s)")
    ax.set_xlabel("s")
    ax.legend(fontsize=8)

    ax = axes[1][0]
    for model in MODELS:
        series = [prom.total(s, "llmux_cost_nanousd", gen_ai_request_model=model) / 1e9 for s in snaps]
        ax.plot(times, series, label=model)
    ax.set_title("llmux_cost_nanousd: cumulative cost (USD)")
    ax.set_xlabel("s")
    ax.legend(fontsize=8)

    ax = axes[1][1]
    for model, color in zip(MODELS, ("tab:blue", "tab:orange")):
        for metric, q, style, label in (
                ("llmux_gen_ai_server_time_to_first_token", 0.5, "-", "TTFT p50"),
                ("llmux_gen_ai_server_time_to_first_token", 0.95, "--", "TTFT p95"),
                ("llmux_gen_ai_server_request_duration", 0.95, ":", "duration p95")):
            ts, vs = quantile_series(snaps, times, metric, model, q)
            ax.plot(ts, vs, style, color=color, label=f"{model} {label}")
    ax.set_title("latency from histogram buckets (ms, 5 s window)")
    ax.set_xlabel("s")
    ax.legend(fontsize=7)

    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    fig.savefig(a.output, dpi=90)
    req = prom.total(last, "llmux_requests")
    print(f"{a.output}: {int(req)} requests counted by LLMux; client saw {counts}; "
          f"tokens {int(prom.total(last, 'llmux_gen_ai_client_token_usage', gen_ai_token_type='input'))} in / "
          f"{int(prom.total(last, 'llmux_gen_ai_client_token_usage', gen_ai_token_type='output'))} out; "
          f"cost ${prom.total(last, 'llmux_cost_nanousd') / 1e9:.6f}")


if __name__ == "__main__":
    main()
