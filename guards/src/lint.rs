//! `warden rules lint`: problems a rule can have even when its own tests pass.
//!
//! Errors: missing tests, patterns that can never match (or can never match a lowercase view),
//! patterns that match the empty string, patterns so short they match everywhere. Warnings:
//! literals repeated across rules, and `block` rules that match a sample of ordinary benign text
//! (a cheap over-breadth check that does not depend on any dataset).

use std::collections::HashMap;
use std::fmt;

use regex_syntax::hir::{Hir, HirKind};

use crate::engine::Engine;
use crate::normalize::fold;
use crate::pack::{Action, RuleSet};

/// Shortest pattern (bytes) that is not considered catastrophically broad.
pub const MIN_PATTERN_LEN: usize = 4;

/// Ordinary text with the words attacks use, in benign senses. A paranoia-1 `block` rule that
/// matches one of these will block real users.
pub const BENIGN_SAMPLE: &[&str] = &[
    "Please ignore the previous error message, the build passes now.",
    "Can you summarize the instructions in this manual for assembling the shelf?",
    "What is a system prompt and why do chatbots use one?",
    "My developer mode toggle on Android disappeared after the update.",
    "Pretend you are a tour guide in Rome and describe the Colosseum.",
    "Forget about the deadline for now; what are the main risks in this plan?",
    "The new rules of the game override the old ones from last season.",
    "Write a story about a hacker who learns to respect privacy.",
    "How do I reset my password if I lost access to my email?",
    "Translate 'ignore the noise' into French.",
    "Act as a Linux terminal teacher and explain what ls -la shows.",
    "Repeat after me: practice makes perfect.",
    "What were the instructions given to the jury before deliberation?",
    "Our assistant manager said to disregard the old schedule.",
    "You are now connected to the support line; how can I help?",
    "Explain the difference between a role and a permission in IAM.",
    "Print the first 10 lines of the file using head.",
    "Reveal the answer to the riddle only after I guess twice.",
    "The DAN river flows through several countries in Africa.",
    "Please respond only in JSON with keys name and age.",
    "Bypass surgery recovery takes about six weeks.",
    "Which jailbreak tweaks are still supported on older iPhones?",
    "Output the results as a markdown table.",
    "New instructions from the teacher: read chapter five by Monday.",
    "The admin panel shows every user's last login time.",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Warning,
    Error,
}

/// One lint finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub rule: String,
    /// `file:line: rule[i]` (plus the key, where there is one).
    pub origin: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(
            f,
            "{level}: {} ({}): {}",
            self.rule, self.origin, self.message
        )
    }
}

/// Lint a parsed rule set; `engine` is the same set compiled, when it compiles (for the
/// benign-sample check; the other checks need only the parsed rules).
pub fn lint(set: &RuleSet, engine: Option<&Engine>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut literal_owner: HashMap<String, &str> = HashMap::new();
    for rule in &set.rules {
        let origin = rule.origin.to_string();
        let mut push = |level, key: String, message: String| {
            out.push(Finding {
                level,
                rule: rule.id.clone(),
                origin: if key.is_empty() {
                    origin.clone()
                } else {
                    format!("{origin}.{key}")
                },
                message,
            });
        };
        if rule.must_match.is_empty() {
            push(
                Level::Error,
                String::new(),
                "missing tests: no must_match cases".into(),
            );
        }
        if rule.must_not_match.is_empty() {
            push(
                Level::Error,
                String::new(),
                "missing tests: no must_not_match cases".into(),
            );
        }
        for (j, lit) in rule.literals.iter().enumerate() {
            let folded = fold(lit);
            let folded = folded.trim();
            if folded.len() < MIN_PATTERN_LEN {
                push(
                    Level::Error,
                    format!("literals[{j}]"),
                    format!(
                        "{lit:?} is {} bytes after folding: catastrophically broad",
                        folded.len()
                    ),
                );
            }
            if let Some(other) = literal_owner.insert(folded.to_string(), &rule.id) {
                push(
                    Level::Warning,
                    format!("literals[{j}]"),
                    format!("{lit:?} is also a literal of {other}"),
                );
            }
        }
        for (j, re) in rule.regexes.iter().enumerate() {
            let key = format!("regexes[{j}]");
            let hir = match regex_syntax::Parser::new().parse(re) {
                Ok(h) => h,
                Err(e) => {
                    push(Level::Error, key, format!("invalid regex: {e}"));
                    continue;
                }
            };
            match hir.properties().minimum_len() {
                None => push(Level::Error, key.clone(), "can never match anything".into()),
                Some(0) => push(Level::Error, key.clone(), "matches the empty string".into()),
                Some(n) if n < MIN_PATTERN_LEN => push(
                    Level::Error,
                    key.clone(),
                    format!("can match {n} bytes: catastrophically broad"),
                ),
                Some(_) => {}
            }
            if let Some(upper) = uppercase_literal(&hir) {
                push(
                    Level::Error,
                    key,
                    format!(
                        "contains the uppercase literal {upper:?}: views are lowercase, so this can never match (write it in lowercase)"
                    ),
                );
            }
        }
    }
    let rules = engine.map_or(&[][..], |_| &set.rules[..]);
    for (ix, rule) in rules.iter().enumerate() {
        let Some(engine) = engine else {
            break;
        };
        if rule.action != Action::Block || rule.paranoia > 1 {
            continue;
        }
        let target = rule.test_target();
        for sample in BENIGN_SAMPLE {
            if engine
                .scan(sample, target)
                .hits
                .iter()
                .any(|h| h.rule == ix)
            {
                out.push(Finding {
                    level: Level::Warning,
                    rule: rule.id.clone(),
                    origin: rule.origin.to_string(),
                    message: format!("paranoia-1 block rule matches ordinary text: {sample:?}"),
                });
            }
        }
    }
    out.sort_by_key(|f| std::cmp::Reverse(f.level));
    out
}

