//! Guardrails on the request path (docs/guardrails.md): the request's text scanned before it is
//! routed (blocked with an error in the client's API, or masked so the provider never sees the
//! value), and the answer scanned on its way back — a whole answer at its end, a stream through
//! a hold-back window — where masked values the client sent are also restored.
//!
//! The detectors and their actions are [`crate::guard`]'s; this module picks the guardrails of
//! a request (by model group, key and team), keeps the request's [`Vault`] from the request to
//! its answer, and counts what acted.

use crate::error::GatewayError;
use crate::gateway::Endpoint;
use crate::guard::select::{GuardMetric, GuardSet};
use crate::guard::sse::SseGuard;
use crate::guard::{scan_answer, scan_request, AnsApi, Hit, ReqApi, Scan, Vault};
use crate::host::Host;
use crate::observe::{MetricKey, Update};

use super::vm::Vm;

fn api_of(endpoint: Endpoint) -> Option<(ReqApi, Option<AnsApi>)> {
    match endpoint {
        Endpoint::ChatCompletions => Some((ReqApi::Chat, Some(AnsApi::Chat))),
        Endpoint::Messages | Endpoint::CountTokens => {
            Some((ReqApi::Messages, Some(AnsApi::Messages)))
        }
        Endpoint::Responses => Some((ReqApi::Responses, Some(AnsApi::Responses))),
        Endpoint::Embeddings => Some((ReqApi::Embeddings, None)),
        _ => None,
    }
}

/// A request the guardrails let through, and its body when they masked something.
pub type Guarded = (RequestGuard, Option<Vec<u8>>);

/// One request's guardrails.
pub struct RequestGuard {
    /// Indices of the guardrails that apply (`GuardSet::entries`).
    entries: Vec<usize>,
    vault: Vault,
    answer: Option<AnsApi>,
    /// What acted, per guardrail (for the metrics and the usage record).
    scans: Vec<(usize, Scan)>,
    stream: Option<SseGuard>,
    /// Indices of the remote guardrails that check the (whole) answer (`on` has `response`).
    remote_answer: Vec<usize>,
}

/// The error a blocked request or answer gets: it names the guardrail and the rule, never the
/// matched text.
pub fn blocked_error(hit: &Hit, answer: bool) -> GatewayError {
    let what = if answer { "answer" } else { "request" };
    let mut e = GatewayError::new(
        400,
        "invalid_request_error",
        format!(
            "the {what} was blocked by guardrail `{}` (rule `{}`)",
            hit.guardrail, hit.rule
        ),
    )
    .with_code("guardrail_blocked");
    e.param = Some(format!("{}.{}", hit.guardrail, hit.rule));
    e
}

/// The error a request gets when a guardrail cannot read its body (not the API's JSON shape, a
/// duplicated key): 400, the guardrail named; not the parser's words (they may quote the body).
pub fn unreadable_error(guardrail: &str) -> GatewayError {
    let mut e = GatewayError::new(
        400,
        "invalid_request_error",
        format!(
            "guardrail `{guardrail}` could not read the request body (not this API's JSON shape, or a key given twice)"
        ),
    )
    .with_code("guardrail_unreadable");
    e.param = Some(guardrail.to_string());
    e
}

impl RequestGuard {
    /// Scans a request body. `Ok(None)`: no guardrail applies. `Ok(Some((guard, body)))`: the
    /// request goes on, with `body` when something was masked. `Err`: blocked.
    pub fn on_request(
        h: &dyn Host,
        vm: &Vm,
        endpoint: Endpoint,
        body: &[u8],
        key: Option<usize>,
    ) -> Result<Option<Guarded>, GatewayError> {
        let config = vm.config();
        let Some(set) = config.guardrails.as_ref() else {
            return Ok(None);
        };
        let Some((req_api, answer)) = api_of(endpoint) else {
            return Ok(None);
        };
        let entries = applicable(config, set, body, key);
        if entries.is_empty() {
            return Ok(None);
        }
        let remote_answer = match answer {
            Some(_) => entries
                .iter()
                .copied()
                .filter(|&i| {
                    set.entries
                        .get(i)
                        .is_some_and(|e| e.remote.is_some() && e.remote_on_response)
                })
                .collect(),
            None => Vec::new(),
        };
        let mut g = RequestGuard {
            entries,
            vault: Vault::new(),
            answer,
            scans: Vec::new(),
            stream: None,
            remote_answer,
        };
        let current = g.scan_each(h, vm, set, false, body, |p, b, v| {
            scan_request(p, req_api, b, v)
        })?;
        Ok(Some((g, current)))
    }

