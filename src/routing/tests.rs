//! Unit tests of routing (plans, strategies, retry policy, fallbacks, cooldowns, error classes,
//! wildcards, the status JSON, the recovery entry), run natively against an in-memory
//! shared-data store (`state::MemStore`), so no Envoy is needed to check a routing decision.

use super::state::{self, MemStore};
use super::*;
use crate::config::{Config, Env, Price};

struct NoEnv;
impl Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
}

fn config(models: &str, router: &str) -> Config {
    let json = format!(
        r#"{{"providers": {{"a": {{"type": "openai", "cluster": "ca"}}, "b": {{"type": "anthropic", "cluster": "cb"}},
            "c": {{"type": "openai", "cluster": "cc"}}}},
            "router": {router}, "models": {models}}}"#
    );
    Config::parse(json.as_bytes(), &NoEnv).unwrap()
}

const FAILOVER: &str = r#"{"attempts_cluster": "llmux_attempts"}"#;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }
}

fn plan_with(
    cfg: &Config,
    store: &MemStore,
    model: &str,
    req: &PlanRequest<'_>,
    seed: u64,
) -> Result<Plan, GatewayError> {
    let mut rng = Rng(seed | 1);
    let mut f = || rng.next();
    let (m, _) = cfg.resolve_model(model).expect("model");
    Planner {
        config: cfg,
        store,
        rng: &mut f,
    }
    .plan(m, req)
}

fn req(now_ms: u64) -> PlanRequest<'static> {
    PlanRequest {
        tags: &[],
        prompt_tokens: 10,
        now_ms,
        stream: false,
    }
}

fn names(cfg: &Config, p: &Plan) -> Vec<String> {
    p.entries
        .iter()
        .map(|e| cfg.deployment(e.model, e.deployment).unwrap().name.clone())
        .collect()
}

fn first_name(cfg: &Config, store: &MemStore, model: &str, seed: u64) -> String {
    let p = plan_with(cfg, store, model, &req(1_000_000), seed).unwrap();
    names(cfg, &p)[0].clone()
}

const NOW: u64 = 1_000_000;

#[test]
fn without_an_attempts_cluster_a_plan_is_one_attempt() {
    let cfg = config(
        r#"[{"name": "m", "deployments": [{"provider": "a", "name": "x"}, {"provider": "c", "name": "y"}]}]"#,
        "{}",
    );
    let p = plan_with(&cfg, &MemStore::default(), "m", &req(NOW), 1).unwrap();
    assert_eq!(p.entries.len(), 1);
    assert!(!p.can_fail_over());
}

#[test]
fn retries_cycle_through_the_group_then_fallbacks() {
    let cfg = config(
        r#"[{"name": "m", "strategy": "priority", "num_retries": 2, "fallbacks": ["f"],
              "deployments": [{"provider": "a", "name": "x", "priority": 0}, {"provider": "c", "name": "y", "priority": 1}]},
            {"name": "f", "deployments": [{"provider": "b", "name": "z"}]}]"#,
        FAILOVER,
    );
    let p = plan_with(&cfg, &MemStore::default(), "m", &req(NOW), 1).unwrap();
    assert_eq!(names(&cfg, &p), ["x", "y", "x", "z"]);
    assert_eq!(p.entries[3].role, Role::Fallback);
}

