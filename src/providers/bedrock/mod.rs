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

mod embeddings;
mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

pub use embeddings::BedrockEmbeddings;
pub(crate) use request::converse_body;
use request::EMPTY_OBJECT;
pub use request::LEADING_USER_PLACEHOLDER;
pub(crate) use response::exception_status;
use response::{finish_reason, str_at, token_usage};

use crate::codec::base64::standard as base64;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;

use super::openai_chunks::{self, ChunkStream, ChunkWriter};
use super::{provider_error, ChatCall, ChatTranslator, ProviderRequest, Usage};
use crate::aws::eventstream::{Decoder, Message};
use crate::aws::sigv4;
use crate::client_api::openai::chat::{
    AssistantMessage, ChatCompletion, ChatRequest, Choice, CompletionUsage, ContentPart,
    FunctionOut, MessageContent, ResponseFormat, Role, Str, ToolCallOut, ToolChoice,
};
use crate::codec::json_text::Text;
use crate::config::Provider;
use crate::error::{kind_for_status, GatewayError};

fn bad(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::invalid_param(param, message)
}

fn unsupported(param: &str, what: &str) -> GatewayError {
    bad(param, format!("{what} is not supported by bedrock"))
}

/// The model id as one path segment.
pub(crate) fn model_path(p: &Provider, model: &str, op: &str) -> String {
    format!(
        "{}/model/{}/{op}",
        p.base_path,
        sigv4::uri_encode(model, true)
    )
}

/// The upstream request with its auth: SigV4 over the exact path and body, or a Bearer API key.
pub(crate) fn signed(
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
pub(crate) fn bedrock_error(provider: &str, status: u16, body: &[u8]) -> GatewayError {
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
