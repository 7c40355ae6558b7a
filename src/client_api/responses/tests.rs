//! Tests of the Responses API conversions: request, whole answer, stream, caps, and the whole
//! path through the gateway to Anthropic and Gemini deployments.

use serde_json::{json, Value};

use super::stream::{MAX_OUTPUT_BYTES, MAX_OUTPUT_ITEMS};
use super::*;

const SERVED_BY: &str = "model `m` is served by provider `ant` (anthropic)";

fn convert(body: Value) -> (Value, serde_json::Map<String, Value>) {
    let r = to_chat_request(body.to_string().as_bytes(), SERVED_BY, false).unwrap();
    (serde_json::from_slice(&r.body).unwrap(), r.echo)
}

fn refused(body: Value) -> crate::error::GatewayError {
    match to_chat_request(body.to_string().as_bytes(), SERVED_BY, false) {
        Ok(_) => panic!("accepted: {body}"),
        Err(e) => e,
    }
}

#[test]
fn envelope_reads_model_and_stream() {
    let env = parse_responses_envelope(br#"{"model":"m","input":"hi","stream":true}"#).unwrap();
    assert_eq!((env.model.as_ref(), env.stream), ("m", true));
    let e = parse_responses_envelope(br#"{"input":"hi"}"#).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("model"));
    let e = parse_responses_envelope(br#"{"model":"m","stream":"yes"}"#).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("stream"));
}

/// Every kind of input item and every translated option, golden.
#[test]
fn request_maps_items_tools_and_options() {
    let (out, echo) = convert(json!({
        "model": "m", "instructions": "Be brief.", "store": false,
        "metadata": {"k": "v"}, "include": ["reasoning.encrypted_content"],
        "max_output_tokens": 300, "temperature": 0.3, "top_p": 0.9, "user": "u1",
        "parallel_tool_calls": false, "reasoning": {"effort": "low", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "w", "strict": true,
                            "schema": {"type": "object"}}, "verbosity": "low"},
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                   "strict": true},
                  {"type": "function", "name": "get_time", "parameters": null, "strict": null}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "stream": true,
        "input": [
            {"role": "developer", "content": "Use tools."},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Weather in "},
                {"type": "input_text", "text": "Paris?"},
                {"type": "input_image", "image_url": "https://x/img.png", "detail": "low"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hm"}],
             "encrypted_content": "opaque"},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
             "content": [{"type": "output_text", "text": "Checking", "annotations": []}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
             "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": ""},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_2",
             "output": [{"type": "input_text", "text": "noon"}]},
            {"role": "user", "content": "thanks"}
        ]
    }));
    assert_eq!(
        out["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use tools."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in "}, {"type": "text", "text": "Paris?"},
                {"type": "image_url", "image_url": {"url": "https://x/img.png", "detail": "low"}}]},
            {"role": "assistant", "content": "Checking", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "get_time", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
            {"role": "user", "content": "thanks"}
        ])
    );
    assert_eq!(
        out["tools"],
        json!([
            {"type": "function", "function": {"name": "get_weather", "description": "Weather",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
             "strict": true}},
            {"type": "function", "function": {"name": "get_time"}}
        ])
    );
    assert_eq!(
        out["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );
    assert_eq!(out["parallel_tool_calls"], false);
    assert_eq!(
        out["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "w", "strict": true, "schema": {"type": "object"}}})
    );
    assert_eq!(out["reasoning_effort"], "low");
    assert_eq!(out["max_completion_tokens"], 300);
    assert_eq!(
        (out["temperature"].clone(), out["top_p"].clone()),
        (json!(0.3), json!(0.9))
    );
    assert_eq!(out["user"], "u1");
    assert_eq!(out["stream_options"], json!({"include_usage": true}));
    for dropped in [
        "metadata",
        "store",
        "include",
        "text",
        "reasoning",
        "instructions",
        "input",
    ] {
        assert!(out.get(dropped).is_none(), "{dropped} sent");
    }
    // The answer repeats what was asked.
    assert_eq!(echo["instructions"], "Be brief.");
    assert_eq!(echo["metadata"], json!({"k": "v"}));
    assert_eq!(echo["parallel_tool_calls"], false);
    assert_eq!(echo["tools"].as_array().map(Vec::len), Some(2));
    assert_eq!(echo["previous_response_id"], Value::Null);
}

#[test]
fn string_input_allowed_tools_and_defaults() {
    let (out, echo) = convert(json!({"model": "m", "input": "hi"}));
    assert_eq!(
        out,
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    );
    assert_eq!(echo["tool_choice"], "auto");
    assert_eq!(echo["tools"], json!([]));
    assert_eq!(echo["text"], json!({"format": {"type": "text"}}));

    let (out, _) = convert(json!({"model": "m", "input": "hi",
        "tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}],
        "tool_choice": {"type": "allowed_tools", "mode": "required",
                        "tools": [{"type": "function", "name": "b"}]},
        "text": {"format": {"type": "json_object"}}}));
    assert_eq!(
        out["tools"],
        json!([{"type": "function", "function": {"name": "b"}}])
    );
    assert_eq!(out["tool_choice"], "required");
    assert_eq!(out["response_format"], json!({"type": "json_object"}));
    // A tool choice without tools is not sent (providers refuse it).
    let (out, _) = convert(json!({"model": "m", "input": "hi", "tool_choice": "none"}));
    assert!(out.get("tool_choice").is_none());
    // An input file with its data goes as a chat file part (the provider's translator decides).
    let (out, _) = convert(json!({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,AA=="}]}]}));
    assert_eq!(
        out["messages"][0]["content"],
        json!([{"type": "file", "file": {"file_data": "data:application/pdf;base64,AA==", "filename": "a.pdf"}}])
    );
}

/// Stateful and built-in features: 400 in the OpenAI shape, naming the parameter and saying
/// what to send instead.
#[test]
fn request_refuses_what_needs_openai_with_what_to_send_instead() {
    let base = json!({"model": "m", "input": "hi"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (body, param, says) in [
        (
            with("previous_response_id", json!("resp_1")),
            "previous_response_id",
            "Send the whole conversation in `input`",
        ),
        (
            with("conversation", json!("conv_1")),
            "conversation",
            "send the whole conversation in `input`",
        ),
        (
            with("background", json!(true)),
            "background",
            "send `stream: true`",
        ),
        (
            with("prompt", json!({"id": "pmpt_1"})),
            "prompt",
            "`instructions` and `input`",
        ),
        (
            with("top_logprobs", json!(3)),
            "top_logprobs",
            "Leave `top_logprobs` out",
        ),
        (
            with("tools", json!([{"type": "web_search"}])),
            "tools[0].type",
            "declare a function tool",
        ),
        (
            with(
                "tools",
                json!([{"type": "function", "name": "f"}, {"type": "custom", "name": "apply_patch"}]),
            ),
            "tools[1].type",
            "Only `function` tools",
        ),
        (
            with("tool_choice", json!({"type": "web_search_preview"})),
            "tool_choice",
            "Choose a function tool",
        ),
        (
            with("input", json!([{"type": "item_reference", "id": "msg_1"}])),
            "input[0]",
            "Send the item itself",
        ),
        (
            with(
                "input",
                json!([{"type": "computer_call_output", "call_id": "c"}]),
            ),
            "input[0].type",
            "Send messages",
        ),
        (
            with(
                "input",
                json!([{"role": "user", "content": [{"type": "input_image", "file_id": "file-1", "detail": "auto"}]}]),
            ),
            "input[0].content[0]",
            "`data:` URL",
        ),
    ] {
        let e = refused(body.clone());
        assert_eq!(
            (e.status, e.param.as_deref(), e.code.as_deref()),
            (400, Some(param), Some("unsupported_parameter")),
            "{body}"
        );
        assert!(e.message.contains(says), "{}: {}", param, e.message);
        assert!(
            e.message.contains("provider `ant` (anthropic)")
                || param.starts_with("input[0].content"),
            "{}",
            e.message
        );
        let v: Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    // Accepted all the same: `store`, `background: false`, `previous_response_id: null`.
    convert(
        json!({"model": "m", "input": "hi", "store": true, "background": false,
        "previous_response_id": null, "conversation": null, "top_logprobs": 0}),
    );
    // Malformed input: 400 naming the field.
    for (body, param) in [
        (json!({"model": "m"}), "input"),
        (json!({"model": "m", "input": []}), "input"),
        (json!({"model": "m", "input": 5}), "input"),
        (
            json!({"model": "m", "input": [{"role": "tool", "content": "x"}]}),
            "input[0].role",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}),
            "input[0]",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}),
            "input[0].call_id",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "audio"}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"model": "m", "input": "x", "max_output_tokens": 0}),
            "max_output_tokens",
        ),
        (
            json!({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}),
            "text.format.type",
        ),
        (
            json!({"model": "m", "input": "x", "instructions": ["a"]}),
            "instructions",
        ),
    ] {
        assert_eq!(
            refused(body.clone()).param.as_deref(),
            Some(param),
            "{body}"
        );
    }
}

fn echo() -> serde_json::Map<String, Value> {
    convert(json!({"model": "m", "input": "hi", "metadata": {"k": "v"}})).1
}

fn response_of(body: Value) -> Value {
    serde_json::from_slice(&chat_to_response(body.to_string().as_bytes(), &echo(), 7).unwrap())
        .unwrap()
}

#[test]
fn answer_becomes_response_object() {
    let r = response_of(
        json!({"id": "chatcmpl-abc", "created": 99, "model": "claude-x",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
            "content": "Sure", "reasoning_content": "think",
            "tool_calls": [{"id": "call_1", "type": "function",
                            "function": {"name": "f", "arguments": "{\"a\":1}"}},
                           {"id": "call_2", "type": "function",
                            "function": {"name": "g", "arguments": ""}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13,
                  "prompt_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 2},
                  "completion_tokens_details": {"reasoning_tokens": 1}}}),
    );
    assert_eq!(
        (
            r["id"].clone(),
            r["object"].clone(),
            r["created_at"].clone(),
            r["status"].clone(),
            r["model"].clone()
        ),
        (
            json!("resp_abc"),
            json!("response"),
            json!(99),
            json!("completed"),
            json!("claude-x")
        )
    );
    assert_eq!(
        r["output"],
        json!([
            {"id": "rs_abc_0", "type": "reasoning", "status": "completed",
             "summary": [{"type": "summary_text", "text": "think"}]},
            {"id": "msg_abc_1", "type": "message", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Sure", "annotations": [], "logprobs": []}]},
            {"id": "fc_abc_2", "type": "function_call", "status": "completed", "call_id": "call_1",
             "name": "f", "arguments": "{\"a\":1}"},
            {"id": "fc_abc_3", "type": "function_call", "status": "completed", "call_id": "call_2",
             "name": "g", "arguments": "{}"}
        ])
    );
    assert_eq!(
        r["usage"],
        json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 2},
               "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 13})
    );
    assert_eq!(r["metadata"], json!({"k": "v"}));
    assert_eq!(
        (r["error"].clone(), r["incomplete_details"].clone()),
        (Value::Null, Value::Null)
    );
    for key in [
        "parallel_tool_calls",
        "tool_choice",
        "tools",
        "text",
        "instructions",
    ] {
        assert!(r.get(key).is_some(), "{key} missing");
    }

    let cut = response_of(json!({"id": "x", "choices": [{"finish_reason": "length",
        "message": {"content": "Hal"}}]}));
    assert_eq!(cut["status"], "incomplete");
    assert_eq!(
        cut["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(cut["output"][0]["status"], "incomplete");
    assert_eq!(cut["usage"], Value::Null);
    assert_eq!(cut["created_at"], 7);
    assert_eq!(chat_to_response(b"{}", &echo(), 0).unwrap_err().status, 502);
    assert_eq!(
        chat_to_response(b"nope", &echo(), 0).unwrap_err().status,
        502
    );
}

const TEXT_STREAM: &str = "data: {\"id\":\"chatcmpl-c1\",\"created\":5,\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
data: {\"id\":\"chatcmpl-c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n\
data: {\"id\":\"chatcmpl-c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n\
data: {\"id\":\"chatcmpl-c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
data: {\"id\":\"chatcmpl-c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n\
data: [DONE]\n\n";

const TOOL_STREAM: &str = "data: {\"id\":\"c2\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null}}]}\n\n\
data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"Let me see\"}}]}\n\n\
data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Calling\"}}]}\n\n\
data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]}}]}\n\n\
data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"a\\\":\"}}]}}]}\n\n\
data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"\"}}]}}]}\n\n\
data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"1}\"}}]}}]}\n\n\
data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: {\"id\":\"c2\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}\n\n\
data: [DONE]\n\n";

fn run(chunks: &[&[u8]]) -> String {
    let mut s = StreamToResponses::new(echo(), 3);
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        s.feed(c, i + 1 == chunks.len(), &mut out);
    }
    String::from_utf8(out).unwrap()
}

/// The events of a stream: (event name, data), checking each is well formed: the name is the
/// data's `type`, `sequence_number` counts from 0, and the events are `event:`/`data:` pairs.
fn events(s: &str) -> Vec<(String, Value)> {
    assert!(s.ends_with("\n\n"), "{s}");
    let mut out = Vec::new();
    for (i, block) in s.trim_end().split("\n\n").enumerate() {
        let (name, data) = block
            .strip_prefix("event: ")
            .and_then(|b| b.split_once("\ndata: "))
            .unwrap_or_else(|| panic!("bad event {block:?}"));
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["type"], name, "{block}");
        assert_eq!(v["sequence_number"], json!(i), "{block}");
        out.push((name.to_string(), v));
    }
    out
}

fn names(evs: &[(String, Value)]) -> Vec<&str> {
    evs.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn text_stream_becomes_response_events_at_every_split() {
    let whole = run(&[TEXT_STREAM.as_bytes()]);
    let evs = events(&whole);
    assert_eq!(
        names(&evs),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let created = &evs[0].1["response"];
    assert_eq!(
        (
            created["id"].clone(),
            created["status"].clone(),
            created["output"].clone(),
            created["created_at"].clone()
        ),
        (json!("resp_c1"), json!("in_progress"), json!([]), json!(5))
    );
    assert_eq!(
        evs[2].1["item"],
        json!({"id": "msg_c1_0", "type": "message", "status": "in_progress", "role": "assistant", "content": []})
    );
    assert_eq!(
        evs[4].1,
        json!({"type": "response.output_text.delta", "sequence_number": 4, "item_id": "msg_c1_0",
               "output_index": 0, "content_index": 0, "delta": "Hel", "logprobs": []})
    );
    assert_eq!(evs[6].1["text"], "Hello");
    assert_eq!(evs[7].1["part"]["text"], "Hello");
    assert_eq!(evs[8].1["item"]["status"], "completed");
    let done = &evs[9].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["id"], "resp_c1");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
    assert_eq!(
        done["usage"],
        json!({"input_tokens": 9, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
               "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 11})
    );
    assert_eq!(done["metadata"], json!({"k": "v"}));
    let s = TEXT_STREAM.as_bytes();
    for cut in 0..=s.len() {
        assert_eq!(run(&[&s[..cut], &s[cut..]]), whole, "cut {cut}");
    }
}

#[test]
fn tool_stream_becomes_function_call_events() {
    let whole = run(&[TOOL_STREAM.as_bytes()]);
    let evs = events(&whole);
    assert_eq!(
        names(&evs),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added", // reasoning 0
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added", // message 1
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added", // call 2
            "response.function_call_arguments.delta",
            "response.output_item.added", // call 3
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.function_call_arguments.delta", // call 3 streamed no arguments
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(
        evs[14].1["item"],
        json!({"id": "fc_c2_2", "type": "function_call", "status": "in_progress",
               "call_id": "call_1", "name": "f", "arguments": ""})
    );
    assert_eq!(
        (
            evs[17].1["output_index"].clone(),
            evs[17].1["delta"].clone()
        ),
        (json!(2), json!("1}"))
    );
    assert_eq!(evs[18].1["arguments"], "{\"a\":1}");
    assert_eq!(
        evs[19].1["item"],
        json!({"id": "fc_c2_2", "type": "function_call", "status": "completed",
               "call_id": "call_1", "name": "f", "arguments": "{\"a\":1}"})
    );
    assert_eq!(evs[21].1["arguments"], "{}");
    let done = &evs[23].1["response"];
    let types: Vec<&str> = done["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["reasoning", "message", "function_call", "function_call"]
    );
    assert_eq!(done["output"][0]["summary"][0]["text"], "Let me see");
    assert_eq!(done["usage"]["total_tokens"], 13);
    let s = TOOL_STREAM.as_bytes();
    for cut in 0..=s.len() {
        assert_eq!(run(&[&s[..cut], &s[cut..]]), whole, "cut {cut}");
    }
}

#[test]
fn a_cut_answer_ends_incomplete() {
    let stream = TEXT_STREAM.replace("\"stop\"", "\"length\"");
    let evs = events(&run(&[stream.as_bytes()]));
    let (last, v) = evs.last().unwrap();
    assert_eq!(last, "response.incomplete");
    assert_eq!(v["response"]["status"], "incomplete");
    assert_eq!(
        v["response"]["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(v["response"]["output"][0]["status"], "incomplete");
}

#[test]
fn stream_errors_and_drops_end_with_error_and_response_failed() {
    let out = run(&[b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"boom\",\"type\":\"rate_limit_error\"}}\n\ndata: [DONE]\n\n"]);
    let evs = events(&out);
    let n = evs.len();
    assert_eq!(names(&evs[n - 2..]), ["error", "response.failed"]);
    assert_eq!(
        evs[n - 2].1,
        json!({"type": "error", "sequence_number": n - 2, "code": "rate_limit_exceeded",
               "message": "boom", "param": null})
    );
    let failed = &evs[n - 1].1["response"];
    assert_eq!(failed["status"], "failed");
    assert_eq!(
        failed["error"],
        json!({"code": "rate_limit_exceeded", "message": "boom"})
    );
    assert_eq!(failed["output"][0]["status"], "incomplete");
    assert_eq!(failed["output"][0]["content"][0]["text"], "a");

    let out = run(&[
        b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
    ]);
    assert!(out.contains("ended before it finished"), "{out}");
    assert_eq!(events(&out).last().unwrap().0, "response.failed");
    // Nothing at all: the response is still created, then fails.
    let evs = events(&run(&[b""]));
    assert_eq!(
        names(&evs),
        [
            "response.created",
            "response.in_progress",
            "error",
            "response.failed"
        ]
    );
    let evs = events(&run(&[b"data: nope\n\n"]));
    assert!(evs[2].1["message"].as_str().unwrap().contains("unreadable"));
}

/// Nothing follows `response.completed` or `response.failed`: not later chunks, not another
/// error, not the end of the body.
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
    let cut = TEXT_STREAM.find("data: [DONE]").unwrap();
    for (stream, at_end, last) in [
        (TEXT_STREAM, false, "response.completed"),
        (&TEXT_STREAM[..cut], true, "response.completed"),
        (failed, false, "response.failed"),
    ] {
        let alone = run(&[stream.as_bytes()]);
        assert_eq!(events(&alone).last().unwrap().0, last);
        let mut s = StreamToResponses::new(echo(), 3);
        let mut out = Vec::new();
        s.feed(stream.as_bytes(), at_end, &mut out);
        for chunk in late {
            s.feed(chunk, false, &mut out);
        }
        s.feed(b"", true, &mut out);
        s.feed(late[0], true, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), alone);
        let finals = [
            "event: response.completed",
            "event: response.failed",
            "event: response.incomplete",
        ];
        assert_eq!(
            finals
                .iter()
                .map(|f| alone.matches(f).count())
                .sum::<usize>(),
            1
        );
    }
}

/// The text kept for the `.done` events is capped: past it the stream fails saying so, and
/// nothing more is kept or written.
#[test]
fn kept_output_is_capped() {
    let piece = "x".repeat(512 * 1024);
    let chunk = format!(
        "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{piece}\"}}}}]}}\n\n"
    );
    let mut s = StreamToResponses::new(echo(), 0);
    let mut out = Vec::new();
    let rounds = MAX_OUTPUT_BYTES / piece.len() + 4;
    let mut after_fail = None;
    for _ in 0..rounds {
        s.feed(chunk.as_bytes(), false, &mut out);
        if after_fail.is_none() && String::from_utf8_lossy(&out).contains("response.failed") {
            after_fail = Some(out.len());
        }
    }
    s.feed(b"data: [DONE]\n\n", true, &mut out);
    let at = after_fail.expect("the stream failed at the cap");
    assert_eq!(out.len(), at, "nothing after the failure");
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("limit for a translated Responses stream"));
    assert!(text.len() < 3 * MAX_OUTPUT_BYTES);

    // Tool calls: each opens an item; past the item cap the stream fails.
    let mut s = StreamToResponses::new(echo(), 0);
    let mut out = Vec::new();
    let mut body = String::new();
    for i in 0..=MAX_OUTPUT_ITEMS {
        body.push_str(&format!("data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":{i},\"id\":\"k{i}\",\"function\":{{\"name\":\"f\",\"arguments\":\"\"}}}}]}}}}]}}\n\n"));
    }
    s.feed(body.as_bytes(), true, &mut out);
    let evs = events(&String::from_utf8(out).unwrap());
    assert_eq!(evs.last().unwrap().0, "response.failed");
    assert_eq!(
        evs.iter()
            .filter(|(n, _)| n == "response.output_item.added")
            .count(),
        MAX_OUTPUT_ITEMS
    );
}

#[test]
fn garbage_never_panics() {
    let mut rng = crate::test_support::XorShift(0x2545f4914f6cdd1d);
    let alphabet =
        b"{}[]\":,data: \n[DONE]choicesdeltatool_callsindexinputtypemessagefunction_call01";
    let seeds: [&[u8]; 3] = [
        TOOL_STREAM.as_bytes(),
        br#"{"model":"m","input":[{"type":"function_call","call_id":"c","name":"f"},{"type":"function_call_output","call_id":"c","output":[{"type":"input_image","image_url":"u"}]}],"tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"allowed_tools","mode":"auto","tools":[{"type":"function","name":"f"}]}}"#,
        br#"{"id":"x","choices":[{"message":{"content":"a","tool_calls":[{"id":"c","function":{"name":"f"}}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":1}}"#,
    ];
    for round in 0..3000 {
        let bytes = if round % 2 == 0 {
            rng.mutate(seeds[round % 3], alphabet)
        } else {
            let n = rng.below(200);
            rng.bytes(n, alphabet)
        };
        let _ = to_chat_request(&bytes, SERVED_BY, false);
        let _ = chat_to_response(&bytes, &echo(), 0);
        let out = run(&[&bytes[..bytes.len() / 2], &bytes[bytes.len() / 2..]]);
        // Whatever came in, the client gets well-formed events ending in one final event.
        let evs = events(&out);
        let last = evs.last().map(|(n, _)| n.as_str());
        assert!(
            matches!(
                last,
                Some("response.completed" | "response.incomplete" | "response.failed")
            ),
            "{out}"
        );
    }
}

mod through_the_gateway {
    //! A Responses request through [`Gateway`] to Anthropic and Gemini deployments, and to an
    //! OpenAI one (passed through): the provider request, the answer, the stream, the usage.

    use serde_json::{json, Value};

    use crate::config::{Config, ProcessEnv};
    use crate::gateway::{BodyAction, BodyRequest, Endpoint, Gateway};

    const CONFIG: &str = r#"{
        "providers": {
            "ant": {"type": "anthropic", "cluster": "c_ant", "api_key": "sk-a"},
            "gem": {"type": "gemini", "cluster": "c_gem", "api_key": "g-key"},
            "oai": {"type": "openai", "cluster": "c_oai", "api_key": "sk-o"}
        },
        "models": [
            {"name": "claude", "deployments": [{"provider": "ant", "model": "claude-x"}]},
            {"name": "gem", "deployments": [{"provider": "gem", "model": "gemini-x"}]},
            {"name": "gpt", "deployments": [{"provider": "oai", "model": "gpt-x"}]}
        ]
    }"#;

    fn gw() -> Gateway {
        match Config::parse(CONFIG.as_bytes(), &ProcessEnv) {
            Ok(c) => Gateway::new(c, 0),
            Err(e) => panic!("{e:?}"),
        }
    }

    const REQ: BodyRequest<'static> = BodyRequest {
        endpoint: Endpoint::Responses,
        content_type: Some("application/json"),
        key: None,
        now_unix: 100,
        pick: 0,
        anthropic_beta: None,
    };

    fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn anthropic_deployment_whole_answer() {
        let g = gw();
        let body = json!({"model": "claude", "instructions": "Be brief.", "input": "Weather?",
            "max_output_tokens": 50,
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]});
        let f = match g.on_request_body(&REQ, body.to_string().as_bytes()) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(header(&f.set_headers, ":path"), Some("/v1/messages"));
        assert_eq!(header(&f.set_headers, "x-api-key"), Some("sk-a"));
        let sent: Value = serde_json::from_slice(f.body.as_deref().unwrap_or(b"null")).unwrap();
        assert_eq!(sent["model"], "claude-x");
        assert_eq!(sent["max_tokens"], 50);
        assert!(sent["system"] == json!("Be brief.") || sent["system"][0]["text"] == "Be brief.");
        assert_eq!(sent["tools"][0]["name"], "get_weather");
        let mut ex = f.exchange;
        let h = ex.on_response_headers(200, None);
        assert!(h.wait_for_body, "the answer is translated whole");
        let answer = json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 2}})
        .to_string();
        let BodyAction::ReplaceWhole { status, body } =
            ex.on_response_body(answer.as_bytes(), answer.len(), true)
        else {
            panic!("not replaced")
        };
        assert_eq!(status, 200);
        let r: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(r["object"], "response");
        assert_eq!(r["output"][0]["content"][0]["text"], "Checking.");
        assert_eq!(
            (
                r["output"][1]["type"].clone(),
                r["output"][1]["call_id"].clone(),
                r["output"][1]["arguments"].clone()
            ),
            (
                json!("function_call"),
                json!("toolu_1"),
                json!("{\"city\":\"Paris\"}")
            )
        );
        assert_eq!(r["usage"]["input_tokens"], 12);
        assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 2);
        // The gateway's own usage (limits, cost, metrics) is the provider's, as for chat.
        let u = ex.usage().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
            (12, 5, 2)
        );
    }

    #[test]
    fn anthropic_deployment_stream_and_errors() {
        let g = gw();
        let body = json!({"model": "claude", "input": "hi", "stream": true});
        let f = g
            .on_request_body(&REQ, body.to_string().as_bytes())
            .ok()
            .unwrap();
        let sent: Value = serde_json::from_slice(f.body.as_deref().unwrap_or(b"null")).unwrap();
        assert_eq!(sent["stream"], true);
        let mut ex = f.exchange;
        let h = ex.on_response_headers(200, None);
        assert!(h
            .set
            .iter()
            .any(|(k, v)| *k == "content-type" && v.starts_with("text/event-stream")));
        let sse = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_9\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"usage\":{\"input_tokens\":7,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi there\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        let mut out = Vec::new();
        for (i, part) in sse.as_bytes().chunks(40).enumerate() {
            let last = (i + 1) * 40 >= sse.len();
            match ex.on_response_body(part, part.len(), last) {
                BodyAction::Replace(b) => out.extend(b),
                other => panic!("{other:?}"),
            }
        }
        let text = String::from_utf8(out).unwrap();
        let evs = super::events(&text);
        assert_eq!(evs.first().unwrap().0, "response.created");
        let (last, done) = evs.last().unwrap();
        assert_eq!(last, "response.completed");
        assert_eq!(
            done["response"]["output"][0]["content"][0]["text"],
            "Hi there"
        );
        assert_eq!(done["response"]["usage"]["output_tokens"], 3);
        assert_eq!(done["response"]["usage"]["input_tokens"], 7);
        assert_eq!(ex.usage().unwrap().completion_tokens, 3);

        // A provider error: the OpenAI error shape, the provider's status.
        let f = g
            .on_request_body(&REQ, body.to_string().as_bytes())
            .ok()
            .unwrap();
        let mut ex = f.exchange;
        ex.on_response_headers(429, None);
        let err = br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#;
        let BodyAction::ReplaceWhole { status, body } = ex.on_response_body(err, err.len(), true)
        else {
            panic!("not replaced")
        };
        assert_eq!(status, 429);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("slow down"));

        // What the provider cannot do: 400 before anything is sent.
        let e = g
            .on_request_body(
                &REQ,
                br#"{"model":"claude","input":"x","previous_response_id":"resp_1"}"#,
            )
            .err()
            .unwrap();
        assert_eq!(
            (e.status, e.param.as_deref()),
            (400, Some("previous_response_id"))
        );
        assert!(
            e.message.contains("provider `ant` (anthropic)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn gemini_deployment_carries_the_thought_signature_in_the_call_id() {
        let g = gw();
        let body = json!({"model": "gem", "input": "Weather?",
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]});
        let f = g
            .on_request_body(&REQ, body.to_string().as_bytes())
            .ok()
            .unwrap();
        assert_eq!(
            header(&f.set_headers, ":path"),
            Some("/v1beta/models/gemini-x:generateContent")
        );
        let mut ex = f.exchange;
        ex.on_response_headers(200, None);
        let answer = json!({"candidates": [{"index": 0, "finishReason": "STOP", "content": {"role": "model",
            "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                       "thoughtSignature": "c2ln"}]}}],
            "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6},
            "responseId": "r1", "modelVersion": "gemini-x"})
        .to_string();
        let BodyAction::ReplaceWhole { body, .. } =
            ex.on_response_body(answer.as_bytes(), answer.len(), true)
        else {
            panic!("not replaced")
        };
        let r: Value = serde_json::from_slice(&body).unwrap();
        let call = &r["output"][0];
        assert_eq!(call["type"], "function_call");
        let call_id = call["call_id"].as_str().unwrap().to_string();

        // The next turn sends the call back with its output: Gemini gets the signature again.
        let next = json!({"model": "gem", "input": [
            {"role": "user", "content": "Weather?"},
            {"type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": call["arguments"]},
            {"type": "function_call_output", "call_id": call_id, "output": "{\"temp\":20}"}],
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]});
        let f = g
            .on_request_body(&REQ, next.to_string().as_bytes())
            .ok()
            .unwrap();
        let sent: Value = serde_json::from_slice(f.body.as_deref().unwrap_or(b"null")).unwrap();
        let contents = sent["contents"].as_array().unwrap();
        assert_eq!(contents.len(), 3, "{sent}");
        assert_eq!(contents[1]["parts"][0]["thoughtSignature"], "c2ln");
        assert_eq!(
            contents[2]["parts"][0]["functionResponse"]["name"],
            "get_weather"
        );
    }

    #[test]
    fn openai_deployment_passes_through_untouched() {
        let g = gw();
        let body = br#"{"model":"gpt","input":"hi","previous_response_id":"resp_1","tools":[{"type":"web_search"}]}"#;
        let f = g.on_request_body(&REQ, body).ok().unwrap();
        assert_eq!(header(&f.set_headers, ":path"), Some("/v1/responses"));
        let sent: Value = serde_json::from_slice(f.body.as_deref().unwrap_or(b"null")).unwrap();
        assert_eq!(sent["previous_response_id"], "resp_1");
        assert_eq!(sent["model"], "gpt-x");
        let mut ex = f.exchange;
        let h = ex.on_response_headers(200, None);
        assert!(!h.wait_for_body && h.set.iter().all(|(k, _)| *k != "content-type"));
        let answer = br#"{"id":"resp_x","object":"response","usage":{"input_tokens":3,"output_tokens":2,"total_tokens":5}}"#;
        assert_eq!(
            ex.on_response_body(answer, answer.len(), true),
            BodyAction::Continue
        );
        assert_eq!(ex.usage().map(|u| u.total_tokens()), Some(5));
    }
}

/// Codex's default tools: a `namespace` tool (its sub-agent functions grouped) and the hosted
/// `web_search`.
fn codex_like(stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "input": [
        {"type": "message", "role": "user", "content": "go"},
        {"type": "function_call", "call_id": "c0", "name": "spawn_agent",
         "namespace": "collaboration", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c0", "namespace": "collaboration",
         "output": "done"}],
     "tools": [
        {"type": "function", "name": "shell", "parameters": {"type": "object"}},
        {"type": "namespace", "name": "collaboration", "description": "Agents.", "tools": [
            {"type": "function", "name": "spawn_agent", "description": "Spawns an agent.",
             "parameters": {"type": "object"}},
            {"type": "function", "name": "send_message", "parameters": {"type": "object"}}]},
        {"type": "web_search", "external_web_access": false}]})
}

