//! AWS Bedrock Runtime (PROVIDERS.md §6): `POST /model/{modelId}/converse`, `/converse-stream`
//! (binary `application/vnd.amazon.eventstream` frames with real CRCs), `/invoke` for Amazon
//! Titan Text Embeddings and Cohere Embed, and `/invoke`, `/invoke-with-response-stream` for
//! Anthropic Claude (`anthropic.claude*` ids) with Anthropic's Messages body
//! ([`anthropic_body`]; the answer is the Anthropic mock's, streamed as `chunk` frames of
//! base64 Anthropic events, [`invoke_stream_body`]). Like the real service it checks the SigV4 signature
//! (recomputed here with the mock's credentials, independently of LLMux's signer), the
//! conversation's roles and alternation, unknown fields and empty content.

use hmac::{Hmac, KeyInit, Mac};
use hyper::HeaderMap;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::embeddings::vector;
use crate::mock::{split_chars, MockHeaders, Plan, ARG_PIECE};

/// The credentials the mock accepts (tests configure LLMux with these).
pub const ACCESS_KEY_ID: &str = "AKIDMOCKBEDROCK";
pub const SECRET_ACCESS_KEY: &str = "mock/bedrock+SECRET/key";
/// A Bedrock API key (Bearer) the mock accepts.
pub const API_KEY: &str = "mock-bedrock-api-key";

pub const EVENTSTREAM: &str = "application/vnd.amazon.eventstream";
const ERROR_NS: &str = ":http://internal.amazon.com/coral/com.amazon.bedrock/";
pub const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// An error the way Bedrock sends it: status, `x-amzn-ErrorType` name, `{"message"}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BedrockError {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
}

impl BedrockError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        BedrockError {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(400, "ValidationException", message)
    }

    pub fn body(&self) -> Vec<u8> {
        json!({ "message": self.message }).to_string().into_bytes()
    }

    /// `x-amzn-ErrorType` value.
    pub fn error_type(&self) -> String {
        format!("{}{ERROR_NS}", self.kind)
    }
}

/// The error for an `x-mock-status`.
pub fn status_error(status: u16) -> BedrockError {
    let (kind, message) = match status {
        400 => (
            "ValidationException",
            "Malformed input request, please reformat your input and try again.",
        ),
        403 => (
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
        ),
        404 => (
            "ResourceNotFoundException",
            "Could not resolve the foundation model from the provided model identifier.",
        ),
        408 => (
            "ModelTimeoutException",
            "Model has timed out in processing the request.",
        ),
        424 => ("ModelErrorException", "The model returned an error."),
        429 => (
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        ),
        503 => (
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
        ),
        _ => (
            "InternalServerException",
            "The server encountered an internal error.",
        ),
    };
    BedrockError::new(status, kind, message)
}

// ---------------------------------------------------------------------------------------------
// SigV4 verification
// ---------------------------------------------------------------------------------------------

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// AWS URI encoding: every byte but unreserved ones (and `/` when `keep_slash`), upper-case hex.
fn aws_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-decoding (`%XX`; anything else kept).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The signature of a request, computed the way AWS documents it for services other than S3.
#[allow(clippy::too_many_arguments)]
pub fn signature(
    secret: &str,
    method: &str,
    raw_path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
    amz_date: &str,
    scope: &str,
) -> String {
    let mut q: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                aws_encode(&percent_decode(k), false).replace('/', "%2F"),
                aws_encode(&percent_decode(v), false).replace('/', "%2F"),
            )
        })
        .collect();
    q.sort();
    let query = q
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut names: Vec<&(String, String)> = headers.iter().collect();
    names.sort();
    let canonical_headers: String = names
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}:{}\n",
                v.split_whitespace().collect::<Vec<_>>().join(" ")
            )
        })
        .collect();
    let signed: Vec<&str> = names.iter().map(|(k, _)| k.as_str()).collect();
    let canonical = format!(
        "{method}\n{}\n{query}\n{canonical_headers}\n{}\n{}",
        aws_encode(raw_path, true),
        signed.join(";"),
        hex(&Sha256::digest(body))
    );
    let sts = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut parts = scope.split('/');
    let mut key = format!("AWS4{secret}").into_bytes();
    for _ in 0..4 {
        key = hmac(&key, parts.next().unwrap_or(""));
    }
    hex(&hmac(&key, &sts))
}

