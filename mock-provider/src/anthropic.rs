//! Anthropic Messages API: strict request validation, responses (JSON and SSE) and error bodies.
//!
//! Extended thinking: a request with `"thinking": {"type": "enabled", ...}` gets a `thinking`
//! block first (`Thinking about: <first 40 characters of the last user text>`), with a signature
//! the mock can check ([`thinking_signature`]). As the real API does, a `thinking` block sent
//! back needs its `signature` (a mock one must match its text: `Invalid signature`), and with
//! thinking on, the assistant turn that a final tool result answers must start with its
//! `thinking` or `redacted_thinking` block — so a gateway that drops or alters thinking blocks
//! is refused. (`adaptive` thinking: the mock chooses not to think.)

pub use crate::mock::last_user_text;
use crate::mock::{self, Event, MockHeaders, Plan};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

const TOP_LEVEL: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "metadata",
    "stream",
    "service_tier",
    "output_config",
    "cache_control",
    "container",
    "inference_geo",
    // Context editing: only with the `context-management-2025-06-27` beta (the server checks
    // the `anthropic-beta` header, see `server::anthropic_reply`).
    "context_management",
];

const BLOCK_TAGS: &str =
    "'text', 'image', 'document', 'tool_use', 'tool_result', 'thinking', 'redacted_thinking'";

/// Error type and default message for an HTTP status, as the real API uses them.
pub fn error_kind(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request_error", "Invalid request (mock-injected)."),
        401 => ("authentication_error", "invalid x-api-key"),
        402 => (
            "billing_error",
            "Your credit balance is too low to access the Anthropic API.",
        ),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        404 => ("not_found_error", "Not found"),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        429 => (
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit.",
        ),
        500 => ("api_error", "Internal server error"),
        504 => ("timeout_error", "Request timed out"),
        529 => ("overloaded_error", "Overloaded"),
        s if s >= 500 => ("api_error", "Internal server error"),
        _ => ("invalid_request_error", "Invalid request (mock-injected)."),
    }
}

/// `{"type":"error","error":{"type","message"},"request_id"}`.
pub fn error_body(kind: &str, message: &str, request_id: &str) -> Vec<u8> {
    json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": request_id,
    })
    .to_string()
    .into_bytes()
}

type VResult = Result<(), String>;

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "dictionary",
    }
}

fn obj<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object().ok_or_else(|| {
        format!(
            "{path}: Input should be a valid dictionary (got {})",
            type_name(v)
        )
    })
}

fn string<'a>(v: &'a Value, path: &str) -> Result<&'a str, String> {
    v.as_str().ok_or_else(|| {
        format!(
            "{path}: Input should be a valid string (got {})",
            type_name(v)
        )
    })
}

fn required<'a>(o: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a Value, String> {
    o.get(key)
        .ok_or_else(|| format!("{}: Field required", join(path, key)))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn no_extra(o: &Map<String, Value>, allowed: &[&str], path: &str) -> VResult {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("{}: Extra inputs are not permitted", join(path, k))),
        None => Ok(()),
    }
}

fn bool_field(v: &Value, path: &str) -> VResult {
    if v.is_boolean() {
        Ok(())
    } else {
        Err(format!("{path}: Input should be a valid boolean"))
    }
}

fn number_in(v: &Value, path: &str, lo: f64, hi: f64) -> VResult {
    let x = v
        .as_f64()
        .ok_or_else(|| format!("{path}: Input should be a valid number"))?;
    if x < lo {
        return Err(format!(
            "{path}: Input should be greater than or equal to {lo}"
        ));
    }
    if x > hi {
        return Err(format!(
            "{path}: Input should be less than or equal to {hi}"
        ));
    }
    Ok(())
}

fn integer(v: &Value, path: &str) -> Result<i64, String> {
    match v.as_i64() {
        Some(i) => Ok(i),
        None if v.is_u64() => Ok(i64::MAX),
        None => Err(format!("{path}: Input should be a valid integer")),
    }
}

