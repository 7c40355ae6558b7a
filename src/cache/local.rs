//! The per-Envoy exact store, in Envoy's shared data (one copy for all of a VM's workers).
//!
//! Shared data has no deletion, no TTL and no size limit of its own, so the store brings its
//! own: a fixed set of `slots = max_bytes / max_entry_bytes` keys, each holding at most one entry
//! of at most `max_entry_bytes`. The byte budget therefore holds whatever is stored (the keys
//! never grow in number, an entry never outgrows its slot). An entry may live in one of two
//! slots picked by its digest (two-choice hashing): a store takes the slot that holds the same
//! digest, else an empty or expired one, else evicts the older of the two. A lookup reads at
//! most two slots (two host calls); a store reads two and writes one, with the CAS token read,
//! so two workers storing at once never interleave an entry (the loser skips its store).

use crate::routing::state::StateStore;

use super::key::CacheApi;

const MAGIC: &[u8; 4] = b"LXC1";
/// magic, digest, expires, stored, prompt tokens, completion tokens, cost, api.
pub const HEADER_BYTES: usize = 4 + 32 + 8 + 8 + 8 + 8 + 8 + 1;
const NO_COST: u64 = u64::MAX;

/// One cached answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub digest: [u8; 32],
    pub expires_unix: u64,
    pub stored_unix: u64,
    /// The provider's usage when the answer was made (prompt, completion tokens).
    pub usage: (u64, u64),
    /// What the answer cost when it was made (nano-USD): what each hit saves.
    pub cost_nanousd: Option<u64>,
    pub api: CacheApi,
    /// The canonical answer ([`super::replay`]).
    pub body: Vec<u8>,
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_BYTES + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.digest);
        for n in [
            self.expires_unix,
            self.stored_unix,
            self.usage.0,
            self.usage.1,
            self.cost_nanousd.unwrap_or(NO_COST),
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.push(match self.api {
            CacheApi::Chat => 0,
            CacheApi::Messages => 1,
            CacheApi::Embeddings => 2,
        });
        out.extend_from_slice(&self.body);
        out
    }

    /// `None` for an empty slot or bytes that are not an entry.
    pub fn decode(b: &[u8]) -> Option<Entry> {
        if b.len() < HEADER_BYTES || &b[..4] != MAGIC {
            return None;
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&b[4..36]);
        let n = |i: usize| -> u64 {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[36 + 8 * i..44 + 8 * i]);
            u64::from_le_bytes(w)
        };
        let api = match b[76] {
            0 => CacheApi::Chat,
            1 => CacheApi::Messages,
            2 => CacheApi::Embeddings,
            _ => return None,
        };
        Some(Entry {
            digest,
            expires_unix: n(0),
            stored_unix: n(1),
            usage: (n(2), n(3)),
            cost_nanousd: Some(n(4)).filter(|&c| c != NO_COST),
            api,
            body: b[HEADER_BYTES..].to_vec(),
        })
    }
}

/// Reads only the digest and expiry of a stored entry (no copy of its body).
fn head(b: &[u8]) -> Option<([u8; 32], u64, u64)> {
    let e = b.get(..HEADER_BYTES)?;
    if &e[..4] != MAGIC {
        return None;
    }
    let mut d = [0u8; 32];
    d.copy_from_slice(&e[4..36]);
    let mut w = [0u8; 8];
    w.copy_from_slice(&e[36..44]);
    let expires = u64::from_le_bytes(w);
    w.copy_from_slice(&e[44..52]);
    Some((d, expires, u64::from_le_bytes(w)))
}

/// The per-Envoy store's geometry.
#[derive(Debug, Clone)]
pub struct LocalStore {
    prefix: String,
    slots: u64,
    pub max_entry_bytes: usize,
}

/// What a store did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Written; `evicted`: a live entry of another request was replaced.
    Written { evicted: bool },
    /// Larger than `max_entry_bytes`: not stored.
    TooLarge,
    /// Another worker wrote the slot meanwhile: not stored.
    Conflict,
    /// The host refused the write.
    Failed,
}

