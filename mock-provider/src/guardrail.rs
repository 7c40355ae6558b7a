//! Mocks of the external guardrail services LLMux calls (src/guard/remote.rs): each flags text
//! that contains the word "forbidden" (any case) and lets everything else through.
//!
//! - `POST /v1/moderations` — OpenAI moderation
//!   (<https://platform.openai.com/docs/api-reference/moderations>): `input` a string, an array
//!   of strings or of `{"type": "text", "text"}` parts; one result per input, `flagged` with
//!   `harassment` and `violence` on "forbidden". The answer also carries the generic echo fields
//!   (`object: "mock.echo"`, `method`, `path`, `query`, `bytes`) because the gateway's
//!   pass-through of `/v1/moderations` is tested against the echo.
//! - `POST /guardrail/{id}/version/{version}/apply` — AWS Bedrock ApplyGuardrail
//!   (<https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_ApplyGuardrail.html>):
//!   SigV4 verified like the Bedrock mock ([`crate::bedrock::verify`]: the mock's credentials,
//!   service `bedrock`); `GUARDRAIL_INTERVENED` with a `wordPolicy` assessment on "forbidden",
//!   else `NONE`.
//! - `POST /contentsafety/text:analyze?api-version=...` — Azure AI Content Safety
//!   (<https://learn.microsoft.com/en-us/rest/api/contentsafety/text-operations/analyze-text>):
//!   `Ocp-Apim-Subscription-Key` required; `Hate` severity 6 on "forbidden", every other
//!   requested category 0.
//! - `POST /guardrail-webhook` — LLMux's webhook contract (docs/guardrails.md): `{"direction",
//!   "texts", "guardrail"}` → `{"action": "block", "reason"}` on "forbidden", else `{"action":
//!   "allow"}`.
//!
//! Steering (see server.rs for latency and reset): `x-mock-status: CODE` answers that error in the
//! service's shape (after the auth check), `x-mock-text: BODY` answers 200 with BODY verbatim (a
//! garbage or custom verdict).

use hyper::http::request::Parts;
use serde_json::{json, Value};

use crate::bedrock;
use crate::mock::{header, MockHeaders};

/// The word the mocks flag.
pub const FLAGGED_WORD: &str = "forbidden";

/// Which guardrail service a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    OpenAiModeration,
    Bedrock,
    Azure,
    Webhook,
}

impl Service {
    /// The service a `POST` path is for.
    pub fn of(path: &str) -> Option<Service> {
        match path {
            "/v1/moderations" => Some(Service::OpenAiModeration),
            "/contentsafety/text:analyze" => Some(Service::Azure),
            "/guardrail-webhook" => Some(Service::Webhook),
            p if p.starts_with("/guardrail/") && p.ends_with("/apply") => Some(Service::Bedrock),
            _ => None,
        }
    }
}

/// An answer: status, JSON body, extra headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn json(status: u16, v: Value) -> Answer {
        Answer {
            status,
            body: v.to_string().into_bytes(),
            headers: Vec::new(),
        }
    }
}

fn flagged(s: &str) -> bool {
    s.to_ascii_lowercase().contains(FLAGGED_WORD)
}

/// The answer to a guardrail request. `openai_key`: the key `/v1/moderations` requires (none:
/// any); `now_unix`: the time SigV4 dates are checked against; `n`: a request number for ids.
pub fn reply(
    service: Service,
    parts: &Parts,
    body: &[u8],
    mock: &MockHeaders,
    openai_key: Option<&str>,
    now_unix: i64,
    n: u64,
) -> Answer {
    match service {
        Service::OpenAiModeration => moderation(parts, body, mock, openai_key, n),
        Service::Bedrock => apply_guardrail(parts, body, mock, now_unix, n),
        Service::Azure => analyze_text(parts, body, mock),
        Service::Webhook => webhook(body, mock),
    }
}

fn verbatim(mock: &MockHeaders) -> Option<Answer> {
    mock.text.as_ref().map(|t| Answer {
        status: 200,
        body: t.clone().into_bytes(),
        headers: Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// OpenAI moderation
// ---------------------------------------------------------------------------------------------

fn oai_error(status: u16, message: &str, code: Option<&str>) -> Answer {
    Answer::json(
        status,
        json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}}),
    )
}

