//! The response cache on a request's path (docs/caching.md): the lookup once the request is
//! routed, the hit served as a local reply in the client's API (a stream for a streamed
//! request), the answer stored once complete; and the root's share: the semantic store's
//! collection, its purge of expired entries, and the stores that must outlive a request.
//!
//! Order on the request path: routing → exact lookup (shared data, two host calls at most) →
//! the request's limits (a hit still counts against rpm: it is admitted like any request) →
//! when the exact lookup missed and the request qualifies, the semantic lookup (embedding call
//! through LLMux's own providers, then the vector store's query) runs while the limits are
//! checked; the request goes upstream only when both are done and it missed. Every callout has
//! a deadline (`cache.semantic.timeout_ms` for both together): a slow or failed store is a miss.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::cache::config::{CacheConfig, Effective, Scope};
use crate::cache::key::{hex, key_of, CacheApi, RequestKey, SemanticRules};
use crate::cache::local::{Entry, LocalStore, Stored};
use crate::cache::replay::{self, CacheMark};
use crate::cache::semantic;
use crate::cache::CacheMetric;
use crate::gateway::{Endpoint, Exchange, ForwardTo, LocalResponse};
use crate::host::{status_of, Body, HeaderMap, Host, SharedData};
use crate::observe::{MetricKey, Update};

use super::vm::Vm;

/// Response header: `hit`, `semantic`, `miss` or `bypass` (the client sent `no-cache`).
pub const CACHE_HEADER: &str = "x-llmux-cache";
/// Response header of a semantic hit: the cosine similarity of the matched question.
pub const SIMILARITY_HEADER: &str = "x-llmux-cache-similarity";
/// The root's tick while a semantic store is configured (finds its collection).
pub const TICK_MS: u32 = 1000;
/// How often the root deletes expired entries from the semantic store.
const PURGE_EVERY_S: u64 = 60;

fn count(h: &dyn Host, vm: &Vm, m: CacheMetric, n: u64) {
    let key = MetricKey::Cache(m);
    match m {
        CacheMetric::LookupDurationUs => vm.apply(h, Update::Record(key, n)),
        _ => vm.apply(h, Update::Add(key, n)),
    }
}

/// What the root makes calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootCall {
    Collection,
    Purge,
    Upsert,
}

/// Per-VM cache state.
pub struct CacheVm {
    pub local: LocalStore,
    /// The semantic store's collection id, once the root has it.
    collection: RefCell<Option<String>>,
    /// Calls the root context made (their answers come to it).
    calls: RefCell<HashMap<u32, RootCall>>,
    last_purge_s: Cell<u64>,
}

impl CacheVm {
    pub fn new(c: &CacheConfig) -> CacheVm {
        CacheVm {
            local: LocalStore::new(&c.namespace, c.slots(), c.max_entry_bytes),
            collection: RefCell::new(None),
            calls: RefCell::new(HashMap::new()),
            last_purge_s: Cell::new(0),
        }
    }

    /// The root's tick: find the collection (until found), purge expired entries.
    pub fn on_tick(&self, h: &dyn Host, vm: &Vm) {
        let Some(s) = vm.config().cache.as_ref().and_then(|c| c.semantic.as_ref()) else {
            return;
        };
        let collection = self.collection.borrow().clone();
        let now_s = h.now_nanos() / 1_000_000_000;
        let pending = |kind| self.calls.borrow().values().any(|k| *k == kind);
        let call = match collection {
            None if !pending(RootCall::Collection) => {
                Some((RootCall::Collection, semantic::collection_call(s)))
            }
            Some(id)
                if now_s >= self.last_purge_s.get() + PURGE_EVERY_S
                    && !pending(RootCall::Purge) =>
            {
                self.last_purge_s.set(now_s);
                Some((RootCall::Purge, semantic::purge_call(s, &id, now_s)))
            }
            _ => None,
        };
        if let Some((kind, (path, body))) = call {
            self.dispatch(h, vm, kind, &path, &body);
        }
    }

