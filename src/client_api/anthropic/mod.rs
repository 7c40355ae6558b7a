//! The Anthropic Messages API as clients speak it to the gateway (`POST /v1/messages`), so the
//! `anthropic` SDK and Claude-compatible tools can use any model.
//!
//! Requests for an Anthropic deployment go through untouched but for the model name. For any
//! other provider the request is rewritten to an OpenAI chat-completions request — the pivot
//! every provider translator already accepts — and the OpenAI answer (whole or streamed) is
//! rewritten back into a Messages answer.
//!
//! Mapping decisions (Anthropic → OpenAI):
//! - `system` (string or text blocks) → a first `system` message.
//! - user `text`/`image` blocks → content parts (`image` base64 → `data:` URL; URL images kept);
//!   `tool_result` blocks → `tool` messages placed before the rest of that user turn (OpenAI
//!   wants results right after the assistant's tool calls); assistant `tool_use` → `tool_calls`
//!   with the input as JSON text; `thinking`/`redacted_thinking` blocks are dropped (no OpenAI
//!   equivalent to send back); `document` and server tools → 400.
//! - `tools` → functions (`input_schema` → `parameters`); `tool_choice` auto/any/tool/none →
//!   auto/required/named/none; `disable_parallel_tool_use` → `parallel_tool_calls: false`.
//! - `max_tokens` → `max_completion_tokens` for OpenAI and Azure (their reasoning models refuse
//!   `max_tokens`), `max_tokens` elsewhere (many OpenAI-compatible services only know that one);
//!   `stop_sequences` → `stop`; `temperature`, `top_p` kept; `metadata.user_id` → `user`;
//!   `top_k` and `thinking` dropped (no OpenAI equivalent).
//!
//! Answers: text → a `text` block, tool calls → `tool_use` blocks (arguments parsed; unparsable
//! arguments become `{}`), finish reasons stop/length/tool_calls/content_filter →
//! end_turn/max_tokens/tool_use/refusal, usage: `input_tokens` = prompt − cached,
//! `cache_read_input_tokens` = cached, `output_tokens` = completion.

pub mod translator;

use serde_json::{json, Map, Value};

use crate::client_api::openai::ChatEnvelope;
use crate::error::GatewayError;
use crate::sse::{write_event, SseEvent, SseParser};

/// Parses and validates the top level of an Anthropic Messages request (`/v1/messages`).
pub fn parse_messages_envelope(body: &[u8]) -> Result<ChatEnvelope<'_>, GatewayError> {
    let mut env = crate::client_api::openai::envelope::parse_top(body)?;
    validate_envelope(&env)?;
    env.stream = crate::client_api::openai::envelope::stream_flag(&env)?;
    Ok(env)
}

