//! The request stages driven natively through [`MemHost`]: admission, charging, the release of
//! every counter on every ending, failover attempts and the finish accounting, on one or two
//! workers sharing shared data.

use std::rc::Rc;

use super::attempt::{Attempt, RETRY_HEADER};
use super::request::Request;
use super::root::Root;
use super::vm::{Registry, ATTEMPT_ID_HEADER};
use crate::host::mem::{MemHost, World};
use crate::host::{Action, Direction, HeaderMap};
use crate::routing::state::DeploymentState;

/// One worker's VM with both stages' roots.
struct Worker {
    host: MemHost,
    root: Root,
    upstream: Root,
}

fn worker(world: &Rc<World>, config: &serde_json::Value) -> Worker {
    let host = MemHost::new(world);
    let registry = Rc::new(Registry::default());
    let bytes = config.to_string().into_bytes();
    let n = bytes.len();
    *host.configuration.borrow_mut() = bytes;
    host.add_root(1);
    host.add_root(2);
    let mut root = Root::new(1, registry.clone());
    assert!(root.configure(&host, n), "config refused: {config}");
    let up = br#"{"stage": "upstream"}"#.to_vec();
    let m = up.len();
    *host.configuration.borrow_mut() = up;
    let mut upstream = Root::new(2, registry);
    assert!(upstream.configure(&host, m) && upstream.upstream);
    Worker {
        host,
        root,
        upstream,
    }
}

const USER: &str = r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}]}"#;

fn chat_body(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    )
}

/// An OpenAI chat completion with usage, as a provider sends it.
fn completion(prompt: u64, completion: u64) -> Vec<u8> {
    format!(
        r#"{{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"hello"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}}}"#,
        prompt + completion
    )
    .into_bytes()
}

impl Worker {
    /// A client request on stream `id`, through the headers and (whole) body callbacks.
    fn send(&self, id: u32, headers: &[(&str, &str)], body: &str) -> (Request, Action) {
        self.send_to(id, "POST", "/v1/chat/completions", headers, body)
    }

    fn send_to(
        &self,
        id: u32,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (Request, Action) {
        let h = &self.host;
        h.enter(id);
        h.with_stream(id, |s| {
            s.request_headers = [(":method", method), (":path", path)]
                .iter()
                .chain(headers)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            s.request_body = body.as_bytes().to_vec();
        });
        let mut r = self.root.new_request(id);
        let mut a = r.on_request_headers(h, body.is_empty());
        if a == Action::Pause && h.stream(id).local_response.is_none() && !body.is_empty() {
            a = r.on_request_body(h, body.len(), true);
        }
        (r, a)
    }

    /// The provider's answer on stream `id`, body in `chunks`; returns what the client gets.
    fn answer(&self, r: &mut Request, id: u32, status: u16, chunks: &[&[u8]]) -> Vec<u8> {
        let h = &self.host;
        h.enter(id);
        h.with_stream(id, |s| {
            s.response_headers = vec![(":status".into(), status.to_string())];
        });
        let _ = r.on_response_headers(h, chunks.is_empty());
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let eos = i + 1 == chunks.len();
            h.with_stream(id, |s| s.response_body.extend_from_slice(c));
            let size = h.stream(id).response_body.len();
            if r.on_response_body(h, size, eos) == Action::Continue {
                out.extend(h.with_stream(id, |s| std::mem::take(&mut s.response_body)));
            }
        }
        out
    }

    fn status(&self, id: u32) -> Option<u16> {
        self.host.stream(id).local_response.map(|l| l.status)
    }
}

