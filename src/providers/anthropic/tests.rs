//! Tests of the Anthropic translator: requests, answers, streams (at every split) and errors.

use super::stream::text_delta_fast;
use super::*;
use crate::client_api::openai::parse_chat_envelope;
use crate::config::{Config, ProcessEnv, Provider};
use serde_json::{json, Value};

const STREAM_FIXTURE: &str = include_str!("../../../tests/fixtures/anthropic/stream_text_tool.sse");
const MESSAGE_FIXTURE: &str =
    include_str!("../../../tests/fixtures/anthropic/message_tool_use.json");

fn provider() -> Provider {
    Config::parse(
            br#"{"providers":{"claude":{"type":"anthropic","cluster":"c","api_key":"sk-ant-test","headers":{"anthropic-beta":"b1"},"default_max_tokens":1000}},
                 "models":[{"name":"smart","deployments":[{"provider":"claude","model":"claude-sonnet-4-5"}]}]}"#,
            &ProcessEnv,
        )
        .unwrap()
        .providers
        .remove(0)
}

fn try_translate(body: &str) -> Result<(AnthropicChat, ProviderRequest), GatewayError> {
    let p = provider();
    let env = parse_chat_envelope(body.as_bytes())?;
    let mut t = AnthropicChat::default();
    let req = t.request(&ChatCall {
        raw: body.as_bytes(),
        envelope: &env,
        provider: &p,
        upstream_model: "claude-sonnet-4-5",
        now_unix: 1_700_000_000,
        want_stream_usage: true,
    })?;
    Ok((t, req))
}

/// The Anthropic body as JSON (tests only; the translator itself never builds a `Value`).
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
    format!(r#"{{"model":"smart","messages":{messages}{extra}}}"#)
}

// ------------------------------------------------------------------ request

#[test]
fn request_path_headers_and_minimal_body() {
    let body = with_messages(r#"[{"role":"user","content":"Hello"}]"#, "");
    let (_, req) = try_translate(&body).unwrap();
    assert_eq!(req.path, "/v1/messages");
    for h in [
        ("x-api-key", "sk-ant-test"),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
        ("anthropic-beta", "b1"),
    ] {
        assert!(req.headers.contains(&(h.0.into(), h.1.into())), "{h:?}");
    }
    assert!(!req.headers.iter().any(|(k, _)| k == "authorization"));
    assert_eq!(req.remove_headers, vec!["authorization"]);
    let v: Value = serde_json::from_slice(&req.body.unwrap()).unwrap();
    assert_eq!(
        v,
        json!({"model":"claude-sonnet-4-5","messages":[{"role":"user","content":[{"type":"text","text":"Hello"}]}],"max_tokens":1000})
    );
}

#[test]
fn system_and_developer_messages_become_system_in_order() {
    let v = body_of(&with_messages(
        r#"[{"role":"system","content":"You are terse."},{"role":"user","content":"hi"}]"#,
        "",
    ));
    assert_eq!(v["system"], "You are terse.");

    let v = body_of(&with_messages(
        r#"[{"role":"system","content":"A"},{"role":"user","content":"hi"},
                {"role":"developer","content":[{"type":"text","text":"B"},{"type":"text","text":"C"}]},
                {"role":"assistant","content":"yo"},{"role":"system","content":""},{"role":"user","content":"again"}]"#,
        "",
    ));
    assert_eq!(
        v["system"],
        json!([{"type":"text","text":"A"},{"type":"text","text":"B"},{"type":"text","text":"C"}])
    );
    assert_eq!(
        v["messages"],
        json!([
            {"role":"user","content":[{"type":"text","text":"hi"}]},
            {"role":"assistant","content":[{"type":"text","text":"yo"}]},
            {"role":"user","content":[{"type":"text","text":"again"}]}
        ])
    );
    // cache_control on a text part is kept (and forces the block form).
    let v = body_of(&with_messages(
        r#"[{"role":"system","content":[{"type":"text","text":"big","cache_control":{"type":"ephemeral"}}]},{"role":"user","content":"q"}]"#,
        "",
    ));
    assert_eq!(
        v["system"],
        json!([{"type":"text","text":"big","cache_control":{"type":"ephemeral"}}])
    );
    let e = bad(&with_messages(
        r#"[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x/a.png"}}]},{"role":"user","content":"q"}]"#,
        "",
    ));
    assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
}

