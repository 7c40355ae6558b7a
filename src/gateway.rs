//! The gateway's request/response pipeline, in plain Rust: what to do with each request and
//! response, decided from data the host glue hands in. No proxy-wasm call happens here, so the
//! whole pipeline is unit-tested natively; `wasm` only moves bytes and headers.

use crate::client_api::anthropic::parse_messages_envelope;
use crate::client_api::openai::{
    check_messages, parse_chat_top, parse_embeddings_envelope, ChatEnvelope,
};
use crate::client_api::responses::parse_responses_envelope;
use crate::client_api::ClientApi;
use crate::config::{Config, UnknownPaths};
use crate::error::GatewayError;
use crate::providers::openai::OpenAiPassthrough;
use crate::providers::{ChatCall, ChatTranslator, ProviderKind, Usage};

/// Refuses a files/batches path that could leave the API's prefix once the provider normalises
/// it: dot-segments (`/../`, `/./`, plain or percent-encoded) and encoded slashes or
/// backslashes. The path goes to the provider with the gateway's credentials.
fn check_unrouted_path(path: &str) -> Result<(), GatewayError> {
    let route = path.split('?').next().unwrap_or(path);
    let lower = route.to_ascii_lowercase();
    let encoded_separator = ["%2f", "%5c"].iter().any(|e| lower.contains(e));
    let decoded = lower.replace("%2e", ".");
    let dot_segment =
        decoded.contains('\\') || decoded.split('/').any(|seg| seg == "." || seg == "..");
    if encoded_separator || dot_segment {
        return Err(GatewayError::bad_request(
            "the path may not contain dot-segments or encoded slashes",
        )
        .with_code("invalid_path"));
    }
    Ok(())
}

/// Internal request headers start with this; clients may not send them.
pub const INTERNAL_HEADER_PREFIX: &str = "x-llmux-";
/// Response header naming the provider that answered.
pub const PROVIDER_RESPONSE_HEADER: &str = "x-llmux-provider";
/// Response header of `/v1/messages/count_tokens`: `provider` (the provider counted) or
/// `estimate` (LLMux estimated; see `client_api::anthropic::count_tokens`).
pub const TOKEN_COUNT_HEADER: &str = "x-llmux-token-count";

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

    /// An error in the OpenAI shape.
    pub fn error(e: &GatewayError) -> Self {
        Self::error_in(ClientApi::OpenAi, e)
    }

    /// An error in the shape of the client's API, with its `retry-after`.
    pub fn error_in(api: ClientApi, e: &GatewayError) -> Self {
        let mut r = Self::json(e.status, api.error_body(e));
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
    /// A model-routed request: buffer the body, then call [`Gateway::on_request_body`] (with
    /// the caller's key, when keys are configured).
    ReadBody(Endpoint, Option<usize>),
    /// Not ours: let Envoy route it untouched.
    PassThrough,
    /// `/v1/files`, `/v1/batches`: no model to route by; the body streams through untouched.
    Forward(Unrouted),
}

/// A files or batches request, forwarded to one provider by name.
#[derive(Debug, PartialEq)]
pub struct Unrouted {
    /// Request headers to set and to remove.
    pub set: Vec<(String, String)>,
    pub remove: Vec<&'static str>,
    /// The caller's key (index), for its limits and record.
    pub key: Option<usize>,
    /// `files` or `batches`.
    pub endpoint: &'static str,
    /// Index in `config.providers`.
    pub provider: usize,
}

/// Request header naming the provider of a request without a model (`/v1/files`,
/// `/v1/batches`); the config's `files_provider` otherwise.
pub const PROVIDER_HINT_HEADER: &str = "llmux-provider";

/// The request as it goes upstream.
pub struct Forward {
    /// Headers to set, replacing the client's (`:path`, the cluster header, auth, ...).
    pub set_headers: Vec<(String, String)>,
    pub remove_headers: Vec<&'static str>,
    /// `None` sends the client's body unchanged.
    pub body: Option<Vec<u8>>,
    /// Index in `config.providers` of a provider whose OAuth2 access token the glue must add
    /// (`authorization: Bearer`) before the request goes (Vertex AI with a service-account key).
    pub token: Option<usize>,
    pub exchange: Exchange,
    /// The gateway answers the request itself with this (a token count it estimates): nothing
    /// goes upstream and no limit is checked.
    pub answer: Option<LocalResponse>,
    /// Set when the request goes through the attempts cluster (failover possible): what the
    /// upstream stage needs to make each attempt.
    pub attempts: Option<Attempts>,
}

/// Where [`Gateway::forward`] sends a request: one deployment, at one time.
#[derive(Debug, Clone, Copy)]
pub struct ForwardTo<'a> {
    pub endpoint: Endpoint,
    /// Indexes in `config.models` and that model's `deployments`.
    pub model_index: usize,
    pub deployment_index: usize,
    /// What a wildcard group's `*` matched in the requested model name.
    pub wildcard: Option<&'a str>,
    pub now_unix: u64,
    /// One attempt of the upstream stage (not the direct path).
    pub attempt: bool,
}

/// A request whose attempts the upstream stage makes (see `docs/routing.md`).
#[derive(Debug, Clone)]
pub struct Attempts {
    pub plan: crate::routing::Plan,
    pub endpoint: Endpoint,
    /// What a wildcard group's `*` matched in the requested model name.
    pub wildcard: Option<String>,
    /// The model name the client asked for.
    pub model: String,
    pub stream: bool,
    pub content_type: Option<String>,
    pub key: Option<usize>,
}

/// The request headers the gateway decides on.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeadersRequest<'a> {
    pub method: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    pub content_length: Option<u64>,
    /// The `Authorization: Bearer` token, else `x-api-key`, else `api-key`.
    pub credential: Option<&'a str>,
    pub now_unix: u64,
    /// The `llmux-provider` header (requests without a model).
    pub provider_hint: Option<&'a str>,
}

/// What the glue knows about a request besides its body.
#[derive(Debug, Clone, Copy)]
pub struct BodyRequest<'a> {
    pub endpoint: Endpoint,
    /// The request's `content-type` (multipart forms are routed by their `model` field).
    pub content_type: Option<&'a str>,
    /// The caller's virtual key (index in `auth.keys`), from [`Gateway::authenticate`].
    pub key: Option<usize>,
    pub now_unix: u64,
    /// A random number, to choose among weighted deployments.
    pub pick: u32,
    /// The client's `anthropic-beta` header (Messages requests; Claude on Bedrock takes the
    /// betas in the body).
    pub anthropic_beta: Option<&'a str>,
}