fn moderation(
    parts: &Parts,
    body: &[u8],
    mock: &MockHeaders,
    openai_key: Option<&str>,
    n: u64,
) -> Answer {
    let mut a = moderation_inner(parts, body, mock, openai_key, n);
    a.headers.push(("x-request-id", format!("req_mock_{n}")));
    a
}

fn moderation_inner(
    parts: &Parts,
    body: &[u8],
    mock: &MockHeaders,
    openai_key: Option<&str>,
    n: u64,
) -> Answer {
    if let Some(key) = openai_key {
        match header(&parts.headers, "authorization") {
            Some(a) if a == format!("Bearer {key}") => {}
            Some(_) => {
                return oai_error(401, "Incorrect API key provided.", Some("invalid_api_key"))
            }
            None => {
                return oai_error(
                    401,
                    "You didn't provide an API key.",
                    Some("invalid_api_key"),
                )
            }
        }
    }
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let model = parsed
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("omni-moderation-latest")
        .to_string();
    if let Some(status) = mock.status {
        let e = crate::openai::status_error(status, &model);
        return Answer {
            status,
            body: e.body(),
            headers: Vec::new(),
        };
    }
    if let Some(a) = verbatim(mock) {
        return a;
    }
    if parsed.is_null() {
        return oai_error(
            400,
            "We could not parse the JSON body of your request.",
            None,
        );
    }
    let inputs: Vec<String> = match parsed.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() => {
            let mut out = Vec::with_capacity(a.len());
            for item in a {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("text") => {
                        out.push(o.get("text").and_then(Value::as_str).unwrap_or("").into())
                    }
                    // Images: never flagged here.
                    Value::Object(o)
                        if o.get("type").and_then(Value::as_str) == Some("image_url") =>
                    {
                        out.push(String::new())
                    }
                    _ => {
                        return oai_error(
                            400,
                            "Invalid value for 'input': expected a string, an array of strings or of content parts.",
                            None,
                        )
                    }
                }
            }
            out
        }
        _ => return oai_error(400, "Missing or empty required parameter: 'input'.", None),
    };
    const CATEGORIES: [&str; 13] = [
        "harassment",
        "harassment/threatening",
        "hate",
        "hate/threatening",
        "illicit",
        "illicit/violent",
        "self-harm",
        "self-harm/instructions",
        "self-harm/intent",
        "sexual",
        "sexual/minors",
        "violence",
        "violence/graphic",
    ];
    let results: Vec<Value> = inputs
        .iter()
        .map(|t| {
            let hit = flagged(t);
            let on = |c: &str| hit && (c == "harassment" || c == "violence");
            let cats: serde_json::Map<String, Value> = CATEGORIES
                .iter()
                .map(|c| (c.to_string(), Value::Bool(on(c))))
                .collect();
            let scores: serde_json::Map<String, Value> = CATEGORIES
                .iter()
                .map(|c| (c.to_string(), json!(if on(c) { 0.97 } else { 0.0001 })))
                .collect();
            let types: serde_json::Map<String, Value> = CATEGORIES
                .iter()
                .map(|c| (c.to_string(), json!(["text"])))
                .collect();
            json!({"flagged": hit, "categories": cats, "category_scores": scores,
                   "category_applied_input_types": types})
        })
        .collect();
    Answer::json(
        200,
        json!({
            "id": format!("modr-mock-{n}"),
            "model": model,
            "results": results,
            // The generic echo's fields (see the module doc).
            "object": "mock.echo",
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "bytes": body.len(),
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// Bedrock ApplyGuardrail
// ---------------------------------------------------------------------------------------------

fn bedrock_error(e: &bedrock::BedrockError, n: u64) -> Answer {
    Answer {
        status: e.status,
        body: e.body(),
        headers: vec![
            ("x-amzn-errortype", e.error_type()),
            ("x-amzn-requestid", format!("mock-{n}")),
        ],
    }
}

fn apply_guardrail(
    parts: &Parts,
    body: &[u8],
    mock: &MockHeaders,
    now_unix: i64,
    n: u64,
) -> Answer {
    let raw_path = parts.uri.path();
    let rest = raw_path
        .strip_prefix("/guardrail/")
        .and_then(|r| r.strip_suffix("/apply"))
        .unwrap_or("");
    let (id, version) = rest.split_once("/version/").unwrap_or(("", ""));
    let id_ok = {
        let id = bedrock::percent_decode(id);
        !id.is_empty()
            && id.len() <= 2048
            && (id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                || (id.starts_with("arn:aws") && id.contains(":guardrail/")))
    };
    let version_ok = version == "DRAFT"
        || (!version.is_empty()
            && version.len() <= 8
            && !version.starts_with('0')
            && version.bytes().all(|b| b.is_ascii_digit()));
    if !id_ok || !version_ok || id.contains('/') {
        return bedrock_error(
            &bedrock::BedrockError::new(
                404,
                "UnknownOperationException",
                format!("Unknown operation {raw_path}"),
            ),
            n,
        );
    }
    if let Err(e) = bedrock::verify(
        "POST",
        raw_path,
        parts.uri.query().unwrap_or(""),
        &parts.headers,
        body,
        now_unix,
    ) {
        return bedrock_error(&e, n);
    }
    if let Some(status) = mock.status {
        return bedrock_error(&bedrock::status_error(status), n);
    }
    if let Some(a) = verbatim(mock) {
        return a;
    }
    let invalid = |m: &str| bedrock_error(&bedrock::BedrockError::validation(m), n);
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return invalid("Malformed input request, please reformat your input and try again.");
    };
    if let Some(k) = req
        .keys()
        .find(|k| !matches!(k.as_str(), "source" | "content" | "outputScope"))
    {
        return invalid(&format!(
            "Malformed input request: extraneous key [{k}] is not permitted, please reformat your input and try again."
        ));
    }
    if !matches!(
        req.get("source").and_then(Value::as_str),
        Some("INPUT" | "OUTPUT")
    ) {
        return invalid("1 validation error detected: Value at 'source' failed to satisfy constraint: Member must satisfy enum value set: [INPUT, OUTPUT]");
    }
    let Some(content) = req.get("content").and_then(Value::as_array) else {
        return invalid("1 validation error detected: Value null at 'content' failed to satisfy constraint: Member must not be null");
    };
    let mut texts = Vec::with_capacity(content.len());
    for block in content {
        match block.get("text").and_then(|t| t.get("text")).and_then(Value::as_str) {
            Some(t) => texts.push(t),
            None => return invalid("Malformed input request: each content block needs `text.text`, please reformat your input and try again."),
        }
    }
    let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
    let units = chars.div_ceil(1000).max(1);
    let usage = json!({"topicPolicyUnits": units, "contentPolicyUnits": units,
        "wordPolicyUnits": units, "sensitiveInformationPolicyUnits": units,
        "sensitiveInformationPolicyFreeUnits": 0, "contextualGroundingPolicyUnits": 0});
    let coverage = json!({"textCharacters": {"guarded": chars, "total": chars}});
    let mut a = if texts.iter().any(|t| flagged(t)) {
        Answer::json(
            200,
            json!({
                "usage": usage,
                "action": "GUARDRAIL_INTERVENED",
                "actionReason": "Guardrail blocked.",
                "outputs": [{"text": "Sorry, the model cannot answer this question."}],
                "assessments": [{
                    "wordPolicy": {"customWords": [
                        {"match": FLAGGED_WORD, "action": "BLOCKED", "detected": true}
                    ]},
                    "contentPolicy": {"filters": [
                        {"type": "VIOLENCE", "confidence": "HIGH", "filterStrength": "HIGH",
                         "action": "BLOCKED", "detected": true}
                    ]},
                    "invocationMetrics": {"guardrailProcessingLatency": 42, "usage": usage,
                        "guardrailCoverage": coverage}
                }],
                "guardrailCoverage": coverage,
            }),
        )
    } else {
        Answer::json(
            200,
            json!({
                "usage": usage,
                "action": "NONE",
                "outputs": [],
                "assessments": [{
                    "invocationMetrics": {"guardrailProcessingLatency": 21, "usage": usage,
                        "guardrailCoverage": coverage}
                }],
                "guardrailCoverage": coverage,
            }),
        )
    };
    a.headers.push(("x-amzn-requestid", format!("mock-{n}")));
    a
}

// ---------------------------------------------------------------------------------------------
// Azure AI Content Safety
// ---------------------------------------------------------------------------------------------

fn azure_error(status: u16, code: &str, message: &str) -> Answer {
    Answer::json(
        status,
        json!({"error": {"code": code, "message": message, "details": []}}),
    )
}

const AZURE_CATEGORIES: [&str; 4] = ["Hate", "SelfHarm", "Sexual", "Violence"];

fn analyze_text(parts: &Parts, body: &[u8], mock: &MockHeaders) -> Answer {
    let versioned = parts
        .uri
        .query()
        .and_then(|q| crate::record::query_param(q, "api-version"))
        .is_some();
    if !versioned {
        return azure_error(404, "404", "Resource not found");
    }
    if header(&parts.headers, "ocp-apim-subscription-key").is_none_or(|k| k.is_empty()) {
        return azure_error(
            401,
            "401",
            "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.",
        );
    }
    if let Some(status) = mock.status {
        let code = match status {
            429 => "TooManyRequests",
            s if s >= 500 => "InternalServerError",
            _ => "InvalidRequestBody",
        };
        return azure_error(status, code, "Mock-injected error.");
    }
    if let Some(a) = verbatim(mock) {
        return a;
    }
    let bad = |m: &str| azure_error(400, "InvalidRequestBody", m);
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return bad("The request body is invalid JSON.");
    };
    let Some(text) = req.get("text").and_then(Value::as_str) else {
        return bad("The field 'text' is required.");
    };
    if text.is_empty() || text.chars().count() > 10_000 {
        return bad("The text length must be between 1 and 10000 characters.");
    }
    let categories: Vec<&str> = match req.get("categories") {
        None | Some(Value::Null) => AZURE_CATEGORIES.to_vec(),
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for c in a {
                match c.as_str() {
                    Some(s) if AZURE_CATEGORIES.contains(&s) => out.push(s),
                    _ => return bad("Invalid category in 'categories'."),
                }
            }
            out
        }
        Some(_) => return bad("The field 'categories' must be an array."),
    };
    match req.get("outputType").and_then(Value::as_str) {
        None | Some("FourSeverityLevels" | "EightSeverityLevels") => {}
        Some(_) => return bad("Invalid 'outputType'."),
    }
    let hit = flagged(text);
    let analysis: Vec<Value> = categories
        .iter()
        .map(|c| json!({"category": c, "severity": if hit && *c == "Hate" { 6 } else { 0 }}))
        .collect();
    Answer::json(
        200,
        json!({"blocklistsMatch": [], "categoriesAnalysis": analysis}),
    )
}

