//! Export of usage records to an HTTP collector: per-VM batching and the payload of each format.
//!
//! Records are queued per Wasm VM (one per Envoy worker) and sent from the root context's tick
//! with `dispatch_http_call`, never on a request's path. A batch leaves when `batch_size` records
//! are queued or the oldest has waited `flush_interval_ms`; at most [`MAX_IN_FLIGHT`] batches are
//! outstanding, and past `max_queue` new records are dropped (and counted).

use serde::Serialize;
use std::collections::VecDeque;

use super::record::UsageRecord;
use crate::config::{ExportConfig, ExportFormat};

pub const MAX_IN_FLIGHT: u32 = 4;

#[derive(Debug)]
pub struct Batcher {
    batch_size: usize,
    max_queue: usize,
    flush_interval_ns: u64,
    queue: VecDeque<UsageRecord>,
    /// When the oldest queued record was queued.
    oldest_ns: u64,
    in_flight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The queue is full: the record was dropped.
    Dropped,
}

impl Batcher {
    pub fn new(cfg: &ExportConfig) -> Self {
        Batcher {
            batch_size: cfg.batch_size.max(1) as usize,
            max_queue: cfg.max_queue.max(cfg.batch_size).max(1) as usize,
            flush_interval_ns: u64::from(cfg.flush_interval_ms) * 1_000_000,
            queue: VecDeque::new(),
            oldest_ns: 0,
            in_flight: 0,
        }
    }

    pub fn push(&mut self, r: UsageRecord, now_ns: u64) -> Pushed {
        if self.queue.len() >= self.max_queue {
            return Pushed::Dropped;
        }
        if self.queue.is_empty() {
            self.oldest_ns = now_ns;
        }
        self.queue.push_back(r);
        Pushed::Queued
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The next batch to send now, if one is due: a full batch, or what is queued once the oldest
    /// record has waited the flush interval. The caller sends it and then calls
    /// [`Batcher::sent`] when the answer (or a failure) comes back.
    pub fn take_due(&mut self, now_ns: u64) -> Option<Vec<UsageRecord>> {
        if self.queue.is_empty() || self.in_flight >= MAX_IN_FLIGHT {
            return None;
        }
        let full = self.queue.len() >= self.batch_size;
        let waited = now_ns.saturating_sub(self.oldest_ns) >= self.flush_interval_ns;
        if !(full || waited) {
            return None;
        }
        let n = self.queue.len().min(self.batch_size);
        let batch: Vec<UsageRecord> = self.queue.drain(..n).collect();
        // What remains starts a new wait.
        self.oldest_ns = now_ns;
        self.in_flight += 1;
        Some(batch)
    }

    /// A batch taken with [`Batcher::take_due`] was answered, failed, or could not be sent.
    pub fn sent(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }
}

/// The request body for a batch in the configured format.
pub fn encode(cfg: &ExportConfig, records: &[UsageRecord]) -> Vec<u8> {
    let r = match cfg.format {
        ExportFormat::Webhook => serde_json::to_vec(&Webhook { records }),
        ExportFormat::Otlp => serde_json::to_vec(&otlp_logs(&cfg.service_name, records)),
        ExportFormat::Langfuse => serde_json::to_vec(&langfuse_batch(&cfg.service_name, records)),
    };
    r.unwrap_or_default()
}

#[derive(Serialize)]
struct Webhook<'a> {
    records: &'a [UsageRecord],
}

// OTLP/JSON shapes (opentelemetry-proto, JSON encoding: lowerCamelCase, 64-bit ints as strings).

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsRequest<'a> {
    resource_logs: [ResourceLogs<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResourceLogs<'a> {
    resource: Resource<'a>,
    scope_logs: [ScopeLogs<'a>; 1],
}

#[derive(Serialize)]
struct Resource<'a> {
    attributes: [KeyValue<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScopeLogs<'a> {
    scope: Scope,
    log_records: Vec<LogRecord<'a>>,
}

#[derive(Serialize)]
struct Scope {
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LogRecord<'a> {
    time_unix_nano: String,
    observed_time_unix_nano: String,
    severity_number: u8,
    severity_text: &'static str,
    event_name: &'static str,
    body: AnyValue<'a>,
    attributes: Vec<KeyValue<'a>>,
}

#[derive(Serialize)]
struct KeyValue<'a> {
    key: &'static str,
    value: AnyValue<'a>,
}