    /// A store call from the root context (its answer comes to the root, whatever becomes of
    /// the request that made it).
    fn dispatch(&self, h: &dyn Host, vm: &Vm, kind: RootCall, path: &str, body: &[u8]) {
        let Some(s) = vm.config().cache.as_ref().and_then(|c| c.semantic.as_ref()) else {
            return;
        };
        let headers = store_headers(s, path);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // Store calls get more time than lookups: nobody waits for them.
        let timeout = s.timeout_ms.saturating_mul(4).max(1000);
        match h.http_call(&s.cluster, &headers, body, timeout) {
            Ok(token) => {
                self.calls.borrow_mut().insert(token, kind);
            }
            Err(e) => {
                log::warn!(
                    "llmux: calling the cache store at cluster {} failed (host status {})",
                    s.cluster,
                    e.0
                );
                count(h, vm, CacheMetric::Errors("semantic"), 1);
            }
        }
    }

    /// An answer to a root call; `false` when the token is not the cache's.
    pub fn on_root_answer(&self, h: &dyn Host, vm: &Vm, token: u32, size: usize) -> bool {
        let Some(kind) = self.calls.borrow_mut().remove(&token) else {
            return false;
        };
        let status = status_of(h, HeaderMap::CallResponse).unwrap_or(0);
        let ok = (200..300).contains(&status);
        match kind {
            RootCall::Collection if ok => {
                let body = h
                    .body(Body::CallResponse, 0, size.min(semantic::MAX_ANSWER_BYTES))
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                match semantic::collection_id(&body) {
                    Some(id) => {
                        log::info!("llmux: semantic cache collection {id}");
                        *self.collection.borrow_mut() = Some(id);
                    }
                    None => count(h, vm, CacheMetric::Errors("semantic"), 1),
                }
            }
            RootCall::Upsert if ok => count(h, vm, CacheMetric::Stores, 1),
            RootCall::Purge if ok => {}
            _ => {
                log::warn!("llmux: the cache store answered {status} to a {kind:?} call");
                count(h, vm, CacheMetric::Errors("semantic"), 1);
            }
        }
        true
    }
}

fn store_headers(s: &crate::cache::config::SemanticConfig, path: &str) -> Vec<(String, String)> {
    let mut headers = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), s.authority.clone()),
        ("content-type".to_string(), "application/json".to_string()),
    ];
    headers.extend(s.headers.iter().cloned());
    headers
}

/// Which lookup answered, for the header, the access log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Hit,
    Semantic(f32),
    Miss,
    /// The client sent `cache-control: no-cache` (and its key allows it): not looked up.
    Bypass,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Semantic(_) => "semantic",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
        }
    }
}

enum Phase {
    Done,
    /// Waiting for the embedding of the last user turn.
    Embedding {
        token: u32,
        exchange: Box<Exchange>,
    },
    /// Waiting for the vector store's collection id (this VM's first lookups, before the
    /// root's tick found it), with the embedding to query with.
    Collection {
        token: u32,
        embedding: Vec<f32>,
    },
    /// Waiting for the vector store's nearest neighbour.
    Query {
        token: u32,
    },
}

/// One request's cache state.
pub struct RequestCache {
    api: CacheApi,
    key: RequestKey,
    effective: Effective,
    no_store: bool,
    phase: Phase,
    pub outcome: Outcome,
    started_ns: u64,
    /// The served hit (a local reply), and what its answer had cost.
    hit: Option<(LocalResponse, (u64, u64), Option<u64>)>,
    served: bool,
    /// The exact lookup missed and what follows it was done ([`RequestCache::after_exact_miss`]).
    missed: bool,
    embedding: Option<Vec<f32>>,
    /// The client-facing answer as it goes out (`None` once over the cap: not stored).
    fill: Option<Vec<u8>>,
    fill_cap: usize,
}

/// The directives of a `cache-control` request header LLMux honours.
fn directives(value: Option<&str>) -> (bool, bool) {
    let mut no_cache = false;
    let mut no_store = false;
    for d in value.unwrap_or("").split(',') {
        match d.trim().to_ascii_lowercase().as_str() {
            "no-cache" => no_cache = true,
            "no-store" => no_store = true,
            _ => {}
        }
    }
    (no_cache, no_store)
}

