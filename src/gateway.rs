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
        let model = self.config.model(&env.model).ok_or_else(|| {
            let known: Vec<&str> = self.config.model_names().collect();
            GatewayError::not_found(format!(
                "model `{}` does not exist on this gateway; available models: {}",
                env.model,
                known.join(", ")
            ))
            .with_param("model")
            .with_code("model_not_found")
        })?;
        let deployment = choose_deployment(model, pick);
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
    let total: u64 = model.deployments.iter().map(|d| u64::from(d.weight)).sum();
    if total == 0 {
        return &model.deployments[0];
    }
    let mut r = u64::from(pick) % total;
    for d in &model.deployments {
        let w = u64::from(d.weight);
        if r < w {
            return d;
        }
        r -= w;
    }
    &model.deployments[0]
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
