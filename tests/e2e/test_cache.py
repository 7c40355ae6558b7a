"""The response cache (docs/caching.md) through a real Envoy: exact hits and misses, TTL expiry,
eviction under the byte budget, tenant isolation, streams replayed and parsed by the official
SDKs, client cache-control, limits on hits, never caching errors or partial streams, and the
semantic cache on a real Chroma server (started here) — hits above and misses below the
threshold, isolation, and a store that is down or hangs."""
import hashlib
import socket
import threading
import time

import anthropic
import openai
import pytest

import prom
from harness import Chroma, new_id, static_cluster


def sha(k):
    return hashlib.sha256(k.encode()).hexdigest()


PROVIDERS = {"oai": {"type": "openai", "cluster": "mock", "api_key": "sk-provider"},
             "ant": {"type": "anthropic", "cluster": "mock", "api_key": "sk-ant"}}
MODELS = [{"name": "gpt-4o-mini", "deployments": [{"provider": "oai",
                                                  "price": {"input_per_mtok": 1, "output_per_mtok": 2}}]},
          {"name": "claude", "deployments": [{"provider": "ant", "model": "claude-3-5-haiku-20241022"}]},
          {"name": "embed", "deployments": [{"provider": "oai", "model": "semantic-embed"}]}]
KEYS = [{"key_sha256": sha("sk-a"), "alias": "a", "team": "t1"},
        {"key_sha256": sha("sk-r"), "alias": "r", "rpm": 3},
        {"key_sha256": sha("sk-b"), "alias": "b", "team": "t1"},
        {"key_sha256": sha("sk-c"), "alias": "c"},
        {"key_sha256": sha("sk-locked"), "alias": "locked"}]


def config(**cache):
    c = {"ttl_s": 300, "keys": {"locked": {"client_control": False}}}
    c.update(cache)
    return {"providers": PROVIDERS, "models": MODELS, "auth": {"keys": KEYS}, "cache": c}


@pytest.fixture(scope="module")
def g(mock, log_dir):
    from harness import Gateway
    gw = Gateway(mock, log_dir, name="envoy-cache", llmux_config=config())
    yield gw
    gw.stop()


def chat(g, content, key="sk-a", mid=None, extra=None, headers=None, **body):
    h = {"authorization": f"Bearer {key}", "x-mock-id": mid or new_id(), **(headers or {})}
    return g.post("/v1/chat/completions",
                  {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}],
                   **body}, headers=h)


def metric(g, name, **labels):
    return prom.total(prom.parse(g.prometheus()), name, **labels)


def test_exact_hit_serves_the_stored_answer_without_the_provider(g, mock):
    prompt = f"exact {new_id()}"
    m1 = new_id()
    r1 = chat(g, prompt, mid=m1, headers={"x-mock-text": "the first answer"})
    assert r1.status_code == 200, r1.text
    assert r1.headers["x-llmux-cache"] == "miss"
    assert len(mock.requests(m1)) == 1
    # Same request but for what does not change the answer (user, the mock's steering headers).
    m2 = new_id()
    r2 = chat(g, prompt, mid=m2, headers={"x-mock-text": "a different answer"}, user="someone")
    assert r2.status_code == 200, r2.text
    assert r2.headers["x-llmux-cache"] == "hit"
    assert mock.requests(m2) == [], "a hit never reaches the provider"
    a, b = r1.json(), r2.json()
    assert b["choices"][0]["message"]["content"] == "the first answer"
    assert b["llmux_cache"] == {"kind": "hit"}
    assert b["usage"] == a["usage"], "the answer's own usage is reported"
    # The official SDK parses the hit.
    client = openai.OpenAI(base_url=f"{g.url}/v1", api_key="sk-a", max_retries=0)
    c = client.chat.completions.create(model="gpt-4o-mini",
                                       messages=[{"role": "user", "content": prompt}])
    assert c.choices[0].message.content == "the first answer"
    # A different sampling parameter is another request.
    m3 = new_id()
    r3 = chat(g, prompt, mid=m3, temperature=0.3)
    assert r3.headers["x-llmux-cache"] == "miss" and len(mock.requests(m3)) == 1


