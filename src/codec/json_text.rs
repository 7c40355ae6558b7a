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
//!
//! Better still is not to look at all: a string serde_json lent from the JSON text it parsed
//! holds nothing to escape (it lends only strings without escapes, and refuses raw control
//! characters), so a [`Text`] that knows it came from there is written without the scan.

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
    serialize_raw(text, s)
}

/// Writes `text`, which must need no escaping, quoted and as it is.
fn serialize_raw<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    quoted.push_str(text);
    quoted.push('"');
    let mut st = s.serialize_struct(RAW_VALUE_TOKEN, 1)?;
    st.serialize_field(RAW_VALUE_TOKEN, &quoted)?;
    st.end()
}

/// Whether a string a `Deserialize` impl is handed by deserializer `D` through
/// `visit_borrowed_str` is a slice of JSON text between quotes with no escapes in it: true for
/// serde_json's own deserializer over a slice or `str` (it lends only such strings and refuses
/// raw control characters). False for everything else (serde's buffered `Content` for untagged
/// enums, a `Value`, map keys), which then costs a scan, never wrong JSON. `type_name` is a
/// constant per `D`, so this folds away; a test pins its form for serde_json.
pub fn lends_json_text<'de, D: serde::Deserializer<'de>>() -> bool {
    std::any::type_name::<D>().starts_with("&mut serde_json::de::Deserializer<")
}

/// A string to write into JSON, and whether it is known to need no escaping because serde_json
/// lent it (or the string it is part of) from the JSON text it parsed. Written without looking
/// at its bytes when it is; scanned by [`serialize`] when it is not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Text<'a> {
    text: &'a str,
    clean: bool,
}

impl<'a> Text<'a> {
    /// Any string: it will be scanned (and escaped if need be) when written.
    pub fn new(text: &'a str) -> Self {
        Text { text, clean: false }
    }

    /// `text` as serde_json lent it from JSON text (see [`lends_json_text`]).
    pub(crate) fn lent_by_json(text: &'a str) -> Self {
        Text { text, clean: true }
    }

    pub fn as_str(&self) -> &'a str {
        self.text
    }

    /// A part of this text (`part` must be a slice of it, e.g. from `split_once`); it keeps
    /// what is known about this text. Anything else is treated as [`Text::new`].
    pub fn part(&self, part: &'a str) -> Text<'a> {
        let (whole, at) = (self.text.as_ptr() as usize, part.as_ptr() as usize);
        let inside = at >= whole && at + part.len() <= whole + self.text.len();
        Text {
            text: part,
            clean: self.clean && inside,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

impl serde::Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.clean && self.text.len() >= RAW_MIN_LEN {
            serialize_raw(self.text, s)
        } else {
            serialize(self.text, s)
        }
    }
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

/// Writes `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
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
