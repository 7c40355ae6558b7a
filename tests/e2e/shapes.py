"""The quick start's Envoy configuration rendered the way Istio and Envoy Gateway render theirs, so
the e2e suite runs LLMux in the shapes those control planes produce (docs/deploy.md).

`LLMUX_SHAPE=istio` or `LLMUX_SHAPE=envoy-gateway` makes every `harness.Gateway` start in that
shape; `plain` (the default) is the quick start itself. Each shape is a transformation of the
plain configuration, as its control plane would render the manifests in deploy/:

- **istio** (an ingress gateway, deploy/istio): the filter is delivered by extension config
  discovery (ECDS) under Istio's resource name `<namespace>.<name>`, here from a file instead of
  istiod's ADS (the resource is the one the EnvoyFilter's `EXTENSION_CONFIG` patch adds, with
  `allow_on_headers_stop_iteration`), after the HTTP filters Istio puts first (CORS, fault);
  providers' clusters carry Istio's names (`outbound|443||api.openai.com`) and LLMux names them
  in `x-llmux-cluster`; routes are VirtualService routes, one per provider, matching that header
  exactly (no `cluster_header`); Istio's default retry policy is off (`retries.attempts: 0`:
  LLMux retries itself). The failover stage (cluster `llmux_attempts` with the upstream filter,
  its internal listener, the route to it with LLMux's retry policy) is what the EnvoyFilter's
  `CLUSTER`/`LISTENER`/`HTTP_ROUTE` patches add.
- **envoy-gateway** (deploy/envoy-gateway): names as Envoy Gateway renders them (listener
  `<ns>/<gateway>/<listener>`, clusters `httproute/<ns>/<route>/rule/<n>`); the Wasm filter is
  inline, disabled on the listener and enabled per route (`typed_per_filter_config`), its code
  fetched over HTTP with a sha256 check as from Envoy Gateway's Wasm cache; LLMux's configuration
  keeps logical provider names (`openai`) that HTTPRoute rules match in `x-llmux-cluster`; the
  failover stage (what the EnvoyPatchPolicy adds) matches the same header on its internal
  listener.
"""
import copy
import hashlib
import http.server
import json
import os
import threading

import yaml

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
HCM_FILTER = "envoy.filters.network.http_connection_manager"
CLUSTER_HEADER = "x-llmux-cluster"
# Istio names a WasmPlugin's (or an EnvoyFilter EXTENSION_CONFIG's) ECDS resource
# `<namespace>.<name>`.
ISTIO_FILTER_NAME = "istio-system.llmux"
ISTIO_UPSTREAM_FILTER_NAME = "istio-system.llmux-upstream"
# Envoy Gateway names an EnvoyExtensionPolicy's Wasm filter
# `envoy.filters.http.wasm/envoyextensionpolicy/<namespace>/<name>/wasm/<index>`, its vm_id the
# same without the prefix (envoyproxy/gateway v1.9.0 internal/xds/translator/wasm.go).
EG_FILTER_NAME = "envoy.filters.http.wasm/envoyextensionpolicy/llmux/llmux/wasm/0"
EG_ROUTE_FILTER_CONFIG = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                          "config": {}}

SHAPES = ("plain", "istio", "envoy-gateway")


def shape_from_env():
    shape = os.environ.get("LLMUX_SHAPE", "plain")
    if shape not in SHAPES:
        raise ValueError(f"LLMUX_SHAPE={shape!r}: one of {', '.join(SHAPES)}")
    return shape


def istio_cluster(name):
    """Istio's cluster name for a provider cluster of the plain config."""
    hosts = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}
    if name in hosts:
        return f"outbound|443||{hosts[name]}"
    return f"outbound|80||{name}.llmux.svc.cluster.local"


def _header_routes(hcm, cfg, rc_name, vh_name, matches):
    """Replaces the plain config's `cluster_header` route by header-matched routes: the failover
    stage's (with LLMux's retry policy, when `router.attempts_cluster` is set), then one per
    (x-llmux-cluster value, cluster) in `matches`; the fallback routes stay last. Returns the
    virtual host's routes."""
    rc = hcm["route_config"]
    rc["name"] = rc_name
    vh = rc["virtual_hosts"][0]
    vh["name"] = vh_name
    plain_route, fallback = vh["routes"][0], vh["routes"][1:]
    routes = []
    attempts = cfg.get("router", {}).get("attempts_cluster")
    if attempts:
        routes.append(_header_route(attempts, attempts, timeout="600s",
                                    retry_policy=plain_route["route"]["retry_policy"]))
    routes.extend(_header_route(value, cluster, timeout="0s") for value, cluster in matches)
    vh["routes"] = routes + fallback
    return vh["routes"]


