//! `POST /v1/messages/count_tokens`: Anthropic's token counter, which Claude Code calls to size
//! its context. It exists so that call works for every model a gateway serves (issue 16 item 2),
//! not only for Anthropic deployments.
//!
//! Routed like `/v1/messages` (same keys, model groups, aliases), to the plan's first deployment
//! only (no failover: a count is cheap, and an estimated one never goes upstream). Request
//! (https://docs.anthropic.com/en/api/messages-count-tokens): a Messages request without
//! `max_tokens`; answer `{"input_tokens": N}`. Per provider:
//! - Anthropic: to the provider's `{base_path}/messages/count_tokens` with its key and
//!   `anthropic-version`, the model renamed; the answer goes back as Anthropic sent it.
//! - Gemini (AI Studio): `{base_path}/models/{model}:countTokens` with body
//!   `{"generateContentRequest": {"model": "models/{model}", ...}}`, the generateContent body
//!   the Messages → OpenAI → Gemini translation builds (contents, systemInstruction, tools, ...;
//!   https://ai.google.dev/api/tokens#method:-models.counttokens). Answer `totalTokens` →
//!   `input_tokens` (proto3 JSON leaves a zero out: no `totalTokens` is 0).
//! - Vertex AI Gemini: `.../publishers/google/models/{model}:countTokens` with `contents`,
//!   `systemInstruction`, `tools` and `generationConfig` at the top level, the fields Vertex's
//!   CountTokensRequest has (https://cloud.google.com/vertex-ai/generative-ai/docs/reference/rest/v1/projects.locations.publishers.models/countTokens).
//! - Bedrock: CountTokens, `POST /model/{modelId}/count-tokens` with
//!   `{"input": {"converse": {messages, system, toolConfig, additionalModelRequestFields}}}`
//!   built by the Converse translation and signed like every Bedrock request; answer
//!   `inputTokens` (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_CountTokens.html,
//!   https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ConverseTokensRequest.html).
//! - Claude on Vertex AI: `.../publishers/anthropic/models/count-tokens:rawPredict` with the
//!   Messages body as it is (model renamed, kept in the body) and `"anthropic_version":
//!   "vertex-2023-10-16"`, as the Anthropic SDK's Vertex client sends it
//!   (https://cloud.google.com/vertex-ai/generative-ai/docs/partner-models/claude/count-tokens);
//!   the answer is Anthropic's `{"input_tokens"}`, passed back.
//! - Every other provider (OpenAI protocol, Azure, Cohere): LLMux answers
//!   itself with an **estimate**: the request body's bytes / 4 (at least 1), the estimate the
//!   gateway charges when a provider reports no usage (`routing::estimate_prompt_tokens`). It
//!   counts the JSON syntax too, so it errs high.
//!
//! The answer says who counted in `x-llmux-token-count`: `provider` or `estimate`. Limits: a
//! provider count is admitted like any request (it counts against rpm) and charged no tokens
//! (its usage is zero); an estimate is answered before admission (like `GET /v1/models`).
//! Errors are in Anthropic's shape (the endpoint's client API).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::client_api::anthropic::native::native_body;
use crate::client_api::anthropic::translator::AnthropicPassthrough;
use crate::client_api::anthropic::{to_openai_request, validate_messages, Target};
use crate::client_api::openai::chat::ChatRequest;
use crate::client_api::openai::{parse_chat_envelope, ChatEnvelope};
use crate::config::Provider;
use crate::error::GatewayError;
use crate::gateway::{LocalResponse, TOKEN_COUNT_HEADER};
use crate::providers::gemini::{model_segment, GeminiChat};
use crate::providers::vertex::{Publisher, VertexChat, ANTHROPIC_VERTEX_VERSION};
use crate::providers::{
    bedrock, vertex, ChatCall, ChatTranslator, ProviderKind, ProviderRequest, Usage,
};

/// Parses and validates the top level of a count request: `model` and `messages` as for
/// `/v1/messages`, no `max_tokens`; never a stream.
pub fn parse_envelope(body: &[u8]) -> Result<ChatEnvelope<'_>, GatewayError> {
    let mut env = crate::client_api::openai::envelope::parse_top(body)?;
    validate_messages(&env)?;
    env.stream = false;
    Ok(env)
}

/// Which counter a provider has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Anthropic's own endpoint, the request passed through.
    Anthropic,
    /// Claude on Vertex AI: Vertex's `count-tokens:rawPredict`, the Messages body as it is.
    VertexClaude,
    /// A counter fed by the Messages → OpenAI chat → provider translation.
    Pivot(Native),
}

