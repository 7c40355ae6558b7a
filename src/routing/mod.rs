//! Routing: which deployments serve a request, in which order, and what happens when one fails.
//!
//! A public model name (or alias, or wildcard match) names a *group* of deployments. For each
//! request the [`Planner`] builds a [`Plan`]: the group's healthy deployments ordered by the
//! group's strategy, repeated for its retries, then its fallback groups. The Envoy router makes
//! the attempts (a retry per failed attempt, see `docs/routing.md`); after each failure
//! [`Plan::next_after`] says whether another attempt is due and which entry it uses, from the
//! error's class and the retry policy. Health and load come from [`state`], shared by every
//! worker through Envoy shared data.

pub mod config;
pub mod recovery;
pub mod state;
pub mod status;

use crate::config::{Config, Deployment, Model};
use crate::error::GatewayError;
use state::{DeploymentState, StateStore};

pub use config::{
    wildcard_match, CooldownPolicy, ErrorClass, GroupPolicy, RetryPolicy, RouterConfig,
    StatusConfig, Strategy,
};

/// The decisions made with an error class (its names live with the config types).
impl ErrorClass {
    /// Classifies a failed attempt: the provider's status (or Envoy's, for `envoy_details`)
    /// and the error the translator made of the body.
    pub fn of(status: u16, envoy_details: Option<&str>, error: Option<&GatewayError>) -> Self {
        if let Some(d) = envoy_details {
            if d.contains("timeout") {
                return Self::Timeout;
            }
            return Self::Connection;
        }
        match status {
            429 => Self::RateLimit,
            408 => Self::Timeout,
            401 | 403 => Self::Auth,
            404 => Self::NotFound,
            400..=499 => {
                let text = error
                    .map(|e| {
                        format!("{} {}", e.code.as_deref().unwrap_or(""), e.message)
                            .to_ascii_lowercase()
                    })
                    .unwrap_or_default();
                if [
                    "context_length",
                    "context length",
                    "context window",
                    "too many tokens",
                    "prompt is too long",
                    "maximum context",
                ]
                .iter()
                .any(|p| text.contains(p))
                {
                    Self::ContextWindow
                } else if [
                    "content_filter",
                    "content_policy",
                    "content policy",
                    "content management",
                    "safety",
                    "responsibleaipolicyviolation",
                ]
                .iter()
                .any(|p| text.contains(p))
                {
                    Self::ContentPolicy
                } else {
                    Self::BadRequest
                }
            }
            _ => Self::ServerError,
        }
    }

    /// Whether this failure takes the deployment out of rotation at once (LiteLLM's rules:
    /// 429 unless it is the group's only deployment; 401, 404, 408).
    pub fn cools_immediately(self, only_deployment: bool) -> bool {
        match self {
            Self::RateLimit => !only_deployment,
            Self::Auth | Self::NotFound | Self::Timeout => true,
            _ => false,
        }
    }

    /// Whether this failure says something about the deployment's health (a bad request or a
    /// refused prompt does not).
    pub fn counts_against_deployment(self) -> bool {
        !matches!(
            self,
            Self::BadRequest | Self::ContentPolicy | Self::ContextWindow
        )
    }
}
/// Which configured model and deployment a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Answered by the gateway before a deployment was chosen (bad body, unknown model).
    Rejected,
    Deployment {
        model: usize,
        deployment: usize,
    },
}

/// Why an entry is in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The group's own deployments (and their retries).
    Primary,
    /// A `fallbacks` group.
    Fallback,
    /// Only after a content-policy refusal.
    ContentPolicy,
    /// Only after a context-window error.
    ContextWindow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanEntry {
    /// Index into `Config::models`.
    pub model: u16,
    /// Index into that model's `deployments`.
    pub deployment: u16,
    pub role: Role,
}

impl PlanEntry {
    /// The metric route (model and deployment) of this entry.
    pub fn route(self) -> Route {
        Route::Deployment {
            model: usize::from(self.model),
            deployment: usize::from(self.deployment),
        }
    }
}

/// One request's attempts: what was planned, and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub entries: Vec<PlanEntry>,
    /// The entry the current (or next) attempt uses.
    pub cursor: usize,
    /// Attempts made so far.
    pub attempts: u8,
    retries_used: [u8; 9],
    policy: RetryPolicy,
    max_attempts: u8,
}

