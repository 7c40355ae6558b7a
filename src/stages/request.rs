//! The downstream (request) stage: one [`Request`] per client request. It reads the headers and
//! body, asks [`crate::gateway::Gateway`] what to do, applies the decision (direct path: the
//! translated request; failover path: a plan registered for the upstream stage), admits the
//! request through its limits, translates the answer back and, once, finishes it: usage, cost,
//! charges, metrics, filter state, the usage record, the deployment's load and health
//! (docs/design.md, "Why two stages").

use std::rc::Rc;

use super::admission::{Admission, Answer, CallerHeaders, RequestLimits, Subject};
use super::apply::{self, apply_body_action, sent_bit, ClientRequest, TokenStep};
use super::cache::{CacheRequestInfo, RequestCache, CACHE_HEADER};
use super::guard::{RemoteChecks, RequestGuard};
use super::recovery::Recovery;
use super::vm::{Pending, Vm, ATTEMPT_ID_HEADER};
use crate::client_api::headers::{allowed_values, always_forwarded, provider_allows};
use crate::gateway::{
    BodyAction, BodyRequest, Endpoint, Exchange, HeadersDecision, HeadersRequest, LocalResponse,
    INTERNAL_HEADER_PREFIX,
};
use crate::host::header_map::decode_map;
use crate::host::{read_body, status_of, Action, Body, Direction, HeaderMap, Host, SharedData};
use crate::observe::export::Pushed;
use crate::observe::record::{Finished, Summary, UsageRecord, MAX_LOGGED_BODY_BYTES};
use crate::observe::{cost_nanousd, request_updates, MetricKey, Route, Timings, Update};
use crate::routing::{state, ErrorClass};

/// The client's `anthropic-beta` header of a Messages request (Claude on Bedrock takes the betas
/// in the body); one host call, for that endpoint only.
pub(super) fn anthropic_beta(h: &dyn Host, endpoint: Endpoint) -> Option<String> {
    if endpoint != Endpoint::Messages {
        return None;
    }
    h.header(HeaderMap::Request, "anthropic-beta")
        .ok()
        .flatten()
}

/// One client request in the downstream stage.
pub struct Request {
    context_id: u32,
    vm: Option<Rc<Vm>>,
    pub(crate) timings: Timings,
    /// The filter answered this request itself, with this status.
    replied: Option<u16>,
    /// A model-routed request (counted in the metrics when refused).
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
    /// Which of the headers a translated request may drop the client sent ([`sent_bit`]).
    sent: u8,
    /// Client headers outside the gateway-wide allow-list: removed before the request goes to
    /// a provider that does not allow them ([`crate::client_api::headers`]).
    strip: Vec<String>,
    /// The caller's identity headers, when limits take the identity from headers.
    caller: CallerHeaders,
    /// The request is in the upstream stage's registry under this id (failover path).
    attempt_id: Option<u64>,
    /// Direct path: the deployment's shared-state key (routing counts its load and health).
    direct_state: Option<String>,
    /// Rate limits, budgets and parallel slots of this request.
    pub(crate) limits: RequestLimits,
    /// Failover path, streamed chat completion: mid-stream recovery watches the stream.
    recovery: Option<Recovery>,
    /// The request body's size (the prompt estimate when the provider's usage never comes).
    request_bytes: usize,
    /// A `/v1/files` or `/v1/batches` request: its endpoint, provider and answer's status (it
    /// has no exchange; its usage record is made from these).
    unrouted: Option<(&'static str, usize, u16)>,
    /// Streamed events the client got, counted while a tpm or budget limit applies (the
    /// completion estimate when the provider's usage never comes).
    events_streamed: u64,
    /// The response cache's part of this request (`cache` configured and applying to it).
    cache: Option<RequestCache>,
    /// The client's `cache-control` header.
    cache_control: Option<String>,
    /// The request's limits admitted it (it goes upstream once a cache lookup, if any, missed).
    admitted: bool,
    /// The guardrails of this request (`guardrails` configured and applying to it).
    guard: Option<RequestGuard>,
    /// The guardrails read the whole (non-streamed) answer: it is held until its end.
    guard_whole: bool,
    /// External guardrails checking the request before it is routed.
    remote: Option<RemoteChecks>,
    /// The request body (and the host's buffer size) while they check it.
    held: Option<(Vec<u8>, usize)>,
    /// The held body is the local guardrails' masked one.
    held_masked: bool,
    /// A whole answer held while remote guardrails check it.
    answer_hold: Option<AnswerHold>,
}

/// A whole (non-streamed) answer the host holds (its end returned `Pause`) while the remote
/// guardrails with `on: ["response"]` check it; released by the last verdict
/// ([`Request::on_http_call_response`]).
struct AnswerHold {
    checks: RemoteChecks,
    /// What to do with the body once allowed (the translation and the local guardrails').
    action: BodyAction,
    /// The host's buffered body size (what `set_body` replaces).
    body_size: usize,
    retry_after: Option<String>,
    upstream_status: u16,
    /// With `log_bodies` or a cache fill: the answer as it goes on when allowed unchanged.
    logged: Option<Vec<u8>>,
}

impl Request {
    /// A stream of a configured VM (`vm` `None`: unconfigured, everything passes through).
    pub fn new(context_id: u32, vm: Option<Rc<Vm>>) -> Request {
        let capture = vm.as_ref().is_some_and(|s| s.gateway.config.log_bodies);
        let mut limits = RequestLimits::default();
        limits.contexts = vm.as_ref().map(|v| (v.root_id, context_id));
        Request {
            context_id,
            vm,
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
            strip: Vec::new(),
            caller: CallerHeaders::default(),
            attempt_id: None,
            direct_state: None,
            limits,
            recovery: None,
            request_bytes: 0,
            unrouted: None,
            events_streamed: 0,
            cache: None,
            cache_control: None,
            admitted: false,
            guard: None,
            guard_whole: false,
            remote: None,
            held: None,
            held_masked: false,
            answer_hold: None,
        }
    }

