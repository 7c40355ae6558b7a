//! Rate limits, token limits, budgets and parallel-request limits, in plain Rust: which
//! descriptors a request sends to the rate-limit service (RLS), what its answer means, the
//! `x-ratelimit-*` header values, and the per-instance fallback counters. The Wasm glue
//! (`wasm/ratelimit.rs`) only moves the bytes.
//!
//! How it works (README, "Keys, limits and budgets"):
//!
//! - **Before forwarding** one `ShouldRateLimit` call carries, for the key, its team and the model,
//!   a descriptor per configured limit, each with its limit as the descriptor's `limit` override
//!   and hits 1. For RPM that is the request itself. For TPM and budgets it is a *check*: one
//!   token (one budget unit) is charged now and deducted from the charge after the response, so
//!   the check is portable — Limitador turns `hits_addend: 0` into 1, and envoyproxy/ratelimit
//!   answers OVER_LIMIT once a counter passed its limit. A key whose tokens or budget are used up
//!   is refused before anything reaches the provider.
//! - **After the response** (streams included: usage comes from the stream) one call per kind
//!   charges the rest: `hits_addend` = total tokens − 1, and cost units − 1.
//! - Every hit is also counted in per-instance counters (Envoy shared data, compare-and-swap), which
//!   decide alone when the RLS is down (`failure_mode: open`) or not configured.

pub mod config;
pub mod proto;

pub use config::{Budget, FailureMode, Limits, LimitsConfig, Period, RlsConfig, Team};

use crate::error::GatewayError;

/// What a descriptor limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Requests,
    Tokens,
    Budget,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
            Kind::Budget => "budget",
        }
    }
}

/// Whose limit it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeKind {
    Key,
    Team,
    Model,
}

impl ScopeKind {
    /// The descriptor entry key (and the local counter prefix).
    pub fn entry_key(self) -> &'static str {
        match self {
            ScopeKind::Key => "llmux_key",
            ScopeKind::Team => "llmux_team",
            ScopeKind::Model => "llmux_model",
        }
    }
}

/// A key, team or model with limits, for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Scope {
    pub kind: ScopeKind,
    pub id: String,
    pub limits: Limits,
}

/// One limit of one scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub scope: ScopeKind,
    pub id: String,
    pub kind: Kind,
    pub limit: u32,
    pub period: Period,
    /// For budgets: nano-USD per unit.
    pub unit_nanousd: u64,
}

impl Check {
    /// The descriptor's second entry value: what is counted (budget units are part of it, so a
    /// change of unit never mixes counters).
    fn what(&self) -> String {
        match self.kind {
            Kind::Requests => "rpm".into(),
            Kind::Tokens => "tpm".into(),
            Kind::Budget => format!("budget_{}_nanousd", self.unit_nanousd),
        }
    }

    pub fn descriptor(&self, hits: Option<u32>) -> proto::Descriptor {
        proto::Descriptor {
            entries: vec![
                (self.scope.entry_key().into(), self.id.clone()),
                ("llmux_limit".into(), self.what()),
            ],
            limit: Some((self.limit, self.period.rls_unit())),
            hits,
        }
    }

    /// The shared-data key of the local counter.
    pub fn local_key(&self) -> String {
        format!(
            "llmux.rl.{}.{}.{}.{}",
            self.scope.entry_key(),
            self.what(),
            self.period.name(),
            self.id
        )
    }
}

/// Every limit that applies, in scope order (key, team, model).
pub fn checks(scopes: &[Scope]) -> Vec<Check> {
    let mut out = Vec::new();
    for s in scopes {
        let mk = |kind, limit, period, unit_nanousd| Check {
            scope: s.kind,
            id: s.id.clone(),
            kind,
            limit,
            period,
            unit_nanousd,
        };
        if let Some(n) = s.limits.rpm {
            out.push(mk(Kind::Requests, n, Period::Minute, 0));
        }
        if let Some(n) = s.limits.tpm {
            out.push(mk(Kind::Tokens, n, Period::Minute, 0));
        }
        if let Some(b) = s.limits.budget {
            out.push(mk(
                Kind::Budget,
                b.limit_units(),
                b.period,
                b.unit_nanousd(),
            ));
        }
    }
    out
}

/// Whether a budget applies to the request (its cost must then be known: see
/// `Config::unpriced_refusal`).
pub fn budgeted(scopes: &[Scope]) -> bool {
    scopes.iter().any(|s| s.limits.budget.is_some())
}

