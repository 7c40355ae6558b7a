//! Token usage of one answer, as every provider's usage is normalised: what translators read
//! from answers, limits charge, pricing costs and metrics count. A leaf: it names no other
//! module.

/// Token counts in OpenAI's terms: `prompt_tokens` includes cached and cache-creation tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Of `prompt_tokens`, read from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Of `prompt_tokens`, written to the provider's prompt cache.
    pub cache_creation_tokens: u64,
    /// Of `completion_tokens`, spent on reasoning.
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// Two answers' usage together (a broken stream and its continuation).
    pub fn plus(self, o: Usage) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens.saturating_add(o.prompt_tokens),
            completion_tokens: self.completion_tokens.saturating_add(o.completion_tokens),
            cached_tokens: self.cached_tokens.saturating_add(o.cached_tokens),
            cache_creation_tokens: self
                .cache_creation_tokens
                .saturating_add(o.cache_creation_tokens),
            reasoning_tokens: self.reasoning_tokens.saturating_add(o.reasoning_tokens),
        }
    }
}
