//! The Gemini `generateContent` request, built from the parsed OpenAI chat request: borrowed
//! `#[derive(Serialize)]` shapes and the conversion rules listed in the parent module.

use super::parts::{
    audio_part, file_part, image_part, text, text_part, unsupported, FnCall, FnResponse, FnResult,
    Part, ToolText,
};
use super::*;

// ---------------------------------------------------------------------------------------------
// Gemini request shapes (serialise only, borrowing from the parsed OpenAI request)
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerateContentRequest<'r> {
    pub(super) contents: Vec<Content<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) system_instruction: Option<SystemInstruction<'r>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) tools: Vec<GTool<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_config: Option<ToolConfig<'r>>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    pub(super) generation_config: GenerationConfig<'r>,
}

#[derive(Serialize)]
pub(super) struct Content<'r> {
    pub(super) role: &'static str,
    pub(super) parts: Vec<Part<'r>>,
}

#[derive(Serialize)]
pub(super) struct SystemInstruction<'r> {
    pub(super) parts: Vec<Part<'r>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GTool<'r> {
    pub(super) function_declarations: Vec<FnDecl<'r>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FnDecl<'r> {
    pub(super) name: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) description: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) parameters_json_schema: Option<&'r RawValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ToolConfig<'r> {
    pub(super) function_calling_config: FnCallingConfig<'r>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FnCallingConfig<'r> {
    pub(super) mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) allowed_function_names: Vec<&'r str>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct GenerationConfig<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) candidate_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) stop_sequences: Vec<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) response_json_schema: Option<&'r RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) thinking_config: Option<ThinkingConfig>,
}

impl GenerationConfig<'_> {
    pub(super) fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.top_p.is_none()
            && self.candidate_count.is_none()
            && self.max_output_tokens.is_none()
            && self.stop_sequences.is_empty()
            && self.seed.is_none()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
            && self.response_mime_type.is_none()
            && self.response_json_schema.is_none()
            && self.thinking_config.is_none()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ThinkingConfig {
    pub(super) thinking_budget: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) include_thoughts: bool,
}

// ---------------------------------------------------------------------------------------------
// Request building
// ---------------------------------------------------------------------------------------------

/// Collects contents, merging consecutive same-role ones.
pub(super) struct Conversation<'r> {
    pub(super) system: Vec<Part<'r>>,
    pub(super) contents: Vec<Content<'r>>,
}

impl<'r> Conversation<'r> {
    pub(super) fn push(&mut self, role: &'static str, part: Part<'r>) {
        match self.contents.last_mut() {
            Some(c) if c.role == role => c.parts.push(part),
            _ => self.contents.push(Content {
                role,
                parts: vec![part],
            }),
        }
    }
}

/// The parsed `arguments` of a tool call: a JSON object, `{}` when empty.
pub(super) fn tool_args<'r>(
    args: Option<&'r str>,
    param: &str,
) -> Result<&'r RawValue, GatewayError> {
    let args = args.unwrap_or("").trim();
    if args.is_empty() {
        return empty_object();
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

pub(super) fn empty_object() -> Result<&'static RawValue, GatewayError> {
    serde_json::from_str("{}")
        .map_err(|e| GatewayError::new(500, "api_error", format!("internal JSON constant: {e}")))
}

/// Tool-call id for the `n`th call of a choice, carrying the call's thought signature.
pub(super) fn tool_call_id(n: u32, signature: Option<&str>) -> String {
    match signature.filter(|s| !s.is_empty()) {
        None => format!("call_{n}"),
        Some(sig) => {
            let mut id = String::with_capacity(sig.len() + 16);
            id.push_str("call_");
            id.push_str(&n.to_string());
            id.push_str(SIG_MARK);
            // base64 → base64url without padding: ids stay within [A-Za-z0-9_-].
            for c in sig.chars() {
                match c {
                    '+' => id.push('-'),
                    '/' => id.push('_'),
                    '=' => {}
                    c => id.push(c),
                }
            }
            id
        }
    }
}

/// The thought signature a tool-call id made by [`tool_call_id`] carries (standard base64).
pub(super) fn signature_from_id(id: &str) -> Option<String> {
    let (_, enc) = id.split_once(SIG_MARK)?;
    if enc.is_empty() {
        return None;
    }
    let mut sig: String = enc
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while sig.len() % 4 != 0 {
        sig.push('=');
    }
    Some(sig)
}

