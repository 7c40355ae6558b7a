//! Tests of the Gemini translator: requests, answers, streams (at every split) and errors.

use super::request::signature_from_id;
use super::response::finish_reason;
use super::*;
use crate::client_api::openai::parse_chat_envelope;
use crate::config::{Config, ProcessEnv, Provider};
use serde_json::{json, Value};

const STREAM_FIXTURE: &str = include_str!("../../../tests/fixtures/gemini/stream_text_tool.sse");
const RESPONSE_FIXTURE: &str =
    include_str!("../../../tests/fixtures/gemini/response_tool_call.json");

const CONFIG: &str = r#"{"providers":{"gem":{"type":"gemini","cluster":"c","api_key":" AIza-test ","headers":{"x-goog-user-project":"p1"}}},
                 "models":[{"name":"flash","deployments":[{"provider":"gem","model":"gemini-2.5-flash"}]}]}"#;

fn provider() -> Provider {
    Config::parse(CONFIG.as_bytes(), &ProcessEnv)
        .unwrap()
        .providers
        .remove(0)
}

fn try_translate(body: &str) -> Result<(GeminiChat, ProviderRequest), GatewayError> {
    let p = provider();
    let env = parse_chat_envelope(body.as_bytes())?;
    let mut t = GeminiChat::default();
    let req = t.request(&ChatCall {
        raw: body.as_bytes(),
        envelope: &env,
        provider: &p,
        upstream_model: "gemini-2.5-flash",
        now_unix: 1_700_000_000,
        want_stream_usage: true,
    })?;
    Ok((t, req))
}

/// The Gemini body as JSON (tests only; the translator itself never builds a `Value`).
fn body_of(body: &str) -> Value {
    let (_, req) = try_translate(body).unwrap();
    serde_json::from_slice(&req.body.unwrap()).unwrap()
}

fn bad(body: &str) -> GatewayError {
    match try_translate(body) {
        Ok((_, r)) => panic!(
            "expected an error, got {:?}",
            String::from_utf8(r.body.unwrap_or_default())
        ),
        Err(e) => e,
    }
}

