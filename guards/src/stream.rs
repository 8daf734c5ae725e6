//! The output guard over a stream of text: the model's reply arrives a few bytes at a time, and
//! each piece is released to the client as soon as no output rule could still match across it.
//!
//! [`OutputScanner::push`] takes the next piece and returns the text that is safe to send now:
//! everything except the tail that could still grow into a match (found by running the output
//! rules' relaxed regexes anchored from each position of the tail, and by the literals' prefixes),
//! with every complete match of a `mask` rule replaced by the rule's mask text. The tail held
//! back is never longer than [`OutputPlan::hold`] bytes (the longest match of any output rule), so
//! a match is always seen whole, however the text was split; ordinary prose is held back by a
//! few bytes at most. A `block` rule's match stops the stream: nothing more is released.
//! [`OutputScanner::finish`] releases the rest at the end of the reply.
//!
//! Output rules read the folded view only (case, width, homoglyphs, format controls): derived
//! and decoded views read context (a despaced run, a whole encoded blob) that a stream may not
//! have yet; leaks in encoded form are the leak detector's part.
//!
//! Guarantee (tested): the concatenation of the released pieces, and the rules recorded, do not
//! depend on how the text was split into pieces.

use std::ops::Range;
use std::sync::Arc;

use regex_automata::hybrid::dfa::Cache as LazyCache;

use crate::engine::{Engine, OutputPlan};
use crate::normalize::floor_boundary;
use crate::pack::{Action, Target};

/// Original text kept before the held tail, for the look-behind of the next scan (`\b`, and
/// masks that began in text already sent).
const CONTEXT_BYTES: usize = 64;

/// What a piece of the stream let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Text to send now (often empty while a tail is held).
    Text(String),
    /// A `block` rule matched: send nothing more of this text.
    Blocked,
}

/// The output guard's state for one text of one response (one choice's content, or one tool
/// call's arguments).
pub struct OutputScanner {
    engine: Arc<Engine>,
    /// No rule reads this output: text passes as it comes.
    idle: bool,
    target: Target,
    hold: usize,
    cache: Option<LazyCache>,
    /// The last [`CONTEXT_BYTES`] of the original text already released.
    context: String,
    /// Text received and not released yet.
    pending: String,
    /// Rules that matched (mask rules once applied), in match order, each once.
    rules: Vec<usize>,
    masked: usize,
    blocked: bool,
    held_max: usize,
}

impl std::fmt::Debug for OutputScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputScanner")
            .field("target", &self.target)
            .field("held", &self.pending.len())
            .field("masked", &self.masked)
            .field("blocked", &self.blocked)
            .finish()
    }
}

impl OutputScanner {
    /// A scanner for `target` ([`Target::Output`] or [`Target::OutputToolArgs`]). When no rule
    /// of `engine` reads `target`, text passes as it comes.
    pub fn new(engine: Arc<Engine>, target: Target) -> OutputScanner {
        let reads = engine.rules().iter().any(|r| r.reads(target));
        let plan = engine.output_plan().filter(|_| reads);
        let hold = plan.map_or(0, |p| p.hold);
        let cache = plan.and_then(|p| p.viable.as_ref()).map(|v| v.cache());
        OutputScanner {
            idle: plan.is_none(),
            engine,
            target,
            hold,
            cache,
            context: String::new(),
            pending: String::new(),
            rules: Vec::new(),
            masked: 0,
            blocked: false,
            held_max: 0,
        }
    }

    /// The next piece of the text; what may be sent now.
    pub fn push(&mut self, piece: &str) -> Step {
        if self.blocked {
            return Step::Blocked;
        }
        if self.idle {
            return Step::Text(piece.to_string());
        }
        self.pending.push_str(piece);
        self.release(false)
    }

    /// The end of the text: the held tail, masked, or [`Step::Blocked`].
    pub fn finish(&mut self) -> Step {
        if self.blocked {
            return Step::Blocked;
        }
        if self.idle {
            return Step::Text(String::new());
        }
        self.release(true)
    }

    /// A whole text at once (a non-streamed response): the same as pushing it and finishing.
    pub fn whole(&mut self, text: &str) -> Step {
        let head = self.push(text);
        let tail = self.finish();
        match (head, tail) {
            (Step::Text(mut a), Step::Text(b)) => {
                a.push_str(&b);
                Step::Text(a)
            }
            _ => Step::Blocked,
        }
    }

