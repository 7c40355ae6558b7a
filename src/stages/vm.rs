//! Per-VM state and the root's work: one [`Vm`] per configured filter in a worker (the gateway,
//! metric ids, the usage exporter, the token cache's waiters), and [`Root`], which configures it,
//! drives the tick (export batches, token fetches) and takes the root's callout answers.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use super::attempt::{Attempt, Registry};
use super::request::Request;
use crate::config::{Config, ProcessEnv};
use crate::gateway::Gateway;
use crate::host::{status_of, Body, HeaderMap, Host};
use crate::observe::export::{encode, Batcher};
use crate::observe::{Catalog, MetricKey, Update};

/// Per-VM state shared by the VM's HTTP contexts.
pub struct Vm {
    pub gateway: Gateway,
    catalog: Catalog,
    /// Metric ids, defined lazily the first time a label set is seen (`None`: define failed).
    metrics: RefCell<HashMap<MetricKey, Option<u32>, BuildHasherDefault<KeyHasher>>>,
    /// Usage records waiting for export (per VM; sent from the root context's tick).
    pub(crate) exporter: Option<RefCell<Batcher>>,
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
}

impl Vm {
    pub fn new(config: Config, now_ns: u64, registry: Rc<Registry>) -> Vm {
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
        }
    }

    pub fn config(&self) -> &Config {
        &self.gateway.config
    }

    fn metric_id(&self, h: &dyn Host, key: MetricKey) -> Option<u32> {
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

/// The root context: configuration, tick, the root's callouts.
pub struct Root {
    /// This root context's id (token fetches resume requests from it).
    pub id: u32,
    pub vm: Option<Rc<Vm>>,
    /// This root is the upstream stage (`{"stage": "upstream"}`): it makes the attempts the
    /// downstream stage of the same VM planned.
    pub upstream: bool,
    registry: Rc<Registry>,
    /// Export calls in flight: token → records in the batch.
    in_flight: HashMap<u32, u64>,
}

impl Root {
    /// `registry` is the VM's (every root of the VM gets the same one).
    pub fn new(id: u32, registry: Rc<Registry>) -> Root {
        Root {
            id,
            vm: None,
            upstream: false,
            registry,
            in_flight: HashMap::new(),
        }
    }

    /// Reads and checks the configuration; `false` refuses it (the host keeps the old one, or
    /// fails the listener).
    pub fn configure(&mut self, h: &dyn Host, size: usize) -> bool {
        let bytes = match h.body(Body::Configuration, 0, size) {
            Ok(Some(b)) => b,
            Ok(None) => {
                log::error!("invalid LLMux configuration: the filter's `configuration` is empty");
                return false;
            }
            Err(e) => {
                log::error!(
                    "LLMux could not read its configuration (host status {})",
                    e.0
                );
                return false;
            }
        };
        if let Ok(serde_json::Value::Object(o)) = serde_json::from_slice(&bytes) {
            if let Some(stage) = o.get("stage") {
                if stage != "upstream" || o.len() != 1 {
                    log::error!(
                        "invalid LLMux configuration at `stage`: the upstream stage's configuration is exactly {{\"stage\": \"upstream\"}}"
                    );
                    return false;
                }
                log::info!("LLMux upstream stage configured");
                self.upstream = true;
                return true;
            }
        }
        match Config::parse(&bytes, &ProcessEnv) {
            Ok(config) => {
                log::info!(
                    "LLMux configured: {} providers, {} models",
                    config.providers.len(),
                    config.models.len()
                );
                self.vm = Some(Rc::new(self.build(h, config)));
                true
            }
            Err(e) => {
                log::error!("{e}");
                false
            }
        }
    }

    /// The VM state for a parsed configuration.
    pub fn build(&self, h: &dyn Host, config: Config) -> Vm {
        if let Some(e) = &config.export {
            // Ticks drive the export; a full batch waits at most one tick.
            let _ = h.set_tick_period_ms(e.flush_interval_ms.min(200));
        }
        let vm = Vm::new(config, h.now_nanos(), self.registry.clone());
        if vm.exporter.is_some() {
            // Exporter series exist from the start (at 0), so rates and alerts work.
            for k in [
                MetricKey::ExportRecordsSent,
                MetricKey::ExportRecordsFailed,
                MetricKey::ExportRecordsDropped,
                MetricKey::ExportBatches,
            ] {
                vm.metric_id(h, k);
            }
        }
        vm
    }

    /// A new HTTP stream of the downstream stage.
    pub fn new_request(&self, context_id: u32) -> Request {
        Request::new(context_id, self.vm.clone())
    }

    /// A new attempt of the upstream stage (for a root with [`Root::upstream`]).
    pub fn new_attempt(&self, context_id: u32) -> Attempt {
        Attempt::new(context_id, self.registry.clone())
    }

    pub fn on_tick(&mut self, h: &dyn Host) {
        self.flush_due(h);
        if let Some(vm) = &self.vm {
            super::token::on_tick(h, vm, self.id);
        }
    }

    pub fn on_http_call_response(&mut self, h: &dyn Host, token: u32, body_size: usize) {
        let Some(vm) = self.vm.clone() else {
            return;
        };
        if super::token::on_http_call_response(h, &vm, self.id, token, body_size) {
            return;
        }
        let Some(n) = self.in_flight.remove(&token) else {
            return;
        };
        if let Some(b) = &vm.exporter {
            b.borrow_mut().sent();
        }
        // No headers (timeout, reset, no healthy host) reads as no status: a failure.
        let status = status_of(h, HeaderMap::CallResponse).unwrap_or(0);
        vm.apply(h, Update::Add(MetricKey::ExportBatches, 1));
        if (200..300).contains(&status) {
            vm.apply(h, Update::Add(MetricKey::ExportRecordsSent, n));
        } else {
            log::warn!("llmux: exporting {n} usage records failed (collector status {status})");
            vm.apply(h, Update::Add(MetricKey::ExportRecordsFailed, n));
        }
    }

    /// Sends every batch that is due (full, or waited long enough). Never on a request's path.
    fn flush_due(&mut self, h: &dyn Host) {
        let Some(vm) = self.vm.clone() else {
            return;
        };
        let (Some(batcher), Some(cfg)) = (&vm.exporter, &vm.gateway.config.export) else {
            return;
        };
        let now = h.now_nanos();
        loop {
            let Some(batch) = batcher.borrow_mut().take_due(now) else {
                return;
            };
            let n = batch.len() as u64;
            let body = encode(cfg, &batch);
            let mut headers: Vec<(&str, &str)> = vec![
                (":method", "POST"),
                (":path", &cfg.path),
                (":authority", &cfg.authority),
                ("content-type", "application/json"),
            ];
            headers.extend(cfg.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            match h.http_call(&cfg.cluster, &headers, &body, cfg.timeout_ms) {
                Ok(token) => {
                    self.in_flight.insert(token, n);
                }
                Err(e) => {
                    batcher.borrow_mut().sent();
                    log::warn!(
                        "llmux: exporting {n} usage records to cluster {} failed (host status {})",
                        cfg.cluster,
                        e.0
                    );
                    vm.apply(h, Update::Add(MetricKey::ExportRecordsFailed, n));
                }
            }
        }
    }
}