impl Plan {
    pub fn single(model: usize, deployment: usize) -> Self {
        Plan {
            entries: vec![PlanEntry {
                model: model as u16,
                deployment: deployment as u16,
                role: Role::Primary,
            }],
            cursor: 0,
            attempts: 0,
            retries_used: [0; 9],
            policy: RetryPolicy::uniform(0),
            max_attempts: 1,
        }
    }

    pub fn current(&self) -> Option<PlanEntry> {
        self.entries.get(self.cursor).copied()
    }

    /// Whether a failure could ever lead to another attempt (else the request goes straight to
    /// the provider's cluster, without the attempts hop).
    pub fn can_fail_over(&self) -> bool {
        self.entries.len() > 1 && self.max_attempts > 1
    }

    /// After a failed attempt of `class`: moves the cursor to the entry the next attempt uses,
    /// or `None` when the request ends with this failure. `cooling` tells whether an entry's
    /// deployment is in cooldown now (skipped while another entry is left).
    pub fn next_after(
        &mut self,
        config: &Config,
        class: ErrorClass,
        cooling: &dyn Fn(PlanEntry) -> bool,
    ) -> Option<PlanEntry> {
        if self.attempts >= self.max_attempts || class == ErrorClass::BadRequest {
            return None;
        }
        let failed = self.current()?;
        // Further attempts within the group obey the retry policy per class; fallback groups
        // are tried whenever the failure is one another deployment could fix.
        let retry_allowed = self.policy.allows(class, self.retries_used[class as usize]);
        let wanted = |e: &PlanEntry| match class {
            ErrorClass::ContentPolicy => e.role == Role::ContentPolicy,
            ErrorClass::ContextWindow => e.role == Role::ContextWindow,
            _ => e.role == Role::Fallback || (e.role == Role::Primary && retry_allowed),
        };
        // A key or model the provider refused will be refused again: another deployment only.
        let same_refuses = matches!(class, ErrorClass::Auth | ErrorClass::NotFound);
        let candidates: Vec<usize> = (self.cursor + 1..self.entries.len())
            .filter(|&i| wanted(&self.entries[i]))
            .filter(|&i| !(same_refuses && self.entries[i] == failed))
            .collect();
        // Another key of the same deployment first, when the key was the problem.
        let base = config
            .deployment(failed.model, failed.deployment)
            .map(|d| d.base);
        let sibling = if matches!(class, ErrorClass::RateLimit | ErrorClass::Auth) {
            candidates.iter().copied().find(|&i| {
                let e = self.entries[i];
                e.model == failed.model
                    && e.deployment != failed.deployment
                    && config.deployment(e.model, e.deployment).map(|d| d.base) == base
                    && !cooling(e)
            })
        } else {
            None
        };
        let next = sibling
            .or_else(|| {
                candidates
                    .iter()
                    .copied()
                    .find(|&i| !cooling(self.entries[i]))
            })
            .or_else(|| candidates.first().copied())?;
        if next != self.cursor + 1 {
            // Plan order is kept for the rest: the chosen entry moves up.
            let e = self.entries.remove(next);
            self.entries.insert(self.cursor + 1, e);
        }
        self.cursor += 1;
        let used = &mut self.retries_used[class as usize];
        *used = used.saturating_add(1);
        self.current()
    }

    pub fn attempt_started(&mut self) {
        self.attempts = self.attempts.saturating_add(1);
    }

    /// Mid-stream recovery (see [`recovery`]): the entry that continues a stream the current
    /// entry broke off. The first later entry of the group or a `fallbacks` group on another
    /// deployment (another key of the same deployment does not count), one not cooling down
    /// first; `None` when there is none or `max_attempts` is used up. The plan is not changed.
    pub fn recovery_entry(
        &self,
        config: &Config,
        cooling: &dyn Fn(PlanEntry) -> bool,
    ) -> Option<PlanEntry> {
        if self.attempts >= self.max_attempts {
            return None;
        }
        let broke = self.current()?;
        let base = |e: PlanEntry| config.deployment(e.model, e.deployment).map(|d| d.base);
        let broke_base = base(broke);
        let candidates: Vec<PlanEntry> = self
            .entries
            .iter()
            .skip(self.cursor + 1)
            .copied()
            .filter(|e| matches!(e.role, Role::Primary | Role::Fallback))
            .filter(|e| e.model != broke.model || base(*e) != broke_base)
            .filter(|e| base(*e).is_some())
            .collect();
        candidates
            .iter()
            .copied()
            .find(|e| !cooling(*e))
            .or_else(|| candidates.first().copied())
    }
}

