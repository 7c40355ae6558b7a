//! The `models` section: public model groups, their routing policy, and their deployments (one
//! entry per deployment and API key).
//!
//! Its own module so that `Config::parse` stays a short orchestrator and each step of a group's
//! parsing is a function small enough to read at once.

use serde_json::{Map, Value};

use super::fields::{check_keys, err, opt_str, opt_str_list, opt_u32, ConfigError, Env};
use super::{Deployment, Model, Provider};
use crate::pricing::Price;
use crate::routing::config::{GroupPolicy, Strategy};

pub(super) fn parse_model(
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
    let name = model_name(o, path)?;
    let aliases = opt_str_list(o, path, "aliases")?;
    let policy = group_policy(o, path)?;
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
        parse_deployment(d, &p, name, providers, env, &mut deployments)?;
    }
    // A plan entry names a deployment by a u16 index.
    if deployments.len() > usize::from(u16::MAX) {
        return Err(err(
            &dp,
            "at most 65535 deployments per model (each of a deployment's api_keys counts as one)",
        ));
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

/// `name`: not empty, at most one `*` (a wildcard group).
fn model_name<'a>(o: &'a Map<String, Value>, path: &str) -> Result<&'a str, ConfigError> {
    let name = opt_str(o, path, "name")?.ok_or_else(|| err(&format!("{path}.name"), "required"))?;
    if name.is_empty() {
        return Err(err(&format!("{path}.name"), "must not be empty"));
    }
    if name.matches('*').count() > 1 {
        return Err(err(
            &format!("{path}.name"),
            "a wildcard model name has exactly one `*`",
        ));
    }
    Ok(name)
}

/// The group's strategy, retries, fallbacks and latency buffer.
fn group_policy(o: &Map<String, Value>, path: &str) -> Result<GroupPolicy, ConfigError> {
    let strategy = match opt_str(o, path, "strategy")? {
        None => Strategy::SimpleShuffle,
        Some(s) => Strategy::from_name(s).ok_or_else(|| {
            err(
                &format!("{path}.strategy"),
                format!("`{s}` is not one of {}", Strategy::NAMES.join(", ")),
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
    Ok(GroupPolicy {
        strategy,
        num_retries,
        fallbacks: opt_str_list(o, path, "fallbacks")?,
        context_window_fallbacks: opt_str_list(o, path, "context_window_fallbacks")?,
        content_policy_fallbacks: opt_str_list(o, path, "content_policy_fallbacks")?,
        latency_buffer,
    })
}

/// One `deployments[]` entry of group `name`, pushed to `deployments` once per API key (each
/// extra key on a copy of the provider, pushed to `providers`).
fn parse_deployment(
    d: &Value,
    p: &str,
    name: &str,
    providers: &mut Vec<Provider>,
    env: &dyn Env,
    deployments: &mut Vec<Deployment>,
) -> Result<(), ConfigError> {
    let d = d.as_object().ok_or_else(|| err(p, "must be an object"))?;
    check_keys(d, p, DEPLOYMENT_KEYS)?;
    let pname =
        opt_str(d, p, "provider")?.ok_or_else(|| err(&format!("{p}.provider"), "required"))?;
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
    let wildcard = name.contains('*');
    let model = opt_str(d, p, "model")?
        .unwrap_or(if wildcard { "*" } else { name })
        .to_string();
    let weight = opt_u32(d, p, "weight")?.unwrap_or(1);
    let dname = match opt_str(d, p, "name")? {
        Some("") => return Err(err(&format!("{p}.name"), "must not be empty")),
        Some(n) => n.to_string(),
        None => format!("{pname}/{model}"),
    };
    let (price, cost_price) = deployment_prices(d, p, &model)?;
    let keys = deployment_keys(d, p, env)?;
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
            tags: opt_str_list(d, p, "tags")?,
            rpm: opt_u32(d, p, "rpm")?,
            tpm: opt_u32(d, p, "tpm")?,
            max_input_tokens: opt_u32(d, p, "max_input_tokens")?,
            priority: opt_u32(d, p, "priority")?.unwrap_or(0),
            key_slot: slot as u8,
            base,
            state_key: crate::routing::state::state_key(&if slots > 1 {
                format!("{state_name}#{slot}")
            } else {
                state_name.clone()
            }),
        });
    }
    Ok(())
}

/// The fields a `deployments[]` entry may have.
const DEPLOYMENT_KEYS: &[&str] = &[
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
];

/// A deployment's own `price`, and what its requests cost: that price, else the bundled list
/// price of `model`.
fn deployment_prices(
    d: &Map<String, Value>,
    p: &str,
    model: &str,
) -> Result<(Option<Price>, Option<Price>), ConfigError> {
    let price = match d.get("price") {
        None | Some(Value::Null) => None,
        Some(v) => Some(crate::pricing::parse_price(v, &format!("{p}.price"))?),
    };
    // Resolved once here, not per request (a wildcard deployment's model is only known per
    // request: its own price or none).
    let cost_price = if model.contains('*') {
        price
    } else {
        crate::pricing::price(price.as_ref(), model)
    };
    Ok((price, cost_price))
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
