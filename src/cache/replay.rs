//! One stored form for a cached answer, and the answer rendered back from it.
//!
//! The cache sees an answer as the client got it: plain JSON, or an SSE stream of chunks (OpenAI
//! chat completions) or events (Anthropic Messages). It stores one *canonical* form whichever way
//! the answer came — the JSON a non-streamed request gets (`chat.completion` object, or Anthropic
//! `message` object) — so a streamed answer can be replayed to a plain request and the other way
//! round. Pure functions: no proxy-wasm call, no config, no storage.
//!
//! - [`canonical_from_plain`] / [`canonical_from_stream`]: the canonical form, or `None` when the
//!   bytes are not one complete, successful answer this module can replay (a partial stream, an
//!   error, a block type it does not know): what cannot be replayed is never stored.
//! - [`render_plain`] / [`render_stream`]: the canonical form back, with an `llmux_cache` mark
//!   (`{"kind":"hit","similarity":0.97}`) telling the client the answer came from the cache. The
//!   mark is stripped again when an answer is canonicalised, so a replay is never stored marked.
//! - [`usage_of`]: the token usage of a canonical answer.
//!
//! Shapes follow the official APIs: OpenAI chat completions streaming
//! (<https://platform.openai.com/docs/api-reference/chat-streaming>) and Anthropic Messages
//! streaming (<https://docs.anthropic.com/en/api/messages-streaming>), as LLMux itself writes them
//! (`providers/openai_chunks.rs`, `client_api/anthropic/stream.rs`).
//!
//! Round trips: `canonical_from_stream(render_stream(c)) == c` and
//! `canonical_from_plain(render_plain(c)) == c` for every `c` this module produced from a
//! stream. A canonical form taken from a plain answer keeps everything the provider sent; the
//! stream rendering of it carries what a stream can carry (not `logprobs`, and OpenAI's
//! `"annotations": []` / a missing `refusal` come back as no annotations / `"refusal": null`).
//!
//! Text is streamed in pieces of at most [`PIECE`] bytes, each cut at a UTF-8 character boundary.
//! Input is untrusted (provider and client bytes): nothing here panics, every scan is linear, and
//! inputs above [`MAX_ANSWER_BYTES`] are refused.

use serde_json::{json, Map, Value};

use crate::codec::sse::{write_data, write_event, SseEvent, SseParser};

/// The largest answer (plain body, stream, or canonical form) this module reads: 4 MiB.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// The most choices (OpenAI), tool calls per choice (OpenAI) or content blocks (Anthropic) one
/// streamed answer may have: 1024, as `providers::openai_chunks::MAX_STREAM_BLOCKS`. Indexes are
/// used as vector positions, so this also bounds what a hostile index can make us allocate.
pub const MAX_INDEX: usize = 1024;

/// The most bytes of text one rendered delta carries (cut back to a character boundary): small
/// events, as a provider streams them, so a replayed stream looks like one to a client.
pub const PIECE: usize = 64;

/// The top-level field the cache mark goes in.
pub const MARK_FIELD: &str = "llmux_cache";

/// Which client API the answer is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI chat completions (`chat.completion` / `chat.completion.chunk`).
    Chat,
    /// Anthropic Messages (`message` / stream events).
    Messages,
}

/// What the client is told about a replayed answer: `{"kind": "hit", "similarity": 0.97}`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheMark {
    /// `"hit"` (exact) or `"semantic"`.
    pub kind: &'static str,
    /// The semantic match's similarity; omitted from the mark when `None`.
    pub similarity: Option<f32>,
}

impl CacheMark {
    fn to_value(self) -> Value {
        let mut m = Map::new();
        m.insert("kind".into(), Value::from(self.kind));
        if let Some(s) = self.similarity {
            // The f32's shortest decimal (0.97, not 0.9700000286102295); a NaN or infinite
            // similarity has no JSON number: null.
            let n = s.to_string().parse::<f64>().ok();
            let n = n.and_then(serde_json::Number::from_f64);
            m.insert("similarity".into(), n.map_or(Value::Null, Value::Number));
        }
        Value::Object(m)
    }
}

/// A complete, successful answer in canonical form: the plain answer itself (a `chat.completion`
/// whose every choice has a `finish_reason`, or a `message` with a `stop_reason`), without a cache
/// mark. `None` if the bytes are not such an answer or hold something a stream cannot replay.
pub fn canonical_from_plain(api: Api, body: &[u8]) -> Option<Vec<u8>> {
    let mut v = parse_object(body)?;
    v.remove(MARK_FIELD);
    replayable(api, &v).then(|| to_bytes(v))?
}

/// The canonical form of a whole client stream. `None` unless the stream is complete (`[DONE]`,
/// or `message_stop`), has no error event, and every choice / block in it is finished.
pub fn canonical_from_stream(api: Api, sse: &[u8]) -> Option<Vec<u8>> {
    if sse.len() > MAX_ANSWER_BYTES {
        return None;
    }
    let v = match api {
        Api::Chat => {
            let mut acc = ChatAcc::default();
            each_event(sse, &mut |e| acc.event(e))?;
            acc.finish()?
        }
        Api::Messages => {
            let mut acc = MessagesAcc::default();
            each_event(sse, &mut |e| acc.event(e))?;
            acc.finish()?
        }
    };
    replayable(api, &v).then(|| to_bytes(v))?
}

/// The canonical answer as a plain answer, with the `llmux_cache` mark as a top-level field (both
/// official SDKs, openai-python and anthropic-python, keep unknown top-level fields).
pub fn render_plain(api: Api, canonical: &[u8], mark: &CacheMark) -> Option<Vec<u8>> {
    let mut v = parse_object(canonical)?;
    if !replayable(api, &v) {
        return None;
    }
    v.insert(MARK_FIELD.into(), mark.to_value());
    to_bytes(v)
}

/// The canonical answer as the client's stream. Chat: the mark is on every chunk (a client may
/// look at any of them); `include_usage` (the client's `stream_options.include_usage`) adds
/// `"usage": null` to each chunk and a usage chunk before `[DONE]` when the answer has usage.
/// Messages: the mark is in `message_start`'s `message`; `include_usage` is not used (Anthropic
/// streams always carry usage).
pub fn render_stream(
    api: Api,
    canonical: &[u8],
    mark: &CacheMark,
    include_usage: bool,
) -> Option<Vec<u8>> {
    let v = parse_object(canonical)?;
    if !replayable(api, &v) {
        return None;
    }
    match api {
        Api::Chat => render_chat_stream(&v, mark, include_usage),
        Api::Messages => Some(render_messages_stream(&v, mark)),
    }
}

/// The canonical answer's usage: (prompt / input tokens, completion / output tokens). For
/// Messages the input counts cached tokens too (`input_tokens + cache_read_input_tokens +
/// cache_creation_input_tokens`), as the gateway counts Anthropic usage everywhere else.
/// `None` when the answer is unreadable or has no `usage` object.
pub fn usage_of(api: Api, canonical: &[u8]) -> Option<(u64, u64)> {
    let v = parse_object(canonical)?;
    let u = v.get("usage")?.as_object()?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(match api {
        Api::Chat => (n("prompt_tokens"), n("completion_tokens")),
        Api::Messages => (
            n("input_tokens")
                .saturating_add(n("cache_read_input_tokens"))
                .saturating_add(n("cache_creation_input_tokens")),
            n("output_tokens"),
        ),
    })
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// A JSON object of at most [`MAX_ANSWER_BYTES`].
fn parse_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    if bytes.len() > MAX_ANSWER_BYTES {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

fn to_bytes(v: Map<String, Value>) -> Option<Vec<u8>> {
    serde_json::to_vec(&Value::Object(v)).ok()
}

/// Every event of a whole stream; `None` if the SSE parser stopped at one of its caps.
fn each_event(sse: &[u8], on_event: &mut dyn FnMut(SseEvent)) -> Option<()> {
    let mut p = SseParser::new();
    p.feed(sse, on_event);
    p.finish(on_event);
    p.error().is_none().then_some(())
}

/// `s` in pieces of at most [`PIECE`] bytes, never cut inside a character (empty `s`: none).
fn pieces(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = PIECE.min(rest.len());
        while end > 0 && !rest.is_char_boundary(end) {
            end -= 1;
        }
        if end == 0 {
            end = rest.len(); // (only with a PIECE shorter than a character)
        }
        let (head, tail) = rest.split_at_checked(end)?;
        rest = tail;
        Some(head)
    })
}

