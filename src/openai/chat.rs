//! Typed OpenAI chat-completions request and response shapes, for translators that rebuild the
//! body for another provider's API.
