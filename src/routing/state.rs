//! Per-deployment health and load, shared by every worker VM through Envoy shared data.
//!
//! Each deployment has one small binary record (in-flight count, latency EWMAs, usage of the
//! current minute, failures in the current window, cooldown). Updates are read-modify-write
//! with compare-and-swap, retried on conflict, so concurrent workers never lose an update.
//! The store is a trait: the Wasm glue backs it with `proxy_get/set_shared_data`, tests with
//! [`MemStore`].

use std::cell::RefCell;
use std::collections::HashMap;

use super::config::CooldownPolicy;

/// Key-value storage with compare-and-swap (Envoy shared data).
pub trait StateStore {
    /// The value and its CAS token, `None` when the key was never written.
    fn load(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes `value` if the key's CAS token is still `cas` (`0`: whatever it is).
    /// `Err(true)` on a CAS conflict (retry), `Err(false)` on another failure.
    fn store(&self, key: &str, value: &[u8], cas: u32) -> Result<(), bool>;
}

/// What LLMux tracks per deployment (all workers together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeploymentState {
    /// Requests sent and not yet answered.
    pub in_flight: u32,
    /// EWMA of the whole-answer latency of non-streamed successes, µs (0: no sample yet).
    pub latency_us: u32,
    /// EWMA of the time to first byte of streamed successes, µs (0: no sample yet).
    pub ttft_us: u32,
    /// Unix minute the usage counters below belong to.
    pub minute: u32,
    pub rpm: u32,
    pub tpm: u32,
    /// Start (unix s) of the failure-counting window.
    pub window_start: u32,
    pub fails: u32,
    pub successes: u32,
    /// Cooled down until this unix time in ms (0: healthy).
    pub cooldown_until_ms: u64,
    /// Status (or 0 for connect/timeout) of the last failure.
    pub last_error: u16,
    /// Cooldowns entered since start.
    pub cooldowns: u32,
}

const ENCODED_LEN: usize = 4 * 10 + 8 + 2 + 4;

