"""`make oci` (scripts/oci.py) builds an image Istio's WasmPlugin and Envoy Gateway's EnvoyExtensionPolicy pull.

Each variant is built twice (same digest, same tar), served by a tiny read-only registry speaking the OCI
distribution API on 127.0.0.1, pulled back with the `oras` client, and checked the way their fetcher reads
it (istio/istio pkg/wasm/imagefetcher.go, the same in envoyproxy/gateway internal/wasm/imagefetcher.go):
the variant's media types and layer count, every blob against its digest, the module being the exact
bytes of the built llmux.wasm, and the printed sha256 being the manifest digest both compare it with
(istio/istio pkg/wasm/cache.go, envoyproxy/gateway internal/wasm/cache.go). `push` is run against the same
stand-in registry made writable (not a real registry). The negative tests show each check failing on an
image that breaks it.
"""
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler, HTTPServer

import oras.layout
import oras.provider
import pytest

from harness import ROOT, WASM

SCRIPT = os.path.join(ROOT, "scripts", "oci.py")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import oci  # noqa: E402  (to write images build refuses)

REPO = "llmux"
# What the pullers expect, stated here rather than taken from the script under test
# (istio/istio pkg/wasm/imagefetcher.go; go-containerregistry pkg/v1/types; opencontainers/image-spec).
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
REF_NAME = "org.opencontainers.image.ref.name"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def scratch():
    d = tempfile.mkdtemp(prefix="llmux-oci-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def build(out, variant, wasm=WASM, check=True):
    return subprocess.run([sys.executable, SCRIPT, "build", "--wasm", wasm, "--out", out, "--variant", variant,
                           "--repo", "registry.example/llmux"], capture_output=True, text=True, check=check)


class Registry:
    """Serves one OCI image layout as repository `llmux` (distribution-spec: GET/HEAD /v2/,
    /v2/<name>/manifests/<tag|digest>, /v2/<name>/blobs/<digest>). Bytes are served as they are on
    disk, unchecked, as a registry with a corrupted store would. Read-only unless `writable`: then it
    also takes a monolithic blob upload (POST, then PUT ?digest=) and a manifest PUT, for `push`."""

    def __init__(self, layout, writable=False):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.answer(self, body=True)

            def do_HEAD(self):
                outer.answer(self, body=False)

            def do_POST(self):
                outer.receive(self)

            def do_PUT(self):
                outer.receive(self)

            def log_message(self, *args):
                pass

        self.layout, self.writable = layout, writable
        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="oci-registry")
        self.host = f"127.0.0.1:{self.server.server_port}"

    def answer(self, req, body):
        with open(os.path.join(self.layout, "index.json")) as f:
            index = json.load(f)["manifests"]
        m = re.fullmatch(rf"/v2/{REPO}/(manifests|blobs)/([\w.:-]+)", req.path)
        content_type, data, found = "application/json", b"{}", None
        if req.path == "/v2/":
            found = ""
        elif m and m[1] == "manifests":
            entry = next((e for e in index if m[2] in (e["digest"], e["annotations"].get(REF_NAME))), None)
            if entry:
                found, content_type = entry["digest"], entry["mediaType"]
        elif m and DIGEST.fullmatch(m[2]):
            found, content_type = m[2], "application/octet-stream"
        if found:
            path = os.path.join(self.layout, "blobs", "sha256", found.split(":", 1)[1])
            if os.path.exists(path):
                with open(path, "rb") as f:
                    data = f.read()
            else:
                found = None
        if found is None:
            data = json.dumps({"errors": [{"code": "NOT_FOUND", "message": req.path}]}).encode()
        req.send_response(200 if found is not None else 404)
        req.send_header("Content-Type", content_type)
        req.send_header("Content-Length", str(len(data)))
        req.send_header("Docker-Distribution-API-Version", "registry/2.0")
        if found:
            req.send_header("Docker-Content-Digest", found)
        req.end_headers()
        if body:
            req.wfile.write(data)

    def receive(self, req):
        url = urllib.parse.urlsplit(req.path)
        data = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        m = re.fullmatch(rf"/v2/{REPO}/(blobs/uploads|manifests)/([\w.:-]*)", url.path)
        headers, status = {}, 404
        if not self.writable or not m:
            pass
        elif req.command == "POST" and m[1] == "blobs/uploads":
            status, headers = 202, {"Location": f"/v2/{REPO}/blobs/uploads/1"}
        elif req.command == "PUT" and m[1] == "blobs/uploads":
            claimed = urllib.parse.parse_qs(url.query).get("digest", [""])[0]
            status = 201 if sha(data) == claimed else 400
        elif req.command == "PUT" and m[1] == "manifests":
            status, headers = 201, {"Docker-Content-Digest": sha(data)}
            entry = {"mediaType": req.headers["Content-Type"], "digest": sha(data), "size": len(data),
                     "annotations": {REF_NAME: m[2]}}
            with open(os.path.join(self.layout, "index.json"), "w") as f:
                json.dump({"schemaVersion": 2, "manifests": [entry]}, f)
        if status == 201:
            with open(os.path.join(self.layout, "blobs", "sha256", sha(data).split(":", 1)[1]), "wb") as f:
                f.write(data)
        req.send_response(status)
        for k, v in headers.items():
            req.send_header(k, v)
        req.send_header("Content-Length", "0")
        req.end_headers()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def pull(layout, into, ref="latest"):
    """Serves `layout`, pulls `llmux:<ref>` (or `llmux@<digest>`) into the layout `into` with oras."""
    with Registry(layout) as reg:
        client = oras.provider.Registry(hostname=reg.host, insecure=True)
        try:
            sep = "@" if ref.startswith("sha256:") else ":"
            oras.layout.NewLayoutFromRegistry(into, client, f"{reg.host}/{REPO}{sep}{ref}")
        finally:
            client.session.close()
    return into