/// Validates a Messages API request body the way the real API does (strictly).
/// The error is the message of a 400 `invalid_request_error`, naming the field path.
pub fn validate(body: &Value) -> VResult {
    let o = body
        .as_object()
        .ok_or_else(|| "body: Input should be a valid dictionary".to_string())?;
    no_extra(o, TOP_LEVEL, "")?;

    let model = required(o, "model", "")?;
    if string(model, "model")?.is_empty() {
        return Err("model: String should have at least 1 character".into());
    }
    let max_tokens = integer(required(o, "max_tokens", "")?, "max_tokens")?;
    if max_tokens < 1 {
        return Err("max_tokens: Input should be greater than or equal to 1".into());
    }

    let tool_names = validate_tools(o)?;
    validate_messages(required(o, "messages", "")?)?;

    if let Some(system) = o.get("system") {
        match system {
            Value::String(_) => {}
            Value::Array(items) => {
                for (k, item) in items.iter().enumerate() {
                    let p = format!("system.{k}");
                    let b = obj(item, &p)?;
                    let t = string(required(b, "type", &p)?, &format!("{p}.type"))?;
                    if t != "text" {
                        return Err(format!("{p}.type: Input should be 'text'"));
                    }
                    no_extra(b, &["type", "text", "cache_control", "citations"], &p)?;
                    text_field(b, &p)?;
                }
            }
            _ => {
                return Err(
                    "system: Input should be a valid string or a list of text blocks".into(),
                )
            }
        }
    }
    if let Some(v) = o.get("temperature") {
        number_in(v, "temperature", 0.0, 1.0)?;
    }
    if let Some(v) = o.get("top_p") {
        number_in(v, "top_p", 0.0, 1.0)?;
    }
    if let Some(v) = o.get("top_k") {
        if integer(v, "top_k")? < 0 {
            return Err("top_k: Input should be greater than or equal to 0".into());
        }
    }
    if let Some(v) = o.get("stop_sequences") {
        let items = v
            .as_array()
            .ok_or_else(|| "stop_sequences: Input should be a valid list".to_string())?;
        for (k, s) in items.iter().enumerate() {
            string(s, &format!("stop_sequences.{k}"))?;
        }
    }
    if let Some(v) = o.get("stream") {
        bool_field(v, "stream")?;
    }
    if let Some(v) = o.get("metadata") {
        let m = obj(v, "metadata")?;
        no_extra(m, &["user_id"], "metadata")?;
        if let Some(u) = m.get("user_id") {
            if !u.is_null() {
                string(u, "metadata.user_id")?;
            }
        }
    }
    if let Some(v) = o.get("service_tier") {
        match v.as_str() {
            Some("auto") | Some("standard_only") => {}
            _ => return Err("service_tier: Input should be 'auto' or 'standard_only'".into()),
        }
    }
    if let Some(v) = o.get("thinking") {
        validate_thinking(v, max_tokens)?;
        if v.get("type").and_then(Value::as_str) == Some("enabled") {
            thinking_before_tool_use(&o["messages"])?;
        }
    }
    if let Some(v) = o.get("output_config") {
        obj(v, "output_config")?;
    }
    if let Some(v) = o.get("tool_choice") {
        validate_tool_choice(v, &tool_names)?;
    }
    Ok(())
}

fn text_field(b: &Map<String, Value>, p: &str) -> VResult {
    let text = string(required(b, "text", p)?, &format!("{p}.text"))?;
    if text.is_empty() {
        return Err(format!("{p}.text: text content blocks must be non-empty"));
    }
    Ok(())
}

fn validate_thinking(v: &Value, max_tokens: i64) -> VResult {
    let t = obj(v, "thinking")?;
    let ty = string(required(t, "type", "thinking")?, "thinking.type")?;
    match ty {
        "enabled" => {
            no_extra(t, &["type", "budget_tokens", "display"], "thinking")?;
            let b = integer(
                required(t, "budget_tokens", "thinking")?,
                "thinking.budget_tokens",
            )?;
            if b < 1024 {
                return Err("thinking.budget_tokens: Input should be greater than or equal to 1024".into());
            }
            if b >= max_tokens {
                return Err("thinking.budget_tokens: `max_tokens` must be greater than `thinking.budget_tokens`".into());
            }
        }
        "disabled" => no_extra(t, &["type"], "thinking")?,
        "adaptive" => no_extra(t, &["type", "display"], "thinking")?,
        other => {
            return Err(format!(
                "thinking.type: Input tag '{other}' found using 'type' does not match any of the expected tags: 'enabled', 'disabled', 'adaptive'"
            ))
        }
    }
    Ok(())
}

/// Prefix of the signatures the mock gives its thinking blocks.
pub const SIGNATURE_PREFIX: &str = "mocksig_";

/// The signature of a thinking block the mock wrote: its text's digest, so a block sent back
/// with another text or signature is told apart.
pub fn thinking_signature(thinking: &str) -> String {
    let d = Sha256::digest(format!("llmux-mock-thinking:{thinking}").as_bytes());
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{SIGNATURE_PREFIX}{hex}")
}

/// The thinking text of the answer to `body`, when it turns thinking on.
fn thinking_text(body: &Value) -> Option<String> {
    (body.pointer("/thinking/type").and_then(Value::as_str) == Some("enabled")).then(|| {
        format!(
            "Thinking about: {}",
            mock::first_chars(&last_user_text(body), 40)
        )
    })
}

/// With thinking enabled, the assistant turn a final user turn of tool results answers must
/// start with its thinking (the real API's rule for tool use with extended thinking).
fn thinking_before_tool_use(messages: &Value) -> VResult {
    let Some(msgs) = messages.as_array() else {
        return Ok(());
    };
    let turns: Vec<(usize, &Value)> = msgs
        .iter()
        .enumerate()
        .filter(|(_, m)| m.get("role").and_then(Value::as_str) != Some("system"))
        .collect();
    let [.., (i, assistant), (_, last)] = turns[..] else {
        return Ok(());
    };
    let has_result = last
        .get("content")
        .and_then(Value::as_array)
        .is_some_and(|b| {
            b.iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        });
    if !has_result || assistant.get("role").and_then(Value::as_str) != Some("assistant") {
        return Ok(());
    }
    let first = assistant
        .pointer("/content/0/type")
        .and_then(Value::as_str)
        .unwrap_or("text");
    if first == "thinking" || first == "redacted_thinking" {
        return Ok(());
    }
    Err(format!(
        "messages.{i}.content.0.type: Expected `thinking` or `redacted_thinking`, but found `{first}`. When `thinking` is enabled, a final `assistant` message must start with a thinking block (the one before the last `tool_use` and `tool_result` blocks): send back the thinking blocks of previous turns."
    ))
}

