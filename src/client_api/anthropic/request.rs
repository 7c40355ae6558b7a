//! A Messages request → the OpenAI chat-completions request every provider translator accepts
//! (the mapping is in the [module doc](super)). Only for providers other than Anthropic, whose
//! requests go through untouched.

use serde_json::{json, Map, Value};

use crate::error::GatewayError;

fn bad(param: &str, msg: impl Into<String>) -> GatewayError {
    GatewayError::invalid_param(param, msg)
}

/// Text of a `system` value or a `tool_result` content: a string, or text blocks joined.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A string field of a block, `""` when missing.
fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The OpenAI chat-completions body for a Messages request. `max_completion_tokens` picks the
/// name of the token limit field (see the module doc).
pub fn to_openai_request(
    body: &[u8],
    max_completion_tokens: bool,
) -> Result<Vec<u8>, GatewayError> {
    let req: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        GatewayError::bad_request(format!("request body is not a JSON object: {e}"))
    })?;
    let mut out = Map::new();
    out.insert(
        "model".into(),
        req.get("model").cloned().unwrap_or(Value::Null),
    );
    out.insert("messages".into(), Value::Array(messages(&req)?));
    sampling(&req, max_completion_tokens, &mut out);
    if let Some(tools) = tools(&req)? {
        out.insert("tools".into(), tools);
    }
    tool_choice(&req, &mut out)?;
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    serde_json::to_vec(&out)
        .map_err(|e| GatewayError::new(500, "api_error", format!("serialising: {e}")))
}

/// The OpenAI messages: `system` first, then every turn (a user turn's tool results before the
/// rest of it).
fn messages(req: &Map<String, Value>) -> Result<Vec<Value>, GatewayError> {
    let mut messages = Vec::new();
    if let Some(system) = req.get("system") {
        let text = text_of(system);
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let items = req
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for (i, m) in items.iter().enumerate() {
        push_turn(i, m, &mut messages)?;
    }
    Ok(messages)
}

/// Message `i` of the request: its tool results as `tool` messages, then the turn itself (an
/// assistant turn always; a user turn when it has text or images).
fn push_turn(i: usize, m: &Value, messages: &mut Vec<Value>) -> Result<(), GatewayError> {
    let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
    let single;
    let blocks: &[Value] = match m.get("content").unwrap_or(&Value::Null) {
        Value::String(s) => {
            single = [json!({"type": "text", "text": s})];
            &single
        }
        Value::Array(b) => b,
        _ => {
            return Err(bad(
                &format!("messages.{i}.content"),
                "must be a string or an array of content blocks",
            ))
        }
    };
    let mut turn = Turn::default();
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("messages.{i}.content.{j}");
        turn.add(&at, role, b, messages)?;
    }
    if let Some(msg) = turn.into_message(role) {
        messages.push(msg);
    }
    Ok(())
}

/// One turn's content blocks as OpenAI pieces.
#[derive(Default)]
struct Turn {
    /// `text` and `image_url` parts.
    parts: Vec<Value>,
    /// An assistant turn's `tool_calls`.
    tool_calls: Vec<Value>,
}

impl Turn {
    /// Block `at` of a `role` turn. A tool result becomes a `tool` message in `messages` at
    /// once: OpenAI wants results right after the assistant turn that called the tools.
    fn add(
        &mut self,
        at: &str,
        role: &str,
        b: &Value,
        messages: &mut Vec<Value>,
    ) -> Result<(), GatewayError> {
        match str_field(b, "type") {
            "text" => {
                let t = str_field(b, "text");
                self.parts.push(json!({"type": "text", "text": t}));
            }
            "image" if role == "user" => {
                let url = image_url(at, b.get("source").unwrap_or(&Value::Null))?;
                self.parts
                    .push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            "tool_use" if role == "assistant" => self.tool_calls.push(tool_call(b)),
            "tool_result" if role == "user" => messages.push(tool_result(b)),
            "thinking" | "redacted_thinking" => {}
            other => {
                return Err(bad(
                    at,
                    format!("content block `{other}` in a {role} message is not supported for this model's provider"),
                ))
            }
        }
        Ok(())
    }

    /// The OpenAI message of the turn: an assistant's text joined and its tool calls; a user's
    /// single text as a string, else its parts; `None` for a user turn that was only tool
    /// results.
    fn into_message(self, role: &str) -> Option<Value> {
        let texts = self
            .parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str));
        if role == "assistant" {
            let text: String = texts.collect();
            let content = if text.is_empty() {
                Value::Null
            } else {
                Value::String(text)
            };
            let mut msg = json!({"role": "assistant", "content": content});
            if !self.tool_calls.is_empty() {
                msg["tool_calls"] = Value::Array(self.tool_calls);
            }
            return Some(msg);
        }
        if self.parts.is_empty() {
            return None;
        }
        // One text block is a string; several stay separate text parts: joining them (with a
        // newline, say) would change the prompt the model sees.
        let single = match self.parts.as_slice() {
            [p] => p.get("text").and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        let content = match single {
            Some(t) => Value::String(t),
            None => Value::Array(self.parts),
        };
        Some(json!({"role": "user", "content": content}))
    }
}

