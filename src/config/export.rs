//! The `export` section: where and how usage records are shipped to a collector.
//!
//! Its own module (types and parser together) so that the exporter (`observe::export`) can name
//! its settings without reaching for the whole `Config`.

use serde_json::{Map, Value};

use super::fields::{check_keys, err, is_header_name, join, opt_str, opt_u32, ConfigError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// `{"records": [record, ...]}`.
    Webhook,
    /// OTLP/HTTP logs, JSON encoding.
    Otlp,
    /// Langfuse's ingestion API (`trace-create` + `generation-create` per record).
    Langfuse,
}

impl ExportFormat {
    pub fn default_path(self) -> &'static str {
        match self {
            Self::Webhook => "/",
            Self::Otlp => "/v1/logs",
            Self::Langfuse => "/api/public/ingestion",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    pub format: ExportFormat,
    /// The Envoy cluster of the collector.
    pub cluster: String,
    pub path: String,
    /// `:authority` of the export request; defaults to the cluster name.
    pub authority: String,
    pub headers: Vec<(String, String)>,
    /// Send as soon as this many records are queued.
    pub batch_size: u32,
    /// Send what is queued at least this often.
    pub flush_interval_ms: u32,
    pub timeout_ms: u32,
    /// Records beyond this many queued (collector down or slow) are dropped and counted.
    pub max_queue: u32,
    /// `service.name` (OTLP resource) and trace name (Langfuse).
    pub service_name: String,
}

/// The most records an export may queue (`max_queue`, `batch_size`).
pub const MAX_EXPORT_QUEUE: u32 = 100_000;

pub(super) fn parse_export(v: &Value) -> Result<ExportConfig, ConfigError> {
    let path = "export";
    let o = v
        .as_object()
        .ok_or_else(|| err(path, "must be an object"))?;
    check_keys(
        o,
        path,
        &[
            "format",
            "cluster",
            "path",
            "authority",
            "headers",
            "batch_size",
            "flush_interval_ms",
            "timeout_ms",
            "max_queue",
            "service_name",
        ],
    )?;
    let format = match opt_str(o, path, "format")? {
        Some("webhook") => ExportFormat::Webhook,
        Some("otlp") => ExportFormat::Otlp,
        Some("langfuse") => ExportFormat::Langfuse,
        Some(other) => {
            return Err(err(
                "export.format",
                format!("`{other}` is not one of `webhook`, `otlp`, `langfuse`"),
            ))
        }
        None => return Err(err("export.format", "required")),
    };
    let cluster = match opt_str(o, path, "cluster")? {
        Some(c) if !c.is_empty() => c.to_string(),
        Some(_) => return Err(err("export.cluster", "must not be empty")),
        None => {
            return Err(err(
                "export.cluster",
                "required (the collector's Envoy cluster)",
            ))
        }
    };
    let xpath = match opt_str(o, path, "path")? {
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(_) => return Err(err("export.path", "must start with `/`")),
        None => format.default_path().to_string(),
    };
    let authority = opt_str(o, path, "authority")?
        .unwrap_or(&cluster)
        .to_string();
    let headers = export_headers(o)?;
    // Bounded: the queue lives in the VM's memory (a record is about 1 KB, more with bodies),
    // and a VM out of memory dies with every request in it.
    let positive = |key: &str, default: u32, max: u32| -> Result<u32, ConfigError> {
        match opt_u32(o, path, key)?.unwrap_or(default) {
            n if (1..=max).contains(&n) => Ok(n),
            _ => Err(err(&join(path, key), format!("from 1 to {max}"))),
        }
    };
    let batch_size = positive("batch_size", 100, MAX_EXPORT_QUEUE)?;
    let flush_interval_ms = positive("flush_interval_ms", 1000, 3_600_000)?;
    let timeout_ms = positive("timeout_ms", 5000, 600_000)?;
    let max_queue = positive("max_queue", 10_000, MAX_EXPORT_QUEUE)?.max(batch_size);
    let service_name = opt_str(o, path, "service_name")?
        .unwrap_or("llmux")
        .to_string();
    Ok(ExportConfig {
        format,
        cluster,
        path: xpath,
        authority,
        headers,
        batch_size,
        flush_interval_ms,
        timeout_ms,
        max_queue,
        service_name,
    })
}

/// `export.headers`: name → value, names lowercased; no pseudo-headers.
fn export_headers(o: &Map<String, Value>) -> Result<Vec<(String, String)>, ConfigError> {
    let mut headers = Vec::new();
    if let Some(h) = o.get("headers") {
        let h = h
            .as_object()
            .ok_or_else(|| err("export.headers", "must be an object of header name → value"))?;
        for (k, v) in h {
            let kp = format!("export.headers.{k}");
            let lk = k.to_ascii_lowercase();
            if !is_header_name(&lk) || lk.starts_with(':') {
                return Err(err(&kp, "not a valid header name"));
            }
            let v = v.as_str().ok_or_else(|| err(&kp, "must be a string"))?;
            headers.push((lk, v.to_string()));
        }
    }
    Ok(headers)
}
