//! OpenAI client → Cohere v2 Chat (`POST {base_path}/chat`, docs/providers.md §7).
//!
//! Cohere v2 is close to OpenAI's shape (same tool and tool-call objects, `system`/`user`/
//! `assistant`/`tool` roles, `image_url` parts), so the request is the client's body with the
//! differing fields rewritten:
//! - `developer` → `system`; assistant `content: null` removed (tool-call turns).
//! - `max_completion_tokens`/`max_tokens` → `max_tokens`; `top_p` → `p`; `stop` → `stop_sequences`.
//! - `tool_choice`: `auto` → omitted (Cohere's default), `required` → `REQUIRED`, `none` → `NONE`,
//!   a named function → only that tool is sent, with `REQUIRED` (Cohere has no named choice).
//! - `response_format`: `json_object` → `{type:"json_object"}`, `json_schema` →
//!   `{type:"json_object", json_schema: <schema>}`.
//! - `reasoning_effort` → `thinking {type:"enabled", token_budget}` (low 1024, medium 4096,
//!   high 16384; `none` → disabled).
//! - 400: `n` > 1, `logit_bias`, `audio`. Dropped: `user`, `stream_options`,
//!   `parallel_tool_calls`, `store`, `metadata`, `service_tier`, `top_logprobs`, `prediction`,
//!   `modalities`, `safety_identifier`, `prompt_cache_key`, `verbosity`.
//!
//! Answers: text content joined, `thinking` → `reasoning_content`, `tool_calls` as they are,
//! `tool_plan` → `reasoning_content` when there is no thinking. Finish reasons COMPLETE,
//! STOP_SEQUENCE → stop; MAX_TOKENS → length; TOOL_CALL → tool_calls; ERROR, TIMEOUT → an error.
//! Usage from `usage.tokens` (raw model tokens; `billed_units` when absent), `cached_tokens`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;

use super::openai_chunks::{self, ChunkStream, ChunkWriter};
use super::{provider_error, ChatCall, ChatTranslator, ProviderRequest, Usage};
use crate::client_api::openai::ChatEnvelope;
use crate::codec::sse::{SseEvent, SseParser};
use crate::error::GatewayError;

#[derive(Default)]
pub struct CohereChat {
    provider: String,
    /// The envelope of answers and chunks: id (from `message-start`), model (the deployment's),
    /// created, include_usage; and whether `[DONE]` went out.
    w: ChunkWriter,
    usage: Option<Usage>,
    sse: SseParser,
    /// Cohere's tool-call index → OpenAI's (counted from 0 in order of appearance).
    tool_index: Vec<u64>,
}

fn bad(param: &str, message: impl Into<String>) -> GatewayError {
    GatewayError::invalid_param(param, message)
}

impl CohereChat {
    /// A translator that only reads answers of `provider` (errors, for the embeddings translator).
    pub(crate) fn for_provider(provider: &str) -> Self {
        CohereChat {
            provider: provider.to_string(),
            ..Self::default()
        }
    }

    fn usage_from(&mut self, u: &Value) {
        let tokens = u.get("tokens").or_else(|| u.get("billed_units"));
        let get = |k: &str| {
            tokens
                .and_then(|t| t.get(k))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        self.usage = Some(Usage {
            prompt_tokens: get("input_tokens"),
            completion_tokens: get("output_tokens"),
            cached_tokens: u.get("cached_tokens").and_then(Value::as_u64).unwrap_or(0),
            cache_creation_tokens: 0,
            reasoning_tokens: 0,
        });
    }

    fn failure(&self, message: &str) -> GatewayError {
        GatewayError::new(502, "api_error", format!("{}: {message}", self.provider))
            .with_code("upstream_stream_error")
    }

    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        let e = self.failure(message);
        self.w.fail(out, &e);
    }