    /// Rules that matched so far (indexes into [`Engine::rules`]), in match order.
    pub fn rules(&self) -> &[usize] {
        &self.rules
    }

    /// Counts `other`'s matches as this scanner's (rules, masks): one outcome over several texts
    /// of a reply (a choice's content and its tool calls' arguments).
    pub fn absorb(&mut self, other: &OutputScanner) {
        for &r in &other.rules {
            self.note(r);
        }
        self.masked += other.masked;
    }

    /// Matches masked so far (overlapping matches count once).
    pub fn masked(&self) -> usize {
        self.masked
    }

    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// The most bytes held back at once so far.
    pub fn held_max(&self) -> usize {
        self.held_max
    }

    /// Bytes held back now.
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    fn note(&mut self, rule: usize) {
        if !self.rules.contains(&rule) {
            self.rules.push(rule);
        }
    }

    fn release(&mut self, finishing: bool) -> Step {
        let base = self.context.len();
        let window = std::mem::take(&mut self.context) + &self.pending;
        let len = window.len();
        let views = self.engine.normalizer().folded_views(&window);
        let scan = self.engine.scan_views(&views, self.target);
        let mut spans: Vec<(Range<usize>, usize)> = Vec::new();
        let mut blocked = false;
        for hit in &scan.hits {
            if hit.span.end <= base {
                continue;
            }
            match self.engine.rules()[hit.rule].action {
                Action::Block => {
                    blocked = true;
                    self.note(hit.rule);
                }
                Action::Flag => self.note(hit.rule),
                Action::Mask => spans.push((hit.span.clone(), hit.rule)),
            }
        }
        if blocked {
            self.blocked = true;
            self.pending.clear();
            self.context.clear();
            return Step::Blocked;
        }
        let mut cut = if finishing {
            len
        } else {
            self.viable_start(&views, &window, base)
        };
        // A complete match that begins before the cut is final (the text from its start can no
        // longer grow into a match): it goes out whole, masked.
        let spans = crate::engine::merge_mask_spans(spans);
        for (span, _) in &spans {
            if span.start < cut && span.end > cut {
                cut = span.end;
            }
        }
        let mut out = String::with_capacity(cut - base);
        let mut pos = base;
        for (span, rule) in spans.into_iter().take_while(|(s, _)| s.start < cut) {
            let end = span.end.min(cut);
            if end <= pos {
                continue;
            }
            // A match that began in text already sent is masked from where the new text starts.
            let start = span.start.max(pos);
            out.push_str(&window[pos..start]);
            out.push_str(&self.engine.rules()[rule].mask_text());
            self.masked += 1;
            self.note(rule);
            pos = end;
        }
        out.push_str(&window[pos..cut]);
        let keep = floor_boundary(&window, cut.saturating_sub(CONTEXT_BYTES));
        self.context = window[keep..cut].to_string();
        self.pending = window[cut..].to_string();
        self.held_max = self.held_max.max(self.pending.len());
        Step::Text(out)
    }

