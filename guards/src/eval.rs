//! `warden rules eval`: the full input guard over a labelled JSONL file, exactly as the proxy runs
//! it on a single user message under a policy (the rules, then the classifier when one is
//! loaded, fused as [`crate::classifier`] says), with precision, recall, false-positive rate
//! overall, per source and per layer, and the guard's latency.
//!
//! Input lines: `{"text": "...", "label": 0|1, "source"?: "...", "role"?: "..."}`. `role`
//! (default `user`; also `system`, `assistant`, `tool`, `tool_args`) says which message role the
//! text is scanned as, so tool output and retrieved documents are judged as the proxy would judge
//! them in a `tool` message. A line that is not that shape is an error naming its line number;
//! nothing is silently skipped.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};

use crate::classifier::{classify_request, Classified, ClassifierPolicy, Classify};
use crate::engine::Engine;
use crate::pack::Target;
use crate::policy::{Decision, Message, Policy, Verdict};

/// Which layers decide (`rules eval --layers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layers {
    Rules,
    Classifier,
    /// Both, fused as the proxy fuses them.
    #[default]
    All,
}

impl Layers {
    pub fn parse(s: &str) -> Option<Layers> {
        match s {
            "rules" => Some(Layers::Rules),
            "classifier" => Some(Layers::Classifier),
            "all" => Some(Layers::All),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Layers::Rules => "rules",
            Layers::Classifier => "classifier",
            Layers::All => "all",
        }
    }
}

/// One labelled example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub text: String,
    /// `true` = attack (should be blocked).
    pub attack: bool,
    pub source: String,
    /// The role the text is scanned as.
    pub target: Target,
}

/// Each non-empty line of `input` parsed as JSON and handed to `parse` with its 1-based
/// number; every bad line (not JSON, or refused by `parse`) reported as `line N: problem`. The
/// labelled-data readers of `rules eval` and `output eval` share it.
pub fn parse_lines<T>(
    input: &str,
    mut parse: impl FnMut(usize, &Value) -> Result<T, String>,
) -> Result<Vec<T>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(line)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|v| parse(n, &v));
        match parsed {
            Ok(x) => out.push(x),
            Err(e) => errors.push(format!("line {n}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Parse JSONL; every bad line is reported as `line N: problem`.
pub fn parse_jsonl(input: &str) -> Result<Vec<Example>, Vec<String>> {
    parse_lines(input, |_, value| {
        let text = value.get("text").and_then(Value::as_str);
        let label = value.get("label").and_then(Value::as_u64);
        let source = match value.get("source") {
            None | Some(Value::Null) => Some("unspecified"),
            Some(v) => v.as_str(),
        };
        let target = match value.get("role") {
            None | Some(Value::Null) => Some(Target::User),
            Some(v) => v.as_str().and_then(Target::parse),
        };
        let Some(target) = target else {
            return Err(
                "\"role\" must be one of system, user, assistant, tool, tool_args".to_string(),
            );
        };
        match (text, label, source) {
            (Some(text), Some(label @ 0..=1), Some(source)) => Ok(Example {
                text: text.to_string(),
                attack: label == 1,
                source: source.to_string(),
                target,
            }),
            (None, ..) => Err("\"text\" must be a string".into()),
            (_, _, None) => Err("\"source\" must be a string".into()),
            _ => Err("\"label\" must be 0 or 1".into()),
        }
    })
}

/// Confusion counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    pub fn_: u64,
}

impl Counts {
    /// One example: its label (`attack`: positive) and what was predicted (`blocked`).
    pub fn add(&mut self, attack: bool, blocked: bool) {
        match (attack, blocked) {
            (true, true) => self.tp += 1,
            (true, false) => self.fn_ += 1,
            (false, true) => self.fp += 1,
            (false, false) => self.tn += 1,
        }
    }

    /// `None` when undefined (no positives predicted / no attacks / no benign examples).
    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }

    pub fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }

    pub fn fpr(&self) -> Option<f64> {
        ratio(self.fp, self.fp + self.tn)
    }

    pub fn f1(&self) -> Option<f64> {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }

    pub fn accuracy(&self) -> Option<f64> {
        ratio(self.tp + self.tn, self.tp + self.tn + self.fp + self.fn_)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn_,
            "precision": self.precision(), "recall": self.recall(), "fpr": self.fpr(),
        })
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// The figures `rules eval` prints.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub overall: Counts,
    pub by_source: BTreeMap<String, Counts>,
    /// Guard latency per example, microseconds, sorted.
    pub latencies_us: Vec<f64>,
    /// Every example the guard got wrong, in input order: what a rule author reads next.
    pub errors: Vec<Misclassified>,
    /// The layers that decided.
    pub layers: Layers,
    /// Each layer alone, when a classifier ran: `rules` and `classifier`.
    pub by_layer: BTreeMap<&'static str, Counts>,
    /// Examples the classifier could not score (counted as its own layer's misses or passes
    /// as fail-open would decide: on the rules alone).
    pub classifier_failures: u64,
}

