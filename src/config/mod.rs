//! The filter configuration: parsed and validated once, in `on_configure`.
//!
//! Every error names the exact path of the bad field (`providers.anthropic.type: ...`) so that an
//! operator reading Envoy's log knows what to fix; a bad config is rejected whole.

//!
//! The parsing is split by section: [`fields`] (the error type and field readers, a leaf that
//! every module with a section of its own uses), `provider`, `model`, `router` and `export`;
//! `Price` and its parser live in `pricing`; `auth` and `limits` parse their own sections.

mod export;
pub mod fields;
mod model;
mod provider;
mod router;

use serde_json::{Map, Value};
use std::collections::HashMap;

use crate::providers::kind::ProviderKind;
use crate::providers::presets::AuthStyle;

// Compatibility paths: other modules name these as `crate::config::...`.
pub use crate::pricing::Price;
pub use export::{ExportConfig, ExportFormat};
use fields::{check_keys, is_header_name, opt_bool};
pub(crate) use fields::{err, opt_str, opt_u32};
pub use fields::{ConfigError, Env, ProcessEnv};

pub const DEFAULT_MAX_REQUEST_BYTES: u32 = 8 * 1024 * 1024;
pub const DEFAULT_MAX_RESPONSE_BYTES: u32 = 32 * 1024 * 1024;
pub const DEFAULT_TIMEOUT_MS: u32 = 600_000;
/// Anthropic requires `max_tokens`; OpenAI clients often omit it. Overridable in config.
pub const DEFAULT_ANTHROPIC_MAX_TOKENS: u32 = 4096;
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
pub const DEFAULT_CLUSTER_HEADER: &str = "x-llmux-cluster";
/// Azure OpenAI's latest GA `api-version` for the classic deployment paths
/// (docs/providers.md §3.1).
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Client headers every provider gets beyond the default allow-list
    /// ([`crate::client_api::headers`]).
    pub client_headers: Vec<crate::client_api::headers::Allowed>,
    pub providers: Vec<Provider>,
    pub models: Vec<Model>,
    /// Model name (and alias) → index in `models`.
    model_index: HashMap<String, usize>,
    /// Models whose name is a wildcard pattern (`anthropic/*`), in config order.
    wildcards: Vec<usize>,
    /// Failover, retries, cooldowns, the status endpoint.
    pub router: crate::routing::config::RouterConfig,
    /// Add `x-llmux-cost-usd` to non-streamed answers with a known price (holds OpenAI-protocol
    /// answers until their usage is read; `false` lets them flow through as they arrive).
    pub cost_header: bool,
    /// `x-llmux-provider`, `x-llmux-deployment` and `x-llmux-attempts` on answers.
    pub answer_headers: bool,
    /// Provider of `/v1/files` and `/v1/batches` requests that name none (`llmux-provider`).
    pub files_provider: Option<String>,
    /// Larger request bodies are answered 413 before they are parsed.
    pub max_request_bytes: u32,
    /// Larger buffered provider responses are answered 502.
    pub max_response_bytes: u32,
    /// Request header the route's `cluster_header` reads.
    pub cluster_header: String,
    /// What to do with a path LLMux does not serve: answer 404, or let Envoy route it untouched.
    pub unknown_paths: UnknownPaths,
    /// Ask OpenAI-protocol providers for stream usage (and hide it from clients that did not ask),
    /// so every streamed request's tokens are known.
    pub stream_usage: bool,
    /// Virtual API keys; `None` lets every caller in.
    pub auth: Option<crate::auth::Auth>,
    /// Set the per-request `llmux_*` filter-state fields (for access logs). Off saves ~15 host
    /// calls per request when no access log prints them.
    pub filter_state: bool,
    /// Put (redacted) prompt and response bodies into exported usage records.
    pub log_bodies: bool,
    /// Export of one usage record per request to an HTTP collector.
    pub export: Option<ExportConfig>,
    /// `rate_limit` and `identity` (limits per key and team live in `auth`).
    pub limits: crate::limits::LimitsConfig,
    /// Per model group (index in `models`): its entry in `limits.models`, if any.
    model_limits: Vec<Option<usize>>,
    /// A budgeted request whose cost cannot be known: refused (default) or served uncounted.
    /// A key's own `unpriced` overrides it.
    pub unpriced: crate::pricing::Unpriced,
    /// The response cache (`cache`; docs/caching.md). `None`: off.
    pub cache: Option<crate::cache::config::CacheConfig>,
    /// The guardrails (`guardrails`; docs/guardrails.md). `None`: off.
    pub guardrails: Option<std::sync::Arc<crate::guard::select::GuardSet>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownPaths {
    Reject,
    Passthrough,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub name: String,
    /// The API protocol spoken.
    pub kind: ProviderKind,
    /// The configured `type`: a protocol (`openai`, `anthropic`), `azure` or a preset (`groq`).
    pub type_name: String,
    /// The Envoy cluster that reaches this provider.
    pub cluster: String,
    /// `:authority` to send (the real API host behind a TLS cluster); `None` keeps the client's.
    pub host: Option<String>,
    /// Path prefix before the API's own path, e.g. `/v1` for `https://api.openai.com/v1`.
    pub base_path: String,
    /// Resolved at configure time from `api_key` or the `api_key_env` environment variable.
    pub api_key: Option<String>,
    /// Extra headers sent on every request (e.g. `anthropic-beta`, `OpenAI-Organization`).
    pub headers: Vec<(String, String)>,
    /// Client headers this provider gets beyond the gateway-wide allow-list (`client_headers`).
    pub client_headers: Vec<crate::client_api::headers::Allowed>,
    /// Anthropic only: the `anthropic-beta` values a client may send (`None`: the header goes by
    /// `client_headers` like any other, whole or not at all).
    pub anthropic_beta: Option<Vec<crate::client_api::headers::Allowed>>,
    pub timeout_ms: u32,
    /// Anthropic only: `anthropic-version` header.
    pub anthropic_version: String,
    /// Anthropic only: `max_tokens` used when the client sends none.
    pub default_max_tokens: u32,
    /// OpenAI protocol: how the key is sent.
    pub auth: AuthStyle,
    /// OpenAI protocol: API path; `{endpoint}` stands for `chat/completions` or `embeddings`,
    /// `{model}` for the (percent-encoded) model name.
    pub path_template: String,
    /// Request fields this provider refuses (from its preset).
    pub unsupported: &'static [&'static str],
    /// Request fields this provider names differently (from its preset).
    pub renames: &'static [(&'static str, &'static str)],
    /// Drop unsupported fields instead of answering 400.
    pub drop_params: bool,
    /// Bedrock only: region and SigV4 credentials.
    pub aws: Option<AwsConfig>,
    /// Vertex AI only: project, location, publisher, auth.
    pub vertex: Option<crate::providers::vertex::config::VertexConfig>,
}

