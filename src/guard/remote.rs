//! External guardrails (issue 18 item 4): the wire formats of four HTTP guardrail services — the
//! callout LLMux sends with the text of a request or an answer, and the verdict read from the
//! service's answer. Pure: no proxy-wasm call, no clock (the caller passes the time to sign with).
//!
//! The services and the documents each format follows:
//!
//! - **OpenAI moderation** — `POST /v1/moderations` `{"model", "input": [texts]}` → `{"id",
//!   "model", "results": [{"flagged", "categories": {name: bool}, "category_scores": {...}}]}`,
//!   one result per input (<https://platform.openai.com/docs/api-reference/moderations>).
//! - **Webhook** — LLMux's own JSON contract (docs/guardrails.md "External guardrails"):
//!   `{"guardrail", "direction": "request"|"response", "texts": [...]}` → 2xx `{"action":
//!   "allow"|"block", "reason"}`.
//! - **AWS Bedrock ApplyGuardrail** — `POST /guardrail/{guardrailIdentifier}/version/
//!   {guardrailVersion}/apply` `{"source": "INPUT"|"OUTPUT", "content": [{"text": {"text"}}]}` →
//!   `{"action": "NONE"|"GUARDRAIL_INTERVENED", "actionReason", "outputs", "assessments":
//!   [{"topicPolicy": {"topics": [{"name", "type", "action"}]}, "contentPolicy": {"filters":
//!   [{"type", "confidence", "action"}]}, "wordPolicy", "sensitiveInformationPolicy": {
//!   "piiEntities": [{"type", "match", "action"}], "regexes": [{"name", "match", "action"}]},
//!   "contextualGroundingPolicy", ...}]}`, SigV4-signed for service `bedrock`
//!   (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ApplyGuardrail.html>;
//!   <https://docs.aws.amazon.com/bedrock/latest/userguide/guardrails-use-independent-api.html>).
//! - **Azure AI Content Safety** — `POST /contentsafety/text:analyze?api-version=2024-09-01`,
//!   header `Ocp-Apim-Subscription-Key`, `{"text", "categories", "blocklistNames",
//!   "haltOnBlocklistHit", "outputType": "FourSeverityLevels"}` (text: at most 10,000 Unicode
//!   code points) → `{"blocklistsMatch": [{"blocklistName", "blocklistItemId",
//!   "blocklistItemText"}], "categoriesAnalysis": [{"category", "severity"}]}`, severities 0, 2, 4,
//!   6 (<https://learn.microsoft.com/en-us/rest/api/contentsafety/text-operations/analyze-text>).
//!
//! A verdict's reason is a category, a policy name or the service's own (short, sanitised)
//! reason — never the text that was checked. Every buffer is capped: the text sent
//! ([`MAX_TEXT`], Azure [`AZURE_MAX_CHARS`]), the answer read ([`MAX_ANSWER`]), the reason kept
//! ([`MAX_REASON`]).

use serde_json::{json, Map, Value};

use crate::aws::sigv4::{self, Credentials};
use crate::config::fields::{check_keys, is_header_name, join, opt_str, opt_u32, ConfigError};
use crate::config::{Env, ProcessEnv};

/// At most this many bytes of text go in one callout (over all texts; the rest is not sent).
pub const MAX_TEXT: usize = super::json::MAX_REMOTE_TEXT;
/// Azure's `text` holds at most 10,000 Unicode code points; longer text is cut there.
pub const AZURE_MAX_CHARS: usize = 10_000;
/// A longer answer is not read: the verdict is [`Verdict::Failed`]. The caller need fetch no more
/// than `MAX_ANSWER + 1` bytes of the callout's answer.
pub const MAX_ANSWER: usize = 64 * 1024;
/// A block reason is cut to this many bytes.
pub const MAX_REASON: usize = 200;
/// Default `timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u32 = 1000;
const MAX_TIMEOUT_MS: u32 = 60_000;
const MAX_HEADERS: usize = 32;
const DEFAULT_OPENAI_MODEL: &str = "omni-moderation-latest";
const DEFAULT_AZURE_API_VERSION: &str = "2024-09-01";
/// Azure's harm categories (the default `categories`).
pub const AZURE_CATEGORIES: [&str; 4] = ["Hate", "SelfHarm", "Sexual", "Violence"];

/// The service a remote guardrail calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OpenAiModeration,
    Webhook,
    BedrockGuardrail,
    AzureContentSafety,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::OpenAiModeration,
        Kind::Webhook,
        Kind::BedrockGuardrail,
        Kind::AzureContentSafety,
    ];

    /// The config `type`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::OpenAiModeration => "openai_moderation",
            Kind::Webhook => "webhook",
            Kind::BedrockGuardrail => "bedrock_guardrail",
            Kind::AzureContentSafety => "azure_content_safety",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What a callout that gives no verdict means (no answer in time, a reset, a non-2xx status, an
/// answer that cannot be read): let the text through, or block it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Open,
    Closed,
}

/// Which text is checked: a client request (`INPUT`) or an answer (`OUTPUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Input,
    Output,
}

/// The per-service settings.
#[derive(Clone, PartialEq, Eq)]
pub enum Settings {
    OpenAiModeration {
        api_key: String,
        model: String,
    },
    Webhook,
    BedrockGuardrail {
        region: String,
        guardrail_id: String,
        guardrail_version: String,
        credentials: Credentials,
    },
    AzureContentSafety {
        api_key: String,
        categories: Vec<String>,
        /// Block when a category's severity is at least this (0–7; default 4).
        threshold: u8,
        /// Custom blocklists to match (`blocklistNames`); any match blocks.
        blocklists: Vec<String>,
    },
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // API keys are never printed (Credentials redacts its own secrets).
        match self {
            Settings::OpenAiModeration { model, .. } => f
                .debug_struct("OpenAiModeration")
                .field("api_key", &"<redacted>")
                .field("model", model)
                .finish(),
            Settings::Webhook => f.write_str("Webhook"),
            Settings::BedrockGuardrail {
                region,
                guardrail_id,
                guardrail_version,
                credentials,
            } => f
                .debug_struct("BedrockGuardrail")
                .field("region", region)
                .field("guardrail_id", guardrail_id)
                .field("guardrail_version", guardrail_version)
                .field("credentials", credentials)
                .finish(),
            Settings::AzureContentSafety {
                categories,
                threshold,
                blocklists,
                ..
            } => f
                .debug_struct("AzureContentSafety")
                .field("api_key", &"<redacted>")
                .field("categories", categories)
                .field("threshold", threshold)
                .field("blocklists", blocklists)
                .finish(),
        }
    }
}

/// One configured remote guardrail.
#[derive(Clone, PartialEq, Eq)]
pub struct Remote {
    /// The guardrail's name (sent to a webhook).
    pub name: String,
    pub kind: Kind,
    /// The Envoy cluster to call.
    pub cluster: String,
    /// `:authority` (and, for Bedrock, the signed `host`).
    pub authority: String,
    /// `:path`, query included.
    pub path: String,
    pub timeout_ms: u32,
    pub on_failure: Failure,
    /// Extra headers sent with every callout (config `headers`, names lower-cased).
    pub headers: Vec<(String, String)>,
    pub settings: Settings,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys, credentials and header values (they may carry tokens) are never printed.
        let mut d = f.debug_struct("Remote");
        d.field("name", &self.name)
            .field("kind", &self.kind)
            .field("cluster", &self.cluster)
            .field("authority", &self.authority)
            .field("path", &self.path)
            .field("timeout_ms", &self.timeout_ms)
            .field("on_failure", &self.on_failure)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            );
        d.field("settings", &self.settings);
        d.finish()
    }
}

