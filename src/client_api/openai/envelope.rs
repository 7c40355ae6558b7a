//! The first, cheap look at a chat-completions body: the fields every request needs (model,
//! stream, stream options), validated, with their byte positions so that a pass-through provider
//! can get the body with only the model name spliced in, never re-serialised.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

use crate::error::GatewayError;

/// Byte range `[start, end)` of a JSON value inside the client's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

#[derive(Debug)]
pub struct ChatEnvelope<'a> {
    pub model: Cow<'a, str>,
    pub model_span: Span,
    pub stream: bool,
    /// The client asked for the final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    pub stream_options_span: Option<Span>,
    /// Position of the body's closing `}` (for appending a field).
    pub close_brace: usize,
    /// Every top-level field, in body order, as raw JSON (later duplicates win, as in serde_json).
    pub fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// Address of the body's first byte, to turn raw values into spans.
    base: usize,
    /// Not from the body: the client's `anthropic-beta` header on a Messages request, set by
    /// the glue (Claude on Bedrock takes the betas in the body, see
    /// `client_api::anthropic::native`).
    pub anthropic_beta: Option<String>,
}

impl<'a> ChatEnvelope<'a> {
    /// An envelope for a body that is not JSON (a multipart form): only the model and where its
    /// value sits.
    pub fn for_model(model: Cow<'a, str>, model_span: Span) -> Self {
        ChatEnvelope {
            model,
            model_span,
            stream: false,
            include_usage: false,
            stream_options_span: None,
            close_brace: 0,
            fields: Vec::new(),
            base: 0,
            anthropic_beta: None,
        }
    }

    /// The top level of any JSON request routed by its `model` (no other field is checked).
    pub fn parse_routed(body: &'a [u8]) -> Result<Self, GatewayError> {
        let mut env = parse_top(body)?;
        if let Some(raw) = env.field("stream") {
            env.stream = raw.get() == "true";
        }
        Ok(env)
    }

    /// Where a raw value taken from this body sits in it.
    pub fn span_of(&self, raw: &RawValue) -> Span {
        let s = raw.get();
        let start = (s.as_ptr() as usize).saturating_sub(self.base);
        Span {
            start,
            end: start + s.len(),
        }
    }

    pub fn field(&self, name: &str) -> Option<&'a RawValue> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    }
}

/// The top level of any model-routed request: a JSON object with a non-empty string `model`.
pub(crate) fn parse_top(body: &[u8]) -> Result<ChatEnvelope<'_>, GatewayError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| GatewayError::bad_request(format!("request body is not valid UTF-8: {e}")))?;
    let top: TopLevel<'_> = serde_json::from_str(text).map_err(|e| {
        GatewayError::bad_request(format!("request body is not a valid JSON object: {e}"))
            .with_code("invalid_json")
    })?;
    let close_brace = text.trim_end().len().saturating_sub(1);

    let mut env = ChatEnvelope {
        model: Cow::Borrowed(""),
        model_span: Span { start: 0, end: 0 },
        stream: false,
        include_usage: false,
        stream_options_span: None,
        close_brace,
        fields: top.0,
        base: text.as_ptr() as usize,
        anthropic_beta: None,
    };

    let model_raw = env.field("model").ok_or_else(|| {
        GatewayError::invalid_param("model", "`model` is required")
            .with_code("missing_required_parameter")
    })?;
    let model: Cow<'_, str> = deserialize_str(model_raw)
        .ok_or_else(|| GatewayError::invalid_param("model", "`model` must be a string"))?;
    if model.is_empty() {
        return Err(GatewayError::invalid_param(
            "model",
            "`model` must not be empty",
        ));
    }
    env.model_span = env.span_of(model_raw);
    env.model = model;
    Ok(env)
}

/// Parses and validates the top level of a chat-completions request, messages included.
pub fn parse_chat_envelope(body: &[u8]) -> Result<ChatEnvelope<'_>, GatewayError> {
    let env = parse_chat_top(body)?;
    check_messages(&env)?;
    Ok(env)
}

