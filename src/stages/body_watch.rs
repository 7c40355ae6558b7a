//! Noticing an Envoy that withholds request bodies from LLMux, and saying so instead of hanging.
//!
//! LLMux pauses a request's headers until it has read the body, because it routes on the body.
//! Envoy honours that pause only when the Wasm filter sets `allow_on_headers_stop_iteration:
//! true`; by default it turns the pause into a full stop (StopAllIterationAndWatermark), buffers
//! the body itself and never calls the filter's body callback, so the request waits until the
//! route times out (docs/design.md fact 3; docs/deploy.md "Why the flag"). Istio's `WasmPlugin`
//! and Envoy Gateway's `EnvoyExtensionPolicy` cannot set the field. Plain Proxy-Wasm gives the
//! filter no way to read a body Envoy holds back, so LLMux cannot work in that mode; what it can
//! do is notice and answer.
//!
//! How it notices, with no false alarm on a slow client: until the first body callback that
//! follows a header pause (which proves the flag is on, and ends the watch for the VM's life),
//! each paused request is noted. On the root's tick, a request paused for over a second is
//! looked at through the host: `request.total_size` (Envoy: bytes received plus the headers'
//! size, docs/design.md fact 14) minus the size of the header map is what the client has sent of
//! the body. When all of it (or, without `content-length`, any of it) has arrived and no body
//! callback came, the body was withheld: LLMux answers 500 in the client API's shape and logs
//! once, at error level, what to change. A filter before LLMux that holds the body a second
//! after it arrived (before the first request ever reached LLMux's body callback) would be read
//! the same way; the answer is for that request only, not for the VM.

use std::cell::{Cell, RefCell};

use crate::client_api::ClientApi;
use crate::error::GatewayError;
use crate::gateway::LocalResponse;
use crate::host::header_map::decode_map;
use crate::host::{HeaderMap, Host};

/// Tick period while the watch is on (ms).
pub const TICK_MS: u32 = 250;
/// How long a paused request waits before it is looked at (ns).
const GRACE_NS: u64 = 1_000_000_000;
/// Paused requests noted at most (bounded memory while the watch is on; more are not watched).
const MAX_WAITING: usize = 1024;

/// The log line an operator needs (once per VM).
pub const WITHHELD_LOG: &str = "llmux: Envoy withholds request bodies from this filter, so LLMux cannot route: set `allow_on_headers_stop_iteration: true` in the Wasm filter's `config` (Istio: the EnvoyFilter in deploy/istio; Envoy Gateway: the EnvoyPatchPolicy in deploy/envoy-gateway; see docs/deploy.md). Until then every request with a body is answered 500.";

#[derive(Debug, Clone, Copy)]
struct Waiting {
    context_id: u32,
    since_ns: u64,
    content_length: Option<u64>,
    api: ClientApi,
}

/// Per-VM watch over requests paused for their body.
#[derive(Default)]
pub struct BodyWatch {
    /// A body callback followed a header pause: the flag is on; the watch is over.
    delivers: Cell<bool>,
    waiting: RefCell<Vec<Waiting>>,
    warned: Cell<bool>,
}

impl BodyWatch {
    /// Whether the watch still needs the tick.
    pub fn watching(&self) -> bool {
        !self.delivers.get()
    }

    /// A request paused its headers to read the body.
    pub fn on_pause(
        &self,
        context_id: u32,
        now_ns: u64,
        content_length: Option<u64>,
        api: ClientApi,
    ) {
        if self.delivers.get() {
            return;
        }
        let mut w = self.waiting.borrow_mut();
        if w.len() < MAX_WAITING {
            w.push(Waiting {
                context_id,
                since_ns: now_ns,
                content_length,
                api,
            });
        }
    }

    /// A body callback came after a header pause: Envoy delivers bodies.
    pub fn on_body(&self) {
        if !self.delivers.get() {
            self.delivers.set(true);
            *self.waiting.borrow_mut() = Vec::new();
        }
    }

    /// The request is over (its entry, if any, goes).
    pub fn on_end(&self, context_id: u32) {
        if self.delivers.get() {
            return;
        }
        let mut w = self.waiting.borrow_mut();
        if let Some(i) = w.iter().position(|e| e.context_id == context_id) {
            w.swap_remove(i);
        }
    }

    /// The root's tick: answers the paused requests whose body arrived but never reached LLMux.
    pub fn on_tick(&self, h: &dyn Host, now_ns: u64) {
        if self.delivers.get() {
            return;
        }
        let due: Vec<Waiting> = self
            .waiting
            .borrow()
            .iter()
            .filter(|e| now_ns.saturating_sub(e.since_ns) >= GRACE_NS)
            .copied()
            .collect();
        for e in due {
            if h.set_effective_context(e.context_id).is_err() {
                // The stream is gone (its on_log removes it too).
                self.on_end(e.context_id);
                continue;
            }
            let Some(arrived) = body_bytes_arrived(h) else {
                continue;
            };
            if arrived == 0 || e.content_length.is_some_and(|n| arrived < n) {
                continue; // the client has not sent (all of) it yet
            }
            if !self.warned.replace(true) {
                log::error!("{WITHHELD_LOG}");
            }
            self.on_end(e.context_id);
            let err = GatewayError::new(
                500,
                "server_error",
                "the gateway cannot read request bodies (a configuration error; the gateway's log says what to change)",
            )
            .with_code("request_body_withheld");
            let r = LocalResponse::error_in(e.api, &err);
            let headers: Vec<(&str, &str)> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            if let Err(err) = h.send_response(r.status, &headers, &r.body) {
                log::warn!(
                    "llmux: answering a request whose body was withheld failed (host status {})",
                    err.0
                );
            }
        }
    }

    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting.borrow().len()
    }
}

/// Body bytes the client has sent on the effective stream: Envoy's `request.total_size` (bytes
/// received plus the header map's byte size) minus the header map's byte size (the sum of its
/// names' and values' lengths, as Envoy's `HeaderMap::byteSize`). `None`: the host said nothing.
fn body_bytes_arrived(h: &dyn Host) -> Option<u64> {
    let total = h.property(&["request", "total_size"]).ok()??;
    let total = i64::from_le_bytes(total.get(..8)?.try_into().ok()?);
    let raw = h.headers(HeaderMap::Request).ok()?;
    let header_bytes: usize = decode_map(&raw)
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    Some(
        u64::try_from(total)
            .ok()?
            .saturating_sub(header_bytes as u64),
    )
}
