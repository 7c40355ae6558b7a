//! Native embeddings APIs: Gemini `:batchEmbedContents`, Cohere `POST /v2/embed` and Vertex AI
//! `:predict` (PROVIDERS.md §4.6, §5.2, §7.6). Strict request checks in each API's wording;
//! vectors are the deterministic ones of [`crate::embeddings::vector`].

use serde_json::{json, Value};

use crate::embeddings::{vector, DEFAULT_DIMENSIONS};

const MAX_DIMENSIONS: u64 = 4096;

const GEMINI_TASK_TYPES: &[&str] = &[
    "TASK_TYPE_UNSPECIFIED",
    "RETRIEVAL_QUERY",
    "RETRIEVAL_DOCUMENT",
    "SEMANTIC_SIMILARITY",
    "CLASSIFICATION",
    "CLUSTERING",
    "QUESTION_ANSWERING",
    "FACT_VERIFICATION",
    "CODE_RETRIEVAL_QUERY",
];

fn unknown(name: &str, at: &str) -> String {
    format!("Invalid JSON payload received. Unknown name \"{name}\" at '{at}': Cannot find field.")
}

fn dims(v: Option<&Value>, name: &str) -> Result<u64, String> {
    match v {
        None => Ok(DEFAULT_DIMENSIONS),
        Some(d) => match d.as_u64() {
            Some(n) if (1..=MAX_DIMENSIONS).contains(&n) => Ok(n),
            _ => Err(format!(
                "{name} must be an integer from 1 to {MAX_DIMENSIONS}"
            )),
        },
    }
}

/// Gemini `models/{model}:batchEmbedContents`: `{"requests":[{model, content, taskType?,
/// title?, outputDimensionality?}]}` → `{"embeddings":[{"values":[...]}]}`. Every request's
/// `model` must be `models/{model}` of the URL, as the real API requires.
pub fn gemini_batch(model: &str, body: &Value) -> Result<Vec<u8>, String> {
    let o = body.as_object().ok_or("Invalid JSON payload received.")?;
    for k in o.keys() {
        if k != "requests" {
            return Err(unknown(k, ""));
        }
    }
    let reqs = o
        .get("requests")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
        .ok_or("* BatchEmbedContentsRequest.requests: contents is not specified")?;
    let want_model = format!("models/{model}");
    let mut out = Vec::with_capacity(reqs.len());
    for (i, r) in reqs.iter().enumerate() {
        let at = format!("requests[{i}]");
        let r = r
            .as_object()
            .ok_or_else(|| format!("Invalid value at '{at}'"))?;
        for k in r.keys() {
            if !matches!(
                k.as_str(),
                "model" | "content" | "taskType" | "title" | "outputDimensionality"
            ) {
                return Err(unknown(k, &at));
            }
        }
        if r.get("model").and_then(Value::as_str) != Some(want_model.as_str()) {
            return Err(format!(
                "* BatchEmbedContentsRequest.{at}.model: unexpected model name format (want {want_model})"
            ));
        }
        if let Some(t) = r.get("taskType") {
            if !t.as_str().is_some_and(|t| GEMINI_TASK_TYPES.contains(&t)) {
                return Err(format!(
                    "Invalid value at '{at}.task_type' (type.googleapis.com/google.ai.generativelanguage.v1beta.TaskType), {t}"
                ));
            }
        }
        let parts = r
            .get("content")
            .and_then(|c| c.get("parts"))
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                format!("* BatchEmbedContentsRequest.{at}.content.parts: contents is not specified")
            })?;
        let mut text = String::new();
        for p in parts {
            match p.get("text").and_then(Value::as_str) {
                Some(t) => text.push_str(t),
                None => return Err(format!("{at}.content.parts: only text parts are supported")),
            }
        }
        let n = dims(r.get("outputDimensionality"), "outputDimensionality")?;
        out.push(json!({ "values": vector(&text, n) }));
    }
    Ok(json!({ "embeddings": out }).to_string().into_bytes())
}

