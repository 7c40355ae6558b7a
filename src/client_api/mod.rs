//! The APIs clients speak to LLMux: the OpenAI API ([`openai`]: chat completions, embeddings
//! and the pass-through endpoints' envelopes; [`responses`]: the Responses API) and the
//! Anthropic Messages API ([`anthropic`]). Every provider translator pivots on the OpenAI chat
//! shape; an Anthropic or Responses client's request is turned into it and the answer turned
//! back ([`pivot`]). [`ClientApi`] says which error shape a request gets (Responses errors are OpenAI's).

pub mod anthropic;
pub mod headers;
pub mod openai;
pub mod pivot;
pub mod responses;

use crate::error::GatewayError;

/// The API a client request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientApi {
    /// OpenAI (`/v1/chat/completions`, `/v1/embeddings`, the other `/v1/...` endpoints).
    #[default]
    OpenAi,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
}

impl ClientApi {
    /// An error's JSON body in this API's shape.
    pub fn error_body(self, e: &GatewayError) -> Vec<u8> {
        match self {
            ClientApi::OpenAi => e.body(),
            ClientApi::Anthropic => anthropic::error_body(e),
        }
    }
}
