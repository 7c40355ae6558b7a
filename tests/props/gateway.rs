//! Every translator end to end through `Gateway`: mutated requests for each provider kind and
//! each client API never panic; mutated provider answers (whole, errors, and streams cut
//! anywhere, fed chunk by chunk) never panic, and a translated stream always ends properly.

use crate::config;
use crate::envelope::{chat_seeds, embeddings_seeds, messages_seeds};
use crate::mutate::{
    chunked, cuts, mutate_bytes, mutate_doc, mutate_events, ops, parse_sse, render_eventstream,
    render_sse, Event, Op,
};
use llmux::config::{Config, ProcessEnv};
use llmux::gateway::{BodyAction, BodyRequest, Endpoint, Exchange, Gateway, HeadersRequest};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::OnceLock;

const CONFIG: &str = r#"{
    "providers": {
        "oai": {"type": "openai", "cluster": "c_oai", "api_key": "sk-o"},
        "ant": {"type": "anthropic", "cluster": "c_ant", "host": "api.anthropic.com", "api_key": "sk-a"},
        "gem": {"type": "gemini", "cluster": "c_gem", "api_key": "AIza"},
        "co": {"type": "cohere", "cluster": "c_co", "api_key": "co-key"},
        "br": {"type": "bedrock", "cluster": "c_br", "region": "us-west-2", "aws_access_key_id": "AKIDTEST", "aws_secret_access_key": "secret"},
        "vx": {"type": "vertex", "cluster": "c_vx", "project": "proj-1", "location": "us-central1", "access_token": "ya29.tok"}
    },
    "models": [
        {"name": "openai", "deployments": [{"provider": "oai", "model": "gpt-4o-mini"}]},
        {"name": "openai-unpriced", "deployments": [{"provider": "oai", "model": "my-own-model"}]},
        {"name": "anthropic", "deployments": [{"provider": "ant", "model": "claude-sonnet-4-5"}]},
        {"name": "gemini", "deployments": [{"provider": "gem", "model": "gemini-2.5-flash"}]},
        {"name": "cohere", "deployments": [{"provider": "co", "model": "command-a-03-2025"}]},
        {"name": "bedrock", "deployments": [{"provider": "br", "model": "us.anthropic.claude-3-5-haiku-20241022-v1:0"}]},
        {"name": "vertex-gemini", "deployments": [{"provider": "vx", "model": "gemini-2.5-flash"}]},
        {"name": "vertex-claude", "deployments": [{"provider": "vx", "model": "claude-sonnet-4-5"}]}
    ]
}"#;

fn gateway() -> &'static Gateway {
    static GW: OnceLock<Gateway> = OnceLock::new();
    GW.get_or_init(|| {
        Gateway::new(
            Config::parse(CONFIG.as_bytes(), &ProcessEnv).unwrap(),
            1_700_000_000,
        )
    })
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Framing {
    Sse,
    EventStream,
}

struct Target {
    model: &'static str,
    /// A whole 2xx answer.
    whole: Value,
    /// A streamed answer, as events.
    stream: Vec<Event>,
    framing: Framing,
    /// The gateway writes the client's OpenAI stream itself (not a relay of the provider's).
    translated: bool,
    /// What a Messages client's request gets instead of `stream` (Claude on Bedrock: Anthropic's
    /// events in InvokeModelWithResponseStream `chunk` frames).
    messages_stream: Option<Vec<Event>>,
}

/// Anthropic stream events as Bedrock's InvokeModelWithResponseStream sends them.
fn invoke_chunks(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .filter_map(|e| e.data.as_ref().ok())
        .map(|d| {
            let bytes = llmux::codec::base64::standard(d.to_string().as_bytes());
            ev(Some("chunk"), json!({"bytes": bytes, "p": "abcdef"}))
        })
        .chain([ev(
            Some("!modelStreamErrorException"),
            json!({"message": "late"}),
        )])
        .collect()
}

fn ev(name: Option<&str>, data: Value) -> Event {
    Event {
        name: name.map(str::to_string),
        data: Ok(data),
    }
}