/// Appends `piece` to the string `m[key]` (made a string if it is not one).
fn append_str(m: &mut Map<String, Value>, key: &str, piece: &str) {
    match m.get_mut(key) {
        Some(Value::String(s)) => s.push_str(piece),
        _ => {
            m.insert(key.into(), Value::from(piece));
        }
    }
}

fn is_str_or_null(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null | Value::String(_)))
}

/// The canonical answer is complete and everything in it can be rendered as a stream.
fn replayable(api: Api, v: &Map<String, Value>) -> bool {
    match api {
        Api::Chat => chat_replayable(v),
        Api::Messages => messages_replayable(v),
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAI chat completions

/// A `chat.completion` whose choices are in order (`index` = position), each finished and with a
/// message of text, reasoning, refusal and function tool calls (no `audio`: not replayed).
fn chat_replayable(v: &Map<String, Value>) -> bool {
    if v.get("object").and_then(Value::as_str) != Some("chat.completion") {
        return false;
    }
    let Some(choices) = v.get("choices").and_then(Value::as_array) else {
        return false;
    };
    !choices.is_empty()
        && choices.len() <= MAX_INDEX
        && choices.iter().enumerate().all(|(i, c)| {
            c.get("index").and_then(Value::as_u64) == Some(i as u64)
                && c.get("finish_reason").is_some_and(Value::is_string)
                && c.get("message").is_some_and(chat_message_replayable)
        })
}

fn chat_message_replayable(m: &Value) -> bool {
    let Some(m) = m.as_object() else {
        return false;
    };
    let tools_ok = match m.get("tool_calls") {
        None | Some(Value::Null) => true,
        Some(Value::Array(calls)) => {
            calls.len() <= MAX_INDEX
                && calls.iter().all(|c| {
                    c.get("id").is_some_and(Value::is_string)
                        && c.get("type").and_then(Value::as_str) == Some("function")
                        && c.pointer("/function/name").is_some_and(Value::is_string)
                        && c.pointer("/function/arguments")
                            .is_some_and(Value::is_string)
                })
        }
        Some(_) => false,
    };
    tools_ok
        && is_str_or_null(m.get("role"))
        && is_str_or_null(m.get("content"))
        && is_str_or_null(m.get("refusal"))
        && is_str_or_null(m.get("reasoning_content"))
        && matches!(
            m.get("annotations"),
            None | Some(Value::Null | Value::Array(_))
        )
        && m.get("audio").is_none_or(Value::is_null)
}

/// One choice of a chat stream, as its deltas arrive.
#[derive(Default)]
struct ChoiceAcc {
    role: Option<String>,
    /// `Some` once a string `content` delta came (the role chunk's `""` counts).
    content: Option<String>,
    refusal: Option<String>,
    reasoning: Option<String>,
    annotations: Vec<Value>,
    /// By the tool call's `index`.
    tools: Vec<Option<ToolAcc>>,
    finish: Option<String>,
}

#[derive(Default)]
struct ToolAcc {
    id: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    arguments: String,
}

/// A chat stream assembled into a `chat.completion`.
#[derive(Default)]
struct ChatAcc {
    /// `id`, `created`, `model`, `system_fingerprint`, `service_tier`: the first meaningful
    /// value of each (not null, `""` or 0: Azure's content-filter chunk has `"id":""`).
    envelope: Map<String, Value>,
    usage: Option<Value>,
    /// By the choice's `index`.
    choices: Vec<Option<ChoiceAcc>>,
    done: bool,
    failed: bool,
}

/// The top-level chunk fields kept in the canonical answer.
const CHAT_ENVELOPE: [&str; 5] = [
    "id",
    "created",
    "model",
    "system_fingerprint",
    "service_tier",
];

/// The slot for `index` in a vector indexed by it, grown as needed; `None` past [`MAX_INDEX`].
fn slot<T: Default>(v: &mut Vec<Option<T>>, index: Option<u64>) -> Option<&mut T> {
    let i = usize::try_from(index?).ok().filter(|&i| i < MAX_INDEX)?;
    if v.len() <= i {
        v.resize_with(i + 1, || None);
    }
    Some(v.get_mut(i)?.get_or_insert_with(T::default))
}

impl ChatAcc {
    fn event(&mut self, e: SseEvent) {
        if self.done || self.failed {
            return;
        }
        let data = e.data.trim_ascii();
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        if self.chunk(data).is_none() {
            self.failed = true;
        }
    }

    fn chunk(&mut self, data: &[u8]) -> Option<()> {
        let chunk: Map<String, Value> = serde_json::from_slice(data).ok()?;
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            return None;
        }
        for key in CHAT_ENVELOPE {
            let meaningful = |v: &&Value| match v {
                Value::Null => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_u64() != Some(0),
                _ => true,
            };
            if !self.envelope.contains_key(key) {
                if let Some(v) = chunk.get(key).filter(meaningful) {
                    self.envelope.insert(key.into(), v.clone());
                }
            }
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        match chunk.get("choices") {
            None | Some(Value::Null) => Some(()),
            Some(Value::Array(choices)) => choices.iter().try_for_each(|c| self.choice(c)),
            Some(_) => None,
        }
    }

    fn choice(&mut self, c: &Value) -> Option<()> {
        let acc = slot(&mut self.choices, c.get("index").and_then(Value::as_u64))?;
        if let Some(f) = c.get("finish_reason").and_then(Value::as_str) {
            acc.finish = Some(f.to_string());
        }
        let Some(d) = c.get("delta").filter(|d| !d.is_null()) else {
            return Some(());
        };
        let d = d.as_object()?;
        if let Some(r) = d.get("role").and_then(Value::as_str) {
            acc.role.get_or_insert_with(|| r.to_string());
        }
        for (key, to) in [
            ("content", &mut acc.content),
            ("refusal", &mut acc.refusal),
            ("reasoning_content", &mut acc.reasoning),
        ] {
            if let Some(t) = d.get(key).and_then(Value::as_str) {
                to.get_or_insert_with(String::new).push_str(t);
            }
        }
        if let Some(a) = d.get("annotations").and_then(Value::as_array) {
            acc.annotations.extend(a.iter().cloned());
        }
        match d.get("tool_calls") {
            None | Some(Value::Null) => {}
            Some(Value::Array(calls)) => {
                for call in calls {
                    let t = slot(&mut acc.tools, call.get("index").and_then(Value::as_u64))?;
                    let text = |p: &str| call.pointer(p).and_then(Value::as_str);
                    if let Some(id) = text("/id").filter(|s| !s.is_empty()) {
                        t.id.get_or_insert_with(|| id.to_string());
                    }
                    if let Some(k) = text("/type") {
                        t.kind.get_or_insert_with(|| k.to_string());
                    }
                    if let Some(n) = text("/function/name").filter(|s| !s.is_empty()) {
                        t.name.get_or_insert_with(|| n.to_string());
                    }
                    if let Some(a) = text("/function/arguments") {
                        t.arguments.push_str(a);
                    }
                }
            }
            Some(_) => return None,
        }
        Some(())
    }

    /// The `chat.completion`: only after `[DONE]`, with every choice (no gap in the indexes)
    /// finished and every tool call named.
    fn finish(self) -> Option<Map<String, Value>> {
        if !self.done || self.failed || self.choices.is_empty() {
            return None;
        }
        let mut choices = Vec::with_capacity(self.choices.len());
        for (i, c) in self.choices.into_iter().enumerate() {
            let c = c?;
            let mut calls = Vec::with_capacity(c.tools.len());
            for t in c.tools {
                let t = t?;
                calls.push(json!({
                    "id": t.id?,
                    "type": t.kind.unwrap_or_else(|| "function".into()),
                    "function": {"name": t.name?, "arguments": t.arguments},
                }));
            }
            // OpenAI: `content` is null when a message is only tool calls.
            let content = match c.content {
                Some(t) if !t.is_empty() || calls.is_empty() => Value::String(t),
                _ => Value::Null,
            };
            let mut m = Map::new();
            m.insert(
                "role".into(),
                Value::from(c.role.unwrap_or_else(|| "assistant".into())),
            );
            m.insert("content".into(), content);
            m.insert("refusal".into(), c.refusal.map_or(Value::Null, Value::from));
            if let Some(r) = c.reasoning {
                m.insert("reasoning_content".into(), Value::from(r));
            }
            if !calls.is_empty() {
                m.insert("tool_calls".into(), Value::Array(calls));
            }
            if !c.annotations.is_empty() {
                m.insert("annotations".into(), Value::Array(c.annotations));
            }
            choices.push(json!({
                "index": i,
                "message": m,
                "logprobs": null,
                "finish_reason": c.finish?,
            }));
        }
        let mut v = self.envelope;
        for key in ["id", "created", "model"] {
            if !v.contains_key(key) {
                return None;
            }
        }
        v.insert("object".into(), Value::from("chat.completion"));
        v.insert("choices".into(), Value::Array(choices));
        if let Some(u) = self.usage {
            v.insert("usage".into(), u);
        }
        Some(v)
    }
}

/// A `chat.completion` as its chunk stream: per choice a role chunk
/// (`{"role":"assistant","content":""}`), `reasoning_content`, `content` and `refusal` in
/// [`PIECE`]s, `annotations` in one chunk, each tool call as OpenAI sends it (a start with `id`,
/// `type`, `name` and `"arguments":""`, then its arguments in pieces), and a finish chunk; then
/// the usage chunk (`"choices":[]`) when asked for and the answer has usage; then `[DONE]`.
fn render_chat_stream(
    v: &Map<String, Value>,
    mark: &CacheMark,
    include_usage: bool,
) -> Option<Vec<u8>> {
    // Every chunk's constant head: `{"created":..,"id":..,..,"llmux_cache":{..}` (no closing
    // brace), serialised once.
    let mut envelope = Map::new();
    for key in CHAT_ENVELOPE {
        if let Some(x) = v.get(key).filter(|x| !x.is_null()) {
            envelope.insert(key.into(), x.clone());
        }
    }
    envelope.insert("object".into(), Value::from("chat.completion.chunk"));
    envelope.insert(MARK_FIELD.into(), mark.to_value());
    let mut head = serde_json::to_vec(&envelope).ok()?;
    head.pop(); // the closing `}`

    let mut out = Vec::new();
    let mut scratch = Vec::new();
    let mut chunk = |out: &mut Vec<u8>, choices: &Value, usage: Option<&Value>| {
        scratch.clear();
        scratch.extend_from_slice(&head);
        scratch.extend_from_slice(b",\"choices\":");
        scratch.extend_from_slice(choices.to_string().as_bytes());
        match usage {
            Some(u) => {
                scratch.extend_from_slice(b",\"usage\":");
                scratch.extend_from_slice(u.to_string().as_bytes());
            }
            None if include_usage => scratch.extend_from_slice(b",\"usage\":null"),
            None => {}
        }
        scratch.push(b'}');
        write_data(out, &scratch);
    };
    let choices = v.get("choices").and_then(Value::as_array)?;
    for (index, c) in choices.iter().enumerate() {
        let m = c.get("message")?;
        let mut delta = |out: &mut Vec<u8>, delta: Value, finish: &Value| {
            let choice = json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]);
            chunk(out, &choice, None);
        };
        let text = |key: &str| m.get(key).and_then(Value::as_str);
        let calls = m.get("tool_calls").and_then(Value::as_array);
        let has_calls = calls.is_some_and(|c| !c.is_empty());
        let role = text("role").unwrap_or("assistant");
        // `content: null` only for a message that has none and no tool calls (whose empty
        // content comes back as null anyway).
        let first = if text("content").is_none() && !has_calls {
            Value::Null
        } else {
            Value::from("")
        };
        delta(
            &mut out,
            json!({"role": role, "content": first}),
            &Value::Null,
        );
        for key in ["reasoning_content", "content", "refusal"] {
            let Some(t) = text(key) else { continue };
            if t.is_empty() && key != "content" {
                delta(&mut out, json!({key: ""}), &Value::Null);
            }
            for p in pieces(t) {
                delta(&mut out, json!({key: p}), &Value::Null);
            }
        }
        if let Some(a) = m
            .get("annotations")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        {
            delta(&mut out, json!({"annotations": a}), &Value::Null);
        }
        for (k, call) in calls.into_iter().flatten().enumerate() {
            let name = call.pointer("/function/name")?;
            let start = json!({"tool_calls": [{"index": k, "id": call.get("id")?,
                "type": "function", "function": {"name": name, "arguments": ""}}]});
            delta(&mut out, start, &Value::Null);
            let args = call.pointer("/function/arguments").and_then(Value::as_str);
            for p in pieces(args.unwrap_or("")) {
                let more = json!({"tool_calls": [{"index": k, "function": {"arguments": p}}]});
                delta(&mut out, more, &Value::Null);
            }
        }
        delta(&mut out, json!({}), c.get("finish_reason")?);
    }
    if include_usage {
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            chunk(&mut out, &json!([]), Some(u));
        }
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Anthropic Messages

/// The content block types replayed: text, tool_use, thinking, redacted_thinking. Others
/// (server tools' blocks, …) are refused rather than replayed wrong.
fn block_replayable(b: &Value) -> bool {
    let s = |k: &str| b.get(k).is_some_and(Value::is_string);
    match b.get("type").and_then(Value::as_str) {
        Some("text") => {
            s("text")
                && matches!(
                    b.get("citations"),
                    None | Some(Value::Null | Value::Array(_))
                )
        }
        Some("tool_use") => s("id") && s("name") && b.get("input").is_some_and(Value::is_object),
        Some("thinking") => s("thinking") && s("signature"),
        Some("redacted_thinking") => s("data"),
        _ => false,
    }
}

/// A `message` with a `stop_reason`, whose every content block can be replayed.
fn messages_replayable(v: &Map<String, Value>) -> bool {
    v.get("type").and_then(Value::as_str) == Some("message")
        && v.get("stop_reason").is_some_and(Value::is_string)
        && v.get("content")
            .and_then(Value::as_array)
            .is_some_and(|c| c.len() <= MAX_INDEX && c.iter().all(block_replayable))
        && matches!(v.get("usage"), None | Some(Value::Null | Value::Object(_)))
}

/// One content block of a Messages stream, as its deltas arrive.
struct BlockAcc {
    block: Map<String, Value>,
    /// The `input_json_delta` pieces of a tool_use block, parsed at its `content_block_stop`.
    json: String,
    stopped: bool,
}

/// A Messages stream assembled into a `message`.
#[derive(Default)]
struct MessagesAcc {
    /// `message_start`'s message, then `message_delta`'s fields.
    message: Option<Map<String, Value>>,
    /// By index: blocks start in order, 0, 1, 2…
    blocks: Vec<BlockAcc>,
    stopped: bool,
    failed: bool,
}

impl MessagesAcc {
    fn event(&mut self, e: SseEvent) {
        if self.stopped || self.failed {
            return;
        }
        if self.apply(e.data).is_none() {
            self.failed = true;
        }
    }

    /// One event, by its data's `type` (the `event:` line says the same).
    fn apply(&mut self, data: &[u8]) -> Option<()> {
        let mut ev: Map<String, Value> = serde_json::from_slice(data).ok()?;
        let index = || {
            let i = ev.get("index").and_then(Value::as_u64)?;
            usize::try_from(i).ok()
        };
        match ev.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                if self.message.is_some() {
                    return None;
                }
                let Some(Value::Object(mut m)) = ev.remove("message") else {
                    return None;
                };
                m.remove(MARK_FIELD);
                self.message = Some(m);
            }
            Some("content_block_start") => {
                let i = index()?;
                if self.message.is_none() || i != self.blocks.len() || i >= MAX_INDEX {
                    return None;
                }
                let Some(Value::Object(block)) = ev.remove("content_block") else {
                    return None;
                };
                let known = matches!(
                    block.get("type").and_then(Value::as_str),
                    Some("text" | "tool_use" | "thinking" | "redacted_thinking")
                );
                if !known {
                    return None; // not replayable: not stored
                }
                self.blocks.push(BlockAcc {
                    block,
                    json: String::new(),
                    stopped: false,
                });
            }
            Some("content_block_delta") => {
                let b = self.blocks.get_mut(index()?).filter(|b| !b.stopped)?;
                let d = ev.get("delta")?;
                let kind = b.block.get("type").and_then(Value::as_str);
                let text = |k: &str| d.get(k).and_then(Value::as_str);
                match (d.get("type").and_then(Value::as_str)?, kind) {
                    ("text_delta", Some("text")) => append_str(&mut b.block, "text", text("text")?),
                    ("input_json_delta", Some("tool_use")) => {
                        b.json.push_str(text("partial_json")?);
                    }
                    ("thinking_delta", Some("thinking")) => {
                        append_str(&mut b.block, "thinking", text("thinking")?);
                    }
                    ("signature_delta", Some("thinking")) => {
                        append_str(&mut b.block, "signature", text("signature")?);
                    }
                    ("citations_delta", Some("text")) => {
                        let c = d.get("citation")?.clone();
                        match b.block.get_mut("citations") {
                            Some(Value::Array(a)) => a.push(c),
                            _ => {
                                b.block.insert("citations".into(), Value::Array(vec![c]));
                            }
                        }
                    }
                    _ => return None, // a delta we cannot replay, or not for this block
                }
            }
            Some("content_block_stop") => {
                let b = self.blocks.get_mut(index()?).filter(|b| !b.stopped)?;
                if !b.json.trim_ascii().is_empty() {
                    let input: Value = serde_json::from_str(&b.json).ok()?;
                    b.block.insert("input".into(), input);
                }
                b.json = String::new();
                b.stopped = true;
            }
            Some("message_delta") => {
                let m = self.message.as_mut()?;
                if let Some(Value::Object(d)) = ev.remove("delta") {
                    m.extend(d);
                }
                if let Some(Value::Object(u)) = ev.remove("usage") {
                    let usage = m
                        .entry("usage")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !usage.is_object() {
                        *usage = Value::Object(Map::new());
                    }
                    if let Value::Object(usage) = usage {
                        // Cumulative counts: the later value wins (a null says nothing).
                        usage.extend(u.into_iter().filter(|(_, v)| !v.is_null()));
                    }
                }
            }
            Some("message_stop") => self.stopped = true,
            Some("error") => return None,
            _ => {} // `ping`, and event types added later
        }
        Some(())
    }

    /// The `message`: only after `message_stop`, every block stopped.
    fn finish(self) -> Option<Map<String, Value>> {
        if !self.stopped || self.failed {
            return None;
        }
        let mut m = self.message?;
        let mut content = Vec::with_capacity(self.blocks.len());
        for b in self.blocks {
            if !b.stopped {
                return None;
            }
            content.push(Value::Object(b.block));
        }
        m.insert("content".into(), Value::Array(content));
        Some(m)
    }
}

