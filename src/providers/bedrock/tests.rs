//! Tests of the Bedrock translator: requests, answers, streams (at every split) and errors.

use super::*;
use crate::aws::eventstream::encode;
use crate::client_api::openai::{parse_chat_envelope, parse_embeddings_envelope};
use crate::config::{Config, Env};
use serde_json::{json, Value};

struct NoEnv;
impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

const MODEL: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";

fn provider(extra: &str) -> Provider {
    let cfg = format!(
        r#"{{"providers":{{"br":{{"type":"bedrock","cluster":"c","region":"us-west-2","aws_access_key_id":"AKIDTEST","aws_secret_access_key":"secret"{extra}}}}},
                "models":[{{"name":"m","deployments":[{{"provider":"br","model":"{MODEL}"}}]}}]}}"#
    );
    Config::parse(cfg.as_bytes(), &NoEnv)
        .unwrap()
        .providers
        .remove(0)
}

fn translate_with(
    p: &Provider,
    body: &str,
    model: &str,
) -> Result<(BedrockChat, ProviderRequest), GatewayError> {
    let env = parse_chat_envelope(body.as_bytes())?;
    let mut t = BedrockChat::default();
    let req = t.request(&ChatCall {
        raw: body.as_bytes(),
        envelope: &env,
        provider: p,
        upstream_model: model,
        now_unix: 1_440_938_160,
        want_stream_usage: true,
    })?;
    Ok((t, req))
}

fn translate(body: &str) -> Result<(BedrockChat, ProviderRequest), GatewayError> {
    translate_with(&provider(""), body, MODEL)
}

fn body_of(body: &str) -> Value {
    serde_json::from_slice(&translate(body).unwrap().1.body.unwrap()).unwrap()
}

