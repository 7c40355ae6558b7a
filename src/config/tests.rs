//! Config parsing checks: defaults, the path every error names, prices and export settings.
//! Kept apart from `mod.rs` so the parser reads on its own; plain native tests (no host).

use super::*;

struct FakeEnv(Vec<(&'static str, &'static str)>);
impl Env for FakeEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

fn parse(s: &str) -> Result<Config, ConfigError> {
    Config::parse(
        s.as_bytes(),
        &FakeEnv(vec![("ANTHROPIC_API_KEY", "sk-ant")]),
    )
}

const GOOD: &str = r#"{
    "providers": {
        "openai": {"type": "openai", "cluster": "mock", "api_key": "sk-1"},
        "anthropic": {"type": "anthropic", "cluster": "anthropic", "host": "api.anthropic.com",
                      "api_key_env": "ANTHROPIC_API_KEY", "headers": {"Anthropic-Beta": "x"}}
    },
    "models": [
        {"name": "gpt-4o-mini", "deployments": [{"provider": "openai"}]},
        {"name": "claude-3-5-haiku", "deployments": [{"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}]}
    ]
}"#;

#[test]
fn parses_good_config_with_defaults() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.providers.len(), 2);
    let m = c.model("claude-3-5-haiku").unwrap();
    let p = c.provider(&m.deployments[0]);
    assert_eq!(p.kind, ProviderKind::Anthropic);
    assert_eq!(p.api_key.as_deref(), Some("sk-ant"));
    assert_eq!(
        p.headers,
        vec![("anthropic-beta".to_string(), "x".to_string())]
    );
    assert_eq!(p.base_path, "/v1");
    assert_eq!(p.default_max_tokens, DEFAULT_ANTHROPIC_MAX_TOKENS);
    assert_eq!(m.deployments[0].model, "claude-3-5-haiku-20241022");
    // deployment model defaults to the public name
    assert_eq!(
        c.model("gpt-4o-mini").unwrap().deployments[0].model,
        "gpt-4o-mini"
    );
    assert_eq!(c.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
    assert_eq!(c.cluster_header, "x-llmux-cluster");
    assert_eq!(c.unknown_paths, UnknownPaths::Reject);
    assert!(c.stream_usage);
    assert_eq!(
        c.model_names().collect::<Vec<_>>(),
        vec!["gpt-4o-mini", "claude-3-5-haiku"]
    );
}

fn path_of(s: &str) -> String {
    parse(s).unwrap_err().path
}

#[test]
fn errors_name_the_bad_field() {
    assert_eq!(path_of("[]"), "");
    assert_eq!(path_of("{"), "");
    assert_eq!(path_of(r#"{"models": []}"#), "providers");
    assert_eq!(
        path_of(r#"{"providers": {"p": {"type": "nope", "cluster": "c"}}, "models": []}"#),
        "providers.p.type"
    );
    assert_eq!(
        path_of(r#"{"providers": {"p": {"type": "openai"}}, "models": []}"#),
        "providers.p.cluster"
    );
    assert_eq!(
        path_of(
            r#"{"providers": {"p": {"type": "openai", "cluster": "c", "typo": 1}}, "models": []}"#
        ),
        "providers.p.typo"
    );
    assert_eq!(
        path_of(
            r#"{"providers": {"p": {"type": "openai", "cluster": "c", "api_key_env": "MISSING"}}, "models": []}"#
        ),
        "providers.p.api_key_env"
    );
    assert_eq!(
        path_of(
            r#"{"providers": {"p": {"type": "openai", "cluster": "c"}}, "models": [{"name": "m", "deployments": [{"provider": "q"}]}]}"#
        ),
        "models[0].deployments[0].provider"
    );
    assert_eq!(
        path_of(
            r#"{"providers": {"p": {"type": "openai", "cluster": "c"}}, "models": [{"name": "m", "deployments": [{"provider": "p"}]}, {"name": "m", "deployments": [{"provider": "p"}]}]}"#
        ),
        "models[1].name"
    );
    assert_eq!(
        path_of(
            r#"{"providers": {"p": {"type": "openai", "cluster": "c"}}, "models": [{"name": "m", "deployments": [{"provider": "p"}]}], "max_request_bytes": -1}"#
        ),
        "max_request_bytes"
    );
    assert_eq!(
        path_of(
            r#"{"providers": {"p": {"type": "openai", "cluster": "c"}}, "models": [{"name": "m", "deployments": [{"provider": "p"}]}], "unknown_paths": "maybe"}"#
        ),
        "unknown_paths"
    );
}

#[test]
fn deployment_names_prices_and_export() {
    let c = parse(GOOD).unwrap();
    let d = &c.model("claude-3-5-haiku").unwrap().deployments[0];
    assert_eq!(d.name, "anthropic/claude-3-5-haiku-20241022");
    assert_eq!(d.price, None);
    assert!(!c.log_bodies);
    assert!(c.export.is_none());

    let cfg = r#"{"providers": {"p": {"type": "openai", "cluster": "c"}},
        "models": [{"name": "m", "deployments": [{"provider": "p", "name": "east",
           "price": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}]}],
        "log_bodies": true,
        "export": {"format": "otlp", "cluster": "otel", "headers": {"X-Key": "v"}, "batch_size": 5}}"#;
    let c = parse(cfg).unwrap();
    let d = &c.models[0].deployments[0];
    assert_eq!(d.name, "east");
    let p = d.price.unwrap();
    assert_eq!(p.cached_input_per_mtok, 0.15);
    assert_eq!(p.cache_creation_per_mtok, 0.15);
    assert_eq!(p.output_per_mtok, 0.6);
    assert!(c.log_bodies);
    let e = c.export.unwrap();
    assert_eq!(e.format, ExportFormat::Otlp);
    assert_eq!(e.path, "/v1/logs");
    assert_eq!(e.authority, "otel");
    assert_eq!(e.headers, vec![("x-key".to_string(), "v".to_string())]);
    assert_eq!(
        (e.batch_size, e.flush_interval_ms, e.max_queue),
        (5, 1000, 10_000)
    );

    let base = r#"{"providers": {"p": {"type": "openai", "cluster": "c"}}, "models": [{"name": "m", "deployments": [{"provider": "p"XX}]}]YY}"#;
    let bad = |dep: &str, top: &str| path_of(&base.replace("XX", dep).replace("YY", top));
    assert_eq!(
        bad(r#", "price": {"input_per_mtok": 1}"#, ""),
        "models[0].deployments[0].price.output_per_mtok"
    );
    assert_eq!(
        bad(
            r#", "price": {"input_per_mtok": -1, "output_per_mtok": 1}"#,
            ""
        ),
        "models[0].deployments[0].price.input_per_mtok"
    );
    assert_eq!(
        bad(
            r#", "price": {"input_per_mtok": 1, "output_per_mtok": 1, "x": 1}"#,
            ""
        ),
        "models[0].deployments[0].price.x"
    );
    assert_eq!(bad("", r#", "export": {"cluster": "c"}"#), "export.format");
    assert_eq!(
        bad("", r#", "export": {"format": "kafka", "cluster": "c"}"#),
        "export.format"
    );
    assert_eq!(
        bad("", r#", "export": {"format": "webhook"}"#),
        "export.cluster"
    );
    assert_eq!(
        bad(
            "",
            r#", "export": {"format": "webhook", "cluster": "c", "batch_size": 0}"#
        ),
        "export.batch_size"
    );
    assert_eq!(bad("", r#", "log_bodies": 1"#), "log_bodies");
}

#[test]
fn display_names_path() {
    let e =
        parse(r#"{"providers": {"p": {"type": 3, "cluster": "c"}}, "models": []}"#).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid LLMux configuration at `providers.p.type`: must be a string"
    );
}

/// `rate_limit.models` beside a group with an alias and a wildcard group.
fn with_model_limits(models: &str) -> Result<Config, ConfigError> {
    parse(&format!(
        r#"{{"providers": {{"openai": {{"type": "openai", "cluster": "c"}},
                          "anthropic": {{"type": "anthropic", "cluster": "a"}}}},
            "models": [
                {{"name": "gpt", "aliases": ["g", "gpt-latest"], "deployments": [{{"provider": "openai", "model": "gpt-4o"}}]}},
                {{"name": "anthropic/*", "deployments": [{{"provider": "anthropic", "model": "claude-*"}}]}},
                {{"name": "free", "deployments": [{{"provider": "openai"}}]}}
            ],
            "rate_limit": {{"models": {models}}}}}"#
    ))
}

/// Issue 14 item 3: a per-model limit binds the group whatever name reached it, and is keyed
/// by the group's name; a wildcard group's limit counts; a limit naming nothing is an error.
#[test]
fn model_limits_bind_the_group_whatever_name_reached_it() {
    let c = with_model_limits(r#"{"g": {"rpm": 5}, "anthropic/*": {"tpm": 7}}"#).unwrap();
    let limit = |requested: &str| {
        c.resolve_model(requested)
            .and_then(|(g, _)| c.model_limit(g))
            .map(|(id, l)| (id.to_string(), l.rpm, l.tpm))
    };
    for name in ["gpt", "g", "gpt-latest"] {
        assert_eq!(limit(name), Some(("gpt".into(), Some(5), None)), "{name}");
    }
    for name in ["anthropic/claude-3-5-haiku", "anthropic/x"] {
        assert_eq!(
            limit(name),
            Some(("anthropic/*".into(), None, Some(7))),
            "{name}"
        );
    }
    assert_eq!(limit("free"), None);
    assert_eq!(c.model_limit(99), None);

    for (models, path) in [
        (r#"{"gtp": {"rpm": 1}}"#, "rate_limit.models.gtp"),
        // A name a wildcard group matches is not a group: the limit would bind all of it.
        (
            r#"{"anthropic/claude-3": {"rpm": 1}}"#,
            "rate_limit.models.anthropic/claude-3",
        ),
        // The same group twice (by its name and an alias): which one counts?
        (
            r#"{"gpt": {"rpm": 1}, "g": {"rpm": 2}}"#,
            "rate_limit.models.gpt",
        ),
    ] {
        let e = with_model_limits(models).unwrap_err();
        assert!(
            e.path == path || e.path == "rate_limit.models.g",
            "{models}: {e}"
        );
        if path != "rate_limit.models.gpt" {
            assert_eq!(e.path, path, "{models}: {e}");
        }
    }
}

/// Wildcard groups (deployment model `*`, and `claude-*`), a priced fixed group falling back to an
/// unpriced one, and a budgeted key beside an unbudgeted one.
fn with_wildcards(extra: &str) -> Result<Config, ConfigError> {
    parse(&format!(
        r#"{{"providers": {{"openai": {{"type": "openai", "cluster": "c"}},
                          "anthropic": {{"type": "anthropic", "cluster": "a"}}}},
            "models": [
                {{"name": "anthropic/*", "deployments": [{{"provider": "anthropic"}}]}},
                {{"name": "claude/*", "deployments": [{{"provider": "anthropic", "model": "claude-*"}}]}},
                {{"name": "gpt", "fallbacks": ["tuned"], "deployments": [{{"provider": "openai", "model": "gpt-4o"}}]}},
                {{"name": "tuned", "deployments": [{{"provider": "openai", "model": "ft:my-model"}}]}},
                {{"name": "cheap", "deployments": [{{"provider": "openai", "model": "gpt-4o-mini"}}]}}
            ]{extra}}}"#
    ))
}

/// Issue 14 item 4: a wildcard deployment's price is resolved per request from the upstream
/// model; a budgeted request whose cost cannot be known is refused (403 `unpriced_model`)
/// unless `unpriced: allow` (top level or on the key).
#[test]
fn wildcard_deployments_are_priced_per_request_and_unpriced_budgets_refused() {
    let c = with_wildcards("").unwrap();
    assert_eq!(c.unpriced, crate::pricing::Unpriced::Refuse);
    let (g, matched) = c
        .resolve_model("anthropic/claude-3-5-haiku-20241022")
        .unwrap();
    let d = &c.models[g].deployments[0];
    assert_eq!(d.cost_price, None, "not known at config time");
    assert_eq!(d.upstream_model(matched), "claude-3-5-haiku-20241022");
    assert_eq!(
        d.request_price(&d.upstream_model(matched))
            .map(|p| p.output_per_mtok),
        Some(4.0)
    );
    assert_eq!(d.request_price(&d.upstream_model(Some("nonesuch"))), None);
    let (g, matched) = c.resolve_model("claude/3-5-haiku-20241022").unwrap();
    let d = &c.models[g].deployments[0];
    assert_eq!(d.upstream_model(matched), "claude-3-5-haiku-20241022");
    assert!(d.request_price(&d.upstream_model(matched)).is_some());
    assert!(c.unpriced_refusal(None, "claude/3-5-haiku", true).is_none());
    let e = c.unpriced_refusal(None, "claude/nonesuch", true).unwrap();
    assert!(e.message.contains("`claude-nonesuch`"), "{}", e.message);

    // Unbudgeted: never refused.
    assert!(c
        .unpriced_refusal(None, "anthropic/nonesuch", false)
        .is_none());
    // Budgeted: refused when the cost cannot be known, by the deployment or a fallback.
    let e = c
        .unpriced_refusal(None, "anthropic/nonesuch", true)
        .unwrap();
    assert_eq!(
        (e.status, e.kind, e.code.as_deref()),
        (403, "permission_error", Some("unpriced_model"))
    );
    assert!(e.message.contains("`nonesuch`"), "{}", e.message);
    assert!(c
        .unpriced_refusal(None, "anthropic/claude-3-5-haiku-20241022", true)
        .is_none());
    assert!(c.unpriced_refusal(None, "cheap", true).is_none());
    let e = c.unpriced_refusal(None, "gpt", true).unwrap();
    assert!(e.message.contains("ft:my-model"), "{}", e.message);
    assert!(c.unpriced_refusal(None, "no-such-group", true).is_none());

    // `unpriced: allow` at the top level, and per key over the top level.
    let allow = with_wildcards(r#", "unpriced": "allow""#).unwrap();
    assert!(allow.unpriced_refusal(None, "gpt", true).is_none());
    let keys = with_wildcards(&format!(
        r#", "auth": {{"keys": [
            {{"key_sha256": "{}", "alias": "a", "unpriced": "allow", "budget": {{"amount_usd": 1}}}},
            {{"key_sha256": "{}", "alias": "r", "budget": {{"amount_usd": 1}}}}]}}"#,
        "a".repeat(64),
        "b".repeat(64)
    ))
    .unwrap();
    assert!(keys.unpriced_refusal(Some(0), "gpt", true).is_none());
    assert!(keys.unpriced_refusal(Some(1), "gpt", true).is_some());
    assert_eq!(
        with_wildcards(r#", "unpriced": "sometimes""#)
            .unwrap_err()
            .path,
        "unpriced"
    );
}
