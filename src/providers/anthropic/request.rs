//! The Anthropic Messages request, built from the parsed OpenAI chat request: borrowed
//! `#[derive(Serialize)]` shapes and the conversion rules listed in the parent module.

use super::*;

// ---------------------------------------------------------------------------------------------
// Anthropic request shapes (serialise only, borrowing from the parsed OpenAI request)
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
pub(super) struct MessagesRequest<'r> {
    pub(super) model: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) system: Option<System<'r>>,
    pub(super) messages: Vec<AMessage<'r>>,
    pub(super) max_tokens: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) stop_sequences: Vec<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) tools: Vec<ATool<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_choice: Option<AToolChoice<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) metadata: Option<Metadata<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) thinking: Option<Thinking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) output_config: Option<OutputConfig<'r>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) stream: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum System<'r> {
    Text(Text<'r>),
    Blocks(Vec<Block<'r>>),
}

#[derive(Serialize)]
pub(super) struct AMessage<'r> {
    pub(super) role: &'static str,
    pub(super) content: Vec<Block<'r>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Block<'r> {
    Text {
        text: Text<'r>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'r RawValue>,
    },
    Image {
        source: ImageSource<'r>,
    },
    ToolUse {
        id: &'r str,
        name: &'r str,
        input: &'r RawValue,
    },
    ToolResult {
        tool_use_id: &'r str,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent<'r>>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ImageSource<'r> {
    Base64 {
        media_type: &'static str,
        data: Text<'r>,
    },
    Url {
        url: &'r str,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum ToolResultContent<'r> {
    Text(&'r str),
    Blocks(Vec<Block<'r>>),
}

#[derive(Serialize)]
pub(super) struct ATool<'r> {
    pub(super) name: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) description: Option<&'r str>,
    pub(super) input_schema: &'r RawValue,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum AToolChoice<'r> {
    Auto {
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: &'r str,
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    None,
}

#[derive(Serialize)]
pub(super) struct Metadata<'r> {
    pub(super) user_id: &'r str,
}

#[derive(Serialize)]
pub(super) struct Thinking {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) budget_tokens: u64,
}

#[derive(Serialize)]
pub(super) struct OutputConfig<'r> {
    pub(super) format: OutputFormat<'r>,
}

#[derive(Serialize)]
pub(super) struct OutputFormat<'r> {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) schema: &'r RawValue,
}

// ---------------------------------------------------------------------------------------------
// Request building
// ---------------------------------------------------------------------------------------------

pub(super) fn static_raw(json: &'static str) -> Result<&'static RawValue, GatewayError> {
    serde_json::from_str(json)
        .map_err(|e| GatewayError::new(500, "api_error", format!("internal JSON constant: {e}")))
}

pub(super) fn unsupported(param: &str, what: &str) -> GatewayError {
    GatewayError::invalid_param(param, format!("{what} is not supported by anthropic"))
}

/// Collects messages, merging consecutive same-role ones.
pub(super) struct Conversation<'r> {
    pub(super) system: Vec<Block<'r>>,
    pub(super) messages: Vec<AMessage<'r>>,
}

impl<'r> Conversation<'r> {
    pub(super) fn push(&mut self, role: &'static str, block: Block<'r>) {
        match self.messages.last_mut() {
            Some(m) if m.role == role => m.content.push(block),
            _ => self.messages.push(AMessage {
                role,
                content: vec![block],
            }),
        }
    }
}

pub(super) fn text_block<'r>(text: &'r Str<'_>) -> Option<Block<'r>> {
    (!text.is_empty()).then_some(Block::Text {
        text: text.text(),
        cache_control: None,
    })
}

/// A text part (or, where allowed, a refusal part) as a text block; `None` when empty.
pub(super) fn text_part<'r>(
    part: &'r ContentPart<'_>,
    path: &dyn Fn() -> String,
    allow_refusal: bool,
) -> Result<Option<Block<'r>>, GatewayError> {
    let text = match part.kind.as_str() {
        "text" => part.text.as_ref().map(Str::text),
        "refusal" if allow_refusal => part.refusal.as_ref().map(Str::text),
        _ => None,
    };
    let Some(text) = text else {
        return Err(GatewayError::invalid_param(
            &path(),
            format!(
                "a `{}` part here must carry `{}`",
                part.kind,
                if part.kind.as_str() == "refusal" {
                    "refusal"
                } else {
                    "text"
                }
            ),
        ));
    };
    Ok((!text.is_empty()).then_some(Block::Text {
        text,
        cache_control: part.cache_control.filter(|c| c.get() != "null"),
    }))
}

pub(super) fn image_block<'r>(image_url: Text<'r>, param: &str) -> Result<Block<'r>, GatewayError> {
    let url = image_url.as_str();
    if let Some(rest) = strip_prefix_ci(url, "data:") {
        let bad =
            |why: &str| GatewayError::invalid_param(param, format!("invalid data URL: {why}"));
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| bad("expected `data:<media type>;base64,<data>`"))?;
        let media = strip_suffix_ci(meta, ";base64")
            .ok_or_else(|| bad("only base64 data URLs are supported"))?;
        let media = media.split(';').next().unwrap_or("").trim();
        let media_type = match media.to_ascii_lowercase().as_str() {
            "image/jpeg" | "image/jpg" => "image/jpeg",
            "image/png" => "image/png",
            "image/gif" => "image/gif",
            "image/webp" => "image/webp",
            _ => {
                return Err(bad(&format!(
                    "media type `{media}` is not supported by anthropic; use image/jpeg, image/png, image/gif or image/webp"
                )))
            }
        };
        if data.is_empty() {
            return Err(bad("no image data"));
        }
        return Ok(Block::Image {
            source: ImageSource::Base64 {
                media_type,
                data: image_url.part(data),
            },
        });
    }
    if strip_prefix_ci(url, "https://").is_some() || strip_prefix_ci(url, "http://").is_some() {
        return Ok(Block::Image {
            source: ImageSource::Url { url },
        });
    }
    Err(GatewayError::invalid_param(
        param,
        "`image_url.url` must be an http(s) URL or a base64 data URL",
    ))
}