/// What routing needs besides the request: the shared deployment state, random numbers, the
/// current time in ms and the request's tags (from the tags header).
pub struct RoutingInput<'a> {
    pub store: &'a dyn crate::routing::state::StateStore,
    pub rng: &'a mut dyn FnMut() -> u32,
    pub now_ms: u64,
    pub header_tags: Option<&'a str>,
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

    pub fn on_request_headers(&self, req: &HeadersRequest<'_>) -> HeadersDecision {
        let HeadersRequest {
            method,
            path,
            content_length,
            credential,
            now_unix,
            provider_hint,
        } = *req;
        let route = path.split('?').next().unwrap_or(path);
        let endpoint = Endpoint::of(route);
        // Every endpoint LLMux serves needs a valid key when keys are configured.
        let key = match endpoint {
            Some(e) => match self.authenticate(credential, now_unix) {
                Ok(k) => k,
                Err(err) => return HeadersDecision::Respond(self.error_response(e, &err)),
            },
            None => None,
        };
        match endpoint {
            Some(
                endpoint @ (Endpoint::ChatCompletions
                | Endpoint::Embeddings
                | Endpoint::Messages
                | Endpoint::CountTokens
                | Endpoint::Responses
                | Endpoint::OpenAiApi(_)),
            ) => {
                if method != "POST" {
                    return HeadersDecision::Respond(
                        self.error_response(endpoint, &method_not_allowed(method, route, "POST")),
                    );
                }
                if let Some(len) = content_length {
                    if len > u64::from(self.config.max_request_bytes) {
                        return HeadersDecision::Respond(
                            self.error_response(endpoint, &self.too_large()),
                        );
                    }
                }
                HeadersDecision::ReadBody(endpoint, key)
            }
            // Not configured for files and batches: as before, other routes may serve them.
            Some(Endpoint::Unrouted(_))
                if provider_hint.is_none()
                    && self.config.files_provider.is_none()
                    && self.config.unknown_paths == UnknownPaths::Passthrough =>
            {
                HeadersDecision::PassThrough
            }
            Some(Endpoint::Unrouted(endpoint)) => {
                match self.unrouted(path, endpoint, provider_hint, key) {
                    Ok(u) => HeadersDecision::Forward(u),
                    Err(e) => respond(e),
                }
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
                        "LLMux does not serve {method} {route}; served: POST /v1/chat/completions, POST /v1/embeddings, POST /v1/messages, POST /v1/messages/count_tokens, POST /v1/responses, GET /v1/models"
                    ))
                    .with_code("unknown_url"),
                ),
            },
        }
    }

    /// The body has grown to `size` bytes and is not complete yet.
    pub fn body_too_large(&self, endpoint: Endpoint, size: usize) -> Option<LocalResponse> {
        (size as u64 > u64::from(self.config.max_request_bytes))
            .then(|| self.error_response(endpoint, &self.too_large()))
    }

    /// Checks the caller's virtual key when `auth` is configured (`Ok(None)` when it is not).
    /// `presented` is the `Authorization: Bearer` token, else `x-api-key`, else `api-key`.
    pub fn authenticate(
        &self,
        presented: Option<&str>,
        now_unix: u64,
    ) -> Result<Option<usize>, GatewayError> {
        match &self.config.auth {
            Some(auth) if auth.require_key => auth.authenticate(presented, now_unix).map(Some),
            _ => Ok(None),
        }
    }

    /// The key's alias, for logs.
    pub fn key_alias(&self, key: usize) -> Option<&str> {
        self.config
            .auth
            .as_ref()?
            .keys
            .get(key)
            .map(|k| k.alias.as_str())
    }

    /// An error answered by the gateway itself, in the shape of the endpoint's API.
    pub fn error_response(&self, endpoint: Endpoint, e: &GatewayError) -> LocalResponse {
        LocalResponse::error_in(endpoint.client_api(), e)
    }

    /// `/v1/files...` and `/v1/batches...` (any method): to the named OpenAI-protocol provider,
    /// with its path prefix, host and key; the body is not read.
    fn unrouted(
        &self,
        path: &str,
        endpoint: &'static str,
        hint: Option<&str>,
        key: Option<usize>,
    ) -> Result<Unrouted, GatewayError> {
        check_unrouted_path(path)?;
        let name = hint
            .or(self.config.files_provider.as_deref())
            .ok_or_else(|| {
                GatewayError::bad_request(
                    "/v1/files and /v1/batches have no model to route by: send the `llmux-provider` header or set `files_provider` in the gateway config",
                )
                .with_code("missing_provider")
            })?;
        let index = self
            .config
            .providers
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| {
                GatewayError::bad_request(format!("no provider named `{name}` on this gateway"))
                    .with_code("unknown_provider")
            })?;
        let provider = &self.config.providers[index];
        if provider.kind != ProviderKind::OpenAi || provider.type_name == "azure" {
            return Err(GatewayError::bad_request(format!(
                "provider `{name}` ({}) has no OpenAI files/batches API",
                provider.type_name
            ))
            .with_code("unsupported_endpoint"));
        }
        self.allow_provider(key, name)?;
        let rest = path.strip_prefix("/v1").unwrap_or(path);
        let mut set = vec![
            (":path".to_string(), format!("{}{rest}", provider.base_path)),
            (self.config.cluster_header.clone(), provider.cluster.clone()),
        ];
        if let Some(host) = &provider.host {
            set.push((":authority".to_string(), host.clone()));
        }
        let (auth, mut remove) = crate::providers::openai::auth_headers(provider);
        set.extend(auth);
        remove.push(PROVIDER_HINT_HEADER);
        if self.config.auth.is_some() {
            for h in ["authorization", "x-api-key", "api-key"] {
                if !set.iter().any(|(k, _)| k == h) && !remove.contains(&h) {
                    remove.push(h);
                }
            }
        }
        Ok(Unrouted {
            set,
            remove,
            key,
            endpoint,
            provider: index,
        })
    }

    /// A key restricted to some models may reach a provider's files and batches only if one
    /// of its models is served there (403 otherwise).
    fn allow_provider(&self, key: Option<usize>, provider: &str) -> Result<(), GatewayError> {
        let (Some(k), Some(auth)) = (key, self.config.auth.as_ref()) else {
            return Ok(());
        };
        let served_there = |m: &crate::config::Model| {
            m.deployments
                .iter()
                .any(|d| self.config.providers[d.provider].name == provider)
        };
        let allowed = self.config.models.iter().any(|m| {
            served_there(m)
                && std::iter::once(&m.name)
                    .chain(m.aliases.iter())
                    .any(|n| auth.allow_model(k, n).is_ok())
        });
        if allowed {
            return Ok(());
        }
        let alias = auth.keys.get(k).map_or("", |k| k.alias.as_str());
        Err(GatewayError::new(
            403,
            "permission_error",
            format!("API key `{alias}` may not use provider `{provider}`"),
        )
        .with_code("provider_not_allowed"))
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

    /// The whole body of a model-routed request: validate, route, translate. Routing reads
    /// fresh shared state each time; this form (for tests) uses an empty state and `req.pick`.
    pub fn on_request_body(
        &self,
        req: &BodyRequest<'_>,
        body: &[u8],
    ) -> Result<Forward, GatewayError> {
        let store = crate::routing::state::MemStore::default();
        let mut x = u64::from(req.pick) << 32 | 0x9E37_79B9;
        let mut first = Some(req.pick);
        let mut rng = move || {
            first.take().unwrap_or_else(|| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u32
            })
        };
        self.route_request(
            req,
            body,
            &mut RoutingInput {
                store: &store,
                rng: &mut rng,
                now_ms: req.now_unix * 1000,
                header_tags: None,
            },
        )
    }

    /// [`Gateway::on_request_body`] with the shared routing state.
    pub fn route_request(
        &self,
        req: &BodyRequest<'_>,
        body: &[u8],
        input: &mut RoutingInput<'_>,
    ) -> Result<Forward, GatewayError> {
        let BodyRequest {
            endpoint,
            content_type,
            key,
            now_unix,
            pick: _,
            anthropic_beta,
        } = *req;
        let mut env = self.envelope(endpoint, content_type, body)?;
        env.anthropic_beta = anthropic_beta.map(str::to_string);
        let (model_index, wildcard) = self.config.resolve_model(&env.model).ok_or_else(|| {
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
        if let (Some(auth), Some(key)) = (&self.config.auth, key) {
            auth.allow_model(key, &env.model)?;
        }
        let tags = request_tags(input.header_tags, &env);
        let tag_refs: Vec<&str> = tags.iter().map(String::as_str).collect();
        let plan = crate::routing::Planner {
            config: &self.config,
            store: input.store,
            rng: &mut *input.rng,
        }
        .plan(
            model_index,
            &crate::routing::PlanRequest {
                tags: &tag_refs,
                prompt_tokens: crate::routing::estimate_prompt_tokens(body.len()),
                now_ms: input.now_ms,
                stream: env.stream,
            },
        )?;
        let wildcard = wildcard.map(str::to_string);
        // A token count goes to the plan's first deployment only: it is cheap, and a deployment
        // that LLMux estimates for answers without an upstream (see `count_tokens`).
        if plan.can_fail_over() && endpoint != Endpoint::CountTokens {
            if let Some(cluster) = &self.config.router.attempts_cluster {
                // The upstream stage translates per attempt; the body leaves as the client sent it.
                let mut remove_headers = vec!["content-length"];
                if self.config.auth.is_some() {
                    remove_headers.extend(["authorization", "x-api-key", "api-key"]);
                }
                let total_timeout: u64 = plan
                    .entries
                    .iter()
                    .filter_map(|e| self.config.deployment(e.model, e.deployment))
                    .map(|d| u64::from(self.config.providers[d.provider].timeout_ms))
                    .sum();
                return Ok(Forward {
                    set_headers: vec![
                        (self.config.cluster_header.clone(), cluster.clone()),
                        (
                            "x-envoy-max-retries".to_string(),
                            (plan.entries.len().saturating_sub(1)).to_string(),
                        ),
                        (
                            "x-envoy-upstream-rq-timeout-ms".to_string(),
                            total_timeout.min(u64::from(u32::MAX)).to_string(),
                        ),
                    ],
                    remove_headers,
                    body: None,
                    exchange: Exchange::relay(env.model.to_string(), env.stream, endpoint),
                    token: None,
                    answer: None,
                    attempts: Some(Attempts {
                        plan,
                        endpoint,
                        wildcard,
                        model: env.model.into_owned(),
                        stream: env.stream,
                        content_type: content_type.map(str::to_string),
                        key,
                    }),
                });
            }
        }
        let entry = plan.current().ok_or_else(|| {
            GatewayError::new(
                500,
                "api_error",
                format!("model `{}` has no deployment", model.name),
            )
        })?;
        self.forward(
            &env,
            body,
            &ForwardTo {
                endpoint,
                model_index: usize::from(entry.model),
                deployment_index: usize::from(entry.deployment),
                wildcard: wildcard.as_deref(),
                now_unix,
                attempt: false,
            },
        )
    }

    /// The request as it goes to one deployment (the direct path, one attempt of the upstream
    /// stage, or a mid-stream recovery's continuation).
    pub fn forward(
        &self,
        env: &ChatEnvelope<'_>,
        body: &[u8],
        to: &ForwardTo<'_>,
    ) -> Result<Forward, GatewayError> {
        let ForwardTo {
            endpoint,
            model_index,
            deployment_index,
            wildcard,
            now_unix,
            attempt,
        } = *to;
        let deployment = self
            .config
            .models
            .get(model_index)
            .and_then(|m| m.deployments.get(deployment_index))
            .ok_or_else(|| GatewayError::new(500, "api_error", "no such deployment"))?;
        let provider = self.config.provider(deployment);
        let upstream_model: std::borrow::Cow<'_, str> = match wildcard {
            Some(m) if deployment.model.contains('*') => deployment.model.replace('*', m).into(),
            _ => deployment.model.as_str().into(),
        };
        let mut translator = match endpoint {
            Endpoint::Embeddings => provider.kind.embeddings_translator().ok_or_else(|| {
                GatewayError::bad_request(format!(
                    "model `{}` is served by provider `{}` ({}), which has no embeddings API",
                    env.model, provider.name, provider.type_name
                ))
                .with_param("model")
                .with_code("unsupported_endpoint")
            })?,
            Endpoint::Messages => {
                crate::client_api::anthropic::translator::translator(provider, &upstream_model)
            }
            Endpoint::CountTokens => {
                match crate::client_api::anthropic::count_tokens::translator(
                    provider,
                    &upstream_model,
                ) {
                    Some(t) => t,
                    None => {
                        let answer =
                            crate::client_api::anthropic::count_tokens::estimate_answer(body);
                        return Ok(self.answered_locally(env, provider, answer));
                    }
                }
            }
            Endpoint::Responses => {
                crate::client_api::responses::translator::translator(provider.kind)
            }
            Endpoint::OpenAiApi(path) => match provider.kind {
                ProviderKind::OpenAi => Box::new(OpenAiPassthrough::new(path)),
                _ => {
                    return Err(GatewayError::bad_request(format!(
                        "model `{}` is served by provider `{}` ({}), which has no /v1/{path} API",
                        env.model, provider.name, provider.type_name
                    ))
                    .with_param("model")
                    .with_code("unsupported_endpoint"))
                }
            },
            _ => {
                if provider.kind.needs_message_check() {
                    check_messages(env)?;
                }
                provider.kind.chat_translator()
            }
        };
        let req = translator.request(&ChatCall {
            raw: body,
            envelope: env,
            provider,
            upstream_model: &upstream_model,
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
        if self.config.auth.is_some() || attempt {
            // The client's gateway key must not reach the provider (nor, on an attempt, the
            // key an earlier attempt set for another provider); the provider's own key (if
            // the translator set one) stays.
            for h in ["authorization", "x-api-key", "api-key", "x-goog-api-key"] {
                if !set_headers.iter().any(|(k, _)| k == h) && !remove_headers.contains(&h) {
                    remove_headers.push(h);
                }
            }
        }
        if req.body.is_some() {
            remove_headers.push("content-length");
        }
        let hold_for_cost = self.config.cost_header
            && !env.stream
            && deployment.request_price(&upstream_model).is_some();
        Ok(Forward {
            set_headers,
            remove_headers,
            body: req.body,
            token: provider
                .vertex
                .as_ref()
                .is_some_and(|v| v.needs_token_fetch())
                .then_some(deployment.provider),
            exchange: Exchange {
                translator,
                model: env.model.to_string(),
                provider: provider.name.clone(),
                upstream_model: upstream_model.into_owned(),
                stream: env.stream,
                route: crate::observe::Route::Deployment {
                    model: model_index,
                    deployment: deployment_index,
                },
                mode: ResponseMode::Pending,
                client_api: endpoint.client_api(),
                passthrough: endpoint.passes_through(provider.kind),
                relay: false,
                status: 0,
                provider_status: 0,
                max_response_bytes: self.config.max_response_bytes,
                retry_after: None,
                last_error: None,
                hold_for_cost,
                answer_headers: self.config.answer_headers,
                counted: endpoint == Endpoint::CountTokens,
            },
            answer: None,
            attempts: None,
        })
    }

    /// A request the gateway answers itself once routed (a token count it estimates): nothing
    /// goes upstream; `answer` is the client's response.
    fn answered_locally(
        &self,
        env: &ChatEnvelope<'_>,
        provider: &crate::config::Provider,
        answer: LocalResponse,
    ) -> Forward {
        let mut exchange = Exchange::relay(env.model.to_string(), false, Endpoint::CountTokens);
        exchange.provider = provider.name.clone();
        exchange.relay = false;
        Forward {
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            body: None,
            token: None,
            exchange,
            answer: Some(answer),
            attempts: None,
        }
    }

    /// The request `body` (a JSON body of `to.endpoint`) as it goes to one deployment: its
    /// envelope parsed, then [`Gateway::forward`]. For the gateway's own callouts (a mid-stream
    /// recovery's continuation, the response cache's embedding call).
    pub fn forward_body(&self, body: &[u8], to: &ForwardTo<'_>) -> Result<Forward, GatewayError> {
        let env = self.envelope(to.endpoint, None, body)?;
        self.forward(&env, body, to)
    }

    /// Parses the body's envelope for the endpoint (size checked first).
    pub fn envelope<'b>(
        &self,
        endpoint: Endpoint,
        content_type: Option<&str>,
        body: &'b [u8],
    ) -> Result<ChatEnvelope<'b>, GatewayError> {
        if body.len() as u64 > u64::from(self.config.max_request_bytes) {
            return Err(self.too_large());
        }
        match endpoint {
            Endpoint::Embeddings => parse_embeddings_envelope(body),
            Endpoint::Messages => parse_messages_envelope(body),
            Endpoint::CountTokens => {
                crate::client_api::anthropic::count_tokens::parse_envelope(body)
            }
            Endpoint::Responses => parse_responses_envelope(body),
            Endpoint::OpenAiApi(_) => {
                match content_type.and_then(crate::codec::multipart::boundary) {
                    Some(boundary) => form_envelope(body, boundary),
                    None => ChatEnvelope::parse_routed(body),
                }
            }
            // The messages are checked in `forward`, once the provider is known.
            _ => parse_chat_top(body),
        }
    }
}

