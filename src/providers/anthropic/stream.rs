//! Anthropic SSE events → OpenAI `chat.completion.chunk` events, written by
//! [`ChunkWriter`](super::super::openai_chunks::ChunkWriter); text deltas take a fast path that
//! copies the text without parsing the event.

use super::response::{bad_gateway, finish_reason, status_for_error_type, AError, StreamEvent};
use super::*;

// ---------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------

impl AnthropicChat {
    /// `at_end`: the event was flushed at end of stream without its closing blank line; if it does
    /// not parse it was cut off, and the stream-ended error that follows says so.
    pub(super) fn on_event(&mut self, ev: SseEvent, at_end: bool, out: &mut Vec<u8>) {
        if self.s.w.is_done() {
            return;
        }
        // Nearly every event of a stream is a text delta: its text is copied as the JSON string
        // it already is, without parsing the event (the rest go through serde below).
        if self.s.w.has_prefix() {
            if let Some(text) = text_delta_fast(ev.data) {
                if text != "\"\"" {
                    self.s.w.text_token(out, text);
                }
                return;
            }
        }
        let data = ev.text();
        let e: StreamEvent<'_> = match serde_json::from_str(&data) {
            Ok(e) => e,
            Err(_) if at_end => return,
            Err(err) => {
                let msg = format!("an invalid stream event: {err}");
                let g = bad_gateway(self.provider_name(), msg);
                self.s.w.fail(out, &g);
                return;
            }
        };
        let kind = e.kind.as_deref().or(ev.event).unwrap_or_default();
        match kind {
            "message_start" => {
                if let Some(m) = &e.message {
                    if let Some(id) = &m.id {
                        self.s.w.id = id.to_string();
                    }
                    if let Some(model) = &m.model {
                        self.s.w.model = model.to_string();
                    }
                    if let Some(u) = &m.usage {
                        self.s.tokens.update(u);
                    }
                }
                self.usage = Some(self.s.tokens.to_usage());
                self.s.w.render_prefix();
                self.s.w.role(out, 0);
            }
            "content_block_start" => self.block_start(&e, out),
            "content_block_delta" => self.block_delta(&e, out),
            "content_block_stop" => {
                let index = e.index.unwrap_or(0);
                if let Some(pos) = self.s.open.iter().position(|(i, _)| *i == index) {
                    let (_, block) = self.s.open.swap_remove(pos);
                    if let OpenBlock::Tool {
                        index: k,
                        has_args: false,
                    } = block
                    {
                        // A call without input: OpenAI clients parse the arguments, so give `{}`.
                        self.s.w.tool_args(out, 0, k, "{}");
                    }
                }
            }
            "message_delta" => {
                if let Some(u) = &e.usage {
                    self.s.tokens.update(u);
                    self.usage = Some(self.s.tokens.to_usage());
                }
                let reason = e.delta.as_ref().and_then(|d| d.stop_reason.as_deref());
                self.s.w.finish(out, 0, finish_reason(reason));
            }
            "message_stop" => {
                let usage = self.s.tokens.to_usage();
                self.s.w.close(out, usage);
            }
            "error" => {
                let g = self.stream_error(e.error.as_ref());
                self.s.w.fail(out, &g);
            }
            // ping and event kinds added later.
            _ => {}
        }
    }

    pub(super) fn block_start(&mut self, e: &StreamEvent<'_>, out: &mut Vec<u8>) {
        let index = e.index.unwrap_or(0);
        let Some(b) = &e.content_block else { return };
        if self.s.open.len() >= crate::providers::openai_chunks::MAX_STREAM_BLOCKS
            && !self.s.open.iter().any(|(i, _)| *i == index)
        {
            let g = crate::providers::openai_chunks::too_many_blocks(
                self.provider_name(),
                "open content blocks",
            );
            self.s.w.fail(out, &g);
            return;
        }
        let w = &self.s.w;
        let open = match b.kind.as_str() {
            "tool_use" => {
                let k = self.s.next_tool;
                self.s.next_tool = k.saturating_add(1);
                let (id, name) = (b.id.as_deref(), b.name.as_deref());
                w.tool_start(out, 0, k, id.unwrap_or(""), name.unwrap_or(""));
                OpenBlock::Tool {
                    index: k,
                    has_args: false,
                }
            }
            "text" => {
                if let Some(t) = b.text.as_deref().filter(|t| !t.is_empty()) {
                    w.content(out, 0, t);
                }
                OpenBlock::Other
            }
            "thinking" => {
                if let Some(t) = b.thinking.as_deref().filter(|t| !t.is_empty()) {
                    w.reasoning(out, 0, t);
                }
                OpenBlock::Other
            }
            _ => OpenBlock::Other,
        };
        self.s.open.retain(|(i, _)| *i != index);
        self.s.open.push((index, open));
    }

    pub(super) fn block_delta(&mut self, e: &StreamEvent<'_>, out: &mut Vec<u8>) {
        let Some(d) = &e.delta else { return };
        match d.kind.as_deref() {
            Some("text_delta") => {
                if let Some(t) = d.text.as_deref().filter(|t| !t.is_empty()) {
                    self.s.w.content(out, 0, t);
                }
            }
            Some("thinking_delta") => {
                if let Some(t) = d.thinking.as_deref().filter(|t| !t.is_empty()) {
                    self.s.w.reasoning(out, 0, t);
                }
            }
            Some("input_json_delta") => {
                let Some(json) = d.partial_json.as_deref().filter(|j| !j.is_empty()) else {
                    return;
                };
                let index = e.index.unwrap_or(0);
                let Some(slot) = self.s.open.iter_mut().find(|(i, _)| *i == index) else {
                    return;
                };
                if let OpenBlock::Tool { index: k, has_args } = &mut slot.1 {
                    *has_args = true;
                    let k = *k;
                    self.s.w.tool_args(out, 0, k, json);
                }
            }
            // signature_delta, citations_delta and newer kinds carry nothing for OpenAI.
            _ => {}
        }
    }

    /// An `error` event as the error the client gets.
    pub(super) fn stream_error(&self, error: Option<&AError<'_>>) -> GatewayError {
        let (etype, emsg) = match error {
            Some(err) => (
                err.kind.as_deref().unwrap_or("api_error"),
                err.message.as_deref().unwrap_or(""),
            ),
            None => ("api_error", ""),
        };
        let client = client_status(status_for_error_type(etype));
        let mut g = GatewayError::new(
            client,
            kind_for_status(client),
            format!("{} stream error: {etype}: {emsg}", self.provider_name()),
        );
        g.code = Some(if etype == "overloaded_error" {
            "overloaded".to_string()
        } else {
            etype.to_string()
        });
        g
    }
}