pub(super) fn strip_prefix_ci<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

pub(super) fn strip_suffix_ci<'s>(s: &'s str, suffix: &str) -> Option<&'s str> {
    let cut = s.len().checked_sub(suffix.len())?;
    let tail = s.get(cut..)?;
    tail.eq_ignore_ascii_case(suffix)
        .then(|| s.get(..cut))
        .flatten()
}

/// The parsed `arguments` of a tool call: a JSON object, `{}` when empty.
pub(super) fn tool_input<'r>(
    args: Option<&'r str>,
    param: &str,
) -> Result<&'r RawValue, GatewayError> {
    let args = args.unwrap_or("").trim();
    if args.is_empty() {
        return static_raw("{}");
    }
    let raw: &RawValue = serde_json::from_str(args).map_err(|e| {
        GatewayError::invalid_param(param, format!("`arguments` is not valid JSON: {e}"))
    })?;
    if !raw.get().starts_with('{') {
        return Err(GatewayError::invalid_param(
            param,
            "`arguments` must be a JSON object",
        ));
    }
    Ok(raw)
}

pub(super) fn convert_messages<'r>(
    msgs: &'r [ChatMessage<'_>],
) -> Result<Conversation<'r>, GatewayError> {
    let mut conv = Conversation {
        system: Vec::new(),
        messages: Vec::with_capacity(msgs.len()),
    };
    for (i, m) in msgs.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => system_message(&mut conv, i, m)?,
            Role::User => user_message(&mut conv, i, m)?,
            Role::Assistant => assistant_message(&mut conv, i, m)?,
            Role::Tool => tool_message(&mut conv, i, m)?,
            Role::Function => return Err(GatewayError::invalid_param(
                &format!("messages[{i}].role"),
                "legacy `function` messages are not supported by anthropic; use `tool` messages",
            )),
        }
    }
    if conv.messages.is_empty() {
        return Err(GatewayError::invalid_param(
            "messages",
            "anthropic needs at least one user or assistant message with non-empty content",
        ));
    }
    if conv.messages.first().is_some_and(|m| m.role == "assistant") {
        // Anthropic requires the first message to be a user's; see the module doc.
        conv.messages.insert(
            0,
            AMessage {
                role: "user",
                content: vec![Block::Text {
                    text: Text::new(LEADING_USER_PLACEHOLDER),
                    cache_control: None,
                }],
            },
        );
    }
    Ok(conv)
}

