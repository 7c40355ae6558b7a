//! OpenAI client → Anthropic Messages API (`POST {base_path}/messages`).
//!
//! The request is read into the typed shapes of [`crate::client_api::openai::chat`] (borrowing from the
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

mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

use request::build_request;
use response::{bad_gateway, compact_json, finish_reason, AError, AUsage, MessageResponse};

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
