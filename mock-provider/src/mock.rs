//! Provider-independent pieces: the `x-mock-*` request headers, the deterministic reply plan
//! (text deltas, tool calls, token counts) and SSE assembly with the stream faults.

use hyper::HeaderMap;
use serde_json::Value;

/// Everything a request can ask of the mock through `x-mock-*` headers.
/// Unparseable numeric values are ignored (the default applies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MockHeaders {
    /// `x-mock-text`: the exact reply text.
    pub text: Option<String>,
    /// `x-mock-deltas`: words per stream delta (default 1).
    pub words_per_delta: usize,
    /// `x-mock-cache-read`.
    pub cache_read: u64,
    /// `x-mock-cache-creation`.
    pub cache_creation: u64,
    /// `x-mock-finish`: finish/stop reason, used verbatim.
    pub finish: Option<String>,
    /// `x-mock-tool-calls`: number of tool calls (only when the request declares tools).
    pub tool_calls: usize,
    /// `x-mock-ping: 1`: Anthropic `ping` event after `message_start`.
    pub ping: bool,
    /// `x-mock-status`: answer this error status.
    pub status: Option<u16>,
    /// `x-mock-retry-after`: value of a `retry-after` response header.
    pub retry_after: Option<String>,
    /// `x-mock-latency-ms`: delay before the response headers.
    pub latency_ms: u64,
    /// `x-mock-chunk-size`: body frame size in bytes.
    pub chunk_size: Option<usize>,
    /// `x-mock-chunk-delay-ms`: delay between body frames.
    pub chunk_delay_ms: u64,
    /// `x-mock-chunk-offset`: split the body into exactly two frames at this byte.
    pub chunk_offset: Option<usize>,
    /// `x-mock-stream-error-after`: in-band error after this many events.
    pub stream_error_after: Option<usize>,
    /// `x-mock-drop-after`: end the stream after this many events, without the terminal event.
    pub drop_after: Option<usize>,
    /// `x-mock-reset: 1`: close the connection without a response.
    pub reset: bool,
    /// `x-mock-endless-line`: after the stream's first event, one `data: ` line of this many
    /// bytes that never ends, then the body ends (a hostile provider; at most
    /// [`MAX_ENDLESS_LINE`]).
    pub endless_line: Option<usize>,
    /// `x-mock-tool-use: NAME {json}`: answer like a model that uses a tool (see
    /// [`Plan::script`]). The raw value, checked when the plan is made.
    pub tool_use: Option<String>,
}

/// Upper bound for `x-mock-tool-calls` (keeps a silly value from exhausting memory).
pub const MAX_TOOL_CALLS: usize = 1000;

/// Upper bound for `x-mock-endless-line`: 64 MiB.
pub const MAX_ENDLESS_LINE: usize = 64 << 20;

/// Header value as text, if present and valid visible ASCII / UTF-8.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
}

fn num<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    header(headers, name).and_then(|v| v.trim().parse().ok())
}

fn flag(headers: &HeaderMap, name: &str) -> bool {
    matches!(
        header(headers, name).map(|v| v.trim().to_ascii_lowercase()),
        Some(ref v) if v == "1" || v == "true" || v == "yes"
    )
}

impl MockHeaders {
    pub fn from_headers(h: &HeaderMap) -> Self {
        MockHeaders {
            text: header(h, "x-mock-text").map(str::to_string),
            words_per_delta: num::<usize>(h, "x-mock-deltas")
                .filter(|n| *n > 0)
                .unwrap_or(1),
            cache_read: num(h, "x-mock-cache-read").unwrap_or(0),
            cache_creation: num(h, "x-mock-cache-creation").unwrap_or(0),
            finish: header(h, "x-mock-finish")
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            tool_calls: num::<usize>(h, "x-mock-tool-calls")
                .unwrap_or(0)
                .min(MAX_TOOL_CALLS),
            ping: flag(h, "x-mock-ping"),
            status: num::<u16>(h, "x-mock-status").filter(|s| (400..=599).contains(s)),
            retry_after: header(h, "x-mock-retry-after").map(|v| v.trim().to_string()),
            latency_ms: num(h, "x-mock-latency-ms").unwrap_or(0),
            chunk_size: num::<usize>(h, "x-mock-chunk-size").filter(|n| *n > 0),
            chunk_delay_ms: num(h, "x-mock-chunk-delay-ms").unwrap_or(0),
            chunk_offset: num(h, "x-mock-chunk-offset"),
            stream_error_after: num(h, "x-mock-stream-error-after"),
            drop_after: num(h, "x-mock-drop-after"),
            reset: flag(h, "x-mock-reset"),
            endless_line: num::<usize>(h, "x-mock-endless-line").map(|n| n.min(MAX_ENDLESS_LINE)),
            tool_use: header(h, "x-mock-tool-use")
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
        }
    }
}

