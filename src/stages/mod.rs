//! The request stages: every decision LLMux makes while Envoy holds a request, written against
//! the [`crate::host::Host`] seam so it runs (and is tested) natively. `src/wasm/` only hands the
//! host's callbacks to these types.
//!
//! - [`root::Root`]: configuration, the tick (usage export, token fetches); [`vm::Vm`]: per-VM
//!   state and the [`vm::Registry`] of planned requests.
//! - [`request::Request`]: the downstream stage, one per client request.
//! - [`attempt::Attempt`]: the upstream stage, one per attempt on the failover path.
//! - [`cache`]: the response cache's lookup, replay and store on the request path.
//! - [`body_watch`]: notices an Envoy that withholds request bodies (the filter flag missing).
//! - [`admission`]: limits admitted and charged; [`token`]: Vertex access tokens; [`recovery`]:
//!   mid-stream recovery; [`apply`]: a decision applied to the request or response.

pub mod admission;
pub mod apply;
pub mod attempt;
pub mod body_watch;
pub mod cache;
pub mod guard;
pub mod recovery;
pub mod request;
pub mod root;
pub mod token;
pub mod vm;

#[cfg(test)]
mod tests;
