//! Redaction of secrets and PII in logged bodies, by hand-written scanners (no regex crate: the
//! patterns are few and this keeps the `.wasm` small).
//!
//! Replaced: API keys (`sk-…`, `sk_…`, `sk-ant-…`, `pk_…`/`rk_…` live keys, `AKIA…`, `ghp_…`,
//! `github_pat_…`, `xox?-…`, `AIza…`), `Bearer <token>`, e-mail addresses, card numbers
//! (13–19 digits, optionally grouped by spaces or dashes, Luhn-valid) and phone numbers
//! (10–15 digits written with a leading `+` or with separators). Text is scanned as bytes; all
//! patterns are ASCII, so multi-byte UTF-8 passes through untouched. Replacements contain no `"`
//! or `\`, and a JSON escape (`\n`) just before a match is kept, so redacted JSON stays valid.

pub const API_KEY: &str = "[REDACTED_API_KEY]";
pub const BEARER: &str = "Bearer [REDACTED]";
pub const EMAIL: &str = "[REDACTED_EMAIL]";
pub const CARD: &str = "[REDACTED_CARD]";
pub const PHONE: &str = "[REDACTED_PHONE]";

/// Key prefixes and the minimum length of the token that follows.
const KEY_PREFIXES: &[(&[u8], usize)] = &[
    (b"sk-", 16),
    (b"sk_", 16),
    (b"pk_live_", 16),
    (b"rk_live_", 16),
    (b"AKIA", 16),
    (b"ghp_", 20),
    (b"gho_", 20),
    (b"github_pat_", 20),
    (b"xoxb-", 10),
    (b"xoxp-", 10),
    (b"AIza", 30),
];

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn is_email_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._%+-".contains(&b)
}

fn is_domain_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
}

/// Whether position `i` starts a word: not preceded by a token byte, except the letter of a JSON
/// escape such as `\n`.
fn word_start(s: &[u8], i: usize) -> bool {
    if i == 0 || !is_token_byte(s[i - 1]) {
        return true;
    }
    escaped_letter_before(s, i)
}

/// The redacted text. Returns the input unchanged (borrowed) when nothing matched.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    let s = text.as_bytes();
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0; // s[..copied] is in `out` (or unchanged)
    let mut i = 0;
    while i < s.len() {
        if let Some((end, replacement)) = match_at(s, i) {
            let o = out.get_or_insert_with(|| Vec::with_capacity(s.len()));
            o.extend_from_slice(&s[copied..i]);
            o.extend_from_slice(replacement.as_bytes());
            copied = end;
            i = end;
        } else {
            i += 1;
        }
    }
    match out {
        None => std::borrow::Cow::Borrowed(text),
        Some(mut o) => {
            o.extend_from_slice(&s[copied..]);
            // Only ASCII ranges were replaced, at ASCII boundaries.
            std::borrow::Cow::Owned(String::from_utf8(o).unwrap_or_default())
        }
    }
}

/// A match starting at `i`: its end and replacement.
fn match_at(s: &[u8], i: usize) -> Option<(usize, &'static str)> {
    let b = s[i];
    if b == b'B' || b == b'b' {
        if let Some(end) = bearer(s, i) {
            return Some((end, BEARER));
        }
    }
    if b.is_ascii_alphabetic() && word_start(s, i) {
        if let Some(end) = api_key(s, i) {
            return Some((end, API_KEY));
        }
    }
    if is_email_local(b) && b != b'.' && word_start_email(s, i) {
        if let Some(end) = email(s, i) {
            return Some((end, EMAIL));
        }
    }
    if (b.is_ascii_digit() || b == b'+' || b == b'(') && number_start(s, i) {
        if let Some(r) = digits(s, i) {
            return Some(r);
        }
    }
    None
}

fn bearer(s: &[u8], i: usize) -> Option<usize> {
    let word = s.get(i..i + 7)?;
    if !word.eq_ignore_ascii_case(b"bearer ") || !word_start(s, i) {
        return None;
    }
    let mut j = i + 7;
    while j < s.len() && s[j] == b' ' {
        j += 1;
    }
    let start = j;
    while j < s.len() && (is_token_byte(s[j]) || b"./+=~".contains(&s[j])) {
        j += 1;
    }
    (j - start >= 8).then_some(j)
}

