//! Shared pieces of the no-panic tests: a deterministic generator, input mutation, and a
//! workout that throws broken input at every method of a translator.

use crate::client_api::openai::parse_chat_envelope;
use crate::config::Provider;
use crate::providers::{ChatCall, ChatTranslator};

/// Texts for the tests that check a translator writes client strings into its own body
/// unchanged: `plain` (long, nothing to escape: the no-scan path), `escaped` (long, as it sits
/// inside a JSON string: `\"`, `\\`, `\n`, `\u0001`), `unescaped` (what `escaped` means) and a
/// base64 image longer than the no-scan threshold.
pub struct LongTexts {
    pub plain: String,
    pub escaped: String,
    pub unescaped: String,
    pub b64: &'static str,
}

pub fn long_texts() -> LongTexts {
    let plain =
        "Summarise the quarterly planning notes below in three short bullet points. ".repeat(3);
    let escaped = format!(r#"{plain}with \"quotes\", a \\ backslash,\n a new line and \u0001"#);
    let unescaped: String = serde_json::from_str(&format!("\"{escaped}\"")).unwrap();
    assert!(unescaped.contains('"') && unescaped.contains('\n') && unescaped.contains('\u{1}'));
    LongTexts {
        plain,
        escaped,
        unescaped,
        b64: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==",
    }
}

/// xorshift64: deterministic, so a failure reproduces.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// `n` bytes drawn from `alphabet`.
    pub fn bytes(&mut self, n: usize, alphabet: &[u8]) -> Vec<u8> {
        (0..n)
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect()
    }

    /// `seed` with 1 to 6 flips, inserts, deletes or a truncation.
    pub fn mutate(&mut self, seed: &[u8], alphabet: &[u8]) -> Vec<u8> {
        let mut input = seed.to_vec();
        for _ in 0..1 + self.below(6) {
            match self.below(4) {
                0 if !input.is_empty() => {
                    let i = self.below(input.len());
                    input[i] = alphabet[self.below(alphabet.len())];
                }
                1 => {
                    let i = self.below(input.len() + 1);
                    input.insert(i, alphabet[self.below(alphabet.len())]);
                }
                2 if !input.is_empty() => {
                    let i = self.below(input.len());
                    input.remove(i);
                }
                _ => {
                    let n = self.below(input.len() + 1);
                    input.truncate(n)
                }
            }
        }
        input
    }
}

/// Mutated seeds and random bytes through `request()`, `response()`, `error()` and
/// `stream_chunk()` (cut at random places). `fresh(stream, include_usage)` gives a translator
/// that has already seen a valid request. Every stream must end in exactly one `data: [DONE]`.
pub fn workout(
    seeds: &[&[u8]],
    alphabet: &[u8],
    provider: &Provider,
    new: &dyn Fn() -> Box<dyn ChatTranslator>,
    fresh: &dyn Fn(bool, bool) -> Box<dyn ChatTranslator>,
    rounds: usize,
) {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for round in 0..rounds {
        let input = rng.mutate(seeds[round % seeds.len()], alphabet);
        let noise: Vec<u8> = (0..rng.below(200)).map(|_| rng.next() as u8).collect();
        for bytes in [&input, &noise] {
            if let Ok(env) = parse_chat_envelope(bytes) {
                let _ = new().request(&ChatCall {
                    raw: bytes,
                    envelope: &env,
                    provider,
                    upstream_model: "m",
                    now_unix: 0,
                    want_stream_usage: round % 2 == 0,
                });
            }
            let mut t = fresh(round % 2 == 0, round % 3 == 0);
            let _ = t.response(bytes);
            let _ = t.error((rng.next() % 700) as u16, bytes);
            let mut out = Vec::new();
            let mut rest: &[u8] = bytes;
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len().min(64));
                let (a, b) = rest.split_at(n);
                assert!(t.stream_chunk(a, false, &mut out));
                rest = b;
            }
            assert!(t.stream_chunk(b"", true, &mut out));
            let s = String::from_utf8(out).expect("output is UTF-8");
            assert!(s.ends_with("data: [DONE]\n\n"), "{s}");
            assert_eq!(s.matches("data: [DONE]").count(), 1);
        }
    }
}
