"""The shipped Envoy configurations load in a real Envoy (`--mode validate` runs the filter's
on_configure too). The real APIs cannot be reached from the test machines, so their configs are
proven this way."""
import os

from harness import ROOT, WASM, render_envoy, validate_config

KEYS = {"OPENAI_API_KEY": "sk-test-openai", "ANTHROPIC_API_KEY": "sk-ant-test"}


def env_with(**extra):
    env = {k: v for k, v in os.environ.items() if k not in KEYS}
    env.update(extra)
    return env


def test_quickstart_mock_config_validates(tmp_path):
    path = tmp_path / "quickstart.yaml"
    path.write_text(render_envoy.render(wasm_path=WASM, env=env_with()))
    r = validate_config(str(path), env=env_with())
    assert r.returncode == 0, r.stderr[-3000:]
    assert "LLMux configured: 2 providers, 3 models" in r.stderr


def test_quickstart_with_keys_uses_real_tls_clusters(tmp_path):
    env = env_with(**KEYS)
    cfg = render_envoy.quickstart_config(env)
    assert cfg["providers"]["openai"] == {"type": "openai", "cluster": "openai", "host": "api.openai.com",
                                          "api_key_env": "OPENAI_API_KEY"}
    assert cfg["providers"]["anthropic"]["cluster"] == "anthropic"
    text = render_envoy.render(wasm_path=WASM, env=env)
    assert "host_env_keys: [OPENAI_API_KEY, ANTHROPIC_API_KEY]" in text
    assert "sni: api.openai.com" in text and "sni: api.anthropic.com" in text
    path = tmp_path / "real.yaml"
    path.write_text(text)
    r = validate_config(str(path), env=env)
    assert r.returncode == 0, r.stderr[-3000:]


def test_only_one_key_set_mixes_real_and_mock():
    cfg = render_envoy.quickstart_config(env_with(ANTHROPIC_API_KEY="k"))
    assert cfg["providers"]["openai"]["cluster"] == "mock"
    assert cfg["providers"]["anthropic"]["cluster"] == "anthropic"


def test_key_env_var_missing_fails_validation(tmp_path):
    text = render_envoy.render(wasm_path=WASM, env=env_with(**KEYS))
    path = tmp_path / "real.yaml"
    path.write_text(text)
    r = validate_config(str(path), env=env_with())
    assert r.returncode != 0
    # Providers are checked in name order: anthropic's key is the first one found missing.
    assert ("invalid LLMux configuration at `providers.anthropic.api_key_env`: "
            "environment variable `ANTHROPIC_API_KEY` is not set") in r.stderr + r.stdout


def test_example_real_providers_config_validates(tmp_path):
    src = open(os.path.join(ROOT, "examples", "envoy-openai-anthropic.yaml")).read()
    path = tmp_path / "example.yaml"
    path.write_text(src.replace("/etc/envoy/llmux.wasm", WASM))
    r = validate_config(str(path), env=env_with(**KEYS))
    assert r.returncode == 0, r.stderr[-3000:]


def test_readme_lists_every_preset():
    import re
    src = open(os.path.join(ROOT, "src", "providers", "presets.rs")).read()
    names = re.findall(r'p\(\s*"([a-z0-9-]+)"', src)
    assert len(names) >= 25
    readme = open(os.path.join(ROOT, "README.md")).read()
    for name in names:
        assert f"| `{name}` |" in readme, f"preset {name} missing from the README table"


def test_release_wasm_stays_under_two_and_three_quarters_mib():
    # The README states the filter's size; this keeps new code honest about it. (1 MiB held
    # until native Bedrock/Vertex translators and routing, 1.5 MiB until the Responses API and
    # Claude Code translations, 1.75 MiB until the response cache and the guardrails, whose
    # custom patterns bring the `regex` crate: ~460 KB; 2.5 MiB until regex's literal
    # prefilters (+165 KB) and the Responses-API answer guardrails; the size is reported in the
    # README.)
    assert os.path.getsize(WASM) < 2816 * 1024
