//! Incremental Server-Sent Events parsing, safe at any chunk boundary.
//!
//! Upstream body chunks cut events anywhere (mid-line, mid-UTF-8 sequence, between `\r` and `\n`).
//! The parser keeps the unfinished tail and yields only whole events. It follows the WHATWG
//! event-stream rules: `\n`, `\r\n` and `\r` end lines, `:` lines are comments, several `data:`
//! lines join with `\n`, a blank line dispatches the event.

/// One dispatched event, borrowed from the parser's buffers (reused for every event: a stream of
/// small events allocates nothing per event). `data` is the joined `data:` lines.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SseEvent<'a> {
    pub event: Option<&'a str>,
    pub data: &'a str,
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` starting the next chunk belongs to that line end.
    after_cr: bool,
    event: String,
    has_event: bool,
    data: String,
    has_data: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; calls `on_event` for each event completed by them.
    pub fn feed(&mut self, mut chunk: &[u8], on_event: &mut dyn FnMut(SseEvent)) {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        let mut start = 0;
        while let Some(off) = memchr::memchr2(b'\n', b'\r', &chunk[start..]) {
            let line_end = start + off;
            let mut next = line_end + 1;
            if chunk[line_end] == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if self.line.is_empty() {
                self.process_line(&chunk[start..line_end], on_event);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&chunk[start..line_end]);
                self.process_line(&line, on_event);
                line.clear();
                self.line = line;
            }
            start = next;
        }
        self.line.extend_from_slice(&chunk[start..]);
    }

    /// At end of stream: an event not closed by a blank line is still dispatched (some providers,
    /// e.g. Gemini, close the connection right after the last `data:` line).
    pub fn finish(&mut self, on_event: &mut dyn FnMut(SseEvent)) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, on_event);
        }
        self.dispatch(on_event);
    }

    /// Bytes held back waiting for a line end (bounded by the caller's body limit).
    pub fn pending_len(&self) -> usize {
        self.line.len() + self.data.len()
    }

    fn process_line(&mut self, line: &[u8], on_event: &mut dyn FnMut(SseEvent)) {
        if line.is_empty() {
            self.dispatch(on_event);
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
                if self.has_data {
                    self.data.push('\n');
                }
                match std::str::from_utf8(value) {
                    Ok(v) => self.data.push_str(v),
                    Err(_) => self.data.push_str(&String::from_utf8_lossy(value)),
                }
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                match std::str::from_utf8(value) {
                    Ok(v) => self.event.push_str(v),
                    Err(_) => self.event.push_str(&String::from_utf8_lossy(value)),
                }
                self.has_event = true;
            }
            _ => {} // id, retry and unknown fields carry nothing a translator needs
        }
    }

    fn dispatch(&mut self, on_event: &mut dyn FnMut(SseEvent)) {
        if self.has_data {
            on_event(SseEvent {
                event: self.has_event.then_some(self.event.as_str()),
                data: &self.data,
            });
        }
        self.event.clear();
        self.data.clear();
        self.has_event = false;
        self.has_data = false;
    }
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
            data: e.data.to_string(),
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

    #[test]
    fn event_without_data_is_not_dispatched() {
        assert!(parse_all(&[b"event: ping\n\n"]).is_empty());
    }
}
