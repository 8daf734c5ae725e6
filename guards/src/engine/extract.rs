//! Literal extraction from the packs' regexes: the prefixes that trigger a regex, the rarest
//! required piece that filters those triggers, and the longest match a regex can have in a view.
//! Pure functions of the pattern text, run once per pack version by [`super::Engine::compile`].

/// Longest literal taken from a regex: longer ones only grow the automaton (its cost per byte
/// does not drop with them; measured), a prefix this long is selective enough.
pub(super) const MAX_LITERAL_LEN: usize = 16;

/// Most literal prefixes taken from one regex; more and the regex is scanned unanchored.
pub(super) const MAX_PREFIXES: usize = 256;

/// Shortest literal prefix worth triggering on; a regex with a shorter one (it would fire on
/// every "at" or "u") is scanned unanchored instead.
pub(super) const MIN_PREFIX_LEN: usize = 3;

/// The literal prefixes every match of `pattern` *in a view* starts with, or `None` when there is
/// no such finite set of useful length (the regex is then scanned in full).
///
/// Views hold no whitespace but single spaces (the normaliser collapses every run), so for
/// extraction a whitespace class is read as `" "` and a repetition of it as one optional or
/// mandatory space: `ignore\s+(?:all\s+)?previous` yields `ignore all previous` and
/// `ignore previous` instead of stopping at `ignore`.
pub fn literal_prefixes(pattern: &str) -> Option<Vec<Vec<u8>>> {
    literal_factors(pattern, Factor::Prefix)
}

/// Which end of a match [`literal_factors`] extracts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    Prefix,
    Suffix,
}

/// The literals every match of `pattern` in a view starts (or ends) with; see [`literal_prefixes`].
pub fn literal_factors(pattern: &str, factor: Factor) -> Option<Vec<Vec<u8>>> {
    factor_literals(&as_seen_in_views(parse_pattern(pattern)?), factor)
}

/// `pattern` parsed as the scan's regexes are.
pub(super) fn parse_pattern(pattern: &str) -> Option<regex_syntax::hir::Hir> {
    regex_syntax::ParserBuilder::new()
        .unicode(true)
        .utf8(true)
        .build()
        .parse(pattern)
        .ok()
}

/// [`literal_factors`] of an already view-shaped `hir`.
pub(super) fn factor_literals(
    hir: &regex_syntax::hir::Hir,
    factor: Factor,
) -> Option<Vec<Vec<u8>>> {
    literals_at_least(hir, factor, MIN_PREFIX_LEN)
}

/// The literal prefixes of a view-shaped `hir` of any length (one byte and up): where a match can
/// start, for a regex tried only near a hit of its required factor. `None` if there is no finite
/// set (the regex starts with a class: it can start anywhere).
pub(super) fn short_prefixes(hir: &regex_syntax::hir::Hir) -> Option<Vec<Vec<u8>>> {
    literals_at_least(hir, Factor::Prefix, 1)
}

fn literals_at_least(
    hir: &regex_syntax::hir::Hir,
    factor: Factor,
    min_len: usize,
) -> Option<Vec<Vec<u8>>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let seq = Extractor::new()
        .kind(match factor {
            Factor::Prefix => ExtractKind::Prefix,
            Factor::Suffix => ExtractKind::Suffix,
        })
        .limit_total(MAX_PREFIXES)
        .limit_literal_len(MAX_LITERAL_LEN)
        .extract(hir);
    let lits = seq.literals()?;
    if lits.is_empty() || lits.iter().any(|l| l.as_bytes().len() < min_len) {
        return None;
    }
    let mut out: Vec<Vec<u8>> = lits.iter().map(|l| l.as_bytes().to_vec()).collect();
    // A literal that extends another adds nothing: wherever it occurs, the shorter one does
    // too. Dropping it keeps the set complete and saves automaton hits.
    let covered = |l: &[u8], by: &[u8]| match factor {
        Factor::Prefix => l.len() > by.len() && l.starts_with(by),
        Factor::Suffix => l.len() > by.len() && l.ends_with(by),
    };
    out.sort();
    out.dedup();
    let minimal: Vec<Vec<u8>> = out
        .iter()
        .filter(|l| !out.iter().any(|other| covered(l, other)))
        .cloned()
        .collect();
    Some(minimal)
}

