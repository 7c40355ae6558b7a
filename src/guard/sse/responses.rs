//! The guardrails over an OpenAI Responses stream (the semantic events: `event: <type>` and a
//! JSON `data` with the same `type` and a `sequence_number`).
//!
//! Event shapes: openai/openai-python `src/openai/types/responses/response_*_event.py` and
//! <https://platform.openai.com/docs/api-reference/responses-streaming>; the gateway's own
//! translated stream (`crate::client_api::responses::stream`) emits the same.
//!
//! - The channels: `response.output_text.delta` (`delta`) per `(output_index, content_index)`,
//!   `response.function_call_arguments.delta` (`delta`) per `output_index`. Each goes through
//!   the channel's [`StreamGuard`]s (hold-back window) like a chat choice; reasoning summaries
//!   (`response.reasoning_summary_text.*`) are not touched, as in a whole answer.
//! - What a channel holds back is flushed as one more delta event just before the event that
//!   ends it (`response.output_text.done`, `response.function_call_arguments.done`, or the
//!   first later event repeating its text); the sequence numbers of the events after an
//!   inserted one are shifted so that they still count up by one.
//! - The events that repeat the whole text — `response.output_text.done` (`text`),
//!   `response.function_call_arguments.done` (`arguments`), `response.content_part.done`
//!   (`part.text`), `response.output_item.added`/`.done` (`item`), `response.completed` /
//!   `response.incomplete` / `response.failed` (`response.output[]`) — carry the text the
//!   client got in the deltas (masked and restored the same way), never the provider's. Past
//!   [`MAX_KEPT`] bytes kept, or for a text that came in no delta, the repeated text is scanned
//!   whole instead (the same detectors and vault: the same placeholders; a block rule ends the
//!   stream).
//! - A block ends the stream as the gateway ends a failed Responses stream
//!   (`crate::client_api::responses::stream`, `fail`): an `error` event (`{"type": "error",
//!   "code", "message", "param", "sequence_number"}`, openai-python `response_error_event.py`)
//!   then `response.failed` (the response with `status: "failed"` and `error {code, message}`,
//!   `response_failed_event.py`), and nothing after it.

use serde_json::{json, Map, Value};

use super::{block_message, Channel, SseGuard, MAX_CHANNELS};
use crate::codec::sse::write_event;
use crate::guard::{Hit, Policy, Vault};

/// The most text the channels of one stream keep to repeat it in the `.done` events (the
/// gateway's translated Responses stream keeps as much: `MAX_OUTPUT_BYTES`).
pub const MAX_KEPT: usize = 4 * 1024 * 1024;
/// The most bytes of an `item_id` kept (for a flushed delta event).
const MAX_ID: usize = 256;
/// The most bytes of the `response` object kept from `response.created` for `response.failed`.
const MAX_STUB: usize = 64 * 1024;

/// One channel's state beyond its guards.
struct Chan {
    ch: Channel,
    item_id: String,
    /// The text the client got in this channel's deltas (`None`: past [`MAX_KEPT`]).
    text: Option<String>,
    /// The channel was flushed (its guards finished).
    closed: bool,
}

#[derive(Default)]
pub(super) struct State {
    chans: Vec<Chan>,
    kept: usize,
    /// Events inserted so far: every later event's `sequence_number` is shifted by this.
    shift: u64,
    /// The sequence number an event written now gets.
    next_seq: u64,
    /// The `response` of `response.created` (without its output), for `response.failed`.
    stub: Option<Map<String, Value>>,
}

fn text_channel(v: &Value) -> Channel {
    let oi = v.get("output_index").and_then(Value::as_u64).unwrap_or(0);
    let ci = v.get("content_index").and_then(Value::as_u64).unwrap_or(0);
    (oi, Some(ci))
}

fn args_channel(v: &Value) -> Channel {
    (
        v.get("output_index").and_then(Value::as_u64).unwrap_or(0),
        None,
    )
}

