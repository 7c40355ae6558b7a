"""The README's quick start, as written: `make run`, the curl commands, `make stop`
(on free ports, so it can run beside anything else)."""
import json
import os
import re
import subprocess
import time

import pytest

from harness import ROOT, free_port


def readme_curls():
    text = open(os.path.join(ROOT, "README.md")).read()
    quick = text.split("## Quick start", 1)[1].split("## Tests", 1)[0]
    block = re.findall(r"```sh\n(.*?)```", quick, re.S)[1]
    commands = [c.strip() for c in re.split(r"\n\s*\n", block.replace("\\\n", " ")) if c.strip()]
    assert all(c.startswith("curl") for c in commands), commands
    return commands


@pytest.fixture
def running(tmp_path):
    ports = {"LISTEN_PORT": free_port(), "ADMIN_PORT": free_port(), "MOCK_PORT": free_port()}
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")}
    env.update({k: str(v) for k, v in ports.items()})
    env["RUN_DIR"] = str(tmp_path / "run")
    args = [f"{k}={v}" for k, v in ports.items()] + [f"RUN_DIR={tmp_path / 'run'}"]
    started = subprocess.run(["make", "-s", "run", *args], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"http://127.0.0.1:{ports['LISTEN_PORT']}/v1" in started.stdout
        yield ports, tmp_path / "run"
    finally:
        stopped = subprocess.run(["make", "-s", "stop", f"RUN_DIR={tmp_path / 'run'}"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0, stopped.stderr


def test_readme_quick_start_works_as_written(running):
    ports, run_dir = running
    outputs = []
    for cmd in readme_curls():
        cmd = cmd.replace("localhost:10000", f"localhost:{ports['LISTEN_PORT']}")
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, (cmd, r.stderr)
        outputs.append(r.stdout)
    models, plain, streamed, embeddings, status = outputs
    status = json.loads(status)
    assert status["failover"] is True
    # One deployment each: nothing to choose, so no shared-state bookkeeping on their path.
    assert [m["tracked"] for m in status["models"]] == [False, False, False]
    assert all(m["deployments"][0]["healthy"] for m in status["models"])
    assert [m["id"] for m in json.loads(models)["data"]] == ["gpt-4o-mini", "claude-3-5-haiku",
                                                             "text-embedding-3-small"]
    vectors = json.loads(embeddings)["data"]
    assert [len(v["embedding"]) for v in vectors] == [4, 4]
    answer = json.loads(plain)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "Hello from the mock! You said: Hello!"
    events = [e for e in streamed.split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][len("data: "):])["usage"]["completion_tokens"] > 0
    # The per-request debug line the README promises, in the log it names.
    log = (run_dir / "envoy.log").read_text()
    assert re.search(r"llmux request_id=\S+ model=claude-3-5-haiku provider=anthropic "
                     r"upstream_model=claude-3-5-haiku-20241022 stream=true status=200 "
                     r"prompt_tokens=\d+ completion_tokens=\d+ cached_tokens=0 latency_ms=\d+", log)
    # The JSON access log (one line per request, flushed every second) and the metrics.
    deadline = time.monotonic() + 15
    lines = []
    while time.monotonic() < deadline and len(lines) < 5:
        path = run_dir / "access.log"
        lines = [json.loads(l) for l in path.read_text().splitlines() if l] if path.exists() else []
        time.sleep(0.1)  # polling with a deadline for Envoy's log flush
    assert [l["model"] for l in lines] == [None, "claude-3-5-haiku", "claude-3-5-haiku",
                                           "text-embedding-3-small", None]
    assert lines[2]["ttft_ms"].isdigit() and int(lines[2]["output_tokens"]) > 0
    prom = subprocess.run(["curl", "-s", f"http://127.0.0.1:{ports['ADMIN_PORT']}/stats/prometheus"],
                          capture_output=True, text=True, timeout=30).stdout
    assert re.search(r'llmux_requests\{gen_ai_request_model="claude-3-5-haiku",.*llmux_stream="true"[^}]*\} 1', prom)


def test_stop_leaves_nothing_running(tmp_path):
    run_dir = tmp_path / "run"
    ports = [free_port() for _ in range(3)]
    args = [f"LISTEN_PORT={ports[0]}", f"ADMIN_PORT={ports[1]}", f"MOCK_PORT={ports[2]}", f"RUN_DIR={run_dir}"]
    assert subprocess.run(["make", "-s", "run", *args], cwd=ROOT, capture_output=True, timeout=600).returncode == 0
    pids = [int((run_dir / f"{n}.pid").read_text()) for n in ("envoy", "mock")]
    assert subprocess.run(["make", "-s", "stop", f"RUN_DIR={run_dir}"], cwd=ROOT, capture_output=True,
                          timeout=60).returncode == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
