//! HTTP server: accept loop, routing, auth, fault injection and response delivery.

use crate::body::{self, MockBody};
use crate::config::Config;
use crate::mock::{self, MockHeaders, Plan};
use crate::record::{self, Recorded, Recorder};
use crate::{anthropic, bedrock, cohere, embed, embeddings, gemini, guardrail, openai, vertex};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Largest accepted request body (the Messages API limit).
pub const MAX_BODY: usize = 32 * 1024 * 1024;

const JSON: &str = "application/json";
const SSE: &str = "text/event-stream; charset=utf-8";

/// Shared server state.
pub struct State {
    pub cfg: Config,
    /// Vertex AI access tokens (static and issued by `/token`).
    pub tokens: vertex::Tokens,
    counter: AtomicU64,
    pub recorder: Recorder,
}

impl State {
    pub fn new(cfg: Config) -> Self {
        State {
            recorder: Recorder::new(cfg.record),
            tokens: vertex::Tokens::new(cfg.vertex_token.clone(), None).unwrap_or_default(),
            cfg,
            counter: AtomicU64::new(1),
        }
    }

    /// As `new`, reading `--vertex-public-key` (an unreadable or bad key is an error).
    pub fn try_new(cfg: Config) -> Result<Self, String> {
        let pem = match &cfg.vertex_public_key {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("--vertex-public-key {path}: {e}"))?,
            ),
            None => None,
        };
        let tokens = vertex::Tokens::new(cfg.vertex_token.clone(), pem.as_deref())?;
        Ok(State {
            tokens,
            ..State::new(cfg)
        })
    }

    fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }
}

/// Returned by the service to make hyper drop the connection without a response.
#[derive(Debug)]
pub struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for DropConnection {}

/// TCP stream that, when `reset` was set, closes with an RST (SO_LINGER 0) instead of a FIN.
struct Conn {
    io: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.reset.load(Ordering::Relaxed) {
            let _ = self.io.set_zero_linger();
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Accepts connections forever.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors and the like: back off briefly.
                log(&state, format_args!("accept error: {e}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let reset = Arc::new(AtomicBool::new(false));
            let io = TokioIo::new(Conn {
                io: stream,
                reset: reset.clone(),
            });
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let reset = reset.clone();
                async move { handle(state, reset, req).await }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(io, service)
                .await;
        });
    }
}

fn log(state: &State, args: std::fmt::Arguments<'_>) {
    if state.cfg.verbose {
        let _ = writeln!(std::io::stderr(), "mock-provider: {args}");
    }
}

