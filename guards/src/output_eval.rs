//! `warden output eval`: the refusal and leak detectors over a labelled JSONL file, with the
//! confusion counts, precision, recall, F1 and accuracy per task and per source, and latency.
//!
//! Input lines:
//! - `{"task":"refusal","text","label","source"?,"prompt"?}`: `text` is a model reply; label 1 =
//!   it is a refusal. Judged by [`RefusalRules`] as the proxy judges a reply.
//! - `{"task":"leak","text","secret","label","source"?}`: `secret` is the protected text (a
//!   system prompt or a protected string) the reply must not reveal; label 1 = it does. Judged by
//!   a [`LeakDetector`] built from `secret` alone, fed the whole reply, with the paraphrase
//!   check when a [`Paraphraser`] is given (as the proxy runs it when its encoder is loaded).
//!
//! A line of another shape is an error naming its line number; nothing is skipped silently.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};

pub use crate::eval::Counts;
use crate::leak::LeakDetector;
use crate::paraphrase::Paraphraser;
use crate::refusal::RefusalRules;

/// One labelled example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub task: Task,
    pub text: String,
    /// `leak` only.
    pub secret: String,
    pub label: bool,
    pub source: String,
    pub line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Task {
    Refusal,
    Leak,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Refusal => "refusal",
            Task::Leak => "leak",
        }
    }
}