/// A set of literals one of which every match of `pattern` in a view contains after its
/// first piece (which the prefixes cover): the rarest of the regex's suffix set and the
/// literal prefix sets of the later pieces of its top-level concatenation. `None` if none
/// is usable.
///
/// A prefix hit is only verified when one of these ends after it (and within the regex's
/// longest match). `(?:you are|act as)\s+(?:\w+\s+)?(?:unrestricted|amoral)\s+(?:\w+\s+)?(?:ai|bot)`
/// is then tried only where "unrestricted" or "amoral" follows, not wherever " ai" or
/// " bot" (its suffixes) follow a "you are".
///
/// A set is as rare as its most frequent literal, estimated by `rarity`.
pub fn required_factor(pattern: &str) -> Option<Vec<Vec<u8>>> {
    required_factor_of(&as_seen_in_views(parse_pattern(pattern)?))
}

/// [`required_factor`] of an already view-shaped `hir`.
pub(super) fn required_factor_of(hir: &regex_syntax::hir::Hir) -> Option<Vec<Vec<u8>>> {
    use regex_syntax::hir::HirKind;
    // The pieces after the first that consumes text (a leading `\b` does not): that one is
    // where the prefixes come from.
    let pieces = match hir.kind() {
        HirKind::Concat(pieces) => {
            let first = pieces
                .iter()
                .position(|p| p.properties().minimum_len() != Some(0))
                .unwrap_or(pieces.len());
            pieces.get(first + 1..).unwrap_or_default()
        }
        _ => &[],
    };
    let candidates = std::iter::once(factor_literals(hir, Factor::Suffix))
        .chain(pieces.iter().map(|p| factor_literals(p, Factor::Prefix)))
        .flatten();
    let mut best: Option<(usize, Vec<Vec<u8>>)> = None;
    for lits in candidates {
        let score = lits.iter().map(|l| rarity(l)).min().unwrap_or(0);
        // Ties keep the earlier set: the suffix, then pieces in order.
        if best.as_ref().is_none_or(|(b, _)| score > *b) {
            best = Some((score, lits));
        }
    }
    best.map(|(_, lits)| lits)
}

/// How rarely `literal` occurs in ordinary text, roughly: its length, a quarter of it when it is
/// made of common words only ([`is_common`]): " ai" or " this assistant" are everywhere, "rogue"
/// and "d this assistant" (a suffix cut to [`MAX_LITERAL_LEN`]) are not.
pub(super) fn rarity(literal: &[u8]) -> usize {
    if is_common(literal) && literal.len() < MAX_LITERAL_LEN {
        literal.len() / 4
    } else {
        literal.len()
    }
}

/// Words nearly every prompt contains: English function words and the vocabulary of talking to
/// an assistant. A trigger literal made only of these (or of words under three letters) occurs
/// in most texts, so it selects nothing.
#[rustfmt::skip]
pub(super) const COMMON_WORDS: &[&str] = &[
    "a", "about", "after", "again", "all", "also", "am", "an", "and", "answer", "any", "are", "as",
    "ask", "assistant", "at", "be", "because", "been", "before", "being", "but", "by", "can",
    "content", "could", "did", "do", "does", "doing", "don", "down", "each", "for", "from", "get",
    "give", "had", "has", "have", "he", "help", "her", "here", "his", "how", "i", "if", "in",
    "information", "into", "is", "it", "its", "just", "know", "let", "like", "make", "may", "me",
    "might", "more", "most", "must", "my", "need", "new", "no", "not", "now", "of", "on", "one",
    "only", "or", "other", "our", "out", "over", "please", "question", "re", "response", "s", "see",
    "shall", "she", "should", "so", "some", "such", "t", "tell", "text", "than", "that", "the",
    "their", "them", "then", "there", "these", "they", "this", "those", "to", "u", "under", "up",
    "us", "use", "user", "users", "was", "we", "were", "what", "when", "where", "which", "who",
    "why", "will", "with", "would", "write", "you", "your",
];

