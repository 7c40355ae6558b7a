//! A whole OpenAI `chat.completion` → an Anthropic `message` (the answer to a non-streamed
//! Messages request sent to a provider other than Anthropic), and the pieces of a `message`
//! the stream writer shares: its id, stop reason and usage.

use serde_json::{json, Value};

use crate::error::GatewayError;

pub(super) fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic `usage` from an OpenAI `usage` object.
pub(super) fn usage_of(u: &Value) -> Value {
    let prompt = u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
    let cached = u
        .pointer("/prompt_tokens_details/cached_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let written = u
        .pointer("/prompt_tokens_details/cache_write_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    json!({
        "input_tokens": prompt.saturating_sub(cached).saturating_sub(written),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
        "output_tokens": u.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0),
    })
}

pub(super) fn message_id(openai_id: Option<&str>) -> String {
    match openai_id {
        Some(id) if id.starts_with("msg_") => id.to_string(),
        Some(id) if !id.is_empty() => format!("msg_{id}"),
        _ => "msg_llmux".to_string(),
    }
}

/// An OpenAI `chat.completion` → an Anthropic `message`.
pub fn openai_response_to_message(body: &[u8]) -> Result<Vec<u8>, GatewayError> {
    let v = crate::client_api::pivot::parse_chat_answer(body)?;
    let choice = &v["choices"][0];
    let msg = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    if let Some(t) = msg
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": t}));
    }
    if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            let args = c
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or("");
            let input: Value = serde_json::from_str(args)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            content.push(json!({
                "type": "tool_use",
                "id": c.get("id").and_then(Value::as_str).unwrap_or(""),
                "name": c.pointer("/function/name").and_then(Value::as_str).unwrap_or(""),
                "input": input,
            }));
        }
    }
    let out = json!({
        "id": message_id(v.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": v.get("model").cloned().unwrap_or(Value::Null),
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason").and_then(Value::as_str)),
        "stop_sequence": Value::Null,
        "usage": usage_of(v.get("usage").unwrap_or(&Value::Null)),
    });
    serde_json::to_vec(&out)
        .map_err(|e| GatewayError::new(500, "api_error", format!("serialising: {e}")))
}
