//! Google Vertex AI (`type: vertex`, docs/providers.md §5): one provider serves the models of two
//! publishers, chosen per deployment model:
//!
//! - `google` (Gemini): the Gemini translator, at
//!   `{base_path}/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent`
//!   (`:streamGenerateContent?alt=sse` for streams).
//! - `anthropic` (Claude): the Anthropic translator, at `.../publishers/anthropic/models/{m}:rawPredict`
//!   (`:streamRawPredict`), with `model` removed from the body and
//!   `"anthropic_version": "vertex-2023-10-16"` added.
//!
//! The publisher is the provider's `publisher` when set, else `anthropic` for model names that
//! start with `claude`, else `google`. Embeddings go to `.../publishers/google/models/{m}:predict`
//! (see [`super::embeddings`]).
//!
//! Auth is `Authorization: Bearer <OAuth2 access token>`: a static token from the config, or one
//! the filter obtains with a service-account key ([`crate::gcp::auth`]); in that case the request
//! leaves here without the header and the Wasm glue adds it.

use serde::Deserialize;
use std::borrow::Cow;

use super::anthropic::AnthropicChat;
use super::gemini::GeminiChat;
use super::{ChatCall, ChatTranslator, ProviderRequest, Usage};
use crate::config::Provider;
use crate::error::GatewayError;

pub mod config;
use config::segment_ok;
pub use config::{
    parse_config, Publisher, VertexAuth, VertexConfig, ANTHROPIC_VERTEX_VERSION, CONFIG_KEYS,
    DEFAULT_TOKEN_TIMEOUT_MS,
};

fn config_of(p: &Provider) -> Result<&VertexConfig, GatewayError> {
    p.vertex.as_ref().ok_or_else(|| {
        GatewayError::new(
            500,
            "api_error",
            format!("provider `{}` has no Vertex AI settings", p.name),
        )
    })
}

/// `{base_path}/projects/{p}/locations/{l}/publishers/{publisher}/models/{model}:{method}`.
pub fn model_path(
    p: &Provider,
    publisher: &str,
    model: &str,
    method: &str,
) -> Result<String, GatewayError> {
    let v = config_of(p)?;
    let model = model.strip_prefix("models/").unwrap_or(model);
    if !segment_ok(model) {
        return Err(GatewayError::bad_request(format!(
            "model `{model}` is not a valid Vertex AI model id"
        ))
        .with_param("model"));
    }
    Ok(format!(
        "{}/projects/{}/locations/{}/publishers/{publisher}/models/{model}:{method}",
        p.base_path, v.project, v.location
    ))
}

/// The auth header the core can set: the static token (the service-account flow's token is
/// set by the glue).
pub fn auth_headers(p: &Provider) -> Vec<(String, String)> {
    match p.vertex.as_ref().map(|v| &v.auth) {
        Some(VertexAuth::Token(t)) => vec![("authorization".to_string(), format!("Bearer {t}"))],
        _ => Vec::new(),
    }
}

/// Chat completions to Vertex AI: the Gemini or Anthropic translator, re-addressed.
#[derive(Default)]
pub struct VertexChat {
    inner: Option<Box<dyn ChatTranslator>>,
    anthropic: bool,
    provider: String,
}

impl ChatTranslator for VertexChat {
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        let p = call.provider;
        let v = config_of(p)?;
        self.provider = p.name.clone();
        let stream = call.envelope.stream;
        let publisher = v.publisher_for(call.upstream_model);
        self.anthropic = publisher == Publisher::Anthropic;
        let (inner, mut req): (Box<dyn ChatTranslator>, ProviderRequest) = match publisher {
            Publisher::Google => {
                let mut t = GeminiChat::default();
                let mut req = t.request(call)?;
                let method = if stream {
                    "streamGenerateContent"
                } else {
                    "generateContent"
                };
                req.path = model_path(p, "google", call.upstream_model, method)?;
                if stream {
                    req.path.push_str("?alt=sse");
                }
                (Box::new(t), req)
            }
            Publisher::Anthropic => {
                let mut t = AnthropicChat::default();
                let mut req = t.request(call)?;
                let method = if stream {
                    "streamRawPredict"
                } else {
                    "rawPredict"
                };
                req.path = model_path(p, "anthropic", call.upstream_model, method)?;
                req.body = Some(vertex_anthropic_body(req.body.as_deref().unwrap_or(b"{}"))?);
                req.headers
                    .retain(|(k, _)| k != "anthropic-version" && k != "x-api-key");
                (Box::new(t), req)
            }
        };
        with_vertex_auth(p, &mut req);
        self.inner = Some(inner);
        Ok(req)
    }

    fn response(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        match self.inner.as_mut() {
            Some(t) => t.response(body),
            None => Ok(None),
        }
    }

    fn stream_chunk(&mut self, chunk: &[u8], end_of_stream: bool, out: &mut Vec<u8>) -> bool {
        match self.inner.as_mut() {
            Some(t) => t.stream_chunk(chunk, end_of_stream, out),
            None => false,
        }
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        // Claude on Vertex answers Anthropic errors from the model, Google errors from the
        // Vertex front door (auth, quota, unknown model): both are read.
        if self.anthropic && is_anthropic_error(body) {
            if let Some(t) = &self.inner {
                return t.error(status, body);
            }
        }
        GeminiChat::for_provider(&self.provider).error(status, body)
    }

    fn usage(&self) -> Option<Usage> {
        self.inner.as_ref().and_then(|t| t.usage())
    }
}

