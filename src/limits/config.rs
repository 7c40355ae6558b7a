//! Limit configuration: per key and team (`auth.keys[]`, `auth.teams[]`), per model and the
//! rate-limit service (`rate_limit`), and where the caller's identity comes from (`identity`).

use serde_json::{Map, Value};

use crate::config::fields::ConfigError;

fn err(path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// A limit window: exactly one unit of the rate-limit service (its `limit` override has no
/// multiplier), so only these lengths exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        Some(match s {
            "1s" => Period::Second,
            "1m" | "60s" => Period::Minute,
            "1h" | "60m" | "3600s" => Period::Hour,
            "1d" | "24h" => Period::Day,
            "7d" | "1w" => Period::Week,
            "30d" => Period::Month,
            _ => return None,
        })
    }

    pub fn seconds(self) -> u64 {
        match self {
            Period::Second => 1,
            Period::Minute => 60,
            Period::Hour => 3600,
            Period::Day => 86_400,
            Period::Week => 7 * 86_400,
            Period::Month => 30 * 86_400,
        }
    }

    /// `envoy.service.ratelimit.v3.RateLimitResponse.RateLimit.Unit`.
    pub fn rls_unit(self) -> u32 {
        match self {
            Period::Second => 1,
            Period::Minute => 2,
            Period::Hour => 3,
            Period::Day => 4,
            Period::Month => 5,
            Period::Week => 7,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Period::Second => "1s",
            Period::Minute => "1m",
            Period::Hour => "1h",
            Period::Day => "1d",
            Period::Week => "7d",
            Period::Month => "30d",
        }
    }
}

/// A spend limit. The rate-limit service counts in u32 units, so the unit is the smallest power
/// of ten of micro-USD that fits the amount in a u32 (1 µUSD up to $4294, 10 µUSD up to $42949...).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub amount_usd: f64,
    pub period: Period,
}

impl Budget {
    /// Nano-USD per counted unit.
    pub fn unit_nanousd(&self) -> u64 {
        let mut unit: u64 = 1000;
        while (self.amount_usd * 1e9 / unit as f64) > f64::from(u32::MAX) && unit < 10u64.pow(15) {
            unit *= 10;
        }
        unit
    }

    /// The budget in units (at least 1).
    pub fn limit_units(&self) -> u32 {
        let units = (self.amount_usd * 1e9 / self.unit_nanousd() as f64).floor();
        if units >= f64::from(u32::MAX) {
            u32::MAX
        } else if units >= 1.0 {
            units as u32
        } else {
            1
        }
    }

    /// Units charged for `nanousd` (rounded up: a cost is never free).
    pub fn units(&self, nanousd: u64) -> u64 {
        nanousd.div_ceil(self.unit_nanousd())
    }
}

/// The limits of one key, team or model. `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    /// In flight at once, per Envoy instance (across its workers).
    pub max_parallel: Option<u32>,
    pub budget: Option<Budget>,
}

/// The fields [`Limits::parse`] reads from a key, team or model object.
pub const LIMIT_FIELDS: &[&str] = &["rpm", "tpm", "max_parallel_requests", "budget"];

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none()
            && self.tpm.is_none()
            && self.max_parallel.is_none()
            && self.budget.is_none()
    }

    /// Reads [`LIMIT_FIELDS`] of `o` (other fields are the caller's to check).
    pub fn parse(o: &Map<String, Value>, path: &str) -> Result<Limits, ConfigError> {
        let count = |k: &str| -> Result<Option<u32>, ConfigError> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
                    .map(|n| Some(n as u32))
                    .ok_or_else(|| err(&format!("{path}.{k}"), "must be a whole number ≥ 1")),
            }
        };
        let budget = match o.get("budget") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let bp = format!("{path}.budget");
                let b = v
                    .as_object()
                    .ok_or_else(|| err(&bp, "must be {\"amount_usd\": N, \"period\": \"30d\"}"))?;
                for k in b.keys() {
                    if k != "amount_usd" && k != "period" {
                        return Err(err(
                            &format!("{bp}.{k}"),
                            "unknown field; expected: amount_usd, period",
                        ));
                    }
                }
                let amount_usd = b
                    .get("amount_usd")
                    .and_then(Value::as_f64)
                    .filter(|a| a.is_finite() && *a > 0.0 && *a < 1e12)
                    .ok_or_else(|| {
                        err(
                            &format!("{bp}.amount_usd"),
                            "required: a positive amount in USD",
                        )
                    })?;
                let period = match b.get("period") {
                    None => Period::Month,
                    Some(p) => p.as_str().and_then(Period::parse).ok_or_else(|| {
                        err(
                            &format!("{bp}.period"),
                            "must be one of 1s, 1m, 1h, 1d, 7d, 30d",
                        )
                    })?,
                };
                Some(Budget { amount_usd, period })
            }
        };
        Ok(Limits {
            rpm: count("rpm")?,
            tpm: count("tpm")?,
            max_parallel: count("max_parallel_requests")?,
            budget,
        })
    }
}

