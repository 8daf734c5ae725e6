//! Literal extraction from the packs' regexes: the prefixes that trigger a regex, the rarest
//! required piece that filters those triggers, and the longest match a regex can have in a view.
//! Pure functions of the pattern text, run once per pack version by [`super::Engine::compile`].

/// Longest literal taken from a regex: longer ones only grow the automaton, and a prefix this
/// long is selective enough. With the shipped packs, 8 bytes give 5,400 automaton patterns and a
/// 9.7 MiB DFA; 16 bytes gave 12,300 and 36 MiB, with the same scan times within noise on every
/// corpus class (the relaxed DFA makes the extra prefix hits cheap to dismiss).
pub(super) const MAX_LITERAL_LEN: usize = 8;

/// Most literal prefixes taken from one regex; more and the regex is scanned unanchored.
pub(super) const MAX_PREFIXES: usize = 256;

/// Most literals in a set a regex without prefixes is searched back from: a short word and
/// what follows it ("your" and forty nouns) is selective where the word alone is not.
pub(super) const MAX_FACTORS: usize = 1024;

/// Longest literal of such a set: "ur underlying" cut at 8 bytes is "ur under", which "our
/// understanding" holds too.
pub(super) const MAX_FACTOR_LEN: usize = 12;

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
    factor_literals_up_to(hir, factor, MAX_PREFIXES, MAX_LITERAL_LEN)
}

/// [`factor_literals`] with at most `limit` literals of at most `len` bytes.
pub(super) fn factor_literals_up_to(
    hir: &regex_syntax::hir::Hir,
    factor: Factor,
    limit: usize,
    len: usize,
) -> Option<Vec<Vec<u8>>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let seq = Extractor::new()
        .kind(match factor {
            Factor::Prefix => ExtractKind::Prefix,
            Factor::Suffix => ExtractKind::Suffix,
        })
        .limit_total(limit)
        .limit_literal_len(len)
        .extract(hir);
    let lits = seq.literals()?;
    if lits.is_empty() || lits.iter().any(|l| l.as_bytes().len() < MIN_PREFIX_LEN) {
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

/// Where the literals of [`required_factor_at`] come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FactorAt {
    /// Every match ends with one of them.
    Suffix,
    /// Top-level piece `k` of the regex starts with one of them.
    Piece(usize),
}

/// Literals, and where in the regex they come from.
pub(super) type Located = (Vec<Vec<u8>>, FactorAt);

/// For a regex with no usable prefixes: a set of literals every match holds, and where it sits,
/// so the part of the regex before it ([`before_factor`]) can be searched backwards from a hit;
/// the rarest usable one of its suffix set and, from each top-level piece on, the prefixes of
/// the rest of the regex. `None` sends the regex to the unanchored walk, which steps a DFA over
/// every byte of every view it reads. Pieces are view-shaped on their own, so piece indices are
/// the regex's own.
pub(super) fn required_factor_at(hir: &regex_syntax::hir::Hir) -> Option<(Vec<Vec<u8>>, FactorAt)> {
    use regex_syntax::hir::HirKind;
    let pieces: &[regex_syntax::hir::Hir] = match hir.kind() {
        HirKind::Concat(pieces) => pieces,
        _ => &[],
    };
    let first = pieces
        .iter()
        .position(|p| p.properties().minimum_len() != Some(0))
        .unwrap_or(pieces.len());
    let suffix = factor_literals(&as_seen_in_views(hir.clone()), Factor::Suffix)
        .map(|l| (l, FactorAt::Suffix));
    // From each piece on, the literals the rest of the regex starts with: longer (so rarer)
    // than the piece's own when it is a short word ("your" + what follows it). The first piece
    // that consumes text is a candidate too: the regex as a whole has no usable prefix when
    // what comes before that piece can match punctuation or nothing (`(?:^|[.!?]\s*)verb`).
    let later = (first..pieces.len()).filter_map(|k| {
        let rest = regex_syntax::hir::Hir::concat(pieces.get(k..).unwrap_or_default().to_vec());
        factor_literals_up_to(
            &as_seen_in_views(rest),
            Factor::Prefix,
            MAX_FACTORS,
            MAX_FACTOR_LEN,
        )
        .map(|l| (l, FactorAt::Piece(k)))
    });
    let mut best: Option<(usize, Located)> = None;
    // A set holding a common literal selects nothing, however rare the others are. Three
    // symbols ("\x27\x27\x27", "](//") or ten bytes of common words ("your content") are rare
    // enough to search back from, though `is_common` counts them as common: what they cost
    // is a short backwards search per hit, against a DFA step per byte of every text.
    let selects = |l: &[u8]| {
        !is_common(l) || l.len() >= 10 || l.iter().filter(|c| c.is_ascii_punctuation()).count() >= 3
    };
    let usable = |(lits, _): &Located| lits.iter().all(|l| selects(l));
    for (lits, at) in suffix.into_iter().chain(later).filter(usable) {
        let score = lits.iter().map(|l| rarity(l)).min().unwrap_or(0);
        // Ties keep the earlier set: the suffix, then pieces in order.
        if best.as_ref().is_none_or(|(b, _)| score > *b) {
            best = Some((score, (lits, at)));
        }
    }
    best.map(|(_, found)| found)
}