fn with_messages(messages: &str, extra: &str) -> String {
    format!(r#"{{"model":"flash","messages":{messages}{extra}}}"#)
}

fn user(extra: &str) -> Value {
    body_of(&with_messages(r#"[{"role":"user","content":"hi"}]"#, extra))
}

// ------------------------------------------------------------------ request

#[test]
fn request_path_headers_and_minimal_body() {
    let (_, req) =
        try_translate(&with_messages(r#"[{"role":"user","content":"Hello"}]"#, "")).unwrap();
    assert_eq!(req.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    for h in [
        ("x-goog-api-key", "AIza-test"),
        ("content-type", "application/json"),
        ("x-goog-user-project", "p1"),
    ] {
        assert!(req.headers.contains(&(h.0.into(), h.1.into())), "{h:?}");
    }
    assert_eq!(req.remove_headers, vec!["authorization"]);
    let v: Value = serde_json::from_slice(&req.body.unwrap()).unwrap();
    assert_eq!(
        v,
        json!({"contents":[{"role":"user","parts":[{"text":"Hello"}]}]})
    );
    let (_, req) = try_translate(&with_messages(
        r#"[{"role":"user","content":"Hello"}]"#,
        r#","stream":true"#,
    ))
    .unwrap();
    assert_eq!(
        req.path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(model_segment("models/gemini-2.0"), "gemini-2.0");
    assert_eq!(model_segment("a b/c?d"), "a%20b%2Fc%3Fd");
}

#[test]
fn system_developer_roles_and_merging() {
    let v = body_of(&with_messages(
        r#"[{"role":"system","content":"A"},{"role":"user","content":"one"},
                {"role":"developer","content":[{"type":"text","text":"B"},{"type":"text","text":""}]},
                {"role":"user","content":[{"type":"text","text":"two"}]},
                {"role":"assistant","content":"three"},
                {"role":"assistant","content":[{"type":"text","text":"four"},{"type":"refusal","refusal":"no"}]},
                {"role":"user","content":""},{"role":"user","content":"five"}]"#,
        "",
    ));
    assert_eq!(
        v["systemInstruction"],
        json!({"parts":[{"text":"A"},{"text":"B"}]})
    );
    assert_eq!(
        v["contents"],
        json!([
            {"role":"user","parts":[{"text":"one"},{"text":"two"}]},
            {"role":"model","parts":[{"text":"three"},{"text":"four"},{"text":"no"}]},
            {"role":"user","parts":[{"text":"five"}]}
        ])
    );
    let e = bad(&with_messages(
        r#"[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x/a.png"}}]},{"role":"user","content":"q"}]"#,
        "",
    ));
    assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
}

#[test]
fn leading_model_turn_gets_a_placeholder_and_empty_is_rejected() {
    let v = body_of(&with_messages(
        r#"[{"role":"assistant","content":"How can I help?"},{"role":"user","content":"Weather?"}]"#,
        "",
    ));
    assert_eq!(
        v["contents"],
        json!([
            {"role":"user","parts":[{"text":LEADING_USER_PLACEHOLDER}]},
            {"role":"model","parts":[{"text":"How can I help?"}]},
            {"role":"user","parts":[{"text":"Weather?"}]}
        ])
    );
    for m in [
        r#"[{"role":"system","content":"only system"}]"#,
        r#"[{"role":"user","content":""}]"#,
        r#"[{"role":"user","content":null},{"role":"assistant","content":[]}]"#,
    ] {
        let e = bad(&with_messages(m, ""));
        assert_eq!(
            (e.status, e.param.as_deref()),
            (400, Some("messages")),
            "{m}"
        );
    }
}

/// Long texts go through the no-scan path when serde_json lent them and the escaping path
/// when they held escapes: either way the Gemini body carries exactly the client's text.
#[test]
fn long_texts_and_image_data_arrive_unchanged() {
    let crate::test_support::LongTexts {
        plain,
        escaped,
        unescaped,
        b64,
    } = crate::test_support::long_texts();
    let body = with_messages(
        &format!(
            r#"[{{"role":"system","content":"{plain}"}},
                   {{"role":"user","content":[{{"type":"text","text":"{plain}"}},{{"type":"text","text":"{escaped}"}},
                     {{"type":"image_url","image_url":{{"url":"data:image/png;base64,{b64}"}}}}]}},
                   {{"role":"assistant","content":"{escaped}","tool_calls":[
                     {{"id":"call_1","type":"function","function":{{"name":"f","arguments":"{{}}"}}}},
                     {{"id":"call_2","type":"function","function":{{"name":"g","arguments":"{{}}"}}}}]}},
                   {{"role":"tool","tool_call_id":"call_1","content":"{plain}"}},
                   {{"role":"tool","tool_call_id":"call_2","content":[{{"type":"text","text":"{plain}"}},{{"type":"text","text":"{escaped}"}}]}},
                   {{"role":"user","content":"{plain}"}}]"#
        ),
        "",
    );
    let v = body_of(&body);
    assert_eq!(v["systemInstruction"], json!({"parts":[{"text":plain}]}));
    assert_eq!(
        v["contents"],
        json!([
            {"role":"user","parts":[
                {"text":plain},
                {"text":unescaped},
                {"inlineData":{"mimeType":"image/png","data":b64}}]},
            {"role":"model","parts":[
                {"text":unescaped},
                {"functionCall":{"name":"f","args":{}},"thoughtSignature":SKIP_THOUGHT_SIGNATURE},
                {"functionCall":{"name":"g","args":{}}}]},
            {"role":"user","parts":[
                {"functionResponse":{"name":"f","response":{"output":plain}}},
                {"functionResponse":{"name":"g","response":{"output":format!("{plain}{unescaped}")}}},
                {"text":plain}]}
        ])
    );
}

#[test]
fn images_audio_and_files() {
    let v = body_of(&with_messages(
        r#"[{"role":"user","content":[{"type":"text","text":"What is this?"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo\/AAA="}},
                {"type":"image_url","image_url":{"url":"DATA:Image/JPG;base64,/9j/4AAQ"}},
                {"type":"image_url","image_url":{"url":"https://example.com/cat.JPG?size=2","detail":"high"}},
                {"type":"image_url","image_url":{"url":"https://generativelanguage.googleapis.com/v1beta/files/abc123"}},
                {"type":"input_audio","input_audio":{"data":"UklGRg==","format":"wav"}},
                {"type":"file","file":{"file_data":"data:application/pdf;base64,JVBERi0x","filename":"a.pdf"}}]}]"#,
        "",
    ));
    assert_eq!(
        v["contents"][0]["parts"],
        json!([
            {"text":"What is this?"},
            {"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgo/AAA="}},
            {"inlineData":{"mimeType":"image/jpeg","data":"/9j/4AAQ"}},
            {"fileData":{"mimeType":"image/jpeg","fileUri":"https://example.com/cat.JPG?size=2"}},
            {"fileData":{"fileUri":"https://generativelanguage.googleapis.com/v1beta/files/abc123"}},
            {"inlineData":{"mimeType":"audio/wav","data":"UklGRg=="}},
            {"inlineData":{"mimeType":"application/pdf","data":"JVBERi0x"}}
        ])
    );
}

#[test]
fn bad_parts_are_400_with_param() {
    for (part, param) in [
        (
            r#"{"type":"image_url","image_url":{"url":"data:image/png,raw"}}"#,
            "messages[1].content[1].image_url",
        ),
        (
            r#"{"type":"image_url","image_url":{"url":"data:;base64,AAAA"}}"#,
            "messages[1].content[1].image_url",
        ),
        (
            r#"{"type":"image_url","image_url":{"url":"data:image/png;base64,"}}"#,
            "messages[1].content[1].image_url",
        ),
        (
            r#"{"type":"image_url","image_url":{"url":"https://example.com/image"}}"#,
            "messages[1].content[1].image_url",
        ),
        (
            r#"{"type":"image_url","image_url":{"url":"ftp://x/y.png"}}"#,
            "messages[1].content[1].image_url",
        ),
        (
            r#"{"type":"image_url"}"#,
            "messages[1].content[1].image_url",
        ),
        (
            r#"{"type":"input_audio","input_audio":{"data":"AAA","format":"flac"}}"#,
            "messages[1].content[1].input_audio",
        ),
        (
            r#"{"type":"input_audio"}"#,
            "messages[1].content[1].input_audio",
        ),
        (
            r#"{"type":"file","file":{"file_id":"file-1"}}"#,
            "messages[1].content[1].file",
        ),
        (
            r#"{"type":"video","video":{}}"#,
            "messages[1].content[1].type",
        ),
        (r#"{"type":"text"}"#, "messages[1].content[1]"),
    ] {
        let body = with_messages(
            &format!(
                r#"[{{"role":"user","content":"a"}},{{"role":"user","content":[{{"type":"text","text":"x"}},{part}]}}]"#
            ),
            "",
        );
        let e = bad(&body);
        assert_eq!(e.status, 400, "{part}");
        assert_eq!(e.param.as_deref(), Some(param), "{part}: {}", e.message);
    }
}

const TOOLS: &str = r#","tools":[{"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"],"additionalProperties":false,"$defs":{}},"strict":true}},
        {"type":"function","function":{"name":"get_time"}}]"#;

#[test]
fn tools_and_tool_choice() {
    let v = user(TOOLS);
    assert_eq!(
        v["tools"],
        json!([{"functionDeclarations":[
            {"name":"get_weather","description":"Weather now","parametersJsonSchema":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"],"additionalProperties":false,"$defs":{}}},
            {"name":"get_time"}
        ]}])
    );
    assert!(v.get("toolConfig").is_none());
    for (choice, expected) in [
        (r#""auto""#, json!({"mode":"AUTO"})),
        (r#""none""#, json!({"mode":"NONE"})),
        (r#""required""#, json!({"mode":"ANY"})),
        (
            r#"{"type":"function","function":{"name":"get_time"}}"#,
            json!({"mode":"ANY","allowedFunctionNames":["get_time"]}),
        ),
    ] {
        let v = user(&format!(
            r#"{TOOLS},"tool_choice":{choice},"parallel_tool_calls":false"#
        ));
        assert_eq!(
            v["toolConfig"]["functionCallingConfig"], expected,
            "{choice}"
        );
    }
    // tool_choice without tools is dropped.
    assert!(user(r#","tool_choice":"required""#)
        .get("toolConfig")
        .is_none());
    for (extra, param) in [
        (r#","tools":[{"type":"web_search"}]"#, "tools[0].type"),
        (r#","tools":[{"type":"function"}]"#, "tools[0].function"),
        (
            r#","tools":[{"type":"function","function":{"name":"f","parameters":[1]}}]"#,
            "tools[0].function.parameters",
        ),
    ] {
        let e = bad(&with_messages(r#"[{"role":"user","content":"hi"}]"#, extra));
        assert_eq!(e.param.as_deref(), Some(param), "{extra}");
    }
}

#[test]
fn tool_calls_and_results_round_trip() {
    let sig_id = tool_call_id(0, Some("CiQB/+abcQ=="));
    assert_eq!(sig_id, "call_0_ts_CiQB_-abcQ");
    assert_eq!(signature_from_id(&sig_id).as_deref(), Some("CiQB/+abcQ=="));
    assert_eq!(signature_from_id("call_1"), None);
    let v = body_of(&with_messages(
        &format!(
            r#"[{{"role":"user","content":"weather and time?"}},
                {{"role":"assistant","content":"Checking.","tool_calls":[
                  {{"id":"{sig_id}","type":"function","function":{{"name":"get_weather","arguments":"{{\"location\": \"Paris\"}}"}}}},
                  {{"id":"call_1","type":"function","function":{{"name":"get_time","arguments":""}}}}]}},
                {{"role":"tool","tool_call_id":"{sig_id}","content":"{{\"temp\": 21}}"}},
                {{"role":"tool","tool_call_id":"call_1","content":[{{"type":"text","text":"12:00"}},{{"type":"text","text":" UTC"}}]}},
                {{"role":"user","content":"thanks"}}]"#
        ),
        TOOLS,
    ));
    assert_eq!(
        v["contents"],
        json!([
            {"role":"user","parts":[{"text":"weather and time?"}]},
            {"role":"model","parts":[
                {"text":"Checking."},
                {"functionCall":{"name":"get_weather","args":{"location":"Paris"}},"thoughtSignature":"CiQB/+abcQ=="},
                {"functionCall":{"name":"get_time","args":{}}}
            ]},
            {"role":"user","parts":[
                {"functionResponse":{"name":"get_weather","response":{"temp":21}}},
                {"functionResponse":{"name":"get_time","response":{"output":"12:00 UTC"}}},
                {"text":"thanks"}
            ]}
        ])
    );
    // Padding is restored to a multiple of 4.
    assert_eq!(
        signature_from_id(&tool_call_id(3, Some("QUJD"))).as_deref(),
        Some("QUJD")
    );
    assert_eq!(
        signature_from_id(&tool_call_id(3, Some("QUI="))).as_deref(),
        Some("QUI=")
    );
    // Ids repeat across turns (call_0 each time): the nearest earlier call wins.
    let v = body_of(&with_messages(
        r#"[{"role":"user","content":"a"},
                {"role":"assistant","tool_calls":[{"id":"call_0","type":"function","function":{"name":"get_time","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"call_0","content":"t1"},
                {"role":"assistant","tool_calls":[{"id":"call_0","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"call_0","content":"not json {"}]"#,
        TOOLS,
    ));
    assert_eq!(
        v["contents"][2]["parts"][0]["functionResponse"]["name"],
        "get_time"
    );
    assert_eq!(
        v["contents"][4]["parts"][0]["functionResponse"],
        json!({"name":"get_weather","response":{"output":"not json {"}})
    );
}

#[test]
fn unsigned_history_gets_the_placeholder_on_its_first_call_only() {
    let v = body_of(&with_messages(
        r#"[{"role":"user","content":"a"},
                {"role":"assistant","tool_calls":[
                  {"id":"toolu_1","type":"function","function":{"name":"get_time","arguments":"{}"}},
                  {"id":"toolu_2","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"toolu_1","content":"t"},
                {"role":"tool","tool_call_id":"toolu_2","content":"w"}]"#,
        TOOLS,
    ));
    assert_eq!(
        v["contents"][1]["parts"],
        json!([
            {"functionCall":{"name":"get_time","args":{}},"thoughtSignature":SKIP_THOUGHT_SIGNATURE},
            {"functionCall":{"name":"get_weather","args":{}}}
        ])
    );
}

#[test]
fn bad_tool_messages_are_400() {
    for (messages, param) in [
        (
            r#"[{"role":"user","content":"a"},{"role":"tool","tool_call_id":"nope","content":"x"}]"#,
            "messages[1].tool_call_id",
        ),
        (
            r#"[{"role":"user","content":"a"},{"role":"tool","content":"x"}]"#,
            "messages[1].tool_call_id",
        ),
        (
            r#"[{"role":"user","content":"a"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]"#,
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            r#"[{"role":"user","content":"a"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{bad"}}]}]"#,
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            r#"[{"role":"user","content":"a"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f"}}]},{"role":"tool","tool_call_id":"c","content":[{"type":"image_url","image_url":{"url":"https://x/a.png"}}]}]"#,
            "messages[2].content[0]",
        ),
        (
            r#"[{"role":"user","content":"a"},{"role":"function","name":"f","content":"x"}]"#,
            "messages[1].role",
        ),
        (
            r#"[{"role":"user","content":"a"},{"role":"assistant","function_call":{"name":"f","arguments":"{}"}}]"#,
            "messages[1].function_call",
        ),
    ] {
        let e = bad(&with_messages(messages, ""));
        assert_eq!(e.param.as_deref(), Some(param), "{messages}: {}", e.message);
    }
}

#[test]
fn generation_config() {
    let v = user(
        r#","temperature":1.5,"top_p":0.9,"max_tokens":50,"max_completion_tokens":100,"stop":["END","STOP"],"n":2,"seed":-7,"presence_penalty":0.5,"frequency_penalty":-0.5,"response_format":{"type":"json_object"},"user":"u","logit_bias":{"1":2},"store":true"#,
    );
    assert_eq!(
        v["generationConfig"],
        json!({"temperature":1.5,"topP":0.9,"candidateCount":2,"maxOutputTokens":100,"stopSequences":["END","STOP"],"seed":-7,"presencePenalty":0.5,"frequencyPenalty":-0.5,"responseMimeType":"application/json"})
    );
    let v = user(r#","stop":"X","max_tokens":5,"n":1"#);
    assert_eq!(
        v["generationConfig"],
        json!({"maxOutputTokens":5,"stopSequences":["X"]})
    );
    let v = user(
        r#","response_format":{"type":"json_schema","json_schema":{"name":"w","strict":true,"schema":{"type":"object","properties":{"a":{"type":"integer"}},"additionalProperties":false}}}"#,
    );
    assert_eq!(
        v["generationConfig"],
        json!({"responseMimeType":"application/json","responseJsonSchema":{"type":"object","properties":{"a":{"type":"integer"}},"additionalProperties":false}})
    );
    assert!(user(r#","response_format":{"type":"text"}"#)
        .get("generationConfig")
        .is_none());
    for (effort, budget, include) in [
        ("none", 0, false),
        ("minimal", 512, true),
        ("low", 1024, true),
        ("medium", 8192, true),
        ("high", 24576, true),
        ("xhigh", 32768, true),
    ] {
        let v = user(&format!(r#","reasoning_effort":"{effort}""#));
        let mut expected = json!({"thinkingBudget": budget});
        if include {
            expected["includeThoughts"] = json!(true);
        }
        assert_eq!(
            v["generationConfig"]["thinkingConfig"], expected,
            "{effort}"
        );
    }
}

#[test]
fn unsupported_parameters_are_400() {
    for (extra, param) in [
        (r#","n":0"#, "n"),
        (r#","logprobs":true"#, "logprobs"),
        (r#","functions":[{"name":"f"}]"#, "functions"),
        (r#","function_call":"auto""#, "function_call"),
        (r#","modalities":["text","audio"]"#, "modalities"),
        (r#","audio":{"voice":"alloy","format":"wav"}"#, "audio"),
        (r#","seed":4294967296"#, "seed"),
        (r#","reasoning_effort":"extreme""#, "reasoning_effort"),
    ] {
        let e = bad(&with_messages(r#"[{"role":"user","content":"hi"}]"#, extra));
        assert_eq!(
            (e.status, e.param.as_deref()),
            (400, Some(param)),
            "{extra}"
        );
    }
    // Dropped, not rejected.
    let v = user(
        r#","logprobs":false,"top_logprobs":2,"service_tier":"auto","metadata":{"a":"b"},"parallel_tool_calls":true"#,
    );
    assert!(v.get("generationConfig").is_none());
}

// ------------------------------------------------------------------ responses

fn fresh(stream: bool, include_usage: bool) -> GeminiChat {
    let extra = match (stream, include_usage) {
        (false, _) => "",
        (true, false) => r#","stream":true"#,
        (true, true) => r#","stream":true,"stream_options":{"include_usage":true}"#,
    };
    try_translate(&with_messages(r#"[{"role":"user","content":"hi"}]"#, extra))
        .unwrap()
        .0
}

fn respond(t: &mut GeminiChat, body: &str) -> Value {
    serde_json::from_slice(&t.response(body.as_bytes()).unwrap().unwrap()).unwrap()
}

#[test]
fn response_with_thoughts_text_and_tool_calls() {
    let mut t = fresh(false, false);
    let v = respond(&mut t, RESPONSE_FIXTURE);
    assert_eq!(
        v,
        json!({
            "id":"mFghaOyJBIGzkdUP2Yq9gQg","object":"chat.completion","created":1_700_000_000u64,
            "model":"gemini-2.5-flash",
            "choices":[{"index":0,"message":{"role":"assistant","content":"I'll check the weather.",
                "reasoning_content":"The user wants the weather.",
                "tool_calls":[
                    {"id":"call_0_ts_CiQBVKhc7-_abc","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\",\"days\":[1,2]}"}},
                    {"id":"call_1","type":"function","function":{"name":"get_time","arguments":"{}"}}
                ],"refusal":null},
                "logprobs":null,"finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":2105,"completion_tokens":603,"total_tokens":2708,
                "prompt_tokens_details":{"cached_tokens":1800,"cache_write_tokens":0},
                "completion_tokens_details":{"reasoning_tokens":100}}
        })
    );
    let u = t.usage().unwrap();
    assert_eq!(
        (
            u.prompt_tokens,
            u.completion_tokens,
            u.cached_tokens,
            u.reasoning_tokens
        ),
        (2105, 603, 1800, 100)
    );
}

#[test]
fn finish_reasons() {
    for (reason, expected) in [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("IMAGE_SAFETY", "content_filter"),
        ("LANGUAGE", "stop"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("FINISH_REASON_UNSPECIFIED", "stop"),
    ] {
        let body = format!(
            r#"{{"candidates":[{{"content":{{"parts":[{{"text":"x"}}],"role":"model"}},"finishReason":"{reason}"}}]}}"#
        );
        let v = respond(&mut fresh(false, false), &body);
        assert_eq!(v["choices"][0]["finish_reason"], expected, "{reason}");
    }
    assert_eq!(finish_reason(Some("STOP"), true), "tool_calls");
    assert_eq!(finish_reason(Some("MAX_TOKENS"), true), "length");
    assert_eq!(finish_reason(None, false), "stop");
}

#[test]
fn blocked_prompt_is_content_filter_with_empty_content() {
    let mut t = fresh(false, false);
    let v = respond(
        &mut t,
        r#"{"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[]},"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8},"modelVersion":"gemini-2.5-flash"}"#,
    );
    assert_eq!(v["choices"][0]["message"]["content"], "");
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(v["usage"]["prompt_tokens"], 8);
    assert_eq!(v["id"], "chatcmpl-gemini-1700000000");
    // No candidates and no block: a bad answer.
    let e = fresh(false, false).response(b"{}").unwrap_err();
    assert_eq!(e.status, 502);
    let e = fresh(false, false).response(b"nope").unwrap_err();
    assert_eq!(e.status, 502);
}

#[test]
fn several_candidates_become_choices() {
    let v = respond(
        &mut fresh(false, false),
        r#"{"candidates":[{"content":{"parts":[{"text":"A"}],"role":"model"},"finishReason":"STOP","index":0},
                {"content":{"parts":[{"functionCall":{"name":"f","args":{"x":1}}}],"role":"model"},"finishReason":"STOP","index":1},
                {"content":{"role":"model"},"finishReason":"MAX_TOKENS","index":2}]}"#,
    );
    let c = &v["choices"];
    assert_eq!(c.as_array().unwrap().len(), 3);
    assert_eq!(
        (c[0]["index"].clone(), c[0]["message"]["content"].clone()),
        (json!(0), json!("A"))
    );
    assert_eq!(c[1]["finish_reason"], "tool_calls");
    assert_eq!(c[1]["message"]["tool_calls"][0]["id"], "call_0");
    assert!(c[1]["message"]["content"].is_null());
    assert_eq!(c[2]["finish_reason"], "length");
    assert_eq!(v["model"], "gemini-2.5-flash");
}

#[test]
fn errors_map_status_code_and_retry_after() {
    let t = fresh(false, false);
    let body = br#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED",
            "details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"36.2s"}]}}"#;
    let e = t.error(429, body);
    assert_eq!((e.status, e.kind), (429, "rate_limit_error"));
    assert_eq!(e.code.as_deref(), Some("RESOURCE_EXHAUSTED"));
    assert_eq!(e.retry_after.as_deref(), Some("37"));
    assert_eq!(
        e.message,
        "gem returned 429: RESOURCE_EXHAUSTED: Resource has been exhausted (e.g. check quota)."
    );
    let e = t.error(
            400,
            br#"[{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}]"#,
        );
    assert_eq!(
        (e.status, e.code.as_deref()),
        (400, Some("INVALID_ARGUMENT"))
    );
    assert!(e.retry_after.is_none());
    let e = t.error(
        500,
        br#"{"error":{"code":500,"message":"Internal error encountered.","status":"INTERNAL"}}"#,
    );
    assert_eq!(
        (e.status, e.kind, e.code.as_deref()),
        (500, "api_error", Some("INTERNAL"))
    );
    let e = t.error(503, b"<html>Service Unavailable</html>");
    assert_eq!((e.status, e.code.clone()), (503, None));
    assert!(e.message.contains("Service Unavailable"));
    for (delay, expected) in [
        ("37s", Some("37")),
        ("0s", Some("0")),
        ("0.000001s", Some("1")),
        ("2.000s", Some("2")),
        ("86400s", Some("86400")),
        ("86401s", None),
        ("x", None),
        ("-1s", None),
        ("1e9s", None),
        ("NaNs", None),
        ("5", None),
        (".5s", None),
        ("1.s", Some("1")),
        ("99999999999999999999999s", None),
    ] {
        let text = format!(
            r#"{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{delay}"}}"#
        );
        let raw: Vec<&RawValue> = vec![serde_json::from_str(&text).unwrap()];
        assert_eq!(retry_after(&raw).as_deref(), expected, "{delay}");
    }
}

#[test]
fn gateway_sets_retry_after_from_the_error_body() {
    use crate::gateway::{BodyAction, BodyRequest, Endpoint, Gateway};
    let g = Gateway::new(Config::parse(CONFIG.as_bytes(), &ProcessEnv).unwrap(), 0);
    let fwd = g
        .on_request_body(
            &BodyRequest {
                endpoint: Endpoint::ChatCompletions,
                content_type: None,
                key: None,
                now_unix: 0,
                pick: 0,
                anthropic_beta: None,
            },
            br#"{"model":"flash","messages":[{"role":"user","content":"x"}]}"#,
        )
        .unwrap();
    let mut ex = fwd.exchange;
    ex.on_response_headers(429, None);
    let body = br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"7s"}]}}"#;
    match ex.on_response_body(body, body.len(), true) {
        BodyAction::ReplaceWhole { status, body } => {
            assert_eq!(status, 429);
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error"]["code"], "RESOURCE_EXHAUSTED");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ex.retry_after.as_deref(), Some("7"));
}

// ------------------------------------------------------------------ streaming

fn run(t: &mut GeminiChat, chunks: &[&[u8]]) -> String {
    let mut out = Vec::new();
    let n = chunks.len();
    for (i, c) in chunks.iter().enumerate() {
        assert!(t.stream_chunk(c, i + 1 == n, &mut out));
    }
    if n == 0 {
        assert!(t.stream_chunk(b"", true, &mut out));
    }
    String::from_utf8(out).unwrap()
}

/// The data payloads; asserts the SSE framing and that [DONE] is last and only once.
fn data_events(out: &str) -> Vec<String> {
    assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
    let events: Vec<String> = out
        .split_terminator("\n\n")
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("bad event {e:?}"))
                .to_string()
        })
        .collect();
    assert_eq!(events.iter().filter(|e| *e == "[DONE]").count(), 1);
    events
}

fn chunks_json(out: &str) -> Vec<Value> {
    let ev = data_events(out);
    ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

#[test]
fn stream_is_translated_whole() {
    let mut t = fresh(true, true);
    let chunks = chunks_json(&run(&mut t, &[STREAM_FIXTURE.as_bytes()]));
    for c in &chunks {
        assert_eq!(c["id"], "Hq8haKzYLIGzkdUP8pKo2Qg");
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["created"], 1_700_000_000u64);
        assert_eq!(c["model"], "gemini-2.5-flash");
    }
    let deltas: Vec<Value> = chunks[..chunks.len() - 1]
        .iter()
        .map(|c| {
            assert!(c["usage"].is_null());
            c["choices"][0]["delta"].clone()
        })
        .collect();
    assert_eq!(
        deltas,
        vec![
            json!({"role":"assistant","content":""}),
            json!({"content":"Okay, let me check"}),
            json!({"content":" the weather in San Francisco — \"SF\" ☀️."}),
            json!({"tool_calls":[{"index":0,"id":"call_0_ts_CiQB_-sig0","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"San Francisco, CA\",\"unit\":\"fahrenheit\"}"}}]}),
            json!({}),
        ]
    );
    let fin: Vec<Value> = chunks[..chunks.len() - 1]
        .iter()
        .map(|c| c["choices"][0]["finish_reason"].clone())
        .collect();
    assert_eq!(
        fin[..4],
        [Value::Null, Value::Null, Value::Null, Value::Null]
    );
    assert_eq!(fin[4], "tool_calls");
    let last = &chunks[chunks.len() - 1];
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens":2620,"completion_tokens":89,"total_tokens":2709,"prompt_tokens_details":{"cached_tokens":2048,"cache_write_tokens":0}})
    );
    assert_eq!(t.usage().unwrap().total_tokens(), 2709);
}

#[test]
fn stream_output_is_identical_at_every_split_and_byte_by_byte() {
    let s = STREAM_FIXTURE.as_bytes();
    assert!(STREAM_FIXTURE.contains("\r\n\r\n"));
    let whole = run(&mut fresh(true, true), &[s]);
    for cut in 0..=s.len() {
        let (a, b) = s.split_at(cut);
        assert_eq!(run(&mut fresh(true, true), &[a, b]), whole, "cut at {cut}");
    }
    let bytes: Vec<&[u8]> = s.chunks(1).collect();
    let mut t = fresh(true, true);
    assert_eq!(run(&mut t, &bytes), whole);
    assert_eq!(t.usage().unwrap().completion_tokens, 89);
    // LF framing and a last event without its blank line (the connection just closes).
    let lf = STREAM_FIXTURE.replace("\r\n", "\n");
    assert_eq!(run(&mut fresh(true, true), &[lf.as_bytes()]), whole);
    let cut = STREAM_FIXTURE.trim_end();
    assert_eq!(run(&mut fresh(true, true), &[cut.as_bytes()]), whole);
}

#[test]
fn stream_without_include_usage_has_no_usage_field() {
    let mut t = fresh(true, false);
    let chunks = chunks_json(&run(&mut t, &[STREAM_FIXTURE.as_bytes()]));
    assert!(chunks
        .iter()
        .all(|c| c.get("usage").is_none() && c["choices"].as_array().unwrap().len() == 1));
    assert_eq!(t.usage().unwrap().prompt_tokens, 2620);
}

const FIRST: &str = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"},\"index\":0}],\"responseId\":\"r1\",\"modelVersion\":\"gemini-x\"}\r\n\r\n";

#[test]
fn stream_error_in_data_or_raw_json_ends_the_stream() {
    // As an SSE event.
    let s = format!("{FIRST}data: {{\"error\":{{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}}}\r\n\r\n{FIRST}");
    let ev = data_events(&run(&mut fresh(true, true), &[s.as_bytes()]));
    assert_eq!(ev.len(), 4, "{ev:?}");
    let err: Value = serde_json::from_str(&ev[2]).unwrap();
    assert_eq!(err["error"]["code"], "UNAVAILABLE");
    assert_eq!(err["error"]["type"], "api_error");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("The model is overloaded."));
    // Raw and pretty-printed, without `data:`, cut anywhere.
    let raw = "{\n  \"error\": {\n    \"code\": 429,\n    \"message\": \"Resource exhausted {\\\"}\",\n    \"status\": \"RESOURCE_EXHAUSTED\"\n  }\n}\n";
    let s = format!("{FIRST}{raw}");
    let whole = run(&mut fresh(true, false), &[s.as_bytes()]);
    let ev = data_events(&whole);
    assert_eq!(ev.len(), 4, "{whole}");
    let err: Value = serde_json::from_str(&ev[2]).unwrap();
    assert_eq!(err["error"]["code"], "RESOURCE_EXHAUSTED");
    assert_eq!(err["error"]["type"], "rate_limit_error");
    for cut in 0..=s.len() {
        let (a, b) = s.as_bytes().split_at(cut);
        assert_eq!(run(&mut fresh(true, false), &[a, b]), whole, "cut at {cut}");
    }
    // In a one-element array, as Vertex sends it.
    let s = format!(
        "{FIRST}[{{\"error\":{{\"code\":500,\"message\":\"x\",\"status\":\"INTERNAL\"}}}}]"
    );
    let out = run(&mut fresh(true, false), &[s.as_bytes()]);
    assert!(out.contains("\"code\":\"INTERNAL\""), "{out}");
    // Raw JSON that is not an error, and raw JSON cut off by the end of the body.
    let out = run(&mut fresh(true, false), &[b"{\"hello\":1}\n"]);
    assert!(out.contains("data outside an SSE event"), "{out}");
    let out = run(
        &mut fresh(true, false),
        &[FIRST.as_bytes(), b"{\"error\": {\"code\": 4"],
    );
    assert_eq!(data_events(&out).len(), 4, "{out}");
}

#[test]
fn stream_that_ends_early_or_is_invalid_is_an_error() {
    let mut t = fresh(true, false);
    let out = run(
        &mut t,
        &[FIRST.as_bytes(), b"data: {\"candidates\":[{\"conte"],
    );
    let ev = data_events(&out);
    let err: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
    assert_eq!(
        err["error"]["message"],
        "gem stream ended before a finishReason"
    );
    // Nothing after [DONE], even if more arrives.
    let mut more = Vec::new();
    assert!(t.stream_chunk(FIRST.as_bytes(), true, &mut more));
    assert!(more.is_empty());
    // An empty body is an error too.
    assert!(run(&mut fresh(true, false), &[]).contains("ended before a finishReason"));
    // Invalid JSON in a complete event.
    let out = run(&mut fresh(true, false), &[b"data: {nope\r\n\r\n"]);
    assert_eq!(data_events(&out).len(), 2);
    assert!(out.contains("invalid stream event"));
}

#[test]
fn stream_thoughts_blocked_prompt_and_several_candidates() {
    let s = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Let me think\",\"thought\":true}],\"role\":\"model\"},\"index\":0},{\"content\":{\"parts\":[{\"text\":\"B\"}],\"role\":\"model\"},\"index\":1}]}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"A\"},{\"functionCall\":{\"name\":\"f\"}},{\"functionCall\":{\"name\":\"g\",\"args\":{\"k\":[1, 2]}}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0},{\"content\":{\"parts\":[],\"role\":\"model\"},\"finishReason\":\"SAFETY\",\"index\":1}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":30,\"thoughtsTokenCount\":12,\"toolUsePromptTokenCount\":2}}\r\n\r\n",
        );
    let mut t = fresh(true, false);
    let chunks = chunks_json(&run(&mut t, &[s.as_bytes()]));
    let got: Vec<(u64, Value, Value)> = chunks
        .iter()
        .map(|c| {
            let ch = &c["choices"][0];
            (
                ch["index"].as_u64().unwrap(),
                ch["delta"].clone(),
                ch["finish_reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (0, json!({"role":"assistant","content":""}), Value::Null),
            (0, json!({"reasoning_content":"Let me think"}), Value::Null),
            (1, json!({"role":"assistant","content":""}), Value::Null),
            (1, json!({"content":"B"}), Value::Null),
            (0, json!({"content":"A"}), Value::Null),
            (
                0,
                json!({"tool_calls":[{"index":0,"id":"call_0","type":"function","function":{"name":"f","arguments":"{}"}}]}),
                Value::Null
            ),
            (
                0,
                json!({"tool_calls":[{"index":1,"id":"call_1","type":"function","function":{"name":"g","arguments":"{\"k\":[1,2]}"}}]}),
                Value::Null
            ),
            (0, json!({}), json!("tool_calls")),
            (1, json!({}), json!("content_filter")),
        ]
    );
    let u = t.usage().unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens),
        (5, 42, 12)
    );

    // A blocked prompt: role chunk, content_filter, usage, [DONE].
    let s = "data: {\"promptFeedback\":{\"blockReason\":\"PROHIBITED_CONTENT\"},\"usageMetadata\":{\"promptTokenCount\":4,\"totalTokenCount\":4},\"modelVersion\":\"gemini-x\",\"responseId\":\"r9\"}\r\n\r\n";
    let chunks = chunks_json(&run(&mut fresh(true, true), &[s.as_bytes()]));
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(chunks[2]["usage"]["prompt_tokens"], 4);
}

// ------------------------------------------------------------------ robustness

#[test]
fn garbage_never_panics() {
    let seeds: Vec<&[u8]> = vec![
            STREAM_FIXTURE.as_bytes(),
            RESPONSE_FIXTURE.as_bytes(),
            FIRST.as_bytes(),
            br#"{"error":{"code":429,"message":"m","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"3s"}]}}"#,
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}},{"type":"input_audio","input_audio":{"data":"AA","format":"wav"}}]},{"role":"assistant","tool_calls":[{"id":"call_0_ts_AB-_","type":"function","function":{"name":"f","arguments":"{\"a\":[1,{}]}"}}]},{"role":"tool","tool_call_id":"call_0_ts_AB-_","content":"{\"r\":1}"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"required","stop":["x"],"max_tokens":5,"reasoning_effort":"high","response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{}}},"n":2,"seed":3}"#,
        ];
    let alphabet: &[u8] = b"{}[]\":,\\ \n\rdata:error0123456789.-eE+truefalsnul\xe2\x82\xac\xff";
    crate::test_support::workout(
        &seeds,
        alphabet,
        &provider(),
        &|| Box::new(GeminiChat::default()),
        &|stream, usage| Box::new(fresh(stream, usage)),
        3000,
    );
}
