//! Vertex AI service-account tokens at run time: shared-data reads and writes, the callout to
//! the token endpoint, pausing and resuming requests. The token's decisions (use, refresh, wait,
//! fetch) are [`crate::gcp::auth`]'s.
//!
//! - A request that needs a token reads the provider's cache slot in shared data (all worker
//!   VMs share it). A good token is used at once. Otherwise the request waits, and if no fetch
//!   is under way anywhere, this VM takes the slot's lease (compare-and-swap: one winner across
//!   VMs) and schedules the fetch. A token due for refresh is still used while the refresh runs.
//! - Fetches are sent from the root context's tick (set to 1 ms when one is due), so a fetch
//!   does not die with the request that started it.
//! - The answer is stored in shared data and every waiting request of this VM resumes with
//!   `authorization: Bearer <token>`, or gets a 502 naming the provider and the token endpoint's
//!   status. Requests waiting on another VM's fetch poll the slot every 10 ms; a lease that runs
//!   out (that VM's fetch died) is taken over.

use std::collections::HashMap;

use crate::config::Config;
use crate::error::GatewayError;
use crate::gateway::LocalResponse;
use crate::gcp::auth::{decide, parse_token_response, Decision, ServiceAccount, Slot, TokenError};
use crate::host::{status_of, Body, Direction, HeaderMap, Host};
use crate::providers::vertex::VertexAuth;
use std::cell::RefCell;

/// Tick period while requests wait on another VM's fetch.
const POLL_MS: u32 = 10;

/// One VM's token work: the requests waiting, the fetches due and in flight.
#[derive(Default)]
pub struct State {
    /// Paused requests: (HTTP context id, provider index).
    waiters: Vec<(u32, usize)>,
    /// Providers whose fetch this VM must send at the next tick.
    due: Vec<usize>,
    /// Callout token → provider index.
    in_flight: HashMap<u32, usize>,
    /// The tick runs fast for us (else at the exporter's period, or off).
    fast: bool,
}

/// What the token functions work on: the configuration and the VM's [`State`].
pub struct Tokens<'a> {
    pub config: &'a Config,
    pub state: &'a RefCell<State>,
    /// The tick period when no fetch is under way (the VM's [`super::vm::Vm::base_tick_ms`]).
    pub base_tick_ms: u32,
}

impl State {
    /// Requests wait or fetches are due: the tick must keep running fast.
    fn busy(&self) -> bool {
        !self.waiters.is_empty() || !self.due.is_empty()
    }
}

/// What a request needing a token does next.
pub enum Auth {
    /// Set this bearer token and go on.
    Ready(String),
    /// Paused: it is resumed (or answered) when the token is there.
    Wait,
}

fn now_ms(h: &dyn Host) -> u64 {
    h.now_nanos() / 1_000_000
}

fn account(config: &Config, p: usize) -> Option<(&str, &ServiceAccount, &str, u32)> {
    let provider = config.providers.get(p)?;
    match &provider.vertex.as_ref()?.auth {
        VertexAuth::ServiceAccount {
            account,
            cluster,
            timeout_ms,
        } => Some((&provider.name, account, cluster, *timeout_ms)),
        VertexAuth::Token(_) => None,
    }
}

fn slot_key(provider: &str, sa: &ServiceAccount) -> String {
    format!("llmux.vertex_token.{provider}.{}", sa.client_email)
}

/// The slot and its CAS token, creating an empty slot first if there is none.
fn read(h: &dyn Host, key: &str) -> Option<(Slot, u32)> {
    for _ in 0..2 {
        match h.shared_data(key) {
            Ok((Some(v), cas)) => return Some((Slot::decode(&v), cas)),
            Ok((None, _)) => {
                let _ = h.set_shared_data(key, &Slot::default().encode(), 0);
            }
            Err(_) => return None,
        }
    }
    None
}

fn set_fast(h: &dyn Host, tk: &Tokens<'_>, on: bool) {
    {
        let mut s = tk.state.borrow_mut();
        if s.fast != on {
            s.fast = on;
            // The VM's own period (export, body watch) when we are done.
            let _ = h.set_tick_period_ms(if on { 1 } else { tk.base_tick_ms });
        }
    }
}

