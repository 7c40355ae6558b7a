//! The request envelopes (OpenAI chat and embeddings, Anthropic Messages, any routed body):
//! arbitrary and mutated bodies never panic, and what they report points into the body.

use crate::config;
use crate::mutate::{mutate_doc, ops};
use llmux::client_api::anthropic::parse_messages_envelope;
use llmux::client_api::openai::{parse_chat_envelope, parse_embeddings_envelope, ChatEnvelope};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Chat-completions requests using most of the API (seeds for every translator).
pub fn chat_seeds() -> Vec<Value> {
    vec![
        json!({"model": "M", "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "M", "stream": true, "stream_options": {"include_usage": true},
               "messages": [
                  {"role": "system", "content": "be brief"},
                  {"role": "developer", "content": [{"type": "text", "text": "dev"}]},
                  {"role": "user", "content": [
                      {"type": "text", "text": "what is here?"},
                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                      {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
                  {"role": "assistant", "content": null, "tool_calls": [
                      {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                  {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                  {"role": "user", "content": "thanks", "name": "bob"}],
               "tools": [{"type": "function", "function": {"name": "get_weather", "description": "w",
                          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
               "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
               "temperature": 0.2, "top_p": 0.9, "max_tokens": 100, "stop": ["END"], "seed": 7,
               "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
               "reasoning_effort": "low", "user": "u", "parallel_tool_calls": false, "tags": ["a"]}),
        json!({"model": "M", "stream": false, "n": 1, "max_completion_tokens": 50, "tool_choice": "required",
               "response_format": {"type": "json_object"}, "presence_penalty": 0.1, "frequency_penalty": 0.1,
               "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                            {"role": "assistant", "content": "ok", "refusal": null},
                            {"role": "user", "content": "again"}],
               "tools": [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "g", "parameters": {}}}]}),
    ]
}

/// Anthropic Messages requests.
pub fn messages_seeds() -> Vec<Value> {
    vec![
        json!({"model": "M", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}),
        json!({"model": "M", "max_tokens": 1024, "stream": true, "system": [{"type": "text", "text": "be brief"}],
               "messages": [
                  {"role": "user", "content": [{"type": "text", "text": "weather?"},
                      {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                      {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
                  {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                      {"type": "text", "text": "checking"},
                      {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                      {"type": "text", "text": "and tomorrow?"}]}],
               "tools": [{"name": "get_weather", "description": "w", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
               "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
               "stop_sequences": ["END"], "temperature": 0.5, "top_p": 0.9, "top_k": 5,
               "metadata": {"user_id": "u"}, "thinking": {"type": "enabled", "budget_tokens": 1024}}),
    ]
}

pub fn embeddings_seeds() -> Vec<Value> {
    vec![
        json!({"model": "M", "input": "hello"}),
        json!({"model": "M", "input": ["a", "b"], "dimensions": 256, "encoding_format": "float", "user": "u"}),
        json!({"model": "M", "input": [[1, 2, 3], [4]], "encoding_format": "base64", "input_type": "search_query"}),
    ]
}

pub fn all_seeds() -> Vec<Value> {
    let mut s = chat_seeds();
    s.extend(messages_seeds());
    s.extend(embeddings_seeds());
    s
}

fn check(env: &ChatEnvelope<'_>, body: &[u8]) -> Result<(), TestCaseError> {
    let span = env.model_span;
    prop_assert!(
        span.start <= span.end && span.end <= body.len(),
        "model span {:?} outside the body",
        span
    );
    // The span holds the model as a JSON string.
    let raw = std::str::from_utf8(&body[span.start..span.end]).unwrap();
    let model: String =
        serde_json::from_str(raw).map_err(|e| TestCaseError::fail(format!("span {raw:?}: {e}")))?;
    prop_assert_eq!(model.as_str(), &*env.model);
    prop_assert!(!env.model.is_empty());
    prop_assert!(
        env.close_brace < body.len() && body[env.close_brace] == b'}',
        "close_brace {} of {}",
        env.close_brace,
        body.len()
    );
    if let Some(s) = env.stream_options_span {
        prop_assert!(s.start <= s.end && s.end <= body.len());
    }
    Ok(())
}

fn parse_all(body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(env) = parse_chat_envelope(body) {
        check(&env, body)?;
    }
    if let Ok(env) = parse_embeddings_envelope(body) {
        check(&env, body)?;
    }
    if let Ok(env) = parse_messages_envelope(body) {
        check(&env, body)?;
    }
    if let Ok(env) = ChatEnvelope::parse_routed(body) {
        check(&env, body)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1000))]

    /// Mutated realistic bodies (chat, Messages, embeddings): no panic; a parsed envelope's
    /// model span holds the model, `close_brace` is the body's `}`.
    #[test]
    fn mutated_bodies(seed in 0usize..8, ops in ops(8)) {
        let seeds = all_seeds();
        let body = mutate_doc(&seeds[seed % seeds.len()], &ops);
        parse_all(&body)?;
    }

    /// Arbitrary bytes, and JSON-ish text.
    #[test]
    fn arbitrary_bodies(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            "[{}\\[\\]\":, a-z0-9\\\\\n]{0,120}".prop_map(String::into_bytes),
            "\\{ *\"model\" *: *\"[^\"]{0,10}\" *, *\"(messages|input|stream)\" *: *[\\[\\]{}\"a-z0-9,:]{0,40} *\\}".prop_map(String::into_bytes),
        ],
    ) {
        parse_all(&body)?;
    }
}
