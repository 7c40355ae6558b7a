//! The filter configuration: parsed and validated once, in `on_configure`.
//!
//! Every error names the exact path of the bad field (`providers.anthropic.type: ...`) so that an
//! operator reading Envoy's log knows what to fix; a bad config is rejected whole.

use serde_json::{Map, Value};
use std::collections::HashMap;

use crate::providers::presets::{self, AuthStyle};
use crate::providers::ProviderKind;

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
    pub providers: Vec<Provider>,
    pub models: Vec<Model>,
    /// Model name (and alias) → index in `models`.
    model_index: HashMap<String, usize>,
    /// Models whose name is a wildcard pattern (`anthropic/*`), in config order.
    wildcards: Vec<usize>,
    /// Failover, retries, cooldowns, the status endpoint.
    pub router: crate::routing::RouterConfig,
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
}

/// Prices of a deployment, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Defaults to `input_per_mtok`.
    pub cached_input_per_mtok: f64,
    /// Defaults to `input_per_mtok`.
    pub cache_creation_per_mtok: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// `{"records": [record, ...]}`.
    Webhook,
    /// OTLP/HTTP logs, JSON encoding.
    Otlp,
    /// Langfuse's ingestion API (`trace-create` + `generation-create` per record).
    Langfuse,
}

impl ExportFormat {
    pub fn default_path(self) -> &'static str {
        match self {
            Self::Webhook => "/",
            Self::Otlp => "/v1/logs",
            Self::Langfuse => "/api/public/ingestion",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    pub format: ExportFormat,
    /// The Envoy cluster of the collector.
    pub cluster: String,
    pub path: String,
    /// `:authority` of the export request; defaults to the cluster name.
    pub authority: String,
    pub headers: Vec<(String, String)>,
    /// Send as soon as this many records are queued.
    pub batch_size: u32,
    /// Send what is queued at least this often.
    pub flush_interval_ms: u32,
    pub timeout_ms: u32,
    /// Records beyond this many queued (collector down or slow) are dropped and counted.
    pub max_queue: u32,
    /// `service.name` (OTLP resource) and trace name (Langfuse).
    pub service_name: String,
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
    pub vertex: Option<crate::providers::vertex::VertexConfig>,
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
    pub policy: crate::routing::GroupPolicy,
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

/// A configuration error: the path of the bad field and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "invalid LLMux configuration: {}", self.message)
        } else {
            write!(
                f,
                "invalid LLMux configuration at `{}`: {}",
                self.path, self.message
            )
        }
    }
}

pub(crate) fn err(path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// Reads environment variables; the Wasm host passes `vm_config.environment_variables`
/// (docs/design.md fact 12).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Config {
    pub fn parse(bytes: &[u8], env: &dyn Env) -> Result<Config, ConfigError> {
        let root: Value =
            serde_json::from_slice(bytes).map_err(|e| err("", format!("not valid JSON: {e}")))?;
        let root = root
            .as_object()
            .ok_or_else(|| err("", "the configuration must be a JSON object"))?;
        check_keys(
            root,
            "",
            &[
                "providers",
                "models",
                "max_request_bytes",
                "max_response_bytes",
                "timeout_ms",
                "cluster_header",
                "unknown_paths",
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
            ],
        )?;

        let default_timeout = opt_u32(root, "", "timeout_ms")?.unwrap_or(DEFAULT_TIMEOUT_MS);
        let default_max_tokens = opt_u32(root, "", "anthropic_default_max_tokens")?
            .unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS);

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
            providers.push(parse_provider(
                name,
                v,
                &path,
                env,
                default_timeout,
                default_max_tokens,
            )?);
        }

        let models_v = root
            .get("models")
            .ok_or_else(|| err("models", "required"))?;
        let models_arr = models_v
            .as_array()
            .ok_or_else(|| err("models", "must be an array of models"))?;
        if models_arr.is_empty() {
            return Err(err("models", "at least one model is required"));
        }
        let mut models = Vec::with_capacity(models_arr.len());
        let mut model_index = HashMap::new();
        let mut wildcards = Vec::new();
        for (i, v) in models_arr.iter().enumerate() {
            let path = format!("models[{i}]");
            let m = parse_model(v, &path, &mut providers, env)?;
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
        // Fallback groups must exist (and not be wildcards: they need a concrete name).
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
        // Fallback targets are chosen among too: their health matters.
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
        let router = match root.get("router") {
            None | Some(Value::Null) => crate::routing::RouterConfig::default(),
            Some(v) => parse_router(v)?,
        };

        let cluster_header = opt_str(root, "", "cluster_header")?
            .unwrap_or(DEFAULT_CLUSTER_HEADER)
            .to_ascii_lowercase();
        if !is_header_name(&cluster_header) {
            return Err(err("cluster_header", "not a valid header name"));
        }
        let unknown_paths = match opt_str(root, "", "unknown_paths")? {
            None | Some("reject") => UnknownPaths::Reject,
            Some("passthrough") => UnknownPaths::Passthrough,
            Some(other) => {
                return Err(err(
                    "unknown_paths",
                    format!("`{other}` is not one of `reject`, `passthrough`"),
                ))
            }
        };
        let max_request_bytes =
            opt_u32(root, "", "max_request_bytes")?.unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
        if max_request_bytes == 0 {
            return Err(err("max_request_bytes", "must be greater than 0"));
        }
        let max_response_bytes =
            opt_u32(root, "", "max_response_bytes")?.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        if max_response_bytes == 0 {
            return Err(err("max_response_bytes", "must be greater than 0"));
        }
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
            Some(v) => Some(parse_export(v)?),
        };

        let limits =
            crate::limits::LimitsConfig::parse(root.get("rate_limit"), root.get("identity"))?;

        let cost_header = opt_bool(root, "", "cost_header")?.unwrap_or(true);
        let answer_headers = opt_bool(root, "", "answer_headers")?.unwrap_or(true);
        let files_provider = opt_str(root, "", "files_provider")?.map(str::to_string);
        if let Some(f) = &files_provider {
            if !providers.iter().any(|p| &p.name == f) {
                return Err(err("files_provider", format!("no provider named `{f}`")));
            }
        }
        Ok(Config {
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
        })
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
            crate::routing::wildcard_match(&self.models[i].name, name).map(|m| (i, Some(m)))
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

