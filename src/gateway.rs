//! The gateway's request/response pipeline, in plain Rust: what to do with each request and
//! response, decided from data the host glue hands in. No proxy-wasm call happens here, so the
//! whole pipeline is unit-tested natively; `wasm` only moves bytes and headers.

use crate::config::{Config, Deployment, Model, UnknownPaths};
use crate::error::GatewayError;
use crate::openai::parse_chat_envelope;
use crate::providers::{ChatCall, ChatTranslator, Usage};

/// Internal request headers start with this; clients may not send them.
pub const INTERNAL_HEADER_PREFIX: &str = "x-llmux-";
/// Response header naming the provider that answered.
pub const PROVIDER_RESPONSE_HEADER: &str = "x-llmux-provider";

/// A response the filter answers by itself.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl LocalResponse {
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        LocalResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        }
    }

    pub fn error(e: &GatewayError) -> Self {
        let mut r = Self::json(e.status, e.body());
        if let Some(ra) = &e.retry_after {
            r.headers.push(("retry-after".into(), ra.clone()));
        }
        r
    }
}

/// What to do once the request headers are in.
#[derive(Debug, PartialEq)]
pub enum HeadersDecision {
    Respond(LocalResponse),
    /// A chat-completions request: buffer the body, then call [`Gateway::on_request_body`].
    ReadBody,
    /// Not ours: let Envoy route it untouched.
    PassThrough,
}

/// The request as it goes upstream.
pub struct Forward {
    /// Headers to set, replacing the client's (`:path`, the cluster header, auth, ...).
    pub set_headers: Vec<(String, String)>,
    pub remove_headers: Vec<&'static str>,
    /// `None` sends the client's body unchanged.
    pub body: Option<Vec<u8>>,
    pub exchange: Exchange,
}

/// The configured gateway: answers the questions the host glue asks per request.
pub struct Gateway {
    pub config: Config,
    /// `GET /v1/models`, built once at configure time.
    models_body: Vec<u8>,
}

impl Gateway {
    pub fn new(config: Config, now_unix: u64) -> Self {
        let models_body = models_list(&config, now_unix);
        Gateway {
            config,
            models_body,
        }
    }

    pub fn on_request_headers(
        &self,
        method: &str,
        path: &str,
        content_length: Option<u64>,
    ) -> HeadersDecision {
        let route = path.split('?').next().unwrap_or(path);
        match Endpoint::of(route) {
            Some(Endpoint::ChatCompletions) => {
                if method != "POST" {
                    return respond(method_not_allowed(method, route, "POST"));
                }
                if let Some(len) = content_length {
                    if len > u64::from(self.config.max_request_bytes) {
                        return respond(self.too_large());
                    }
                }
                HeadersDecision::ReadBody
            }
            Some(Endpoint::Models) => {
                if method != "GET" {
                    return respond(method_not_allowed(method, route, "GET"));
                }
                HeadersDecision::Respond(LocalResponse::json(200, self.models_body.clone()))
            }
            None => match self.config.unknown_paths {
                UnknownPaths::Passthrough => HeadersDecision::PassThrough,
                UnknownPaths::Reject => respond(
                    GatewayError::not_found(format!(
                        "LLMux does not serve {method} {route}; served: POST /v1/chat/completions, GET /v1/models"
                    ))
                    .with_code("unknown_url"),
                ),
            },
        }
    }

    /// The body has grown to `size` bytes and is not complete yet.
    pub fn body_too_large(&self, size: usize) -> Option<LocalResponse> {
        (size as u64 > u64::from(self.config.max_request_bytes))
            .then(|| LocalResponse::error(&self.too_large()))
    }

    fn too_large(&self) -> GatewayError {
        GatewayError::new(
            413,
            "invalid_request_error",
            format!(
                "request body is larger than the gateway limit of {} bytes",
                self.config.max_request_bytes
            ),
        )
        .with_code("request_too_large")
    }

