//! Typed OpenAI chat-completions request and response shapes, for translators that rebuild the
//! body for another provider's API.
//!
//! Request side: [`ChatRequest::from_envelope`] reads the fields translators need from the already
//! split top level ([`ChatEnvelope`]), borrowing strings from the client's body where they hold no
//! escapes and keeping opaque JSON (tool `parameters`, JSON schemas) as `&RawValue` so that it is
//! copied, never re-parsed into a tree. Every error is a 400 naming the bad param, down to the
//! content part (`messages[2].content[0]`).
//!
//! Response side: `Serialize`-only structs for `chat.completion` and `chat.completion.chunk`,
//! written straight into the output buffer with `serde_json::to_writer`.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

use crate::client_api::openai::ChatEnvelope;
use crate::error::GatewayError;
use crate::usage::Usage;

// ---------------------------------------------------------------------------------------------
// A string that borrows from the body unless it holds escapes
// ---------------------------------------------------------------------------------------------

/// A JSON string borrowed from the input when it has no escapes (serde's own `Cow<str>` only
/// borrows for a bare `#[serde(borrow)] Cow<str>` field, not inside `Option` or `Vec`). It
/// remembers whether serde_json lent it from JSON text, so that writing it into another JSON
/// body needs no escaping scan ([`Str::text`]). Only deserialization makes one (outside tests),
/// and nothing changes one, so that knowledge stays true.
#[derive(Clone, Default)]
pub struct Str<'a> {
    text: Cow<'a, str>,
    /// Lent by serde_json from JSON text: nothing in it needs escaping.
    clean: bool,
}

impl<'a> Str<'a> {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The string with what is known about it, for a translator to write into its own body.
    pub fn text(&self) -> crate::codec::json_text::Text<'_> {
        if self.clean {
            crate::codec::json_text::Text::lent_by_json(&self.text)
        } else {
            crate::codec::json_text::Text::new(&self.text)
        }
    }

    /// Whether serde_json lent it from the JSON text it parsed (tests).
    #[cfg(test)]
    pub fn is_lent(&self) -> bool {
        self.clean && matches!(self.text, Cow::Borrowed(_))
    }
}

impl PartialEq for Str<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Str<'_> {}

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl fmt::Display for Str<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
impl<'a> From<&'a str> for Str<'a> {
    fn from(s: &'a str) -> Self {
        Str {
            text: Cow::Borrowed(s),
            clean: false,
        }
    }
}

impl Serialize for Str<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.text().serialize(s)
    }
}

/// What the visitors below make of a string: lent from JSON text (clean) when `lent` says the
/// deserializer lends only such strings.
fn lent_str(v: &str, lent: bool) -> Str<'_> {
    Str {
        text: Cow::Borrowed(v),
        clean: lent,
    }
}

fn owned_str<'a>(v: String) -> Str<'a> {
    Str {
        text: Cow::Owned(v),
        clean: false,
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(bool, std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(lent_str(v, self.0))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(owned_str(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(owned_str(v))
            }
        }
        let lent = crate::codec::json_text::lends_json_text::<D>();
        d.deserialize_str(V(lent, std::marker::PhantomData))
    }
}

// ---------------------------------------------------------------------------------------------
// Request
// ---------------------------------------------------------------------------------------------

/// The chat-completions request fields translators use. Fields not listed are ignored.
#[derive(Debug, Default)]
pub struct ChatRequest<'a> {
    pub messages: Vec<ChatMessage<'a>>,
    /// `max_completion_tokens` when set, else the deprecated `max_tokens`.
    pub max_tokens: Option<u64>,
    /// Validated to OpenAI's range 0..=2.
    pub temperature: Option<f64>,
    /// Validated to 0..=1.
    pub top_p: Option<f64>,
    pub n: Option<u64>,
    /// `stop` as a list (a single string becomes one element).
    pub stop: Vec<Str<'a>>,
    pub user: Option<Str<'a>>,
    pub safety_identifier: Option<Str<'a>>,
    pub tools: Vec<Tool<'a>>,
    pub tool_choice: Option<ToolChoice<'a>>,
    pub parallel_tool_calls: Option<bool>,
    pub reasoning_effort: Option<Str<'a>>,
    pub response_format: Option<ResponseFormat<'a>>,
    pub logprobs: bool,
    pub top_logprobs: Option<u64>,
    pub seed: Option<i64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    /// Legacy function calling, kept raw: each translator decides whether it supports it.
    pub functions: Option<&'a RawValue>,
    pub function_call: Option<&'a RawValue>,
    pub modalities: Vec<Str<'a>>,
    pub audio: Option<&'a RawValue>,
}

