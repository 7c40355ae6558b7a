//! OpenAI client → AWS Bedrock Runtime (docs/providers.md §6): chat through the Converse API
//! (`POST /model/{modelId}/converse`, streams `/converse-stream`), embeddings through InvokeModel
//! (`POST /model/{modelId}/invoke`) for Amazon Titan Text Embeddings and Cohere Embed. Every
//! request is signed with SigV4 (service `bedrock`) over the exact path and body sent, or carries
//! a Bedrock API key as Bearer when the provider is configured with `api_key`.
//!
//! The model id goes in the path percent-encoded (every byte but `A-Za-z0-9-._~`), so inference
//! profiles and ARNs (`...-v1:0`, `arn:aws:bedrock:...:inference-profile/...`) keep their `:` and
//! `/` inside the one path segment; the signature encodes that segment once more (§6.5).
//!
//! Chat request mapping:
//! - `system`/`developer` messages (text) → `system[]`, in order, wherever they are.
//! - `user` text and `image_url` parts → `text` / `image{format, source.bytes}` blocks; images must
//!   be base64 data URLs of png, jpeg, gif or webp (Bedrock takes bytes, the gateway fetches no
//!   URL). Empty text is never sent (Bedrock rejects blank text blocks).
//! - `assistant` text → `text`, `tool_calls` → `toolUse{toolUseId, name, input}` (the arguments
//!   must be a JSON object; an empty string is `{}`).
//! - `tool` messages → `toolResult{toolUseId, content:[{text}]}` in a user turn; consecutive turns
//!   of one role are merged (parallel tool results share one user turn, as Bedrock's alternation
//!   rule requires). A conversation that starts with the assistant gets a placeholder user turn.
//! - Tool-call ids outside Bedrock's `[a-zA-Z0-9_.:-]{1,64}` are rewritten the same way on both
//!   sides (other characters → `_`, cut to 64).
//! - `tools[].function` → `toolConfig.tools[].toolSpec{name, description, inputSchema.json}`;
//!   `tool_choice` auto → `{auto:{}}`, required → `{any:{}}`, named → `{tool:{name}}`, none →
//!   no `toolConfig` (kept, without a choice, when the history holds tool blocks: Bedrock refuses
//!   them without one, and Converse has no "none").
//! - `max_completion_tokens` (else `max_tokens`) → `inferenceConfig.maxTokens`, `temperature`
//!   (clamped to Bedrock's 0–1), `top_p` → `topP`, `stop` → `stopSequences`.
//! - `reasoning_effort` → `additionalModelRequestFields.thinking{type:"enabled", budget_tokens}`
//!   for Anthropic Claude models (low 1024, medium 4096, high 16384; `none` sends nothing), the
//!   documented way to pass model-native fields; 400 for other models.
//! - `response_format` `json_schema` → `outputConfig.textFormat{type:"json_schema",
//!   structure.jsonSchema{schema (as a string), name}}`; `json_object` is a 400 (Converse has no
//!   schema-less JSON mode).
//! - 400: `n` > 1, `logprobs`, audio output, legacy `functions`, non-function tools, http(s) image
//!   URLs, `input_audio`/`file` parts. Dropped: `user`, `seed`, penalties, `logit_bias`,
//!   `parallel_tool_calls`, `store`, `metadata`, `service_tier`, message `name`, image `detail`.
//!
//! Answers: text blocks join into `content`, `reasoningContent` into `reasoning_content`,
//! `toolUse` into `tool_calls` (arguments = the JSON text of `input`). `stopReason` end_turn,
//! stop_sequence → stop; max_tokens, model_context_window_exceeded → length; tool_use →
//! tool_calls; guardrail_intervened, content_filtered → content_filter; malformed_model_output,
//! malformed_tool_use → a 502. Usage: prompt = inputTokens + cacheReadInputTokens +
//! cacheWriteInputTokens, cached = cacheReadInputTokens.
//!
//! Streams: the event-stream frames are decoded incrementally ([`crate::aws::eventstream`]);
//! messageStart → role chunk, text / reasoning deltas → content / reasoning_content chunks, a
//! toolUse contentBlockStart → a tool call with id and name, its input deltas → argument chunks,
//! messageStop → finish chunk, metadata → usage (chunk if `include_usage`) then `[DONE]`. An
//! exception or error frame, a CRC mismatch, or a body that ends before messageStop becomes an
//! OpenAI error event followed by `[DONE]`.
//!
//! Errors: `{"message"}` bodies; the `x-amzn-ErrorType` header is not seen here, so the code is
//! the exception Bedrock documents for the status (429 ThrottlingException, ...).

use crate::base64::standard as base64;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;

use super::openai_chunks::{self, ChunkStream, ChunkWriter};
use super::{provider_error, ChatCall, ChatTranslator, ProviderRequest, Usage};
use crate::aws::eventstream::{Decoder, Message};
use crate::aws::sigv4;
use crate::config::Provider;
use crate::error::{kind_for_status, GatewayError};
use crate::json_text::Text;
use crate::openai::chat::{
    AssistantMessage, ChatCompletion, ChatRequest, Choice, CompletionUsage, ContentPart,
    FunctionOut, MessageContent, ResponseFormat, Role, Str, ToolCallOut, ToolChoice,
};

fn bad(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::invalid_param(param, message)
}

fn unsupported(param: &str, what: &str) -> GatewayError {
    bad(param, format!("{what} is not supported by bedrock"))
}

/// The model id as one path segment.
fn model_path(p: &Provider, model: &str, op: &str) -> String {
    format!(
        "{}/model/{}/{op}",
        p.base_path,
        sigv4::uri_encode(model, true)
    )
}

/// The upstream request with its auth: SigV4 over the exact path and body, or a Bearer API key.
fn signed(
    p: &Provider,
    path: String,
    body: Vec<u8>,
    accept: Option<&str>,
    now_unix: u64,
) -> Result<ProviderRequest, GatewayError> {
    let aws = p.aws.as_ref().ok_or_else(|| {
        GatewayError::new(
            500,
            "api_error",
            format!("provider `{}` has no AWS settings", p.name),
        )
    })?;
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(a) = accept {
        headers.push(("accept".to_string(), a.to_string()));
    }
    headers.extend(p.headers.iter().cloned());
    let mut remove_headers = vec!["x-api-key", "api-key", "x-amz-content-sha256"];
    match (&aws.credentials, &p.api_key) {
        (Some(creds), _) => {
            let host = p.host.clone().unwrap_or_else(|| aws.default_host());
            let req = sigv4::Request {
                method: "POST",
                host: &host,
                path: &path,
                query: "",
                headers: &[],
                body: &body,
            };
            headers.extend(sigv4::sign(&req, creds, &aws.region, "bedrock", now_unix));
            if creds.session_token.is_none() {
                remove_headers.push("x-amz-security-token");
            }
        }
        (None, Some(key)) => {
            headers.push(("authorization".to_string(), format!("Bearer {key}")));
            remove_headers.extend(["x-amz-security-token", "x-amz-date"]);
        }
        (None, None) => {
            return Err(GatewayError::new(
                500,
                "api_error",
                format!("provider `{}` has no AWS credentials", p.name),
            ))
        }
    }
    Ok(ProviderRequest {
        path,
        headers,
        remove_headers,
        body: Some(body),
    })
}