fn header<'a>(req: &'a ProviderRequest, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn request_is_signed_over_the_encoded_path_and_body() {
    let (_, req) =
        translate(r#"{"model":"m","messages":[{"role":"user","content":"Hi"}]}"#).unwrap();
    assert_eq!(
        req.path,
        "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    );
    assert_eq!(header(&req, "x-amz-date"), Some("20150830T123600Z"));
    let auth = header(&req, "authorization").unwrap();
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/20150830/us-west-2/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature="), "{auth}");
    // The signature is the one of the canonical request built from the wire path and body.
    let body = req.body.as_deref().unwrap();
    let hash = sigv4::hex(&<sha2::Sha256 as sha2::Digest>::digest(body));
    let (canonical, signed) = sigv4::canonical_request(
        "POST",
        &req.path,
        "",
        &[
            (
                "host".into(),
                "bedrock-runtime.us-west-2.amazonaws.com".into(),
            ),
            ("x-amz-date".into(), "20150830T123600Z".into()),
        ],
        &hash,
    );
    assert!(canonical.contains("v1%253A0/converse"));
    let creds = sigv4::Credentials {
        access_key_id: "AKIDTEST".into(),
        secret_access_key: "secret".into(),
        session_token: None,
    };
    assert_eq!(
        auth,
        sigv4::authorization(
            &creds,
            "20150830T123600Z",
            "us-west-2",
            "bedrock",
            &canonical,
            &signed
        )
    );
    assert!(req.remove_headers.contains(&"x-amz-security-token"));
    // Streams go to converse-stream; a session token is sent and signed.
    let p = provider(r#","aws_session_token":"tok""#);
    let (_, req) = translate_with(
        &p,
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#,
        "arn:aws:bedrock:us-west-2:1:inference-profile/x",
    )
    .unwrap();
    assert_eq!(
        req.path,
        "/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A1%3Ainference-profile%2Fx/converse-stream"
    );
    assert_eq!(header(&req, "x-amz-security-token"), Some("tok"));
    assert!(header(&req, "authorization")
        .unwrap()
        .contains("SignedHeaders=host;x-amz-date;x-amz-security-token,"));
    // A Bedrock API key goes as Bearer, unsigned.
    let p = Config::parse(br#"{"providers":{"br":{"type":"bedrock","cluster":"c","region":"eu-west-1","api_key":"bk"}},"models":[{"name":"m","deployments":[{"provider":"br"}]}]}"#, &NoEnv).unwrap().providers.remove(0);
    assert_eq!(
        p.host.as_deref(),
        Some("bedrock-runtime.eu-west-1.amazonaws.com")
    );
    let (_, req) = translate_with(
        &p,
        r#"{"model":"m","messages":[{"role":"user","content":"Hi"}]}"#,
        "m",
    )
    .unwrap();
    assert_eq!(header(&req, "authorization"), Some("Bearer bk"));
    assert_eq!(header(&req, "x-amz-date"), None);
}

#[test]
fn request_maps_messages_tools_and_config() {
    let b = body_of(
        r#"{"model":"m","messages":[
            {"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"data:image/jpeg;base64,/9j/4AAQ"}}]},
            {"role":"assistant","content":"","tool_calls":[
                {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"bad id!","type":"function","function":{"name":"get_weather","arguments":""}}]},
            {"role":"tool","tool_call_id":"call_1","content":"sunny"},
            {"role":"tool","tool_call_id":"bad id!","content":[{"type":"text","text":"rainy"}]},
            {"role":"developer","content":[{"type":"text","text":"Use metric."}]},
            {"role":"user","content":"Thanks"}],
            "max_completion_tokens":100,"max_tokens":5,"temperature":1.5,"top_p":0.9,"stop":["END"],"user":"u","seed":3,
            "tools":[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},
                     {"type":"function","function":{"name":"noop"}}],
            "tool_choice":"required"}"#,
    );
    assert_eq!(
        b["system"],
        json!([{"text": "Be brief."}, {"text": "Use metric."}])
    );
    assert_eq!(
        b["messages"][0],
        json!({"role":"user","content":[{"text":"What is this?"},{"image":{"format":"jpeg","source":{"bytes":"/9j/4AAQ"}}}]})
    );
    assert_eq!(
        b["messages"][1],
        json!({"role":"assistant","content":[
                {"toolUse":{"toolUseId":"call_1","name":"get_weather","input":{"city":"Paris"}}},
                {"toolUse":{"toolUseId":"bad_id_","name":"get_weather","input":{}}}]})
    );
    assert_eq!(
        b["messages"][2],
        json!({"role":"user","content":[
                {"toolResult":{"toolUseId":"call_1","content":[{"text":"sunny"}]}},
                {"toolResult":{"toolUseId":"bad_id_","content":[{"text":"rainy"}]}},
                {"text":"Thanks"}]})
    );
    assert_eq!(b["messages"].as_array().unwrap().len(), 3);
    assert_eq!(
        b["inferenceConfig"],
        json!({"maxTokens":100,"temperature":1.0,"topP":0.9,"stopSequences":["END"]})
    );
    assert_eq!(b["toolConfig"]["toolChoice"], json!({"any": {}}));
    assert_eq!(
        b["toolConfig"]["tools"][0],
        json!({"toolSpec":{"name":"get_weather","description":"Weather","inputSchema":{"json":{"type":"object","properties":{"city":{"type":"string"}}}}}})
    );
    assert_eq!(
        b["toolConfig"]["tools"][1]["toolSpec"]["inputSchema"]["json"],
        json!({"type":"object","properties":{}})
    );
    let keys: Vec<&String> = b.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["inferenceConfig", "messages", "system", "toolConfig"]
    );
}

/// Long texts go through the no-scan path when serde_json lent them and the escaping path
/// when they held escapes: either way the Converse body carries exactly the client's text.
#[test]
fn long_texts_and_image_data_arrive_unchanged() {
    let crate::test_support::LongTexts {
        plain,
        escaped,
        unescaped,
        b64,
    } = crate::test_support::long_texts();
    let b = body_of(&format!(
        r#"{{"model":"m","messages":[{{"role":"system","content":"{plain}"}},
               {{"role":"system","content":[{{"type":"text","text":"{escaped}"}}]}},
               {{"role":"user","content":[{{"type":"text","text":"{plain}"}},{{"type":"text","text":"{escaped}"}},
                 {{"type":"image_url","image_url":{{"url":"data:image/png;base64,{b64}"}}}}]}},
               {{"role":"assistant","content":"{escaped}","tool_calls":[{{"id":"c","type":"function","function":{{"name":"f","arguments":"{{}}"}}}}]}},
               {{"role":"tool","tool_call_id":"c","content":"{escaped}"}},
               {{"role":"assistant","content":[{{"type":"text","text":"{plain}"}},{{"type":"refusal","refusal":"{escaped}"}}]}},
               {{"role":"user","content":"{plain}"}}]}}"#
    ));
    assert!(b64.len() >= 64 && plain.len() >= 64);
    assert_eq!(b["system"], json!([{"text": plain}, {"text": unescaped}]));
    assert_eq!(
        b["messages"],
        json!([
            {"role":"user","content":[
                {"text":plain},
                {"text":unescaped},
                {"image":{"format":"png","source":{"bytes":b64}}}]},
            {"role":"assistant","content":[
                {"text":unescaped},
                {"toolUse":{"toolUseId":"c","name":"f","input":{}}}]},
            {"role":"user","content":[
                {"toolResult":{"toolUseId":"c","content":[{"text":unescaped}]}}]},
            {"role":"assistant","content":[{"text":plain},{"text":unescaped}]},
            {"role":"user","content":[{"text":plain}]}
        ])
    );
}