    /// The whole chat-completions body: validate, route, translate.
    /// `pick` is a random number used to choose among weighted deployments.
    pub fn on_request_body(
        &self,
        body: &[u8],
        now_unix: u64,
        pick: u32,
    ) -> Result<Forward, GatewayError> {
        if body.len() as u64 > u64::from(self.config.max_request_bytes) {
            return Err(self.too_large());
        }
        let env = parse_chat_envelope(body)?;
        let model_index = self.config.model_position(&env.model).ok_or_else(|| {
            let known: Vec<&str> = self.config.model_names().collect();
            GatewayError::not_found(format!(
                "model `{}` does not exist on this gateway; available models: {}",
                env.model,
                known.join(", ")
            ))
            .with_param("model")
            .with_code("model_not_found")
        })?;
        let model = &self.config.models[model_index];
        let deployment_index = choose_deployment_index(model, pick);
        let deployment = &model.deployments[deployment_index];
        let provider = self.config.provider(deployment);
        let mut translator = provider.kind.chat_translator();
        let req = translator.request(&ChatCall {
            raw: body,
            envelope: &env,
            provider,
            upstream_model: &deployment.model,
            now_unix,
            want_stream_usage: self.config.stream_usage,
        })?;

        let mut set_headers = Vec::with_capacity(req.headers.len() + 4);
        set_headers.push((":path".to_string(), req.path));
        set_headers.push((self.config.cluster_header.clone(), provider.cluster.clone()));
        if let Some(host) = &provider.host {
            set_headers.push((":authority".to_string(), host.clone()));
        }
        set_headers.push((
            "x-envoy-upstream-rq-timeout-ms".to_string(),
            provider.timeout_ms.to_string(),
        ));
        set_headers.extend(req.headers);
        let mut remove_headers = req.remove_headers;
        if req.body.is_some() {
            remove_headers.push("content-length");
        }
        Ok(Forward {
            set_headers,
            remove_headers,
            body: req.body,
            exchange: Exchange {
                translator,
                model: env.model.into_owned(),
                provider: provider.name.clone(),
                upstream_model: deployment.model.clone(),
                stream: env.stream,
                route: crate::observe::Route::Deployment {
                    model: model_index,
                    deployment: deployment_index,
                },
                mode: ResponseMode::Pending,
                status: 0,
                provider_status: 0,
                max_response_bytes: self.config.max_response_bytes,
            },
        })
    }
}

fn respond(e: GatewayError) -> HeadersDecision {
    HeadersDecision::Respond(LocalResponse::error(&e))
}

fn method_not_allowed(method: &str, route: &str, allowed: &str) -> GatewayError {
    GatewayError::new(
        405,
        "invalid_request_error",
        format!("{method} is not allowed on {route}; use {allowed}"),
    )
    .with_code("method_not_allowed")
}

enum Endpoint {
    ChatCompletions,
    Models,
}

impl Endpoint {
    fn of(path: &str) -> Option<Self> {
        let p = path.strip_prefix("/v1").unwrap_or(path);
        match p.trim_end_matches('/') {
            "/chat/completions" => Some(Self::ChatCompletions),
            "/models" => Some(Self::Models),
            _ => None,
        }
    }
}

/// Weighted choice among a model's deployments (weight 0 = never, unless all are 0).
/// Richer strategies (latency, cost, usage, cooldowns) build on this.
pub fn choose_deployment(model: &Model, pick: u32) -> &Deployment {
    &model.deployments[choose_deployment_index(model, pick)]
}

/// [`choose_deployment`], as an index into `model.deployments`.
pub fn choose_deployment_index(model: &Model, pick: u32) -> usize {
    let total: u64 = model.deployments.iter().map(|d| u64::from(d.weight)).sum();
    if total == 0 {
        return 0;
    }
    let mut r = u64::from(pick) % total;
    for (i, d) in model.deployments.iter().enumerate() {
        let w = u64::from(d.weight);
        if r < w {
            return i;
        }
        r -= w;
    }
    0
}

fn models_list(config: &Config, created: u64) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        id: &'a str,
        object: &'static str,
        created: u64,
        owned_by: &'a str,
    }
    #[derive(serde::Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Entry<'a>>,
    }
    let list = List {
        object: "list",
        data: config
            .models
            .iter()
            .map(|m| Entry {
                id: &m.name,
                object: "model",
                created,
                owned_by: &m.owned_by,
            })
            .collect(),
    };
    serde_json::to_vec(&list).unwrap_or_else(|_| b"{\"object\":\"list\",\"data\":[]}".to_vec())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ResponseMode {
    Pending,
    /// The client already has its whole answer (an error): drop what else the provider sends.
    Discard,
    /// Buffer the whole body, translate at the end.
    Buffer,
    /// Translate chunk by chunk.
    Stream,
    /// Buffer the provider's error body, answer the OpenAI error at the end.
    ProviderError,
    /// Envoy answered by itself (connect failure, timeout): replace its text with an OpenAI
    /// error. Holds `response.code_details`.
    EnvoyError(String),
}

