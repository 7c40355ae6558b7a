//! An OpenAI `chat.completion.chunk` stream → Anthropic Messages stream events (the answer to a
//! streamed Messages request sent to a provider other than Anthropic), at any chunk boundary.
//!
//! [`StreamToMessages`] reads the chunks and decides which blocks open and close;
//! [`EventWriter`] writes every event (`message_start`, `content_block_start` / `_delta` /
//! `_stop`, `message_delta` + `message_stop`, `error`) and nothing once the stream ended with
//! `message_stop` or an `error` event — as `ChunkWriter` does for OpenAI streams.

use serde_json::{json, Value};

use super::error_body;
use super::response::{message_id, stop_reason, usage_of};
use crate::codec::sse::{write_event, SseEvent, SseParser};
use crate::error::GatewayError;

/// Writes one Messages stream's events; nothing once `message_stop` or an `error` went out.
#[derive(Default)]
struct EventWriter {
    /// `message_stop` or `error` written: nothing more goes out.
    done: bool,
}

impl EventWriter {
    #[inline]
    fn is_done(&self) -> bool {
        self.done
    }

    /// `event: <name>` with `ev` as its data, unless the stream is over.
    fn write(&self, out: &mut Vec<u8>, name: &str, ev: &Value) {
        if !self.done {
            write_event(out, name, ev.to_string().as_bytes());
        }
    }

    /// `message_start`: the message's envelope, empty content, zero usage.
    fn message_start(&self, out: &mut Vec<u8>, id: String, model: Value) {
        let ev = json!({"type": "message_start", "message": {
            "id": id,
            "type": "message", "role": "assistant",
            "model": model,
            "content": [], "stop_reason": Value::Null, "stop_sequence": Value::Null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}});
        self.write(out, "message_start", &ev);
    }

    /// `content_block_start` of an empty text block, or of a tool call with `(id, name)`.
    fn block_start(&self, out: &mut Vec<u8>, index: usize, tool: Option<(&str, &str)>) {
        let block = match tool {
            Some((id, name)) => json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
            None => json!({"type": "text", "text": ""}),
        };
        let ev = json!({"type": "content_block_start", "index": index, "content_block": block});
        self.write(out, "content_block_start", &ev);
    }

    /// More text of text block `index`.
    fn text_delta(&self, out: &mut Vec<u8>, index: usize, text: &str) {
        let ev = json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}});
        self.write(out, "content_block_delta", &ev);
    }

    /// More of the input (JSON text) of tool block `index`.
    fn input_delta(&self, out: &mut Vec<u8>, index: usize, partial_json: &str) {
        let ev = json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": partial_json}});
        self.write(out, "content_block_delta", &ev);
    }

    fn block_stop(&self, out: &mut Vec<u8>, index: usize) {
        let ev = json!({"type": "content_block_stop", "index": index});
        self.write(out, "content_block_stop", &ev);
    }

    /// The proper end: `message_delta` (stop reason, usage), then `message_stop`.
    fn stop(&mut self, out: &mut Vec<u8>, stop_reason: &'static str, usage: Value) {
        let ev = json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": Value::Null},
            "usage": usage});
        self.write(out, "message_delta", &ev);
        if !self.done {
            write_event(out, "message_stop", br#"{"type":"message_stop"}"#);
            self.done = true;
        }
    }

    /// The end of a failed stream: an `error` event.
    fn error(&mut self, out: &mut Vec<u8>, e: &GatewayError) {
        if !self.done {
            write_event(out, "error", &error_body(e));
            self.done = true;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Block {
    Text,
    Tool,
}

/// Rewrites an OpenAI `chat.completion.chunk` stream into Anthropic Messages stream events,
/// safe at any chunk boundary.
#[derive(Default)]
pub struct StreamToMessages {
    sse: SseParser,
    started: bool,
    /// The open content block and its index.
    open: Option<(Block, usize)>,
    next_index: usize,
    /// OpenAI tool-call index → whether its block was started.
    tools_seen: Vec<u64>,
    finish: Option<String>,
    usage: Option<Value>,
    w: EventWriter,
}

impl StreamToMessages {
    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) {
        // The parser lends each event from its buffers: out of `self` while it feeds us.
        let mut sse = std::mem::take(&mut self.sse);
        sse.feed(chunk, &mut |e| self.event(e, out));
        if end_of_stream {
            sse.finish(&mut |e| self.event(e, out));
        }
        let cap = sse.error();
        self.sse = sse;
        if let (Some(e), false) = (cap, self.w.is_done()) {
            // The provider's event passed the parser's cap: the stream ends here, saying why.
            self.fail(&e.to_string(), out);
        }
        if end_of_stream && !self.w.is_done() {
            if self.finish.is_some() {
                self.close(out);
            } else {
                self.fail("the provider's stream ended before it finished", out);
            }
        }
    }

    fn event(&mut self, e: SseEvent, out: &mut Vec<u8>) {
        if self.w.is_done() {
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
            self.fail("the provider sent an unreadable stream event", out);
            return;
        };
        if let Some(err) = v.get("error") {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("provider error");
            self.fail(msg, out);
            return;
        }
        self.chunk(&v, out);
    }

    /// One OpenAI chunk: `message_start` before the first, then its choice 0.
    fn chunk(&mut self, v: &Value, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            let id = message_id(v.get("id").and_then(Value::as_str));
            let model = v.get("model").cloned().unwrap_or(Value::Null);
            self.w.message_start(out, id, model);
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
        let Some(choice) = v.pointer("/choices/0") else {
            return;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(t) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            let index = self.ensure_block(Block::Text, None, out);
            self.w.text_delta(out, index, t);
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

    /// A tool-call delta: a new call opens a `tool_use` block; arguments go to the open one.
    fn tool_call(&mut self, c: &Value, out: &mut Vec<u8>) {
        let k = c.get("index").and_then(Value::as_u64).unwrap_or(0);
        if !self.tools_seen.contains(&k) {
            self.tools_seen.push(k);
            let id = c.get("id").and_then(Value::as_str).unwrap_or("");
            let name = c
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            self.ensure_block(Block::Tool, Some((id, name)), out);
        }
        if let Some(args) = c
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            if let Some((Block::Tool, index)) = self.open {
                self.w.input_delta(out, index, args);
            }
        }
    }

    /// Opens a block of `kind` unless one is open (a new tool call always opens a new block).
    fn ensure_block(
        &mut self,
        kind: Block,
        tool: Option<(&str, &str)>,
        out: &mut Vec<u8>,
    ) -> usize {
        if let (Some((open, index)), None) = (self.open, &tool) {
            if open == kind {
                return index;
            }
        }
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        self.w.block_start(out, index, tool);
        self.open = Some((kind, index));
        index
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            self.w.block_stop(out, index);
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        self.close_block(out);
        let usage = usage_of(self.usage.as_ref().unwrap_or(&Value::Null));
        self.w.stop(out, stop_reason(self.finish.as_deref()), usage);
    }

    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        self.w
            .error(out, &GatewayError::new(502, "api_error", message));
    }
}
