//! An OpenAI `chat.completion.chunk` stream → the Responses API's semantic stream events (the
//! answer to a streamed request sent to a provider that does not speak OpenAI's protocol), at
//! any chunk boundary.
//!
//! Each event goes out as `event: <type>\ndata: <json>\n\n` with its `type` and a
//! `sequence_number` counting from 0; there is no `[DONE]` at the end. The order, as OpenAI
//! streams it (<https://developers.openai.com/docs/guides/streaming-responses>; event shapes in
//! openai/openai-python `src/openai/types/responses/response_*_event.py`):
//! - `response.created`, `response.in_progress` (the `response` object, status `in_progress`,
//!   no output yet) at the first chunk;
//! - per output item `response.output_item.added` … `response.output_item.done` (the item with
//!   its `output_index`): a `message` opens `response.content_part.added` (an empty
//!   `output_text`), gets `response.output_text.delta`s and ends with `response.output_text.done`
//!   and `response.content_part.done`; a `reasoning` item the same with
//!   `response.reasoning_summary_part.added`, `response.reasoning_summary_text.delta`/`.done`,
//!   `response.reasoning_summary_part.done`; a `function_call` gets
//!   `response.function_call_arguments.delta`s and `.done`;
//! - `response.completed` (or `response.incomplete` when the answer was cut by the token limit
//!   or a content filter) with the whole output and the usage.
//!
//! A message or reasoning item ends when another item starts; function calls end together at
//! the end of the answer (a provider may interleave their arguments). A failure (the provider's
//! in-band error, an unreadable event, a stream that ends before it finished, a cap passed)
//! ends the stream with an `error` event and `response.failed` (status `failed`, `error`
//! `{code, message}`); nothing follows the final event.
//!
//! The text and arguments of the answer are kept until the end (the `.done` events and
//! `response.completed` repeat them): at most [`MAX_OUTPUT_BYTES`] bytes in at most
//! [`MAX_OUTPUT_ITEMS`] items, past which the stream fails saying so. The SSE parser caps an
//! event and a line ([`crate::codec::sse`]).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::response::{
    function_call_item, message_item, name_call, output_text, reasoning_item, response_object,
    status_of, usage_of, Envelope, Ids,
};
use crate::codec::sse::{write_event, SseEvent, SseParser};

/// The most answer text, reasoning and arguments one translated stream keeps.
pub const MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
/// The most output items (messages, reasoning, function calls) one translated stream makes.
pub const MAX_OUTPUT_ITEMS: usize = 4096;
/// What an item costs against [`MAX_OUTPUT_BYTES`] besides its text (its ids and state).
const ITEM_OVERHEAD: usize = 64;

enum Kind {
    Message,
    Reasoning,
    Call { call_id: String, name: String },
}

/// One output item: its text (message text, reasoning summary or call arguments so far).
struct Item {
    kind: Kind,
    id: String,
    text: String,
    open: bool,
}

/// Rewrites an OpenAI `chat.completion.chunk` stream into Responses stream events, safe at any
/// chunk boundary.
pub struct StreamToResponses {
    sse: SseParser,
    /// The request fields the `response` object repeats.
    echo: Map<String, Value>,
    now_unix: u64,
    started: bool,
    ids: Ids,
    response_id: String,
    created_at: u64,
    model: Value,
    items: Vec<Item>,
    /// The open message and reasoning items (indexes in `items`).
    text: Option<usize>,
    reasoning: Option<usize>,
    /// Chat tool-call index → index in `items`.
    calls: HashMap<u64, usize>,
    finish: Option<String>,
    usage: Option<Value>,
    /// Bytes kept in `items`, against [`MAX_OUTPUT_BYTES`].
    held: usize,
    seq: u64,
    /// The final event went out: nothing more does.
    done: bool,
}

impl Default for StreamToResponses {
    fn default() -> Self {
        Self::new(Map::new(), 0)
    }
}

