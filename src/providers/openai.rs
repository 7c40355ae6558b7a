//! OpenAI client → OpenAI-protocol provider: pass-through.
//!
//! The body goes upstream untouched but for the model name (spliced in place) and, when the gateway
//! needs stream usage the client did not ask for, `stream_options.include_usage`; the usage chunk
//! that this adds is then removed from the stream again.

use serde::Deserialize;

use super::presets::{self, AuthStyle};
use super::{provider_error, ChatCall, ChatTranslator, ProviderRequest, Usage};
use crate::codec::json_text::json_string;
use crate::codec::sse::SseParser;
use crate::config::Provider;
use crate::error::GatewayError;

#[derive(Default)]
pub struct OpenAiChat {
    /// `embeddings` for `/v1/embeddings`; chat completions otherwise.
    embeddings: bool,
    provider: String,
    /// We added `include_usage`: drop the usage-only chunk before it reaches the client.
    strip_usage_chunk: bool,
    stream: bool,
    usage: Option<Usage>,
    /// Only used when the stream must be inspected event by event (usage wanted).
    sse: Option<SseParser>,
    /// The stream's end, as far as it is known: whether `[DONE]` came and whether the last
    /// event was an error event (see [`StreamEnd`]).
    end: StreamEnd,
}

/// How a passed-through stream ended, to close a truncated one like every other provider's
/// stream: an OpenAI error event, then `data: [DONE]`, once. Forwarded chunks are not parsed
/// (the hot path): only their last [`TAIL`] bytes are kept and read once, at the end.
#[derive(Default)]
struct StreamEnd {
    /// The last bytes of the stream (forwarded chunks only).
    tail: Vec<u8>,
    /// (Parsed streams) `data: [DONE]` came.
    done: bool,
    /// (Parsed streams) the last event was an error event.
    last_was_error: bool,
    /// This translator ended the stream itself (`[DONE]` written): everything after is dropped.
    closed: bool,
}

/// The forwarded stream's last bytes kept to see how it ended: `data: [DONE]` and an error
/// event (OpenAI's are about 200 bytes) fit.
const TAIL: usize = 512;

impl StreamEnd {
    /// Keeps the last [`TAIL`] bytes: at most `TAIL` bytes copied per chunk.
    fn remember(&mut self, chunk: &[u8]) {
        if chunk.len() >= TAIL {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - TAIL..]);
        } else {
            let over = (self.tail.len() + chunk.len()).saturating_sub(TAIL);
            self.tail.drain(..over); // (under TAIL bytes moved)
            self.tail.extend_from_slice(chunk);
        }
    }

    /// The forwarded stream's last event, judged from its tail: `[DONE]`, an error event
    /// (`data: {"error":...}`), or anything else.
    fn judge_tail(&mut self) {
        let t = self.tail.trim_ascii_end();
        let last = match memchr::memmem::rfind(t, b"\n\n")
            .or_else(|| memchr::memmem::rfind(t, b"\r\n\r\n"))
        {
            Some(at) => &t[at..],
            None => t,
        };
        let last = last.trim_ascii_start();
        let data = last.strip_prefix(b"data:").map(<[u8]>::trim_ascii);
        self.done = data == Some(b"[DONE]".as_slice());
        self.last_was_error = data.is_some_and(|d| d.starts_with(b"{\"error\""));
    }
}

impl OpenAiChat {
    /// The same pass-through for `/v1/embeddings`.
    pub fn embeddings() -> Self {
        OpenAiChat {
            embeddings: true,
            ..Self::default()
        }
    }
}

impl ChatTranslator for OpenAiChat {
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        let env = call.envelope;
        let p = call.provider;
        self.provider = p.name.clone();
        self.stream = env.stream;

        // Fields the provider refuses: 400, or dropped when the provider says `drop_params`.
        let mut dropped: Vec<&str> = Vec::new();
        for &field in p.unsupported {
            if let Some(raw) = env.field(field) {
                if presets::is_set(field, raw.get()) {
                    if !p.drop_params {
                        return Err(GatewayError::invalid_param(
                            field,
                            format!(
                                "`{field}` is not supported by provider `{}` ({}); set \
                                 `drop_params: true` on the provider to drop it instead",
                                p.name, p.type_name
                            ),
                        )
                        .with_code("unsupported_parameter"));
                    }
                    dropped.push(field);
                }
            }
        }
        let renamed = p.renames.iter().any(|(from, _)| env.field(from).is_some());

        // New `stream_options` value, or one to append, when the gateway wants stream usage.
        let mut stream_options: Option<String> = None;
        if env.stream && call.want_stream_usage {
            self.sse = Some(SseParser::new());
            if !env.include_usage {
                self.strip_usage_chunk = true;
                stream_options = Some(match env.stream_options_span {
                    Some(span) => {
                        // Keep the client's other stream options.
                        let raw =
                            std::str::from_utf8(&call.raw[span.start..span.end]).map_err(|_| {
                                GatewayError::invalid_param("stream_options", "not valid UTF-8")
                            })?;
                        let mut obj: serde_json::Map<String, serde_json::Value> =
                            serde_json::from_str(raw).map_err(|e| {
                                GatewayError::invalid_param(
                                    "stream_options",
                                    format!("`stream_options` must be an object: {e}"),
                                )
                            })?;
                        obj.insert("include_usage".into(), serde_json::Value::Bool(true));
                        serde_json::to_string(&obj).map_err(|e| {
                            GatewayError::new(500, "api_error", format!("serialising: {e}"))
                        })?
                    }
                    None => "{\"include_usage\":true}".to_string(),
                });
            }
        }