    fn event(&mut self, e: SseEvent, out: &mut Vec<u8>) {
        if self.w.is_done() {
            return;
        }
        let data = e.text();
        if data.trim() == "[DONE]" {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            self.fail("unreadable stream event", out);
            return;
        };
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(e.event)
            .unwrap_or("")
            .to_string();
        let msg = v.pointer("/delta/message");
        match kind.as_str() {
            "message-start" => {
                if let Some(id) = v.get("id").and_then(Value::as_str) {
                    self.w.id = id.to_string();
                }
                self.w.render_prefix();
                self.w.role(out, 0);
            }
            "content-start" | "content-delta" => {
                let content = msg.and_then(|m| m.get("content"));
                if let Some(t) = content.and_then(|c| c.get("text")).and_then(Value::as_str) {
                    if !t.is_empty() {
                        self.w.content(out, 0, t);
                    }
                }
                if let Some(t) = content
                    .and_then(|c| c.get("thinking"))
                    .and_then(Value::as_str)
                {
                    if !t.is_empty() {
                        self.w.reasoning(out, 0, t);
                    }
                }
            }
            "tool-plan-delta" => {
                if let Some(t) = msg.and_then(|m| m.get("tool_plan")).and_then(Value::as_str) {
                    self.w.reasoning(out, 0, t);
                }
            }
            "tool-call-start" | "tool-call-delta" => {
                self.tool_call_event(&v, kind == "tool-call-start", msg, out)
            }
            "message-end" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                if let Some(u) = delta.get("usage") {
                    self.usage_from(u);
                }
                if let Some(err) = delta.get("error").and_then(Value::as_str) {
                    self.fail(err, out);
                    return;
                }
                match finish_reason(delta.get("finish_reason").and_then(Value::as_str)) {
                    Ok(f) => {
                        self.w.finish(out, 0, f);
                        self.w.close(out, self.usage.unwrap_or_default());
                    }
                    Err(reason) => self.fail(&format!("generation ended with {reason}"), out),
                }
            }
            _ => {} // content-end, tool-call-end, citations, debug
        }
    }

    /// `tool-call-start` (`start`) or `tool-call-delta`: a tool-call chunk, numbered from 0.
    fn tool_call_event(&mut self, v: &Value, start: bool, msg: Option<&Value>, out: &mut Vec<u8>) {
        let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        let k = match self.tool_index.iter().position(|&i| i == idx) {
            Some(k) => k,
            None if self.tool_index.len() >= openai_chunks::MAX_STREAM_BLOCKS => {
                let g = openai_chunks::too_many_blocks(&self.provider, "tool calls");
                return self.w.fail(out, &g);
            }
            None => {
                self.tool_index.push(idx);
                self.tool_index.len() - 1
            }
        };
        let call = msg
            .and_then(|m| m.get("tool_calls"))
            .unwrap_or(&Value::Null);
        let str_at = |p: &str| call.pointer(p).and_then(Value::as_str).unwrap_or("");
        let args = str_at("/function/arguments");
        let k = u32::try_from(k).unwrap_or(u32::MAX);
        if start {
            let (id, name) = (str_at("/id"), str_at("/function/name"));
            let delta = openai_chunks::tool_start(k, id, name, args);
            self.w.tool_call(out, 0, delta);
        } else if !args.is_empty() {
            self.w.tool_args(out, 0, k, args);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The non-streamed answer
// ---------------------------------------------------------------------------------------------

/// The `chat.completion` for a whole Cohere answer. Cohere's `id` and `tool_calls` go out as
/// they came (its tool calls already have OpenAI's shape); `usage` has no `cache_write_tokens`
/// (Cohere writes no prompt cache).
#[derive(Serialize)]
struct Completion<'a> {
    /// `null` when Cohere sent none.
    id: Option<&'a Value>,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    usage: AnswerUsage,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: AnswerMessage<'a>,
    /// Always `null`.
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AnswerMessage<'a> {
    role: &'static str,
    /// `null` when there is no text.
    content: Option<String>,
    /// Always `null`.
    refusal: Option<()>,
    /// Absent unless Cohere sent a non-empty list.
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
}

#[derive(Serialize)]
struct AnswerUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: CachedTokens,
}

#[derive(Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

impl From<Usage> for AnswerUsage {
    fn from(u: Usage) -> Self {
        AnswerUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens(),
            prompt_tokens_details: CachedTokens {
                cached_tokens: u.cached_tokens,
            },
        }
    }
}

/// The answer's text blocks joined, and its thinking blocks joined (`tool_plan` when it has no
/// thinking).
fn answer_text(msg: &Value) -> (String, String) {
    let mut text = String::new();
    let mut thinking = String::new();
    let blocks = msg.get("content").and_then(Value::as_array);
    for c in blocks.into_iter().flatten() {
        let field = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
        match c.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(field("text")),
            Some("thinking") => thinking.push_str(field("thinking")),
            _ => {}
        }
    }
    if thinking.is_empty() {
        if let Some(plan) = msg.get("tool_plan").and_then(Value::as_str) {
            thinking.push_str(plan);
        }
    }
    (text, thinking)
}

fn finish_reason(r: Option<&str>) -> Result<&'static str, String> {
    match r {
        Some("MAX_TOKENS") => Ok("length"),
        Some("TOOL_CALL") => Ok("tool_calls"),
        Some("ERROR") | Some("TIMEOUT") => Err(r.unwrap_or_default().to_string()),
        _ => Ok("stop"),
    }
}

// ---------------------------------------------------------------------------------------------
// The request body: the client's fields as they came, but for the ones Cohere names differently
// ---------------------------------------------------------------------------------------------

/// Fields OpenAI clients send that Cohere has no use for.
const DROPPED: &[&str] = &[
    "n",
    "user",
    "stream_options",
    "parallel_tool_calls",
    "store",
    "metadata",
    "service_tier",
    "top_logprobs",
    "prediction",
    "modalities",
    "safety_identifier",
    "prompt_cache_key",
    "verbosity",
    "function_call",
    "functions",
];

/// A message: its fields (later duplicates win, as in a map read from JSON).
type Message<'r> = BTreeMap<String, &'r RawValue>;
/// The tools, each as the client wrote it.
type Tools<'r> = Vec<&'r RawValue>;

#[derive(Serialize)]
struct ChatBody<'r> {
    model: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<Message<'r>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<&'r RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<&'r RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Stop<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Tools<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Format<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<Thinking>,
    /// Every other field of the client's, unchanged.
    #[serde(flatten)]
    rest: BTreeMap<&'r str, &'r RawValue>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Stop<'r> {
    /// `stop: "x"` → `["x"]`.
    One([&'r RawValue; 1]),
    List(&'r RawValue),
}

#[derive(Serialize)]
struct Format<'r> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    json_schema: Option<&'r RawValue>,
}

#[derive(Serialize)]
struct Thinking {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_budget: Option<u64>,
}

/// The client's `response_format`.
#[derive(Deserialize)]
struct FormatIn<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    json_schema: Option<&'a RawValue>,
}

/// Its `json_schema`: `schema` is kept even when `null`.
#[derive(Deserialize)]
struct SchemaIn<'a> {
    #[serde(default, borrow, deserialize_with = "raw_or_null")]
    schema: Option<&'a RawValue>,
}

fn raw_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// A tool or a named tool choice: `function.name`.
#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    function: Option<NamedFunction<'a>>,
}

#[derive(Deserialize)]
struct NamedFunction<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

#[inline]
fn is_null(v: &RawValue) -> bool {
    v.get() == "null"
}

/// A raw value as a string, if it is one.
#[inline]
fn as_str(v: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str(v.get()).ok()
}

/// `function.name` of a tool or a named tool choice.
fn function_name(v: &RawValue) -> Option<Cow<'_, str>> {
    serde_json::from_str::<Named<'_>>(v.get())
        .ok()?
        .function?
        .name
}

