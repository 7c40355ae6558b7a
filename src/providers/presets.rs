//! OpenAI-compatible services, by name: a user writes `"type": "groq"`, a cluster and a key.
//!
//! A preset gives the API host (sent as `:authority`, and the host the Envoy cluster must reach
//! over TLS), the path prefix before `/chat/completions`, the auth style, and the request fields
//! the service is documented to refuse. Each entry names its source: the provider's page where
//! one was read, else the row of `docs/providers.md` §9 (the team's cited reference) it comes
//! from.

/// How the API key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `<header>: <key>` (Azure's `api-key`).
    Header(&'static str),
}

#[derive(Debug, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    /// `None` where every deployment has its own host (self-hosted servers, per-region APIs).
    pub host: Option<&'static str>,
    pub base_path: &'static str,
    pub auth: AuthStyle,
    /// Top-level request fields the service refuses (400) when set to a non-default value.
    pub unsupported: &'static [&'static str],
    /// Request fields the service names differently: (OpenAI name, service's name).
    pub renames: &'static [(&'static str, &'static str)],
    pub source: &'static str,
}

const fn p(
    name: &'static str,
    host: Option<&'static str>,
    base_path: &'static str,
    source: &'static str,
) -> Preset {
    Preset {
        name,
        host,
        base_path,
        auth: AuthStyle::Bearer,
        unsupported: &[],
        renames: &[],
        source,
    }
}

pub static PRESETS: &[Preset] = &[
    Preset {
        unsupported: &["logprobs", "logit_bias", "top_logprobs", "n"],
        ..p("groq", Some("api.groq.com"), "/openai/v1", "https://console.groq.com/docs/openai")
    },
    p("deepseek", Some("api.deepseek.com"), "/v1", "https://platform.deepseek.com/api-docs/guides/kv_cache"),
    Preset {
        renames: &[("seed", "random_seed")],
        ..p("mistral", Some("api.mistral.ai"), "/v1", "https://docs.camel-ai.org/reference/camel.configs.mistral_config.md; docs/providers.md §9 #6 [PK-mistral-ai]")
    },
    p("together", Some("api.together.xyz"), "/v1", "docs/providers.md §9 #7 [PK-together-ai], [HG-together_ai]"),
    p("fireworks", Some("api.fireworks.ai"), "/inference/v1", "https://docs.fireworks.ai/tools-sdks/migrate-to-fireworks"),
    p("openrouter", Some("openrouter.ai"), "/api/v1", "https://openrouter.ai/docs/api-reference/streaming"),
    p("xai", Some("api.x.ai"), "/v1", "https://docs.x.ai/docs/guides/reasoning"),
    Preset {
        unsupported: &["tools", "tool_choice", "logit_bias", "logprobs", "top_logprobs"],
        ..p("perplexity", Some("api.perplexity.ai"), "", "https://docs.perplexity.ai/docs/sonar/openai-compatibility")
    },
    Preset {
        unsupported: &["frequency_penalty", "presence_penalty", "logit_bias", "parallel_tool_calls", "service_tier"],
        ..p("cerebras", Some("api.cerebras.ai"), "/v1", "https://inference-docs.cerebras.ai/resources/openai")
    },
    p("deepinfra", Some("api.deepinfra.com"), "/v1/openai", "docs/providers.md §9 #13 [PK-deepinfra]"),
    p("sambanova", Some("api.sambanova.ai"), "/v1", "docs/providers.md §9 #14 [PK-sambanova]"),
    p("nvidia", Some("integrate.api.nvidia.com"), "/v1", "docs/providers.md §9 #15 (public client configs; official doc unconfirmed)"),
    p("github", Some("models.github.ai"), "/inference", "https://github.blog/changelog/2025-05-15-github-models-api-now-available"),
    // The path holds the account id: set `base_path` to /client/v4/accounts/<id>/ai/v1.
    p("cloudflare", Some("api.cloudflare.com"), "", "https://developers.cloudflare.com/workers-ai/configuration/open-ai-compatibility"),
    p("ollama", None, "/v1", "https://docs.ollama.com/api/openai-compatibility"),
    p("vllm", None, "/v1", "https://docs.vllm.ai/en/stable/features/reasoning_outputs/"),
    p("lmstudio", None, "/v1", "https://lmstudio.ai/docs/api/openai-api"),
    p("dashscope", Some("dashscope-intl.aliyuncs.com"), "/compatible-mode/v1", "https://help.aliyun.com/en/model-studio/deep-thinking; docs/providers.md §9 #21 [PK-dashscope]"),
    p("dashscope-cn", Some("dashscope.aliyuncs.com"), "/compatible-mode/v1", "https://help.aliyun.com/zh/model-studio/glm; docs/providers.md §9 #22 [HG-qwen]"),
    p("moonshot", Some("api.moonshot.ai"), "/v1", "https://docs.litellm.ai/docs/providers/moonshot.md; docs/providers.md §9 #23 [PK-moonshot]"),
    p("moonshot-cn", Some("api.moonshot.cn"), "/v1", "https://docs.litellm.ai/docs/providers/moonshot.md; docs/providers.md §9 #23 [PK-moonshot]"),
    p("zhipu", Some("open.bigmodel.cn"), "/api/paas/v4", "docs/providers.md §9 #24 [PK-zhipu], [HG-zhipuai]"),
    p("zai", Some("api.z.ai"), "/api/paas/v4", "docs/providers.md §9 #24 [PK-zhipu], [HG-zhipuai]"),
    p("minimax", Some("api.minimax.io"), "/v1", "https://platform.minimax.io/docs/api-reference/text-openai-api"),
    p("minimax-cn", Some("api.minimaxi.com"), "/v1", "https://platform.minimax.io/docs/api-reference/text-openai-api; docs/providers.md §9 #25 [HG-minimax]"),
    p("siliconflow", Some("api.siliconflow.cn"), "/v1", "https://docs.siliconflow.cn/docs/api/chat-completions-post"),
    p("volcengine", Some("ark.cn-beijing.volces.com"), "/api/v3", "https://docs.byteplus.com/zh-TW/docs/Byteplus_LAS/Chat_API; docs/providers.md §9 #27 [HG-doubao]"),
    p("hunyuan", Some("api.hunyuan.cloud.tencent.com"), "/v1", "https://cloud.tencent.com/document/product/1729/111007 (via docs/providers.md §9 #28 [HG-hunyuan])"),
    p("nebius", Some("api.tokenfactory.nebius.com"), "/v1", "https://strandsagents.com/docs/community/model-providers/nebius-token-factory/"),
    p("hyperbolic", Some("api.hyperbolic.xyz"), "/v1", "docs/providers.md §9 #30 [PK-hyperbolic]"),
    p("novita", Some("api.novita.ai"), "/openai/v1", "https://www.promptfoo.dev/docs/providers/novita/"),
    p("qianfan", Some("qianfan.baidubce.com"), "/v2", "https://cloud.baidu.com/doc/WENXINWORKSHOP/s/2m3fihw8s"),
    p("stepfun", Some("api.stepfun.com"), "/v1", "docs/providers.md §9 #33 [HG-stepfun]"),
    p("yi", Some("api.lingyiwanwu.com"), "/v1", "docs/providers.md §9 #34 [HG-yi], [PK-lingyi]"),
    p("baichuan", Some("api.baichuan-ai.com"), "/v1", "docs/providers.md §9 #35 [HG-baichuan]"),
    p("gemini-openai", Some("generativelanguage.googleapis.com"), "/v1beta/openai", "docs/providers.md §9 #38 (public client configs; official doc unconfirmed)"),
    // The host holds the region: set `host` to bedrock-mantle.<region>.api.aws.
    p("bedrock-mantle", None, "/v1", "https://docs.aws.amazon.com/es_es/bedrock/latest/userguide/inference-chat-completions-mantle.html"),
];

pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// Whether a field's raw JSON value actually asks for the feature (`null`, `false` and `n: 1`
/// are the defaults every OpenAI-compatible service accepts).
pub fn is_set(field: &str, raw: &str) -> bool {
    match raw {
        "null" | "false" => false,
        "1" if field == "n" => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_unique_well_formed_and_sourced() {
        assert!(PRESETS.len() >= 25);
        for (i, p) in PRESETS.iter().enumerate() {
            assert!(
                PRESETS[..i].iter().all(|q| q.name != p.name),
                "duplicate {}",
                p.name
            );
            assert!(p.base_path.is_empty() || p.base_path.starts_with('/'));
            assert!(!p.base_path.ends_with('/'));
            assert!(
                p.source.starts_with("https://") || p.source.starts_with("docs/providers.md"),
                "{} has no source",
                p.name
            );
            if let Some(h) = p.host {
                assert!(!h.contains('/') && !h.contains(':'), "{h}");
            }
        }
        assert_eq!(preset("groq").unwrap().base_path, "/openai/v1");
        assert!(preset("nope").is_none());
    }

    #[test]
    fn defaults_do_not_count_as_set() {
        assert!(!is_set("n", "1"));
        assert!(is_set("n", "2"));
        assert!(!is_set("logprobs", "false"));
        assert!(is_set("logprobs", "true"));
        assert!(!is_set("tools", "null"));
        assert!(is_set("tools", "[]"));
    }
}
