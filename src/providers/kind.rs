//! The kinds of provider API LLMux speaks, by name: what a configuration names in a provider's
//! `type`. A leaf, so the configuration can hold a kind without reaching the translators (whose
//! constructors are in `providers/mod.rs`).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// The OpenAI API and every service that speaks it.
    OpenAi,
    /// Anthropic Messages API.
    Anthropic,
    /// Cohere v2 Chat.
    Cohere,
    /// Google Gemini API (AI Studio, `generateContent`).
    Gemini,
    /// AWS Bedrock Runtime (Converse, InvokeModel for embeddings), SigV4-signed.
    Bedrock,
    /// Google Vertex AI: Gemini and Claude models, OAuth2 bearer auth.
    Vertex,
}

impl ProviderKind {
    pub const NAMES: &'static [&'static str] = &[
        "openai",
        "anthropic",
        "cohere",
        "gemini",
        "bedrock",
        "vertex",
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "openai" => Some(Self::OpenAi),
            "anthropic" => Some(Self::Anthropic),
            "cohere" => Some(Self::Cohere),
            "gemini" => Some(Self::Gemini),
            "bedrock" => Some(Self::Bedrock),
            "vertex" => Some(Self::Vertex),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Cohere => "cohere",
            Self::Gemini => "gemini",
            Self::Bedrock => "bedrock",
            Self::Vertex => "vertex",
        }
    }

    pub fn default_base_path(self) -> &'static str {
        match self {
            Self::OpenAi => "/v1",
            Self::Anthropic => "/v1",
            Self::Cohere => "/v2",
            Self::Gemini => "/v1beta",
            Self::Bedrock => "",
            Self::Vertex => "/v1",
        }
    }
}