#[test]
fn tool_choice_reasoning_and_structured_output() {
    let tools =
        r#""tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]"#;
    let b = body_of(&format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{tools},"tool_choice":{{"type":"function","function":{{"name":"f"}}}}}}"#
    ));
    assert_eq!(
        b["toolConfig"]["toolChoice"],
        json!({"tool": {"name": "f"}})
    );
    let b = body_of(&format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{tools},"tool_choice":"auto"}}"#
    ));
    assert_eq!(b["toolConfig"]["toolChoice"], json!({"auto": {}}));
    let b = body_of(&format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{tools}}}"#
    ));
    assert!(b["toolConfig"].get("toolChoice").is_none());
    // none: no tools, unless the history has tool blocks (then declared, no choice).
    let b = body_of(&format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{tools},"tool_choice":"none"}}"#
    ));
    assert!(b.get("toolConfig").is_none());
    let b = body_of(&format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"x"}},{{"role":"assistant","tool_calls":[{{"id":"c","type":"function","function":{{"name":"f","arguments":"{{}}"}}}}]}},{{"role":"tool","tool_call_id":"c","content":"r"}}],{tools},"tool_choice":"none"}}"#
    ));
    assert!(b["toolConfig"]["tools"].is_array() && b["toolConfig"].get("toolChoice").is_none());
    let b = body_of(
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"medium"}"#,
    );
    assert_eq!(
        b["additionalModelRequestFields"],
        json!({"thinking": {"type": "enabled", "budget_tokens": 4096}})
    );
    let b = body_of(
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"out","schema":{"type":"object"}}}}"#,
    );
    assert_eq!(
        b["outputConfig"],
        json!({"textFormat":{"type":"json_schema","structure":{"jsonSchema":{"schema":"{\"type\":\"object\"}","name":"out"}}}})
    );
    // A conversation that starts with the assistant gets a user turn first.
    let b = body_of(
        r#"{"model":"m","messages":[{"role":"assistant","content":"Hello"},{"role":"user","content":"x"}]}"#,
    );
    assert_eq!(
        b["messages"][0],
        json!({"role":"user","content":[{"text":LEADING_USER_PLACEHOLDER}]})
    );
}

