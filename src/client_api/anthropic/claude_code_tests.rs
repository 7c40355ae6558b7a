//! What Claude Code sends on `/v1/messages`, for every provider: the request captured from
//! Claude Code 2.1.332 (tests/fixtures/anthropic/README.md says how) against a golden OpenAI
//! request, through each provider's translator, and through the Anthropic pass-through; then
//! each feature on its own.

use serde_json::{json, Value};

use super::translator::translator;
use super::*;
use crate::client_api::openai::ChatEnvelope;
use crate::config::{Config, ProcessEnv};
use crate::providers::{ChatCall, ProviderKind, ProviderRequest};

const CLAUDE_CODE: &str =
    include_str!("../../../tests/fixtures/anthropic/claude_code_request.json");
const GOLDEN_OPENAI: &str =
    include_str!("../../../tests/fixtures/anthropic/claude_code_request.openai.json");

const OPENAI: Target = Target {
    max_completion_tokens: true,
    reasoning_effort: false,
};

fn convert_for(body: &Value, target: Target) -> Value {
    serde_json::from_slice(&to_openai_request(body.to_string().as_bytes(), target).unwrap())
        .unwrap()
}

fn convert(body: Value) -> Value {
    convert_for(&body, OPENAI)
}

fn fixture() -> Value {
    serde_json::from_str(CLAUDE_CODE).unwrap()
}

