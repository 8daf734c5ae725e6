//! Key/value cache storage, its memory budget, and the prefix cache.
//!
//! Each running sequence owns a [`SeqKv`]: per layer, keys and values laid out
//! `[n_kv_head, len, head_dim]` (f32). The [`KvBudget`] reserves, at admission, the bytes a
//! sequence can reach (prompt + `max_tokens`), so the cache never exceeds its bound however many
//! requests arrive; what does not fit waits in the queue. The [`PrefixCache`] keeps the KV of
//! prompt prefixes (whole blocks of [`BLOCK`] tokens, keyed by a BLAKE3 hash of the token ids) in
//! LRU order under its own byte bound, so a shared system prompt is computed once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Prefix-cache granularity in tokens: smaller blocks leave a shorter uncached tail to prefill,
/// larger ones mean fewer entries to hash and look up.
pub const BLOCK: usize = 8;

/// One sequence's cache.
#[derive(Clone, Debug)]
pub struct SeqKv {
    pub len: usize,
    n_kv_head: usize,
    head_dim: usize,
    /// Per layer: (keys, values).
    layers: Vec<[Vec<f32>; 2]>,
}

impl SeqKv {
    pub fn empty(n_layer: usize, n_kv_head: usize, head_dim: usize, len: usize) -> SeqKv {
        let size = n_kv_head * len * head_dim;
        SeqKv {
            len,
            n_kv_head,
            head_dim,
            layers: (0..n_layer)
                .map(|_| [vec![0.0; size], vec![0.0; size]])
                .collect(),
        }
    }

    /// Wrap per-layer `[keys, values]`, each `[n_kv_head, len, head_dim]`.
    pub fn from_layers(
        n_kv_head: usize,
        head_dim: usize,
        len: usize,
        layers: Vec<[Vec<f32>; 2]>,
    ) -> SeqKv {
        SeqKv {
            len,
            n_kv_head,
            head_dim,
            layers,
        }
    }

    /// The per-layer `[keys, values]` buffers, each `[n_kv_head, len, head_dim]`.
    pub fn into_layers(self) -> Vec<[Vec<f32>; 2]> {
        self.layers
    }

    pub fn layer(&self, layer: usize, pick: usize) -> &[f32] {
        &self.layers[layer][pick]
    }

    pub fn layer_mut(&mut self, layer: usize, pick: usize) -> &mut [f32] {
        &mut self.layers[layer][pick]
    }

    pub fn bytes(&self) -> usize {
        self.layers.len() * 2 * self.n_kv_head * self.len * self.head_dim * 4
    }

    /// Positions `start..end` (clamped), as their own cache.
    pub fn slice(&self, start: usize, end: usize) -> SeqKv {
        let end = end.min(self.len);
        let start = start.min(end);
        let len = end - start;
        let (h, d) = (self.n_kv_head, self.head_dim);
        let cut = |src: &Vec<f32>| {
            let mut out = Vec::with_capacity(h * len * d);
            for head in 0..h {
                let s0 = (head * self.len + start) * d;
                out.extend_from_slice(&src[s0..s0 + len * d]);
            }
            out
        };
        SeqKv {
            len,
            n_kv_head: h,
            head_dim: d,
            layers: self
                .layers
                .iter()
                .map(|kv| [cut(&kv[0]), cut(&kv[1])])
                .collect(),
        }
    }

    /// Consecutive caches joined along the position axis.
    pub fn concat(parts: &[Arc<SeqKv>]) -> SeqKv {
        let Some(first) = parts.first() else {
            return SeqKv::empty(0, 0, 0, 0);
        };
        let (h, d, n_layer) = (first.n_kv_head, first.head_dim, first.layers.len());
        let len: usize = parts.iter().map(|p| p.len).sum();
        let mut out = SeqKv::empty(n_layer, h, d, len);
        let mut at = 0;
        for p in parts {
            for layer in 0..n_layer {
                for pick in 0..2 {
                    let src = &p.layers[layer][pick];
                    let dst = &mut out.layers[layer][pick];
                    for head in 0..h {
                        let s0 = head * p.len * d;
                        let d0 = (head * len + at) * d;
                        dst[d0..d0 + p.len * d].copy_from_slice(&src[s0..s0 + p.len * d]);
                    }
                }
            }
            at += p.len;
        }
        out
    }
}

/// Byte accounting for the running sequences' caches.
#[derive(Debug)]
pub struct KvBudget {
    pub limit: usize,
    pub reserved: usize,
    pub peak: usize,
}

impl KvBudget {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            reserved: 0,
            peak: 0,
        }
    }

    pub fn try_reserve(&mut self, bytes: usize) -> bool {
        if self.reserved + bytes > self.limit {
            return false;
        }
        self.reserved += bytes;
        self.peak = self.peak.max(self.reserved);
        true
    }

    pub fn release(&mut self, bytes: usize) {
        self.reserved = self.reserved.saturating_sub(bytes);
    }

    pub fn usage(&self) -> f64 {
        if self.limit == 0 {
            0.0
        } else {
            self.reserved as f64 / self.limit as f64
        }
    }
}

