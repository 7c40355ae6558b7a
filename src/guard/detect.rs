//! The built-in detectors, as hand-written linear scans over the text's bytes.
//!
//! Why hand-written and not one big regex: each detector needs a check a regex cannot express
//! (Luhn, IBAN mod 97, SSN ranges, octets ≤ 255, Shannon entropy) and boundary rules that decide
//! what is *not* a match (a date, a version, a long plain number); doing it in code keeps one pass
//! over the text for every detector ([`scan`]): a table says which family of detectors a byte can
//! start (`@` for e-mail, a digit/`+`/`(` for numbers, a digit/upper-case/`_`/`-` inside a token
//! run for secrets and IBANs, `:` for IPv6, `-----BEGIN ` for PEM keys, a phrase's first byte for
//! the deny-listed phrases of [`super::phrase`]), and bytes that start nothing cost one lookup
//! (four at a time). No allocation per byte, no regex compilation, no regex-crate code in the
//! `.wasm` for them. Every scan is linear: each candidate reads at most a bounded number of bytes
//! (the longest match of its detector), and each family's cursor advances past what it read.
//!
//! Every match is ASCII-only, so its bounds are always `char` boundaries of the `&str` the bytes
//! come from. docs/guardrails.md states each rule and its known false positives.

use memchr::memmem;

/// A detector kind. [`Detector::name`] is the stable name used in the config, in metrics and in
/// error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Detector {
    Email,
    Phone,
    Card,
    Iban,
    Ssn,
    Ip,
    Secret,
    /// A custom regular expression from the config.
    Regex,
    /// Deny-listed phrases from the config.
    Phrase,
}

/// The built-in detectors, in the order of their bit in a detector mask.
pub(crate) const BUILTIN: [Detector; 7] = [
    Detector::Email,
    Detector::Phone,
    Detector::Card,
    Detector::Iban,
    Detector::Ssn,
    Detector::Ip,
    Detector::Secret,
];

impl Detector {
    /// The stable name (config `detector`, metrics label, error code part).
    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::Card => "card",
            Detector::Iban => "iban",
            Detector::Ssn => "ssn",
            Detector::Ip => "ip",
            Detector::Secret => "secret",
            Detector::Regex => "regex",
            Detector::Phrase => "phrase",
        }
    }

    /// The detector named `name` (exact, lower case).
    pub fn from_name(name: &str) -> Option<Detector> {
        BUILTIN
            .iter()
            .chain(&[Detector::Regex, Detector::Phrase])
            .copied()
            .find(|d| d.name() == name)
    }

    /// The index of a built-in detector in [`BUILTIN`] (its bit in a mask); `None` for the
    /// config-defined ones.
    pub(crate) fn builtin_index(self) -> Option<usize> {
        BUILTIN.iter().position(|d| *d == self)
    }

    /// The placeholder type of a built-in detector (`<EMAIL_1>`).
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Detector::Email => "EMAIL",
            Detector::Phone => "PHONE",
            Detector::Card => "CARD",
            Detector::Iban => "IBAN",
            Detector::Ssn => "SSN",
            Detector::Ip => "IP",
            Detector::Secret => "SECRET",
            Detector::Regex => "REGEX",
            Detector::Phrase => "PHRASE",
        }
    }
}

/// A detector's match: byte range `[start, end)` of the scanned text. `rule` is the phrase
/// rule's index for a [`Detector::Phrase`] match (0 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    pub start: usize,
    pub end: usize,
    pub det: Detector,
    pub rule: u16,
}

/// The longest secret token (a run of token characters) any secret rule accepts; longer runs are
/// data (a base64 blob), not a key. JWTs (three runs joined by dots) may reach [`MAX_JWT`].
pub(crate) const MAX_TOKEN: usize = 512;
pub(crate) const MAX_JWT: usize = 4096;
/// The high-entropy rule: minimum token length, minimum Shannon entropy (bits per character) and
/// minimum share (1/4) of class changes between adjacent letters/digits (an upper-to-lower
/// change, the start of a capitalized word, does not count).
pub(crate) const ENTROPY_MIN_LEN: usize = 32;
pub(crate) const ENTROPY_MIN_BITS: f64 = 3.5;