fn parse_provider(
    name: &str,
    v: &Value,
    path: &str,
    env: &dyn Env,
    default_timeout: u32,
    default_max_tokens: u32,
) -> Result<Provider, ConfigError> {
    let o = v
        .as_object()
        .ok_or_else(|| err(path, "must be an object"))?;
    check_keys(
        o,
        path,
        &[
            "type",
            "cluster",
            "host",
            "base_path",
            "api_key",
            "api_key_env",
            "headers",
            "timeout_ms",
            "anthropic_version",
            "default_max_tokens",
            "api_version",
            "drop_params",
            "region",
            "aws_access_key_id",
            "aws_access_key_id_env",
            "aws_secret_access_key",
            "aws_secret_access_key_env",
            "aws_session_token",
            "aws_session_token_env",
        ]
        .iter()
        .chain(crate::providers::vertex::CONFIG_KEYS)
        .copied()
        .collect::<Vec<_>>(),
    )?;
    let type_path = format!("{path}.type");
    let type_name = opt_str(o, path, "type")?.ok_or_else(|| err(&type_path, "required"))?;
    let preset = presets::preset(type_name);
    let is_azure = type_name == "azure";
    let kind = match ProviderKind::from_name(type_name) {
        Some(k) => k,
        None if preset.is_some() || is_azure => ProviderKind::OpenAi,
        None => {
            let mut known: Vec<&str> = ProviderKind::NAMES.to_vec();
            known.push("azure");
            known.extend(presets::PRESETS.iter().map(|p| p.name));
            return Err(err(
                &type_path,
                format!(
                    "unknown provider type `{type_name}`; known: {}",
                    known.join(", ")
                ),
            ));
        }
    };
    let vertex =
        crate::providers::vertex::parse_config(o, path, kind == ProviderKind::Vertex, env)?;
    let cluster = opt_str(o, path, "cluster")?
        .ok_or_else(|| {
            err(
                &format!("{path}.cluster"),
                "required (the Envoy cluster name)",
            )
        })?
        .to_string();
    if cluster.is_empty() {
        return Err(err(&format!("{path}.cluster"), "must not be empty"));
    }
    let aws = parse_aws(o, path, env, kind)?;
    let host = opt_str(o, path, "host")?
        .map(str::to_string)
        .or_else(|| preset.and_then(|p| p.host).map(str::to_string))
        .or_else(|| aws.as_ref().map(|a| a.default_host()))
        .or_else(|| vertex.as_ref().map(|v| v.default_host()));
    let base_path = match opt_str(o, path, "base_path")? {
        Some(p) => {
            if !(p.is_empty() || p.starts_with('/')) {
                return Err(err(&format!("{path}.base_path"), "must start with `/`"));
            }
            p.trim_end_matches('/').to_string()
        }
        None if is_azure => String::new(),
        None => match preset {
            Some(p) => p.base_path.to_string(),
            None => kind.default_base_path().to_string(),
        },
    };
    let api_version = opt_str(o, path, "api_version")?;
    if api_version.is_some() && !is_azure {
        return Err(err(
            &format!("{path}.api_version"),
            "only Azure providers (`type: azure`) take an `api_version`",
        ));
    }
    let path_template = if is_azure {
        match api_version.unwrap_or(DEFAULT_AZURE_API_VERSION) {
            // The v1 API: deployment name in the body's `model`, no dated version.
            "v1" => format!("{base_path}/openai/v1/{{endpoint}}"),
            v if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
                return Err(err(
                    &format!("{path}.api_version"),
                    "must look like `2024-10-21` (or `v1`)",
                ))
            }
            v => {
                format!("{base_path}/openai/deployments/{{model}}/{{endpoint}}?api-version={v}")
            }
        }
    } else {
        format!("{base_path}/{{endpoint}}")
    };
    let auth = if is_azure {
        AuthStyle::Header("api-key")
    } else {
        preset.map(|p| p.auth).unwrap_or(AuthStyle::Bearer)
    };
    let drop_params = opt_bool(o, path, "drop_params")?.unwrap_or(false);
    let inline_key = opt_str(o, path, "api_key")?;
    let env_key = opt_str(o, path, "api_key_env")?;
    let api_key = match (inline_key, env_key) {
        (Some(_), Some(_)) => {
            return Err(err(
                &format!("{path}.api_key_env"),
                "set either `api_key` or `api_key_env`, not both",
            ))
        }
        (Some(k), None) => Some(k.to_string()),
        (None, Some(var)) => match env.var(var) {
            Some(k) if !k.is_empty() => Some(k),
            _ => {
                return Err(err(
                    &format!("{path}.api_key_env"),
                    format!(
                        "environment variable `{var}` is not set in the VM (list it in vm_config.environment_variables)"
                    ),
                ))
            }
        },
        (None, None) => None,
    };
    let mut headers = Vec::new();
    if let Some(h) = o.get("headers") {
        let hp = format!("{path}.headers");
        let h = h
            .as_object()
            .ok_or_else(|| err(&hp, "must be an object of header name → value"))?;
        for (k, v) in h {
            let kp = format!("{hp}.{k}");
            let lk = k.to_ascii_lowercase();
            if !is_header_name(&lk) {
                return Err(err(&kp, "not a valid header name"));
            }
            let v = v.as_str().ok_or_else(|| err(&kp, "must be a string"))?;
            headers.push((lk, v.to_string()));
        }
    }
    let timeout_ms = opt_u32(o, path, "timeout_ms")?.unwrap_or(default_timeout);
    let anthropic_version = opt_str(o, path, "anthropic_version")?
        .unwrap_or(DEFAULT_ANTHROPIC_VERSION)
        .to_string();
    let default_max_tokens = opt_u32(o, path, "default_max_tokens")?.unwrap_or(default_max_tokens);
    if default_max_tokens == 0 {
        return Err(err(
            &format!("{path}.default_max_tokens"),
            "must be greater than 0",
        ));
    }
    Ok(Provider {
        name: name.to_string(),
        kind,
        type_name: type_name.to_string(),
        cluster,
        host,
        base_path,
        api_key,
        headers,
        timeout_ms,
        anthropic_version,
        default_max_tokens,
        auth,
        path_template,
        unsupported: preset.map(|p| p.unsupported).unwrap_or(&[]),
        renames: preset.map(|p| p.renames).unwrap_or(&[]),
        drop_params,
        aws,
        vertex,
    })
}

