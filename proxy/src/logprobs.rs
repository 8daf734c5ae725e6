//! Token log-probabilities of a reply, for the hallucination signals: asked of the upstream when
//! `[detectors] logprobs` is on and the client did not ask (then removed from what the client
//! gets, as the injected usage event is), and summed up per reply: mean and minimum
//! log-probability of the first choice's tokens, and their mean entropy over the top
//! alternatives (`top_logprobs`, 5 asked; the probability mass outside them counts as one more
//! outcome, so the entropy is a lower bound).

use serde_json::{Map, Value};

/// Alternatives asked per token.
pub const TOP: u64 = 5;

/// Asks for log-probabilities on a chat or completions body that did not; `true` when it did.
pub fn ask(doc: &mut Map<String, Value>, chat: bool) -> bool {
    // Completions' `logprobs: 0` asks for the sampled tokens' log-probabilities alone.
    let asked = !matches!(
        doc.get("logprobs"),
        None | Some(Value::Null) | Some(Value::Bool(false))
    );
    if asked {
        return false;
    }
    if chat {
        doc.insert("logprobs".into(), Value::Bool(true));
        doc.insert("top_logprobs".into(), Value::from(TOP));
    } else {
        doc.insert("logprobs".into(), Value::from(TOP));
    }
    true
}

/// What the first choice's tokens say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogprobStats {
    tokens: u64,
    sum: f64,
    min: f64,
    entropy_sum: f64,
    entropy_n: u64,
}

/// The summary recorded per reply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogprobSummary {
    pub mean: f32,
    pub min: f32,
    /// `None` without alternatives to compute it from.
    pub entropy: Option<f32>,
}

impl LogprobStats {
    /// Takes the log-probabilities of a chunk or a whole reply (`choices[i].logprobs`, chat or
    /// completions shape) into the stats (first choice only); with `strip`, replaces them with
    /// `null`. `true` when the value changed.
    pub fn take(&mut self, v: &mut Value, strip: bool) -> bool {
        let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else {
            return false;
        };
        let mut changed = false;
        for c in choices {
            let first = c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0;
            let Some(lp) = c.get_mut("logprobs") else {
                continue;
            };
            if lp.is_null() {
                continue;
            }
            if first {
                self.add(lp);
            }
            if strip {
                *lp = Value::Null;
                changed = true;
            }
        }
        changed
    }

    fn add(&mut self, lp: &Value) {
        // Chat: {"content": [{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]}.
        if let Some(content) = lp.get("content").and_then(Value::as_array) {
            for t in content {
                let Some(l) = t.get("logprob").and_then(Value::as_f64) else {
                    continue;
                };
                let alts: Vec<f64> = t
                    .get("top_logprobs")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.get("logprob").and_then(Value::as_f64))
                            .collect()
                    })
                    .unwrap_or_default();
                self.token(l, &alts);
            }
            return;
        }
        // Completions: {"token_logprobs": [..], "top_logprobs": [{"tok": lp, ..}, ..]}.
        if let Some(ls) = lp.get("token_logprobs").and_then(Value::as_array) {
            let tops = lp.get("top_logprobs").and_then(Value::as_array);
            for (i, l) in ls.iter().enumerate() {
                let Some(l) = l.as_f64() else {
                    continue;
                };
                let alts: Vec<f64> = tops
                    .and_then(|t| t.get(i))
                    .and_then(Value::as_object)
                    .map(|o| o.values().filter_map(Value::as_f64).collect())
                    .unwrap_or_default();
                self.token(l, &alts);
            }
        }
    }

    fn token(&mut self, logprob: f64, alternatives: &[f64]) {
        if !logprob.is_finite() {
            return;
        }
        self.min = if self.tokens == 0 {
            logprob
        } else {
            self.min.min(logprob)
        };
        self.tokens += 1;
        self.sum += logprob;
        if !alternatives.is_empty() {
            let ps: Vec<f64> = alternatives
                .iter()
                .filter(|l| l.is_finite())
                .map(|l| l.exp())
                .collect();
            let rest = (1.0 - ps.iter().sum::<f64>()).max(0.0);
            let h: f64 = ps
                .iter()
                .chain(std::iter::once(&rest))
                .filter(|&&p| p > 0.0)
                .map(|p| -p * p.ln())
                .sum();
            self.entropy_sum += h;
            self.entropy_n += 1;
        }
    }

    /// `None` before any token.
    pub fn summary(&self) -> Option<LogprobSummary> {
        (self.tokens > 0).then(|| LogprobSummary {
            mean: (self.sum / self.tokens as f64) as f32,
            min: self.min as f32,
            entropy: (self.entropy_n > 0)
                .then(|| (self.entropy_sum / self.entropy_n as f64) as f32),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn asked_only_when_the_client_did_not() {
        let mut d = Map::new();
        assert!(ask(&mut d, true));
        assert_eq!(d["logprobs"], true);
        assert_eq!(d["top_logprobs"], 5);
        let mut d = json!({"logprobs": true}).as_object().unwrap().clone();
        assert!(!ask(&mut d, true));
        let mut d = Map::new();
        assert!(ask(&mut d, false));
        assert_eq!(d["logprobs"], 5);
    }

    #[test]
    fn chat_and_completions_shapes_are_summed_and_stripped() {
        let mut s = LogprobStats::default();
        let mut chunk = json!({"choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": {"content": [
            {"token": "Hi", "logprob": -0.1, "top_logprobs": [{"token": "Hi", "logprob": -0.1}, {"token": "Yo", "logprob": -2.5}]},
            {"token": "!", "logprob": -2.0, "top_logprobs": []}
        ]}}]});
        assert!(s.take(&mut chunk, true));
        assert!(chunk["choices"][0]["logprobs"].is_null());
        let mut body = json!({"choices": [{"index": 0, "text": "ok", "logprobs": {"token_logprobs": [-0.5], "top_logprobs": [{"ok": -0.5, "no": -1.5}]}}]});
        assert!(!s.take(&mut body, false));
        assert!(body["choices"][0]["logprobs"].is_object());
        let sum = s.summary().unwrap();
        assert!((sum.mean - (-2.6 / 3.0)).abs() < 1e-5, "{sum:?}");
        assert!((sum.min - -2.0).abs() < 1e-6);
        assert!(sum.entropy.is_some_and(|h| h > 0.0));
        assert_eq!(LogprobStats::default().summary(), None);
    }
}
