//! The streaming scanner: guardrails over an answer that arrives as text deltas.
//!
//! A match may be cut across deltas, so a [`StreamGuard`] holds back the last `W` bytes (the
//! guard's window, [`Guard::window`]) and emits only text that no future delta can turn into
//! (part of) a match. It also holds back a trailing run of token characters (a secret, an
//! e-mail or a JWT still being written, up to [`MAX_HOLD`] bytes) and a match crossing the emit
//! point, so that what it emits equals the whole-text scan of the same answer. Masked values
//! become placeholders; placeholders the model echoes are restored ([`RestoreStream`]). On a
//! block rule the guard reports the hit and emits nothing more; the caller ends the stream.
//!
//! Each push that emits rescans the held bytes (≤ 2·W + [`STEP`] normally): linear in the answer,
//! with a constant factor of about (2·W + STEP)/STEP.

use super::detect::MAX_JWT;
use super::vault::RestoreStream;
use super::{Guard, Hit, Scan, Span, Vault};

/// Bytes beyond the window gathered before a rescan (amortizes rescans of tiny deltas).
pub const STEP: usize = 32;
/// A trailing token run is held whole up to this many bytes (the longest secret, a JWT).
pub const MAX_HOLD: usize = MAX_JWT;
/// Past this many unemitted bytes, holds are ignored: text is emitted up to the window.
pub const HARD_CAP: usize = 16 * 1024;

/// The guardrails over one streamed output channel (a choice, a content block): feed it deltas,
/// emit what it gives back.
#[derive(Debug, Default)]
pub struct StreamGuard {
    /// Text not yet emitted, after `ctx` bytes already emitted kept as left context.
    buf: String,
    ctx: usize,
    blocked: Option<Hit>,
    scan: Scan,
    restore: RestoreStream,
    spans: Vec<Span>,
    tmp: String,
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn holds(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'+' | b'/' | b'-' | b'.' | b'@' | b'%' | b'=')
}

impl StreamGuard {
    pub fn new() -> StreamGuard {
        StreamGuard::default()
    }

    /// Feeds a delta; appends to `out` the text safe to emit now (masked and restored). `Err`
    /// once a block rule matched (then and on every later call).
    pub fn push(
        &mut self,
        guard: &Guard,
        delta: &str,
        vault: &mut Vault,
        out: &mut String,
    ) -> Result<(), Hit> {
        if let Some(h) = &self.blocked {
            return Err(h.clone());
        }
        if guard.is_empty() {
            self.restore.push(vault, delta, out);
            return Ok(());
        }
        self.buf.push_str(delta);
        if self.buf.len() - self.ctx < guard.window() + STEP {
            return Ok(());
        }
        self.process(guard, vault, out, false)
    }

    /// End of the stream: scans and emits everything held back.
    pub fn finish(
        &mut self,
        guard: &Guard,
        vault: &mut Vault,
        out: &mut String,
    ) -> Result<(), Hit> {
        if let Some(h) = &self.blocked {
            return Err(h.clone());
        }
        if !guard.is_empty() {
            self.process(guard, vault, out, true)?;
        }
        self.buf.clear();
        self.ctx = 0;
        self.restore.finish(vault, out);
        Ok(())
    }

    /// The hits so far.
    pub fn scan(&self) -> &Scan {
        &self.scan
    }

    /// Bytes received and not yet emitted.
    pub fn held(&self) -> usize {
        self.buf.len() - self.ctx + self.restore.held()
    }

    fn process(
        &mut self,
        guard: &Guard,
        vault: &mut Vault,
        out: &mut String,
        last: bool,
    ) -> Result<(), Hit> {
        let mut spans = std::mem::take(&mut self.spans);
        spans.clear();
        guard.find(&self.buf, &mut spans);
        let (len, ctx) = (self.buf.len(), self.ctx);
        let w = guard.window();
        let mut limit = len;
        if !last {
            limit = floor_boundary(&self.buf, len.saturating_sub(w));
            if len - ctx <= HARD_CAP {
                // A token still being written is held whole.
                let b = self.buf.as_bytes();
                let run = b
                    .iter()
                    .rev()
                    .take(MAX_HOLD + 1)
                    .take_while(|&&c| holds(c))
                    .count();
                if run <= MAX_HOLD && len - run < limit {
                    limit = len - run;
                }
                // So is a match crossing the emit point (spans do not overlap: one at most).
                if let Some(s) = spans.iter().find(|s| s.start < limit && s.end > limit) {
                    limit = s.start;
                }
            }
            limit = limit.max(ctx);
        }
        if limit > ctx || last {
            let mut scan = Scan::default();
            self.tmp.clear();
            guard.apply(
                &self.buf,
                &spans,
                ctx,
                limit,
                true,
                vault,
                &mut self.tmp,
                &mut scan,
            );
            let blocked = scan.blocked.clone();
            self.scan.merge(scan);
            if let Some(h) = blocked {
                self.blocked = Some(h.clone());
                self.spans = spans;
                return Err(h);
            }
            self.restore.push(vault, &self.tmp, out);
            let keep = floor_boundary(&self.buf, limit.saturating_sub(w));
            self.buf.drain(..keep);
            self.ctx = limit - keep;
        }
        self.spans = spans;
        Ok(())
    }
}
