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
        Endpoint::Responses => Some((ReqApi::Responses, None)),
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
        let group = model_group(config, body);
        let k = key.and_then(|k| config.auth.as_ref().and_then(|a| a.keys.get(k)));
        let entries = set.applicable(
            group.as_deref().unwrap_or(""),
            k.map(|k| k.alias.as_str()),
            k.and_then(|k| k.team.as_deref()),
        );
        if entries.is_empty() {
            return Ok(None);
        }
        let mut g = RequestGuard {
            entries,
            vault: Vault::new(),
            answer,
            scans: Vec::new(),
            stream: None,
        };
        let mut current: Option<Vec<u8>> = None;
        for &i in &g.entries.clone() {
            let Some(e) = set.entries.get(i) else {
                continue;
            };
            if e.policy.request().is_empty() {
                continue;
            }
            count(
                h,
                vm,
                GuardMetric::Checks {
                    guardrail: i as u16,
                    dir: "request",
                },
            );
            let input = current.as_deref().unwrap_or(body);
            match scan_request(&e.policy, req_api, input, &mut g.vault) {
                Ok(out) => {
                    let blocked = out.scan.blocked.clone();
                    g.record(h, vm, set, i, out.scan);
                    if let Some(hit) = blocked {
                        return Err(blocked_error(&hit, false));
                    }
                    if let Some(b) = out.body {
                        current = Some(b);
                    }
                }
                Err(why) => {
                    log::debug!(
                        "llmux: guardrail {} could not read the request: {why}",
                        e.name
                    );
                    count(
                        h,
                        vm,
                        GuardMetric::Errors {
                            guardrail: i as u16,
                        },
                    );
                }
            }
        }
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
        let mut current: Option<Vec<u8>> = None;
        let entries = self.entries.clone();
        // Restoring is done once, by the last guardrail (each scan restores what the vault has).
        for &i in &entries {
            let Some(e) = set.entries.get(i) else {
                continue;
            };
            count(
                h,
                vm,
                GuardMetric::Checks {
                    guardrail: i as u16,
                    dir: "response",
                },
            );
            let input = current.as_deref().unwrap_or(body);
            match scan_answer(&e.policy, api, input, &mut self.vault) {
                Ok(out) => {
                    let blocked = out.scan.blocked.clone();
                    self.record(h, vm, set, i, out.scan);
                    if let Some(hit) = blocked {
                        return Err(blocked_error(&hit, true));
                    }
                    if let Some(b) = out.body {
                        current = Some(b);
                    }
                }
                Err(why) => {
                    log::debug!(
                        "llmux: guardrail {} could not read the answer: {why}",
                        e.name
                    );
                    count(
                        h,
                        vm,
                        GuardMetric::Errors {
                            guardrail: i as u16,
                        },
                    );
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
