//! The regex side of a scan: lazy DFAs that never give up on any text, and exact confirmation of
//! what they find on a bounded window.
//!
//! The packs' regexes use Unicode word boundaries (`\b`). regex-automata's lazy DFA handles those
//! on ASCII only: at the first non-ASCII byte it quits, and the meta regex falls back to the
//! PikeVM, which costs about a thousand times more per byte on the packs' patterns (bounded
//! repetitions such as `[^.]{0,80}?` keep hundreds of threads alive). One accented name in a
//! prompt used to put a whole view on that path.
//!
//! So every regex is also compiled *relaxed*: without its Unicode word-boundary assertions.
//! Dropping an assertion only adds matches (every match of a regex is a match of its relaxed
//! form, with the same span), so where the relaxed form finds nothing, the regex has nothing
//! either. The relaxed forms run as lazy DFAs with no quit bytes that clear their cache instead
//! of giving up, so their cost per byte is bounded on any text:
//! - [`Relaxed::anchored`] holds every regex, with a start state per pattern: the scan tries a
//!   regex where one of its literal prefixes starts, for at most [`max_match`] bytes;
//! - [`Relaxed::unanchored`] holds the regexes without usable prefixes, walked over the whole
//!   view; it reports where matches end, and [`Windows`] turns those into windows no longer than
//!   the regex's longest match.
//!
//! Only a relaxed hit reaches the exact (meta) regex, on that window: a real candidate, so the
//! PikeVM runs (on non-ASCII windows) only where a rule almost certainly matches. Every byte
//! stepped or handed to a matcher is counted in [`Work`], which the scan checks against its limit.

use regex_automata::hybrid::dfa::{Cache as LazyCache, DFA as LazyDfa};
use regex_automata::hybrid::LazyStateID;
use regex_automata::nfa::thompson;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind, PatternID};
use regex_syntax::hir::{Hir, HirKind, Look};

use super::Lists;

/// Longest match of a `mask` rule's regex looked for in a view, in bytes, for regexes whose
/// matches are unbounded (`{20,}`): an anchored attempt steps at most this far and an unanchored
/// hit is confirmed on at most this many bytes before its end. Long enough for the spans that
/// masks replace (a 4096-bit RSA private key in PEM is about 3.2 KiB).
pub const MAX_MATCH_BYTES: usize = 4 * 1024;

/// The same bound for the regexes of rules that block or flag, which only need to know that a
/// match exists: the packs' detection patterns match within a few hundred bytes, and an unbounded
/// one (`(?:\w+\s+)?`) is looked for over at most this much of a view.
pub const MAX_DETECT_MATCH_BYTES: usize = 1024;

/// Most memory the cache of a relaxed lazy DFA may take, per thread (it grows only as states are
/// built). The anchored DFA needs more: a start state per pattern (about 7 MiB with the shipped
/// packs' 247 regexes) before any other state.
const ANCHORED_CACHE_BYTES: usize = 16 * 1024 * 1024;
const UNANCHORED_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// Heap allowed for compiling the relaxed NFAs (all regexes together).
const NFA_BYTES: usize = 256 * 1024 * 1024;

/// Engine work of one scan, in bytes stepped by an automaton or handed to a matcher. A scan stops
/// verifying once its total passes the limit it was given (and says so: `work_limited`), and
/// tests check that it grows linearly with the input on every kind of text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// View bytes stepped by the literal automaton (the lanes' overlaps included).
    pub automaton: u64,
    /// View bytes stepped by the unanchored relaxed DFA.
    pub unanchored: u64,
    /// Anchored attempts at literal prefixes.
    pub attempts: u64,
    /// Bytes the anchored attempts stepped.
    pub anchored: u64,
    /// Bytes handed to exact regexes: windows around relaxed hits, spans of mask rules.
    pub exact: u64,
}

/// What one anchored attempt costs besides its bytes (start state, bookkeeping), in byte units.
const ATTEMPT_COST: u64 = 8;

impl Work {
    /// Everything, in byte units.
    pub fn total(&self) -> u64 {
        self.automaton + self.unanchored + self.anchored + self.exact + self.attempts * ATTEMPT_COST
    }

    pub fn add(&mut self, other: &Work) {
        self.automaton += other.automaton;
        self.unanchored += other.unanchored;
        self.attempts += other.attempts;
        self.anchored += other.anchored;
        self.exact += other.exact;
    }
}

