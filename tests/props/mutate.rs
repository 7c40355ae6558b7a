//! Seeded mutation of realistic inputs: structural edits of JSON values, edits of event lists,
//! then byte edits. The edits are a proptest-generated list, so a failure shrinks to few edits.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// One edit: what to do, where (index modulo the number of places), with what.
pub type Op = (u8, u32, u32);

pub fn ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec((any::<u8>(), any::<u32>(), any::<u32>()), 0..max)
}

/// Chunk sizes to cut a byte stream with (cycled; 0 is an empty callback).
pub fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![4 => 1usize..8, 3 => 8usize..64, 1 => 64usize..600, 1 => Just(0usize)],
        1..12,
    )
}

/// `bytes` cut by the sizes in `cuts` (cycled); every byte is in exactly one chunk.
pub fn chunked<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    if cuts.iter().all(|&c| c == 0) {
        out.push(&b""[..]);
        out.push(bytes);
        return out;
    }
    let mut at = 0;
    let mut i = 0;
    while at < bytes.len() {
        let n = cuts[i % cuts.len()].min(bytes.len() - at);
        out.push(&bytes[at..at + n]);
        at += n;
        i += 1;
    }
    out
}

const WORDS: &[&str] = &[
    "role",
    "content",
    "type",
    "text",
    "tool_calls",
    "function",
    "arguments",
    "name",
    "id",
    "index",
    "delta",
    "choices",
    "usage",
    "finish_reason",
    "stop_reason",
    "model",
    "stream",
    "messages",
    "tools",
    "image_url",
    "url",
    "input",
    "tool_use",
    "tool_result",
    "image",
    "source",
    "data",
    "media_type",
    "system",
    "user",
    "assistant",
    "tool",
    "developer",
    "parts",
    "functionCall",
    "functionResponse",
    "args",
    "candidates",
    "finishReason",
    "usageMetadata",
    "contentBlockIndex",
    "toolUse",
    "toolUseId",
    "stopReason",
    "message",
    "error",
    "thinking",
    "signature",
    "partial_json",
    "input_json_delta",
    "text_delta",
    "content_block_start",
    "content_block_delta",
    "message_delta",
    "message_stop",
    "stream_options",
    "include_usage",
    "response_format",
    "json_schema",
    "schema",
    "tool_choice",
    "max_tokens",
    "stop",
    "n",
    "temperature",
    "tool_call_id",
    "refusal",
    "reasoning_content",
    "thought",
    "thoughtSignature",
    "inlineData",
    "mimeType",
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "promptTokenCount",
    "candidatesTokenCount",
    "inputTokens",
    "outputTokens",
    "[DONE]",
    "data:image/png;base64,iVBORw0KGgo=",
    "data:,",
    "data:image/png;base64,!!",
    "https://x/y.png",
    "{",
    "{\"a\":",
    "}",
    "[",
    "",
    " ",
    "\u{0}",
    "é\u{2028}\u{fffd}",
    "\u{1F600}",
    "\\",
    "\n\ndata: [DONE]\n\n",
    "auto",
    "none",
    "required",
    "any",
    "json_object",
    "end_turn",
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "TOOL_CALL",
    "COMPLETE",
    "length",
    "stop_sequence",
];

fn scalar(b: u32) -> Value {
    match b % 16 {
        0 => Value::Bool(true),
        1 => Value::Bool(false),
        2 => Value::from(0),
        3 => Value::from(-1),
        4 => Value::from(1.5),
        5 => Value::from(1e308),
        6 => Value::from(u64::MAX),
        7 => Value::from(i64::MIN),
        8 => Value::from(4294967296u64),
        9 => Value::from(65536),
        _ => Value::String(WORDS[(b as usize / 16) % WORDS.len()].to_string()),
    }
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

fn nth(v: &Value, mut n: usize) -> Option<&Value> {
    fn go<'a>(v: &'a Value, n: &mut usize) -> Option<&'a Value> {
        if *n == 0 {
            return Some(v);
        }
        *n -= 1;
        match v {
            Value::Array(a) => a.iter().find_map(|c| go(c, n)),
            Value::Object(o) => o.values().find_map(|c| go(c, n)),
            _ => None,
        }
    }
    go(v, &mut n)
}

