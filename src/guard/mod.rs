//! Guardrails (issue 18): local detectors of sensitive text (PII, secrets, custom patterns,
//! deny-listed phrases) and what to do on a match — block the request, mask the value with a
//! typed placeholder (restorable in the answer), or only report it.
//!
//! This module is the pure core: no proxy-wasm call, no I/O. The request pipeline calls
//! [`scan_request`] on a client body, [`scan_answer`] on a whole answer and a [`StreamGuard`] per
//! streamed output channel; a [`Vault`] per request carries the placeholders from the request to
//! the answer. A [`Policy`] is parsed and compiled once from the config ([`Policy::parse`]); its
//! [`Guard`]s (one per direction) hold the rules. docs/guardrails.md describes the detectors, the
//! actions, the stream window and the costs.
//!
//! - [`detect`]: the built-in detectors (hand-written linear scans).
//! - [`vault`]: placeholders, restore, restore over a stream.
//! - [`stream`]: the streaming scanner.
//! - [`json`]: the walks over the client APIs' request and answer bodies.
//! - [`select`]: the configured guardrails and which apply to a request.
//! - [`sse`]: the guardrails over a client's stream (OpenAI chunks, Anthropic events).

pub mod detect;
pub mod json;
mod phrase;
mod policy;
pub mod remote;
pub mod select;
pub mod sse;
pub mod stream;
pub mod vault;

#[cfg(test)]
mod tests;

pub use detect::Detector;
pub use json::{scan_answer, scan_request, AnsApi, Outcome, ReqApi};
pub use policy::{Policy, DEFAULT_STREAM_WINDOW};
pub use stream::StreamGuard;
pub use vault::{RestoreStream, Vault};

/// What a rule does on a match. Ordered by strength: when rules of several actions match the
/// same text, the strongest wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Report only.
    Monitor,
    /// Replace the match with a typed placeholder (`<EMAIL_1>`).
    Mask,
    /// Refuse the request (or end the answer).
    Block,
}

impl Action {
    /// The stable name (config `action`, metrics label).
    pub fn name(self) -> &'static str {
        match self {
            Action::Monitor => "monitor",
            Action::Mask => "mask",
            Action::Block => "block",
        }
    }

    pub fn from_name(name: &str) -> Option<Action> {
        [Action::Monitor, Action::Mask, Action::Block]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

/// One compiled rule of a [`Guard`].
#[derive(Debug, Clone)]
pub struct Rule {
    /// The guardrail's name.
    pub guardrail: String,
    /// The rule's name (the detector's name unless the config names it).
    pub name: String,
    pub detector: Detector,
    pub action: Action,
    /// The guardrail restores masked values in the answer.
    pub restore: bool,
    /// Placeholder type (`EMAIL`, or the custom rule's name in upper case).
    pub(crate) tag: String,
}

/// A rule that matched: which, and how often. Never the matched text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub guardrail: String,
    pub rule: String,
    pub detector: Detector,
    pub action: Action,
    pub count: u32,
}

impl Hit {
    fn of(rule: &Rule) -> Hit {
        Hit {
            guardrail: rule.guardrail.clone(),
            rule: rule.name.clone(),
            detector: rule.detector,
            action: rule.action,
            count: 1,
        }
    }
}

/// The result of scanning text: the first blocking hit, whether something was masked, and the
/// hits per rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub blocked: Option<Hit>,
    pub masked: bool,
    pub hits: Vec<Hit>,
}

impl Scan {
    fn count(&mut self, rule: &Rule) {
        match self
            .hits
            .iter_mut()
            .find(|h| h.rule == rule.name && h.guardrail == rule.guardrail)
        {
            Some(h) => h.count = h.count.saturating_add(1),
            None => self.hits.push(Hit::of(rule)),
        }
    }

    /// Adds another scan's hits to this one (the first block stays).
    pub fn merge(&mut self, other: Scan) {
        if self.blocked.is_none() {
            self.blocked = other.blocked;
        }
        self.masked |= other.masked;
        for h in other.hits {
            match self
                .hits
                .iter_mut()
                .find(|x| x.rule == h.rule && x.guardrail == h.guardrail)
            {
                Some(x) => x.count = x.count.saturating_add(h.count),
                None => self.hits.push(h),
            }
        }
    }

    /// Nothing matched.
    pub fn is_clean(&self) -> bool {
        self.hits.is_empty()
    }
}

/// A resolved match: bytes `[start, end)` of the scanned text, by rule `rule` of the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
    pub rule: u16,
}

/// The custom regular expressions of a guard, compiled once: one `RegexSet` pass says which
/// patterns occur; only those are then run for their positions. (Phrase rules are matched in the
/// detectors' pass, [`phrase`].)
#[derive(Debug)]
pub(crate) struct Custom {
    /// `None` when there is a single pattern (its own search is the one pass).
    pub set: Option<regex::bytes::RegexSet>,
    pub res: Vec<(regex::bytes::Regex, u16)>,
}

impl Custom {
    fn find(&self, text: &str, out: &mut Vec<Span>) {
        let b = text.as_bytes();
        let mut run = |re: &regex::bytes::Regex, rule: u16| {
            for m in re.find_iter(b) {
                if m.start() == m.end() {
                    continue;
                }
                // Patterns are byte-oriented: widen a match to whole characters.
                let (mut s, mut e) = (m.start(), m.end());
                while !text.is_char_boundary(s) {
                    s -= 1;
                }
                while !text.is_char_boundary(e) {
                    e += 1;
                }
                out.push(Span {
                    start: s,
                    end: e,
                    rule,
                });
            }
        };
        match &self.set {
            None => {
                for (re, rule) in &self.res {
                    run(re, *rule);
                }
            }
            Some(set) => {
                for i in set.matches(b).iter() {
                    if let Some((re, rule)) = self.res.get(i) {
                        run(re, *rule);
                    }
                }
            }
        }
    }
}

