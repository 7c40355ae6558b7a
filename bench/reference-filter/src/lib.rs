//! The reference filter of the benchmark issue: the least a body-routing gateway does. It buffers
//! the ~1 KB request body, parses it with `serde_json::Value`, rewrites `model`, writes the body
//! back and sets a routing header (`x-llmux-cluster`, so it runs behind the same route as LLMux).
//! `make bench` measures it in the same run as LLMux, so LLMux's overhead can be compared with it
//! as well as with plain Envoy. Bench-only code: it answers nothing else and handles no errors.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Reference))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Reference;

impl Context for Reference {}

impl HttpContext for Reference {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if end_of_stream {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let Some(body) = self.get_http_request_body(0, body_size) else {
            return Action::Continue;
        };
        let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return Action::Continue;
        };
        if let Some(m) = v.get_mut("model") {
            *m = serde_json::Value::String("gpt-4o-mini".into());
        }
        if let Ok(out) = serde_json::to_vec(&v) {
            self.set_http_request_body(0, body_size, &out);
            // The body's length changed: Envoy sends it chunked (or recomputes it) instead.
            self.set_http_request_header("content-length", None);
        }
        self.set_http_request_header("x-llmux-cluster", Some("mock"));
        Action::Continue
    }
}