/// Bytes one of which every match of `hir` holds: the first bytes of the characters of one of
/// its required pieces (the one whose bytes ordinary text holds least, by [`byte_weight`]), or
/// `None` when no piece is required. A match lies within its longest match's length of such a
/// byte, so a regex walked unanchored need only be walked there: the PII regexes each need a
/// digit, a `+` or an `@`, which most text has few of.
pub(super) fn required_bytes(hir: &regex_syntax::hir::Hir) -> Option<[bool; 256]> {
    use regex_syntax::hir::{Class, HirKind};
    let count = |s: &[bool; 256]| {
        (0..=255u8)
            .filter(|&b| s[usize::from(b)])
            .map(byte_weight)
            .sum::<u32>()
    };
    let mut set = [false; 256];
    match hir.kind() {
        HirKind::Literal(l) => set[usize::from(*l.0.first()?)] = true,
        HirKind::Class(Class::Bytes(c)) => {
            for r in c.iter() {
                for b in r.start()..=r.end() {
                    set[usize::from(b)] = true;
                }
            }
        }
        HirKind::Class(Class::Unicode(c)) => {
            // Per UTF-8 length, the first byte grows with the code point: a range's characters
            // of one length start with the bytes from its first's to its last's.
            const LENGTHS: [(u32, u32, u32, u32); 4] = [
                (0, 0x7f, 0, 0),
                (0x80, 0x7ff, 0xc0, 6),
                (0x800, 0xffff, 0xe0, 12),
                (0x1_0000, 0x10_ffff, 0xf0, 18),
            ];
            for r in c.iter() {
                for (lo, hi, tag, shift) in LENGTHS {
                    let (a, b) = (u32::from(r.start()).max(lo), u32::from(r.end()).min(hi));
                    if a > b {
                        continue;
                    }
                    for lead in (tag | (a >> shift))..=(tag | (b >> shift)) {
                        set[lead as usize & 0xff] = true;
                    }
                }
            }
        }
        HirKind::Repetition(r) if r.min >= 1 => return required_bytes(&r.sub),
        HirKind::Capture(c) => return required_bytes(&c.sub),
        HirKind::Concat(pieces) => {
            return pieces.iter().filter_map(required_bytes).min_by_key(count)
        }
        HirKind::Alternation(branches) => {
            for branch in branches {
                for (b, on) in required_bytes(branch)?.into_iter().enumerate() {
                    set[b] |= on;
                }
            }
        }
        _ => return None,
    }
    set.contains(&true).then_some(set)
}

/// How often ordinary text holds byte `b`, roughly, in relative units: letters and spaces all
/// the time, the punctuation of prose often, the lead bytes of other scripts in their texts,
/// digits now and then, other symbols rarely.
fn byte_weight(b: u8) -> u32 {
    match b {
        b' ' | b'\t' | b'\n' | b'\r' => 100,
        _ if b.is_ascii_alphabetic() => 100,
        b'.' | b',' | b'-' | b'\'' | b'"' | b'(' | b')' | b':' | b';' => 30,
        0x80..=0xff => 20,
        b'0'..=b'9' => 3,
        _ => 2,
    }
}

