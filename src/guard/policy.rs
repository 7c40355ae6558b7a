//! The guardrails config, parsed and compiled once into a [`Policy`]: one [`Guard`] per
//! direction, custom patterns compiled here and never per call.
//!
//! Every error names the field (`guardrails[0].rules[3].pattern: ...`); unknown keys, detectors
//! and actions are errors; the sizes of patterns, phrase lists and rule lists are capped so that
//! a config cannot make the filter slow or big.

use serde_json::{Map, Value};

use super::detect::{Detector, Triggers, BUILTIN};
use super::phrase::Phrases;
use super::{Action, Custom, Guard, Rule};

/// Default stream hold-back window (bytes): longer than any built-in match that spans several
/// words (an IBAN in groups: 42 bytes; a grouped phone or card: < 32).
pub const DEFAULT_STREAM_WINDOW: usize = 128;
/// The longest built-in match that spans several words (a PEM header ≤ 63 bytes, an IBAN in
/// groups ≤ 42) must fit the window.
pub const MIN_STREAM_WINDOW: usize = 64;
const MAX_STREAM_WINDOW: usize = 4096;
const MAX_GUARDRAILS: usize = 32;
const MAX_RULES: usize = 64;
const MAX_NAME: usize = 48;
const MAX_PATTERN: usize = 1024;
const MAX_PHRASES: usize = 1000;
const MAX_PHRASE: usize = 256;
/// Compiled size limits (`regex::RegexBuilder::size_limit`, `dfa_size_limit`).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
const REGEX_DFA_LIMIT: usize = 1 << 20;
const SET_SIZE_LIMIT: usize = 8 << 20;

/// The compiled guardrails: the rules that apply to requests and those that apply to answers.
#[derive(Debug, Default)]
pub struct Policy {
    request: Guard,
    response: Guard,
}

type R<T> = Result<T, String>;

fn keys(obj: &Map<String, Value>, path: &str, allowed: &[&str]) -> R<()> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "{path}.{k}: unknown field (expected one of {})",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

fn str_field<'a>(obj: &'a Map<String, Value>, path: &str, key: &str) -> R<Option<&'a str>> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{path}.{key}: must be a string")),
    }
}

/// A rule before compilation.
#[derive(Clone)]
struct Parsed {
    rule: Rule,
    /// A regex rule's pattern.
    pattern: Option<String>,
    /// A phrase rule's phrases.
    phrases: Vec<String>,
    /// The longest phrase (bytes) of a phrase rule.
    longest: usize,
}

impl Policy {
    /// Parses the guardrails config from JSON bytes: `{"guardrails": [...], "stream_window": N}`.
    pub fn parse(json: &[u8]) -> Result<Policy, String> {
        let v: Value =
            serde_json::from_slice(json).map_err(|e| format!("guardrails config: {e}"))?;
        Policy::from_value(&v)
    }

