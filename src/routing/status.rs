//! `GET /llmux/status`: every group and deployment with its health and live counters, as JSON.

use serde::Serialize;

use super::state::{self, StateStore};
use crate::config::Config;

#[derive(Serialize)]
struct Status<'a> {
    now_ms: u64,
    failover: bool,
    attempts_cluster: Option<&'a str>,
    models: Vec<Group<'a>>,
}

#[derive(Serialize)]
struct Group<'a> {
    name: &'a str,
    aliases: &'a [String],
    strategy: &'static str,
    /// Health and load are kept (there is a choice to make); otherwise the counters stay 0.
    tracked: bool,
    fallbacks: &'a [String],
    deployments: Vec<Dep<'a>>,
}

#[derive(Serialize)]
struct Dep<'a> {
    name: &'a str,
    /// Which of the deployment's API keys (0 = the provider's own or the first).
    key: u8,
    provider: &'a str,
    model: &'a str,
    healthy: bool,
    cooldown_remaining_ms: u64,
    cooldowns: u32,
    in_flight: u32,
    latency_ewma_ms: f64,
    ttft_ewma_ms: f64,
    requests_this_minute: u32,
    tokens_this_minute: u32,
    fails_in_window: u32,
    successes_in_window: u32,
    last_error_status: u16,
}

pub fn render(config: &Config, store: &dyn StateStore, now_ms: u64) -> Vec<u8> {
    let models = config
        .models
        .iter()
        .map(|m| Group {
            name: &m.name,
            aliases: &m.aliases,
            strategy: m.policy.strategy.name(),
            tracked: config.router.tracks(m),
            fallbacks: &m.policy.fallbacks,
            deployments: m
                .deployments
                .iter()
                .map(|d| {
                    let s = state::load(store, &d.state_key);
                    let (rpm, tpm) = s.usage_now(now_ms);
                    Dep {
                        name: &d.name,
                        key: d.key_slot,
                        provider: &config.providers[d.provider].name,
                        model: &d.model,
                        healthy: !s.cooling(now_ms),
                        cooldown_remaining_ms: s.cooldown_until_ms.saturating_sub(now_ms),
                        cooldowns: s.cooldowns,
                        in_flight: s.in_flight,
                        latency_ewma_ms: f64::from(s.latency_us) / 1000.0,
                        ttft_ewma_ms: f64::from(s.ttft_us) / 1000.0,
                        requests_this_minute: rpm,
                        tokens_this_minute: tpm,
                        fails_in_window: s.fails,
                        successes_in_window: s.successes,
                        last_error_status: s.last_error,
                    }
                })
                .collect(),
        })
        .collect();
    serde_json::to_vec(&Status {
        now_ms,
        failover: config.router.attempts_cluster.is_some(),
        attempts_cluster: config.router.attempts_cluster.as_deref(),
        models,
    })
    .unwrap_or_else(|_| b"{}".to_vec())
}
