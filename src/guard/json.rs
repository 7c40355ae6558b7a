//! The guardrails over whole JSON bodies: which strings of a client request or of an answer are
//! text to scan, and the rewrite of the ones that change.
//!
//! One borrowed parse finds the text-bearing JSON strings (as byte ranges of the body, through
//! `RawValue`s); each is decoded, scanned and, only if masked or restored, re-encoded and spliced
//! in. When nothing changes the outcome has no body and the original bytes go on untouched; the
//! other fields (model, tools, images, ...) are never read beyond skipping them.

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

use super::{Guard, Policy, Scan, Vault};

/// The request body shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqApi {
    /// OpenAI chat completions: `messages[].content` (string or `text` parts, every role incl.
    /// `system`, `developer`, `tool`) and `messages[].tool_calls[].function.arguments`.
    Chat,
    /// Anthropic Messages: `system` (string or `text` blocks), `messages[].content` (string or
    /// blocks: `text`, `tool_result.content` string or `text` blocks, `tool_use.input` strings).
    Messages,
    /// OpenAI Responses: `instructions`, `input` (string or items: `message` content
    /// `input_text`/`output_text`, `function_call_output.output`, `function_call.arguments`).
    Responses,
    /// OpenAI embeddings: `input` (a string or an array of strings).
    Embeddings,
}

/// The whole-answer shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnsApi {
    /// A `chat.completion`: `choices[].message.content`, `.tool_calls[].function.arguments`.
    Chat,
    /// An Anthropic `message`: `content[]` `text` blocks and `tool_use.input` strings.
    Messages,
    /// An OpenAI Responses `response` object: `output[]` items — `message` items' `content[]`
    /// parts of type `output_text` (`text`) and `function_call` items' `arguments`; `reasoning`
    /// items (summaries) and refusals are left alone. Shapes: openai/openai-python
    /// `src/openai/types/responses/response.py` (`output`), `response_output_message.py`,
    /// `response_output_text.py`, `response_function_tool_call.py`.
    Responses,
}

/// What a body scan decided: the hits (a block in `scan.blocked`), and the new body when a
/// field changed (`None`: send the original bytes).
#[derive(Debug, Default)]
pub struct Outcome {
    pub scan: Scan,
    pub body: Option<Vec<u8>>,
}

/// Scans the text fields of a client request with the policy's request rules; masks in place.
/// `Err` when the body is not the API's JSON shape.
pub fn scan_request(
    policy: &Policy,
    api: ReqApi,
    body: &[u8],
    vault: &mut Vault,
) -> Result<Outcome, String> {
    let guard = policy.request();
    if guard.is_empty() {
        return Ok(Outcome::default());
    }
    let ranges = request_ranges(api, body)?;
    rewrite(guard, body, ranges, vault, false)
}

/// Scans the text of a whole answer with the policy's response rules (mask or block) and
/// restores the placeholders the vault can restore.
pub fn scan_answer(
    policy: &Policy,
    api: AnsApi,
    body: &[u8],
    vault: &mut Vault,
) -> Result<Outcome, String> {
    let guard = policy.response();
    if guard.is_empty() && !vault.has_restorable() {
        return Ok(Outcome::default());
    }
    let ranges = answer_ranges(api, body)?;
    rewrite(guard, body, ranges, vault, true)
}

/// At most this many bytes of text are kept by [`request_texts`] and [`answer_texts`] (64 KiB,
/// over all fields): what lies beyond is not sent to a remote guardrail.
pub const MAX_REMOTE_TEXT: usize = 64 * 1024;

/// The text fields of a client request (the fields [`scan_request`] scans), decoded, in body
/// order, empty ones left out. At most [`MAX_REMOTE_TEXT`] bytes in total are kept: the field
/// that crosses the cap is cut (at a character boundary) and the later ones are dropped — that
/// text is not sent to a remote guardrail. `Err` when the body is not the API's JSON shape.
pub fn request_texts(api: ReqApi, body: &[u8]) -> Result<Vec<String>, String> {
    texts(body, request_ranges(api, body)?)
}

/// The text of a whole answer (the fields [`scan_answer`] scans), as [`request_texts`].
pub fn answer_texts(api: AnsApi, body: &[u8]) -> Result<Vec<String>, String> {
    texts(body, answer_ranges(api, body)?)
}