/// The URL of an `image` block's `source`: a `data:` URL for base64, the URL as it is for url.
fn image_url(at: &str, src: &Value) -> Result<String, GatewayError> {
    match src.get("type").and_then(Value::as_str) {
        Some("base64") => Ok(format!(
            "data:{};base64,{}",
            src.get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png"),
            str_field(src, "data")
        )),
        Some("url") => Ok(str_field(src, "url").to_string()),
        _ => Err(bad(at, "image `source` must be base64 or url")),
    }
}

/// A `tool_use` block → an OpenAI tool call, its input as JSON text.
fn tool_call(b: &Value) -> Value {
    let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
    json!({
        "id": str_field(b, "id"),
        "type": "function",
        "function": {
            "name": str_field(b, "name"),
            "arguments": input.to_string(),
        }
    })
}

/// A `tool_result` block → a `tool` message (`Error: ` before the text of a failed call).
fn tool_result(b: &Value) -> Value {
    let mut text = text_of(b.get("content").unwrap_or(&Value::Null));
    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
        text = format!("Error: {text}");
    }
    json!({
        "role": "tool",
        "tool_call_id": str_field(b, "tool_use_id"),
        "content": text,
    })
}

/// The token limit, `temperature`, `top_p`, `stop` and `user`.
fn sampling(req: &Map<String, Value>, max_completion_tokens: bool, out: &mut Map<String, Value>) {
    if let Some(n) = req.get("max_tokens") {
        let key = if max_completion_tokens {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        out.insert(key.into(), n.clone());
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = req.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(stop) = req.get("stop_sequences").filter(|v| !v.is_null()) {
        out.insert("stop".into(), stop.clone());
    }
    if let Some(user) = req
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .filter(|v| v.is_string())
    {
        out.insert("user".into(), user.clone());
    }
}

/// The client tools as OpenAI functions; `None` when there are none. Server tools → 400.
fn tools(req: &Map<String, Value>) -> Result<Option<Value>, GatewayError> {
    let Some(tools) = req.get("tools").and_then(Value::as_array) else {
        return Ok(None);
    };
    let mut fns = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        if t.get("type")
            .and_then(Value::as_str)
            .is_some_and(|ty| ty != "custom")
        {
            return Err(bad(
                &format!("tools.{i}.type"),
                "server tools are not supported for this model's provider",
            ));
        }
        let parameters = t
            .get("input_schema")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let mut f = json!({"name": str_field(t, "name"), "parameters": parameters});
        if let Some(d) = t.get("description").and_then(Value::as_str) {
            f["description"] = Value::String(d.to_string());
        }
        fns.push(json!({"type": "function", "function": f}));
    }
    Ok((!fns.is_empty()).then_some(Value::Array(fns)))
}

/// `tool_choice` (and `parallel_tool_calls: false` for `disable_parallel_tool_use`), sent only
/// with tools; checked either way.
fn tool_choice(req: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), GatewayError> {
    let Some(choice) = req.get("tool_choice").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let mapped = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            json!({"type": "function", "function": {"name": str_field(choice, "name")}})
        }
        _ => {
            return Err(bad(
                "tool_choice",
                "`tool_choice.type` must be auto, any, tool or none",
            ))
        }
    };
    if out.contains_key("tools") {
        out.insert("tool_choice".into(), mapped);
        if choice
            .get("disable_parallel_tool_use")
            .and_then(Value::as_bool)
            == Some(true)
        {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    Ok(())
}
