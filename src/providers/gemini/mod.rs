//! OpenAI client → Google Gemini API (AI Studio): `POST {base_path}/models/{model}:generateContent`,
//! streams `:streamGenerateContent?alt=sse`, key in `x-goog-api-key`.
//!
//! The request is read into the typed shapes of [`crate::openai::chat`] (borrowing from the
//! client's body) and the Gemini body is serialised from borrowed structs in one pass; answers are
//! rebuilt as OpenAI `chat.completion` / `chat.completion.chunk` the same way.
//!
//! Mapping decisions:
//! - `system` and `developer` messages, wherever they are, become `systemInstruction.parts` (in
//!   order; text only). User and tool messages become `role: "user"` contents, assistant messages
//!   `role: "model"`; consecutive contents of the same role are merged (parallel tool results and
//!   a user message right after them share one content). Empty text is never sent (Gemini rejects
//!   empty text parts). A conversation starting with a model turn gets a user turn with
//!   [`LEADING_USER_PLACEHOLDER`] in front.
//! - Images: `data:` URLs → `inlineData {mimeType, data}`; http(s) URLs → `fileData {mimeType,
//!   fileUri}` with the MIME type guessed from the path's extension (png, jpg/jpeg, webp, heic,
//!   heif, gif, pdf); a Gemini Files-API URI (`https://generativelanguage.googleapis.com/...`)
//!   goes without `mimeType` (the file record has it); any other URL without a known extension is
//!   a 400 (Gemini needs the type and the gateway does not fetch URLs). `input_audio` →
//!   `inlineData` (`audio/wav`, `audio/mp3`); `file` parts with a base64 `file_data` data URL →
//!   `inlineData`; `file_id` is a 400.
//! - Tools: `tools[].function` → one `tools[{functionDeclarations}]` entry; `parameters` go
//!   verbatim as `parametersJsonSchema` (Gemini's JSON-Schema field, which takes
//!   `additionalProperties`, `$ref`, `$defs` and the other keywords the OpenAPI-subset
//!   `parameters` field rejects, so nothing has to be stripped); `strict` is dropped.
//!   `tool_choice` auto/none/required/named → `toolConfig.functionCallingConfig.mode`
//!   AUTO/NONE/ANY/ANY + `allowedFunctionNames`; `tool_choice` without `tools` and
//!   `parallel_tool_calls` are dropped (Gemini has no such switch).
//! - Assistant `tool_calls` → `functionCall {name, args}` parts; `tool` messages →
//!   `functionResponse {name, response}` parts, the name looked up from the nearest earlier
//!   assistant tool call with that id (400 if there is none). `response` must be an object: a
//!   tool result that is a JSON object goes as is, anything else as `{"output": "<text>"}` (the key
//!   Gemini documents for a function's output).
//! - Tool-call ids: Gemini has none, so answers number them `call_<n>` per choice. Gemini 3
//!   returns a `thoughtSignature` on function calls and rejects the next turn without it, so the
//!   signature rides in the id (`call_<n>_ts_<signature, base64url>`) and is put back on the
//!   `functionCall` part when the client sends the history back (parallel calls: Gemini signs only
//!   the first, and the others go back unsigned, as received). An assistant turn whose calls carry
//!   no signature at all (written by another model, or by an older Gemini) gets Google's
//!   documented placeholder [`SKIP_THOUGHT_SIGNATURE`] on its first call.
//! - `generationConfig`: `temperature` (same 0–2 range), `top_p` → `topP`,
//!   `max_completion_tokens` (else `max_tokens`) → `maxOutputTokens`, `stop` → `stopSequences`,
//!   `n` → `candidateCount`, `seed` (must fit in 32 bits, else 400), `presence_penalty` /
//!   `frequency_penalty` → `presencePenalty` / `frequencyPenalty`; `response_format`
//!   `json_object` → `responseMimeType: "application/json"`, `json_schema` → that plus
//!   `responseJsonSchema` (the schema verbatim); `reasoning_effort` → `thinkingConfig
//!   {thinkingBudget, includeThoughts: true}` with budgets none 0, minimal 512, low 1024,
//!   medium 8192, high 24576, xhigh/max 32768 (Gemini 3 still takes budgets; models that cannot
//!   turn thinking off answer `none` with their own 400).
//! - Rejected with 400: `n` = 0, `logprobs: true` (not translated), audio output (`audio`,
//!   `modalities` with `audio`), legacy function calling (`functions`, `function_call`,
//!   `role: "function"`), non-function tools.
//! - Dropped: `user`, `safety_identifier`, `logit_bias`, `top_logprobs`, `store`, OpenAI
//!   `metadata`, `service_tier`, `prediction`, `verbosity`, message `name`, image `detail`.
//!
//! Responses: each candidate becomes a choice (index = candidate `index`): text parts join into
//! `content`, `thought: true` parts into `reasoning_content`, `functionCall` parts become
//! `tool_calls` (arguments as compact JSON). Finish reasons: STOP → `stop`, or `tool_calls` when
//! the candidate has function calls; MAX_TOKENS → `length`; SAFETY, RECITATION, BLOCKLIST,
//! PROHIBITED_CONTENT, SPII and the IMAGE_* safety reasons → `content_filter`; everything else
//! (LANGUAGE, OTHER, MALFORMED_FUNCTION_CALL, ...) → `stop` (`tool_calls` with function calls).
//! A prompt blocked by `promptFeedback.blockReason` (no candidates) → one choice with empty
//! content and `content_filter`. Usage: prompt = `promptTokenCount` + `toolUsePromptTokenCount`
//! (cached tokens are already inside), completion = `candidatesTokenCount` + `thoughtsTokenCount`,
//! cached = `cachedContentTokenCount`, reasoning = `thoughtsTokenCount`. `id` = `responseId`,
//! `model` = `modelVersion` (else the deployment's model). Not carried over: generated media
//! parts (`inlineData` output), `executableCode` / `codeExecutionResult`, grounding and citation
//! metadata, safety ratings, log probabilities, and the thought signature of a text part (Gemini
//! requires signatures back only on function calls).
//!
//! Streams: Gemini sends SSE (`\r\n` line ends) where every `data:` is a whole
//! GenerateContentResponse holding only the new parts, and ends by closing the connection. Each
//! candidate's first appearance gives a role chunk; text → `content`, thoughts →
//! `reasoning_content`, each function call → one `tool_calls` delta with id, name and the full
//! arguments; `finishReason` → finish chunk. At the end of the body: the usage chunk (if
//! `stream_options.include_usage`) and `data: [DONE]`. A `data:` event carrying `error`, an
//! error JSON sent without `data:` (Google sends those raw, possibly pretty-printed; found by
//! brace counting at line starts), an unparsable event, or a body that ends before every
//! candidate has a `finishReason`, becomes an OpenAI error event followed by `data: [DONE]`;
//! nothing is written after `[DONE]`.
//!
//! Errors: `{"error":{"code","message","status","details"}}` (also wrapped in a one-element
//! array) → the provider status with `code` = the `status` text (e.g. `RESOURCE_EXHAUSTED`); a
//! `google.rpc.RetryInfo` `retryDelay` ("37s") becomes `Retry-After` seconds (rounded up).

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

/// Text of the user turn put before a conversation that starts with a model turn.
pub const LEADING_USER_PLACEHOLDER: &str = "(conversation start)";

/// Google's documented `thoughtSignature` for a function call that has none (history written by
/// another model): it tells Gemini 3 to skip the signature check.
pub const SKIP_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

/// Between a generated tool-call id and the thought signature it carries.
const SIG_MARK: &str = "_ts_";

/// Largest raw (non-SSE) error JSON kept from a stream.
const MAX_RAW_ERROR: usize = 64 * 1024;

#[derive(Default)]
pub struct GeminiChat {
    provider: String,
    /// The deployment's model, for answers without `modelVersion`.
    model: String,
    created: u64,
    usage: Option<Usage>,
    s: StreamState,
}

#[derive(Default)]
struct StreamState {
    parser: SseParser,
    raw: RawJson,
    /// The chunks' envelope; the id and model come with the first event.
    w: ChunkWriter,
    /// The first event was seen (id and model are fixed).
    started: bool,
    cands: Vec<CandState>,
    tokens: Tokens,
}

#[derive(Clone, Copy)]
struct CandState {
    index: u32,
    next_tool: u32,
    saw_tool: bool,
    finished: bool,
}

impl GeminiChat {
    /// A translator that only reads answers of `provider` (errors, for the embeddings translator).
    pub(crate) fn for_provider(provider: &str) -> Self {
        GeminiChat {
            provider: provider.to_string(),
            ..Self::default()
        }
    }

    fn provider_name(&self) -> &str {
        if self.provider.is_empty() {
            "gemini"
        } else {
            &self.provider
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Gemini request shapes (serialise only, borrowing from the parsed OpenAI request)
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentRequest<'r> {
    contents: Vec<Content<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction<'r>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<GTool<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'r>>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig<'r>,
}

#[derive(Serialize)]
struct Content<'r> {
    role: &'static str,
    parts: Vec<Part<'r>>,
}

#[derive(Serialize)]
struct SystemInstruction<'r> {
    parts: Vec<Part<'r>>,
}

/// One part: exactly one of the data fields is set (plus, on function calls, the signature).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Part<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Text<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inline_data: Option<Blob<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_data: Option<FileData<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FnCall<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_response: Option<FnResponse<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thought_signature: Option<Cow<'r, str>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Blob<'r> {
    mime_type: Cow<'r, str>,
    data: Text<'r>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileData<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    mime_type: Option<&'static str>,
    file_uri: &'r str,
}

