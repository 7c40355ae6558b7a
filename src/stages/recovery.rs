//! Mid-stream recovery in the downstream stage (the logic is in `routing::recovery`): watch the
//! stream the client gets; when it breaks off, hold its end, ask the fallback deployment for
//! the continuation with an HTTP callout, append it and let the response go on. Whatever
//! fails, the held-back bytes go out as they were: the stream never hangs.

use super::vm::Vm;
use crate::gateway::{Attempts, Endpoint, Exchange, ForwardTo};
use crate::host::{Action, Body, Host, SharedData};
use crate::observe::{MetricKey, Update};
use crate::routing::recovery::{
    continuation_body, render_tail, Outcome, RecoveryRequest, StreamEnd, StreamWatch,
};
use crate::routing::PlanEntry;

/// One streamed chat completion that can be recovered.
pub struct Recovery {
    watch: StreamWatch,
    /// The client's body, to build the continuation from.
    original: Vec<u8>,
    request: RecoveryRequest,
    call: Option<Call>,
    /// The continuation's own usage, once it answered: charged with the broken attempt's.
    pub continuation_usage: Option<crate::usage::Usage>,
}

/// The continuation in flight.
struct Call {
    token: u32,
    entry: PlanEntry,
    exchange: Exchange,
    /// What the paused response body holds (the stream up to the held-back end).
    body: Vec<u8>,
}

impl Recovery {
    /// At the request body: `Some` when a break could be recovered (a streamed chat completion
    /// on the failover path whose plan has another deployment, recovery configured on).
    pub fn for_request(
        vm: &Vm,
        endpoint: Endpoint,
        body: &[u8],
        attempts: &Attempts,
    ) -> Option<Self> {
        let config = vm.config();
        if endpoint != Endpoint::ChatCompletions
            || !attempts.stream
            || !config.router.mid_stream_recovery
        {
            return None;
        }
        attempts.plan.recovery_entry(config, &|_| false)?;
        let request = RecoveryRequest::of(body)?;
        Some(Recovery {
            watch: StreamWatch::new(),
            original: body.to_vec(),
            request,
            call: None,
            continuation_usage: None,
        })
    }