/// Tags from the tags header (comma-separated) and the body's `tags` (array of strings).
fn request_tags(header: Option<&str>, env: &ChatEnvelope<'_>) -> Vec<String> {
    let mut tags: Vec<String> = header
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    if let Some((_, raw)) = env.fields.iter().rev().find(|(k, _)| k == "tags") {
        if let Ok(list) = serde_json::from_str::<Vec<String>>(raw.get()) {
            tags.extend(list);
        }
    }
    tags
}

/// The envelope of a multipart form routed by its `model` field.
fn form_envelope<'a>(body: &'a [u8], boundary: &str) -> Result<ChatEnvelope<'a>, GatewayError> {
    let (start, end) =
        crate::codec::multipart::field(body, boundary, "model").ok_or_else(|| {
            GatewayError::invalid_param("model", "the form has no `model` field")
                .with_code("missing_required_parameter")
        })?;
    let model = std::str::from_utf8(&body[start..end])
        .map_err(|_| GatewayError::invalid_param("model", "`model` is not valid UTF-8"))?;
    if model.trim().is_empty() {
        return Err(GatewayError::invalid_param(
            "model",
            "`model` must not be empty",
        ));
    }
    Ok(ChatEnvelope::for_model(
        std::borrow::Cow::Borrowed(model.trim()),
        crate::client_api::openai::Span { start, end },
    ))
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

