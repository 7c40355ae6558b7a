//! Observability core, in plain Rust: metric names and labels, per-request usage records, cost,
//! redaction, exporter payloads and batching. The Wasm glue only defines/records the metrics this
//! module names and ships the bytes it builds.
//!
//! Envoy stats have no labels, only names; labels are encoded in the stat name as
//! `.<label key>.<value>` pairs and turned back into Prometheus labels by the
//! `stats_config.stats_tags` regexes in `envoy/` (see [`STATS_TAGS`] and docs/observability.md).
//! Label values are only configured names (sanitized: no dots) or fixed words, never raw client
//! strings, so cardinality is bounded by the configuration.

pub mod export;
pub mod record;
pub mod redact;
pub mod time;

use crate::config::Config;
use crate::providers::Usage;

// Compatibility paths: other modules name these as `crate::observe::...`.
pub use crate::routing::Route;
pub use time::Timings;

/// Prefix of every LLMux metric (Envoy adds `wasmcustom.` in front and strips it again in the
/// Prometheus output).
pub const PREFIX: &str = "llmux";
/// Label value for a request the gateway answered before choosing a model/deployment.
pub const OTHER: &str = "other";
pub const NONE: &str = "none";

/// The label keys encoded in stat names and the regexes that extract them. The first capture
/// group is cut out of the name, the second is the value.
pub const STATS_TAGS: &[(&str, &str)] = &[
    (
        "gen_ai.request.model",
        r"(\.gen_ai\.request\.model\.([^.]+))",
    ),
    (
        "gen_ai.response.model",
        r"(\.gen_ai\.response\.model\.([^.]+))",
    ),
    (
        "gen_ai.provider.name",
        r"(\.gen_ai\.provider\.name\.([^.]+))",
    ),
    ("gen_ai.token.type", r"(\.gen_ai\.token\.type\.([^.]+))"),
    ("llmux.deployment", r"(\.llmux\.deployment\.([^.]+))"),
    ("llmux.status_class", r"(\.llmux\.status_class\.([^.]+))"),
    ("llmux.stream", r"(\.llmux\.stream\.([^.]+))"),
    ("llmux.error_class", r"(\.llmux\.error_class\.([^.]+))"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// All prompt tokens (cached and cache-creation ones included).
    Input,
    Output,
    /// Of the input, read from the provider's prompt cache.
    CachedInput,
    /// Of the input, written to the provider's prompt cache.
    CacheCreation,
    /// Of the output, spent on reasoning.
    Reasoning,
}

impl TokenType {
    pub const ALL: [TokenType; 5] = [
        TokenType::Input,
        TokenType::Output,
        TokenType::CachedInput,
        TokenType::CacheCreation,
        TokenType::Reasoning,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
            Self::CachedInput => "cached_input",
            Self::CacheCreation => "cache_creation",
            Self::Reasoning => "reasoning",
        }
    }

    pub fn of(self, u: &Usage) -> u64 {
        match self {
            Self::Input => u.prompt_tokens,
            Self::Output => u.completion_tokens,
            Self::CachedInput => u.cached_tokens,
            Self::CacheCreation => u.cache_creation_tokens,
            Self::Reasoning => u.reasoning_tokens,
        }
    }
}

/// `1xx`..`5xx`, or `other` (0: no response).
pub fn status_class(status: u16) -> u8 {
    match status {
        100..=599 => (status / 100) as u8,
        _ => 0,
    }
}