const COHERE_FIELDS: &[&str] = &[
    "model",
    "texts",
    "images",
    "inputs",
    "input_type",
    "embedding_types",
    "output_dimension",
    "max_tokens",
    "truncate",
    "priority",
];

/// Cohere `POST /v2/embed` → `EmbedByTypeResponse` with `embeddings.float` and
/// `meta.billed_units.input_tokens` (⌈bytes/4⌉ per text, at least 1).
pub fn cohere(body: &Value, id: &str) -> Result<Vec<u8>, String> {
    let o = body
        .as_object()
        .ok_or("invalid request: body must be a JSON object")?;
    for k in o.keys() {
        if !COHERE_FIELDS.contains(&k.as_str()) {
            return Err(format!(
                "invalid request: unknown field: parameter {k} is not a valid field"
            ));
        }
    }
    if o.get("model")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("invalid request: model must be specified".into());
    }
    let texts: Vec<&str> = o
        .get("texts")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty() && t.len() <= 96)
        .and_then(|t| t.iter().map(Value::as_str).collect())
        .ok_or("invalid request: texts must be an array of 1 to 96 strings")?;
    match o.get("input_type").and_then(Value::as_str) {
        Some("search_document" | "search_query" | "classification" | "clustering") => {}
        _ => {
            return Err("invalid request: valid input_type must be provided with the provided model (search_document, search_query, classification, clustering)".into())
        }
    }
    let types: Vec<&str> = o
        .get("embedding_types")
        .and_then(Value::as_array)
        .and_then(|t| t.iter().map(Value::as_str).collect())
        .unwrap_or_else(|| vec!["float"]);
    if types.is_empty() || types.iter().any(|t| *t != "float") {
        return Err("invalid request: the mock serves embedding_types [\"float\"] only".into());
    }
    let n = match o.get("output_dimension") {
        None => DEFAULT_DIMENSIONS,
        Some(d) => match d.as_u64() {
            Some(n @ (256 | 512 | 1024 | 1536)) => n,
            _ => {
                return Err(
                    "invalid request: output_dimension must be one of 256, 512, 1024, 1536".into(),
                )
            }
        },
    };
    let tokens: u64 = texts
        .iter()
        .map(|t| (t.len() as u64).div_ceil(4).max(1))
        .sum();
    let floats: Vec<Vec<f32>> = texts.iter().map(|t| vector(t, n)).collect();
    Ok(json!({
        "id": id,
        "embeddings": {"float": floats},
        "texts": texts,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
        "response_type": "embeddings_by_type",
    })
    .to_string()
    .into_bytes())
}

