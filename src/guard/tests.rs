//! Tests of the guardrails core: each detector on tables of true and false positives, the
//! config, the actions and the vault, the JSON walks, and the stream against the whole-text scan.

use super::detect::{high_entropy, iban_length, luhn, mod97};
use super::*;

fn policy_json(rules: &str, extra: &str) -> String {
    format!(r#"{{"guardrails": [{{"name": "g", "rules": [{rules}]{extra}}}]}}"#)
}

fn policy(rules: &str) -> Policy {
    match Policy::parse(policy_json(rules, "").as_bytes()) {
        Ok(p) => p,
        Err(e) => panic!("policy: {e}"),
    }
}

fn only(det: &str) -> Policy {
    policy(&format!(r#"{{"detector": "{det}", "action": "mask"}}"#))
}

/// The texts the request guard of `p` finds in `text`.
fn found<'t>(p: &Policy, text: &'t str) -> Vec<&'t str> {
    let mut spans = Vec::new();
    p.request().find(text, &mut spans);
    spans.iter().map(|s| &text[s.start..s.end]).collect()
}

/// Each true positive is found exactly (embedded in a sentence); no false positive is found.
fn table(det: &str, hits: &[(&str, &str)], misses: &[&str]) {
    let p = only(det);
    for (input, want) in hits {
        for text in [
            input.to_string(),
            format!("see {input}, thanks"),
            format!("({input})"),
        ] {
            assert_eq!(found(&p, &text), vec![*want], "{det}: {text:?}");
        }
    }
    for m in misses {
        for text in [m.to_string(), format!("see {m} thanks")] {
            assert_eq!(
                found(&p, &text),
                Vec::<&str>::new(),
                "{det} false positive: {text:?}"
            );
        }
    }
}

fn same(list: &[&'static str]) -> Vec<(&'static str, &'static str)> {
    list.iter().map(|s| (*s, *s)).collect()
}

#[test]
fn email_table() {
    table(
        "email",
        &same(&[
            "john.doe@example.com",
            "a@b.co",
            "first+tag@sub.domain.org",
            "x_y%z@mail-server.example.net",
            "UPPER@EXAMPLE.COM",
            "user123@host.io",
            "a.b.c@d.e.fr",
            "very-long.name_with.stuff@company.co.uk",
        ]),
        &[
            "user@localhost",
            "@example.com",
            "john@",
            "a..b@example.com",
            "john.@example.com",
            "user@example.c",
            "user@-example.com",
            "user@example.123",
            "name@host_name.com",
            "x@1.2.3.4",
        ],
    );
    // Mid-sentence punctuation: the trailing dot is not part of the domain.
    assert_eq!(
        found(&only("email"), "mail me at a@b.com."),
        vec!["a@b.com"]
    );
    // Local part over 64 bytes.
    let long = format!("{}@example.com", "a".repeat(65));
    assert!(found(&only("email"), &long).is_empty());
}

#[test]
fn phone_table() {
    table(
        "phone",
        &same(&[
            "+1 415 555 0100",
            "+14155550100",
            "+44 20 7946 0958",
            "+44 (0)20 7946 0958",
            "+1 (415) 555-0100",
            "+33 1 23 45 67 89",
            "+49-30-1234567",
            "(415) 555-0100",
            "415-555-0100",
            "415.555.0100",
            "020 7946 0958",
            "01 23 45 67 89",
        ]),
        &[
            "2024-01-15",
            "2024-01-15 10:30",
            "12345678901",
            "version 1.2.3",
            "10.0.19041.1",
            "192.168.1.1",
            "555-0100",
            "+0 123 456 789",
            "+12 345",
            "1234567890123",
            "4111 1111 1111 1111",
            "12:30:45",
            "ISBN 978-3-16-148410-0",
            "415.555.01000",
            "415-555-0100-12",
            "1.5.2024",
        ],
    );
}

#[test]
fn card_table() {
    table(
        "card",
        &same(&[
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4111111111111111",
            "5555 5555 5555 4444",
            "378282246310005",
            "3782 822463 10005",
            "6011 1111 1111 1117",
            "4012888888881881",
            "2223000048400011",
            "3530111333300000",
        ]),
        &[
            "4111 1111 1111 1112",
            "1234567812345670",
            "1700000000000",
            "4111-1111-1111-1111-1111",
            "41111111111111111111",
            "0000 0000 0000 0000",
            "v4111111111111111",
            "4111111111111111x",
            "4111.1111.1111.1111",
            "4111 11 1111 1111",
        ],
    );
    // A trailing space-separated number is not part of the card.
    assert_eq!(
        found(&only("card"), "4111 1111 1111 1111 2024"),
        vec!["4111 1111 1111 1111"]
    );
    assert!(luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
    assert!(!luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 4]));
}

#[test]
fn iban_table() {
    table(
        "iban",
        &same(&[
            "DE89 3704 0044 0532 0130 00",
            "DE89370400440532013000",
            "GB82 WEST 1234 5698 7654 32",
            "GB82WEST12345698765432",
            "FR14 2004 1010 0505 0001 3M02 606",
            "NL91ABNA0417164300",
            "CH93 0076 2011 6238 5295 7",
            "BE68539007547034",
            "NO9386011117947",
            "de89370400440532013000",
        ]),
        &[
            "DE89 3704 0044 0532 0130 01",
            "DE8937040044053201300",
            "DE893704004405320130001",
            "XX89370400440532013000",
            "GB82 WEST 1234 5698 7654",
            "DE89-3704-0044-0532-0130-00",
            "US12345678901234567890",
            "DE89 37040044 0532 0130 00",
            "ADE89370400440532013000",
        ],
    );
    assert_eq!(iban_length(*b"DE"), Some(22));
    assert_eq!(iban_length(*b"NO"), Some(15));
    assert_eq!(iban_length(*b"ZZ"), None);
    assert!(mod97(b"GB82WEST12345698765432"));
    assert!(!mod97(b"GB83WEST12345698765432"));
}

#[test]
fn ssn_table() {
    table(
        "ssn",
        &[
            ("123-45-6789", "123-45-6789"),
            ("001-01-0001", "001-01-0001"),
            ("899-99-9999", "899-99-9999"),
            ("078-05-1120", "078-05-1120"),
            ("665-12-3456", "665-12-3456"),
            ("219-09-9999", "219-09-9999"),
            ("SSN:123-45-6789", "123-45-6789"),
            ("ssn 123-45-6789.", "123-45-6789"),
        ],
        &[
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
            "123456789",
            "123-45-67890",
            "1123-45-6789",
            "123 45 6789",
            "A123-45-6789",
        ],
    );
}

#[test]
fn ip_table() {
    table(
        "ip",
        &same(&[
            "192.168.1.1",
            "10.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "8.8.8.8",
            "172.16.254.3",
            "2001:db8::1",
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            "fe80::1",
            "2001:db8:85a3::8a2e:370:7334",
        ]),
        &[
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "version 10.0.19041",
            "12:30:45",
            "std::vector",
            "a::b",
            "00:1A:2B:3C:4D:5E",
            "::1",
            "1.2.3.4a",
            "1:2:3:4:5:6:7:8:9",
        ],
    );
}

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

#[test]
fn secret_table() {
    table(
        "secret",
        &same(&[
            "sk-proj-OL8dKLzdocJ2isAjIhKtJ0RlgLKOmxgJTeKdNnFRIBXuDL7D",
            "sk-OL8dKLzdocJ2isAjIhKtJ0RlgLKOmxgJTeKdNnFRIBXuDL7D",
            "sk-ant-api03-xtpYlSXpfKtHF4vUCsMehGAkWvj7FAc9QeWJ-AA",
            "AKIAIOSFODNN7EXAMPLE",
            "ASIAY34FZKBOKMUTVV7A",
            "ghp_xtpYlSXpfKtHF4vUCsMehGAkWvj7FAc9QeWJ",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
            "xoxb-123456789012-abcdefghij",
            "AIza8rESQedUStPKR0CsTy4Qwb8DwkNhFdnXsiV",
            "sk_live_pzz63FfkCzJr4i0B3JrTAwR4",
            "rk_live_pzz63FfkCzJr4i0B3JrTAwR4",
            "-----BEGIN RSA PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            JWT,
            "u8jzPde0IgxLd6GncfBAepfJBd0Kh8oO",
            "YYZYn9ZhyiA4uoRgnatmUdjAWtGSU8po+799NksnRH9ucAUsdMlHUvTCQCyEZDz/",
            "y9ojfljoQoaF1LlqsajAIxNKu8iS2G8NPRVdD53X==",
        ]),
        &[
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4",
            "550e8400-e29b-41d4-a716-446655440000",
            "ThisIsAVeryLongCamelCaseIdentifierName2",
            "get_user_profile_by_id_v2_Handler_Factory",
            "/Users/JohnSmith/Documents/Project2024/src",
            "AWS_SECRET_ACCESS_KEY_ID_FOR_PROD_ENV_2",
            "sk-this-is-a-long-slug-without-digits",
            "AKIAIOSFODNN7EXAMPL",
            "ghp_short",
            "-----BEGIN PUBLIC KEY-----",
            "-----BEGIN CERTIFICATE-----",
            "u8jzPde0IgxLd6GncfBAepfJBd0Kh8o",
            "https://example.com/path/to/SomeResource2024/index",
        ],
    );
    // A long base64 blob (an inlined file) is data, not a key.
    let blob: String =
        "YYZYn9ZhyiA4uoRgnatmUdjAWtGSU8po+799NksnRH9ucAUsdMlHUvTCQCyEZDz/".repeat(10);
    assert!(found(&only("secret"), &blob).is_empty());
    assert!(high_entropy(b"KY40uvSwMFLZDe1fKY40uvSwMFLZDe1fQ"));
    assert!(!high_entropy(b"aaaaBBBB1111ccccDDDD2222eeeeFFFF"));
}

#[test]
fn regex_and_phrase_rules() {
    let p = policy(
        r#"{"detector": "regex", "name": "employee_id", "pattern": "EMP-[0-9]{6}", "action": "mask"},
           {"detector": "phrase", "name": "project_x", "phrases": ["project neptune", "Blue  Whale"], "action": "block"}"#,
    );
    assert_eq!(found(&p, "id EMP-123456 ok"), vec!["EMP-123456"]);
    assert!(found(&p, "id EMP-12345 ok").is_empty());
    assert_eq!(
        found(&p, "about PROJECT   Neptune."),
        vec!["PROJECT   Neptune"]
    );
    assert_eq!(found(&p, "the blue\nwhale"), vec!["blue\nwhale"]);
    // Word boundaries.
    assert!(found(&p, "subproject neptunes").is_empty());
    assert!(found(&p, "project_neptune").is_empty());
    // A single custom pattern (no RegexSet) works too.
    let one = policy(
        r#"{"detector": "regex", "name": "t", "pattern": "(?i)token-[a-z]+", "action": "mask"}"#,
    );
    assert_eq!(found(&one, "a TOKEN-abc b"), vec!["TOKEN-abc"]);
    // A byte-oriented match inside a multi-byte character is widened to the whole character.
    let any = policy(r#"{"detector": "regex", "name": "t", "pattern": "x.", "action": "mask"}"#);
    assert_eq!(found(&any, "axé"), vec!["xé"]);
    // Non-ASCII literals in phrases.
    let fr = policy(
        r#"{"detector": "phrase", "name": "f", "phrases": ["crème brûlée"], "action": "mask"}"#,
    );
    assert_eq!(found(&fr, "une Crème brûlée !"), vec!["Crème brûlée"]);
}

fn parse_err(json: &str) -> String {
    match Policy::parse(json.as_bytes()) {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => e,
    }
}

#[test]
fn config_errors_name_the_field() {
    let e = parse_err(&policy_json(
        r#"{"detector": "mail", "action": "mask"}"#,
        "",
    ));
    assert!(
        e.starts_with("guardrails[0].rules[0].detector: unknown detector \"mail\""),
        "{e}"
    );
    let e = parse_err(&policy_json(
        r#"{"detector": "email", "action": "drop"}"#,
        "",
    ));
    assert!(
        e.starts_with("guardrails[0].rules[0].action: unknown action"),
        "{e}"
    );
    let e = parse_err(&policy_json(
        r#"{"detector": "email", "action": "mask"}, {"detector": "regex", "name": "bad_one", "pattern": "a(b", "action": "mask"}"#,
        "",
    ));
    assert!(e.contains("\"bad_one\"") && e.contains("pattern"), "{e}");
    let e = parse_err(&policy_json(
        r#"{"detector": "regex", "name": "r", "pattern": "a*", "action": "mask"}"#,
        "",
    ));
    assert!(e.contains("empty string"), "{e}");
    let e = parse_err(&policy_json(
        r#"{"detector": "regex", "pattern": "a", "action": "mask"}"#,
        "",
    ));
    assert!(e.contains("rules[0].name: required"), "{e}");
    let e = parse_err(&policy_json(
        r#"{"detector": "email", "action": "mask", "patern": "x"}"#,
        "",
    ));
    assert!(e.contains("rules[0].patern: unknown field"), "{e}");
    let e = parse_err(&policy_json(
        r#"{"detector": "email", "action": "mask"}"#,
        r#", "on": ["answer"]"#,
    ));
    assert!(e.contains("guardrails[0].on[0]"), "{e}");
    let e = parse_err(&policy_json(
        r#"{"detector": "email", "action": "mask"}, {"detector": "email", "action": "block"}"#,
        "",
    ));
    assert!(e.contains("duplicate rule name"), "{e}");
    let e = parse_err(&policy_json(
        r#"{"detector": "phrase", "name": "p", "phrases": [" "], "action": "mask"}"#,
        "",
    ));
    assert!(e.contains("phrases[0]"), "{e}");
    let big = format!("a{{{}}}", 5000);
    let e = parse_err(&policy_json(
        &format!(
            r#"{{"detector": "regex", "name": "huge", "pattern": "(?:{big}){{{}}}", "action": "mask"}}"#,
            100
        ),
        "",
    ));
    assert!(e.contains("\"huge\""), "{e}");
    let e = parse_err(r#"{"guardrails": [], "stream_window": 8}"#);
    assert!(e.starts_with("stream_window"), "{e}");
    let e = parse_err(r#"{"guardrails": [{"name": "g", "rules": []}]}"#);
    assert!(e.starts_with("guardrails[0].rules"), "{e}");
    let e = parse_err(
        r#"{"guardrails": [{"name": "g g", "rules": [{"detector": "ip", "action": "mask"}]}]}"#,
    );
    assert!(e.starts_with("guardrails[0].name"), "{e}");
    assert!(Policy::parse(b"not json").is_err());
    assert!(Policy::parse(br#"{"guardrails": []}"#).is_ok_and(|p| p.is_empty()));
}

#[test]
fn example_config_parses_with_directions() {
    let json = r#"{"guardrails": [
      {"name": "pii", "rules": [
         {"detector": "email", "action": "mask"},
         {"detector": "card", "action": "block"},
         {"detector": "secret", "action": "block"},
         {"detector": "regex", "name": "employee_id", "pattern": "EMP-[0-9]{6}", "action": "mask"},
         {"detector": "phrase", "name": "project_x", "phrases": ["project neptune"], "action": "block"}],
       "on": ["request", "response"],
       "restore": true},
      {"name": "out", "rules": [{"detector": "ip", "action": "monitor"}], "on": ["response"]}]}"#;
    let p = Policy::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.request().rules().len(), 5);
    assert_eq!(p.response().rules().len(), 6);
    assert_eq!(p.request().window(), DEFAULT_STREAM_WINDOW);
    let r = &p.request().rules()[3];
    assert_eq!(
        (r.name.as_str(), r.detector, r.action, r.restore),
        ("employee_id", Detector::Regex, Action::Mask, true)
    );
    assert_eq!(Detector::from_name("iban"), Some(Detector::Iban));
    assert_eq!(Detector::Secret.name(), "secret");
}

#[test]
fn actions_block_mask_monitor() {
    let p = policy(
        r#"{"detector": "email", "action": "mask"}, {"detector": "card", "action": "block"},
           {"detector": "ip", "action": "monitor"}"#,
    );
    let g = p.request();
    let mut v = Vault::new();
    let mut out = String::new();
    // Mask: placeholders numbered per type, same value same placeholder.
    let s = g.scan_text("a@x.com b@x.com a@x.com from 10.0.0.1", &mut v, &mut out);
    assert!(s.masked && s.blocked.is_none());
    assert_eq!(out, "<EMAIL_1> <EMAIL_2> <EMAIL_1> from 10.0.0.1");
    let email = s.hits.iter().find(|h| h.rule == "email").map(|h| h.count);
    let ip = s
        .hits
        .iter()
        .find(|h| h.rule == "ip")
        .map(|h| (h.count, h.action));
    assert_eq!((email, ip), (Some(3), Some((1, Action::Monitor))));
    // Block: names the guardrail and rule, never the text; nothing is appended.
    out.clear();
    let s = g.scan_text("pay 4111 1111 1111 1111 to a@x.com", &mut v, &mut out);
    let b = s.blocked.clone().unwrap_or_else(|| panic!("not blocked"));
    assert_eq!(
        (b.guardrail.as_str(), b.rule.as_str(), b.detector),
        ("g", "card", Detector::Card)
    );
    assert!(!format!("{s:?}").contains("4111"));
    assert!(out.is_empty());
    // Clean / monitor-only text: nothing appended, not masked.
    let s = g.scan_text("nothing here but 10.0.0.2", &mut v, &mut out);
    assert!(!s.masked && out.is_empty() && s.hits.len() == 1);
    let s = g.scan_text("nothing here", &mut v, &mut out);
    assert!(s.is_clean() && out.is_empty());
}

#[test]
fn strongest_action_wins_on_same_bytes() {
    let json = r#"{"guardrails": [
        {"name": "a", "rules": [{"detector": "email", "action": "monitor"}]},
        {"name": "b", "rules": [{"detector": "email", "action": "block"}]}]}"#;
    let p = Policy::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let s = p
        .request()
        .scan_text("x a@b.com", &mut Vault::new(), &mut String::new());
    assert_eq!(s.blocked.map(|h| h.guardrail), Some("b".to_string()));
    assert_eq!(s.hits.len(), 2);
}

#[test]
fn vault_numbering_and_restore() {
    let p = Policy::parse(
        policy_json(
            r#"{"detector": "email", "action": "mask"}, {"detector": "phone", "action": "mask"},
           {"detector": "regex", "name": "emp-id", "pattern": "EMP-[0-9]{6}", "action": "mask"}"#,
            r#", "restore": true"#,
        )
        .as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut v = Vault::new();
    let mut out = String::new();
    p.request().scan_text(
        "a@x.com, +1 415 555 0100, b@x.com, EMP-000001, a@x.com",
        &mut v,
        &mut out,
    );
    assert_eq!(
        out,
        "<EMAIL_1>, <PHONE_1>, <EMAIL_2>, <EMP_ID_1>, <EMAIL_1>"
    );
    assert_eq!(v.len(), 4);
    // Numbering goes on across the texts of one request.
    out.clear();
    p.request()
        .scan_text("c@x.com and b@x.com", &mut v, &mut out);
    assert_eq!(out, "<EMAIL_3> and <EMAIL_2>");
    // Restore what the model echoes; unknown and malformed placeholders stay.
    let echo = "Hi <EMAIL_2>, I'll call <PHONE_1> about <EMP_ID_1>; <EMAIL_9> <email_1> <EMAIL_1";
    assert_eq!(
        v.restore(echo),
        "Hi b@x.com, I'll call +1 415 555 0100 about EMP-000001; <EMAIL_9> <email_1> <EMAIL_1"
    );
    assert_eq!(v.original("<EMAIL_3>"), Some("c@x.com"));
    // Without restore: masked, remembered for numbering, never restored.
    let p2 = only("email");
    let mut v2 = Vault::new();
    let mut out2 = String::new();
    p2.request().scan_text("a@x.com", &mut v2, &mut out2);
    assert_eq!(out2, "<EMAIL_1>");
    assert!(!v2.has_restorable());
    assert_eq!(v2.restore("<EMAIL_1>"), "<EMAIL_1>");
}

#[test]
fn vault_is_capped() {
    let mut v = Vault::new();
    let mut out = String::new();
    for i in 0..vault::MAX_ENTRIES + 10 {
        out.clear();
        v.mask_into("EMAIL", &format!("u{i}@x.com"), true, &mut out);
    }
    assert_eq!(v.len(), vault::MAX_ENTRIES);
    // Past the cap: still masked (new numbers), not restorable.
    assert_eq!(out, format!("<EMAIL_{}>", vault::MAX_ENTRIES + 10));
    assert_eq!(v.restore(&out), out);
}

#[test]
fn answer_side_keeps_values_the_vault_restores() {
    let p = Policy::parse(
        policy_json(
            r#"{"detector": "email", "action": "mask"}"#,
            r#", "restore": true"#,
        )
        .as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut v = Vault::new();
    let mut out = String::new();
    p.request().scan_text("me: a@x.com", &mut v, &mut out);
    // The model writes the user's own address (restored anyway) and a new one (masked).
    out.clear();
    let s = p
        .response()
        .scan_text("a@x.com and b@y.com", &mut v, &mut out);
    assert!(s.masked);
    assert_eq!(out, "a@x.com and <EMAIL_2>");
    assert_eq!(v.restore("<EMAIL_1> <EMAIL_2>"), "a@x.com <EMAIL_2>");
}

// ---------------------------------------------------------------------------------------------
// JSON walks

fn pii() -> Policy {
    Policy::parse(
        policy_json(
            r#"{"detector": "email", "action": "mask"}, {"detector": "card", "action": "block"},
               {"detector": "secret", "action": "mask"}"#,
            r#", "restore": true"#,
        )
        .as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn req(api: ReqApi, body: &str, v: &mut Vault) -> Outcome {
    scan_request(&pii(), api, body.as_bytes(), v).unwrap_or_else(|e| panic!("{e}"))
}

fn json(b: &Option<Vec<u8>>) -> serde_json::Value {
    match b {
        Some(b) => serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}")),
        None => panic!("no rewrite"),
    }
}

#[test]
fn chat_request_walk() {
    let mut v = Vault::new();
    let body = r#"{"model": "a@b.com", "messages": [
        {"role": "system", "content": "admin is root@corp.com"},
        {"role": "developer", "content": [{"type": "text", "text": "cc x@corp.com"}, {"type": "image_url", "image_url": {"url": "http://q@corp.com/"}}]},
        {"role": "user", "content": "mail \"me\" at u@corp.com\n"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{\"to\":\"u@corp.com\"}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "sent to z@corp.com"}]}"#;
    let o = req(ReqApi::Chat, body, &mut v);
    assert!(o.scan.masked && o.scan.blocked.is_none());
    let j = json(&o.body);
    assert_eq!(j["model"], "a@b.com");
    assert_eq!(j["messages"][0]["content"], "admin is <EMAIL_1>");
    assert_eq!(j["messages"][1]["content"][0]["text"], "cc <EMAIL_2>");
    assert_eq!(
        j["messages"][1]["content"][1]["image_url"]["url"],
        "http://q@corp.com/"
    );
    assert_eq!(j["messages"][2]["content"], "mail \"me\" at <EMAIL_3>\n");
    assert_eq!(
        j["messages"][3]["tool_calls"][0]["function"]["arguments"],
        "{\"to\":\"<EMAIL_3>\"}"
    );
    assert_eq!(j["messages"][4]["content"], "sent to <EMAIL_4>");
    assert_eq!(o.scan.hits[0].count, 5);
}

#[test]
fn clean_request_is_untouched_and_block_blocks() {
    let mut v = Vault::new();
    let clean = r#"{"model": "m", "messages": [{"role": "user", "content": "hello there"}]}"#;
    let o = req(ReqApi::Chat, clean, &mut v);
    assert!(o.body.is_none() && o.scan.is_clean());
    let bad = r#"{"messages": [{"role": "user", "content": "a@b.com card 4111 1111 1111 1111"}]}"#;
    let o = req(ReqApi::Chat, bad, &mut v);
    assert!(o.body.is_none());
    assert_eq!(o.scan.blocked.map(|h| h.rule), Some("card".to_string()));
    // Not the API's shape.
    assert!(scan_request(&pii(), ReqApi::Chat, b"{\"messages\": 3}", &mut v).is_err());
    assert!(scan_request(&pii(), ReqApi::Chat, b"nope", &mut v).is_err());
    // No request rule: nothing is parsed at all (even a broken body passes).
    let resp_only = Policy::parse(
        policy_json(
            r#"{"detector": "email", "action": "mask"}"#,
            r#", "on": ["response"]"#,
        )
        .as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(scan_request(&resp_only, ReqApi::Chat, b"nope", &mut v).is_ok_and(|o| o.body.is_none()));
}

#[test]
fn messages_request_walk() {
    let mut v = Vault::new();
    let body = r#"{"model": "claude", "system": [{"type": "text", "text": "ops a@corp.com"}],
      "messages": [
        {"role": "user", "content": "I am b@corp.com"},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}, {"type": "tool_use", "id": "t", "name": "send", "input": {"to": ["c@corp.com"], "n": 1}}]},
        {"role": "user", "content": [
           {"type": "tool_result", "tool_use_id": "t", "content": "delivered to c@corp.com"},
           {"type": "tool_result", "tool_use_id": "u", "content": [{"type": "text", "text": "d@corp.com"}]},
           {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "e@corp.com"}}]}]}"#;
    let o = req(ReqApi::Messages, body, &mut v);
    let j = json(&o.body);
    assert_eq!(j["system"][0]["text"], "ops <EMAIL_1>");
    assert_eq!(j["messages"][0]["content"], "I am <EMAIL_2>");
    assert_eq!(
        j["messages"][1]["content"][1]["input"]["to"][0],
        "<EMAIL_3>"
    );
    assert_eq!(
        j["messages"][2]["content"][0]["content"],
        "delivered to <EMAIL_3>"
    );
    assert_eq!(
        j["messages"][2]["content"][1]["content"][0]["text"],
        "<EMAIL_4>"
    );
    assert_eq!(
        j["messages"][2]["content"][2]["source"]["data"],
        "e@corp.com"
    );
    // System as a string.
    let o = req(
        ReqApi::Messages,
        r#"{"system": "a@corp.com", "messages": []}"#,
        &mut v,
    );
    assert_eq!(json(&o.body)["system"], "<EMAIL_1>");
}

#[test]
fn responses_request_walk() {
    let mut v = Vault::new();
    let body = r#"{"model": "m", "instructions": "owner a@corp.com", "input": [
        {"role": "user", "content": "b@corp.com"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "c@corp.com"}, {"type": "input_image", "image_url": "d@corp.com"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "e@corp.com"}]},
        {"type": "function_call", "call_id": "1", "name": "f", "arguments": "{\"a\":\"f@corp.com\"}"},
        {"type": "function_call_output", "call_id": "1", "output": "g@corp.com"}]}"#;
    let o = req(ReqApi::Responses, body, &mut v);
    let j = json(&o.body);
    assert_eq!(j["instructions"], "owner <EMAIL_1>");
    assert_eq!(j["input"][0]["content"], "<EMAIL_2>");
    assert_eq!(j["input"][1]["content"][0]["text"], "<EMAIL_3>");
    assert_eq!(j["input"][1]["content"][1]["image_url"], "d@corp.com");
    assert_eq!(j["input"][2]["content"][0]["text"], "<EMAIL_4>");
    assert_eq!(j["input"][3]["arguments"], "{\"a\":\"<EMAIL_5>\"}");
    assert_eq!(j["input"][4]["output"], "<EMAIL_6>");
    let o = req(
        ReqApi::Responses,
        r#"{"input": "write to h@corp.com"}"#,
        &mut v,
    );
    assert_eq!(json(&o.body)["input"], "write to <EMAIL_7>");
}

