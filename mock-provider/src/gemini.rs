//! Google Gemini API (`generateContent`, `streamGenerateContent?alt=sse`): strict request
//! validation, responses (JSON and SSE with CRLF framing) and error bodies.
//!
//! Field errors follow the real API's wording for protobuf JSON: an unknown field is
//! `Invalid JSON payload received. Unknown name "x" at 'path': Cannot find field.`, a bad enum
//! value `Invalid value at 'path' (...), "X"`, both 400 `INVALID_ARGUMENT`.

use crate::mock::{self, Event, MockHeaders, Plan};
use serde_json::{json, Map, Value};

const TOP_LEVEL: &[&str] = &[
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "safetySettings",
    "cachedContent",
    "generationConfig",
    "serviceTier",
];

const GENERATION_CONFIG: &[&str] = &[
    "temperature",
    "topP",
    "topK",
    "candidateCount",
    "maxOutputTokens",
    "stopSequences",
    "responseLogprobs",
    "logprobs",
    "presencePenalty",
    "frequencyPenalty",
    "seed",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "mediaResolution",
    "speechConfig",
    "thinkingConfig",
    "imageConfig",
    "enableEnhancedCivicAnswers",
];

const PART_DATA: &[&str] = &[
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
];

const PART_KEYS: &[&str] = &[
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "executableCode",
    "codeExecutionResult",
    "thought",
    "thoughtSignature",
    "videoMetadata",
    "partMetadata",
];

/// The placeholder Google documents for function calls without a real thought signature.
pub const SKIP_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

/// `google.rpc` status name and default message for an HTTP status (`x-mock-status`).
pub fn error_kind(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("INVALID_ARGUMENT", "Request contains an invalid argument."),
        401 => (
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        ),
        403 => ("PERMISSION_DENIED", "The caller does not have permission"),
        404 => (
            "NOT_FOUND",
            "models/mock is not found for API version v1beta, or is not supported for generateContent.",
        ),
        429 => (
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
        ),
        499 => ("CANCELLED", "The operation was cancelled."),
        500 => (
            "INTERNAL",
            "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
        ),
        503 => ("UNAVAILABLE", "The model is overloaded. Please try again later."),
        504 => ("DEADLINE_EXCEEDED", "The request timed out. Please try again."),
        s if s >= 500 => ("INTERNAL", "An internal error has occurred."),
        _ => ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    }
}

/// `{"error":{"code","message","status"[,"details"]}}`.
pub fn error_body(code: u16, status: &str, message: &str, details: Option<Value>) -> Vec<u8> {
    let mut e = json!({"code": code, "message": message, "status": status});
    if let (Some(d), Some(o)) = (details, e.as_object_mut()) {
        o.insert("details".into(), d);
    }
    json!({ "error": e }).to_string().into_bytes()
}

/// The error body for `x-mock-status`; 429 carries QuotaFailure and RetryInfo (`retryDelay`
/// 37s) details like the real API.
pub fn status_error_body(status: u16) -> Vec<u8> {
    let (name, message) = error_kind(status);
    let details = (status == 429).then(|| {
        json!([
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                             "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}
        ])
    });
    error_body(status, name, message, details)
}

type VResult = Result<(), String>;

fn unknown(key: &str, path: &str) -> String {
    if path.is_empty() {
        format!("Invalid JSON payload received. Unknown name \"{key}\": Cannot find field.")
    } else {
        format!(
            "Invalid JSON payload received. Unknown name \"{key}\" at '{path}': Cannot find field."
        )
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn no_extra(o: &Map<String, Value>, allowed: &[&str], path: &str) -> VResult {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(unknown(k, path)),
        None => Ok(()),
    }
}

fn obj<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object().ok_or_else(|| {
        format!("Invalid JSON payload received. Expected an object at '{path}', got {v}.")
    })
}

fn arr<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, String> {
    v.as_array().ok_or_else(|| {
        format!("Invalid JSON payload received. Expected a list at '{path}', got {v}.")
    })
}

fn string<'a>(v: &'a Value, path: &str) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("Invalid value at '{path}' (TYPE_STRING), {v}"))
}

fn number(v: &Value, path: &str) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| format!("Invalid value at '{path}' (TYPE_FLOAT), {v}"))
}

fn int32(v: &Value, path: &str) -> Result<i64, String> {
    match v.as_i64() {
        Some(i) if i32::try_from(i).is_ok() => Ok(i),
        _ => Err(format!("Invalid value at '{path}' (TYPE_INT32), {v}")),
    }
}

fn boolean(v: &Value, path: &str) -> VResult {
    if v.is_boolean() {
        Ok(())
    } else {
        Err(format!("Invalid value at '{path}' (TYPE_BOOL), {v}"))
    }
}

fn enum_value<'a>(
    v: &'a Value,
    path: &str,
    kind: &str,
    allowed: &[&str],
) -> Result<&'a str, String> {
    match v.as_str() {
        Some(s) if allowed.contains(&s) => Ok(s),
        _ => Err(format!(
            "Invalid value at '{path}' (type.googleapis.com/google.ai.generativelanguage.v1beta.{kind}), {v}"
        )),
    }
}

/// Standard base64 (what protobuf `bytes` fields take in JSON; URL-safe letters accepted too).
fn is_base64(s: &str) -> bool {
    !s.is_empty()
        && s.len().is_multiple_of(4)
        && s.trim_end_matches('=').len() + 2 >= s.len()
        && s.trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'))
}