fn api_of(endpoint: Endpoint) -> Option<CacheApi> {
    match endpoint {
        Endpoint::ChatCompletions => Some(CacheApi::Chat),
        Endpoint::Messages => Some(CacheApi::Messages),
        Endpoint::Embeddings => Some(CacheApi::Embeddings),
        _ => None,
    }
}

fn replay_api(api: CacheApi) -> Option<replay::Api> {
    match api {
        CacheApi::Chat => Some(replay::Api::Chat),
        CacheApi::Messages => Some(replay::Api::Messages),
        CacheApi::Embeddings => None,
    }
}

/// What one request to the cache needs besides the VM.
pub struct CacheRequestInfo<'a> {
    pub endpoint: Endpoint,
    pub body: &'a [u8],
    /// The model the client asked for.
    pub model: &'a str,
    pub key: Option<usize>,
    pub cache_control: Option<&'a str>,
}

impl RequestCache {
    /// Starts the cache's part of a routed request: computes its keys, looks up the exact store
    /// and, on a miss that qualifies, starts the semantic lookup. `None`: the cache does not
    /// apply (not configured, off for the group or key, an endpoint it does not serve).
    pub fn begin(h: &dyn Host, vm: &Vm, r: &CacheRequestInfo<'_>) -> Option<RequestCache> {
        let config = vm.config();
        let c = config.cache.as_ref()?;
        let cvm = vm.cache.as_ref()?;
        let api = api_of(r.endpoint)?;
        let (group, _) = config.resolve_model(r.model)?;
        let group_name = config.models.get(group)?.name.as_str();
        let key = r
            .key
            .and_then(|k| config.auth.as_ref().and_then(|a| a.keys.get(k)));
        let alias = key.map(|k| k.alias.as_str());
        let effective = c.effective(group_name, alias);
        if !effective.enabled {
            return None;
        }
        let (no_cache, no_store) = if effective.client_control {
            directives(r.cache_control)
        } else {
            (false, false)
        };
        let tenant = match (c.scope, key) {
            (Scope::Namespace, _) | (_, None) => String::new(),
            (Scope::Team, Some(k)) => match &k.team {
                Some(t) => format!("team:{t}"),
                None => format!("key:{}", k.alias),
            },
            (Scope::Key, Some(k)) => format!("key:{}", k.alias),
        };
        let scope = format!("{}\u{0}{tenant}", c.namespace);
        let rules = c
            .semantic
            .as_ref()
            .filter(|_| effective.semantic)
            .map(|s| SemanticRules {
                max_temperature: s.max_temperature,
                tools: s.tools,
            });
        let key = key_of(api, r.body, &scope, group_name, rules)?;
        let started_ns = h.now_nanos();
        let fill_cap = (c.max_entry_bytes as usize)
            .saturating_mul(8)
            .min(replay::MAX_ANSWER_BYTES);
        let mut rc = RequestCache {
            api,
            key,
            effective,
            no_store,
            phase: Phase::Done,
            outcome: Outcome::Miss,
            started_ns,
            hit: None,
            served: false,
            missed: false,
            embedding: None,
            fill: (!no_store).then(Vec::new),
            fill_cap,
        };
        if no_cache {
            rc.outcome = Outcome::Bypass;
            count(h, vm, CacheMetric::Lookups("bypass"), 1);
            return Some(rc);
        }
        let now_s = started_ns / 1_000_000_000;
        let local = c
            .local
            .then(|| cvm.local.lookup(&SharedData(h), &rc.key.digest, now_s));
        if let Some(e) = local.flatten() {
            if e.api == api {
                if let Some(resp) = rc.render(&e.body, Outcome::Hit) {
                    rc.hit = Some((resp, e.usage, e.cost_nanousd));
                    rc.outcome = Outcome::Hit;
                    rc.looked_up(h, vm);
                    return Some(rc);
                }
            }
        }
        Some(rc)
    }

    /// After an exact miss: starts the semantic lookup when the request qualifies, else the
    /// lookup is over (a miss).
    pub fn after_exact_miss(&mut self, h: &dyn Host, vm: &Vm, semantic_allowed: bool) {
        if self.hit.is_some() || self.outcome == Outcome::Bypass || self.missed {
            return;
        }
        self.missed = true;
        if semantic_allowed && self.key.semantic.is_some() {
            self.embed(h, vm);
        }
        if matches!(self.phase, Phase::Done) {
            self.looked_up(h, vm);
        }
    }

