//! Whether a reply is supported by the context it was given (retrieved documents, tool output):
//! the signal behind the hallucination detector.
//!
//! - **Lexical support**: the reply's content words (folded, lowercase; stop words and the words
//!   answers use to talk about their sources dropped) that appear nowhere in the context or the
//!   question, by word or by five-letter stem ("publish" supports "published"). The share of
//!   unsupported words is the score's base: a reply that names people, places, numbers or dates
//!   the context never mentions scores high.
//! - **Citations**: a `[n]` citation with no document `n`, or a URL the context never mentions,
//!   is an invented source; any makes the score at least [`CITATION_SCORE`].
//!
//! The score is in 0–1; a reply is flagged at [`DEFAULT_THRESHOLD`] (the proxy's
//! `[detectors] hallucination_threshold`). On HaluEval QA (`warden output eval`, task
//! `grounding`) the score's ROC AUC is 0.89; a reply that restates a wrong claim with the
//! context's own words ("First for Women was started first") is not caught this way.

use std::collections::HashSet;

/// Replies flagged at this score by default.
pub const DEFAULT_THRESHOLD: f32 = 0.25;
/// The least score of a reply that cites a source it was not given.
pub const CITATION_SCORE: f32 = 0.9;
/// Bytes of context and of reply read at most (the rest is ignored).
pub const MAX_BYTES: usize = 256 * 1024;

/// The grounding of one reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Grounding {
    /// Content words of the reply.
    pub words: usize,
    /// Of those, the ones the context does not support.
    pub unsupported: usize,
    /// Citations (`[n]`, URLs) to sources the context does not have.
    pub invented_citations: usize,
    /// 0 (supported) to 1 (unsupported).
    pub score: f32,
}

/// Words that carry no claim: function words, and how answers refer to their sources.
const STOP: &[&str] = &[
    "the",
    "and",
    "for",
    "are",
    "was",
    "were",
    "been",
    "being",
    "has",
    "have",
    "had",
    "his",
    "her",
    "hers",
    "him",
    "its",
    "our",
    "their",
    "them",
    "they",
    "this",
    "that",
    "these",
    "those",
    "which",
    "who",
    "whom",
    "whose",
    "what",
    "when",
    "where",
    "why",
    "how",
    "with",
    "from",
    "into",
    "onto",
    "than",
    "then",
    "there",
    "here",
    "also",
    "but",
    "not",
    "yes",
    "can",
    "could",
    "would",
    "should",
    "will",
    "shall",
    "may",
    "might",
    "must",
    "does",
    "did",
    "doing",
    "done",
    "about",
    "above",
    "after",
    "before",
    "below",
    "between",
    "both",
    "each",
    "either",
    "neither",
    "more",
    "most",
    "other",
    "some",
    "such",
    "only",
    "own",
    "same",
    "very",
    "just",
    "any",
    "all",
    "you",
    "your",
    "she",
    "one",
    "ones",
    "because",
    "while",
    "during",
    "over",
    "under",
    "again",
    "further",
    "once",
    "out",
    "off",
    "too",
    "nor",
    "per",
    "via",
    "upon",
    "yet",
    "still",
    "even",
    "according",
    "based",
    "source",
    "sources",
    "document",
    "documents",
    "context",
    "provided",
    "information",
    "answer",
    "mentioned",
    "mentions",
    "states",
    "stated",
    "says",
    "said",
    "passage",
    "text",
    "article",
    "given",
    "known",
    "called",
    "named",
    "following",
    "indeed",
    "however",
    "therefore",
    "thus",
    "first",
    "second",
    "well",
    "many",
    "much",
];

/// The words of `text` ([`crate::leak`]'s normalised words) that can carry a claim.
fn content_words(text: &str) -> Vec<String> {
    static STOP_SET: std::sync::OnceLock<HashSet<&'static str>> = std::sync::OnceLock::new();
    let stop = STOP_SET.get_or_init(|| STOP.iter().copied().collect());
    crate::leak::words(text)
        .into_iter()
        .filter(|w| {
            (w.chars().count() >= 3 || w.chars().any(|c| c.is_ascii_digit()))
                && !stop.contains(w.as_str())
        })
        .collect()
}

fn stem(w: &str) -> String {
    w.chars().take(5).collect()
}