// Trigger bits: which family of detectors looks at a byte.
/// `@`: e-mail.
const T_AT: u8 = 1;
/// A digit, `+`, `(`: SSN, card, IPv4, phone.
const T_NUM: u8 = 2;
/// `:`: IPv6.
const T_COLON: u8 = 4;
/// A digit, an upper-case letter, `_`, `-`: a token run that may be a secret or an IBAN. Every
/// secret rule's token has one (a prefix with `-`/`_`/upper case, or the upper case and digit
/// the entropy rule requires; a JWT's `eyJ`) and an IBAN has its check digits, so a run without
/// one is never read.
const T_TOK: u8 = 8;
/// `-`: a PEM header (`-----BEGIN `).
const T_PEM: u8 = 16;
/// The first byte of a deny-listed phrase.
const T_PHRASE: u8 = 32;

/// The bytes each family of detectors starts from, for one set of rules (built once per
/// [`super::Guard`]): the text is read once, one table lookup per byte, and a detector runs only
/// where one of its bytes is.
#[derive(Debug, Clone)]
pub(crate) struct Triggers {
    table: [u8; 256],
    /// Bit i: built-in detector [`BUILTIN`]`[i]` is on.
    mask: u16,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers::new(0)
    }
}

impl Triggers {
    /// The triggers of the built-in detectors in `mask` (bit i = `BUILTIN[i]`).
    pub(crate) fn new(mask: u16) -> Triggers {
        let rules = Triggers {
            table: [0u8; 256],
            mask,
        };
        let on = |d: Detector| rules.on(d);
        let mut table = [0u8; 256];
        for c in 0..=255u8 {
            let mut t = 0;
            if c == b'@' && on(Detector::Email) {
                t |= T_AT;
            }
            if (c.is_ascii_digit() || c == b'+' || c == b'(')
                && (on(Detector::Phone)
                    || on(Detector::Card)
                    || on(Detector::Ssn)
                    || on(Detector::Ip))
            {
                t |= T_NUM;
            }
            if c == b':' && on(Detector::Ip) {
                t |= T_COLON;
            }
            if (c.is_ascii_digit() || c.is_ascii_uppercase() || c == b'_' || c == b'-')
                && (on(Detector::Secret) || on(Detector::Iban))
            {
                t |= T_TOK;
            }
            if c == b'-' && on(Detector::Secret) {
                t |= T_PEM;
            }
            table[usize::from(c)] = t;
        }
        Triggers { table, mask }
    }

    /// Phrases may start with byte `c`.
    pub(crate) fn add_phrase_start(&mut self, c: u8) {
        self.table[usize::from(c)] |= T_PHRASE;
    }

    fn on(&self, d: Detector) -> bool {
        d.builtin_index().is_some_and(|i| self.mask & (1 << i) != 0)
    }

    /// The first position at or after `i` with a trigger (`b.len()` if none): four bytes a step.
    #[inline]
    fn next(&self, b: &[u8], i: usize) -> usize {
        let t = &self.table;
        let rest = b.get(i..).unwrap_or_default();
        let mut k = 0;
        for w in rest.chunks_exact(4) {
            if t[usize::from(w[0])]
                | t[usize::from(w[1])]
                | t[usize::from(w[2])]
                | t[usize::from(w[3])]
                != 0
            {
                break;
            }
            k += 4;
        }
        while k < rest.len() && t[usize::from(rest[k])] == 0 {
            k += 1;
        }
        i + k
    }
}

/// Appends every match of the built-in detectors `t` is built for and of the phrase rules
/// `phrases` (each with its rule index) to `out`, in no particular order; overlaps between
/// detectors are resolved by the caller. One pass over the text: each family of detectors keeps
/// its own cursor (what it has read), exactly as if it had its own loop.
pub(crate) fn scan(
    b: &[u8],
    t: &Triggers,
    phrases: &[(super::phrase::Phrases, u16)],
    out: &mut Vec<Found>,
) {
    let nums = NumRules {
        ssn: t.on(Detector::Ssn),
        card: t.on(Detector::Card),
        ip: t.on(Detector::Ip),
        phone: t.on(Detector::Phone),
    };
    let (secret, iban) = (t.on(Detector::Secret), t.on(Detector::Iban));
    // Cursors: the first position each family has not read yet.
    let (mut at, mut num, mut colon, mut tok) = (0, 0, 0, 0);
    let mut said = vec![0usize; phrases.len()];
    let mut memo = super::phrase::Memo::default();
    let n = b.len();
    let mut i = t.next(b, 0);
    while i < n {
        let bits = t.table[usize::from(b[i])];
        if bits & T_AT != 0 && i >= at {
            if let Some(f) = email_at(b, i) {
                at = f.end;
                out.push(f);
            }
        }
        if bits & T_NUM != 0 && i >= num {
            num = number_at(b, i, nums, out);
        }
        if bits & T_COLON != 0 && i >= colon {
            colon = ipv6_at(b, i, out);
        }
        if bits & T_TOK != 0 && i >= tok {
            tok = token_at(b, i, tok, secret, iban, out);
        }
        if bits & T_PEM != 0 {
            pem_at(b, i, out);
        }
        if bits & T_PHRASE != 0 {
            for ((p, rule), cur) in phrases.iter().zip(said.iter_mut()) {
                if i < *cur {
                    continue;
                }
                if let Some(end) = p.match_at(b, i, &mut memo) {
                    out.push(Found {
                        start: i,
                        end,
                        det: Detector::Phrase,
                        rule: *rule,
                    });
                    *cur = end;
                }
            }
        }
        i = t.next(b, i + 1);
    }
}