/// What is charged after the response, per check: tokens or cost units, less the 1 charged at
/// admission. `None`: nothing to charge.
pub fn charge_hits(check: &Check, total_tokens: u64, cost_nanousd: Option<u64>) -> Option<u32> {
    let n = match check.kind {
        Kind::Requests => return None,
        Kind::Tokens => total_tokens,
        Kind::Budget => cost_nanousd?.div_ceil(check.unit_nanousd.max(1)),
    };
    let n = n.saturating_sub(1);
    (n > 0).then(|| u32::try_from(n).unwrap_or(u32::MAX))
}

/// The outcome of one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub over: bool,
    pub limit: u32,
    pub remaining: u32,
    pub reset_secs: u64,
}

impl Outcome {
    /// From the RLS's status for the check (its own limit when the RLS reports none).
    pub fn of(check: &Check, s: &proto::Status) -> Outcome {
        Outcome {
            over: s.code == proto::CODE_OVER_LIMIT,
            limit: s.limit.map_or(check.limit, |l| l.0),
            remaining: s.remaining,
            reset_secs: s.reset_secs.unwrap_or(check.period.seconds()),
        }
    }
}

/// A decision for the whole request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Forward; these headers go on the response.
    Allow(Vec<(&'static str, String)>),
    /// Answer this error with these headers.
    Deny(GatewayError, Vec<(&'static str, String)>),
}

/// `x-ratelimit-reset-*` in OpenAI's format: `1s`, `6m0s`, `1h2m3s`.
pub fn reset_value(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// The `x-ratelimit-*-requests` / `-tokens` headers: the most restrictive limit of each kind.
pub fn headers(results: &[(&Check, Outcome)]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (kind, names) in [
        (
            Kind::Requests,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
        ),
        (
            Kind::Tokens,
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        ),
    ] {
        let tightest = results
            .iter()
            .filter(|(c, _)| c.kind == kind)
            .min_by_key(|(_, o)| (!o.over, o.remaining));
        if let Some((_, o)) = tightest {
            out.push((names[0], o.limit.to_string()));
            out.push((names[1], o.remaining.to_string()));
            out.push((names[2], reset_value(o.reset_secs)));
        }
    }
    out
}

/// The decision from each check's outcome.
pub fn verdict(results: &[(&Check, Outcome)]) -> Verdict {
    let h = headers(results);
    let Some((c, o)) = results.iter().find(|(_, o)| o.over) else {
        return Verdict::Allow(h);
    };
    let who = match c.scope {
        ScopeKind::Key => format!("key `{}`", c.id),
        ScopeKind::Team => format!("team `{}`", c.id),
        ScopeKind::Model => format!("model `{}`", c.id),
    };
    let retry = o.reset_secs.max(1);
    let e = match c.kind {
        Kind::Requests => GatewayError::new(
            429,
            "requests",
            format!(
                "Rate limit reached for {who} on requests per min (RPM): Limit {}. Please try again in {}.",
                o.limit,
                reset_value(retry)
            ),
        )
        .with_code("rate_limit_exceeded"),
        Kind::Tokens => GatewayError::new(
            429,
            "tokens",
            format!(
                "Rate limit reached for {who} on tokens per min (TPM): Limit {}. Please try again in {}.",
                o.limit,
                reset_value(retry)
            ),
        )
        .with_code("rate_limit_exceeded"),
        Kind::Budget => GatewayError::new(
            429,
            "insufficient_quota",
            format!(
                "Budget exceeded for {who}: ${:.2} per {}. It resets in {}.",
                o.limit as f64 * c.unit_nanousd as f64 / 1e9,
                c.period.name(),
                reset_value(retry)
            ),
        )
        .with_code("budget_exceeded"),
    };
    let mut e = e;
    e.retry_after = Some(retry.to_string());
    Verdict::Deny(e, h)
}

/// 503 when the RLS failed and `failure_mode` is `closed`.
pub fn unavailable() -> GatewayError {
    GatewayError::new(
        503,
        "api_error",
        "the rate-limit service is unavailable, and this gateway refuses requests it cannot count (failure_mode: closed)",
    )
    .with_code("rate_limit_unavailable")
}

/// 429 when a key has `max_parallel_requests` in flight on this instance.
pub fn too_many_parallel(id: &str, max: u32) -> GatewayError {
    let mut e = GatewayError::new(
        429,
        "requests",
        format!("key `{id}` already has {max} requests in flight (max_parallel_requests)"),
    )
    .with_code("parallel_request_limit_exceeded");
    e.retry_after = Some("1".into());
    e
}

/// A per-instance counter in shared data: 16 bytes, window start and count (little endian).
/// Windows are aligned to the period (`now - now % period`).
pub fn local_count(
    prev: Option<&[u8]>,
    now_unix: u64,
    check: &Check,
    hits: u64,
) -> (Vec<u8>, Outcome) {
    let period = check.period.seconds();
    let start = now_unix - now_unix % period;
    let (pstart, pcount) = match prev {
        Some(b) if b.len() == 16 => {
            let mut s = [0u8; 8];
            let mut c = [0u8; 8];
            s.copy_from_slice(&b[..8]);
            c.copy_from_slice(&b[8..]);
            (u64::from_le_bytes(s), u64::from_le_bytes(c))
        }
        _ => (0, 0),
    };
    let before = if pstart == start { pcount } else { 0 };
    let after = before.saturating_add(hits);
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&after.to_le_bytes());
    let limit = u64::from(check.limit);
    let o = Outcome {
        over: after > limit,
        limit: check.limit,
        remaining: u32::try_from(limit.saturating_sub(after)).unwrap_or(u32::MAX),
        // `start + period - now`, without overflowing at the end of time.
        reset_secs: period - now_unix % period,
    };
    (out, o)
}

/// A per-instance counter after giving back `hits` counted at `counted_unix` (a refused
/// request's hit); `None` when that window is over (nothing to give back).
pub fn local_refund(
    prev: Option<&[u8]>,
    counted_unix: u64,
    check: &Check,
    hits: u64,
) -> Option<Vec<u8>> {
    let period = check.period.seconds();
    let start = counted_unix - counted_unix % period;
    let b = prev.filter(|b| b.len() == 16)?;
    let mut s = [0u8; 8];
    let mut c = [0u8; 8];
    s.copy_from_slice(&b[..8]);
    c.copy_from_slice(&b[8..]);
    if u64::from_le_bytes(s) != start {
        return None;
    }
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&u64::from_le_bytes(c).saturating_sub(hits).to_le_bytes());
    Some(out)
}

/// A parallel-request counter (u32 little endian) after `delta`; `None` when adding would pass
/// `max`.
pub fn parallel_next(prev: Option<&[u8]>, delta: i32, max: u32) -> Option<Vec<u8>> {
    let cur = match prev {
        Some(b) if b.len() == 4 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        _ => 0,
    };
    let next = if delta >= 0 {
        let n = cur.saturating_add(delta.unsigned_abs());
        if n > max {
            return None;
        }
        n
    } else {
        cur.saturating_sub(delta.unsigned_abs())
    };
    Some(next.to_le_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(kind: ScopeKind, id: &str, limits: Limits) -> Scope {
        Scope {
            kind,
            id: id.into(),
            limits,
        }
    }

    #[test]
    fn budgeted_when_any_scope_has_a_budget() {
        let budget = Limits {
            budget: Some(Budget {
                amount_usd: 1.0,
                period: Period::Day,
            }),
            ..Limits::default()
        };
        let rpm = Limits {
            rpm: Some(1),
            ..Limits::default()
        };
        assert!(!budgeted(&[]));
        assert!(!budgeted(&[scope(ScopeKind::Key, "k", rpm)]));
        assert!(budgeted(&[
            scope(ScopeKind::Key, "k", rpm),
            scope(ScopeKind::Team, "t", budget)
        ]));
    }

    fn all() -> Vec<Scope> {
        vec![
            scope(
                ScopeKind::Key,
                "alice",
                Limits {
                    rpm: Some(3),
                    tpm: Some(1000),
                    max_parallel: Some(2),
                    budget: None,
                },
            ),
            scope(
                ScopeKind::Team,
                "red",
                Limits {
                    budget: Some(Budget {
                        amount_usd: 0.5,
                        period: Period::Day,
                    }),
                    ..Limits::default()
                },
            ),
        ]
    }

    #[test]
    fn descriptors_carry_limits_and_units() {
        let c = checks(&all());
        assert_eq!(c.len(), 3);
        let d = c[0].descriptor(None);
        assert_eq!(
            d.entries,
            vec![
                ("llmux_key".to_string(), "alice".to_string()),
                ("llmux_limit".to_string(), "rpm".to_string())
            ]
        );
        assert_eq!(d.limit, Some((3, 2)));
        assert_eq!(c[1].descriptor(Some(5)).limit, Some((1000, 2)));
        // $0.50 a day in micro-dollars.
        let b = c[2].descriptor(None);
        assert_eq!(b.limit, Some((500_000, 4)));
        assert_eq!(b.entries[1].1, "budget_1000_nanousd");
        assert_eq!(
            c[2].local_key(),
            "llmux.rl.llmux_team.budget_1000_nanousd.1d.red"
        );
    }

    #[test]
    fn budget_units_fit_u32() {
        let small = Budget {
            amount_usd: 10.0,
            period: Period::Month,
        };
        assert_eq!(
            (small.unit_nanousd(), small.limit_units()),
            (1000, 10_000_000)
        );
        let big = Budget {
            amount_usd: 100_000.0,
            period: Period::Month,
        };
        assert_eq!(
            (big.unit_nanousd(), big.limit_units()),
            (100_000, 1_000_000_000)
        );
        let tiny = Budget {
            amount_usd: 1e-9,
            period: Period::Second,
        };
        assert_eq!(tiny.limit_units(), 1);
        assert_eq!(small.units(1), 1);
        assert_eq!(small.units(2000), 2);
    }

    #[test]
    fn charges_deduct_the_admission_hit() {
        let c = checks(&all());
        assert_eq!(charge_hits(&c[0], 500, Some(10)), None);
        assert_eq!(charge_hits(&c[1], 500, None), Some(499));
        assert_eq!(charge_hits(&c[1], 1, None), None);
        assert_eq!(charge_hits(&c[1], u64::MAX, None), Some(u32::MAX));
        // 2.5 µUSD → 3 units, less the 1 charged at admission.
        assert_eq!(charge_hits(&c[2], 0, Some(2500)), Some(2));
        assert_eq!(charge_hits(&c[2], 0, None), None);
    }

    #[test]
    fn verdicts_and_headers() {
        let c = checks(&all());
        let ok = |rem| Outcome {
            over: false,
            limit: 3,
            remaining: rem,
            reset_secs: 42,
        };
        let tok = Outcome {
            over: false,
            limit: 1000,
            remaining: 900,
            reset_secs: 60,
        };
        let Verdict::Allow(h) = verdict(&[(&c[0], ok(2)), (&c[1], tok)]) else {
            panic!()
        };
        assert_eq!(
            h,
            vec![
                ("x-ratelimit-limit-requests", "3".to_string()),
                ("x-ratelimit-remaining-requests", "2".to_string()),
                ("x-ratelimit-reset-requests", "42s".to_string()),
                ("x-ratelimit-limit-tokens", "1000".to_string()),
                ("x-ratelimit-remaining-tokens", "900".to_string()),
                ("x-ratelimit-reset-tokens", "1m0s".to_string()),
            ]
        );
        let over = Outcome {
            over: true,
            remaining: 0,
            ..ok(0)
        };
        let Verdict::Deny(e, h) = verdict(&[(&c[0], over), (&c[1], tok)]) else {
            panic!()
        };
        assert_eq!(
            (e.status, e.code.as_deref()),
            (429, Some("rate_limit_exceeded"))
        );
        assert_eq!(e.retry_after.as_deref(), Some("42"));
        assert!(e.message.contains("key `alice`"), "{}", e.message);
        assert_eq!(h[1], ("x-ratelimit-remaining-requests", "0".to_string()));
        let b = Outcome {
            over: true,
            limit: 500_000,
            remaining: 0,
            reset_secs: 0,
        };
        let Verdict::Deny(e, _) = verdict(&[(&c[2], b)]) else {
            panic!()
        };
        assert_eq!(e.code.as_deref(), Some("budget_exceeded"));
        assert_eq!(e.retry_after.as_deref(), Some("1"));
        assert!(e.message.contains("$0.50 per 1d"), "{}", e.message);
        assert_eq!(reset_value(3723), "1h2m3s");
    }

    #[test]
    fn local_windows_align_and_reset() {
        let c = &checks(&all())[0]; // 3 per minute
        let t0 = 1_800_000_030; // 30 s into a minute
        let (b1, o1) = local_count(None, t0, c, 1);
        assert_eq!((o1.over, o1.remaining, o1.reset_secs), (false, 2, 30));
        let (b2, _) = local_count(Some(&b1), t0 + 1, c, 2);
        let (b3, o3) = local_count(Some(&b2), t0 + 29, c, 1);
        assert_eq!((o3.over, o3.remaining, o3.reset_secs), (true, 0, 1));
        // The next minute starts from zero.
        let (_, o4) = local_count(Some(&b3), t0 + 30, c, 1);
        assert_eq!((o4.over, o4.remaining, o4.reset_secs), (false, 2, 60));
        // Garbage in shared data counts as empty.
        assert!(!local_count(Some(b"xx"), t0, c, 1).1.over);
        // A day budget window: aligned to UTC midnight.
        let day = &checks(&all())[2];
        assert_eq!(
            local_count(None, 86_400 * 3 + 5, day, 1).1.reset_secs,
            86_395
        );
    }

    #[test]
    fn parallel_counter() {
        let one = parallel_next(None, 1, 2).unwrap();
        let two = parallel_next(Some(&one), 1, 2).unwrap();
        assert_eq!(parallel_next(Some(&two), 1, 2), None);
        assert_eq!(parallel_next(Some(&two), -1, 2).unwrap(), one);
        assert_eq!(parallel_next(None, -1, 2).unwrap(), vec![0, 0, 0, 0]);
    }
}