impl DeploymentState {
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        for v in [
            self.in_flight,
            self.latency_us,
            self.ttft_us,
            self.minute,
            self.rpm,
            self.tpm,
            self.window_start,
            self.fails,
            self.successes,
            self.cooldowns,
        ] {
            put(&v.to_le_bytes());
        }
        put(&self.cooldown_until_ms.to_le_bytes());
        put(&self.last_error.to_le_bytes());
        put(&[0u8; 4]);
        out
    }

    /// Anything that is not a record of ours reads as a fresh state (never a panic).
    pub fn decode(bytes: &[u8]) -> Self {
        if bytes.len() != ENCODED_LEN {
            return Self::default();
        }
        let u32_at = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[i * 4..i * 4 + 4]);
            u32::from_le_bytes(b)
        };
        let mut c = [0u8; 8];
        c.copy_from_slice(&bytes[40..48]);
        DeploymentState {
            in_flight: u32_at(0),
            latency_us: u32_at(1),
            ttft_us: u32_at(2),
            minute: u32_at(3),
            rpm: u32_at(4),
            tpm: u32_at(5),
            window_start: u32_at(6),
            fails: u32_at(7),
            successes: u32_at(8),
            cooldowns: u32_at(9),
            cooldown_until_ms: u64::from_le_bytes(c),
            last_error: u16::from_le_bytes([bytes[48], bytes[49]]),
        }
    }

    pub fn cooling(&self, now_ms: u64) -> bool {
        self.cooldown_until_ms > now_ms
    }

    /// Requests and tokens of the current minute (0 once the minute has passed).
    pub fn usage_now(&self, now_ms: u64) -> (u32, u32) {
        if u64::from(self.minute) == now_ms / 60_000 {
            (self.rpm, self.tpm)
        } else {
            (0, 0)
        }
    }

    fn roll_minute(&mut self, now_ms: u64) {
        let minute = (now_ms / 60_000) as u32;
        if self.minute != minute {
            self.minute = minute;
            self.rpm = 0;
            self.tpm = 0;
        }
    }

    fn roll_window(&mut self, now_ms: u64, window_ms: u64) {
        let now_s = (now_ms / 1000) as u32;
        if u64::from(now_s.saturating_sub(self.window_start)) * 1000 >= window_ms {
            self.window_start = now_s;
            self.fails = 0;
            self.successes = 0;
        }
    }

    /// An attempt is sent to this deployment.
    pub fn on_start(&mut self, now_ms: u64) {
        self.roll_minute(now_ms);
        self.in_flight = self.in_flight.saturating_add(1);
        self.rpm = self.rpm.saturating_add(1);
    }

    /// The attempt is over (whatever its outcome).
    pub fn on_end(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    pub fn on_tokens(&mut self, now_ms: u64, tokens: u32) {
        self.roll_minute(now_ms);
        self.tpm = self.tpm.saturating_add(tokens);
    }

    /// A success, with its latency (whole answer, or first byte when `streamed`).
    pub fn on_success(&mut self, now_ms: u64, window_ms: u64, latency_us: u32, streamed: bool) {
        self.roll_window(now_ms, window_ms);
        self.successes = self.successes.saturating_add(1);
        let slot = if streamed {
            &mut self.ttft_us
        } else {
            &mut self.latency_us
        };
        // EWMA with α = 1/4: reacts within a few requests, smooths single outliers.
        *slot = if *slot == 0 {
            latency_us.max(1)
        } else {
            ((u64::from(*slot) * 3 + u64::from(latency_us)) / 4).max(1) as u32
        };
    }

    /// A failure; `immediate` puts the deployment in cooldown at once (429, 401, 404, 408),
    /// otherwise it cools down once its failures in the window exceed `allowed_fails`.
    /// Returns whether a cooldown started.
    pub fn on_failure(
        &mut self,
        now_ms: u64,
        policy: &CooldownPolicy,
        status: u16,
        immediate: bool,
    ) -> bool {
        self.roll_window(now_ms, policy.window_ms);
        self.fails = self.fails.saturating_add(1);
        self.last_error = status;
        // In u64: counters near u32::MAX (a record from shared data) never overflow.
        let (fails, total) = (
            u64::from(self.fails),
            u64::from(self.fails) + u64::from(self.successes),
        );
        let over = self.fails > policy.allowed_fails
            // Mostly failing with enough traffic to tell (LiteLLM cools at > 50 % failures).
            || (total >= u64::from(policy.min_requests_for_rate) && fails * 2 > total);
        if (immediate || over) && !self.cooling(now_ms) {
            self.cooldown_until_ms = now_ms.saturating_add(policy.cooldown_ms);
            self.cooldowns = self.cooldowns.saturating_add(1);
            self.fails = 0;
            self.successes = 0;
            self.window_start = (now_ms / 1000) as u32;
            return true;
        }
        false
    }
}

/// Shared-data key of a deployment's record.
pub fn state_key(state_name: &str) -> String {
    format!("llmux.d.{state_name}")
}

pub fn load(store: &dyn StateStore, key: &str) -> DeploymentState {
    store
        .load(key)
        .map(|(v, _)| DeploymentState::decode(&v))
        .unwrap_or_default()
}

/// Read-modify-write with CAS; gives up (and logs nothing: the caller may) after a few
/// conflicts, which only happens under a storm of updates to one deployment.
pub fn update<R>(
    store: &dyn StateStore,
    key: &str,
    mut f: impl FnMut(&mut DeploymentState) -> R,
) -> Option<R> {
    for _ in 0..16 {
        let (mut s, cas) = match store.load(key) {
            Some((v, cas)) => (DeploymentState::decode(&v), cas),
            None => (DeploymentState::default(), 0),
        };
        let r = f(&mut s);
        match store.store(key, &s.encode(), cas) {
            Ok(()) => return Some(r),
            Err(true) => continue,
            Err(false) => return None,
        }
    }
    None
}

/// A counter (round-robin position) in the store, incremented with CAS.
pub fn next_counter(store: &dyn StateStore, key: &str) -> u32 {
    for _ in 0..16 {
        let (n, cas) = match store.load(key) {
            Some((v, cas)) if v.len() == 4 => (u32::from_le_bytes([v[0], v[1], v[2], v[3]]), cas),
            Some((_, cas)) => (0, cas),
            None => (0, 0),
        };
        match store.store(key, &n.wrapping_add(1).to_le_bytes(), cas) {
            Ok(()) => return n,
            Err(true) => continue,
            Err(false) => return n,
        }
    }
    0
}