fn validate_tools(o: &Map<String, Value>) -> Result<Vec<String>, String> {
    let Some(tools) = o.get("tools") else {
        return Ok(Vec::new());
    };
    let items = tools
        .as_array()
        .ok_or_else(|| "tools: Input should be a valid list".to_string())?;
    let mut names: Vec<String> = Vec::with_capacity(items.len());
    for (k, tool) in items.iter().enumerate() {
        let p = format!("tools.{k}");
        let t = obj(tool, &p)?;
        let name = string(required(t, "name", &p)?, &format!("{p}.name"))?;
        let server_tool =
            matches!(t.get("type").and_then(Value::as_str), Some(ty) if ty != "custom");
        if !server_tool {
            no_extra(
                t,
                &[
                    "type",
                    "name",
                    "description",
                    "input_schema",
                    "cache_control",
                    "strict",
                    "defer_loading",
                    "input_examples",
                    "allowed_callers",
                ],
                &p,
            )?;
            let valid_name = !name.is_empty()
                && name.len() <= 128
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_name {
                return Err(format!(
                    "{p}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
                ));
            }
            if let Some(d) = t.get("description") {
                string(d, &format!("{p}.description"))?;
            }
            let schema = obj(
                required(t, "input_schema", &p)?,
                &format!("{p}.input_schema"),
            )?;
            if schema.get("type").and_then(Value::as_str) != Some("object") {
                return Err(format!("{p}.input_schema.type: Input should be 'object'"));
            }
        }
        if names.iter().any(|n| n == name) {
            return Err(format!(
                "tools: Tool names must be unique (duplicate: {name})"
            ));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

fn validate_tool_choice(v: &Value, tool_names: &[String]) -> VResult {
    let c = obj(v, "tool_choice")?;
    let ty = string(required(c, "type", "tool_choice")?, "tool_choice.type")?;
    match ty {
        "auto" | "any" | "none" => {
            no_extra(c, &["type", "disable_parallel_tool_use"], "tool_choice")?;
        }
        "tool" => {
            no_extra(c, &["type", "name", "disable_parallel_tool_use"], "tool_choice")?;
            let name = string(required(c, "name", "tool_choice")?, "tool_choice.name")?;
            if !tool_names.iter().any(|n| n == name) {
                return Err(format!(
                    "tool_choice.name: Tool '{name}' not found in provided tools"
                ));
            }
        }
        other => {
            return Err(format!(
                "tool_choice.type: Input tag '{other}' found using 'type' does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"
            ))
        }
    }
    if let Some(d) = c.get("disable_parallel_tool_use") {
        bool_field(d, "tool_choice.disable_parallel_tool_use")?;
    }
    Ok(())
}

fn validate_messages(v: &Value) -> VResult {
    let msgs = v
        .as_array()
        .ok_or_else(|| "messages: Input should be a valid list".to_string())?;
    if msgs.is_empty() {
        return Err("messages: List should have at least 1 item after validation, not 0".into());
    }
    let mut prev_role: Option<&str> = None;
    // tool_use ids of the previous message (when it was an assistant message).
    let mut prev_tool_ids: Vec<String> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let p = format!("messages.{i}");
        let mo = obj(m, &p)?;
        no_extra(mo, &["role", "content"], &p)?;
        let role = string(required(mo, "role", &p)?, &format!("{p}.role"))?;
        match role {
            "user" | "assistant" => {}
            // A system turn inside the conversation, as Claude Code 2.1.332 sends it to the
            // first-party API for its newest models (its environment, reminders): text only;
            // it takes no part in the alternation or the tool_use/tool_result pairing.
            "system" if i > 0 => {
                validate_system_turn(required(mo, "content", &p)?, &p)?;
                continue;
            }
            "system" => {
                return Err(format!(
                    "{p}.role: Unexpected role \"system\". The Messages API accepts a top-level `system` parameter, not \"system\" as an input message role."
                ))
            }
            _ => return Err(format!("{p}.role: Input should be 'user' or 'assistant'")),
        }
        if i == 0 && role != "user" {
            return Err(format!(
                "{p}.role: first message must use the \"user\" role"
            ));
        }
        if prev_role == Some(role) {
            return Err(format!(
                "{p}.role: roles must alternate between \"user\" and \"assistant\", but found multiple \"{role}\" roles in a row"
            ));
        }
        let content = required(mo, "content", &p)?;
        let cp = format!("{p}.content");
        let mut tool_ids = Vec::new();
        let mut result_ids = Vec::new();
        match content {
            Value::String(s) => {
                if s.is_empty() {
                    return Err(format!("{cp}: text content must be non-empty"));
                }
            }
            Value::Array(blocks) => {
                if blocks.is_empty() {
                    return Err(format!(
                        "{cp}: List should have at least 1 item after validation, not 0"
                    ));
                }
                for (j, b) in blocks.iter().enumerate() {
                    let bp = format!("{cp}.{j}");
                    validate_block(b, &bp, role, &prev_tool_ids, &mut tool_ids, &mut result_ids)?;
                }
            }
            other => {
                return Err(format!(
                    "{cp}: Input should be a valid string or a list of content blocks (got {})",
                    type_name(other)
                ))
            }
        }
        // Every tool_use of the previous assistant message needs its tool_result here.
        let missing: Vec<&str> = prev_tool_ids
            .iter()
            .filter(|id| !result_ids.contains(id))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{p}: `tool_use` ids were found without `tool_result` blocks immediately after: {}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",
                missing.join(", ")
            ));
        }
        prev_tool_ids = tool_ids;
        prev_role = Some(role);
    }
    Ok(())
}