/// The part of `hir` that precedes its required factor: all of it for a suffix factor, else the
/// pieces before piece `k`. A match holding a factor hit ends (suffix) or continues (piece) where
/// that hit ends (starts), so running this part backwards from there finds where it can start.
pub(super) fn before_factor(hir: &regex_syntax::hir::Hir, at: FactorAt) -> regex_syntax::hir::Hir {
    use regex_syntax::hir::{Hir, HirKind};
    match (hir.kind(), at) {
        (HirKind::Concat(pieces), FactorAt::Piece(k)) => {
            Hir::concat(pieces.get(..k).unwrap_or_default().to_vec())
        }
        _ => hir.clone(),
    }
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
            ["amoral", "unrestri"]
        );
        // A rare suffix stays (cut to MAX_LITERAL_LEN bytes).
        assert_eq!(
            lits(r"(?:ignore|forget)\s+(?:all\s+)?(?:previous|prior)\s+instructions"),
            ["ructions"]
        );
        // Optional pieces are not required; nothing usable here.
        assert!(lits(r"(?:you are|act as)\s+(?:very\s+)?\w+").is_empty());
        // A leading `\b` is not the piece the prefixes come from.
        assert_eq!(
            lits(r"\bdev mode\s+(?:\w+\s+)?(?:enabled|activated)\s+\w+"),
            ["activate", "enabled"]
        );
        assert_eq!(view_max_len(r"ignore\s+(?:all\s+)?previous"), Some(19));
        assert_eq!(view_max_len(r"ignore\s+\w+"), None);
    }

    /// Where a regex has no usable prefix, the literals it is searched back from.
    #[test]
    fn factors_without_prefixes_are_rare_literals() {
        let at = |re: &str| -> Option<(Vec<String>, FactorAt)> {
            let (lits, at) = required_factor_at(&parse_pattern(re)?)?;
            Some((
                lits.into_iter()
                    .map(|l| String::from_utf8(l).unwrap())
                    .collect(),
                at,
            ))
        };
        // The first piece that consumes text, behind a sentence start.
        assert_eq!(
            at(r"(?:^|[.!?]\s*)(?:deaktiviere|desactive)\b\W+\w+"),
            Some((
                vec!["deaktiviere".into(), "desactive".into()],
                FactorAt::Piece(1)
            ))
        );
        // Common words and the rare words after them: the rest of the regex from that piece.
        assert_eq!(
            at(r"(?:^|[.!?]\s*)(?:tell|give)\s+(?:your|ur)\s+(?:hidden|secret)\s+(?:rules|notes)"),
            Some((
                [
                    "give ur hidd",
                    "give ur secr",
                    "give your hi",
                    "give your se",
                    "tell ur hidd",
                    "tell ur secr",
                    "tell your hi",
                    "tell your se"
                ]
                .map(String::from)
                .to_vec(),
                FactorAt::Piece(1)
            ))
        );
        // Three symbols are rare; so are ten bytes of common words.
        assert_eq!(
            at(r"p\W{0,2}w\W{0,2}n\W{0,2}e\W{0,2}d\W{0,2}\s*\x27{3}|\x27{3}\s*\+\s*\x27{3}"),
            Some((vec!["\x27\x27\x27".into()], FactorAt::Suffix))
        );
        assert_eq!(
            at(r"(?:^|\.\s*)(?:your|our)\s+content\s+(?:is|was)\s+\w"),
            Some((
                vec!["our content ".into(), "your content".into()],
                FactorAt::Piece(1)
            ))
        );
        // Nothing but common words and short ones: the unanchored walk.
        assert_eq!(at(r"(?:^|\.\s*)(?:you|it)\s+(?:is|are)\s+\w+"), None);
    }

    /// The bytes a match must hold, for regexes walked unanchored.
    #[test]
    fn required_bytes_are_those_of_a_required_piece() {
        let bytes = |re: &str| -> Option<String> {
            let set = required_bytes(&parse_pattern(re)?)?;
            Some(
                (0..=255u8)
                    .filter(|&b| set[usize::from(b)])
                    .map(|b| {
                        if b.is_ascii() {
                            char::from(b).to_string()
                        } else {
                            format!("<{b:x}>")
                        }
                    })
                    .collect(),
            )
        };
        assert_eq!(
            bytes(r"\b[a-z0-9][a-z0-9.]{0,63}@[a-z]+\.[a-z]{2,}").as_deref(),
            Some("@")
        );
        // The rarest piece: digits, not the hyphen or the letters prose is full of.
        assert_eq!(
            bytes(r"\b[0-9]{3}-[0-9]{4}\b").as_deref(),
            Some("0123456789")
        );
        assert_eq!(bytes(r"[a-d] ?[0-5]").as_deref(), Some("012345"));
        assert_eq!(bytes(r"[a-d] ?\+").as_deref(), Some("+"));
        assert_eq!(bytes(r"(?:\+|\b00)[1-9]").as_deref(), Some("+0"));
        assert_eq!(bytes(r"x?[2-9]{2,}").as_deref(), Some("23456789"));
        // Unicode digits: ASCII ones and the lead bytes of the others (Arabic-Indic,
        // Devanagari, fullwidth, ...).
        let digits = bytes(r"\d").unwrap();
        assert!(digits.starts_with("0123456789<d9>"), "{digits}");
        assert!(digits.contains("<e0>") && digits.contains("<ef>") && digits.contains("<f0>"));
        assert!(
            !digits.contains("<d0>"),
            "Cyrillic letters start with d0: {digits}"
        );
        assert_eq!(bytes(r"é|ж").as_deref(), Some("<c3><d0>"));
        // Nothing required: an optional piece, an alternation with a branch that needs nothing.
        assert_eq!(bytes(r"a?b*"), None);
        assert_eq!(bytes(r"a|\b"), None);
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
