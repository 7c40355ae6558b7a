//! OpenAI client → Anthropic Messages API (`POST {base_path}/messages`).
//!
//! The request is read into the typed shapes of [`crate::openai::chat`] (borrowing from the
//! client's body) and the Anthropic body is serialised from borrowed structs in one pass; answers
//! are rebuilt as OpenAI `chat.completion` / `chat.completion.chunk` the same way.
//!
//! Mapping decisions:
//! - `system` and `developer` messages, wherever they are, become the top-level `system` (in
//!   order). User, assistant and tool messages become `messages`; consecutive messages of the same
//!   Anthropic role are merged (Anthropic requires alternation), and tool results are `tool_result`
//!   blocks of a **user** message, so parallel results and a user message after them share one.
//! - A conversation that starts with an assistant message (an assistant greeting, a few-shot
//!   prefix) gets a user message with [`LEADING_USER_PLACEHOLDER`] in front: Anthropic requires the
//!   first message to be a user's, and rejecting such requests would break ordinary OpenAI clients.
//! - Empty text (e.g. `content: ""` on an assistant message with tool calls) is dropped, never sent
//!   as an empty text block (Anthropic rejects those). A request with no user/assistant content
//!   left is a 400.
//! - `temperature`: OpenAI's range is 0..2, Anthropic's 0..1. Values up to 1 mean the same on both
//!   and pass unchanged; values above 1 are clamped to 1.0 (scaling everything by ½ would change
//!   the meaning of the common 0.2–1.0 settings). When both `temperature` and `top_p` are given,
//!   only `temperature` is sent: recent Claude models reject the pair.
//! - `max_completion_tokens` wins over `max_tokens`; with neither, the provider's
//!   `default_max_tokens` (Anthropic requires one).
//! - `reasoning_effort` → `thinking {type:"enabled", budget_tokens}`: minimal/low 1024 (Anthropic's
//!   minimum), medium 4096, high 16384, xhigh/max 32768; `none` sends no thinking. When
//!   `max_tokens` is not above the budget it is raised to budget + max_tokens (the answer keeps
//!   what the client asked for). With thinking on, `temperature` and `top_p` are dropped (Anthropic
//!   rejects them unless at their defaults).
//! - `response_format` `json_schema` → `output_config.format {type:"json_schema", schema}`;
//!   `text` and `json_object` (no schema to give) are dropped.
//! - `parallel_tool_calls: false` → `disable_parallel_tool_use: true` on the tool choice (an
//!   `auto` choice is created when none was given). `tool_choice` without `tools` is dropped.
//! - `user` (or else `safety_identifier`) → `metadata.user_id`.
//! - Rejected with 400: `n` > 1 (Anthropic returns one choice), `logprobs: true`, audio
//!   (`modalities` with `audio`, `audio`, `input_audio` parts), `file` parts, legacy function
//!   calling (`functions`, `function_call`, `role: "function"`) — use `tools`.
//! - Dropped: `seed`, `frequency_penalty`, `presence_penalty`, `logit_bias`, `top_logprobs`,
//!   `store`, OpenAI `metadata`, `service_tier`, `prediction`, `prompt_cache_key`, `verbosity`,
//!   message `name`, tool `strict` and every other field Anthropic has no equivalent for.
//!
//! Responses: text blocks join into `content`, `tool_use` blocks become `tool_calls` (input as
//! compact JSON text), `thinking` blocks become `reasoning_content`. Stop reasons: end_turn,
//! stop_sequence, pause_turn → stop; max_tokens, model_context_window_exceeded → length; tool_use →
//! tool_calls; refusal → content_filter. Usage: prompt = input + cache read + cache creation.
//!
//! Streams: Anthropic SSE events become `chat.completion.chunk` events (tool calls numbered from 0
//! in order, independent of Anthropic's block index; a tool call that streamed no input gets
//! `arguments: "{}"` so clients can parse it). An `error` event, an unparsable event or an
//! upstream end before `message_stop` becomes an OpenAI error event followed by `data: [DONE]`;
//! nothing is written after `[DONE]`. A text part's `cache_control` (Anthropic's prompt-caching
//! marker, sent by some OpenAI clients) is passed through.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

use super::openai_chunks::{self, ChunkStream, ChunkWriter};
use super::{client_status, provider_error, ChatCall, ChatTranslator, ProviderRequest, Usage};
use crate::error::{kind_for_status, GatewayError};
use crate::json_text::Text;
use crate::openai::chat::{
    AssistantMessage, ChatCompletion, ChatMessage, ChatRequest, Choice, ContentPart, FunctionOut,
    MessageContent, ResponseFormat, Role, Str, ToolCallOut, ToolChoice,
};
use crate::sse::{SseEvent, SseParser};

/// Text of the user message put before a conversation that starts with an assistant message.
pub const LEADING_USER_PLACEHOLDER: &str = "(conversation start)";

/// `input_schema` for a function declared without `parameters`.
const EMPTY_SCHEMA: &str = r#"{"type":"object","properties":{}}"#;

#[derive(Default)]
pub struct AnthropicChat {
    provider: String,
    stream: bool,
    created: u64,
    usage: Option<Usage>,
    s: StreamState,
}

#[derive(Default)]
struct StreamState {
    parser: SseParser,
    /// The chunks' envelope; the id and model come with `message_start`.
    w: ChunkWriter,
    /// Anthropic block index → what it is, for the blocks currently open.
    open: Vec<(u64, OpenBlock)>,
    /// Next OpenAI tool-call index.
    next_tool: u32,
    tokens: TokenCounts,
}

#[derive(Clone, Copy)]
enum OpenBlock {
    /// A client tool call: its OpenAI index, and whether any argument text went out.
    Tool {
        index: u32,
        has_args: bool,
    },
    Other,
}

#[derive(Default, Clone, Copy)]
struct TokenCounts {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
}

impl TokenCounts {
    fn update(&mut self, u: &AUsage) {
        if let Some(v) = u.input_tokens {
            self.input = v;
        }
        if let Some(v) = u.output_tokens {
            self.output = v;
        }
        if let Some(v) = u.cache_read_input_tokens {
            self.cache_read = v;
        }
        if let Some(v) = u.cache_creation_input_tokens {
            self.cache_creation = v;
        }
    }

    fn to_usage(self) -> Usage {
        Usage {
            prompt_tokens: self
                .input
                .saturating_add(self.cache_read)
                .saturating_add(self.cache_creation),
            completion_tokens: self.output,
            cached_tokens: self.cache_read,
            cache_creation_tokens: self.cache_creation,
            reasoning_tokens: 0,
        }
    }
}

impl AnthropicChat {
    fn provider_name(&self) -> &str {
        if self.provider.is_empty() {
            "anthropic"
        } else {
            &self.provider
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Anthropic request shapes (serialise only, borrowing from the parsed OpenAI request)
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct MessagesRequest<'r> {
    model: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<System<'r>>,
    messages: Vec<AMessage<'r>>,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ATool<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<AToolChoice<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<Thinking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<OutputConfig<'r>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum System<'r> {
    Text(Text<'r>),
    Blocks(Vec<Block<'r>>),
}

#[derive(Serialize)]
struct AMessage<'r> {
    role: &'static str,
    content: Vec<Block<'r>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'r> {
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
enum ImageSource<'r> {
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
enum ToolResultContent<'r> {
    Text(&'r str),
    Blocks(Vec<Block<'r>>),
}

#[derive(Serialize)]
struct ATool<'r> {
    name: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'r str>,
    input_schema: &'r RawValue,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum AToolChoice<'r> {
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
struct Metadata<'r> {
    user_id: &'r str,
}

#[derive(Serialize)]
struct Thinking {
    #[serde(rename = "type")]
    kind: &'static str,
    budget_tokens: u64,
}

#[derive(Serialize)]
struct OutputConfig<'r> {
    format: OutputFormat<'r>,
}

#[derive(Serialize)]
struct OutputFormat<'r> {
    #[serde(rename = "type")]
    kind: &'static str,
    schema: &'r RawValue,
}

// ---------------------------------------------------------------------------------------------
// Request building
// ---------------------------------------------------------------------------------------------

fn static_raw(json: &'static str) -> Result<&'static RawValue, GatewayError> {
    serde_json::from_str(json)
        .map_err(|e| GatewayError::new(500, "api_error", format!("internal JSON constant: {e}")))
}

fn unsupported(param: &str, what: &str) -> GatewayError {
    GatewayError::invalid_param(param, format!("{what} is not supported by anthropic"))
}

/// Collects messages, merging consecutive same-role ones.
struct Conversation<'r> {
    system: Vec<Block<'r>>,
    messages: Vec<AMessage<'r>>,
}

impl<'r> Conversation<'r> {
    fn push(&mut self, role: &'static str, block: Block<'r>) {
        match self.messages.last_mut() {
            Some(m) if m.role == role => m.content.push(block),
            _ => self.messages.push(AMessage {
                role,
                content: vec![block],
            }),
        }
    }
}

fn text_block<'r>(text: &'r Str<'_>) -> Option<Block<'r>> {
    (!text.is_empty()).then_some(Block::Text {
        text: text.text(),
        cache_control: None,
    })
}

/// A text part (or, where allowed, a refusal part) as a text block; `None` when empty.
fn text_part<'r>(
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

fn image_block<'r>(image_url: Text<'r>, param: &str) -> Result<Block<'r>, GatewayError> {
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

fn strip_prefix_ci<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

fn strip_suffix_ci<'s>(s: &'s str, suffix: &str) -> Option<&'s str> {
    let cut = s.len().checked_sub(suffix.len())?;
    let tail = s.get(cut..)?;
    tail.eq_ignore_ascii_case(suffix)
        .then(|| s.get(..cut))
        .flatten()
}

/// The parsed `arguments` of a tool call: a JSON object, `{}` when empty.
fn tool_input<'r>(args: Option<&'r str>, param: &str) -> Result<&'r RawValue, GatewayError> {
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