fn targets() -> &'static [Target] {
    static T: OnceLock<Vec<Target>> = OnceLock::new();
    T.get_or_init(|| {
        let openai_whole = json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                "finish_reason": "tool_calls", "logprobs": null}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8,
                      "prompt_tokens_details": {"cached_tokens": 2}, "completion_tokens_details": {"reasoning_tokens": 1}}});
        let chunk = |delta: Value, finish: Value| json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": null});
        let mut openai_stream = vec![
            ev(None, chunk(json!({"role": "assistant", "content": ""}), Value::Null)),
            ev(None, chunk(json!({"content": "Hel"}), Value::Null)),
            ev(None, chunk(json!({"content": "lo"}), Value::Null)),
            ev(None, chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}), Value::Null)),
            ev(None, chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":1}"}}]}), Value::Null)),
            ev(None, chunk(json!({}), json!("tool_calls"))),
            ev(None, json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini", "choices": [],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}})),
        ];
        openai_stream.push(Event { name: None, data: Err("[DONE]".into()) });

        let anthropic_whole: Value = serde_json::from_slice(include_bytes!("../fixtures/anthropic/message_tool_use.json")).unwrap();
        let anthropic_stream = parse_sse(include_bytes!("../fixtures/anthropic/stream_text_tool.sse"));
        let gemini_whole: Value = serde_json::from_slice(include_bytes!("../fixtures/gemini/response_tool_call.json")).unwrap();
        let gemini_stream = parse_sse(include_bytes!("../fixtures/gemini/stream_text_tool.sse"));

        let cohere_whole = json!({"id": "co-1", "finish_reason": "TOOL_CALL", "message": {"role": "assistant", "tool_plan": "I will call f",
            "content": [{"type": "text", "text": "ok"}],
            "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            "usage": {"billed_units": {"input_tokens": 5, "output_tokens": 2}, "tokens": {"input_tokens": 12, "output_tokens": 4}, "cached_tokens": 3}});
        let cohere_stream = parse_sse(b"event: message-start\ndata: {\"id\":\"s1\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\"}}}\n\n\
event: content-start\ndata: {\"type\":\"content-start\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"type\":\"text\",\"text\":\"\"}}}}\n\n\
event: content-delta\ndata: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"Hel\"}}}}\n\n\
event: content-end\ndata: {\"type\":\"content-end\",\"index\":0}\n\n\
event: tool-plan-delta\ndata: {\"type\":\"tool-plan-delta\",\"delta\":{\"message\":{\"tool_plan\":\"plan\"}}}\n\n\
event: tool-call-start\ndata: {\"type\":\"tool-call-start\",\"index\":1,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"t1\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"\"}}}}}\n\n\
event: tool-call-delta\ndata: {\"type\":\"tool-call-delta\",\"index\":1,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}}}}\n\n\
event: tool-call-end\ndata: {\"type\":\"tool-call-end\",\"index\":1}\n\n\
event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"TOOL_CALL\",\"usage\":{\"tokens\":{\"input_tokens\":9,\"output_tokens\":3}}}}\n\n");

        let bedrock_whole = json!({"output": {"message": {"role": "assistant", "content": [
                {"reasoningContent": {"reasoningText": {"text": "thinking...", "signature": "s"}}},
                {"text": "Let me check."},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}}]}},
            "stopReason": "tool_use", "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 15, "cacheReadInputTokens": 4, "cacheWriteInputTokens": 2},
            "metrics": {"latencyMs": 12}});
        let bedrock_stream = vec![
            ev(Some("messageStart"), json!({"role": "assistant"})),
            ev(Some("contentBlockStart"), json!({"contentBlockIndex": 0, "start": {"reasoningContent": {}}})),
            ev(Some("contentBlockDelta"), json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hm"}}})),
            ev(Some("contentBlockDelta"), json!({"contentBlockIndex": 1, "delta": {"text": "Hel"}})),
            ev(Some("contentBlockDelta"), json!({"contentBlockIndex": 1, "delta": {"text": "lo"}})),
            ev(Some("contentBlockStop"), json!({"contentBlockIndex": 1})),
            ev(Some("contentBlockStart"), json!({"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tooluse_a", "name": "get_weather"}}})),
            ev(Some("contentBlockDelta"), json!({"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{\"city\":"}}})),
            ev(Some("contentBlockDelta"), json!({"contentBlockIndex": 2, "delta": {"toolUse": {"input": "\"Paris\"}"}}})),
            ev(Some("contentBlockStop"), json!({"contentBlockIndex": 2})),
            ev(Some("messageStop"), json!({"stopReason": "tool_use"})),
            ev(Some("metadata"), json!({"usage": {"inputTokens": 9, "outputTokens": 3, "totalTokens": 12}, "metrics": {"latencyMs": 5}})),
            ev(Some("!throttlingException"), json!({"message": "slow down"})),
        ];

        let bedrock_messages = invoke_chunks(&anthropic_stream);
        vec![
            Target { model: "openai", whole: openai_whole.clone(), stream: openai_stream.clone(), framing: Framing::Sse, translated: false, messages_stream: None },
            Target { model: "openai-unpriced", whole: openai_whole, stream: openai_stream, framing: Framing::Sse, translated: false, messages_stream: None },
            Target { model: "anthropic", whole: anthropic_whole.clone(), stream: anthropic_stream.clone(), framing: Framing::Sse, translated: true, messages_stream: None },
            Target { model: "gemini", whole: gemini_whole.clone(), stream: gemini_stream.clone(), framing: Framing::Sse, translated: true, messages_stream: None },
            Target { model: "cohere", whole: cohere_whole, stream: cohere_stream, framing: Framing::Sse, translated: true, messages_stream: None },
            Target { model: "bedrock", whole: bedrock_whole, stream: bedrock_stream, framing: Framing::EventStream, translated: true, messages_stream: Some(bedrock_messages) },
            Target { model: "vertex-gemini", whole: gemini_whole, stream: gemini_stream, framing: Framing::Sse, translated: true, messages_stream: None },
            Target { model: "vertex-claude", whole: anthropic_whole, stream: anthropic_stream, framing: Framing::Sse, translated: true, messages_stream: None },
        ]
    })
}

