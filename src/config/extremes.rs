//! Issue 14 item 11: no value a configuration can hold makes the VM panic. Every numeric field
//! is set to extreme values (0, 1, tiny, huge, `u32::MAX`, `u64::MAX`, `f64::MAX`, 1e308,
//! negative, fractional); each configuration is either refused with an error naming that field,
//! or accepted and then run through the planner (every strategy, fresh and worn-out state),
//! failover, health records, cost, budgets and the limit counters (debug build: overflow
//! checks on, so an overflow is a failure here).

use serde_json::{json, Value};

use super::*;
use crate::limits::{self, Scope, ScopeKind};
use crate::observe::time::Timings;
use crate::providers::Usage;
use crate::routing::state::{self, DeploymentState, MemStore};
use crate::routing::{ErrorClass, PlanRequest, Planner, Strategy};

struct NoEnv;
impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

fn base() -> Value {
    json!({
        "providers": {"a": {"type": "openai", "cluster": "ca", "timeout_ms": 1000},
                      "b": {"type": "anthropic", "cluster": "cb", "default_max_tokens": 10}},
        "timeout_ms": 1000,
        "anthropic_default_max_tokens": 10,
        "max_request_bytes": 1000,
        "max_response_bytes": 1000,
        "models": [
            {"name": "m", "fallbacks": ["f"], "num_retries": 2, "latency_buffer": 0.5,
             "deployments": [
                {"provider": "a", "name": "x", "model": "gpt-4o", "weight": 1, "rpm": 10, "tpm": 10,
                 "max_input_tokens": 100, "priority": 1,
                 "price": {"input_per_mtok": 1, "output_per_mtok": 1,
                           "cached_input_per_mtok": 1, "cache_creation_per_mtok": 1}},
                {"provider": "b", "name": "y", "model": "claude-3-5-haiku", "weight": 2}]},
            {"name": "f", "deployments": [{"provider": "a", "model": "unpriced-model"}]},
            {"name": "w/*", "deployments": [{"provider": "b", "model": "claude-*"}]}
        ],
        "router": {"attempts_cluster": "att", "num_retries": 1, "allowed_fails": 1,
                   "fail_window_s": 60, "cooldown_s": 5, "max_retry_after_s": 10, "max_attempts": 3,
                   "reject_when_all_cooling": true, "retry_policy": {"rate_limit": 2}},
        "rate_limit": {"cluster": "rls", "timeout_ms": 100,
                       "models": {"m": {"rpm": 5, "tpm": 5}, "w/*": {"rpm": 5}}},
        "auth": {"keys": [{"key_sha256": "a".repeat(64), "alias": "k", "team": "t",
                           "rpm": 1, "tpm": 1, "max_parallel_requests": 1,
                           "budget": {"amount_usd": 1, "period": "1d"}, "expires_at": 1}],
                 "teams": [{"name": "t", "rpm": 1, "budget": {"amount_usd": 1}}]},
        "identity": {"limits": {"rpm": 1, "budget": {"amount_usd": 1}}},
        "export": {"format": "webhook", "cluster": "col", "batch_size": 10, "flush_interval_ms": 10, "timeout_ms": 10,
                   "max_queue": 10}
    })
}

