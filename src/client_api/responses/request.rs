//! A Responses request → the OpenAI chat-completions request every provider translator accepts
//! (the mapping is in the [module doc](super)). Only for providers that do not speak OpenAI's
//! protocol; the others get the client's body as it is.
//!
//! Field names: openai/openai-python `src/openai/types/responses/response_create_params.py`
//! (the request), `response_input_item_param.py` and `easy_input_message_param.py` (input
//! items), `response_input_text_param.py`, `response_input_image_param.py`,
//! `response_input_file_param.py` (content parts), `function_tool_param.py`,
//! `tool_choice_function_param.py`, `tool_choice_allowed_param.py` (tools),
//! `response_format_text_json_schema_config_param.py` (`text.format`),
//! `shared_params/reasoning.py` (`reasoning`).

use serde_json::{json, Map, Value};

use crate::error::GatewayError;

/// The chat request made from a Responses request, and what the answer repeats of it.
pub struct ChatRequestBody {
    /// The chat-completions body.
    pub body: Vec<u8>,
    /// The request fields a `response` object repeats (`instructions`, `tools`, `tool_choice`,
    /// `temperature`, ...), with OpenAI's defaults for those not sent.
    pub echo: Map<String, Value>,
}

fn bad(param: &str, msg: impl Into<String>) -> GatewayError {
    GatewayError::invalid_param(param, msg)
}

/// A 400 for something the provider cannot do, naming it and what to send instead.
fn unsupported(param: &str, msg: impl Into<String>) -> GatewayError {
    GatewayError::invalid_param(param, msg).with_code("unsupported_parameter")
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `req[key]` unless absent or `null`.
fn given<'a>(req: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    req.get(key).filter(|v| !v.is_null())
}

/// The chat-completions body for a Responses request. `served_by` ("model `m` is served by
/// provider `p` (anthropic)") goes into the errors about what that provider cannot do;
/// `drop_hosted` (the provider's `drop_params`) drops hosted tools instead of refusing them.
pub fn to_chat_request(
    body: &[u8],
    served_by: &str,
    drop_hosted: bool,
) -> Result<ChatRequestBody, GatewayError> {
    let req: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
        GatewayError::bad_request(format!("request body is not a JSON object: {e}"))
    })?;
    refuse_stored_state(&req, served_by)?;
    let mut out = Map::new();
    out.insert(
        "model".into(),
        req.get("model").cloned().unwrap_or(Value::Null),
    );
    let mut conv = Conversation::default();
    match given(&req, "instructions") {
        Some(Value::String(s)) if !s.is_empty() => {
            conv.push(json!({"role": "system", "content": s}));
        }
        None | Some(Value::String(_)) => {}
        Some(_) => return Err(bad("instructions", "`instructions` must be a string")),
    }
    match given(&req, "input") {
        Some(Value::String(s)) => conv.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                conv.item(i, item, served_by)?;
            }
        }
        None => {
            return Err(bad("input", "`input` is required").with_code("missing_required_parameter"))
        }
        Some(_) => {
            return Err(bad(
                "input",
                "`input` must be a string or an array of input items",
            ))
        }
    }
    let messages = conv.into_messages();
    if messages.is_empty() {
        return Err(bad("input", "`input` must contain at least one item"));
    }
    out.insert("messages".into(), Value::Array(messages));
    sampling(&req, &mut out)?;
    let tools = tools(&req, served_by, drop_hosted)?;
    tool_choice(&req, tools, served_by, &mut out)?;
    text_format(&req, &mut out)?;
    if let Some(r) = given(&req, "reasoning") {
        match r.get("effort").filter(|e| !e.is_null()) {
            None => {}
            Some(e @ Value::String(_)) => {
                out.insert("reasoning_effort".into(), e.clone());
            }
            Some(_) => return Err(bad("reasoning.effort", "must be a string")),
        }
    }
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let echo = echo(&req);
    let body = serde_json::to_vec(&out)
        .map_err(|e| GatewayError::new(500, "api_error", format!("serialising: {e}")))?;
    Ok(ChatRequestBody { body, echo })
}

