//! Anthropic Messages clients → Claude on Vertex AI and on Amazon Bedrock, in Anthropic's own
//! Messages body (issue 16 item 3). The OpenAI chat pivot has no place for thinking blocks and
//! their signatures, `redacted_thinking`, `cache_control` breakpoints or images in tool results,
//! and Claude on those two clouds takes the Messages body as it is; so a `/v1/messages` request
//! whose deployment is Claude there goes natively, every value byte for byte (written from the
//! envelope's raw fields, never re-serialised), and Anthropic's answer comes back as it is.
//!
//! - Vertex AI (publisher `anthropic`, see [`crate::providers::vertex`]):
//!   `POST {base_path}/projects/{p}/locations/{l}/publishers/anthropic/models/{m}:rawPredict`
//!   (`:streamRawPredict` when `"stream": true`), body = the client's without `model`, with
//!   `"anthropic_version": "vertex-2023-10-16"`
//!   (https://cloud.google.com/vertex-ai/generative-ai/docs/partner-models/claude/use-claude;
//!   docs/providers.md §5.3). `anthropic-beta` stays a header there (the Anthropic SDK's Vertex
//!   client leaves it so), governed like any client header (`client_headers`, `anthropic_beta`).
//!   The answer (JSON or SSE) is Anthropic's: passed through, its usage read. Auth as every Vertex
//!   request (static bearer token, or the service-account token the glue adds).
//! - Bedrock (model ids containing `anthropic.claude`, inference profiles such as
//!   `us.anthropic.claude-…` included): InvokeModel, `POST /model/{modelId}/invoke`
//!   (`/invoke-with-response-stream` for streams), body = the client's without `model` and
//!   `stream`, with `"anthropic_version": "bedrock-2023-05-31"` and the betas as
//!   `"anthropic_beta": [..]`
//!   (https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-anthropic-claude-messages.html).
//!   The betas are the body's own `anthropic_beta`, else the client's `anthropic-beta` header (as
//!   the Anthropic SDK's Bedrock client does), kept only as far as the provider's
//!   `anthropic_beta` list allows (none without a list). SigV4-signed (or a Bedrock API key)
//!   like every Bedrock request. The plain answer is Anthropic's message JSON (passed through);
//!   the stream is event-stream frames whose `chunk` events carry `{"bytes": "<base64 of one
//!   Anthropic stream event's JSON>"}`
//!   (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModelWithResponseStream.html;
//!   docs/providers.md §6.4, §6.7): each becomes the SSE event `event: <type>\ndata: <json>\n\n`.
//!   An exception frame, a broken frame, or a stream that ends before `message_stop` becomes an
//!   Anthropic `error` event; nothing after it (or after `message_stop`) is read.
//!
//! Errors (non-2xx) are read in the host's shape (Google or Anthropic JSON on Vertex, Bedrock's
//! `{"message"}`) and the gateway answers them in Anthropic's.

use serde::Deserialize;
use std::borrow::Cow;

use crate::aws::eventstream::{Decoder, Message};
use crate::client_api::anthropic::translator::AnthropicPassthrough;
use crate::client_api::headers::allowed_values;
use crate::client_api::openai::ChatEnvelope;
use crate::codec::base64;
use crate::codec::json_text::json_string;
use crate::config::Provider;
use crate::error::{kind_for_status, GatewayError};
use crate::providers::gemini::GeminiChat;
use crate::providers::vertex::{self, Publisher, ANTHROPIC_VERTEX_VERSION};
use crate::providers::{bedrock, ChatCall, ChatTranslator, ProviderKind, ProviderRequest, Usage};

/// `anthropic_version` Claude on Bedrock requires in the body.
pub const ANTHROPIC_BEDROCK_VERSION: &str = "bedrock-2023-05-31";

/// Where a Claude deployment is served in Anthropic's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Vertex,
    Bedrock,
}

impl Host {
    /// `Some` when this deployment is Claude on Vertex AI or on Bedrock.
    pub fn of(p: &Provider, upstream_model: &str) -> Option<Host> {
        match p.kind {
            ProviderKind::Vertex => p
                .vertex
                .as_ref()
                .filter(|v| v.publisher_for(upstream_model) == Publisher::Anthropic)
                .map(|_| Host::Vertex),
            ProviderKind::Bedrock if is_bedrock_claude(upstream_model) => Some(Host::Bedrock),
            _ => None,
        }
    }
}

/// A Bedrock model id (base model, inference profile or ARN naming one) of Anthropic Claude.
pub fn is_bedrock_claude(model: &str) -> bool {
    model.contains("anthropic.claude")
}