    /// Counts a scan's hits and keeps them for the usage record.
    fn record(&mut self, h: &dyn Host, vm: &Vm, set: &GuardSet, i: usize, scan: Scan) {
        for hit in &scan.hits {
            let rule = set.rule_index(i, &hit.rule);
            vm.apply(
                h,
                Update::Add(
                    MetricKey::Guard(GuardMetric::Acted {
                        guardrail: i as u16,
                        rule,
                        action: hit.action.name(),
                    }),
                    u64::from(hit.count),
                ),
            );
        }
        match self.scans.iter_mut().find(|(j, _)| *j == i) {
            Some((_, s)) => s.merge(scan),
            None => self.scans.push((i, scan)),
        }
    }

    /// The answer needs the guardrails: a response rule applies, or masked values are to be
    /// restored.
    pub fn on_answer(&self, vm: &Vm) -> bool {
        let Some(set) = vm.config().guardrails.as_ref() else {
            return false;
        };
        self.answer.is_some()
            && (self.vault.has_restorable()
                || self
                    .entries
                    .iter()
                    .filter_map(|&i| set.entries.get(i))
                    .any(|e| !e.policy.response().is_empty()))
    }

    /// Remote guardrails check this request's whole answer (`on` has `response`).
    pub fn remote_on_answer(&self) -> bool {
        !self.remote_answer.is_empty()
    }

    /// A streamed answer: remote guardrails check whole answers only (holding a stream to its
    /// end would make it no stream, and its size is the provider's); counted as skipped.
    pub fn skip_remote_for_stream(&self, h: &dyn Host, vm: &Vm) {
        let Some(set) = vm.config().guardrails.as_ref() else {
            return;
        };
        for &i in &self.remote_answer {
            let name = set.entries.get(i).map_or("", |e| e.name.as_str());
            log::debug!("llmux: guardrail {name} does not check streamed answers: skipped");
            count(
                h,
                vm,
                GuardMetric::Skipped {
                    guardrail: i as u16,
                },
            );
        }
    }