    /// The exact store had the answer.
    pub fn exact_hit(&self) -> bool {
        self.outcome == Outcome::Hit && self.hit.is_some()
    }

    /// The request is streamed (a hit replays as a stream).
    pub fn stream(&self) -> bool {
        self.key.stream
    }

    /// A lookup is under way (the request waits for it).
    pub fn pending(&self) -> bool {
        !matches!(self.phase, Phase::Done)
    }

    /// The hit to serve, once (the request's local reply).
    pub fn take_hit(&mut self) -> Option<LocalResponse> {
        let (resp, _, _) = self.hit.as_ref()?;
        self.served = true;
        Some(resp.clone())
    }

    /// The request was answered from the cache.
    pub fn served(&self) -> bool {
        self.served
    }

    fn looked_up(&self, h: &dyn Host, vm: &Vm) {
        count(h, vm, CacheMetric::Lookups(self.outcome.name()), 1);
        let us = h.now_nanos().saturating_sub(self.started_ns) / 1000;
        count(h, vm, CacheMetric::LookupDurationUs, us);
    }

    /// The response for a stored canonical answer, in the request's shape.
    fn render(&self, canonical: &[u8], outcome: Outcome) -> Option<LocalResponse> {
        let similarity = match outcome {
            Outcome::Semantic(s) => Some(s),
            _ => None,
        };
        let mark = CacheMark {
            kind: outcome.name(),
            similarity,
        };
        let (body, content_type) = match replay_api(self.api) {
            Some(api) if self.key.stream => (
                replay::render_stream(api, canonical, &mark, self.key.include_usage)?,
                "text/event-stream",
            ),
            // A stored answer is a JSON object LLMux serialised: the mark goes before its last
            // brace (no parse on a hit).
            _ => (splice_mark(canonical, &mark)?, "application/json"),
        };
        let mut headers = vec![
            ("content-type".to_string(), content_type.to_string()),
            (CACHE_HEADER.to_string(), outcome.name().to_string()),
        ];
        if let Some(s) = similarity {
            headers.push((SIMILARITY_HEADER.to_string(), format!("{s:.4}")));
        }
        Some(LocalResponse {
            status: 200,
            headers,
            body,
        })
    }

    /// Starts the embedding call for the semantic key (through the embedding model's first
    /// deployment). Any failure leaves the lookup done, as a miss.
    fn embed(&mut self, h: &dyn Host, vm: &Vm) {
        let Some(text) = self.key.semantic.as_ref().map(|s| s.text.as_str()) else {
            return;
        };
        match start_embedding(h, vm, text) {
            Ok((token, exchange)) => {
                self.phase = Phase::Embedding {
                    token,
                    exchange: Box::new(exchange),
                }
            }
            Err(why) => {
                log::warn!("llmux: the semantic cache's embedding call failed: {why}");
                count(h, vm, CacheMetric::Errors("embedding"), 1);
            }
        }
    }

    /// A callout's answer; `true` when it was the cache's and the lookup is now done.
    pub fn on_call_response(&mut self, h: &dyn Host, vm: &Vm, token: u32, size: usize) -> bool {
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        match phase {
            Phase::Embedding { token: t, exchange } if t == token => {
                match read_embedding(h, *exchange, size) {
                    Ok(v) => {
                        self.query(h, vm, v);
                    }
                    Err(why) => {
                        log::warn!("llmux: the semantic cache's embedding failed: {why}");
                        count(h, vm, CacheMetric::Errors("embedding"), 1);
                    }
                }
            }
            Phase::Collection {
                token: t,
                embedding,
            } if t == token => {
                let status = status_of(h, HeaderMap::CallResponse).unwrap_or(0);
                let id = if (200..300).contains(&status) && size <= semantic::MAX_ANSWER_BYTES {
                    h.body(Body::CallResponse, 0, size)
                        .ok()
                        .flatten()
                        .and_then(|b| semantic::collection_id(&b))
                } else {
                    None
                };
                match (id, vm.cache.as_ref()) {
                    (Some(id), Some(cvm)) => {
                        *cvm.collection.borrow_mut() = Some(id);
                        self.query(h, vm, embedding);
                    }
                    _ => {
                        log::warn!(
                            "llmux: the semantic cache store answered {status} for its collection"
                        );
                        count(h, vm, CacheMetric::Errors("semantic"), 1);
                    }
                }
            }
            Phase::Query { token: t } if t == token => self.on_query(h, vm, size),
            other => {
                self.phase = other;
                return false;
            }
        }
        if self.pending() {
            return false;
        }
        self.looked_up(h, vm);
        true
    }