def provider_clusters(llmux_config):
    """The providers' cluster names, in order, once each."""
    out = []
    for p in llmux_config.get("providers", {}).values():
        if isinstance(p, dict) and isinstance(p.get("cluster"), str) and p["cluster"] not in out:
            out.append(p["cluster"])
    return out


def istio_config(llmux_config):
    """The LLMux configuration with Istio's cluster names (LLMux names them in the header)."""
    cfg = copy.deepcopy(llmux_config)
    for p in cfg.get("providers", {}).values():
        if isinstance(p, dict) and isinstance(p.get("cluster"), str):
            p["cluster"] = istio_cluster(p["cluster"])
    return cfg


def _header_route(value, cluster, **extra):
    return {
        "match": {"prefix": "/", "headers": [{"name": CLUSTER_HEADER,
                                              "string_match": {"exact": value}}]},
        "request_headers_to_remove": [CLUSTER_HEADER],
        "route": {"cluster": cluster, **extra},
    }


def _parts(doc):
    listeners = doc["static_resources"]["listeners"]
    main = next(l for l in listeners if l["name"] == "llmux")
    attempts = next(l for l in listeners if l["name"] == "llmux_attempts")
    hcm = main["filter_chains"][0]["filters"][0]["typed_config"]
    inner = attempts["filter_chains"][0]["filters"][0]["typed_config"]
    return main, hcm, inner


def _copy_clusters(doc, names):
    """Adds a copy of each provider cluster under its rendered name (the original stays for
    callouts that name it)."""
    clusters = doc["static_resources"]["clusters"]
    for c in list(clusters):
        if c["name"] in names:
            twin = copy.deepcopy(c)
            twin["name"] = names[c["name"]]
            if "load_assignment" in twin:
                twin["load_assignment"]["cluster_name"] = twin["name"]
            clusters.append(twin)


