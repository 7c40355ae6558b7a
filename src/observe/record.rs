//! The per-request usage record: printed by the access log (as filter state, docs/design.md
//! fact 13) and exported.

use serde::Serialize;

use super::redact::redact;
use super::time::rfc3339_millis;
use super::{cost_nanousd, Timings};
use crate::config::Config;
use crate::providers::Usage;

/// Logged bodies are cut to this many bytes (before redaction).
pub const MAX_LOGGED_BODY_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRecord {
    pub request_id: String,
    /// RFC 3339, request headers received.
    pub start_time: String,
    pub end_time: String,
    #[serde(skip)]
    pub start_ns: u64,
    #[serde(skip)]
    pub end_ns: u64,
    #[serde(skip)]
    pub first_byte_ns: u64,
    /// The public model name the client asked for.
    pub model: String,
    pub provider: String,
    pub deployment: String,
    /// The provider's model name.
    pub upstream_model: String,
    pub stream: bool,
    /// The status the client got.
    pub status: u16,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_creation_tokens: u64,
    pub reasoning_tokens: u64,
    pub total_tokens: u64,
    /// Only when the deployment has prices (its own `price`, else the bundled list price).
    pub cost_usd: Option<f64>,
    pub duration_ms: Option<u64>,
    /// Streams: request sent → first response body byte.
    pub ttft_ms: Option<u64>,
    pub attempts: u32,
    /// The caller's virtual key and team (`auth`), and the response cache's outcome.
    pub key_alias: Option<String>,
    pub team: Option<String>,
    pub cache: Option<String>,
    /// The guardrails that acted on the request or its answer (comma-separated names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
}

/// What the glue knows about a finished request.
pub struct Finished<'a> {
    pub request_id: Option<&'a str>,
    pub model: usize,
    pub deployment: usize,
    pub stream: bool,
    pub status: u16,
    pub usage: Option<Usage>,
    pub timings: &'a Timings,
    /// Captured only when `log_bodies` is on.
    pub request_body: Option<&'a [u8]>,
    pub response_body: Option<&'a [u8]>,
    /// The caller's virtual key (index in `auth.keys`).
    pub key: Option<usize>,
    /// Attempts made (more than 1 after a failover).
    pub attempts: u32,
    /// The response cache's outcome (`hit`, `semantic`, `miss`, `bypass`); `None` without it.
    pub cache: Option<&'static str>,
    /// The guardrails that acted (comma-separated names).
    pub guardrails: Option<&'a str>,
}

/// What a finished request's filter state and usage record are made of, borrowing the names from
/// the configuration (nothing is allocated to build it).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary<'a> {
    pub model: &'a str,
    pub provider: &'a str,
    pub deployment: &'a str,
    pub upstream_model: &'a str,
    pub usage: Usage,
    /// Only when the deployment has prices (its own `price`, else the bundled list price).
    pub cost_usd: Option<f64>,
    pub duration_ms: Option<u64>,
    pub ttft_ms: Option<u64>,
    pub attempts: u32,
    pub key_alias: Option<&'a str>,
    pub team: Option<&'a str>,
    pub cache: Option<&'static str>,
}

impl<'a> Summary<'a> {
    /// `None` if the indices do not name a configured deployment (never, from the gateway).
    pub fn of(config: &'a Config, f: &Finished<'_>) -> Option<Summary<'a>> {
        let model = config.models.get(f.model)?;
        let dep = model.deployments.get(f.deployment)?;
        let provider = config.providers.get(dep.provider)?;
        let usage = f.usage.unwrap_or_default();
        let key = f
            .key
            .and_then(|k| config.auth.as_ref().and_then(|a| a.keys.get(k)));
        Some(Summary {
            model: &model.name,
            provider: &provider.name,
            deployment: &dep.name,
            upstream_model: &dep.model,
            usage,
            cost_usd: dep
                .cost_price
                .as_ref()
                .map(|p| cost_nanousd(p, &usage) as f64 / 1e9),
            duration_ms: f.timings.duration_ms(),
            ttft_ms: if f.stream { f.timings.ttft_ms() } else { None },
            attempts: f.attempts.max(1),
            key_alias: key.map(|k| k.alias.as_str()),
            team: key.and_then(|k| k.team.as_deref()),
            cache: f.cache,
        })
    }

    /// The request's own upstream model (a wildcard deployment's `model` has its `*` filled in
    /// per request) and what it cost (`cost_nanousd`, from [`crate::config::Deployment::request_price`]):
    /// a wildcard deployment's cost is only known per request.
    pub fn with_upstream(mut self, upstream_model: &'a str, cost_nanousd: Option<u64>) -> Self {
        self.upstream_model = upstream_model;
        self.cost_usd = cost_nanousd.map(|c| c as f64 / 1e9);
        self
    }

    /// Hands each filter-state field to `set`: what an access log prints as
    /// `%FILTER_STATE(wasm.NAME:PLAIN)%`. Missing values are `-`. Numbers are formatted into one
    /// reused buffer.
    pub fn filter_state(&self, mut set: impl FnMut(&'static str, &[u8])) {
        use std::fmt::Write;
        let mut buf = String::with_capacity(24);
        let mut num = |name: &'static str, v: Option<&dyn std::fmt::Display>| {
            buf.clear();
            match v {
                Some(v) => {
                    let _ = write!(buf, "{v}");
                }
                None => buf.push('-'),
            }
            set(name, buf.as_bytes());
        };
        let u = &self.usage;
        num("llmux_input_tokens", Some(&u.prompt_tokens));
        num("llmux_output_tokens", Some(&u.completion_tokens));
        num("llmux_cached_input_tokens", Some(&u.cached_tokens));
        num(
            "llmux_cache_creation_tokens",
            Some(&u.cache_creation_tokens),
        );
        num("llmux_reasoning_tokens", Some(&u.reasoning_tokens));
        let cost = self.cost_usd.map(Cost);
        num(
            "llmux_cost_usd",
            cost.as_ref().map(|c| c as &dyn std::fmt::Display),
        );
        num(
            "llmux_ttft_ms",
            self.ttft_ms.as_ref().map(|t| t as &dyn std::fmt::Display),
        );
        num("llmux_attempts", Some(&self.attempts));
        for (name, value) in [
            ("llmux_model", self.model),
            ("llmux_provider", self.provider),
            ("llmux_deployment", self.deployment),
            ("llmux_upstream_model", self.upstream_model),
            ("llmux_key_alias", self.key_alias.unwrap_or("-")),
            ("llmux_team", self.team.unwrap_or("-")),
            ("llmux_cache", self.cache.unwrap_or("-")),
        ] {
            set(name, value.as_bytes());
        }
    }
}

