//! Incremental Server-Sent Events parsing, safe at any chunk boundary.
//!
//! Upstream body chunks cut events anywhere (mid-line, mid-UTF-8 sequence, between `\r` and `\n`).
//! The parser keeps the unfinished tail and yields only whole events. It follows the WHATWG
//! event-stream rules: `\n`, `\r\n` and `\r` end lines, `:` lines are comments, several `data:`
//! lines join with `\n`, a blank line dispatches the event.
//!
//! What a provider can make the parser hold is capped: one line at [`MAX_LINE`], one event's
//! joined `data:` at [`MAX_EVENT`]. Past a cap the parser stops for good ([`SseParser::error`]):
//! the translator ends the client's stream with an error event. The checks are per line and per
//! chunk, never per byte.

/// The longest line the parser reads (held across chunks or not): 1 MiB. Real events are a few
/// hundred bytes; the largest (a whole tool-call argument or a base64 image in one event) stay
/// far below it.
pub const MAX_LINE: usize = 1024 * 1024;

/// The most joined `data:` of one event (several `data:` lines): 1 MiB, as [`MAX_LINE`].
pub const MAX_EVENT: usize = 1024 * 1024;

/// Why the parser stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseError {
    /// A line longer than [`MAX_LINE`].
    LineTooLong,
    /// An event whose `data:` lines together exceed [`MAX_EVENT`].
    EventTooLarge,
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LineTooLong => write!(
                f,
                "an SSE line longer than the gateway's limit of {MAX_LINE} bytes"
            ),
            Self::EventTooLarge => write!(
                f,
                "an SSE event larger than the gateway's limit of {MAX_EVENT} bytes"
            ),
        }
    }
}

/// One dispatched event, borrowed from the parser's buffers (reused for every event: a stream of
/// small events allocates nothing per event). `data` is the joined `data:` lines as they came:
/// not checked as UTF-8, since a pass-through needs no check and a JSON parse does its own;
/// [`SseEvent::text`] for a string.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SseEvent<'a> {
    pub event: Option<&'a str>,
    pub data: &'a [u8],
}