const DIGIT: u8 = 1;
const ALPHA: u8 = 2;
/// `_`.
const UNDER: u8 = 4;
/// `+ / -`: token characters that are not word characters.
const TOKX: u8 = 8;
/// `+ (`: may start a phone number.
const NUMX: u8 = 16;
const WORD: u8 = DIGIT | ALPHA | UNDER;
const TOK: u8 = WORD | TOKX;

/// Byte classes, one lookup per byte in the hot loops.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = if b.is_ascii_digit() {
            DIGIT
        } else if b.is_ascii_alphabetic() {
            ALPHA
        } else if b == b'_' {
            UNDER
        } else if b == b'/' || b == b'-' {
            TOKX
        } else if b == b'+' {
            TOKX | NUMX
        } else if b == b'(' {
            NUMX
        } else {
            0
        };
        c += 1;
    }
    t
};

#[inline]
fn class(c: u8) -> u8 {
    CLASS[usize::from(c)]
}

#[inline]
fn is_word(c: u8) -> bool {
    class(c) & WORD != 0
}

#[inline]
fn digit(b: &[u8], i: usize) -> bool {
    b.get(i).is_some_and(u8::is_ascii_digit)
}

/// The length of the run of ASCII digits at `i`.
#[inline]
fn digits_at(b: &[u8], i: usize) -> usize {
    b.get(i..)
        .map_or(0, |r| r.iter().take_while(|c| c.is_ascii_digit()).count())
}

/// A number may start at `i`: not inside a word, and not continuing a number joined by `-./,`
/// (`2024-01-15`'s `01`, a version's second part).
fn num_start_ok(b: &[u8], i: usize) -> bool {
    if i == 0 {
        return true;
    }
    let p = b[i - 1];
    if is_word(p) {
        return false;
    }
    !(matches!(p, b'-' | b'.' | b'/' | b',') && i >= 2 && b[i - 2].is_ascii_digit())
}

/// A number may end at `j`: not followed by a word character or by `-./,` and a digit (the
/// number goes on).
fn num_end_ok(b: &[u8], j: usize) -> bool {
    match b.get(j) {
        None => true,
        Some(&c) => !(is_word(c) || (matches!(c, b'-' | b'.' | b'/' | b',') && digit(b, j + 1))),
    }
}

// ---------------------------------------------------------------------------------------------
// E-mail (RFC 5321/5322 dot-atom subset)

