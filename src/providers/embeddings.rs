//! OpenAI `POST /v1/embeddings` → providers whose embeddings API is their own (docs/providers.md §8b):
//!
//! - Gemini API: `POST {base_path}/models/{m}:batchEmbedContents`, one `requests[]` entry per
//!   input (`content.parts[].text`, `outputDimensionality` from `dimensions`, `taskType` only when
//!   the client sends the extension field `task_type`) → `embeddings[].values`. The API returns no
//!   token count: `usage.prompt_tokens` is an **estimate**, ⌈UTF-8 bytes / 4⌉ per input.
//! - Cohere v2: `POST {base_path}/embed` with `texts`, `input_type` (the client's extension field
//!   `input_type`, else `search_document`), `embedding_types: ["float"]`, `output_dimension` from
//!   `dimensions` → `embeddings.float`; usage from `meta.billed_units.input_tokens`.
//! - Vertex AI: `POST .../publishers/google/models/{m}:predict` with `instances[].content`
//!   (+ `task_type`), `parameters.outputDimensionality` → `predictions[].embeddings.values`;
//!   usage is the sum of `predictions[].embeddings.statistics.token_count`.
//!
//! Inputs are a string or an array of strings; token arrays (OpenAI-only) are answered 400.
//! `encoding_format: "base64"` is produced here: each vector as little-endian f32 bytes in
//! standard base64, as OpenAI sends it. Float vectors reach the client with the values the
//! provider sent (read as f64, which holds every value a provider writes, and printed in their
//! shortest form: `-0.1103515625` stays that, not the f32 `-0.11035156`).

use crate::codec::base64::standard as base64;
use serde::{Deserialize, Serialize};

use super::{ChatCall, ChatTranslator, ProviderRequest, Usage};
use crate::error::GatewayError;

/// Which native embeddings API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Gemini,
    Cohere,
    Vertex,
}

pub struct NativeEmbeddings {
    target: Target,
    provider: String,
    model: String,
    base64: bool,
    inputs: usize,
    /// Gemini returns no token count: estimated from the inputs.
    estimate: u64,
    usage: Option<Usage>,
}

impl NativeEmbeddings {
    pub fn new(target: Target) -> Self {
        NativeEmbeddings {
            target,
            provider: String::new(),
            model: String::new(),
            base64: false,
            inputs: 0,
            estimate: 0,
            usage: None,
        }
    }
}

/// What the translators read from an OpenAI embeddings request (the envelope already checked
/// `input`, `dimensions` and `encoding_format`).
#[derive(Deserialize)]
struct EmbedRequest {
    input: serde_json::Value,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default)]
    encoding_format: Option<String>,
    /// Extension (Cohere): `search_document`, `search_query`, `classification`, `clustering`.
    #[serde(default)]
    input_type: Option<String>,
    /// Extension (Gemini, Vertex): `RETRIEVAL_QUERY`, `RETRIEVAL_DOCUMENT`, `SEMANTIC_SIMILARITY`, ...
    #[serde(default)]
    task_type: Option<String>,
}

fn texts(input: &serde_json::Value) -> Result<Vec<&str>, GatewayError> {
    use serde_json::Value;
    match input {
        Value::String(s) => Ok(vec![s.as_str()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str().ok_or_else(|| {
                    GatewayError::invalid_param(
                        "input",
                        "token arrays are only accepted by OpenAI-protocol providers; send text",
                    )
                })
            })
            .collect(),
        _ => Err(GatewayError::invalid_param(
            "input",
            "`input` must be a string or a non-empty array of strings",
        )),
    }
}

/// ⌈bytes / 4⌉ per input, at least 1: a rough token estimate for providers that report none.
fn estimate_tokens(texts: &[&str]) -> u64 {
    texts
        .iter()
        .map(|t| (t.len() as u64).div_ceil(4).max(1))
        .sum()
}

fn serialise(v: &impl Serialize) -> Result<Vec<u8>, GatewayError> {
    serde_json::to_vec(v)
        .map_err(|e| GatewayError::new(500, "api_error", format!("serialising: {e}")))
}

