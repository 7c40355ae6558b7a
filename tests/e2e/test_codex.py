"""Codex CLI (npm `@openai/codex`, pinned in tests/clients/codex, installed by `make clients-codex`),
run unmodified as `codex exec` against LLMux: a model provider at LLMux with the Responses wire
API (`wire_api = "responses"`) in a throwaway CODEX_HOME, models served by an Anthropic-protocol
and a Gemini-protocol deployment on the mock. Codex always streams on that wire API (`stream:
true`), so every run here is a streamed one.

The mock plays the model through headers Codex itself sends (the provider's `http_headers`,
let through by the gateway's `client_headers: ["x-mock-*"]`): `x-mock-tool-use: exec_command
{"cmd": ...}` makes it call Codex's shell tool first and, once the conversation holds the tool's
output, answer `The tool said: <output>` — so Codex runs the command on the machine and sends
the result back through LLMux.

Offline: Codex 0.171 reaches for ab.chatgpt.com (analytics) and github.com, api.github.com and
chatgpt.com (plugins) besides its model provider (measured with strace: DNS look-ups only, as
this machine has no internet); `[analytics] enabled = false` and `features.plugins = false` stop
all of them. A proxy that refuses every connection (HTTPS_PROXY at a closed port, NO_PROXY for
loopback) catches anything else.

What Codex sends by default and LLMux refuses for a translated provider: a `namespace` tool
(`multi_agent_v1`, the sub-agent tools grouped) and the hosted `web_search` tool; the runs here
switch both off (`features.multi_agent = false`, `web_search = "disabled"`), and
`test_codex_default_tools` runs Codex's defaults against providers with `drop_params` (the
namespace's functions flattened, `web_search` dropped)."""
import json
import os
import shutil
import subprocess
import warnings

import pytest

from harness import ROOT, Gateway, Mock, free_port, new_id, tmpdir

CODEX = os.path.join(ROOT, "tests", "clients", "codex", "node_modules", ".bin", "codex")
CODEX_VERSION = "0.171.0"
if not os.path.exists(CODEX):
    _why = f"Codex CLI is not installed at {CODEX}: run `make clients-codex` (npm ci in tests/clients/codex)"
    warnings.warn(_why)
    pytest.skip(_why, allow_module_level=True)

CLAUDE_UPSTREAM = "claude-3-5-haiku-20241022"
GEMINI_UPSTREAM = "gemini-2.5-flash"
GEMINI_KEY = "AIza-e2e-codex"
CONFIG = {
    "providers": {
        "ant": {"type": "anthropic", "cluster": "mock"},
        "gem": {"type": "gemini", "cluster": "mock", "api_key": GEMINI_KEY},
    },
    "models": [
        {"name": "claude", "deployments": [{"provider": "ant", "model": CLAUDE_UPSTREAM}]},
        {"name": "gemini", "deployments": [{"provider": "gem", "model": GEMINI_UPSTREAM}]},
    ],
}
MODELS = ["claude", "gemini"]
UPSTREAM_PATH = {"claude": "/v1/messages",
                 "gemini": f"/v1beta/models/{GEMINI_UPSTREAM}:streamGenerateContent"}
# Switches off what Codex sends that LLMux cannot translate (see the module doc), and its calls
# to anything but the model provider.
OFFLINE = """
[features]
plugins = false
[analytics]
enabled = false
"""
TRANSLATABLE = """web_search = "disabled"
"""
TRANSLATABLE_FEATURES = "multi_agent = false\n"


@pytest.fixture(scope="module")
def mock(log_dir):
    m = Mock(log_dir)
    yield m
    m.stop()


@pytest.fixture(scope="module")
def gw(mock, log_dir):
    g = Gateway(mock, log_dir, llmux_config=CONFIG, name="envoy-codex")
    yield g
    g.stop()
    assert "panicked" not in g.process.log()


def codex_home(gw, headers, translatable=True):
    """A throwaway CODEX_HOME whose config.toml makes LLMux the model provider."""
    home = tmpdir("llmux-codex-")
    http_headers = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in headers.items())
    features = OFFLINE.replace("[features]\n", "[features]\n" + (TRANSLATABLE_FEATURES if translatable else ""))
    with open(os.path.join(home, "config.toml"), "w") as f:
        f.write(f"""model_provider = "llmux"
{TRANSLATABLE if translatable else ""}check_for_update_on_startup = false

[model_providers.llmux]
name = "LLMux"
base_url = "{gw.url}/v1"
env_key = "LLMUX_API_KEY"
wire_api = "responses"
http_headers = {{ {http_headers} }}
{features}""")
    return home


def codex_exec(gw, model, prompt, headers, workdir, translatable=True):
    """`codex exec --json` in `workdir`; returns (exit code, JSONL events, last message, stderr)."""
    home = codex_home(gw, headers, translatable)
    last = os.path.join(home, "last-message.txt")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: any outside call fails at once
    env = {"PATH": os.environ["PATH"], "HOME": home, "CODEX_HOME": home, "LLMUX_API_KEY": "sk-client-key",
           "HTTPS_PROXY": dead, "HTTP_PROXY": dead, "ALL_PROXY": dead, "NO_PROXY": "127.0.0.1,localhost",
           "LANG": "C.UTF-8"}
    try:
        p = subprocess.run([CODEX, "exec", "--json", "--ephemeral", "--skip-git-repo-check", "-m", model,
                            "-C", workdir, "-o", last, prompt],
                           env=env, cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=120)
        events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
        text = open(last).read() if os.path.exists(last) else None
        return p.returncode, events, text, p.stderr
    finally:
        shutil.rmtree(home, ignore_errors=True)


