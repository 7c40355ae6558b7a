//! The Converse request, built from the parsed OpenAI chat request: borrowed
//! `#[derive(Serialize)]` shapes and the conversion rules listed in the parent module.

use super::*;
use crate::client_api::openai::chat::ChatMessage;

// ---------------------------------------------------------------------------------------------
// Converse request shapes (serialise only, borrowing from the parsed OpenAI request)
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConverseRequest<'r> {
    pub(super) messages: Vec<Msg<'r>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) system: Vec<Block<'r>>,
    #[serde(skip_serializing_if = "InferenceConfig::is_empty")]
    pub(super) inference_config: InferenceConfig<'r>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_config: Option<ToolConfig<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) additional_model_request_fields: Option<Additional>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) output_config: Option<OutputConfig<'r>>,
}

#[derive(Serialize)]
pub(super) struct Msg<'r> {
    pub(super) role: &'static str,
    pub(super) content: Vec<Block<'r>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum Block<'r> {
    Text(Text<'r>),
    Image(Image<'r>),
    ToolUse(ToolUse<'r>),
    ToolResult(ToolResult<'r>),
}

#[derive(Serialize)]
pub(super) struct Image<'r> {
    pub(super) format: &'static str,
    pub(super) source: ImageSource<'r>,
}

#[derive(Serialize)]
pub(super) struct ImageSource<'r> {
    /// The base64 data of the client's data URL.
    pub(super) bytes: Text<'r>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ToolUse<'r> {
    pub(super) tool_use_id: Cow<'r, str>,
    pub(super) name: &'r str,
    pub(super) input: &'r RawValue,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ToolResult<'r> {
    pub(super) tool_use_id: Cow<'r, str>,
    pub(super) content: Vec<Block<'r>>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct InferenceConfig<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) stop_sequences: Vec<&'r str>,
}

impl InferenceConfig<'_> {
    pub(super) fn is_empty(&self) -> bool {
        self.max_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.stop_sequences.is_empty()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ToolConfig<'r> {
    pub(super) tools: Vec<ToolWrap<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_choice: Option<BChoice<'r>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ToolWrap<'r> {
    pub(super) tool_spec: ToolSpec<'r>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ToolSpec<'r> {
    pub(super) name: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) description: Option<&'r str>,
    pub(super) input_schema: InputSchema<'r>,
}

#[derive(Serialize)]
pub(super) struct InputSchema<'r> {
    pub(super) json: &'r RawValue,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum BChoice<'r> {
    Auto {},
    Any {},
    Tool { name: &'r str },
}

#[derive(Serialize)]
pub(super) struct Additional {
    pub(super) thinking: Thinking,
}

#[derive(Serialize)]
pub(super) struct Thinking {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) budget_tokens: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OutputConfig<'r> {
    pub(super) text_format: TextFormat<'r>,
}

#[derive(Serialize)]
pub(super) struct TextFormat<'r> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) structure: Structure<'r>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Structure<'r> {
    pub(super) json_schema: JsonSchemaDef<'r>,
}

#[derive(Serialize)]
pub(super) struct JsonSchemaDef<'r> {
    /// The JSON Schema as a string, as Bedrock's `JsonSchemaDefinition` wants it.
    pub(super) schema: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) name: Option<&'r str>,
}

pub(super) const EMPTY_OBJECT: &str = "{}";
pub(super) const EMPTY_SCHEMA: &str = r#"{"type":"object","properties":{}}"#;

/// Text of the user turn put before a conversation that starts with the assistant.
pub const LEADING_USER_PLACEHOLDER: &str = crate::providers::gemini::LEADING_USER_PLACEHOLDER;

/// Bedrock's `[a-zA-Z0-9_.:-]{1,64}`; other characters become `_`.
pub(super) fn tool_id(id: &str) -> Cow<'_, str> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-');
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(ok) {
        return Cow::Borrowed(id);
    }
    let mut s: String = id
        .chars()
        .map(|c| if c.is_ascii() && ok(c as u8) { c } else { '_' })
        .take(64)
        .collect();
    if s.is_empty() {
        s.push_str("call");
    }
    Cow::Owned(s)
}

