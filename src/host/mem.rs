//! An in-memory [`Host`] for native tests of the request stages: one `MemHost` is one worker's
//! VM; workers made from the same [`World`] share its shared data (with Envoy's CAS tokens),
//! clock and metrics, as Envoy's workers do. Streams are selected with [`MemHost::enter`] (the
//! host's "current context"); callouts are recorded and answered by the test; any host call can
//! be made to fail.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::header_map::encode_map;
use super::{Body, Direction, HeaderMap, Host, HostError, HostResult, MetricType};

/// What all workers share: shared data, the clock, metrics.
#[derive(Default)]
pub struct World {
    shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    now_ns: Cell<u64>,
    /// The next this many conditional shared-data writes lose their race.
    cas_conflicts: Cell<u32>,
    metrics: RefCell<Vec<(String, MetricType, u64)>>,
}

impl World {
    pub fn new() -> Rc<World> {
        let w = World::default();
        w.now_ns.set(1_700_000_000_000_000_000);
        Rc::new(w)
    }

    pub fn advance_ms(&self, ms: u64) {
        self.now_ns.set(self.now_ns.get() + ms * 1_000_000);
    }

    /// Makes the next `n` conditional (`cas != 0`) shared-data writes fail with CasMismatch.
    pub fn lose_cas_races(&self, n: u32) {
        self.cas_conflicts.set(n);
    }

    pub fn shared_value(&self, key: &str) -> Option<Vec<u8>> {
        self.shared.borrow().get(key).map(|(v, _)| v.clone())
    }

    pub fn shared_keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.shared.borrow().keys().cloned().collect();
        k.sort();
        k
    }

    /// A metric's value by its full name (counters summed, gauges/histograms last value).
    pub fn metric(&self, name: &str) -> Option<u64> {
        self.metrics
            .borrow()
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| *v)
    }

    /// Every metric with a value, by name.
    pub fn metrics(&self) -> BTreeMap<String, u64> {
        self.metrics
            .borrow()
            .iter()
            .map(|(n, _, v)| (n.clone(), *v))
            .collect()
    }
}

/// Header pairs in order.
pub type Headers = Vec<(String, String)>;

/// A local reply the core sent.
#[derive(Debug, Clone)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// One HTTP stream as the host holds it.
#[derive(Default, Debug, Clone)]
pub struct MemStream {
    pub request_headers: Headers,
    pub response_headers: Headers,
    /// What the host buffers of the body now (the callback's data).
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    pub properties: HashMap<String, Vec<u8>>,
    pub filter_state: BTreeMap<String, Vec<u8>>,
    pub local_response: Option<LocalReply>,
    pub resumed: Vec<Direction>,
}