fn is_local(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

/// `local@domain`: local part 1–64 of `[A-Za-z0-9._%+-]` (no leading, trailing or double dot),
/// domain 2+ labels of `[A-Za-z0-9-]` (1–63, no leading/trailing `-`), the last all letters (2+),
/// 254 bytes at most (RFC 5321 §4.5.3.1). Found from each `@`.
fn email_at(b: &[u8], at: usize) -> Option<Found> {
    let n = b.len();
    // Local part: the maximal run before '@', at most 64 bytes.
    let mut s = at;
    while s > 0 && is_local(b[s - 1]) && at - s <= 64 {
        s -= 1;
    }
    if at - s > 64 {
        return None;
    }
    while s < at && b[s] == b'.' {
        s += 1;
    }
    if s == at || b[at - 1] == b'.' || b[s..at].windows(2).any(|w| w == b"..") {
        return None;
    }
    // Domain labels.
    let mut j = at + 1;
    let mut labels = 0;
    let (end, tld_ok) = loop {
        let ls = j;
        while j < n && (b[j].is_ascii_alphanumeric() || b[j] == b'-') && j - ls <= 63 {
            j += 1;
        }
        let ll = j - ls;
        if ll == 0 || ll > 63 || b[ls] == b'-' || b[j - 1] == b'-' {
            return None;
        }
        labels += 1;
        if j + 1 < n && b[j] == b'.' && b[j + 1].is_ascii_alphanumeric() {
            j += 1;
        } else {
            break (j, ll >= 2 && b[ls..j].iter().all(u8::is_ascii_alphabetic));
        }
    };
    if labels < 2 || !tld_ok || end - s > 254 {
        return None;
    }
    if b.get(end)
        .is_some_and(|&c| is_word(c) || c == b'-' || c == b'@')
    {
        return None;
    }
    Some(Found {
        start: s,
        end,
        det: Detector::Email,
        rule: 0,
    })
}

// ---------------------------------------------------------------------------------------------
// Numbers: SSN, card, IPv4, phone — tried in this order at each number start.

/// The number detectors that are on.
#[derive(Clone, Copy)]
struct NumRules {
    ssn: bool,
    card: bool,
    ip: bool,
    phone: bool,
}

/// The number detectors at `i` (a digit, `+` or `(`): a match is appended; returns the position
/// to read from next (past the match, or past `i`'s run of digits).
fn number_at(b: &[u8], i: usize, on: NumRules, out: &mut Vec<Found>) -> usize {
    let c = b[i];
    if (c == b'+' || c == b'(') && !digit(b, i + 1) {
        return i + 1;
    }
    if num_start_ok(b, i) {
        let hit = if c == b'+' {
            on.phone
                .then(|| phone_intl(b, i).map(|e| (e, Detector::Phone)))
                .flatten()
        } else if c == b'(' {
            on.phone
                .then(|| phone_national(b, i).map(|e| (e, Detector::Phone)))
                .flatten()
        } else {
            None.or_else(|| {
                on.ssn
                    .then(|| ssn_at(b, i))
                    .flatten()
                    .map(|e| (e, Detector::Ssn))
            })
            .or_else(|| {
                on.card
                    .then(|| card_at(b, i))
                    .flatten()
                    .map(|e| (e, Detector::Card))
            })
            .or_else(|| {
                on.ip
                    .then(|| ipv4_at(b, i))
                    .flatten()
                    .map(|e| (e, Detector::Ip))
            })
            .or_else(|| {
                on.phone
                    .then(|| phone_national(b, i))
                    .flatten()
                    .map(|e| (e, Detector::Phone))
            })
        };
        if let Some((end, det)) = hit {
            out.push(Found {
                start: i,
                end,
                det,
                rule: 0,
            });
            return end;
        }
    }
    // Past a failed `+`/`(` the digits are tried on their own; past a digit, its run.
    if c.is_ascii_digit() {
        i + digits_at(b, i)
    } else {
        i + 1
    }
}

/// US SSN `AAA-GG-SSSS`: area not 000, 666 or 900–999; group not 00; serial not 0000 (SSA,
/// "Social Security Number Randomization"). Dashes required.
fn ssn_at(b: &[u8], i: usize) -> Option<usize> {
    let s = b.get(i..i + 11)?;
    let shape = s.iter().enumerate().all(|(k, &c)| {
        if k == 3 || k == 6 {
            c == b'-'
        } else {
            c.is_ascii_digit()
        }
    });
    if !shape {
        return None;
    }
    let num = |r: &[u8]| r.iter().fold(0u32, |a, &c| a * 10 + u32::from(c - b'0'));
    let (area, group, serial) = (num(&s[0..3]), num(&s[4..6]), num(&s[7..11]));
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0 {
        return None;
    }
    num_end_ok(b, i + 11).then_some(i + 11)
}

/// Luhn (ISO/IEC 7812-1 Annex B) over decimal digit values.
pub(crate) fn luhn(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (k, &x) in d.iter().rev().enumerate() {
        let mut v = u32::from(x);
        if k % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum % 10 == 0
}

/// A payment card number (ISO/IEC 7812): 13–19 digits, first digit 2–6 (the major industry
/// identifiers of the card networks: Mastercard 2/5, Amex/Diners/JCB 3, Visa 4, Discover/UnionPay
/// 6), Luhn-valid; either one run of digits or a first group of 4 then groups of 3–6 joined by one
/// consistent separator (space or `-`). When grouped, the longest Luhn-valid prefix of whole
/// groups wins (a trailing space-separated number is not part of the card).
fn card_at(b: &[u8], i: usize) -> Option<usize> {
    if !(b'2'..=b'6').contains(&b[i]) {
        return None;
    }
    let mut d = [0u8; 19];
    let first = digits_at(b, i);
    if first >= 13 {
        if first > 19 {
            return None;
        }
        for (k, &c) in b[i..i + first].iter().enumerate() {
            d[k] = c - b'0';
        }
        let end = i + first;
        return (luhn(&d[..first]) && num_end_ok(b, end)).then_some(end);
    }
    if first != 4 {
        return None;
    }
    let sep = *b.get(i + 4)?;
    if sep != b' ' && sep != b'-' {
        return None;
    }
    for (k, &c) in b[i..i + 4].iter().enumerate() {
        d[k] = c - b'0';
    }
    let mut nd = 4;
    let mut j = i + 4;
    // (digit count, end) after each group, for the back-off.
    let mut ends = [(0usize, 0usize); 7];
    ends[0] = (4, j);
    let mut ng = 1;
    while ng < ends.len() && b.get(j) == Some(&sep) {
        let g = digits_at(b, j + 1);
        if !(3..=6).contains(&g) || nd + g > 19 {
            break;
        }
        for (k, &c) in b[j + 1..j + 1 + g].iter().enumerate() {
            d[nd + k] = c - b'0';
        }
        nd += g;
        j += 1 + g;
        ends[ng] = (nd, j);
        ng += 1;
    }
    for &(cnt, end) in ends[1..ng].iter().rev() {
        if cnt < 13 {
            break;
        }
        if luhn(&d[..cnt]) && num_end_ok(b, end) {
            return Some(end);
        }
    }
    None
}

/// IPv4 dotted quad: four decimal octets ≤ 255 without leading zeros, not part of a longer
/// dotted number (`1.2.3.4.5`).
fn ipv4_at(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    for k in 0..4 {
        if k > 0 {
            if b.get(j) != Some(&b'.') {
                return None;
            }
            j += 1;
        }
        let len = digits_at(b, j);
        if len == 0 || len > 3 || (len > 1 && b[j] == b'0') {
            return None;
        }
        let v = b[j..j + len]
            .iter()
            .fold(0u32, |a, &c| a * 10 + u32::from(c - b'0'));
        if v > 255 {
            return None;
        }
        j += len;
    }
    num_end_ok(b, j).then_some(j)
}

/// A national phone number: an optional area code in parentheses (2–5 digits), then groups of
/// 2–8 digits (the first 2–5 when there is no parenthesis) joined by one consistent separator
/// (space, `-` or `.`), at least one separator or the parenthesis, 10–11 digits in all; with `.`
/// only the North-American `3.3.4` shape (dots are versions and IPs otherwise).
fn phone_national(b: &[u8], i: usize) -> Option<usize> {
    let n = b.len();
    let mut j = i;
    let mut digits = 0;
    let paren = b[i] == b'(';
    if paren {
        let g = digits_at(b, i + 1);
        if !(2..=5).contains(&g) || b.get(i + 1 + g) != Some(&b')') {
            return None;
        }
        digits += g;
        j = i + 2 + g;
        if j + 1 < n && (b[j] == b' ' || b[j] == b'-') && digit(b, j + 1) {
            j += 1;
        } else if !digit(b, j) {
            return None;
        }
    }
    let g = digits_at(b, j);
    if !(2..=8).contains(&g) || (!paren && g > 5) {
        return None;
    }
    digits += g;
    j += g;
    let mut shape = [g, 0, 0];
    let mut ng = 1;
    let mut sep: Option<u8> = None;
    while j + 1 < n && matches!(b[j], b' ' | b'-' | b'.') && sep.is_none_or(|s| s == b[j]) {
        let g = digits_at(b, j + 1);
        if !(2..=8).contains(&g) || digits + g > 11 {
            break;
        }
        sep = Some(b[j]);
        digits += g;
        j += 1 + g;
        if ng < shape.len() {
            shape[ng] = g;
        }
        ng += 1;
    }
    if (!paren && sep.is_none()) || !(10..=11).contains(&digits) {
        return None;
    }
    if sep == Some(b'.') && (paren || ng != 3 || shape != [3, 3, 4]) {
        return None;
    }
    num_end_ok(b, j).then_some(j)
}

/// An international number (ITU-T E.164): `+`, a country code starting 1–9, 8–15 digits in all,
/// in groups joined by single spaces, `-` or `.`, with at most one parenthesized group of 1–4
/// digits (`+44 (0)20 7946 0958`, `+1 (415) 555-0100`).
fn phone_intl(b: &[u8], i: usize) -> Option<usize> {
    let n = b.len();
    if !b.get(i + 1).is_some_and(|c| (b'1'..=b'9').contains(c)) {
        return None;
    }
    let g = digits_at(b, i + 1);
    if g > 15 {
        return None;
    }
    let mut digits = g;
    let mut j = i + 1 + g;
    let mut used_paren = false;
    loop {
        let mut k = j;
        if k < n && matches!(b[k], b' ' | b'-' | b'.') {
            k += 1;
        }
        let mut opened = false;
        if !used_paren && k < n && b[k] == b'(' {
            k += 1;
            opened = true;
        }
        if k == j {
            break;
        }
        let g = digits_at(b, k);
        if g == 0 || digits + g > 15 {
            break;
        }
        if opened {
            if g > 4 || b.get(k + g) != Some(&b')') {
                break;
            }
            used_paren = true;
            digits += g;
            j = k + g + 1;
            // The number continues after the parenthesis (with or without one separator).
            let m = if j < n && matches!(b[j], b' ' | b'-' | b'.') {
                j + 1
            } else {
                j
            };
            let g2 = digits_at(b, m);
            if g2 == 0 || digits + g2 > 15 {
                return None;
            }
            digits += g2;
            j = m + g2;
        } else {
            digits += g;
            j = k + g;
        }
    }
    if !(8..=15).contains(&digits) {
        return None;
    }
    num_end_ok(b, j).then_some(j)
}

// ---------------------------------------------------------------------------------------------
// IPv6 (RFC 4291 §2.2 text forms, without the embedded-IPv4 form)

fn is_hex_or_colon(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b':'
}

/// An IPv6 address around the `:` at `c`; returns the position to read from next (past the run
/// of hex digits and colons).
fn ipv6_at(b: &[u8], c: usize, out: &mut Vec<Found>) -> usize {
    let n = b.len();
    let mut s = c;
    while s > 0 && is_hex_or_colon(b[s - 1]) && c - s <= 40 {
        s -= 1;
    }
    let mut e = c;
    while e < n && is_hex_or_colon(b[e]) && e - s <= 40 {
        e += 1;
    }
    if e - s > 39 || (s > 0 && (is_word(b[s - 1]) || b[s - 1] == b'.')) {
        return e;
    }
    if e < n && (is_word(b[e]) || (b[e] == b'.' && digit(b, e + 1))) {
        return e;
    }
    if ipv6_ok(&b[s..e]) {
        out.push(Found {
            start: s,
            end: e,
            det: Detector::Ip,
            rule: 0,
        });
    }
    e
}

/// Eight groups of 1–4 hex digits, or fewer around one `::` (then at least two groups and one
/// decimal digit, so that `a::b` in code is not an address; `::1` is not matched).
fn ipv6_ok(r: &[u8]) -> bool {
    fn groups(side: &[u8]) -> Option<(usize, bool)> {
        if side.is_empty() {
            return Some((0, false));
        }
        let mut count = 0;
        let mut has_digit = false;
        for g in side.split(|&c| c == b':') {
            if g.is_empty() || g.len() > 4 {
                return None;
            }
            has_digit |= g.iter().any(u8::is_ascii_digit);
            count += 1;
        }
        Some((count, has_digit))
    }
    match memmem::find(r, b"::") {
        None => groups(r).is_some_and(|(c, _)| c == 8),
        Some(p) => {
            let (l, rt) = (&r[..p], &r[p + 2..]);
            if memmem::find(rt, b"::").is_some() || rt.first() == Some(&b':') {
                return false;
            }
            match (groups(l), groups(rt)) {
                (Some((a, da)), Some((c, dc))) => a + c >= 2 && a + c <= 7 && (da || dc),
                _ => false,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Token runs: secrets (prefixed keys, JWTs, high-entropy tokens) and IBANs.

#[inline]
fn is_tok(c: u8) -> bool {
    class(c) & TOK != 0
}

/// The token run around `i` (from no earlier than `from`, what the token family has read):
/// an IBAN or a secret is appended; returns the position to read from next (past the run or
/// the match).
fn token_at(
    b: &[u8],
    i: usize,
    from: usize,
    secret: bool,
    iban: bool,
    out: &mut Vec<Found>,
) -> usize {
    let n = b.len();
    let mut s = i;
    while s > from && is_tok(b[s - 1]) {
        s -= 1;
    }
    let e = i + b[i..].iter().position(|&c| !is_tok(c)).unwrap_or(n - i);
    // The shortest secret run is 10 bytes (a JWT's header), an IBAN's first group 4.
    if e - s < 4 {
        return e;
    }
    if iban
        && b[s].is_ascii_alphabetic()
        && b[s + 1].is_ascii_alphabetic()
        && b[s + 2].is_ascii_digit()
        && b[s + 3].is_ascii_digit()
    {
        if let Some(end) = iban_at(b, s) {
            out.push(Found {
                start: s,
                end,
                det: Detector::Iban,
                rule: 0,
            });
            return e.max(end);
        }
    }
    if secret && e - s >= 10 {
        if let Some(end) = secret_run(b, s, e) {
            out.push(Found {
                start: s,
                end,
                det: Detector::Secret,
                rule: 0,
            });
            return e.max(end);
        }
    }
    e
}

/// The body after `prefix` is at least `min` bytes, all accepted by `ok`.
fn body(r: &[u8], prefix: &[u8], min: usize, ok: fn(&u8) -> bool) -> bool {
    r.len() >= prefix.len() + min && r.starts_with(prefix) && r[prefix.len()..].iter().all(ok)
}

fn b64url(c: &u8) -> bool {
    c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-'
}

/// Whether the token run `b[s..e]` is a secret; the end of the secret (past `e` for a JWT or
/// base64 padding).
fn secret_run(b: &[u8], s: usize, e: usize) -> Option<usize> {
    let r = &b[s..e];
    if r.len() > MAX_TOKEN {
        return None;
    }
    let alnum: fn(&u8) -> bool = u8::is_ascii_alphanumeric;
    let known = if r.starts_with(b"sk-") {
        // OpenAI `sk-`, `sk-proj-`, `sk-svcacct-`; Anthropic `sk-ant-api03-`, `sk-ant-admin01-`.
        body(r, b"sk-", 20, b64url)
            && r[3..].iter().any(u8::is_ascii_digit)
            && r[3..].iter().any(u8::is_ascii_alphabetic)
    } else if r.starts_with(b"AKIA") || r.starts_with(b"ASIA") {
        // AWS access key ids: 20 upper-case alphanumerics.
        r.len() == 20
            && r[4..]
                .iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    } else if r.len() > 4 && r.starts_with(b"gh") && b"pousr".contains(&r[2]) && r[3] == b'_' {
        // GitHub tokens (ghp_/gho_/ghu_/ghs_/ghr_ + 36 base62; accept 30+).
        body(r, &r[..4], 30, alnum)
    } else if r.starts_with(b"github_pat_") {
        body(r, b"github_pat_", 22, |c| {
            c.is_ascii_alphanumeric() || *c == b'_'
        })
    } else if r.len() > 5 && r.starts_with(b"xox") && b"baprs".contains(&r[3]) && r[4] == b'-' {
        // Slack tokens xoxb-/xoxa-/xoxp-/xoxr-/xoxs-.
        body(r, &r[..5], 10, |c| c.is_ascii_alphanumeric() || *c == b'-')
    } else if r.starts_with(b"AIza") {
        // Google API keys: AIza + 35 base64url.
        r.len() == 39 && r[4..].iter().all(b64url)
    } else if r.starts_with(b"sk_live_") || r.starts_with(b"rk_live_") {
        // Stripe live secret and restricted keys.
        body(r, &r[..8], 16, alnum)
    } else {
        false
    };
    if known {
        return Some(e);
    }
    if r.starts_with(b"eyJ") && b.get(e) == Some(&b'.') {
        if let Some(end) = jwt(b, s, e) {
            return Some(end);
        }
    }
    if high_entropy(r) {
        let mut end = e;
        while end < b.len() && end - e < 2 && b[end] == b'=' {
            end += 1;
        }
        return Some(end);
    }
    None
}

/// A JWT (RFC 7519 compact JWS): `eyJ…` header, `.`, `eyJ…` payload, `.`, signature of 16+
/// base64url characters; segments 10+ characters.
fn jwt(b: &[u8], s: usize, e: usize) -> Option<usize> {
    let seg = |from: usize| -> usize { b[from..].iter().take_while(|c| b64url(c)).count() };
    let h = seg(s);
    if h < 10 || h != e - s || b.get(e) != Some(&b'.') {
        return None;
    }
    let p0 = s + h + 1;
    let p = seg(p0);
    if p < 10 || !b[p0..].starts_with(b"eyJ") || b.get(p0 + p) != Some(&b'.') {
        return None;
    }
    let g0 = p0 + p + 1;
    let g = seg(g0);
    let end = g0 + g;
    if g < 16 || end - s > MAX_JWT || b.get(end).is_some_and(|&c| is_tok(c) || c == b'.') {
        return None;
    }
    Some(end)
}

/// The high-entropy token rule (docs/guardrails.md): 32+ characters, lower, upper and digit all
/// present, not a path (`/…`, `//`), Shannon entropy ≥ 3.5 bits/char and class changes between
/// adjacent alphanumerics in ≥ 1/4 of the pairs. Hex hashes and UUIDs lack upper case (or lower
/// case) and are never matched.
pub(crate) fn high_entropy(r: &[u8]) -> bool {
    if r.len() < ENTROPY_MIN_LEN || r.len() > MAX_TOKEN || r[0] == b'/' {
        return false;
    }
    let (mut lo, mut up, mut di) = (false, false, false);
    let mut counts = [0u16; 128];
    let (mut pairs, mut changes) = (0u32, 0u32);
    let class = |c: u8| -> u8 {
        if c.is_ascii_lowercase() {
            1
        } else if c.is_ascii_uppercase() {
            2
        } else if c.is_ascii_digit() {
            3
        } else {
            0
        }
    };
    let mut prev = 0u8;
    let mut prev_slash = false;
    for &c in r {
        let k = class(c);
        lo |= k == 1;
        up |= k == 2;
        di |= k == 3;
        if c == b'/' {
            if prev_slash {
                return false;
            }
            prev_slash = true;
        } else {
            prev_slash = false;
        }
        counts[usize::from(c & 0x7f)] += 1;
        if k != 0 && prev != 0 {
            pairs += 1;
            if k != prev && !(prev == 2 && k == 1) {
                changes += 1;
            }
        }
        prev = k;
    }
    if !(lo && up && di) || changes * 4 < pairs {
        return false;
    }
    let n = r.len() as f64;
    let mut sum = 0.0;
    for &c in counts.iter().filter(|&&c| c > 0) {
        let c = f64::from(c);
        sum += c * c.log2();
    }
    n.log2() - sum / n >= ENTROPY_MIN_BITS
}

/// IBAN lengths per country (ISO 13616; SWIFT IBAN Registry, release 99, 2025).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HN", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

pub(crate) fn iban_length(cc: [u8; 2]) -> Option<usize> {
    IBAN_LENGTHS
        .iter()
        .find(|(c, _)| **c == cc)
        .map(|&(_, l)| l)
}

/// An IBAN at `s`: country code, 2 check digits, BBAN, exactly the country's length, either
/// compact or in groups of 4 joined by single spaces (the paper format of ISO 13616-1 §5);
/// letters of either case; the ISO 7064 mod 97-10 check (`== 1`).
fn iban_at(b: &[u8], s: usize) -> Option<usize> {
    let cc = [b[s].to_ascii_uppercase(), b[s + 1].to_ascii_uppercase()];
    let len = iban_length(cc)?;
    let grouped = b.get(s + 4) == Some(&b' ');
    let mut chars = [0u8; 34];
    let mut k = 0;
    let mut j = s;
    while k < len {
        if grouped && k > 0 && k % 4 == 0 {
            if b.get(j) != Some(&b' ') {
                return None;
            }
            j += 1;
        }
        let c = *b.get(j)?;
        if !c.is_ascii_alphanumeric() {
            return None;
        }
        chars[k] = c.to_ascii_uppercase();
        k += 1;
        j += 1;
    }
    if b.get(j).is_some_and(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    mod97(&chars[..len]).then_some(j)
}

/// ISO 7064 MOD 97-10 over the IBAN rearranged (first four characters moved to the end, letters
/// as 10–35).
pub(crate) fn mod97(iban: &[u8]) -> bool {
    if iban.len() < 5 {
        return false;
    }
    let mut m: u32 = 0;
    for &c in iban[4..].iter().chain(&iban[..4]) {
        if c.is_ascii_digit() {
            m = (m * 10 + u32::from(c - b'0')) % 97;
        } else if c.is_ascii_uppercase() {
            m = (m * 100 + u32::from(c - b'A') + 10) % 97;
        } else {
            return false;
        }
    }
    m == 1
}

/// PEM private-key headers (RFC 7468 §2): `-----BEGIN [A-Z ]*PRIVATE KEY-----` (RSA, EC, DSA,
/// OPENSSH, ENCRYPTED, PKCS#8). Only the header line is the match; the base64 lines after it are
/// caught by the high-entropy rule one by one.
fn pem_at(b: &[u8], pos: usize, out: &mut Vec<Found>) {
    if !b[pos..].starts_with(b"-----BEGIN ") {
        return;
    }
    let mut j = pos + 11;
    while j < b.len() && (b[j].is_ascii_uppercase() || b[j] == b' ') && j - pos < 58 {
        j += 1;
    }
    if b[pos..j].ends_with(b"PRIVATE KEY") && b[j..].starts_with(b"-----") {
        out.push(Found {
            start: pos,
            end: j + 5,
            det: Detector::Secret,
            rule: 0,
        });
    }
}