    /// The exchange with the provider (after routing), for tests and logs.
    pub fn exchange(&self) -> Option<&Exchange> {
        self.exchange.as_ref()
    }

    /// The status the gateway answered with itself, if it did.
    pub fn replied(&self) -> Option<u16> {
        self.replied
    }

    pub fn on_grpc_call_response(&mut self, h: &dyn Host, token: u32, status: u32, size: usize) {
        let Some(vm) = self.vm.clone() else {
            return;
        };
        let answer = self
            .limits
            .on_answer(h, vm.config(), token, status, size, &|u| vm.apply(h, u));
        match answer {
            Answer::Nothing => {}
            Answer::ResumeRequest => {
                if self.after_admission(h, &vm) == Action::Continue {
                    let _ = h.resume(Direction::Request);
                }
            }
            Answer::ResumeResponse => {
                // A held answer still waiting for a remote guardrail is resumed by its verdict.
                if self.answer_hold.is_none() {
                    let _ = h.resume(Direction::Response);
                }
            }
            Answer::Reject(e, headers) => {
                self.reject_limited(h, &vm, &e, headers);
            }
        }
    }

    pub fn on_http_call_response(&mut self, h: &dyn Host, token: u32, body_size: usize) {
        let Some(vm) = self.vm.clone() else {
            return;
        };
        if let Some(hold) = self.answer_hold.as_mut() {
            if hold.checks.on_call_response(h, &vm, token, body_size) {
                if hold.checks.done() {
                    self.release_answer(h, &vm);
                }
                return;
            }
        }
        if let Some(checks) = self.remote.as_mut() {
            if checks.on_call_response(h, &vm, token, body_size) {
                if !checks.done() || self.replied.is_some() {
                    return;
                }
                let endpoint = self.endpoint.unwrap_or(Endpoint::ChatCompletions);
                if let Some(e) = checks.refused() {
                    let r = vm.gateway.error_response(endpoint, &e);
                    self.reply(h, &r);
                    return;
                }
                if let Some((body, size)) = self.held.take() {
                    if self.handle_body(h, &vm, endpoint, &body, size) == Action::Continue {
                        let _ = h.resume(Direction::Request);
                    }
                }
                return;
            }
        }
        if let Some(c) = self.cache.as_mut() {
            if c.on_call_response(h, &vm, token, body_size) {
                // The lookup is done: serve the hit, or send the request on once admitted.
                if self.replied.is_none()
                    && self.admitted
                    && self.after_admission(h, &vm) == Action::Continue
                {
                    let _ = h.resume(Direction::Request);
                }
                return;
            }
        }
        let Some(r) = self.recovery.as_mut() else {
            return;
        };
        if let Some(appended) = r.on_call_response(h, &vm, self.attempt_id, token, body_size) {
            self.capture_response(&appended);
            self.timings.end_ns = 0; // the continuation's end, not the failed stream's
            self.finish(h);
        }
    }

    /// The remote guardrails' verdicts on a held answer are in: the answer (or the block's or
    /// failure's error in the client's API) goes to the client, and the request is finished
    /// (its usage charged once whatever the verdict: the provider did the work, as for a local
    /// block).
    fn release_answer(&mut self, h: &dyn Host, vm: &Vm) {
        let Some(mut hold) = self.answer_hold.take() else {
            return;
        };
        let action = match hold.checks.refused() {
            Some(e) => {
                let endpoint = self.endpoint.unwrap_or(Endpoint::ChatCompletions);
                BodyAction::ReplaceWhole {
                    status: e.status,
                    body: vm.gateway.error_response(endpoint, &e).body,
                }
            }
            None => hold.action,
        };
        match &action {
            BodyAction::Replace(out) | BodyAction::ReplaceWhole { body: out, .. } => {
                self.capture_response(out)
            }
            _ => {
                if let Some(b) = hold.logged.take() {
                    self.capture_response(&b);
                }
            }
        }
        apply_body_action(
            h,
            action,
            hold.body_size,
            hold.retry_after.as_deref(),
            hold.upstream_status,
        );
        self.finish(h);
        // The usage charge's answer resumes it when it is still out (as at a body's end).
        if !self.limits.hold_response() {
            if let Err(e) = h.resume(Direction::Response) {
                log::warn!("llmux: resuming the response failed ({})", e.0);
            }
        }
    }

