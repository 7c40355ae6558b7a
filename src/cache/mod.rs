//! The response cache's core (docs/caching.md): its configuration, the request keys, the
//! per-Envoy exact store in shared data, the semantic store's wire format, and the replay of a
//! stored answer in the client's API. No proxy-wasm call happens here; the request path's
//! part is [`crate::stages::cache`].

pub mod config;
pub mod key;
pub mod local;
pub mod replay;
pub mod semantic;

/// Cache metrics (label-free but for the lookup's result and the failing store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheMetric {
    /// A lookup's result: `hit`, `semantic`, `miss`, `bypass`.
    Lookups(&'static str),
    Stores,
    Evictions,
    /// Answers larger than an entry may be: not stored.
    TooLarge,
    /// Store or lookup failures by store: `local`, `semantic`, `embedding`.
    Errors(&'static str),
    /// Nano-USD the hits saved (what their answers cost when they were made).
    SavedNanoUsd,
    /// Microseconds from the lookup's start to its result (histogram).
    LookupDurationUs,
}

impl CacheMetric {
    /// The stat name after the `llmux` prefix.
    pub fn name(&self) -> String {
        match self {
            CacheMetric::Lookups(r) => format!("cache.lookups.llmux.cache_result.{r}"),
            CacheMetric::Stores => "cache.stores".into(),
            CacheMetric::Evictions => "cache.evictions".into(),
            CacheMetric::TooLarge => "cache.too_large".into(),
            CacheMetric::Errors(s) => format!("cache.errors.llmux.cache_store.{s}"),
            CacheMetric::SavedNanoUsd => "cache.saved.nanousd".into(),
            CacheMetric::LookupDurationUs => "cache.lookup_duration_us".into(),
        }
    }
}
