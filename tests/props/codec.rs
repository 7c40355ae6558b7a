//! The byte codecs: server-sent events, multipart forms, AWS event-stream.

use crate::config;
use crate::mutate::{chunked, cuts, eventstream_frame, eventstream_raw, mutate_bytes, ops};
use llmux::aws::eventstream::{crc32, Decoder, FrameError, Message};
use llmux::codec::multipart;
use llmux::codec::sse::{SseEvent, SseParser};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// SSE

#[derive(Debug, PartialEq)]
struct Owned {
    event: Option<String>,
    data: Vec<u8>,
}

fn sse_events(chunks: &[&[u8]]) -> Vec<Owned> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    let mut on = |e: SseEvent| {
        out.push(Owned {
            event: e.event.map(str::to_string),
            data: e.data.to_vec(),
        })
    };
    for c in chunks {
        p.feed(c, &mut on);
    }
    p.finish(&mut on);
    assert_eq!(p.pending_len(), 0, "finish leaves nothing pending");
    out
}

/// Bytes that look like an event stream: field names, separators, line ends, UTF-8 pieces.
fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![
            &b"data:"[..], b"data: ", b"event:", b"event: ", b"id: 1", b"retry: 5", b":", b": c",
            b"\n", b"\r", b"\r\n", b"\n\n", b"\r\r", b"{\"a\":1}", b"[DONE]", b"\xe2\x82\xac",
            b"\xe2", b"\x82\xac", b"\xff", b"data", b"x", b"  ", b"\x00",
        ]).prop_map(|s| s.to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ];
    prop::collection::vec(piece, 0..80).prop_map(|p| p.concat())
}

/// A well-formed stream: whole lines, each ended by `\n`, `\r\n` or `\r`.
fn sse_well_formed() -> impl Strategy<Value = Vec<u8>> {
    let text = "[ -~é€😀]{0,30}"; // no CR/LF
    let line = prop_oneof![
        (Just("data: "), text).prop_map(|(f, t)| format!("{f}{t}")),
        (Just("data:"), text).prop_map(|(f, t)| format!("{f}{t}")),
        (Just("event: "), "[a-z_]{0,12}").prop_map(|(f, t)| format!("{f}{t}")),
        (Just(": "), text).prop_map(|(f, t)| format!("{f}{t}")),
        Just("id: 7".to_string()),
        Just(String::new()),
        Just(String::new()),
    ];
    let end = prop::sample::select(vec!["\n", "\n", "\r\n", "\r"]);
    prop::collection::vec((line, end), 0..40).prop_map(|ls| {
        ls.into_iter()
            .flat_map(|(l, e)| [l, e.to_string()])
            .collect::<String>()
            .into_bytes()
    })
}

proptest! {
    #![proptest_config(config(1000))]

    /// Any bytes in any chunking: no panic, and the same events as the whole input fed at once
    /// (chunk independence holds for every input, not only valid ones).
    #[test]
    fn sse_any_bytes_any_chunks(bytes in sse_bytes(), cuts in cuts()) {
        let whole = sse_events(&[&bytes]);
        let parts = sse_events(&chunked(&bytes, &cuts));
        prop_assert_eq!(whole, parts);
    }

    /// Well-formed streams: the same events one byte at a time, in random chunks, and whole;
    /// every `data:` value is a line of the input.
    #[test]
    fn sse_well_formed_same_events(bytes in sse_well_formed(), cuts in cuts()) {
        let whole = sse_events(&[&bytes]);
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        prop_assert_eq!(&whole, &sse_events(&bytewise));
        prop_assert_eq!(&whole, &sse_events(&chunked(&bytes, &cuts)));
        let data_lines = bytes.split(|&b| b == b'\n' || b == b'\r').filter(|l| l.starts_with(b"data:")).count();
        prop_assert!(whole.len() <= data_lines);
    }
}

// ---------------------------------------------------------------------------------------------
// multipart

fn boundary_token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9'()+_,./:=?-]{1,70}"
}

fn multipart_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![
            &b"--"[..], b"--XyZ", b"--XyZ--", b"XyZ", b"\r\n", b"\r\n\r\n", b"\r", b"\n",
            b"Content-Disposition: form-data; name=\"model\"", b"name=\"model\"",
            b"; filename=\"a.wav\"", b"content-disposition:", b"whisper-1", b"\xff", b"-",
        ]).prop_map(|s| s.to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..24),
    ];
    prop::collection::vec(piece, 0..60).prop_map(|p| p.concat())
}

