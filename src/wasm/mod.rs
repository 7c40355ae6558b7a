//! The thin Proxy-Wasm glue: the contexts that hand Envoy's callbacks to [`crate::stages`], and
//! [`host::WasmHost`], the core's [`crate::host::Host`] over the host calls. Only compiled into
//! the filter.

#[cfg(target_arch = "wasm32")]
mod contexts;
#[cfg(target_arch = "wasm32")]
mod host;