/// Validates the top level of a Messages request (the fields the gateway needs).
pub fn validate_envelope(env: &ChatEnvelope<'_>) -> Result<(), GatewayError> {
    let messages = env
        .field("messages")
        .ok_or_else(crate::client_api::openai::envelope::messages_required)?;
    match serde_json::from_str::<Value>(messages.get()) {
        Ok(Value::Array(items)) if !items.is_empty() => {
            for (i, m) in items.iter().enumerate() {
                match m.get("role").and_then(Value::as_str) {
                    Some("user") | Some("assistant") => {}
                    _ => {
                        return Err(GatewayError::invalid_param(
                            &format!("messages.{i}.role"),
                            "each message needs `role` `user` or `assistant`",
                        ))
                    }
                }
            }
        }
        _ => {
            return Err(GatewayError::invalid_param(
                "messages",
                "`messages` must be a non-empty array",
            ))
        }
    }
    match env.field("max_tokens").map(|r| r.get().parse::<u64>()) {
        Some(Ok(n)) if n >= 1 => Ok(()),
        _ => Err(GatewayError::invalid_param(
            "max_tokens",
            "`max_tokens` is required and must be a positive integer",
        )),
    }
}

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
    let mut messages = Vec::new();
    if let Some(system) = req.get("system") {
        let text = text_of(system);
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let empty = Vec::new();
    let items = req
        .get("messages")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for (i, m) in items.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
        let content = m.get("content").unwrap_or(&Value::Null);
        let blocks: Vec<Value> = match content {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(b) => b.clone(),
            _ => {
                return Err(bad(
                    &format!("messages.{i}.content"),
                    "must be a string or an array of content blocks",
                ))
            }
        };
        let mut parts = Vec::new();
        let mut tool_calls = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            match b.get("type").and_then(Value::as_str).unwrap_or("") {
                "text" => {
                    let t = b.get("text").and_then(Value::as_str).unwrap_or("");
                    parts.push(json!({"type": "text", "text": t}));
                }
                "image" if role == "user" => {
                    let src = b.get("source").unwrap_or(&Value::Null);
                    let url = match src.get("type").and_then(Value::as_str) {
                        Some("base64") => format!(
                            "data:{};base64,{}",
                            src.get("media_type").and_then(Value::as_str).unwrap_or("image/png"),
                            src.get("data").and_then(Value::as_str).unwrap_or("")
                        ),
                        Some("url") => src.get("url").and_then(Value::as_str).unwrap_or("").to_string(),
                        _ => return Err(bad(&at, "image `source` must be base64 or url")),
                    };
                    parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                }
                "tool_use" if role == "assistant" => {
                    let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                    tool_calls.push(json!({
                        "id": b.get("id").and_then(Value::as_str).unwrap_or(""),
                        "type": "function",
                        "function": {
                            "name": b.get("name").and_then(Value::as_str).unwrap_or(""),
                            "arguments": input.to_string(),
                        }
                    }));
                }
                "tool_result" if role == "user" => {
                    // Results go right after the assistant turn that called the tools.
                    let mut text = text_of(b.get("content").unwrap_or(&Value::Null));
                    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                        text = format!("Error: {text}");
                    }
                    messages.push(json!({
                        "role": "tool",
                        "tool_call_id": b.get("tool_use_id").and_then(Value::as_str).unwrap_or(""),
                        "content": text,
                    }));
                }
                "thinking" | "redacted_thinking" => {}
                other => {
                    return Err(bad(
                        &at,
                        format!("content block `{other}` in a {role} message is not supported for this model's provider"),
                    ))
                }
            }
        }
        if role == "assistant" {
            let text: String = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            let mut msg = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }});
            if !tool_calls.is_empty() {
                msg["tool_calls"] = Value::Array(tool_calls);
            }
            messages.push(msg);
        } else if !parts.is_empty() {
            let only_text = parts.iter().all(|p| p["type"] == "text");
            let content = if only_text {
                Value::String(
                    parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            } else {
                Value::Array(parts)
            };
            messages.push(json!({"role": "user", "content": content}));
        }
    }
    out.insert("messages".into(), Value::Array(messages));
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
    if let Some(tools) = req.get("tools").and_then(Value::as_array) {
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
            let mut f = json!({
                "name": t.get("name").and_then(Value::as_str).unwrap_or(""),
                "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
            if let Some(d) = t.get("description").and_then(Value::as_str) {
                f["description"] = Value::String(d.to_string());
            }
            fns.push(json!({"type": "function", "function": f}));
        }
        if !fns.is_empty() {
            out.insert("tools".into(), Value::Array(fns));
        }
    }
    if let Some(choice) = req.get("tool_choice").filter(|v| !v.is_null()) {
        let mapped = match choice.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                json!({"type": "function", "function": {"name": choice.get("name").and_then(Value::as_str).unwrap_or("")}})
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
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    serde_json::to_vec(&out)
        .map_err(|e| GatewayError::new(500, "api_error", format!("serialising: {e}")))
}

fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic `usage` from an OpenAI `usage` object.
fn usage_of(u: &Value) -> Value {
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

fn message_id(openai_id: Option<&str>) -> String {
    match openai_id {
        Some(id) if id.starts_with("msg_") => id.to_string(),
        Some(id) if !id.is_empty() => format!("msg_{id}"),
        _ => "msg_llmux".to_string(),
    }
}

/// An OpenAI `chat.completion` → an Anthropic `message`.
pub fn openai_response_to_message(body: &[u8]) -> Result<Vec<u8>, GatewayError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::new(
            502,
            "api_error",
            format!("provider answer is not JSON: {e}"),
        )
    })?;
    let choice = v
        .pointer("/choices/0")
        .ok_or_else(|| GatewayError::new(502, "api_error", "provider answer has no choices"))?;
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