impl ChatRequest<'_> {
    /// Refuses what no translated provider can do: logprobs, the legacy `functions` and
    /// `function_call`, audio output. `unsupported(param, what)` makes the provider's error.
    pub fn refuse_untranslatable(
        &self,
        unsupported: fn(&str, &str) -> GatewayError,
    ) -> Result<(), GatewayError> {
        if self.logprobs {
            return Err(unsupported("logprobs", "`logprobs`"));
        }
        if self.functions.is_some() {
            return Err(unsupported("functions", "legacy `functions` (use `tools`)"));
        }
        if self.function_call.is_some() {
            return Err(unsupported(
                "function_call",
                "legacy `function_call` (use `tool_choice`)",
            ));
        }
        if self.audio.is_some() || self.modalities.iter().any(|m| m.as_str() == "audio") {
            let p = if self.audio.is_some() {
                "audio"
            } else {
                "modalities"
            };
            return Err(unsupported(p, "audio output"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

/// One message, flat: every role's fields are optional here; translators check what a role needs.
#[derive(Debug, Deserialize)]
pub struct ChatMessage<'a> {
    pub role: Role,
    #[serde(borrow)]
    pub content: Option<MessageContent<'a>>,
    #[serde(borrow)]
    pub name: Option<Str<'a>>,
    #[serde(borrow)]
    pub tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(borrow)]
    pub tool_call_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub function_call: Option<&'a RawValue>,
    #[serde(borrow)]
    pub refusal: Option<Str<'a>>,
}

/// `content`: a string or an array of parts.
#[derive(Debug)]
pub enum MessageContent<'a> {
    Text(Str<'a>),
    Parts(Vec<ContentPart<'a>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for MessageContent<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(bool, std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = MessageContent<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MessageContent::Text(lent_str(v, self.0)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MessageContent::Text(owned_str(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(MessageContent::Text(owned_str(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(p) = seq.next_element::<ContentPart<'a>>()? {
                    parts.push(p);
                }
                Ok(MessageContent::Parts(parts))
            }
        }
        let lent = crate::codec::json_text::lends_json_text::<D>();
        d.deserialize_any(V(lent, std::marker::PhantomData))
    }
}

/// One content part, flat: `kind` says which of the other fields is meant.
#[derive(Debug, Deserialize)]
pub struct ContentPart<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub text: Option<Str<'a>>,
    #[serde(borrow)]
    pub image_url: Option<ImageUrl<'a>>,
    #[serde(borrow)]
    pub input_audio: Option<&'a RawValue>,
    #[serde(borrow)]
    pub file: Option<&'a RawValue>,
    #[serde(borrow)]
    pub refusal: Option<Str<'a>>,
    /// Not OpenAI: the Anthropic prompt-caching marker some clients put on text parts.
    #[serde(borrow)]
    pub cache_control: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
pub struct ImageUrl<'a> {
    #[serde(borrow)]
    pub url: Str<'a>,
    #[serde(borrow)]
    pub detail: Option<Str<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct ToolCall<'a> {
    #[serde(borrow)]
    pub id: Str<'a>,
    #[serde(rename = "type", borrow)]
    pub kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub function: FunctionCall<'a>,
}