#[derive(Debug, Clone)]
enum Part {
    Field(&'static str, String),
    File(&'static str, Vec<u8>),
}

fn part() -> impl Strategy<Value = Part> {
    let name = prop::sample::select(vec![
        "file",
        "language",
        "prompt",
        "response_format",
        "model_x",
        "image",
    ]);
    prop_oneof![
        (name.clone(), "[ -~]{0,20}").prop_map(|(n, v)| Part::Field(n, v)),
        (
            name,
            prop::collection::vec(
                prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n'), Just(b'-')],
                0..200
            )
        )
            .prop_map(|(n, v)| Part::File(n, v)),
    ]
}

fn form(boundary: &str, parts: &[Part], model_at: usize, model: &str, upper: bool) -> Vec<u8> {
    let mut body = Vec::new();
    let disp = if upper {
        "CONTENT-DISPOSITION"
    } else {
        "Content-Disposition"
    };
    let mut write = |headers: String, value: &[u8]| {
        body.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    };
    for (i, p) in parts.iter().enumerate() {
        if i == model_at {
            write(
                format!("{disp}: form-data; name=\"model\""),
                model.as_bytes(),
            );
        }
        match p {
            Part::Field(n, v) => write(format!("{disp}: form-data; name=\"{n}\""), v.as_bytes()),
            Part::File(n, v) => {
                // A file part may hold anything but its own delimiter: even `name="model"`.
                let mut v = v.clone();
                v.extend_from_slice(b"name=\"model\"");
                let delim = format!("\r\n--{boundary}");
                while let Some(at) = v.windows(delim.len()).position(|w| w == delim.as_bytes()) {
                    v.remove(at);
                }
                if v.ends_with(b"\r") || v.ends_with(b"\r\n-") || v.ends_with(b"\r\n") {
                    v.push(b'x');
                }
                write(format!("{disp}: form-data; name=\"{n}\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream"), &v)
            }
        }
    }
    if model_at >= parts.len() {
        write(
            format!("{disp}: form-data; name=\"model\""),
            model.as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

proptest! {
    #![proptest_config(config(1000))]

    /// Arbitrary bodies, boundaries, names and content types: no panic, and a found value is a
    /// range inside the body.
    #[test]
    fn multipart_never_panics(
        body in multipart_bytes(),
        boundary in prop_oneof![Just("XyZ".to_string()), "\\PC{0,8}", boundary_token()],
        name in prop_oneof![Just("model".to_string()), "\\PC{0,8}"],
        ct in prop_oneof![
            "\\PC{0,40}",
            "[ \"]{0,2}multipart/form-data[ ;]{0,3}(boundary|BOUNDARY)?[ =\"]{0,3}\\PC{0,10}[\"]?(;\\PC{0,6})?",
        ],
    ) {
        let _ = multipart::boundary(&ct);
        if let Some((s, e)) = multipart::field(&body, &boundary, &name) {
            prop_assert!(s <= e && e <= body.len());
        }
    }

    /// A valid form's `model` field is found, whatever the parts around it (file parts holding
    /// `name="model"` and line ends included), and its boundary is read from the content type.
    #[test]
    fn multipart_valid_form_model_found(
        boundary in boundary_token(),
        parts in prop::collection::vec(part(), 0..5),
        model_at in 0usize..6,
        model in "[ -~]{1,30}",
        upper in any::<bool>(),
        quoted in any::<bool>(),
    ) {
        let body = form(&boundary, &parts, model_at, &model, upper);
        let ct = if quoted {
            format!("multipart/form-data; boundary=\"{boundary}\"")
        } else {
            format!("Multipart/Form-Data; charset=utf-8; boundary={boundary}")
        };
        prop_assert_eq!(multipart::boundary(&ct), Some(boundary.as_str()));
        let (s, e) = multipart::field(&body, &boundary, "model").expect("model field found");
        prop_assert_eq!(&body[s..e], model.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// AWS event-stream

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "event",
            "exception",
            "error",
            "contentBlockDelta",
            "messageStop",
            "throttlingException",
            "application/json"
        ])
        .prop_map(str::to_string),
        "\\PC{0,20}",
    ]
}

/// Encoded headers of every type, names the decoder reads among them.
fn raw_headers() -> impl Strategy<Value = (Vec<u8>, Vec<(String, String)>)> {
    let name = prop::sample::select(vec![
        ":message-type",
        ":event-type",
        ":exception-type",
        ":error-code",
        ":error-message",
        ":content-type",
        "x",
        "",
    ]);
    let header = prop_oneof![
        3 => (name.clone(), header_value()).prop_map(|(n, v)| (n, 7u8, v.into_bytes())),
        1 => (name, 0u8..10, prop::collection::vec(any::<u8>(), 0..20)).prop_map(|(n, k, v)| (n, k, v)),
    ];
    prop::collection::vec(header, 0..6).prop_map(|hs| {
        let mut raw = Vec::new();
        let mut strings = Vec::new();
        for (n, kind, v) in hs {
            raw.push(n.len() as u8);
            raw.extend_from_slice(n.as_bytes());
            raw.push(kind);
            let v: Vec<u8> = match kind {
                0 | 1 => vec![],
                2 => v
                    .iter()
                    .copied()
                    .take(1)
                    .chain(std::iter::repeat(0))
                    .take(1)
                    .collect(),
                3 => v
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(0))
                    .take(2)
                    .collect(),
                4 => v
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(0))
                    .take(4)
                    .collect(),
                5 | 8 => v
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(0))
                    .take(8)
                    .collect(),
                9 => v
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(0))
                    .take(16)
                    .collect(),
                _ => {
                    let mut b = (v.len() as u16).to_be_bytes().to_vec();
                    b.extend_from_slice(&v);
                    b
                }
            };
            raw.extend_from_slice(&v);
            if kind == 7 {
                strings.push((n.to_string(), String::from_utf8_lossy(&v[2..]).into_owned()));
            }
        }
        (raw, strings)
    })
}