/// JSON pointer of each numeric field, and the path its error must name.
const FIELDS: &[(&str, &str)] = &[
    ("/timeout_ms", "timeout_ms"),
    (
        "/anthropic_default_max_tokens",
        "anthropic_default_max_tokens",
    ),
    ("/max_request_bytes", "max_request_bytes"),
    ("/max_response_bytes", "max_response_bytes"),
    ("/providers/a/timeout_ms", "providers.a.timeout_ms"),
    (
        "/providers/b/default_max_tokens",
        "providers.b.default_max_tokens",
    ),
    ("/models/0/num_retries", "models[0].num_retries"),
    ("/models/0/latency_buffer", "models[0].latency_buffer"),
    (
        "/models/0/deployments/0/weight",
        "models[0].deployments[0].weight",
    ),
    (
        "/models/0/deployments/1/weight",
        "models[0].deployments[1].weight",
    ),
    (
        "/models/0/deployments/0/rpm",
        "models[0].deployments[0].rpm",
    ),
    (
        "/models/0/deployments/0/tpm",
        "models[0].deployments[0].tpm",
    ),
    (
        "/models/0/deployments/0/max_input_tokens",
        "models[0].deployments[0].max_input_tokens",
    ),
    (
        "/models/0/deployments/0/priority",
        "models[0].deployments[0].priority",
    ),
    (
        "/models/0/deployments/0/price/input_per_mtok",
        "models[0].deployments[0].price.input_per_mtok",
    ),
    (
        "/models/0/deployments/0/price/output_per_mtok",
        "models[0].deployments[0].price.output_per_mtok",
    ),
    (
        "/models/0/deployments/0/price/cached_input_per_mtok",
        "models[0].deployments[0].price.cached_input_per_mtok",
    ),
    (
        "/models/0/deployments/0/price/cache_creation_per_mtok",
        "models[0].deployments[0].price.cache_creation_per_mtok",
    ),
    ("/router/num_retries", "router.num_retries"),
    ("/router/allowed_fails", "router.allowed_fails"),
    ("/router/fail_window_s", "router.fail_window_s"),
    ("/router/cooldown_s", "router.cooldown_s"),
    ("/router/max_retry_after_s", "router.max_retry_after_s"),
    ("/router/max_attempts", "router.max_attempts"),
    (
        "/router/retry_policy/rate_limit",
        "router.retry_policy.rate_limit",
    ),
    ("/rate_limit/timeout_ms", "rate_limit.timeout_ms"),
    ("/rate_limit/models/m/rpm", "rate_limit.models.m.rpm"),
    ("/rate_limit/models/m/tpm", "rate_limit.models.m.tpm"),
    ("/auth/keys/0/rpm", "auth.keys[0].rpm"),
    ("/auth/keys/0/tpm", "auth.keys[0].tpm"),
    (
        "/auth/keys/0/max_parallel_requests",
        "auth.keys[0].max_parallel_requests",
    ),
    (
        "/auth/keys/0/budget/amount_usd",
        "auth.keys[0].budget.amount_usd",
    ),
    ("/auth/keys/0/expires_at", "auth.keys[0].expires_at"),
    ("/auth/teams/0/rpm", "auth.teams[0].rpm"),
    (
        "/auth/teams/0/budget/amount_usd",
        "auth.teams[0].budget.amount_usd",
    ),
    ("/identity/limits/rpm", "identity.limits.rpm"),
    (
        "/identity/limits/budget/amount_usd",
        "identity.limits.budget.amount_usd",
    ),
    ("/export/batch_size", "export.batch_size"),
    ("/export/flush_interval_ms", "export.flush_interval_ms"),
    ("/export/timeout_ms", "export.timeout_ms"),
    ("/export/max_queue", "export.max_queue"),
];

fn values() -> Vec<Value> {
    vec![
        json!(0),
        json!(1),
        json!(2),
        json!(10),
        json!(1_000_000),
        json!(u32::MAX),
        json!(u64::from(u32::MAX) + 1),
        json!(u64::MAX),
        json!(-1),
        json!(i64::MIN),
        json!(0.5),
        json!(5e-324),
        json!(f64::MIN_POSITIVE),
        json!(1e6),
        json!(1.000001e6),
        json!(1e12),
        json!(1e308),
        json!(f64::MAX),
        json!(-0.0),
        json!(-f64::MAX),
        json!("1"),
        json!("9223372036854775807-01-01"),
        json!("9999-12-31T23:59:59Z"),
        json!(null),
    ]
}

fn usages() -> Vec<Usage> {
    let all = |n: u64| Usage {
        prompt_tokens: n,
        completion_tokens: n,
        cached_tokens: n,
        cache_creation_tokens: n,
        reasoning_tokens: n,
    };
    vec![
        Usage::default(),
        all(1),
        all(u64::from(u32::MAX)),
        all(u64::MAX),
        Usage {
            prompt_tokens: 1,
            cached_tokens: u64::MAX,
            ..Default::default()
        },
    ]
}

/// Worn-out deployment states: every counter at its largest, cooling down far ahead.
fn worn(store: &MemStore, c: &Config, now_ms: u64) {
    for m in &c.models {
        for d in &m.deployments {
            state::update(store, &d.state_key, |s| {
                *s = DeploymentState {
                    in_flight: u32::MAX,
                    latency_us: u32::MAX,
                    ttft_us: u32::MAX,
                    minute: (now_ms / 60_000) as u32,
                    rpm: u32::MAX,
                    tpm: u32::MAX,
                    window_start: 0,
                    fails: u32::MAX,
                    successes: u32::MAX,
                    cooldown_until_ms: u64::MAX,
                    last_error: u16::MAX,
                    cooldowns: u32::MAX,
                }
            });
        }
    }
}

