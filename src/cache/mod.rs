//! The response cache: answers already given, replayed to a client asking the same (or, for the
//! semantic cache, a close enough) question instead of asking a provider again.
//!
//! [`replay`] turns a client-facing answer (plain JSON or an SSE stream) into one stored
//! canonical form and renders that form back, plain or streamed, in the client's own API.

pub mod replay;