def test_hits_are_in_the_access_log_metrics_and_charge_no_tokens(g):
    prompt = f"logged {new_id()}"
    before_hits = metric(g, "llmux_cache_lookups", llmux_cache_result="hit")
    before_saved = metric(g, "llmux_cache_saved_nanousd")
    rid1, rid2 = new_id(), new_id()
    assert chat(g, prompt, headers={"x-request-id": rid1}).headers["x-llmux-cache"] == "miss"
    assert chat(g, prompt, headers={"x-request-id": rid2}).headers["x-llmux-cache"] == "hit"
    deadline = time.monotonic() + 15
    lines = {}
    while time.monotonic() < deadline and len(lines) < 2:
        lines = {l["request_id"]: l for l in g.access_log() if l.get("request_id") in (rid1, rid2)}
        time.sleep(0.1)  # polling the access log file, flushed every 100 ms
    assert lines[rid1]["cache"] == "miss" and lines[rid2]["cache"] == "hit"
    assert int(lines[rid1]["input_tokens"]) > 0
    assert lines[rid2]["input_tokens"] == "0" and lines[rid2]["output_tokens"] == "0"
    assert metric(g, "llmux_cache_lookups", llmux_cache_result="hit") == before_hits + 1
    assert metric(g, "llmux_cache_saved_nanousd") > before_saved
    assert metric(g, "llmux_cache_stores") >= 1
    # Histograms reach the stats at Envoy's next flush.
    deadline = time.monotonic() + 15
    while metric(g, "llmux_cache_lookup_duration_us_count") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # polling for the stats flush
    assert metric(g, "llmux_cache_lookup_duration_us_count") >= 2


def test_tenants_never_share_answers(g, mock):
    prompt = f"tenant {new_id()}"
    assert chat(g, prompt, key="sk-a", headers={"x-mock-text": "for a"}).headers["x-llmux-cache"] == "miss"
    r = chat(g, prompt, key="sk-c", headers={"x-mock-text": "for c"})
    assert r.headers["x-llmux-cache"] == "miss"
    assert r.json()["choices"][0]["message"]["content"] == "for c"
    # Scope "key" (the default): the same team's other key is another tenant too.
    assert chat(g, prompt, key="sk-b").headers["x-llmux-cache"] == "miss"
    r = chat(g, prompt, key="sk-a")
    assert r.headers["x-llmux-cache"] == "hit"
    assert r.json()["choices"][0]["message"]["content"] == "for a"


def test_team_scope_shares_within_the_team_only(make_gateway):
    g = make_gateway(config(scope="team"))
    prompt = f"team {new_id()}"
    assert chat(g, prompt, key="sk-a").headers["x-llmux-cache"] == "miss"
    assert chat(g, prompt, key="sk-b").headers["x-llmux-cache"] == "hit"  # same team t1
    assert chat(g, prompt, key="sk-c").headers["x-llmux-cache"] == "miss"  # no team: its own


def test_streams_are_replayed_and_parsed_by_the_openai_sdk(g, mock):
    client = openai.OpenAI(base_url=f"{g.url}/v1", api_key="sk-c", max_retries=0)
    prompt = f"stream {new_id()}"
    msgs = [{"role": "user", "content": prompt}]

    def run(stream, mid):
        if not stream:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=msgs, extra_headers={"x-mock-id": mid})
            return raw.headers["x-llmux-cache"], raw.parse().choices[0].message.content, None
        with client.chat.completions.with_streaming_response.create(
                model="gpt-4o-mini", messages=msgs, stream=True,
                stream_options={"include_usage": True},
                extra_headers={"x-mock-id": mid}) as resp:
            text, usage = "", None
            for chunk in resp.parse():
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
                usage = chunk.usage or usage
            return resp.headers["x-llmux-cache"], text, usage

    m = new_id()
    kind, text, usage = run(True, m)
    assert kind == "miss" and len(mock.requests(m)) == 1 and text and usage
    # The streamed miss was stored whole: a streamed and a plain request both hit it.
    m = new_id()
    kind2, text2, usage2 = run(True, m)
    assert (kind2, text2) == ("hit", text) and mock.requests(m) == []
    assert usage2.prompt_tokens == usage.prompt_tokens
    assert usage2.completion_tokens == usage.completion_tokens
    m = new_id()
    assert run(False, m)[:2] == ("hit", text) and mock.requests(m) == []


def test_a_plain_miss_replays_as_an_anthropic_stream(g, mock):
    client = anthropic.Anthropic(base_url=g.url, api_key="sk-c", max_retries=0)
    prompt = f"messages {new_id()}"
    msgs = [{"role": "user", "content": prompt}]
    raw = client.messages.with_raw_response.create(model="claude", max_tokens=50, messages=msgs)
    assert raw.headers["x-llmux-cache"] == "miss"
    first = raw.parse()
    m = new_id()
    with client.messages.stream(model="claude", max_tokens=50, messages=msgs,
                                extra_headers={"x-mock-id": m}) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert mock.requests(m) == []
    assert text == first.content[0].text
    assert final.usage.output_tokens == first.usage.output_tokens
    assert final.stop_reason == first.stop_reason