/// The API endpoints LLMux serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Embeddings,
    /// Anthropic Messages API.
    Messages,
    /// Anthropic's token counter (`/v1/messages/count_tokens`), routed like `Messages`.
    CountTokens,
    /// OpenAI Responses API: passed through to OpenAI-protocol providers, translated through
    /// the chat pivot for the others.
    Responses,
    Models,
    /// Another OpenAI endpoint (`completions`, `images/generations`, ...): routed by its
    /// `model` and passed through to OpenAI-protocol providers.
    OpenAiApi(&'static str),
    /// `files` or `batches` (and their sub-paths): no model; routed to one provider by name.
    Unrouted(&'static str),
}

/// OpenAI endpoints passed through with model routing and auth (JSON or multipart bodies).
pub const OPENAI_PASSTHROUGH_PATHS: &[&str] = &[
    "completions",
    "images/generations",
    "images/edits",
    "audio/speech",
    "audio/transcriptions",
    "audio/translations",
    "moderations",
];

impl Endpoint {
    /// The API a client of this endpoint speaks.
    pub fn client_api(self) -> ClientApi {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => ClientApi::Anthropic,
            _ => ClientApi::OpenAi,
        }
    }

    /// A successful answer from this kind of provider goes back untouched (only errors are
    /// rewritten): the other OpenAI endpoints, and the Responses API to OpenAI's protocol.
    fn passes_through(self, kind: ProviderKind) -> bool {
        match self {
            Endpoint::OpenAiApi(_) => true,
            Endpoint::Responses => crate::client_api::responses::translator::passes_through(kind),
            _ => false,
        }
    }

    fn of(path: &str) -> Option<Self> {
        let p = path.strip_prefix("/v1").unwrap_or(path);
        match p.trim_end_matches('/') {
            "/chat/completions" => Some(Self::ChatCompletions),
            "/embeddings" => Some(Self::Embeddings),
            "/messages" => Some(Self::Messages),
            "/messages/count_tokens" => Some(Self::CountTokens),
            "/responses" => Some(Self::Responses),
            "/models" => Some(Self::Models),
            other if other == "/files" || other.starts_with("/files/") => {
                Some(Self::Unrouted("files"))
            }
            other if other == "/batches" || other.starts_with("/batches/") => {
                Some(Self::Unrouted("batches"))
            }
            other => OPENAI_PASSTHROUGH_PATHS
                .iter()
                .find(|s| other.strip_prefix('/') == Some(**s))
                .map(|s| Self::OpenAiApi(s)),
        }
    }
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
    /// Forward the body as it arrives, keeping its last bytes (the translator reads its usage
    /// there at the end).
    Tail(Vec<u8>),
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
    /// The client's API: errors in its shape (Anthropic: provider statuses unmapped).
    client_api: ClientApi,
    /// Successful answers go back untouched (other OpenAI endpoints); only errors are rewritten.
    passthrough: bool,
    /// The upstream stage already translated the answer (failover path): only Envoy's own
    /// replies (every attempt failed without an answer) are rewritten here.
    relay: bool,
    /// The status the client gets.
    pub status: u16,
    /// The status the provider sent.
    provider_status: u16,
    max_response_bytes: u32,
    /// `Retry-After` seconds the translator found in a provider error body (e.g. Gemini's
    /// `RetryInfo`), for the glue to set on the rewritten response.
    pub retry_after: Option<String>,
    /// The error the client gets, once a failed answer has been read (routing classifies it).
    pub last_error: Option<GatewayError>,
    /// Hold a pass-through answer anyway, so the glue can add `x-llmux-cost-usd` once its usage
    /// is known (the deployment has a price and `cost_header` is on).
    pub hold_for_cost: bool,
    /// Name the provider in `x-llmux-provider` (`answer_headers`).
    pub answer_headers: bool,
    /// A token count the provider made: a 2xx answer says so in [`TOKEN_COUNT_HEADER`].
    counted: bool,
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
    /// The downstream side of a request whose attempts the upstream stage makes.
    pub fn relay(model: String, stream: bool, endpoint: Endpoint) -> Self {
        Exchange {
            translator: Box::new(OpenAiPassthrough::new("chat/completions")),
            provider: "llmux".to_string(),
            upstream_model: model.clone(),
            model,
            stream,
            route: crate::observe::Route::Rejected,
            mode: ResponseMode::Pending,
            client_api: endpoint.client_api(),
            passthrough: true,
            relay: true,
            status: 0,
            provider_status: 0,
            max_response_bytes: DEFAULT_RELAY_ERROR_BYTES,
            retry_after: None,
            last_error: None,
            hold_for_cost: false,
            answer_headers: false,
            counted: false,
        }
    }

    pub fn is_relay(&self) -> bool {
        self.relay
    }

    /// Response headers arrived. `status` is the upstream's (or Envoy's own local reply's);
    /// `envoy_details` is `response.code_details` when Envoy generated the response itself.
    pub fn on_response_headers(
        &mut self,
        status: u16,
        envoy_details: Option<&str>,
    ) -> ResponseHeaders {
        let mut h = ResponseHeaders::default();
        self.provider_status = status;
        self.status = status;
        if self.relay && envoy_details.is_none() {
            return h;
        }
        if !self.relay && self.answer_headers {
            h.set
                .push((PROVIDER_RESPONSE_HEADER, self.provider.clone()));
        }
        if self.counted && envoy_details.is_none() && (200..300).contains(&status) {
            h.set.push((TOKEN_COUNT_HEADER, "provider".to_string()));
        }
        self.mode = if let Some(details) = envoy_details {
            self.status = envoy_error_status(status, details);
            ResponseMode::EnvoyError(details.to_string())
        } else if !(200..300).contains(&status) {
            if self.client_api == ClientApi::OpenAi {
                self.status = crate::providers::client_status(status);
            }
            ResponseMode::ProviderError
        } else if self.passthrough {
            // Forwarded as the provider sent it; the usage is read on the way (the last bytes of
            // an answer, the events of a stream).
            self.mode = if self.stream {
                ResponseMode::Stream
            } else {
                ResponseMode::Tail(Vec::new())
            };
            return h;
        } else if self.stream {
            ResponseMode::Stream
        } else if self.translator.response_passes_through() && !self.hold_for_cost {
            self.mode = ResponseMode::Tail(Vec::new());
            return h;
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
            ResponseMode::Tail(ref mut tail) => {
                const KEEP: usize = crate::providers::RESPONSE_TAIL_BYTES;
                if data.len() >= KEEP {
                    tail.clear();
                    tail.extend_from_slice(&data[data.len() - KEEP..]);
                } else {
                    let overflow = (tail.len() + data.len()).saturating_sub(KEEP);
                    tail.drain(..overflow.min(tail.len()));
                    tail.extend_from_slice(data);
                }
                if end_of_stream {
                    let tail = std::mem::take(tail);
                    if let Err(e) = self.translator.response(&tail) {
                        // Only usage is read here: an unreadable tail means no usage, not an error.
                        log::debug!(
                            "llmux: no usage in {}'s answer: {}",
                            self.provider,
                            e.message
                        );
                    }
                }
                BodyAction::Continue
            }
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
                        body: self.client_api.error_body(&e),
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
            ResponseMode::ProviderError => {
                let mut e = self.translator.error(self.provider_status, body);
                if self.client_api == ClientApi::Anthropic {
                    e.status = self.provider_status;
                }
                e
            }
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
        self.retry_after = e.retry_after.clone();
        let body = self.client_api.error_body(&e);
        self.last_error = Some(e);
        Some(body)
    }

    /// The status the provider (or Envoy) answered with.
    pub fn provider_status(&self) -> u16 {
        self.provider_status
    }

    /// Envoy's `response.code_details` when Envoy answered instead of the provider.
    pub fn envoy_details(&self) -> Option<&str> {
        match &self.mode {
            ResponseMode::EnvoyError(d) => Some(d),
            _ => None,
        }
    }

    /// The answer failed (provider error or no answer): routing counts it against the
    /// deployment.
    pub fn failed(&self) -> bool {
        self.last_error.is_some()
            || matches!(
                self.mode,
                ResponseMode::ProviderError | ResponseMode::EnvoyError(_)
            )
            || (self.mode == ResponseMode::Discard && self.status >= 500)
    }

    pub fn usage(&self) -> Option<Usage> {
        self.translator.usage()
    }
}

/// A relay only ever buffers Envoy's own short error replies.
const DEFAULT_RELAY_ERROR_BYTES: u32 = 64 * 1024;

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

    /// A chat-completions body request at time 0, no key.
    const CHAT_REQUEST: BodyRequest<'static> = BodyRequest {
        endpoint: Endpoint::ChatCompletions,
        content_type: None,
        key: None,
        now_unix: 0,
        pick: 0,
        anthropic_beta: None,
    };

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

    fn hdrs<'a>(method: &'a str, path: &'a str, content_length: Option<u64>) -> HeadersRequest<'a> {
        HeadersRequest {
            method,
            path,
            content_length,
            credential: None,
            now_unix: 0,
            provider_hint: None,
        }
    }

    fn gw() -> Gateway {
        Gateway::new(Config::parse(CONFIG.as_bytes(), &ProcessEnv).unwrap(), 42)
    }

    /// The test config with more top-level settings (`extra`: `"key": value, ...`).
    fn gw_with(extra: &str) -> Gateway {
        let cfg = CONFIG.replace(
            "\"max_request_bytes\": 200",
            &format!("\"max_request_bytes\": 200, {extra}"),
        );
        Gateway::new(Config::parse(cfg.as_bytes(), &ProcessEnv).unwrap(), 0)
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
            g.on_request_headers(&hdrs("POST", "/v1/chat/completions", Some(10))),
            HeadersDecision::ReadBody(Endpoint::ChatCompletions, None)
        );
        assert_eq!(
            g.on_request_headers(&hdrs("POST", "/chat/completions?x=1", None)),
            HeadersDecision::ReadBody(Endpoint::ChatCompletions, None)
        );
        assert_eq!(
            g.on_request_headers(&hdrs("POST", "/v1/embeddings", None)),
            HeadersDecision::ReadBody(Endpoint::Embeddings, None)
        );
        let r = local(g.on_request_headers(&hdrs("GET", "/v1/models", None)));
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][1]["id"], "claude");
        assert_eq!(v["data"][1]["owned_by"], "anthropic");
        assert_eq!(v["data"][0]["created"], 42);
        assert_eq!(
            local(g.on_request_headers(&hdrs("GET", "/v1/chat/completions", None))).status,
            405
        );
        let r = local(g.on_request_headers(&hdrs("POST", "/v1/embeddingz", None)));
        assert_eq!(r.status, 404);
        assert_eq!(error_json(&r.body)["error"]["code"], "unknown_url");
        let r = local(g.on_request_headers(&hdrs("POST", "/v1/chat/completions", Some(201))));
        assert_eq!(r.status, 413);
        assert!(g.body_too_large(Endpoint::ChatCompletions, 200).is_none());
        assert_eq!(
            g.body_too_large(Endpoint::ChatCompletions, 201)
                .unwrap()
                .status,
            413
        );
    }

    #[test]
    fn files_paths_with_dot_segments_or_encoded_slashes_are_refused() {
        let g = gw_with(r#""files_provider": "oai""#);
        for path in [
            "/v1/files/../../admin",
            "/v1/files/./x",
            "/v1/files/%2e%2e/admin",
            "/v1/files/%2E%2e/admin",
            "/v1/files/a%2fb",
            "/v1/files/a%5Cb",
            "/v1/files/a\\..\\b",
            "/v1/batches/..",
        ] {
            let r = local(g.on_request_headers(&hdrs("GET", path, None)));
            assert_eq!(r.status, 400, "{path}");
            assert_eq!(
                error_json(&r.body)["error"]["code"],
                "invalid_path",
                "{path}"
            );
        }
        for path in [
            "/v1/files",
            "/v1/files/file-abc.jsonl/content",
            "/v1/batches?limit=2",
        ] {
            assert!(
                matches!(
                    g.on_request_headers(&hdrs("GET", path, None)),
                    HeadersDecision::Forward(..)
                ),
                "{path}"
            );
        }
    }

    #[test]
    fn files_need_a_key_allowed_a_model_of_that_provider() {
        let key = |alias: &str| {
            use sha2::Digest;
            let d: String = sha2::Sha256::digest(format!("sk-{alias}").as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!(r#"{{"key_sha256": "{d}", "alias": "{alias}", "models": ["claude"]}}"#)
        };
        let g = gw_with(&format!(
            r#""files_provider": "oai", "auth": {{"keys": [{}]}}"#,
            key("claude-only")
        ));
        let mut req = hdrs("GET", "/v1/files", None);
        req.credential = Some("sk-claude-only");
        let r = local(g.on_request_headers(&req));
        assert_eq!(r.status, 403);
        assert_eq!(error_json(&r.body)["error"]["code"], "provider_not_allowed");
        // `split` is served on oai too: a key allowed `split` may use oai's files.
        let g = gw_with(&format!(
            r#""files_provider": "oai", "auth": {{"keys": [{}]}}"#,
            key("claude-only").replace(r#"["claude"]"#, r#"["split"]"#)
        ));
        assert!(matches!(
            g.on_request_headers(&req),
            HeadersDecision::Forward(..)
        ));
    }

    #[test]
    fn passthrough_paths_when_configured() {
        let g = gw_with(r#""unknown_paths": "passthrough""#);
        assert_eq!(
            g.on_request_headers(&hdrs("POST", "/v1/files", None)),
            HeadersDecision::PassThrough
        );
    }

    #[test]
    fn messages_are_checked_by_whoever_reads_them() {
        let send = |model: &str, messages: &str| {
            let body = format!(r#"{{"model":"{model}","messages":{messages}}}"#);
            gw().on_request_body(&CHAT_REQUEST, body.as_bytes())
        };
        // OpenAI's protocol: the messages go as they are (the provider answers bad ones).
        assert!(send("gpt", r#"[{"role":"robot","content":"x"}]"#).is_ok());
        // Translated: the same errors as before the provider was known.
        let e = send("claude", r#"[{"role":"robot","content":"x"}]"#)
            .err()
            .unwrap();
        assert_eq!(
            (e.status, e.param.as_deref()),
            (400, Some("messages[0].role"))
        );
        // No messages, or not an array, is refused for every provider.
        for model in ["gpt", "claude"] {
            for messages in [r#"{"role":"user"}"#, "[]", "[ \n ]"] {
                let e = send(model, messages).err().unwrap();
                assert_eq!((e.status, e.param.as_deref()), (400, Some("messages")));
            }
        }
    }

    #[test]
    fn unknown_model_lists_known_ones() {
        let e = gw()
            .on_request_body(
                &CHAT_REQUEST,
                br#"{"model":"nope","messages":[{"role":"user","content":"x"}]}"#,
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
                &CHAT_REQUEST,
                br#"{"model":"gpt","messages":[{"role":"user","content":"x"}]}"#,
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
    fn embeddings_route_to_openai_protocol_only() {
        let g = gw();
        let f = g
            .on_request_body(
                &BodyRequest {
                    endpoint: Endpoint::Embeddings,
                    content_type: None,
                    key: None,
                    now_unix: 0,
                    pick: 0,
                    anthropic_beta: None,
                },
                br#"{"model":"gpt","input":"hi"}"#,
            )
            .ok()
            .unwrap();
        let path = f.set_headers.iter().find(|(k, _)| k == ":path").unwrap();
        assert_eq!(path.1, "/v1/embeddings");
        let e = g
            .on_request_body(
                &BodyRequest {
                    endpoint: Endpoint::Embeddings,
                    content_type: None,
                    key: None,
                    now_unix: 0,
                    pick: 0,
                    anthropic_beta: None,
                },
                br#"{"model":"claude","input":"hi"}"#,
            )
            .err()
            .unwrap();
        assert_eq!(
            (e.status, e.code.as_deref()),
            (400, Some("unsupported_endpoint"))
        );
        let e = g
            .on_request_body(
                &BodyRequest {
                    endpoint: Endpoint::Embeddings,
                    content_type: None,
                    key: None,
                    now_unix: 0,
                    pick: 0,
                    anthropic_beta: None,
                },
                br#"{"model":"gpt","messages":[]}"#,
            )
            .err()
            .unwrap();
        assert_eq!(e.param.as_deref(), Some("input"));
    }

    #[test]
    fn other_openai_endpoints_route_json_and_forms_by_model() {
        let g = gw();
        assert_eq!(
            g.on_request_headers(&hdrs("POST", "/v1/images/generations", None)),
            HeadersDecision::ReadBody(Endpoint::OpenAiApi("images/generations"), None)
        );
        let f = g
            .on_request_body(
                &BodyRequest {
                    endpoint: Endpoint::Responses,
                    content_type: Some("application/json"),
                    key: None,
                    now_unix: 0,
                    pick: 0,
                    anthropic_beta: None,
                },
                br#"{"model":"gpt","input":"hi","stream":true}"#,
            )
            .ok()
            .unwrap();
        assert!(f
            .set_headers
            .contains(&(":path".into(), "/v1/responses".into())));
        let v: serde_json::Value = serde_json::from_slice(&f.body.unwrap()).unwrap();
        assert_eq!(v["model"], "gpt-4o-mini");
        let mut ex = f.exchange;
        let h = ex.on_response_headers(200, None);
        assert!(
            !h.wait_for_body && h.remove.is_empty(),
            "answers pass untouched"
        );
        assert_eq!(
            ex.on_response_body(b"event: x\n", 9, false),
            BodyAction::Continue
        );

        let form = b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF\r\n--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt\r\n--B--\r\n";
        let f = g
            .on_request_body(
                &BodyRequest {
                    endpoint: Endpoint::OpenAiApi("audio/transcriptions"),
                    content_type: Some("multipart/form-data; boundary=B"),
                    key: None,
                    now_unix: 0,
                    pick: 0,
                    anthropic_beta: None,
                },
                form,
            )
            .ok()
            .unwrap();
        let body = f.body.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("\r\n\r\ngpt-4o-mini\r\n--B--"), "{text}");
        assert!(text.contains("RIFF"));
        let e = g
            .on_request_body(
                &BodyRequest {
                    endpoint: Endpoint::OpenAiApi("audio/transcriptions"),
                    content_type: Some("multipart/form-data; boundary=B"),
                    key: None,
                    now_unix: 0,
                    pick: 0,
                    anthropic_beta: None,
                },
                b"--B--\r\n",
            )
            .err()
            .unwrap();
        assert_eq!(e.param.as_deref(), Some("model"));
        let e = g
            .on_request_body(
                &BodyRequest {
                    endpoint: Endpoint::OpenAiApi("images/generations"),
                    content_type: None,
                    key: None,
                    now_unix: 0,
                    pick: 0,
                    anthropic_beta: None,
                },
                br#"{"model":"claude","prompt":"x"}"#,
            )
            .err()
            .unwrap();
        assert_eq!(e.code.as_deref(), Some("unsupported_endpoint"));
    }

    #[test]
    fn weighted_choice_follows_weights() {
        // The planner's simple-shuffle (routing/mod.rs) takes `pick` as its first random number.
        let g = gw();
        let body = br#"{"model":"split","messages":[{"role":"user","content":"x"}]}"#;
        let (mut oai, mut ant) = (0, 0);
        for pick in 0..4000u32 {
            let req = BodyRequest {
                endpoint: Endpoint::ChatCompletions,
                content_type: None,
                key: None,
                now_unix: 0,
                pick,
                anthropic_beta: None,
            };
            match g
                .on_request_body(&req, body)
                .ok()
                .unwrap()
                .exchange
                .provider
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
        gw().on_request_body(&CHAT_REQUEST, body.as_bytes())
            .ok()
            .unwrap()
            .exchange
    }

    #[test]
    fn answer_headers_can_be_turned_off() {
        let g = gw_with(r#""answer_headers": false"#);
        let body = br#"{"model":"gpt","messages":[{"role":"user","content":"x"}]}"#;
        let mut ex = g
            .on_request_body(&CHAT_REQUEST, body)
            .ok()
            .unwrap()
            .exchange;
        let h = ex.on_response_headers(429, None);
        assert!(!h.set.iter().any(|(k, _)| *k == PROVIDER_RESPONSE_HEADER));
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
        // (A translated answer is held to be rewritten; pass-through ones are not held.)
        let mut ex = exchange("claude", false);
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
    fn passthrough_answers_flow_through_and_usage_comes_from_the_tail() {
        // gpt-4o-mini has a list price: held for `x-llmux-cost-usd` unless `cost_header` is off.
        let mut held = exchange("gpt", false);
        assert!(held.hold_for_cost);
        assert!(held.on_response_headers(200, None).wait_for_body);
        let mut ex = exchange("gpt", false);
        ex.hold_for_cost = false;
        let h = ex.on_response_headers(200, None);
        assert!(!h.wait_for_body, "an OpenAI answer is not held");
        let mut body = br#"{"id":"x","choices":[{"message":{"content":""#.to_vec();
        body.extend(std::iter::repeat_n(b'a', 10_000));
        body.extend_from_slice(
            br#""}}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
        );
        for (i, chunk) in body.chunks(997).enumerate() {
            let last = (i + 1) * 997 >= body.len();
            assert_eq!(
                ex.on_response_body(chunk, chunk.len(), last),
                BodyAction::Continue
            );
        }
        let u = ex.usage().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (3, 4));
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
    fn other_endpoints_answers_are_charged_by_their_usage() {
        let g = gw();
        let exchange = |path: &'static str, body: &str| {
            let req = BodyRequest {
                endpoint: match path {
                    "responses" => Endpoint::Responses,
                    _ => Endpoint::OpenAiApi(path),
                },
                content_type: Some("application/json"),
                key: None,
                now_unix: 0,
                pick: 0,
                anthropic_beta: None,
            };
            g.on_request_body(&req, body.as_bytes())
                .ok()
                .unwrap()
                .exchange
        };
        // Completions, whole: OpenAI's prompt/completion counts, read from the answer's end.
        let mut ex = exchange("completions", r#"{"model":"gpt","prompt":"hi"}"#);
        ex.on_response_headers(200, None);
        let answer = br#"{"id":"c","choices":[{"text":"x \"usage\": 1"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
        assert_eq!(
            ex.on_response_body(answer, answer.len(), true),
            BodyAction::Continue
        );
        assert_eq!(ex.usage().map(|u| u.total_tokens()), Some(12));
        // Responses API, streamed: the usage of `response.completed`, bytes untouched.
        let mut ex = exchange("responses", r#"{"model":"gpt","input":"hi","stream":true}"#);
        ex.on_response_headers(200, None);
        let events = concat!(
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"usage\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",",
            "\"usage\":{\"input_tokens\":9,\"input_tokens_details\":{\"cached_tokens\":4},",
            "\"output_tokens\":3,\"output_tokens_details\":{\"reasoning_tokens\":1},\"total_tokens\":12}}}\n\n"
        )
        .as_bytes();
        for (i, part) in events.chunks(17).enumerate() {
            let last = (i + 1) * 17 >= events.len();
            assert_eq!(
                ex.on_response_body(part, part.len(), last),
                BodyAction::Continue
            );
        }
        let u = ex.usage().unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.cached_tokens,
                u.reasoning_tokens
            ),
            (9, 3, 4, 1)
        );
        // Moderations report no usage: none, not an error.
        let mut ex = exchange("moderations", r#"{"model":"gpt","input":"hi"}"#);
        ex.on_response_headers(200, None);
        let answer = br#"{"id":"m","results":[{"flagged":false}]}"#;
        ex.on_response_body(answer, answer.len(), true);
        assert_eq!(ex.usage(), None);
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

    /// Arbitrary bytes and mutated JSON thrown at the whole pipeline, for every provider kind:
    /// nothing may panic, every request error is a 4xx/5xx with an OpenAI error body.
    #[test]
    fn no_input_panics_the_pipeline() {
        let g = gw();
        let mut rng = crate::test_support::XorShift(0x9e3779b97f4a7c15);
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
            match g.on_request_body(
                &BodyRequest {
                    endpoint: if i % 7 == 0 {
                        Endpoint::Embeddings
                    } else {
                        Endpoint::ChatCompletions
                    },
                    content_type: None,
                    key: None,
                    now_unix: 1,
                    pick: rng.next() as u32,
                    anthropic_beta: None,
                },
                &body,
            ) {
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
