//! The OpenAI `chat.completion.chunk` stream every translating provider writes.
//!
//! Anthropic, Gemini, Bedrock and Cohere streams all become the same client stream: a role chunk,
//! content / reasoning / tool-call chunks, a finish chunk, the usage chunk when the client asked
//! for `include_usage`, and one `data: [DONE]` — or, when the provider stream fails or ends
//! early, an OpenAI error event and then `[DONE]`. [`ChunkWriter`] owns the per-stream envelope
//! (id, created, model) and writes all of these, and nothing once `[DONE]` went out;
//! [`ChunkStream`] + [`stream_chunk`] is the feed / end-of-body skeleton each translator plugs
//! its decoder and event handler into.

use super::Usage;
use crate::client_api::openai::chat::{
    ChatCompletionChunk, ChunkChoice, CompletionUsage, Delta, DeltaFunction, DeltaToolCall,
};
use crate::codec::json_text::json_string;
use crate::codec::sse::write_json_event;
use crate::error::GatewayError;

/// The last event of every stream.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// Writes one client stream's chunks.
#[derive(Default)]
pub(crate) struct ChunkWriter {
    /// The chunks' `id`.
    pub id: String,
    /// The chunks' `model`.
    pub model: String,
    /// Unix seconds, the chunks' `created`.
    pub created: u64,
    /// The client asked for `stream_options.include_usage`: every chunk has `"usage":null` and a
    /// usage chunk comes before `[DONE]`.
    pub include_usage: bool,
    /// `data: [DONE]` written: nothing more goes out.
    done: bool,
    /// `data: {"id":...,"model":...,"choices":[{"index":0,"delta":` — the part of every chunk
    /// of choice 0 that does not change, rendered by [`ChunkWriter::render_prefix`].
    prefix: Vec<u8>,
    /// A text delta's chunk around its text: `prefix` + `{"content":`, and `}` + the suffix with
    /// no finish reason (three copies per delta instead of eight).
    text_prefix: Vec<u8>,
    text_suffix: Vec<u8>,
}

