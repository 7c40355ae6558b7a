//! Deny-listed phrases (`detector: "phrase"`), matched by a byte trie instead of a regular
//! expression: the phrases of a rule share one trie, walked from the positions where a phrase can
//! start (its first byte, at a word start), so a clean text costs one table lookup per byte in
//! the detectors' common pass ([`super::detect::scan`]) and no automaton at all.
//!
//! What a phrase matches (unchanged from the regex it replaces, `(?i:\bw1\s+w2\b|...)` with
//! Unicode off): its words (split on white space) in order, ASCII letters in either case, any run
//! of ASCII white space (`\t \n \v \f \r` and space) between two words, a word boundary before
//! the first and after the last byte when that byte is a word character (`[0-9A-Za-z_]`); other
//! bytes (non-ASCII included) exactly. When several phrases of a rule match at the same start,
//! the one listed first wins (leftmost-first, as the alternation did); matches do not overlap.
//!
//! Linear: a walk from a start reads at most the longest phrase's bytes (≤ 256, the config's cap)
//! plus the white-space runs between its words; a long run's end is remembered ([`Memo`]), so
//! the walks from several starts that reach it do not read it again.

/// One rule's phrases as a trie over lower-cased bytes; the byte `b' '` on an edge stands for a
/// run of white space.
#[derive(Debug, Default)]
pub(crate) struct Phrases {
    /// `nodes[0]` is the root.
    nodes: Vec<Node>,
    /// The root's child per (lower-cased) byte, 0 when none.
    first: Vec<u32>,
}

#[derive(Debug, Default)]
struct Node {
    /// Children, sorted by byte.
    kids: Vec<(u8, u32)>,
    /// 1 + the index of the first-listed phrase ending here; 0 when none does.
    term: u32,
}

/// The long white-space runs (start, end) the walks of one scan have crossed, sorted by start.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    runs: Vec<(usize, usize)>,
}

/// Runs at least this long are remembered; a shorter one is read again by each walk that
/// reaches it (a bounded cost: a walk reads at most the longest phrase).
const LONG_RUN: usize = 64;

impl Memo {
    /// The end of the white-space run starting at `j`.
    fn run_end(&mut self, b: &[u8], j: usize) -> usize {
        let at = self.runs.partition_point(|&(s, _)| s < j);
        if let Some(&(s, e)) = self.runs.get(at) {
            if s == j {
                return e;
            }
        }
        let e = j + b[j..].iter().take_while(|&&c| is_space(c)).count();
        if e - j >= LONG_RUN {
            self.runs.insert(at, (j, e));
        }
        e
    }
}

/// A word character for `\b` with Unicode off.
#[inline]
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// `\s` with Unicode off.
#[inline]
pub(crate) fn is_space(c: u8) -> bool {
    matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ')
}