/// Bedrock: `region` (required) and SigV4 credentials, each inline or from an environment
/// variable (`*_env`, defaulting to the standard `AWS_*` names). With an `api_key` (a Bedrock API
/// key, sent as Bearer) no credentials are needed.
fn parse_aws(
    o: &Map<String, Value>,
    path: &str,
    env: &dyn Env,
    kind: ProviderKind,
) -> Result<Option<AwsConfig>, ConfigError> {
    const KEYS: [(&str, &str); 3] = [
        ("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
        ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
        ("aws_session_token", "AWS_SESSION_TOKEN"),
    ];
    if kind != ProviderKind::Bedrock {
        let aws_keys = ["region"]
            .into_iter()
            .chain(KEYS.iter().map(|(k, _)| *k))
            .flat_map(|k| [k.to_string(), format!("{k}_env")]);
        for k in aws_keys {
            if o.contains_key(&k) {
                return Err(err(
                    &join(path, &k),
                    "only Bedrock providers (`type: bedrock`) take AWS settings",
                ));
            }
        }
        return Ok(None);
    }
    let region = opt_str(o, path, "region")?.ok_or_else(|| {
        err(
            &join(path, "region"),
            "required for Bedrock (e.g. `us-east-1`)",
        )
    })?;
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(err(
            &join(path, "region"),
            "must be an AWS region name like `us-east-1`",
        ));
    }
    let bearer = o.contains_key("api_key") || o.contains_key("api_key_env");
    let mut values: [Option<String>; 3] = [None, None, None];
    for (i, (key, default_env)) in KEYS.iter().enumerate() {
        let env_key = format!("{key}_env");
        values[i] = match (opt_str(o, path, key)?, opt_str(o, path, &env_key)?) {
            (Some(_), Some(_)) => {
                return Err(err(
                    &join(path, &env_key),
                    format!("set either `{key}` or `{env_key}`, not both"),
                ))
            }
            (Some(""), None) => {
                return Err(err(&join(path, key), "must not be empty"))
            }
            (Some(v), None) => Some(v.to_string()),
            (None, Some(var)) => match env.var(var) {
                Some(v) if !v.is_empty() => Some(v),
                _ => return Err(err(
                    &join(path, &env_key),
                    format!("environment variable `{var}` is not set in the VM (list it in vm_config.environment_variables)"),
                )),
            },
            (None, None) => env.var(default_env).filter(|v| !v.is_empty()),
        };
    }
    let [id, secret, token] = values;
    let credentials = match (id, secret) {
        _ if bearer => None,
        (Some(access_key_id), Some(secret_access_key)) => Some(crate::aws::sigv4::Credentials {
            access_key_id,
            secret_access_key,
            session_token: token,
        }),
        (None, _) => {
            return Err(err(
                &join(path, "aws_access_key_id"),
                "Bedrock needs credentials: `aws_access_key_id` (or `aws_access_key_id_env`, default AWS_ACCESS_KEY_ID), or a Bedrock API key in `api_key`",
            ))
        }
        (Some(_), None) => {
            return Err(err(
                &join(path, "aws_secret_access_key"),
                "required with `aws_access_key_id` (or `aws_secret_access_key_env`, default AWS_SECRET_ACCESS_KEY)",
            ))
        }
    };
    Ok(Some(AwsConfig {
        region: region.to_string(),
        credentials,
    }))
}

