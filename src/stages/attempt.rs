//! The upstream stage: LLMux as an upstream HTTP filter on the attempts cluster, run by Envoy
//! once per attempt (docs/design.md fact 5). The downstream stage planned the request and left it
//! in this VM's [`Registry`] under `x-llmux-attempt-id`; each attempt takes the plan's current
//! entry, translates the client's body for that deployment, and on failure tells the router to
//! retry (`x-llmux-retry` response header, a `retriable_headers` match) or answers the final
//! error.

use std::cell::RefCell;
use std::rc::Rc;

use super::apply::{self, apply_body_action, TokenStep};
use super::vm::{Pending, Registry, ATTEMPT_ID_HEADER};
use crate::gateway::{BodyAction, Exchange, ForwardTo};
use crate::host::{read_body, status_of, Action, Body, HeaderMap, Host, SharedData};
use crate::observe::{MetricKey, Route, Update};
use crate::routing::{self, state, ErrorClass, PlanEntry};

/// Response header that makes the router retry (the route's `retriable_headers`).
pub const RETRY_HEADER: &str = "x-llmux-retry";
/// Seconds the router's back-off waits before the retry (`rate_limited_retry_back_off`).
pub const RETRY_AFTER_HEADER: &str = "x-llmux-retry-after";
/// Set by the attempts listener on Envoy's own replies (`local_reply_config`): its
/// `%RESPONSE_CODE_DETAILS%` (timeout, connect failure, reset).
pub const ENVOY_DETAILS_HEADER: &str = "x-llmux-envoy-details";

pub struct Attempt {
    /// This attempt's context (a Vertex token fetch resumes it by id).
    pub context_id: u32,
    registry: Rc<Registry>,
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

impl Attempt {
    pub fn new(context_id: u32, registry: Rc<Registry>) -> Self {
        Attempt {
            context_id,
            registry,
            waiting_for_token: false,
            pending: None,
            exchange: None,
            entry: None,
            local_error: None,
            local_body: None,
            started_ns: 0,
            first_byte_ns: 0,
            ended: false,
            decided: false,
            header_retry_after: None,
        }
    }
}

impl Attempt {
    fn state_key(&self, p: &Pending) -> Option<String> {
        let e = self.entry?;
        p.vm.config()
            .deployment(e.model, e.deployment)
            .map(|d| d.state_key.clone())
    }

    fn route(&self) -> Route {
        self.entry.map_or(Route::Rejected, PlanEntry::route)
    }

    fn start(&mut self, h: &dyn Host, body: &[u8], body_size: usize) {
        let Some(pending) = self.pending.clone() else {
            return;
        };
        let mut p = pending.borrow_mut();
        let vm = p.vm.clone();
        let config = vm.config();
        let now_ms = h.now_nanos() / 1_000_000;
        if p.undecided {
            // The previous attempt got no answer at all (reset): the router retried on its own.
            p.undecided = false;
            let cooling = |e| routing::is_cooling(config, &SharedData(h), e, now_ms);
            p.attempts
                .plan
                .next_after(config, ErrorClass::Connection, &cooling);
        }
        for name in std::mem::take(&mut p.prev_set) {
            let _ = h.remove_header(HeaderMap::Request, &name);
        }
        p.attempts.plan.attempt_started();
        p.undecided = true;
        let Some(entry) = p.attempts.plan.current() else {
            return;
        };
        self.entry = Some(entry);
        self.started_ns = h.now_nanos();
        let a = &p.attempts;
        let to = ForwardTo {
            endpoint: a.endpoint,
            model_index: usize::from(entry.model),
            deployment_index: usize::from(entry.deployment),
            wildcard: a.wildcard.as_deref(),
            now_unix: now_ms / 1000,
            attempt: true,
        };
        let beta = super::request::anthropic_beta(h, a.endpoint);
        let fwd = vm
            .gateway
            .envelope(a.endpoint, a.content_type.as_deref(), body)
            .and_then(|mut env| {
                env.anthropic_beta = beta;
                vm.gateway.forward(&env, body, &to)
            });
        match fwd {
            Ok(fwd) => {
                // The attempts listener honours x-envoy-* headers of internal requests only.
                let _ = h.set_header(HeaderMap::Request, "x-forwarded-for", "127.0.0.1");
                apply::forward(h, &fwd, body_size, None, Some(&mut p.prev_set));
                if fwd.token.is_some() {
                    // Vertex AI with a service-account key (see stages/token.rs).
                    p.prev_set.push("authorization".to_string());
                }
                match apply::add_token(h, &vm, &fwd, self.context_id) {
                    TokenStep::Done => {}
                    TokenStep::Wait => self.waiting_for_token = true,
                    TokenStep::Failed(r) => {
                        self.local_error = Some(crate::error::GatewayError::new(
                            r.status,
                            crate::error::kind_for_status(r.status),
                            String::from_utf8_lossy(&r.body).into_owned(),
                        ));
                        let _ = h.set_header(
                            HeaderMap::Request,
                            &config.cluster_header,
                            "llmux-no-such-cluster",
                        );
                    }
                }
                self.exchange = Some(fwd.exchange);
            }
            Err(e) => {
                // This deployment cannot take the request: the attempt goes nowhere (an
                // unknown cluster) and its answer is replaced by this error.
                let _ = h.set_header(
                    HeaderMap::Request,
                    &config.cluster_header,
                    "llmux-no-such-cluster",
                );
                p.prev_set.push(config.cluster_header.clone());
                self.local_error = Some(e);
            }
        }
        if let Some(key) = self.state_key(&p) {
            state::update(&SharedData(h), &key, |s| s.on_start(now_ms));
        }
    }

