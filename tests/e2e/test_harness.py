"""The harness itself: ports it hands out, and starting again when another process took one."""
import socket

import pytest

import harness


@pytest.fixture
def taken_first(monkeypatch):
    """free_port() gives first a port another socket listens on, then real free ones:
    (the taken port, the list of calls)."""
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real, calls = harness.free_port, []

    def free_port():
        calls.append(1)
        return taken if len(calls) == 1 else real()

    monkeypatch.setattr(harness, "free_port", free_port)
    yield taken, calls
    squatter.close()


def test_free_port_never_gives_the_same_port_twice():
    ports = [harness.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)


def test_gateway_starts_again_when_its_port_was_taken(mock, log_dir, taken_first):
    # Another process binds the port free_port() gave before Envoy does: the first Envoy cannot
    # bind it and exits; the harness starts a second one on fresh ports.
    taken, calls = taken_first
    g = harness.Gateway(mock, log_dir, name="envoy-port-taken")
    try:
        assert g.port != taken
        assert len(calls) >= 4  # listener + admin, twice
        r = g.post("/v1/chat/completions",
                   {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
    finally:
        g.stop()


def test_redis_starts_again_when_its_port_was_taken(log_dir, taken_first):
    taken, calls = taken_first
    r = harness.Redis(log_dir, name="redis-port-taken")
    try:
        assert r.port != taken and len(calls) == 2
        with socket.create_connection(("127.0.0.1", r.port), timeout=2) as c:
            c.sendall(b"PING\r\n")
            assert c.recv(16).startswith(b"+PONG")
    finally:
        r.stop()