fn bad_gateway(provider: &str, what: impl std::fmt::Display) -> GatewayError {
    GatewayError::new(502, "api_error", format!("{provider} returned {what}"))
}

/// The OpenAI embeddings response for these vectors.
pub fn openai_response(
    vectors: &[Vec<f64>],
    model: &str,
    prompt_tokens: u64,
    as_base64: bool,
) -> Result<Vec<u8>, GatewayError> {
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Embedding<'a> {
        Float(&'a [f64]),
        Base64(String),
    }
    #[derive(Serialize)]
    struct Item<'a> {
        object: &'static str,
        index: usize,
        embedding: Embedding<'a>,
    }
    #[derive(Serialize)]
    struct UsageOut {
        prompt_tokens: u64,
        total_tokens: u64,
    }
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Item<'a>>,
        model: &'a str,
        usage: UsageOut,
    }
    let data = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| Item {
            object: "embedding",
            index,
            embedding: if as_base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| (*f as f32).to_le_bytes()).collect();
                Embedding::Base64(base64(&bytes))
            } else {
                Embedding::Float(v)
            },
        })
        .collect();
    serialise(&List {
        object: "list",
        data,
        model,
        usage: UsageOut {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}

/// Gemini `batchEmbedContents`: one request per text. The path and the body; the auth headers go to `headers`.
fn gemini_request(
    call: &ChatCall<'_>,
    req: &EmbedRequest,
    texts: &[&str],
    dims: Option<u32>,
    headers: &mut Vec<(String, String)>,
) -> Result<(String, Vec<u8>), GatewayError> {
    let p = call.provider;
    #[derive(Serialize)]
    struct Part<'a> {
        text: &'a str,
    }
    #[derive(Serialize)]
    struct Content<'a> {
        parts: [Part<'a>; 1],
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct One<'a> {
        model: &'a str,
        content: Content<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        task_type: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        output_dimensionality: Option<u32>,
    }
    #[derive(Serialize)]
    struct Batch<'a> {
        requests: Vec<One<'a>>,
    }
    let model = super::gemini::model_segment(call.upstream_model);
    let full = format!("models/{model}");
    let requests = texts
        .iter()
        .map(|t| One {
            model: &full,
            content: Content {
                parts: [Part { text: t }],
            },
            task_type: req.task_type.as_deref(),
            output_dimensionality: dims,
        })
        .collect();
    if let Some(key) = &p.api_key {
        headers.push(("x-goog-api-key".to_string(), key.trim().to_string()));
    }
    Ok((
        format!("{}/models/{model}:batchEmbedContents", p.base_path),
        serialise(&Batch { requests })?,
    ))
}

/// Cohere v2 `embed`: float embeddings of all texts. The path and the body; the auth headers go to `headers`.
fn cohere_request(
    call: &ChatCall<'_>,
    req: &EmbedRequest,
    texts: &[&str],
    dims: Option<u32>,
    headers: &mut Vec<(String, String)>,
) -> Result<(String, Vec<u8>), GatewayError> {
    let p = call.provider;
    #[derive(Serialize)]
    struct Embed<'a> {
        model: &'a str,
        texts: &'a [&'a str],
        input_type: &'a str,
        embedding_types: [&'static str; 1],
        #[serde(skip_serializing_if = "Option::is_none")]
        output_dimension: Option<u32>,
    }
    if let Some(key) = &p.api_key {
        headers.push(("authorization".to_string(), format!("Bearer {key}")));
    }
    Ok((
        format!("{}/embed", p.base_path),
        serialise(&Embed {
            model: call.upstream_model,
            texts,
            input_type: req.input_type.as_deref().unwrap_or("search_document"),
            embedding_types: ["float"],
            output_dimension: dims,
        })?,
    ))
}