/// The first case-sensitive literal in the pattern holding an ASCII uppercase letter.
fn uppercase_literal(hir: &Hir) -> Option<String> {
    match hir.kind() {
        HirKind::Literal(lit) => {
            let s = String::from_utf8_lossy(&lit.0);
            s.chars()
                .any(|c| c.is_ascii_uppercase())
                .then(|| s.into_owned())
        }
        HirKind::Repetition(r) => uppercase_literal(&r.sub),
        HirKind::Capture(c) => uppercase_literal(&c.sub),
        HirKind::Concat(subs) | HirKind::Alternation(subs) => {
            subs.iter().find_map(uppercase_literal)
        }
        HirKind::Empty | HirKind::Class(_) | HirKind::Look(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint_rule(body: &str) -> Vec<String> {
        let text = format!(
            "[pack]\nname = \"t\"\ntitle = \"t\"\ndescription = \"t\"\n[[rule]]\nid = \"T-1\"\ntitle = \"t\"\ndescription = \"t\"\nseverity = \"critical\"\nparanoia = 1\ntargets = [\"user\"]\naction = \"block\"\n{body}"
        );
        let set = RuleSet::from_sources("t", &[("t.toml".into(), text)]).unwrap();
        let engine = Engine::compile(set.clone()).ok();
        lint(&set, engine.as_ref())
            .iter()
            .map(|f| f.to_string())
            .collect()
    }

    #[test]
    fn the_shipped_packs_have_no_lint_errors() {
        let set = RuleSet::embedded().unwrap();
        let engine = Engine::compile(set.clone()).unwrap();
        let errors: Vec<String> = lint(&set, Some(&engine))
            .iter()
            .filter(|f| f.level == Level::Error)
            .map(|f| f.to_string())
            .collect();
        assert!(errors.is_empty(), "{}", errors.join("\n"));
    }

    const TESTS: &str = "must_match = [\"x\"]\nmust_not_match = [\"y\"]\n";

    #[test]
    fn a_clean_rule_has_no_findings() {
        assert!(lint_rule(&format!(
            "literals = [\"ignore previous instructions\"]\n{TESTS}"
        ))
        .is_empty());
    }

    #[test]
    fn each_problem_is_found() {
        let cases = [
            (
                "literals = [\"ignore previous instructions\"]\n",
                "missing tests: no must_match",
            ),
            (
                &format!("regexes = ['a*']\n{TESTS}"),
                "matches the empty string",
            ),
            (
                &format!("regexes = ['[a&&b]x']\n{TESTS}"),
                "can never match anything",
            ),
            (
                &format!("regexes = ['ab?']\n{TESTS}"),
                "catastrophically broad",
            ),
            (
                &format!("literals = [\"do\"]\n{TESTS}"),
                "catastrophically broad",
            ),
            (
                &format!("regexes = ['Ignore previous']\n{TESTS}"),
                "uppercase literal",
            ),
            (
                &format!("literals = [\"system prompt\"]\n{TESTS}"),
                "matches ordinary text",
            ),
        ];
        for (body, want) in cases {
            let found = lint_rule(body);
            assert!(found.iter().any(|f| f.contains(want)), "{body}: {found:?}");
        }
    }
}