fn status_class_name(c: u8) -> &'static str {
    match c {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => OTHER,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

/// One metric series: the key of the glue's per-VM id cache. Cheap to build and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKey {
    Requests {
        route: Route,
        status_class: u8,
        stream: bool,
    },
    Tokens {
        route: Route,
        token_type: TokenType,
    },
    /// Nano-USD.
    Cost {
        route: Route,
    },
    /// Milliseconds, request sent upstream → last response byte.
    Duration {
        route: Route,
    },
    /// Milliseconds, request sent upstream → first response body byte (streams).
    TimeToFirstToken {
        route: Route,
    },
    /// Microseconds per output token after the first (streams).
    TimePerOutputToken {
        route: Route,
    },
    /// An attempt on this deployment failed and another attempt followed.
    Retries {
        route: Route,
        class: crate::routing::ErrorClass,
    },
    /// An attempt on this deployment failed and the request ended with that failure.
    FailedAttempts {
        route: Route,
        class: crate::routing::ErrorClass,
    },
    /// A request was served by this deployment after an earlier attempt failed.
    Failovers {
        route: Route,
    },
    /// This deployment entered a cooldown.
    Cooldowns {
        route: Route,
    },
    /// A stream broke off mid-way: continued on this (fallback) deployment, or (outcome
    /// `not_recoverable`) left as it was on the deployment that broke.
    MidStreamRecoveries {
        route: Route,
        outcome: crate::routing::recovery::Outcome,
    },
    ExportRecordsSent,
    ExportRecordsFailed,
    ExportRecordsDropped,
    ExportBatches,
    VmMemoryBytes,
    /// Requests refused by a limit: `requests`, `tokens`, `budget`, `parallel`.
    RateLimited(&'static str),
    /// Rate-limit service calls that failed (unreachable, timeout, gRPC error, bad answer).
    RateLimitErrors,
    /// The response cache's lookups, stores and savings.
    Cache(crate::cache::CacheMetric),
    /// Guardrail checks, actions and errors.
    Guard(crate::guard::select::GuardMetric),
}

impl MetricKey {
    pub fn metric_type(&self) -> MetricType {
        match self {
            Self::Duration { .. }
            | Self::TimeToFirstToken { .. }
            | Self::TimePerOutputToken { .. }
            | Self::Cache(crate::cache::CacheMetric::LookupDurationUs) => MetricType::Histogram,
            Self::VmMemoryBytes => MetricType::Gauge,
            _ => MetricType::Counter,
        }
    }
}

/// Replaces everything but `[A-Za-z0-9_/-]` (dots above all: they separate stat name segments)
/// with `_`, so a name is one segment and one label value.
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '/' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "_".to_string()
    } else {
        s
    }
}

/// Label segments per configured model and deployment, built once per configuration.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// Per model, per deployment: `.gen_ai.request.model.M.gen_ai.response.model.R...`.
    routes: Vec<Vec<String>>,
    rejected: String,
    /// Guardrail and rule names (sanitised), by index.
    guards: Vec<(String, Vec<String>)>,
}

impl Catalog {
    pub fn new(config: &Config) -> Self {
        let routes = config
            .models
            .iter()
            .map(|m| {
                m.deployments
                    .iter()
                    .map(|d| {
                        route_labels(
                            &sanitize(&m.name),
                            &sanitize(&d.model),
                            &sanitize(&config.providers[d.provider].name),
                            &sanitize(&d.name),
                        )
                    })
                    .collect()
            })
            .collect();
        let guards = config
            .guardrails
            .as_ref()
            .map(|g| g.label_names())
            .unwrap_or_default()
            .into_iter()
            .map(|(g, rules)| (sanitize(&g), rules.iter().map(|r| sanitize(r)).collect()))
            .collect();
        Catalog {
            guards,
            routes,
            rejected: route_labels(OTHER, NONE, NONE, NONE),
        }
    }

    fn route(&self, r: Route) -> &str {
        match r {
            Route::Rejected => &self.rejected,
            Route::Deployment { model, deployment } => self
                .routes
                .get(model)
                .and_then(|m| m.get(deployment))
                .map(String::as_str)
                .unwrap_or(&self.rejected),
        }
    }

    /// A guard metric's name after the prefix.
    fn guard_name(&self, m: &crate::guard::select::GuardMetric) -> String {
        use crate::guard::select::GuardMetric;
        let g = |i: u16| {
            self.guards
                .get(usize::from(i))
                .map_or(OTHER, |(n, _)| n.as_str())
        };
        match *m {
            GuardMetric::Checks { guardrail, dir } => format!(
                "guard.checks.llmux.guardrail.{}.llmux.direction.{dir}",
                g(guardrail)
            ),
            GuardMetric::Acted {
                guardrail,
                rule,
                action,
            } => {
                let r = self
                    .guards
                    .get(usize::from(guardrail))
                    .and_then(|(_, rules)| rules.get(usize::from(rule)))
                    .map_or(OTHER, String::as_str);
                format!(
                    "guard.actions.llmux.guardrail.{}.llmux.rule.{r}.llmux.action.{action}",
                    g(guardrail)
                )
            }
            GuardMetric::Errors { guardrail } => {
                format!("guard.errors.llmux.guardrail.{}", g(guardrail))
            }
            GuardMetric::Skipped { guardrail } => {
                format!("guard.skipped.llmux.guardrail.{}", g(guardrail))
            }
        }
    }

