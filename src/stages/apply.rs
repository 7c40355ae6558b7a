//! Applying the gateway's decisions to what the host holds: a forward decision ([`Forward`]) to
//! the request (headers, body, a Vertex access token) and a [`BodyAction`] to the response. One
//! function each serves the direct path and every attempt of the upstream stage, so both send
//! exactly what the gateway decided.

use super::token::{self, Auth};
use super::vm::Vm;
use crate::gateway::{BodyAction, Forward, LocalResponse};
use crate::host::{Action, Body, HeaderMap, Host};

/// The request headers whose presence [`ClientRequest::sent`] records, one bit each.
pub(crate) fn sent_bit(name: &str) -> Option<u8> {
    match name {
        "authorization" => Some(1),
        "x-api-key" => Some(2),
        "api-key" => Some(4),
        "content-length" => Some(8),
        _ => None,
    }
}

/// What the direct path knows of the client's request: every host call counts, so a header
/// already at the decided value is not set again, and one the client did not send is not
/// removed.
pub(crate) struct ClientRequest<'a> {
    pub path: &'a str,
    pub content_type: Option<&'a str>,
    /// Which of the headers a translated request may drop the client sent ([`sent_bit`]).
    pub sent: u8,
}

/// Writes the decision's headers and body. `set_names` collects the non-pseudo headers set (an
/// attempt removes them before the next attempt sets its own).
pub(crate) fn forward(
    h: &dyn Host,
    fwd: &Forward,
    body_size: usize,
    client: Option<&ClientRequest<'_>>,
    mut set_names: Option<&mut Vec<String>>,
) {
    for (k, v) in &fwd.set_headers {
        let unchanged = client.is_some_and(|c| match k.as_str() {
            ":path" => v == c.path,
            "content-type" => c.content_type == Some(v.as_str()),
            _ => false,
        });
        if unchanged {
            continue;
        }
        if let Err(e) = h.set_header(HeaderMap::Request, k, v) {
            log::warn!("llmux: setting request header {k} failed ({})", e.0);
        }
        if let Some(names) = set_names.as_deref_mut() {
            if !k.starts_with(':') {
                names.push(k.clone());
            }
        }
    }
    for k in &fwd.remove_headers {
        if client.is_some_and(|c| sent_bit(k).is_some_and(|b| c.sent & b == 0)) {
            continue; // the client did not send it
        }
        let _ = h.remove_header(HeaderMap::Request, k);
    }
    if let Some(new_body) = &fwd.body {
        if let Err(e) = h.set_body(Body::Request, 0, body_size, new_body) {
            log::warn!("llmux: replacing the request body failed ({})", e.0);
        }
    }
}

/// Where a request that needs an access token stands.
pub(crate) enum TokenStep {
    /// None needed, or set (`authorization: Bearer …`).
    Done,
    /// Paused: the token fetch resumes the request (or answers it).
    Wait,
    /// No token can be had: answer this.
    Failed(LocalResponse),
}

/// Vertex AI with a service-account key: adds the cached token to the request of stream
/// `context_id`, or makes it wait for the fetch.
pub(crate) fn add_token(h: &dyn Host, vm: &Vm, fwd: &Forward, context_id: u32) -> TokenStep {
    let Some(p) = fwd.token else {
        return TokenStep::Done;
    };
    match token::authorize(h, &vm.tokens(), p, context_id) {
        Ok(Auth::Ready(t)) => {
            let _ = h.set_header(HeaderMap::Request, "authorization", &format!("Bearer {t}"));
            TokenStep::Done
        }
        Ok(Auth::Wait) => TokenStep::Wait,
        Err(r) => TokenStep::Failed(r),
    }
}

/// Writes a [`BodyAction`] to the response the host holds.
pub(crate) fn apply_body_action(
    h: &dyn Host,
    action: BodyAction,
    body_size: usize,
    retry_after: Option<&str>,
    upstream_status: u16,
) -> Action {
    match action {
        BodyAction::Continue => Action::Continue,
        BodyAction::Buffer => Action::Pause,
        BodyAction::Replace(out) => {
            if let Err(e) = h.set_body(Body::Response, 0, body_size, &out) {
                log::warn!("llmux: replacing the response body failed ({})", e.0);
            }
            Action::Continue
        }
        BodyAction::ReplaceWhole { status, body } => {
            // The headers are still held (see on_response_headers), so they can change.
            if status != upstream_status {
                let _ = h.set_header(HeaderMap::Response, ":status", &status.to_string());
            }
            let _ = h.set_header(HeaderMap::Response, "content-type", "application/json");
            let _ = h.set_header(
                HeaderMap::Response,
                "content-length",
                &body.len().to_string(),
            );
            if let Some(ra) = retry_after {
                let _ = h.set_header(HeaderMap::Response, "retry-after", ra);
            }
            if let Err(e) = h.set_body(Body::Response, 0, body_size, &body) {
                log::warn!("llmux: replacing the response body failed ({})", e.0);
            }
            Action::Continue
        }
    }
}

/// The headers of a callout that sends `fwd` to its provider with `dispatch_http_call` (the
/// mid-stream recovery's continuation, the response cache's embedding call): the translated
/// request's headers but the routing ones (the cluster header, Envoy's, pseudo-headers), and
/// `:method`, `:path`, `:authority` and `content-type`.
pub fn callout_headers<'a>(
    config: &crate::config::Config,
    provider: &'a crate::config::Provider,
    fwd: &'a crate::gateway::Forward,
) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut path = None;
    let mut authority = provider.host.as_deref();
    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(fwd.set_headers.len() + 4);
    for (k, v) in &fwd.set_headers {
        match k.as_str() {
            ":path" => path = Some(v.as_str()),
            ":authority" => authority = Some(v.as_str()),
            k if k == config.cluster_header || k.starts_with("x-envoy-") => {}
            k if k.starts_with(':') => {}
            _ => headers.push((k, v)),
        }
    }
    let path = path.ok_or("the translator set no path")?;
    headers.push((":method", "POST"));
    headers.push((":path", path));
    headers.push((":authority", authority.unwrap_or(provider.cluster.as_str())));
    if !headers.iter().any(|(k, _)| *k == "content-type") {
        headers.push(("content-type", "application/json"));
    }
    Ok(headers)
}

/// A callout's answer read through the exchange that made it (translated to the client API's
/// shape, as an answer to a client is): the body, or why there is none (no answer, an error
/// status, an unreadable answer). The mid-stream recovery's continuation and the response
/// cache's embedding call read theirs with it.
pub fn callout_answer(
    h: &dyn Host,
    exchange: &mut crate::gateway::Exchange,
    body_size: usize,
) -> Result<Vec<u8>, String> {
    // No headers: the call failed (timeout, reset, no healthy host).
    let status = crate::host::status_of(h, HeaderMap::CallResponse)
        .ok_or("no answer (timeout or connection failure)")?;
    let body = h
        .body(Body::CallResponse, 0, body_size)
        .map_err(|e| format!("reading the answer failed (host status {})", e.0))?
        .unwrap_or_default();
    exchange.on_response_headers(status, None);
    let out = match exchange.on_response_body(&body, body.len(), true) {
        BodyAction::ReplaceWhole { body: out, .. } => out,
        BodyAction::Continue => body,
        _ => return Err("the answer could not be read".into()),
    };
    if !(200..300).contains(&status) || exchange.failed() {
        let msg = exchange
            .last_error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        return Err(format!("status {status}: {msg}"));
    }
    Ok(out)
}