/// Parse JSONL; every bad line is reported as `line N: problem`.
pub fn parse_jsonl(input: &str) -> Result<Vec<Example>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("line {n}: not JSON: {e}"));
                continue;
            }
        };
        let task = match v.get("task").and_then(Value::as_str) {
            Some("refusal") => Task::Refusal,
            Some("leak") => Task::Leak,
            _ => {
                errors.push(format!(
                    "line {n}: \"task\" must be \"refusal\" or \"leak\""
                ));
                continue;
            }
        };
        let Some(text) = v.get("text").and_then(Value::as_str) else {
            errors.push(format!("line {n}: \"text\" must be a string"));
            continue;
        };
        let label = match v.get("label").and_then(Value::as_u64) {
            Some(0) => false,
            Some(1) => true,
            _ => {
                errors.push(format!("line {n}: \"label\" must be 0 or 1"));
                continue;
            }
        };
        let secret = match (task, v.get("secret").and_then(Value::as_str)) {
            (Task::Leak, Some(s)) if !s.trim().is_empty() => s.to_string(),
            (Task::Leak, _) => {
                errors.push(format!(
                    "line {n}: a leak example needs \"secret\", a non-empty string"
                ));
                continue;
            }
            (Task::Refusal, _) => String::new(),
        };
        let source = match v.get("source") {
            None | Some(Value::Null) => "unspecified".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                errors.push(format!("line {n}: \"source\" must be a string"));
                continue;
            }
        };
        out.push(Example {
            task,
            text: text.to_string(),
            secret,
            label,
            source,
            line: n,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The result of an evaluation.
#[derive(Debug, Clone)]
pub struct Report {
    pub tasks: BTreeMap<Task, Counts>,
    /// Per `(task, source)`.
    pub by_source: BTreeMap<(Task, String), Counts>,
    /// Per example, what the detector said (for `--errors`).
    pub predicted: Vec<bool>,
    pub latency_us: (f64, f64),
    /// The paraphrase check ran.
    pub paraphrase: bool,
}

/// Run every example through its detector. An encoder failure is an error naming the line.
pub fn evaluate(examples: &[Example], paraphraser: Option<&Paraphraser>) -> Result<Report, String> {
    let rules = RefusalRules::default();
    let normalizer = LeakDetector::normalizer();
    let mut tasks: BTreeMap<Task, Counts> = BTreeMap::new();
    let mut by_source: BTreeMap<(Task, String), Counts> = BTreeMap::new();
    let mut predicted = Vec::with_capacity(examples.len());
    let mut times = Vec::with_capacity(examples.len());
    for ex in examples {
        let started = Instant::now();
        let p = match ex.task {
            Task::Refusal => rules.is_refusal(&ex.text),
            Task::Leak => {
                let texts = [ex.secret.as_str()];
                let check = match paraphraser.map(|p| p.check(&texts)).transpose() {
                    Ok(c) => c.flatten(),
                    Err(e) => return Err(format!("line {}: the sentence encoder: {e}", ex.line)),
                };
                let mut d = LeakDetector::new(&texts, None).with_paraphrase(check);
                let found = d.push(&ex.text).is_some() || d.finish(&normalizer).is_some();
                if let Some(e) = d.paraphrase().filter(|p| p.errors() > 0) {
                    return Err(format!(
                        "line {}: the sentence encoder failed {} times",
                        ex.line,
                        e.errors()
                    ));
                }
                found
            }
        };
        times.push(started.elapsed().as_secs_f64() * 1e6);
        predicted.push(p);
        tasks.entry(ex.task).or_default().add(ex.label, p);
        by_source
            .entry((ex.task, ex.source.clone()))
            .or_default()
            .add(ex.label, p);
    }
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(Report {
        tasks,
        by_source,
        predicted,
        latency_us: (pick(0.5), pick(0.99)),
        paraphrase: paraphraser.is_some(),
    })
}

/// The counts and the four scores of one task or source.
fn counts_json(c: &Counts) -> Value {
    json!({
        "tp": c.tp, "fp": c.fp, "tn": c.tn, "fn": c.fn_,
        "precision": c.precision(), "recall": c.recall(), "f1": c.f1(), "accuracy": c.accuracy(),
    })
}

impl Report {
    /// `{"tasks": {...}, "by_source": {...}, "latency_us": {"p50","p99"}}`; a source name used
    /// by both tasks is keyed `task/source`.
    pub fn to_json(&self) -> Value {
        let tasks: serde_json::Map<String, Value> = self
            .tasks
            .iter()
            .map(|(t, c)| (t.name().to_string(), counts_json(c)))
            .collect();
        let mut by_source = serde_json::Map::new();
        for ((t, s), c) in &self.by_source {
            let shared = self.by_source.keys().any(|(t2, s2)| s2 == s && t2 != t);
            let key = if shared {
                format!("{}/{s}", t.name())
            } else {
                s.clone()
            };
            let mut v = counts_json(c);
            v["task"] = json!(t.name());
            by_source.insert(key, v);
        }
        json!({
            "tasks": tasks,
            "by_source": by_source,
            "latency_us": {"p50": self.latency_us.0, "p99": self.latency_us.1},
            "paraphrase": self.paraphrase,
        })
    }

    /// A Markdown table per task and source.
    pub fn to_table(&self) -> String {
        let pct = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{:.1}%", v * 100.0));
        let row = |name: &str, c: &Counts| {
            format!(
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.tp,
                c.fp,
                c.tn,
                c.fn_,
                pct(c.precision()),
                pct(c.recall()),
                pct(c.f1()),
                pct(c.accuracy())
            )
        };
        let mut out = String::from(
            "| task / source | tp | fp | tn | fn | precision | recall | f1 | accuracy |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for (t, c) in &self.tasks {
            out.push_str(&row(&format!("**{}**", t.name()), c));
            for ((t2, s), c) in &self.by_source {
                if t2 == t {
                    out.push_str(&row(&format!("{} / {s}", t.name()), c));
                }
            }
        }
        out.push_str(&format!(
            "\nlatency per example: p50 {:.1} µs, p99 {:.1} µs; paraphrase check {}\n",
            self.latency_us.0,
            self.latency_us.1,
            if self.paraphrase { "on" } else { "off" }
        ));
        out
    }

    /// The misjudged examples, one JSON line each: task, line, source, label, predicted, text.
    pub fn errors_jsonl(&self, examples: &[Example]) -> String {
        let mut out = String::new();
        for (ex, &p) in examples.iter().zip(&self.predicted) {
            if p != ex.label {
                out.push_str(
                    &json!({
                        "task": ex.task.name(), "line": ex.line, "source": ex.source,
                        "label": u8::from(ex.label), "predicted": u8::from(p), "text": ex.text,
                    })
                    .to_string(),
                );
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lines_are_named_and_good_ones_scored() {
        let bad = "{\"task\":\"nope\",\"text\":\"x\",\"label\":1}\n{\"task\":\"leak\",\"text\":\"x\",\"label\":1}\nnot json\n";
        let errs = parse_jsonl(bad).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[1].starts_with("line 2:") && errs[1].contains("secret"));
        let good = "{\"task\":\"refusal\",\"text\":\"I can't help with that.\",\"label\":1,\"source\":\"a\"}\n\
                    {\"task\":\"refusal\",\"text\":\"Sure, here it is.\",\"label\":0,\"source\":\"a\"}\n\
                    {\"task\":\"leak\",\"text\":\"the code is T R A M 3 2\",\"secret\":\"TRAM-32\",\"label\":1}\n";
        let ex = parse_jsonl(good).unwrap();
        let r = evaluate(&ex, None).unwrap();
        assert_eq!(
            r.tasks[&Task::Refusal],
            Counts {
                tp: 1,
                fp: 0,
                tn: 1,
                fn_: 0
            }
        );
        assert_eq!(r.tasks[&Task::Leak].tp, 1);
        let v = r.to_json();
        assert_eq!(v["tasks"]["refusal"]["accuracy"], 1.0);
        assert!(v["by_source"]["a"].is_object());
        assert!(v["latency_us"]["p50"].is_number());
    }
}