fn nth_mut(v: &mut Value, mut n: usize) -> Option<&mut Value> {
    fn go<'a>(v: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
        if *n == 0 {
            return Some(v);
        }
        *n -= 1;
        match v {
            Value::Array(a) => a.iter_mut().find_map(|c| go(c, n)),
            Value::Object(o) => o.values_mut().find_map(|c| go(c, n)),
            _ => None,
        }
    }
    go(v, &mut n)
}

/// One structural edit of a JSON value.
pub fn mutate_json(v: &mut Value, (kind, a, b): Op) {
    let n = count(v);
    let at = a as usize % n;
    let other = nth(v, b as usize % n).cloned().unwrap_or(Value::Null);
    let Some(node) = nth_mut(v, at) else { return };
    match kind % 12 {
        0 => *node = Value::Null,
        1 | 2 => *node = scalar(b),
        3 => *node = Value::Array(Vec::new()),
        4 => *node = Value::Object(Map::new()),
        5 => *node = other, // recombination: a node elsewhere in the value
        6 => *node = Value::Array(vec![std::mem::take(node)]),
        7 => match node {
            // remove a child
            Value::Object(o) if !o.is_empty() => {
                let k = o.keys().nth(b as usize % o.len()).cloned().unwrap();
                o.remove(&k);
            }
            Value::Array(x) if !x.is_empty() => {
                x.remove(b as usize % x.len());
            }
            _ => *node = Value::Null,
        },
        8 => match node {
            // add a child with a known name
            Value::Object(o) => {
                o.insert(WORDS[b as usize % WORDS.len()].to_string(), other);
            }
            Value::Array(x) => x.push(other),
            _ => *node = scalar(b),
        },
        9 => match node {
            Value::String(s) => {
                let cut = (b as usize % (s.len() + 1)).min(s.len());
                let cut = (0..=cut)
                    .rev()
                    .find(|&i| s.is_char_boundary(i))
                    .unwrap_or(0);
                s.truncate(cut);
                s.push_str(WORDS[(b as usize / 7) % WORDS.len()]);
            }
            Value::Array(x) if !x.is_empty() => {
                let d = x[b as usize % x.len()].clone();
                x.push(d);
            }
            Value::Number(_) => *node = Value::from((b as i64) - (1 << 31)),
            _ => *node = scalar(b),
        },
        10 => {
            // the value's type changes, its content stays (a string holding JSON text)
            *node = Value::String(node.to_string());
        }
        _ => {
            if let Value::String(s) = node {
                if let Ok(parsed) = serde_json::from_str::<Value>(s) {
                    *node = parsed;
                } else {
                    *node = Value::String(s.repeat(1 + (b as usize % 4)));
                }
            } else {
                *node = scalar(b);
            }
        }
    }
}

const SNIPPETS: &[&[u8]] = &[
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"data: ",
    b"data: [DONE]\n\n",
    b"event: error\n",
    b":",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b"\\",
    b"\\u",
    b"\\ud800",
    b"\xff",
    b"\xe2\x82",
    b"\x00",
    b"null",
    b"1e999",
    b"-0",
    b"--",
    b"\r\n\r\n",
];

/// One byte edit.
pub fn mutate_bytes(bytes: &mut Vec<u8>, (kind, a, b): Op) {
    let len = bytes.len();
    let at = if len == 0 { 0 } else { a as usize % (len + 1) };
    match kind % 6 {
        0 if len > 0 => bytes[at.min(len - 1)] ^= 1 << (b % 8),
        1 => bytes.insert(at, b as u8),
        2 if len > 0 => {
            let end = (at + 1 + b as usize % 16).min(len);
            bytes.drain(at.min(len)..end);
        }
        3 => bytes.truncate(at),
        4 => {
            let s = SNIPPETS[b as usize % SNIPPETS.len()];
            bytes.splice(at..at, s.iter().copied());
        }
        _ => {
            // duplicate a slice in place
            if len > 0 {
                let start = at.min(len - 1);
                let end = (start + 1 + b as usize % 64).min(len);
                let dup: Vec<u8> = bytes[start..end].to_vec();
                bytes.splice(end..end, dup);
            }
        }
    }
}

