//! Writing long JSON strings without per-byte escaping work.
//!
//! serde_json escapes a string byte by byte through a lookup table (~7 instructions a byte,
//! measured with callgrind: a fifth of a 1 KB OpenAI → Anthropic translation). Message texts
//! rarely contain anything to escape, so [`serialize`] first checks eight bytes at a time whether
//! any byte needs it (`"`, `\` or a control character) and, when none does, hands serde_json the
//! string already quoted as a raw JSON value, which it copies as it is.
//!
//! The raw hand-off uses serde_json's `RawValue` serialization protocol (a struct named by its
//! private token). Its output is checked byte for byte against plain `serialize_str` in the tests
//! below, for serde_json's writer and its `Value` serializer, so a serde_json that changed the
//! protocol fails the tests instead of writing wrong JSON.

use serde::ser::{SerializeStruct, Serializer};

/// serde_json's name for a raw JSON value being serialized (`serde_json::raw::TOKEN`).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Below this length escaping is cheaper than the copy the raw hand-off makes.
const RAW_MIN_LEN: usize = 64;

/// Serializes `text` as a JSON string: through the raw path when nothing in it needs escaping.
pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    if text.len() < RAW_MIN_LEN || needs_escape(text.as_bytes()) {
        return s.serialize_str(text);
    }
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    quoted.push_str(text);
    quoted.push('"');
    let mut st = s.serialize_struct(RAW_VALUE_TOKEN, 1)?;
    st.serialize_field(RAW_VALUE_TOKEN, &quoted)?;
    st.end()
}

/// For `#[serde(serialize_with = ...)]` on a string field.
pub fn serialize_field<S: Serializer, T: AsRef<str> + ?Sized>(
    text: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    serialize(text.as_ref(), s)
}

/// For `#[serde(serialize_with = ...)]` on an `Option` of a string.
pub fn serialize_opt<S: Serializer, T: AsRef<str>>(
    text: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match text {
        Some(t) => serialize(t.as_ref(), s),
        None => s.serialize_none(),
    }
}

/// Whether any byte is `"`, `\` or below 0x20 (what JSON requires escaped; serde_json escapes
/// nothing else). Eight bytes per step with the classic "has zero byte" bit tricks.
pub fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w);
        // A byte below 0x20 (bytes >= 0x80 are excluded by `!x`).
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
        let q = x ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q & HIGHS;
        let bs = x ^ (ONES * u64::from(b'\\'));
        let backslash = bs.wrapping_sub(ONES) & !bs & HIGHS;
        if control | quote | backslash != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fast<'a>(&'a str);

    impl serde::Serialize for Fast<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize(self.0, s)
        }
    }

    fn samples() -> Vec<String> {
        let long = "Summarise the following notes about the quarterly planning meeting. ".repeat(4);
        vec![
            String::new(),
            "short".into(),
            long.clone(),
            format!("{long}\"quoted\""),
            format!("{long}back\\slash"),
            format!("{long}new\nline\ttab\u{1}"),
            format!("{long}ünïcødé ✓ 🚀 \u{7f} \u{80}"),
            format!("{}\"", "x".repeat(71)),
            format!("\"{}", "x".repeat(71)),
        ]
    }

    #[test]
    fn same_bytes_as_serde_json() {
        for s in samples() {
            let fast = serde_json::to_string(&Fast(&s)).unwrap();
            assert_eq!(fast, serde_json::to_string(&s).unwrap(), "{s:?}");
            // Inside a struct and through the Value serializer too.
            let v = serde_json::to_value(Fast(&s)).unwrap();
            assert_eq!(v, serde_json::Value::String(s.clone()));
            let nested = serde_json::to_string(&vec![Fast(&s), Fast("a")]).unwrap();
            assert_eq!(
                nested,
                serde_json::to_string(&vec![s.as_str(), "a"]).unwrap()
            );
        }
    }

    #[test]
    fn finds_every_byte_that_needs_escaping_at_every_position() {
        for len in 0..40 {
            let clean = vec![b'a'; len];
            assert!(!needs_escape(&clean));
            for pos in 0..len {
                for bad in [b'"', b'\\', 0u8, 0x1f] {
                    let mut b = clean.clone();
                    b[pos] = bad;
                    assert!(needs_escape(&b), "{bad:#x} at {pos} of {len}");
                }
                for ok in [0x20u8, 0x7f, 0x80, 0xff, b'/', b'!', b'#', b']'] {
                    let mut b = clean.clone();
                    b[pos] = ok;
                    assert!(!needs_escape(&b), "{ok:#x} at {pos} of {len}");
                }
            }
        }
    }
}