    /// The stat name to define for `key` (Envoy prefixes it with `wasmcustom.`).
    pub fn name(&self, key: &MetricKey) -> String {
        match *key {
            MetricKey::Requests {
                route,
                status_class,
                stream,
            } => format!(
                "{PREFIX}.requests{}.llmux.status_class.{}.llmux.stream.{stream}",
                self.route(route),
                status_class_name(status_class)
            ),
            MetricKey::Tokens { route, token_type } => format!(
                "{PREFIX}.gen_ai.client.token.usage{}.gen_ai.token.type.{}",
                self.route(route),
                token_type.name()
            ),
            MetricKey::Cost { route } => format!("{PREFIX}.cost.nanousd{}", self.route(route)),
            MetricKey::Duration { route } => {
                format!(
                    "{PREFIX}.gen_ai.server.request.duration{}",
                    self.route(route)
                )
            }
            MetricKey::TimeToFirstToken { route } => format!(
                "{PREFIX}.gen_ai.server.time_to_first_token{}",
                self.route(route)
            ),
            MetricKey::TimePerOutputToken { route } => format!(
                "{PREFIX}.gen_ai.server.time_per_output_token{}",
                self.route(route)
            ),
            MetricKey::Retries { route, class } => format!(
                "{PREFIX}.router.retries{}.llmux.error_class.{}",
                self.route(route),
                class.name()
            ),
            MetricKey::FailedAttempts { route, class } => format!(
                "{PREFIX}.router.failed_attempts{}.llmux.error_class.{}",
                self.route(route),
                class.name()
            ),
            MetricKey::Failovers { route } => {
                format!("{PREFIX}.router.failovers{}", self.route(route))
            }
            MetricKey::Cooldowns { route } => {
                format!("{PREFIX}.router.cooldowns{}", self.route(route))
            }
            MetricKey::MidStreamRecoveries { route, outcome } => format!(
                "{PREFIX}.router.midstream_recoveries{}.llmux.outcome.{}",
                self.route(route),
                outcome.name()
            ),
            MetricKey::ExportRecordsSent => format!("{PREFIX}.export.records_sent"),
            MetricKey::ExportRecordsFailed => format!("{PREFIX}.export.records_failed"),
            MetricKey::ExportRecordsDropped => format!("{PREFIX}.export.records_dropped"),
            MetricKey::ExportBatches => format!("{PREFIX}.export.batches"),
            MetricKey::VmMemoryBytes => format!("{PREFIX}.vm_memory_bytes"),
            MetricKey::RateLimited(kind) => format!("{PREFIX}.ratelimit.rejected_{kind}"),
            MetricKey::RateLimitErrors => format!("{PREFIX}.ratelimit.errors"),
            MetricKey::Cache(m) => format!("{PREFIX}.{}", m.name()),
            MetricKey::Guard(m) => format!("{PREFIX}.{}", self.guard_name(&m)),
        }
    }
}

fn route_labels(model: &str, response_model: &str, provider: &str, deployment: &str) -> String {
    format!(
        ".gen_ai.request.model.{model}.gen_ai.response.model.{response_model}.gen_ai.provider.name.{provider}.llmux.deployment.{deployment}"
    )
}

/// A metric update: add to a counter or record a histogram sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    Add(MetricKey, u64),
    Record(MetricKey, u64),
}

/// The metric updates for one finished request, handed to `out` one by one (no allocation). `usage` is `None` when the provider's answer had
/// none (errors); `cost_nanousd` only when the deployment has prices.
pub fn request_updates(
    route: Route,
    status: u16,
    stream: bool,
    usage: Option<&Usage>,
    cost_nanousd: Option<u64>,
    t: &Timings,
    mut out: impl FnMut(Update),
) {
    out(Update::Add(
        MetricKey::Requests {
            route,
            status_class: status_class(status),
            stream,
        },
        1,
    ));
    if let Some(u) = usage {
        for tt in TokenType::ALL {
            let n = tt.of(u);
            if n > 0 {
                out(Update::Add(
                    MetricKey::Tokens {
                        route,
                        token_type: tt,
                    },
                    n,
                ));
            }
        }
    }
    if let Some(c) = cost_nanousd {
        out(Update::Add(MetricKey::Cost { route }, c));
    }
    if let Route::Rejected = route {
        return;
    }
    if let Some(d) = t.duration_ms() {
        out(Update::Record(MetricKey::Duration { route }, d));
    }
    if stream && (200..300).contains(&status) {
        if let Some(ttft) = t.ttft_ms() {
            out(Update::Record(MetricKey::TimeToFirstToken { route }, ttft));
        }
        if let Some(tpot) = usage.and_then(|u| t.tpot_us(u.completion_tokens)) {
            out(Update::Record(
                MetricKey::TimePerOutputToken { route },
                tpot,
            ));
        }
    }
}