/// The client's Messages body as Claude on Vertex or Bedrock takes it, written from the
/// envelope's raw fields (each value byte for byte, in the client's order): `anthropic_version`
/// first, then every field but the `drop`ped ones (and a client's own `anthropic_version`), with
/// `model` replaced when given and `anthropic_beta` replaced when `betas` is given (left out when
/// empty). A field the body holds twice is written once, its last value (as serde_json reads it).
pub(crate) fn native_body(
    env: &ChatEnvelope<'_>,
    drop: &[&str],
    model: Option<&str>,
    version: &str,
    betas: Option<&[String]>,
) -> Vec<u8> {
    let size: usize = env
        .fields
        .iter()
        .map(|(k, v)| k.len() + v.get().len() + 4)
        .sum();
    let mut out = Vec::with_capacity(size + 64);
    out.extend_from_slice(b"{\"anthropic_version\":");
    out.extend_from_slice(json_string(version).as_bytes());
    let push = |out: &mut Vec<u8>, key: &str, value: &[u8]| {
        out.push(b',');
        out.extend_from_slice(json_string(key).as_bytes());
        out.push(b':');
        out.extend_from_slice(value);
    };
    for (i, (k, v)) in env.fields.iter().enumerate() {
        let k = k.as_ref();
        let replaced = k == "anthropic_version"
            || (k == "model" && model.is_some())
            || (k == "anthropic_beta" && betas.is_some());
        let later = env.fields[i + 1..].iter().any(|(k2, _)| k2 == k);
        if replaced || later || drop.contains(&k) {
            continue;
        }
        push(&mut out, k, v.get().as_bytes());
    }
    if let Some(m) = model {
        push(&mut out, "model", json_string(m).as_bytes());
    }
    if let Some(b) = betas.filter(|b| !b.is_empty()) {
        let list = serde_json::to_vec(b).unwrap_or_else(|_| b"[]".to_vec());
        push(&mut out, "anthropic_beta", &list);
    }
    out.push(b'}');
    out
}

/// The betas Claude on Bedrock gets: the body's `anthropic_beta` (a list, or a comma-separated
/// string), else the `anthropic-beta` header, kept as far as the provider's `anthropic_beta`
/// list allows (none without a list).
fn bedrock_betas(env: &ChatEnvelope<'_>, p: &Provider) -> Result<Vec<String>, GatewayError> {
    let asked = match env.field("anthropic_beta") {
        Some(raw) => match serde_json::from_str::<serde_json::Value>(raw.get()) {
            Ok(serde_json::Value::String(s)) => s,
            Ok(serde_json::Value::Array(items)) => {
                let mut names = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        serde_json::Value::String(s) => names.push(s),
                        _ => return Err(bad_betas()),
                    }
                }
                names.join(",")
            }
            _ => return Err(bad_betas()),
        },
        None => env.anthropic_beta.clone().unwrap_or_default(),
    };
    let Some(list) = p.anthropic_beta.as_deref() else {
        return Ok(Vec::new());
    };
    Ok(allowed_values(&asked, &[list])
        .split(',')
        .filter(|b| !b.is_empty())
        .map(str::to_string)
        .collect())
}

fn bad_betas() -> GatewayError {
    GatewayError::invalid_param(
        "anthropic_beta",
        "`anthropic_beta` must be a list of beta names",
    )
}

/// One Messages request to Claude on Vertex AI or Bedrock.
pub struct NativeClaude {
    host: Host,
    provider: String,
    /// Reads the usage of Anthropic's answer (and its errors on Vertex).
    reader: AnthropicPassthrough,
    /// Bedrock streams: the event-stream frames.
    decoder: Decoder,
    /// Bedrock streams: `message_stop` went out; nothing more is read.
    stopped: bool,
    /// Bedrock streams: an `error` event went out; nothing more is read.
    failed: bool,
}

impl NativeClaude {
    pub fn new(host: Host) -> Self {
        NativeClaude {
            host,
            provider: String::new(),
            reader: AnthropicPassthrough::default(),
            decoder: Decoder::default(),
            stopped: false,
            failed: false,
        }
    }

    /// The Anthropic `error` event for `e`; nothing after it is read.
    fn fail(&mut self, e: &GatewayError, out: &mut Vec<u8>) {
        self.failed = true;
        out.extend_from_slice(b"event: error\ndata: ");
        out.extend_from_slice(&super::error_body(e));
        out.extend_from_slice(b"\n\n");
    }

    fn stream_failure(&self, what: &str) -> GatewayError {
        GatewayError::new(502, "api_error", format!("{}: {what}", self.provider))
            .with_code("upstream_stream_error")
    }

