#!/usr/bin/env python3
"""Packs the built filter as an OCI image that Istio and Envoy Gateway pull, without Docker.

Istio's WasmPlugin (`url: oci://...`) and Envoy Gateway's EnvoyExtensionPolicy (`code.type: Image`)
load a Wasm filter from a registry. This writes such an image of target/wasm32-wasip1/release/llmux.wasm
as an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`) plus a tar of it, byte for byte
the same for the same .wasm (and the same zlib), and pushes the layout to a registry with the `oras` PyPI package:

    python3 scripts/oci.py build [--variant compat|oci] [--repo ghcr.io/me/llmux] [--out build/oci]
    .venv/bin/python scripts/oci.py push ghcr.io/me/llmux:0.1.0 [--insecure]

What both pullers accept (the same fetcher: istio/istio pkg/wasm/imagefetcher.go, copied into
envoyproxy/gateway internal/wasm/imagefetcher.go; both follow https://github.com/solo-io/wasm/tree/master/spec):
- compat (the default): a regular OCI image whose last layer is a tar+gzip holding `plugin.wasm`. The
  format Envoy Gateway documents (site/content/en/latest/tasks/extensibility/build-wasm-image.md), and
  one any registry stores.
- oci: exactly two layers, the runtime config JSON and the raw module. Custom media types, which some
  registries refuse.
Neither takes the CNCF Wasm artifact (one `application/wasm` layer, config `application/vnd.wasm.config.v0+json`,
https://tag-runtime.cncf.io/wgs/wasm/deliverables/wasm-oci-artifact/): its single layer is neither a
tar+gzip nor one of two layers, so it is not built.
"""
import argparse
import hashlib
import io
import json
import os
import re
import shutil
import struct
import sys
import tarfile
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WASM = os.path.join(ROOT, "target", "wasm32-wasip1", "release", "llmux.wasm")
DEFAULT_OUT = os.path.join(ROOT, "build", "oci")
NAME = "llmux"  # the layout is <out>/llmux, its tar <out>/llmux.tar

