//! The router's configuration types: group strategies, error classes and retry policies,
//! cooldowns, the status endpoint, and the matching of wildcard model names.
//!
//! A leaf module (it names no other module of the crate), so that `config` can hold and fill
//! these types while `routing` reads `Config`, without a module cycle. The decisions made with
//! them (classifying a failure, planning attempts) stay in `routing`.

/// How a group picks among its deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Weighted random (`weight`).
    SimpleShuffle,
    /// In turn, across all workers (a shared counter).
    RoundRobin,
    /// Fewest requests in flight (all workers).
    LeastBusy,
    /// Lowest latency EWMA (time to first token for streams); deployments within
    /// `latency_buffer` of the best share the load.
    LowestLatency,
    /// Cheapest price per token.
    LowestCost,
    /// Most headroom against the deployment's `rpm`/`tpm` this minute.
    UsageBased,
    /// `priority` order (lower first); equal priorities by weight.
    Priority,
}

impl Strategy {
    pub const NAMES: &'static [&'static str] = &[
        "simple-shuffle",
        "round-robin",
        "least-busy",
        "lowest-latency",
        "lowest-cost",
        "usage-based",
        "priority",
    ];

    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "simple-shuffle" => Self::SimpleShuffle,
            "round-robin" => Self::RoundRobin,
            "least-busy" => Self::LeastBusy,
            "lowest-latency" | "latency-based" => Self::LowestLatency,
            "lowest-cost" | "cost-based" => Self::LowestCost,
            "usage-based" | "lowest-tpm-rpm" => Self::UsageBased,
            "priority" => Self::Priority,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// Why an attempt failed: decides retries, fallbacks and cooldowns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// 429.
    RateLimit,
    /// 408, or no answer within the provider's timeout.
    Timeout,
    /// 500, 502, 503, 529 and other 5xx.
    ServerError,
    /// Connection refused or reset before an answer.
    Connection,
    /// 401, 403.
    Auth,
    /// 404 (the deployment's model does not exist there).
    NotFound,
    /// The provider refused the content (400 content filter).
    ContentPolicy,
    /// The prompt is larger than the model's context window.
    ContextWindow,
    /// Any other 4xx: the request itself is wrong; retrying elsewhere will not help.
    BadRequest,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 9] = [
        Self::RateLimit,
        Self::Timeout,
        Self::ServerError,
        Self::Connection,
        Self::Auth,
        Self::NotFound,
        Self::ContentPolicy,
        Self::ContextWindow,
        Self::BadRequest,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::RateLimit => "rate_limit",
            Self::Timeout => "timeout",
            Self::ServerError => "server_error",
            Self::Connection => "connection",
            Self::Auth => "auth",
            Self::NotFound => "not_found",
            Self::ContentPolicy => "content_policy",
            Self::ContextWindow => "context_window",
            Self::BadRequest => "bad_request",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// How many retries each error class gets (per request, across all deployments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max: [u8; 9],
}

impl RetryPolicy {
    /// `num_retries` for every class that a retry can fix.
    pub fn uniform(num_retries: u8) -> Self {
        let mut max = [num_retries; 9];
        max[ErrorClass::BadRequest as usize] = 0;
        RetryPolicy { max }
    }

    pub fn allows(&self, class: ErrorClass, used: u8) -> bool {
        used < self.max[class as usize]
    }
}

