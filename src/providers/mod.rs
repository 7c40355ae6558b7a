//! One translator per (client API, provider API) pair, behind [`ChatTranslator`].
//!
//! A translator lives for one request: it builds the provider request, then turns the provider's
//! answer (whole, chunk by chunk when streamed, or an error) back into the client's API. It never
//! calls the proxy host, so every translator is tested natively.

pub mod anthropic;
pub mod bedrock;
pub mod cohere;
pub mod embeddings;
pub mod gemini;
pub mod kind;
pub mod openai;
pub(crate) mod openai_chunks;
pub mod presets;
pub mod vertex;

use crate::client_api::openai::ChatEnvelope;
use crate::config::Provider;
use crate::error::{kind_for_status, GatewayError};

pub use kind::ProviderKind;

/// The translators of each kind of provider.
impl ProviderKind {
    /// A fresh translator for one `/v1/embeddings` request, if this kind of provider has them.
    pub fn embeddings_translator(self) -> Option<Box<dyn ChatTranslator>> {
        match self {
            Self::OpenAi => Some(Box::new(openai::OpenAiChat::embeddings())),
            Self::Bedrock => Some(Box::new(bedrock::BedrockEmbeddings::default())),
            Self::Gemini => Some(Box::new(embeddings::NativeEmbeddings::new(
                embeddings::Target::Gemini,
            ))),
            Self::Cohere => Some(Box::new(embeddings::NativeEmbeddings::new(
                embeddings::Target::Cohere,
            ))),
            Self::Vertex => Some(Box::new(embeddings::NativeEmbeddings::new(
                embeddings::Target::Vertex,
            ))),
            Self::Anthropic => None,
        }
    }

    /// The gateway checks the chat messages' shape and roles before this provider's translator
    /// runs. Not for OpenAI's protocol (the messages go as they are; the provider answers bad
    /// ones itself) nor for the translators that parse every message anyway (`ChatRequest`,
    /// which reports the same errors), so a body is not read once more just to check it.
    pub fn needs_message_check(self) -> bool {
        matches!(self, Self::Cohere)
    }

    /// A fresh translator for one chat-completions request to this kind of provider.
    pub fn chat_translator(self) -> Box<dyn ChatTranslator> {
        match self {
            Self::OpenAi => Box::new(openai::OpenAiChat::default()),
            Self::Anthropic => Box::new(anthropic::AnthropicChat::default()),
            Self::Cohere => Box::new(cohere::CohereChat::default()),
            Self::Gemini => Box::new(gemini::GeminiChat::default()),
            Self::Bedrock => Box::new(bedrock::BedrockChat::default()),
            Self::Vertex => Box::new(vertex::VertexChat::default()),
        }
    }
}

/// What a translator is given to build the provider request.
pub struct ChatCall<'a> {
    /// The client's body exactly as received.
    pub raw: &'a [u8],
    /// The fields the gateway already parsed from it.
    pub envelope: &'a ChatEnvelope<'a>,
    pub provider: &'a Provider,
    /// The model name the provider knows.
    pub upstream_model: &'a str,
    /// Unix seconds, for `created`.
    pub now_unix: u64,
    /// The gateway wants token usage of streams (config `stream_usage`).
    pub want_stream_usage: bool,
}

/// The request to send upstream. Headers listed here are set (replacing any the client sent).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProviderRequest {
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Client headers to remove (e.g. the client's `authorization` when the provider uses `x-api-key`).
    pub remove_headers: Vec<&'static str>,
    /// `None` sends the client's body unchanged.
    pub body: Option<Vec<u8>>,
}

pub use crate::usage::Usage;

pub trait ChatTranslator {
    /// Builds the provider request. Errors are the client's fault (400) or the config's.
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError>;

    /// A whole 2xx provider body → the client's body. `Ok(None)` forwards it unchanged.
    fn response(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError>;

    /// One chunk of a 2xx streamed provider body. Appends what the client gets to `out` and returns
    /// `true`, or returns `false` to forward the chunk unchanged. Must never lose or mangle an event
    /// cut across chunks; at `end_of_stream` it flushes and closes the client's stream properly.
    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) -> bool;

    /// A non-2xx provider answer → the error the client gets.
    fn error(&self, status: u16, body: &[u8]) -> GatewayError;

    /// Token usage seen in the provider's answer so far.
    fn usage(&self) -> Option<Usage>;

    /// A 2xx non-streamed answer goes to the client unchanged and its usage sits in the last
    /// [`RESPONSE_TAIL_BYTES`] bytes: the answer is then forwarded as it arrives (not held), and
    /// [`ChatTranslator::response`] is given only that tail.
    fn response_passes_through(&self) -> bool {
        false
    }
}

/// How much of a passed-through answer's end is kept to read its usage.
pub const RESPONSE_TAIL_BYTES: usize = 4096;

/// The client status for a provider status: statuses OpenAI clients do not know are mapped
/// (Anthropic's 529 "overloaded" becomes 503, which every OpenAI SDK retries).
pub fn client_status(provider_status: u16) -> u16 {
    match provider_status {
        529 => 503,
        s if (400..600).contains(&s) => s,
        _ => 502,
    }
}

/// A provider error as the client sees it: mapped status, OpenAI type, message naming the provider.
pub fn provider_error(
    provider: &str,
    status: u16,
    message: &str,
    code: Option<&str>,
) -> GatewayError {
    let client = client_status(status);
    let mut e = GatewayError::new(
        client,
        kind_for_status(client),
        format!("{provider} returned {status}: {message}"),
    );
    e.code = code.map(str::to_string);
    e
}