        let body = if dropped.is_empty() && !renamed {
            splice(call, stream_options)
        } else {
            Some(rebuild(call, &dropped, stream_options))
        };

        let (headers, remove_headers) = auth_headers(p);
        Ok(ProviderRequest {
            path: api_path(
                p,
                if self.embeddings {
                    "embeddings"
                } else {
                    "chat/completions"
                },
                call.upstream_model,
            ),
            headers,
            remove_headers,
            body,
        })
    }

    fn response_passes_through(&self) -> bool {
        // Only the usage is read, from the end of the answer.
        true
    }

    fn response(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        #[derive(Deserialize)]
        struct WithUsage {
            usage: Option<OpenAiUsage>,
        }
        self.usage = match usage_at_tail(body) {
            Some(u) => Some(u),
            None => serde_json::from_slice::<WithUsage>(body)
                .ok()
                .and_then(|w| w.usage.map(OpenAiUsage::into_usage)),
        };
        Ok(None)
    }

    /// Forwards the stream (unparsed unless usage is wanted). A stream that ends without
    /// `[DONE]` (the provider dropped it) is closed like every other provider's: an OpenAI error
    /// event (only `[DONE]` when the provider's last event already was one), then
    /// `data: [DONE]`, once. A parsed stream whose line or event passes the SSE parser's caps is
    /// closed the same way at once (`upstream_event_too_large`), and nothing after goes out.
    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) -> bool {
        if self.end.closed {
            return true; // (the stream was ended here: nothing after it)
        }
        let Some(parser) = self.sse.as_mut() else {
            if !self.stream || self.embeddings {
                return false;
            }
            // The hot path: forwarded as it is, only its tail kept.
            self.end.remember(chunk);
            if !end_of_stream {
                return false;
            }
            self.end.judge_tail();
            if self.end.done {
                return false;
            }
            out.extend_from_slice(chunk);
            self.close_truncated(out);
            return true;
        };
        let strip = self.strip_usage_chunk;
        let mut usage = None;
        let (mut done, mut last_was_error) = (self.end.done, self.end.last_was_error);
        let mut on_event = |ev: crate::codec::sse::SseEvent| {
            // Cheap tests first: only events that may carry usage are parsed.
            let mut keep = true;
            if !usage_is_null(ev.data) && memchr::memmem::find(ev.data, b"\"usage\"").is_some() {
                if let Ok(c) = serde_json::from_slice::<UsageChunk>(ev.data) {
                    if let Some(u) = c.usage {
                        usage = Some(u.into_usage());
                        if strip && c.choices.is_empty() {
                            keep = false;
                        }
                    }
                }
            }
            if ev.data.len() <= 8 && ev.data.trim_ascii() == b"[DONE]" {
                done = true;
            }
            last_was_error = ev.data.starts_with(b"{\"error\"");
            if keep && strip {
                // The stream is re-framed event by event (only whole events go out).
                if let Some(name) = &ev.event {
                    out.extend_from_slice(b"event: ");
                    out.extend_from_slice(name.as_bytes());
                    out.push(b'\n');
                }
                crate::codec::sse::write_data(out, ev.data);
            }
        };
        parser.feed(chunk, &mut on_event);
        if end_of_stream {
            parser.finish(&mut on_event);
        }
        let overflow = parser.error();
        if usage.is_some() {
            self.usage = usage;
        }
        (self.end.done, self.end.last_was_error) = (done, last_was_error);
        if let Some(e) = overflow {
            if !strip {
                // The chunk went out unparsed, ending inside the long line: end that line.
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\n\n");
            }
            let e = super::openai_chunks::sse_too_large(&self.provider, e);
            out.extend_from_slice(&e.sse_event());
            out.extend_from_slice(super::openai_chunks::DONE);
            self.end.closed = true;
            self.sse = None;
            return true;
        }
        if end_of_stream && !self.end.done {
            if !strip {
                out.extend_from_slice(chunk);
            }
            self.close_truncated(out);
            return true;
        }
        strip
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        openai_error(&self.provider, status, body)
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

impl OpenAiChat {
    /// The stream ended without `[DONE]`: an error event (unless the provider's last event was
    /// one), then `[DONE]`. The usage read so far stays counted.
    fn close_truncated(&mut self, out: &mut Vec<u8>) {
        if !self.end.last_was_error {
            let e = GatewayError::new(
                502,
                "api_error",
                format!(
                    "{} stream ended without its final DONE event",
                    self.provider
                ),
            )
            .with_code("upstream_stream_error");
            out.extend_from_slice(&e.sse_event());
        }
        out.extend_from_slice(super::openai_chunks::DONE);
        self.end.closed = true;
        self.sse = None;
    }
}

/// Whether a chunk ends with `"usage":null}`: with `stream_options.include_usage` (which the
/// gateway adds to count tokens) OpenAI puts that on every chunk but the last, so most chunks
/// need no parse at all. (Only the top-level object can end that way: a nested object's end is
/// followed by the top level's `}`.)
fn usage_is_null(data: &[u8]) -> bool {
    data.trim_ascii_end().ends_with(b"\"usage\":null}")
}

/// `usage` is the last field of an OpenAI answer: read it from its last `"usage":` key instead
/// of parsing the whole answer (the key cannot occur unescaped inside a string). `None` sends
/// the caller to a full parse.
fn usage_at_tail(body: &[u8]) -> Option<Usage> {
    let at = memchr::memmem::rfind(body, b"\"usage\"")?;
    let rest = body.get(at + 7..)?;
    let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    if rest[colon] != b':' {
        return None;
    }
    let value = rest.get(colon + 1..)?;
    // Every pass-through answer comes here: a plain scan of the usage object first (serde's
    // struct visitor costs ~5,000 instructions on it); anything unusual goes to serde.
    if let Some(u) = scan_usage(value) {
        return Some(u.into_usage());
    }
    let mut de = serde_json::Deserializer::from_slice(value);
    let usage = OpenAiUsage::deserialize(&mut de).ok()?;
    Some(usage.into_usage())
}

/// The usage object at the start of `b` (after optional whitespace), read without serde. `None`
/// for anything it does not expect (escapes in keys, non-integer counts, malformed JSON): the
/// caller then parses it with serde.
fn scan_usage(b: &[u8]) -> Option<OpenAiUsage> {
    let mut s = Scan { b, i: 0 };
    let mut u = OpenAiUsage {
        prompt_tokens: 0,
        completion_tokens: 0,
        prompt_tokens_details: None,
        completion_tokens_details: None,
    };
    s.object(|s, key| {
        match key {
            b"prompt_tokens" => u.prompt_tokens = s.count()?.unwrap_or(0),
            b"completion_tokens" => u.completion_tokens = s.count()?.unwrap_or(0),
            b"prompt_tokens_details" if s.peek() == Some(b'{') => {
                let mut d = PromptDetails {
                    cached_tokens: None,
                    cache_write_tokens: None,
                };
                s.object(|s, k| {
                    match k {
                        b"cached_tokens" => d.cached_tokens = s.count()?,
                        b"cache_write_tokens" => d.cache_write_tokens = s.count()?,
                        _ => s.skip_value()?,
                    }
                    Some(())
                })?;
                u.prompt_tokens_details = Some(d);
            }
            b"completion_tokens_details" if s.peek() == Some(b'{') => {
                let mut d = CompletionDetails {
                    reasoning_tokens: None,
                };
                s.object(|s, k| {
                    match k {
                        b"reasoning_tokens" => d.reasoning_tokens = s.count()?,
                        _ => s.skip_value()?,
                    }
                    Some(())
                })?;
                u.completion_tokens_details = Some(d);
            }
            _ => s.skip_value()?,
        }
        Some(())
    })?;
    Some(u)
}

/// A forward-only JSON reader for [`scan_usage`].
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.i) {
            if !c.is_ascii_whitespace() {
                return Some(c);
            }
            self.i += 1;
        }
        None
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// `{ "key": value, ... }`, handing each key to `field` positioned at its value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.eat(b'"')?;
            let start = self.i;
            let len = self.b.get(start..)?.iter().position(|&c| c == b'"')?;
            let key = &self.b[start..start + len];
            if key.contains(&b'\\') {
                return None;
            }
            self.i = start + len + 1;
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A token count: a non-negative integer, or `null` (`Some(None)`).
    fn count(&mut self) -> Option<Option<u64>> {
        if self.peek()? == b'n' {
            return self.b[self.i..].starts_with(b"null").then(|| {
                self.i += 4;
                None
            });
        }
        let digits = self.b[self.i..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if digits == 0 || digits > 19 {
            return None;
        }
        let n = std::str::from_utf8(&self.b[self.i..self.i + digits])
            .ok()?
            .parse()
            .ok()?;
        self.i += digits;
        // `1.0` or `1e3` is not a count this reader takes.
        match self.b.get(self.i) {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(Some(n)),
        }
    }

    /// Steps over any value (strings with escapes, nested objects and arrays).
    fn skip_value(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    loop {
                        match *self.b.get(self.i)? {
                            b'\\' => self.i += 2,
                            b'"' => break,
                            _ => self.i += 1,
                        }
                    }
                    self.i += 1;
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.i += 1;
                }
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    self.i += 1;
                }
                b',' | b':' if depth > 0 => self.i += 1,
                _ => {
                    // A number or literal.
                    let n = self.b[self.i..]
                        .iter()
                        .take_while(|c| {
                            !matches!(c, b',' | b'}' | b']' | b':') && !c.is_ascii_whitespace()
                        })
                        .count();
                    if n == 0 {
                        return None;
                    }
                    self.i += n;
                }
            }
            if depth == 0 {
                return Some(());
            }
        }
    }
}