fn texts(body: &[u8], mut ranges: Vec<(usize, usize)>) -> Result<Vec<String>, String> {
    ranges.sort_unstable();
    let mut out = Vec::new();
    let (mut pos, mut left) = (0, MAX_REMOTE_TEXT);
    for (s, e) in ranges {
        if s < pos {
            continue;
        }
        pos = e;
        if left == 0 {
            break;
        }
        let text = decode(body, s, e)?;
        if text.is_empty() {
            continue;
        }
        let mut cut = text.len().min(left);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        left -= cut;
        if cut > 0 {
            out.push(text[..cut].to_string());
        }
        if cut < text.len() {
            break;
        }
    }
    Ok(out)
}

/// The byte ranges of the text-bearing strings of a client request.
fn request_ranges(api: ReqApi, body: &[u8]) -> Result<Vec<(usize, usize)>, String> {
    let bad = |e: serde_json::Error| format!("guardrails: request body: {e}");
    let mut l = Leaves {
        base: body,
        ranges: Vec::new(),
    };
    match api {
        ReqApi::Chat => {
            let r: ChatReq = serde_json::from_slice(body).map_err(bad)?;
            for m in &r.messages {
                l.message(m)?;
            }
            l.tools(r.tools.as_deref())?;
        }
        ReqApi::Messages => {
            let r: MsgReq = serde_json::from_slice(body).map_err(bad)?;
            l.content(r.system, 0)?;
            for m in &r.messages {
                l.message(m)?;
            }
            l.tools(r.tools.as_deref())?;
        }
        ReqApi::Responses => {
            let r: RespReq = serde_json::from_slice(body).map_err(bad)?;
            if let Some(i) = r.instructions {
                l.add(i)?;
            }
            l.content(r.input, 0)?;
            l.tools(r.tools.as_deref())?;
        }
        ReqApi::Embeddings => {
            let r: EmbReq = serde_json::from_slice(body).map_err(bad)?;
            if let Some(i) = r.input {
                if i.get().starts_with('[') {
                    let items: Children = serde_json::from_str(i.get()).map_err(bad)?;
                    for it in items.0 {
                        l.add(it)?;
                    }
                } else {
                    l.add(i)?;
                }
            }
        }
    }
    Ok(l.ranges)
}

/// The byte ranges of the text-bearing strings of a whole answer.
fn answer_ranges(api: AnsApi, body: &[u8]) -> Result<Vec<(usize, usize)>, String> {
    let bad = |e: serde_json::Error| format!("guardrails: answer body: {e}");
    let mut l = Leaves {
        base: body,
        ranges: Vec::new(),
    };
    match api {
        AnsApi::Chat => {
            let a: ChatAns = serde_json::from_slice(body).map_err(bad)?;
            for c in &a.choices {
                if let Some(m) = &c.message {
                    l.message(m)?;
                }
            }
        }
        AnsApi::Messages => {
            let a: MsgAns = serde_json::from_slice(body).map_err(bad)?;
            l.content(a.content, 0)?;
        }
        AnsApi::Responses => {
            let a: RespAns = serde_json::from_slice(body).map_err(bad)?;
            l.output(a.output)?;
        }
    }
    Ok(l.ranges)
}

/// The JSON string `body[s..e]` (quotes included; a string the parse found) decoded: borrowed
/// from the body when it has no escape (the common case: no second parse).
fn decode(body: &[u8], s: usize, e: usize) -> Result<Cow<'_, str>, String> {
    let raw = body
        .get(s..e)
        .filter(|r| r.len() >= 2)
        .ok_or("guardrails: a string outside the body")?;
    let inner = &raw[1..raw.len() - 1];
    if memchr::memchr(b'\\', inner).is_none() {
        return std::str::from_utf8(inner)
            .map(Cow::Borrowed)
            .map_err(|e| format!("guardrails: {e}"));
    }
    let raw = std::str::from_utf8(raw).map_err(|e| format!("guardrails: {e}"))?;
    serde_json::from_str(raw).map_err(|e| format!("guardrails: body string: {e}"))
}

fn rewrite(
    guard: &Guard,
    body: &[u8],
    mut ranges: Vec<(usize, usize)>,
    vault: &mut Vault,
    restore: bool,
) -> Result<Outcome, String> {
    ranges.sort_unstable();
    let mut scan = Scan::default();
    let mut new: Option<Vec<u8>> = None;
    let mut pos = 0;
    let (mut masked, mut restored) = (String::new(), String::new());
    for (s, e) in ranges {
        if s < pos {
            continue;
        }
        let text = decode(body, s, e)?;
        masked.clear();
        let sc = guard.scan_text(&text, vault, &mut masked);
        let (blocked, did_mask) = (sc.blocked.is_some(), sc.masked);
        scan.merge(sc);
        if blocked {
            return Ok(Outcome { scan, body: None });
        }
        let mut cur: &str = if did_mask { &masked } else { &text };
        let mut changed = did_mask;
        if restore && vault.has_restorable() {
            restored.clear();
            if vault.restore_into(cur, &mut restored) > 0 {
                cur = &restored;
                changed = true;
            }
        }
        if changed {
            let nb = new.get_or_insert_with(|| Vec::with_capacity(body.len() + 64));
            nb.extend_from_slice(&body[pos..s]);
            serde_json::to_writer(&mut *nb, cur).map_err(|e| format!("guardrails: {e}"))?;
            pos = e;
        }
    }
    if let Some(nb) = &mut new {
        nb.extend_from_slice(&body[pos..]);
    }
    Ok(Outcome { scan, body: new })
}