/// Router settings (the config's `router` section).
#[derive(Debug, Clone, PartialEq)]
pub struct RouterConfig {
    /// The cluster whose upstream LLMux stage makes the attempts (see `docs/routing.md`);
    /// `None`: one attempt per request, no failover.
    pub attempts_cluster: Option<String>,
    /// Extra attempts beyond one per deployment of the group, unless a group says otherwise.
    pub num_retries: u8,
    pub retry_policy: RetryPolicy,
    pub cooldown: CooldownPolicy,
    /// A 429's `Retry-After` is honoured (by Envoy's back-off) when the next attempt goes to
    /// the same deployment and the wait is at most this long.
    pub max_retry_after_s: u32,
    /// Requests carry tags in this header (comma-separated) or in the body's `tags`.
    pub tags_header: String,
    /// At most this many attempts per request.
    pub max_attempts: u8,
    /// When every deployment (and fallback) is cooling down: answer 429 at once instead of
    /// asking the one that is back soonest.
    pub reject_when_all_cooling: bool,
    /// `GET <path>` answers the router status JSON to the allowed client addresses.
    pub status: Option<StatusConfig>,
    /// A streamed chat completion that breaks off after its first byte is continued on a
    /// fallback deployment (failover path only; see `routing::recovery`).
    pub mid_stream_recovery: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            attempts_cluster: None,
            num_retries: 0,
            retry_policy: RetryPolicy::uniform(10),
            cooldown: CooldownPolicy::default(),
            max_retry_after_s: 10,
            tags_header: "llmux-tags".into(),
            max_attempts: 6,
            reject_when_all_cooling: false,
            status: None,
            mid_stream_recovery: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusConfig {
    pub path: String,
    /// Client address prefixes allowed (`127.0.0.1`, `::1`, `10.0.`); empty: loopback only.
    pub allow: Vec<String>,
}

impl StatusConfig {
    pub fn allows(&self, client_ip: &str) -> bool {
        if self.allow.is_empty() {
            return client_ip == "127.0.0.1" || client_ip == "::1" || client_ip.starts_with("127.");
        }
        self.allow.iter().any(|p| client_ip.starts_with(p.as_str()))
    }
}

/// A group's routing settings (on each `models[]` entry).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPolicy {
    pub strategy: Strategy,
    /// Retries within this group and its fallbacks (`None`: the router's `num_retries`).
    pub num_retries: Option<u8>,
    /// Groups tried, in order, once this group's deployments have failed.
    pub fallbacks: Vec<String>,
    /// Groups used when the prompt is larger than every deployment's `max_input_tokens`
    /// (before sending), or when a provider says it is.
    pub context_window_fallbacks: Vec<String>,
    /// Groups tried when a provider refuses the content.
    pub content_policy_fallbacks: Vec<String>,
    /// `lowest-latency`: deployments within this fraction of the fastest share the load.
    pub latency_buffer: f64,
}

impl Default for GroupPolicy {
    fn default() -> Self {
        GroupPolicy {
            strategy: Strategy::SimpleShuffle,
            num_retries: None,
            fallbacks: Vec::new(),
            context_window_fallbacks: Vec::new(),
            content_policy_fallbacks: Vec::new(),
            latency_buffer: 0.1,
        }
    }
}

/// When a deployment is taken out of rotation, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CooldownPolicy {
    /// Failures allowed per window before a cooldown.
    pub allowed_fails: u32,
    pub window_ms: u64,
    pub cooldown_ms: u64,
    /// The failure-rate rule needs at least this many requests in the window.
    pub min_requests_for_rate: u32,
}

impl Default for CooldownPolicy {
    fn default() -> Self {
        // LiteLLM's defaults: 3 allowed fails per minute, 5 s cooldown.
        CooldownPolicy {
            allowed_fails: 3,
            window_ms: 60_000,
            cooldown_ms: 5_000,
            min_requests_for_rate: 10,
        }
    }
}

/// Matches a wildcard model pattern (one `*`: `anthropic/*`, `gpt-4*`, `*-mini`) against a
/// requested name; returns what the `*` matched.
pub fn wildcard_match<'a>(pattern: &str, name: &'a str) -> Option<&'a str> {
    let (prefix, suffix) = pattern.split_once('*')?;
    if name.len() < prefix.len() + suffix.len() {
        return None;
    }
    name.strip_prefix(prefix)?.strip_suffix(suffix)
}