#[test]
fn next_after_follows_the_policy_per_error_class() {
    let cfg = config(
        r#"[{"name": "m", "strategy": "priority", "num_retries": 1, "fallbacks": ["f"], "content_policy_fallbacks": ["cp"],
              "deployments": [{"provider": "a", "name": "x", "priority": 0}, {"provider": "c", "name": "y", "priority": 1}]},
            {"name": "f", "deployments": [{"provider": "b", "name": "z"}]},
            {"name": "cp", "deployments": [{"provider": "b", "name": "safe"}]}]"#,
        FAILOVER,
    );
    let store = MemStore::default();
    let never = |_: PlanEntry| false;
    let mut p = plan_with(&cfg, &store, "m", &req(NOW), 1).unwrap();
    p.attempt_started();
    // A bad request ends the request.
    assert_eq!(
        p.clone().next_after(&cfg, ErrorClass::BadRequest, &never),
        None
    );
    // A content-policy refusal jumps to the content-policy fallbacks.
    let mut q = p.clone();
    let e = q
        .next_after(&cfg, ErrorClass::ContentPolicy, &never)
        .unwrap();
    assert_eq!(cfg.deployment(e.model, e.deployment).unwrap().name, "safe");
    // 5xx: y (the one retry), then the fallback group, then nothing.
    let e = p.next_after(&cfg, ErrorClass::ServerError, &never).unwrap();
    assert_eq!(cfg.deployment(e.model, e.deployment).unwrap().name, "y");
    p.attempt_started();
    let e = p.next_after(&cfg, ErrorClass::ServerError, &never).unwrap();
    assert_eq!(cfg.deployment(e.model, e.deployment).unwrap().name, "z");
    p.attempt_started();
    assert_eq!(p.next_after(&cfg, ErrorClass::ServerError, &never), None);
}

#[test]
fn retry_policy_per_class_limits_retries_in_the_group() {
    let cfg = config(
        r#"[{"name": "m", "strategy": "priority", "deployments": [{"provider": "a", "name": "x"}, {"provider": "c", "name": "y", "priority": 1}]}]"#,
        r#"{"attempts_cluster": "llmux_attempts", "num_retries": 3, "retry_policy": {"timeout": 0}}"#,
    );
    let never = |_: PlanEntry| false;
    let mut p = plan_with(&cfg, &MemStore::default(), "m", &req(NOW), 1).unwrap();
    p.attempt_started();
    assert_eq!(
        p.clone().next_after(&cfg, ErrorClass::Timeout, &never),
        None
    );
    assert!(p.next_after(&cfg, ErrorClass::RateLimit, &never).is_some());
}

#[test]
fn cooling_deployments_are_skipped_and_all_cooling_is_429_when_asked() {
    let cfg = config(
        r#"[{"name": "m", "strategy": "priority", "deployments": [{"provider": "a", "name": "x"}, {"provider": "c", "name": "y", "priority": 1}]}]"#,
        r#"{"attempts_cluster": "llmux_attempts", "reject_when_all_cooling": true}"#,
    );
    let store = MemStore::default();
    let x = &cfg.models[0].deployments[0].state_key;
    let y = &cfg.models[0].deployments[1].state_key;
    let policy = CooldownPolicy::default();
    state::update(&store, x, |s| s.on_failure(NOW, &policy, 429, true));
    assert_eq!(first_name(&cfg, &store, "m", 1), "y");
    state::update(&store, y, |s| s.on_failure(NOW, &policy, 500, true));
    let e = plan_with(&cfg, &store, "m", &req(NOW), 1).unwrap_err();
    assert_eq!(e.status, 429);
    assert_eq!(e.code.as_deref(), Some("no_deployments_available"));
    assert_eq!(e.retry_after.as_deref(), Some("5"));
    // After the cooldown, x is first again.
    let later = NOW + policy.cooldown_ms;
    let p = plan_with(&cfg, &store, "m", &req(later), 1).unwrap();
    assert_eq!(names(&cfg, &p)[0], "x");
}

#[test]
fn simple_shuffle_follows_weights() {
    let cfg = config(
        r#"[{"name": "m", "deployments": [{"provider": "a", "name": "x", "weight": 1}, {"provider": "c", "name": "y", "weight": 3}]}]"#,
        FAILOVER,
    );
    let store = MemStore::default();
    let n = 4000;
    let y = (0..n)
        .filter(|&s| first_name(&cfg, &store, "m", s) == "y")
        .count();
    // Expect 3000; 4 standard deviations (σ ≈ 27) of tolerance.
    assert!((2890..=3110).contains(&y), "{y}");
}

#[test]
fn round_robin_takes_turns_through_the_shared_counter() {
    let cfg = config(
        r#"[{"name": "m", "strategy": "round-robin", "deployments": [{"provider": "a", "name": "x"}, {"provider": "b", "name": "y"}, {"provider": "c", "name": "z"}]}]"#,
        FAILOVER,
    );
    let store = MemStore::default();
    let firsts: Vec<String> = (0..6).map(|s| first_name(&cfg, &store, "m", s)).collect();
    assert_eq!(firsts, ["x", "y", "z", "x", "y", "z"]);
}