fn bytes_field(v: &Value, path: &str) -> VResult {
    let s = string(v, path)?;
    if is_base64(s) {
        Ok(())
    } else {
        Err(format!(
            "Invalid value at '{path}' (TYPE_BYTES), Base64 decoding failed for \"{}\"",
            mock::first_chars(s, 40)
        ))
    }
}

/// Validates a `generateContent` body the way the real API does (strictly). The error is the
/// message of a 400 `INVALID_ARGUMENT`.
pub fn validate(body: &Value) -> VResult {
    let o = body
        .as_object()
        .ok_or_else(|| "Invalid JSON payload received. Expected an object.".to_string())?;
    no_extra(o, TOP_LEVEL, "")?;
    let tool_names = validate_tools(o)?;
    let contents = match o.get("contents") {
        Some(c) => arr(c, "contents")?,
        None => return Err("* GenerateContentRequest.contents: contents is not specified".into()),
    };
    if contents.is_empty() {
        return Err("* GenerateContentRequest.contents: contents is not specified".into());
    }
    // Function calls of the previous model turn (names), to be answered by the next user turn.
    let mut pending_calls: Vec<String> = Vec::new();
    for (i, c) in contents.iter().enumerate() {
        let p = format!("contents[{i}]");
        let co = obj(c, &p)?;
        no_extra(co, &["role", "parts"], &p)?;
        let role = match co.get("role") {
            None => "user",
            Some(r) => string(r, &join(&p, "role"))?,
        };
        if role != "user" && role != "model" {
            return Err(format!(
                "Please use a valid role: user, model. (got \"{role}\" at '{p}.role')"
            ));
        }
        let parts = match co.get("parts") {
            Some(v) => arr(v, &join(&p, "parts"))?,
            None => {
                return Err(format!(
                    "* GenerateContentRequest.{p}.parts: contents.parts must not be empty."
                ))
            }
        };
        if parts.is_empty() {
            return Err(format!(
                "* GenerateContentRequest.{p}.parts: contents.parts must not be empty."
            ));
        }
        let mut calls = Vec::new();
        let mut responses = Vec::new();
        for (j, part) in parts.iter().enumerate() {
            let pp = format!("{p}.parts[{j}]");
            match validate_part(part, &pp, role)? {
                PartKind::Call(name) => {
                    // Like Gemini 3: the first function call of a turn must be signed.
                    if calls.is_empty() && part.get("thoughtSignature").is_none() {
                        return Err(format!(
                            "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `{name}` , position {}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
                            j + 1
                        ));
                    }
                    calls.push(name)
                }
                PartKind::Response(name) => responses.push(name),
                PartKind::Other => {}
            }
        }
        if !responses.is_empty() {
            if pending_calls.is_empty() {
                return Err(format!(
                    "Please ensure that function response turn comes immediately after a function call turn. ({p})"
                ));
            }
            if responses.len() != pending_calls.len() {
                return Err(format!(
                    "Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn. ({p}: {} responses, {} calls)",
                    responses.len(),
                    pending_calls.len()
                ));
            }
            if let Some(n) = responses.iter().find(|n| !pending_calls.contains(n)) {
                return Err(format!(
                    "{p}: function response `{n}` does not answer a function call of the previous turn"
                ));
            }
        } else if !pending_calls.is_empty() && role == "user" {
            return Err(format!(
                "Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn. ({p}: 0 responses, {} calls)",
                pending_calls.len()
            ));
        }
        for name in &calls {
            if !tool_names.is_empty() && !tool_names.contains(name) {
                return Err(format!(
                    "{p}: function call `{name}` names no declared function"
                ));
            }
        }
        pending_calls = calls;
    }
    if let Some(si) = o.get("systemInstruction") {
        let so = obj(si, "system_instruction")?;
        no_extra(so, &["role", "parts"], "system_instruction")?;
        let parts = arr(
            so.get("parts").unwrap_or(&Value::Null),
            "system_instruction.parts",
        )?;
        for (j, part) in parts.iter().enumerate() {
            let pp = format!("system_instruction.parts[{j}]");
            let po = obj(part, &pp)?;
            if !po.contains_key("text") {
                return Err(format!("{pp}: system instruction parts must be text"));
            }
            validate_part(part, &pp, "user")?;
        }
    }
    if let Some(tc) = o.get("toolConfig") {
        let t = obj(tc, "tool_config")?;
        no_extra(
            t,
            &["functionCallingConfig", "retrievalConfig"],
            "tool_config",
        )?;
        if let Some(f) = t.get("functionCallingConfig") {
            let fp = "tool_config.function_calling_config";
            let fo = obj(f, fp)?;
            no_extra(
                fo,
                &[
                    "mode",
                    "allowedFunctionNames",
                    "streamFunctionCallArguments",
                ],
                fp,
            )?;
            let mode = match fo.get("mode") {
                Some(m) => enum_value(
                    m,
                    &format!("{fp}.mode"),
                    "FunctionCallingConfig.Mode",
                    &["MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED"],
                )?,
                None => "AUTO",
            };
            if let Some(names) = fo.get("allowedFunctionNames") {
                let names = arr(names, &format!("{fp}.allowed_function_names"))?;
                if mode != "ANY" && mode != "VALIDATED" && !names.is_empty() {
                    return Err(
                        "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: allowed_function_names should be set only when mode is ANY or VALIDATED."
                            .into(),
                    );
                }
                for (k, n) in names.iter().enumerate() {
                    let n = string(n, &format!("{fp}.allowed_function_names[{k}]"))?;
                    if !tool_names.iter().any(|t| t == n) {
                        return Err(format!(
                            "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names[{k}]: function `{n}` is not declared in tools."
                        ));
                    }
                }
            }
        }
    }
    if let Some(g) = o.get("generationConfig") {
        validate_generation_config(g)?;
    }
    if let Some(s) = o.get("safetySettings") {
        for (k, item) in arr(s, "safety_settings")?.iter().enumerate() {
            let p = format!("safety_settings[{k}]");
            no_extra(obj(item, &p)?, &["category", "threshold", "method"], &p)?;
        }
    }
    Ok(())
}