/// First `n` characters of `s`.
pub fn first_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Splits `text` into deltas of `words_per_delta` words. Whitespace is kept, attached in front
/// of the word that follows it (leading whitespace stays with the first delta), so the
/// concatenation of the deltas is exactly `text`. Empty text gives no delta.
pub fn split_deltas(text: &str, words_per_delta: usize) -> Vec<String> {
    let per = words_per_delta.max(1);
    // For each word, where the whitespace run in front of it begins: deltas are cut there.
    let mut word_starts = Vec::new();
    let mut prev_ws = true;
    let mut run_start = 0;
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if ws && !prev_ws {
            run_start = i;
        }
        if !ws && prev_ws {
            word_starts.push(if word_starts.is_empty() { 0 } else { run_start });
        }
        prev_ws = ws;
    }
    if text.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut start = 0;
    for cut in word_starts.iter().skip(per).step_by(per) {
        out.push(text[start..*cut].to_string());
        start = *cut;
    }
    out.push(text[start..].to_string());
    out
}

/// Splits `s` into pieces of at most `n` characters (the last may be shorter).
pub fn split_chars(s: &str, n: usize) -> Vec<&str> {
    let n = n.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (i, _) in s.char_indices() {
        if count == n {
            out.push(&s[start..i]);
            start = i;
            count = 0;
        }
        count += 1;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// Size of the pieces tool-call arguments are streamed in.
pub const ARG_PIECE: usize = 5;

/// One mock tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub index: usize,
    pub name: String,
    /// Arguments as compact JSON text.
    pub arguments: String,
}

/// The deterministic reply a request gets, before it is put in a provider's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Text of the reply, `None` when there is no text block (tool calls without `x-mock-text`).
    pub text: Option<String>,
    pub deltas: Vec<String>,
    pub tool_calls: Vec<ToolCall>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
}

impl Plan {
    /// `last_user_text`: text of the request's last user message; `tool_names`: the request's
    /// tool names in order; `body_len`: request body size in bytes.
    pub fn build(
        mock: &MockHeaders,
        last_user_text: &str,
        tool_names: &[String],
        body_len: usize,
    ) -> Plan {
        let tool_calls: Vec<ToolCall> = if tool_names.is_empty() {
            Vec::new()
        } else {
            (0..mock.tool_calls)
                .map(|i| ToolCall {
                    index: i,
                    name: tool_names[i % tool_names.len()].clone(),
                    arguments: serde_json::json!({"city": "Paris", "i": i}).to_string(),
                })
                .collect()
        };
        let text = match (&mock.text, tool_calls.is_empty()) {
            (Some(t), _) => Some(t.clone()),
            (None, true) => Some(default_text(last_user_text)),
            (None, false) => None,
        };
        let deltas = text
            .as_deref()
            .map(|t| split_deltas(t, mock.words_per_delta))
            .unwrap_or_default();
        Plan {
            output_tokens: (deltas.len() + tool_calls.len()) as u64,
            text,
            deltas,
            tool_calls,
            input_tokens: ((body_len / 4) as u64).max(1),
            cache_read: mock.cache_read,
            cache_creation: mock.cache_creation,
        }
    }
}

/// Characters of a tool result the scripted answer repeats.
pub const TOOL_RESULT_ECHO: usize = 200;