    /// Parses the guardrails config from a JSON value.
    pub fn from_value(v: &Value) -> Result<Policy, String> {
        let Some(top) = v.as_object() else {
            return Err("guardrails config: must be an object".into());
        };
        keys(top, "guardrails config", &["guardrails", "stream_window"])?;
        let mut window = DEFAULT_STREAM_WINDOW;
        if let Some(w) = top.get("stream_window") {
            window = w
                .as_u64()
                .filter(|w| (MIN_STREAM_WINDOW as u64..=MAX_STREAM_WINDOW as u64).contains(w))
                .ok_or_else(|| {
                    format!("stream_window: must be an integer in {MIN_STREAM_WINDOW}..={MAX_STREAM_WINDOW}")
                })?
                as usize;
        }
        let list = match top.get("guardrails") {
            None => return Ok(Policy::default()),
            Some(Value::Array(a)) => a,
            Some(_) => return Err("guardrails: must be an array".into()),
        };
        if list.len() > MAX_GUARDRAILS {
            return Err(format!("guardrails: at most {MAX_GUARDRAILS} guardrails"));
        }
        let mut req: Vec<Parsed> = Vec::new();
        let mut resp: Vec<Parsed> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        for (gi, g) in list.iter().enumerate() {
            let path = format!("guardrails[{gi}]");
            let Some(g) = g.as_object() else {
                return Err(format!("{path}: must be an object"));
            };
            keys(g, &path, &["name", "rules", "on", "restore"])?;
            let name =
                str_field(g, &path, "name")?.ok_or_else(|| format!("{path}.name: required"))?;
            if !name_ok(name) {
                return Err(format!(
                    "{path}.name: 1-{MAX_NAME} characters of [A-Za-z0-9_-], got {name:?}"
                ));
            }
            if names.contains(&name) {
                return Err(format!("{path}.name: duplicate guardrail {name:?}"));
            }
            names.push(name);
            let restore = match g.get("restore") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(format!("{path}.restore: must be a boolean")),
            };
            let (mut on_req, mut on_resp) = (true, true);
            if let Some(on) = g.get("on") {
                let Some(on) = on.as_array().filter(|a| !a.is_empty()) else {
                    return Err(format!(
                        "{path}.on: must be a non-empty array of \"request\", \"response\""
                    ));
                };
                (on_req, on_resp) = (false, false);
                for (k, d) in on.iter().enumerate() {
                    match d.as_str() {
                        Some("request") => on_req = true,
                        Some("response") => on_resp = true,
                        _ => {
                            return Err(format!(
                                "{path}.on[{k}]: must be \"request\" or \"response\""
                            ))
                        }
                    }
                }
            }
            let rules = match g.get("rules") {
                Some(Value::Array(a)) if !a.is_empty() => a,
                _ => return Err(format!("{path}.rules: required, a non-empty array")),
            };
            if rules.len() > MAX_RULES {
                return Err(format!("{path}.rules: at most {MAX_RULES} rules"));
            }
            let mut rule_names: Vec<String> = Vec::new();
            for (ri, r) in rules.iter().enumerate() {
                let p = parse_rule(r, &format!("{path}.rules[{ri}]"), name, restore)?;
                if rule_names.contains(&p.rule.name) {
                    return Err(format!(
                        "{path}.rules[{ri}].name: duplicate rule name {:?} in guardrail {name:?} (name one of them)",
                        p.rule.name
                    ));
                }
                rule_names.push(p.rule.name.clone());
                if on_req {
                    req.push(p.clone());
                }
                if on_resp {
                    resp.push(p);
                }
            }
        }
        Ok(Policy {
            request: compile(req, false, window)?,
            response: compile(resp, true, window)?,
        })
    }

    /// The rules applied to requests.
    pub fn request(&self) -> &Guard {
        &self.request
    }

    /// The rules applied to answers.
    pub fn response(&self) -> &Guard {
        &self.response
    }

    /// No rule in either direction.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