/// Cost of `u` at `p`, in nano-USD (prices are USD per million tokens, so a token costs
/// `price × 1000` nano-USD). Uncached input, cached input, cache creation and output are priced
/// separately.
pub fn cost_nanousd(p: &crate::pricing::Price, u: &Usage) -> u64 {
    let cached = u.cached_tokens.min(u.prompt_tokens);
    let creation = u.cache_creation_tokens.min(u.prompt_tokens - cached);
    let plain = u.prompt_tokens - cached - creation;
    // No tokens of a kind cost nothing, whatever the price (0 × ∞ would be NaN).
    let term = |n: u64, price: f64| if n == 0 { 0.0 } else { n as f64 * price };
    let nano = (term(plain, p.input_per_mtok)
        + term(cached, p.cached_input_per_mtok)
        + term(creation, p.cache_creation_per_mtok)
        + term(u.completion_tokens, p.output_per_mtok))
        * 1000.0;
    // `as` saturates: too large (or infinite) a cost is `u64::MAX`, never free; NaN is 0.
    if nano > 0.0 {
        nano.round() as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Price, ProcessEnv};

    fn config() -> Config {
        Config::parse(
            br#"{"providers": {"oai": {"type": "openai", "cluster": "c"},
                                "ant.x": {"type": "anthropic", "cluster": "c"}},
                 "models": [{"name": "gpt-4o-mini", "deployments": [{"provider": "oai"}]},
                            {"name": "claude-3.5", "deployments": [{"provider": "ant.x", "model": "claude-3-5-haiku-2024"},
                                                                    {"provider": "oai", "name": "backup"}]}]}"#,
            &ProcessEnv,
        )
        .unwrap()
    }

    #[test]
    fn names_encode_sanitized_labels() {
        let c = Catalog::new(&config());
        assert_eq!(
            c.name(&MetricKey::Requests {
                route: Route::Deployment {
                    model: 1,
                    deployment: 0
                },
                status_class: 2,
                stream: true
            }),
            "llmux.requests.gen_ai.request.model.claude-3_5.gen_ai.response.model.claude-3-5-haiku-2024.gen_ai.provider.name.ant_x.llmux.deployment.ant_x/claude-3-5-haiku-2024.llmux.status_class.2xx.llmux.stream.true"
        );
        assert_eq!(
            c.name(&MetricKey::Tokens {
                route: Route::Deployment {
                    model: 1,
                    deployment: 1
                },
                token_type: TokenType::CachedInput
            }),
            "llmux.gen_ai.client.token.usage.gen_ai.request.model.claude-3_5.gen_ai.response.model.claude-3_5.gen_ai.provider.name.oai.llmux.deployment.backup.gen_ai.token.type.cached_input"
        );
        assert_eq!(
            c.name(&MetricKey::Duration {
                route: Route::Rejected
            }),
            "llmux.gen_ai.server.request.duration.gen_ai.request.model.other.gen_ai.response.model.none.gen_ai.provider.name.none.llmux.deployment.none"
        );
        // An out-of-range route (never produced) still names a bounded series.
        assert!(c
            .name(&MetricKey::Cost {
                route: Route::Deployment {
                    model: 9,
                    deployment: 9
                }
            })
            .contains(".gen_ai.request.model.other."));
        assert_eq!(sanitize("a.b c:d/é"), "a_b_c_d/_");
        assert_eq!(sanitize(""), "_");
        assert_eq!(status_class_name(status_class(0)), "other");
        assert_eq!(status_class_name(status_class(503)), "5xx");
    }

    #[test]
    fn every_label_in_a_name_is_extracted_by_a_tag() {
        // Every `.key.value` pair the catalog writes must be one of STATS_TAGS' keys.
        let c = Catalog::new(&config());
        let name = c.name(&MetricKey::Requests {
            route: Route::Rejected,
            status_class: 4,
            stream: false,
        });
        let mut rest = name.clone();
        for (tag, _) in STATS_TAGS {
            let needle = format!(".{tag}.");
            if let Some(i) = rest.find(&needle) {
                let after = &rest[i + needle.len()..];
                let end = after
                    .find('.')
                    .map(|e| i + needle.len() + e)
                    .unwrap_or(rest.len());
                rest.replace_range(i..end, "");
            }
        }
        assert_eq!(rest, "llmux.requests");
    }

    #[test]
    fn updates_for_a_streamed_request() {
        let route = Route::Deployment {
            model: 0,
            deployment: 0,
        };
        let u = Usage {
            prompt_tokens: 100,
            completion_tokens: 11,
            cached_tokens: 40,
            ..Default::default()
        };
        let t = Timings {
            start_ns: 1,
            forwarded_ns: 1_000_000_000,
            first_byte_ns: 1_250_000_000,
            end_ns: 1_750_000_000,
        };
        let mut out = Vec::new();
        request_updates(route, 200, true, Some(&u), Some(7), &t, |u| out.push(u));
        assert_eq!(
            out,
            vec![
                Update::Add(
                    MetricKey::Requests {
                        route,
                        status_class: 2,
                        stream: true
                    },
                    1
                ),
                Update::Add(
                    MetricKey::Tokens {
                        route,
                        token_type: TokenType::Input
                    },
                    100
                ),
                Update::Add(
                    MetricKey::Tokens {
                        route,
                        token_type: TokenType::Output
                    },
                    11
                ),
                Update::Add(
                    MetricKey::Tokens {
                        route,
                        token_type: TokenType::CachedInput
                    },
                    40
                ),
                Update::Add(MetricKey::Cost { route }, 7),
                Update::Record(MetricKey::Duration { route }, 750),
                Update::Record(MetricKey::TimeToFirstToken { route }, 250),
                Update::Record(MetricKey::TimePerOutputToken { route }, 50_000),
            ]
        );
        // A rejected request: only the request count.
        out.clear();
        request_updates(Route::Rejected, 400, false, None, None, &t, |u| out.push(u));
        assert_eq!(out.len(), 1);
        // An error stream: no TTFT.
        out.clear();
        request_updates(route, 503, true, None, None, &t, |u| out.push(u));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn cost_prices_each_token_kind() {
        let p = Price {
            input_per_mtok: 2.0,
            output_per_mtok: 10.0,
            cached_input_per_mtok: 0.5,
            cache_creation_per_mtok: 2.5,
        };
        let u = Usage {
            prompt_tokens: 1000,
            completion_tokens: 100,
            cached_tokens: 200,
            cache_creation_tokens: 300,
            reasoning_tokens: 0,
        };
        // 500×2 + 200×0.5 + 300×2.5 + 100×10 = 2850 µUSD... ×1000 / 1e6 per token → nano-USD
        assert_eq!(cost_nanousd(&p, &u), 2_850_000);
        // Inconsistent usage (cached > prompt) never underflows.
        let odd = Usage {
            prompt_tokens: 1,
            cached_tokens: 5,
            cache_creation_tokens: 5,
            ..Default::default()
        };
        assert_eq!(cost_nanousd(&p, &odd), 500);
        assert_eq!(cost_nanousd(&p, &Usage::default()), 0);
        // Absurd counts saturate instead of wrapping or panicking.
        let huge = Usage {
            prompt_tokens: u64::MAX,
            completion_tokens: u64::MAX,
            cached_tokens: u64::MAX,
            cache_creation_tokens: u64::MAX,
            reasoning_tokens: u64::MAX,
        };
        assert_eq!(cost_nanousd(&p, &huge), u64::MAX);
    }

    /// Issue 14 item 11: a cost too large for an `f64` was 0 (free, so budgets never bound);
    /// it saturates. A NaN price costs nothing rather than panicking.
    #[test]
    fn infinite_cost_saturates_instead_of_being_free() {
        let p = |v: f64| Price {
            input_per_mtok: v,
            output_per_mtok: v,
            cached_input_per_mtok: v,
            cache_creation_per_mtok: v,
        };
        let u = Usage {
            prompt_tokens: 10,
            completion_tokens: 10,
            ..Default::default()
        };
        assert_eq!(cost_nanousd(&p(f64::MAX), &u), u64::MAX);
        assert_eq!(cost_nanousd(&p(f64::INFINITY), &u), u64::MAX);
        assert_eq!(cost_nanousd(&p(f64::NAN), &u), 0);
        assert_eq!(cost_nanousd(&p(-1.0), &u), 0);
        assert_eq!(cost_nanousd(&p(f64::MIN_POSITIVE), &u), 0);
    }

    #[test]
    fn timings_never_underflow() {
        let t = Timings {
            start_ns: 5,
            forwarded_ns: 10,
            first_byte_ns: 3,
            end_ns: 2,
        };
        assert_eq!(
            (t.duration_ms(), t.ttft_ms(), t.tpot_us(10)),
            (None, None, None)
        );
        assert_eq!(Timings::default().duration_ms(), None);
    }
}
