"""Turns bench/run.py's results into the Markdown report and the PNG chart."""

GW_NAMES = {"envoy": "Envoy (no filter)", "llmux": "Envoy + LLMux", "litellm": "LiteLLM", "portkey": "Portkey"}


def _runs(res, mode=None, sid=None, c=None):
    return [r for r in res["runs"] if (mode is None or r["mode"] == mode)
            and (sid is None or r["id"] == sid) and (c is None or r["c"] == c)]


def run(res, sid, mode, c):
    rs = _runs(res, mode, sid, c)
    return rs[0] if rs else None


def _f(x, nd=0):
    if x is None:
        return "–"
    return f"{x:,.{nd}f}"


def targets(res):
    """(target, measured, holds) rows; numbers from this run only."""
    out = []

    def ratio(a, b, key="rps"):
        return a[key] / b[key] if a and b and b[key] else None

    s1, s2, s3, r1 = (run(res, s, "zero", 16) for s in ("s1", "s2", "s3", "r1"))
    r2, r3, rr = ratio(s2, s1), ratio(s3, s1), ratio(r1, s1)

    def cpu_ratio(a):
        # Requests/s each would reach with its core saturated: the inverse ratio of CPU per request.
        return f" (CPU-time ratio {s1['cpu_us_per_req'] / a['cpu_us_per_req']:.0%})" if a and s1 else ""

    ref_note = f"; the reference filter: {rr:.0%}{cpu_ratio(r1)}" if rr else ""
    out.append(("Scenario 2 ≥ 75% of plain Envoy's requests/s at c=16",
                (f"{r2:.0%}" if r2 else "–") + cpu_ratio(s2) + ref_note, r2 is not None and r2 >= 0.75))
    out.append(("Scenario 3 ≥ 65% of plain Envoy's requests/s at c=16", (f"{r3:.0%}" if r3 else "–") + cpu_ratio(s3),
                r3 is not None and r3 >= 0.65))
    for sid, fid in (("s2", "s1"), ("s3", "s1"), ("s3", "f3")):
        a, b = run(res, sid, "zero", 1), run(res, fid, "zero", 1)
        if a and b:
            d = a["p50_us"] - b["p50_us"]
            out.append((f"Scenario {sid[1]} added p50 at c=1 < 100 µs (vs {fid})", f"{d:.0f} µs", d < 100))
    # Throughput capacity is compared with the zero-latency mock; with a fixed provider latency
    # at low concurrency every gateway is bound by the mock's latency (see the peers table).
    for c in (1, 16, 64):
        a, b = run(res, "s2", "zero", c), run(res, "litellm", "zero", c)
        if a and b:
            rr = a["rps"] / b["rps"]
            out.append((f"≥ 10× LiteLLM's requests/s and lower p99 (c={c})",
                        f"{rr:.1f}×, p99 {a['p99_us']:,.0f} vs {b['p99_us']:,.0f} µs",
                        rr >= 10 and a["p99_us"] < b["p99_us"]))
    t = res.get("ttfb") or {}
    if t.get("floor") and t.get("llmux"):
        d = t["llmux"]["ttfb_p50_us"] - t["floor"]["ttfb_p50_us"]
        out.append(("Streaming added TTFB < 100 µs at p50", f"{d:.0f} µs", d < 100))
    for c in (1, 16, 64):
        a, b = run(res, "c1", "zero", c), run(res, "d1", "zero", c)
        if a and b:
            rr = a["rps"] / b["rps"]
            out.append((f"Exact cache hit within 15% of plain Envoy's direct_response requests/s (c={c})",
                        f"{rr:.0%}", rr >= 0.85))
    for c in (1, 16, 64):
        a, b = run(res, "g2", "zero", c), run(res, "s2", "zero", c)
        if a and b:
            d = a["cpu_us_per_req"] - b["cpu_us_per_req"]
            out.append((f"Local guardrails add ≤ 15 µs CPU per 1 KB request (c={c})", f"{d:+.1f} µs", d <= 15))
    m = res.get("memory") or {}
    full = m.get("cache_full")
    if full:
        out.append((f"Wasm VM memory within the cache's byte budget ({full['max_bytes']:,} bytes) when full",
                    f"{full['vm_before']:,} → {full['vm_after']:,} bytes after {full['requests']:,} distinct answers",
                    full["vm_after"] is not None and full["vm_before"] is not None
                    and full["vm_after"] - full["vm_before"] <= full["max_bytes"]))
    if m.get("before") and m.get("after"):
        b, a = m["before"]["vm_memory_bytes"], m["after"]["vm_memory_bytes"]
        out.append((f"Wasm VM memory flat after {m['requests']:,} requests", f"{b:,} → {a:,} bytes",
                    b is not None and a == b))
    return out