    /// A chunk of a successful streamed response. Returns what to do with it and the bytes the
    /// client gets now (for the captured body). `Action::Pause` at the end: the continuation
    /// was asked for; [`Recovery::on_call_response`] resumes the response.
    pub fn on_body(
        &mut self,
        h: &dyn Host,
        vm: &Vm,
        attempt_id: Option<u64>,
        body_size: usize,
        end_of_stream: bool,
    ) -> (Action, Vec<u8>) {
        let chunk = match h.body(Body::Response, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                log::warn!("llmux: reading the response body failed ({})", e.0);
                return (Action::Continue, Vec::new());
            }
        };
        let mut out = self.watch.feed(&chunk, end_of_stream);
        let mut action = Action::Continue;
        if end_of_stream {
            match self.watch.end() {
                StreamEnd::Complete => {}
                StreamEnd::NotRecoverable => {
                    if let Some(e) = attempt_id.and_then(|id| served_entry(vm, id)) {
                        count(h, vm, e, Outcome::NotRecoverable);
                    }
                }
                StreamEnd::Broken { partial_text } => {
                    match self.start(h, vm, attempt_id, &partial_text) {
                        Ok(()) => action = Action::Pause,
                        Err(why) => log::info!("llmux: stream broke off, not recovered: {why}"),
                    }
                }
            }
            if action == Action::Continue {
                out.extend(self.watch.take_held());
            } else if let Some(call) = &mut self.call {
                call.body = out.clone();
            }
        }
        if out != chunk {
            if let Err(e) = h.set_body(Body::Response, 0, body_size, &out) {
                log::warn!("llmux: replacing the response body failed ({})", e.0);
            }
        }
        (action, out)
    }

    /// Sends the continuation request to the fallback deployment.
    fn start(
        &mut self,
        h: &dyn Host,
        vm: &Vm,
        attempt_id: Option<u64>,
        partial_text: &str,
    ) -> Result<(), String> {
        let pending = attempt_id
            .and_then(|id| vm.registry.lookup(id))
            .ok_or("the request's plan is gone")?;
        let p = pending.borrow();
        let config = vm.config();
        let now_ms = h.now_nanos() / 1_000_000;
        let cooling = |e| crate::routing::is_cooling(config, &SharedData(h), e, now_ms);
        let Some(entry) = p.attempts.plan.recovery_entry(config, &cooling) else {
            if let Some(e) = p.attempts.plan.current() {
                count(h, vm, e, Outcome::NotRecoverable);
            }
            return Err("no other deployment left in the plan".into());
        };
        let result = self.dispatch(h, vm, &p.attempts, entry, partial_text, now_ms);
        if result.is_err() {
            count(h, vm, entry, Outcome::Failed);
        }
        result
    }

    fn dispatch(
        &mut self,
        h: &dyn Host,
        vm: &Vm,
        attempts: &Attempts,
        entry: PlanEntry,
        partial_text: &str,
        now_ms: u64,
    ) -> Result<(), String> {
        let config = vm.config();
        let deployment = config
            .deployment(entry.model, entry.deployment)
            .ok_or("no such deployment")?;
        let provider = config.provider(deployment);
        let body = continuation_body(&self.original, partial_text)
            .ok_or("the request body is not a chat completion")?;
        let gw = &vm.gateway;
        let fwd = gw
            .forward_body(
                &body,
                &ForwardTo {
                    endpoint: Endpoint::ChatCompletions,
                    model_index: usize::from(entry.model),
                    deployment_index: usize::from(entry.deployment),
                    wildcard: attempts.wildcard.as_deref(),
                    now_unix: now_ms / 1000,
                    attempt: true,
                },
            )
            .map_err(|e| e.message)?;
        let headers = super::apply::callout_headers(config, provider, &fwd)?;
        let out_body = fwd.body.as_deref().unwrap_or(&body);
        let token = h
            .http_call(&provider.cluster, &headers, out_body, provider.timeout_ms)
            .map_err(|e| {
                format!(
                    "calling cluster {} failed (host status {})",
                    provider.cluster, e.0
                )
            })?;
        log::info!(
            "llmux: stream broke off after {} bytes of text; continuing on deployment {}",
            partial_text.len(),
            deployment.name
        );
        self.call = Some(Call {
            token,
            entry,
            exchange: fwd.exchange,
            body: Vec::new(),
        });
        Ok(())
    }

    /// The continuation's answer: append the tail (or the held-back end, if it failed) and
    /// resume the response. Returns the bytes appended (for the captured body), `None` when the
    /// token is not this stream's call.
    pub fn on_call_response(
        &mut self,
        h: &dyn Host,
        vm: &Vm,
        attempt_id: Option<u64>,
        token: u32,
        body_size: usize,
    ) -> Option<Vec<u8>> {
        if self.call.as_ref().map(|c| c.token) != Some(token) {
            return None;
        }
        let mut call = self.call.take()?;
        let config = vm.config();
        let name = config
            .deployment(call.entry.model, call.entry.deployment)
            .map(|d| d.name.clone())
            .unwrap_or_default();
        let partial_usage = self.watch.usage.or_else(|| {
            attempt_id
                .and_then(|id| vm.registry.lookup(id))
                .and_then(|p| p.borrow().final_exchange.as_ref().and_then(|e| e.usage()))
        });
        let tail =
            super::apply::callout_answer(h, &mut call.exchange, body_size).and_then(|completion| {
                render_tail(
                    &self.watch,
                    &completion,
                    &name,
                    self.request.include_usage,
                    partial_usage,
                )
            });
        let appended = match tail {
            Ok(tail) => {
                count(h, vm, call.entry, Outcome::Recovered);
                self.continuation_usage = call.exchange.usage();
                tail
            }
            Err(why) => {
                log::warn!("llmux: recovering the stream on deployment {name} failed: {why}");
                count(h, vm, call.entry, Outcome::Failed);
                self.watch.take_held()
            }
        };
        let mut body = std::mem::take(&mut call.body);
        let held_len = body.len();
        body.extend_from_slice(&appended);
        if let Err(e) = h.set_body(Body::Response, 0, held_len, &body) {
            log::warn!("llmux: appending to the response body failed ({})", e.0);
        }
        if let Err(e) = h.resume(crate::host::Direction::Response) {
            log::warn!("llmux: resuming the response failed ({})", e.0);
        }
        Some(appended)
    }
}

/// The deployment that served the stream (failover path).
fn served_entry(vm: &Vm, attempt_id: u64) -> Option<PlanEntry> {
    vm.registry
        .lookup(attempt_id)?
        .borrow()
        .attempts
        .plan
        .current()
}

fn count(h: &dyn Host, vm: &Vm, entry: PlanEntry, outcome: Outcome) {
    vm.apply(
        h,
        Update::Add(
            MetricKey::MidStreamRecoveries {
                route: entry.route(),
                outcome,
            },
            1,
        ),
    );
}