pub(super) fn image_format(mime: &str) -> Option<&'static str> {
    match mime.trim().to_ascii_lowercase().as_str() {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

pub(super) fn image<'r>(image_url: Text<'r>, param: &str) -> Result<Block<'r>, GatewayError> {
    let url = image_url.as_str();
    let Some(rest) = url
        .get(..5)
        .filter(|h| h.eq_ignore_ascii_case("data:"))
        .and(url.get(5..))
    else {
        return Err(bad(
            param,
            "bedrock takes images as bytes: send a base64 data URL (`data:image/png;base64,...`); the gateway does not fetch image URLs",
        ));
    };
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| bad(param, "expected `data:<media type>;base64,<data>`"))?;
    let mut fields = meta.split(';');
    let mime = fields.next().unwrap_or("");
    if !fields.any(|f| f.trim().eq_ignore_ascii_case("base64")) {
        return Err(bad(param, "only base64 data URLs are supported"));
    }
    if data.is_empty() {
        return Err(bad(param, "the data URL holds no data"));
    }
    let format = image_format(mime).ok_or_else(|| {
        bad(
            param,
            format!("bedrock takes png, jpeg, gif or webp images, not `{mime}`"),
        )
    })?;
    Ok(Block::Image(Image {
        format,
        source: ImageSource {
            bytes: image_url.part(data),
        },
    }))
}

/// Text of a system/tool message: a string or text parts.
pub(super) fn plain_text<'r>(
    content: &'r Option<MessageContent<'_>>,
    param: &str,
    out: &mut Vec<Block<'r>>,
) -> Result<(), GatewayError> {
    match content {
        None => {}
        Some(MessageContent::Text(t)) if !t.is_empty() => out.push(Block::Text(t.text())),
        Some(MessageContent::Text(_)) => {}
        Some(MessageContent::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                match (p.kind.as_str(), p.text.as_ref()) {
                    ("text", Some(t)) => {
                        if !t.is_empty() {
                            out.push(Block::Text(t.text()));
                        }
                    }
                    (kind, _) => {
                        return Err(bad(
                            &format!("{param}[{j}]"),
                            format!("a `{kind}` part is not allowed here; only text"),
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

pub(super) fn user_part<'r>(
    p: &'r ContentPart<'_>,
    param: &str,
) -> Result<Option<Block<'r>>, GatewayError> {
    match p.kind.as_str() {
        "text" => {
            let t = p
                .text
                .as_ref()
                .ok_or_else(|| bad(param, "a `text` part must carry `text`"))?;
            Ok((!t.is_empty()).then_some(Block::Text(t.text())))
        }
        "image_url" => {
            let url = p
                .image_url
                .as_ref()
                .ok_or_else(|| bad(param, "an `image_url` part must carry `image_url.url`"))?;
            image(url.url.text(), param).map(Some)
        }
        other => Err(unsupported(param, &format!("a `{other}` content part"))),
    }
}

pub(super) struct Conversation<'r> {
    pub(super) system: Vec<Block<'r>>,
    pub(super) messages: Vec<Msg<'r>>,
    pub(super) has_tool_blocks: bool,
}

impl<'r> Conversation<'r> {
    pub(super) fn push(&mut self, role: &'static str, block: Block<'r>) {
        if matches!(block, Block::ToolUse(_) | Block::ToolResult(_)) {
            self.has_tool_blocks = true;
        }
        match self.messages.last_mut() {
            Some(m) if m.role == role => m.content.push(block),
            _ => self.messages.push(Msg {
                role,
                content: vec![block],
            }),
        }
    }
}

pub(super) fn conversation<'r>(req: &'r ChatRequest<'_>) -> Result<Conversation<'r>, GatewayError> {
    let mut c = Conversation {
        system: Vec::new(),
        messages: Vec::with_capacity(req.messages.len()),
        has_tool_blocks: false,
    };
    for (i, m) in req.messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        match m.role {
            Role::System | Role::Developer => {
                plain_text(&m.content, &format!("{param}.content"), &mut c.system)?
            }
            Role::User => user_message(&mut c, &param, m)?,
            Role::Assistant => assistant_message(&mut c, &param, m)?,
            Role::Tool => {
                let id = m.tool_call_id.as_deref().ok_or_else(|| {
                    bad(
                        &format!("{param}.tool_call_id"),
                        "`tool_call_id` is required on tool messages",
                    )
                })?;
                let mut content = Vec::new();
                plain_text(&m.content, &format!("{param}.content"), &mut content)?;
                c.push(
                    "user",
                    Block::ToolResult(ToolResult {
                        tool_use_id: tool_id(id),
                        content,
                    }),
                );
            }
            Role::Function => {
                return Err(unsupported(
                    &format!("{param}.role"),
                    "legacy `function` messages",
                ))
            }
        }
    }
    match c.messages.first().map(|m| m.role) {
        None => {
            return Err(bad(
                "messages",
                "bedrock needs at least one user message (system text alone is not a conversation)",
            ))
        }
        Some("assistant") => c.messages.insert(
            0,
            Msg {
                role: "user",
                content: vec![Block::Text(Text::new(LEADING_USER_PLACEHOLDER))],
            },
        ),
        _ => {}
    }
    Ok(c)
}

/// A user message: its blocks in a user turn; one that adds none is a 400.
fn user_message<'r>(
    c: &mut Conversation<'r>,
    param: &str,
    m: &'r ChatMessage<'_>,
) -> Result<(), GatewayError> {
    let before = c.messages.last().map_or(0, |m| m.content.len());
    let n_msgs = c.messages.len();
    match &m.content {
        None => return Err(bad(&format!("{param}.content"), "`content` is required")),
        Some(MessageContent::Text(t)) => {
            if !t.is_empty() {
                c.push("user", Block::Text(t.text()));
            }
        }
        Some(MessageContent::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                if let Some(b) = user_part(p, &format!("{param}.content[{j}]"))? {
                    c.push("user", b);
                }
            }
        }
    }
    let after = c.messages.last().map_or(0, |m| m.content.len());
    if c.messages.len() == n_msgs && after == before {
        return Err(bad(
            &format!("{param}.content"),
            "the message has no content (bedrock rejects empty text)",
        ));
    }
    Ok(())
}

/// An assistant message: text blocks, then its tool calls as `toolUse` blocks.
fn assistant_message<'r>(
    c: &mut Conversation<'r>,
    param: &str,
    m: &'r ChatMessage<'_>,
) -> Result<(), GatewayError> {
    let mut blocks = Vec::new();
    match &m.content {
        Some(MessageContent::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let t = match p.kind.as_str() {
                    "text" => p.text.as_ref().map(Str::text),
                    "refusal" => p.refusal.as_ref().map(Str::text),
                    _ => None,
                }
                .ok_or_else(|| {
                    bad(
                        &format!("{param}.content[{j}]"),
                        "assistant content parts must be text or refusal",
                    )
                })?;
                if !t.is_empty() {
                    blocks.push(Block::Text(t));
                }
            }
        }
        other => plain_text(other, &format!("{param}.content"), &mut blocks)?,
    }
    for (j, tc) in m.tool_calls.iter().flatten().enumerate() {
        let p = format!("{param}.tool_calls[{j}].function.arguments");
        let args = tc.function.arguments.as_deref().unwrap_or("");
        let args = if args.trim().is_empty() {
            EMPTY_OBJECT
        } else {
            args
        };
        let input: &RawValue = serde_json::from_str(args)
            .map_err(|e| bad(&p, format!("tool-call arguments must be JSON: {e}")))?;
        if !input.get().starts_with('{') {
            return Err(bad(&p, "tool-call arguments must be a JSON object"));
        }
        blocks.push(Block::ToolUse(ToolUse {
            tool_use_id: tool_id(&tc.id),
            name: &tc.function.name,
            input,
        }));
    }
    for b in blocks {
        c.push("assistant", b);
    }
    Ok(())
}