/// Name of the function the tool call `id` called: the nearest earlier assistant tool call.
pub(super) fn tool_name<'r>(
    msgs: &'r [ChatMessage<'_>],
    before: usize,
    id: &str,
) -> Option<&'r str> {
    msgs.get(..before)?.iter().rev().find_map(|m| {
        if m.role != Role::Assistant {
            return None;
        }
        m.tool_calls
            .iter()
            .flatten()
            .find(|tc| tc.id.as_str() == id)
            .map(|tc| tc.function.name.as_str())
    })
}

/// Text of a tool message: the string, or its text parts joined.
pub(super) fn tool_text<'r>(
    m: &'r ChatMessage<'_>,
    i: usize,
) -> Result<ToolText<'r>, GatewayError> {
    Ok(match &m.content {
        None => ToolText::One(Text::new("")),
        Some(MessageContent::Text(t)) => ToolText::One(t.text()),
        Some(MessageContent::Parts(parts)) => {
            let mut out = ToolText::One(Text::new(""));
            for (j, p) in parts.iter().enumerate() {
                let t = match (p.kind.as_str(), p.text.as_ref()) {
                    ("text", Some(t)) => t.text(),
                    _ => {
                        return Err(GatewayError::invalid_param(
                            &format!("messages[{i}].content[{j}]"),
                            format!(
                            "only text parts are supported in tool messages for gemini (got `{}`)",
                            p.kind
                        ),
                        ))
                    }
                };
                match &mut out {
                    ToolText::One(o) if o.is_empty() => out = ToolText::One(t),
                    ToolText::One(o) => out = ToolText::Joined([o.as_str(), t.as_str()].concat()),
                    ToolText::Joined(s) => s.push_str(t.as_str()),
                }
            }
            out
        }
    })
}

pub(super) fn convert_messages<'r>(
    msgs: &'r [ChatMessage<'_>],
) -> Result<Conversation<'r>, GatewayError> {
    let mut conv = Conversation {
        system: Vec::new(),
        contents: Vec::with_capacity(msgs.len()),
    };
    for (i, m) in msgs.iter().enumerate() {
        match m.role {
            Role::System | Role::Developer => system_message(&mut conv, i, m)?,
            Role::User => user_message(&mut conv, i, m)?,
            Role::Assistant => assistant_message(&mut conv, i, m)?,
            Role::Tool => tool_message(&mut conv, msgs, i, m)?,
            Role::Function => {
                return Err(unsupported(
                    &format!("messages[{i}].role"),
                    "legacy `function` messages (use `tool` messages)",
                ))
            }
        }
    }
    if conv.contents.is_empty() {
        return Err(GatewayError::invalid_param(
            "messages",
            "gemini needs at least one user or assistant message with non-empty content",
        ));
    }
    if conv.contents.first().is_some_and(|c| c.role == "model") {
        conv.contents.insert(
            0,
            Content {
                role: "user",
                parts: vec![Part {
                    text: Some(Text::new(LEADING_USER_PLACEHOLDER)),
                    ..Default::default()
                }],
            },
        );
    }
    Ok(conv)
}

/// A system or developer message: its text goes to `systemInstruction`.
fn system_message<'r>(
    conv: &mut Conversation<'r>,
    i: usize,
    m: &'r ChatMessage<'_>,
) -> Result<(), GatewayError> {
    let part_param = |j: usize| format!("messages[{i}].content[{j}]");
    match &m.content {
        None => {}
        Some(MessageContent::Text(t)) => conv.system.extend(text(t.text())),
        Some(MessageContent::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                if p.kind.as_str() != "text" {
                    return Err(GatewayError::invalid_param(
                        &part_param(j),
                        format!("`{}` parts are not allowed in system messages", p.kind),
                    ));
                }
                conv.system.extend(text_part(p, &part_param(j), false)?);
            }
        }
    }
    Ok(())
}

/// A user message: the parts of a user turn.
fn user_message<'r>(
    conv: &mut Conversation<'r>,
    i: usize,
    m: &'r ChatMessage<'_>,
) -> Result<(), GatewayError> {
    let part_param = |j: usize| format!("messages[{i}].content[{j}]");
    match &m.content {
        None => {}
        Some(MessageContent::Text(t)) => {
            if let Some(p) = text(t.text()) {
                conv.push("user", p);
            }
        }
        Some(MessageContent::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let part = match p.kind.as_str() {
                    "text" => text_part(p, &part_param(j), false)?,
                    "image_url" => {
                        let param = format!("{}.image_url", part_param(j));
                        let img = p.image_url.as_ref().ok_or_else(|| {
                            GatewayError::invalid_param(&param, "`image_url` is required")
                        })?;
                        Some(image_part(img.url.text(), &param)?)
                    }
                    "input_audio" => Some(audio_part(
                        p.input_audio,
                        &format!("{}.input_audio", part_param(j)),
                    )?),
                    "file" => Some(file_part(p.file, &format!("{}.file", part_param(j)))?),
                    other => {
                        return Err(GatewayError::invalid_param(
                            &format!("{}.type", part_param(j)),
                            format!("unknown content part type `{other}`"),
                        ))
                    }
                };
                if let Some(part) = part {
                    conv.push("user", part);
                }
            }
        }
    }
    Ok(())
}

