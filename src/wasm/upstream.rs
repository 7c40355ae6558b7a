//! The upstream stage: LLMux as an upstream HTTP filter on the attempts cluster, run by Envoy
//! once per attempt (DESIGN.md fact 5). The downstream stage planned the request and left it in
//! this VM's registry under `x-llmux-attempt-id`; each attempt takes the plan's current entry,
//! translates the client's body for that deployment, and on failure tells the router to retry
//! (`x-llmux-retry` response header, a `retriable_headers` match) or answers the final error.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::filter::{apply_body_action, Shared};
use super::host::{self, Buffer, Map, SharedStore};
use crate::gateway::{Attempts, BodyAction, Exchange};
use crate::observe::{MetricKey, Route, Update};
use crate::routing::{self, state, ErrorClass, PlanEntry};

/// Request header naming the registry entry (set by the downstream stage, removed by the
/// attempts listener's route before the request leaves Envoy).
pub const ATTEMPT_ID_HEADER: &str = "x-llmux-attempt-id";
/// Response header that makes the router retry (the route's `retriable_headers`).
pub const RETRY_HEADER: &str = "x-llmux-retry";
/// Seconds the router's back-off waits before the retry (`rate_limited_retry_back_off`).
pub const RETRY_AFTER_HEADER: &str = "x-llmux-retry-after";
/// Set by the attempts listener on Envoy's own replies (`local_reply_config`): its
/// `%RESPONSE_CODE_DETAILS%` (timeout, connect failure, reset).
pub const ENVOY_DETAILS_HEADER: &str = "x-llmux-envoy-details";

/// One request's attempts, shared by the downstream stage and every attempt (same worker, same
/// VM, so plain `Rc`).
pub struct Pending {
    pub shared: Rc<Shared>,
    pub attempts: Attempts,
    /// Request headers the previous attempt set (removed before the next one sets its own).
    pub prev_set: Vec<String>,
    /// The previous attempt ended without a decision (reset or timeout at the router).
    pub undecided: bool,
    /// The attempt that produced the client's answer: its exchange, for metrics and records.
    pub final_exchange: Option<Exchange>,
}

thread_local! {
    static REGISTRY: RefCell<HashMap<u64, Rc<RefCell<Pending>>>> = RefCell::new(HashMap::new());
}

pub fn register(id: u64, p: Pending) {
    REGISTRY.with(|r| r.borrow_mut().insert(id, Rc::new(RefCell::new(p))));
}

pub fn lookup(id: u64) -> Option<Rc<RefCell<Pending>>> {
    REGISTRY.with(|r| r.borrow().get(&id).cloned())
}

pub fn unregister(id: u64) -> Option<Rc<RefCell<Pending>>> {
    REGISTRY.with(|r| r.borrow_mut().remove(&id))
}

#[derive(Default)]
pub struct Attempt {
    /// This attempt's context (a Vertex token fetch resumes it by id).
    pub context_id: u32,
    /// Waiting for a Vertex access token: the fetch resumes the attempt.
    waiting_for_token: bool,
    pending: Option<Rc<RefCell<Pending>>>,
    exchange: Option<Exchange>,
    entry: Option<PlanEntry>,
    /// The translation for this attempt's deployment failed: answered instead of its response.
    local_error: Option<crate::error::GatewayError>,
    /// The client's body for `local_error`.
    local_body: Option<Vec<u8>>,
    started_ns: u64,
    first_byte_ns: u64,
    /// `on_end` was recorded for this attempt's deployment.
    ended: bool,
    decided: bool,
    /// Seconds from the provider's `retry-after` header.
    header_retry_after: Option<u32>,
}

impl Context for Attempt {}

impl Attempt {
    pub fn new(context_id: u32) -> Self {
        Attempt {
            context_id,
            ..Default::default()
        }
    }
}

impl Attempt {
    fn state_key(&self, p: &Pending) -> Option<String> {
        let e = self.entry?;
        p.shared
            .gateway
            .config
            .deployment(e.model, e.deployment)
            .map(|d| d.state_key.clone())
    }

    fn route(&self) -> Route {
        self.entry.map_or(Route::Rejected, PlanEntry::route)
    }