/// An example the guard got wrong: a missed attack or a blocked benign text.
#[derive(Debug, Clone)]
pub struct Misclassified {
    /// Index of the example in the input.
    pub index: usize,
    /// Ids of every rule that matched (blocking or not), in rule order: for a missed attack,
    /// those that scored too little to block.
    pub rules: Vec<String>,
    /// The classifier's probability for the example (its highest window), when it scored it:
    /// how far a miss or a false positive sat from the threshold.
    pub classifier_score: Option<f32>,
}

impl Report {
    /// The misclassified examples as JSONL: each input line's `text`, `label`, `source` and
    /// `role`, plus `"rules"` (the ids that matched), `"error"` (`missed` or `blocked`) and
    /// `"classifier_score"` (the classifier's probability; `null` when it did not score it).
    pub fn errors_jsonl(&self, examples: &[Example]) -> String {
        let mut out = String::new();
        for e in &self.errors {
            let Some(ex) = examples.get(e.index) else {
                continue;
            };
            let line = json!({
                "error": if ex.attack { "missed" } else { "blocked" },
                "text": ex.text,
                "label": u8::from(ex.attack),
                "source": ex.source,
                "role": ex.target.name(),
                "rules": e.rules,
                "classifier_score": e.classifier_score,
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        out
    }

    pub fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        self.latencies_us[rank.min(self.latencies_us.len() - 1)]
    }

    pub fn to_json(&self) -> Value {
        let by_source: serde_json::Map<String, Value> = self
            .by_source
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        let by_layer: serde_json::Map<String, Value> = self
            .by_layer
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.to_json()))
            .collect();
        json!({
            "overall": self.overall.to_json(),
            "by_source": by_source,
            "latency_us": {"p50": self.percentile_us(50.0), "p99": self.percentile_us(99.0)},
            "layers": self.layers.name(),
            "by_layer": by_layer,
            "classifier_failures": self.classifier_failures,
        })
    }

    pub fn to_table(&self) -> String {
        let pct =
            |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{:.1}%", v * 100.0));
        let mut out = format!(
            "{:<28} {:>7} {:>7} {:>7} {:>7} {:>10} {:>8} {:>7}\n",
            "source", "tp", "fp", "tn", "fn", "precision", "recall", "fpr"
        );
        let mut row = |name: &str, c: &Counts| {
            out.push_str(&format!(
                "{:<28} {:>7} {:>7} {:>7} {:>7} {:>10} {:>8} {:>7}\n",
                name,
                c.tp,
                c.fp,
                c.tn,
                c.fn_,
                pct(c.precision()),
                pct(c.recall()),
                pct(c.fpr())
            ));
        };
        for (name, c) in &self.by_source {
            row(name, c);
        }
        row("overall", &self.overall);
        for (name, c) in &self.by_layer {
            row(&format!("layer: {name} alone"), c);
        }
        if self.classifier_failures > 0 {
            out.push_str(&format!(
                "the classifier failed on {} example(s): decided on the rules alone\n",
                self.classifier_failures
            ));
        }
        out.push_str(&format!(
            "guard latency per message: p50 {:.1} µs, p99 {:.1} µs ({} messages)\n",
            self.percentile_us(50.0),
            self.percentile_us(99.0),
            self.latencies_us.len()
        ));
        out
    }
}