/// The Cohere body for the client's request (see the module docs for what changes).
fn chat_body(env: &ChatEnvelope<'_>, model: &str) -> Result<Vec<u8>, GatewayError> {
    // Later duplicates win, as when the body is read into a map.
    let mut rest: BTreeMap<&str, &RawValue> =
        env.fields.iter().map(|(k, v)| (k.as_ref(), *v)).collect();
    rest.remove("model");
    let n = rest
        .get("n")
        .and_then(|n| serde_json::from_str::<u64>(n.get()).ok());
    if n.is_some_and(|n| n > 1) {
        return Err(bad("n", "Cohere returns one choice; `n` must be 1"));
    }
    for field in ["logit_bias", "audio"] {
        if rest.get(field).is_some_and(|v| !is_null(v)) {
            return Err(bad(field, format!("`{field}` is not supported by Cohere")));
        }
    }
    for field in DROPPED {
        rest.remove(field);
    }
    let max_completion_tokens = rest.remove("max_completion_tokens");
    let max_tokens = rest.remove("max_tokens");
    let max_tokens = max_completion_tokens
        .filter(|v| !is_null(v))
        .or(max_tokens)
        .filter(|v| !is_null(v));
    let p = rest.remove("top_p").filter(|v| !is_null(v));
    if p.is_some() {
        rest.remove("p");
    }
    let stop_sequences = match rest.remove("stop") {
        Some(s) if s.get().starts_with('"') => Some(Stop::One([s])),
        Some(s) if s.get().starts_with('[') => Some(Stop::List(s)),
        _ => None,
    };
    if stop_sequences.is_some() {
        rest.remove("stop_sequences");
    }
    let messages = match rest.get("messages").copied() {
        Some(raw) => messages(raw)?,
        None => None,
    };
    if messages.is_some() {
        rest.remove("messages");
    }
    let (tool_choice, tools) = tool_choice(&mut rest)?;
    let response_format = response_format(rest.remove("response_format"))?;
    let thinking = thinking(rest.remove("reasoning_effort"))?;
    if thinking.is_some() {
        rest.remove("thinking");
    }
    let body = ChatBody {
        model,
        messages,
        max_tokens,
        p,
        stop_sequences,
        tools,
        tool_choice,
        response_format,
        thinking,
        rest,
    };
    serde_json::to_vec(&body)
        .map_err(|e| GatewayError::new(500, "api_error", format!("serialising: {e}")))
}

/// The messages with `developer` → `system`, and without `content: null`, `name`, `refusal`.
/// `None` (sent as they came) if they are not a list of objects.
fn messages(raw: &RawValue) -> Result<Option<Vec<Message<'_>>>, GatewayError> {
    let Ok(mut list) = serde_json::from_str::<Vec<Message<'_>>>(raw.get()) else {
        return Ok(None);
    };
    let system = static_raw(r#""system""#)?;
    for m in &mut list {
        if m.get("role").and_then(|r| as_str(r)).as_deref() == Some("developer") {
            m.insert("role".into(), system);
        }
        if m.get("content").is_some_and(|c| is_null(c)) {
            m.remove("content");
        }
        m.remove("name");
        m.remove("refusal");
    }
    Ok(Some(list))
}

/// Cohere's `tool_choice`, and the tools when a named choice leaves only that one.
fn tool_choice<'r>(
    rest: &mut BTreeMap<&str, &'r RawValue>,
) -> Result<(Option<&'static str>, Option<Tools<'r>>), GatewayError> {
    let choice = match rest.remove("tool_choice") {
        None => return Ok((None, None)),
        Some(v) if is_null(v) => return Ok((None, None)),
        Some(v) => v,
    };
    if choice.get().starts_with('"') {
        return match as_str(choice).as_deref() {
            Some("auto") => Ok((None, None)),
            Some("required") => Ok((Some("REQUIRED"), None)),
            Some("none") => Ok((Some("NONE"), None)),
            _ => Err(bad(
                "tool_choice",
                "must be auto, none, required or a function",
            )),
        };
    }
    let name = function_name(choice)
        .ok_or_else(|| bad("tool_choice", "a named tool choice needs `function.name`"))?;
    let Some(list) = rest
        .get("tools")
        .and_then(|t| serde_json::from_str::<Vec<&RawValue>>(t.get()).ok())
    else {
        return Ok((Some("REQUIRED"), None));
    };
    let kept: Vec<&RawValue> = list
        .into_iter()
        .filter(|t| function_name(t).as_deref() == Some(&*name))
        .collect();
    if kept.is_empty() {
        return Err(bad(
            "tool_choice",
            format!("no tool named `{name}` in `tools`"),
        ));
    }
    rest.remove("tools");
    Ok((Some("REQUIRED"), Some(kept)))
}

fn response_format(f: Option<&RawValue>) -> Result<Option<Format<'_>>, GatewayError> {
    let Some(f) = f.filter(|f| !is_null(f)) else {
        return Ok(None);
    };
    let parsed = serde_json::from_str::<FormatIn<'_>>(f.get()).ok();
    match parsed.as_ref().and_then(|p| p.kind.as_deref()) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(Format {
            kind: "json_object",
            json_schema: None,
        })),
        Some("json_schema") => {
            let schema = parsed
                .and_then(|p| p.json_schema)
                .and_then(|s| serde_json::from_str::<SchemaIn<'_>>(s.get()).ok())
                .and_then(|s| s.schema);
            Ok(Some(Format {
                kind: "json_object",
                json_schema: Some(match schema {
                    Some(s) => s,
                    None => static_raw("{}")?,
                }),
            }))
        }
        _ => Err(bad(
            "response_format",
            "must be text, json_object or json_schema",
        )),
    }
}