    /// The nearest-neighbour query (or, before the collection is known, its lookup first).
    fn query(&mut self, h: &dyn Host, vm: &Vm, embedding: Vec<f32>) {
        let (Some(s), Some(cvm), Some(sk)) = (
            vm.config().cache.as_ref().and_then(|c| c.semantic.as_ref()),
            vm.cache.as_ref(),
            self.key.semantic.as_ref(),
        ) else {
            return;
        };
        let now_ns = h.now_nanos();
        // The rest of the lookup's time budget.
        let spent_ms = now_ns.saturating_sub(self.started_ns) / 1_000_000;
        let left = u64::from(s.timeout_ms).saturating_sub(spent_ms);
        if left == 0 {
            log::debug!("llmux: the semantic cache's lookup ran out of time");
            count(h, vm, CacheMetric::Errors("semantic"), 1);
            return;
        }
        let collection = cvm.collection.borrow().clone();
        let (path, body) = match &collection {
            Some(c) => semantic::query_call(s, c, &embedding, &sk.context, now_ns / 1_000_000_000),
            // Not found by the root's tick yet: this request asks (get-or-create is idempotent).
            None => semantic::collection_call(s),
        };
        let headers = store_headers(s, &path);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match h.http_call(&s.cluster, &headers, &body, left as u32) {
            Ok(token) if collection.is_some() => {
                self.embedding = Some(embedding);
                self.phase = Phase::Query { token };
            }
            Ok(token) => self.phase = Phase::Collection { token, embedding },
            Err(e) => {
                log::warn!(
                    "llmux: the semantic cache query failed (host status {})",
                    e.0
                );
                count(h, vm, CacheMetric::Errors("semantic"), 1);
            }
        }
    }

    fn on_query(&mut self, h: &dyn Host, vm: &Vm, size: usize) {
        let status = status_of(h, HeaderMap::CallResponse).unwrap_or(0);
        let body = if (200..300).contains(&status) && size <= semantic::MAX_ANSWER_BYTES {
            h.body(Body::CallResponse, 0, size).ok().flatten()
        } else {
            None
        };
        let Some(body) = body else {
            log::warn!("llmux: the semantic cache store answered {status}");
            count(h, vm, CacheMetric::Errors("semantic"), 1);
            return;
        };
        let Some(n) = semantic::nearest(&body) else {
            return; // nothing stored for this context: a miss
        };
        if n.similarity < self.effective.threshold || n.api != Some(self.api) {
            return;
        }
        let outcome = Outcome::Semantic(n.similarity);
        if let Some(resp) = self.render(&n.document, outcome) {
            self.hit = Some((resp, n.usage, n.cost_nanousd));
            self.outcome = outcome;
        }
    }

    /// The client-facing answer's bytes as they go out (kept up to the cap).
    pub fn fill(&mut self, bytes: &[u8]) {
        if let Some(f) = &mut self.fill {
            if f.len() + bytes.len() > self.fill_cap {
                self.fill = None;
            } else {
                f.extend_from_slice(bytes);
            }
        }
    }

