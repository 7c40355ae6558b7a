//! The thin Proxy-Wasm glue. Only compiled into the filter; the core never calls the host.

mod map_codec;

#[cfg(target_arch = "wasm32")]
mod filter;
#[cfg(target_arch = "wasm32")]
mod host;
#[cfg(target_arch = "wasm32")]
mod ratelimit;
#[cfg(target_arch = "wasm32")]
mod recovery;
#[cfg(target_arch = "wasm32")]
mod token;
#[cfg(target_arch = "wasm32")]
mod upstream;