/// A Bedrock error body → the client's error. The code is the exception Bedrock documents for
/// the status (the `x-amzn-ErrorType` header that names it is not passed to translators).
fn bedrock_error(provider: &str, status: u16, body: &[u8]) -> GatewayError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
    let code = match status {
        400 => Some("ValidationException"),
        403 => Some("AccessDeniedException"),
        404 => Some("ResourceNotFoundException"),
        408 => Some("ModelTimeoutException"),
        424 => Some("ModelErrorException"),
        429 => Some("ThrottlingException"),
        500 => Some("InternalServerException"),
        503 => Some("ServiceUnavailableException"),
        _ => None,
    };
    provider_error(provider, status, &message, code)
}

/// A unique enough `chatcmpl-` id (Bedrock answers carry none in the body).
fn completion_id(seed: &[u8], now: u64) -> String {
    use sha2::{Digest, Sha256};
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut h = Sha256::new();
    h.update(seed);
    h.update(now.to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let d = h.finalize();
    format!("chatcmpl-{}", sigv4::hex(&d[..12]))
}

// ---------------------------------------------------------------------------------------------
// Converse request shapes (serialise only, borrowing from the parsed OpenAI request)
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConverseRequest<'r> {
    messages: Vec<Msg<'r>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<Block<'r>>,
    #[serde(skip_serializing_if = "InferenceConfig::is_empty")]
    inference_config: InferenceConfig<'r>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_model_request_fields: Option<Additional>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<OutputConfig<'r>>,
}