fn thinking(effort: Option<&RawValue>) -> Result<Option<Thinking>, GatewayError> {
    let Some(effort) = effort else {
        return Ok(None);
    };
    let budget = match as_str(effort).as_deref() {
        Some("none") => {
            return Ok(Some(Thinking {
                kind: "disabled",
                token_budget: None,
            }))
        }
        Some("minimal") | Some("low") => 1024,
        Some("medium") => 4096,
        Some(_) => 16384,
        None => return Err(bad("reasoning_effort", "must be a string")),
    };
    Ok(Some(Thinking {
        kind: "enabled",
        token_budget: Some(budget),
    }))
}

fn static_raw(json: &'static str) -> Result<&'static RawValue, GatewayError> {
    serde_json::from_str(json)
        .map_err(|e| GatewayError::new(500, "api_error", format!("internal JSON constant: {e}")))
}

impl ChunkStream for CohereChat {
    fn decode_error(&self) -> Option<GatewayError> {
        let e = self.sse.error()?;
        Some(crate::providers::openai_chunks::sse_too_large(
            &self.provider,
            e,
        ))
    }

    fn writer(&self) -> &ChunkWriter {
        &self.w
    }

    fn writer_mut(&mut self) -> &mut ChunkWriter {
        &mut self.w
    }

    fn decode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        // The parser lends each event from its buffers: out of `self` while it feeds us.
        let mut sse = std::mem::take(&mut self.sse);
        sse.feed(chunk, &mut |e| self.event(e, out));
        self.sse = sse;
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        let mut sse = std::mem::take(&mut self.sse);
        sse.finish(&mut |e| self.event(e, out));
        self.sse = sse;
    }

    fn at_end(&self) -> Result<Usage, GatewayError> {
        let provider = &self.provider;
        Err(self.failure(&format!("stream from {provider} ended before message-end")))
    }
}

