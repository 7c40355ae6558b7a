//! The seam between LLMux and the proxy that runs it: everything the core needs from Envoy, as
//! one trait. The request stages ([`crate::stages`]) make every decision through a `&dyn Host`;
//! the Proxy-Wasm glue (`src/wasm/`) implements it over the host calls, and [`mem::MemHost`]
//! implements it in memory so that every decision is tested natively (two workers sharing
//! shared data, CAS conflicts, callout answers and time-outs, clients that go away).
//!
//! No proxy-wasm type appears here: another host (an Envoy dynamic module, say) can implement
//! the same trait. Each method is one host call in Envoy (1,200–4,000 instructions): callers
//! count them.

pub mod header_map;
#[cfg(any(test, feature = "test-host"))]
pub mod mem;

pub use crate::observe::MetricType;
use crate::routing::state::StateStore;

/// A non-OK status from the host (Proxy-Wasm's `proxy_status_t` numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

impl HostError {
    /// `NotFound`: the context (e.g. a stream that is gone) or the item does not exist.
    pub const NOT_FOUND: HostError = HostError(1);
    /// `BadArgument`: e.g. an unknown cluster for a callout.
    pub const BAD_ARGUMENT: HostError = HostError(2);
    /// `CasMismatch`: a shared-data write lost a race.
    pub const CAS_MISMATCH: HostError = HostError(8);
    /// `InternalFailure`.
    pub const INTERNAL: HostError = HostError(10);
}

pub type HostResult<T> = Result<T, HostError>;

/// The header maps the core reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderMap {
    Request,
    Response,
    /// The headers of a callout's answer (inside the callout-response callback).
    CallResponse,
}

/// The byte buffers the core reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Body {
    Request,
    Response,
    /// A callout's answer body (inside the callout-response callback).
    CallResponse,
    /// A gRPC callout's answer message.
    GrpcResponse,
    /// The filter's configuration (at configure time).
    Configuration,
}

/// What the host does with the stream after a callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    /// Hold the stream (headers or data) until the core resumes it.
    Pause,
}

/// Which direction a paused stream resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// Everything LLMux needs from the proxy. Calls act on the current stream (the one whose
/// callback is running), except where a method says otherwise.
pub trait Host {
    fn now_nanos(&self) -> u64;

    /// The whole header map in Proxy-Wasm's wire format ([`header_map::decode_map`] borrows
    /// from it).
    fn headers(&self, map: HeaderMap) -> HostResult<Vec<u8>>;
    /// One header (`None`: absent), invalid UTF-8 replaced.
    fn header(&self, map: HeaderMap, name: &str) -> HostResult<Option<String>>;
    /// Sets (replaces) a header.
    fn set_header(&self, map: HeaderMap, name: &str, value: &str) -> HostResult<()>;
    fn remove_header(&self, map: HeaderMap, name: &str) -> HostResult<()>;

    /// Up to `max` bytes of a buffer from `start` (`None`: no such buffer).
    fn body(&self, body: Body, start: usize, max: usize) -> HostResult<Option<Vec<u8>>>;
    /// Replaces `size` bytes from `start` of the buffer with `value`.
    fn set_body(&self, body: Body, start: usize, size: usize, value: &[u8]) -> HostResult<()>;

    /// An Envoy attribute such as `["response", "code_details"]`.
    fn property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>>;
    /// Filter state (an access log prints it as `%FILTER_STATE(wasm.NAME:PLAIN)%`).
    fn set_property(&self, name: &str, value: &[u8]) -> HostResult<()>;

    /// Shared data (one space per VM id, shared by all workers): the value and its CAS token.
    fn shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, u32)>;
    /// Sets shared data if its CAS token is still `cas` (0: unconditionally); a lost race is
    /// `Err(HostError::CAS_MISMATCH)`.
    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> HostResult<()>;

    /// Defines a metric (Envoy prefixes its name with `wasmcustom.`); returns its id.
    fn define_metric(&self, kind: MetricType, name: &str) -> HostResult<u32>;
    fn increment_metric(&self, id: u32, offset: u64) -> HostResult<()>;
    /// Sets a gauge, or records a histogram value.
    fn record_metric(&self, id: u32, value: u64) -> HostResult<()>;

    /// Sends an HTTP request to `cluster` without waiting; the answer comes to the calling
    /// context's callout-response callback with the returned token.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u32,
    ) -> HostResult<u32>;
    /// Starts a unary gRPC call; the answer comes to the calling context with the token.
    fn grpc_call(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout_ms: u32,
    ) -> HostResult<u32>;

    /// Answers the current request locally (the host stops calling the filter for it).
    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()>;
    /// Resumes the current (or effective) stream's paused request or response.
    fn resume(&self, direction: Direction) -> HostResult<()>;
    /// Makes the following calls act on stream `id` of this VM; `Err` when it is gone.
    fn set_effective_context(&self, id: u32) -> HostResult<()>;
    /// Calls the root's tick every `ms` milliseconds (0 stops).
    fn set_tick_period_ms(&self, ms: u32) -> HostResult<()>;
    /// Bytes of linear memory the VM has (it only ever grows).
    fn vm_memory_bytes(&self) -> u64;
}

/// The host's shared data as the routing state store.
pub struct SharedData<'a>(pub &'a dyn Host);

impl StateStore for SharedData<'_> {
    fn load(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match self.0.shared_data(key) {
            Ok((Some(v), cas)) => Some((v, cas)),
            _ => None,
        }
    }

    fn store(&self, key: &str, value: &[u8], cas: u32) -> Result<(), bool> {
        self.0
            .set_shared_data(key, value, cas)
            .map_err(|e| e == HostError::CAS_MISMATCH)
    }
}

/// A header's value as a status code (`None`: absent or not a number).
pub fn status_of(host: &dyn Host, map: HeaderMap) -> Option<u16> {
    host.header(map, ":status")
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u16>().ok())
}

/// Reads a whole buffer; a failure is logged and reads as empty.
pub fn read_body(host: &dyn Host, body: Body, size: usize) -> Vec<u8> {
    match host.body(body, 0, size) {
        Ok(b) => b.unwrap_or_default(),
        Err(e) => {
            log::warn!("llmux: reading the {body:?} buffer failed ({})", e.0);
            Vec::new()
        }
    }
}
