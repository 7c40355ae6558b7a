//! A whole OpenAI `chat.completion` → a Responses `response` object (the answer to a
//! non-streamed request sent to a provider that does not speak OpenAI's protocol), and the
//! pieces the stream writer shares: ids, status, usage and the object's envelope.
//!
//! Shapes: openai/openai-python `src/openai/types/responses/response.py` (`Response`: `id`,
//! `object: "response"`, `created_at`, `status`, `model`, `output`, `usage`, `error`,
//! `incomplete_details` and the repeated request fields), `response_output_message.py` and
//! `response_output_text.py` (`message` items, `output_text` parts with `annotations`),
//! `response_function_tool_call.py` (`function_call` items: `id`, `call_id`, `name`,
//! `arguments`, `status`), `response_reasoning_item.py` (`reasoning` items with `summary`
//! parts of type `summary_text`), `response_usage.py` (`input_tokens`, `input_tokens_details
//! {cached_tokens, cache_write_tokens}`, `output_tokens`, `output_tokens_details
//! {reasoning_tokens}`, `total_tokens`).

use serde_json::{json, Map, Value};

use crate::error::GatewayError;

/// The ids of one answer, all made from the provider's id (`chatcmpl-x`, `msg_x`, ... → `x`).
pub(super) struct Ids {
    base: String,
}

impl Ids {
    /// From the chat answer's id; `fallback` (e.g. the time) when the provider gave none.
    pub(super) fn new(chat_id: Option<&str>, fallback: u64) -> Self {
        let id = chat_id.unwrap_or("");
        let base = ["chatcmpl-", "chatcmpl_", "resp_", "msg_"]
            .iter()
            .find_map(|p| id.strip_prefix(p))
            .unwrap_or(id);
        // Ids go into JSON strings only; keep them short and plain all the same.
        let base: String = base
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .take(96)
            .collect();
        let base = if base.is_empty() {
            format!("llmux{fallback}")
        } else {
            base
        };
        Ids { base }
    }

    pub(super) fn response(&self) -> String {
        format!("resp_{}", self.base)
    }

    pub(super) fn message(&self, n: usize) -> String {
        format!("msg_{}_{n}", self.base)
    }

    pub(super) fn reasoning(&self, n: usize) -> String {
        format!("rs_{}_{n}", self.base)
    }

    pub(super) fn function_call(&self, n: usize) -> String {
        format!("fc_{}_{n}", self.base)
    }
}

/// The response's status and `incomplete_details` for a chat finish reason.
pub(super) fn status_of(finish: Option<&str>) -> (&'static str, Value) {
    match finish {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// Responses `usage` from a chat `usage` object (`null` when the provider gave none).
pub(super) fn usage_of(u: Option<&Value>) -> Value {
    let Some(u) = u.filter(|u| u.is_object()) else {
        return Value::Null;
    };
    let n = |p: &str| u.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let input = n("/prompt_tokens");
    let output = n("/completion_tokens");
    let total = u
        .get("total_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(input.saturating_add(output));
    json!({
        "input_tokens": input,
        "input_tokens_details": {
            "cached_tokens": n("/prompt_tokens_details/cached_tokens"),
            "cache_write_tokens": n("/prompt_tokens_details/cache_write_tokens"),
        },
        "output_tokens": output,
        "output_tokens_details": {
            "reasoning_tokens": n("/completion_tokens_details/reasoning_tokens"),
        },
        "total_tokens": total,
    })
}

/// What a `response` object holds besides the repeated request fields.
pub(super) struct Envelope<'a> {
    pub id: &'a str,
    pub created_at: u64,
    pub model: &'a Value,
    pub status: &'static str,
    pub output: Vec<Value>,
    pub usage: Value,
    pub error: Value,
    pub incomplete_details: Value,
}

/// The `response` object: the answer's fields and the request's, as `echo` holds them.
pub(super) fn response_object(e: Envelope<'_>, echo: &Map<String, Value>) -> Value {
    let mut m = echo.clone();
    m.insert("id".into(), Value::String(e.id.to_string()));
    m.insert("object".into(), json!("response"));
    m.insert("created_at".into(), json!(e.created_at));
    m.insert("status".into(), json!(e.status));
    m.insert("model".into(), e.model.clone());
    m.insert("output".into(), Value::Array(e.output));
    m.insert("usage".into(), e.usage);
    m.insert("error".into(), e.error);
    m.insert("incomplete_details".into(), e.incomplete_details);
    Value::Object(m)
}

/// A `message` item with one `output_text` part.
pub(super) fn message_item(id: &str, status: &str, text: &str) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant",
        "content": [output_text(text)]})
}

/// An `output_text` content part.
pub(super) fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A `reasoning` item with one summary part.
pub(super) fn reasoning_item(id: &str, status: &str, text: &str) -> Value {
    json!({"id": id, "type": "reasoning", "status": status,
        "summary": [{"type": "summary_text", "text": text}]})
}

/// A `function_call` item (arguments `{}` when the provider streamed none, so they parse).
pub(super) fn function_call_item(
    echo: &Map<String, Value>,
    id: &str,
    status: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
) -> Value {
    let arguments = if arguments.is_empty() {
        "{}"
    } else {
        arguments
    };
    let mut item = json!({"id": id, "type": "function_call", "status": status,
        "call_id": call_id, "arguments": arguments});
    name_call(&mut item, echo, name);
    item
}

/// A function call's `name` (and `namespace`, for a namespace tool's function) as the client
/// declared them.
pub(super) fn name_call(item: &mut Value, echo: &Map<String, Value>, flat: &str) {
    let (name, ns) = super::unflatten(echo, flat);
    if let Some(o) = item.as_object_mut() {
        o.insert("name".into(), Value::String(name.to_string()));
        if let Some(ns) = ns {
            o.insert("namespace".into(), Value::String(ns.to_string()));
        }
    }
}

/// An OpenAI `chat.completion` → a `response` object. `now_unix` stands in for a missing
/// `created`.
pub fn chat_to_response(
    body: &[u8],
    echo: &Map<String, Value>,
    now_unix: u64,
) -> Result<Vec<u8>, GatewayError> {
    let v = crate::client_api::pivot::parse_chat_answer(body)?;
    let choice = &v["choices"][0];
    let msg = choice.get("message").unwrap_or(&Value::Null);
    let ids = Ids::new(v.get("id").and_then(Value::as_str), now_unix);
    let (status, incomplete_details) =
        status_of(choice.get("finish_reason").and_then(Value::as_str));
    let nonempty = |key: &str| {
        msg.get(key)
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    };
    let mut output = Vec::new();
    if let Some(r) = nonempty("reasoning_content") {
        output.push(reasoning_item(&ids.reasoning(output.len()), "completed", r));
    }
    if let Some(t) = nonempty("content") {
        output.push(message_item(&ids.message(output.len()), status, t));
    }
    if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            let s = |p: &str| c.pointer(p).and_then(Value::as_str).unwrap_or("");
            output.push(function_call_item(
                echo,
                &ids.function_call(output.len()),
                "completed",
                s("/id"),
                s("/function/name"),
                s("/function/arguments"),
            ));
        }
    }
    let out = response_object(
        Envelope {
            id: &ids.response(),
            created_at: v.get("created").and_then(Value::as_u64).unwrap_or(now_unix),
            model: v.get("model").unwrap_or(&Value::Null),
            status,
            output,
            usage: usage_of(v.get("usage")),
            error: Value::Null,
            incomplete_details,
        },
        echo,
    );
    serde_json::to_vec(&out)
        .map_err(|e| GatewayError::new(500, "api_error", format!("serialising: {e}")))
}
