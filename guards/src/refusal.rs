//! Whether a model's reply is a refusal, decided from its opening before the stream ends.
//!
//! A refusal says so at once ("I'm sorry, but I can't help with that", "As an AI, I won't…",
//! "This request goes against my guidelines"); a reply that complies and later mentions policies
//! or safety does not open that way. So only the head of the reply is read: its first
//! [`HEAD_SENTENCES`] sentences, at most [`HEAD_BYTES`] bytes, folded like every guard view
//! (case, width, homoglyphs, typographic apostrophes). The decision is made as soon as the head
//! is complete, or at the end of a shorter reply.
//!
//! Patterns (English first, with the common Spanish, French and German openings): a statement
//! of inability or unwillingness tied to helping ("I can't assist with", "I won't provide",
//! "I'm unable to", "I must decline"); a policy objection ("goes against my guidelines", "is not
//! appropriate for me to"); the "As an AI (language model), I …" disclaimer followed by a
//! negation. An apology alone ("I'm sorry to hear that") is not a refusal.

use regex_automata::meta::Regex;
use regex_automata::util::syntax;

use crate::normalize::fold;

/// Bytes of the reply's head that are read.
pub const HEAD_BYTES: usize = 400;
/// Sentences of the reply's head that are read.
pub const HEAD_SENTENCES: usize = 2;

const PATTERNS: &[&str] = &[
    // Inability or unwillingness, tied to doing what was asked.
    r"\bi(?: am|'m|m)? ?(?:(?:really |truly |very )?sorry,? (?:but )?)?(?:i )?(?:can ?not|can't|cant|won't|wont|will not|am not able to|'m not able to|m not able to|am unable to|'m unable to|m unable to|do not|don't|dont)(?: be able to)? (?:help|assist|provide|comply|fulfil|fulfill|create|write|generate|produce|share|support|give|offer|engage|participate|continue|do that|do this|answer|disclose|reveal|complete|make|discuss|go along|aid|facilitate|contribute|condone|encourage|promote|endorse|teach|explain how|describe how|tell you how)\b",
    r"\bi(?: am|'m|m) (?:not (?:able|going|comfortable|allowed|permitted|programmed)|unable|afraid i (?:can't|cannot|can not|won't))\b",
    r"\bi (?:must|have to|need to|will have to) (?:respectfully )?(?:decline|refuse|refrain|pass on)\b",
    r"\b(?:i (?:respectfully )?(?:decline|refuse)|i'd (?:prefer not|rather not))\b",
    r"\b(?:this|that|your|the) (?:request|question|query|topic|content|prompt)? ?(?:goes against|violates|is against|conflicts with|would violate|is not in line with|isn't in line with) (?:my|our|the|openai's|ethical|community) ?(?:guidelines|policies|policy|principles|programming|values|terms|use case policy|content policy|ethical guidelines)",
    r"\b(?:it|this|that) (?:is|would be|'s|s) (?:not appropriate|inappropriate|unethical|illegal|harmful|irresponsible|against my) (?:for me )?(?:to|and)\b",
    r"\bas an? (?:ai|artificial intelligence|language model|ai language model|ai assistant|assistant)\b.{0,80}\b(?:i (?:can ?not|can't|won't|will not|do not|don't|am not able|'m not able|am unable|'m unable|must)|not (?:able|allowed|permitted|capable))",
    r"\b(?:i'm|i am) (?:sorry|afraid),? (?:but )?(?:that|this|it) (?:is|isn't|is not|'s) (?:not )?(?:something|a request|possible|appropriate)",
    r"\bi (?:can ?not|can't|won't|will not) (?:and will not |and won't )?(?:in good conscience )?(?:help|assist|provide|do|fulfil|fulfill)",
    r"\b(?:sorry|apologies|unfortunately),? (?:but )?(?:i|we) (?:can ?not|can't|won't|will not|am unable|'m unable|am not able|'m not able|do not|don't) ",
    r"\b(?:that|this|it)(?:'s|s| is)? ?(?:not|isn't|is not) something (?:that )?(?:i|we)(?:'m|m| am)? ?(?:can|could|will|would|am able to|able to|'m able to) ?(?:help|assist|do|provide|support|share|answer|write|create)",
    r"\bi don't think i (?:can|should|could|will be able to) (?:help|assist|provide|do that|do this|answer|share|write|create)",
    r"\b(?:helping|assisting|answering|doing|providing|complying|responding)(?: you)?(?: with)?(?: this| that| it| your request)? (?:would|could|might|will) (?:go against|violate|be against|conflict with|breach) (?:my|our|the)",
    // Spanish, French, German openings.
    r"\b(?:lo siento|lamentablemente),? (?:pero )?no (?:puedo|es posible|me es posible)\b",
    r"\bno puedo (?:ayudar|ayudarte|proporcionar|cumplir|hacer eso|crear|escribir)\b",
    r"\b(?:je suis d[ée]sol[ée]e?|malheureusement),? (?:mais )?je ne (?:peux|suis pas en mesure|vais pas)\b",
    r"\bje ne (?:peux|vais) pas (?:vous )?(?:aider|fournir|r[ée]pondre|faire cela|cr[ée]er|[ée]crire)\b",
    r"\b(?:es tut mir leid|leider),? (?:aber )?(?:ich )?(?:kann|darf|werde) (?:ich )?(?:(?:dir|ihnen|dabei|damit|hierbei|hier) )*(?:nicht|keine)\b",
    r"\bich kann (?:dir |ihnen )?(?:dabei |hierbei |damit )?(?:nicht|keine) (?:helfen|unterst[üu]tzen|bereitstellen|liefern)",
];