async fn handle(
    state: Arc<State>,
    reset: Arc<AtomicBool>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, DropConnection> {
    let verbose = state.cfg.verbose;
    let line = if verbose {
        format!("{} {}", req.method(), req.uri())
    } else {
        String::new()
    };
    let res = route(&state, &reset, req).await;
    if verbose {
        match &res {
            Ok(r) => log(&state, format_args!("{line} -> {}", r.status().as_u16())),
            Err(_) => log(&state, format_args!("{line} -> connection dropped")),
        }
    }
    res
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Provider {
    OpenAi,
    OpenAiEmbeddings,
    Anthropic,
    Cohere,
    CohereEmbed,
    Gemini,
    Bedrock,
    GeminiEmbed,
    Vertex,
}

/// Paths answered by the generic echo handler.
const ECHO_PATHS: &[&str] = &[
    "/completions",
    "/responses",
    "/images/generations",
    "/images/edits",
    "/audio/speech",
    "/audio/transcriptions",
    "/audio/translations",
    "/moderations",
];

async fn route(
    state: &Arc<State>,
    reset: &AtomicBool,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, DropConnection> {
    // The external guardrail services (guardrail.rs), before the paths they share a suffix with.
    let service = (req.method() == Method::POST)
        .then(|| guardrail::Service::of(req.uri().path()))
        .flatten();
    if let Some(s) = service {
        return guardrail_call(state, reset, req, s).await;
    }
    let path = req.uri().path();
    let method = req.method();
    match (method, path) {
        (&Method::GET, "/health") => Ok(plain(
            StatusCode::OK,
            "text/plain",
            Bytes::from_static(b"ok"),
        )),
        (&Method::GET, "/__mock/requests") => {
            let id = req.uri().query().and_then(|q| record::query_param(q, "id"));
            Ok(plain(
                StatusCode::OK,
                JSON,
                state.recorder.list(id.as_deref()).into(),
            ))
        }
        (&Method::DELETE, "/__mock/requests") => {
            let n = state.recorder.clear();
            let b = serde_json::json!({ "cleared": n }).to_string();
            Ok(plain(StatusCode::OK, JSON, b.into()))
        }
        (&Method::POST, "/v1/chat/completions") => {
            provider(state, reset, req, Provider::OpenAi).await
        }
        (&Method::POST, "/v1/messages" | "/v1/messages/count_tokens") => {
            provider(state, reset, req, Provider::Anthropic).await
        }
        (&Method::POST, p)
            if p.starts_with("/v1beta/models/") && p.ends_with(":batchEmbedContents") =>
        {
            provider(state, reset, req, Provider::GeminiEmbed).await
        }
        (&Method::POST, p) if p.starts_with("/v1beta/models/") => {
            provider(state, reset, req, Provider::Gemini).await
        }
        (&Method::POST, "/token") => {
            let (parts, body) = req.into_parts();
            let bytes = read_body(body).await.unwrap_or_default();
            record(state, &parts, bytes.clone());
            let (status, b) = state.tokens.grant(&bytes);
            Ok(plain(
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                JSON,
                b.into(),
            ))
        }
        (&Method::GET, "/__mock/tokens") => {
            let b = serde_json::json!({ "issued": state.tokens.issued() }).to_string();
            Ok(plain(StatusCode::OK, JSON, b.into()))
        }
        (&Method::POST, p) if p.starts_with("/v1/projects/") => {
            provider(state, reset, req, Provider::Vertex).await
        }
        (&Method::POST, "/v2/chat") => provider(state, reset, req, Provider::Cohere).await,
        (&Method::POST, p) if p.starts_with("/model/") => {
            provider(state, reset, req, Provider::Bedrock).await
        }
        (&Method::POST, "/v2/embed") => provider(state, reset, req, Provider::CohereEmbed).await,
        // Azure OpenAI, classic deployment paths: `api-version` query and `api-key` header.
        (&Method::POST, p)
            if p.starts_with("/openai/deployments/")
                && (p.ends_with("/chat/completions") || p.ends_with("/embeddings")) =>
        {
            let which = if p.ends_with("/embeddings") {
                Provider::OpenAiEmbeddings
            } else {
                Provider::OpenAi
            };
            let versioned = req
                .uri()
                .query()
                .and_then(|q| record::query_param(q, "api-version"))
                .is_some();
            let has_key = req.headers().contains_key("api-key");
            let leaked = req.headers().contains_key("authorization");
            if versioned && has_key && !leaked {
                return provider(state, reset, req, which).await;
            }
            let (parts, body) = req.into_parts();
            let bytes = read_body(body).await.unwrap_or_default();
            record(state, &parts, bytes);
            let (status, code, msg) = if !versioned {
                (StatusCode::NOT_FOUND, "404", "Resource not found")
            } else if leaked {
                (
                    StatusCode::BAD_REQUEST,
                    "400",
                    "unexpected authorization header beside api-key",
                )
            } else {
                (StatusCode::UNAUTHORIZED, "401", "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.")
            };
            let b = serde_json::json!({ "error": { "code": code, "message": msg } }).to_string();
            Ok(plain(status, JSON, b.into()))
        }
        // OpenAI-compatible services serve chat completions under their own prefixes
        // (`/openai/v1`, `/inference/v1`, `/api/paas/v4`, ...).
        (&Method::POST, p) if p.ends_with("/chat/completions") => {
            provider(state, reset, req, Provider::OpenAi).await
        }
        (&Method::POST, p) if p.ends_with("/embeddings") => {
            provider(state, reset, req, Provider::OpenAiEmbeddings).await
        }
        // Files and batches (any method), and the other OpenAI endpoints a gateway passes
        // through: recorded and acknowledged, so tests can check what arrived (method, path,
        // query, auth, model) without a full mock of each API.
        (m, p)
            if p.contains("/files")
                || p.contains("/batches")
                || (m == Method::POST && ECHO_PATHS.iter().any(|e| p.ends_with(e))) =>
        {
            echo(state, req).await
        }
        (&Method::GET, "/v1/models") => {
            let (parts, body) = req.into_parts();
            let bytes = read_body(body).await.unwrap_or_default();
            record(state, &parts, bytes);
            if let Some(e) = openai_auth(state, &parts) {
                return Ok(openai_error(StatusCode::UNAUTHORIZED, &e, state.next_id()));
            }
            Ok(plain(StatusCode::OK, JSON, openai::models_body().into()))
        }
        _ => {
            let (parts, body) = req.into_parts();
            let bytes = read_body(body).await.unwrap_or_default();
            let msg = format!("Invalid URL ({} {})", parts.method, parts.uri.path());
            if !parts.uri.path().starts_with("/__mock") {
                record(state, &parts, bytes);
            }
            let e = openai::OaiError::invalid(msg, None, None);
            Ok(openai_error(StatusCode::NOT_FOUND, &e, state.next_id()))
        }
    }
}

fn plain(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<MockBody> {
    let mut r = Response::new(MockBody::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn openai_error(status: StatusCode, e: &openai::OaiError, n: u64) -> Response<MockBody> {
    let mut r = plain(status, JSON, e.body().into());
    if let Ok(v) = HeaderValue::from_str(&format!("req_mock_{n}")) {
        r.headers_mut().insert("x-request-id", v);
    }
    r
}

enum BodyError {
    TooLarge,
    Broken,
}

async fn read_body(body: Incoming) -> Result<Bytes, BodyError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Broken),
    }
}

fn record(state: &State, parts: &Parts, body: Bytes) {
    if !state.recorder.enabled() {
        return;
    }
    state.recorder.push(Recorded {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers.clone(),
        body,
    });
}

/// A provider answer before delivery.
pub(crate) struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    stream: bool,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub(crate) fn json(status: u16, body: Vec<u8>) -> Self {
        Reply {
            status,
            content_type: JSON,
            body,
            stream: false,
            headers: Vec::new(),
        }
    }
}

/// Records the request and answers what arrived: method, path, query and body size.
async fn echo(state: &State, req: Request<Incoming>) -> Result<Response<MockBody>, DropConnection> {
    let method = req.method().as_str().to_string();
    let (parts, body) = req.into_parts();
    let bytes = read_body(body).await.unwrap_or_default();
    let len = bytes.len();
    record(state, &parts, bytes);
    let b = serde_json::json!({
        "object": "mock.echo",
        "method": method,
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "bytes": len,
    })
    .to_string();
    Ok(plain(StatusCode::OK, JSON, b.into()))
}

/// A guardrail service's answer, with the provider paths' recording, `x-mock-reset`,
/// `x-mock-latency-ms` and body-delivery steering.
async fn guardrail_call(
    state: &Arc<State>,
    reset: &AtomicBool,
    req: Request<Incoming>,
    service: guardrail::Service,
) -> Result<Response<MockBody>, DropConnection> {
    let (parts, body) = req.into_parts();
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(BodyError::Broken) => return Err(DropConnection),
        Err(BodyError::TooLarge) => {
            record(state, &parts, Bytes::new());
            let b = serde_json::json!({ "error": "request too large" }).to_string();
            return Ok(plain(StatusCode::PAYLOAD_TOO_LARGE, JSON, b.into()));
        }
    };
    record(state, &parts, bytes.clone());
    let mock = MockHeaders::from_headers(&parts.headers);
    if mock.reset {
        reset.store(true, Ordering::Relaxed);
        return Err(DropConnection);
    }
    if mock.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(mock.latency_ms)).await;
    }
    let n = state.next_id();
    let a = guardrail::reply(
        service,
        &parts,
        &bytes,
        &mock,
        state.cfg.openai_key.as_deref(),
        i64::try_from(now()).unwrap_or(0),
        n,
    );
    let reply = Reply {
        status: a.status,
        content_type: JSON,
        body: a.body,
        stream: false,
        headers: a.headers,
    };
    Ok(deliver(reply, &mock))
}

