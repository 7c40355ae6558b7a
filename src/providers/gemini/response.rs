//! What Gemini answers (responses, stream events, errors) as borrowed `Deserialize` shapes, and
//! the mappings shared by whole answers and streams: finish reason, RPC status, token counts.

use super::*;

// ---------------------------------------------------------------------------------------------
// Gemini response shapes (deserialise only, borrowing from the provider's body)
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GResponse<'a> {
    #[serde(borrow)]
    pub(super) candidates: Option<Vec<Candidate<'a>>>,
    #[serde(borrow)]
    pub(super) prompt_feedback: Option<PromptFeedback<'a>>,
    pub(super) usage_metadata: Option<UsageMetadata>,
    #[serde(borrow)]
    pub(super) model_version: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) response_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) error: Option<GError<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Candidate<'a> {
    #[serde(borrow)]
    pub(super) content: Option<GContent<'a>>,
    #[serde(borrow)]
    pub(super) finish_reason: Option<Str<'a>>,
    pub(super) index: Option<u32>,
}

#[derive(Deserialize)]
pub(super) struct GContent<'a> {
    #[serde(borrow)]
    pub(super) parts: Option<Vec<GPart<'a>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GPart<'a> {
    #[serde(borrow)]
    pub(super) text: Option<Str<'a>>,
    pub(super) thought: Option<bool>,
    #[serde(borrow)]
    pub(super) function_call: Option<GFnCall<'a>>,
    #[serde(borrow)]
    pub(super) thought_signature: Option<Str<'a>>,
}

#[derive(Deserialize)]
pub(super) struct GFnCall<'a> {
    #[serde(borrow)]
    pub(super) name: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) args: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PromptFeedback<'a> {
    #[serde(borrow)]
    pub(super) block_reason: Option<Str<'a>>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub(super) struct UsageMetadata {
    pub(super) prompt_token_count: Option<u64>,
    pub(super) candidates_token_count: Option<u64>,
    pub(super) thoughts_token_count: Option<u64>,
    pub(super) tool_use_prompt_token_count: Option<u64>,
    pub(super) cached_content_token_count: Option<u64>,
}

#[derive(Deserialize)]
pub(super) struct GError<'a> {
    pub(super) code: Option<i64>,
    #[serde(borrow)]
    pub(super) message: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) status: Option<Str<'a>>,
    #[serde(borrow)]
    pub(super) details: Option<Vec<&'a RawValue>>,
}

/// Token counts seen so far (stream chunks repeat or update them).
#[derive(Default, Clone, Copy)]
pub(super) struct Tokens {
    pub(super) prompt: u64,
    pub(super) candidates: u64,
    pub(super) thoughts: u64,
    pub(super) tool_use_prompt: u64,
    pub(super) cached: u64,
}

impl Tokens {
    pub(super) fn update(&mut self, u: &UsageMetadata) {
        if let Some(v) = u.prompt_token_count {
            self.prompt = v;
        }
        if let Some(v) = u.candidates_token_count {
            self.candidates = v;
        }
        if let Some(v) = u.thoughts_token_count {
            self.thoughts = v;
        }
        if let Some(v) = u.tool_use_prompt_token_count {
            self.tool_use_prompt = v;
        }
        if let Some(v) = u.cached_content_token_count {
            self.cached = v;
        }
    }

    pub(super) fn to_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt.saturating_add(self.tool_use_prompt),
            completion_tokens: self.candidates.saturating_add(self.thoughts),
            cached_tokens: self.cached,
            cache_creation_tokens: 0,
            reasoning_tokens: self.thoughts,
        }
    }
}

/// OpenAI finish reason for a Gemini one; `has_tools`: the candidate called functions.
pub(super) fn finish_reason(reason: Option<&str>, has_tools: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY"
            | "RECITATION"
            | "BLOCKLIST"
            | "PROHIBITED_CONTENT"
            | "SPII"
            | "IMAGE_SAFETY"
            | "IMAGE_PROHIBITED_CONTENT"
            | "IMAGE_RECITATION",
        ) => "content_filter",
        _ if has_tools => "tool_calls",
        _ => "stop",
    }
}

/// HTTP status for a google.rpc status name (for errors that arrive inside a 200 stream).
pub(super) fn status_for_rpc(status: &str) -> u16 {
    match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "ALREADY_EXISTS" | "ABORTED" => 409,
        "RESOURCE_EXHAUSTED" => 429,
        "CANCELLED" => 499,
        "UNIMPLEMENTED" => 501,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => 500,
    }
}