pub(super) fn reasoning_budget(effort: &str) -> Result<Option<u64>, GatewayError> {
    match effort {
        "none" => Ok(None),
        "minimal" | "low" => Ok(Some(1024)),
        "medium" => Ok(Some(4096)),
        "high" | "xhigh" | "max" => Ok(Some(16384)),
        other => Err(bad(
            "reasoning_effort",
            format!("`{other}` is not one of none, minimal, low, medium, high"),
        )),
    }
}

pub(crate) fn converse_body(req: &ChatRequest<'_>, model: &str) -> Result<Vec<u8>, GatewayError> {
    refuse_unsupported(req)?;
    let conv = conversation(req)?;
    let tools = convert_tools(req)?;
    let tool_config = tool_config(req, conv.has_tool_blocks, tools)?;
    let additional = match req.reasoning_effort.as_deref() {
        None => None,
        Some(effort) => {
            let budget = reasoning_budget(effort)?;
            if budget.is_some() && !model.contains("anthropic.claude") {
                return Err(unsupported(
                    "reasoning_effort",
                    "`reasoning_effort` for this model (only Anthropic Claude models take a thinking budget)",
                ));
            }
            budget.map(|b| Additional {
                thinking: Thinking {
                    kind: "enabled",
                    budget_tokens: b,
                },
            })
        }
    };
    let output_config = output_config(req)?;
    let body = ConverseRequest {
        messages: conv.messages,
        system: conv.system,
        inference_config: InferenceConfig {
            max_tokens: req.max_tokens,
            temperature: req.temperature.map(|t| t.min(1.0)),
            top_p: req.top_p,
            stop_sequences: req.stop.iter().map(|s| s.as_str()).collect(),
        },
        tool_config,
        additional_model_request_fields: additional,
        output_config,
    };
    serde_json::to_vec(&body).map_err(|e| GatewayError::new(500, "api_error", e.to_string()))
}

