//! The `cache` section of the filter configuration: what is cached, for how long, in how many
//! bytes, per model group and per key, and where the semantic store is (docs/caching.md).
//!
//! Parsed once with the rest of the configuration; model groups and keys are named here (not in
//! their own sections) so that the cache's whole policy reads in one place.

use serde_json::{Map, Value};

use crate::config::fields::{check_keys, err, join, ConfigError};

/// Defaults (docs/caching.md).
pub const DEFAULT_TTL_S: u32 = 3600;
pub const DEFAULT_MAX_BYTES: u64 = 8 * 1024 * 1024;
pub const DEFAULT_MAX_ENTRY_BYTES: u32 = 64 * 1024;
pub const DEFAULT_THRESHOLD: f32 = 0.95;
pub const DEFAULT_TIMEOUT_MS: u32 = 250;
/// At most this many slots (shared-data keys) in the per-Envoy store.
pub const MAX_SLOTS: u64 = 65_536;
/// The semantic key embeds at most this many bytes of the last user turn.
pub const MAX_EMBED_BYTES: usize = 8 * 1024;

/// Whose answers a request may receive: the tenant that scopes every key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The caller's virtual key (the default): no key ever receives another key's answer.
    Key,
    /// The key's team (a key without a team is its own tenant).
    Team,
    /// Everyone under the configured `namespace` (a gateway without keys).
    Namespace,
}

/// The semantic store: a Chroma server Envoy reaches as a cluster (its HTTP API v2).
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticConfig {
    pub cluster: String,
    pub authority: String,
    /// `/api/v2/tenants/{tenant}/databases/{database}` (Chroma's own tenant and database, not
    /// LLMux's tenants: those are a metadata filter on every query).
    pub base_path: String,
    pub collection: String,
    /// Extra headers on every call (e.g. `x-chroma-token`).
    pub headers: Vec<(String, String)>,
    /// A configured model group that serves embeddings (called through LLMux's own providers).
    pub embedding_model: String,
    pub threshold: f32,
    /// Requests with a higher `temperature` (absent counts as 1.0, the APIs' default) are not
    /// looked up or stored semantically. `None`: no bound.
    pub max_temperature: Option<f64>,
    /// Requests with tools may be served semantically (off: a tool call is an action).
    pub tools: bool,
    /// Bound on the whole lookup (embedding + query): a slower store means a miss.
    pub timeout_ms: u32,
}

/// Per model group or per key overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub enabled: Option<bool>,
    pub ttl_s: Option<u32>,
    pub semantic: Option<bool>,
    pub threshold: Option<f32>,
    pub client_control: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Cache every model group unless it says otherwise (`models.<group>.enabled`).
    pub enabled: bool,
    pub namespace: String,
    pub scope: Scope,
    pub ttl_s: u32,
    /// The per-Envoy exact store is used (off: only the fleet-wide semantic store, which then
    /// also serves exact repeats, at similarity 1).
    pub local: bool,
    /// The per-Envoy store's byte budget: `slots × max_entry_bytes` never exceeds it.
    pub max_bytes: u64,
    pub max_entry_bytes: u32,
    /// Clients may send `cache-control: no-cache` / `no-store` (keys can turn it off).
    pub client_control: bool,
    pub semantic: Option<SemanticConfig>,
    /// Model group name → overrides.
    pub models: Vec<(String, Overrides)>,
    /// Key alias → overrides.
    pub keys: Vec<(String, Overrides)>,
}

/// What applies to one request: the group's and key's overrides over the defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effective {
    pub enabled: bool,
    pub ttl_s: u32,
    pub semantic: bool,
    pub threshold: f32,
    pub client_control: bool,
}

impl CacheConfig {
    /// Slots of the per-Envoy store (each holds one entry of at most `max_entry_bytes`).
    pub fn slots(&self) -> u64 {
        (self.max_bytes / u64::from(self.max_entry_bytes.max(1))).clamp(1, MAX_SLOTS)
    }

