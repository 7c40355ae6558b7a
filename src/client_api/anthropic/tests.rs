//! Tests of the Messages API conversions: request, whole answer, stream, envelope.

use serde_json::{json, Value};

use super::*;

/// OpenAI's gpt-4o-mini: `max_completion_tokens`, no `reasoning_effort`.
const OPENAI: Target = Target {
    max_completion_tokens: true,
    reasoning_effort: false,
};

fn convert(body: Value) -> Value {
    convert_for(body, OPENAI)
}

fn convert_for(body: Value, target: Target) -> Value {
    serde_json::from_slice(&to_openai_request(body.to_string().as_bytes(), target).unwrap())
        .unwrap()
}

#[test]
fn envelope_requires_messages_and_max_tokens() {
    let ok = br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#;
    assert!(parse_messages_envelope(ok).is_ok());
    for (body, param) in [
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens",
        ),
        (
            r#"{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens",
        ),
        (r#"{"model":"m","max_tokens":5,"messages":[]}"#, "messages"),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"tool","content":"x"}]}"#,
            "messages.0.role",
        ),
    ] {
        let e = parse_messages_envelope(body.as_bytes()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some(param), "{body}");
    }
}

#[test]
fn request_maps_system_tools_results_and_images() {
    let out = convert(json!({
        "model": "m", "max_tokens": 100, "system": [{"type": "text", "text": "Be kind."}],
        "stop_sequences": ["END"], "temperature": 0.2, "top_k": 5, "metadata": {"user_id": "u1"},
        "tools": [{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                {"type": "text", "text": "Calling"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "text", "text": "thanks"}]}
        ]
    }));
    assert_eq!(
        out["messages"][0],
        json!({"role": "system", "content": "Be kind."})
    );
    assert_eq!(
        out["messages"][1]["content"][1],
        json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}})
    );
    assert_eq!(out["messages"][2]["content"], "Calling");
    assert_eq!(
        out["messages"][2]["tool_calls"][0]["function"]["arguments"],
        r#"{"city":"Paris"}"#
    );
    assert_eq!(
        out["messages"][3],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"})
    );
    assert_eq!(
        out["messages"][4],
        json!({"role": "user", "content": "thanks"})
    );
    assert_eq!(out["max_completion_tokens"], 100);
    assert_eq!(out["stop"], json!(["END"]));
    assert_eq!(out["user"], "u1");
    assert!(out.get("top_k").is_none());
    assert_eq!(
        out["tools"][0]["function"]["parameters"],
        json!({"type": "object"})
    );
    assert_eq!(out["tool_choice"], "required");
    assert_eq!(out["parallel_tool_calls"], false);
}

#[test]
fn request_rejects_what_cannot_be_sent() {
    let doc = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]});
    let e = to_openai_request(doc.to_string().as_bytes(), OPENAI).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("messages.0.content.0"));
    let server_tool = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305", "name": "web_search"}]});
    assert_eq!(
        to_openai_request(server_tool.to_string().as_bytes(), OPENAI)
            .unwrap_err()
            .param
            .as_deref(),
        Some("tools.0.type")
    );
    let plain = json!({"model": "m", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "x"}]});
    let out = convert_for(plain, Target::default());
    assert_eq!(out["max_tokens"], 5);
    assert_eq!(out["stream_options"], json!({"include_usage": true}));
}

