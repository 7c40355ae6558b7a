//! The Proxy-Wasm contexts: read what the host has, ask [`Gateway`], write back what it decided.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use super::host::{self, Buffer, Map, SharedStore};
use super::ratelimit::{Admission, Answer, RequestLimits};
use crate::config::{Config, ProcessEnv};
use crate::gateway::{
    BodyAction, BodyRequest, Endpoint, Exchange, Gateway, HeadersDecision, HeadersRequest,
    LocalResponse, INTERNAL_HEADER_PREFIX,
};
use crate::observe::export::{encode, Batcher, Pushed};
use crate::observe::record::{Finished, Summary, UsageRecord, MAX_LOGGED_BODY_BYTES};
use crate::observe::{cost_nanousd, request_updates, Catalog, MetricKey, Route, Timings, Update};
use crate::routing::{state, ErrorClass};

proxy_wasm::main! {{
    // Host calls are not allowed here (Envoy answers `restricted_callback`): logging starts in
    // on_configure.
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        Box::new(Root { id, ..Root::default() })
    });
}}

/// Per-VM state shared by the VM's HTTP contexts.
pub struct Shared {
    pub gateway: Gateway,
    catalog: Catalog,
    /// Metric ids, defined lazily the first time a label set is seen (`None`: define failed).
    metrics: RefCell<HashMap<MetricKey, Option<u32>, BuildHasherDefault<KeyHasher>>>,
    /// Usage records waiting for export (per VM; sent from the root context's tick).
    exporter: Option<RefCell<Batcher>>,
    /// xorshift64 state for weighted deployment choice.
    rng: Cell<u64>,
    /// Ids of requests handed to the upstream stage (unique in this VM).
    attempt_seq: Cell<u64>,
    /// The VM memory size last written to the gauge.
    vm_memory_reported: Cell<u64>,
}

impl Shared {
    fn metric_id(&self, key: MetricKey) -> Option<u32> {
        let mut m = self.metrics.borrow_mut();
        *m.entry(key).or_insert_with(|| {
            let name = self.catalog.name(&key);
            match host::define_metric(key.metric_type() as u32, &name) {
                Ok(id) => Some(id),
                Err(e) => {
                    log::warn!("llmux: defining metric {name} failed (host status {})", e.0);
                    None
                }
            }
        })
    }

    pub fn apply(&self, u: Update) {
        match u {
            Update::Add(k, n) => {
                if let Some(id) = self.metric_id(k) {
                    let _ = host::increment_metric(id, n);
                }
            }
            Update::Record(k, v) => {
                if let Some(id) = self.metric_id(k) {
                    let _ = host::record_metric(id, v);
                }
            }
        }
    }

    fn next_random(&self) -> u32 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        (x >> 32) as u32
    }
}

/// A multiply-rotate hasher for metric keys: a few looked up per request, from a set the config
/// bounds (no untrusted input), where SipHash's flood resistance only costs time.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Default)]
struct Root {
    /// This root context's id (token fetches resume requests from it).
    id: u32,
    shared: Option<Rc<Shared>>,
    /// This root is the upstream stage (`{"stage": "upstream"}`): it makes the attempts the
    /// downstream stage of the same VM planned.
    upstream: bool,
    /// Export calls in flight: token → records in the batch.
    in_flight: HashMap<u32, u64>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body: usize,
        _trailers: usize,
    ) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        if super::token::on_http_call_response(&shared.gateway.config, self.id, token, body) {
            return;
        }
        let Some(n) = self.in_flight.remove(&token) else {
            return;
        };
        if let Some(b) = &shared.exporter {
            b.borrow_mut().sent();
        }
        // No headers (timeout, reset, no healthy host) reads as no status: a failure.
        let status = host::get_header(Map::HttpCallResponse, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        shared.apply(Update::Add(MetricKey::ExportBatches, 1));
        if (200..300).contains(&status) {
            shared.apply(Update::Add(MetricKey::ExportRecordsSent, n));
        } else {
            log::warn!("llmux: exporting {n} usage records failed (collector status {status})");
            shared.apply(Update::Add(MetricKey::ExportRecordsFailed, n));
        }
    }
}

