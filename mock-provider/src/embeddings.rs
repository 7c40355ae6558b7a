//! OpenAI `POST /v1/embeddings` (also served under Azure's deployment paths and other prefixes).

use serde_json::{json, Value};

use crate::openai::OaiError;

/// Default vector length when the request has no `dimensions`.
pub const DEFAULT_DIMENSIONS: u64 = 8;
const MAX_DIMENSIONS: u64 = 4096;
const MAX_INPUTS: usize = 2048;

/// The inputs as texts (token arrays are rendered as their numbers), or the API's 400.
pub fn validate(body: &Value) -> Result<Vec<String>, OaiError> {
    let o = body
        .as_object()
        .ok_or_else(|| OaiError::invalid("The request body must be a JSON object.", None, None))?;
    match o.get("model") {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => {
            return Err(OaiError::invalid(
                "you must provide a model parameter",
                Some("model"),
                None,
            ))
        }
    }
    let inputs: Vec<String> = match o.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_INPUTS => {
            let mut out = Vec::with_capacity(items.len());
            for (i, it) in items.iter().enumerate() {
                match it {
                    Value::String(s) => out.push(s.clone()),
                    Value::Number(n) => out.push(n.to_string()),
                    Value::Array(tokens) if tokens.iter().all(Value::is_u64) => {
                        out.push(format!("{tokens:?}"))
                    }
                    _ => {
                        return Err(OaiError::invalid(
                            format!("'$.input[{i}]' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."),
                            Some("input"),
                            None,
                        ))
                    }
                }
            }
            out
        }
        _ => {
            return Err(OaiError::invalid(
                "'input' must be a string, an array of strings, or an array of token arrays (1 to 2048 items)",
                Some("input"),
                None,
            ))
        }
    };
    if let Some(d) = o.get("dimensions") {
        match d.as_u64() {
            Some(n) if (1..=MAX_DIMENSIONS).contains(&n) => {}
            _ => {
                return Err(OaiError::invalid(
                    "'dimensions' must be an integer from 1 to 4096",
                    Some("dimensions"),
                    None,
                ))
            }
        }
    }
    match o.get("encoding_format") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "float" || s == "base64" => {}
        _ => {
            return Err(OaiError::invalid(
                "'encoding_format' must be 'float' or 'base64'",
                Some("encoding_format"),
                None,
            ))
        }
    }
    for key in o.keys() {
        if !matches!(
            key.as_str(),
            "model" | "input" | "dimensions" | "encoding_format" | "user"
        ) {
            return Err(OaiError::invalid(
                format!("Unrecognized request argument supplied: {key}"),
                None,
                None,
            ));
        }
    }
    Ok(inputs)
}

/// Length of a `semantic` model's vectors (at least).
pub const SEMANTIC_DIMENSIONS: u64 = 64;

/// A bag-of-words vector (models whose name contains `semantic`, for the semantic cache's
/// tests): each lower-cased word (letters and digits) adds 1 to a dimension picked by its hash,
/// normalised to length 1. Texts sharing most words are close (cosine similarity near 1); texts
/// sharing none are orthogonal — the property a real embedding model has that the tests need.
pub fn semantic_vector(text: &str, dimensions: u64) -> Vec<f32> {
    let mut v = vec![0f32; dimensions.max(1) as usize];
    let lower = text.to_lowercase();
    for word in lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in word.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        v[(h % dimensions.max(1)) as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// A deterministic vector for `text`: the same text always gives the same numbers.
pub fn vector(text: &str, dimensions: u64) -> Vec<f32> {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (0..dimensions)
        .map(|j| {
            let x = h
                .wrapping_add(j.wrapping_mul(0x9e3779b97f4a7c15))
                .rotate_left(17);
            (x % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// Standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// The response body for a validated request.
pub fn response_body(body: &Value, inputs: &[String]) -> Vec<u8> {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let dims = body
        .get("dimensions")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_DIMENSIONS);
    let as_base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let v = if model.contains("semantic") {
                semantic_vector(text, dims.max(SEMANTIC_DIMENSIONS))
            } else {
                vector(text, dims)
            };
            let embedding = if as_base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: usize = inputs.iter().map(|t| (t.len() / 4).max(1)).sum();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_inputs() {
        assert_eq!(
            validate(&json!({"model": "m", "input": ["a", "b"]})).unwrap(),
            vec!["a", "b"]
        );
        for bad in [
            json!({"input": "x"}),
            json!({"model": "m"}),
            json!({"model": "m", "input": []}),
            json!({"model": "m", "input": [{}]}),
            json!({"model": "m", "input": "x", "dimensions": 0}),
            json!({"model": "m", "input": "x", "encoding_format": "hex"}),
            json!({"model": "m", "input": "x", "extra": 1}),
        ] {
            assert!(validate(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_of_known_bytes() {
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
    }

    #[test]
    fn vectors_are_deterministic_and_sized() {
        assert_eq!(vector("x", 3), vector("x", 3));
        assert_ne!(vector("x", 3), vector("y", 3));
        assert_eq!(vector("x", 5).len(), 5);
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let a = semantic_vector("What is the capital of France?", 64);
        let b = semantic_vector("what is the capital of france", 64);
        let c = semantic_vector("Tell me a joke about penguins", 64);
        assert!((cos(&a, &b) - 1.0).abs() < 1e-5);
        assert!(cos(&a, &c) < 0.5);
    }
}