/// What needs state only OpenAI keeps: 400, saying what to send instead.
fn refuse_stored_state(req: &Map<String, Value>, served_by: &str) -> Result<(), GatewayError> {
    if given(req, "previous_response_id").is_some() {
        return Err(unsupported(
            "previous_response_id",
            format!("`previous_response_id` needs the earlier response stored by the provider; {served_by}, which stores none. Send the whole conversation in `input` instead: the earlier input items followed by the previous response's `output` items (and `store: false`)"),
        ));
    }
    if given(req, "conversation").is_some() {
        return Err(unsupported(
            "conversation",
            format!("`conversation` needs a conversation stored by OpenAI; {served_by}, which stores none. Leave `conversation` out and send the whole conversation in `input` instead"),
        ));
    }
    if given(req, "prompt").is_some() {
        return Err(unsupported(
            "prompt",
            format!("`prompt` refers to a prompt template stored by OpenAI; {served_by}. Send the prompt's text in `instructions` and `input` instead"),
        ));
    }
    if req.get("background").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported(
            "background",
            format!("`background: true` needs the response stored and polled later; {served_by}, which stores none. Leave `background` out and send `stream: true` to get the answer as it is made"),
        ));
    }
    if let Some(n) = given(req, "top_logprobs") {
        if n.as_u64() != Some(0) {
            return Err(unsupported(
                "top_logprobs",
                format!(
                    "log probabilities are not available: {served_by}. Leave `top_logprobs` out"
                ),
            ));
        }
    }
    Ok(())
}

/// The chat messages of the input, in order. An assistant turn stays open while its text and
/// the `function_call` items after it come (they are one chat message); any other message
/// closes it.
#[derive(Default)]
struct Conversation {
    msgs: Vec<Value>,
    /// The open assistant turn: its text and tool calls.
    assistant: Option<(String, Vec<Value>)>,
}

impl Conversation {
    /// A system, developer, user or tool message (after the open assistant turn, if any).
    fn push(&mut self, msg: Value) {
        self.close_assistant();
        self.msgs.push(msg);
    }

    fn assistant(&mut self) -> &mut (String, Vec<Value>) {
        self.assistant.get_or_insert_with(Default::default)
    }

    fn close_assistant(&mut self) {
        if let Some((text, tool_calls)) = self.assistant.take() {
            let content = if text.is_empty() {
                Value::Null
            } else {
                Value::String(text)
            };
            let mut msg = json!({"role": "assistant", "content": content});
            if !tool_calls.is_empty() {
                msg["tool_calls"] = Value::Array(tool_calls);
            }
            self.msgs.push(msg);
        }
    }

    fn into_messages(mut self) -> Vec<Value> {
        self.close_assistant();
        self.msgs
    }

    /// Input item `i`.
    fn item(&mut self, i: usize, item: &Value, served_by: &str) -> Result<(), GatewayError> {
        if !item.is_object() {
            return Err(bad(
                &format!("input[{i}]"),
                "each input item must be an object",
            ));
        }
        match item.get("type").and_then(Value::as_str) {
            None | Some("message") => self.message(i, item),
            Some("function_call") => {
                let call_id = str_field(item, "call_id");
                let name = str_field(item, "name");
                if call_id.is_empty() || name.is_empty() {
                    return Err(bad(
                        &format!("input[{i}]"),
                        "a `function_call` item needs `call_id` and `name`",
                    ));
                }
                // A namespace tool's call: the flat name its function was declared under.
                let name = match str_field(item, "namespace") {
                    "" => name.to_string(),
                    ns => super::flat_name(ns, name),
                };
                let arguments = match item.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    None | Some(Value::Null) => "{}".to_string(),
                    Some(other) => other.to_string(),
                };
                let call = json!({"id": call_id, "type": "function",
                    "function": {"name": name, "arguments": arguments}});
                self.assistant().1.push(call);
                Ok(())
            }
            Some("function_call_output") => {
                let call_id = str_field(item, "call_id");
                if call_id.is_empty() {
                    return Err(bad(
                        &format!("input[{i}].call_id"),
                        "a `function_call_output` item needs the `call_id` of its call",
                    ));
                }
                let at = format!("input[{i}].output");
                let content = match item.get("output") {
                    Some(Value::String(s)) => Value::String(s.clone()),
                    Some(Value::Array(parts)) => parts_content(&at, parts)?,
                    _ => {
                        return Err(bad(
                            &at,
                            "`output` must be a string or an array of content parts",
                        ))
                    }
                };
                self.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
                Ok(())
            }
            // Dropped: see the module doc (no chat field carries reasoning back).
            Some("reasoning") => Ok(()),
            Some("item_reference") => Err(unsupported(
                &format!("input[{i}]"),
                format!("an `item_reference` names an item stored by OpenAI; {served_by}, which stores none. Send the item itself instead"),
            )),
            Some(other) => Err(unsupported(
                &format!("input[{i}].type"),
                format!("input items of type `{other}` cannot be translated: {served_by}. Send messages, `function_call`, `function_call_output` and `reasoning` items only"),
            )),
        }
    }

    /// A message item (`EasyInputMessageParam`, `Message`, or an earlier `ResponseOutputMessage`).
    fn message(&mut self, i: usize, item: &Value) -> Result<(), GatewayError> {
        let role = match item.get("role").and_then(Value::as_str) {
            Some("user") => "user",
            Some("system") => "system",
            Some("developer") => "developer",
            Some("assistant") => "assistant",
            _ => {
                return Err(bad(
                    &format!("input[{i}].role"),
                    "a message needs `role` user, assistant, system or developer",
                ))
            }
        };
        let at = format!("input[{i}].content");
        let content = item.get("content").unwrap_or(&Value::Null);
        if role == "assistant" {
            let piece = match content {
                Value::String(s) => s.clone(),
                Value::Array(parts) => assistant_text(&at, parts)?,
                _ => return Err(bad(&at, "must be a string or an array of content parts")),
            };
            self.assistant().0.push_str(&piece);
            return Ok(());
        }
        let content = match content {
            Value::String(s) => Value::String(s.clone()),
            Value::Array(parts) => parts_content(&at, parts)?,
            _ => return Err(bad(&at, "must be a string or an array of content parts")),
        };
        self.push(json!({"role": role, "content": content}));
        Ok(())
    }
}