/// A Bedrock provider's AWS settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsConfig {
    pub region: String,
    /// `None` when the provider uses a Bedrock API key (`api_key`, sent as Bearer) instead.
    pub credentials: Option<crate::aws::sigv4::Credentials>,
}

impl AwsConfig {
    /// `bedrock-runtime.{region}.amazonaws.com`.
    pub fn default_host(&self) -> String {
        format!("bedrock-runtime.{}.amazonaws.com", self.region)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// The public name clients send as `model` (a pattern with one `*` for wildcard groups).
    pub name: String,
    /// Other names clients may send for this group.
    pub aliases: Vec<String>,
    pub owned_by: String,
    pub deployments: Vec<Deployment>,
    /// Strategy, retries and fallbacks of this group.
    pub policy: crate::routing::config::GroupPolicy,
    /// LLMux keeps this group's shared health and load records: it has a choice to make
    /// (several deployments or keys, retries, fallbacks, or it is another group's fallback).
    pub tracked: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// Index into `Config::providers`.
    pub provider: usize,
    /// The model name the provider knows.
    pub model: String,
    pub weight: u32,
    /// Name in metrics and records; defaults to `<provider>/<model>`.
    pub name: String,
    pub price: Option<Price>,
    /// What its requests cost: `price`, else the bundled list price of `model` (src/pricing.rs).
    pub cost_price: Option<Price>,
    /// Tags for tag-based routing (`default` serves requests whose tags match nothing).
    pub tags: Vec<String>,
    /// Requests / tokens per minute this deployment may take (routing hints, not enforced).
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    /// Largest prompt, in tokens, the model accepts (context-window routing).
    pub max_input_tokens: Option<u32>,
    /// `priority` strategy: lower goes first.
    pub priority: u32,
    /// Which of the deployment's `api_keys` this entry uses (each key is its own entry).
    pub key_slot: u8,
    /// Index (in the group) of the entry for the deployment's first key.
    pub base: usize,
    /// Shared-data key of this entry's health and load record.
    pub state_key: String,
}

impl Deployment {
    /// The model name a request goes out with: `model`, with a wildcard group's `*` replaced by
    /// what the requested name's `*` matched (`matched`, from [`Config::resolve_model`]).
    pub fn upstream_model<'a>(&'a self, matched: Option<&str>) -> std::borrow::Cow<'a, str> {
        match matched {
            Some(m) if self.model.contains('*') => self.model.replace('*', m).into(),
            _ => self.model.as_str().into(),
        }
    }

    /// What a request that went out as `upstream_model` costs per token: the price resolved at
    /// config time, else (a wildcard deployment without its own `price`) the bundled list price
    /// of the upstream model. `None`: its cost cannot be known.
    pub fn request_price(&self, upstream_model: &str) -> Option<Price> {
        self.cost_price
            .or_else(|| crate::pricing::price_for(upstream_model, self.price.as_ref()))
    }
}