#[test]
fn request_refuses_what_bedrock_cannot_do() {
    let msgs = r#""messages":[{"role":"user","content":"x"}]"#;
    for (extra, param) in [
        (r#","n":2"#, "n"),
        (r#","logprobs":true"#, "logprobs"),
        (
            r#","response_format":{"type":"json_object"}"#,
            "response_format",
        ),
        (r#","tools":[{"type":"web_search"}]"#, "tools[0]"),
        (
            r#","tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}"#,
            "tool_choice",
        ),
        (r#","reasoning_effort":"extreme""#, "reasoning_effort"),
        (r#","functions":[{"name":"f"}]"#, "functions"),
    ] {
        let e = translate(&format!(r#"{{"model":"m",{msgs}{extra}}}"#))
            .err()
            .unwrap();
        assert_eq!(
            (e.status, e.param.as_deref()),
            (400, Some(param)),
            "{extra}: {}",
            e.message
        );
    }
    for (messages, param) in [
        (
            r#"[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]"#,
            "messages[0].content[0]",
        ),
        (
            r#"[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/tiff;base64,AAAA"}}]}]"#,
            "messages[0].content[0]",
        ),
        (
            r#"[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AA","format":"wav"}}]}]"#,
            "messages[0].content[0]",
        ),
        (r#"[{"role":"user","content":""}]"#, "messages[0].content"),
        (r#"[{"role":"system","content":"s"}]"#, "messages"),
        (
            r#"[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]"#,
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            r#"[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{nope"}}]}]"#,
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            r#"[{"role":"tool","content":"r"}]"#,
            "messages[0].tool_call_id",
        ),
    ] {
        let e = translate(&format!(r#"{{"model":"m","messages":{messages}}}"#))
            .err()
            .unwrap();
        assert_eq!(
            (e.status, e.param.as_deref()),
            (400, Some(param)),
            "{messages}: {}",
            e.message
        );
    }
    let e = translate_with(
        &provider(""),
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"low"}"#,
        "amazon.nova-pro-v1:0",
    )
    .err()
    .unwrap();
    assert_eq!(e.param.as_deref(), Some("reasoning_effort"));
}

#[test]
fn response_becomes_chat_completion() {
    let (mut t, _) =
        translate(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#).unwrap();
    let body = br#"{"output":{"message":{"role":"assistant","content":[
            {"reasoningContent":{"reasoningText":{"text":"thinking...","signature":"s"}}},
            {"text":"Let me check."},
            {"toolUse":{"toolUseId":"tooluse_1","name":"get_weather","input":{"city":"Paris"}}}]}},
            "stopReason":"tool_use","usage":{"inputTokens":10,"outputTokens":5,"totalTokens":15,"cacheReadInputTokens":4,"cacheWriteInputTokens":2},
            "metrics":{"latencyMs":12}}"#;
    let out: Value = serde_json::from_slice(&t.response(body).unwrap().unwrap()).unwrap();
    let c = &out["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls");
    assert_eq!(c["message"]["content"], "Let me check.");
    assert_eq!(c["message"]["reasoning_content"], "thinking...");
    assert_eq!(
        c["message"]["tool_calls"],
        json!([{"id":"tooluse_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}])
    );
    assert_eq!(out["usage"]["prompt_tokens"], 16);
    assert_eq!(out["usage"]["completion_tokens"], 5);
    assert_eq!(out["usage"]["total_tokens"], 21);
    assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
    assert!(out["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(out["model"], MODEL);
    for (reason, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ] {
        let body = format!(
            r#"{{"output":{{"message":{{"role":"assistant","content":[{{"text":"a"}}]}}}},"stopReason":"{reason}","usage":{{"inputTokens":1,"outputTokens":1}}}}"#
        );
        let out: Value =
            serde_json::from_slice(&t.response(body.as_bytes()).unwrap().unwrap()).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], finish);
    }
    assert_eq!(
        t.response(br#"{"stopReason":"malformed_tool_use"}"#)
            .unwrap_err()
            .status,
        502
    );
    assert_eq!(t.response(b"nope").unwrap_err().status, 502);
}

#[test]
fn errors_are_mapped_by_status() {
    let (t, _) = translate(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#).unwrap();
    for (status, code) in [
        (400, "ValidationException"),
        (403, "AccessDeniedException"),
        (404, "ResourceNotFoundException"),
        (424, "ModelErrorException"),
        (429, "ThrottlingException"),
        (500, "InternalServerException"),
        (503, "ServiceUnavailableException"),
    ] {
        let e = t.error(
            status,
            br#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        assert_eq!((e.status, e.code.as_deref()), (status, Some(code)));
        assert!(e.message.starts_with("br returned"), "{}", e.message);
        assert!(e.message.contains("Too many requests"));
    }
    assert_eq!(t.error(429, b"").kind, "rate_limit_error");
    assert!(t
        .error(502, b"<html>bad gateway</html>")
        .message
        .contains("bad gateway"));
}

fn ev(kind: &str, payload: &str) -> Vec<u8> {
    encode(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.as_bytes(),
    )
}

fn stream_body(with_metadata: bool) -> Vec<u8> {
    let mut s = ev("messageStart", r#"{"p":"abcdefgh","role":"assistant"}"#);
    s.extend(ev(
        "contentBlockDelta",
        r#"{"contentBlockIndex":0,"delta":{"text":"Hel"},"p":"abc"}"#,
    ));
    s.extend(ev(
        "contentBlockDelta",
        r#"{"contentBlockIndex":0,"delta":{"text":"lo"},"p":"abcdefghijk"}"#,
    ));
    s.extend(ev(
        "contentBlockStop",
        r#"{"contentBlockIndex":0,"p":"ab"}"#,
    ));
    s.extend(ev("contentBlockStart", r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tooluse_a","name":"get_weather"}},"p":"a"}"#));
    s.extend(ev(
        "contentBlockDelta",
        r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\":"}}}"#,
    ));
    s.extend(ev(
        "contentBlockDelta",
        r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"\"Paris\"}"}}}"#,
    ));
    s.extend(ev("contentBlockStop", r#"{"contentBlockIndex":1}"#));
    s.extend(ev("messageStop", r#"{"stopReason":"tool_use","p":"abcd"}"#));
    if with_metadata {
        s.extend(ev("metadata", r#"{"usage":{"inputTokens":9,"outputTokens":3,"totalTokens":12},"metrics":{"latencyMs":5},"p":"x"}"#));
    }
    s
}

fn run(chunks: &[&[u8]], include_usage: bool) -> String {
    let body = format!(
        r#"{{"model":"m","stream":true,"stream_options":{{"include_usage":{include_usage}}},"messages":[{{"role":"user","content":"x"}}]}}"#
    );
    let (mut t, _) = translate(&body).unwrap();
    t.w.id = "chatcmpl-test".into(); // ids differ per request
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        assert!(t.stream_chunk(c, i + 1 == chunks.len(), &mut out));
    }
    String::from_utf8(out).unwrap()
}

fn events(s: &str) -> Vec<Value> {
    s.split("\n\n")
        .filter(|e| !e.is_empty() && *e != "data: [DONE]")
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect()
}

#[test]
fn stream_translates_at_every_split() {
    let body = stream_body(true);
    let whole = run(&[&body], true);
    assert!(whole.ends_with("data: [DONE]\n\n") && whole.matches("[DONE]").count() == 1);
    let ev = events(&whole);
    assert_eq!(
        ev[0]["choices"][0]["delta"],
        json!({"role":"assistant","content":""})
    );
    let text: String = ev
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(text, "Hello");
    assert_eq!(
        ev[3]["choices"][0]["delta"]["tool_calls"],
        json!([{"index":0,"id":"tooluse_a","type":"function","function":{"name":"get_weather","arguments":""}}])
    );
    let args: String = ev
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/tool_calls/0/function/arguments")
                .and_then(Value::as_str)
        })
        .collect();
    assert_eq!(args, r#"{"city":"Paris"}"#);
    let finish = &ev[ev.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    assert!(finish["usage"].is_null());
    let last = ev.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["total_tokens"], 12);
    assert!(ev.iter().all(|e| e["id"] == ev[0]["id"]));
    for cut in 0..=body.len() {
        let (a, b) = body.split_at(cut);
        assert_eq!(run(&[a, b], true), whole, "cut {cut}");
    }
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(run(&bytes, true), whole);
    let without = run(&[&body], false);
    assert!(!without.contains("usage") && without.ends_with("data: [DONE]\n\n"));
    // messageStop without metadata still ends cleanly.
    let out = run(&[&stream_body(false)], true);
    assert!(out.ends_with("data: [DONE]\n\n") && !out.contains("\"error\""));
}

#[test]
fn stream_failures_end_with_an_error_event_then_done() {
    let mut body = stream_body(false);
    body.truncate(body.len() - ev("messageStop", r#"{"stopReason":"tool_use","p":"abcd"}"#).len());
    let mut with_ex = body.clone();
    with_ex.extend(encode(
        &[
            (":exception-type", "throttlingException"),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        br#"{"message":"Too many tokens, please wait before trying again."}"#,
    ));
    let out = run(&[&with_ex], false);
    let ev = events(&out);
    let err = &ev.last().unwrap()["error"];
    assert_eq!(err["code"], "throttlingException");
    assert_eq!(err["type"], "rate_limit_error");
    assert!(err["message"].as_str().unwrap().contains("Too many tokens"));
    assert!(out.ends_with("data: [DONE]\n\n") && out.matches("[DONE]").count() == 1);
    // Ended before messageStop; ended inside a message; a corrupted CRC.
    let out = run(&[&body], false);
    assert!(out.contains("before messageStop") && out.ends_with("data: [DONE]\n\n"));
    let full = stream_body(true);
    let out = run(&[&full[..full.len() - 3]], false);
    assert!(out.contains("inside an event-stream message") && out.ends_with("data: [DONE]\n\n"));
    let mut bad = stream_body(true);
    let n = bad.len();
    bad[n - 1] ^= 1;
    let out = run(&[&bad], false);
    assert!(out.contains("CRC mismatch") && out.ends_with("data: [DONE]\n\n"));
    assert_eq!(out.matches("[DONE]").count(), 1);
    // An `error` message.
    let out = run(
        &[&encode(
            &[
                (":message-type", "error"),
                (":error-code", "InternalFailure"),
                (":error-message", "boom"),
            ],
            b"",
        )],
        false,
    );
    assert!(out.contains("InternalFailure: boom") && out.ends_with("data: [DONE]\n\n"));
}

fn embed(body: &str, model: &str) -> Result<(BedrockEmbeddings, ProviderRequest), GatewayError> {
    let p = provider("");
    let env = parse_embeddings_envelope(body.as_bytes())?;
    let mut t = BedrockEmbeddings::default();
    let req = t.request(&ChatCall {
        raw: body.as_bytes(),
        envelope: &env,
        provider: &p,
        upstream_model: model,
        now_unix: 1_440_938_160,
        want_stream_usage: true,
    })?;
    Ok((t, req))
}

#[test]
fn titan_embeddings() {
    let (mut t, req) = embed(
        r#"{"model":"e","input":["Hello"],"dimensions":256}"#,
        "amazon.titan-embed-text-v2:0",
    )
    .unwrap();
    assert_eq!(req.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
    assert_eq!(header(&req, "accept"), Some("application/json"));
    let b: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        b,
        json!({"inputText":"Hello","dimensions":256,"normalize":true})
    );
    let out: Value = serde_json::from_slice(&t.response(br#"{"embedding":[0.5,-0.25],"inputTextTokenCount":3,"embeddingsByType":{"float":[0.5,-0.25]}}"#).unwrap().unwrap()).unwrap();
    assert_eq!(
        out,
        json!({"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-0.25]}],"model":"amazon.titan-embed-text-v2:0","usage":{"prompt_tokens":3,"total_tokens":3}})
    );
    assert_eq!(t.usage().unwrap().prompt_tokens, 3);
    let e = embed(
        r#"{"model":"e","input":["a","b"]}"#,
        "amazon.titan-embed-text-v2:0",
    )
    .err()
    .unwrap();
    assert_eq!((e.status, e.param.as_deref()), (400, Some("input")));
    assert!(e.message.contains("one input per request"));
    let (_, req) = embed(r#"{"model":"e","input":"a"}"#, "amazon.titan-embed-text-v1").unwrap();
    assert_eq!(req.body.as_deref(), Some(&br#"{"inputText":"a"}"#[..]));
    assert_eq!(
        embed(
            r#"{"model":"e","input":[[1,2]]}"#,
            "amazon.titan-embed-text-v2:0"
        )
        .err()
        .unwrap()
        .param
        .as_deref(),
        Some("input")
    );
    assert_eq!(
        embed(r#"{"model":"e","input":"a"}"#, "meta.llama3")
            .err()
            .unwrap()
            .param
            .as_deref(),
        Some("model")
    );
}

#[test]
fn cohere_embeddings_and_base64() {
    let (mut t, req) = embed(
        r#"{"model":"e","input":["a","b"],"encoding_format":"base64"}"#,
        "cohere.embed-english-v3",
    )
    .unwrap();
    let b: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        b,
        json!({"texts":["a","b"],"input_type":"search_document","embedding_types":["float"]})
    );
    let out: Value = serde_json::from_slice(&t.response(br#"{"id":"x","embeddings":{"float":[[1.0,-2.0],[0.5,0.0]]},"texts":["a","b"],"response_type":"embeddings_by_type"}"#).unwrap().unwrap()).unwrap();
    // 1.0f32 = 00 00 80 3f, -2.0f32 = 00 00 00 c0 (little endian), as OpenAI encodes.
    assert_eq!(
        out["data"][0]["embedding"],
        base64(&[0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0])
    );
    assert_eq!(out["data"][0]["embedding"], "AACAPwAAAMA=");
    assert_eq!(out["data"][1]["index"], 1);
    let (mut t, _) = embed(
        r#"{"model":"e","input":"a","input_type":"search_query"}"#,
        "cohere.embed-multilingual-v3",
    )
    .unwrap();
    let out: Value =
        serde_json::from_slice(&t.response(br#"{"embeddings":[[0.25]]}"#).unwrap().unwrap())
            .unwrap();
    assert_eq!(out["data"][0]["embedding"], json!([0.25]));
    assert_eq!(
        embed(
            r#"{"model":"e","input":"a","input_type":"x"}"#,
            "cohere.embed-english-v3"
        )
        .err()
        .unwrap()
        .param
        .as_deref(),
        Some("input_type")
    );
    assert_eq!(t.response(b"{}").unwrap_err().status, 502);
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}

struct MapEnv(&'static [(&'static str, &'static str)]);
impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

fn config_err(provider: &str, env: &dyn Env) -> (String, String) {
    let cfg = format!(
        r#"{{"providers":{{"br":{provider}}},"models":[{{"name":"m","deployments":[{{"provider":"br"}}]}}]}}"#
    );
    let e = Config::parse(cfg.as_bytes(), env).unwrap_err();
    (e.path, e.message)
}

#[test]
fn config_names_the_bad_field() {
    let none = NoEnv;
    let (path, _) = config_err(
        r#"{"type":"bedrock","cluster":"c","aws_access_key_id":"a","aws_secret_access_key":"s"}"#,
        &none,
    );
    assert_eq!(path, "providers.br.region");
    let (path, _) = config_err(
        r#"{"type":"bedrock","cluster":"c","region":"US East"}"#,
        &none,
    );
    assert_eq!(path, "providers.br.region");
    let (path, msg) = config_err(
        r#"{"type":"bedrock","cluster":"c","region":"us-east-1"}"#,
        &none,
    );
    assert_eq!(path, "providers.br.aws_access_key_id");
    assert!(msg.contains("AWS_ACCESS_KEY_ID"), "{msg}");
    let (path, _) = config_err(
        r#"{"type":"bedrock","cluster":"c","region":"us-east-1","aws_access_key_id":"a"}"#,
        &none,
    );
    assert_eq!(path, "providers.br.aws_secret_access_key");
    let (path, msg) = config_err(
        r#"{"type":"bedrock","cluster":"c","region":"us-east-1","aws_access_key_id":"a","aws_secret_access_key_env":"MY_SECRET"}"#,
        &none,
    );
    assert_eq!(path, "providers.br.aws_secret_access_key_env");
    assert!(msg.contains("MY_SECRET"));
    let (path, _) = config_err(
        r#"{"type":"bedrock","cluster":"c","region":"us-east-1","aws_access_key_id":"a","aws_access_key_id_env":"X"}"#,
        &none,
    );
    assert_eq!(path, "providers.br.aws_access_key_id_env");
    let (path, msg) = config_err(
        r#"{"type":"openai","cluster":"c","region":"us-east-1"}"#,
        &none,
    );
    assert_eq!(path, "providers.br.region");
    assert!(msg.contains("only Bedrock"));
    let (path, _) = config_err(
        r#"{"type":"gemini","cluster":"c","aws_session_token_env":"T"}"#,
        &none,
    );
    assert_eq!(path, "providers.br.aws_session_token_env");
}

#[test]
fn config_reads_the_standard_aws_variables() {
    let env = MapEnv(&[
        ("AWS_ACCESS_KEY_ID", "AKIDENV"),
        ("AWS_SECRET_ACCESS_KEY", "envsecret"),
        ("AWS_SESSION_TOKEN", "envtoken"),
        ("OTHER_ID", "AKIDOTHER"),
    ]);
    let cfg = br#"{"providers":{"br":{"type":"bedrock","cluster":"c","region":"ap-south-1"}},"models":[{"name":"m","deployments":[{"provider":"br"}]}]}"#;
    let p = Config::parse(cfg, &env).unwrap().providers.remove(0);
    let aws = p.aws.unwrap();
    assert_eq!(aws.region, "ap-south-1");
    let c = aws.credentials.unwrap();
    assert_eq!(
        (
            c.access_key_id.as_str(),
            c.secret_access_key.as_str(),
            c.session_token.as_deref()
        ),
        ("AKIDENV", "envsecret", Some("envtoken"))
    );
    assert_eq!(
        p.host.as_deref(),
        Some("bedrock-runtime.ap-south-1.amazonaws.com")
    );
    assert_eq!(p.base_path, "");
    let cfg = br#"{"providers":{"br":{"type":"bedrock","cluster":"c","region":"ap-south-1","host":"vpce.example","aws_access_key_id_env":"OTHER_ID"}},"models":[{"name":"m","deployments":[{"provider":"br"}]}]}"#;
    let p = Config::parse(cfg, &env).unwrap().providers.remove(0);
    assert_eq!(
        p.aws.unwrap().credentials.unwrap().access_key_id,
        "AKIDOTHER"
    );
    assert_eq!(p.host.as_deref(), Some("vpce.example"));
}

#[test]
fn garbage_never_panics() {
    let p = provider("");
    let fresh = |stream: bool, usage: bool| -> Box<dyn ChatTranslator> {
        let body = format!(
            r#"{{"model":"m","stream":{stream},"stream_options":{{"include_usage":{usage}}},"messages":[{{"role":"user","content":"x"}}]}}"#
        );
        Box::new(translate(&body).unwrap().0)
    };
    let stream = stream_body(true);
    crate::test_support::workout(
            &[&stream, br#"{"output":{"message":{"content":[{"text":"a"},{"toolUse":{"toolUseId":"t","name":"f","input":{}}}]}},"stopReason":"end_turn","usage":{"inputTokens":1}}"#,
              br#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"r"},{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"required","stop":"x"}"#],
            b"{}[]\":,datamessageStopcontentBlockDeltatoolUse01",
            &p,
            &|| Box::new(BedrockChat::default()),
            &fresh,
            2000,
        );
}
