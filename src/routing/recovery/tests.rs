use super::*;

thread_local! {
    /// Bytes of `pending` moved when the events it held are dropped (linear: at most the
    /// unfinished rest, once per chunk).
    pub(super) static MOVED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

const HEAD: &str = concat!(
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"claude-x\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    ": keep-alive\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"claude-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"claude-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" w\\u00f6r\"},\"finish_reason\":null}]}\n\n",
);
const ERROR: &str = "data: {\"error\":{\"message\":\"anthropic stream error: overloaded_error: Overloaded\",\"type\":\"server_error\",\"param\":null,\"code\":\"overloaded_error\"}}\n\n";
const DONE: &str = "data: [DONE]\n\n";
const FINISH: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"claude-x\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";

/// Feeds `chunks` (the last with end_of_stream); returns what was forwarded and the watch.
fn run(chunks: &[&[u8]]) -> (Vec<u8>, StreamWatch) {
    let mut w = StreamWatch::new();
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        out.extend(w.feed(c, i + 1 == chunks.len()));
    }
    (out, w)
}

fn broken(text: &str) -> StreamEnd {
    StreamEnd::Broken {
        partial_text: text.into(),
    }
}

#[test]
fn error_event_and_done_are_held_back_at_every_split_point() {
    let stream = format!("{HEAD}{ERROR}{DONE}");
    let bytes = stream.as_bytes();
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        let (out, mut w) = run(&[a, b]);
        assert_eq!(out, HEAD.as_bytes(), "cut at {cut}");
        assert_eq!(w.end(), broken("Hello wör"), "cut at {cut}");
        assert_eq!(
            w.take_held(),
            format!("{ERROR}{DONE}").as_bytes(),
            "cut at {cut}"
        );
    }
    // Three pieces, and byte by byte.
    for cut in (0..bytes.len()).step_by(7) {
        let cut2 = (cut + 50).min(bytes.len());
        let (out, w) = run(&[&bytes[..cut], &bytes[cut..cut2], &bytes[cut2..]]);
        assert_eq!(out, HEAD.as_bytes());
        assert_eq!(w.end(), broken("Hello wör"));
    }
    let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
    let (out, w) = run(&chunks);
    assert_eq!(out, HEAD.as_bytes());
    assert_eq!(w.end(), broken("Hello wör"));
    assert_eq!(
        (w.id.as_deref(), w.model.as_deref(), w.created),
        (Some("chatcmpl-1"), Some("claude-x"), Some(7))
    );
}

#[test]
fn crlf_framing_and_an_unterminated_error_event_at_the_end() {
    let stream = format!("{HEAD}{ERROR}").replace("\n\n", "\r\n\r\n");
    let bytes = stream.as_bytes();
    for cut in 0..=bytes.len() {
        let (out, mut w) = run(&[&bytes[..cut], &bytes[cut..]]);
        assert_eq!(
            out,
            HEAD.replace("\n\n", "\r\n\r\n").as_bytes(),
            "cut at {cut}"
        );
        assert_eq!(w.end(), broken("Hello wör"));
        assert!(!w.take_held().is_empty());
    }
    // The error event without its blank line (the body just ends).
    let s = format!("{HEAD}{}", ERROR.trim_end());
    let (out, mut w) = run(&[s.as_bytes()]);
    assert_eq!(out, HEAD.as_bytes());
    assert_eq!(w.end(), broken("Hello wör"));
    assert_eq!(w.take_held(), ERROR.trim_end().as_bytes());
}

#[test]
fn a_complete_stream_passes_unchanged() {
    let stream = format!("{HEAD}{FINISH}{DONE}");
    let bytes = stream.as_bytes();
    for cut in 0..=bytes.len() {
        let (out, mut w) = run(&[&bytes[..cut], &bytes[cut..]]);
        assert_eq!(out, bytes, "cut at {cut}");
        assert_eq!(w.end(), StreamEnd::Complete);
        assert!(w.take_held().is_empty());
    }
}

#[test]
fn a_stream_cut_without_finish_or_done_is_broken_with_nothing_held() {
    let (out, mut w) = run(&[HEAD.as_bytes(), b""]);
    assert_eq!(out, HEAD.as_bytes());
    assert_eq!(w.end(), broken("Hello wör"));
    assert!(w.take_held().is_empty());
    // [DONE] without an error event closes the stream, finish_reason or not.
    let s = format!("{HEAD}{DONE}");
    let (out, w) = run(&[s.as_bytes()]);
    assert_eq!(out, s.as_bytes());
    assert_eq!(w.end(), StreamEnd::Complete);
    // Nothing at all.
    let (out, w) = run(&[b""]);
    assert!(out.is_empty());
    assert_eq!(w.end(), broken(""));
}

#[test]
fn no_recovery_after_tool_calls_other_choices_or_the_finish() {
    let tool = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n";
    let other = "data: {\"id\":\"c\",\"choices\":[{\"index\":1,\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}\n\n";
    for (extra, end) in [
        (tool, StreamEnd::NotRecoverable),
        (other, StreamEnd::NotRecoverable),
        (FINISH, StreamEnd::Complete),
    ] {
        let s = format!("{HEAD}{extra}{ERROR}{DONE}");
        let (out, mut w) = run(&[s.as_bytes()]);
        assert_eq!(out, s.as_bytes(), "the error event goes out as it is");
        assert_eq!(w.end(), end);
        assert!(w.take_held().is_empty());
    }
}

