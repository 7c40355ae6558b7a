//! OpenAI `/v1/embeddings` → Bedrock InvokeModel with the model's native body (Titan, Cohere).

use super::*;

// ---------------------------------------------------------------------------------------------
// Embeddings: InvokeModel with the model's native body
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum EmbedFamily {
    #[default]
    Titan,
    Cohere,
}

#[derive(Default)]
pub struct BedrockEmbeddings {
    provider: String,
    model: String,
    family: EmbedFamily,
    base64: bool,
    usage: Option<Usage>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TitanRequest<'r> {
    pub(super) input_text: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) dimensions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) normalize: Option<bool>,
}

#[derive(Serialize)]
pub(super) struct CohereRequest<'r> {
    pub(super) texts: Vec<&'r str>,
    pub(super) input_type: &'r str,
    pub(super) embedding_types: [&'static str; 1],
}

#[derive(Serialize)]
pub(super) struct EmbeddingList<'a> {
    pub(super) object: &'static str,
    pub(super) data: Vec<EmbeddingItem<'a>>,
    pub(super) model: &'a str,
    pub(super) usage: EmbeddingUsage,
}

#[derive(Serialize)]
pub(super) struct EmbeddingItem<'a> {
    pub(super) object: &'static str,
    pub(super) index: usize,
    pub(super) embedding: EmbeddingValue<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum EmbeddingValue<'a> {
    Floats(&'a Value),
    Base64(String),
}

#[derive(Serialize)]
pub(super) struct EmbeddingUsage {
    pub(super) prompt_tokens: u64,
    pub(super) total_tokens: u64,
}

impl BedrockEmbeddings {
    pub(super) fn item<'a>(
        &self,
        index: usize,
        v: &'a Value,
    ) -> Result<EmbeddingItem<'a>, GatewayError> {
        let floats = v.as_array().ok_or_else(|| {
            GatewayError::new(
                502,
                "api_error",
                format!("{}: an embedding is not an array of numbers", self.provider),
            )
        })?;
        let embedding = if self.base64 {
            let mut bytes = Vec::with_capacity(floats.len() * 4);
            for f in floats {
                bytes.extend_from_slice(&(f.as_f64().unwrap_or(0.0) as f32).to_le_bytes());
            }
            EmbeddingValue::Base64(base64(&bytes))
        } else {
            EmbeddingValue::Floats(v)
        };
        Ok(EmbeddingItem {
            object: "embedding",
            index,
            embedding,
        })
    }
}

impl ChatTranslator for BedrockEmbeddings {
    fn request(&mut self, call: &ChatCall<'_>) -> Result<ProviderRequest, GatewayError> {
        let p = call.provider;
        let env = call.envelope;
        self.provider = p.name.clone();
        self.model = call.upstream_model.to_string();
        let model = call.upstream_model;
        self.family = if model.contains("amazon.titan-embed-text") {
            EmbedFamily::Titan
        } else if model.contains("cohere.embed") {
            EmbedFamily::Cohere
        } else {
            return Err(bad(
                "model",
                format!("bedrock embeddings support Amazon Titan Text Embeddings (`amazon.titan-embed-text-*`) and Cohere Embed (`cohere.embed-*`), not `{model}`"),
            ));
        };
        let field = |name: &str| env.field(name).filter(|v| v.get() != "null");
        let input = field("input").ok_or_else(|| bad("input", "`input` is required"))?;
        let not_text = || {
            bad(
                "input",
                "bedrock embeddings take text: a string or an array of strings (not token arrays)",
            )
        };
        let input: Value = serde_json::from_str(input.get()).map_err(|_| not_text())?;
        let texts: Vec<&str> = match &input {
            Value::String(s) => vec![s.as_str()],
            Value::Array(items) => items
                .iter()
                .map(Value::as_str)
                .collect::<Option<_>>()
                .ok_or_else(not_text)?,
            _ => return Err(not_text()),
        };
        let dimensions = match field("dimensions") {
            None => None,
            Some(d) => Some(
                d.get()
                    .parse::<u32>()
                    .map_err(|_| bad("dimensions", "`dimensions` must be a positive integer"))?,
            ),
        };
        self.base64 = field("encoding_format").is_some_and(|f| f.get() == "\"base64\"");
        let body = match self.family {
            EmbedFamily::Titan => {
                if texts.len() != 1 {
                    return Err(bad(
                        "input",
                        format!("Amazon Titan text embeddings take one input per request; this request has {}: send one string per request", texts.len()),
                    ));
                }
                let v2 = model.contains("-v2");
                if dimensions.is_some() && !v2 {
                    return Err(unsupported("dimensions", "`dimensions` for Titan text embeddings v1"));
                }
                serde_json::to_vec(&TitanRequest {
                    input_text: texts[0],
                    dimensions,
                    normalize: v2.then_some(true),
                })
            }
            EmbedFamily::Cohere => {
                if dimensions.is_some() {
                    return Err(unsupported("dimensions", "`dimensions` for Cohere Embed"));
                }
                let input_type = match field("input_type") {
                    None => "search_document",
                    Some(v) => {
                        let s = v.get().trim_matches('"');
                        match s {
                            "search_document" | "search_query" | "classification" | "clustering" => s,
                            _ => return Err(bad("input_type", "`input_type` must be search_document, search_query, classification or clustering")),
                        }
                    }
                };
                serde_json::to_vec(&CohereRequest {
                    texts,
                    input_type,
                    embedding_types: ["float"],
                })
            }
        }
        .map_err(|e| GatewayError::new(500, "api_error", e.to_string()))?;
        signed(
            p,
            model_path(p, model, "invoke"),
            body,
            Some("application/json"),
            call.now_unix,
        )
    }

    fn response(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, GatewayError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            GatewayError::new(
                502,
                "api_error",
                format!("{}: unreadable embeddings answer: {e}", self.provider),
            )
        })?;
        let missing = |what: &str| {
            GatewayError::new(
                502,
                "api_error",
                format!("{}: embeddings answer without `{what}`", self.provider),
            )
        };
        let (data, tokens) = match self.family {
            EmbedFamily::Titan => {
                let e = v.get("embedding").ok_or_else(|| missing("embedding"))?;
                let tokens = v
                    .get("inputTextTokenCount")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                (vec![self.item(0, e)?], tokens)
            }
            EmbedFamily::Cohere => {
                // `embeddings` is `[[...]]`, or `{"float": [[...]]}` when types were asked for.
                let e = v.get("embeddings").ok_or_else(|| missing("embeddings"))?;
                let rows = e
                    .get("float")
                    .unwrap_or(e)
                    .as_array()
                    .ok_or_else(|| missing("embeddings"))?;
                let mut data = Vec::with_capacity(rows.len());
                for (i, r) in rows.iter().enumerate() {
                    data.push(self.item(i, r)?);
                }
                // Cohere on Bedrock reports tokens only in a response header.
                (data, 0)
            }
        };
        self.usage = Some(Usage {
            prompt_tokens: tokens,
            ..Default::default()
        });
        let out = EmbeddingList {
            object: "list",
            data,
            model: &self.model,
            usage: EmbeddingUsage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        };
        serde_json::to_vec(&out)
            .map(Some)
            .map_err(|e| GatewayError::new(500, "api_error", e.to_string()))
    }

    fn stream_chunk(&mut self, _chunk: &[u8], _end_of_stream: bool, _out: &mut Vec<u8>) -> bool {
        false
    }

    fn error(&self, status: u16, body: &[u8]) -> GatewayError {
        bedrock_error(&self.provider, status, body)
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}