/// How far a match of a regex whose longest match in a view is `view_len` (`None`: unbounded)
/// is looked for: [`MAX_MATCH_BYTES`] for a mask rule, [`MAX_DETECT_MATCH_BYTES`] otherwise.
pub fn max_match(view_len: Option<usize>, mask: bool) -> usize {
    let cap = if mask {
        MAX_MATCH_BYTES
    } else {
        MAX_DETECT_MATCH_BYTES
    };
    view_len.map_or(cap, |n| n.min(cap))
}

/// The relaxed lazy DFAs of one engine.
#[derive(Debug)]
pub struct Relaxed {
    /// Every regex (pattern `i` is regex `i`), anchored, a start state per pattern.
    pub anchored: LazyDfa,
    /// The regexes without usable prefixes or factor, unanchored, reporting every match end.
    pub unanchored: Option<LazyDfa>,
    /// For the regexes found from a hit of their required factor: the part before the factor
    /// ([`super::extract::before_factor`]), reversed, anchored, a start state per pattern.
    pub reverse: Option<LazyDfa>,
}

/// Per-thread caches of an engine's [`Relaxed`] DFAs.
#[derive(Debug)]
pub struct Caches {
    pub anchored: LazyCache,
    pub unanchored: Option<UnanchoredCache>,
    pub reverse: Option<LazyCache>,
}

/// The unanchored walk's lazy DFA cache and its memo of match states, which stays valid with
/// the cache (until it is cleared) across walks and scans: a digit-heavy text moves among a
/// few hundred match states, and looking each up afresh in every segment of every view was a
/// third of its walk's match handling. The cache is never reset (a reset would start its clear
/// count, which the memo is keyed by, from zero again).
#[derive(Debug)]
pub struct UnanchoredCache {
    cache: LazyCache,
    memo: MatchMemo,
}

impl Relaxed {
    /// Compile the relaxed forms of `regexes` (parsed as the scan parses them); `unanchored`
    /// lists the indices of the regexes scanned in full, `before_factors` the parts before the
    /// factor of the regexes found from their factor.
    pub fn build(
        regexes: &[Hir],
        unanchored: &[usize],
        before_factors: &[Hir],
    ) -> Result<Relaxed, String> {
        let relaxed: Vec<Hir> = regexes.iter().map(|h| relax(h.clone())).collect();
        let anchored = lazy_dfa(&relaxed, true, ANCHORED_CACHE_BYTES, false)?;
        let reverse = if before_factors.is_empty() {
            None
        } else {
            let set: Vec<Hir> = before_factors.iter().map(|h| relax(h.clone())).collect();
            Some(lazy_dfa(&set, true, UNANCHORED_CACHE_BYTES, true)?)
        };
        let unanchored = if unanchored.is_empty() {
            None
        } else {
            let set: Vec<Hir> = unanchored
                .iter()
                .map(|&i| uncounted(relaxed[i].clone()))
                .collect();
            Some(lazy_dfa(&set, false, UNANCHORED_CACHE_BYTES, false)?)
        };
        Ok(Relaxed {
            anchored,
            unanchored,
            reverse,
        })
    }

    pub fn caches(&self) -> Caches {
        Caches {
            anchored: self.anchored.create_cache(),
            unanchored: self.unanchored.as_ref().map(|dfa| UnanchoredCache {
                cache: dfa.create_cache(),
                memo: MatchMemo::default(),
            }),
            reverse: self.reverse.as_ref().map(LazyDfa::create_cache),
        }
    }