#[test]
fn usage_chunks_are_remembered() {
    let usage = "data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":3,\"total_tokens\":14}}\n\n";
    let s = format!("{HEAD}{usage}");
    let (_, w) = run(&[s.as_bytes()]);
    let u = w.usage.unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens), (11, 3));
}

#[test]
fn continuation_body_appends_the_partial_answer() {
    let original = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"temperature":0.5,"tools":[]}"#;
    let body = continuation_body(original, "Hello wör").unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "model": "m", "stream": false, "temperature": 0.5, "tools": [],
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello wör"},
                {"role": "user", "content": CONTINUE_PROMPT},
            ],
        })
    );
    // No text yet: the same conversation, not streamed.
    let v: Value = serde_json::from_slice(&continuation_body(original, "").unwrap()).unwrap();
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    assert_eq!(v["stream"], false);
    assert!(continuation_body(b"[1]", "x").is_none());
    assert!(continuation_body(br#"{"messages": 3}"#, "x").is_none());
    assert!(continuation_body(b"\xff", "x").is_none());
}

#[test]
fn recovery_request_needs_a_stream_with_one_choice() {
    let of = |b: &str| RecoveryRequest::of(b.as_bytes());
    assert_eq!(
        of(r#"{"messages":[],"stream":true}"#),
        Some(RecoveryRequest {
            include_usage: false
        })
    );
    assert_eq!(
        of(r#"{"messages":[],"stream":true,"n":1,"stream_options":{"include_usage":true}}"#),
        Some(RecoveryRequest {
            include_usage: true
        })
    );
    assert_eq!(of(r#"{"messages":[],"stream":false}"#), None);
    assert_eq!(of(r#"{"messages":[],"stream":true,"n":2}"#), None);
    assert_eq!(of(r#"{"stream":true}"#), None);
    assert_eq!(of("nope"), None);
}

const COMPLETION: &str = r#"{"id":"chatcmpl-fb","object":"chat.completion","created":99,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ld!"},"finish_reason":"length"}],"usage":{"prompt_tokens":20,"completion_tokens":2,"total_tokens":22}}"#;

#[test]
fn tail_continues_the_stream_with_its_ids() {
    let (_, w) = run(&[HEAD.as_bytes()]);
    let tail = render_tail(&w, COMPLETION.as_bytes(), "fall\nback", false, None).unwrap();
    let expected = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"ld!\"},\"finish_reason\":null,\"index\":0}],\"created\":7,\"id\":\"chatcmpl-1\",\"model\":\"claude-x\",\"object\":\"chat.completion.chunk\"}\n\n",
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\",\"index\":0}],\"created\":7,\"id\":\"chatcmpl-1\",\"model\":\"claude-x\",\"object\":\"chat.completion.chunk\"}\n\n",
        ": llmux recovered on deployment fall back\n\n",
        "data: [DONE]\n\n",
    );
    assert_eq!(String::from_utf8(tail).unwrap(), expected);
}

#[test]
fn tail_usage_is_the_sum_and_a_stream_without_chunks_gets_the_role() {
    let (_, w) = run(&[HEAD.as_bytes()]);
    let partial = Usage {
        prompt_tokens: 10,
        completion_tokens: 3,
        ..Usage::default()
    };
    let tail = render_tail(&w, COMPLETION.as_bytes(), "fb", true, Some(partial)).unwrap();
    let tail = String::from_utf8(tail).unwrap();
    let events: Vec<&str> = tail.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 5, "{tail}");
    let usage: Value = serde_json::from_str(events[2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(
        usage["usage"],
        serde_json::json!({"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35})
    );
    assert_eq!(usage["choices"], serde_json::json!([]));
    let first: Value = serde_json::from_str(events[0].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(first["usage"], Value::Null);
    assert!(first.as_object().unwrap().contains_key("usage"));

    // The client never got a chunk: the fallback's ids, and the role.
    let (_, w) = run(&[b""]);
    let tail = render_tail(&w, COMPLETION.as_bytes(), "fb", false, None).unwrap();
    let tail = String::from_utf8(tail).unwrap();
    assert!(
        tail.starts_with(
            "data: {\"choices\":[{\"delta\":{\"content\":\"ld!\",\"role\":\"assistant\"}"
        ),
        "{tail}"
    );
    assert!(tail.contains("\"id\":\"chatcmpl-fb\""));
}

#[test]
fn tail_refuses_answers_it_cannot_append() {
    let (_, w) = run(&[HEAD.as_bytes()]);
    for bad in [
        "not json",
        r#"{"choices":[]}"#,
        r#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"x"}]},"finish_reason":"tool_calls"}]}"#,
    ] {
        assert!(
            render_tail(&w, bad.as_bytes(), "fb", false, None).is_err(),
            "{bad}"
        );
    }
    // An empty text still ends the stream properly.
    let empty = r#"{"choices":[{"message":{"content":""},"finish_reason":"stop"}]}"#;
    let tail =
        String::from_utf8(render_tail(&w, empty.as_bytes(), "fb", false, None).unwrap()).unwrap();
    assert_eq!(tail.matches("data: ").count(), 2);
    assert!(tail.ends_with("data: [DONE]\n\n"));
}

/// Many events in one chunk after the slow path started, timed (not a pass/fail test):
/// `cargo test --release -p llmux --lib timing_ -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing_recovery_many_events_in_one_chunk() {
    let ev = ": k\n\n";
    for n in [25_000usize, 100_000] {
        let big = ev.repeat(n);
        let mut w = StreamWatch::new();
        w.feed(b"data: {}", false); // an unfinished event: the next chunk takes the slow path
        let t = std::time::Instant::now();
        let out = w.feed(format!("\n\n{big}").as_bytes(), false);
        eprintln!(
            "recovery: {n} events ({} bytes) in one chunk: {:?}",
            big.len(),
            t.elapsed()
        );
        assert_eq!(out.len(), big.len() + 10);
    }
}

/// Many events in one chunk after the slow path started (an unfinished event before it): the
/// bytes moved stay within one unfinished event per chunk, however many events the chunk has.
#[test]
fn many_events_in_one_chunk_are_read_in_linear_work() {
    for n in [1_000usize, 4_000] {
        let big = ": k\n\n".repeat(n);
        let mut w = StreamWatch::new();
        MOVED.with(|m| m.set(0));
        assert!(w.feed(b"data: {}", false).is_empty());
        let out = w.feed(format!("\n\n{big}data: {{").as_bytes(), false);
        assert_eq!(out.len(), big.len() + 10);
        assert!(MOVED.with(|m| m.get()) <= "data: {".len(), "{n}");
    }
}

/// One endless event (no blank line ever): the watch holds at most MAX_PENDING_EVENT, then
/// ends the stream with an error event and [DONE], once; later bytes are dropped.
#[test]
fn an_endless_event_is_cut_off_with_an_error_and_done() {
    let mut w = StreamWatch::new();
    let mut out = w.feed(HEAD.as_bytes(), false);
    assert_eq!(out, HEAD.as_bytes());
    out.extend(w.feed(b"data: {\"x\":\"", false));
    let line = vec![b'a'; 64 * 1024];
    let mut fed = 0;
    while fed <= MAX_PENDING_EVENT {
        out.extend(w.feed(&line, false));
        fed += line.len();
        assert!(w.pending.len() <= MAX_PENDING_EVENT);
    }
    let text = String::from_utf8(out.clone()).unwrap();
    let tail = &text[HEAD.len()..];
    assert!(tail.starts_with("data: {\"error\":"), "{tail}");
    assert!(tail.contains("upstream_event_too_large"), "{tail}");
    assert!(tail.ends_with("\n\ndata: [DONE]\n\n"), "{tail}");
    assert_eq!(text.matches("[DONE]").count(), 1);
    assert!(w.feed(b"\n\ndata: [DONE]\n\n", true).is_empty());
    assert_eq!(w.end(), StreamEnd::NotRecoverable);
    assert!(w.take_held().is_empty());
}

/// After an error event, at most MAX_HELD is held back; what is held still ends with [DONE].
#[test]
fn held_bytes_are_capped() {
    let mut w = StreamWatch::new();
    let mut out = w.feed(format!("{HEAD}{ERROR}").as_bytes(), false);
    let ev = format!("data: {{\"x\":\"{}\"}}\n\n", "b".repeat(1000));
    for _ in 0..(2 * MAX_HELD / ev.len()) {
        out.extend(w.feed(ev.as_bytes(), false));
        assert!(w.held.len() <= MAX_HELD);
    }
    out.extend(w.feed(b"", true));
    assert_eq!(out, HEAD.as_bytes());
    assert_eq!(w.end(), broken("Hello wör"));
    let held = w.take_held();
    assert!(held.starts_with(ERROR.as_bytes()));
    assert!(held.ends_with(DONE.as_bytes()));
    assert!(held.len() <= MAX_HELD + DONE.len());
}

/// A stream whose text outgrows MAX_PARTIAL_TEXT is not recoverable, and its text is let go.
#[test]
fn partial_text_is_capped() {
    let piece = "w".repeat(64 * 1024);
    let ev = format!(
        "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{piece}\"}},\"finish_reason\":null}}]}}\n\n"
    );
    let mut w = StreamWatch::new();
    for _ in 0..(MAX_PARTIAL_TEXT / piece.len()) {
        w.feed(ev.as_bytes(), false);
    }
    assert_eq!(w.partial_text().len(), MAX_PARTIAL_TEXT);
    w.feed(ev.as_bytes(), false);
    assert!(w.partial_text().is_empty());
    let out = w.feed(ERROR.as_bytes(), true);
    assert_eq!(out, ERROR.as_bytes(), "not held: nothing to recover");
    assert_eq!(w.end(), StreamEnd::NotRecoverable);
}