/// A team: limits shared by all its keys, on top of each key's own.
#[derive(Debug, Clone, PartialEq)]
pub struct Team {
    pub name: String,
    pub limits: Limits,
}

pub fn parse_teams(v: &Value, path: &str) -> Result<Vec<Team>, ConfigError> {
    let arr = v
        .as_array()
        .ok_or_else(|| err(path, "must be an array of teams"))?;
    let mut teams: Vec<Team> = Vec::with_capacity(arr.len());
    for (i, t) in arr.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let o = t.as_object().ok_or_else(|| err(&p, "must be an object"))?;
        for k in o.keys() {
            if k != "name" && !LIMIT_FIELDS.contains(&k.as_str()) {
                return Err(err(
                    &format!("{p}.{k}"),
                    format!(
                        "unknown field; expected one of: name, {}",
                        LIMIT_FIELDS.join(", ")
                    ),
                ));
            }
        }
        let name = o
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| err(&format!("{p}.name"), "required: the team's name"))?;
        if teams.iter().any(|t| t.name == name) {
            return Err(err(&format!("{p}.name"), "team names must be unique"));
        }
        teams.push(Team {
            name: name.to_string(),
            limits: Limits::parse(o, &p)?,
        });
    }
    Ok(teams)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// The rate-limit service failed: let the request pass (local counters still apply).
    Open,
    /// The rate-limit service failed: answer 503.
    Closed,
}

/// `rate_limit`: the Envoy rate-limit service shared by every gateway instance.
#[derive(Debug, Clone, PartialEq)]
pub struct RlsConfig {
    /// Envoy cluster of the service (HTTP/2).
    pub cluster: String,
    pub domain: String,
    pub timeout_ms: u32,
    pub failure_mode: FailureMode,
}

/// Where the caller's identity comes from.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum IdentitySource {
    /// The virtual key (`auth.keys`).
    #[default]
    Key,
    /// Request headers set by a trusted filter in front (they must be stripped at the edge).
    Header { user: String, team: Option<String> },
    /// Claims of a JWT that Envoy's `jwt_authn` filter verified, from its dynamic metadata
    /// (`payload_in_metadata`) in `metadata_namespace`.
    Jwt {
        namespace: String,
        payload_key: String,
        user_claim: String,
        team_claim: Option<String>,
    },
}

/// Everything limit-related from the filter config.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LimitsConfig {
    pub rls: Option<RlsConfig>,
    /// Per model group (all callers together), as written: each name is checked against
    /// `models` and resolved to its group by `Config::parse`; look a group's limit up with
    /// `Config::model_limit`, never by the client's model string.
    pub models: Vec<(String, Limits)>,
    pub identity: IdentitySource,
    /// Limits for each caller named by a header or JWT identity.
    pub identity_limits: Limits,
    /// What a request without the header or JWT identity gets (`identity.missing`).
    pub missing_identity: MissingIdentity,
}

/// A request whose header or JWT identity is missing: refused (401, the default), or counted
/// in one shared bucket.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum MissingIdentity {
    #[default]
    Reject,
    Bucket(String),
}

pub const RATE_LIMIT_FIELDS: &[&str] =
    &["cluster", "domain", "timeout_ms", "failure_mode", "models"];

fn opt_string(o: &Map<String, Value>, path: &str, k: &str) -> Result<Option<String>, ConfigError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(err(&format!("{path}.{k}"), "must be a non-empty string")),
    }
}