#[test]
fn response_becomes_message() {
    let body = json!({"id": "chatcmpl-1", "model": "gpt", "choices": [{"index": 0, "finish_reason": "tool_calls",
        "message": {"role": "assistant", "content": "Sure", "tool_calls": [{"id": "call_1", "type": "function",
        "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}});
    let m: Value =
        serde_json::from_slice(&openai_response_to_message(body.to_string().as_bytes()).unwrap())
            .unwrap();
    assert_eq!(m["id"], "msg_chatcmpl-1");
    assert_eq!(m["content"][0], json!({"type": "text", "text": "Sure"}));
    assert_eq!(
        m["content"][1],
        json!({"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}})
    );
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(
        m["usage"],
        json!({"input_tokens": 6, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 0, "output_tokens": 3})
    );
    assert_eq!(openai_response_to_message(b"{}").unwrap_err().status, 502);
}

const STREAM: &str = "data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n\
data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n\
data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n\
data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]}}]}\n\n\
data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n\
data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}\n\n\
data: [DONE]\n\n";

fn run(chunks: &[&[u8]]) -> String {
    let mut s = StreamToMessages::default();
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        s.feed(c, i + 1 == chunks.len(), &mut out);
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn stream_becomes_message_events_at_every_split() {
    let whole = run(&[STREAM.as_bytes()]);
    let names: Vec<&str> = whole
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(whole.contains(r#""stop_reason":"tool_use""#));
    assert!(whole.contains(r#""output_tokens":4"#));
    let s = STREAM.as_bytes();
    for cut in 0..=s.len() {
        assert_eq!(run(&[&s[..cut], &s[cut..]]), whole, "cut {cut}");
    }
}

#[test]
fn stream_errors_and_drops_end_with_an_error_event() {
    let out = run(&[b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"boom\"}}\n\n"]);
    assert!(out.ends_with("event: error\ndata: {\"error\":{\"message\":\"boom\",\"type\":\"api_error\"},\"type\":\"error\"}\n\n"), "{out}");
    let out = run(&[
        b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
    ]);
    assert!(out.contains("event: error") && out.contains("ended before"));
}

/// Nothing follows `message_stop` or an `error` event: not later chunks, not a second
/// `[DONE]`, not another error, not the end of the body.
#[test]
fn nothing_follows_the_final_event() {
    let late: &[&[u8]] = &[
        b"data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"late\"}}]}\n\n",
        b"data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":5,\"id\":\"x\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"stop\"}]}\n\n",
        b"data: {\"error\":{\"message\":\"late error\"}}\n\n",
        b"data: nope\n\n",
        b"data: [DONE]\n\n",
    ];
    let failed = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"boom\"}}\n\n";
    let cut = STREAM.find("data: [DONE]").unwrap();
    // (stream, it ends only with the body, its final event)
    for (stream, at_end, last) in [
        (STREAM, false, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        // Ended by the end of the body rather than `[DONE]`.
        (&STREAM[..cut], true, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        (failed, false, "event: error\ndata: {\"error\":{\"message\":\"boom\",\"type\":\"api_error\"},\"type\":\"error\"}\n\n"),
    ] {
        let alone = run(&[stream.as_bytes()]);
        assert!(alone.ends_with(last), "{alone}");
        let mut s = StreamToMessages::default();
        let mut out = Vec::new();
        s.feed(stream.as_bytes(), at_end, &mut out);
        for chunk in late {
            s.feed(chunk, false, &mut out);
        }
        s.feed(b"", true, &mut out);
        s.feed(late[0], true, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), alone);
        assert_eq!(alone.matches("event: message_stop").count() + alone.matches("event: error").count(), 1);
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = crate::test_support::XorShift(0x2545f4914f6cdd1d);
    let alphabet = b"{}[]\":,data: \n[DONE]choicesdeltatool_callsindex01";
    for _ in 0..2000 {
        let n = rng.below(200);
        let bytes = rng.bytes(n, alphabet);
        let _ = to_openai_request(&bytes, OPENAI);
        let _ = openai_response_to_message(&bytes);
        let _ = run(&[&bytes[..n / 2], &bytes[n / 2..]]);
    }
}

#[test]
fn consecutive_text_blocks_stay_separate_parts() {
    let out = convert(json!({"model": "m", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "one block"}]}
    ]}));
    // Several blocks: the same text, as parts (joined with a newline the prompt would change).
    assert_eq!(
        out["messages"][0]["content"],
        json!([{"type": "text", "text": "Hello "}, {"type": "text", "text": "world"}])
    );
    // One block: a plain string.
    assert_eq!(out["messages"][2]["content"], json!("one block"));
}