#[test]
fn namespace_tools_are_flattened_and_hosted_ones_dropped_only_when_the_provider_says_so() {
    let body = codex_like(false).to_string();
    let Err(e) = to_chat_request(body.as_bytes(), SERVED_BY, false) else {
        panic!("hosted tool accepted without drop_params");
    };
    assert_eq!(e.param.as_deref(), Some("tools[2].type"));
    assert!(e.message.contains("OpenAI runs itself"), "{}", e.message);
    let r = to_chat_request(body.as_bytes(), SERVED_BY, true).unwrap();
    let out: Value = serde_json::from_slice(&r.body).unwrap();
    let names: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "shell",
            "collaboration__spawn_agent",
            "collaboration__send_message"
        ]
    );
    assert_eq!(
        out["messages"][1]["tool_calls"][0]["function"]["name"],
        "collaboration__spawn_agent"
    );
    // A namespace without tools, or with a non-function tool: 400.
    let e = refused(json!({"model": "m", "input": "x",
        "tools": [{"type": "namespace", "name": "n"}]}));
    assert_eq!(e.param.as_deref(), Some("tools[0].tools"));
    let e = refused(json!({"model": "m", "input": "x",
        "tools": [{"type": "namespace", "name": "n", "tools": [{"type": "custom", "name": "x"}]}]}));
    assert_eq!(e.param.as_deref(), Some("tools[0].tools[0].type"));
}