impl ChunkWriter {
    #[inline]
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Renders the constant head of every chunk of choice 0, once the id and model are final:
    /// from then on only the delta of a chunk is serialised, and [`ChunkWriter::text_token`] works.
    pub fn render_prefix(&mut self) {
        let mut p = Vec::with_capacity(96 + self.id.len() + self.model.len());
        p.extend_from_slice(b"data: {\"id\":");
        p.extend_from_slice(json_string(&self.id).as_bytes());
        p.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        p.extend_from_slice(self.created.to_string().as_bytes());
        p.extend_from_slice(b",\"model\":");
        p.extend_from_slice(json_string(&self.model).as_bytes());
        p.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":");
        let mut text_prefix = p.clone();
        text_prefix.extend_from_slice(b"{\"content\":");
        let mut text_suffix = b"}".to_vec();
        self.suffix(&mut text_suffix, None);
        self.prefix = p;
        self.text_prefix = text_prefix;
        self.text_suffix = text_suffix;
    }

    /// [`ChunkWriter::render_prefix`] was called.
    #[inline]
    pub fn has_prefix(&self) -> bool {
        !self.prefix.is_empty()
    }

    /// A content chunk of choice 0 whose text is `token`, a JSON string token (quotes and escapes
    /// included) copied as it is. Only after [`ChunkWriter::render_prefix`].
    #[inline]
    pub fn text_token(&self, out: &mut Vec<u8>, token: &str) {
        if self.done {
            return;
        }
        let (pre, post) = (&self.text_prefix, &self.text_suffix);
        out.reserve(pre.len() + token.len() + post.len());
        out.extend_from_slice(pre);
        out.extend_from_slice(token.as_bytes());
        out.extend_from_slice(post);
    }

    /// What follows a chunk's delta: finish reason, usage placeholder, end of the event.
    fn suffix(&self, out: &mut Vec<u8>, finish: Option<&'static str>) {
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(f) => out.extend_from_slice(json_string(f).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]");
        if self.include_usage {
            out.extend_from_slice(b",\"usage\":null");
        }
        out.extend_from_slice(b"}\n\n");
    }

    /// One chunk with one choice.
    pub fn chunk(
        &self,
        out: &mut Vec<u8>,
        index: u32,
        delta: Delta<'_>,
        finish: Option<&'static str>,
    ) {
        if self.done {
            return;
        }
        if index == 0 && !self.prefix.is_empty() {
            // Hot path: only the delta is serialised.
            out.extend_from_slice(&self.prefix);
            if serde_json::to_writer(&mut *out, &delta).is_err() {
                out.extend_from_slice(b"{}");
            }
            self.suffix(out, finish);
            return;
        }
        let choices = [ChunkChoice {
            index,
            delta,
            logprobs: None,
            finish_reason: finish,
        }];
        let chunk = ChatCompletionChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: &choices,
            usage: self.include_usage.then_some(None),
        };
        write_json_event(out, &chunk);
    }

    /// The first chunk of a choice: `{"role":"assistant","content":""}`.
    #[inline]
    pub fn role(&self, out: &mut Vec<u8>, index: u32) {
        let delta = Delta {
            role: Some("assistant"),
            content: Some(""),
            ..Default::default()
        };
        self.chunk(out, index, delta, None);
    }

    /// A `content` chunk.
    #[inline]
    pub fn content(&self, out: &mut Vec<u8>, index: u32, text: &str) {
        let delta = Delta {
            content: Some(text),
            ..Default::default()
        };
        self.chunk(out, index, delta, None);
    }

    /// A `reasoning_content` chunk.
    #[inline]
    pub fn reasoning(&self, out: &mut Vec<u8>, index: u32, text: &str) {
        let delta = Delta {
            reasoning_content: Some(text),
            ..Default::default()
        };
        self.chunk(out, index, delta, None);
    }

    /// A chunk with one tool call: its start (`id`, `name`, empty `arguments`) or more of its
    /// arguments.
    #[inline]
    pub fn tool_call(&self, out: &mut Vec<u8>, index: u32, call: DeltaToolCall<'_>) {
        let delta = Delta {
            tool_calls: std::slice::from_ref(&call),
            ..Default::default()
        };
        self.chunk(out, index, delta, None);
    }

    /// A chunk that starts tool call `call` of a choice.
    #[inline]
    pub fn tool_start(&self, out: &mut Vec<u8>, index: u32, call: u32, id: &str, name: &str) {
        self.tool_call(out, index, tool_start(call, id, name, ""));
    }

    /// A chunk with more arguments of tool call `call`.
    #[inline]
    pub fn tool_args(&self, out: &mut Vec<u8>, index: u32, call: u32, arguments: &str) {
        let call = DeltaToolCall {
            index: call,
            id: None,
            kind: None,
            function: DeltaFunction {
                name: None,
                arguments: Some(arguments),
            },
        };
        self.tool_call(out, index, call);
    }

    /// The finish chunk of a choice: an empty delta and its finish reason.
    #[inline]
    pub fn finish(&self, out: &mut Vec<u8>, index: u32, reason: &'static str) {
        self.chunk(out, index, Delta::default(), Some(reason));
    }

    /// The usage chunk: no choices, `usage` filled in.
    pub fn usage(&self, out: &mut Vec<u8>, usage: Usage) {
        if self.done {
            return;
        }
        let chunk = ChatCompletionChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: &[],
            usage: Some(Some(CompletionUsage::from(usage))),
        };
        write_json_event(out, &chunk);
    }

    /// The proper end: the usage chunk when the client asked for it, then `[DONE]`.
    pub fn close(&mut self, out: &mut Vec<u8>, usage: Usage) {
        if self.include_usage {
            self.usage(out, usage);
        }
        self.write_done(out);
    }

    /// The end of a failed stream: an error event, then `[DONE]`.
    pub fn fail(&mut self, out: &mut Vec<u8>, err: &GatewayError) {
        if self.done {
            return;
        }
        out.extend_from_slice(&err.sse_event());
        self.write_done(out);
    }

    /// `data: [DONE]`, once.
    #[inline]
    pub fn write_done(&mut self, out: &mut Vec<u8>) {
        if !self.done {
            out.extend_from_slice(DONE);
            self.done = true;
        }
    }
}

/// The delta of a tool call's start: `id`, `type`, `name` and the first `arguments`.
#[inline]
pub(crate) fn tool_start<'a>(
    call: u32,
    id: &'a str,
    name: &'a str,
    arguments: &'a str,
) -> DeltaToolCall<'a> {
    DeltaToolCall {
        index: call,
        id: Some(id),
        kind: Some("function"),
        function: DeltaFunction {
            name: Some(name),
            arguments: Some(arguments),
        },
    }
}

/// A translator of a provider stream into a [`ChunkWriter`] stream, driven by [`stream_chunk`].
pub(crate) trait ChunkStream {
    fn writer(&self) -> &ChunkWriter;
    fn writer_mut(&mut self) -> &mut ChunkWriter;