fn error_seeds() -> Vec<Value> {
    vec![
        json!({"error": {"message": "bad", "type": "invalid_request_error", "param": "model", "code": "x"}}),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
        json!({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED", "details": []}}),
        json!({"message": "too many requests"}),
        json!([{"error": {"code": 400, "message": "x"}}]),
    ]
}

fn with_model(seed: &Value, model: &str, stream: Option<bool>) -> Value {
    let mut v = seed.clone();
    v["model"] = Value::from(model);
    if let Some(s) = stream {
        v["stream"] = Value::from(s);
    }
    v
}

const ENDPOINTS: [Endpoint; 3] = [
    Endpoint::ChatCompletions,
    Endpoint::Messages,
    Endpoint::Embeddings,
];

fn body_request(endpoint: Endpoint) -> BodyRequest<'static> {
    BodyRequest {
        endpoint,
        content_type: None,
        key: None,
        now_unix: 1_700_000_000,
        pick: 7,
        anthropic_beta: None,
    }
}

/// A forwarded request's exchange for `target`, on the chat or Messages endpoint.
fn exchange(target: &Target, messages_api: bool, stream: bool, include_usage: bool) -> Exchange {
    let (endpoint, mut body) = if messages_api {
        (
            Endpoint::Messages,
            with_model(&messages_seeds()[0], target.model, Some(stream)),
        )
    } else {
        (
            Endpoint::ChatCompletions,
            with_model(&chat_seeds()[0], target.model, Some(stream)),
        )
    };
    if stream && !messages_api {
        body["stream_options"] = json!({"include_usage": include_usage});
    }
    let body = serde_json::to_vec(&body).unwrap();
    match gateway().on_request_body(&body_request(endpoint), &body) {
        Ok(f) => f.exchange,
        Err(e) => panic!("{} refused a valid request: {e:?}", target.model),
    }
}

/// What the host does with a response body: chunk by chunk, or (when the exchange holds it)
/// the whole buffered body at the end. Returns what the client gets.
fn drive(
    ex: &mut Exchange,
    status: u16,
    details: Option<&str>,
    body: &[u8],
    cuts: &[usize],
) -> Vec<u8> {
    let _ = ex.on_response_headers(status, details);
    let mut chunks = chunked(body, cuts);
    if chunks.is_empty() {
        chunks.push(b"");
    }
    let n = chunks.len();
    let mut out = Vec::new();
    let mut buffered = Vec::new();
    for (i, c) in chunks.into_iter().enumerate() {
        let eos = i + 1 == n;
        let whole = ex.needs_whole_body();
        if whole {
            buffered.extend_from_slice(c);
        }
        let data: &[u8] = if whole && eos { &buffered } else { c };
        match ex.on_response_body(data, if whole { buffered.len() } else { 0 }, eos) {
            BodyAction::Continue => {
                if !whole || eos {
                    out.extend_from_slice(data)
                }
            }
            BodyAction::Buffer => assert!(!eos, "Buffer at end of stream"),
            BodyAction::Replace(b) => out.extend(b),
            BodyAction::ReplaceWhole { body, .. } => return body,
        }
    }
    let _ = ex.usage();
    let _ = ex.failed();
    out
}

fn render(t: &Target, events: &[Event]) -> Vec<u8> {
    match t.framing {
        Framing::Sse => render_sse(events),
        Framing::EventStream => render_eventstream(events),
    }
}

fn byte_ops(bytes: &mut Vec<u8>, ops: &[Op]) {
    for &op in ops.iter().filter(|o| o.0 >= 200) {
        mutate_bytes(bytes, op);
    }
}

/// The client's stream ended properly: OpenAI shape ends with one `data: [DONE]`, nothing after;
/// Messages shape ends with one `message_stop` or `error` event, nothing after.
fn check_stream_end(out: &[u8], messages_api: bool) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(out);
    if messages_api {
        let ends = text
            .lines()
            .filter(|l| *l == "event: message_stop" || *l == "event: error")
            .count();
        prop_assert_eq!(ends, 1, "one terminal event: {}", text);
        let last = text.trim_end().rsplit("\n\n").next().unwrap_or("");
        prop_assert!(
            last.starts_with("event: message_stop\n") || last.starts_with("event: error\n"),
            "ends with the terminal event: {}",
            text
        );
        prop_assert!(out.ends_with(b"\n\n"));
    } else {
        prop_assert!(
            text.ends_with("data: [DONE]\n\n"),
            "ends with [DONE]: {}",
            text
        );
        prop_assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("data: [DONE]"))
                .count(),
            1,
            "one [DONE]: {}",
            text
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(300))]

    /// Mutated chat, Messages and embeddings requests to every provider kind never panic.
    #[test]
    fn requests_never_panic(t in 0usize..8, endpoint in 0usize..3, seed in 0usize..3, ops in ops(8)) {
        let target = &targets()[t];
        let endpoint = ENDPOINTS[endpoint];
        let seeds = match endpoint {
            Endpoint::Messages => messages_seeds(),
            Endpoint::Embeddings => embeddings_seeds(),
            _ => chat_seeds(),
        };
        let body = mutate_doc(&with_model(&seeds[seed % seeds.len()], target.model, None), &ops);
        if let Ok(f) = gateway().on_request_body(&body_request(endpoint), &body) {
            if let Some(b) = &f.body {
                // What goes to a JSON provider is JSON.
                prop_assert!(serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok(), "{}", String::from_utf8_lossy(b));
            }
        }
    }

    /// Whole answers (2xx, provider errors, Envoy errors), mutated and cut anywhere, never panic;
    /// the client gets JSON when the gateway rewrites the answer.
    #[test]
    fn whole_answers_never_panic(
        t in 0usize..8,
        messages_api in any::<bool>(),
        status in prop::sample::select(vec![200u16, 200, 200, 201, 400, 401, 404, 429, 500, 503, 529, 302, 0, 999]),
        envoy in prop::option::weighted(0.1, prop::sample::select(vec!["upstream_reset_before_response_started", "response_timeout", "via_upstream"])),
        error_seed in prop::option::weighted(0.3, 0usize..5),
        ops in ops(8),
        cuts in cuts(),
    ) {
        let target = &targets()[t];
        let mut ex = exchange(target, messages_api, false, false);
        let seed = match error_seed { Some(i) => error_seeds()[i].clone(), None => target.whole.clone() };
        let body = mutate_doc(&seed, &ops);
        let _ = drive(&mut ex, status, envoy, &body, &cuts);
    }

    /// Streamed answers, mutated (events edited, dropped, duplicated, swapped, the framing cut
    /// or corrupted) and fed in any chunks, never panic; a stream the gateway writes always ends
    /// properly (one `[DONE]` / one `message_stop` or `error`, nothing after).
    #[test]
    fn streams_end_properly(
        t in 0usize..8,
        messages_api in any::<bool>(),
        include_usage in any::<bool>(),
        ops in ops(10),
        cuts in cuts(),
    ) {
        let target = &targets()[t];
        let mut ex = exchange(target, messages_api, true, include_usage);
        let mut events = match (&target.messages_stream, messages_api) {
            (Some(s), true) => s.clone(),
            _ => target.stream.clone(),
        };
        mutate_events(&mut events, &ops);
        let mut body = render(target, &events);
        byte_ops(&mut body, &ops);
        let out = drive(&mut ex, 200, None, &body, &cuts);
        // Anthropic's answers reach Messages clients as they are from Anthropic and Claude on
        // Vertex; the gateway writes every other stream.
        let gateway_writes = if messages_api {
            !matches!(target.model, "anthropic" | "vertex-claude")
        } else {
            target.translated
        };
        if gateway_writes {
            check_stream_end(&out, messages_api)?;
        }
    }

    /// Request headers: any method and path never panic.
    #[test]
    fn request_headers_never_panic(
        method in prop::sample::select(vec!["POST", "GET", "PUT", ""]),
        path in prop_oneof!["(/v1)?/(chat/completions|embeddings|messages|models|files|batches|responses|audio/transcriptions)/?(\\?[a-z=&]{0,8})?", "\\PC{0,30}"],
        len in prop::option::of(any::<u64>()),
        credential in prop::option::of("\\PC{0,10}"),
        hint in prop::option::of("\\PC{0,6}"),
    ) {
        let _ = gateway().on_request_headers(&HeadersRequest {
            method, path: &path, content_length: len, credential: credential.as_deref(), now_unix: 0, provider_hint: hint.as_deref(),
        });
    }
}