fn parse_model(
    v: &Value,
    path: &str,
    providers: &mut Vec<Provider>,
    env: &dyn Env,
) -> Result<Model, ConfigError> {
    let o = v
        .as_object()
        .ok_or_else(|| err(path, "must be an object"))?;
    check_keys(
        o,
        path,
        &[
            "name",
            "owned_by",
            "deployments",
            "aliases",
            "strategy",
            "num_retries",
            "fallbacks",
            "context_window_fallbacks",
            "content_policy_fallbacks",
            "latency_buffer",
        ],
    )?;
    let name = opt_str(o, path, "name")?.ok_or_else(|| err(&format!("{path}.name"), "required"))?;
    if name.is_empty() {
        return Err(err(&format!("{path}.name"), "must not be empty"));
    }
    let wildcard = name.contains('*');
    if name.matches('*').count() > 1 {
        return Err(err(
            &format!("{path}.name"),
            "a wildcard model name has exactly one `*`",
        ));
    }
    let aliases = opt_str_list(o, path, "aliases")?;
    let strategy = match opt_str(o, path, "strategy")? {
        None => crate::routing::Strategy::SimpleShuffle,
        Some(s) => crate::routing::Strategy::from_name(s).ok_or_else(|| {
            err(
                &format!("{path}.strategy"),
                format!(
                    "`{s}` is not one of {}",
                    crate::routing::Strategy::NAMES.join(", ")
                ),
            )
        })?,
    };
    let num_retries = match opt_u32(o, path, "num_retries")? {
        None => None,
        Some(n) if n <= 10 => Some(n as u8),
        Some(_) => return Err(err(&format!("{path}.num_retries"), "at most 10")),
    };
    let latency_buffer = match o.get("latency_buffer") {
        None | Some(Value::Null) => 0.1,
        Some(v) => match v.as_f64() {
            Some(f) if (0.0..=10.0).contains(&f) => f,
            _ => {
                return Err(err(
                    &format!("{path}.latency_buffer"),
                    "a number from 0 to 10",
                ))
            }
        },
    };
    let policy = crate::routing::GroupPolicy {
        strategy,
        num_retries,
        fallbacks: opt_str_list(o, path, "fallbacks")?,
        context_window_fallbacks: opt_str_list(o, path, "context_window_fallbacks")?,
        content_policy_fallbacks: opt_str_list(o, path, "content_policy_fallbacks")?,
        latency_buffer,
    };
    let dp = format!("{path}.deployments");
    let deps_v = o.get("deployments").ok_or_else(|| err(&dp, "required"))?;
    let deps_arr = deps_v
        .as_array()
        .ok_or_else(|| err(&dp, "must be an array"))?;
    if deps_arr.is_empty() {
        return Err(err(&dp, "at least one deployment is required"));
    }
    let mut deployments = Vec::with_capacity(deps_arr.len());
    for (i, d) in deps_arr.iter().enumerate() {
        let p = format!("{dp}[{i}]");
        let d = d.as_object().ok_or_else(|| err(&p, "must be an object"))?;
        check_keys(
            d,
            &p,
            &[
                "provider",
                "model",
                "weight",
                "name",
                "price",
                "tags",
                "rpm",
                "tpm",
                "max_input_tokens",
                "priority",
                "api_keys",
                "api_keys_env",
            ],
        )?;
        let pname =
            opt_str(d, &p, "provider")?.ok_or_else(|| err(&format!("{p}.provider"), "required"))?;
        let provider = providers
            .iter()
            .position(|x| x.name == pname)
            .ok_or_else(|| {
                err(
                    &format!("{p}.provider"),
                    format!("no provider named `{pname}` in `providers`"),
                )
            })?;
        // Wildcard groups pass the requested name's `*` part on unless told otherwise.
        let model = opt_str(d, &p, "model")?
            .unwrap_or(if wildcard { "*" } else { name })
            .to_string();
        let weight = opt_u32(d, &p, "weight")?.unwrap_or(1);
        let dname = match opt_str(d, &p, "name")? {
            Some("") => return Err(err(&format!("{p}.name"), "must not be empty")),
            Some(n) => n.to_string(),
            None => format!("{pname}/{model}"),
        };
        let price = match d.get("price") {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_price(v, &format!("{p}.price"))?),
        };
        // Resolved once here, not per request (a wildcard deployment's model is only known per
        // request: its own price or none).
        let cost_price = if model.contains('*') {
            price
        } else {
            crate::pricing::price(price.as_ref(), &model)
        };
        let keys = deployment_keys(d, &p, env)?;
        let base = deployments.len();
        let state_name = format!("{name}/{dname}");
        let slots = keys.len().max(1);
        for slot in 0..slots {
            // Each extra key is its own entry, on a copy of the provider holding that key.
            let provider = match keys.get(slot) {
                Some(k) => {
                    let mut copy = providers[provider].clone();
                    copy.api_key = Some(k.clone());
                    providers.push(copy);
                    providers.len() - 1
                }
                None => provider,
            };
            deployments.push(Deployment {
                provider,
                model: model.clone(),
                weight,
                name: dname.clone(),
                price,
                cost_price,
                tags: opt_str_list(d, &p, "tags")?,
                rpm: opt_u32(d, &p, "rpm")?,
                tpm: opt_u32(d, &p, "tpm")?,
                max_input_tokens: opt_u32(d, &p, "max_input_tokens")?,
                priority: opt_u32(d, &p, "priority")?.unwrap_or(0),
                key_slot: slot as u8,
                base,
                state_key: crate::routing::state::state_key(&if slots > 1 {
                    format!("{state_name}#{slot}")
                } else {
                    state_name.clone()
                }),
            });
        }
    }
    let owned_by = match opt_str(o, path, "owned_by")? {
        Some(s) => s.to_string(),
        None => providers[deployments[0].provider].type_name.clone(),
    };
    Ok(Model {
        name: name.to_string(),
        aliases,
        owned_by,
        tracked: deployments.len() > 1
            || policy.num_retries.unwrap_or(0) > 0
            || !policy.fallbacks.is_empty()
            || !policy.context_window_fallbacks.is_empty()
            || !policy.content_policy_fallbacks.is_empty(),
        deployments,
        policy,
    })
}

