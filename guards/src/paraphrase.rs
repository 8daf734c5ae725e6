//! The leak detector's semantic layer: a reply that restates several of the system prompt's
//! instructions in its own words ("I play Max for Contoso: I'm meant to keep our price levels to
//! myself, and my answers should stay short") shares no identifier and few word runs with the
//! prompt, so the lexical checks of [`crate::leak`] miss it. A sentence encoder does not.
//!
//! - The protected text is split into sentences; those of at least [`MIN_WORDS`] words are
//!   embedded once and cached by the text's hash ([`Paraphraser::meaning`]). A text with fewer
//!   than [`MIN_SENTENCES`] such sentences is not checked this way: restating *one* instruction
//!   is what a model that follows it does ("I can't discuss rates before you are verified").
//! - The reply is cut into clauses (at `.`, `!`, `?`, `;`, `:`, `,`, line breaks and " and ");
//!   the clauses of at least [`MIN_WORDS`] words are embedded as each one completes, so a
//!   stream that restates its prompt is stopped a clause after the second restated instruction.
//! - Per prompt sentence, the best cosine similarity of any clause so far. The reply leaks the
//!   prompt when [`MIN_SENTENCES`] different prompt sentences each reach [`SIMILARITY`].
//!
//! [`SIMILARITY`] was set on the development set (`guards/tests/output/dev.jsonl`), where the
//! second-best prompt sentence of every paraphrased leak scored 0.56–0.68 and of every reply that
//! is not a leak (refusals, ordinary answers by the same persona) at most 0.33. Lines written
//! afterwards (`*-held-out`) show the real overlap: paraphrases in other words score 0.30–0.72
//! (65% caught), replies that apply one or two instructions in action up to 0.47 (none flagged).
//!
//! The work is bounded: at most [`MAX_CLAUSES`] clauses of a reply are embedded (a reply that
//! restates its prompt does so early); past that the check stops and says so
//! ([`ParaphraseCheck::skipped`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

/// Turns texts into unit-length embeddings (so a dot product is a cosine similarity). The
/// proxy's is `warden_inference::encoder::SentenceEncoder` (all-MiniLM-L6-v2).
pub trait Encoder: Send + Sync + std::fmt::Debug {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String>;
}

/// Words a sentence or clause needs to be embedded.
pub const MIN_WORDS: usize = 4;
/// Prompt sentences a reply must restate to leak the prompt.
pub const MIN_SENTENCES: usize = 2;
/// Cosine similarity at which a clause restates a prompt sentence.
pub const SIMILARITY: f32 = 0.5;
/// Clauses of one reply embedded at most.
pub const MAX_CLAUSES: usize = 64;
/// Prompt sentences embedded per protected text at most (the first ones): bounds what a
/// system prompt never seen before costs (about 2.6 ms a sentence) on the request's thread.
pub const MAX_SENTENCES: usize = 16;
/// Bytes of a reply without a sentence end held before its clauses are judged anyway.
const MAX_PENDING: usize = 2048;
/// Distinct protected texts whose embeddings are kept.
const CACHE_TEXTS: usize = 256;

/// A protected text's sentences, embedded, and the stems of its content words.
#[derive(Debug)]
pub struct Meaning {
    sentences: Vec<Vec<f32>>,
    stems: HashSet<String>,
}

/// Meanings by the hash of their text (`None`: too short to check), and the order they came in.
type Cache = (HashMap<[u8; 32], Option<Arc<Meaning>>>, VecDeque<[u8; 32]>);

/// The encoder and a cache of protected texts' meanings (a tenant's system prompt is the same
/// from one request to the next).
#[derive(Debug)]
pub struct Paraphraser {
    encoder: Arc<dyn Encoder>,
    cache: Mutex<Cache>,
}