def items(events, kind):
    return [e["item"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == kind]


def test_codex_version():
    out = subprocess.run([CODEX, "--version"], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == f"codex-cli {CODEX_VERSION}", "tests/clients/codex pins this version"


@pytest.mark.parametrize("model", MODELS)
def test_codex_exec_answers(gw, mock, model):
    mid = new_id()
    work = tmpdir("llmux-codex-work-")
    try:
        rc, events, last, stderr = codex_exec(gw, model, "Say hello", {"x-mock-id": mid}, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert rc == 0, stderr[-3000:]
    [msg] = items(events, "agent_message")
    assert msg["text"].startswith("Hello from the mock! You said:")
    assert last.strip() == msg["text"].strip()
    [done] = [e for e in events if e["type"] == "turn.completed"]
    assert done["usage"]["input_tokens"] > 0 and done["usage"]["output_tokens"] > 0
    [req] = mock.requests(mid)
    assert req["path"] == UPSTREAM_PATH[model]
    assert "sk-client-key" not in json.dumps(req["headers"])
    body = req["body"]
    if model == "claude":
        assert body["model"] == CLAUDE_UPSTREAM and body["stream"] is True
        # Codex's developer messages → system; its function tools (exec_command, ...) declared.
        assert body["system"]
        assert "exec_command" in [t["name"] for t in body["tools"]]
    else:
        assert req["headers"]["x-goog-api-key"] == GEMINI_KEY
        assert body["systemInstruction"]["parts"]
        names = [d["name"] for t in body["tools"] for d in t.get("functionDeclarations", [])]
        assert "exec_command" in names


@pytest.mark.parametrize("model", MODELS)
def test_codex_runs_a_tool_round_trip(gw, mock, model):
    """The model calls Codex's shell tool; Codex runs `cat note.txt` in its (read-only) sandbox and
    sends the output back through LLMux; the model answers with it."""
    mid = new_id()
    token = f"PAPAYA-{new_id()[:8]}"
    work = tmpdir("llmux-codex-work-")
    try:
        with open(os.path.join(work, "note.txt"), "w") as f:
            f.write(token + "\n")
        script = {"x-mock-id": mid, "x-mock-tool-use": 'exec_command {"cmd": "cat note.txt"}'}
        rc, events, last, stderr = codex_exec(gw, model, "What does note.txt say?", script, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert rc == 0, stderr[-3000:]
    [run] = items(events, "command_execution")
    assert "cat note.txt" in run["command"] and run["exit_code"] == 0
    assert token in run["aggregated_output"]
    [msg] = items(events, "agent_message")
    assert msg["text"].startswith("The tool said:") and token in msg["text"]
    assert token in last
    first, second = mock.requests(mid)
    assert first["path"] == second["path"] == UPSTREAM_PATH[model]
    body = second["body"]
    if model == "claude":
        roles = [m["role"] for m in body["messages"]]
        assert roles[-2:] == ["assistant", "user"]
        [use] = [b for b in body["messages"][-2]["content"] if b["type"] == "tool_use"]
        assert use["name"] == "exec_command" and use["input"] == {"cmd": "cat note.txt"}
        [result] = [b for b in body["messages"][-1]["content"] if b["type"] == "tool_result"]
        assert result["tool_use_id"] == use["id"] and token in json.dumps(result)
    else:
        calls = [p["functionCall"] for c in body["contents"] for p in c["parts"] if "functionCall" in p]
        assert [(c["name"], c["args"]) for c in calls] == [("exec_command", {"cmd": "cat note.txt"})]
        answers = [p["functionResponse"] for p in body["contents"][-1]["parts"] if "functionResponse" in p]
        assert [a["name"] for a in answers] == ["exec_command"] and token in json.dumps(answers)


@pytest.fixture(scope="module")
def gw_drop(mock, log_dir):
    """Providers that drop what they cannot do (`drop_params`): hosted tools such as Codex's
    `web_search` are left out instead of refused."""
    cfg = json.loads(json.dumps(CONFIG))
    for p in cfg["providers"].values():
        p["drop_params"] = True
    g = Gateway(mock, log_dir, llmux_config=cfg, name="envoy-codex-drop")
    yield g
    g.stop()


@pytest.mark.parametrize("model", MODELS)
def test_codex_default_tools(gw_drop, mock, model):
    """Codex with its default tool set (only the offline switches): its `namespace` tool's
    functions reach the provider flattened (`<namespace>__<name>`), its hosted `web_search` is
    dropped (the providers say `drop_params`), and the run completes."""
    work = tmpdir("llmux-codex-work-")
    mock_id = new_id()
    try:
        rc, events, last, stderr = codex_exec(gw_drop, model, "Say hello", {"x-mock-id": mock_id},
                                              work, translatable=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert rc == 0, (stderr + json.dumps(events))[-3000:]
    [req] = [r for r in mock.requests(mock_id) if r["path"].startswith(UPSTREAM_PATH[model])][:1]
    body = req["body"]
    if model == "claude":
        names = [t["name"] for t in body["tools"]]
    else:
        names = [f["name"] for t in body["tools"] for f in t.get("functionDeclarations", [])]
    assert any("__" in n for n in names), names
    assert not any("web_search" in n for n in names), names