fn drain(d: &mut Decoder, got: &mut Vec<Result<Message, FrameError>>) {
    while let Some(m) = d.next_message() {
        got.push(m);
    }
}

/// Bytes reaching each check: whole frames (valid or with a random header block), preludes with
/// a right CRC and any lengths, raw bytes; then byte edits.
fn eventstream_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => (raw_headers(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|((h, _), p)| eventstream_raw(&h, &p)),
        2 => (prop::collection::vec(any::<u8>(), 0..40), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(h, p)| eventstream_raw(&h, &p)),
        1 => (prop_oneof![any::<u32>(), 0u32..200], prop_oneof![any::<u32>(), 0u32..200], prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(t, h, rest)| {
            let mut p = t.to_be_bytes().to_vec();
            p.extend_from_slice(&h.to_be_bytes());
            let c = crc32(&p);
            p.extend_from_slice(&c.to_be_bytes());
            p.extend_from_slice(&rest);
            p
        }),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ];
    (prop::collection::vec(piece, 0..6), ops(3)).prop_map(|(ps, ops)| {
        let mut b = ps.concat();
        for op in ops {
            mutate_bytes(&mut b, op);
        }
        b
    })
}

proptest! {
    #![proptest_config(config(1000))]

    /// Any bytes in any chunking: no panic, the same results whatever the chunks, and after an
    /// error nothing more comes out.
    #[test]
    fn eventstream_any_bytes_any_chunks(bytes in eventstream_bytes(), cuts in cuts()) {
        let mut whole = Vec::new();
        let mut d = Decoder::default();
        d.feed(&bytes);
        drain(&mut d, &mut whole);
        let mut parts = Vec::new();
        let mut d = Decoder::default();
        for c in chunked(&bytes, &cuts) {
            d.feed(c);
            drain(&mut d, &mut parts);
        }
        prop_assert_eq!(&whole, &parts);
        if let Some(i) = whole.iter().position(|r| r.is_err()) {
            prop_assert_eq!(i, whole.len() - 1, "nothing after an error");
        }
    }

    /// Valid frames round-trip in any chunking: string headers and payload come back, nothing
    /// stays pending.
    #[test]
    fn eventstream_valid_frames_round_trip(
        frames in prop::collection::vec((raw_headers(), prop::collection::vec(any::<u8>(), 0..300)), 0..6),
        simple in prop::collection::vec((header_value(), header_value(), prop::collection::vec(any::<u8>(), 0..100)), 0..3),
        cuts in cuts(),
    ) {
        let mut bytes = Vec::new();
        let mut want = Vec::new();
        for ((raw, strings), payload) in &frames {
            bytes.extend(eventstream_raw(raw, payload));
            let mut m = Message { payload: payload.clone(), ..Message::default() };
            for (n, v) in strings {
                let slot = match n.as_str() {
                    ":message-type" => &mut m.message_type,
                    ":event-type" => &mut m.event_type,
                    ":exception-type" => &mut m.exception_type,
                    ":error-code" => &mut m.error_code,
                    ":error-message" => &mut m.error_message,
                    _ => continue,
                };
                *slot = v.clone();
            }
            want.push(Ok(m));
        }
        for (mt, et, payload) in &simple {
            bytes.extend(eventstream_frame(&[(":message-type", mt), (":event-type", et)], payload));
            want.push(Ok(Message { message_type: mt.clone(), event_type: et.clone(), payload: payload.clone(), ..Message::default() }));
        }
        let mut got = Vec::new();
        let mut d = Decoder::default();
        for c in chunked(&bytes, &cuts) {
            d.feed(c);
            drain(&mut d, &mut got);
        }
        prop_assert_eq!(got, want);
        prop_assert_eq!(d.pending(), 0);
    }
}
