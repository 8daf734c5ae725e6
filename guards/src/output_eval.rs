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
    /// `grounding` only: the documents the reply should rest on, and the question.
    pub context: Vec<String>,
    pub question: String,
    pub label: bool,
    pub source: String,
    pub line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Task {
    Refusal,
    Leak,
    Grounding,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Refusal => "refusal",
            Task::Leak => "leak",
            Task::Grounding => "grounding",
        }
    }
}

/// Parse JSONL; every bad line is reported as `line N: problem`.
pub fn parse_jsonl(input: &str) -> Result<Vec<Example>, Vec<String>> {
    crate::eval::parse_lines(input, |n, v| {
        let task = match v.get("task").and_then(Value::as_str) {
            Some("refusal") => Task::Refusal,
            Some("leak") => Task::Leak,
            Some("grounding") => Task::Grounding,
            _ => return Err("\"task\" must be \"refusal\", \"leak\" or \"grounding\"".into()),
        };
        let text = v
            .get("text")
            .and_then(Value::as_str)
            .ok_or("\"text\" must be a string")?;
        let label = match v.get("label").and_then(Value::as_u64) {
            Some(0) => false,
            Some(1) => true,
            _ => return Err("\"label\" must be 0 or 1".into()),
        };
        let secret = match (task, v.get("secret").and_then(Value::as_str)) {
            (Task::Leak, Some(s)) if !s.trim().is_empty() => s.to_string(),
            (Task::Leak, _) => {
                return Err("a leak example needs \"secret\", a non-empty string".into())
            }
            _ => String::new(),
        };
        let context: Vec<String> = match (task, v.get("context")) {
            (Task::Grounding, Some(Value::String(s))) => vec![s.clone()],
            (Task::Grounding, Some(Value::Array(a)))
                if !a.is_empty() && a.iter().all(Value::is_string) =>
            {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            }
            (Task::Grounding, _) => {
                return Err(
                    "a grounding example needs \"context\", a string or an array of strings".into(),
                )
            }
            _ => Vec::new(),
        };
        let question = v
            .get("question")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let source = match v.get("source") {
            None | Some(Value::Null) => "unspecified".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err("\"source\" must be a string".into()),
        };
        Ok(Example {
            task,
            text: text.to_string(),
            secret,
            context,
            question,
            label,
            source,
            line: n,
        })
    })
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
    /// ROC AUC of the grounding score, when there were grounding examples.
    pub grounding_auc: Option<f64>,
}

/// Run every example through its detector. An encoder failure is an error naming the line.
pub fn evaluate(examples: &[Example], paraphraser: Option<&Paraphraser>) -> Result<Report, String> {
    let rules = RefusalRules::default();
    let normalizer = LeakDetector::normalizer();
    let mut tasks: BTreeMap<Task, Counts> = BTreeMap::new();
    let mut by_source: BTreeMap<(Task, String), Counts> = BTreeMap::new();
    let mut predicted = Vec::with_capacity(examples.len());
    let mut times = Vec::with_capacity(examples.len());
    // Grounding: (score, label) of every example, for the ROC AUC.
    let mut scored: Vec<(f32, bool)> = Vec::new();
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
            Task::Grounding => {
                let docs: Vec<&str> = ex.context.iter().map(String::as_str).collect();
                // Not judged (no content word): scored as supported.
                let score = crate::grounding::grounding(&docs, &ex.question, &ex.text)
                    .map_or(0.0, |g| g.score);
                scored.push((score, ex.label));
                score >= crate::grounding::DEFAULT_THRESHOLD
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
        grounding_auc: (!scored.is_empty()).then(|| roc_auc(&scored)),
    })
}

/// The probability that a random positive scores above a random negative (ties count half).
pub fn roc_auc(scored: &[(f32, bool)]) -> f64 {
    let mut v: Vec<(f32, bool)> = scored.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (pos, neg) = (
        v.iter().filter(|x| x.1).count() as f64,
        v.iter().filter(|x| !x.1).count() as f64,
    );
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    // Mann-Whitney U with average ranks over ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1].0 == v[i].0 {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg * v[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
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
        let mut tasks: serde_json::Map<String, Value> = self
            .tasks
            .iter()
            .map(|(t, c)| (t.name().to_string(), counts_json(c)))
            .collect();
        if let (Some(auc), Some(g)) = (self.grounding_auc, tasks.get_mut("grounding")) {
            g["roc_auc"] = json!(auc);
            g["threshold"] = json!(crate::grounding::DEFAULT_THRESHOLD);
        }
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
        if let Some(auc) = self.grounding_auc {
            out.push_str(&format!(
                "\ngrounding: ROC AUC {auc:.3} (flagged at score >= {})\n",
                crate::grounding::DEFAULT_THRESHOLD
            ));
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

    #[test]
    fn grounding_lines_are_scored_with_their_auc() {
        let lines = "{\"task\":\"grounding\",\"context\":\"Paris is the capital of France.\",\"question\":\"Capital of France?\",\"text\":\"Paris\",\"label\":0}\n\
                     {\"task\":\"grounding\",\"context\":[\"Paris is the capital of France.\"],\"question\":\"Capital of France?\",\"text\":\"Lyon, since 1850\",\"label\":1}\n";
        let ex = parse_jsonl(lines).unwrap();
        let r = evaluate(&ex, None).unwrap();
        assert_eq!(r.grounding_auc, Some(1.0));
        assert_eq!(r.tasks[&Task::Grounding].tp, 1);
        assert_eq!(r.to_json()["tasks"]["grounding"]["roc_auc"], 1.0);
        let bad = "{\"task\":\"grounding\",\"text\":\"x\",\"label\":1}\n";
        assert!(parse_jsonl(bad).unwrap_err()[0].contains("context"));
        assert!((roc_auc(&[(0.0, false), (0.0, true)]) - 0.5).abs() < 1e-9);
    }
}