impl Plan {
    /// `x-mock-tool-use: NAME {json}` makes the mock a model that uses one tool: while the
    /// conversation holds no tool result (`tool_result` = `None`) the answer is one call to
    /// NAME with that JSON object as its arguments (id `toolu_mock_0` / `call_mock_0`); once it
    /// holds one, the answer is text, `x-mock-text` or `The tool said: <first 200 characters of
    /// the last tool result>`. A NAME the request does not declare, or arguments that are not a
    /// JSON object, get a text answer saying so (the plan is returned unchanged without the
    /// header).
    pub fn script(
        self,
        mock: &MockHeaders,
        tool_result: Option<&str>,
        tool_names: &[String],
    ) -> Plan {
        let Some(spec) = mock.tool_use.as_deref() else {
            return self;
        };
        let (text, tool_calls) = match tool_result {
            Some(result) => (
                mock.text.clone().unwrap_or_else(|| {
                    format!("The tool said: {}", first_chars(result, TOOL_RESULT_ECHO))
                }),
                Vec::new(),
            ),
            None => match scripted_call(spec, tool_names) {
                Ok(call) => (mock.text.clone().unwrap_or_default(), vec![call]),
                Err(why) => (format!("mock: x-mock-tool-use: {why}"), Vec::new()),
            },
        };
        let deltas = split_deltas(&text, mock.words_per_delta);
        Plan {
            output_tokens: (deltas.len() + tool_calls.len()) as u64,
            text: (!text.is_empty()).then_some(text),
            deltas,
            tool_calls,
            ..self
        }
    }
}

/// The call `NAME {json object}` asks for, if the request declares NAME.
fn scripted_call(spec: &str, tool_names: &[String]) -> Result<ToolCall, String> {
    let (name, args) = spec.split_once(char::is_whitespace).unwrap_or((spec, "{}"));
    let args: Value = serde_json::from_str(args.trim())
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| "the arguments after the tool name must be a JSON object".to_string())?;
    if !tool_names.iter().any(|n| n == name) {
        return Err(format!("the request declares no tool `{name}`"));
    }
    Ok(ToolCall {
        index: 0,
        name: name.to_string(),
        arguments: args.to_string(),
    })
}

/// `Hello from the mock! You said: <first 40 chars>` with trailing whitespace removed.
pub fn default_text(last_user_text: &str) -> String {
    format!(
        "Hello from the mock! You said: {}",
        first_chars(last_user_text, 40)
    )
    .trim_end()
    .to_string()
}

/// Text of the last `user` message of a `messages` array (string content or its text parts),
/// as OpenAI, Anthropic and Cohere requests all carry it.
pub fn last_user_text(body: &Value) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .map(|m| content_text(m.get("content")))
        .unwrap_or_default()
}

