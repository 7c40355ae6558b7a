//! OpenAI client → Google Gemini API (AI Studio): `POST {base_path}/models/{model}:generateContent`,
//! streams `:streamGenerateContent?alt=sse`, key in `x-goog-api-key`.
//!
//! The request is read into the typed shapes of [`crate::client_api::openai::chat`] (borrowing from the
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

mod parts;
mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

use request::{build_request, tool_call_id};
use response::{bad_gateway, choice, parse_error, retry_after, status_for_rpc, tool_call_ids};
use response::{GResponse, Tokens};
use stream::RawJson;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

use super::openai_chunks::{self, ChunkStream, ChunkWriter};
use super::{client_status, provider_error, ChatCall, ChatTranslator, ProviderRequest, Usage};
use crate::client_api::openai::chat::{
    AssistantMessage, ChatCompletion, ChatMessage, ChatRequest, Choice, ContentPart, FunctionOut,
    MessageContent, ResponseFormat, Role, Str, ToolCallOut, ToolChoice,
};
use crate::codec::json_text::Text;
use crate::codec::sse::{SseEvent, SseParser};
use crate::error::{kind_for_status, GatewayError};

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
        let ids = tool_call_ids(candidates);
        let mut choices = Vec::with_capacity(candidates.len().max(1));
        for (k, (c, ids)) in candidates.iter().zip(&ids).enumerate() {
            choices.push(choice(k, c, ids));
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
