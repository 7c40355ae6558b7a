//! Deterministic mock of the OpenAI Chat Completions, Anthropic Messages and Gemini APIs, used by the
//! LLMux end-to-end tests and benchmarks. See README.md for the endpoints and `x-mock-*` headers.

pub mod anthropic;
pub mod bedrock;
pub mod body;
pub mod cohere;
pub mod config;
pub mod count;
pub mod embed;
pub mod embeddings;
pub mod gemini;
pub mod guardrail;
pub mod mock;
pub mod openai;
pub mod record;
pub mod server;
pub mod vertex;
