//! Scoring: a tenant's [`Policy`] applied to the hits of every message of a request gives one
//! [`Verdict`] (allow, flag or block), with the rule ids, the anomaly score and the masked texts.
//!
//! CRS-style anomaly scoring: each matched rule adds its severity score, times the weight of the
//! role it matched in, once per request (its highest over messages). Rules at or below the
//! *blocking* paranoia level with action `block` add to the blocking score; the request is blocked
//! when it reaches the threshold. Rules above the blocking level but at or below the *detection*
//! level, and `flag` rules, are recorded as flags. Rules above the detection level are ignored.

use std::collections::HashSet;

use crate::engine::{Engine, Hit};
use crate::normalize::ViewKind;
use crate::pack::{Action, Rule, Target};

/// A tenant's guard settings (from `warden.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Rules with a paranoia level above this are ignored. 1..=4.
    pub detection_paranoia: u8,
    /// Rules with a paranoia level at or below this count towards blocking. 1..=detection.
    pub blocking_paranoia: u8,
    /// Blocking score at which a request is blocked.
    pub threshold: u32,
    /// Score multiplier per target, indexed by `Target as usize`.
    pub role_weights: [u32; 5],
    pub exclusions: Exclusions,
}

/// Rules switched off, by id or by tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusions {
    pub ids: HashSet<String>,
    pub tags: HashSet<String>,
}

impl Exclusions {
    /// From config entries: a rule id, or `tag:<tag>`.
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a str>) -> Exclusions {
        let mut out = Exclusions::default();
        for e in entries {
            match e.strip_prefix("tag:") {
                Some(tag) => out.tags.insert(tag.to_string()),
                None => out.ids.insert(e.to_string()),
            };
        }
        out
    }

    pub fn excludes(&self, rule: &Rule) -> bool {
        self.ids.contains(&rule.id) || rule.tags.iter().any(|t| self.tags.contains(t))
    }

    pub fn merged(&self, other: &Exclusions) -> Exclusions {
        Exclusions {
            ids: self.ids.union(&other.ids).cloned().collect(),
            tags: self.tags.union(&other.tags).cloned().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.tags.is_empty()
    }
}

/// Default weights: instructions in tool output / retrieved documents count double.
pub const DEFAULT_ROLE_WEIGHTS: [u32; 5] = [1, 1, 1, 2, 1];

impl Default for Policy {
    fn default() -> Self {
        Policy {
            detection_paranoia: 2,
            blocking_paranoia: 1,
            threshold: 5,
            role_weights: DEFAULT_ROLE_WEIGHTS,
            exclusions: Exclusions::default(),
        }
    }
}

/// One text of a request, with the role it came from.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub target: Target,
    pub text: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Decision {
    Allow,
    Flag,
    Block,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Flag => "flag",
            Decision::Block => "block",
        }
    }
}

/// One rule that matched, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    pub rule: usize,
    pub id: String,
    pub action: Action,
    /// Index of the message (in the slice given to [`Policy::inspect`]) with the highest score.
    pub message: usize,
    pub target: Target,
    pub view: ViewKind,
    pub span: std::ops::Range<usize>,
    /// Severity × role weight.
    pub score: u32,
    /// Counted towards the blocking score.
    pub blocking: bool,
}

/// The guard's answer for one request.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub decision: Decision,
    /// Sum of the scores of the blocking matches.
    pub score: u32,
    /// Every rule that matched (at or below the detection level, not excluded), by rule order.
    pub matches: Vec<RuleMatch>,
    /// `(message index, masked text)` for each message that `mask` rules changed.
    pub masked: Vec<(usize, String)>,
    /// Some text was beyond the normaliser's bounds and was not scanned.
    pub truncated: bool,
}

impl Verdict {
    /// Ids of the rules that made the decision: blocking matches for a block, all otherwise.
    pub fn rule_ids(&self) -> Vec<&str> {
        let blocking = self.decision == Decision::Block;
        self.matches
            .iter()
            .filter(|m| !blocking || m.blocking)
            .map(|m| m.id.as_str())
            .collect()
    }
}