/// An assistant message: text parts, then its tool calls as `functionCall` parts.
fn assistant_message<'r>(
    conv: &mut Conversation<'r>,
    i: usize,
    m: &'r ChatMessage<'_>,
) -> Result<(), GatewayError> {
    let part_param = |j: usize| format!("messages[{i}].content[{j}]");
    if m.function_call.is_some_and(|f| f.get() != "null") {
        return Err(unsupported(
            &format!("messages[{i}].function_call"),
            "legacy `function_call` (use `tool_calls`)",
        ));
    }
    match &m.content {
        None => {}
        Some(MessageContent::Text(t)) => {
            if let Some(p) = text(t.text()) {
                conv.push("model", p);
            }
        }
        Some(MessageContent::Parts(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                if !matches!(p.kind.as_str(), "text" | "refusal") {
                    return Err(GatewayError::invalid_param(
                        &part_param(j),
                        format!("`{}` parts are not allowed in assistant messages", p.kind),
                    ));
                }
                if let Some(part) = text_part(p, &part_param(j), true)? {
                    conv.push("model", part);
                }
            }
        }
    }
    // Signatures go back exactly as received; a turn with none at all (written by
    // another model) gets the placeholder on its first call, the one Gemini checks.
    let signed = m
        .tool_calls
        .iter()
        .flatten()
        .any(|tc| signature_from_id(&tc.id).is_some());
    for (j, tc) in m.tool_calls.iter().flatten().enumerate() {
        if let Some(kind) = &tc.kind {
            if kind.as_str() != "function" {
                return Err(unsupported(
                    &format!("messages[{i}].tool_calls[{j}].type"),
                    &format!("tool call type `{kind}`"),
                ));
            }
        }
        let args = tool_args(
            tc.function.arguments.as_deref(),
            &format!("messages[{i}].tool_calls[{j}].function.arguments"),
        )?;
        let signature = match signature_from_id(&tc.id) {
            Some(s) => Some(Cow::Owned(s)),
            None if !signed && j == 0 => Some(Cow::Borrowed(SKIP_THOUGHT_SIGNATURE)),
            None => None,
        };
        conv.push(
            "model",
            Part {
                function_call: Some(FnCall {
                    name: &tc.function.name,
                    args,
                }),
                thought_signature: signature,
                ..Default::default()
            },
        );
    }
    Ok(())
}

/// A tool message: a `functionResponse` part of a user turn, named after its call.
fn tool_message<'r>(
    conv: &mut Conversation<'r>,
    msgs: &'r [ChatMessage<'_>],
    i: usize,
    m: &'r ChatMessage<'_>,
) -> Result<(), GatewayError> {
    let param = format!("messages[{i}].tool_call_id");
    let id = m.tool_call_id.as_deref().ok_or_else(|| {
        GatewayError::invalid_param(&param, "`tool_call_id` is required on tool messages")
    })?;
    let name = tool_name(msgs, i, id).ok_or_else(|| {
            GatewayError::invalid_param(
                &param,
                format!("no earlier assistant message has a tool call with id `{id}` (gemini needs the function's name)"),
            )
        })?;
    let body = tool_text(m, i)?;
    let response = match body {
        ToolText::One(t) if t.as_str().trim_start().starts_with('{') => {
            match serde_json::from_str::<&RawValue>(t.as_str()) {
                Ok(raw) => FnResult::Object(raw),
                Err(_) => FnResult::Output { output: body },
            }
        }
        _ => FnResult::Output { output: body },
    };
    conv.push(
        "user",
        Part {
            function_response: Some(FnResponse { name, response }),
            ..Default::default()
        },
    );
    Ok(())
}