/// Everything a request does with the configuration's numbers.
fn exercise(c: &mut Config) {
    let strategies = [
        Strategy::SimpleShuffle,
        Strategy::RoundRobin,
        Strategy::LeastBusy,
        Strategy::LowestLatency,
        Strategy::LowestCost,
        Strategy::UsageBased,
        Strategy::Priority,
    ];
    for strategy in strategies {
        for m in &mut c.models {
            m.policy.strategy = strategy;
        }
        for (now_ms, worn_out) in [
            (0, false),
            (1_700_000_000_000, true),
            (u64::MAX / 2, true),
            (u64::MAX, false),
        ] {
            {
                let store = MemStore::default();
                if worn_out {
                    worn(&store, c, now_ms);
                }
                plan_and_fail(c, &store, now_ms);
            }
        }
    }
    for m in &c.models {
        for d in &m.deployments {
            for matched in [None, Some("3-5-haiku-20241022"), Some("")] {
                let upstream = d.upstream_model(matched);
                if let Some(p) = d.request_price(&upstream) {
                    let _ = crate::pricing::routing_cost(&p);
                    for u in usages() {
                        let nano = crate::observe::cost_nanousd(&p, &u);
                        charge(c, Some(nano), &u);
                    }
                }
            }
        }
    }
    for requested in ["m", "f", "w/x", "w/claude-3-5-haiku", "nope"] {
        for key in [None, Some(0), Some(9)] {
            let _ = c.unpriced_refusal(key, requested, true);
        }
    }
    if let Some(a) = &c.auth {
        for now in [0, u64::MAX] {
            let _ = a.authenticate(Some("sk"), now);
        }
    }
}

fn plan_and_fail(c: &Config, store: &MemStore, now_ms: u64) {
    let mut seed = 0x9e37_79b9_u32;
    let mut rng = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for (g, _) in c.models.iter().enumerate() {
        for prompt_tokens in [0, u32::MAX] {
            for stream in [false, true] {
                let req = PlanRequest {
                    tags: &[],
                    prompt_tokens,
                    now_ms,
                    stream,
                };
                let plan = Planner {
                    config: c,
                    store,
                    rng: &mut rng,
                }
                .plan(g, &req);
                let Ok(mut plan) = plan else { continue };
                for class in ErrorClass::ALL {
                    let mut p = plan.clone();
                    for _ in 0..32 {
                        p.attempt_started();
                        let _ = p.recovery_entry(c, &|_| true);
                        let Some(e) = p.current() else { break };
                        let Some(d) = c.deployment(e.model, e.deployment) else {
                            break;
                        };
                        state::update(store, &d.state_key, |s| {
                            crate::routing::record_failure(
                                s,
                                c,
                                usize::from(e.model),
                                class,
                                503,
                                now_ms,
                            )
                        });
                        if p.next_after(c, class, &|_| false).is_none() {
                            break;
                        }
                    }
                }
                plan.attempt_started();
                if let Some(e) = plan.current() {
                    let d = c.deployment(e.model, e.deployment).unwrap();
                    for u in usages() {
                        for t in [
                            Timings::default(),
                            Timings {
                                start_ns: 0,
                                forwarded_ns: 1,
                                first_byte_ns: u64::MAX,
                                end_ns: u64::MAX,
                            },
                        ] {
                            state::update(store, &d.state_key, |s| {
                                crate::routing::record_success(s, c, &t, stream, Some(&u))
                            });
                        }
                    }
                }
            }
        }
    }
}