fn validate_system_turn(content: &Value, p: &str) -> VResult {
    let cp = format!("{p}.content");
    match content {
        Value::String(s) if !s.is_empty() => Ok(()),
        Value::Array(blocks) if !blocks.is_empty() => {
            for (j, b) in blocks.iter().enumerate() {
                let bp = format!("{cp}.{j}");
                let bo = obj(b, &bp)?;
                if bo.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(format!("{bp}.type: Input should be 'text'"));
                }
                no_extra(bo, &["type", "text", "cache_control"], &bp)?;
                text_field(bo, &bp)?;
            }
            Ok(())
        }
        _ => Err(format!(
            "{cp}: a system message needs a non-empty string or text blocks"
        )),
    }
}

fn validate_block(
    b: &Value,
    p: &str,
    role: &str,
    prev_tool_ids: &[String],
    tool_ids: &mut Vec<String>,
    result_ids: &mut Vec<String>,
) -> VResult {
    let bo = obj(b, p)?;
    let ty = string(required(bo, "type", p)?, &format!("{p}.type"))?;
    match ty {
        "text" => {
            no_extra(bo, &["type", "text", "cache_control", "citations"], p)?;
            text_field(bo, p)?;
        }
        "image" => validate_image(bo, p)?,
        "tool_use" => {
            if role != "assistant" {
                return Err(format!(
                    "{p}: `tool_use` blocks are only allowed in assistant messages"
                ));
            }
            no_extra(bo, &["type", "id", "name", "input", "cache_control", "caller"], p)?;
            let id = string(required(bo, "id", p)?, &format!("{p}.id"))?;
            string(required(bo, "name", p)?, &format!("{p}.name"))?;
            obj(required(bo, "input", p)?, &format!("{p}.input"))?;
            tool_ids.push(id.to_string());
        }
        "tool_result" => {
            if role != "user" {
                return Err(format!(
                    "{p}: `tool_result` blocks are only allowed in user messages"
                ));
            }
            no_extra(
                bo,
                &["type", "tool_use_id", "content", "is_error", "cache_control"],
                p,
            )?;
            let id = string(
                required(bo, "tool_use_id", p)?,
                &format!("{p}.tool_use_id"),
            )?;
            if !prev_tool_ids.iter().any(|t| t == id) {
                return Err(format!(
                    "{p}.tool_use_id: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                ));
            }
            result_ids.push(id.to_string());
            if let Some(c) = bo.get("content") {
                let cp = format!("{p}.content");
                match c {
                    Value::String(_) => {}
                    Value::Array(items) => {
                        for (k, item) in items.iter().enumerate() {
                            let ip = format!("{cp}.{k}");
                            let io = obj(item, &ip)?;
                            match io.get("type").and_then(Value::as_str) {
                                Some("text") => {
                                    no_extra(
                                        io,
                                        &["type", "text", "cache_control", "citations"],
                                        &ip,
                                    )?;
                                    text_field(io, &ip)?;
                                }
                                Some("image") => validate_image(io, &ip)?,
                                Some(other) => {
                                    return Err(format!(
                                        "{ip}.type: Input tag '{other}' found using 'type' does not match any of the expected tags: 'text', 'image'"
                                    ))
                                }
                                None => return Err(format!("{ip}.type: Field required")),
                            }
                        }
                    }
                    other => {
                        return Err(format!(
                            "{cp}: Input should be a valid string or a list of content blocks (got {})",
                            type_name(other)
                        ))
                    }
                }
            }
            if let Some(e) = bo.get("is_error") {
                bool_field(e, &format!("{p}.is_error"))?;
            }
        }
        "thinking" => {
            no_extra(bo, &["type", "thinking", "signature"], p)?;
            let text = string(required(bo, "thinking", p)?, &format!("{p}.thinking"))?;
            let sig = string(required(bo, "signature", p)?, &format!("{p}.signature"))?;
            if sig.starts_with(SIGNATURE_PREFIX) && sig != thinking_signature(text) {
                return Err(format!("{p}: Invalid `signature` in `thinking` block"));
            }
        }
        "redacted_thinking" => {
            no_extra(bo, &["type", "data"], p)?;
            string(required(bo, "data", p)?, &format!("{p}.data"))?;
        }
        "document" => {
            no_extra(
                bo,
                &["type", "source", "title", "context", "citations", "cache_control"],
                p,
            )?;
            obj(required(bo, "source", p)?, &format!("{p}.source"))?;
        }
        other => {
            return Err(format!(
                "{p}.type: Input tag '{other}' found using 'type' does not match any of the expected tags: {BLOCK_TAGS}"
            ))
        }
    }
    Ok(())
}

fn validate_image(bo: &Map<String, Value>, p: &str) -> VResult {
    no_extra(bo, &["type", "source", "cache_control"], p)?;
    let sp = format!("{p}.source");
    let s = obj(required(bo, "source", p)?, &sp)?;
    let ty = string(required(s, "type", &sp)?, &format!("{sp}.type"))?;
    match ty {
        "base64" => {
            no_extra(s, &["type", "media_type", "data"], &sp)?;
            let mt = string(
                required(s, "media_type", &sp)?,
                &format!("{sp}.media_type"),
            )?;
            if !matches!(mt, "image/jpeg" | "image/png" | "image/gif" | "image/webp") {
                return Err(format!(
                    "{sp}.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
                ));
            }
            string(required(s, "data", &sp)?, &format!("{sp}.data"))?;
        }
        "url" => {
            no_extra(s, &["type", "url"], &sp)?;
            string(required(s, "url", &sp)?, &format!("{sp}.url"))?;
        }
        other => {
            return Err(format!(
                "{sp}.type: Input tag '{other}' found using 'type' does not match any of the expected tags: 'base64', 'url'"
            ))
        }
    }
    Ok(())
}

/// Text of the last `tool_result` block (for `x-mock-tool-use`): its string, or its text blocks
/// joined, an image block as `[image]`; `None` when there is none.
pub fn last_tool_result(body: &Value) -> Option<String> {
    let messages = body.get("messages")?.as_array()?;
    let result = messages
        .iter()
        .filter_map(|m| m.get("content").and_then(Value::as_array))
        .flatten()
        .rfind(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))?;
    Some(match result.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i.get("type").and_then(Value::as_str) {
                Some("text") => i.get("text").and_then(Value::as_str).unwrap_or(""),
                Some("image") => "[image]",
                _ => "",
            })
            .collect(),
        _ => String::new(),
    })
}