    fn capture_response(&mut self, bytes: &[u8]) {
        if let Some(c) = self.cache.as_mut() {
            c.fill(bytes);
        }
        if self.capture {
            let room = MAX_LOGGED_BODY_BYTES.saturating_sub(self.response_body.len());
            self.response_body
                .extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    /// Once per request, when its response is complete (or in `on_log` at the latest): count it
    /// in the metrics, charge its usage, write the filter state the access log prints, queue
    /// the usage record.
    fn finish(&mut self, h: &dyn Host) {
        if self.finished {
            return;
        }
        self.finished = true;
        let Some(vm) = self.vm.clone() else {
            return;
        };
        if self.timings.end_ns == 0 {
            self.timings.end_ns = h.now_nanos();
        }
        let (attempts, in_attempt) = self.take_final_exchange(&vm);
        self.direct_outcome(h, &vm);
        if let (None, None, Some((endpoint, provider, status))) =
            (&self.exchange, self.replied, self.unrouted)
        {
            if let Some(b) = &vm.exporter {
                let record = UsageRecord::unrouted(
                    vm.config(),
                    endpoint,
                    provider,
                    status,
                    &self.timings,
                    self.key,
                    self.request_id.as_deref(),
                );
                if b.borrow_mut().push(record, self.timings.end_ns) == Pushed::Dropped {
                    vm.apply(h, Update::Add(MetricKey::ExportRecordsDropped, 1));
                }
            }
            return;
        }
        let Some(ex) = &self.exchange else {
            if let (true, Some(status)) = (self.chat, self.replied) {
                request_updates(
                    Route::Rejected,
                    status,
                    false,
                    None,
                    None,
                    &self.timings,
                    |u| vm.apply(h, u),
                );
            }
            return;
        };
        // A recovered stream: the continuation's usage is the same request's.
        let continued = self.recovery.as_ref().and_then(|r| r.continuation_usage);
        // Answered from the response cache: no provider tokens (docs/caching.md).
        let served = self.cache.as_ref().is_some_and(RequestCache::served);
        let usage = match (ex.usage(), continued) {
            _ if served => None,
            (Some(a), Some(b)) => Some(a.plus(b)),
            (a, b) => a.or(b),
        };
        let route = match (ex.route, in_attempt) {
            (Route::Deployment { .. }, _) | (_, None) => ex.route,
            (_, Some(r)) => r,
        };
        let Route::Deployment { model, deployment } = route else {
            return;
        };
        let config = vm.config();
        let guardrails = self.guard.as_ref().and_then(|g| g.acted(&vm));
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
            cache: self.cache.as_ref().map(|c| c.outcome.name()),
            guardrails: guardrails.as_deref(),
        };
        let Some(summary) = Summary::of(config, &finished) else {
            return;
        };
        // The deployment's price, else the bundled one for the model it was sent as (wildcard
        // deployments are priced per request).
        let price = config
            .models
            .get(model)
            .and_then(|m| m.deployments.get(deployment))
            .and_then(|d| d.request_price(&ex.upstream_model));
        let price = price.as_ref();
        let cost = price.zip(usage.as_ref()).map(|(p, u)| cost_nanousd(p, u));
        let summary = summary.with_upstream(&ex.upstream_model, cost);
        // What is charged: the provider's usage, or the estimate when it never came (nothing
        // for a cached answer).
        let charged = match usage {
            _ if served => Some(crate::usage::Usage::default()),
            Some(u) => Some(u),
            None => self.estimated_usage(ex.status, ex.stream),
        };
        let charged_cost = match usage {
            Some(_) => cost,
            None => price.zip(charged.as_ref()).map(|(p, u)| cost_nanousd(p, u)),
        };
        if let Some(c) = self.cache.as_mut() {
            // Stored only when whole and successful (a recovered stream is two answers joined).
            let ok = (200..300).contains(&ex.status) && !ex.failed() && continued.is_none();
            c.complete(h, &vm, self.context_id, ok, usage.as_ref(), cost);
        }
        self.limits.charge(
            h,
            config,
            charged.as_ref(),
            charged_cost,
            self.timings.end_ns / 1_000_000_000,
            &|u| vm.apply(h, u),
        );
        if let (Some(c), true) = (cost, self.limits.headers_held) {
            let _ = h.set_header(
                HeaderMap::Response,
                "x-llmux-cost-usd",
                &format!("{:.9}", c as f64 / 1e9),
            );
        }
        request_updates(
            route,
            ex.status,
            ex.stream,
            usage.as_ref(),
            cost,
            &self.timings,
            |u| vm.apply(h, u),
        );
        record(h, &vm, &summary, &finished);
    }

    /// Failover path: the attempt that answered has the exchange that counts; it is taken
    /// here. Returns the attempts made and, when no attempt handed over its answer (the client
    /// went away first), the deployment the current attempt went to.
    fn take_final_exchange(&mut self, vm: &Vm) -> (u32, Option<Route>) {
        let Some(p) = self.attempt_id.and_then(|id| vm.registry.lookup(id)) else {
            return (1, None);
        };
        let mut p = p.borrow_mut();
        let attempts = u32::from(p.attempts.plan.attempts);
        match p.final_exchange.take() {
            Some(ex) => {
                self.exchange = Some(ex);
                (attempts, None)
            }
            None => (attempts, p.attempts.plan.current().map(|e| e.route())),
        }
    }

    /// The usage charged when the provider's never came (the client went away, the stream broke
    /// off, the provider sends none): the prompt estimated from the request body (~4 bytes a
    /// token, the router's estimate) and one completion token per streamed event the client got
    /// beyond the first (the role chunk). `None` after a provider error (not billed).
    fn estimated_usage(&self, status: u16, stream: bool) -> Option<crate::usage::Usage> {
        if status != 0 && !(200..300).contains(&status) {
            return None;
        }
        Some(crate::usage::Usage {
            prompt_tokens: u64::from(crate::routing::estimate_prompt_tokens(self.request_bytes)),
            completion_tokens: if stream {
                self.events_streamed.saturating_sub(1)
            } else {
                0
            },
            ..Default::default()
        })
    }

    /// Counts the streamed events in bytes going to the client, while usage is charged.
    fn count_events(&mut self, bytes: &[u8]) {
        if self.limits.charges_usage() && self.exchange.as_ref().is_some_and(|e| e.stream) {
            // Every event ends with an empty line: two line feeds (data lines add one each, so
            // this counts at least the events).
            let n = memchr::memchr_iter(b'\n', bytes).count() as u64;
            self.events_streamed = self.events_streamed.saturating_add(n / 2);
        }
    }

    /// Answers a request refused by a limit (429/503 with `x-ratelimit-*`).
    fn reject_limited(
        &mut self,
        h: &dyn Host,
        vm: &Vm,
        e: &crate::error::GatewayError,
        headers: Vec<(&'static str, String)>,
    ) -> Action {
        self.exchange = None;
        let endpoint = self.endpoint.unwrap_or(Endpoint::ChatCompletions);
        let mut r = vm.gateway.error_response(endpoint, e);
        r.headers
            .extend(headers.into_iter().map(|(k, v)| (k.to_string(), v)));
        self.reply(h, &r)
    }

    fn reply(&mut self, h: &dyn Host, r: &LocalResponse) -> Action {
        self.replied = Some(r.status);
        let headers: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Err(e) = h.send_response(r.status, &headers, &r.body) {
            log::warn!(
                "llmux: sending a local response failed (host status {})",
                e.0
            );
        }
        Action::Pause
    }

    fn handle_body(
        &mut self,
        h: &dyn Host,
        vm: &Rc<Vm>,
        endpoint: Endpoint,
        body: &[u8],
        body_size: usize,
    ) -> Action {
        // Guardrails first: a blocked request is refused before anything is routed or counted;
        // a masked one is routed, translated and cached as masked (the provider never sees it).
        // Re-entered after the remote guardrails' verdicts, `body` is already the masked one.
        let mut masked: Option<Vec<u8>> = None;
        let first = self.remote.is_none();
        if first && vm.config().guardrails.is_some() {
            match RequestGuard::on_request(h, vm, endpoint, body, self.key) {
                Ok(Some((g, b))) => {
                    self.guard = Some(g);
                    masked = b;
                }
                Ok(None) => {}
                Err(e) => {
                    let r = vm.gateway.error_response(endpoint, &e);
                    return self.reply(h, &r);
                }
            }
        } else if !first && self.held_masked {
            masked = Some(body.to_vec());
        }
        // External guardrails next, on the text the provider would get (masked values stay
        // masked for them too; a local block needs no call): the request waits for their
        // verdicts and comes back here with `remote` done.
        if first {
            let checked = masked.as_deref().unwrap_or(body);
            if let Some(mut checks) = RemoteChecks::start(h, vm, endpoint, checked, self.key) {
                if !checks.done() {
                    self.remote = Some(checks);
                    self.held = Some((checked.to_vec(), body_size));
                    self.held_masked = masked.is_some();
                    self.endpoint = Some(endpoint);
                    return Action::Pause;
                }
                if let Some(e) = checks.refused() {
                    let r = vm.gateway.error_response(endpoint, &e);
                    return self.reply(h, &r);
                }
            }
        }
        let body: &[u8] = masked.as_deref().unwrap_or(body);
        // The exact cache before routing: a hit needs no deployment, no translation and no
        // header writes — only the request's limits (docs/caching.md). A request the guardrails
        // masked is not cached (its answer is restored with this caller's values).
        if masked.is_none() && vm.config().cache.is_some() {
            if let Some(model) = requested_model(body) {
                self.cache = RequestCache::begin(
                    h,
                    vm,
                    &CacheRequestInfo {
                        endpoint,
                        body,
                        model: &model,
                        key: self.key,
                        cache_control: self.cache_control.as_deref(),
                    },
                );
                if self.cache.as_ref().is_some_and(RequestCache::exact_hit) {
                    return self.serve_exact_hit(h, vm, endpoint, model, body.len());
                }
            }
        }
        let now_ns = h.now_nanos();
        let beta = anthropic_beta(h, endpoint);
        let req = BodyRequest {
            endpoint,
            content_type: self.content_type.as_deref(),
            key: self.key,
            now_unix: now_ns / 1_000_000_000,
            pick: 0,
            anthropic_beta: beta.as_deref(),
        };
        let mut rng = || vm.next_random();
        let routed = vm.gateway.route_request(
            &req,
            body,
            &mut crate::gateway::RoutingInput {
                store: &SharedData(h),
                rng: &mut rng,
                now_ms: now_ns / 1_000_000,
                header_tags: self.tags.as_deref(),
            },
        );
        let mut fwd = match routed {
            Ok(fwd) => fwd,
            Err(e) => {
                let r = vm.gateway.error_response(endpoint, &e);
                return self.reply(h, &r);
            }
        };
        if masked.is_some() && fwd.body.is_none() {
            // A pass-through would send the client's own bytes: send the masked ones (their
            // length differs).
            fwd.body = masked.clone();
            if !fwd.remove_headers.contains(&"content-length") {
                fwd.remove_headers.push("content-length");
            }
        }
        if let Some(r) = fwd.answer.take() {
            // Answered by the gateway once routed (an estimated token count).
            return self.reply(h, &r);
        }
        // (The routing decision itself takes microseconds: one clock read serves both.)
        self.timings.forwarded_ns = now_ns;
        self.request_bytes = body.len();
        if self.capture {
            self.request_body = Some(body[..body.len().min(MAX_LOGGED_BODY_BYTES)].to_vec());
        }
        self.send_forward(h, vm, endpoint, body, body_size, &mut fwd);
        let config = vm.config();
        // Vertex AI with a service-account key: add the cached token, or wait for it. (A
        // request waiting for a token fetch is resumed by the fetch; its rate-limit check still
        // runs now.)
        let token = apply::add_token(h, vm, &fwd, self.context_id);
        let model = fwd.exchange.model.clone();
        self.exchange = Some(fwd.exchange);
        self.endpoint = Some(endpoint);
        let waiting_for_token = match token {
            TokenStep::Done => false,
            TokenStep::Wait => true,
            TokenStep::Failed(r) => {
                self.exchange = None;
                return self.reply(h, &r);
            }
        };
        // The exact store missed: the semantic lookup, unless the request waits for a token.
        if let Some(c) = self.cache.as_mut() {
            c.after_exact_miss(h, vm, !waiting_for_token);
        }
        let who = Subject {
            key: self.key,
            headers: &self.caller,
            model: &model,
        };
        let admission = self
            .limits
            .admit(h, config, &who, now_ns / 1_000_000_000, &|u| vm.apply(h, u));
        match admission {
            Admission::Continue if waiting_for_token => Action::Pause,
            Admission::Continue => self.after_admission(h, vm),
            Admission::Wait => Action::Pause,
            Admission::Reject(e, headers) => self.reject_limited(h, vm, &e, headers),
        }
    }

    /// An exact cache hit, found before routing: admitted through the request's limits like any
    /// request, then answered (accounted under the group's first deployment, with no tokens).
    fn serve_exact_hit(
        &mut self,
        h: &dyn Host,
        vm: &Rc<Vm>,
        endpoint: Endpoint,
        model: String,
        body_len: usize,
    ) -> Action {
        let config = vm.config();
        let now_ns = h.now_nanos();
        let stream = self.cache.as_ref().is_some_and(RequestCache::stream);
        let mut ex = Exchange::relay(model.clone(), stream, endpoint);
        if let Some((group, _)) = config.resolve_model(&model) {
            ex.route = Route::Deployment {
                model: group,
                deployment: 0,
            };
        }
        self.exchange = Some(ex);
        self.endpoint = Some(endpoint);
        self.request_bytes = body_len;
        self.timings.forwarded_ns = now_ns;
        let who = Subject {
            key: self.key,
            headers: &self.caller,
            model: &model,
        };
        let admission = self
            .limits
            .admit(h, config, &who, now_ns / 1_000_000_000, &|u| vm.apply(h, u));
        match admission {
            Admission::Continue => self.after_admission(h, vm),
            Admission::Wait => Action::Pause,
            Admission::Reject(e, headers) => self.reject_limited(h, vm, &e, headers),
        }
    }

    /// The request's limits admitted it: serve the cache's hit, wait for its lookup, or go on.
    fn after_admission(&mut self, h: &dyn Host, vm: &Vm) -> Action {
        self.admitted = true;
        let Some(c) = self.cache.as_mut() else {
            return Action::Continue;
        };
        if c.pending() {
            return Action::Pause;
        }
        let Some(mut r) = c.take_hit() else {
            return Action::Continue;
        };
        r.headers.extend(
            self.limits
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone())),
        );
        if let Some(ex) = self.exchange.as_mut() {
            ex.status = r.status;
        }
        let _ = vm;
        self.reply(h, &r)
    }

