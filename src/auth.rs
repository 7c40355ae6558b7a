//! Virtual API keys: who is calling, and whether they may use the model they ask for.
//!
//! Keys live in the config as SHA-256 digests (`printf %s "$KEY" | sha256sum`), so the config
//! never holds a usable secret. A request's key is hashed and compared against every configured
//! digest in constant time (the work does not depend on which byte differs, nor on which entry
//! matches), so timing tells an attacker nothing about the stored digests. Keys are never logged:
//! only their alias is.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::fields::ConfigError;
use crate::error::GatewayError;

#[derive(Debug, Clone, PartialEq)]
pub struct VirtualKey {
    digest: [u8; 32],
    pub alias: String,
    pub team: Option<String>,
    pub user: Option<String>,
    /// Models this key may use (`*` suffix = prefix match); `None` = all.
    pub models: Option<Vec<String>>,
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<u64>,
    pub blocked: bool,
    /// rpm, tpm, max_parallel_requests, budget.
    pub limits: crate::limits::Limits,
    /// `unpriced`: overrides the top-level `unpriced` for this key's requests.
    pub unpriced: Option<crate::pricing::Unpriced>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Auth {
    pub keys: Vec<VirtualKey>,
    /// Limits shared by a team's keys (`auth.teams`), on top of each key's own.
    pub teams: Vec<crate::limits::Team>,
    /// `keys` was given: every request must present one. Without it (`auth` with only `teams`,
    /// for a header or JWT identity) no key is asked for.
    pub require_key: bool,
}

fn err(path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.to_string(),
        message: message.into(),
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nib(b[2 * i])? << 4) | nib(b[2 * i + 1])?;
    }
    Some(out)
}

/// Unix seconds of `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC).
fn parse_time(s: &str) -> Option<u64> {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z')?)),
        None => (s, None),
    };
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    // Years 1970..=9999: the arithmetic below cannot overflow, and no earlier expiry means
    // anything (unix seconds are for anything else).
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil (proleptic Gregorian), epoch 1970-01-01.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let mut secs = days * 86400;
    if let Some(t) = time {
        let mut p = t.splitn(3, ':').map(|x| x.parse::<i64>().ok());
        let (h, mi, se) = (p.next()??, p.next()??, p.next()??);
        if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&se) {
            return None;
        }
        secs += h * 3600 + mi * 60 + se;
    }
    u64::try_from(secs).ok()
}

impl Auth {
    /// `auth` of the filter config: `{"keys": [{"key_sha256", "alias", ...}]}`.
    pub fn parse(v: &Value, path: &str) -> Result<Auth, ConfigError> {
        let o = v
            .as_object()
            .ok_or_else(|| err(path, "must be an object"))?;
        for k in o.keys() {
            if k != "keys" && k != "teams" {
                return Err(err(
                    &format!("{path}.{k}"),
                    "unknown field; expected: keys, teams",
                ));
            }
        }
        let teams = match o.get("teams") {
            None | Some(Value::Null) => Vec::new(),
            Some(t) => crate::limits::config::parse_teams(t, &format!("{path}.teams"))?,
        };
        let kp = format!("{path}.keys");
        let empty = Vec::new();
        let arr = match o.get("keys") {
            None if !teams.is_empty() => &empty,
            v => v
                .and_then(Value::as_array)
                .ok_or_else(|| err(&kp, "required: an array of keys"))?,
        };
        let mut keys = Vec::with_capacity(arr.len());
        for (i, k) in arr.iter().enumerate() {
            let p = format!("{kp}[{i}]");
            keys.push(parse_key(k, &p)?);
            if keys[..i]
                .iter()
                .any(|o: &VirtualKey| o.digest == keys[i].digest)
            {
                return Err(err(
                    &format!("{p}.key_sha256"),
                    "the same key is listed twice",
                ));
            }
            if keys[..i]
                .iter()
                .any(|o: &VirtualKey| o.alias == keys[i].alias)
            {
                return Err(err(&format!("{p}.alias"), "aliases must be unique"));
            }
        }
        Ok(Auth {
            keys,
            teams,
            require_key: o.contains_key("keys"),
        })
    }

    /// The limits of team `name`, if it has any.
    pub fn team_limits(&self, name: &str) -> Option<&crate::limits::Limits> {
        self.teams
            .iter()
            .find(|t| t.name == name)
            .map(|t| &t.limits)
    }