/// The classifier a run of `rules eval` uses, with the policy it is held to.
pub type ClassifierRun<'a> = (&'a dyn Classify, &'a ClassifierPolicy);

/// Run the guard over every example as one message of its role (`user` unless given): the rules
/// alone, or with `classifier` as `layers` says.
pub fn evaluate(
    engine: &Engine,
    policy: &Policy,
    examples: &[Example],
    classifier: Option<ClassifierRun<'_>>,
    layers: Layers,
) -> Report {
    let mut report = Report {
        layers,
        ..Report::default()
    };
    for (index, ex) in examples.iter().enumerate() {
        let started = Instant::now();
        let msgs = [Message {
            target: ex.target,
            text: &ex.text,
        }];
        // The rules always run: `by_layer` reports them whatever decides.
        let mut verdict = policy.inspect(engine, &msgs, None);
        let mut classifier_score = None;
        if let (Some((c, cp)), false) = (classifier, layers == Layers::Rules) {
            let rules_blocked = verdict.decision == Decision::Block;
            // What the classifier alone says (fused into an empty verdict), and (as the proxy
            // does) the fusion when the rules have not already blocked.
            let mut alone = policy.inspect(engine, &[], None);
            let texts = [(ex.target, ex.text.as_str())];
            match classify_request(c, cp, engine.normalizer(), &texts, started) {
                Classified::Scored(found) => {
                    classifier_score = Some(policy.fuse(&mut alone, found).score);
                    if !rules_blocked {
                        policy.fuse(&mut verdict, found);
                    }
                }
                Classified::Nothing => {}
                Classified::Failed { .. } => report.classifier_failures += 1,
            }
            let by_layer = &mut report.by_layer;
            by_layer
                .entry("rules")
                .or_default()
                .add(ex.attack, rules_blocked);
            by_layer
                .entry("classifier")
                .or_default()
                .add(ex.attack, alone.decision == Decision::Block);
            if layers == Layers::Classifier {
                verdict = alone;
            }
        }
        report
            .latencies_us
            .push(started.elapsed().as_secs_f64() * 1e6);
        let blocked = verdict.decision == Decision::Block;
        if blocked != ex.attack {
            report.errors.push(Misclassified {
                index,
                rules: matched_ids(&verdict),
                classifier_score,
            });
        }
        report.overall.add(ex.attack, blocked);
        report
            .by_source
            .entry(ex.source.clone())
            .or_default()
            .add(ex.attack, blocked);
    }
    report.latencies_us.sort_by(f64::total_cmp);
    report
}

/// Every rule that matched, and `classifier` when it added points.
fn matched_ids(v: &Verdict) -> Vec<String> {
    let mut ids: Vec<String> = v.matches.iter().map(|m| m.id.clone()).collect();
    if v.classifier.is_some_and(|c| c.points > 0) {
        ids.push(crate::classifier::RULE_ID.to_string());
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_reported_by_number() {
        let input = "{\"text\":\"a\",\"label\":1}\nnot json\n{\"text\":\"b\",\"label\":2}\n\n{\"label\":0}\n{\"text\":\"c\",\"label\":0,\"role\":\"web\"}\n";
        let errs = parse_jsonl(input).unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[3].starts_with("line 6: \"role\""));
        assert!(errs[0].starts_with("line 2: not JSON"));
        assert!(errs[1].starts_with("line 3: \"label\""));
        assert!(errs[2].starts_with("line 5: \"text\""));
    }

    #[test]
    fn counts_give_precision_recall_and_fpr() {
        let mut c = Counts::default();
        for (a, b) in [
            (true, true),
            (true, true),
            (true, false),
            (false, true),
            (false, false),
            (false, false),
            (false, false),
        ] {
            c.add(a, b);
        }
        assert_eq!(c.precision(), Some(2.0 / 3.0));
        assert_eq!(c.recall(), Some(2.0 / 3.0));
        assert_eq!(c.fpr(), Some(0.25));
        assert_eq!(Counts::default().precision(), None);
    }
}