async fn provider(
    state: &Arc<State>,
    reset: &AtomicBool,
    req: Request<Incoming>,
    which: Provider,
) -> Result<Response<MockBody>, DropConnection> {
    let (parts, body) = req.into_parts();
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(BodyError::Broken) => return Err(DropConnection),
        Err(BodyError::TooLarge) => {
            record(state, &parts, Bytes::new());
            let n = state.next_id();
            let reply = match which {
                Provider::OpenAi
                | Provider::OpenAiEmbeddings
                | Provider::Cohere
                | Provider::CohereEmbed => Reply::json(
                    413,
                    openai::OaiError::invalid("Request too large.", None, None).body(),
                ),
                Provider::Anthropic => anthropic_error_reply(
                    413,
                    "request_too_large",
                    "Request exceeds the maximum allowed number of bytes.",
                    n,
                ),
                Provider::Bedrock => bedrock_error_reply(
                    &bedrock::BedrockError::validation("Input is too long for requested model."),
                    n,
                ),
                Provider::Gemini | Provider::GeminiEmbed | Provider::Vertex => Reply::json(
                    413,
                    gemini::error_body(
                        413,
                        "INVALID_ARGUMENT",
                        "Request payload size exceeds the limit.",
                        None,
                    ),
                ),
            };
            return Ok(deliver(reply, &MockHeaders::default()));
        }
    };
    record(state, &parts, bytes.clone());
    let mock = MockHeaders::from_headers(&parts.headers);
    if mock.reset {
        reset.store(true, Ordering::Relaxed);
        return Err(DropConnection);
    }
    if mock.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(mock.latency_ms)).await;
    }
    let n = state.next_id();
    let reply = match which {
        Provider::OpenAi => openai_reply(state, &parts, &bytes, &mock, n),
        Provider::OpenAiEmbeddings => embeddings_reply(state, &parts, &bytes, &mock, n),
        Provider::Cohere => cohere_reply(&parts, &bytes, &mock, n),
        Provider::Anthropic => anthropic_reply(state, &parts, &bytes, &mock, n),
        Provider::Gemini => gemini_reply(state, &parts, &bytes, &mock, n),
        Provider::Bedrock => bedrock_reply(&parts, &bytes, &mock, n),
        Provider::GeminiEmbed => gemini_embed_reply(state, &parts, &bytes, &mock),
        Provider::CohereEmbed => cohere_embed_reply(&parts, &bytes, &mock, n),
        Provider::Vertex => vertex_reply(state, &parts, &bytes, &mock, n),
    };
    Ok(deliver(reply, &mock))
}