fn api_key(s: &[u8], i: usize) -> Option<usize> {
    for (prefix, min) in KEY_PREFIXES {
        if s[i..].starts_with(prefix) {
            let mut j = i + prefix.len();
            while j < s.len() && is_token_byte(s[j]) {
                j += 1;
            }
            if j - i - prefix.len() >= *min {
                return Some(j);
            }
        }
    }
    None
}

fn word_start_email(s: &[u8], i: usize) -> bool {
    if i >= 1 && s[i - 1] == b'\\' {
        return false; // the letter of an escape such as `\n` is not part of an address
    }
    i == 0 || !is_email_local(s[i - 1]) || escaped_letter_before(s, i)
}

fn escaped_letter_before(s: &[u8], i: usize) -> bool {
    i >= 2 && s[i - 2] == b'\\' && b"nrtbf".contains(&s[i - 1])
}

fn email(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    while j < s.len() && is_email_local(s[j]) {
        j += 1;
    }
    if j == i || s.get(j) != Some(&b'@') {
        return None;
    }
    let dstart = j + 1;
    let mut k = dstart;
    while k < s.len() && is_domain_byte(s[k]) {
        k += 1;
    }
    // Trailing dots (end of a sentence) are not part of the domain.
    while k > dstart && s[k - 1] == b'.' {
        k -= 1;
    }
    let domain = &s[dstart..k];
    let dot = domain.iter().rposition(|&b| b == b'.')?;
    let tld = &domain[dot + 1..];
    (dot > 0 && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic)).then_some(k)
}

fn number_start(s: &[u8], i: usize) -> bool {
    i == 0
        || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'+' || s[i - 1] == b'.')
        || escaped_letter_before(s, i)
}

