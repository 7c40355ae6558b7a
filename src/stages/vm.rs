//! Per-VM state: one [`Vm`] per configured filter in a worker (the gateway, metric ids, the
//! usage exporter, the token cache's waiters), and the [`Registry`] of requests the downstream
//! stage planned for the upstream stage of the same VM.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::gateway::{Attempts, Exchange};
use crate::host::Host;
use crate::observe::export::Batcher;
use crate::observe::{Catalog, MetricKey, Update};

/// Per-VM state shared by the VM's HTTP contexts.
pub struct Vm {
    pub gateway: Gateway,
    catalog: Catalog,
    /// Metric ids, defined lazily the first time a label set is seen (`None`: define failed).
    metrics: RefCell<HashMap<MetricKey, Option<u32>, BuildHasherDefault<KeyHasher>>>,
    /// Usage records waiting for export (per VM; sent from the root context's tick).
    pub exporter: Option<RefCell<Batcher>>,
    /// xorshift64 state for weighted deployment choice.
    rng: Cell<u64>,
    /// Ids of requests handed to the upstream stage (unique in this VM).
    attempt_seq: Cell<u64>,
    /// The VM memory size last written to the gauge.
    vm_memory_reported: Cell<u64>,
    /// Requests planned for the upstream stage (shared with the VM's upstream root).
    pub(crate) registry: Rc<Registry>,
    /// Requests waiting for a Vertex access token, and the fetches under way.
    pub(crate) tokens: RefCell<super::token::State>,
    /// The downstream root context's id (callouts that must outlive a request go from it).
    pub(crate) root_id: u32,
    /// Requests paused for a body Envoy may be withholding (until the first body arrives).
    pub(crate) body_watch: super::body_watch::BodyWatch,
    /// The response cache's per-VM state (`cache` configured).
    pub(crate) cache: Option<super::cache::CacheVm>,
}

impl Vm {
    pub fn new(config: Config, now_ns: u64, registry: Rc<Registry>, root_id: u32) -> Vm {
        let cache = config.cache.as_ref().map(super::cache::CacheVm::new);
        let exporter = config
            .export
            .as_ref()
            .map(|e| RefCell::new(Batcher::new(e)));
        Vm {
            catalog: Catalog::new(&config),
            gateway: Gateway::new(config, now_ns / 1_000_000_000),
            metrics: RefCell::new(HashMap::default()),
            exporter,
            rng: Cell::new(now_ns | 1),
            attempt_seq: Cell::new(0),
            vm_memory_reported: Cell::new(0),
            registry,
            tokens: RefCell::new(super::token::State::default()),
            root_id,
            body_watch: super::body_watch::BodyWatch::default(),
            cache,
        }
    }

    pub fn config(&self) -> &Config {
        &self.gateway.config
    }

    pub(crate) fn metric_id(&self, h: &dyn Host, key: MetricKey) -> Option<u32> {
        let mut m = self.metrics.borrow_mut();
        *m.entry(key).or_insert_with(|| {
            let name = self.catalog.name(&key);
            match h.define_metric(key.metric_type(), &name) {
                Ok(id) => Some(id),
                Err(e) => {
                    log::warn!("llmux: defining metric {name} failed (host status {})", e.0);
                    None
                }
            }
        })
    }

    pub fn apply(&self, h: &dyn Host, u: Update) {
        match u {
            Update::Add(k, n) => {
                if let Some(id) = self.metric_id(h, k) {
                    let _ = h.increment_metric(id, n);
                }
            }
            Update::Record(k, v) => {
                if let Some(id) = self.metric_id(h, k) {
                    let _ = h.record_metric(id, v);
                }
            }
        }
    }

    /// The VM's Vertex token work.
    pub(crate) fn tokens(&self) -> super::token::Tokens<'_> {
        super::token::Tokens {
            config: &self.gateway.config,
            state: &self.tokens,
            base_tick_ms: self.base_tick_ms(),
        }
    }

    /// The root's tick period when no token fetch is under way: the exporter's flush (at most
    /// 200 ms) and, while it is on, the body watch's; 0 (no tick) when neither needs one.
    pub(crate) fn base_tick_ms(&self) -> u32 {
        let export = self
            .gateway
            .config
            .export
            .as_ref()
            .map(|e| e.flush_interval_ms.min(200));
        let watch = self
            .body_watch
            .watching()
            .then_some(super::body_watch::TICK_MS);
        // The semantic cache's collection is looked up (and expired entries purged) from the tick.
        let cache = self
            .gateway
            .config
            .cache
            .as_ref()
            .and_then(|c| c.semantic.as_ref())
            .map(|_| super::cache::TICK_MS);
        [export, watch, cache]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(0)
    }

    pub(crate) fn next_random(&self) -> u32 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        (x >> 32) as u32
    }

    pub(crate) fn next_attempt_id(&self) -> u64 {
        let id = self.attempt_seq.get().wrapping_add(1);
        self.attempt_seq.set(id);
        id
    }

    /// Writes the VM memory gauge when the linear memory grew (rarely: a host call only then).
    pub(crate) fn report_memory(&self, h: &dyn Host) {
        let bytes = h.vm_memory_bytes();
        if self.vm_memory_reported.replace(bytes) != bytes {
            self.apply(h, Update::Record(MetricKey::VmMemoryBytes, bytes));
        }
    }
}

/// A multiply-rotate hasher for metric keys: a few looked up per request, from a set the config
/// bounds (no untrusted input), where SipHash's flood resistance only costs time.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Request header naming the registry entry (set by the downstream stage, removed by the
/// attempts listener's route before the request leaves Envoy).
pub const ATTEMPT_ID_HEADER: &str = "x-llmux-attempt-id";
/// One request's attempts, shared by the downstream stage and every attempt (same worker, same
/// VM, so plain `Rc`).
pub struct Pending {
    pub vm: Rc<Vm>,
    pub attempts: Attempts,
    /// Request headers the previous attempt set (removed before the next one sets its own).
    pub prev_set: Vec<String>,
    /// The previous attempt ended without a decision (reset or timeout at the router).
    pub undecided: bool,
    /// The attempt that produced the client's answer: its exchange, for metrics and records.
    pub final_exchange: Option<Exchange>,
}

/// The requests of one VM planned for the upstream stage, by attempt id. Both stages of a VM
/// share it (the same worker, so plain `Rc`).
#[derive(Default)]
pub struct Registry(RefCell<HashMap<u64, Rc<RefCell<Pending>>>>);

impl Registry {
    pub fn register(&self, id: u64, p: Pending) {
        self.0.borrow_mut().insert(id, Rc::new(RefCell::new(p)));
    }

    pub fn lookup(&self, id: u64) -> Option<Rc<RefCell<Pending>>> {
        self.0.borrow().get(&id).cloned()
    }

    pub fn unregister(&self, id: u64) -> Option<Rc<RefCell<Pending>>> {
        self.0.borrow_mut().remove(&id)
    }

    /// Requests registered and not yet over.
    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }
}