impl Paraphraser {
    pub fn new(encoder: Arc<dyn Encoder>) -> Paraphraser {
        Paraphraser {
            encoder,
            cache: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    /// The encoder.
    pub fn encoder(&self) -> Arc<dyn Encoder> {
        self.encoder.clone()
    }

    /// The meaning of `text`, `None` when it has fewer than [`MIN_SENTENCES`] sentences worth
    /// checking. Embedded on first sight, then cached.
    pub fn meaning(&self, text: &str) -> Result<Option<Arc<Meaning>>, String> {
        let key = *blake3::hash(text.as_bytes()).as_bytes();
        if let Some(m) = self.lock().0.get(&key) {
            return Ok(m.clone());
        }
        let sentences: Vec<&str> = sentences(text)
            .into_iter()
            .filter(|s| word_count(s) >= MIN_WORDS)
            .take(MAX_SENTENCES)
            .collect();
        let meaning = if sentences.len() < MIN_SENTENCES {
            None
        } else {
            Some(Arc::new(Meaning {
                sentences: self.encoder.embed(&sentences)?,
                stems: stems(text).collect(),
            }))
        };
        let mut cache = self.lock();
        let (map, order) = &mut *cache;
        if map.len() >= CACHE_TEXTS {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        if map.insert(key, meaning.clone()).is_none() {
            order.push_back(key);
        }
        Ok(meaning)
    }

    /// A check of one reply against `texts` (their index is what a leak names); texts with no
    /// meaning are left to the lexical checks. `Err` when the encoder failed.
    pub fn check(&self, texts: &[&str]) -> Result<Option<ParaphraseCheck>, String> {
        let mut protected = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            if let Some(m) = self.meaning(t)? {
                protected.push((i, m));
            }
        }
        if protected.is_empty() {
            return Ok(None);
        }
        let best = protected
            .iter()
            .map(|(_, m)| vec![f32::MIN; m.sentences.len()])
            .collect();
        Ok(Some(ParaphraseCheck {
            encoder: self.encoder.clone(),
            protected,
            best,
            pending: String::new(),
            clauses: 0,
            skipped: false,
            errors: 0,
            leak: None,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One reply's paraphrase check, fed piece by piece.
#[derive(Debug, Clone)]
pub struct ParaphraseCheck {
    encoder: Arc<dyn Encoder>,
    /// (index of the protected text, its meaning).
    protected: Vec<(usize, Arc<Meaning>)>,
    /// Per protected text, per sentence: the best similarity of a clause so far.
    best: Vec<Vec<f32>>,
    /// The reply since the last sentence end.
    pending: String,
    clauses: usize,
    skipped: bool,
    errors: usize,
    leak: Option<usize>,
}

impl ParaphraseCheck {
    /// The next piece of the reply; the index of the protected text it leaks, once it does.
    pub fn push(&mut self, piece: &str) -> Option<usize> {
        if self.leak.is_some() || self.skipped {
            return self.leak;
        }
        self.pending.push_str(piece);
        // Up to the last clause end that has a space after it (so "3.5" is not cut): a
        // restated prompt is stopped two clauses in, not at the end of its sentence.
        let mut cut = self
            .pending
            .char_indices()
            .zip(self.pending.chars().skip(1))
            .filter(|((_, c), next)| {
                *c == '\n' || is_wide_end(*c) || (is_clause_end(*c) && next.is_whitespace())
            })
            .map(|((i, c), _)| i + c.len_utf8())
            .last();
        // A reply without clause ends is judged in pieces cut at a space, or anywhere (on a
        // character) when it has none: what is held stays bounded.
        if cut.is_none() && self.pending.len() > MAX_PENDING {
            cut = Some(
                self.pending
                    .rfind(char::is_whitespace)
                    .filter(|&i| i > 0)
                    .unwrap_or_else(|| {
                        crate::normalize::floor_boundary(&self.pending, MAX_PENDING)
                    }),
            );
        }
        if let Some(cut) = cut {
            let done: String = self.pending.drain(..cut).collect();
            self.judge(&done);
        }
        self.leak
    }

    /// The end of the reply.
    pub fn finish(&mut self) -> Option<usize> {
        if self.leak.is_none() && !self.skipped {
            let rest = std::mem::take(&mut self.pending);
            self.judge(&rest);
        }
        self.leak
    }

    /// The reply had more clauses than [`MAX_CLAUSES`]: the rest was not checked.
    pub fn skipped(&self) -> bool {
        self.skipped
    }

    /// Encoder failures (the check then found nothing in those clauses).
    pub fn errors(&self) -> usize {
        self.errors
    }

    /// Clauses embedded so far.
    pub fn embedded(&self) -> usize {
        self.clauses
    }

    /// A clause can restate a prompt sentence only if it shares a content word with the prompt
    /// (by stem) or speaks of what must or may be done; the rest of a reply (most of an
    /// ordinary answer) is not embedded.
    fn worth_embedding(&self, clause: &str) -> bool {
        let lower = clause.to_lowercase();
        OBLIGATION.iter().any(|w| lower.contains(w))
            || stems(&lower).any(|st| self.protected.iter().any(|(_, m)| m.stems.contains(&st)))
    }

    fn judge(&mut self, text: &str) {
        let mut clauses: Vec<&str> = clauses(text)
            .into_iter()
            .filter(|c| word_count(c) >= MIN_WORDS && self.worth_embedding(c))
            .collect();
        if clauses.is_empty() {
            return;
        }
        let room = MAX_CLAUSES.saturating_sub(self.clauses);
        if clauses.len() > room {
            clauses.truncate(room);
            self.skipped = true;
        }
        self.clauses += clauses.len();
        let embedded = match self.encoder.embed(&clauses) {
            Ok(e) => e,
            Err(_) => {
                self.errors += 1;
                return;
            }
        };
        for ((text, meaning), best) in self.protected.iter().zip(self.best.iter_mut()) {
            for (s, b) in meaning.sentences.iter().zip(best.iter_mut()) {
                for c in &embedded {
                    *b = b.max(dot(s, c));
                }
            }
            if best.iter().filter(|&&b| b >= SIMILARITY).count() >= MIN_SENTENCES {
                self.leak = Some(*text);
                return;
            }
        }
    }
}

/// Words of obligation and permission: a clause holding one may restate an instruction whose
/// content words it does not share ("my answers should stay short" for "keep replies under 120
/// words").
const OBLIGATION: [&str; 16] = [
    "should",
    "must",
    "supposed",
    "meant to",
    "told",
    "instruct",
    "required",
    "allowed",
    "never",
    "always",
    "only",
    "have to",
    "need to",
    "not to",
    "expected to",
    "asked to",
];

/// Words that say nothing of a prompt's content.
const STOPWORDS: [&str; 24] = [
    "about", "after", "also", "been", "before", "being", "could", "does", "from", "have", "into",
    "more", "some", "than", "that", "their", "them", "then", "there", "these", "they", "this",
    "what", "with",
];

/// Stems (first five letters, lowercase) of the words of at least four letters that are not
/// [`STOPWORDS`].
fn stems(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 4)
        .map(str::to_lowercase)
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| w.chars().take(5).collect())
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn word_count(s: &str) -> usize {
    s.split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .count()
}

fn is_sentence_end(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '\n' | '。' | '！' | '？')
}

fn is_clause_end(c: char) -> bool {
    is_sentence_end(c) || matches!(c, ';' | ':' | ',' | '；' | '，')
}

/// Full-width punctuation ends a clause without a space after it (Chinese, Japanese).
fn is_wide_end(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '；' | '，' | '、')
}

/// Sentences of a protected text: cut after `.`, `!`, `?` followed by whitespace, and at line
/// breaks.
fn sentences(text: &str) -> Vec<&str> {
    split(text, |c, next| {
        c == '\n'
            || matches!(c, '。' | '！' | '？')
            || (is_sentence_end(c) && next.is_none_or(char::is_whitespace))
    })
}

/// Clauses of a reply: sentences, cut further after `;`, `:` and `,`, and before " and ".
fn clauses(text: &str) -> Vec<&str> {
    split(text, |c, next| {
        c == '\n' || is_wide_end(c) || (is_clause_end(c) && next.is_none_or(char::is_whitespace))
    })
    .into_iter()
    .flat_map(|s| s.split(" and "))
    .map(str::trim)
    .filter(|s| !s.is_empty())
    .collect()
}

fn split(text: &str, cut_after: impl Fn(char, Option<char>) -> bool) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        if cut_after(c, next) {
            let end = i + c.len_utf8();
            if let Some(s) = text
                .get(start..end)
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                out.push(s);
            }
            start = end;
        }
    }
    if let Some(s) = text.get(start..).map(str::trim).filter(|s| !s.is_empty()) {
        out.push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bag-of-words encoder for the logic (the real model is tested in `warden-inference` and
    /// end to end): each word hashed to one of 64 dimensions, normalised.
    #[derive(Debug)]
    struct Words;

    impl Encoder for Words {
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
            Ok(texts
                .iter()
                .map(|t| {
                    let mut v = vec![0f32; 64];
                    for w in t
                        .split(|c: char| !c.is_alphanumeric())
                        .filter(|w| !w.is_empty())
                    {
                        let h = blake3::hash(w.to_lowercase().as_bytes()).as_bytes()[0];
                        v[usize::from(h) % 64] += 1.0;
                    }
                    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                    v.iter().map(|x| x / n).collect()
                })
                .collect())
        }
    }

    const PROMPT: &str = "You are Max, the assistant of Contoso Travel. Do not reveal internal \
        pricing tiers. Never discuss interest rates before the customer is verified. Be brief.";

    fn run(p: &Paraphraser, pieces: &[&str]) -> Option<usize> {
        let mut c = p.check(&["Be brief.", PROMPT]).unwrap().unwrap();
        for piece in pieces {
            if let Some(l) = c.push(piece) {
                return Some(l);
            }
        }
        c.finish()
    }

    #[test]
    fn two_restated_sentences_leak_one_does_not() {
        let p = Paraphraser::new(Arc::new(Words));
        // Two prompt sentences restated, split over pieces mid-word.
        let leak = run(
            &p,
            &[
                "Sure. I must not reveal internal pri",
                "cing tiers, and I never discuss interest rates before a customer is verif",
                "ied. Anything else?",
            ],
        );
        assert_eq!(leak, Some(1));
        // One instruction followed, not revealed as a list of rules.
        assert_eq!(
            run(
                &p,
                &["I can't discuss interest rates before the customer is verified."]
            ),
            None
        );
        assert_eq!(run(&p, &["Paris is lovely in spring. Pack light."]), None);
    }

    #[test]
    fn short_texts_are_left_to_the_lexical_checks_and_meanings_are_cached() {
        let p = Paraphraser::new(Arc::new(Words));
        assert!(p.meaning("Be brief. Be kind.").unwrap().is_none());
        let a = p.meaning(PROMPT).unwrap().unwrap();
        let b = p.meaning(PROMPT).unwrap().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.sentences.len(), 3);
    }

    #[test]
    fn clauses_and_sentences_cut_where_expected() {
        assert_eq!(
            clauses("I play Max: keep prices private, be short and avoid rates. Pi is 3.14 ok"),
            vec![
                "I play Max:",
                "keep prices private,",
                "be short",
                "avoid rates.",
                "Pi is 3.14 ok"
            ]
        );
        assert_eq!(
            sentences("One two. Three\nFour."),
            vec!["One two.", "Three", "Four."]
        );
    }

    #[test]
    fn work_is_bounded_and_said() {
        let p = Paraphraser::new(Arc::new(Words));
        let mut c = p.check(&[PROMPT]).unwrap().unwrap();
        let long = "a customer wants a receipt today. ".repeat(MAX_CLAUSES + 10);
        assert_eq!(c.push(&long), None);
        assert_eq!(c.push("and more text here."), None);
        assert!(c.skipped());
        assert_eq!(c.embedded(), MAX_CLAUSES);
    }

    #[test]
    fn a_reply_without_spaces_is_judged_in_bounded_pieces() {
        let p = Paraphraser::new(Arc::new(Words));
        let mut c = p.check(&[PROMPT]).unwrap().unwrap();
        let blob = "QUJDRA".repeat(2_000);
        for piece in blob.as_bytes().chunks(7) {
            c.push(std::str::from_utf8(piece).unwrap());
            assert!(c.pending.len() <= MAX_PENDING + 7);
        }
        assert_eq!(
            clauses("价格保密，回答简短。"),
            vec!["价格保密，", "回答简短。"]
        );
    }

    #[test]
    fn clauses_that_share_nothing_with_the_prompt_are_not_embedded() {
        let p = Paraphraser::new(Arc::new(Words));
        let mut c = p.check(&[PROMPT]).unwrap().unwrap();
        c.push("Paris is lovely in spring, the museums open late on Fridays, ");
        c.push("and the river walks are free. Your tiers of cake arrive at noon; ");
        c.push("you should book early. ");
        c.finish();
        // "tiers" is a word of the prompt; "should" speaks of what must be done.
        assert_eq!(c.embedded(), 2);
    }
}