fn deliver(reply: Reply, mock: &MockHeaders) -> Response<MockBody> {
    let body = Bytes::from(reply.body);
    let b = if let Some(k) = mock.chunk_offset {
        MockBody::frames(
            body::split_at(&body, k),
            Duration::from_millis(mock.chunk_delay_ms),
        )
    } else if let Some(size) = mock.chunk_size {
        MockBody::frames(
            body::split_every(&body, size),
            Duration::from_millis(mock.chunk_delay_ms),
        )
    } else if reply.stream {
        MockBody::Chunked(Some(body))
    } else {
        MockBody::Full(Some(body))
    };
    let mut r = Response::new(b);
    *r.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    if reply.stream {
        h.insert("cache-control", HeaderValue::from_static("no-cache"));
    }
    for (name, value) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    if let Some(ra) = &mock.retry_after {
        if let Ok(v) = HeaderValue::from_str(ra) {
            h.insert("retry-after", v);
        }
    }
    r
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    mock::header(&parts.headers, name)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn openai_auth(state: &State, parts: &Parts) -> Option<openai::OaiError> {
    let key = state.cfg.openai_key.as_deref()?;
    let auth = parts.headers.get("authorization");
    let expected = format!("Bearer {key}");
    match auth {
        Some(v) if v.as_bytes() == expected.as_bytes() => None,
        None => Some(openai::OaiError::invalid(
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            None,
            Some("invalid_api_key"),
        )),
        Some(_) => Some(openai::OaiError::invalid(
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            None,
            Some("invalid_api_key"),
        )),
    }
}

fn cohere_reply(parts: &Parts, bytes: &Bytes, mock: &MockHeaders, n: u64) -> Reply {
    if !header(parts, "authorization").is_some_and(|a| a.starts_with("Bearer ")) {
        return Reply::json(401, cohere::error_body("no api key supplied"));
    }
    if let Some(status) = mock.status {
        return Reply::json(status, cohere::error_body(cohere::status_message(status)));
    }
    let body = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => v,
        Err(_) => return Reply::json(400, cohere::error_body("invalid request: invalid JSON")),
    };
    if let Err(m) = cohere::validate(&body) {
        return Reply::json(400, cohere::error_body(&m));
    }
    let plan = Plan::build(
        mock,
        &cohere::last_user_text(&body),
        &cohere::tool_names(&body),
        bytes.len(),
    );
    let id = format!("co_mock_{n}");
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        Reply {
            status: 200,
            content_type: "text/event-stream",
            body: cohere::stream_body(&id, &plan, mock),
            stream: true,
            headers: Vec::new(),
        }
    } else {
        Reply::json(200, cohere::chat_body(&id, &plan, mock))
    }
}

fn embeddings_reply(
    state: &State,
    parts: &Parts,
    bytes: &Bytes,
    mock: &MockHeaders,
    n: u64,
) -> Reply {
    let mut reply = (|| {
        if let Some(e) = openai_auth(state, parts) {
            return Reply::json(401, e.body());
        }
        let parsed = serde_json::from_slice::<Value>(bytes).unwrap_or(Value::Null);
        if let Some(status) = mock.status {
            let model = parsed
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            return Reply::json(status, openai::status_error(status, model).body());
        }
        match embeddings::validate(&parsed) {
            Ok(inputs) => Reply::json(200, embeddings::response_body(&parsed, &inputs)),
            Err(e) => Reply::json(400, e.body()),
        }
    })();
    reply
        .headers
        .push(("x-request-id", format!("req_mock_{n}")));
    reply
}

fn openai_reply(state: &State, parts: &Parts, bytes: &Bytes, mock: &MockHeaders, n: u64) -> Reply {
    let with_id = |mut r: Reply| {
        r.headers.push(("x-request-id", format!("req_mock_{n}")));
        r
    };
    if let Some(e) = openai_auth(state, parts) {
        return with_id(Reply::json(401, e.body()));
    }
    let parsed = serde_json::from_slice::<Value>(bytes);
    let model = parsed
        .as_ref()
        .ok()
        .and_then(|v| v.get("model"))
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    if let Some(status) = mock.status {
        return with_id(Reply::json(
            status,
            openai::status_error(status, &model).body(),
        ));
    }
    let body = match parsed {
        Ok(v) => v,
        Err(_) => {
            let e = openai::OaiError::invalid(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)",
                None,
                None,
            );
            return with_id(Reply::json(400, e.body()));
        }
    };
    if let Err(e) = openai::validate(&body) {
        return with_id(Reply::json(400, e.body()));
    }
    let tool_names = openai::tool_names(&body);
    let plan = Plan::build(
        mock,
        &openai::last_user_text(&body),
        &tool_names,
        bytes.len(),
    )
    .script(
        mock,
        openai::last_tool_result(&body).as_deref(),
        &tool_names,
    );
    let id = format!("chatcmpl-mock-{n}");
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let reply = if stream {
        Reply {
            status: 200,
            content_type: SSE,
            body: openai::stream_body(
                &id,
                now(),
                &model,
                &plan,
                mock,
                openai::include_usage(&body),
            ),
            stream: true,
            headers: Vec::new(),
        }
    } else {
        Reply::json(
            200,
            openai::completion_body(&id, now(), &model, &plan, mock),
        )
    };
    with_id(reply)
}