    /// Applies the forward decision to the request the host holds (client headers outside the
    /// allow-list first, then the decision's headers and body), and starts its bookkeeping: the
    /// failover path's plan in the registry, or the direct path's deployment load.
    fn send_forward(
        &mut self,
        h: &dyn Host,
        vm: &Rc<Vm>,
        endpoint: Endpoint,
        body: &[u8],
        body_size: usize,
        fwd: &mut crate::gateway::Forward,
    ) {
        let now_ns = self.timings.forwarded_ns;
        let config = vm.config();
        // Before the decision's own headers are set: a provider's configured header may share a
        // name with a client header that is removed.
        match (&fwd.attempts, fwd.exchange.route) {
            (Some(a), _) => {
                let providers = a
                    .plan
                    .entries
                    .iter()
                    .filter_map(|e| config.deployment(e.model, e.deployment))
                    .map(|d| d.provider);
                self.strip_client_headers(h, config, providers);
            }
            (None, Route::Deployment { model, deployment }) => {
                let provider = config
                    .models
                    .get(model)
                    .and_then(|m| m.deployments.get(deployment))
                    .map(|d| d.provider);
                self.strip_client_headers(h, config, provider.into_iter());
            }
            _ => {}
        }
        let client = ClientRequest {
            path: &self.path,
            content_type: self.content_type.as_deref(),
            sent: self.sent,
        };
        apply::forward(h, fwd, body_size, Some(&client), None);
        if let Some(attempts) = fwd.attempts.take() {
            self.recovery = Recovery::for_request(vm, endpoint, body, &attempts);
            let id = vm.next_attempt_id();
            let _ = h.set_header(HeaderMap::Request, ATTEMPT_ID_HEADER, &id.to_string());
            vm.registry.register(
                id,
                Pending {
                    vm: vm.clone(),
                    attempts,
                    prev_set: Vec::new(),
                    undecided: false,
                    final_exchange: None,
                },
            );
            self.attempt_id = Some(id);
        } else if let Route::Deployment { model, deployment } = fwd.exchange.route {
            if let Some(d) = config
                .models
                .get(model)
                .filter(|m| config.router.tracks(m))
                .and_then(|m| m.deployments.get(deployment))
            {
                let now_ms = now_ns / 1_000_000;
                state::update(&SharedData(h), &d.state_key, |s| s.on_start(now_ms));
                self.direct_state = Some(d.state_key.clone());
            }
        }
    }