/// In-memory [`StateStore`] with Envoy's CAS semantics, for tests and benchmarks.
#[derive(Default)]
pub struct MemStore {
    map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
}

impl StateStore for MemStore {
    fn load(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.map.borrow().get(key).cloned()
    }

    fn store(&self, key: &str, value: &[u8], cas: u32) -> Result<(), bool> {
        let mut m = self.map.borrow_mut();
        let current = m.get(key).map(|(_, c)| *c);
        if cas != 0 && current.is_some_and(|c| c != cas) {
            return Err(true);
        }
        let next = current.unwrap_or(0).wrapping_add(1).max(1);
        m.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_and_garbage_is_fresh() {
        let s = DeploymentState {
            in_flight: 3,
            latency_us: 1234,
            ttft_us: 99,
            minute: 29_000_000,
            rpm: 7,
            tpm: 4000,
            window_start: 1_700_000_000,
            fails: 2,
            successes: 5,
            cooldown_until_ms: 1_700_000_000_123,
            last_error: 429,
            cooldowns: 4,
        };
        assert_eq!(DeploymentState::decode(&s.encode()), s);
        assert_eq!(DeploymentState::decode(b"junk"), DeploymentState::default());
    }

    #[test]
    fn cooldown_after_allowed_fails_and_immediately_on_request() {
        let p = CooldownPolicy::default();
        let mut s = DeploymentState::default();
        let t = 1_000_000_000;
        for i in 0..3 {
            assert!(!s.on_failure(t + i, &p, 500, false));
        }
        assert!(
            s.on_failure(t + 3, &p, 500, false),
            "4th failure > allowed_fails=3"
        );
        assert!(s.cooling(t + 4));
        assert!(!s.cooling(t + 3 + p.cooldown_ms));
        let mut s = DeploymentState::default();
        assert!(s.on_failure(t, &p, 429, true));
        assert_eq!(s.cooldown_until_ms, t + p.cooldown_ms);
        assert_eq!(s.cooldowns, 1);
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let p = CooldownPolicy::default();
        let mut s = DeploymentState::default();
        let t = 1_000_000_000;
        for i in 0..3 {
            s.on_failure(t + i, &p, 500, false);
        }
        assert!(!s.on_failure(t + p.window_ms + 1000, &p, 500, false));
        assert_eq!(s.fails, 1);
    }

    #[test]
    fn mostly_failing_cools_down() {
        let p = CooldownPolicy {
            allowed_fails: 100,
            ..Default::default()
        };
        let mut s = DeploymentState::default();
        let t = 1_000_000_000;
        for _ in 0..4 {
            s.on_success(t, p.window_ms, 1000, false);
        }
        let mut cooled = false;
        for _ in 0..6 {
            cooled |= s.on_failure(t, &p, 503, false);
        }
        assert!(cooled);
    }

    #[test]
    fn ewma_and_minute_usage() {
        let mut s = DeploymentState::default();
        let t = 60_000 * 1000;
        s.on_success(t, 60_000, 1000, false);
        assert_eq!(s.latency_us, 1000);
        s.on_success(t, 60_000, 2000, false);
        assert_eq!(s.latency_us, 1250);
        s.on_start(t);
        s.on_tokens(t, 50);
        assert_eq!(s.usage_now(t), (1, 50));
        assert_eq!(s.usage_now(t + 60_000), (0, 0));
        s.on_end();
        s.on_end();
        assert_eq!(s.in_flight, 0, "never below zero");
    }

    #[test]
    fn cas_update_and_counter() {
        let store = MemStore::default();
        update(&store, "k", |s| s.on_start(0));
        update(&store, "k", |s| s.on_start(0));
        assert_eq!(load(&store, "k").in_flight, 2);
        assert_eq!(next_counter(&store, "rr"), 0);
        assert_eq!(next_counter(&store, "rr"), 1);
        // A stale CAS token is refused.
        let (_, cas) = store.load("k").unwrap();
        store.store("k", b"x", cas).unwrap();
        assert_eq!(store.store("k", b"y", cas), Err(true));
    }
}