impl ChunkStream for AnthropicChat {
    fn decode_error(&self) -> Option<GatewayError> {
        let e = self.s.parser.error()?;
        Some(crate::providers::openai_chunks::sse_too_large(
            self.provider_name(),
            e,
        ))
    }

    fn writer(&self) -> &ChunkWriter {
        &self.s.w
    }

    fn writer_mut(&mut self) -> &mut ChunkWriter {
        &mut self.s.w
    }

    fn decode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut parser = std::mem::take(&mut self.s.parser);
        parser.feed(chunk, &mut |ev| self.on_event(ev, false, out));
        self.s.parser = parser;
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        let mut parser = std::mem::take(&mut self.s.parser);
        parser.finish(&mut |ev| self.on_event(ev, true, out));
        self.s.parser = parser;
    }

    fn at_end(&self) -> Result<Usage, GatewayError> {
        let msg = format!("{} stream ended before message_stop", self.provider_name());
        Err(GatewayError::new(502, "api_error", msg))
    }

    fn release(&mut self) {
        self.s.parser = SseParser::new();
    }
}

/// The text of an event that is exactly Anthropic's text delta,
/// `{"type":"content_block_delta","index":N,"delta":{"type":"text_delta","text":"..."}}`, as the
/// JSON string token it is (quotes and escapes included). `None` for anything else, which is
/// then parsed in full: another field, another order, whitespace, or a string that does not end
/// where the event does.
pub(super) fn text_delta_fast(data: &[u8]) -> Option<&str> {
    let rest = data.strip_prefix(br#"{"type":"content_block_delta","index":"#.as_slice())?;
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let rest = rest
        .get(digits..)?
        .strip_prefix(br#","delta":{"type":"text_delta","text":"#.as_slice())?;
    let token = rest.strip_suffix(b"}}")?;
    let b = token.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    // One string token: every quote inside is escaped, and no control character is raw.
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => match b.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                _ => return None,
            },
            b'"' => return None,
            c if c < 0x20 => return None,
            _ => i += 1,
        }
    }
    if digits == 0 || i != b.len() {
        return None;
    }
    // (The event's bytes were not checked as UTF-8: only the text that goes out is.)
    std::str::from_utf8(token).ok()
}
