//! Bedrock event-stream frames (ConverseStream) → OpenAI `chat.completion.chunk` events, written
//! by [`ChunkWriter`](super::super::openai_chunks::ChunkWriter).

use super::response::{exception_status, finish_reason, str_at, token_usage};
use super::*;

impl BedrockChat {
    pub(super) fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.w.role(out, 0);
        }
    }

    pub(super) fn stream_error(&mut self, message: &str, out: &mut Vec<u8>) {
        let e = self.stream_failure(message);
        self.w.fail(out, &e);
    }

    pub(super) fn stream_failure(&self, message: &str) -> GatewayError {
        GatewayError::new(502, "api_error", format!("{}: {message}", self.provider))
            .with_code("upstream_stream_error")
    }

    pub(super) fn message(&mut self, m: Message, out: &mut Vec<u8>) {
        match m.message_type.as_str() {
            "event" => self.event(&m, out),
            "exception" => {
                let text = serde_json::from_slice::<Value>(&m.payload)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&m.payload).into_owned());
                let status = exception_status(&m.exception_type);
                let e = GatewayError::new(
                    status,
                    kind_for_status(status),
                    format!(
                        "{} stream failed: {}: {text}",
                        self.provider, m.exception_type
                    ),
                )
                .with_code(&m.exception_type);
                self.w.fail(out, &e);
            }
            _ => {
                let e = GatewayError::new(
                    502,
                    "api_error",
                    format!(
                        "{} stream failed: {}: {}",
                        self.provider, m.error_code, m.error_message
                    ),
                )
                .with_code("upstream_stream_error");
                self.w.fail(out, &e);
            }
        }
    }

    /// An `event` frame.
    pub(super) fn event(&mut self, m: &Message, out: &mut Vec<u8>) {
        let Ok(ev) = serde_json::from_slice::<Value>(&m.payload) else {
            let what = format!("unreadable `{}` event", m.event_type);
            self.stream_error(&what, out);
            return;
        };
        let block = ev
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match m.event_type.as_str() {
            "messageStart" => self.start(out),
            "contentBlockStart" => {
                let Some(tu) = ev.pointer("/start/toolUse") else {
                    return;
                };
                self.start(out);
                let Some(index) = self.tool_index(block) else {
                    return self.too_many_tools(out);
                };
                let id = str_at(tu, "/toolUseId").unwrap_or("");
                let name = str_at(tu, "/name").unwrap_or("");
                self.w.tool_start(out, 0, index, id, name);
            }
            "contentBlockDelta" => {
                let Some(d) = ev.get("delta") else { return };
                self.start(out);
                if let Some(t) = str_at(d, "/text").filter(|t| !t.is_empty()) {
                    self.w.content(out, 0, t);
                }
                if let Some(t) = str_at(d, "/reasoningContent/text").filter(|t| !t.is_empty()) {
                    self.w.reasoning(out, 0, t);
                }
                if let Some(args) = str_at(d, "/toolUse/input").filter(|a| !a.is_empty()) {
                    let Some(index) = self.tool_index(block) else {
                        return self.too_many_tools(out);
                    };
                    self.w.tool_args(out, 0, index, args);
                }
            }
            "messageStop" => {
                self.start(out);
                match finish_reason(str_at(&ev, "/stopReason")) {
                    Ok(f) => {
                        if !self.finished {
                            self.finished = true;
                            self.w.finish(out, 0, f);
                        }
                    }
                    Err(r) => self.stream_error(&format!("generation ended with {r}"), out),
                }
            }
            "metadata" => {
                if let Some(u) = ev.get("usage") {
                    self.usage = Some(token_usage(u));
                }
                if self.finished {
                    self.w.close(out, self.usage.unwrap_or_default());
                }
            }
            _ => {} // contentBlockStop and events LLMux does not translate
        }
    }

    /// The OpenAI index of the tool call of content block `block`; `None` past
    /// [`MAX_STREAM_BLOCKS`](crate::providers::openai_chunks::MAX_STREAM_BLOCKS) tool calls.
    pub(super) fn tool_index(&mut self, block: u64) -> Option<u32> {
        let i = match self.tool_blocks.iter().position(|&b| b == block) {
            Some(i) => i,
            None if self.tool_blocks.len()
                >= crate::providers::openai_chunks::MAX_STREAM_BLOCKS =>
            {
                return None;
            }
            None => {
                self.tool_blocks.push(block);
                self.tool_blocks.len() - 1
            }
        };
        u32::try_from(i).ok()
    }

    fn too_many_tools(&mut self, out: &mut Vec<u8>) {
        let g = crate::providers::openai_chunks::too_many_blocks(&self.provider, "tool calls");
        self.w.fail(out, &g);
    }
}

impl ChunkStream for BedrockChat {
    fn writer(&self) -> &ChunkWriter {
        &self.w
    }

    fn writer_mut(&mut self) -> &mut ChunkWriter {
        &mut self.w
    }

    fn decode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.decoder.feed(chunk);
        while !self.w.is_done() {
            match self.decoder.next_message() {
                None => break,
                Some(Ok(m)) => self.message(m, out),
                Some(Err(e)) => self.stream_error(&e.to_string(), out),
            }
        }
    }

    fn at_end(&self) -> Result<Usage, GatewayError> {
        if self.finished && self.decoder.pending() == 0 {
            // messageStop came but no metadata: end the stream with what is known.
            return Ok(self.usage.unwrap_or_default());
        }
        let what = if self.decoder.pending() > 0 {
            "stream ended inside an event-stream message"
        } else {
            "stream ended before messageStop"
        };
        Err(self.stream_failure(what))
    }
}