/// The top level of a chat-completions request: `messages` must be there and be an array, but
/// its messages are not looked at ([`check_messages`] does that). A provider that takes the
/// messages as they are (OpenAI's protocol) checks them itself, so the gateway does not read
/// them twice.
pub fn parse_chat_top(body: &[u8]) -> Result<ChatEnvelope<'_>, GatewayError> {
    let mut env = parse_top(body)?;
    let messages_raw = env.field("messages").ok_or_else(messages_required)?;
    if !messages_raw.get().starts_with('[') {
        return Err(GatewayError::invalid_param(
            "messages",
            "`messages` must be an array of message objects",
        ));
    }
    if messages_raw.get()[1..].trim_start().starts_with(']') {
        return Err(no_messages());
    }
    env.stream = stream_flag(&env)?;
    if let Some(raw) = env.field("stream_options") {
        if raw.get() != "null" {
            let so: StreamOptions = serde_json::from_str(raw.get()).map_err(|e| {
                GatewayError::invalid_param(
                    "stream_options",
                    format!("`stream_options` must be an object: {e}"),
                )
            })?;
            env.include_usage = so.include_usage.unwrap_or(false);
            env.stream_options_span = Some(env.span_of(raw));
        }
    }
    Ok(env)
}

/// Every message is an object with a known string `role`, and there is at least one.
pub fn check_messages(env: &ChatEnvelope<'_>) -> Result<(), GatewayError> {
    check_message_list(env.field("messages").ok_or_else(messages_required)?)
}

/// `stream`: a boolean, or absent/`null` for false.
pub(crate) fn stream_flag(env: &ChatEnvelope<'_>) -> Result<bool, GatewayError> {
    match env.field("stream").map(|raw| raw.get()) {
        None | Some("false" | "null") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(GatewayError::invalid_param(
            "stream",
            "`stream` must be a boolean",
        )),
    }
}

/// The error for a request without `messages`.
pub fn messages_required() -> GatewayError {
    GatewayError::invalid_param("messages", "`messages` is required")
        .with_code("missing_required_parameter")
}

/// The error for an empty `messages` array.
fn no_messages() -> GatewayError {
    GatewayError::invalid_param("messages", "`messages` must contain at least one message")
}

/// [`check_messages`] on the raw `messages` value.
pub fn check_message_list(messages_raw: &RawValue) -> Result<(), GatewayError> {
    let heads: Vec<MessageHead<'_>> = serde_json::from_str(messages_raw.get()).map_err(|e| {
        GatewayError::invalid_param(
            "messages",
            format!(
                "`messages` must be an array of message objects, each with a string `role`: {e}"
            ),
        )
    })?;
    if heads.is_empty() {
        return Err(no_messages());
    }
    for (i, h) in heads.iter().enumerate() {
        if !matches!(
            h.role.as_ref(),
            "system" | "developer" | "user" | "assistant" | "tool" | "function"
        ) {
            return Err(GatewayError::invalid_param(
                &format!("messages[{i}].role"),
                format!(
                    "`{}` is not a valid role; expected system, developer, user, assistant or tool",
                    h.role
                ),
            ));
        }
    }
    Ok(())
}

/// Parses and validates the top level of an embeddings request.
pub fn parse_embeddings_envelope(body: &[u8]) -> Result<ChatEnvelope<'_>, GatewayError> {
    let env = parse_top(body)?;
    let input = env.field("input").ok_or_else(|| {
        GatewayError::invalid_param("input", "`input` is required")
            .with_code("missing_required_parameter")
    })?;
    let valid_input = match serde_json::from_str::<serde_json::Value>(input.get()) {
        Ok(serde_json::Value::String(_)) => true,
        Ok(serde_json::Value::Array(items)) => {
            !items.is_empty()
                && items
                    .iter()
                    .all(|i| i.is_string() || i.is_u64() || i.is_array())
        }
        _ => false,
    };
    if !valid_input {
        return Err(GatewayError::invalid_param(
            "input",
            "`input` must be a string, or a non-empty array of strings or token arrays",
        ));
    }
    if let Some(d) = env.field("dimensions") {
        if d.get() != "null" && !d.get().parse::<u32>().is_ok_and(|n| n > 0) {
            return Err(GatewayError::invalid_param(
                "dimensions",
                "`dimensions` must be a positive integer",
            ));
        }
    }
    if let Some(f) = env.field("encoding_format") {
        if !matches!(f.get(), "null" | "\"float\"" | "\"base64\"") {
            return Err(GatewayError::invalid_param(
                "encoding_format",
                "`encoding_format` must be `float` or `base64`",
            ));
        }
    }
    Ok(env)
}