/// One callout: the headers (pseudo-headers `:method`, `:path`, `:authority` first) and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a remote guardrail said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// `reason`: a category, a policy or the service's reason — never the checked text.
    Block {
        reason: String,
    },
    /// No verdict (timeout, reset, non-2xx, unreadable answer): [`Remote::on_failure`] decides.
    Failed(String),
}

type R<T> = Result<T, String>;

fn ce(e: ConfigError) -> String {
    format!("{}: {}", e.path, e.message)
}

fn bad(path: &str, key: &str, msg: impl std::fmt::Display) -> String {
    format!("{}: {msg}", join(path, key))
}

/// Common keys of every `remote` object.
const COMMON: [&str; 7] = [
    "type",
    "cluster",
    "authority",
    "timeout_ms",
    "on_failure",
    "headers",
    "path",
];

impl Remote {
    /// Parses one guardrail entry that has a `remote` object: `v` is the entry (its `name` and
    /// `remote` are read, its other fields — `on`, selectors — are the caller's), `path` its
    /// place (`guardrails[2]`). Errors name the field: `guardrails[2].remote.cluster: required`.
    /// `*_env` fields read the process environment (the VM's `environment_variables`).
    pub fn parse(v: &Value, path: &str) -> Result<Remote, String> {
        Remote::parse_with_env(v, path, &ProcessEnv)
    }

    /// [`Remote::parse`] with the environment given.
    pub fn parse_with_env(v: &Value, path: &str, env: &dyn Env) -> Result<Remote, String> {
        let entry = v
            .as_object()
            .ok_or_else(|| format!("{path}: must be an object"))?;
        let name = opt_str(entry, path, "name")
            .map_err(ce)?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(path, "name", "required"))?
            .to_string();
        let rpath = join(path, "remote");
        let o = entry
            .get("remote")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("{rpath}: must be an object"))?;
        let type_name = opt_str(o, &rpath, "type")
            .map_err(ce)?
            .ok_or_else(|| bad(&rpath, "type", "required"))?;
        let kind = Kind::from_name(type_name).ok_or_else(|| {
            bad(
                &rpath,
                "type",
                format!(
                    "unknown remote guardrail type `{type_name}`; known: {}",
                    Kind::ALL.map(Kind::name).join(", ")
                ),
            )
        })?;
        let own: &[&str] = match kind {
            Kind::OpenAiModeration => &["api_key", "api_key_env", "model"],
            Kind::Webhook => &[],
            Kind::BedrockGuardrail => &[
                "region",
                "guardrail_id",
                "guardrail_version",
                "aws_access_key_id",
                "aws_access_key_id_env",
                "aws_secret_access_key",
                "aws_secret_access_key_env",
                "aws_session_token",
                "aws_session_token_env",
            ],
            Kind::AzureContentSafety => &[
                "api_key",
                "api_key_env",
                "categories",
                "threshold",
                "blocklists",
                "api_version",
            ],
        };
        let allowed: Vec<&str> = COMMON.iter().chain(own).copied().collect();
        check_keys(o, &rpath, &allowed).map_err(ce)?;

        let cluster = opt_str(o, &rpath, "cluster")
            .map_err(ce)?
            .filter(|c| !c.is_empty())
            .ok_or_else(|| bad(&rpath, "cluster", "required (the Envoy cluster name)"))?
            .to_string();
        let timeout_ms = opt_u32(o, &rpath, "timeout_ms")
            .map_err(ce)?
            .unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(bad(
                &rpath,
                "timeout_ms",
                format!("must be from 1 to {MAX_TIMEOUT_MS}"),
            ));
        }
        let on_failure = match opt_str(o, &rpath, "on_failure").map_err(ce)? {
            None | Some("closed") => Failure::Closed,
            Some("open") => Failure::Open,
            Some(_) => return Err(bad(&rpath, "on_failure", "must be `open` or `closed`")),
        };
        let authority = match opt_str(o, &rpath, "authority").map_err(ce)? {
            Some(a) if a.is_empty() || !a.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(bad(
                    &rpath,
                    "authority",
                    "must be a host name (host[:port])",
                ))
            }
            a => a.map(str::to_string),
        };
        let path_field = match opt_str(o, &rpath, "path").map_err(ce)? {
            Some(p) if !p.starts_with('/') || !p.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(bad(&rpath, "path", "must start with `/` (no spaces)"))
            }
            p => p.map(str::to_string),
        };

        let (settings, authority, path) = match kind {
            Kind::OpenAiModeration => {
                let api_key = api_key(o, &rpath, env)?
                    .ok_or_else(|| bad(&rpath, "api_key", "required (or `api_key_env`)"))?;
                let model = opt_str(o, &rpath, "model")
                    .map_err(ce)?
                    .unwrap_or(DEFAULT_OPENAI_MODEL)
                    .to_string();
                (
                    Settings::OpenAiModeration { api_key, model },
                    authority.unwrap_or_else(|| "api.openai.com".into()),
                    path_field.unwrap_or_else(|| "/v1/moderations".into()),
                )
            }
            Kind::Webhook => (
                Settings::Webhook,
                authority.unwrap_or_else(|| cluster.clone()),
                path_field.ok_or_else(|| bad(&rpath, "path", "required for a webhook"))?,
            ),
            Kind::BedrockGuardrail => {
                if path_field.is_some() {
                    return Err(bad(
                        &rpath,
                        "path",
                        "not for bedrock_guardrail (the path is made of guardrail_id and guardrail_version)",
                    ));
                }
                let (s, path) = bedrock(o, &rpath, env)?;
                let Settings::BedrockGuardrail { region, .. } = &s else {
                    return Err(format!("{rpath}: internal error"));
                };
                let authority =
                    authority.unwrap_or_else(|| format!("bedrock-runtime.{region}.amazonaws.com"));
                (s, authority, path)
            }
            Kind::AzureContentSafety => {
                if path_field.is_some() {
                    return Err(bad(
                        &rpath,
                        "path",
                        "not for azure_content_safety (set `api_version` if needed)",
                    ));
                }
                let authority = authority.ok_or_else(|| {
                    bad(
                        &rpath,
                        "authority",
                        "required (your resource, e.g. `x.cognitiveservices.azure.com`)",
                    )
                })?;
                let (s, path) = azure(o, &rpath, env)?;
                (s, authority, path)
            }
        };
        let headers = headers(o, &rpath, kind)?;
        Ok(Remote {
            name,
            kind,
            cluster,
            authority,
            path,
            timeout_ms,
            on_failure,
            headers,
            settings,
        })
    }

    /// The callout for these texts (from [`super::json::request_texts`] /
    /// [`super::json::answer_texts`]); `source` says whether they are a request's or an
    /// answer's. At most [`MAX_TEXT`] bytes of text are sent. With no text there is nothing to
    /// check: the caller should not call (the verdict is `Allow`). `now_unix` signs Bedrock
    /// callouts (unused by the others).
    pub fn call(&self, texts: &[String], source: Source, now_unix: u64) -> Call {
        let texts = capped(texts, MAX_TEXT);
        let mut headers: Vec<(String, String)> = vec![
            (":method".into(), "POST".into()),
            (":path".into(), self.path.clone()),
            (":authority".into(), self.authority.clone()),
            ("content-type".into(), "application/json".into()),
        ];
        let body = match &self.settings {
            Settings::OpenAiModeration { api_key, model } => {
                headers.push(("authorization".into(), format!("Bearer {api_key}")));
                json!({ "model": model, "input": texts })
            }
            Settings::Webhook => json!({
                "guardrail": self.name,
                "direction": match source {
                    Source::Input => "request",
                    Source::Output => "response",
                },
                "texts": texts,
            }),
            Settings::BedrockGuardrail { .. } => json!({
                "source": match source {
                    Source::Input => "INPUT",
                    Source::Output => "OUTPUT",
                },
                "content": texts
                    .iter()
                    .map(|t| json!({ "text": { "text": t } }))
                    .collect::<Vec<_>>(),
            }),
            Settings::AzureContentSafety {
                api_key,
                categories,
                blocklists,
                ..
            } => {
                headers.push(("ocp-apim-subscription-key".into(), api_key.clone()));
                let mut b = json!({
                    "text": azure_text(&texts),
                    "categories": categories,
                    "outputType": "FourSeverityLevels",
                });
                if !blocklists.is_empty() {
                    b["blocklistNames"] = json!(blocklists);
                    b["haltOnBlocklistHit"] = json!(false);
                }
                b
            }
        };
        let body = body.to_string().into_bytes();
        if let Settings::BedrockGuardrail {
            region,
            credentials,
            ..
        } = &self.settings
        {
            let req = sigv4::Request {
                method: "POST",
                host: &self.authority,
                path: &self.path,
                query: "",
                headers: &[],
                body: &body,
            };
            headers.extend(sigv4::sign(&req, credentials, region, "bedrock", now_unix));
        }
        headers.extend(self.headers.iter().cloned());
        Call { headers, body }
    }

    /// The verdict from the callout's answer: `status` is its HTTP status, 0 when there was no
    /// answer (timeout, reset, unknown cluster).
    pub fn verdict(&self, status: u16, body: &[u8]) -> Verdict {
        if status == 0 {
            return Verdict::Failed("no answer (timeout or connection failure)".into());
        }
        if !(200..300).contains(&status) {
            return Verdict::Failed(format!("HTTP {status}"));
        }
        if body.len() > MAX_ANSWER {
            return Verdict::Failed(format!("answer larger than {MAX_ANSWER} bytes"));
        }
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return Verdict::Failed(format!("unreadable answer: {e}")),
        };
        match &self.settings {
            Settings::OpenAiModeration { .. } => openai_verdict(&v),
            Settings::Webhook => webhook_verdict(&v),
            Settings::BedrockGuardrail { .. } => bedrock_verdict(&v),
            Settings::AzureContentSafety { threshold, .. } => azure_verdict(&v, *threshold),
        }
    }

    /// Whether a verdict stops the text: a block, or a failure when `on_failure` is `closed`.
    pub fn blocks(&self, v: &Verdict) -> bool {
        match v {
            Verdict::Allow => false,
            Verdict::Block { .. } => true,
            Verdict::Failed(_) => self.on_failure == Failure::Closed,
        }
    }
}