/// The provider's error (OpenAI's `{"error":{...}}`, or anything else) as the client's error.
fn openai_error(provider: &str, status: u16, body: &[u8]) -> GatewayError {
    #[derive(Deserialize)]
    struct Envelope {
        error: Option<ErrBody>,
    }
    #[derive(Deserialize)]
    struct ErrBody {
        message: Option<String>,
        code: Option<serde_json::Value>,
        /// The provider's own pointer at the bad field (OpenAI checks the messages the gateway
        /// passes through as they are), kept for the client.
        param: Option<serde_json::Value>,
    }
    let parsed = serde_json::from_slice::<Envelope>(body)
        .ok()
        .and_then(|e| e.error);
    let (message, code, param) = match parsed {
        Some(e) => (
            e.message.unwrap_or_default(),
            e.code.and_then(|c| match c {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }),
            match e.param {
                Some(serde_json::Value::String(p)) if !p.is_empty() => Some(p),
                _ => None,
            },
        ),
        None => (
            String::from_utf8_lossy(truncate(body, 512)).into_owned(),
            None,
            None,
        ),
    };
    let mut e = provider_error(provider, status, &message, code.as_deref());
    e.param = param;
    e
}

/// The auth headers to set and the client headers to remove, for an OpenAI-protocol provider.
pub(crate) fn auth_headers(p: &Provider) -> (Vec<(String, String)>, Vec<&'static str>) {
    let mut headers = Vec::with_capacity(2 + p.headers.len());
    let mut remove = Vec::new();
    if let Some(key) = &p.api_key {
        match p.auth {
            AuthStyle::Bearer => {
                headers.push(("authorization".to_string(), format!("Bearer {key}")))
            }
            AuthStyle::Header(name) => {
                headers.push((name.to_string(), key.clone()));
                remove.push("authorization");
            }
        }
    }
    headers.extend(p.headers.iter().cloned());
    (headers, remove)
}