/// The text of an assistant message's parts (`output_text`, `refusal`, `input_text`), joined
/// as they are.
fn assistant_text(at: &str, parts: &[Value]) -> Result<String, GatewayError> {
    let mut text = String::new();
    for (j, p) in parts.iter().enumerate() {
        match p.get("type").and_then(Value::as_str) {
            Some("output_text") | Some("input_text") => text.push_str(str_field(p, "text")),
            Some("refusal") => text.push_str(str_field(p, "refusal")),
            _ => {
                return Err(bad(
                    &format!("{at}[{j}].type"),
                    "an assistant message's parts must be `output_text` or `refusal`",
                ))
            }
        }
    }
    Ok(text)
}

/// Content parts (`input_text`, `input_image`, `input_file`) → chat content: a string for a
/// single text part, else the parts (several texts stay separate parts: joining them would
/// change the prompt).
fn parts_content(at: &str, parts: &[Value]) -> Result<Value, GatewayError> {
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let at = format!("{at}[{j}]");
        out.push(part(&at, p)?);
    }
    if let [only] = out.as_slice() {
        if only.get("type").and_then(Value::as_str) == Some("text") {
            return Ok(only.get("text").cloned().unwrap_or(Value::Null));
        }
    }
    Ok(Value::Array(out))
}

