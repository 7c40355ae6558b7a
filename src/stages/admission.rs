//! Limit admission and charging for one request: calls the rate-limit service (a gRPC
//! callout), keeps the per-instance counters and parallel slots in shared data
//! (compare-and-swap), reads header/JWT identities. The arithmetic is [`crate::limits`]'s.

use crate::config::Config;
use crate::error::GatewayError;
use crate::host::{Body, Host, HostError};
use crate::limits::config::{IdentitySource, MissingIdentity};
use crate::limits::{self, proto, Check, FailureMode, Outcome, Scope, ScopeKind, Verdict};
use crate::observe::{MetricKey, Update};
use crate::providers::Usage;

const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
const METHOD: &str = "ShouldRateLimit";

/// What the filter does after admission.
pub enum Admission {
    Continue,
    /// A call to the RLS is out: pause the request until [`RequestLimits::on_answer`].
    Wait,
    Reject(GatewayError, Vec<(&'static str, String)>),
}

/// What the filter does after an RLS answer.
pub enum Answer {
    Nothing,
    ResumeRequest,
    ResumeResponse,
    Reject(GatewayError, Vec<(&'static str, String)>),
}

#[derive(Default, PartialEq)]
enum Phase {
    #[default]
    Idle,
    Admitting,
    Charging,
}

/// One request's limits.
#[derive(Default)]
pub struct RequestLimits {
    checks: Vec<Check>,
    local: Vec<Outcome>,
    /// Shared-data key of the parallel slot this request holds.
    slot: Option<String>,
    pending: Vec<u32>,
    phase: Phase,
    /// `x-ratelimit-*` for the response.
    pub headers: Vec<(&'static str, String)>,
    charged: bool,
    /// The response end is held until the charge is answered.
    holding_response: bool,
    /// When this request's hits were counted locally (a refusal gives them back).
    counted_unix: u64,
    /// The VM's root context and this request's stream: charges are sent from the root, so
    /// that a client going away cannot cancel them (the host cancels a stream's callouts with
    /// the stream).
    pub contexts: Option<(u32, u32)>,
    /// The caller is named by a header or JWT identity: its local counters live in slots.
    slotted: bool,
    /// The response headers are still held (a buffered answer): `x-llmux-cost-usd` can be set.
    pub headers_held: bool,
}

fn local_key_err(e: HostError) -> bool {
    e == HostError::CAS_MISMATCH
}

/// Adds `hits` to a local counter with compare-and-swap (a few tries under contention).
/// Local counters of callers named by a header or JWT identity (values a client may choose)
/// live in this many slots per limit, by a hash of the value: shared data (which is never
/// freed) stays bounded whatever callers send. Two identities in one slot share its local
/// count; the rate-limit service keeps one counter per identity, expiring with its window.
pub const IDENTITY_SLOTS: u64 = 16_384;

/// The longest header or JWT identity accepted (400 beyond).
pub const MAX_IDENTITY_BYTES: usize = 128;

/// FNV-1a, 64 bits: spreads identities over [`IDENTITY_SLOTS`].
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The shared-data key of a check's local counter (a slot for client-chosen identities).
fn counter_key(check: &Check, slotted: bool) -> String {
    let key = check.local_key();
    if !slotted || check.scope != ScopeKind::Key {
        return key;
    }
    let prefix = key.strip_suffix(check.id.as_str()).unwrap_or(&key);
    format!("{prefix}#{}", fnv1a(&check.id) % IDENTITY_SLOTS)
}

fn local_count(h: &dyn Host, check: &Check, slotted: bool, now: u64, hits: u64) -> Outcome {
    let key = counter_key(check, slotted);
    let mut last = limits::local_count(None, now, check, hits).1;
    for _ in 0..16 {
        let (prev, cas) = h.shared_data(&key).unwrap_or((None, 0));
        let (bytes, o) = limits::local_count(prev.as_deref(), now, check, hits);
        last = o;
        match h.set_shared_data(&key, &bytes, cas) {
            Ok(()) => return o,
            Err(e) if local_key_err(e) => continue,
            Err(_) => return o,
        }
    }
    last
}

/// What taking a parallel slot came to.
#[derive(Debug, PartialEq, Eq)]
enum Slot {
    Taken,
    /// Every slot is in use: refuse.
    Full,
    /// The counter could not be written (every CAS race lost, or shared data failing): the
    /// request is admitted without a slot, and gives none back.
    NotCounted,
}

/// Gives back one hit of each local counter a refused request counted at `counted_unix`.
fn refund(h: &dyn Host, checks: &[Check], slotted: bool, counted_unix: u64) {
    for check in checks {
        let key = counter_key(check, slotted);
        for _ in 0..16 {
            let (prev, cas) = h.shared_data(&key).unwrap_or((None, 0));
            let Some(bytes) = limits::local_refund(prev.as_deref(), counted_unix, check, 1) else {
                break;
            };
            match h.set_shared_data(&key, &bytes, cas) {
                Err(e) if local_key_err(e) => continue,
                _ => break,
            }
        }
    }
}

/// Takes (`delta` 1) or gives back (-1) a parallel slot.
fn parallel(h: &dyn Host, key: &str, delta: i32, max: u32) -> Slot {
    for _ in 0..32 {
        let (prev, cas) = h.shared_data(key).unwrap_or((None, 0));
        let Some(next) = limits::parallel_next(prev.as_deref(), delta, max) else {
            return Slot::Full;
        };
        match h.set_shared_data(key, &next, cas) {
            Ok(()) => return Slot::Taken,
            Err(e) if local_key_err(e) => continue,
            Err(_) => return Slot::NotCounted,
        }
    }
    // Lost every race: admit rather than refuse on contention alone.
    Slot::NotCounted
}

/// The caller's identity headers (`identity.source: header`) as the client's request carried
/// them: read with every other header in one host call, and before any header is removed on
/// the way to the provider.
#[derive(Debug, Default)]
pub struct CallerHeaders {
    pub user: Option<String>,
    pub team: Option<String>,
}

impl CallerHeaders {
    /// Takes header `name`'s value if it is one of the identity headers.
    pub fn see(&mut self, config: &Config, name: &str, value: &[u8]) {
        let IdentitySource::Header { user, team } = &config.limits.identity else {
            return;
        };
        if value.is_empty() {
            return;
        }
        if name.eq_ignore_ascii_case(user) {
            self.user = Some(String::from_utf8_lossy(value).into_owned());
        } else if team
            .as_deref()
            .is_some_and(|t| name.eq_ignore_ascii_case(t))
        {
            self.team = Some(String::from_utf8_lossy(value).into_owned());
        }
    }
}

fn claim(h: &dyn Host, namespace: &str, payload: &str, name: &str) -> Option<String> {
    h.property(&["metadata", "filter_metadata", namespace, payload, name])
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok())
        .filter(|v| !v.is_empty())
}

/// The verdict, counting a refusal in the metrics.
fn judge(results: &[(&Check, Outcome)], metric: &dyn Fn(Update)) -> Verdict {
    let v = limits::verdict(results);
    if let Verdict::Deny(..) = v {
        if let Some((c, _)) = results.iter().find(|(_, o)| o.over) {
            metric(Update::Add(MetricKey::RateLimited(c.kind.name()), 1));
        }
    }
    v
}

/// The key, team and model limits that apply to this request.
fn scopes(
    h: &dyn Host,
    config: &Config,
    key: Option<usize>,
    caller: &CallerHeaders,
    model: &str,
) -> Result<Vec<Scope>, GatewayError> {
    let mut out = Vec::new();
    let auth = config.auth.as_ref();
    let (user, team, user_limits) = match &config.limits.identity {
        IdentitySource::Key => {
            let k = key.and_then(|k| auth?.keys.get(k));
            (
                k.map(|k| k.alias.clone()),
                k.and_then(|k| k.team.clone()),
                k.map(|k| k.limits).unwrap_or_default(),
            )
        }
        IdentitySource::Header { .. } => (
            caller.user.clone(),
            caller.team.clone(),
            config.limits.identity_limits,
        ),
        IdentitySource::Jwt {
            namespace,
            payload_key,
            user_claim,
            team_claim,
        } => (
            claim(h, namespace, payload_key, user_claim),
            team_claim
                .as_deref()
                .and_then(|t| claim(h, namespace, payload_key, t)),
            config.limits.identity_limits,
        ),
    };
    let named = !matches!(config.limits.identity, IdentitySource::Key);
    let user = match (user, &config.limits.missing_identity) {
        (Some(u), _) => Some(u),
        (None, _) if !named => None,
        (None, MissingIdentity::Bucket(b)) => Some(b.clone()),
        (None, MissingIdentity::Reject) => return Err(GatewayError::new(
            401,
            "authentication_error",
            "the request carries no caller identity (identity.source), which this gateway requires",
        )
        .with_code("missing_identity")),
    };
    if named
        && [&user, &team]
            .iter()
            .any(|v| v.as_ref().is_some_and(|v| v.len() > MAX_IDENTITY_BYTES))
    {
        return Err(GatewayError::bad_request(format!(
            "the caller identity is longer than {MAX_IDENTITY_BYTES} bytes"
        ))
        .with_code("invalid_identity"));
    }
    if let Some(id) = user {
        if !user_limits.is_empty() {
            out.push(Scope {
                kind: ScopeKind::Key,
                id,
                limits: user_limits,
            });
        }
    }
    if let Some(t) = team {
        if let Some(l) = auth.and_then(|a| a.team_limits(&t)) {
            out.push(Scope {
                kind: ScopeKind::Team,
                id: t,
                limits: *l,
            });
        }
    }
    // A model limit binds the group, whatever name (alias, wildcard match) reached it; its
    // counter is keyed by the group's name.
    if let Some((name, l)) = config
        .resolve_model(model)
        .and_then(|(group, _)| config.model_limit(group))
    {
        out.push(Scope {
            kind: ScopeKind::Model,
            id: name.to_string(),
            limits: *l,
        });
    }
    Ok(out)
}

/// Who asks for which model: what a request's limits are looked up by.
pub struct Subject<'a> {
    /// The caller's virtual key (index in `auth.keys`).
    pub key: Option<usize>,
    pub headers: &'a CallerHeaders,
    /// The model name the client asked for.
    pub model: &'a str,
}

impl RequestLimits {
    /// Before forwarding (the key and model are known).
    pub fn admit(
        &mut self,
        h: &dyn Host,
        config: &Config,
        who: &Subject<'_>,
        now_unix: u64,
        metric: &dyn Fn(Update),
    ) -> Admission {
        self.slotted = !matches!(config.limits.identity, IdentitySource::Key);
        let scopes = match scopes(h, config, who.key, who.headers, who.model) {
            Ok(s) => s,
            Err(e) => return Admission::Reject(e, Vec::new()),
        };
        if scopes.is_empty() {
            return Admission::Continue;
        }
        // A budget cannot bind a request whose cost cannot be known (no price for a deployment
        // that may serve it): refused unless the config allows it.
        if let Some(e) = config.unpriced_refusal(who.key, who.model, limits::budgeted(&scopes)) {
            metric(Update::Add(MetricKey::RateLimited("unpriced"), 1));
            return Admission::Reject(e, Vec::new());
        }
        for s in &scopes {
            if let (ScopeKind::Key, Some(max)) = (s.kind, s.limits.max_parallel) {
                let k = if self.slotted {
                    format!("llmux.par.#{}", fnv1a(&s.id) % IDENTITY_SLOTS)
                } else {
                    format!("llmux.par.{}", s.id)
                };
                match parallel(h, &k, 1, max) {
                    Slot::Taken => self.slot = Some(k),
                    Slot::NotCounted => {
                        log::warn!("llmux: the parallel-request counter {k} could not be updated; admitted uncounted");
                    }
                    Slot::Full => {
                        metric(Update::Add(MetricKey::RateLimited("parallel"), 1));
                        return Admission::Reject(
                            limits::too_many_parallel(&s.id, max),
                            Vec::new(),
                        );
                    }
                }
            }
        }
        self.checks = limits::checks(&scopes);
        if self.checks.is_empty() {
            return Admission::Continue;
        }
        self.local = self
            .checks
            .iter()
            .map(|c| local_count(h, c, self.slotted, now_unix, 1))
            .collect();
        self.counted_unix = now_unix;
        let Some(rls) = &config.limits.rls else {
            return self.decide_locally(h, metric);
        };
        let descriptors: Vec<_> = self.checks.iter().map(|c| c.descriptor(None)).collect();
        let msg = proto::encode_request(&rls.domain, &descriptors, 1);
        match h.grpc_call(&rls.cluster, SERVICE, METHOD, &msg, rls.timeout_ms) {
            Ok(token) => {
                self.pending.push(token);
                self.phase = Phase::Admitting;
                Admission::Wait
            }
            Err(e) => {
                log::warn!(
                    "llmux: calling the rate-limit service on cluster {} failed (host status {})",
                    rls.cluster,
                    e.0
                );
                self.failed(h, rls.failure_mode, metric)
            }
        }
    }

    fn decide_locally(&mut self, h: &dyn Host, metric: &dyn Fn(Update)) -> Admission {
        let results: Vec<_> = self.checks.iter().zip(self.local.iter().copied()).collect();
        let v = judge(&results, metric);
        self.admit_with(h, v)
    }

    fn admit_with(&mut self, h: &dyn Host, v: Verdict) -> Admission {
        match v {
            Verdict::Allow(headers) => {
                self.headers = headers;
                Admission::Continue
            }
            Verdict::Deny(e, headers) => self.refuse(h, e, headers),
        }
    }

    /// A refused request is not charged: its local hits are given back, and nothing is charged
    /// at its end. (The rate-limit service keeps the hit it counted, as for Envoy's own filter.)
    fn refuse(
        &mut self,
        h: &dyn Host,
        e: GatewayError,
        headers: Vec<(&'static str, String)>,
    ) -> Admission {
        refund(h, &self.checks, self.slotted, self.counted_unix);
        self.checks.clear();
        Admission::Reject(e, headers)
    }

    fn failed(&mut self, h: &dyn Host, mode: FailureMode, metric: &dyn Fn(Update)) -> Admission {
        metric(Update::Add(MetricKey::RateLimitErrors, 1));
        match mode {
            FailureMode::Closed => self.refuse(h, limits::unavailable(), Vec::new()),
            FailureMode::Open => self.decide_locally(h, metric),
        }
    }

    /// The request's response is complete (or the request ends): charge tokens and cost.
    /// Returns whether a charge is out (the filter may hold the response end until it is
    /// answered).
    pub fn charge(
        &mut self,
        h: &dyn Host,
        config: &Config,
        usage: Option<&Usage>,
        cost_nanousd: Option<u64>,
        now_unix: u64,
        metric: &dyn Fn(Update),
    ) -> bool {
        if self.charged || self.checks.is_empty() || self.phase == Phase::Admitting {
            return false;
        }
        self.charged = true;
        let tokens = usage.map_or(0, Usage::total_tokens);
        // One call per distinct amount: request-level hits_addend is understood by every RLS.
        let mut groups: Vec<(u32, Vec<proto::Descriptor>)> = Vec::new();
        for c in &self.checks {
            let Some(n) = limits::charge_hits(c, tokens, cost_nanousd) else {
                continue;
            };
            local_count(h, c, self.slotted, now_unix, u64::from(n));
            match groups.iter_mut().find(|(h, _)| *h == n) {
                Some((_, d)) => d.push(c.descriptor(None)),
                None => groups.push((n, vec![c.descriptor(None)])),
            }
        }
        let Some(rls) = &config.limits.rls else {
            return false;
        };
        if let Some((root, _)) = self.contexts {
            let _ = h.set_effective_context(root);
        }
        for (hits, descriptors) in groups {
            let msg = proto::encode_request(&rls.domain, &descriptors, hits);
            match h.grpc_call(&rls.cluster, SERVICE, METHOD, &msg, rls.timeout_ms) {
                Ok(token) => self.pending.push(token),
                Err(e) => {
                    log::warn!(
                        "llmux: charging usage to the rate-limit service failed (host status {})",
                        e.0
                    );
                    metric(Update::Add(MetricKey::RateLimitErrors, 1));
                }
            }
        }
        if let Some((_, stream)) = self.contexts {
            // Back to the stream (gone already when the request ended without an answer).
            let _ = h.set_effective_context(stream);
        }
        self.phase = Phase::Charging;
        !self.pending.is_empty()
    }

    /// An answer from the RLS (`status` is the gRPC status, 0 = OK).
    pub fn on_answer(
        &mut self,
        h: &dyn Host,
        config: &Config,
        token: u32,
        status: u32,
        size: usize,
        metric: &dyn Fn(Update),
    ) -> Answer {
        let Some(i) = self.pending.iter().position(|t| *t == token) else {
            return Answer::Nothing;
        };
        self.pending.swap_remove(i);
        let response = if status == 0 {
            h.body(Body::GrpcResponse, 0, size)
                .ok()
                .flatten()
                .and_then(|b| proto::decode_response(&b))
        } else {
            None
        };
        if self.phase == Phase::Charging {
            if response.is_none() {
                log::warn!("llmux: the rate-limit service did not take a usage charge (gRPC status {status})");
                metric(Update::Add(MetricKey::RateLimitErrors, 1));
            }
            if self.pending.is_empty() && self.holding_response {
                self.holding_response = false;
                return Answer::ResumeResponse;
            }
            return Answer::Nothing;
        }
        self.phase = Phase::Idle;
        let Some(rls) = &config.limits.rls else {
            return Answer::ResumeRequest;
        };
        let admission = match response {
            Some(r) if r.statuses.len() == self.checks.len() => {
                let results: Vec<(&Check, Outcome)> = self
                    .checks
                    .iter()
                    .zip(r.statuses.iter())
                    .map(|(c, s)| (c, Outcome::of(c, s)))
                    .collect();
                let v = judge(&results, metric);
                self.admit_with(h, v)
            }
            _ => {
                log::warn!(
                    "llmux: the rate-limit service failed (gRPC status {status}); failure_mode {:?}",
                    rls.failure_mode
                );
                self.failed(h, rls.failure_mode, metric)
            }
        };
        match admission {
            Admission::Continue | Admission::Wait => Answer::ResumeRequest,
            Admission::Reject(e, h) => Answer::Reject(e, h),
        }
    }

    /// Whether this request is charged by its tokens or cost (a tpm or budget limit applies).
    pub fn charges_usage(&self) -> bool {
        self.checks
            .iter()
            .any(|c| !matches!(c.kind, limits::Kind::Requests))
    }

    /// Whether to hold the response end until the usage charge is answered (after [`charge`]).
    pub fn hold_response(&mut self) -> bool {
        self.holding_response = self.phase == Phase::Charging && !self.pending.is_empty();
        self.holding_response
    }

    /// The request is over: give back its parallel slot.
    pub fn release(&mut self, h: &dyn Host) {
        if let Some(k) = self.slot.take() {
            if parallel(h, &k, -1, u32::MAX) != Slot::Taken {
                log::warn!("llmux: giving back a parallel slot of {k} failed");
            }
        }
    }
}
