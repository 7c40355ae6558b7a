//! Bundled list prices and context windows of the models LLMux's providers serve, so spend and
//! budgets work without a `price` on every deployment. A deployment's own `price` always wins.
//!
//! USD per million tokens: input, output, cached input (prompt-cache read), cache creation
//! (prompt-cache write; 0 = the provider has no separate write price, so input price applies).
//! Prices are the providers' public list prices (standard tier, the lowest context tier where
//! prices are tiered) as published on the pages named above each group; they change, so check
//! them, and set `price` on a deployment for negotiated or regional prices.
//!
//! A model name matches an entry when it is the entry's name, or the name followed by a version
//! suffix: `-` and a digit (`claude-3-5-haiku-20241022`, `gemini-2.0-flash-001`,
//! `gpt-4o-2024-08-06`), `-latest`, or `@` (Vertex AI). A `provider/` prefix is ignored. The
//! longest matching name wins (`gpt-4o-mini` before `gpt-4o`).
//!
//! It owns the [`Price`] type and the parser of a deployment's `price`, naming only
//! `config::fields` of the config, so `config` depends on `pricing` and not the reverse.

use serde_json::Value;

use crate::config::fields::{check_keys, err, join, ConfigError};

/// Prices of a deployment, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Defaults to `input_per_mtok`.
    pub cached_input_per_mtok: f64,
    /// Defaults to `input_per_mtok`.
    pub cache_creation_per_mtok: f64,
}

/// The largest price a deployment's `price` may hold, USD per million tokens ($1 a token): far
/// above any real price, and small enough that no sum or product of prices and token counts
/// overflows an `f64`.
pub const MAX_PRICE_PER_MTOK: f64 = 1_000_000.0;

/// What `lowest-cost` routing compares: input plus output price, always finite and never NaN
/// (a NaN or infinite price compares as the dearest, `f64::MAX`).
pub fn routing_cost(p: &Price) -> f64 {
    let sum = p.input_per_mtok + p.output_per_mtok;
    if sum.is_nan() {
        f64::MAX
    } else {
        sum.clamp(0.0, f64::MAX)
    }
}

/// A deployment's `price`: input and output required, the cache prices default to input.
pub(crate) fn parse_price(v: &Value, path: &str) -> Result<Price, ConfigError> {
    let o = v
        .as_object()
        .ok_or_else(|| err(path, "must be an object of USD prices per million tokens"))?;
    let keys = [
        "input_per_mtok",
        "output_per_mtok",
        "cached_input_per_mtok",
        "cache_creation_per_mtok",
    ];
    check_keys(o, path, &keys)?;
    let get = |key: &str| -> Result<Option<f64>, ConfigError> {
        match o.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) if (0.0..=MAX_PRICE_PER_MTOK).contains(&f) => Ok(Some(f)),
                _ => Err(err(
                    &join(path, key),
                    format!(
                        "must be a number from 0 to {MAX_PRICE_PER_MTOK} (USD per million tokens)"
                    ),
                )),
            },
        }
    };
    let input = get(keys[0])?.ok_or_else(|| err(&join(path, keys[0]), "required"))?;
    let output = get(keys[1])?.ok_or_else(|| err(&join(path, keys[1]), "required"))?;
    Ok(Price {
        input_per_mtok: input,
        output_per_mtok: output,
        cached_input_per_mtok: get(keys[2])?.unwrap_or(input),
        cache_creation_per_mtok: get(keys[3])?.unwrap_or(input),
    })
}