INSTRUCTION_ROWS = [
    ("s1", "Envoy, no filter (floor), OpenAI 1 KB", None),
    ("w1", "Envoy + a Wasm filter that does nothing", "s1"),
    ("r1", "Envoy + the issue's reference filter", "s1"),
    ("s2", "LLMux → OpenAI deployment, 1 KB", "s1"),
    ("s2fs", "LLMux → OpenAI, with `filter_state` on (access-log fields)", "s1"),
    ("d1", "Envoy, no filter, direct_response (a cache hit's floor)", None),
    ("c1", "LLMux response cache, exact hit, 1 KB", "d1"),
    ("c2", "LLMux response cache, semantic hit (embedding call + Chroma query)", "d1"),
    ("g2", "LLMux with every local guardrail detector, 1 KB", "s2"),
    ("s7", "LLMux → OpenAI, 200 KB text prompt", "s1"),
    ("g7", "LLMux with every local guardrail detector, 200 KB text prompt", "s7"),
    ("f3", "Envoy, no filter, the Anthropic request LLMux sends", None),
    ("s3", "LLMux → Anthropic (translated both ways), 1 KB", "f3"),
    ("f4", "Envoy, no filter, Anthropic SSE 200 deltas", None),
    ("s4", "LLMux streamed, 200 Anthropic deltas → OpenAI chunks", "f4"),
    ("f5", "Envoy, no filter, the 200 KB Anthropic image request", None),
    ("s5", "LLMux → Anthropic, 200 KB prompt (base64 image)", "f5"),
    ("f6", "Envoy, no filter, OpenAI SSE 200 deltas (the request LLMux sends)", None),
    ("s6", "LLMux streamed, OpenAI → OpenAI deployment, 200 deltas (usage counted)", "f6"),
]


def instruction_table(res):
    ins = res.get("instructions") or {}
    if not ins:
        return None
    ref = (ins.get("r1") or {}).get("instructions_per_request")
    L = ["| id | what | instructions / request | added over its floor | LLMux's added ÷ the reference filter's |",
         "|---|---|---:|---:|---:|"]
    for sid, title, fid in INSTRUCTION_ROWS:
        a = ins.get(sid)
        if not a:
            continue
        n = a["instructions_per_request"]
        f = (ins.get(fid) or {}).get("instructions_per_request") if fid else None
        added = f"{n - f:,}" if f else "–"
        vs_ref = "–"
        if f and ref and sid.startswith("s") and ins.get("s1"):
            ref_added = ref - ins["s1"]["instructions_per_request"]
            vs_ref = f"{(n - f) / ref_added:.2f}×" if ref_added > 0 else "–"
        L.append(f"| {sid} | {title} | {n:,} | {added} | {vs_ref} |")
    return "\n".join(L)


SPLIT_COLUMNS = [("envoy", "Envoy's code (C++, V8's runtime)"), ("wasm_jit", "the filter's Wasm (V8's compiled code)"),
                 ("libc", "libc (body copies)")]


def split_table(res):
    """Where each row's instructions are, by the code that ran them (`run.callgrind_split`)."""
    ins = res.get("instructions") or {}
    rows = [(sid, title) for sid, title, _ in INSTRUCTION_ROWS if (ins.get(sid) or {}).get("split_per_request")]
    if not rows:
        return None
    L = ["| id | " + " | ".join(t for _, t in SPLIT_COLUMNS) + " |",
         "|---|" + "---:|" * len(SPLIT_COLUMNS)]
    for sid, _ in rows:
        sp = ins[sid]["split_per_request"]
        L.append(f"| {sid} | " + " | ".join(f"{sp.get(k, 0):,}" for k, _ in SPLIT_COLUMNS) + " |")
    return "\n".join(L)


def per_chunk(res):
    a, b = run(res, "s4", "zero", 1), run(res, "f4", "zero", 1)
    if not (a and b):
        return None, None
    return (a["p50_us"] - b["p50_us"]) / 200, (a["cpu_us_per_req"] - b["cpu_us_per_req"]) / 200


