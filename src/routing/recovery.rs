//! Mid-stream recovery: a streamed chat completion that breaks off after its first byte (an
//! in-band provider error such as Anthropic's `overloaded_error`, or an end without the
//! terminal event) is continued on a fallback deployment, and the fallback's text is appended,
//! so the client reads one well-formed stream.
//!
//! [`StreamWatch`] reads the OpenAI-format SSE bytes the client is about to get (after
//! translation), split anywhere. It forwards whole events only, remembers choice 0's text, and
//! holds back an error event (and whatever follows it, e.g. `[DONE]`) while recovery is still
//! possible. At the end it says whether the stream is [`StreamEnd::Broken`]. Then
//! [`continuation_body`] builds the request for the fallback (non-streamed: the partial answer
//! as an assistant message and a request to continue), and [`render_tail`] turns the
//! fallback's OpenAI `chat.completion` into the stream's last events. The glue
//! (`wasm/recovery.rs`) only moves bytes. `docs/routing.md` says what the client sees.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::providers::Usage;

/// The user message that asks the fallback to continue the partial answer.
pub const CONTINUE_PROMPT: &str =
    "Continue exactly where your previous message stopped, without repeating anything.";

/// How a watched stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// It had its `finish_reason`, or `[DONE]` without an error event: passed through as it was.
    Complete,
    /// No `finish_reason`, and an error event or no `[DONE]` (the body just ended): the error
    /// event (if any) and what followed are held back; `partial_text` is choice 0's text so far.
    Broken { partial_text: String },
    /// Broken, but not recoverable (tool-call deltas, or choices other than 0): passed through
    /// as it was.
    NotRecoverable,
}

/// What became of a broken stream (the `llmux_outcome` label of
/// `llmux_router_midstream_recoveries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The fallback's continuation was appended.
    Recovered,
    /// The fallback failed too: the stream ended as it would have without recovery.
    Failed,
    /// Broken, but recovery did not apply (tool calls, several choices, no fallback left).
    NotRecoverable,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Self::Recovered => "recovered",
            Self::Failed => "failed",
            Self::NotRecoverable => "not_recoverable",
        }
    }
}

/// The most [`StreamWatch`] holds of one unfinished event: 2 MiB, twice the SSE parser's 1 MiB
/// per line and per event ([`crate::codec::sse::MAX_EVENT`]), so a translator's own cap always
/// answers first; only a pass-through stream read by nothing else can reach it. Over it the
/// watch ends the client's stream itself: an OpenAI error event (`upstream_event_too_large`),
/// then `data: [DONE]`; nothing after, and the stream is [`StreamEnd::NotRecoverable`].
pub const MAX_PENDING_EVENT: usize = 2 * crate::codec::sse::MAX_EVENT;

/// The most [`StreamWatch`] holds back after an error event (the error event and what follows
/// it, normally just `[DONE]`): 1 MiB. Whole events past it are dropped; the held bytes then
/// end with `data: [DONE]` all the same ([`StreamWatch::take_held`]).
pub const MAX_HELD: usize = 1024 * 1024;

/// The most of choice 0's text the watch keeps for the continuation request: 4 MiB (a
/// 128k-token answer is about 0.5 MiB). A longer stream is [`StreamEnd::NotRecoverable`] (its
/// text would not fit a continuation request anyway) and its text is no longer kept.
pub const MAX_PARTIAL_TEXT: usize = 4 * 1024 * 1024;

/// Watches the client's SSE stream (see the module docs).
#[derive(Debug, Default)]
pub struct StreamWatch {
    /// Bytes of the event not complete yet (not forwarded yet); at most [`MAX_PENDING_EVENT`].
    pending: Vec<u8>,
    /// How far `pending` was already searched for an event end.
    scanned: usize,
    /// Held back: the error event and everything after it; at most [`MAX_HELD`].
    held: Vec<u8>,
    /// Events were dropped from `held` (over [`MAX_HELD`]).
    held_overflow: bool,
    /// An event outgrew [`MAX_PENDING_EVENT`]: the watch ended the stream with an error; every
    /// later byte is dropped.
    cut: bool,
    /// Choice 0's text so far, at most [`MAX_PARTIAL_TEXT`].
    text: String,
    /// The text outgrew [`MAX_PARTIAL_TEXT`]: not recoverable.
    text_overflow: bool,
    tool_calls: bool,
    other_choice: bool,
    finish: bool,
    done: bool,
    error: bool,
    ended: bool,
    /// From the stream's first chunk: the tail reuses them.
    pub id: Option<String>,
    pub model: Option<String>,
    pub created: Option<u64>,
    /// A usage chunk the stream carried (`stream_options.include_usage`).
    pub usage: Option<Usage>,
}

