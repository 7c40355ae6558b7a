//! Native micro-benchmark of LLMux's per-request core: the same calls the Wasm glue makes
//! (`Gateway::on_request_body`, `Exchange::on_response_headers` / `on_response_body`), with no
//! proxy-wasm and no Envoy. Upstream answers are built in the mock provider's exact wire format.
//!
//! `core-bench`              every case, ns per call (median of 7 batches), a table on stdout
//! `core-bench --json`       the same as JSON
//! `core-bench CASE N`       only CASE, N times (the target for `valgrind --tool=callgrind`)

use llmux::client_api::openai::parse_chat_envelope;
use llmux::config::{Config, ProcessEnv};
use llmux::gateway::{BodyAction, BodyRequest, Endpoint, Gateway};
use std::hint::black_box;
use std::time::Instant;

const CONFIG: &str = r#"{
  "providers": {
    "openai": {"type": "openai", "cluster": "mock"},
    "anthropic": {"type": "anthropic", "cluster": "mock"},
    "gemini": {"type": "gemini", "cluster": "mock", "api_key": "k"}
  },
  "models": [
    {"name": "gpt-4o-mini", "deployments": [{"provider": "openai", "model": "gpt-4o-mini"}]},
    {"name": "claude-3-5-haiku", "deployments": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}]},
    {"name": "gemini-2.5-flash", "deployments": [{"provider": "gemini", "model": "gemini-2.5-flash"}]}
  ]
}"#;

/// ~1 KB OpenAI chat request, the shape `bench/run.py` sends.
fn request_1k(model: &str, stream: bool) -> Vec<u8> {
    let filler = "Summarise the following notes about the quarterly planning meeting in three bullet points. ".repeat(8);
    let v = serde_json::json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant. Answer in plain English."},
            {"role": "user", "content": filler.trim_end()},
        ],
        "temperature": 0.2,
        "max_tokens": 256,
        "stream": stream,
    });
    serde_json::to_vec(&v).unwrap()
}

/// ~200 KB request with a base64 PNG "image" (random-looking bytes).
fn request_image(model: &str, size: usize) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut b64 = String::with_capacity(size);
    for _ in 0..size / 4 * 4 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b64.push(alphabet[(x % 64) as usize] as char);
    }
    let v = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{b64}")}},
        ]}],
        "max_tokens": 256,
    });
    serde_json::to_vec(&v).unwrap()
}

fn words(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            if i == 0 {
                format!("w{i}")
            } else {
                format!(" w{i}")
            }
        })
        .collect()
}

/// The mock's non-streamed Anthropic `message`.
fn anthropic_message() -> Vec<u8> {
    let text = "Hello from the mock! You said: Summarise the following notes";
    serde_json::to_vec(&serde_json::json!({
        "id": "msg_mock_1", "type": "message", "role": "assistant",
        "model": "claude-3-5-haiku-20241022",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 250, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": 9}
    }))
    .unwrap()
}

/// The mock's non-streamed OpenAI `chat.completion`.
fn openai_completion() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": "chatcmpl-mock-1", "object": "chat.completion", "created": 1700000000u64,
        "model": "gpt-4o-mini", "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "message": {"role": "assistant",
            "content": "Hello from the mock! You said: Summarise the following notes",
            "refusal": null, "annotations": []}, "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 250, "completion_tokens": 9, "total_tokens": 259,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    }))
    .unwrap()
}

/// The mock's Anthropic SSE stream with `n` text deltas, as one event per element.
fn anthropic_stream_events(n: usize) -> Vec<Vec<u8>> {
    let usage = |out: usize| {
        format!("{{\"input_tokens\":250,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":{out}}}")
    };
    let mut ev = vec![format!("event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_mock_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-3-5-haiku-20241022\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{}}}}}\n\n", usage(1)),
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_string()];
    for w in words(n) {
        ev.push(format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{}}}}}\n\n", serde_json::to_string(&w).unwrap()));
    }
    ev.push(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
            .to_string(),
    );
    ev.push(format!("event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{}}}\n\n", usage(n)));
    ev.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_string());
    ev.into_iter().map(String::into_bytes).collect()
}

struct Fixtures {
    gw: Gateway,
    oai_1k: Vec<u8>,
    ant_1k: Vec<u8>,
    ant_1k_stream: Vec<u8>,
    oai_img: Vec<u8>,
    ant_img: Vec<u8>,
    gem_img: Vec<u8>,
    ant_msg: Vec<u8>,
    oai_completion: Vec<u8>,
    stream_events: Vec<Vec<u8>>,
    stream_whole: Vec<u8>,
    guard: llmux::guard::Policy,
}