/// Unix seconds of an `x-amz-date` (`YYYYMMDDTHHMMSSZ`).
fn parse_amz_date(s: &str) -> Option<i64> {
    if s.len() != 16 || &s[8..9] != "T" || !s.ends_with('Z') {
        return None;
    }
    let n = |a: usize, b: usize| s.get(a..b)?.parse::<i64>().ok();
    let (y, m, d) = (n(0, 4)?, n(4, 6)?, n(6, 8)?);
    let (hh, mm, ss) = (n(9, 11)?, n(11, 13)?, n(13, 15)?);
    // Days from civil (H. Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Checks a request's authentication as Bedrock does: SigV4 with the mock's credentials (any
/// region; the session token, when sent, must be signed), or the mock's Bedrock API key.
pub fn verify(
    method: &str,
    raw_path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    now_unix: i64,
) -> Result<(), BedrockError> {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let denied = |kind, m: &str| Err(BedrockError::new(403, kind, m));
    let Some(auth) = h("authorization") else {
        return denied(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        );
    };
    if let Some(key) = auth.strip_prefix("Bearer ") {
        return if key == API_KEY {
            Ok(())
        } else {
            denied(
                "AccessDeniedException",
                "Invalid API Key format: Must start with pre-defined prefix",
            )
        };
    }
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
        BedrockError::new(
            400,
            "IncompleteSignatureException",
            "Unsupported authorization type",
        )
    })?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut sig = None;
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => sig = Some(v),
            _ => {}
        }
    }
    let (Some(credential), Some(signed_headers), Some(sig)) = (credential, signed_headers, sig)
    else {
        return Err(BedrockError::new(400, "IncompleteSignatureException", format!("Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters. Authorization={auth}")));
    };
    let (akid, scope) = credential.split_once('/').unwrap_or((credential, ""));
    if akid != ACCESS_KEY_ID {
        return denied(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        );
    }
    let scope_parts: Vec<&str> = scope.split('/').collect();
    if scope_parts.len() != 4 || scope_parts[3] != "aws4_request" {
        return Err(BedrockError::new(
            400,
            "IncompleteSignatureException",
            format!("Credential should be scoped to a valid region. ({credential})"),
        ));
    }
    if scope_parts[2] != "bedrock" {
        return denied(
            "InvalidSignatureException",
            "Credential should be scoped to correct service: 'bedrock'.",
        );
    }
    let host = h("host").unwrap_or("");
    if let Some(region) = host
        .strip_prefix("bedrock-runtime.")
        .and_then(|r| r.strip_suffix(".amazonaws.com"))
    {
        if region != scope_parts[1] {
            return denied(
                "InvalidSignatureException",
                &format!(
                    "Credential should be scoped to a valid region, not '{}'.",
                    scope_parts[1]
                ),
            );
        }
    }
    let Some(amz_date) = h("x-amz-date") else {
        return Err(BedrockError::new(
            400,
            "IncompleteSignatureException",
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        ));
    };
    let Some(t) = parse_amz_date(amz_date) else {
        return Err(BedrockError::new(
            400,
            "IncompleteSignatureException",
            "Invalid X-Amz-Date",
        ));
    };
    if !amz_date.starts_with(scope_parts[0]) {
        return denied("InvalidSignatureException", "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP");
    }
    if (now_unix - t).abs() > 15 * 60 {
        return denied(
            "InvalidSignatureException",
            &format!("Signature expired: {amz_date} is now earlier than the allowed window."),
        );
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"host") || !names.contains(&"x-amz-date") {
        return denied(
            "InvalidSignatureException",
            "'Host' and 'X-Amz-Date' must be signed headers.",
        );
    }
    if h("x-amz-security-token").is_some() && !names.contains(&"x-amz-security-token") {
        return denied(
            "InvalidSignatureException",
            "'X-Amz-Security-Token' must be a signed header.",
        );
    }
    let mut signed = Vec::new();
    for name in names {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        signed.push((name.to_string(), values.join(",")));
    }
    let expected = signature(
        SECRET_ACCESS_KEY,
        method,
        raw_path,
        query,
        &signed,
        body,
        amz_date,
        scope,
    );
    if expected != sig {
        return denied("InvalidSignatureException", SIGNATURE_MISMATCH);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Event-stream frames
// ---------------------------------------------------------------------------------------------

/// One event-stream message with string headers.
pub fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (k, v) in headers {
        h.push(k.len() as u8);
        h.extend_from_slice(k.as_bytes());
        h.push(7);
        h.extend_from_slice(&(v.len() as u16).to_be_bytes());
        h.extend_from_slice(v.as_bytes());
    }
    let total = (12 + h.len() + payload.len() + 4) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let c = crc32fast::hash(&out);
    out.extend_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let c = crc32fast::hash(&out);
    out.extend_from_slice(&c.to_be_bytes());
    out
}

/// An `event` message; the payload gets a `p` padding field as Bedrock's do.
fn event(kind: &str, mut payload: Value, n: usize) -> Vec<u8> {
    if let Some(o) = payload.as_object_mut() {
        o.insert(
            "p".into(),
            Value::String("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"[..(n * 7) % 36].to_string()),
        );
    }
    frame(
        &[
            (":event-type", kind),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

// ---------------------------------------------------------------------------------------------
// Converse validation
// ---------------------------------------------------------------------------------------------

const CONVERSE_FIELDS: &[&str] = &[
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "guardrailConfig",
    "additionalModelRequestFields",
    "promptVariables",
    "additionalModelResponseFieldPaths",
    "requestMetadata",
    "performanceConfig",
    "serviceTier",
    "outputConfig",
];

fn valid_id(s: &str, extra: &[u8]) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

fn is_base64(s: &str) -> bool {
    !s.is_empty()
        && s.len().is_multiple_of(4)
        && s.trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn one_key<'a>(v: &'a Value, at: &str) -> Result<(&'a str, &'a Value), String> {
    match v
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
    {
        Some((k, v)) => Ok((k.as_str(), v)),
        None => Err(format!("The {at} must set exactly one member.")),
    }
}

fn check_keys(o: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), String> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("Malformed input request: {at}extraneous key [{k}] is not permitted, please reformat your input and try again.")),
        None => Ok(()),
    }
}