/// One input content part → a chat content part.
fn part(at: &str, p: &Value) -> Result<Value, GatewayError> {
    match p.get("type").and_then(Value::as_str) {
        Some("input_text") | Some("output_text") => {
            Ok(json!({"type": "text", "text": str_field(p, "text")}))
        }
        Some("input_image") => {
            let url = str_field(p, "image_url");
            if url.is_empty() {
                let why = if given_value(p, "file_id") {
                    "`file_id` refers to a file uploaded to OpenAI, which this model's provider cannot read: send the image as `image_url` (an https URL or a `data:` URL) instead"
                } else {
                    "an `input_image` needs `image_url` (an https URL or a `data:` URL)"
                };
                return Err(unsupported(at, why));
            }
            let mut image = json!({"url": url});
            if let Some(d) = p
                .get("detail")
                .and_then(Value::as_str)
                .filter(|d| matches!(*d, "auto" | "low" | "high"))
            {
                image["detail"] = Value::String(d.to_string());
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        Some("input_file") => {
            let data = str_field(p, "file_data");
            if data.is_empty() {
                return Err(unsupported(
                    at,
                    "an `input_file` with `file_id` or `file_url` needs OpenAI to fetch the file, which this model's provider cannot do: send its content as `file_data` (a `data:` URL) instead",
                ));
            }
            let mut file = json!({"file_data": data});
            if let Some(name) = p.get("filename").and_then(Value::as_str) {
                file["filename"] = Value::String(name.to_string());
            }
            Ok(json!({"type": "file", "file": file}))
        }
        other => Err(bad(
            &format!("{at}.type"),
            format!(
                "content part type `{}` is not supported; use `input_text`, `input_image` or `input_file`",
                other.unwrap_or("")
            ),
        )),
    }
}

fn given_value(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

/// `max_output_tokens`, `temperature`, `top_p`, `user`, `safety_identifier`.
fn sampling(req: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), GatewayError> {
    if let Some(n) = given(req, "max_output_tokens") {
        if n.as_u64().is_none_or(|n| n < 1) {
            return Err(bad(
                "max_output_tokens",
                "`max_output_tokens` must be a positive integer",
            ));
        }
        out.insert("max_completion_tokens".into(), n.clone());
    }
    for key in ["temperature", "top_p", "user", "safety_identifier"] {
        if let Some(v) = given(req, key) {
            out.insert(key.into(), v.clone());
        }
    }
    Ok(())
}

/// The function tools as chat functions (empty when there are none); any other tool → 400.
fn tools(
    req: &Map<String, Value>,
    served_by: &str,
    drop_hosted: bool,
) -> Result<Vec<Value>, GatewayError> {
    let list = match given(req, "tools") {
        None => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(bad("tools", "`tools` must be an array")),
    };
    let mut fns = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        match t.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some("namespace") => {
                let ns = str_field(t, "name");
                let Some(children) = t.get("tools").and_then(Value::as_array) else {
                    return Err(bad(
                        &format!("tools[{i}].tools"),
                        "a namespace tool needs its `tools`",
                    ));
                };
                if ns.is_empty() {
                    return Err(bad(
                        &format!("tools[{i}].name"),
                        "a namespace tool needs a `name`",
                    ));
                }
                for (j, c) in children.iter().enumerate() {
                    if !matches!(
                        c.get("type").and_then(Value::as_str),
                        None | Some("function")
                    ) {
                        return Err(unsupported(
                            &format!("tools[{i}].tools[{j}].type"),
                            format!("only function tools are translated inside a namespace; {served_by}"),
                        ));
                    }
                    fns.push(function_tool(
                        c,
                        &format!("tools[{i}].tools[{j}]"),
                        Some(ns),
                    )?);
                }
                continue;
            }
            Some(kind) if drop_hosted && HOSTED_TOOLS.contains(&kind) => continue,
            other => {
                let kind = other.unwrap_or("");
                // Anything not hosted (`custom`, ...) is a client tool LLMux does not translate
                // yet.
                let why = if HOSTED_TOOLS.contains(&kind) {
                    format!("tool type `{kind}` is a tool OpenAI runs itself; {served_by}, which cannot run it")
                } else {
                    format!("tool type `{kind}` cannot be translated for other providers yet; {served_by}")
                };
                return Err(unsupported(
                    &format!("tools[{i}].type"),
                    format!(
                        "{why}. Only `function` tools are translated: declare a function tool and run it in your code instead"
                    ),
                ));
            }
        }
        fns.push(function_tool(t, &format!("tools[{i}]"), None)?);
    }
    Ok(fns)
}

/// The tools OpenAI's servers run (the Responses API reference's tool types).
const HOSTED_TOOLS: &[&str] = &[
    "web_search",
    "web_search_preview",
    "file_search",
    "code_interpreter",
    "computer_use_preview",
    "image_generation",
    "mcp",
];

/// A function tool (`t`, at `param`) as a chat function; in namespace `ns`, under its flat name.
fn function_tool(t: &Value, param: &str, ns: Option<&str>) -> Result<Value, GatewayError> {
    let name = str_field(t, "name");
    if name.is_empty() {
        return Err(bad(
            &format!("{param}.name"),
            "a function tool needs a `name`",
        ));
    }
    let mut f = Map::new();
    let name = ns.map_or_else(|| name.to_string(), |ns| super::flat_name(ns, name));
    f.insert("name".into(), Value::String(name));
    for key in ["description", "parameters", "strict"] {
        if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
            f.insert(key.into(), v.clone());
        }
    }
    Ok(json!({"type": "function", "function": f}))
}