/// The limit arithmetic: checks from every configured scope, charges and counters.
fn charge(c: &Config, cost: Option<u64>, u: &Usage) {
    let mut scopes = Vec::new();
    if let Some(a) = &c.auth {
        for k in &a.keys {
            scopes.push(Scope {
                kind: ScopeKind::Key,
                id: k.alias.clone(),
                limits: k.limits,
            });
        }
        for t in &a.teams {
            scopes.push(Scope {
                kind: ScopeKind::Team,
                id: t.name.clone(),
                limits: t.limits,
            });
        }
    }
    scopes.push(Scope {
        kind: ScopeKind::Key,
        id: "identity".into(),
        limits: c.limits.identity_limits,
    });
    for g in 0..c.models.len() {
        if let Some((id, l)) = c.model_limit(g) {
            scopes.push(Scope {
                kind: ScopeKind::Model,
                id: id.to_string(),
                limits: *l,
            });
        }
    }
    for s in &scopes {
        if let Some(b) = s.limits.budget {
            let _ = (b.unit_nanousd(), b.limit_units(), b.units(u64::MAX));
        }
    }
    let checks = limits::checks(&scopes);
    for check in &checks {
        let _ = limits::charge_hits(check, u.total_tokens(), cost);
        for now in [0, 1_700_000_000, u64::MAX] {
            let (bytes, o) = limits::local_count(None, now, check, u64::MAX);
            let (_, o2) = limits::local_count(Some(&bytes), now, check, u64::MAX);
            let _ = limits::local_refund(Some(&bytes), now, check, u64::MAX);
            let _ = limits::verdict(&[(check, o), (check, o2)]);
        }
    }
}

#[test]
fn no_config_value_panics_and_every_refusal_names_its_field() {
    let mut accepted = 0;
    let mut refused = 0;
    for (pointer, path) in FIELDS {
        for v in values() {
            let mut root = base();
            *root
                .pointer_mut(pointer)
                .unwrap_or_else(|| panic!("{pointer} is not in the base config")) = v.clone();
            let bytes = serde_json::to_vec(&root).unwrap();
            match Config::parse(&bytes, &NoEnv) {
                Ok(mut c) => {
                    accepted += 1;
                    exercise(&mut c);
                }
                Err(e) => {
                    refused += 1;
                    assert_eq!(e.path, *path, "{pointer} = {v}: {e}");
                }
            }
        }
    }
    assert!(accepted > 100 && refused > 100, "{accepted} {refused}");
}

/// Plan entries hold a group's and a deployment's index in a `u16`: more would be truncated
/// and name another deployment (or none). Each API key of a deployment is an entry.
#[test]
fn more_deployments_than_a_plan_entry_can_name_is_a_config_error() {
    let keys: Vec<String> = (0..16).map(|i| format!("sk-{i}")).collect();
    let deployment = json!({"provider": "a", "api_keys": keys});
    let mut root = base();
    root["models"][1]["deployments"] = Value::Array(vec![deployment; 4097]);
    match Config::parse(&serde_json::to_vec(&root).unwrap(), &NoEnv) {
        Ok(_) => panic!("65552 entries in one group were accepted"),
        Err(e) => assert_eq!(e.path, "models[1].deployments", "{e}"),
    }
}

/// Where the bounds are: the largest accepted value, and the next refused.
#[test]
fn numeric_bounds() {
    for (pointer, ok, refused) in [
        (
            "/models/0/deployments/0/price/input_per_mtok",
            json!(1e6),
            json!(1.000001e6),
        ),
        (
            "/models/0/deployments/0/price/output_per_mtok",
            json!(0),
            json!(-0.000001),
        ),
        (
            "/auth/keys/0/budget/amount_usd",
            json!(999_999_999_999.0),
            json!(1e12),
        ),
        ("/auth/keys/0/budget/amount_usd", json!(5e-324), json!(0)),
        ("/export/max_queue", json!(100_000), json!(100_001)),
        ("/export/batch_size", json!(100_000), json!(100_001)),
        (
            "/export/flush_interval_ms",
            json!(3_600_000),
            json!(3_600_001),
        ),
        ("/export/timeout_ms", json!(600_000), json!(600_001)),
        ("/anthropic_default_max_tokens", json!(1), json!(0)),
        ("/models/0/latency_buffer", json!(10), json!(10.000001)),
        ("/router/cooldown_s", json!(86_400), json!(86_400.001)),
    ] {
        let with = |v: &Value| {
            let mut root = base();
            *root.pointer_mut(pointer).unwrap() = v.clone();
            Config::parse(&serde_json::to_vec(&root).unwrap(), &NoEnv)
        };
        assert!(with(&ok).is_ok(), "{pointer} = {ok}");
        assert!(with(&refused).is_err(), "{pointer} = {refused}");
    }
}
