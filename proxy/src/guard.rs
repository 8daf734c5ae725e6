//! The input guard in the proxy: which packs are loaded (active and shadow), reloading them, and
//! applying a tenant's policy to a validated request.
//!
//! Per request ([`inspect_request`]): the tenant's tool policy is checked, every text of the
//! request is collected with its role (message content and text parts, tool-call arguments,
//! `prompt`, `input`), the active engine scores them, masks are written back into the body, and a
//! pinned system prompt is put in place (it is the operator's text and is not scanned). A block
//! becomes `400 prompt_blocked` with rule ids only. Engines are `Arc`s: a reload swaps the pointer
//! and requests in flight keep the engine they started with.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use warden_guards::policy::{Decision, Message, Verdict};
use warden_guards::tools::ToolErrorKind;
use warden_guards::{Engine, RuleSet, Target};

use crate::config::{GuardConfig, SystemPromptMode, TenantGuard};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::validate::{Endpoint, Validated};

/// Load, compile and self-test a pack directory (or the embedded packs). Errors are printable
/// lines: parse errors with file and line, compile errors, failing test cases.
pub fn build_engine(dir: Option<&Path>) -> Result<Engine, Vec<String>> {
    let set = match dir {
        Some(d) => RuleSet::load_dir(d),
        None => RuleSet::embedded(),
    }
    .map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let engine = Engine::compile(set)
        .map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let failures = engine.self_test();
    if !failures.is_empty() {
        return Err(failures.iter().map(ToString::to_string).collect());
    }
    Ok(engine)
}

/// The loaded packs.
pub struct Guards {
    pub config: GuardConfig,
    active: RwLock<Arc<Engine>>,
    shadow: RwLock<Option<Arc<Engine>>>,
}

/// What a successful reload did.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub previous: String,
    pub version: String,
    pub rules: usize,
    pub compile: Duration,
    pub shadow: Option<String>,
}

/// The active engine and, when configured, the shadow one: both must build for either to be used.
fn build_both(config: &GuardConfig) -> Result<(Engine, Option<Arc<Engine>>), Vec<String>> {
    let active = build_engine(config.rules_dir.as_deref())?;
    let shadow = match &config.shadow_rules_dir {
        Some(d) => Some(Arc::new(build_engine(Some(d)).map_err(|e| {
            e.into_iter()
                .map(|l| format!("shadow pack: {l}"))
                .collect::<Vec<_>>()
        })?)),
        None => None,
    };
    Ok((active, shadow))
}

impl Guards {
    pub fn load(config: &GuardConfig) -> Result<Guards, Vec<String>> {
        let (active, shadow) = build_both(config)?;
        Ok(Guards {
            config: config.clone(),
            active: RwLock::new(Arc::new(active)),
            shadow: RwLock::new(shadow),
        })
    }