fn anthropic_error_reply(status: u16, kind: &str, message: &str, n: u64) -> Reply {
    let rid = format!("req_mock_{n}");
    let mut r = Reply::json(status, anthropic::error_body(kind, message, &rid));
    r.headers.push(("request-id", rid));
    r
}

fn anthropic_reply(
    state: &State,
    parts: &Parts,
    bytes: &Bytes,
    mock: &MockHeaders,
    n: u64,
) -> Reply {
    let bad = |m: &str| anthropic_error_reply(400, "invalid_request_error", m, n);
    if header(parts, "anthropic-version").is_none_or(|v| v.trim().is_empty()) {
        return bad("anthropic-version: header is required");
    }
    let api_key = parts.headers.get("x-api-key");
    if api_key.is_some() && parts.headers.contains_key("authorization") {
        return bad("unexpected authorization header: send the API key in x-api-key only");
    }
    if let Some(key) = state.cfg.anthropic_key.as_deref() {
        match api_key {
            None => {
                return anthropic_error_reply(
                    401,
                    "authentication_error",
                    "x-api-key header is required",
                    n,
                )
            }
            Some(v) if v.as_bytes() != key.as_bytes() => {
                return anthropic_error_reply(401, "authentication_error", "invalid x-api-key", n)
            }
            Some(_) => {}
        }
    }
    if let Some(status) = mock.status {
        let (kind, message) = anthropic::error_kind(status);
        return anthropic_error_reply(status, kind, message, n);
    }
    let body = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => v,
        Err(e) => {
            return bad(&format!(
                "There was an issue with your request body: invalid JSON ({e})"
            ))
        }
    };
    if parts.uri.path().ends_with("/count_tokens") {
        return match crate::count::anthropic(&body) {
            Ok(b) => {
                let mut r = Reply::json(200, b);
                r.headers.push(("request-id", format!("req_mock_{n}")));
                r
            }
            Err(m) => bad(&m),
        };
    }
    // Context editing is a beta: without it the field is unknown.
    let betas = header(parts, "anthropic-beta").unwrap_or("");
    if body.get("context_management").is_some()
        && !betas
            .split(',')
            .any(|b| b.trim().starts_with("context-management-"))
    {
        return bad("context_management: Extra inputs are not permitted (send the `anthropic-beta: context-management-2025-06-27` header to use it)");
    }
    anthropic_body_reply(&body, bytes.len(), mock, n)
}

/// An Anthropic Messages body (already parsed, headers checked) → the answer.
pub(crate) fn anthropic_body_reply(body: &Value, len: usize, mock: &MockHeaders, n: u64) -> Reply {
    let bad = |m: &str| anthropic_error_reply(400, "invalid_request_error", m, n);
    let body = body.clone();
    if let Err(m) = anthropic::validate(&body) {
        return bad(&m);
    }
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    let tool_names = anthropic::tool_names(&body);
    let plan = Plan::build(mock, &anthropic::last_user_text(&body), &tool_names, len).script(
        mock,
        anthropic::last_tool_result(&body).as_deref(),
        &tool_names,
    );
    let id = format!("msg_mock_{n}");
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut reply = if stream {
        Reply {
            status: 200,
            content_type: SSE,
            body: anthropic::stream_body(&id, &model, &plan, mock, &body),
            stream: true,
            headers: Vec::new(),
        }
    } else {
        Reply::json(
            200,
            anthropic::message_body(&id, &model, &plan, mock, &body),
        )
    };
    reply.headers.push(("request-id", format!("req_mock_{n}")));
    reply
}

