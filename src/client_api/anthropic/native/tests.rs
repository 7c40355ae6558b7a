//! Tests of the native Claude translator: bodies and paths on both hosts, betas, Bedrock streams
//! (at every split), errors.

use super::*;
use crate::aws::eventstream::encode;
use crate::client_api::anthropic::parse_messages_envelope;
use crate::config::{Config, ProcessEnv};
use serde_json::{json, Value};

const BEDROCK_MODEL: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
const VERTEX_MODEL: &str = "claude-sonnet-4@20250514";

fn provider(json: &str) -> Provider {
    let cfg = format!(
        r#"{{"providers":{{"p":{json}}},"models":[{{"name":"m","deployments":[{{"provider":"p"}}]}}]}}"#
    );
    Config::parse(cfg.as_bytes(), &ProcessEnv)
        .unwrap()
        .providers
        .remove(0)
}

fn bedrock(extra: &str) -> Provider {
    provider(&format!(
        r#"{{"type":"bedrock","cluster":"c","region":"us-east-1","aws_access_key_id":"AKID","aws_secret_access_key":"secret"{extra}}}"#
    ))
}

fn vertex(extra: &str) -> Provider {
    provider(&format!(
        r#"{{"type":"vertex","cluster":"c","project":"proj-1","location":"us-east5","access_token":"ya29.tok"{extra}}}"#
    ))
}

fn translate_beta(
    p: &Provider,
    model: &str,
    body: &str,
    beta: Option<&str>,
) -> Result<(NativeClaude, ProviderRequest), GatewayError> {
    let mut env = parse_messages_envelope(body.as_bytes())?;
    env.anthropic_beta = beta.map(str::to_string);
    let host = Host::of(p, model).expect("a native deployment");
    let mut t = NativeClaude::new(host);
    let req = t.request(&ChatCall {
        raw: body.as_bytes(),
        envelope: &env,
        provider: p,
        upstream_model: model,
        now_unix: 1_700_000_000,
        want_stream_usage: true,
    })?;
    Ok((t, req))
}

fn translate(p: &Provider, model: &str, body: &str) -> (NativeClaude, ProviderRequest) {
    translate_beta(p, model, body, None).unwrap()
}

fn sent(req: &ProviderRequest) -> Value {
    serde_json::from_slice(req.body.as_deref().expect("a body")).unwrap()
}

fn header<'a>(req: &'a ProviderRequest, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A second turn with everything the chat pivot cannot carry.
const RICH: &str = r#"{"model":"claude","max_tokens":2048,"stream":false,
 "system":[{"type":"text","text":"Be brief.","cache_control":{"type":"ephemeral"}}],
 "thinking":{"type":"enabled","budget_tokens":1024},
 "stop_sequences":["END"],"temperature":1,"metadata":{"user_id":"u-1"},
 "tools":[{"name":"get_weather","input_schema":{"type":"object"}}],
 "messages":[
  {"role":"user","content":"Weather in Paris?"},
  {"role":"assistant","content":[
    {"type":"thinking","thinking":"Use the tool.","signature":"c2lnLTE="},
    {"type":"redacted_thinking","data":"ZW5jcnlwdGVk"},
    {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},
  {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[
    {"type":"text","text":"sunny"},
    {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]}]}
 ]}"#;

