//! The `providers` section: one entry per upstream API (its type, cluster, host, key, headers,
//! and the Bedrock and Vertex settings).
//!
//! Its own module so that `Config::parse` stays a short orchestrator and each step of a
//! provider's parsing is a function small enough to read at once.

use serde_json::{Map, Value};

use super::fields::{
    check_keys, err, is_header_name, join, opt_bool, opt_str, opt_u32, ConfigError, Env,
};
use super::{AwsConfig, Provider, DEFAULT_ANTHROPIC_VERSION, DEFAULT_AZURE_API_VERSION};
use crate::providers::kind::ProviderKind;
use crate::providers::presets::{self, AuthStyle, Preset};

/// The fields a provider entry may have (Vertex's own included).
fn provider_keys() -> Vec<&'static str> {
    [
        "type",
        "cluster",
        "host",
        "base_path",
        "api_key",
        "api_key_env",
        "headers",
        "client_headers",
        "anthropic_beta",
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
    .chain(crate::providers::vertex::config::CONFIG_KEYS)
    .copied()
    .collect::<Vec<_>>()
}

pub(super) fn parse_provider(
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
    check_keys(o, path, &provider_keys())?;
    let (type_name, kind, preset) = provider_type(o, path)?;
    let is_azure = type_name == "azure";
    let vertex =
        crate::providers::vertex::config::parse_config(o, path, kind == ProviderKind::Vertex, env)?;
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
    let base_path = base_path(o, path, kind, preset, is_azure)?;
    let path_template = path_template(o, path, &base_path, is_azure)?;
    let auth = if is_azure {
        AuthStyle::Header("api-key")
    } else {
        preset.map(|p| p.auth).unwrap_or(AuthStyle::Bearer)
    };
    let drop_params = opt_bool(o, path, "drop_params")?.unwrap_or(false);
    let api_key = api_key(o, path, env)?;
    let headers = headers(o, path)?;
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
        client_headers: header_allow_list(o, path)?,
        anthropic_beta: anthropic_beta(o, path, kind)?,
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

/// `type`: a protocol, `azure` or a preset; with the protocol spoken and the preset, if any.
fn provider_type<'a>(
    o: &'a Map<String, Value>,
    path: &str,
) -> Result<(&'a str, ProviderKind, Option<&'static Preset>), ConfigError> {
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
    Ok((type_name, kind, preset))
}

/// `base_path`, else the preset's, else the protocol's (none for Azure).
fn base_path(
    o: &Map<String, Value>,
    path: &str,
    kind: ProviderKind,
    preset: Option<&Preset>,
    is_azure: bool,
) -> Result<String, ConfigError> {
    Ok(match opt_str(o, path, "base_path")? {
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
    })
}

/// The API path template; Azure's depends on its `api_version` (which only Azure takes).
fn path_template(
    o: &Map<String, Value>,
    path: &str,
    base_path: &str,
    is_azure: bool,
) -> Result<String, ConfigError> {
    let api_version = opt_str(o, path, "api_version")?;
    if api_version.is_some() && !is_azure {
        return Err(err(
            &format!("{path}.api_version"),
            "only Azure providers (`type: azure`) take an `api_version`",
        ));
    }
    Ok(if is_azure {
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
    })
}

/// `api_key` (inline) or `api_key_env` (read from the VM's environment), not both.
fn api_key(
    o: &Map<String, Value>,
    path: &str,
    env: &dyn Env,
) -> Result<Option<String>, ConfigError> {
    let inline_key = opt_str(o, path, "api_key")?;
    let env_key = opt_str(o, path, "api_key_env")?;
    Ok(match (inline_key, env_key) {
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
    })
}

/// `headers`: name → value, names lowercased.
fn headers(o: &Map<String, Value>, path: &str) -> Result<Vec<(String, String)>, ConfigError> {
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
    Ok(headers)
}

/// The AWS credential fields and the standard environment variable each defaults to.
const AWS_KEYS: [(&str, &str); 3] = [
    ("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
    ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    ("aws_session_token", "AWS_SESSION_TOKEN"),
];

/// Bedrock: `region` (required) and SigV4 credentials, each inline or from an environment
/// variable (`*_env`, defaulting to the standard `AWS_*` names). With an `api_key` (a Bedrock API
/// key, sent as Bearer) no credentials are needed.
fn parse_aws(
    o: &Map<String, Value>,
    path: &str,
    env: &dyn Env,
    kind: ProviderKind,
) -> Result<Option<AwsConfig>, ConfigError> {
    if kind != ProviderKind::Bedrock {
        let aws_keys = ["region"]
            .into_iter()
            .chain(AWS_KEYS.iter().map(|(k, _)| *k))
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
    let [id, secret, token] = aws_values(o, path, env)?;
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

/// The values of [`AWS_KEYS`], each inline, from its `*_env` variable, or from the default one.
fn aws_values(
    o: &Map<String, Value>,
    path: &str,
    env: &dyn Env,
) -> Result<[Option<String>; 3], ConfigError> {
    let mut values: [Option<String>; 3] = [None, None, None];
    for (i, (key, default_env)) in AWS_KEYS.iter().enumerate() {
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
    Ok(values)
}

/// `anthropic_beta` (providers that serve Claude: Anthropic, Bedrock, Vertex AI): the
/// `anthropic-beta` values a client may turn on (names or `prefix-*`, lowercased); the client's
/// header reaches the provider with only these (Claude on Bedrock gets them in the body, see
/// `client_api::anthropic::native`).
fn anthropic_beta(
    o: &Map<String, Value>,
    path: &str,
    kind: ProviderKind,
) -> Result<Option<Vec<crate::client_api::headers::Allowed>>, ConfigError> {
    let p = join(path, "anthropic_beta");
    let Some(v) = o.get("anthropic_beta").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    if !matches!(
        kind,
        ProviderKind::Anthropic | ProviderKind::Bedrock | ProviderKind::Vertex
    ) {
        return Err(err(
            &p,
            "only for providers of type `anthropic`, `bedrock` or `vertex`",
        ));
    }
    let Value::Array(a) = v else {
        return Err(err(&p, "must be a list of beta names"));
    };
    a.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .map(str::to_ascii_lowercase)
                .and_then(|s| crate::client_api::headers::Allowed::parse(&s))
                .ok_or_else(|| {
                    err(
                        &format!("{p}[{i}]"),
                        "must be a beta name, a prefix ending in `*`, or `*`",
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `client_headers`: the client headers forwarded beyond the default allow-list (names,
/// `prefix-*`, or `*` for all), lowercased.
pub(super) fn header_allow_list(
    o: &Map<String, Value>,
    path: &str,
) -> Result<Vec<crate::client_api::headers::Allowed>, ConfigError> {
    let p = join(path, "client_headers");
    match o.get("client_headers") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_ascii_lowercase)
                    .and_then(|s| crate::client_api::headers::Allowed::parse(&s))
                    .ok_or_else(|| {
                        err(
                            &format!("{p}[{i}]"),
                            "must be a header name, a prefix ending in `*`, or `*`",
                        )
                    })
            })
            .collect(),
        Some(_) => Err(err(&p, "must be a list of header names")),
    }
}
