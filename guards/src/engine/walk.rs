//! Walking the literal automaton over a view in interleaved lanes, with the unanchored
//! regexes' lazy DFA stepped in the same loop.

use super::*;

/// Independent walks of the automaton interleaved over one text. Each step of one walk waits on
/// the load of the previous one (a cache miss as often as not on a large automaton), so four
/// walks over four quarters of the text overlap their misses: about twice the throughput of
/// one walk on English text (measured).
pub(super) const LANES: usize = 4;

/// Texts shorter than this are walked in one lane: each extra lane re-reads up to
/// `max_pattern_len - 1` bytes before its quarter.
pub(super) const LANE_MIN_LEN: usize = 512;

/// Every match state the automaton enters over `text`, as `(end, state)` in text order: exactly
/// what one walk would see, however many lanes produced it.
pub(super) fn match_states(
    dfa: &DFA,
    text: &[u8],
    lanes: &mut [Vec<(usize, StateID)>; LANES],
    out: &mut Vec<(usize, StateID)>,
    mut walk: Option<&mut LazyWalk<'_>>,
) {
    out.clear();
    let Ok(start) = dfa.start_state(AcAnchored::No) else {
        return;
    };
    let step = |sid: StateID, at: usize, out: &mut Vec<(usize, StateID)>| {
        let sid = dfa.next_state(AcAnchored::No, sid, text[at]);
        if dfa.is_special(sid) && dfa.is_match(sid) {
            out.push((at + 1, sid));
        }
        sid
    };
    let n = text.len();
    if n < LANE_MIN_LEN {
        let mut sid = start;
        for at in 0..n {
            sid = step(sid, at, out);
        }
        return;
    }
    // Lane `l` reports the matches ending in its quarter `(l*q, (l+1)*q]` (the last one to the
    // end of the text) and starts reading `overlap` bytes before it, so a match that began in
    // the quarter before is still seen whole.
    let q = n / LANES;
    let overlap = dfa.max_pattern_len().saturating_sub(1);
    let from: [usize; LANES] = std::array::from_fn(|l| (l * q).saturating_sub(overlap));
    let to: [usize; LANES] = std::array::from_fn(|l| if l + 1 == LANES { n } else { (l + 1) * q });
    let mut sids = [start; LANES];
    for lane in lanes.iter_mut() {
        lane.clear();
    }
    // Every lane is at least `q` bytes long: walk that much of all of them in lock step, and
    // the unanchored regexes' lazy DFA `LANES` bytes further each time.
    for k in 0..q {
        for l in 0..LANES {
            sids[l] = step(sids[l], from[l] + k, &mut lanes[l]);
        }
        if let Some(w) = walk.as_deref_mut() {
            w.advance(text, (k + 1) * LANES);
        }
    }
    for l in 0..LANES {
        for at in from[l] + q..to[l] {
            sids[l] = step(sids[l], at, &mut lanes[l]);
        }
    }
    for (l, lane) in lanes.iter().enumerate() {
        out.extend(lane.iter().filter(|(end, _)| *end > l * q));
    }
}

/// A walk of the unanchored regexes' lazy DFA over one ASCII view, collecting every pattern
/// that matches anywhere (overlapping, `MatchKind::All`).
pub(super) struct LazyWalk<'a> {
    dfa: &'a LazyDfa,
    cache: &'a mut LazyCache,
    set: &'a mut PatternSet,
    sid: LazyStateID,
    at: usize,
    /// The lazy DFA gave up (its cache thrashed): the caller runs the regex instead.
    failed: bool,
}

impl<'a> LazyWalk<'a> {
    pub(super) fn new(
        dfa: &'a LazyDfa,
        cache: &'a mut LazyCache,
        set: &'a mut PatternSet,
        text: &[u8],
    ) -> Self {
        set.clear();
        cache.search_start(0);
        let start = dfa.start_state_forward(cache, &Input::new(text));
        let failed = start.is_err();
        LazyWalk {
            sid: start.unwrap_or_default(),
            dfa,
            cache,
            set,
            at: 0,
            failed,
        }
    }

