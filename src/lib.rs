//! LLMux: an LLM gateway that runs inside Envoy as a Proxy-Wasm filter.
//!
//! Everything that decides or translates is plain Rust with no proxy-wasm call: translation
//! ([`gateway`], [`providers`], [`config`], [`sse`]) and the request stages ([`stages`]), which
//! reach Envoy only through the [`host::Host`] trait. The [`wasm`] module is the thin glue: the
//! Proxy-Wasm contexts and `impl Host` over the host calls.

pub mod auth;
pub mod aws;
pub mod cache;
pub mod client_api;
pub mod codec;
pub mod config;
pub mod error;
pub mod gateway;
pub mod gcp;
pub mod guard;
pub mod host;
pub mod limits;
pub mod observe;
pub mod pricing;
pub mod providers;
pub mod routing;
pub mod stages;
pub mod usage;

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(feature = "wasm-filter")]
pub mod wasm;
