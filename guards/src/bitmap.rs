//! Byte classes of a text as bitmaps: bit `i` of word `k` is byte `64 k + i`. The normaliser's
//! blob, leet and despace finders go from set bit to set bit instead of byte to byte, so
//! ordinary text costs them a few instructions per 64 bytes. The fold's run of plain ASCII and
//! the blob decoder's count of control bytes are read sixteen bytes at a time here too.
//!
//! On x86-64 a class is computed sixteen bytes per instruction with SSE2 (part of every x86-64
//! CPU; called through `safe_arch`'s safe wrappers, so this crate has no `unsafe`); elsewhere
//! byte by byte. Both give the same bits (`bitmaps_agree_with_the_byte_rules` compares them).

/// ASCII letters and digits, and the lead bytes of multi-byte UTF-8 characters by length, of
/// 64 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Letters {
    /// ASCII letters and digits.
    pub alnum: u64,
    /// Bytes that are not ASCII (`>= 0x80`).
    pub high: u64,
    /// Lead bytes of characters of two or more bytes (`>= 0xc0`).
    pub lead: u64,
    /// Lead bytes of characters of three or four bytes (`>= 0xe0`).
    pub three: u64,
    /// Lead bytes of four-byte characters (`>= 0xf0`).
    pub four: u64,
}

/// URL-ish bytes, and two classes the blob finder tells runs of them by, of 64 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Urlish {
    /// URL-ish bytes ([`is_urlish`]).
    pub bits: u64,
    /// Bytes that may start a binary or Morse token ([`is_code_start`]).
    pub code_start: u64,
    /// Symbols of the base85 alphabets that prose does not put after a word ([`is_symbol85`]).
    pub symbol85: u64,
}

/// [`Urlish`] per 64 bytes of `b`.
pub(crate) fn urlish_bits(b: &[u8]) -> Vec<Urlish> {
    per_chunk(b, imp::urlish)
}

/// [`Letters`] per 64 bytes of `b`.
pub(crate) fn letter_bits(b: &[u8]) -> Vec<Letters> {
    per_chunk(b, imp::letters)
}

/// Bit per byte of `b`: a leet byte ([`is_leet`]).
pub(crate) fn leet_bits(b: &[u8]) -> Vec<u64> {
    per_chunk(b, imp::leet)
}

/// Bit per byte of `b`, a word per 64 bytes as they are read: a byte that may start a required
/// piece of a regex walked unanchored ([`is_anchor`]).
pub(crate) fn anchor_words(b: &[u8]) -> impl Iterator<Item = u64> + '_ {
    each_chunk(b, imp::anchor)
}

/// How many bytes `b` starts with that are [`is_token`]: where a run of them ends, sixteen
/// bytes at a time.
pub(crate) fn token_len(b: &[u8]) -> usize {
    imp::token_len(b)
}

/// How many bytes `b` starts with, counted in whole blocks of sixteen, that are printable ASCII
/// with no space after a space (nor first, after `prev_space`): where the fold's copy of plain
/// text stops, or the start of its last partial block, which the fold reads a byte at a time.
pub(crate) fn plain_ascii_len(b: &[u8], prev_space: bool) -> usize {
    imp::plain_ascii_len(b, prev_space)
}

/// Whether more than `limit` bytes of `b` are ASCII control bytes other than tab, newline and
/// carriage return, or DEL. It stops as soon as the count is past the limit (it only grows).
pub(crate) fn controls_over(b: &[u8], limit: usize) -> bool {
    let (blocks, tail) = b.as_chunks::<16>();
    let mut count = 0;
    for p in blocks {
        count += imp::controls16(p) as usize;
        if count > limit {
            return true;
        }
    }
    count + tail.iter().filter(|&&c| is_control(c)).count() > limit
}

/// Whether `c` may be part of a URL, a blob or an escape run: an ASCII letter or digit or one
/// of `+ - . / = % _ ~`.
pub(crate) const fn is_urlish(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.' | b'/' | b'=' | b'%' | b'_' | b'~')
}

/// The bytes leetspeak writes for letters: the digits but `2`, and `! $ + @ |`.
pub(crate) const fn is_leet(c: u8) -> bool {
    matches!(c, b'0'..=b'9' | b'!' | b'$' | b'+' | b'@' | b'|') && c != b'2'
}