#[derive(Deserialize)]
struct ChunkJson {
    id: Option<String>,
    model: Option<String>,
    created: Option<u64>,
    #[serde(default)]
    choices: Option<Vec<ChoiceJson>>,
    usage: Option<UsageJson>,
}

#[derive(Deserialize)]
struct ChoiceJson {
    #[serde(default)]
    index: u32,
    delta: Option<DeltaJson>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct DeltaJson {
    content: Option<String>,
    tool_calls: Option<Vec<Value>>,
    function_call: Option<Value>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct UsageJson {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

impl From<UsageJson> for Usage {
    fn from(u: UsageJson) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            ..Usage::default()
        }
    }
}

/// The position just after the first blank line (the end of an event) at or after `from`,
/// and where the search may resume when there is none. Lines end with `\n`, `\r\n` or `\r`.
fn event_end(buf: &[u8], from: usize) -> (Option<usize>, usize) {
    // Start of the line being read; `from` is always a line start (see the resume value).
    let mut line_start = from;
    let mut i = from;
    while let Some(off) = buf.get(i..).and_then(|s| memchr::memchr2(b'\n', b'\r', s)) {
        let at = i + off;
        let mut next = at + 1;
        if buf[at] == b'\r' {
            match buf.get(next) {
                Some(b'\n') => next += 1,
                Some(_) => {}
                // A `\r` at the end may be the first half of `\r\n`: wait for more.
                None => return (None, line_start),
            }
        }
        if at == line_start {
            return (Some(next), next);
        }
        line_start = next;
        i = next;
    }
    (None, line_start)
}

impl StreamWatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Choice 0's text so far.
    pub fn partial_text(&self) -> &str {
        &self.text
    }

    fn recoverable(&self) -> bool {
        !self.tool_calls && !self.other_choice && !self.finish && !self.text_overflow
    }