impl MemStream {
    pub fn header(&self, map: HeaderMap, name: &str) -> Option<&str> {
        let h = match map {
            HeaderMap::Request => &self.request_headers,
            _ => &self.response_headers,
        };
        h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A callout the core made.
#[derive(Debug, Clone)]
pub struct Callout {
    pub token: u32,
    /// The stream that made it (0: the root).
    pub context: u32,
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `Some((service, method))` for a gRPC call.
    pub grpc: Option<(String, String)>,
    pub timeout_ms: u32,
}

/// One worker's VM.
pub struct MemHost {
    pub world: Rc<World>,
    current: Cell<u32>,
    streams: RefCell<HashMap<u32, MemStream>>,
    calls: RefCell<Vec<Callout>>,
    next_token: Cell<u32>,
    /// What the callout-response callback reads: headers and body.
    call_response: RefCell<(Headers, Vec<u8>)>,
    grpc_response: RefCell<Vec<u8>>,
    pub configuration: RefCell<Vec<u8>>,
    pub tick_ms: Cell<u32>,
    pub memory_bytes: Cell<u64>,
    /// Names of host methods that fail (with InternalFailure) until removed.
    failing: RefCell<Vec<&'static str>>,
    /// Host calls made, by method (counted as Envoy would charge them).
    pub call_count: Cell<u64>,
    /// Root contexts (valid targets of `set_effective_context`, with no stream of their own).
    roots: RefCell<Vec<u32>>,
}

impl MemHost {
    pub fn new(world: &Rc<World>) -> MemHost {
        MemHost {
            world: world.clone(),
            current: Cell::new(0),
            streams: RefCell::new(HashMap::new()),
            calls: RefCell::new(Vec::new()),
            next_token: Cell::new(1),
            call_response: RefCell::new((Vec::new(), Vec::new())),
            grpc_response: RefCell::new(Vec::new()),
            configuration: RefCell::new(Vec::new()),
            tick_ms: Cell::new(0),
            memory_bytes: Cell::new(1 << 20),
            failing: RefCell::new(Vec::new()),
            call_count: Cell::new(0),
            roots: RefCell::new(Vec::new()),
        }
    }

    /// Declares root context `id` (callouts made while it is effective belong to it).
    pub fn add_root(&self, id: u32) {
        self.roots.borrow_mut().push(id);
    }

    /// Makes stream `id` current (creating it), as the host does before a stream's callback.
    pub fn enter(&self, id: u32) {
        self.streams.borrow_mut().entry(id).or_default();
        self.current.set(id);
    }

    /// The stream is gone (the client went away): calls on it fail.
    pub fn drop_stream(&self, id: u32) {
        self.streams.borrow_mut().remove(&id);
    }

    pub fn stream(&self, id: u32) -> MemStream {
        self.streams.borrow().get(&id).cloned().unwrap_or_default()
    }

    /// Changes stream `id` in place.
    pub fn with_stream<R>(&self, id: u32, f: impl FnOnce(&mut MemStream) -> R) -> R {
        f(self.streams.borrow_mut().entry(id).or_default())
    }

    /// Takes the callouts made so far.
    pub fn take_calls(&self) -> Vec<Callout> {
        std::mem::take(&mut self.calls.borrow_mut())
    }

    /// What the next callout-response callback reads (`status` 0: no headers, a failed call).
    pub fn set_call_response(&self, status: u16, body: &[u8]) {
        let headers = if status == 0 {
            Vec::new()
        } else {
            vec![(":status".to_string(), status.to_string())]
        };
        *self.call_response.borrow_mut() = (headers, body.to_vec());
    }

    pub fn set_grpc_response(&self, message: &[u8]) {
        *self.grpc_response.borrow_mut() = message.to_vec();
    }

    /// Makes host method `name` (e.g. `"http_call"`) fail until [`MemHost::heal`].
    pub fn fail(&self, name: &'static str) {
        self.failing.borrow_mut().push(name);
    }

    pub fn heal(&self) {
        self.failing.borrow_mut().clear();
    }

    fn call(&self, name: &'static str) -> HostResult<()> {
        self.call_count.set(self.call_count.get() + 1);
        if self.failing.borrow().contains(&name) {
            return Err(HostError::INTERNAL);
        }
        Ok(())
    }

    fn on_stream<R>(&self, f: impl FnOnce(&mut MemStream) -> R) -> HostResult<R> {
        let mut s = self.streams.borrow_mut();
        let st = s.get_mut(&self.current.get()).ok_or(HostError::NOT_FOUND)?;
        Ok(f(st))
    }

    fn new_token(&self) -> u32 {
        let t = self.next_token.get();
        self.next_token.set(t + 1);
        t
    }
}

fn map_of(s: &mut MemStream, map: HeaderMap) -> &mut Vec<(String, String)> {
    match map {
        HeaderMap::Request => &mut s.request_headers,
        HeaderMap::Response | HeaderMap::CallResponse => &mut s.response_headers,
    }
}

impl Host for MemHost {
    fn now_nanos(&self) -> u64 {
        self.call_count.set(self.call_count.get() + 1);
        self.world.now_ns.get()
    }

    fn headers(&self, map: HeaderMap) -> HostResult<Vec<u8>> {
        self.call("headers")?;
        let pairs = if map == HeaderMap::CallResponse {
            self.call_response.borrow().0.clone()
        } else {
            self.on_stream(|s| map_of(s, map).clone())?
        };
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Ok(encode_map(&refs))
    }

    fn header(&self, map: HeaderMap, name: &str) -> HostResult<Option<String>> {
        self.call("header")?;
        if map == HeaderMap::CallResponse {
            let r = self.call_response.borrow();
            return Ok(r.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
        }
        self.on_stream(|s| {
            map_of(s, map)
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    fn set_header(&self, map: HeaderMap, name: &str, value: &str) -> HostResult<()> {
        self.call("set_header")?;
        self.on_stream(|s| {
            let m = map_of(s, map);
            m.retain(|(k, _)| k != name);
            m.push((name.to_string(), value.to_string()));
        })
    }

    fn remove_header(&self, map: HeaderMap, name: &str) -> HostResult<()> {
        self.call("remove_header")?;
        self.on_stream(|s| map_of(s, map).retain(|(k, _)| k != name))
    }

    fn body(&self, body: Body, start: usize, max: usize) -> HostResult<Option<Vec<u8>>> {
        self.call("body")?;
        let all = match body {
            Body::CallResponse => self.call_response.borrow().1.clone(),
            Body::GrpcResponse => self.grpc_response.borrow().clone(),
            Body::Configuration => self.configuration.borrow().clone(),
            Body::Request => self.on_stream(|s| s.request_body.clone())?,
            Body::Response => self.on_stream(|s| s.response_body.clone())?,
        };
        if all.is_empty() {
            return Ok(None);
        }
        let from = start.min(all.len());
        let to = from.saturating_add(max).min(all.len());
        Ok(Some(all[from..to].to_vec()))
    }

    fn set_body(&self, body: Body, start: usize, size: usize, value: &[u8]) -> HostResult<()> {
        self.call("set_body")?;
        self.on_stream(|s| {
            let b = match body {
                Body::Request => &mut s.request_body,
                Body::Response => &mut s.response_body,
                _ => return Err(HostError::BAD_ARGUMENT),
            };
            let from = start.min(b.len());
            let to = from.saturating_add(size).min(b.len());
            b.splice(from..to, value.iter().copied());
            Ok(())
        })?
    }

    fn property(&self, path: &[&str]) -> HostResult<Option<Vec<u8>>> {
        self.call("property")?;
        let key = path.join(".");
        self.on_stream(|s| s.properties.get(&key).cloned())
    }

    fn set_property(&self, name: &str, value: &[u8]) -> HostResult<()> {
        self.call("set_property")?;
        self.on_stream(|s| {
            s.filter_state.insert(name.to_string(), value.to_vec());
        })
    }

    fn shared_data(&self, key: &str) -> HostResult<(Option<Vec<u8>>, u32)> {
        self.call("shared_data")?;
        Ok(match self.world.shared.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), *cas),
            None => (None, 0),
        })
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> HostResult<()> {
        self.call("set_shared_data")?;
        let w = &self.world;
        if cas != 0 && w.cas_conflicts.get() > 0 {
            w.cas_conflicts.set(w.cas_conflicts.get() - 1);
            // Another worker wrote in between: its write bumps the token.
            if let Some((_, c)) = w.shared.borrow_mut().get_mut(key) {
                *c = c.wrapping_add(1).max(1);
            }
            return Err(HostError::CAS_MISMATCH);
        }
        let mut m = w.shared.borrow_mut();
        let current = m.get(key).map(|(_, c)| *c);
        if cas != 0 && current.is_some_and(|c| c != cas) {
            return Err(HostError::CAS_MISMATCH);
        }
        let next = current.unwrap_or(0).wrapping_add(1).max(1);
        m.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }

    fn define_metric(&self, kind: MetricType, name: &str) -> HostResult<u32> {
        self.call("define_metric")?;
        let mut m = self.world.metrics.borrow_mut();
        if let Some(i) = m.iter().position(|(n, _, _)| n == name) {
            return Ok(i as u32);
        }
        m.push((name.to_string(), kind, 0));
        Ok((m.len() - 1) as u32)
    }

    fn increment_metric(&self, id: u32, offset: u64) -> HostResult<()> {
        self.call("increment_metric")?;
        let mut m = self.world.metrics.borrow_mut();
        let e = m.get_mut(id as usize).ok_or(HostError::NOT_FOUND)?;
        e.2 = e.2.saturating_add(offset);
        Ok(())
    }

    fn record_metric(&self, id: u32, value: u64) -> HostResult<()> {
        self.call("record_metric")?;
        let mut m = self.world.metrics.borrow_mut();
        let e = m.get_mut(id as usize).ok_or(HostError::NOT_FOUND)?;
        e.2 = value;
        Ok(())
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u32,
    ) -> HostResult<u32> {
        self.call("http_call")?;
        let token = self.new_token();
        self.calls.borrow_mut().push(Callout {
            token,
            context: self.current.get(),
            cluster: cluster.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
            grpc: None,
            timeout_ms,
        });
        Ok(token)
    }

    fn grpc_call(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout_ms: u32,
    ) -> HostResult<u32> {
        self.call("grpc_call")?;
        let token = self.new_token();
        self.calls.borrow_mut().push(Callout {
            token,
            context: self.current.get(),
            cluster: cluster.to_string(),
            headers: Vec::new(),
            body: message.to_vec(),
            grpc: Some((service.to_string(), method.to_string())),
            timeout_ms,
        });
        Ok(token)
    }

    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
        self.call("send_response")?;
        self.on_stream(|s| {
            s.local_response = Some(LocalReply {
                status,
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                body: body.to_vec(),
            });
        })
    }

    fn resume(&self, direction: Direction) -> HostResult<()> {
        self.call("resume")?;
        self.on_stream(|s| s.resumed.push(direction))
    }

    fn set_effective_context(&self, id: u32) -> HostResult<()> {
        self.call("set_effective_context")?;
        if id != 0 && !self.roots.borrow().contains(&id) && !self.streams.borrow().contains_key(&id)
        {
            return Err(HostError::NOT_FOUND);
        }
        self.current.set(id);
        Ok(())
    }

    fn set_tick_period_ms(&self, ms: u32) -> HostResult<()> {
        self.call("set_tick_period_ms")?;
        self.tick_ms.set(ms);
        Ok(())
    }

    fn vm_memory_bytes(&self) -> u64 {
        self.memory_bytes.get()
    }
}