/// Vertex AI `predict`: one instance per text. The path and the body; the auth headers go to `headers`.
fn vertex_request(
    call: &ChatCall<'_>,
    req: &EmbedRequest,
    texts: &[&str],
    dims: Option<u32>,
    headers: &mut Vec<(String, String)>,
) -> Result<(String, Vec<u8>), GatewayError> {
    let p = call.provider;
    #[derive(Serialize)]
    struct Instance<'a> {
        content: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        task_type: Option<&'a str>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Parameters {
        output_dimensionality: u32,
    }
    #[derive(Serialize)]
    struct Predict<'a> {
        instances: Vec<Instance<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        parameters: Option<Parameters>,
    }
    let instances = texts
        .iter()
        .map(|t| Instance {
            content: t,
            task_type: req.task_type.as_deref(),
        })
        .collect();
    headers.extend(super::vertex::auth_headers(p));
    Ok((
        super::vertex::model_path(p, "google", call.upstream_model, "predict")?,
        serialise(&Predict {
            instances,
            parameters: dims.map(|d| Parameters {
                output_dimensionality: d,
            }),
        })?,
    ))
}

impl ChatTranslator for NativeEmbeddings {
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        let p = call.provider;
        self.provider = p.name.clone();
        self.model = call.upstream_model.to_string();
        let req: EmbedRequest = serde_json::from_slice(call.raw)
            .map_err(|e| GatewayError::bad_request(format!("invalid embeddings request: {e}")))?;
        self.base64 = req.encoding_format.as_deref() == Some("base64");
        let texts = texts(&req.input)?;
        self.inputs = texts.len();
        self.estimate = estimate_tokens(&texts);
        let dims = req.dimensions.filter(|d| *d > 0);
        let mut headers = Vec::with_capacity(2 + p.headers.len());
        let (path, body) = match self.target {
            Target::Gemini => gemini_request(call, &req, &texts, dims, &mut headers)?,
            Target::Cohere => cohere_request(call, &req, &texts, dims, &mut headers)?,
            Target::Vertex => vertex_request(call, &req, &texts, dims, &mut headers)?,
        };
        headers.push(("content-type".to_string(), "application/json".to_string()));
        headers.extend(p.headers.iter().cloned());
        let mut remove_headers = vec!["x-api-key", "api-key"];
        if !headers.iter().any(|(k, _)| k == "authorization") {
            // Never forward the client's own key upstream.
            remove_headers.push("authorization");
        }
        Ok(ProviderRequest {
            path,
            headers,
            remove_headers,
            body: Some(body),
        })
    }

    fn response(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        let invalid = |e: serde_json::Error| {
            bad_gateway(
                &self.provider,
                format!("an invalid embeddings response: {e}"),
            )
        };
        // One generic parse for the three shapes (typed parsers per shape cost the .wasm ~10 KB).
        let v: serde_json::Value = serde_json::from_slice(body).map_err(invalid)?;
        let floats = |x: &serde_json::Value| -> Option<Vec<f64>> {
            x.as_array()?
                .iter()
                .map(serde_json::Value::as_f64)
                .collect()
        };
        let count = |x: &serde_json::Value| x.as_f64().map_or(0, float_count);
        let shape = || bad_gateway(&self.provider, "an embedding that is not a list of numbers");
        let mut vectors = Vec::new();
        let mut tokens = 0u64;
        match self.target {
            Target::Gemini => {
                for e in list(&v["embeddings"]) {
                    vectors.push(floats(&e["values"]).ok_or_else(shape)?);
                }
                tokens = self.estimate;
            }
            Target::Cohere => {
                for e in list(&v["embeddings"]["float"]) {
                    vectors.push(floats(e).ok_or_else(shape)?);
                }
                tokens = count(&v["meta"]["billed_units"]["input_tokens"]);
            }
            Target::Vertex => {
                for p in list(&v["predictions"]) {
                    vectors.push(floats(&p["embeddings"]["values"]).ok_or_else(shape)?);
                    tokens =
                        tokens.saturating_add(count(&p["embeddings"]["statistics"]["token_count"]));
                }
            }
        }
        if vectors.len() != self.inputs {
            return Err(bad_gateway(
                &self.provider,
                format!("{} embeddings for {} inputs", vectors.len(), self.inputs),
            ));
        }
        self.usage = Some(Usage {
            prompt_tokens: tokens,
            ..Usage::default()
        });
        openai_response(&vectors, &self.model, tokens, self.base64).map(Some)
    }

    fn stream_chunk(&mut self, _chunk: &[u8], _end_of_stream: bool, _out: &mut Vec<u8>) -> bool {
        false
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        match self.target {
            Target::Gemini | Target::Vertex => {
                super::gemini::GeminiChat::for_provider(&self.provider).error(status, body)
            }
            Target::Cohere => {
                super::cohere::CohereChat::for_provider(&self.provider).error(status, body)
            }
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

fn list(x: &serde_json::Value) -> &[serde_json::Value] {
    x.as_array().map_or(&[], Vec::as_slice)
}

/// A token count sent as a JSON number (Vertex sends floats like `7.0`).
fn float_count(f: f64) -> u64 {
    if f.is_finite() && f > 0.0 {
        // Saturating float → int conversion.
        f as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_api::openai::parse_embeddings_envelope;
    use crate::config::{Config, ProcessEnv, Provider};
    use serde_json::{json, Value};

    fn provider(kind: &str) -> Provider {
        let cfg = format!(
            r#"{{"providers":{{"p":{{"type":"{kind}","cluster":"c","api_key":"k"}}}},
                 "models":[{{"name":"m","deployments":[{{"provider":"p"}}]}}]}}"#
        );
        Config::parse(cfg.as_bytes(), &ProcessEnv)
            .unwrap()
            .providers
            .remove(0)
    }

    fn translate(
        target: Target,
        kind: &str,
        body: &str,
    ) -> Result<(NativeEmbeddings, ProviderRequest), GatewayError> {
        let p = provider(kind);
        let env = parse_embeddings_envelope(body.as_bytes())?;
        let mut t = NativeEmbeddings::new(target);
        let req = t.request(&ChatCall {
            raw: body.as_bytes(),
            envelope: &env,
            provider: &p,
            upstream_model: "emb-1",
            now_unix: 0,
            want_stream_usage: true,
        })?;
        Ok((t, req))
    }

    fn json_of(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"M"), "TQ==");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"Man"), "TWFu");
        // 1.0f32 little-endian = 00 00 80 3f
        assert_eq!(base64(&1.0f32.to_le_bytes()), "AACAPw==");
    }

    #[test]
    fn gemini_request_and_response() {
        let (mut t, req) = translate(
            Target::Gemini,
            "gemini",
            r#"{"model":"m","input":["a","hello"],"dimensions":3,"task_type":"RETRIEVAL_QUERY"}"#,
        )
        .unwrap();
        assert_eq!(req.path, "/v1beta/models/emb-1:batchEmbedContents");
        assert!(req.headers.contains(&("x-goog-api-key".into(), "k".into())));
        assert!(req.remove_headers.contains(&"authorization"));
        let b = json_of(req.body.as_deref().unwrap());
        assert_eq!(
            b["requests"][1],
            json!({"model": "models/emb-1", "content": {"parts": [{"text": "hello"}]},
                   "outputDimensionality": 3, "taskType": "RETRIEVAL_QUERY"})
        );
        let out = t
            .response(br#"{"embeddings":[{"values":[0.5,1,-2]},{"values":[0,0.25,3]}]}"#)
            .unwrap()
            .unwrap();
        let v = json_of(&out);
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], "emb-1");
        assert_eq!(v["data"][0]["embedding"], json!([0.5, 1.0, -2.0]));
        assert_eq!(v["data"][1]["index"], 1);
        // estimate: ⌈1/4⌉ + ⌈5/4⌉ = 1 + 2
        assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
        assert_eq!(t.usage().unwrap().prompt_tokens, 3);
    }

    #[test]
    fn values_reach_the_client_as_the_provider_sent_them() {
        let (mut t, _) =
            translate(Target::Gemini, "gemini", r#"{"model":"m","input":"x"}"#).unwrap();
        let out = t
            .response(br#"{"embeddings":[{"values":[-0.1103515625,0.1,0.333333333333]}]}"#)
            .unwrap()
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        // Not rounded to f32 (-0.11035156, 0.100000001, 0.33333334).
        assert!(
            text.contains("[-0.1103515625,0.1,0.333333333333]"),
            "{text}"
        );
    }

    #[test]
    fn gemini_string_input_no_options() {
        let (_, req) = translate(Target::Gemini, "gemini", r#"{"model":"m","input":"x"}"#).unwrap();
        let b = json_of(req.body.as_deref().unwrap());
        assert_eq!(
            b,
            json!({"requests": [{"model": "models/emb-1", "content": {"parts": [{"text": "x"}]}}]})
        );
    }

    #[test]
    fn cohere_request_and_base64_response() {
        let (mut t, req) = translate(
            Target::Cohere,
            "cohere",
            r#"{"model":"m","input":"hi","encoding_format":"base64","dimensions":256}"#,
        )
        .unwrap();
        assert_eq!(req.path, "/v2/embed");
        assert!(req
            .headers
            .contains(&("authorization".into(), "Bearer k".into())));
        let b = json_of(req.body.as_deref().unwrap());
        assert_eq!(
            b,
            json!({"model": "emb-1", "texts": ["hi"], "input_type": "search_document",
                   "embedding_types": ["float"], "output_dimension": 256})
        );
        let out = t
            .response(br#"{"id":"x","embeddings":{"float":[[1.0,-1.0]]},"texts":["hi"],"meta":{"billed_units":{"input_tokens":2}},"response_type":"embeddings_by_type"}"#)
            .unwrap()
            .unwrap();
        let v = json_of(&out);
        let mut want = 1.0f32.to_le_bytes().to_vec();
        want.extend_from_slice(&(-1.0f32).to_le_bytes());
        assert_eq!(v["data"][0]["embedding"], json!(base64(&want)));
        assert_eq!(v["usage"]["prompt_tokens"], 2);
    }

    #[test]
    fn cohere_input_type_extension() {
        let (_, req) = translate(
            Target::Cohere,
            "cohere",
            r#"{"model":"m","input":["q"],"input_type":"search_query"}"#,
        )
        .unwrap();
        assert_eq!(
            json_of(req.body.as_deref().unwrap())["input_type"],
            "search_query"
        );
    }

    #[test]
    fn token_arrays_are_400_and_count_mismatch_is_502() {
        let e = translate(Target::Gemini, "gemini", r#"{"model":"m","input":[[1,2]]}"#)
            .err()
            .unwrap();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("input")));
        let (mut t, _) = translate(
            Target::Cohere,
            "cohere",
            r#"{"model":"m","input":["a","b"]}"#,
        )
        .unwrap();
        let e = t
            .response(br#"{"embeddings":{"float":[[1.0]]}}"#)
            .err()
            .unwrap();
        assert_eq!(e.status, 502);
        assert!(
            e.message.contains("1 embeddings for 2 inputs"),
            "{}",
            e.message
        );
        let e = t.response(b"not json").err().unwrap();
        assert_eq!(e.status, 502);
    }

    #[test]
    fn errors_use_the_provider_shape() {
        let (t, _) = translate(Target::Gemini, "gemini", r#"{"model":"m","input":"a"}"#).unwrap();
        let e = t.error(
            429,
            br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!(e.status, 429);
        assert!(
            e.message.contains("RESOURCE_EXHAUSTED: quota"),
            "{}",
            e.message
        );
        let (t, _) = translate(Target::Cohere, "cohere", r#"{"model":"m","input":"a"}"#).unwrap();
        let e = t.error(400, br#"{"message":"invalid request: bad"}"#);
        assert_eq!(e.status, 400);
        assert!(e.message.contains("invalid request: bad"), "{}", e.message);
    }

    #[test]
    fn garbage_responses_never_panic() {
        let mut rng = crate::test_support::XorShift(7);
        for target in [Target::Gemini, Target::Cohere] {
            let kind = if target == Target::Gemini {
                "gemini"
            } else {
                "cohere"
            };
            for _ in 0..500 {
                let (mut t, _) = translate(target, kind, r#"{"model":"m","input":"a"}"#).unwrap();
                let n = (rng.next() % 80) as usize;
                let body = rng.bytes(n, br#"{}[]:,"0123456789.-e embdingsvaluflot"#);
                let _ = t.response(&body);
                let _ = t.error(500, &body);
            }
        }
    }
}