/// The Anthropic error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// `{"type":"error","error":{"type","message"}}`.
pub fn error_body(e: &GatewayError) -> Vec<u8> {
    json!({"type": "error", "error": {"type": error_type(e.status), "message": e.message}})
        .to_string()
        .into_bytes()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Block {
    Text,
    Tool,
}

/// Rewrites an OpenAI `chat.completion.chunk` stream into Anthropic Messages stream events,
/// safe at any chunk boundary.
#[derive(Default)]
pub struct StreamToMessages {
    sse: SseParser,
    started: bool,
    /// The open content block and its index.
    open: Option<(Block, usize)>,
    next_index: usize,
    /// OpenAI tool-call index → whether its block was started.
    tools_seen: Vec<u64>,
    finish: Option<String>,
    usage: Option<Value>,
    done: bool,
}

impl StreamToMessages {
    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) {
        // The parser lends each event from its buffers: out of `self` while it feeds us.
        let mut sse = std::mem::take(&mut self.sse);
        sse.feed(chunk, &mut |e| self.event(e, out));
        if end_of_stream {
            sse.finish(&mut |e| self.event(e, out));
        }
        self.sse = sse;
        if end_of_stream && !self.done {
            if self.finish.is_some() {
                self.close(out);
            } else {
                self.fail("the provider's stream ended before it finished", 502, out);
            }
        }
    }

    fn event(&mut self, e: SseEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let data = e.text();
        if data.trim() == "[DONE]" {
            if self.finish.is_some() || self.started {
                self.close(out);
            }
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            self.fail("the provider sent an unreadable stream event", 502, out);
            return;
        };
        if let Some(err) = v.get("error") {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("provider error");
            self.fail(msg, 502, out);
            return;
        }
        if !self.started {
            self.started = true;
            let start = json!({"type": "message_start", "message": {
                "id": message_id(v.get("id").and_then(Value::as_str)),
                "type": "message", "role": "assistant",
                "model": v.get("model").cloned().unwrap_or(Value::Null),
                "content": [], "stop_reason": Value::Null, "stop_sequence": Value::Null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}});
            write_event(out, "message_start", start.to_string().as_bytes());
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = v.pointer("/choices/0") else {
            return;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(t) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            let index = self.ensure_block(Block::Text, None, out);
            let ev = json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}});
            write_event(out, "content_block_delta", ev.to_string().as_bytes());
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for c in calls {
                let k = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                if !self.tools_seen.contains(&k) {
                    self.tools_seen.push(k);
                    let start = (
                        c.get("id")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        c.pointer("/function/name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    );
                    self.ensure_block(Block::Tool, Some(start), out);
                }
                if let Some(args) = c
                    .pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .filter(|a| !a.is_empty())
                {
                    if let Some((Block::Tool, index)) = self.open {
                        let ev = json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": args}});
                        write_event(out, "content_block_delta", ev.to_string().as_bytes());
                    }
                }
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_string());
        }
    }

    /// Opens a block of `kind` unless one is open (a new tool call always opens a new block).
    fn ensure_block(
        &mut self,
        kind: Block,
        tool: Option<(String, String)>,
        out: &mut Vec<u8>,
    ) -> usize {
        if let (Some((open, index)), None) = (self.open, &tool) {
            if open == kind {
                return index;
            }
        }
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        let block = match tool {
            Some((id, name)) => json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
            None => json!({"type": "text", "text": ""}),
        };
        let ev = json!({"type": "content_block_start", "index": index, "content_block": block});
        write_event(out, "content_block_start", ev.to_string().as_bytes());
        self.open = Some((kind, index));
        index
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            let ev = json!({"type": "content_block_stop", "index": index});
            write_event(out, "content_block_stop", ev.to_string().as_bytes());
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        self.close_block(out);
        let usage = usage_of(self.usage.as_ref().unwrap_or(&Value::Null));
        let ev = json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": Value::Null},
            "usage": usage});
        write_event(out, "message_delta", ev.to_string().as_bytes());
        write_event(out, "message_stop", br#"{"type":"message_stop"}"#);
        self.done = true;
    }

    fn fail(&mut self, message: &str, status: u16, out: &mut Vec<u8>) {
        let e = GatewayError::new(status, "api_error", message);
        write_event(out, "error", &error_body(&e));
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_messages_envelope;
    use super::*;

    fn convert(body: Value) -> Value {
        serde_json::from_slice(&to_openai_request(body.to_string().as_bytes(), true).unwrap())
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
                r#"{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}"#,
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
        let e = to_openai_request(doc.to_string().as_bytes(), true).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages.0.content.0"));
        let server_tool = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305", "name": "web_search"}]});
        assert_eq!(
            to_openai_request(server_tool.to_string().as_bytes(), true)
                .unwrap_err()
                .param
                .as_deref(),
            Some("tools.0.type")
        );
        let plain = json!({"model": "m", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "x"}]});
        let out: Value = serde_json::from_slice(
            &to_openai_request(plain.to_string().as_bytes(), false).unwrap(),
        )
        .unwrap();
        assert_eq!(out["max_tokens"], 5);
        assert_eq!(out["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn response_becomes_message() {
        let body = json!({"id": "chatcmpl-1", "model": "gpt", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "Sure", "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}});
        let m: Value = serde_json::from_slice(
            &openai_response_to_message(body.to_string().as_bytes()).unwrap(),
        )
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

    #[test]
    fn garbage_never_panics() {
        let mut rng = crate::test_support::XorShift(0x2545f4914f6cdd1d);
        let alphabet = b"{}[]\":,data: \n[DONE]choicesdeltatool_callsindex01";
        for _ in 0..2000 {
            let n = rng.below(200);
            let bytes = rng.bytes(n, alphabet);
            let _ = to_openai_request(&bytes, true);
            let _ = openai_response_to_message(&bytes);
            let _ = run(&[&bytes[..n / 2], &bytes[n / 2..]]);
        }
    }
}