/// One request's response side: the translator and what it has seen.
pub struct Exchange {
    translator: Box<dyn ChatTranslator>,
    pub model: String,
    pub provider: String,
    pub upstream_model: String,
    pub stream: bool,
    /// Which configured model and deployment (for metric labels and records).
    pub route: crate::observe::Route,
    mode: ResponseMode,
    /// The status the client gets.
    pub status: u16,
    /// The status the provider sent.
    provider_status: u16,
    max_response_bytes: u32,
}

/// Header changes for the client's response.
#[derive(Debug, Default, PartialEq)]
pub struct ResponseHeaders {
    pub set: Vec<(&'static str, String)>,
    pub remove: Vec<&'static str>,
    /// Hold the headers until the whole body is in (it will be rewritten, maybe its status too).
    pub wait_for_body: bool,
}

#[derive(Debug, PartialEq)]
pub enum BodyAction {
    /// Forward the chunk as it is.
    Continue,
    /// Hold the body until `end_of_stream` (the host buffers it).
    Buffer,
    /// Replace the chunk with this (streaming).
    Replace(Vec<u8>),
    /// Replace the whole held body; the held headers get this status and a matching
    /// `content-length`.
    ReplaceWhole { status: u16, body: Vec<u8> },
}

impl Exchange {
    /// Response headers arrived. `status` is the upstream's (or Envoy's own local reply's);
    /// `envoy_details` is `response.code_details` when Envoy generated the response itself.
    pub fn on_response_headers(
        &mut self,
        status: u16,
        envoy_details: Option<&str>,
    ) -> ResponseHeaders {
        let mut h = ResponseHeaders::default();
        h.set
            .push((PROVIDER_RESPONSE_HEADER, self.provider.clone()));
        self.provider_status = status;
        self.status = status;
        self.mode = if let Some(details) = envoy_details {
            self.status = envoy_error_status(status, details);
            ResponseMode::EnvoyError(details.to_string())
        } else if !(200..300).contains(&status) {
            self.status = crate::providers::client_status(status);
            ResponseMode::ProviderError
        } else if self.stream {
            ResponseMode::Stream
        } else {
            ResponseMode::Buffer
        };
        if self.mode == ResponseMode::Stream {
            h.set
                .push(("content-type", "text/event-stream; charset=utf-8".into()));
            h.remove.push("content-length");
        } else {
            h.wait_for_body = true;
        }
        h
    }

    /// A response body chunk. In the buffered modes `data` is only read at `end_of_stream`
    /// (then it is the whole body); `buffered_len` is what the host holds so far.
    pub fn on_response_body(
        &mut self,
        data: &[u8],
        buffered_len: usize,
        end_of_stream: bool,
    ) -> BodyAction {
        match self.mode {
            ResponseMode::Pending => BodyAction::Continue,
            ResponseMode::Discard => BodyAction::Replace(Vec::new()),
            ResponseMode::Stream => {
                let mut out = Vec::new();
                if self.translator.stream_chunk(data, end_of_stream, &mut out) {
                    BodyAction::Replace(out)
                } else {
                    BodyAction::Continue
                }
            }
            ResponseMode::Buffer | ResponseMode::ProviderError | ResponseMode::EnvoyError(_) => {
                if buffered_len as u64 > u64::from(self.max_response_bytes) {
                    // Too big to hold: answer an error instead of growing without bound.
                    self.mode = ResponseMode::Discard;
                    self.status = 502;
                    let e = GatewayError::new(
                        502,
                        "api_error",
                        format!(
                            "{} response is larger than the gateway limit of {} bytes",
                            self.provider, self.max_response_bytes
                        ),
                    );
                    return BodyAction::ReplaceWhole {
                        status: 502,
                        body: e.body(),
                    };
                }
                if !end_of_stream {
                    return BodyAction::Buffer;
                }
                match self.finish_buffered(data) {
                    Some(body) => BodyAction::ReplaceWhole {
                        status: self.status,
                        body,
                    },
                    None => BodyAction::Continue,
                }
            }
        }
    }