/// ASCII digits and symbols (printable, not a letter nor a space) and the lead bytes of
/// characters of two or more bytes: the bytes the unanchored walk may be confined around
/// (the PII regexes need a digit, `+` or `@`). Letters and spaces are in every text; a
/// regex that needs one is walked over every byte.
pub(crate) const fn is_anchor(c: u8) -> bool {
    matches!(c, b'!'..=b'@' | b'['..=b'`' | b'{'..=b'~' | 0xc0..=0xff)
}

/// A byte of a word as the leet finder reads it: an ASCII letter or digit, a leet symbol
/// (`! $ + @ |`) or any non-ASCII byte.
pub(crate) const fn is_token(c: u8) -> bool {
    c.is_ascii_alphanumeric() || is_leet(c) || c >= 0x80
}

/// `0`, `1`, `.` and `-`: the bytes a binary octet or a Morse letter starts with.
pub(crate) const fn is_code_start(c: u8) -> bool {
    matches!(c, b'0' | b'1' | b'.' | b'-')
}

/// Printable ASCII that is not URL-ish and not `"` `'` `,` `:`: `! # $ & ( ) * ; < > ? @ [ \ ]
/// ^ \` { | }`, the symbols of Ascii85 and base85 (RFC 1924) that are not URL-ish, less the
/// punctuation prose puts after a word.
pub(crate) const fn is_symbol85(c: u8) -> bool {
    matches!(c, b'!'..=b'~') && !is_urlish(c) && !matches!(c, b'"' | b'\'' | b',' | b':')
}