/// The texts, empty ones left out, at most `max` bytes in all (the one crossing it cut at a
/// character boundary).
fn capped(texts: &[String], max: usize) -> Vec<&str> {
    let mut out = Vec::with_capacity(texts.len());
    let mut left = max;
    for t in texts {
        if left == 0 {
            break;
        }
        if t.is_empty() {
            continue;
        }
        let mut cut = t.len().min(left);
        while !t.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            break;
        }
        out.push(&t[..cut]);
        left -= cut;
    }
    out
}

/// Azure analyses one text: the texts joined by blank lines, cut at [`AZURE_MAX_CHARS`].
fn azure_text(texts: &[&str]) -> String {
    let mut s = String::new();
    let mut chars = 0;
    'outer: for (i, t) in texts.iter().enumerate() {
        if i > 0 {
            if chars + 2 > AZURE_MAX_CHARS {
                break;
            }
            s.push_str("\n\n");
            chars += 2;
        }
        for c in t.chars() {
            if chars == AZURE_MAX_CHARS {
                break 'outer;
            }
            s.push(c);
            chars += 1;
        }
    }
    s
}

/// A reason as the service gave it: control characters dropped, at most [`MAX_REASON`] bytes.
fn clean_reason(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_REASON {
            break;
        }
        out.push(c);
    }
    out.trim().to_string()
}

/// Names joined by `,`, each once, at most [`MAX_REASON`] bytes; `fallback` when none.
fn reason_of(names: Vec<String>, fallback: &str) -> String {
    let mut seen: Vec<String> = Vec::new();
    for n in names {
        let n = clean_reason(&n);
        if !n.is_empty() && !seen.contains(&n) {
            seen.push(n);
        }
    }
    if seen.is_empty() {
        return fallback.to_string();
    }
    clean_reason(&seen.join(","))
}

/// OpenAI: blocked when a result is `flagged`; the reason is the flagged categories.
fn openai_verdict(v: &Value) -> Verdict {
    let Some(results) = v.get("results").and_then(Value::as_array) else {
        return Verdict::Failed("unreadable answer: no `results`".into());
    };
    if results.is_empty() {
        return Verdict::Failed("unreadable answer: empty `results`".into());
    }
    let mut flagged = false;
    let mut cats = Vec::new();
    for r in results {
        match r.get("flagged").and_then(Value::as_bool) {
            Some(true) => {
                flagged = true;
                if let Some(c) = r.get("categories").and_then(Value::as_object) {
                    cats.extend(
                        c.iter()
                            .filter(|(_, on)| on.as_bool() == Some(true))
                            .map(|(k, _)| k.clone()),
                    );
                }
            }
            Some(false) => {}
            None => return Verdict::Failed("unreadable answer: a result without `flagged`".into()),
        }
    }
    if flagged {
        Verdict::Block {
            reason: reason_of(cats, "flagged"),
        }
    } else {
        Verdict::Allow
    }
}

/// Webhook: `{"action": "allow"|"block", "reason"}`; anything else is a failure.
fn webhook_verdict(v: &Value) -> Verdict {
    match v.get("action").and_then(Value::as_str) {
        Some("allow") => Verdict::Allow,
        Some("block") => {
            let reason = v
                .get("reason")
                .and_then(Value::as_str)
                .map(clean_reason)
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "blocked by webhook".into());
            Verdict::Block { reason }
        }
        _ => Verdict::Failed("unreadable answer: `action` must be `allow` or `block`".into()),
    }
}

/// Bedrock: `GUARDRAIL_INTERVENED` blocks; the reason names the policies that acted (their
/// `type`/`name`, never `match`), else "guardrail intervened".
fn bedrock_verdict(v: &Value) -> Verdict {
    match v.get("action").and_then(Value::as_str) {
        Some("NONE") => Verdict::Allow,
        Some("GUARDRAIL_INTERVENED") => {
            let mut names = Vec::new();
            for a in v
                .get("assessments")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(a) = a.as_object() else { continue };
                for (policy, body) in a {
                    if !policy.ends_with("Policy") {
                        continue;
                    }
                    let before = names.len();
                    policy_items(policy, body, &mut names, 0);
                    if names.len() == before && body.as_object().is_some_and(|b| !b.is_empty()) {
                        names.push(policy.clone());
                    }
                }
            }
            Verdict::Block {
                reason: reason_of(names, "guardrail intervened"),
            }
        }
        _ => Verdict::Failed(
            "unreadable answer: `action` must be `NONE` or `GUARDRAIL_INTERVENED`".into(),
        ),
    }
}

