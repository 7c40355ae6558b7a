//! The OpenAI API as clients speak it to the gateway.

pub mod chat;
pub mod envelope;

pub use envelope::{
    check_messages, json_string, parse_chat_envelope, parse_chat_top, parse_embeddings_envelope,
    parse_messages_envelope, ChatEnvelope, Span,
};