/// USD with 9 decimals (nano-USD precision).
struct Cost(f64);

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.9}", self.0)
    }
}

impl UsageRecord {
    /// The exported record (owns its strings; only built when an export is configured).
    pub fn build(config: &Config, f: &Finished<'_>) -> Option<UsageRecord> {
        Some(Self::from_summary(config, f, &Summary::of(config, f)?))
    }

    /// The exported record from a summary already made (with the request's own upstream model
    /// and cost: [`Summary::with_upstream`]).
    pub fn from_summary(config: &Config, f: &Finished<'_>, s: &Summary<'_>) -> UsageRecord {
        let body = |b: Option<&[u8]>| {
            b.filter(|_| config.log_bodies).map(|b| {
                let cut = &b[..b.len().min(MAX_LOGGED_BODY_BYTES)];
                redact(&String::from_utf8_lossy(cut)).into_owned()
            })
        };
        let t = f.timings;
        let u = s.usage;
        UsageRecord {
            request_id: f.request_id.unwrap_or("-").to_string(),
            start_time: rfc3339_millis(t.start_ns),
            end_time: rfc3339_millis(t.end_ns),
            start_ns: t.start_ns,
            end_ns: t.end_ns,
            first_byte_ns: t.first_byte_ns,
            model: s.model.to_string(),
            provider: s.provider.to_string(),
            deployment: s.deployment.to_string(),
            upstream_model: s.upstream_model.to_string(),
            stream: f.stream,
            status: f.status,
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            cached_input_tokens: u.cached_tokens,
            cache_creation_tokens: u.cache_creation_tokens,
            reasoning_tokens: u.reasoning_tokens,
            total_tokens: u.total_tokens(),
            cost_usd: s.cost_usd,
            duration_ms: s.duration_ms,
            ttft_ms: s.ttft_ms,
            attempts: s.attempts,
            key_alias: s.key_alias.map(str::to_string),
            team: s.team.map(str::to_string),
            cache: s.cache.map(str::to_string),
            guardrails: f.guardrails.map(str::to_string),
            request_body: body(f.request_body),
            response_body: body(f.response_body),
        }
    }
}

impl UsageRecord {
    /// A `/v1/files` or `/v1/batches` request (`endpoint`): no model and no tokens, recorded with
    /// the provider it went to, the status, the timings and the caller.
    pub fn unrouted(
        config: &Config,
        endpoint: &str,
        provider: usize,
        status: u16,
        timings: &crate::observe::time::Timings,
        key: Option<usize>,
        request_id: Option<&str>,
    ) -> UsageRecord {
        let key = key.and_then(|k| config.auth.as_ref()?.keys.get(k));
        UsageRecord {
            request_id: request_id.unwrap_or("-").to_string(),
            start_time: rfc3339_millis(timings.start_ns),
            end_time: rfc3339_millis(timings.end_ns),
            start_ns: timings.start_ns,
            end_ns: timings.end_ns,
            first_byte_ns: timings.first_byte_ns,
            model: format!("/v1/{endpoint}"),
            provider: config
                .providers
                .get(provider)
                .map_or_else(String::new, |p| p.name.clone()),
            deployment: String::new(),
            upstream_model: String::new(),
            stream: false,
            status,
            input_tokens: 0,
            output_tokens: 0,
            cached_input_tokens: 0,
            cache_creation_tokens: 0,
            reasoning_tokens: 0,
            total_tokens: 0,
            cost_usd: None,
            duration_ms: timings.duration_ms(),
            ttft_ms: None,
            attempts: 1,
            key_alias: key.map(|k| k.alias.clone()),
            team: key.and_then(|k| k.team.clone()),
            cache: None,
            guardrails: None,
            request_body: None,
            response_body: None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::ProcessEnv;

    pub(crate) fn config(log_bodies: bool) -> Config {
        let s = format!(
            r#"{{"providers": {{"oai": {{"type": "openai", "cluster": "c"}}}},
                "models": [{{"name": "gpt", "deployments": [{{"provider": "oai", "model": "gpt-4o-mini",
                    "price": {{"input_per_mtok": 0.15, "output_per_mtok": 0.6}}}}]}},
                           {{"name": "free", "deployments": [{{"provider": "oai"}}]}}],
                "log_bodies": {log_bodies}}}"#
        );
        Config::parse(s.as_bytes(), &ProcessEnv).unwrap()
    }

