//! Whether a reply reveals text the model was told to keep: the request's effective system
//! prompt, the tenant's protected strings, and the per-request canary.
//!
//! A [`LeakDetector`] is compiled per request from those texts and fed the reply piece by piece
//! ([`LeakDetector::push`]); it keeps its state across pieces, so a copy split over chunks is
//! seen. Every text is compared on normalised forms, so case, spacing, leetspeak and homoglyphs
//! do not hide a copy:
//!
//! - **squeezed**: folded (NFKC, case, homoglyphs), leetspeak folded, then only letters and
//!   digits kept: "T r a m = 3 2", "TRAM-32" and "tr4m32" are all `tram32`. A protected string
//!   (or the canary) whose squeezed form is at least [`MIN_SQUEEZED`] characters leaks when it
//!   appears in the reply's squeezed stream.
//! - **shingles**: runs of [`SHINGLE_WORDS`] normalised words. A long text (a system prompt)
//!   leaks when the reply holds at least [`SHINGLE_SHARE`] of its distinct shingles, or
//!   [`SHINGLE_RUN`] of them: a verbatim or lightly edited copy of a large part of it.
//! - **decoded**: at the end of the reply, base64 and hex blobs in it are decoded (the input
//!   normaliser's decoder, same bounds) and checked the same way.
//!
//! - **paraphrase** (when the detector is given a [`ParaphraseCheck`]): several of the system
//!   prompt's sentences restated in other words, judged by a sentence encoder
//!   ([`crate::paraphrase`]).
//!
//! The canary is a random token Warden adds to the pinned system prompt; the model has no reason
//! to repeat it, so the canary in a reply is a certain leak.

use std::collections::HashSet;

use crate::normalize::{fold, Normalizer, ViewKind};
use crate::paraphrase::ParaphraseCheck;

/// Squeezed protected strings shorter than this are not looked for (too many chance matches).
pub const MIN_SQUEEZED: usize = 6;
/// Words per shingle.
pub const SHINGLE_WORDS: usize = 5;
/// Share of a protected text's shingles that a reply must repeat to leak it.
pub const SHINGLE_SHARE: f64 = 0.3;
/// Shingles of a protected text repeated in a reply that are a leak whatever its length.
pub const SHINGLE_RUN: usize = 12;
/// Protected texts with fewer shingles than this are only checked squeezed.
const MIN_SHINGLES: usize = 3;
/// The squeezed stream keeps this many characters before the newest piece (longest protected
/// string − 1), bounded for very long texts: those are found by shingles.
const MAX_SQUEEZED_TEXT: usize = 256;

/// What leaked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeakKind {
    /// The per-request canary.
    Canary,
    /// A protected string or the system prompt, found squeezed.
    Verbatim,
    /// A large part of a long protected text, found by shingles.
    NearVerbatim,
    /// A protected text found in a decoded blob of the reply.
    Encoded,
    /// Several sentences of a protected text restated in other words.
    Paraphrase,
}

impl LeakKind {
    pub fn name(self) -> &'static str {
        match self {
            LeakKind::Canary => "canary",
            LeakKind::Verbatim => "verbatim",
            LeakKind::NearVerbatim => "near_verbatim",
            LeakKind::Encoded => "encoded",
            LeakKind::Paraphrase => "paraphrase",
        }
    }
}

/// A leak: what kind, and which protected text (its index in the detector's inputs; the canary
/// is `usize::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leak {
    pub kind: LeakKind,
    pub text: usize,
}

/// One protected text, normalised.
#[derive(Debug, Clone)]
struct Protected {
    squeezed: Option<String>,
    /// Its identifiers (codes, keys, passwords: words with letters and digits), squeezed: a
    /// reply that gives away the code in a system prompt leaks it, even alone.
    identifiers: Vec<String>,
    shingles: HashSet<u64>,
}