    /// A whole answer (the client's bytes): `Ok(Some(body))` rewritten, `Ok(None)` unchanged,
    /// `Err` blocked.
    pub fn whole_answer(
        &mut self,
        h: &dyn Host,
        vm: &Vm,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, GatewayError> {
        let (Some(set), Some(api)) = (vm.config().guardrails.as_ref(), self.answer) else {
            return Ok(None);
        };
        self.scan_each(h, vm, set, true, body, |p, b, v| scan_answer(p, api, b, v))
    }

    /// Runs the request's guardrails over `body` in order (what one masks, the next sees
    /// masked): the rewritten body, if any changed it, or the block.
    fn scan_each(
        &mut self,
        h: &dyn Host,
        vm: &Vm,
        set: &GuardSet,
        answer: bool,
        body: &[u8],
        scan: impl Fn(&crate::guard::Policy, &[u8], &mut Vault) -> Result<crate::guard::Outcome, String>,
    ) -> Result<Option<Vec<u8>>, GatewayError> {
        let mut current: Option<Vec<u8>> = None;
        for i in self.entries.clone() {
            let Some(e) = set.entries.get(i) else {
                continue;
            };
            // Requests: only the guardrails with request rules (an answer is also read to
            // restore what the request masked). Remote guardrails are called by `RemoteChecks`.
            if (!answer && e.policy.request().is_empty()) || e.remote.is_some() {
                continue;
            }
            let dir = if answer { "response" } else { "request" };
            count(
                h,
                vm,
                GuardMetric::Checks {
                    guardrail: i as u16,
                    dir,
                },
            );
            let input = current.as_deref().unwrap_or(body);
            match scan(&e.policy, input, &mut self.vault) {
                Ok(out) => {
                    let blocked = out.scan.blocked.clone();
                    self.record(h, vm, set, i, out.scan);
                    if let Some(hit) = blocked {
                        return Err(blocked_error(&hit, answer));
                    }
                    if let Some(b) = out.body {
                        current = Some(b);
                    }
                }
                Err(why) => {
                    log::debug!(
                        "llmux: guardrail {} could not read the {dir}: {why}",
                        e.name
                    );
                    count(
                        h,
                        vm,
                        GuardMetric::Errors {
                            guardrail: i as u16,
                        },
                    );
                    // A request the guardrails cannot read is refused, never sent on unscanned:
                    // the gateway and the provider may read it where this walk cannot (a
                    // duplicated key: serde's derive refuses it, most parsers take the last).
                    if !answer {
                        return Err(unreadable_error(&e.name));
                    }
                }
            }
        }
        Ok(current)
    }

    /// A chunk of a streamed answer as it goes to the client: what to send instead.
    pub fn stream_chunk(&mut self, h: &dyn Host, vm: &Vm, chunk: &[u8], end: bool) -> Vec<u8> {
        let (Some(set), Some(api)) = (vm.config().guardrails.as_ref(), self.answer) else {
            return chunk.to_vec();
        };
        let policies: Vec<(usize, &crate::guard::Policy)> = self
            .entries
            .iter()
            .filter_map(|&i| set.entries.get(i).map(|e| (i, &e.policy)))
            .collect();
        let s = self.stream.get_or_insert_with(|| SseGuard::new(api));
        let mut out = Vec::with_capacity(chunk.len());
        s.feed(&policies, &mut self.vault, chunk, end, &mut out);
        if end {
            for (i, scan) in s.take_scans() {
                self.record(h, vm, set, i, scan);
            }
        }
        out
    }

    /// The names of the guardrails that acted (for the usage record), comma-separated.
    pub fn acted(&self, vm: &Vm) -> Option<String> {
        let set = vm.config().guardrails.as_ref()?;
        let names: Vec<&str> = self
            .scans
            .iter()
            .filter(|(_, s)| !s.hits.is_empty())
            .filter_map(|(i, _)| set.entries.get(*i).map(|e| e.name.as_str()))
            .collect();
        (!names.is_empty()).then(|| names.join(","))
    }
}

fn count(h: &dyn Host, vm: &Vm, m: GuardMetric) {
    vm.apply(h, Update::Add(MetricKey::Guard(m), 1));
}

/// The guardrails a request selects (by its model group, key and team); the model is only read
/// when a guardrail selects by it.
fn applicable(
    config: &crate::config::Config,
    set: &GuardSet,
    body: &[u8],
    key: Option<usize>,
) -> Vec<usize> {
    let group = if set.selects_models() {
        model_group(config, body)
    } else {
        None
    };
    let k = key.and_then(|k| config.auth.as_ref().and_then(|a| a.keys.get(k)));
    set.applicable(
        group.as_deref().unwrap_or(""),
        k.map(|k| k.alias.as_str()),
        k.and_then(|k| k.team.as_deref()),
    )
}

/// The model group a body names (`model`), for the guardrails' `models` selector.
fn model_group(config: &crate::config::Config, body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Model<'a> {
        #[serde(borrow)]
        model: Option<std::borrow::Cow<'a, str>>,
    }
    let m: Model<'_> = serde_json::from_slice(body).ok()?;
    let name = m.model?;
    let (group, _) = config.resolve_model(&name)?;
    config.models.get(group).map(|m| m.name.clone())
}