/// The providers whose counters take their own request shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Native {
    Gemini,
    VertexGemini,
    Bedrock,
}

impl Counter {
    /// The provider's own counter for `upstream_model`, if LLMux uses one (`None`: estimate).
    pub fn of(p: &Provider, upstream_model: &str) -> Option<Counter> {
        match p.kind {
            ProviderKind::Anthropic => Some(Counter::Anthropic),
            ProviderKind::Gemini => Some(Counter::Pivot(Native::Gemini)),
            ProviderKind::Vertex => match p.vertex.as_ref()?.publisher_for(upstream_model) {
                Publisher::Google => Some(Counter::Pivot(Native::VertexGemini)),
                Publisher::Anthropic => Some(Counter::VertexClaude),
            },
            ProviderKind::Bedrock => Some(Counter::Pivot(Native::Bedrock)),
            ProviderKind::OpenAi | ProviderKind::Cohere => None,
        }
    }
}

/// The translator of a count for this deployment, or `None` when LLMux estimates.
pub fn translator(p: &Provider, upstream_model: &str) -> Option<Box<dyn ChatTranslator>> {
    Counter::of(p, upstream_model).map(|via| {
        Box::new(CountTokens {
            via,
            provider: String::new(),
            anthropic: AnthropicPassthrough::default(),
        }) as Box<dyn ChatTranslator>
    })
}

/// LLMux's estimate for a count request body: bytes / 4, at least 1.
pub fn estimate(body: &[u8]) -> u64 {
    u64::from(crate::routing::estimate_prompt_tokens(body.len())).max(1)
}

/// The local answer with the estimate, marked `x-llmux-token-count: estimate`.
pub fn estimate_answer(body: &[u8]) -> LocalResponse {
    let mut r = LocalResponse::json(200, answer_body(estimate(body)));
    r.headers
        .push((TOKEN_COUNT_HEADER.to_string(), "estimate".to_string()));
    r
}

fn answer_body(n: u64) -> Vec<u8> {
    format!("{{\"input_tokens\":{n}}}").into_bytes()
}

/// One count request to a provider that counts.
pub struct CountTokens {
    via: Counter,
    provider: String,
    /// The Messages pass-through: builds Anthropic's request and reads its errors.
    anthropic: AnthropicPassthrough,
}

fn internal(what: &str, e: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(500, "api_error", format!("{what}: {e}"))
}

fn bad_answer(provider: &str, what: &str) -> GatewayError {
    GatewayError::new(
        502,
        "api_error",
        format!("{provider} answered the token count without {what}"),
    )
}

/// The generateContent body as Gemini's countTokens takes it.
fn gemini_body(generate: &[u8], model: &str) -> Result<Vec<u8>, GatewayError> {
    let mut g: Map<String, Value> =
        serde_json::from_slice(generate).map_err(|e| internal("re-reading the request", e))?;
    let model = model.strip_prefix("models/").unwrap_or(model);
    g.insert("model".into(), Value::String(format!("models/{model}")));
    let mut out = Map::new();
    out.insert("generateContentRequest".into(), Value::Object(g));
    serde_json::to_vec(&out).map_err(|e| internal("serialising", e))
}

/// Only the fields of `body` named in `keep`, wrapped by `wrap` (outermost last).
fn pick(body: &[u8], keep: &[&str], wrap: &[&str]) -> Result<Vec<u8>, GatewayError> {
    let mut all: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| internal("re-reading the request", e))?;
    let mut v = Value::Object(
        keep.iter()
            .filter_map(|k| all.remove(*k).map(|v| (k.to_string(), v)))
            .collect(),
    );
    for key in wrap {
        let mut m = Map::new();
        m.insert((*key).to_string(), v);
        v = Value::Object(m);
    }
    serde_json::to_vec(&v).map_err(|e| internal("serialising", e))
}

/// Vertex's CountTokensRequest fields.
const VERTEX_FIELDS: &[&str] = &["contents", "systemInstruction", "tools", "generationConfig"];
/// Bedrock's ConverseTokensRequest fields.
const CONVERSE_FIELDS: &[&str] = &[
    "messages",
    "system",
    "toolConfig",
    "additionalModelRequestFields",
];