/// LRU cache of prompt-prefix KV in blocks of [`BLOCK`] tokens.
///
/// Block `i` of a prompt is stored once, keyed by the hash of the prompt's first `(i + 1) *
/// BLOCK` tokens, so every prompt sharing those tokens (a system prompt, a few-shot preamble)
/// finds it. A lookup walks the chain from the first block and stops at the first miss.
#[derive(Debug)]
pub struct PrefixCache {
    limit: usize,
    used: usize,
    entries: HashMap<[u8; 32], Arc<SeqKv>>,
    lru: VecDeque<[u8; 32]>,
    pub hits: u64,
    pub lookups: u64,
}

/// Hashes of every whole-block prefix of `tokens`, up to `blocks` blocks.
fn chain_keys(tokens: &[u32], blocks: usize) -> Vec<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    let mut keys = Vec::with_capacity(blocks);
    for block in tokens.chunks_exact(BLOCK).take(blocks) {
        for t in block {
            h.update(&t.to_le_bytes());
        }
        keys.push(*h.finalize().as_bytes());
    }
    keys
}

impl PrefixCache {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: 0,
            entries: HashMap::new(),
            lru: VecDeque::new(),
            hits: 0,
            lookups: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// The KV of the longest cached block-aligned prefix of `tokens`, leaving at least one token
    /// to run (its logits are needed).
    pub fn lookup(&mut self, tokens: &[u32]) -> Option<SeqKv> {
        if !self.enabled() {
            return None;
        }
        self.lookups += 1;
        let keys = chain_keys(tokens, tokens.len().saturating_sub(1) / BLOCK);
        let mut parts = Vec::new();
        for k in &keys {
            match self.entries.get(k) {
                Some(block) => parts.push(block.clone()),
                None => break,
            }
        }
        if parts.is_empty() {
            return None;
        }
        // Later blocks first, so the chain's head is the most recently used and evicted last.
        for k in keys[..parts.len()].iter().rev() {
            self.touch(*k);
        }
        self.hits += 1;
        Some(SeqKv::concat(&parts))
    }

    /// Remember the whole blocks of a prompt whose KV is `kv`.
    pub fn insert(&mut self, tokens: &[u32], kv: &SeqKv) {
        if !self.enabled() {
            return;
        }
        let blocks = tokens.len().min(kv.len) / BLOCK;
        for (i, k) in chain_keys(tokens, blocks).into_iter().enumerate() {
            if self.entries.contains_key(&k) {
                continue;
            }
            let block = kv.slice(i * BLOCK, (i + 1) * BLOCK);
            let bytes = block.bytes();
            if bytes > self.limit {
                return;
            }
            while self.used + bytes > self.limit {
                let Some(old) = self.lru.pop_front() else {
                    break;
                };
                if let Some(e) = self.entries.remove(&old) {
                    self.used -= e.bytes();
                }
            }
            self.used += bytes;
            self.entries.insert(k, Arc::new(block));
            self.lru.push_back(k);
        }
    }

    fn touch(&mut self, k: [u8; 32]) {
        if let Some(pos) = self.lru.iter().position(|x| *x == k) {
            self.lru.remove(pos);
        }
        self.lru.push_back(k);
    }

    pub fn hit_ratio(&self) -> f64 {
        if self.lookups == 0 {
            0.0
        } else {
            self.hits as f64 / self.lookups as f64
        }
    }

    pub fn bytes(&self) -> usize {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(len: usize) -> SeqKv {
        let mut k = SeqKv::empty(2, 2, 4, len);
        for l in 0..2 {
            for p in 0..2 {
                for (i, x) in k.layer_mut(l, p).iter_mut().enumerate() {
                    *x = (l * 1000 + p * 100 + i) as f32;
                }
            }
        }
        k
    }

    #[test]
    fn slice_then_concat_round_trips() {
        let full = kv(5);
        let parts = [Arc::new(full.slice(0, 2)), Arc::new(full.slice(2, 5))];
        let joined = SeqKv::concat(&parts);
        assert_eq!(joined.len, 5);
        for l in 0..2 {
            for p in 0..2 {
                assert_eq!(joined.layer(l, p), full.layer(l, p));
            }
        }
    }

    #[test]
    fn budget_never_exceeds_its_limit() {
        let mut b = KvBudget::new(100);
        assert!(b.try_reserve(60));
        assert!(!b.try_reserve(50));
        b.release(60);
        assert!(b.try_reserve(100));
        assert_eq!(b.peak, 100);
    }

    #[test]
    fn prefix_cache_shares_blocks_across_prompts_and_evicts_lru() {
        let system: Vec<u32> = (0..32).collect();
        let mut a = system.clone();
        a.extend(100..110);
        let full = kv(a.len());
        let block_bytes = full.slice(0, BLOCK).bytes();
        let mut c = PrefixCache::new((32 / BLOCK + 1) * block_bytes);
        c.insert(&a, &full);
        // Another prompt with the same 32-token system prefix hits both blocks.
        let mut b = system.clone();
        b.extend(200..205);
        let hit = c.lookup(&b).unwrap();
        assert_eq!(hit.len, 32);
        assert_eq!(hit.layer(1, 1), full.slice(0, 32).layer(1, 1));
        // Always leaves one token to run.
        assert_eq!(c.lookup(&system).map(|k| k.len), Some(32 - BLOCK));
        // A different prompt evicts the least recently used blocks, within the bound.
        let other: Vec<u32> = (500..540).collect();
        c.insert(&other, &kv(other.len()));
        assert!(c.bytes() <= (32 / BLOCK + 1) * block_bytes);
        assert!(c.lookup(&other).is_some());
    }
}