#[test]
fn least_busy_picks_the_fewest_in_flight() {
    let cfg = config(
        r#"[{"name": "m", "strategy": "least-busy", "deployments": [{"provider": "a", "name": "x"}, {"provider": "c", "name": "y"}]}]"#,
        FAILOVER,
    );
    let store = MemStore::default();
    let x = cfg.models[0].deployments[0].state_key.clone();
    state::update(&store, &x, |s| s.on_start(NOW));
    for seed in 0..50 {
        assert_eq!(first_name(&cfg, &store, "m", seed), "y");
    }
}

#[test]
fn lowest_latency_prefers_fast_and_spreads_within_the_buffer() {
    let cfg = config(
        r#"[{"name": "m", "strategy": "lowest-latency", "latency_buffer": 0.2,
             "deployments": [{"provider": "a", "name": "fast"}, {"provider": "b", "name": "near"}, {"provider": "c", "name": "slow"}]}]"#,
        FAILOVER,
    );
    let store = MemStore::default();
    let d = &cfg.models[0].deployments;
    // Unmeasured deployments are tried first.
    state::update(&store, &d[0].state_key, |s| {
        s.on_success(NOW, 60_000, 100_000, false)
    });
    assert_ne!(first_name(&cfg, &store, "m", 7), "fast");
    state::update(&store, &d[1].state_key, |s| {
        s.on_success(NOW, 60_000, 110_000, false)
    });
    state::update(&store, &d[2].state_key, |s| {
        s.on_success(NOW, 60_000, 400_000, false)
    });
    let mut counts = std::collections::HashMap::new();
    for seed in 0..400 {
        *counts
            .entry(first_name(&cfg, &store, "m", seed))
            .or_insert(0) += 1;
    }
    assert_eq!(counts.get("slow"), None);
    let fast = counts["fast"];
    assert!((140..=260).contains(&fast), "{counts:?}");
}

#[test]
fn lowest_cost_and_usage_based() {
    let cfg = config(
        r#"[{"name": "cheap", "strategy": "lowest-cost", "deployments": [
               {"provider": "a", "name": "dear", "price": {"input_per_mtok": 5, "output_per_mtok": 15}},
               {"provider": "c", "name": "cheap", "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}]},
            {"name": "usage", "strategy": "usage-based", "deployments": [
               {"provider": "a", "name": "busy", "tpm": 1000}, {"provider": "c", "name": "idle", "tpm": 1000}]}]"#,
        FAILOVER,
    );
    let store = MemStore::default();
    for seed in 0..20 {
        assert_eq!(first_name(&cfg, &store, "cheap", seed), "cheap");
    }
    let busy = &cfg.models[1].deployments[0].state_key;
    state::update(&store, busy, |s| s.on_tokens(NOW, 900));
    for seed in 0..20 {
        assert_eq!(first_name(&cfg, &store, "usage", seed), "idle");
    }
}

#[test]
fn tags_filter_deployments_with_default_as_catch_all() {
    let cfg = config(
        r#"[{"name": "m", "deployments": [{"provider": "a", "name": "eu", "tags": ["eu"]}, {"provider": "c", "name": "any", "tags": ["default"]}]},
            {"name": "strict", "deployments": [{"provider": "a", "name": "eu", "tags": ["eu"]}]}]"#,
        FAILOVER,
    );
    let store = MemStore::default();
    let r = |tags: &'static [&'static str]| PlanRequest {
        tags,
        prompt_tokens: 1,
        now_ms: NOW,
        stream: false,
    };
    for seed in 0..20 {
        let p = plan_with(&cfg, &store, "m", &r(&["eu"]), seed).unwrap();
        assert_eq!(names(&cfg, &p)[0], "eu");
        let p = plan_with(&cfg, &store, "m", &r(&["us"]), seed).unwrap();
        assert_eq!(names(&cfg, &p)[0], "any");
    }
    let e = plan_with(&cfg, &store, "strict", &r(&["us"]), 1).unwrap_err();
    assert_eq!(e.code.as_deref(), Some("no_deployment_for_tags"));
}