/// The external guardrails of a request (`remote` guardrails: a moderation API, a webhook,
/// Bedrock ApplyGuardrail, Azure AI Content Safety), called **before** the request is routed:
/// the provider never sees a request they block. All of a request's calls go out at once; the
/// request waits for the last verdict (each call has its guardrail's `timeout_ms`). They are not
/// run in parallel with the provider's call: the provider would see (and bill) a request that is
/// then blocked, and the answer would have to be held back until the verdicts anyway.
pub struct RemoteChecks {
    /// (token, guardrail index) of the calls still out.
    pending: Vec<(u32, usize)>,
    /// The first block (or failure of a fail-closed guardrail).
    refused: Option<GatewayError>,
    /// These check an answer (`Source::Output`), not a request.
    answer: bool,
}

impl RemoteChecks {
    /// Starts the remote guardrails that apply to this request; `None` when none does (or none
    /// could be called and all of those fail open).
    pub fn start(
        h: &dyn Host,
        vm: &Vm,
        endpoint: Endpoint,
        body: &[u8],
        key: Option<usize>,
    ) -> Option<RemoteChecks> {
        let config = vm.config();
        let set = config.guardrails.as_ref()?;
        if !set.has_remote() {
            return None;
        }
        let (req_api, _) = api_of(endpoint)?;
        let entries: Vec<usize> = applicable(config, set, body, key)
            .into_iter()
            .filter(|&i| {
                set.entries
                    .get(i)
                    .is_some_and(|e| e.remote.is_some() && e.remote_on_request)
            })
            .collect();
        if entries.is_empty() {
            return None;
        }
        let texts = match crate::guard::json::request_texts(req_api, body) {
            Ok(t) => t,
            Err(why) => {
                // Refused, never sent on unchecked (see `unreadable_error`).
                let name = entries
                    .first()
                    .and_then(|&i| set.entries.get(i))
                    .map_or("", |e| e.name.as_str());
                log::debug!("llmux: guardrail {name} could not read the request: {why}");
                return Some(RemoteChecks {
                    pending: Vec::new(),
                    refused: Some(unreadable_error(name)),
                    answer: false,
                });
            }
        };
        let checks = RemoteChecks::call(h, vm, &entries, &texts, false);
        (!checks.pending.is_empty() || checks.refused.is_some()).then_some(checks)
    }

    /// Starts the remote guardrails that check this request's whole answer (`on` has
    /// `response`) on `body`, the answer in the client's API as the provider wrote it (before
    /// the local guardrails restore the client's masked values); `None` when none applies or there is no text. An answer that is not its
    /// API's shape counts as a failure of each (`on_failure` decides).
    pub fn start_answer(
        h: &dyn Host,
        vm: &Vm,
        g: &RequestGuard,
        body: &[u8],
    ) -> Option<RemoteChecks> {
        let api = g.answer?;
        if g.remote_answer.is_empty() {
            return None;
        }
        let texts = match crate::guard::json::answer_texts(api, body) {
            Ok(t) => t,
            Err(why) => {
                log::debug!("llmux: remote guardrails could not read the answer: {why}");
                let mut checks = RemoteChecks {
                    pending: Vec::new(),
                    refused: None,
                    answer: true,
                };
                let set = vm.config().guardrails.as_ref()?;
                for &i in &g.remote_answer {
                    if let Some((e, remote)) = set
                        .entries
                        .get(i)
                        .and_then(|e| e.remote.as_ref().map(|r| (e, r)))
                    {
                        checks.failed(h, vm, i, &e.name, remote);
                    }
                }
                return checks.refused.is_some().then_some(checks);
            }
        };
        let checks = RemoteChecks::call(h, vm, &g.remote_answer, &texts, true);
        (!checks.pending.is_empty() || checks.refused.is_some()).then_some(checks)
    }