fn unavailable(provider: &str, what: &str) -> LocalResponse {
    LocalResponse::error(
        &GatewayError::new(
            502,
            "api_error",
            format!("vertex provider `{provider}`: {what}"),
        )
        .with_code("token_fetch_failed"),
    )
}

/// The request of HTTP context `context_id` needs provider `p`'s access token.
pub fn authorize(
    h: &dyn Host,
    tk: &Tokens<'_>,
    p: usize,
    context_id: u32,
) -> Result<Auth, LocalResponse> {
    let config = tk.config;
    let Some((name, sa, _, timeout_ms)) = account(config, p) else {
        return Err(unavailable("?", "no service-account key configured"));
    };
    let key = slot_key(name, sa);
    for _ in 0..4 {
        let Some((slot, cas)) = read(h, &key) else {
            return Err(unavailable(
                name,
                "the token cache (shared data) is not readable",
            ));
        };
        let now = now_ms(h);
        let lease = || slot.leased(now + u64::from(timeout_ms) + 1000).encode();
        match decide(&slot, now) {
            Decision::Use(t) => return Ok(Auth::Ready(t)),
            Decision::UseAndRefresh(t) => {
                if h.set_shared_data(&key, &lease(), cas).is_ok() {
                    schedule(h, tk, p);
                }
                return Ok(Auth::Ready(t));
            }
            Decision::Wait => break,
            Decision::Fetch => {
                if h.set_shared_data(&key, &lease(), cas).is_ok() {
                    schedule(h, tk, p);
                    break;
                }
                // Another VM wrote first: look again.
            }
        }
    }
    tk.state.borrow_mut().waiters.push((context_id, p));
    set_fast(h, tk, true);
    Ok(Auth::Wait)
}

fn schedule(h: &dyn Host, tk: &Tokens<'_>, p: usize) {
    {
        let mut s = tk.state.borrow_mut();
        if !s.due.contains(&p) {
            s.due.push(p);
        }
    }
    set_fast(h, tk, true);
}

/// The root context's tick: send due fetches, look at the slots others are fetching for us.
pub fn on_tick(h: &dyn Host, tk: &Tokens<'_>, root_id: u32) {
    let config = tk.config;
    let due = std::mem::take(&mut tk.state.borrow_mut().due);
    for p in due {
        dispatch(h, tk, root_id, p);
    }
    let (waiting, fetching): (Vec<usize>, Vec<usize>) = {
        let s = tk.state.borrow();
        let mut w: Vec<usize> = s.waiters.iter().map(|(_, p)| *p).collect();
        w.sort_unstable();
        w.dedup();
        (w, s.in_flight.values().copied().collect())
    };
    for p in waiting.into_iter().filter(|p| !fetching.contains(p)) {
        let Some((name, sa, _, timeout_ms)) = account(config, p) else {
            continue;
        };
        let key = slot_key(name, sa);
        let Some((slot, cas)) = read(h, &key) else {
            continue;
        };
        let now = now_ms(h);
        match decide(&slot, now) {
            Decision::Use(t) | Decision::UseAndRefresh(t) => resume(h, tk, root_id, p, Ok(&t)),
            Decision::Fetch => {
                // The VM that held the lease gave no answer in time: fetch here.
                let lease = slot.leased(now + u64::from(timeout_ms) + 1000).encode();
                if h.set_shared_data(&key, &lease, cas).is_ok() {
                    dispatch(h, tk, root_id, p);
                }
            }
            Decision::Wait => {}
        }
    }
    if tk.state.borrow().busy() {
        let _ = h.set_tick_period_ms(POLL_MS);
    } else {
        set_fast(h, tk, false);
    }
}