impl SseGuard {
    /// One Responses event; `Ok(true)` when it changed (it is written re-serialised).
    pub(super) fn responses_event(
        &mut self,
        policies: &[(usize, &Policy)],
        vault: &mut Vault,
        v: &mut Value,
        out: &mut Vec<u8>,
    ) -> Result<bool, Hit> {
        let seq = v.get("sequence_number").and_then(Value::as_u64);
        if let Some(s) = seq {
            self.resp.next_seq = s.saturating_add(self.resp.shift);
        }
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut changed = match kind.as_str() {
            "response.created" | "response.in_progress" => {
                if self.resp.stub.is_none() {
                    self.resp.stub = v.get("response").and_then(Value::as_object).map(|r| {
                        let mut stub = Map::new();
                        for (k, x) in r {
                            if k != "output" {
                                stub.insert(k.clone(), x.clone());
                            }
                        }
                        stub
                    });
                    let big = self
                        .resp
                        .stub
                        .as_ref()
                        .is_some_and(|s| Value::Object(s.clone()).to_string().len() > MAX_STUB);
                    if big {
                        // Only what identifies the response (a huge `instructions` echo).
                        if let Some(s) = self.resp.stub.as_mut() {
                            s.retain(|k, _| {
                                matches!(k.as_str(), "id" | "object" | "created_at" | "model")
                            });
                        }
                    }
                }
                self.rewrite_output(policies, vault, v, out, false)?
            }
            "response.output_text.delta" => {
                self.responses_delta(policies, vault, v, text_channel(v))?
            }
            "response.function_call_arguments.delta" => {
                self.responses_delta(policies, vault, v, args_channel(v))?
            }
            "response.output_text.done" => {
                let ch = text_channel(v);
                self.rewrite_field(policies, vault, v, "text", ch, true, out)?
            }
            "response.function_call_arguments.done" => {
                let ch = args_channel(v);
                self.rewrite_field(policies, vault, v, "arguments", ch, true, out)?
            }
            "response.content_part.added" | "response.content_part.done" => {
                let ch = text_channel(v);
                let end = kind.ends_with(".done");
                match v.get_mut("part") {
                    Some(part)
                        if part.get("type").and_then(Value::as_str) == Some("output_text") =>
                    {
                        self.rewrite_field(policies, vault, part, "text", ch, end, out)?
                    }
                    _ => false,
                }
            }
            "response.output_item.added" | "response.output_item.done" => {
                let oi = v.get("output_index").and_then(Value::as_u64).unwrap_or(0);
                let end = kind.ends_with(".done");
                match v.get_mut("item") {
                    Some(item) => self.rewrite_item(policies, vault, item, oi, end, out)?,
                    None => false,
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                // The end: whatever is still held goes out first.
                let open: Vec<Channel> = self
                    .resp
                    .chans
                    .iter()
                    .filter(|c| !c.closed)
                    .map(|c| c.ch)
                    .collect();
                for ch in open {
                    self.responses_flush(policies, vault, ch, out)?;
                }
                self.rewrite_output(policies, vault, v, out, true)?
            }
            _ => false,
        };
        if let (Some(s), true) = (seq, self.resp.shift > 0) {
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "sequence_number".into(),
                    json!(s.saturating_add(self.resp.shift)),
                );
                changed = true;
            }
        }
        self.resp.next_seq = self.resp.next_seq.saturating_add(1);
        Ok(changed)
    }

    /// A text or arguments delta through its channel.
    fn responses_delta(
        &mut self,
        policies: &[(usize, &Policy)],
        vault: &mut Vault,
        v: &mut Value,
        ch: Channel,
    ) -> Result<bool, Hit> {
        let Some(Value::String(t)) = v.get("delta") else {
            return Ok(false);
        };
        let t = t.clone();
        if !self.resp.chans.iter().any(|c| c.ch == ch) && self.resp.chans.len() < MAX_CHANNELS {
            let mut item_id = v
                .get("item_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if item_id.len() > MAX_ID {
                item_id.clear();
            }
            self.resp.chans.push(Chan {
                ch,
                item_id,
                text: Some(String::new()),
                closed: false,
            });
        }
        let emitted = self.pass(policies, vault, ch, &t, false)?;
        self.keep(ch, &emitted);
        if emitted == t {
            return Ok(false);
        }
        if let Some(o) = v.as_object_mut() {
            o.insert("delta".into(), Value::String(emitted));
        }
        Ok(true)
    }

    /// Appends what a channel emitted to its kept text (dropped past [`MAX_KEPT`]).
    fn keep(&mut self, ch: Channel, emitted: &str) {
        let Some(c) = self.resp.chans.iter_mut().find(|c| c.ch == ch) else {
            return;
        };
        c.closed = false;
        let Some(text) = c.text.as_mut() else {
            return;
        };
        if self.resp.kept.saturating_add(emitted.len()) > MAX_KEPT {
            self.resp.kept -= text.len();
            c.text = None;
            return;
        }
        self.resp.kept += emitted.len();
        text.push_str(emitted);
    }

    /// Ends channel `ch`: what it holds goes out as one more delta event.
    pub(super) fn responses_flush(
        &mut self,
        policies: &[(usize, &Policy)],
        vault: &mut Vault,
        ch: Channel,
        out: &mut Vec<u8>,
    ) -> Result<(), Hit> {
        if !self.channels.iter().any(|(c, _)| *c == ch) {
            return Ok(());
        }
        if self.resp.chans.iter().any(|c| c.ch == ch && c.closed) {
            return Ok(());
        }
        let rest = self.pass(policies, vault, ch, "", true)?;
        self.keep(ch, &rest);
        let item_id = match self.resp.chans.iter_mut().find(|c| c.ch == ch) {
            Some(c) => {
                c.closed = true;
                c.item_id.clone()
            }
            None => String::new(),
        };
        if rest.is_empty() {
            return Ok(());
        }
        let (ty, ev) = match ch.1 {
            Some(ci) => (
                "response.output_text.delta",
                json!({"type": "response.output_text.delta", "item_id": item_id,
                    "output_index": ch.0, "content_index": ci, "delta": rest, "logprobs": [],
                    "sequence_number": self.resp.next_seq}),
            ),
            None => (
                "response.function_call_arguments.delta",
                json!({"type": "response.function_call_arguments.delta", "item_id": item_id,
                    "output_index": ch.0, "delta": rest, "sequence_number": self.resp.next_seq}),
            ),
        };
        write_event(out, ty, ev.to_string().as_bytes());
        self.resp.shift += 1;
        self.resp.next_seq = self.resp.next_seq.saturating_add(1);
        Ok(())
    }

    /// The text a repeated field carries for channel `ch`: what the client got in the deltas
    /// (`end`: the channel is flushed first), else the field scanned whole.
    fn full_text(
        &mut self,
        policies: &[(usize, &Policy)],
        vault: &mut Vault,
        ch: Channel,
        original: &str,
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<Option<String>, Hit> {
        let streamed = self.resp.chans.iter().any(|c| c.ch == ch);
        if streamed && end {
            self.responses_flush(policies, vault, ch, out)?;
        }
        if let Some(t) = self
            .resp
            .chans
            .iter()
            .find(|c| c.ch == ch)
            .and_then(|c| c.text.as_ref())
        {
            return Ok((t != original).then(|| t.clone()));
        }
        if original.is_empty() {
            return Ok(None);
        }
        // No delta carried it (or past the cap): scanned whole, like a whole answer's field.
        let mut cur = original.to_string();
        for &(i, p) in policies {
            let mut masked = String::new();
            let scan = p.response().scan_text(&cur, vault, &mut masked);
            let blocked = scan.blocked.clone();
            if !streamed {
                match self.scans.iter_mut().find(|(j, _)| *j == i) {
                    Some((_, s)) => s.merge(scan.clone()),
                    None => self.scans.push((i, scan.clone())),
                }
            }
            if let Some(hit) = blocked {
                return Err(hit);
            }
            if scan.masked {
                cur = masked;
            }
            if vault.has_restorable() {
                let mut r = String::new();
                if vault.restore_into(&cur, &mut r) > 0 {
                    cur = r;
                }
            }
        }
        Ok((cur != original).then_some(cur))
    }

    /// Sets `obj[field]` (a string) to the channel's text; `true` when it changed.
    #[allow(clippy::too_many_arguments)]
    fn rewrite_field(
        &mut self,
        policies: &[(usize, &Policy)],
        vault: &mut Vault,
        obj: &mut Value,
        field: &str,
        ch: Channel,
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<bool, Hit> {
        let Some(Value::String(t)) = obj.get(field) else {
            return Ok(false);
        };
        let t = t.clone();
        match self.full_text(policies, vault, ch, &t, end, out)? {
            Some(new) => {
                if let Some(o) = obj.as_object_mut() {
                    o.insert(field.into(), Value::String(new));
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// An output item: a `message`'s `output_text` parts, a `function_call`'s `arguments`.
    fn rewrite_item(
        &mut self,
        policies: &[(usize, &Policy)],
        vault: &mut Vault,
        item: &mut Value,
        oi: u64,
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<bool, Hit> {
        let mut changed = false;
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                let Some(parts) = item.get_mut("content").and_then(Value::as_array_mut) else {
                    return Ok(false);
                };
                for (ci, part) in parts.iter_mut().enumerate() {
                    if part.get("type").and_then(Value::as_str) != Some("output_text") {
                        continue;
                    }
                    let ch = (oi, Some(ci as u64));
                    changed |= self.rewrite_field(policies, vault, part, "text", ch, end, out)?;
                }
            }
            Some("function_call") => {
                changed |=
                    self.rewrite_field(policies, vault, item, "arguments", (oi, None), end, out)?;
            }
            _ => {}
        }
        Ok(changed)
    }

    /// `response.output[]` of a `response.*` event.
    fn rewrite_output(
        &mut self,
        policies: &[(usize, &Policy)],
        vault: &mut Vault,
        v: &mut Value,
        out: &mut Vec<u8>,
        end: bool,
    ) -> Result<bool, Hit> {
        let Some(items) = v
            .get_mut("response")
            .and_then(|r| r.get_mut("output"))
            .and_then(Value::as_array_mut)
        else {
            return Ok(false);
        };
        let mut changed = false;
        for (oi, item) in items.iter_mut().enumerate() {
            changed |= self.rewrite_item(policies, vault, item, oi as u64, end, out)?;
        }
        Ok(changed)
    }

    /// The end of a blocked stream: `error`, then `response.failed` (see the module's doc).
    pub(super) fn responses_block(&mut self, hit: &Hit, out: &mut Vec<u8>) {
        let message = block_message(hit);
        let seq = self.resp.next_seq;
        let e = json!({"type": "error", "code": "guardrail_blocked", "message": message,
            "param": format!("{}.{}", hit.guardrail, hit.rule), "sequence_number": seq});
        write_event(out, "error", e.to_string().as_bytes());
        let mut r = self.resp.stub.take().unwrap_or_default();
        r.entry("object").or_insert_with(|| json!("response"));
        r.insert("status".into(), json!("failed"));
        r.insert("output".into(), json!([]));
        r.insert(
            "error".into(),
            json!({"code": "guardrail_blocked", "message": message}),
        );
        r.insert("incomplete_details".into(), Value::Null);
        let f = json!({"type": "response.failed", "sequence_number": seq.saturating_add(1),
            "response": r});
        write_event(out, "response.failed", f.to_string().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::sse::SseParser;
    use crate::guard::AnsApi;

    fn policy() -> Policy {
        Policy::from_value(
            &json!({ "guardrails": [{"name": "pii", "restore": true, "rules": [
            {"detector": "email", "action": "mask"}, {"detector": "card", "action": "block"}]}] }),
        )
        .unwrap()
    }

    /// A Responses stream as OpenAI (and the gateway's translation) sends it: a message with
    /// `text` in `deltas`, then (`args`) a function call with its arguments in pieces.
    fn stream(deltas: &[&str], args: &[&str]) -> Vec<u8> {
        let text: String = deltas.concat();
        let arguments: String = args.concat();
        let mut evs: Vec<Value> = Vec::new();
        let resp = |status: &str, output: Value| {
            json!({"id": "resp_1", "object": "response", "created_at": 1, "model": "m",
                "status": status, "output": output})
        };
        evs.push(json!({"type": "response.created", "response": resp("in_progress", json!([]))}));
        evs.push(
            json!({"type": "response.in_progress", "response": resp("in_progress", json!([]))}),
        );
        let msg = |t: &str, status: &str| {
            json!({"id": "msg_1", "type": "message", "status": status, "role": "assistant",
                "content": [{"type": "output_text", "text": t, "annotations": []}]})
        };
        let call = |a: &str, status: &str| {
            json!({"id": "fc_1", "type": "function_call", "status": status, "call_id": "call_1",
                "name": "send", "arguments": a})
        };
        evs.push(json!({"type": "response.output_item.added", "output_index": 0,
            "item": {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}}));
        evs.push(
            json!({"type": "response.content_part.added", "item_id": "msg_1", "output_index": 0,
            "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
        );
        for d in deltas {
            evs.push(
                json!({"type": "response.output_text.delta", "item_id": "msg_1",
                "output_index": 0, "content_index": 0, "delta": d, "logprobs": []}),
            );
        }
        evs.push(
            json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0,
            "content_index": 0, "text": text, "logprobs": []}),
        );
        evs.push(
            json!({"type": "response.content_part.done", "item_id": "msg_1", "output_index": 0,
            "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}),
        );
        evs.push(
            json!({"type": "response.output_item.done", "output_index": 0,
            "item": msg(&text, "completed")}),
        );
        let mut output = vec![msg(&text, "completed")];
        if !args.is_empty() {
            evs.push(
                json!({"type": "response.output_item.added", "output_index": 1,
                "item": call("", "in_progress")}),
            );
            for a in args {
                evs.push(json!({"type": "response.function_call_arguments.delta",
                    "item_id": "fc_1", "output_index": 1, "delta": a}));
            }
            evs.push(
                json!({"type": "response.function_call_arguments.done", "item_id": "fc_1",
                "output_index": 1, "arguments": arguments}),
            );
            evs.push(
                json!({"type": "response.output_item.done", "output_index": 1,
                "item": call(&arguments, "completed")}),
            );
            output.push(call(&arguments, "completed"));
        }
        evs.push(
            json!({"type": "response.completed", "response": resp("completed", json!(output))}),
        );
        let mut out = Vec::new();
        for (i, mut e) in evs.into_iter().enumerate() {
            e["sequence_number"] = json!(i);
            let ty = e["type"].as_str().unwrap_or("").to_string();
            write_event(&mut out, &ty, e.to_string().as_bytes());
        }
        out
    }

    fn run(p: &Policy, vault: &mut Vault, bytes: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut g = SseGuard::new(AnsApi::Responses);
        let mut out = Vec::new();
        let mut at = 0;
        for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
            g.feed(&[(0, p)], vault, &bytes[at..c], c == bytes.len(), &mut out);
            at = c;
        }
        out
    }

    /// What the client reads: every event (name checked against `type`), in order.
    fn events(bytes: &[u8]) -> Vec<Value> {
        let mut evs = Vec::new();
        SseParser::new().feed(bytes, &mut |ev| {
            let v: Value = serde_json::from_slice(ev.data).unwrap();
            assert_eq!(ev.event, v["type"].as_str(), "event name = type");
            evs.push(v);
        });
        evs
    }

    /// The texts a client gets: the message's deltas joined, the arguments' deltas joined, and
    /// every repeated copy of each (`.done` events, the items, `response.completed`).
    struct Read {
        deltas: String,
        args: String,
        text_copies: Vec<String>,
        args_copies: Vec<String>,
        types: Vec<String>,
    }

    fn read(evs: &[Value]) -> Read {
        let mut r = Read {
            deltas: String::new(),
            args: String::new(),
            text_copies: Vec::new(),
            args_copies: Vec::new(),
            types: Vec::new(),
        };
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        for (i, e) in evs.iter().enumerate() {
            assert_eq!(
                e["sequence_number"],
                json!(i),
                "sequence numbers count up: {e}"
            );
            let ty = s(&e["type"]);
            match ty.as_str() {
                "response.output_text.delta" => r.deltas.push_str(&s(&e["delta"])),
                "response.function_call_arguments.delta" => r.args.push_str(&s(&e["delta"])),
                "response.output_text.done" => r.text_copies.push(s(&e["text"])),
                "response.function_call_arguments.done" => r.args_copies.push(s(&e["arguments"])),
                "response.content_part.done" => r.text_copies.push(s(&e["part"]["text"])),
                _ => {}
            }
            let mut items: Vec<&Value> = Vec::new();
            if ty == "response.output_item.done" {
                items.push(&e["item"]);
            }
            if ty == "response.completed" {
                items.extend(e["response"]["output"].as_array().into_iter().flatten());
            }
            for it in items {
                match it["type"].as_str() {
                    Some("message") => r.text_copies.push(s(&it["content"][0]["text"])),
                    Some("function_call") => r.args_copies.push(s(&it["arguments"])),
                    _ => {}
                }
            }
            r.types.push(ty);
        }
        r
    }

    const TEXT: &str = "mail jane.doe@example.com now";

    /// Every way to cut `text` into 2 and 3 deltas.
    fn splits(text: &str) -> Vec<Vec<&str>> {
        let mut all = Vec::new();
        for a in 0..=text.len() {
            all.push(vec![&text[..a], &text[a..]]);
            for b in a..=text.len() {
                all.push(vec![&text[..a], &text[a..b], &text[b..]]);
            }
        }
        all
    }

    #[test]
    fn masked_in_deltas_and_in_every_repeat_at_every_cut() {
        let p = policy();
        let args = "{\"to\":\"bob@corp.example.org\"}";
        for deltas in splits(TEXT) {
            let bytes = stream(&deltas, &[&args[..9], &args[9..]]);
            let out = run(&p, &mut Vault::new(), &bytes, &[]);
            let s = String::from_utf8_lossy(&out);
            assert!(
                !s.contains("jane.doe") && !s.contains("bob@"),
                "{deltas:?}: {s}"
            );
            let r = read(&events(&out));
            assert_eq!(r.deltas, "mail <EMAIL_1> now", "{deltas:?}");
            assert_eq!(r.args, "{\"to\":\"<EMAIL_2>\"}");
            assert_eq!(r.text_copies.len(), 4);
            assert!(
                r.text_copies.iter().all(|t| *t == r.deltas),
                "{:?}",
                r.text_copies
            );
            assert_eq!(r.args_copies.len(), 3);
            assert!(r.args_copies.iter().all(|t| *t == r.args));
            assert_eq!(
                r.types.last().map(String::as_str),
                Some("response.completed")
            );
            // The held text goes out before the event that ends its channel.
            let last_delta = r
                .types
                .iter()
                .rposition(|t| t == "response.output_text.delta")
                .unwrap();
            let done = r
                .types
                .iter()
                .position(|t| t == "response.output_text.done")
                .unwrap();
            assert!(last_delta < done);
        }
    }

    #[test]
    fn every_chunk_boundary_of_the_bytes() {
        let p = policy();
        let (a, b) = TEXT.split_at(12);
        let bytes = stream(&[a, b], &[]);
        for cut in 0..=bytes.len() {
            let out = run(&p, &mut Vault::new(), &bytes, &[cut]);
            let r = read(&events(&out));
            assert_eq!(r.deltas, "mail <EMAIL_1> now", "cut at {cut}");
            assert!(r.text_copies.iter().all(|t| *t == r.deltas));
        }
    }

    #[test]
    fn restored_in_deltas_and_in_every_repeat_at_every_cut() {
        let p = policy();
        let answer = "Sure, <EMAIL_1> it is";
        for deltas in splits(answer) {
            let mut v = Vault::new();
            let mut masked = String::new();
            assert!(
                p.request()
                    .scan_text("write to jane.doe@example.com", &mut v, &mut masked)
                    .masked
            );
            let out = run(&p, &mut v, &stream(&deltas, &[]), &[]);
            let r = read(&events(&out));
            assert_eq!(r.deltas, "Sure, jane.doe@example.com it is", "{deltas:?}");
            assert!(
                r.text_copies.iter().all(|t| *t == r.deltas),
                "{:?}",
                r.text_copies
            );
        }
    }

    #[test]
    fn a_block_ends_with_error_and_response_failed_at_every_cut() {
        let p = policy();
        let text = "card 4111 1111 1111 1111 and more words after it";
        for deltas in splits(text) {
            let out = run(&p, &mut Vault::new(), &stream(&deltas, &[]), &[]);
            let s = String::from_utf8_lossy(&out);
            assert!(
                !s.contains("4111") && !s.contains("1111"),
                "{deltas:?}: {s}"
            );
            assert!(!s.contains("more words"));
            let evs = events(&out);
            let r = read(&evs);
            let n = r.types.len();
            assert!(n >= 2);
            assert_eq!(r.types[n - 2], "error", "{:?}", r.types);
            assert_eq!(r.types[n - 1], "response.failed");
            assert_eq!(evs[n - 2]["code"], "guardrail_blocked");
            assert_eq!(evs[n - 2]["param"], "pii.card");
            let f = &evs[n - 1]["response"];
            assert_eq!(f["id"], "resp_1");
            assert_eq!(f["status"], "failed");
            assert_eq!(f["error"]["code"], "guardrail_blocked");
            assert!(!r.types.iter().any(|t| t == "response.output_text.done"));
        }
    }

    #[test]
    fn a_text_that_came_in_no_delta_is_scanned_whole() {
        let p = policy();
        // A provider that sends the text in the `.done` events only.
        let mut evs = Vec::new();
        write_event(
            &mut evs,
            "response.output_text.done",
            json!({"type": "response.output_text.done", "item_id": "m", "output_index": 0,
                "content_index": 0, "text": TEXT, "sequence_number": 0})
            .to_string()
            .as_bytes(),
        );
        write_event(
            &mut evs,
            "response.completed",
            json!({"type": "response.completed", "sequence_number": 1, "response": {"id": "r",
                "output": [{"type": "message", "content": [{"type": "output_text", "text": TEXT}]},
                    {"type": "reasoning", "summary": [{"type": "summary_text", "text": TEXT}]}]}})
            .to_string()
            .as_bytes(),
        );
        let out = run(&p, &mut Vault::new(), &evs, &[]);
        let e = events(&out);
        assert_eq!(e[0]["text"], "mail <EMAIL_1> now");
        assert_eq!(
            e[1]["response"]["output"][0]["content"][0]["text"],
            "mail <EMAIL_1> now"
        );
        // Reasoning summaries are left alone (as in a whole answer).
        assert_eq!(e[1]["response"]["output"][1]["summary"][0]["text"], TEXT);
    }

    #[test]
    fn the_kept_text_is_capped() {
        let p = policy();
        let mut g = SseGuard::new(AnsApi::Responses);
        let mut v = Vault::new();
        let mut out = Vec::new();
        let piece = "word ".repeat(20_000); // 100 KB
        let mut sent = 0;
        let mut i = 0u64;
        while sent <= MAX_KEPT + piece.len() {
            let e = json!({"type": "response.output_text.delta", "output_index": 0,
                "content_index": 0, "item_id": "m", "delta": piece, "sequence_number": i});
            let mut b = Vec::new();
            write_event(
                &mut b,
                "response.output_text.delta",
                e.to_string().as_bytes(),
            );
            g.feed(&[(0, &p)], &mut v, &b, false, &mut out);
            out.clear();
            sent += piece.len();
            i += 1;
        }
        assert!(g.resp.kept <= MAX_KEPT);
        assert!(g.resp.chans[0].text.is_none());
        // The repeat is then scanned whole.
        let e = json!({"type": "response.output_text.done", "output_index": 0, "content_index": 0,
            "text": TEXT, "sequence_number": i});
        let mut b = Vec::new();
        write_event(
            &mut b,
            "response.output_text.done",
            e.to_string().as_bytes(),
        );
        g.feed(&[(0, &p)], &mut v, &b, true, &mut out);
        let e = events(&out);
        assert_eq!(e.last().unwrap()["text"], "mail <EMAIL_1> now");
    }
}