/// Names of the request's tools, in order.
pub fn tool_names(body: &Value) -> Vec<String> {
    body.get("tools")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Stop reason and stop sequence of the reply.
fn stop(plan: &Plan, mock: &MockHeaders, body: &Value) -> (String, Value) {
    let reason = match (&mock.finish, plan.tool_calls.is_empty()) {
        (Some(f), _) => f.clone(),
        (None, false) => "tool_use".to_string(),
        (None, true) => "end_turn".to_string(),
    };
    let seq = if reason == "stop_sequence" {
        let first = body
            .get("stop_sequences")
            .and_then(Value::as_array)
            .and_then(|s| s.first())
            .and_then(Value::as_str)
            .unwrap_or("END");
        Value::String(first.to_string())
    } else {
        Value::Null
    };
    (reason, seq)
}

fn usage(plan: &Plan, output_tokens: u64) -> Value {
    json!({
        "input_tokens": plan.input_tokens,
        "cache_creation_input_tokens": plan.cache_creation,
        "cache_read_input_tokens": plan.cache_read,
        "output_tokens": output_tokens,
    })
}

/// Non-streaming `message` body.
pub fn message_body(
    id: &str,
    model: &str,
    plan: &Plan,
    mock: &MockHeaders,
    body: &Value,
) -> Vec<u8> {
    let mut content = Vec::new();
    if let Some(t) = thinking_text(body) {
        let signature = thinking_signature(&t);
        content.push(json!({"type": "thinking", "thinking": t, "signature": signature}));
    }
    if let Some(t) = &plan.text {
        content.push(json!({"type": "text", "text": t}));
    }
    for c in &plan.tool_calls {
        let input: Value = serde_json::from_str(&c.arguments).unwrap_or(Value::Null);
        content.push(json!({
            "type": "tool_use",
            "id": format!("toolu_mock_{}", c.index),
            "name": c.name,
            "input": input,
        }));
    }
    let (reason, seq) = stop(plan, mock, body);
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": seq,
        "usage": usage(plan, plan.output_tokens),
    })
    .to_string()
    .into_bytes()
}

fn usage_json(plan: &Plan, output_tokens: u64) -> String {
    format!(
        "{{\"input_tokens\":{},\"cache_creation_input_tokens\":{},\"cache_read_input_tokens\":{},\"output_tokens\":{}}}",
        plan.input_tokens, plan.cache_creation, plan.cache_read, output_tokens
    )
}

/// Normal stream events (everything before `message_stop`). JSON is written by hand, in the
/// real API's key order, because this is the benchmark hot path.
pub fn stream_events(
    id: &str,
    model: &str,
    plan: &Plan,
    mock: &MockHeaders,
    body: &Value,
) -> Vec<Event> {
    let mut ev = Vec::with_capacity(plan.deltas.len() + 8);
    ev.push(format!(
        "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":{},\"type\":\"message\",\"role\":\"assistant\",\"model\":{},\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{}}}}}\n\n",
        mock::js(id),
        mock::js(model),
        usage_json(plan, 1)
    ));
    if mock.ping {
        ev.push("event: ping\ndata: {\"type\":\"ping\"}\n\n".to_string());
    }
    let block_stop = |index: usize| {
        format!("event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":{index}}}\n\n")
    };
    let mut index = 0usize;
    if let Some(t) = thinking_text(body) {
        ev.push(format!(
            "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":{index},\"content_block\":{{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}}}\n\n"
        ));
        for d in mock::split_deltas(&t, 3) {
            ev.push(format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{index},\"delta\":{{\"type\":\"thinking_delta\",\"thinking\":{}}}}}\n\n",
                mock::js(&d)
            ));
        }
        ev.push(format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{index},\"delta\":{{\"type\":\"signature_delta\",\"signature\":{}}}}}\n\n",
            mock::js(&thinking_signature(&t))
        ));
        ev.push(block_stop(index));
        index += 1;
    }
    if plan.text.is_some() {
        ev.push(format!(
            "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":{index},\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n"
        ));
        for d in &plan.deltas {
            ev.push(format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{index},\"delta\":{{\"type\":\"text_delta\",\"text\":{}}}}}\n\n",
                mock::js(d)
            ));
        }
        ev.push(block_stop(index));
        index += 1;
    }
    for c in &plan.tool_calls {
        ev.push(format!(
            "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":{index},\"content_block\":{{\"type\":\"tool_use\",\"id\":\"toolu_mock_{}\",\"name\":{},\"input\":{{}}}}}}\n\n",
            c.index,
            mock::js(&c.name)
        ));
        let pieces = std::iter::once("").chain(mock::split_chars(&c.arguments, mock::ARG_PIECE));
        for piece in pieces {
            ev.push(format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{index},\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":{}}}}}\n\n",
                mock::js(piece)
            ));
        }
        ev.push(block_stop(index));
        index += 1;
    }
    let (reason, seq) = stop(plan, mock, body);
    ev.push(format!(
        "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":{},\"stop_sequence\":{}}},\"usage\":{}}}\n\n",
        mock::js(&reason),
        seq,
        usage_json(plan, plan.output_tokens)
    ));
    ev
}