fn dispatch(h: &dyn Host, tk: &Tokens<'_>, root_id: u32, p: usize) {
    let config = tk.config;
    let Some((name, sa, cluster, timeout_ms)) = account(config, p) else {
        return;
    };
    let body = match sa.token_request_body(now_ms(h) / 1000) {
        Ok(b) => b,
        Err(e) => {
            return finish(
                h,
                tk,
                root_id,
                p,
                Err(TokenError {
                    status: 0,
                    message: e,
                }),
            )
        }
    };
    let headers = vec![
        (":method", "POST"),
        (":path", sa.token_path.as_str()),
        (":authority", sa.token_authority.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
        ("accept", "application/json"),
    ];
    match h.http_call(cluster, &headers, &body, timeout_ms) {
        Ok(token) => {
            log::debug!("llmux: fetching an access token for vertex provider {name}");
            tk.state.borrow_mut().in_flight.insert(token, p);
        }
        Err(e) => finish(
            h,
            tk,
            root_id,
            p,
            Err(TokenError {
                status: 0,
                message: format!(
                    "the call to cluster `{cluster}` failed (host status {})",
                    e.0
                ),
            }),
        ),
    }
}

/// A callout answered; `false` if it was not a token fetch.
pub fn on_http_call_response(
    h: &dyn Host,
    tk: &Tokens<'_>,
    root_id: u32,
    token: u32,
    body_size: usize,
) -> bool {
    let Some(p) = tk.state.borrow_mut().in_flight.remove(&token) else {
        return false;
    };
    // No headers (timeout, reset, no healthy host) reads as status 0.
    let status = status_of(h, HeaderMap::CallResponse).unwrap_or(0);
    let body = h
        .body(Body::CallResponse, 0, body_size)
        .ok()
        .flatten()
        .unwrap_or_default();
    let result = if status == 0 {
        Err(TokenError {
            status,
            message: "no answer (timeout or connection failure)".into(),
        })
    } else {
        parse_token_response(status, &body, now_ms(h))
    };
    finish(h, tk, root_id, p, result);
    true
}

fn finish(h: &dyn Host, tk: &Tokens<'_>, root_id: u32, p: usize, result: Result<Slot, TokenError>) {
    let config = tk.config;
    let Some((name, sa, cluster, _)) = account(config, p) else {
        return;
    };
    let key = slot_key(name, sa);
    match result {
        Ok(slot) => {
            if let Err(e) = h.set_shared_data(&key, &slot.encode(), 0) {
                log::warn!(
                    "llmux: caching the token of {name} failed (host status {})",
                    e.0
                );
            }
            resume(h, tk, root_id, p, Ok(&slot.token));
        }
        Err(e) => {
            // Free the lease (the old token, if any, stays) so the next request tries again.
            if let Some((slot, cas)) = read(h, &key) {
                let _ = h.set_shared_data(&key, &slot.leased(0).encode(), cas);
            }
            let what = format!(
                "the token endpoint {}{} (cluster `{cluster}`) answered {}: {}",
                sa.token_authority, sa.token_path, e.status, e.message
            );
            log::warn!("llmux: vertex provider {name}: {what}");
            resume(h, tk, root_id, p, Err(unavailable(name, &what)));
        }
    }
    let busy = tk.state.borrow().busy();
    set_fast(h, tk, busy);
}

/// Resumes (or answers) every request of this VM waiting for provider `p`.
fn resume(
    h: &dyn Host,
    tk: &Tokens<'_>,
    root_id: u32,
    p: usize,
    result: Result<&str, LocalResponse>,
) {
    let ids: Vec<u32> = {
        let mut s = tk.state.borrow_mut();
        let mut mine = Vec::new();
        for (id, q) in std::mem::take(&mut s.waiters) {
            if q == p {
                mine.push(id);
            } else {
                s.waiters.push((id, q));
            }
        }
        mine
    };
    for id in ids {
        if h.set_effective_context(id).is_err() {
            continue; // that request is gone
        }
        match &result {
            Ok(t) => {
                let _ = h.set_header(HeaderMap::Request, "authorization", &format!("Bearer {t}"));
                let _ = h.resume(Direction::Request);
            }
            Err(r) => {
                let headers: Vec<(&str, &str)> = r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let _ = h.send_response(r.status, &headers, &r.body);
            }
        }
    }
    let _ = h.set_effective_context(root_id);
}