#[test]
fn a_namespace_functions_call_comes_back_with_its_name_and_namespace() {
    let r = to_chat_request(codex_like(false).to_string().as_bytes(), SERVED_BY, true).unwrap();
    let chat = json!({"id": "x", "created": 1, "model": "m", "choices": [{"index": 0,
        "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "collaboration__send_message", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "shell", "arguments": "{}"}}]}}]});
    let v: Value =
        serde_json::from_slice(&chat_to_response(chat.to_string().as_bytes(), &r.echo, 1).unwrap())
            .unwrap();
    assert_eq!(
        (&v["output"][0]["name"], &v["output"][0]["namespace"]),
        (&json!("send_message"), &json!("collaboration"))
    );
    assert_eq!(v["output"][1]["name"], "shell");
    assert!(v["output"][1].get("namespace").is_none());
    // Streamed: the added and the done item both say so.
    let mut s = StreamToResponses::new(r.echo.clone(), 3);
    let mut out = Vec::new();
    s.feed(
        br#"data: {"id":"x","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"collaboration__send_message","arguments":"{}"}}]}}]}

data: {"id":"x","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}

data: [DONE]

"#,
        true,
        &mut out,
    );
    let evs = events(&String::from_utf8(out).unwrap());
    for kind in ["response.output_item.added", "response.output_item.done"] {
        let (_, e) = evs.iter().find(|(n, _)| n == kind).unwrap();
        assert_eq!(
            (&e["item"]["name"], &e["item"]["namespace"]),
            (&json!("send_message"), &json!("collaboration")),
            "{kind}"
        );
    }
}