impl Config {
    pub fn parse(bytes: &[u8], env: &dyn Env) -> Result<Config, ConfigError> {
        let root: Value =
            serde_json::from_slice(bytes).map_err(|e| err("", format!("not valid JSON: {e}")))?;
        let root = root
            .as_object()
            .ok_or_else(|| err("", "the configuration must be a JSON object"))?;
        check_keys(root, "", TOP_LEVEL_KEYS)?;

        let mut providers = parse_providers(root, env)?;
        let Models {
            models,
            model_index,
            wildcards,
        } = parse_models(root, &mut providers, env)?;
        let router = match root.get("router") {
            None | Some(Value::Null) => crate::routing::config::RouterConfig::default(),
            Some(v) => router::parse_router(v)?,
        };

        let cluster_header = cluster_header(root)?;
        let unknown_paths = unknown_paths(root)?;
        let max_request_bytes = positive_u32(root, "max_request_bytes", DEFAULT_MAX_REQUEST_BYTES)?;
        let max_response_bytes =
            positive_u32(root, "max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES)?;
        let stream_usage = opt_bool(root, "", "stream_usage")?.unwrap_or(true);
        let auth = match root.get("auth") {
            None | Some(Value::Null) => None,
            Some(v) => Some(crate::auth::Auth::parse(v, "auth")?),
        };
        let log_bodies = opt_bool(root, "", "log_bodies")?.unwrap_or(false);
        // Off unless an access log prints the fields: 15 properties cost more host work than
        // everything else LLMux does for a pass-through request (bench/README.md).
        let filter_state = opt_bool(root, "", "filter_state")?.unwrap_or(false);
        let export = match root.get("export") {
            None | Some(Value::Null) => None,
            Some(v) => Some(export::parse_export(v)?),
        };

        let limits =
            crate::limits::LimitsConfig::parse(root.get("rate_limit"), root.get("identity"))?;
        let model_limits = resolve_model_limits(&limits.models, &models, &model_index)?;
        let unpriced = match root.get("unpriced") {
            None | Some(Value::Null) => crate::pricing::Unpriced::default(),
            Some(v) => crate::pricing::parse_unpriced(v, "unpriced")?,
        };

        let cost_header = opt_bool(root, "", "cost_header")?.unwrap_or(true);
        let answer_headers = opt_bool(root, "", "answer_headers")?.unwrap_or(true);
        let files_provider = files_provider(root, &providers)?;
        let client_headers = provider::header_allow_list(root, "")?;
        let guardrails = match root.get("guardrails") {
            None | Some(Value::Null) => None,
            Some(v) => Some(std::sync::Arc::new(
                crate::guard::select::GuardSet::parse(v).map_err(|e| {
                    let (path, message) = e.split_once(": ").unwrap_or(("guardrails", e.as_str()));
                    err(path, message)
                })?,
            )),
        };
        let cache = match root.get("cache") {
            None | Some(Value::Null) => None,
            Some(v) => Some(crate::cache::config::parse(v, "cache")?),
        };
        Ok(Config {
            client_headers,
            providers,
            models,
            model_index,
            wildcards,
            router,
            cost_header,
            answer_headers,
            files_provider,
            max_request_bytes,
            max_response_bytes,
            cluster_header,
            unknown_paths,
            stream_usage,
            auth,
            filter_state,
            log_bodies,
            export,
            limits,
            model_limits,
            unpriced,
            cache,
            guardrails,
        })
        .and_then(Config::check_cache)
    }

    /// The `cache` section names configured model groups and keys, and an embedding model.
    fn check_cache(self) -> Result<Config, ConfigError> {
        let Some(c) = &self.cache else {
            return Ok(self);
        };
        for (name, _) in &c.models {
            if self.model_position(name).is_none() {
                return Err(err(
                    &format!("cache.models.{name}"),
                    "no model group of this name",
                ));
            }
        }
        let aliases: Vec<&str> = self
            .auth
            .iter()
            .flat_map(|a| a.keys.iter().map(|k| k.alias.as_str()))
            .collect();
        for (alias, _) in &c.keys {
            if !aliases.contains(&alias.as_str()) {
                return Err(err(
                    &format!("cache.keys.{alias}"),
                    "no key with this alias in auth.keys",
                ));
            }
        }
        if let Some(s) = &c.semantic {
            if self.resolve_model(&s.embedding_model).is_none() {
                return Err(err(
                    "cache.semantic.embedding_model",
                    format!("`{}` is not a configured model group", s.embedding_model),
                ));
            }
        }
        Ok(self)
    }

    /// Admission of a request for `requested` (the client's model name) by key `key`: a 403
    /// `unpriced_model` when a budget applies (`budgeted`), the policy (the key's `unpriced`,
    /// else the top level's) is `refuse`, and some deployment that may serve it — of its group
    /// (a wildcard one's upstream model filled in) or of its fallback groups — has no price.
    /// `None`: admit.
    pub fn unpriced_refusal(
        &self,
        key: Option<usize>,
        requested: &str,
        budgeted: bool,
    ) -> Option<crate::error::GatewayError> {
        if !budgeted || self.unpriced_policy(key) == crate::pricing::Unpriced::Allow {
            return None;
        }
        let (group, matched) = self.resolve_model(requested)?;
        let m = self.models.get(group)?;
        let fallbacks = m
            .policy
            .fallbacks
            .iter()
            .chain(&m.policy.context_window_fallbacks)
            .chain(&m.policy.content_policy_fallbacks)
            .filter_map(|f| self.model_position(f))
            .filter_map(|i| self.models.get(i))
            .flat_map(|f| f.deployments.iter().map(|d| (d, None)));
        let (d, upstream) = m
            .deployments
            .iter()
            .map(|d| (d, matched))
            .chain(fallbacks)
            .map(|(d, matched)| (d, d.upstream_model(matched)))
            .find(|(d, upstream)| d.request_price(upstream).is_none())?;
        Some(
            crate::error::GatewayError::new(
                403,
                "permission_error",
                format!(
                    "model `{requested}` may be served by deployment `{}` (upstream model `{upstream}`), which has no price, so this key's budget cannot be charged; the gateway's operator can set `price` on the deployment, or `unpriced: allow`",
                    d.name
                ),
            )
            .with_param("model")
            .with_code("unpriced_model"),
        )
    }

    /// `unpriced` for requests of key `key`: the key's own, else the top level's.
    pub fn unpriced_policy(&self, key: Option<usize>) -> crate::pricing::Unpriced {
        key.and_then(|k| self.auth.as_ref()?.keys.get(k)?.unpriced)
            .unwrap_or(self.unpriced)
    }

    /// The `rate_limit.models` limit of model group `group` (index in `models`, as
    /// [`Config::resolve_model`] finds it), with the id it is counted under: the group's name,
    /// whichever name (alias, or a name a wildcard group matched) the client sent.
    pub fn model_limit(&self, group: usize) -> Option<(&str, &crate::limits::Limits)> {
        let i = (*self.model_limits.get(group)?)?;
        let (_, limits) = self.limits.models.get(i)?;
        Some((self.models.get(group)?.name.as_str(), limits))
    }

    /// Index in `models` of the model named `name` (or aliased so); not wildcard groups.
    pub fn model_position(&self, name: &str) -> Option<usize> {
        self.model_index.get(name).copied()
    }

    /// The group serving a requested model name: an exact name or alias, else the first
    /// wildcard group (config order) that matches; with what the wildcard's `*` matched.
    pub fn resolve_model<'n>(&self, name: &'n str) -> Option<(usize, Option<&'n str>)> {
        if let Some(&i) = self.model_index.get(name) {
            return Some((i, None));
        }
        self.wildcards.iter().find_map(|&i| {
            crate::routing::config::wildcard_match(&self.models[i].name, name).map(|m| (i, Some(m)))
        })
    }