/// A `message` as its stream: `message_start` (the message with empty content, no stop reason,
/// its usage with `output_tokens` at most 1 as Anthropic sends it, and the mark), per block
/// `content_block_start` / deltas in [`PIECE`]s / `content_block_stop`, then `message_delta`
/// (stop reason and sequence, `output_tokens`) and `message_stop`.
fn render_messages_stream(v: &Map<String, Value>, mark: &CacheMark) -> Vec<u8> {
    let mut out = Vec::new();
    let emit = |out: &mut Vec<u8>, name: &str, ev: Value| {
        write_event(out, name, ev.to_string().as_bytes());
    };
    let output_tokens = usage_field(v, "output_tokens");
    let mut start = v.clone();
    start.insert("content".into(), json!([]));
    start.insert("stop_reason".into(), Value::Null);
    start.insert("stop_sequence".into(), Value::Null);
    if let Some(Value::Object(u)) = start.get_mut("usage") {
        if let Some(n) = output_tokens {
            u.insert("output_tokens".into(), Value::from(n.min(1)));
        }
    }
    start.insert(MARK_FIELD.into(), mark.to_value());
    emit(
        &mut out,
        "message_start",
        json!({"type": "message_start", "message": start}),
    );
    let blocks = v.get("content").and_then(Value::as_array);
    for (index, b) in blocks.into_iter().flatten().enumerate() {
        let delta = |out: &mut Vec<u8>, d: Value| {
            let ev = json!({"type": "content_block_delta", "index": index, "delta": d});
            emit(out, "content_block_delta", ev);
        };
        let text = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("");
        let mut head = b.as_object().cloned().unwrap_or_default();
        let mut deltas: Vec<Value> = Vec::new();
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                head.insert("text".into(), Value::from(""));
                deltas
                    .extend(pieces(text("text")).map(|p| json!({"type": "text_delta", "text": p})));
                if let Some(Value::Array(cites)) = b.get("citations") {
                    head.insert("citations".into(), json!([]));
                    deltas.extend(
                        cites
                            .iter()
                            .map(|c| json!({"type": "citations_delta", "citation": c})),
                    );
                }
            }
            Some("tool_use") => {
                head.insert("input".into(), json!({}));
                let input = b.get("input").map(Value::to_string).unwrap_or_default();
                deltas.extend(
                    pieces(&input).map(|p| json!({"type": "input_json_delta", "partial_json": p})),
                );
            }
            Some("thinking") => {
                head.insert("thinking".into(), Value::from(""));
                head.insert("signature".into(), Value::from(""));
                deltas.extend(
                    pieces(text("thinking"))
                        .map(|p| json!({"type": "thinking_delta", "thinking": p})),
                );
                if !text("signature").is_empty() {
                    deltas.push(json!({"type": "signature_delta", "signature": text("signature")}));
                }
            }
            _ => {} // redacted_thinking: whole in its start
        }
        emit(
            &mut out,
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": head}),
        );
        for d in deltas {
            delta(&mut out, d);
        }
        emit(
            &mut out,
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        );
    }
    let stop = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
    emit(
        &mut out,
        "message_delta",
        json!({"type": "message_delta",
            "delta": {"stop_reason": stop("stop_reason"), "stop_sequence": stop("stop_sequence")},
            "usage": {"output_tokens": output_tokens.unwrap_or(0)}}),
    );
    emit(&mut out, "message_stop", json!({"type": "message_stop"}));
    out
}