def summary_table(res):
    """The compact table the README quotes."""
    lines = ["| scenario (zero-latency mock) | req/s c=16 | vs Envoy | p50 c=1 | added p50 c=1 | p99 c=64 | CPU/req c=16 | added CPU/req |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    s1 = run(res, "s1", "zero", 16)
    rows = [("s1", "1. Envoy, no filter (floor)", "s1"), ("w1", "Envoy + no-op Wasm filter", "s1"),
            ("r1", "Envoy + the issue's reference filter", "s1"),
            ("s2", "2. LLMux → OpenAI, 1 KB", "s1"),
            ("s3", "3. LLMux → Anthropic, 1 KB", "f3"), ("s4", "4. LLMux stream, 200 chunks", "f4"),
            ("s5", "5. LLMux → Anthropic, 200 KB image", "f5"),
            ("litellm", "6. LiteLLM → OpenAI, 1 KB", "s1"), ("portkey", "7. Portkey → OpenAI, 1 KB", "s1")]
    for sid, title, fid in rows:
        a16, a1, a64 = (run(res, sid, "zero", c) for c in (16, 1, 64))
        f1 = run(res, fid, "zero", 1)
        if not a16:
            continue
        f16 = run(res, fid, "zero", 16)
        added = "–" if sid == "s1" else f"{a1['p50_us'] - f1['p50_us']:,.0f} µs"
        added_cpu = "–" if sid == "s1" else f"{a16['cpu_us_per_req'] - f16['cpu_us_per_req']:,.1f} µs"
        vs = f"{a16['rps'] / s1['rps']:.0%}" if s1 else "–"
        lines.append(f"| {title} | {_f(a16['rps'])} | {vs} | {_f(a1['p50_us'])} µs | {added} | "
                     f"{_f(a64['p99_us'])} µs | {_f(a16['cpu_us_per_req'], 1)} µs | {added_cpu} |")
    lines.append("")
    lines.append("`added` is over the plain-Envoy run that sends the mock the same upstream request "
                 "(`s1` for 2, 6, 7; `f3`, `f4`, `f5` for 3, 4, 5); `vs Envoy` is against `s1`. The no-op Wasm "
                 "filter row is the fixed cost of any Proxy-Wasm filter in this Envoy (bench/noop-filter); the "
                 "reference filter (bench/reference-filter) is the issue's yardstick: it buffers the body, parses "
                 "it with `serde_json::Value`, rewrites the model, writes the body back and sets a routing header.")
    return "\n".join(lines)


def markdown(res, png_name):
    m = res["machine"]
    L = []
    L.append(f"# LLMux benchmarks, {res['date']}{' (BENCH_QUICK smoke run)' if res['quick'] else ''}\n")
    L.append("Reproduce: `make bench` (about 10 minutes; `BENCH_QUICK=1 make bench` for a smoke run). "
             "Every number below comes from this one run.\n")
    L.append(f"**Machine:** {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, Linux {m['kernel']}. "
             f"Load average at start {tuple(round(x, 2) for x in m['loadavg_start'])}, at end "
             f"{tuple(round(x, 2) for x in m.get('loadavg_end', ()))} (other work on the machine shows up as noise).\n")
    v = res["versions"]
    L.append(f"**Software:** Envoy {v['envoy']}, V8 runtime, `--concurrency 1`; LLMux `.wasm` "
             f"{res['wasm_bytes']:,} bytes; LiteLLM {v['litellm']} (1 worker, `LITELLM_LOG=ERROR`, "
             f"`json_logs`, master key, local cost map); Portkey gateway {v['portkey']} (`--headless`); "
             f"load generator oha {v['oha']}.\n")
    L.append("**Placement:** core 1 runs the gateway under test (Envoy's one worker, LiteLLM's worker, "
             "Portkey's node process), pinned with `taskset`; core 0 runs the load generator **and** "
             "the mock provider (`--threads 1 --record 0`). Every gateway gets the same core. The mock's "
             "CPU per request is measured separately (`mock CPU`); when the gateway's core is not "
             "saturated (`gw util` < 1), core 0 is the bottleneck and requests/s understates the "
             "gateway. CPU/req is utime+stime of the gateway's processes from /proc over the run, "
             "divided by the requests (at low request rates, c=1 and the 20 ms mode, it also carries the "
             "gateway's idle background work and per-wakeup costs, so compare it at c=16/64); latencies "
             "are oha's, over keep-alive connections.\n")
    L.append("**Floors:** `s1` is plain Envoy proxying scenario 2's request. `f3`, `f4`, `f5` are plain "
             "Envoy sending the mock exactly the Anthropic request LLMux produces for scenarios 3, 4, 5 "
             "(recorded from LLMux at the start of the run), so `added` latency is LLMux's own cost.\n")

    if res.get("reps", 1) > 1:
        L.append(f"Zero-latency numbers are the best of {res['reps']} interleaved repetitions (every "
                 "repetition is in the JSON, `all_runs`); other work on the machine only slows runs down.\n")
    L.append("## Summary\n")
    L.append(summary_table(res) + "\n")
    L.append(f"![chart]({png_name})\n")

    L.append("## Targets\n")
    L.append("| target | measured | holds |\n|---|---|---|")
    for t, meas, ok in targets(res):
        L.append(f"| {t} | {meas} | {'yes' if ok else '**no**'} |")
    L.append("")

    for mode, title in (("zero", "Zero-latency mock"), ("lat", f"Mock with {res['latency_ms']} ms fixed latency")):
        L.append(f"## {title}\n")
        L.append("| id | scenario | c | requests | ok | req/s | p50 µs | p90 µs | p99 µs | added p50 µs | req/s vs s1 | gateway CPU µs/req | gw util | mock CPU µs/req |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in _runs(res, mode):
            f = run(res, r["floor"], mode, r["c"]) if r["floor"] else None
            s1 = run(res, "s1", mode, r["c"])
            added = _f(r["p50_us"] - f["p50_us"]) if f else "–"
            vs = f"{r['rps'] / s1['rps']:.0%}" if s1 else "–"
            L.append(f"| {r['id']} | {r['title']} | {r['c']} | {r['n']:,} | {r['ok']:,} | {_f(r['rps'])} | "
                     f"{_f(r['p50_us'])} | {_f(r['p90_us'])} | {_f(r['p99_us'])} | {added} | {vs} | "
                     f"{_f(r['cpu_us_per_req'], 1)} | {_f(r['gateway_cpu_util'], 2)} | {_f(r['mock_cpu_us_per_req'], 1)} |")
        L.append("")

    L.append("## Versus the peers (scenario 2's request: OpenAI client → OpenAI-protocol deployment)\n")
    L.append("| mode | c | LLMux req/s | LiteLLM req/s | Portkey req/s | LLMux ÷ LiteLLM | LLMux ÷ Portkey | p99 LLMux / LiteLLM / Portkey µs | CPU µs/req LLMux / LiteLLM / Portkey |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for mode in ("zero", "lat"):
        for c in (1, 16, 64):
            a, l, p = run(res, "s2", mode, c), run(res, "litellm", mode, c), run(res, "portkey", mode, c)
            if not a:
                continue
            L.append(f"| {'zero' if mode == 'zero' else str(res['latency_ms']) + ' ms'} | {c} | {_f(a['rps'])} | "
                     f"{_f(l and l['rps'])} | {_f(p and p['rps'])} | "
                     f"{(a['rps'] / l['rps']) if l else 0:.1f}× | {(a['rps'] / p['rps']) if p else 0:.1f}× | "
                     f"{_f(a['p99_us'])} / {_f(l and l['p99_us'])} / {_f(p and p['p99_us'])} | "
                     f"{_f(a['cpu_us_per_req'], 1)} / {_f(l and l['cpu_us_per_req'], 1)} / {_f(p and p['cpu_us_per_req'], 1)} |")
    if res.get("litellm_overhead_header_ms_p50") is not None:
        L.append(f"\nLiteLLM's own `x-litellm-overhead-duration-ms` header, median of 50 sequential "
                 f"requests: **{res['litellm_overhead_header_ms_p50']:.2f} ms**.")
    L.append("")

    t = res.get("ttfb") or {}
    if t.get("floor"):
        fl, lx = t["floor"], t["llmux"]
        L.append("## Streaming\n")
        L.append(f"Time to first byte: one connection, {lx['n']:,} sequential requests; the mock sends the "
                 f"Anthropic stream in two frames 5 ms apart; the first ({t['first_frame_bytes']} bytes) holds "
                 f"`message_start`, `content_block_start` and the first text delta, so the first byte the "
                 f"client sees is LLMux's first translated chunk (the role chunk from `message_start`) or, "
                 f"through plain Envoy (`f4`), the first frame itself. Measured from a raw socket, so it "
                 f"includes the request side (LLMux reads and translates the request first).\n")
        L.append("| | TTFB p50 µs | p90 µs | p99 µs |\n|---|---:|---:|---:|")
        L.append(f"| Envoy, no filter (Anthropic SSE as is) | {_f(fl['ttfb_p50_us'])} | {_f(fl['ttfb_p90_us'])} | {_f(fl['ttfb_p99_us'])} |")
        L.append(f"| Envoy + LLMux (translated to OpenAI chunks) | {_f(lx['ttfb_p50_us'])} | {_f(lx['ttfb_p90_us'])} | {_f(lx['ttfb_p99_us'])} |")
        L.append(f"| **added** | **{_f(lx['ttfb_p50_us'] - fl['ttfb_p50_us'])}** | {_f(lx['ttfb_p90_us'] - fl['ttfb_p90_us'])} | {_f(lx['ttfb_p99_us'] - fl['ttfb_p99_us'])} |")
        rf = t.get("reference")
        if rf:
            L.append(f"| Envoy + the issue's reference filter (the Anthropic request, not translated), added | "
                     f"{_f(rf['ttfb_p50_us'] - fl['ttfb_p50_us'])} | {_f(rf['ttfb_p90_us'] - fl['ttfb_p90_us'])} | "
                     f"{_f(rf['ttfb_p99_us'] - fl['ttfb_p99_us'])} |")
        if t.get("rounds"):
            L.append(f"\nMedian of {len(t['rounds']['llmux'])} interleaved rounds (each round in the JSON, "
                     "`ttfb.rounds`). Each request here comes ~7 ms after the last, so every filter runs "
                     "with cold caches: the reference filter's row shows what buffering and parsing a "
                     "request costs in this test by itself.")
        lat, cpu = per_chunk(res)
        if lat is not None:
            L.append(f"\nPer-chunk translation cost (scenario 4 vs `f4`, {t['stream_bytes']:,}-byte Anthropic "
                     f"stream of 200 text deltas, c=1): **{lat:.2f} µs** of added p50 latency per chunk, "
                     f"**{cpu:.2f} µs** of added Envoy CPU per chunk.")
        L.append("")

    mem = res.get("memory") or {}
    it = instruction_table(res)
    if it:
        L.append("## Instructions per request (callgrind)\n")
        L.append("Envoy run under `valgrind --tool=callgrind` (same config, `--concurrency 1`); after a "
                 "warm-up, requests at c=4 are counted: every user-space instruction of every Envoy thread "
                 "(the Wasm code V8 compiled included; the kernel's socket work is not). Unlike time, this "
                 "does not move with other work on the machine (repeat runs agree to a fraction of a "
                 "percent), so it is the number to judge a change by. It is not a requests/s ratio: the "
                 "kernel's share of a request, about a quarter of plain Envoy's CPU time here, is the same "
                 "for every row and is left out.\n")
        L.append(it + "\n")
        st = split_table(res)
        if st:
            L.append("The same counts by the code that ran them, per request (V8's compiled code is told "
                     "apart by its address, far above 4 GiB; a guide, not an exact attribution). What a "
                     "filter adds in Envoy's column is Envoy's side of its host calls and callbacks:\n")
            L.append(st + "\n")
    L.append("## Memory\n")
    if mem.get("before"):
        b, a = mem["before"], mem["after"]
        L.append(f"Wasm VM linear memory (`wasmcustom.llmux.vm_memory_bytes`) before and after "
                 f"{mem['requests']:,} requests of scenario 3 at c=16 ({mem['ok']:,} answered 200): "
                 f"**{b['vm_memory_bytes']:,} → {a['vm_memory_bytes']:,} bytes**; Envoy RSS "
                 f"{b['envoy_rss_kb']:,} → {a['envoy_rss_kb']:,} KiB.")
    if mem.get("vm_memory_after_zero_latency_runs"):
        L.append(f"VM memory after all zero-latency runs (scenarios 2–5, including 200 KB bodies and "
                 f"streams), before the 20 ms runs: {mem['vm_memory_after_zero_latency_runs']:,} bytes.")
    L.append("\n| process | peak RSS (VmHWM, summed over its processes) |\n|---|---:|")
    for k, v in res["peak_rss_kb"].items():
        L.append(f"| {k} | {v / 1024:,.1f} MiB |")
    L.append("")

    cb = res.get("core_bench")
    if cb:
        L.append("## Native hot path (bench/core-bench, no proxy-wasm, no Envoy)\n")
        L.append("The same calls the Wasm glue makes, compiled natively and pinned to core 1; median of 7 "
                 "batches. Wasm under V8 is slower than native; the ratios between cases carry over.\n")
        L.append("| case | ns per call | what |\n|---|---:|---|")
        for c in cb["cases"]:
            L.append(f"| {c['case']} | {_f(c['ns_median'])} | {c['what']} |")
        L.append("")
    if res["notes"]:
        L.append("## Notes\n")
        L.extend(f"- {n}" for n in res["notes"])
    L.append(f"\nRun time: {res['duration_s']} s.")
    return "\n".join(L) + "\n"


def chart(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = [("s1", "Envoy\n(floor)"), ("s2", "LLMux\nOpenAI"), ("s3", "LLMux\nAnthropic"),
           ("s4", "LLMux\nstream 200"), ("s5", "LLMux\n200 KB"), ("litellm", "LiteLLM"), ("portkey", "Portkey")]
    ids = [(i, n) for i, n in ids if run(res, i, "zero", 16)]
    colors = ["#888888", "#1f77b4", "#1f77b4", "#1f77b4", "#1f77b4", "#d62728", "#ff7f0e"][: len(ids)]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax = axes[0]
    vals = [run(res, i, "zero", 16)["rps"] for i, _ in ids]
    ax.bar([n for _, n in ids], vals, color=colors)
    ax.set_yscale("log")
    ax.set_title("requests/s, c=16, zero-latency mock (log)")
    for x, v in enumerate(vals):
        ax.text(x, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax = axes[1]
    vals = [run(res, i, "zero", 1)["p50_us"] / 1000 for i, _ in ids]
    ax.bar([n for _, n in ids], vals, color=colors)
    ax.set_yscale("log")
    ax.set_title("p50 latency ms, c=1 (log)")
    for x, v in enumerate(vals):
        ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax = axes[2]
    for i, n, col in (("s1", "Envoy (floor)", "#888888"), ("s2", "LLMux → OpenAI", "#1f77b4"),
                      ("s3", "LLMux → Anthropic", "#2ca02c"), ("litellm", "LiteLLM", "#d62728"),
                      ("portkey", "Portkey", "#ff7f0e")):
        pts = [(c, run(res, i, "zero", c)["rps"]) for c in (1, 16, 64) if run(res, i, "zero", c)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=n, color=col)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks([1, 16, 64], ["1", "16", "64"])
    ax.set_xlabel("concurrency")
    ax.set_title("requests/s vs concurrency (log)")
    ax.legend(fontsize=8)
    fig.suptitle(f"LLMux benchmarks {res['date']} — gateway on 1 pinned core; same mock for all")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def readme_section(res, stem):
    """The README's "## Benchmarks" section for a results file (`python bench/report.py FILE.json`)."""
    m = res["machine"]
    held = [(t, meas) for t, meas, ok in targets(res) if ok]
    missed = [(t, meas) for t, meas, ok in targets(res) if not ok]
    L = ["## Benchmarks", "",
         "`make bench` runs LLMux, plain Envoy, LiteLLM and Portkey against the same mock provider, "
         "each gateway pinned to one core and driven by oha on the other (method: "
         "[bench/README.md](bench/README.md)). Latest run, "
         f"[bench/results/{stem}.md](bench/results/{stem}.md) ({res['date'][:10]}, {m['cores']}-core "
         f"{m['cpu']} VM shared with other builds, load average {m['loadavg_start'][0]:.2f} at the start):",
         "", summary_table(res), "",
         "Targets met: " + "; ".join(f"{t} ({meas})" for t, meas in held) + ".", "",
         "Not met yet: " + "; ".join(f"{t} ({meas})" for t, meas in missed) + ".", ""]
    it = instruction_table(res)
    if it:
        L += ["Instructions Envoy executes per request, counted by callgrind in the same run: unlike "
              "the timings above, repeat runs agree to a fraction of a percent, so this is the number "
              "to compare changes by (user space only; the kernel's share is the same for every row):",
              "", it, ""]
    return "\n".join(L)


if __name__ == "__main__":
    import json
    import os
    import sys

    path = sys.argv[1]
    with open(path) as f:
        print(readme_section(json.load(f), os.path.splitext(os.path.basename(path))[0]))
