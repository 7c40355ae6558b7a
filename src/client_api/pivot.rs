//! The OpenAI chat pivot, once, for the client APIs that are not chat completions. Every
//! provider translator speaks OpenAI chat on its client side ([`ChatTranslator`]); an Anthropic
//! Messages or a Responses client reaches a provider without its own API by turning its request
//! into a chat request, letting the provider's translator do the rest, and turning the chat
//! answer (and the chat SSE stream) back. [`ViaChat`] does that plumbing; each client API gives
//! a [`ChatPivot`] with its own conversions.

use crate::client_api::openai::parse_chat_envelope;
use crate::error::GatewayError;
use crate::providers::{ChatCall, ChatTranslator, ProviderRequest, Usage};

/// A whole OpenAI chat answer, parsed, with its first choice checked present (read it as
/// `v["choices"][0]`); 502 when the provider's answer is not one.
pub fn parse_chat_answer(body: &[u8]) -> Result<serde_json::Value, GatewayError> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        GatewayError::new(
            502,
            "api_error",
            format!("provider answer is not JSON: {e}"),
        )
    })?;
    if v.pointer("/choices/0").is_none() {
        return Err(GatewayError::new(
            502,
            "api_error",
            "provider answer has no choices",
        ));
    }
    Ok(v)
}

/// One client API's side of the pivot, for one request.
pub trait ChatPivot {
    /// The client's request (`call.raw`) as an OpenAI chat request body.
    fn request_to_chat(&mut self, call: &ChatCall<'_>) -> Result<Vec<u8>, GatewayError>;
    /// A whole OpenAI chat answer as this API's answer.
    fn answer_from_chat(&mut self, chat: &[u8]) -> Result<Vec<u8>, GatewayError>;
    /// OpenAI chat SSE bytes in, this API's stream out.
    fn feed(&mut self, chat_sse: &[u8], end_of_stream: bool, out: &mut Vec<u8>);
    /// Client headers of this API that must not reach a provider of another protocol.
    fn remove_headers(&self) -> &'static [&'static str] {
        &[]
    }
}

/// A client API's request → OpenAI chat → the provider's translator, and back.
pub struct ViaChat<P: ChatPivot> {
    inner: Box<dyn ChatTranslator>,
    pivot: P,
}

impl<P: ChatPivot> ViaChat<P> {
    pub fn new(inner: Box<dyn ChatTranslator>, pivot: P) -> Self {
        ViaChat { inner, pivot }
    }
}

impl<P: ChatPivot> ChatTranslator for ViaChat<P> {
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        let body = self.pivot.request_to_chat(call)?;
        let env = parse_chat_envelope(&body)?;
        let mut req = self.inner.request(&ChatCall {
            raw: &body,
            envelope: &env,
            provider: call.provider,
            upstream_model: call.upstream_model,
            now_unix: call.now_unix,
            // The client API's stream ends with usage whatever the client asked of chat.
            want_stream_usage: true,
        })?;
        if req.body.is_none() {
            req.body = Some(body);
        }
        req.remove_headers.extend(self.pivot.remove_headers());
        Ok(req)
    }

    fn response(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        let chat = self.inner.response(body)?;
        self.pivot
            .answer_from_chat(chat.as_deref().unwrap_or(body))
            .map(Some)
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) -> bool {
        let mut chat = Vec::new();
        let replaced = self.inner.stream_chunk(chunk, end_of_stream, &mut chat);
        self.pivot
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
