"""LLMux in the Envoy shapes Istio and Envoy Gateway render (tests/e2e/shapes.py): header-matched
routes to clusters with the control planes' names, the filter by ECDS, the host rewritten for
egress, the default Wasm mode a bare WasmPlugin gets, and a new configuration delivered live by
ECDS while a stream is open. The rest of the e2e core runs in each shape with LLMUX_SHAPE
(`make test-shapes`)."""
import json
import os
import re

import httpx
import pytest
import yaml

import harness
from harness import ROOT, Gateway, new_id, render_envoy
import shapes

ISTIO_STATS = "extension_config_discovery.http_filter.istio-system.llmux"


def chat(g, model="gpt-4o-mini", headers=None, **kw):
    return g.post("/v1/chat/completions",
                  {"model": model, "messages": [{"role": "user", "content": "hi"}], **kw},
                  headers={"x-mock-id": new_id(), **(headers or {})})


def stat(g, name):
    m = re.search(rf"^{re.escape(name)}: (\d+)$", g.stats(), re.M)
    return int(m.group(1)) if m else None


def log_line(g, rid):
    """The access log line of request `rid` (Envoy flushes the log every 100 ms)."""
    for _ in range(300):
        line = next((l for l in g.access_log() if l.get("request_id") == rid), None)
        if line:
            return line
        httpx.get(f"{g.admin_url}/ready", timeout=5)  # a round trip between polls
    pytest.fail(f"no access log line for {rid}")


def nth_log_line(g, n):
    """The access log's line `n` (0-based), once Envoy has flushed it."""
    for _ in range(300):
        lines = g.access_log()
        if len(lines) > n:
            return lines[n]
        httpx.get(f"{g.admin_url}/ready", timeout=5)  # a round trip between polls
    pytest.fail(f"the access log never had {n + 1} lines")


