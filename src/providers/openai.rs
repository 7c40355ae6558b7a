//! OpenAI client → OpenAI-protocol provider: pass-through.
//!
//! The body goes upstream untouched but for the model name (spliced in place) and, when the gateway
//! needs stream usage the client did not ask for, `stream_options.include_usage`; the usage chunk
//! that this adds is then removed from the stream again.

use serde::Deserialize;

use super::{provider_error, ChatCall, ChatTranslator, ProviderRequest, Usage};
use crate::error::GatewayError;
use crate::openai::json_string;
use crate::sse::SseParser;

#[derive(Default)]
pub struct OpenAiChat {
    provider: String,
    /// We added `include_usage`: drop the usage-only chunk before it reaches the client.
    strip_usage_chunk: bool,
    stream: bool,
    usage: Option<Usage>,
    /// Only used when the stream must be inspected event by event (usage wanted).
    sse: Option<SseParser>,
}

impl ChatTranslator for OpenAiChat {
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        let env = call.envelope;
        self.provider = call.provider.name.clone();
        self.stream = env.stream;

        // Splices, in body order: (start, end, replacement).
        let mut splices: Vec<(usize, usize, String)> = Vec::new();
        if env.model != call.upstream_model {
            splices.push((
                env.model_span.start,
                env.model_span.end,
                json_string(call.upstream_model),
            ));
        }
        if env.stream && call.want_stream_usage {
            self.sse = Some(SseParser::new());
            if !env.include_usage {
                self.strip_usage_chunk = true;
                match env.stream_options_span {
                    Some(span) => {
                        // Keep the client's other stream options.
                        let raw =
                            std::str::from_utf8(&call.raw[span.start..span.end]).map_err(|_| {
                                GatewayError::invalid_param("stream_options", "not valid UTF-8")
                            })?;
                        let mut obj: serde_json::Map<String, serde_json::Value> =
                            serde_json::from_str(raw).map_err(|e| {
                                GatewayError::invalid_param(
                                    "stream_options",
                                    format!("`stream_options` must be an object: {e}"),
                                )
                            })?;
                        obj.insert("include_usage".into(), serde_json::Value::Bool(true));
                        let new = serde_json::to_string(&obj).map_err(|e| {
                            GatewayError::new(500, "api_error", format!("serialising: {e}"))
                        })?;
                        splices.push((span.start, span.end, new));
                    }
                    None => splices.push((
                        env.close_brace,
                        env.close_brace,
                        ",\"stream_options\":{\"include_usage\":true}".to_string(),
                    )),
                }
            }
        }
        splices.sort_by_key(|s| s.0);
        let body = if splices.is_empty() {
            None
        } else {
            let added: usize = splices.iter().map(|s| s.2.len()).sum();
            let mut out = Vec::with_capacity(call.raw.len() + added);
            let mut pos = 0;
            for (start, end, text) in &splices {
                out.extend_from_slice(&call.raw[pos..*start]);
                out.extend_from_slice(text.as_bytes());
                pos = *end;
            }
            out.extend_from_slice(&call.raw[pos..]);
            Some(out)
        };