    pub fn deployment(&self, model: u16, deployment: u16) -> Option<&Deployment> {
        self.models
            .get(usize::from(model))?
            .deployments
            .get(usize::from(deployment))
    }

    pub fn model(&self, name: &str) -> Option<&Model> {
        self.model_index.get(name).map(|&i| &self.models[i])
    }

    pub fn provider(&self, d: &Deployment) -> &Provider {
        &self.providers[d.provider]
    }

    /// Public model names, in config order (for error messages and `/v1/models`).
    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.models.iter().map(|m| m.name.as_str())
    }
}

/// The fields of the configuration's top level.
const TOP_LEVEL_KEYS: &[&str] = &[
    "providers",
    "cache",
    "guardrails",
    "models",
    "max_request_bytes",
    "max_response_bytes",
    "timeout_ms",
    "cluster_header",
    "unknown_paths",
    "client_headers",
    "stream_usage",
    "anthropic_default_max_tokens",
    "auth",
    "filter_state",
    "log_bodies",
    "export",
    "router",
    "cost_header",
    "answer_headers",
    "files_provider",
    "rate_limit",
    "identity",
    "unpriced",
];

/// `providers` (with the top-level `timeout_ms` and `anthropic_default_max_tokens` defaults).
fn parse_providers(root: &Map<String, Value>, env: &dyn Env) -> Result<Vec<Provider>, ConfigError> {
    let default_timeout = opt_u32(root, "", "timeout_ms")?.unwrap_or(DEFAULT_TIMEOUT_MS);
    let default_max_tokens =
        opt_u32(root, "", "anthropic_default_max_tokens")?.unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS);
    if default_max_tokens == 0 {
        return Err(err(
            "anthropic_default_max_tokens",
            "must be greater than 0",
        ));
    }

    let providers_v = root
        .get("providers")
        .ok_or_else(|| err("providers", "required"))?;
    let providers_map = providers_v
        .as_object()
        .ok_or_else(|| err("providers", "must be an object of provider name → provider"))?;
    if providers_map.is_empty() {
        return Err(err("providers", "at least one provider is required"));
    }
    let mut providers = Vec::with_capacity(providers_map.len());
    // (Deployments with several `api_keys` add a copy of their provider per extra key.)
    for (name, v) in providers_map {
        let path = format!("providers.{name}");
        providers.push(provider::parse_provider(
            name,
            v,
            &path,
            env,
            default_timeout,
            default_max_tokens,
        )?);
    }
    Ok(providers)
}