    /// Where, at most `reach` bytes before `end`, a match of reversed pattern `pattern` that
    /// ends at `end` can start: pushed to `starts`, nearest first. `false` when the DFA could
    /// not tell (it never should); the caller then tries every position.
    pub fn reverse_starts(
        &self,
        cache: &mut LazyCache,
        text: &[u8],
        (end, pattern, reach): (usize, usize, usize),
        starts: &mut Vec<usize>,
        work: &mut Work,
    ) -> bool {
        let Some(dfa) = &self.reverse else {
            return false;
        };
        let Ok(pid) = PatternID::new(pattern) else {
            return false;
        };
        // Backwards, the "byte before" the search is the one after `end`.
        let config = start::Config::new()
            .anchored(Anchored::Pattern(pid))
            .look_behind(text.get(end).copied());
        let Ok(mut sid) = dfa.start_state(cache, &config) else {
            return false;
        };
        let floor = end.saturating_sub(reach);
        let mut at = end;
        while at > floor {
            at -= 1;
            match dfa.next_state(cache, sid, text[at]) {
                Ok(next) => sid = next,
                Err(_) => return false,
            }
            if sid.is_tagged() {
                // Matches show one byte late: this one starts after the byte just read.
                if sid.is_match() {
                    starts.push(at + 1);
                }
                if sid.is_dead() {
                    break;
                }
                if sid.is_quit() {
                    return false;
                }
            }
        }
        work.anchored += (end - at) as u64 + 1;
        if !sid.is_dead() {
            // One step more: the byte before `at`, or the start of the text.
            let last = match at.checked_sub(1) {
                Some(i) => dfa.next_state(cache, sid, text[i]),
                None => dfa.next_eoi_state(cache, sid),
            };
            match last {
                Ok(s) if s.is_match() => starts.push(at),
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Whether relaxed regex `pid` matches starting at `at` and ending at or before `end`.
    /// `true` also when the DFA cannot tell (it never should: no quit bytes): the exact regex
    /// decides then.
    pub fn anchored_match(
        &self,
        cache: &mut LazyCache,
        text: &[u8],
        at: usize,
        end: usize,
        pid: usize,
        work: &mut Work,
    ) -> bool {
        let dfa = &self.anchored;
        work.attempts += 1;
        let Ok(pid) = PatternID::new(pid) else {
            return true;
        };
        let config = start::Config::new()
            .anchored(Anchored::Pattern(pid))
            .look_behind(at.checked_sub(1).map(|i| text[i]));
        let Ok(mut sid) = dfa.start_state(cache, &config) else {
            return true;
        };
        let end = end.min(text.len());
        let mut i = at;
        while i < end {
            match dfa.next_state(cache, sid, text[i]) {
                Ok(next) => sid = next,
                Err(_) => {
                    work.anchored += (i - at) as u64;
                    return true;
                }
            }
            i += 1;
            if sid.is_tagged() {
                if sid.is_match() {
                    work.anchored += (i - at) as u64;
                    return true;
                }
                if sid.is_dead() {
                    work.anchored += (i - at) as u64;
                    return false;
                }
                if sid.is_quit() {
                    work.anchored += (i - at) as u64;
                    return true;
                }
            }
        }
        work.anchored += (end - at) as u64 + 1;
        // Matches show one byte late: a match ending exactly at `end` shows on the next byte
        // (or at the end of the text).
        let last = match text.get(end) {
            Some(&b) => dfa.next_state(cache, sid, b),
            None => dfa.next_eoi_state(cache, sid),
        };
        last.map_or(true, |s| s.is_match())
    }
}

/// A lazy DFA over `hirs` with `MatchKind::All` (a match state wherever some match ends) that
/// clears its cache rather than giving up: its cost stays bounded per byte on any input.
fn lazy_dfa(
    hirs: &[Hir],
    per_pattern_starts: bool,
    cache: usize,
    reverse: bool,
) -> Result<LazyDfa, String> {
    let nfa = thompson::Compiler::new()
        .configure(
            thompson::Config::new()
                .nfa_size_limit(Some(NFA_BYTES))
                .reverse(reverse)
                .which_captures(thompson::WhichCaptures::None),
        )
        .build_many_from_hir(hirs)
        .map_err(|e| e.to_string())?;
    LazyDfa::builder()
        .configure(
            LazyDfa::config()
                .match_kind(MatchKind::All)
                .starts_for_each_pattern(per_pattern_starts)
                .cache_capacity(cache)
                .minimum_cache_clear_count(None),
        )
        .build_from_nfa(nfa)
        .map_err(|e| e.to_string())
}

/// Whether a text could still be the start of a match of some regex of a set: the set's
/// relaxed forms as one anchored lazy DFA. The output guard asks it where the tail of a stream
/// could still grow into a match, and holds back only that.
#[derive(Debug)]
pub struct Viable {
    dfa: LazyDfa,
}

/// Cache of a [`Viable`] DFA: small, since output patterns are few.
const VIABLE_CACHE_BYTES: usize = 1024 * 1024;

impl Viable {
    pub fn build(regexes: &[Hir]) -> Result<Viable, String> {
        let relaxed: Vec<Hir> = regexes.iter().map(|h| relax(h.clone())).collect();
        Ok(Viable {
            dfa: lazy_dfa(&relaxed, false, VIABLE_CACHE_BYTES, false)?,
        })
    }

    pub fn cache(&self) -> LazyCache {
        self.dfa.create_cache()
    }

    /// `text[at..]` is a match of some regex or could become one with more text: the anchored
    /// walk from `at` does not die before the end. Errs towards `true` (the DFA giving up).
    pub fn from(&self, cache: &mut LazyCache, text: &[u8], at: usize) -> bool {
        let config = start::Config::new()
            .anchored(Anchored::Yes)
            .look_behind(at.checked_sub(1).and_then(|i| text.get(i).copied()));
        let Ok(mut sid) = self.dfa.start_state(cache, &config) else {
            return true;
        };
        for &b in text.get(at..).unwrap_or(&[]) {
            match self.dfa.next_state(cache, sid, b) {
                Ok(next) => sid = next,
                Err(_) => return true,
            }
            if sid.is_dead() {
                return false;
            }
        }
        true
    }
}

/// `hir` with each Unicode word-boundary assertion replaced by one the lazy DFA can check on any
/// text, and that accepts at least as much: every match of `hir` is a match of the result.
///
/// Where the pattern itself puts an ASCII word character on one side of a `\b` ("you" in
/// `\byou\b`), the ASCII `\b` accepts a superset: the other side must then be a non-word
/// character, and every Unicode non-word character is an ASCII non-word one. Likewise `\B` next to
/// an ASCII non-word character. Those become their ASCII forms, which keep the DFA from starting a
/// match inside every word ("status" has no `\btu`). Any other Unicode word assertion is dropped.
/// ASCII word boundaries and line anchors stay as they are.
pub fn relax(hir: Hir) -> Hir {
    use regex_syntax::hir::{Capture, Repetition};
    match hir.into_kind() {
        HirKind::Look(look) if is_unicode_word_look(look) => relaxed_look(look, None, None),
        HirKind::Look(look) => Hir::look(look),
        HirKind::Repetition(r) => Hir::repetition(Repetition {
            sub: Box::new(relax(*r.sub)),
            ..r
        }),
        HirKind::Capture(c) => Hir::capture(Capture {
            sub: Box::new(relax(*c.sub)),
            ..c
        }),
        HirKind::Concat(subs) => {
            let mut out = Vec::with_capacity(subs.len());
            for (i, sub) in subs.iter().enumerate() {
                match sub.kind() {
                    HirKind::Look(look) if is_unicode_word_look(*look) => {
                        let before = subs[..i]
                            .iter()
                            .rev()
                            .find(|h| !matches!(h.kind(), HirKind::Look(_)))
                            .and_then(|h| edge(h, Side::Last));
                        let after = subs[i + 1..]
                            .iter()
                            .find(|h| !matches!(h.kind(), HirKind::Look(_)))
                            .and_then(|h| edge(h, Side::First));
                        out.push(relaxed_look(*look, before, after));
                    }
                    _ => out.push(relax(sub.clone())),
                }
            }
            Hir::concat(out)
        }
        HirKind::Alternation(subs) => Hir::alternation(subs.into_iter().map(relax).collect()),
        HirKind::Literal(l) => Hir::literal(l.0),
        HirKind::Class(c) => Hir::class(c),
        HirKind::Empty => Hir::empty(),
    }
}

/// `hir` with every bounded repetition made unbounded (`[^.]{0,80}` → `[^.]*`): a superset again.
/// For the unanchored DFA only: there a counted repetition that can start at many places makes
/// the DFA track every combination of counts (exponentially many states, a new one at nearly
/// every byte), while the unbounded form needs one state. Its candidates are confirmed by the
/// exact regex on a window no longer than the exact regex's longest match, so nothing is lost.
fn uncounted(hir: Hir) -> Hir {
    use regex_syntax::hir::{Capture, Repetition};
    match hir.into_kind() {
        HirKind::Repetition(r) => {
            let max = match r.max {
                Some(max) if max > r.min => None,
                other => other,
            };
            Hir::repetition(Repetition {
                max,
                sub: Box::new(uncounted(*r.sub)),
                ..r
            })
        }
        HirKind::Capture(c) => Hir::capture(Capture {
            sub: Box::new(uncounted(*c.sub)),
            ..c
        }),
        HirKind::Concat(subs) => Hir::concat(subs.into_iter().map(uncounted).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.into_iter().map(uncounted).collect()),
        HirKind::Literal(l) => Hir::literal(l.0),
        HirKind::Class(c) => Hir::class(c),
        HirKind::Look(l) => Hir::look(l),
        HirKind::Empty => Hir::empty(),
    }
}

fn is_unicode_word_look(look: Look) -> bool {
    matches!(
        look,
        Look::WordUnicode
            | Look::WordUnicodeNegate
            | Look::WordStartUnicode
            | Look::WordEndUnicode
            | Look::WordStartHalfUnicode
            | Look::WordEndHalfUnicode
    )
}

/// What a Unicode word assertion becomes, given what the pattern puts before and after it.
fn relaxed_look(look: Look, before: Option<CharKind>, after: Option<CharKind>) -> Hir {
    let sides = [before, after];
    match look {
        Look::WordUnicode if sides.contains(&Some(CharKind::AsciiWord)) => {
            Hir::look(Look::WordAscii)
        }
        Look::WordUnicodeNegate if sides.contains(&Some(CharKind::AsciiNonWord)) => {
            Hir::look(Look::WordAsciiNegate)
        }
        _ => Hir::empty(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    First,
    Last,
}

/// What every character at one edge of a match is, when the pattern decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CharKind {
    /// `[0-9A-Za-z_]`.
    AsciiWord,
    /// ASCII, not a word character.
    AsciiNonWord,
}

fn char_kind(c: char) -> Option<CharKind> {
    if c.is_ascii_alphanumeric() || c == '_' {
        Some(CharKind::AsciiWord)
    } else if c.is_ascii() {
        Some(CharKind::AsciiNonWord)
    } else {
        None
    }
}

/// The kind shared by every character `hir` can put first (or last), or `None` when they differ,
/// are not ASCII, or `hir` can match the empty string (its neighbour then decides).
fn edge(hir: &Hir, side: Side) -> Option<CharKind> {
    use regex_syntax::hir::Class;
    if hir.properties().minimum_len() == Some(0) {
        return None;
    }
    match hir.kind() {
        HirKind::Literal(l) => {
            let s = std::str::from_utf8(&l.0).ok()?;
            let c = match side {
                Side::First => s.chars().next()?,
                Side::Last => s.chars().next_back()?,
            };
            char_kind(c)
        }
        HirKind::Class(Class::Unicode(c)) => {
            let mut kind = None;
            for r in c.iter() {
                // Classes are a handful of ranges here; a wide one is not all one kind anyway.
                if u32::from(r.end()) - u32::from(r.start()) > 128 {
                    return None;
                }
                for ch in r.start()..=r.end() {
                    let k = char_kind(ch)?;
                    if kind.is_some_and(|prev| prev != k) {
                        return None;
                    }
                    kind = Some(k);
                }
            }
            kind
        }
        HirKind::Class(Class::Bytes(c)) => {
            let mut kind = None;
            for r in c.iter() {
                for b in r.start()..=r.end() {
                    let k = char_kind(char::from(b))?;
                    if kind.is_some_and(|prev| prev != k) {
                        return None;
                    }
                    kind = Some(k);
                }
            }
            kind
        }
        HirKind::Repetition(r) => edge(&r.sub, side),
        HirKind::Capture(c) => edge(&c.sub, side),
        HirKind::Concat(subs) => {
            let mut it: Box<dyn Iterator<Item = &Hir>> = match side {
                Side::First => Box::new(subs.iter()),
                Side::Last => Box::new(subs.iter().rev()),
            };
            // Zero-width pieces (assertions) are skipped; the first piece that consumes decides,
            // and only if it always consumes.
            it.find(|h| h.properties().maximum_len() != Some(0))
                .and_then(|h| edge(h, side))
        }
        HirKind::Alternation(subs) => {
            let mut kind = None;
            for sub in subs {
                let k = edge(sub, side)?;
                if kind.is_some_and(|prev| prev != k) {
                    return None;
                }
                kind = Some(k);
            }
            kind
        }
        HirKind::Look(_) | HirKind::Empty => None,
    }
}

/// A walk of the unanchored relaxed DFA over one view, in step with the literal automaton's
/// lanes: it records, per regex, a window `[end - reach, end]` around every match end.
pub struct Walk<'a> {
    dfa: &'a LazyDfa,
    cache: &'a mut LazyCache,
    /// Match states already looked up ([`UnanchoredCache`]): a run of text that keeps the DFA
    /// among a few match states (a long digit run for a card-number rule) looks their patterns
    /// up once, not per byte.
    memo: &'a mut MatchMemo,
    windows: &'a mut Windows,
    /// Unanchored pattern → regex.
    pids: &'a [usize],
    /// How far each regex's matches are looked for ([`max_match`]), by regex.
    reach: &'a [usize],
    sid: LazyStateID,
    /// Match ends at consecutive bytes in states of the same regexes, not yet recorded.
    run: Option<Run>,
    /// Where the walk started and where it is.
    from: usize,
    at: usize,
    /// The DFA could not go on (it should not happen: no quit bytes, never gives up); `finish`
    /// then gives every unanchored regex a window over the whole walk.
    pub failed: bool,
}

/// Per regex, the windows of a view where its exact regex must look (around the match ends of
/// the unanchored walk, or around the hits of a regex's required factor), merged where they
/// overlap so the exact regex reads each byte of a view at most once per regex.
#[derive(Debug, Default)]
pub struct Windows(Lists<(usize, usize)>);

impl Windows {
    /// Empties the windows of the last view (and gives back memory a hostile text took).
    pub fn reset(&mut self, regexes: usize) {
        self.0.next_view(regexes, WINDOWS_KEEP);
    }

    /// Adds `[start, end)` for `regex`; windows arrive in order of their starts.
    pub fn record(&mut self, regex: usize, start: usize, end: usize) {
        match self.0.last_mut(regex) {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => self.0.push(regex, (start, end)),
        }
    }

    /// The regexes with windows, in regex order, and their windows.
    pub fn iter(&mut self) -> impl Iterator<Item = (usize, &[(usize, usize)])> {
        self.0.iter()
    }

    #[cfg(test)]
    pub fn of(&self, regex: usize) -> &[(usize, usize)] {
        self.0.get(regex)
    }
}

/// Windows a regex keeps between views.
const WINDOWS_KEEP: usize = 1 << 10;

/// Consecutive match ends of the unanchored walk in match states of the same regexes.
struct Run {
    sid: LazyStateID,
    clears: usize,
    /// The state's regexes in the memo.
    regexes: (u32, u32),
    first: usize,
    last: usize,
}

/// Slots of a [`MatchMemo`].
const MEMO_SLOTS: usize = 256;

/// A direct-mapped memo of match states to their `(regex, reach)` list, valid for one cache
/// clear count (a clear reuses state ids).
#[derive(Debug)]
struct MatchMemo {
    clears: usize,
    /// Per slot: the state and its range in `regexes`.
    slots: [Option<(LazyStateID, u32, u32)>; MEMO_SLOTS],
    regexes: Vec<(usize, usize)>,
}

/// The memo slot of a state: its id (which `Hash` writes as one `u32`; the crate gives no other
/// access) multiplied by a Fibonacci constant, top bits.
fn slot_of(sid: LazyStateID) -> usize {
    struct Id(u64);
    impl std::hash::Hasher for Id {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = (self.0 << 8) | u64::from(b);
            }
        }
        fn write_u32(&mut self, n: u32) {
            self.0 = u64::from(n);
        }
    }
    let mut id = Id(0);
    std::hash::Hash::hash(&sid, &mut id);
    const BITS: u32 = MEMO_SLOTS.trailing_zeros();
    (id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BITS)) as usize % MEMO_SLOTS
}

