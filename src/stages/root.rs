//! The root context: reads and checks the configuration, makes the per-VM state, creates each
//! stream's stage, drives the tick (export batches, token fetches) and takes the root's callout
//! answers.

use std::collections::HashMap;
use std::rc::Rc;

use super::attempt::Attempt;
use super::request::Request;
use super::vm::{Registry, Vm};
use crate::config::{Config, ProcessEnv};
use crate::host::{status_of, Body, HeaderMap, Host};
use crate::observe::export::encode;
use crate::observe::{MetricKey, Update};

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
    /// The body watch ended and its tick was given back.
    watch_over: bool,
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
            watch_over: false,
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
        let vm = Vm::new(config, h.now_nanos(), self.registry.clone(), self.id);
        // Ticks drive the export (a full batch waits at most one tick) and the body watch.
        let _ = h.set_tick_period_ms(vm.base_tick_ms());
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
            vm.body_watch.on_tick(h, h.now_nanos());
            if !vm.body_watch.watching() && !self.watch_over {
                // Bodies arrive: the watch's tick is no longer needed.
                self.watch_over = true;
                let _ = h.set_tick_period_ms(vm.base_tick_ms());
            }
            super::token::on_tick(h, &vm.tokens(), self.id);
            if let Some(c) = &vm.cache {
                c.on_tick(h, vm);
            }
        }
    }

    pub fn on_http_call_response(&mut self, h: &dyn Host, token: u32, body_size: usize) {
        let Some(vm) = self.vm.clone() else {
            return;
        };
        if super::token::on_http_call_response(h, &vm.tokens(), self.id, token, body_size) {
            return;
        }
        if let Some(c) = &vm.cache {
            if c.on_root_answer(h, &vm, token, body_size) {
                return;
            }
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
