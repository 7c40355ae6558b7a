//! What the provider behind the OpenAI pivot can take of a Messages request, decided once per
//! request from the provider and the model it knows (see [`Target::of`]).

use crate::config::Provider;
use crate::providers::ProviderKind;

/// The choices [`super::to_openai_request`] makes per provider and model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Target {
    /// Send the token limit as `max_completion_tokens` (OpenAI and Azure: their reasoning models
    /// refuse `max_tokens`) rather than `max_tokens` (what many OpenAI-compatible services know).
    pub max_completion_tokens: bool,
    /// The model takes `reasoning_effort`: a Messages `thinking` request becomes one. Only model
    /// families known to think get it; the others would answer 400 (OpenAI's gpt-4o refuses
    /// `reasoning_effort`, Bedrock's translator refuses it for non-Claude models), so for them
    /// `thinking` is dropped.
    pub reasoning_effort: bool,
}

impl Target {
    /// The target for `upstream_model` at provider `p`.
    pub fn of(p: &Provider, upstream_model: &str) -> Target {
        Target {
            max_completion_tokens: matches!(p.type_name.as_str(), "openai" | "azure"),
            reasoning_effort: thinks(p.kind, &p.type_name, upstream_model),
        }
    }
}

/// Whether `model` at a provider of this kind takes a thinking budget through `reasoning_effort`
/// (each provider translator maps it onto the provider's own switch). Known thinking families
/// only; anything unknown is `false` (the request goes without, as it would without `thinking`).
/// - OpenAI and Azure (`type` `openai`/`azure`; other OpenAI-compatible services differ per
///   service and get none): o1 (not o1-mini/o1-preview, which refuse the parameter), o3, o4 and
///   gpt-5 models but the `-chat` ones (OpenAI reasoning guide:
///   https://platform.openai.com/docs/guides/reasoning).
/// - Gemini and Vertex Gemini: 2.5 and later (thinking models,
///   https://ai.google.dev/gemini-api/docs/thinking).
/// - Bedrock, Vertex: Claude 3.7 and Claude 4 and later (extended thinking,
///   https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking); on Bedrock only
///   `anthropic.claude` ids, the ones the Bedrock translator gives a budget to.
/// - Cohere: the `reasoning` models (command-a-reasoning).
pub fn thinks(kind: ProviderKind, type_name: &str, model: &str) -> bool {
    let m = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    match kind {
        ProviderKind::OpenAi => {
            matches!(type_name, "openai" | "azure")
                && (m == "o1"
                    || m.starts_with("o1-2")
                    || m.starts_with("o3")
                    || m.starts_with("o4")
                    || (m.starts_with("gpt-5") && !m.contains("chat")))
        }
        ProviderKind::Gemini => gemini_thinks(&m),
        ProviderKind::Vertex => gemini_thinks(&m) || claude_thinks(&m),
        ProviderKind::Bedrock => m.contains("anthropic.claude") && claude_thinks(&m),
        ProviderKind::Cohere => m.contains("reasoning"),
        // Anthropic deployments get the request as it is (no pivot).
        ProviderKind::Anthropic => false,
    }
}

/// `gemini-X.Y...` with X.Y ≥ 2.5.
fn gemini_thinks(m: &str) -> bool {
    let Some(rest) = m.strip_prefix("gemini-") else {
        return false;
    };
    let version = rest.split('-').next().unwrap_or("");
    let mut parts = version.split('.');
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .unwrap_or(0);
    match major {
        Some(major) => major > 2 || (major == 2 && minor >= 5),
        None => false,
    }
}

/// A Claude model with extended thinking: 3.7, or 4 and later (every Claude id that is not
/// `claude-2`, `claude-instant` or a `claude-3-*` other than `claude-3-7`).
fn claude_thinks(m: &str) -> bool {
    let Some(at) = m.find("claude-") else {
        return false;
    };
    let rest = &m[at + "claude-".len()..];
    if rest.starts_with("3-7") {
        return true;
    }
    !(rest.starts_with('2') || rest.starts_with("instant") || rest.starts_with('3'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_thinking_families_take_reasoning_effort() {
        use ProviderKind::*;
        for (kind, ty, model, want) in [
            (OpenAi, "openai", "gpt-4o-mini", false),
            (OpenAi, "openai", "gpt-4.1", false),
            (OpenAi, "openai", "o1", true),
            (OpenAi, "openai", "o1-2024-12-17", true),
            (OpenAi, "openai", "o1-mini", false),
            (OpenAi, "openai", "o3-mini", true),
            (OpenAi, "azure", "o4-mini", true),
            (OpenAi, "openai", "gpt-5", true),
            (OpenAi, "openai", "gpt-5.1-codex", true),
            (OpenAi, "openai", "gpt-5-chat-latest", false),
            // Another OpenAI-compatible service: unknown, none.
            (OpenAi, "groq", "o3", false),
            (Gemini, "gemini", "gemini-2.0-flash", false),
            (Gemini, "gemini", "gemini-1.5-pro", false),
            (Gemini, "gemini", "gemini-2.5-flash", true),
            (Gemini, "gemini", "models/gemini-3-pro-preview", true),
            (Gemini, "gemini", "gemini-flash-latest", false),
            (Vertex, "vertex", "gemini-2.5-pro", true),
            (Vertex, "vertex", "claude-sonnet-4@20250514", true),
            (Vertex, "vertex", "claude-3-5-haiku@20241022", false),
            (Vertex, "vertex", "claude-3-7-sonnet@20250219", true),
            (
                Bedrock,
                "bedrock",
                "us.anthropic.claude-sonnet-4-20250514-v1:0",
                true,
            ),
            (
                Bedrock,
                "bedrock",
                "anthropic.claude-3-5-haiku-20241022-v1:0",
                false,
            ),
            (Bedrock, "bedrock", "amazon.nova-pro-v1:0", false),
            (Cohere, "cohere", "command-a-03-2025", false),
            (Cohere, "cohere", "command-a-reasoning-08-2025", true),
            (Anthropic, "anthropic", "claude-sonnet-4-5", false),
        ] {
            assert_eq!(thinks(kind, ty, model), want, "{ty} {model}");
        }
    }
}