/// name, input, output, cached input, cache creation, context window (tokens).
type Row = (&'static str, f32, f32, f32, f32, u32);

const TABLE: &[Row] = &[
    // OpenAI — https://platform.openai.com/docs/pricing
    ("gpt-4o", 2.50, 10.00, 1.25, 0.0, 128_000),
    ("gpt-4o-mini", 0.15, 0.60, 0.075, 0.0, 128_000),
    ("gpt-4.1", 2.00, 8.00, 0.50, 0.0, 1_047_576),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10, 0.0, 1_047_576),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025, 0.0, 1_047_576),
    ("o1", 15.00, 60.00, 7.50, 0.0, 200_000),
    ("o3", 2.00, 8.00, 0.50, 0.0, 200_000),
    ("o3-mini", 1.10, 4.40, 0.55, 0.0, 200_000),
    ("o4-mini", 1.10, 4.40, 0.275, 0.0, 200_000),
    ("text-embedding-3-small", 0.02, 0.0, 0.02, 0.0, 8_191),
    ("text-embedding-3-large", 0.13, 0.0, 0.13, 0.0, 8_191),
    // Anthropic — https://docs.anthropic.com/en/docs/about-claude/pricing
    // (cache read 0.1×, 5-minute cache write 1.25× the input price)
    ("claude-3-haiku", 0.25, 1.25, 0.03, 0.30, 200_000),
    ("claude-3-5-haiku", 0.80, 4.00, 0.08, 1.00, 200_000),
    ("claude-3-5-sonnet", 3.00, 15.00, 0.30, 3.75, 200_000),
    ("claude-3-7-sonnet", 3.00, 15.00, 0.30, 3.75, 200_000),
    ("claude-sonnet-4", 3.00, 15.00, 0.30, 3.75, 200_000),
    ("claude-sonnet-4-5", 3.00, 15.00, 0.30, 3.75, 200_000),
    ("claude-haiku-4-5", 1.00, 5.00, 0.10, 1.25, 200_000),
    ("claude-opus-4", 15.00, 75.00, 1.50, 18.75, 200_000),
    ("claude-opus-4-1", 15.00, 75.00, 1.50, 18.75, 200_000),
    // Google Gemini API — https://ai.google.dev/gemini-api/docs/pricing
    ("gemini-1.5-flash", 0.075, 0.30, 0.01875, 0.0, 1_048_576),
    ("gemini-1.5-pro", 1.25, 5.00, 0.3125, 0.0, 2_097_152),
    ("gemini-2.0-flash", 0.10, 0.40, 0.025, 0.0, 1_048_576),
    ("gemini-2.0-flash-lite", 0.075, 0.30, 0.075, 0.0, 1_048_576),
    ("gemini-2.5-flash", 0.30, 2.50, 0.075, 0.0, 1_048_576),
    ("gemini-2.5-flash-lite", 0.10, 0.40, 0.025, 0.0, 1_048_576),
    ("gemini-2.5-pro", 1.25, 10.00, 0.31, 0.0, 1_048_576),
    // Cohere — https://cohere.com/pricing
    ("command-r", 0.15, 0.60, 0.15, 0.0, 128_000),
    ("command-r-plus", 2.50, 10.00, 2.50, 0.0, 128_000),
    ("command-r7b", 0.0375, 0.15, 0.0375, 0.0, 128_000),
    ("command-a", 2.50, 10.00, 2.50, 0.0, 256_000),
    // Mistral — https://mistral.ai/pricing#api-pricing
    ("mistral-large", 2.00, 6.00, 2.00, 0.0, 128_000),
    ("mistral-medium", 0.40, 2.00, 0.40, 0.0, 128_000),
    ("mistral-small", 0.10, 0.30, 0.10, 0.0, 128_000),
    ("codestral", 0.30, 0.90, 0.30, 0.0, 256_000),
    ("ministral-8b", 0.10, 0.10, 0.10, 0.0, 128_000),
    // Llama on Groq — https://groq.com/pricing
    ("llama-3.3-70b-versatile", 0.59, 0.79, 0.59, 0.0, 131_072),
    ("llama-3.1-8b-instant", 0.05, 0.08, 0.05, 0.0, 131_072),
];