    /// The key the request presents (`Authorization: Bearer`, `x-api-key` or `api-key`), checked.
    /// Returns its index in `keys`.
    pub fn authenticate(
        &self,
        presented: Option<&str>,
        now_unix: u64,
    ) -> Result<usize, GatewayError> {
        let key = presented
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                GatewayError::new(
                    401,
                    "invalid_request_error",
                    "missing API key: send it as `Authorization: Bearer <key>` (or `x-api-key`)",
                )
                .with_code("missing_api_key")
            })?;
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = usize::MAX;
        for (i, k) in self.keys.iter().enumerate() {
            let diff = k
                .digest
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            // Branch-free selection: `found` becomes i when diff == 0.
            let hit = usize::from(diff == 0);
            found = found * (1 - hit) + i * hit;
        }
        let k = self.keys.get(found).ok_or_else(|| {
            GatewayError::new(401, "invalid_request_error", "invalid API key")
                .with_code("invalid_api_key")
        })?;
        if k.blocked {
            return Err(GatewayError::new(
                401,
                "invalid_request_error",
                format!("API key `{}` is blocked", k.alias),
            )
            .with_code("blocked_api_key"));
        }
        if k.expires_at.is_some_and(|t| now_unix >= t) {
            return Err(GatewayError::new(
                401,
                "invalid_request_error",
                format!("API key `{}` has expired", k.alias),
            )
            .with_code("expired_api_key"));
        }
        Ok(found)
    }

    /// Whether key `index` may use `model` (403 otherwise).
    pub fn allow_model(&self, index: usize, model: &str) -> Result<(), GatewayError> {
        let Some(k) = self.keys.get(index) else {
            return Ok(());
        };
        let allowed = match &k.models {
            None => true,
            Some(list) => list.iter().any(|m| match m.strip_suffix('*') {
                Some(prefix) => model.starts_with(prefix),
                None => m == model,
            }),
        };
        if allowed {
            Ok(())
        } else {
            Err(GatewayError::new(
                403,
                "permission_error",
                format!("API key `{}` may not use model `{model}`", k.alias),
            )
            .with_param("model")
            .with_code("model_not_allowed"))
        }
    }
}