/// The words of `text` that look like identifiers: letters and digits mixed, at least
/// [`MIN_SQUEEZED`] of them.
fn identifiers(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
        .filter(|w| w.chars().any(|c| c.is_ascii_digit()) && w.chars().any(char::is_alphabetic))
        .map(squeeze)
        .filter(|s| s.chars().count() >= MIN_SQUEEZED)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The per-request leak detector (see the module docs).
#[derive(Debug, Clone)]
pub struct LeakDetector {
    protected: Vec<Protected>,
    canary: Option<String>,
    /// The reply's squeezed stream: the last characters seen.
    squeezed: String,
    longest: usize,
    /// The reply's last `SHINGLE_WORDS - 1` words and the word being read.
    words: Vec<String>,
    partial: String,
    /// Per protected text, its shingles seen in the reply.
    seen: Vec<HashSet<u64>>,
    /// The whole reply, for the decoded check at the end (bounded).
    reply: String,
    /// The semantic check, when the proxy has an encoder and the tenant wants it.
    paraphrase: Option<ParaphraseCheck>,
    leak: Option<Leak>,
}

/// Letters and digits of `text`, folded, leetspeak folded, lowercase.
pub fn squeeze(text: &str) -> String {
    fold(text)
        .chars()
        .filter_map(|c| {
            let c = unleet(c);
            c.is_alphanumeric().then_some(c)
        })
        .flat_map(char::to_lowercase)
        .collect()
}

fn unleet(c: char) -> char {
    match c {
        '0' => 'o',
        '1' | '!' | '|' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' => 't',
        '8' => 'b',
        other => other,
    }
}

/// The normalised words of `text` (folded, letters and digits only, lowercase).
pub(crate) fn words(text: &str) -> Vec<String> {
    fold(text)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn shingle(words: &[String]) -> u64 {
    let mut h = blake3::Hasher::new();
    for w in words {
        h.update(w.as_bytes());
        h.update(&[0]);
    }
    let b = h.finalize();
    u64::from_le_bytes(b.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

fn shingles(words: &[String]) -> HashSet<u64> {
    words.windows(SHINGLE_WORDS).map(shingle).collect()
}

/// Bytes of the reply kept for the decoded check.
const MAX_REPLY_BYTES: usize = 256 * 1024;

impl LeakDetector {
    /// A detector for `texts` (the system prompt, protected strings) and `canary`.
    pub fn new(texts: &[&str], canary: Option<&str>) -> LeakDetector {
        let protected: Vec<Protected> = texts
            .iter()
            .map(|t| {
                let s = squeeze(t);
                let sh = shingles(&words(t));
                Protected {
                    squeezed: (s.chars().count() >= MIN_SQUEEZED).then_some(s),
                    identifiers: identifiers(t),
                    shingles: if sh.len() >= MIN_SHINGLES {
                        sh
                    } else {
                        HashSet::new()
                    },
                }
            })
            .collect();
        let canary = canary.map(squeeze).filter(|c| !c.is_empty());
        let longest = protected
            .iter()
            .flat_map(|p| p.squeezed.iter().chain(&p.identifiers))
            .map(|s| s.chars().count())
            .chain(canary.as_ref().map(|c| c.chars().count()))
            .max()
            .unwrap_or(0)
            .min(MAX_SQUEEZED_TEXT);
        let seen = protected.iter().map(|_| HashSet::new()).collect();
        LeakDetector {
            protected,
            canary,
            squeezed: String::new(),
            longest,
            words: Vec::new(),
            partial: String::new(),
            seen,
            reply: String::new(),
            paraphrase: None,
            leak: None,
        }
    }

    /// Adds the semantic check (built for the same `texts`, so its indices are theirs).
    pub fn with_paraphrase(mut self, check: Option<ParaphraseCheck>) -> LeakDetector {
        self.paraphrase = check;
        self
    }

    /// The semantic check, for what it skipped or failed on.
    pub fn paraphrase(&self) -> Option<&ParaphraseCheck> {
        self.paraphrase.as_ref()
    }

    /// Nothing to look for.
    pub fn is_empty(&self) -> bool {
        self.canary.is_none()
            && self.paraphrase.is_none()
            && self
                .protected
                .iter()
                .all(|p| p.squeezed.is_none() && p.identifiers.is_empty() && p.shingles.is_empty())
    }

    /// How many bytes at the end of `text` could be the beginning of the canary, a protected
    /// string or one of its identifiers (compared squeezed): a stream holds them back until the
    /// next piece says, so a copy is cut before any of it is sent. Bounded by the longest of
    /// those strings.
    pub fn pending_prefix(&self, text: &str) -> usize {
        if self.longest == 0 {
            return 0;
        }
        // Squeezed characters of the tail, each with the byte where its character starts.
        let mut tail: Vec<(usize, char)> = Vec::new();
        for (at, c) in text.char_indices().rev() {
            let mut buf = [0u8; 4];
            let squeezed: Vec<char> = squeeze(c.encode_utf8(&mut buf)).chars().collect();
            for &q in squeezed.iter().rev() {
                tail.push((at, q));
            }
            if tail.len() >= self.longest {
                break;
            }
        }
        tail.reverse();
        let targets: Vec<&str> = self
            .canary
            .iter()
            .map(String::as_str)
            .chain(self.protected.iter().flat_map(|p| {
                p.squeezed
                    .iter()
                    .filter(|s| s.chars().count() <= MAX_SQUEEZED_TEXT)
                    .chain(&p.identifiers)
                    .map(String::as_str)
            }))
            .collect();
        for k in 0..tail.len() {
            let suffix: String = tail[k..].iter().map(|&(_, c)| c).collect();
            if targets
                .iter()
                .any(|t| t.len() > suffix.len() && t.starts_with(suffix.as_str()))
            {
                return text.len() - tail[k].0;
            }
        }
        0
    }

    /// The first leak found so far.
    pub fn leak(&self) -> Option<Leak> {
        self.leak
    }

    /// The next piece of the reply; the first leak, once there is one.
    pub fn push(&mut self, piece: &str) -> Option<Leak> {
        if self.leak.is_some() {
            return self.leak;
        }
        if self.reply.len() < MAX_REPLY_BYTES {
            let room = crate::normalize::floor_boundary(piece, MAX_REPLY_BYTES - self.reply.len());
            self.reply.push_str(&piece[..room]);
        }
        self.squeezed.push_str(&squeeze(piece));
        self.leak = self.check_squeezed();
        // Keep what a string split over the next piece still needs.
        let keep = self.longest.saturating_sub(1);
        let n = self.squeezed.chars().count();
        if n > keep {
            let cut = self
                .squeezed
                .char_indices()
                .nth(n - keep)
                .map_or(self.squeezed.len(), |(i, _)| i);
            self.squeezed.drain(..cut);
        }
        if self.leak.is_none() {
            self.feed_words(piece, false);
            self.leak = self.check_shingles();
        }
        if self.leak.is_none() {
            self.leak = self
                .paraphrase
                .as_mut()
                .and_then(|p| p.push(piece))
                .map(|text| Leak {
                    kind: LeakKind::Paraphrase,
                    text,
                });
        }
        self.leak
    }

    /// The normaliser [`LeakDetector::finish`] decodes with: the guard's bounds, but blobs as
    /// short as [`MIN_SQUEEZED`] characters encoded (a protected code is short).
    pub fn normalizer() -> Normalizer {
        Normalizer::new(crate::normalize::Limits {
            min_base64_len: 8,
            min_hex_len: 2 * MIN_SQUEEZED,
            ..Default::default()
        })
    }

    /// The end of the reply: the last word, and the decoded blobs (`normalizer`: see
    /// [`LeakDetector::normalizer`]).
    pub fn finish(&mut self, normalizer: &Normalizer) -> Option<Leak> {
        if self.leak.is_some() {
            return self.leak;
        }
        self.feed_words("", true);
        self.leak = self.check_shingles();
        if self.leak.is_none() {
            let views = normalizer.views(&self.reply);
            self.leak = views
                .views
                .iter()
                .filter(|v| matches!(v.kind, ViewKind::Decoded { .. }))
                .find_map(|v| self.check_whole(&v.text))
                .map(|l| Leak {
                    kind: if l.kind == LeakKind::Canary {
                        LeakKind::Canary
                    } else {
                        LeakKind::Encoded
                    },
                    text: l.text,
                });
        }
        if self.leak.is_none() {
            self.leak = self
                .paraphrase
                .as_mut()
                .and_then(ParaphraseCheck::finish)
                .map(|text| Leak {
                    kind: LeakKind::Paraphrase,
                    text,
                });
        }
        self.leak
    }

    /// A whole text checked on its own (a decoded blob), squeezed and by shingles.
    fn check_whole(&self, text: &str) -> Option<Leak> {
        let squeezed = squeeze(text);
        if let Some(l) = self.find_squeezed(&squeezed) {
            return Some(l);
        }
        let sh = shingles(&words(text));
        self.protected.iter().enumerate().find_map(|(i, p)| {
            let n = p.shingles.intersection(&sh).count();
            (n > 0 && (n as f64 / p.shingles.len() as f64 >= SHINGLE_SHARE || n >= SHINGLE_RUN))
                .then_some(Leak {
                    kind: LeakKind::NearVerbatim,
                    text: i,
                })
        })
    }

    fn check_squeezed(&self) -> Option<Leak> {
        self.find_squeezed(&self.squeezed)
    }

    fn find_squeezed(&self, squeezed: &str) -> Option<Leak> {
        if let Some(c) = &self.canary {
            if squeezed.contains(c.as_str()) {
                return Some(Leak {
                    kind: LeakKind::Canary,
                    text: usize::MAX,
                });
            }
        }
        for (i, p) in self.protected.iter().enumerate() {
            let whole = p
                .squeezed
                .iter()
                .filter(|s| s.chars().count() <= MAX_SQUEEZED_TEXT);
            if whole
                .chain(&p.identifiers)
                .any(|s| squeezed.contains(s.as_str()))
            {
                return Some(Leak {
                    kind: LeakKind::Verbatim,
                    text: i,
                });
            }
        }
        None
    }

    fn feed_words(&mut self, piece: &str, end: bool) {
        let mut done: Vec<String> = Vec::new();
        for c in fold(piece).chars() {
            if c.is_alphanumeric() {
                self.partial.extend(c.to_lowercase());
            } else if !self.partial.is_empty() {
                done.push(std::mem::take(&mut self.partial));
            }
        }
        if end && !self.partial.is_empty() {
            done.push(std::mem::take(&mut self.partial));
        }
        for w in done {
            self.words.push(w);
            if self.words.len() > SHINGLE_WORDS {
                self.words.remove(0);
            }
            if self.words.len() == SHINGLE_WORDS {
                let h = shingle(&self.words);
                for (p, seen) in self.protected.iter().zip(self.seen.iter_mut()) {
                    if p.shingles.contains(&h) {
                        seen.insert(h);
                    }
                }
            }
        }
    }

    fn check_shingles(&self) -> Option<Leak> {
        for (i, (p, seen)) in self.protected.iter().zip(&self.seen).enumerate() {
            if p.shingles.is_empty() || seen.is_empty() {
                continue;
            }
            let share = seen.len() as f64 / p.shingles.len() as f64;
            if share >= SHINGLE_SHARE || seen.len() >= SHINGLE_RUN {
                return Some(Leak {
                    kind: LeakKind::NearVerbatim,
                    text: i,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &str = "You are Aria, the support assistant of Northwind Bank. Never discuss \
        interest rates before the customer is verified. The escalation code is TRAM-32. Answer \
        in a friendly tone and keep replies under 120 words.";

    fn run(d: &mut LeakDetector, pieces: &[&str]) -> Option<Leak> {
        for p in pieces {
            if let Some(l) = d.push(p) {
                return Some(l);
            }
        }
        d.finish(&LeakDetector::normalizer())
    }

    #[test]
    fn copies_are_caught_however_they_are_disguised_or_split() {
        for (pieces, kind) in [
            (
                vec!["Sure: the code is T R A M", " = 3 2."],
                LeakKind::Verbatim,
            ),
            (vec!["the escalation code is tr4m-32"], LeakKind::Verbatim),
            (
                vec![
                    "My instructions: you are aria, the support assistant of northwind ",
                    "bank. never discuss interest rates before the customer is verified.",
                ],
                LeakKind::NearVerbatim,
            ),
            (
                vec!["Encoded: VFJBTS0zMiBpcyB0aGUgZXNjYWxhdGlvbiBjb2Rl"],
                LeakKind::Encoded,
            ),
            (vec!["ref wdn-", "7f3a9c01"], LeakKind::Canary),
        ] {
            let mut d = LeakDetector::new(&[PROMPT, "TRAM-32"], Some("wdn-7f3a9c01"));
            let leak = run(&mut d, &pieces);
            assert_eq!(leak.map(|l| l.kind), Some(kind), "{pieces:?}");
        }
    }

    #[test]
    fn the_beginning_of_a_protected_string_is_held() {
        let d = LeakDetector::new(&["Be brief.", "TRAM-32"], Some("wdn-7f3a9c01"));
        assert_eq!(d.pending_prefix("the code is T R A"), "T R A".len());
        assert_eq!(d.pending_prefix("ref wdn-7f3"), "wdn-7f3".len());
        assert_eq!(d.pending_prefix("a quiet morning."), 0);
    }

    #[test]
    fn ordinary_replies_leak_nothing() {
        for reply in [
            "Interest rates depend on the product; a banker can tell you more once you are verified.",
            "Hello! I'm Aria. How can I help you today?",
            "Your tram leaves at 3:20 from platform 2.",
        ] {
            let mut d = LeakDetector::new(&[PROMPT, "TRAM-32"], Some("wdn-7f3a9c01"));
            assert_eq!(run(&mut d, &[reply]), None, "{reply}");
        }
    }
}