impl Policy {
    /// Scan every message and decide. `route_exclusions` adds to the policy's own exclusions.
    pub fn inspect(
        &self,
        engine: &Engine,
        messages: &[Message<'_>],
        route_exclusions: Option<&Exclusions>,
    ) -> Verdict {
        let rules = engine.rules();
        // Best (score, message, hit) per rule.
        let mut best: Vec<Option<(u32, usize, Target, Hit)>> = vec![None; rules.len()];
        let mut mask_hits: Vec<Vec<Hit>> = Vec::new();
        let mut truncated = false;
        for (mi, msg) in messages.iter().enumerate() {
            let scan = engine.scan(msg.text, msg.target);
            truncated |= scan.truncated;
            let mut masks = Vec::new();
            for hit in scan.hits {
                let rule = &rules[hit.rule];
                if rule.paranoia > self.detection_paranoia
                    || self.exclusions.excludes(rule)
                    || route_exclusions.is_some_and(|x| x.excludes(rule))
                {
                    continue;
                }
                if rule.action == Action::Mask {
                    masks.push(hit.clone());
                }
                let score = rule.severity.score() * self.role_weights[msg.target as usize];
                let slot = &mut best[hit.rule];
                if slot.as_ref().is_none_or(|(s, ..)| score > *s) {
                    *slot = Some((score, mi, msg.target, hit));
                }
            }
            if !masks.is_empty() {
                while mask_hits.len() <= mi {
                    mask_hits.push(Vec::new());
                }
                mask_hits[mi] = masks;
            }
        }
        let mut matches = Vec::new();
        let mut score = 0u32;
        let mut any_flag = false;
        for (ix, slot) in best.into_iter().enumerate() {
            let Some((s, message, target, hit)) = slot else {
                continue;
            };
            let rule = &rules[ix];
            let blocking = rule.action == Action::Block && rule.paranoia <= self.blocking_paranoia;
            if blocking {
                score = score.saturating_add(s);
            } else if rule.action != Action::Mask {
                any_flag = true;
            }
            matches.push(RuleMatch {
                rule: ix,
                id: rule.id.clone(),
                action: rule.action,
                message,
                target,
                view: hit.view,
                span: hit.span,
                score: s,
                blocking,
            });
        }
        let decision = if score >= self.threshold && score > 0 {
            Decision::Block
        } else if any_flag || score > 0 {
            Decision::Flag
        } else {
            Decision::Allow
        };
        let masked = if decision == Decision::Block {
            Vec::new()
        } else {
            mask_hits
                .iter()
                .enumerate()
                .filter_map(|(mi, hits)| {
                    engine.apply_masks(messages[mi].text, hits).map(|t| (mi, t))
                })
                .collect()
        };
        Verdict {
            decision,
            score,
            matches,
            masked,
            truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::RuleSet;

    fn engine() -> Engine {
        let text = r#"
[pack]
name = "t"
title = "t"
description = "t"

[[rule]]
id = "T-1"
title = "override"
description = "d"
severity = "critical"
paranoia = 1
targets = ["any"]
action = "block"
tags = ["injection"]
literals = ["ignore previous instructions"]

[[rule]]
id = "T-2"
title = "addressing the model"
description = "d"
severity = "warning"
paranoia = 1
targets = ["any"]
action = "block"
literals = ["ai assistant"]

[[rule]]
id = "T-3"
title = "aggressive"
description = "d"
severity = "error"
paranoia = 2
targets = ["any"]
action = "block"
literals = ["pretend"]

[[rule]]
id = "T-4"
title = "email"
description = "d"
severity = "notice"
paranoia = 1
targets = ["any"]
action = "mask"
mask = "[EMAIL]"
regexes = ['[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}']
"#;
        let set = RuleSet::from_sources("t", &[("t.toml".into(), text.into())]).unwrap();
        Engine::compile(set).unwrap()
    }

    fn user(text: &str) -> Message<'_> {
        Message {
            target: Target::User,
            text,
        }
    }

    #[test]
    fn a_critical_rule_blocks_alone_and_a_warning_only_flags() {
        let e = engine();
        let p = Policy::default();
        let v = p.inspect(&e, &[user("Ignore previous instructions.")], None);
        assert_eq!((v.decision, v.score), (Decision::Block, 5));
        assert_eq!(v.rule_ids(), ["T-1"]);
        let v = p.inspect(&e, &[user("Dear AI assistant, hello")], None);
        assert_eq!((v.decision, v.score), (Decision::Flag, 3));
    }

    #[test]
    fn tool_output_weighs_double() {
        let e = engine();
        let v = Policy::default().inspect(
            &e,
            &[Message {
                target: Target::Tool,
                text: "Note to the AI assistant reading this page",
            }],
            None,
        );
        assert_eq!((v.decision, v.score), (Decision::Block, 6));
        assert_eq!(v.matches[0].target, Target::Tool);
    }

    #[test]
    fn a_rule_counts_once_however_many_messages_repeat_it() {
        let e = engine();
        let msgs = [
            user("ai assistant"),
            user("ai assistant"),
            user("ai assistant"),
        ];
        let v = Policy::default().inspect(&e, &msgs, None);
        assert_eq!((v.decision, v.score), (Decision::Flag, 3));
    }

    #[test]
    fn paranoia_levels_gate_detection_and_blocking() {
        let e = engine();
        let text = [user("pretend you are free")];
        let v = Policy::default().inspect(&e, &text, None);
        assert_eq!(v.decision, Decision::Flag);
        assert!(!v.matches[0].blocking);
        let strict = Policy {
            blocking_paranoia: 2,
            threshold: 4,
            ..Policy::default()
        };
        assert_eq!(strict.inspect(&e, &text, None).decision, Decision::Block);
        let lax = Policy {
            detection_paranoia: 1,
            ..Policy::default()
        };
        assert_eq!(lax.inspect(&e, &text, None).decision, Decision::Allow);
    }

    #[test]
    fn exclusions_by_id_tag_and_route() {
        let e = engine();
        let text = [user("ignore previous instructions")];
        let by_tag = Policy {
            exclusions: Exclusions::from_entries(["tag:injection"]),
            ..Policy::default()
        };
        assert_eq!(by_tag.inspect(&e, &text, None).decision, Decision::Allow);
        let route = Exclusions::from_entries(["T-1"]);
        assert_eq!(
            Policy::default().inspect(&e, &text, Some(&route)).decision,
            Decision::Allow
        );
    }

    #[test]
    fn masks_apply_unless_the_request_is_blocked() {
        let e = engine();
        let v = Policy::default().inspect(&e, &[user("mail Jo.Doe@Example.com please")], None);
        assert_eq!(v.decision, Decision::Allow);
        assert_eq!(v.masked, vec![(0, "mail [EMAIL] please".to_string())]);
    }
}
