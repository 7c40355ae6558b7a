//! The response cache on the request path, driven through [`MemHost`]: the exact hit served as
//! a local reply after the request's limits, the semantic lookup's callouts and deadline, the
//! store once complete, and what a hit charges.

use super::*;
use crate::cache::local::HEADER_BYTES;

fn cache_config(cache: serde_json::Value) -> serde_json::Value {
    let mut c = keyed_config(serde_json::json!({ "cache": cache }));
    if let Some(models) = c["models"].as_array_mut() {
        models.push(serde_json::json!({"name": "embed", "deployments": [{"provider": "oai", "model": "semantic-embed"}]}));
    }
    c
}

const TWO: (&str, &str) = ("authorization", "Bearer sk-two");
const Q: &str = r#"{"model":"gpt","temperature":0,"messages":[{"role":"user","content":"capital of France?"}]}"#;

fn local_reply(w: &Worker, id: u32) -> Option<crate::host::mem::LocalReply> {
    w.host.stream(id).local_response
}

fn header<'a>(r: &'a crate::host::mem::LocalReply, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn exact_hit_is_a_local_reply_that_charges_no_tokens_but_counts_a_request() {
    let world = World::new();
    let w = worker(&world, &cache_config(serde_json::json!({})));
    let (mut r, a) = w.send(1, &[TWO], Q);
    assert_eq!(a, Action::Continue);
    let out = w.answer(&mut r, 1, 200, &[&completion(40, 2)]);
    assert!(!out.is_empty());
    assert_eq!(
        w.host
            .stream(1)
            .header(HeaderMap::Response, "x-llmux-cache"),
        Some("miss")
    );
    r.on_log(&w.host);
    assert_eq!(world.metric("llmux.cache.stores"), Some(1));
    // The same question, another stream: answered by the filter, nothing sent upstream.
    let (mut r2, a) = w.send(2, &[TWO], Q);
    assert_eq!(a, Action::Pause);
    let reply = local_reply(&w, 2).expect("a local reply");
    assert_eq!(reply.status, 200);
    assert_eq!(header(&reply, "x-llmux-cache"), Some("hit"));
    assert!(header(&reply, "x-ratelimit-remaining-requests").is_some());
    let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hello");
    assert_eq!(v["usage"]["prompt_tokens"], 40);
    r2.on_log(&w.host);
    let fs = w.host.stream(2).filter_state;
    assert_eq!(fs.get("llmux_cache").map(|v| &v[..]), Some(&b"hit"[..]));
    assert_eq!(
        fs.get("llmux_input_tokens").map(|v| &v[..]),
        Some(&b"0"[..])
    );
    assert_eq!(
        world.metric("llmux.cache.lookups.llmux.cache_result.hit"),
        Some(1)
    );
    assert!(world.metric("llmux.cache.saved.nanousd").unwrap_or(0) > 0);
    // Key two allows 2 requests a minute: the hit counted, the third request is refused.
    let (_r3, _) = w.send(3, &[TWO], Q);
    assert_eq!(w.status(3), Some(429));
}