/// `model` without a `provider/` path and Bedrock's `vendor.` / `region.vendor.` prefixes
/// (`us.anthropic.claude-…`): leading segments of letters only, each ended by a dot (so
/// `gpt-4.1` and `gemini-1.5-pro` are left whole).
fn base_name(model: &str) -> &str {
    let mut name = model.rsplit('/').next().unwrap_or(model);
    while let Some((head, rest)) = name.split_once('.') {
        if head.is_empty() || !head.bytes().all(|b| b.is_ascii_lowercase()) {
            break;
        }
        name = rest;
    }
    name
}

fn row(model: &str) -> Option<&'static Row> {
    let name = base_name(model);
    TABLE
        .iter()
        .filter(|r| match name.strip_prefix(r.0) {
            Some("") | Some("-latest") => true,
            Some(rest) => {
                rest.starts_with('@')
                    || rest
                        .strip_prefix('-')
                        .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
            }
            None => false,
        })
        .max_by_key(|r| r.0.len())
}

/// The bundled list price of `model` (the provider's model name).
pub fn list_price(model: &str) -> Option<Price> {
    row(model).map(|r| {
        let input = f64::from(r.1);
        Price {
            input_per_mtok: input,
            output_per_mtok: f64::from(r.2),
            cached_input_per_mtok: f64::from(r.3),
            cache_creation_per_mtok: if r.4 > 0.0 { f64::from(r.4) } else { input },
        }
    })
}

/// The model's context window in tokens, when the table knows it.
pub fn context_window(model: &str) -> Option<u32> {
    row(model).map(|r| r.5)
}

/// A deployment's price: its own `price`, else the bundled list price of its upstream model.
pub fn price(own: Option<&Price>, upstream_model: &str) -> Option<Price> {
    own.copied().or_else(|| list_price(upstream_model))
}

/// What one request costs per token: the `configured` price, else the bundled list price of
/// the model name the request went out with (`upstream_model`: for a wildcard deployment, its
/// `model` with the `*` filled in). Dated and versioned names find their entry (see the module
/// documentation); `None` when neither is known.
pub fn price_for(upstream_model: &str, configured: Option<&Price>) -> Option<Price> {
    price(configured, upstream_model)
}

/// What to do with a request whose cost cannot be known (no configured price and no bundled
/// entry for its upstream model) when a budget applies to it (`unpriced`, top level or per
/// key). Requests without a budget are always served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unpriced {
    /// Answer 403 `unpriced_model`: a budget that cannot be charged does not bind.
    #[default]
    Refuse,
    /// Serve it; its cost is not counted (the budget does not see it).
    Allow,
}

