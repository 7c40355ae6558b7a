//! The providers' token counters, so the gateway's `/v1/messages/count_tokens` can be tested
//! end to end: Anthropic `POST /v1/messages/count_tokens`, Gemini `models/{m}:countTokens`,
//! Vertex AI `publishers/google/models/{m}:countTokens` and Bedrock `model/{id}/count-tokens`.
//!
//! Deterministic: a token is a whitespace-separated word of any string in the prompt fields
//! (system prompt, messages or contents, tools), the values of `role` and `type` excepted, so
//! one prompt counts the same in every protocol. Each checks its request shape as the real API
//! documents it:
//! - Anthropic (https://docs.anthropic.com/en/api/messages-count-tokens): a Messages request
//!   without `max_tokens` or `stream` → `{"input_tokens": N}`.
//! - Gemini (https://ai.google.dev/api/tokens#method:-models.counttokens): `contents` or
//!   `generateContentRequest` (a full generateContent body with `model: "models/{m}"`), never
//!   both → `{"totalTokens": N, "promptTokensDetails": [...]}`.
//! - Vertex AI (CountTokensRequest): `contents`, `systemInstruction`, `tools`,
//!   `generationConfig` (and `model`, `instances`) at the top level →
//!   `{"totalTokens": N, "totalBillableCharacters": C}`.
//! - Bedrock (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_CountTokens.html):
//!   `{"input": {"converse": {messages, system, toolConfig, additionalModelRequestFields}}}` →
//!   `{"inputTokens": N}`.

use serde_json::{json, Map, Value};

/// Words of every string in `v` but the values of `role` and `type`.
pub fn words(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.split_whitespace().count() as u64,
        Value::Array(a) => a.iter().map(words).sum(),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| *k != "role" && *k != "type")
            .map(|(_, v)| words(v))
            .sum(),
        _ => 0,
    }
}

fn chars(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.chars().filter(|c| !c.is_whitespace()).count() as u64,
        Value::Array(a) => a.iter().map(chars).sum(),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| *k != "role" && *k != "type")
            .map(|(_, v)| chars(v))
            .sum(),
        _ => 0,
    }
}

fn prompt_words(o: &Map<String, Value>, fields: &[&str]) -> u64 {
    fields.iter().filter_map(|f| o.get(*f)).map(words).sum()
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{what}: Input should be a valid dictionary"))
}

/// Fields of Anthropic's count request.
const ANTHROPIC_FIELDS: &[&str] = &[
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "thinking",
    "mcp_servers",
    "context_management",
    "output_config",
    "output_format",
];

/// Anthropic: the answer's body, or the message of a 400 `invalid_request_error`.
pub fn anthropic(body: &Value) -> Result<Vec<u8>, String> {
    let o = object(body, "body")?;
    if let Some(k) = o.keys().find(|k| !ANTHROPIC_FIELDS.contains(&k.as_str())) {
        return Err(format!("{k}: Extra inputs are not permitted"));
    }
    if o.get("model")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("model: Field required".into());
    }
    let messages = o
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: Field required")?;
    if messages.is_empty() {
        return Err("messages: List should have at least 1 item".into());
    }
    for (i, m) in messages.iter().enumerate() {
        match m.get("role").and_then(Value::as_str) {
            Some("user" | "assistant") => {}
            _ => {
                return Err(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                ))
            }
        }
    }
    let n = prompt_words(o, &["system", "messages", "tools"]);
    Ok(json!({ "input_tokens": n }).to_string().into_bytes())
}

/// Gemini AI Studio: the answer's body, or the message of a 400 `INVALID_ARGUMENT`.
pub fn gemini(body: &Value, model: &str) -> Result<Vec<u8>, String> {
    let o = object(body, "body")?;
    if let Some(k) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "contents" | "generateContentRequest"))
    {
        return Err(format!(
            "Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."
        ));
    }
    let n = match (o.get("contents"), o.get("generateContentRequest")) {
        (Some(_), Some(_)) => {
            return Err("contents and generateContentRequest are mutually exclusive".into())
        }
        (None, None) => return Err("* CountTokensRequest: contents is not specified".into()),
        (Some(c), None) => {
            crate::gemini::validate(&json!({ "contents": c }))?;
            words(c)
        }
        (None, Some(r)) => {
            let mut r = object(r, "generateContentRequest")?.clone();
            let want = format!("models/{model}");
            match r.remove("model") {
                Some(Value::String(m)) if m == want => {}
                Some(m) => {
                    return Err(format!(
                        "generateContentRequest.model: {m} does not match the URL's {want}"
                    ))
                }
                None => return Err("generateContentRequest.model is required".into()),
            }
            crate::gemini::validate(&Value::Object(r.clone()))?;
            prompt_words(&r, &["contents", "systemInstruction", "tools"])
        }
    };
    Ok(json!({
        "totalTokens": n,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": n}],
    })
    .to_string()
    .into_bytes())
}

/// Vertex AI's CountTokensRequest fields.
const VERTEX_FIELDS: &[&str] = &[
    "model",
    "instances",
    "contents",
    "tools",
    "systemInstruction",
    "generationConfig",
];