#[test]
fn which_deployments_go_natively() {
    let b = bedrock("");
    for m in [
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        BEDROCK_MODEL,
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
    ] {
        assert_eq!(Host::of(&b, m), Some(Host::Bedrock), "{m}");
    }
    for m in ["amazon.nova-pro-v1:0", "meta.llama3-70b-instruct-v1:0"] {
        assert_eq!(Host::of(&b, m), None, "{m}");
    }
    let v = vertex("");
    assert_eq!(Host::of(&v, VERTEX_MODEL), Some(Host::Vertex));
    assert_eq!(Host::of(&v, "gemini-2.5-flash"), None);
    let tuned = vertex(r#","publisher":"anthropic""#);
    assert_eq!(Host::of(&tuned, "my-tuned"), Some(Host::Vertex));
    let ant = provider(r#"{"type":"anthropic","cluster":"c","api_key":"k"}"#);
    assert_eq!(Host::of(&ant, "claude-sonnet-4-5"), None);
}

#[test]
fn vertex_gets_the_body_without_model_and_with_its_version() {
    let (_, req) = translate(&vertex(""), VERTEX_MODEL, RICH);
    assert_eq!(
        req.path,
        "/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"
    );
    assert_eq!(header(&req, "authorization"), Some("Bearer ya29.tok"));
    assert!(req.remove_headers.contains(&"x-api-key"));
    assert!(!req.remove_headers.contains(&"anthropic-beta"));
    let mut v = sent(&req);
    assert_eq!(v["anthropic_version"], "vertex-2023-10-16");
    assert_eq!(v["stream"], false, "Vertex keeps `stream`");
    let mut want: Value = serde_json::from_str(RICH).unwrap();
    want.as_object_mut().unwrap().remove("model");
    v.as_object_mut().unwrap().remove("anthropic_version");
    assert_eq!(v, want);
    // Streams: :streamRawPredict, `stream` kept.
    let body = RICH.replace("\"stream\":false", "\"stream\":true");
    let (_, req) = translate(&vertex(""), VERTEX_MODEL, &body);
    assert!(req.path.ends_with(":streamRawPredict"), "{}", req.path);
    assert_eq!(sent(&req)["stream"], true);
}

#[test]
fn values_go_byte_for_byte() {
    let body = r#"{"model":"claude","max_tokens":10,"temperature":0.70000000000000001,
        "messages":[{"role":"user","content":"caf\u00e9 \ud83d\ude00"}],"model":"claude"}"#;
    let (_, req) = translate(&vertex(""), VERTEX_MODEL, body);
    let text = String::from_utf8(req.body.unwrap()).unwrap();
    assert!(
        text.contains(r#""temperature":0.70000000000000001"#),
        "{text}"
    );
    assert!(
        text.contains(r#""content":"caf\u00e9 \ud83d\ude00""#),
        "{text}"
    );
    assert!(!text.contains("\"model\""), "{text}");
    // A duplicated key is written once, its last value.
    let body = r#"{"model":"c","max_tokens":10,"top_k":1,"messages":[{"role":"user","content":"x"}],"top_k":5}"#;
    let (_, req) = translate(&vertex(""), VERTEX_MODEL, body);
    let text = String::from_utf8(req.body.unwrap()).unwrap();
    assert_eq!(text.matches("top_k").count(), 1, "{text}");
    assert_eq!(
        sent(&translate(&vertex(""), VERTEX_MODEL, body).1)["top_k"],
        5
    );
    // A client's own anthropic_version is replaced.
    let body = r#"{"model":"c","max_tokens":10,"anthropic_version":"x","messages":[{"role":"user","content":"x"}]}"#;
    let (_, req) = translate(&vertex(""), VERTEX_MODEL, body);
    let text = String::from_utf8(req.body.unwrap()).unwrap();
    assert_eq!(text.matches("anthropic_version").count(), 1, "{text}");
}

#[test]
fn vertex_service_account_auth_is_left_to_the_glue() {
    let key = include_str!("../../../../tests/fixtures/vertex/service_account.json");
    let p = provider(&format!(
        r#"{{"type":"vertex","cluster":"c","project":"proj-1","location":"us-east5","service_account_key":{},"token_cluster":"oauth"}}"#,
        json_string(key)
    ));
    let (_, req) = translate(&p, VERTEX_MODEL, RICH);
    assert_eq!(header(&req, "authorization"), None);
    assert!(req.remove_headers.contains(&"authorization"));
}

#[test]
fn bedrock_gets_invoke_model_signed() {
    let (_, req) = translate(&bedrock(""), BEDROCK_MODEL, RICH);
    assert_eq!(
        req.path,
        "/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/invoke"
    );
    assert!(header(&req, "authorization")
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256 Credential=AKID/"));
    assert_eq!(header(&req, "accept"), Some("application/json"));
    let mut v = sent(&req);
    assert_eq!(v["anthropic_version"], "bedrock-2023-05-31");
    assert!(v.get("anthropic_beta").is_none(), "no list: no betas");
    let mut want: Value = serde_json::from_str(RICH).unwrap();
    for k in ["model", "stream"] {
        want.as_object_mut().unwrap().remove(k);
    }
    v.as_object_mut().unwrap().remove("anthropic_version");
    assert_eq!(v, want);
    let body = RICH.replace("\"stream\":false", "\"stream\":true");
    let (_, req) = translate(&bedrock(""), BEDROCK_MODEL, &body);
    assert!(req.path.ends_with("/invoke-with-response-stream"));
    assert!(sent(&req).get("stream").is_none());
    // A Bedrock API key instead of SigV4.
    let p = provider(r#"{"type":"bedrock","cluster":"c","region":"us-east-1","api_key":"brk"}"#);
    let (_, req) = translate(&p, BEDROCK_MODEL, RICH);
    assert_eq!(header(&req, "authorization"), Some("Bearer brk"));
}

#[test]
fn bedrock_betas_come_from_the_header_or_the_body_through_the_list() {
    let p =
        bedrock(r#","anthropic_beta":["interleaved-thinking-*","context-management-2025-06-27"]"#);
    let hdr =
        Some("claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27");
    let (_, req) = translate_beta(&p, BEDROCK_MODEL, RICH, hdr).unwrap();
    assert_eq!(
        sent(&req)["anthropic_beta"],
        json!([
            "interleaved-thinking-2025-05-14",
            "context-management-2025-06-27"
        ])
    );
    // The body's own list wins over the header, filtered the same way.
    let body = RICH.replacen(
        "\"max_tokens\"",
        r#""anthropic_beta":["files-api-2025-04-14","interleaved-thinking-2025-05-14"],"max_tokens""#,
        1,
    );
    let (_, req) = translate_beta(&p, BEDROCK_MODEL, &body, hdr).unwrap();
    let text = String::from_utf8(req.body.clone().unwrap()).unwrap();
    assert_eq!(text.matches("anthropic_beta").count(), 1, "{text}");
    assert_eq!(
        sent(&req)["anthropic_beta"],
        json!(["interleaved-thinking-2025-05-14"])
    );
    // Nothing allowed: no field at all. Without a list, no betas either.
    let (_, req) = translate_beta(&p, BEDROCK_MODEL, RICH, Some("files-api-2025-04-14")).unwrap();
    assert!(sent(&req).get("anthropic_beta").is_none());
    let (_, req) = translate_beta(&bedrock(""), BEDROCK_MODEL, &body, hdr).unwrap();
    assert!(sent(&req).get("anthropic_beta").is_none());
    // Not a list of names: 400.
    let bad = RICH.replacen("\"max_tokens\"", r#""anthropic_beta":[1],"max_tokens""#, 1);
    let e = translate_beta(&p, BEDROCK_MODEL, &bad, None).err().unwrap();
    assert_eq!(
        (e.status, e.param.as_deref()),
        (400, Some("anthropic_beta"))
    );
}

const ANSWER: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4","content":[{"type":"thinking","thinking":"hm","signature":"c2ln"},{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"cache_read_input_tokens":4,"cache_creation_input_tokens":2,"output_tokens":3}}"#;

#[test]
fn answers_pass_through_with_their_usage() {
    for (p, model) in [(vertex(""), VERTEX_MODEL), (bedrock(""), BEDROCK_MODEL)] {
        let (mut t, _) = translate(&p, model, RICH);
        assert_eq!(t.response(ANSWER.as_bytes()).unwrap(), None, "{model}");
        let u = t.usage().unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.cached_tokens,
                u.cache_creation_tokens,
                u.completion_tokens
            ),
            (16, 4, 2, 3)
        );
    }
}

/// Anthropic's stream events for one short answer with thinking.
fn anthropic_events() -> Vec<Value> {
    vec![
        json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":1}}}),
        json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}),
        json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm\nok"}}),
        json!({"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"c2ln"}}),
        json!({"type":"content_block_stop","index":0}),
        json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}),
        json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"héllo"}}),
        json!({"type":"content_block_stop","index":1}),
        json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":7}}),
        json!({"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":10,"outputTokenCount":7}}),
    ]
}