def test_errors_and_partial_streams_are_never_cached(g, mock):
    prompt = f"error {new_id()}"
    r = chat(g, prompt, headers={"x-mock-status": "500"})
    assert r.status_code >= 500
    m = new_id()
    r = chat(g, prompt, mid=m)
    assert r.status_code == 200 and r.headers["x-llmux-cache"] == "miss"
    assert len(mock.requests(m)) == 1
    # A stream that breaks off is never stored.
    prompt = f"partial {new_id()}"
    with g.http.stream("POST", f"{g.url}/v1/chat/completions",
                       json={"model": "gpt-4o-mini", "stream": True,
                             "messages": [{"role": "user", "content": prompt}]},
                       headers={"authorization": "Bearer sk-a", "x-mock-drop-after": "2",
                                "x-mock-deltas": "10"}) as resp:
        body = b"".join(resp.iter_bytes())
    assert b"upstream_stream_error" in body, "the stream broke off (LLMux ends it with an error event)"
    m = new_id()
    r = chat(g, prompt, mid=m, stream=True)
    assert r.headers["x-llmux-cache"] == "miss" and len(mock.requests(m)) == 1


def test_client_cache_control_and_a_key_that_may_not_use_it(g, mock):
    prompt = f"control {new_id()}"
    # no-store: answered, not stored.
    assert chat(g, prompt, headers={"cache-control": "no-store"}).headers["x-llmux-cache"] == "miss"
    assert chat(g, prompt).headers["x-llmux-cache"] == "miss"
    assert chat(g, prompt).headers["x-llmux-cache"] == "hit"
    # no-cache: not looked up (a fresh answer), still stored.
    m = new_id()
    r = chat(g, prompt, mid=m, headers={"cache-control": "no-cache", "x-mock-text": "fresh"})
    assert r.headers["x-llmux-cache"] == "bypass" and len(mock.requests(m)) == 1
    assert chat(g, prompt).json()["choices"][0]["message"]["content"] == "fresh"
    # A key without client_control: its no-cache is ignored.
    p2 = f"locked {new_id()}"
    chat(g, p2, key="sk-locked")
    m = new_id()
    r = chat(g, p2, key="sk-locked", mid=m, headers={"cache-control": "no-cache"})
    assert r.headers["x-llmux-cache"] == "hit" and mock.requests(m) == []


def test_a_hit_still_counts_against_rpm(make_gateway):
    g = make_gateway(config())
    prompt = f"rpm {new_id()}"
    codes = [chat(g, prompt, key="sk-r").status_code for _ in range(4)]
    # Key r allows 3 requests a minute: the 4th is refused though it would be a hit.
    assert codes == [200, 200, 200, 429], codes


def test_ttl_expiry(make_gateway, mock):
    g = make_gateway(config(ttl_s=1))
    prompt = f"ttl {new_id()}"
    assert chat(g, prompt).headers["x-llmux-cache"] == "miss"
    assert chat(g, prompt).headers["x-llmux-cache"] == "hit"
    time.sleep(2.1)  # the entry's lifetime (1 s, whole seconds) passing is what is tested
    m = new_id()
    r = chat(g, prompt, mid=m)
    assert r.headers["x-llmux-cache"] == "miss" and len(mock.requests(m)) == 1


def test_eviction_keeps_the_store_within_its_byte_budget(make_gateway, mock):
    # 8 KiB of 4 KiB entries: two slots.
    g = make_gateway(config(max_bytes=8192, max_entry_bytes=4096))
    prompts = [f"evict {i} {new_id()}" for i in range(8)]
    for p in prompts:
        assert chat(g, p).headers["x-llmux-cache"] == "miss"
    assert metric(g, "llmux_cache_evictions") >= 6
    hits = sum(chat(g, p).headers["x-llmux-cache"] == "hit" for p in prompts)
    assert hits <= 2, "two slots hold at most two answers"
    # An answer larger than an entry may be is not stored.
    big = f"big {new_id()}"
    r = chat(g, big, headers={"x-mock-text": "x" * 6000})
    assert r.status_code == 200
    assert chat(g, big).headers["x-llmux-cache"] == "miss"
    assert metric(g, "llmux_cache_too_large") >= 1


# ---- semantic cache, on a real Chroma ---------------------------------------------------------

@pytest.fixture(scope="module")
def chroma(log_dir):
    c = Chroma(log_dir)
    yield c
    c.stop()


def semantic_config(port, **semantic):
    s = {"cluster": "chroma", "embedding_model": "embed", "threshold": 0.9,
         "max_temperature": 0.5, "timeout_ms": 2000}
    s.update(semantic)
    return config(semantic=s)


@pytest.fixture(scope="module")
def sg(mock, log_dir, chroma):
    from harness import Gateway
    gw = Gateway(mock, log_dir, name="envoy-semantic", llmux_config=semantic_config(chroma.port),
                 extra_clusters=static_cluster("chroma", chroma.port))
    yield gw
    gw.stop()