/// The items of a Bedrock policy assessment that acted (`action` other than `NONE`):
/// `policy:name` (a topic, a regex) or `policy:type` (a filter, a PII entity). Nested objects and arrays are walked (a few levels).
fn policy_items(policy: &str, v: &Value, out: &mut Vec<String>, depth: u32) {
    if depth > 4 || out.len() >= 32 {
        return;
    }
    match v {
        Value::Array(a) => {
            for x in a {
                policy_items(policy, x, out, depth + 1);
            }
        }
        Value::Object(o) => {
            let acted = o
                .get("action")
                .and_then(Value::as_str)
                .is_some_and(|a| a != "NONE")
                && o.get("detected").and_then(Value::as_bool) != Some(false);
            let label = o
                .get("name")
                .or_else(|| o.get("type"))
                .and_then(Value::as_str);
            if acted {
                out.push(match label {
                    Some(l) => format!("{policy}:{l}"),
                    None => policy.to_string(),
                });
                return;
            }
            for (k, x) in o {
                // `match`, `regex`, `text`: the checked text or the config's pattern.
                if !matches!(k.as_str(), "match" | "regex" | "text") {
                    policy_items(policy, x, out, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// Azure: blocked when a category's severity reaches the threshold, or a blocklist matched.
fn azure_verdict(v: &Value, threshold: u8) -> Verdict {
    let Some(cats) = v.get("categoriesAnalysis").and_then(Value::as_array) else {
        return Verdict::Failed("unreadable answer: no `categoriesAnalysis`".into());
    };
    let mut names = Vec::new();
    for c in cats {
        let (Some(cat), Some(sev)) = (
            c.get("category").and_then(Value::as_str),
            c.get("severity").and_then(Value::as_u64),
        ) else {
            return Verdict::Failed("unreadable answer: a category without severity".into());
        };
        if sev >= u64::from(threshold) {
            names.push(cat.to_string());
        }
    }
    for m in v
        .get("blocklistsMatch")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        // `blocklistItemText` is the matched term: not put in the reason.
        let name = m
            .get("blocklistName")
            .and_then(Value::as_str)
            .unwrap_or("?");
        names.push(format!("blocklist:{name}"));
    }
    if names.is_empty() {
        Verdict::Allow
    } else {
        Verdict::Block {
            reason: reason_of(names, "blocked"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Config pieces
// ---------------------------------------------------------------------------------------------

/// `api_key` (inline) or `api_key_env` (an environment variable), not both — as providers.
fn api_key(o: &Map<String, Value>, path: &str, env: &dyn Env) -> R<Option<String>> {
    let inline = opt_str(o, path, "api_key").map_err(ce)?;
    let var = opt_str(o, path, "api_key_env").map_err(ce)?;
    match (inline, var) {
        (Some(_), Some(_)) => Err(bad(
            path,
            "api_key_env",
            "set either `api_key` or `api_key_env`, not both",
        )),
        (Some(""), None) => Err(bad(path, "api_key", "must not be empty")),
        (Some(k), None) => Ok(Some(k.to_string())),
        (None, Some(var)) => match env.var(var) {
            Some(k) if !k.is_empty() => Ok(Some(k)),
            _ => Err(bad(path, "api_key_env", format!(
                "environment variable `{var}` is not set in the VM (list it in vm_config.environment_variables)"
            ))),
        },
        (None, None) => Ok(None),
    }
}

/// `headers`: name → value, names lower-cased; the ones LLMux sets for the kind are refused.
fn headers(o: &Map<String, Value>, path: &str, kind: Kind) -> R<Vec<(String, String)>> {
    let hp = join(path, "headers");
    let Some(h) = o.get("headers").filter(|h| !h.is_null()) else {
        return Ok(Vec::new());
    };
    let h = h
        .as_object()
        .ok_or_else(|| format!("{hp}: must be an object of header name → value"))?;
    if h.len() > MAX_HEADERS {
        return Err(format!("{hp}: at most {MAX_HEADERS} headers"));
    }
    let mut out = Vec::with_capacity(h.len());
    for (k, v) in h {
        let kp = format!("{hp}.{k}");
        let lk = k.to_ascii_lowercase();
        if !is_header_name(&lk) {
            return Err(format!("{kp}: not a valid header name"));
        }
        let reserved = matches!(lk.as_str(), "content-type" | "content-length" | "host")
            || match kind {
                Kind::OpenAiModeration => lk == "authorization",
                Kind::Webhook => false,
                Kind::BedrockGuardrail => lk == "authorization" || lk.starts_with("x-amz-"),
                Kind::AzureContentSafety => lk == "ocp-apim-subscription-key",
            };
        if reserved {
            return Err(format!("{kp}: set by LLMux for {}", kind.name()));
        }
        let v = v
            .as_str()
            .filter(|v| !v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0))
            .ok_or_else(|| format!("{kp}: must be a string (one line)"))?;
        out.push((lk, v.to_string()));
    }
    Ok(out)
}

/// The AWS credential fields and the standard environment variable each defaults to (the
/// provider's `parse_aws` shape, src/config/provider.rs).
const AWS_KEYS: [(&str, &str); 3] = [
    ("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
    ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    ("aws_session_token", "AWS_SESSION_TOKEN"),
];

/// Bedrock: `region`, `guardrail_id`, `guardrail_version` and SigV4 credentials (each inline,
/// from its `*_env` variable, or from the standard `AWS_*` one); the path.
fn bedrock(o: &Map<String, Value>, path: &str, env: &dyn Env) -> R<(Settings, String)> {
    let region = opt_str(o, path, "region")
        .map_err(ce)?
        .ok_or_else(|| bad(path, "region", "required (e.g. `us-east-1`)"))?;
    if region.is_empty()
        || !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad(
            path,
            "region",
            "must be an AWS region name like `us-east-1`",
        ));
    }
    // guardrailIdentifier: `[a-z0-9]+` or a guardrail ARN, at most 2048 characters.
    let id = opt_str(o, path, "guardrail_id")
        .map_err(ce)?
        .ok_or_else(|| bad(path, "guardrail_id", "required"))?;
    if id.is_empty()
        || id.len() > 2048
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'-'))
    {
        return Err(bad(
            path,
            "guardrail_id",
            "must be a guardrail id (`[a-z0-9]+`) or its ARN",
        ));
    }
    // guardrailVersion: `[1-9][0-9]{0,7}` or `DRAFT`; a JSON number is taken too.
    let version = match o.get("guardrail_version") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        None | Some(Value::Null) => return Err(bad(path, "guardrail_version", "required")),
        Some(_) => return Err(bad(path, "guardrail_version", "must be a string")),
    };
    let version_ok = version == "DRAFT"
        || (!version.is_empty()
            && version.len() <= 8
            && !version.starts_with('0')
            && version.bytes().all(|b| b.is_ascii_digit()));
    if !version_ok {
        return Err(bad(
            path,
            "guardrail_version",
            "must be a version number (`1`) or `DRAFT`",
        ));
    }
    let mut values: [Option<String>; 3] = [None, None, None];
    for (i, (key, default_env)) in AWS_KEYS.iter().enumerate() {
        let env_key = format!("{key}_env");
        values[i] = match (
            opt_str(o, path, key).map_err(ce)?,
            opt_str(o, path, &env_key).map_err(ce)?,
        ) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    path,
                    &env_key,
                    format!("set either `{key}` or `{env_key}`, not both"),
                ))
            }
            (Some(""), None) => return Err(bad(path, key, "must not be empty")),
            (Some(v), None) => Some(v.to_string()),
            (None, Some(var)) => match env.var(var) {
                Some(v) if !v.is_empty() => Some(v),
                _ => return Err(bad(path, &env_key, format!(
                    "environment variable `{var}` is not set in the VM (list it in vm_config.environment_variables)"
                ))),
            },
            (None, None) => env.var(default_env).filter(|v| !v.is_empty()),
        };
    }
    let [id_key, secret, token] = values;
    let credentials = match (id_key, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Credentials {
            access_key_id,
            secret_access_key,
            session_token: token,
        },
        (None, _) => {
            return Err(bad(
                path,
                "aws_access_key_id",
                "required (or `aws_access_key_id_env`, default AWS_ACCESS_KEY_ID)",
            ))
        }
        (Some(_), None) => {
            return Err(bad(
                path,
                "aws_secret_access_key",
                "required (or `aws_secret_access_key_env`, default AWS_SECRET_ACCESS_KEY)",
            ))
        }
    };
    // One path segment each (an ARN's `:` and `/` percent-encoded), as the Bedrock provider
    // sends model ids; the signer encodes the path once more (sigv4.rs).
    let req_path = format!(
        "/guardrail/{}/version/{}/apply",
        sigv4::uri_encode(id, true),
        sigv4::uri_encode(&version, true)
    );
    Ok((
        Settings::BedrockGuardrail {
            region: region.to_string(),
            guardrail_id: id.to_string(),
            guardrail_version: version,
            credentials,
        },
        req_path,
    ))
}