#[test]
fn multi_turn_and_consecutive_same_role_are_merged() {
    let v = body_of(&with_messages(
        r#"[{"role":"user","content":"one"},{"role":"user","content":[{"type":"text","text":"two"}]},
                {"role":"assistant","content":"three"},{"role":"assistant","content":[{"type":"text","text":"four"},{"type":"refusal","refusal":"no"}]},
                {"role":"user","content":"five"}]"#,
        "",
    ));
    assert_eq!(
        v["messages"],
        json!([
            {"role":"user","content":[{"type":"text","text":"one"},{"type":"text","text":"two"}]},
            {"role":"assistant","content":[{"type":"text","text":"three"},{"type":"text","text":"four"},{"type":"text","text":"no"}]},
            {"role":"user","content":[{"type":"text","text":"five"}]}
        ])
    );
}

#[test]
fn leading_assistant_message_gets_a_placeholder_user_message() {
    let v = body_of(&with_messages(
        r#"[{"role":"system","content":"s"},{"role":"assistant","content":"How can I help?"},{"role":"user","content":"Weather?"}]"#,
        "",
    ));
    assert_eq!(
        v["messages"],
        json!([
            {"role":"user","content":[{"type":"text","text":LEADING_USER_PLACEHOLDER}]},
            {"role":"assistant","content":[{"type":"text","text":"How can I help?"}]},
            {"role":"user","content":[{"type":"text","text":"Weather?"}]}
        ])
    );
}

#[test]
fn empty_conversation_is_rejected() {
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

#[test]
fn images_by_url_and_base64() {
    let v = body_of(&with_messages(
        r#"[{"role":"user","content":[{"type":"text","text":"What is this?"},
                {"type":"image_url","image_url":{"url":"https://example.com/cat.png","detail":"high"}},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo\/AAA="}},
                {"type":"image_url","image_url":{"url":"data:image/jpg;base64,/9j/4AAQ"}}]}]"#,
        "",
    ));
    assert_eq!(
        v["messages"][0]["content"],
        json!([
            {"type":"text","text":"What is this?"},
            {"type":"image","source":{"type":"url","url":"https://example.com/cat.png"}},
            {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo/AAA="}},
            {"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"/9j/4AAQ"}}
        ])
    );
}

/// Long texts go through the no-scan path when serde_json lent them and the escaping path
/// when they held escapes: either way the Anthropic body carries exactly the client's text.
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
                   {{"role":"assistant","content":"{escaped}"}},{{"role":"user","content":"{plain}"}}]"#
        ),
        "",
    );
    let v = body_of(&body);
    assert_eq!(v["system"], json!(plain));
    assert_eq!(
        v["messages"],
        json!([
            {"role":"user","content":[
                {"type":"text","text":plain},
                {"type":"text","text":unescaped},
                {"type":"image","source":{"type":"base64","media_type":"image/png","data":b64}}]},
            {"role":"assistant","content":[{"type":"text","text":unescaped}]},
            {"role":"user","content":[{"type":"text","text":plain}]}
        ])
    );
}