#[derive(Serialize)]
enum AnyValue<'a> {
    #[serde(rename = "stringValue")]
    Str(&'a str),
    #[serde(rename = "stringValue")]
    String(String),
    #[serde(rename = "intValue")]
    Int(String),
    #[serde(rename = "boolValue")]
    Bool(bool),
    #[serde(rename = "doubleValue")]
    Double(f64),
}

fn kv<'a>(key: &'static str, value: AnyValue<'a>) -> KeyValue<'a> {
    KeyValue { key, value }
}

fn int<'a>(v: u64) -> AnyValue<'a> {
    AnyValue::Int(v.to_string())
}

/// OTLP/HTTP logs, JSON encoding (`ExportLogsServiceRequest`): one log record per request, with
/// gen_ai semantic-convention attributes.
pub fn otlp_logs<'a>(service: &'a str, records: &'a [UsageRecord]) -> LogsRequest<'a> {
    use AnyValue::Str;
    let log_records = records
        .iter()
        .map(|r| {
            let mut a = vec![
                kv("gen_ai.operation.name", Str("chat")),
                kv("gen_ai.request.model", Str(&r.model)),
                kv("gen_ai.response.model", Str(&r.upstream_model)),
                kv("gen_ai.provider.name", Str(&r.provider)),
                kv("llmux.deployment", Str(&r.deployment)),
                kv("gen_ai.usage.input_tokens", int(r.input_tokens)),
                kv("gen_ai.usage.output_tokens", int(r.output_tokens)),
                kv(
                    "gen_ai.usage.cache_read.input_tokens",
                    int(r.cached_input_tokens),
                ),
                kv(
                    "gen_ai.usage.cache_creation.input_tokens",
                    int(r.cache_creation_tokens),
                ),
                kv("llmux.usage.reasoning_tokens", int(r.reasoning_tokens)),
                kv("http.response.status_code", int(u64::from(r.status))),
                kv("llmux.stream", AnyValue::Bool(r.stream)),
                kv("llmux.request_id", Str(&r.request_id)),
                kv("llmux.attempts", int(u64::from(r.attempts))),
            ];
            if let Some(c) = r.cost_usd {
                a.push(kv("llmux.cost_usd", AnyValue::Double(c)));
            }
            if let Some(d) = r.duration_ms {
                a.push(kv("llmux.duration_ms", int(d)));
            }
            if let Some(t) = r.ttft_ms {
                a.push(kv("llmux.ttft_ms", int(t)));
            }
            if let Some(b) = &r.request_body {
                a.push(kv("llmux.request.body", Str(b)));
            }
            if let Some(b) = &r.response_body {
                a.push(kv("llmux.response.body", Str(b)));
            }
            let (severity_number, severity_text) = if r.status >= 500 || r.status == 0 {
                (17, "ERROR")
            } else if r.status >= 400 {
                (13, "WARN")
            } else {
                (9, "INFO")
            };
            LogRecord {
                time_unix_nano: r.end_ns.to_string(),
                observed_time_unix_nano: r.end_ns.to_string(),
                severity_number,
                severity_text,
                event_name: "llmux.usage",
                body: AnyValue::String(format!(
                    "chat.completions {} {} {}",
                    r.model, r.deployment, r.status
                )),
                attributes: a,
            }
        })
        .collect();
    LogsRequest {
        resource_logs: [ResourceLogs {
            resource: Resource {
                attributes: [kv("service.name", Str(service))],
            },
            scope_logs: [ScopeLogs {
                scope: Scope {
                    name: "llmux",
                    version: env!("CARGO_PKG_VERSION"),
                },
                log_records,
            }],
        }],
    }
}

// Langfuse ingestion API shapes.

#[derive(Serialize)]
pub struct LangfuseBatch<'a> {
    batch: Vec<LangfuseEvent<'a>>,
}

