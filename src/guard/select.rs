//! Which guardrails apply to a request: the `guardrails` section of the filter configuration,
//! each guardrail compiled on its own ([`Policy`]) with optional selectors — the model groups,
//! key aliases and teams it applies to (all, when a selector is absent).
//!
//! One policy per guardrail (rather than one for all) is what lets a request be scanned by the
//! guardrails its group and key select, with the rules compiled once at configuration time.

use serde_json::{json, Map, Value};

use super::Policy;

/// Guard metrics: per guardrail (index in the configuration) and action; checks and errors per
/// direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuardMetric {
    /// Requests (or answers) scanned by the guardrail: `request` or `response`.
    Checks { guardrail: u16, dir: &'static str },
    /// A rule acted: `block`, `mask`, `monitor`; the rule by its index in the guardrail.
    Acted {
        guardrail: u16,
        rule: u16,
        action: &'static str,
    },
    /// A body the guardrails could not read (not the API's shape): passed on unscanned.
    Errors { guardrail: u16 },
    /// A remote guardrail with `on: ["response"]` did not check a streamed answer (remote
    /// guardrails check whole answers only).
    Skipped { guardrail: u16 },
}

/// Selector fields LLMux reads here; the rest of a guardrail goes to [`Policy`].
const SELECTORS: &[&str] = &["models", "keys", "teams"];

/// One configured guardrail.
#[derive(Debug)]
pub struct Entry {
    pub name: String,
    /// The local rules (empty for a remote guardrail).
    pub policy: Policy,
    /// An external guardrail (`remote`), called before the request is routed.
    pub remote: Option<super::remote::Remote>,
    /// The remote guardrail checks requests (`on` has `request`; the default is `["request"]`).
    pub remote_on_request: bool,
    /// The remote guardrail checks whole answers (`on` has `response`).
    pub remote_on_response: bool,
    pub models: Option<Vec<String>>,
    pub keys: Option<Vec<String>>,
    pub teams: Option<Vec<String>>,
}

/// The configured guardrails.
#[derive(Debug, Default)]
pub struct GuardSet {
    pub entries: Vec<Entry>,
    /// The configuration they were compiled from (two sets are equal when it is).
    source: Value,
}

impl PartialEq for GuardSet {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// A guardrail name: what metric labels and error codes can carry.
fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 48
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

fn names(o: &Map<String, Value>, path: &str, k: &str) -> Result<Option<Vec<String>>, String> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| format!("{path}.{k}: must be an array of names"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!("{path}.{k}: must be an array of names")),
    }
}

/// A remote guardrail's `on`: the directions it checks (default: requests only).
fn remote_on(on: Option<&Value>, path: &str) -> Result<(bool, bool), String> {
    let bad = || format!("{path}.on: must be a non-empty array of \"request\", \"response\"");
    let list = match on {
        None | Some(Value::Null) => return Ok((true, false)),
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(_) => return Err(bad()),
    };
    let (mut req, mut resp) = (false, false);
    for d in list {
        match d.as_str() {
            Some("request") if !req => req = true,
            Some("response") if !resp => resp = true,
            _ => return Err(bad()),
        }
    }
    Ok((req, resp))
}