/// Whether `literal` (from a view: lowercase, single spaces) is made only of common words.
pub(super) fn is_common(literal: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(literal) else {
        return false;
    };
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .all(|w| w.chars().count() < 3 || COMMON_WORDS.binary_search(&w).is_ok())
}

pub(super) fn is_space_class(class: &regex_syntax::hir::Class) -> bool {
    use regex_syntax::hir::Class;
    match class {
        Class::Unicode(c) => {
            let mut has_space = false;
            for r in c.iter() {
                // Whitespace ranges are a handful of code points; anything wider is not one.
                if u32::from(r.end()) - u32::from(r.start()) > 64 {
                    return false;
                }
                for ch in r.start()..=r.end() {
                    if !ch.is_whitespace() {
                        return false;
                    }
                    has_space |= ch == ' ';
                }
            }
            has_space
        }
        Class::Bytes(c) => {
            let mut has_space = false;
            for r in c.iter() {
                for b in r.start()..=r.end() {
                    if !b.is_ascii_whitespace() && b != 0x0b {
                        return false;
                    }
                    has_space |= b == b' ';
                }
            }
            has_space
        }
    }
}

/// The longest match `pattern` can have in a view, in bytes, or `None` if unbounded. Views
/// hold single spaces only, so a whitespace repetition counts one byte (see `as_seen_in_views`).
pub fn view_max_len(pattern: &str) -> Option<usize> {
    as_seen_in_views(parse_pattern(pattern)?)
        .properties()
        .maximum_len()
}

/// `hir` as it can match in a view: whitespace classes become a single space (see
/// [`literal_prefixes`]). Used for literal extraction and length bounds, never for matching.
pub(super) fn as_seen_in_views(hir: regex_syntax::hir::Hir) -> regex_syntax::hir::Hir {
    use regex_syntax::hir::{Capture, Hir, HirKind, Repetition};
    let space = || Hir::literal(b" ".to_vec());
    let is_space = |h: &Hir| matches!(h.kind(), HirKind::Literal(l) if &*l.0 == b" ");
    match hir.into_kind() {
        HirKind::Class(c) if is_space_class(&c) => space(),
        HirKind::Class(c) => Hir::class(c),
        HirKind::Repetition(r) => {
            let sub = as_seen_in_views(*r.sub);
            if is_space(&sub) {
                if r.min >= 1 {
                    space()
                } else {
                    Hir::repetition(Repetition {
                        min: 0,
                        max: Some(1),
                        greedy: r.greedy,
                        sub: Box::new(sub),
                    })
                }
            } else {
                Hir::repetition(Repetition {
                    sub: Box::new(sub),
                    ..r
                })
            }
        }
        HirKind::Capture(c) => Hir::capture(Capture {
            sub: Box::new(as_seen_in_views(*c.sub)),
            ..c
        }),
        HirKind::Concat(subs) => Hir::concat(subs.into_iter().map(as_seen_in_views).collect()),
        HirKind::Alternation(subs) => {
            Hir::alternation(subs.into_iter().map(as_seen_in_views).collect())
        }
        HirKind::Literal(l) => Hir::literal(l.0),
        HirKind::Look(l) => Hir::look(l),
        HirKind::Empty => Hir::empty(),
    }
}

/// Where a match of a regex can start, as the set of bytes it can start with, and whether it
/// can start at the very start of a view (a `^` branch, which matches nowhere else: views hold no
/// line breaks).
#[derive(Debug, Clone)]
pub(super) struct FirstBytes {
    pub bytes: [bool; 256],
    pub at_start: bool,
}

impl FirstBytes {
    /// The first bytes of a view-shaped `hir`; `None` when it can match the empty string, or start
    /// anywhere for another reason.
    pub(super) fn of(hir: &regex_syntax::hir::Hir) -> Option<FirstBytes> {
        let mut out = FirstBytes {
            bytes: [false; 256],
            at_start: false,
        };
        out.add(hir)?.then_some(out)
    }