enum PartKind {
    Call(String),
    Response(String),
    Other,
}

fn validate_part(part: &Value, pp: &str, role: &str) -> Result<PartKind, String> {
    let po = obj(part, pp)?;
    no_extra(po, PART_KEYS, pp)?;
    let data: Vec<&str> = PART_DATA
        .iter()
        .copied()
        .filter(|k| po.contains_key(*k))
        .collect();
    if data.len() != 1 {
        return Err(format!(
            "* GenerateContentRequest.{pp}.data: required oneof field 'data' must have one initialized field"
        ));
    }
    if let Some(t) = po.get("thought") {
        boolean(t, &format!("{pp}.thought"))?;
    }
    if let Some(s) = po.get("thoughtSignature") {
        let sp = format!("{pp}.thought_signature");
        if s.as_str() != Some(SKIP_THOUGHT_SIGNATURE) {
            bytes_field(s, &sp)?;
        }
    }
    match data.first().copied().unwrap_or("") {
        "text" => {
            let t = string(
                po.get("text").unwrap_or(&Value::Null),
                &format!("{pp}.text"),
            )?;
            if t.is_empty() {
                return Err(
                    "Unable to submit request because it has an empty text parameter. Add a value to the parameter and try again."
                        .into(),
                );
            }
            Ok(PartKind::Other)
        }
        "inlineData" => {
            let ip = format!("{pp}.inline_data");
            let b = obj(po.get("inlineData").unwrap_or(&Value::Null), &ip)?;
            no_extra(b, &["mimeType", "data"], &ip)?;
            let mime = string(
                b.get("mimeType").unwrap_or(&Value::Null),
                &format!("{ip}.mime_type"),
            )?;
            let supported = mime.starts_with("image/")
                || mime.starts_with("audio/")
                || mime.starts_with("video/")
                || mime == "application/pdf"
                || mime.starts_with("text/");
            if !supported {
                return Err(format!("Unsupported MIME type: {mime}"));
            }
            bytes_field(b.get("data").unwrap_or(&Value::Null), &format!("{ip}.data"))?;
            Ok(PartKind::Other)
        }
        "fileData" => {
            let fp = format!("{pp}.file_data");
            let f = obj(po.get("fileData").unwrap_or(&Value::Null), &fp)?;
            no_extra(f, &["mimeType", "fileUri"], &fp)?;
            if let Some(m) = f.get("mimeType") {
                string(m, &format!("{fp}.mime_type"))?;
            }
            let uri = string(
                f.get("fileUri").unwrap_or(&Value::Null),
                &format!("{fp}.file_uri"),
            )?;
            if !(uri.starts_with("https://")
                || uri.starts_with("http://")
                || uri.starts_with("gs://"))
            {
                return Err(format!("Invalid file_uri: {uri}"));
            }
            Ok(PartKind::Other)
        }
        "functionCall" => {
            let fp = format!("{pp}.function_call");
            if role != "model" {
                return Err(format!(
                    "Please ensure that function call parts are in a model turn. ({pp})"
                ));
            }
            let f = obj(po.get("functionCall").unwrap_or(&Value::Null), &fp)?;
            no_extra(f, &["id", "name", "args"], &fp)?;
            let name = string(f.get("name").unwrap_or(&Value::Null), &format!("{fp}.name"))?;
            if let Some(a) = f.get("args") {
                obj(a, &format!("{fp}.args"))?;
            }
            Ok(PartKind::Call(name.to_string()))
        }
        "functionResponse" => {
            let fp = format!("{pp}.function_response");
            if role != "user" {
                return Err(format!(
                    "Please ensure that function response parts are in a user turn. ({pp})"
                ));
            }
            let f = obj(po.get("functionResponse").unwrap_or(&Value::Null), &fp)?;
            no_extra(
                f,
                &[
                    "id",
                    "name",
                    "response",
                    "parts",
                    "willContinue",
                    "scheduling",
                ],
                &fp,
            )?;
            let name = string(f.get("name").unwrap_or(&Value::Null), &format!("{fp}.name"))?;
            obj(
                f.get("response").unwrap_or(&Value::Null),
                &format!("{fp}.response"),
            )?;
            Ok(PartKind::Response(name.to_string()))
        }
        _ => Ok(PartKind::Other),
    }
}