#[derive(Serialize)]
struct FnCall<'r> {
    name: &'r str,
    args: &'r RawValue,
}

#[derive(Serialize)]
struct FnResponse<'r> {
    name: &'r str,
    response: FnResult<'r>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum FnResult<'r> {
    Object(&'r RawValue),
    Output { output: ToolText<'r> },
}

/// Text of a tool message: one string as the client sent it, or several text parts joined.
#[derive(Serialize)]
#[serde(untagged)]
enum ToolText<'r> {
    One(Text<'r>),
    Joined(String),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GTool<'r> {
    function_declarations: Vec<FnDecl<'r>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FnDecl<'r> {
    name: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters_json_schema: Option<&'r RawValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'r> {
    function_calling_config: FnCallingConfig<'r>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FnCallingConfig<'r> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_function_names: Vec<&'r str>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<&'r RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<ThinkingConfig>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
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
struct ThinkingConfig {
    thinking_budget: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    include_thoughts: bool,
}

// ---------------------------------------------------------------------------------------------
// Request building
// ---------------------------------------------------------------------------------------------

fn unsupported(param: &str, what: &str) -> GatewayError {
    GatewayError::invalid_param(param, format!("{what} is not supported by gemini"))
}

/// Collects contents, merging consecutive same-role ones.
struct Conversation<'r> {
    system: Vec<Part<'r>>,
    contents: Vec<Content<'r>>,
}

impl<'r> Conversation<'r> {
    fn push(&mut self, role: &'static str, part: Part<'r>) {
        match self.contents.last_mut() {
            Some(c) if c.role == role => c.parts.push(part),
            _ => self.contents.push(Content {
                role,
                parts: vec![part],
            }),
        }
    }
}

fn text(t: Text<'_>) -> Option<Part<'_>> {
    (!t.is_empty()).then(|| Part {
        text: Some(t),
        ..Default::default()
    })
}

/// A `text` (or, where allowed, `refusal`) part; `None` when empty.
fn text_part<'r>(
    p: &'r ContentPart<'_>,
    param: &str,
    allow_refusal: bool,
) -> Result<Option<Part<'r>>, GatewayError> {
    let t = match p.kind.as_str() {
        "text" => p.text.as_ref().map(Str::text),
        "refusal" if allow_refusal => p.refusal.as_ref().map(Str::text),
        _ => None,
    };
    match t {
        Some(t) => Ok(text(t)),
        None => Err(GatewayError::invalid_param(
            param,
            format!("a `{}` part here must carry `{}`", p.kind, p.kind),
        )),
    }
}

fn strip_prefix_ci<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// `data:<media type>;base64,<data>` → (media type, data).
fn data_url<'u>(url_text: Text<'u>, param: &str) -> Result<(Cow<'u, str>, Text<'u>), GatewayError> {
    let url = url_text.as_str();
    let bad = |why: &str| GatewayError::invalid_param(param, format!("invalid data URL: {why}"));
    let rest = strip_prefix_ci(url, "data:").ok_or_else(|| bad("expected `data:`"))?;
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| bad("expected `data:<media type>;base64,<data>`"))?;
    let mut fields = meta.split(';');
    let media = fields.next().unwrap_or("").trim();
    if !fields.any(|f| f.trim().eq_ignore_ascii_case("base64")) {
        return Err(bad("only base64 data URLs are supported"));
    }
    if media.is_empty() || !media.contains('/') {
        return Err(bad("a media type is required"));
    }
    if data.is_empty() {
        return Err(bad("no data"));
    }
    let media: Cow<'u, str> = if media.eq_ignore_ascii_case("image/jpg") {
        Cow::Borrowed("image/jpeg")
    } else if media.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(media.to_ascii_lowercase())
    } else {
        Cow::Borrowed(media)
    };
    Ok((media, url_text.part(data)))
}

/// MIME type from a URL's path extension.
fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.rsplit('/').next().unwrap_or(path);
    let (_, ext) = last.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

const FILES_API_PREFIX: &str = "https://generativelanguage.googleapis.com/";

fn image_part<'r>(url_text: Text<'r>, param: &str) -> Result<Part<'r>, GatewayError> {
    let url = url_text.as_str();
    if strip_prefix_ci(url, "data:").is_some() {
        let (mime_type, data) = data_url(url_text, param)?;
        return Ok(Part {
            inline_data: Some(Blob { mime_type, data }),
            ..Default::default()
        });
    }
    if strip_prefix_ci(url, "https://").is_some() || strip_prefix_ci(url, "http://").is_some() {
        let mime_type = mime_from_extension(url);
        if mime_type.is_none() && strip_prefix_ci(url, FILES_API_PREFIX).is_none() {
            return Err(GatewayError::invalid_param(
                param,
                "gemini needs the media type of an image URL: use a URL ending in .png, .jpg, .jpeg, .webp, .heic, .heif, .gif or .pdf, a Gemini Files API URI, or a base64 data URL",
            ));
        }
        return Ok(Part {
            file_data: Some(FileData {
                mime_type,
                file_uri: url,
            }),
            ..Default::default()
        });
    }
    Err(GatewayError::invalid_param(
        param,
        "`image_url.url` must be an http(s) URL or a base64 data URL",
    ))
}

fn audio_part<'r>(raw: Option<&'r RawValue>, param: &str) -> Result<Part<'r>, GatewayError> {
    #[derive(Deserialize)]
    struct Audio<'a> {
        #[serde(borrow)]
        data: &'a str,
        #[serde(borrow)]
        format: &'a str,
    }
    let raw = raw.ok_or_else(|| GatewayError::invalid_param(param, "`input_audio` is required"))?;
    let a: Audio<'r> = serde_json::from_str(raw.get()).map_err(|e| {
        GatewayError::invalid_param(
            param,
            format!("`input_audio` needs string `data` (base64, no escapes) and `format`: {e}"),
        )
    })?;
    let mime: &'static str = match a.format {
        "wav" => "audio/wav",
        "mp3" => "audio/mp3",
        other => {
            return Err(GatewayError::invalid_param(
                param,
                format!("audio format `{other}` is not supported; use wav or mp3"),
            ))
        }
    };
    if a.data.is_empty() {
        return Err(GatewayError::invalid_param(param, "no audio data"));
    }
    Ok(Part {
        inline_data: Some(Blob {
            mime_type: Cow::Borrowed(mime),
            data: Text::new(a.data),
        }),
        ..Default::default()
    })
}

fn file_part<'r>(raw: Option<&'r RawValue>, param: &str) -> Result<Part<'r>, GatewayError> {
    #[derive(Deserialize)]
    struct File<'a> {
        #[serde(borrow)]
        file_data: Option<&'a str>,
    }
    let raw = raw.ok_or_else(|| GatewayError::invalid_param(param, "`file` is required"))?;
    let f: File<'r> = serde_json::from_str(raw.get())
        .map_err(|e| GatewayError::invalid_param(param, format!("invalid `file`: {e}")))?;
    let Some(url) = f.file_data else {
        return Err(unsupported(
            param,
            "a `file` part without `file_data` (uploaded `file_id`)",
        ));
    };
    let (mime_type, data) = data_url(Text::new(url), param)?;
    Ok(Part {
        inline_data: Some(Blob { mime_type, data }),
        ..Default::default()
    })
}

/// The parsed `arguments` of a tool call: a JSON object, `{}` when empty.
fn tool_args<'r>(args: Option<&'r str>, param: &str) -> Result<&'r RawValue, GatewayError> {
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

fn empty_object() -> Result<&'static RawValue, GatewayError> {
    serde_json::from_str("{}")
        .map_err(|e| GatewayError::new(500, "api_error", format!("internal JSON constant: {e}")))
}