/// The byte ranges (quotes included) of the JSON strings to scan.
struct Leaves<'a> {
    base: &'a [u8],
    ranges: Vec<(usize, usize)>,
}

/// Depth cap for nested content (tool results in blocks) and tool inputs.
const MAX_DEPTH: u32 = 16;

impl<'a> Leaves<'a> {
    /// Adds `raw` if it is a string of the body.
    fn add(&mut self, raw: &'a RawValue) -> Result<(), String> {
        let s = raw.get();
        if !s.starts_with('"') {
            return Ok(());
        }
        let off = (s.as_ptr() as usize).wrapping_sub(self.base.as_ptr() as usize);
        if off > self.base.len() || self.base.len() - off < s.len() {
            return Err("guardrails: a string outside the body".into());
        }
        self.ranges.push((off, off + s.len()));
        Ok(())
    }

    /// The descriptions of a request's tool definitions.
    fn tools(&mut self, tools: Option<&[ToolDef<'a>]>) -> Result<(), String> {
        for t in tools.unwrap_or_default() {
            if let Some(d) = t.description() {
                self.add(d)?;
            }
        }
        Ok(())
    }

    fn message(&mut self, m: &Msg<'a>) -> Result<(), String> {
        self.content(m.content, 0)?;
        for c in m.tool_calls.iter().flatten() {
            if let Some(a) = c.function.as_ref().and_then(|f| f.arguments) {
                self.add(a)?;
            }
        }
        Ok(())
    }

    /// A content value: a string, or an array of typed parts / blocks / items.
    fn content(&mut self, raw: Option<&'a RawValue>, depth: u32) -> Result<(), String> {
        let Some(raw) = raw else {
            return Ok(());
        };
        let s = raw.get();
        if s.starts_with('"') {
            return self.add(raw);
        }
        if !s.starts_with('[') || depth >= MAX_DEPTH {
            return Ok(());
        }
        let parts: Vec<Part> =
            serde_json::from_str(s).map_err(|e| format!("guardrails: content: {e}"))?;
        for p in parts {
            match p.kind.as_deref() {
                Some("text" | "input_text" | "output_text") => {
                    if let Some(t) = p.text {
                        self.add(t)?;
                    }
                }
                Some("tool_result") => self.content(p.content, depth + 1)?,
                Some("function_call_output") => self.content(p.output, depth + 1)?,
                Some("function_call") => {
                    if let Some(a) = p.arguments {
                        self.add(a)?;
                    }
                }
                Some("tool_use") => {
                    if let Some(i) = p.input {
                        self.strings(i, depth + 1)?;
                    }
                }
                Some("message") => self.content(p.content, depth + 1)?,
                None if p.role.is_some() => self.content(p.content, depth + 1)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// A Responses answer's `output[]`: `message` items' `output_text` parts and
    /// `function_call` items' `arguments` (a `reasoning` item's summary is not touched).
    fn output(&mut self, raw: Option<&'a RawValue>) -> Result<(), String> {
        let Some(raw) = raw.filter(|r| r.get().starts_with('[')) else {
            return Ok(());
        };
        let items: Vec<Part> =
            serde_json::from_str(raw.get()).map_err(|e| format!("guardrails: output: {e}"))?;
        for it in items {
            match it.kind.as_deref() {
                Some("message") => {
                    let Some(c) = it.content.filter(|c| c.get().starts_with('[')) else {
                        continue;
                    };
                    let parts: Vec<Part> = serde_json::from_str(c.get())
                        .map_err(|e| format!("guardrails: output content: {e}"))?;
                    for p in parts {
                        if p.kind.as_deref() == Some("output_text") {
                            if let Some(t) = p.text {
                                self.add(t)?;
                            }
                        }
                    }
                }
                Some("function_call") => {
                    if let Some(a) = it.arguments {
                        self.add(a)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every string inside an arbitrary JSON value (a tool's input).
    fn strings(&mut self, raw: &'a RawValue, depth: u32) -> Result<(), String> {
        let s = raw.get();
        if s.starts_with('"') {
            return self.add(raw);
        }
        if !(s.starts_with('{') || s.starts_with('[')) || depth >= MAX_DEPTH {
            return Ok(());
        }
        let kids: Children =
            serde_json::from_str(s).map_err(|e| format!("guardrails: tool input: {e}"))?;
        for k in kids.0 {
            self.strings(k, depth + 1)?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct ChatReq<'a> {
    #[serde(borrow, default)]
    messages: Vec<Msg<'a>>,
    #[serde(borrow, default)]
    tools: Option<Vec<ToolDef<'a>>>,
}

/// A tool definition: its description is text the model reads (chat: `function.description`;
/// Messages and Responses: `description`). Names and JSON schemas are not scanned.
#[derive(Deserialize)]
struct ToolDef<'a> {
    #[serde(borrow, default)]
    description: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function: Option<FuncDef<'a>>,
}

#[derive(Deserialize)]
struct FuncDef<'a> {
    #[serde(borrow, default)]
    description: Option<&'a RawValue>,
}

impl<'a> ToolDef<'a> {
    fn description(&self) -> Option<&'a RawValue> {
        self.description
            .or_else(|| self.function.as_ref().and_then(|f| f.description))
    }
}

#[derive(Deserialize)]
struct MsgReq<'a> {
    #[serde(borrow, default)]
    system: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Vec<Msg<'a>>,
    #[serde(borrow, default)]
    tools: Option<Vec<ToolDef<'a>>>,
}

#[derive(Deserialize)]
struct RespReq<'a> {
    #[serde(borrow, default)]
    instructions: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tools: Option<Vec<ToolDef<'a>>>,
}

#[derive(Deserialize)]
struct EmbReq<'a> {
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChatAns<'a> {
    #[serde(borrow, default)]
    choices: Vec<Choice<'a>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    message: Option<Msg<'a>>,
}

#[derive(Deserialize)]
struct MsgAns<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RespAns<'a> {
    #[serde(borrow, default)]
    output: Option<&'a RawValue>,
}

/// A chat / Messages message (or a chat answer's message).
#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow, default)]
    function: Option<Func<'a>>,
}

#[derive(Deserialize)]
struct Func<'a> {
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

/// A content part, content block or Responses input item: the fields any of them carries text in.
#[derive(Deserialize)]
struct Part<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    role: Option<&'a RawValue>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    output: Option<&'a RawValue>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

/// The values of a JSON object or the items of an array, unparsed.
struct Children<'a>(Vec<&'a RawValue>);

impl<'de> Deserialize<'de> for Children<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Children<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object or an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element::<&'de RawValue>()? {
                    v.push(x);
                }
                Ok(Children(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some((_, x)) = a.next_entry::<IgnoredAny, &'de RawValue>()? {
                    v.push(x);
                }
                Ok(Children(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod texts_tests {
    use super::*;

    #[test]
    fn request_texts_every_api() {
        let chat = br#"{"model":"m","messages":[{"role":"system","content":"be nice"},
            {"role":"user","content":[{"type":"text","text":"caf\u00e9 \"q\""},{"type":"image_url","image_url":{"url":"data:x"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
            {"role":"tool","tool_call_id":"c","content":""}]}"#;
        assert_eq!(
            request_texts(ReqApi::Chat, chat).unwrap(),
            ["be nice", "café \"q\"", "{\"a\":1}"]
        );
        let msgs = br#"{"model":"m","system":[{"type":"text","text":"sys"}],"messages":[
            {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"result"}]}]},
            {"role":"assistant","content":[{"type":"tool_use","id":"t","name":"n","input":{"q":"deep","n":[1,"two"]}}]}]}"#;
        assert_eq!(
            request_texts(ReqApi::Messages, msgs).unwrap(),
            ["sys", "result", "deep", "two"]
        );
        let resp = br#"{"model":"m","instructions":"ins","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]},
            {"type":"function_call_output","call_id":"c","output":"out"}]}"#;
        assert_eq!(
            request_texts(ReqApi::Responses, resp).unwrap(),
            ["ins", "hi", "out"]
        );
        assert_eq!(
            request_texts(ReqApi::Embeddings, br#"{"model":"m","input":["a","b"]}"#).unwrap(),
            ["a", "b"]
        );
        assert_eq!(
            request_texts(ReqApi::Embeddings, br#"{"input":"one"}"#).unwrap(),
            ["one"]
        );
        assert!(request_texts(ReqApi::Chat, b"not json").is_err());
        assert!(request_texts(ReqApi::Chat, br#"{"messages":7}"#).is_err());
    }

    #[test]
    fn tool_descriptions_are_text_in_every_api() {
        let chat = br#"{"messages":[{"role":"user","content":"hi"}],"tools":[
            {"type":"function","function":{"name":"f","description":"ask bob@example.com","parameters":{"type":"object","description":"schema"}}}]}"#;
        assert_eq!(
            request_texts(ReqApi::Chat, chat).unwrap(),
            ["hi", "ask bob@example.com"]
        );
        let msgs = br#"{"messages":[],"tools":[{"name":"n","description":"d1","input_schema":{}},{"name":"m"}]}"#;
        assert_eq!(request_texts(ReqApi::Messages, msgs).unwrap(), ["d1"]);
        let resp =
            br#"{"input":"x","tools":[{"type":"function","name":"f","description":"d2"},{"type":"web_search"}]}"#;
        assert_eq!(request_texts(ReqApi::Responses, resp).unwrap(), ["x", "d2"]);
        // Masked in place, the rest of the definition untouched.
        let p = crate::guard::Policy::parse(
            br#"{"guardrails":[{"name":"g","rules":[{"detector":"email","action":"mask"}]}]}"#,
        )
        .unwrap();
        let out = scan_request(&p, ReqApi::Chat, chat, &mut Vault::new()).unwrap();
        let body = String::from_utf8(out.body.unwrap()).unwrap();
        assert!(body.contains(r#""description":"ask <EMAIL_1>""#), "{body}");
        assert!(body.contains(r#""description":"schema""#));
    }

    #[test]
    fn answer_texts_both_apis() {
        let chat = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"hello",
            "tool_calls":[{"function":{"name":"f","arguments":"{}"}}]}}]}"#;
        assert_eq!(answer_texts(AnsApi::Chat, chat).unwrap(), ["hello", "{}"]);
        let msg = br#"{"type":"message","content":[{"type":"thinking","thinking":"hmm"},{"type":"text","text":"yes"}]}"#;
        assert_eq!(answer_texts(AnsApi::Messages, msg).unwrap(), ["yes"]);
        assert!(answer_texts(AnsApi::Messages, b"[").is_err());
        let resp = br#"{"id":"resp_1","object":"response","instructions":"not me","output":[
            {"type":"reasoning","id":"rs","summary":[{"type":"summary_text","text":"thought"}]},
            {"type":"message","id":"m","role":"assistant","content":[{"type":"output_text","text":"answer","annotations":[]},
                {"type":"refusal","refusal":"no"}]},
            {"type":"function_call","id":"f","call_id":"c","name":"n","arguments":"{\"q\":1}"}],
            "usage":{"input_tokens":1}}"#;
        assert_eq!(
            answer_texts(AnsApi::Responses, resp).unwrap(),
            ["answer", "{\"q\":1}"]
        );
        assert!(answer_texts(AnsApi::Responses, br#"{"output":[]}"#)
            .unwrap()
            .is_empty());
        assert!(answer_texts(AnsApi::Responses, br#"{"object":"response"}"#)
            .unwrap()
            .is_empty());
        assert!(answer_texts(
            AnsApi::Responses,
            br#"{"output":[{"type":"message","content":7}]}"#
        )
        .is_ok());
        assert!(answer_texts(AnsApi::Responses, br#"{"output":{"a":1}}"#)
            .unwrap()
            .is_empty());
        assert!(answer_texts(AnsApi::Responses, br#"{"output":[7]}"#).is_err());
    }

    #[test]
    fn texts_are_capped() {
        let big = "é".repeat(MAX_REMOTE_TEXT); // 2 bytes each: twice the cap
        let body = serde_json::json!({"messages": [
            {"role": "user", "content": "abc"},
            {"role": "user", "content": big},
            {"role": "user", "content": "never"}
        ]})
        .to_string();
        let t = request_texts(ReqApi::Chat, body.as_bytes()).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0], "abc");
        // 3 + (cap - 3 rounded down to a character boundary).
        assert_eq!(t[1].len(), MAX_REMOTE_TEXT - 3 - 1);
        assert!(t[1].chars().all(|c| c == 'é'));
        let total: usize = t.iter().map(String::len).sum();
        assert!(total <= MAX_REMOTE_TEXT);
        // Exactly at the cap: the next field is dropped.
        let exact = "x".repeat(MAX_REMOTE_TEXT);
        let body = serde_json::json!({"input": [exact, "more"]}).to_string();
        let t = request_texts(ReqApi::Embeddings, body.as_bytes()).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].len(), MAX_REMOTE_TEXT);
    }
}