    /// The policy for a request to `group` by the key with `alias` (a key's word wins over the
    /// group's: an operator turns caching off for one key whatever the group says).
    pub fn effective(&self, group: &str, alias: Option<&str>) -> Effective {
        let mut e = Effective {
            enabled: self.enabled,
            ttl_s: self.ttl_s,
            semantic: self.semantic.is_some(),
            threshold: self
                .semantic
                .as_ref()
                .map_or(DEFAULT_THRESHOLD, |s| s.threshold),
            client_control: self.client_control,
        };
        let by_group = self.models.iter().find(|(n, _)| n == group).map(|(_, o)| o);
        let by_key = alias.and_then(|a| self.keys.iter().find(|(n, _)| n == a).map(|(_, o)| o));
        for o in [by_group, by_key].into_iter().flatten() {
            e.enabled = o.enabled.unwrap_or(e.enabled);
            e.ttl_s = o.ttl_s.unwrap_or(e.ttl_s);
            e.semantic = o.semantic.unwrap_or(e.semantic) && self.semantic.is_some();
            e.threshold = o.threshold.unwrap_or(e.threshold);
            e.client_control = o.client_control.unwrap_or(e.client_control);
        }
        e
    }
}

const KEYS: &[&str] = &[
    "enabled",
    "local",
    "namespace",
    "scope",
    "ttl_s",
    "max_bytes",
    "max_entry_bytes",
    "client_control",
    "semantic",
    "models",
    "keys",
];

const SEMANTIC_KEYS: &[&str] = &[
    "cluster",
    "authority",
    "tenant",
    "database",
    "collection",
    "headers",
    "embedding_model",
    "threshold",
    "max_temperature",
    "tools",
    "timeout_ms",
];

const OVERRIDE_KEYS: &[&str] = &[
    "enabled",
    "ttl_s",
    "semantic",
    "threshold",
    "client_control",
];

fn bool_at(o: &Map<String, Value>, path: &str, k: &str) -> Result<Option<bool>, ConfigError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(err(&join(path, k), "must be true or false")),
    }
}

fn u64_at(
    o: &Map<String, Value>,
    path: &str,
    k: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ConfigError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(err(
                &join(path, k),
                format!(
                    "must be an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
        },
    }
}

fn str_at<'a>(
    o: &'a Map<String, Value>,
    path: &str,
    k: &str,
) -> Result<Option<&'a str>, ConfigError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(_) => Err(err(&join(path, k), "must be a non-empty string")),
    }
}

fn threshold_at(o: &Map<String, Value>, path: &str) -> Result<Option<f32>, ConfigError> {
    match o.get("threshold") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(t) if (0.0..=1.0).contains(&t) && t > 0.0 => Ok(Some(t as f32)),
            _ => Err(err(
                &join(path, "threshold"),
                "must be a cosine similarity above 0 and at most 1",
            )),
        },
    }
}

/// A Chroma name: 3–512 of `[A-Za-z0-9._-]`, starting and ending alphanumeric (what Chroma
/// 1.x answers when refusing a collection name); also keeps the path segment plain.
fn chroma_name(s: &str) -> bool {
    let b = s.as_bytes();
    (3..=512).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn parse_overrides(v: &Value, path: &str) -> Result<Overrides, ConfigError> {
    let o = v
        .as_object()
        .ok_or_else(|| err(path, "must be an object"))?;
    check_keys(o, path, OVERRIDE_KEYS)?;
    Ok(Overrides {
        enabled: bool_at(o, path, "enabled")?,
        ttl_s: u64_at(o, path, "ttl_s", 1..=u64::from(u32::MAX))?.map(|n| n as u32),
        semantic: bool_at(o, path, "semantic")?,
        threshold: threshold_at(o, path)?,
        client_control: bool_at(o, path, "client_control")?,
    })
}

fn parse_named(v: Option<&Value>, path: &str) -> Result<Vec<(String, Overrides)>, ConfigError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(name, o)| Ok((name.clone(), parse_overrides(o, &join(path, name))?)))
            .collect(),
        Some(_) => Err(err(path, "must be an object of name → settings")),
    }
}