/// An ASCII control byte other than tab, newline and carriage return, or DEL.
const fn is_control(c: u8) -> bool {
    (c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r')) || c == 0x7f
}

/// Bit `i` set where bits `i .. i + len` of `bits` are all set (every set bit for `len` 0 or 1):
/// the bitmap ANDed with itself shifted by doubling steps.
pub(crate) fn ones_from(bits: &[u64], len: usize) -> Vec<u64> {
    let mut r = bits.to_vec();
    let mut covered = 1;
    while covered < len {
        let s = covered.min(len - covered);
        // In place from the first word: word k reads words k and later, not yet changed.
        for k in 0..r.len() {
            let (q, b) = (s / 64, s % 64);
            let lo = r.get(k + q).copied().unwrap_or(0);
            let hi = r.get(k + q + 1).copied().unwrap_or(0);
            let shifted = if b == 0 {
                lo
            } else {
                (lo >> b) | (hi << (64 - b))
            };
            r[k] &= shifted;
        }
        covered += s;
    }
    r
}

/// The first clear bit of `bits` at or after `from`, or the number of bits if none is.
pub(crate) fn next_clear(bits: &[u64], from: usize) -> usize {
    let mut k = from / 64;
    let Some(&first) = bits.get(k) else {
        return bits.len() * 64;
    };
    let mut w = !first & (!0u64 << (from % 64));
    loop {
        if w != 0 {
            return k * 64 + w.trailing_zeros() as usize;
        }
        k += 1;
        match bits.get(k) {
            Some(&x) => w = !x,
            None => return bits.len() * 64,
        }
    }
}

/// The last clear bit of `bits` before bit `i`, if any.
pub(crate) fn last_zero_before(bits: &[u64], i: usize) -> Option<usize> {
    let mut k = i / 64;
    let mut w = !*bits.get(k)? & ((1u64 << (i % 64)) - 1);
    loop {
        if w != 0 {
            return Some(k * 64 + 63 - w.leading_zeros() as usize);
        }
        k = k.checked_sub(1)?;
        w = !bits[k];
    }
}

/// The first set bit at or after `from` in `bits`.
pub(crate) fn next_bit(bits: &[u64], from: usize) -> Option<usize> {
    let mut k = from / 64;
    let mut w = *bits.get(k)? & (!0u64 << (from % 64));
    loop {
        if w != 0 {
            return Some(k * 64 + w.trailing_zeros() as usize);
        }
        k += 1;
        w = *bits.get(k)?;
    }
}
/// `f` of each 64 bytes of `b`, the last chunk padded with zero bytes (in none of the classes).
fn per_chunk<T>(b: &[u8], f: impl Fn(&[u8; 64]) -> T) -> Vec<T> {
    each_chunk(b, f).collect()
}

/// [`per_chunk`], a chunk at a time as it is read.
fn each_chunk<'b, T>(b: &'b [u8], f: impl Fn(&[u8; 64]) -> T + 'b) -> impl Iterator<Item = T> + 'b {
    let (full, tail) = b.as_chunks::<64>();
    let last = (!tail.is_empty()).then(|| {
        let mut last = [0u8; 64];
        last[..tail.len()].copy_from_slice(tail);
        last
    });
    full.iter().copied().chain(last).map(move |chunk| f(&chunk))
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
use sse2 as imp;

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
use bytewise as imp;

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use super::{Letters, Urlish};
    use safe_arch::{
        bitandnot_m128i, bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, m128i,
        max_u8_m128i, min_u8_m128i, move_mask_i8_m128i, set_splat_i8_m128i, sub_i8_m128i,
    };

    pub(super) fn urlish(chunk: &[u8; 64]) -> Urlish {
        let (parts, _) = chunk.as_chunks::<16>();
        let mut u = Urlish::default();
        for (k, p) in parts.iter().enumerate() {
            let x = load_unaligned_m128i(p);
            let symbols = [b'+', b'=', b'%', b'_', b'~']
                .into_iter()
                .fold(within(x, b'-', b'/'), |acc, c| or(acc, eq(x, c)));
            let urlish = or(alnum(x), symbols);
            let prose = [b'"', b'\'', b',', b':']
                .into_iter()
                .fold(urlish, |acc, c| or(acc, eq(x, c)));
            let symbol85 = bitandnot_m128i(prose, within(x, b'!', b'~'));
            let code_start = or(within(x, b'0', b'1'), within(x, b'-', b'.'));
            u.bits |= bits(urlish) << (16 * k);
            u.code_start |= bits(code_start) << (16 * k);
            u.symbol85 |= bits(symbol85) << (16 * k);
        }
        u
    }

    pub(super) fn leet(chunk: &[u8; 64]) -> u64 {
        each16(chunk, |x| {
            let digits = bitandnot_m128i(eq(x, b'2'), within(x, b'0', b'9'));
            bits(or(digits, leet_symbols(x)))
        })
    }

    pub(super) fn anchor(chunk: &[u8; 64]) -> u64 {
        each16(chunk, |x| {
            let lower = or(x, splat(0x20));
            let letter = within(lower, b'a', b'z');
            let printable = within(x, b'!', b'~');
            bits(or(bitandnot_m128i(letter, printable), at_least(x, 0xc0)))
        })
    }

    pub(super) fn token_len(b: &[u8]) -> usize {
        let (blocks, tail) = b.as_chunks::<16>();
        for (k, p) in blocks.iter().enumerate() {
            let x = load_unaligned_m128i(p);
            let token = or(alnum(x), leet_symbols(x));
            // The high bit of `x` itself marks the non-ASCII bytes.
            let stop = !(bits(token) | bits(x)) & 0xffff;
            if stop != 0 {
                return 16 * k + stop.trailing_zeros() as usize;
            }
        }
        16 * blocks.len() + tail.iter().take_while(|&&c| super::is_token(c)).count()
    }

    pub(super) fn plain_ascii_len(b: &[u8], prev_space: bool) -> usize {
        let (blocks, _) = b.as_chunks::<16>();
        let mut carry = u64::from(prev_space);
        for (k, p) in blocks.iter().enumerate() {
            let x = load_unaligned_m128i(p);
            let space = bits(eq(x, b' '));
            let stop = (!bits(within(x, b' ', b'~')) & 0xffff) | (space & ((space << 1) | carry));
            if stop != 0 {
                return 16 * k + stop.trailing_zeros() as usize;
            }
            carry = space >> 15;
        }
        16 * blocks.len()
    }

    /// How many of sixteen bytes are [`super::is_control`].
    pub(super) fn controls16(p: &[u8; 16]) -> u32 {
        let x = load_unaligned_m128i(p);
        let allowed = or(or(eq(x, b'\t'), eq(x, b'\n')), eq(x, b'\r'));
        let below = cmp_eq_mask_i8_m128i(min_u8_m128i(x, splat(0x1f)), x);
        let control = or(bitandnot_m128i(allowed, below), eq(x, 0x7f));
        bits(control).count_ones()
    }

    pub(super) fn letters(chunk: &[u8; 64]) -> Letters {
        let alnum = each16(chunk, |x| bits(alnum(x)));
        let high = each16(chunk, bits);
        if high == 0 {
            return Letters {
                alnum,
                ..Letters::default()
            };
        }
        Letters {
            alnum,
            high,
            lead: each16(chunk, |x| bits(at_least(x, 0xc0))),
            three: each16(chunk, |x| bits(at_least(x, 0xe0))),
            four: each16(chunk, |x| bits(at_least(x, 0xf0))),
        }
    }

    /// The four 16-bit masks `f` makes of the four sixteen-byte parts of `chunk`, as one word.
    #[inline(always)]
    fn each16(chunk: &[u8; 64], f: impl Fn(m128i) -> u64) -> u64 {
        let (parts, _) = chunk.as_chunks::<16>();
        parts
            .iter()
            .enumerate()
            .fold(0, |m, (k, p)| m | f(load_unaligned_m128i(p)) << (16 * k))
    }

    /// The leet symbols `! $ + @ |` ([`super::is_leet`] less the digits).
    #[inline(always)]
    fn leet_symbols(x: m128i) -> m128i {
        [b'!', b'$', b'+', b'@', b'|']
            .into_iter()
            .map(|c| eq(x, c))
            .fold(splat(0), or)
    }

    /// The high bit of each byte as a bit.
    #[inline(always)]
    fn bits(v: m128i) -> u64 {
        u64::from(move_mask_i8_m128i(v).cast_unsigned())
    }

    #[inline(always)]
    fn splat(c: u8) -> m128i {
        set_splat_i8_m128i(c.cast_signed())
    }

    #[inline(always)]
    fn or(a: m128i, b: m128i) -> m128i {
        bitor_m128i(a, b)
    }

    #[inline(always)]
    fn eq(x: m128i, c: u8) -> m128i {
        cmp_eq_mask_i8_m128i(x, splat(c))
    }

    /// Bytes from `lo` to `hi`: `x - lo` (wrapping) is at most `hi - lo`.
    #[inline(always)]
    fn within(x: m128i, lo: u8, hi: u8) -> m128i {
        let d = sub_i8_m128i(x, splat(lo));
        cmp_eq_mask_i8_m128i(min_u8_m128i(d, splat(hi - lo)), d)
    }

    #[inline(always)]
    fn at_least(x: m128i, lo: u8) -> m128i {
        cmp_eq_mask_i8_m128i(max_u8_m128i(x, splat(lo)), x)
    }

    /// ASCII letters (either case: `| 0x20` lowercases them and moves no other byte into
    /// `a..=z`) and digits.
    #[inline(always)]
    fn alnum(x: m128i) -> m128i {
        or(
            within(x, b'0', b'9'),
            within(or(x, splat(0x20)), b'a', b'z'),
        )
    }
}

/// The same classes a byte at a time: the reference for the SSE2 code, and the code on other
/// targets.
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
mod bytewise {
    use super::{
        is_anchor, is_code_start, is_control, is_leet, is_symbol85, is_token, is_urlish, Letters,
        Urlish,
    };

    pub(super) fn controls16(p: &[u8; 16]) -> u32 {
        p.iter().filter(|&&c| is_control(c)).count() as u32
    }

    pub(super) fn leet(chunk: &[u8; 64]) -> u64 {
        bits(chunk, is_leet)
    }

    pub(super) fn plain_ascii_len(b: &[u8], prev_space: bool) -> usize {
        let whole = b.len() / 16 * 16;
        let mut prev = prev_space;
        for (i, &c) in b[..whole].iter().enumerate() {
            if !(b' '..=b'~').contains(&c) || (c == b' ' && prev) {
                return i;
            }
            prev = c == b' ';
        }
        whole
    }

    pub(super) fn anchor(chunk: &[u8; 64]) -> u64 {
        bits(chunk, is_anchor)
    }

    pub(super) fn token_len(b: &[u8]) -> usize {
        b.iter().take_while(|&&c| is_token(c)).count()
    }

    pub(super) fn urlish(chunk: &[u8; 64]) -> Urlish {
        Urlish {
            bits: bits(chunk, is_urlish),
            code_start: bits(chunk, is_code_start),
            symbol85: bits(chunk, is_symbol85),
        }
    }

    pub(super) fn letters(chunk: &[u8; 64]) -> Letters {
        Letters {
            alnum: bits(chunk, |c| c.is_ascii_alphanumeric()),
            high: bits(chunk, |c| c >= 0x80),
            lead: bits(chunk, |c| c >= 0xc0),
            three: bits(chunk, |c| c >= 0xe0),
            four: bits(chunk, |c| c >= 0xf0),
        }
    }

    fn bits(chunk: &[u8; 64], f: impl Fn(u8) -> bool) -> u64 {
        chunk
            .iter()
            .enumerate()
            .fold(0, |m, (i, &c)| m | u64::from(f(c)) << i)
    }
}

/// Random bytes for tests: from `common`, but one in `sparse` (on average) from `rare`; `x`
/// is the generator's state.
#[cfg(test)]
pub(crate) fn sparse_text(
    len: usize,
    common: &[u8],
    rare: &[u8],
    sparse: u64,
    x: &mut u64,
) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let r = *x >> 33;
            let pool = if r.is_multiple_of(sparse) {
                rare
            } else {
                common
            };
            pool[(r / 64) as usize % pool.len()]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain-ASCII prefix is the byte rule's, from every offset of random texts of spaces,
    /// letters, tildes, DEL, controls and non-ASCII, after a space and not.
    #[test]
    fn plain_ascii_prefix_agrees_with_the_byte_rule() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for len in [0, 1, 15, 16, 17, 31, 32, 33, 64, 100] {
            for sparse in [1u64, 4, 40] {
                let text = sparse_text(len, b"ab c", b"a  ~ \x7f\n\x1f\xc3!z", sparse, &mut x);
                for from in 0..=text.len() {
                    for prev_space in [false, true] {
                        let t = &text[from..];
                        assert_eq!(
                            plain_ascii_len(t, prev_space),
                            bytewise::plain_ascii_len(t, prev_space),
                            "{t:?} {prev_space}"
                        );
                    }
                }
            }
        }
    }

    /// Every byte value at every position among fillers of each class, random texts of every
    /// length up to three chunks: the bitmaps are what the byte rules give.
    #[test]
    fn bitmaps_agree_with_the_byte_rules() {
        let mut texts: Vec<Vec<u8>> = Vec::new();
        for v in 0..=255u8 {
            for fill in [b'a', b' ', b'-', 0xc3, 0x80, 0xe2, 0xf0, 0] {
                for pos in [0, 1, 15, 16, 17, 31, 32, 47, 48, 62, 63] {
                    let mut t = vec![fill; 64];
                    t[pos] = v;
                    texts.push(t);
                }
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..=192 {
            texts.push(
                (0..len)
                    .map(|_| {
                        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                        (x >> 56) as u8
                    })
                    .collect(),
            );
        }
        for t in &texts {
            let bit = |i: usize, f: fn(u8) -> bool| -> u64 { u64::from(f(t[i])) << (i % 64) };
            let mut want_url = vec![Urlish::default(); t.len().div_ceil(64)];
            let mut want_leet = vec![0u64; t.len().div_ceil(64)];
            let mut want_anchor = vec![0u64; t.len().div_ceil(64)];
            let mut want_letters = vec![Letters::default(); t.len().div_ceil(64)];
            for i in 0..t.len() {
                let u = &mut want_url[i / 64];
                u.bits |= bit(i, is_urlish);
                u.code_start |= bit(i, is_code_start);
                u.symbol85 |= bit(i, is_symbol85);
                want_leet[i / 64] |= bit(i, is_leet);
                want_anchor[i / 64] |= bit(i, is_anchor);
                let w = &mut want_letters[i / 64];
                w.alnum |= bit(i, |c| c.is_ascii_alphanumeric());
                w.high |= bit(i, |c| c >= 0x80);
                w.lead |= bit(i, |c| c >= 0xc0);
                w.three |= bit(i, |c| c >= 0xe0);
                w.four |= bit(i, |c| c >= 0xf0);
            }
            assert_eq!(urlish_bits(t), want_url, "{t:?}");
            assert_eq!(letter_bits(t), want_letters, "{t:?}");
            assert_eq!(per_chunk(t, bytewise::urlish), want_url, "{t:?}");
            assert_eq!(leet_bits(t), want_leet, "{t:?}");
            assert_eq!(per_chunk(t, bytewise::leet), want_leet, "{t:?}");
            assert_eq!(anchor_words(t).collect::<Vec<_>>(), want_anchor, "{t:?}");
            assert_eq!(per_chunk(t, bytewise::anchor), want_anchor, "{t:?}");
            for p in t.as_chunks::<16>().0 {
                assert_eq!(imp::controls16(p), bytewise::controls16(p), "{p:?}");
            }
            for from in [0, 1, 17, 40].into_iter().filter(|&f| f <= t.len()) {
                let b = &t[from..];
                assert_eq!(token_len(b), bytewise::token_len(b), "{b:?}");
            }
            assert_eq!(per_chunk(t, bytewise::letters), want_letters, "{t:?}");
        }
    }
}