    /// What to say in the `x-llmux-cache` header of an answer from the provider.
    pub fn header_value(&self) -> &'static str {
        self.outcome.name()
    }

    /// The request is over. A hit counts what it saved; a miss whose answer is complete and
    /// successful (`ok`) is stored, in the exact store and, when it qualified, the semantic one.
    pub fn complete(
        &mut self,
        h: &dyn Host,
        vm: &Vm,
        context_id: u32,
        ok: bool,
        usage: Option<&crate::providers::Usage>,
        cost_nanousd: Option<u64>,
    ) {
        if self.served {
            if let Some((_, _, Some(cost))) = &self.hit {
                count(h, vm, CacheMetric::SavedNanoUsd, *cost);
            }
            return;
        }
        if !ok || self.no_store {
            return;
        }
        let (Some(c), Some(cvm)) = (vm.config().cache.as_ref(), vm.cache.as_ref()) else {
            return;
        };
        let Some(fill) = self.fill.take() else {
            count(h, vm, CacheMetric::TooLarge, 1); // over the cap while it streamed
            return;
        };
        let canonical = match replay_api(self.api) {
            Some(api) if self.key.stream => replay::canonical_from_stream(api, &fill),
            Some(api) => replay::canonical_from_plain(api, &fill),
            None => canonical_embeddings(&fill),
        };
        let Some(canonical) = canonical else {
            return; // not a complete answer (a partial stream, an error in a 200)
        };
        let now_s = h.now_nanos() / 1_000_000_000;
        let usage = usage.map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
        let entry = Entry {
            digest: self.key.digest,
            expires_unix: now_s + u64::from(self.effective.ttl_s),
            stored_unix: now_s,
            usage,
            cost_nanousd,
            api: self.api,
            body: canonical,
        };
        let stored = if c.local {
            cvm.local.store(&SharedData(h), &entry, now_s)
        } else {
            Stored::Conflict // not kept here: the semantic store below has it
        };
        match stored {
            Stored::Written { evicted } => {
                count(h, vm, CacheMetric::Stores, 1);
                if evicted {
                    count(h, vm, CacheMetric::Evictions, 1);
                }
            }
            Stored::TooLarge => count(h, vm, CacheMetric::TooLarge, 1),
            Stored::Conflict => {}
            Stored::Failed => count(h, vm, CacheMetric::Errors("local"), 1),
        }
        self.store_semantic(h, vm, (c, cvm), &entry, context_id);
    }

    fn store_semantic(
        &self,
        h: &dyn Host,
        vm: &Vm,
        (c, cvm): (&CacheConfig, &CacheVm),
        e: &Entry,
        context_id: u32,
    ) {
        let (Some(s), Some(sk), Some(embedding)) = (
            c.semantic.as_ref(),
            self.key.semantic.as_ref(),
            self.embedding.as_ref(),
        ) else {
            return;
        };
        let Some(collection) = cvm.collection.borrow().clone() else {
            return;
        };
        let Ok(document) = std::str::from_utf8(&e.body) else {
            return;
        };
        let id = hex(&e.digest);
        let (path, body) = semantic::upsert_call(
            s,
            &collection,
            &semantic::Upsert {
                id: &id,
                embedding,
                document,
                context: &sk.context,
                api: e.api,
                expires_unix: e.expires_unix,
                stored_unix: e.stored_unix,
                usage: e.usage,
                cost_nanousd: e.cost_nanousd,
            },
        );
        // From the root context: the store must not be cancelled when this request ends.
        let _ = h.set_effective_context(vm.root_id);
        cvm.dispatch(h, vm, RootCall::Upsert, &path, &body);
        let _ = h.set_effective_context(context_id);
    }
}

/// The embedding call for `text`: (token, the exchange that reads its answer).
fn start_embedding(h: &dyn Host, vm: &Vm, text: &str) -> Result<(u32, Exchange), String> {
    let config = vm.config();
    let s = config
        .cache
        .as_ref()
        .and_then(|c| c.semantic.as_ref())
        .ok_or("no semantic store")?;
    let (model_index, matched) = config
        .resolve_model(&s.embedding_model)
        .ok_or("the embedding model is not configured")?;
    let body = semantic::embedding_request(&s.embedding_model, text);
    let gw = &vm.gateway;
    let fwd = gw
        .forward_body(
            &body,
            &ForwardTo {
                endpoint: Endpoint::Embeddings,
                model_index,
                deployment_index: 0,
                wildcard: matched,
                now_unix: h.now_nanos() / 1_000_000_000,
                attempt: false,
            },
        )
        .map_err(|e| e.message)?;
    if fwd.token.is_some() {
        return Err("the embedding deployment needs a fetched access token".into());
    }
    let deployment = config
        .models
        .get(model_index)
        .and_then(|m| m.deployments.first())
        .ok_or("the embedding model has no deployment")?;
    let provider = config.provider(deployment);
    let headers = super::apply::callout_headers(config, provider, &fwd)?;
    let out = fwd.body.as_deref().unwrap_or(&body);
    let token = h
        .http_call(&provider.cluster, &headers, out, s.timeout_ms)
        .map_err(|e| {
            format!(
                "calling cluster {} failed (host status {})",
                provider.cluster, e.0
            )
        })?;
    Ok((token, fwd.exchange))
}

