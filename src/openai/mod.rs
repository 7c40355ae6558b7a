//! The OpenAI API as clients speak it to the gateway.

pub mod chat;
pub mod envelope;

pub use envelope::{
    json_string, parse_chat_envelope, parse_embeddings_envelope, parse_messages_envelope,
    ChatEnvelope, Span,
};