    fn end(&mut self, h: &dyn Host) {
        if self.ended {
            return;
        }
        self.ended = true;
        if let Some(p) = &self.pending {
            if let Some(key) = self.state_key(&p.borrow()) {
                state::update(&SharedData(h), &key, |s| s.on_end());
            }
        }
    }

    /// A failed attempt: count it, maybe cool the deployment down, and decide whether the
    /// router retries. Returns the retry-after seconds to wait when it does.
    fn failed(&mut self, h: &dyn Host, class: ErrorClass, status: u16) -> Option<Option<u32>> {
        self.decided = true;
        let pending = self.pending.clone()?;
        let mut p = pending.borrow_mut();
        p.undecided = false;
        let vm = p.vm.clone();
        let config = vm.config();
        let now_ms = h.now_nanos() / 1_000_000;
        let route = self.route();
        let entry = self.entry?;
        if let Some(key) = self.state_key(&p) {
            let model = usize::from(entry.model);
            let cooled = state::update(&SharedData(h), &key, |s| {
                routing::record_failure(s, config, model, class, status, now_ms)
            });
            if cooled == Some(true) {
                vm.apply(h, Update::Add(MetricKey::Cooldowns { route }, 1));
                log::info!(
                    "llmux: deployment {key} cools down for {} ms after {} ({status})",
                    config.router.cooldown.cooldown_ms,
                    class.name()
                );
            }
        }
        let cooling = |e| routing::is_cooling(config, &SharedData(h), e, now_ms);
        match p.attempts.plan.next_after(config, class, &cooling) {
            Some(next) => {
                vm.apply(h, Update::Add(MetricKey::Retries { route, class }, 1));
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
                vm.apply(
                    h,
                    Update::Add(MetricKey::FailedAttempts { route, class }, 1),
                );
                None
            }
        }
    }

    fn served_headers(&self, h: &dyn Host) {
        let Some(pending) = &self.pending else {
            return;
        };
        let p = pending.borrow();
        let config = p.vm.config();
        if !config.answer_headers {
            return;
        }
        if let Some(d) = self
            .entry
            .and_then(|e| config.deployment(e.model, e.deployment))
        {
            let _ = h.set_header(HeaderMap::Response, "x-llmux-deployment", &d.name);
        }
        let _ = h.set_header(
            HeaderMap::Response,
            "x-llmux-attempts",
            &p.attempts.plan.attempts.to_string(),
        );
    }

    /// This attempt's answer goes to the client: hand its exchange to the downstream stage.
    fn hand_over(&mut self, h: &dyn Host, success: bool) {
        let Some(pending) = self.pending.clone() else {
            return;
        };
        let mut p = pending.borrow_mut();
        let vm = p.vm.clone();
        if success {
            p.undecided = false;
            if p.attempts.plan.attempts > 1 {
                vm.apply(
                    h,
                    Update::Add(
                        MetricKey::Failovers {
                            route: self.route(),
                        },
                        1,
                    ),
                );
            }
            if let Some(key) = self.state_key(&p) {
                let stream = self.exchange.as_ref().is_some_and(|e| e.stream);
                let usage = self.exchange.as_ref().and_then(|e| e.usage());
                let t = crate::observe::Timings {
                    start_ns: self.started_ns,
                    forwarded_ns: self.started_ns,
                    first_byte_ns: self.first_byte_ns,
                    end_ns: h.now_nanos(),
                };
                let config = vm.config();
                state::update(&SharedData(h), &key, |s| {
                    routing::record_success(s, config, &t, stream, usage.as_ref())
                });
            }
        }
        p.final_exchange = self.exchange.take();
    }
}

impl Attempt {
    pub fn on_request_headers(&mut self, h: &dyn Host, end_of_stream: bool) -> Action {
        let id = h
            .header(HeaderMap::Request, ATTEMPT_ID_HEADER)
            .ok()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok());
        let Some(id) = id else {
            return Action::Continue; // not a request LLMux planned
        };
        self.pending = self.registry.lookup(id);
        if self.pending.is_none() {
            log::warn!(
                "llmux: attempt {id} has no plan in this VM: give both LLMux stages the same vm_config (vm_id, code, configuration)"
            );
            return Action::Continue;
        }
        if end_of_stream {
            self.start(h, &[], 0);
            return Action::Continue;
        }
        Action::Pause
    }

