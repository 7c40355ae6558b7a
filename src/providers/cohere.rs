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

use serde_json::{json, Map, Value};

use super::openai_chunks::{self, ChunkStream, ChunkWriter};
use super::{provider_error, ChatCall, ChatTranslator, ProviderRequest, Usage};
use crate::error::GatewayError;
use crate::sse::{write_data, SseEvent, SseParser};

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

    fn usage_json(&self) -> Value {
        let u = self.usage.unwrap_or_default();
        json!({
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens(),
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        })
    }

    /// A chunk as Cohere's stream has always written it: built as a `Value`, so its keys are in
    /// alphabetical order (the other translators' chunks come from [`ChunkWriter::chunk`]).
    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut Vec<u8>) {
        let w = &self.w;
        let mut c = json!({
            "id": w.id, "object": "chat.completion.chunk", "created": w.created,
            "model": w.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if w.include_usage {
            c["usage"] = Value::Null;
        }
        write_data(out, c.to_string().as_bytes());
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
                self.chunk(json!({"role": "assistant", "content": ""}), None, out);
            }
            "content-start" | "content-delta" => {
                let content = msg.and_then(|m| m.get("content"));
                if let Some(t) = content.and_then(|c| c.get("text")).and_then(Value::as_str) {
                    if !t.is_empty() {
                        self.chunk(json!({"content": t}), None, out);
                    }
                }
                if let Some(t) = content
                    .and_then(|c| c.get("thinking"))
                    .and_then(Value::as_str)
                {
                    if !t.is_empty() {
                        self.chunk(json!({"reasoning_content": t}), None, out);
                    }
                }
            }
            "tool-plan-delta" => {
                if let Some(t) = msg.and_then(|m| m.get("tool_plan")).and_then(Value::as_str) {
                    self.chunk(json!({"reasoning_content": t}), None, out);
                }
            }
            "tool-call-start" | "tool-call-delta" => {
                let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let k = match self.tool_index.iter().position(|&i| i == idx) {
                    Some(k) => k,
                    None => {
                        self.tool_index.push(idx);
                        self.tool_index.len() - 1
                    }
                };
                let call = msg
                    .and_then(|m| m.get("tool_calls"))
                    .unwrap_or(&Value::Null);
                let args = call
                    .pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let tc = if kind == "tool-call-start" {
                    json!({"index": k, "id": call.get("id").cloned().unwrap_or(Value::Null),
                           "type": "function",
                           "function": {"name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
                                        "arguments": args}})
                } else if args.is_empty() {
                    return;
                } else {
                    json!({"index": k, "function": {"arguments": args}})
                };
                self.chunk(json!({"tool_calls": [tc]}), None, out);
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
                        self.chunk(json!({}), Some(f), out);
                        let w = &self.w;
                        if w.include_usage {
                            let c = json!({"id": w.id, "object": "chat.completion.chunk",
                                "created": w.created, "model": w.model, "choices": [],
                                "usage": self.usage_json()});
                            write_data(out, c.to_string().as_bytes());
                        }
                        self.w.write_done(out);
                    }
                    Err(reason) => self.fail(&format!("generation ended with {reason}"), out),
                }
            }
            _ => {} // content-end, tool-call-end, citations, debug
        }
    }
}

fn finish_reason(r: Option<&str>) -> Result<&'static str, String> {
    match r {
        Some("MAX_TOKENS") => Ok("length"),
        Some("TOOL_CALL") => Ok("tool_calls"),
        Some("ERROR") | Some("TIMEOUT") => Err(r.unwrap_or_default().to_string()),
        _ => Ok("stop"),
    }
}

impl ChunkStream for CohereChat {
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
        let mut body: Map<String, Value> = serde_json::from_slice(call.raw).map_err(|e| {
            GatewayError::bad_request(format!("request body is not a JSON object: {e}"))
        })?;
        body.insert(
            "model".into(),
            Value::String(call.upstream_model.to_string()),
        );