/// What the planner needs from a request besides its model.
pub struct PlanRequest<'a> {
    /// Tags from the request (header or body); empty: no tag filtering.
    pub tags: &'a [&'a str],
    /// Estimated prompt tokens (for context-window checks).
    pub prompt_tokens: u32,
    pub now_ms: u64,
    pub stream: bool,
}

/// Builds plans from the config and the shared deployment state.
pub struct Planner<'a> {
    pub config: &'a Config,
    pub store: &'a dyn StateStore,
    /// Random numbers (weighted choices, tie breaks).
    pub rng: &'a mut dyn FnMut() -> u32,
}

impl Planner<'_> {
    pub fn plan(&mut self, model: usize, req: &PlanRequest<'_>) -> Result<Plan, GatewayError> {
        let config = self.config;
        let group = &config.models[model];
        let policy = &group.policy;
        let num_retries = policy.num_retries.unwrap_or(config.router.num_retries);
        let failover = config.router.attempts_cluster.is_some();
        let mut fits_nowhere = false;
        let primary = self.order_group(model, req, &mut fits_nowhere)?;
        // Each entry with whether its deployment is cooling down (read once, in order_group).
        let mut entries: Vec<(PlanEntry, bool)> = Vec::new();
        if !primary.is_empty() {
            // Each deployment once (failover within the group), then `num_retries` more
            // attempts cycling through them (one deployment: retried itself).
            let len = primary.len().max(usize::from(num_retries) + 1);
            for i in 0..len {
                let (d, cooling) = primary[i % primary.len()];
                entries.push((
                    PlanEntry {
                        model: model as u16,
                        deployment: d as u16,
                        role: Role::Primary,
                    },
                    cooling,
                ));
            }
            self.push_groups(&policy.fallbacks, Role::Fallback, req, &mut entries);
            self.push_groups(
                &policy.context_window_fallbacks,
                Role::ContextWindow,
                req,
                &mut entries,
            );
        } else if fits_nowhere {
            // The prompt is larger than the whole group: its context-window fallbacks serve.
            self.push_groups(
                &policy.context_window_fallbacks,
                Role::Primary,
                req,
                &mut entries,
            );
            self.push_groups(&policy.fallbacks, Role::Fallback, req, &mut entries);
        }
        self.push_groups(
            &policy.content_policy_fallbacks,
            Role::ContentPolicy,
            req,
            &mut entries,
        );

        if !entries.iter().any(|(e, _)| e.role == Role::Primary) {
            if fits_nowhere {
                return Err(GatewayError::bad_request(format!(
                    "the prompt (about {} tokens) is larger than the context window of every deployment of `{}` and of its context_window_fallbacks",
                    req.prompt_tokens, group.name
                ))
                .with_param("messages")
                .with_code("context_length_exceeded"));
            }
            return Err(self.none_available(model, req));
        }
        // A cooling deployment is first only when nothing else can serve: then none can.
        if entries[0].1 {
            match entries.iter().position(|(e, cooling)| {
                matches!(e.role, Role::Primary | Role::Fallback) && !cooling
            }) {
                Some(i) => {
                    let e = entries.remove(i);
                    entries.insert(0, e);
                }
                // Everything is cooling down: the one back soonest is asked anyway (the
                // provider decides), unless the router is told to refuse.
                None if config.router.reject_when_all_cooling => {
                    return Err(self.none_available(model, req))
                }
                None => {}
            }
        }
        if !failover {
            entries.truncate(1);
        }
        Ok(Plan {
            entries: entries.into_iter().map(|(e, _)| e).collect(),
            cursor: 0,
            attempts: 0,
            retries_used: [0; 9],
            policy: config.router.retry_policy,
            max_attempts: if failover {
                config.router.max_attempts.max(1)
            } else {
                1
            },
        })
    }

    fn push_groups(
        &mut self,
        names: &[String],
        role: Role,
        req: &PlanRequest<'_>,
        entries: &mut Vec<(PlanEntry, bool)>,
    ) {
        for name in names {
            let Some(m) = self.config.model_position(name) else {
                continue;
            };
            let mut too_small = false;
            if let Ok(order) = self.order_group(m, req, &mut too_small) {
                entries.extend(order.into_iter().map(|(d, cooling)| {
                    (
                        PlanEntry {
                            model: m as u16,
                            deployment: d as u16,
                            role,
                        },
                        cooling,
                    )
                }));
            }
        }
    }

    /// Every deployment (and fallback) is cooling down: 429 until the first is back.
    fn none_available(&self, model: usize, req: &PlanRequest<'_>) -> GatewayError {
        let group = &self.config.models[model];
        let soonest = group
            .deployments
            .iter()
            .map(|d| state::load(self.store, &d.state_key).cooldown_until_ms)
            .filter(|&t| t > req.now_ms)
            .min()
            .unwrap_or(req.now_ms.saturating_add(1000));
        let secs = soonest.saturating_sub(req.now_ms).div_ceil(1000).max(1);
        let mut e = GatewayError::new(
            429,
            "rate_limit_error",
            format!(
                "no deployment of `{}` is available: all are cooling down after failures; retry in {secs} s",
                group.name
            ),
        )
        .with_code("no_deployments_available");
        e.retry_after = Some(secs.to_string());
        e
    }

    /// The group's usable deployments (tags, context window, cooldown), best first, each with
    /// whether it is cooling down.
    fn order_group(
        &mut self,
        model: usize,
        req: &PlanRequest<'_>,
        fits_nowhere: &mut bool,
    ) -> Result<Vec<(usize, bool)>, GatewayError> {
        let group: &Model = &self.config.models[model];
        let mut cands: Vec<usize> = (0..group.deployments.len()).collect();
        if !req.tags.is_empty() {
            let tagged: Vec<usize> = cands
                .iter()
                .copied()
                .filter(|&i| {
                    group.deployments[i]
                        .tags
                        .iter()
                        .any(|t| req.tags.contains(&t.as_str()))
                })
                .collect();
            cands = if !tagged.is_empty() {
                tagged
            } else {
                let default: Vec<usize> = cands
                    .iter()
                    .copied()
                    .filter(|&i| group.deployments[i].tags.iter().any(|t| t == "default"))
                    .collect();
                if default.is_empty() {
                    return Err(GatewayError::bad_request(format!(
                        "no deployment of `{}` has any of the tags {:?} (and none is tagged `default`)",
                        group.name, req.tags
                    ))
                    .with_code("no_deployment_for_tags"));
                }
                default
            };
        }
        let fitting: Vec<usize> = cands
            .iter()
            .copied()
            .filter(|&i| {
                group.deployments[i]
                    .max_input_tokens
                    .is_none_or(|m| req.prompt_tokens <= m)
            })
            .collect();
        if fitting.is_empty() {
            *fits_nowhere = true;
            return Ok(Vec::new());
        }
        if !self.config.router.tracks(group) {
            // Nothing to choose and no record kept (never cooling): no state to read.
            return Ok(fitting.into_iter().map(|i| (i, false)).collect());
        }
        let states: Vec<DeploymentState> = fitting
            .iter()
            .map(|&i| state::load(self.store, &group.deployments[i].state_key))
            .collect();
        // Healthy ones are ordered by the strategy; cooling ones follow, soonest back first.
        let (mut healthy, mut cooling): (Vec<(usize, DeploymentState)>, Vec<_>) = fitting
            .into_iter()
            .zip(states)
            .partition(|(_, s)| !s.cooling(req.now_ms));
        cooling.sort_by_key(|(_, s)| s.cooldown_until_ms);
        let mut order = Vec::with_capacity(healthy.len() + cooling.len());
        // Over its rpm/tpm hint: last among the healthy (usage-based drops them, like LiteLLM).
        let over_limit = |d: &Deployment, s: &DeploymentState| {
            let (rpm, tpm) = s.usage_now(req.now_ms);
            d.rpm.is_some_and(|l| rpm >= l) || d.tpm.is_some_and(|l| tpm >= l)
        };
        let strategy = group.policy.strategy;
        if strategy == Strategy::RoundRobin && !healthy.is_empty() {
            // One turn of the shared counter per request; the rest follow in config order.
            let key = format!("llmux.rr.{}", group.name);
            let turn = state::next_counter(self.store, &key) as usize % healthy.len();
            healthy.sort_by_key(|(i, _)| *i);
            healthy.rotate_left(turn);
            order.extend(healthy.into_iter().map(|(i, _)| (i, false)));
        } else {
            while !healthy.is_empty() {
                let i = self.pick(model, strategy, &healthy, req, &over_limit);
                order.push((healthy.remove(i).0, false));
            }
        }
        order.extend(cooling.into_iter().map(|(i, _)| (i, true)));
        Ok(order)
    }

    /// One choice among `cands` (deployment index, state) by `strategy`.
    fn pick(
        &mut self,
        model: usize,
        strategy: Strategy,
        cands: &[(usize, DeploymentState)],
        req: &PlanRequest<'_>,
        over_limit: &dyn Fn(&Deployment, &DeploymentState) -> bool,
    ) -> usize {
        let group = &self.config.models[model];
        let dep = |i: usize| &group.deployments[cands[i].0];
        let n = cands.len();
        if n == 1 {
            return 0;
        }
        // Candidates still under their limits, when any are.
        let under: Vec<usize> = (0..n)
            .filter(|&i| !over_limit(dep(i), &cands[i].1))
            .collect();
        let pool: Vec<usize> = if under.is_empty() {
            (0..n).collect()
        } else {
            under
        };
        // Total: an empty `among` (never, by construction) gives the first of the pool.
        let random_among = |rng: &mut dyn FnMut() -> u32, among: &[usize]| -> usize {
            match among.len() {
                0 => pool[0],
                len => among[(rng() as usize) % len],
            }
        };
        match strategy {
            Strategy::SimpleShuffle => self.weighted(&pool, |i| dep(i).weight),
            Strategy::Priority => {
                let best = pool.iter().map(|&i| dep(i).priority).min().unwrap_or(0);
                let top: Vec<usize> = pool
                    .iter()
                    .copied()
                    .filter(|&i| dep(i).priority == best)
                    .collect();
                self.weighted(&top, |i| dep(i).weight)
            }
            // Ordered by `order_group` (one counter turn per request).
            Strategy::RoundRobin => pool[0],
            Strategy::LeastBusy => {
                let best = pool
                    .iter()
                    .map(|&i| cands[i].1.in_flight)
                    .min()
                    .unwrap_or(0);
                let top: Vec<usize> = pool
                    .iter()
                    .copied()
                    .filter(|&i| cands[i].1.in_flight == best)
                    .collect();
                random_among(self.rng, &top)
            }
            Strategy::LowestLatency => {
                let lat = |i: usize| {
                    let s = &cands[i].1;
                    u64::from(if req.stream && s.ttft_us > 0 {
                        s.ttft_us
                    } else {
                        s.latency_us
                    })
                };
                // No sample yet: tried first, so every deployment gets measured.
                let unmeasured: Vec<usize> =
                    pool.iter().copied().filter(|&i| lat(i) == 0).collect();
                if !unmeasured.is_empty() {
                    return random_among(self.rng, &unmeasured);
                }
                let best = pool.iter().map(|&i| lat(i)).min().unwrap_or(0);
                let buffer = group.policy.latency_buffer.max(0.0);
                let limit = best as f64 * (1.0 + buffer);
                let near: Vec<usize> = pool
                    .iter()
                    .copied()
                    .filter(|&i| lat(i) as f64 <= limit)
                    .collect();
                random_among(self.rng, &near)
            }
            Strategy::LowestCost => {
                // The price requests are charged at (own `price`, else the bundled list price);
                // unpriced last. Finite and never NaN, so the best is one of the pool.
                let cost = |i: usize| {
                    dep(i)
                        .cost_price
                        .as_ref()
                        .map_or(f64::MAX, crate::pricing::routing_cost)
                };
                let best = pool
                    .iter()
                    .map(|&i| cost(i))
                    .min_by(f64::total_cmp)
                    .unwrap_or(f64::MAX);
                let top: Vec<usize> = pool.iter().copied().filter(|&i| cost(i) <= best).collect();
                random_among(self.rng, &top)
            }
            Strategy::UsageBased => {
                // Utilisation of the tighter limit; without limits, raw tokens this minute.
                let score = |i: usize| {
                    let d = dep(i);
                    let (rpm, tpm) = cands[i].1.usage_now(req.now_ms);
                    let r = d.rpm.map(|l| f64::from(rpm) / f64::from(l.max(1)));
                    let t = d.tpm.map(|l| f64::from(tpm) / f64::from(l.max(1)));
                    match (r, t) {
                        (None, None) => f64::from(tpm) * 1e-9,
                        (a, b) => a.unwrap_or(0.0).max(b.unwrap_or(0.0)),
                    }
                };
                let best = pool.iter().map(|&i| score(i)).fold(f64::MAX, f64::min);
                let top: Vec<usize> = pool.iter().copied().filter(|&i| score(i) <= best).collect();
                random_among(self.rng, &top)
            }
        }
    }

    fn weighted(&mut self, among: &[usize], weight: impl Fn(usize) -> u32) -> usize {
        let total: u64 = among.iter().map(|&i| u64::from(weight(i))).sum();
        if total == 0 {
            return among[(self.rng)() as usize % among.len()];
        }
        let mut r = u64::from((self.rng)()) % total;
        for &i in among {
            let w = u64::from(weight(i));
            if r < w {
                return i;
            }
            r -= w;
        }
        among[0]
    }
}