#[test]
fn an_error_or_an_unfinished_answer_is_not_stored() {
    let world = World::new();
    let w = worker(&world, &cache_config(serde_json::json!({})));
    let (mut r, _) = w.send(1, &[ONE], Q);
    w.answer(&mut r, 1, 500, &[br#"{"error":{"message":"x"}}"#]);
    r.on_log(&w.host);
    // The client goes away in the middle of a whole answer.
    let (mut r, _) = w.send(2, &[ONE], Q);
    let c = completion(1, 1);
    w.host.enter(2);
    w.host.with_stream(2, |s| {
        s.response_headers = vec![(":status".into(), "200".into())];
        s.response_body = c[..20].to_vec();
    });
    let _ = r.on_response_headers(&w.host, false);
    let _ = r.on_response_body(&w.host, 20, false);
    r.on_log(&w.host);
    assert_eq!(world.metric("llmux.cache.stores"), None);
    assert!(world
        .shared_keys()
        .iter()
        .all(|k| !k.starts_with("llmux.cache.")));
}

#[test]
fn the_store_never_outgrows_its_budget() {
    let world = World::new();
    let w = worker(
        &world,
        &cache_config(serde_json::json!({"max_bytes": 8192, "max_entry_bytes": 4096})),
    );
    for i in 0..12u32 {
        let body = format!(r#"{{"model":"gpt","messages":[{{"role":"user","content":"q{i}"}}]}}"#);
        let (mut r, _) = w.send(10 + i, &[ONE], &body);
        w.answer(&mut r, 10 + i, 200, &[&completion(1, 1)]);
        r.on_log(&w.host);
    }
    let keys: Vec<String> = world
        .shared_keys()
        .into_iter()
        .filter(|k| k.starts_with("llmux.cache."))
        .collect();
    assert!(keys.len() <= 2, "{keys:?}");
    let bytes: usize = keys
        .iter()
        .filter_map(|k| world.shared_value(k))
        .map(|v| v.len())
        .sum();
    assert!(bytes <= 8192 && bytes > 2 * HEADER_BYTES);
    assert!(world.metric("llmux.cache.evictions").unwrap_or(0) >= 9);
}

fn semantic_worker(world: &Rc<World>) -> Worker {
    let w = worker(
        world,
        &cache_config(serde_json::json!({"semantic": {
            "cluster": "chroma", "embedding_model": "embed", "threshold": 0.9,
            "max_temperature": 0.5, "timeout_ms": 300}})),
    );
    // The root finds the collection on its tick.
    w.host.enter(1);
    let mut root = w.root;
    root.on_tick(&w.host);
    let calls = w.host.take_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].cluster, "chroma");
    let answer = br#"{"id":"c0ffee-1","name":"llmux-cache"}"#;
    w.host.set_call_response(200, answer);
    root.on_http_call_response(&w.host, calls[0].token, answer.len());
    Worker { root, ..w }
}

#[test]
fn semantic_lookup_embeds_queries_and_serves_a_close_answer() {
    let world = World::new();
    let w = semantic_worker(&world);
    let (mut r, a) = w.send(5, &[ONE], Q);
    assert_eq!(a, Action::Pause, "waits for the lookup");
    let calls = w.host.take_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].cluster, "mock");
    let sent: serde_json::Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(sent["model"], "semantic-embed");
    assert_eq!(sent["input"], "capital of France?");
    let emb = br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.6,0.8]}],"model":"semantic-embed","usage":{"prompt_tokens":3,"total_tokens":3}}"#;
    w.host.set_call_response(200, emb);
    w.host.enter(5);
    r.on_http_call_response(&w.host, calls[0].token, emb.len());
    let calls = w.host.take_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].cluster, "chroma");
    assert!(calls[0].timeout_ms <= 300);
    let path = calls[0]
        .headers
        .iter()
        .find(|(k, _)| k == ":path")
        .map(|(_, v)| v.clone());
    assert_eq!(
        path.as_deref(),
        Some(
            "/api/v2/tenants/default_tenant/databases/default_database/collections/c0ffee-1/query"
        )
    );
    let canonical = String::from_utf8(completion(9, 4)).unwrap();
    let answer = serde_json::json!({"ids": [["x"]], "distances": [[0.02]],
        "documents": [[canonical]],
        "metadatas": [[{"api": "chat", "prompt_tokens": 9, "completion_tokens": 4, "cost_nanousd": 100}]]})
    .to_string();
    w.host.set_call_response(200, answer.as_bytes());
    w.host.enter(5);
    r.on_http_call_response(&w.host, calls[0].token, answer.len());
    let reply = local_reply(&w, 5).expect("a semantic hit");
    assert_eq!(header(&reply, "x-llmux-cache"), Some("semantic"));
    assert_eq!(header(&reply, "x-llmux-cache-similarity"), Some("0.9800"));
    let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v["llmux_cache"]["kind"], "semantic");
    r.on_log(&w.host);
}

#[test]
fn semantic_miss_goes_upstream_and_is_stored_from_the_root() {
    let world = World::new();
    let w = semantic_worker(&world);
    let (mut r, _) = w.send(5, &[ONE], Q);
    let calls = w.host.take_calls();
    let emb = br#"{"object":"list","data":[{"embedding":[0.6,0.8]}]}"#;
    w.host.set_call_response(200, emb);
    w.host.enter(5);
    r.on_http_call_response(&w.host, calls[0].token, emb.len());
    let calls = w.host.take_calls();
    // Far below the threshold.
    let answer = br#"{"ids":[["x"]],"distances":[[0.5]],"documents":[["{}"]],"metadatas":[[{"api":"chat"}]]}"#;
    w.host.set_call_response(200, answer);
    w.host.enter(5);
    r.on_http_call_response(&w.host, calls[0].token, answer.len());
    assert!(local_reply(&w, 5).is_none());
    assert_eq!(w.host.stream(5).resumed, vec![Direction::Request]);
    w.answer(&mut r, 5, 200, &[&completion(5, 1)]);
    r.on_log(&w.host);
    let calls = w.host.take_calls();
    assert_eq!(calls.len(), 1, "the upsert");
    assert_eq!(
        calls[0].context, 1,
        "made from the root: it outlives the request"
    );
    let v: serde_json::Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(v["embeddings"][0], serde_json::json!([0.6f32, 0.8f32]));
    assert_eq!(v["metadatas"][0]["api"], "chat");
}

#[test]
fn a_failed_or_silent_store_is_a_miss() {
    let world = World::new();
    let w = semantic_worker(&world);
    let (mut r, _) = w.send(5, &[ONE], Q);
    let calls = w.host.take_calls();
    // The embedding call timed out (no headers).
    w.host.set_call_response(0, b"");
    w.host.enter(5);
    r.on_http_call_response(&w.host, calls[0].token, 0);
    assert_eq!(w.host.stream(5).resumed, vec![Direction::Request]);
    assert!(w.host.take_calls().is_empty());
    assert_eq!(
        world.metric("llmux.cache.errors.llmux.cache_store.embedding"),
        Some(1)
    );
    r.on_log(&w.host);
    // The host refuses the call at once: the request goes on without waiting.
    w.host.fail("http_call");
    let (_r, a) = w.send(6, &[ONE], Q);
    assert_eq!(a, Action::Continue);
    w.host.heal();
}
