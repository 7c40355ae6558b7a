import os
import shutil
import subprocess

import pytest

from harness import MOCK, RLS, ROOT, WASM, Gateway, Mock, envoy_path, envoy_site, tmpdir


def pytest_sessionstart(session):
    for path, how in ((WASM, "make wasm"), (MOCK, "make mock"), (RLS, "make rls")):
        if not os.path.exists(path):
            raise pytest.UsageError(f"{path} is missing: run `{how}` (or `make test`)")
    version = os.environ.get("LLMUX_ENVOY", "").strip()
    if version:
        try:
            path = envoy_path()
        except RuntimeError as e:
            raise pytest.UsageError(str(e))
        reported = _envoy_version(path)
        if reported != version:
            raise pytest.UsageError(f"LLMUX_ENVOY={version}: {path} says it is Envoy {reported}")
        # What the tests start through `make run` (scripts/run.sh finds Envoy with
        # `import envoy`) runs this Envoy too.
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (envoy_site(version), os.environ.get("PYTHONPATH")) if p)


def _envoy_version(path):
    # "envoy  version: <sha>/1.36.4/Clean/RELEASE/BoringSSL"
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
    fields = out.split("version:", 1)[-1].strip().split("/")
    return fields[1] if len(fields) > 1 else out.strip()


def _version_under_test():
    version = os.environ.get("LLMUX_ENVOY", "").strip()
    return version or _envoy_version(envoy_path())


def pytest_collection_modifyitems(config, items):
    # The tests known to fail on the Envoy under test (tests/envoy-versions.txt) are strict
    # xfails: still run, and one that passes fails the run, so the list stays true.
    import envoy_versions  # scripts/, on sys.path through harness

    version = _version_under_test()
    known = envoy_versions.known_failures(version)
    if not known:
        return
    for item in items:
        test_id = os.path.relpath(str(item.path), ROOT) + "::" + item.nodeid.split("::", 1)[1]
        for prefix, why in known:
            if test_id == prefix or test_id.startswith(prefix + "["):
                item.add_marker(pytest.mark.xfail(reason=f"known on Envoy {version}: {why}",
                                                  strict=True))


def pytest_report_header(config):
    try:
        path = envoy_path()
    except RuntimeError as e:
        return f"envoy: {e}"
    return f"envoy: {_envoy_version(path)} ({path})"


@pytest.fixture(scope="session")
def log_dir():
    d = tmpdir("llmux-e2e-")
    yield d
    if os.environ.get("LLMUX_KEEP_LOGS") != "1":
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def mock(log_dir):
    m = Mock(log_dir)
    yield m
    m.stop()


@pytest.fixture(scope="session")
def gateway(mock, log_dir):
    """The quick-start configuration (both models on the mock), as `make run` starts it."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    g = Gateway(mock, log_dir, env=env)
    yield g
    g.stop()
    # No request may have killed the VM.
    assert "panicked" not in g.process.log()


def _gateways(mock, log_dir):
    started = []

    def start(llmux_config, **kw):
        g = Gateway(mock, log_dir, llmux_config=llmux_config, name=f"envoy-{len(started)}-{os.getpid()}-{id(started)}", **kw)
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop()
    # No request may have killed a VM.
    for g in started:
        assert "panicked" not in g.process.log(), g.process.log_path


@pytest.fixture
def make_gateway(mock, log_dir):
    """Starts extra gateways with their own filter configuration; stops them after the test."""
    yield from _gateways(mock, log_dir)


@pytest.fixture(scope="module")
def make_module_gateway(mock, log_dir):
    """Like make_gateway, for a gateway the tests of one module share: started once (an Envoy
    start compiles the .wasm, ~4 CPU-seconds), stopped after the module. Only for tests that
    tell their requests apart (x-mock-id, their own model names) and read no shared counters."""
    yield from _gateways(mock, log_dir)