pub const MESSAGE_STOP: &str = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
pub const STREAM_ERROR: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";

/// Full SSE body, with the stream faults applied.
pub fn stream_body(
    id: &str,
    model: &str,
    plan: &Plan,
    mock: &MockHeaders,
    body: &Value,
) -> Vec<u8> {
    let events = stream_events(id, model, plan, mock, body);
    mock::assemble_stream(&events, MESSAGE_STOP, STREAM_ERROR, mock).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({
            "model": "claude-x",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}]
        })
    }

    fn with(mut v: Value, key: &str, val: Value) -> Value {
        if let Some(o) = v.as_object_mut() {
            o.insert(key.to_string(), val);
        }
        v
    }

    fn err(v: &Value) -> String {
        match validate(v) {
            Err(e) => e,
            Ok(()) => panic!("expected rejection of {v}"),
        }
    }

    fn tool_conv() -> Value {
        json!({
            "model": "m", "max_tokens": 10,
            "tools": [{"name": "get_weather", "description": "d",
                       "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "tool", "name": "get_weather"},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "let me check"},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "text", "text": "thanks"}]}
            ]
        })
    }

    #[test]
    fn accepts_valid() {
        assert_eq!(validate(&base()), Ok(()));
        assert_eq!(validate(&tool_conv()), Ok(()));
        let full = with(
            with(
                with(
                    base(),
                    "system",
                    json!([{"type": "text", "text": "be brief"}]),
                ),
                "temperature",
                json!(0.5),
            ),
            "metadata",
            json!({"user_id": "u"}),
        );
        assert_eq!(validate(&full), Ok(()));
        let img = with(
            base(),
            "messages",
            json!([{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                {"type": "text", "text": "what is it"}]}]),
        );
        assert_eq!(validate(&img), Ok(()));
    }

    #[test]
    fn rejects_top_level() {
        assert_eq!(
            err(&with(base(), "n", json!(1))),
            "n: Extra inputs are not permitted"
        );
        let mut v = base();
        if let Some(o) = v.as_object_mut() {
            o.remove("max_tokens");
        }
        assert_eq!(err(&v), "max_tokens: Field required");
        assert!(err(&with(base(), "max_tokens", json!(0))).starts_with("max_tokens:"));
        assert!(err(&with(base(), "temperature", json!(1.5))).starts_with("temperature:"));
        assert!(err(&with(base(), "top_p", json!(-0.1))).starts_with("top_p:"));
        assert!(
            err(&with(base(), "stop_sequences", json!(["a", 1]))).starts_with("stop_sequences.1:")
        );
        assert!(err(&with(base(), "metadata", json!({"user": "x"}))).starts_with("metadata.user:"));
        assert!(err(&with(base(), "messages", json!([]))).starts_with("messages:"));
        assert!(err(&json!([1])).starts_with("body:"));
        assert!(err(&with(
            base(),
            "system",
            json!([{"type": "text", "text": ""}])
        ))
        .starts_with("system.0.text:"));
    }

    #[test]
    fn system_turns_after_the_first_message() {
        let ok = with(
            base(),
            "messages",
            json!([{"role": "user", "content": "hi"},
                   {"role": "system", "content": [{"type": "text", "text": "env", "cache_control": {"type": "ephemeral"}}]},
                   {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                   {"role": "system", "content": "reminder"},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "r"}]}]),
        );
        assert_eq!(validate(&ok), Ok(()));
        for (content, why) in [
            (json!(""), "messages.1.content:"),
            (
                json!([{"type": "image", "source": {"type": "url", "url": "u"}}]),
                "messages.1.content.0.type:",
            ),
            (
                json!([{"type": "text", "text": "x", "citations": []}]),
                "messages.1.content.0.citations:",
            ),
        ] {
            let bad = with(
                base(),
                "messages",
                json!([{"role": "user", "content": "hi"}, {"role": "system", "content": content}]),
            );
            assert!(err(&bad).starts_with(why), "{}", err(&bad));
        }
        // Still alternating around it.
        let two = with(
            base(),
            "messages",
            json!([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}, {"role": "user", "content": "b"}]),
        );
        assert!(err(&two).starts_with("messages.2.role: roles must alternate"));
        assert_eq!(
            validate(&with(base(), "context_management", json!({"edits": []}))),
            Ok(())
        );
    }

    #[test]
    fn last_tool_result_text() {
        let body = json!({"messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": "first"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "b",
                "content": [{"type": "text", "text": "see "}, {"type": "image", "source": {}}]}]}]});
        assert_eq!(last_tool_result(&body).as_deref(), Some("see [image]"));
        assert_eq!(
            last_tool_result(&json!({"messages": [{"role": "user", "content": "x"}]})),
            None
        );
    }

    #[test]
    fn rejects_messages() {
        let sys = with(
            base(),
            "messages",
            json!([{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]),
        );
        assert!(err(&sys).starts_with("messages.0.role: Unexpected role \"system\""));
        let two = with(
            base(),
            "messages",
            json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]),
        );
        assert!(err(&two).starts_with("messages.1.role: roles must alternate"));
        let first = with(
            base(),
            "messages",
            json!([{"role": "assistant", "content": "a"}]),
        );
        assert!(err(&first).starts_with("messages.0.role:"));
        let empty = with(base(), "messages", json!([{"role": "user", "content": ""}]));
        assert!(err(&empty).starts_with("messages.0.content:"));
        let extra = with(
            base(),
            "messages",
            json!([{"role": "user", "content": "a", "name": "bob"}]),
        );
        assert_eq!(
            err(&extra),
            "messages.0.name: Extra inputs are not permitted"
        );
        let oai_part = with(
            base(),
            "messages",
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
        );
        assert!(err(&oai_part).starts_with("messages.0.content.0.type: Input tag 'image_url'"));
        let bad_media = with(
            base(),
            "messages",
            json!([{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "x"}}]}]),
        );
        assert!(err(&bad_media).starts_with("messages.0.content.0.source.media_type:"));
    }

    #[test]
    fn rejects_tool_flow() {
        let mut v = tool_conv();
        v["messages"][2]["content"][0]["tool_use_id"] = json!("toolu_other");
        assert!(err(&v).starts_with("messages.2.content.0.tool_use_id: unexpected `tool_use_id`"));

        let mut v = tool_conv();
        v["messages"][2]["content"] = json!("no results");
        assert!(err(&v).starts_with("messages.2: `tool_use` ids were found without `tool_result`"));

        let mut v = tool_conv();
        v["messages"][1]["content"][1]["input"] = json!("{\"city\":\"Paris\"}");
        assert!(err(&v).starts_with("messages.1.content.1.input:"));

        let mut v = tool_conv();
        v["tool_choice"] = json!({"type": "tool", "name": "nope"});
        assert!(err(&v).starts_with("tool_choice.name:"));

        let mut v = tool_conv();
        v["tool_choice"] = json!({"type": "required"});
        assert!(err(&v).starts_with("tool_choice.type:"));

        let mut v = tool_conv();
        v["tools"][0] =
            json!({"type": "function", "function": {"name": "get_weather", "parameters": {}}});
        assert!(err(&v).starts_with("tools.0.name: Field required"));

        let mut v = tool_conv();
        v["tools"][0]["name"] = json!("bad name!");
        assert!(err(&v).starts_with("tools.0.name:"));

        let mut v = tool_conv();
        v["tools"][0]["input_schema"] = json!({"type": "string"});
        assert!(err(&v).starts_with("tools.0.input_schema.type:"));

        let mut v = tool_conv();
        v["messages"][0]["content"] =
            json!([{"type": "tool_use", "id": "t", "name": "n", "input": {}}]);
        assert!(err(&v).starts_with("messages.0.content.0:"));
    }

    fn parse_events(body: &str) -> Vec<(String, Value)> {
        body.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let mut name = String::new();
                let mut data = Value::Null;
                for line in e.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = n.to_string();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = serde_json::from_str(d).unwrap_or(Value::Null);
                    }
                }
                (name, data)
            })
            .collect()
    }

    #[test]
    fn stream_event_order_and_tool_json() {
        let body = with(tool_conv(), "stop_sequences", json!(["STOP"]));
        let mock = MockHeaders {
            text: Some("One two".into()),
            tool_calls: 2,
            words_per_delta: 1,
            ping: true,
            ..MockHeaders::default()
        };
        let plan = Plan::build(&mock, &last_user_text(&body), &tool_names(&body), 400);
        let out = String::from_utf8(stream_body("msg_mock_1", "m", &plan, &mock, &body))
            .unwrap_or_default();
        let events = parse_events(&out);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        let mut expected = vec![
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
        ];
        for _ in 0..2 {
            expected.push("content_block_start");
            // "" + 5-char pieces of {"city":"Paris","i":N} (22 chars) = 1 + 5
            expected.extend(std::iter::repeat_n("content_block_delta", 6));
            expected.push("content_block_stop");
        }
        expected.extend(["message_delta", "message_stop"]);
        assert_eq!(names, expected);
        for (n, d) in &events {
            assert_eq!(d["type"].as_str(), Some(n.as_str()));
        }
        assert_eq!(events[0].1["message"]["usage"]["output_tokens"], json!(1));
        assert_eq!(events[0].1["message"]["usage"]["input_tokens"], json!(100));
        // Tool-call JSON deltas concatenate to the full arguments.
        for (block, i) in [(1u64, 0u64), (2, 1)] {
            let json_text: String = events
                .iter()
                .filter(|(n, d)| n == "content_block_delta" && d["index"] == json!(block))
                .filter_map(|(_, d)| d["delta"]["partial_json"].as_str().map(str::to_string))
                .collect();
            let parsed: Value = serde_json::from_str(&json_text).unwrap_or(Value::Null);
            assert_eq!(parsed, json!({"city": "Paris", "i": i}));
        }
        let text: String = events
            .iter()
            .filter_map(|(_, d)| d["delta"]["text"].as_str().map(str::to_string))
            .collect();
        assert_eq!(text, "One two");
        let md = &events[events.len() - 2].1;
        assert_eq!(md["delta"]["stop_reason"], json!("tool_use"));
        assert_eq!(md["usage"]["output_tokens"], json!(4));
        assert_eq!(events[2].1["content_block"]["type"], json!("text"));
        assert_eq!(events[6].1["content_block"]["id"], json!("toolu_mock_0"));
    }

    #[test]
    fn stream_faults_and_stop_sequence() {
        let body = with(base(), "stop_sequences", json!(["HALT"]));
        let mut mock = MockHeaders {
            words_per_delta: 1,
            finish: Some("stop_sequence".into()),
            ..MockHeaders::default()
        };
        let plan = Plan::build(&mock, "hi", &[], 10);
        let full = parse_events(
            &String::from_utf8(stream_body("i", "m", &plan, &mock, &body)).unwrap_or_default(),
        );
        let md = &full[full.len() - 2].1;
        assert_eq!(md["delta"]["stop_sequence"], json!("HALT"));
        assert_eq!(md["delta"]["stop_reason"], json!("stop_sequence"));

        mock.stream_error_after = Some(3);
        let ev = parse_events(
            &String::from_utf8(stream_body("i", "m", &plan, &mock, &body)).unwrap_or_default(),
        );
        assert_eq!(ev.len(), 4);
        assert_eq!(ev[3].0, "error");
        assert_eq!(ev[3].1["error"]["type"], json!("overloaded_error"));

        mock.stream_error_after = None;
        mock.drop_after = Some(100);
        let ev = parse_events(
            &String::from_utf8(stream_body("i", "m", &plan, &mock, &body)).unwrap_or_default(),
        );
        assert_eq!(ev.len(), full.len() - 1);
        assert_eq!(ev[ev.len() - 1].0, "message_delta");

        let msg: Value = serde_json::from_slice(&message_body(
            "msg_mock_7",
            "m",
            &plan,
            &MockHeaders::default(),
            &body,
        ))
        .unwrap_or(Value::Null);
        assert_eq!(msg["stop_reason"], json!("end_turn"));
        assert_eq!(
            msg["content"][0]["text"],
            json!("Hello from the mock! You said: hi")
        );
        assert_eq!(msg["usage"]["output_tokens"], json!(7));
    }

    #[test]
    fn thinking_blocks_are_signed_and_checked_when_sent_back() {
        let mock = MockHeaders::default();
        let first = json!({"model": "m", "max_tokens": 2048,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "Weather in Paris?"}]});
        let plan = Plan::build(&mock, "Weather in Paris?", &[], 40);
        let msg: Value =
            serde_json::from_slice(&message_body("id", "m", &plan, &mock, &first)).unwrap();
        let block = &msg["content"][0];
        assert_eq!(block["type"], "thinking");
        assert_eq!(block["thinking"], "Thinking about: Weather in Paris?");
        assert_eq!(
            block["signature"],
            json!(thinking_signature("Thinking about: Weather in Paris?"))
        );
        let events = stream_events("id", "m", &plan, &mock, &first).concat();
        assert!(events.contains("\"type\":\"signature_delta\""), "{events}");
        assert!(
            events.contains("\"index\":1,\"content_block\":{\"type\":\"text\""),
            "{events}"
        );
        // Adaptive thinking: no block.
        let adaptive = with(first.clone(), "thinking", json!({"type": "adaptive"}));
        let msg: Value =
            serde_json::from_slice(&message_body("id", "m", &plan, &mock, &adaptive)).unwrap();
        assert_eq!(msg["content"][0]["type"], "text");

        let second = |assistant: Value| {
            with(
                first.clone(),
                "messages",
                json!([
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": assistant},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}]),
            )
        };
        let tool_use =
            json!({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}});
        let good = json!({"type": "thinking", "thinking": "Thinking about: Weather in Paris?",
                          "signature": thinking_signature("Thinking about: Weather in Paris?")});
        assert_eq!(
            validate(&second(json!([good.clone(), tool_use.clone()]))),
            Ok(())
        );
        assert_eq!(
            validate(&second(
                json!([{"type": "redacted_thinking", "data": "x"}, tool_use.clone()])
            )),
            Ok(())
        );
        // Signature dropped, altered, or the block dropped: refused.
        let mut unsigned = good.clone();
        unsigned.as_object_mut().unwrap().remove("signature");
        assert!(
            err(&second(json!([unsigned, tool_use.clone()]))).contains("signature: Field required")
        );
        let mut altered = good.clone();
        altered["thinking"] = json!("Thinking about: something else");
        assert!(err(&second(json!([altered, tool_use.clone()]))).contains("Invalid `signature`"));
        assert!(err(&second(json!([tool_use.clone()])))
            .contains("Expected `thinking` or `redacted_thinking`"));
        // Without thinking on, a bare tool_use turn is fine; foreign signatures are not checked.
        let mut off = second(json!([tool_use.clone()]));
        off.as_object_mut().unwrap().remove("thinking");
        assert_eq!(validate(&off), Ok(()));
        let foreign = json!({"type": "thinking", "thinking": "t", "signature": "EqQBCgIYAhIM"});
        assert_eq!(validate(&second(json!([foreign, tool_use]))), Ok(()));
    }
}