fn parse_rule(r: &Value, path: &str, guardrail: &str, restore: bool) -> R<Parsed> {
    let Some(r) = r.as_object() else {
        return Err(format!("{path}: must be an object"));
    };
    let det_name =
        str_field(r, path, "detector")?.ok_or_else(|| format!("{path}.detector: required"))?;
    let detector = Detector::from_name(det_name).ok_or_else(|| {
        format!(
            "{path}.detector: unknown detector {det_name:?} (expected one of email, phone, card, iban, ssn, ip, secret, regex, phrase)"
        )
    })?;
    let act = str_field(r, path, "action")?.ok_or_else(|| format!("{path}.action: required"))?;
    let action = Action::from_name(act).ok_or_else(|| {
        format!("{path}.action: unknown action {act:?} (expected block, mask or monitor)")
    })?;
    let custom = matches!(detector, Detector::Regex | Detector::Phrase);
    let name = match str_field(r, path, "name")? {
        Some(n) if name_ok(n) => n.to_string(),
        Some(n) => {
            return Err(format!(
                "{path}.name: 1-{MAX_NAME} characters of [A-Za-z0-9_-], got {n:?}"
            ))
        }
        None if custom => return Err(format!("{path}.name: required for a {det_name} rule")),
        None => det_name.to_string(),
    };
    let tag = if custom {
        name.bytes()
            .map(|c| {
                if c == b'-' {
                    '_'
                } else {
                    char::from(c.to_ascii_uppercase())
                }
            })
            .collect()
    } else {
        detector.tag().to_string()
    };
    let mut longest = 0;
    let mut phrases = Vec::new();
    let pattern = match detector {
        Detector::Regex => {
            keys(r, path, &["detector", "action", "name", "pattern"])?;
            let p = str_field(r, path, "pattern")?
                .ok_or_else(|| format!("{path}.pattern: required for a regex rule"))?;
            if p.is_empty() || p.len() > MAX_PATTERN {
                return Err(format!("{path}.pattern: 1-{MAX_PATTERN} bytes"));
            }
            Some(p.to_string())
        }
        Detector::Phrase => {
            keys(r, path, &["detector", "action", "name", "phrases"])?;
            let Some(list) = r
                .get("phrases")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
            else {
                return Err(format!(
                    "{path}.phrases: required, a non-empty array of strings"
                ));
            };
            if list.len() > MAX_PHRASES {
                return Err(format!("{path}.phrases: at most {MAX_PHRASES} phrases"));
            }
            for (k, ph) in list.iter().enumerate() {
                let ph = ph
                    .as_str()
                    .filter(|s| !s.trim().is_empty() && s.len() <= MAX_PHRASE)
                    .ok_or_else(|| {
                        format!(
                            "{path}.phrases[{k}]: a non-blank string of at most {MAX_PHRASE} bytes"
                        )
                    })?;
                longest = longest.max(ph.len());
                phrases.push(ph.to_string());
            }
            None
        }
        _ => {
            keys(r, path, &["detector", "action", "name"])?;
            None
        }
    };
    let rule = Rule {
        guardrail: guardrail.to_string(),
        name,
        detector,
        action,
        restore,
        tag,
    };
    Ok(Parsed {
        rule,
        pattern,
        phrases,
        longest,
    })
}

fn build(pattern: &str) -> Result<regex::bytes::Regex, regex::Error> {
    regex::bytes::RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_LIMIT)
        .build()
}

fn compile(parsed: Vec<Parsed>, response: bool, window: usize) -> R<Guard> {
    let mut g = Guard {
        response,
        window,
        ..Guard::default()
    };
    let mut patterns: Vec<String> = Vec::new();
    let mut res = Vec::new();
    for (i, p) in parsed.into_iter().enumerate() {
        let idx = u16::try_from(i).map_err(|_| "guardrails: too many rules".to_string())?;
        if let Some(pat) = &p.pattern {
            let what = format!(
                "guardrails {:?} rule {:?}: pattern",
                p.rule.guardrail, p.rule.name
            );
            let re = build(pat).map_err(|e| format!("{what}: {e}"))?;
            if re.is_match(b"") {
                return Err(format!("{what}: matches the empty string"));
            }
            patterns.push(pat.clone());
            res.push((re, idx));
        } else if p.rule.detector == Detector::Phrase {
            // A phrase must fit the stream window whole (plus slack for runs of white space).
            g.window = g.window.max(p.longest + 16).min(MAX_STREAM_WINDOW);
            g.phrases
                .push((Phrases::new(p.phrases.iter().map(String::as_str)), idx));
        } else if let Some(b) = p.rule.detector.builtin_index() {
            g.mask |= 1 << b;
            g.by_det[b].push(idx);
        }
        g.rules.push(p.rule);
    }
    g.triggers = Triggers::new(g.mask);
    for (p, _) in &g.phrases {
        for c in p.start_bytes() {
            g.triggers.add_phrase_start(c);
        }
    }
    debug_assert_eq!(BUILTIN.len(), g.by_det.len());
    if !res.is_empty() {
        let set = if res.len() > 1 {
            Some(
                regex::bytes::RegexSetBuilder::new(&patterns)
                    .unicode(false)
                    .size_limit(SET_SIZE_LIMIT)
                    .dfa_size_limit(SET_SIZE_LIMIT)
                    .build()
                    .map_err(|e| format!("guardrails: the custom patterns together: {e}"))?,
            )
        } else {
            None
        };
        g.custom = Some(Custom { set, res });
    }
    Ok(g)
}