impl Default for MatchMemo {
    fn default() -> Self {
        Self {
            clears: 0,
            slots: [None; MEMO_SLOTS],
            regexes: Vec::new(),
        }
    }
}

impl MatchMemo {
    /// Where the regexes of `sid` are (see [`MatchMemo::regexes`]), from `fill` the first time
    /// it is seen. The range stays valid until `clears` changes.
    fn get(
        &mut self,
        sid: LazyStateID,
        clears: usize,
        fill: impl FnOnce(&mut Vec<(usize, usize)>),
    ) -> (u32, u32) {
        if clears != self.clears {
            self.clears = clears;
            self.slots = [None; MEMO_SLOTS];
            self.regexes.clear();
        }
        if let Some(found) = self.peek(sid, clears) {
            return found;
        }
        // A long walk through many states never grows this past a bound.
        if self.regexes.len() > 1 << 12 {
            self.slots = [None; MEMO_SLOTS];
            self.regexes.clear();
        }
        let from = self.regexes.len() as u32;
        fill(&mut self.regexes);
        let found = (from, self.regexes.len() as u32);
        self.slots[slot_of(sid)] = Some((sid, found.0, found.1));
        found
    }

    /// Where the regexes of `sid` are, if it is in the memo.
    fn peek(&self, sid: LazyStateID, clears: usize) -> Option<(u32, u32)> {
        match self.slots[slot_of(sid)] {
            Some((s, from, to)) if s == sid && clears == self.clears => Some((from, to)),
            _ => None,
        }
    }