#[derive(Serialize)]
struct LangfuseEvent<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: &'a str,
    body: LangfuseBody<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum LangfuseBody<'a> {
    Trace(Trace<'a>),
    Generation(Generation<'a>),
}

#[derive(Serialize)]
struct Metadata<'a> {
    provider: &'a str,
    deployment: &'a str,
    status: u16,
    stream: bool,
    attempts: u32,
    request_id: &'a str,
}

#[derive(Serialize)]
struct Trace<'a> {
    id: String,
    name: &'a str,
    timestamp: &'a str,
    metadata: Metadata<'a>,
    input: Option<&'a str>,
    output: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Generation<'a> {
    id: String,
    trace_id: String,
    name: &'static str,
    start_time: &'a str,
    end_time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_start_time: Option<String>,
    model: &'a str,
    usage_details: UsageDetails,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_details: Option<CostDetails>,
    metadata: Metadata<'a>,
    level: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_message: Option<String>,
    input: Option<&'a str>,
    output: Option<&'a str>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct UsageDetails {
    input: u64,
    output: u64,
    total: u64,
    #[serde(skip_serializing_if = "is_zero")]
    cache_read_input_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    cache_creation_input_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    reasoning_tokens: u64,
}

#[derive(Serialize)]
struct CostDetails {
    total: f64,
}

/// Langfuse ingestion API (`POST /api/public/ingestion`): per record a `trace-create` and a
/// `generation-create` event; ids derive from the request id, so a resent batch deduplicates.
pub fn langfuse_batch<'a>(service: &'a str, records: &'a [UsageRecord]) -> LangfuseBatch<'a> {
    let mut batch = Vec::with_capacity(records.len() * 2);
    for r in records {
        let trace_id = format!("llmux-{}", r.request_id);
        let metadata = || Metadata {
            provider: &r.provider,
            deployment: &r.deployment,
            status: r.status,
            stream: r.stream,
            attempts: r.attempts,
            request_id: &r.request_id,
        };
        let failed = r.status >= 400 || r.status == 0;
        batch.push(LangfuseEvent {
            id: format!("{trace_id}-trace"),
            kind: "trace-create",
            timestamp: &r.end_time,
            body: LangfuseBody::Trace(Trace {
                id: trace_id.clone(),
                name: service,
                timestamp: &r.start_time,
                metadata: metadata(),
                input: r.request_body.as_deref(),
                output: r.response_body.as_deref(),
            }),
        });
        let generation_id = format!("{trace_id}-generation");
        batch.push(LangfuseEvent {
            id: generation_id.clone(),
            kind: "generation-create",
            timestamp: &r.end_time,
            body: LangfuseBody::Generation(Generation {
                id: generation_id,
                trace_id,
                name: "chat.completions",
                start_time: &r.start_time,
                end_time: &r.end_time,
                completion_start_time: (r.stream && r.first_byte_ns > 0)
                    .then(|| super::time::rfc3339_millis(r.first_byte_ns)),
                model: &r.upstream_model,
                usage_details: UsageDetails {
                    input: r.input_tokens,
                    output: r.output_tokens,
                    total: r.total_tokens,
                    cache_read_input_tokens: r.cached_input_tokens,
                    cache_creation_input_tokens: r.cache_creation_tokens,
                    reasoning_tokens: r.reasoning_tokens,
                },
                cost_details: r.cost_usd.map(|total| CostDetails { total }),
                metadata: metadata(),
                level: if failed { "ERROR" } else { "DEFAULT" },
                status_message: failed.then(|| format!("HTTP {}", r.status)),
                input: r.request_body.as_deref(),
                output: r.response_body.as_deref(),
            }),
        });
    }
    LangfuseBatch { batch }
}

#[cfg(test)]
mod tests {
    use super::super::record::tests::{config, finished, timings};
    use super::*;
    use crate::config::{Config, ProcessEnv};
    use serde_json::Value;

