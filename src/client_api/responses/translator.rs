//! Responses API clients (`POST /v1/responses`): straight through to OpenAI-protocol
//! providers, or through the OpenAI chat pivot to every other provider (see [`super`]).

use serde_json::{Map, Value};

use super::StreamToResponses;
use crate::client_api::pivot::{ChatPivot, ViaChat};
use crate::client_api::responses as responses_api;
use crate::error::GatewayError;
use crate::providers::openai::OpenAiPassthrough;
use crate::providers::{ChatCall, ChatTranslator, ProviderKind};

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
    Box::new(ViaChat::new(
        kind.chat_translator(),
        ResponsesPivot::default(),
    ))
}

/// The Responses side of the OpenAI chat pivot ([`ViaChat`]).
#[derive(Default)]
pub struct ResponsesPivot {
    /// The request fields the `response` object repeats.
    echo: Map<String, Value>,
    now_unix: u64,
    stream: StreamToResponses,
}

impl ChatPivot for ResponsesPivot {
    fn request_to_chat(&mut self, call: &ChatCall<'_>) -> Result<Vec<u8>, GatewayError> {
        let p = call.provider;
        let served_by = format!(
            "model `{}` is served by provider `{}` ({})",
            call.envelope.model, p.name, p.type_name
        );
        let chat = responses_api::to_chat_request(call.raw, &served_by, p.drop_params)?;
        self.now_unix = call.now_unix;
        self.stream = StreamToResponses::new(chat.echo.clone(), call.now_unix);
        self.echo = chat.echo;
        Ok(chat.body)
    }

    fn answer_from_chat(&mut self, chat: &[u8]) -> Result<Vec<u8>, GatewayError> {
        responses_api::chat_to_response(chat, &self.echo, self.now_unix)
    }

    fn feed(&mut self, chat_sse: &[u8], end_of_stream: bool, out: &mut Vec<u8>) {
        self.stream.feed(chat_sse, end_of_stream, out);
    }
}