fn validate_tools(o: &Map<String, Value>) -> Result<Vec<String>, String> {
    let Some(tools) = o.get("tools") else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    for (k, t) in arr(tools, "tools")?.iter().enumerate() {
        let p = format!("tools[{k}]");
        let to = obj(t, &p)?;
        no_extra(
            to,
            &[
                "functionDeclarations",
                "googleSearch",
                "googleSearchRetrieval",
                "codeExecution",
                "urlContext",
                "computerUse",
                "fileSearch",
                "googleMaps",
            ],
            &p,
        )?;
        let Some(decls) = to.get("functionDeclarations") else {
            continue;
        };
        for (j, d) in arr(decls, &format!("{p}.function_declarations"))?
            .iter()
            .enumerate()
        {
            let dp = format!("{p}.function_declarations[{j}]");
            let dobj = obj(d, &dp)?;
            no_extra(
                dobj,
                &[
                    "name",
                    "description",
                    "parameters",
                    "parametersJsonSchema",
                    "response",
                    "responseJsonSchema",
                    "behavior",
                ],
                &dp,
            )?;
            let name = string(
                dobj.get("name").unwrap_or(&Value::Null),
                &format!("{dp}.name"),
            )?;
            let valid = name.len() <= 64
                && name
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
            if !valid {
                return Err(format!(
                    "* GenerateContentRequest.{dp}.name: Invalid function name. Must start with a letter or an underscore. Must be alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), with a maximum length of 64."
                ));
            }
            if let Some(d) = dobj.get("description") {
                string(d, &format!("{dp}.description"))?;
            }
            if dobj.contains_key("parameters") && dobj.contains_key("parametersJsonSchema") {
                return Err(format!(
                    "* GenerateContentRequest.{dp}: parameters and parameters_json_schema are mutually exclusive"
                ));
            }
            if let Some(s) = dobj.get("parametersJsonSchema") {
                obj(s, &format!("{dp}.parameters_json_schema"))?;
            }
            if let Some(s) = dobj.get("parameters") {
                // The OpenAPI-subset Schema: JSON-Schema-only keywords are unknown fields here.
                validate_openapi_schema(s, &format!("{dp}.parameters"))?;
            }
            if names.iter().any(|n| n == name) {
                return Err(format!(
                    "* GenerateContentRequest.{dp}.name: duplicate function name `{name}`"
                ));
            }
            names.push(name.to_string());
        }
    }
    Ok(names)
}

const OPENAPI_SCHEMA: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

fn validate_openapi_schema(s: &Value, path: &str) -> VResult {
    let so = obj(s, path)?;
    no_extra(so, OPENAPI_SCHEMA, path)?;
    if let Some(props) = so.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            validate_openapi_schema(v, &format!("{path}.properties[{k}].value"))?;
        }
    }
    if let Some(items) = so.get("items") {
        validate_openapi_schema(items, &format!("{path}.items"))?;
    }
    Ok(())
}

fn validate_generation_config(g: &Value) -> VResult {
    let p = "generation_config";
    let go = obj(g, p)?;
    no_extra(go, GENERATION_CONFIG, p)?;
    if let Some(v) = go.get("temperature") {
        let t = number(v, "generation_config.temperature")?;
        if !(0.0..=2.0).contains(&t) {
            return Err("* GenerateContentRequest.generation_config.temperature: temperature must be in [0, 2]".into());
        }
    }
    if let Some(v) = go.get("topP") {
        let t = number(v, "generation_config.top_p")?;
        if !(0.0..=1.0).contains(&t) {
            return Err(
                "* GenerateContentRequest.generation_config.top_p: top_p must be in [0, 1]".into(),
            );
        }
    }
    if let Some(v) = go.get("topK") {
        int32(v, "generation_config.top_k")?;
    }
    if let Some(v) = go.get("candidateCount") {
        let n = int32(v, "generation_config.candidate_count")?;
        if !(1..=8).contains(&n) {
            return Err("* GenerateContentRequest.generation_config.candidate_count: candidate_count must be in [1, 8]".into());
        }
    }
    if let Some(v) = go.get("maxOutputTokens") {
        if int32(v, "generation_config.max_output_tokens")? < 1 {
            return Err("* GenerateContentRequest.generation_config.max_output_tokens: max_output_tokens must be positive".into());
        }
    }
    if let Some(v) = go.get("stopSequences") {
        let s = arr(v, "generation_config.stop_sequences")?;
        if s.len() > 5 {
            return Err("* GenerateContentRequest.generation_config.stop_sequences: at most 5 stop sequences".into());
        }
        for (k, x) in s.iter().enumerate() {
            string(x, &format!("generation_config.stop_sequences[{k}]"))?;
        }
    }
    if let Some(v) = go.get("seed") {
        int32(v, "generation_config.seed")?;
    }
    for (k, path) in [
        ("presencePenalty", "generation_config.presence_penalty"),
        ("frequencyPenalty", "generation_config.frequency_penalty"),
    ] {
        if let Some(v) = go.get(k) {
            number(v, path)?;
        }
    }
    let mime = match go.get("responseMimeType") {
        Some(v) => {
            let m = string(v, "generation_config.response_mime_type")?;
            if !matches!(m, "text/plain" | "application/json" | "text/x.enum") {
                return Err(format!("* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes are `text/plain`, `application/json`, and `text/x.enum`. (got {m})"));
            }
            Some(m)
        }
        None => None,
    };
    if go.contains_key("responseJsonSchema") {
        obj(
            go.get("responseJsonSchema").unwrap_or(&Value::Null),
            "generation_config.response_json_schema",
        )?;
        if go.contains_key("responseSchema") {
            return Err("* GenerateContentRequest.generation_config: response_schema and response_json_schema are mutually exclusive".into());
        }
        if mime != Some("application/json") {
            return Err("* GenerateContentRequest.generation_config.response_mime_type: response_json_schema requires response_mime_type `application/json`".into());
        }
    }
    if let Some(t) = go.get("thinkingConfig") {
        let tp = "generation_config.thinking_config";
        let to = obj(t, tp)?;
        no_extra(
            to,
            &["thinkingBudget", "includeThoughts", "thinkingLevel"],
            tp,
        )?;
        if let Some(b) = to.get("thinkingBudget") {
            let b = int32(b, "generation_config.thinking_config.thinking_budget")?;
            if !(-1..=32768).contains(&b) {
                return Err("* GenerateContentRequest.generation_config.thinking_config.thinking_budget: thinking_budget must be -1 or in [0, 32768]".into());
            }
        }
        if let Some(v) = to.get("includeThoughts") {
            boolean(v, "generation_config.thinking_config.include_thoughts")?;
        }
        if let Some(v) = to.get("thinkingLevel") {
            enum_value(
                v,
                "generation_config.thinking_config.thinking_level",
                "ThinkingConfig.ThinkingLevel",
                &[
                    "THINKING_LEVEL_UNSPECIFIED",
                    "MINIMAL",
                    "LOW",
                    "MEDIUM",
                    "HIGH",
                ],
            )?;
        }
    }
    Ok(())
}