/// `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent?alt=sse`.
fn gemini_reply(state: &State, parts: &Parts, bytes: &Bytes, mock: &MockHeaders, n: u64) -> Reply {
    let err = |status: u16, name: &str, message: &str, details: Option<Value>| {
        Reply::json(status, gemini::error_body(status, name, message, details))
    };
    let bad = |m: &str| err(400, "INVALID_ARGUMENT", m, None);
    let rest = parts
        .uri
        .path()
        .strip_prefix("/v1beta/models/")
        .unwrap_or("");
    let (model, method) = rest.split_once(':').unwrap_or((rest, ""));
    let stream = match method {
        "generateContent" | "countTokens" => false,
        "streamGenerateContent" => true,
        _ => {
            return err(
                404,
                "NOT_FOUND",
                &format!("Method not found: {}", parts.uri.path()),
                None,
            )
        }
    };
    if model.is_empty() || model.contains('/') {
        return bad(&format!("Invalid model name: \"{model}\""));
    }
    if parts.headers.contains_key("authorization") {
        return err(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            None,
        );
    }
    if let Some(key) = state.cfg.gemini_key.as_deref() {
        match parts.headers.get("x-goog-api-key") {
            None => {
                return err(
                    403,
                    "PERMISSION_DENIED",
                    "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
                    None,
                )
            }
            Some(v) if v.as_bytes() != key.as_bytes() => {
                return err(
                    400,
                    "INVALID_ARGUMENT",
                    "API key not valid. Please pass a valid API key.",
                    Some(serde_json::json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID", "domain": "googleapis.com"}])),
                )
            }
            Some(_) => {}
        }
    }
    let alt_sse = parts
        .uri
        .query()
        .and_then(|q| record::query_param(q, "alt"))
        .is_some_and(|a| a == "sse");
    if stream && !alt_sse {
        return bad("mock: streamGenerateContent is only served as SSE; add ?alt=sse");
    }
    if let Some(status) = mock.status {
        return Reply::json(status, gemini::status_error_body(status));
    }
    if method == "countTokens" {
        return match serde_json::from_slice::<Value>(bytes)
            .map_err(|e| format!("Invalid JSON payload received. {e}"))
            .and_then(|b| crate::count::gemini(&b, model))
        {
            Ok(b) => Reply::json(200, b),
            Err(m) => bad(&m),
        };
    }
    gemini_body_reply(parts, bytes, mock, n, model, stream)
}

/// A Gemini generateContent request whose path and auth were checked → the answer.
pub(crate) fn gemini_body_reply(
    parts: &Parts,
    bytes: &Bytes,
    mock: &MockHeaders,
    n: u64,
    model: &str,
    stream: bool,
) -> Reply {
    let bad = |m: &str| Reply::json(400, gemini::error_body(400, "INVALID_ARGUMENT", m, None));
    let body = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => v,
        Err(e) => return bad(&format!("Invalid JSON payload received. {e}")),
    };
    if let Err(m) = gemini::validate(&body) {
        return bad(&m);
    }
    let tool_names = gemini::tool_names(&body);
    let plan = Plan::build(
        mock,
        &gemini::last_user_text(&body),
        &tool_names,
        bytes.len(),
    )
    .script(
        mock,
        gemini::last_tool_result(&body).as_deref(),
        &tool_names,
    );
    let id = format!("mock-resp-{n}");
    let block = header(parts, "x-mock-block-reason")
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if stream {
        Reply {
            status: 200,
            content_type: SSE,
            body: gemini::stream_body(&id, model, &plan, mock, &body, block),
            stream: true,
            headers: Vec::new(),
        }
    } else {
        Reply::json(
            200,
            gemini::response_body(&id, model, &plan, mock, &body, block),
        )
    }
}

fn bedrock_error_reply(e: &bedrock::BedrockError, n: u64) -> Reply {
    let mut r = Reply::json(e.status, e.body());
    r.headers.push(("x-amzn-errortype", e.error_type()));
    r.headers.push(("x-amzn-requestid", format!("mock-{n}")));
    r
}

/// `POST /model/{modelId}/{converse|converse-stream|invoke}`, SigV4 verified.
fn bedrock_reply(parts: &Parts, bytes: &Bytes, mock: &MockHeaders, n: u64) -> Reply {
    let raw_path = parts.uri.path();
    let rest = raw_path.strip_prefix("/model/").unwrap_or("");
    let (raw_model, op) = rest.rsplit_once('/').unwrap_or((rest, ""));
    if raw_model.is_empty()
        || raw_model.contains('/')
        || !matches!(
            op,
            "converse"
                | "converse-stream"
                | "invoke"
                | "invoke-with-response-stream"
                | "count-tokens"
        )
    {
        let e = bedrock::BedrockError::new(
            404,
            "UnknownOperationException",
            format!("Unknown operation {raw_path}"),
        );
        return bedrock_error_reply(&e, n);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if let Err(e) = bedrock::verify(
        "POST",
        raw_path,
        parts.uri.query().unwrap_or(""),
        &parts.headers,
        bytes,
        now,
    ) {
        return bedrock_error_reply(&e, n);
    }
    if let Some(status) = mock.status {
        return bedrock_error_reply(&bedrock::status_error(status), n);
    }
    let model = bedrock::percent_decode(raw_model);
    let body = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => v,
        Err(_) => {
            return bedrock_error_reply(
                &bedrock::BedrockError::validation(
                    "Malformed input request, please reformat your input and try again.",
                ),
                n,
            )
        }
    };
    if op == "count-tokens" {
        let mut r = match crate::count::bedrock(&body) {
            Ok(b) => Reply::json(200, b),
            Err(m) => bedrock_error_reply(&bedrock::BedrockError::validation(m), n),
        };
        r.headers.push(("x-amzn-requestid", format!("mock-{n}")));
        return r;
    }
    if op.starts_with("invoke") && bedrock::is_claude(&model) {
        let mut r = bedrock_claude_reply(
            &model,
            &body,
            op == "invoke-with-response-stream",
            bytes.len(),
            mock,
            n,
            header(parts, "x-mock-exception"),
        );
        r.headers.push(("x-amzn-requestid", format!("mock-{n}")));
        return r;
    }
    if op == "invoke-with-response-stream" {
        let e = bedrock::BedrockError::validation("The model is unsupported for streaming.");
        return bedrock_error_reply(&e, n);
    }
    if op == "invoke" {
        return match bedrock::invoke(&model, &body, bytes.len()) {
            Ok((b, tokens)) => {
                let mut r = Reply::json(200, b);
                if let Some(t) = tokens {
                    r.headers
                        .push(("x-amzn-bedrock-input-token-count", t.to_string()));
                }
                r
            }
            Err(e) => bedrock_error_reply(&e, n),
        };
    }
    if let Err(m) = bedrock::validate_converse(&body) {
        return bedrock_error_reply(&bedrock::BedrockError::validation(m), n);
    }
    let plan = Plan::build(
        mock,
        &bedrock::last_user_text(&body),
        &bedrock::tool_names(&body),
        bytes.len(),
    );
    let mut r = if op == "converse-stream" {
        Reply {
            status: 200,
            content_type: bedrock::EVENTSTREAM,
            body: bedrock::converse_stream_body(&plan, mock, n, header(parts, "x-mock-exception")),
            stream: true,
            headers: Vec::new(),
        }
    } else {
        Reply::json(200, bedrock::converse_body(&plan, mock, n))
    };
    r.headers.push(("x-amzn-requestid", format!("mock-{n}")));
    r
}