    /// `GET /llmux/status` (or the configured path): the router's view, to allowed clients.
    fn router_status(
        &mut self,
        h: &dyn Host,
        vm: &Vm,
        method: &str,
        status: &crate::routing::StatusConfig,
    ) -> Action {
        let ip = h
            .property(&["source", "address"])
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
            let now_ms = h.now_nanos() / 1_000_000;
            LocalResponse::json(
                200,
                crate::routing::status::render(vm.config(), &SharedData(h), now_ms),
            )
        };
        self.reply(h, &r)
    }

    /// Removes the client headers outside the allow-list that not every provider the request
    /// may reach allows (one host call per header removed; none for the usual SDK headers).
    fn strip_client_headers(
        &mut self,
        h: &dyn Host,
        config: &crate::config::Config,
        providers: impl Iterator<Item = usize>,
    ) {
        if self.strip.is_empty() {
            return;
        }
        let targets: Vec<&crate::config::Provider> =
            providers.filter_map(|p| config.providers.get(p)).collect();
        let allows: Vec<&[_]> = targets
            .iter()
            .map(|p| p.client_headers.as_slice())
            .collect();
        for name in std::mem::take(&mut self.strip) {
            if name == "anthropic-beta" {
                // Providers with an `anthropic_beta` list get the client's betas from it only.
                let lists: Option<Vec<&[_]>> = targets
                    .iter()
                    .map(|p| p.anthropic_beta.as_deref())
                    .collect();
                if let Some(lists) = lists.filter(|l| !l.is_empty()) {
                    let value = h
                        .header(HeaderMap::Request, &name)
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    let kept = allowed_values(&value, &lists);
                    let _ = if kept.is_empty() {
                        h.remove_header(HeaderMap::Request, &name)
                    } else {
                        h.set_header(HeaderMap::Request, &name, &kept)
                    };
                    continue;
                }
            }
            let kept = !allows.is_empty() && allows.iter().all(|a| provider_allows(&name, a));
            if !kept {
                let _ = h.remove_header(HeaderMap::Request, &name);
            }
        }
    }

