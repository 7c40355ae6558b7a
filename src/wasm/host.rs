//! [`WasmHost`]: the core's [`Host`] over Proxy-Wasm's host calls, each returning `Result` and
//! none able to panic.
//!
//! proxy-wasm 0.2.5's own `hostcalls` panic on any status they do not expect, and its header-map
//! decoder unwraps UTF-8 (a client header with a Latin-1 byte would kill the VM). So the few
//! imports we need are declared here with plain integer types, and every map is decoded lossily
//! with bounds checks. The proxy-wasm crate still provides the dispatcher and the allocator that
//! the host uses to hand us buffers.

use std::ptr::{null, null_mut};

use crate::host::header_map::encode_map;
use crate::host::{Body, Direction, HeaderMap, Host, HostError, HostResult, MetricType};

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;

/// Proxy-Wasm's `map_type`.
fn map_type(map: HeaderMap) -> u32 {
    match map {
        HeaderMap::Request => 0,
        HeaderMap::Response => 2,
        HeaderMap::CallResponse => 6,
    }
}

/// Proxy-Wasm's `buffer_type`.
fn buffer_type(body: Body) -> u32 {
    match body {
        Body::Request => 0,
        Body::Response => 1,
        Body::CallResponse => 4,
        Body::GrpcResponse => 5,
        Body::Configuration => 7,
    }
}

#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Level {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        buffer_data: *const u8,
        buffer_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
}

fn check(status: u32) -> HostResult<()> {
    if status == OK {
        Ok(())
    } else {
        Err(HostError(status))
    }
}

/// Takes ownership of a buffer the host allocated through `proxy_on_memory_allocate`.
///
/// # Safety
/// `data`/`size` must come from a host call that just succeeded.
unsafe fn owned(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        None
    } else {
        Some(Vec::from_raw_parts(data, size, size))
    }
}

pub fn log(level: Level, message: &str) {
    // Nothing sensible to do if logging itself fails.
    let _ = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}

pub fn log_level() -> Level {
    let mut l = 0u32;
    let status = unsafe { proxy_get_log_level(&mut l) };
    if status != OK {
        return Level::Info;
    }
    match l {
        0 => Level::Trace,
        1 => Level::Debug,
        2 => Level::Info,
        3 => Level::Warn,
        4 => Level::Error,
        _ => Level::Critical,
    }
}

fn now_nanos() -> u64 {
    let mut t = 0u64;
    match unsafe { proxy_get_current_time_nanoseconds(&mut t) } {
        OK => t,
        _ => 0,
    }
}

fn get_buffer(buffer: u32, start: usize, max_size: usize) -> HostResult<Option<Vec<u8>>> {
    let mut data = null_mut();
    let mut size = 0usize;
    match unsafe { proxy_get_buffer_bytes(buffer, start, max_size, &mut data, &mut size) } {
        OK => Ok(unsafe { owned(data, size) }),
        NOT_FOUND => Ok(None),
        s => Err(HostError(s)),
    }
}

/// Replaces `size` bytes from `start` of the buffer with `value`.
fn set_buffer(buffer: u32, start: usize, size: usize, value: &[u8]) -> HostResult<()> {
    check(unsafe { proxy_set_buffer_bytes(buffer, start, size, value.as_ptr(), value.len()) })
}

/// The whole header map in Proxy-Wasm's wire format (decode it with `map_codec::decode_map`,
/// which borrows from it).
fn get_headers(map: u32) -> HostResult<Vec<u8>> {
    let mut data = null_mut();
    let mut size = 0usize;
    check(unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) })?;
    Ok(unsafe { owned(data, size) }.unwrap_or_default())
}

fn get_header(map: u32, name: &str) -> HostResult<Option<String>> {
    let mut data = null_mut();
    let mut size = 0usize;
    match unsafe {
        proxy_get_header_map_value(map, name.as_ptr(), name.len(), &mut data, &mut size)
    } {
        OK => Ok(unsafe { owned(data, size) }.map(|v| String::from_utf8_lossy(&v).into_owned())),
        NOT_FOUND => Ok(None),
        s => Err(HostError(s)),
    }
}

fn set_header(map: u32, name: &str, value: &str) -> HostResult<()> {
    check(unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

fn remove_header(map: u32, name: &str) -> HostResult<()> {
    check(unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) })
}