/// The request's problems, worded like Bedrock's ValidationException messages.
pub fn validate_converse(body: &Value) -> Result<(), String> {
    let o = body
        .as_object()
        .ok_or("Malformed input request, please reformat your input and try again.")?;
    check_keys(o, CONVERSE_FIELDS, "")?;
    let messages = o
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("A conversation must start with a user message. Try again with a conversation that starts with a user message.")?;
    let mut uses_tools = false;
    let mut pending_ids: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let mo = m
            .as_object()
            .ok_or(format!("messages.{i} must be an object"))?;
        check_keys(mo, &["role", "content"], &format!("messages.{i}: "))?;
        let role = mo.get("role").and_then(Value::as_str).unwrap_or("");
        if role != "user" && role != "assistant" {
            return Err(format!("1 validation error detected: Value '{role}' at 'messages.{}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]", i + 1));
        }
        if i == 0 && role != "user" {
            return Err("A conversation must start with a user message. Try again with a conversation that starts with a user message.".into());
        }
        if i > 0 && messages[i - 1].get("role").and_then(Value::as_str) == Some(role) {
            return Err("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.".into());
        }
        let content = mo
            .get("content")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
            .ok_or(format!("The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."))?;
        let mut results: Vec<String> = Vec::new();
        let mut uses: Vec<String> = Vec::new();
        for (j, b) in content.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            let (kind, v) = one_key(b, &format!("ContentBlock object at {at}"))?;
            match kind {
                "text" => {
                    if v.as_str().is_none_or(|t| t.trim().is_empty()) {
                        return Err(format!("The text field in the ContentBlock object at {at} is blank. Add text to the text field, and try again."));
                    }
                }
                "image" => {
                    if role != "user" {
                        return Err(format!(
                            "The image block at {at} is only allowed in user messages."
                        ));
                    }
                    let format = v.get("format").and_then(Value::as_str).unwrap_or("");
                    if !["png", "jpeg", "gif", "webp"].contains(&format) {
                        return Err(format!(
                            "The format of the image at {at} must be png, jpeg, gif or webp."
                        ));
                    }
                    if !v
                        .pointer("/source/bytes")
                        .and_then(Value::as_str)
                        .is_some_and(is_base64)
                    {
                        return Err(format!("The image at {at} must have base64 source.bytes."));
                    }
                }
                "toolUse" => {
                    uses_tools = true;
                    if role != "assistant" {
                        return Err(format!(
                            "The toolUse block at {at} is only allowed in assistant messages."
                        ));
                    }
                    let id = v.get("toolUseId").and_then(Value::as_str).unwrap_or("");
                    if !valid_id(id, b"_-.:") {
                        return Err(format!("Value '{id}' at '{at}.toolUse.toolUseId' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.:-]+"));
                    }
                    let name = v.get("name").and_then(Value::as_str).unwrap_or("");
                    if !valid_id(name, b"_-") {
                        return Err(format!("Value '{name}' at '{at}.toolUse.name' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+"));
                    }
                    if !v.get("input").is_some_and(Value::is_object) {
                        return Err(format!(
                            "The input of the toolUse at {at} must be a JSON object."
                        ));
                    }
                    uses.push(id.to_string());
                }
                "toolResult" => {
                    uses_tools = true;
                    if role != "user" {
                        return Err(format!(
                            "The toolResult block at {at} is only allowed in user messages."
                        ));
                    }
                    let id = v.get("toolUseId").and_then(Value::as_str).unwrap_or("");
                    let items = v
                        .get("content")
                        .and_then(Value::as_array)
                        .ok_or(format!("The toolResult at {at} needs content."))?;
                    for item in items {
                        let (k, _) = one_key(item, &format!("ToolResultContentBlock at {at}"))?;
                        if !["text", "json", "image", "document", "video"].contains(&k) {
                            return Err(format!(
                                "Unknown ToolResultContentBlock member {k} at {at}."
                            ));
                        }
                    }
                    results.push(id.to_string());
                }
                "document" | "reasoningContent" | "cachePoint" | "guardContent" | "video"
                | "audio" => {}
                other => {
                    return Err(format!(
                        "Malformed input request: unknown ContentBlock member [{other}] at {at}."
                    ))
                }
            }
        }
        if role == "user" {
            let missing: Vec<&String> = pending_ids
                .iter()
                .filter(|id| !results.contains(id))
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "Expected toolResult blocks at messages.{i}.content for the following Ids: {}",
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if let Some(extra) = results.iter().find(|id| !pending_ids.contains(id)) {
                return Err(format!("The toolResult block at messages.{i} references toolUseId {extra}, which is not in the previous assistant message."));
            }
        }
        pending_ids = uses;
    }
    if let Some(s) = o.get("system") {
        for (k, b) in s
            .as_array()
            .ok_or("system must be a list")?
            .iter()
            .enumerate()
        {
            let (kind, v) = one_key(b, &format!("SystemContentBlock at system.{k}"))?;
            if kind == "text" && v.as_str().is_none_or(|t| t.trim().is_empty()) {
                return Err(format!(
                    "The text field in the SystemContentBlock at system.{k} is blank."
                ));
            }
        }
    }
    if let Some(ic) = o.get("inferenceConfig") {
        let ic = ic.as_object().ok_or("inferenceConfig must be an object")?;
        check_keys(
            ic,
            &["maxTokens", "temperature", "topP", "stopSequences"],
            "inferenceConfig: ",
        )?;
        if let Some(m) = ic.get("maxTokens") {
            if m.as_u64().is_none_or(|m| m < 1) {
                return Err("The maximum tokens you requested must be at least 1.".into());
            }
        }
        for k in ["temperature", "topP"] {
            if let Some(v) = ic.get(k) {
                if !v.as_f64().is_some_and(|x| (0.0..=1.0).contains(&x)) {
                    return Err(format!("1 validation error detected: Value at 'inferenceConfig.{k}' failed to satisfy constraint: Member must have value less than or equal to 1"));
                }
            }
        }
        if let Some(s) = ic.get("stopSequences") {
            if !s.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                return Err("stopSequences must be a list of strings".into());
            }
        }
    }
    match o.get("toolConfig") {
        None if uses_tools => return Err("The toolConfig field must be defined when using toolUse and toolResult content blocks.".into()),
        None => {}
        Some(tc) => {
            let tco = tc.as_object().ok_or("toolConfig must be an object")?;
            check_keys(tco, &["tools", "toolChoice"], "toolConfig: ")?;
            let tools = tco.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty()).ok_or("The toolConfig.tools list must have at least one tool.")?;
            let names = tool_names(body);
            for (k, t) in tools.iter().enumerate() {
                let (kind, spec) = one_key(t, &format!("Tool at toolConfig.tools.{k}"))?;
                if kind != "toolSpec" {
                    continue;
                }
                let so = spec.as_object().ok_or("toolSpec must be an object")?;
                check_keys(so, &["name", "description", "inputSchema", "strict"], &format!("toolConfig.tools.{k}.toolSpec: "))?;
                if !valid_id(so.get("name").and_then(Value::as_str).unwrap_or(""), b"_-") {
                    return Err(format!("toolConfig.tools.{k}.toolSpec.name must match [a-zA-Z0-9_-]+"));
                }
                if !spec.pointer("/inputSchema/json").is_some_and(Value::is_object) {
                    return Err(format!("The inputSchema of toolConfig.tools.{k} must be {{\"json\": <JSON schema object>}}."));
                }
            }
            if let Some(choice) = tco.get("toolChoice") {
                match one_key(choice, "ToolChoice")? {
                    ("auto", _) | ("any", _) => {}
                    ("tool", t) => {
                        let name = t.get("name").and_then(Value::as_str).unwrap_or("");
                        if !names.iter().any(|n| n == name) {
                            return Err(format!("The tool {name} in toolChoice is not defined in toolConfig.tools."));
                        }
                    }
                    (other, _) => return Err(format!("Unknown ToolChoice member {other}.")),
                }
            }
        }
    }
    if let Some(a) = o.get("additionalModelRequestFields") {
        if !a.is_object() {
            return Err("additionalModelRequestFields must be a JSON object".into());
        }
    }
    if let Some(oc) = o.get("outputConfig") {
        let schema = oc
            .pointer("/textFormat/structure/jsonSchema/schema")
            .and_then(Value::as_str);
        if oc.pointer("/textFormat/type").and_then(Value::as_str) != Some("json_schema")
            || schema.is_none_or(|s| serde_json::from_str::<Value>(s).is_err())
        {
            return Err("outputConfig.textFormat must be {type: json_schema, structure: {jsonSchema: {schema: <JSON schema as a string>}}}".into());
        }
    }
    Ok(())
}