/// Tool-call id for the `n`th call of a choice, carrying the call's thought signature.
fn tool_call_id(n: u32, signature: Option<&str>) -> String {
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
fn signature_from_id(id: &str) -> Option<String> {
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
fn tool_name<'r>(msgs: &'r [ChatMessage<'_>], before: usize, id: &str) -> Option<&'r str> {
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
fn tool_text<'r>(m: &'r ChatMessage<'_>, i: usize) -> Result<ToolText<'r>, GatewayError> {
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

fn convert_messages<'r>(msgs: &'r [ChatMessage<'_>]) -> Result<Conversation<'r>, GatewayError> {
    let mut conv = Conversation {
        system: Vec::new(),
        contents: Vec::with_capacity(msgs.len()),
    };
    for (i, m) in msgs.iter().enumerate() {
        let part_param = |j: usize| format!("messages[{i}].content[{j}]");
        match m.role {
            Role::System | Role::Developer => match &m.content {
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
            },
            Role::User => match &m.content {
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
            },
            Role::Assistant => {
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
                                    format!(
                                        "`{}` parts are not allowed in assistant messages",
                                        p.kind
                                    ),
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
            }
            Role::Tool => {
                let param = format!("messages[{i}].tool_call_id");
                let id = m.tool_call_id.as_deref().ok_or_else(|| {
                    GatewayError::invalid_param(
                        &param,
                        "`tool_call_id` is required on tool messages",
                    )
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
            }
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

fn thinking_budget(effort: &str) -> Result<u64, GatewayError> {
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

fn build_request<'r>(req: &'r ChatRequest<'_>) -> Result<GenerateContentRequest<'r>, GatewayError> {
    if req.n == Some(0) {
        return Err(GatewayError::invalid_param("n", "`n` must be at least 1"));
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
    let tool_config = if decls.is_empty() {
        None
    } else {
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
    };
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

/// A model name as one path segment (Gemini names are `[a-z0-9.-]`; anything else is escaped).
pub(crate) fn model_segment(model: &str) -> Cow<'_, str> {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if model.bytes().all(plain) {
        return Cow::Borrowed(model);
    }
    let mut out = String::with_capacity(model.len() * 3);
    for b in model.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

// ---------------------------------------------------------------------------------------------
// Gemini response shapes (deserialise only, borrowing from the provider's body)
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GResponse<'a> {
    #[serde(borrow)]
    candidates: Option<Vec<Candidate<'a>>>,
    #[serde(borrow)]
    prompt_feedback: Option<PromptFeedback<'a>>,
    usage_metadata: Option<UsageMetadata>,
    #[serde(borrow)]
    model_version: Option<Str<'a>>,
    #[serde(borrow)]
    response_id: Option<Str<'a>>,
    #[serde(borrow)]
    error: Option<GError<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(borrow)]
    content: Option<GContent<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Str<'a>>,
    index: Option<u32>,
}

#[derive(Deserialize)]
struct GContent<'a> {
    #[serde(borrow)]
    parts: Option<Vec<GPart<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GPart<'a> {
    #[serde(borrow)]
    text: Option<Str<'a>>,
    thought: Option<bool>,
    #[serde(borrow)]
    function_call: Option<GFnCall<'a>>,
    #[serde(borrow)]
    thought_signature: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct GFnCall<'a> {
    #[serde(borrow)]
    name: Option<Str<'a>>,
    #[serde(borrow)]
    args: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback<'a> {
    #[serde(borrow)]
    block_reason: Option<Str<'a>>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
    tool_use_prompt_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
}

#[derive(Deserialize)]
struct GError<'a> {
    code: Option<i64>,
    #[serde(borrow)]
    message: Option<Str<'a>>,
    #[serde(borrow)]
    status: Option<Str<'a>>,
    #[serde(borrow)]
    details: Option<Vec<&'a RawValue>>,
}

/// Token counts seen so far (stream chunks repeat or update them).
#[derive(Default, Clone, Copy)]
struct Tokens {
    prompt: u64,
    candidates: u64,
    thoughts: u64,
    tool_use_prompt: u64,
    cached: u64,
}

impl Tokens {
    fn update(&mut self, u: &UsageMetadata) {
        if let Some(v) = u.prompt_token_count {
            self.prompt = v;
        }
        if let Some(v) = u.candidates_token_count {
            self.candidates = v;
        }
        if let Some(v) = u.thoughts_token_count {
            self.thoughts = v;
        }
        if let Some(v) = u.tool_use_prompt_token_count {
            self.tool_use_prompt = v;
        }
        if let Some(v) = u.cached_content_token_count {
            self.cached = v;
        }
    }

    fn to_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt.saturating_add(self.tool_use_prompt),
            completion_tokens: self.candidates.saturating_add(self.thoughts),
            cached_tokens: self.cached,
            cache_creation_tokens: 0,
            reasoning_tokens: self.thoughts,
        }
    }
}

/// OpenAI finish reason for a Gemini one; `has_tools`: the candidate called functions.
fn finish_reason(reason: Option<&str>, has_tools: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY"
            | "RECITATION"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION",
        ) => "content_filter",
        _ if has_tools => "tool_calls",
        _ => "stop",
    }
}

/// HTTP status for a google.rpc status name (for errors that arrive inside a 200 stream).
fn status_for_rpc(status: &str) -> u16 {
    match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "ALREADY_EXISTS" | "ABORTED" => 409,
        "RESOURCE_EXHAUSTED" => 429,
        "CANCELLED" => 499,
        "UNIMPLEMENTED" => 501,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => 500,
    }
}

/// `Retry-After` seconds from a `google.rpc.RetryInfo` detail (`"retryDelay": "37s"`).
fn retry_after(details: &[&RawValue]) -> Option<String> {
    #[derive(Deserialize)]
    struct Detail<'a> {
        #[serde(rename = "@type", borrow)]
        kind: Option<Str<'a>>,
        #[serde(rename = "retryDelay", borrow)]
        retry_delay: Option<Str<'a>>,
    }
    details.iter().find_map(|raw| {
        let d: Detail<'_> = serde_json::from_str(raw.get()).ok()?;
        if !d.kind.as_deref()?.ends_with("google.rpc.RetryInfo") {
            return None;
        }
        // google.protobuf.Duration in JSON: seconds with up to 9 fraction digits and an `s`.
        // Parsed by hand (no float parsing in the filter); a fraction rounds up.
        let text = d.retry_delay.as_deref()?.strip_suffix('s')?;
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let secs: u64 = whole.parse().ok()?;
        let secs = secs.saturating_add(u64::from(frac.bytes().any(|b| b != b'0')));
        (secs <= 86_400).then(|| secs.to_string())
    })
}

/// A Gemini error body: `{"error":{...}}`, or that inside a one-element array.
fn parse_error(body: &[u8]) -> Option<GError<'_>> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        error: Option<GError<'a>>,
    }
    // Checked first: serde would also read a struct from an array, positionally.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let list: Vec<Envelope<'_>> = serde_json::from_slice(body).ok()?;
        return list.into_iter().next()?.error;
    }
    serde_json::from_slice::<Envelope<'_>>(body).ok()?.error
}

