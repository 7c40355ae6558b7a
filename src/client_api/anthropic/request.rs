//! A Messages request → the OpenAI chat-completions request every provider translator accepts
//! (the mapping is in the [module doc](super)). Only for providers other than Anthropic, whose
//! requests go through untouched.
//!
//! What Claude Code sends is the reference (tests/fixtures/anthropic/claude_code_request.json,
//! captured from Claude Code 2.1.332): `system`-role turns inside `messages`, `thinking`
//! (`adaptive` with `output_config.effort`, or `enabled` with `budget_tokens`),
//! `context_management`, `cache_control` on system, message and tool-result blocks, tools with
//! `defer_loading` and results holding `tool_reference` or `image` blocks, `metadata.user_id`.

use serde_json::{json, Map, Value};

use super::Target;
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

/// The OpenAI chat-completions body for a Messages request, for `target` (the token limit's
/// name, whether `thinking` becomes `reasoning_effort`).
///
/// Ignored, with no OpenAI equivalent: `cache_control` wherever it is (OpenAI caches prompt
/// prefixes by itself; TODO: Bedrock cache points), `context_management` (Anthropic edits the
/// context server-side; other providers get the whole history, as sent), `output_config` but
/// its `effort` (see [`reasoning_effort`]) and `format`, `top_k`, `service_tier`, `container`,
/// `inference_geo`.
pub fn to_openai_request(body: &[u8], target: Target) -> Result<Vec<u8>, GatewayError> {
    let req: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        GatewayError::bad_request(format!("request body is not a JSON object: {e}"))
    })?;
    let mut out = Map::new();
    out.insert(
        "model".into(),
        req.get("model").cloned().unwrap_or(Value::Null),
    );
    out.insert("messages".into(), Value::Array(messages(&req)?));
    sampling(&req, target.max_completion_tokens, &mut out);
    if target.reasoning_effort {
        if let Some(effort) = reasoning_effort(&req) {
            out.insert("reasoning_effort".into(), Value::String(effort.into()));
        }
    }
    if let Some(format) = response_format(&req) {
        out.insert("response_format".into(), format);
    }
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

/// Message `i` of the request: a `system` turn as a system message where it stands; else its
/// tool results as `tool` messages, then the turn itself (an assistant turn always; a user turn
/// when it has text or images, its tool results' images included).
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
    if role == "system" {
        // A system turn in the conversation (Claude Code sends its environment and reminders
        // so): OpenAI takes system messages anywhere, so it stays where it is.
        let mut texts = Vec::with_capacity(blocks.len());
        for (j, b) in blocks.iter().enumerate() {
            match str_field(b, "type") {
                "text" => texts.push(str_field(b, "text")),
                other => {
                    return Err(bad(
                        &format!("messages.{i}.content.{j}"),
                        format!("a system message takes text blocks only, not `{other}`"),
                    ))
                }
            }
        }
        let text = texts.join("\n");
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
        return Ok(());
    }
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
    /// The images of the turn's tool results, each group behind a text part naming its call:
    /// they go first in the user message that follows the `tool` messages.
    tool_images: Vec<Value>,
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
            "tool_result" if role == "user" => {
                let (msg, images) = tool_result(at, b)?;
                messages.push(msg);
                if !images.is_empty() {
                    let label = format!("Images returned by tool call {}:", str_field(b, "tool_use_id"));
                    self.tool_images.push(json!({"type": "text", "text": label}));
                    self.tool_images.extend(images);
                }
            }
            // Thinking blocks carry Anthropic's signature, which only Anthropic can verify:
            // another provider can neither check nor use them (Anthropic-protocol deployments
            // get them untouched, with no pivot).
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
    /// single text as a string, else its parts (its tool results' images first); `None` for a
    /// user turn that was only tool results without images.
    fn into_message(self, role: &str) -> Option<Value> {
        if role == "assistant" {
            let text: String = self
                .parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
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
        let mut parts = self.tool_images;
        parts.extend(self.parts);
        if parts.is_empty() {
            return None;
        }
        // One text block is a string; several stay separate text parts: joining them (with a
        // newline, say) would change the prompt the model sees.
        let single = match parts.as_slice() {
            [p] => p.get("text").and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        let content = match single {
            Some(t) => Value::String(t),
            None => Value::Array(parts),
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

/// What a tool result's images become in its `tool` message: OpenAI's tool messages take text
/// only (https://platform.openai.com/docs/api-reference/chat/create, `ChatCompletionRequestToolMessage`:
/// content is a string or text parts), so the images travel in the user message right after
/// the turn's tool messages, and the tool message says so.
const IMAGES_FOLLOW: &str = "(image output follows in the next user message)";

/// A `tool_result` block → a `tool` message (`Error: ` before the text of a failed call) and
/// the result's images as `image_url` parts. Its content: a string, or `text`, `image` and
/// `tool_reference` blocks (Claude Code's ToolSearch answers with the latter: the tools they
/// name are declared in full, see [`tools`]); other blocks → 400.
fn tool_result(at: &str, b: &Value) -> Result<(Value, Vec<Value>), GatewayError> {
    let mut texts: Vec<String> = Vec::new();
    let mut images = Vec::new();
    match b.get("content").unwrap_or(&Value::Null) {
        Value::String(s) => texts.push(s.clone()),
        Value::Array(items) => {
            for (k, item) in items.iter().enumerate() {
                let item_at = format!("{at}.content.{k}");
                match str_field(item, "type") {
                    "text" => texts.push(str_field(item, "text").to_string()),
                    "image" => {
                        let url = image_url(&item_at, item.get("source").unwrap_or(&Value::Null))?;
                        images.push(json!({"type": "image_url", "image_url": {"url": url}}));
                    }
                    "tool_reference" => {
                        texts.push(format!("Tool {} loaded.", str_field(item, "tool_name")))
                    }
                    other => {
                        return Err(bad(
                            &item_at,
                            format!(
                            "`{other}` in a tool result is not supported for this model's provider"
                        ),
                        ))
                    }
                }
            }
        }
        _ => {}
    }
    if !images.is_empty() {
        texts.push(IMAGES_FOLLOW.to_string());
    }
    let mut text = texts.join("\n");
    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
        text = format!("Error: {text}");
    }
    let msg = json!({
        "role": "tool",
        "tool_call_id": str_field(b, "tool_use_id"),
        "content": text,
    });
    Ok((msg, images))
}

/// `reasoning_effort` for the request's `thinking` (only sent to models that take it, see
/// [`Target`]): `output_config.effort` when given (xhigh/max → high: every translator knows
/// low/medium/high), else for `enabled` the budget (< 4096 low, < 16384 medium, else high —
/// the inverse of the Anthropic translator's 1024/4096/16384); `adaptive` without an effort
/// lets the provider choose (none sent), `disabled` sends none.
fn reasoning_effort(req: &Map<String, Value>) -> Option<&'static str> {
    let thinking = req.get("thinking")?;
    let effort = req
        .get("output_config")
        .and_then(|c| c.get("effort"))
        .and_then(Value::as_str);
    let from_effort = |e: &str| match e {
        "low" => "low",
        "medium" => "medium",
        _ => "high",
    };
    match thinking.get("type").and_then(Value::as_str) {
        Some("adaptive") => effort.map(from_effort),
        Some("enabled") => Some(match effort {
            Some(e) => from_effort(e),
            None => match thinking.get("budget_tokens").and_then(Value::as_u64) {
                Some(n) if n < 4096 => "low",
                Some(n) if n < 16384 => "medium",
                _ => "high",
            },
        }),
        _ => None,
    }
}

/// `output_config.format` (`{"type":"json_schema","schema":{...}}`, Anthropic's structured
/// outputs, https://docs.anthropic.com/en/docs/build-with-claude/structured-outputs) → OpenAI's
/// `response_format` `json_schema`.
fn response_format(req: &Map<String, Value>) -> Option<Value> {
    let format = req.get("output_config")?.get("format")?;
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return None;
    }
    let schema = format.get("schema")?.clone();
    Some(json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}))
}