/// Defines a metric of `kind` (0 counter, 1 gauge, 2 histogram; Envoy prefixes its name with
/// `wasmcustom.`); returns its id.
fn define_metric(kind: u32, name: &str) -> HostResult<u32> {
    let mut id = 0u32;
    check(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Adds to a counter.
fn increment_metric(id: u32, offset: u64) -> HostResult<()> {
    check(unsafe { proxy_increment_metric(id, i64::try_from(offset).unwrap_or(i64::MAX)) })
}

/// Sets filter state `name` (an access log prints it as `%FILTER_STATE(wasm.NAME:PLAIN)%`).
fn set_property(name: &str, value: &[u8]) -> HostResult<()> {
    check(unsafe { proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len()) })
}

/// Calls the root context's `on_tick` every `ms` milliseconds (0 stops).
fn set_tick_period_ms(ms: u32) -> HostResult<()> {
    check(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

/// POSTs `body` to `cluster` without waiting; the answer arrives in the calling context's
/// `on_http_call_response` with the returned token.
///
/// This one call goes through proxy-wasm's `hostcalls::dispatch_http_call`: only it registers
/// the token with the SDK's dispatcher (which otherwise panics on the response callback). It
/// handles every status Envoy's `httpCall` returns (OK, BadArgument for an unknown cluster or
/// missing pseudo-headers, InternalFailure when the request cannot start).
fn dispatch_http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout_ms: u32,
) -> HostResult<u32> {
    proxy_wasm::hostcalls::dispatch_http_call(
        cluster,
        headers.to_vec(),
        Some(body),
        Vec::new(),
        std::time::Duration::from_millis(u64::from(timeout_ms)),
    )
    .map_err(|s| HostError(s as u32))
}

/// Makes the following host calls act on context `id` (another HTTP stream of this VM); `Err`
/// when that context is gone.
fn set_effective_context(id: u32) -> HostResult<()> {
    check(unsafe { proxy_set_effective_context(id) })
}

/// Sets a gauge, or records a histogram value.
fn record_metric(id: u32, value: u64) -> HostResult<()> {
    check(unsafe { proxy_record_metric(id, value) })
}

/// Bytes of linear memory this Wasm VM has (it only ever grows).
fn vm_memory_bytes() -> u64 {
    core::arch::wasm32::memory_size(0) as u64 * 65536
}

/// Reads an Envoy attribute such as `["response", "code_details"]`.
fn get_property(path: &[&str]) -> HostResult<Option<Vec<u8>>> {
    let mut serialized = Vec::new();
    for (i, part) in path.iter().enumerate() {
        if i > 0 {
            serialized.push(0);
        }
        serialized.extend_from_slice(part.as_bytes());
    }
    let mut data = null_mut();
    let mut size = 0usize;
    match unsafe { proxy_get_property(serialized.as_ptr(), serialized.len(), &mut data, &mut size) }
    {
        OK => Ok(unsafe { owned(data, size) }),
        NOT_FOUND => Ok(None),
        s => Err(HostError(s)),
    }
}

fn send_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
    let map = encode_map(headers);
    let details = "llmux";
    check(unsafe {
        proxy_send_local_response(
            u32::from(status),
            details.as_ptr(),
            details.len(),
            if body.is_empty() {
                null()
            } else {
                body.as_ptr()
            },
            body.len(),
            map.as_ptr(),
            map.len(),
            -1,
        )
    })
}

/// Routes the `log` crate to Envoy's log, without the panicking logger of proxy-wasm.
struct HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => Level::Trace,
            log::Level::Debug => Level::Debug,
            log::Level::Info => Level::Info,
            log::Level::Warn => Level::Warn,
            log::Level::Error => Level::Error,
        };
        log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

static LOGGER: HostLogger = HostLogger;

/// Installs the logger at Envoy's current level for the Wasm component, and a panic hook that
/// reports the panic in Envoy's log (a panic still ends the VM; we just make it visible).
pub fn init_logging() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(match log_level() {
        Level::Trace => log::LevelFilter::Trace,
        Level::Debug => log::LevelFilter::Debug,
        Level::Info => log::LevelFilter::Info,
        Level::Warn => log::LevelFilter::Warn,
        Level::Error => log::LevelFilter::Error,
        Level::Critical => log::LevelFilter::Off,
    });
    std::panic::set_hook(Box::new(|info| {
        log(Level::Critical, &format!("llmux panicked: {info}"));
    }));
}