impl Phrases {
    /// The trie of `phrases` (each non-blank; the config parser checks that).
    pub(crate) fn new<'a>(phrases: impl IntoIterator<Item = &'a str>) -> Phrases {
        let mut p = Phrases {
            nodes: vec![Node::default()],
            first: vec![0; 256],
        };
        for (idx, ph) in phrases.into_iter().enumerate() {
            let mut node = 0usize;
            let mut started = false;
            for word in ph.split_whitespace() {
                if started {
                    node = p.child_or_new(node, b' ');
                }
                started = true;
                for &c in word.as_bytes() {
                    node = p.child_or_new(node, c.to_ascii_lowercase());
                }
            }
            if node == 0 {
                continue; // blank
            }
            let id = u32::try_from(idx).map_or(u32::MAX, |i| i.saturating_add(1));
            let t = &mut p.nodes[node].term;
            if *t == 0 || id < *t {
                *t = id;
            }
        }
        p
    }

    fn child_or_new(&mut self, node: usize, c: u8) -> usize {
        if node == 0 {
            let k = self.first[usize::from(c)] as usize;
            if k != 0 {
                return k;
            }
        } else if let Some(k) = self.child(node, c) {
            return k;
        }
        let k = self.nodes.len();
        self.nodes.push(Node::default());
        // Node counts are bounded by the config's caps (1,000 phrases of 256 bytes).
        let id = k as u32;
        if node == 0 {
            self.first[usize::from(c)] = id;
        } else {
            let kids = &mut self.nodes[node].kids;
            let at = kids.partition_point(|&(b, _)| b < c);
            kids.insert(at, (c, id));
        }
        k
    }

    #[inline]
    fn child(&self, node: usize, c: u8) -> Option<usize> {
        let kids = &self.nodes[node].kids;
        let found = if kids.len() <= 8 {
            kids.iter().find(|&&(b, _)| b == c).map(|&(_, k)| k)
        } else {
            kids.binary_search_by_key(&c, |&(b, _)| b)
                .ok()
                .map(|i| kids[i].1)
        };
        found.map(|k| k as usize)
    }

    /// The bytes a phrase may start with, both cases of a letter.
    pub(crate) fn start_bytes(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=255u8).filter(|&c| self.first[usize::from(c.to_ascii_lowercase())] != 0)
    }

    /// The end of the phrase match starting at `i`, if one does.
    pub(crate) fn match_at(&self, b: &[u8], i: usize, memo: &mut Memo) -> Option<usize> {
        let c0 = *b.get(i)?;
        let mut node = self.first[usize::from(c0.to_ascii_lowercase())] as usize;
        if node == 0 || (is_word(c0) && i > 0 && is_word(b[i - 1])) {
            return None;
        }
        let n = b.len();
        let mut j = i + 1;
        let mut best: Option<(u32, usize)> = None;
        let mut last = c0;
        loop {
            let t = self.nodes[node].term;
            if t != 0
                && best.is_none_or(|(bt, _)| t < bt)
                && !(is_word(last) && j < n && is_word(b[j]))
            {
                best = Some((t, j));
            }
            let Some(&c) = b.get(j) else { break };
            if is_space(c) {
                let Some(k) = self.child(node, b' ') else {
                    break;
                };
                j = memo.run_end(b, j);
                node = k;
                last = b' ';
            } else {
                let Some(k) = self.child(node, c.to_ascii_lowercase()) else {
                    break;
                };
                node = k;
                last = c;
                j += 1;
            }
        }
        best.map(|(_, e)| e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(p: &Phrases, text: &str) -> Vec<(usize, usize)> {
        let b = text.as_bytes();
        let mut memo = Memo::default();
        let (mut i, mut out) = (0, vec![]);
        while i < b.len() {
            match p.match_at(b, i, &mut memo) {
                Some(e) => {
                    out.push((i, e));
                    i = e;
                }
                None => i += 1,
            }
        }
        out
    }

    /// The same matches as the regular expression the phrases were compiled to before
    /// (`(?i:\b...\b|...)`, Unicode off, leftmost-first).
    #[test]
    fn agrees_with_the_regex() {
        let lists: &[&[&str]] = &[
            &["project neptune", "blue harbor"],
            &["blue", "blue harbor"],
            &["blue harbor", "blue"],
            &["a b c", "a b", "b c"],
            &["#secret", "c++", "e-mail"],
            &["ñandú azul", "Straße"],
            &["x"],
        ];
        let texts = [
            "Project  Neptune is go; PROJECT\tneptune\nand blue\r\n\x0bharbor",
            "projectneptune project neptunes xproject neptune project neptune_",
            "blue harbor blue harbour blueharbor",
            "a b c a  b b c ab c",
            "the #secret and c++ e-mail E-MAIL #SECRETS",
            "ÑANDÚ azul ñandú   AZUL straße STRAßE",
            "x xx x_x x-x (x) éx",
            "",
            "project",
            "project ",
        ];
        for list in lists {
            let p = Phrases::new(list.iter().copied());
            let alts: Vec<String> = list
                .iter()
                .map(|ph| {
                    let words: Vec<String> = ph.split_whitespace().map(regex::escape).collect();
                    let w =
                        |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
                    let mut s = String::new();
                    if w(ph.chars().next()) {
                        s.push_str(r"\b");
                    }
                    s.push_str(&words.join(r"\s+"));
                    if w(ph.chars().last()) {
                        s.push_str(r"\b");
                    }
                    s
                })
                .collect();
            let re = regex::bytes::RegexBuilder::new(&format!("(?i:{})", alts.join("|")))
                .unicode(false)
                .build()
                .unwrap();
            for t in texts {
                let want: Vec<(usize, usize)> = re
                    .find_iter(t.as_bytes())
                    .map(|m| (m.start(), m.end()))
                    .collect();
                assert_eq!(all(&p, t), want, "phrases {list:?} in {t:?}");
            }
        }
    }

    #[test]
    fn long_white_space_runs_are_remembered() {
        let p = Phrases::new(["a b", "a a a a a b"]);
        let text = format!("{}{}b", "a ".repeat(2000), " ".repeat(100_000));
        let mut memo = Memo::default();
        let b = text.as_bytes();
        // The five starts whose walks reach the long run: the first match wins from the
        // earliest, and the run is remembered once.
        assert_eq!(p.match_at(b, 3990, &mut memo), Some(text.len()));
        assert_eq!(memo.runs, vec![(3999, 4000 + 100_000)]);
        assert_eq!(p.match_at(b, 3998, &mut memo), Some(text.len()));
        assert_eq!(memo.runs.len(), 1);
        assert_eq!(all(&p, &text).last(), Some(&(3990, text.len())));
    }
}