#[derive(Serialize)]
struct Msg<'r> {
    role: &'static str,
    content: Vec<Block<'r>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Block<'r> {
    Text(Text<'r>),
    Image(Image<'r>),
    ToolUse(ToolUse<'r>),
    ToolResult(ToolResult<'r>),
}

#[derive(Serialize)]
struct Image<'r> {
    format: &'static str,
    source: ImageSource<'r>,
}

#[derive(Serialize)]
struct ImageSource<'r> {
    /// The base64 data of the client's data URL.
    bytes: Text<'r>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolUse<'r> {
    tool_use_id: Cow<'r, str>,
    name: &'r str,
    input: &'r RawValue,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolResult<'r> {
    tool_use_id: Cow<'r, str>,
    content: Vec<Block<'r>>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct InferenceConfig<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'r str>,
}

impl InferenceConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.stop_sequences.is_empty()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'r> {
    tools: Vec<ToolWrap<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<BChoice<'r>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolWrap<'r> {
    tool_spec: ToolSpec<'r>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolSpec<'r> {
    name: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'r str>,
    input_schema: InputSchema<'r>,
}

#[derive(Serialize)]
struct InputSchema<'r> {
    json: &'r RawValue,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum BChoice<'r> {
    Auto {},
    Any {},
    Tool { name: &'r str },
}

#[derive(Serialize)]
struct Additional {
    thinking: Thinking,
}

#[derive(Serialize)]
struct Thinking {
    #[serde(rename = "type")]
    kind: &'static str,
    budget_tokens: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutputConfig<'r> {
    text_format: TextFormat<'r>,
}

#[derive(Serialize)]
struct TextFormat<'r> {
    #[serde(rename = "type")]
    kind: &'static str,
    structure: Structure<'r>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Structure<'r> {
    json_schema: JsonSchemaDef<'r>,
}

#[derive(Serialize)]
struct JsonSchemaDef<'r> {
    /// The JSON Schema as a string, as Bedrock's `JsonSchemaDefinition` wants it.
    schema: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'r str>,
}

const EMPTY_OBJECT: &str = "{}";
const EMPTY_SCHEMA: &str = r#"{"type":"object","properties":{}}"#;

/// Text of the user turn put before a conversation that starts with the assistant.
pub const LEADING_USER_PLACEHOLDER: &str = super::gemini::LEADING_USER_PLACEHOLDER;

/// Bedrock's `[a-zA-Z0-9_.:-]{1,64}`; other characters become `_`.
fn tool_id(id: &str) -> Cow<'_, str> {
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

fn image_format(mime: &str) -> Option<&'static str> {
    match mime.trim().to_ascii_lowercase().as_str() {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

fn image<'r>(image_url: Text<'r>, param: &str) -> Result<Block<'r>, GatewayError> {
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
fn plain_text<'r>(
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

fn user_part<'r>(p: &'r ContentPart<'_>, param: &str) -> Result<Option<Block<'r>>, GatewayError> {
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

struct Conversation<'r> {
    system: Vec<Block<'r>>,
    messages: Vec<Msg<'r>>,
    has_tool_blocks: bool,
}

impl<'r> Conversation<'r> {
    fn push(&mut self, role: &'static str, block: Block<'r>) {
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

fn conversation<'r>(req: &'r ChatRequest<'_>) -> Result<Conversation<'r>, GatewayError> {
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
            Role::User => {
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
            }
            Role::Assistant => {
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
            }
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

fn reasoning_budget(effort: &str) -> Result<Option<u64>, GatewayError> {
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

fn converse_body(req: &ChatRequest<'_>, model: &str) -> Result<Vec<u8>, GatewayError> {
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
    let conv = conversation(req)?;
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
        Some(ToolChoice::None) => conv.has_tool_blocks.then_some(None),
    };
    let tool_config = match tool_choice {
        Some(choice) if !tools.is_empty() => Some(ToolConfig {
            tools,
            tool_choice: choice,
        }),
        _ => None,
    };
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
    let output_config = match &req.response_format {
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
    };
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

// ---------------------------------------------------------------------------------------------
// Converse response shapes
// ---------------------------------------------------------------------------------------------

/// Bedrock `usage` (TokenUsage) in OpenAI's terms: cache reads and writes are part of the prompt.
fn token_usage(u: &Value) -> Usage {
    let get = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    let (read, write) = (get("cacheReadInputTokens"), get("cacheWriteInputTokens"));
    Usage {
        prompt_tokens: get("inputTokens")
            .saturating_add(read)
            .saturating_add(write),
        completion_tokens: get("outputTokens"),
        cached_tokens: read,
        cache_creation_tokens: write,
        reasoning_tokens: 0,
    }
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> Option<&'v str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// `stopReason` → `finish_reason`; `Err` for the reasons that mean the answer is broken.
fn finish_reason(r: Option<&str>) -> Result<&'static str, String> {
    match r {
        Some("max_tokens") | Some("model_context_window_exceeded") => Ok("length"),
        Some("tool_use") => Ok("tool_calls"),
        Some("guardrail_intervened") | Some("content_filtered") => Ok("content_filter"),
        Some(r @ ("malformed_model_output" | "malformed_tool_use")) => Err(r.to_string()),
        _ => Ok("stop"),
    }
}

/// Status of an in-stream exception (Bedrock's documented status of that exception).
fn exception_status(kind: &str) -> u16 {
    match kind {
        "throttlingException" => 429,
        "validationException" => 400,
        "serviceUnavailableException" => 503,
        "internalServerException" => 500,
        "modelTimeoutException" => 408,
        "modelStreamErrorException" => 424,
        _ => 502,
    }
}

// ---------------------------------------------------------------------------------------------
// Chat translator
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
pub struct BedrockChat {
    provider: String,
    /// The envelope of answers and chunks: id, model (the deployment's), created.
    w: ChunkWriter,
    usage: Option<Usage>,
    decoder: Decoder,
    started: bool,
    /// Bedrock `contentBlockIndex` of each tool-use block → OpenAI tool-call index (its position).
    tool_blocks: Vec<u64>,
    /// The finish chunk went out (messageStop seen).
    finished: bool,
}

impl BedrockChat {
    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.w.role(out, 0);
        }
    }

    fn stream_error(&mut self, message: &str, out: &mut Vec<u8>) {
        let e = self.stream_failure(message);
        self.w.fail(out, &e);
    }

    fn stream_failure(&self, message: &str) -> GatewayError {
        GatewayError::new(502, "api_error", format!("{}: {message}", self.provider))
            .with_code("upstream_stream_error")
    }

    fn message(&mut self, m: Message, out: &mut Vec<u8>) {
        match m.message_type.as_str() {
            "event" => self.event(&m, out),
            "exception" => {
                let text = serde_json::from_slice::<Value>(&m.payload)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&m.payload).into_owned());
                let status = exception_status(&m.exception_type);
                let e = GatewayError::new(
                    status,
                    kind_for_status(status),
                    format!(
                        "{} stream failed: {}: {text}",
                        self.provider, m.exception_type
                    ),
                )
                .with_code(&m.exception_type);
                self.w.fail(out, &e);
            }
            _ => {
                let e = GatewayError::new(
                    502,
                    "api_error",
                    format!(
                        "{} stream failed: {}: {}",
                        self.provider, m.error_code, m.error_message
                    ),
                )
                .with_code("upstream_stream_error");
                self.w.fail(out, &e);
            }
        }
    }

    /// An `event` frame.
    fn event(&mut self, m: &Message, out: &mut Vec<u8>) {
        let Ok(ev) = serde_json::from_slice::<Value>(&m.payload) else {
            let what = format!("unreadable `{}` event", m.event_type);
            self.stream_error(&what, out);
            return;
        };
        let block = ev
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match m.event_type.as_str() {
            "messageStart" => self.start(out),
            "contentBlockStart" => {
                let Some(tu) = ev.pointer("/start/toolUse") else {
                    return;
                };
                self.start(out);
                let index = self.tool_index(block);
                let id = str_at(tu, "/toolUseId").unwrap_or("");
                let name = str_at(tu, "/name").unwrap_or("");
                self.w.tool_start(out, 0, index, id, name);
            }
            "contentBlockDelta" => {
                let Some(d) = ev.get("delta") else { return };
                self.start(out);
                if let Some(t) = str_at(d, "/text").filter(|t| !t.is_empty()) {
                    self.w.content(out, 0, t);
                }
                if let Some(t) = str_at(d, "/reasoningContent/text").filter(|t| !t.is_empty()) {
                    self.w.reasoning(out, 0, t);
                }
                if let Some(args) = str_at(d, "/toolUse/input").filter(|a| !a.is_empty()) {
                    let index = self.tool_index(block);
                    self.w.tool_args(out, 0, index, args);
                }
            }
            "messageStop" => {
                self.start(out);
                match finish_reason(str_at(&ev, "/stopReason")) {
                    Ok(f) => {
                        if !self.finished {
                            self.finished = true;
                            self.w.finish(out, 0, f);
                        }
                    }
                    Err(r) => self.stream_error(&format!("generation ended with {r}"), out),
                }
            }
            "metadata" => {
                if let Some(u) = ev.get("usage") {
                    self.usage = Some(token_usage(u));
                }
                if self.finished {
                    self.w.close(out, self.usage.unwrap_or_default());
                }
            }
            _ => {} // contentBlockStop and events LLMux does not translate
        }
    }

    fn tool_index(&mut self, block: u64) -> u32 {
        let i = match self.tool_blocks.iter().position(|&b| b == block) {
            Some(i) => i,
            None => {
                self.tool_blocks.push(block);
                self.tool_blocks.len() - 1
            }
        };
        u32::try_from(i).unwrap_or(u32::MAX)
    }
}

impl ChunkStream for BedrockChat {
    fn writer(&self) -> &ChunkWriter {
        &self.w
    }

    fn writer_mut(&mut self) -> &mut ChunkWriter {
        &mut self.w
    }

    fn decode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.decoder.feed(chunk);
        while !self.w.is_done() {
            match self.decoder.next_message() {
                None => break,
                Some(Ok(m)) => self.message(m, out),
                Some(Err(e)) => self.stream_error(&e.to_string(), out),
            }
        }
    }

    fn at_end(&self) -> Result<Usage, GatewayError> {
        if self.finished && self.decoder.pending() == 0 {
            // messageStop came but no metadata: end the stream with what is known.
            return Ok(self.usage.unwrap_or_default());
        }
        let what = if self.decoder.pending() > 0 {
            "stream ended inside an event-stream message"
        } else {
            "stream ended before messageStop"
        };
        Err(self.stream_failure(what))
    }
}

impl ChatTranslator for BedrockChat {
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        let p = call.provider;
        self.provider = p.name.clone();
        self.w.model = call.upstream_model.to_string();
        self.w.created = call.now_unix;
        self.w.include_usage = call.envelope.stream && call.envelope.include_usage;
        let req = ChatRequest::from_envelope(call.envelope)?;
        let body = converse_body(&req, call.upstream_model)?;
        self.w.id = completion_id(&body, call.now_unix);
        let op = if call.envelope.stream {
            "converse-stream"
        } else {
            "converse"
        };
        signed(
            p,
            model_path(p, call.upstream_model, op),
            body,
            None,
            call.now_unix,
        )
    }

    fn response(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        let bad_answer = |what: String| {
            GatewayError::new(502, "api_error", format!("{}: {what}", self.provider))
        };
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| bad_answer(format!("unreadable Converse answer: {e}")))?;
        if let Some(u) = v.get("usage") {
            self.usage = Some(token_usage(u));
        }
        let finish = finish_reason(str_at(&v, "/stopReason"))
            .map_err(|reason| bad_answer(format!("generation ended with {reason}")))?;
        let blocks = v
            .pointer("/output/message/content")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut calls = Vec::new();
        for b in blocks {
            if let Some(t) = str_at(b, "/text") {
                text.push_str(t);
            }
            if let Some(t) = str_at(b, "/reasoningContent/reasoningText/text") {
                reasoning.push_str(t);
            }
            if let Some(tu) = b.get("toolUse") {
                calls.push(ToolCallOut {
                    id: str_at(tu, "/toolUseId").unwrap_or(""),
                    kind: "function",
                    function: FunctionOut {
                        name: str_at(tu, "/name").unwrap_or(""),
                        arguments: match tu.get("input") {
                            Some(i) if !i.is_null() => Cow::Owned(i.to_string()),
                            _ => Cow::Borrowed(EMPTY_OBJECT),
                        },
                    },
                });
            }
        }
        let out = ChatCompletion {
            id: &self.w.id,
            object: "chat.completion",
            created: self.w.created,
            model: &self.w.model,
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: (!text.is_empty()).then_some(Cow::Owned(text)),
                    reasoning_content: (!reasoning.is_empty()).then_some(Cow::Owned(reasoning)),
                    tool_calls: calls,
                    refusal: None,
                },
                logprobs: None,
                finish_reason: Some(finish),
            }],
            usage: Some(CompletionUsage::from(self.usage.unwrap_or_default())),
        };
        serde_json::to_vec(&out)
            .map(Some)
            .map_err(|e| GatewayError::new(500, "api_error", e.to_string()))
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) -> bool {
        openai_chunks::stream_chunk(self, chunk, end_of_stream, out)
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        bedrock_error(&self.provider, status, body)
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

// ---------------------------------------------------------------------------------------------
// Embeddings: InvokeModel with the model's native body
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum EmbedFamily {
    #[default]
    Titan,
    Cohere,
}

#[derive(Default)]
pub struct BedrockEmbeddings {
    provider: String,
    model: String,
    family: EmbedFamily,
    base64: bool,
    usage: Option<Usage>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TitanRequest<'r> {
    input_text: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    normalize: Option<bool>,
}

#[derive(Serialize)]
struct CohereRequest<'r> {
    texts: Vec<&'r str>,
    input_type: &'r str,
    embedding_types: [&'static str; 1],
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem<'a>>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingItem<'a> {
    object: &'static str,
    index: usize,
    embedding: EmbeddingValue<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbeddingValue<'a> {
    Floats(&'a Value),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

impl BedrockEmbeddings {
    fn item<'a>(&self, index: usize, v: &'a Value) -> Result<EmbeddingItem<'a>, GatewayError> {
        let floats = v.as_array().ok_or_else(|| {
            GatewayError::new(
                502,
                "api_error",
                format!("{}: an embedding is not an array of numbers", self.provider),
            )
        })?;
        let embedding = if self.base64 {
            let mut bytes = Vec::with_capacity(floats.len() * 4);
            for f in floats {
                bytes.extend_from_slice(&(f.as_f64().unwrap_or(0.0) as f32).to_le_bytes());
            }
            EmbeddingValue::Base64(base64(&bytes))
        } else {
            EmbeddingValue::Floats(v)
        };
        Ok(EmbeddingItem {
            object: "embedding",
            index,
            embedding,
        })
    }
}

impl ChatTranslator for BedrockEmbeddings {
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        let p = call.provider;
        let env = call.envelope;
        self.provider = p.name.clone();
        self.model = call.upstream_model.to_string();
        let model = call.upstream_model;
        self.family = if model.contains("amazon.titan-embed-text") {
            EmbedFamily::Titan
        } else if model.contains("cohere.embed") {
            EmbedFamily::Cohere
        } else {
            return Err(bad(
                "model",
                format!("bedrock embeddings support Amazon Titan Text Embeddings (`amazon.titan-embed-text-*`) and Cohere Embed (`cohere.embed-*`), not `{model}`"),
            ));
        };
        let field = |name: &str| env.field(name).filter(|v| v.get() != "null");
        let input = field("input").ok_or_else(|| bad("input", "`input` is required"))?;
        let not_text = || {
            bad(
                "input",
                "bedrock embeddings take text: a string or an array of strings (not token arrays)",
            )
        };
        let input: Value = serde_json::from_str(input.get()).map_err(|_| not_text())?;
        let texts: Vec<&str> = match &input {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items
                .iter()
                .map(Value::as_str)
                .collect::<Option<_>>()
                .ok_or_else(not_text)?,
            _ => return Err(not_text()),
        };
        let dimensions = match field("dimensions") {
            None => None,
            Some(d) => Some(
                d.get()
                    .parse::<u32>()
                    .map_err(|_| bad("dimensions", "`dimensions` must be a positive integer"))?,
            ),
        };
        self.base64 = field("encoding_format").is_some_and(|f| f.get() == "\"base64\"");
        let body = match self.family {
            EmbedFamily::Titan => {
                if texts.len() != 1 {
                    return Err(bad(
                        "input",
                        format!("Amazon Titan text embeddings take one input per request; this request has {}: send one string per request", texts.len()),
                    ));
                }
                let v2 = model.contains("-v2");
                if dimensions.is_some() && !v2 {
                    return Err(unsupported("dimensions", "`dimensions` for Titan text embeddings v1"));
                }
                serde_json::to_vec(&TitanRequest {
                    input_text: texts[0],
                    dimensions,
                    normalize: v2.then_some(true),
                })
            }
            EmbedFamily::Cohere => {
                if dimensions.is_some() {
                    return Err(unsupported("dimensions", "`dimensions` for Cohere Embed"));
                }
                let input_type = match field("input_type") {
                    None => "search_document",
                    Some(v) => {
                        let s = v.get().trim_matches('"');
                        match s {
                            "search_document" | "search_query" | "classification" | "clustering" => s,
                            _ => return Err(bad("input_type", "`input_type` must be search_document, search_query, classification or clustering")),
                        }
                    }
                };
                serde_json::to_vec(&CohereRequest {
                    texts,
                    input_type,
                    embedding_types: ["float"],
                })
            }
        }
        .map_err(|e| GatewayError::new(500, "api_error", e.to_string()))?;
        signed(
            p,
            model_path(p, model, "invoke"),
            body,
            Some("application/json"),
            call.now_unix,
        )
    }

    fn response(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            GatewayError::new(
                502,
                "api_error",
                format!("{}: unreadable embeddings answer: {e}", self.provider),
            )
        })?;
        let missing = |what: &str| {
            GatewayError::new(
                502,
                "api_error",
                format!("{}: embeddings answer without `{what}`", self.provider),
            )
        };
        let (data, tokens) = match self.family {
            EmbedFamily::Titan => {
                let e = v.get("embedding").ok_or_else(|| missing("embedding"))?;
                let tokens = v
                    .get("inputTextTokenCount")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                (vec![self.item(0, e)?], tokens)
            }
            EmbedFamily::Cohere => {
                // `embeddings` is `[[...]]`, or `{"float": [[...]]}` when types were asked for.
                let e = v.get("embeddings").ok_or_else(|| missing("embeddings"))?;
                let rows = e
                    .get("float")
                    .unwrap_or(e)
                    .as_array()
                    .ok_or_else(|| missing("embeddings"))?;
                let mut data = Vec::with_capacity(rows.len());
                for (i, r) in rows.iter().enumerate() {
                    data.push(self.item(i, r)?);
                }
                // Cohere on Bedrock reports tokens only in a response header.
                (data, 0)
            }
        };
        self.usage = Some(Usage {
            prompt_tokens: tokens,
            ..Default::default()
        });
        let out = EmbeddingList {
            object: "list",
            data,
            model: &self.model,
            usage: EmbeddingUsage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        };
        serde_json::to_vec(&out)
            .map(Some)
            .map_err(|e| GatewayError::new(500, "api_error", e.to_string()))
    }

    fn stream_chunk(&mut self, _chunk: &[u8], _end_of_stream: bool, _out: &mut Vec<u8>) -> bool {
        false
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        bedrock_error(&self.provider, status, body)
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::eventstream::encode;
    use crate::config::{Config, Env};
    use crate::openai::{parse_chat_envelope, parse_embeddings_envelope};
    use serde_json::{json, Value};

    struct NoEnv;
    impl Env for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    const MODEL: &str = "us.anthropic.claude-3-5-haiku-20241022-v1:0";

    fn provider(extra: &str) -> Provider {
        let cfg = format!(
            r#"{{"providers":{{"br":{{"type":"bedrock","cluster":"c","region":"us-west-2","aws_access_key_id":"AKIDTEST","aws_secret_access_key":"secret"{extra}}}}},
                "models":[{{"name":"m","deployments":[{{"provider":"br","model":"{MODEL}"}}]}}]}}"#
        );
        Config::parse(cfg.as_bytes(), &NoEnv)
            .unwrap()
            .providers
            .remove(0)
    }

    fn translate_with(
        p: &Provider,
        body: &str,
        model: &str,
    ) -> Result<(BedrockChat, ProviderRequest), GatewayError> {
        let env = parse_chat_envelope(body.as_bytes())?;
        let mut t = BedrockChat::default();
        let req = t.request(&ChatCall {
            raw: body.as_bytes(),
            envelope: &env,
            provider: p,
            upstream_model: model,
            now_unix: 1_440_938_160,
            want_stream_usage: true,
        })?;
        Ok((t, req))
    }

    fn translate(body: &str) -> Result<(BedrockChat, ProviderRequest), GatewayError> {
        translate_with(&provider(""), body, MODEL)
    }

    fn body_of(body: &str) -> Value {
        serde_json::from_slice(&translate(body).unwrap().1.body.unwrap()).unwrap()
    }

    fn header<'a>(req: &'a ProviderRequest, name: &str) -> Option<&'a str> {
        req.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn request_is_signed_over_the_encoded_path_and_body() {
        let (_, req) =
            translate(r#"{"model":"m","messages":[{"role":"user","content":"Hi"}]}"#).unwrap();
        assert_eq!(
            req.path,
            "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
        );
        assert_eq!(header(&req, "x-amz-date"), Some("20150830T123600Z"));
        let auth = header(&req, "authorization").unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/20150830/us-west-2/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature="), "{auth}");
        // The signature is the one of the canonical request built from the wire path and body.
        let body = req.body.as_deref().unwrap();
        let hash = sigv4::hex(&<sha2::Sha256 as sha2::Digest>::digest(body));
        let (canonical, signed) = sigv4::canonical_request(
            "POST",
            &req.path,
            "",
            &[
                (
                    "host".into(),
                    "bedrock-runtime.us-west-2.amazonaws.com".into(),
                ),
                ("x-amz-date".into(), "20150830T123600Z".into()),
            ],
            &hash,
        );
        assert!(canonical.contains("v1%253A0/converse"));
        let creds = sigv4::Credentials {
            access_key_id: "AKIDTEST".into(),
            secret_access_key: "secret".into(),
            session_token: None,
        };
        assert_eq!(
            auth,
            sigv4::authorization(
                &creds,
                "20150830T123600Z",
                "us-west-2",
                "bedrock",
                &canonical,
                &signed
            )
        );
        assert!(req.remove_headers.contains(&"x-amz-security-token"));
        // Streams go to converse-stream; a session token is sent and signed.
        let p = provider(r#","aws_session_token":"tok""#);
        let (_, req) = translate_with(
            &p,
            r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#,
            "arn:aws:bedrock:us-west-2:1:inference-profile/x",
        )
        .unwrap();
        assert_eq!(
            req.path,
            "/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A1%3Ainference-profile%2Fx/converse-stream"
        );
        assert_eq!(header(&req, "x-amz-security-token"), Some("tok"));
        assert!(header(&req, "authorization")
            .unwrap()
            .contains("SignedHeaders=host;x-amz-date;x-amz-security-token,"));
        // A Bedrock API key goes as Bearer, unsigned.
        let p = Config::parse(br#"{"providers":{"br":{"type":"bedrock","cluster":"c","region":"eu-west-1","api_key":"bk"}},"models":[{"name":"m","deployments":[{"provider":"br"}]}]}"#, &NoEnv).unwrap().providers.remove(0);
        assert_eq!(
            p.host.as_deref(),
            Some("bedrock-runtime.eu-west-1.amazonaws.com")
        );
        let (_, req) = translate_with(
            &p,
            r#"{"model":"m","messages":[{"role":"user","content":"Hi"}]}"#,
            "m",
        )
        .unwrap();
        assert_eq!(header(&req, "authorization"), Some("Bearer bk"));
        assert_eq!(header(&req, "x-amz-date"), None);
    }

    #[test]
    fn request_maps_messages_tools_and_config() {
        let b = body_of(
            r#"{"model":"m","messages":[
            {"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"data:image/jpeg;base64,/9j/4AAQ"}}]},
            {"role":"assistant","content":"","tool_calls":[
                {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
                {"id":"bad id!","type":"function","function":{"name":"get_weather","arguments":""}}]},
            {"role":"tool","tool_call_id":"call_1","content":"sunny"},
            {"role":"tool","tool_call_id":"bad id!","content":[{"type":"text","text":"rainy"}]},
            {"role":"developer","content":[{"type":"text","text":"Use metric."}]},
            {"role":"user","content":"Thanks"}],
            "max_completion_tokens":100,"max_tokens":5,"temperature":1.5,"top_p":0.9,"stop":["END"],"user":"u","seed":3,
            "tools":[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},
                     {"type":"function","function":{"name":"noop"}}],
            "tool_choice":"required"}"#,
        );
        assert_eq!(
            b["system"],
            json!([{"text": "Be brief."}, {"text": "Use metric."}])
        );
        assert_eq!(
            b["messages"][0],
            json!({"role":"user","content":[{"text":"What is this?"},{"image":{"format":"jpeg","source":{"bytes":"/9j/4AAQ"}}}]})
        );
        assert_eq!(
            b["messages"][1],
            json!({"role":"assistant","content":[
                {"toolUse":{"toolUseId":"call_1","name":"get_weather","input":{"city":"Paris"}}},
                {"toolUse":{"toolUseId":"bad_id_","name":"get_weather","input":{}}}]})
        );
        assert_eq!(
            b["messages"][2],
            json!({"role":"user","content":[
                {"toolResult":{"toolUseId":"call_1","content":[{"text":"sunny"}]}},
                {"toolResult":{"toolUseId":"bad_id_","content":[{"text":"rainy"}]}},
                {"text":"Thanks"}]})
        );
        assert_eq!(b["messages"].as_array().unwrap().len(), 3);
        assert_eq!(
            b["inferenceConfig"],
            json!({"maxTokens":100,"temperature":1.0,"topP":0.9,"stopSequences":["END"]})
        );
        assert_eq!(b["toolConfig"]["toolChoice"], json!({"any": {}}));
        assert_eq!(
            b["toolConfig"]["tools"][0],
            json!({"toolSpec":{"name":"get_weather","description":"Weather","inputSchema":{"json":{"type":"object","properties":{"city":{"type":"string"}}}}}})
        );
        assert_eq!(
            b["toolConfig"]["tools"][1]["toolSpec"]["inputSchema"]["json"],
            json!({"type":"object","properties":{}})
        );
        let keys: Vec<&String> = b.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["inferenceConfig", "messages", "system", "toolConfig"]
        );
    }

    /// Long texts go through the no-scan path when serde_json lent them and the escaping path
    /// when they held escapes: either way the Converse body carries exactly the client's text.
    #[test]
    fn long_texts_and_image_data_arrive_unchanged() {
        let crate::test_support::LongTexts {
            plain,
            escaped,
            unescaped,
            b64,
        } = crate::test_support::long_texts();
        let b = body_of(&format!(
            r#"{{"model":"m","messages":[{{"role":"system","content":"{plain}"}},
               {{"role":"system","content":[{{"type":"text","text":"{escaped}"}}]}},
               {{"role":"user","content":[{{"type":"text","text":"{plain}"}},{{"type":"text","text":"{escaped}"}},
                 {{"type":"image_url","image_url":{{"url":"data:image/png;base64,{b64}"}}}}]}},
               {{"role":"assistant","content":"{escaped}","tool_calls":[{{"id":"c","type":"function","function":{{"name":"f","arguments":"{{}}"}}}}]}},
               {{"role":"tool","tool_call_id":"c","content":"{escaped}"}},
               {{"role":"assistant","content":[{{"type":"text","text":"{plain}"}},{{"type":"refusal","refusal":"{escaped}"}}]}},
               {{"role":"user","content":"{plain}"}}]}}"#
        ));
        assert!(b64.len() >= 64 && plain.len() >= 64);
        assert_eq!(b["system"], json!([{"text": plain}, {"text": unescaped}]));
        assert_eq!(
            b["messages"],
            json!([
                {"role":"user","content":[
                    {"text":plain},
                    {"text":unescaped},
                    {"image":{"format":"png","source":{"bytes":b64}}}]},
                {"role":"assistant","content":[
                    {"text":unescaped},
                    {"toolUse":{"toolUseId":"c","name":"f","input":{}}}]},
                {"role":"user","content":[
                    {"toolResult":{"toolUseId":"c","content":[{"text":unescaped}]}}]},
                {"role":"assistant","content":[{"text":plain},{"text":unescaped}]},
                {"role":"user","content":[{"text":plain}]}
            ])
        );
    }

    #[test]
    fn tool_choice_reasoning_and_structured_output() {
        let tools = r#""tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]"#;
        let b = body_of(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{tools},"tool_choice":{{"type":"function","function":{{"name":"f"}}}}}}"#
        ));
        assert_eq!(
            b["toolConfig"]["toolChoice"],
            json!({"tool": {"name": "f"}})
        );
        let b = body_of(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{tools},"tool_choice":"auto"}}"#
        ));
        assert_eq!(b["toolConfig"]["toolChoice"], json!({"auto": {}}));
        let b = body_of(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{tools}}}"#
        ));
        assert!(b["toolConfig"].get("toolChoice").is_none());
        // none: no tools, unless the history has tool blocks (then declared, no choice).
        let b = body_of(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{tools},"tool_choice":"none"}}"#
        ));
        assert!(b.get("toolConfig").is_none());
        let b = body_of(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}},{{"role":"assistant","tool_calls":[{{"id":"c","type":"function","function":{{"name":"f","arguments":"{{}}"}}}}]}},{{"role":"tool","tool_call_id":"c","content":"r"}}],{tools},"tool_choice":"none"}}"#
        ));
        assert!(b["toolConfig"]["tools"].is_array() && b["toolConfig"].get("toolChoice").is_none());
        let b = body_of(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"medium"}"#,
        );
        assert_eq!(
            b["additionalModelRequestFields"],
            json!({"thinking": {"type": "enabled", "budget_tokens": 4096}})
        );
        let b = body_of(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"out","schema":{"type":"object"}}}}"#,
        );
        assert_eq!(
            b["outputConfig"],
            json!({"textFormat":{"type":"json_schema","structure":{"jsonSchema":{"schema":"{\"type\":\"object\"}","name":"out"}}}})
        );
        // A conversation that starts with the assistant gets a user turn first.
        let b = body_of(
            r#"{"model":"m","messages":[{"role":"assistant","content":"Hello"},{"role":"user","content":"x"}]}"#,
        );
        assert_eq!(
            b["messages"][0],
            json!({"role":"user","content":[{"text":LEADING_USER_PLACEHOLDER}]})
        );
    }

    #[test]
    fn request_refuses_what_bedrock_cannot_do() {
        let msgs = r#""messages":[{"role":"user","content":"x"}]"#;
        for (extra, param) in [
            (r#","n":2"#, "n"),
            (r#","logprobs":true"#, "logprobs"),
            (
                r#","response_format":{"type":"json_object"}"#,
                "response_format",
            ),
            (r#","tools":[{"type":"web_search"}]"#, "tools[0]"),
            (
                r#","tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}"#,
                "tool_choice",
            ),
            (r#","reasoning_effort":"extreme""#, "reasoning_effort"),
            (r#","functions":[{"name":"f"}]"#, "functions"),
        ] {
            let e = translate(&format!(r#"{{"model":"m",{msgs}{extra}}}"#))
                .err()
                .unwrap();
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some(param)),
                "{extra}: {}",
                e.message
            );
        }
        for (messages, param) in [
            (
                r#"[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]"#,
                "messages[0].content[0]",
            ),
            (
                r#"[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/tiff;base64,AAAA"}}]}]"#,
                "messages[0].content[0]",
            ),
            (
                r#"[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AA","format":"wav"}}]}]"#,
                "messages[0].content[0]",
            ),
            (r#"[{"role":"user","content":""}]"#, "messages[0].content"),
            (r#"[{"role":"system","content":"s"}]"#, "messages"),
            (
                r#"[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]"#,
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                r#"[{"role":"user","content":"x"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{nope"}}]}]"#,
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                r#"[{"role":"tool","content":"r"}]"#,
                "messages[0].tool_call_id",
            ),
        ] {
            let e = translate(&format!(r#"{{"model":"m","messages":{messages}}}"#))
                .err()
                .unwrap();
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some(param)),
                "{messages}: {}",
                e.message
            );
        }
        let e = translate_with(
            &provider(""),
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"low"}"#,
            "amazon.nova-pro-v1:0",
        )
        .err()
        .unwrap();
        assert_eq!(e.param.as_deref(), Some("reasoning_effort"));
    }

    #[test]
    fn response_becomes_chat_completion() {
        let (mut t, _) =
            translate(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#).unwrap();
        let body = br#"{"output":{"message":{"role":"assistant","content":[
            {"reasoningContent":{"reasoningText":{"text":"thinking...","signature":"s"}}},
            {"text":"Let me check."},
            {"toolUse":{"toolUseId":"tooluse_1","name":"get_weather","input":{"city":"Paris"}}}]}},
            "stopReason":"tool_use","usage":{"inputTokens":10,"outputTokens":5,"totalTokens":15,"cacheReadInputTokens":4,"cacheWriteInputTokens":2},
            "metrics":{"latencyMs":12}}"#;
        let out: Value = serde_json::from_slice(&t.response(body).unwrap().unwrap()).unwrap();
        let c = &out["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls");
        assert_eq!(c["message"]["content"], "Let me check.");
        assert_eq!(c["message"]["reasoning_content"], "thinking...");
        assert_eq!(
            c["message"]["tool_calls"],
            json!([{"id":"tooluse_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}])
        );
        assert_eq!(out["usage"]["prompt_tokens"], 16);
        assert_eq!(out["usage"]["completion_tokens"], 5);
        assert_eq!(out["usage"]["total_tokens"], 21);
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
        assert!(out["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(out["model"], MODEL);
        for (reason, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("guardrail_intervened", "content_filter"),
            ("content_filtered", "content_filter"),
        ] {
            let body = format!(
                r#"{{"output":{{"message":{{"role":"assistant","content":[{{"text":"a"}}]}}}},"stopReason":"{reason}","usage":{{"inputTokens":1,"outputTokens":1}}}}"#
            );
            let out: Value =
                serde_json::from_slice(&t.response(body.as_bytes()).unwrap().unwrap()).unwrap();
            assert_eq!(out["choices"][0]["finish_reason"], finish);
        }
        assert_eq!(
            t.response(br#"{"stopReason":"malformed_tool_use"}"#)
                .unwrap_err()
                .status,
            502
        );
        assert_eq!(t.response(b"nope").unwrap_err().status, 502);
    }

    #[test]
    fn errors_are_mapped_by_status() {
        let (t, _) =
            translate(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#).unwrap();
        for (status, code) in [
            (400, "ValidationException"),
            (403, "AccessDeniedException"),
            (404, "ResourceNotFoundException"),
            (424, "ModelErrorException"),
            (429, "ThrottlingException"),
            (500, "InternalServerException"),
            (503, "ServiceUnavailableException"),
        ] {
            let e = t.error(
                status,
                br#"{"message":"Too many requests, please wait before trying again."}"#,
            );
            assert_eq!((e.status, e.code.as_deref()), (status, Some(code)));
            assert!(e.message.starts_with("br returned"), "{}", e.message);
            assert!(e.message.contains("Too many requests"));
        }
        assert_eq!(t.error(429, b"").kind, "rate_limit_error");
        assert!(t
            .error(502, b"<html>bad gateway</html>")
            .message
            .contains("bad gateway"));
    }

    fn ev(kind: &str, payload: &str) -> Vec<u8> {
        encode(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    fn stream_body(with_metadata: bool) -> Vec<u8> {
        let mut s = ev("messageStart", r#"{"p":"abcdefgh","role":"assistant"}"#);
        s.extend(ev(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hel"},"p":"abc"}"#,
        ));
        s.extend(ev(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"lo"},"p":"abcdefghijk"}"#,
        ));
        s.extend(ev(
            "contentBlockStop",
            r#"{"contentBlockIndex":0,"p":"ab"}"#,
        ));
        s.extend(ev("contentBlockStart", r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tooluse_a","name":"get_weather"}},"p":"a"}"#));
        s.extend(ev(
            "contentBlockDelta",
            r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\":"}}}"#,
        ));
        s.extend(ev(
            "contentBlockDelta",
            r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"\"Paris\"}"}}}"#,
        ));
        s.extend(ev("contentBlockStop", r#"{"contentBlockIndex":1}"#));
        s.extend(ev("messageStop", r#"{"stopReason":"tool_use","p":"abcd"}"#));
        if with_metadata {
            s.extend(ev("metadata", r#"{"usage":{"inputTokens":9,"outputTokens":3,"totalTokens":12},"metrics":{"latencyMs":5},"p":"x"}"#));
        }
        s
    }

    fn run(chunks: &[&[u8]], include_usage: bool) -> String {
        let body = format!(
            r#"{{"model":"m","stream":true,"stream_options":{{"include_usage":{include_usage}}},"messages":[{{"role":"user","content":"x"}}]}}"#
        );
        let (mut t, _) = translate(&body).unwrap();
        t.w.id = "chatcmpl-test".into(); // ids differ per request
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            assert!(t.stream_chunk(c, i + 1 == chunks.len(), &mut out));
        }
        String::from_utf8(out).unwrap()
    }

    fn events(s: &str) -> Vec<Value> {
        s.split("\n\n")
            .filter(|e| !e.is_empty() && *e != "data: [DONE]")
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn stream_translates_at_every_split() {
        let body = stream_body(true);
        let whole = run(&[&body], true);
        assert!(whole.ends_with("data: [DONE]\n\n") && whole.matches("[DONE]").count() == 1);
        let ev = events(&whole);
        assert_eq!(
            ev[0]["choices"][0]["delta"],
            json!({"role":"assistant","content":""})
        );
        let text: String = ev
            .iter()
            .filter_map(|c| {
                c.pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
            })
            .collect();
        assert_eq!(text, "Hello");
        assert_eq!(
            ev[3]["choices"][0]["delta"]["tool_calls"],
            json!([{"index":0,"id":"tooluse_a","type":"function","function":{"name":"get_weather","arguments":""}}])
        );
        let args: String = ev
            .iter()
            .filter_map(|c| {
                c.pointer("/choices/0/delta/tool_calls/0/function/arguments")
                    .and_then(Value::as_str)
            })
            .collect();
        assert_eq!(args, r#"{"city":"Paris"}"#);
        let finish = &ev[ev.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
        assert!(finish["usage"].is_null());
        let last = ev.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["total_tokens"], 12);
        assert!(ev.iter().all(|e| e["id"] == ev[0]["id"]));
        for cut in 0..=body.len() {
            let (a, b) = body.split_at(cut);
            assert_eq!(run(&[a, b], true), whole, "cut {cut}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(run(&bytes, true), whole);
        let without = run(&[&body], false);
        assert!(!without.contains("usage") && without.ends_with("data: [DONE]\n\n"));
        // messageStop without metadata still ends cleanly.
        let out = run(&[&stream_body(false)], true);
        assert!(out.ends_with("data: [DONE]\n\n") && !out.contains("\"error\""));
    }

    #[test]
    fn stream_failures_end_with_an_error_event_then_done() {
        let mut body = stream_body(false);
        body.truncate(
            body.len() - ev("messageStop", r#"{"stopReason":"tool_use","p":"abcd"}"#).len(),
        );
        let mut with_ex = body.clone();
        with_ex.extend(encode(
            &[
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            br#"{"message":"Too many tokens, please wait before trying again."}"#,
        ));
        let out = run(&[&with_ex], false);
        let ev = events(&out);
        let err = &ev.last().unwrap()["error"];
        assert_eq!(err["code"], "throttlingException");
        assert_eq!(err["type"], "rate_limit_error");
        assert!(err["message"].as_str().unwrap().contains("Too many tokens"));
        assert!(out.ends_with("data: [DONE]\n\n") && out.matches("[DONE]").count() == 1);
        // Ended before messageStop; ended inside a message; a corrupted CRC.
        let out = run(&[&body], false);
        assert!(out.contains("before messageStop") && out.ends_with("data: [DONE]\n\n"));
        let full = stream_body(true);
        let out = run(&[&full[..full.len() - 3]], false);
        assert!(
            out.contains("inside an event-stream message") && out.ends_with("data: [DONE]\n\n")
        );
        let mut bad = stream_body(true);
        let n = bad.len();
        bad[n - 1] ^= 1;
        let out = run(&[&bad], false);
        assert!(out.contains("CRC mismatch") && out.ends_with("data: [DONE]\n\n"));
        assert_eq!(out.matches("[DONE]").count(), 1);
        // An `error` message.
        let out = run(
            &[&encode(
                &[
                    (":message-type", "error"),
                    (":error-code", "InternalFailure"),
                    (":error-message", "boom"),
                ],
                b"",
            )],
            false,
        );
        assert!(out.contains("InternalFailure: boom") && out.ends_with("data: [DONE]\n\n"));
    }

    fn embed(
        body: &str,
        model: &str,
    ) -> Result<(BedrockEmbeddings, ProviderRequest), GatewayError> {
        let p = provider("");
        let env = parse_embeddings_envelope(body.as_bytes())?;
        let mut t = BedrockEmbeddings::default();
        let req = t.request(&ChatCall {
            raw: body.as_bytes(),
            envelope: &env,
            provider: &p,
            upstream_model: model,
            now_unix: 1_440_938_160,
            want_stream_usage: true,
        })?;
        Ok((t, req))
    }

    #[test]
    fn titan_embeddings() {
        let (mut t, req) = embed(
            r#"{"model":"e","input":["Hello"],"dimensions":256}"#,
            "amazon.titan-embed-text-v2:0",
        )
        .unwrap();
        assert_eq!(req.path, "/model/amazon.titan-embed-text-v2%3A0/invoke");
        assert_eq!(header(&req, "accept"), Some("application/json"));
        let b: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            b,
            json!({"inputText":"Hello","dimensions":256,"normalize":true})
        );
        let out: Value = serde_json::from_slice(&t.response(br#"{"embedding":[0.5,-0.25],"inputTextTokenCount":3,"embeddingsByType":{"float":[0.5,-0.25]}}"#).unwrap().unwrap()).unwrap();
        assert_eq!(
            out,
            json!({"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-0.25]}],"model":"amazon.titan-embed-text-v2:0","usage":{"prompt_tokens":3,"total_tokens":3}})
        );
        assert_eq!(t.usage().unwrap().prompt_tokens, 3);
        let e = embed(
            r#"{"model":"e","input":["a","b"]}"#,
            "amazon.titan-embed-text-v2:0",
        )
        .err()
        .unwrap();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("input")));
        assert!(e.message.contains("one input per request"));
        let (_, req) = embed(r#"{"model":"e","input":"a"}"#, "amazon.titan-embed-text-v1").unwrap();
        assert_eq!(req.body.as_deref(), Some(&br#"{"inputText":"a"}"#[..]));
        assert_eq!(
            embed(
                r#"{"model":"e","input":[[1,2]]}"#,
                "amazon.titan-embed-text-v2:0"
            )
            .err()
            .unwrap()
            .param
            .as_deref(),
            Some("input")
        );
        assert_eq!(
            embed(r#"{"model":"e","input":"a"}"#, "meta.llama3")
                .err()
                .unwrap()
                .param
                .as_deref(),
            Some("model")
        );
    }

    #[test]
    fn cohere_embeddings_and_base64() {
        let (mut t, req) = embed(
            r#"{"model":"e","input":["a","b"],"encoding_format":"base64"}"#,
            "cohere.embed-english-v3",
        )
        .unwrap();
        let b: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            b,
            json!({"texts":["a","b"],"input_type":"search_document","embedding_types":["float"]})
        );
        let out: Value = serde_json::from_slice(&t.response(br#"{"id":"x","embeddings":{"float":[[1.0,-2.0],[0.5,0.0]]},"texts":["a","b"],"response_type":"embeddings_by_type"}"#).unwrap().unwrap()).unwrap();
        // 1.0f32 = 00 00 80 3f, -2.0f32 = 00 00 00 c0 (little endian), as OpenAI encodes.
        assert_eq!(
            out["data"][0]["embedding"],
            base64(&[0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0])
        );
        assert_eq!(out["data"][0]["embedding"], "AACAPwAAAMA=");
        assert_eq!(out["data"][1]["index"], 1);
        let (mut t, _) = embed(
            r#"{"model":"e","input":"a","input_type":"search_query"}"#,
            "cohere.embed-multilingual-v3",
        )
        .unwrap();
        let out: Value =
            serde_json::from_slice(&t.response(br#"{"embeddings":[[0.25]]}"#).unwrap().unwrap())
                .unwrap();
        assert_eq!(out["data"][0]["embedding"], json!([0.25]));
        assert_eq!(
            embed(
                r#"{"model":"e","input":"a","input_type":"x"}"#,
                "cohere.embed-english-v3"
            )
            .err()
            .unwrap()
            .param
            .as_deref(),
            Some("input_type")
        );
        assert_eq!(t.response(b"{}").unwrap_err().status, 502);
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    struct MapEnv(&'static [(&'static str, &'static str)]);
    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn config_err(provider: &str, env: &dyn Env) -> (String, String) {
        let cfg = format!(
            r#"{{"providers":{{"br":{provider}}},"models":[{{"name":"m","deployments":[{{"provider":"br"}}]}}]}}"#
        );
        let e = Config::parse(cfg.as_bytes(), env).unwrap_err();
        (e.path, e.message)
    }

    #[test]
    fn config_names_the_bad_field() {
        let none = NoEnv;
        let (path, _) = config_err(
            r#"{"type":"bedrock","cluster":"c","aws_access_key_id":"a","aws_secret_access_key":"s"}"#,
            &none,
        );
        assert_eq!(path, "providers.br.region");
        let (path, _) = config_err(
            r#"{"type":"bedrock","cluster":"c","region":"US East"}"#,
            &none,
        );
        assert_eq!(path, "providers.br.region");
        let (path, msg) = config_err(
            r#"{"type":"bedrock","cluster":"c","region":"us-east-1"}"#,
            &none,
        );
        assert_eq!(path, "providers.br.aws_access_key_id");
        assert!(msg.contains("AWS_ACCESS_KEY_ID"), "{msg}");
        let (path, _) = config_err(
            r#"{"type":"bedrock","cluster":"c","region":"us-east-1","aws_access_key_id":"a"}"#,
            &none,
        );
        assert_eq!(path, "providers.br.aws_secret_access_key");
        let (path, msg) = config_err(
            r#"{"type":"bedrock","cluster":"c","region":"us-east-1","aws_access_key_id":"a","aws_secret_access_key_env":"MY_SECRET"}"#,
            &none,
        );
        assert_eq!(path, "providers.br.aws_secret_access_key_env");
        assert!(msg.contains("MY_SECRET"));
        let (path, _) = config_err(
            r#"{"type":"bedrock","cluster":"c","region":"us-east-1","aws_access_key_id":"a","aws_access_key_id_env":"X"}"#,
            &none,
        );
        assert_eq!(path, "providers.br.aws_access_key_id_env");
        let (path, msg) = config_err(
            r#"{"type":"openai","cluster":"c","region":"us-east-1"}"#,
            &none,
        );
        assert_eq!(path, "providers.br.region");
        assert!(msg.contains("only Bedrock"));
        let (path, _) = config_err(
            r#"{"type":"gemini","cluster":"c","aws_session_token_env":"T"}"#,
            &none,
        );
        assert_eq!(path, "providers.br.aws_session_token_env");
    }

    #[test]
    fn config_reads_the_standard_aws_variables() {
        let env = MapEnv(&[
            ("AWS_ACCESS_KEY_ID", "AKIDENV"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_SESSION_TOKEN", "envtoken"),
            ("OTHER_ID", "AKIDOTHER"),
        ]);
        let cfg = br#"{"providers":{"br":{"type":"bedrock","cluster":"c","region":"ap-south-1"}},"models":[{"name":"m","deployments":[{"provider":"br"}]}]}"#;
        let p = Config::parse(cfg, &env).unwrap().providers.remove(0);
        let aws = p.aws.unwrap();
        assert_eq!(aws.region, "ap-south-1");
        let c = aws.credentials.unwrap();
        assert_eq!(
            (
                c.access_key_id.as_str(),
                c.secret_access_key.as_str(),
                c.session_token.as_deref()
            ),
            ("AKIDENV", "envsecret", Some("envtoken"))
        );
        assert_eq!(
            p.host.as_deref(),
            Some("bedrock-runtime.ap-south-1.amazonaws.com")
        );
        assert_eq!(p.base_path, "");
        let cfg = br#"{"providers":{"br":{"type":"bedrock","cluster":"c","region":"ap-south-1","host":"vpce.example","aws_access_key_id_env":"OTHER_ID"}},"models":[{"name":"m","deployments":[{"provider":"br"}]}]}"#;
        let p = Config::parse(cfg, &env).unwrap().providers.remove(0);
        assert_eq!(
            p.aws.unwrap().credentials.unwrap().access_key_id,
            "AKIDOTHER"
        );
        assert_eq!(p.host.as_deref(), Some("vpce.example"));
    }

    #[test]
    fn garbage_never_panics() {
        let p = provider("");
        let fresh = |stream: bool, usage: bool| -> Box<dyn ChatTranslator> {
            let body = format!(
                r#"{{"model":"m","stream":{stream},"stream_options":{{"include_usage":{usage}}},"messages":[{{"role":"user","content":"x"}}]}}"#
            );
            Box::new(translate(&body).unwrap().0)
        };
        let stream = stream_body(true);
        crate::test_support::workout(
            &[&stream, br#"{"output":{"message":{"content":[{"text":"a"},{"toolUse":{"toolUseId":"t","name":"f","input":{}}}]}},"stopReason":"end_turn","usage":{"inputTokens":1}}"#,
              br#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"r"},{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"required","stop":"x"}"#],
            b"{}[]\":,datamessageStopcontentBlockDeltatoolUse01",
            &p,
            &|| Box::new(BedrockChat::default()),
            &fresh,
            2000,
        );
    }
}
