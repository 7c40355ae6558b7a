//! The one error shape clients ever see: OpenAI's `{"error":{"message","type","param","code"}}`.

use serde::Serialize;

/// An error answered to the client, with the HTTP status it goes out with.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayError {
    pub status: u16,
    pub message: String,
    /// OpenAI error `type`, e.g. `invalid_request_error`, `rate_limit_error`, `api_error`.
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<String>,
    /// Seconds, copied from the provider's `retry-after` when it sent one.
    pub retry_after: Option<String>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl GatewayError {
    pub fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        GatewayError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400 `invalid_request_error` about one request field.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", message).with_param(param)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "invalid_request_error", message)
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    pub fn with_code(mut self, code: &str) -> Self {
        self.code = Some(code.to_string());
        self
    }

    /// The JSON body: `{"error":{...}}`.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&Envelope {
            error: self.inner(),
        })
        .unwrap_or_else(|_| b"{\"error\":{\"message\":\"internal error\",\"type\":\"api_error\",\"param\":null,\"code\":null}}".to_vec())
    }

    /// The inner object alone, for an in-band stream error event (`data: {"error":{...}}`).
    fn inner(&self) -> Body<'_> {
        Body {
            message: &self.message,
            kind: self.kind,
            param: self.param.as_deref(),
            code: self.code.as_deref(),
        }
    }

    /// An SSE event an OpenAI SDK raises as `APIError` when it reads it mid-stream.
    pub fn sse_event(&self) -> Vec<u8> {
        let mut out = b"data: ".to_vec();
        out.extend_from_slice(&self.body());
        out.extend_from_slice(b"\n\n");
        out
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.kind, self.message)
    }
}

/// The OpenAI error `type` that goes with an HTTP status, for providers whose own types differ.
pub fn kind_for_status(status: u16) -> &'static str {
    match status {
        400 | 404 | 409 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "insufficient_quota",
        403 => "permission_error",
        408 | 504 => "timeout_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_all_four_fields() {
        let e = GatewayError::invalid_param("model", "missing").with_code("missing_field");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["message"], "missing");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert_eq!(v["error"]["code"], "missing_field");
        let e = GatewayError::bad_request("x");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert!(v["error"]["param"].is_null() && v["error"]["code"].is_null());
    }

    #[test]
    fn sse_event_is_one_data_line() {
        let e = GatewayError::new(503, "api_error", "line1\nline2");
        let ev = e.sse_event();
        let s = std::str::from_utf8(&ev).unwrap();
        assert!(s.starts_with("data: {"));
        assert!(s.ends_with("}\n\n"));
        assert_eq!(
            s.matches('\n').count(),
            2,
            "newline in message must be escaped"
        );
    }
}