#[test]
fn context_window_routes_big_prompts_to_bigger_models() {
    let cfg = config(
        r#"[{"name": "small", "context_window_fallbacks": ["big"], "deployments": [{"provider": "a", "name": "s", "max_input_tokens": 100}]},
            {"name": "big", "deployments": [{"provider": "b", "name": "b", "max_input_tokens": 100000}]},
            {"name": "lonely", "deployments": [{"provider": "a", "name": "l", "max_input_tokens": 100}]}]"#,
        FAILOVER,
    );
    let store = MemStore::default();
    let big = PlanRequest {
        tags: &[],
        prompt_tokens: 5000,
        now_ms: NOW,
        stream: false,
    };
    let p = plan_with(&cfg, &store, "small", &big, 1).unwrap();
    assert_eq!(names(&cfg, &p)[0], "b");
    let p = plan_with(&cfg, &store, "small", &req(NOW), 1).unwrap();
    assert_eq!(names(&cfg, &p)[0], "s");
    assert_eq!(p.entries.last().unwrap().role, Role::ContextWindow);
    let e = plan_with(&cfg, &store, "lonely", &big, 1).unwrap_err();
    assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
}

#[test]
fn api_keys_are_entries_and_a_429_moves_to_the_next_key() {
    let cfg = config(
        r#"[{"name": "m", "strategy": "priority", "deployments": [{"provider": "a", "name": "k", "api_keys": ["k1", "k2"]}, {"provider": "c", "name": "other", "priority": 5}]}]"#,
        FAILOVER,
    );
    let d = &cfg.models[0].deployments;
    assert_eq!(d.len(), 3);
    assert_eq!(cfg.providers[d[0].provider].api_key.as_deref(), Some("k1"));
    assert_eq!(cfg.providers[d[1].provider].api_key.as_deref(), Some("k2"));
    assert_eq!((d[1].base, d[1].key_slot), (0, 1));
    assert_ne!(d[0].state_key, d[1].state_key);
    let never = |_: PlanEntry| false;
    for seed in 0..10 {
        let mut p = plan_with(&cfg, &MemStore::default(), "m", &req(NOW), seed).unwrap();
        let first = p.current().unwrap();
        assert_eq!(
            cfg.deployment(first.model, first.deployment).unwrap().name,
            "k"
        );
        p.attempt_started();
        let next = p.next_after(&cfg, ErrorClass::RateLimit, &never).unwrap();
        assert_eq!(next.model, first.model);
        assert_ne!(
            next.deployment, first.deployment,
            "the other key of the same deployment"
        );
        assert_eq!(
            cfg.deployment(next.model, next.deployment).unwrap().name,
            "k"
        );
    }
}

#[test]
fn aliases_and_wildcards_resolve() {
    let cfg = config(
        r#"[{"name": "gpt-4o", "aliases": ["default"], "deployments": [{"provider": "a"}]},
            {"name": "anthropic/*", "deployments": [{"provider": "b"}]},
            {"name": "gpt-*-mini", "deployments": [{"provider": "c", "model": "openai-*"}]}]"#,
        "{}",
    );
    assert_eq!(cfg.resolve_model("default"), Some((0, None)));
    assert_eq!(
        cfg.resolve_model("anthropic/claude-x"),
        Some((1, Some("claude-x")))
    );
    assert_eq!(cfg.resolve_model("gpt-5-mini"), Some((2, Some("5"))));
    assert_eq!(cfg.resolve_model("gpt-5"), None);
    assert_eq!(cfg.models[1].deployments[0].model, "*");
    assert_eq!(wildcard_match("a*b", "ab"), Some(""));
    assert_eq!(wildcard_match("ab*b", "ab"), None);
}