def stored(chroma, n, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if chroma.count() >= n:
            return True
        time.sleep(0.1)  # polling the store for the gateway's asynchronous upsert
    return False


def test_semantic_hit_above_and_miss_below_the_threshold(sg, chroma, mock):
    topic = new_id()
    q = f"What is the capital of France {topic}?"
    before = chroma.count()
    r = chat(sg, q, key="sk-c", temperature=0, headers={"x-mock-text": "Paris."})
    assert r.headers["x-llmux-cache"] == "miss"
    assert stored(chroma, before + 1), "the answer reaches the vector store"
    # Same words, other case and punctuation: an exact miss, a semantic hit.
    m = new_id()
    r = chat(sg, f"what is the capital of france {topic}", key="sk-c", mid=m, temperature=0)
    assert r.status_code == 200, r.text
    assert r.headers["x-llmux-cache"] == "semantic"
    assert float(r.headers["x-llmux-cache-similarity"]) >= 0.9
    assert mock.requests(m) == []
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "Paris."
    assert body["llmux_cache"]["kind"] == "semantic"
    # A different question: below the threshold, a miss.
    m = new_id()
    r = chat(sg, f"Tell me a joke about penguins {topic}", key="sk-c", mid=m, temperature=0)
    assert r.headers["x-llmux-cache"] == "miss" and len(mock.requests(m)) == 1
    # Another tenant, or another conversation around the same question: never matched.
    r = chat(sg, f"what is the capital of france {topic}", key="sk-a", temperature=0)
    assert r.headers["x-llmux-cache"] == "miss"
    r = sg.post("/v1/chat/completions", {
        "model": "gpt-4o-mini", "temperature": 0,
        "messages": [{"role": "system", "content": "Answer in French."},
                     {"role": "user", "content": f"what is the capital of france {topic}"}]},
        headers={"authorization": "Bearer sk-c"})
    assert r.headers["x-llmux-cache"] == "miss"
    assert metric(sg, "llmux_cache_lookups", llmux_cache_result="semantic") >= 1


def test_semantic_hit_streams_in_the_anthropic_api(sg, chroma, mock):
    topic = new_id()
    client = anthropic.Anthropic(base_url=sg.url, api_key="sk-c", max_retries=0)
    before = chroma.count()
    # (anthropic 2.12 takes no `temperature` argument: sent as an extra body field.)
    first = client.messages.create(model="claude", max_tokens=50, extra_body={"temperature": 0},
                                   messages=[{"role": "user", "content": f"Name a red fruit {topic}"}])
    assert stored(chroma, before + 1)
    m = new_id()
    with client.messages.stream(model="claude", max_tokens=50, extra_body={"temperature": 0},
                                messages=[{"role": "user", "content": f"name a red fruit {topic}!"}],
                                extra_headers={"x-mock-id": m}) as s:
        text = "".join(s.text_stream)
    assert text == first.content[0].text
    assert mock.requests(m) == []


def test_requests_the_rules_exclude_are_not_semantic(sg, chroma):
    topic = new_id()
    before = chroma.count()
    # temperature above max_temperature (absent counts as 1.0): exact cache only.
    assert chat(sg, f"hot question {topic}", key="sk-c", temperature=0.9).headers["x-llmux-cache"] == "miss"
    assert chat(sg, f"Hot question {topic}", key="sk-c", temperature=0.9).headers["x-llmux-cache"] == "miss"
    assert chat(sg, f"hot question {topic}", key="sk-c", temperature=0.9).headers["x-llmux-cache"] == "hit"
    assert chroma.count() == before


class Silent:
    """A TCP server that accepts connections and never answers: a store that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stop_flag = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop_flag:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except OSError:
                return

    def close(self):
        self.stop_flag = True
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.mark.parametrize("store", ["down", "hangs"])
def test_a_failing_store_means_a_miss_within_the_timeout(make_gateway, mock, store):
    if store == "down":
        from harness import free_port
        port, silent = free_port(), None  # nothing listens there
    else:
        silent = Silent()
        port = silent.port
    try:
        g = make_gateway(semantic_config(port, timeout_ms=300),
                         extra_clusters=static_cluster("chroma", port))
        for _ in range(3):
            start = time.monotonic()
            r = chat(g, f"question {new_id()}", key="sk-c", temperature=0)
            assert r.status_code == 200, r.text
            assert r.headers["x-llmux-cache"] == "miss"
            # Bounded by the lookup's timeout (300 ms) plus the answer; a generous bound.
            assert time.monotonic() - start < 5
        assert metric(g, "llmux_cache_errors", llmux_cache_store="semantic") >= 1
    finally:
        if silent:
            silent.close()
