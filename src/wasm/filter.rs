//! The Proxy-Wasm contexts: read what the host has, ask [`Gateway`], write back what it decided.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::Cell;
use std::rc::Rc;

use super::host::{self, Buffer, Map};
use crate::config::{Config, ProcessEnv};
use crate::gateway::{
    BodyAction, BodyRequest, Endpoint, Exchange, Gateway, HeadersDecision, HeadersRequest,
    LocalResponse, INTERNAL_HEADER_PREFIX,
};

proxy_wasm::main! {{
    // Host calls are not allowed here (Envoy answers `restricted_callback`): logging starts in
    // on_configure.
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Per-VM state shared by the VM's HTTP contexts.
struct Shared {
    gateway: Gateway,
    /// Gauge `wasmcustom.llmux.vm_memory_bytes`: this VM's linear memory, updated per request.
    vm_memory_metric: Option<u32>,
    /// xorshift64 state for weighted deployment choice.
    rng: Cell<u64>,
}

impl Shared {
    fn next_random(&self) -> u32 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        (x >> 32) as u32
    }
}

#[derive(Default)]
struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        host::init_logging();
        let bytes = match host::get_buffer(Buffer::PluginConfiguration, 0, size) {
            Ok(Some(b)) => b,
            Ok(None) => {
                log::error!("invalid LLMux configuration: the filter's `configuration` is empty");
                return false;
            }
            Err(e) => {
                log::error!(
                    "LLMux could not read its configuration (host status {})",
                    e.0
                );
                return false;
            }
        };
        match Config::parse(&bytes, &ProcessEnv) {
            Ok(config) => {
                let now = host::now_nanos();
                log::info!(
                    "LLMux configured: {} providers, {} models",
                    config.providers.len(),
                    config.models.len()
                );
                let vm_memory_metric =
                    host::define_metric(host::MetricKind::Gauge, "llmux.vm_memory_bytes").ok();
                self.shared = Some(Rc::new(Shared {
                    gateway: Gateway::new(config, now / 1_000_000_000),
                    vm_memory_metric,
                    rng: Cell::new(now | 1),
                }));
                true
            }
            Err(e) => {
                log::error!("{e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a config Envoy never creates streams; answering None would panic the dispatcher,
        // so an unconfigured context just passes everything through.
        Some(Box::new(Stream {
            shared: self.shared.clone(),
            started_ns: 0,
            replied: false,
            exchange: None,
            request_id: None,
            endpoint: None,
            content_type: None,
            key: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    shared: Option<Rc<Shared>>,
    started_ns: u64,
    /// The filter answered this request itself.
    replied: bool,
    exchange: Option<Exchange>,
    request_id: Option<String>,
    /// Set once the headers show a model-routed request whose body is awaited.
    endpoint: Option<Endpoint>,
    /// The caller's virtual key (index), when keys are configured.
    key: Option<usize>,
    /// The request's `content-type` (multipart forms are routed by their `model` field).
    content_type: Option<String>,
}

impl Context for Stream {}

impl Stream {
    fn reply(&mut self, r: &LocalResponse) -> Action {
        self.replied = true;
        let headers: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Err(e) = host::send_response(r.status, &headers, &r.body) {
            log::warn!(
                "llmux: sending a local response failed (host status {})",
                e.0
            );
        }
        Action::Pause
    }

    fn handle_body(
        &mut self,
        shared: &Shared,
        endpoint: Endpoint,
        body: &[u8],
        body_size: usize,
    ) -> Action {
        let now_ns = host::now_nanos();
        let req = BodyRequest {
            endpoint,
            content_type: self.content_type.as_deref(),
            key: self.key,
            now_unix: now_ns / 1_000_000_000,
            pick: shared.next_random(),
        };
        match shared.gateway.on_request_body(&req, body) {
            Err(e) => {
                let r = shared.gateway.error_response(endpoint, &e);
                self.reply(&r)
            }
            Ok(fwd) => {
                for (k, v) in &fwd.set_headers {
                    if let Err(e) = host::set_header(Map::RequestHeaders, k, v) {
                        log::warn!("llmux: setting request header {k} failed ({})", e.0);
                    }
                }
                for k in &fwd.remove_headers {
                    let _ = host::remove_header(Map::RequestHeaders, k);
                }
                if let Some(new_body) = &fwd.body {
                    if let Err(e) = host::set_buffer(Buffer::RequestBody, 0, body_size, new_body) {
                        log::warn!("llmux: replacing the request body failed ({})", e.0);
                    }
                }
                self.exchange = Some(fwd.exchange);
                Action::Continue
            }
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        self.started_ns = host::now_nanos();
        let headers = host::get_headers(Map::RequestHeaders).unwrap_or_default();
        let mut method = "";
        let mut path = "";
        let mut content_length = None;
        let (mut bearer, mut x_api_key, mut api_key) = (None, None, None);
        for (k, v) in &headers {
            match k.as_str() {
                ":method" => method = std::str::from_utf8(v).unwrap_or(""),
                ":path" => path = std::str::from_utf8(v).unwrap_or(""),
                "content-length" => {
                    content_length = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok())
                }
                "x-request-id" => self.request_id = Some(String::from_utf8_lossy(v).into_owned()),
                "content-type" => self.content_type = Some(String::from_utf8_lossy(v).into_owned()),
                "authorization" => {
                    bearer = std::str::from_utf8(v).ok().and_then(|a| {
                        a.strip_prefix("Bearer ")
                            .or_else(|| a.strip_prefix("bearer "))
                    })
                }
                "x-api-key" => x_api_key = std::str::from_utf8(v).ok(),
                "api-key" => api_key = std::str::from_utf8(v).ok(),
                k if k.starts_with(INTERNAL_HEADER_PREFIX) => {
                    // Only the gateway sets these: a client's copy would spoof its decisions.
                    let _ = host::remove_header(Map::RequestHeaders, k);
                }
                _ => {}
            }
        }
        let req = HeadersRequest {
            method,
            path,
            content_length,
            credential: bearer.or(x_api_key).or(api_key),
            now_unix: self.started_ns / 1_000_000_000,
        };
        match shared.gateway.on_request_headers(&req) {
            HeadersDecision::Respond(r) => self.reply(&r),
            HeadersDecision::PassThrough => Action::Continue,
            HeadersDecision::ReadBody(endpoint, key) => {
                self.key = key;
                if end_of_stream {
                    self.handle_body(&shared, endpoint, &[], 0)
                } else {
                    self.endpoint = Some(endpoint);
                    Action::Pause
                }
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.replied || self.exchange.is_some() {
            return Action::Continue;
        }
        let (Some(shared), Some(endpoint)) = (self.shared.clone(), self.endpoint) else {
            return Action::Continue;
        };
        if !end_of_stream {
            if let Some(r) = shared.gateway.body_too_large(endpoint, body_size) {
                return self.reply(&r);
            }
            return Action::Pause;
        }
        let body = match host::get_buffer(Buffer::RequestBody, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                log::warn!("llmux: reading the request body failed ({})", e.0);
                Vec::new()
            }
        };
        self.handle_body(&shared, endpoint, &body, body_size)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if self.replied {
            return Action::Continue;
        }
        let Some(ex) = self.exchange.as_mut() else {
            return Action::Continue;
        };
        let status = host::get_header(Map::ResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(502);
        let details = host::get_property(&["response", "code_details"])
            .ok()
            .flatten()
            .map(|d| String::from_utf8_lossy(&d).into_owned())
            .filter(|d| d != "via_upstream");
        let changes = ex.on_response_headers(status, details.as_deref());
        for k in &changes.remove {
            let _ = host::remove_header(Map::ResponseHeaders, k);
        }
        for (k, v) in &changes.set {
            if let Err(e) = host::set_header(Map::ResponseHeaders, k, v) {
                log::warn!("llmux: setting response header {k} failed ({})", e.0);
            }
        }
        if changes.wait_for_body && !end_of_stream {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.replied {
            return Action::Continue;
        }
        let Some(ex) = self.exchange.as_mut() else {
            return Action::Continue;
        };
        let whole = ex.needs_whole_body();
        let data = if whole && !end_of_stream {
            Vec::new() // not read until the end: the host buffers it
        } else {
            match host::get_buffer(Buffer::ResponseBody, 0, body_size) {
                Ok(b) => b.unwrap_or_default(),
                Err(e) => {
                    log::warn!("llmux: reading the response body failed ({})", e.0);
                    Vec::new()
                }
            }
        };
        match ex.on_response_body(&data, body_size, end_of_stream) {
            BodyAction::Continue => Action::Continue,
            BodyAction::Buffer => Action::Pause,
            BodyAction::Replace(out) => {
                if let Err(e) = host::set_buffer(Buffer::ResponseBody, 0, body_size, &out) {
                    log::warn!("llmux: replacing the response body failed ({})", e.0);
                }
                Action::Continue
            }
            BodyAction::ReplaceWhole { status, body } => {
                // The headers are still held (see on_http_response_headers), so they can change.
                let _ = host::set_header(Map::ResponseHeaders, ":status", &status.to_string());
                let _ = host::set_header(Map::ResponseHeaders, "content-type", "application/json");
                let _ = host::set_header(
                    Map::ResponseHeaders,
                    "content-length",
                    &body.len().to_string(),
                );
                if let Some(ra) = ex.retry_after.as_deref() {
                    let _ = host::set_header(Map::ResponseHeaders, "retry-after", ra);
                }
                if let Err(e) = host::set_buffer(Buffer::ResponseBody, 0, body_size, &body) {
                    log::warn!("llmux: replacing the response body failed ({})", e.0);
                }
                Action::Continue
            }
        }
    }

    fn on_log(&mut self) {
        if let Some(id) = self.shared.as_ref().and_then(|s| s.vm_memory_metric) {
            let _ = host::record_metric(id, host::vm_memory_bytes());
        }
        if !log::log_enabled!(log::Level::Debug) {
            return;
        }
        let latency_ms = host::now_nanos().saturating_sub(self.started_ns) / 1_000_000;
        let rid = self.request_id.as_deref().unwrap_or("-");
        match &self.exchange {
            Some(ex) => {
                let u = ex.usage().unwrap_or_default();
                log::debug!(
                    "llmux request_id={rid} model={} provider={} upstream_model={} stream={} status={} prompt_tokens={} completion_tokens={} cached_tokens={} latency_ms={latency_ms}",
                    ex.model,
                    ex.provider,
                    ex.upstream_model,
                    ex.stream,
                    ex.status,
                    u.prompt_tokens,
                    u.completion_tokens,
                    u.cached_tokens,
                );
            }
            None if self.replied => {
                log::debug!(
                    "llmux request_id={rid} answered by the gateway latency_ms={latency_ms}"
                )
            }
            None => {}
        }
    }
}