fn chunk_frame(event: &Value) -> Vec<u8> {
    let payload = json!({
        "bytes": base64::standard(event.to_string().as_bytes()),
        "p": "abcdefghij"
    });
    encode(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

fn bedrock_stream(t: &mut NativeClaude, wire: &[u8], split: usize) -> String {
    let mut out = Vec::new();
    assert!(t.stream_chunk(&wire[..split], false, &mut out));
    assert!(t.stream_chunk(&wire[split..], true, &mut out));
    String::from_utf8(out).unwrap()
}

fn stream_translator() -> NativeClaude {
    let body = RICH.replace("\"stream\":false", "\"stream\":true");
    translate(&bedrock(""), BEDROCK_MODEL, &body).0
}

#[test]
fn bedrock_stream_becomes_sse_at_every_split() {
    let events = anthropic_events();
    let wire: Vec<u8> = events.iter().flat_map(chunk_frame).collect();
    let want: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    for split in 0..=wire.len() {
        let mut t = stream_translator();
        assert_eq!(bedrock_stream(&mut t, &wire, split), want, "split {split}");
        let u = t.usage().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens),
            (10, 7),
            "split {split}"
        );
    }
    // One byte at a time.
    let mut t = stream_translator();
    let mut out = Vec::new();
    for b in &wire {
        t.stream_chunk(std::slice::from_ref(b), false, &mut out);
    }
    t.stream_chunk(&[], true, &mut out);
    assert_eq!(String::from_utf8(out).unwrap(), want);
    // Nothing after message_stop is read (an exception there is not a second terminal event).
    let mut late = wire.clone();
    late.extend(encode(
        &[
            (":exception-type", "modelStreamErrorException"),
            (":message-type", "exception"),
        ],
        br#"{"message":"late"}"#,
    ));
    let mut t = stream_translator();
    assert_eq!(bedrock_stream(&mut t, &late, 7), want);
}