#[derive(Debug, Deserialize)]
pub struct FunctionCall<'a> {
    #[serde(borrow)]
    pub name: Str<'a>,
    /// A JSON text (OpenAI sends the arguments object serialised as a string).
    #[serde(borrow)]
    pub arguments: Option<Str<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct Tool<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub function: Option<FunctionDef<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct FunctionDef<'a> {
    #[serde(borrow)]
    pub name: Str<'a>,
    #[serde(borrow)]
    pub description: Option<Str<'a>>,
    /// JSON schema of the arguments, copied as is.
    #[serde(borrow)]
    pub parameters: Option<&'a RawValue>,
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice<'a> {
    None,
    Auto,
    Required,
    Function(Str<'a>),
}

#[derive(Debug)]
pub enum ResponseFormat<'a> {
    Text,
    JsonObject,
    JsonSchema {
        name: Option<Str<'a>>,
        schema: Option<&'a RawValue>,
        strict: Option<bool>,
    },
}

impl<'a> ChatRequest<'a> {
    /// Reads and validates the request fields from the parsed envelope.
    pub fn from_envelope(env: &ChatEnvelope<'a>) -> Result<Self, GatewayError> {
        let mut r = ChatRequest::<'a> {
            messages: parse_messages(env.field("messages"))?,
            ..Default::default()
        };
        let max_completion: Option<u64> = field(env, "max_completion_tokens")?;
        let max_tokens: Option<u64> = field(env, "max_tokens")?;
        r.max_tokens = max_completion.or(max_tokens);
        if r.max_tokens == Some(0) {
            let p = if max_completion.is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            return Err(GatewayError::invalid_param(
                p,
                format!("`{p}` must be at least 1"),
            ));
        }
        r.temperature = field(env, "temperature")?;
        if let Some(t) = r.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(GatewayError::invalid_param(
                    "temperature",
                    "`temperature` must be between 0 and 2",
                ));
            }
        }
        r.top_p = field(env, "top_p")?;
        if let Some(t) = r.top_p {
            if !(0.0..=1.0).contains(&t) {
                return Err(GatewayError::invalid_param(
                    "top_p",
                    "`top_p` must be between 0 and 1",
                ));
            }
        }
        r.n = field(env, "n")?;
        r.stop = parse_stop(env.field("stop"))?;
        r.user = field(env, "user")?;
        r.safety_identifier = field(env, "safety_identifier")?;
        r.tools = field::<Vec<&'a RawValue>>(env, "tools")?
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, raw)| {
                serde_json::from_str::<Tool<'a>>(raw.get()).map_err(|e| {
                    GatewayError::invalid_param(
                        &format!("tools[{i}]"),
                        format!("invalid tool: {e}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        r.tool_choice = parse_tool_choice(env.field("tool_choice"))?;
        r.parallel_tool_calls = field(env, "parallel_tool_calls")?;
        r.reasoning_effort = field(env, "reasoning_effort")?;
        r.response_format = parse_response_format(env.field("response_format"))?;
        r.logprobs = field::<bool>(env, "logprobs")?.unwrap_or(false);
        r.top_logprobs = field(env, "top_logprobs")?;
        r.seed = field(env, "seed")?;
        r.frequency_penalty = field(env, "frequency_penalty")?;
        r.presence_penalty = field(env, "presence_penalty")?;
        r.functions = env.field("functions").filter(|v| v.get() != "null");
        r.function_call = env.field("function_call").filter(|v| v.get() != "null");
        r.modalities = field(env, "modalities")?.unwrap_or_default();
        r.audio = env.field("audio").filter(|v| v.get() != "null");
        Ok(r)
    }
}

/// One top-level field; `null` is absent. Type errors name the field.
fn field<'a, T: Deserialize<'a>>(
    env: &ChatEnvelope<'a>,
    name: &str,
) -> Result<Option<T>, GatewayError> {
    match env.field(name) {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<Option<T>>(raw.get())
            .map_err(|e| GatewayError::invalid_param(name, format!("invalid `{name}`: {e}"))),
    }
}

/// `messages` in one pass; only when that fails is it walked element by element to name the
/// exact message, content part or tool call at fault.
pub fn parse_messages<'a>(raw: Option<&'a RawValue>) -> Result<Vec<ChatMessage<'a>>, GatewayError> {
    let raw = raw.ok_or_else(crate::client_api::openai::envelope::messages_required)?;
    match serde_json::from_str::<Vec<ChatMessage<'a>>>(raw.get()) {
        // (An empty list never gets here: `parse_chat_top` refuses it.)
        Ok(m) => Ok(m),
        // The shape and roles first (the clearer message), then the message at fault.
        Err(whole) => Err(crate::client_api::openai::envelope::check_message_list(raw)
            .err()
            .or_else(|| locate_message_error(raw))
            .unwrap_or_else(|| {
                GatewayError::invalid_param("messages", format!("invalid `messages`: {whole}"))
            })),
    }
}