impl<'a> SseEvent<'a> {
    /// `data` as text, invalid UTF-8 replaced (borrowed when it is valid).
    pub fn text(&self) -> std::borrow::Cow<'a, str> {
        String::from_utf8_lossy(self.data)
    }
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` starting the next chunk belongs to that line end.
    after_cr: bool,
    event: String,
    has_event: bool,
    data: Vec<u8>,
    has_data: bool,
    /// A cap was passed: nothing more is read or dispatched.
    error: Option<SseError>,
}

/// The current event's `event:` and first `data:` value while they are still slices of the chunk
/// being fed: an event whose lines all arrive in one chunk (nearly all of them) is dispatched
/// without copying them. Copied into the parser only when the chunk ends before the event does
/// or a second `data:` line has to be joined to the first.
#[derive(Default)]
struct Lent<'c> {
    event: Option<&'c str>,
    data: Option<&'c [u8]>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Why the parser stopped, once a line or an event passed its cap ([`MAX_LINE`],
    /// [`MAX_EVENT`]). The events before it were dispatched; none after it are.
    pub fn error(&self) -> Option<SseError> {
        self.error
    }

    /// Stops for good and frees what is held.
    #[cold]
    fn fail(&mut self, e: SseError) {
        self.error = Some(e);
        self.line = Vec::new();
        self.data = Vec::new();
        self.event = String::new();
        self.has_event = false;
        self.has_data = false;
    }

    /// Feeds bytes; calls `on_event` for each event completed by them. Nothing once
    /// [`SseParser::error`] is set.
    pub fn feed(&mut self, mut chunk: &[u8], on_event: &mut dyn FnMut(SseEvent)) {
        if chunk.is_empty() || self.error.is_some() {
            return; // (an empty chunk between `\r` and `\n` must not end the `\r\n` wait)
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        let mut lent = Lent::default();
        let mut start = 0;
        while let Some(off) = line_end(&chunk[start..]) {
            let line_end = start + off;
            let mut next = line_end + 1;
            if chunk[line_end] == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if self.line.len() + (line_end - start) > MAX_LINE {
                return self.fail(SseError::LineTooLong);
            }
            if self.line.is_empty() {
                self.process_line(&chunk[start..line_end], &mut lent, on_event);
            } else {
                // The rest of a line the previous chunk began (the first line of this chunk,
                // so nothing is lent yet).
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&chunk[start..line_end]);
                let mut from_line = Lent::default();
                self.process_line(&line, &mut from_line, on_event);
                self.keep(&mut from_line);
                line.clear();
                self.line = line;
            }
            if let Some(e) = self.error {
                // `process_line` failed (the data joined past MAX_EVENT): free what the line
                // path put back.
                return self.fail(e);
            }
            start = next;
        }
        if self.line.len() + (chunk.len() - start) > MAX_LINE {
            return self.fail(SseError::LineTooLong);
        }
        self.keep(&mut lent);
        self.line.extend_from_slice(&chunk[start..]);
    }

    /// At end of stream: an event not closed by a blank line is still dispatched (some providers,
    /// e.g. Gemini, close the connection right after the last `data:` line).
    pub fn finish(&mut self, on_event: &mut dyn FnMut(SseEvent)) {
        if self.error.is_some() {
            return;
        }
        let line = std::mem::take(&mut self.line);
        let mut lent = Lent::default();
        if !line.is_empty() {
            self.process_line(&line, &mut lent, on_event);
        }
        self.dispatch(&mut lent, on_event);
    }

    /// Bytes held back waiting for a line end (at most [`MAX_LINE`] + [`MAX_EVENT`]).
    pub fn pending_len(&self) -> usize {
        self.line.len() + self.data.len()
    }

    /// Copies what is still lent into the parser: the chunk it points into is going away.
    fn keep(&mut self, lent: &mut Lent<'_>) {
        if let Some(e) = lent.event.take() {
            self.event.clear();
            self.event.push_str(e);
        }
        if let Some(d) = lent.data.take() {
            self.data.extend_from_slice(d);
        }
    }

    fn process_line<'c>(
        &mut self,
        line: &'c [u8],
        lent: &mut Lent<'c>,
        on_event: &mut dyn FnMut(SseEvent),
    ) {
        if line.is_empty() {
            self.dispatch(lent, on_event);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&c| c == b':') {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if !self.has_data {
                    self.has_data = true;
                    lent.data = Some(value);
                    return;
                }
                let first = lent.data.map_or(0, <[u8]>::len);
                if self.data.len() + first + 1 + value.len() > MAX_EVENT {
                    return self.fail(SseError::EventTooLarge);
                }
                if let Some(first) = lent.data.take() {
                    self.data.extend_from_slice(first);
                }
                self.data.push(b'\n');
                self.data.extend_from_slice(value);
            }
            b"event" => {
                self.has_event = true;
                match std::str::from_utf8(value) {
                    Ok(v) => lent.event = Some(v),
                    Err(_) => {
                        lent.event = None;
                        self.event.clear();
                        self.event.push_str(&String::from_utf8_lossy(value));
                    }
                }
            }
            _ => {} // id, retry and unknown fields carry nothing a translator needs
        }
    }

    fn dispatch(&mut self, lent: &mut Lent<'_>, on_event: &mut dyn FnMut(SseEvent)) {
        if self.has_data {
            let event = match lent.event {
                Some(e) => Some(e),
                None => self.has_event.then_some(self.event.as_str()),
            };
            on_event(SseEvent {
                event,
                data: lent.data.unwrap_or(&self.data),
            });
        }
        *lent = Lent::default();
        self.event.clear();
        self.data.clear();
        self.has_event = false;
        self.has_data = false;
    }
}

/// The index of the first `\n` or `\r`, eight bytes per step (on wasm32, where `usize` is four
/// bytes, twice what a `usize`-wide search does).
fn line_end(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = b.chunks_exact(8);
    let mut at = 0;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w);
        let lf = x ^ (ONES * u64::from(b'\n'));
        let cr = x ^ (ONES * u64::from(b'\r'));
        // The lowest flagged byte is exact (only bytes above a zero byte can be flagged falsely).
        let hits = (lf.wrapping_sub(ONES) & !lf | cr.wrapping_sub(ONES) & !cr) & HIGHS;
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == b'\n' || c == b'\r')
        .map(|p| at + p)
}

/// Appends `data: <json>\n\n`.
pub fn write_data(out: &mut Vec<u8>, json: &[u8]) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
}

/// Appends `data: <value as JSON>\n\n`.
pub fn write_json_event<T: serde::Serialize>(out: &mut Vec<u8>, value: &T) {
    out.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut *out, value).is_err() {
        // Serialising the gateway's own structs cannot fail; keep the event well-formed anyway.
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
}

/// Appends `event: <name>\ndata: <json>\n\n`.
pub fn write_event(out: &mut Vec<u8>, name: &str, json: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    write_data(out, json);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event the test keeps.
    #[derive(Debug, PartialEq)]
    struct Owned {
        event: Option<String>,
        data: String,
    }

    fn own(e: SseEvent<'_>) -> Owned {
        Owned {
            event: e.event.map(str::to_string),
            data: e.text().into_owned(),
        }
    }

    fn parse_all(chunks: &[&[u8]]) -> Vec<Owned> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut |e| out.push(own(e)));
        }
        p.finish(&mut |e| out.push(own(e)));
        out
    }

    const STREAM: &[u8] = b": comment\nevent: message_start\ndata: {\"a\":1}\n\nevent: ping\r\ndata: {}\r\n\r\ndata: line1\ndata: line2\n\ndata:x\r\rid: 7\nretry: 5\ndata: \xe2\x82\xac\n\n";

    fn expected() -> Vec<Owned> {
        vec![
            Owned {
                event: Some("message_start".into()),
                data: "{\"a\":1}".into(),
            },
            Owned {
                event: Some("ping".into()),
                data: "{}".into(),
            },
            Owned {
                event: None,
                data: "line1\nline2".into(),
            },
            Owned {
                event: None,
                data: "x".into(),
            },
            Owned {
                event: None,
                data: "\u{20ac}".into(),
            },
        ]
    }

    #[test]
    fn parses_whole_stream() {
        assert_eq!(parse_all(&[STREAM]), expected());
    }

    #[test]
    fn same_events_at_every_split_offset() {
        for cut in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(cut);
            assert_eq!(parse_all(&[a, b]), expected(), "cut at {cut}");
        }
    }

    #[test]
    fn same_events_at_every_pair_of_split_offsets() {
        // Three chunks: events lent from one chunk, copied across two, joined across three.
        for a in 0..=STREAM.len() {
            for b in a..=STREAM.len() {
                let chunks = [&STREAM[..a], &STREAM[a..b], &STREAM[b..]];
                assert_eq!(parse_all(&chunks), expected(), "cuts at {a} and {b}");
            }
        }
    }

    /// The WHATWG rules written the plain way, over the whole input at once.
    fn reference(input: &[u8]) -> Vec<Owned> {
        let mut lines: Vec<&[u8]> = Vec::new();
        let (mut i, mut start) = (0, 0);
        while i < input.len() {
            if input[i] == b'\n' || input[i] == b'\r' {
                lines.push(&input[start..i]);
                if input[i] == b'\r' && input.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            i += 1;
        }
        if start < input.len() {
            lines.push(&input[start..]);
        }
        let (mut out, mut event, mut data) = (Vec::new(), None::<String>, None::<String>);
        let mut dispatch = |event: &mut Option<String>, data: &mut Option<String>| {
            if let Some(d) = data.take() {
                out.push(Owned {
                    event: event.take(),
                    data: d,
                });
            }
            *event = None;
        };
        for line in lines {
            if line.is_empty() {
                dispatch(&mut event, &mut data);
                continue;
            }
            if line[0] == b':' {
                continue;
            }
            let (field, value) = match line.iter().position(|&c| c == b':') {
                Some(p) => (
                    &line[..p],
                    line[p + 1..].strip_prefix(b" ").unwrap_or(&line[p + 1..]),
                ),
                None => (line, &b""[..]),
            };
            let value = String::from_utf8_lossy(value).into_owned();
            match field {
                b"data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(&value);
                    }
                    None => data = Some(value),
                },
                b"event" => event = Some(value),
                _ => {}
            }
        }
        dispatch(&mut event, &mut data);
        out
    }

    #[test]
    fn random_streams_in_random_chunks_match_the_plain_rules() {
        const LINES: &[&[u8]] = &[
            b"event: content_block_delta",
            b"event:ping",
            b"data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}",
            b"data:",
            b"data: two words",
            b"data: \xe2\x82\xac \xff",
            b"event: \xfe",
            b": a comment",
            b"id: 9",
            b"retry: 10",
            b"",
            b"",
            b"",
        ];
        const ENDS: &[&[u8]] = &[b"\n", b"\n", b"\r\n", b"\r"];
        let mut rng = crate::test_support::XorShift(0x2545_F491_4F6C_DD1D);
        let mut next = |n: usize| rng.below(n);
        for round in 0..400 {
            let mut input = Vec::new();
            for _ in 0..1 + next(30) {
                input.extend_from_slice(LINES[next(LINES.len())]);
                input.extend_from_slice(ENDS[next(ENDS.len())]);
            }
            if next(4) == 0 {
                input.extend_from_slice(b"data: cut off"); // no line end: dispatched at finish
            }
            let want = reference(&input);
            for _ in 0..4 {
                let mut chunks: Vec<&[u8]> = Vec::new();
                let mut at = 0;
                while at < input.len() {
                    let len = (1 + next(40)).min(input.len() - at);
                    chunks.push(&input[at..at + len]);
                    if next(5) == 0 {
                        chunks.push(b""); // empty callbacks happen too
                    }
                    at += len;
                }
                assert_eq!(
                    parse_all(&chunks),
                    want,
                    "round {round}: {:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }

    #[test]
    fn later_event_line_wins_and_bad_utf8_is_replaced() {
        let s: &[u8] = b"event: a\nevent: b\ndata: 1\n\nevent: \xff\ndata: \xfe2\ndata: 3\n\n";
        let want = vec![
            Owned {
                event: Some("b".into()),
                data: "1".into(),
            },
            Owned {
                event: Some("\u{fffd}".into()),
                data: "\u{fffd}2\n3".into(),
            },
        ];
        for cut in 0..=s.len() {
            let (a, b) = s.split_at(cut);
            assert_eq!(parse_all(&[a, b]), want, "cut at {cut}");
        }
    }

    #[test]
    fn line_end_finds_the_first_cr_or_lf_at_every_position() {
        for len in 0..40 {
            // Bytes one bit away from `\n`/`\r`, high bytes, and zero: none is a line end.
            let filler: Vec<u8> = (0..len)
                .map(|i| [b'a', 0x0b, 0x0c, 0x0e, 0x8a, 0x8d, 0x00, 0xff, 0x09][i % 9])
                .collect();
            assert_eq!(line_end(&filler), None, "len {len}");
            for pos in 0..len {
                for end in [b'\n', b'\r'] {
                    let mut b = filler.clone();
                    b[pos] = end;
                    if pos + 1 < len {
                        b[len - 1] = b'\n'; // a later one does not count
                    }
                    assert_eq!(line_end(&b), Some(pos), "{end:#x} at {pos} of {len}");
                }
            }
        }
    }

    #[test]
    fn same_events_byte_by_byte() {
        let chunks: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(parse_all(&chunks), expected());
    }

    #[test]
    fn unterminated_last_event_dispatched_at_finish() {
        let ev = parse_all(&[b"data: {\"x\":1}"]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data, "{\"x\":1}");
    }

    /// One endless line, fed in pieces: the parser holds at most MAX_LINE, then stops with
    /// LineTooLong; the events before it were dispatched, nothing after.
    #[test]
    fn an_endless_line_stops_the_parser_at_the_cap() {
        for piece in [1000usize, 64 * 1024, MAX_LINE + 10] {
            let mut p = SseParser::new();
            let mut got = Vec::new();
            p.feed(b"data: 1\n\ndata: ", &mut |e| got.push(own(e)));
            let line = vec![b'x'; piece];
            let mut fed = 0;
            while p.error().is_none() {
                p.feed(&line, &mut |e| got.push(own(e)));
                fed += piece;
                assert!(p.pending_len() <= MAX_LINE, "{piece}");
                assert!(fed <= MAX_LINE + piece, "{piece}");
            }
            assert_eq!(p.error(), Some(SseError::LineTooLong));
            assert_eq!(p.pending_len(), 0, "freed");
            p.feed(b"\n\ndata: 2\n\n", &mut |e| got.push(own(e)));
            p.finish(&mut |e| got.push(own(e)));
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].data, "1");
        }
        // A line at the cap is fine, in one chunk or split.
        let mut ok = b"data: ".to_vec();
        ok.resize(MAX_LINE, b'y');
        ok.extend_from_slice(b"\n\n");
        assert_eq!(parse_all(&[&ok])[0].data.len(), MAX_LINE - 6);
        let (a, b) = ok.split_at(MAX_LINE / 2);
        assert_eq!(parse_all(&[a, b])[0].data.len(), MAX_LINE - 6);
    }

    /// One event of endless `data:` lines: stopped with EventTooLarge once the joined data
    /// passes MAX_EVENT, whether the lines come in one chunk or many.
    #[test]
    fn an_event_of_endless_data_lines_stops_at_the_cap() {
        let line = format!("data: {}\n", "z".repeat(999));
        for per_chunk in [1usize, 100] {
            let mut p = SseParser::new();
            let mut n = 0;
            let chunk = line.repeat(per_chunk);
            let mut fed = 0;
            while p.error().is_none() {
                p.feed(chunk.as_bytes(), &mut |_| n += 1);
                fed += chunk.len();
                assert!(p.pending_len() <= MAX_EVENT + MAX_LINE);
                assert!(fed <= MAX_EVENT + MAX_EVENT / 100 + 2 * chunk.len()); // (+ "data: " framing)
            }
            assert_eq!(p.error(), Some(SseError::EventTooLarge));
            assert_eq!(p.pending_len(), 0, "freed");
            p.feed(b"\n", &mut |_| n += 1);
            p.finish(&mut |_| n += 1);
            assert_eq!(n, 0);
        }
    }

    #[test]
    fn event_without_data_is_not_dispatched() {
        assert!(parse_all(&[b"event: ping\n\n"]).is_empty());
    }
}