    pub fn active(&self) -> Arc<Engine> {
        match self.active.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn shadow(&self) -> Option<Arc<Engine>> {
        match self.shadow.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-read the packs from disk, compile them and run their tests; swap only if all of that
    /// succeeds (the shadow pack too, when configured). On error the old packs stay.
    pub fn reload(&self, metrics: &Metrics) -> Result<Reloaded, Vec<String>> {
        let (engine, shadow) = match build_both(&self.config) {
            Ok(x) => x,
            Err(e) => {
                metrics.rule_reloads.with_label_values(&["failed"]).inc();
                return Err(e);
            }
        };
        let reloaded = Reloaded {
            previous: self.active().version().to_string(),
            version: engine.version().to_string(),
            rules: engine.rules().len(),
            compile: engine.compile_time,
            shadow: shadow.as_ref().map(|s| s.version().to_string()),
        };
        let engine = Arc::new(engine);
        match self.active.write() {
            Ok(mut g) => *g = engine,
            Err(poisoned) => *poisoned.into_inner() = engine,
        }
        match self.shadow.write() {
            Ok(mut g) => *g = shadow,
            Err(poisoned) => *poisoned.into_inner() = shadow,
        }
        metrics.rule_reloads.with_label_values(&["ok"]).inc();
        self.publish(metrics);
        Ok(reloaded)
    }

    /// Set `warden_rule_pack_info` to the loaded versions.
    pub fn publish(&self, metrics: &Metrics) {
        metrics.rule_pack_info.reset();
        let a = self.active();
        metrics
            .rule_pack_info
            .with_label_values(&["active", a.version(), &a.set().source])
            .set(1);
        if let Some(s) = self.shadow() {
            metrics
                .rule_pack_info
                .with_label_values(&["shadow", s.version(), &s.set().source])
                .set(1);
        }
    }
}

/// What the guard decided, kept in the request context for logs and telemetry.
#[derive(Debug, Clone)]
pub struct GuardOutcome {
    pub decision: Decision,
    pub score: u32,
    pub rule_ids: Vec<String>,
    pub pack_version: std::sync::Arc<str>,
    pub truncated: bool,
    pub elapsed: Duration,
}

/// Where a scanned text lives in the body, so a mask can be written back.
#[derive(Debug, Clone, Copy)]
enum Loc {
    Content(usize),
    Part(usize, usize),
    ToolArgs(usize, usize),
    Field(&'static str),
    FieldItem(&'static str, usize),
}

fn role_target(role: &str) -> Target {
    match role {
        "system" | "developer" => Target::System,
        "assistant" => Target::Assistant,
        "tool" | "function" => Target::Tool,
        _ => Target::User,
    }
}

/// Every text of the request with the role it is read as, in body order (also what telemetry
/// hashes).
pub fn texts(endpoint: Endpoint, doc: &Map<String, Value>) -> Vec<(Target, &str)> {
    collect(endpoint, doc)
        .into_iter()
        .map(|(t, _, s)| (t, s))
        .collect()
}

/// Every text of the request, with its role and location.
fn collect(endpoint: Endpoint, doc: &Map<String, Value>) -> Vec<(Target, Loc, &str)> {
    let mut out = Vec::new();
    match endpoint {
        Endpoint::ChatCompletions => {
            let Some(messages) = doc.get("messages").and_then(Value::as_array) else {
                return out;
            };
            for (i, m) in messages.iter().enumerate() {
                let target = role_target(m.get("role").and_then(Value::as_str).unwrap_or("user"));
                match m.get("content") {
                    Some(Value::String(s)) => out.push((target, Loc::Content(i), s.as_str())),
                    Some(Value::Array(parts)) => {
                        for (j, p) in parts.iter().enumerate() {
                            if let Some(t) = p.get("text").and_then(Value::as_str) {
                                out.push((target, Loc::Part(i, j), t));
                            }
                        }
                    }
                    _ => {}
                }
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    for (j, c) in calls.iter().enumerate() {
                        if let Some(a) = c.pointer("/function/arguments").and_then(Value::as_str) {
                            out.push((Target::ToolArgs, Loc::ToolArgs(i, j), a));
                        }
                    }
                }
            }
        }
        Endpoint::Completions | Endpoint::Embeddings => {
            let field = if endpoint == Endpoint::Completions {
                "prompt"
            } else {
                "input"
            };
            match doc.get(field) {
                Some(Value::String(s)) => out.push((Target::User, Loc::Field(field), s.as_str())),
                Some(Value::Array(items)) => {
                    for (i, v) in items.iter().enumerate() {
                        if let Some(s) = v.as_str() {
                            out.push((Target::User, Loc::FieldItem(field, i), s));
                        }
                    }
                }
                _ => {}
            }
        }
        Endpoint::Models => {}
    }
    out
}

fn write_back(doc: &mut Map<String, Value>, loc: Loc, text: String) {
    let slot = match loc {
        Loc::Content(i) => doc
            .get_mut("messages")
            .and_then(|m| m.get_mut(i))
            .and_then(|m| m.get_mut("content")),
        Loc::Part(i, j) => doc
            .get_mut("messages")
            .and_then(|m| m.get_mut(i))
            .and_then(|m| m.get_mut("content"))
            .and_then(|c| c.get_mut(j))
            .and_then(|p| p.get_mut("text")),
        Loc::ToolArgs(i, j) => doc
            .get_mut("messages")
            .and_then(|m| m.get_mut(i))
            .and_then(|m| m.get_mut("tool_calls"))
            .and_then(|c| c.get_mut(j))
            .and_then(|c| c.get_mut("function"))
            .and_then(|f| f.get_mut("arguments")),
        Loc::Field(f) => doc.get_mut(f),
        Loc::FieldItem(f, i) => doc.get_mut(f).and_then(|v| v.get_mut(i)),
    };
    if let Some(slot) = slot {
        *slot = Value::String(text);
    }
}

fn pin_system_prompt(doc: &mut Map<String, Value>, prompt: &str, mode: SystemPromptMode) {
    let Some(Value::Array(messages)) = doc.get_mut("messages") else {
        return;
    };
    if mode == SystemPromptMode::Replace {
        messages.retain(|m| {
            !matches!(
                m.get("role").and_then(Value::as_str),
                Some("system" | "developer")
            )
        });
    }
    messages.insert(0, serde_json::json!({"role": "system", "content": prompt}));
}

/// Everything the request path needs to run the guard.
pub struct GuardRun<'a> {
    pub endpoint: Endpoint,
    pub tenant: &'a str,
    pub policy: &'a TenantGuard,
    pub engine: &'a Engine,
    pub shadow: Option<&'a Engine>,
    pub metrics: &'a Metrics,
    pub request_id: &'a str,
}

/// Apply the tenant's guard policy to a validated request: `Err` to refuse it (blocked, with the
/// outcome for the logs; or tools not allowed), `Ok` with the outcome once masks and the pinned
/// system prompt are in the body.
pub fn inspect_request(
    run: &GuardRun<'_>,
    v: &mut Validated,
) -> Result<GuardOutcome, Box<(ApiError, Option<GuardOutcome>)>> {
    let started = Instant::now();
    let label = run.endpoint.label();
    if run.endpoint == Endpoint::ChatCompletions {
        if let Err(e) = run.policy.tools.check(v.doc()) {
            run.metrics
                .guard_decisions
                .with_label_values(&[run.tenant, "tools", run.engine.version()])
                .inc();
            let api = match e.kind {
                ToolErrorKind::NotAllowed => ApiError::ToolNotAllowed {
                    param: e.param,
                    message: e.message,
                },
                ToolErrorKind::Invalid => ApiError::InvalidTools {
                    param: e.param,
                    message: e.message,
                },
            };
            return Err(Box::new((api, None)));
        }
    }
    let texts = collect(run.endpoint, v.doc());
    let messages: Vec<Message<'_>> = texts
        .iter()
        .map(|(target, _, text)| Message {
            target: *target,
            text,
        })
        .collect();
    let route = run.policy.routes.get(label);
    let verdict = run.policy.policy.inspect(run.engine, &messages, route);
    if let Some(shadow) = run.shadow {
        let candidate = run.policy.policy.inspect(shadow, &messages, route);
        compare_shadow(run, &verdict, &candidate);
    }
    let masked: Vec<(Loc, String)> = verdict
        .masked
        .iter()
        .map(|(i, text)| (texts[*i].1, text.clone()))
        .collect();
    drop(messages);
    drop(texts);
    let outcome = GuardOutcome {
        decision: verdict.decision,
        score: verdict.score,
        rule_ids: verdict.rule_ids().into_iter().map(str::to_string).collect(),
        pack_version: run.engine.version_shared(),
        truncated: verdict.truncated,
        elapsed: Duration::ZERO,
    };
    for m in &verdict.matches {
        run.metrics
            .guard_rule_hits
            .with_label_values(&[m.id.as_str(), m.action.name()])
            .inc();
    }
    if verdict.truncated {
        run.metrics
            .guard_truncated
            .with_label_values(&[run.tenant])
            .inc();
    }
    run.metrics
        .guard_decisions
        .with_label_values(&[run.tenant, verdict.decision.name(), run.engine.version()])
        .inc();
    if verdict.decision == Decision::Block {
        let elapsed = started.elapsed();
        run.metrics
            .guard_seconds
            .with_label_values(&[label])
            .observe(elapsed.as_secs_f64());
        let api = ApiError::PromptBlocked {
            rule_ids: outcome.rule_ids.clone(),
        };
        return Err(Box::new((api, Some(GuardOutcome { elapsed, ..outcome }))));
    }
    if !masked.is_empty() || run.policy.system_prompt.is_some() {
        let doc = v.doc_mut();
        for (loc, text) in masked {
            write_back(doc, loc, text);
        }
        if let (Some(prompt), Endpoint::ChatCompletions) = (&run.policy.system_prompt, run.endpoint)
        {
            pin_system_prompt(doc, prompt, run.policy.system_prompt_mode);
        }
    }
    let elapsed = started.elapsed();
    run.metrics
        .guard_seconds
        .with_label_values(&[label])
        .observe(elapsed.as_secs_f64());
    Ok(GuardOutcome { elapsed, ..outcome })
}

fn compare_shadow(run: &GuardRun<'_>, active: &Verdict, shadow: &Verdict) {
    let (a_ids, s_ids) = (active.rule_ids(), shadow.rule_ids());
    if active.decision == shadow.decision && a_ids == s_ids {
        return;
    }
    run.metrics
        .guard_shadow_disagreements
        .with_label_values(&[run.tenant, active.decision.name(), shadow.decision.name()])
        .inc();
    tracing::info!(
        request_id = run.request_id,
        tenant = run.tenant,
        active = active.decision.name(),
        active_rules = %a_ids.join(","),
        shadow = shadow.decision.name(),
        shadow_rules = %s_ids.join(","),
        "shadow pack would decide differently"
    );
}