    /// Where, in `window`, the text that could still grow into a match begins: the first
    /// position at or after `base` and at most [`OutputPlan::hold`] bytes before the end from
    /// which an output regex's relaxed form has not died, or that is a proper prefix of an
    /// output literal; the end of the window when there is none.
    fn viable_start(
        &mut self,
        views: &crate::normalize::Views,
        window: &str,
        base: usize,
    ) -> usize {
        let len = window.len();
        let Some(view) = views.folded() else {
            return len;
        };
        let plan: &OutputPlan = match self.engine.output_plan() {
            Some(p) => p,
            None => return len,
        };
        let lowest = base.max(len.saturating_sub(self.hold));
        let text = view.text.as_str();
        let bytes = text.as_bytes();
        for (p, _) in text.char_indices() {
            let orig = view.original_span(p..text.len()).start;
            if orig < lowest {
                continue;
            }
            let tail = &text[p..];
            let literal = plan
                .literals
                .iter()
                .any(|l| l.len() > tail.len() && l.starts_with(tail));
            let regex = match (&plan.viable, self.cache.as_mut()) {
                (Some(v), Some(cache)) => v.from(cache, bytes, p),
                _ => false,
            };
            if literal || regex {
                return orig;
            }
        }
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::RuleSet;

    fn engine() -> Arc<Engine> {
        Arc::new(Engine::compile(RuleSet::embedded().unwrap()).unwrap())
    }

    fn run(e: &Arc<Engine>, pieces: &[&str]) -> (String, bool, Vec<usize>) {
        let mut s = OutputScanner::new(e.clone(), Target::Output);
        let mut out = String::new();
        let mut blocked = false;
        for p in pieces {
            match s.push(p) {
                Step::Text(t) => out.push_str(&t),
                Step::Blocked => blocked = true,
            }
        }
        match s.finish() {
            Step::Text(t) => out.push_str(&t),
            Step::Blocked => blocked = true,
        }
        (out, blocked, s.rules().to_vec())
    }

    /// Pieces of `text` cut at every `n` bytes (at character boundaries).
    fn split(text: &str, n: usize) -> Vec<&str> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < text.len() {
            let mut end = (at + n).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            out.push(&text[at..end]);
            at = end;
        }
        out
    }

    #[test]
    fn a_secret_split_anywhere_is_masked_and_never_released() {
        let e = engine();
        let key = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";
        let text = format!("Sure — here is the token you asked for: {key}. Keep it safe, Zoë.");
        let whole = run(&e, &[&text]);
        assert!(whole.0.contains("[REDACTED:SEC-5003]"), "{}", whole.0);
        assert!(!whole.0.contains("ghp_"), "{}", whole.0);
        for n in [1, 2, 3, 5, 7, 16, 64] {
            let pieces = split(&text, n);
            assert_eq!(run(&e, &pieces), whole, "pieces of {n}");
        }
    }

    #[test]
    fn prose_is_held_back_by_a_few_bytes_at_most() {
        let e = engine();
        let mut s = OutputScanner::new(e.clone(), Target::Output);
        let text = "The quick brown fox jumps over the lazy dog, and then it rests under the tree.";
        let mut sent = 0;
        for piece in split(text, 4) {
            if let Step::Text(t) = s.push(piece) {
                sent += t.len();
            }
        }
        assert!(
            text.len() - sent <= 8,
            "held {} of {}",
            text.len() - sent,
            text.len()
        );
    }

    #[test]
    fn holding_never_exceeds_the_bound() {
        let e = engine();
        let hold = e.output_plan().unwrap().hold;
        let mut s = OutputScanner::new(e.clone(), Target::Output);
        let digits = "4".repeat(10 * hold);
        for piece in split(&digits, 3) {
            let _ = s.push(piece);
            assert!(s.held() <= hold + 3, "held {} > {hold}", s.held());
        }
    }
}

#[cfg(test)]
mod benign {
    use super::*;
    use crate::pack::RuleSet;

    /// Replies a model gives every day (the benchmark corpus's answers, prose and languages,
    /// streamed in 4-byte pieces): nothing is masked.
    #[test]
    fn benign_replies_get_no_masks() {
        let e = Arc::new(Engine::compile(RuleSet::embedded().unwrap()).unwrap());
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/corpus");
        let mut masked = Vec::new();
        for class in [
            "answers_md",
            "prose_en",
            "lang_de",
            "lang_es",
            "lang_fr",
            "lang_ru",
            "lang_zh",
            "lang_ja",
            "lang_ar",
            "lang_hi",
        ] {
            let full = std::fs::read_to_string(dir.join(format!("{class}.txt"))).unwrap();
            let text = &full[..floor_boundary(&full, 64 * 1024)];
            let mut s = OutputScanner::new(e.clone(), Target::Output);
            let mut at = 0;
            while at < text.len() {
                let end = crate::normalize::ceil_boundary(text, at + 4);
                let _ = s.push(&text[at..end]);
                at = end;
            }
            let _ = s.finish();
            if s.masked() > 0 {
                let ids: Vec<&str> = s
                    .rules()
                    .iter()
                    .map(|&r| e.rules()[r].id.as_str())
                    .collect();
                masked.push(format!("{class}: {} ({ids:?})", s.masked()));
            }
        }
        assert!(masked.is_empty(), "{masked:?}");
    }
}
