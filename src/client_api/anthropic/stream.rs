//! An OpenAI `chat.completion.chunk` stream → Anthropic Messages stream events (the answer to a
//! streamed Messages request sent to a provider other than Anthropic), at any chunk boundary.

use serde_json::{json, Value};

use super::error_body;
use super::response::{message_id, stop_reason, usage_of};
use crate::error::GatewayError;
use crate::sse::{write_event, SseEvent, SseParser};

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
    done: bool,
}

impl StreamToMessages {
    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) {
        // The parser lends each event from its buffers: out of `self` while it feeds us.
        let mut sse = std::mem::take(&mut self.sse);
        sse.feed(chunk, &mut |e| self.event(e, out));
        if end_of_stream {
            sse.finish(&mut |e| self.event(e, out));
        }
        self.sse = sse;
        if end_of_stream && !self.done {
            if self.finish.is_some() {
                self.close(out);
            } else {
                self.fail("the provider's stream ended before it finished", 502, out);
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
            self.fail("the provider sent an unreadable stream event", 502, out);
            return;
        };
        if let Some(err) = v.get("error") {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("provider error");
            self.fail(msg, 502, out);
            return;
        }
        if !self.started {
            self.started = true;
            let start = json!({"type": "message_start", "message": {
                "id": message_id(v.get("id").and_then(Value::as_str)),
                "type": "message", "role": "assistant",
                "model": v.get("model").cloned().unwrap_or(Value::Null),
                "content": [], "stop_reason": Value::Null, "stop_sequence": Value::Null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}});
            write_event(out, "message_start", start.to_string().as_bytes());
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
            let ev = json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}});
            write_event(out, "content_block_delta", ev.to_string().as_bytes());
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            for c in calls {
                let k = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                if !self.tools_seen.contains(&k) {
                    self.tools_seen.push(k);
                    let start = (
                        c.get("id")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        c.pointer("/function/name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    );
                    self.ensure_block(Block::Tool, Some(start), out);
                }
                if let Some(args) = c
                    .pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .filter(|a| !a.is_empty())
                {
                    if let Some((Block::Tool, index)) = self.open {
                        let ev = json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": args}});
                        write_event(out, "content_block_delta", ev.to_string().as_bytes());
                    }
                }
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_string());
        }
    }

    /// Opens a block of `kind` unless one is open (a new tool call always opens a new block).
    fn ensure_block(
        &mut self,
        kind: Block,
        tool: Option<(String, String)>,
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
        let block = match tool {
            Some((id, name)) => json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
            None => json!({"type": "text", "text": ""}),
        };
        let ev = json!({"type": "content_block_start", "index": index, "content_block": block});
        write_event(out, "content_block_start", ev.to_string().as_bytes());
        self.open = Some((kind, index));
        index
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            let ev = json!({"type": "content_block_stop", "index": index});
            write_event(out, "content_block_stop", ev.to_string().as_bytes());
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        self.close_block(out);
        let usage = usage_of(self.usage.as_ref().unwrap_or(&Value::Null));
        let ev = json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": Value::Null},
            "usage": usage});
        write_event(out, "message_delta", ev.to_string().as_bytes());
        write_event(out, "message_stop", br#"{"type":"message_stop"}"#);
        self.done = true;
    }

    fn fail(&mut self, message: &str, status: u16, out: &mut Vec<u8>) {
        let e = GatewayError::new(status, "api_error", message);
        write_event(out, "error", &error_body(&e));
        self.done = true;
    }
}