    /// Feeds the next bytes of the client's stream; returns the bytes to send now (whole
    /// events, minus anything held back). At `end_of_stream` an unterminated last event is
    /// judged too; see [`StreamWatch::end`].
    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if self.cut {
            return out;
        }
        if self.ended {
            return chunk.to_vec();
        }
        if self.pending.is_empty() && self.held.is_empty() && !self.error {
            // Fast path: a chunk of whole events is judged in place.
            let mut start = 0;
            let mut from = 0;
            loop {
                match event_end(chunk, from) {
                    (Some(end), _) => {
                        self.event(&chunk[start..end], &mut out);
                        start = end;
                        from = end;
                    }
                    (None, resume) => {
                        self.pending.extend_from_slice(&chunk[start..]);
                        self.scanned = resume - start;
                        break;
                    }
                }
            }
        } else {
            // Events are judged in place in `pending`, and what they used is dropped once per
            // chunk (one move of the unfinished rest, not one per event: linear).
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(chunk);
            let mut start = 0;
            let mut from = self.scanned;
            loop {
                match event_end(&pending, from) {
                    (Some(end), _) => {
                        self.event(&pending[start..end], &mut out);
                        start = end;
                        from = end;
                    }
                    (None, resume) => {
                        self.scanned = resume - start;
                        break;
                    }
                }
            }
            #[cfg(test)]
            tests::MOVED.with(|m| m.set(m.get() + pending.len() - start));
            pending.drain(..start);
            self.pending = pending;
        }
        if self.pending.len() > MAX_PENDING_EVENT {
            return self.cut_off(out);
        }
        if end_of_stream {
            let rest = std::mem::take(&mut self.pending);
            self.scanned = 0;
            if !rest.is_empty() {
                self.event(&rest, &mut out);
            }
            self.ended = true;
        }
        out
    }

    /// An event outgrew [`MAX_PENDING_EVENT`]: what was forwarded stays, the unfinished event
    /// is dropped, and the stream ends here with an error event and `[DONE]` (once: every later
    /// byte is dropped). Anything held is let go of too: the stream is not recoverable.
    fn cut_off(&mut self, mut out: Vec<u8>) -> Vec<u8> {
        self.pending = Vec::new();
        self.scanned = 0;
        self.held = Vec::new();
        self.cut = true;
        self.ended = true;
        let e = crate::error::GatewayError::new(
            502,
            "api_error",
            format!(
                "the provider's stream has an event larger than the gateway's limit of {MAX_PENDING_EVENT} bytes"
            ),
        )
        .with_code("upstream_event_too_large");
        out.extend_from_slice(&e.sse_event());
        out.extend_from_slice(b"data: [DONE]\n\n");
        out
    }

    /// One whole event's bytes: judged, then forwarded or held.
    fn event(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if !self.held.is_empty() {
            if self.held.len() + bytes.len() <= MAX_HELD {
                self.held.extend_from_slice(bytes);
            } else {
                self.held_overflow = true;
            }
            return;
        }
        let mut data = None;
        let mut parser = crate::codec::sse::SseParser::new();
        parser.feed(bytes, &mut |e| data = Some(e.text().into_owned()));
        parser.finish(&mut |e| data = Some(e.text().into_owned()));
        let Some(data) = data else {
            out.extend_from_slice(bytes); // comments, blank lines
            return;
        };
        let d = data.trim();
        if d == "[DONE]" {
            self.done = true;
            out.extend_from_slice(bytes);
            return;
        }
        if d.contains("\"error\"") {
            if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(d) {
                if o.contains_key("error") && !o.contains_key("choices") {
                    self.error = true;
                    if self.recoverable() {
                        self.held.extend_from_slice(bytes);
                    } else {
                        out.extend_from_slice(bytes);
                    }
                    return;
                }
            }
        }
        if let Ok(c) = serde_json::from_str::<ChunkJson>(d) {
            if self.id.is_none() {
                self.id = c.id;
                self.model = c.model;
                self.created = c.created;
            }
            if let Some(u) = c.usage {
                self.usage = Some(u.into());
            }
            for ch in c.choices.unwrap_or_default() {
                if ch.index != 0 {
                    self.other_choice = true;
                    continue;
                }
                if let Some(delta) = ch.delta {
                    if let Some(t) = delta.content {
                        if self.text.len() + t.len() <= MAX_PARTIAL_TEXT {
                            self.text.push_str(&t);
                        } else {
                            self.text_overflow = true;
                            self.text = String::new();
                        }
                    }
                    if delta.tool_calls.is_some_and(|t| !t.is_empty())
                        || delta.function_call.is_some_and(|f| !f.is_null())
                    {
                        self.tool_calls = true;
                    }
                }
                if ch.finish_reason.is_some() {
                    self.finish = true;
                }
            }
        }
        out.extend_from_slice(bytes);
    }

    /// How the stream ended (call after the `end_of_stream` feed).
    pub fn end(&self) -> StreamEnd {
        if self.cut {
            return StreamEnd::NotRecoverable;
        }
        if self.finish || (!self.error && self.done) {
            return StreamEnd::Complete;
        }
        if !self.recoverable() {
            return StreamEnd::NotRecoverable;
        }
        StreamEnd::Broken {
            partial_text: self.text.clone(),
        }
    }

    /// The held-back bytes (the error event and what followed), e.g. to send them after all.
    /// When events were dropped over [`MAX_HELD`], they end with `data: [DONE]` all the same.
    pub fn take_held(&mut self) -> Vec<u8> {
        let mut held = std::mem::take(&mut self.held);
        if std::mem::take(&mut self.held_overflow) && !held.ends_with(b"data: [DONE]\n\n") {
            held.extend_from_slice(b"data: [DONE]\n\n");
        }
        held
    }
}

/// What recovery needs from the client's original request; `None` when it cannot apply (not
/// a streamed chat completion with one choice, or not JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryRequest {
    /// `stream_options.include_usage`: the tail carries a usage chunk.
    pub include_usage: bool,
}

impl RecoveryRequest {
    pub fn of(body: &[u8]) -> Option<Self> {
        let v: Map<String, Value> = serde_json::from_slice(body).ok()?;
        if v.get("stream") != Some(&Value::Bool(true)) {
            return None;
        }
        if v.get("n").and_then(Value::as_u64).is_some_and(|n| n != 1) {
            return None;
        }
        v.get("messages")?.as_array()?;
        let include_usage = v
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Some(RecoveryRequest { include_usage })
    }
}