/// A deployment's `api_keys` (inline) or `api_keys_env` (variable names): empty when neither.
fn deployment_keys(
    d: &Map<String, Value>,
    p: &str,
    env: &dyn Env,
) -> Result<Vec<String>, ConfigError> {
    let inline = opt_str_list(d, p, "api_keys")?;
    let vars = opt_str_list(d, p, "api_keys_env")?;
    if !inline.is_empty() && !vars.is_empty() {
        return Err(err(
            &format!("{p}.api_keys_env"),
            "set either `api_keys` or `api_keys_env`, not both",
        ));
    }
    if inline.len() > 16 || vars.len() > 16 {
        return Err(err(&format!("{p}.api_keys"), "at most 16 keys"));
    }
    let mut keys = inline;
    for (i, var) in vars.iter().enumerate() {
        match env.var(var) {
            Some(k) if !k.is_empty() => keys.push(k),
            _ => {
                return Err(err(
                    &format!("{p}.api_keys_env[{i}]"),
                    format!("environment variable `{var}` is not set in the VM"),
                ))
            }
        }
    }
    Ok(keys)
}

fn opt_str_list(o: &Map<String, Value>, path: &str, key: &str) -> Result<Vec<String>, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_str() {
                Some(s) if !s.is_empty() => Ok(s.to_string()),
                _ => Err(err(
                    &format!("{}[{i}]", join(path, key)),
                    "must be a non-empty string",
                )),
            })
            .collect(),
        Some(_) => Err(err(&join(path, key), "must be an array of strings")),
    }
}