/// Vertex auth on a request built for another key scheme: the client's and any translator's
/// API-key headers go, the static token comes in first (or, with a service-account key, no
/// `authorization` leaves here: the glue adds the fetched token).
pub(crate) fn with_vertex_auth(p: &Provider, req: &mut ProviderRequest) {
    req.headers.retain(|(k, _)| k != "x-goog-api-key");
    for h in ["x-api-key", "x-goog-api-key"] {
        if !req.remove_headers.contains(&h) {
            req.remove_headers.push(h);
        }
    }
    let auth = auth_headers(p);
    if !auth.is_empty() {
        req.remove_headers.retain(|h| *h != "authorization");
    } else if !req.remove_headers.contains(&"authorization") {
        req.remove_headers.push("authorization");
    }
    req.headers.splice(0..0, auth);
}

/// A Vertex error body → the client's error: Claude on Vertex answers Anthropic errors from
/// the model, Google errors from the Vertex front door (auth, quota, unknown model).
pub(crate) fn claude_error(provider: &str, status: u16, body: &[u8]) -> Option<GatewayError> {
    is_anthropic_error(body).then(|| {
        crate::client_api::anthropic::translator::AnthropicPassthrough::reader(provider, false)
            .error(status, body)
    })
}

fn is_anthropic_error(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        error: Option<Inner<'a>>,
    }
    #[derive(Deserialize)]
    struct Inner<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<Cow<'a, str>>,
    }
    serde_json::from_slice::<Envelope<'_>>(body)
        .ok()
        .and_then(|e| e.error)
        .is_some_and(|e| e.kind.is_some())
}

