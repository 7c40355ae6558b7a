"""Claude Code itself (npm `@anthropic-ai/claude-code`, pinned in tests/clients, installed by
`make clients`), unmodified, through Envoy + LLMux to the mock: `claude -p ... --output-format
json` with `ANTHROPIC_BASE_URL` at the gateway, to an OpenAI-protocol deployment (through the
Messages → OpenAI pivot) and to Anthropic-protocol deployments (pass-through), a plain answer
and a tool round trip (Claude Code runs its Bash or Read tool in a scratch directory and answers
with the result).

The mock plays the model: `x-mock-text` fixes the plain answer, `x-mock-tool-use` makes it call
one tool and then repeat the tool's result (mock-provider/README.md); Claude Code itself sends
them, from its `ANTHROPIC_CUSTOM_HEADERS` setting. Claude Code runs offline: a throwaway HOME and config dir,
a dummy key, `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1` (no telemetry, error reports or
update checks), and nothing else from the test's environment.
"""
import base64
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from harness import ROOT, new_id

CLAUDE = os.path.join(ROOT, "build", "npm", "node_modules", ".bin", "claude")
VERSION = json.load(open(os.path.join(ROOT, "tests", "clients", "package.json")))[
    "dependencies"]["@anthropic-ai/claude-code"]

# A 4x4 red PNG: what Claude Code's Read tool sends back as an image block.
RED_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAAEElEQVR4nGP4z8AARwzEcQCukw/x0F8jngAAAABJRU5ErkJggg==")

# Client-side model name → (provider, upstream model). Claude Code shapes its request by the
# name: `claude-3-5-haiku` gets the plain request of an old model; a name it does not know
# (`gpt-4o-mini`, `llmux-claude`) gets everything it has: `system` turns inside `messages`,
# adaptive thinking with `output_config.effort`, `context_management`, `cache_control`,
# deferred tools, seven `anthropic-beta` values.
MODELS = {
    "gpt-4o-mini": ("openai", "gpt-4o-mini"),
    "gemini-2.5-flash": ("gemini", "gemini-2.5-flash"),
    "claude-3-5-haiku": ("anthropic", "claude-3-5-haiku-20241022"),
    "llmux-claude": ("anthropic", "claude-sonnet-4-5"),
}


@pytest.fixture(scope="module")
def claude():
    if not os.path.exists(CLAUDE):
        pytest.skip(f"Claude Code is not installed ({CLAUDE} missing): run `make clients` "
                    f"(npm ci of tests/clients/package.json, @anthropic-ai/claude-code {VERSION})")
    r = subprocess.run([CLAUDE, "--version"], capture_output=True, text=True, timeout=60)
    # Installed but broken (e.g. its postinstall did not put the native binary in place): fail.
    assert r.returncode == 0 and r.stdout.startswith(VERSION), (r.returncode, r.stdout, r.stderr)
    return CLAUDE


@pytest.fixture
def scratch():
    d = tempfile.mkdtemp(prefix="llmux-claude-code-")
    os.makedirs(os.path.join(d, "home", ".claude"))
    work = os.path.join(d, "work")
    os.makedirs(work)
    with open(os.path.join(work, "hello.txt"), "w") as f:
        f.write("the secret word is PAPAYA\n")
    with open(os.path.join(work, "red.png"), "wb") as f:
        f.write(RED_PNG)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def g(make_module_gateway):
    """One gateway for every test: each steers the mock with its own x-mock-* headers, which
    Claude Code sends on each of its requests (ANTHROPIC_CUSTOM_HEADERS) and the gateway lets
    through (the harness's client_headers)."""
    return make_module_gateway({
        "providers": {
            "openai": {"type": "openai", "cluster": "mock"},
            "gemini": {"type": "gemini", "cluster": "mock", "api_key": "gemini-key"},
            # Claude Code's anthropic-beta values reach Anthropic deployments when the provider
            # allows the header; never other providers.
            "anthropic": {"type": "anthropic", "cluster": "mock", "client_headers": ["anthropic-beta"]},
        },
        "models": [{"name": model, "deployments": [{"provider": provider, "model": upstream}]}
                   for model, (provider, upstream) in MODELS.items()],
        "timeout_ms": 60000,
    })