/// The model groups and how requested names find them.
struct Models {
    models: Vec<Model>,
    model_index: HashMap<String, usize>,
    wildcards: Vec<usize>,
}

/// `models`: names and aliases unique, fallbacks naming existing groups (which are then
/// tracked: their health matters).
fn parse_models(
    root: &Map<String, Value>,
    providers: &mut Vec<Provider>,
    env: &dyn Env,
) -> Result<Models, ConfigError> {
    let models_v = root
        .get("models")
        .ok_or_else(|| err("models", "required"))?;
    let models_arr = models_v
        .as_array()
        .ok_or_else(|| err("models", "must be an array of models"))?;
    if models_arr.is_empty() {
        return Err(err("models", "at least one model is required"));
    }
    // A plan entry names a group by a u16 index.
    if models_arr.len() > usize::from(u16::MAX) {
        return Err(err("models", "at most 65535 models"));
    }
    let mut models = Vec::with_capacity(models_arr.len());
    let mut model_index = HashMap::new();
    let mut wildcards = Vec::new();
    for (i, v) in models_arr.iter().enumerate() {
        let path = format!("models[{i}]");
        let m = model::parse_model(v, &path, providers, env)?;
        if m.name.contains('*') {
            wildcards.push(i);
        } else if model_index.insert(m.name.clone(), i).is_some() {
            return Err(err(
                &format!("{path}.name"),
                format!("model `{}` is defined twice", m.name),
            ));
        }
        for (j, a) in m.aliases.iter().enumerate() {
            if model_index.insert(a.clone(), i).is_some() {
                return Err(err(
                    &format!("{path}.aliases[{j}]"),
                    format!("`{a}` already names another model or alias"),
                ));
            }
        }
        models.push(m);
    }
    check_fallbacks(&models, &model_index)?;
    track_fallback_targets(&mut models, &model_index);
    Ok(Models {
        models,
        model_index,
        wildcards,
    })
}