fn bounded(s: &str) -> &str {
    &s[..crate::normalize::floor_boundary(s, MAX_BYTES.min(s.len()))]
}

/// Scores `reply` against `documents` (in order: `[1]` is the first) and the `question`.
/// `None` when there is no context or the reply has no content word to judge.
pub fn grounding(documents: &[&str], question: &str, reply: &str) -> Option<Grounding> {
    if documents.iter().all(|d| d.trim().is_empty()) {
        return None;
    }
    let mut known: HashSet<String> = HashSet::new();
    let mut stems: HashSet<String> = HashSet::new();
    let mut context_len = 0;
    for d in documents.iter().copied().chain(std::iter::once(question)) {
        let d = bounded(d);
        context_len += d.len();
        if context_len > 4 * MAX_BYTES {
            break;
        }
        for w in content_words(d) {
            stems.insert(stem(&w));
            known.insert(w);
        }
    }
    let reply = bounded(reply);
    let words = content_words(reply);
    let invented = invented_citations(documents, reply);
    if words.is_empty() && invented == 0 {
        return None;
    }
    let unsupported = words
        .iter()
        .filter(|w| !known.contains(w.as_str()) && !stems.contains(&stem(w)))
        .count();
    let share = if words.is_empty() {
        0.0
    } else {
        unsupported as f32 / words.len() as f32
    };
    let score = if invented > 0 {
        share.max(CITATION_SCORE)
    } else {
        share
    };
    Some(Grounding {
        words: words.len(),
        unsupported,
        invented_citations: invented,
        score,
    })
}

/// URLs of a reply checked at most.
const MAX_URLS: usize = 32;

/// `[n]` with no document `n`, and URLs none of the documents contains (the first
/// [`MAX_URLS`], against the documents' first [`MAX_BYTES`] each).
fn invented_citations(documents: &[&str], reply: &str) -> usize {
    let mut n = 0;
    let b = reply.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'[' {
            let digits: String = reply[i + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let close = i + 1 + digits.len();
            if !digits.is_empty() && b.get(close) == Some(&b']') {
                let k: usize = digits.parse().unwrap_or(usize::MAX);
                if k == 0 || k > documents.len() {
                    n += 1;
                }
                i = close;
            }
        }
        i += 1;
    }
    for url in reply
        .split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | '<' | '>' | '"'))
        .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
        .take(MAX_URLS)
    {
        let url = url.trim_end_matches(['.', ',', ';', ':', ']']);
        if !documents.iter().any(|d| bounded(d).contains(url)) {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "The Oberoi Group is a hotel company with its head office in Delhi. It was \
        founded in 1934 by Mohan Singh Oberoi.";

    #[test]
    fn supported_replies_score_low_and_invented_facts_high() {
        let q = "Where is the Oberoi Group's head office?";
        let good = grounding(
            &[DOC],
            q,
            "According to the documents, its head office is in Delhi.",
        )
        .unwrap();
        assert_eq!(good.unsupported, 0, "{good:?}");
        let bad = grounding(
            &[DOC],
            q,
            "Mumbai, the financial capital of India, since 1952.",
        )
        .unwrap();
        assert!(bad.score > 0.6, "{bad:?}");
        // Stems: "founder" is supported by "founded".
        let stem = grounding(&[DOC], q, "Its founder was Mohan Singh Oberoi.").unwrap();
        assert_eq!(stem.unsupported, 0, "{stem:?}");
    }

    #[test]
    fn invented_citations_are_caught() {
        let q = "Who founded it?";
        let g = grounding(&[DOC], q, "Mohan Singh Oberoi founded it [1].").unwrap();
        assert_eq!(g.invented_citations, 0);
        let g = grounding(&[DOC], q, "Mohan Singh Oberoi founded it [3].").unwrap();
        assert_eq!(g.invented_citations, 1);
        assert!(g.score >= CITATION_SCORE);
        let g = grounding(
            &[DOC],
            q,
            "See https://example.com/oberoi for Mohan Singh Oberoi.",
        )
        .unwrap();
        assert_eq!(g.invented_citations, 1);
    }

    #[test]
    fn no_context_or_no_words_is_not_judged() {
        assert!(grounding(&[], "q", "Delhi").is_none());
        assert!(grounding(&["  "], "q", "Delhi").is_none());
        assert!(grounding(&[DOC], "q", "Yes, it is.").is_none());
    }
}