    pub(crate) fn timings() -> Timings {
        Timings {
            start_ns: 1_700_000_000_000_000_000,
            forwarded_ns: 1_700_000_000_010_000_000,
            first_byte_ns: 1_700_000_000_110_000_000,
            end_ns: 1_700_000_000_510_000_000,
        }
    }

    pub(crate) fn finished<'a>(t: &'a Timings, model: usize) -> Finished<'a> {
        Finished {
            request_id: Some("rid-1"),
            model,
            deployment: 0,
            stream: true,
            status: 200,
            usage: Some(Usage {
                prompt_tokens: 1000,
                completion_tokens: 200,
                cached_tokens: 100,
                cache_creation_tokens: 0,
                reasoning_tokens: 3,
            }),
            timings: t,
            request_body: Some(br#"{"content":"mail me: a@b.io"}"#),
            response_body: Some(b"data: {}"),
            key: None,
            attempts: 1,
            cache: None,
            guardrails: None,
        }
    }

    #[test]
    fn builds_record_with_cost_and_filter_state() {
        let c = config(false);
        let t = timings();
        let r = UsageRecord::build(&c, &finished(&t, 0)).unwrap();
        assert_eq!(r.deployment, "oai/gpt-4o-mini");
        assert_eq!(r.total_tokens, 1200);
        // 900×0.15 + 100×0.15 + 200×0.6 = 270 µUSD
        assert!((r.cost_usd.unwrap() - 0.00027).abs() < 1e-12);
        assert_eq!(r.ttft_ms, Some(100));
        assert_eq!(r.duration_ms, Some(500));
        assert_eq!(r.start_time, "2023-11-14T22:13:20.000Z");
        assert_eq!(r.request_body, None, "bodies are off by default");
        let mut fs: Vec<(&str, String)> = Vec::new();
        Summary::of(&c, &finished(&t, 0))
            .unwrap()
            .filter_state(|k, v| fs.push((k, String::from_utf8(v.to_vec()).unwrap())));
        assert_eq!(fs.len(), 15);
        assert!(fs.contains(&("llmux_deployment", "oai/gpt-4o-mini".to_string())));
        assert!(fs.contains(&("llmux_input_tokens", "1000".to_string())));
        assert!(fs.contains(&("llmux_cost_usd", "0.000270000".to_string())));
        assert!(fs.contains(&("llmux_ttft_ms", "100".to_string())));
        assert!(fs.contains(&("llmux_key_alias", "-".to_string())));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["cached_input_tokens"], 100);
        assert!(v.get("request_body").is_none());
        assert!(v["key_alias"].is_null());

        let free = UsageRecord::build(&c, &finished(&t, 1)).unwrap();
        assert_eq!(free.cost_usd, None);
        // A wildcard deployment's request: its own upstream model and cost.
        let f = finished(&t, 1);
        let s = Summary::of(&c, &f)
            .unwrap()
            .with_upstream("gpt-4o-mini-2024-07-18", Some(270_000));
        let r = UsageRecord::from_summary(&c, &f, &s);
        assert_eq!(r.upstream_model, "gpt-4o-mini-2024-07-18");
        assert!((r.cost_usd.unwrap() - 0.00027).abs() < 1e-12);
        let mut cost = String::new();
        Summary::of(&c, &finished(&t, 1))
            .unwrap()
            .filter_state(|k, v| {
                if k == "llmux_cost_usd" {
                    cost = String::from_utf8(v.to_vec()).unwrap();
                }
            });
        assert_eq!(cost, "-");
        assert!(UsageRecord::build(&c, &finished(&t, 7)).is_none());
    }

    #[test]
    fn bodies_are_redacted_when_on() {
        let c = config(true);
        let t = timings();
        let r = UsageRecord::build(&c, &finished(&t, 0)).unwrap();
        assert_eq!(
            r.request_body.as_deref(),
            Some(r#"{"content":"mail me: [REDACTED_EMAIL]"}"#)
        );
        assert_eq!(r.response_body.as_deref(), Some("data: {}"));
    }
}