    fn regexes(&self, (from, to): (u32, u32)) -> &[(usize, usize)] {
        self.regexes.get(from as usize..to as usize).unwrap_or(&[])
    }
}

impl<'a> Walk<'a> {
    /// A walk over `text` from `from` (where the literal automaton's walk of a segment starts),
    /// adding to `windows` (reset by the caller once per view).
    pub fn new(
        dfa: &'a LazyDfa,
        cache: &'a mut UnanchoredCache,
        windows: &'a mut Windows,
        pids: &'a [usize],
        reach: &'a [usize],
        text: &[u8],
        from: usize,
    ) -> Self {
        let config = start::Config::new()
            .anchored(Anchored::No)
            .look_behind(from.checked_sub(1).and_then(|i| text.get(i).copied()));
        let UnanchoredCache { cache, memo } = cache;
        let start = dfa.start_state(cache, &config);
        Walk {
            failed: start.is_err(),
            sid: start.unwrap_or_default(),
            memo,
            run: None,
            dfa,
            cache,
            windows,
            pids,
            reach,
            from,
            at: from,
        }
    }

    /// Steps through `text[self.at..upto]`. Always in line: it is stepped in the literal
    /// automaton's loop every four bytes, and as a call (which an unrelated change elsewhere in
    /// the crate once made of it) it cost English prose 5% more instructions.
    ///
    /// The common step, from an untagged state to an untagged one, runs in a loop of its own
    /// over locals with no call in it, so the table's address and length stay in registers;
    /// everything else (a state not built yet, a match, the start state) takes one general step.
    #[inline(always)]
    pub fn advance(&mut self, text: &[u8], upto: usize) {
        if self.failed {
            return;
        }
        let text = &text[..upto.min(text.len())];
        let (dfa, mut sid, mut at) = (self.dfa, self.sid, self.at);
        while at < text.len() {
            if !sid.is_tagged() {
                let cache = &*self.cache;
                while let Some(&b) = text.get(at) {
                    let next = dfa.next_state_untagged(cache, sid, b);
                    if next.is_tagged() {
                        break;
                    }
                    sid = next;
                    at += 1;
                }
                if at == text.len() {
                    break;
                }
            }
            match dfa.next_state(self.cache, sid, text[at]) {
                Ok(next) => sid = next,
                Err(_) => {
                    self.failed = true;
                    break;
                }
            }
            at += 1;
            if sid.is_tagged() {
                (self.sid, self.at) = (sid, at);
                // Matches show one byte late: this one ended before the byte just read.
                self.tagged(at - 1);
            }
        }
        (self.sid, self.at) = (sid, at);
    }