    /// Whether the glue must read the whole buffered body at end of stream.
    pub fn needs_whole_body(&self) -> bool {
        matches!(
            self.mode,
            ResponseMode::Buffer | ResponseMode::ProviderError | ResponseMode::EnvoyError(_)
        )
    }

    /// The client's body for a whole buffered response; `None` keeps the provider's bytes.
    fn finish_buffered(&mut self, body: &[u8]) -> Option<Vec<u8>> {
        let e = match &self.mode {
            ResponseMode::Buffer => match self.translator.response(body) {
                Ok(Some(out)) => return Some(out),
                Ok(None) => return None,
                Err(e) => e,
            },
            ResponseMode::ProviderError => self.translator.error(self.provider_status, body),
            ResponseMode::EnvoyError(details) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(256)]);
                let what = if self.status == 504 {
                    "timed out"
                } else {
                    "could not be reached"
                };
                GatewayError::new(
                    self.status,
                    crate::error::kind_for_status(self.status),
                    format!(
                        "provider `{}` {what}: {} ({details})",
                        self.provider,
                        text.trim()
                    ),
                )
                .with_code(if self.status == 504 {
                    "upstream_timeout"
                } else {
                    "upstream_unavailable"
                })
            }
            _ => return None,
        };
        self.status = e.status;
        Some(e.body())
    }

    pub fn usage(&self) -> Option<Usage> {
        self.translator.usage()
    }
}

