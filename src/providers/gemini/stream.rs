//! Gemini SSE events (and the raw JSON errors Google sends outside SSE) → OpenAI
//! `chat.completion.chunk` events, written by [`ChunkWriter`](super::super::openai_chunks::ChunkWriter).

use super::request::tool_call_id;
use super::response::{
    bad_gateway, compact_json, finish_reason, parse_error, status_for_rpc, Candidate, GError,
    GResponse,
};
use super::*;

// ---------------------------------------------------------------------------------------------
// Raw JSON in a stream (Google sends errors without `data:`)
// ---------------------------------------------------------------------------------------------

/// Finds a JSON value that starts at the beginning of a line outside SSE fields, by counting
/// brackets outside strings, across chunk boundaries.
#[derive(Default)]
pub(super) struct RawJson {
    /// The previous byte ended a line (or nothing was seen yet).
    pub(super) mid_line: bool,
    pub(super) active: bool,
    pub(super) depth: u32,
    pub(super) in_str: bool,
    pub(super) esc: bool,
    pub(super) buf: Vec<u8>,
    pub(super) overflow: bool,
}

impl RawJson {
    /// Feeds bytes; returns the first complete raw JSON value.
    pub(super) fn feed(&mut self, chunk: &[u8]) -> Option<Vec<u8>> {
        for &b in chunk {
            if !self.active {
                if !self.mid_line && (b == b'{' || b == b'[') {
                    self.active = true;
                    self.depth = 0;
                    self.in_str = false;
                    self.esc = false;
                    self.buf.clear();
                } else {
                    self.mid_line = !(b == b'\n' || b == b'\r');
                    continue;
                }
            }
            if self.buf.len() < MAX_RAW_ERROR {
                self.buf.push(b);
            } else {
                self.overflow = true;
            }
            if self.in_str {
                if self.esc {
                    self.esc = false;
                } else if b == b'\\' {
                    self.esc = true;
                } else if b == b'"' {
                    self.in_str = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_str = true,
                b'{' | b'[' => self.depth = self.depth.saturating_add(1),
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        self.active = false;
                        self.mid_line = true;
                        return Some(std::mem::take(&mut self.buf));
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// What an unfinished raw value holds at the end of the body.
    pub(super) fn pending(&mut self) -> Option<Vec<u8>> {
        self.active.then(|| std::mem::take(&mut self.buf))
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------

impl GeminiChat {
    pub(super) fn stream_error(&self, e: &GError<'_>) -> GatewayError {
        let status = e.status.as_deref().unwrap_or("UNKNOWN");
        let http = e
            .code
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (400..600).contains(c))
            .unwrap_or_else(|| status_for_rpc(status));
        let client = client_status(http);
        let mut g = GatewayError::new(
            client,
            kind_for_status(client),
            format!(
                "{} stream error: {status}: {}",
                self.provider_name(),
                e.message.as_deref().unwrap_or("")
            ),
        );
        g.code = Some(status.to_string());
        g
    }

    pub(super) fn on_raw_json(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        if self.s.w.is_done() {
            return;
        }
        let g = match parse_error(raw) {
            Some(e) => self.stream_error(&e),
            None => {
                let head = raw.get(..raw.len().min(200)).unwrap_or(raw);
                bad_gateway(
                    self.provider_name(),
                    format!(
                        "data outside an SSE event: {}",
                        String::from_utf8_lossy(head)
                    ),
                )
            }
        };
        self.s.w.fail(out, &g);
    }

    /// The state of candidate `index`, created (with its role chunk) on first sight. Past
    /// [`MAX_STREAM_BLOCKS`](crate::providers::openai_chunks::MAX_STREAM_BLOCKS) candidates the
    /// stream fails and the position is out of range (no state).
    pub(super) fn candidate(&mut self, index: u32, out: &mut Vec<u8>) -> usize {
        if let Some(pos) = self.s.cands.iter().position(|c| c.index == index) {
            return pos;
        }
        if self.s.cands.len() >= crate::providers::openai_chunks::MAX_STREAM_BLOCKS {
            let g = crate::providers::openai_chunks::too_many_blocks(
                self.provider_name(),
                "candidates",
            );
            self.s.w.fail(out, &g);
            return usize::MAX;
        }
        self.s.cands.push(CandState {
            index,
            next_tool: 0,
            saw_tool: false,
            finished: false,
        });
        self.s.w.role(out, index);
        self.s.cands.len() - 1
    }

    /// `at_end`: flushed at end of body without its closing blank line; if it does not parse it
    /// was cut off, and the error for the unfinished stream follows.
    pub(super) fn on_event(&mut self, ev: SseEvent, at_end: bool, out: &mut Vec<u8>) {
        if self.s.w.is_done() {
            return;
        }
        let data = ev.text();
        let r: GResponse<'_> = match serde_json::from_str(&data) {
            Ok(r) => r,
            Err(_) if at_end => return,
            Err(err) => {
                let g = bad_gateway(
                    self.provider_name(),
                    format!("an invalid stream event: {err}"),
                );
                self.s.w.fail(out, &g);
                return;
            }
        };
        if let Some(e) = &r.error {
            let g = self.stream_error(e);
            self.s.w.fail(out, &g);
            return;
        }
        if !self.s.started {
            self.s.started = true;
            self.s.w.id = match r.response_id.as_deref() {
                Some(id) if !id.is_empty() => id.to_string(),
                _ => format!("chatcmpl-gemini-{}", self.created),
            };
            self.s.w.model = match r.model_version.as_deref() {
                Some(m) if !m.is_empty() => m.to_string(),
                _ => self.model.clone(),
            };
        }
        if let Some(u) = &r.usage_metadata {
            self.s.tokens.update(u);
            self.usage = Some(self.s.tokens.to_usage());
        }
        let candidates = r.candidates.unwrap_or_default();
        if candidates.is_empty() {
            if r.prompt_feedback
                .as_ref()
                .is_some_and(|f| f.block_reason.is_some())
            {
                let pos = self.candidate(0, out);
                if let Some(c) = self.s.cands.get_mut(pos) {
                    if !c.finished {
                        c.finished = true;
                        self.s.w.finish(out, 0, "content_filter");
                    }
                }
            }
            return;
        }
        for (k, cand) in candidates.iter().enumerate() {
            let index = cand
                .index
                .unwrap_or_else(|| u32::try_from(k).unwrap_or(u32::MAX));
            if !self.on_candidate(index, cand, out) {
                return;
            }
        }
    }

    /// One candidate of a stream event: its parts, then its finish reason. `false` if its state
    /// went missing (never: it was just looked up).
    pub(super) fn on_candidate(
        &mut self,
        index: u32,
        cand: &Candidate<'_>,
        out: &mut Vec<u8>,
    ) -> bool {
        let pos = self.candidate(index, out);
        for part in cand
            .content
            .as_ref()
            .and_then(|c| c.parts.as_deref())
            .unwrap_or_default()
        {
            if let Some(fc) = &part.function_call {
                let Some(state) = self.s.cands.get_mut(pos) else {
                    return false;
                };
                let n = state.next_tool;
                state.next_tool = n.saturating_add(1);
                state.saw_tool = true;
                let id = tool_call_id(n, part.thought_signature.as_deref());
                let args = fc
                    .args
                    .map_or(Cow::Borrowed("{}"), |a| compact_json(a.get()));
                let name = fc.name.as_deref().unwrap_or("");
                let call = openai_chunks::tool_start(n, &id, name, &args);
                self.s.w.tool_call(out, index, call);
            } else if let Some(t) = part.text.as_deref().filter(|t| !t.is_empty()) {
                if part.thought == Some(true) {
                    self.s.w.reasoning(out, index, t);
                } else {
                    self.s.w.content(out, index, t);
                }
            }
        }
        if let Some(reason) = cand.finish_reason.as_deref() {
            let Some(state) = self.s.cands.get_mut(pos) else {
                return false;
            };
            if !state.finished {
                state.finished = true;
                let saw_tool = state.saw_tool;
                self.s
                    .w
                    .finish(out, index, finish_reason(Some(reason), saw_tool));
            }
        }
        true
    }
}

impl ChunkStream for GeminiChat {
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
        if !self.s.w.is_done() {
            if let Some(raw) = self.s.raw.feed(chunk) {
                self.on_raw_json(&raw, out);
            }
        }
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        let mut parser = std::mem::take(&mut self.s.parser);
        parser.finish(&mut |ev| self.on_event(ev, true, out));
        self.s.parser = parser;
        if let Some(raw) = self.s.raw.pending() {
            self.on_raw_json(&raw, out);
        }
    }

    fn at_end(&self) -> Result<Usage, GatewayError> {
        if self.s.cands.is_empty() || self.s.cands.iter().any(|c| !c.finished) {
            let msg = format!(
                "{} stream ended before a finishReason",
                self.provider_name()
            );
            return Err(GatewayError::new(502, "api_error", msg));
        }
        Ok(self.s.tokens.to_usage())
    }

    fn release(&mut self) {
        // Free what the parsers held; nothing after [DONE] is read.
        self.s.parser = SseParser::new();
        self.s.raw = RawJson::default();
    }
}