/// Tool names declared in `toolConfig.tools`.
pub fn tool_names(body: &Value) -> Vec<String> {
    body.pointer("/toolConfig/tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.pointer("/toolSpec/name").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// Text blocks of the last user message.
pub fn last_user_text(body: &Value) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .and_then(|m| m.get("content").and_then(Value::as_array))
        .map(|c| {
            c.iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------------

fn stop_reason(plan: &Plan, mock: &MockHeaders) -> String {
    match &mock.finish {
        Some(f) => f.clone(),
        None if !plan.tool_calls.is_empty() => "tool_use".into(),
        None => "end_turn".into(),
    }
}

fn usage(plan: &Plan) -> Value {
    let mut u = json!({
        "inputTokens": plan.input_tokens,
        "outputTokens": plan.output_tokens,
        "totalTokens": plan.input_tokens + plan.output_tokens + plan.cache_read + plan.cache_creation,
    });
    if plan.cache_read > 0 {
        u["cacheReadInputTokens"] = json!(plan.cache_read);
    }
    if plan.cache_creation > 0 {
        u["cacheWriteInputTokens"] = json!(plan.cache_creation);
    }
    u
}

fn tool_use_id(n: u64, i: usize) -> String {
    format!("tooluse_mock{n}_{i}")
}

/// `POST /model/{id}/converse` answer.
pub fn converse_body(plan: &Plan, mock: &MockHeaders, n: u64) -> Vec<u8> {
    let mut content = Vec::new();
    if let Some(t) = &plan.text {
        content.push(json!({ "text": t }));
    }
    for tc in &plan.tool_calls {
        let input: Value = serde_json::from_str(&tc.arguments).unwrap_or_else(|_| json!({}));
        content.push(json!({"toolUse": {"toolUseId": tool_use_id(n, tc.index), "name": tc.name, "input": input}}));
    }
    json!({
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop_reason(plan, mock),
        "usage": usage(plan),
        "metrics": {"latencyMs": 1},
    })
    .to_string()
    .into_bytes()
}

/// `POST /model/{id}/converse-stream` answer: event-stream frames. `x-mock-stream-error-after: k`
/// puts an exception frame (`x-mock-exception`, default `modelStreamErrorException`) after k
/// events; `x-mock-drop-after: k` ends the body after k events.
pub fn converse_stream_body(
    plan: &Plan,
    mock: &MockHeaders,
    n: u64,
    exception: Option<&str>,
) -> Vec<u8> {
    let mut events = vec![event("messageStart", json!({"role": "assistant"}), 0)];
    let mut block = 0;
    if plan.text.is_some() {
        for d in &plan.deltas {
            events.push(event(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": d}}),
                events.len(),
            ));
        }
        events.push(event(
            "contentBlockStop",
            json!({"contentBlockIndex": 0}),
            events.len(),
        ));
        block = 1;
    }
    for tc in &plan.tool_calls {
        let idx = block + tc.index;
        events.push(event("contentBlockStart", json!({"contentBlockIndex": idx, "start": {"toolUse": {"toolUseId": tool_use_id(n, tc.index), "name": tc.name}}}), events.len()));
        for piece in split_chars(&tc.arguments, ARG_PIECE) {
            events.push(event(
                "contentBlockDelta",
                json!({"contentBlockIndex": idx, "delta": {"toolUse": {"input": piece}}}),
                events.len(),
            ));
        }
        events.push(event(
            "contentBlockStop",
            json!({"contentBlockIndex": idx}),
            events.len(),
        ));
    }
    events.push(event(
        "messageStop",
        json!({"stopReason": stop_reason(plan, mock)}),
        events.len(),
    ));
    events.push(event(
        "metadata",
        json!({"usage": usage(plan), "metrics": {"latencyMs": 1}}),
        events.len(),
    ));
    let keep = match (mock.stream_error_after, mock.drop_after) {
        (Some(k), _) | (None, Some(k)) => k.min(events.len()),
        _ => events.len(),
    };
    let mut out: Vec<u8> = events[..keep].concat();
    if mock.stream_error_after.is_some() {
        let kind = exception.unwrap_or("modelStreamErrorException");
        out.extend(frame(
            &[
                (":exception-type", kind),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            json!({"message": "The model stream failed (mock)", "originalStatusCode": 500})
                .to_string()
                .as_bytes(),
        ));
    }
    out
}

/// `anthropic_version` Claude on Bedrock takes.
pub const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// A Claude model id (base model or inference profile).
pub fn is_claude(model: &str) -> bool {
    model.contains("anthropic.claude")
}

/// Claude through InvokeModel
/// (https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-anthropic-claude-messages.html):
/// the body needs `"anthropic_version": "bedrock-2023-05-31"`, has no `model` (it is in the
/// path) nor `stream` (the operation says it), and `anthropic_beta`, when present, is a list of
/// beta names (`context_management` needs a `context-management-*` one). The Messages body the
/// Anthropic mock validates is this one with `model` from the path and `stream` from the
/// operation.
pub fn anthropic_body(body: &Value, model: &str, stream: bool) -> Result<Value, String> {
    let o = body
        .as_object()
        .ok_or("Malformed input request, please reformat your input and try again.")?;
    for k in ["model", "stream"] {
        if o.contains_key(k) {
            return Err(format!("Malformed input request: #: extraneous key [{k}] is not permitted, please reformat your input and try again."));
        }
    }
    match o.get("anthropic_version").and_then(Value::as_str) {
        Some(ANTHROPIC_VERSION) => {}
        None => return Err("Malformed input request: #: required key [anthropic_version] not found, please reformat your input and try again.".into()),
        Some(v) => return Err(format!("Invalid API version: {v}")),
    }
    let betas: Vec<&str> = match o.get("anthropic_beta") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|b| {
                b.as_str()
                    .ok_or("Malformed input request: #/anthropic_beta: expected a list of strings")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(
                "Malformed input request: #/anthropic_beta: expected type: JSONArray".into(),
            )
        }
    };
    if o.contains_key("context_management")
        && !betas.iter().any(|b| b.starts_with("context-management-"))
    {
        return Err("context_management: Extra inputs are not permitted (add `context-management-2025-06-27` to `anthropic_beta`)".into());
    }
    let mut o = o.clone();
    o.remove("anthropic_version");
    o.remove("anthropic_beta");
    o.insert("model".into(), Value::String(model.to_string()));
    if stream {
        o.insert("stream".into(), Value::Bool(true));
    }
    Ok(Value::Object(o))
}

/// `POST /model/{id}/invoke-with-response-stream` answer for Claude: each Anthropic SSE event
/// (`events`, `message_stop` included) as a `chunk` frame `{"bytes": "<base64 of its JSON>"}`
/// (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModelWithResponseStream.html),
/// `message_stop` with Bedrock's `amazon-bedrock-invocationMetrics`. `x-mock-stream-error-after:
/// k` puts an exception frame (`x-mock-exception`, default `modelStreamErrorException`) after k
/// events; `x-mock-drop-after: k` ends the body after k events.
pub fn invoke_stream_body(
    events: &[String],
    plan: &Plan,
    mock: &MockHeaders,
    exception: Option<&str>,
) -> Vec<u8> {
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let Some(data) = e.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        let mut json: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        if json["type"] == "message_stop" {
            json["amazon-bedrock-invocationMetrics"] = json!({
                "inputTokenCount": plan.input_tokens,
                "outputTokenCount": plan.output_tokens,
                "invocationLatency": 1,
                "firstByteLatency": 1
            });
        }
        let bytes = crate::embeddings::base64(json.to_string().as_bytes());
        frames.push(event("chunk", json!({ "bytes": bytes }), i));
    }
    let keep = match (mock.stream_error_after, mock.drop_after) {
        (Some(k), _) | (None, Some(k)) => k.min(frames.len()),
        _ => frames.len(),
    };
    let mut out: Vec<u8> = frames[..keep].concat();
    if mock.stream_error_after.is_some() {
        let kind = exception.unwrap_or("modelStreamErrorException");
        out.extend(frame(
            &[
                (":exception-type", kind),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            json!({"message": "The model stream failed (mock)", "originalStatusCode": 500})
                .to_string()
                .as_bytes(),
        ));
    }
    out
}

/// `POST /model/{id}/invoke` for Titan Text Embeddings or Cohere Embed.
pub fn invoke(
    model: &str,
    body: &Value,
    body_len: usize,
) -> Result<(Vec<u8>, Option<u64>), BedrockError> {
    let o = body.as_object().ok_or_else(|| {
        BedrockError::validation(
            "Malformed input request, please reformat your input and try again.",
        )
    })?;
    if model.starts_with("amazon.titan-embed-text") {
        check_keys(
            o,
            &["inputText", "dimensions", "normalize", "embeddingTypes"],
            "#: ",
        )
        .map_err(BedrockError::validation)?;
        let text = o.get("inputText").and_then(Value::as_str).filter(|t| !t.is_empty()).ok_or_else(|| BedrockError::validation("Malformed input request: #: required key [inputText] not found, please reformat your input and try again."))?;
        let v2 = model.contains("-v2");
        if !v2 && (o.contains_key("dimensions") || o.contains_key("normalize")) {
            return Err(BedrockError::validation("Malformed input request: #: extraneous key [dimensions] is not permitted, please reformat your input and try again."));
        }
        let dims = match o.get("dimensions") {
            None => if v2 { 1024 } else { 1536 },
            Some(d) => match d.as_u64() {
                Some(d @ (256 | 512 | 1024)) => d,
                _ => return Err(BedrockError::validation("Malformed input request: #/dimensions: 1024, 512 or 256 are the only values allowed, please reformat your input and try again.")),
            },
        };
        if o.get("normalize").is_some_and(|n| !n.is_boolean()) {
            return Err(BedrockError::validation("Malformed input request: #/normalize: expected type: Boolean, please reformat your input and try again."));
        }
        let v = vector(text, dims);
        let tokens = (text.len() / 4).max(1) as u64;
        Ok((json!({"embedding": v, "inputTextTokenCount": tokens, "embeddingsByType": {"float": v}}).to_string().into_bytes(), Some(tokens)))
    } else if model.starts_with("cohere.embed") {
        check_keys(
            o,
            &[
                "texts",
                "input_type",
                "images",
                "truncate",
                "embedding_types",
            ],
            "",
        )
        .map_err(BedrockError::validation)?;
        let texts: Vec<&str> = o
            .get("texts")
            .and_then(Value::as_array)
            .filter(|t| !t.is_empty() && t.len() <= 96)
            .and_then(|t| t.iter().map(Value::as_str).collect())
            .ok_or_else(|| {
                BedrockError::validation(
                    "Malformed input request: #/texts: expected 1 to 96 strings",
                )
            })?;
        match o.get("input_type").and_then(Value::as_str) {
            Some("search_document" | "search_query" | "classification" | "clustering") => {}
            _ => return Err(BedrockError::validation("Malformed input request: #/input_type: search_document, search_query, classification or clustering is required")),
        }
        let vecs: Vec<Vec<f32>> = texts.iter().map(|t| vector(t, 1024)).collect();
        let by_type = o.get("embedding_types").is_some();
        let embeddings = if by_type {
            json!({"float": vecs})
        } else {
            json!(vecs)
        };
        let tokens: u64 = texts.iter().map(|t| (t.len() / 4).max(1) as u64).sum();
        let _ = body_len;
        Ok((json!({"id": "mock-embed", "embeddings": embeddings, "texts": texts,
                   "response_type": if by_type { "embeddings_by_type" } else { "embeddings_floats" }}).to_string().into_bytes(), Some(tokens)))
    } else {
        Err(BedrockError::validation(
            "The provided model identifier is invalid.",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn signature_matches_aws_test_suite() {
        // AWS SigV4 test suite, get-vanilla and post-x-www-form-urlencoded.
        let headers = vec![
            ("host".to_string(), "example.amazonaws.com".to_string()),
            ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
        ];
        let scope = "20150830/us-east-1/service/aws4_request";
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        assert_eq!(
            signature(
                secret,
                "GET",
                "/",
                "",
                &headers,
                b"",
                "20150830T123600Z",
                scope
            ),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        let mut h2 = headers.clone();
        h2.push((
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ));
        assert_eq!(
            signature(
                secret,
                "POST",
                "/",
                "",
                &h2,
                b"Param1=value1",
                "20150830T123600Z",
                scope
            ),
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
    }

    fn signed_headers(path: &str, body: &[u8], token: Option<&str>) -> HeaderMap {
        let date = "20150830T123600Z";
        let host = "bedrock-runtime.us-east-1.amazonaws.com";
        let mut signed = vec![
            ("host".to_string(), host.to_string()),
            ("x-amz-date".to_string(), date.to_string()),
        ];
        if let Some(t) = token {
            signed.push(("x-amz-security-token".into(), t.into()));
        }
        let scope = "20150830/us-east-1/bedrock/aws4_request";
        let sig = signature(
            SECRET_ACCESS_KEY,
            "POST",
            path,
            "",
            &signed,
            body,
            date,
            scope,
        );
        let names: Vec<&str> = signed.iter().map(|(k, _)| k.as_str()).collect();
        let mut h = HeaderMap::new();
        for (k, v) in &signed {
            h.insert(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let auth = format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/{scope}, SignedHeaders={}, Signature={sig}", names.join(";"));
        h.insert("authorization", HeaderValue::from_str(&auth).unwrap());
        h
    }

    #[test]
    fn verify_accepts_good_and_rejects_tampered_requests() {
        let path = "/model/amazon.titan-embed-text-v2%3A0/invoke";
        let now = 1_440_938_160;
        let h = signed_headers(path, b"{}", None);
        assert_eq!(verify("POST", path, "", &h, b"{}", now), Ok(()));
        let e = verify("POST", path, "", &h, b"{ }", now).unwrap_err();
        assert_eq!(
            (e.status, e.kind, e.message.as_str()),
            (403, "InvalidSignatureException", SIGNATURE_MISMATCH)
        );
        // The path signed with one encoding only does not match.
        assert!(verify(
            "POST",
            "/model/amazon.titan-embed-text-v2:0/invoke",
            "",
            &h,
            b"{}",
            now
        )
        .is_err());
        assert!(verify("POST", path, "", &h, b"{}", now + 3600)
            .unwrap_err()
            .message
            .contains("expired"));
        let h = signed_headers(path, b"{}", Some("tok"));
        assert_eq!(verify("POST", path, "", &h, b"{}", now), Ok(()));
        let mut unsigned_token = signed_headers(path, b"{}", None);
        unsigned_token.insert("x-amz-security-token", HeaderValue::from_static("tok"));
        assert!(verify("POST", path, "", &unsigned_token, b"{}", now).is_err());
        assert_eq!(
            verify("POST", path, "", &HeaderMap::new(), b"", now)
                .unwrap_err()
                .kind,
            "MissingAuthenticationTokenException"
        );
        let mut bearer = HeaderMap::new();
        bearer.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {API_KEY}")).unwrap(),
        );
        assert_eq!(verify("POST", path, "", &bearer, b"", now), Ok(()));
    }

    #[test]
    fn frames_carry_valid_crcs() {
        let f = frame(&[(":event-type", "messageStop")], b"{}");
        let total = u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize;
        assert_eq!(total, f.len());
        assert_eq!(
            crc32fast::hash(&f[..8]),
            u32::from_be_bytes([f[8], f[9], f[10], f[11]])
        );
        assert_eq!(
            crc32fast::hash(&f[..total - 4]),
            u32::from_be_bytes(f[total - 4..].try_into().unwrap())
        );
    }

    #[test]
    fn validation_is_strict() {
        let ok = json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]});
        assert_eq!(validate_converse(&ok), Ok(()));
        for (body, needle) in [
            (
                json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "temperature": 1}),
                "extraneous key [temperature]",
            ),
            (
                json!({"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]}),
                "start with a user message",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": "a"}]}, {"role": "user", "content": [{"text": "b"}]}]}),
                "alternate",
            ),
            (
                json!({"messages": [{"role": "system", "content": [{"text": "a"}]}]}),
                "enum value set",
            ),
            (
                json!({"messages": [{"role": "user", "content": []}]}),
                "is empty",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": " "}]}]}),
                "is blank",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": "a"}]}], "inferenceConfig": {"temperature": 1.5}}),
                "inferenceConfig.temperature",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": "a"}]}, {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]}]}),
                "toolConfig field must be defined",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"text": "a"}]}, {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]},
                                  {"role": "user", "content": [{"text": "b"}]}],
                    "toolConfig": {"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {}}}}]}}),
                "Expected toolResult blocks",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"image": {"format": "tiff", "source": {"bytes": "AAAA"}}}]}]}),
                "png, jpeg",
            ),
        ] {
            let e = validate_converse(&body).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }

    #[test]
    fn embeddings() {
        let (b, t) = invoke(
            "amazon.titan-embed-text-v2:0",
            &json!({"inputText": "hello world", "dimensions": 256, "normalize": true}),
            0,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["embedding"].as_array().unwrap().len(), 256);
        assert_eq!(t, Some(2));
        assert!(invoke(
            "amazon.titan-embed-text-v2:0",
            &json!({"inputText": "x", "dimensions": 300}),
            0
        )
        .is_err());
        assert!(invoke("amazon.titan-embed-text-v2:0", &json!({"texts": ["x"]}), 0).is_err());
        let (b, _) = invoke("cohere.embed-english-v3", &json!({"texts": ["a", "b"], "input_type": "search_document", "embedding_types": ["float"]}), 0).unwrap();
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["embeddings"]["float"].as_array().unwrap().len(), 2);
        assert!(invoke("cohere.embed-english-v3", &json!({"texts": ["a"]}), 0).is_err());
        assert!(invoke("meta.llama3", &json!({}), 0).is_err());
    }

    #[test]
    fn claude_invoke_bodies() {
        let ok = json!({"anthropic_version": ANTHROPIC_VERSION, "max_tokens": 5,
            "anthropic_beta": ["context-management-2025-06-27"], "context_management": {},
            "messages": [{"role": "user", "content": "hi"}]});
        let m = anthropic_body(&ok, "us.anthropic.claude-x", true).unwrap();
        assert_eq!(m["model"], "us.anthropic.claude-x");
        assert_eq!(m["stream"], true);
        assert!(m.get("anthropic_version").is_none() && m.get("anthropic_beta").is_none());
        let with = |k: &str, v: Value| {
            let mut b = ok.clone();
            b[k] = v;
            anthropic_body(&b, "m", false).unwrap_err()
        };
        assert!(with("model", json!("m")).contains("extraneous key [model]"));
        assert!(with("stream", json!(true)).contains("extraneous key [stream]"));
        assert!(
            with("anthropic_version", json!("vertex-2023-10-16")).contains("Invalid API version")
        );
        assert!(with("anthropic_beta", json!("x")).contains("anthropic_beta"));
        assert!(with("anthropic_beta", json!([])).contains("context_management"));
        let mut none = ok.clone();
        none.as_object_mut().unwrap().remove("anthropic_version");
        assert!(anthropic_body(&none, "m", false)
            .unwrap_err()
            .contains("anthropic_version"));
        assert!(is_claude("anthropic.claude-3-5-haiku-20241022-v1:0"));
        assert!(!is_claude("amazon.nova-pro-v1:0"));
    }

    #[test]
    fn claude_stream_frames_carry_base64_events() {
        let plan = Plan::build(&MockHeaders::default(), "hi", &[], 40);
        let events = vec![
            "event: message_start\ndata: {\"type\":\"message_start\"}\n\n".to_string(),
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_string(),
        ];
        let body = invoke_stream_body(&events, &plan, &MockHeaders::default(), None);
        // Two frames, each `chunk` with {"bytes": base64}, CRCs right.
        let mut rest = &body[..];
        let mut kinds = Vec::new();
        while !rest.is_empty() {
            let total = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let hl = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
            let msg = &rest[..total];
            let crc = u32::from_be_bytes([
                msg[total - 4],
                msg[total - 3],
                msg[total - 2],
                msg[total - 1],
            ]);
            assert_eq!(crc, crc32fast::hash(&msg[..total - 4]));
            let payload: Value = serde_json::from_slice(&msg[12 + hl..total - 4]).unwrap();
            let b64 = payload["bytes"].as_str().unwrap();
            assert!(is_base64(b64), "{b64}");
            kinds.push(b64.to_string());
            rest = &rest[total..];
        }
        assert_eq!(kinds.len(), 2);
        assert_eq!(
            kinds[0],
            crate::embeddings::base64(br#"{"type":"message_start"}"#)
        );
        let mut h = HeaderMap::new();
        h.insert("x-mock-stream-error-after", HeaderValue::from_static("1"));
        let faulty = MockHeaders::from_headers(&h);
        let body = invoke_stream_body(&events, &plan, &faulty, Some("throttlingException"));
        assert!(body.windows(19).any(|w| w == b"throttlingException"));
        assert_eq!(body.windows(5).filter(|w| w == b"chunk").count(), 1);
    }
}