/// The provider's path for an OpenAI endpoint (`chat/completions`, `embeddings`, ...).
/// The provider's path template with `{endpoint}` and `{model}` filled in (one pass: this runs
/// for every request).
fn api_path(p: &Provider, endpoint: &str, model: &str) -> String {
    let mut out = String::with_capacity(p.path_template.len() + endpoint.len() + model.len());
    let mut rest = p.path_template.as_str();
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("{endpoint}") {
            out.push_str(endpoint);
            rest = r;
        } else if let Some(r) = rest.strip_prefix("{model}") {
            percent_encode_into(&mut out, model);
            rest = r;
        } else {
            out.push('{');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Other OpenAI endpoints (`responses`, `images/generations`, `audio/transcriptions`, ...): the
/// body goes through with only the model name spliced in (JSON or multipart alike), and the
/// answer comes back untouched; only errors are rewritten.
pub struct OpenAiPassthrough {
    endpoint: &'static str,
    provider: String,
    /// Usage read from the answer (its tail) or the stream's events.
    usage: Option<Usage>,
    /// A streamed answer's events, scanned for usage (the bytes go through unchanged).
    sse: Option<crate::codec::sse::SseParser>,
}

impl OpenAiPassthrough {
    pub fn new(endpoint: &'static str) -> Self {
        OpenAiPassthrough {
            endpoint,
            provider: String::new(),
            usage: None,
            sse: None,
        }
    }
}

/// Usage as the other OpenAI endpoints report it: `prompt_tokens`/`completion_tokens`
/// (completions) or `input_tokens`/`output_tokens` with their details (Responses API, image
/// generation, transcriptions). Source: OpenAI API reference, the `usage` object of each
/// endpoint (docs/providers.md §1).
#[derive(Deserialize, Default)]
struct EndpointUsage {
    #[serde(default, alias = "input_tokens")]
    prompt_tokens: u64,
    #[serde(default, alias = "output_tokens")]
    completion_tokens: u64,
    #[serde(default, alias = "input_tokens_details")]
    prompt_tokens_details: Option<EndpointDetails>,
    #[serde(default, alias = "output_tokens_details")]
    completion_tokens_details: Option<EndpointDetails>,
}

#[derive(Deserialize, Default)]
struct EndpointDetails {
    #[serde(default)]
    cached_tokens: u64,
    #[serde(default)]
    reasoning_tokens: u64,
}

impl EndpointUsage {
    fn into_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: self
                .prompt_tokens_details
                .as_ref()
                .map_or(0, |d| d.cached_tokens),
            reasoning_tokens: self
                .completion_tokens_details
                .as_ref()
                .map_or(0, |d| d.reasoning_tokens),
            ..Default::default()
        }
    }
}

/// The last `"usage": {...}` object in `b` (an answer's tail, or one event), any endpoint's
/// shape; `None` when there is none or it is not an object with token counts.
fn endpoint_usage(b: &[u8]) -> Option<Usage> {
    let mut from = b.len();
    // A few tries: the last `"usage"` may sit inside a string or be `null`.
    for _ in 0..4 {
        let at = memchr::memmem::rfind(&b[..from], b"\"usage\"")?;
        from = at;
        let rest = &b[at + 7..];
        let colon = rest.iter().position(|c| !c.is_ascii_whitespace())?;
        if rest[colon] != b':' {
            continue;
        }
        let mut de = serde_json::Deserializer::from_slice(&rest[colon + 1..]);
        if let Ok(u) = EndpointUsage::deserialize(&mut de) {
            if u.prompt_tokens > 0 || u.completion_tokens > 0 {
                return Some(u.into_usage());
            }
        }
    }
    None
}