        if body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
            return Err(bad("n", "Cohere returns one choice; `n` must be 1"));
        }
        for field in ["logit_bias", "audio"] {
            if body.get(field).is_some_and(|v| !v.is_null()) {
                return Err(bad(field, format!("`{field}` is not supported by Cohere")));
            }
        }
        for field in [
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
        ] {
            body.remove(field);
        }
        let max = body
            .remove("max_completion_tokens")
            .filter(|v| !v.is_null())
            .or_else(|| body.remove("max_tokens"));
        if let Some(m) = max.filter(|v| !v.is_null()) {
            body.insert("max_tokens".into(), m);
        }
        if let Some(top_p) = body.remove("top_p").filter(|v| !v.is_null()) {
            body.insert("p".into(), top_p);
        }
        match body.remove("stop") {
            Some(Value::String(s)) => {
                body.insert("stop_sequences".into(), json!([s]));
            }
            Some(v @ Value::Array(_)) => {
                body.insert("stop_sequences".into(), v);
            }
            _ => {}
        }
        if let Some(Value::Array(messages)) = body.get_mut("messages") {
            for m in messages.iter_mut() {
                if let Some(o) = m.as_object_mut() {
                    if o.get("role").and_then(Value::as_str) == Some("developer") {
                        o.insert("role".into(), Value::String("system".into()));
                    }
                    if o.get("content").is_some_and(Value::is_null) {
                        o.remove("content");
                    }
                    o.remove("name");
                    o.remove("refusal");
                }
            }
        }
        match body.remove("tool_choice") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => match s.as_str() {
                "auto" => {}
                "required" => {
                    body.insert("tool_choice".into(), json!("REQUIRED"));
                }
                "none" => {
                    body.insert("tool_choice".into(), json!("NONE"));
                }
                _ => {
                    return Err(bad(
                        "tool_choice",
                        "must be auto, none, required or a function",
                    ))
                }
            },
            Some(named) => {
                let name = named
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("tool_choice", "a named tool choice needs `function.name`"))?
                    .to_string();
                if let Some(Value::Array(tools)) = body.get_mut("tools") {
                    tools.retain(|t| {
                        t.pointer("/function/name").and_then(Value::as_str) == Some(&name)
                    });
                    if tools.is_empty() {
                        return Err(bad(
                            "tool_choice",
                            format!("no tool named `{name}` in `tools`"),
                        ));
                    }
                }
                body.insert("tool_choice".into(), json!("REQUIRED"));
            }
        }
        match body.remove("response_format") {
            None | Some(Value::Null) => {}
            Some(f) => match f.get("type").and_then(Value::as_str) {
                Some("text") => {}
                Some("json_object") => {
                    body.insert("response_format".into(), json!({"type": "json_object"}));
                }
                Some("json_schema") => {
                    let schema = f
                        .pointer("/json_schema/schema")
                        .cloned()
                        .unwrap_or_else(|| json!({}));
                    body.insert(
                        "response_format".into(),
                        json!({"type": "json_object", "json_schema": schema}),
                    );
                }
                _ => {
                    return Err(bad(
                        "response_format",
                        "must be text, json_object or json_schema",
                    ))
                }
            },
        }
        if let Some(effort) = body.remove("reasoning_effort") {
            let thinking = match effort.as_str() {
                Some("none") => json!({"type": "disabled"}),
                Some("minimal") | Some("low") => json!({"type": "enabled", "token_budget": 1024}),
                Some("medium") => json!({"type": "enabled", "token_budget": 4096}),
                Some(_) => json!({"type": "enabled", "token_budget": 16384}),
                None => return Err(bad("reasoning_effort", "must be a string")),
            };
            body.insert("thinking".into(), thinking);
        }
        let body = serde_json::to_vec(&body)
            .map_err(|e| GatewayError::new(500, "api_error", format!("serialising: {e}")))?;
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
        let mut text = String::new();
        let mut thinking = String::new();
        for c in msg
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match c.get("type").and_then(Value::as_str) {
                Some("text") => text.push_str(c.get("text").and_then(Value::as_str).unwrap_or("")),
                Some("thinking") => {
                    thinking.push_str(c.get("thinking").and_then(Value::as_str).unwrap_or(""))
                }
                _ => {}
            }
        }
        if thinking.is_empty() {
            if let Some(plan) = msg.get("tool_plan").and_then(Value::as_str) {
                thinking.push_str(plan);
            }
        }
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
        let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }, "refusal": null});
        if let Some(calls) = msg
            .get("tool_calls")
            .filter(|c| c.as_array().is_some_and(|a| !a.is_empty()))
        {
            message["tool_calls"] = calls.clone();
        }
        if !thinking.is_empty() {
            message["reasoning_content"] = Value::String(thinking);
        }
        let out = json!({
            "id": v.get("id").cloned().unwrap_or(Value::Null),
            "object": "chat.completion",
            "created": self.w.created,
            "model": self.w.model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": self.usage_json(),
        });
        Ok(Some(out.to_string().into_bytes()))
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
    use crate::config::{Config, ProcessEnv};
    use crate::openai::parse_chat_envelope;

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

    #[test]
    fn stream_translates_at_every_split() {
        let whole = run(&[STREAM.as_bytes()], true);
        let events: Vec<&str> = whole.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.last(), Some(&"data: [DONE]"));
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        let text: String = chunks
            .iter()
            .filter_map(|c| {
                c.pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
            })
            .collect();
        assert_eq!(text, "Hello");
        assert!(
            whole.contains(r#""tool_calls":[{"function":{"arguments":"{\"a\":1}"},"index":0}]"#),
            "{whole}"
        );
        assert!(whole.contains(r#""finish_reason":"tool_calls""#));
        assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 12);
        for cut in 0..=STREAM.len() {
            let (a, b) = STREAM.as_bytes().split_at(cut);
            assert_eq!(run(&[a, b], true), whole, "cut {cut}");
        }
        assert!(!run(&[STREAM.as_bytes()], false).contains("\"usage\""));
    }

    #[test]
    fn dropped_or_failed_stream_ends_with_error_then_done() {
        let cut = STREAM.find("event: message-end").unwrap();
        let out = run(&[&STREAM.as_bytes()[..cut]], false);
        assert!(out.ends_with("data: [DONE]\n\n") && out.contains("message-end"));
        let failed = STREAM.replace(
            "\"finish_reason\":\"TOOL_CALL\"",
            "\"finish_reason\":\"ERROR\",\"error\":\"boom\"",
        );
        let out = run(&[failed.as_bytes()], false);
        assert!(out.contains("boom") && out.ends_with("data: [DONE]\n\n"));
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
}