/// Azure: the key, `categories` (default all four), `threshold` (0–7, default 4),
/// `blocklists`, `api_version`; the path.
fn azure(o: &Map<String, Value>, path: &str, env: &dyn Env) -> R<(Settings, String)> {
    let api_key = api_key(o, path, env)?
        .ok_or_else(|| bad(path, "api_key", "required (or `api_key_env`)"))?;
    let list = |key: &str, max: usize| -> R<Option<Vec<String>>> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) if a.len() <= max => a
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .filter(|s| !s.is_empty() && s.len() <= 128)
                        .map(str::to_string)
                        .ok_or_else(|| format!("{}[{i}]: must be a name", join(path, key)))
                })
                .collect::<R<Vec<_>>>()
                .map(Some),
            Some(_) => Err(bad(
                path,
                key,
                format!("must be an array of at most {max} names"),
            )),
        }
    };
    let categories = match list("categories", AZURE_CATEGORIES.len())? {
        None => AZURE_CATEGORIES.iter().map(|s| s.to_string()).collect(),
        Some(c) => {
            if c.is_empty() {
                return Err(bad(path, "categories", "must not be empty"));
            }
            for (i, name) in c.iter().enumerate() {
                if !AZURE_CATEGORIES.contains(&name.as_str()) {
                    return Err(format!(
                        "{}[{i}]: unknown category `{name}`; known: {}",
                        join(path, "categories"),
                        AZURE_CATEGORIES.join(", ")
                    ));
                }
            }
            c
        }
    };
    let threshold = match opt_u32(o, path, "threshold").map_err(ce)? {
        None => 4,
        Some(t @ 0..=7) => t as u8,
        Some(_) => return Err(bad(path, "threshold", "must be a severity from 0 to 7")),
    };
    let blocklists = list("blocklists", 10)?.unwrap_or_default();
    let version = opt_str(o, path, "api_version")
        .map_err(ce)?
        .unwrap_or(DEFAULT_AZURE_API_VERSION);
    if version.is_empty()
        || !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(bad(path, "api_version", "must look like `2024-09-01`"));
    }
    Ok((
        Settings::AzureContentSafety {
            api_key,
            categories,
            threshold,
            blocklists,
        },
        format!("/contentsafety/text:analyze?api-version={version}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct MapEnv(Vec<(&'static str, &'static str)>);
    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn parse(v: Value) -> Remote {
        Remote::parse_with_env(&v, "guardrails[2]", &MapEnv(vec![])).unwrap()
    }

    fn parse_err(v: Value) -> String {
        Remote::parse_with_env(&v, "guardrails[2]", &MapEnv(vec![])).unwrap_err()
    }

    fn h<'a>(c: &'a Call, name: &str) -> Option<&'a str> {
        c.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn body(c: &Call) -> Value {
        serde_json::from_slice(&c.body).unwrap()
    }

    fn texts(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    fn openai() -> Remote {
        parse(json!({"name": "moderation", "on": ["request"], "remote": {
            "type": "openai_moderation", "cluster": "openai", "api_key": "sk-test",
            "timeout_ms": 500, "on_failure": "open"}}))
    }

    fn webhook() -> Remote {
        parse(
            json!({"name": "policy-hook", "remote": {"type": "webhook", "cluster": "hook",
            "path": "/check", "headers": {"Authorization": "Bearer x"}, "timeout_ms": 300,
            "on_failure": "closed"}}),
        )
    }

    fn bedrock_remote(token: Option<&str>) -> Remote {
        parse(
            json!({"name": "bedrock", "remote": {"type": "bedrock_guardrail",
            "cluster": "bedrock", "region": "us-east-1", "guardrail_id": "gr123",
            "guardrail_version": "1", "aws_access_key_id": "AKIDEXAMPLE",
            "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "aws_session_token": token}}),
        )
    }

    fn azure_remote() -> Remote {
        parse(
            json!({"name": "azure", "remote": {"type": "azure_content_safety",
            "cluster": "azure_cs", "authority": "x.cognitiveservices.azure.com",
            "api_key": "az-key", "categories": ["Hate", "Violence", "Sexual", "SelfHarm"],
            "threshold": 4}}),
        )
    }

    #[test]
    fn config_defaults_and_fields() {
        let r = openai();
        assert_eq!(r.kind, Kind::OpenAiModeration);
        assert_eq!(r.name, "moderation");
        assert_eq!(r.cluster, "openai");
        assert_eq!(r.authority, "api.openai.com");
        assert_eq!(r.path, "/v1/moderations");
        assert_eq!(r.timeout_ms, 500);
        assert_eq!(r.on_failure, Failure::Open);
        assert_eq!(
            r.settings,
            Settings::OpenAiModeration {
                api_key: "sk-test".into(),
                model: "omni-moderation-latest".into()
            }
        );
        let w = webhook();
        assert_eq!((w.authority.as_str(), w.path.as_str()), ("hook", "/check"));
        assert_eq!(w.headers, [("authorization".into(), "Bearer x".into())]);
        assert_eq!(w.on_failure, Failure::Closed);
        let b = bedrock_remote(None);
        assert_eq!(b.authority, "bedrock-runtime.us-east-1.amazonaws.com");
        assert_eq!(b.path, "/guardrail/gr123/version/1/apply");
        assert_eq!(b.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(b.on_failure, Failure::Closed);
        let a = azure_remote();
        assert_eq!(a.path, "/contentsafety/text:analyze?api-version=2024-09-01");
        // An ARN and a numeric version; credentials from the standard variables.
        let env = MapEnv(vec![
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "SECRET"),
        ]);
        let arn = Remote::parse_with_env(
            &json!({"name": "g", "remote": {"type": "bedrock_guardrail", "cluster": "c",
                "region": "eu-west-1", "authority": "bedrock.internal:8443",
                "guardrail_id": "arn:aws:bedrock:eu-west-1:123456789012:guardrail/abc",
                "guardrail_version": 12}}),
            "g",
            &env,
        )
        .unwrap();
        assert_eq!(
            arn.path,
            "/guardrail/arn%3Aaws%3Abedrock%3Aeu-west-1%3A123456789012%3Aguardrail%2Fabc/version/12/apply"
        );
        assert_eq!(arn.authority, "bedrock.internal:8443");
        let Settings::BedrockGuardrail { credentials, .. } = &arn.settings else {
            panic!()
        };
        assert_eq!(credentials.access_key_id, "AKID");
        assert!(credentials.session_token.is_none());
        // api_key_env.
        let env = MapEnv(vec![("OAI", "sk-env")]);
        let r = Remote::parse_with_env(
            &json!({"name": "m", "remote": {"type": "openai_moderation", "cluster": "c",
                "api_key_env": "OAI", "model": "text-moderation-latest", "path": "/openai/v1/moderations"}}),
            "g",
            &env,
        )
        .unwrap();
        assert_eq!(r.path, "/openai/v1/moderations");
        assert_eq!(
            r.settings,
            Settings::OpenAiModeration {
                api_key: "sk-env".into(),
                model: "text-moderation-latest".into()
            }
        );
        // Secrets stay out of Debug.
        let d = format!(
            "{:?} {:?} {:?} {:?}",
            openai(),
            webhook(),
            bedrock_remote(Some("tok")),
            azure_remote()
        );
        for secret in ["sk-test", "Bearer x", "wJalr", "tok\"", "az-key"] {
            assert!(!d.contains(secret), "{secret} in {d}");
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let cases: Vec<(Value, &str)> = vec![
            (json!([]), "guardrails[2]: must be an object"),
            (json!({"remote": {}}), "guardrails[2].name: required"),
            (
                json!({"name": "n"}),
                "guardrails[2].remote: must be an object",
            ),
            (
                json!({"name": "n", "remote": {}}),
                "guardrails[2].remote.type: required",
            ),
            (
                json!({"name": "n", "remote": {"type": "x"}}),
                "guardrails[2].remote.type: unknown remote guardrail type `x`",
            ),
            (
                json!({"name": "n", "remote": {"type": "webhook", "path": "/p"}}),
                "guardrails[2].remote.cluster: required",
            ),
            (
                json!({"name": "n", "remote": {"type": "webhook", "cluster": "c"}}),
                "guardrails[2].remote.path: required",
            ),
            (
                json!({"name": "n", "remote": {"type": "webhook", "cluster": "c", "path": "x"}}),
                "guardrails[2].remote.path: must start",
            ),
            (
                json!({"name": "n", "remote": {"type": "webhook", "cluster": "c", "path": "/p", "api_key": "k"}}),
                "guardrails[2].remote.api_key: unknown field",
            ),
            (
                json!({"name": "n", "remote": {"type": "webhook", "cluster": "c", "path": "/p", "timeout_ms": 0}}),
                "guardrails[2].remote.timeout_ms: must be from 1",
            ),
            (
                json!({"name": "n", "remote": {"type": "webhook", "cluster": "c", "path": "/p", "on_failure": "maybe"}}),
                "guardrails[2].remote.on_failure:",
            ),
            (
                json!({"name": "n", "remote": {"type": "webhook", "cluster": "c", "path": "/p", "headers": {"a b": "x"}}}),
                "guardrails[2].remote.headers.a b: not a valid header name",
            ),
            (
                json!({"name": "n", "remote": {"type": "webhook", "cluster": "c", "path": "/p", "headers": {"x": "a\r\nb"}}}),
                "guardrails[2].remote.headers.x: must be a string",
            ),
            (
                json!({"name": "n", "remote": {"type": "webhook", "cluster": "c", "path": "/p", "headers": {"Content-Type": "x"}}}),
                "guardrails[2].remote.headers.Content-Type: set by LLMux",
            ),
            (
                json!({"name": "n", "remote": {"type": "openai_moderation", "cluster": "c"}}),
                "guardrails[2].remote.api_key: required",
            ),
            (
                json!({"name": "n", "remote": {"type": "openai_moderation", "cluster": "c", "api_key": "k", "headers": {"authorization": "x"}}}),
                "guardrails[2].remote.headers.authorization: set by LLMux",
            ),
            (
                json!({"name": "n", "remote": {"type": "openai_moderation", "cluster": "c", "api_key_env": "NOPE"}}),
                "guardrails[2].remote.api_key_env: environment variable `NOPE`",
            ),
            (
                json!({"name": "n", "remote": {"type": "bedrock_guardrail", "cluster": "c"}}),
                "guardrails[2].remote.region: required",
            ),
            (
                json!({"name": "n", "remote": {"type": "bedrock_guardrail", "cluster": "c", "region": "US"}}),
                "guardrails[2].remote.region: must be",
            ),
            (
                json!({"name": "n", "remote": {"type": "bedrock_guardrail", "cluster": "c", "region": "us-east-1"}}),
                "guardrails[2].remote.guardrail_id: required",
            ),
            (
                json!({"name": "n", "remote": {"type": "bedrock_guardrail", "cluster": "c", "region": "us-east-1", "guardrail_id": "a b"}}),
                "guardrails[2].remote.guardrail_id: must be",
            ),
            (
                json!({"name": "n", "remote": {"type": "bedrock_guardrail", "cluster": "c", "region": "us-east-1", "guardrail_id": "g"}}),
                "guardrails[2].remote.guardrail_version: required",
            ),
            (
                json!({"name": "n", "remote": {"type": "bedrock_guardrail", "cluster": "c", "region": "us-east-1", "guardrail_id": "g", "guardrail_version": "01"}}),
                "guardrails[2].remote.guardrail_version: must be",
            ),
            (
                json!({"name": "n", "remote": {"type": "bedrock_guardrail", "cluster": "c", "region": "us-east-1", "guardrail_id": "g", "guardrail_version": "DRAFT"}}),
                "guardrails[2].remote.aws_access_key_id: required",
            ),
            (
                json!({"name": "n", "remote": {"type": "bedrock_guardrail", "cluster": "c", "region": "us-east-1", "guardrail_id": "g", "guardrail_version": "1", "aws_access_key_id": "a"}}),
                "guardrails[2].remote.aws_secret_access_key: required",
            ),
            (
                json!({"name": "n", "remote": {"type": "bedrock_guardrail", "cluster": "c", "region": "us-east-1", "guardrail_id": "g", "guardrail_version": "1", "aws_access_key_id": "a", "aws_access_key_id_env": "A"}}),
                "guardrails[2].remote.aws_access_key_id_env: set either",
            ),
            (
                json!({"name": "n", "remote": {"type": "bedrock_guardrail", "cluster": "c", "region": "us-east-1", "guardrail_id": "g", "guardrail_version": "1", "path": "/x"}}),
                "guardrails[2].remote.path: not for bedrock_guardrail",
            ),
            (
                json!({"name": "n", "remote": {"type": "azure_content_safety", "cluster": "c", "api_key": "k"}}),
                "guardrails[2].remote.authority: required",
            ),
            (
                json!({"name": "n", "remote": {"type": "azure_content_safety", "cluster": "c", "authority": "a"}}),
                "guardrails[2].remote.api_key: required",
            ),
            (
                json!({"name": "n", "remote": {"type": "azure_content_safety", "cluster": "c", "authority": "a", "api_key": "k", "categories": ["Spam"]}}),
                "guardrails[2].remote.categories[0]: unknown category `Spam`",
            ),
            (
                json!({"name": "n", "remote": {"type": "azure_content_safety", "cluster": "c", "authority": "a", "api_key": "k", "categories": []}}),
                "guardrails[2].remote.categories: must not be empty",
            ),
            (
                json!({"name": "n", "remote": {"type": "azure_content_safety", "cluster": "c", "authority": "a", "api_key": "k", "threshold": 8}}),
                "guardrails[2].remote.threshold: must be a severity",
            ),
            (
                json!({"name": "n", "remote": {"type": "azure_content_safety", "cluster": "c", "authority": "a", "api_key": "k", "api_version": "2024 09"}}),
                "guardrails[2].remote.api_version:",
            ),
        ];
        for (v, want) in cases {
            let e = parse_err(v.clone());
            assert!(e.starts_with(want), "{v}: got {e:?}, want {want:?}");
        }
    }

    #[test]
    fn openai_call_and_verdicts() {
        let r = openai();
        let c = r.call(&texts(&["hello", "", "world"]), Source::Input, 0);
        assert_eq!(
            &c.headers[..5],
            &[
                (":method".to_string(), "POST".to_string()),
                (":path".into(), "/v1/moderations".into()),
                (":authority".into(), "api.openai.com".into()),
                ("content-type".into(), "application/json".into()),
                ("authorization".into(), "Bearer sk-test".into()),
            ]
        );
        assert_eq!(
            body(&c),
            json!({"model": "omni-moderation-latest", "input": ["hello", "world"]})
        );
        let ok = br#"{"id":"modr-1","model":"omni-moderation-latest","results":[{"flagged":false,"categories":{"hate":false},"category_scores":{"hate":0.01}}]}"#;
        assert_eq!(r.verdict(200, ok), Verdict::Allow);
        let flagged = br#"{"id":"modr-2","results":[{"flagged":false,"categories":{}},
            {"flagged":true,"categories":{"violence":true,"hate":false,"harassment/threatening":true}},
            {"flagged":true,"categories":{"violence":true}}]}"#;
        assert_eq!(
            r.verdict(200, flagged),
            Verdict::Block {
                reason: "harassment/threatening,violence".into()
            }
        );
        assert_eq!(
            r.verdict(200, br#"{"results":[{"flagged":true}]}"#),
            Verdict::Block {
                reason: "flagged".into()
            }
        );
        for garbage in [
            &b"nope"[..],
            b"{}",
            br#"{"results":[]}"#,
            br#"{"results":[{}]}"#,
        ] {
            assert!(
                matches!(r.verdict(200, garbage), Verdict::Failed(_)),
                "{garbage:?}"
            );
        }
        assert_eq!(r.verdict(429, ok), Verdict::Failed("HTTP 429".into()));
        assert!(matches!(r.verdict(0, b""), Verdict::Failed(_)));
        // on_failure open: a failure lets the text through.
        assert!(!r.blocks(&r.verdict(0, b"")));
        assert!(r.blocks(&r.verdict(200, flagged)));
        assert!(!r.blocks(&Verdict::Allow));
    }

    #[test]
    fn webhook_call_and_verdicts() {
        let r = webhook();
        let c = r.call(&texts(&["a \"quoted\" text"]), Source::Output, 0);
        assert_eq!(h(&c, ":path"), Some("/check"));
        assert_eq!(h(&c, ":authority"), Some("hook"));
        assert_eq!(h(&c, "authorization"), Some("Bearer x"));
        assert_eq!(
            body(&c),
            json!({"guardrail": "policy-hook", "direction": "response", "texts": ["a \"quoted\" text"]})
        );
        let c = r.call(&texts(&["x"]), Source::Input, 0);
        assert_eq!(body(&c)["direction"], "request");
        assert_eq!(r.verdict(200, br#"{"action":"allow"}"#), Verdict::Allow);
        assert_eq!(
            r.verdict(204, br#"{"action":"allow","reason":"fine"}"#),
            Verdict::Allow
        );
        assert_eq!(
            r.verdict(200, br#"{"action":"block","reason":"policy 7\n(pii)"}"#),
            Verdict::Block {
                reason: "policy 7(pii)".into()
            }
        );
        assert_eq!(
            r.verdict(200, br#"{"action":"block"}"#),
            Verdict::Block {
                reason: "blocked by webhook".into()
            }
        );
        let long = format!(r#"{{"action":"block","reason":"{}"}}"#, "é".repeat(500));
        let Verdict::Block { reason } = r.verdict(200, long.as_bytes()) else {
            panic!()
        };
        assert!(reason.len() <= MAX_REASON && reason.len() >= MAX_REASON - 1);
        for garbage in [
            &b""[..],
            b"[]",
            br#"{"action":"maybe"}"#,
            br#"{"action":true}"#,
        ] {
            assert!(
                matches!(r.verdict(200, garbage), Verdict::Failed(_)),
                "{garbage:?}"
            );
        }
        assert!(matches!(
            r.verdict(500, br#"{"action":"allow"}"#),
            Verdict::Failed(_)
        ));
        assert!(matches!(
            r.verdict(302, br#"{"action":"allow"}"#),
            Verdict::Failed(_)
        ));
        // on_failure closed: a failure blocks.
        assert!(r.blocks(&r.verdict(0, b"")));
        let huge = format!(r#"{{"action":"allow","pad":"{}"}}"#, "x".repeat(MAX_ANSWER));
        assert!(matches!(
            r.verdict(200, huge.as_bytes()),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn bedrock_call_is_signed() {
        // 2015-08-30T12:36:00Z, the AWS test suite's time.
        const T: u64 = 1_440_938_160;
        let r = bedrock_remote(None);
        let c = r.call(&texts(&["hi", "there"]), Source::Input, T);
        assert_eq!(h(&c, ":path"), Some("/guardrail/gr123/version/1/apply"));
        assert_eq!(
            h(&c, ":authority"),
            Some("bedrock-runtime.us-east-1.amazonaws.com")
        );
        assert_eq!(h(&c, "x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(h(&c, "x-amz-security-token"), None);
        assert_eq!(
            body(&c),
            json!({"source": "INPUT", "content": [{"text": {"text": "hi"}}, {"text": {"text": "there"}}]})
        );
        let auth = h(&c, "authorization").unwrap();
        let prefix = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=";
        assert!(auth.starts_with(prefix), "{auth}");
        let sig = &auth[prefix.len()..];
        assert!(
            sig.len() == 64
                && sig
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        // The signature is the one sigv4 computes for this exact path and body.
        let hash = sigv4::hex(&<sha2::Sha256 as sha2::Digest>::digest(&c.body));
        let (canonical, signed) = sigv4::canonical_request(
            "POST",
            "/guardrail/gr123/version/1/apply",
            "",
            &[
                (
                    "host".into(),
                    "bedrock-runtime.us-east-1.amazonaws.com".into(),
                ),
                ("x-amz-date".into(), "20150830T123600Z".into()),
            ],
            &hash,
        );
        let Settings::BedrockGuardrail { credentials, .. } = &r.settings else {
            panic!()
        };
        assert_eq!(
            auth,
            sigv4::authorization(
                credentials,
                "20150830T123600Z",
                "us-east-1",
                "bedrock",
                &canonical,
                &signed
            )
        );
        // Output, and a session token: sent and signed.
        let r = bedrock_remote(Some("TOKEN"));
        let c = r.call(&texts(&["x"]), Source::Output, T);
        assert_eq!(body(&c)["source"], "OUTPUT");
        assert_eq!(h(&c, "x-amz-security-token"), Some("TOKEN"));
        assert!(h(&c, "authorization")
            .unwrap()
            .contains("SignedHeaders=host;x-amz-date;x-amz-security-token,"));
    }

    /// The callouts mock-provider's `guardrail::tests::accepts_llmux_signed_callouts` replays
    /// against its own SigV4 verifier (the mock's credentials): keep the two in step.
    #[test]
    fn bedrock_mock_fixture() {
        for (id, path, sig) in [
            ("gr123", "/guardrail/gr123/version/1/apply",
             "2269e4fae32b1229af4645383034cbbcf3395d1fc66984dae994545d9a7e3943"),
            ("arn:aws:bedrock:us-east-1:123456789012:guardrail/abc",
             "/guardrail/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aguardrail%2Fabc/version/1/apply",
             "7e050419147d1318c654776b4d62711c4a58a81816daada621a81ccb74ded0b8"),
        ] {
            let r = parse(json!({"name": "b", "remote": {"type": "bedrock_guardrail",
                "cluster": "c", "region": "us-east-1", "guardrail_id": id,
                "guardrail_version": "1", "aws_access_key_id": "AKIDMOCKBEDROCK",
                "aws_secret_access_key": "mock/bedrock+SECRET/key"}}));
            let c = r.call(&texts(&["forbidden thing"]), Source::Input, 1_440_938_160);
            assert_eq!(h(&c, ":path"), Some(path));
            assert_eq!(
                c.body,
                br#"{"content":[{"text":{"text":"forbidden thing"}}],"source":"INPUT"}"#
            );
            assert!(h(&c, "authorization").unwrap().ends_with(sig));
        }
    }

    #[test]
    fn bedrock_verdicts() {
        let r = bedrock_remote(None);
        assert_eq!(
            r.verdict(200, br#"{"action":"NONE","outputs":[],"assessments":[{}]}"#),
            Verdict::Allow
        );
        let intervened = br#"{"action":"GUARDRAIL_INTERVENED","actionReason":"Guardrail blocked.",
            "outputs":[{"text":"Sorry."}],
            "assessments":[{"topicPolicy":{"topics":[{"name":"Finance","type":"DENY","action":"BLOCKED","detected":true}]},
              "contentPolicy":{"filters":[{"type":"HATE","confidence":"HIGH","action":"BLOCKED"},
                                          {"type":"VIOLENCE","confidence":"NONE","action":"NONE"}]},
              "sensitiveInformationPolicy":{"piiEntities":[{"type":"EMAIL","match":"a@b.c","action":"ANONYMIZED"}],
                                            "regexes":[{"name":"acct","match":"12345","regex":"\\d+","action":"BLOCKED"}]},
              "wordPolicy":{"customWords":[{"match":"forbidden","action":"BLOCKED"}]},
              "invocationMetrics":{"guardrailProcessingLatency":12}}]}"#;
        let v = r.verdict(200, intervened);
        assert_eq!(
            v,
            Verdict::Block {
                reason: "contentPolicy:HATE,sensitiveInformationPolicy:EMAIL,sensitiveInformationPolicy:acct,topicPolicy:Finance,wordPolicy".into()
            }
        );
        let Verdict::Block { reason } = v else {
            panic!()
        };
        assert!(
            !reason.contains("a@b.c") && !reason.contains("12345") && !reason.contains("forbidden")
        );
        assert_eq!(
            r.verdict(200, br#"{"action":"GUARDRAIL_INTERVENED","outputs":[]}"#),
            Verdict::Block {
                reason: "guardrail intervened".into()
            }
        );
        for garbage in [&b"<html>"[..], b"{}", br#"{"action":"BLOCK"}"#] {
            assert!(
                matches!(r.verdict(200, garbage), Verdict::Failed(_)),
                "{garbage:?}"
            );
        }
        assert!(matches!(
            r.verdict(403, br#"{"message":"denied"}"#),
            Verdict::Failed(_)
        ));
        assert!(matches!(r.verdict(0, b""), Verdict::Failed(_)));
    }

    #[test]
    fn azure_call_and_verdicts() {
        let r = azure_remote();
        let c = r.call(&texts(&["first", "second"]), Source::Input, 0);
        assert_eq!(
            h(&c, ":path"),
            Some("/contentsafety/text:analyze?api-version=2024-09-01")
        );
        assert_eq!(h(&c, ":authority"), Some("x.cognitiveservices.azure.com"));
        assert_eq!(h(&c, "ocp-apim-subscription-key"), Some("az-key"));
        assert_eq!(h(&c, "authorization"), None);
        assert_eq!(
            body(&c),
            json!({"text": "first\n\nsecond", "categories": ["Hate", "Violence", "Sexual", "SelfHarm"],
                   "outputType": "FourSeverityLevels"})
        );
        // At most 10,000 code points.
        let c = r.call(
            &texts(&[&"ü".repeat(6000), &"ü".repeat(6000)]),
            Source::Input,
            0,
        );
        let t = body(&c)["text"].as_str().unwrap().to_string();
        assert_eq!(t.chars().count(), AZURE_MAX_CHARS);
        let clean = br#"{"blocklistsMatch":[],"categoriesAnalysis":[{"category":"Hate","severity":2},{"category":"Violence","severity":0}]}"#;
        assert_eq!(r.verdict(200, clean), Verdict::Allow);
        let bad_ = br#"{"blocklistsMatch":[],"categoriesAnalysis":[{"category":"Hate","severity":6},{"category":"Violence","severity":4},{"category":"Sexual","severity":2}]}"#;
        assert_eq!(
            r.verdict(200, bad_),
            Verdict::Block {
                reason: "Hate,Violence".into()
            }
        );
        for garbage in [
            &b"x"[..],
            b"{}",
            br#"{"categoriesAnalysis":[{"category":"Hate"}]}"#,
        ] {
            assert!(
                matches!(r.verdict(200, garbage), Verdict::Failed(_)),
                "{garbage:?}"
            );
        }
        assert!(matches!(r.verdict(401, clean), Verdict::Failed(_)));
        assert!(matches!(r.verdict(0, b""), Verdict::Failed(_)));
        // Threshold 2 and a blocklist.
        let r = parse(
            json!({"name": "az", "remote": {"type": "azure_content_safety",
            "cluster": "c", "authority": "a", "api_key": "k", "threshold": 2,
            "categories": ["Hate"], "blocklists": ["words"]}}),
        );
        let c = r.call(&texts(&["x"]), Source::Output, 0);
        assert_eq!(
            body(&c),
            json!({"text": "x", "categories": ["Hate"], "outputType": "FourSeverityLevels",
                   "blocklistNames": ["words"], "haltOnBlocklistHit": false})
        );
        assert_eq!(
            r.verdict(200, clean),
            Verdict::Block {
                reason: "Hate".into()
            }
        );
        let listed = br#"{"blocklistsMatch":[{"blocklistName":"words","blocklistItemId":"1","blocklistItemText":"secretword"}],"categoriesAnalysis":[{"category":"Hate","severity":0}]}"#;
        assert_eq!(
            r.verdict(200, listed),
            Verdict::Block {
                reason: "blocklist:words".into()
            }
        );
    }

    #[test]
    fn text_is_capped() {
        let r = webhook();
        let big = "ab".repeat(MAX_TEXT);
        let c = r.call(&[big.clone(), "tail".into()], Source::Input, 0);
        let b = body(&c);
        let sent = b["texts"].as_array().unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].as_str().unwrap().len(), MAX_TEXT);
        assert_eq!(capped(&["é".into()], 1), Vec::<&str>::new());
        assert_eq!(capped(&["ab".into(), "cd".into()], 3), ["ab", "c"]);
    }
}