impl LimitsConfig {
    /// `rate_limit` and `identity` of the filter config (either may be absent).
    pub fn parse(
        rate_limit: Option<&Value>,
        identity: Option<&Value>,
    ) -> Result<LimitsConfig, ConfigError> {
        let mut c = LimitsConfig::default();
        if let Some(v) = rate_limit.filter(|v| !v.is_null()) {
            let p = "rate_limit";
            let o = v.as_object().ok_or_else(|| err(p, "must be an object"))?;
            for k in o.keys() {
                if !RATE_LIMIT_FIELDS.contains(&k.as_str()) {
                    return Err(err(
                        &format!("{p}.{k}"),
                        format!(
                            "unknown field; expected one of: {}",
                            RATE_LIMIT_FIELDS.join(", ")
                        ),
                    ));
                }
            }
            if let Some(cluster) = opt_string(o, p, "cluster")? {
                c.rls = Some(rls_config(o, p, cluster)?);
            } else if o.keys().any(|k| k != "models") {
                return Err(err(
                    "rate_limit.cluster",
                    "required: the Envoy cluster of the rate-limit service",
                ));
            }
            if let Some(m) = o.get("models") {
                c.models = model_limits(m)?;
            }
        }
        if let Some(v) = identity.filter(|v| !v.is_null()) {
            parse_identity(v, &mut c)?;
        }
        Ok(c)
    }
}

/// `rate_limit` with a `cluster`: the rate-limit service's settings.
fn rls_config(o: &Map<String, Value>, p: &str, cluster: String) -> Result<RlsConfig, ConfigError> {
    let timeout_ms = match o.get("timeout_ms") {
        None => 100,
        Some(t) => {
            t.as_u64()
                .filter(|t| (1..=60_000).contains(t))
                .ok_or_else(|| err("rate_limit.timeout_ms", "must be 1..60000"))? as u32
        }
    };
    let failure_mode = match o.get("failure_mode").and_then(Value::as_str) {
        None if o.get("failure_mode").is_none() => FailureMode::Open,
        Some("open") => FailureMode::Open,
        Some("closed") => FailureMode::Closed,
        _ => return Err(err("rate_limit.failure_mode", "must be `open` or `closed`")),
    };
    Ok(RlsConfig {
        cluster,
        domain: opt_string(o, p, "domain")?.unwrap_or_else(|| "llmux".into()),
        timeout_ms,
        failure_mode,
    })
}

/// `rate_limit.models`: model name → `rpm` / `tpm`.
fn model_limits(m: &Value) -> Result<Vec<(String, Limits)>, ConfigError> {
    let mp = "rate_limit.models";
    let m = m
        .as_object()
        .ok_or_else(|| err(mp, "must be an object of model name → limits"))?;
    let mut models = Vec::new();
    for (name, l) in m {
        let lp = format!("{mp}.{name}");
        let lo = l.as_object().ok_or_else(|| err(&lp, "must be an object"))?;
        for k in lo.keys() {
            if k != "rpm" && k != "tpm" {
                return Err(err(
                    &format!("{lp}.{k}"),
                    "unknown field; expected: rpm, tpm",
                ));
            }
        }
        models.push((name.clone(), Limits::parse(lo, &lp)?));
    }
    Ok(models)
}

/// `identity`: where the caller's user and team come from, and the limits per user.
fn parse_identity(v: &Value, c: &mut LimitsConfig) -> Result<(), ConfigError> {
    let p = "identity";
    let o = v.as_object().ok_or_else(|| err(p, "must be an object"))?;
    let allowed: &[&str] = &[
        "source",
        "headers",
        "metadata_namespace",
        "payload_key",
        "claims",
        "limits",
        "missing",
    ];
    for k in o.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(err(
                &format!("{p}.{k}"),
                format!("unknown field; expected one of: {}", allowed.join(", ")),
            ));
        }
    }
    c.identity = identity_source(o, p)?;
    c.missing_identity = match o.get("missing").map(|v| v.as_str()) {
        None | Some(Some("reject")) => MissingIdentity::Reject,
        Some(Some(bucket)) if bucket.starts_with("bucket:") && bucket.len() > "bucket:".len() => {
            MissingIdentity::Bucket(bucket["bucket:".len()..].to_string())
        }
        _ => return Err(err(
            "identity.missing",
            "must be `reject` or `bucket:NAME` (requests without the identity share NAME's limits)",
        )),
    };
    if let Some(l) = o.get("limits") {
        let lo = l
            .as_object()
            .ok_or_else(|| err("identity.limits", "must be an object"))?;
        for k in lo.keys() {
            if !LIMIT_FIELDS.contains(&k.as_str()) {
                return Err(err(
                    &format!("identity.limits.{k}"),
                    format!(
                        "unknown field; expected one of: {}",
                        LIMIT_FIELDS.join(", ")
                    ),
                ));
            }
        }
        c.identity_limits = Limits::parse(lo, "identity.limits")?;
    }
    Ok(())
}