#[test]
fn pretty_printed_events_become_one_data_line() {
    let e = json!({"type":"ping"});
    let payload = json!({"bytes": base64::standard(b"{\n  \"type\": \"ping\"\n}")});
    let mut wire = encode(
        &[(":event-type", "chunk"), (":message-type", "event")],
        payload.to_string().as_bytes(),
    );
    wire.extend(chunk_frame(&json!({"type":"message_stop"})));
    let mut t = stream_translator();
    let out = bedrock_stream(&mut t, &wire, 0);
    assert_eq!(
        out,
        format!("event: ping\ndata: {e}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n")
    );
}

fn error_event(out: &str) -> Value {
    let data = out
        .split("event: error\ndata: ")
        .nth(1)
        .expect("an error event")
        .trim_end();
    serde_json::from_str(data).unwrap()
}

#[test]
fn bedrock_stream_failures_become_one_error_event() {
    let events = anthropic_events();
    let head: Vec<u8> = events[..3].iter().flat_map(chunk_frame).collect();
    // An exception frame: the error, and nothing read after it.
    let mut wire = head.clone();
    wire.extend(encode(
        &[
            (":exception-type", "throttlingException"),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        br#"{"message":"Too many requests, please wait before trying again."}"#,
    ));
    wire.extend(chunk_frame(&events[3]));
    for split in [0, head.len() + 5, wire.len()] {
        let mut t = stream_translator();
        let out = bedrock_stream(&mut t, &wire, split);
        let e = error_event(&out);
        assert_eq!(e["type"], "error");
        assert_eq!(e["error"]["type"], "rate_limit_error");
        assert!(e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("throttlingException: Too many requests"));
        assert_eq!(out.matches("event: ").count(), 4, "{out}");
        assert!(!out.contains("signature_delta"), "{out}");
    }
    // A stream that ends early, or inside a frame.
    let mut t = stream_translator();
    let out = bedrock_stream(&mut t, &head, 10);
    assert!(error_event(&out)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("before message_stop"));
    let mut t = stream_translator();
    let out = bedrock_stream(&mut t, &head[..head.len() - 3], 10);
    assert!(error_event(&out)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("inside an event-stream message"));
    // A frame with a bad CRC; a chunk that is not base64; an event without a type.
    let mut bad_crc = head.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    let mut t = stream_translator();
    let out = bedrock_stream(&mut t, &bad_crc, 0);
    assert_eq!(error_event(&out)["error"]["type"], "api_error");
    assert_eq!(out.matches("event: ").count(), 3, "{out}");
    for payload in [
        r#"{"bytes":"not base64!"}"#.to_string(),
        json!({"bytes": base64::standard(br#"{"no":"type"}"#)}).to_string(),
        "[]".to_string(),
    ] {
        let wire = encode(
            &[(":event-type", "chunk"), (":message-type", "event")],
            payload.as_bytes(),
        );
        let mut t = stream_translator();
        let out = bedrock_stream(&mut t, &wire, 0);
        assert_eq!(error_event(&out)["error"]["type"], "api_error", "{payload}");
        assert_eq!(out.matches("event: ").count(), 1, "{out}");
    }
    // An `error` message (not an exception).
    let wire = encode(
        &[
            (":message-type", "error"),
            (":error-code", "InternalFailure"),
            (":error-message", "boom"),
        ],
        b"",
    );
    let mut t = stream_translator();
    let out = bedrock_stream(&mut t, &wire, 0);
    assert!(error_event(&out)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("InternalFailure: boom"));
    // Anthropic's own error event inside a chunk passes as it is and ends the stream.
    let wire = chunk_frame(
        &json!({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}),
    );
    let mut t = stream_translator();
    let out = bedrock_stream(&mut t, &wire, 0);
    assert_eq!(out.matches("event: error").count(), 1, "{out}");
}

#[test]
fn vertex_streams_pass_through_with_their_usage() {
    let body = RICH.replace("\"stream\":false", "\"stream\":true");
    let (mut t, _) = translate(&vertex(""), VERTEX_MODEL, &body);
    let sse: String = anthropic_events()
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    let mut out = Vec::new();
    let (a, b) = sse.as_bytes().split_at(100);
    assert!(!t.stream_chunk(a, false, &mut out));
    assert!(!t.stream_chunk(b, true, &mut out));
    assert!(out.is_empty());
    assert_eq!(t.usage().unwrap().completion_tokens, 7);
}

#[test]
fn errors_are_read_in_the_hosts_shapes() {
    let (t, _) = translate(&vertex(""), VERTEX_MODEL, RICH);
    let e = t.error(
        400,
        br#"{"type":"error","error":{"type":"invalid_request_error","message":"messages.1.content.0.signature: Field required"}}"#,
    );
    assert_eq!(e.status, 400);
    assert!(
        e.message.contains("signature: Field required"),
        "{}",
        e.message
    );
    let e = t.error(
        429,
        br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#,
    );
    assert_eq!(e.status, 429);
    assert!(e.message.contains("Quota exceeded"), "{}", e.message);
    let (t, _) = translate(&bedrock(""), BEDROCK_MODEL, RICH);
    let e = t.error(
        400,
        br#"{"message":"messages.1.content.0: invalid signature"}"#,
    );
    assert_eq!(
        (e.status, e.code.as_deref()),
        (400, Some("ValidationException"))
    );
    assert!(e.message.contains("invalid signature"), "{}", e.message);
    let body = super::super::error_body(&e);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
}

#[test]
fn a_bad_vertex_model_id_is_400() {
    let p = vertex("");
    let env = parse_messages_envelope(RICH.as_bytes()).unwrap();
    let e = NativeClaude::new(Host::Vertex)
        .request(&ChatCall {
            raw: RICH.as_bytes(),
            envelope: &env,
            provider: &p,
            upstream_model: "claude/../x",
            now_unix: 1,
            want_stream_usage: true,
        })
        .err()
        .unwrap();
    assert_eq!(e.status, 400);
}