    /// A tagged state entered at `end`. In line in [`Self::advance`]: the common case, a run of
    /// ends in one match state going on (byte after byte of a digit run), is three compares and
    /// no call.
    #[inline(always)]
    fn tagged(&mut self, end: usize) {
        // Consecutive ends in one match state (a digit run under a card-number rule) make
        // overlapping windows that merge into one: record them once, when the run ends. (The
        // run's state is a match state: no need to ask first.)
        if let Some(run) = &mut self.run {
            if run.sid == self.sid && run.last + 1 == end && run.clears == self.cache.clear_count()
            {
                run.last = end;
                return;
            }
        }
        self.tagged_other(end);
    }

    /// Any other tagged state: a match state that starts a run (the pending one's windows are
    /// recorded), or a quit state. Out of line: it would crowd the walk's loop.
    #[inline(never)]
    fn tagged_other(&mut self, end: usize) {
        if self.sid.is_quit() {
            self.failed = true;
        }
        if !self.sid.is_match() {
            return;
        }
        let (sid, clears) = (self.sid, self.cache.clear_count());
        // A match state of the same regexes right after the run (a digit run moves through
        // a card-number rule's counting states, one a byte): the run goes on in it.
        if let (Some(run), Some(regexes)) = (&self.run, self.memo.peek(sid, clears)) {
            if run.last + 1 == end
                && run.clears == clears
                && self.memo.regexes(run.regexes) == self.memo.regexes(regexes)
            {
                self.run = Some(Run {
                    sid,
                    regexes,
                    last: end,
                    ..*run
                });
                return;
            }
        }
        self.flush();
        let (dfa, cache, pids, reach) = (self.dfa, &*self.cache, self.pids, self.reach);
        let regexes = self.memo.get(sid, clears, |out| {
            for k in 0..dfa.match_len(cache, sid) {
                let u = dfa.match_pattern(cache, sid, k).as_usize();
                if let Some(&pid) = pids.get(u) {
                    let reach = reach.get(pid).copied().unwrap_or(MAX_MATCH_BYTES);
                    out.push((pid, reach));
                }
            }
        });
        self.run = Some(Run {
            sid,
            clears,
            regexes,
            first: end,
            last: end,
        });
    }