/// A system or developer message: its text goes to `system`.
fn system_message<'r>(
    conv: &mut Conversation<'r>,
    i: usize,
    m: &'r ChatMessage<'_>,
) -> Result<(), GatewayError> {
    let part_path = |j: usize| move || format!("messages[{i}].content[{j}]");
    match &m.content {
        None => {}
        Some(MessageContent::Text(t)) => conv.system.extend(text_block(t)),
        Some(MessageContent::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                if p.kind.as_str() != "text" {
                    return Err(GatewayError::invalid_param(
                        &part_path(j)(),
                        format!("`{}` parts are not allowed in system messages", p.kind),
                    ));
                }
                conv.system.extend(text_part(p, &part_path(j), false)?);
            }
        }
    }
    Ok(())
}

/// A user message: text and image blocks of a user turn.
fn user_message<'r>(
    conv: &mut Conversation<'r>,
    i: usize,
    m: &'r ChatMessage<'_>,
) -> Result<(), GatewayError> {
    let part_path = |j: usize| move || format!("messages[{i}].content[{j}]");
    match &m.content {
        None => {}
        Some(MessageContent::Text(t)) => {
            if let Some(b) = text_block(t) {
                conv.push("user", b);
            }
        }
        Some(MessageContent::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let block = match p.kind.as_str() {
                    "text" => text_part(p, &part_path(j), false)?,
                    "image_url" => {
                        let param = format!("messages[{i}].content[{j}].image_url");
                        let img = p.image_url.as_ref().ok_or_else(|| {
                            GatewayError::invalid_param(&param, "`image_url` is required")
                        })?;
                        Some(image_block(img.url.text(), &param)?)
                    }
                    "input_audio" => return Err(unsupported(&part_path(j)(), "audio input")),
                    "file" => return Err(unsupported(&part_path(j)(), "file input")),
                    other => {
                        return Err(GatewayError::invalid_param(
                            &format!("messages[{i}].content[{j}].type"),
                            format!("unknown content part type `{other}`"),
                        ))
                    }
                };
                if let Some(b) = block {
                    conv.push("user", b);
                }
            }
        }
    }
    Ok(())
}

/// An assistant message: text blocks, then its tool calls as `tool_use` blocks.
fn assistant_message<'r>(
    conv: &mut Conversation<'r>,
    i: usize,
    m: &'r ChatMessage<'_>,
) -> Result<(), GatewayError> {
    let part_path = |j: usize| move || format!("messages[{i}].content[{j}]");
    if m.function_call.is_some_and(|f| f.get() != "null") {
        return Err(GatewayError::invalid_param(
            &format!("messages[{i}].function_call"),
            "legacy `function_call` is not supported by anthropic; use `tool_calls`",
        ));
    }
    match &m.content {
        None => {}
        Some(MessageContent::Text(t)) => {
            if let Some(b) = text_block(t) {
                conv.push("assistant", b);
            }
        }
        Some(MessageContent::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                if !matches!(p.kind.as_str(), "text" | "refusal") {
                    return Err(GatewayError::invalid_param(
                        &part_path(j)(),
                        format!("`{}` parts are not allowed in assistant messages", p.kind),
                    ));
                }
                if let Some(b) = text_part(p, &part_path(j), true)? {
                    conv.push("assistant", b);
                }
            }
        }
    }
    for (j, tc) in m.tool_calls.iter().flatten().enumerate() {
        if let Some(kind) = &tc.kind {
            if kind.as_str() != "function" {
                return Err(GatewayError::invalid_param(
                    &format!("messages[{i}].tool_calls[{j}].type"),
                    format!("tool call type `{kind}` is not supported by anthropic"),
                ));
            }
        }
        let input = tool_input(
            tc.function.arguments.as_deref(),
            &format!("messages[{i}].tool_calls[{j}].function.arguments"),
        )?;
        conv.push(
            "assistant",
            Block::ToolUse {
                id: &tc.id,
                name: &tc.function.name,
                input,
            },
        );
    }
    Ok(())
}