impl ChatTranslator for OpenAiPassthrough {
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        let p = call.provider;
        let env = call.envelope;
        self.provider = p.name.clone();
        let body = (env.model != call.upstream_model).then(|| {
            // A multipart field holds the bare name; a JSON field a string literal.
            let json = call.raw.get(env.model_span.start) == Some(&b'"');
            let value = if json {
                json_string(call.upstream_model)
            } else {
                call.upstream_model.to_string()
            };
            let mut out = Vec::with_capacity(call.raw.len() + value.len());
            out.extend_from_slice(&call.raw[..env.model_span.start]);
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(&call.raw[env.model_span.end..]);
            out
        });
        let (headers, remove_headers) = auth_headers(p);
        Ok(ProviderRequest {
            path: api_path(p, self.endpoint, call.upstream_model),
            headers,
            remove_headers,
            body,
        })
    }

    fn response_passes_through(&self) -> bool {
        true
    }

    fn response(&mut self, tail: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        self.usage = endpoint_usage(tail);
        Ok(None)
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool, _out: &mut Vec<u8>) -> bool {
        // Forwarded unchanged; events naming `usage` are read (completions' last chunk with
        // include_usage, the Responses API's `response.completed`).
        let parser = self
            .sse
            .get_or_insert_with(crate::codec::sse::SseParser::new);
        let mut found = None;
        parser.feed(chunk, &mut |ev: crate::codec::sse::SseEvent| {
            if memchr::memmem::find(ev.data, b"\"usage\"").is_some() {
                if let Some(u) = endpoint_usage(ev.data) {
                    found = Some(u);
                }
            }
        });
        if end_of_stream {
            parser.finish(&mut |ev: crate::codec::sse::SseEvent| {
                if let Some(u) = endpoint_usage(ev.data) {
                    found = Some(u);
                }
            });
        }
        if found.is_some() {
            self.usage = found;
        }
        false
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        openai_error(&self.provider, status, body)
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// The client's body with only the model name and `stream_options` changed, spliced in place
/// (the rest is not re-serialised). `None` when nothing changes.
fn splice(call: &ChatCall<'_>, stream_options: Option<String>) -> Option<Vec<u8>> {
    let env = call.envelope;
    // (start, end, replacement), in body order.
    let mut splices: Vec<(usize, usize, String)> = Vec::new();
    if env.model != call.upstream_model {
        splices.push((
            env.model_span.start,
            env.model_span.end,
            json_string(call.upstream_model),
        ));
    }
    if let Some(value) = stream_options {
        match env.stream_options_span {
            Some(span) => splices.push((span.start, span.end, value)),
            None => splices.push((
                env.close_brace,
                env.close_brace,
                format!(",\"stream_options\":{value}"),
            )),
        }
    }
    if splices.is_empty() {
        return None;
    }
    splices.sort_by_key(|s| s.0);
    let added: usize = splices.iter().map(|s| s.2.len()).sum();
    let mut out = Vec::with_capacity(call.raw.len() + added);
    let mut pos = 0;
    for (start, end, text) in &splices {
        out.extend_from_slice(&call.raw[pos..*start]);
        out.extend_from_slice(text.as_bytes());
        pos = *end;
    }
    out.extend_from_slice(&call.raw[pos..]);
    Some(out)
}

/// The body rebuilt field by field from the raw values (no value is re-serialised), for
/// providers that need fields dropped or renamed.
fn rebuild(call: &ChatCall<'_>, dropped: &[&str], stream_options: Option<String>) -> Vec<u8> {
    let env = call.envelope;
    let renames = call.provider.renames;
    let mut out = Vec::with_capacity(call.raw.len() + 64);
    out.push(b'{');
    let mut first = true;
    let mut push = |out: &mut Vec<u8>, key: &str, value: &[u8]| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(json_string(key).as_bytes());
        out.push(b':');
        out.extend_from_slice(value);
    };
    let mut wrote_stream_options = false;
    for (key, raw) in &env.fields {
        let key = key.as_ref();
        if dropped.contains(&key) {
            continue;
        }
        let name = renames
            .iter()
            .find(|(from, _)| *from == key)
            .map(|(_, to)| *to)
            .unwrap_or(key);
        match key {
            "model" => push(&mut out, name, json_string(call.upstream_model).as_bytes()),
            "stream_options" if stream_options.is_some() => {
                if let Some(v) = &stream_options {
                    push(&mut out, name, v.as_bytes());
                }
                wrote_stream_options = true;
            }
            _ => push(&mut out, name, raw.get().as_bytes()),
        }
    }
    if let (Some(v), false) = (&stream_options, wrote_stream_options) {
        push(&mut out, "stream_options", v.as_bytes());
    }
    out.push(b'}');
    out
}

/// Percent-encodes a path segment (RFC 3986 unreserved characters stay).
#[cfg(test)]
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    percent_encode_into(&mut out, s);
    out
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn percent_encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

fn truncate(b: &[u8], n: usize) -> &[u8] {
    &b[..b.len().min(n)]
}

#[derive(Deserialize)]
struct UsageChunk {
    #[serde(default)]
    choices: Vec<serde::de::IgnoredAny>,
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
pub(crate) struct OpenAiUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    prompt_tokens_details: Option<PromptDetails>,
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
    cache_write_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    reasoning_tokens: Option<u64>,
}

impl OpenAiUsage {
    pub(crate) fn into_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_creation_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cache_write_tokens)
                .unwrap_or(0),
            reasoning_tokens: self
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_api::openai::parse_chat_envelope;
    use crate::config::{Config, ProcessEnv};

    fn config() -> Config {
        Config::parse(
            br#"{"providers":{"oai":{"type":"openai","cluster":"c","api_key":"sk-test","headers":{"openai-organization":"org"}}},
                 "models":[{"name":"fast","deployments":[{"provider":"oai","model":"gpt-4o-mini"}]}]}"#,
            &ProcessEnv,
        )
        .unwrap()
    }

    fn translate(body: &str, want_usage: bool) -> (OpenAiChat, ProviderRequest) {
        let cfg = config();
        let env = parse_chat_envelope(body.as_bytes()).unwrap();
        let mut t = OpenAiChat::default();
        let req = t
            .request(&ChatCall {
                raw: body.as_bytes(),
                envelope: &env,
                provider: &cfg.providers[0],
                upstream_model: "gpt-4o-mini",
                now_unix: 0,
                want_stream_usage: want_usage,
            })
            .unwrap();
        (t, req)
    }

    #[test]
    fn same_model_leaves_body_untouched() {
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
        let (_, req) = translate(body, true);
        assert_eq!(req.body, None);
        assert_eq!(req.path, "/v1/chat/completions");
        assert!(req
            .headers
            .contains(&("authorization".into(), "Bearer sk-test".into())));
        assert!(req
            .headers
            .contains(&("openai-organization".into(), "org".into())));
    }

    #[test]
    fn model_is_spliced_and_nothing_else_changes() {
        let body = r#"{ "model" : "fast", "messages":[{"role":"user","content":"fast \"x\""}], "temperature": 0.70 }"#;
        let (_, req) = translate(body, true);
        let out = String::from_utf8(req.body.unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{ "model" : "gpt-4o-mini", "messages":[{"role":"user","content":"fast \"x\""}], "temperature": 0.70 }"#
        );
    }

    #[test]
    fn include_usage_injected_when_missing_and_merged_when_present() {
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}],"stream":true}"#;
        let (t, req) = translate(body, true);
        let v: serde_json::Value = serde_json::from_slice(&req.body.unwrap()).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert!(t.strip_usage_chunk);

        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_obfuscation":false}}"#;
        let (_, req) = translate(body, true);
        let v: serde_json::Value = serde_json::from_slice(&req.body.unwrap()).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["include_obfuscation"], false);

        // Client asked itself: nothing to inject or strip.
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_usage":true}}"#;
        let (t, req) = translate(body, true);
        assert_eq!(req.body, None);
        assert!(!t.strip_usage_chunk);

        // Gateway does not want usage: untouched.
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}],"stream":true}"#;
        let (_, req) = translate(body, false);
        assert_eq!(req.body, None);
    }

    const STREAM: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n\