    fn export_cfg(format: &str, batch: u32, max_queue: u32) -> ExportConfig {
        let s = format!(
            r#"{{"providers": {{"p": {{"type": "openai", "cluster": "c"}}}},
                "models": [{{"name": "m", "deployments": [{{"provider": "p"}}]}}],
                "export": {{"format": "{format}", "cluster": "col", "batch_size": {batch},
                            "flush_interval_ms": 100, "max_queue": {max_queue}}}}}"#
        );
        Config::parse(s.as_bytes(), &ProcessEnv)
            .unwrap()
            .export
            .unwrap()
    }

    fn record() -> UsageRecord {
        let t = timings();
        UsageRecord::build(&config(false), &finished(&t, 0)).unwrap()
    }

    #[test]
    fn batches_by_size_and_interval() {
        let mut b = Batcher::new(&export_cfg("webhook", 3, 5));
        let ms = 1_000_000;
        assert_eq!(b.take_due(0), None);
        assert_eq!(b.push(record(), 10 * ms), Pushed::Queued);
        assert_eq!(b.push(record(), 20 * ms), Pushed::Queued);
        assert_eq!(b.take_due(50 * ms), None, "not full, not old enough");
        assert_eq!(b.take_due(110 * ms).map(|v| v.len()), Some(2), "interval");
        b.sent();
        for _ in 0..7 {
            b.push(record(), 200 * ms);
        }
        assert_eq!(b.queued(), 5, "max_queue drops the rest");
        assert_eq!(b.push(record(), 200 * ms), Pushed::Dropped);
        assert_eq!(b.take_due(201 * ms).map(|v| v.len()), Some(3), "full batch");
        assert_eq!(b.take_due(202 * ms), None, "2 left, waiting again");
        assert_eq!(b.take_due(302 * ms).map(|v| v.len()), Some(2));
        // In-flight cap.
        let mut b = Batcher::new(&export_cfg("webhook", 1, 100));
        for _ in 0..10 {
            b.push(record(), 0);
        }
        for _ in 0..MAX_IN_FLIGHT {
            assert!(b.take_due(0).is_some());
        }
        assert_eq!(b.take_due(0), None);
        b.sent();
        assert!(b.take_due(0).is_some());
    }

    #[test]
    fn webhook_payload() {
        let body = encode(&export_cfg("webhook", 1, 1), &[record(), record()]);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["records"].as_array().unwrap().len(), 2);
        assert_eq!(v["records"][0]["model"], "gpt");
        assert_eq!(v["records"][0]["input_tokens"], 1000);
        assert_eq!(v["records"][0]["attempts"], 1);
    }

    #[test]
    fn otlp_payload() {
        let body = encode(&export_cfg("otlp", 1, 1), &[record()]);
        let v: Value = serde_json::from_slice(&body).unwrap();
        let rl = &v["resourceLogs"][0];
        assert_eq!(
            rl["resource"]["attributes"][0]["value"]["stringValue"],
            "llmux"
        );
        let lr = &rl["scopeLogs"][0]["logRecords"][0];
        assert_eq!(lr["timeUnixNano"], "1700000000510000000");
        assert_eq!(lr["severityNumber"], 9);
        let attr = |k: &str| {
            lr["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == k)
                .map(|a| a["value"].clone())
                .unwrap()
        };
        assert_eq!(attr("gen_ai.usage.input_tokens")["intValue"], "1000");
        assert_eq!(attr("gen_ai.request.model")["stringValue"], "gpt");
        assert_eq!(attr("llmux.stream")["boolValue"], true);
        assert!(attr("llmux.cost_usd")["doubleValue"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn langfuse_payload() {
        let body = encode(&export_cfg("langfuse", 1, 1), &[record()]);
        let v: Value = serde_json::from_slice(&body).unwrap();
        let b = v["batch"].as_array().unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0]["type"], "trace-create");
        assert_eq!(b[1]["type"], "generation-create");
        let g = &b[1]["body"];
        assert_eq!(g["traceId"], b[0]["body"]["id"]);
        assert_eq!(g["model"], "gpt-4o-mini");
        assert_eq!(g["usageDetails"]["input"], 1000);
        assert_eq!(g["usageDetails"]["cache_read_input_tokens"], 100);
        assert_eq!(g["completionStartTime"], "2023-11-14T22:13:20.110Z");
        assert_eq!(g["level"], "DEFAULT");
        assert_ne!(b[0]["id"], b[1]["id"]);
    }
}
