//! `/v1/messages/count_tokens` through the gateway: routing, each provider's request, the
//! answers and errors translated back, the estimate.

use super::*;
use crate::config::{Config, ProcessEnv};
use crate::gateway::{
    BodyAction, BodyRequest, Endpoint, Forward, Gateway, HeadersDecision, HeadersRequest,
};
use serde_json::json;

const CONFIG: &str = r#"{
    "providers": {
        "ant": {"type": "anthropic", "cluster": "c_ant", "api_key": "sk-ant-provider"},
        "gem": {"type": "gemini", "cluster": "c_gem", "api_key": "AIza-provider"},
        "vx": {"type": "vertex", "cluster": "c_vx", "project": "p1", "location": "us-central1", "access_token": "ya29.tok"},
        "br": {"type": "bedrock", "cluster": "c_br", "region": "us-east-1", "aws_access_key_id": "AKIDTEST", "aws_secret_access_key": "secret"},
        "oai": {"type": "openai", "cluster": "c_oai", "api_key": "sk-o"},
        "co": {"type": "cohere", "cluster": "c_co", "api_key": "co-key"}
    },
    "models": [
        {"name": "claude", "aliases": ["sonnet"], "deployments": [{"provider": "ant", "model": "claude-sonnet-4-5"}]},
        {"name": "gemini", "deployments": [{"provider": "gem", "model": "gemini-2.5-flash"}]},
        {"name": "vx-gemini", "deployments": [{"provider": "vx", "model": "gemini-2.5-pro"}]},
        {"name": "vx-claude", "deployments": [{"provider": "vx", "model": "claude-sonnet-4-5@20250929"}]},
        {"name": "bedrock", "deployments": [{"provider": "br", "model": "anthropic.claude-3-5-haiku-20241022-v1:0"}]},
        {"name": "gpt", "deployments": [{"provider": "oai", "model": "gpt-4o-mini"}]},
        {"name": "command", "deployments": [{"provider": "co", "model": "command-r"}]},
        {"name": "pair", "deployments": [{"provider": "gem", "model": "gemini-2.5-flash"}, {"provider": "ant", "model": "claude-sonnet-4-5"}]}
    ],
    "router": {"attempts_cluster": "llmux_attempts", "num_retries": 1}
}"#;

fn gw() -> Gateway {
    Gateway::new(Config::parse(CONFIG.as_bytes(), &ProcessEnv).unwrap(), 0)
}

/// A count request for `model`: a system prompt, one user turn, one tool.
fn body(model: &str) -> Vec<u8> {
    json!({
        "model": model,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "How warm is Paris?"}]}],
        "tools": [{"name": "get_weather", "description": "Weather for a city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    })
    .to_string()
    .into_bytes()
}

fn count(g: &Gateway, body: &[u8]) -> Result<Forward, GatewayError> {
    g.on_request_body(
        &BodyRequest {
            endpoint: Endpoint::CountTokens,
            content_type: Some("application/json"),
            key: None,
            now_unix: 1_700_000_000,
            pick: 0,
            anthropic_beta: None,
        },
        body,
    )
}

fn header<'a>(f: &'a Forward, name: &str) -> Option<&'a str> {
    f.set_headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn sent(f: &Forward) -> Value {
    serde_json::from_slice(f.body.as_deref().expect("a translated body")).unwrap()
}