fn locate_message_error(raw: &RawValue) -> Option<GatewayError> {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        content: Option<&'a RawValue>,
        #[serde(borrow)]
        tool_calls: Option<&'a RawValue>,
    }
    let items: Vec<&RawValue> = serde_json::from_str(raw.get()).ok()?;
    for (i, item) in items.iter().enumerate() {
        let Err(e) = serde_json::from_str::<ChatMessage<'_>>(item.get()) else {
            continue;
        };
        if let Ok(p) = serde_json::from_str::<Probe<'_>>(item.get()) {
            if let Some(c) = p.content {
                if let Ok(parts) = serde_json::from_str::<Vec<&RawValue>>(c.get()) {
                    for (j, part) in parts.iter().enumerate() {
                        if let Err(e) = serde_json::from_str::<ContentPart<'_>>(part.get()) {
                            return Some(GatewayError::invalid_param(
                                &format!("messages[{i}].content[{j}]"),
                                format!("invalid content part: {e}"),
                            ));
                        }
                    }
                } else if serde_json::from_str::<Option<MessageContent<'_>>>(c.get()).is_err() {
                    return Some(GatewayError::invalid_param(
                        &format!("messages[{i}].content"),
                        "`content` must be a string or an array of content parts",
                    ));
                }
            }
            if let Some(tc) = p.tool_calls {
                if let Ok(calls) = serde_json::from_str::<Vec<&RawValue>>(tc.get()) {
                    for (j, call) in calls.iter().enumerate() {
                        if let Err(e) = serde_json::from_str::<ToolCall<'_>>(call.get()) {
                            return Some(GatewayError::invalid_param(
                                &format!("messages[{i}].tool_calls[{j}]"),
                                format!("invalid tool call: {e}"),
                            ));
                        }
                    }
                }
            }
        }
        return Some(GatewayError::invalid_param(
            &format!("messages[{i}]"),
            format!("invalid message: {e}"),
        ));
    }
    None
}