    pub fn on_request_body(
        &mut self,
        h: &dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        if self.pending.is_none() || self.entry.is_some() {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = read_body(h, Body::Request, body_size);
        self.start(h, &body, body_size);
        if self.waiting_for_token {
            return Action::Pause; // the token fetch resumes this attempt
        }
        Action::Continue
    }

    pub fn on_response_headers(&mut self, h: &dyn Host, end_of_stream: bool) -> Action {
        if self.pending.is_none() {
            return Action::Continue;
        }
        let status = status_of(h, HeaderMap::Response).unwrap_or(502);
        let details = h
            .header(HeaderMap::Response, ENVOY_DETAILS_HEADER)
            .ok()
            .flatten();
        if details.is_some() {
            let _ = h.remove_header(HeaderMap::Response, ENVOY_DETAILS_HEADER);
        }
        if let (Some(e), None) = (self.local_error.take(), &self.local_body) {
            // Nothing was sent: this deployment could not take the request.
            let class = ErrorClass::of(e.status, None, Some(&e));
            if self.failed(h, class, e.status).is_some() {
                let _ = h.set_header(HeaderMap::Response, RETRY_HEADER, "1");
                return Action::Continue;
            }
            self.served_headers(h);
            let api = self.pending.as_ref().map_or(Default::default(), |p| {
                p.borrow().attempts.endpoint.client_api()
            });
            let body = api.error_body(&e);
            let _ = h.set_header(HeaderMap::Response, ":status", &e.status.to_string());
            let _ = h.set_header(HeaderMap::Response, "content-type", "application/json");
            let _ = h.set_header(
                HeaderMap::Response,
                "content-length",
                &body.len().to_string(),
            );
            self.local_error = Some(e);
            self.local_body = Some(body);
            self.exchange = None;
            self.hand_over(h, false);
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
            self.header_retry_after = h
                .header(HeaderMap::Response, "retry-after")
                .ok()
                .flatten()
                .and_then(|v| v.trim().parse::<u32>().ok());
        }
        let changes = ex.on_response_headers(status, details.as_deref());
        for k in &changes.remove {
            let _ = h.remove_header(HeaderMap::Response, k);
        }
        for (k, v) in &changes.set {
            let _ = h.set_header(HeaderMap::Response, k, v);
        }
        let error = !(200..300).contains(&status) || details.is_some();
        if !error {
            self.served_headers(h);
        }
        if end_of_stream {
            return self.finish_attempt(h, 0, true);
        }
        if changes.wait_for_body {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    pub fn on_response_body(
        &mut self,
        h: &dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        if self.pending.is_none() {
            return Action::Continue;
        }
        if let Some(body) = &self.local_body {
            // The answer is our error, already in the headers' content-length.
            if end_of_stream {
                let _ = h.set_body(Body::Response, 0, body_size, body);
                self.end(h);
                return Action::Continue;
            }
            return Action::Pause;
        }
        if self.first_byte_ns == 0 && body_size > 0 {
            self.first_byte_ns = h.now_nanos();
        }
        self.finish_attempt(h, body_size, end_of_stream)
    }

    /// The attempt is over, however it ended.
    pub fn on_log(&mut self, h: &dyn Host) {
        self.end(h);
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
    fn finish_attempt(&mut self, h: &dyn Host, body_size: usize, end_of_stream: bool) -> Action {
        let Some(ex) = self.exchange.as_mut() else {
            return Action::Continue;
        };
        let whole = ex.needs_whole_body();
        let data = if whole && !end_of_stream {
            Vec::new()
        } else {
            read_body(h, Body::Response, body_size)
        };
        let action = ex.on_response_body(&data, body_size, end_of_stream);
        let upstream_status = ex.provider_status();
        if !end_of_stream {
            let retry_after = ex.retry_after.clone();
            return apply_body_action(
                h,
                action,
                body_size,
                retry_after.as_deref(),
                upstream_status,
            );
        }
        if ex.failed() {
            let status = ex.provider_status();
            let class = ErrorClass::of(status, ex.envoy_details(), ex.last_error.as_ref());
            if let Some(wait) = self.failed(h, class, status) {
                let _ = h.set_header(HeaderMap::Response, RETRY_HEADER, "1");
                if let Some(s) = wait {
                    let _ = h.set_header(HeaderMap::Response, RETRY_AFTER_HEADER, &s.to_string());
                }
                self.end(h);
                return Action::Continue;
            }
            self.served_headers(h);
            let retry_after = self.exchange.as_ref().and_then(|e| e.retry_after.clone());
            let a = apply_body_action(
                h,
                action,
                body_size,
                retry_after.as_deref(),
                upstream_status,
            );
            self.end(h);
            self.hand_over(h, false);
            return a;
        }
        let retry_after = ex.retry_after.clone();
        let a = match action {
            BodyAction::Buffer => Action::Pause,
            other => {
                apply_body_action(h, other, body_size, retry_after.as_deref(), upstream_status)
            }
        };
        self.decided = true;
        self.end(h);
        self.hand_over(h, true);
        a
    }
}
