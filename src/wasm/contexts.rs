//! The Proxy-Wasm contexts: each hands the host's callback to the core type that decides
//! ([`Root`], [`Request`], [`Attempt`]) together with [`WasmHost`], and turns the answer into
//! the SDK's `Action`. Nothing here decides anything.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::rc::Rc;

use super::host::{init_logging, WasmHost};
use crate::host;
use crate::stages::attempt::Attempt;
use crate::stages::request::Request;
use crate::stages::root::Root;
use crate::stages::vm::Registry;

thread_local! {
    /// The VM's requests planned for the upstream stage: one registry for every root of the VM.
    static REGISTRY: Rc<Registry> = Rc::new(Registry::default());
}

proxy_wasm::main! {{
    // Host calls are not allowed here (Envoy answers `restricted_callback`): logging starts in
    // on_configure.
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        Box::new(VmRoot(Root::new(id, REGISTRY.with(Rc::clone))))
    });
}}

fn action(a: host::Action) -> Action {
    match a {
        host::Action::Continue => Action::Continue,
        host::Action::Pause => Action::Pause,
    }
}

struct VmRoot(Root);

impl Context for VmRoot {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body: usize, _: usize) {
        self.0.on_http_call_response(&WasmHost, token, body);
    }
}

impl RootContext for VmRoot {
    fn on_configure(&mut self, size: usize) -> bool {
        init_logging();
        self.0.configure(&WasmHost, size)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a config Envoy never creates streams; answering None would panic the
        // dispatcher, so an unconfigured context just passes everything through.
        if self.0.upstream {
            Some(Box::new(AttemptContext(self.0.new_attempt(context_id))))
        } else {
            Some(Box::new(RequestContext(self.0.new_request(context_id))))
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn on_tick(&mut self) {
        self.0.on_tick(&WasmHost);
    }
}

struct RequestContext(Request);

impl Context for RequestContext {
    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        self.0.on_grpc_call_response(&WasmHost, token, status, size);
    }

    fn on_http_call_response(&mut self, token: u32, _headers: usize, body: usize, _: usize) {
        self.0.on_http_call_response(&WasmHost, token, body);
    }
}

impl HttpContext for RequestContext {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        action(self.0.on_request_headers(&WasmHost, end_of_stream))
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        action(self.0.on_request_body(&WasmHost, size, end_of_stream))
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        action(self.0.on_response_headers(&WasmHost, end_of_stream))
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        action(self.0.on_response_body(&WasmHost, size, end_of_stream))
    }

    fn on_log(&mut self) {
        self.0.on_log(&WasmHost);
    }
}

struct AttemptContext(Attempt);

impl Context for AttemptContext {}

impl HttpContext for AttemptContext {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        action(self.0.on_request_headers(&WasmHost, end_of_stream))
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        action(self.0.on_request_body(&WasmHost, size, end_of_stream))
    }

    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        action(self.0.on_response_headers(&WasmHost, end_of_stream))
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        action(self.0.on_response_body(&WasmHost, size, end_of_stream))
    }

    fn on_log(&mut self) {
        self.0.on_log(&WasmHost);
    }
}