fn parse_semantic(v: &Value, path: &str) -> Result<SemanticConfig, ConfigError> {
    let o = v
        .as_object()
        .ok_or_else(|| err(path, "must be an object"))?;
    check_keys(o, path, SEMANTIC_KEYS)?;
    let cluster = str_at(o, path, "cluster")?
        .ok_or_else(|| {
            err(
                &join(path, "cluster"),
                "required: the vector store's Envoy cluster",
            )
        })?
        .to_string();
    let authority = str_at(o, path, "authority")?
        .unwrap_or(&cluster)
        .to_string();
    let name = |k: &str, default: &str| -> Result<String, ConfigError> {
        let s = str_at(o, path, k)?.unwrap_or(default);
        if chroma_name(s) {
            Ok(s.to_string())
        } else {
            Err(err(
                &join(path, k),
                "must be 3 to 512 of A-Z a-z 0-9 . _ -, starting and ending with a letter or digit",
            ))
        }
    };
    let tenant = name("tenant", "default_tenant")?;
    let database = name("database", "default_database")?;
    let collection = name("collection", "llmux-cache")?;
    let embedding_model = str_at(o, path, "embedding_model")?
        .ok_or_else(|| {
            err(
                &join(path, "embedding_model"),
                "required: a configured model group that serves embeddings",
            )
        })?
        .to_string();
    let headers = match o.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(s) if crate::config::fields::is_header_name(k) => {
                    Ok((k.to_ascii_lowercase(), s.to_string()))
                }
                _ => Err(err(
                    &join(&join(path, "headers"), k),
                    "must be a header name with a string value",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(err(&join(path, "headers"), "must be an object")),
    };
    let max_temperature = match o.get("max_temperature") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(t) if (0.0..=2.0).contains(&t) => Some(t),
            _ => {
                return Err(err(
                    &join(path, "max_temperature"),
                    "must be a number from 0 to 2",
                ))
            }
        },
    };
    Ok(SemanticConfig {
        cluster,
        authority,
        base_path: format!("/api/v2/tenants/{tenant}/databases/{database}"),
        collection,
        headers,
        embedding_model,
        threshold: threshold_at(o, path)?.unwrap_or(DEFAULT_THRESHOLD),
        max_temperature,
        tools: bool_at(o, path, "tools")?.unwrap_or(false),
        timeout_ms: u64_at(o, path, "timeout_ms", 1..=60_000)?
            .map_or(DEFAULT_TIMEOUT_MS, |n| n as u32),
    })
}