/// A tool message: a `tool_result` block of a user turn.
fn tool_message<'r>(
    conv: &mut Conversation<'r>,
    i: usize,
    m: &'r ChatMessage<'_>,
) -> Result<(), GatewayError> {
    let part_path = |j: usize| move || format!("messages[{i}].content[{j}]");
    let id = m.tool_call_id.as_deref().ok_or_else(|| {
        GatewayError::invalid_param(
            &format!("messages[{i}].tool_call_id"),
            "`tool_call_id` is required on tool messages",
        )
    })?;
    let content = match &m.content {
        None => None,
        Some(MessageContent::Text(t)) => (!t.is_empty()).then_some(ToolResultContent::Text(t)),
        Some(MessageContent::Parts(parts)) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                match p.kind.as_str() {
                    "text" => blocks.extend(text_part(p, &part_path(j), false)?),
                    "image_url" => {
                        let param = format!("messages[{i}].content[{j}].image_url");
                        let img = p.image_url.as_ref().ok_or_else(|| {
                            GatewayError::invalid_param(&param, "`image_url` is required")
                        })?;
                        blocks.push(image_block(img.url.text(), &param)?);
                    }
                    other => {
                        return Err(GatewayError::invalid_param(
                            &part_path(j)(),
                            format!("`{other}` parts are not allowed in tool messages"),
                        ))
                    }
                }
            }
            (!blocks.is_empty()).then_some(ToolResultContent::Blocks(blocks))
        }
    };
    conv.push(
        "user",
        Block::ToolResult {
            tool_use_id: id,
            content,
        },
    );
    Ok(())
}

pub(super) fn thinking_budget(effort: &str) -> Result<Option<u64>, GatewayError> {
    Ok(match effort {
        "none" => None,
        "minimal" | "low" => Some(1024),
        "medium" => Some(4096),
        "high" => Some(16384),
        "xhigh" | "max" => Some(32768),
        other => {
            return Err(GatewayError::invalid_param(
                "reasoning_effort",
                format!("`{other}` is not a valid reasoning_effort; expected none, minimal, low, medium, high, xhigh or max"),
            ))
        }
    })
}

