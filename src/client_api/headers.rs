//! Which of a client's request headers reach a provider. A provider-bound request carries the
//! client's headers only from an allow-list: the HTTP basics, tracing, the SDKs' own telemetry,
//! and what the configuration adds (`client_headers`, at the top level for every provider and
//! per provider). Everything else is removed before the request leaves, so a client cannot pick
//! the provider-side organisation or project (`OpenAI-Organization`, `OpenAI-Project`,
//! `x-goog-user-project`), enable beta features (`anthropic-beta`), or send cookies along with
//! the gateway's credentials. Credentials themselves are the translators' business: they replace
//! or remove the client's.

/// Names (lowercase) every provider gets from the client.
const ALWAYS: &[&str] = &[
    "accept",
    "accept-encoding",
    "content-length",
    "content-type",
    "user-agent",
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-ot-span-context",
    // Replaced or removed by the translators (the gateway's key), or the caller's own key to
    // the provider when the gateway has none.
    "authorization",
    "x-api-key",
    "api-key",
    "anthropic-version",
];

/// Prefixes every provider gets: Envoy's own headers, Zipkin tracing, the OpenAI and Anthropic
/// SDKs' platform telemetry, and LLMux's (clients' copies are removed on arrival).
const ALWAYS_PREFIXES: &[&str] = &[
    "x-envoy-",
    "x-forwarded-",
    "x-b3-",
    "x-stainless-",
    "x-llmux-",
];

/// An allow-list entry: a header name, or a prefix (`x-mock-*`), or `*` (every header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    Name(String),
    Prefix(String),
    All,
}

impl Allowed {
    /// Parses one entry (already lowercased); `None` when it is not a header name or prefix.
    pub fn parse(entry: &str) -> Option<Allowed> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        };
        if entry == "*" {
            return Some(Allowed::All);
        }
        match entry.strip_suffix('*') {
            Some(p) if valid(p) => Some(Allowed::Prefix(p.to_string())),
            None if valid(entry) => Some(Allowed::Name(entry.to_string())),
            _ => None,
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Allowed::Name(n) => n == name,
            Allowed::Prefix(p) => name.starts_with(p.as_str()),
            Allowed::All => true,
        }
    }
}

/// Whether every provider gets this client header (`name` lowercase, as Envoy hands it over).
#[inline]
pub fn always_forwarded(name: &str, extra: &[Allowed]) -> bool {
    name.starts_with(':')
        || ALWAYS.contains(&name)
        || ALWAYS_PREFIXES.iter().any(|p| name.starts_with(p))
        || extra.iter().any(|a| a.matches(name))
}

/// Whether a provider whose own allow-list is `provider` gets this header.
pub fn provider_allows(name: &str, provider: &[Allowed]) -> bool {
    provider.iter().any(|a| a.matches(name))
}

/// The values of a comma-separated header (`anthropic-beta: a,b`) that every list allows, in the
/// client's order, joined with `,`; empty when none is.
pub fn allowed_values(value: &str, lists: &[&[Allowed]]) -> String {
    let mut out = String::new();
    for v in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        let lower = v.to_ascii_lowercase();
        if lists.iter().all(|l| l.iter().any(|a| a.matches(&lower))) {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&lower);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_and_beta_headers_are_not_forwarded_by_default() {
        for h in [
            "openai-organization",
            "openai-project",
            "anthropic-beta",
            "x-goog-user-project",
            "cookie",
            "x-mock-status",
        ] {
            assert!(!always_forwarded(h, &[]), "{h}");
        }
        for h in [
            ":path",
            "content-type",
            "user-agent",
            "x-stainless-os",
            "traceparent",
            "x-forwarded-proto",
        ] {
            assert!(always_forwarded(h, &[]), "{h}");
        }
    }

    #[test]
    fn only_allowed_beta_values_are_kept() {
        let list = [
            Allowed::parse("context-management-2025-06-27").unwrap(),
            Allowed::parse("interleaved-thinking-*").unwrap(),
        ];
        let other = [Allowed::parse("interleaved-thinking-2025-05-14").unwrap()];
        let v = "claude-code-20250219, Interleaved-Thinking-2025-05-14,context-management-2025-06-27,,x";
        assert_eq!(
            allowed_values(v, &[&list]),
            "interleaved-thinking-2025-05-14,context-management-2025-06-27"
        );
        assert_eq!(
            allowed_values(v, &[&list, &other]),
            "interleaved-thinking-2025-05-14"
        );
        assert_eq!(allowed_values("a,b", &[&list]), "");
    }

    #[test]
    fn configured_entries_add_names_and_prefixes() {
        let extra = [
            Allowed::parse("openai-organization").unwrap(),
            Allowed::parse("x-mock-*").unwrap(),
        ];
        assert!(always_forwarded("openai-organization", &extra));
        assert!(always_forwarded("x-mock-status", &extra));
        assert!(!always_forwarded("openai-project", &extra));
        assert!(provider_allows("anything", &[Allowed::All]));
        for bad in ["", "x y", "x-*-y*", "UPPER", "a*b"] {
            assert_eq!(Allowed::parse(bad), None, "{bad}");
        }
    }
}