impl ChatTranslator for CohereChat {
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        let p = call.provider;
        self.provider = p.name.clone();
        self.w.model = call.upstream_model.to_string();
        self.w.created = call.now_unix;
        self.w.include_usage = call.envelope.include_usage;
        let body = chat_body(call.envelope, call.upstream_model)?;
        let mut headers = Vec::with_capacity(2 + p.headers.len());
        if let Some(key) = &p.api_key {
            headers.push(("authorization".to_string(), format!("Bearer {key}")));
        }
        headers.extend(p.headers.iter().cloned());
        Ok(ProviderRequest {
            path: format!("{}/chat", p.base_path),
            headers,
            remove_headers: Vec::new(),
            body: Some(body),
        })
    }

    fn response(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        let invalid = |why: &str| {
            GatewayError::new(
                502,
                "api_error",
                format!("{} sent an invalid answer: {why}", self.provider),
            )
        };
        let v: Value = serde_json::from_slice(body).map_err(|_| invalid("not JSON"))?;
        let msg = v.get("message").ok_or_else(|| invalid("no `message`"))?;
        let (text, thinking) = answer_text(msg);
        if let Some(u) = v.get("usage") {
            self.usage_from(u);
        }
        let finish =
            finish_reason(v.get("finish_reason").and_then(Value::as_str)).map_err(|r| {
                GatewayError::new(
                    502,
                    "api_error",
                    format!("{}: generation ended with {r}", self.provider),
                )
            })?;
        let tool_calls = msg
            .get("tool_calls")
            .filter(|c| c.as_array().is_some_and(|a| !a.is_empty()));
        let out = Completion {
            id: v.get("id"),
            object: "chat.completion",
            created: self.w.created,
            model: &self.w.model,
            choices: [CompletionChoice {
                index: 0,
                message: AnswerMessage {
                    role: "assistant",
                    content: (!text.is_empty()).then_some(text),
                    refusal: None,
                    tool_calls,
                    reasoning_content: (!thinking.is_empty()).then_some(thinking),
                },
                logprobs: None,
                finish_reason: finish,
            }],
            usage: AnswerUsage::from(self.usage.unwrap_or_default()),
        };
        serde_json::to_vec(&out)
            .map(Some)
            .map_err(|e| GatewayError::new(500, "api_error", format!("serialising: {e}")))
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) -> bool {
        openai_chunks::stream_chunk(self, chunk, end_of_stream, out)
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
        provider_error(&self.provider, status, &message, None)
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_api::openai::parse_chat_envelope;
    use crate::config::{Config, ProcessEnv};
    use serde_json::json;

    fn translate(body: &str) -> Result<(CohereChat, Value), GatewayError> {
        let cfg = Config::parse(
            br#"{"providers":{"co":{"type":"cohere","cluster":"c","api_key":"co-key"}},"models":[{"name":"m","deployments":[{"provider":"co","model":"command-a-03-2025"}]}]}"#,
            &ProcessEnv,
        )
        .unwrap();
        let env = parse_chat_envelope(body.as_bytes())?;
        let mut t = CohereChat::default();
        let req = t.request(&ChatCall {
            raw: body.as_bytes(),
            envelope: &env,
            provider: &cfg.providers[0],
            upstream_model: "command-a-03-2025",
            now_unix: 7,
            want_stream_usage: true,
        })?;
        assert_eq!(req.path, "/v2/chat");
        assert!(req
            .headers
            .contains(&("authorization".into(), "Bearer co-key".into())));
        Ok((t, serde_json::from_slice(&req.body.unwrap()).unwrap()))
    }

    #[test]
    fn request_rewrites_the_differing_fields() {
        let (_, b) = translate(r#"{"model":"m","messages":[{"role":"developer","content":"d"},{"role":"user","content":"u"},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"r"}],
            "max_completion_tokens":50,"top_p":0.9,"stop":"END","user":"u1","stream":true,"stream_options":{"include_usage":true},
            "tools":[{"type":"function","function":{"name":"f","parameters":{}}},{"type":"function","function":{"name":"g","parameters":{}}}],
            "tool_choice":{"type":"function","function":{"name":"g"}},"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}},
            "reasoning_effort":"medium"}"#).unwrap();
        assert_eq!(b["model"], "command-a-03-2025");
        assert_eq!(b["messages"][0]["role"], "system");
        assert!(b["messages"][2].get("content").is_none());
        assert_eq!(b["max_tokens"], 50);
        assert_eq!(b["p"], 0.9);
        assert_eq!(b["stop_sequences"], json!(["END"]));
        assert!(
            b.get("user").is_none()
                && b.get("stream_options").is_none()
                && b.get("top_p").is_none()
        );
        assert_eq!(b["tools"].as_array().unwrap().len(), 1);
        assert_eq!(b["tools"][0]["function"]["name"], "g");
        assert_eq!(b["tool_choice"], "REQUIRED");
        assert_eq!(
            b["response_format"],
            json!({"type": "json_object", "json_schema": {"type": "object"}})
        );
        assert_eq!(
            b["thinking"],
            json!({"type": "enabled", "token_budget": 4096})
        );
        assert_eq!(b["stream"], true);
    }

    #[test]
    fn request_refuses_what_cohere_cannot_do() {
        for (body, param) in [
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#,
                "n",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"logit_bias":{"1":2}}"#,
                "logit_bias",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"sometimes"}"#,
                "tool_choice",
            ),
        ] {
            let e = translate(body).err().unwrap();
            assert_eq!((e.status, e.param.as_deref()), (400, Some(param)));
        }
        let (_, b) = translate(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"auto","n":1}"#).unwrap();
        assert!(b.get("tool_choice").is_none() && b.get("n").is_none());
    }

    #[test]
    fn response_becomes_chat_completion() {
        let (mut t, _) =
            translate(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#).unwrap();
        let body = br#"{"id":"co-1","finish_reason":"TOOL_CALL","message":{"role":"assistant","tool_plan":"I will call f","content":[{"type":"text","text":"ok"}],
            "tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
            "usage":{"billed_units":{"input_tokens":5,"output_tokens":2},"tokens":{"input_tokens":12,"output_tokens":4},"cached_tokens":3}}"#;
        let out: Value = serde_json::from_slice(&t.response(body).unwrap().unwrap()).unwrap();
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(out["choices"][0]["message"]["content"], "ok");
        assert_eq!(
            out["choices"][0]["message"]["reasoning_content"],
            "I will call f"
        );
        assert_eq!(
            out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":1}"
        );
        assert_eq!(out["usage"]["prompt_tokens"], 12);
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
        assert_eq!(t.usage().unwrap().completion_tokens, 4);
        assert_eq!(
            t.response(br#"{"id":"x","finish_reason":"ERROR","message":{}}"#)
                .unwrap_err()
                .status,
            502
        );
        assert_eq!(t.response(b"nope").unwrap_err().status, 502);
        let e = t.error(429, br#"{"message":"too many requests"}"#);
        assert_eq!(e.status, 429);
        assert!(e.message.contains("co") && e.message.contains("too many requests"));
    }

    const STREAM: &str = "event: message-start\ndata: {\"id\":\"s1\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\"}}}\n\n\
event: content-start\ndata: {\"type\":\"content-start\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"type\":\"text\",\"text\":\"\"}}}}\n\n\
event: content-delta\ndata: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"Hel\"}}}}\n\n\
event: content-delta\ndata: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"lo\"}}}}\n\n\
event: content-end\ndata: {\"type\":\"content-end\",\"index\":0}\n\n\
event: tool-call-start\ndata: {\"type\":\"tool-call-start\",\"index\":1,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"t1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}}}}\n\n\
event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":1,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}}}}\n\n\
event: tool-call-end\ndata: {\"type\":\"tool-call-end\",\"index\":1}\n\n\
event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"TOOL_CALL\",\"usage\":{\"tokens\":{\"input_tokens\":9,\"output_tokens\":3}}}}\n\n";

    fn run(chunks: &[&[u8]], include_usage: bool) -> String {
        let body = format!(
            r#"{{"model":"m","stream":true,"stream_options":{{"include_usage":{include_usage}}},"messages":[{{"role":"user","content":"x"}}]}}"#
        );
        let (mut t, _) = translate(&body).unwrap();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            assert!(t.stream_chunk(c, i + 1 == chunks.len(), &mut out));
        }
        String::from_utf8(out).unwrap()
    }

    /// A client stream's events, parsed: the JSON of each `data:` line before `[DONE]`. Asserts
    /// that the stream ends with one `data: [DONE]` and that nothing follows it.
    fn parsed(stream: &str) -> Vec<Value> {
        let events: Vec<&str> = stream.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.last(), Some(&"data: [DONE]"), "{stream}");
        assert!(stream.ends_with("data: [DONE]\n\n"), "{stream}");
        assert_eq!(stream.matches("data: [DONE]").count(), 1, "{stream}");
        events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect()
    }

    /// The deltas of choice 0, in order.
    fn deltas(chunks: &[Value]) -> Vec<&Value> {
        chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta"))
            .collect()
    }

    fn tool_deltas(chunks: &[Value]) -> Vec<Value> {
        deltas(chunks)
            .into_iter()
            .filter_map(|d| d.get("tool_calls"))
            .flat_map(|t| t.as_array().unwrap().clone())
            .collect()
    }

    #[test]
    fn stream_translates_at_every_split() {
        let whole = run(&[STREAM.as_bytes()], true);
        let chunks = parsed(&whole);
        for c in &chunks {
            assert_eq!(c["id"], "s1");
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], "command-a-03-2025");
            assert_eq!(c["created"], 7);
        }
        let d = deltas(&chunks);
        assert_eq!(*d[0], json!({"role": "assistant", "content": ""}));
        let text: String = d
            .iter()
            .skip(1)
            .filter_map(|d| d.get("content").and_then(Value::as_str))
            .collect();
        assert_eq!(text, "Hello");
        assert_eq!(
            tool_deltas(&chunks),
            [
                json!({"index": 0, "id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}),
                json!({"index": 0, "function": {"arguments": "{\"a\":1}"}}),
            ]
        );
        let finishes: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/finish_reason"))
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finishes, [&json!("tool_calls")]);
        // Every chunk but the last has `"usage":null`; the last has no choices, and the usage.
        let (last, rest) = chunks.split_last().unwrap();
        assert!(rest
            .iter()
            .all(|c| c["usage"].is_null() && c.get("usage").is_some()));
        assert_eq!(last["choices"], json!([]));
        assert_eq!(
            last["usage"],
            json!({"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12,
                "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0}})
        );
        for cut in 0..=STREAM.len() {
            let (a, b) = STREAM.as_bytes().split_at(cut);
            assert_eq!(run(&[a, b], true), whole, "cut {cut}");
        }
        let plain = parsed(&run(&[STREAM.as_bytes()], false));
        assert_eq!(plain.len(), chunks.len() - 1);
        assert!(plain.iter().all(|c| c.get("usage").is_none()));
    }

    #[test]
    fn stream_reasoning_and_tool_calls_without_id_or_name() {
        let stream = "event: message-start\ndata: {\"id\":\"s2\",\"type\":\"message-start\"}\n\n\
event: content-delta\ndata: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"thinking\":\"hm\"}}}}\n\n\
event: tool-plan-delta\ndata: {\"type\":\"tool-plan-delta\",\"delta\":{\"message\":{\"tool_plan\":\"plan\"}}}\n\n\
event: tool-call-start\ndata: {\"type\":\"tool-call-start\",\"index\":4,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{}\"}}}}}\n\n\
event: tool-call-start\ndata: {\"type\":\"tool-call-start\",\"index\":2,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"t2\",\"function\":{\"name\":\"g\"}}}}}\n\n\
event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":2,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"\"}}}}}\n\n\
event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"MAX_TOKENS\",\"usage\":{\"billed_units\":{\"input_tokens\":2,\"output_tokens\":1},\"cached_tokens\":1}}}\n\n";
        let chunks = parsed(&run(&[stream.as_bytes()], true));
        let d = deltas(&chunks);
        let reasoning: Vec<&str> = d
            .iter()
            .filter_map(|d| d.get("reasoning_content").and_then(Value::as_str))
            .collect();
        assert_eq!(reasoning, ["hm", "plan"]);
        // A tool call without id or name gets empty ones, as from the other providers; an empty
        // arguments delta writes nothing.
        assert_eq!(
            tool_deltas(&chunks),
            [
                json!({"index": 0, "id": "", "type": "function", "function": {"name": "", "arguments": "{}"}}),
                json!({"index": 1, "id": "t2", "type": "function", "function": {"name": "g", "arguments": ""}}),
            ]
        );
        assert_eq!(
            chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
            "length"
        );
        let usage = &chunks[chunks.len() - 1]["usage"];
        assert_eq!(
            (
                &usage["prompt_tokens"],
                &usage["completion_tokens"],
                &usage["total_tokens"]
            ),
            (&json!(2), &json!(1), &json!(3))
        );
        assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 1);
    }

    /// The error event of a failed stream, and that it is followed by `[DONE]` only.
    fn error_then_done(stream: &str) -> Value {
        let events = parsed(stream);
        let (err, _) = events.split_last().unwrap();
        assert_eq!(err["error"]["type"], "api_error", "{stream}");
        assert_eq!(err["error"]["code"], "upstream_stream_error", "{stream}");
        err["error"]["message"].clone()
    }

    #[test]
    fn dropped_or_failed_stream_ends_with_error_then_done() {
        let cut = STREAM.find("event: message-end").unwrap();
        let out = run(&[&STREAM.as_bytes()[..cut]], false);
        let msg = error_then_done(&out);
        assert!(msg.as_str().unwrap().contains("message-end"), "{msg}");
        let failed = STREAM.replace(
            "\"finish_reason\":\"TOOL_CALL\"",
            "\"finish_reason\":\"ERROR\",\"error\":\"boom\"",
        );
        // Events after the failure (here a whole second stream) write nothing.
        let after = format!("{failed}{STREAM}");
        let out = run(&[after.as_bytes(), STREAM.as_bytes()], true);
        assert_eq!(out, run(&[failed.as_bytes()], true));
        let msg = error_then_done(&out);
        assert!(msg.as_str().unwrap().contains("boom"), "{msg}");
        let timeout = STREAM.replace("TOOL_CALL", "TIMEOUT");
        let msg = error_then_done(&run(&[timeout.as_bytes()], false));
        assert!(msg.as_str().unwrap().contains("TIMEOUT"), "{msg}");
        // Nothing follows a proper end either.
        let twice = format!("{STREAM}{STREAM}");
        assert_eq!(
            run(&[twice.as_bytes()], false),
            run(&[STREAM.as_bytes()], false)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let cfg = Config::parse(
            br#"{"providers":{"co":{"type":"cohere","cluster":"c"}},"models":[{"name":"m","deployments":[{"provider":"co"}]}]}"#,
            &ProcessEnv,
        )
        .unwrap();
        let fresh = |stream: bool, usage: bool| -> Box<dyn ChatTranslator> {
            let body = format!(
                r#"{{"model":"m","stream":{stream},"stream_options":{{"include_usage":{usage}}},"messages":[{{"role":"user","content":"x"}}]}}"#
            );
            Box::new(translate(&body).unwrap().0)
        };
        crate::test_support::workout(
            &[STREAM.as_bytes(), br#"{"id":"x","finish_reason":"COMPLETE","message":{"content":[{"type":"text","text":"a"}]}}"#,
              br#"{"model":"m","messages":[{"role":"developer","content":"d"},{"role":"assistant","content":null,"tool_calls":[]}],"stop":"x","tool_choice":{"type":"function","function":{"name":"f"}},"tools":[{"type":"function","function":{"name":"f"}}]}"#],
            b"{}[]\":,event: data\nmessage-endtool-call-startindexdelta01",
            &cfg.providers[0],
            &|| Box::new(CohereChat::default()),
            &fresh,
            2000,
        );
    }

    /// Bodies the `serde_json::Value`-tree builder turned into exactly these (its keys sorted):
    /// the typed builder writes the same JSON values, each key once.
    const GOLDEN: &[(&str, &str)] = &[
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":10,"top_p":null,"p":0.5,"stop":["a","b"],"temperature":0.3,"seed":5,"frequency_penalty":0.1,"tool_choice":"none","response_format":{"type":"json_object"},"reasoning_effort":"none","k":3}"#,
            r#"{"frequency_penalty":0.1,"k":3,"max_tokens":10,"messages":[{"content":"x","role":"user"}],"model":"command-a-03-2025","p":0.5,"response_format":{"type":"json_object"},"seed":5,"stop_sequences":["a","b"],"temperature":0.3,"thinking":{"type":"disabled"},"tool_choice":"NONE"}"#,
        ),
        (
            r#"{"model":"m","messages":[{"role":"system","content":"s","name":"n"},{"role":"assistant","content":"a","refusal":null},{"role":"user","content":[{"type":"text","text":"t"},{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}],"max_completion_tokens":null,"max_tokens":7,"stop":5,"stop_sequences":["keep"],"tool_choice":"required","tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"a":{"type":"string"}}}}}],"response_format":{"type":"json_schema","json_schema":{"name":"x"}},"reasoning_effort":"high"}"#,
            r#"{"max_tokens":7,"messages":[{"content":"s","role":"system"},{"content":"a","role":"assistant"},{"content":[{"text":"t","type":"text"},{"image_url":{"url":"https://x/y.png"},"type":"image_url"}],"role":"user"}],"model":"command-a-03-2025","response_format":{"json_schema":{},"type":"json_object"},"stop_sequences":["keep"],"thinking":{"token_budget":16384,"type":"enabled"},"tool_choice":"REQUIRED","tools":[{"function":{"name":"f","parameters":{"properties":{"a":{"type":"string"}},"type":"object"}},"type":"function"}]}"#,
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"text"},"reasoning_effort":"minimal","tool_choice":null,"n":1,"logit_bias":null,"audio":null,"stream_options":{"include_usage":true},"user":"u","store":true,"metadata":{"a":"b"},"service_tier":"auto","top_logprobs":2,"prediction":{},"modalities":["text"],"safety_identifier":"s","prompt_cache_key":"k","verbosity":"low","parallel_tool_calls":false}"#,
            r#"{"audio":null,"logit_bias":null,"messages":[{"content":"x","role":"user"}],"model":"command-a-03-2025","thinking":{"token_budget":1024,"type":"enabled"}}"#,
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"schema":null}},"max_completion_tokens":5,"max_tokens":9,"stop":"END"}"#,
            r#"{"max_tokens":5,"messages":[{"content":"x","role":"user"}],"model":"command-a-03-2025","response_format":{"json_schema":null,"type":"json_object"},"stop_sequences":["END"]}"#,
        ),
        (
            r#"{"model":"m","messages":[{"role":"developer","content":"caf\u00e9 \"q\" \n"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"r"}],"top_p":1e-1,"reasoning_effort":"low","tools":[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"g"}},{"type":"other"}],"tool_choice":{"type":"function","function":{"name":"f"}}}"#,
            r#"{"messages":[{"content":"café \"q\" \n","role":"system"},{"role":"assistant","tool_calls":[{"function":{"arguments":"{}","name":"f"},"id":"c1","type":"function"}]},{"content":"r","role":"tool","tool_call_id":"c1"}],"model":"command-a-03-2025","p":0.1,"thinking":{"token_budget":1024,"type":"enabled"},"tool_choice":"REQUIRED","tools":[{"function":{"name":"f"},"type":"function"}]}"#,
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x","content":"y"}],"temperature":1,"temperature":0.5,"response_format":{"type":"json_schema","json_schema":"notanobject"},"reasoning_effort":"xhigh","stream":false}"#,
            r#"{"messages":[{"content":"y","role":"user"}],"model":"command-a-03-2025","response_format":{"json_schema":{},"type":"json_object"},"stream":false,"temperature":0.5,"thinking":{"token_budget":16384,"type":"enabled"}}"#,
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"thinking":{"type":"enabled","token_budget":1},"reasoning_effort":"medium"}"#,
            r#"{"messages":[{"content":"x","role":"user"}],"model":"command-a-03-2025","thinking":{"token_budget":4096,"type":"enabled"}}"#,
        ),
    ];

    /// Requests it refused, with the parameter named.
    const GOLDEN_ERRORS: &[(&str, &str)] = &[
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"function","function":{"name":"h"}},"tools":[{"type":"function","function":{"name":"f"}}]}"#,
            "tool_choice",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"function"}}"#,
            "tool_choice",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":5}"#,
            "tool_choice",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"bogus"}}"#,
            "response_format",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":"json"}"#,
            "response_format",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":1}}"#,
            "response_format",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":null}"#,
            "reasoning_effort",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":5}"#,
            "reasoning_effort",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":3}"#,
            "n",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"logit_bias":{}}"#,
            "logit_bias",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"audio":{"voice":"x"}}"#,
            "audio",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"sometimes"}"#,
            "tool_choice",
        ),
    ];

    #[test]
    fn request_bodies_match_the_golden_ones() {
        for (body, golden) in GOLDEN {
            let (_, got) = translate(body).unwrap();
            let want: Value = serde_json::from_str(golden).unwrap();
            assert_eq!(got, want, "{body}");
        }
        // No key twice (a map read back keeps only the last of duplicates).
        let raw = |body: &str| {
            let env = parse_chat_envelope(body.as_bytes()).unwrap();
            let cfg = Config::parse(
                br#"{"providers":{"co":{"type":"cohere","cluster":"c"}},"models":[{"name":"m","deployments":[{"provider":"co"}]}]}"#,
                &ProcessEnv,
            )
            .unwrap();
            let req = CohereChat::default()
                .request(&ChatCall {
                    raw: body.as_bytes(),
                    envelope: &env,
                    provider: &cfg.providers[0],
                    upstream_model: "c",
                    now_unix: 7,
                    want_stream_usage: true,
                })
                .unwrap();
            String::from_utf8(req.body.unwrap()).unwrap()
        };
        let (body, _) = GOLDEN[GOLDEN.len() - 1];
        assert_eq!(raw(body).matches("\"thinking\"").count(), 1);
        let dup = r#"{"model":"m","model":"n","messages":[{"role":"user","content":"x"}],"top_p":0.5,"p":0.1,"stop":"s","stop_sequences":["t"],"temperature":1,"temperature":0.5}"#;
        let out = raw(dup);
        for key in [
            "\"model\"",
            "\"p\"",
            "\"stop_sequences\"",
            "\"temperature\"",
        ] {
            assert_eq!(out.matches(key).count(), 1, "{key} in {out}");
        }
        for (body, param) in GOLDEN_ERRORS {
            let e = translate(body).err().unwrap();
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some(*param)),
                "{body}"
            );
        }
    }

    /// Cohere answers and the `chat.completion`s the `serde_json::Value`-tree builder made of
    /// them (keys sorted): the typed builder writes the same JSON values.
    const GOLDEN_ANSWERS: &[(&str, &str)] = &[
        (
            r#"{"id":"co-1","finish_reason":"TOOL_CALL","message":{"role":"assistant","tool_plan":"I will call f","content":[{"type":"text","text":"ok"}],"tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},{"id":"t2","type":"function","function":{"name":"g","arguments":""},"extra":[1,2]}]},"usage":{"billed_units":{"input_tokens":5,"output_tokens":2},"tokens":{"input_tokens":12,"output_tokens":4},"cached_tokens":3}}"#,
            r#"{"choices":[{"finish_reason":"tool_calls","index":0,"logprobs":null,"message":{"content":"ok","reasoning_content":"I will call f","refusal":null,"role":"assistant","tool_calls":[{"function":{"arguments":"{\"a\":1}","name":"f"},"id":"t1","type":"function"},{"extra":[1,2],"function":{"arguments":"","name":"g"},"id":"t2","type":"function"}]}}],"created":7,"id":"co-1","model":"command-a-03-2025","object":"chat.completion","usage":{"completion_tokens":4,"prompt_tokens":12,"prompt_tokens_details":{"cached_tokens":3},"total_tokens":16}}"#,
        ),
        (
            r#"{"finish_reason":"COMPLETE","message":{"content":[{"type":"thinking","thinking":"hmm "},{"type":"text","text":"caf\u00e9 \"q\"\n"},{"type":"thinking","thinking":"more"},{"type":"text","text":"!"}],"tool_plan":"ignored"},"usage":{"billed_units":{"input_tokens":5,"output_tokens":2}}}"#,
            r#"{"choices":[{"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":"café \"q\"\n!","reasoning_content":"hmm more","refusal":null,"role":"assistant"}}],"created":7,"id":null,"model":"command-a-03-2025","object":"chat.completion","usage":{"completion_tokens":2,"prompt_tokens":5,"prompt_tokens_details":{"cached_tokens":0},"total_tokens":7}}"#,
        ),
        (
            r#"{"id":"co-3","finish_reason":"MAX_TOKENS","message":{"content":[],"tool_calls":[]}}"#,
            r#"{"choices":[{"finish_reason":"length","index":0,"logprobs":null,"message":{"content":null,"refusal":null,"role":"assistant"}}],"created":7,"id":"co-3","model":"command-a-03-2025","object":"chat.completion","usage":{"completion_tokens":0,"prompt_tokens":0,"prompt_tokens_details":{"cached_tokens":0},"total_tokens":0}}"#,
        ),
        (
            r#"{"id":7,"finish_reason":"STOP_SEQUENCE","message":{"content":"not a list","tool_calls":[{"function":{"name":"h"}}]},"usage":{"tokens":{"input_tokens":1},"cached_tokens":"x"}}"#,
            r#"{"choices":[{"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":null,"refusal":null,"role":"assistant","tool_calls":[{"function":{"name":"h"}}]}}],"created":7,"id":7,"model":"command-a-03-2025","object":"chat.completion","usage":{"completion_tokens":0,"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":0},"total_tokens":1}}"#,
        ),
        (
            r#"{"id":"co-5","message":{"content":[{"type":"image"},{"type":"text"},{"text":"no type"}],"tool_calls":{"not":"a list"}},"usage":{}}"#,
            r#"{"choices":[{"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":null,"refusal":null,"role":"assistant"}}],"created":7,"id":"co-5","model":"command-a-03-2025","object":"chat.completion","usage":{"completion_tokens":0,"prompt_tokens":0,"prompt_tokens_details":{"cached_tokens":0},"total_tokens":0}}"#,
        ),
    ];

    #[test]
    fn answers_match_the_golden_ones() {
        for (answer, golden) in GOLDEN_ANSWERS {
            let (mut t, _) =
                translate(r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#).unwrap();
            let got: Value =
                serde_json::from_slice(&t.response(answer.as_bytes()).unwrap().unwrap()).unwrap();
            let want: Value = serde_json::from_str(golden).unwrap();
            assert_eq!(got, want, "{answer}");
        }
    }
}