    /// Records the windows of the pending run of match ends.
    fn flush(&mut self) {
        if let Some(run) = self.run.take() {
            for &(pid, reach) in self.memo.regexes(run.regexes) {
                self.windows
                    .record(pid, run.first.saturating_sub(reach), run.last);
            }
        }
    }

    /// Walks on to `end` and sees the matches that end there (one more byte, or the end of the
    /// text); the bytes walked. If the walk failed, every regex gets a window over all of
    /// `from..end` instead (the exact regexes confirm it), and 0.
    pub fn finish(mut self, text: &[u8], end: usize) -> usize {
        let from = self.from;
        self.advance(text, end);
        if !self.failed {
            let last = match text.get(end) {
                Some(&b) => self.dfa.next_state(self.cache, self.sid, b),
                None => self.dfa.next_eoi_state(self.cache, self.sid),
            };
            match last {
                Ok(sid) => {
                    self.sid = sid;
                    self.tagged(end);
                }
                Err(_) => self.failed = true,
            }
            self.flush();
        }
        if self.failed {
            for &pid in self.pids {
                self.windows.record(pid, from, end);
            }
            return 0;
        }
        end.saturating_sub(from) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hir(p: &str) -> Hir {
        regex_syntax::ParserBuilder::new()
            .unicode(true)
            .utf8(true)
            .build()
            .parse(p)
            .unwrap()
    }

    /// The relaxed form accepts everything the regex accepts, and on the non-ASCII text that made
    /// the meta regex fall back to the PikeVM, the relaxed DFA runs to the end without quitting.
    #[test]
    fn relaxed_forms_find_a_superset_and_never_quit() {
        let patterns = [r"\bact as\b", r"\w+\b you", r"(?:^|\.\s*)show\b"];
        let hirs: Vec<Hir> = patterns.iter().map(|p| hir(p)).collect();
        let relaxed = Relaxed::build(&hirs, &[0, 1, 2], &hirs).unwrap();
        let mut caches = relaxed.caches();
        let exact: Vec<regex_automata::meta::Regex> = patterns
            .iter()
            .map(|p| regex_automata::meta::Regex::new(p).unwrap())
            .collect();
        for text in [
            "please act as a pirate",
            "réact as — café you",
            "中文 show 中文. show me",
            "привет you",
        ] {
            let mut windows = Windows::default();
            let reach = [MAX_MATCH_BYTES; 3];
            windows.reset(3);
            let walk = Walk::new(
                relaxed.unanchored.as_ref().unwrap(),
                caches.unanchored.as_mut().unwrap(),
                &mut windows,
                &[0, 1, 2],
                &reach,
                text.as_bytes(),
                0,
            );
            assert_eq!(
                walk.finish(text.as_bytes(), text.len()),
                text.len() + 1,
                "{text}"
            );
            for (p, re) in exact.iter().enumerate() {
                for m in re.find_iter(text) {
                    let covered = windows
                        .of(p)
                        .iter()
                        .any(|&(a, b)| a <= m.start() && m.end() <= b);
                    assert!(covered, "{text:?} {p} {m:?} {:?}", windows.of(p));
                    let mut work = Work::default();
                    assert!(relaxed.anchored_match(
                        &mut caches.anchored,
                        text.as_bytes(),
                        m.start(),
                        m.end(),
                        p,
                        &mut work
                    ));
                }
            }
        }
    }

    #[test]
    fn windows_merge_where_they_overlap() {
        let mut w = Windows::default();
        w.reset(1);
        for end in [10usize, 12, 30, 100] {
            w.record(0, end.saturating_sub(20), end);
        }
        assert_eq!(w.of(0), [(0, 30), (80, 100)]);
    }
}