fn compact_json(json: &str) -> Cow<'_, str> {
    if !json
        .bytes()
        .any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
    {
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

fn append<'x>(acc: &mut Option<Cow<'x, str>>, piece: &'x str) {
    match acc {
        None => *acc = Some(Cow::Borrowed(piece)),
        Some(s) => s.to_mut().push_str(piece),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw JSON in a stream (Google sends errors without `data:`)
// ---------------------------------------------------------------------------------------------

/// Finds a JSON value that starts at the beginning of a line outside SSE fields, by counting
/// brackets outside strings, across chunk boundaries.
#[derive(Default)]
struct RawJson {
    /// The previous byte ended a line (or nothing was seen yet).
    mid_line: bool,
    active: bool,
    depth: u32,
    in_str: bool,
    esc: bool,
    buf: Vec<u8>,
    overflow: bool,
}

impl RawJson {
    /// Feeds bytes; returns the first complete raw JSON value.
    fn feed(&mut self, chunk: &[u8]) -> Option<Vec<u8>> {
        for &b in chunk {
            if !self.active {
                if !self.mid_line && (b == b'{' || b == b'[') {
                    self.active = true;
                    self.depth = 0;
                    self.in_str = false;
                    self.esc = false;
                    self.buf.clear();
                } else {
                    self.mid_line = !(b == b'\n' || b == b'\r');
                    continue;
                }
            }
            if self.buf.len() < MAX_RAW_ERROR {
                self.buf.push(b);
            } else {
                self.overflow = true;
            }
            if self.in_str {
                if self.esc {
                    self.esc = false;
                } else if b == b'\\' {
                    self.esc = true;
                } else if b == b'"' {
                    self.in_str = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_str = true,
                b'{' | b'[' => self.depth = self.depth.saturating_add(1),
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        self.active = false;
                        self.mid_line = true;
                        return Some(std::mem::take(&mut self.buf));
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// What an unfinished raw value holds at the end of the body.
    fn pending(&mut self) -> Option<Vec<u8>> {
        self.active.then(|| std::mem::take(&mut self.buf))
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------

impl GeminiChat {
    fn stream_error(&self, e: &GError<'_>) -> GatewayError {
        let status = e.status.as_deref().unwrap_or("UNKNOWN");
        let http = e
            .code
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (400..600).contains(c))
            .unwrap_or_else(|| status_for_rpc(status));
        let client = client_status(http);
        let mut g = GatewayError::new(
            client,
            kind_for_status(client),
            format!(
                "{} stream error: {status}: {}",
                self.provider_name(),
                e.message.as_deref().unwrap_or("")
            ),
        );
        g.code = Some(status.to_string());
        g
    }

    fn on_raw_json(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        if self.s.w.is_done() {
            return;
        }
        let g = match parse_error(raw) {
            Some(e) => self.stream_error(&e),
            None => {
                let head = raw.get(..raw.len().min(200)).unwrap_or(raw);
                bad_gateway(
                    self.provider_name(),
                    format!(
                        "data outside an SSE event: {}",
                        String::from_utf8_lossy(head)
                    ),
                )
            }
        };
        self.s.w.fail(out, &g);
    }

    /// The state of candidate `index`, created (with its role chunk) on first sight.
    fn candidate(&mut self, index: u32, out: &mut Vec<u8>) -> usize {
        if let Some(pos) = self.s.cands.iter().position(|c| c.index == index) {
            return pos;
        }
        self.s.cands.push(CandState {
            index,
            next_tool: 0,
            saw_tool: false,
            finished: false,
        });
        self.s.w.role(out, index);
        self.s.cands.len() - 1
    }

    /// `at_end`: flushed at end of body without its closing blank line; if it does not parse it
    /// was cut off, and the error for the unfinished stream follows.
    fn on_event(&mut self, ev: SseEvent, at_end: bool, out: &mut Vec<u8>) {
        if self.s.w.is_done() {
            return;
        }
        let data = ev.text();
        let r: GResponse<'_> = match serde_json::from_str(&data) {
            Ok(r) => r,
            Err(_) if at_end => return,
            Err(err) => {
                let g = bad_gateway(
                    self.provider_name(),
                    format!("an invalid stream event: {err}"),
                );
                self.s.w.fail(out, &g);
                return;
            }
        };
        if let Some(e) = &r.error {
            let g = self.stream_error(e);
            self.s.w.fail(out, &g);
            return;
        }
        if !self.s.started {
            self.s.started = true;
            self.s.w.id = match r.response_id.as_deref() {
                Some(id) if !id.is_empty() => id.to_string(),
                _ => format!("chatcmpl-gemini-{}", self.created),
            };
            self.s.w.model = match r.model_version.as_deref() {
                Some(m) if !m.is_empty() => m.to_string(),
                _ => self.model.clone(),
            };
        }
        if let Some(u) = &r.usage_metadata {
            self.s.tokens.update(u);
            self.usage = Some(self.s.tokens.to_usage());
        }
        let candidates = r.candidates.unwrap_or_default();
        if candidates.is_empty() {
            if r.prompt_feedback
                .as_ref()
                .is_some_and(|f| f.block_reason.is_some())
            {
                let pos = self.candidate(0, out);
                if let Some(c) = self.s.cands.get_mut(pos) {
                    if !c.finished {
                        c.finished = true;
                        self.s.w.finish(out, 0, "content_filter");
                    }
                }
            }
            return;
        }
        for (k, cand) in candidates.iter().enumerate() {
            let index = cand
                .index
                .unwrap_or_else(|| u32::try_from(k).unwrap_or(u32::MAX));
            if !self.on_candidate(index, cand, out) {
                return;
            }
        }
    }

    /// One candidate of a stream event: its parts, then its finish reason. `false` if its state
    /// went missing (never: it was just looked up).
    fn on_candidate(&mut self, index: u32, cand: &Candidate<'_>, out: &mut Vec<u8>) -> bool {
        let pos = self.candidate(index, out);
        for part in cand
            .content
            .as_ref()
            .and_then(|c| c.parts.as_deref())
            .unwrap_or_default()
        {
            if let Some(fc) = &part.function_call {
                let Some(state) = self.s.cands.get_mut(pos) else {
                    return false;
                };
                let n = state.next_tool;
                state.next_tool = n.saturating_add(1);
                state.saw_tool = true;
                let id = tool_call_id(n, part.thought_signature.as_deref());
                let args = fc
                    .args
                    .map_or(Cow::Borrowed("{}"), |a| compact_json(a.get()));
                let name = fc.name.as_deref().unwrap_or("");
                let call = openai_chunks::tool_start(n, &id, name, &args);
                self.s.w.tool_call(out, index, call);
            } else if let Some(t) = part.text.as_deref().filter(|t| !t.is_empty()) {
                if part.thought == Some(true) {
                    self.s.w.reasoning(out, index, t);
                } else {
                    self.s.w.content(out, index, t);
                }
            }
        }
        if let Some(reason) = cand.finish_reason.as_deref() {
            let Some(state) = self.s.cands.get_mut(pos) else {
                return false;
            };
            if !state.finished {
                state.finished = true;
                let saw_tool = state.saw_tool;
                self.s
                    .w
                    .finish(out, index, finish_reason(Some(reason), saw_tool));
            }
        }
        true
    }
}

impl ChunkStream for GeminiChat {
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
        if !self.s.w.is_done() {
            if let Some(raw) = self.s.raw.feed(chunk) {
                self.on_raw_json(&raw, out);
            }
        }
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        let mut parser = std::mem::take(&mut self.s.parser);
        parser.finish(&mut |ev| self.on_event(ev, true, out));
        self.s.parser = parser;
        if let Some(raw) = self.s.raw.pending() {
            self.on_raw_json(&raw, out);
        }
    }

    fn at_end(&self) -> Result<Usage, GatewayError> {
        if self.s.cands.is_empty() || self.s.cands.iter().any(|c| !c.finished) {
            let msg = format!(
                "{} stream ended before a finishReason",
                self.provider_name()
            );
            return Err(GatewayError::new(502, "api_error", msg));
        }
        Ok(self.s.tokens.to_usage())
    }

    fn release(&mut self) {
        // Free what the parsers held; nothing after [DONE] is read.
        self.s.parser = SseParser::new();
        self.s.raw = RawJson::default();
    }
}

// ---------------------------------------------------------------------------------------------
// The translator
// ---------------------------------------------------------------------------------------------

impl ChatTranslator for GeminiChat {
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        let env = call.envelope;
        let p = call.provider;
        self.provider = p.name.clone();
        self.model = call.upstream_model.to_string();
        self.created = call.now_unix;
        self.s.w.include_usage = env.stream && env.include_usage;
        self.s.w.created = call.now_unix;

        let req = ChatRequest::from_envelope(env)?;
        let body = build_request(&req)?;
        let mut bytes = Vec::with_capacity(call.raw.len() + 256);
        serde_json::to_writer(&mut bytes, &body).map_err(|e| {
            GatewayError::new(
                500,
                "api_error",
                format!("serialising the gemini request: {e}"),
            )
        })?;

        let mut headers = Vec::with_capacity(2 + p.headers.len());
        if let Some(key) = &p.api_key {
            headers.push(("x-goog-api-key".to_string(), key.trim().to_string()));
        }
        headers.push(("content-type".to_string(), "application/json".to_string()));
        headers.extend(p.headers.iter().cloned());
        let model = model_segment(call.upstream_model);
        let path = if env.stream {
            format!(
                "{}/models/{model}:streamGenerateContent?alt=sse",
                p.base_path
            )
        } else {
            format!("{}/models/{model}:generateContent", p.base_path)
        };
        Ok(ProviderRequest {
            path,
            headers,
            // Never forward the client's own key upstream.
            remove_headers: vec!["authorization"],
            body: Some(bytes),
        })
    }

    fn response(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        let r: GResponse<'_> = serde_json::from_slice(body)
            .map_err(|e| bad_gateway(self.provider_name(), format!("an invalid response: {e}")))?;
        if let Some(e) = &r.error {
            let status = e.status.as_deref().unwrap_or("UNKNOWN");
            let http = e
                .code
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| (400..600).contains(c))
                .unwrap_or_else(|| status_for_rpc(status));
            return Err(self.error(http, body));
        }
        let mut tokens = Tokens::default();
        if let Some(u) = &r.usage_metadata {
            tokens.update(u);
        }
        let usage = tokens.to_usage();
        self.usage = Some(usage);

        let candidates = r.candidates.as_deref().unwrap_or_default();
        let blocked = r
            .prompt_feedback
            .as_ref()
            .is_some_and(|f| f.block_reason.is_some());
        if candidates.is_empty() && !blocked {
            return Err(bad_gateway(
                self.provider_name(),
                "a response without candidates",
            ));
        }
        // Tool-call ids are built first: the choices borrow them.
        let ids: Vec<Vec<String>> = candidates
            .iter()
            .map(|c| {
                let parts = c
                    .content
                    .as_ref()
                    .and_then(|c| c.parts.as_deref())
                    .unwrap_or_default();
                let mut n = 0u32;
                parts
                    .iter()
                    .filter(|p| p.function_call.is_some())
                    .map(|p| {
                        let id = tool_call_id(n, p.thought_signature.as_deref());
                        n = n.saturating_add(1);
                        id
                    })
                    .collect()
            })
            .collect();
        let mut choices = Vec::with_capacity(candidates.len().max(1));
        for (k, (c, ids)) in candidates.iter().zip(&ids).enumerate() {
            let mut content: Option<Cow<'_, str>> = None;
            let mut reasoning: Option<Cow<'_, str>> = None;
            let mut tool_calls = Vec::new();
            let mut ids = ids.iter();
            for p in c
                .content
                .as_ref()
                .and_then(|c| c.parts.as_deref())
                .unwrap_or_default()
            {
                if let Some(fc) = &p.function_call {
                    let Some(id) = ids.next() else { break };
                    tool_calls.push(ToolCallOut {
                        id,
                        kind: "function",
                        function: FunctionOut {
                            name: fc.name.as_deref().unwrap_or(""),
                            arguments: fc
                                .args
                                .map_or(Cow::Borrowed("{}"), |a| compact_json(a.get())),
                        },
                    });
                } else if let Some(t) = &p.text {
                    if p.thought == Some(true) {
                        append(&mut reasoning, t);
                    } else {
                        append(&mut content, t);
                    }
                }
            }
            let finish = finish_reason(c.finish_reason.as_deref(), !tool_calls.is_empty());
            choices.push(Choice {
                index: c
                    .index
                    .unwrap_or_else(|| u32::try_from(k).unwrap_or(u32::MAX)),
                message: AssistantMessage {
                    role: "assistant",
                    content,
                    reasoning_content: reasoning,
                    tool_calls,
                    refusal: None,
                },
                logprobs: None,
                finish_reason: Some(finish),
            });
        }
        if choices.is_empty() {
            // The prompt itself was blocked.
            choices.push(Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: Some(Cow::Borrowed("")),
                    reasoning_content: None,
                    tool_calls: Vec::new(),
                    refusal: None,
                },
                logprobs: None,
                finish_reason: Some("content_filter"),
            });
        }
        let fallback_id = format!("chatcmpl-gemini-{}", self.created);
        let out = ChatCompletion {
            id: r
                .response_id
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or(&fallback_id),
            object: "chat.completion",
            created: self.created,
            model: r
                .model_version
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or(&self.model),
            choices,
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
        match parse_error(body) {
            Some(e) => {
                let rpc = e.status.as_deref().unwrap_or("UNKNOWN");
                let msg = format!("{rpc}: {}", e.message.as_deref().unwrap_or(""));
                let mut g = provider_error(self.provider_name(), status, &msg, Some(rpc));
                g.retry_after = e.details.as_deref().and_then(retry_after);
                g
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ProcessEnv, Provider};
    use crate::openai::parse_chat_envelope;
    use serde_json::{json, Value};

    const STREAM_FIXTURE: &str = include_str!("../../tests/fixtures/gemini/stream_text_tool.sse");
    const RESPONSE_FIXTURE: &str =
        include_str!("../../tests/fixtures/gemini/response_tool_call.json");

    const CONFIG: &str = r#"{"providers":{"gem":{"type":"gemini","cluster":"c","api_key":" AIza-test ","headers":{"x-goog-user-project":"p1"}}},
                 "models":[{"name":"flash","deployments":[{"provider":"gem","model":"gemini-2.5-flash"}]}]}"#;

    fn provider() -> Provider {
        Config::parse(CONFIG.as_bytes(), &ProcessEnv)
            .unwrap()
            .providers
            .remove(0)
    }

    fn try_translate(body: &str) -> Result<(GeminiChat, ProviderRequest), GatewayError> {
        let p = provider();
        let env = parse_chat_envelope(body.as_bytes())?;
        let mut t = GeminiChat::default();
        let req = t.request(&ChatCall {
            raw: body.as_bytes(),
            envelope: &env,
            provider: &p,
            upstream_model: "gemini-2.5-flash",
            now_unix: 1_700_000_000,
            want_stream_usage: true,
        })?;
        Ok((t, req))
    }

    /// The Gemini body as JSON (tests only; the translator itself never builds a `Value`).
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
        format!(r#"{{"model":"flash","messages":{messages}{extra}}}"#)
    }

    fn user(extra: &str) -> Value {
        body_of(&with_messages(r#"[{"role":"user","content":"hi"}]"#, extra))
    }

    // ------------------------------------------------------------------ request

    #[test]
    fn request_path_headers_and_minimal_body() {
        let (_, req) =
            try_translate(&with_messages(r#"[{"role":"user","content":"Hello"}]"#, "")).unwrap();
        assert_eq!(req.path, "/v1beta/models/gemini-2.5-flash:generateContent");
        for h in [
            ("x-goog-api-key", "AIza-test"),
            ("content-type", "application/json"),
            ("x-goog-user-project", "p1"),
        ] {
            assert!(req.headers.contains(&(h.0.into(), h.1.into())), "{h:?}");
        }
        assert_eq!(req.remove_headers, vec!["authorization"]);
        let v: Value = serde_json::from_slice(&req.body.unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"contents":[{"role":"user","parts":[{"text":"Hello"}]}]})
        );
        let (_, req) = try_translate(&with_messages(
            r#"[{"role":"user","content":"Hello"}]"#,
            r#","stream":true"#,
        ))
        .unwrap();
        assert_eq!(
            req.path,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(model_segment("models/gemini-2.0"), "gemini-2.0");
        assert_eq!(model_segment("a b/c?d"), "a%20b%2Fc%3Fd");
    }

    #[test]
    fn system_developer_roles_and_merging() {
        let v = body_of(&with_messages(
            r#"[{"role":"system","content":"A"},{"role":"user","content":"one"},
                {"role":"developer","content":[{"type":"text","text":"B"},{"type":"text","text":""}]},
                {"role":"user","content":[{"type":"text","text":"two"}]},
                {"role":"assistant","content":"three"},
                {"role":"assistant","content":[{"type":"text","text":"four"},{"type":"refusal","refusal":"no"}]},
                {"role":"user","content":""},{"role":"user","content":"five"}]"#,
            "",
        ));
        assert_eq!(
            v["systemInstruction"],
            json!({"parts":[{"text":"A"},{"text":"B"}]})
        );
        assert_eq!(
            v["contents"],
            json!([
                {"role":"user","parts":[{"text":"one"},{"text":"two"}]},
                {"role":"model","parts":[{"text":"three"},{"text":"four"},{"text":"no"}]},
                {"role":"user","parts":[{"text":"five"}]}
            ])
        );
        let e = bad(&with_messages(
            r#"[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x/a.png"}}]},{"role":"user","content":"q"}]"#,
            "",
        ));
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0]"));
    }

    #[test]
    fn leading_model_turn_gets_a_placeholder_and_empty_is_rejected() {
        let v = body_of(&with_messages(
            r#"[{"role":"assistant","content":"How can I help?"},{"role":"user","content":"Weather?"}]"#,
            "",
        ));
        assert_eq!(
            v["contents"],
            json!([
                {"role":"user","parts":[{"text":LEADING_USER_PLACEHOLDER}]},
                {"role":"model","parts":[{"text":"How can I help?"}]},
                {"role":"user","parts":[{"text":"Weather?"}]}
            ])
        );
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

    /// Long texts go through the no-scan path when serde_json lent them and the escaping path
    /// when they held escapes: either way the Gemini body carries exactly the client's text.
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
                   {{"role":"assistant","content":"{escaped}","tool_calls":[
                     {{"id":"call_1","type":"function","function":{{"name":"f","arguments":"{{}}"}}}},
                     {{"id":"call_2","type":"function","function":{{"name":"g","arguments":"{{}}"}}}}]}},
                   {{"role":"tool","tool_call_id":"call_1","content":"{plain}"}},
                   {{"role":"tool","tool_call_id":"call_2","content":[{{"type":"text","text":"{plain}"}},{{"type":"text","text":"{escaped}"}}]}},
                   {{"role":"user","content":"{plain}"}}]"#
            ),
            "",
        );
        let v = body_of(&body);
        assert_eq!(v["systemInstruction"], json!({"parts":[{"text":plain}]}));
        assert_eq!(
            v["contents"],
            json!([
                {"role":"user","parts":[
                    {"text":plain},
                    {"text":unescaped},
                    {"inlineData":{"mimeType":"image/png","data":b64}}]},
                {"role":"model","parts":[
                    {"text":unescaped},
                    {"functionCall":{"name":"f","args":{}},"thoughtSignature":SKIP_THOUGHT_SIGNATURE},
                    {"functionCall":{"name":"g","args":{}}}]},
                {"role":"user","parts":[
                    {"functionResponse":{"name":"f","response":{"output":plain}}},
                    {"functionResponse":{"name":"g","response":{"output":format!("{plain}{unescaped}")}}},
                    {"text":plain}]}
            ])
        );
    }

    #[test]
    fn images_audio_and_files() {
        let v = body_of(&with_messages(
            r#"[{"role":"user","content":[{"type":"text","text":"What is this?"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo\/AAA="}},
                {"type":"image_url","image_url":{"url":"DATA:Image/JPG;base64,/9j/4AAQ"}},
                {"type":"image_url","image_url":{"url":"https://example.com/cat.JPG?size=2","detail":"high"}},
                {"type":"image_url","image_url":{"url":"https://generativelanguage.googleapis.com/v1beta/files/abc123"}},
                {"type":"input_audio","input_audio":{"data":"UklGRg==","format":"wav"}},
                {"type":"file","file":{"file_data":"data:application/pdf;base64,JVBERi0x","filename":"a.pdf"}}]}]"#,
            "",
        ));
        assert_eq!(
            v["contents"][0]["parts"],
            json!([
                {"text":"What is this?"},
                {"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgo/AAA="}},
                {"inlineData":{"mimeType":"image/jpeg","data":"/9j/4AAQ"}},
                {"fileData":{"mimeType":"image/jpeg","fileUri":"https://example.com/cat.JPG?size=2"}},
                {"fileData":{"fileUri":"https://generativelanguage.googleapis.com/v1beta/files/abc123"}},
                {"inlineData":{"mimeType":"audio/wav","data":"UklGRg=="}},
                {"inlineData":{"mimeType":"application/pdf","data":"JVBERi0x"}}
            ])
        );
    }

    #[test]
    fn bad_parts_are_400_with_param() {
        for (part, param) in [
            (
                r#"{"type":"image_url","image_url":{"url":"data:image/png,raw"}}"#,
                "messages[1].content[1].image_url",
            ),
            (
                r#"{"type":"image_url","image_url":{"url":"data:;base64,AAAA"}}"#,
                "messages[1].content[1].image_url",
            ),
            (
                r#"{"type":"image_url","image_url":{"url":"data:image/png;base64,"}}"#,
                "messages[1].content[1].image_url",
            ),
            (
                r#"{"type":"image_url","image_url":{"url":"https://example.com/image"}}"#,
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
                r#"{"type":"input_audio","input_audio":{"data":"AAA","format":"flac"}}"#,
                "messages[1].content[1].input_audio",
            ),
            (
                r#"{"type":"input_audio"}"#,
                "messages[1].content[1].input_audio",
            ),
            (
                r#"{"type":"file","file":{"file_id":"file-1"}}"#,
                "messages[1].content[1].file",
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
    }

    const TOOLS: &str = r#","tools":[{"type":"function","function":{"name":"get_weather","description":"Weather now","parameters":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"],"additionalProperties":false,"$defs":{}},"strict":true}},
        {"type":"function","function":{"name":"get_time"}}]"#;

    #[test]
    fn tools_and_tool_choice() {
        let v = user(TOOLS);
        assert_eq!(
            v["tools"],
            json!([{"functionDeclarations":[
                {"name":"get_weather","description":"Weather now","parametersJsonSchema":{"type":"object","properties":{"location":{"type":"string"}},"required":["location"],"additionalProperties":false,"$defs":{}}},
                {"name":"get_time"}
            ]}])
        );
        assert!(v.get("toolConfig").is_none());
        for (choice, expected) in [
            (r#""auto""#, json!({"mode":"AUTO"})),
            (r#""none""#, json!({"mode":"NONE"})),
            (r#""required""#, json!({"mode":"ANY"})),
            (
                r#"{"type":"function","function":{"name":"get_time"}}"#,
                json!({"mode":"ANY","allowedFunctionNames":["get_time"]}),
            ),
        ] {
            let v = user(&format!(
                r#"{TOOLS},"tool_choice":{choice},"parallel_tool_calls":false"#
            ));
            assert_eq!(
                v["toolConfig"]["functionCallingConfig"], expected,
                "{choice}"
            );
        }
        // tool_choice without tools is dropped.
        assert!(user(r#","tool_choice":"required""#)
            .get("toolConfig")
            .is_none());
        for (extra, param) in [
            (r#","tools":[{"type":"web_search"}]"#, "tools[0].type"),
            (r#","tools":[{"type":"function"}]"#, "tools[0].function"),
            (
                r#","tools":[{"type":"function","function":{"name":"f","parameters":[1]}}]"#,
                "tools[0].function.parameters",
            ),
        ] {
            let e = bad(&with_messages(r#"[{"role":"user","content":"hi"}]"#, extra));
            assert_eq!(e.param.as_deref(), Some(param), "{extra}");
        }
    }

    #[test]
    fn tool_calls_and_results_round_trip() {
        let sig_id = tool_call_id(0, Some("CiQB/+abcQ=="));
        assert_eq!(sig_id, "call_0_ts_CiQB_-abcQ");
        assert_eq!(signature_from_id(&sig_id).as_deref(), Some("CiQB/+abcQ=="));
        assert_eq!(signature_from_id("call_1"), None);
        let v = body_of(&with_messages(
            &format!(
                r#"[{{"role":"user","content":"weather and time?"}},
                {{"role":"assistant","content":"Checking.","tool_calls":[
                  {{"id":"{sig_id}","type":"function","function":{{"name":"get_weather","arguments":"{{\"location\": \"Paris\"}}"}}}},
                  {{"id":"call_1","type":"function","function":{{"name":"get_time","arguments":""}}}}]}},
                {{"role":"tool","tool_call_id":"{sig_id}","content":"{{\"temp\": 21}}"}},
                {{"role":"tool","tool_call_id":"call_1","content":[{{"type":"text","text":"12:00"}},{{"type":"text","text":" UTC"}}]}},
                {{"role":"user","content":"thanks"}}]"#
            ),
            TOOLS,
        ));
        assert_eq!(
            v["contents"],
            json!([
                {"role":"user","parts":[{"text":"weather and time?"}]},
                {"role":"model","parts":[
                    {"text":"Checking."},
                    {"functionCall":{"name":"get_weather","args":{"location":"Paris"}},"thoughtSignature":"CiQB/+abcQ=="},
                    {"functionCall":{"name":"get_time","args":{}}}
                ]},
                {"role":"user","parts":[
                    {"functionResponse":{"name":"get_weather","response":{"temp":21}}},
                    {"functionResponse":{"name":"get_time","response":{"output":"12:00 UTC"}}},
                    {"text":"thanks"}
                ]}
            ])
        );
        // Padding is restored to a multiple of 4.
        assert_eq!(
            signature_from_id(&tool_call_id(3, Some("QUJD"))).as_deref(),
            Some("QUJD")
        );
        assert_eq!(
            signature_from_id(&tool_call_id(3, Some("QUI="))).as_deref(),
            Some("QUI=")
        );
        // Ids repeat across turns (call_0 each time): the nearest earlier call wins.
        let v = body_of(&with_messages(
            r#"[{"role":"user","content":"a"},
                {"role":"assistant","tool_calls":[{"id":"call_0","type":"function","function":{"name":"get_time","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"call_0","content":"t1"},
                {"role":"assistant","tool_calls":[{"id":"call_0","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"call_0","content":"not json {"}]"#,
            TOOLS,
        ));
        assert_eq!(
            v["contents"][2]["parts"][0]["functionResponse"]["name"],
            "get_time"
        );
        assert_eq!(
            v["contents"][4]["parts"][0]["functionResponse"],
            json!({"name":"get_weather","response":{"output":"not json {"}})
        );
    }

    #[test]
    fn unsigned_history_gets_the_placeholder_on_its_first_call_only() {
        let v = body_of(&with_messages(
            r#"[{"role":"user","content":"a"},
                {"role":"assistant","tool_calls":[
                  {"id":"toolu_1","type":"function","function":{"name":"get_time","arguments":"{}"}},
                  {"id":"toolu_2","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"toolu_1","content":"t"},
                {"role":"tool","tool_call_id":"toolu_2","content":"w"}]"#,
            TOOLS,
        ));
        assert_eq!(
            v["contents"][1]["parts"],
            json!([
                {"functionCall":{"name":"get_time","args":{}},"thoughtSignature":SKIP_THOUGHT_SIGNATURE},
                {"functionCall":{"name":"get_weather","args":{}}}
            ])
        );
    }

    #[test]
    fn bad_tool_messages_are_400() {
        for (messages, param) in [
            (
                r#"[{"role":"user","content":"a"},{"role":"tool","tool_call_id":"nope","content":"x"}]"#,
                "messages[1].tool_call_id",
            ),
            (
                r#"[{"role":"user","content":"a"},{"role":"tool","content":"x"}]"#,
                "messages[1].tool_call_id",
            ),
            (
                r#"[{"role":"user","content":"a"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]"#,
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                r#"[{"role":"user","content":"a"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{bad"}}]}]"#,
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                r#"[{"role":"user","content":"a"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f"}}]},{"role":"tool","tool_call_id":"c","content":[{"type":"image_url","image_url":{"url":"https://x/a.png"}}]}]"#,
                "messages[2].content[0]",
            ),
            (
                r#"[{"role":"user","content":"a"},{"role":"function","name":"f","content":"x"}]"#,
                "messages[1].role",
            ),
            (
                r#"[{"role":"user","content":"a"},{"role":"assistant","function_call":{"name":"f","arguments":"{}"}}]"#,
                "messages[1].function_call",
            ),
        ] {
            let e = bad(&with_messages(messages, ""));
            assert_eq!(e.param.as_deref(), Some(param), "{messages}: {}", e.message);
        }
    }

    #[test]
    fn generation_config() {
        let v = user(
            r#","temperature":1.5,"top_p":0.9,"max_tokens":50,"max_completion_tokens":100,"stop":["END","STOP"],"n":2,"seed":-7,"presence_penalty":0.5,"frequency_penalty":-0.5,"response_format":{"type":"json_object"},"user":"u","logit_bias":{"1":2},"store":true"#,
        );
        assert_eq!(
            v["generationConfig"],
            json!({"temperature":1.5,"topP":0.9,"candidateCount":2,"maxOutputTokens":100,"stopSequences":["END","STOP"],"seed":-7,"presencePenalty":0.5,"frequencyPenalty":-0.5,"responseMimeType":"application/json"})
        );
        let v = user(r#","stop":"X","max_tokens":5,"n":1"#);
        assert_eq!(
            v["generationConfig"],
            json!({"maxOutputTokens":5,"stopSequences":["X"]})
        );
        let v = user(
            r#","response_format":{"type":"json_schema","json_schema":{"name":"w","strict":true,"schema":{"type":"object","properties":{"a":{"type":"integer"}},"additionalProperties":false}}}"#,
        );
        assert_eq!(
            v["generationConfig"],
            json!({"responseMimeType":"application/json","responseJsonSchema":{"type":"object","properties":{"a":{"type":"integer"}},"additionalProperties":false}})
        );
        assert!(user(r#","response_format":{"type":"text"}"#)
            .get("generationConfig")
            .is_none());
        for (effort, budget, include) in [
            ("none", 0, false),
            ("minimal", 512, true),
            ("low", 1024, true),
            ("medium", 8192, true),
            ("high", 24576, true),
            ("xhigh", 32768, true),
        ] {
            let v = user(&format!(r#","reasoning_effort":"{effort}""#));
            let mut expected = json!({"thinkingBudget": budget});
            if include {
                expected["includeThoughts"] = json!(true);
            }
            assert_eq!(
                v["generationConfig"]["thinkingConfig"], expected,
                "{effort}"
            );
        }
    }

    #[test]
    fn unsupported_parameters_are_400() {
        for (extra, param) in [
            (r#","n":0"#, "n"),
            (r#","logprobs":true"#, "logprobs"),
            (r#","functions":[{"name":"f"}]"#, "functions"),
            (r#","function_call":"auto""#, "function_call"),
            (r#","modalities":["text","audio"]"#, "modalities"),
            (r#","audio":{"voice":"alloy","format":"wav"}"#, "audio"),
            (r#","seed":4294967296"#, "seed"),
            (r#","reasoning_effort":"extreme""#, "reasoning_effort"),
        ] {
            let e = bad(&with_messages(r#"[{"role":"user","content":"hi"}]"#, extra));
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some(param)),
                "{extra}"
            );
        }
        // Dropped, not rejected.
        let v = user(
            r#","logprobs":false,"top_logprobs":2,"service_tier":"auto","metadata":{"a":"b"},"parallel_tool_calls":true"#,
        );
        assert!(v.get("generationConfig").is_none());
    }

    // ------------------------------------------------------------------ responses

    fn fresh(stream: bool, include_usage: bool) -> GeminiChat {
        let extra = match (stream, include_usage) {
            (false, _) => "",
            (true, false) => r#","stream":true"#,
            (true, true) => r#","stream":true,"stream_options":{"include_usage":true}"#,
        };
        try_translate(&with_messages(r#"[{"role":"user","content":"hi"}]"#, extra))
            .unwrap()
            .0
    }

    fn respond(t: &mut GeminiChat, body: &str) -> Value {
        serde_json::from_slice(&t.response(body.as_bytes()).unwrap().unwrap()).unwrap()
    }

    #[test]
    fn response_with_thoughts_text_and_tool_calls() {
        let mut t = fresh(false, false);
        let v = respond(&mut t, RESPONSE_FIXTURE);
        assert_eq!(
            v,
            json!({
                "id":"mFghaOyJBIGzkdUP2Yq9gQg","object":"chat.completion","created":1_700_000_000u64,
                "model":"gemini-2.5-flash",
                "choices":[{"index":0,"message":{"role":"assistant","content":"I'll check the weather.",
                    "reasoning_content":"The user wants the weather.",
                    "tool_calls":[
                        {"id":"call_0_ts_CiQBVKhc7-_abc","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\",\"days\":[1,2]}"}},
                        {"id":"call_1","type":"function","function":{"name":"get_time","arguments":"{}"}}
                    ],"refusal":null},
                    "logprobs":null,"finish_reason":"tool_calls"}],
                "usage":{"prompt_tokens":2105,"completion_tokens":603,"total_tokens":2708,
                    "prompt_tokens_details":{"cached_tokens":1800,"cache_write_tokens":0},
                    "completion_tokens_details":{"reasoning_tokens":100}}
            })
        );
        let u = t.usage().unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.cached_tokens,
                u.reasoning_tokens
            ),
            (2105, 603, 1800, 100)
        );
    }

    #[test]
    fn finish_reasons() {
        for (reason, expected) in [
            ("STOP", "stop"),
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
            ("BLOCKLIST", "content_filter"),
            ("PROHIBITED_CONTENT", "content_filter"),
            ("SPII", "content_filter"),
            ("IMAGE_SAFETY", "content_filter"),
            ("LANGUAGE", "stop"),
            ("OTHER", "stop"),
            ("MALFORMED_FUNCTION_CALL", "stop"),
            ("FINISH_REASON_UNSPECIFIED", "stop"),
        ] {
            let body = format!(
                r#"{{"candidates":[{{"content":{{"parts":[{{"text":"x"}}],"role":"model"}},"finishReason":"{reason}"}}]}}"#
            );
            let v = respond(&mut fresh(false, false), &body);
            assert_eq!(v["choices"][0]["finish_reason"], expected, "{reason}");
        }
        assert_eq!(finish_reason(Some("STOP"), true), "tool_calls");
        assert_eq!(finish_reason(Some("MAX_TOKENS"), true), "length");
        assert_eq!(finish_reason(None, false), "stop");
    }

    #[test]
    fn blocked_prompt_is_content_filter_with_empty_content() {
        let mut t = fresh(false, false);
        let v = respond(
            &mut t,
            r#"{"promptFeedback":{"blockReason":"SAFETY","safetyRatings":[]},"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8},"modelVersion":"gemini-2.5-flash"}"#,
        );
        assert_eq!(v["choices"][0]["message"]["content"], "");
        assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(v["usage"]["prompt_tokens"], 8);
        assert_eq!(v["id"], "chatcmpl-gemini-1700000000");
        // No candidates and no block: a bad answer.
        let e = fresh(false, false).response(b"{}").unwrap_err();
        assert_eq!(e.status, 502);
        let e = fresh(false, false).response(b"nope").unwrap_err();
        assert_eq!(e.status, 502);
    }

    #[test]
    fn several_candidates_become_choices() {
        let v = respond(
            &mut fresh(false, false),
            r#"{"candidates":[{"content":{"parts":[{"text":"A"}],"role":"model"},"finishReason":"STOP","index":0},
                {"content":{"parts":[{"functionCall":{"name":"f","args":{"x":1}}}],"role":"model"},"finishReason":"STOP","index":1},
                {"content":{"role":"model"},"finishReason":"MAX_TOKENS","index":2}]}"#,
        );
        let c = &v["choices"];
        assert_eq!(c.as_array().unwrap().len(), 3);
        assert_eq!(
            (c[0]["index"].clone(), c[0]["message"]["content"].clone()),
            (json!(0), json!("A"))
        );
        assert_eq!(c[1]["finish_reason"], "tool_calls");
        assert_eq!(c[1]["message"]["tool_calls"][0]["id"], "call_0");
        assert!(c[1]["message"]["content"].is_null());
        assert_eq!(c[2]["finish_reason"], "length");
        assert_eq!(v["model"], "gemini-2.5-flash");
    }

    #[test]
    fn errors_map_status_code_and_retry_after() {
        let t = fresh(false, false);
        let body = br#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED",
            "details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"36.2s"}]}}"#;
        let e = t.error(429, body);
        assert_eq!((e.status, e.kind), (429, "rate_limit_error"));
        assert_eq!(e.code.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(e.retry_after.as_deref(), Some("37"));
        assert_eq!(
            e.message,
            "gem returned 429: RESOURCE_EXHAUSTED: Resource has been exhausted (e.g. check quota)."
        );
        let e = t.error(
            400,
            br#"[{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}]"#,
        );
        assert_eq!(
            (e.status, e.code.as_deref()),
            (400, Some("INVALID_ARGUMENT"))
        );
        assert!(e.retry_after.is_none());
        let e = t.error(500, br#"{"error":{"code":500,"message":"Internal error encountered.","status":"INTERNAL"}}"#);
        assert_eq!(
            (e.status, e.kind, e.code.as_deref()),
            (500, "api_error", Some("INTERNAL"))
        );
        let e = t.error(503, b"<html>Service Unavailable</html>");
        assert_eq!((e.status, e.code.clone()), (503, None));
        assert!(e.message.contains("Service Unavailable"));
        for (delay, expected) in [
            ("37s", Some("37")),
            ("0s", Some("0")),
            ("0.000001s", Some("1")),
            ("2.000s", Some("2")),
            ("86400s", Some("86400")),
            ("86401s", None),
            ("x", None),
            ("-1s", None),
            ("1e9s", None),
            ("NaNs", None),
            ("5", None),
            (".5s", None),
            ("1.s", Some("1")),
            ("99999999999999999999999s", None),
        ] {
            let text = format!(
                r#"{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{delay}"}}"#
            );
            let raw: Vec<&RawValue> = vec![serde_json::from_str(&text).unwrap()];
            assert_eq!(retry_after(&raw).as_deref(), expected, "{delay}");
        }
    }

    #[test]
    fn gateway_sets_retry_after_from_the_error_body() {
        use crate::gateway::{BodyAction, BodyRequest, Endpoint, Gateway};
        let g = Gateway::new(Config::parse(CONFIG.as_bytes(), &ProcessEnv).unwrap(), 0);
        let fwd = g
            .on_request_body(
                &BodyRequest {
                    endpoint: Endpoint::ChatCompletions,
                    content_type: None,
                    key: None,
                    now_unix: 0,
                    pick: 0,
                },
                br#"{"model":"flash","messages":[{"role":"user","content":"x"}]}"#,
            )
            .unwrap();
        let mut ex = fwd.exchange;
        ex.on_response_headers(429, None);
        let body = br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"7s"}]}}"#;
        match ex.on_response_body(body, body.len(), true) {
            BodyAction::ReplaceWhole { status, body } => {
                assert_eq!(status, 429);
                let v: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["error"]["code"], "RESOURCE_EXHAUSTED");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ex.retry_after.as_deref(), Some("7"));
    }

    // ------------------------------------------------------------------ streaming

    fn run(t: &mut GeminiChat, chunks: &[&[u8]]) -> String {
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

    #[test]
    fn stream_is_translated_whole() {
        let mut t = fresh(true, true);
        let chunks = chunks_json(&run(&mut t, &[STREAM_FIXTURE.as_bytes()]));
        for c in &chunks {
            assert_eq!(c["id"], "Hq8haKzYLIGzkdUP8pKo2Qg");
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["created"], 1_700_000_000u64);
            assert_eq!(c["model"], "gemini-2.5-flash");
        }
        let deltas: Vec<Value> = chunks[..chunks.len() - 1]
            .iter()
            .map(|c| {
                assert!(c["usage"].is_null());
                c["choices"][0]["delta"].clone()
            })
            .collect();
        assert_eq!(
            deltas,
            vec![
                json!({"role":"assistant","content":""}),
                json!({"content":"Okay, let me check"}),
                json!({"content":" the weather in San Francisco — \"SF\" ☀️."}),
                json!({"tool_calls":[{"index":0,"id":"call_0_ts_CiQB_-sig0","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"San Francisco, CA\",\"unit\":\"fahrenheit\"}"}}]}),
                json!({}),
            ]
        );
        let fin: Vec<Value> = chunks[..chunks.len() - 1]
            .iter()
            .map(|c| c["choices"][0]["finish_reason"].clone())
            .collect();
        assert_eq!(
            fin[..4],
            [Value::Null, Value::Null, Value::Null, Value::Null]
        );
        assert_eq!(fin[4], "tool_calls");
        let last = &chunks[chunks.len() - 1];
        assert_eq!(last["choices"], json!([]));
        assert_eq!(
            last["usage"],
            json!({"prompt_tokens":2620,"completion_tokens":89,"total_tokens":2709,"prompt_tokens_details":{"cached_tokens":2048,"cache_write_tokens":0}})
        );
        assert_eq!(t.usage().unwrap().total_tokens(), 2709);
    }

    #[test]
    fn stream_output_is_identical_at_every_split_and_byte_by_byte() {
        let s = STREAM_FIXTURE.as_bytes();
        assert!(STREAM_FIXTURE.contains("\r\n\r\n"));
        let whole = run(&mut fresh(true, true), &[s]);
        for cut in 0..=s.len() {
            let (a, b) = s.split_at(cut);
            assert_eq!(run(&mut fresh(true, true), &[a, b]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        let mut t = fresh(true, true);
        assert_eq!(run(&mut t, &bytes), whole);
        assert_eq!(t.usage().unwrap().completion_tokens, 89);
        // LF framing and a last event without its blank line (the connection just closes).
        let lf = STREAM_FIXTURE.replace("\r\n", "\n");
        assert_eq!(run(&mut fresh(true, true), &[lf.as_bytes()]), whole);
        let cut = STREAM_FIXTURE.trim_end();
        assert_eq!(run(&mut fresh(true, true), &[cut.as_bytes()]), whole);
    }

    #[test]
    fn stream_without_include_usage_has_no_usage_field() {
        let mut t = fresh(true, false);
        let chunks = chunks_json(&run(&mut t, &[STREAM_FIXTURE.as_bytes()]));
        assert!(chunks
            .iter()
            .all(|c| c.get("usage").is_none() && c["choices"].as_array().unwrap().len() == 1));
        assert_eq!(t.usage().unwrap().prompt_tokens, 2620);
    }

    const FIRST: &str = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"},\"index\":0}],\"responseId\":\"r1\",\"modelVersion\":\"gemini-x\"}\r\n\r\n";

    #[test]
    fn stream_error_in_data_or_raw_json_ends_the_stream() {
        // As an SSE event.
        let s = format!("{FIRST}data: {{\"error\":{{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}}}\r\n\r\n{FIRST}");
        let ev = data_events(&run(&mut fresh(true, true), &[s.as_bytes()]));
        assert_eq!(ev.len(), 4, "{ev:?}");
        let err: Value = serde_json::from_str(&ev[2]).unwrap();
        assert_eq!(err["error"]["code"], "UNAVAILABLE");
        assert_eq!(err["error"]["type"], "api_error");
        assert!(err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("The model is overloaded."));
        // Raw and pretty-printed, without `data:`, cut anywhere.
        let raw = "{\n  \"error\": {\n    \"code\": 429,\n    \"message\": \"Resource exhausted {\\\"}\",\n    \"status\": \"RESOURCE_EXHAUSTED\"\n  }\n}\n";
        let s = format!("{FIRST}{raw}");
        let whole = run(&mut fresh(true, false), &[s.as_bytes()]);
        let ev = data_events(&whole);
        assert_eq!(ev.len(), 4, "{whole}");
        let err: Value = serde_json::from_str(&ev[2]).unwrap();
        assert_eq!(err["error"]["code"], "RESOURCE_EXHAUSTED");
        assert_eq!(err["error"]["type"], "rate_limit_error");
        for cut in 0..=s.len() {
            let (a, b) = s.as_bytes().split_at(cut);
            assert_eq!(run(&mut fresh(true, false), &[a, b]), whole, "cut at {cut}");
        }
        // In a one-element array, as Vertex sends it.
        let s = format!(
            "{FIRST}[{{\"error\":{{\"code\":500,\"message\":\"x\",\"status\":\"INTERNAL\"}}}}]"
        );
        let out = run(&mut fresh(true, false), &[s.as_bytes()]);
        assert!(out.contains("\"code\":\"INTERNAL\""), "{out}");
        // Raw JSON that is not an error, and raw JSON cut off by the end of the body.
        let out = run(&mut fresh(true, false), &[b"{\"hello\":1}\n"]);
        assert!(out.contains("data outside an SSE event"), "{out}");
        let out = run(
            &mut fresh(true, false),
            &[FIRST.as_bytes(), b"{\"error\": {\"code\": 4"],
        );
        assert_eq!(data_events(&out).len(), 4, "{out}");
    }

    #[test]
    fn stream_that_ends_early_or_is_invalid_is_an_error() {
        let mut t = fresh(true, false);
        let out = run(
            &mut t,
            &[FIRST.as_bytes(), b"data: {\"candidates\":[{\"conte"],
        );
        let ev = data_events(&out);
        let err: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
        assert_eq!(
            err["error"]["message"],
            "gem stream ended before a finishReason"
        );
        // Nothing after [DONE], even if more arrives.
        let mut more = Vec::new();
        assert!(t.stream_chunk(FIRST.as_bytes(), true, &mut more));
        assert!(more.is_empty());
        // An empty body is an error too.
        assert!(run(&mut fresh(true, false), &[]).contains("ended before a finishReason"));
        // Invalid JSON in a complete event.
        let out = run(&mut fresh(true, false), &[b"data: {nope\r\n\r\n"]);
        assert_eq!(data_events(&out).len(), 2);
        assert!(out.contains("invalid stream event"));
    }

    #[test]
    fn stream_thoughts_blocked_prompt_and_several_candidates() {
        let s = concat!(
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Let me think\",\"thought\":true}],\"role\":\"model\"},\"index\":0},{\"content\":{\"parts\":[{\"text\":\"B\"}],\"role\":\"model\"},\"index\":1}]}\r\n\r\n",
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"A\"},{\"functionCall\":{\"name\":\"f\"}},{\"functionCall\":{\"name\":\"g\",\"args\":{\"k\":[1, 2]}}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0},{\"content\":{\"parts\":[],\"role\":\"model\"},\"finishReason\":\"SAFETY\",\"index\":1}],\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":30,\"thoughtsTokenCount\":12,\"toolUsePromptTokenCount\":2}}\r\n\r\n",
        );
        let mut t = fresh(true, false);
        let chunks = chunks_json(&run(&mut t, &[s.as_bytes()]));
        let got: Vec<(u64, Value, Value)> = chunks
            .iter()
            .map(|c| {
                let ch = &c["choices"][0];
                (
                    ch["index"].as_u64().unwrap(),
                    ch["delta"].clone(),
                    ch["finish_reason"].clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, json!({"role":"assistant","content":""}), Value::Null),
                (0, json!({"reasoning_content":"Let me think"}), Value::Null),
                (1, json!({"role":"assistant","content":""}), Value::Null),
                (1, json!({"content":"B"}), Value::Null),
                (0, json!({"content":"A"}), Value::Null),
                (
                    0,
                    json!({"tool_calls":[{"index":0,"id":"call_0","type":"function","function":{"name":"f","arguments":"{}"}}]}),
                    Value::Null
                ),
                (
                    0,
                    json!({"tool_calls":[{"index":1,"id":"call_1","type":"function","function":{"name":"g","arguments":"{\"k\":[1,2]}"}}]}),
                    Value::Null
                ),
                (0, json!({}), json!("tool_calls")),
                (1, json!({}), json!("content_filter")),
            ]
        );
        let u = t.usage().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens),
            (5, 42, 12)
        );

        // A blocked prompt: role chunk, content_filter, usage, [DONE].
        let s = "data: {\"promptFeedback\":{\"blockReason\":\"PROHIBITED_CONTENT\"},\"usageMetadata\":{\"promptTokenCount\":4,\"totalTokenCount\":4},\"modelVersion\":\"gemini-x\",\"responseId\":\"r9\"}\r\n\r\n";
        let chunks = chunks_json(&run(&mut fresh(true, true), &[s.as_bytes()]));
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1]["choices"][0]["finish_reason"], "content_filter");
        assert_eq!(chunks[2]["usage"]["prompt_tokens"], 4);
    }

    // ------------------------------------------------------------------ robustness

    #[test]
    fn garbage_never_panics() {
        let seeds: Vec<&[u8]> = vec![
            STREAM_FIXTURE.as_bytes(),
            RESPONSE_FIXTURE.as_bytes(),
            FIRST.as_bytes(),
            br#"{"error":{"code":429,"message":"m","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"3s"}]}}"#,
            br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}},{"type":"input_audio","input_audio":{"data":"AA","format":"wav"}}]},{"role":"assistant","tool_calls":[{"id":"call_0_ts_AB-_","type":"function","function":{"name":"f","arguments":"{\"a\":[1,{}]}"}}]},{"role":"tool","tool_call_id":"call_0_ts_AB-_","content":"{\"r\":1}"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"required","stop":["x"],"max_tokens":5,"reasoning_effort":"high","response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{}}},"n":2,"seed":3}"#,
        ];
        let alphabet: &[u8] =
            b"{}[]\":,\\ \n\rdata:error0123456789.-eE+truefalsnul\xe2\x82\xac\xff";
        crate::test_support::workout(
            &seeds,
            alphabet,
            &provider(),
            &|| Box::new(GeminiChat::default()),
            &|stream, usage| Box::new(fresh(stream, usage)),
            3000,
        );
    }
}