fn convert_messages<'r>(msgs: &'r [ChatMessage<'_>]) -> Result<Conversation<'r>, GatewayError> {
    let mut conv = Conversation {
        system: Vec::new(),
        messages: Vec::with_capacity(msgs.len()),
    };
    for (i, m) in msgs.iter().enumerate() {
        let part_path = |j: usize| move || format!("messages[{i}].content[{j}]");
        match m.role {
            Role::System | Role::Developer => match &m.content {
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
            },
            Role::User => match &m.content {
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
                            "input_audio" => {
                                return Err(unsupported(&part_path(j)(), "audio input"))
                            }
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
            },
            Role::Assistant => {
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
                                    format!(
                                        "`{}` parts are not allowed in assistant messages",
                                        p.kind
                                    ),
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
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().ok_or_else(|| {
                    GatewayError::invalid_param(
                        &format!("messages[{i}].tool_call_id"),
                        "`tool_call_id` is required on tool messages",
                    )
                })?;
                let content = match &m.content {
                    None => None,
                    Some(MessageContent::Text(t)) => {
                        (!t.is_empty()).then_some(ToolResultContent::Text(t))
                    }
                    Some(MessageContent::Parts(parts)) => {
                        let mut blocks = Vec::with_capacity(parts.len());
                        for (j, p) in parts.iter().enumerate() {
                            match p.kind.as_str() {
                                "text" => blocks.extend(text_part(p, &part_path(j), false)?),
                                "image_url" => {
                                    let param = format!("messages[{i}].content[{j}].image_url");
                                    let img = p.image_url.as_ref().ok_or_else(|| {
                                        GatewayError::invalid_param(
                                            &param,
                                            "`image_url` is required",
                                        )
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
            }
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

fn thinking_budget(effort: &str) -> Result<Option<u64>, GatewayError> {
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

fn build_request<'r>(
    req: &'r ChatRequest<'_>,
    model: &'r str,
    default_max_tokens: u64,
    stream: bool,
) -> Result<MessagesRequest<'r>, GatewayError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(GatewayError::invalid_param(
            "n",
            "anthropic returns one choice; `n` must be 1",
        ));
    }
    if req.logprobs {
        return Err(unsupported("logprobs", "`logprobs`"));
    }
    if req.functions.is_some() {
        return Err(unsupported("functions", "legacy `functions` (use `tools`)"));
    }
    if req.function_call.is_some() {
        return Err(unsupported(
            "function_call",
            "legacy `function_call` (use `tool_choice`)",
        ));
    }
    if req.audio.is_some() || req.modalities.iter().any(|m| m.as_str() == "audio") {
        let p = if req.audio.is_some() {
            "audio"
        } else {
            "modalities"
        };
        return Err(unsupported(p, "audio output"));
    }

    let conv = convert_messages(&req.messages)?;
    let system = match conv.system.as_slice() {
        [] => None,
        [Block::Text {
            text,
            cache_control: None,
        }] => Some(System::Text(*text)),
        _ => Some(System::Blocks(conv.system)),
    };

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

    let disable_parallel = (req.parallel_tool_calls == Some(false)).then_some(true);
    let tool_choice = if tools.is_empty() {
        None
    } else {
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
    };

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

// ---------------------------------------------------------------------------------------------
// Anthropic response shapes (deserialise, borrowing from the provider's body)
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct MessageResponse<'a> {
    #[serde(rename = "type", borrow)]
    kind: Str<'a>,
    #[serde(borrow)]
    id: Str<'a>,
    #[serde(borrow)]
    model: Str<'a>,
    #[serde(borrow)]
    content: Vec<ABlock<'a>>,
    #[serde(borrow)]
    stop_reason: Option<Str<'a>>,
    usage: Option<AUsage>,
}

/// Any content block, flat.
#[derive(Deserialize)]
struct ABlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Str<'a>,
    #[serde(borrow)]
    text: Option<Str<'a>>,
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    input: Option<&'a RawValue>,
    #[serde(borrow)]
    thinking: Option<Str<'a>>,
}

#[derive(Deserialize, Default)]
struct AUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

/// Any stream event, flat.
#[derive(Deserialize)]
struct StreamEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    message: Option<StartMessage<'a>>,
    index: Option<u64>,
    #[serde(borrow)]
    content_block: Option<ABlock<'a>>,
    #[serde(borrow)]
    delta: Option<EventDelta<'a>>,
    usage: Option<AUsage>,
    #[serde(borrow)]
    error: Option<AError<'a>>,
}

#[derive(Deserialize)]
struct StartMessage<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    model: Option<Str<'a>>,
    usage: Option<AUsage>,
}

/// `content_block_delta.delta` and `message_delta.delta`, flat.
#[derive(Deserialize)]
struct EventDelta<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    text: Option<Str<'a>>,
    #[serde(borrow)]
    partial_json: Option<Str<'a>>,
    #[serde(borrow)]
    thinking: Option<Str<'a>>,
    #[serde(borrow)]
    stop_reason: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct AError<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    message: Option<Str<'a>>,
}

fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and anything newer.
        _ => "stop",
    }
}

/// The provider status an Anthropic error type goes with (for in-band stream errors).
fn status_for_error_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// JSON text without insignificant whitespace (the text must be valid JSON).
fn compact_json(json: &str) -> Cow<'_, str> {
    let b = json.as_bytes();
    let mut in_str = false;
    let mut esc = false;
    let needs = b.iter().any(|&c| {
        let ws = !in_str && matches!(c, b' ' | b'\n' | b'\r' | b'\t');
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        }
        ws
    });
    if !needs {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len());
    let (mut in_str, mut esc) = (false, false);
    for c in json.chars() {
        if in_str {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if matches!(c, ' ' | '\n' | '\r' | '\t') {
            continue;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

fn bad_gateway(provider: &str, what: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(502, "api_error", format!("{provider} returned {what}"))
}

// ---------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------

impl AnthropicChat {
    /// `at_end`: the event was flushed at end of stream without its closing blank line; if it does
    /// not parse it was cut off, and the stream-ended error that follows says so.
    fn on_event(&mut self, ev: SseEvent, at_end: bool, out: &mut Vec<u8>) {
        if self.s.w.is_done() {
            return;
        }
        // Nearly every event of a stream is a text delta: its text is copied as the JSON string
        // it already is, without parsing the event (the rest go through serde below).
        if self.s.w.has_prefix() {
            if let Some(text) = text_delta_fast(ev.data) {
                if text != "\"\"" {
                    self.s.w.text_token(out, text);
                }
                return;
            }
        }
        let data = ev.text();
        let e: StreamEvent<'_> = match serde_json::from_str(&data) {
            Ok(e) => e,
            Err(_) if at_end => return,
            Err(err) => {
                let msg = format!("an invalid stream event: {err}");
                let g = bad_gateway(self.provider_name(), msg);
                self.s.w.fail(out, &g);
                return;
            }
        };
        let kind = e.kind.as_deref().or(ev.event).unwrap_or_default();
        match kind {
            "message_start" => {
                if let Some(m) = &e.message {
                    if let Some(id) = &m.id {
                        self.s.w.id = id.to_string();
                    }
                    if let Some(model) = &m.model {
                        self.s.w.model = model.to_string();
                    }
                    if let Some(u) = &m.usage {
                        self.s.tokens.update(u);
                    }
                }
                self.usage = Some(self.s.tokens.to_usage());
                self.s.w.render_prefix();
                self.s.w.role(out, 0);
            }
            "content_block_start" => self.block_start(&e, out),
            "content_block_delta" => self.block_delta(&e, out),
            "content_block_stop" => {
                let index = e.index.unwrap_or(0);
                if let Some(pos) = self.s.open.iter().position(|(i, _)| *i == index) {
                    let (_, block) = self.s.open.swap_remove(pos);
                    if let OpenBlock::Tool {
                        index: k,
                        has_args: false,
                    } = block
                    {
                        // A call without input: OpenAI clients parse the arguments, so give `{}`.
                        self.s.w.tool_args(out, 0, k, "{}");
                    }
                }
            }
            "message_delta" => {
                if let Some(u) = &e.usage {
                    self.s.tokens.update(u);
                    self.usage = Some(self.s.tokens.to_usage());
                }
                let reason = e.delta.as_ref().and_then(|d| d.stop_reason.as_deref());
                self.s.w.finish(out, 0, finish_reason(reason));
            }
            "message_stop" => {
                let usage = self.s.tokens.to_usage();
                self.s.w.close(out, usage);
            }
            "error" => {
                let g = self.stream_error(e.error.as_ref());
                self.s.w.fail(out, &g);
            }
            // ping and event kinds added later.
            _ => {}
        }
    }

    fn block_start(&mut self, e: &StreamEvent<'_>, out: &mut Vec<u8>) {
        let index = e.index.unwrap_or(0);
        let Some(b) = &e.content_block else { return };
        let w = &self.s.w;
        let open = match b.kind.as_str() {
            "tool_use" => {
                let k = self.s.next_tool;
                self.s.next_tool = k.saturating_add(1);
                let (id, name) = (b.id.as_deref(), b.name.as_deref());
                w.tool_start(out, 0, k, id.unwrap_or(""), name.unwrap_or(""));
                OpenBlock::Tool {
                    index: k,
                    has_args: false,
                }
            }
            "text" => {
                if let Some(t) = b.text.as_deref().filter(|t| !t.is_empty()) {
                    w.content(out, 0, t);
                }
                OpenBlock::Other
            }
            "thinking" => {
                if let Some(t) = b.thinking.as_deref().filter(|t| !t.is_empty()) {
                    w.reasoning(out, 0, t);
                }
                OpenBlock::Other
            }
            _ => OpenBlock::Other,
        };
        self.s.open.retain(|(i, _)| *i != index);
        self.s.open.push((index, open));
    }

    fn block_delta(&mut self, e: &StreamEvent<'_>, out: &mut Vec<u8>) {
        let Some(d) = &e.delta else { return };
        match d.kind.as_deref() {
            Some("text_delta") => {
                if let Some(t) = d.text.as_deref().filter(|t| !t.is_empty()) {
                    self.s.w.content(out, 0, t);
                }
            }
            Some("thinking_delta") => {
                if let Some(t) = d.thinking.as_deref().filter(|t| !t.is_empty()) {
                    self.s.w.reasoning(out, 0, t);
                }
            }
            Some("input_json_delta") => {
                let Some(json) = d.partial_json.as_deref().filter(|j| !j.is_empty()) else {
                    return;
                };
                let index = e.index.unwrap_or(0);
                let Some(slot) = self.s.open.iter_mut().find(|(i, _)| *i == index) else {
                    return;
                };
                if let OpenBlock::Tool { index: k, has_args } = &mut slot.1 {
                    *has_args = true;
                    let k = *k;
                    self.s.w.tool_args(out, 0, k, json);
                }
            }
            // signature_delta, citations_delta and newer kinds carry nothing for OpenAI.
            _ => {}
        }
    }

    /// An `error` event as the error the client gets.
    fn stream_error(&self, error: Option<&AError<'_>>) -> GatewayError {
        let (etype, emsg) = match error {
            Some(err) => (
                err.kind.as_deref().unwrap_or("api_error"),
                err.message.as_deref().unwrap_or(""),
            ),
            None => ("api_error", ""),
        };
        let client = client_status(status_for_error_type(etype));
        let mut g = GatewayError::new(
            client,
            kind_for_status(client),
            format!("{} stream error: {etype}: {emsg}", self.provider_name()),
        );
        g.code = Some(if etype == "overloaded_error" {
            "overloaded".to_string()
        } else {
            etype.to_string()
        });
        g
    }
}

impl ChunkStream for AnthropicChat {
    fn writer(&self) -> &ChunkWriter {
        &self.s.w
    }

    fn writer_mut(&mut self) -> &mut ChunkWriter {
        &mut self.s.w
    }

    fn decode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut parser = std::mem::take(&mut self.s.parser);
        parser.feed(chunk, &mut |ev| self.on_event(ev, false, out));
        self.s.parser = parser;
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        let mut parser = std::mem::take(&mut self.s.parser);
        parser.finish(&mut |ev| self.on_event(ev, true, out));
        self.s.parser = parser;
    }

    fn at_end(&self) -> Result<Usage, GatewayError> {
        let msg = format!("{} stream ended before message_stop", self.provider_name());
        Err(GatewayError::new(502, "api_error", msg))
    }

    fn release(&mut self) {
        self.s.parser = SseParser::new();
    }
}

// ---------------------------------------------------------------------------------------------
// The translator
// ---------------------------------------------------------------------------------------------

impl ChatTranslator for AnthropicChat {
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        let env = call.envelope;
        let p = call.provider;
        self.provider = p.name.clone();
        self.stream = env.stream;
        self.created = call.now_unix;
        self.s.w.include_usage = env.stream && env.include_usage;
        self.s.w.created = call.now_unix;

        let req = ChatRequest::from_envelope(env)?;
        let body = build_request(
            &req,
            call.upstream_model,
            u64::from(p.default_max_tokens),
            env.stream,
        )?;
        let mut bytes = Vec::with_capacity(call.raw.len() + 256);
        serde_json::to_writer(&mut bytes, &body).map_err(|e| {
            GatewayError::new(
                500,
                "api_error",
                format!("serialising the anthropic request: {e}"),
            )
        })?;

        let mut headers = Vec::with_capacity(3 + p.headers.len());
        if let Some(key) = &p.api_key {
            headers.push(("x-api-key".to_string(), key.clone()));
        }
        headers.push(("anthropic-version".to_string(), p.anthropic_version.clone()));
        headers.push(("content-type".to_string(), "application/json".to_string()));
        headers.extend(p.headers.iter().cloned());
        Ok(ProviderRequest {
            path: format!("{}/messages", p.base_path),
            headers,
            // Never forward the client's own key upstream.
            remove_headers: vec!["authorization"],
            body: Some(bytes),
        })
    }

    fn response(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        let m: MessageResponse<'_> = serde_json::from_slice(body)
            .map_err(|e| bad_gateway(self.provider_name(), format!("an invalid message: {e}")))?;
        if m.kind.as_str() != "message" {
            return Err(bad_gateway(
                self.provider_name(),
                format!("an object of type `{}` instead of a message", m.kind),
            ));
        }
        let mut tokens = TokenCounts::default();
        if let Some(u) = &m.usage {
            tokens.update(u);
        }
        let usage = tokens.to_usage();
        self.usage = Some(usage);

        let mut text: Option<Cow<'_, str>> = None;
        let mut reasoning: Option<Cow<'_, str>> = None;
        let mut tool_calls = Vec::new();
        fn append<'x>(acc: &mut Option<Cow<'x, str>>, piece: &'x str) {
            match acc {
                None => *acc = Some(Cow::Borrowed(piece)),
                Some(s) => s.to_mut().push_str(piece),
            }
        }
        for b in &m.content {
            match b.kind.as_str() {
                "text" => {
                    if let Some(t) = &b.text {
                        append(&mut text, t);
                    }
                }
                "thinking" => {
                    if let Some(t) = &b.thinking {
                        append(&mut reasoning, t);
                    }
                }
                "tool_use" => tool_calls.push(ToolCallOut {
                    id: b.id.as_deref().unwrap_or(""),
                    kind: "function",
                    function: FunctionOut {
                        name: b.name.as_deref().unwrap_or(""),
                        arguments: b
                            .input
                            .map_or(Cow::Borrowed("{}"), |i| compact_json(i.get())),
                    },
                }),
                // redacted_thinking, server tool blocks and newer kinds have no OpenAI form.
                _ => {}
            }
        }
        let out = ChatCompletion {
            id: &m.id,
            object: "chat.completion",
            created: self.created,
            model: &m.model,
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: text,
                    reasoning_content: reasoning,
                    tool_calls,
                    refusal: None,
                },
                logprobs: None,
                finish_reason: Some(finish_reason(m.stop_reason.as_deref())),
            }],
            usage: Some(usage.into()),
        };
        let mut bytes = Vec::with_capacity(body.len() + 128);
        serde_json::to_writer(&mut bytes, &out).map_err(|e| {
            GatewayError::new(500, "api_error", format!("serialising the response: {e}"))
        })?;
        Ok(Some(bytes))
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) -> bool {
        openai_chunks::stream_chunk(self, chunk, end_of_stream, out)
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        #[derive(Deserialize)]
        struct Envelope<'a> {
            #[serde(borrow)]
            error: Option<AError<'a>>,
        }
        let parsed = serde_json::from_slice::<Envelope<'_>>(body)
            .ok()
            .and_then(|e| e.error);
        match parsed {
            Some(e) => {
                let kind = e.kind.as_deref().unwrap_or("api_error");
                let msg = format!("{kind}: {}", e.message.as_deref().unwrap_or(""));
                provider_error(self.provider_name(), status, &msg, Some(kind))
            }
            None => {
                let head = body.get(..body.len().min(512)).unwrap_or(body);
                provider_error(
                    self.provider_name(),
                    status,
                    &String::from_utf8_lossy(head),
                    None,
                )
            }
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// The text of an event that is exactly Anthropic's text delta,
/// `{"type":"content_block_delta","index":N,"delta":{"type":"text_delta","text":"..."}}`, as the
/// JSON string token it is (quotes and escapes included). `None` for anything else, which is
/// then parsed in full: another field, another order, whitespace, or a string that does not end
/// where the event does.
fn text_delta_fast(data: &[u8]) -> Option<&str> {
    let rest = data.strip_prefix(br#"{"type":"content_block_delta","index":"#.as_slice())?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let rest = rest
        .get(digits..)?
        .strip_prefix(br#","delta":{"type":"text_delta","text":"#.as_slice())?;
    let token = rest.strip_suffix(b"}}")?;
    let b = token.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    // One string token: every quote inside is escaped, and no control character is raw.
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => match b.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                _ => return None,
            },
            b'"' => return None,
            c if c < 0x20 => return None,
            _ => i += 1,
        }
    }
    if digits == 0 || i != b.len() {
        return None;
    }
    // (The event's bytes were not checked as UTF-8: only the text that goes out is.)
    std::str::from_utf8(token).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ProcessEnv, Provider};
    use crate::openai::parse_chat_envelope;
    use serde_json::{json, Value};

    const STREAM_FIXTURE: &str =
        include_str!("../../tests/fixtures/anthropic/stream_text_tool.sse");
    const MESSAGE_FIXTURE: &str =
        include_str!("../../tests/fixtures/anthropic/message_tool_use.json");

    fn provider() -> Provider {
        Config::parse(
            br#"{"providers":{"claude":{"type":"anthropic","cluster":"c","api_key":"sk-ant-test","headers":{"anthropic-beta":"b1"},"default_max_tokens":1000}},
                 "models":[{"name":"smart","deployments":[{"provider":"claude","model":"claude-sonnet-4-5"}]}]}"#,
            &ProcessEnv,
        )
        .unwrap()
        .providers
        .remove(0)
    }

    fn try_translate(body: &str) -> Result<(AnthropicChat, ProviderRequest), GatewayError> {
        let p = provider();
        let env = parse_chat_envelope(body.as_bytes())?;
        let mut t = AnthropicChat::default();
        let req = t.request(&ChatCall {
            raw: body.as_bytes(),
            envelope: &env,
            provider: &p,
            upstream_model: "claude-sonnet-4-5",
            now_unix: 1_700_000_000,
            want_stream_usage: true,
        })?;
        Ok((t, req))
    }

    /// The Anthropic body as JSON (tests only; the translator itself never builds a `Value`).
    fn body_of(body: &str) -> Value {
        let (_, req) = try_translate(body).unwrap();
        serde_json::from_slice(&req.body.unwrap()).unwrap()
    }

    fn bad(body: &str) -> GatewayError {
        match try_translate(body) {
            Ok((_, r)) => panic!(
                "expected an error, got {:?}",
                String::from_utf8(r.body.unwrap_or_default())
            ),
            Err(e) => e,
        }
    }

    fn with_messages(messages: &str, extra: &str) -> String {
        format!(r#"{{"model":"smart","messages":{messages}{extra}}}"#)
    }

    // ------------------------------------------------------------------ request

    #[test]
    fn request_path_headers_and_minimal_body() {
        let body = with_messages(r#"[{"role":"user","content":"Hello"}]"#, "");
        let (_, req) = try_translate(&body).unwrap();
        assert_eq!(req.path, "/v1/messages");
        for h in [
            ("x-api-key", "sk-ant-test"),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
            ("anthropic-beta", "b1"),
        ] {
            assert!(req.headers.contains(&(h.0.into(), h.1.into())), "{h:?}");
        }
        assert!(!req.headers.iter().any(|(k, _)| k == "authorization"));
        assert_eq!(req.remove_headers, vec!["authorization"]);
        let v: Value = serde_json::from_slice(&req.body.unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"model":"claude-sonnet-4-5","messages":[{"role":"user","content":[{"type":"text","text":"Hello"}]}],"max_tokens":1000})
        );
    }

    #[test]
    fn system_and_developer_messages_become_system_in_order() {
        let v = body_of(&with_messages(
            r#"[{"role":"system","content":"You are terse."},{"role":"user","content":"hi"}]"#,
            "",
        ));
        assert_eq!(v["system"], "You are terse.");

        let v = body_of(&with_messages(
            r#"[{"role":"system","content":"A"},{"role":"user","content":"hi"},
                {"role":"developer","content":[{"type":"text","text":"B"},{"type":"text","text":"C"}]},
                {"role":"assistant","content":"yo"},{"role":"system","content":""},{"role":"user","content":"again"}]"#,
            "",
        ));
        assert_eq!(
            v["system"],
            json!([{"type":"text","text":"A"},{"type":"text","text":"B"},{"type":"text","text":"C"}])
        );
        assert_eq!(
            v["messages"],
            json!([
                {"role":"user","content":[{"type":"text","text":"hi"}]},
                {"role":"assistant","content":[{"type":"text","text":"yo"}]},
                {"role":"user","content":[{"type":"text","text":"again"}]}
            ])
        );
        // cache_control on a text part is kept (and forces the block form).
        let v = body_of(&with_messages(
            r#"[{"role":"system","content":[{"type":"text","text":"big","cache_control":{"type":"ephemeral"}}]},{"role":"user","content":"q"}]"#,
            "",
        ));
        assert_eq!(
            v["system"],
            json!([{"type":"text","text":"big","cache_control":{"type":"ephemeral"}}])
        );
        let e = bad(&with_messages(
            r#"[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x/a.png"}}]},{"role":"user","content":"q"}]"#,
            "",
        ));
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
    }

    #[test]
    fn multi_turn_and_consecutive_same_role_are_merged() {
        let v = body_of(&with_messages(
            r#"[{"role":"user","content":"one"},{"role":"user","content":[{"type":"text","text":"two"}]},
                {"role":"assistant","content":"three"},{"role":"assistant","content":[{"type":"text","text":"four"},{"type":"refusal","refusal":"no"}]},
                {"role":"user","content":"five"}]"#,
            "",
        ));
        assert_eq!(
            v["messages"],
            json!([
                {"role":"user","content":[{"type":"text","text":"one"},{"type":"text","text":"two"}]},
                {"role":"assistant","content":[{"type":"text","text":"three"},{"type":"text","text":"four"},{"type":"text","text":"no"}]},
                {"role":"user","content":[{"type":"text","text":"five"}]}
            ])
        );
    }

    #[test]
    fn leading_assistant_message_gets_a_placeholder_user_message() {
        let v = body_of(&with_messages(
            r#"[{"role":"system","content":"s"},{"role":"assistant","content":"How can I help?"},{"role":"user","content":"Weather?"}]"#,
            "",
        ));
        assert_eq!(
            v["messages"],
            json!([
                {"role":"user","content":[{"type":"text","text":LEADING_USER_PLACEHOLDER}]},
                {"role":"assistant","content":[{"type":"text","text":"How can I help?"}]},
                {"role":"user","content":[{"type":"text","text":"Weather?"}]}
            ])
        );
    }

    #[test]
    fn empty_conversation_is_rejected() {
        for m in [
            r#"[{"role":"system","content":"only system"}]"#,
            r#"[{"role":"user","content":""}]"#,
            r#"[{"role":"user","content":null},{"role":"assistant","content":[]}]"#,
        ] {
            let e = bad(&with_messages(m, ""));
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some("messages")),
                "{m}"
            );
        }
    }

    #[test]
    fn images_by_url_and_base64() {
        let v = body_of(&with_messages(
            r#"[{"role":"user","content":[{"type":"text","text":"What is this?"},
                {"type":"image_url","image_url":{"url":"https://example.com/cat.png","detail":"high"}},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo\/AAA="}},
                {"type":"image_url","image_url":{"url":"data:image/jpg;base64,/9j/4AAQ"}}]}]"#,
            "",
        ));
        assert_eq!(
            v["messages"][0]["content"],
            json!([
                {"type":"text","text":"What is this?"},
                {"type":"image","source":{"type":"url","url":"https://example.com/cat.png"}},
                {"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo/AAA="}},
                {"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"/9j/4AAQ"}}
            ])
        );
    }

    /// Long texts go through the no-scan path when serde_json lent them and the escaping path
    /// when they held escapes: either way the Anthropic body carries exactly the client's text.
    #[test]
    fn long_texts_and_image_data_arrive_unchanged() {
        let crate::test_support::LongTexts {
            plain,
            escaped,
            unescaped,
            b64,
        } = crate::test_support::long_texts();
        let body = with_messages(
            &format!(
                r#"[{{"role":"system","content":"{plain}"}},
                   {{"role":"user","content":[{{"type":"text","text":"{plain}"}},{{"type":"text","text":"{escaped}"}},
                     {{"type":"image_url","image_url":{{"url":"data:image/png;base64,{b64}"}}}}]}},
                   {{"role":"assistant","content":"{escaped}"}},{{"role":"user","content":"{plain}"}}]"#
            ),
            "",
        );
        let v = body_of(&body);
        assert_eq!(v["system"], json!(plain));
        assert_eq!(
            v["messages"],
            json!([
                {"role":"user","content":[
                    {"type":"text","text":plain},
                    {"type":"text","text":unescaped},
                    {"type":"image","source":{"type":"base64","media_type":"image/png","data":b64}}]},
                {"role":"assistant","content":[{"type":"text","text":unescaped}]},
                {"role":"user","content":[{"type":"text","text":plain}]}
            ])
        );
    }

    #[test]
    fn bad_images_and_unsupported_parts_are_400_with_param() {
        for (part, param) in [
            (
                r#"{"type":"image_url","image_url":{"url":"data:image/tiff;base64,AAAA"}}"#,
                "messages[1].content[1].image_url",
            ),
            (
                r#"{"type":"image_url","image_url":{"url":"data:image/png,rawbytes"}}"#,
                "messages[1].content[1].image_url",
            ),
            (
                r#"{"type":"image_url","image_url":{"url":"data:image/png;base64"}}"#,
                "messages[1].content[1].image_url",
            ),
            (
                r#"{"type":"image_url","image_url":{"url":"data:image/png;base64,"}}"#,
                "messages[1].content[1].image_url",
            ),
            (
                r#"{"type":"image_url","image_url":{"url":"ftp://x/y.png"}}"#,
                "messages[1].content[1].image_url",
            ),
            (
                r#"{"type":"image_url"}"#,
                "messages[1].content[1].image_url",
            ),
            (
                r#"{"type":"input_audio","input_audio":{"data":"AAA","format":"wav"}}"#,
                "messages[1].content[1]",
            ),
            (
                r#"{"type":"file","file":{"file_id":"f"}}"#,
                "messages[1].content[1]",
            ),
            (
                r#"{"type":"video","video":{}}"#,
                "messages[1].content[1].type",
            ),
            (r#"{"type":"text"}"#, "messages[1].content[1]"),
        ] {
            let body = with_messages(
                &format!(
                    r#"[{{"role":"user","content":"a"}},{{"role":"user","content":[{{"type":"text","text":"x"}},{part}]}}]"#
                ),
                "",
            );
            let e = bad(&body);
            assert_eq!(e.status, 400, "{part}");
            assert_eq!(e.param.as_deref(), Some(param), "{part}: {}", e.message);
        }
        let e = bad(&with_messages(
            r#"[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]"#,
            "",
        ));
        assert!(
            e.message.contains("not supported by anthropic"),
            "{}",
            e.message
        );
    }

    const TOOLS: &str = r#","tools":[{"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]},"strict":true}},
        {"type":"function","function":{"name":"ping"}}]"#;

    #[test]
    fn tools_and_every_tool_choice() {
        let v = body_of(&with_messages(r#"[{"role":"user","content":"hi"}]"#, TOOLS));
        assert_eq!(
            v["tools"],
            json!([
                {"name":"get_weather","description":"Weather now","input_schema":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"]}},
                {"name":"ping","input_schema":{"type":"object","properties":{}}}
            ])
        );
        assert!(v.get("tool_choice").is_none());
        for (choice, parallel, want) in [
            (r#""auto""#, "", json!({"type":"auto"})),
            (r#""none""#, "", json!({"type":"none"})),
            (r#""required""#, "", json!({"type":"any"})),
            (
                r#"{"type":"function","function":{"name":"ping"}}"#,
                "",
                json!({"type":"tool","name":"ping"}),
            ),
            (
                r#""auto""#,
                r#","parallel_tool_calls":false"#,
                json!({"type":"auto","disable_parallel_tool_use":true}),
            ),
            (
                r#""required""#,
                r#","parallel_tool_calls":false"#,
                json!({"type":"any","disable_parallel_tool_use":true}),
            ),
            (
                r#"{"type":"function","function":{"name":"ping"}}"#,
                r#","parallel_tool_calls":false"#,
                json!({"type":"tool","name":"ping","disable_parallel_tool_use":true}),
            ),
            (
                r#""auto""#,
                r#","parallel_tool_calls":true"#,
                json!({"type":"auto"}),
            ),
        ] {
            let v = body_of(&with_messages(
                r#"[{"role":"user","content":"hi"}]"#,
                &format!(r#"{TOOLS},"tool_choice":{choice}{parallel}"#),
            ));
            assert_eq!(v["tool_choice"], want, "{choice} {parallel}");
        }
        // No tool_choice but parallel calls off: an auto choice carries the flag.
        let v = body_of(&with_messages(
            r#"[{"role":"user","content":"hi"}]"#,
            &format!(r#"{TOOLS},"parallel_tool_calls":false"#),
        ));
        assert_eq!(
            v["tool_choice"],
            json!({"type":"auto","disable_parallel_tool_use":true})
        );
        // tool_choice without tools is dropped.
        let v = body_of(&with_messages(
            r#"[{"role":"user","content":"hi"}]"#,
            r#","tool_choice":"none","tools":[]"#,
        ));
        assert!(v.get("tool_choice").is_none() && v.get("tools").is_none());
        // Non-function tools are refused.
        let e = bad(&with_messages(
            r#"[{"role":"user","content":"hi"}]"#,
            r#","tools":[{"type":"custom","custom":{"name":"x"}}]"#,
        ));
        assert_eq!(e.param.as_deref(), Some("tools[0].type"));
    }

    #[test]
    fn parallel_tool_calls_and_results_share_one_user_message() {
        let v = body_of(&with_messages(
            r#"[{"role":"user","content":"Weather in Paris and Rome?"},
                {"role":"assistant","content":"","tool_calls":[
                    {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}},
                    {"id":"call_2","type":"function","function":{"name":"get_weather","arguments":"{\"location\": \"Rome\"}"}},
                    {"id":"call_3","type":"function","function":{"name":"ping","arguments":""}}]},
                {"role":"tool","tool_call_id":"call_1","content":"18C"},
                {"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"21C"},{"type":"text","text":" sunny"}]},
                {"role":"tool","tool_call_id":"call_3","content":""},
                {"role":"user","content":"Thanks, and tomorrow?"}]"#,
            TOOLS,
        ));
        assert_eq!(
            v["messages"],
            json!([
                {"role":"user","content":[{"type":"text","text":"Weather in Paris and Rome?"}]},
                {"role":"assistant","content":[
                    {"type":"tool_use","id":"call_1","name":"get_weather","input":{"location":"Paris"}},
                    {"type":"tool_use","id":"call_2","name":"get_weather","input":{"location":"Rome"}},
                    {"type":"tool_use","id":"call_3","name":"ping","input":{}}]},
                {"role":"user","content":[
                    {"type":"tool_result","tool_use_id":"call_1","content":"18C"},
                    {"type":"tool_result","tool_use_id":"call_2","content":[{"type":"text","text":"21C"},{"type":"text","text":" sunny"}]},
                    {"type":"tool_result","tool_use_id":"call_3"},
                    {"type":"text","text":"Thanks, and tomorrow?"}]}
            ])
        );
    }

    #[test]
    fn bad_tool_calls_are_400_with_param() {
        for (msgs, param) in [
            (
                r#"[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{not json"}}]}]"#,
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                r#"[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]"#,
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                r#"[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f"}},{"id":"d","type":"custom","function":{"name":"f"}}]}]"#,
                "messages[1].tool_calls[1].type",
            ),
            (
                r#"[{"role":"user","content":"q"},{"role":"tool","content":"r"}]"#,
                "messages[1].tool_call_id",
            ),
            (
                r#"[{"role":"user","content":"q"},{"role":"assistant","function_call":{"name":"f","arguments":"{}"}}]"#,
                "messages[1].function_call",
            ),
            (
                r#"[{"role":"user","content":"q"},{"role":"function","name":"f","content":"r"}]"#,
                "messages[1].role",
            ),
        ] {
            let e = bad(&with_messages(msgs, ""));
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some(param)),
                "{msgs}: {}",
                e.message
            );
        }
    }

    #[test]
    fn max_tokens_default_and_overrides() {
        let m = r#"[{"role":"user","content":"hi"}]"#;
        assert_eq!(body_of(&with_messages(m, ""))["max_tokens"], 1000);
        assert_eq!(
            body_of(&with_messages(m, r#","max_tokens":50"#))["max_tokens"],
            50
        );
        assert_eq!(
            body_of(&with_messages(m, r#","max_completion_tokens":70"#))["max_tokens"],
            70
        );
        assert_eq!(
            body_of(&with_messages(
                m,
                r#","max_tokens":50,"max_completion_tokens":70"#
            ))["max_tokens"],
            70
        );
        assert_eq!(
            body_of(&with_messages(
                m,
                r#","max_tokens":50,"max_completion_tokens":null"#
            ))["max_tokens"],
            50
        );
        assert_eq!(
            bad(&with_messages(m, r#","max_tokens":"many""#))
                .param
                .as_deref(),
            Some("max_tokens")
        );
    }

    #[test]
    fn sampling_stop_user_and_stream() {
        let m = r#"[{"role":"user","content":"hi"}]"#;
        let v = body_of(&with_messages(
            m,
            r#","stop":"\n\nHuman:","temperature":0.7,"user":"u-42","stream":true,"seed":7,"frequency_penalty":0.5,"presence_penalty":0.1,"logit_bias":{"50256":-100},"n":1,"store":true,"metadata":{"a":"b"}"#,
        ));
        assert_eq!(
            v,
            json!({"model":"claude-sonnet-4-5","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
                   "max_tokens":1000,"stop_sequences":["\n\nHuman:"],"temperature":0.7,
                   "metadata":{"user_id":"u-42"},"stream":true})
        );
        let v = body_of(&with_messages(
            m,
            r#","stop":["a","","b"],"temperature":1.6,"safety_identifier":"s-1""#,
        ));
        assert_eq!(v["stop_sequences"], json!(["a", "b"]));
        // OpenAI 0..2 → Anthropic 0..1: clamped, not scaled.
        assert_eq!(v["temperature"], 1.0);
        assert_eq!(v["metadata"], json!({"user_id":"s-1"}));
        assert_eq!(
            body_of(&with_messages(m, r#","temperature":0"#))["temperature"],
            0.0
        );
        assert_eq!(
            bad(&with_messages(m, r#","temperature":2.5"#))
                .param
                .as_deref(),
            Some("temperature")
        );
        assert!(body_of(&with_messages(m, r#","stream":false"#))
            .get("stream")
            .is_none());
        // top_p alone is sent; with temperature it is dropped (recent models reject the pair).
        assert_eq!(body_of(&with_messages(m, r#","top_p":0.9"#))["top_p"], 0.9);
        let v = body_of(&with_messages(m, r#","top_p":0.9,"temperature":0.3"#));
        assert_eq!(
            (v["temperature"].clone(), v.get("top_p")),
            (json!(0.3), None)
        );
    }

    #[test]
    fn unsupported_params_are_400() {
        let m = r#"[{"role":"user","content":"hi"}]"#;
        for (extra, param) in [
            (r#","n":2"#, "n"),
            (r#","logprobs":true"#, "logprobs"),
            (r#","functions":[{"name":"f"}]"#, "functions"),
            (r#","function_call":"auto""#, "function_call"),
            (r#","modalities":["text","audio"]"#, "modalities"),
            (r#","audio":{"voice":"alloy","format":"wav"}"#, "audio"),
            (r#","reasoning_effort":"extreme""#, "reasoning_effort"),
            (
                r#","response_format":{"type":"json_schema","json_schema":{"name":"x"}}"#,
                "response_format.json_schema.schema",
            ),
        ] {
            let e = bad(&with_messages(m, extra));
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some(param)),
                "{extra}"
            );
        }
        // Accepted no-ops.
        body_of(&with_messages(
            m,
            r#","n":1,"logprobs":false,"functions":null,"modalities":["text"]"#,
        ));
    }

    #[test]
    fn reasoning_effort_and_response_format() {
        let m = r#"[{"role":"user","content":"hi"}]"#;
        let v = body_of(&with_messages(
            m,
            r#","reasoning_effort":"medium","max_tokens":8000,"temperature":0.2"#,
        ));
        assert_eq!(
            v["thinking"],
            json!({"type":"enabled","budget_tokens":4096})
        );
        assert_eq!(v["max_tokens"], 8000);
        assert!(v.get("temperature").is_none());
        // Budget above max_tokens: max_tokens raised so the answer keeps its room.
        let v = body_of(&with_messages(m, r#","reasoning_effort":"high""#));
        assert_eq!(v["thinking"]["budget_tokens"], 16384);
        assert_eq!(v["max_tokens"], 16384 + 1000);
        assert_eq!(
            body_of(&with_messages(m, r#","reasoning_effort":"low""#))["thinking"]["budget_tokens"],
            1024
        );
        assert!(body_of(&with_messages(m, r#","reasoning_effort":"none""#))
            .get("thinking")
            .is_none());

        let v = body_of(&with_messages(
            m,
            r#","response_format":{"type":"json_schema","json_schema":{"name":"r","strict":true,"schema":{"type":"object","properties":{"a":{"type":"integer"}},"additionalProperties":false}}}"#,
        ));
        assert_eq!(
            v["output_config"],
            json!({"format":{"type":"json_schema","schema":{"type":"object","properties":{"a":{"type":"integer"}},"additionalProperties":false}}})
        );
        assert!(body_of(&with_messages(
            m,
            r#","response_format":{"type":"json_object"}"#
        ))
        .get("output_config")
        .is_none());
    }

    // ------------------------------------------------------------------ response

    fn respond(t: &mut AnthropicChat, body: &str) -> Value {
        serde_json::from_slice(&t.response(body.as_bytes()).unwrap().unwrap()).unwrap()
    }

    fn fresh(stream: bool, include_usage: bool) -> AnthropicChat {
        let extra = match (stream, include_usage) {
            (false, _) => "",
            (true, false) => r#","stream":true"#,
            (true, true) => r#","stream":true,"stream_options":{"include_usage":true}"#,
        };
        try_translate(&with_messages(r#"[{"role":"user","content":"hi"}]"#, extra))
            .unwrap()
            .0
    }

    #[test]
    fn response_text() {
        let mut t = fresh(false, false);
        let v = respond(
            &mut t,
            r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hi! \"there\""}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":5,"cache_creation_input_tokens":null,"cache_read_input_tokens":0}}"#,
        );
        assert_eq!(
            v,
            json!({"id":"msg_1","object":"chat.completion","created":1_700_000_000u64,"model":"claude-sonnet-4-5-20250929",
                   "choices":[{"index":0,"message":{"role":"assistant","content":"Hi! \"there\"","refusal":null},"logprobs":null,"finish_reason":"stop"}],
                   "usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":0,"cache_write_tokens":0}}})
        );
    }

    #[test]
    fn response_tool_use_thinking_and_cache_usage() {
        let mut t = fresh(false, false);
        let v = respond(&mut t, MESSAGE_FIXTURE);
        let msg = &v["choices"][0]["message"];
        assert_eq!(msg["content"], "I'll check the weather.");
        assert_eq!(msg["reasoning_content"], "The user wants the weather.");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        let call = &msg["tool_calls"][0];
        assert_eq!(call["id"], "toolu_01A09q90qw90lq917835lq9");
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let args = call["function"]["arguments"].as_str().unwrap();
        assert_eq!(
            args,
            r#"{"location":"San Francisco, CA","unit":"celsius","days":[1,2]}"#
        );
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens":2095+1800+12,"completion_tokens":503,"total_tokens":2095+1800+12+503,
                   "prompt_tokens_details":{"cached_tokens":1800,"cache_write_tokens":12}})
        );
        assert_eq!(
            t.usage(),
            Some(Usage {
                prompt_tokens: 3907,
                completion_tokens: 503,
                cached_tokens: 1800,
                cache_creation_tokens: 12,
                reasoning_tokens: 0
            })
        );
        // Only tool calls: content is null.
        let v = respond(
            &mut t,
            r#"{"id":"m","type":"message","model":"c","content":[{"type":"tool_use","id":"t","name":"f","input":{}}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":1}}"#,
        );
        assert!(v["choices"][0]["message"]["content"].is_null());
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
    }

    #[test]
    fn every_stop_reason_maps() {
        for (stop, want) in [
            ("\"end_turn\"", "stop"),
            ("\"stop_sequence\"", "stop"),
            ("\"pause_turn\"", "stop"),
            ("\"max_tokens\"", "length"),
            ("\"model_context_window_exceeded\"", "length"),
            ("\"tool_use\"", "tool_calls"),
            ("\"refusal\"", "content_filter"),
            ("\"something_new\"", "stop"),
            ("null", "stop"),
        ] {
            let mut t = fresh(false, false);
            let v = respond(
                &mut t,
                &format!(
                    r#"{{"id":"m","type":"message","model":"c","content":[{{"type":"text","text":"x"}}],"stop_reason":{stop},"usage":{{"input_tokens":1,"output_tokens":1}}}}"#
                ),
            );
            assert_eq!(v["choices"][0]["finish_reason"], want, "{stop}");
        }
    }

    #[test]
    fn invalid_2xx_body_is_502_naming_provider() {
        for body in [
            "",
            "not json",
            "{}",
            r#"{"type":"error","error":{"type":"x","message":"y"}}"#,
            r#"{"id":"m","type":"message","model":"c","content":"text"}"#,
        ] {
            let mut t = fresh(false, false);
            let e = t.response(body.as_bytes()).unwrap_err();
            assert_eq!(e.status, 502, "{body}");
            assert!(e.message.contains("claude"), "{}", e.message);
        }
    }

    // ------------------------------------------------------------------ errors

    #[test]
    fn provider_errors_are_mapped() {
        let t = fresh(false, false);
        let e = t.error(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#,
        );
        assert_eq!(e.status, 503);
        assert_eq!(e.code.as_deref(), Some("overloaded_error"));
        assert!(
            e.message.contains("claude") && e.message.contains("overloaded_error: Overloaded"),
            "{}",
            e.message
        );
        let e = t.error(429, br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#);
        assert_eq!((e.status, e.kind), (429, "rate_limit_error"));
        let e = t.error(400, br#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: roles must alternate"}}"#);
        assert_eq!(
            (e.status, e.kind, e.code.as_deref()),
            (400, "invalid_request_error", Some("invalid_request_error"))
        );
        let long = format!("<html>{}</html>", "x".repeat(2000));
        let e = t.error(502, long.as_bytes());
        assert_eq!(e.status, 502);
        assert!(
            e.message.contains("<html>xxx") && e.message.len() < 600,
            "{}",
            e.message.len()
        );
        assert_eq!(e.code, None);
    }

    // ------------------------------------------------------------------ streaming

    fn run(t: &mut AnthropicChat, chunks: &[&[u8]]) -> String {
        let mut out = Vec::new();
        let n = chunks.len();
        for (i, c) in chunks.iter().enumerate() {
            assert!(t.stream_chunk(c, i + 1 == n, &mut out));
        }
        if n == 0 {
            assert!(t.stream_chunk(b"", true, &mut out));
        }
        String::from_utf8(out).unwrap()
    }

    /// The data payloads; asserts the SSE framing and that [DONE] is last and only once.
    fn data_events(out: &str) -> Vec<String> {
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
        let events: Vec<String> = out
            .split_terminator("\n\n")
            .map(|e| {
                e.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("bad event {e:?}"))
                    .to_string()
            })
            .collect();
        assert_eq!(events.iter().filter(|e| *e == "[DONE]").count(), 1);
        events
    }

    fn chunks_json(out: &str) -> Vec<Value> {
        let ev = data_events(out);
        ev[..ev.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect()
    }

    /// Event bytes are not checked as UTF-8 up front: a text delta with a bad byte leaves the
    /// fast path and is read with the byte replaced, and the stream goes on.
    #[test]
    fn bad_utf8_in_a_text_delta_is_replaced() {
        let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n";
        let mut stream = start.as_bytes().to_vec();
        stream.extend_from_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\xffb\"}}\n\n");
        stream.extend_from_slice(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"ok\"}}\n\n");
        let mut t = fresh(true, false);
        let mut out = Vec::new();
        t.stream_chunk(&stream, false, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("a\u{fffd}b"), "{out}");
        assert!(out.contains("\"content\":\"ok\""), "{out}");
        assert!(!out.contains("error"), "{out}");
    }

    #[test]
    fn text_delta_fast_path_writes_what_the_full_parse_writes() {
        let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n";
        let texts = [
            r#""Hello""#,
            r#""""#,
            r#"" quote \" backslash \\ slash \/ tab \t nl \n uni \u00e9 \ud83d\ude80 é ✓""#,
            r#""</script>""#,
        ];
        for text in texts {
            // The exact shape Anthropic sends (fast path), and the same event reordered (full parse).
            let fast = format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{text}}}}}\n\n");
            let slow = format!("event: content_block_delta\ndata: {{\"index\":0,\"delta\":{{\"text\":{text},\"type\":\"text_delta\"}},\"type\":\"content_block_delta\"}}\n\n");
            assert!(text_delta_fast(
                fast.lines()
                    .nth(1)
                    .unwrap()
                    .strip_prefix("data: ")
                    .unwrap()
                    .as_bytes()
            )
            .is_some());
            let (mut a, mut b) = (fresh(true, true), fresh(true, true));
            let (mut out_a, mut out_b) = (Vec::new(), Vec::new());
            a.stream_chunk(format!("{start}{fast}").as_bytes(), false, &mut out_a);
            b.stream_chunk(format!("{start}{slow}").as_bytes(), false, &mut out_b);
            // The same chunks; the text's escapes are the provider's own (`\/` or `/`, `\u00e9`
            // or `é`: the same JSON string).
            let (a, b) = (
                String::from_utf8(out_a).unwrap(),
                String::from_utf8(out_b).unwrap(),
            );
            let parse = |o: &str| -> Vec<Value> {
                o.split("\n\n")
                    .filter_map(|e| e.strip_prefix("data: "))
                    .map(|d| serde_json::from_str(d).unwrap())
                    .collect()
            };
            assert_eq!(parse(&a), parse(&b), "{text}");
            assert_eq!(parse(&a).len(), if text == r#""""# { 1 } else { 2 });
        }
        // Not the exact shape, or not one valid string token: the full parse decides.
        for data in [
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"},"x":1}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"b"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a\q"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\u12"}}"#,
            r#"{"type":"content_block_delta","index":,"delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":5}}"#,
            "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\u{1}\"}}",
        ] {
            assert_eq!(text_delta_fast(data.as_bytes()), None, "{data}");
        }
    }

    #[test]
    fn stream_is_translated_whole() {
        let mut t = fresh(true, true);
        let out = run(&mut t, &[STREAM_FIXTURE.as_bytes()]);
        let chunks = chunks_json(&out);
        for c in &chunks {
            assert_eq!(c["id"], "msg_01XFDUDYJgAACzvnptvVoYEL");
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["created"], 1_700_000_000u64);
            assert_eq!(c["model"], "claude-sonnet-4-5-20250929");
            assert!(c.get("usage").is_some());
        }
        let (last, body) = chunks.split_last().unwrap();
        assert_eq!(
            body[0]["choices"][0]["delta"],
            json!({"role":"assistant","content":""})
        );
        for c in body {
            assert!(c["usage"].is_null());
            assert_eq!(c["choices"].as_array().unwrap().len(), 1);
            assert_eq!(c["choices"][0]["index"], 0);
            assert!(c["choices"][0]["logprobs"].is_null());
        }
        let content: String = body
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(
            content,
            "Okay, let me check the weather in San Francisco — \"SF\" ☀️."
        );
        let calls: Vec<&Value> = body
            .iter()
            .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
            .collect();
        assert_eq!(
            calls[0],
            &json!([{"index":0,"id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","type":"function","function":{"name":"get_weather","arguments":""}}])
        );
        assert_eq!(calls.len(), 4, "start + 3 non-empty argument pieces");
        let args: String = calls
            .iter()
            .map(|c| c[0]["function"]["arguments"].as_str().unwrap())
            .collect();
        let args: Value = serde_json::from_str(&args).unwrap();
        assert_eq!(
            args,
            json!({"location":"San Francisco, CA","unit":"fahrenheit"})
        );
        let fin = &body[body.len() - 1]["choices"][0];
        assert_eq!(
            (fin["delta"].clone(), fin["finish_reason"].clone()),
            (json!({}), json!("tool_calls"))
        );
        assert!(body[..body.len() - 1]
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null()));
        assert_eq!(last["choices"], json!([]));
        assert_eq!(
            last["usage"],
            json!({"prompt_tokens":2620,"completion_tokens":89,"total_tokens":2709,"prompt_tokens_details":{"cached_tokens":2048,"cache_write_tokens":100}})
        );
        assert_eq!(t.usage().unwrap().total_tokens(), 2709);
    }

    #[test]
    fn stream_output_is_identical_at_every_split_and_byte_by_byte() {
        let s = STREAM_FIXTURE.as_bytes();
        let whole = run(&mut fresh(true, true), &[s]);
        for cut in 0..=s.len() {
            let (a, b) = s.split_at(cut);
            assert_eq!(run(&mut fresh(true, true), &[a, b]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        let mut t = fresh(true, true);
        assert_eq!(run(&mut t, &bytes), whole);
        assert_eq!(t.usage().unwrap().completion_tokens, 89);
        // CRLF framing too.
        let crlf = STREAM_FIXTURE.replace('\n', "\r\n");
        assert_eq!(run(&mut fresh(true, true), &[crlf.as_bytes()]), whole);
    }

    #[test]
    fn stream_without_include_usage_has_no_usage_field() {
        let mut t = fresh(true, false);
        let out = run(&mut t, &[STREAM_FIXTURE.as_bytes()]);
        let chunks = chunks_json(&out);
        assert!(chunks
            .iter()
            .all(|c| c.get("usage").is_none() && c["choices"].as_array().unwrap().len() == 1));
        // The gateway still learns the usage.
        assert_eq!(t.usage().unwrap().prompt_tokens, 2620);
    }

    const START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_9\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n";

    #[test]
    fn stream_in_band_error_event_ends_the_stream() {
        let mut t = fresh(true, true);
        let s = format!("{START}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\nevent: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"lo\"}}}}\n\n");
        let out = run(
            &mut t,
            &[
                s.as_bytes(),
                b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            ],
        );
        let ev = data_events(&out);
        assert_eq!(ev.len(), 4, "{out}");
        let err: Value = serde_json::from_str(&ev[2]).unwrap();
        assert_eq!(err["error"]["code"], "overloaded");
        assert_eq!(err["error"]["type"], "api_error");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("claude")
                && msg.contains("overloaded_error")
                && msg.contains("Overloaded"),
            "{msg}"
        );
        assert!(!out.contains("\"lo\""));
    }

    #[test]
    fn stream_dropped_before_message_stop() {
        let mut t = fresh(true, false);
        let out = run(
            &mut t,
            &[
                START.as_bytes(),
                b"event: content_block_delta\ndata: {\"type\":\"content_bl",
            ],
        );
        let ev = data_events(&out);
        let err: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
        assert_eq!(
            err["error"]["message"],
            "claude stream ended before message_stop"
        );
        // Nothing after [DONE], even if more arrives.
        let mut more = Vec::new();
        assert!(t.stream_chunk(b"data: {\"type\":\"message_stop\"}\n\n", true, &mut more));
        assert!(more.is_empty());
        // An empty upstream stream is an error too.
        let out = run(&mut fresh(true, false), &[]);
        assert!(out.contains("stream ended before message_stop"));
        // Invalid JSON in an event ends the stream with an error.
        let out = run(
            &mut fresh(true, false),
            &[b"event: message_start\ndata: {nope\n\n"],
        );
        assert_eq!(data_events(&out).len(), 2);
        assert!(out.contains("invalid stream event"));
    }

    #[test]
    fn stream_thinking_and_argument_less_tool() {
        let s = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":0}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me think\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQB\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":\"ping\",\"input\":{}}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t2\",\"name\":\"f\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":1}\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":30,\"input_tokens\":4}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let mut t = fresh(true, false);
        let chunks = chunks_json(&run(&mut t, &[s.as_bytes()]));
        let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
        assert_eq!(deltas[1], &json!({"reasoning_content":"Let me think"}));
        assert_eq!(deltas[2]["tool_calls"][0]["index"], 0);
        assert_eq!(
            deltas[3],
            &json!({"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]})
        );
        assert_eq!(deltas[4]["tool_calls"][0]["index"], 1);
        assert_eq!(
            deltas[5],
            &json!({"tool_calls":[{"index":1,"function":{"arguments":"{\"a\":1}"}}]})
        );
        assert_eq!(chunks[6]["choices"][0]["finish_reason"], "length");
        assert_eq!(chunks.len(), 7);
        let u = t.usage().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (4, 30));
    }

    // ------------------------------------------------------------------ robustness

    #[test]
    fn garbage_never_panics() {
        let seeds: Vec<&[u8]> = vec![
            STREAM_FIXTURE.as_bytes(),
            MESSAGE_FIXTURE.as_bytes(),
            START.as_bytes(),
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":[1,{}]}"}}]},{"role":"tool","tool_call_id":"c","content":"r"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"required","stop":["x"],"max_tokens":5,"reasoning_effort":"high"}"#,
        ];
        let alphabet: &[u8] =
            b"{}[]\":,\\ \n\rdata:event0123456789.-eE+truefalsnul\xe2\x82\xac\xff";
        crate::test_support::workout(
            &seeds,
            alphabet,
            &provider(),
            &|| Box::new(AnthropicChat::default()),
            &|stream, usage| Box::new(fresh(stream, usage)),
            3000,
        );
    }
}