/// Concatenated text of a content value: a string, or an array of `{type:"text", text}` parts.
pub fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// `s` as a JSON string literal.
pub fn js(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// One server-sent event, already serialised (including the blank line that ends it).
pub type Event = String;

/// Assembles a stream body: `events` are the normal events before the terminal one.
/// With `error_after = Some(k)` only the first k events are kept and `error_event` follows;
/// otherwise with `drop_after = Some(k)` only the first k events are kept and nothing follows;
/// otherwise `terminal` follows all events.
pub fn assemble_stream(
    events: &[Event],
    terminal: &str,
    error_event: &str,
    mock: &MockHeaders,
) -> String {
    if let Some(n) = mock.endless_line {
        let mut out = events.first().cloned().unwrap_or_default();
        out.reserve(6 + n);
        out.push_str("data: ");
        out.extend(std::iter::repeat_n('x', n));
        return out;
    }
    let (keep, tail) = match (mock.stream_error_after, mock.drop_after) {
        (Some(k), _) => (k.min(events.len()), error_event),
        (None, Some(k)) => (k.min(events.len()), ""),
        (None, None) => (events.len(), terminal),
    };
    let mut out = String::with_capacity(events.iter().map(String::len).sum::<usize>() + 64);
    for e in &events[..keep] {
        out.push_str(e);
    }
    out.push_str(tail);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn tool_use_script_calls_then_answers() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-mock-tool-use",
            HeaderValue::from_static(r#"Bash {"command": "cat f.txt"}"#),
        );
        let mock = MockHeaders::from_headers(&h);
        let tools = ["Read".to_string(), "Bash".to_string()];
        let plan = |result: Option<&str>, tools: &[String]| {
            Plan::build(&mock, "hi", tools, 40).script(&mock, result, tools)
        };
        // No tool result yet: one call to the named tool with those arguments, no text.
        let call = plan(None, &tools);
        assert_eq!(
            call.tool_calls,
            vec![ToolCall {
                index: 0,
                name: "Bash".into(),
                arguments: r#"{"command":"cat f.txt"}"#.into()
            }]
        );
        assert_eq!((call.text.as_deref(), call.output_tokens), (None, 1));
        // A result: the answer repeats it.
        let long = "x".repeat(300);
        let done = plan(Some(&long), &tools);
        assert!(done.tool_calls.is_empty());
        assert_eq!(
            done.text.as_deref(),
            Some(format!("The tool said: {}", "x".repeat(200)).as_str())
        );
        assert_eq!(done.deltas.concat(), done.text.clone().unwrap_or_default());
        // Undeclared tool, bad arguments: said in the text.
        let undeclared = plan(None, &tools[..1]);
        assert!(undeclared.tool_calls.is_empty());
        assert!(undeclared
            .text
            .unwrap_or_default()
            .contains("declares no tool `Bash`"));
        h.insert("x-mock-tool-use", HeaderValue::from_static("Bash [1]"));
        let bad = MockHeaders::from_headers(&h);
        let p = Plan::build(&bad, "hi", &tools, 40).script(&bad, None, &tools);
        assert!(p.text.unwrap_or_default().contains("JSON object"));
        // A name alone: empty arguments. x-mock-text goes with the call.
        h.insert("x-mock-tool-use", HeaderValue::from_static("Read"));
        h.insert("x-mock-text", HeaderValue::from_static("Reading."));
        let bare = MockHeaders::from_headers(&h);
        let p = Plan::build(&bare, "hi", &tools, 40).script(&bare, None, &tools);
        assert_eq!(p.tool_calls[0].arguments, "{}");
        assert_eq!(p.text.as_deref(), Some("Reading."));
        // Without the header the plan is untouched.
        let none = MockHeaders::from_headers(&HeaderMap::new());
        let p = Plan::build(&none, "hi", &tools, 40);
        assert_eq!(p.clone().script(&none, Some("r"), &tools), p);
    }

    #[test]
    fn deltas_concatenate_to_text() {
        let t = "Hello from the mock!  You said: hi";
        let d = split_deltas(t, 1);
        assert_eq!(
            d,
            vec!["Hello", " from", " the", " mock!", "  You", " said:", " hi"]
        );
        assert_eq!(d.concat(), t);
        let d3 = split_deltas(t, 3);
        assert_eq!(d3, vec!["Hello from the", " mock!  You said:", " hi"]);
        assert_eq!(
            split_deltas("  lead trail  ", 1),
            vec!["  lead", " trail  "]
        );
        assert!(split_deltas("", 1).is_empty());
        assert_eq!(split_deltas("   ", 1), vec!["   "]);
        assert_eq!(split_deltas("héllo wörld", 1).concat(), "héllo wörld");
    }

    #[test]
    fn char_pieces() {
        assert_eq!(split_chars("abcdefghijk", 5), vec!["abcde", "fghij", "k"]);
        assert_eq!(split_chars("ééééé€", 5), vec!["ééééé", "€"]);
        assert!(split_chars("", 5).is_empty());
    }

    #[test]
    fn default_text_truncates() {
        let long = "x".repeat(100);
        assert_eq!(
            default_text(&long),
            format!("Hello from the mock! You said: {}", "x".repeat(40))
        );
        assert_eq!(default_text(""), "Hello from the mock! You said:");
    }

    #[test]
    fn headers_parse() {
        let mut h = HeaderMap::new();
        h.insert("x-mock-deltas", HeaderValue::from_static("3"));
        h.insert("x-mock-status", HeaderValue::from_static("429"));
        h.insert("x-mock-latency-ms", HeaderValue::from_static("nope"));
        h.insert("x-mock-reset", HeaderValue::from_static("1"));
        let m = MockHeaders::from_headers(&h);
        assert_eq!(m.words_per_delta, 3);
        assert_eq!(m.status, Some(429));
        assert_eq!(m.latency_ms, 0);
        assert!(m.reset);
        assert!(!m.ping);
    }

    #[test]
    fn plan_tool_calls() {
        let m = MockHeaders {
            tool_calls: 3,
            words_per_delta: 1,
            ..MockHeaders::default()
        };
        let names = vec!["a".to_string(), "b".to_string()];
        let p = Plan::build(&m, "hi", &names, 40);
        assert_eq!(p.text, None);
        assert_eq!(p.tool_calls.len(), 3);
        assert_eq!(p.tool_calls[2].name, "a");
        assert_eq!(p.tool_calls[1].arguments, r#"{"city":"Paris","i":1}"#);
        assert_eq!(p.input_tokens, 10);
        assert_eq!(p.output_tokens, 3);
        // Without tools in the request the header is ignored.
        let p = Plan::build(&m, "hi", &[], 1);
        assert!(p.tool_calls.is_empty());
        assert_eq!(p.text.as_deref(), Some("Hello from the mock! You said: hi"));
        assert_eq!(p.input_tokens, 1);
    }
}