impl ChatTranslator for CountTokens {
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        let p = call.provider;
        let model = call.upstream_model;
        self.provider = p.name.clone();
        let native = match self.via {
            Counter::Anthropic => {
                let mut req = self.anthropic.request(call)?;
                req.path = format!("{}/messages/count_tokens", p.base_path);
                return Ok(req);
            }
            Counter::VertexClaude => {
                let mut req = ProviderRequest {
                    path: vertex::model_path(p, "anthropic", "count-tokens", "rawPredict")?,
                    headers: p.headers.clone(),
                    remove_headers: Vec::new(),
                    body: Some(native_body(
                        call.envelope,
                        &[],
                        Some(model),
                        ANTHROPIC_VERTEX_VERSION,
                        None,
                    )),
                };
                vertex::with_vertex_auth(p, &mut req);
                return Ok(req);
            }
            Counter::Pivot(n) => n,
        };
        // The Messages request as the chat pivot, then the provider's own translation.
        let pivot = to_openai_request(call.raw, Target::of(p, model))?;
        let mut env = parse_chat_envelope(&pivot)?;
        env.stream = false;
        let inner = ChatCall {
            raw: &pivot,
            envelope: &env,
            provider: p,
            upstream_model: model,
            now_unix: call.now_unix,
            want_stream_usage: false,
        };
        let mut req = match native {
            Native::Gemini => {
                let mut req = GeminiChat::default().request(&inner)?;
                let generate = req.body.take().unwrap_or_default();
                req.body = Some(gemini_body(&generate, model)?);
                req.path = format!(
                    "{}/models/{}:countTokens",
                    p.base_path,
                    model_segment(model)
                );
                req
            }
            Native::VertexGemini => {
                let mut req = VertexChat::default().request(&inner)?;
                let generate = req.body.take().unwrap_or_default();
                req.body = Some(pick(&generate, VERTEX_FIELDS, &[])?);
                req.path = vertex::model_path(p, "google", model, "countTokens")?;
                req
            }
            Native::Bedrock => {
                let chat = ChatRequest::from_envelope(&env)?;
                let converse = bedrock::converse_body(&chat, model)?;
                let body = pick(&converse, CONVERSE_FIELDS, &["converse", "input"])?;
                bedrock::signed(
                    p,
                    bedrock::model_path(p, model, "count-tokens"),
                    body,
                    None,
                    call.now_unix,
                )?
            }
        };
        // As for Messages through the pivot: the client's Anthropic headers stay here.
        for h in ["x-api-key", "anthropic-version", "anthropic-beta"] {
            if !req.remove_headers.contains(&h) && !req.headers.iter().any(|(k, _)| k == h) {
                req.remove_headers.push(h);
            }
        }
        Ok(req)
    }

    fn response(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        #[derive(Deserialize)]
        struct Anthropic {
            #[serde(rename = "input_tokens")]
            _input_tokens: u64,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Google {
            #[serde(default)]
            total_tokens: u64,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Bedrock {
            input_tokens: u64,
        }
        let who = self.provider.as_str();
        match self.via {
            Counter::Anthropic | Counter::VertexClaude => {
                match serde_json::from_slice::<Anthropic>(body) {
                    Ok(_) => Ok(None),
                    Err(_) => Err(bad_answer(who, "`input_tokens`")),
                }
            }
            Counter::Pivot(Native::Gemini | Native::VertexGemini) => {
                match serde_json::from_slice::<Google>(body) {
                    Ok(g) => Ok(Some(answer_body(g.total_tokens))),
                    Err(_) => Err(bad_answer(who, "a readable `totalTokens`")),
                }
            }
            Counter::Pivot(Native::Bedrock) => match serde_json::from_slice::<Bedrock>(body) {
                Ok(b) => Ok(Some(answer_body(b.input_tokens))),
                Err(_) => Err(bad_answer(who, "`inputTokens`")),
            },
        }
    }

    fn stream_chunk(&mut self, _chunk: &[u8], _end: bool, _out: &mut Vec<u8>) -> bool {
        false
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        match self.via {
            Counter::Anthropic => self.anthropic.error(status, body),
            Counter::VertexClaude => vertex::claude_error(&self.provider, status, body)
                .unwrap_or_else(|| GeminiChat::for_provider(&self.provider).error(status, body)),
            Counter::Pivot(Native::Gemini | Native::VertexGemini) => {
                GeminiChat::for_provider(&self.provider).error(status, body)
            }
            Counter::Pivot(Native::Bedrock) => bedrock::bedrock_error(&self.provider, status, body),
        }
    }

    /// A count uses no tokens: zero usage, so limits charge none (no estimate either).
    fn usage(&self) -> Option<Usage> {
        Some(Usage::default())
    }
}

#[cfg(test)]
mod tests;