impl GuardSet {
    /// `v` is the `guardrails` section: an array of guardrails, or `{"guardrails": [...],
    /// "stream_window": N}`.
    pub fn parse(v: &Value) -> Result<GuardSet, String> {
        let (list, window) = match v {
            Value::Array(a) => (a.as_slice(), None),
            Value::Object(o) => {
                if let Some(k) = o
                    .keys()
                    .find(|k| *k != "guardrails" && *k != "stream_window")
                {
                    return Err(format!(
                        "guardrails.{k}: unknown field (expected guardrails, stream_window)"
                    ));
                }
                let list = match o.get("guardrails") {
                    Some(Value::Array(a)) => a.as_slice(),
                    None => &[],
                    Some(_) => return Err("guardrails.guardrails: must be an array".into()),
                };
                (list, o.get("stream_window").cloned())
            }
            _ => return Err("guardrails: must be an array or an object".into()),
        };
        let mut entries = Vec::with_capacity(list.len());
        for (i, g) in list.iter().enumerate() {
            let path = format!("guardrails[{i}]");
            let o = g
                .as_object()
                .ok_or_else(|| format!("{path}: must be an object"))?;
            let mut rest = o.clone();
            for k in SELECTORS {
                rest.remove(*k);
            }
            let (policy, remote) = match rest.get("remote") {
                Some(_) => {
                    if let Some(k) = rest
                        .keys()
                        .find(|k| !matches!(k.as_str(), "name" | "remote" | "on"))
                    {
                        return Err(format!(
                            "{path}.{k}: a remote guardrail has name, remote, on and the selectors only"
                        ));
                    }
                    let remote = super::remote::Remote::parse(&Value::Object(o.clone()), &path)?;
                    (Policy::default(), Some(remote))
                }
                None => {
                    let mut one = json!({ "guardrails": [Value::Object(rest)] });
                    if let (Some(w), Some(m)) = (&window, one.as_object_mut()) {
                        m.insert("stream_window".into(), w.clone());
                    }
                    let policy = Policy::from_value(&one)
                        .map_err(|e| e.replacen("guardrails[0]", &path, 1))?;
                    (policy, None)
                }
            };
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if entries.iter().any(|e: &Entry| e.name == name) {
                return Err(format!("{path}.name: duplicate guardrail {name:?}"));
            }
            if !name_ok(&name) {
                return Err(format!("{path}.name: 1-48 of [A-Za-z0-9_-], required"));
            }
            let (on_request, on_response) = match &remote {
                Some(_) => remote_on(o.get("on"), &path)?,
                None => (false, false),
            };
            entries.push(Entry {
                name,
                policy,
                remote_on_request: on_request,
                remote_on_response: on_response,
                remote,
                models: names(o, &path, "models")?,
                keys: names(o, &path, "keys")?,
                teams: names(o, &path, "teams")?,
            });
        }
        Ok(GuardSet {
            entries,
            source: v.clone(),
        })
    }

    /// Each guardrail's name and its rules' names (requests' then answers'), as metric labels
    /// index them ([`GuardMetric`]).
    pub fn label_names(&self) -> Vec<(String, Vec<String>)> {
        self.entries
            .iter()
            .map(|e| {
                let rules = e
                    .policy
                    .request()
                    .rules()
                    .iter()
                    .chain(e.policy.response().rules())
                    .map(|r| r.name.clone())
                    .collect();
                (e.name.clone(), rules)
            })
            .collect()
    }

    /// The index of rule `name` of guardrail `i` in [`GuardSet::label_names`].
    pub fn rule_index(&self, i: usize, name: &str) -> u16 {
        self.entries
            .get(i)
            .and_then(|e| {
                e.policy
                    .request()
                    .rules()
                    .iter()
                    .chain(e.policy.response().rules())
                    .position(|r| r.name == name)
            })
            .unwrap_or(0) as u16
    }

    /// Some guardrail selects by model group (else the request's model need not be read).
    pub fn selects_models(&self) -> bool {
        self.entries.iter().any(|e| e.models.is_some())
    }

    /// Some guardrail is external (`remote`).
    pub fn has_remote(&self) -> bool {
        self.entries.iter().any(|e| e.remote.is_some())
    }