fn parse_router(v: &Value) -> Result<crate::routing::RouterConfig, ConfigError> {
    use crate::routing::{ErrorClass, RetryPolicy, RouterConfig, StatusConfig};
    let path = "router";
    let o = v
        .as_object()
        .ok_or_else(|| err(path, "must be an object"))?;
    check_keys(
        o,
        path,
        &[
            "attempts_cluster",
            "num_retries",
            "retry_policy",
            "allowed_fails",
            "fail_window_s",
            "cooldown_s",
            "max_retry_after_s",
            "tags_header",
            "max_attempts",
            "reject_when_all_cooling",
            "status",
            "mid_stream_recovery",
        ],
    )?;
    let mut r = RouterConfig {
        attempts_cluster: opt_str(o, path, "attempts_cluster")?.map(str::to_string),
        ..RouterConfig::default()
    };
    if let Some(n) = opt_u32(o, path, "num_retries")? {
        if n > 10 {
            return Err(err("router.num_retries", "at most 10"));
        }
        r.num_retries = n as u8;
    }
    r.retry_policy = RetryPolicy::uniform(10);
    if let Some(p) = o.get("retry_policy") {
        let po = p.as_object().ok_or_else(|| {
            err(
                "router.retry_policy",
                "must be an object of error class → retries",
            )
        })?;
        for (k, v) in po {
            let kp = format!("router.retry_policy.{k}");
            let class = ErrorClass::from_name(k).ok_or_else(|| {
                let names: Vec<&str> = ErrorClass::ALL.iter().map(|c| c.name()).collect();
                err(
                    &kp,
                    format!("unknown error class; expected one of: {}", names.join(", ")),
                )
            })?;
            let n = v
                .as_u64()
                .filter(|n| *n <= 10)
                .ok_or_else(|| err(&kp, "a whole number from 0 to 10"))?;
            r.retry_policy.max[class as usize] = n as u8;
        }
    }
    if let Some(n) = opt_u32(o, path, "allowed_fails")? {
        r.cooldown.allowed_fails = n;
    }
    if let Some(n) = opt_u32(o, path, "fail_window_s")? {
        r.cooldown.window_ms = u64::from(n.max(1)) * 1000;
    }
    if let Some(ms) = opt_ms(o, path, "cooldown_s")? {
        r.cooldown.cooldown_ms = ms;
    }
    if let Some(n) = opt_u32(o, path, "max_retry_after_s")? {
        r.max_retry_after_s = n;
    }
    if let Some(h) = opt_str(o, path, "tags_header")? {
        let h = h.to_ascii_lowercase();
        if !is_header_name(&h) || h.starts_with("x-llmux-") {
            return Err(err(
                "router.tags_header",
                "a valid header name not starting with x-llmux- (those are stripped)",
            ));
        }
        r.tags_header = h;
    }
    r.reject_when_all_cooling = opt_bool(o, path, "reject_when_all_cooling")?.unwrap_or(false);
    r.mid_stream_recovery = opt_bool(o, path, "mid_stream_recovery")?.unwrap_or(true);
    if let Some(n) = opt_u32(o, path, "max_attempts")? {
        if !(1..=10).contains(&n) {
            return Err(err("router.max_attempts", "from 1 to 10"));
        }
        r.max_attempts = n as u8;
    }
    r.status = match o.get("status") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => None,
        Some(Value::Bool(true)) => Some(StatusConfig {
            path: "/llmux/status".into(),
            allow: Vec::new(),
        }),
        Some(Value::Object(so)) => {
            check_keys(so, "router.status", &["path", "allow"])?;
            let p = opt_str(so, "router.status", "path")?.unwrap_or("/llmux/status");
            if !p.starts_with('/') {
                return Err(err("router.status.path", "must start with `/`"));
            }
            Some(StatusConfig {
                path: p.to_string(),
                allow: opt_str_list(so, "router.status", "allow")?,
            })
        }
        Some(_) => {
            return Err(err(
                "router.status",
                "true, false, or {path, allow: [address prefixes]}",
            ))
        }
    };
    Ok(r)
}

/// A duration in seconds (fractions allowed), as milliseconds.
fn opt_ms(o: &Map<String, Value>, path: &str, key: &str) -> Result<Option<u64>, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(f) if (0.0..=86_400.0).contains(&f) => Ok(Some((f * 1000.0) as u64)),
            _ => Err(err(&join(path, key), "seconds, from 0 to 86400")),
        },
    }
}

fn parse_price(v: &Value, path: &str) -> Result<Price, ConfigError> {
    let o = v
        .as_object()
        .ok_or_else(|| err(path, "must be an object of USD prices per million tokens"))?;
    let keys = [
        "input_per_mtok",
        "output_per_mtok",
        "cached_input_per_mtok",
        "cache_creation_per_mtok",
    ];
    check_keys(o, path, &keys)?;
    let get = |key: &str| -> Result<Option<f64>, ConfigError> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f)),
                _ => Err(err(&join(path, key), "must be a number ≥ 0")),
            },
        }
    };
    let input = get(keys[0])?.ok_or_else(|| err(&join(path, keys[0]), "required"))?;
    let output = get(keys[1])?.ok_or_else(|| err(&join(path, keys[1]), "required"))?;
    Ok(Price {
        input_per_mtok: input,
        output_per_mtok: output,
        cached_input_per_mtok: get(keys[2])?.unwrap_or(input),
        cache_creation_per_mtok: get(keys[3])?.unwrap_or(input),
    })
}