impl RouterConfig {
    /// Whether the glue keeps a group's shared load and health records: when there is a choice
    /// to make (several deployments or keys, retries, a fallback target). A lone deployment
    /// costs no shared-data calls; the status endpoint shows it as `"tracked": false`.
    pub fn tracks(&self, group: &Model) -> bool {
        group.tracked || self.num_retries > 0
    }
}

/// Whether a plan entry's deployment is cooling down now.
pub fn is_cooling(config: &Config, store: &dyn StateStore, e: PlanEntry, now_ms: u64) -> bool {
    config
        .deployment(e.model, e.deployment)
        .is_some_and(|d| state::load(store, &d.state_key).cooling(now_ms))
}

/// A failed attempt on a deployment of group `model`: counted against the deployment unless the
/// request itself was at fault. Returns whether a cooldown started.
pub fn record_failure(
    s: &mut DeploymentState,
    config: &Config,
    model: usize,
    class: ErrorClass,
    status: u16,
    now_ms: u64,
) -> bool {
    if !class.counts_against_deployment() {
        return false;
    }
    let only = config
        .models
        .get(model)
        .is_some_and(|m| m.deployments.len() == 1);
    s.on_failure(
        now_ms,
        &config.router.cooldown,
        status,
        class.cools_immediately(only),
    )
}

/// A successful attempt: its latency (first byte for streams, else the whole answer, from
/// `t.forwarded_ns`) and its tokens. `t.end_ns` is now.
pub fn record_success(
    s: &mut DeploymentState,
    config: &Config,
    t: &crate::observe::time::Timings,
    stream: bool,
    usage: Option<&crate::providers::Usage>,
) {
    let until = if stream && t.first_byte_ns > 0 {
        t.first_byte_ns
    } else {
        t.end_ns
    };
    let latency_us = u32::try_from(until.saturating_sub(t.forwarded_ns) / 1000).unwrap_or(u32::MAX);
    let tokens = usage.map_or(0, |u| {
        u32::try_from(u.prompt_tokens.saturating_add(u.completion_tokens)).unwrap_or(u32::MAX)
    });
    let now_ms = t.end_ns / 1_000_000;
    s.on_success(now_ms, config.router.cooldown.window_ms, latency_us, stream);
    s.on_tokens(now_ms, tokens);
}

/// A rough prompt size: ~4 bytes per token of the request body (no tokenizer in the filter).
pub fn estimate_prompt_tokens(body_len: usize) -> u32 {
    u32::try_from(body_len / 4).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