/// The rules of one direction (request or response), from every guardrail that applies to it.
#[derive(Debug, Default)]
pub struct Guard {
    rules: Vec<Rule>,
    /// Bit i: built-in detector `detect::BUILTIN[i]` is used by some rule.
    mask: u16,
    /// Where the built-in detectors and the phrases start (from `mask` and `phrases`).
    triggers: detect::Triggers,
    /// Per built-in detector, the rules using it.
    by_det: [Vec<u16>; 7],
    /// The phrase rules (their tries and rule indices).
    phrases: Vec<(phrase::Phrases, u16)>,
    custom: Option<Custom>,
    /// The response direction: a masked value the vault will restore is left as is.
    response: bool,
    /// Stream hold-back window (bytes).
    window: usize,
}

impl Guard {
    /// No rule: scanning is a no-op.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The stream hold-back window in bytes (docs/guardrails.md "Streaming").
    pub fn window(&self) -> usize {
        self.window
    }

    /// Scans `text`. If the scan masked something (`Scan::masked`), the masked text was appended
    /// to `out`; otherwise nothing was (the caller keeps `text`). On a block nothing is appended.
    pub fn scan_text(&self, text: &str, vault: &mut Vault, out: &mut String) -> Scan {
        let mut scan = Scan::default();
        if self.rules.is_empty() || text.is_empty() {
            return scan;
        }
        let mut spans = Vec::new();
        self.find(text, &mut spans);
        if !spans.is_empty() {
            self.apply(text, &spans, 0, text.len(), false, vault, out, &mut scan);
        }
        scan
    }

    /// Every match in `text`, overlaps resolved: leftmost first, then longest; matches of
    /// several rules on the very same bytes are all kept (their strongest action applies).
    pub(crate) fn find(&self, text: &str, spans: &mut Vec<Span>) {
        if self.mask != 0 || !self.phrases.is_empty() {
            let mut found = Vec::new();
            detect::scan(text.as_bytes(), &self.triggers, &self.phrases, &mut found);
            for f in found {
                if f.det == Detector::Phrase {
                    spans.push(Span {
                        start: f.start,
                        end: f.end,
                        rule: f.rule,
                    });
                } else if let Some(i) = f.det.builtin_index() {
                    for &rule in &self.by_det[i] {
                        spans.push(Span {
                            start: f.start,
                            end: f.end,
                            rule,
                        });
                    }
                }
            }
        }
        if let Some(c) = &self.custom {
            c.find(text, spans);
        }
        spans.sort_unstable_by(|a, b| {
            a.start
                .cmp(&b.start)
                .then(b.end.cmp(&a.end))
                .then(a.rule.cmp(&b.rule))
        });
        let mut last: Option<(usize, usize)> = None;
        spans.retain(|s| match last {
            Some(l) if l == (s.start, s.end) => true,
            Some((_, le)) if s.start < le => false,
            _ => {
                last = Some((s.start, s.end));
                true
            }
        });
    }

    /// The rule whose action applies to the group of spans on the same bytes.
    fn group_rule(&self, group: &[Span]) -> &Rule {
        let mut best = &self.rules[usize::from(group[0].rule)];
        for s in &group[1..] {
            let r = &self.rules[usize::from(s.rule)];
            if r.action > best.action {
                best = r;
            }
        }
        best
    }

    /// A masked value stays as is: in an answer, a value the vault will restore anyway.
    fn keeps(&self, vault: &Vault, value: &str) -> bool {
        self.response && vault.is_restorable_value(value)
    }

    /// Applies the spans ending in `(from, to]`: counts hits, sets the block, and — unless
    /// blocked — appends `text[from..to]` with masks to `out` when something is masked or
    /// `always` (the stream). A span starting before `from` (already emitted) masks only its part
    /// from `from`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn apply(
        &self,
        text: &str,
        spans: &[Span],
        from: usize,
        to: usize,
        always: bool,
        vault: &mut Vault,
        out: &mut String,
        scan: &mut Scan,
    ) {
        let mut any_mask = false;
        for group in groups(spans) {
            let (s, e) = (group[0].start, group[0].end);
            if e <= from || e > to {
                continue;
            }
            for sp in group {
                scan.count(&self.rules[usize::from(sp.rule)]);
            }
            let rule = self.group_rule(group);
            match rule.action {
                Action::Block => {
                    if scan.blocked.is_none() {
                        scan.blocked = Some(Hit::of(rule));
                    }
                }
                Action::Mask => any_mask |= !self.keeps(vault, &text[s..e]),
                Action::Monitor => {}
            }
        }
        if scan.blocked.is_some() || !(any_mask || always) {
            return;
        }
        scan.masked |= any_mask;
        let mut pos = from;
        for group in groups(spans) {
            let (s, e) = (group[0].start, group[0].end);
            if e <= from || e > to {
                continue;
            }
            let rule = self.group_rule(group);
            if rule.action != Action::Mask || self.keeps(vault, &text[s..e]) {
                continue;
            }
            out.push_str(&text[pos..s.max(from)]);
            vault.mask_into(&rule.tag, &text[s..e], rule.restore && !self.response, out);
            pos = e;
        }
        out.push_str(&text[pos..to]);
    }
}

/// Consecutive spans on the same bytes.
fn groups(spans: &[Span]) -> impl Iterator<Item = &[Span]> {
    spans.chunk_by(|a, b| a.start == b.start && a.end == b.end)
}