/// A JSON seed after the edits: most are structural (the result still parses and reaches deep
/// code), a few (`kind >= 200`) are byte edits of the serialised text.
pub fn mutate_doc(seed: &Value, ops: &[Op]) -> Vec<u8> {
    let mut v = seed.clone();
    let mut bytes: Option<Vec<u8>> = None;
    for &op in ops {
        if op.0 >= 200 {
            let b = bytes.get_or_insert_with(|| serde_json::to_vec(&v).unwrap());
            mutate_bytes(b, op);
        } else if let Some(b) = &bytes {
            if let Ok(parsed) = serde_json::from_slice::<Value>(b) {
                v = parsed;
                bytes = None;
                mutate_json(&mut v, op);
            }
        } else {
            mutate_json(&mut v, op);
        }
    }
    bytes.unwrap_or_else(|| serde_json::to_vec(&v).unwrap())
}

/// One event of a provider stream: its name and JSON payload (or raw text such as `[DONE]`).
#[derive(Clone, Debug)]
pub struct Event {
    pub name: Option<String>,
    pub data: Result<Value, String>,
}

/// Edits of an event list: payload edits (`< 160`), event removal, duplication, swap,
/// truncation; the framing's byte edits are left to the caller (`>= 200`).
pub fn mutate_events(events: &mut Vec<Event>, ops: &[Op]) {
    for &(kind, a, b) in ops {
        if events.is_empty() {
            return;
        }
        let i = a as usize % events.len();
        match kind {
            0..=159 => {
                if let Ok(v) = &mut events[i].data {
                    mutate_json(v, (kind, b, b.rotate_left(16)));
                } else {
                    events[i].data = Ok(scalar(b));
                }
            }
            160..=169 => {
                events.remove(i);
            }
            170..=179 => {
                let e = events[i].clone();
                events.insert(b as usize % (events.len() + 1), e);
            }
            180..=189 => {
                let j = b as usize % events.len();
                events.swap(i, j);
            }
            190..=194 => events.truncate(i),
            195..=199 => {
                events[i].name = Some(WORDS[b as usize % WORDS.len()].to_string());
            }
            _ => {}
        }
    }
}

/// The events as `text/event-stream`.
pub fn render_sse(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        if let Some(n) = &e.name {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(n.as_bytes());
            out.push(b'\n');
        }
        out.extend_from_slice(b"data: ");
        match &e.data {
            Ok(v) => out.extend_from_slice(&serde_json::to_vec(v).unwrap()),
            Err(s) => out.extend_from_slice(s.as_bytes()),
        }
        out.extend_from_slice(b"\n\n");
    }
    out
}

/// Parses a `text/event-stream` seed into events (with the crate's own parser).
pub fn parse_sse(bytes: &[u8]) -> Vec<Event> {
    let mut p = llmux::codec::sse::SseParser::new();
    let mut out = Vec::new();
    let mut on = |e: llmux::codec::sse::SseEvent| {
        let text = e.text().into_owned();
        out.push(Event {
            name: e.event.map(str::to_string),
            data: serde_json::from_str(&text).map_err(|_| text),
        })
    };
    p.feed(bytes, &mut on);
    p.finish(&mut on);
    out
}

/// Encodes one AWS event-stream message with string headers.
pub fn eventstream_frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (k, v) in headers {
        h.push(k.len() as u8);
        h.extend_from_slice(k.as_bytes());
        h.push(7);
        h.extend_from_slice(&(v.len() as u16).to_be_bytes());
        h.extend_from_slice(v.as_bytes());
    }
    eventstream_raw(&h, payload)
}

/// Encodes one AWS event-stream message from encoded headers.
pub fn eventstream_raw(headers: &[u8], payload: &[u8]) -> Vec<u8> {
    use llmux::aws::eventstream::crc32;
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

/// The events as Bedrock's event stream (`event` messages; a name starting with `!` makes an
/// `exception` message of that type).
pub fn render_eventstream(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        let payload = match &e.data {
            Ok(v) => serde_json::to_vec(v).unwrap(),
            Err(s) => s.clone().into_bytes(),
        };
        let name = e.name.as_deref().unwrap_or("");
        let frame = match name.strip_prefix('!') {
            Some(exc) => eventstream_frame(
                &[
                    (":message-type", "exception"),
                    (":exception-type", exc),
                    (":content-type", "application/json"),
                ],
                &payload,
            ),
            None => eventstream_frame(
                &[
                    (":event-type", name),
                    (":content-type", "application/json"),
                    (":message-type", "event"),
                ],
                &payload,
            ),
        };
        out.extend(frame);
    }
    out
}
