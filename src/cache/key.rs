//! The cache key of a request: what must be equal for two requests to get the same answer.
//!
//! The exact key is a SHA-256 over the tenant, the client API, the model group and the request
//! body's top-level fields but those that do not change the answer (`model` — the group stands
//! for it —, `user`, `stream`, `stream_options`, `metadata`), in sorted order, each value as the
//! client sent it without insignificant whitespace (only the top level is parsed: a 1 KB body
//! costs a scan, not a tree; nested objects' key order counts — SDKs write it in a fixed order).
//! Every part is delimited. The tenant is
//! part of every key: no tenant can name another tenant's entry.
//!
//! The semantic key splits the request in two: the last user turn's text, which is embedded and
//! matched by similarity, and everything else (system prompt, earlier turns, parameters, tenant),
//! which must match exactly (its digest is a filter on the query). A similar question in another
//! conversation, or under another tenant, never matches.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::MAX_EMBED_BYTES;

/// The client API of a cached request (part of the key: each API gets answers in its shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheApi {
    Chat,
    Messages,
    Embeddings,
}

impl CacheApi {
    pub fn name(self) -> &'static str {
        match self {
            CacheApi::Chat => "chat",
            CacheApi::Messages => "messages",
            CacheApi::Embeddings => "embeddings",
        }
    }
}

/// Fields that never change the answer.
const IGNORED: &[&str] = &["model", "user", "stream", "stream_options", "metadata"];

/// Which requests may be matched by similarity (from `cache.semantic`).
#[derive(Debug, Clone, Copy)]
pub struct SemanticRules {
    pub max_temperature: Option<f64>,
    pub tools: bool,
}

/// The keys of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestKey {
    pub digest: [u8; 32],
    pub stream: bool,
    /// `stream_options.include_usage` (a replayed stream ends with a usage chunk).
    pub include_usage: bool,
    /// Set when the request may be matched by similarity.
    pub semantic: Option<SemanticKey>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SemanticKey {
    /// The last user turn's text (at most [`MAX_EMBED_BYTES`], cut at a character boundary).
    pub text: String,
    /// Hex digest of everything else (the exact part of a semantic match).
    pub context: String,
}

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        // Length-prefixed: no two part lists hash the same bytes.
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}

pub fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(D[usize::from(b >> 4)]));
        s.push(char::from(D[usize::from(b & 15)]));
    }
    s
}

/// The text of a message's `content`: a string, or the `text` of its text parts (OpenAI
/// `{"type":"text"}`, Anthropic `{"type":"text"}`); `None` when it has anything else (an image,
/// a tool result: not a plain question).
fn plain_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                if p.get("type").and_then(Value::as_str) != Some("text") {
                    return None;
                }
                out.push_str(p.get("text")?.as_str()?);
            }
            Some(out)
        }
        _ => None,
    }
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The keys of a request body, or `None` when it is not a JSON object (it is then not cached).
/// `scope` names the tenant (namespace and tenant); `group` the resolved model group.
pub fn key_of(
    api: CacheApi,
    body: &[u8],
    scope: &str,
    group: &str,
    rules: Option<SemanticRules>,
) -> Option<RequestKey> {
    // The top level only, its values kept as the client sent them (sorted by key: key order
    // does not matter; nested values are hashed as sent, as SDKs serialise them the same way).
    let top: BTreeMap<Cow<'_, str>, &RawValue> = serde_json::from_slice(body).ok()?;
    let stream = top.get("stream").is_some_and(|v| v.get() == "true");
    let include_usage = top
        .get("stream_options")
        .and_then(|v| serde_json::from_str::<Value>(v.get()).ok())
        .and_then(|o| o.get("include_usage").and_then(Value::as_bool))
        .unwrap_or(false);
    let head: [&[u8]; 4] = [
        b"llmux-cache-v1",
        scope.as_bytes(),
        api.name().as_bytes(),
        group.as_bytes(),
    ];
    let mut h = Sha256::new();
    for p in head {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    for (k, v) in &top {
        if IGNORED.contains(&k.as_ref()) {
            continue;
        }
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        hash_minified(&mut h, v.get().as_bytes());
    }
    let digest = h.finalize().into();
    let semantic = match rules {
        Some(r) => {
            let mut v: Value = serde_json::from_slice(body).ok()?;
            if let Some(o) = v.as_object_mut() {
                for k in IGNORED {
                    o.remove(*k);
                }
            }
            semantic_key(api, &mut v, r, &head)
        }
        None => None,
    };
    Some(RequestKey {
        digest,
        stream,
        include_usage,
        semantic,
    })
}

/// Feeds `json` to `h` without its insignificant whitespace (outside strings), then a separator:
/// `[{"a": 1}]` and `[{"a":1}]` hash the same. One linear pass, no allocation.
fn hash_minified(h: &mut Sha256, json: &[u8]) {
    let mut buf = [0u8; 256];
    let mut n = 0;
    let mut in_string = false;
    let mut escaped = false;
    for &c in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
        } else if c == b'"' {
            in_string = true;
        } else if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        }
        buf[n] = c;
        n += 1;
        if n == buf.len() {
            h.update(buf);
            n = 0;
        }
    }
    h.update(&buf[..n]);
    // Ends the value: no two field lists hash the same bytes.
    h.update([0u8, 0xff]);
}