#[test]
fn embeddings_request_walk() {
    let mut v = Vault::new();
    let o = req(
        ReqApi::Embeddings,
        r#"{"model": "e", "input": ["a@corp.com", "plain", "b@corp.com"]}"#,
        &mut v,
    );
    let j = json(&o.body);
    assert_eq!(
        j["input"],
        serde_json::json!(["<EMAIL_1>", "plain", "<EMAIL_2>"])
    );
    let o = req(ReqApi::Embeddings, r#"{"input": "c@corp.com"}"#, &mut v);
    assert_eq!(json(&o.body)["input"], "<EMAIL_3>");
    let o = req(ReqApi::Embeddings, r#"{"input": [1, 2, 3]}"#, &mut v);
    assert!(o.body.is_none());
}

#[test]
fn answer_walks_mask_restore_block() {
    let p = pii();
    let mut v = Vault::new();
    let o = req(
        ReqApi::Chat,
        r#"{"messages": [{"role": "user", "content": "I am me@corp.com"}]}"#,
        &mut v,
    );
    assert!(o.body.is_some());
    let ans = r#"{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant",
        "content": "Hello <EMAIL_1>, contact other@corp.com", "tool_calls": [{"id": "c", "type": "function",
        "function": {"name": "f", "arguments": "{\"to\":\"<EMAIL_1>\"}"}}]}, "finish_reason": "stop"}]}"#;
    let o = scan_answer(&p, AnsApi::Chat, ans.as_bytes(), &mut v).unwrap_or_else(|e| panic!("{e}"));
    let j = json(&o.body);
    assert_eq!(
        j["choices"][0]["message"]["content"],
        "Hello me@corp.com, contact <EMAIL_2>"
    );
    assert_eq!(
        j["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"to\":\"me@corp.com\"}"
    );
    assert_eq!(j["id"], "x");
    let msg = r#"{"type": "message", "content": [{"type": "thinking", "thinking": "<EMAIL_1>", "signature": "s"},
        {"type": "text", "text": "Hi <EMAIL_1>"}, {"type": "tool_use", "id": "t", "name": "n", "input": {"q": "<EMAIL_1>"}}]}"#;
    let o =
        scan_answer(&p, AnsApi::Messages, msg.as_bytes(), &mut v).unwrap_or_else(|e| panic!("{e}"));
    let j = json(&o.body);
    assert_eq!(j["content"][0]["thinking"], "<EMAIL_1>");
    assert_eq!(j["content"][1]["text"], "Hi me@corp.com");
    assert_eq!(j["content"][2]["input"]["q"], "me@corp.com");
    let blocked =
        r#"{"type": "message", "content": [{"type": "text", "text": "card 4111 1111 1111 1111"}]}"#;
    let o = scan_answer(&p, AnsApi::Messages, blocked.as_bytes(), &mut v)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.body.is_none() && o.scan.blocked.is_some());
    let clean = r#"{"type": "message", "content": [{"type": "text", "text": "fine"}]}"#;
    let o = scan_answer(&p, AnsApi::Messages, clean.as_bytes(), &mut v)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.body.is_none() && o.scan.is_clean());
}

