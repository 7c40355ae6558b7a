//! The Anthropic Messages API as clients speak it to the gateway (`POST /v1/messages`), so the
//! `anthropic` SDK and Claude-compatible tools can use any model.
//!
//! Requests for an Anthropic deployment go through untouched but for the model name; for Claude
//! on Vertex AI or on Bedrock they go in Anthropic's own body too, re-addressed and re-versioned
//! ([`native`]), so thinking blocks and their signatures, `cache_control` and everything else
//! the pivot cannot carry survive. For any other provider the request is rewritten to an OpenAI chat-completions request — the pivot
//! every provider translator already accepts — and the OpenAI answer (whole or streamed) is
//! rewritten back into a Messages answer.
//!
//! Mapping decisions (Anthropic → OpenAI), checked against what Claude Code sends
//! (tests/fixtures/anthropic/claude_code_request.json):
//! - `system` (string or text blocks) → a first `system` message; a `system` turn inside
//!   `messages` → a `system` message where it stands.
//! - user `text`/`image` blocks → content parts (`image` base64 → `data:` URL; URL images kept);
//!   `tool_result` blocks → `tool` messages placed before the rest of that user turn (OpenAI
//!   wants results right after the assistant's tool calls), their images in the user message
//!   after them (tool messages take text only), `tool_reference` blocks as a line of text;
//!   assistant `tool_use` → `tool_calls` with the input as JSON text; `thinking` and
//!   `redacted_thinking` blocks are dropped (their signatures are Anthropic's to verify);
//!   `document` and server tools → 400.
//! - `tools` → functions (`input_schema` → `parameters`), a `defer_loading` tool only once a
//!   `tool_reference` names it; `tool_choice` auto/any/tool/none → auto/required/named/none;
//!   `disable_parallel_tool_use` → `parallel_tool_calls: false`.
//! - `max_tokens` → `max_completion_tokens` for OpenAI and Azure (their reasoning models refuse
//!   `max_tokens`), `max_tokens` elsewhere (many OpenAI-compatible services only know that one);
//!   `stop_sequences` → `stop`; `temperature`, `top_p` kept; `metadata.user_id` → `user` (a
//!   digest when long); `thinking` → `reasoning_effort` for models known to think ([`Target`]),
//!   else dropped; `output_config.format` → `response_format`; `cache_control`,
//!   `context_management`, the rest of `output_config` and `top_k` dropped (no equivalent).
//! - `anthropic-beta` is removed: only Anthropic deployments may get it (`client_headers`).
//!
//! Answers: text → a `text` block, tool calls → `tool_use` blocks (arguments parsed; unparsable
//! arguments become `{}`), finish reasons stop/length/tool_calls/content_filter →
//! end_turn/max_tokens/tool_use/refusal, usage: `input_tokens` = prompt − cached,
//! `cache_read_input_tokens` = cached, `output_tokens` = completion.
//!
//! The parts: [`request`] (Messages request → OpenAI chat request), [`response`] (OpenAI
//! `chat.completion` → `message`), [`stream`] (OpenAI chunks → Messages stream events),
//! [`translator`] (the `ChatTranslator`s gluing them to the providers); this file holds what
//! the gateway checks before any of them runs (the envelope) and the Anthropic error body.

pub mod count_tokens;
pub mod native;
mod request;
mod response;
mod stream;
mod target;
pub mod translator;

#[cfg(test)]
mod claude_code_tests;
#[cfg(test)]
mod tests;

pub use request::to_openai_request;
pub use response::openai_response_to_message;
pub use stream::StreamToMessages;
pub use target::Target;

use serde_json::{json, Value};

use crate::client_api::openai::ChatEnvelope;
use crate::error::GatewayError;

/// Parses and validates the top level of an Anthropic Messages request (`/v1/messages`).
pub fn parse_messages_envelope(body: &[u8]) -> Result<ChatEnvelope<'_>, GatewayError> {
    let mut env = crate::client_api::openai::envelope::parse_top(body)?;
    validate_envelope(&env)?;
    env.stream = crate::client_api::openai::envelope::stream_flag(&env)?;
    Ok(env)
}

/// Validates the top level of a Messages request (the fields the gateway needs).
pub fn validate_envelope(env: &ChatEnvelope<'_>) -> Result<(), GatewayError> {
    validate_messages(env)?;
    match env.field("max_tokens").map(|r| r.get().parse::<u64>()) {
        Some(Ok(n)) if n >= 1 => Ok(()),
        _ => Err(GatewayError::invalid_param(
            "max_tokens",
            "`max_tokens` is required and must be a positive integer",
        )),
    }
}

/// `messages` is a non-empty array of turns with a known role.
pub fn validate_messages(env: &ChatEnvelope<'_>) -> Result<(), GatewayError> {
    let messages = env
        .field("messages")
        .ok_or_else(crate::client_api::openai::envelope::messages_required)?;
    match serde_json::from_str::<Value>(messages.get()) {
        Ok(Value::Array(items)) if !items.is_empty() => {
            for (i, m) in items.iter().enumerate() {
                // `system` turns inside the conversation: Claude Code sends them (its
                // environment, reminders); see `request::push_turn` for other providers.
                match m.get("role").and_then(Value::as_str) {
                    Some("user") | Some("assistant") | Some("system") => {}
                    _ => {
                        return Err(GatewayError::invalid_param(
                            &format!("messages.{i}.role"),
                            "each message needs `role` `user`, `assistant` or `system`",
                        ))
                    }
                }
            }
        }
        _ => {
            return Err(GatewayError::invalid_param(
                "messages",
                "`messages` must be a non-empty array",
            ))
        }
    }
    Ok(())
}

/// The Anthropic error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// `{"type":"error","error":{"type","message"}}`.
pub fn error_body(e: &GatewayError) -> Vec<u8> {
    json!({"type": "error", "error": {"type": error_type(e.status), "message": e.message}})
        .to_string()
        .into_bytes()
}