def read_blob(layout, desc):
    """A blob of a pulled layout, checked against its descriptor's digest and size (as go-containerregistry
    checks what it reads)."""
    with open(os.path.join(layout, "blobs", "sha256", desc["digest"].split(":", 1)[1]), "rb") as f:
        data = f.read()
    assert sha(data) == desc["digest"], f"blob {desc['digest']} has digest {sha(data)}"
    assert len(data) == desc["size"], f"blob {desc['digest']} has {len(data)} bytes, descriptor says {desc['size']}"
    return data


def plugin_wasm(layer):
    """extractWasmPluginBinary: gunzip, then the first tar entry whose base name is plugin.wasm."""
    with tarfile.open(fileobj=io.BytesIO(zlib.decompress(layer, 31)), mode="r:") as tar:
        for member in tar:
            if os.path.basename(member.name) == "plugin.wasm":
                return tar.extractfile(member).read()
    raise AssertionError("no plugin.wasm in the layer")


def check_image(layout, variant, wasm):
    """What the pullers check, on a pulled layout: returns the manifest digest."""
    with open(os.path.join(layout, "index.json")) as f:
        entry = json.load(f)["manifests"][0]
    manifest = json.loads(read_blob(layout, entry))
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == OCI_MANIFEST
    layers = manifest["layers"]
    config = read_blob(layout, manifest["config"])
    if variant == "compat":  # extractOCIStandardImage: the last layer, tar+gzip, holding plugin.wasm
        assert manifest["config"]["mediaType"] == OCI_CONFIG
        assert [layer["mediaType"] for layer in layers] == [OCI_LAYER_TAR_GZIP]
        blob = read_blob(layout, layers[-1])
        module = plugin_wasm(blob)
        assert json.loads(config)["rootfs"]["diff_ids"] == [sha(zlib.decompress(blob, 31))]
    else:  # extractOCIArtifactImage: exactly two layers, the module raw in the +wasm one
        assert manifest["config"]["mediaType"] == WASM_CONFIG
        assert len(layers) == 2, f"{len(layers)} layers"
        kinds = {layer["mediaType"]: layer for layer in layers}
        assert set(kinds) == {WASM_CONFIG, WASM_LAYER}, f"layer media types {list(kinds)}"
        assert json.loads(read_blob(layout, kinds[WASM_CONFIG]))["type"] == "envoy_proxy"
        module = read_blob(layout, kinds[WASM_LAYER])
    assert len(module) >= 8 and module[:4] == b"\0asm", "not a Wasm module"  # cache.go isValidWasmBinary
    assert module == wasm, f"the image's module ({sha(module)}) is not the built llmux.wasm ({sha(wasm)})"
    return entry["digest"]


def check_printed(out, manifest_digest, wasm):
    """The printed lines: WasmPlugin's and EnvoyExtensionPolicy's sha256 fields are the manifest digest's hex
    (cache.go compares them with the pulled image's digest); the wasm's sha256 is printed as such."""
    assert re.search(rf"^manifest digest: {manifest_digest}$", out, re.M), out
    assert re.search(rf"^wasm sha256: {sha(wasm)}$", out, re.M), out
    hexd = manifest_digest.split(":", 1)[1]
    assert re.search(rf"^  url: oci://registry.example/llmux@{manifest_digest}\n  sha256: {hexd}$", out, re.M), out
    assert re.search(rf"^    url: registry.example/llmux@{manifest_digest}\n    sha256: {hexd}$", out, re.M), out


@pytest.fixture(scope="module")
def wasm():
    with open(WASM, "rb") as f:
        return f.read()


@pytest.mark.parametrize("variant", ["compat", "oci"])
def test_image_is_reproducible_and_pulls_back_as_the_built_wasm(variant, wasm, scratch):
    first, second = build(os.path.join(scratch, "a"), variant), build(os.path.join(scratch, "b"), variant)
    digests = [DIGEST.search(r.stdout.split("manifest digest:", 1)[1])[0] for r in (first, second)]
    assert digests[0] == digests[1], "two builds of the same .wasm gave two digests"
    tars = []
    for d in "ab":
        with open(os.path.join(scratch, d, "llmux.tar"), "rb") as f:
            tars.append(f.read())
    assert tars[0] == tars[1], "two builds gave two different tars"

    layout = os.path.join(scratch, "a", "llmux")
    by_tag = check_image(pull(layout, os.path.join(scratch, "pulled")), variant, wasm)
    by_digest = check_image(pull(layout, os.path.join(scratch, "pulled2"), digests[0]), variant, wasm)
    assert by_tag == by_digest == digests[0]
    check_printed(first.stdout, by_tag, wasm)
    # The tar holds the same layout.
    with tarfile.open(os.path.join(scratch, "a", "llmux.tar")) as tar:
        tar.extractall(os.path.join(scratch, "untarred"), filter="data")
    assert check_image(os.path.join(scratch, "untarred"), variant, wasm) == digests[0]