#[test]
fn responses_answer_walk_mask_restore_block() {
    let p = pii();
    let mut v = Vault::new();
    let o = req(
        ReqApi::Responses,
        r#"{"input": "I am me@corp.com"}"#,
        &mut v,
    );
    assert!(o.body.is_some());
    let ans = r#"{"id": "resp_1", "object": "response", "status": "completed", "output": [
        {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "<EMAIL_1> x@corp.com"}]},
        {"id": "msg_1", "type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "Hello <EMAIL_1>, contact other@corp.com", "annotations": []}]},
        {"id": "fc_1", "type": "function_call", "call_id": "c", "name": "f", "arguments": "{\"to\":\"<EMAIL_1>\"}"}],
        "usage": {"input_tokens": 3, "output_tokens": 5}}"#;
    let o = scan_answer(&p, AnsApi::Responses, ans.as_bytes(), &mut v)
        .unwrap_or_else(|e| panic!("{e}"));
    let j = json(&o.body);
    assert_eq!(
        j["output"][1]["content"][0]["text"],
        "Hello me@corp.com, contact <EMAIL_2>"
    );
    assert_eq!(j["output"][2]["arguments"], "{\"to\":\"me@corp.com\"}");
    // Reasoning summaries are not touched.
    assert_eq!(j["output"][0]["summary"][0]["text"], "<EMAIL_1> x@corp.com");
    assert_eq!(j["usage"]["output_tokens"], 5);
    let blocked = r#"{"object": "response", "output": [{"type": "message", "content": [
        {"type": "output_text", "text": "card 4111 1111 1111 1111"}]}]}"#;
    let o = scan_answer(&p, AnsApi::Responses, blocked.as_bytes(), &mut v)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.body.is_none() && o.scan.blocked.is_some());
    let clean = r#"{"object": "response", "output": [{"type": "message", "content": [
        {"type": "output_text", "text": "fine"}]}]}"#;
    let o = scan_answer(&p, AnsApi::Responses, clean.as_bytes(), &mut v)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(o.body.is_none() && o.scan.is_clean());
}