        let p = call.provider;
        let mut headers = Vec::with_capacity(2 + p.headers.len());
        if let Some(key) = &p.api_key {
            headers.push(("authorization".to_string(), format!("Bearer {key}")));
        }
        headers.extend(p.headers.iter().cloned());
        Ok(ProviderRequest {
            path: format!("{}/chat/completions", p.base_path),
            headers,
            remove_headers: Vec::new(),
            body,
        })
    }

    fn response(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        #[derive(Deserialize)]
        struct WithUsage {
            usage: Option<OpenAiUsage>,
        }
        if let Ok(w) = serde_json::from_slice::<WithUsage>(body) {
            self.usage = w.usage.map(OpenAiUsage::into_usage);
        }
        Ok(None)
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) -> bool {
        let Some(parser) = self.sse.as_mut() else {
            return false;
        };
        let strip = self.strip_usage_chunk;
        let mut usage = None;
        let mut rewritten = Vec::new();
        let mut on_event = |ev: crate::sse::SseEvent| {
            // Cheap test first: only events that carry usage are parsed.
            let mut keep = true;
            if ev.data.contains("\"usage\"") {
                if let Ok(c) = serde_json::from_str::<UsageChunk>(&ev.data) {
                    if let Some(u) = c.usage {
                        usage = Some(u.into_usage());
                        if strip && c.choices.is_empty() {
                            keep = false;
                        }
                    }
                }
            }
            if keep && strip {
                if let Some(name) = &ev.event {
                    rewritten.extend_from_slice(b"event: ");
                    rewritten.extend_from_slice(name.as_bytes());
                    rewritten.push(b'\n');
                }
                crate::sse::write_data(&mut rewritten, ev.data.as_bytes());
            }
        };
        parser.feed(chunk, &mut on_event);
        if end_of_stream {
            parser.finish(&mut on_event);
        }
        if usage.is_some() {
            self.usage = usage;
        }
        if strip {
            // The stream is re-framed event by event (only whole events go out).
            out.extend_from_slice(&rewritten);
            true
        } else {
            false
        }
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        #[derive(Deserialize)]
        struct Envelope {
            error: Option<ErrBody>,
        }
        #[derive(Deserialize)]
        struct ErrBody {
            message: Option<String>,
            code: Option<serde_json::Value>,
        }
        let parsed = serde_json::from_slice::<Envelope>(body)
            .ok()
            .and_then(|e| e.error);
        let (message, code) = match parsed {
            Some(e) => (
                e.message.unwrap_or_default(),
                e.code.and_then(|c| match c {
                    serde_json::Value::String(s) => Some(s),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }),
            ),
            None => (
                String::from_utf8_lossy(truncate(body, 512)).into_owned(),
                None,
            ),
        };
        provider_error(&self.provider, status, &message, code.as_deref())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

fn truncate(b: &[u8], n: usize) -> &[u8] {
    &b[..b.len().min(n)]
}

#[derive(Deserialize)]
struct UsageChunk {
    #[serde(default)]
    choices: Vec<serde::de::IgnoredAny>,
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
pub(crate) struct OpenAiUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    prompt_tokens_details: Option<PromptDetails>,
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
    cache_write_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    reasoning_tokens: Option<u64>,
}

impl OpenAiUsage {
    pub(crate) fn into_usage(self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_creation_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cache_write_tokens)
                .unwrap_or(0),
            reasoning_tokens: self
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ProcessEnv};
    use crate::openai::parse_chat_envelope;

    fn config() -> Config {
        Config::parse(
            br#"{"providers":{"oai":{"type":"openai","cluster":"c","api_key":"sk-test","headers":{"openai-organization":"org"}}},
                 "models":[{"name":"fast","deployments":[{"provider":"oai","model":"gpt-4o-mini"}]}]}"#,
            &ProcessEnv,
        )
        .unwrap()
    }

    fn translate(body: &str, want_usage: bool) -> (OpenAiChat, ProviderRequest) {
        let cfg = config();
        let env = parse_chat_envelope(body.as_bytes()).unwrap();
        let mut t = OpenAiChat::default();
        let req = t
            .request(&ChatCall {
                raw: body.as_bytes(),
                envelope: &env,
                provider: &cfg.providers[0],
                upstream_model: "gpt-4o-mini",
                now_unix: 0,
                want_stream_usage: want_usage,
            })
            .unwrap();
        (t, req)
    }

    #[test]
    fn same_model_leaves_body_untouched() {
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
        let (_, req) = translate(body, true);
        assert_eq!(req.body, None);
        assert_eq!(req.path, "/v1/chat/completions");
        assert!(req
            .headers
            .contains(&("authorization".into(), "Bearer sk-test".into())));
        assert!(req
            .headers
            .contains(&("openai-organization".into(), "org".into())));
    }

    #[test]
    fn model_is_spliced_and_nothing_else_changes() {
        let body = r#"{ "model" : "fast", "messages":[{"role":"user","content":"fast \"x\""}], "temperature": 0.70 }"#;
        let (_, req) = translate(body, true);
        let out = String::from_utf8(req.body.unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{ "model" : "gpt-4o-mini", "messages":[{"role":"user","content":"fast \"x\""}], "temperature": 0.70 }"#
        );
    }

    #[test]
    fn include_usage_injected_when_missing_and_merged_when_present() {
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}],"stream":true}"#;
        let (t, req) = translate(body, true);
        let v: serde_json::Value = serde_json::from_slice(&req.body.unwrap()).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert!(t.strip_usage_chunk);

        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_obfuscation":false}}"#;
        let (_, req) = translate(body, true);
        let v: serde_json::Value = serde_json::from_slice(&req.body.unwrap()).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["include_obfuscation"], false);

        // Client asked itself: nothing to inject or strip.
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_usage":true}}"#;
        let (t, req) = translate(body, true);
        assert_eq!(req.body, None);
        assert!(!t.strip_usage_chunk);

        // Gateway does not want usage: untouched.
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}],"stream":true}"#;
        let (_, req) = translate(body, false);
        assert_eq!(req.body, None);
    }

    const STREAM: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n\
data: [DONE]\n\n";

    #[test]
    fn injected_usage_chunk_is_removed_at_every_split() {
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}],"stream":true}"#;
        let s = STREAM.as_bytes();
        for cut in 0..=s.len() {
            let (mut t, _) = translate(body, true);
            let mut out = Vec::new();
            assert!(t.stream_chunk(&s[..cut], false, &mut out));
            assert!(t.stream_chunk(&s[cut..], true, &mut out));
            let out = String::from_utf8(out).unwrap();
            assert!(!out.contains("\"usage\":{"), "cut {cut}");
            assert_eq!(out.matches("data: ").count(), 3, "cut {cut}");
            assert!(out.ends_with("data: [DONE]\n\n"));
            let u = t.usage().unwrap();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
                (9, 2, 4)
            );
        }
    }

    #[test]
    fn client_requested_usage_passes_through_and_is_counted() {
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}],"stream":true,"stream_options":{"include_usage":true}}"#;
        let (mut t, _) = translate(body, true);
        let mut out = Vec::new();
        assert!(!t.stream_chunk(STREAM.as_bytes(), true, &mut out));
        assert!(out.is_empty());
        assert_eq!(t.usage().unwrap().total_tokens(), 11);
    }

    #[test]
    fn error_keeps_provider_message_and_status() {
        let (t, _) = translate(
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user"}]}"#,
            true,
        );
        let e = t.error(
            429,
            br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(e.status, 429);
        assert_eq!(e.kind, "rate_limit_error");
        assert!(e.message.contains("oai") && e.message.contains("Rate limit reached"));
        assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
        let e = t.error(500, b"<html>oops</html>");
        assert_eq!(e.status, 500);
        assert!(e.message.contains("<html>oops</html>"));
    }
}