/// The longest `metadata.user_id` sent as it is in OpenAI's `user`: OpenAI-compatible services
/// cap the field (OpenRouter at 128 characters, others at 64) and Claude Code's is a JSON object
/// of about 150 (https://github.com/ujisati/claude-code-provider-proxy/pull/11,
/// https://github.com/looplj/axonhub/issues/1669).
const MAX_USER: usize = 64;

/// OpenAI's `user` for a `metadata.user_id`: as it is when short and made of `[A-Za-z0-9_-]`
/// (the pattern some services enforce, e.g. DeepSeek:
/// https://github.com/aattaran/deepclaude/issues/17), else `u_` and the first 32 hex digits of
/// its SHA-256 (stable per user, and opaque as Anthropic asks the id to be).
fn openai_user(id: &str) -> String {
    let plain = id.len() <= MAX_USER
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        return id.to_string();
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(id.as_bytes());
    format!("u_{}", crate::aws::sigv4::hex(&digest[..16]))
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
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    {
        out.insert("user".into(), Value::String(openai_user(user)));
    }
}

/// The client tools as OpenAI functions; `None` when there are none. Server tools → 400.
///
/// A tool with `defer_loading: true` (Anthropic's tool search: the model sees it once a
/// `tool_reference` in a tool result names it,
/// https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/tool-search-tool) is declared
/// only when a tool result of the conversation references it: the other providers have no
/// deferred tools, and this keeps what the model sees the same (Claude Code's
/// `DeferredToolPlaceholder`, never to be called, is never sent). `cache_control`, `strict`,
/// `input_examples` and `allowed_callers` are dropped.
fn tools(req: &Map<String, Value>) -> Result<Option<Value>, GatewayError> {
    let Some(tools) = req.get("tools").and_then(Value::as_array) else {
        return Ok(None);
    };
    let referenced = referenced_tools(req);
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
        let name = str_field(t, "name");
        if t.get("defer_loading").and_then(Value::as_bool) == Some(true)
            && !referenced.contains(name)
        {
            continue;
        }
        let parameters = t
            .get("input_schema")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let mut f = json!({"name": name, "parameters": parameters});
        if let Some(d) = t.get("description").and_then(Value::as_str) {
            f["description"] = Value::String(d.to_string());
        }
        fns.push(json!({"type": "function", "function": f}));
    }
    Ok((!fns.is_empty()).then_some(Value::Array(fns)))
}

/// The tool names the conversation's tool results reference (`tool_reference` blocks).
fn referenced_tools(req: &Map<String, Value>) -> std::collections::HashSet<&str> {
    let mut names = std::collections::HashSet::new();
    let messages = req.get("messages").and_then(Value::as_array);
    for m in messages.into_iter().flatten() {
        let Some(blocks) = m.get("content").and_then(Value::as_array) else {
            continue;
        };
        for b in blocks
            .iter()
            .filter(|b| str_field(b, "type") == "tool_result")
        {
            let Some(items) = b.get("content").and_then(Value::as_array) else {
                continue;
            };
            for item in items {
                if str_field(item, "type") == "tool_reference" {
                    names.insert(str_field(item, "tool_name"));
                }
            }
        }
    }
    names
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
