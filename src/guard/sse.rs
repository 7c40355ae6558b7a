//! The guardrails over a streamed answer as it goes to the client: OpenAI chat chunks,
//! Anthropic Messages events or OpenAI Responses events ([`responses`]), at any chunk boundary.
//!
//! Each output channel — a choice's `content`, a choice's tool call's `arguments`, an Anthropic
//! content block's `text` / `partial_json` / `thinking` — gets one [`StreamGuard`] per applicable
//! guardrail (chained: what one emits, the next scans), which holds back the last `window` bytes
//! so that a value cut across deltas is still caught (docs/guardrails.md, "Streaming"). An event
//! whose text changed is re-serialised; one without text passes as it came. What is held is
//! flushed into the event that closes the channel (OpenAI: a chunk just before the one with the
//! choice's `finish_reason`; Anthropic: a delta just before `content_block_stop`). On a block the
//! client gets an error event (OpenAI: `{"error": ...}` then `[DONE]`; Anthropic: `event: error`)
//! and nothing after it; text already sent cannot be taken back.

mod responses;

use serde_json::{json, Map, Value};

use super::stream::StreamGuard;
use super::{AnsApi, Hit, Policy, Scan, Vault};
use crate::codec::sse::{write_data, write_event, SseParser};

/// A channel: (choice or block index, tool-call index for OpenAI arguments).
type Channel = (u64, Option<u64>);

/// At most this many channels per stream (a hostile provider's indices cannot grow memory).
const MAX_CHANNELS: usize = 256;

pub struct SseGuard {
    api: AnsApi,
    parser: SseParser,
    /// Per channel, one guard per applicable policy (in order).
    channels: Vec<(Channel, Vec<StreamGuard>)>,
    /// The stream was ended by a block (or the parser failed): nothing more goes out.
    done: bool,
    /// Hits per policy (its index in the configuration), gathered at the end.
    scans: Vec<(usize, Scan)>,
    /// The policies' indices in the configuration (as first fed).
    ids: Vec<usize>,
    /// Anthropic: the delta type each block's text came in (its flush uses the same).
    kinds: Vec<(u64, &'static str, &'static str)>,
    /// Responses: the text each channel emitted, sequence numbers, the response's id.
    resp: responses::State,
}

/// The message of a blocked answer: the guardrail and the rule, never the text.
fn block_message(hit: &Hit) -> String {
    format!(
        "the answer was blocked by guardrail `{}` (rule `{}`)",
        hit.guardrail, hit.rule
    )
}

/// The error a blocked stream ends with, in the client's API.
fn block_event(api: AnsApi, hit: &Hit, out: &mut Vec<u8>) {
    let message = block_message(hit);
    match api {
        AnsApi::Chat => {
            let e = json!({"error": {"message": message, "type": "invalid_request_error",
                "param": format!("{}.{}", hit.guardrail, hit.rule), "code": "guardrail_blocked"}});
            write_data(out, e.to_string().as_bytes());
            write_data(out, b"[DONE]");
        }
        AnsApi::Messages => {
            let e = json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}});
            write_event(out, "error", e.to_string().as_bytes());
        }
        // Written by `SseGuard::block` (it needs the stream's sequence numbers).
        AnsApi::Responses => {}
    }
}

impl SseGuard {
    pub fn new(api: AnsApi) -> SseGuard {
        SseGuard {
            api,
            parser: SseParser::new(),
            channels: Vec::new(),
            done: false,
            scans: Vec::new(),
            ids: Vec::new(),
            kinds: Vec::new(),
            resp: responses::State::default(),
        }
    }

    /// Ends the stream with the error of a block, in the client's API.
    fn block(&mut self, hit: &Hit, out: &mut Vec<u8>) {
        match self.api {
            AnsApi::Responses => self.responses_block(hit, out),
            api => block_event(api, hit, out),
        }
    }

