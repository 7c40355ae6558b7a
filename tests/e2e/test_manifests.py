"""deploy/ (Istio, Envoy Gateway, plain Kubernetes manifests) against the API schemas of the
versions it names, and the LLMux configuration inside them against LLMux itself.

Schemas, by folder of deploy/ (sources in each tests/schemas/*/README.md):
- Kubernetes 1.36 core kinds: PyPI kubernetes-validate (its strict schemas, which close every
  object), pinned in tests/requirements.txt;
- custom resources: the `openAPIV3Schema` of the served version, vendored under tests/schemas/.

Custom resource schemas are checked the way `kubectl apply --validate=strict` checks fields: an
object schema with `properties` and neither `additionalProperties` nor
`x-kubernetes-preserve-unknown-fields: true` is closed (an unknown field fails), and `metadata` is
Kubernetes' ObjectMeta (closed too). Not checked: CEL rules (`x-kubernetes-validations`) and
`format`, which the API server evaluates itself.
"""
import copy
import functools
import glob
import json
import os

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from harness import ROOT, WASM, Gateway, validate_config

DEPLOY = os.path.join(ROOT, "deploy")
SCHEMAS = os.path.join(ROOT, "tests", "schemas")
KUBERNETES = "1.36"
# Istio 1.30 reads Gateway API v1.5 (its 1.30 upgrade notes); Envoy Gateway v1.9 ships v1.6.1
# (its compatibility matrix, site/content/en/news/releases/matrix.md).
SCHEMA_SETS = {
    "istio": ["istio-1.30.3", "gateway-api-v1.5.1"],
    "envoy-gateway": ["envoy-gateway-v1.9.0", "gateway-api-v1.6.1"],
    "k8s": [],
}
# API groups kubernetes-validate has schemas for (the core of Kubernetes).
CORE_API_VERSIONS = {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2",
                     "rbac.authorization.k8s.io/v1", "networking.k8s.io/v1"}
OBJECT_META = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
KEYS_ENV = {"OPENAI_API_KEY": "sk-test-openai", "ANTHROPIC_API_KEY": "sk-ant-test"}
# deploy/llmux.json's placeholder key (its key_sha256 is this key's SHA-256).
PLACEHOLDER_KEY = "sk-llmux-replace-me"


def load_documents():
    docs = []
    for path in sorted(glob.glob(os.path.join(DEPLOY, "**", "*.yaml"), recursive=True)):
        rel = os.path.relpath(path, DEPLOY)
        with open(path) as f:
            for i, doc in enumerate(yaml.safe_load_all(f)):
                if doc is not None:
                    docs.append((rel, i, doc))
    return docs


DOCS = load_documents()


def find(kind, name=None, folder=None):
    found = [d for rel, _, d in DOCS if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)
             and (folder is None or rel.startswith(folder + "/"))]
    assert found, f"no {kind} {name or ''} in deploy/{folder or ''}"
    return found


def one(kind, name=None, folder=None, file=None):
    found = [d for rel, _, d in DOCS if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)
             and (folder is None or rel.startswith(folder + "/"))
             and (file is None or rel == file)]
    assert len(found) == 1, f"{len(found)} documents {kind} {name} {folder} {file}"
    return found[0]


# --- schemas -----------------------------------------------------------------------------------

