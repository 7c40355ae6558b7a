//! Responses API clients (`POST /v1/responses`): straight through to OpenAI-protocol
//! providers, or through the OpenAI chat pivot to every other provider (see [`super`]).

use serde_json::{Map, Value};

use super::StreamToResponses;
use crate::client_api::openai::parse_chat_envelope;
use crate::client_api::responses as responses_api;
use crate::error::GatewayError;
use crate::providers::openai::OpenAiPassthrough;
use crate::providers::{ChatCall, ChatTranslator, ProviderKind, ProviderRequest, Usage};

/// Whether a Responses request to this kind of provider goes as it is (and its answer comes
/// back untouched): OpenAI's protocol has the Responses API itself.
pub fn passes_through(kind: ProviderKind) -> bool {
    kind == ProviderKind::OpenAi
}

/// A fresh translator for one Responses request to this kind of provider.
pub fn translator(kind: ProviderKind) -> Box<dyn ChatTranslator> {
    if passes_through(kind) {
        return Box::new(OpenAiPassthrough::new("responses"));
    }
    Box::new(ViaChat {
        inner: kind.chat_translator(),
        echo: Map::new(),
        now_unix: 0,
        stream: StreamToResponses::default(),
    })
}

/// Responses request → OpenAI chat request → the provider's translator, and back.
pub struct ViaChat {
    inner: Box<dyn ChatTranslator>,
    /// The request fields the `response` object repeats.
    echo: Map<String, Value>,
    now_unix: u64,
    stream: StreamToResponses,
}

impl ChatTranslator for ViaChat {
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        let p = call.provider;
        let served_by = format!(
            "model `{}` is served by provider `{}` ({})",
            call.envelope.model, p.name, p.type_name
        );
        let chat = responses_api::to_chat_request(call.raw, &served_by)?;
        self.now_unix = call.now_unix;
        self.stream = StreamToResponses::new(chat.echo.clone(), call.now_unix);
        self.echo = chat.echo;
        let body = chat.body;
        let env = parse_chat_envelope(&body)?;
        let mut req = self.inner.request(&ChatCall {
            raw: &body,
            envelope: &env,
            provider: p,
            upstream_model: call.upstream_model,
            now_unix: call.now_unix,
            want_stream_usage: true,
        })?;
        if req.body.is_none() {
            req.body = Some(body);
        }
        Ok(req)
    }

    fn response(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        let chat = self.inner.response(body)?;
        responses_api::chat_to_response(chat.as_deref().unwrap_or(body), &self.echo, self.now_unix)
            .map(Some)
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) -> bool {
        let mut chat = Vec::new();
        let replaced = self.inner.stream_chunk(chunk, end_of_stream, &mut chat);
        self.stream
            .feed(if replaced { &chat } else { chunk }, end_of_stream, out);
        true
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        self.inner.error(status, body)
    }

    fn usage(&self) -> Option<Usage> {
        self.inner.usage()
    }
}