/// A small request with these fields over `{"model","max_tokens","messages":[user "hi"]}`.
fn request(extra: Value) -> Value {
    let mut r =
        json!({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
    if let (Some(r), Some(extra)) = (r.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            r.insert(k.clone(), v.clone());
        }
    }
    r
}

#[test]
fn claude_code_request_to_openai_is_the_golden_one() {
    let out = to_openai_request(CLAUDE_CODE.as_bytes(), OPENAI).unwrap();
    let out: Value = serde_json::from_slice(&out).unwrap();
    let golden: Value = serde_json::from_str(GOLDEN_OPENAI).unwrap();
    assert_eq!(
        out,
        golden,
        "got:\n{}",
        serde_json::to_string_pretty(&out).unwrap_or_default()
    );
    // Nothing Anthropic-only reaches the provider.
    let text = out.to_string();
    for gone in [
        "cache_control",
        "context_management",
        "output_config",
        "thinking",
        "signature",
        "defer_loading",
        "DeferredToolPlaceholder",
        "NotebookEdit",
        "metadata",
        "device_id",
    ] {
        assert!(!text.contains(gone), "{gone} reached the provider");
    }
}

/// The envelope accepts it (it refused `system` turns: "each message needs role user or
/// assistant", the error Claude Code showed).
#[test]
fn claude_code_request_passes_the_envelope() {
    let env = parse_messages_envelope(CLAUDE_CODE.as_bytes()).unwrap();
    assert_eq!(env.model, "gpt-4o-mini");
    assert!(env.stream);
}

fn provider(kind_json: &str, model: &str) -> crate::config::Provider {
    let cfg = format!(
        r#"{{"providers":{{"p":{kind_json}}},"models":[{{"name":"m","deployments":[{{"provider":"p","model":"{model}"}}]}}]}}"#
    );
    Config::parse(cfg.as_bytes(), &ProcessEnv)
        .unwrap()
        .providers
        .remove(0)
}

/// The Messages request through [`translator`] to a provider of each kind.
fn through(kind_json: &str, model: &str, body: &[u8]) -> ProviderRequest {
    let p = provider(kind_json, model);
    let env: ChatEnvelope<'_> = parse_messages_envelope(body).unwrap();
    translator(&p, model)
        .request(&ChatCall {
            raw: body,
            envelope: &env,
            provider: &p,
            upstream_model: model,
            now_unix: 1_700_000_000,
            want_stream_usage: true,
        })
        .unwrap()
}

/// Every provider's translator takes the pivot of Claude Code's request; `thinking` becomes the
/// provider's own thinking switch only where the model thinks.
#[test]
fn claude_code_request_reaches_every_provider() {
    let body = CLAUDE_CODE.as_bytes();
    let aws = r#""region":"us-east-1","aws_access_key_id":"AKID","aws_secret_access_key":"secret""#;
    let vertex = r#""project":"proj-1","location":"us-central1","access_token":"ya29.test""#;
    // (provider, upstream model, what its body must hold, what it must not)
    let cases: Vec<(String, &str, Vec<&str>, Vec<&str>)> = vec![
        (
            r#"{"type":"openai","cluster":"c","api_key":"k"}"#.into(),
            "gpt-4o-mini",
            vec!["\"max_completion_tokens\":32000", "\"role\":\"tool\""],
            vec!["reasoning_effort"],
        ),
        (
            r#"{"type":"openai","cluster":"c","api_key":"k"}"#.into(),
            "o3",
            vec!["\"reasoning_effort\":\"high\""],
            vec![],
        ),
        (
            r#"{"type":"gemini","cluster":"c","api_key":"k"}"#.into(),
            "gemini-2.5-flash",
            vec!["thinkingConfig", "functionResponse", "inlineData"],
            vec![],
        ),
        (
            r#"{"type":"gemini","cluster":"c","api_key":"k"}"#.into(),
            "gemini-2.0-flash",
            vec!["functionResponse"],
            vec!["thinkingConfig"],
        ),
        (
            format!(r#"{{"type":"bedrock","cluster":"c",{aws}}}"#),
            "amazon.nova-pro-v1:0",
            vec!["toolResult"],
            vec!["budget_tokens"],
        ),
        (
            format!(r#"{{"type":"vertex","cluster":"c",{vertex}}}"#),
            "gemini-2.5-flash",
            vec!["thinkingConfig", "functionResponse"],
            vec![],
        ),
        (
            r#"{"type":"cohere","cluster":"c","api_key":"k"}"#.into(),
            "command-a-03-2025",
            vec!["\"role\":\"tool\""],
            vec!["thinking"],
        ),
    ];
    for (p, model, has, lacks) in cases {
        let r = through(&p, model, body);
        let text = String::from_utf8(r.body.clone().unwrap_or_default()).unwrap();
        for h in has {
            assert!(text.contains(h), "{p} {model}: no {h} in {text}");
        }
        for l in lacks {
            assert!(!text.contains(l), "{p} {model}: {l} in {text}");
        }
        for gone in [
            "cache_control",
            "context_management",
            "DeferredToolPlaceholder",
        ] {
            assert!(!text.contains(gone), "{p} {model}: {gone}");
        }
        assert!(
            r.remove_headers.contains(&"anthropic-beta"),
            "{p}: the client's anthropic-beta must not reach it"
        );
    }
}

/// Anthropic deployments get Claude Code's request as it is, but for the model name: thinking
/// blocks and their signatures, `cache_control`, `context_management`, `output_config`, the
/// `system` turns, deferred tools.
#[test]
fn claude_code_request_passes_through_to_anthropic() {
    let r = through(
        r#"{"type":"anthropic","cluster":"c","api_key":"sk-ant"}"#,
        "claude-sonnet-4-5",
        CLAUDE_CODE.as_bytes(),
    );
    let sent = String::from_utf8(r.body.clone().unwrap_or_default()).unwrap();
    assert_eq!(
        sent,
        CLAUDE_CODE.replacen("\"gpt-4o-mini\"", "\"claude-sonnet-4-5\"", 1)
    );
    assert_eq!(r.path, "/v1/messages");
    assert!(!r.remove_headers.contains(&"anthropic-beta"));
}

/// Claude on Bedrock and on Vertex AI get Claude Code's request in Anthropic's body: every
/// field as the client sent it (thinking blocks and signatures, `cache_control`,
/// `context_management`, `metadata`), but `model` (and `stream` on Bedrock), with the host's
/// `anthropic_version`.
#[test]
fn claude_code_request_goes_natively_to_claude_on_bedrock_and_vertex() {
    let aws = r#""region":"us-east-1","aws_access_key_id":"AKID","aws_secret_access_key":"secret""#;
    let vertex = r#""project":"proj-1","location":"us-central1","access_token":"ya29.test""#;
    let client: Value = fixture();
    let cases = [
        (
            format!(r#"{{"type":"bedrock","cluster":"c",{aws}}}"#),
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            "bedrock-2023-05-31",
            "/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/invoke-with-response-stream",
            &["model", "stream"][..],
        ),
        (
            format!(r#"{{"type":"vertex","cluster":"c",{vertex}}}"#),
            "claude-sonnet-4@20250514",
            "vertex-2023-10-16",
            "/v1/projects/proj-1/locations/us-central1/publishers/anthropic/models/claude-sonnet-4@20250514:streamRawPredict",
            &["model"][..],
        ),
    ];
    for (p, model, version, path, gone) in cases {
        let r = through(&p, model, CLAUDE_CODE.as_bytes());
        assert_eq!(r.path, path);
        let mut sent: Value = serde_json::from_slice(r.body.as_deref().unwrap()).unwrap();
        assert_eq!(sent["anthropic_version"], version);
        let mut want = client.clone();
        let (Some(w), Some(s)) = (want.as_object_mut(), sent.as_object_mut()) else {
            panic!("objects")
        };
        for k in gone {
            w.remove(*k);
        }
        s.remove("anthropic_version");
        assert_eq!(sent, want, "{model}");
        let text = String::from_utf8(r.body.unwrap()).unwrap();
        for kept in [
            "cache_control",
            "signature",
            "context_management",
            "user_id",
        ] {
            assert!(text.contains(kept), "{model}: {kept} lost");
        }
    }
}

#[test]
fn system_turns_stay_where_they_are() {
    let out = convert(
        json!({"model": "m", "max_tokens": 10, "system": "top", "messages": [
            {"role": "user", "content": "a"},
            {"role": "system", "content": "plain string"},
            {"role": "assistant", "content": "b"},
            {"role": "system", "content": [{"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}},
                                            {"type": "text", "text": "two"}]},
            {"role": "system", "content": []},
            {"role": "user", "content": "c"}
        ]}),
    );
    assert_eq!(
        out["messages"],
        json!([
            {"role": "system", "content": "top"},
            {"role": "user", "content": "a"},
            {"role": "system", "content": "plain string"},
            {"role": "assistant", "content": "b"},
            {"role": "system", "content": "one\ntwo"},
            {"role": "user", "content": "c"}
        ])
    );
    let image = request(json!({"messages": [{"role": "user", "content": "a"},
        {"role": "system", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]}));
    let e = to_openai_request(image.to_string().as_bytes(), OPENAI).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("messages.1.content.0"));
}

#[test]
fn thinking_becomes_reasoning_effort_only_where_the_model_thinks() {
    let thinks = Target {
        max_completion_tokens: true,
        reasoning_effort: true,
    };
    for (thinking, output_config, want) in [
        (
            json!({"type": "adaptive"}),
            json!({"effort": "low"}),
            json!("low"),
        ),
        (
            json!({"type": "adaptive", "display": "omitted"}),
            json!({"effort": "medium"}),
            json!("medium"),
        ),
        (
            json!({"type": "adaptive"}),
            json!({"effort": "high"}),
            json!("high"),
        ),
        (
            json!({"type": "adaptive"}),
            json!({"effort": "xhigh"}),
            json!("high"),
        ),
        (
            json!({"type": "adaptive"}),
            json!({"effort": "max"}),
            json!("high"),
        ),
        // Adaptive without an effort: the provider's default.
        (json!({"type": "adaptive"}), Value::Null, Value::Null),
        (
            json!({"type": "enabled", "budget_tokens": 1024}),
            Value::Null,
            json!("low"),
        ),
        (
            json!({"type": "enabled", "budget_tokens": 4095}),
            Value::Null,
            json!("low"),
        ),
        (
            json!({"type": "enabled", "budget_tokens": 4096}),
            Value::Null,
            json!("medium"),
        ),
        (
            json!({"type": "enabled", "budget_tokens": 16384}),
            Value::Null,
            json!("high"),
        ),
        (
            json!({"type": "enabled", "budget_tokens": 31999}),
            Value::Null,
            json!("high"),
        ),
        (
            json!({"type": "enabled", "budget_tokens": 31999}),
            json!({"effort": "low"}),
            json!("low"),
        ),
        (
            json!({"type": "disabled"}),
            json!({"effort": "high"}),
            Value::Null,
        ),
        (json!("nonsense"), Value::Null, Value::Null),
    ] {
        let mut extra = json!({"thinking": thinking});
        if !output_config.is_null() {
            extra["output_config"] = output_config.clone();
        }
        let r = request(extra);
        let out = convert_for(&r, thinks);
        assert_eq!(
            out.get("reasoning_effort").cloned().unwrap_or(Value::Null),
            want,
            "{thinking} {output_config}"
        );
        // A model that does not think never gets one.
        assert!(convert_for(&r, OPENAI).get("reasoning_effort").is_none());
        assert!(out.get("thinking").is_none() && out.get("output_config").is_none());
    }
}

#[test]
fn cache_control_and_context_management_are_dropped() {
    let out = convert(request(json!({
        "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "q", "cache_control": {"type": "ephemeral"}}]}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}, "strict": true}],
        "cache_control": {"type": "ephemeral"},
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "service_tier": "auto", "inference_geo": "us", "container": "c1"
    })));
    assert_eq!(
        out,
        json!({"model": "m", "max_completion_tokens": 100,
               "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
               "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]})
    );
}

#[test]
fn tool_result_images_follow_the_tool_messages() {
    let png = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}});
    let url = json!({"type": "image", "source": {"type": "url", "url": "https://x/y.jpg"}});
    let out = convert(json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "user", "content": "look"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "Read", "input": {}},
            {"type": "tool_use", "id": "t2", "name": "Shot", "input": {}},
            {"type": "tool_use", "id": "t3", "name": "Bash", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "a picture:"}, png]},
            {"type": "tool_result", "tool_use_id": "t2", "content": [url], "is_error": true},
            {"type": "tool_result", "tool_use_id": "t3", "content": "ok"},
            {"type": "text", "text": "what now?"}]}
    ]}));
    let m = &out["messages"];
    assert_eq!(
        m[2],
        json!({"role": "tool", "tool_call_id": "t1",
               "content": "a picture:\n(image output follows in the next user message)"})
    );
    assert_eq!(
        m[3],
        json!({"role": "tool", "tool_call_id": "t2",
               "content": "Error: (image output follows in the next user message)"})
    );
    assert_eq!(
        m[4],
        json!({"role": "tool", "tool_call_id": "t3", "content": "ok"})
    );
    assert_eq!(
        m[5],
        json!({"role": "user", "content": [
            {"type": "text", "text": "Images returned by tool call t1:"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
            {"type": "text", "text": "Images returned by tool call t2:"},
            {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}},
            {"type": "text", "text": "what now?"}]})
    );
    assert_eq!(m.as_array().map(Vec::len), Some(6));
    // A bad image source inside a result names its place.
    let bad = json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
            "content": [{"type": "text", "text": "x"}, {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}]});
    let e = to_openai_request(bad.to_string().as_bytes(), OPENAI).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("messages.1.content.0.content.1"));
    let doc = json!({"model": "m", "max_tokens": 10, "messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
            "content": [{"type": "document", "source": {"type": "text", "data": "x"}}]}]}]});
    let e = to_openai_request(doc.to_string().as_bytes(), OPENAI).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("messages.1.content.0.content.0"));
    assert_eq!(e.status, 400);
}

