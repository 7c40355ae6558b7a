//! `Config::parse`: arbitrary JSON and mutated valid configs never panic; every error of an
//! object-shaped config names the path of a field.

use crate::config;
use crate::mutate::{mutate_doc, ops};
use llmux::config::{Config, ProcessEnv};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A config using every section and every provider kind (parses: checked below).
pub fn rich_config() -> Value {
    json!({
        "providers": {
            "oai": {"type": "openai", "cluster": "c_oai", "api_key": "sk-o", "timeout_ms": 1234,
                    "headers": {"OpenAI-Organization": "org"}, "client_headers": ["x-trace-*"]},
            "ant": {"type": "anthropic", "cluster": "c_ant", "host": "api.anthropic.com", "api_key": "sk-a",
                    "anthropic_version": "2023-06-01", "default_max_tokens": 1000},
            "gem": {"type": "gemini", "cluster": "c_gem", "api_key": "AIza"},
            "co": {"type": "cohere", "cluster": "c_co", "api_key": "co-key"},
            "br": {"type": "bedrock", "cluster": "c_br", "region": "us-west-2",
                   "aws_access_key_id": "AKIDTEST", "aws_secret_access_key": "secret"},
            "vx": {"type": "vertex", "cluster": "c_vx", "project": "proj-1", "location": "us-central1",
                   "access_token": "ya29.tok"},
            "groq": {"type": "groq", "cluster": "c_groq", "api_key": "g"},
            "az": {"type": "azure", "cluster": "c_az", "host": "x.openai.azure.com", "api_key": "k"}
        },
        "models": [
            {"name": "gpt", "aliases": ["gpt-alias"], "owned_by": "me", "strategy": "least-busy", "num_retries": 2,
             "fallbacks": ["claude"],
             "deployments": [
                {"provider": "oai", "model": "gpt-4o-mini", "weight": 2, "tags": ["default"], "rpm": 10, "tpm": 1000,
                 "max_input_tokens": 100000, "priority": 1,
                 "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}},
                {"provider": "groq", "model": "llama", "weight": 1}
             ]},
            {"name": "claude", "deployments": [{"provider": "ant", "model": "claude-x"}]},
            {"name": "gem", "deployments": [{"provider": "gem", "model": "gemini-2.5-flash"}]},
            {"name": "co", "deployments": [{"provider": "co", "model": "command-a-03-2025"}]},
            {"name": "br", "deployments": [{"provider": "br", "model": "us.anthropic.claude-3-5-haiku-20241022-v1:0"}]},
            {"name": "vx-*", "deployments": [{"provider": "vx", "model": "*"}]},
            {"name": "az", "deployments": [{"provider": "az", "model": "dep"}]}
        ],
        "router": {"num_retries": 1, "allowed_fails": 3, "cooldown_s": 5, "tags_header": "x-tags"},
        "auth": {"keys": [
            {"key_sha256": "5d41402abc4b2a76b9719d911017c592b35b1b1f8c5a1d7f2c6a0e0b5f4e7a6b", "alias": "one",
             "team": "t", "models": ["gpt"], "rpm": 5},
            {"key_sha256": "0000000000000000000000000000000000000000000000000000000000000000", "alias": "two"}
        ]},
        "export": {"format": "otlp", "cluster": "otel", "headers": {"X-Key": "v"}, "batch_size": 5},
        "rate_limit": {"cluster": "rls", "domain": "llmux", "timeout_ms": 500, "failure_mode": "open"},
        "identity": {"source": "header", "headers": {"user": "X-User"}, "limits": {"rpm": 1}},
        "max_request_bytes": 1000000,
        "max_response_bytes": 2000000,
        "cost_header": true,
        "answer_headers": true,
        "stream_usage": true,
        "unknown_paths": "passthrough",
        "cluster_header": "x-llmux-cluster",
        "client_headers": ["x-request-id"],
        "files_provider": "oai"
    })
}

const KEYS: &[&str] = &[
    "providers",
    "models",
    "router",
    "auth",
    "export",
    "rate_limit",
    "identity",
    "type",
    "cluster",
    "api_key",
    "api_key_env",
    "host",
    "base_path",
    "headers",
    "timeout_ms",
    "name",
    "deployments",
    "provider",
    "model",
    "weight",
    "price",
    "input_per_mtok",
    "output_per_mtok",
    "keys",
    "key_sha256",
    "alias",
    "region",
    "project",
    "location",
    "publisher",
    "access_token",
    "aliases",
    "strategy",
    "fallbacks",
    "tags",
    "max_request_bytes",
    "unknown_paths",
    "format",
    "limits",
    "rpm",
    "tpm",
    "source",
    "client_headers",
    "files_provider",
    "status",
    "path",
];

/// Any JSON value, with the config's field names as most keys.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            "openai",
            "anthropic",
            "gemini",
            "cohere",
            "bedrock",
            "vertex",
            "azure",
            "groq",
            "c",
            "m",
            "*",
            "a/*",
            "",
            "us-east-1",
            "priority",
            "otlp",
            "header"
        ])
        .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop_oneof![4 => prop::sample::select(KEYS).prop_map(str::to_string), 1 => "\\PC{0,8}"], inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    match Config::parse(bytes, &ProcessEnv) {
        Ok(c) => {
            // A parsed config answers the questions the gateway asks without panicking.
            for m in &c.models {
                let _ = c.resolve_model(&m.name);
                for d in &m.deployments {
                    let _ = c.provider(d);
                }
            }
            let _ = llmux::gateway::Gateway::new(c, 0);
        }
        Err(e) => {
            // (An unknown field named `""` has the empty path: its name is the empty string.)
            let is_object = serde_json::from_slice::<Value>(bytes).is_ok_and(|v| v.is_object());
            prop_assert!(
                !is_object || !e.path.is_empty() || has_empty_key(bytes),
                "error without a field path: {} (config: {})",
                e,
                String::from_utf8_lossy(bytes)
            );
            prop_assert!(!e.message.is_empty());
        }
    }
    Ok(())
}

fn has_empty_key(bytes: &[u8]) -> bool {
    fn go(v: &Value) -> bool {
        match v {
            Value::Object(o) => o.iter().any(|(k, v)| k.is_empty() || go(v)),
            Value::Array(a) => a.iter().any(go),
            _ => false,
        }
    }
    serde_json::from_slice::<Value>(bytes).is_ok_and(|v| go(&v))
}

#[test]
fn rich_config_parses() {
    Config::parse(&serde_json::to_vec(&rich_config()).unwrap(), &ProcessEnv).unwrap();
}

proptest! {
    #![proptest_config(config(500))]

    /// Arbitrary JSON values (objects with config field names, and any others) never panic.
    #[test]
    fn arbitrary_json_never_panics(v in json_value(), wrap in any::<bool>()) {
        let v = if wrap { json!({"providers": {"p": v.clone()}, "models": [{"name": "m", "deployments": [v]}]}) } else { v };
        check(&serde_json::to_vec(&v).unwrap())?;
    }

    /// Mutations of a valid config using every section never panic; errors name a field path.
    #[test]
    fn mutated_configs_never_panic(ops in ops(8)) {
        check(&mutate_doc(&rich_config(), &ops))?;
    }
}
