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
        }
        ReqApi::Messages => {
            let r: MsgReq = serde_json::from_slice(body).map_err(bad)?;
            l.content(r.system, 0)?;
            for m in &r.messages {
                l.message(m)?;
            }
        }
        ReqApi::Responses => {
            let r: RespReq = serde_json::from_slice(body).map_err(bad)?;
            if let Some(i) = r.instructions {
                l.add(i)?;
            }
            l.content(r.input, 0)?;
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
    rewrite(guard, body, l.ranges, vault, false)
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
    }
    rewrite(guard, body, l.ranges, vault, true)
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
        let raw = std::str::from_utf8(&body[s..e]).map_err(|e| format!("guardrails: {e}"))?;
        let text: Cow<str> =
            serde_json::from_str(raw).map_err(|e| format!("guardrails: body string: {e}"))?;
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
}

#[derive(Deserialize)]
struct MsgReq<'a> {
    #[serde(borrow, default)]
    system: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Vec<Msg<'a>>,
}

#[derive(Deserialize)]
struct RespReq<'a> {
    #[serde(borrow, default)]
    instructions: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
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
