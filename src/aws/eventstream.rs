//! `application/vnd.amazon.eventstream` framing (docs/providers.md §6.4), decoded
//! incrementally: bytes go in as they arrive, whole messages come out, so a message cut anywhere
//! across body chunks is only read once all of it is there.
//!
//! ```text
//! total_len u32 BE | headers_len u32 BE | prelude_crc u32 BE | headers | payload | message_crc u32 BE
//! ```
//! The prelude CRC covers the first 8 bytes, the message CRC everything before it (CRC-32,
//! IEEE/zlib). Header: name length (u8), name, type (u8), value; strings (type 7) are kept, every
//! other type is skipped by its size. Lengths are `u32` on the wire and checked against limits
//! before anything is allocated, so a wrong length is an error, never a huge buffer or a panic.

/// Prelude (12) + message CRC (4).
const OVERHEAD: u32 = 16;
/// The Amazon Event Stream specification's limits (smithy.io/2.0/aws/amazon-eventstream.html,
/// "Message Format": "The payload of a message MUST NOT exceed 25,165,824 bytes (24 MB). The
/// encoded headers of a message MUST NOT exceed 131,072 bytes (128 kB)"; botocore's too).
/// A prelude announcing more is refused ([`FrameError::Length`]) before anything else is
/// buffered, so the [`Decoder`] never holds more than one message of at most
/// [`MAX_MESSAGE`] bytes plus the chunk that brought its last bytes.
const MAX_HEADERS: u32 = 128 * 1024;
const MAX_PAYLOAD: u32 = 24 * 1024 * 1024;
/// The largest message the decoder holds: 24 MiB + 128 KiB + 16 bytes.
pub const MAX_MESSAGE: usize = (MAX_PAYLOAD + MAX_HEADERS + OVERHEAD) as usize;

/// One decoded message: the string headers LLMux reads, and the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// `:message-type`: `event`, `exception` or `error`.
    pub message_type: String,
    /// `:event-type`, e.g. `contentBlockDelta`.
    pub event_type: String,
    /// `:exception-type`, e.g. `throttlingException`.
    pub exception_type: String,
    /// `:error-code` / `:error-message` of `error` messages.
    pub error_code: String,
    pub error_message: String,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A total or headers length outside the limits (over the specification's 24 MiB payload
    /// or 128 KiB headers, or shorter than the prelude and CRC).
    Length,
    PreludeCrc,
    MessageCrc,
    /// A header that does not parse (bad type, runs past the headers).
    Header,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Length => {
                "event-stream message with an invalid length (over the 24 MiB payload or \
                 128 KiB headers limit, or shorter than its framing)"
            }
            Self::PreludeCrc => "event-stream prelude CRC mismatch",
            Self::MessageCrc => "event-stream message CRC mismatch",
            Self::Header => "event-stream message with a malformed header",
        })
    }
}

/// Incremental decoder. After an error it stays failed: the stream cannot be resynchronised.
/// Its buffer is capped by the specification's message limits (see [`MAX_MESSAGE`]).
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the next message starts in `buf`: messages are read in place and the bytes before
    /// `start` dropped once per [`Decoder::feed`] (one move of the unread tail per chunk, not
    /// one per message: many small messages in one chunk stay linear).
    start: usize,
    failed: bool,
}