    /// Feeds a chunk of the client's stream; appends what to send instead to `out`.
    pub fn feed(
        &mut self,
        policies: &[(usize, &Policy)],
        vault: &mut Vault,
        chunk: &[u8],
        end: bool,
        out: &mut Vec<u8>,
    ) {
        if self.done {
            return;
        }
        if self.ids.is_empty() {
            self.ids = policies.iter().map(|(i, _)| *i).collect();
        }
        let mut events: Vec<(Option<String>, Vec<u8>)> = Vec::new();
        self.parser.feed(chunk, &mut |ev| {
            events.push((ev.event.map(str::to_string), ev.data.to_vec()));
        });
        if end {
            self.parser
                .finish(&mut |ev| events.push((ev.event.map(str::to_string), ev.data.to_vec())));
        }
        for (name, data) in events {
            if self.done {
                break;
            }
            if let Err(hit) = self.event(policies, vault, name.as_deref(), &data, out) {
                self.block(&hit, out);
                self.done = true;
            }
        }
        if end && !self.done {
            // A stream that ended without closing its channels: what is held goes out last.
            if let Err(hit) = self.flush_all(policies, vault, out) {
                self.block(&hit, out);
            }
            self.done = true;
        }
        if end {
            self.collect();
        }
    }

    /// The hits per policy, once the stream ended.
    pub fn take_scans(&mut self) -> Vec<(usize, Scan)> {
        std::mem::take(&mut self.scans)
    }

    fn collect(&mut self) {
        for (_, guards) in &self.channels {
            for (k, g) in guards.iter().enumerate() {
                let id = self.ids.get(k).copied().unwrap_or(k);
                match self.scans.iter_mut().find(|(i, _)| *i == id) {
                    Some((_, s)) => s.merge(g.scan().clone()),
                    None => self.scans.push((id, g.scan().clone())),
                }
            }
        }
    }

    /// Runs `text` through the channel's guards; the text to emit now (or, `last`, all of it).
    fn pass(
        &mut self,
        policies: &[(usize, &Policy)],
        vault: &mut Vault,
        ch: Channel,
        text: &str,
        last: bool,
    ) -> Result<String, Hit> {
        let pos = match self.channels.iter().position(|(c, _)| *c == ch) {
            Some(p) => p,
            None if self.channels.len() < MAX_CHANNELS => {
                self.channels
                    .push((ch, policies.iter().map(|_| StreamGuard::new()).collect()));
                self.channels.len() - 1
            }
            None => return Ok(text.to_string()),
        };
        let guards = &mut self.channels[pos].1;
        let mut cur = text.to_string();
        for (g, (_, p)) in guards.iter_mut().zip(policies) {
            let mut next = String::new();
            g.push(p.response(), &cur, vault, &mut next)?;
            if last {
                g.finish(p.response(), vault, &mut next)?;
            }
            cur = next;
        }
        Ok(cur)
    }

    /// Flushes every open channel (the stream ended without closing them).
    fn flush_all(
        &mut self,
        policies: &[(usize, &Policy)],
        vault: &mut Vault,
        out: &mut Vec<u8>,
    ) -> Result<(), Hit> {
        let open: Vec<Channel> = self.channels.iter().map(|(c, _)| *c).collect();
        for ch in open {
            if self.api == AnsApi::Responses {
                self.responses_flush(policies, vault, ch, out)?;
                continue;
            }
            let text = self.pass(policies, vault, ch, "", true)?;
            if text.is_empty() {
                continue;
            }
            match self.api {
                AnsApi::Chat => {
                    let delta = match ch.1 {
                        None => json!({"content": text}),
                        Some(t) => {
                            json!({"tool_calls": [{"index": t, "function": {"arguments": text}}]})
                        }
                    };
                    let c = json!({"object": "chat.completion.chunk",
                                   "choices": [{"index": ch.0, "delta": delta, "finish_reason": null}]});
                    write_data(out, c.to_string().as_bytes());
                }
                AnsApi::Messages => {
                    let (kind, field) = self
                        .kinds
                        .iter()
                        .find(|k| k.0 == ch.0)
                        .map_or(("text_delta", "text"), |k| (k.1, k.2));
                    let mut delta = Map::new();
                    delta.insert("type".into(), Value::from(kind));
                    delta.insert(field.into(), Value::String(text));
                    let c = json!({"type": "content_block_delta", "index": ch.0, "delta": delta});
                    write_event(out, "content_block_delta", c.to_string().as_bytes());
                }
                AnsApi::Responses => {}
            }
        }
        Ok(())
    }