/// Claude through InvokeModel (signature checked): the body as Bedrock takes it
/// ([`bedrock::anthropic_body`]), then the Anthropic mock's answer — JSON, or for
/// `invoke-with-response-stream` its events in `chunk` frames. Errors in Bedrock's shape.
fn bedrock_claude_reply(
    model: &str,
    body: &Value,
    stream: bool,
    len: usize,
    mock: &MockHeaders,
    n: u64,
    exception: Option<&str>,
) -> Reply {
    let bad = |m: String| bedrock_error_reply(&bedrock::BedrockError::validation(m), n);
    let messages = match bedrock::anthropic_body(body, model, stream) {
        Ok(m) => m,
        Err(m) => return bad(m),
    };
    if let Err(m) = anthropic::validate(&messages) {
        return bad(m);
    }
    let tool_names = anthropic::tool_names(&messages);
    let plan = Plan::build(
        mock,
        &anthropic::last_user_text(&messages),
        &tool_names,
        len,
    )
    .script(
        mock,
        anthropic::last_tool_result(&messages).as_deref(),
        &tool_names,
    );
    let id = format!("msg_bdrk_mock_{n}");
    if stream {
        let mut events = anthropic::stream_events(&id, model, &plan, mock, &messages);
        events.push(anthropic::MESSAGE_STOP.to_string());
        Reply {
            status: 200,
            content_type: bedrock::EVENTSTREAM,
            body: bedrock::invoke_stream_body(&events, &plan, mock, exception),
            stream: true,
            headers: Vec::new(),
        }
    } else {
        Reply::json(
            200,
            anthropic::message_body(&id, model, &plan, mock, &messages),
        )
    }
}

/// Gemini `POST /v1beta/models/{model}:batchEmbedContents` (same key checks as generateContent).
fn gemini_embed_reply(state: &State, parts: &Parts, bytes: &Bytes, mock: &MockHeaders) -> Reply {
    let err = |status: u16, name: &str, message: &str| {
        Reply::json(status, gemini::error_body(status, name, message, None))
    };
    let model = parts
        .uri
        .path()
        .strip_prefix("/v1beta/models/")
        .and_then(|r| r.strip_suffix(":batchEmbedContents"))
        .unwrap_or("");
    if model.is_empty() || model.contains('/') {
        return err(
            400,
            "INVALID_ARGUMENT",
            &format!("Invalid model name: \"{model}\""),
        );
    }
    if parts.headers.contains_key("authorization") {
        return err(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        );
    }
    if let Some(key) = state.cfg.gemini_key.as_deref() {
        if parts.headers.get("x-goog-api-key").map(|v| v.as_bytes()) != Some(key.as_bytes()) {
            return err(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
            );
        }
    }
    if let Some(status) = mock.status {
        return Reply::json(status, gemini::status_error_body(status));
    }
    let body = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => v,
        Err(e) => {
            return err(
                400,
                "INVALID_ARGUMENT",
                &format!("Invalid JSON payload received. {e}"),
            )
        }
    };
    match embed::gemini_batch(model, &body) {
        Ok(b) => Reply::json(200, b),
        Err(m) => err(400, "INVALID_ARGUMENT", &m),
    }
}

