//! Cohere v2 Chat (`POST /v2/chat`): strict validation, JSON and SSE replies (PROVIDERS.md §7).

use serde_json::{json, Value};

pub use crate::mock::last_user_text;
use crate::mock::{assemble_stream, MockHeaders, Plan};
/// Cohere declares tools in OpenAI's shape.
pub use crate::openai::tool_names;

const FIELDS: &[&str] = &[
    "model",
    "messages",
    "tools",
    "strict_tools",
    "documents",
    "citation_options",
    "response_format",
    "safety_mode",
    "max_tokens",
    "stop_sequences",
    "temperature",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "k",
    "p",
    "logprobs",
    "tool_choice",
    "thinking",
    "priority",
    "stream",
];

/// `{"message": ...}` error body.
pub fn error_body(message: &str) -> Vec<u8> {
    json!({ "message": message }).to_string().into_bytes()
}

pub fn status_message(status: u16) -> &'static str {
    match status {
        400 => "invalid request: the request is malformed",
        401 => "invalid api token",
        404 => "model not found",
        429 => "You are using a Trial key, which is limited to 10 API calls / minute.",
        _ => "internal server error, this has been reported to our developers",
    }
}

/// The request's problems, as Cohere words them (`invalid request: ...`).
pub fn validate(body: &Value) -> Result<(), String> {
    let o = body
        .as_object()
        .ok_or("invalid request: body must be a JSON object")?;
    for k in o.keys() {
        if !FIELDS.contains(&k.as_str()) {
            return Err(format!(
                "invalid request: unknown field: parameter {k} is not a valid field"
            ));
        }
    }
    if o.get("model")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("invalid request: model must be a non-empty string".into());
    }
    let messages = o
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("invalid request: messages must be a non-empty array")?;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        match role {
            "system" | "user" => {
                if m.get("content").is_none_or(Value::is_null) {
                    return Err(format!("invalid request: messages[{i}].content is required"));
                }
            }
            "assistant" => {
                if m.get("content").is_some_and(Value::is_null) {
                    return Err(format!("invalid request: messages[{i}].content must not be null"));
                }
            }
            "tool" => {
                if !m.get("tool_call_id").is_some_and(Value::is_string) {
                    return Err(format!("invalid request: messages[{i}].tool_call_id is required"));
                }
            }
            other => return Err(format!("invalid request: messages[{i}].role `{other}` is not one of system, user, assistant, tool")),
        }
    }
    if let Some(tc) = o.get("tool_choice") {
        if !matches!(tc.as_str(), Some("REQUIRED") | Some("NONE")) {
            return Err("invalid request: tool_choice must be REQUIRED or NONE".into());
        }
    }
    for k in ["p", "temperature"] {
        if let Some(v) = o.get(k) {
            if !v
                .as_f64()
                .is_some_and(|x| (0.0..=if k == "p" { 1.0 } else { 2.0 }).contains(&x))
            {
                return Err(format!("invalid request: {k} is out of range"));
            }
        }
    }
    if let Some(s) = o.get("stop_sequences") {
        if !s.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
            return Err("invalid request: stop_sequences must be an array of strings".into());
        }
    }
    Ok(())
}

fn finish(plan: &Plan, mock: &MockHeaders) -> String {
    match &mock.finish {
        Some(f) => f.clone(),
        None if !plan.tool_calls.is_empty() => "TOOL_CALL".into(),
        None => "COMPLETE".into(),
    }
}

fn usage(plan: &Plan) -> Value {
    json!({
        "billed_units": {"input_tokens": plan.input_tokens, "output_tokens": plan.output_tokens},
        "tokens": {"input_tokens": plan.input_tokens, "output_tokens": plan.output_tokens},
        "cached_tokens": plan.cache_read,
    })
}

pub fn chat_body(id: &str, plan: &Plan, mock: &MockHeaders) -> Vec<u8> {
    let mut message = json!({"role": "assistant", "content": []});
    if let Some(t) = &plan.text {
        message["content"] = json!([{"type": "text", "text": t}]);
    }
    if !plan.tool_calls.is_empty() {
        message["tool_plan"] = json!("I will call the tools.");
        message["tool_calls"] = plan
            .tool_calls
            .iter()
            .map(|c| {
                json!({"id": format!("call_mock_{}", c.index), "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect();
    }
    json!({"id": id, "finish_reason": finish(plan, mock), "message": message, "usage": usage(plan)})
        .to_string()
        .into_bytes()
}

fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

pub fn stream_body(id: &str, plan: &Plan, mock: &MockHeaders) -> Vec<u8> {
    let mut events = vec![event(
        "message-start",
        json!({"id": id, "type": "message-start", "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}}),
    )];
    let mut index = 0;
    if plan.text.is_some() {
        events.push(event("content-start", json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}})));
        for d in &plan.deltas {
            events.push(event("content-delta", json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": d}}}})));
        }
        events.push(event(
            "content-end",
            json!({"type": "content-end", "index": 0}),
        ));
        index = 1;
    }
    for c in &plan.tool_calls {
        let i = index + c.index;
        events.push(event("tool-call-start", json!({"type": "tool-call-start", "index": i, "delta": {"message": {"tool_calls": {"id": format!("call_mock_{}", c.index), "type": "function", "function": {"name": c.name, "arguments": ""}}}}})));
        for piece in crate::mock::split_chars(&c.arguments, crate::mock::ARG_PIECE) {
            events.push(event("tool-call-delta", json!({"type": "tool-call-delta", "index": i, "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}}})));
        }
        events.push(event(
            "tool-call-end",
            json!({"type": "tool-call-end", "index": i}),
        ));
    }
    let terminal = event(
        "message-end",
        json!({"type": "message-end", "delta": {"finish_reason": finish(plan, mock), "usage": usage(plan)}}),
    );
    let error = event(
        "message-end",
        json!({"type": "message-end", "delta": {"finish_reason": "ERROR", "error": "internal error while generating"}}),
    );
    assemble_stream(&events, &terminal, &error, mock).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let ok = json!({"model": "command-a", "messages": [{"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "r"}], "p": 0.5, "tool_choice": "REQUIRED"});
        assert_eq!(validate(&ok), Ok(()));
        for bad in [
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 0.5}),
            json!({"model": "m", "messages": [{"role": "developer", "content": "x"}]}),
            json!({"model": "m", "messages": [{"role": "assistant", "content": null}]}),
            json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": "auto"}),
            json!({"model": "m", "messages": []}),
        ] {
            assert!(validate(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stream_ends_with_message_end() {
        let plan = Plan::build(&MockHeaders::default(), "hi", &[], 10);
        let s = String::from_utf8(stream_body("id", &plan, &MockHeaders::default())).unwrap();
        assert!(s.starts_with("event: message-start"));
        assert!(s
            .trim_end()
            .rsplit("\n\n")
            .next()
            .unwrap()
            .starts_with("event: message-end"));
    }
}