fn parse_export(v: &Value) -> Result<ExportConfig, ConfigError> {
    let path = "export";
    let o = v
        .as_object()
        .ok_or_else(|| err(path, "must be an object"))?;
    check_keys(
        o,
        path,
        &[
            "format",
            "cluster",
            "path",
            "authority",
            "headers",
            "batch_size",
            "flush_interval_ms",
            "timeout_ms",
            "max_queue",
            "service_name",
        ],
    )?;
    let format = match opt_str(o, path, "format")? {
        Some("webhook") => ExportFormat::Webhook,
        Some("otlp") => ExportFormat::Otlp,
        Some("langfuse") => ExportFormat::Langfuse,
        Some(other) => {
            return Err(err(
                "export.format",
                format!("`{other}` is not one of `webhook`, `otlp`, `langfuse`"),
            ))
        }
        None => return Err(err("export.format", "required")),
    };
    let cluster = match opt_str(o, path, "cluster")? {
        Some(c) if !c.is_empty() => c.to_string(),
        Some(_) => return Err(err("export.cluster", "must not be empty")),
        None => {
            return Err(err(
                "export.cluster",
                "required (the collector's Envoy cluster)",
            ))
        }
    };
    let xpath = match opt_str(o, path, "path")? {
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(_) => return Err(err("export.path", "must start with `/`")),
        None => format.default_path().to_string(),
    };
    let authority = opt_str(o, path, "authority")?
        .unwrap_or(&cluster)
        .to_string();
    let mut headers = Vec::new();
    if let Some(h) = o.get("headers") {
        let h = h
            .as_object()
            .ok_or_else(|| err("export.headers", "must be an object of header name → value"))?;
        for (k, v) in h {
            let kp = format!("export.headers.{k}");
            let lk = k.to_ascii_lowercase();
            if !is_header_name(&lk) || lk.starts_with(':') {
                return Err(err(&kp, "not a valid header name"));
            }
            let v = v.as_str().ok_or_else(|| err(&kp, "must be a string"))?;
            headers.push((lk, v.to_string()));
        }
    }
    let positive = |key: &str, default: u32| -> Result<u32, ConfigError> {
        match opt_u32(o, path, key)?.unwrap_or(default) {
            0 => Err(err(&join(path, key), "must be greater than 0")),
            n => Ok(n),
        }
    };
    let batch_size = positive("batch_size", 100)?;
    let flush_interval_ms = positive("flush_interval_ms", 1000)?;
    let timeout_ms = positive("timeout_ms", 5000)?;
    let max_queue = positive("max_queue", 10_000)?.max(batch_size);
    let service_name = opt_str(o, path, "service_name")?
        .unwrap_or("llmux")
        .to_string();
    Ok(ExportConfig {
        format,
        cluster,
        path: xpath,
        authority,
        headers,
        batch_size,
        flush_interval_ms,
        timeout_ms,
        max_queue,
        service_name,
    })
}

fn check_keys(o: &Map<String, Value>, path: &str, allowed: &[&str]) -> Result<(), ConfigError> {
    for k in o.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(err(
                &join(path, k),
                format!("unknown field; expected one of: {}", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn opt_str<'a>(
    o: &'a Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Option<&'a str>, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(&join(path, key), "must be a string")),
    }
}

pub(crate) fn opt_u32(
    o: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Option<u32>, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                err(
                    &join(path, key),
                    "must be a whole number from 0 to 4294967295",
                )
            }),
    }
}