/// The fallback's request: the client's body with `stream: false` (no `stream_options`), and
/// when there is partial text, the messages followed by it as the assistant's message and a
/// user message asking to continue ([`CONTINUE_PROMPT`]). With no text yet the original
/// conversation is simply asked again. `None` when the body is not a JSON object with
/// `messages`.
pub fn continuation_body(original: &[u8], partial_text: &str) -> Option<Vec<u8>> {
    let mut v: Map<String, Value> = serde_json::from_slice(original).ok()?;
    v.insert("stream".into(), Value::Bool(false));
    v.remove("stream_options");
    let messages = v.get_mut("messages")?.as_array_mut()?;
    if !partial_text.is_empty() {
        messages.push(serde_json::json!({"role": "assistant", "content": partial_text}));
        messages.push(serde_json::json!({"role": "user", "content": CONTINUE_PROMPT}));
    }
    serde_json::to_vec(&v).ok()
}

#[derive(Deserialize)]
struct CompletionJson {
    id: Option<String>,
    model: Option<String>,
    created: Option<u64>,
    choices: Vec<CompletionChoice>,
    usage: Option<UsageJson>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: CompletionMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CompletionMessage {
    content: Option<String>,
    tool_calls: Option<Vec<Value>>,
}

/// The stream's ending from the fallback's OpenAI `chat.completion`: a chunk with its text (if
/// any), a chunk with its `finish_reason`, a usage chunk when asked for (the broken stream's
/// usage, if known, plus the fallback's), the comment `: llmux recovered on deployment <name>`
/// and `data: [DONE]`. Chunks reuse the stream's `id`, `model` and `created`. An answer with
/// tool calls, or without choices, is an error (it cannot continue a text).
pub fn render_tail(
    watch: &StreamWatch,
    completion: &[u8],
    deployment: &str,
    include_usage: bool,
    partial_usage: Option<Usage>,
) -> Result<Vec<u8>, String> {
    let c: CompletionJson = serde_json::from_slice(completion)
        .map_err(|e| format!("the fallback's answer is not a chat completion: {e}"))?;
    let choice = c
        .choices
        .into_iter()
        .next()
        .ok_or("the fallback's answer has no choices")?;
    if choice.message.tool_calls.is_some_and(|t| !t.is_empty()) {
        return Err("the fallback answered with tool calls".into());
    }
    let id = watch.id.clone().or(c.id).unwrap_or_default();
    let model = watch.model.clone().or(c.model).unwrap_or_default();
    let created = watch.created.or(c.created).unwrap_or(0);
    let usage_null = include_usage.then_some(Value::Null);
    let chunk = |delta: Value, finish: Value| {
        let mut o = Map::new();
        o.insert("id".into(), Value::from(id.as_str()));
        o.insert("object".into(), Value::from("chat.completion.chunk"));
        o.insert("created".into(), Value::from(created));
        o.insert("model".into(), Value::from(model.as_str()));
        o.insert(
            "choices".into(),
            serde_json::json!([{"index": 0, "delta": delta, "finish_reason": finish}]),
        );
        if let Some(n) = &usage_null {
            o.insert("usage".into(), n.clone());
        }
        Value::Object(o)
    };
    let mut out = Vec::new();
    let text = choice.message.content.unwrap_or_default();
    if !text.is_empty() || watch.id.is_none() {
        let mut delta = Map::new();
        if watch.id.is_none() {
            // The client never got a first chunk: this one starts the assistant's message.
            delta.insert("role".into(), Value::from("assistant"));
        }
        delta.insert("content".into(), Value::from(text));
        crate::codec::sse::write_json_event(&mut out, &chunk(Value::Object(delta), Value::Null));
    }
    let finish = choice.finish_reason.unwrap_or_else(|| "stop".into());
    crate::codec::sse::write_json_event(
        &mut out,
        &chunk(serde_json::json!({}), Value::from(finish)),
    );
    if include_usage {
        let a = partial_usage.unwrap_or_default();
        let b: Usage = c.usage.unwrap_or_default().into();
        let prompt = a.prompt_tokens.saturating_add(b.prompt_tokens);
        let completion = a.completion_tokens.saturating_add(b.completion_tokens);
        let u = serde_json::json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt.saturating_add(completion)},
        });
        crate::codec::sse::write_json_event(&mut out, &u);
    }
    // One comment line, whatever the name holds.
    let name: String = deployment
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    out.extend_from_slice(b": llmux recovered on deployment ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\n\ndata: [DONE]\n\n");
    Ok(out)
}

#[cfg(test)]
mod tests;
