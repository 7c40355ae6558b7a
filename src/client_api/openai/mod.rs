//! The OpenAI API as clients speak it to the gateway: the request envelope every endpoint is
//! routed by ([`envelope`]) and the chat-completions types every provider translator pivots on
//! ([`chat`]).

pub mod chat;
pub mod envelope;

pub use envelope::{
    check_messages, parse_chat_envelope, parse_chat_top, parse_embeddings_envelope, ChatEnvelope,
    Span,
};