/// `usage.<key>` of a message as a number.
fn usage_field(m: &Map<String, Value>, key: &str) -> Option<u64> {
    m.get("usage")?.get(key)?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIT: CacheMark = CacheMark {
        kind: "hit",
        similarity: None,
    };
    const SEMANTIC: CacheMark = CacheMark {
        kind: "semantic",
        similarity: Some(0.97),
    };

    fn val(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    /// An OpenAI chunk with one choice's delta (or no choice).
    fn chunk(delta: Option<Value>, finish: Option<&str>) -> Value {
        let choices = match delta {
            Some(d) => json!([{"index": 0, "delta": d, "logprobs": null, "finish_reason": finish}]),
            None => json!([]),
        };
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "gpt-4o", "system_fingerprint": "fp_1", "choices": choices, "usage": null})
    }

    fn sse_data(chunks: &[Value], done: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            write_data(&mut out, c.to_string().as_bytes());
        }
        if done {
            out.extend_from_slice(b"data: [DONE]\n\n");
        }
        out
    }

    fn chat_text_chunks() -> Vec<Value> {
        let mut usage = chunk(None, None);
        usage["usage"] = json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7});
        vec![
            chunk(
                Some(json!({"role": "assistant", "content": "", "refusal": null})),
                None,
            ),
            chunk(Some(json!({"content": "Hel"})), None),
            chunk(Some(json!({"content": "lo \u{20ac}"})), None),
            chunk(Some(json!({})), Some("stop")),
            usage,
        ]
    }

    fn chat_text_canonical() -> Value {
        json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000,
            "model": "gpt-4o", "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello \u{20ac}", "refusal": null},
                "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}})
    }

    /// Two parallel tool calls whose arguments interleave.
    fn chat_tool_stream() -> Vec<u8> {
        let call = |v: Value| Some(json!({"tool_calls": [v]}));
        let mut first = json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0,
            "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]});
        first["refusal"] = Value::Null;
        sse_data(
            &[
                chunk(Some(first), None),
                chunk(
                    call(json!({"index": 0, "function": {"arguments": "{\"city\":"}})),
                    None,
                ),
                chunk(
                    call(json!({"index": 1, "id": "call_b", "type": "function",
                        "function": {"name": "get_time", "arguments": ""}})),
                    None,
                ),
                chunk(
                    call(json!({"index": 0, "function": {"arguments": "\"Par\u{ee}s\"}"}})),
                    None,
                ),
                chunk(
                    call(json!({"index": 1, "function": {"arguments": "{}"}})),
                    None,
                ),
                chunk(Some(json!({})), Some("tool_calls")),
            ],
            true,
        )
    }

    fn chat_tool_canonical() -> Value {
        json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000,
            "model": "gpt-4o", "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                    {"id": "call_a", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\":\"Par\u{ee}s\"}"}},
                    {"id": "call_b", "type": "function",
                        "function": {"name": "get_time", "arguments": "{}"}}]}}]})
    }

    /// Two choices (n = 2), reasoning, refusal, annotations.
    fn chat_rich_canonical() -> Value {
        let long = "Grüße aus Köln — 日本語のテキスト 😀🎉 ".repeat(9);
        json!({"id": "c9", "object": "chat.completion", "created": 1, "model": "m",
            "service_tier": "default",
            "choices": [
                {"index": 0, "logprobs": null, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": long, "refusal": null,
                        "reasoning_content": format!("think {long}"),
                        "annotations": [{"type": "url_citation", "url_citation": {"url": "https://x"}}]}},
                {"index": 1, "logprobs": null, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."}},
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 90, "total_tokens": 101,
                "prompt_tokens_details": {"cached_tokens": 0}}})
    }

    fn msg_event(out: &mut Vec<u8>, ev: Value) {
        let name = ev["type"].as_str().unwrap().to_string();
        write_event(out, &name, ev.to_string().as_bytes());
    }

    fn messages_events() -> Vec<Value> {
        let d = |i: usize, delta: Value| json!({"type": "content_block_delta", "index": i, "delta": delta});
        let start = |i: usize, b: Value| json!({"type": "content_block_start", "index": i, "content_block": b});
        let stop = |i: usize| json!({"type": "content_block_stop", "index": i});
        vec![
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
                "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 3, "output_tokens": 1}}}),
            json!({"type": "ping"}),
            start(
                0,
                json!({"type": "thinking", "thinking": "", "signature": ""}),
            ),
            d(0, json!({"type": "thinking_delta", "thinking": "Let me"})),
            d(0, json!({"type": "thinking_delta", "thinking": " think"})),
            d(0, json!({"type": "signature_delta", "signature": "sig=="})),
            stop(0),
            start(1, json!({"type": "text", "text": ""})),
            d(1, json!({"type": "text_delta", "text": "Héllo "})),
            d(1, json!({"type": "text_delta", "text": "wörld"})),
            stop(1),
            start(
                2,
                json!({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}),
            ),
            d(2, json!({"type": "input_json_delta", "partial_json": ""})),
            d(
                2,
                json!({"type": "input_json_delta", "partial_json": "{\"city\": \"Par"}),
            ),
            d(
                2,
                json!({"type": "input_json_delta", "partial_json": "is\"}"}),
            ),
            stop(2),
            start(3, json!({"type": "redacted_thinking", "data": "EmwKAhgB"})),
            stop(3),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"output_tokens": 42}}),
            json!({"type": "message_stop"}),
        ]
    }

    fn messages_stream(events: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            msg_event(&mut out, e.clone());
        }
        out
    }

    fn messages_canonical() -> Value {
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [
                {"type": "thinking", "thinking": "Let me think", "signature": "sig=="},
                {"type": "text", "text": "Héllo wörld"},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "redacted_thinking", "data": "EmwKAhgB"},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 3, "output_tokens": 42}})
    }

    fn messages_rich_canonical() -> Value {
        json!({"id": "msg_2", "type": "message", "role": "assistant", "model": "claude-opus-4-1",
            "container": null,
            "content": [
                {"type": "text", "text": "Der Himmel ist blau 🌍. ".repeat(10),
                    "citations": [{"type": "char_location", "cited_text": "blue", "document_index": 0,
                        "start_char_index": 0, "end_char_index": 4}]},
                {"type": "text", "text": "", "citations": null},
                {"type": "tool_use", "id": "toolu_2", "name": "noargs", "input": {}},
                {"type": "tool_use", "id": "toolu_3", "name": "big",
                    "input": {"q": "ü".repeat(100), "n": [1, 2.5, null, true], "o": {"k": "v"}}},
                {"type": "thinking", "thinking": "", "signature": ""},
            ],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 7, "output_tokens": 0}})
    }

    // --- plain -----------------------------------------------------------------------------

    #[test]
    fn chat_plain_valid_is_kept_and_unmarked() {
        let mut v = chat_text_canonical();
        v["llmux_cache"] = json!({"kind": "hit"});
        let c = canonical_from_plain(Api::Chat, &bytes(&v)).unwrap();
        assert_eq!(val(&c), chat_text_canonical());
    }

    #[test]
    fn chat_plain_invalid() {
        let ok = bytes(&chat_text_canonical());
        let mut no_finish = chat_text_canonical();
        no_finish["choices"][0]["finish_reason"] = Value::Null;
        let mut no_choices = chat_text_canonical();
        no_choices["choices"] = json!([]);
        let mut chunk_obj = chat_text_canonical();
        chunk_obj["object"] = json!("chat.completion.chunk");
        let mut audio = chat_text_canonical();
        audio["choices"][0]["message"]["audio"] = json!({"id": "a", "data": "…"});
        let mut bad_index = chat_text_canonical();
        bad_index["choices"][0]["index"] = json!(3);
        let error = json!({"error": {"message": "Rate limit", "type": "rate_limit_error"}});
        for bad in [
            bytes(&no_finish),
            bytes(&no_choices),
            bytes(&chunk_obj),
            bytes(&audio),
            bytes(&bad_index),
            bytes(&error),
            ok[..ok.len() - 1].to_vec(),
            ok[..ok.len() / 2].to_vec(),
            b"[]".to_vec(),
            Vec::new(),
        ] {
            assert_eq!(
                canonical_from_plain(Api::Chat, &bad),
                None,
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
        // The size cap.
        let mut big = chat_text_canonical();
        big["choices"][0]["message"]["content"] = json!("x".repeat(MAX_ANSWER_BYTES));
        assert_eq!(canonical_from_plain(Api::Chat, &bytes(&big)), None);
    }

    #[test]
    fn messages_plain_valid_and_invalid() {
        let mut marked = messages_canonical();
        marked["llmux_cache"] = json!({"kind": "semantic", "similarity": 0.9});
        let c = canonical_from_plain(Api::Messages, &bytes(&marked)).unwrap();
        assert_eq!(val(&c), messages_canonical());
        let ok = bytes(&messages_canonical());
        let mut no_stop = messages_canonical();
        no_stop["stop_reason"] = Value::Null;
        let mut server_tool = messages_canonical();
        server_tool["content"][1] =
            json!({"type": "web_search_tool_result", "tool_use_id": "s", "content": []});
        let mut no_signature = messages_canonical();
        no_signature["content"][0] = json!({"type": "thinking", "thinking": "x"});
        let error = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        for bad in [
            bytes(&no_stop),
            bytes(&server_tool),
            bytes(&no_signature),
            bytes(&error),
            ok[..ok.len() - 3].to_vec(),
            b"null".to_vec(),
        ] {
            assert_eq!(
                canonical_from_plain(Api::Messages, &bad),
                None,
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
        // The chat checks are not the Messages ones.
        assert_eq!(canonical_from_plain(Api::Chat, &ok), None);
        assert_eq!(
            canonical_from_plain(Api::Messages, &bytes(&chat_text_canonical())),
            None
        );
    }

    // --- chat stream -------------------------------------------------------------------------

    #[test]
    fn chat_stream_complete() {
        let sse = sse_data(&chat_text_chunks(), true);
        let c = canonical_from_stream(Api::Chat, &sse).unwrap();
        assert_eq!(val(&c), chat_text_canonical());
    }

    #[test]
    fn chat_stream_tool_calls_assembled() {
        let c = canonical_from_stream(Api::Chat, &chat_tool_stream()).unwrap();
        assert_eq!(val(&c), chat_tool_canonical());
    }

    /// Tool-call arguments (chat) and `partial_json` (Messages) cut at every character
    /// boundary (inside escapes and multi-byte text too) into two deltas: the same answer.
    #[test]
    fn tool_arguments_split_at_every_offset() {
        let args = r#"{"city":"Par\"îs 😀","n":[1,2]}"#;
        let want_args: Value = serde_json::from_str(args).unwrap();
        for k in (0..=args.len()).filter(|&k| args.is_char_boundary(k)) {
            let (a, b) = args.split_at(k);
            let call = |v: Value| Some(json!({"tool_calls": [v]}));
            let sse = sse_data(
                &[
                    chunk(Some(json!({"role": "assistant", "content": null})), None),
                    chunk(
                        call(json!({"index": 0, "id": "c", "type": "function",
                        "function": {"name": "f", "arguments": a}})),
                        None,
                    ),
                    chunk(
                        call(json!({"index": 0, "function": {"arguments": b}})),
                        None,
                    ),
                    chunk(Some(json!({})), Some("tool_calls")),
                ],
                true,
            );
            let c = val(&canonical_from_stream(Api::Chat, &sse).unwrap());
            let got = &c["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"];
            assert_eq!(got, args, "cut at {k}");

            let mut ev = messages_events();
            ev.splice(
                12..15,
                [
                    json!({"type": "content_block_delta", "index": 2,
                    "delta": {"type": "input_json_delta", "partial_json": a}}),
                    json!({"type": "content_block_delta", "index": 2,
                    "delta": {"type": "input_json_delta", "partial_json": b}}),
                ],
            );
            let c = val(&canonical_from_stream(Api::Messages, &messages_stream(&ev)).unwrap());
            assert_eq!(c["content"][2]["input"], want_args, "cut at {k}");
        }
    }

    #[test]
    fn chat_stream_incomplete_or_failed_is_none() {
        let chunks = chat_text_chunks();
        // No [DONE].
        assert_eq!(
            canonical_from_stream(Api::Chat, &sse_data(&chunks, false)),
            None
        );
        // [DONE] cut short.
        let sse = sse_data(&chunks, true);
        assert_eq!(
            canonical_from_stream(Api::Chat, &sse[..sse.len() - 4]),
            None
        );
        // No finish_reason.
        let no_finish = [chunks[0].clone(), chunks[1].clone()];
        assert_eq!(
            canonical_from_stream(Api::Chat, &sse_data(&no_finish, true)),
            None
        );
        // An error event (as the gateway ends a failed stream: error, then [DONE]).
        let mut failed = sse_data(&chunks[..2], false);
        write_data(
            &mut failed,
            br#"{"error":{"message":"upstream","type":"api_error"}}"#,
        );
        failed.extend_from_slice(b"data: [DONE]\n\n");
        assert_eq!(canonical_from_stream(Api::Chat, &failed), None);
        // An unreadable event.
        let mut junk = sse_data(&chunks[..2], false);
        junk.extend_from_slice(b"data: {\"id\":\n\n");
        junk.extend_from_slice(&sse_data(&chunks[2..], true));
        assert_eq!(canonical_from_stream(Api::Chat, &junk), None);
        // Only [DONE].
        assert_eq!(canonical_from_stream(Api::Chat, b"data: [DONE]\n\n"), None);
        // A hostile index: refused, nothing allocated for it.
        let mut far = chunks[0].clone();
        far["choices"][0]["index"] = json!(u64::MAX);
        assert_eq!(
            canonical_from_stream(Api::Chat, &sse_data(&[far], true)),
            None
        );
        let mut far_tool = chunks[0].clone();
        far_tool["choices"][0]["delta"]["tool_calls"] = json!([{"index": 5000, "id": "x"}]);
        assert_eq!(
            canonical_from_stream(Api::Chat, &sse_data(&[far_tool], true)),
            None
        );
        // A gap in the choice indexes.
        let mut one = chunk(Some(json!({"content": "x"})), Some("stop"));
        one["choices"][0]["index"] = json!(1);
        assert_eq!(
            canonical_from_stream(Api::Chat, &sse_data(&[one], true)),
            None
        );
        // A tool call never named.
        let unnamed = chunk(
            Some(json!({"tool_calls": [{"index": 0, "id": "c",
            "function": {"arguments": "{}"}}]})),
            Some("tool_calls"),
        );
        assert_eq!(
            canonical_from_stream(Api::Chat, &sse_data(&[unnamed], true)),
            None
        );
        // Over the cap.
        let mut big = vec![b':'; MAX_ANSWER_BYTES];
        big.extend_from_slice(&sse_data(&chunks, true));
        assert_eq!(canonical_from_stream(Api::Chat, &big), None);
    }

    /// CRLF or CR line ends, `data:` without its space, comments, a last event with no blank
    /// line: the same answer.
    #[test]
    fn chat_stream_framing_variants_parse_the_same() {
        let sse = String::from_utf8(chat_tool_stream()).unwrap();
        let want = chat_tool_canonical();
        let variants = [
            sse.replace('\n', "\r\n"),
            sse.replace('\n', "\r"),
            sse.replace("data: ", "data:"),
            format!(": keep-alive\n\n{}", sse.replace("\n\n", "\n\n: ping\n\n")),
            sse.trim_end().to_string(),
        ];
        for v in variants {
            let c = canonical_from_stream(Api::Chat, v.as_bytes());
            assert_eq!(c.map(|c| val(&c)), Some(want.clone()), "{v:?}");
        }
    }

    /// Choices interleaved (n = 2), Azure's empty content-filter chunk first, and an answer
    /// replayed from the cache (its mark not stored).
    #[test]
    fn chat_stream_interleaved_choices_and_envelope() {
        let azure = json!({"id": "", "object": "", "created": 0, "model": "", "choices": [],
            "prompt_filter_results": []});
        let mut c1 = chunk(Some(json!({"role": "assistant", "content": "B"})), None);
        c1["choices"][0]["index"] = json!(1);
        c1["llmux_cache"] = json!({"kind": "hit"});
        let c0 = chunk(
            Some(json!({"role": "assistant", "content": "A"})),
            Some("stop"),
        );
        let mut f1 = chunk(Some(json!({})), Some("length"));
        f1["choices"][0]["index"] = json!(1);
        let c = canonical_from_stream(Api::Chat, &sse_data(&[azure, c1, c0, f1], true)).unwrap();
        let c = val(&c);
        assert_eq!(c["id"], "chatcmpl-1");
        assert_eq!(c["model"], "gpt-4o");
        assert_eq!(c["created"], 1700000000);
        assert_eq!(c["choices"][0]["message"]["content"], "A");
        assert_eq!(c["choices"][1]["message"]["content"], "B");
        assert_eq!(c["choices"][1]["finish_reason"], "length");
        assert!(c.get("llmux_cache").is_none() && c.get("usage").is_none());
    }

    // --- Messages stream ---------------------------------------------------------------------

    #[test]
    fn messages_stream_complete() {
        let c = canonical_from_stream(Api::Messages, &messages_stream(&messages_events())).unwrap();
        assert_eq!(val(&c), messages_canonical());
    }

    #[test]
    fn messages_stream_incomplete_or_failed_is_none() {
        let events = messages_events();
        let n = events.len();
        let without = |skip: &dyn Fn(&Value) -> bool| {
            let kept: Vec<Value> = events.iter().filter(|e| !skip(e)).cloned().collect();
            canonical_from_stream(Api::Messages, &messages_stream(&kept))
        };
        assert_eq!(without(&|e| e["type"] == "message_stop"), None);
        assert_eq!(without(&|e| e["type"] == "message_start"), None);
        assert_eq!(
            without(&|e| e["type"] == "message_delta"),
            None,
            "no stop_reason"
        );
        assert_eq!(
            without(&|e| e["type"] == "content_block_stop" && e["index"] == 2),
            None
        );
        assert_eq!(
            without(&|e| e["type"] == "content_block_start" && e["index"] == 1),
            None
        );
        let with = |i: usize, e: Value| {
            let mut ev = events.clone();
            ev.insert(i, e);
            canonical_from_stream(Api::Messages, &messages_stream(&ev))
        };
        let err = json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
        assert_eq!(with(5, err), None);
        let bad_json = json!({"type": "content_block_delta", "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "]"}});
        assert_eq!(with(15, bad_json), None);
        let unknown = json!({"type": "content_block_start", "index": 4,
            "content_block": {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}});
        assert_eq!(with(n - 2, unknown.clone()), None);
        let stop4 = json!({"type": "content_block_stop", "index": 4});
        let mut ev = events.clone();
        ev.insert(n - 2, stop4);
        ev.insert(n - 2, unknown);
        assert_eq!(
            canonical_from_stream(Api::Messages, &messages_stream(&ev)),
            None
        );
        let wrong_delta = json!({"type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "{}"}});
        assert_eq!(with(9, wrong_delta), None);
        let far = json!({"type": "content_block_delta", "index": u64::MAX,
            "delta": {"type": "text_delta", "text": "x"}});
        assert_eq!(with(9, far), None);
        // The gateway's own error ending (client_api/anthropic/stream.rs): no message_stop.
        let mut cut = messages_stream(&events[..10]);
        write_event(
            &mut cut,
            "error",
            br#"{"type":"error","error":{"type":"api_error","message":"x"}}"#,
        );
        assert_eq!(canonical_from_stream(Api::Messages, &cut), None);
    }

    #[test]
    fn messages_stream_usage_merge_and_unknown_events() {
        let mut events = messages_events();
        let n = events.len();
        // Cumulative usage in message_delta (newer API): later values win, nulls say nothing.
        events[n - 2]["usage"] = json!({"input_tokens": 12, "output_tokens": 42,
            "cache_read_input_tokens": null, "server_tool_use": {"web_search_requests": 1}});
        events.insert(3, json!({"type": "some_future_event", "x": 1}));
        let c = val(&canonical_from_stream(Api::Messages, &messages_stream(&events)).unwrap());
        assert_eq!(
            c["usage"],
            json!({"input_tokens": 12, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 3, "output_tokens": 42,
            "server_tool_use": {"web_search_requests": 1}})
        );
        let s = String::from_utf8(messages_stream(&messages_events())).unwrap();
        for v in [s.replace('\n', "\r\n"), s.replace("data: ", "data:")] {
            let c = canonical_from_stream(Api::Messages, v.as_bytes()).map(|c| val(&c));
            assert_eq!(c, Some(messages_canonical()));
        }
    }

    // --- rendering ---------------------------------------------------------------------------

    /// Every event's data of a rendered stream.
    fn datas(sse: &[u8]) -> Vec<(Option<String>, String)> {
        let mut out = Vec::new();
        let mut p = SseParser::new();
        p.feed(sse, &mut |e| {
            out.push((e.event.map(str::to_string), e.text().into_owned()))
        });
        p.finish(&mut |e| out.push((e.event.map(str::to_string), e.text().into_owned())));
        out
    }

    #[test]
    fn render_plain_adds_the_mark() {
        let c = bytes(&chat_text_canonical());
        let p = val(&render_plain(Api::Chat, &c, &SEMANTIC).unwrap());
        assert_eq!(
            p["llmux_cache"],
            json!({"kind": "semantic", "similarity": 0.97})
        );
        let p = val(&render_plain(Api::Chat, &c, &HIT).unwrap());
        assert_eq!(p["llmux_cache"], json!({"kind": "hit"}));
        let m = val(&render_plain(Api::Messages, &bytes(&messages_canonical()), &HIT).unwrap());
        assert_eq!(m["llmux_cache"], json!({"kind": "hit"}));
        assert_eq!(render_plain(Api::Messages, &c, &HIT), None);
        assert_eq!(render_plain(Api::Chat, b"{", &HIT), None);
    }

    #[test]
    fn chat_stream_rendering_shape() {
        let c = bytes(&chat_tool_canonical());
        let sse = render_stream(Api::Chat, &c, &SEMANTIC, true).unwrap();
        let ev = datas(&sse);
        assert_eq!(ev.last().unwrap().1, "[DONE]");
        let chunks: Vec<Value> = ev[..ev.len() - 1]
            .iter()
            .map(|(_, d)| val(d.as_bytes()))
            .collect();
        for ch in &chunks {
            assert_eq!(ch["object"], "chat.completion.chunk");
            assert_eq!(ch["id"], "chatcmpl-1");
            assert_eq!(ch["created"], 1700000000);
            assert_eq!(ch["model"], "gpt-4o");
            assert_eq!(ch["system_fingerprint"], "fp_1");
            assert_eq!(
                ch["llmux_cache"],
                json!({"kind": "semantic", "similarity": 0.97})
            );
            assert!(ch.get("usage").is_some());
        }
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(
            chunks[1]["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "id": "call_a", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}})
        );
        assert_eq!(
            chunks[2]["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "function": {"arguments": "{\"city\":\"Par\u{ee}s\"}"}})
        );
        let finish = &chunks[chunks.len() - 1]["choices"][0];
        assert_eq!(finish["finish_reason"], "tool_calls");
        assert_eq!(finish["delta"], json!({}));
        // No usage in this answer: no usage chunk.
        assert!(chunks.iter().all(|c| c["usage"].is_null()));
        // With usage and include_usage: the usage chunk, with no choices, last.
        let sse = render_stream(Api::Chat, &bytes(&chat_text_canonical()), &HIT, true).unwrap();
        let ev = datas(&sse);
        let usage = val(ev[ev.len() - 2].1.as_bytes());
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["total_tokens"], 7);
        // Without include_usage: no usage field at all.
        let sse = render_stream(Api::Chat, &bytes(&chat_text_canonical()), &HIT, false).unwrap();
        let ev = datas(&sse);
        assert!(ev[..ev.len() - 1]
            .iter()
            .all(|(_, d)| val(d.as_bytes()).get("usage").is_none()));
        assert_eq!(render_stream(Api::Chat, b"{}", &HIT, true), None);
    }

    #[test]
    fn messages_stream_rendering_shape() {
        let c = bytes(&messages_canonical());
        let sse = render_stream(Api::Messages, &c, &SEMANTIC, false).unwrap();
        let ev = datas(&sse);
        for (name, data) in &ev {
            assert_eq!(
                Some(val(data.as_bytes())["type"].as_str().unwrap()),
                name.as_deref()
            );
        }
        let start = val(ev[0].1.as_bytes());
        assert_eq!(start["message"]["content"], json!([]));
        assert_eq!(start["message"]["stop_reason"], Value::Null);
        assert_eq!(
            start["message"]["usage"],
            json!({"input_tokens": 10,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 3, "output_tokens": 1})
        );
        assert_eq!(start["message"]["llmux_cache"]["kind"], "semantic");
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(
            val(ev[1].1.as_bytes())["content_block"],
            json!({"type": "thinking", "thinking": "", "signature": ""})
        );
        assert_eq!(
            val(ev[3].1.as_bytes())["delta"],
            json!({"type": "signature_delta", "signature": "sig=="})
        );
        assert_eq!(
            val(ev[5].1.as_bytes())["content_block"],
            json!({"type": "text", "text": ""})
        );
        assert_eq!(
            val(ev[8].1.as_bytes())["content_block"],
            json!({"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}})
        );
        assert_eq!(
            val(ev[9].1.as_bytes())["delta"],
            json!({"type": "input_json_delta", "partial_json": "{\"city\":\"Paris\"}"})
        );
        assert_eq!(
            val(ev[11].1.as_bytes())["content_block"],
            json!({"type": "redacted_thinking", "data": "EmwKAhgB"})
        );
        assert_eq!(
            val(ev[13].1.as_bytes()),
            json!({"type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 42}})
        );
    }

    /// Multi-byte text at every alignment: each piece is whole characters, at most PIECE bytes,
    /// and together they are the text.
    #[test]
    fn pieces_never_split_a_character() {
        for prefix in 0..4 {
            for ch in ["é", "€", "😀", "a"] {
                let s = format!("{}{}", "x".repeat(prefix), ch.repeat(70));
                let ps: Vec<&str> = pieces(&s).collect();
                assert!(ps.iter().all(|p| !p.is_empty() && p.len() <= PIECE));
                assert_eq!(ps.concat(), s);
                // All but the last piece are as long as a character boundary allows.
                for p in &ps[..ps.len() - 1] {
                    assert!(p.len() > PIECE - ch.len(), "{p:?}");
                }
            }
        }
        assert_eq!(pieces("").count(), 0);
        // Rendered: every delta is valid UTF-8 JSON (else `val` fails) and they add up.
        let text = "😀é€".repeat(50);
        let mut c = chat_text_canonical();
        c["choices"][0]["message"]["content"] = json!(text);
        let sse = render_stream(Api::Chat, &bytes(&c), &HIT, false).unwrap();
        let joined: String = datas(&sse)
            .iter()
            .filter(|(_, d)| d != "[DONE]")
            .filter_map(|(_, d)| {
                val(d.as_bytes())["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(joined, text);
        assert!(datas(&sse).len() > 5);
    }

    // --- round trips -------------------------------------------------------------------------

    fn round_trips(api: Api, c: &Value) {
        let cb = bytes(c);
        for mark in [HIT, SEMANTIC] {
            let plain = render_plain(api, &cb, &mark).unwrap();
            assert_eq!(val(&canonical_from_plain(api, &plain).unwrap()), *c);
            let sse = render_stream(api, &cb, &mark, true).unwrap();
            let back = canonical_from_stream(api, &sse).unwrap_or_else(|| {
                panic!("{}", String::from_utf8_lossy(&sse));
            });
            assert_eq!(val(&back), *c);
            // Stable: rendering the stored form again gives the same bytes.
            assert_eq!(render_stream(api, &back, &mark, true).unwrap(), sse);
        }
    }

    #[test]
    fn chat_round_trips() {
        for c in [
            chat_text_canonical(),
            chat_tool_canonical(),
            chat_rich_canonical(),
        ] {
            round_trips(Api::Chat, &c);
        }
        // Without include_usage the stream carries no usage.
        let sse = render_stream(Api::Chat, &bytes(&chat_text_canonical()), &HIT, false).unwrap();
        let mut want = chat_text_canonical();
        want.as_object_mut().unwrap().remove("usage");
        assert_eq!(
            canonical_from_stream(Api::Chat, &sse).map(|c| val(&c)),
            Some(want)
        );
        // OpenAI's own plain answer: what a stream cannot carry is left out, the rest kept.
        let mut openai = chat_tool_canonical();
        openai["choices"][0]["message"]["annotations"] = json!([]);
        openai["choices"][0]["logprobs"] = json!({"content": []});
        let stored = canonical_from_plain(Api::Chat, &bytes(&openai)).unwrap();
        let sse = render_stream(Api::Chat, &stored, &HIT, true).unwrap();
        assert_eq!(
            val(&canonical_from_stream(Api::Chat, &sse).unwrap()),
            chat_tool_canonical()
        );
    }

    #[test]
    fn messages_round_trips() {
        for c in [messages_canonical(), messages_rich_canonical()] {
            round_trips(Api::Messages, &c);
        }
    }

    #[test]
    fn usage_of_both_apis() {
        assert_eq!(
            usage_of(Api::Chat, &bytes(&chat_text_canonical())),
            Some((5, 2))
        );
        assert_eq!(usage_of(Api::Chat, &bytes(&chat_tool_canonical())), None);
        assert_eq!(
            usage_of(Api::Messages, &bytes(&messages_canonical())),
            Some((13, 42))
        );
        let mut nulls = messages_canonical();
        nulls["usage"]["cache_creation_input_tokens"] = Value::Null;
        assert_eq!(usage_of(Api::Messages, &bytes(&nulls)), Some((13, 42)));
        assert_eq!(usage_of(Api::Chat, b"not json"), None);
    }

    /// Broken input of every kind: never a panic.
    #[test]
    fn hostile_input_never_panics() {
        let seeds = [
            (Api::Chat, sse_data(&chat_text_chunks(), true)),
            (Api::Chat, chat_tool_stream()),
            (Api::Messages, messages_stream(&messages_events())),
            (Api::Chat, bytes(&chat_rich_canonical())),
            (Api::Messages, bytes(&messages_rich_canonical())),
        ];
        let alphabet = b"{}[]\":,0123456789 \n\rdata:[DONE]\xff\xc3\xa9eventindex";
        let mut rng = crate::test_support::XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..3000 {
            let (api, seed) = &seeds[round % seeds.len()];
            let input = rng.mutate(seed, alphabet);
            for api in [*api, Api::Chat, Api::Messages] {
                if let Some(c) = canonical_from_stream(api, &input) {
                    assert!(render_stream(api, &c, &HIT, true).is_some());
                    assert!(render_plain(api, &c, &HIT).is_some());
                }
                if let Some(c) = canonical_from_plain(api, &input) {
                    assert!(render_stream(api, &c, &HIT, true).is_some());
                }
                let _ = render_stream(api, &input, &HIT, false);
                let _ = render_plain(api, &input, &HIT);
                let _ = usage_of(api, &input);
            }
        }
    }
}