/// The vector in the embedding call's answer, translated to OpenAI's shape by its exchange.
fn read_embedding(h: &dyn Host, mut exchange: Exchange, size: usize) -> Result<Vec<f32>, String> {
    if size > semantic::MAX_ANSWER_BYTES {
        return Err(format!(
            "the answer is larger than {} bytes",
            semantic::MAX_ANSWER_BYTES
        ));
    }
    let out = super::apply::callout_answer(h, &mut exchange, size)?;
    semantic::embedding_of(&out).ok_or_else(|| "no embedding in the answer".to_string())
}

/// An embeddings answer as stored: the OpenAI list as the client got it.
fn canonical_embeddings(body: &[u8]) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let o = v.as_object_mut()?;
    if o.get("object").and_then(|x| x.as_str()) != Some("list") || !o.contains_key("data") {
        return None;
    }
    o.remove("llmux_cache");
    serde_json::to_vec(&v).ok()
}

/// `canonical` (a JSON object) with `"llmux_cache": {...}` added as its last field.
fn splice_mark(canonical: &[u8], mark: &CacheMark) -> Option<Vec<u8>> {
    let body = canonical.strip_suffix(b"}")?;
    let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[open] != b'{' {
        return None;
    }
    let mut m = serde_json::json!({"kind": mark.kind});
    if let (Some(s), Some(o)) = (mark.similarity, m.as_object_mut()) {
        // The f32's shortest decimal (0.97, not 0.9700000286102295).
        let v = s
            .to_string()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64);
        o.insert(
            "similarity".into(),
            v.map_or(serde_json::Value::Null, serde_json::Value::Number),
        );
    }
    let m = serde_json::to_vec(&m).ok()?;
    let empty = body[open + 1..].iter().all(u8::is_ascii_whitespace);
    let mut out = Vec::with_capacity(canonical.len() + m.len() + 16);
    out.extend_from_slice(body);
    out.extend_from_slice(if empty {
        b"\"llmux_cache\":"
    } else {
        b",\"llmux_cache\":"
    });
    out.extend_from_slice(&m);
    out.push(b'}');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_directives() {
        assert_eq!(directives(None), (false, false));
        assert_eq!(directives(Some("no-cache")), (true, false));
        assert_eq!(directives(Some("max-age=0, No-Store")), (false, true));
        assert_eq!(directives(Some("no-cache,no-store")), (true, true));
    }

    #[test]
    fn embeddings_round_trip_with_the_mark() {
        let body = br#"{"object":"list","data":[{"embedding":[0.5]}],"model":"m"}"#;
        let c = canonical_embeddings(body).unwrap();
        let marked = splice_mark(
            &c,
            &CacheMark {
                kind: "hit",
                similarity: None,
            },
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&marked).unwrap();
        assert_eq!(v["llmux_cache"]["kind"], "hit");
        assert_eq!(canonical_embeddings(&marked).unwrap(), c);
        assert!(canonical_embeddings(br#"{"error":{}}"#).is_none());
        let mark = CacheMark {
            kind: "semantic",
            similarity: Some(0.97),
        };
        let v: serde_json::Value =
            serde_json::from_slice(&splice_mark(b"{}", &mark).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"llmux_cache": {"kind": "semantic", "similarity": 0.97}})
        );
        assert!(splice_mark(b"[1]", &mark).is_none());
        assert!(splice_mark(b"", &mark).is_none());
    }
}
