//! Vertex AI's provider fields (project, location, publisher, auth), parsed and checked at
//! configure time. A leaf beside the translator: the configuration holds a [`VertexConfig`]
//! without reaching the translators.

use crate::config::fields::{err, opt_str, opt_u32, ConfigError, Env};
use crate::gcp::auth::ServiceAccount;

/// `anthropic_version` Claude on Vertex requires in the body.
pub const ANTHROPIC_VERTEX_VERSION: &str = "vertex-2023-10-16";
/// Default timeout of a token request to the OAuth2 endpoint.
pub const DEFAULT_TOKEN_TIMEOUT_MS: u32 = 10_000;

/// The provider fields only Vertex takes.
pub const CONFIG_KEYS: &[&str] = &[
    "project",
    "location",
    "publisher",
    "access_token",
    "access_token_env",
    "service_account_key",
    "service_account_key_env",
    "token_cluster",
    "token_timeout_ms",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publisher {
    Google,
    Anthropic,
}

#[derive(Debug, Clone, PartialEq)]
pub enum VertexAuth {
    /// A static OAuth2 access token (e.g. from `gcloud auth print-access-token`, refreshed by
    /// whoever sets the environment variable).
    Token(String),
    /// A service-account key: the filter signs a JWT and exchanges it for access tokens.
    ServiceAccount {
        account: Box<ServiceAccount>,
        /// The Envoy cluster that reaches the account's `token_uri`.
        cluster: String,
        timeout_ms: u32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct VertexConfig {
    pub project: String,
    pub location: String,
    pub publisher: Option<Publisher>,
    pub auth: VertexAuth,
}

impl VertexConfig {
    /// The API host for the location (docs/providers.md §5.1).
    pub fn default_host(&self) -> String {
        match self.location.as_str() {
            "global" => "aiplatform.googleapis.com".to_string(),
            "us" | "eu" => format!("aiplatform.{}.rep.googleapis.com", self.location),
            l => format!("{l}-aiplatform.googleapis.com"),
        }
    }

    pub fn publisher_for(&self, model: &str) -> Publisher {
        match self.publisher {
            Some(p) => p,
            None if model.starts_with("claude") => Publisher::Anthropic,
            None => Publisher::Google,
        }
    }

    /// The filter must obtain the access token (service-account auth).
    pub fn needs_token_fetch(&self) -> bool {
        matches!(self.auth, VertexAuth::ServiceAccount { .. })
    }
}

/// A value fit for one path segment: letters, digits and `-._~@` (Claude ids carry `@`).
pub(crate) fn segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@'))
}

/// Parses the Vertex fields of provider `path` (`o` is its object). `None` for other types,
/// which may not carry them.
pub fn parse_config(
    o: &serde_json::Map<String, serde_json::Value>,
    path: &str,
    is_vertex: bool,
    env: &dyn Env,
) -> Result<Option<VertexConfig>, ConfigError> {
    let field = |k: &str| format!("{path}.{k}");
    if !is_vertex {
        if let Some(k) = CONFIG_KEYS.iter().find(|k| o.contains_key(**k)) {
            return Err(err(
                &field(k),
                "only Vertex AI providers (`type: vertex`) take this field",
            ));
        }
        return Ok(None);
    }
    for k in ["api_key", "api_key_env"] {
        if o.contains_key(k) {
            return Err(err(
                &field(k),
                "Vertex AI takes `access_token(_env)` or `service_account_key(_env)`, not an API key",
            ));
        }
    }
    let required = |k: &str| -> Result<String, ConfigError> {
        match opt_str(o, path, k)? {
            Some(v) if segment_ok(v) => Ok(v.to_string()),
            Some(_) => Err(err(
                &field(k),
                "must be a non-empty name of letters, digits, `-._~@`",
            )),
            None => Err(err(&field(k), "required for Vertex AI")),
        }
    };
    let project = required("project")?;
    let location = required("location")?;
    let publisher = match opt_str(o, path, "publisher")? {
        None => None,
        Some("google") => Some(Publisher::Google),
        Some("anthropic") => Some(Publisher::Anthropic),
        Some(other) => {
            return Err(err(
                &field("publisher"),
                format!("`{other}` is not one of `google`, `anthropic`"),
            ))
        }
    };
    let auth = parse_auth(o, path, env)?;
    Ok(Some(VertexConfig {
        project,
        location,
        publisher,
        auth,
    }))
}

/// The credentials: an access token, or a service-account key with the cluster and timeout of
/// its token requests.
fn parse_auth(
    o: &serde_json::Map<String, serde_json::Value>,
    path: &str,
    env: &dyn Env,
) -> Result<VertexAuth, ConfigError> {
    let field = |k: &str| format!("{path}.{k}");
    let from_env = |k: &str| -> Result<Option<String>, ConfigError> {
        match opt_str(o, path, k)? {
            None => Ok(None),
            Some(var) => match env.var(var) {
                Some(v) if !v.trim().is_empty() => Ok(Some(v)),
                _ => Err(err(
                    &field(k),
                    format!("environment variable `{var}` is not set in the VM (list it in vm_config.environment_variables)"),
                )),
            },
        }
    };
    let token = match (
        opt_str(o, path, "access_token")?,
        from_env("access_token_env")?,
    ) {
        (Some(_), Some(_)) => {
            return Err(err(
                &field("access_token_env"),
                "set either `access_token` or `access_token_env`, not both",
            ))
        }
        (Some(t), None) => Some(t.trim().to_string()),
        (None, t) => t.map(|t| t.trim().to_string()),
    };
    let sa_inline = opt_str(o, path, "service_account_key")?;
    let sa_env = from_env("service_account_key_env")?;
    let (sa, sa_field) = match (sa_inline, sa_env) {
        (Some(_), Some(_)) => {
            return Err(err(
                &field("service_account_key_env"),
                "set either `service_account_key` or `service_account_key_env`, not both",
            ))
        }
        (Some(k), None) => (Some(k.to_string()), "service_account_key"),
        (None, k) => (k, "service_account_key_env"),
    };
    Ok(match (token, sa) {
        (Some(_), Some(_)) => {
            return Err(err(
                &field(sa_field),
                "set either an access token or a service-account key, not both",
            ))
        }
        (None, None) => {
            return Err(err(
                path,
                "Vertex AI needs `access_token(_env)` or `service_account_key(_env)`",
            ))
        }
        (Some(t), None) => {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(err(&field("access_token"), "not a valid bearer token"));
            }
            for k in ["token_cluster", "token_timeout_ms"] {
                if o.contains_key(k) {
                    return Err(err(&field(k), "only used with a service-account key"));
                }
            }
            VertexAuth::Token(t)
        }
        (None, Some(json)) => {
            let account =
                ServiceAccount::from_json(json.as_bytes()).map_err(|m| err(&field(sa_field), m))?;
            let cluster = match opt_str(o, path, "token_cluster")? {
                Some(c) if !c.is_empty() => c.to_string(),
                _ => {
                    return Err(err(
                        &field("token_cluster"),
                        format!(
                        "required with a service-account key: the Envoy cluster that reaches {}",
                        account.token_authority
                    ),
                    ))
                }
            };
            let timeout_ms =
                opt_u32(o, path, "token_timeout_ms")?.unwrap_or(DEFAULT_TOKEN_TIMEOUT_MS);
            if timeout_ms == 0 {
                return Err(err(&field("token_timeout_ms"), "must be greater than 0"));
            }
            VertexAuth::ServiceAccount {
                account: Box::new(account),
                cluster,
                timeout_ms,
            }
        }
    })
}