impl LocalStore {
    /// `namespace` keeps two configurations of one VM apart.
    pub fn new(namespace: &str, slots: u64, max_entry_bytes: u32) -> LocalStore {
        LocalStore {
            prefix: format!("llmux.cache.{namespace}."),
            slots: slots.max(1),
            max_entry_bytes: max_entry_bytes as usize,
        }
    }

    fn candidates(&self, digest: &[u8; 32]) -> [String; 2] {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&digest[..8]);
        b.copy_from_slice(&digest[8..16]);
        let a = u64::from_le_bytes(a) % self.slots;
        let mut b = u64::from_le_bytes(b) % self.slots;
        if b == a && self.slots > 1 {
            b = (a + 1) % self.slots;
        }
        [format!("{}{a}", self.prefix), format!("{}{b}", self.prefix)]
    }

    /// The live entry for `digest`, if one is stored.
    pub fn lookup(&self, s: &dyn StateStore, digest: &[u8; 32], now_unix: u64) -> Option<Entry> {
        let [a, b] = self.candidates(digest);
        for key in [a, b] {
            let Some((bytes, _)) = s.load(&key) else {
                continue;
            };
            match head(&bytes) {
                Some((d, expires, _)) if &d == digest && expires > now_unix => {
                    return Entry::decode(&bytes);
                }
                _ => {}
            }
        }
        None
    }

    /// Stores `entry` in one of its two slots.
    pub fn store(&self, s: &dyn StateStore, entry: &Entry, now_unix: u64) -> Stored {
        let bytes = entry.encode();
        if bytes.len() > self.max_entry_bytes {
            return Stored::TooLarge;
        }
        let keys = self.candidates(&entry.digest);
        // (key, cas, what it holds): None empty or expired, Some(stored_at) live.
        let mut seen: Vec<(&String, u32, Option<u64>, bool)> = Vec::with_capacity(2);
        for key in &keys {
            let (cas, held) = match s.load(key) {
                Some((b, cas)) => (cas, head(&b)),
                None => (0, None),
            };
            let same = held.is_some_and(|(d, _, _)| d == entry.digest);
            let live = held
                .filter(|&(_, expires, _)| expires > now_unix)
                .map(|(_, _, stored)| stored);
            seen.push((key, cas, live, same));
        }
        let pick = seen
            .iter()
            .find(|s| s.3)
            .or_else(|| seen.iter().find(|s| s.2.is_none()))
            .or_else(|| seen.iter().min_by_key(|s| s.2));
        let Some(&(key, cas, live, same)) = pick else {
            return Stored::Failed;
        };
        // A never-written key has CAS 0 ("whatever it is"): another worker may write it first
        // and be overwritten; both wrote a whole entry, so either is a valid slot content.
        match s.store(key, &bytes, cas) {
            Ok(()) => Stored::Written {
                evicted: live.is_some() && !same,
            },
            Err(true) => Stored::Conflict,
            Err(false) => Stored::Failed,
        }
    }

    /// Bytes the store can hold at most (what the budget allows).
    pub fn capacity_bytes(&self) -> u64 {
        self.slots * self.max_entry_bytes as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Mem(RefCell<HashMap<String, (Vec<u8>, u32)>>);

    impl StateStore for Mem {
        fn load(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.0.borrow().get(key).cloned()
        }
        fn store(&self, key: &str, value: &[u8], cas: u32) -> Result<(), bool> {
            let mut m = self.0.borrow_mut();
            let cur = m.get(key).map_or(0, |v| v.1);
            if cas != 0 && cas != cur {
                return Err(true);
            }
            m.insert(key.to_string(), (value.to_vec(), cur + 1));
            Ok(())
        }
    }

    fn entry(n: u8, expires: u64, stored: u64, len: usize) -> Entry {
        let mut digest = [0u8; 32];
        digest[0] = n;
        digest[8] = n.wrapping_mul(7);
        digest[31] = n;
        Entry {
            digest,
            expires_unix: expires,
            stored_unix: stored,
            usage: (10, 20),
            cost_nanousd: Some(5),
            api: CacheApi::Chat,
            body: vec![b'x'; len],
        }
    }

    #[test]
    fn round_trip_and_garbage() {
        let e = entry(1, 100, 50, 10);
        assert_eq!(Entry::decode(&e.encode()), Some(e.clone()));
        let mut none = e.clone();
        none.cost_nanousd = None;
        assert_eq!(Entry::decode(&none.encode()), Some(none));
        assert_eq!(Entry::decode(b""), None);
        assert_eq!(Entry::decode(&[0u8; HEADER_BYTES]), None);
        let mut bad = e.encode();
        bad[76] = 9;
        assert_eq!(Entry::decode(&bad), None);
    }

    #[test]
    fn hit_miss_and_expiry() {
        let m = Mem::default();
        let s = LocalStore::new("ns", 16, 4096);
        let e = entry(1, 100, 50, 10);
        assert_eq!(s.store(&m, &e, 50), Stored::Written { evicted: false });
        assert_eq!(s.lookup(&m, &e.digest, 99), Some(e.clone()));
        assert_eq!(s.lookup(&m, &e.digest, 100), None, "expired at its expiry");
        assert_eq!(s.lookup(&m, &entry(2, 100, 50, 10).digest, 60), None);
    }

    #[test]
    fn too_large_is_not_stored() {
        let m = Mem::default();
        let s = LocalStore::new("ns", 4, 1024);
        let e = entry(1, 100, 50, 1024 - HEADER_BYTES + 1);
        assert_eq!(s.store(&m, &e, 50), Stored::TooLarge);
        assert!(m.0.borrow().is_empty());
    }

    #[test]
    fn the_budget_holds_and_the_older_entry_is_evicted() {
        let m = Mem::default();
        let s = LocalStore::new("ns", 4, 256);
        let mut evictions = 0;
        for n in 0..200u8 {
            let e = entry(n, 10_000, u64::from(n), 100);
            match s.store(&m, &e, u64::from(n)) {
                Stored::Written { evicted } => evictions += u32::from(evicted),
                other => panic!("{other:?}"),
            }
            // Just stored: found.
            assert!(s.lookup(&m, &e.digest, u64::from(n)).is_some());
            let total: usize = m.0.borrow().values().map(|v| v.0.len()).sum();
            assert!(total as u64 <= s.capacity_bytes());
            assert!(m.0.borrow().len() <= 4);
        }
        assert!(evictions >= 190, "{evictions}");
        // The first ones are gone.
        assert!(s.lookup(&m, &entry(0, 0, 0, 0).digest, 0).is_none());
    }

    #[test]
    fn a_restore_of_the_same_request_replaces_it_without_eviction() {
        let m = Mem::default();
        let s = LocalStore::new("ns", 1, 4096);
        assert_eq!(
            s.store(&m, &entry(1, 100, 1, 10), 1),
            Stored::Written { evicted: false }
        );
        assert_eq!(
            s.store(&m, &entry(1, 200, 2, 10), 2),
            Stored::Written { evicted: false }
        );
        assert_eq!(
            s.store(&m, &entry(2, 200, 3, 10), 3),
            Stored::Written { evicted: true }
        );
        // An expired entry's slot is free.
        assert_eq!(
            s.store(&m, &entry(3, 300, 250, 10), 250),
            Stored::Written { evicted: false }
        );
    }

    #[test]
    fn a_concurrent_write_makes_the_loser_skip() {
        struct Racing(Mem);
        impl StateStore for Racing {
            fn load(&self, key: &str) -> Option<(Vec<u8>, u32)> {
                self.0.load(key)
            }
            fn store(&self, key: &str, value: &[u8], _cas: u32) -> Result<(), bool> {
                // Someone else wrote between our read and our write.
                let _ = self.0.store(key, b"other", 0);
                self.0.store(key, value, 1)
            }
        }
        let m = Racing(Mem::default());
        let s = LocalStore::new("ns", 2, 4096);
        let _ = m.0.store("llmux.cache.ns.0", b"seed", 0);
        let _ = m.0.store("llmux.cache.ns.1", b"seed", 0);
        assert_eq!(s.store(&m, &entry(1, 100, 1, 10), 1), Stored::Conflict);
    }
}
