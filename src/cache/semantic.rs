//! The semantic store's wire format: the Chroma HTTP API (v2) requests LLMux sends and the
//! answers it reads, as plain functions (the calls themselves are made by
//! [`crate::stages::cache`]).
//!
//! Chroma facts relied on (Chroma 1.5 server, `chroma run`; API reference
//! https://docs.trychroma.com/reference/python/client and the server's OpenAPI at
//! `/openapi.json`; checked against the server the tests run):
//! - `POST {base}/collections` with `get_or_create: true` answers the collection with its `id`;
//!   `configuration.hnsw.space: "cosine"` makes `distances` cosine distances (1 − similarity).
//! - `POST {base}/collections/{id}/query` takes `query_embeddings`, `n_results`, a `where`
//!   filter (`$and`, `$gt`) and `include`; answers one list per query embedding.
//! - `POST .../upsert` takes parallel `ids`, `embeddings`, `documents`, `metadatas` lists;
//!   `POST .../delete` takes a `where` filter.
//!
//! Isolation: every entry carries `ctx`, the digest of the tenant and the exact part of the
//! request ([`super::key`]); a query filters on it, so an entry is only ever a candidate for
//! the same tenant's same conversation.

use serde::Deserialize;
use serde_json::{json, Value};

use super::config::SemanticConfig;
use super::key::CacheApi;

/// Largest answer read from the store or the embedding model (the caller's cap on a callout).
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

pub fn collection_call(c: &SemanticConfig) -> (String, Vec<u8>) {
    (
        format!("{}/collections", c.base_path),
        json!({"name": c.collection, "get_or_create": true,
               "configuration": {"hnsw": {"space": "cosine"}}})
        .to_string()
        .into_bytes(),
    )
}

/// The collection id in Chroma's answer to [`collection_call`] (checked: it goes in a path).
pub fn collection_id(answer: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Collection {
        id: String,
    }
    let c: Collection = serde_json::from_slice(answer).ok()?;
    let ok = !c.id.is_empty()
        && c.id.len() <= 64
        && c.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    ok.then_some(c.id)
}

pub fn query_call(
    c: &SemanticConfig,
    collection: &str,
    embedding: &[f32],
    context: &str,
    now_unix: u64,
) -> (String, Vec<u8>) {
    (
        format!("{}/collections/{collection}/query", c.base_path),
        json!({
            "query_embeddings": [embedding],
            "n_results": 1,
            "where": {"$and": [{"ctx": context}, {"expires": {"$gt": now_unix}}]},
            "include": ["distances", "documents", "metadatas"],
        })
        .to_string()
        .into_bytes(),
    )
}

/// The nearest stored answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Nearest {
    /// Cosine similarity (1 − Chroma's cosine distance).
    pub similarity: f32,
    pub document: Vec<u8>,
    pub api: Option<CacheApi>,
    pub usage: (u64, u64),
    pub cost_nanousd: Option<u64>,
}

/// The first result of a query answer; `None` when there is none (or the answer is not one).
pub fn nearest(answer: &[u8]) -> Option<Nearest> {
    #[derive(Deserialize)]
    struct Query {
        distances: Option<Vec<Vec<Option<f64>>>>,
        documents: Option<Vec<Vec<Option<String>>>>,
        metadatas: Option<Vec<Vec<Option<Value>>>>,
    }
    let q: Query = serde_json::from_slice(answer).ok()?;
    let distance = (*q.distances?.first()?.first()?)?;
    let document = q.documents?.into_iter().next()?.into_iter().next()??;
    let meta = q
        .metadatas
        .and_then(|m| m.into_iter().next())
        .and_then(|m| m.into_iter().next())
        .flatten()
        .unwrap_or(Value::Null);
    let int = |k: &str| meta.get(k).and_then(Value::as_u64);
    let api = match meta.get("api").and_then(Value::as_str) {
        Some("chat") => Some(CacheApi::Chat),
        Some("messages") => Some(CacheApi::Messages),
        _ => None,
    };
    if !distance.is_finite() {
        return None;
    }
    Some(Nearest {
        similarity: (1.0 - distance) as f32,
        document: document.into_bytes(),
        api,
        usage: (
            int("prompt_tokens").unwrap_or(0),
            int("completion_tokens").unwrap_or(0),
        ),
        cost_nanousd: int("cost_nanousd"),
    })
}

/// What an upsert stores besides the vector.
pub struct Upsert<'a> {
    pub id: &'a str,
    pub embedding: &'a [f32],
    pub document: &'a str,
    pub context: &'a str,
    pub api: CacheApi,
    pub expires_unix: u64,
    pub stored_unix: u64,
    pub usage: (u64, u64),
    pub cost_nanousd: Option<u64>,
}