/// The refusal patterns, compiled once.
#[derive(Debug)]
pub struct RefusalRules {
    /// `None` only if the constant patterns failed to compile, which a unit test rules out.
    regex: Option<Regex>,
}

impl Default for RefusalRules {
    fn default() -> Self {
        let regex = Regex::builder()
            .syntax(syntax::Config::new().unicode(true).utf8(true))
            .build_many(PATTERNS)
            .ok();
        RefusalRules { regex }
    }
}

impl RefusalRules {
    /// The rules, compiled once per process.
    pub fn shared() -> &'static RefusalRules {
        static RULES: std::sync::OnceLock<RefusalRules> = std::sync::OnceLock::new();
        RULES.get_or_init(RefusalRules::default)
    }

    /// Whether the head of `reply` (see the module docs) reads as a refusal.
    pub fn is_refusal(&self, reply: &str) -> bool {
        let head = head(reply);
        let folded = fold(head).replace(['\u{2019}', '\u{2018}', '`'], "'");
        self.regex
            .as_ref()
            .is_some_and(|r| r.is_match(folded.as_str()))
    }
}

/// The first [`HEAD_SENTENCES`] sentences of `text`, at most [`HEAD_BYTES`] bytes.
pub fn head(text: &str) -> &str {
    let text = text.trim_start();
    let mut end = crate::normalize::floor_boundary(text, HEAD_BYTES);
    let mut sentences = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate().take(end) {
        let ends = matches!(b, b'.' | b'!' | b'?' | b'\n')
            && bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace());
        if ends {
            sentences += 1;
            if sentences == HEAD_SENTENCES {
                end = i + 1;
                break;
            }
        }
    }
    &text[..end]
}

/// A reply's refusal decision, fed piece by piece: decided once the head is complete.
#[derive(Debug, Default)]
pub struct RefusalWatch {
    head: String,
    decided: Option<bool>,
}

impl RefusalWatch {
    /// The next piece of the reply; the decision once it can be made.
    pub fn push(&mut self, rules: &RefusalRules, piece: &str) -> Option<bool> {
        if self.decided.is_none() {
            self.head.push_str(piece);
            if head(&self.head).len() < self.head.trim_start().len()
                || self.head.len() >= HEAD_BYTES
            {
                self.decided = Some(rules.is_refusal(&self.head));
            }
        }
        self.decided
    }

    /// The decision so far.
    pub fn decided(&self) -> Option<bool> {
        self.decided
    }

    /// The end of the reply: the decision (`None` for an empty reply).
    pub fn finish(&mut self, rules: &RefusalRules) -> Option<bool> {
        if self.decided.is_none() && !self.head.trim().is_empty() {
            self.decided = Some(rules.is_refusal(&self.head));
        }
        self.decided
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_many_styles() {
        let r = RefusalRules::default();
        assert!(r.regex.is_some(), "the patterns compile");
        for text in [
            "I'm sorry, but I can't help with that.",
            "I’m sorry, but I can’t assist with that request.",
            "I cannot provide instructions for making weapons.",
            "As an AI language model, I am not able to browse the internet.",
            "I must decline this request.",
            "Unfortunately, I won't be able to help with creating malware.",
            "This request goes against my guidelines, so I will not answer it.",
            "It would be inappropriate for me to write that.",
            "I'm not comfortable writing content like this.",
            "Lo siento, pero no puedo ayudarte con eso.",
            "Je suis désolé, mais je ne peux pas vous aider avec cela.",
            "Es tut mir leid, aber ich kann dabei nicht helfen.",
        ] {
            assert!(r.is_refusal(text), "{text}");
        }
    }

    #[test]
    fn compliance_is_not_a_refusal() {
        let r = RefusalRules::default();
        for text in [
            "Sure! Here is a poem about the sea.",
            "I'm sorry to hear that. Here are some steps that can help you feel better.",
            "The capital of France is Paris. It is known for the Eiffel Tower.",
            "Here is the code. Note that our policies require you to keep the key secret; I cannot stress this enough.",
            "Great question. First, preheat the oven.",
            "You can't go wrong with a simple salad. Start with fresh greens.",
        ] {
            assert!(!r.is_refusal(text), "{text}");
        }
    }

    #[test]
    fn the_watch_decides_once_the_head_is_complete() {
        let r = RefusalRules::default();
        let mut w = RefusalWatch::default();
        assert_eq!(w.push(&r, "I'm sorry, but I "), None);
        assert_eq!(w.push(&r, "can't help with that. "), None);
        assert_eq!(w.push(&r, "Is there anything else? "), Some(true));
        let mut w = RefusalWatch::default();
        assert_eq!(w.push(&r, "Sure"), None);
        assert_eq!(w.finish(&r), Some(false));
    }
}