    /// Decodes `chunk` and handles every event it completes.
    fn decode(&mut self, chunk: &[u8], out: &mut Vec<u8>);

    /// End of body: handles what the decoder still holds (an event without its closing line).
    fn flush(&mut self, _out: &mut Vec<u8>) {}

    /// End of body, the stream not over yet: `Ok(usage)` when it can end properly (usage chunk
    /// when asked for, `[DONE]`), else the error saying it ended early.
    fn at_end(&self) -> Result<Usage, GatewayError>;

    /// The stream is over: frees what the decoder holds (nothing after `[DONE]` is read).
    fn release(&mut self) {}

    /// The decoder stopped at one of its caps (an SSE line or event over
    /// [`crate::codec::sse::MAX_LINE`] / [`crate::codec::sse::MAX_EVENT`]): the error that ends
    /// the client's stream. Asked once per chunk.
    fn decode_error(&self) -> Option<GatewayError> {
        None
    }
}

/// The most content blocks (Anthropic, open at once), tool calls (Bedrock, Cohere) or
/// candidates (Gemini) one provider stream may have: 1024, far above real answers (Gemini
/// allows 8 candidates; parallel tool calls number in the tens). Each is looked up by a linear
/// search per event, so this also keeps that search short. Past it the client's stream ends
/// with a 502 error event (code `upstream_stream_too_large`) and `[DONE]`.
pub(crate) const MAX_STREAM_BLOCKS: usize = 1024;

/// The error for a stream past [`MAX_STREAM_BLOCKS`]; `what` names them ("tool calls").
pub(crate) fn too_many_blocks(provider: &str, what: &str) -> GatewayError {
    GatewayError::new(
        502,
        "api_error",
        format!("{provider} stream has more than {MAX_STREAM_BLOCKS} {what}"),
    )
    .with_code("upstream_stream_too_large")
}

/// The error that ends a client's stream when the provider's stream passed one of the SSE
/// parser's caps: 502 `api_error`, code `upstream_event_too_large`.
pub(crate) fn sse_too_large(provider: &str, e: crate::codec::sse::SseError) -> GatewayError {
    GatewayError::new(502, "api_error", format!("{provider} stream: {e}"))
        .with_code("upstream_event_too_large")
}