pub fn upsert_call(c: &SemanticConfig, collection: &str, u: &Upsert<'_>) -> (String, Vec<u8>) {
    let mut meta = json!({
        "ctx": u.context,
        "api": u.api.name(),
        "expires": u.expires_unix,
        "stored": u.stored_unix,
        "prompt_tokens": u.usage.0,
        "completion_tokens": u.usage.1,
    });
    if let (Some(cost), Some(o)) = (u.cost_nanousd, meta.as_object_mut()) {
        o.insert("cost_nanousd".into(), json!(cost));
    }
    (
        format!("{}/collections/{collection}/upsert", c.base_path),
        json!({"ids": [u.id], "embeddings": [u.embedding], "documents": [u.document],
               "metadatas": [meta]})
        .to_string()
        .into_bytes(),
    )
}

/// Deletes every expired entry (sent from the root's tick, never on a request's path).
pub fn purge_call(c: &SemanticConfig, collection: &str, now_unix: u64) -> (String, Vec<u8>) {
    (
        format!("{}/collections/{collection}/delete", c.base_path),
        json!({"where": {"expires": {"$lte": now_unix}}})
            .to_string()
            .into_bytes(),
    )
}

/// The embeddings request for the configured embedding model (OpenAI's shape: LLMux translates
/// it for the provider like any client's).
pub fn embedding_request(model: &str, text: &str) -> Vec<u8> {
    json!({"model": model, "input": text, "encoding_format": "float"})
        .to_string()
        .into_bytes()
}

/// The vector in an OpenAI embeddings answer (`data[0].embedding`); `None` unless it is a
/// non-empty list of finite numbers.
pub fn embedding_of(answer: &[u8]) -> Option<Vec<f32>> {
    #[derive(Deserialize)]
    struct Item {
        embedding: Vec<f64>,
    }
    #[derive(Deserialize)]
    struct List {
        data: Vec<Item>,
    }
    let l: List = serde_json::from_slice(answer).ok()?;
    let v = l.data.into_iter().next()?.embedding;
    (!v.is_empty() && v.iter().all(|x| x.is_finite()))
        .then(|| v.into_iter().map(|x| x as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SemanticConfig {
        crate::cache::config::parse(
            &json!({"semantic": {"cluster": "chroma", "embedding_model": "embed"}}),
            "cache",
        )
        .unwrap()
        .semantic
        .unwrap()
    }

    #[test]
    fn calls_name_the_collection_and_filter_on_the_context() {
        let c = cfg();
        let (path, body) = query_call(&c, "abc-1", &[0.5, 1.0], "ctx1", 100);
        assert_eq!(
            path,
            "/api/v2/tenants/default_tenant/databases/default_database/collections/abc-1/query"
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["where"]["$and"][0]["ctx"], "ctx1");
        assert_eq!(v["where"]["$and"][1]["expires"]["$gt"], 100);
        assert_eq!(v["n_results"], 1);
        let (_, body) = upsert_call(
            &c,
            "abc-1",
            &Upsert {
                id: "d1",
                embedding: &[0.5],
                document: "{}",
                context: "ctx1",
                api: CacheApi::Messages,
                expires_unix: 200,
                stored_unix: 100,
                usage: (3, 4),
                cost_nanousd: None,
            },
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["metadatas"][0]["api"], "messages");
        assert!(v["metadatas"][0].get("cost_nanousd").is_none());
        let (_, body) = collection_call(&c);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["configuration"]["hnsw"]["space"], "cosine");
    }

    #[test]
    fn reads_chromas_answers() {
        // As Chroma 1.5.9 answers (captured from `chroma run`).
        let q = br#"{"ids":[["a1"]],"embeddings":null,"documents":[["hello"]],"uris":null,"metadatas":[[{"ctx":"k1","expires":2000000000,"api":"chat","prompt_tokens":7,"completion_tokens":9,"cost_nanousd":12}]],"distances":[[0.0049628615]],"include":["distances","documents","metadatas"]}"#;
        let n = nearest(q).unwrap();
        assert!((n.similarity - 0.995_037).abs() < 1e-5);
        assert_eq!(n.document, b"hello");
        assert_eq!(
            (n.api, n.usage, n.cost_nanousd),
            (Some(CacheApi::Chat), (7, 9), Some(12))
        );
        let empty = br#"{"ids":[[]],"documents":[[]],"metadatas":[[]],"distances":[[]]}"#;
        assert_eq!(nearest(empty), None);
        assert_eq!(nearest(b"{\"error\":\"x\"}"), None);
        assert_eq!(nearest(b"not json"), None);
        assert_eq!(
            collection_id(br#"{"id":"8ecdd9d3-54dd-483d-aab5-f54d1b586809","name":"x"}"#)
                .as_deref(),
            Some("8ecdd9d3-54dd-483d-aab5-f54d1b586809")
        );
        assert_eq!(collection_id(br#"{"id":"../x"}"#), None);
    }

    #[test]
    fn reads_an_embedding() {
        assert_eq!(
            embedding_of(br#"{"object":"list","data":[{"embedding":[0.25,-1]}]}"#),
            Some(vec![0.25, -1.0])
        );
        assert_eq!(embedding_of(br#"{"data":[{"embedding":[]}]}"#), None);
        assert_eq!(embedding_of(br#"{"data":[]}"#), None);
        assert_eq!(embedding_of(br#"{"data":[{"embedding":"AAAA"}]}"#), None);
    }
}
