//! OpenAI Chat Completions: request validation, responses (JSON and SSE) and error bodies.

pub use crate::mock::last_user_text;
use crate::mock::{self, Event, MockHeaders, Plan};
use serde_json::{json, Value};

/// An OpenAI error: `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OaiError {
    pub message: String,
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl OaiError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>, code: Option<&str>) -> Self {
        OaiError {
            message: message.into(),
            kind: "invalid_request_error".into(),
            param: param.map(str::to_string),
            code: code.map(str::to_string),
        }
    }

    pub fn body(&self) -> Vec<u8> {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
        .to_string()
        .into_bytes()
    }
}

/// The real API's error for an HTTP status (used by `x-mock-status`).
pub fn status_error(status: u16, model: &str) -> OaiError {
    let e = |m: &str, k: &str, c: Option<&str>| OaiError {
        message: m.to_string(),
        kind: k.to_string(),
        param: None,
        code: c.map(str::to_string),
    };
    match status {
        400 => e("Invalid request (mock-injected).", "invalid_request_error", None),
        401 => e(
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        403 => e(
            "Country, region, or territory not supported",
            "request_forbidden",
            Some("unsupported_country_region_territory"),
        ),
        404 => e(
            &format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            Some("model_not_found"),
        ),
        429 => e(
            &format!("Rate limit reached for {model} on requests per min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s."),
            "requests",
            Some("rate_limit_exceeded"),
        ),
        500 => e(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
        503 => e(
            "The server is overloaded or not ready yet.",
            "server_error",
            None,
        ),
        s if s >= 500 => e("The server had an error processing your request.", "server_error", None),
        _ => e("Invalid request (mock-injected).", "invalid_request_error", None),
    }
}

fn type_word(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn invalid_type(param: &str, expected: &str, got: &Value) -> OaiError {
    OaiError::invalid(
        format!(
            "Invalid type for '{param}': expected {expected}, but got {} instead.",
            type_word(got)
        ),
        Some(param),
        Some("invalid_type"),
    )
}

fn missing(param: &str) -> OaiError {
    OaiError::invalid(
        format!("Missing required parameter: '{param}'."),
        Some(param),
        Some("missing_required_parameter"),
    )
}

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Validates a Chat Completions request body.
pub fn validate(body: &Value) -> Result<(), OaiError> {
    let o = body.as_object().ok_or_else(|| {
        OaiError::invalid(
            format!(
                "Invalid type for request body: expected an object, but got {} instead.",
                type_word(body)
            ),
            None,
            Some("invalid_type"),
        )
    })?;
    match o.get("model") {
        None | Some(Value::Null) => {
            return Err(OaiError::invalid(
                "you must provide a model parameter",
                None,
                None,
            ))
        }
        Some(Value::String(s)) if s.is_empty() => {
            return Err(OaiError::invalid(
                "Invalid 'model': empty string. Expected a string with minimum length 1, but got an empty string instead.",
                Some("model"),
                Some("empty_string"),
            ))
        }
        Some(Value::String(_)) => {}
        Some(other) => return Err(invalid_type("model", "a string", other)),
    }
    let msgs = match o.get("messages") {
        None | Some(Value::Null) => return Err(missing("messages")),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(invalid_type("messages", "an array", other)),
    };
    if msgs.is_empty() {
        return Err(OaiError::invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            Some("messages"),
            Some("empty_array"),
        ));
    }
    for (i, m) in msgs.iter().enumerate() {
        let p = format!("messages[{i}]");
        let mo = m
            .as_object()
            .ok_or_else(|| invalid_type(&p, "an object", m))?;
        let rp = format!("{p}.role");
        let role = match mo.get("role") {
            None | Some(Value::Null) => return Err(missing(&rp)),
            Some(Value::String(r)) => r.as_str(),
            Some(other) => return Err(invalid_type(&rp, "a string", other)),
        };
        if !ROLES.contains(&role) {
            return Err(OaiError::invalid(
                format!("Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', 'tool', and 'developer'."),
                Some(&rp),
                Some("invalid_value"),
            ));
        }
        let cp = format!("{p}.content");
        match (role, mo.get("content")) {
            ("assistant", _) | ("function", _) => {}
            (_, None) | (_, Some(Value::Null)) => return Err(missing(&cp)),
            (_, Some(Value::String(_))) | (_, Some(Value::Array(_))) => {}
            (_, Some(other)) => {
                return Err(invalid_type(
                    &cp,
                    "one of a string or array of objects",
                    other,
                ))
            }
        }
        if role == "tool" {
            let tp = format!("{p}.tool_call_id");
            match mo.get("tool_call_id") {
                None | Some(Value::Null) => return Err(missing(&tp)),
                Some(Value::String(_)) => {}
                Some(other) => return Err(invalid_type(&tp, "a string", other)),
            }
        }
    }
    let stream = match o.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(invalid_type("stream", "a boolean", other)),
    };
    match o.get("stream_options") {
        None | Some(Value::Null) => {}
        Some(so) => {
            if !stream {
                return Err(OaiError::invalid(
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    Some("stream_options"),
                    None,
                ));
            }
            let so = so
                .as_object()
                .ok_or_else(|| invalid_type("stream_options", "an object", so))?;
            if let Some(iu) = so.get("include_usage") {
                if !iu.is_boolean() && !iu.is_null() {
                    return Err(invalid_type(
                        "stream_options.include_usage",
                        "a boolean",
                        iu,
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Text of the last `tool` message (for `x-mock-tool-use`), `None` when there is none.
pub fn last_tool_result(body: &Value) -> Option<String> {
    body.get("messages")?
        .as_array()?
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
        .map(|m| crate::mock::content_text(m.get("content")))
}

/// Names of the request's function tools, in order.
pub fn tool_names(body: &Value) -> Vec<String> {
    body.get("tools")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(|t| {
                    t.get("function")
                        .and_then(|f| f.get("name"))
                        .or_else(|| t.get("name"))
                        .and_then(Value::as_str)
                })
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn finish(plan: &Plan, mock: &MockHeaders) -> String {
    match (&mock.finish, plan.tool_calls.is_empty()) {
        (Some(f), _) => f.clone(),
        (None, false) => "tool_calls".into(),
        (None, true) => "stop".into(),
    }
}

fn usage(plan: &Plan) -> Value {
    json!({
        "prompt_tokens": plan.input_tokens,
        "completion_tokens": plan.output_tokens,
        "total_tokens": plan.input_tokens + plan.output_tokens,
        "prompt_tokens_details": {"cached_tokens": plan.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    })
}

pub const FINGERPRINT: &str = "fp_mock";

/// Non-streaming `chat.completion` body.
pub fn completion_body(
    id: &str,
    created: u64,
    model: &str,
    plan: &Plan,
    mock: &MockHeaders,
) -> Vec<u8> {
    let mut message = json!({
        "role": "assistant",
        "content": plan.text,
        "refusal": null,
        "annotations": [],
    });
    if !plan.tool_calls.is_empty() {
        message["tool_calls"] = plan
            .tool_calls
            .iter()
            .map(|c| {
                json!({"id": format!("call_mock_{}", c.index), "type": "function",
                       "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect();
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish(plan, mock),
        }],
        "usage": usage(plan),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    })
    .to_string()
    .into_bytes()
}

/// Normal stream events (everything before `[DONE]`). JSON is written by hand, in the real
/// API's key order, because this is the benchmark hot path.
pub fn stream_events(
    id: &str,
    created: u64,
    model: &str,
    plan: &Plan,
    mock: &MockHeaders,
    include_usage: bool,
) -> Vec<Event> {
    let head = format!(
        "data: {{\"id\":{},\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":{},\"service_tier\":\"default\",\"system_fingerprint\":\"{FINGERPRINT}\",\"choices\":[",
        mock::js(id),
        mock::js(model)
    );
    let tail = if include_usage {
        ",\"usage\":null}\n\n"
    } else {
        "}\n\n"
    };
    let chunk = |delta: &str, finish_reason: &str| -> Event {
        format!(
            "{head}{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish_reason}}}]{tail}"
        )
    };
    let mut ev = Vec::with_capacity(plan.deltas.len() + 4);
    let first_content = if plan.text.is_some() { "\"\"" } else { "null" };
    ev.push(chunk(
        &format!("{{\"role\":\"assistant\",\"content\":{first_content},\"refusal\":null}}"),
        "null",
    ));
    for d in &plan.deltas {
        ev.push(chunk(&format!("{{\"content\":{}}}", mock::js(d)), "null"));
    }
    for c in &plan.tool_calls {
        ev.push(chunk(
            &format!(
                "{{\"tool_calls\":[{{\"index\":{i},\"id\":\"call_mock_{i}\",\"type\":\"function\",\"function\":{{\"name\":{},\"arguments\":\"\"}}}}]}}",
                mock::js(&c.name),
                i = c.index
            ),
            "null",
        ));
        for piece in mock::split_chars(&c.arguments, mock::ARG_PIECE) {
            ev.push(chunk(
                &format!(
                    "{{\"tool_calls\":[{{\"index\":{},\"function\":{{\"arguments\":{}}}}}]}}",
                    c.index,
                    mock::js(piece)
                ),
                "null",
            ));
        }
    }
    ev.push(chunk("{}", &mock::js(&finish(plan, mock))));
    if include_usage {
        ev.push(format!("{head}],\"usage\":{}}}\n\n", usage(plan)));
    }
    ev
}

pub const DONE: &str = "data: [DONE]\n\n";
pub const STREAM_ERROR: &str = "data: {\"error\":{\"message\":\"The server had an error while processing your request. Sorry about that!\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";

/// Whether the request asks for the usage chunk.
pub fn include_usage(body: &Value) -> bool {
    body.get("stream_options")
        .and_then(|s| s.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Full SSE body, with the stream faults applied.
pub fn stream_body(
    id: &str,
    created: u64,
    model: &str,
    plan: &Plan,
    mock: &MockHeaders,
    include_usage: bool,
) -> Vec<u8> {
    let events = stream_events(id, created, model, plan, mock, include_usage);
    mock::assemble_stream(&events, DONE, STREAM_ERROR, mock).into_bytes()
}

/// `GET /v1/models` body.
pub fn models_body() -> Vec<u8> {
    json!({"object": "list", "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"},
        {"id": "gpt-4o", "object": "model", "created": 1715367049, "owned_by": "system"},
        {"id": "mock-model", "object": "model", "created": 1700000000, "owned_by": "mock"},
    ]})
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Value {
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    }

    fn err(v: &Value) -> OaiError {
        match validate(v) {
            Err(e) => e,
            Ok(()) => panic!("expected rejection of {v}"),
        }
    }

    #[test]
    fn accepts_valid() {
        assert_eq!(validate(&base()), Ok(()));
        let v = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
            "messages": [
                {"role": "developer", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"}]});
        assert_eq!(validate(&v), Ok(()));
    }

    #[test]
    fn rejects() {
        let e = err(&json!({"messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(e.message, "you must provide a model parameter");
        let e = err(&json!({"model": "", "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(e.param.as_deref(), Some("model"));
        let e = err(&json!({"model": 3, "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(e.code.as_deref(), Some("invalid_type"));
        let e = err(&json!({"model": "m", "messages": []}));
        assert_eq!(e.code.as_deref(), Some("empty_array"));
        let e = err(&json!({"model": "m"}));
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = err(
            &json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}),
        );
        assert_eq!(e.param.as_deref(), Some("messages[1].role"));
        assert!(e.message.contains("'robot'"));
        let e = err(
            &json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]}),
        );
        assert_eq!(e.param.as_deref(), Some("messages[1].tool_call_id"));
        assert!(e.message.contains("messages[1].tool_call_id"));
        let e = err(&json!({"model": "m", "messages": ["hi"]}));
        assert!(e.message.contains("messages[0]"));
        let e = err(
            &json!({"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "a"}]}),
        );
        assert_eq!(e.param.as_deref(), Some("stream"));
        let e = err(
            &json!({"model": "m", "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "a"}]}),
        );
        assert_eq!(e.param.as_deref(), Some("stream_options"));
        let e = err(
            &json!({"model": "m", "stream": false, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "a"}]}),
        );
        assert_eq!(e.param.as_deref(), Some("stream_options"));
        let e = err(&json!("x"));
        assert_eq!(e.kind, "invalid_request_error");
    }

    fn data_events(body: &str) -> Vec<String> {
        body.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn stream_shape_with_usage_and_tools() {
        let mock = MockHeaders {
            tool_calls: 2,
            words_per_delta: 1,
            ..MockHeaders::default()
        };
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]});
        let plan = Plan::build(&mock, &last_user_text(&body), &tool_names(&body), 100);
        let out = String::from_utf8(stream_body("chatcmpl-mock-1", 1, "m", &plan, &mock, true))
            .unwrap_or_default();
        let events = data_events(&out);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap_or(Value::Null))
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], json!("assistant"));
        for c in &chunks[..chunks.len() - 1] {
            assert_eq!(c["usage"], Value::Null);
            assert!(c.get("usage").is_some());
            assert_eq!(c["object"], json!("chat.completion.chunk"));
        }
        let last = &chunks[chunks.len() - 1];
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["completion_tokens"], json!(2));
        assert_eq!(last["usage"]["prompt_tokens"], json!(25));
        let fin = &chunks[chunks.len() - 2];
        assert_eq!(fin["choices"][0]["finish_reason"], json!("tool_calls"));
        for i in 0..2u64 {
            let args: String = chunks
                .iter()
                .flat_map(|c| {
                    c["choices"][0]["delta"]["tool_calls"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .filter(|t| t["index"] == json!(i))
                .filter_map(|t| t["function"]["arguments"].as_str().map(str::to_string))
                .collect();
            let parsed: Value = serde_json::from_str(&args).unwrap_or(Value::Null);
            assert_eq!(parsed, json!({"city": "Paris", "i": i}));
        }
        let first_tool = chunks
            .iter()
            .find(|c| c["choices"][0]["delta"]["tool_calls"].is_array())
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(
            first_tool["choices"][0]["delta"]["tool_calls"][0]["id"],
            json!("call_mock_0")
        );
        assert_eq!(
            first_tool["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            json!("get_weather")
        );
    }

    #[test]
    fn stream_text_and_faults() {
        let mut mock = MockHeaders {
            text: Some("a b c".into()),
            words_per_delta: 1,
            ..MockHeaders::default()
        };
        let plan = Plan::build(&mock, "", &[], 8);
        let events = data_events(
            &String::from_utf8(stream_body("x", 1, "m", &plan, &mock, false)).unwrap_or_default(),
        );
        // role chunk + 3 deltas + finish chunk + [DONE]
        assert_eq!(events.len(), 6);
        let text: String = events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(text, "a b c");
        assert!(!events[0].contains("\"usage\""));
        mock.stream_error_after = Some(2);
        let events = data_events(
            &String::from_utf8(stream_body("x", 1, "m", &plan, &mock, false)).unwrap_or_default(),
        );
        assert_eq!(events.len(), 3);
        assert!(events[2].starts_with("{\"error\""));
        mock.stream_error_after = None;
        mock.drop_after = Some(1);
        let events = data_events(
            &String::from_utf8(stream_body("x", 1, "m", &plan, &mock, false)).unwrap_or_default(),
        );
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn non_stream_body() {
        let mock = MockHeaders {
            words_per_delta: 1,
            cache_read: 3,
            finish: Some("length".into()),
            ..MockHeaders::default()
        };
        let plan = Plan::build(&mock, "hello there", &[], 40);
        let v: Value = serde_json::from_slice(&completion_body(
            "chatcmpl-mock-2",
            5,
            "gpt-4o",
            &plan,
            &mock,
        ))
        .unwrap_or(Value::Null);
        assert_eq!(
            v["choices"][0]["message"]["content"],
            json!("Hello from the mock! You said: hello there")
        );
        assert_eq!(v["choices"][0]["finish_reason"], json!("length"));
        assert_eq!(
            v["usage"]["prompt_tokens_details"]["cached_tokens"],
            json!(3)
        );
        assert_eq!(v["usage"]["completion_tokens"], json!(8));
        assert_eq!(v["model"], json!("gpt-4o"));
        assert!(v["choices"][0]["message"].get("tool_calls").is_none());
    }
}