fn opt_bool(o: &Map<String, Value>, path: &str, key: &str) -> Result<Option<bool>, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(err(&join(path, key), "must be true or false")),
    }
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeEnv(Vec<(&'static str, &'static str)>);
    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(
            s.as_bytes(),
            &FakeEnv(vec![("ANTHROPIC_API_KEY", "sk-ant")]),
        )
    }

    const GOOD: &str = r#"{
        "providers": {
            "openai": {"type": "openai", "cluster": "mock", "api_key": "sk-1"},
            "anthropic": {"type": "anthropic", "cluster": "anthropic", "host": "api.anthropic.com",
                          "api_key_env": "ANTHROPIC_API_KEY", "headers": {"Anthropic-Beta": "x"}}
        },
        "models": [
            {"name": "gpt-4o-mini", "deployments": [{"provider": "openai"}]},
            {"name": "claude-3-5-haiku", "deployments": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}]}
        ]
    }"#;

    #[test]
    fn parses_good_config_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.providers.len(), 2);
        let m = c.model("claude-3-5-haiku").unwrap();
        let p = c.provider(&m.deployments[0]);
        assert_eq!(p.kind, ProviderKind::Anthropic);
        assert_eq!(p.api_key.as_deref(), Some("sk-ant"));
        assert_eq!(
            p.headers,
            vec![("anthropic-beta".to_string(), "x".to_string())]
        );
        assert_eq!(p.base_path, "/v1");
        assert_eq!(p.default_max_tokens, DEFAULT_ANTHROPIC_MAX_TOKENS);
        assert_eq!(m.deployments[0].model, "claude-3-5-haiku-20241022");
        // deployment model defaults to the public name
        assert_eq!(
            c.model("gpt-4o-mini").unwrap().deployments[0].model,
            "gpt-4o-mini"
        );
        assert_eq!(c.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
        assert_eq!(c.cluster_header, "x-llmux-cluster");
        assert_eq!(c.unknown_paths, UnknownPaths::Reject);
        assert!(c.stream_usage);
        assert_eq!(
            c.model_names().collect::<Vec<_>>(),
            vec!["gpt-4o-mini", "claude-3-5-haiku"]
        );
    }

    fn path_of(s: &str) -> String {
        parse(s).unwrap_err().path
    }

    #[test]
    fn errors_name_the_bad_field() {
        assert_eq!(path_of("[]"), "");
        assert_eq!(path_of("{"), "");
        assert_eq!(path_of(r#"{"models": []}"#), "providers");
        assert_eq!(
            path_of(r#"{"providers": {"p": {"type": "nope", "cluster": "c"}}, "models": []}"#),
            "providers.p.type"
        );
        assert_eq!(
            path_of(r#"{"providers": {"p": {"type": "openai"}}, "models": []}"#),
            "providers.p.cluster"
        );
        assert_eq!(
            path_of(
                r#"{"providers": {"p": {"type": "openai", "cluster": "c", "typo": 1}}, "models": []}"#
            ),
            "providers.p.typo"
        );
        assert_eq!(
            path_of(
                r#"{"providers": {"p": {"type": "openai", "cluster": "c", "api_key_env": "MISSING"}}, "models": []}"#
            ),
            "providers.p.api_key_env"
        );
        assert_eq!(
            path_of(
                r#"{"providers": {"p": {"type": "openai", "cluster": "c"}}, "models": [{"name": "m", "deployments": [{"provider": "q"}]}]}"#
            ),
            "models[0].deployments[0].provider"
        );
        assert_eq!(
            path_of(
                r#"{"providers": {"p": {"type": "openai", "cluster": "c"}}, "models": [{"name": "m", "deployments": [{"provider": "p"}]}, {"name": "m", "deployments": [{"provider": "p"}]}]}"#
            ),
            "models[1].name"
        );
        assert_eq!(
            path_of(
                r#"{"providers": {"p": {"type": "openai", "cluster": "c"}}, "models": [{"name": "m", "deployments": [{"provider": "p"}]}], "max_request_bytes": -1}"#
            ),
            "max_request_bytes"
        );
        assert_eq!(
            path_of(
                r#"{"providers": {"p": {"type": "openai", "cluster": "c"}}, "models": [{"name": "m", "deployments": [{"provider": "p"}]}], "unknown_paths": "maybe"}"#
            ),
            "unknown_paths"
        );
    }

    #[test]
    fn deployment_names_prices_and_export() {
        let c = parse(GOOD).unwrap();
        let d = &c.model("claude-3-5-haiku").unwrap().deployments[0];
        assert_eq!(d.name, "anthropic/claude-3-5-haiku-20241022");
        assert_eq!(d.price, None);
        assert!(!c.log_bodies);
        assert!(c.export.is_none());

        let cfg = r#"{"providers": {"p": {"type": "openai", "cluster": "c"}},
            "models": [{"name": "m", "deployments": [{"provider": "p", "name": "east",
               "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}]}],
            "log_bodies": true,
            "export": {"format": "otlp", "cluster": "otel", "headers": {"X-Key": "v"}, "batch_size": 5}}"#;
        let c = parse(cfg).unwrap();
        let d = &c.models[0].deployments[0];
        assert_eq!(d.name, "east");
        let p = d.price.unwrap();
        assert_eq!(p.cached_input_per_mtok, 0.15);
        assert_eq!(p.cache_creation_per_mtok, 0.15);
        assert_eq!(p.output_per_mtok, 0.6);
        assert!(c.log_bodies);
        let e = c.export.unwrap();
        assert_eq!(e.format, ExportFormat::Otlp);
        assert_eq!(e.path, "/v1/logs");
        assert_eq!(e.authority, "otel");
        assert_eq!(e.headers, vec![("x-key".to_string(), "v".to_string())]);
        assert_eq!(
            (e.batch_size, e.flush_interval_ms, e.max_queue),
            (5, 1000, 10_000)
        );

        let base = r#"{"providers": {"p": {"type": "openai", "cluster": "c"}}, "models": [{"name": "m", "deployments": [{"provider": "p"XX}]}]YY}"#;
        let bad = |dep: &str, top: &str| path_of(&base.replace("XX", dep).replace("YY", top));
        assert_eq!(
            bad(r#", "price": {"input_per_mtok": 1}"#, ""),
            "models[0].deployments[0].price.output_per_mtok"
        );
        assert_eq!(
            bad(
                r#", "price": {"input_per_mtok": -1, "output_per_mtok": 1}"#,
                ""
            ),
            "models[0].deployments[0].price.input_per_mtok"
        );
        assert_eq!(
            bad(
                r#", "price": {"input_per_mtok": 1, "output_per_mtok": 1, "x": 1}"#,
                ""
            ),
            "models[0].deployments[0].price.x"
        );
        assert_eq!(bad("", r#", "export": {"cluster": "c"}"#), "export.format");
        assert_eq!(
            bad("", r#", "export": {"format": "kafka", "cluster": "c"}"#),
            "export.format"
        );
        assert_eq!(
            bad("", r#", "export": {"format": "webhook"}"#),
            "export.cluster"
        );
        assert_eq!(
            bad(
                "",
                r#", "export": {"format": "webhook", "cluster": "c", "batch_size": 0}"#
            ),
            "export.batch_size"
        );
        assert_eq!(bad("", r#", "log_bodies": 1"#), "log_bodies");
    }

    #[test]
    fn display_names_path() {
        let e = parse(r#"{"providers": {"p": {"type": 3, "cluster": "c"}}, "models": []}"#)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid LLMux configuration at `providers.p.type`: must be a string"
        );
    }
}