    fn start(&mut self, body: &[u8], body_size: usize) {
        let Some(pending) = self.pending.clone() else {
            return;
        };
        let mut p = pending.borrow_mut();
        let shared = p.shared.clone();
        let config = &shared.gateway.config;
        let now_ms = host::now_nanos() / 1_000_000;
        if p.undecided {
            // The previous attempt got no answer at all (reset): the router retried on its own.
            p.undecided = false;
            let cooling = |e| routing::is_cooling(config, &SharedStore, e, now_ms);
            p.attempts
                .plan
                .next_after(config, ErrorClass::Connection, &cooling);
        }
        for h in std::mem::take(&mut p.prev_set) {
            let _ = host::remove_header(Map::RequestHeaders, &h);
        }
        p.attempts.plan.attempt_started();
        p.undecided = true;
        let Some(entry) = p.attempts.plan.current() else {
            return;
        };
        self.entry = Some(entry);
        self.started_ns = host::now_nanos();
        let a = &p.attempts;
        let fwd = shared
            .gateway
            .envelope(a.endpoint, a.content_type.as_deref(), body)
            .and_then(|env| {
                shared.gateway.forward(
                    a.endpoint,
                    &env,
                    body,
                    usize::from(entry.model),
                    usize::from(entry.deployment),
                    a.wildcard.as_deref(),
                    now_ms / 1000,
                    true,
                )
            });
        match fwd {
            Ok(fwd) => {
                // The attempts listener honours x-envoy-* headers of internal requests only.
                let _ = host::set_header(Map::RequestHeaders, "x-forwarded-for", "127.0.0.1");
                for (k, v) in &fwd.set_headers {
                    if let Err(e) = host::set_header(Map::RequestHeaders, k, v) {
                        log::warn!("llmux: setting request header {k} failed ({})", e.0);
                    }
                    if !k.starts_with(':') {
                        p.prev_set.push(k.clone());
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
                if let Some(tp) = fwd.token {
                    // Vertex AI with a service-account key (see wasm/token.rs).
                    p.prev_set.push("authorization".to_string());
                    match super::token::authorize(config, tp, self.context_id) {
                        Ok(super::token::Auth::Ready(t)) => {
                            let _ = host::set_header(
                                Map::RequestHeaders,
                                "authorization",
                                &format!("Bearer {t}"),
                            );
                        }
                        Ok(super::token::Auth::Wait) => self.waiting_for_token = true,
                        Err(r) => {
                            self.local_error = Some(crate::error::GatewayError::new(
                                r.status,
                                crate::error::kind_for_status(r.status),
                                String::from_utf8_lossy(&r.body).into_owned(),
                            ));
                            let _ = host::set_header(
                                Map::RequestHeaders,
                                &config.cluster_header,
                                "llmux-no-such-cluster",
                            );
                        }
                    }
                }
                self.exchange = Some(fwd.exchange);
            }
            Err(e) => {
                // This deployment cannot take the request: the attempt goes nowhere (an
                // unknown cluster) and its answer is replaced by this error.
                let _ = host::set_header(
                    Map::RequestHeaders,
                    &config.cluster_header,
                    "llmux-no-such-cluster",
                );
                p.prev_set.push(config.cluster_header.clone());
                self.local_error = Some(e);
            }
        }
        if let Some(key) = self.state_key(&p) {
            state::update(&SharedStore, &key, |s| s.on_start(now_ms));
        }
    }

    fn end(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        if let Some(p) = &self.pending {
            if let Some(key) = self.state_key(&p.borrow()) {
                state::update(&SharedStore, &key, |s| s.on_end());
            }
        }
    }

    /// A failed attempt: count it, maybe cool the deployment down, and decide whether the
    /// router retries. Returns the retry-after seconds to wait when it does.
    fn failed(&mut self, class: ErrorClass, status: u16) -> Option<Option<u32>> {
        self.decided = true;
        let pending = self.pending.clone()?;
        let mut p = pending.borrow_mut();
        p.undecided = false;
        let shared = p.shared.clone();
        let config = &shared.gateway.config;
        let now_ms = host::now_nanos() / 1_000_000;
        let route = self.route();
        let entry = self.entry?;
        if let Some(key) = self.state_key(&p) {
            let model = usize::from(entry.model);
            let cooled = state::update(&SharedStore, &key, |s| {
                routing::record_failure(s, config, model, class, status, now_ms)
            });
            if cooled == Some(true) {
                shared.apply(Update::Add(MetricKey::Cooldowns { route }, 1));
                log::info!(
                    "llmux: deployment {key} cools down for {} ms after {} ({status})",
                    config.router.cooldown.cooldown_ms,
                    class.name()
                );
            }
        }
        let cooling = |e| routing::is_cooling(config, &SharedStore, e, now_ms);
        match p.attempts.plan.next_after(config, class, &cooling) {
            Some(next) => {
                shared.apply(Update::Add(MetricKey::Retries { route, class }, 1));
                // Retry-After only matters when the same deployment is asked again.
                let wait = (next == entry)
                    .then(|| {
                        self.exchange
                            .as_ref()
                            .and_then(|ex| ex.retry_after.as_deref())
                            .and_then(|s| s.trim().parse::<u32>().ok())
                            .or(self.header_retry_after)
                    })
                    .flatten()
                    .filter(|&s| s <= config.router.max_retry_after_s);
                Some(wait)
            }
            None => {
                shared.apply(Update::Add(MetricKey::FailedAttempts { route, class }, 1));
                None
            }
        }
    }

    fn served_headers(&self) {
        let Some(pending) = &self.pending else {
            return;
        };
        let p = pending.borrow();
        let config = &p.shared.gateway.config;
        if !config.answer_headers {
            return;
        }
        if let Some(d) = self
            .entry
            .and_then(|e| config.deployment(e.model, e.deployment))
        {
            let _ = host::set_header(Map::ResponseHeaders, "x-llmux-deployment", &d.name);
        }
        let _ = host::set_header(
            Map::ResponseHeaders,
            "x-llmux-attempts",
            &p.attempts.plan.attempts.to_string(),
        );
    }

    /// This attempt's answer goes to the client: hand its exchange to the downstream stage.
    fn hand_over(&mut self, success: bool) {
        let Some(pending) = self.pending.clone() else {
            return;
        };
        let mut p = pending.borrow_mut();
        let shared = p.shared.clone();
        if success {
            p.undecided = false;
            if p.attempts.plan.attempts > 1 {
                shared.apply(Update::Add(
                    MetricKey::Failovers {
                        route: self.route(),
                    },
                    1,
                ));
            }
            if let Some(key) = self.state_key(&p) {
                let stream = self.exchange.as_ref().is_some_and(|e| e.stream);
                let usage = self.exchange.as_ref().and_then(|e| e.usage());
                let t = crate::observe::Timings {
                    start_ns: self.started_ns,
                    forwarded_ns: self.started_ns,
                    first_byte_ns: self.first_byte_ns,
                    end_ns: host::now_nanos(),
                };
                let config = &shared.gateway.config;
                state::update(&SharedStore, &key, |s| {
                    routing::record_success(s, config, &t, stream, usage.as_ref())
                });
            }
        }
        p.final_exchange = self.exchange.take();
    }
}

impl HttpContext for Attempt {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let id = host::get_header(Map::RequestHeaders, ATTEMPT_ID_HEADER)
            .ok()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok());
        let Some(id) = id else {
            return Action::Continue; // not a request LLMux planned
        };
        self.pending = lookup(id);
        if self.pending.is_none() {
            log::warn!(
                "llmux: attempt {id} has no plan in this VM: give both LLMux stages the same vm_config (vm_id, code, configuration)"
            );
            return Action::Continue;
        }
        if end_of_stream {
            self.start(&[], 0);
            return Action::Continue;
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.pending.is_none() || self.entry.is_some() {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = host::get_buffer(Buffer::RequestBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.start(&body, body_size);
        if self.waiting_for_token {
            return Action::Pause; // the token fetch resumes this attempt
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if self.pending.is_none() {
            return Action::Continue;
        }
        let status = host::get_header(Map::ResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(502);
        let details = host::get_header(Map::ResponseHeaders, ENVOY_DETAILS_HEADER)
            .ok()
            .flatten();
        if details.is_some() {
            let _ = host::remove_header(Map::ResponseHeaders, ENVOY_DETAILS_HEADER);
        }
        if let (Some(e), None) = (self.local_error.take(), &self.local_body) {
            // Nothing was sent: this deployment could not take the request.
            let class = ErrorClass::of(e.status, None, Some(&e));
            if self.failed(class, e.status).is_some() {
                let _ = host::set_header(Map::ResponseHeaders, RETRY_HEADER, "1");
                return Action::Continue;
            }
            self.served_headers();
            let p = self.pending.clone();
            let anthropic = p.as_ref().is_some_and(|p| {
                p.borrow().attempts.endpoint == crate::gateway::Endpoint::Messages
            });
            let body = if anthropic {
                crate::anthropic_api::error_body(&e)
            } else {
                e.body()
            };
            let _ = host::set_header(Map::ResponseHeaders, ":status", &e.status.to_string());
            let _ = host::set_header(Map::ResponseHeaders, "content-type", "application/json");
            let _ = host::set_header(
                Map::ResponseHeaders,
                "content-length",
                &body.len().to_string(),
            );
            self.local_error = Some(e);
            self.local_body = Some(body);
            self.exchange = None;
            self.hand_over(false);
            return if end_of_stream {
                Action::Continue
            } else {
                Action::Pause
            };
        }
        let Some(ex) = self.exchange.as_mut() else {
            return Action::Continue;
        };
        if status == 429 || status == 503 {
            // The provider's own Retry-After (a body may still give a better one).
            self.header_retry_after = host::get_header(Map::ResponseHeaders, "retry-after")
                .ok()
                .flatten()
                .and_then(|v| v.trim().parse::<u32>().ok());
        }
        let changes = ex.on_response_headers(status, details.as_deref());
        for k in &changes.remove {
            let _ = host::remove_header(Map::ResponseHeaders, k);
        }
        for (k, v) in &changes.set {
            let _ = host::set_header(Map::ResponseHeaders, k, v);
        }
        let error = !(200..300).contains(&status) || details.is_some();
        if !error {
            self.served_headers();
        }
        if end_of_stream {
            return self.finish_attempt(0, true);
        }
        if changes.wait_for_body {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.pending.is_none() {
            return Action::Continue;
        }
        if let Some(body) = &self.local_body {
            // The answer is our error, already in the headers' content-length.
            if end_of_stream {
                let _ = host::set_buffer(Buffer::ResponseBody, 0, body_size, body);
                self.end();
                return Action::Continue;
            }
            return Action::Pause;
        }
        if self.first_byte_ns == 0 && body_size > 0 {
            self.first_byte_ns = host::now_nanos();
        }
        self.finish_attempt(body_size, end_of_stream)
    }

    fn on_log(&mut self) {
        self.end();
        if !self.decided {
            if let Some(p) = &self.pending {
                // No answer reached this stage (reset, or the client went away).
                let mut p = p.borrow_mut();
                if p.final_exchange.is_none() && self.exchange.is_some() {
                    p.undecided = true;
                }
            }
        }
    }
}

impl Attempt {
    fn finish_attempt(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(ex) = self.exchange.as_mut() else {
            return Action::Continue;
        };
        let whole = ex.needs_whole_body();
        let data = if whole && !end_of_stream {
            Vec::new()
        } else {
            host::get_buffer(Buffer::ResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let action = ex.on_response_body(&data, body_size, end_of_stream);
        let upstream_status = ex.provider_status();
        if !end_of_stream {
            let retry_after = ex.retry_after.clone();
            return apply_body_action(action, body_size, retry_after.as_deref(), upstream_status);
        }
        if ex.failed() {
            let status = ex.provider_status();
            let class = ErrorClass::of(status, ex.envoy_details(), ex.last_error.as_ref());
            if let Some(wait) = self.failed(class, status) {
                let _ = host::set_header(Map::ResponseHeaders, RETRY_HEADER, "1");
                if let Some(s) = wait {
                    let _ =
                        host::set_header(Map::ResponseHeaders, RETRY_AFTER_HEADER, &s.to_string());
                }
                self.end();
                return Action::Continue;
            }
            self.served_headers();
            let retry_after = self.exchange.as_ref().and_then(|e| e.retry_after.clone());
            let a = apply_body_action(action, body_size, retry_after.as_deref(), upstream_status);
            self.end();
            self.hand_over(false);
            return a;
        }
        let retry_after = ex.retry_after.clone();
        let a = match action {
            BodyAction::Buffer => Action::Pause,
            other => apply_body_action(other, body_size, retry_after.as_deref(), upstream_status),
        };
        self.decided = true;
        self.end();
        self.hand_over(true);
        a
    }
}