    /// Steps through `text[self.at..upto]`. Matches show one byte late, as the DFA reports
    /// them; [`Self::finish`] takes the last one.
    #[inline]
    pub(super) fn advance(&mut self, text: &[u8], upto: usize) {
        if self.failed {
            return;
        }
        let upto = upto.min(text.len());
        while self.at < upto {
            match self.dfa.next_state(self.cache, self.sid, text[self.at]) {
                Ok(sid) => self.sid = sid,
                Err(_) => {
                    self.failed = true;
                    return;
                }
            }
            self.at += 1;
            if self.sid.is_tagged() {
                self.tagged();
            }
        }
        // Progress, for the cache's give-up rule (bytes searched per state built).
        self.cache.search_update(self.at);
    }

    fn tagged(&mut self) {
        if self.sid.is_match() {
            for k in 0..self.dfa.match_len(self.cache, self.sid) {
                let _ = self
                    .set
                    .try_insert(self.dfa.match_pattern(self.cache, self.sid, k));
            }
        } else if self.sid.is_quit() {
            self.failed = true;
        }
    }

    /// Walks the rest of `text` and its end; `false` if the walk gave up.
    pub(super) fn finish(&mut self, text: &[u8]) -> bool {
        self.advance(text, text.len());
        if self.failed {
            return false;
        }
        match self.dfa.next_eoi_state(self.cache, self.sid) {
            Ok(sid) => {
                self.sid = sid;
                self.tagged();
            }
            Err(_) => self.failed = true,
        }
        self.cache.search_finish(text.len());
        !self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// in the same order, including matches that straddle a quarter boundary.
    #[test]
    fn automaton_lanes_report_every_match_once_in_order() {
        let patterns = ["ab", "abcab", "b", "cabca", "bcabcabca", "zz"];
        let dfa = DFA::builder()
            .match_kind(AcMatchKind::Standard)
            .start_kind(StartKind::Unanchored)
            .prefilter(false)
            .build(patterns)
            .unwrap();
        let reference = aho_corasick::AhoCorasick::builder()
            .match_kind(AcMatchKind::Standard)
            .build(patterns)
            .unwrap();
        let mut lanes: [Vec<(usize, StateID)>; LANES] = Default::default();
        let mut out = Vec::new();
        // A small LCG: deterministic texts over a tiny alphabet, so matches are dense and many
        // cross the lane boundaries.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let lens = [0, 1, 7, LANE_MIN_LEN - 1, LANE_MIN_LEN, 2049, 4096];
        let mut texts: Vec<Vec<u8>> = lens
            .into_iter()
            .map(|len| {
                (0..len)
                    .map(|_| {
                        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        b"abcz"[(x >> 62) as usize]
                    })
                    .collect()
            })
            .collect();
        // The longest pattern placed across every lane boundary at every offset.
        let longest = b"bcabcabca";
        for shift in 0..=longest.len() {
            let mut text = vec![b'y'; 4096];
            for lane in 1..LANES {
                let at = lane * (text.len() / LANES) - shift;
                text[at..at + longest.len()].copy_from_slice(longest);
            }
            texts.push(text);
        }
        for text in texts {
            let len = text.len();
            match_states(&dfa, &text, &mut lanes, &mut out, None);
            let dfa = &dfa;
            let got: Vec<(usize, usize)> = out
                .iter()
                .flat_map(|&(end, sid)| {
                    (0..dfa.match_len(sid))
                        .map(move |k| (end, dfa.match_pattern(sid, k).as_usize()))
                })
                .collect();
            let mut want: Vec<(usize, usize)> = reference
                .find_overlapping_iter(&text)
                .map(|m| (m.end(), m.pattern().as_usize()))
                .collect();
            let mut sorted = got.clone();
            sorted.sort();
            want.sort();
            assert_eq!(sorted, want, "text length {len}");
            assert!(
                got.windows(2).all(|w| w[0].0 <= w[1].0),
                "ends out of order"
            );
        }
    }
}