/// Fallback groups must exist (and not be wildcards: they need a concrete name).
fn check_fallbacks(
    models: &[Model],
    model_index: &HashMap<String, usize>,
) -> Result<(), ConfigError> {
    for (i, m) in models.iter().enumerate() {
        for (field, list) in [
            ("fallbacks", &m.policy.fallbacks),
            (
                "context_window_fallbacks",
                &m.policy.context_window_fallbacks,
            ),
            (
                "content_policy_fallbacks",
                &m.policy.content_policy_fallbacks,
            ),
        ] {
            for (j, f) in list.iter().enumerate() {
                if !model_index.contains_key(f) {
                    return Err(err(
                        &format!("models[{i}].{field}[{j}]"),
                        format!("no model named `{f}`"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Fallback targets are chosen among too: their health matters.
fn track_fallback_targets(models: &mut [Model], model_index: &HashMap<String, usize>) {
    let targets: Vec<usize> = models
        .iter()
        .flat_map(|m| {
            m.policy
                .fallbacks
                .iter()
                .chain(&m.policy.context_window_fallbacks)
                .chain(&m.policy.content_policy_fallbacks)
        })
        .filter_map(|f| model_index.get(f).copied())
        .collect();
    for t in targets {
        models[t].tracked = true;
    }
}

/// Each `rate_limit.models` entry must name a model group (its name, an alias, or a wildcard
/// group's pattern as written), each group at most once: per group, the index of its entry.
fn resolve_model_limits(
    entries: &[(String, crate::limits::Limits)],
    models: &[Model],
    model_index: &HashMap<String, usize>,
) -> Result<Vec<Option<usize>>, ConfigError> {
    let mut per_group: Vec<Option<usize>> = vec![None; models.len()];
    for (i, (name, _)) in entries.iter().enumerate() {
        let path = format!("rate_limit.models.{name}");
        let group = model_index
            .get(name)
            .copied()
            .or_else(|| models.iter().position(|m| &m.name == name))
            .ok_or_else(|| match models.iter().find(|m| {
                m.name.contains('*')
                    && crate::routing::config::wildcard_match(&m.name, name).is_some()
            }) {
                Some(w) => err(
                    &path,
                    format!(
                        "`{name}` is a name the wildcard group `{}` serves, not a model group; a model limit binds a whole group: name `{}`",
                        w.name, w.name
                    ),
                ),
                None => err(
                    &path,
                    format!("no model group or alias named `{name}` in `models`"),
                ),
            })?;
        if let Some(j) = per_group[group] {
            return Err(err(
                &path,
                format!(
                    "`{name}` and `{}` name the same model group `{}`: give it one limit",
                    entries[j].0, models[group].name
                ),
            ));
        }
        per_group[group] = Some(i);
    }
    Ok(per_group)
}

/// `cluster_header`, lowercased.
fn cluster_header(root: &Map<String, Value>) -> Result<String, ConfigError> {
    let cluster_header = opt_str(root, "", "cluster_header")?
        .unwrap_or(DEFAULT_CLUSTER_HEADER)
        .to_ascii_lowercase();
    if !is_header_name(&cluster_header) {
        return Err(err("cluster_header", "not a valid header name"));
    }
    Ok(cluster_header)
}

fn unknown_paths(root: &Map<String, Value>) -> Result<UnknownPaths, ConfigError> {
    Ok(match opt_str(root, "", "unknown_paths")? {
        None | Some("reject") => UnknownPaths::Reject,
        Some("passthrough") => UnknownPaths::Passthrough,
        Some(other) => {
            return Err(err(
                "unknown_paths",
                format!("`{other}` is not one of `reject`, `passthrough`"),
            ))
        }
    })
}

/// A top-level size that must not be 0.
fn positive_u32(root: &Map<String, Value>, key: &str, default: u32) -> Result<u32, ConfigError> {
    let n = opt_u32(root, "", key)?.unwrap_or(default);
    if n == 0 {
        return Err(err(key, "must be greater than 0"));
    }
    Ok(n)
}

/// `files_provider`: must name a provider.
fn files_provider(
    root: &Map<String, Value>,
    providers: &[Provider],
) -> Result<Option<String>, ConfigError> {
    let files_provider = opt_str(root, "", "files_provider")?.map(str::to_string);
    if let Some(f) = &files_provider {
        if !providers.iter().any(|p| &p.name == f) {
            return Err(err("files_provider", format!("no provider named `{f}`")));
        }
    }
    Ok(files_provider)
}

#[cfg(test)]
mod extremes;
#[cfg(test)]
mod tests;