/// Parses the `cache` section (`path` is its name in errors).
pub fn parse(v: &Value, path: &str) -> Result<CacheConfig, ConfigError> {
    let o = v
        .as_object()
        .ok_or_else(|| err(path, "must be an object"))?;
    check_keys(o, path, KEYS)?;
    let scope = match str_at(o, path, "scope")? {
        None | Some("key") => Scope::Key,
        Some("team") => Scope::Team,
        Some("namespace") => Scope::Namespace,
        Some(_) => {
            return Err(err(
                &join(path, "scope"),
                "must be \"key\", \"team\" or \"namespace\"",
            ))
        }
    };
    let max_entry_bytes = u64_at(o, path, "max_entry_bytes", 1024..=16 * 1024 * 1024)?
        .map_or(DEFAULT_MAX_ENTRY_BYTES, |n| n as u32);
    let max_bytes =
        u64_at(o, path, "max_bytes", 1024..=u64::from(u32::MAX))?.unwrap_or(DEFAULT_MAX_BYTES);
    if max_bytes < u64::from(max_entry_bytes) {
        return Err(err(
            &join(path, "max_bytes"),
            "must be at least max_entry_bytes (the store holds whole entries)",
        ));
    }
    let semantic = match o.get("semantic") {
        None | Some(Value::Null) => None,
        Some(s) => Some(parse_semantic(s, &join(path, "semantic"))?),
    };
    if bool_at(o, path, "local")? == Some(false) && semantic.is_none() {
        return Err(err(
            &join(path, "local"),
            "false needs a `semantic` store (else nothing is cached)",
        ));
    }
    Ok(CacheConfig {
        enabled: bool_at(o, path, "enabled")?.unwrap_or(true),
        local: bool_at(o, path, "local")?.unwrap_or(true),
        namespace: str_at(o, path, "namespace")?
            .unwrap_or("default")
            .to_string(),
        scope,
        ttl_s: u64_at(o, path, "ttl_s", 1..=u64::from(u32::MAX))?
            .map_or(DEFAULT_TTL_S, |n| n as u32),
        max_bytes,
        max_entry_bytes,
        client_control: bool_at(o, path, "client_control")?.unwrap_or(true),
        semantic,
        models: parse_named(o.get("models"), &join(path, "models"))?,
        keys: parse_named(o.get("keys"), &join(path, "keys"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_and_overrides() {
        let c = parse(
            &json!({"models": {"gpt": {"ttl_s": 60, "semantic": false}},
                    "keys": {"k1": {"enabled": false}},
                    "semantic": {"cluster": "chroma", "embedding_model": "embed", "threshold": 0.9}}),
            "cache",
        )
        .unwrap();
        assert_eq!(c.scope, Scope::Key);
        assert_eq!(
            c.slots(),
            DEFAULT_MAX_BYTES / u64::from(DEFAULT_MAX_ENTRY_BYTES)
        );
        let s = c.semantic.as_ref().unwrap();
        assert_eq!(
            s.base_path,
            "/api/v2/tenants/default_tenant/databases/default_database"
        );
        let e = c.effective("other", None);
        assert!(e.enabled && e.semantic);
        assert_eq!((e.ttl_s, e.threshold), (DEFAULT_TTL_S, 0.9));
        let e = c.effective("gpt", None);
        assert_eq!((e.ttl_s, e.semantic), (60, false));
        assert!(!c.effective("gpt", Some("k1")).enabled);
        assert!(c.effective("gpt", Some("k2")).enabled);
    }

    #[test]
    fn semantic_needs_a_store_to_be_on() {
        let c = parse(&json!({"models": {"gpt": {"semantic": true}}}), "cache").unwrap();
        assert!(!c.effective("gpt", None).semantic);
    }

    #[test]
    fn bad_fields_are_named() {
        for (v, path) in [
            (json!({"ttl": 1}), "cache.ttl"),
            (json!({"scope": "user"}), "cache.scope"),
            (
                json!({"max_bytes": 2048, "max_entry_bytes": 4096}),
                "cache.max_bytes",
            ),
            (
                json!({"semantic": {"embedding_model": "e"}}),
                "cache.semantic.cluster",
            ),
            (
                json!({"semantic": {"cluster": "c"}}),
                "cache.semantic.embedding_model",
            ),
            (
                json!({"semantic": {"cluster": "c", "embedding_model": "e", "collection": "a/b"}}),
                "cache.semantic.collection",
            ),
            (
                json!({"semantic": {"cluster": "c", "embedding_model": "e", "threshold": 1.5}}),
                "cache.semantic.threshold",
            ),
            (
                json!({"models": {"g": {"ttl_s": 0}}}),
                "cache.models.g.ttl_s",
            ),
            (json!({"keys": []}), "cache.keys"),
        ] {
            let e = parse(&v, "cache").unwrap_err();
            assert_eq!(e.path, path, "{v}");
        }
    }
}