# OCI image-spec media types (https://github.com/opencontainers/image-spec/blob/main/media-types.md).
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
# The tag of the manifest in index.json (image-spec annotations.md); `oras` pushes by it.
REF_NAME = "org.opencontainers.image.ref.name"
TITLE = "org.opencontainers.image.title"
# compat variant: the layer's file name and the manifest annotation (solo-io/wasm spec/spec-compat.md;
# the file is found by its base name in imagefetcher.go extractWasmPluginBinary).
COMPAT_FILE = "plugin.wasm"
COMPAT_ANNOTATION = {"module.wasm.image/variant": "compat"}
# oci variant (solo-io/wasm spec/spec.md "Format"; imagefetcher.go extractOCIArtifactImage wants
# exactly 2 layers, one of WASM_LAYER, read as the raw module). The runtime config JSON ("type":
# "envoy_proxy", "abiVersions": spec.md "Envoy WASM Filter Specification", titled runtime-config.json
# as in its example) is both the manifest's config and the first layer, as `wasme push` wrote it.
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
WASM_MAGIC = b"\0asm"  # https://webassembly.github.io/spec/core/binary/modules.html#binary-module


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj):
    """JSON with sorted keys and no spaces: the same object always gives the same bytes (and digest)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def descriptor(media_type, data, annotations=None):
    d = {"mediaType": media_type, "digest": digest(data), "size": len(data)}
    if annotations:
        d["annotations"] = annotations
    return d


def gzip_fixed(data):
    """gzip (RFC 1952) with mtime 0 and OS "unknown" written here, so the bytes depend on zlib's deflate
    only, not on the Python version's gzip header (3.12 lets zlib write it)."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = deflate.compress(data) + deflate.flush()
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # magic, deflate, no flags, mtime 0, best, OS 255
    return header + body + struct.pack("<LL", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def plugin_tar(wasm):
    """A tar holding only plugin.wasm, with fixed owner, mode and time."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(COMPAT_FILE)
        info.size, info.mode, info.mtime = len(wasm), 0o644, 0
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def abi_versions(wasm):
    """The proxy-wasm ABI the module exports (`proxy_abi_version_0_2_1` -> `v0.2.1`), for the runtime config."""
    found = re.findall(rb"proxy_abi_version_(\d+)_(\d+)_(\d+)", wasm)
    return sorted({"v" + b".".join(parts).decode() for parts in found})


def image(wasm, variant):
    """(manifest bytes, {digest: blob}) of the image holding `wasm`."""
    if variant == "compat":
        tar = plugin_tar(wasm)
        layer = gzip_fixed(tar)
        # A valid image config: rootfs.diff_ids names the uncompressed layer (image-spec config.md);
        # os/architecture are Go's names for the target (wasip1/wasm).
        config = canonical({"architecture": "wasm", "os": "wasip1",
                            "rootfs": {"type": "layers", "diff_ids": [digest(tar)]}})
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": descriptor(OCI_CONFIG, config),
                    "layers": [descriptor(OCI_LAYER_TAR_GZIP, layer)],
                    "annotations": COMPAT_ANNOTATION}
        blobs = [config, layer]
    elif variant == "oci":
        config = canonical({"type": "envoy_proxy", "abiVersions": abi_versions(wasm)})
        config_desc = descriptor(WASM_CONFIG, config, {TITLE: "runtime-config.json"})
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc,
                    "layers": [config_desc, descriptor(WASM_LAYER, wasm, {TITLE: COMPAT_FILE})]}
        blobs = [config, wasm]
    else:
        raise ValueError(f"unknown variant {variant!r}")
    manifest = canonical(manifest)
    return manifest, {digest(b): b for b in blobs + [manifest]}


def write_layout(path, manifest, blobs, tag):
    """An OCI image layout (image-spec image-layout.md) at `path`, replacing an earlier one."""
    if os.path.isdir(path):
        if os.listdir(path) and not os.path.exists(os.path.join(path, "oci-layout")):
            sys.exit(f"{path} exists and is not an OCI layout: not replacing it")
        shutil.rmtree(path)
    files = {
        "oci-layout": canonical({"imageLayoutVersion": "1.0.0"}),
        "index.json": canonical({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                 "manifests": [descriptor(OCI_MANIFEST, manifest, {REF_NAME: tag})]}),
    }
    files.update({"blobs/sha256/" + d.split(":", 1)[1]: b for d, b in blobs.items()})
    for rel, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(path, rel)), exist_ok=True)
        with open(os.path.join(path, rel), "wb") as f:
            f.write(data)
    return files


def write_tar(path, files):
    """The layout as a tar (what `skopeo copy oci-archive:` reads): sorted entries, fixed owner and time."""
    dirs = sorted({d for rel in files for d in ("blobs", "blobs/sha256") if rel.startswith("blobs/")})
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for rel in sorted(files):
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(files[rel]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[rel]))


def build(args):
    with open(args.wasm, "rb") as f:
        wasm = f.read()
    if not wasm.startswith(WASM_MAGIC):
        sys.exit(f"{args.wasm} is not a Wasm module (no \\0asm magic)")
    manifest, blobs = image(wasm, args.variant)
    layout = os.path.join(args.out, NAME)
    files = write_layout(layout, manifest, blobs, args.tag)
    write_tar(layout + ".tar", files)
    m = digest(manifest)
    hexd = m.split(":", 1)[1]
    print(f"variant: {args.variant}\nlayout: {layout}\ntar: {layout}.tar")
    print(f"manifest digest: {m}")
    print(f"wasm sha256: {digest(wasm)}")
    # Both fields take hex only (istio/api CRD: pattern (^$|^[a-f0-9]{64}$)). For an oci:// module Istio and
    # Envoy Gateway compare them with the manifest digest, not the module's sha256 (istio/istio
    # pkg/wasm/cache.go, envoyproxy/gateway internal/wasm/cache.go: dChecksum from PrepareFetch).
    print(f"""
Istio WasmPlugin (sha256 is the image's manifest digest: Istio compares it with the pulled image's digest):
  url: oci://{args.repo}@{m}
  sha256: {hexd}
Envoy Gateway EnvoyExtensionPolicy (code.type: Image; image.sha256 is also the manifest digest):
  image:
    url: {args.repo}@{m}
    sha256: {hexd}
For a url: that names llmux.wasm itself (file://, https://), sha256 is the wasm's: {digest(wasm).split(':', 1)[1]}
Publish it: make oci-push OCI_REF={args.repo}:{args.tag}  (scripts/oci.py push {args.repo}:{args.tag})""")


def push(args):
    import oras.layout  # PyPI `oras` (tests/requirements.txt), only needed here
    import oras.provider
    import requests  # comes with oras

    ref, layout = args.ref, os.path.join(args.out, NAME)
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag or "/" not in repo:
        sys.exit(f"push wants REGISTRY/REPOSITORY:TAG, got {ref!r}")
    with open(os.path.join(layout, "index.json"), "rb") as f:
        entry = json.load(f)["manifests"][0]
    host = repo.split("/", 1)[0]
    # Most registries answer /v2/ with a Bearer challenge (token auth: ghcr.io, Docker Hub, Harbor); a
    # plain htpasswd registry (distribution's `auth: htpasswd`) with Basic, which oras' token backend
    # mistakes for a token realm. https://distribution.github.io/distribution/spec/auth/token/
    try:
        challenge = requests.get(f"{'http' if args.insecure else 'https'}://{host}/v2/", timeout=30)
    except requests.RequestException as e:
        sys.exit(f"cannot reach {host}: {e}")
    basic = challenge.headers.get("Www-Authenticate", "").lower().startswith("basic")
    registry = oras.provider.Registry(hostname=host, insecure=args.insecure,
                                      auth_backend="basic" if basic else "token")
    # Credentials: what `docker login` / `oras login` saved (oras reads ~/.docker/config.json; we add
    # $DOCKER_CONFIG's), or ORAS_USER and ORAS_PASS (oras' own names).
    configs = [os.path.join(os.environ["DOCKER_CONFIG"], "config.json")] if os.environ.get("DOCKER_CONFIG") else None
    registry.auth.load_configs(registry.get_container(ref), configs=configs)
    if os.environ.get("ORAS_USER"):
        registry.auth.set_basic_auth(os.environ["ORAS_USER"], os.environ.get("ORAS_PASS", ""))
    # Without credentials oras would retry for minutes before failing; say so now. (`_basic_auth` is
    # where oras 0.2.43 keeps the credentials it found.)
    if challenge.status_code == 401 and not getattr(registry.auth, "_basic_auth", None):
        sys.exit(f"{host} asks for credentials: `docker login {host}`, or set ORAS_USER and ORAS_PASS")
    oras.layout.Layout(layout).push_to_registry(registry, ref, tag=entry["annotations"][REF_NAME])
    got = registry.do_request(f"{registry.prefix}://{registry.get_container(ref).manifest_url()}", "GET",
                              headers={"Accept": entry["mediaType"]})
    if got.status_code != 200 or digest(got.content) != entry["digest"]:
        sys.exit(f"pushed, but {ref} reads back as {got.status_code} {digest(got.content)}, not {entry['digest']}")
    print(f"pushed {ref}\nurl: oci://{repo}@{entry['digest']}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write the OCI layout and its tar")
    b.add_argument("--wasm", default=DEFAULT_WASM, help="the module (default: the release build)")
    b.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: build/oci)")
    b.add_argument("--variant", choices=["compat", "oci"], default="compat",
                   help="compat: tar+gzip layer holding plugin.wasm (default); oci: raw module layer")
    b.add_argument("--repo", default="<registry>/llmux", help="repository shown in the printed lines")
    b.add_argument("--tag", default="latest", help="tag recorded in index.json (push's default)")
    u = sub.add_parser("push", help="push the layout to a registry (PyPI oras)")
    u.add_argument("ref", help="REGISTRY/REPOSITORY:TAG")
    u.add_argument("--out", default=DEFAULT_OUT, help="folder build wrote to (default: build/oci)")
    u.add_argument("--insecure", action="store_true", help="plain HTTP (a local registry)")
    args = p.parse_args(argv)
    build(args) if args.cmd == "build" else push(args)


if __name__ == "__main__":
    main()