/// One chunk of a provider stream: decoded and handled; at the end of the body, flushed and
/// closed (properly, or with the error of [`ChunkStream::at_end`]). Nothing is read or written
/// after `[DONE]`. Always replaces the chunk (returns `true`).
pub(crate) fn stream_chunk<S: ChunkStream + ?Sized>(
    s: &mut S,
    chunk: &[u8],
    end_of_stream: bool,
    out: &mut Vec<u8>,
) -> bool {
    if s.writer().is_done() {
        return true;
    }
    s.decode(chunk, out);
    if !s.writer().is_done() {
        if let Some(e) = s.decode_error() {
            s.writer_mut().fail(out, &e);
        }
    }
    if end_of_stream && !s.writer().is_done() {
        s.flush(out);
        if !s.writer().is_done() {
            match s.at_end() {
                Ok(usage) => s.writer_mut().close(out, usage),
                Err(e) => s.writer_mut().fail(out, &e),
            }
        }
    }
    if s.writer().is_done() {
        s.release();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(include_usage: bool) -> ChunkWriter {
        ChunkWriter {
            id: "id\"1".into(),
            model: "m".into(),
            created: 7,
            include_usage,
            ..Default::default()
        }
    }

    /// The rendered prefix writes what serde writes.
    #[test]
    fn prefix_path_matches_the_serde_path() {
        for include_usage in [false, true] {
            let plain = writer(include_usage);
            let mut fast = writer(include_usage);
            fast.render_prefix();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for w in [&plain, &fast] {
                let out = if w.has_prefix() { &mut b } else { &mut a };
                w.role(out, 0);
                w.content(out, 0, "a \"b\"\n");
                w.reasoning(out, 0, "r");
                w.tool_start(out, 0, 1, "c", "f");
                w.tool_args(out, 0, 1, "{}");
                w.finish(out, 0, "stop");
            }
            assert_eq!(String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            plain.content(&mut a, 0, "x\u{1}y");
            fast.text_token(&mut b, &json_string("x\u{1}y"));
            assert_eq!(a, b);
        }
    }

    #[test]
    fn nothing_after_done() {
        let mut w = writer(true);
        let mut out = Vec::new();
        w.role(&mut out, 0);
        w.close(&mut out, Usage::default());
        let s = String::from_utf8(out.clone()).unwrap();
        assert!(s.ends_with("data: [DONE]\n\n"), "{s}");
        assert!(s.contains("\"choices\":[],\"usage\":{"), "{s}");
        let len = out.len();
        w.content(&mut out, 0, "late");
        w.usage(&mut out, Usage::default());
        w.fail(&mut out, &GatewayError::new(502, "api_error", "late"));
        w.write_done(&mut out);
        assert_eq!(out.len(), len);
    }

    /// A provider stream with one endless line, or one event of endless `data:` lines: every
    /// SSE translator ends the client's stream with one `upstream_event_too_large` error event
    /// and `[DONE]`, holds no more than the parser's cap, and writes nothing after.
    #[test]
    fn sse_translators_end_the_stream_at_the_parser_caps() {
        use crate::codec::sse::{MAX_EVENT, MAX_LINE};
        use crate::providers::ProviderKind;
        let line = vec![b'x'; 64 * 1024];
        let data_lines = format!("data: {}\n", "y".repeat(64 * 1024 - 7));
        for kind in [
            ProviderKind::Anthropic,
            ProviderKind::Gemini,
            ProviderKind::Cohere,
        ] {
            for (start, piece) in [(&b"data: "[..], &line[..]), (b"", data_lines.as_bytes())] {
                let mut t = kind.chat_translator();
                let mut out = Vec::new();
                assert!(t.stream_chunk(start, false, &mut out));
                let mut fed = 0;
                while !out.ends_with(DONE) {
                    assert!(fed <= MAX_LINE.max(MAX_EVENT) + piece.len(), "{kind:?}");
                    assert!(t.stream_chunk(piece, false, &mut out));
                    fed += piece.len();
                }
                let text = String::from_utf8(out.clone()).unwrap();
                assert!(text.starts_with("data: {\"error\":"), "{kind:?}: {text}");
                assert!(text.contains("upstream_event_too_large"), "{text}");
                assert_eq!(text.matches("[DONE]").count(), 1, "{text}");
                let len = out.len();
                assert!(t.stream_chunk(b"\n\ndata: {}\n\n", true, &mut out));
                assert_eq!(out.len(), len, "{kind:?}: nothing after [DONE]");
            }
        }
    }

    /// A provider stream with ever new content blocks / tool calls / candidates (never closed):
    /// each translator ends the client's stream with `upstream_stream_too_large` and `[DONE]`
    /// at MAX_STREAM_BLOCKS, instead of growing its table (and its linear lookup) without end.
    #[test]
    fn translators_cap_the_blocks_of_a_stream() {
        use crate::providers::ProviderKind;
        let n = MAX_STREAM_BLOCKS + 5;
        let sse = |f: &dyn Fn(usize) -> String| -> Vec<u8> {
            (0..n).flat_map(|i| f(i).into_bytes()).collect()
        };
        let anthropic = sse(&|i| {
            format!(
            "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":{i},\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n"
        )
        });
        let gemini = sse(&|i| {
            format!(
            "data: {{\"candidates\":[{{\"index\":{i},\"content\":{{\"parts\":[{{\"text\":\"a\"}}]}}}}]}}\n\n"
        )
        });
        let cohere = sse(&|i| {
            format!(
            "data: {{\"type\":\"tool-call-start\",\"index\":{i},\"delta\":{{\"message\":{{\"tool_calls\":{{\"id\":\"c\",\"type\":\"function\",\"function\":{{\"name\":\"f\",\"arguments\":\"\"}}}}}}}}}}\n\n"
        )
        });
        let bedrock: Vec<u8> = (0..n)
            .flat_map(|i| {
                crate::aws::eventstream::encode(
                    &[(":message-type", "event"), (":event-type", "contentBlockStart")],
                    format!("{{\"contentBlockIndex\":{i},\"start\":{{\"toolUse\":{{\"toolUseId\":\"t\",\"name\":\"f\"}}}}}}").as_bytes(),
                )
            })
            .collect();
        for (kind, body) in [
            (ProviderKind::Anthropic, anthropic),
            (ProviderKind::Gemini, gemini),
            (ProviderKind::Cohere, cohere),
            (ProviderKind::Bedrock, bedrock),
        ] {
            let mut t = kind.chat_translator();
            let mut out = Vec::new();
            assert!(t.stream_chunk(&body, false, &mut out));
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("upstream_stream_too_large"),
                "{kind:?}: {}",
                &text[text.len().saturating_sub(400)..]
            );
            assert!(text.ends_with("data: [DONE]\n\n"), "{kind:?}");
            assert_eq!(text.matches("[DONE]").count(), 1);
        }
    }
}