/// Cohere `POST /v2/embed`.
fn cohere_embed_reply(parts: &Parts, bytes: &Bytes, mock: &MockHeaders, n: u64) -> Reply {
    if !header(parts, "authorization").is_some_and(|a| a.starts_with("Bearer ")) {
        return Reply::json(401, cohere::error_body("no api key supplied"));
    }
    if let Some(status) = mock.status {
        return Reply::json(status, cohere::error_body(cohere::status_message(status)));
    }
    let body = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => v,
        Err(_) => return Reply::json(400, cohere::error_body("invalid request: invalid JSON")),
    };
    match embed::cohere(&body, &format!("co_emb_mock_{n}")) {
        Ok(b) => Reply::json(200, b),
        Err(m) => Reply::json(400, cohere::error_body(&m)),
    }
}

/// Vertex AI model routes (see `vertex.rs`).
fn vertex_reply(state: &State, parts: &Parts, bytes: &Bytes, mock: &MockHeaders, n: u64) -> Reply {
    let gerr = |status: u16, name: &str, message: &str| {
        Reply::json(status, gemini::error_body(status, name, message, None))
    };
    let Some((publisher, model, method)) = vertex::parse_path(parts.uri.path()) else {
        return gerr(
            404,
            "NOT_FOUND",
            &format!(
                "The requested URL {} was not found on this server.",
                parts.uri.path()
            ),
        );
    };
    if !state.tokens.accepts(header(parts, "authorization")) {
        return gerr(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        );
    }
    let body = || serde_json::from_slice::<Value>(bytes);
    match (publisher, method) {
        ("google", "generateContent" | "streamGenerateContent") => {
            let stream = method == "streamGenerateContent";
            let alt_sse = parts
                .uri
                .query()
                .and_then(|q| record::query_param(q, "alt"))
                .is_some_and(|a| a == "sse");
            if stream && !alt_sse {
                return gerr(
                    400,
                    "INVALID_ARGUMENT",
                    "mock: streamGenerateContent is only served as SSE; add ?alt=sse",
                );
            }
            if let Some(status) = mock.status {
                return Reply::json(status, gemini::status_error_body(status));
            }
            gemini_body_reply(parts, bytes, mock, n, model, stream)
        }
        ("google", "countTokens") => {
            if let Some(status) = mock.status {
                return Reply::json(status, gemini::status_error_body(status));
            }
            match body()
                .map_err(|e| e.to_string())
                .and_then(|b| crate::count::vertex(&b))
            {
                Ok(b) => Reply::json(200, b),
                Err(m) => gerr(400, "INVALID_ARGUMENT", &m),
            }
        }
        ("google", "predict") => {
            if let Some(status) = mock.status {
                return Reply::json(status, gemini::status_error_body(status));
            }
            match body()
                .map_err(|e| e.to_string())
                .and_then(|b| embed::vertex_predict(&b))
            {
                Ok(b) => Reply::json(200, b),
                Err(m) => gerr(400, "INVALID_ARGUMENT", &m),
            }
        }
        ("anthropic", "rawPredict") if model == "count-tokens" => {
            let bad = |m: &str| anthropic_error_reply(400, "invalid_request_error", m, n);
            if let Some(status) = mock.status {
                let (kind, message) = anthropic::error_kind(status);
                return anthropic_error_reply(status, kind, message, n);
            }
            let mut b = match body() {
                Ok(b) => b,
                Err(e) => return bad(&format!("invalid JSON ({e})")),
            };
            match b.as_object_mut().map(|o| o.remove("anthropic_version")) {
                Some(Some(v)) if v == vertex::ANTHROPIC_VERSION => {}
                other => {
                    return bad(&format!(
                        "anthropic_version: expected \"{}\", got {other:?}",
                        vertex::ANTHROPIC_VERSION
                    ))
                }
            }
            match crate::count::anthropic(&b) {
                Ok(out) => Reply::json(200, out),
                Err(m) => bad(&m),
            }
        }
        ("anthropic", "rawPredict" | "streamRawPredict") => {
            let bad = |m: &str| anthropic_error_reply(400, "invalid_request_error", m, n);
            if let Some(status) = mock.status {
                let (kind, message) = anthropic::error_kind(status);
                return anthropic_error_reply(status, kind, message, n);
            }
            let b = match body() {
                Ok(b) => b,
                Err(e) => return bad(&format!("invalid JSON ({e})")),
            };
            let streamed = b.get("stream").and_then(Value::as_bool) == Some(true);
            if streamed != (method == "streamRawPredict") {
                return bad("stream: use :streamRawPredict exactly when \"stream\": true");
            }
            match vertex::anthropic_body(&b, model) {
                Ok(messages) => anthropic_body_reply(&messages, bytes.len(), mock, n),
                Err(m) => bad(&m),
            }
        }
        _ => gerr(
            404,
            "NOT_FOUND",
            &format!("Publisher model method `{publisher}/{model}:{method}` not found."),
        ),
    }
}