/// Text of the last user content (its text parts, concatenated).
pub fn last_user_text(body: &Value) -> String {
    body.get("contents")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter().rev().find(|c| {
                c.get("role").and_then(Value::as_str).unwrap_or("user") == "user"
                    && c.get("parts")
                        .and_then(Value::as_array)
                        .is_some_and(|p| p.iter().any(|p| p.get("text").is_some()))
            })
        })
        .and_then(|c| c.get("parts").and_then(Value::as_array))
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// Text of the last `functionResponse` part (for `x-mock-tool-use`): its `response.output`
/// when that is a string (how a text tool result is wrapped), else `response` as JSON; `None`
/// when there is none.
pub fn last_tool_result(body: &Value) -> Option<String> {
    let response = body
        .get("contents")?
        .as_array()?
        .iter()
        .filter_map(|c| c.get("parts").and_then(Value::as_array))
        .flatten()
        .rev()
        .find_map(|p| p.get("functionResponse"))?
        .get("response")
        .cloned()
        .unwrap_or(Value::Null);
    Some(match response.get("output") {
        Some(Value::String(s)) if response.as_object().is_some_and(|o| o.len() == 1) => s.clone(),
        _ => response.to_string(),
    })
}

/// Declared function names, in order.
pub fn tool_names(body: &Value) -> Vec<String> {
    body.get("tools")
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t.get("functionDeclarations").and_then(Value::as_array))
                .flatten()
                .filter_map(|d| d.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn candidate_count(body: &Value) -> usize {
    body.pointer("/generationConfig/candidateCount")
        .and_then(Value::as_u64)
        .map_or(1, |n| n.clamp(1, 8) as usize)
}

fn wants_thoughts(body: &Value) -> bool {
    body.pointer("/generationConfig/thinkingConfig/includeThoughts")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The deterministic thought signature of function call `i` (base64 of `mock-sig-<i>`).
pub fn signature(i: usize) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("mock-sig-{i}");
    let bytes = raw.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

const THOUGHT: &str = "Thinking about the answer.";
const THOUGHT_TOKENS: u64 = 5;

fn finish(mock: &MockHeaders) -> String {
    mock.finish.clone().unwrap_or_else(|| "STOP".to_string())
}

fn usage(plan: &Plan, thoughts: bool) -> Value {
    let mut u = json!({
        "promptTokenCount": plan.input_tokens + plan.cache_read,
        "candidatesTokenCount": plan.output_tokens,
        "totalTokenCount": plan.input_tokens + plan.cache_read + plan.output_tokens + if thoughts { THOUGHT_TOKENS } else { 0 },
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": plan.input_tokens + plan.cache_read}],
    });
    if let Some(o) = u.as_object_mut() {
        if plan.cache_read > 0 {
            o.insert("cachedContentTokenCount".into(), json!(plan.cache_read));
        }
        if thoughts {
            o.insert("thoughtsTokenCount".into(), json!(THOUGHT_TOKENS));
        }
    }
    u
}

fn call_parts(plan: &Plan) -> Vec<Value> {
    plan.tool_calls
        .iter()
        .map(|c| {
            let args: Value = serde_json::from_str(&c.arguments).unwrap_or(Value::Null);
            let mut part = json!({"functionCall": {"name": c.name, "args": args}});
            // Like Gemini 3: the first call of a turn carries the thought signature.
            if c.index == 0 {
                if let Some(o) = part.as_object_mut() {
                    o.insert("thoughtSignature".into(), json!(signature(0)));
                }
            }
            part
        })
        .collect()
}

/// `x-mock-block-reason: REASON`: the prompt is blocked (no candidates).
fn blocked(reason: &str, plan: &Plan, id: &str, model: &str) -> Value {
    json!({
        "promptFeedback": {"blockReason": reason, "safetyRatings": [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]},
        "usageMetadata": {"promptTokenCount": plan.input_tokens, "totalTokenCount": plan.input_tokens},
        "modelVersion": model,
        "responseId": id,
    })
}

/// Non-streaming GenerateContentResponse.
pub fn response_body(
    id: &str,
    model: &str,
    plan: &Plan,
    mock: &MockHeaders,
    body: &Value,
    block_reason: Option<&str>,
) -> Vec<u8> {
    if let Some(r) = block_reason {
        return blocked(r, plan, id, model).to_string().into_bytes();
    }
    let thoughts = wants_thoughts(body);
    let mut parts = Vec::new();
    if thoughts {
        parts.push(json!({"text": THOUGHT, "thought": true}));
    }
    if let Some(t) = &plan.text {
        parts.push(json!({"text": t}));
    }
    parts.extend(call_parts(plan));
    let reason = finish(mock);
    let candidates: Vec<Value> = (0..candidate_count(body))
        .map(|i| {
            json!({
                "content": {"parts": parts, "role": "model"},
                "finishReason": reason,
                "index": i,
            })
        })
        .collect();
    json!({
        "candidates": candidates,
        "usageMetadata": usage(plan, thoughts),
        "modelVersion": model,
        "responseId": id,
    })
    .to_string()
    .into_bytes()
}

fn event(v: &Value) -> Event {
    format!("data: {v}\r\n\r\n")
}

/// Normal stream events (everything before the last one, which carries `finishReason`): one per
/// text delta and one per function call, each a whole GenerateContentResponse.
pub fn stream_events(id: &str, model: &str, plan: &Plan, body: &Value) -> Vec<Event> {
    let n = candidate_count(body);
    let thoughts = wants_thoughts(body);
    let prompt = json!({"promptTokenCount": plan.input_tokens + plan.cache_read, "totalTokenCount": plan.input_tokens + plan.cache_read});
    let chunk = |parts: Vec<Value>| {
        let candidates: Vec<Value> = (0..n)
            .map(|i| json!({"content": {"parts": parts, "role": "model"}, "index": i}))
            .collect();
        event(&json!({
            "candidates": candidates,
            "usageMetadata": prompt,
            "modelVersion": model,
            "responseId": id,
        }))
    };
    let mut ev = Vec::with_capacity(plan.deltas.len() + plan.tool_calls.len() + 1);
    if thoughts {
        ev.push(chunk(vec![json!({"text": THOUGHT, "thought": true})]));
    }
    for d in &plan.deltas {
        ev.push(chunk(vec![json!({"text": d})]));
    }
    for part in call_parts(plan) {
        ev.push(chunk(vec![part]));
    }
    ev
}

/// The last event: an empty text part, `finishReason` and the full usage.
pub fn final_event(id: &str, model: &str, plan: &Plan, mock: &MockHeaders, body: &Value) -> Event {
    let reason = finish(mock);
    let candidates: Vec<Value> = (0..candidate_count(body))
        .map(|i| json!({"content": {"parts": [{"text": ""}], "role": "model"}, "finishReason": reason, "index": i}))
        .collect();
    event(&json!({
        "candidates": candidates,
        "usageMetadata": usage(plan, wants_thoughts(body)),
        "modelVersion": model,
        "responseId": id,
    }))
}

/// What Google sends when a stream fails midway: the error JSON, pretty-printed, without `data:`.
pub const STREAM_ERROR: &str = "{\n  \"error\": {\n    \"code\": 503,\n    \"message\": \"The model is overloaded. Please try again later.\",\n    \"status\": \"UNAVAILABLE\"\n  }\n}\n";

/// Full SSE body, with the stream faults applied.
pub fn stream_body(
    id: &str,
    model: &str,
    plan: &Plan,
    mock: &MockHeaders,
    body: &Value,
    block_reason: Option<&str>,
) -> Vec<u8> {
    if let Some(r) = block_reason {
        return event(&blocked(r, plan, id, model)).into_bytes();
    }
    let events = stream_events(id, model, plan, body);
    let last = final_event(id, model, plan, mock, body);
    mock::assemble_stream(&events, &last, STREAM_ERROR, mock).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_tool_result_text() {
        let body = json!({"contents": [
            {"role": "user", "parts": [{"text": "hi"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"output": "first"}}}]},
            {"role": "model", "parts": [{"functionCall": {"name": "g", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "g", "response": {"output": "last"}}}]}]});
        assert_eq!(last_tool_result(&body).as_deref(), Some("last"));
        let obj = json!({"contents": [{"role": "user", "parts": [
            {"functionResponse": {"name": "g", "response": {"temp": 21}}}]}]});
        assert_eq!(last_tool_result(&obj).as_deref(), Some(r#"{"temp":21}"#));
        assert_eq!(
            last_tool_result(&json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}]})),
            None
        );
    }

    fn base() -> Value {
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    }

    fn err(v: &Value) -> String {
        match validate(v) {
            Err(e) => e,
            Ok(()) => panic!("expected rejection of {v}"),
        }
    }

    fn tool_conv() -> Value {
        json!({
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "tools": [{"functionDeclarations": [
                {"name": "get_weather", "description": "d",
                 "parametersJsonSchema": {"type": "object", "properties": {}, "additionalProperties": false}},
                {"name": "get_time"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}},
            "generationConfig": {"temperature": 0.5, "maxOutputTokens": 10, "stopSequences": ["x"],
                                 "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"},
                                 "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": true}},
            "contents": [
                {"role": "user", "parts": [{"text": "weather?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                    {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x/y.jpg"}}]},
                {"role": "model", "parts": [{"text": "let me check"},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "bW9jay1zaWctMA=="},
                    {"functionCall": {"name": "get_time", "args": {}}, "thoughtSignature": SKIP_THOUGHT_SIGNATURE}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}},
                    {"functionResponse": {"name": "get_time", "response": {"t": 1}}},
                    {"text": "thanks"}]}
            ]
        })
    }

    #[test]
    fn accepts_valid() {
        assert_eq!(validate(&base()), Ok(()));
        assert_eq!(validate(&tool_conv()), Ok(()));
    }

    #[test]
    fn rejects_unknown_fields_with_the_real_wording() {
        let mut v = base();
        v["temperature"] = json!(0.5);
        assert_eq!(
            err(&v),
            "Invalid JSON payload received. Unknown name \"temperature\": Cannot find field."
        );
        let mut v = base();
        v["contents"][0]["parts"][0]["type"] = json!("text");
        assert_eq!(
            err(&v),
            "Invalid JSON payload received. Unknown name \"type\" at 'contents[0].parts[0]': Cannot find field."
        );
        let mut v = base();
        v["generationConfig"] = json!({"max_tokens": 5});
        assert!(err(&v).contains("Unknown name \"max_tokens\" at 'generation_config'"));
        let mut v = tool_conv();
        v["tools"][0]["functionDeclarations"][0]["strict"] = json!(true);
        assert!(err(&v).contains("Unknown name \"strict\""));
        // The OpenAPI-subset `parameters` rejects JSON-Schema-only keywords.
        let mut v = tool_conv();
        v["tools"][0]["functionDeclarations"][1]["parameters"] =
            json!({"type": "object", "additionalProperties": false});
        assert!(err(&v).contains("Unknown name \"additionalProperties\""));
    }

    #[test]
    fn rejects_roles_parts_and_function_flow() {
        let mut v = base();
        v["contents"][0]["role"] = json!("assistant");
        assert!(err(&v).starts_with("Please use a valid role: user, model."));
        let mut v = base();
        v["contents"] = json!([]);
        assert!(err(&v).contains("contents is not specified"));
        let mut v = base();
        v["contents"][0]["parts"][0]["text"] = json!("");
        assert!(err(&v).contains("empty text parameter"));
        let mut v = base();
        v["contents"][0]["parts"][0] =
            json!({"text": "a", "inlineData": {"mimeType": "image/png", "data": "AAAA"}});
        assert!(err(&v).contains("oneof field 'data'"));
        let mut v = base();
        v["contents"][0]["parts"][0] =
            json!({"inlineData": {"mimeType": "image/png", "data": "not base64!"}});
        assert!(err(&v).contains("Base64 decoding failed"));

        let mut v = tool_conv();
        v["contents"][2]["parts"]
            .as_array_mut()
            .map(|p| p.remove(1));
        assert!(err(&v).contains("number of function response parts"));
        let mut v = tool_conv();
        v["contents"][1]["parts"] = json!([{"text": "no calls"}]);
        assert!(
            err(&v).contains("function response turn comes immediately after a function call turn")
        );
        let mut v = tool_conv();
        v["contents"][2]["parts"] = json!([{"text": "ignoring the calls"}]);
        assert!(err(&v).contains("0 responses, 2 calls"));
        let mut v = tool_conv();
        v["contents"][2]["parts"][0]["functionResponse"]["response"] = json!("sunny");
        assert!(err(&v).contains("function_response.response"));
        let mut v = tool_conv();
        v["contents"][1]["parts"][1]["thoughtSignature"] = json!("%%%");
        assert!(err(&v).contains("thought_signature"));
        let mut v = tool_conv();
        if let Some(o) = v["contents"][1]["parts"][1].as_object_mut() {
            o.remove("thoughtSignature");
        }
        assert!(err(&v).starts_with("Function call is missing a thought_signature"));
        // Only the first call of a turn needs one.
        let mut v = tool_conv();
        if let Some(o) = v["contents"][1]["parts"][2].as_object_mut() {
            o.remove("thoughtSignature");
        }
        assert_eq!(validate(&v), Ok(()));
        let mut v = tool_conv();
        v["contents"][0]["parts"][0] = json!({"functionCall": {"name": "get_time"}});
        assert!(err(&v).contains("model turn"));
    }

    #[test]
    fn rejects_config() {
        for (pointer, value, needle) in [
            (
                "/toolConfig/functionCallingConfig/mode",
                json!("REQUIRED"),
                "FunctionCallingConfig.Mode",
            ),
            (
                "/toolConfig/functionCallingConfig/mode",
                json!("AUTO"),
                "only when mode is ANY",
            ),
            (
                "/toolConfig/functionCallingConfig/allowedFunctionNames",
                json!(["nope"]),
                "not declared",
            ),
            ("/generationConfig/temperature", json!(2.5), "temperature"),
            (
                "/generationConfig/seed",
                json!(4_294_967_296u64),
                "TYPE_INT32",
            ),
            (
                "/generationConfig/candidateCount",
                json!(0),
                "candidate_count",
            ),
            (
                "/generationConfig/responseMimeType",
                json!("text/plain"),
                "response_json_schema requires",
            ),
            (
                "/generationConfig/thinkingConfig/thinkingBudget",
                json!(100000),
                "thinking_budget",
            ),
            (
                "/tools/0/functionDeclarations/1/name",
                json!("1bad name"),
                "Invalid function name",
            ),
        ] {
            let mut v = tool_conv();
            let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
            match v.pointer_mut(parent) {
                Some(Value::Object(o)) => {
                    o.insert(key.to_string(), value);
                }
                Some(Value::Array(a)) => {
                    if let Some(slot) = key.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                        *slot = value;
                    }
                }
                _ => panic!("no {parent}"),
            }
            assert!(err(&v).contains(needle), "{pointer}: {}", err(&v));
        }
    }

    #[test]
    fn signature_is_base64() {
        assert_eq!(signature(0), "bW9jay1zaWctMA==");
        assert!(is_base64(&signature(12)));
        assert!(!is_base64("abc"));
        assert!(!is_base64("a===="));
    }

    fn parse_events(body: &str) -> Vec<Value> {
        assert!(body.ends_with("\r\n\r\n") || body.is_empty() || body.ends_with("}\n"));
        body.split("\r\n\r\n")
            .filter(|e| !e.is_empty())
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap_or(Value::Null))
            .collect()
    }

    #[test]
    fn stream_events_and_faults() {
        let body = tool_conv();
        let mock = MockHeaders {
            text: Some("One two".into()),
            tool_calls: 2,
            words_per_delta: 1,
            cache_read: 3,
            ..MockHeaders::default()
        };
        let plan = Plan::build(&mock, &last_user_text(&body), &tool_names(&body), 400);
        let out = String::from_utf8(stream_body("r1", "gemini-x", &plan, &mock, &body, None))
            .unwrap_or_default();
        let ev = parse_events(&out);
        // thought, two text deltas, two calls, final.
        assert_eq!(ev.len(), 6, "{out}");
        assert_eq!(
            ev[0]["candidates"][0]["content"]["parts"][0]["thought"],
            json!(true)
        );
        assert_eq!(
            ev[1]["candidates"][0]["content"]["parts"][0]["text"],
            json!("One")
        );
        assert_eq!(
            ev[3]["candidates"][0]["content"]["parts"][0],
            json!({"functionCall": {"name": "get_weather", "args": {"city": "Paris", "i": 0}}, "thoughtSignature": signature(0)})
        );
        assert!(ev[4]["candidates"][0]["content"]["parts"][0]
            .get("thoughtSignature")
            .is_none());
        assert_eq!(ev[5]["candidates"][0]["finishReason"], json!("STOP"));
        assert_eq!(ev[5]["usageMetadata"]["cachedContentTokenCount"], json!(3));
        assert_eq!(ev[5]["usageMetadata"]["promptTokenCount"], json!(103));
        assert_eq!(
            ev[5]["usageMetadata"]["thoughtsTokenCount"],
            json!(THOUGHT_TOKENS)
        );
        assert!(out.contains("\r\n\r\n") && !out.contains("[DONE]"));

        let faulty = MockHeaders {
            stream_error_after: Some(2),
            ..mock.clone()
        };
        let out = String::from_utf8(stream_body("r1", "m", &plan, &faulty, &body, None))
            .unwrap_or_default();
        assert_eq!(parse_events(&out).len(), 2);
        assert!(out.ends_with(STREAM_ERROR));
        let dropped = MockHeaders {
            drop_after: Some(100),
            ..mock.clone()
        };
        let out = String::from_utf8(stream_body("r1", "m", &plan, &dropped, &body, None))
            .unwrap_or_default();
        assert_eq!(parse_events(&out).len(), 5);

        let r: Value = serde_json::from_slice(&response_body("r2", "m", &plan, &mock, &body, None))
            .unwrap_or(Value::Null);
        assert_eq!(
            r["candidates"][0]["content"]["parts"]
                .as_array()
                .map(Vec::len),
            Some(4)
        );
        let r: Value = serde_json::from_slice(&response_body(
            "r2",
            "m",
            &plan,
            &mock,
            &base(),
            Some("SAFETY"),
        ))
        .unwrap_or(Value::Null);
        assert_eq!(r["promptFeedback"]["blockReason"], json!("SAFETY"));
        assert!(r.get("candidates").is_none());
        let mut two = base();
        two["generationConfig"] = json!({"candidateCount": 2});
        let r: Value = serde_json::from_slice(&response_body(
            "r3",
            "m",
            &plan,
            &MockHeaders::default(),
            &two,
            None,
        ))
        .unwrap_or(Value::Null);
        assert_eq!(r["candidates"][1]["index"], json!(1));
    }

    #[test]
    fn status_errors() {
        let v: Value = serde_json::from_slice(&status_error_body(429)).unwrap_or(Value::Null);
        assert_eq!(v["error"]["status"], json!("RESOURCE_EXHAUSTED"));
        assert_eq!(v["error"]["code"], json!(429));
        assert_eq!(v["error"]["details"][1]["retryDelay"], json!("37s"));
        let v: Value = serde_json::from_slice(&status_error_body(500)).unwrap_or(Value::Null);
        assert_eq!(v["error"]["status"], json!("INTERNAL"));
        assert!(v["error"].get("details").is_none());
    }
}