// ---------------------------------------------------------------------------------------------
// Streams

fn stream_policy(action_card: &str, window: usize) -> Policy {
    let json = format!(
        r#"{{"stream_window": {window}, "guardrails": [{{"name": "g", "rules": [
            {{"detector": "email", "action": "mask"}}, {{"detector": "card", "action": "{action_card}"}},
            {{"detector": "secret", "action": "mask"}}, {{"detector": "iban", "action": "mask"}},
            {{"detector": "phone", "action": "mask"}}, {{"detector": "ssn", "action": "mask"}},
            {{"detector": "ip", "action": "mask"}},
            {{"detector": "phrase", "name": "nep", "phrases": ["project neptune"], "action": "mask"}}]}}]}}"#
    );
    Policy::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

const STREAM_TEXT: &str = "Grüße! Mail john.doe@example.com or call +1 (415) 555-0100; card 4111 1111 1111 1111, \
IBAN DE89 3704 0044 0532 0130 00, ssn 123-45-6789 from 10.0.0.1 — key sk-proj-OL8dKLzdocJ2isAjIhKtJ0RlgLKOmxgJTeKdNnFRIBXuDL7D, \
about Project Neptune. Token u8jzPde0IgxLd6GncfBAepfJBd0Kh8oO end…";

fn whole(p: &Policy, text: &str) -> String {
    let mut v = Vault::new();
    let mut out = String::new();
    let s = p.response().scan_text(text, &mut v, &mut out);
    if s.masked {
        out
    } else {
        text.to_string()
    }
}