@pytest.mark.parametrize("variant", ["compat", "oci"])
def test_push_uploads_the_same_image(variant, wasm, scratch):
    """`scripts/oci.py push` (oras) against the writable stand-in registry, not a real one: the image it
    stores is byte for byte the built one, and pulls back as the built llmux.wasm."""
    built = build(os.path.join(scratch, "out"), variant).stdout
    store = os.path.join(scratch, "store")
    os.makedirs(os.path.join(store, "blobs", "sha256"))
    with open(os.path.join(store, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": []}, f)
    with Registry(store, writable=True) as reg:
        r = subprocess.run([sys.executable, SCRIPT, "push", "--out", os.path.join(scratch, "out"),
                            f"{reg.host}/{REPO}:0.1.0", "--insecure"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    manifest_digest = DIGEST.search(built.split("manifest digest:", 1)[1])[0]
    assert f"url: oci://{reg.host}/{REPO}@{manifest_digest}" in r.stdout
    pulled = pull(store, os.path.join(scratch, "pulled"), "0.1.0")
    assert check_image(pulled, variant, wasm) == manifest_digest


@pytest.mark.parametrize("variant", ["compat", "oci"])
def test_a_corrupted_blob_is_caught(variant, wasm, scratch):
    build(scratch, variant)
    layout = os.path.join(scratch, "llmux")
    with open(os.path.join(layout, "index.json")) as f:
        manifest = json.loads(read_blob(layout, json.load(f)["manifests"][0]))
    path = os.path.join(layout, "blobs", "sha256", manifest["layers"][-1]["digest"].split(":", 1)[1])
    with open(path, "r+b") as f:  # one byte of the module's layer, same size
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(AssertionError, match="has digest"):
        check_image(pull(layout, os.path.join(scratch, "pulled")), variant, wasm)


def test_each_variant_fails_the_other_variants_checks(wasm, scratch):
    for built, other in (("compat", "oci"), ("oci", "compat")):
        build(os.path.join(scratch, built), built)
        pulled = pull(os.path.join(scratch, built, "llmux"), os.path.join(scratch, built + "-pulled"))
        check_image(pulled, built, wasm)
        with pytest.raises(AssertionError):
            check_image(pulled, other, wasm)


@pytest.mark.parametrize("variant", ["compat", "oci"])
def test_another_module_is_not_taken_for_the_built_one(variant, wasm, scratch):
    other = os.path.join(scratch, "other.wasm")
    with open(other, "wb") as f:
        f.write(b"\0asm\x01\x00\x00\x00")  # the smallest valid module
    out = build(os.path.join(scratch, "out"), variant, wasm=other).stdout
    pulled = pull(os.path.join(scratch, "out", "llmux"), os.path.join(scratch, "pulled"))
    with pytest.raises(AssertionError, match="is not the built llmux.wasm"):
        check_image(pulled, variant, wasm)
    manifest_digest = check_image(pulled, variant, b"\0asm\x01\x00\x00\x00")
    check_printed(out, manifest_digest, b"\0asm\x01\x00\x00\x00")
    with pytest.raises(AssertionError):  # the printed lines name this image, not the llmux one
        check_printed(out, manifest_digest, wasm)
    with pytest.raises(AssertionError):
        check_printed(out, sha(b"another manifest"), b"\0asm\x01\x00\x00\x00")


def test_a_module_without_the_wasm_magic_or_a_layer_without_plugin_wasm_fails(scratch):
    manifest, blobs = oci.image(b"not a module", "oci")  # what build refuses, written anyway
    oci.write_layout(os.path.join(scratch, "llmux"), manifest, blobs, "latest")
    with pytest.raises(AssertionError, match="not a Wasm module"):
        check_image(os.path.join(scratch, "llmux"), "oci", b"not a module")
    no_plugin = io.BytesIO()
    with tarfile.open(fileobj=no_plugin, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("other.wasm"))
    with pytest.raises(AssertionError, match="no plugin.wasm"):
        plugin_wasm(gzip.compress(no_plugin.getvalue()))


def test_a_file_that_is_not_wasm_is_refused(scratch):
    bad = os.path.join(scratch, "bad.wasm")
    with open(bad, "wb") as f:
        f.write(b"not a module")
    r = build(os.path.join(scratch, "out"), "compat", wasm=bad, check=False)
    assert r.returncode != 0 and "not a Wasm module" in r.stderr
    assert not os.path.exists(os.path.join(scratch, "out", "llmux"))