def _static_cluster(name, port, **extra):
    """A cluster with one endpoint at 127.0.0.1:port."""
    return {"name": name, "type": "STATIC", "connect_timeout": "2s", **extra,
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{
                "endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                            "port_value": port}}}}]}]}}


def _upstream_filter(doc):
    """The failover stage's Wasm filter on the `llmux_attempts` cluster."""
    c = next(c for c in doc["static_resources"]["clusters"] if c["name"] == "llmux_attempts")
    opts = c["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    return opts["http_filters"][0]


class Shape:
    """A rendered configuration and what it needs while Envoy runs (files, a Wasm server)."""

    def __init__(self, yaml_text, files=(), server=None):
        self.yaml = yaml_text
        self.files = dict(files)
        self._server = server

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def ecds_resource(wasm_typed_config, name=ISTIO_FILTER_NAME):
    """An ECDS file: one TypedExtensionConfig (what istiod sends for a WasmPlugin)."""
    return json.dumps({"resources": [{
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": name,
        "typed_config": wasm_typed_config,
    }]}, indent=1)


def write_atomically(path, text):
    """Envoy watches a path config source for files moved into place."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def istio(plain_yaml, llmux_config, work_dir, name, allow_on_headers_stop_iteration=True):
    doc = yaml.safe_load(plain_yaml)
    # xDS needs the node's identity (Istio's: <type>~<ip>~<pod>.<ns>~<ns>.svc.cluster.local).
    doc["node"] = {"id": "router~127.0.0.1~istio-ingressgateway.istio-system~"
                         "istio-system.svc.cluster.local",
                   "cluster": "istio-ingressgateway.istio-system"}
    names = {c: istio_cluster(c) for c in provider_clusters(llmux_config)}
    cfg = istio_config(llmux_config)
    main, hcm, _inner = _parts(doc)
    main["name"] = "0.0.0.0_8080"
    hcm["stat_prefix"] = "outbound_0.0.0.0_8080"
    filters = hcm["http_filters"]
    i = next(k for k, f in enumerate(filters) if f["name"] == "llmux")
    wasm = filters[i]["typed_config"]
    wasm["config"]["configuration"]["value"] = json.dumps(cfg)
    if not allow_on_headers_stop_iteration:
        wasm["config"].pop("allow_on_headers_stop_iteration", None)
    ecds_path = os.path.join(work_dir, f"{name}-ecds.json")
    write_atomically(ecds_path, ecds_resource(wasm))
    filters[i] = {"name": ISTIO_FILTER_NAME, "config_discovery": {
        "config_source": {"path_config_source": {"path": ecds_path},
                          "resource_api_version": "V3", "initial_fetch_timeout": "0s"},
        "type_urls": [WASM_TYPE]}}
    # The failover stage's filter comes by ECDS too: istio-agent rewrites the code of ECDS
    # resources only (remote OCI → the same local file), so both stages get one vm_config and
    # share one VM.
    up = _upstream_filter(doc)
    up_path = os.path.join(work_dir, f"{name}-ecds-upstream.json")
    write_atomically(up_path, ecds_resource(up["typed_config"], ISTIO_UPSTREAM_FILTER_NAME))
    up.clear()
    up.update({"name": ISTIO_UPSTREAM_FILTER_NAME, "config_discovery": {
        "config_source": {"path_config_source": {"path": up_path},
                          "resource_api_version": "V3", "initial_fetch_timeout": "0s"},
        "type_urls": [WASM_TYPE]}})
    filters[i:i] = [
        {"name": "envoy.filters.http.cors", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
        {"name": "envoy.filters.http.fault", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
    ]
    # VirtualService http[].match.headers x-llmux-cluster exact; retries.attempts: 0; Istio
    # renders timeout 0s (none): LLMux sets x-envoy-upstream-rq-timeout-ms. The failover route
    # is the EnvoyFilter's HTTP_ROUTE INSERT_FIRST.
    _header_routes(hcm, cfg, "http.8080", "llm.example.com:8080",
                   [(n, n) for n in names.values()])
    _copy_clusters(doc, names)
    return Shape(yaml.safe_dump(doc, sort_keys=False),
                 files={"ecds": ecds_path, "ecds_upstream": up_path}), cfg


class _WasmServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


def _serve_file(path):
    """Serves one file over HTTP on a free loopback port, as Envoy Gateway's Wasm cache does."""
    with open(path, "rb") as f:
        data = f.read()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-type", "application/wasm")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = _WasmServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, hashlib.sha256(data).hexdigest()


def envoy_gateway(plain_yaml, llmux_config, wasm_path):
    doc = yaml.safe_load(plain_yaml)
    cfg = llmux_config
    names = {c: f"httproute/llmux/llm/rule/{n}"
             for n, c in enumerate(provider_clusters(llmux_config))}
    main, hcm, inner = _parts(doc)
    main["name"] = "llmux/eg/http"
    hcm["stat_prefix"] = "http-10080"
    server, sha = _serve_file(wasm_path)
    port = server.server_address[1]
    filters = hcm["http_filters"]
    i = next(k for k, f in enumerate(filters) if f["name"] == "llmux")
    wasm = filters[i]["typed_config"]
    wasm["config"]["vm_config"]["code"] = {"remote": {
        "http_uri": {"uri": f"http://127.0.0.1:{port}/llmux.wasm", "cluster": "wasm_cache",
                     "timeout": "10s"},
        "sha256": sha}}
    wasm["config"]["vm_config"]["vm_id"] = EG_FILTER_NAME.split("/", 1)[1]
    filters[i] = {"name": EG_FILTER_NAME, "typed_config": wasm, "disabled": True}
    # Both stages must share one VM, so the same vm_config (the code's source included). Envoy
    # Gateway renders the code's URL itself (its Wasm cache), which a patch cannot name, so
    # failover there means adding both stages with the EnvoyPatchPolicy (docs/deploy.md); this
    # shape tests that the two stages work when their vm_configs agree.
    _upstream_filter(doc)["typed_config"]["config"]["vm_config"] = copy.deepcopy(
        wasm["config"]["vm_config"])
    # HTTPRoute rules: headers x-llmux-cluster exact, RequestHeaderModifier remove; the failover
    # route is the EnvoyPatchPolicy's. Every route enables the filter.
    for r in _header_routes(hcm, cfg, "llmux/eg/http", "llmux/eg/http/*", list(names.items())):
        r.setdefault("typed_per_filter_config", {})[EG_FILTER_NAME] = EG_ROUTE_FILTER_CONFIG
    # The failover stage's internal listener routes on the same header (no cluster_header).
    inner_vh = inner["route_config"]["virtual_hosts"][0]
    inner_plain = inner_vh["routes"][0]
    inner_vh["routes"] = [dict(_header_route(logical, eg_name, timeout="600s"),
                               request_headers_to_remove=inner_plain["request_headers_to_remove"])
                          for logical, eg_name in names.items()]
    _copy_clusters(doc, names)
    doc["static_resources"]["clusters"].append(_static_cluster("wasm_cache", port))
    return Shape(yaml.safe_dump(doc, sort_keys=False), server=server), cfg


def render(shape, plain_yaml, llmux_config, work_dir, name, wasm_path,
           allow_on_headers_stop_iteration=True):
    """The `shape` rendering of a plain config; returns (Shape, the LLMux configuration it
    carries)."""
    if shape == "istio":
        return istio(plain_yaml, llmux_config, work_dir, name, allow_on_headers_stop_iteration)
    if shape == "envoy-gateway":
        s, cfg = envoy_gateway(plain_yaml, llmux_config, wasm_path)
        if not allow_on_headers_stop_iteration:
            doc = yaml.safe_load(s.yaml)
            for f in _parts(doc)[1]["http_filters"]:
                f.get("typed_config", {}).get("config", {}).pop("allow_on_headers_stop_iteration",
                                                               None)
            s.yaml = yaml.safe_dump(doc, sort_keys=False)
        return s, cfg
    raise ValueError(shape)


def load_manifests(*paths):
    docs = []
    for p in paths:
        with open(p) as f:
            docs.extend(d for d in yaml.safe_load_all(f) if d)
    return docs


def _vs_routes(vs):
    """A VirtualService's http routes as istiod renders them (the subset the manifests use)."""
    out = []
    for h in vs["spec"]["http"]:
        if "directResponse" in h:
            d = h["directResponse"]
            out.append({"name": h.get("name", ""), "match": {"prefix": "/"}, "direct_response": {
                "status": d["status"], "body": {"inline_string": d["body"]["string"]}}})
            continue
        headers = [{"name": k, "string_match": {"exact": v["exact"]}}
                   for m in h["match"] for k, v in m["headers"].items()]
        dest = h["route"][0]["destination"]
        route = {"cluster": f"outbound|{dest['port']['number']}||{dest['host']}",
                 "timeout": h.get("timeout", "0s")}
        # No `retries` → Istio's default policy; `attempts: 0` → none.
        if h.get("retries", {}).get("attempts", 2) != 0:
            route["retry_policy"] = {"retry_on": "connect-failure,refused-stream,unavailable,"
                                                 "cancelled,retriable-status-codes",
                                     "num_retries": h.get("retries", {}).get("attempts", 2),
                                     "retriable_status_codes": [503]}
        out.append({"name": h.get("name", ""), "match": {"prefix": "/", "headers": headers},
                    "request_headers_to_remove": h.get("headers", {}).get("request", {})
                    .get("remove", []),
                    "route": route})
    return out


def istio_from_manifests(manifests, plain_yaml, mock_port, wasm_path, work_dir, name,
                         llmux_config=None, rls_port=None):
    """The Envoy configuration istiod and istio-agent would give the ingress gateway for the
    EnvoyFilters and the VirtualService in `manifests` (deploy/istio), with every provider
    service (`outbound|443||<host>`) answered by the mock over plain HTTP (TLS origination is
    the DestinationRule's, not exercised here). istio-agent's part: the ECDS resources' `oci://`
    code becomes the local .wasm. `llmux_config` replaces the manifests' LLMux configuration
    (as an operator edits it)."""
    plain = yaml.safe_load(plain_yaml)
    main, plain_hcm, _ = _parts(plain)
    patches = [p for d in manifests if d["kind"] == "EnvoyFilter" for p in d["spec"]["configPatches"]]
    vs = next(d for d in manifests if d["kind"] == "VirtualService")

    ecds = {}
    for p in patches:
        if p["applyTo"] != "EXTENSION_CONFIG":
            continue
        value = copy.deepcopy(p["patch"]["value"])
        config = value["typed_config"]["config"]
        assert config["vm_config"]["code"]["remote"]["http_uri"]["uri"].startswith("oci://")
        config["vm_config"]["code"] = {"local": {"filename": wasm_path}}
        if llmux_config is not None and config["configuration"]["value"].strip() != '{"stage": "upstream"}':
            config["configuration"]["value"] = json.dumps(llmux_config)
        path = os.path.join(work_dir, f"{name}-{value['name'].replace('/', '_')}.json")
        write_atomically(path, ecds_resource(value["typed_config"], value["name"]))
        ecds[value["name"]] = path

    def from_files(f):
        if "config_discovery" in f:
            f["config_discovery"]["config_source"] = {
                "path_config_source": {"path": ecds[f["name"]]}, "resource_api_version": "V3",
                "initial_fetch_timeout": "0s"}
        return f

    router = {"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
    http_filters = [router]
    routes = _vs_routes(vs)
    clusters, listeners = [], []
    for p in patches:
        op, value = p["patch"]["operation"], copy.deepcopy(p["patch"].get("value"))
        if p["applyTo"] == "HTTP_FILTER" and op == "INSERT_BEFORE":
            assert p["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == router["name"]
            http_filters.insert(http_filters.index(router), from_files(value))
        elif p["applyTo"] == "HTTP_ROUTE" and op == "INSERT_FIRST":
            routes.insert(0, value)
        elif p["applyTo"] == "CLUSTER" and op == "ADD":
            opts = value.get("typed_extension_protocol_options", {}).get(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {})
            for f in opts.get("http_filters", []):
                from_files(f)
            if value["name"] == "ratelimit":
                value["type"] = "STATIC"
                value["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] = {
                    "socket_address": {"address": "127.0.0.1", "port_value": rls_port or 9}}
            clusters.append(value)
        elif p["applyTo"] == "LISTENER" and op == "ADD":
            listeners.append(value)
        elif p["applyTo"] != "EXTENSION_CONFIG":
            raise AssertionError(f"patch not rendered here: {p['applyTo']} {op}")

    provider_clusters = sorted({r["route"]["cluster"] for r in routes if "route" in r}
                               | {r["route"]["cluster"] for l in listeners
                                  for fc in l["filter_chains"] for f in fc["filters"]
                                  for vh in f["typed_config"]["route_config"]["virtual_hosts"]
                                  for r in vh["routes"] if "route" in r})
    for c in provider_clusters:
        if c.startswith("outbound|"):
            clusters.append(_static_cluster(c, mock_port,
                                            per_connection_buffer_limit_bytes=33554432))
    hcm = {
        "@type": plain_hcm["@type"], "stat_prefix": "outbound_0.0.0.0_8080",
        "use_remote_address": True, "access_log": plain_hcm["access_log"],
        "route_config": {"name": "http.8080", "virtual_hosts": [
            {"name": "*:80", "domains": ["*"], "routes": routes}]},
        "http_filters": http_filters,
    }
    main["name"] = "0.0.0.0_8080"
    main["filter_chains"] = [{"filters": [{"name": HCM_FILTER, "typed_config": hcm}]}]
    doc = {
        "node": {"id": "router~127.0.0.1~llmux-ingressgateway.llmux~llmux.svc.cluster.local",
                 "cluster": "llmux-ingressgateway.llmux"},
        "admin": plain["admin"],
        "bootstrap_extensions": plain["bootstrap_extensions"],
        "static_resources": {"listeners": [main] + listeners, "clusters": clusters},
    }
    return Shape(yaml.safe_dump(doc, sort_keys=False), files=ecds)


def _json_path(doc, expr):
    """The objects a JSONPath of the form EnvoyPatchPolicy examples use selects:
    `$.a.b[?(@.name=='x')].c` (keys, and list filters on one field's value)."""
    import re

    assert expr.startswith("$."), expr
    found = [doc]
    for seg in re.findall(r"[^.\[\]]+(?:\[\?\(@\.[a-z_]+=='[^']*'\)\])?", expr[2:]):
        m = re.fullmatch(r"([^\[]+)(?:\[\?\(@\.([a-z_]+)=='([^']*)'\)\])?", seg)
        key, field, value = m.groups()
        nxt = []
        for node in found:
            v = node.get(key) if isinstance(node, dict) else None
            if v is None:
                continue
            if field is None:
                nxt.append(v)
            else:
                nxt.extend(x for x in v if isinstance(x, dict) and x.get(field) == value)
        found = nxt
    return found


def envoy_gateway_from_manifests(manifests, plain_yaml, mock_port, wasm_path):
    """The Envoy configuration Envoy Gateway v1.9 renders for deploy/envoy-gateway (the Gateway's
    listener, the HTTPRoute, the EnvoyExtensionPolicy's Wasm filter) with the EnvoyPatchPolicy's
    JSON patches applied as Envoy Gateway applies them (a `jsonPath` that selects nothing fails,
    as it does there). Backends are answered by the mock over plain HTTP (BackendTLSPolicy's TLS
    is not exercised)."""
    plain = yaml.safe_load(plain_yaml)
    main, plain_hcm, _ = _parts(plain)
    gw = next(d for d in manifests if d["kind"] == "Gateway")
    route = next(d for d in manifests if d["kind"] == "HTTPRoute")
    policy = next(d for d in manifests if d["kind"] == "EnvoyExtensionPolicy")
    patches = next(d for d in manifests if d["kind"] == "EnvoyPatchPolicy")
    ns = policy["metadata"]["namespace"]
    listener_name = f"{ns}/{gw['metadata']['name']}/{gw['spec']['listeners'][0]['name']}"

    server, sha = _serve_file(wasm_path)
    w = policy["spec"]["wasm"][0]
    policy_name = f"envoyextensionpolicy/{ns}/{policy['metadata']['name']}/wasm/0"
    filter_name = f"envoy.filters.http.wasm/{policy_name}"
    wasm = {"@type": WASM_TYPE, "config": {
        "name": policy_name, "root_id": w["rootID"], "fail_open": w.get("failOpen", False),
        "vm_config": {
            "vm_id": policy_name, "runtime": "envoy.wasm.runtime.v8",
            "code": {"remote": {"http_uri": {"uri": f"http://127.0.0.1:{server.server_address[1]}/x.wasm",
                                             "cluster": "wasm_cache", "timeout": "10s"},
                                "sha256": sha}},
            "environment_variables": {"host_env_keys": w["env"]["hostKeys"]}},
        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": json.dumps(w["config"])}}}
    routes, clusters = [], []
    for n, rule in enumerate(route["spec"]["rules"]):
        r = {"name": f"httproute/{ns}/{route['metadata']['name']}/rule/{n}/match/0/*",
             "typed_per_filter_config": {filter_name: EG_ROUTE_FILTER_CONFIG}}
        m = rule["matches"][0]
        r["match"] = {"prefix": m.get("path", {}).get("value", "/")}
        if "headers" in m:
            r["match"]["headers"] = [{"name": h["name"], "string_match": {"exact": h["value"]}}
                                     for h in m["headers"]]
        for f in rule.get("filters", []):
            if f["type"] == "RequestHeaderModifier":
                r["request_headers_to_remove"] = f["requestHeaderModifier"]["remove"]
        if rule.get("backendRefs"):
            cluster = f"httproute/{ns}/{route['metadata']['name']}/rule/{n}"
            r["route"] = {"cluster": cluster,
                          "timeout": rule.get("timeouts", {}).get("request", "15s")}
            clusters.append(_static_cluster(cluster, mock_port))
        else:
            r["direct_response"] = {"status": 500}  # Envoy Gateway: a rule without backends
        routes.append(r)
    hcm = {"@type": plain_hcm["@type"], "stat_prefix": "http-10080", "use_remote_address": True,
           "access_log": plain_hcm["access_log"],
           "route_config": {"name": listener_name, "virtual_hosts": [
               {"name": f"{listener_name}/*", "domains": ["*"], "routes": routes}]},
           "http_filters": [{"name": filter_name, "typed_config": wasm, "disabled": True},
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    listener = {"name": listener_name, "address": main["address"],
                "default_filter_chain": {"filters": [{"name": HCM_FILTER, "typed_config": hcm}]}}
    for p in patches["spec"]["jsonPatches"]:
        op = p["operation"]
        if p["type"].endswith("Listener"):
            assert p["name"] == listener_name, (p["name"], listener_name)
            targets = _json_path(listener, op["jsonPath"]) if "jsonPath" in op else [listener]
            assert targets, f"jsonPath selects nothing: {op.get('jsonPath')}"
            for t in targets:
                assert op["op"] == "add"
                t[op["path"]] = op["value"]
        elif p["type"].endswith("Cluster") and op["op"] == "add" and op["path"] == "":
            c = copy.deepcopy(op["value"])
            if c["name"] == "ratelimit":
                c["type"] = "STATIC"
                c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] = {
                    "socket_address": {"address": "127.0.0.1", "port_value": 9}}
            clusters.append(c)
        else:
            raise AssertionError(f"patch not rendered here: {p}")
    clusters.append(_static_cluster("wasm_cache", server.server_address[1]))
    doc = {"admin": plain["admin"], "static_resources": {"listeners": [listener],
                                                          "clusters": clusters}}
    return Shape(yaml.safe_dump(doc, sort_keys=False), server=server)
