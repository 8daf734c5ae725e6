//! Walking the literal automaton over a view in interleaved lanes, with the unanchored
//! regexes' relaxed DFA ([`super::regexes::Walk`]) stepped in the same loop, so the two walks
//! overlap their memory waits.

use super::regexes::Walk;
use super::*;

/// Independent walks of the automaton interleaved over one text. Each step of one walk waits on
/// the load of the previous one (a cache miss as often as not on a large automaton), so four
/// walks over four quarters of the text overlap their misses: about twice the throughput of
/// one walk on English text (measured).
pub(super) const LANES: usize = 4;

/// Lock steps of the lanes between two advances of the unanchored walk: each advance has a
/// fixed cost (its state in and out of registers), paid once per `BLOCK * LANES` bytes.
const BLOCK: usize = 16;

/// Texts shorter than this are walked in one lane: each extra lane re-reads up to
/// `max_pattern_len - 1` bytes before its quarter.
pub(super) const LANE_MIN_LEN: usize = 512;

/// Every match state the automaton enters over `text[range]` (started fresh at `range.start`), as
/// `(end, state)` in text order with `end` an offset in `text`: exactly what one walk would see,
/// however many lanes produced it. Steps `walk` over the same range. Returns the bytes stepped.
pub(super) fn match_states(
    dfa: &DFA,
    text: &[u8],
    range: Range<usize>,
    lanes: &mut [Vec<(usize, StateID)>; LANES],
    out: &mut Vec<(usize, StateID)>,
    mut walk: Option<&mut Walk<'_>>,
) -> usize {
    out.clear();
    let Ok(start) = dfa.start_state(AcAnchored::No) else {
        return 0;
    };
    // One step on `byte`, the byte at `at`.
    let step = |sid: StateID, byte: u8, at: usize, out: &mut Vec<(usize, StateID)>| {
        let sid = dfa.next_state(AcAnchored::No, sid, byte);
        if dfa.is_special(sid) {
            special(dfa, sid, at, out);
        }
        sid
    };
    let (base, n) = (range.start, range.len());
    if n < LANE_MIN_LEN {
        let mut sid = start;
        for at in range {
            sid = step(sid, text[at], at, out);
        }
        return n;
    }
    // Lane `l` reports the matches ending in its quarter `(l*q, (l+1)*q]` (the last one to the
    // end of the range) and starts reading `overlap` bytes before it, so a match that began in
    // the quarter before is still seen whole.
    let q = n / LANES;
    let overlap = dfa.max_pattern_len().saturating_sub(1);
    let from: [usize; LANES] = std::array::from_fn(|l| base + (l * q).saturating_sub(overlap));
    let to: [usize; LANES] =
        std::array::from_fn(|l| base + if l + 1 == LANES { n } else { (l + 1) * q });
    let mut sids = [start; LANES];
    for lane in lanes.iter_mut() {
        lane.clear();
    }
    // Every lane is at least `q` bytes long: walk that much of all of them in lock step, and
    // after every `BLOCK` steps the unanchored regexes' relaxed DFA as many bytes as the lanes
    // walked together. Each lane's bytes are a slice of exactly `q`, so reading them needs no
    // bounds check.
    let texts: [&[u8]; LANES] = std::array::from_fn(|l| &text[from[l]..from[l] + q]);
    let mut k = 0;
    while k < q {
        let end = (k + BLOCK).min(q);
        // `k` indexes four slices at once and places a match: no iterator says that better.
        #[allow(clippy::needless_range_loop)]
        for k in k..end {
            for l in 0..LANES {
                sids[l] = step(sids[l], texts[l][k], from[l] + k, &mut lanes[l]);
            }
        }
        k = end;
        if let Some(w) = walk.as_deref_mut() {
            w.advance(text, base + k * LANES);
        }
    }
    for l in 0..LANES {
        // An index, not `zip`: the zipped form cost English 3% more instructions (measured).
        #[allow(clippy::needless_range_loop)]
        for at in from[l] + q..to[l] {
            sids[l] = step(sids[l], text[at], at, &mut lanes[l]);
        }
    }
    for (l, lane) in lanes.iter().enumerate() {
        out.extend(lane.iter().filter(|(end, _)| *end > base + l * q));
    }
    (0..LANES).map(|l| to[l] - from[l]).sum()
}

/// A special state entered after the byte at `at`: recorded if it is a match state. Out of line
/// and cold: a match is rare next to the steps around it, and the lanes' loop needs every
/// register it has.
#[cold]
#[inline(never)]
fn special(dfa: &DFA, sid: StateID, at: usize, out: &mut Vec<(usize, StateID)>) {
    if dfa.is_match(sid) {
        out.push((at + 1, sid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lanes see exactly the matches one walk (the crate's own overlapping search) sees,
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
            match_states(&dfa, &text, 0..text.len(), &mut lanes, &mut out, None);
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
