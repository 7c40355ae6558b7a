//! The building blocks of config parsing: the error type, field readers that name the exact
//! path of a bad field, and the environment seam.
//!
//! A leaf module (it names no other module of the crate), so that every module with a config
//! section of its own (`auth`, `limits`, `pricing`, `routing`, `providers::vertex`) can parse it
//! with these helpers without depending on the whole `Config`, and without a module cycle.

use serde_json::{Map, Value};

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

pub(crate) fn check_keys(
    o: &Map<String, Value>,
    path: &str,
    allowed: &[&str],
) -> Result<(), ConfigError> {
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

pub(crate) fn join(path: &str, key: &str) -> String {
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

pub(crate) fn opt_bool(
    o: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Option<bool>, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(err(&join(path, key), "must be true or false")),
    }
}

pub(crate) fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub(crate) fn opt_str_list(
    o: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Vec<String>, ConfigError> {
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

/// A duration in seconds (fractions allowed), as milliseconds.
pub(crate) fn opt_ms(
    o: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<Option<u64>, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(f) if (0.0..=86_400.0).contains(&f) => Ok(Some((f * 1000.0) as u64)),
            _ => Err(err(&join(path, key), "seconds, from 0 to 86400")),
        },
    }
}