/// Envoy shared data (one space per VM id, shared by the workers): the value and its CAS token.
fn get_shared_data(key: &str) -> HostResult<(Option<Vec<u8>>, u32)> {
    let mut data = null_mut();
    let mut size = 0usize;
    let mut cas = 0u32;
    match unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) }
    {
        OK => Ok((unsafe { owned(data, size) }, cas)),
        NOT_FOUND => Ok((None, 0)),
        s => Err(HostError(s)),
    }
}

/// Sets shared data if its CAS token is still `cas` (0: unconditionally). A lost race is
/// `Err(HostError(CAS_MISMATCH))`.
fn set_shared_data(key: &str, value: &[u8], cas: u32) -> HostResult<()> {
    check(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Resumes the paused request (`response: false`) or response.
fn resume(response: bool) -> HostResult<()> {
    check(unsafe { proxy_continue_stream(u32::from(response)) })
}

/// Starts a unary gRPC call; the answer arrives in the calling context's
/// `on_grpc_call_response`. Goes through proxy-wasm's hostcall, which registers the token with
/// the SDK's dispatcher (and handles every status Envoy's `grpcCall` returns: OK, ParseFailure
/// for an unknown cluster, InternalFailure).
fn dispatch_grpc_call(
    cluster: &str,
    service: &str,
    method: &str,
    message: &[u8],
    timeout_ms: u32,
) -> HostResult<u32> {
    proxy_wasm::hostcalls::dispatch_grpc_call(
        cluster,
        service,
        method,
        Vec::new(),
        Some(message),
        std::time::Duration::from_millis(u64::from(timeout_ms)),
    )
    .map_err(|s| HostError(s as u32))
}

/// The host of a Proxy-Wasm VM in Envoy.
pub struct WasmHost;

impl Host for WasmHost {
    fn now_nanos(&self) -> u64 {
        now_nanos()
    }

    fn headers(&self, map: HeaderMap) -> HostResult<Vec<u8>> {
        get_headers(map_type(map))
    }

    fn header(&self, map: HeaderMap, name: &str) -> HostResult<Option<String>> {
        get_header(map_type(map), name)
    }

    fn set_header(&self, map: HeaderMap, name: &str, value: &str) -> HostResult<()> {
        set_header(map_type(map), name, value)
    }

    fn remove_header(&self, map: HeaderMap, name: &str) -> HostResult<()> {
        remove_header(map_type(map), name)
    }

    fn body(&self, body: Body, start: usize, max: usize) -> HostResult<Option<Vec<u8>>> {
        get_buffer(buffer_type(body), start, max)
    }

    fn set_body(&self, body: Body, start: usize, size: usize, value: &[u8]) -> HostResult<()> {
        set_buffer(buffer_type(body), start, size, value)
    }

    fn property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>> {
        get_property(path)
    }

    fn set_property(&self, name: &str, value: &[u8]) -> HostResult<()> {
        set_property(name, value)
    }

    fn shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, u32)> {
        get_shared_data(key)
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> HostResult<()> {
        set_shared_data(key, value, cas)
    }

    fn define_metric(&self, kind: MetricType, name: &str) -> HostResult<u32> {
        define_metric(kind as u32, name)
    }

    fn increment_metric(&self, id: u32, offset: u64) -> HostResult<()> {
        increment_metric(id, offset)
    }

    fn record_metric(&self, id: u32, value: u64) -> HostResult<()> {
        record_metric(id, value)
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u32,
    ) -> HostResult<u32> {
        dispatch_http_call(cluster, headers, body, timeout_ms)
    }

    fn grpc_call(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout_ms: u32,
    ) -> HostResult<u32> {
        dispatch_grpc_call(cluster, service, method, message, timeout_ms)
    }

    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
        send_response(status, headers, body)
    }

    fn resume(&self, direction: Direction) -> HostResult<()> {
        resume(direction == Direction::Response)
    }

    fn set_effective_context(&self, id: u32) -> HostResult<()> {
        set_effective_context(id)
    }

    fn set_tick_period_ms(&self, ms: u32) -> HostResult<()> {
        set_tick_period_ms(ms)
    }

    fn vm_memory_bytes(&self) -> u64 {
        vm_memory_bytes()
    }
}