#[test]
fn config_errors_name_the_field() {
    let bad = |models: &str, router: &str| {
        let json = format!(
            r#"{{"providers": {{"a": {{"type": "openai", "cluster": "ca"}}}}, "router": {router}, "models": {models}}}"#
        );
        Config::parse(json.as_bytes(), &NoEnv).unwrap_err().path
    };
    let one = r#"[{"name": "m", "deployments": [{"provider": "a"}]}]"#;
    assert_eq!(
        bad(
            r#"[{"name": "m", "strategy": "fastest", "deployments": [{"provider": "a"}]}]"#,
            "{}"
        ),
        "models[0].strategy"
    );
    assert_eq!(
        bad(
            r#"[{"name": "m", "fallbacks": ["nope"], "deployments": [{"provider": "a"}]}]"#,
            "{}"
        ),
        "models[0].fallbacks[0]"
    );
    assert_eq!(
        bad(
            r#"[{"name": "a*b*", "deployments": [{"provider": "a"}]}]"#,
            "{}"
        ),
        "models[0].name"
    );
    assert_eq!(
        bad(one, r#"{"retry_policy": {"oops": 1}}"#),
        "router.retry_policy.oops"
    );
    assert_eq!(
        bad(one, r#"{"tags_header": "x-llmux-tags"}"#),
        "router.tags_header"
    );
    assert_eq!(
        bad(
            r#"[{"name": "m", "aliases": ["m"], "deployments": [{"provider": "a"}]}]"#,
            "{}"
        ),
        "models[0].aliases[0]"
    );
}

#[test]
fn error_classes() {
    let e = |status, msg: &str| {
        let g = GatewayError::new(status, "invalid_request_error", msg);
        ErrorClass::of(status, None, Some(&g))
    };
    assert_eq!(e(429, ""), ErrorClass::RateLimit);
    assert_eq!(e(529, ""), ErrorClass::ServerError);
    assert_eq!(
        e(400, "This model's maximum context length is 8192 tokens"),
        ErrorClass::ContextWindow
    );
    assert_eq!(e(400, "The response was filtered due to the prompt triggering Azure OpenAI's content management policy"), ErrorClass::ContentPolicy);
    assert_eq!(e(400, "bad"), ErrorClass::BadRequest);
    assert_eq!(
        ErrorClass::of(504, Some("upstream_response_timeout"), None),
        ErrorClass::Timeout
    );
    assert_eq!(
        ErrorClass::of(
            503,
            Some("upstream_reset_before_response_started{connection_failure}"),
            None
        ),
        ErrorClass::Connection
    );
    assert!(ErrorClass::RateLimit.cools_immediately(false));
    assert!(!ErrorClass::RateLimit.cools_immediately(true));
}

#[test]
fn status_renders_every_deployment() {
    let cfg = config(
        r#"[{"name": "m", "aliases": ["mm"], "deployments": [{"provider": "a", "name": "x"}]}]"#,
        FAILOVER,
    );
    let store = MemStore::default();
    state::update(&store, &cfg.models[0].deployments[0].state_key, |s| {
        s.on_start(NOW)
    });
    let v: serde_json::Value = serde_json::from_slice(&status::render(&cfg, &store, NOW)).unwrap();
    assert_eq!(v["failover"], true);
    assert_eq!(v["models"][0]["aliases"][0], "mm");
    assert_eq!(v["models"][0]["deployments"][0]["in_flight"], 1);
    assert_eq!(v["models"][0]["deployments"][0]["healthy"], true);
}

#[test]
fn all_cooling_asks_the_soonest_back_by_default() {
    let cfg = config(
        r#"[{"name": "m", "strategy": "priority", "deployments": [{"provider": "a", "name": "x"}, {"provider": "c", "name": "y", "priority": 1}]}]"#,
        FAILOVER,
    );
    let store = MemStore::default();
    let policy = CooldownPolicy::default();
    let d = &cfg.models[0].deployments;
    state::update(&store, &d[0].state_key, |s| {
        s.on_failure(NOW + 10, &policy, 500, true)
    });
    state::update(&store, &d[1].state_key, |s| {
        s.on_failure(NOW, &policy, 500, true)
    });
    let p = plan_with(&cfg, &store, "m", &req(NOW + 20), 1).unwrap();
    assert_eq!(names(&cfg, &p)[0], "y");
}

#[test]
fn recovery_entry_is_the_next_other_deployment() {
    let cfg = config(
        r#"[{"name": "m", "strategy": "priority", "num_retries": 2, "fallbacks": ["f"],
              "content_policy_fallbacks": ["cp"],
              "deployments": [{"provider": "a", "name": "x", "priority": 0, "api_keys": ["k1", "k2"]},
                              {"provider": "c", "name": "y", "priority": 1}]},
            {"name": "f", "deployments": [{"provider": "b", "name": "z"}]},
            {"name": "cp", "deployments": [{"provider": "b", "name": "w"}]}]"#,
        FAILOVER,
    );
    let never = |_: PlanEntry| false;
    let name = |e: Option<PlanEntry>| {
        e.map(|e| cfg.deployment(e.model, e.deployment).unwrap().name.clone())
    };
    let mut p = plan_with(&cfg, &MemStore::default(), "m", &req(NOW), 1).unwrap();
    p.attempt_started();
    assert_eq!(name(p.current()), Some("x".into()));
    // Not x's other key: another deployment.
    assert_eq!(name(p.recovery_entry(&cfg, &never)), Some("y".into()));
    // A cooling one only when nothing else is left.
    let y_cools = |e: PlanEntry| cfg.deployment(e.model, e.deployment).unwrap().name == "y";
    assert_eq!(name(p.recovery_entry(&cfg, &y_cools)), Some("z".into()));
    // From the fallback group's deployment nothing is left (content-policy entries never).
    let last = p
        .entries
        .iter()
        .position(|e| e.role == Role::Fallback)
        .unwrap();
    p.cursor = last;
    assert_eq!(p.recovery_entry(&cfg, &never), None);
    // A single-deployment plan has none.
    let lone = config(
        r#"[{"name": "m", "deployments": [{"provider": "a", "name": "x"}]}]"#,
        FAILOVER,
    );
    let p = plan_with(&lone, &MemStore::default(), "m", &req(NOW), 1).unwrap();
    assert_eq!(p.recovery_entry(&lone, &never), None);
}

