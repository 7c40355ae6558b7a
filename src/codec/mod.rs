//! The byte formats LLMux reads and writes that belong to no one API: server-sent events
//! ([`sse`]), JSON strings written without a per-byte escaping pass ([`json_text`]), base64
//! ([`base64`]) and multipart forms ([`multipart`]). AWS's event-stream framing lives beside
//! AWS signing in [`crate::aws`].

pub mod base64;
pub mod json_text;
pub mod multipart;
pub mod sse;
