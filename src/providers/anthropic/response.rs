//! What Anthropic answers (messages, stream events, errors) as borrowed `Deserialize` shapes,
//! and the mappings shared by whole answers and streams: stop reason, error type, tool input.

use super::*;

// ---------------------------------------------------------------------------------------------
// Anthropic response shapes (deserialise, borrowing from the provider's body)
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub(super) struct MessageResponse<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Str<'a>,
    #[serde(borrow)]
    pub(super) id: Str<'a>,
    #[serde(borrow)]
    pub(super) model: Str<'a>,
    #[serde(borrow)]
    pub(super) content: Vec<ABlock<'a>>,
    #[serde(borrow)]
    pub(super) stop_reason: Option<Str<'a>>,
    pub(super) usage: Option<AUsage>,
}

/// Any content block, flat.
#[derive(Deserialize)]
pub(super) struct ABlock<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Str<'a>,
    #[serde(borrow)]
    pub(super) text: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) id: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) name: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) input: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) thinking: Option<Str<'a>>,
}

#[derive(Deserialize, Default)]
pub(super) struct AUsage {
    pub(super) input_tokens: Option<u64>,
    pub(super) output_tokens: Option<u64>,
    pub(super) cache_creation_input_tokens: Option<u64>,
    pub(super) cache_read_input_tokens: Option<u64>,
}

/// Any stream event, flat.
#[derive(Deserialize)]
pub(super) struct StreamEvent<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) message: Option<StartMessage<'a>>,
    pub(super) index: Option<u64>,
    #[serde(borrow)]
    pub(super) content_block: Option<ABlock<'a>>,
    #[serde(borrow)]
    pub(super) delta: Option<EventDelta<'a>>,
    pub(super) usage: Option<AUsage>,
    #[serde(borrow)]
    pub(super) error: Option<AError<'a>>,
}

#[derive(Deserialize)]
pub(super) struct StartMessage<'a> {
    #[serde(borrow)]
    pub(super) id: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) model: Option<Str<'a>>,
    pub(super) usage: Option<AUsage>,
}

/// `content_block_delta.delta` and `message_delta.delta`, flat.
#[derive(Deserialize)]
pub(super) struct EventDelta<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) text: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) partial_json: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) thinking: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) stop_reason: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(super) struct AError<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) message: Option<Str<'a>>,
}

pub(super) fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, and anything newer.
        _ => "stop",
    }
}

/// The provider status an Anthropic error type goes with (for in-band stream errors).
pub(super) fn status_for_error_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// JSON text without insignificant whitespace (the text must be valid JSON).
pub(super) fn compact_json(json: &str) -> Cow<'_, str> {
    let b = json.as_bytes();
    let mut in_str = false;
    let mut esc = false;
    let needs = b.iter().any(|&c| {
        let ws = !in_str && matches!(c, b' ' | b'\n' | b'\r' | b'\t');
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        }
        ws
    });
    if !needs {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len());
    let (mut in_str, mut esc) = (false, false);
    for c in json.chars() {
        if in_str {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if matches!(c, ' ' | '\n' | '\r' | '\t') {
            continue;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

pub(super) fn bad_gateway(provider: &str, what: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(502, "api_error", format!("{provider} returned {what}"))
}
