//! The request stages: every decision LLMux makes while Envoy holds a request, written against
//! the [`crate::host::Host`] seam so it runs (and is tested) natively. `src/wasm/` only hands the
//! host's callbacks to these types.
//!
//! - [`vm::Root`] and [`vm::Vm`]: configuration, per-VM state, the tick (usage export, token
//!   fetches).
//! - [`request::Request`]: the downstream stage, one per client request.
//! - [`attempt::Attempt`]: the upstream stage, one per attempt on the failover path.
//! - [`admission`]: limits admitted and charged; [`token`]: Vertex access tokens; [`recovery`]:
//!   mid-stream recovery; [`forward`]: applying a forward decision to the request.

pub mod admission;
pub mod attempt;
pub mod forward;
pub mod recovery;
pub mod request;
pub mod token;
pub mod vm;

#[cfg(test)]
mod tests;
