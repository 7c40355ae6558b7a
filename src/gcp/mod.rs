//! Google Cloud authentication for Vertex AI: service-account OAuth2 tokens ([`auth`]) signed
//! with RS256 ([`rs256`]); the counterpart of AWS signing in [`crate::aws`] for Bedrock.

pub mod auth;
pub mod rs256;