def main_routes(g):
    doc = yaml.safe_load(g.yaml)
    listener = doc["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return listener, hcm


def egress_config():
    """The quick start's config with the OpenAI provider going out as to api.openai.com."""
    cfg = render_envoy.quickstart_config({})
    cfg["providers"]["openai"]["host"] = "api.openai.com"
    return cfg


@pytest.fixture(scope="module")
def istio(mock, log_dir):
    g = Gateway(mock, log_dir, llmux_config=egress_config(), name="envoy-istio", shape="istio")
    yield g
    g.stop()
    assert "panicked" not in g.process.log()


@pytest.fixture(scope="module")
def envoy_gateway(mock, log_dir):
    g = Gateway(mock, log_dir, llmux_config=egress_config(), name="envoy-eg",
                shape="envoy-gateway")
    yield g
    g.stop()
    assert "panicked" not in g.process.log()


def test_istio_routes_on_the_header_to_istio_named_clusters(istio, mock):
    listener, hcm = main_routes(istio)
    assert "cluster_header" not in json.dumps(hcm["route_config"])
    names = [f.get("name") for f in hcm["http_filters"]]
    assert names[-2:] == [shapes.ISTIO_FILTER_NAME, "envoy.filters.http.router"], names
    assert "typed_config" not in hcm["http_filters"][-2], "the filter comes by ECDS"
    assert stat(istio, f"{ISTIO_STATS}.config_reload") == 1
    mock_id, rid = new_id(), new_id()
    r = chat(istio, headers={"x-mock-id": mock_id, "x-request-id": rid})
    assert r.status_code == 200, r.text
    seen = mock.requests(mock_id)
    assert seen[0]["headers"]["host"] == "api.openai.com", "the :authority rewrite for egress"
    assert "x-llmux-cluster" not in seen[0]["headers"]
    line = log_line(istio, rid)
    assert line["upstream_cluster"] == "outbound|80||mock.llmux.svc.cluster.local", line


def test_envoy_gateway_enables_the_filter_per_route(envoy_gateway, mock):
    listener, hcm = main_routes(envoy_gateway)
    f = next(f for f in hcm["http_filters"] if f["name"] == shapes.EG_FILTER_NAME)
    assert f["disabled"] is True
    assert "remote" in f["typed_config"]["config"]["vm_config"]["code"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert all(shapes.EG_FILTER_NAME in r["typed_per_filter_config"] for r in routes)
    rid = new_id()
    r = chat(envoy_gateway, stream=True, headers={"x-request-id": rid})
    assert r.status_code == 200, r.text
    assert r.text.rstrip().endswith("data: [DONE]")
    assert log_line(envoy_gateway, rid)["upstream_cluster"].startswith("httproute/llmux/llm/rule/")


def test_a_bare_wasmplugin_gets_a_clear_error(mock, log_dir):
    # What Istio renders for a WasmPlugin alone: no allow_on_headers_stop_iteration.
    g = Gateway(mock, log_dir, name="envoy-istio-bare", shape="istio",
                allow_on_headers_stop_iteration=False)
    try:
        with open(g.rendered.files["ecds"]) as f:
            assert "allow_on_headers_stop_iteration" not in f.read()
        r = chat(g)
        assert r.status_code == 500
        assert r.json()["error"]["code"] == "request_body_withheld"
    finally:
        g.stop()


def swap(g, llmux_config):
    """Delivers a new LLMux configuration by ECDS (the file moved into place, as istiod's push)."""
    path = g.rendered.files["ecds"]
    with open(path) as f:
        doc = json.load(f)
    doc["resources"][0]["typed_config"]["config"]["configuration"]["value"] = json.dumps(
        shapes.istio_config(llmux_config))
    shapes.write_atomically(path, json.dumps(doc))


def wait_for_stat(g, name, value):
    """Polls Envoy's admin stats until `name` reaches `value` (an ECDS update is asynchronous)."""
    for _ in range(200):
        if (stat(g, name) or 0) >= value:
            return
        httpx.get(f"{g.admin_url}/ready", timeout=5)  # a round trip between polls
    pytest.fail(f"{name} never reached {value}: {stat(g, name)}")


def test_a_new_configuration_takes_effect_live_and_a_bad_one_is_refused(mock, log_dir):
    old = render_envoy.quickstart_config({})
    g = Gateway(mock, log_dir, llmux_config=old, name="envoy-istio-live", shape="istio")
    try:
        assert chat(g, model="swapped").status_code == 404
        # A stream opened on the old configuration: 6 words in 64-byte frames every 250 ms.
        client = httpx.Client(timeout=30)
        req = client.build_request(
            "POST", g.url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "stream": True,
                  "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-mock-id": new_id(), "x-mock-text": "one two three four five six",
                     "x-mock-chunk-size": "64", "x-mock-chunk-delay-ms": "250"})
        resp = client.send(req, stream=True)
        assert resp.status_code == 200
        chunks = resp.iter_raw()
        received = next(chunks)
        assert received

        new = json.loads(json.dumps(old))
        new["models"].append({"name": "swapped",
                              "deployments": [{"provider": "openai", "model": "gpt-4o-mini"}]})
        swap(g, new)
        wait_for_stat(g, f"{ISTIO_STATS}.update_success", 2)
        r = chat(g, model="swapped")
        assert r.status_code == 200, r.text
        assert b"[DONE]" not in received, "the old stream must still be open across the swap"

        for c in chunks:
            received += c
        resp.close()
        client.close()
        text = "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            for line in received.decode().splitlines()
            if line.startswith("data: {") and json.loads(line[6:])["choices"])
        assert text.split() == "one two three four five six".split(), received
        assert received.rstrip().endswith(b"data: [DONE]")

        # A bad configuration: refused (the filter's on_configure fails), the last good one
        # keeps serving.
        bad = json.loads(json.dumps(new))
        bad["models"][0]["deployments"][0]["provider"] = "nope"
        swap(g, bad)
        wait_for_stat(g, f"{ISTIO_STATS}.update_rejected", 1)
        assert stat(g, f"{ISTIO_STATS}.update_success") == 2
        assert "invalid LLMux configuration at `models[0].deployments[0].provider`" in g.process.log()
        assert chat(g, model="swapped").status_code == 200
        assert chat(g).status_code == 200
    finally:
        g.stop()
    assert "panicked" not in g.process.log()


KEY = {"authorization": "Bearer sk-llmux-replace-me"}  # deploy/llmux.json's placeholder key