/// The guardrails of `bench/run.py`'s `llmux-guard` rows (GUARDRAILS): every local detector, a
/// regex and a phrase rule, on requests and answers.
const GUARDRAILS: &str = r#"{"guardrails": [{"name": "pii", "restore": true, "rules": [
  {"detector": "email", "action": "mask"}, {"detector": "phone", "action": "mask"},
  {"detector": "card", "action": "block"}, {"detector": "iban", "action": "block"},
  {"detector": "ssn", "action": "block"}, {"detector": "ip", "action": "monitor"},
  {"detector": "secret", "action": "block"},
  {"detector": "regex", "name": "employee_id", "pattern": "EMP-[0-9]{6}", "action": "mask"},
  {"detector": "phrase", "name": "codename", "phrases": ["project neptune", "blue harbor"], "action": "block"}]}]}"#;

/// The guardrails' work on the 1 KB request and its answer (scan, no host).
fn guard_round_trip(f: &Fixtures, answer: bool) -> usize {
    use llmux::guard::{scan_answer, scan_request, AnsApi, ReqApi, Vault};
    let mut vault = Vault::new();
    let mut n = scan_request(&f.guard, ReqApi::Chat, &f.oai_1k, &mut vault)
        .map(|o| o.scan.hits.len())
        .unwrap_or(0);
    if answer {
        n += scan_answer(&f.guard, AnsApi::Chat, &f.oai_completion, &mut vault)
            .map(|o| o.scan.hits.len())
            .unwrap_or(0);
    }
    n
}

fn fixtures() -> Fixtures {
    let config = Config::parse(CONFIG.as_bytes(), &ProcessEnv).expect("bench config");
    let stream_events = anthropic_stream_events(200);
    Fixtures {
        gw: Gateway::new(config, 1_700_000_000),
        oai_1k: request_1k("gpt-4o-mini", false),
        ant_1k: request_1k("claude-3-5-haiku", false),
        ant_1k_stream: request_1k("claude-3-5-haiku", true),
        oai_img: request_image("gpt-4o-mini", 200_000),
        ant_img: request_image("claude-3-5-haiku", 200_000),
        gem_img: request_image("gemini-2.5-flash", 200_000),
        ant_msg: anthropic_message(),
        oai_completion: openai_completion(),
        stream_whole: stream_events.concat(),
        stream_events,
        guard: llmux::guard::Policy::parse(GUARDRAILS.as_bytes()).expect("bench guardrails"),
    }
}

/// Request side then the whole non-streamed answer, as the glue does it.
fn round_trip(f: &Fixtures, req: &[u8], resp: &[u8]) -> usize {
    let fw =
        f.gw.on_request_body(&chat(1_700_000_000, 7), req)
            .expect("forward");
    let mut ex = fw.exchange;
    let h = ex.on_response_headers(200, None);
    let out = match ex.on_response_body(resp, resp.len(), true) {
        BodyAction::ReplaceWhole { body, .. } => body.len(),
        _ => resp.len(),
    };
    out + h.set.len() + fw.body.map_or(0, |b| b.len())
}

fn stream(f: &Fixtures, per_event: bool) -> usize {
    let fw =
        f.gw.on_request_body(&chat(1_700_000_000, 7), &f.ant_1k_stream)
            .expect("forward");
    let mut ex = fw.exchange;
    ex.on_response_headers(200, None);
    let mut n = 0;
    if per_event {
        let last = f.stream_events.len() - 1;
        for (i, e) in f.stream_events.iter().enumerate() {
            if let BodyAction::Replace(out) = ex.on_response_body(e, 0, i == last) {
                n += out.len();
            }
        }
    } else if let BodyAction::Replace(out) = ex.on_response_body(&f.stream_whole, 0, true) {
        n += out.len();
    }
    n
}

type Case = (&'static str, &'static str, fn(&Fixtures) -> usize);

