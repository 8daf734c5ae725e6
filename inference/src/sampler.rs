//! Choosing the next token: greedy (temperature 0), or temperature + nucleus (top-p) sampling
//! with a per-request seeded RNG, so a fixed seed gives the same output every time. Also computes
//! log-probabilities for `logprobs` / `top_logprobs`.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    pub seed: Option<u64>,
}

/// A chosen token with its log-probability and the top alternatives.
#[derive(Debug, Clone)]
pub struct Choice {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self { params, rng }
    }

    /// Pick from `logits`. With `want_logprobs`, the chosen token's log-probability and
    /// `top_k_logprobs` alternatives are computed; without, they are skipped (a full softmax over
    /// the vocabulary per token is not free) and `logprob` is 0.
    pub fn sample(&mut self, logits: &[f32], top_k_logprobs: usize, want_logprobs: bool) -> Choice {
        let token = if self.params.temperature <= 1e-5 {
            argmax(logits)
        } else {
            self.sample_nucleus(logits)
        };
        if !want_logprobs {
            return Choice {
                token,
                logprob: 0.0,
                top: Vec::new(),
            };
        }
        let logp = log_softmax(logits);
        let top = if top_k_logprobs > 0 {
            let mut idx: Vec<u32> = (0..logp.len() as u32).collect();
            let k = top_k_logprobs.min(idx.len());
            idx.select_nth_unstable_by(k.saturating_sub(1), |a, b| {
                logp[*b as usize].total_cmp(&logp[*a as usize])
            });
            let mut top: Vec<(u32, f32)> =
                idx[..k].iter().map(|&i| (i, logp[i as usize])).collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
            top
        } else {
            Vec::new()
        };
        Choice {
            token,
            logprob: logp
                .get(token as usize)
                .copied()
                .unwrap_or(f32::NEG_INFINITY),
            top,
        }
    }

    fn sample_nucleus(&mut self, logits: &[f32]) -> u32 {
        let t = self.params.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, ((l - max) / t).exp()))
            .collect();
        let total: f32 = probs.iter().map(|p| p.1).sum();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top_p = self.params.top_p.clamp(0.0, 1.0);
        let mut kept = 0.0;
        let mut cut = probs.len();
        for (i, p) in probs.iter().enumerate() {
            kept += p.1 / total;
            if kept >= top_p {
                cut = i + 1;
                break;
            }
        }
        let probs = &probs[..cut.max(1)];
        let mass: f32 = probs.iter().map(|p| p.1).sum();
        let mut r = self.rng.random::<f32>() * mass;
        for p in probs {
            r -= p.1;
            if r <= 0.0 {
                return p.0;
            }
        }
        probs.last().map_or(0, |p| p.0)
    }
}

pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in xs.iter().enumerate() {
        if *x > xs[best] {
            best = i;
        }
    }
    best as u32
}

pub fn log_softmax(xs: &[f32]) -> Vec<f32> {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = xs.iter().map(|x| (x - max).exp()).sum::<f32>().ln() + max;
    xs.iter().map(|x| x - lse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_argmax_and_reports_logprobs() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            seed: None,
        });
        let c = s.sample(&[0.0, 3.0, 1.0], 2, true);
        assert_eq!(c.token, 1);
        assert_eq!(c.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!(c.logprob < 0.0 && c.logprob > -0.2);
    }

    #[test]
    fn seeded_sampling_is_reproducible() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = || {
            let mut s = Sampler::new(SamplingParams {
                temperature: 1.0,
                top_p: 0.9,
                seed: Some(42),
            });
            (0..20)
                .map(|_| s.sample(&logits, 0, false).token)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn tiny_top_p_is_greedy() {
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_p: 0.0001,
            seed: Some(1),
        });
        for _ in 0..10 {
            assert_eq!(s.sample(&[0.0, 5.0, 1.0], 0, false).token, 1);
        }
    }
}