def test_the_istio_manifests_route_fail_over_and_stream_in_a_real_envoy(mock, log_dir):
    """deploy/istio as istiod and istio-agent would render it for the ingress gateway: the
    EnvoyFilters (filter and upstream stage by ECDS, the failover route, cluster and internal
    listener) and the VirtualService's header-matched routes, with LLMux's configuration from
    deploy/llmux.json plus what failover.yaml says to add."""
    istio_dir = os.path.join(ROOT, "deploy", "istio")
    manifests = shapes.load_manifests(*(os.path.join(istio_dir, f) for f in
                                        ("envoyfilter.yaml", "failover.yaml",
                                         "ingress-gateway.yaml")))
    with open(os.path.join(ROOT, "deploy", "llmux.json")) as f:
        cfg = json.load(f)
    cfg["router"] = {"attempts_cluster": "llmux_attempts"}
    cfg["providers"]["openai-down"] = dict(cfg["providers"]["openai"],
                                           headers={"x-mock-status": "503"},
                                           client_headers=["x-mock-*"])
    for p in ("openai", "anthropic"):
        cfg["providers"][p]["client_headers"] = ["x-mock-*"]  # the test steers the mock
    cfg["models"].append({"name": "resilient", "deployments": [
        {"provider": "openai-down", "model": "gpt-4o-mini", "name": "down"},
        {"provider": "anthropic", "model": "claude-3-5-haiku-20241022", "name": "up"}]})
    env = {**os.environ, "OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a"}
    name = "envoy-istio-manifests"
    g = Gateway(mock, log_dir, name=name, env=env, llmux_config={"filter_state": None,
                                                                   "client_headers": None},
                bootstrap=lambda plain: shapes.istio_from_manifests(
                    manifests, plain, mock.port, harness.WASM, log_dir, name, llmux_config=cfg))
    try:
        assert "cluster_header: x-llmux-cluster\n" not in g.yaml.split("llmux_attempts")[0]
        # Plain, to each provider's Istio cluster, with the provider's host and key.
        # Istio's HCM does not keep a client's x-request-id: log lines are found by count.
        mock_id = new_id()
        r = chat(g, headers={**KEY, "x-mock-id": mock_id})
        assert r.status_code == 200, r.text
        seen = mock.requests(mock_id)[0]["headers"]
        assert seen["host"] == "api.openai.com" and seen["authorization"] == "Bearer sk-o", seen
        assert nth_log_line(g, 0)["upstream_cluster"] == "outbound|443||api.openai.com"
        # Anthropic Messages, streamed.
        r = g.post("/v1/messages", {"model": "claude-3-5-haiku", "max_tokens": 20, "stream": True,
                                    "messages": [{"role": "user", "content": "hi"}]},
                   headers={**KEY, "x-mock-id": new_id()})
        assert r.status_code == 200, r.text
        assert "event: message_stop" in r.text
        assert nth_log_line(g, 1)["upstream_cluster"] == "outbound|443||api.anthropic.com"
        # Failover through the upstream stage (both stages by ECDS, one VM): OpenAI answers
        # 503, the stream comes from Anthropic, translated.
        r = chat(g, model="resilient", stream=True, headers=KEY)
        assert r.status_code == 200, r.text
        assert r.headers["x-llmux-deployment"] == "up"
        assert r.text.rstrip().endswith("data: [DONE]")
        # No key, no service.
        assert chat(g).status_code == 401
    finally:
        g.stop()
    assert "panicked" not in g.process.log()
    assert "has no plan in this VM" not in g.process.log()


def test_the_envoy_gateway_manifests_route_in_a_real_envoy(mock, log_dir):
    """deploy/envoy-gateway as Envoy Gateway v1.9 renders it: the EnvoyExtensionPolicy's filter
    (disabled on the listener, enabled per route, code from its Wasm cache), the HTTPRoute's
    header-matched rules, and the EnvoyPatchPolicy's JSON patches applied by their jsonPath —
    which must find the filter, or the flag is never set."""
    eg_dir = os.path.join(ROOT, "deploy", "envoy-gateway")
    manifests = shapes.load_manifests(*(os.path.join(eg_dir, f) for f in
                                        ("gateway.yaml", "extension-policy.yaml",
                                         "patch-policy.yaml")))
    for d in manifests:
        if d["kind"] == "EnvoyExtensionPolicy":  # the test steers the mock
            for p in d["spec"]["wasm"][0]["config"]["providers"].values():
                p["client_headers"] = ["x-mock-*"]
    env = {**os.environ, "OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a"}
    g = Gateway(mock, log_dir, name="envoy-eg-manifests", env=env,
                llmux_config={"filter_state": None, "client_headers": None},
                bootstrap=lambda plain: shapes.envoy_gateway_from_manifests(
                    manifests, plain, mock.port, harness.WASM))
    try:
        assert "allow_on_headers_stop_iteration: true" in g.yaml, "the patch set the flag"
        mock_id = new_id()
        r = chat(g, headers={**KEY, "x-mock-id": mock_id})
        assert r.status_code == 200, r.text
        seen = mock.requests(mock_id)[0]["headers"]
        assert seen["host"] == "api.openai.com" and seen["authorization"] == "Bearer sk-o", seen
        assert nth_log_line(g, 0)["upstream_cluster"] == "httproute/llmux/llmux/rule/0"
        r = g.post("/v1/messages", {"model": "claude-3-5-haiku", "max_tokens": 20, "stream": True,
                                    "messages": [{"role": "user", "content": "hi"}]},
                   headers={**KEY, "x-mock-id": new_id()})
        assert r.status_code == 200, r.text
        assert "event: message_stop" in r.text
        assert nth_log_line(g, 1)["upstream_cluster"] == "httproute/llmux/llmux/rule/1"
        assert chat(g).status_code == 401
    finally:
        g.stop()
    assert "panicked" not in g.process.log()


def test_a_patch_whose_json_path_misses_the_filter_fails():
    # The check above can fail: a policy name off by one segment selects nothing.
    listener = {"default_filter_chain": {"filters": [{"name": "hcm", "typed_config": {
        "http_filters": [{"name": "envoy.filters.http.wasm/envoyextensionpolicy/llmux/llmux/wasm/0",
                          "typed_config": {"config": {}}}]}}]}}
    hit = "$.default_filter_chain.filters[?(@.name=='hcm')].typed_config.http_filters[?(@.name=='envoy.filters.http.wasm/envoyextensionpolicy/llmux/llmux/wasm/0')].typed_config.config"
    assert len(shapes._json_path(listener, hit)) == 1
    assert shapes._json_path(listener, hit.replace("/wasm/0", "/0")) == []