const CASES: &[Case] = &[
    (
        "envelope_1k",
        "parse_chat_envelope, 1 KB body (model, stream, spans)",
        |f| {
            parse_chat_envelope(&f.oai_1k)
                .map(|e| e.model.len())
                .unwrap_or(0)
        },
    ),
    (
        "request_openai_1k",
        "on_request_body → OpenAI deployment, 1 KB (parse + route + headers)",
        |f| {
            f.gw.on_request_body(&chat(1, 7), &f.oai_1k)
                .map(|fw| fw.set_headers.len())
                .unwrap_or(0)
        },
    ),
    (
        "request_anthropic_1k",
        "on_request_body → Anthropic, 1 KB (parse + translate + serialise)",
        |f| {
            f.gw.on_request_body(&chat(1, 7), &f.ant_1k)
                .map(|fw| fw.body.map_or(0, |b| b.len()))
                .unwrap_or(0)
        },
    ),
    (
        "response_openai",
        "OpenAI answer through the exchange (pass-through, usage read)",
        |f| {
            let fw = f.gw.on_request_body(&chat(1, 7), &f.oai_1k).unwrap();
            let mut ex = fw.exchange;
            ex.on_response_headers(200, None);
            matches!(
                ex.on_response_body(&f.oai_completion, f.oai_completion.len(), true),
                BodyAction::Continue
            ) as usize
        },
    ),
    (
        "roundtrip_openai_1k",
        "scenario 2: request + response, OpenAI deployment",
        |f| round_trip(f, &f.oai_1k, &f.oai_completion),
    ),
    (
        "roundtrip_anthropic_1k",
        "scenario 3: request + response, Anthropic (both translated)",
        |f| round_trip(f, &f.ant_1k, &f.ant_msg),
    ),
    (
        "stream_200_one_chunk",
        "scenario 4: request + 200-delta Anthropic SSE in one body chunk",
        |f| stream(f, false),
    ),
    (
        "stream_200_per_event",
        "scenario 4: request + 200-delta Anthropic SSE, one chunk per event (205 calls)",
        |f| stream(f, true),
    ),
    (
        "guard_request_1k",
        "guardrails: every local detector over the 1 KB request",
        |f| guard_round_trip(f, false),
    ),
    (
        "guard_roundtrip_1k",
        "guardrails: every local detector over the 1 KB request and its answer",
        |f| guard_round_trip(f, true),
    ),
    (
        "request_openai_200k_image",
        "on_request_body → OpenAI, 200 KB base64 image",
        |f| {
            f.gw.on_request_body(&chat(1, 7), &f.oai_img)
                .map(|fw| fw.set_headers.len())
                .unwrap_or(0)
        },
    ),
    (
        "request_anthropic_200k_image",
        "on_request_body → Anthropic, 200 KB base64 image (translated)",
        |f| {
            f.gw.on_request_body(&chat(1, 7), &f.ant_img)
                .map(|fw| fw.body.map_or(0, |b| b.len()))
                .unwrap_or(0)
        },
    ),
    (
        "request_gemini_200k_image",
        "on_request_body → Gemini, 200 KB base64 image (translated)",
        |f| {
            f.gw.on_request_body(&chat(1, 7), &f.gem_img)
                .map(|fw| fw.body.map_or(0, |b| b.len()))
                .unwrap_or(0)
        },
    ),
];

fn measure(f: &Fixtures, run: fn(&Fixtures) -> usize) -> (f64, f64) {
    // Calibrate to ~20 ms a batch.
    let mut iters = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            black_box(run(black_box(f)));
        }
        if t.elapsed().as_millis() >= 20 || iters >= 1 << 24 {
            break;
        }
        iters *= 2;
    }
    let mut per: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(run(black_box(f)));
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    per.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (per[3], per[0])
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let f = fixtures();
    if let Some(name) = args.first().filter(|a| !a.starts_with("--")) {
        let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
        let case = CASES.iter().find(|c| c.0 == name).unwrap_or_else(|| {
            eprintln!(
                "unknown case {name}; cases: {}",
                CASES.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
            );
            std::process::exit(2)
        });
        let mut total = 0usize;
        for _ in 0..n {
            total = total.wrapping_add(black_box((case.2)(black_box(&f))));
        }
        println!("{name} x{n}: {total}");
        return;
    }
    let json = args.iter().any(|a| a == "--json");
    let mut rows = Vec::new();
    for (name, what, run) in CASES {
        let (median, min) = measure(&f, *run);
        rows.push(serde_json::json!({"case": name, "what": what, "ns_median": median.round(), "ns_min": min.round()}));
        if !json {
            println!("{name:<30} {:>10.0} ns  (min {:>8.0})  {what}", median, min);
        }
    }
    if json {
        let sizes = serde_json::json!({
            "request_1k_bytes": f.oai_1k.len(), "request_image_bytes": f.ant_img.len(),
            "stream_events": f.stream_events.len(), "stream_bytes": f.stream_whole.len(),
        });
        println!("{}", serde_json::json!({"cases": rows, "fixtures": sizes}));
    }
}

/// A chat-completions request as the glue describes it.
fn chat(now_unix: u64, pick: u32) -> BodyRequest<'static> {
    BodyRequest {
        endpoint: Endpoint::ChatCompletions,
        content_type: Some("application/json"),
        key: None,
        now_unix,
        pick,
        anthropic_beta: None,
    }
}