fn streamed(p: &Policy, deltas: &[&str]) -> Result<String, Hit> {
    let mut v = Vault::new();
    let mut g = StreamGuard::new();
    let mut out = String::new();
    for d in deltas {
        g.push(p.response(), d, &mut v, &mut out)?;
    }
    g.finish(p.response(), &mut v, &mut out)?;
    Ok(out)
}

fn cuts(text: &str) -> Vec<usize> {
    (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .collect()
}

#[test]
fn stream_equals_whole_scan_at_every_cut() {
    for window in [64, DEFAULT_STREAM_WINDOW] {
        let p = stream_policy("mask", window);
        let want = whole(&p, STREAM_TEXT);
        // Every detector fired: no original left.
        for orig in [
            "john.doe",
            "555-0100",
            "4111",
            "DE89",
            "123-45-6789",
            "10.0.0.1",
            "sk-proj",
            "Neptune",
            "u8jz",
        ] {
            assert!(!want.contains(orig), "{orig} in {want}");
        }
        assert!(
            want.contains("<IBAN_1>") && want.contains("<SECRET_2>") && want.contains("<NEP_1>")
        );
        let c = cuts(STREAM_TEXT);
        for &i in &c {
            let got = streamed(&p, &[&STREAM_TEXT[..i], &STREAM_TEXT[i..]]);
            assert_eq!(
                got.as_deref(),
                Ok(want.as_str()),
                "window {window}, cut at {i}"
            );
        }
        for (k, &i) in c.iter().enumerate().step_by(3) {
            for &j in &c[k..] {
                let d = [&STREAM_TEXT[..i], &STREAM_TEXT[i..j], &STREAM_TEXT[j..]];
                let got = streamed(&p, &d);
                assert_eq!(
                    got.as_deref(),
                    Ok(want.as_str()),
                    "window {window}, cuts {i} {j}"
                );
            }
        }
    }
}

#[test]
fn stream_in_small_deltas_emits_before_the_end() {
    let p = stream_policy("mask", 64);
    let text = STREAM_TEXT.repeat(4);
    let want = whole(&p, &text);
    let mut v = Vault::new();
    let mut g = StreamGuard::new();
    let mut out = String::new();
    let mut max_held = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for w in chars.chunks(3) {
        let (s, last) = (w[0].0, w[w.len() - 1]);
        let e = last.0 + last.1.len_utf8();
        let before = out.len();
        assert!(g.push(p.response(), &text[s..e], &mut v, &mut out).is_ok());
        max_held = max_held.max(g.held());
        // Emitted text is a prefix of the whole-text result.
        assert!(want.starts_with(&out), "diverged at {e}");
        let _ = before;
    }
    assert!(out.len() > text.len() / 2, "the stream did not emit early");
    assert!(max_held < 64 + 32 + 80, "held {max_held}");
    assert!(g.finish(p.response(), &mut v, &mut out).is_ok());
    assert_eq!(out, want);
    assert!(g
        .scan()
        .hits
        .iter()
        .any(|h| h.rule == "iban" && h.count == 4));
}

#[test]
fn stream_block_is_caught_at_every_cut() {
    let p = stream_policy("block", 64);
    let text = "prefix text that is long enough to be emitted early, then the card 4111-1111-1111-1111 and more text after it";
    for i in cuts(text) {
        let got = streamed(&p, &[&text[..i], &text[i..]]);
        let h = got
            .err()
            .unwrap_or_else(|| panic!("not blocked at cut {i}"));
        assert_eq!(h.rule, "card");
    }
    // Emitted before the block: only text before the card.
    let mut v = Vault::new();
    let mut g = StreamGuard::new();
    let mut out = String::new();
    let mut blocked = false;
    for ch in text.as_bytes().chunks(5) {
        let d = std::str::from_utf8(ch).unwrap_or_default();
        if g.push(p.response(), d, &mut v, &mut out).is_err() {
            blocked = true;
            break;
        }
    }
    blocked |= g.finish(p.response(), &mut v, &mut out).is_err();
    assert!(blocked);
    assert!(!out.contains("4111"), "{out}");
    assert!(g.push(p.response(), "x", &mut v, &mut out).is_err());
}

#[test]
fn stream_holds_a_long_token_whole() {
    let p = stream_policy("mask", 64);
    let text = format!("prefix {JWT} suffix");
    let want = whole(&p, &text);
    assert_eq!(want, "prefix <SECRET_1> suffix");
    for i in cuts(&text) {
        assert_eq!(
            streamed(&p, &[&text[..i], &text[i..]]).as_deref(),
            Ok(want.as_str()),
            "cut {i}"
        );
    }
}

#[test]
fn restore_stream_at_every_cut() {
    let p = Policy::parse(
        policy_json(
            r#"{"detector": "email", "action": "mask"}"#,
            r#", "restore": true"#,
        )
        .as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut v = Vault::new();
    p.request()
        .scan_text("a@x.com b@x.com", &mut v, &mut String::new());
    let text = "Dear <EMAIL_1>, cc <EMAIL_2> and <EMAIL_3> <b> x<EMAIL_1>y <";
    let want = "Dear a@x.com, cc b@x.com and <EMAIL_3> <b> xa@x.comy <";
    assert_eq!(v.restore(text), want);
    for i in cuts(text) {
        for j in cuts(text).into_iter().filter(|&j| j >= i) {
            let mut r = RestoreStream::new();
            let mut out = String::new();
            r.push(&v, &text[..i], &mut out);
            r.push(&v, &text[i..j], &mut out);
            r.push(&v, &text[j..], &mut out);
            r.finish(&v, &mut out);
            assert_eq!(out, want, "cuts {i} {j}");
        }
    }
    // Through a StreamGuard too (answer rules present, placeholders restored).
    let mut g = StreamGuard::new();
    let mut out = String::new();
    for ch in text.as_bytes().chunks(2) {
        let d = std::str::from_utf8(ch).unwrap_or_default();
        assert!(g.push(p.response(), d, &mut v, &mut out).is_ok());
    }
    assert!(g.finish(p.response(), &mut v, &mut out).is_ok());
    assert_eq!(out, want);
}

#[test]
fn large_prompt_is_scanned_whole() {
    let p = stream_policy("mask", 128);
    let para = "Lorem ipsum dolor sit amet, user42@example.org consectetur 4111 1111 1111 1111 adipiscing \
                elit 192.168.0.1, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua. ";
    let mut text = String::new();
    while text.len() < 200 * 1024 {
        text.push_str(para);
    }
    let n = text.len() / para.len();
    let mut v = Vault::new();
    let mut out = String::new();
    let s = p.request().scan_text(&text, &mut v, &mut out);
    assert!(s.masked);
    for rule in ["email", "card", "ip"] {
        assert_eq!(
            s.hits.iter().find(|h| h.rule == rule).map(|h| h.count),
            Some(n as u32),
            "{rule}"
        );
    }
    assert!(!out.contains("user42") && !out.contains("4111") && !out.contains("192.168"));
    assert_eq!(out.matches("<EMAIL_1>").count(), n);
    // The same through a stream, in 1 KB deltas.
    let mut g = StreamGuard::new();
    let mut sv = Vault::new();
    let mut so = String::new();
    for ch in text.as_bytes().chunks(1024) {
        let d = std::str::from_utf8(ch).unwrap_or_default();
        assert!(g.push(p.response(), d, &mut sv, &mut so).is_ok());
    }
    assert!(g.finish(p.response(), &mut sv, &mut so).is_ok());
    assert_eq!(so, out);
    // Pathological inputs stay linear (no timing assertion: they just finish).
    for junk in [
        "@".repeat(200_000),
        "a@".repeat(100_000),
        "1-".repeat(100_000),
        ":".repeat(200_000),
        "9".repeat(200_000),
    ] {
        let _ = p
            .request()
            .scan_text(&junk, &mut Vault::new(), &mut String::new());
    }
    // A phrase of 120 words against 30,000 of its first word: each start's walk reads at most
    // the phrase (bounded by the config's 256-byte cap), and a long white-space run once.
    let long = format!("{} b", ["a"; 120].join(" "));
    let pp = policy(&format!(
        r#"{{"detector": "phrase", "name": "n", "phrases": ["{long}", "a b"], "action": "mask"}}"#
    ));
    for junk in [
        "a ".repeat(30_000),
        format!("a{}b", " ".repeat(200_000)),
        "-".repeat(200_000),
        "aB3".repeat(70_000),
    ] {
        let _ = pp
            .request()
            .scan_text(&junk, &mut Vault::new(), &mut String::new());
        let _ = p
            .request()
            .scan_text(&junk, &mut Vault::new(), &mut String::new());
    }
}

/// Rough timings (`cargo test --release --lib guard::tests::timing -- --ignored --nocapture
/// --test-threads=1`; in wasmtime with `make test-wasm32`'s runner). No assertion: real benchmarks
/// live in bench/.
#[test]
#[ignore]
fn timing() {
    let mut text = String::new();
    while text.len() < 1024 {
        text.push_str("The quick brown fox jumps over the lazy dog, version 1.2.3 on 2024-01-15. ");
    }
    let time = |what: &str, p: &Policy| {
        let t = std::time::Instant::now();
        for _ in 0..10_000 {
            let _ = p
                .request()
                .scan_text(&text, &mut Vault::new(), &mut String::new());
        }
        println!("{what}: {:?} per 1 KB scan", t.elapsed() / 10_000);
    };
    for det in ["email", "phone", "card", "iban", "ssn", "ip", "secret"] {
        time(det, &only(det));
    }
    time(
        "phrase",
        &policy(
            r#"{"detector": "phrase", "name": "n", "phrases": ["project neptune"], "action": "mask"}"#,
        ),
    );
    let all = stream_policy("mask", 128);
    time("all", &all);
    let body = serde_json::json!({"model": "m", "messages": [
        {"role": "system", "content": &text[..200]}, {"role": "user", "content": &text[200..]}]})
    .to_string();
    let t = std::time::Instant::now();
    for _ in 0..10_000 {
        let _ = scan_request(&all, ReqApi::Chat, body.as_bytes(), &mut Vault::new());
    }
    println!(
        "scan_request chat {} B: {:?}",
        body.len(),
        t.elapsed() / 10_000
    );
}

/// The bench's g2 request (bench/run.py GUARDRAILS, body_1k): what each part costs natively.
#[test]
#[ignore]
fn timing_bench_body() {
    let text = "Summarise the following notes about the quarterly planning meeting in three bullet points. ".repeat(8);
    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "You are a concise assistant. Answer in plain English."},
        {"role": "user", "content": text.trim()}], "temperature": 0.2, "max_tokens": 256})
    .to_string();
    let rules = |extra: bool| {
        let mut r = vec![];
        for (d, a) in [
            ("email", "mask"),
            ("phone", "mask"),
            ("card", "block"),
            ("iban", "block"),
            ("ssn", "block"),
            ("ip", "monitor"),
            ("secret", "block"),
        ] {
            r.push(serde_json::json!({"detector": d, "action": a}));
        }
        if extra {
            r.push(serde_json::json!({"detector": "regex", "name": "employee_id", "pattern": "EMP-[0-9]{6}", "action": "mask"}));
            r.push(serde_json::json!({"detector": "phrase", "name": "codename", "phrases": ["project neptune", "blue harbor"], "action": "block"}));
        }
        Policy::from_value(
            &serde_json::json!({"guardrails": [{"name": "pii", "restore": true, "rules": r}]}),
        )
        .unwrap()
    };
    for (what, p) in [("builtin", rules(false)), ("builtin+custom", rules(true))] {
        let t = std::time::Instant::now();
        for _ in 0..10_000 {
            let _ = crate::guard::scan_request(
                &p,
                crate::guard::ReqApi::Chat,
                body.as_bytes(),
                &mut Vault::new(),
            );
        }
        println!("{what}: {:?} per request", t.elapsed() / 10_000);
    }
}