/// `identity.source`: the API key (default), request headers, or JWT claims.
fn identity_source(o: &Map<String, Value>, p: &str) -> Result<IdentitySource, ConfigError> {
    Ok(match o.get("source").and_then(Value::as_str) {
        Some("key") | None => IdentitySource::Key,
        Some("header") => {
            let (user, team) = identity_names(o, p, "headers")?;
            IdentitySource::Header {
                user: user.to_ascii_lowercase(),
                team: team.map(|t| t.to_ascii_lowercase()),
            }
        }
        Some("jwt") => {
            let (user_claim, team_claim) = identity_names(o, p, "claims")?;
            IdentitySource::Jwt {
                namespace: opt_string(o, p, "metadata_namespace")?
                    .unwrap_or_else(|| "envoy.filters.http.jwt_authn".into()),
                payload_key: opt_string(o, p, "payload_key")?
                    .unwrap_or_else(|| "jwt_payload".into()),
                user_claim,
                team_claim,
            }
        }
        Some(_) => return Err(err("identity.source", "must be `key`, `header` or `jwt`")),
    })
}

/// `identity.headers` or `identity.claims`: `{"user": ..., "team": ...}` (`user` required).
fn identity_names(
    o: &Map<String, Value>,
    p: &str,
    field: &str,
) -> Result<(String, Option<String>), ConfigError> {
    let fp = format!("{p}.{field}");
    let m = o
        .get(field)
        .and_then(Value::as_object)
        .ok_or_else(|| err(&fp, "required: {\"user\": ..., \"team\": ...}"))?;
    for k in m.keys() {
        if k != "user" && k != "team" {
            return Err(err(
                &format!("{fp}.{k}"),
                "unknown field; expected: user, team",
            ));
        }
    }
    let user = opt_string(m, &fp, "user")?.ok_or_else(|| err(&format!("{fp}.user"), "required"))?;
    Ok((user, opt_string(m, &fp, "team")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_limits_and_names_bad_fields() {
        let c = LimitsConfig::parse(
            Some(&json!({"cluster": "rls", "failure_mode": "closed", "models": {"m": {"rpm": 5}}})),
            Some(&json!({"source": "header", "headers": {"user": "X-User"}, "limits": {"tpm": 9}})),
        )
        .unwrap();
        let rls = c.rls.unwrap();
        assert_eq!(
            (rls.domain.as_str(), rls.timeout_ms, rls.failure_mode),
            ("llmux", 100, FailureMode::Closed)
        );
        assert_eq!(c.models[0].1.rpm, Some(5));
        assert_eq!(
            c.identity,
            IdentitySource::Header {
                user: "x-user".into(),
                team: None
            }
        );
        assert_eq!(c.identity_limits.tpm, Some(9));
        for (rl, id, path) in [
            (json!({"domain": "x"}), json!(null), "rate_limit.cluster"),
            (
                json!({"cluster": "r", "failure_mode": "maybe"}),
                json!(null),
                "rate_limit.failure_mode",
            ),
            (
                json!({"cluster": "r", "models": {"m": {"budget": 1}}}),
                json!(null),
                "rate_limit.models.m.budget",
            ),
            (json!(null), json!({"source": "cookie"}), "identity.source"),
            (json!(null), json!({"source": "jwt"}), "identity.claims"),
            (
                json!(null),
                json!({"limits": {"rpm": 0}}),
                "identity.limits.rpm",
            ),
        ] {
            assert_eq!(
                LimitsConfig::parse(Some(&rl), Some(&id)).unwrap_err().path,
                path
            );
        }
        let o = json!({"budget": {"amount_usd": 5, "period": "2d"}});
        assert_eq!(
            Limits::parse(o.as_object().unwrap(), "k").unwrap_err().path,
            "k.budget.period"
        );
        assert_eq!(Period::parse("60s"), Some(Period::Minute));
        assert_eq!(
            parse_teams(&json!([{"name": "a"}, {"name": "a"}]), "auth.teams")
                .unwrap_err()
                .path,
            "auth.teams[1].name"
        );
    }
}