/// `Retry-After` seconds from a `google.rpc.RetryInfo` detail (`"retryDelay": "37s"`).
pub(super) fn retry_after(details: &[&RawValue]) -> Option<String> {
    #[derive(Deserialize)]
    struct Detail<'a> {
        #[serde(rename = "@type", borrow)]
        kind: Option<Str<'a>>,
        #[serde(rename = "retryDelay", borrow)]
        retry_delay: Option<Str<'a>>,
    }
    details.iter().find_map(|raw| {
        let d: Detail<'_> = serde_json::from_str(raw.get()).ok()?;
        if !d.kind.as_deref()?.ends_with("google.rpc.RetryInfo") {
            return None;
        }
        // google.protobuf.Duration in JSON: seconds with up to 9 fraction digits and an `s`.
        // Parsed by hand (no float parsing in the filter); a fraction rounds up.
        let text = d.retry_delay.as_deref()?.strip_suffix('s')?;
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let secs: u64 = whole.parse().ok()?;
        let secs = secs.saturating_add(u64::from(frac.bytes().any(|b| b != b'0')));
        (secs <= 86_400).then(|| secs.to_string())
    })
}

/// A Gemini error body: `{"error":{...}}`, or that inside a one-element array.
pub(super) fn parse_error(body: &[u8]) -> Option<GError<'_>> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        error: Option<GError<'a>>,
    }
    // Checked first: serde would also read a struct from an array, positionally.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let list: Vec<Envelope<'_>> = serde_json::from_slice(body).ok()?;
        return list.into_iter().next()?.error;
    }
    serde_json::from_slice::<Envelope<'_>>(body).ok()?.error
}

pub(super) fn compact_json(json: &str) -> Cow<'_, str> {
    if !json
        .bytes()
        .any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
    {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len());
    let (mut in_str, mut esc) = (false, false);
    for c in json.chars() {
        if in_str {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if matches!(c, ' ' | '\n' | '\r' | '\t') {
            continue;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

pub(super) fn bad_gateway(provider: &str, what: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(502, "api_error", format!("{provider} returned {what}"))
}

pub(super) fn append<'x>(acc: &mut Option<Cow<'x, str>>, piece: &'x str) {
    match acc {
        None => *acc = Some(Cow::Borrowed(piece)),
        Some(s) => s.to_mut().push_str(piece),
    }
}

/// The ids of each candidate's tool calls, `call_<n>` numbered per candidate (with the thought
/// signature, when there is one).
pub(super) fn tool_call_ids(candidates: &[Candidate<'_>]) -> Vec<Vec<String>> {
    candidates
        .iter()
        .map(|c| {
            let parts = c
                .content
                .as_ref()
                .and_then(|c| c.parts.as_deref())
                .unwrap_or_default();
            let mut n = 0u32;
            parts
                .iter()
                .filter(|p| p.function_call.is_some())
                .map(|p| {
                    let id = tool_call_id(n, p.thought_signature.as_deref());
                    n = n.saturating_add(1);
                    id
                })
                .collect()
        })
        .collect()
}

/// Candidate `k` as an OpenAI choice; `ids` are its tool calls' ids.
pub(super) fn choice<'x>(k: usize, c: &'x Candidate<'_>, ids: &'x [String]) -> Choice<'x> {
    let mut content: Option<Cow<'_, str>> = None;
    let mut reasoning: Option<Cow<'_, str>> = None;
    let mut tool_calls = Vec::new();
    let mut ids = ids.iter();
    for p in c
        .content
        .as_ref()
        .and_then(|c| c.parts.as_deref())
        .unwrap_or_default()
    {
        if let Some(fc) = &p.function_call {
            let Some(id) = ids.next() else { break };
            tool_calls.push(ToolCallOut {
                id,
                kind: "function",
                function: FunctionOut {
                    name: fc.name.as_deref().unwrap_or(""),
                    arguments: fc
                        .args
                        .map_or(Cow::Borrowed("{}"), |a| compact_json(a.get())),
                },
            });
        } else if let Some(t) = &p.text {
            if p.thought == Some(true) {
                append(&mut reasoning, t);
            } else {
                append(&mut content, t);
            }
        }
    }
    let finish = finish_reason(c.finish_reason.as_deref(), !tool_calls.is_empty());
    Choice {
        index: c
            .index
            .unwrap_or_else(|| u32::try_from(k).unwrap_or(u32::MAX)),
        message: AssistantMessage {
            role: "assistant",
            content,
            reasoning_content: reasoning,
            tool_calls,
            refusal: None,
        },
        logprobs: None,
        finish_reason: Some(finish),
    }
}