pub(super) fn build_request<'r>(
    req: &'r ChatRequest<'_>,
    model: &'r str,
    default_max_tokens: u64,
    stream: bool,
) -> Result<MessagesRequest<'r>, GatewayError> {
    refuse_unsupported(req)?;

    let conv = convert_messages(&req.messages)?;
    let system = match conv.system.as_slice() {
        [] => None,
        [Block::Text {
            text,
            cache_control: None,
        }] => Some(System::Text(*text)),
        _ => Some(System::Blocks(conv.system)),
    };

    let tools = convert_tools(req)?;
    let tool_choice = tool_choice(req, !tools.is_empty());

    let mut max_tokens = req.max_tokens.unwrap_or(default_max_tokens).max(1);
    let mut temperature = req.temperature.map(|t| t.min(1.0));
    // Recent Claude models reject `temperature` together with `top_p` ("cannot both be
    // specified for this model"); Anthropic advises altering only one. Temperature wins.
    let mut top_p = if temperature.is_some() {
        None
    } else {
        req.top_p
    };
    let thinking = match req.reasoning_effort.as_deref() {
        None => None,
        Some(effort) => thinking_budget(effort)?.map(|budget| {
            if max_tokens <= budget {
                max_tokens = budget.saturating_add(max_tokens);
            }
            temperature = None;
            top_p = None;
            Thinking {
                kind: "enabled",
                budget_tokens: budget,
            }
        }),
    };

    let output_config = match &req.response_format {
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            let schema = schema.ok_or_else(|| {
                GatewayError::invalid_param(
                    "response_format.json_schema.schema",
                    "`schema` is required",
                )
            })?;
            Some(OutputConfig {
                format: OutputFormat {
                    kind: "json_schema",
                    schema,
                },
            })
        }
        _ => None,
    };

    Ok(MessagesRequest {
        model,
        system,
        messages: conv.messages,
        max_tokens,
        stop_sequences: req
            .stop
            .iter()
            .map(Str::as_str)
            .filter(|s| !s.is_empty())
            .collect(),
        temperature,
        top_p,
        tools,
        tool_choice,
        metadata: req
            .user
            .as_deref()
            .or(req.safety_identifier.as_deref())
            .filter(|u| !u.is_empty())
            .map(|user_id| Metadata { user_id }),
        thinking,
        output_config,
        stream,
    })
}

/// 400 for what Anthropic cannot do: several choices, log probabilities, legacy function
/// calling, audio output.
fn refuse_unsupported(req: &ChatRequest<'_>) -> Result<(), GatewayError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(GatewayError::invalid_param(
            "n",
            "anthropic returns one choice; `n` must be 1",
        ));
    }
    req.refuse_untranslatable(unsupported)
}

/// `tools[].function` → Anthropic tools (a missing or null schema becomes an empty object one).
fn convert_tools<'r>(req: &'r ChatRequest<'_>) -> Result<Vec<ATool<'r>>, GatewayError> {
    let mut tools = Vec::with_capacity(req.tools.len());
    for (i, t) in req.tools.iter().enumerate() {
        if t.kind.as_str() != "function" {
            return Err(GatewayError::invalid_param(
                &format!("tools[{i}].type"),
                format!("tool type `{}` is not supported by anthropic", t.kind),
            ));
        }
        let f = t.function.as_ref().ok_or_else(|| {
            GatewayError::invalid_param(&format!("tools[{i}].function"), "`function` is required")
        })?;
        let input_schema = match f.parameters {
            Some(p) if p.get() != "null" => {
                if !p.get().starts_with('{') {
                    return Err(GatewayError::invalid_param(
                        &format!("tools[{i}].function.parameters"),
                        "`parameters` must be a JSON schema object",
                    ));
                }
                p
            }
            _ => static_raw(EMPTY_SCHEMA)?,
        };
        tools.push(ATool {
            name: &f.name,
            description: f.description.as_deref().filter(|d| !d.is_empty()),
            input_schema,
        });
    }
    Ok(tools)
}

/// `tool_choice` and `parallel_tool_calls: false` → Anthropic's tool choice (none without tools).
fn tool_choice<'r>(req: &'r ChatRequest<'_>, has_tools: bool) -> Option<AToolChoice<'r>> {
    let disable_parallel = (req.parallel_tool_calls == Some(false)).then_some(true);
    if !has_tools {
        return None;
    }
    match &req.tool_choice {
        None if disable_parallel.is_some() => Some(AToolChoice::Auto {
            disable_parallel_tool_use: disable_parallel,
        }),
        None => None,
        Some(ToolChoice::Auto) => Some(AToolChoice::Auto {
            disable_parallel_tool_use: disable_parallel,
        }),
        Some(ToolChoice::Required) => Some(AToolChoice::Any {
            disable_parallel_tool_use: disable_parallel,
        }),
        Some(ToolChoice::None) => Some(AToolChoice::None),
        Some(ToolChoice::Function(name)) => Some(AToolChoice::Tool {
            name,
            disable_parallel_tool_use: disable_parallel,
        }),
    }
}