/// The Anthropic Messages body as Claude on Vertex takes it: no `model` (it is in the URL),
/// `anthropic_version` added.
fn vertex_anthropic_body(body: &[u8]) -> Result<Vec<u8>, GatewayError> {
    let mut o: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| GatewayError::new(500, "api_error", format!("re-reading the request: {e}")))?;
    o.remove("model");
    o.insert(
        "anthropic_version".to_string(),
        serde_json::Value::String(ANTHROPIC_VERTEX_VERSION.to_string()),
    );
    serde_json::to_vec(&o)
        .map_err(|e| GatewayError::new(500, "api_error", format!("serialising: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_api::openai::parse_chat_envelope;
    use crate::config::{Config, ProcessEnv};
    use serde_json::Value;

    fn provider(extra: &str) -> Provider {
        let cfg = format!(
            r#"{{"providers":{{"vx":{{"type":"vertex","cluster":"c","project":"proj-1","location":"us-central1","access_token":"ya29.tok"{extra}}}}},
                 "models":[{{"name":"m","deployments":[{{"provider":"vx"}}]}}]}}"#
        );
        Config::parse(cfg.as_bytes(), &ProcessEnv)
            .unwrap()
            .providers
            .remove(0)
    }

    fn translate(p: &Provider, model: &str, body: &str) -> (VertexChat, ProviderRequest) {
        let env = parse_chat_envelope(body.as_bytes()).unwrap();
        let mut t = VertexChat::default();
        let req = t
            .request(&ChatCall {
                raw: body.as_bytes(),
                envelope: &env,
                provider: p,
                upstream_model: model,
                now_unix: 1,
                want_stream_usage: true,
            })
            .unwrap();
        (t, req)
    }

    const HI: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    const HI_STREAM: &str =
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

    #[test]
    fn config_defaults_host_and_checks_fields() {
        let p = provider("");
        assert_eq!(
            p.host.as_deref(),
            Some("us-central1-aiplatform.googleapis.com")
        );
        assert_eq!(p.base_path, "/v1");
        let v = p.vertex.as_ref().unwrap();
        assert_eq!(
            v.publisher_for("claude-sonnet-4@20250514"),
            Publisher::Anthropic
        );
        assert_eq!(v.publisher_for("gemini-2.5-flash"), Publisher::Google);
        assert!(!v.needs_token_fetch());
        let mut v2 = v.clone();
        v2.location = "global".into();
        assert_eq!(v2.default_host(), "aiplatform.googleapis.com");
        v2.location = "eu".into();
        assert_eq!(v2.default_host(), "aiplatform.eu.rep.googleapis.com");

        let bad = |cfg: &str| Config::parse(cfg.as_bytes(), &ProcessEnv).unwrap_err().path;
        let base = r#"{"providers":{"vx":{"type":"vertex","cluster":"c"XX}},"models":[{"name":"m","deployments":[{"provider":"vx"}]}]}"#;
        assert_eq!(
            bad(&base.replace("XX", r#","location":"l","access_token":"t""#)),
            "providers.vx.project"
        );
        assert_eq!(
            bad(&base.replace(
                "XX",
                r#","project":"a/b","location":"l","access_token":"t""#
            )),
            "providers.vx.project"
        );
        assert_eq!(
            bad(&base.replace("XX", r#","project":"p","location":"l""#)),
            "providers.vx"
        );
        assert_eq!(
            bad(&base.replace(
                "XX",
                r#","project":"p","location":"l","access_token":"t","publisher":"meta""#
            )),
            "providers.vx.publisher"
        );
        assert_eq!(
            bad(&base.replace("XX", r#","project":"p","location":"l","api_key":"k""#)),
            "providers.vx.api_key"
        );
        assert_eq!(
            bad(&base.replace(
                "XX",
                r#","project":"p","location":"l","access_token":"t","token_cluster":"x""#
            )),
            "providers.vx.token_cluster"
        );
        assert_eq!(
            bad(&base.replace(
                "XX",
                r#","project":"p","location":"l","service_account_key":"{}""#
            )),
            "providers.vx.service_account_key"
        );
        assert_eq!(
            bad(
                r#"{"providers":{"g":{"type":"gemini","cluster":"c","project":"p"}},"models":[{"name":"m","deployments":[{"provider":"g"}]}]}"#
            ),
            "providers.g.project"
        );
    }

    #[test]
    fn gemini_on_vertex_paths_and_auth() {
        let p = provider("");
        let (_, req) = translate(&p, "gemini-2.5-flash", HI);
        assert_eq!(
            req.path,
            "/v1/projects/proj-1/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            req.headers[0],
            ("authorization".into(), "Bearer ya29.tok".into())
        );
        assert!(!req.remove_headers.contains(&"authorization"));
        assert!(req.remove_headers.contains(&"x-api-key"));
        let body: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["contents"][0]["parts"][0]["text"], "hi");
        let (_, req) = translate(&p, "gemini-2.5-flash", HI_STREAM);
        assert!(
            req.path.ends_with(":streamGenerateContent?alt=sse"),
            "{}",
            req.path
        );
    }

    #[test]
    fn claude_on_vertex_body_and_paths() {
        let p = provider("");
        let (mut t, req) = translate(&p, "claude-sonnet-4@20250514", HI);
        assert_eq!(
            req.path,
            "/v1/projects/proj-1/locations/us-central1/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"
        );
        let body: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert!(body.get("model").is_none());
        assert_eq!(body["anthropic_version"], ANTHROPIC_VERTEX_VERSION);
        assert_eq!(body["messages"][0]["content"][0]["text"], "hi");
        assert!(!req.headers.iter().any(|(k, _)| k == "anthropic-version"));
        let out = t
            .response(br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4","content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2}}"#)
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "hello");
        assert_eq!(t.usage().unwrap().total_tokens(), 5);
        let (_, req) = translate(&p, "claude-sonnet-4@20250514", HI_STREAM);
        assert!(req.path.ends_with(":streamRawPredict"));
        let body: Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["stream"], true);

        // An explicit publisher wins over the name.
        let p = provider(r#","publisher":"anthropic""#);
        let (_, req) = translate(&p, "my-tuned-model", HI);
        assert!(req
            .path
            .contains("/publishers/anthropic/models/my-tuned-model:rawPredict"));
    }

    #[test]
    fn errors_of_both_shapes() {
        let p = provider("");
        let (t, _) = translate(&p, "claude-3-5-haiku@20241022", HI);
        let e = t.error(
            429,
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#,
        );
        assert_eq!(e.code.as_deref(), Some("rate_limit_error"));
        let e = t.error(
            403,
            br#"[{"error":{"code":403,"message":"denied","status":"PERMISSION_DENIED"}}]"#,
        );
        assert_eq!(e.status, 403);
        assert!(
            e.message.contains("PERMISSION_DENIED: denied"),
            "{}",
            e.message
        );
        let (t, _) = translate(&p, "gemini-2.5-flash", HI);
        let e = t.error(404, b"not json");
        assert_eq!(e.status, 404);
        assert!(e.message.contains("vx returned 404"), "{}", e.message);
    }

    #[test]
    fn bad_model_id_is_400() {
        let p = provider("");
        let env = parse_chat_envelope(HI.as_bytes()).unwrap();
        let e = VertexChat::default()
            .request(&ChatCall {
                raw: HI.as_bytes(),
                envelope: &env,
                provider: &p,
                upstream_model: "a/../b",
                now_unix: 1,
                want_stream_usage: true,
            })
            .err()
            .unwrap();
        assert_eq!(e.status, 400);
    }
}