/// `unpriced`: `"refuse"` or `"allow"`.
pub(crate) fn parse_unpriced(v: &Value, path: &str) -> Result<Unpriced, ConfigError> {
    match v.as_str() {
        Some("refuse") => Ok(Unpriced::Refuse),
        Some("allow") => Ok(Unpriced::Allow),
        _ => Err(err(path, "must be `refuse` or `allow`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Usage;

    #[test]
    fn names_match_with_versions_only() {
        let p = |m| list_price(m).map(|p| (p.input_per_mtok, p.output_per_mtok));
        assert_eq!(
            p("gpt-4o-mini"),
            Some((0.15000000596046448, 0.6000000238418579))
        );
        assert_eq!(p("gpt-4o-2024-08-06").map(|x| x.1), Some(10.0));
        assert_eq!(p("claude-3-5-haiku-20241022").map(|x| x.1), Some(4.0));
        assert_eq!(p("claude-sonnet-4-5-20250929").map(|x| x.1), Some(15.0));
        assert_eq!(p("claude-opus-4-1-20250805").map(|x| x.1), Some(75.0));
        assert_eq!(
            p("models/gemini-2.0-flash-001").map(|x| x.1),
            Some(0.4000000059604645)
        );
        assert_eq!(p("mistral-large-latest").map(|x| x.0), Some(2.0));
        assert_eq!(p("command-r-plus-08-2024").map(|x| x.0), Some(2.5));
        assert_eq!(p("claude-3-5-sonnet@20240620").map(|x| x.0), Some(3.0));
        // Other variants are not guessed.
        assert_eq!(p("gpt-4o-audio-preview"), None);
        assert_eq!(p("o3-pro"), None);
        assert_eq!(p("unknown"), None);
        assert_eq!(context_window("gemini-1.5-pro-002"), Some(2_097_152));
    }

    /// Issue 14 item 4: what a wildcard deployment's request costs, from the upstream model
    /// name it went out with: dated, `-latest`, Vertex `@` and Bedrock `vendor.`/`region.vendor.`
    /// names find their table entry; a configured price wins; unknown names stay unpriced.
    #[test]
    fn price_for_normalises_upstream_names_and_configured_wins() {
        let out = |m: &str| price_for(m, None).map(|p| p.output_per_mtok);
        assert_eq!(out("gpt-4o-2024-08-06"), Some(10.0));
        assert_eq!(out("claude-3-5-haiku-20241022"), Some(4.0));
        assert_eq!(out("claude-3-5-haiku-latest"), Some(4.0));
        assert_eq!(out("claude-3-5-haiku@20241022"), Some(4.0));
        assert_eq!(out("anthropic.claude-3-5-haiku-20241022-v1:0"), Some(4.0));
        assert_eq!(
            out("us.anthropic.claude-sonnet-4-20250514-v1:0"),
            Some(15.0)
        );
        assert_eq!(out("anthropic/claude-opus-4-1-20250805"), Some(75.0));
        assert_eq!(out("gpt-4.1-mini").map(|p| p > 1.5), Some(true));
        assert_eq!(out("gemini-1.5-pro-002"), Some(5.0));
        assert_eq!(out("claude-*"), None);
        assert_eq!(out("my-finetune"), None);
        assert_eq!(out(""), None);
        let own = Price {
            input_per_mtok: 9.0,
            output_per_mtok: 9.0,
            cached_input_per_mtok: 9.0,
            cache_creation_per_mtok: 9.0,
        };
        assert_eq!(
            price_for("claude-3-5-haiku-20241022", Some(&own)),
            Some(own)
        );
        assert_eq!(price_for("my-finetune", Some(&own)), Some(own));
    }

    #[test]
    fn unpriced_parses_and_names_the_field() {
        use serde_json::json;
        assert_eq!(
            parse_unpriced(&json!("refuse"), "unpriced"),
            Ok(Unpriced::Refuse)
        );
        assert_eq!(
            parse_unpriced(&json!("allow"), "x.unpriced"),
            Ok(Unpriced::Allow)
        );
        assert_eq!(
            parse_unpriced(&json!("maybe"), "auth.keys[0].unpriced")
                .unwrap_err()
                .path,
            "auth.keys[0].unpriced"
        );
        assert_eq!(Unpriced::default(), Unpriced::Refuse);
    }

    #[test]
    fn own_price_wins_and_cost_uses_cache_prices() {
        let own = Price {
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
            cached_input_per_mtok: 1.0,
            cache_creation_per_mtok: 1.0,
        };
        assert_eq!(price(Some(&own), "gpt-4o"), Some(own));
        let p = price(None, "claude-3-5-haiku-20241022").unwrap();
        // 1000 input (200 of them cache reads, 100 cache writes) and 500 output tokens:
        // 700×0.80 + 200×0.08 + 100×1.00 + 500×4.00 = 2676 µUSD·1e-3 → 2 676 000 nano-USD.
        let u = Usage {
            prompt_tokens: 1000,
            completion_tokens: 500,
            cached_tokens: 200,
            cache_creation_tokens: 100,
            reasoning_tokens: 0,
        };
        let nano = crate::observe::cost_nanousd(&p, &u);
        assert!((2_675_000..=2_677_000).contains(&nano), "{nano}");
    }
}
