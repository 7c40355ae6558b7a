//! The OpenAI Responses API as clients speak it to the gateway (`POST /v1/responses`), so Codex,
//! the OpenAI Agents SDK and `client.responses.create(...)` can use any model.
//!
//! OpenAI-protocol deployments (`openai`, `azure`, OpenAI-compatible services) get the body as
//! it is but for the model name, and their answer goes back untouched. For any other provider
//! the request is rewritten to an OpenAI chat-completions request — the pivot every provider
//! translator already accepts, as for the Anthropic Messages API ([`super::anthropic`]) — and
//! the chat answer (whole or streamed) is rewritten into a `response` object or the Responses
//! API's semantic stream events. Routing, failover, limits, usage, cost and metrics are those
//! of chat: the provider's own translator reads the usage.
//!
//! Wire format sources: the OpenAI Responses API reference and its streaming guide
//! (<https://developers.openai.com/docs/guides/streaming-responses>: "The Responses API uses
//! semantic events for streaming"), and the official SDK's types, openai/openai-python
//! `src/openai/types/responses/` (`response_create_params.py`, `response_input_item_param.py`,
//! `response.py`, `response_usage.py`, `response_output_message.py`,
//! `response_function_tool_call.py`, `response_reasoning_item.py` and the `*_event.py` files);
//! cited per field where it is used.
//!
//! Mapping decisions (Responses → chat):
//! - `instructions` → a first `system` message; `input` as a string → one `user` message.
//! - Input items: messages (`role` user/system/developer/assistant, `type: "message"` or no
//!   type) with `input_text` → text parts, `input_image` → `image_url` parts (URL or `data:`
//!   URL, `detail` kept), `input_file` with `file_data` → `file` parts (the provider's
//!   translator says whether it takes files); an assistant's `output_text`/`refusal` parts →
//!   its text, joined as they are (no separator: the same text). `function_call` items →
//!   `tool_calls` of the assistant message before them (one is made when the previous message
//!   is not an assistant's); `function_call_output` → `tool` messages (`call_id` →
//!   `tool_call_id`; text, image and file output parts kept as parts).
//! - `reasoning` input items are dropped: the chat pivot has no field to send a model's earlier
//!   reasoning back, and the translated providers do not need it to continue (Gemini's thought
//!   signatures travel in the tool-call id, which comes back as the `call_id`). Their
//!   `encrypted_content` is OpenAI's and means nothing to another provider.
//! - Function `tools` → chat functions (`parameters`, `description`, `strict` kept); a
//!   `namespace` tool's functions (Codex groups its sub-agent tools so) → chat functions named
//!   `<namespace>__<name>`, and `function_call` items carrying a `namespace` likewise; answers
//!   give the name and `namespace` back as declared. Hosted tools (`web_search`, ...) → 400,
//!   or dropped when the provider says `drop_params` (the provider cannot run them either way);
//!   `tool_choice` none/auto/required and `{type: function, name}` map one to one;
//!   `{type: allowed_tools, mode, tools}` keeps only the allowed functions and `mode` as the
//!   choice. `parallel_tool_calls` kept.
//! - `text.format` `json_schema` → `response_format {type: json_schema, json_schema: {name,
//!   schema, description, strict}}`, `json_object` → `response_format json_object`, `text` →
//!   nothing. `reasoning.effort` → `reasoning_effort`; `max_output_tokens` →
//!   `max_completion_tokens`; `temperature`, `top_p`, `user`, `safety_identifier` kept.
//! - Accepted and not sent (no provider equivalent, echoed in the answer where the `response`
//!   object has them): `metadata`, `store` (nothing is stored either way), `include`,
//!   `reasoning.summary`, `text.verbosity`, `truncation`, `service_tier`, `prompt_cache_key`,
//!   `max_tool_calls`, `stream_options`, `context_management`.
//! - Refused with 400 `unsupported_parameter`, saying what to send instead: state kept by
//!   OpenAI (`previous_response_id`, `conversation`, `prompt`, `background: true`,
//!   `item_reference` items, `file_id` images and files), built-in tools (web search, file
//!   search, code interpreter, computer use, MCP, shell, custom tools, ...) and other input
//!   item types, `top_logprobs`.
//!
//! Answers: the chat answer's reasoning → a `reasoning` item with one `summary_text`, its text
//! → a `message` item with one `output_text` part, its tool calls → `function_call` items (the
//! tool-call id as `call_id`); finish `length` / `content_filter` → status `incomplete` with
//! `incomplete_details.reason` `max_output_tokens` / `content_filter`, else `completed`; usage:
//! `input_tokens` = prompt (cached included, as OpenAI counts), `output_tokens` = completion,
//! `cached_tokens`, `cache_write_tokens` and `reasoning_tokens` in the details.
//!
//! The parts: [`request`] (Responses request → chat request), [`response`] (`chat.completion`
//! → `response`), [`stream`] (chat chunks → Responses stream events), [`translator`] (the
//! `ChatTranslator`s gluing them to the providers); this file holds the envelope check.

mod request;
mod response;
mod stream;
pub mod translator;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

pub use request::{to_chat_request, ChatRequestBody};

/// Separates a `namespace` tool's name from its function's in the flat chat function name.
const NAMESPACE_SEPARATOR: &str = "__";

/// The chat function name of function `name` in namespace `ns`.
fn flat_name(ns: &str, name: &str) -> String {
    format!("{ns}{NAMESPACE_SEPARATOR}{name}")
}

/// A chat function name back as the client declared it: `(name, Some(namespace))` for a function
/// of one of the request's `namespace` tools (`echo["tools"]`), else `(flat, None)`. Linear in
/// the declared tools.
fn unflatten<'a>(echo: &'a Map<String, Value>, flat: &'a str) -> (&'a str, Option<&'a str>) {
    let tools = echo.get("tools").and_then(Value::as_array);
    for t in tools.into_iter().flatten() {
        if t.get("type").and_then(Value::as_str) != Some("namespace") {
            continue;
        }
        let Some(ns) = t.get("name").and_then(Value::as_str) else {
            continue;
        };
        let Some(rest) = flat
            .strip_prefix(ns)
            .and_then(|r| r.strip_prefix(NAMESPACE_SEPARATOR))
        else {
            continue;
        };
        let children = t.get("tools").and_then(Value::as_array);
        if children
            .into_iter()
            .flatten()
            .any(|c| c.get("name").and_then(Value::as_str) == Some(rest))
        {
            return (rest, Some(ns));
        }
    }
    (flat, None)
}
pub use response::chat_to_response;
pub use stream::StreamToResponses;

use crate::client_api::openai::ChatEnvelope;
use crate::error::GatewayError;

/// Parses the top level of a Responses request (`/v1/responses`): `model` and `stream`. The
/// rest is checked by the translation, for the providers it applies to: an OpenAI-protocol
/// deployment gets the body as it is and answers for it itself.
pub fn parse_responses_envelope(body: &[u8]) -> Result<ChatEnvelope<'_>, GatewayError> {
    let mut env = crate::client_api::openai::envelope::parse_top(body)?;
    env.stream = crate::client_api::openai::envelope::stream_flag(&env)?;
    Ok(env)
}
