//! Anthropic Messages clients (`POST /v1/messages`): straight through to Anthropic, in
//! Anthropic's own body to Claude on Vertex AI and on Bedrock ([`super::native`]), or through
//! the OpenAI pivot to every other provider (see [`super`]).

use serde::Deserialize;

use super::{native, StreamToMessages};
use crate::client_api::anthropic as anthropic_api;
use crate::client_api::pivot::{ChatPivot, ViaChat};
use crate::codec::json_text::json_string;
use crate::codec::sse::SseParser;
use crate::config::Provider;
use crate::error::GatewayError;
use crate::providers::{ChatCall, ChatTranslator, ProviderKind, ProviderRequest, Usage};

/// A fresh translator for one Messages request to this deployment (provider and the model
/// name it knows).
pub fn translator(p: &Provider, upstream_model: &str) -> Box<dyn ChatTranslator> {
    if let Some(host) = native::Host::of(p, upstream_model) {
        return Box::new(native::NativeClaude::new(host));
    }
    match p.kind {
        ProviderKind::Anthropic => Box::new(AnthropicPassthrough::default()),
        other => Box::new(ViaChat::new(
            other.chat_translator(),
            MessagesPivot::default(),
        )),
    }
}

/// The Messages side of the OpenAI chat pivot ([`ViaChat`]).
#[derive(Default)]
pub struct MessagesPivot {
    stream: StreamToMessages,
}

impl ChatPivot for MessagesPivot {
    fn request_to_chat(&mut self, call: &ChatCall<'_>) -> Result<Vec<u8>, GatewayError> {
        let target = anthropic_api::Target::of(call.provider, call.upstream_model);
        anthropic_api::to_openai_request(call.raw, target)
    }

    fn answer_from_chat(&mut self, chat: &[u8]) -> Result<Vec<u8>, GatewayError> {
        anthropic_api::openai_response_to_message(chat)
    }

    fn feed(&mut self, chat_sse: &[u8], end_of_stream: bool, out: &mut Vec<u8>) {
        self.stream.feed(chat_sse, end_of_stream, out);
    }

    /// Anthropic SDKs send their key as x-api-key; it is the client's, never the provider's.
    /// `anthropic-beta` names Anthropic's features: never sent to another provider, even when
    /// `client_headers` lets it through (to Anthropic deployments).
    fn remove_headers(&self) -> &'static [&'static str] {
        &["x-api-key", "anthropic-version", "anthropic-beta"]
    }
}

/// Messages client → Anthropic: the body goes through untouched but for the model name.
#[derive(Default)]
pub struct AnthropicPassthrough {
    provider: String,
    usage: Option<Usage>,
    sse: Option<SseParser>,
}

#[derive(Deserialize, Default)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl AnthropicPassthrough {
    /// Reads the usage (and the errors) of an Anthropic answer whose request was built
    /// elsewhere: Claude on Vertex AI and on Bedrock ([`super::native`]).
    pub(crate) fn reader(provider: &str, stream: bool) -> Self {
        AnthropicPassthrough {
            provider: provider.to_string(),
            usage: None,
            sse: stream.then(SseParser::new),
        }
    }

    fn add(&mut self, u: &AnthropicUsage) {
        let cur = self.usage.get_or_insert_with(Usage::default);
        let read = u.cache_read_input_tokens;
        let created = u.cache_creation_input_tokens;
        if let Some(i) = u.input_tokens {
            cur.prompt_tokens = i
                .saturating_add(read.unwrap_or(cur.cached_tokens))
                .saturating_add(created.unwrap_or(cur.cache_creation_tokens));
        }
        if let Some(r) = read {
            cur.cached_tokens = r;
        }
        if let Some(c) = created {
            cur.cache_creation_tokens = c;
        }
        if let Some(o) = u.output_tokens {
            cur.completion_tokens = o;
        }
    }
}

impl ChatTranslator for AnthropicPassthrough {
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        let p = call.provider;
        let env = call.envelope;
        self.provider = p.name.clone();
        if env.stream {
            self.sse = Some(SseParser::new());
        }
        let body = (env.model != call.upstream_model).then(|| {
            let mut out = Vec::with_capacity(call.raw.len() + 16);
            out.extend_from_slice(&call.raw[..env.model_span.start]);
            out.extend_from_slice(json_string(call.upstream_model).as_bytes());
            out.extend_from_slice(&call.raw[env.model_span.end..]);
            out
        });
        let mut headers = vec![("anthropic-version".to_string(), p.anthropic_version.clone())];
        let mut remove_headers = vec!["authorization"];
        match &p.api_key {
            Some(key) => headers.push(("x-api-key".to_string(), key.clone())),
            None => remove_headers.push("x-api-key"),
        }
        headers.extend(p.headers.iter().cloned());
        Ok(ProviderRequest {
            path: format!("{}/messages", p.base_path),
            headers,
            remove_headers,
            body,
        })
    }

    fn response(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        #[derive(Deserialize)]
        struct WithUsage {
            usage: Option<AnthropicUsage>,
        }
        if let Ok(WithUsage { usage: Some(u) }) = serde_json::from_slice(body) {
            self.add(&u);
        }
        Ok(None)
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool, _out: &mut Vec<u8>) -> bool {
        #[derive(Deserialize)]
        struct Event {
            message: Option<Msg>,
            usage: Option<AnthropicUsage>,
        }
        #[derive(Deserialize)]
        struct Msg {
            usage: Option<AnthropicUsage>,
        }
        let Some(mut sse) = self.sse.take() else {
            return false;
        };
        let mut seen = Vec::new();
        let mut on_event = |e: crate::codec::sse::SseEvent| {
            if memchr::memmem::find(e.data, b"\"usage\"").is_some() {
                if let Ok(ev) = serde_json::from_slice::<Event>(e.data) {
                    if let Some(u) = ev.usage.or(ev.message.and_then(|m| m.usage)) {
                        seen.push(u);
                    }
                }
            }
        };
        sse.feed(chunk, &mut on_event);
        if end_of_stream {
            sse.finish(&mut on_event);
        }
        for u in &seen {
            self.add(u);
        }
        self.sse = Some(sse);
        false
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        #[derive(Deserialize)]
        struct Envelope {
            error: Option<Body>,
        }
        #[derive(Deserialize)]
        struct Body {
            #[serde(rename = "type")]
            kind: Option<String>,
            message: Option<String>,
        }
        match serde_json::from_slice::<Envelope>(body)
            .ok()
            .and_then(|e| e.error)
        {
            Some(b) => crate::providers::provider_error(
                &self.provider,
                status,
                b.message.as_deref().unwrap_or(""),
                b.kind.as_deref(),
            ),
            None => crate::providers::provider_error(
                &self.provider,
                status,
                &String::from_utf8_lossy(&body[..body.len().min(512)]),
                None,
            ),
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}