fn deserialize_str(raw: &RawValue) -> Option<Cow<'_, str>> {
    let s: BorrowedStr<'_> = serde_json::from_str(raw.get()).ok()?;
    Some(s.0)
}

#[derive(Deserialize)]
struct MessageHead<'a> {
    #[serde(borrow)]
    role: BorrowedStr<'a>,
}

#[derive(Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// A string that borrows from the body unless it holds escapes.
struct BorrowedStr<'a>(Cow<'a, str>);

impl std::ops::Deref for BorrowedStr<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for BorrowedStr<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BorrowedStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for BorrowedStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = BorrowedStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A JSON object's fields as raw values.
struct TopLevel<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(16);
                while let Some(k) = map.next_key::<BorrowedStr<'de>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    fields.push((k.0, v));
                }
                Ok(TopLevel(fields))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(s: &str) -> ChatEnvelope<'_> {
        parse_chat_envelope(s.as_bytes()).unwrap()
    }

    fn bad(s: &str) -> GatewayError {
        parse_chat_envelope(s.as_bytes()).unwrap_err()
    }

    #[test]
    fn reads_fields_and_spans() {
        let body = r#"{"model": "gpt-4o", "messages":[{"role":"user","content":"hi"}], "stream": true, "stream_options": {"include_usage": true}}"#;
        let e = env(body);
        assert_eq!(e.model, "gpt-4o");
        assert_eq!(&body[e.model_span.start..e.model_span.end], "\"gpt-4o\"");
        assert!(e.stream && e.include_usage);
        let so = e.stream_options_span.unwrap();
        assert_eq!(&body[so.start..so.end], r#"{"include_usage": true}"#);
        assert_eq!(&body[e.close_brace..], "}");
    }

    #[test]
    fn embeddings_envelope_checks_input_and_options() {
        let ok = parse_embeddings_envelope(
            br#"{"model":"e","input":["a",[1,2]],"dimensions":8,"encoding_format":"base64"}"#,
        )
        .unwrap();
        assert_eq!(ok.model, "e");
        for (body, param) in [
            (r#"{"model":"e"}"#, Some("input")),
            (r#"{"model":"e","input":[]}"#, Some("input")),
            (r#"{"model":"e","input":{}}"#, Some("input")),
            (r#"{"model":"e","input":[{}]}"#, Some("input")),
            (
                r#"{"model":"e","input":"x","dimensions":0}"#,
                Some("dimensions"),
            ),
            (
                r#"{"model":"e","input":"x","dimensions":"8"}"#,
                Some("dimensions"),
            ),
            (
                r#"{"model":"e","input":"x","encoding_format":"hex"}"#,
                Some("encoding_format"),
            ),
            (r#"{"input":"x"}"#, Some("model")),
        ] {
            let e = parse_embeddings_envelope(body.as_bytes()).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, param), "{body}");
        }
    }

    #[test]
    fn escaped_model_name_is_decoded() {
        let e = env(r#"{"model":"a\u0062c","messages":[{"role":"user"}]}"#);
        assert_eq!(e.model, "abc");
    }

    #[test]
    fn rejects_bad_bodies_with_400_and_param() {
        for (body, param) in [
            (r#"{"messages":[{"role":"user"}]}"#, Some("model")),
            (r#"{"model":5,"messages":[{"role":"user"}]}"#, Some("model")),
            (
                r#"{"model":"","messages":[{"role":"user"}]}"#,
                Some("model"),
            ),
            (r#"{"model":"m"}"#, Some("messages")),
            (r#"{"model":"m","messages":{}}"#, Some("messages")),
            (r#"{"model":"m","messages":[]}"#, Some("messages")),
            (r#"{"model":"m","messages":[1]}"#, Some("messages")),
            (
                r#"{"model":"m","messages":[{"content":"x"}]}"#,
                Some("messages"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"robot"}]}"#,
                Some("messages[0].role"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#,
                Some("stream"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"stream":true,"stream_options":5}"#,
                Some("stream_options"),
            ),
            ("[1,2]", None),
            ("{\"model\":", None),
            ("", None),
            ("null", None),
        ] {
            let e = bad(body);
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), param, "{body}");
        }
        assert_eq!(bad("\u{0}\u{ff}").status, 400);
        assert_eq!(parse_chat_envelope(&[0xff, 0xfe]).unwrap_err().status, 400);
    }
}