#[test]
fn deferred_tools_are_declared_once_referenced() {
    let tools = json!([
        {"name": "ToolSearch", "input_schema": {"type": "object"}},
        {"name": "WebFetch", "input_schema": {"type": "object"}, "defer_loading": true},
        {"name": "Other", "input_schema": {"type": "object"}, "defer_loading": true},
        {"name": "Eager", "input_schema": {"type": "object"}, "defer_loading": false}
    ]);
    let names = |out: &Value| -> Vec<String> {
        out["tools"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|f| f["function"]["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let before = convert(request(json!({"tools": tools})));
    assert_eq!(names(&before), ["ToolSearch", "Eager"]);
    let after = convert(request(json!({"tools": tools, "messages": [
        {"role": "user", "content": "fetch it"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "s", "name": "ToolSearch", "input": {"query": "select:WebFetch"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "s",
            "content": [{"type": "tool_reference", "tool_name": "WebFetch"}]}]}
    ]})));
    assert_eq!(names(&after), ["ToolSearch", "WebFetch", "Eager"]);
    assert_eq!(
        after["messages"][2],
        json!({"role": "tool", "tool_call_id": "s", "content": "Tool WebFetch loaded."})
    );
    // Only deferred tools: no `tools` at all (and so no `tool_choice`).
    let only = convert(request(
        json!({"tools": [tools[2].clone()], "tool_choice": {"type": "auto"}}),
    ));
    assert!(only.get("tools").is_none() && only.get("tool_choice").is_none());
}

#[test]
fn stop_sequences_and_user_id() {
    let out = convert(request(
        json!({"stop_sequences": ["\n\nHuman:", "END"], "metadata": {"user_id": "user-42"}}),
    ));
    assert_eq!(out["stop"], json!(["\n\nHuman:", "END"]));
    assert_eq!(out["user"], "user-42");
    // Claude Code's user_id is a JSON object in a string, ~150 characters: too long and too
    // odd for OpenAI-compatible services; a stable digest goes instead.
    let fixture_user = fixture()["metadata"]["user_id"].clone();
    let a = convert(request(json!({"metadata": {"user_id": fixture_user}})));
    let b = convert(request(json!({"metadata": {"user_id": fixture_user}})));
    let user = a["user"].as_str().unwrap_or("");
    assert_eq!(user.len(), 34, "{user}");
    assert!(user.starts_with("u_") && user[2..].bytes().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(a["user"], b["user"]);
    let other = convert(request(
        json!({"metadata": {"user_id": "someone else entirely"}}),
    ));
    assert_ne!(other["user"], a["user"]);
    assert!(other["user"].as_str().unwrap_or("").starts_with("u_"));
    let long = "x".repeat(65);
    assert_ne!(
        convert(request(json!({"metadata": {"user_id": long}})))["user"],
        json!(long)
    );
    for odd in ["someone@example.com", "a.b", "a:b"] {
        let user = convert(request(json!({"metadata": {"user_id": odd}})))["user"].clone();
        assert!(
            user.as_str().unwrap_or("").starts_with("u_"),
            "{odd}: {user}"
        );
    }
    let edge = "x".repeat(64);
    assert_eq!(
        convert(request(json!({"metadata": {"user_id": edge}})))["user"],
        json!(edge)
    );
    for absent in [
        json!({}),
        json!({"user_id": null}),
        json!({"user_id": ""}),
        json!({"user_id": 5}),
    ] {
        assert!(convert(request(json!({"metadata": absent})))
            .get("user")
            .is_none());
    }
}

#[test]
fn output_config_format_becomes_response_format() {
    let schema =
        json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]});
    let out = convert(request(
        json!({"output_config": {"format": {"type": "json_schema", "schema": schema}, "effort": "low"}}),
    ));
    assert_eq!(
        out["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}})
    );
    assert!(out.get("reasoning_effort").is_none());
    for other in [
        json!({"effort": "high"}),
        json!({"format": {"type": "text"}}),
        json!("x"),
    ] {
        assert!(convert(request(json!({"output_config": other})))
            .get("response_format")
            .is_none());
    }
}

#[test]
fn envelope_accepts_system_turns() {
    let ok = br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"system","content":"s"}]}"#;
    assert!(parse_messages_envelope(ok).is_ok());
    let e = parse_messages_envelope(
        br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"},{"role":"developer","content":"s"}]}"#,
    )
    .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("messages.1.role"));
    assert!(e.message.contains("`system`"), "{}", e.message);
}

/// The translator picks the target from the provider and the model it knows.
#[test]
fn target_follows_provider_and_model() {
    let oai = provider(r#"{"type":"openai","cluster":"c"}"#, "o3");
    assert_eq!(
        Target::of(&oai, "o3"),
        Target {
            max_completion_tokens: true,
            reasoning_effort: true
        }
    );
    assert_eq!(
        Target::of(&oai, "gpt-4o-mini"),
        Target {
            max_completion_tokens: true,
            reasoning_effort: false
        }
    );
    let groq = provider(r#"{"type":"groq","cluster":"c"}"#, "o3");
    assert_eq!(Target::of(&groq, "o3"), Target::default());
    assert_eq!(groq.kind, ProviderKind::OpenAi);
}