#[cfg(test)]
thread_local! {
    /// Bytes moved by compaction (tests: linear in the input).
    static MOVED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

impl Decoder {
    pub fn feed(&mut self, data: &[u8]) {
        if self.failed {
            return;
        }
        if self.start > 0 {
            #[cfg(test)]
            MOVED.with(|m| m.set(m.get() + self.buf.len() - self.start));
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes held that do not make a whole message yet.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole message, `None` when more bytes are needed.
    pub fn next_message(&mut self) -> Option<Result<Message, FrameError>> {
        let rest = &self.buf[self.start..];
        if self.failed || rest.len() < 12 {
            return None;
        }
        let r = match check_prelude(rest) {
            // `total` is at most MAX_MESSAGE: fits usize on 32-bit targets.
            Ok(total) if rest.len() < total as usize => Ok(None),
            Ok(total) => {
                let total = total as usize;
                let msg = parse(&rest[..total]);
                self.start += total;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                msg.map(Some)
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(Some(m)) => Some(Ok(m)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                self.buf = Vec::new();
                self.start = 0;
                Some(Err(e))
            }
        }
    }
}

/// Validates the 12-byte prelude at the start of `buf`; returns the total length.
fn check_prelude(buf: &[u8]) -> Result<u32, FrameError> {
    let total = be32(buf, 0);
    let headers = be32(buf, 4);
    if crc32(&buf[..8]) != be32(buf, 8) {
        return Err(FrameError::PreludeCrc);
    }
    if total < OVERHEAD
        || headers > MAX_HEADERS
        || headers > total - OVERHEAD
        || total - OVERHEAD - headers > MAX_PAYLOAD
    {
        return Err(FrameError::Length);
    }
    Ok(total)
}

/// One whole message (prelude already checked).
fn parse(b: &[u8]) -> Result<Message, FrameError> {
    let total = b.len();
    let headers_len = be32(b, 4) as usize;
    if crc32(&b[..total - 4]) != be32(b, total - 4) {
        return Err(FrameError::MessageCrc);
    }
    let mut m = Message::default();
    let mut h = b.get(12..12 + headers_len).ok_or(FrameError::Header)?;
    while !h.is_empty() {
        let name_len = usize::from(h[0]);
        let name = h.get(1..1 + name_len).ok_or(FrameError::Header)?;
        let kind = *h.get(1 + name_len).ok_or(FrameError::Header)?;
        let rest = &h[2 + name_len..];
        let fixed = match kind {
            0 | 1 => Some(0),
            2 => Some(1),
            3 => Some(2),
            4 => Some(4),
            5 | 8 => Some(8),
            9 => Some(16),
            6 | 7 => None,
            _ => return Err(FrameError::Header),
        };
        let used = match fixed {
            Some(n) => n,
            None => {
                let len = rest.get(..2).ok_or(FrameError::Header)?;
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                let value = rest.get(2..2 + len).ok_or(FrameError::Header)?;
                if kind == 7 {
                    let slot = match name {
                        b":message-type" => Some(&mut m.message_type),
                        b":event-type" => Some(&mut m.event_type),
                        b":exception-type" => Some(&mut m.exception_type),
                        b":error-code" => Some(&mut m.error_code),
                        b":error-message" => Some(&mut m.error_message),
                        _ => None,
                    };
                    if let Some(slot) = slot {
                        *slot = String::from_utf8_lossy(value).into_owned();
                    }
                }
                2 + len
            }
        };
        h = rest.get(used..).ok_or(FrameError::Header)?;
    }
    m.payload = b[12 + headers_len..total - 4].to_vec();
    Ok(m)
}

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE 802.3, the zlib one).
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// Encodes one message with string headers (tests and fixtures).
#[cfg(test)]
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (k, v) in headers {
        h.push(k.len() as u8);
        h.extend_from_slice(k.as_bytes());
        h.push(7);
        h.extend_from_slice(&(v.len() as u16).to_be_bytes());
        h.extend_from_slice(v.as_bytes());
    }
    encode_raw(&h, payload)
}

/// Encodes one message from already encoded headers (tests: other header types).
#[cfg(test)]
pub fn encode_raw(headers: &[u8], payload: &[u8]) -> Vec<u8> {
    let total = (headers.len() + payload.len() + 16) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    let c = crc32(&out);
    out.extend_from_slice(&c.to_be_bytes());
    out.extend_from_slice(headers);
    out.extend_from_slice(payload);
    let c = crc32(&out);
    out.extend_from_slice(&c.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hexbytes(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn decodes_a_real_bedrock_prelude() {
        // docs/providers.md §6.4: a real frame's prelude, total 0x180, headers 0x4B, CRC fe962446.
        let p = hexbytes("000001800000004bfe962446");
        assert_eq!(crc32(&p[..8]), 0xfe96_2446);
    }

    fn frame(ev: &str, payload: &str) -> Vec<u8> {
        encode(
            &[
                (":event-type", ev),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload.as_bytes(),
        )
    }

    #[test]
    fn every_split_gives_the_same_messages() {
        let mut all = frame("messageStart", r#"{"role":"assistant","p":"abc"}"#);
        all.extend(frame(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
        ));
        all.extend(encode(
            &[
                (":message-type", "exception"),
                (":exception-type", "throttlingException"),
            ],
            br#"{"message":"slow down"}"#,
        ));
        for cut in 0..=all.len() {
            for step in [1usize, 3, 64] {
                let mut d = Decoder::default();
                let mut got = Vec::new();
                let (a, b) = all.split_at(cut);
                for piece in a.chunks(step).chain(b.chunks(step)) {
                    d.feed(piece);
                    while let Some(m) = d.next_message() {
                        got.push(m.unwrap());
                    }
                }
                assert_eq!(got.len(), 3, "cut {cut} step {step}");
                assert_eq!(got[0].event_type, "messageStart");
                assert_eq!(
                    got[1].payload,
                    br#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#
                );
                assert_eq!(got[2].message_type, "exception");
                assert_eq!(got[2].exception_type, "throttlingException");
                assert_eq!(d.pending(), 0);
            }
        }
    }

    #[test]
    fn other_header_types_are_skipped() {
        let mut h = Vec::new();
        let mut push = |name: &str, kind: u8, value: &[u8]| {
            h.push(name.len() as u8);
            h.extend_from_slice(name.as_bytes());
            h.push(kind);
            h.extend_from_slice(value);
        };
        push("t", 0, &[]);
        push("f", 1, &[]);
        push("b", 2, &[7]);
        push("s", 3, &[0, 7]);
        push("i", 4, &[0, 0, 0, 7]);
        push("l", 5, &[0; 8]);
        push("ba", 6, &[0, 3, 1, 2, 3]);
        push(
            ":event-type",
            7,
            &[0, 8, b'm', b'e', b's', b's', b'a', b'g', b'e', b'S'],
        );
        push("ts", 8, &[0; 8]);
        push("u", 9, &[0; 16]);
        let mut d = Decoder::default();
        d.feed(&encode_raw(&h, b"{}"));
        let m = d.next_message().unwrap().unwrap();
        assert_eq!(m.event_type, "messageS");
        assert_eq!(m.payload, b"{}");
        // An unknown header type is an error.
        let mut d = Decoder::default();
        d.feed(&encode_raw(&[1, b'x', 10], b"{}"));
        assert_eq!(d.next_message(), Some(Err(FrameError::Header)));
        // A header running past its block too.
        let mut d = Decoder::default();
        d.feed(&encode_raw(&[1, b'x', 7, 0, 9, b'a'], b"{}"));
        assert_eq!(d.next_message(), Some(Err(FrameError::Header)));
    }

    #[test]
    fn corruption_is_an_error_not_a_panic() {
        let good = frame("messageStop", r#"{"stopReason":"end_turn"}"#);
        // Flip each byte in turn: the prelude CRC, the message CRC or a length check catches it.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x55;
            let mut d = Decoder::default();
            d.feed(&bad);
            d.feed(&[0u8; 64]);
            match d.next_message() {
                Some(Err(_)) => {}
                other => panic!("byte {i}: {other:?}"),
            }
            // Failed for good: later bytes are not read.
            d.feed(&good);
            assert_eq!(d.next_message(), None);
        }
        // Lengths that do not fit: too short, headers longer than the message, huge.
        for (total, headers) in [(4u32, 0u32), (20, 10), (u32::MAX, 0), (100, 200)] {
            let mut p = total.to_be_bytes().to_vec();
            p.extend_from_slice(&headers.to_be_bytes());
            let c = crc32(&p);
            p.extend_from_slice(&c.to_be_bytes());
            let mut d = Decoder::default();
            d.feed(&p);
            assert_eq!(
                d.next_message(),
                Some(Err(FrameError::Length)),
                "{total} {headers}"
            );
        }
    }

    fn prelude(total: u32, headers: u32) -> Vec<u8> {
        let mut p = total.to_be_bytes().to_vec();
        p.extend_from_slice(&headers.to_be_bytes());
        let c = crc32(&p);
        p.extend_from_slice(&c.to_be_bytes());
        p
    }

    /// A message announcing more than the specification allows is refused from its prelude,
    /// before its body is buffered; one at the limit is buffered as its bytes come, no more.
    #[test]
    fn a_huge_announced_length_is_refused_before_buffering() {
        let max = MAX_MESSAGE as u32;
        for (total, headers) in [(max + 1, 0), (max + 1, MAX_HEADERS), (max, MAX_HEADERS + 1)] {
            let mut d = Decoder::default();
            d.feed(&prelude(total, headers));
            assert_eq!(d.next_message(), Some(Err(FrameError::Length)));
            assert_eq!(d.pending(), 0);
            d.feed(&[0; 1024]);
            assert_eq!(d.pending(), 0, "nothing is held after the error");
        }
        let mut d = Decoder::default();
        d.feed(&prelude(max, MAX_HEADERS));
        assert_eq!(d.next_message(), None);
        d.feed(&[0; 1 << 16]);
        assert_eq!(d.next_message(), None);
        assert_eq!(d.pending(), 12 + (1 << 16));
    }

    /// Many messages in one chunk, and messages cut across chunks: the unread bytes are moved
    /// at most once per chunk, so the work stays linear in the input.
    #[test]
    fn reading_messages_is_linear() {
        let one = frame(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"x"}}"#,
        );
        for n in [1_000usize, 4_000] {
            let all: Vec<u8> = one.repeat(n);
            for step in [all.len(), 1000, 7] {
                MOVED.with(|m| m.set(0));
                let mut d = Decoder::default();
                let mut got = 0;
                for piece in all.chunks(step) {
                    d.feed(piece);
                    while let Some(m) = d.next_message() {
                        m.unwrap();
                        got += 1;
                    }
                }
                assert_eq!((got, d.pending()), (n, 0));
                // Each chunk moves less than one message's bytes.
                let chunks = all.len().div_ceil(step);
                assert!(MOVED.with(|m| m.get()) <= chunks * one.len(), "{n} {step}");
            }
        }
    }

    /// Many small messages in one chunk, timed (not a pass/fail test):
    /// `cargo test --release -p llmux --lib timing_ -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing_eventstream_many_messages_in_one_chunk() {
        let one = frame(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"x"}}"#,
        );
        for n in [4_000usize, 16_000] {
            let mut all = Vec::new();
            for _ in 0..n {
                all.extend_from_slice(&one);
            }
            let mut d = Decoder::default();
            let t = std::time::Instant::now();
            d.feed(&all);
            let mut got = 0;
            while let Some(m) = d.next_message() {
                m.unwrap();
                got += 1;
            }
            eprintln!(
                "eventstream: {n} messages ({} bytes) in one chunk: {:?}",
                all.len(),
                t.elapsed()
            );
            assert_eq!(got, n);
        }
    }
}