#[test]
fn bad_images_and_unsupported_parts_are_400_with_param() {
    for (part, param) in [
        (
            r#"{"type":"image_url","image_url":{"url":"data:image/tiff;base64,AAAA"}}"#,
            "messages[1].content[1].image_url",
        ),
        (
            r#"{"type":"image_url","image_url":{"url":"data:image/png,rawbytes"}}"#,
            "messages[1].content[1].image_url",
        ),
        (
            r#"{"type":"image_url","image_url":{"url":"data:image/png;base64"}}"#,
            "messages[1].content[1].image_url",
        ),
        (
            r#"{"type":"image_url","image_url":{"url":"data:image/png;base64,"}}"#,
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
            r#"{"type":"input_audio","input_audio":{"data":"AAA","format":"wav"}}"#,
            "messages[1].content[1]",
        ),
        (
            r#"{"type":"file","file":{"file_id":"f"}}"#,
            "messages[1].content[1]",
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
    let e = bad(&with_messages(
        r#"[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]"#,
        "",
    ));
    assert!(
        e.message.contains("not supported by anthropic"),
        "{}",
        e.message
    );
}

const TOOLS: &str = r#","tools":[{"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]},"strict":true}},
        {"type":"function","function":{"name":"ping"}}]"#;

#[test]
fn tools_and_every_tool_choice() {
    let v = body_of(&with_messages(r#"[{"role":"user","content":"hi"}]"#, TOOLS));
    assert_eq!(
        v["tools"],
        json!([
            {"name":"get_weather","description":"Weather now","input_schema":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}},
            {"name":"ping","input_schema":{"type":"object","properties":{}}}
        ])
    );
    assert!(v.get("tool_choice").is_none());
    for (choice, parallel, want) in [
        (r#""auto""#, "", json!({"type":"auto"})),
        (r#""none""#, "", json!({"type":"none"})),
        (r#""required""#, "", json!({"type":"any"})),
        (
            r#"{"type":"function","function":{"name":"ping"}}"#,
            "",
            json!({"type":"tool","name":"ping"}),
        ),
        (
            r#""auto""#,
            r#","parallel_tool_calls":false"#,
            json!({"type":"auto","disable_parallel_tool_use":true}),
        ),
        (
            r#""required""#,
            r#","parallel_tool_calls":false"#,
            json!({"type":"any","disable_parallel_tool_use":true}),
        ),
        (
            r#"{"type":"function","function":{"name":"ping"}}"#,
            r#","parallel_tool_calls":false"#,
            json!({"type":"tool","name":"ping","disable_parallel_tool_use":true}),
        ),
        (
            r#""auto""#,
            r#","parallel_tool_calls":true"#,
            json!({"type":"auto"}),
        ),
    ] {
        let v = body_of(&with_messages(
            r#"[{"role":"user","content":"hi"}]"#,
            &format!(r#"{TOOLS},"tool_choice":{choice}{parallel}"#),
        ));
        assert_eq!(v["tool_choice"], want, "{choice} {parallel}");
    }
    // No tool_choice but parallel calls off: an auto choice carries the flag.
    let v = body_of(&with_messages(
        r#"[{"role":"user","content":"hi"}]"#,
        &format!(r#"{TOOLS},"parallel_tool_calls":false"#),
    ));
    assert_eq!(
        v["tool_choice"],
        json!({"type":"auto","disable_parallel_tool_use":true})
    );
    // tool_choice without tools is dropped.
    let v = body_of(&with_messages(
        r#"[{"role":"user","content":"hi"}]"#,
        r#","tool_choice":"none","tools":[]"#,
    ));
    assert!(v.get("tool_choice").is_none() && v.get("tools").is_none());
    // Non-function tools are refused.
    let e = bad(&with_messages(
        r#"[{"role":"user","content":"hi"}]"#,
        r#","tools":[{"type":"custom","custom":{"name":"x"}}]"#,
    ));
    assert_eq!(e.param.as_deref(), Some("tools[0].type"));
}

#[test]
fn parallel_tool_calls_and_results_share_one_user_message() {
    let v = body_of(&with_messages(
        r#"[{"role":"user","content":"Weather in Paris and Rome?"},
                {"role":"assistant","content":"","tool_calls":[
                    {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}},
                    {"id":"call_2","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Rome\"}"}},
                    {"id":"call_3","type":"function","function":{"name":"ping","arguments":""}}]},
                {"role":"tool","tool_call_id":"call_1","content":"18C"},
                {"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"21C"},{"type":"text","text":" sunny"}]},
                {"role":"tool","tool_call_id":"call_3","content":""},
                {"role":"user","content":"Thanks, and tomorrow?"}]"#,
        TOOLS,
    ));
    assert_eq!(
        v["messages"],
        json!([
            {"role":"user","content":[{"type":"text","text":"Weather in Paris and Rome?"}]},
            {"role":"assistant","content":[
                {"type":"tool_use","id":"call_1","name":"get_weather","input":{"location":"Paris"}},
                {"type":"tool_use","id":"call_2","name":"get_weather","input":{"location":"Rome"}},
                {"type":"tool_use","id":"call_3","name":"ping","input":{}}]},
            {"role":"user","content":[
                {"type":"tool_result","tool_use_id":"call_1","content":"18C"},
                {"type":"tool_result","tool_use_id":"call_2","content":[{"type":"text","text":"21C"},{"type":"text","text":" sunny"}]},
                {"type":"tool_result","tool_use_id":"call_3"},
                {"type":"text","text":"Thanks, and tomorrow?"}]}
        ])
    );
}

#[test]
fn bad_tool_calls_are_400_with_param() {
    for (msgs, param) in [
        (
            r#"[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{not json"}}]}]"#,
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            r#"[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]"#,
            "messages[1].tool_calls[0].function.arguments",
        ),
        (
            r#"[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f"}},{"id":"d","type":"custom","function":{"name":"f"}}]}]"#,
            "messages[1].tool_calls[1].type",
        ),
        (
            r#"[{"role":"user","content":"q"},{"role":"tool","content":"r"}]"#,
            "messages[1].tool_call_id",
        ),
        (
            r#"[{"role":"user","content":"q"},{"role":"assistant","function_call":{"name":"f","arguments":"{}"}}]"#,
            "messages[1].function_call",
        ),
        (
            r#"[{"role":"user","content":"q"},{"role":"function","name":"f","content":"r"}]"#,
            "messages[1].role",
        ),
    ] {
        let e = bad(&with_messages(msgs, ""));
        assert_eq!(
            (e.status, e.param.as_deref()),
            (400, Some(param)),
            "{msgs}: {}",
            e.message
        );
    }
}

#[test]
fn max_tokens_default_and_overrides() {
    let m = r#"[{"role":"user","content":"hi"}]"#;
    assert_eq!(body_of(&with_messages(m, ""))["max_tokens"], 1000);
    assert_eq!(
        body_of(&with_messages(m, r#","max_tokens":50"#))["max_tokens"],
        50
    );
    assert_eq!(
        body_of(&with_messages(m, r#","max_completion_tokens":70"#))["max_tokens"],
        70
    );
    assert_eq!(
        body_of(&with_messages(
            m,
            r#","max_tokens":50,"max_completion_tokens":70"#
        ))["max_tokens"],
        70
    );
    assert_eq!(
        body_of(&with_messages(
            m,
            r#","max_tokens":50,"max_completion_tokens":null"#
        ))["max_tokens"],
        50
    );
    assert_eq!(
        bad(&with_messages(m, r#","max_tokens":"many""#))
            .param
            .as_deref(),
        Some("max_tokens")
    );
}

#[test]
fn sampling_stop_user_and_stream() {
    let m = r#"[{"role":"user","content":"hi"}]"#;
    let v = body_of(&with_messages(
        m,
        r#","stop":"\n\nHuman:","temperature":0.7,"user":"u-42","stream":true,"seed":7,"frequency_penalty":0.5,"presence_penalty":0.1,"logit_bias":{"50256":-100},"n":1,"store":true,"metadata":{"a":"b"}"#,
    ));
    assert_eq!(
        v,
        json!({"model":"claude-sonnet-4-5","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
                   "max_tokens":1000,"stop_sequences":["\n\nHuman:"],"temperature":0.7,
                   "metadata":{"user_id":"u-42"},"stream":true})
    );
    let v = body_of(&with_messages(
        m,
        r#","stop":["a","","b"],"temperature":1.6,"safety_identifier":"s-1""#,
    ));
    assert_eq!(v["stop_sequences"], json!(["a", "b"]));
    // OpenAI 0..2 → Anthropic 0..1: clamped, not scaled.
    assert_eq!(v["temperature"], 1.0);
    assert_eq!(v["metadata"], json!({"user_id":"s-1"}));
    assert_eq!(
        body_of(&with_messages(m, r#","temperature":0"#))["temperature"],
        0.0
    );
    assert_eq!(
        bad(&with_messages(m, r#","temperature":2.5"#))
            .param
            .as_deref(),
        Some("temperature")
    );
    assert!(body_of(&with_messages(m, r#","stream":false"#))
        .get("stream")
        .is_none());
    // top_p alone is sent; with temperature it is dropped (recent models reject the pair).
    assert_eq!(body_of(&with_messages(m, r#","top_p":0.9"#))["top_p"], 0.9);
    let v = body_of(&with_messages(m, r#","top_p":0.9,"temperature":0.3"#));
    assert_eq!(
        (v["temperature"].clone(), v.get("top_p")),
        (json!(0.3), None)
    );
}

#[test]
fn unsupported_params_are_400() {
    let m = r#"[{"role":"user","content":"hi"}]"#;
    for (extra, param) in [
        (r#","n":2"#, "n"),
        (r#","logprobs":true"#, "logprobs"),
        (r#","functions":[{"name":"f"}]"#, "functions"),
        (r#","function_call":"auto""#, "function_call"),
        (r#","modalities":["text","audio"]"#, "modalities"),
        (r#","audio":{"voice":"alloy","format":"wav"}"#, "audio"),
        (r#","reasoning_effort":"extreme""#, "reasoning_effort"),
        (
            r#","response_format":{"type":"json_schema","json_schema":{"name":"x"}}"#,
            "response_format.json_schema.schema",
        ),
    ] {
        let e = bad(&with_messages(m, extra));
        assert_eq!(
            (e.status, e.param.as_deref()),
            (400, Some(param)),
            "{extra}"
        );
    }
    // Accepted no-ops.
    body_of(&with_messages(
        m,
        r#","n":1,"logprobs":false,"functions":null,"modalities":["text"]"#,
    ));
}

#[test]
fn reasoning_effort_and_response_format() {
    let m = r#"[{"role":"user","content":"hi"}]"#;
    let v = body_of(&with_messages(
        m,
        r#","reasoning_effort":"medium","max_tokens":8000,"temperature":0.2"#,
    ));
    assert_eq!(
        v["thinking"],
        json!({"type":"enabled","budget_tokens":4096})
    );
    assert_eq!(v["max_tokens"], 8000);
    assert!(v.get("temperature").is_none());
    // Budget above max_tokens: max_tokens raised so the answer keeps its room.
    let v = body_of(&with_messages(m, r#","reasoning_effort":"high""#));
    assert_eq!(v["thinking"]["budget_tokens"], 16384);
    assert_eq!(v["max_tokens"], 16384 + 1000);
    assert_eq!(
        body_of(&with_messages(m, r#","reasoning_effort":"low""#))["thinking"]["budget_tokens"],
        1024
    );
    assert!(body_of(&with_messages(m, r#","reasoning_effort":"none""#))
        .get("thinking")
        .is_none());

    let v = body_of(&with_messages(
        m,
        r#","response_format":{"type":"json_schema","json_schema":{"name":"r","strict":true,"schema":{"type":"object","properties":{"a":{"type":"integer"}},"additionalProperties":false}}}"#,
    ));
    assert_eq!(
        v["output_config"],
        json!({"format":{"type":"json_schema","schema":{"type":"object","properties":{"a":{"type":"integer"}},"additionalProperties":false}}})
    );
    assert!(body_of(&with_messages(
        m,
        r#","response_format":{"type":"json_object"}"#
    ))
    .get("output_config")
    .is_none());
}

// ------------------------------------------------------------------ response

fn respond(t: &mut AnthropicChat, body: &str) -> Value {
    serde_json::from_slice(&t.response(body.as_bytes()).unwrap().unwrap()).unwrap()
}

fn fresh(stream: bool, include_usage: bool) -> AnthropicChat {
    let extra = match (stream, include_usage) {
        (false, _) => "",
        (true, false) => r#","stream":true"#,
        (true, true) => r#","stream":true,"stream_options":{"include_usage":true}"#,
    };
    try_translate(&with_messages(r#"[{"role":"user","content":"hi"}]"#, extra))
        .unwrap()
        .0
}

#[test]
fn response_text() {
    let mut t = fresh(false, false);
    let v = respond(
        &mut t,
        r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hi! \"there\""}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":5,"cache_creation_input_tokens":null,"cache_read_input_tokens":0}}"#,
    );
    assert_eq!(
        v,
        json!({"id":"msg_1","object":"chat.completion","created":1_700_000_000u64,"model":"claude-sonnet-4-5-20250929",
                   "choices":[{"index":0,"message":{"role":"assistant","content":"Hi! \"there\"","refusal":null},"logprobs":null,"finish_reason":"stop"}],
                   "usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":0,"cache_write_tokens":0}}})
    );
}

#[test]
fn response_tool_use_thinking_and_cache_usage() {
    let mut t = fresh(false, false);
    let v = respond(&mut t, MESSAGE_FIXTURE);
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["content"], "I'll check the weather.");
    assert_eq!(msg["reasoning_content"], "The user wants the weather.");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &msg["tool_calls"][0];
    assert_eq!(call["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args = call["function"]["arguments"].as_str().unwrap();
    assert_eq!(
        args,
        r#"{"location":"San Francisco, CA","unit":"celsius","days":[1,2]}"#
    );
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens":2095+1800+12,"completion_tokens":503,"total_tokens":2095+1800+12+503,
                   "prompt_tokens_details":{"cached_tokens":1800,"cache_write_tokens":12}})
    );
    assert_eq!(
        t.usage(),
        Some(Usage {
            prompt_tokens: 3907,
            completion_tokens: 503,
            cached_tokens: 1800,
            cache_creation_tokens: 12,
            reasoning_tokens: 0
        })
    );
    // Only tool calls: content is null.
    let v = respond(
        &mut t,
        r#"{"id":"m","type":"message","model":"c","content":[{"type":"tool_use","id":"t","name":"f","input":{}}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":1}}"#,
    );
    assert!(v["choices"][0]["message"]["content"].is_null());
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{}"
    );
}

#[test]
fn every_stop_reason_maps() {
    for (stop, want) in [
        ("\"end_turn\"", "stop"),
        ("\"stop_sequence\"", "stop"),
        ("\"pause_turn\"", "stop"),
        ("\"max_tokens\"", "length"),
        ("\"model_context_window_exceeded\"", "length"),
        ("\"tool_use\"", "tool_calls"),
        ("\"refusal\"", "content_filter"),
        ("\"something_new\"", "stop"),
        ("null", "stop"),
    ] {
        let mut t = fresh(false, false);
        let v = respond(
            &mut t,
            &format!(
                r#"{{"id":"m","type":"message","model":"c","content":[{{"type":"text","text":"x"}}],"stop_reason":{stop},"usage":{{"input_tokens":1,"output_tokens":1}}}}"#
            ),
        );
        assert_eq!(v["choices"][0]["finish_reason"], want, "{stop}");
    }
}

#[test]
fn invalid_2xx_body_is_502_naming_provider() {
    for body in [
        "",
        "not json",
        "{}",
        r#"{"type":"error","error":{"type":"x","message":"y"}}"#,
        r#"{"id":"m","type":"message","model":"c","content":"text"}"#,
    ] {
        let mut t = fresh(false, false);
        let e = t.response(body.as_bytes()).unwrap_err();
        assert_eq!(e.status, 502, "{body}");
        assert!(e.message.contains("claude"), "{}", e.message);
    }
}

// ------------------------------------------------------------------ errors

#[test]
fn provider_errors_are_mapped() {
    let t = fresh(false, false);
    let e = t.error(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#,
        );
    assert_eq!(e.status, 503);
    assert_eq!(e.code.as_deref(), Some("overloaded_error"));
    assert!(
        e.message.contains("claude") && e.message.contains("overloaded_error: Overloaded"),
        "{}",
        e.message
    );
    let e = t.error(429, br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#);
    assert_eq!((e.status, e.kind), (429, "rate_limit_error"));
    let e = t.error(400, br#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: roles must alternate"}}"#);
    assert_eq!(
        (e.status, e.kind, e.code.as_deref()),
        (400, "invalid_request_error", Some("invalid_request_error"))
    );
    let long = format!("<html>{}</html>", "x".repeat(2000));
    let e = t.error(502, long.as_bytes());
    assert_eq!(e.status, 502);
    assert!(
        e.message.contains("<html>xxx") && e.message.len() < 600,
        "{}",
        e.message.len()
    );
    assert_eq!(e.code, None);
}

// ------------------------------------------------------------------ streaming

fn run(t: &mut AnthropicChat, chunks: &[&[u8]]) -> String {
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

/// Event bytes are not checked as UTF-8 up front: a text delta with a bad byte leaves the
/// fast path and is read with the byte replaced, and the stream goes on.
#[test]
fn bad_utf8_in_a_text_delta_is_replaced() {
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n";
    let mut stream = start.as_bytes().to_vec();
    stream.extend_from_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\xffb\"}}\n\n");
    stream.extend_from_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"ok\"}}\n\n");
    let mut t = fresh(true, false);
    let mut out = Vec::new();
    t.stream_chunk(&stream, false, &mut out);
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("a\u{fffd}b"), "{out}");
    assert!(out.contains("\"content\":\"ok\""), "{out}");
    assert!(!out.contains("error"), "{out}");
}

#[test]
fn text_delta_fast_path_writes_what_the_full_parse_writes() {
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n";
    let texts = [
        r#""Hello""#,
        r#""""#,
        r#"" quote \" backslash \\ slash \/ tab \t nl \n uni \u00e9 \ud83d\ude80 é ✓""#,
        r#""</script>""#,
    ];
    for text in texts {
        // The exact shape Anthropic sends (fast path), and the same event reordered (full parse).
        let fast = format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{text}}}}}\n\n");
        let slow = format!("event: content_block_delta\ndata: {{\"index\":0,\"delta\":{{\"text\":{text},\"type\":\"text_delta\"}},\"type\":\"content_block_delta\"}}\n\n");
        assert!(text_delta_fast(
            fast.lines()
                .nth(1)
                .unwrap()
                .strip_prefix("data: ")
                .unwrap()
                .as_bytes()
        )
        .is_some());
        let (mut a, mut b) = (fresh(true, true), fresh(true, true));
        let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
        a.stream_chunk(format!("{start}{fast}").as_bytes(), false, &mut out_a);
        b.stream_chunk(format!("{start}{slow}").as_bytes(), false, &mut out_b);
        // The same chunks; the text's escapes are the provider's own (`\/` or `/`, `\u00e9`
        // or `é`: the same JSON string).
        let (a, b) = (
            String::from_utf8(out_a).unwrap(),
            String::from_utf8(out_b).unwrap(),
        );
        let parse = |o: &str| -> Vec<Value> {
            o.split("\n\n")
                .filter_map(|e| e.strip_prefix("data: "))
                .map(|d| serde_json::from_str(d).unwrap())
                .collect()
        };
        assert_eq!(parse(&a), parse(&b), "{text}");
        assert_eq!(parse(&a).len(), if text == r#""""# { 1 } else { 2 });
    }
    // Not the exact shape, or not one valid string token: the full parse decides.
    for data in [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"},"x":1}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"b"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\q"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\u12"}}"#,
            r#"{"type":"content_block_delta","index":,"delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":5}}"#,
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\u{1}\"}}",
        ] {
            assert_eq!(text_delta_fast(data.as_bytes()), None, "{data}");
        }
}

#[test]
fn stream_is_translated_whole() {
    let mut t = fresh(true, true);
    let out = run(&mut t, &[STREAM_FIXTURE.as_bytes()]);
    let chunks = chunks_json(&out);
    for c in &chunks {
        assert_eq!(c["id"], "msg_01XFDUDYJgAACzvnptvVoYEL");
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["created"], 1_700_000_000u64);
        assert_eq!(c["model"], "claude-sonnet-4-5-20250929");
        assert!(c.get("usage").is_some());
    }
    let (last, body) = chunks.split_last().unwrap();
    assert_eq!(
        body[0]["choices"][0]["delta"],
        json!({"role":"assistant","content":""})
    );
    for c in body {
        assert!(c["usage"].is_null());
        assert_eq!(c["choices"].as_array().unwrap().len(), 1);
        assert_eq!(c["choices"][0]["index"], 0);
        assert!(c["choices"][0]["logprobs"].is_null());
    }
    let content: String = body
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        content,
        "Okay, let me check the weather in San Francisco — \"SF\" ☀️."
    );
    let calls: Vec<&Value> = body
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(
        calls[0],
        &json!([{"index":0,"id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","type":"function","function":{"name":"get_weather","arguments":""}}])
    );
    assert_eq!(calls.len(), 4, "start + 3 non-empty argument pieces");
    let args: String = calls
        .iter()
        .map(|c| c[0]["function"]["arguments"].as_str().unwrap())
        .collect();
    let args: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(
        args,
        json!({"location":"San Francisco, CA","unit":"fahrenheit"})
    );
    let fin = &body[body.len() - 1]["choices"][0];
    assert_eq!(
        (fin["delta"].clone(), fin["finish_reason"].clone()),
        (json!({}), json!("tool_calls"))
    );
    assert!(body[..body.len() - 1]
        .iter()
        .all(|c| c["choices"][0]["finish_reason"].is_null()));
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens":2620,"completion_tokens":89,"total_tokens":2709,"prompt_tokens_details":{"cached_tokens":2048,"cache_write_tokens":100}})
    );
    assert_eq!(t.usage().unwrap().total_tokens(), 2709);
}

#[test]
fn stream_output_is_identical_at_every_split_and_byte_by_byte() {
    let s = STREAM_FIXTURE.as_bytes();
    let whole = run(&mut fresh(true, true), &[s]);
    for cut in 0..=s.len() {
        let (a, b) = s.split_at(cut);
        assert_eq!(run(&mut fresh(true, true), &[a, b]), whole, "cut at {cut}");
    }
    let bytes: Vec<&[u8]> = s.chunks(1).collect();
    let mut t = fresh(true, true);
    assert_eq!(run(&mut t, &bytes), whole);
    assert_eq!(t.usage().unwrap().completion_tokens, 89);
    // CRLF framing too.
    let crlf = STREAM_FIXTURE.replace('\n', "\r\n");
    assert_eq!(run(&mut fresh(true, true), &[crlf.as_bytes()]), whole);
}

#[test]
fn stream_without_include_usage_has_no_usage_field() {
    let mut t = fresh(true, false);
    let out = run(&mut t, &[STREAM_FIXTURE.as_bytes()]);
    let chunks = chunks_json(&out);
    assert!(chunks
        .iter()
        .all(|c| c.get("usage").is_none() && c["choices"].as_array().unwrap().len() == 1));
    // The gateway still learns the usage.
    assert_eq!(t.usage().unwrap().prompt_tokens, 2620);
}

const START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_9\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n";

#[test]
fn stream_in_band_error_event_ends_the_stream() {
    let mut t = fresh(true, true);
    let s = format!("{START}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\nevent: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"lo\"}}}}\n\n");
    let out = run(
        &mut t,
        &[
            s.as_bytes(),
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        ],
    );
    let ev = data_events(&out);
    assert_eq!(ev.len(), 4, "{out}");
    let err: Value = serde_json::from_str(&ev[2]).unwrap();
    assert_eq!(err["error"]["code"], "overloaded");
    assert_eq!(err["error"]["type"], "api_error");
    let msg = err["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("claude") && msg.contains("overloaded_error") && msg.contains("Overloaded"),
        "{msg}"
    );
    assert!(!out.contains("\"lo\""));
}

#[test]
fn stream_dropped_before_message_stop() {
    let mut t = fresh(true, false);
    let out = run(
        &mut t,
        &[
            START.as_bytes(),
            b"event: content_block_delta\ndata: {\"type\":\"content_bl",
        ],
    );
    let ev = data_events(&out);
    let err: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
    assert_eq!(
        err["error"]["message"],
        "claude stream ended before message_stop"
    );
    // Nothing after [DONE], even if more arrives.
    let mut more = Vec::new();
    assert!(t.stream_chunk(b"data: {\"type\":\"message_stop\"}\n\n", true, &mut more));
    assert!(more.is_empty());
    // An empty upstream stream is an error too.
    let out = run(&mut fresh(true, false), &[]);
    assert!(out.contains("stream ended before message_stop"));
    // Invalid JSON in an event ends the stream with an error.
    let out = run(
        &mut fresh(true, false),
        &[b"event: message_start\ndata: {nope\n\n"],
    );
    assert_eq!(data_events(&out).len(), 2);
    assert!(out.contains("invalid stream event"));
}

#[test]
fn stream_thinking_and_argument_less_tool() {
    let s = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":0}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me think\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQB\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"ping\",\"input\":{}}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t2\",\"name\":\"f\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":1}\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":30,\"input_tokens\":4}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
    let mut t = fresh(true, false);
    let chunks = chunks_json(&run(&mut t, &[s.as_bytes()]));
    let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert_eq!(deltas[1], &json!({"reasoning_content":"Let me think"}));
    assert_eq!(deltas[2]["tool_calls"][0]["index"], 0);
    assert_eq!(
        deltas[3],
        &json!({"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]})
    );
    assert_eq!(deltas[4]["tool_calls"][0]["index"], 1);
    assert_eq!(
        deltas[5],
        &json!({"tool_calls":[{"index":1,"function":{"arguments":"{\"a\":1}"}}]})
    );
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "length");
    assert_eq!(chunks.len(), 7);
    let u = t.usage().unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens), (4, 30));
}

// ------------------------------------------------------------------ robustness

#[test]
fn garbage_never_panics() {
    let seeds: Vec<&[u8]> = vec![
            STREAM_FIXTURE.as_bytes(),
            MESSAGE_FIXTURE.as_bytes(),
            START.as_bytes(),
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":[1,{}]}"}}]},{"role":"tool","tool_call_id":"c","content":"r"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"required","stop":["x"],"max_tokens":5,"reasoning_effort":"high"}"#,
        ];
    let alphabet: &[u8] = b"{}[]\":,\\ \n\rdata:event0123456789.-eE+truefalsnul\xe2\x82\xac\xff";
    crate::test_support::workout(
        &seeds,
        alphabet,
        &provider(),
        &|| Box::new(AnthropicChat::default()),
        &|stream, usage| Box::new(fresh(stream, usage)),
        3000,
    );
}