impl Root {
    /// Sends every batch that is due (full, or waited long enough). Never on a request's path.
    fn flush_due(&mut self) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let (Some(batcher), Some(cfg)) = (&shared.exporter, &shared.gateway.config.export) else {
            return;
        };
        let now = host::now_nanos();
        loop {
            let Some(batch) = batcher.borrow_mut().take_due(now) else {
                return;
            };
            let n = batch.len() as u64;
            let body = encode(cfg, &batch);
            let mut headers: Vec<(&str, &str)> = vec![
                (":method", "POST"),
                (":path", &cfg.path),
                (":authority", &cfg.authority),
                ("content-type", "application/json"),
            ];
            headers.extend(cfg.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            match host::dispatch_http_call(&cfg.cluster, headers, &body, cfg.timeout_ms) {
                Ok(token) => {
                    self.in_flight.insert(token, n);
                }
                Err(e) => {
                    batcher.borrow_mut().sent();
                    log::warn!(
                        "llmux: exporting {n} usage records to cluster {} failed (host status {})",
                        cfg.cluster,
                        e.0
                    );
                    shared.apply(Update::Add(MetricKey::ExportRecordsFailed, n));
                }
            }
        }
    }
}

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
        if let Ok(serde_json::Value::Object(o)) = serde_json::from_slice(&bytes) {
            if let Some(stage) = o.get("stage") {
                if stage != "upstream" || o.len() != 1 {
                    log::error!(
                        "invalid LLMux configuration at `stage`: the upstream stage's configuration is exactly {{\"stage\": \"upstream\"}}"
                    );
                    return false;
                }
                log::info!("LLMux upstream stage configured");
                self.upstream = true;
                return true;
            }
        }
        match Config::parse(&bytes, &ProcessEnv) {
            Ok(config) => {
                let now = host::now_nanos();
                log::info!(
                    "LLMux configured: {} providers, {} models",
                    config.providers.len(),
                    config.models.len()
                );
                let exporter = config.export.as_ref().map(|e| {
                    // Ticks drive the export; a full batch waits at most one tick.
                    let _ = host::set_tick_period_ms(e.flush_interval_ms.min(200));
                    RefCell::new(Batcher::new(e))
                });
                let shared = Rc::new(Shared {
                    catalog: Catalog::new(&config),
                    gateway: Gateway::new(config, now / 1_000_000_000),
                    metrics: RefCell::new(HashMap::default()),
                    exporter,
                    rng: Cell::new(now | 1),
                    attempt_seq: Cell::new(0),
                    vm_memory_reported: Cell::new(0),
                });
                if shared.exporter.is_some() {
                    // Exporter series exist from the start (at 0), so rates and alerts work.
                    for k in [
                        MetricKey::ExportRecordsSent,
                        MetricKey::ExportRecordsFailed,
                        MetricKey::ExportRecordsDropped,
                        MetricKey::ExportBatches,
                    ] {
                        shared.metric_id(k);
                    }
                }
                self.shared = Some(shared);
                true
            }
            Err(e) => {
                log::error!("{e}");
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.upstream {
            return Some(Box::new(super::upstream::Attempt::new(context_id)));
        }
        // Without a config Envoy never creates streams; answering None would panic the dispatcher,
        // so an unconfigured context just passes everything through.
        let capture = self
            .shared
            .as_ref()
            .is_some_and(|s| s.gateway.config.log_bodies);
        Some(Box::new(Stream {
            context_id,
            shared: self.shared.clone(),
            timings: Timings::default(),
            replied: None,
            chat: false,
            exchange: None,
            request_id: None,
            endpoint: None,
            content_type: None,
            key: None,
            finished: false,
            capture,
            request_body: None,
            response_body: Vec::new(),
            tags: None,
            path: String::new(),
            sent: 0,
            attempt_id: None,
            direct_state: None,
            limits: RequestLimits::default(),
            recovery: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn on_tick(&mut self) {
        self.flush_due();
        if let Some(shared) = &self.shared {
            super::token::on_tick(&shared.gateway.config, self.id);
        }
    }
}

/// The request headers whose presence [`Stream::sent`] records, one bit each.
fn sent_bit(name: &str) -> Option<u8> {
    match name {
        "authorization" => Some(1),
        "x-api-key" => Some(2),
        "api-key" => Some(4),
        "content-length" => Some(8),
        _ => None,
    }
}

struct Stream {
    context_id: u32,
    shared: Option<Rc<Shared>>,
    timings: Timings,
    /// The filter answered this request itself, with this status.
    replied: Option<u16>,
    /// A chat-completions request (counted in the metrics).
    chat: bool,
    exchange: Option<Exchange>,
    request_id: Option<String>,
    /// Set once the headers show a model-routed request whose body is awaited.
    endpoint: Option<Endpoint>,
    /// The caller's virtual key (index), when keys are configured.
    key: Option<usize>,
    /// The request's `content-type` (multipart forms are routed by their `model` field).
    content_type: Option<String>,
    /// Metrics, filter state and the usage record are done.
    finished: bool,
    /// `log_bodies` is on: keep the bodies for the usage record.
    capture: bool,
    request_body: Option<Vec<u8>>,
    response_body: Vec<u8>,
    /// The router's tags header.
    tags: Option<String>,
    /// The client's `:path` (a translated request whose path is the same does not set it again).
    path: String,
    /// Which of the headers a translated request may drop the client sent ([`sent_bit`]): removing
    /// one that is not there would be a host call for nothing.
    sent: u8,
    /// The request is in the upstream stage's registry under this id (failover path).
    attempt_id: Option<u64>,
    /// Direct path: the deployment's shared-state key (routing counts its load and health).
    direct_state: Option<String>,
    /// Rate limits, budgets and parallel slots of this request (wasm/ratelimit.rs).
    limits: RequestLimits,
    /// Failover path, streamed chat completion: mid-stream recovery watches the stream.
    recovery: Option<super::recovery::Recovery>,
}

impl Context for Stream {
    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        let answer = self
            .limits
            .on_answer(&shared.gateway.config, token, status, size, &|u| {
                shared.apply(u)
            });
        match answer {
            Answer::Nothing => {}
            Answer::ResumeRequest => {
                let _ = host::resume(false);
            }
            Answer::ResumeResponse => {
                let _ = host::resume(true);
            }
            Answer::Reject(e, h) => {
                self.reject_limited(&shared, &e, h);
            }
        }
    }

    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body: usize,
        _trailers: usize,
    ) {
        let (Some(shared), Some(r)) = (self.shared.clone(), self.recovery.as_mut()) else {
            return;
        };
        if let Some(appended) = r.on_call_response(&shared, self.attempt_id, token, body) {
            self.capture_response(&appended);
            self.timings.end_ns = 0; // the continuation's end, not the failed stream's
            self.finish();
        }
    }
}

impl Stream {
    fn capture_response(&mut self, bytes: &[u8]) {
        if self.capture {
            let room = MAX_LOGGED_BODY_BYTES.saturating_sub(self.response_body.len());
            self.response_body
                .extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    /// Once per request, when its response is complete (or in `on_log` at the latest): count it
    /// in the metrics, write the filter state the access log prints, queue the usage record.
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let Some(shared) = self.shared.clone() else {
            return;
        };
        if self.timings.end_ns == 0 {
            self.timings.end_ns = host::now_nanos();
        }
        let mut attempts = 1;
        if let Some(id) = self.attempt_id {
            // Failover path: the attempt that answered has the exchange that counts.
            if let Some(p) = super::upstream::lookup(id) {
                let mut p = p.borrow_mut();
                attempts = u32::from(p.attempts.plan.attempts);
                if let Some(ex) = p.final_exchange.take() {
                    self.exchange = Some(ex);
                }
            }
        }
        self.direct_outcome(&shared);
        let Some(ex) = &self.exchange else {
            if let (true, Some(status)) = (self.chat, self.replied) {
                request_updates(
                    Route::Rejected,
                    status,
                    false,
                    None,
                    None,
                    &self.timings,
                    |u| shared.apply(u),
                );
            }
            return;
        };
        let usage = ex.usage();
        let Route::Deployment { model, deployment } = ex.route else {
            return;
        };
        let config = &shared.gateway.config;
        let finished = Finished {
            request_id: self.request_id.as_deref(),
            model,
            deployment,
            stream: ex.stream,
            status: ex.status,
            usage,
            timings: &self.timings,
            request_body: self.request_body.as_deref(),
            response_body: self.capture.then_some(self.response_body.as_slice()),
            key: self.key,
            attempts,
        };
        let Some(summary) = Summary::of(config, &finished) else {
            return;
        };
        let cost = config
            .models
            .get(model)
            .and_then(|m| m.deployments.get(deployment))
            .and_then(|d| d.cost_price.as_ref())
            .zip(usage.as_ref())
            .map(|(p, u)| cost_nanousd(p, u));
        self.limits.charge(
            config,
            usage.as_ref(),
            cost,
            self.timings.end_ns / 1_000_000_000,
            &|u| shared.apply(u),
        );
        if let (Some(c), true) = (cost, self.limits.headers_held) {
            let _ = host::set_header(
                Map::ResponseHeaders,
                "x-llmux-cost-usd",
                &format!("{:.9}", c as f64 / 1e9),
            );
        }
        request_updates(
            ex.route,
            ex.status,
            ex.stream,
            usage.as_ref(),
            cost,
            &self.timings,
            |u| shared.apply(u),
        );
        if config.filter_state {
            summary.filter_state(|name, value| {
                let _ = host::set_property(name, value);
            });
        }
        if let Some(b) = &shared.exporter {
            if let Some(record) = UsageRecord::build(config, &finished) {
                if b.borrow_mut().push(record, self.timings.end_ns) == Pushed::Dropped {
                    shared.apply(Update::Add(MetricKey::ExportRecordsDropped, 1));
                }
            }
        }
    }

    /// Answers a request refused by a limit (429/503 with `x-ratelimit-*`).
    fn reject_limited(
        &mut self,
        shared: &Shared,
        e: &crate::error::GatewayError,
        headers: Vec<(&'static str, String)>,
    ) -> Action {
        self.exchange = None;
        let endpoint = self
            .endpoint
            .unwrap_or(crate::gateway::Endpoint::ChatCompletions);
        let mut r = shared.gateway.error_response(endpoint, e);
        r.headers
            .extend(headers.into_iter().map(|(k, v)| (k.to_string(), v)));
        self.reply(&r)
    }

    fn reply(&mut self, r: &LocalResponse) -> Action {
        self.replied = Some(r.status);
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
            pick: 0,
        };
        let mut rng = || shared.next_random();
        let routed = shared.gateway.route_request(
            &req,
            body,
            &mut crate::gateway::RoutingInput {
                store: &SharedStore,
                rng: &mut rng,
                now_ms: now_ns / 1_000_000,
                header_tags: self.tags.as_deref(),
            },
        );
        match routed {
            Err(e) => {
                let r = shared.gateway.error_response(endpoint, &e);
                self.reply(&r)
            }
            Ok(fwd) => {
                // (The routing decision itself takes microseconds: one clock read serves both.)
                self.timings.forwarded_ns = now_ns;
                if self.capture {
                    self.request_body =
                        Some(body[..body.len().min(MAX_LOGGED_BODY_BYTES)].to_vec());
                }
                for (k, v) in &fwd.set_headers {
                    // Every host call counts: nothing to do when the client's value is this one.
                    let unchanged = match k.as_str() {
                        ":path" => *v == self.path,
                        "content-type" => self.content_type.as_deref() == Some(v.as_str()),
                        _ => false,
                    };
                    if unchanged {
                        continue;
                    }
                    if let Err(e) = host::set_header(Map::RequestHeaders, k, v) {
                        log::warn!("llmux: setting request header {k} failed ({})", e.0);
                    }
                }
                for k in &fwd.remove_headers {
                    if sent_bit(k).is_some_and(|b| self.sent & b == 0) {
                        continue; // the client did not send it
                    }
                    let _ = host::remove_header(Map::RequestHeaders, k);
                }
                if let Some(new_body) = &fwd.body {
                    if let Err(e) = host::set_buffer(Buffer::RequestBody, 0, body_size, new_body) {
                        log::warn!("llmux: replacing the request body failed ({})", e.0);
                    }
                }
                if let (Some(attempts), Some(rc)) = (fwd.attempts, self.shared.clone()) {
                    self.recovery =
                        super::recovery::Recovery::for_request(shared, endpoint, body, &attempts);
                    let id = shared.attempt_seq.get().wrapping_add(1);
                    shared.attempt_seq.set(id);
                    let _ = host::set_header(
                        Map::RequestHeaders,
                        super::upstream::ATTEMPT_ID_HEADER,
                        &id.to_string(),
                    );
                    super::upstream::register(
                        id,
                        super::upstream::Pending {
                            shared: rc,
                            attempts,
                            prev_set: Vec::new(),
                            undecided: false,
                            final_exchange: None,
                        },
                    );
                    self.attempt_id = Some(id);
                } else if let crate::observe::Route::Deployment { model, deployment } =
                    fwd.exchange.route
                {
                    let config = &shared.gateway.config;
                    if let Some(d) = config
                        .models
                        .get(model)
                        .filter(|m| config.router.tracks(m))
                        .and_then(|m| m.deployments.get(deployment))
                    {
                        let now_ms = now_ns / 1_000_000;
                        state::update(&SharedStore, &d.state_key, |s| s.on_start(now_ms));
                        self.direct_state = Some(d.state_key.clone());
                    }
                }
                let model = fwd.exchange.model.clone();
                self.exchange = Some(fwd.exchange);
                self.endpoint = Some(endpoint);
                // Vertex AI with a service-account key: add the cached token, or wait for it.
                // (A request waiting for a token fetch is resumed by the fetch; its rate-limit
                // check still runs now.)
                let auth = fwd
                    .token
                    .map(|p| super::token::authorize(&shared.gateway.config, p, self.context_id));
                let mut waiting_for_token = false;
                match auth {
                    None => {}
                    Some(Ok(super::token::Auth::Ready(t))) => {
                        let bearer = format!("Bearer {t}");
                        let _ = host::set_header(Map::RequestHeaders, "authorization", &bearer);
                    }
                    Some(Ok(super::token::Auth::Wait)) => waiting_for_token = true,
                    Some(Err(r)) => {
                        self.exchange = None;
                        return self.reply(&r);
                    }
                }
                let admission = self.limits.admit(
                    &shared.gateway.config,
                    self.key,
                    &model,
                    now_ns / 1_000_000_000,
                    &|u| shared.apply(u),
                );
                match admission {
                    Admission::Continue if waiting_for_token => Action::Pause,
                    Admission::Continue => Action::Continue,
                    Admission::Wait => Action::Pause,
                    Admission::Reject(e, h) => self.reject_limited(shared, &e, h),
                }
            }
        }
    }

    /// `GET /llmux/status` (or the configured path): the router's view, to allowed clients.
    fn router_status(
        &mut self,
        shared: &Shared,
        method: &str,
        status: &crate::routing::StatusConfig,
    ) -> Action {
        let ip = host::get_property(&["source", "address"])
            .ok()
            .flatten()
            .map(|a| String::from_utf8_lossy(&a).into_owned())
            .unwrap_or_default();
        // `1.2.3.4:5678` or `[::1]:5678` → the address alone.
        let ip = match ip.rsplit_once(':') {
            Some((a, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
                a.trim_start_matches('[').trim_end_matches(']').to_string()
            }
            _ => ip,
        };
        let r = if !status.allows(&ip) {
            LocalResponse::error(
                &crate::error::GatewayError::new(
                    403,
                    "permission_error",
                    format!(
                        "{} is only served to the router's allowed addresses",
                        status.path
                    ),
                )
                .with_code("forbidden"),
            )
        } else if method != "GET" {
            LocalResponse::error(
                &crate::error::GatewayError::new(405, "invalid_request_error", "use GET")
                    .with_code("method_not_allowed"),
            )
        } else {
            let now_ms = host::now_nanos() / 1_000_000;
            LocalResponse::json(
                200,
                crate::routing::status::render(&shared.gateway.config, &SharedStore, now_ms),
            )
        };
        self.reply(&r)
    }

    /// Direct path: the deployment's load and health, once the answer is known.
    fn direct_outcome(&mut self, shared: &Shared) {
        let Some(key) = self.direct_state.take() else {
            return;
        };
        let now_ms = host::now_nanos() / 1_000_000;
        let config = &shared.gateway.config;
        let Some(ex) = &self.exchange else {
            state::update(&SharedStore, &key, |s| s.on_end());
            return;
        };
        if ex.status == 0 {
            // No answer (the client went away).
            state::update(&SharedStore, &key, |s| s.on_end());
            return;
        }
        let route = ex.route;
        let crate::observe::Route::Deployment { model, .. } = route else {
            state::update(&SharedStore, &key, |s| s.on_end());
            return;
        };
        if ex.failed() {
            let class = ErrorClass::of(
                ex.provider_status(),
                ex.envoy_details(),
                ex.last_error.as_ref(),
            );
            let status = ex.provider_status();
            let cooled = state::update(&SharedStore, &key, |s| {
                s.on_end();
                crate::routing::record_failure(s, config, model, class, status, now_ms)
            });
            shared.apply(Update::Add(MetricKey::FailedAttempts { route, class }, 1));
            if cooled == Some(true) {
                shared.apply(Update::Add(MetricKey::Cooldowns { route }, 1));
            }
            return;
        }
        let usage = ex.usage();
        let (t, stream) = (&self.timings, ex.stream);
        state::update(&SharedStore, &key, |s| {
            s.on_end();
            crate::routing::record_success(s, config, t, stream, usage.as_ref());
        });
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        self.timings.start_ns = host::now_nanos();
        let raw_headers = host::get_headers(Map::RequestHeaders).unwrap_or_default();
        let headers = super::map_codec::decode_map(&raw_headers);
        let mut method = "";
        let mut path = "";
        let mut content_length = None;
        let (mut bearer, mut x_api_key, mut api_key) = (None, None, None);
        let mut provider_hint = None;
        let tags_header = shared.gateway.config.router.tags_header.as_str();
        for (k, v) in &headers {
            let v: &[u8] = v;
            self.sent |= sent_bit(k).unwrap_or(0);
            match k.as_ref() {
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
                crate::gateway::PROVIDER_HINT_HEADER => provider_hint = std::str::from_utf8(v).ok(),
                "api-key" => api_key = std::str::from_utf8(v).ok(),
                k if k == tags_header => self.tags = Some(String::from_utf8_lossy(v).into_owned()),
                k if k.starts_with(INTERNAL_HEADER_PREFIX) => {
                    // Only the gateway sets these: a client's copy would spoof its decisions.
                    let _ = host::remove_header(Map::RequestHeaders, k);
                }
                _ => {}
            }
        }
        if let Some(status) = &shared.gateway.config.router.status {
            if path.split('?').next() == Some(status.path.as_str()) {
                return self.router_status(&shared, method, status);
            }
        }
        self.path.push_str(path);
        let req = HeadersRequest {
            method,
            path,
            content_length,
            credential: bearer.or(x_api_key).or(api_key),
            now_unix: self.timings.start_ns / 1_000_000_000,
            provider_hint,
        };
        match shared.gateway.on_request_headers(&req) {
            HeadersDecision::Respond(r) => self.reply(&r),
            HeadersDecision::PassThrough => Action::Continue,
            HeadersDecision::Forward(set, remove) => {
                for (k, v) in &set {
                    let _ = host::set_header(Map::RequestHeaders, k, v);
                }
                for k in &remove {
                    let _ = host::remove_header(Map::RequestHeaders, k);
                }
                Action::Continue
            }
            HeadersDecision::ReadBody(endpoint, key) => {
                self.key = key;
                self.chat = true;
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
        if self.replied.is_some() || self.exchange.is_some() {
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
        if self.replied.is_some() {
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
        // Envoy's own replies (connect failure, timeout) are errors: a success needs no look.
        let details = if status >= 400 {
            host::get_property(&["response", "code_details"])
                .ok()
                .flatten()
                .map(|d| String::from_utf8_lossy(&d).into_owned())
                .filter(|d| d != "via_upstream")
        } else {
            None
        };
        if details.as_deref() == Some("llmux") {
            // Answered by LLMux from elsewhere (a failed token fetch): already in final shape.
            ex.status = status;
            self.replied = Some(status);
            return Action::Continue;
        }
        let changes = ex.on_response_headers(status, details.as_deref());
        if !ex.is_relay() && ex.answer_headers {
            if let (Some(shared), crate::observe::Route::Deployment { model, deployment }) =
                (&self.shared, ex.route)
            {
                if let Some(d) = shared
                    .gateway
                    .config
                    .models
                    .get(model)
                    .and_then(|m| m.deployments.get(deployment))
                {
                    let _ = host::set_header(Map::ResponseHeaders, "x-llmux-deployment", &d.name);
                    let _ = host::set_header(Map::ResponseHeaders, "x-llmux-attempts", "1");
                }
            }
        }
        self.limits.headers_held = changes.wait_for_body && !end_of_stream;
        for (k, v) in &self.limits.headers {
            let _ = host::set_header(Map::ResponseHeaders, k, v);
        }
        for k in &changes.remove {
            let _ = host::remove_header(Map::ResponseHeaders, k);
        }
        for (k, v) in &changes.set {
            if let Err(e) = host::set_header(Map::ResponseHeaders, k, v) {
                log::warn!("llmux: setting response header {k} failed ({})", e.0);
            }
        }
        if end_of_stream {
            self.finish();
        }
        if changes.wait_for_body && !end_of_stream {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.replied.is_some() {
            return Action::Continue;
        }
        if self.exchange.is_none() {
            return Action::Continue;
        }
        if (self.timings.first_byte_ns == 0 && body_size > 0) || end_of_stream {
            // One clock read per callback: the last one is also the end (see `finish`).
            let now = host::now_nanos();
            if self.timings.first_byte_ns == 0 && body_size > 0 {
                self.timings.first_byte_ns = now;
            }
            if end_of_stream {
                self.timings.end_ns = now;
            }
        }
        let ok = self
            .exchange
            .as_ref()
            .is_some_and(|ex| (200..300).contains(&ex.status));
        if let (true, Some(shared), Some(r)) = (ok, self.shared.clone(), self.recovery.as_mut()) {
            let (action, out) = r.on_body(&shared, self.attempt_id, body_size, end_of_stream);
            self.capture_response(&out);
            if end_of_stream && action == Action::Continue {
                self.finish();
            }
            return action; // Pause: the continuation's answer resumes it (and finishes)
        }
        let action = self.response_body_action(body_size, end_of_stream);
        if end_of_stream {
            self.finish();
            if self.limits.hold_response() {
                // The usage charge is recorded before the client sees the end.
                return Action::Pause;
            }
        }
        action
    }

    fn on_log(&mut self) {
        self.finish();
        if let Some(id) = self.attempt_id.take() {
            super::upstream::unregister(id);
        }
        self.limits.release();
        if let Some(shared) = &self.shared {
            // The linear memory only ever grows, and rarely: a host call only when it did.
            let bytes = host::vm_memory_bytes();
            if shared.vm_memory_reported.replace(bytes) != bytes {
                shared.apply(Update::Record(MetricKey::VmMemoryBytes, bytes));
            }
        }
        if !log::log_enabled!(log::Level::Debug) {
            return;
        }
        let latency_ms = host::now_nanos().saturating_sub(self.timings.start_ns) / 1_000_000;
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
            None if self.replied.is_some() => {
                log::debug!(
                    "llmux request_id={rid} answered by the gateway latency_ms={latency_ms}"
                )
            }
            None => {}
        }
    }
}

impl Stream {
    fn response_body_action(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let capture = self.capture;
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
        let action = ex.on_response_body(&data, body_size, end_of_stream);
        let retry_after = ex.retry_after.clone();
        let upstream_status = ex.provider_status();
        if capture {
            match &action {
                BodyAction::Continue => self.capture_response(&data),
                BodyAction::Replace(out) | BodyAction::ReplaceWhole { body: out, .. } => {
                    self.capture_response(out)
                }
                BodyAction::Buffer => {}
            }
        }
        apply_body_action(action, body_size, retry_after.as_deref(), upstream_status)
    }
}

/// Writes a [`BodyAction`] to the response the host holds.
pub fn apply_body_action(
    action: BodyAction,
    body_size: usize,
    retry_after: Option<&str>,
    upstream_status: u16,
) -> Action {
    match action {
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
            if status != upstream_status {
                let _ = host::set_header(Map::ResponseHeaders, ":status", &status.to_string());
            }
            let _ = host::set_header(Map::ResponseHeaders, "content-type", "application/json");
            let _ = host::set_header(
                Map::ResponseHeaders,
                "content-length",
                &body.len().to_string(),
            );
            if let Some(ra) = retry_after {
                let _ = host::set_header(Map::ResponseHeaders, "retry-after", ra);
            }
            if let Err(e) = host::set_buffer(Buffer::ResponseBody, 0, body_size, &body) {
                log::warn!("llmux: replacing the response body failed ({})", e.0);
            }
            Action::Continue
        }
    }
}