pub(super) fn thinking_budget(effort: &str) -> Result<u64, GatewayError> {
    Ok(match effort {
        "none" => 0,
        "minimal" => 512,
        "low" => 1024,
        "medium" => 8192,
        "high" => 24576,
        "xhigh" | "max" => 32768,
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
) -> Result<GenerateContentRequest<'r>, GatewayError> {
    refuse_unsupported(req)?;
    let seed = match req.seed {
        None => None,
        Some(s) if i32::try_from(s).is_ok() => Some(s),
        Some(_) => {
            return Err(GatewayError::invalid_param(
                "seed",
                "gemini takes a 32-bit `seed` (-2147483648..=2147483647)",
            ))
        }
    };

    let conv = convert_messages(&req.messages)?;

    let decls = convert_tools(req)?;
    let tool_config = tool_config(req, !decls.is_empty());
    let tools = if decls.is_empty() {
        Vec::new()
    } else {
        vec![GTool {
            function_declarations: decls,
        }]
    };

    let (response_mime_type, response_json_schema) = match &req.response_format {
        None | Some(ResponseFormat::Text) => (None, None),
        Some(ResponseFormat::JsonObject) => (Some("application/json"), None),
        Some(ResponseFormat::JsonSchema { schema, .. }) => (Some("application/json"), *schema),
    };
    let thinking_config = match req.reasoning_effort.as_deref() {
        None => None,
        Some(effort) => {
            let budget = thinking_budget(effort)?;
            Some(ThinkingConfig {
                thinking_budget: budget,
                include_thoughts: budget > 0,
            })
        }
    };

    Ok(GenerateContentRequest {
        contents: conv.contents,
        system_instruction: (!conv.system.is_empty())
            .then_some(SystemInstruction { parts: conv.system }),
        tools,
        tool_config,
        generation_config: GenerationConfig {
            temperature: req.temperature,
            top_p: req.top_p,
            candidate_count: req.n.filter(|n| *n > 1),
            max_output_tokens: req.max_tokens,
            stop_sequences: req.stop.iter().map(|s| s.as_str()).collect(),
            seed,
            presence_penalty: req.presence_penalty,
            frequency_penalty: req.frequency_penalty,
            response_mime_type,
            response_json_schema,
            thinking_config,
        },
    })
}

/// 400 for what Gemini cannot do: `n: 0`, log probabilities, legacy function calling, audio
/// output.
fn refuse_unsupported(req: &ChatRequest<'_>) -> Result<(), GatewayError> {
    if req.n == Some(0) {
        return Err(GatewayError::invalid_param("n", "`n` must be at least 1"));
    }
    req.refuse_untranslatable(unsupported)
}

/// `tools[].function` → Gemini function declarations (`parameters` as `parametersJsonSchema`).
fn convert_tools<'r>(req: &'r ChatRequest<'_>) -> Result<Vec<FnDecl<'r>>, GatewayError> {
    let mut decls = Vec::with_capacity(req.tools.len());
    for (i, t) in req.tools.iter().enumerate() {
        if t.kind.as_str() != "function" {
            return Err(unsupported(
                &format!("tools[{i}].type"),
                &format!("tool type `{}`", t.kind),
            ));
        }
        let f = t.function.as_ref().ok_or_else(|| {
            GatewayError::invalid_param(&format!("tools[{i}].function"), "`function` is required")
        })?;
        let parameters = match f.parameters {
            Some(p) if p.get() != "null" => {
                if !p.get().starts_with('{') {
                    return Err(GatewayError::invalid_param(
                        &format!("tools[{i}].function.parameters"),
                        "`parameters` must be a JSON schema object",
                    ));
                }
                Some(p)
            }
            _ => None,
        };
        decls.push(FnDecl {
            name: &f.name,
            description: f.description.as_deref().filter(|d| !d.is_empty()),
            parameters_json_schema: parameters,
        });
    }
    Ok(decls)
}

/// `tool_choice` → `toolConfig.functionCallingConfig` (none without tools).
fn tool_config<'r>(req: &'r ChatRequest<'_>, has_tools: bool) -> Option<ToolConfig<'r>> {
    if !has_tools {
        return None;
    }
    req.tool_choice.as_ref().map(|c| {
        let (mode, allowed) = match c {
            ToolChoice::Auto => ("AUTO", Vec::new()),
            ToolChoice::None => ("NONE", Vec::new()),
            ToolChoice::Required => ("ANY", Vec::new()),
            ToolChoice::Function(name) => ("ANY", vec![name.as_str()]),
        };
        ToolConfig {
            function_calling_config: FnCallingConfig {
                mode,
                allowed_function_names: allowed,
            },
        }
    })
}