    fn event(
        &mut self,
        policies: &[(usize, &Policy)],
        vault: &mut Vault,
        name: Option<&str>,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Hit> {
        let passthrough = |out: &mut Vec<u8>| match name {
            Some(n) => write_event(out, n, data),
            None => write_data(out, data),
        };
        if data == b"[DONE]" {
            self.flush_all(policies, vault, out)?;
            passthrough(out);
            return Ok(());
        }
        let Ok(mut v) = serde_json::from_slice::<Value>(data) else {
            passthrough(out);
            return Ok(());
        };
        let changed = match self.api {
            AnsApi::Chat => self.chat_chunk(policies, vault, &mut v, out)?,
            AnsApi::Messages => self.messages_event(policies, vault, &mut v, out)?,
            AnsApi::Responses => self.responses_event(policies, vault, &mut v, out)?,
        };
        if changed {
            let bytes = v.to_string();
            match name {
                Some(n) => write_event(out, n, bytes.as_bytes()),
                None => write_data(out, bytes.as_bytes()),
            }
        } else {
            passthrough(out);
        }
        Ok(())
    }

    /// An OpenAI chunk: each choice's `delta.content` and tool-call `arguments` through their
    /// channels; a choice that finishes flushes its channels into a chunk written just before.
    fn chat_chunk(
        &mut self,
        policies: &[(usize, &Policy)],
        vault: &mut Vault,
        v: &mut Value,
        out: &mut Vec<u8>,
    ) -> Result<bool, Hit> {
        let mut changed = false;
        let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else {
            return Ok(false);
        };
        let mut flushed: Vec<Value> = Vec::new();
        for c in choices.iter_mut() {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
            let finishing = c.get("finish_reason").is_some_and(|f| !f.is_null());
            if let Some(delta) = c.get_mut("delta").and_then(Value::as_object_mut) {
                if let Some(Value::String(t)) = delta.get("content") {
                    let t = t.clone();
                    let emitted = self.pass(policies, vault, (index, None), &t, false)?;
                    if emitted != t {
                        delta.insert("content".into(), Value::String(emitted));
                        changed = true;
                    }
                }
                if let Some(calls) = delta.get_mut("tool_calls").and_then(Value::as_array_mut) {
                    for call in calls.iter_mut() {
                        let t_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let Some(f) = call.get_mut("function").and_then(Value::as_object_mut)
                        else {
                            continue;
                        };
                        if let Some(Value::String(a)) = f.get("arguments") {
                            let a = a.clone();
                            let emitted =
                                self.pass(policies, vault, (index, Some(t_index)), &a, false)?;
                            if emitted != a {
                                f.insert("arguments".into(), Value::String(emitted));
                                changed = true;
                            }
                        }
                    }
                }
            }
            if finishing {
                let open: Vec<Channel> = self
                    .channels
                    .iter()
                    .map(|(ch, _)| *ch)
                    .filter(|ch| ch.0 == index)
                    .collect();
                let mut content = String::new();
                let mut calls = Vec::new();
                for ch in open {
                    let rest = self.pass(policies, vault, ch, "", true)?;
                    if rest.is_empty() {
                        continue;
                    }
                    match ch.1 {
                        None => content = rest,
                        Some(t) => calls.push(json!({"index": t, "function": {"arguments": rest}})),
                    }
                }
                let mut delta = Map::new();
                if !content.is_empty() {
                    delta.insert("content".into(), Value::String(content));
                }
                if !calls.is_empty() {
                    delta.insert("tool_calls".into(), Value::Array(calls));
                }
                if !delta.is_empty() {
                    flushed.push(json!({"index": index, "delta": delta, "finish_reason": null}));
                }
            }
        }
        if !flushed.is_empty() {
            let mut pre = v.clone();
            if let Some(o) = pre.as_object_mut() {
                o.insert("choices".into(), Value::Array(flushed));
                o.remove("usage");
            }
            write_data(out, pre.to_string().as_bytes());
        }
        Ok(changed)
    }

    /// An Anthropic event: `content_block_delta` text through its block's channel;
    /// `content_block_stop` flushes the block into a delta written just before.
    fn messages_event(
        &mut self,
        policies: &[(usize, &Policy)],
        vault: &mut Vault,
        v: &mut Value,
        out: &mut Vec<u8>,
    ) -> Result<bool, Hit> {
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind.as_str() {
            "content_block_delta" => {
                let Some(delta) = v.get_mut("delta").and_then(Value::as_object_mut) else {
                    return Ok(false);
                };
                let (kind, field) = match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => ("text_delta", "text"),
                    Some("input_json_delta") => ("input_json_delta", "partial_json"),
                    Some("thinking_delta") => ("thinking_delta", "thinking"),
                    _ => return Ok(false),
                };
                if !self.kinds.iter().any(|k| k.0 == index) && self.kinds.len() < MAX_CHANNELS {
                    self.kinds.push((index, kind, field));
                }
                let Some(Value::String(t)) = delta.get(field) else {
                    return Ok(false);
                };
                let t = t.clone();
                let emitted = self.pass(policies, vault, (index, None), &t, false)?;
                if emitted == t {
                    return Ok(false);
                }
                delta.insert(field.into(), Value::String(emitted));
                Ok(true)
            }
            "content_block_stop" => {
                if !self.channels.iter().any(|(c, _)| c.0 == index) {
                    return Ok(false);
                }
                let rest = self.pass(policies, vault, (index, None), "", true)?;
                if !rest.is_empty() {
                    // In the block's own delta type (a tool's input is JSON text, a thinking
                    // block's is thinking).
                    let (kind, field) = self
                        .kinds
                        .iter()
                        .find(|k| k.0 == index)
                        .map_or(("text_delta", "text"), |k| (k.1, k.2));
                    let mut delta = Map::new();
                    delta.insert("type".into(), Value::from(kind));
                    delta.insert(field.into(), Value::String(rest));
                    let d = json!({"type": "content_block_delta", "index": index, "delta": delta});
                    write_event(out, "content_block_delta", d.to_string().as_bytes());
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(v: Value) -> Policy {
        Policy::from_value(&json!({ "guardrails": [v] })).unwrap()
    }

    fn chat_stream(deltas: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for d in deltas {
            let c = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                           "choices": [{"index": 0, "delta": {"content": d}, "finish_reason": null}]});
            write_data(&mut out, c.to_string().as_bytes());
        }
        let end = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        write_data(&mut out, end.to_string().as_bytes());
        write_data(&mut out, b"[DONE]");
        out
    }

    /// The text the client reads from a chat stream, and whether it ended in an error.
    fn read_chat(bytes: &[u8]) -> (String, bool) {
        let mut text = String::new();
        let mut error = false;
        let mut p = SseParser::new();
        p.feed(bytes, &mut |ev| {
            if ev.data == b"[DONE]" {
                return;
            }
            let v: Value = serde_json::from_slice(ev.data).unwrap();
            if v.get("error").is_some() {
                error = true;
            }
            for c in v["choices"].as_array().into_iter().flatten() {
                if let Some(t) = c["delta"]["content"].as_str() {
                    text.push_str(t);
                }
            }
        });
        (text, error)
    }

    fn run(p: &Policy, api: AnsApi, stream: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut g = SseGuard::new(api);
        let mut vault = Vault::new();
        let mut out = Vec::new();
        let mut at = 0;
        for &c in cuts.iter().chain(std::iter::once(&stream.len())) {
            let end = c == stream.len();
            g.feed(&[(0, p)], &mut vault, &stream[at..c], end, &mut out);
            at = c;
        }
        out
    }

    const SECRET: &str = "contact me at jane.doe@example.com today";

    #[test]
    fn an_email_cut_at_every_byte_offset_is_masked() {
        let p = policy(json!({"name": "pii", "on": ["response"],
                              "rules": [{"detector": "email", "action": "mask"}]}));
        let (split_a, split_b) = SECRET.split_at(20);
        let stream = chat_stream(&[split_a, split_b]);
        for cut in 0..=stream.len() {
            let out = run(&p, AnsApi::Chat, &stream, &[cut]);
            let (text, error) = read_chat(&out);
            assert!(!error);
            assert_eq!(text, "contact me at <EMAIL_1> today", "cut at {cut}");
        }
        // And with the text cut into one delta per character.
        let chars: Vec<String> = SECRET.chars().map(String::from).collect();
        let deltas: Vec<&str> = chars.iter().map(String::as_str).collect();
        let out = run(&p, AnsApi::Chat, &chat_stream(&deltas), &[]);
        assert_eq!(read_chat(&out).0, "contact me at <EMAIL_1> today");
    }

    #[test]
    fn a_blocked_stream_ends_with_an_error_and_nothing_after() {
        let p = policy(json!({"name": "keys", "on": ["response"],
                              "rules": [{"detector": "secret", "action": "block"}]}));
        let key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd";
        let stream = chat_stream(&["here: ", &key[..10], &key[10..], " enjoy", " more text"]);
        for cut in [0, 7, 50, stream.len() / 2] {
            let out = run(&p, AnsApi::Chat, &stream, &[cut]);
            let s = String::from_utf8_lossy(&out);
            assert!(!s.contains("sk-proj"), "the key never goes out: {s}");
            assert!(s.contains("guardrail_blocked"));
            assert!(s.trim_end().ends_with("data: [DONE]"));
            assert!(!s.contains("more text"));
        }
    }

    #[test]
    fn anthropic_blocks_are_masked_and_flushed_before_their_stop() {
        let p = policy(json!({"name": "pii", "on": ["response"],
                              "rules": [{"detector": "email", "action": "mask"}]}));
        let mut stream = Vec::new();
        write_event(
            &mut stream,
            "message_start",
            br#"{"type":"message_start","message":{"id":"m"}}"#,
        );
        write_event(&mut stream, "content_block_start", br#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#);
        for part in ["mail jane.doe@exa", "mple.com now"] {
            let d = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": part}});
            write_event(&mut stream, "content_block_delta", d.to_string().as_bytes());
        }
        write_event(
            &mut stream,
            "content_block_stop",
            br#"{"type":"content_block_stop","index":0}"#,
        );
        write_event(&mut stream, "message_stop", br#"{"type":"message_stop"}"#);
        for cut in 0..=stream.len() {
            let out = run(&p, AnsApi::Messages, &stream, &[cut]);
            let mut text = String::new();
            let mut order = Vec::new();
            SseParser::new().feed(&out, &mut |ev| {
                let v: Value = serde_json::from_slice(ev.data).unwrap();
                order.push(v["type"].as_str().unwrap_or("").to_string());
                if let Some(t) = v["delta"]["text"].as_str() {
                    text.push_str(t);
                }
            });
            assert_eq!(text, "mail <EMAIL_1> now", "cut at {cut}");
            let stop = order
                .iter()
                .position(|t| t == "content_block_stop")
                .unwrap();
            let last_delta = order
                .iter()
                .rposition(|t| t == "content_block_delta")
                .unwrap();
            assert!(last_delta < stop);
        }
    }

    #[test]
    fn restore_brings_back_what_the_request_masked() {
        let p = policy(json!({"name": "pii", "restore": true,
                              "rules": [{"detector": "email", "action": "mask"}]}));
        let stream = chat_stream(&["Sure, <EMA", "IL_1> it is"]);
        for cut in 0..=stream.len() {
            let mut v = Vault::new();
            let mut masked = String::new();
            let scan = p
                .request()
                .scan_text("write to jane.doe@example.com", &mut v, &mut masked);
            assert!(scan.masked);
            assert_eq!(masked, "write to <EMAIL_1>");
            let mut g = SseGuard::new(AnsApi::Chat);
            let mut out = Vec::new();
            g.feed(&[(0, &p)], &mut v, &stream[..cut], false, &mut out);
            g.feed(&[(0, &p)], &mut v, &stream[cut..], true, &mut out);
            assert_eq!(
                read_chat(&out).0,
                "Sure, jane.doe@example.com it is",
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn hostile_indices_do_not_grow_memory() {
        let p = policy(json!({"name": "pii", "on": ["response"],
                              "rules": [{"detector": "email", "action": "mask"}]}));
        let mut stream = Vec::new();
        for i in 0..10_000u64 {
            let c = json!({"choices": [{"index": i, "delta": {"content": "x"}}]});
            write_data(&mut stream, c.to_string().as_bytes());
        }
        let mut g = SseGuard::new(AnsApi::Chat);
        let mut vault = Vault::new();
        let mut out = Vec::new();
        g.feed(&[(0, &p)], &mut vault, &stream, true, &mut out);
        assert!(g.channels.len() <= MAX_CHANNELS);
    }
}