/// The provider answers `status` with `body`: what the client gets (status, headers, body).
fn answer(f: &mut Forward, status: u16, body: &[u8]) -> (u16, Vec<(&'static str, String)>, Value) {
    let h = f.exchange.on_response_headers(status, None);
    assert!(h.wait_for_body, "a count answer is held and rewritten");
    match f.exchange.on_response_body(body, body.len(), true) {
        BodyAction::ReplaceWhole { status, body } => {
            (status, h.set, serde_json::from_slice(&body).unwrap())
        }
        BodyAction::Continue => (status, h.set, serde_json::from_slice(body).unwrap()),
        other => panic!("unexpected {other:?}"),
    }
}

fn token_header<'a>(set: &'a [(&'static str, String)]) -> Option<&'a str> {
    set.iter()
        .find(|(k, _)| *k == TOKEN_COUNT_HEADER)
        .map(|(_, v)| v.as_str())
}

#[test]
fn the_path_is_routed_like_messages() {
    let g = gw();
    let h = |method, path| HeadersRequest {
        method,
        path,
        content_length: Some(10),
        credential: None,
        now_unix: 0,
        provider_hint: None,
    };
    for path in [
        "/v1/messages/count_tokens",
        "/v1/messages/count_tokens?beta=true",
    ] {
        assert_eq!(
            g.on_request_headers(&h("POST", path)),
            HeadersDecision::ReadBody(Endpoint::CountTokens, None)
        );
    }
    let HeadersDecision::Respond(r) = g.on_request_headers(&h("GET", "/v1/messages/count_tokens"))
    else {
        panic!("GET must be refused")
    };
    assert_eq!(r.status, 405);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["type"], "error", "Anthropic's error shape");
}

#[test]
fn the_envelope_needs_messages_but_no_max_tokens() {
    let g = gw();
    assert!(count(&g, &body("claude")).is_ok(), "no max_tokens is fine");
    let e = count(&g, br#"{"model":"claude","messages":[]}"#)
        .err()
        .unwrap();
    assert_eq!(e.status, 400);
    assert_eq!(e.param.as_deref(), Some("messages"));
    let e = count(
        &g,
        br#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#,
    )
    .err()
    .unwrap();
    assert_eq!(e.status, 404);
    let r = g.error_response(Endpoint::CountTokens, &e);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["type"], "not_found_error");
}

#[test]
fn anthropic_gets_its_own_endpoint_with_the_model_renamed() {
    let g = gw();
    let mut f = count(&g, &body("sonnet")).unwrap();
    assert!(f.answer.is_none() && f.attempts.is_none());
    assert_eq!(header(&f, ":path"), Some("/v1/messages/count_tokens"));
    assert_eq!(header(&f, "x-api-key"), Some("sk-ant-provider"));
    assert!(header(&f, "anthropic-version").is_some());
    assert_eq!(sent(&f)["model"], "claude-sonnet-4-5");
    assert_eq!(sent(&f)["system"], "Be brief.");
    let (status, set, v) = answer(&mut f, 200, br#"{"input_tokens":42}"#);
    assert_eq!((status, v), (200, json!({"input_tokens": 42})));
    assert_eq!(token_header(&set), Some("provider"));
    assert_eq!(
        f.exchange.usage(),
        Some(Usage::default()),
        "no tokens charged"
    );
}

#[test]
fn anthropic_errors_keep_their_status_and_shape() {
    let g = gw();
    let mut f = count(&g, &body("claude")).unwrap();
    let (status, set, v) = answer(
        &mut f,
        529,
        br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#,
    );
    assert_eq!(status, 529);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "overloaded_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("busy"));
    assert_eq!(token_header(&set), None, "no count was made");
    // A 200 without a count is the provider's fault.
    let mut f = count(&g, &body("claude")).unwrap();
    let (status, _, v) = answer(&mut f, 200, b"{\"tokens\":1}");
    assert_eq!(status, 502);
    assert_eq!(v["error"]["type"], "api_error");
}

#[test]
fn gemini_counts_through_count_tokens_with_the_translated_request() {
    let g = gw();
    let mut f = count(&g, &body("gemini")).unwrap();
    assert_eq!(
        header(&f, ":path"),
        Some("/v1beta/models/gemini-2.5-flash:countTokens")
    );
    assert_eq!(header(&f, "x-goog-api-key"), Some("AIza-provider"));
    assert!(f.remove_headers.contains(&"x-api-key"));
    let v = sent(&f);
    let r = &v["generateContentRequest"];
    assert_eq!(
        v.as_object().unwrap().len(),
        1,
        "only generateContentRequest: {v}"
    );
    assert_eq!(r["model"], "models/gemini-2.5-flash");
    assert_eq!(
        r["contents"],
        json!([{"role": "user", "parts": [{"text": "How warm is Paris?"}]}])
    );
    assert_eq!(r["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(
        r["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );
    let (status, set, v) = answer(
        &mut f,
        200,
        br#"{"totalTokens":17,"promptTokensDetails":[{"modality":"TEXT","tokenCount":17}]}"#,
    );
    assert_eq!((status, v), (200, json!({"input_tokens": 17})));
    assert_eq!(token_header(&set), Some("provider"));
    // proto3 JSON leaves zero out.
    let mut f = count(&g, &body("gemini")).unwrap();
    assert_eq!(answer(&mut f, 200, b"{}").2, json!({"input_tokens": 0}));
}

#[test]
fn gemini_errors_come_back_in_anthropics_shape() {
    let g = gw();
    let mut f = count(&g, &body("gemini")).unwrap();
    let (status, _, v) = answer(
        &mut f,
        400,
        br#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT"}}"#,
    );
    assert_eq!(status, 400);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("API key not valid."));
    let mut f = count(&g, &body("gemini")).unwrap();
    let (status, _, _) = answer(&mut f, 200, b"[1,2");
    assert_eq!(status, 502);
}

#[test]
fn vertex_gemini_counts_with_top_level_fields() {
    let g = gw();
    let mut f = count(&g, &body("vx-gemini")).unwrap();
    assert_eq!(
        header(&f, ":path"),
        Some("/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-pro:countTokens")
    );
    assert_eq!(header(&f, "authorization"), Some("Bearer ya29.tok"));
    let v = sent(&f);
    assert!(v.get("generateContentRequest").is_none());
    assert_eq!(v["contents"][0]["parts"][0]["text"], "How warm is Paris?");
    assert_eq!(v["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert!(v["tools"].is_array());
    for k in v.as_object().unwrap().keys() {
        assert!(
            VERTEX_FIELDS.contains(&k.as_str()),
            "{k} is not a CountTokensRequest field"
        );
    }
    let (status, set, v) = answer(
        &mut f,
        200,
        br#"{"totalTokens":9,"totalBillableCharacters":30}"#,
    );
    assert_eq!((status, v), (200, json!({"input_tokens": 9})));
    assert_eq!(token_header(&set), Some("provider"));
}

#[test]
fn vertex_claude_counts_with_the_messages_body() {
    let g = gw();
    let mut f = count(&g, &body("vx-claude")).unwrap();
    assert_eq!(
        header(&f, ":path"),
        Some("/v1/projects/p1/locations/us-central1/publishers/anthropic/models/count-tokens:rawPredict")
    );
    assert_eq!(header(&f, "authorization"), Some("Bearer ya29.tok"));
    let v = sent(&f);
    assert_eq!(v["model"], "claude-sonnet-4-5@20250929");
    assert_eq!(v["anthropic_version"], "vertex-2023-10-16");
    assert_eq!(v["messages"][0]["content"][0]["text"], "How warm is Paris?");
    assert_eq!(v["system"], "Be brief.");
    let (status, set, v) = answer(&mut f, 200, br#"{"input_tokens":12}"#);
    assert_eq!((status, v), (200, json!({"input_tokens": 12})));
    assert_eq!(token_header(&set), Some("provider"));
    // Errors of both shapes come back in Anthropic's.
    let mut f = count(&g, &body("vx-claude")).unwrap();
    let (status, _, v) = answer(
        &mut f,
        429,
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
    );
    assert_eq!(status, 429);
    assert_eq!(v["error"]["type"], "rate_limit_error");
    let mut f = count(&g, &body("vx-claude")).unwrap();
    let (status, _, v) = answer(
        &mut f,
        403,
        br#"{"error":{"code":403,"message":"denied","status":"PERMISSION_DENIED"}}"#,
    );
    assert_eq!(status, 403);
    assert_eq!(v["type"], "error");
    assert!(v["error"]["message"].as_str().unwrap().contains("denied"));
}

#[test]
fn bedrock_counts_through_count_tokens_signed() {
    let g = gw();
    let mut f = count(&g, &body("bedrock")).unwrap();
    assert_eq!(
        header(&f, ":path"),
        Some("/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/count-tokens")
    );
    assert!(header(&f, "authorization")
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/"));
    let v = sent(&f);
    let c = &v["input"]["converse"];
    assert_eq!(
        c["messages"],
        json!([{"role": "user", "content": [{"text": "How warm is Paris?"}]}])
    );
    assert_eq!(c["system"], json!([{"text": "Be brief."}]));
    assert_eq!(
        c["toolConfig"]["tools"][0]["toolSpec"]["name"],
        "get_weather"
    );
    assert!(c.get("inferenceConfig").is_none() && c.get("modelId").is_none());
    let (status, set, v) = answer(&mut f, 200, br#"{"inputTokens":23}"#);
    assert_eq!((status, v), (200, json!({"input_tokens": 23})));
    assert_eq!(token_header(&set), Some("provider"));
    let mut f = count(&g, &body("bedrock")).unwrap();
    let (status, _, v) = answer(
        &mut f,
        400,
        br#"{"message":"The provided model doesn't support counting tokens."}"#,
    );
    assert_eq!(status, 400);
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("doesn't support counting tokens"));
    let mut f = count(&g, &body("bedrock")).unwrap();
    assert_eq!(answer(&mut f, 200, b"{}").0, 502, "inputTokens is required");
}

#[test]
fn other_providers_get_a_marked_estimate_without_an_upstream() {
    let g = gw();
    for model in ["gpt", "command"] {
        let b = body(model);
        let f = count(&g, &b).unwrap();
        let r = f.answer.as_ref().expect("answered locally");
        assert!(f.set_headers.is_empty() && f.body.is_none());
        assert_eq!(r.status, 200);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v, json!({"input_tokens": b.len() as u64 / 4}), "{model}");
        assert!(r
            .headers
            .contains(&(TOKEN_COUNT_HEADER.to_string(), "estimate".to_string())));
        assert!(r
            .headers
            .contains(&("content-type".to_string(), "application/json".to_string())));
    }
}

#[test]
fn the_estimate_is_a_quarter_of_the_bytes_at_least_one() {
    assert_eq!(estimate(b""), 1);
    assert_eq!(estimate(&[b'x'; 3]), 1);
    assert_eq!(estimate(&[b'x'; 400]), 100);
    assert_eq!(estimate(&[b'x'; 403]), 100);
}

#[test]
fn a_count_goes_to_one_deployment_without_failover() {
    let g = gw();
    let f = count(&g, &body("pair")).unwrap();
    assert!(f.attempts.is_none(), "never the attempts cluster");
    assert_eq!(
        header(&f, "x-llmux-cluster"),
        Some("c_gem"),
        "the first deployment"
    );
    // Chat for the same group does fail over (the config is one that would).
    let chat = g
        .on_request_body(
            &BodyRequest {
                endpoint: Endpoint::Messages,
                content_type: None,
                key: None,
                now_unix: 0,
                pick: 0,
                anthropic_beta: None,
            },
            br#"{"model":"pair","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
    assert!(chat.attempts.is_some());
}

#[test]
fn broken_bodies_never_panic() {
    let g = gw();
    let seed = body("gemini");
    let mut rng = crate::test_support::XorShift(7);
    for _ in 0..400 {
        let input = rng.mutate(&seed, b"{}[]\":,aZ0 \\");
        for model in ["gemini", "bedrock", "vx-gemini"] {
            let swapped = String::from_utf8_lossy(&input).replace("gemini", model);
            let _ = count(&g, swapped.as_bytes());
        }
    }
    for answer_body in [
        &b""[..],
        b"null",
        b"{\"totalTokens\":-1}",
        b"{\"inputTokens\":1e99}",
    ] {
        for model in ["gemini", "bedrock", "claude"] {
            let mut f = count(&g, &body(model)).unwrap();
            let _ = answer(&mut f, 200, answer_body);
        }
    }
}