#[test]
fn mid_stream_recovery_is_on_unless_configured_off() {
    let m = r#"[{"name": "m", "deployments": [{"provider": "a"}]}]"#;
    assert!(config(m, "{}").router.mid_stream_recovery);
    assert!(
        !config(m, r#"{"mid_stream_recovery": false}"#)
            .router
            .mid_stream_recovery
    );
}

/// Issue 14 item 11: two prices near `f64::MAX` summed to infinity, no candidate was "at most
/// the best" and `lowest-cost` took a random index modulo 0 on every request of the group.
#[test]
fn lowest_cost_with_prices_at_f64_max_does_not_panic() {
    let mut cfg = config(
        r#"[{"name": "m", "strategy": "lowest-cost", "deployments": [
               {"provider": "a", "name": "x", "price": {"input_per_mtok": 1, "output_per_mtok": 1}},
               {"provider": "c", "name": "y", "price": {"input_per_mtok": 1, "output_per_mtok": 1}}]}]"#,
        FAILOVER,
    );
    let store = MemStore::default();
    for v in [
        f64::MAX,
        1e308,
        f64::INFINITY,
        f64::NAN,
        0.0,
        f64::MIN_POSITIVE,
    ] {
        for d in &mut cfg.models[0].deployments {
            let p = Price {
                input_per_mtok: v,
                output_per_mtok: v,
                cached_input_per_mtok: v,
                cache_creation_per_mtok: v,
            };
            d.price = Some(p);
            d.cost_price = Some(p);
        }
        for seed in 0..8 {
            let plan = plan_with(&cfg, &store, "m", &req(NOW), seed).unwrap();
            assert_eq!(plan.entries.len(), 2, "{v}");
        }
    }
}

#[test]
fn prices_near_f64_max_are_a_config_error_naming_the_field() {
    let json = r#"{"providers": {"a": {"type": "openai", "cluster": "ca"}},
        "models": [{"name": "m", "deployments": [{"provider": "a",
            "price": {"input_per_mtok": 1, "output_per_mtok": 1.7e308}}]}]}"#;
    let e = Config::parse(json.as_bytes(), &NoEnv).unwrap_err();
    assert_eq!(e.path, "models[0].deployments[0].price.output_per_mtok");
}
