import os
import shutil

import pytest

from harness import MOCK, RLS, WASM, Gateway, Mock, tmpdir


def pytest_sessionstart(session):
    for path, how in ((WASM, "make wasm"), (MOCK, "make mock"), (RLS, "make rls")):
        if not os.path.exists(path):
            raise pytest.UsageError(f"{path} is missing: run `{how}` (or `make test`)")


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


@pytest.fixture
def make_gateway(mock, log_dir):
    """Starts extra gateways with their own filter configuration; stops them after the test."""
    started = []

    def start(llmux_config, **kw):
        g = Gateway(mock, log_dir, llmux_config=llmux_config, name=f"envoy-{len(started)}-{os.getpid()}-{id(started)}", **kw)
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop()