/// Vertex AI `publishers/google/models/{m}:predict` for text embeddings:
/// `{"instances":[{"content", "task_type"?, "title"?}], "parameters"?: {"outputDimensionality"?,
/// "autoTruncate"?}}` → `{"predictions":[{"embeddings":{"values", "statistics":{"token_count",
/// "truncated"}}}]}`.
pub fn vertex_predict(body: &Value) -> Result<Vec<u8>, String> {
    let o = body.as_object().ok_or("Invalid JSON payload received.")?;
    for k in o.keys() {
        if !matches!(k.as_str(), "instances" | "parameters") {
            return Err(unknown(k, ""));
        }
    }
    let instances = o
        .get("instances")
        .and_then(Value::as_array)
        .filter(|i| !i.is_empty())
        .ok_or("instances must be a non-empty list")?;
    let mut n = DEFAULT_DIMENSIONS;
    if let Some(p) = o.get("parameters") {
        let p = p.as_object().ok_or("parameters must be an object")?;
        for k in p.keys() {
            if !matches!(k.as_str(), "outputDimensionality" | "autoTruncate") {
                return Err(unknown(k, "parameters"));
            }
        }
        n = dims(p.get("outputDimensionality"), "outputDimensionality")?;
    }
    let mut preds = Vec::with_capacity(instances.len());
    for (i, inst) in instances.iter().enumerate() {
        let inst = inst
            .as_object()
            .ok_or_else(|| format!("instances[{i}] must be an object"))?;
        for k in inst.keys() {
            if !matches!(k.as_str(), "content" | "task_type" | "title") {
                return Err(unknown(k, &format!("instances[{i}]")));
            }
        }
        let text = inst
            .get("content")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("instances[{i}].content must be a string"))?;
        if let Some(t) = inst.get("task_type") {
            if !t.as_str().is_some_and(|t| GEMINI_TASK_TYPES.contains(&t)) {
                return Err(format!("instances[{i}].task_type: invalid task type {t}"));
            }
        }
        let tokens = (text.len() as u64).div_ceil(4).max(1);
        preds.push(json!({"embeddings": {"values": vector(text, n),
            "statistics": {"token_count": tokens as f64, "truncated": false}}}));
    }
    Ok(json!({ "predictions": preds }).to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: Vec<u8>) -> Value {
        serde_json::from_slice(&b).unwrap()
    }

    #[test]
    fn gemini_batch_checks_and_answers() {
        let ok = json!({"requests": [
            {"model": "models/e", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 3},
            {"model": "models/e", "content": {"parts": [{"text": "b"}]}, "taskType": "RETRIEVAL_QUERY"}]});
        let v = parse(gemini_batch("e", &ok).unwrap());
        assert_eq!(v["embeddings"][0]["values"].as_array().unwrap().len(), 3);
        assert_eq!(
            v["embeddings"][1]["values"].as_array().unwrap().len(),
            DEFAULT_DIMENSIONS as usize
        );
        for bad in [
            json!({"requests": []}),
            json!({"requests": [{"model": "models/other", "content": {"parts": [{"text": "a"}]}}]}),
            json!({"requests": [{"model": "models/e", "content": {"parts": [{"text": "a"}]}, "task_type": "X"}]}),
            json!({"requests": [{"model": "models/e", "content": {"parts": [{"text": "a"}]}, "taskType": "NOPE"}]}),
            json!({"requests": [{"model": "models/e", "content": {"parts": []}}]}),
            json!({"requests": [{"model": "models/e", "content": {"parts": [{"text": "a"}]}}], "x": 1}),
        ] {
            assert!(gemini_batch("e", &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cohere_checks_and_answers() {
        let v = parse(
            cohere(
                &json!({"model": "m", "texts": ["hello"], "input_type": "search_document",
                        "embedding_types": ["float"], "output_dimension": 256}),
                "id1",
            )
            .unwrap(),
        );
        assert_eq!(v["embeddings"]["float"][0].as_array().unwrap().len(), 256);
        assert_eq!(v["meta"]["billed_units"]["input_tokens"], 2);
        for bad in [
            json!({"model": "m", "texts": ["a"]}),
            json!({"model": "m", "texts": [], "input_type": "search_query"}),
            json!({"model": "m", "texts": ["a"], "input_type": "search_query", "dimensions": 3}),
            json!({"model": "m", "texts": ["a"], "input_type": "search_query", "output_dimension": 3}),
            json!({"model": "m", "texts": ["a"], "input_type": "search_query", "embedding_types": ["int8"]}),
        ] {
            assert!(cohere(&bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn vertex_predict_checks_and_answers() {
        let v = parse(
            vertex_predict(&json!({"instances": [{"content": "hello world"}],
                                   "parameters": {"outputDimensionality": 4}}))
            .unwrap(),
        );
        assert_eq!(
            v["predictions"][0]["embeddings"]["values"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
        assert_eq!(
            v["predictions"][0]["embeddings"]["statistics"]["token_count"],
            3.0
        );
        for bad in [
            json!({"instances": []}),
            json!({"instances": [{"text": "a"}]}),
            json!({"instances": [{"content": "a"}], "parameters": {"dimensions": 3}}),
            json!({"instances": [{"content": "a", "task_type": "X"}]}),
        ] {
            assert!(vertex_predict(&bad).is_err(), "{bad}");
        }
    }
}