/// Vertex AI Gemini: the answer's body, or the message of a 400 `INVALID_ARGUMENT`.
pub fn vertex(body: &Value) -> Result<Vec<u8>, String> {
    let o = object(body, "body")?;
    if let Some(k) = o.keys().find(|k| !VERTEX_FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "Invalid JSON payload received. Unknown name \"{k}\": Cannot find field."
        ));
    }
    let mut generate = o.clone();
    generate.remove("model");
    generate.remove("instances");
    crate::gemini::validate(&Value::Object(generate))?;
    let fields = ["contents", "systemInstruction", "tools"];
    let billable: u64 = fields.iter().filter_map(|f| o.get(*f)).map(chars).sum();
    Ok(json!({
        "totalTokens": prompt_words(o, &fields),
        "totalBillableCharacters": billable,
    })
    .to_string()
    .into_bytes())
}

/// Bedrock's ConverseTokensRequest fields.
const CONVERSE_FIELDS: &[&str] = &[
    "messages",
    "system",
    "toolConfig",
    "additionalModelRequestFields",
];

/// Bedrock: the answer's body, or the message of a ValidationException.
pub fn bedrock(body: &Value) -> Result<Vec<u8>, String> {
    let o = object(body, "body")?;
    if o.len() != 1 {
        return Err("Malformed input request: the body must be exactly {\"input\": {...}}".into());
    }
    let input = o
        .get("input")
        .and_then(Value::as_object)
        .ok_or("Malformed input request: #: required key [input] not found")?;
    let converse =
        match (input.get("converse"), input.get("invokeModel"), input.len()) {
            (Some(c), None, 1) => object(c, "input.converse")?,
            (None, Some(_), 1) => return Err("mock: only input.converse is counted".into()),
            _ => return Err(
                "Malformed input request: input must hold exactly one of converse or invokeModel"
                    .into(),
            ),
        };
    if let Some(k) = converse
        .keys()
        .find(|k| !CONVERSE_FIELDS.contains(&k.as_str()))
    {
        return Err(format!(
            "Malformed input request: input.converse: extraneous key [{k}] is not permitted, please reformat your input and try again."
        ));
    }
    crate::bedrock::validate_converse(&Value::Object(converse.clone()))?;
    let n = prompt_words(converse, &["system", "messages", "toolConfig"]);
    Ok(json!({ "inputTokens": n }).to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_prompt_counts_the_same_in_every_protocol() {
        let anthropic_body = json!({"model": "claude", "system": "Be brief.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "How warm is Paris?"}]}]});
        let v: Value = serde_json::from_slice(&anthropic(&anthropic_body).unwrap()).unwrap();
        assert_eq!(v, json!({"input_tokens": 6}));

        let contents = json!([{"role": "user", "parts": [{"text": "How warm is Paris?"}]}]);
        let system = json!({"parts": [{"text": "Be brief."}]});
        let g = json!({"generateContentRequest": {"model": "models/gemini-2.5-flash",
            "contents": contents, "systemInstruction": system}});
        let v: Value = serde_json::from_slice(&gemini(&g, "gemini-2.5-flash").unwrap()).unwrap();
        assert_eq!(v["totalTokens"], 6);
        let v: Value =
            serde_json::from_slice(&gemini(&json!({"contents": contents}), "m").unwrap()).unwrap();
        assert_eq!(v["totalTokens"], 4, "contents alone");

        let vx = json!({"contents": contents, "systemInstruction": system});
        let v: Value = serde_json::from_slice(&vertex(&vx).unwrap()).unwrap();
        assert_eq!(v["totalTokens"], 6);
        assert_eq!(v["totalBillableCharacters"], 23);

        let b = json!({"input": {"converse": {"system": [{"text": "Be brief."}],
            "messages": [{"role": "user", "content": [{"text": "How warm is Paris?"}]}]}}});
        let v: Value = serde_json::from_slice(&bedrock(&b).unwrap()).unwrap();
        assert_eq!(v, json!({"inputTokens": 6}));
    }

    #[test]
    fn each_counter_refuses_what_its_api_refuses() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        assert!(
            anthropic(&json!({"model": "c", "messages": msgs, "max_tokens": 5}))
                .unwrap_err()
                .contains("max_tokens")
        );
        assert!(anthropic(&json!({"model": "c", "messages": []})).is_err());
        assert!(anthropic(&json!({"messages": msgs})).is_err());

        let contents = json!([{"role": "user", "parts": [{"text": "hi"}]}]);
        let gcr =
            |model: &str| json!({"generateContentRequest": {"model": model, "contents": contents}});
        assert!(gemini(&gcr("models/g"), "g").is_ok());
        assert!(gemini(&gcr("models/other"), "g")
            .unwrap_err()
            .contains("does not match"));
        assert!(gemini(
            &json!({"contents": contents, "generateContentRequest": {}}),
            "g"
        )
        .is_err());
        assert!(
            gemini(
                &json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}),
                "g"
            )
            .is_err(),
            "the generateContent checks apply"
        );
        assert!(gemini(&json!({"model": "models/g", "contents": contents}), "g").is_err());

        assert!(vertex(&json!({"generateContentRequest": {"contents": contents}})).is_err());
        assert!(vertex(&json!({"contents": contents, "toolConfig": {}})).is_err());

        let conv = json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]});
        assert!(bedrock(&json!({"input": {"converse": conv}})).is_ok());
        assert!(bedrock(&json!({"converse": conv})).is_err());
        let mut extra = conv.clone();
        extra["inferenceConfig"] = json!({"maxTokens": 5});
        assert!(bedrock(&json!({"input": {"converse": extra}}))
            .unwrap_err()
            .contains("inferenceConfig"));
    }
}