/// A card number or a phone number starting at `i`.
fn digits(s: &[u8], i: usize) -> Option<(usize, &'static str)> {
    let plus = s[i] == b'+';
    let mut j = if plus { i + 1 } else { i };
    let mut nums: Vec<u8> = Vec::new();
    let mut separators = 0;
    let mut card_shape = true; // only digits, spaces and dashes
    let mut end = j;
    while j < s.len() && nums.len() <= 19 {
        let b = s[j];
        if b.is_ascii_digit() {
            nums.push(b - b'0');
            j += 1;
            end = j;
        } else if b" -.()".contains(&b) {
            // A separator must be followed (after at most one more separator) by a digit.
            let next = s.get(j + 1).copied().unwrap_or(0);
            let next2 = s.get(j + 2).copied().unwrap_or(0);
            if !(next.is_ascii_digit() || (b" -()".contains(&next) && next2.is_ascii_digit())) {
                break;
            }
            if !(b == b' ' || b == b'-') {
                card_shape = false;
            }
            separators += 1;
            j += 1;
        } else {
            break;
        }
    }
    // The number must end at a word boundary.
    if end < s.len() && (s[end].is_ascii_alphanumeric() || s[end] == b'_') {
        return None;
    }
    let n = nums.len();
    if !plus && card_shape && (13..=19).contains(&n) && crate::guard::detect::luhn(&nums) {
        return Some((end, CARD));
    }
    if (10..=15).contains(&n) && (plus || separators > 0) {
        return Some((end, PHONE));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        redact(s).into_owned()
    }

    #[test]
    fn api_keys_and_bearer_tokens() {
        assert_eq!(
            r("key sk-proj-abcdefghijklmnop1234 ok"),
            "key [REDACTED_API_KEY] ok"
        );
        assert_eq!(
            r("x-api-key: sk-ant-api03-AAAAAAAAAAAAAAAAAAAA_bb"),
            "x-api-key: [REDACTED_API_KEY]"
        );
        assert_eq!(r("AKIAIOSFODNN7EXAMPLE"), "[REDACTED_API_KEY]");
        assert_eq!(
            r("token ghp_0123456789abcdefghijABCD"),
            "token [REDACTED_API_KEY]"
        );
        assert_eq!(
            r("Authorization: Bearer eyJhbGciOi.JIUzI1NiJ9.abc-_="),
            "Authorization: [REDACTED]".replace("[REDACTED]", BEARER)
        );
        assert_eq!(r("bearer abcdefgh12"), BEARER);
        // Too short, or inside a word: not a key.
        assert_eq!(r("sk-short"), "sk-short");
        assert_eq!(
            r("task-abcdefghijklmnopqrstu"),
            "task-abcdefghijklmnopqrstu"
        );
        assert_eq!(r("Bearer abc"), "Bearer abc");
        assert_eq!(
            r("risk_abcdefghijklmnopqrstuvwxyz"),
            "risk_abcdefghijklmnopqrstuvwxyz"
        );
    }

    #[test]
    fn emails() {
        assert_eq!(
            r("mail jane.doe+x@example.co.uk."),
            "mail [REDACTED_EMAIL]."
        );
        assert_eq!(r("a@b"), "a@b");
        assert_eq!(r("user@host.c0m"), "user@host.c0m");
        assert_eq!(r("@example.com"), "@example.com");
    }

    #[test]
    fn cards_are_luhn_checked() {
        assert_eq!(r("card 4111 1111 1111 1111!"), "card [REDACTED_CARD]!");
        assert_eq!(r("4111-1111-1111-1111"), CARD);
        assert_eq!(r("5500005555555559"), CARD);
        // Fails Luhn, no separators: an id, left alone.
        assert_eq!(r("4111111111111112"), "4111111111111112");
        // Long numbers inside words or decimals stay.
        assert_eq!(r("id4111111111111111"), "id4111111111111111");
        assert_eq!(r("1.4111111111111111"), "1.4111111111111111");
    }

    #[test]
    fn phone_numbers() {
        assert_eq!(r("call +1 415 555 2671 now"), "call [REDACTED_PHONE] now");
        assert_eq!(r("(415) 555-2671"), PHONE);
        assert_eq!(r("+441632960961"), PHONE);
        assert_eq!(r("415.555.2671"), PHONE);
        // Bare runs of digits (timestamps, ids, token counts) are not phones.
        assert_eq!(r("\"created\":1700000000"), "\"created\":1700000000");
        assert_eq!(r("12 34"), "12 34");
        assert_eq!(r("version 1.2.3"), "version 1.2.3");
    }

    #[test]
    fn json_stays_valid() {
        let body = r#"{"messages":[{"role":"user","content":"hi\nbob@example.com\tsk-abcdefghijklmnopqrstuv\n+1 (415) 555-2671\n4111 1111 1111 1111"}],"n":1}"#;
        let out = r(body);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["messages"][0]["content"],
            "hi\n[REDACTED_EMAIL]\t[REDACTED_API_KEY]\n[REDACTED_PHONE]\n[REDACTED_CARD]"
        );
        assert!(matches!(
            redact("nothing here"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn never_panics_on_odd_input() {
        let odd = [
            "",
            "+",
            "(",
            "@",
            "Bearer",
            "sk-",
            "1 ",
            "+1 (",
            "é@é.é",
            "\\",
            "\\n",
            "4111 1111 1111 1111 1111 1111 1111",
            "x@.com",
            "a@b.",
            "😀+1 415 555 2671😀",
        ];
        for s in odd {
            let _ = redact(s);
        }
        let bytes: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let _ = redact(&String::from_utf8_lossy(&bytes));
        assert_eq!(r("😀+1 415 555 2671😀"), "😀[REDACTED_PHONE]😀");
    }

    /// Random mixes of the characters the scanners look at: never a panic, the result is the
    /// input when nothing matched, and a JSON string stays a valid JSON string.
    #[test]
    fn random_text_never_panics_and_json_stays_valid() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet: Vec<char> = "sk-_AKIAghpBearer bearer@.com+()-. 0123456789\\n\"xé😀"
            .chars()
            .collect();
        for _ in 0..5000 {
            let n = (next() % 80) as usize;
            let text: String = (0..n)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let out = redact(&text);
            let json = serde_json::to_string(&text).unwrap();
            let redacted = redact(&json);
            assert!(
                serde_json::from_str::<String>(&redacted).is_ok(),
                "{json} -> {redacted}"
            );
            if out == text {
                continue;
            }
            assert!(out.contains("[REDACTED"));
        }
    }
}