    /// Calls the remote guardrails `entries` with `texts` (none when there is no text).
    fn call(
        h: &dyn Host,
        vm: &Vm,
        entries: &[usize],
        texts: &[String],
        answer: bool,
    ) -> RemoteChecks {
        let mut checks = RemoteChecks {
            pending: Vec::new(),
            refused: None,
            answer,
        };
        let Some(set) = vm.config().guardrails.as_ref() else {
            return checks;
        };
        if texts.is_empty() {
            return checks; // nothing to check
        }
        let (dir, source) = if answer {
            ("response", crate::guard::remote::Source::Output)
        } else {
            ("request", crate::guard::remote::Source::Input)
        };
        for &i in entries {
            let Some((e, remote)) = set
                .entries
                .get(i)
                .and_then(|e| e.remote.as_ref().map(|r| (e, r)))
            else {
                continue;
            };
            count(
                h,
                vm,
                GuardMetric::Checks {
                    guardrail: i as u16,
                    dir,
                },
            );
            let call = remote.call(texts, source, h.now_nanos() / 1_000_000_000);
            let headers: Vec<(&str, &str)> = call
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match h.http_call(&remote.cluster, &headers, &call.body, remote.timeout_ms) {
                Ok(token) => checks.pending.push((token, i)),
                Err(err) => {
                    log::warn!(
                        "llmux: calling guardrail {} at cluster {} failed (host status {})",
                        e.name,
                        remote.cluster,
                        err.0
                    );
                    checks.failed(h, vm, i, &e.name, remote);
                }
            }
        }
        checks
    }

    fn failed(
        &mut self,
        h: &dyn Host,
        vm: &Vm,
        i: usize,
        name: &str,
        remote: &crate::guard::remote::Remote,
    ) {
        count(
            h,
            vm,
            GuardMetric::Errors {
                guardrail: i as u16,
            },
        );
        if remote.on_failure == crate::guard::remote::Failure::Closed && self.refused.is_none() {
            let mut e = GatewayError::new(
                503,
                "api_error",
                format!(
                    "guardrail `{name}` could not check the {} (it fails closed)",
                    self.what()
                ),
            )
            .with_code("guardrail_unavailable");
            e.param = Some(name.to_string());
            self.refused = Some(e);
        }
    }

    fn what(&self) -> &'static str {
        if self.answer {
            "answer"
        } else {
            "request"
        }
    }

    /// Every verdict is in.
    pub fn done(&self) -> bool {
        self.pending.is_empty()
    }

    /// A callout's answer; `false` when the token is not one of these checks'.
    pub fn on_call_response(&mut self, h: &dyn Host, vm: &Vm, token: u32, size: usize) -> bool {
        let Some(pos) = self.pending.iter().position(|(t, _)| *t == token) else {
            return false;
        };
        let (_, i) = self.pending.swap_remove(pos);
        let Some((e, remote)) = vm
            .config()
            .guardrails
            .as_ref()
            .and_then(|s| s.entries.get(i))
            .and_then(|e| e.remote.as_ref().map(|r| (e, r)))
        else {
            return true;
        };
        let status = crate::host::status_of(h, crate::host::HeaderMap::CallResponse).unwrap_or(0);
        let body = h
            .body(
                crate::host::Body::CallResponse,
                0,
                size.min(crate::guard::remote::MAX_ANSWER + 1),
            )
            .ok()
            .flatten()
            .unwrap_or_default();
        match remote.verdict(status, &body) {
            crate::guard::remote::Verdict::Allow => {}
            crate::guard::remote::Verdict::Block { reason } => {
                vm.apply(
                    h,
                    Update::Add(
                        MetricKey::Guard(GuardMetric::Acted {
                            guardrail: i as u16,
                            rule: 0,
                            action: "block",
                        }),
                        1,
                    ),
                );
                if self.refused.is_none() {
                    let mut err = GatewayError::new(
                        400,
                        "invalid_request_error",
                        format!(
                            "the {} was blocked by guardrail `{}` ({reason})",
                            self.what(),
                            e.name
                        ),
                    )
                    .with_code("guardrail_blocked");
                    err.param = Some(e.name.clone());
                    self.refused = Some(err);
                }
            }
            crate::guard::remote::Verdict::Failed(why) => {
                log::warn!("llmux: guardrail {} failed: {why}", e.name);
                let name = e.name.clone();
                self.failed(h, vm, i, &name, remote);
            }
        }
        true
    }

    /// Once done: the error to answer with, if a guardrail refused the request.
    pub fn refused(&mut self) -> Option<GatewayError> {
        self.refused.take()
    }
}