data: [DONE]\n\n";

    /// Feeds `s` in two pieces cut at `cut` (the second with end_of_stream) and returns what the
    /// client gets: the chunk itself when the translator forwards it.
    fn client_sees(t: &mut OpenAiChat, s: &[u8], cut: usize) -> String {
        let mut got = Vec::new();
        for (piece, end) in [(&s[..cut], false), (&s[cut..], true)] {
            let mut out = Vec::new();
            if t.stream_chunk(piece, end, &mut out) {
                got.extend_from_slice(&out);
            } else {
                assert!(out.is_empty());
                got.extend_from_slice(piece);
            }
        }
        String::from_utf8(got).unwrap()
    }

    const NO_USAGE: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}],"stream":true}"#;
    const WITH_USAGE: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_usage":true}}"#;

    /// Item 9: a stream the provider dropped before `[DONE]` ends with an error event and
    /// `[DONE]`, once, whether the stream is forwarded unparsed, parsed for usage, or re-framed
    /// (the gateway's own usage chunk stripped); a complete one is untouched.
    #[test]
    fn a_stream_cut_before_done_ends_with_an_error_and_done() {
        let cut_stream = STREAM.strip_suffix("data: [DONE]\n\n").unwrap();
        for (body, want_usage) in [(NO_USAGE, false), (WITH_USAGE, true), (NO_USAGE, true)] {
            for at in 0..=cut_stream.len() {
                let (mut t, _) = translate(body, want_usage);
                let got = client_sees(&mut t, cut_stream.as_bytes(), at);
                let (head, tail) = got.rsplit_once("data: {\"error\":").expect(&got);
                assert!(
                    tail.contains("stream ended without its final DONE event"),
                    "{got}"
                );
                assert!(tail.ends_with("}\n\ndata: [DONE]\n\n"), "{got}");
                assert_eq!(got.matches("[DONE]").count(), 1);
                assert_eq!(got.matches("\"error\"").count(), 1);
                assert!(head.contains("\"content\":\"Hi\""));
                if want_usage {
                    // The usage chunk came before the cut: still counted.
                    assert_eq!(t.usage().unwrap().total_tokens(), 11, "{at}");
                }
                let mut out = Vec::new();
                assert!(t.stream_chunk(b"data: late\n\n", true, &mut out));
                assert!(out.is_empty(), "nothing after [DONE]");
            }
            // Complete: untouched.
            for at in 0..=STREAM.len() {
                let (mut t, _) = translate(body, want_usage);
                let got = client_sees(&mut t, STREAM.as_bytes(), at);
                assert!(!got.contains("\"error\""), "{got}");
                assert!(got.ends_with("data: [DONE]\n\n"));
            }
        }
        // CRLF framing and trailing blank lines still count as [DONE].
        let (mut t, _) = translate(NO_USAGE, false);
        let crlf = STREAM.replace("\n", "\r\n") + "\r\n";
        assert!(!client_sees(&mut t, crlf.as_bytes(), 5).contains("\"error\""));
        // An empty body is cut too.
        let (mut t, _) = translate(NO_USAGE, false);
        assert!(client_sees(&mut t, b"", 0).ends_with("data: [DONE]\n\n"));
    }

    /// The provider's own error event, then the end of the body (what OpenAI does): only
    /// `[DONE]` is added.
    #[test]
    fn a_provider_error_event_then_the_end_gets_only_done() {
        let s = "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";
        for (body, want_usage) in [(NO_USAGE, false), (WITH_USAGE, true), (NO_USAGE, true)] {
            for at in 0..=s.len() {
                let (mut t, _) = translate(body, want_usage);
                let got = client_sees(&mut t, s.as_bytes(), at);
                assert!(
                    got.ends_with("\"code\":null}}\n\ndata: [DONE]\n\n"),
                    "{got}"
                );
                assert_eq!(got.matches("\"error\"").count(), 1, "{got}");
            }
        }
    }

    /// A parsed stream with an endless line: one `upstream_event_too_large` error event and
    /// `[DONE]`, then nothing.
    #[test]
    fn a_parsed_stream_past_the_sse_caps_is_ended() {
        for (body, strip) in [(WITH_USAGE, false), (NO_USAGE, true)] {
            let (mut t, _) = translate(body, true);
            let mut got = Vec::new();
            let piece = vec![b'x'; 64 * 1024];
            let mut out = Vec::new();
            assert_eq!(
                t.stream_chunk(b"data: {}\n\ndata: ", false, &mut out),
                strip
            );
            let mut n = 0;
            loop {
                let mut out = Vec::new();
                let replaced = t.stream_chunk(&piece, false, &mut out);
                if replaced && !out.is_empty() {
                    got.extend_from_slice(&out);
                    break;
                }
                assert!(out.is_empty());
                n += 1;
                assert!(n * piece.len() <= crate::codec::sse::MAX_LINE, "{strip}");
            }
            let got = String::from_utf8(got).unwrap();
            assert!(got.contains("upstream_event_too_large"), "{got}");
            assert!(got.ends_with("data: [DONE]\n\n"));
            let mut out = Vec::new();
            assert!(t.stream_chunk(b"\n\ndata: [DONE]\n\n", true, &mut out));
            assert!(out.is_empty());
        }
    }

    #[test]
    fn injected_usage_chunk_is_removed_at_every_split() {
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}],"stream":true}"#;
        let s = STREAM.as_bytes();
        for cut in 0..=s.len() {
            let (mut t, _) = translate(body, true);
            let mut out = Vec::new();
            assert!(t.stream_chunk(&s[..cut], false, &mut out));
            assert!(t.stream_chunk(&s[cut..], true, &mut out));
            let out = String::from_utf8(out).unwrap();
            assert!(!out.contains("\"usage\":{"), "cut {cut}");
            assert_eq!(out.matches("data: ").count(), 3, "cut {cut}");
            assert!(out.ends_with("data: [DONE]\n\n"));
            let u = t.usage().unwrap();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
                (9, 2, 4)
            );
        }
    }

    #[test]
    fn only_a_top_level_null_usage_skips_the_parse() {
        for (data, null) in [
            (
                r#"{"id":"c","choices":[{"delta":{"content":"x"}}],"usage":null}"#,
                true,
            ),
            ("{\"choices\":[],\"usage\":null} \n", true),
            (r#"{"choices":[],"usage":{"prompt_tokens":1}}"#, false),
            (r#"{"usage":null,"choices":[]}"#, false),
            (r#"{"choices":[{"x":{"usage":null}}]}"#, false),
            (r#"{"choices":[],"usage": null}"#, false),
            ("[DONE]", false),
        ] {
            assert_eq!(usage_is_null(data.as_bytes()), null, "{data}");
        }
    }

    #[test]
    fn usage_is_read_from_the_tail_or_by_a_full_parse() {
        let (mut t, _) = translate(
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}]}"#,
            true,
        );
        let body = br#"{"id":"x","choices":[{"message":{"content":"say "usage": {}"}}],"usage": {"prompt_tokens":5,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}"#;
        assert_eq!(usage_at_tail(body).map(|u| u.total_tokens()), Some(7));
        t.response(body).unwrap();
        assert_eq!(t.usage().unwrap().cached_tokens, 1);
        // usage first, then a field: the tail read still finds the only key.
        let body = br#"{"usage":{"prompt_tokens":3,"completion_tokens":1},"id":"x"}"#;
        t.response(body).unwrap();
        assert_eq!(t.usage().unwrap().total_tokens(), 4);
        // null usage or none at all: no usage.
        t.response(br#"{"id":"x","usage":null}"#).unwrap();
        assert_eq!(t.usage(), None);
        t.response(br#"{"id":"x"}"#).unwrap();
        assert_eq!(t.usage(), None);
    }

    #[test]
    fn client_requested_usage_passes_through_and_is_counted() {
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_usage":true}}"#;
        let (mut t, _) = translate(body, true);
        let mut out = Vec::new();
        assert!(!t.stream_chunk(STREAM.as_bytes(), true, &mut out));
        assert!(out.is_empty());
        assert_eq!(t.usage().unwrap().total_tokens(), 11);
    }

    fn translate_with(provider_json: &str, body: &str) -> Result<ProviderRequest, GatewayError> {
        let cfg = Config::parse(
            format!(
                r#"{{"providers":{{"p":{provider_json}}},"models":[{{"name":"m","deployments":[{{"provider":"p","model":"dep-1"}}]}}]}}"#
            )
            .as_bytes(),
            &ProcessEnv,
        )
        .unwrap();
        let env = parse_chat_envelope(body.as_bytes()).unwrap();
        OpenAiChat::default().request(&ChatCall {
            raw: body.as_bytes(),
            envelope: &env,
            provider: &cfg.providers[0],
            upstream_model: "dep-1",
            now_unix: 0,
            want_stream_usage: true,
        })
    }

    #[test]
    fn azure_classic_and_v1_paths_and_api_key_header() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#;
        let req = translate_with(
            r#"{"type":"azure","cluster":"c","host":"res.openai.azure.com","api_key":"az"}"#,
            body,
        )
        .unwrap();
        assert_eq!(
            req.path,
            "/openai/deployments/dep-1/chat/completions?api-version=2024-10-21"
        );
        assert!(req.headers.contains(&("api-key".into(), "az".into())));
        assert!(!req.headers.iter().any(|(k, _)| k == "authorization"));
        assert_eq!(req.remove_headers, vec!["authorization"]);
        let req = translate_with(
            r#"{"type":"azure","cluster":"c","api_version":"v1","api_key":"az"}"#,
            body,
        )
        .unwrap();
        assert_eq!(req.path, "/openai/v1/chat/completions");
        let v: serde_json::Value = serde_json::from_slice(&req.body.unwrap()).unwrap();
        assert_eq!(v["model"], "dep-1");
    }

    #[test]
    fn usage_scan_agrees_with_serde() {
        let cases: &[&[u8]] = &[
            br#"{"prompt_tokens":250,"completion_tokens":9,"total_tokens":259}"#,
            br#" { "prompt_tokens" : 5 , "completion_tokens":2, "prompt_tokens_details": {"cached_tokens": 1, "audio_tokens": 0, "cache_write_tokens": 3}, "completion_tokens_details": {"reasoning_tokens": 4, "accepted_prediction_tokens": 0}} , "system_fingerprint": "fp"}"#,
            br#"{"prompt_tokens_details":null,"completion_tokens_details":{"reasoning_tokens":null},"prompt_tokens":1}"#,
            br#"{"completion_tokens":7,"extra":{"a":[1,{"b":"x\"}]"}],"c":true},"prompt_tokens":3}"#,
            br#"{}"#,
        ];
        for c in cases {
            let fast = scan_usage(c).expect("scanned").into_usage();
            let slow = OpenAiUsage::deserialize(&mut serde_json::Deserializer::from_slice(c))
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(c)))
                .into_usage();
            assert_eq!(
                (
                    fast.prompt_tokens,
                    fast.completion_tokens,
                    fast.cached_tokens
                ),
                (
                    slow.prompt_tokens,
                    slow.completion_tokens,
                    slow.cached_tokens
                ),
                "{}",
                String::from_utf8_lossy(c)
            );
            assert_eq!(
                (fast.cache_creation_tokens, fast.reasoning_tokens),
                (slow.cache_creation_tokens, slow.reasoning_tokens)
            );
        }
        // What the scan does not take goes to serde (usage_at_tail still answers).
        for odd in [
            &br#"{"prompt_tokens":1.0,"completion_tokens":2}"#[..],
            br#"{"prompt\u005ftokens":1}"#,
            br#"{"prompt_tokens":-1}"#,
            br#"{"prompt_tokens":1"#,
            br#"["#,
        ] {
            assert!(
                scan_usage(odd).is_none(),
                "{}",
                String::from_utf8_lossy(odd)
            );
        }
        let body = br#"{"usage":{"prompt\u005ftokens":5,"completion_tokens":2}}"#;
        assert_eq!(usage_at_tail(body).map(|u| u.prompt_tokens), Some(5));
    }

    #[test]
    fn model_in_path_is_percent_encoded() {
        assert_eq!(percent_encode("gpt-4o.mini_x~"), "gpt-4o.mini_x~");
        assert_eq!(percent_encode("a/b c?"), "a%2Fb%20c%3F");
    }

    #[test]
    fn preset_supplies_host_path_and_refuses_unsupported_fields() {
        let cfg = Config::parse(
            br#"{"providers":{"g":{"type":"groq","cluster":"groq","api_key":"k"}},"models":[{"name":"m","deployments":[{"provider":"g"}]}]}"#,
            &ProcessEnv,
        )
        .unwrap();
        let g = &cfg.providers[0];
        assert_eq!(g.host.as_deref(), Some("api.groq.com"));
        assert_eq!(g.path_template, "/openai/v1/{endpoint}");
        assert_eq!(cfg.models[0].owned_by, "groq");

        let groq = r#"{"type":"groq","cluster":"c","api_key":"k"}"#;
        let ok = translate_with(
            groq,
            r#"{"model":"m","messages":[{"role":"user"}],"n":1,"logprobs":false}"#,
        );
        assert!(ok.is_ok());
        let e = translate_with(
            groq,
            r#"{"model":"m","messages":[{"role":"user"}],"logprobs":true}"#,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert_eq!(e.param.as_deref(), Some("logprobs"));
        assert!(e.message.contains("drop_params"));

        let dropping = r#"{"type":"groq","cluster":"c","drop_params":true}"#;
        let req = translate_with(
            dropping,
            r#"{"model":"m","messages":[{"role":"user"}],"logprobs":true,"top_logprobs":2,"temperature":0.5,"stream":true}"#,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&req.body.unwrap()).unwrap();
        assert!(v.get("logprobs").is_none() && v.get("top_logprobs").is_none());
        assert_eq!(v["temperature"], 0.5);
        assert_eq!(v["model"], "dep-1");
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn preset_renames_fields() {
        let req = translate_with(
            r#"{"type":"mistral","cluster":"c"}"#,
            r#"{"model":"m","messages":[{"role":"user"}],"seed":42}"#,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&req.body.unwrap()).unwrap();
        assert_eq!(v["random_seed"], 42);
        assert!(v.get("seed").is_none());
    }

    #[test]
    fn api_version_only_for_azure() {
        let e = Config::parse(
            br#"{"providers":{"p":{"type":"openai","cluster":"c","api_version":"v1"}},"models":[{"name":"m","deployments":[{"provider":"p"}]}]}"#,
            &ProcessEnv,
        )
        .unwrap_err();
        assert_eq!(e.path, "providers.p.api_version");
        let e = Config::parse(
            br#"{"providers":{"p":{"type":"azure","cluster":"c","api_version":"2024/10"}},"models":[{"name":"m","deployments":[{"provider":"p"}]}]}"#,
            &ProcessEnv,
        )
        .unwrap_err();
        assert_eq!(e.path, "providers.p.api_version");
    }

    #[test]
    fn error_keeps_provider_message_and_status() {
        let (t, _) = translate(
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}]}"#,
            true,
        );
        let e = t.error(
            429,
            br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(e.status, 429);
        assert_eq!(e.kind, "rate_limit_error");
        assert!(e.message.contains("oai") && e.message.contains("Rate limit reached"));
        assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(e.param, None);
        let e = t.error(
            400,
            br#"{"error":{"message":"Invalid value: 'wizard'.","type":"invalid_request_error","param":"messages[0].role","code":"invalid_value"}}"#,
        );
        assert_eq!(
            (e.status, e.param.as_deref()),
            (400, Some("messages[0].role"))
        );
        let e = t.error(400, br#"{"error":{"message":"m","param":{"odd":1}}}"#);
        assert_eq!((e.param, e.message.contains(": m")), (None, true));
        let e = t.error(500, b"<html>oops</html>");
        assert_eq!(e.status, 500);
        assert!(e.message.contains("<html>oops</html>"));
    }
}