    /// Direct path: the deployment's load and health, once the answer is known.
    fn direct_outcome(&mut self, h: &dyn Host, vm: &Vm) {
        let Some(key) = self.direct_state.take() else {
            return;
        };
        let store = SharedData(h);
        let now_ms = h.now_nanos() / 1_000_000;
        let config = vm.config();
        let ended = |store: &SharedData<'_>| state::update(store, &key, |s| s.on_end());
        let Some(ex) = &self.exchange else {
            ended(&store);
            return;
        };
        if ex.status == 0 {
            // No answer (the client went away).
            ended(&store);
            return;
        }
        let route = ex.route;
        let Route::Deployment { model, .. } = route else {
            ended(&store);
            return;
        };
        if ex.failed() {
            let class = ErrorClass::of(
                ex.provider_status(),
                ex.envoy_details(),
                ex.last_error.as_ref(),
            );
            let status = ex.provider_status();
            let cooled = state::update(&store, &key, |s| {
                s.on_end();
                crate::routing::record_failure(s, config, model, class, status, now_ms)
            });
            vm.apply(
                h,
                Update::Add(MetricKey::FailedAttempts { route, class }, 1),
            );
            if cooled == Some(true) {
                vm.apply(h, Update::Add(MetricKey::Cooldowns { route }, 1));
            }
            return;
        }
        let usage = ex.usage();
        let (t, stream) = (&self.timings, ex.stream);
        state::update(&store, &key, |s| {
            s.on_end();
            crate::routing::record_success(s, config, t, stream, usage.as_ref());
        });
    }