fn parallel_slots(world: &World, alias: &str) -> u32 {
    world
        .shared_value(&format!("llmux.par.{alias}"))
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn sha(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn keyed_config(extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({
        "providers": {"oai": {"type": "openai", "cluster": "mock", "api_key": "sk-provider"},
                      "ant": {"type": "anthropic", "cluster": "mock_ant", "api_key": "sk-a"}},
        "models": [
            {"name": "gpt", "deployments": [{"provider": "oai", "model": "gpt-4o-mini",
                "price": {"input_per_mtok": 1000, "output_per_mtok": 1000}}]},
            {"name": "claude", "deployments": [{"provider": "ant", "model": "claude-x"}]}
        ],
        "auth": {"keys": [
            {"key_sha256": sha("sk-one"), "alias": "one", "max_parallel_requests": 1},
            {"key_sha256": sha("sk-two"), "alias": "two", "rpm": 2, "tpm": 1000}
        ]},
        "filter_state": true
    });
    if let (Some(o), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    c
}

const ONE: (&str, &str) = ("authorization", "Bearer sk-one");

#[test]
fn direct_request_is_translated_answered_and_finished_once() {
    let world = World::new();
    let w = worker(&world, &keyed_config(serde_json::json!({})));
    let (mut r, a) = w.send(7, &[ONE], &chat_body("claude", false));
    assert_eq!(a, Action::Continue);
    let s = w.host.stream(7);
    // Translated for Anthropic, the client's credential replaced by the provider's.
    assert_eq!(
        s.header(HeaderMap::Request, "x-llmux-cluster"),
        Some("mock_ant")
    );
    assert_eq!(s.header(HeaderMap::Request, "x-api-key"), Some("sk-a"));
    assert_eq!(s.header(HeaderMap::Request, "authorization"), None);
    assert!(String::from_utf8_lossy(&s.request_body).contains("\"max_tokens\""));
    let answer = br#"{"id":"m1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"hello"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2}}"#;
    let out = w.answer(&mut r, 7, 200, &[&answer[..40], &answer[40..]]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hello");
    assert_eq!(v["usage"]["total_tokens"], 5);
    r.on_log(&w.host);
    let metrics = world.metrics();
    let requests: u64 = metrics
        .iter()
        .filter(|(k, _)| k.starts_with("llmux.requests") && k.contains("status_class.2xx"))
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(requests, 1, "{metrics:?}");
    let fs = w.host.stream(7).filter_state;
    assert_eq!(
        fs.get("llmux_input_tokens").map(|v| &v[..]),
        Some(&b"3"[..]),
        "{fs:?}"
    );
    assert_eq!(
        fs.get("llmux_output_tokens").map(|v| &v[..]),
        Some(&b"2"[..]),
        "{fs:?}"
    );
    // A second on_log (the host never does this, but finishing is idempotent) counts nothing.
    r.on_log(&w.host);
    assert_eq!(world.metrics(), metrics);
    assert_eq!(parallel_slots(&world, "one"), 0);
}

#[test]
fn parallel_slot_is_released_exactly_once_on_every_ending() {
    let world = World::new();
    let w = worker(&world, &keyed_config(serde_json::json!({})));
    type Ending = fn(&Worker, &mut Request, u32);
    let endings: [(&str, Ending); 5] = [
        ("complete", |w, r, id| {
            w.answer(r, id, 200, &[&completion(3, 2)]);
        }),
        ("provider error", |w, r, id| {
            w.answer(r, id, 500, &[br#"{"error":{"message":"boom"}}"#]);
        }),
        ("client abort before the answer", |_, _, _| {}),
        ("reset mid-body", |w, r, id| {
            w.host.enter(id);
            w.host.with_stream(id, |s| {
                s.response_headers = vec![(":status".into(), "200".into())]
            });
            r.on_response_headers(&w.host, false);
            w.host
                .with_stream(id, |s| s.response_body = b"{\"id\":".to_vec());
            r.on_response_body(&w.host, 6, false);
        }),
        ("stream gone before on_log", |w, _, id| {
            w.host.drop_stream(id)
        }),
    ];
    for (i, (name, end)) in endings.iter().enumerate() {
        let id = 10 + i as u32 * 2;
        let (mut r, a) = w.send(id, &[ONE], USER);
        assert_eq!(a, Action::Continue, "{name}");
        assert_eq!(parallel_slots(&world, "one"), 1, "{name}");
        // A second request of the same key is refused while the first holds the slot.
        let (mut refused, _) = w.send(id + 1, &[ONE], USER);
        assert_eq!(w.status(id + 1), Some(429), "{name}");
        refused.on_log(&w.host);
        assert_eq!(
            parallel_slots(&world, "one"),
            1,
            "{name}: a refusal releases nothing"
        );
        end(&w, &mut r, id);
        w.host.enter(id);
        r.on_log(&w.host);
        assert_eq!(parallel_slots(&world, "one"), 0, "{name}");
    }
}

#[test]
fn in_flight_returns_to_zero_after_mixed_endings_on_two_workers() {
    let world = World::new();
    let cfg = serde_json::json!({
        "providers": {"a": {"type": "openai", "cluster": "ca"}, "b": {"type": "openai", "cluster": "cb"}},
        "models": [{"name": "gpt", "strategy": "least-busy",
                    "deployments": [{"provider": "a"}, {"provider": "b"}]}]
    });
    let w1 = worker(&world, &cfg);
    let w2 = worker(&world, &cfg);
    let mut open = Vec::new();
    for i in 0..12u32 {
        let w = if i % 2 == 0 { &w1 } else { &w2 };
        let (r, a) = w.send(100 + i, &[], USER);
        assert_eq!(a, Action::Continue);
        open.push((i, r));
    }
    let in_flight = |world: &World| -> u32 {
        world
            .shared_keys()
            .iter()
            .filter(|k| k.starts_with("llmux.d."))
            .map(|k| DeploymentState::decode(&world.shared_value(k).unwrap()).in_flight)
            .sum()
    };
    assert_eq!(in_flight(&world), 12);
    world.lose_cas_races(3);
    for (i, mut r) in open {
        let w = if i % 2 == 0 { &w1 } else { &w2 };
        let id = 100 + i;
        match i % 4 {
            0 => {
                w.answer(&mut r, id, 200, &[&completion(1, 1)]);
            }
            1 => {
                w.answer(&mut r, id, 503, &[b"{}"]);
            }
            2 => {} // client gone before any answer
            _ => {
                w.host.enter(id);
                w.host.with_stream(id, |s| {
                    s.response_headers = vec![(":status".into(), "200".into())]
                });
                r.on_response_headers(&w.host, false);
            }
        }
        w.host.enter(id);
        r.on_log(&w.host);
    }
    assert_eq!(in_flight(&world), 0);
}

/// A `RateLimitResponse`: overall code and one status code per descriptor (1 OK, 2 over).
fn rls_response(overall: u8, codes: &[u8]) -> Vec<u8> {
    let mut b = vec![0x08, overall];
    for c in codes {
        b.extend_from_slice(&[0x12, 2, 0x08, *c]);
    }
    b
}

fn rls_config(mode: &str) -> serde_json::Value {
    keyed_config(serde_json::json!({
        "rate_limit": {"cluster": "rls", "domain": "llmux", "timeout_ms": 500, "failure_mode": mode}
    }))
}

#[test]
fn rls_admits_refuses_and_charges_once() {
    let world = World::new();
    let w = worker(&world, &rls_config("closed"));
    let two = ("authorization", "Bearer sk-two");
    // Admitted: the request waits for the service, then resumes.
    let (mut r, a) = w.send(20, &[two], USER);
    assert_eq!(a, Action::Pause);
    let calls = w.host.take_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].cluster, "rls");
    // Two descriptors: the key's rpm and tpm.
    w.host.set_grpc_response(&rls_response(1, &[1, 1]));
    let n = rls_response(1, &[1, 1]).len();
    r.on_grpc_call_response(&w.host, calls[0].token, 0, n);
    assert_eq!(w.host.stream(20).resumed, vec![Direction::Request]);
    // The answer's end is held until the usage charge is answered.
    w.host.enter(20);
    w.host.with_stream(20, |s| {
        s.response_headers = vec![(":status".into(), "200".into())]
    });
    r.on_response_headers(&w.host, false);
    let body = completion(3, 2);
    w.host.with_stream(20, |s| s.response_body = body.clone());
    assert_eq!(r.on_response_body(&w.host, body.len(), true), Action::Pause);
    let charge = w.host.take_calls();
    assert_eq!(charge.len(), 1, "one charge: {charge:?}");
    // Sent from the root context: the client going away cannot cancel it.
    assert_eq!(charge[0].context, 1);
    // The tpm descriptor, hits_addend 4: 5 tokens less the hit admission already counted.
    assert!(charge[0].body.ends_with(&[0x18, 4]), "{:?}", charge[0].body);
    r.on_grpc_call_response(&w.host, charge[0].token, 0, n);
    assert_eq!(
        w.host.stream(20).resumed,
        vec![Direction::Request, Direction::Response]
    );
    r.on_log(&w.host);
    assert!(w.host.take_calls().is_empty(), "charged exactly once");

    // Over the limit: 429 in the OpenAI shape, never forwarded.
    let (_r, _) = w.send(21, &[two], USER);
    let calls = w.host.take_calls();
    w.host.set_grpc_response(&rls_response(2, &[2, 1]));
    let mut r = _r;
    r.on_grpc_call_response(&w.host, calls[0].token, 0, n);
    let reply = w.host.stream(21).local_response.unwrap();
    assert_eq!(reply.status, 429);
    assert!(String::from_utf8_lossy(&reply.body).contains("\"error\""));
    r.on_log(&w.host);

    // The service failing (gRPC status 14) with failure_mode closed: 503.
    let (mut r, _) = w.send(22, &[two], USER);
    let calls = w.host.take_calls();
    r.on_grpc_call_response(&w.host, calls[0].token, 14, 0);
    assert_eq!(w.status(22), Some(503));
    r.on_log(&w.host);
    assert!(
        w.host.take_calls().is_empty(),
        "a refused request is not charged"
    );
}

#[test]
fn rls_unreachable_fails_open_to_local_counters() {
    let world = World::new();
    let w = worker(&world, &rls_config("open"));
    w.host.fail("grpc_call");
    let two = ("authorization", "Bearer sk-two");
    for id in 30..32 {
        let (mut r, a) = w.send(id, &[two], USER);
        assert_eq!(a, Action::Continue, "request {id}");
        r.on_log(&w.host);
    }
    // The key's rpm of 2 is enforced locally.
    let (mut r, _) = w.send(32, &[two], USER);
    assert_eq!(w.status(32), Some(429));
    r.on_log(&w.host);
}

fn failover_config() -> serde_json::Value {
    serde_json::json!({
        "providers": {"a": {"type": "openai", "cluster": "ca", "api_key": "ka"},
                      "b": {"type": "openai", "cluster": "cb", "api_key": "kb"}},
        "models": [{"name": "gpt", "deployments": [{"provider": "a"}], "fallbacks": ["gpt-b"]},
                   {"name": "gpt-b", "deployments": [{"provider": "b"}]}],
        "router": {"attempts_cluster": "llmux_attempts"}
    })
}

/// One attempt of the upstream stage on stream `id` with the downstream request's headers and
/// body; the provider answers `status` and `body`. Returns the attempt and the response headers.
fn attempt(
    w: &Worker,
    id: u32,
    attempt_id: &str,
    status: u16,
    body: &[u8],
) -> (Attempt, Vec<(String, String)>) {
    let h = &w.host;
    h.enter(id);
    h.with_stream(id, |s| {
        s.request_headers = vec![
            (":path".into(), "/v1/chat/completions".into()),
            (ATTEMPT_ID_HEADER.into(), attempt_id.into()),
        ];
        s.request_body = USER.as_bytes().to_vec();
        s.response_headers = vec![(":status".into(), status.to_string())];
        s.response_body = body.to_vec();
    });
    let mut a = w.upstream.new_attempt(id);
    if a.on_request_headers(h, false) == Action::Pause {
        assert_eq!(a.on_request_body(h, USER.len(), true), Action::Continue);
    }
    a.on_response_headers(h, false);
    a.on_response_body(h, body.len(), true);
    (a, h.stream(id).response_headers)
}

#[test]
fn failover_retries_on_the_fallback_and_the_downstream_finishes_with_its_answer() {
    let world = World::new();
    let w = worker(&world, &failover_config());
    let (mut r, a) = w.send(40, &[], USER);
    assert_eq!(a, Action::Continue);
    let s = w.host.stream(40);
    assert_eq!(
        s.header(HeaderMap::Request, "x-llmux-cluster"),
        Some("llmux_attempts")
    );
    let id = s
        .header(HeaderMap::Request, ATTEMPT_ID_HEADER)
        .unwrap()
        .to_string();
    // First attempt: deployment a answers 500, the router is told to retry.
    let (mut first, headers) = attempt(&w, 41, &id, 500, br#"{"error":{"message":"x"}}"#);
    assert!(headers.iter().any(|(k, v)| k == RETRY_HEADER && v == "1"));
    assert_eq!(
        w.host
            .stream(41)
            .header(HeaderMap::Request, "x-llmux-cluster"),
        Some("ca")
    );
    first.on_log(&w.host);
    // Second attempt: the fallback b answers.
    let (mut second, headers) = attempt(&w, 42, &id, 200, &completion(2, 2));
    assert!(!headers.iter().any(|(k, _)| k == RETRY_HEADER));
    assert_eq!(
        w.host
            .stream(42)
            .header(HeaderMap::Request, "authorization"),
        Some("Bearer kb")
    );
    second.on_log(&w.host);
    let out = w.answer(&mut r, 40, 200, &[&completion(2, 2)]);
    assert!(!out.is_empty());
    r.on_log(&w.host);
    let m = world.metrics();
    let failovers: u64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("llmux.router.failovers"))
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(failovers, 1, "{m:?}");
    // Both deployments' in-flight counts are back to zero, and the plan is gone.
    for k in world
        .shared_keys()
        .iter()
        .filter(|k| k.starts_with("llmux.d."))
    {
        let st = DeploymentState::decode(&world.shared_value(k).unwrap());
        assert_eq!(st.in_flight, 0, "{k}");
    }
    assert!(w.root.vm.as_ref().unwrap().registry.is_empty());
}

#[test]
fn an_attempt_without_a_plan_passes_through() {
    let world = World::new();
    let w = worker(&world, &failover_config());
    let (mut a, headers) = attempt(&w, 50, "999", 200, b"{}");
    assert!(!headers.iter().any(|(k, _)| k == RETRY_HEADER));
    // Nothing was changed on its way: no cluster named, no body rewritten.
    let s = w.host.stream(50);
    assert_eq!(s.header(HeaderMap::Request, "x-llmux-cluster"), None);
    assert_eq!(s.request_body, USER.as_bytes());
    a.on_log(&w.host);
}

#[test]
fn a_stream_cut_at_every_byte_reaches_the_client_whole() {
    let world = World::new();
    let w = worker(&world, &keyed_config(serde_json::json!({})));
    let events = [
        r#"{"type":"message_start","message":{"id":"m1","type":"message","role":"assistant","model":"claude-x","content":[],"usage":{"input_tokens":3,"output_tokens":0}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hel"}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}"#,
        r#"{"type":"message_stop"}"#,
    ];
    let stream: Vec<u8> = events
        .iter()
        .flat_map(|e| format!("event: x\ndata: {e}\n\n").into_bytes())
        .collect();
    let body = chat_body("claude", true);
    let run = |cut: usize, id: u32| -> Vec<u8> {
        let (mut r, _) = w.send(id, &[ONE], &body);
        let out = w.answer(&mut r, id, 200, &[&stream[..cut], &stream[cut..]]);
        r.on_log(&w.host);
        out
    };
    let whole = run(stream.len(), 60);
    let text = String::from_utf8_lossy(&whole);
    assert!(
        text.contains("\"hel\"") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    // `created` comes from the clock, which does not move here: every cut is byte-identical.
    for cut in 0..stream.len() {
        assert_eq!(run(cut, 61), whole, "cut at {cut}");
    }
    assert_eq!(parallel_slots(&world, "one"), 0);
}

#[test]
fn bad_configuration_is_refused_and_garbage_requests_get_openai_errors() {
    let world = World::new();
    let host = MemHost::new(&world);
    for bad in [
        &b"{"[..],
        b"{\"providers\": 3}",
        b"{\"stage\": \"down\"}",
        b"",
    ] {
        *host.configuration.borrow_mut() = bad.to_vec();
        let mut root = Root::new(1, Rc::new(Registry::default()));
        assert!(
            !root.configure(&host, bad.len()),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let w = worker(&world, &keyed_config(serde_json::json!({})));
    let mut rng = crate::test_support::XorShift(7);
    for i in 0..200u32 {
        let body = rng.mutate(USER.as_bytes(), b"{}[]\":,x0\\");
        let body = String::from_utf8_lossy(&body).into_owned();
        let (mut r, _) = w.send(1000 + i, &[ONE], &body);
        if let Some(reply) = w.host.stream(1000 + i).local_response {
            assert!(reply.status >= 400, "{body}");
            let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
            assert!(v["error"]["message"].is_string(), "{v}");
        }
        r.on_log(&w.host);
        assert_eq!(parallel_slots(&world, "one"), 0, "{body}");
    }
}

#[test]
fn a_slot_never_taken_is_never_given_back() {
    let world = World::new();
    let cfg = keyed_config(serde_json::json!({}));
    let mut cfg2 = cfg.clone();
    cfg2["auth"]["keys"][0]["max_parallel_requests"] = serde_json::json!(2);
    let w = worker(&world, &cfg2);
    let (mut a, _) = w.send(70, &[ONE], USER);
    assert_eq!(parallel_slots(&world, "one"), 1);
    // Request b loses every compare-and-swap race on the counter: admitted, but uncounted.
    world.lose_cas_races(1000);
    let (mut b, action) = w.send(71, &[ONE], USER);
    world.lose_cas_races(0);
    assert_eq!(action, Action::Continue);
    assert_eq!(parallel_slots(&world, "one"), 1);
    // b ending must not give back a's slot.
    b.on_log(&w.host);
    assert_eq!(
        parallel_slots(&world, "one"),
        1,
        "b released a slot it never took"
    );
    w.host.enter(70);
    a.on_log(&w.host);
    assert_eq!(parallel_slots(&world, "one"), 0);
}

/// The counts of the local (per-instance) limit counters, by shared-data key.
fn local_counts(world: &World) -> Vec<(String, u64)> {
    world
        .shared_keys()
        .into_iter()
        .filter(|k| k.starts_with("llmux.rl."))
        .map(|k| {
            let v = world.shared_value(&k).unwrap_or_default();
            let n = v
                .get(8..16)
                .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
            (k, n)
        })
        .collect()
}

#[test]
fn refused_requests_are_not_counted() {
    let world = World::new();
    let w = worker(&world, &keyed_config(serde_json::json!({})));
    let two = ("authorization", "Bearer sk-two");
    for id in 80..87 {
        let (mut r, _) = w.send(id, &[two], USER);
        let refused = id >= 82;
        assert_eq!(w.status(id), refused.then_some(429), "request {id}");
        r.on_log(&w.host);
    }
    // Two admitted requests counted, the five refused ones given back. (The admitted ones
    // ended before any answer: their prompt is charged as estimated, ~4 bytes a token.)
    let prompt = u64::from(crate::routing::estimate_prompt_tokens(USER.len()));
    let counts = local_counts(&world);
    assert_eq!(
        counts,
        vec![
            ("llmux.rl.llmux_key.rpm.1m.two".to_string(), 2),
            ("llmux.rl.llmux_key.tpm.1m.two".to_string(), 2 * prompt)
        ]
    );
}

#[test]
fn client_headers_reach_providers_only_from_the_allow_list() {
    let world = World::new();
    let cfg = keyed_config(serde_json::json!({
        "cluster_header": "x-route-to",
        "unknown_paths": "passthrough"
    }));
    let mut cfg = cfg;
    cfg["providers"]["oai"]["client_headers"] = serde_json::json!(["openai-organization"]);
    cfg["providers"]["ant"]["headers"] = serde_json::json!({"anthropic-beta": "configured"});
    let w = worker(&world, &cfg);
    let sent = [
        ONE,
        ("openai-organization", "org-victim"),
        ("openai-project", "proj-victim"),
        ("anthropic-beta", "client-chosen"),
        ("cookie", "session=1"),
        ("user-agent", "OpenAI/Python 1.0"),
        ("x-stainless-os", "Linux"),
        ("x-route-to", "some_other_cluster"),
    ];
    // To the OpenAI deployment: the provider allows openai-organization, nothing else extra.
    let (mut r, _) = w.send(90, &sent, USER);
    let s = w.host.stream(90);
    let get = |name| s.header(HeaderMap::Request, name);
    assert_eq!(get("openai-organization"), Some("org-victim"));
    for gone in ["openai-project", "anthropic-beta", "cookie"] {
        assert_eq!(get(gone), None, "{gone}");
    }
    assert_eq!(get("user-agent"), Some("OpenAI/Python 1.0"));
    assert_eq!(get("x-stainless-os"), Some("Linux"));
    assert_eq!(
        get("x-route-to"),
        Some("mock"),
        "the gateway picks the cluster"
    );
    r.on_log(&w.host);
    // To the Anthropic deployment: the provider's own anthropic-beta, not the client's.
    let (mut r, _) = w.send(91, &sent, &chat_body("claude", false));
    let s = w.host.stream(91);
    assert_eq!(s.header(HeaderMap::Request, "openai-organization"), None);
    assert_eq!(
        s.header(HeaderMap::Request, "anthropic-beta"),
        Some("configured")
    );
    r.on_log(&w.host);
    // A request the gateway passes through (unknown path): the client cannot name the cluster.
    let h = &w.host;
    h.enter(92);
    h.with_stream(92, |s| {
        s.request_headers = vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/healthz".into()),
            ("x-route-to".into(), "admin_cluster".into()),
        ]
    });
    let mut r = w.root.new_request(92);
    assert_eq!(r.on_request_headers(h, true), Action::Continue);
    assert_eq!(h.stream(92).header(HeaderMap::Request, "x-route-to"), None);
    r.on_log(h);
}

#[test]
fn header_identity_is_read_before_the_header_is_kept_from_the_provider() {
    let world = World::new();
    let cfg = keyed_config(serde_json::json!({
        "identity": {"source": "header", "headers": {"user": "X-User"}, "limits": {"rpm": 1}}
    }));
    let mut cfg = cfg;
    if let Some(o) = cfg.as_object_mut() {
        o.remove("auth");
    }
    let w = worker(&world, &cfg);
    let (mut r, a) = w.send(95, &[("x-user", "alice")], USER);
    assert_eq!(a, Action::Continue);
    assert_eq!(w.host.stream(95).header(HeaderMap::Request, "x-user"), None);
    r.on_log(&w.host);
    let (mut r, _) = w.send(96, &[("x-user", "alice")], USER);
    assert_eq!(w.status(96), Some(429), "alice's rpm of 1");
    r.on_log(&w.host);
    let (mut r, a) = w.send(97, &[("x-user", "bob")], USER);
    assert_eq!(a, Action::Continue, "bob has his own counter");
    r.on_log(&w.host);
}

#[test]
fn files_and_batches_pass_the_same_admission() {
    let world = World::new();
    let w = worker(
        &world,
        &keyed_config(serde_json::json!({"files_provider": "oai"})),
    );
    let two = ("authorization", "Bearer sk-two");
    let statuses: Vec<Option<u16>> = (0..3)
        .map(|i| {
            let (mut r, _) = w.send_to(110 + i, "GET", "/v1/files", &[two], "");
            r.on_log(&w.host);
            w.status(110 + i)
        })
        .collect();
    // rpm 2: the third is refused, and the admitted ones went to the provider with its key.
    assert_eq!(statuses, vec![None, None, Some(429)]);
    let s = w.host.stream(110);
    assert_eq!(
        s.header(HeaderMap::Request, "x-llmux-cluster"),
        Some("mock")
    );
    assert_eq!(
        s.header(HeaderMap::Request, "authorization"),
        Some("Bearer sk-provider")
    );
    // Key `one` holds a parallel slot while its upload runs, and gives it back.
    let (mut r, a) = w.send_to(120, "POST", "/v1/files", &[ONE], "");
    assert_eq!(a, Action::Continue);
    assert_eq!(parallel_slots(&world, "one"), 1);
    r.on_log(&w.host);
    assert_eq!(parallel_slots(&world, "one"), 0);
}

#[test]
fn usage_that_never_comes_is_estimated_and_charged_from_the_root() {
    let world = World::new();
    let w = worker(&world, &rls_config("open"));
    let two = ("authorization", "Bearer sk-two");
    let body = chat_body("gpt", true);
    let (mut r, _) = w.send(130, &[two], &body);
    let calls = w.host.take_calls();
    w.host.set_grpc_response(&rls_response(1, &[1, 1]));
    r.on_grpc_call_response(&w.host, calls[0].token, 0, 12);
    // Ten content chunks reach the client (OpenAI sends usage only in the last chunk), then
    // the client goes away: on_log without the end of the stream.
    w.host.enter(130);
    w.host.with_stream(130, |s| {
        s.response_headers = vec![(":status".into(), "200".into())]
    });
    r.on_response_headers(&w.host, false);
    let mut chunks = String::new();
    for i in 0..10 {
        chunks.push_str(&format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    w.host
        .with_stream(130, |s| s.response_body = chunks.clone().into_bytes());
    r.on_response_body(&w.host, chunks.len(), false);
    w.host.drop_stream(130);
    r.on_log(&w.host);
    let charges = w.host.take_calls();
    assert_eq!(charges.len(), 1, "the abort is charged: {charges:?}");
    assert_eq!(charges[0].context, 1, "from the root context");
    // tokens = prompt estimate + 9 completion tokens (10 events less the first), less the
    // hit admission counted.
    let prompt = u64::from(crate::routing::estimate_prompt_tokens(body.len()));
    let hits = prompt + 9 - 1;
    let mut tail = vec![0x18];
    let mut n = hits;
    while n >= 0x80 {
        tail.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    tail.push(n as u8);
    assert!(
        charges[0].body.ends_with(&tail),
        "{:?} ~ {hits}",
        charges[0].body
    );
}

fn header_identity_config(missing: Option<&str>) -> serde_json::Value {
    let mut identity = serde_json::json!({
        "source": "header", "headers": {"user": "X-User"}, "limits": {"rpm": 1000}
    });
    if let Some(m) = missing {
        identity["missing"] = serde_json::json!(m);
    }
    let mut cfg = keyed_config(serde_json::json!({ "identity": identity }));
    if let Some(o) = cfg.as_object_mut() {
        o.remove("auth");
    }
    cfg
}

#[test]
fn a_missing_or_oversized_identity_is_refused_or_bucketed() {
    let world = World::new();
    let w = worker(&world, &header_identity_config(None));
    let (mut r, _) = w.send(140, &[], USER);
    assert_eq!(w.status(140), Some(401), "no identity, no limits: refused");
    r.on_log(&w.host);
    let long = "u".repeat(200);
    let (mut r, _) = w.send(141, &[("x-user", &long)], USER);
    assert_eq!(w.status(141), Some(400));
    r.on_log(&w.host);
    // With a bucket, callers without the header share one identity's limits.
    let world = World::new();
    let w = worker(&world, &header_identity_config(Some("bucket:anonymous")));
    let (mut r, a) = w.send(142, &[], USER);
    assert_eq!(a, Action::Continue);
    r.on_log(&w.host);
    assert!(
        world
            .shared_keys()
            .iter()
            .any(|k| k.starts_with("llmux.rl.")),
        "the anonymous bucket is counted"
    );
}

#[test]
fn distinct_identities_cannot_grow_shared_data_without_bound() {
    let world = World::new();
    let w = worker(&world, &header_identity_config(None));
    let n = 20_000u32;
    for i in 0..n {
        let id = 1000 + i;
        let user = format!("attacker-{i}-{}", "x".repeat(100));
        let (mut r, a) = w.send(id, &[("x-user", &user)], USER);
        assert_eq!(a, Action::Continue);
        w.host.drop_stream(id);
        r.on_log(&w.host);
    }
    let keys = world.shared_keys();
    let counters = keys.iter().filter(|k| k.starts_with("llmux.rl.")).count() as u64;
    assert!(
        counters <= super::admission::IDENTITY_SLOTS,
        "{counters} counters"
    );
    assert!(
        keys.iter().all(|k| k.len() < 80),
        "no key carries a caller's value"
    );
}

#[test]
fn a_broken_stream_is_continued_on_the_fallback_and_every_counter_ends_at_zero() {
    let world = World::new();
    let mut cfg = failover_config();
    cfg["auth"] = serde_json::json!({"keys": [
        {"key_sha256": sha("sk-one"), "alias": "one", "max_parallel_requests": 1}
    ]});
    let w = worker(&world, &cfg);
    let (mut r, a) = w.send(150, &[ONE], &chat_body("gpt", true));
    assert_eq!(a, Action::Continue);
    assert_eq!(parallel_slots(&world, "one"), 1);
    // The stream the client gets breaks off after "Hel" + "lo" (no finish, no [DONE]).
    let chunk = |t: &str| {
        format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{t}\"}},\"finish_reason\":null}}]}}\n\n")
    };
    let stream = format!("{}{}", chunk("Hel"), chunk("lo"));
    let got = w.answer(&mut r, 150, 200, &[stream.as_bytes(), b""]);
    let calls = w.host.take_calls();
    assert_eq!(
        calls.len(),
        1,
        "the continuation is asked of the fallback: {calls:?}"
    );
    assert_eq!(calls[0].cluster, "cb");
    assert!(String::from_utf8_lossy(&calls[0].body).contains("Hello"));
    // The fallback answers; the held end of the stream is replaced by the continuation.
    let answer = completion(4, 2);
    let answer = String::from_utf8_lossy(&answer).replace("hello", " world");
    w.host.enter(150);
    w.host.set_call_response(200, answer.as_bytes());
    r.on_http_call_response(&w.host, calls[0].token, answer.len());
    assert_eq!(w.host.stream(150).resumed, vec![Direction::Response]);
    let tail = String::from_utf8_lossy(&w.host.stream(150).response_body).into_owned();
    let all = format!("{}{tail}", String::from_utf8_lossy(&got));
    assert!(all.contains("Hel") && all.contains(" world"), "{all}");
    assert!(all.ends_with("data: [DONE]\n\n"), "{all}");
    r.on_log(&w.host);
    let m = world.metrics();
    let recovered: u64 = m
        .iter()
        .filter(|(k, _)| k.contains("recover") && k.contains("recovered"))
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(recovered, 1, "{m:?}");
    // The continuation's usage (4 + 2 tokens) is this request's: counted, as it is charged.
    let tokens: u64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("llmux.gen_ai.client.token.usage"))
        .filter(|(k, _)| k.ends_with(".input") || k.ends_with(".output"))
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(tokens, 6, "{m:?}");
    assert_eq!(parallel_slots(&world, "one"), 0);
    assert!(w.root.vm.as_ref().unwrap().registry.is_empty());
    for k in world
        .shared_keys()
        .iter()
        .filter(|k| k.starts_with("llmux.d."))
    {
        let st = DeploymentState::decode(&world.shared_value(k).unwrap());
        assert_eq!(st.in_flight, 0, "{k}");
    }
}

#[test]
fn vertex_token_is_fetched_once_from_the_root_and_waiting_requests_resume_with_it() {
    let world = World::new();
    let key = include_str!("../../tests/fixtures/vertex/service_account.json");
    let cfg = serde_json::json!({
        "providers": {"vx": {"type": "vertex", "cluster": "vertex", "project": "p",
                             "location": "us-central1", "service_account_key": key,
                             "token_cluster": "oauth", "token_timeout_ms": 2000}},
        "models": [{"name": "gem", "deployments": [{"provider": "vx", "model": "gemini-2.5-flash"}]}]
    });
    let mut w = worker(&world, &cfg);
    // Two requests arrive before any token: both wait, one fetch is scheduled.
    let body = chat_body("gem", false);
    let (mut a, act_a) = w.send(160, &[], &body);
    let (mut b, act_b) = w.send(161, &[], &body);
    assert_eq!((act_a, act_b), (Action::Pause, Action::Pause));
    assert!(
        w.host.take_calls().is_empty(),
        "fetches go out from the tick"
    );
    assert!(w.host.tick_ms.get() > 0);
    w.host.enter(1);
    w.root.on_tick(&w.host);
    let calls = w.host.take_calls();
    assert_eq!(calls.len(), 1, "one fetch for both: {calls:?}");
    assert_eq!(
        (calls[0].cluster.as_str(), calls[0].context),
        ("oauth", 1),
        "from the root"
    );
    // The token endpoint answers; both requests resume with the bearer token.
    let answer = br#"{"access_token":"ya29.token","expires_in":3599,"token_type":"Bearer"}"#;
    w.host.set_call_response(200, answer);
    w.root
        .on_http_call_response(&w.host, calls[0].token, answer.len());
    for id in [160, 161] {
        let s = w.host.stream(id);
        assert_eq!(s.resumed, vec![Direction::Request], "{id}");
        assert_eq!(
            s.header(HeaderMap::Request, "authorization"),
            Some("Bearer ya29.token")
        );
    }
    // The next request uses the cached token at once.
    let (mut c, act_c) = w.send(162, &[], &body);
    assert_eq!(act_c, Action::Continue);
    assert!(w.host.take_calls().is_empty());
    for (r, id) in [(&mut a, 160), (&mut b, 161), (&mut c, 162)] {
        w.host.enter(id);
        r.on_log(&w.host);
    }
}

#[test]
fn files_and_batches_requests_are_recorded() {
    let world = World::new();
    let mut w = worker(
        &world,
        &keyed_config(serde_json::json!({
            "files_provider": "oai",
            "export": {"format": "webhook", "cluster": "collector", "batch_size": 1}
        })),
    );
    let two = ("authorization", "Bearer sk-two");
    let (mut r, _) = w.send_to(170, "GET", "/v1/batches/batch_1?limit=2", &[two], "");
    w.host.with_stream(170, |s| {
        s.response_headers = vec![(":status".into(), "200".into())]
    });
    r.on_response_headers(&w.host, true);
    r.on_log(&w.host);
    // The root's tick sends the record to the collector.
    w.host.enter(1);
    w.root.on_tick(&w.host);
    let calls = w.host.take_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].cluster, "collector");
    let body = String::from_utf8_lossy(&calls[0].body);
    for want in [
        r#""model":"/v1/batches""#,
        r#""provider":"oai""#,
        r#""status":200"#,
        r#""key_alias":"two""#,
    ] {
        assert!(body.contains(want), "{want} in {body}");
    }
}

/// Headers of a request on stream `id` whose body Envoy never hands over (the filter flag is
/// missing): only the headers callback runs.
fn pause_for_body(w: &Worker, id: u32, path: &str, headers: &[(&str, &str)]) -> Request {
    let h = &w.host;
    h.enter(id);
    h.with_stream(id, |s| {
        s.request_headers = [(":method", "POST"), (":path", path)]
            .iter()
            .chain(headers)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    });
    let mut r = w.root.new_request(id);
    assert_eq!(r.on_request_headers(h, false), Action::Pause);
    r
}

/// What Envoy's `request.total_size` reads for stream `id` once `body` bytes arrived.
fn body_arrived(w: &Worker, id: u32, body: usize) {
    w.host.with_stream(id, |s| {
        let headers: usize = s
            .request_headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        let total = (headers + body) as i64;
        s.properties
            .insert("request.total_size".into(), total.to_le_bytes().to_vec());
    });
}

fn tick(w: &mut Worker) {
    w.host.enter(1);
    w.root.on_tick(&w.host);
}

#[test]
fn a_withheld_body_is_answered_in_the_client_api_shape_not_left_hanging() {
    let world = World::new();
    let mut w = worker(&world, &keyed_config(serde_json::json!({})));
    assert_eq!(
        w.host.tick_ms.get(),
        super::body_watch::TICK_MS,
        "the watch ticks"
    );
    let body = chat_body("gpt", false);
    let len = body.len().to_string();
    let _chat = pause_for_body(
        &w,
        7,
        "/v1/chat/completions",
        &[ONE, ("content-length", &len)],
    );
    let _msgs = pause_for_body(&w, 8, "/v1/messages", &[ONE, ("content-length", &len)]);
    // Both bodies arrive at Envoy; LLMux's body callback never runs.
    body_arrived(&w, 7, body.len());
    body_arrived(&w, 8, body.len());
    tick(&mut w);
    assert_eq!(
        w.status(7),
        None,
        "within the grace period nothing is answered"
    );
    world.advance_ms(1100);
    tick(&mut w);
    let chat = w.host.stream(7).local_response.expect("answered");
    assert_eq!(chat.status, 500);
    let v: serde_json::Value = serde_json::from_slice(&chat.body).unwrap();
    assert_eq!(v["error"]["code"], "request_body_withheld", "{v}");
    let msgs = w.host.stream(8).local_response.expect("answered");
    let v: serde_json::Value = serde_json::from_slice(&msgs.body).unwrap();
    assert_eq!(v["type"], "error", "Anthropic's error shape: {v}");
    assert_eq!(w.root.vm.as_ref().unwrap().body_watch.waiting(), 0);
}

#[test]
fn a_slow_client_is_not_mistaken_for_a_withheld_body() {
    let world = World::new();
    let mut w = worker(&world, &keyed_config(serde_json::json!({})));
    let body = chat_body("gpt", false);
    let len = body.len().to_string();
    let _r = pause_for_body(
        &w,
        7,
        "/v1/chat/completions",
        &[ONE, ("content-length", &len)],
    );
    // Headers only, then part of the body: still the client's to send.
    body_arrived(&w, 7, 0);
    world.advance_ms(5000);
    tick(&mut w);
    assert_eq!(w.status(7), None);
    body_arrived(&w, 7, body.len() - 1);
    tick(&mut w);
    assert_eq!(w.status(7), None);
    body_arrived(&w, 7, body.len());
    tick(&mut w);
    assert_eq!(w.status(7), Some(500));
}

#[test]
fn the_first_delivered_body_ends_the_watch_and_its_tick() {
    let world = World::new();
    let mut w = worker(&world, &keyed_config(serde_json::json!({})));
    let mut waiting = pause_for_body(&w, 6, "/v1/chat/completions", &[ONE]);
    // Another request's body reaches LLMux: Envoy delivers bodies (the flag is on).
    let (_r, a) = w.send(
        7,
        &[("authorization", "Bearer sk-two")],
        &chat_body("gpt", false),
    );
    assert_eq!(a, Action::Continue);
    let vm = w.root.vm.clone().unwrap();
    assert!(!vm.body_watch.watching());
    assert_eq!(vm.body_watch.waiting(), 0);
    tick(&mut w);
    assert_eq!(w.host.tick_ms.get(), 0, "no exporter, no watch: no tick");
    // A request still waiting for its body is left alone, however long it waits.
    body_arrived(&w, 6, 10);
    world.advance_ms(10_000);
    tick(&mut w);
    assert_eq!(w.status(6), None);
    // Later pauses are not noted.
    let _later = pause_for_body(&w, 9, "/v1/chat/completions", &[ONE]);
    assert_eq!(vm.body_watch.waiting(), 0);
    w.host.enter(6);
    waiting.on_log(&w.host);
}

#[test]
fn an_ended_or_vanished_stream_leaves_the_watch() {
    let world = World::new();
    let mut w = worker(&world, &keyed_config(serde_json::json!({})));
    let vm = w.root.vm.clone().unwrap();
    let mut r = pause_for_body(&w, 7, "/v1/chat/completions", &[ONE]);
    let _gone = pause_for_body(&w, 8, "/v1/chat/completions", &[ONE]);
    assert_eq!(vm.body_watch.waiting(), 2);
    w.host.enter(7);
    r.on_log(&w.host);
    assert_eq!(vm.body_watch.waiting(), 1);
    w.host.drop_stream(8);
    world.advance_ms(2000);
    tick(&mut w);
    assert_eq!(vm.body_watch.waiting(), 0);
    assert!(
        vm.body_watch.watching(),
        "still watching: no body has been delivered"
    );
}

#[test]
fn an_anthropic_provider_gets_only_the_betas_it_allows() {
    let world = World::new();
    let mut cfg = keyed_config(serde_json::json!({}));
    cfg["providers"]["ant"]["anthropic_beta"] =
        serde_json::json!(["context-management-2025-06-27", "interleaved-thinking-*"]);
    let w = worker(&world, &cfg);
    let messages =
        r#"{"model":"claude","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let beta = (
        "anthropic-beta",
        "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,files-api-2025-04-14",
    );
    let (mut r, _) = w.send_to(5, "POST", "/v1/messages?beta=true", &[ONE, beta], messages);
    assert_eq!(
        w.host
            .stream(5)
            .header(HeaderMap::Request, "anthropic-beta"),
        Some("interleaved-thinking-2025-05-14,context-management-2025-06-27")
    );
    r.on_log(&w.host);
    // None allowed: the header goes.
    let only_other = ("anthropic-beta", "files-api-2025-04-14");
    let (mut r, _) = w.send_to(6, "POST", "/v1/messages", &[ONE, only_other], messages);
    assert_eq!(
        w.host
            .stream(6)
            .header(HeaderMap::Request, "anthropic-beta"),
        None
    );
    r.on_log(&w.host);
    // Another provider never gets it.
    let (mut r, _) = w.send_to(7, "POST", "/v1/chat/completions", &[ONE, beta], USER);
    assert_eq!(
        w.host
            .stream(7)
            .header(HeaderMap::Request, "anthropic-beta"),
        None
    );
    r.on_log(&w.host);
    // Only for Anthropic-protocol providers.
    let mut bad = cfg.clone();
    bad["providers"]["oai"]["anthropic_beta"] = serde_json::json!(["x"]);
    let h = MemHost::new(&world);
    let bytes = bad.to_string().into_bytes();
    let n = bytes.len();
    *h.configuration.borrow_mut() = bytes;
    h.add_root(1);
    assert!(!Root::new(1, Rc::new(Registry::default())).configure(&h, n));
}

#[test]
fn token_counts_are_estimated_locally_or_admitted_and_never_charged_tokens() {
    let world = World::new();
    let w = worker(&world, &keyed_config(serde_json::json!({})));
    let two = ("authorization", "Bearer sk-two");
    let count = |model: &str| {
        format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi there"}}]}}"#)
    };
    // gpt (OpenAI protocol): estimated by the gateway, before admission, three times over a
    // key with rpm 2.
    for id in 150..153 {
        let body = count("gpt");
        let (mut r, a) = w.send_to(id, "POST", "/v1/messages/count_tokens", &[two], &body);
        assert_eq!(a, Action::Pause);
        let reply = w.host.stream(id).local_response.expect("answered locally");
        assert_eq!(reply.status, 200);
        let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(v["input_tokens"], body.len() as u64 / 4);
        assert!(reply
            .headers
            .iter()
            .any(|(k, v)| k == "x-llmux-token-count" && v == "estimate"));
        r.on_log(&w.host);
    }
    assert_eq!(
        local_counts(&world),
        vec![],
        "an estimate counts against no limit"
    );
    // claude (Anthropic): the provider counts; admitted as a request, charged no tokens.
    let (mut r, a) = w.send_to(
        160,
        "POST",
        "/v1/messages/count_tokens",
        &[two],
        &count("claude"),
    );
    assert_eq!(a, Action::Continue);
    let s = w.host.stream(160);
    assert_eq!(
        s.header(HeaderMap::Request, ":path"),
        Some("/v1/messages/count_tokens")
    );
    assert_eq!(s.header(HeaderMap::Request, "x-api-key"), Some("sk-a"));
    let out = w.answer(&mut r, 160, 200, &[br#"{"input_tokens":5000}"#]);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["input_tokens"], 5000);
    r.on_log(&w.host);
    assert_eq!(
        local_counts(&world),
        vec![
            ("llmux.rl.llmux_key.rpm.1m.two".to_string(), 1),
            // The one hit admission takes; the 5000 counted tokens are not charged.
            ("llmux.rl.llmux_key.tpm.1m.two".to_string(), 1)
        ]
    );
}

#[path = "cache_tests.rs"]
mod cache_tests;

// ---------------------------------------------------------------------------------------------
// Remote guardrails on answers (`on: ["response"]`): the whole answer is held until the verdict.

fn remote_answer_config(on_failure: &str) -> serde_json::Value {
    keyed_config(
        serde_json::json!({"guardrails": [{"name": "hook", "on": ["response"],
        "remote": {"type": "webhook", "cluster": "hook", "path": "/check",
                   "on_failure": on_failure, "timeout_ms": 500}}]}),
    )
}

/// The provider's usage counted in the metrics (input + output tokens).
fn tokens_counted(world: &World) -> u64 {
    world
        .metrics()
        .iter()
        .filter(|(k, _)| k.starts_with("llmux.gen_ai.client.token.usage"))
        .filter(|(k, _)| k.ends_with(".input") || k.ends_with(".output"))
        .map(|(_, v)| *v)
        .sum()
}

/// A request on `id` whose whole answer (`completion(3, 2)`, text "hello") is held: returns
/// the request and the guardrail's callout.
fn held_answer(w: &Worker, id: u32) -> (Request, crate::host::mem::Callout) {
    let (mut r, a) = w.send(id, &[ONE], &chat_body("gpt", false));
    assert_eq!(a, Action::Continue, "no request-side check");
    assert!(w.host.take_calls().is_empty());
    let h = &w.host;
    h.enter(id);
    h.with_stream(id, |s| {
        s.response_headers = vec![(":status".into(), "200".into())]
    });
    assert_eq!(
        r.on_response_headers(h, false),
        Action::Pause,
        "headers held"
    );
    let body = completion(3, 2);
    h.with_stream(id, |s| s.response_body = body[..30].to_vec());
    assert_eq!(r.on_response_body(h, 30, false), Action::Pause);
    h.with_stream(id, |s| s.response_body = body.clone());
    assert_eq!(r.on_response_body(h, body.len(), true), Action::Pause);
    let mut calls = w.host.take_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = calls.remove(0);
    assert_eq!(call.cluster, "hook");
    let sent: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(
        sent,
        serde_json::json!({"guardrail": "hook", "direction": "response", "texts": ["hello"]})
    );
    assert!(
        w.host.stream(id).resumed.is_empty(),
        "held until the verdict"
    );
    assert_eq!(
        tokens_counted(&w.host.world),
        0,
        "finished with the verdict"
    );
    (r, call)
}

fn verdict(
    w: &Worker,
    r: &mut Request,
    id: u32,
    call: &crate::host::mem::Callout,
    status: u16,
    body: &[u8],
) {
    w.host.enter(id);
    w.host.set_call_response(status, body);
    r.on_http_call_response(&w.host, call.token, body.len());
}

#[test]
fn a_remote_answer_check_allows_the_held_answer() {
    let world = World::new();
    let w = worker(&world, &remote_answer_config("closed"));
    let (mut r, call) = held_answer(&w, 200);
    verdict(&w, &mut r, 200, &call, 200, br#"{"action": "allow"}"#);
    let s = w.host.stream(200);
    assert_eq!(s.resumed, vec![Direction::Response]);
    assert_eq!(s.header(HeaderMap::Response, ":status"), Some("200"));
    let v: serde_json::Value = serde_json::from_slice(&s.response_body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hello");
    assert_eq!(tokens_counted(&world), 5);
    r.on_log(&w.host);
    assert_eq!(tokens_counted(&world), 5, "charged exactly once");
    assert_eq!(parallel_slots(&world, "one"), 0);
    let m = world.metrics();
    let checks: u64 = m
        .iter()
        .filter(|(k, _)| k.contains("guard.checks") && k.contains("direction.response"))
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(checks, 1, "{m:?}");
}

#[test]
fn a_remote_answer_block_replaces_the_answer_and_still_charges_it() {
    let world = World::new();
    let w = worker(&world, &remote_answer_config("open"));
    let (mut r, call) = held_answer(&w, 201);
    verdict(
        &w,
        &mut r,
        201,
        &call,
        200,
        br#"{"action": "block", "reason": "no"}"#,
    );
    let s = w.host.stream(201);
    assert_eq!(s.resumed, vec![Direction::Response]);
    assert_eq!(s.header(HeaderMap::Response, ":status"), Some("400"));
    let v: serde_json::Value = serde_json::from_slice(&s.response_body).unwrap();
    assert_eq!(v["error"]["code"], "guardrail_blocked");
    assert_eq!(v["error"]["param"], "hook");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("the answer was blocked by guardrail `hook`"));
    assert!(!String::from_utf8_lossy(&s.response_body).contains("hello"));
    assert_eq!(tokens_counted(&world), 5, "the provider did the work");
    r.on_log(&w.host);
    assert_eq!(tokens_counted(&world), 5);
    assert_eq!(parallel_slots(&world, "one"), 0);
}

#[test]
fn a_failed_remote_answer_check_fails_open_or_closed() {
    for (on_failure, status, body) in [
        ("closed", 500u16, &b"oops"[..]),
        ("closed", 0, &b""[..]), // no answer: the callout timed out or was reset
        ("open", 500, &b"oops"[..]),
        ("open", 200, &b"not json"[..]),
    ] {
        let world = World::new();
        let w = worker(&world, &remote_answer_config(on_failure));
        let (mut r, call) = held_answer(&w, 202);
        verdict(&w, &mut r, 202, &call, status, body);
        let s = w.host.stream(202);
        assert_eq!(
            s.resumed,
            vec![Direction::Response],
            "{on_failure} {status}"
        );
        let v: serde_json::Value = serde_json::from_slice(&s.response_body).unwrap();
        if on_failure == "closed" {
            assert_eq!(s.header(HeaderMap::Response, ":status"), Some("503"));
            assert_eq!(v["error"]["code"], "guardrail_unavailable");
        } else {
            assert_eq!(s.header(HeaderMap::Response, ":status"), Some("200"));
            assert_eq!(v["choices"][0]["message"]["content"], "hello");
        }
        assert_eq!(tokens_counted(&world), 5);
        r.on_log(&w.host);
        assert_eq!(tokens_counted(&world), 5);
        assert_eq!(parallel_slots(&world, "one"), 0);
        let errors: u64 = world
            .metrics()
            .iter()
            .filter(|(k, _)| k.contains("guard.errors"))
            .map(|(_, v)| *v)
            .sum();
        assert_eq!(errors, 1);
    }
}

#[test]
fn a_client_gone_while_the_answer_waits_is_finished_once_and_a_late_verdict_does_nothing() {
    let world = World::new();
    let w = worker(&world, &remote_answer_config("closed"));
    let (mut r, call) = held_answer(&w, 203);
    r.on_log(&w.host);
    assert_eq!(tokens_counted(&world), 5, "charged when the stream ends");
    assert_eq!(parallel_slots(&world, "one"), 0);
    verdict(&w, &mut r, 203, &call, 200, br#"{"action": "block"}"#);
    let s = w.host.stream(203);
    assert!(s.resumed.is_empty());
    assert_eq!(s.header(HeaderMap::Response, ":status"), Some("200"));
    assert_eq!(tokens_counted(&world), 5);
    assert_eq!(parallel_slots(&world, "one"), 0, "released once");
}

#[test]
fn streamed_answers_are_not_held_for_remote_guardrails_and_say_so() {
    let world = World::new();
    let w = worker(&world, &remote_answer_config("closed"));
    let (mut r, a) = w.send(204, &[ONE], &chat_body("gpt", true));
    assert_eq!(a, Action::Continue);
    let chunk = b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let out = w.answer(&mut r, 204, 200, &[&chunk[..]]);
    assert!(String::from_utf8_lossy(&out).contains("[DONE]"));
    assert!(w.host.take_calls().is_empty(), "no callout for a stream");
    r.on_log(&w.host);
    let skipped: u64 = world
        .metrics()
        .iter()
        .filter(|(k, _)| k.contains("guard.skipped"))
        .map(|(_, v)| *v)
        .sum();
    assert_eq!(skipped, 1);
}