fn parse_stop<'a>(raw: Option<&'a RawValue>) -> Result<Vec<Str<'a>>, GatewayError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let s = raw.get();
    let bad = |e: serde_json::Error| {
        GatewayError::invalid_param(
            "stop",
            format!("`stop` must be a string or an array of strings: {e}"),
        )
    };
    if s.starts_with('"') {
        Ok(vec![serde_json::from_str::<Str<'a>>(s).map_err(bad)?])
    } else {
        Ok(serde_json::from_str::<Option<Vec<Str<'a>>>>(s)
            .map_err(bad)?
            .unwrap_or_default())
    }
}

fn parse_tool_choice<'a>(
    raw: Option<&'a RawValue>,
) -> Result<Option<ToolChoice<'a>>, GatewayError> {
    #[derive(Deserialize)]
    struct Obj<'a> {
        #[serde(rename = "type", borrow)]
        kind: Str<'a>,
        #[serde(borrow)]
        function: Option<Named<'a>>,
    }
    #[derive(Deserialize)]
    struct Named<'a> {
        #[serde(borrow)]
        name: Str<'a>,
    }
    let Some(raw) = raw else { return Ok(None) };
    let s = raw.get();
    if s == "null" {
        return Ok(None);
    }
    if s.starts_with('"') {
        let v: Str<'_> = serde_json::from_str(s).map_err(|e| {
            GatewayError::invalid_param("tool_choice", format!("invalid `tool_choice`: {e}"))
        })?;
        return match v.as_str() {
            "none" => Ok(Some(ToolChoice::None)),
            "auto" => Ok(Some(ToolChoice::Auto)),
            "required" => Ok(Some(ToolChoice::Required)),
            other => Err(GatewayError::invalid_param(
                "tool_choice",
                format!("`{other}` is not a valid `tool_choice`; expected none, auto, required or a function object"),
            )),
        };
    }
    let o: Obj<'a> = serde_json::from_str(s).map_err(|e| {
        GatewayError::invalid_param("tool_choice", format!("invalid `tool_choice`: {e}"))
    })?;
    match (o.kind.as_str(), o.function) {
        ("function", Some(f)) => Ok(Some(ToolChoice::Function(f.name))),
        ("function", None) => Err(GatewayError::invalid_param(
            "tool_choice.function",
            "`tool_choice.function.name` is required",
        )),
        (other, _) => Err(GatewayError::invalid_param(
            "tool_choice.type",
            format!("tool_choice type `{other}` is not supported"),
        )),
    }
}

fn parse_response_format<'a>(
    raw: Option<&'a RawValue>,
) -> Result<Option<ResponseFormat<'a>>, GatewayError> {
    #[derive(Deserialize)]
    struct Obj<'a> {
        #[serde(rename = "type", borrow)]
        kind: Str<'a>,
        #[serde(borrow)]
        json_schema: Option<Schema<'a>>,
    }
    #[derive(Deserialize)]
    struct Schema<'a> {
        #[serde(borrow)]
        name: Option<Str<'a>>,
        #[serde(borrow)]
        schema: Option<&'a RawValue>,
        strict: Option<bool>,
    }
    let Some(raw) = raw else { return Ok(None) };
    let o: Option<Obj<'a>> = serde_json::from_str(raw.get()).map_err(|e| {
        GatewayError::invalid_param("response_format", format!("invalid `response_format`: {e}"))
    })?;
    let Some(o) = o else { return Ok(None) };
    match o.kind.as_str() {
        "text" => Ok(Some(ResponseFormat::Text)),
        "json_object" => Ok(Some(ResponseFormat::JsonObject)),
        "json_schema" => {
            let s = o.json_schema.ok_or_else(|| {
                GatewayError::invalid_param(
                    "response_format.json_schema",
                    "`response_format.json_schema` is required for type `json_schema`",
                )
            })?;
            Ok(Some(ResponseFormat::JsonSchema {
                name: s.name,
                schema: s.schema.filter(|v| v.get() != "null"),
                strict: s.strict,
            }))
        }
        other => Err(GatewayError::invalid_param(
            "response_format.type",
            format!("response_format type `{other}` is not supported"),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Response
// ---------------------------------------------------------------------------------------------

/// `chat.completion`.
#[derive(Debug, Serialize)]
pub struct ChatCompletion<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<Choice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<CompletionUsage>,
}

#[derive(Debug, Serialize)]
pub struct Choice<'a> {
    pub index: u32,
    pub message: AssistantMessage<'a>,
    /// Always `null`: log probabilities are not translated.
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage<'a> {
    pub role: &'static str,
    #[serde(serialize_with = "crate::codec::json_text::serialize_opt")]
    pub content: Option<Cow<'a, str>>,
    /// Not OpenAI's own API, but what OpenAI-compatible servers (vLLM, DeepSeek) use.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::codec::json_text::serialize_opt"
    )]
    pub reasoning_content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut<'a>>,
    pub refusal: Option<Cow<'a, str>>,
}