/// Status for a response Envoy generated itself instead of the provider.
fn envoy_error_status(status: u16, details: &str) -> u16 {
    if details.contains("timeout") {
        504
    } else if details.contains("upstream_reset")
        || details.contains("connection_failure")
        || details.contains("no_healthy_upstream")
        || details.contains("cluster_not_found")
        || details.contains("connection_termination")
    {
        502
    } else {
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProcessEnv;

    const CONFIG: &str = r#"{
        "providers": {
            "oai": {"type": "openai", "cluster": "c_oai", "api_key": "sk-o", "timeout_ms": 1234},
            "ant": {"type": "anthropic", "cluster": "c_ant", "host": "api.anthropic.com", "api_key": "sk-a"}
        },
        "models": [
            {"name": "gpt", "deployments": [{"provider": "oai", "model": "gpt-4o-mini"}]},
            {"name": "claude", "deployments": [{"provider": "ant", "model": "claude-x"}]},
            {"name": "split", "deployments": [{"provider": "oai", "weight": 1}, {"provider": "ant", "weight": 3}]}
        ],
        "max_request_bytes": 200,
        "max_response_bytes": 100
    }"#;

    fn gw() -> Gateway {
        Gateway::new(Config::parse(CONFIG.as_bytes(), &ProcessEnv).unwrap(), 42)
    }

    fn local(d: HeadersDecision) -> LocalResponse {
        match d {
            HeadersDecision::Respond(r) => r,
            other => panic!("expected a local response, got {other:?}"),
        }
    }

    fn error_json(body: &[u8]) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string());
        v
    }

    #[test]
    fn routes_paths_and_methods() {
        let g = gw();
        assert_eq!(
            g.on_request_headers("POST", "/v1/chat/completions", Some(10)),
            HeadersDecision::ReadBody
        );
        assert_eq!(
            g.on_request_headers("POST", "/chat/completions?x=1", None),
            HeadersDecision::ReadBody
        );
        let r = local(g.on_request_headers("GET", "/v1/models", None));
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][1]["id"], "claude");
        assert_eq!(v["data"][1]["owned_by"], "anthropic");
        assert_eq!(v["data"][0]["created"], 42);
        assert_eq!(
            local(g.on_request_headers("GET", "/v1/chat/completions", None)).status,
            405
        );
        let r = local(g.on_request_headers("POST", "/v1/embeddingz", None));
        assert_eq!(r.status, 404);
        assert_eq!(error_json(&r.body)["error"]["code"], "unknown_url");
        let r = local(g.on_request_headers("POST", "/v1/chat/completions", Some(201)));
        assert_eq!(r.status, 413);
        assert!(g.body_too_large(200).is_none());
        assert_eq!(g.body_too_large(201).unwrap().status, 413);
    }

    #[test]
    fn passthrough_paths_when_configured() {
        let cfg = CONFIG.replace(
            "\"max_request_bytes\": 200",
            "\"max_request_bytes\": 200, \"unknown_paths\": \"passthrough\"",
        );
        let g = Gateway::new(Config::parse(cfg.as_bytes(), &ProcessEnv).unwrap(), 0);
        assert_eq!(
            g.on_request_headers("POST", "/v1/embeddings", None),
            HeadersDecision::PassThrough
        );
    }

    #[test]
    fn unknown_model_lists_known_ones() {
        let e = gw()
            .on_request_body(
                br#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#,
                0,
                0,
            )
            .err()
            .unwrap();
        assert_eq!(e.status, 404);
        assert!(e.message.contains("gpt, claude, split"), "{}", e.message);
        assert_eq!(e.code.as_deref(), Some("model_not_found"));
    }

    #[test]
    fn forward_sets_route_auth_and_timeout() {
        let f = gw()
            .on_request_body(
                br#"{"model":"gpt","messages":[{"role":"user","content":"x"}]}"#,
                0,
                0,
            )
            .ok()
            .unwrap();
        let get = |k: &str| {
            f.set_headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get(":path"), Some("/v1/chat/completions"));
        assert_eq!(get("x-llmux-cluster"), Some("c_oai"));
        assert_eq!(get("authorization"), Some("Bearer sk-o"));
        assert_eq!(get("x-envoy-upstream-rq-timeout-ms"), Some("1234"));
        assert_eq!(get(":authority"), None);
        // model renamed → body rewritten → content-length dropped
        assert!(f.body.is_some());
        assert!(f.remove_headers.contains(&"content-length"));
    }

    #[test]
    fn weighted_choice_follows_weights() {
        let g = gw();
        let model = g.config.model("split").unwrap();
        let (mut oai, mut ant) = (0, 0);
        for pick in 0..4000u32 {
            match g
                .config
                .provider(choose_deployment(model, pick))
                .name
                .as_str()
            {
                "oai" => oai += 1,
                _ => ant += 1,
            }
        }
        assert_eq!((oai, ant), (1000, 3000));
    }

    fn exchange(model: &str, stream: bool) -> Exchange {
        let body = format!(
            r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"x"}}]}}"#
        );
        gw().on_request_body(body.as_bytes(), 0, 0)
            .ok()
            .unwrap()
            .exchange
    }

    #[test]
    fn provider_error_is_held_and_rewritten() {
        let mut ex = exchange("gpt", false);
        let h = ex.on_response_headers(429, None);
        assert!(h.wait_for_body);
        assert!(h.set.contains(&(PROVIDER_RESPONSE_HEADER, "oai".into())));
        assert_eq!(ex.on_response_body(b"", 10, false), BodyAction::Buffer);
        match ex.on_response_body(
            br#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#,
            60,
            true,
        ) {
            BodyAction::ReplaceWhole { status, body } => {
                assert_eq!(status, 429);
                let v = error_json(&body);
                assert!(v["error"]["message"].as_str().unwrap().contains("oai"));
                assert_eq!(v["error"]["type"], "rate_limit_error");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn envoy_local_replies_become_502_and_504() {
        for (status, details, want) in [
            (
                503,
                "upstream_reset_before_response_started{connection_failure}",
                502,
            ),
            (504, "upstream_response_timeout", 504),
            (503, "no_healthy_upstream", 502),
        ] {
            let mut ex = exchange("gpt", true);
            let h = ex.on_response_headers(status, Some(details));
            assert!(h.wait_for_body, "errors are never streamed");
            match ex.on_response_body(b"upstream connect error", 22, true) {
                BodyAction::ReplaceWhole { status, body } => {
                    assert_eq!(status, want);
                    let v = error_json(&body);
                    let code = if want == 504 {
                        "upstream_timeout"
                    } else {
                        "upstream_unavailable"
                    };
                    assert_eq!(v["error"]["code"], code);
                    assert!(v["error"]["message"].as_str().unwrap().contains("`oai`"));
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(ex.status, want);
        }
    }

    #[test]
    fn oversized_response_is_cut_off_with_502() {
        let mut ex = exchange("gpt", false);
        ex.on_response_headers(200, None);
        assert_eq!(ex.on_response_body(b"", 50, false), BodyAction::Buffer);
        match ex.on_response_body(b"", 101, false) {
            BodyAction::ReplaceWhole { status, .. } => assert_eq!(status, 502),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ex.on_response_body(b"more", 4, false),
            BodyAction::Replace(Vec::new())
        );
        assert_eq!(
            ex.on_response_body(b"", 0, true),
            BodyAction::Replace(Vec::new())
        );
    }

    #[test]
    fn passthrough_success_keeps_provider_bytes_and_reads_usage() {
        let mut ex = exchange("gpt", false);
        ex.on_response_headers(200, None);
        let body = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
        assert_eq!(
            ex.on_response_body(body, body.len(), true),
            BodyAction::Continue
        );
        assert_eq!(ex.usage().unwrap().total_tokens(), 7);
    }

    #[test]
    fn stream_headers_switch_to_event_stream() {
        let mut ex = exchange("claude", true);
        let h = ex.on_response_headers(200, None);
        assert!(!h.wait_for_body);
        assert!(h.remove.contains(&"content-length"));
        assert!(h
            .set
            .iter()
            .any(|(k, v)| *k == "content-type" && v.starts_with("text/event-stream")));
    }

    /// Deterministic xorshift for the no-panic tests (no extra crates).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes(&mut self, n: usize, alphabet: &[u8]) -> Vec<u8> {
            (0..n)
                .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
                .collect()
        }
    }

    /// Arbitrary bytes and mutated JSON thrown at the whole pipeline, for every provider kind:
    /// nothing may panic, every request error is a 4xx/5xx with an OpenAI error body.
    #[test]
    fn no_input_panics_the_pipeline() {
        let g = gw();
        let mut rng = Rng(0x9e3779b97f4a7c15);
        let json_alphabet = br#"{}[]:,"0123456789.-+eE truefalsnul\\u00modelsagrctnixp"#;
        let seeds: [&[u8]; 4] = [
            br#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            br#"{"model":"claude","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"tool_choice":"required","max_tokens":5}"#,
            br#"{"model":"claude","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"1","content":"r"}],"stream":true,"stream_options":{"include_usage":true}}"#,
            br#"{"model":"split","messages":[{"role":"developer","content":"d"},{"role":"user","content":"u"}],"stop":["x"],"temperature":1.5}"#,
        ];
        for i in 0..4000 {
            let body = if i % 3 == 0 {
                let n = (rng.next() % 300) as usize;
                rng.bytes(n, json_alphabet)
            } else {
                let mut b = seeds[i % seeds.len()].to_vec();
                for _ in 0..(1 + rng.next() % 4) {
                    let at = (rng.next() % b.len() as u64) as usize;
                    match rng.next() % 3 {
                        0 => {
                            b.remove(at);
                        }
                        1 => b.insert(
                            at,
                            json_alphabet[(rng.next() % json_alphabet.len() as u64) as usize],
                        ),
                        _ => b[at] = (rng.next() & 0xff) as u8,
                    }
                }
                b
            };
            match g.on_request_body(&body, 1, rng.next() as u32) {
                Err(e) => {
                    assert!((400..600).contains(&e.status));
                    error_json(&e.body());
                }
                Ok(f) => {
                    let mut ex = f.exchange;
                    let status = [200u16, 200, 429, 500, 529][(rng.next() % 5) as usize];
                    ex.on_response_headers(status, None);
                    let n = (rng.next() % 400) as usize;
                    let resp = rng.bytes(n, br#"{}[]:,"01 abdefilmnoprstuvy_\n\r:event data"#);
                    let mut pos = 0;
                    while pos < resp.len() {
                        let step = 1 + (rng.next() % 40) as usize;
                        let end = (pos + step).min(resp.len());
                        let _ = ex.on_response_body(&resp[pos..end], end, false);
                        pos = end;
                    }
                    let _ = ex.on_response_body(&resp, resp.len(), true);
                    let _ = ex.usage();
                }
            }
        }
    }
}
