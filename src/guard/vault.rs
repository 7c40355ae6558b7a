//! The per-request vault of masked values, so that an answer can get them back.
//!
//! Masking replaces a value with a typed placeholder (`<EMAIL_1>`), numbered per request and per
//! type, the same value always getting the same placeholder. When the guardrail has
//! `restore: true` the vault remembers the original, and [`Vault::restore`] puts it back where
//! the model echoes the placeholder; [`RestoreStream`] does the same over streamed deltas, holding
//! back a `<...` that may be the start of a placeholder. The vault is capped
//! ([`MAX_ENTRIES`], [`MAX_BYTES`]): past the cap values are still masked (privacy first) but no
//! longer restorable.

use memchr::memchr_iter;
use std::collections::HashMap;

/// At most this many distinct values are remembered per request.
pub const MAX_ENTRIES: usize = 4096;
/// At most this many bytes of original values are remembered per request.
pub const MAX_BYTES: usize = 1 << 20;
/// The longest placeholder: `<` + tag (≤ 48) + `_` + number (≤ 10) + `>`.
pub(crate) const MAX_PLACEHOLDER: usize = 61;

#[derive(Debug)]
struct Entry {
    placeholder: String,
    original: String,
    restorable: bool,
}

/// Placeholder ↔ original for one request (one per request, shared by its request scan and its
/// answer or stream).
#[derive(Debug, Default)]
pub struct Vault {
    by_value: HashMap<String, usize>,
    by_placeholder: HashMap<String, usize>,
    entries: Vec<Entry>,
    /// Per placeholder type, the last number given.
    counters: Vec<(String, u32)>,
    bytes: usize,
    restorable: usize,
}

impl Vault {
    pub fn new() -> Vault {
        Vault::default()
    }

    /// How many distinct values are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether some placeholder can be restored (else restoring is a no-op and can be skipped).
    pub fn has_restorable(&self) -> bool {
        self.restorable > 0
    }

    /// The original behind a restorable placeholder (`<EMAIL_1>`).
    pub fn original(&self, placeholder: &str) -> Option<&str> {
        let e = &self.entries[*self.by_placeholder.get(placeholder)?];
        e.restorable.then_some(e.original.as_str())
    }

    /// Whether `value` was masked by a restoring guardrail (an answer echoing it keeps it).
    pub(crate) fn is_restorable_value(&self, value: &str) -> bool {
        self.restorable > 0
            && self
                .by_value
                .get(value)
                .is_some_and(|&i| self.entries[i].restorable)
    }

    /// Appends the placeholder of `value` (typed `tag`) to `out`, giving it a new number the first
    /// time.
    pub(crate) fn mask_into(&mut self, tag: &str, value: &str, restorable: bool, out: &mut String) {
        if let Some(&i) = self.by_value.get(value) {
            let e = &mut self.entries[i];
            if restorable && !e.restorable {
                e.restorable = true;
                self.restorable += 1;
            }
            out.push_str(&e.placeholder);
            return;
        }
        let n = match self.counters.iter_mut().find(|(t, _)| t == tag) {
            Some((_, n)) => {
                *n = n.saturating_add(1);
                *n
            }
            None => {
                self.counters.push((tag.to_string(), 1));
                1
            }
        };
        let placeholder = format!("<{tag}_{n}>");
        out.push_str(&placeholder);
        if self.entries.len() >= MAX_ENTRIES || self.bytes + value.len() > MAX_BYTES {
            return;
        }
        let i = self.entries.len();
        self.bytes += value.len();
        self.by_value.insert(value.to_string(), i);
        self.by_placeholder.insert(placeholder.clone(), i);
        self.restorable += usize::from(restorable);
        self.entries.push(Entry {
            placeholder,
            original: value.to_string(),
            restorable,
        });
    }

    /// `text` with every restorable placeholder replaced by its original.
    pub fn restore(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        self.restore_into(text, &mut out);
        out
    }

    /// Appends `text` to `out` with every restorable placeholder replaced by its original;
    /// returns how many were replaced.
    pub fn restore_into(&self, text: &str, out: &mut String) -> usize {
        if self.restorable == 0 {
            out.push_str(text);
            return 0;
        }
        let b = text.as_bytes();
        let mut pos = 0;
        let mut replaced = 0;
        for lt in memchr_iter(b'<', b) {
            if lt < pos {
                continue;
            }
            let Some(len) = placeholder_len(&b[lt..]) else {
                continue;
            };
            if let Some(orig) = self.original(&text[lt..lt + len]) {
                out.push_str(&text[pos..lt]);
                out.push_str(orig);
                pos = lt + len;
                replaced += 1;
            }
        }
        out.push_str(&text[pos..]);
        replaced
    }
}

fn is_tag(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_'
}

/// The length of the placeholder-shaped `<[A-Z0-9_]+>` at the start of `b`.
fn placeholder_len(b: &[u8]) -> Option<usize> {
    let body = b
        .get(1..)?
        .iter()
        .take(MAX_PLACEHOLDER)
        .take_while(|&&c| is_tag(c))
        .count();
    (body > 2 && b.get(1 + body) == Some(&b'>')).then_some(body + 2)
}

/// The start of a trailing `<[A-Z0-9_]*` that may still become a placeholder, if any.
fn partial_tail(b: &[u8]) -> Option<usize> {
    let from = b.len().saturating_sub(MAX_PLACEHOLDER);
    let lt = memchr::memrchr(b'<', &b[from..])? + from;
    b[lt + 1..].iter().all(|&c| is_tag(c)).then_some(lt)
}

/// Restores placeholders in a stream of text deltas, holding back a trailing `<...` (at most
/// [`MAX_PLACEHOLDER`] bytes) until it is known whether it is a placeholder. One per output
/// channel (choice, content block).
#[derive(Debug, Default)]
pub struct RestoreStream {
    held: String,
}

impl RestoreStream {
    pub fn new() -> RestoreStream {
        RestoreStream::default()
    }

    /// Feeds a delta; appends to `out` the restored text that is safe to emit now.
    pub fn push(&mut self, vault: &Vault, delta: &str, out: &mut String) {
        if !vault.has_restorable() && self.held.is_empty() {
            out.push_str(delta);
            return;
        }
        self.held.push_str(delta);
        let cut = partial_tail(self.held.as_bytes()).unwrap_or(self.held.len());
        vault.restore_into(&self.held[..cut], out);
        self.held.drain(..cut);
    }

    /// End of the stream: appends what was held back.
    pub fn finish(&mut self, vault: &Vault, out: &mut String) {
        vault.restore_into(&self.held, out);
        self.held.clear();
    }

    /// Bytes currently held back.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}