#[derive(Debug, Serialize)]
pub struct ToolCallOut<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionOut<'a>,
}

#[derive(Debug, Serialize)]
pub struct FunctionOut<'a> {
    pub name: &'a str,
    pub arguments: Cow<'a, str>,
}

/// `chat.completion.chunk`.
#[derive(Debug, Serialize)]
pub struct ChatCompletionChunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: &'a [ChunkChoice<'a>],
    /// Absent unless the client asked for `include_usage`; then `null` on every chunk but the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[allow(clippy::option_option)]
    pub usage: Option<Option<CompletionUsage>>,
}

#[derive(Debug, Serialize)]
pub struct ChunkChoice<'a> {
    pub index: u32,
    pub delta: Delta<'a>,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub tool_calls: &'a [DeltaToolCall<'a>],
}

#[derive(Debug, Serialize)]
pub struct DeltaToolCall<'a> {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: DeltaFunction<'a>,
}

#[derive(Debug, Serialize)]
pub struct DeltaFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<&'a str>,
}

/// OpenAI `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CompletionUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub prompt_tokens_details: PromptTokensDetails,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CompletionTokensDetails {
    pub reasoning_tokens: u64,
}

impl From<Usage> for CompletionUsage {
    fn from(u: Usage) -> Self {
        CompletionUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens.saturating_add(u.completion_tokens),
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: u.cached_tokens,
                cache_write_tokens: u.cache_creation_tokens,
            },
            completion_tokens_details: (u.reasoning_tokens > 0).then_some(
                CompletionTokensDetails {
                    reasoning_tokens: u.reasoning_tokens,
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_api::openai::parse_chat_envelope;

    fn req(body: &str) -> Result<ChatRequest<'_>, GatewayError> {
        let env = parse_chat_envelope(body.as_bytes()).unwrap();
        // The request borrows from the body, not from the envelope.
        ChatRequest::from_envelope(&env)
    }

    /// Only serde_json reading JSON text lends strings known to need no escaping; a string
    /// handed over by anything else (a `Value`, serde's buffer for untagged enums) is scanned.
    #[test]
    fn only_json_text_lends_clean_strings() {
        let json = br#""a plain string""#;
        assert!(serde_json::from_slice::<Str>(json).unwrap().is_lent());
        assert!(serde_json::from_str::<Str>(r#""a plain string""#)
            .unwrap()
            .is_lent());
        assert!(!serde_json::from_str::<Str>(r#""an \"escaped\" one""#)
            .unwrap()
            .is_lent());
        let v = serde_json::Value::String("a \"quote\" in a Value".into());
        let from_value = Str::deserialize(&v).unwrap();
        assert!(!from_value.is_lent());
        assert_eq!(
            serde_json::to_string(&from_value).unwrap(),
            serde_json::to_string(&v).unwrap()
        );
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either<'a> {
            #[serde(borrow)]
            S(Str<'a>),
        }
        let Either::S(s) = serde_json::from_str::<Either>(r#""via Content""#).unwrap();
        assert!(!s.is_lent());
        // A lent string keeps what is known about it in its parts, and only in its parts.
        let lent = serde_json::from_str::<Str>(r#""data:image/png;base64,AAAA""#).unwrap();
        let t = lent.text();
        let (_, data) = t.as_str().split_once(',').unwrap();
        assert_eq!(
            t.part(data),
            crate::codec::json_text::Text::lent_by_json(data)
        );
        assert_eq!(
            t.part("elsewhere"),
            crate::codec::json_text::Text::new("elsewhere")
        );
    }

    #[test]
    fn parses_messages_borrowing_unescaped_strings() {
        let body = r#"{"model":"m","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"a \"quoted\" word"},{"type":"image_url","image_url":{"url":"https://x/y.png","detail":"low"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"ok"}],
            "stop":"END","max_tokens":10,"max_completion_tokens":20,"temperature":0.5,"tool_choice":{"type":"function","function":{"name":"f"}}}"#;
        let r = req(body).unwrap();
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.messages[0].role, Role::System);
        match &r.messages[0].content {
            // Lent by serde_json from the body: written into another body without a scan.
            Some(MessageContent::Text(t)) => assert!(t.is_lent() && t.as_str() == "be brief"),
            other => panic!("{other:?}"),
        }
        match &r.messages[1].content {
            Some(MessageContent::Parts(p)) => {
                assert_eq!(p[0].text.as_deref(), Some("a \"quoted\" word"));
                // Unescaped into a new string: scanned when written.
                assert!(!p[0].text.as_ref().unwrap().is_lent());
                assert_eq!(
                    p[1].image_url.as_ref().unwrap().url.as_str(),
                    "https://x/y.png"
                );
                assert!(p[1].image_url.as_ref().unwrap().url.is_lent());
            }
            other => panic!("{other:?}"),
        }
        let tc = r.messages[2].tool_calls.as_ref().unwrap();
        assert_eq!(tc[0].function.arguments.as_deref(), Some("{\"a\":1}"));
        assert_eq!(r.stop, vec![Str::from("END")]);
        assert_eq!(r.max_tokens, Some(20));
        assert_eq!(r.tool_choice, Some(ToolChoice::Function(Str::from("f"))));
    }

    #[test]
    fn errors_name_the_param() {
        for (body, param) in [
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"user","content":5}]}"#,
                "messages[1].content",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"},{"type":"image_url","image_url":7}]}]}"#,
                "messages[0].content[1]",
            ),
            (
                r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"a","function":{}}]}]}"#,
                "messages[0].tool_calls[0]",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","name":3}]}"#,
                "messages[0]",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"temperature":3}"#,
                "temperature",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"temperature":"hot"}"#,
                "temperature",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"top_p":1.5}"#,
                "top_p",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"max_tokens":-1}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"max_completion_tokens":0}"#,
                "max_completion_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"stop":[1]}"#,
                "stop",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"tools":[{"type":"function"}, 4]}"#,
                "tools[1]",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"tool_choice":"sometimes"}"#,
                "tool_choice",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"tool_choice":{"type":"function"}}"#,
                "tool_choice.function",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user"}],"response_format":{"type":"yaml"}}"#,
                "response_format.type",
            ),
        ] {
            let e = req(body).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    #[test]
    fn nulls_are_absent() {
        let r = req(r#"{"model":"m","messages":[{"role":"user","content":null}],"stop":null,"temperature":null,"tools":null,"tool_choice":null,"functions":null,"response_format":null}"#).unwrap();
        assert!(r.stop.is_empty() && r.temperature.is_none() && r.tools.is_empty());
        assert!(r.tool_choice.is_none() && r.functions.is_none() && r.response_format.is_none());
        assert!(r.messages[0].content.is_none());
    }

    #[test]
    fn chunk_usage_is_absent_null_or_object() {
        let choices = [ChunkChoice {
            index: 0,
            delta: Delta {
                content: Some("hi"),
                ..Default::default()
            },
            logprobs: None,
            finish_reason: None,
        }];
        let mut c = ChatCompletionChunk {
            id: "x",
            object: "chat.completion.chunk",
            created: 1,
            model: "m",
            choices: &choices,
            usage: None,
        };
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(
            s,
            r#"{"id":"x","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"logprobs":null,"finish_reason":null}]}"#
        );
        c.usage = Some(None);
        assert!(serde_json::to_string(&c)
            .unwrap()
            .ends_with(r#","usage":null}"#));
    }
}
