//! The `router` section: failover, retries, cooldowns and the status endpoint.
//!
//! Its own module so that `Config::parse` stays a short orchestrator; the types it fills are the
//! router's own (`routing`), this module only reads them from JSON.

use serde_json::{Map, Value};

use super::fields::{
    check_keys, err, is_header_name, opt_bool, opt_ms, opt_str, opt_str_list, opt_u32, ConfigError,
};
use crate::routing::config::{ErrorClass, RetryPolicy, RouterConfig, StatusConfig};

pub(super) fn parse_router(v: &Value) -> Result<RouterConfig, ConfigError> {
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
    r.retry_policy = retry_policy(o)?;
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
    r.status = status(o)?;
    Ok(r)
}

/// `retry_policy`: retries per error class (10 for each class a retry can fix by default).
fn retry_policy(o: &Map<String, Value>) -> Result<RetryPolicy, ConfigError> {
    let mut policy = RetryPolicy::uniform(10);
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
            policy.max[class as usize] = n as u8;
        }
    }
    Ok(policy)
}

/// `status`: `true`, `false`, or `{path, allow}`.
fn status(o: &Map<String, Value>) -> Result<Option<StatusConfig>, ConfigError> {
    Ok(match o.get("status") {
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
    })
}