    pub fn on_request_headers(&mut self, h: &dyn Host, end_of_stream: bool) -> Action {
        let Some(vm) = self.vm.clone() else {
            return Action::Continue;
        };
        self.timings.start_ns = h.now_nanos();
        let raw_headers = h.headers(HeaderMap::Request).unwrap_or_default();
        let headers = decode_map(&raw_headers);
        let mut method = "";
        let mut path = "";
        let mut content_length = None;
        let (mut bearer, mut x_api_key, mut api_key) = (None, None, None);
        let mut provider_hint = None;
        let config = vm.config();
        let tags_header = config.router.tags_header.as_str();
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
                k if k.starts_with(INTERNAL_HEADER_PREFIX) || k == config.cluster_header => {
                    // Only the gateway sets these: a client's copy would spoof its decisions (the
                    // cluster header picks the upstream, whatever its name).
                    let _ = h.remove_header(HeaderMap::Request, k);
                }
                k => {
                    if k == "cache-control" {
                        self.cache_control = Some(String::from_utf8_lossy(v).into_owned());
                    }
                    self.caller.see(config, k, v);
                    if k == tags_header {
                        self.tags = Some(String::from_utf8_lossy(v).into_owned());
                    }
                    if !always_forwarded(k, &config.client_headers) {
                        self.strip.push(k.to_string());
                    }
                }
            }
        }
        if let Some(status) = &vm.config().router.status {
            if path.split('?').next() == Some(status.path.as_str()) {
                return self.router_status(h, &vm, method, status);
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
        match vm.gateway.on_request_headers(&req) {
            HeadersDecision::Respond(r) => self.reply(h, &r),
            HeadersDecision::PassThrough => Action::Continue,
            HeadersDecision::Forward(u) => {
                self.unrouted = Some((u.endpoint, u.provider, 0));
                // Files and batches: the key's and team's request limits apply (no tokens).
                self.key = u.key;
                let who = Subject {
                    key: u.key,
                    headers: &self.caller,
                    model: "",
                };
                let now_unix = self.timings.start_ns / 1_000_000_000;
                let admission = self
                    .limits
                    .admit(h, config, &who, now_unix, &|m| vm.apply(h, m));
                if let Admission::Reject(e, headers) = admission {
                    return self.reject_limited(h, &vm, &e, headers);
                }
                self.strip_client_headers(h, config, std::iter::once(u.provider));
                for (k, v) in &u.set {
                    let _ = h.set_header(HeaderMap::Request, k, v);
                }
                for k in &u.remove {
                    let _ = h.remove_header(HeaderMap::Request, k);
                }
                match admission {
                    Admission::Wait => Action::Pause,
                    _ => Action::Continue,
                }
            }
            HeadersDecision::ReadBody(endpoint, key) => {
                self.key = key;
                self.chat = true;
                if end_of_stream {
                    self.handle_body(h, &vm, endpoint, &[], 0)
                } else {
                    self.endpoint = Some(endpoint);
                    vm.body_watch.on_pause(
                        self.context_id,
                        self.timings.start_ns,
                        content_length,
                        endpoint.client_api(),
                    );
                    Action::Pause
                }
            }
        }
    }

    pub fn on_request_body(
        &mut self,
        h: &dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        if self.replied.is_some() || self.exchange.is_some() {
            return Action::Continue;
        }
        let (Some(vm), Some(endpoint)) = (self.vm.clone(), self.endpoint) else {
            return Action::Continue;
        };
        vm.body_watch.on_body();
        if !end_of_stream {
            if let Some(r) = vm.gateway.body_too_large(endpoint, body_size) {
                return self.reply(h, &r);
            }
            return Action::Pause;
        }
        let body = read_body(h, Body::Request, body_size);
        self.handle_body(h, &vm, endpoint, &body, body_size)
    }

    pub fn on_response_headers(&mut self, h: &dyn Host, end_of_stream: bool) -> Action {
        if self.replied.is_some() {
            return Action::Continue;
        }
        let Some(ex) = self.exchange.as_mut() else {
            if let Some((_, _, status)) = &mut self.unrouted {
                *status = status_of(h, HeaderMap::Response).unwrap_or(502);
            }
            return Action::Continue;
        };
        let status = status_of(h, HeaderMap::Response).unwrap_or(502);
        // Envoy's own replies (connect failure, timeout) are errors: a success needs no look.
        let details = if status >= 400 {
            h.property(&["response", "code_details"])
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
        // The guardrails read a whole successful answer before the client gets any of it.
        self.guard_whole = !ex.stream
            && (200..300).contains(&status)
            && details.is_none()
            && match (&self.guard, &self.vm) {
                (Some(g), Some(vm)) => g.on_answer(vm) || g.remote_on_answer(),
                _ => false,
            };
        if ex.stream && (200..300).contains(&status) && details.is_none() {
            if let (Some(g), Some(vm)) = (&self.guard, &self.vm) {
                if g.remote_on_answer() {
                    g.skip_remote_for_stream(h, vm);
                }
            }
        }
        if let Some(c) = &self.cache {
            let _ = h.set_header(HeaderMap::Response, CACHE_HEADER, c.header_value());
        }
        if !ex.is_relay() && ex.answer_headers {
            if let (Some(vm), Route::Deployment { model, deployment }) = (&self.vm, ex.route) {
                if let Some(d) = vm
                    .config()
                    .models
                    .get(model)
                    .and_then(|m| m.deployments.get(deployment))
                {
                    let _ = h.set_header(HeaderMap::Response, "x-llmux-deployment", &d.name);
                    let _ = h.set_header(HeaderMap::Response, "x-llmux-attempts", "1");
                }
            }
        }
        let wait_for_body = changes.wait_for_body || self.guard_whole;
        self.limits.headers_held = wait_for_body && !end_of_stream;
        for (k, v) in &self.limits.headers {
            let _ = h.set_header(HeaderMap::Response, k, v);
        }
        for k in &changes.remove {
            let _ = h.remove_header(HeaderMap::Response, k);
        }
        for (k, v) in &changes.set {
            if let Err(e) = h.set_header(HeaderMap::Response, k, v) {
                log::warn!("llmux: setting response header {k} failed ({})", e.0);
            }
        }
        if end_of_stream {
            self.finish(h);
        }
        if wait_for_body && !end_of_stream {
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
        if self.replied.is_some() || self.exchange.is_none() {
            return Action::Continue;
        }
        if (self.timings.first_byte_ns == 0 && body_size > 0) || end_of_stream {
            // One clock read per callback: the last one is also the end (see `finish`).
            let now = h.now_nanos();
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
        if let (true, Some(vm), Some(r)) = (ok, self.vm.clone(), self.recovery.as_mut()) {
            let (action, out) = r.on_body(h, &vm, self.attempt_id, body_size, end_of_stream);
            self.capture_response(&out);
            self.count_events(&out);
            if end_of_stream && action == Action::Continue {
                self.finish(h);
            }
            return action; // Pause: the continuation's answer resumes it (and finishes)
        }
        let action = self.response_body_action(h, body_size, end_of_stream);
        if self.answer_hold.is_some() {
            // Remote guardrails check the answer: it is finished (charged, recorded) when their
            // verdict releases it, or in `on_log` if the client goes away first.
            return action;
        }
        if end_of_stream {
            self.finish(h);
            if self.limits.hold_response() {
                // The usage charge is recorded before the client sees the end.
                return Action::Pause;
            }
        }
        action
    }

    /// The stream is over, however it ended (the host's last callback for it).
    pub fn on_log(&mut self, h: &dyn Host) {
        // A verdict arriving after the stream is over has nothing left to release.
        self.answer_hold = None;
        self.finish(h);
        if let (Some(id), Some(vm)) = (self.attempt_id.take(), &self.vm) {
            vm.registry.unregister(id);
        }
        self.limits.release(h);
        if let Some(vm) = &self.vm {
            vm.body_watch.on_end(self.context_id);
            vm.report_memory(h);
        }
        if !log::log_enabled!(log::Level::Debug) {
            return;
        }
        let latency_ms = h.now_nanos().saturating_sub(self.timings.start_ns) / 1_000_000;
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

    fn response_body_action(
        &mut self,
        h: &dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        if self.guard_whole && !end_of_stream {
            return Action::Pause; // the host buffers it: the guardrails read it whole
        }
        let Some(ex) = self.exchange.as_mut() else {
            return Action::Continue;
        };
        let data = if ex.needs_whole_body() && !end_of_stream {
            Vec::new() // not read until the end: the host buffers it
        } else {
            read_body(h, Body::Response, body_size)
        };
        let mut action = ex.on_response_body(&data, body_size, end_of_stream);
        let status = ex.status;
        let endpoint = self.endpoint.unwrap_or(Endpoint::ChatCompletions);
        // What the remote answer guardrails read: the answer in the client's API as the
        // provider wrote it — before the local guardrails restore the client's masked values
        // (those stay placeholders for them, as for the provider).
        let for_remote: Option<Vec<u8>> = (self.guard_whole
            && end_of_stream
            && self
                .guard
                .as_ref()
                .is_some_and(RequestGuard::remote_on_answer))
        .then(|| match &action {
            BodyAction::Continue => Some(data.clone()),
            BodyAction::Replace(b) | BodyAction::ReplaceWhole { body: b, .. } => Some(b.clone()),
            BodyAction::Buffer => None,
        })
        .flatten();
        if let (Some(g), Some(vm)) = (self.guard.as_mut(), self.vm.clone()) {
            let whole = self.guard_whole;
            action = guard_answer(
                h,
                &vm,
                g,
                (action, &data),
                status,
                end_of_stream,
                whole,
                endpoint,
            );
        }
        let Some(ex) = self.exchange.as_mut() else {
            return Action::Continue;
        };
        let retry_after = ex.retry_after.clone();
        let upstream_status = ex.provider_status();
        // A whole successful answer the local guardrails let through: the remote guardrails
        // with `on: ["response"]` check it before the client gets any of it.
        let locally_blocked =
            matches!(&action, BodyAction::ReplaceWhole { status: s, .. } if *s != status);
        if self.guard_whole && end_of_stream && (200..300).contains(&status) && !locally_blocked {
            if let (Some(g), Some(vm)) = (self.guard.as_ref(), self.vm.clone()) {
                let checks = match &for_remote {
                    Some(b) => RemoteChecks::start_answer(h, &vm, g, b),
                    None => None,
                };
                if let Some(mut checks) = checks {
                    if !checks.done() {
                        let logged = ((self.capture || self.cache.is_some())
                            && matches!(action, BodyAction::Continue))
                        .then(|| data.clone());
                        self.answer_hold = Some(AnswerHold {
                            checks,
                            action,
                            body_size,
                            retry_after,
                            upstream_status,
                            logged,
                        });
                        return Action::Pause; // released by the last verdict
                    }
                    if let Some(e) = checks.refused() {
                        action = BodyAction::ReplaceWhole {
                            status: e.status,
                            body: vm.gateway.error_response(endpoint, &e).body,
                        };
                    }
                }
            }
        }
        match &action {
            BodyAction::Continue => {
                self.capture_response(&data);
                self.count_events(&data);
            }
            BodyAction::Replace(out) | BodyAction::ReplaceWhole { body: out, .. } => {
                self.capture_response(out);
                self.count_events(out);
            }
            BodyAction::Buffer => {}
        }
        apply_body_action(
            h,
            action,
            body_size,
            retry_after.as_deref(),
            upstream_status,
        )
    }
}

/// The `model` a request body names (top level only), for the cache's lookup before routing.
fn requested_model(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Model<'a> {
        #[serde(borrow)]
        model: Option<std::borrow::Cow<'a, str>>,
    }
    let m: Model<'_> = serde_json::from_slice(body).ok()?;
    m.model.map(std::borrow::Cow::into_owned)
}

/// The guardrails over the client's answer: a whole answer (`whole`) is scanned at its end
/// (rewritten, or replaced by the block error), a stream chunk by chunk.
#[allow(clippy::too_many_arguments)]
fn guard_answer(
    h: &dyn Host,
    vm: &Vm,
    g: &mut RequestGuard,
    (action, data): (BodyAction, &[u8]),
    status: u16,
    end: bool,
    whole: bool,
    endpoint: Endpoint,
) -> BodyAction {
    if !(200..300).contains(&status) || !g.on_answer(vm) {
        return action;
    }
    let client: &[u8] = match &action {
        BodyAction::Continue => data,
        BodyAction::Replace(out) | BodyAction::ReplaceWhole { body: out, .. } => out,
        BodyAction::Buffer => return action,
    };
    if whole {
        if !end {
            return action;
        }
        return match g.whole_answer(h, vm, client) {
            Ok(None) => action,
            Ok(Some(body)) => BodyAction::ReplaceWhole { status, body },
            Err(e) => BodyAction::ReplaceWhole {
                status: e.status,
                body: vm.gateway.error_response(endpoint, &e).body,
            },
        };
    }
    BodyAction::Replace(g.stream_chunk(h, vm, client, end))
}

/// A finished request's filter state (what access logs print) and usage record (queued for
/// export).
fn record(h: &dyn Host, vm: &Vm, summary: &Summary, finished: &Finished<'_>) {
    let config = vm.config();
    if config.filter_state {
        summary.filter_state(|name, value| {
            let _ = h.set_property(name, value);
        });
        if config.guardrails.is_some() {
            let acted = finished.guardrails.unwrap_or("-");
            let _ = h.set_property("llmux_guardrails", acted.as_bytes());
        }
    }
    if let Some(b) = &vm.exporter {
        let record = UsageRecord::from_summary(config, finished, summary);
        if b.borrow_mut().push(record, finished.timings.end_ns) == Pushed::Dropped {
            vm.apply(h, Update::Add(MetricKey::ExportRecordsDropped, 1));
        }
    }
}