// ---------------------------------------------------------------------------------------------
// Webhook
// ---------------------------------------------------------------------------------------------

fn webhook(body: &[u8], mock: &MockHeaders) -> Answer {
    if let Some(status) = mock.status {
        return Answer::json(status, json!({"error": "mock-injected error"}));
    }
    if let Some(a) = verbatim(mock) {
        return a;
    }
    let bad = |m: &str| Answer::json(400, json!({ "error": m }));
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return bad("body must be a JSON object");
    };
    if !matches!(
        req.get("direction").and_then(Value::as_str),
        Some("request" | "response")
    ) {
        return bad("`direction` must be `request` or `response`");
    }
    if !req.get("guardrail").is_some_and(Value::is_string) {
        return bad("`guardrail` must be a string");
    }
    let Some(texts) = req.get("texts").and_then(Value::as_array) else {
        return bad("`texts` must be an array of strings");
    };
    let mut hit = false;
    for t in texts {
        match t.as_str() {
            Some(s) => hit |= flagged(s),
            None => return bad("`texts` must be an array of strings"),
        }
    }
    if hit {
        Answer::json(
            200,
            json!({"action": "block", "reason": "mock: forbidden word"}),
        )
    } else {
        Answer::json(200, json!({"action": "allow"}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{HeaderName, HeaderValue};
    use hyper::Request;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().method("POST").uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn run(service: Service, p: &Parts, body: &str, mock: &MockHeaders) -> (u16, Value) {
        let a = reply(service, p, body.as_bytes(), mock, Some("sk"), T, 7);
        (
            a.status,
            serde_json::from_slice(&a.body).unwrap_or(Value::Null),
        )
    }

    const T: i64 = 1_440_938_160; // 2015-08-30T12:36:00Z

    #[test]
    fn services_by_path() {
        assert_eq!(
            Service::of("/v1/moderations"),
            Some(Service::OpenAiModeration)
        );
        assert_eq!(
            Service::of("/guardrail/abc/version/1/apply"),
            Some(Service::Bedrock)
        );
        assert_eq!(
            Service::of("/contentsafety/text:analyze"),
            Some(Service::Azure)
        );
        assert_eq!(Service::of("/guardrail-webhook"), Some(Service::Webhook));
        assert_eq!(Service::of("/openai/v1/moderations"), None);
    }

    #[test]
    fn moderation() {
        let p = parts("/v1/moderations", &[("authorization", "Bearer sk")]);
        let none = MockHeaders::default();
        let (s, v) = run(
            Service::OpenAiModeration,
            &p,
            r#"{"model":"omni-moderation-latest","input":["hello","this is FORBIDDEN",{"type":"text","text":"ok"}]}"#,
            &none,
        );
        assert_eq!(s, 200);
        let r = v["results"].as_array().unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0]["flagged"], false);
        assert_eq!(r[1]["flagged"], true);
        assert_eq!(r[1]["categories"]["violence"], true);
        assert_eq!(r[1]["categories"]["hate"], false);
        assert_eq!(r[2]["flagged"], false);
        assert_eq!(v["model"], "omni-moderation-latest");
        assert_eq!(v["object"], "mock.echo");
        let (_, v) = run(
            Service::OpenAiModeration,
            &p,
            r#"{"input":"forbidden"}"#,
            &none,
        );
        assert_eq!(v["results"][0]["flagged"], true);
        // Auth, bad input, steering.
        let nokey = parts("/v1/moderations", &[]);
        assert_eq!(
            run(Service::OpenAiModeration, &nokey, r#"{"input":"x"}"#, &none).0,
            401
        );
        assert_eq!(
            run(Service::OpenAiModeration, &p, r#"{"input":[]}"#, &none).0,
            400
        );
        assert_eq!(run(Service::OpenAiModeration, &p, "nope", &none).0, 400);
        let st = MockHeaders {
            status: Some(503),
            ..Default::default()
        };
        let (s, v) = run(Service::OpenAiModeration, &p, r#"{"input":"x"}"#, &st);
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (503, Some("server_error"))
        );
        let txt = MockHeaders {
            text: Some("garbage".into()),
            ..Default::default()
        };
        let a = reply(
            Service::OpenAiModeration,
            &p,
            br#"{"input":"x"}"#,
            &txt,
            None,
            T,
            1,
        );
        assert_eq!((a.status, a.body.as_slice()), (200, &b"garbage"[..]));
    }

    /// Headers signed with the mock's credentials, as LLMux's signer would.
    fn signed(path: &str, body: &str) -> Vec<(String, String)> {
        let date = "20150830T123600Z";
        let host = "bedrock-runtime.us-east-1.amazonaws.com";
        let hs = vec![
            ("host".to_string(), host.to_string()),
            ("x-amz-date".to_string(), date.to_string()),
        ];
        let scope = "20150830/us-east-1/bedrock/aws4_request";
        let sig = bedrock::signature(
            bedrock::SECRET_ACCESS_KEY,
            "POST",
            path,
            "",
            &hs,
            body.as_bytes(),
            date,
            scope,
        );
        let mut out = hs.clone();
        out.push((
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders=host;x-amz-date, Signature={sig}",
                bedrock::ACCESS_KEY_ID
            ),
        ));
        out
    }

    fn parts_owned(uri: &str, headers: &[(String, String)]) -> Parts {
        let mut p = parts(uri, &[]);
        for (k, v) in headers {
            p.headers.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        p
    }

    #[test]
    fn apply_guardrail() {
        let path = "/guardrail/gr123/version/1/apply";
        let none = MockHeaders::default();
        let ok = r#"{"source":"INPUT","content":[{"text":{"text":"hello"}}]}"#;
        let p = parts_owned(path, &signed(path, ok));
        let (s, v) = run(Service::Bedrock, &p, ok, &none);
        assert_eq!((s, v["action"].as_str()), (200, Some("NONE")));
        let bad = r#"{"source":"OUTPUT","content":[{"text":{"text":"a"}},{"text":{"text":"Forbidden!"}}]}"#;
        let p = parts_owned(path, &signed(path, bad));
        let (s, v) = run(Service::Bedrock, &p, bad, &none);
        assert_eq!(s, 200);
        assert_eq!(v["action"], "GUARDRAIL_INTERVENED");
        assert_eq!(
            v["assessments"][0]["wordPolicy"]["customWords"][0]["action"],
            "BLOCKED"
        );
        // The signature covers the body: another body is refused.
        let (s, v) = run(Service::Bedrock, &p, ok, &none);
        assert_eq!(
            (s, v["message"].as_str()),
            (403, Some(bedrock::SIGNATURE_MISMATCH))
        );
        // No or malformed authorization.
        let (s, _) = run(Service::Bedrock, &parts(path, &[]), ok, &none);
        assert_eq!(s, 403);
        let (s, _) = run(
            Service::Bedrock,
            &parts(path, &[("authorization", "AWS4-HMAC-SHA256 nonsense")]),
            ok,
            &none,
        );
        assert_eq!(s, 400);
        // Bad shapes (signed, so the validation is what fails).
        for body in [
            r#"{"source":"BOTH","content":[]}"#,
            r#"{"source":"INPUT"}"#,
            r#"{"source":"INPUT","content":[{"image":{}}]}"#,
            r#"{"source":"INPUT","content":[],"extra":1}"#,
        ] {
            let p = parts_owned(path, &signed(path, body));
            assert_eq!(run(Service::Bedrock, &p, body, &none).0, 400, "{body}");
        }
        // Unknown paths.
        let bad_path = "/guardrail/gr123/version/01/apply";
        let p = parts_owned(bad_path, &signed(bad_path, ok));
        assert_eq!(run(Service::Bedrock, &p, ok, &none).0, 404);
        // Steering, after the signature check.
        let p = parts_owned(path, &signed(path, ok));
        let st = MockHeaders {
            status: Some(429),
            ..Default::default()
        };
        let a = reply(Service::Bedrock, &p, ok.as_bytes(), &st, None, T, 3);
        assert_eq!(a.status, 429);
        assert!(a
            .headers
            .iter()
            .any(|(k, v)| *k == "x-amzn-errortype" && v.starts_with("ThrottlingException")));
    }

    #[test]
    fn analyze_text() {
        let uri = "/contentsafety/text:analyze?api-version=2024-09-01";
        let p = parts(uri, &[("ocp-apim-subscription-key", "k")]);
        let none = MockHeaders::default();
        let (s, v) = run(
            Service::Azure,
            &p,
            r#"{"text":"hello","categories":["Hate","Violence"],"outputType":"FourSeverityLevels"}"#,
            &none,
        );
        assert_eq!(s, 200);
        assert_eq!(
            v,
            json!({"blocklistsMatch": [], "categoriesAnalysis": [
                {"category": "Hate", "severity": 0}, {"category": "Violence", "severity": 0}]})
        );
        let (_, v) = run(Service::Azure, &p, r#"{"text":"so forbidden"}"#, &none);
        assert_eq!(v["categoriesAnalysis"].as_array().unwrap().len(), 4);
        assert_eq!(
            v["categoriesAnalysis"][0],
            json!({"category": "Hate", "severity": 6})
        );
        assert_eq!(v["categoriesAnalysis"][1]["severity"], 0);
        // Key, version, body.
        assert_eq!(
            run(Service::Azure, &parts(uri, &[]), r#"{"text":"x"}"#, &none).0,
            401
        );
        let unversioned = parts(
            "/contentsafety/text:analyze",
            &[("ocp-apim-subscription-key", "k")],
        );
        assert_eq!(
            run(Service::Azure, &unversioned, r#"{"text":"x"}"#, &none).0,
            404
        );
        for body in [
            "x",
            r#"{}"#,
            r#"{"text":""}"#,
            r#"{"text":"x","categories":["Spam"]}"#,
        ] {
            assert_eq!(run(Service::Azure, &p, body, &none).0, 400, "{body}");
        }
        let long = json!({ "text": "a".repeat(10_001) }).to_string();
        assert_eq!(run(Service::Azure, &p, &long, &none).0, 400);
        let st = MockHeaders {
            status: Some(500),
            ..Default::default()
        };
        let (s, v) = run(Service::Azure, &p, r#"{"text":"x"}"#, &st);
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (500, Some("InternalServerError"))
        );
    }

    #[test]
    fn webhook() {
        let p = parts("/guardrail-webhook", &[]);
        let none = MockHeaders::default();
        let (s, v) = run(
            Service::Webhook,
            &p,
            r#"{"guardrail":"g","direction":"request","texts":["a","b"]}"#,
            &none,
        );
        assert_eq!((s, v), (200, json!({"action": "allow"})));
        let (s, v) = run(
            Service::Webhook,
            &p,
            r#"{"guardrail":"g","direction":"response","texts":["a","forbidden"]}"#,
            &none,
        );
        assert_eq!(s, 200);
        assert_eq!(v["action"], "block");
        for body in [
            "[]",
            r#"{"direction":"up","texts":[],"guardrail":"g"}"#,
            r#"{"direction":"request","texts":[1],"guardrail":"g"}"#,
            r#"{"direction":"request","texts":[]}"#,
        ] {
            assert_eq!(run(Service::Webhook, &p, body, &none).0, 400, "{body}");
        }
        let st = MockHeaders {
            status: Some(502),
            ..Default::default()
        };
        assert_eq!(run(Service::Webhook, &p, "{}", &st).0, 502);
    }

    /// Callouts exactly as LLMux's `guard::remote` signs them (src/guard/remote.rs, the mock's
    /// credentials, region us-east-1, at `T`): LLMux's signer and the mock's verifier agree,
    /// the ARN's `:` and `/` percent-encoded in the path and encoded again when signed.
    #[test]
    fn accepts_llmux_signed_callouts() {
        let body = r#"{"content":[{"text":{"text":"forbidden thing"}}],"source":"INPUT"}"#;
        let cases = [
            ("/guardrail/gr123/version/1/apply",
             "2269e4fae32b1229af4645383034cbbcf3395d1fc66984dae994545d9a7e3943"),
            ("/guardrail/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aguardrail%2Fabc/version/1/apply",
             "7e050419147d1318c654776b4d62711c4a58a81816daada621a81ccb74ded0b8"),
        ];
        for (path, sig) in cases {
            let auth = format!("AWS4-HMAC-SHA256 Credential=AKIDMOCKBEDROCK/20150830/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature={sig}");
            let p = parts(
                path,
                &[
                    ("host", "bedrock-runtime.us-east-1.amazonaws.com"),
                    ("content-type", "application/json"),
                    ("x-amz-date", "20150830T123600Z"),
                    ("authorization", &auth),
                ],
            );
            let (s, v) = run(Service::Bedrock, &p, body, &MockHeaders::default());
            assert_eq!(
                (s, v["action"].as_str()),
                (200, Some("GUARDRAIL_INTERVENED")),
                "{path}: {v}"
            );
        }
    }

    /// Over TCP: the routing (before the echo of `/moderations`), `x-mock-latency-ms`,
    /// `x-mock-reset`.
    #[test]
    fn served_with_steering() {
        use std::io::{Read, Write};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let state =
            std::sync::Arc::new(crate::server::State::new(crate::config::Config::default()));
        rt.spawn(crate::server::serve(listener, state));
        let send = |path: &str, extra: &str, body: &str| -> (std::time::Duration, String) {
            let start = std::time::Instant::now();
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            let req = format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            (start.elapsed(), out)
        };
        let (_, r) = send("/v1/moderations", "", r#"{"input":"forbidden"}"#);
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(
            r.contains(r#""flagged":true"#) && r.contains("mock.echo"),
            "{r}"
        );
        let hook = r#"{"guardrail":"g","direction":"request","texts":["hi"]}"#;
        let (t, r) = send("/guardrail-webhook", "x-mock-latency-ms: 200\r\n", hook);
        assert!(r.contains(r#"{"action":"allow"}"#), "{r}");
        assert!(t >= std::time::Duration::from_millis(200), "{t:?}");
        let (_, r) = send("/guardrail-webhook", "x-mock-reset: 1\r\n", hook);
        assert!(r.is_empty(), "{r}");
        let (_, r) = send("/guardrail-webhook", "x-mock-status: 503\r\n", hook);
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        let (_, r) = send(
            "/contentsafety/text:analyze?api-version=2024-09-01",
            "ocp-apim-subscription-key: k\r\nx-mock-text: nonsense\r\n",
            r#"{"text":"x"}"#,
        );
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("nonsense"),
            "{r}"
        );
        rt.shutdown_background();
    }
}