/// 400 for what Converse cannot do: several choices, log probabilities, audio output, legacy
/// function calling.
fn refuse_unsupported(req: &ChatRequest<'_>) -> Result<(), GatewayError> {
    if req.n.is_some_and(|n| n != 1) {
        return Err(unsupported("n", "`n` other than 1"));
    }
    if req.logprobs {
        return Err(unsupported("logprobs", "`logprobs`"));
    }
    if req.audio.is_some() || req.modalities.iter().any(|m| m.as_str() == "audio") {
        return Err(unsupported("modalities", "audio output"));
    }
    if req.functions.is_some() || req.function_call.is_some() {
        return Err(unsupported(
            "functions",
            "legacy function calling (`functions`); use `tools`",
        ));
    }
    Ok(())
}

/// `tools[].function` → `toolSpec`s (a missing or null schema becomes an empty object one).
fn convert_tools<'r>(req: &'r ChatRequest<'_>) -> Result<Vec<ToolWrap<'r>>, GatewayError> {
    let mut tools = Vec::with_capacity(req.tools.len());
    for (i, t) in req.tools.iter().enumerate() {
        let f = match (t.kind.as_str(), &t.function) {
            ("function", Some(f)) => f,
            (kind, _) => {
                return Err(unsupported(
                    &format!("tools[{i}]"),
                    &format!("a `{kind}` tool"),
                ))
            }
        };
        let json = match f.parameters {
            Some(p) if p.get() != "null" => p,
            _ => serde_json::from_str::<&RawValue>(EMPTY_SCHEMA)
                .map_err(|e| GatewayError::new(500, "api_error", e.to_string()))?,
        };
        tools.push(ToolWrap {
            tool_spec: ToolSpec {
                name: &f.name,
                description: f.description.as_deref().filter(|d| !d.is_empty()),
                input_schema: InputSchema { json },
            },
        });
    }
    Ok(tools)
}

/// `toolConfig`: the tools and the choice; none without tools, or for `tool_choice: none` unless
/// the history holds tool blocks.
fn tool_config<'r>(
    req: &'r ChatRequest<'_>,
    has_tool_blocks: bool,
    tools: Vec<ToolWrap<'r>>,
) -> Result<Option<ToolConfig<'r>>, GatewayError> {
    let tool_choice = match &req.tool_choice {
        None => Some(None),
        Some(ToolChoice::Auto) => Some(Some(BChoice::Auto {})),
        Some(ToolChoice::Required) => Some(Some(BChoice::Any {})),
        Some(ToolChoice::Function(name)) => {
            if !req.tools.iter().any(|t| {
                t.function
                    .as_ref()
                    .is_some_and(|f| f.name.as_str() == name.as_str())
            }) {
                return Err(bad(
                    "tool_choice",
                    format!("`tool_choice` names `{name}`, which is not in `tools`"),
                ));
            }
            Some(Some(BChoice::Tool { name }))
        }
        // Converse has no "none": leave the tools out, unless the history needs them declared.
        Some(ToolChoice::None) => has_tool_blocks.then_some(None),
    };
    Ok(match tool_choice {
        Some(choice) if !tools.is_empty() => Some(ToolConfig {
            tools,
            tool_choice: choice,
        }),
        _ => None,
    })
}

/// `response_format` → `outputConfig.textFormat` (`json_object` is a 400: Converse needs a schema).
fn output_config<'r>(req: &'r ChatRequest<'_>) -> Result<Option<OutputConfig<'r>>, GatewayError> {
    Ok(match &req.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => {
            return Err(unsupported(
                "response_format",
                "`response_format` `json_object` (Converse has JSON output only with a schema: use `json_schema`)",
            ))
        }
        Some(ResponseFormat::JsonSchema { name, schema, .. }) => {
            let schema = schema.ok_or_else(|| {
                bad(
                    "response_format.json_schema.schema",
                    "bedrock needs the schema of `json_schema`",
                )
            })?;
            Some(OutputConfig {
                text_format: TextFormat {
                    kind: "json_schema",
                    structure: Structure {
                        json_schema: JsonSchemaDef {
                            schema: schema.get(),
                            name: name.as_deref(),
                        },
                    },
                },
            })
        }
    })
}