    /// One decoded Bedrock frame → SSE for the client.
    fn frame(&mut self, m: Message, out: &mut Vec<u8>) {
        match m.message_type.as_str() {
            "event" if m.event_type == "chunk" => self.chunk(&m.payload, out),
            "event" => {} // no other event of InvokeModelWithResponseStream carries an answer
            "exception" => {
                let text = serde_json::from_slice::<serde_json::Value>(&m.payload)
                    .ok()
                    .and_then(|v| {
                        v.get("message")
                            .and_then(serde_json::Value::as_str)
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| String::from_utf8_lossy(&m.payload).into_owned());
                let status = bedrock::exception_status(&m.exception_type);
                let e = GatewayError::new(
                    status,
                    kind_for_status(status),
                    format!(
                        "{} stream failed: {}: {text}",
                        self.provider, m.exception_type
                    ),
                )
                .with_code(&m.exception_type);
                self.fail(&e, out);
            }
            _ => {
                let e = self.stream_failure(&format!(
                    "stream failed: {}: {}",
                    m.error_code, m.error_message
                ));
                self.fail(&e, out);
            }
        }
    }

    /// A `chunk` payload `{"bytes": "<base64>"}` → `event: <type>\ndata: <json>\n\n`.
    fn chunk(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        #[derive(Deserialize)]
        struct Chunk<'a> {
            #[serde(borrow)]
            bytes: Cow<'a, str>,
        }
        #[derive(Deserialize)]
        struct Kind<'a> {
            #[serde(rename = "type", borrow)]
            kind: Cow<'a, str>,
        }
        let event = serde_json::from_slice::<Chunk<'_>>(payload)
            .ok()
            .and_then(|c| base64::decode_standard(c.bytes.as_bytes()));
        let Some(mut json) = event else {
            let e = self.stream_failure("a stream chunk without readable `bytes`");
            return self.fail(&e, out);
        };
        if memchr::memchr2(b'\n', b'\r', &json).is_some() {
            // Pretty-printed JSON: one line, for one SSE `data:` field.
            match serde_json::from_slice::<serde_json::Value>(&json) {
                Ok(v) => json = v.to_string().into_bytes(),
                Err(_) => json.clear(),
            }
        }
        let kind = match serde_json::from_slice::<Kind<'_>>(&json) {
            Ok(k) if !k.kind.is_empty() && k.kind.bytes().all(|b| b.is_ascii_graphic()) => {
                k.kind.into_owned()
            }
            _ => {
                let e = self.stream_failure("a stream event that is not Anthropic's");
                return self.fail(&e, out);
            }
        };
        let start = out.len();
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(&json);
        out.extend_from_slice(b"\n\n");
        let mut ignored = Vec::new();
        self.reader.stream_chunk(&out[start..], false, &mut ignored);
        match kind.as_str() {
            "message_stop" => self.stopped = true,
            "error" => self.failed = true,
            _ => {}
        }
    }
}

impl ChatTranslator for NativeClaude {
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        let p = call.provider;
        let env = call.envelope;
        let model = call.upstream_model;
        self.provider = p.name.clone();
        self.reader = AnthropicPassthrough::reader(&p.name, env.stream);
        match self.host {
            Host::Vertex => {
                let method = if env.stream {
                    "streamRawPredict"
                } else {
                    "rawPredict"
                };
                let mut req = ProviderRequest {
                    path: vertex::model_path(p, "anthropic", model, method)?,
                    headers: p.headers.clone(),
                    remove_headers: Vec::new(),
                    body: Some(native_body(
                        env,
                        &["model"],
                        None,
                        ANTHROPIC_VERTEX_VERSION,
                        None,
                    )),
                };
                vertex::with_vertex_auth(p, &mut req);
                Ok(req)
            }
            Host::Bedrock => {
                let betas = bedrock_betas(env, p)?;
                let body = native_body(
                    env,
                    &["model", "stream"],
                    None,
                    ANTHROPIC_BEDROCK_VERSION,
                    Some(&betas),
                );
                let op = if env.stream {
                    "invoke-with-response-stream"
                } else {
                    "invoke"
                };
                bedrock::signed(
                    p,
                    bedrock::model_path(p, model, op),
                    body,
                    Some("application/json"),
                    call.now_unix,
                )
            }
        }
    }

    fn response(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        self.reader.response(body)
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) -> bool {
        if self.host == Host::Vertex {
            return self.reader.stream_chunk(chunk, end_of_stream, out);
        }
        if !self.failed && !self.stopped {
            self.decoder.feed(chunk);
        }
        while !self.failed && !self.stopped {
            match self.decoder.next_message() {
                None => break,
                Some(Ok(m)) => self.frame(m, out),
                Some(Err(e)) => {
                    let e = self.stream_failure(&e.to_string());
                    self.fail(&e, out);
                }
            }
        }
        if end_of_stream && !self.failed && !self.stopped {
            let what = if self.decoder.pending() > 0 {
                "stream ended inside an event-stream message"
            } else {
                "stream ended before message_stop"
            };
            let e = self.stream_failure(what);
            self.fail(&e, out);
        }
        true
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        match self.host {
            Host::Vertex => vertex::claude_error(&self.provider, status, body)
                .unwrap_or_else(|| GeminiChat::for_provider(&self.provider).error(status, body)),
            Host::Bedrock => bedrock::bedrock_error(&self.provider, status, body),
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.reader.usage()
    }
}

#[cfg(test)]
mod tests;