impl StreamToResponses {
    /// `echo`: the request fields the `response` object repeats; `now_unix` stands in for a
    /// missing `created`.
    pub fn new(echo: Map<String, Value>, now_unix: u64) -> Self {
        StreamToResponses {
            sse: SseParser::new(),
            echo,
            now_unix,
            started: false,
            ids: Ids::new(None, now_unix),
            response_id: String::new(),
            created_at: now_unix,
            model: Value::Null,
            items: Vec::new(),
            text: None,
            reasoning: None,
            calls: HashMap::new(),
            finish: None,
            usage: None,
            held: 0,
            seq: 0,
            done: false,
        }
    }

    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) {
        // The parser lends each event from its buffers: out of `self` while it feeds us.
        let mut sse = std::mem::take(&mut self.sse);
        sse.feed(chunk, &mut |e| self.event(e, out));
        if end_of_stream {
            sse.finish(&mut |e| self.event(e, out));
        }
        let cap = sse.error();
        self.sse = sse;
        if let (Some(e), false) = (cap, self.done) {
            // The provider's event passed the parser's cap: the stream ends here, saying why.
            self.fail(&e.to_string(), "server_error", out);
        }
        if end_of_stream && !self.done {
            if self.finish.is_some() {
                self.close(out);
            } else {
                self.fail(
                    "the provider's stream ended before it finished",
                    "server_error",
                    out,
                );
            }
        }
    }

    fn event(&mut self, e: SseEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let data = e.text();
        if data.trim() == "[DONE]" {
            if self.finish.is_some() || self.started {
                self.close(out);
            }
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            self.fail(
                "the provider sent an unreadable stream event",
                "server_error",
                out,
            );
            return;
        };
        if let Some(err) = v.get("error") {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("provider error");
            let limited = err.get("type").and_then(Value::as_str) == Some("rate_limit_error")
                || err.get("code").and_then(Value::as_str) == Some("rate_limit_exceeded");
            let code = if limited {
                "rate_limit_exceeded"
            } else {
                "server_error"
            };
            self.fail(msg, code, out);
            return;
        }
        self.chunk(&v, out);
    }

    /// One chat chunk: the response's start before the first, then its choice 0.
    fn chunk(&mut self, v: &Value, out: &mut Vec<u8>) {
        if !self.started {
            self.start(v, out);
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = v.pointer("/choices/0") else {
            return;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        let piece = |key: &str| {
            delta
                .get(key)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
        };
        if let Some(r) = piece("reasoning_content") {
            self.reasoning_delta(r, out);
        }
        if let Some(t) = piece("content") {
            self.text_delta(t, out);
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for c in calls {
                self.tool_call(c, out);
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_string());
        }
    }

    /// `response.created` and `response.in_progress`, with the ids and model of chunk `v`.
    fn start(&mut self, v: &Value, out: &mut Vec<u8>) {
        self.started = true;
        self.ids = Ids::new(v.get("id").and_then(Value::as_str), self.now_unix);
        self.response_id = self.ids.response();
        self.created_at = v
            .get("created")
            .and_then(Value::as_u64)
            .unwrap_or(self.now_unix);
        self.model = v.get("model").cloned().unwrap_or(Value::Null);
        for ty in ["response.created", "response.in_progress"] {
            let r = self.snapshot("in_progress", Vec::new(), Value::Null, Value::Null);
            self.emit(out, ty, json!({"response": r}));
        }
    }

    /// The `response` object as it stands.
    fn snapshot(
        &self,
        status: &'static str,
        output: Vec<Value>,
        error: Value,
        incomplete_details: Value,
    ) -> Value {
        let usage = if status == "in_progress" {
            Value::Null
        } else {
            usage_of(self.usage.as_ref())
        };
        response_object(
            Envelope {
                id: &self.response_id,
                created_at: self.created_at,
                model: &self.model,
                status,
                output,
                usage,
                error,
                incomplete_details,
            },
            &self.echo,
        )
    }

    /// Writes event `ty` with `fields`, its `type` and the next `sequence_number`, unless the
    /// stream is over.
    fn emit(&mut self, out: &mut Vec<u8>, ty: &str, mut fields: Value) {
        if self.done {
            return;
        }
        if let Value::Object(m) = &mut fields {
            m.insert("type".into(), Value::String(ty.to_string()));
            m.insert("sequence_number".into(), json!(self.seq));
        }
        self.seq += 1;
        write_event(out, ty, fields.to_string().as_bytes());
    }

    /// Counts `n` more bytes kept (`item`: for a new item); past [`MAX_OUTPUT_BYTES`] or
    /// [`MAX_OUTPUT_ITEMS`] the stream fails (`false`).
    fn take(&mut self, n: usize, item: bool, out: &mut Vec<u8>) -> bool {
        let too_many = item && self.items.len() >= MAX_OUTPUT_ITEMS;
        if too_many || self.held.saturating_add(n) > MAX_OUTPUT_BYTES {
            let msg = format!(
                "the answer passed the gateway's limit for a translated Responses stream ({MAX_OUTPUT_BYTES} bytes in {MAX_OUTPUT_ITEMS} output items)"
            );
            self.fail(&msg, "server_error", out);
            return false;
        }
        self.held += n;
        true
    }

    /// Adds an item and writes `response.output_item.added`; `None` when a cap was passed.
    fn open_item(&mut self, kind: Kind, out: &mut Vec<u8>) -> Option<usize> {
        let extra = match &kind {
            Kind::Call { call_id, name } => call_id.len() + name.len(),
            _ => 0,
        };
        if !self.take(ITEM_OVERHEAD + extra, true, out) {
            return None;
        }
        let index = self.items.len();
        let id = match kind {
            Kind::Message => self.ids.message(index),
            Kind::Reasoning => self.ids.reasoning(index),
            Kind::Call { .. } => self.ids.function_call(index),
        };
        let item = match &kind {
            Kind::Message => {
                json!({"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []})
            }
            Kind::Reasoning => {
                json!({"id": id, "type": "reasoning", "status": "in_progress", "summary": []})
            }
            Kind::Call { call_id, name } => {
                let mut item = json!({"id": id, "type": "function_call", "status": "in_progress", "call_id": call_id, "arguments": ""});
                name_call(&mut item, &self.echo, name);
                item
            }
        };
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        );
        self.items.push(Item {
            kind,
            id,
            text: String::new(),
            open: true,
        });
        Some(index)
    }

    fn item_id(&self, index: usize) -> &str {
        self.items.get(index).map_or("", |it| it.id.as_str())
    }

    fn text_delta(&mut self, t: &str, out: &mut Vec<u8>) {
        let index = match self.text {
            Some(i) => i,
            None => {
                self.close_reasoning(out);
                let Some(i) = self.open_item(Kind::Message, out) else {
                    return;
                };
                self.text = Some(i);
                let ev = json!({"item_id": self.item_id(i), "output_index": i,
                    "content_index": 0, "part": output_text("")});
                self.emit(out, "response.content_part.added", ev);
                i
            }
        };
        if !self.take(t.len(), false, out) {
            return;
        }
        let Some(item) = self.items.get_mut(index) else {
            return;
        };
        item.text.push_str(t);
        let ev = json!({"item_id": item.id, "output_index": index, "content_index": 0,
            "delta": t, "logprobs": []});
        self.emit(out, "response.output_text.delta", ev);
    }

    fn reasoning_delta(&mut self, t: &str, out: &mut Vec<u8>) {
        let index = match self.reasoning {
            Some(i) => i,
            None => {
                self.close_text(out);
                let Some(i) = self.open_item(Kind::Reasoning, out) else {
                    return;
                };
                self.reasoning = Some(i);
                let ev = json!({"item_id": self.item_id(i), "output_index": i,
                    "summary_index": 0, "part": {"type": "summary_text", "text": ""}});
                self.emit(out, "response.reasoning_summary_part.added", ev);
                i
            }
        };
        if !self.take(t.len(), false, out) {
            return;
        }
        let Some(item) = self.items.get_mut(index) else {
            return;
        };
        item.text.push_str(t);
        let ev = json!({"item_id": item.id, "output_index": index, "summary_index": 0,
            "delta": t});
        self.emit(out, "response.reasoning_summary_text.delta", ev);
    }

    /// A tool-call delta: a new call index opens a `function_call` item (closing the open
    /// message or reasoning); arguments go to their call's item.
    fn tool_call(&mut self, c: &Value, out: &mut Vec<u8>) {
        let k = c.get("index").and_then(Value::as_u64).unwrap_or(0);
        let index = match self.calls.get(&k) {
            Some(&i) => i,
            None => {
                self.close_text(out);
                self.close_reasoning(out);
                let s = |p: &str| c.pointer(p).and_then(Value::as_str).unwrap_or("");
                let call_id = match s("/id") {
                    "" => format!("call_{}", self.ids.function_call(self.items.len())),
                    id => id.to_string(),
                };
                let kind = Kind::Call {
                    call_id,
                    name: s("/function/name").to_string(),
                };
                let Some(i) = self.open_item(kind, out) else {
                    return;
                };
                self.calls.insert(k, i);
                i
            }
        };
        let Some(args) = c
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        else {
            return;
        };
        self.arguments_delta(index, args, out);
    }

    fn arguments_delta(&mut self, index: usize, args: &str, out: &mut Vec<u8>) {
        if !self.take(args.len(), false, out) {
            return;
        }
        let Some(item) = self.items.get_mut(index) else {
            return;
        };
        item.text.push_str(args);
        let ev = json!({"item_id": item.id, "output_index": index, "delta": args});
        self.emit(out, "response.function_call_arguments.delta", ev);
    }

    fn close_text(&mut self, out: &mut Vec<u8>) {
        if let Some(i) = self.text.take() {
            self.close_item(i, out);
        }
    }

    fn close_reasoning(&mut self, out: &mut Vec<u8>) {
        if let Some(i) = self.reasoning.take() {
            self.close_item(i, out);
        }
    }

    /// The status a finished item gets: `incomplete` for a message cut short.
    fn item_status(&self, kind: &Kind) -> &'static str {
        match kind {
            Kind::Message => match status_of(self.finish.as_deref()).0 {
                "incomplete" => "incomplete",
                _ => "completed",
            },
            _ => "completed",
        }
    }

    /// The item as `response.output_item.done` and the final `output` show it.
    fn item_json(&self, item: &Item, status: &str) -> Value {
        match &item.kind {
            Kind::Message => message_item(&item.id, status, &item.text),
            Kind::Reasoning => reasoning_item(&item.id, status, &item.text),
            Kind::Call { call_id, name } => {
                function_call_item(&self.echo, &item.id, status, call_id, name, &item.text)
            }
        }
    }

    /// The `.done` events of item `index`.
    fn close_item(&mut self, index: usize, out: &mut Vec<u8>) {
        let Some(item) = self.items.get(index).filter(|i| i.open) else {
            return;
        };
        if let Kind::Call { .. } = item.kind {
            if item.text.is_empty() {
                // No arguments streamed: `{}`, so that the arguments parse (as in the item).
                self.arguments_delta(index, "{}", out);
            }
        }
        let Some(item) = self.items.get(index) else {
            return;
        };
        let status = self.item_status(&item.kind);
        let id = item.id.clone();
        let text = item.text.clone();
        let done_item = self.item_json(item, status);
        match item.kind {
            Kind::Message => {
                let ev = json!({"item_id": id, "output_index": index, "content_index": 0,
                    "text": text, "logprobs": []});
                self.emit(out, "response.output_text.done", ev);
                let ev = json!({"item_id": id, "output_index": index, "content_index": 0,
                    "part": output_text(&text)});
                self.emit(out, "response.content_part.done", ev);
            }
            Kind::Reasoning => {
                let ev = json!({"item_id": id, "output_index": index, "summary_index": 0,
                    "text": text});
                self.emit(out, "response.reasoning_summary_text.done", ev);
                let ev = json!({"item_id": id, "output_index": index, "summary_index": 0,
                    "part": {"type": "summary_text", "text": text}});
                self.emit(out, "response.reasoning_summary_part.done", ev);
            }
            Kind::Call { .. } => {
                let ev = json!({"item_id": id, "output_index": index, "arguments": text});
                self.emit(out, "response.function_call_arguments.done", ev);
            }
        }
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": done_item}),
        );
        if let Some(item) = self.items.get_mut(index) {
            item.open = false;
        }
    }

    /// The proper end: every open item's `.done` events (in output order), then
    /// `response.completed` (or `response.incomplete`) with the output and usage.
    fn close(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if !self.started {
            self.start(&Value::Null, out);
        }
        self.text = None;
        self.reasoning = None;
        for i in 0..self.items.len() {
            self.close_item(i, out);
        }
        if self.done {
            // Closing passed a cap: the stream already failed.
            return;
        }
        let (status, incomplete) = status_of(self.finish.as_deref());
        let output = self
            .items
            .iter()
            .map(|it| self.item_json(it, self.item_status(&it.kind)))
            .collect();
        let r = self.snapshot(status, output, Value::Null, incomplete);
        let ty = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, ty, json!({"response": r}));
        self.done = true;
    }

    /// The end of a failed stream: an `error` event, then `response.failed` with the output so
    /// far (unfinished items `incomplete`).
    fn fail(&mut self, message: &str, code: &str, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if !self.started {
            self.start(&Value::Null, out);
        }
        self.emit(
            out,
            "error",
            json!({"code": code, "message": message, "param": Value::Null}),
        );
        let output = self
            .items
            .iter()
            .map(|it| {
                let status = if it.open {
                    "incomplete"
                } else {
                    self.item_status(&it.kind)
                };
                self.item_json(it, status)
            })
            .collect();
        let error = json!({"code": code, "message": message});
        let r = self.snapshot("failed", output, error, Value::Null);
        self.emit(out, "response.failed", json!({"response": r}));
        self.done = true;
    }
}