def run_claude(claude, g, scratch, model, prompt, headers, *flags):
    home = os.path.join(scratch, "home")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "CLAUDE_CONFIG_DIR": os.path.join(home, ".claude"),
        "TMPDIR": scratch,
        "ANTHROPIC_BASE_URL": g.url,
        "ANTHROPIC_API_KEY": "sk-ant-dummy",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # Claude Code's own setting for extra request headers, one `Name: Value` per line.
        "ANTHROPIC_CUSTOM_HEADERS": "\n".join(f"{k}: {v}" for k, v in headers.items()),
    }
    r = subprocess.run([claude, "-p", prompt, "--output-format", "json", "--model", model, *flags],
                       cwd=os.path.join(scratch, "work"), env=env, capture_output=True, text=True,
                       timeout=180, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"claude exited {r.returncode}\nstdout: {r.stdout[-3000:]}\nstderr: {r.stderr[-3000:]}"
    out = json.loads(r.stdout)
    assert out["is_error"] is False and out["subtype"] == "success", out
    return out


def texts(content):
    if isinstance(content, str):
        return [content]
    return [p.get("text", "") for p in content or [] if p.get("type") == "text"]


@pytest.mark.parametrize("model", list(MODELS))
def test_plain_answer(claude, g, mock, scratch, model):
    mid = new_id()
    prompt = "Say hello through the gateway"
    out = run_claude(claude, g, scratch, model, prompt,
                     {"x-mock-id": mid, "x-mock-text": "Hello through LLMux."})
    assert out["result"] == "Hello through LLMux."
    [seen] = mock.requests(mid)
    body, headers = seen["body"], seen["headers"]
    assert "sk-ant-dummy" not in json.dumps(headers), "the client's key went upstream"
    if MODELS[model][0] == "openai":
        # `POST /v1/messages?beta=true` → the OpenAI pivot.
        assert seen["path"] == "/v1/chat/completions"
        assert body["model"] == "gpt-4o-mini" and body["stream"] is True
        roles = [m["role"] for m in body["messages"]]
        assert roles[0] == "system" and "user" in roles
        # Claude Code's system turn inside the conversation stays a system message there.
        env_turn = next(i for i, m in enumerate(body["messages"])
                        if m["role"] == "system" and m["content"].startswith("# Environment"))
        assert env_turn > roles.index("user")
        assert prompt in sum((texts(m["content"]) for m in body["messages"] if m["role"] == "user"), [])
        for gone in ["context_management", "output_config", "thinking", "reasoning_effort", "metadata"]:
            assert gone not in body, gone
        sent = json.dumps(body)
        for gone in ["cache_control", "DeferredToolPlaceholder", "device_id"]:
            assert gone not in sent, gone
        assert body["user"].startswith("u_") and len(body["user"]) == 34
        assert {"Bash", "Read"} <= {t["function"]["name"] for t in body["tools"]}
        assert body["max_completion_tokens"] > 0
        assert "anthropic-beta" not in headers and "x-api-key" not in headers
    elif MODELS[model][0] == "gemini":
        # Through the pivot and the Gemini translator; adaptive thinking with effort high is
        # Gemini 2.5's thinking budget for high.
        assert seen["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
        assert body["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 24576
        assert "# Environment" in json.dumps(body["systemInstruction"])
        assert prompt in json.dumps(body["contents"])
        assert "cache_control" not in json.dumps(body)
        assert "anthropic-beta" not in headers
    else:
        assert seen["path"] == "/v1/messages"
        assert body["model"] == MODELS[model][1]
        assert "claude-code-20250219" in headers["anthropic-beta"].split(",")
        user_texts = sum((texts(m["content"]) for m in body["messages"] if m["role"] == "user"), [])
        assert prompt in user_texts
        if model == "llmux-claude":
            # Untouched: what Claude Code sends its newest models (the mock takes
            # context_management only with its anthropic-beta value: it got through).
            assert body["thinking"]["type"] == "adaptive"
            assert "context_management" in body and "output_config" in body
            assert "system" in [m["role"] for m in body["messages"]]
            assert "cache_control" in json.dumps(body["system"])
            assert "context-management-2025-06-27" in headers["anthropic-beta"].split(",")


TOOLS = {
    # tool → (x-mock-tool-use, prompt, what the tool's result reads like to the mock)
    "Bash": ('Bash {"command": "cat hello.txt", "description": "Show the file"}',
             "What is the secret word in hello.txt?", "the secret word is PAPAYA"),
    "Read": ('Read {"file_path": "%s"}', "What colour is red.png?", None),
}


@pytest.mark.parametrize("tool", list(TOOLS))
@pytest.mark.parametrize("model", list(MODELS))
def test_tool_round_trip(claude, g, mock, scratch, model, tool):
    mid = new_id()
    script, prompt, said = TOOLS[tool]
    if tool == "Read":
        script = script % os.path.join(scratch, "work", "red.png")
    out = run_claude(claude, g, scratch, model, prompt,
                     {"x-mock-id": mid, "x-mock-tool-use": script}, "--allowedTools", tool)
    first, second = mock.requests(mid)
    openai = MODELS[model][0] == "openai"
    if openai:
        # The model's call came back to Claude Code as a tool_use block; it ran the tool and
        # sent the result, which reached the provider as a `tool` message for that call.
        calls = [m for m in second["body"]["messages"] if m["role"] == "assistant" and m.get("tool_calls")]
        assert calls[-1]["tool_calls"][0]["function"]["name"] == tool
        call_id = calls[-1]["tool_calls"][0]["id"]
        msgs = second["body"]["messages"]
        at = next(i for i, m in enumerate(msgs) if m["role"] == "tool" and m["tool_call_id"] == call_id)
        result = msgs[at]["content"]
        if tool == "Read":
            # OpenAI tool messages take text only: the image follows in a user message.
            assert result == "(image output follows in the next user message)"
            images = [p for p in msgs[at + 1]["content"] if p["type"] == "image_url"]
            assert msgs[at + 1]["role"] == "user" and len(images) == 1
            assert images[0]["image_url"]["url"].startswith("data:image/png;base64,")
            said = result
    elif MODELS[model][0] == "gemini":
        parts = [p for c in second["body"]["contents"] for p in c["parts"]]
        calls = [p["functionCall"] for p in parts if "functionCall" in p]
        responses = [p["functionResponse"] for p in parts if "functionResponse" in p]
        assert [c["name"] for c in calls] == [tool] and [r["name"] for r in responses] == [tool]
        if tool == "Read":
            # The image follows the function response as inline data of the user turn.
            at = next(i for i, p in enumerate(parts) if "functionResponse" in p)
            assert any(p.get("inlineData", {}).get("mimeType") == "image/png" for p in parts[at + 1:])
            said = "(image output follows in the next user message)"
    else:
        blocks = [b for m in second["body"]["messages"] if isinstance(m["content"], list)
                  for b in m["content"] if b.get("type") == "tool_result"]
        assert len(blocks) == 1
        if tool == "Read":
            assert [c["type"] for c in blocks[0]["content"]][0] == "image", blocks
            said = "[image]"
        assert "anthropic-beta" in second["headers"]
    assert first["path"] == second["path"]
    assert said in out["result"], out["result"]
    assert out["result"].startswith("The tool said: ")