def close_objects(node):
    """Strict mode on a structural schema: closes objects, follows only structural keywords
    (value-validation branches such as oneOf/anyOf/allOf/not only add constraints)."""
    if not isinstance(node, dict):
        return node
    for child in (node.get("properties") or {}).values():
        close_objects(child)
    if isinstance(node.get("items"), dict):
        close_objects(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        close_objects(node["additionalProperties"])
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    # OpenAPI's `nullable: true` is JSON Schema's "or null".
    if node.get("nullable") and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    return node


@functools.lru_cache(maxsize=None)
def k8s_definitions():
    import importlib.resources
    base = importlib.resources.files("kubernetes_validate").joinpath(
        "kubernetes-json-schema", f"v{KUBERNETES}.0-local-strict", "_definitions.json")
    return Resource.from_contents(json.loads(base.read_text()))


@functools.lru_cache(maxsize=None)
def crd_schema(schema_set, api_version, kind):
    group, version = api_version.split("/")
    path = os.path.join(SCHEMAS, schema_set, f"{group}_{version}_{kind}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        schema = close_objects(json.load(f))
    # Every object has these three, whether the CRD lists them (Istio's list only spec/status).
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    schema["properties"]["metadata"] = {"$ref": OBJECT_META}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def validate(folder, doc):
    """Raises jsonschema.ValidationError (or AssertionError for an unknown kind)."""
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if api_version in CORE_API_VERSIONS:
        try:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        except kubernetes_validate.SchemaNotFoundError as e:
            raise AssertionError(e.message) from None
        return
    for schema_set in SCHEMA_SETS[folder]:
        schema = crd_schema(schema_set, api_version, kind)
        if schema is not None:
            registry = k8s_definitions() @ Registry()
            validator = jsonschema.Draft202012Validator(schema, registry=registry)
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
            if errors:
                # Every error, each with where it is (the first alone can hide the point).
                raise jsonschema.ValidationError("\n".join(
                    f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors))
            return
    raise AssertionError(f"no schema for {api_version} {kind} in {SCHEMA_SETS[folder]}")


def folder_of(rel):
    return rel.split(os.sep)[0]


@pytest.mark.parametrize("rel,index,doc", DOCS, ids=[f"{r}#{i}:{d.get('kind')}" for r, i, d in DOCS])
def test_document_matches_the_schema_of_its_version(rel, index, doc):
    validate(folder_of(rel), doc)


def test_every_folder_has_manifests():
    folders = {folder_of(rel) for rel, _, _ in DOCS}
    assert folders == set(SCHEMA_SETS)
    assert len(DOCS) >= 30


def fails(folder, doc, match):
    with pytest.raises((jsonschema.ValidationError, AssertionError)) as e:
        validate(folder, doc)
    assert match in str(e.value), str(e.value)[:2000]


def test_typo_fails():
    doc = copy.deepcopy(one("WasmPlugin", "llmux"))
    doc["spec"]["failStrateg"] = doc["spec"].pop("failStrategy")
    fails("istio", doc, "'failStrateg' was unexpected")
    doc = copy.deepcopy(one("HTTPRoute", "llmux", folder="envoy-gateway"))
    doc["spec"]["rules"][0]["matches"][0]["header"] = doc["spec"]["rules"][0]["matches"][0].pop("headers")
    fails("envoy-gateway", doc, "'header' was unexpected")
    doc = copy.deepcopy(one("Deployment", "ratelimit"))
    doc["spec"]["template"]["spec"]["containers"][0]["enviroment"] = []
    fails("k8s", doc, "'enviroment' was unexpected")
    doc = copy.deepcopy(one("EnvoyFilter", "llmux"))
    doc["metadata"]["lables"] = {"a": "b"}
    fails("istio", doc, "'lables' was unexpected")


def test_field_in_the_wrong_place_fails():
    doc = copy.deepcopy(one("WasmPlugin", "llmux"))
    doc["spec"]["vmConfig"]["sha256"] = doc["spec"].pop("sha256")
    fails("istio", doc, "'sha256' was unexpected")
    doc = copy.deepcopy(one("EnvoyExtensionPolicy", "llmux"))
    wasm = doc["spec"]["wasm"][0]
    wasm["url"] = wasm["code"]["image"].pop("url")
    fails("envoy-gateway", doc, "'url' was unexpected")
    doc = copy.deepcopy(one("Deployment", "ratelimit"))
    pod = doc["spec"]["template"]["spec"]
    pod["env"] = pod["containers"][0].pop("env")
    fails("k8s", doc, "'env' was unexpected")
    doc = copy.deepcopy(one("VirtualService", "llmux"))
    doc["spec"]["http"][0]["remove"] = doc["spec"]["http"][0]["headers"]["request"].pop("remove")
    fails("istio", doc, "'remove' was unexpected")


def test_wrong_type_fails():
    doc = copy.deepcopy(one("WasmPlugin", "llmux"))
    doc["spec"]["priority"] = "high"
    fails("istio", doc, "'high' is not of type 'integer'")
    doc = copy.deepcopy(one("Backend", "openai"))
    doc["spec"]["endpoints"][0]["fqdn"]["port"] = "443"
    fails("envoy-gateway", doc, "'443' is not of type 'integer'")
    doc = copy.deepcopy(one("StatefulSet", "redis"))
    doc["spec"]["replicas"] = "one"
    fails("k8s", doc, "'one' is not of type")
    doc = copy.deepcopy(one("EnvoyPatchPolicy", "llmux"))
    doc["spec"]["jsonPatches"][0]["operation"]["op"] = "set"
    fails("envoy-gateway", doc, "'set' is not one of")


def test_unknown_kind_or_version_fails():
    doc = copy.deepcopy(one("WasmPlugin", "llmux"))
    doc["apiVersion"] = "extensions.istio.io/v1"
    fails("istio", doc, "no schema for extensions.istio.io/v1 WasmPlugin")
    doc = copy.deepcopy(one("EnvoyExtensionPolicy", "llmux"))
    fails("istio", doc, "no schema for gateway.envoyproxy.io/v1alpha1 EnvoyExtensionPolicy")
    doc = copy.deepcopy(one("Service", "ratelimit"))
    doc["kind"] = "Servic"
    fails("k8s", doc, "Couldn't find schema for kind Servic")


def test_open_parts_stay_open():
    # Fields the schemas leave open (preserve-unknown-fields: Envoy config inside an EnvoyFilter,
    # the Wasm config; additionalProperties: labels) still accept anything, so the strict mode
    # above is not simply rejecting every extra key.
    doc = copy.deepcopy(one("EnvoyFilter", "llmux"))
    doc["spec"]["configPatches"][0]["patch"]["value"]["any_envoy_field"] = {"x": 1}
    doc["metadata"]["labels"] = {"any-label": "x"}
    validate("istio", doc)
    doc = copy.deepcopy(one("EnvoyExtensionPolicy", "llmux"))
    doc["spec"]["wasm"][0]["config"]["not_checked_by_the_crd"] = True
    validate("envoy-gateway", doc)


# --- the LLMux configuration inside the manifests ------------------------------------------------

def llmux_json():
    with open(os.path.join(DEPLOY, "llmux.json")) as f:
        return json.load(f)


def wasm_extension_configs():
    """(EnvoyFilter name, extension config name, Wasm `config`) of every EXTENSION_CONFIG patch."""
    out = []
    for ef in find("EnvoyFilter", folder="istio"):
        for p in ef["spec"]["configPatches"]:
            if p["applyTo"] == "EXTENSION_CONFIG":
                value = p["patch"]["value"]
                assert value["typed_config"]["@type"] == "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
                out.append((ef["metadata"]["name"], value["name"], value["typed_config"]["config"]))
    return out


def test_the_llmux_configuration_is_the_same_in_every_manifest():
    expected = llmux_json()
    assert one("WasmPlugin", "llmux")["spec"]["pluginConfig"] == expected
    assert one("EnvoyExtensionPolicy", "llmux")["spec"]["wasm"][0]["config"] == expected
    downstream = [(ef, name, c) for ef, name, c in wasm_extension_configs() if c["root_id"] == "llmux"]
    assert {ef for ef, _, _ in downstream} == {"llmux", "llmux-sidecar", "llmux-waypoint"}
    for ef, name, config in downstream:
        assert config["configuration"]["@type"] == "type.googleapis.com/google.protobuf.StringValue"
        assert json.loads(config["configuration"]["value"]) == expected, ef
        assert config["allow_on_headers_stop_iteration"] is True, ef
    # The three EnvoyFilters carry the same filter, names apart; the upstream stage shares its VM.
    first = downstream[0][2]
    for _, _, config in downstream[1:]:
        assert config == first
    upstream = [c for _, _, c in wasm_extension_configs() if c["root_id"] == "llmux_upstream"]
    assert len(upstream) == 1
    assert upstream[0]["vm_config"] == first["vm_config"]
    assert json.loads(upstream[0]["configuration"]["value"]) == {"stage": "upstream"}


def test_every_manifest_loads_the_same_image_and_provider_keys():
    keys = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"]
    wp = one("WasmPlugin", "llmux")["spec"]
    eep = one("EnvoyExtensionPolicy", "llmux")["spec"]["wasm"][0]
    assert wp["url"] == "oci://" + eep["code"]["image"]["url"]
    assert wp["sha256"] == eep["code"]["image"]["sha256"]
    assert [e["name"] for e in wp["vmConfig"]["env"]] == keys
    assert eep["env"]["hostKeys"] == keys
    for _, _, config in wasm_extension_configs():
        remote = config["vm_config"]["code"]["remote"]
        assert remote["http_uri"]["uri"] == wp["url"] and remote["sha256"] == wp["sha256"]
        assert config["vm_config"]["environment_variables"]["host_env_keys"] == keys
    assert sorted(one("Secret", "llmux-provider-keys")["stringData"]) == sorted(keys)
    # Each proxy that runs LLMux gets both keys from that Secret.
    envs = [
        one("Deployment", "llmux-ingressgateway")["spec"]["template"]["spec"]["containers"][0]["env"],
        [c for c in one("Deployment", "llmux-client")["spec"]["template"]["spec"]["containers"]
         if c["name"] == "istio-proxy"][0]["env"],
        yaml.safe_load(one("ConfigMap", "llmux-waypoint")["data"]["deployment"])
        ["spec"]["template"]["spec"]["containers"][0]["env"],
        one("EnvoyProxy", "llmux")["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]["env"],
    ]
    for env in envs:
        assert [(e["name"], e["valueFrom"]["secretKeyRef"]) for e in env] == \
            [(k, {"name": "llmux-provider-keys", "key": k}) for k in keys]


def header_routes_istio(vs):
    out = {}
    for route in vs["spec"]["http"]:
        if "match" in route:
            (m,) = route["match"]
            out[m["headers"]["x-llmux-cluster"]["exact"]] = route["route"][0]["destination"]["host"]
            assert route["headers"]["request"]["remove"] == ["x-llmux-cluster"]
    return out


def header_routes_gateway_api(route):
    out = {}
    for rule in route["spec"]["rules"]:
        if rule.get("backendRefs"):
            (m,) = rule["matches"]
            (h,) = m["headers"]
            assert h["type"] == "Exact" and h["name"] == "x-llmux-cluster"
            out[h["value"]] = rule["backendRefs"][0]["name"]
            assert rule["filters"] == [{"type": "RequestHeaderModifier",
                                        "requestHeaderModifier": {"remove": ["x-llmux-cluster"]}}]
    # The last rule catches what LLMux has not routed yet, so the filter always has a route.
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}] and "backendRefs" not in rule
    return out


def test_every_provider_has_a_header_route_to_its_host_in_every_shape():
    providers = llmux_json()["providers"]
    to_host = {p["cluster"]: p["host"] for p in providers.values()}
    for name in ("llmux", "llmux-sidecar"):
        vs = one("VirtualService", name)
        assert header_routes_istio(vs) == to_host, name
        assert "directResponse" in vs["spec"]["http"][-1] and "match" not in vs["spec"]["http"][-1]
    waypoint = header_routes_gateway_api(one("HTTPRoute", "llmux-waypoint"))
    assert waypoint == to_host
    backends = {b["metadata"]["name"]: b["spec"]["endpoints"][0]["fqdn"]["hostname"]
                for b in find("Backend")}
    eg = header_routes_gateway_api(one("HTTPRoute", "llmux", folder="envoy-gateway"))
    assert {cluster: backends[b] for cluster, b in eg.items()} == to_host
    for tls in find("BackendTLSPolicy"):
        assert tls["spec"]["validation"]["hostname"] == backends[tls["spec"]["targetRefs"][0]["name"]]
    # Istio: each provider host is a ServiceEntry whose port 443 originates TLS with its SNI.
    for host in to_host.values():
        (se,) = [s for s in find("ServiceEntry") if s["spec"]["hosts"] == [host]]
        assert {p["number"] for p in se["spec"]["ports"]} == {80, 443}
        (dr,) = [d for d in find("DestinationRule") if d["spec"]["host"] == host]
        assert dr["spec"]["trafficPolicy"]["portLevelSettings"] == [
            {"port": {"number": 443}, "tls": {"mode": "SIMPLE", "sni": host}}]
    # Failover's internal listener sends each provider to Istio's cluster for that port.
    listener = [p["patch"]["value"] for p in one("EnvoyFilter", "llmux-failover")["spec"]["configPatches"]
                if p["applyTo"] == "LISTENER"][0]
    routes = listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert {r["match"]["headers"][0]["string_match"]["exact"]: r["route"]["cluster"] for r in routes} == \
        {c: f"outbound|443||{h}" for c, h in to_host.items()}


def test_envoy_patch_policy_names_the_filter_envoy_gateway_renders():
    # Envoy Gateway v1.9.0 names the listener <ns>/<gateway>/<listener> and the Wasm filter
    # envoy.filters.http.wasm/envoyextensionpolicy/<ns>/<policy>/wasm/<index> (patch-policy.yaml).
    eep = one("EnvoyExtensionPolicy", "llmux")
    gw = one("Gateway", "llmux", folder="envoy-gateway")
    assert eep["spec"]["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                          "name": gw["metadata"]["name"]}]
    assert len(eep["spec"]["wasm"]) == 1
    filter_name = "envoy.filters.http.wasm/envoyextensionpolicy/{}/{}/wasm/0".format(
        eep["metadata"]["namespace"], eep["metadata"]["name"])
    (listener,) = gw["spec"]["listeners"]
    epp = one("EnvoyPatchPolicy", "llmux")
    assert epp["spec"]["targetRef"]["name"] == gw["metadata"]["name"]
    patch = epp["spec"]["jsonPatches"][0]
    assert patch["name"] == "{}/{}/{}".format(gw["metadata"]["namespace"], gw["metadata"]["name"], listener["name"])
    op = patch["operation"]
    assert f"[?(@.name=='{filter_name}')].typed_config.config" in op["jsonPath"]
    assert (op["op"], op["path"], op["value"]) == ("add", "allow_on_headers_stop_iteration", True)
    # The ratelimit cluster is Istio's (validated by Envoy below).
    eg_cluster = epp["spec"]["jsonPatches"][1]["operation"]["value"]
    istio_cluster = [p["patch"]["value"] for p in one("EnvoyFilter", "llmux")["spec"]["configPatches"]
                     if p["applyTo"] == "CLUSTER"][0]
    assert eg_cluster == istio_cluster
    assert eg_cluster["name"] == llmux_json()["rate_limit"]["cluster"]
    egc = yaml.safe_load(one("ConfigMap", "envoy-gateway-config")["data"]["envoy-gateway.yaml"])
    assert egc["extensionApis"] == {"enableEnvoyPatchPolicy": True, "enableBackend": True}
    assert egc["provider"]["kubernetes"]["deploy"]["type"] == "GatewayNamespace"


def test_ratelimit_configmap_is_envoy_ratelimit_config():
    cm = one("ConfigMap", "ratelimit-config")
    with open(os.path.join(ROOT, "envoy", "ratelimit", "config.yaml")) as f:
        assert yaml.safe_load(cm["data"]["llmux.yaml"]) == yaml.safe_load(f)
    assert yaml.safe_load(cm["data"]["llmux.yaml"])["domain"] == llmux_json()["rate_limit"]["domain"]


def test_llmux_serves_with_the_manifests_configuration(mock, log_dir):
    """The configuration of the manifests, in a real Envoy with the built filter: both providers
    answer (on the mock) for the placeholder key, other keys are refused."""
    config = llmux_json()
    for p in config["providers"].values():
        p["cluster"] = "mock"
    env = {k: v for k, v in os.environ.items() if k not in KEYS_ENV}
    env.update(KEYS_ENV)
    g = Gateway(mock, log_dir, llmux_config=config, env=env, name="envoy-manifests")
    try:
        for model in ("gpt-4o-mini", "claude-3-5-haiku"):
            r = g.post("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]},
                       headers={"authorization": f"Bearer {PLACEHOLDER_KEY}"})
            assert r.status_code == 200, r.text
            assert r.headers["x-llmux-provider"] == {"gpt-4o-mini": "openai", "claude-3-5-haiku": "anthropic"}[model]
        r = g.post("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                   headers={"authorization": "Bearer sk-other"})
        assert r.status_code == 401
    finally:
        g.stop()


def inline(http_filter, extension_configs):
    """An HTTP filter that names an extension config (config_discovery) with that config inlined
    and its module read from the built .wasm, as Istio's agent hands it to Envoy."""
    if "config_discovery" not in http_filter:
        return http_filter
    typed = copy.deepcopy(extension_configs[http_filter["name"]])
    typed["config"]["vm_config"]["code"] = {"local": {"filename": WASM}}
    return {"name": http_filter["name"], "typed_config": typed}


def test_istio_envoy_config_loads_in_envoy(tmp_path):
    """The Envoy configuration inside envoyfilter.yaml and failover.yaml (the CRD leaves it
    unchecked) assembled the way Istio applies it to a gateway, with the configuration that
    turns failover on, and loaded by `envoy --mode validate` (which also runs LLMux's
    configuration check): typos in Envoy field names, wrong types and a configuration LLMux
    refuses all fail here."""
    patches = (one("EnvoyFilter", "llmux")["spec"]["configPatches"]
               + one("EnvoyFilter", "llmux-failover")["spec"]["configPatches"])
    by_kind = {}
    for p in patches:
        by_kind.setdefault(p["applyTo"], []).append(p)
    ext = {p["patch"]["value"]["name"]: p["patch"]["value"]["typed_config"] for p in by_kind["EXTENSION_CONFIG"]}
    config = llmux_json()
    config["router"] = {"attempts_cluster": "llmux_attempts"}
    config["models"][0]["deployments"].append({"provider": "anthropic", "model": "claude-3-5-haiku-20241022"})
    ext["llmux/llmux"]["config"]["configuration"]["value"] = json.dumps(config)
    (main_filter,) = [p["patch"]["value"] for p in by_kind["HTTP_FILTER"]]
    assert by_kind["HTTP_FILTER"][0]["patch"]["operation"] == "INSERT_BEFORE"
    clusters = [p["patch"]["value"] for p in by_kind["CLUSTER"]]
    for c in clusters:
        opts = c.get("typed_extension_protocol_options", {}).get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {})
        if "http_filters" in opts:
            opts["http_filters"] = [inline(f, ext) for f in opts["http_filters"]]
    to_host = {p["cluster"]: p["host"] for p in config["providers"].values()}
    # Stand-ins for the clusters Istio makes from providers.yaml.
    clusters += [{"name": f"outbound|443||{h}", "type": "STATIC", "connect_timeout": "1s",
                  "load_assignment": {"cluster_name": f"outbound|443||{h}", "endpoints": [{"lb_endpoints": [
                      {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9}}}}]}]}}
                 for h in to_host.values()]
    # The gateway's routes: the failover route first (HTTP_ROUTE INSERT_FIRST), then the
    # VirtualService's header routes.
    routes = [p["patch"]["value"] for p in by_kind["HTTP_ROUTE"]]
    routes += [{"match": {"prefix": "/", "headers": [{"name": "x-llmux-cluster", "string_match": {"exact": c}}]},
                "request_headers_to_remove": ["x-llmux-cluster"],
                "route": {"cluster": f"outbound|443||{h}", "timeout": "600s"}} for c, h in to_host.items()]
    routes.append({"match": {"prefix": "/"}, "direct_response": {"status": 503}})
    gateway_listener = {
        "name": "0.0.0.0_8080",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "gateway",
                "route_config": {"name": "http.80", "virtual_hosts": [{"name": "*:80", "domains": ["*"], "routes": routes}]},
                "http_filters": [inline(main_filter, ext), {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            }}]}],
    }
    bootstrap = {
        # As Istio's bootstrap (tools/packaging/common/envoy_bootstrap.json) declares it.
        "bootstrap_extensions": [{"name": "envoy.bootstrap.internal_listener", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"}}],
        "static_resources": {
            "listeners": [gateway_listener] + [p["patch"]["value"] for p in by_kind["LISTENER"]],
            "clusters": clusters,
        },
    }
    path = tmp_path / "istio-gateway.yaml"
    path.write_text(json.dumps(bootstrap))
    env = {k: v for k, v in os.environ.items() if k not in KEYS_ENV}
    env.update(KEYS_ENV)
    r = validate_config(str(path), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "LLMux configured: 2 providers, 2 models" in r.stderr, r.stderr[-3000:]
    # And the same assembly fails once a field of the EnvoyFilter is misspelled.
    bootstrap["static_resources"]["listeners"][1]["internal_listenr"] = {}
    path.write_text(json.dumps(bootstrap))
    r = validate_config(str(path), env=env)
    assert r.returncode != 0 and "internal_listenr" in r.stderr + r.stdout