/// The semantic split of a chat or Messages request, when it qualifies: no tools (unless
/// allowed), one answer (`n` 1), temperature within the bound, and a last turn from the user
/// with plain text.
fn semantic_key(
    api: CacheApi,
    v: &mut Value,
    r: SemanticRules,
    head: &[&[u8]; 4],
) -> Option<SemanticKey> {
    if api == CacheApi::Embeddings {
        return None;
    }
    let o = v.as_object_mut()?;
    let has_tools = o
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    if has_tools && !r.tools {
        return None;
    }
    if o.get("n").and_then(Value::as_u64).is_some_and(|n| n != 1) {
        return None;
    }
    if let Some(max) = r.max_temperature {
        let t = match o.get("temperature") {
            None | Some(Value::Null) => 1.0,
            Some(t) => t.as_f64()?,
        };
        if t > max {
            return None;
        }
    }
    let messages = o.get_mut("messages")?.as_array_mut()?;
    let last = messages.pop()?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    let text = plain_text(last.get("content")?)?;
    if text.trim().is_empty() {
        return None;
    }
    let rest = serde_json::to_vec(&*v).ok()?;
    let context = digest(&[head[0], head[1], head[2], head[3], b"semantic", &rest]);
    Some(SemanticKey {
        text: cut(text, MAX_EMBED_BYTES),
        context: hex(&context),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: &str) -> RequestKey {
        key_of(CacheApi::Chat, body.as_bytes(), "ns/k1", "gpt", None).unwrap()
    }

    #[test]
    fn ignored_fields_and_key_order_do_not_change_the_key() {
        let a =
            key(r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#);
        let b = key(
            r#"{"temperature":0.5, "messages": [ {"role": "user", "content": "hi"} ],"model":"alias","user":"u","stream":true,"stream_options":{"include_usage":true},"metadata":{"a":"b"}}"#,
        );
        assert_eq!(a.digest, b.digest);
        assert!(!a.stream && b.stream && b.include_usage);
    }

    #[test]
    fn what_changes_the_answer_changes_the_key() {
        let base = key(r#"{"messages":[{"role":"user","content":"hi"}]}"#).digest;
        for other in [
            r#"{"messages":[{"role":"user","content":"hi!"}]}"#,
            r#"{"messages":[{"role":"user","content":"h i"}]}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"tools":[]}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}"#,
            r#"{"messages":[{"role":"system","content":"x"},{"role":"user","content":"hi"}]}"#,
        ] {
            assert_ne!(key(other).digest, base, "{other}");
        }
        let body = br#"{"messages":[{"role":"user","content":"hi"}]}"#;
        let other_tenant = key_of(CacheApi::Chat, body, "ns/k2", "gpt", None).unwrap();
        let other_group = key_of(CacheApi::Chat, body, "ns/k1", "gpt2", None).unwrap();
        let other_api = key_of(CacheApi::Messages, body, "ns/k1", "gpt", None).unwrap();
        for k in [other_tenant, other_group, other_api] {
            assert_ne!(k.digest, base);
        }
    }

    #[test]
    fn parts_cannot_be_shifted_into_one_another() {
        let body = br#"{"messages":[]}"#;
        let a = key_of(CacheApi::Chat, body, "ab", "c", None).unwrap();
        let b = key_of(CacheApi::Chat, body, "a", "bc", None).unwrap();
        assert_ne!(a.digest, b.digest);
    }

    const RULES: SemanticRules = SemanticRules {
        max_temperature: Some(0.5),
        tools: false,
    };

    fn sem(body: &str, scope: &str) -> Option<SemanticKey> {
        key_of(CacheApi::Chat, body.as_bytes(), scope, "gpt", Some(RULES))
            .unwrap()
            .semantic
    }

    #[test]
    fn semantic_split_keeps_the_context_exact() {
        let a = sem(r#"{"temperature":0,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"What is the capital of France?"}]}"#, "t1").unwrap();
        let b = sem(r#"{"temperature":0,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"capital of France?"}]}]}"#, "t1").unwrap();
        assert_eq!(a.context, b.context);
        assert_eq!(a.text, "What is the capital of France?");
        assert_eq!(b.text, "capital of France?");
        let other_system = sem(r#"{"temperature":0,"messages":[{"role":"system","content":"be long"},{"role":"user","content":"What is the capital of France?"}]}"#, "t1").unwrap();
        assert_ne!(other_system.context, a.context);
        let other_tenant = sem(r#"{"temperature":0,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"What is the capital of France?"}]}"#, "t2").unwrap();
        assert_ne!(other_tenant.context, a.context);
    }

    #[test]
    fn semantic_only_where_the_rules_allow() {
        for body in [
            r#"{"messages":[{"role":"user","content":"hi"}]}"#, // temperature 1 by default
            r#"{"temperature":0.9,"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"temperature":0,"tools":[{"type":"function"}],"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"temperature":0,"n":2,"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"temperature":0,"messages":[{"role":"assistant","content":"hi"}]}"#,
            r#"{"temperature":0,"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
            r#"{"temperature":0,"messages":[{"role":"user","content":"  "}]}"#,
            r#"{"temperature":0,"messages":[]}"#,
        ] {
            assert_eq!(sem(body, "t"), None, "{body}");
        }
        assert!(sem(
            r#"{"temperature":0.5,"messages":[{"role":"user","content":"hi"}]}"#,
            "t"
        )
        .is_some());
    }

    #[test]
    fn embedded_text_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_EMBED_BYTES);
        let body =
            serde_json::json!({"temperature": 0, "messages": [{"role": "user", "content": long}]});
        let k = sem(&body.to_string(), "t").unwrap();
        assert!(k.text.len() <= MAX_EMBED_BYTES && k.text.len() >= MAX_EMBED_BYTES - 1);
    }

    #[test]
    fn not_json_is_not_cached() {
        assert!(key_of(CacheApi::Chat, b"[1]", "t", "g", None).is_none());
        assert!(key_of(CacheApi::Chat, b"{", "t", "g", None).is_none());
    }
}