    /// Adds the first bytes of `hir`; `Some(false)` when `hir` can be empty (the next piece
    /// starts the match too), `None` when the start cannot be bounded.
    fn add(&mut self, hir: &regex_syntax::hir::Hir) -> Option<bool> {
        use regex_syntax::hir::{Class, HirKind, Look};
        match hir.kind() {
            HirKind::Empty => Some(false),
            HirKind::Literal(l) => {
                self.bytes[usize::from(*l.0.first()?)] = true;
                Some(true)
            }
            HirKind::Class(Class::Bytes(c)) => {
                for r in c.iter() {
                    for b in r.start()..=r.end() {
                        self.bytes[usize::from(b)] = true;
                    }
                }
                Some(true)
            }
            HirKind::Class(Class::Unicode(c)) => {
                for r in c.iter() {
                    let (lo, hi) = (utf8_lead(r.start()), utf8_lead(r.end()));
                    for b in lo..=hi {
                        self.bytes[usize::from(b)] = true;
                    }
                }
                Some(true)
            }
            // A match that must start at the start of the view: nothing else starts there.
            HirKind::Look(Look::Start | Look::StartLF | Look::StartCRLF) => {
                self.at_start = true;
                Some(true)
            }
            HirKind::Look(_) => Some(false),
            HirKind::Repetition(r) => {
                let consumed = self.add(&r.sub)?;
                Some(consumed && r.min > 0)
            }
            HirKind::Capture(c) => self.add(&c.sub),
            HirKind::Concat(subs) => {
                for sub in subs {
                    if self.add(sub)? {
                        return Some(true);
                    }
                }
                Some(false)
            }
            HirKind::Alternation(subs) => {
                let mut all = true;
                for sub in subs {
                    all &= self.add(sub)?;
                }
                Some(all)
            }
        }
    }

    /// Whether a match may start at `at` of `text`.
    pub(super) fn may_start(&self, text: &[u8], at: usize) -> bool {
        (self.at_start && at == 0) || text.get(at).is_some_and(|&b| self.bytes[usize::from(b)])
    }
}

/// The first byte of `c` in UTF-8.
fn utf8_lead(c: char) -> u8 {
    let mut buf = [0u8; 4];
    c.encode_utf8(&mut buf);
    buf[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_factors_prefer_rare_pieces() {
        let lits = |re: &str| -> Vec<String> {
            required_factor(re)
                .unwrap_or_default()
                .into_iter()
                .map(|l| String::from_utf8(l).unwrap())
                .collect()
        };
        // The suffixes " ai" / " bot" are everywhere; the middle piece is not.
        assert_eq!(
            lits(
                r"(?:you are|act as)\s+(?:\w+\s+)?(?:unrestricted|amoral)\s+(?:\w+\s+)?(?:ai|bot)"
            ),
            ["amoral", "unrestricted"]
        );
        // A rare suffix stays.
        assert_eq!(
            lits(r"(?:ignore|forget)\s+(?:all\s+)?(?:previous|prior)\s+instructions"),
            ["ior instructions", "ous instructions"]
        );
        // Optional pieces are not required; nothing usable here.
        assert!(lits(r"(?:you are|act as)\s+(?:very\s+)?\w+").is_empty());
        // A leading `\b` is not the piece the prefixes come from.
        assert_eq!(
            lits(r"\bdev mode\s+(?:\w+\s+)?(?:enabled|activated)\s+\w+"),
            ["activated", "enabled"]
        );
        assert_eq!(view_max_len(r"ignore\s+(?:all\s+)?previous"), Some(19));
        assert_eq!(view_max_len(r"ignore\s+\w+"), None);
    }

    #[test]
    fn common_words_are_sorted_for_binary_search() {
        assert!(COMMON_WORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(is_common(b"you are "));
        assert!(is_common(b" ai"));
        assert!(!is_common(b"unrestricted "));
        assert!(!is_common(b"ignore all"));
    }
}