/// `tool_choice` and `parallel_tool_calls`, sent with the tools (checked either way).
fn tool_choice(
    req: &Map<String, Value>,
    mut tools: Vec<Value>,
    served_by: &str,
    out: &mut Map<String, Value>,
) -> Result<(), GatewayError> {
    let choice = match given(req, "tool_choice") {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" | "none" | "required" => Some(Value::String(s.clone())),
            _ => {
                return Err(bad(
                    "tool_choice",
                    "`tool_choice` must be none, auto, required or an object",
                ))
            }
        },
        Some(c) => match c.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = str_field(c, "name");
                Some(json!({"type": "function", "function": {"name": name}}))
            }
            Some("allowed_tools") => {
                let mode = match c.get("mode").and_then(Value::as_str) {
                    Some(m @ ("auto" | "required")) => m,
                    _ => {
                        return Err(bad(
                            "tool_choice.mode",
                            "`mode` must be auto or required",
                        ))
                    }
                };
                let allowed = allowed_names(c, served_by)?;
                tools.retain(|t| {
                    t.pointer("/function/name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| allowed.contains(&n))
                });
                Some(Value::String(mode.to_string()))
            }
            other => {
                return Err(unsupported(
                    "tool_choice",
                    format!(
                        "tool choice `{}` names a tool OpenAI runs itself; {served_by}. Choose a function tool (`{{\"type\": \"function\", \"name\": ...}}`) or none, auto, required",
                        other.unwrap_or("")
                    ),
                ))
            }
        },
    };
    if tools.is_empty() {
        return Ok(());
    }
    out.insert("tools".into(), Value::Array(tools));
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    if let Some(p) = given(req, "parallel_tool_calls") {
        out.insert("parallel_tool_calls".into(), p.clone());
    }
    Ok(())
}

/// The function names of an `allowed_tools` choice (a set: the tools are matched against it in
/// one pass).
fn allowed_names<'a>(
    c: &'a Value,
    served_by: &str,
) -> Result<std::collections::HashSet<&'a str>, GatewayError> {
    let list = c
        .get("tools")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("tool_choice.tools", "`tools` must be an array"))?;
    let mut names = std::collections::HashSet::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(unsupported(
                &format!("tool_choice.tools[{i}]"),
                format!("only function tools can be allowed: {served_by}"),
            ));
        }
        names.insert(str_field(t, "name"));
    }
    Ok(names)
}

/// `text.format` → `response_format`.
fn text_format(req: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), GatewayError> {
    let Some(format) = given(req, "text")
        .and_then(|t| t.get("format"))
        .filter(|f| !f.is_null())
    else {
        return Ok(());
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some("json_object") => {
            out.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some("json_schema") => {
            let mut schema = Map::new();
            for key in ["name", "schema", "description", "strict"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.into(), v.clone());
                }
            }
            if !schema.contains_key("schema") {
                return Err(bad(
                    "text.format.schema",
                    "a `json_schema` format needs `schema`",
                ));
            }
            out.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": schema}),
            );
        }
        _ => {
            return Err(bad(
                "text.format.type",
                "`text.format.type` must be text, json_object or json_schema",
            ))
        }
    }
    Ok(())
}

/// The request fields a `response` object repeats, with OpenAI's defaults (openai/openai-python
/// `src/openai/types/responses/response.py`: `parallel_tool_calls`, `tool_choice`, `tools` are
/// required there).
fn echo(req: &Map<String, Value>) -> Map<String, Value> {
    let mut e = Map::new();
    let mut put = |key: &str, default: Value| {
        let v = given(req, key).cloned().unwrap_or(default);
        e.insert(key.to_string(), v);
    };
    put("instructions", Value::Null);
    put("metadata", json!({}));
    put("parallel_tool_calls", Value::Bool(true));
    put("temperature", Value::Null);
    put("top_p", Value::Null);
    put("tool_choice", json!("auto"));
    put("tools", json!([]));
    put("max_output_tokens", Value::Null);
    put("reasoning", Value::Null);
    put("text", json!({"format": {"type": "text"}}));
    put("truncation", json!("disabled"));
    put("user", Value::Null);
    put("safety_identifier", Value::Null);
    put("service_tier", Value::Null);
    e.insert("previous_response_id".into(), Value::Null);
    e.insert("background".into(), Value::Bool(false));
    e
}