    /// Indices of the guardrails for a request to `group` by the key `alias` of `team`.
    pub fn applicable(&self, group: &str, alias: Option<&str>, team: Option<&str>) -> Vec<usize> {
        let ok = |sel: &Option<Vec<String>>, v: Option<&str>| match sel {
            None => true,
            Some(list) => v.is_some_and(|v| list.iter().any(|x| x == v)),
        };
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| ok(&e.models, Some(group)) && ok(&e.keys, alias) && ok(&e.teams, team))
            .map(|(i, _)| i)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_pick_the_guardrails_of_a_request() {
        let set = GuardSet::parse(&json!([
            {"name": "all", "rules": [{"detector": "email", "action": "mask"}]},
            {"name": "gpt-only", "models": ["gpt"], "rules": [{"detector": "card", "action": "block"}]},
            {"name": "team-a", "teams": ["a"], "keys": ["k1", "k2"],
             "rules": [{"detector": "secret", "action": "block"}]}
        ]))
        .unwrap();
        assert_eq!(set.applicable("gpt", None, None), vec![0, 1]);
        assert_eq!(set.applicable("claude", Some("k1"), Some("a")), vec![0, 2]);
        assert_eq!(set.applicable("claude", Some("k3"), Some("a")), vec![0]);
    }

    #[test]
    fn remote_guardrails_are_parsed_and_checked() {
        let set = GuardSet::parse(&json!([
            {"name": "hook", "models": ["gpt"],
             "remote": {"type": "webhook", "cluster": "hook", "path": "/check"}},
            {"name": "pii", "rules": [{"detector": "email", "action": "mask"}]}
        ]))
        .unwrap();
        assert!(set.has_remote());
        assert!(set.entries[0].remote.is_some() && set.entries[0].policy.request().is_empty());
        assert_eq!(set.applicable("gpt", None, None), vec![0, 1]);
        assert!(set.entries[0].remote_on_request && !set.entries[0].remote_on_response);
        let hook = json!({"type": "webhook", "cluster": "c", "path": "/x"});
        for (on, want) in [
            (json!(["response"]), (false, true)),
            (json!(["request", "response"]), (true, true)),
            (json!(["request"]), (true, false)),
        ] {
            let set = GuardSet::parse(&json!([{"name": "h", "on": on, "remote": hook}])).unwrap();
            let e = &set.entries[0];
            assert_eq!((e.remote_on_request, e.remote_on_response), want, "{on}");
        }
        for (bad, field) in [
            (
                json!([{"name": "h", "on": ["answer"], "remote": {"type": "webhook", "cluster": "c", "path": "/x"}}]),
                "guardrails[0].on",
            ),
            (
                json!([{"name": "h", "on": [], "remote": {"type": "webhook", "cluster": "c", "path": "/x"}}]),
                "guardrails[0].on",
            ),
            (
                json!([{"name": "h", "on": ["response", "response"], "remote": {"type": "webhook", "cluster": "c", "path": "/x"}}]),
                "guardrails[0].on",
            ),
            (
                json!([{"name": "h", "rules": [], "remote": {"type": "webhook", "cluster": "c", "path": "/x"}}]),
                "guardrails[0].rules",
            ),
            (
                json!([{"name": "h", "remote": {"type": "webhook", "path": "/x"}}]),
                "guardrails[0].remote.cluster",
            ),
            (
                json!([{"name": "h s", "remote": {"type": "webhook", "cluster": "c", "path": "/x"}}]),
                "guardrails[0].name",
            ),
        ] {
            let e = GuardSet::parse(&bad).unwrap_err();
            assert!(e.starts_with(field), "{e}");
        }
    }

    #[test]
    fn errors_name_the_guardrail() {
        let e = GuardSet::parse(&json!([
            {"name": "ok", "rules": [{"detector": "email", "action": "mask"}]},
            {"name": "bad", "rules": [{"detector": "nope", "action": "mask"}]}
        ]))
        .unwrap_err();
        assert!(e.starts_with("guardrails[1]"), "{e}");
        let e = GuardSet::parse(&json!([{"name": "x", "models": "gpt", "rules": []}])).unwrap_err();
        assert!(e.contains("guardrails[0]"), "{e}");
        assert!(GuardSet::parse(&json!({"stream_window": 64, "guardrails": []})).is_ok());
        assert!(GuardSet::parse(&json!({"other": 1})).is_err());
    }
}