fn parse_key(v: &Value, path: &str) -> Result<VirtualKey, ConfigError> {
    let o: &Map<String, Value> = v
        .as_object()
        .ok_or_else(|| err(path, "must be an object"))?;
    const FIELDS: &[&str] = &[
        "key_sha256",
        "alias",
        "team",
        "user",
        "models",
        "expires_at",
        "blocked",
        "unpriced",
    ];
    for k in o.keys() {
        if !FIELDS.contains(&k.as_str())
            && !crate::limits::config::LIMIT_FIELDS.contains(&k.as_str())
        {
            return Err(err(
                &format!("{path}.{k}"),
                format!(
                    "unknown field; expected one of: {}, {}",
                    FIELDS.join(", "),
                    crate::limits::config::LIMIT_FIELDS.join(", ")
                ),
            ));
        }
    }
    let digest = o
        .get("key_sha256")
        .and_then(Value::as_str)
        .and_then(hex32)
        .ok_or_else(|| {
            err(
                &format!("{path}.key_sha256"),
                "required: the key's SHA-256 as 64 hex digits (printf %s \"$KEY\" | sha256sum)",
            )
        })?;
    let alias = o
        .get("alias")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            err(
                &format!("{path}.alias"),
                "required: a name for logs and errors",
            )
        })?
        .to_string();
    let opt = |k: &str| -> Result<Option<String>, ConfigError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(err(&format!("{path}.{k}"), "must be a string")),
        }
    };
    let models = match o.get("models") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|m| m.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| err(&format!("{path}.models"), "must be an array of model names"))?,
        ),
        Some(_) => {
            return Err(err(
                &format!("{path}.models"),
                "must be an array of model names",
            ))
        }
    };
    let expires_at = match o.get("expires_at") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(|| {
            err(
                &format!("{path}.expires_at"),
                "must be unix seconds or a UTC date",
            )
        })?),
        Some(Value::String(s)) => Some(parse_time(s).ok_or_else(|| {
            err(
                &format!("{path}.expires_at"),
                "must look like 2027-01-31 or 2027-01-31T12:00:00Z (UTC, years 1970 to 9999)",
            )
        })?),
        Some(_) => {
            return Err(err(
                &format!("{path}.expires_at"),
                "must be unix seconds or a UTC date",
            ))
        }
    };
    let blocked = match o.get("blocked") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(err(&format!("{path}.blocked"), "must be true or false")),
    };
    Ok(VirtualKey {
        digest,
        alias,
        team: opt("team")?,
        user: opt("user")?,
        models,
        expires_at,
        blocked,
        limits: crate::limits::Limits::parse(o, path)?,
        unpriced: match o.get("unpriced") {
            None | Some(Value::Null) => None,
            Some(v) => Some(crate::pricing::parse_unpriced(
                v,
                &format!("{path}.unpriced"),
            )?),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sha(k: &str) -> String {
        Sha256::digest(k.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn auth() -> Auth {
        Auth::parse(
            &json!({"keys": [
                {"key_sha256": sha("sk-good"), "alias": "good", "team": "a", "models": ["gpt-4o-mini", "claude-*"]},
                {"key_sha256": sha("sk-old"), "alias": "old", "expires_at": "2020-01-01"},
                {"key_sha256": sha("sk-off"), "alias": "off", "blocked": true},
                {"key_sha256": sha("sk-any").to_uppercase(), "alias": "any", "expires_at": 4102444800u64}
            ]}),
            "auth",
        )
        .unwrap()
    }

    #[test]
    fn authenticates_and_refuses() {
        let a = auth();
        let now = 1_800_000_000;
        assert_eq!(a.authenticate(Some("sk-good"), now), Ok(0));
        assert_eq!(a.authenticate(Some(" sk-any "), now), Ok(3));
        for (key, code) in [
            (None, "missing_api_key"),
            (Some(""), "missing_api_key"),
            (Some("sk-bad"), "invalid_api_key"),
            (Some("sk-old"), "expired_api_key"),
            (Some("sk-off"), "blocked_api_key"),
        ] {
            let e = a.authenticate(key, now).unwrap_err();
            assert_eq!((e.status, e.code.as_deref()), (401, Some(code)));
            assert!(!e.message.contains("sk-"), "keys never appear in errors");
        }
    }

    #[test]
    fn model_access_lists_with_prefixes() {
        let a = auth();
        assert!(a.allow_model(0, "gpt-4o-mini").is_ok());
        assert!(a.allow_model(0, "claude-3-5-haiku").is_ok());
        let e = a.allow_model(0, "gpt-4o").unwrap_err();
        assert_eq!(
            (e.status, e.code.as_deref()),
            (403, Some("model_not_allowed"))
        );
        assert!(a.allow_model(3, "anything").is_ok());
    }

    #[test]
    fn dates_parse_as_utc() {
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("2000-03-01T00:00:00Z"), Some(951868800));
        assert_eq!(parse_time("2027-01-31T12:30:15Z"), Some(1801398615));
        for bad in [
            "2027-13-01",
            "2027-01-01T25:00:00Z",
            "2027-01-01T10:00:00",
            "soon",
            "",
            // Issue 14 item 11: days × 86400 overflowed an i64 (a panic with overflow checks,
            // a wrapped expiry without).
            "9223372036854775807-01-01",
            "-9223372036854775808-03-01",
            "1969-12-31",
            "10000-01-01",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(parse_time("9999-12-31T23:59:59Z"), Some(253402300799));
    }

    #[test]
    fn config_errors_name_the_field() {
        for (v, path) in [
            (json!({"keys": [{"alias": "x"}]}), "auth.keys[0].key_sha256"),
            (
                json!({"keys": [{"key_sha256": "abc", "alias": "x"}]}),
                "auth.keys[0].key_sha256",
            ),
            (
                json!({"keys": [{"key_sha256": sha("k")}]}),
                "auth.keys[0].alias",
            ),
            (
                json!({"keys": [{"key_sha256": sha("k"), "alias": "x", "expires_at": "later"}]}),
                "auth.keys[0].expires_at",
            ),
            (
                json!({"keys": [{"key_sha256": sha("k"), "alias": "x"}, {"key_sha256": sha("k"), "alias": "y"}]}),
                "auth.keys[1].key_sha256",
            ),
            (
                json!({"keys": [{"key_sha256": sha("k"), "alias": "x", "plan": 1}]}),
                "auth.keys[0].plan",
            ),
            (json!({"key": []}), "auth.key"),
        ] {
            assert_eq!(Auth::parse(&v, "auth").unwrap_err().path, path, "{v}");
        }
    }
}
