//! The `[guard]` section (which rule packs) and each tenant's `[tenants.guard]` policy.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;
use warden_guards::classifier::{ClassifierPolicy, OnError};
use warden_guards::policy::{
    Budget, Exclusions, OnOversize, Policy, DEFAULT_ROLE_WEIGHTS, DEFAULT_WORK_PER_BYTE,
};
use warden_guards::toml_reader::{Errors, Table};
use warden_guards::tools::{check_schema, ToolPolicy};
use warden_guards::Target;

use super::positive;

/// Which packs the input guard runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// Run the input guard at all. Off = requests are forwarded unscanned.
    pub enabled: bool,
    /// Directory of `*.toml` packs; `None` = the packs embedded in the binary.
    pub rules_dir: Option<PathBuf>,
    /// A candidate pack run beside the active one; it only records where it would decide otherwise.
    pub shadow_rules_dir: Option<PathBuf>,
    /// The threads that run inspections off the IO threads.
    pub pool: PoolConfig,
    /// `paraphrase`: the output guard's semantic leak check (a sentence encoder).
    pub paraphrase: Paraphrase,
    /// `encoder_dir`: `model.onnx` + `tokenizer.json` of the sentence encoder; `None` = found
    /// where `tests/scripts/setup.sh` puts it (`warden_inference::encoder::default_dir`).
    pub encoder_dir: Option<PathBuf>,
    /// `encoder_threads`: replies whose clauses are embedded at once.
    pub encoder_threads: usize,
    /// `classifier`: the input guard's prompt-injection classifier (same choices as
    /// `paraphrase`).
    pub classifier: Paraphrase,
    /// `classifier_dir`: `model.onnx`, `tokenizer.json` and `manifest.json`; `None` = the model
    /// the repository ships (`warden_inference::classifier::default_dir`).
    pub classifier_dir: Option<PathBuf>,
    /// `classifier_threads`: the classifier's model threads (one ONNX session each).
    pub classifier_threads: usize,
    /// `classifier_batch`: windows one model run takes at most, from every request waiting.
    /// Default 1: with the shipped int8 model, batching gains at most 4% on two cores and moves
    /// a text's score with the company it is batched in (README: The classifier layer).
    pub classifier_batch: usize,
    /// `classifier_max_windows`: windows scored per text at most (evenly spaced over a longer
    /// one, first and last included; the outcome says the text was not read whole).
    pub classifier_max_windows: usize,
}

/// `[guard] paraphrase` and `[guard] classifier`: whether a model-backed check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Paraphrase {
    /// On when the encoder and ONNX Runtime are found; otherwise off, with a warning at start and
    /// `warden_guard_encoder_loaded 0`.
    #[default]
    Auto,
    /// On; Warden does not start without the encoder.
    On,
    /// Off.
    Off,
}

/// `[guard]` `workers`, `queue`, `inline_bytes`: see [`crate::guard_pool`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Inspections that run at once.
    pub workers: usize,
    /// Inspections that may wait for a worker; past that a request gets 503 `guard_overloaded`.
    pub queue: usize,
    /// Requests whose texts hold at most this many bytes together are inspected on the request's
    /// own thread: for them a hop to the pool costs more than the scan.
    pub inline_bytes: usize,
    /// Nice value of the workers (Linux): above 0, the IO threads get the CPU first.
    pub nice: i32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: 2,
            queue: 256,
            inline_bytes: 16 * 1024,
            nice: 10,
        }
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            enabled: true,
            rules_dir: None,
            shadow_rules_dir: None,
            pool: PoolConfig::default(),
            paraphrase: Paraphrase::default(),
            encoder_dir: None,
            encoder_threads: 1,
            classifier: Paraphrase::default(),
            classifier_dir: None,
            classifier_threads: 2,
            classifier_batch: 1,
            classifier_max_windows: 8,
        }
    }
}

/// Where a pinned system prompt goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemPromptMode {
    /// Client system (and developer) messages are removed; the pinned prompt is the only one.
    Replace,
    /// The pinned prompt comes first; client system messages stay after it.
    Prepend,
}

/// A tenant's guard policy.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantGuard {
    pub enabled: bool,
    pub policy: Policy,
    /// Extra exclusions per endpoint label (`chat_completions`, `completions`, `embeddings`).
    pub routes: HashMap<String, Exclusions>,
    pub system_prompt: Option<String>,
    pub system_prompt_mode: SystemPromptMode,
    pub tools: ToolPolicy,
    /// `output`: what the output guard does with this tenant's replies.
    pub output: OutputMode,
    /// `canary`: plant a per-request canary in the pinned system prompt (default true; only
    /// with `system_prompt`).
    pub canary: bool,
    /// `protected`: strings no reply may reveal, beside the system prompt.
    pub protected: Vec<String>,
    /// `on_leak`: what a leak does to the reply.
    pub on_leak: LeakAction,
    /// `leak_paraphrase`: check replies for the system prompt restated in other words (default
    /// true; needs `[guard] paraphrase` on).
    pub leak_paraphrase: bool,
    /// `classifier`, `on_error`, `classifier_deadline_ms`, `classifier_thresholds`: the
    /// classifier layer for this tenant (needs `[guard] classifier` on).
    pub classifier: ClassifierPolicy,
    /// `classifier_mode`: when the request goes upstream relative to the classifier.
    pub classifier_mode: ClassifierMode,
}

/// `classifier_mode`: whether the upstream waits for the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClassifierMode {
    /// The request is forwarded once the whole guard (rules and classifier) allowed it.
    #[default]
    Before,
    /// Forwarded once the rules allowed it, while the classifier runs; every response byte is
    /// held until its verdict, and a block cancels the upstream request (the connection is
    /// closed, so the worker frees the sequence) and answers `prompt_blocked`.
    Overlap,
}

impl ClassifierMode {
    pub const NAMES: &'static str = "\"before\" or \"overlap\"";

    pub fn parse(s: &str) -> Option<ClassifierMode> {
        match s {
            "before" => Some(ClassifierMode::Before),
            "overlap" => Some(ClassifierMode::Overlap),
            _ => None,
        }
    }
}

/// `on_leak`: what the output guard does when a reply reveals the system prompt, a protected
/// string or the canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeakAction {
    /// End the reply as an output block (`content_filter`, `output_blocked`).
    #[default]
    Block,
    /// Record it; the reply goes on.
    Flag,
}

/// What the output guard does for a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// Mask and block as the rules say.
    #[default]
    Enforce,
    /// Scan and record what would have happened; the client gets the reply unchanged.
    Monitor,
    /// No output guard.
    Off,
}

impl OutputMode {
    pub fn parse(s: &str) -> Option<OutputMode> {
        match s {
            "enforce" => Some(OutputMode::Enforce),
            "monitor" => Some(OutputMode::Monitor),
            "off" => Some(OutputMode::Off),
            _ => None,
        }
    }
}

impl Default for TenantGuard {
    fn default() -> Self {
        TenantGuard {
            enabled: true,
            policy: Policy::default(),
            routes: HashMap::new(),
            system_prompt: None,
            system_prompt_mode: SystemPromptMode::Replace,
            tools: ToolPolicy::default(),
            output: OutputMode::default(),
            canary: true,
            protected: Vec::new(),
            on_leak: LeakAction::default(),
            leak_paraphrase: true,
            classifier: ClassifierPolicy::default(),
            classifier_mode: ClassifierMode::default(),
        }
    }
}

const ROUTES: [&str; 3] = ["chat_completions", "completions", "embeddings"];

pub fn decode_guard(t: &mut Table<'_>, errs: &mut Errors<'_>) -> GuardConfig {
    let defaults = PoolConfig::default();
    let workers = positive(t, errs, "workers", 256).map_or(defaults.workers, |n| n as usize);
    GuardConfig {
        enabled: t.boolean(errs, "enabled").unwrap_or(true),
        rules_dir: t.string(errs, "rules_dir").map(PathBuf::from),
        shadow_rules_dir: t.string(errs, "shadow_rules_dir").map(PathBuf::from),
        pool: PoolConfig {
            workers,
            queue: t
                .uint(errs, "queue", 1 << 20)
                .map_or(defaults.queue, |n| n as usize),
            inline_bytes: t
                .uint(errs, "inline_bytes", 1 << 30)
                .map_or(defaults.inline_bytes, |n| n as usize),
            nice: t
                .uint(errs, "workers_nice", 19)
                .map_or(defaults.nice, |n| n as i32),
        },
        paraphrase: auto_on_off(t, errs, "paraphrase"),
        encoder_dir: t.string(errs, "encoder_dir").map(PathBuf::from),
        encoder_threads: positive(t, errs, "encoder_threads", 64).map_or(1, |n| n as usize),
        classifier: auto_on_off(t, errs, "classifier"),
        classifier_dir: t.string(errs, "classifier_dir").map(PathBuf::from),
        classifier_threads: positive(t, errs, "classifier_threads", 64).map_or(2, |n| n as usize),
        classifier_batch: positive(t, errs, "classifier_batch", 64).map_or(1, |n| n as usize),
        classifier_max_windows: positive(t, errs, "classifier_max_windows", 4096)
            .map_or(8, |n| n as usize),
    }
}

impl Paraphrase {
    /// `auto`, `on` or `off`.
    pub fn parse(s: &str) -> Option<Paraphrase> {
        match s {
            "auto" => Some(Paraphrase::Auto),
            "on" => Some(Paraphrase::On),
            "off" => Some(Paraphrase::Off),
            _ => None,
        }
    }
}

fn auto_on_off(t: &mut Table<'_>, errs: &mut Errors<'_>, key: &str) -> Paraphrase {
    match t.string(errs, key).as_deref() {
        None => Paraphrase::Auto,
        Some(s) => match Paraphrase::parse(s) {
            Some(p) => p,
            None => {
                errs.push(
                    &t.child_path(key),
                    t.value_span(key),
                    format!("{s:?}: expected \"auto\", \"on\" or \"off\""),
                );
                Paraphrase::Auto
            }
        },
    }
}

/// `classifier`, `on_error`, `classifier_deadline_ms` and `classifier_thresholds` of a tenant.
fn classifier_policy(t: &mut Table<'_>, errs: &mut Errors<'_>) -> ClassifierPolicy {
    let mut c = ClassifierPolicy::default();
    if let Some(b) = t.boolean(errs, "classifier") {
        c.enabled = b;
    }
    match t.string(errs, "on_error") {
        None => {}
        Some(s) => match OnError::parse(&s) {
            Some(o) => c.on_error = o,
            None => errs.push(
                &t.child_path("on_error"),
                t.value_span("on_error"),
                format!("{s:?}: expected {}", OnError::NAMES),
            ),
        },
    }
    if let Some(ms) = positive(t, errs, "classifier_deadline_ms", 600_000) {
        c.deadline = std::time::Duration::from_millis(ms);
    }
    if let Some(mut w) = t.table(errs, "classifier_thresholds") {
        for target in Target::ALL {
            let hint = "a probability between 0.01 and 0.999";
            if let Some(x) = w.number(errs, target.name(), 0.01..=0.999, hint) {
                c.thresholds[target as usize] = Some(x as f32);
            }
        }
        w.finish(errs);
    }
    c
}

/// `max_scan_bytes`, `max_scan_work`, `on_oversize`: the tenant's per-request guard budget.
fn budget(t: &mut Table<'_>, errs: &mut Errors<'_>) -> Budget {
    let mut b = Budget::default();
    if let Some(n) = positive(t, errs, "max_scan_bytes", 1 << 30) {
        b.max_bytes = n as usize;
        b.max_work = n.saturating_mul(DEFAULT_WORK_PER_BYTE);
    }
    if let Some(n) = positive(t, errs, "max_scan_work", u64::MAX >> 1) {
        b.max_work = n;
    }
    match t.string(errs, "on_oversize") {
        None => {}
        Some(s) => match OnOversize::parse(&s) {
            Some(o) => b.on_oversize = o,
            None => errs.push(
                &t.child_path("on_oversize"),
                t.value_span("on_oversize"),
                format!("{s:?}: expected one of {}", OnOversize::NAMES),
            ),
        },
    }
    b
}

fn exclusions(t: &mut Table<'_>, errs: &mut Errors<'_>) -> Exclusions {
    let list = t.string_list(errs, "exclude").unwrap_or_default();
    for (i, e) in list.iter().enumerate() {
        if e.is_empty() || e == "tag:" {
            errs.push(
                &format!("{}[{i}]", t.child_path("exclude")),
                t.value_span("exclude"),
                "expected a rule id (e.g. \"PII-6002\") or \"tag:<tag>\"",
            );
        }
    }
    Exclusions::from_entries(list.iter().map(String::as_str))
}

pub fn decode_tenant_guard(t: &mut Table<'_>, errs: &mut Errors<'_>) -> TenantGuard {
    let mut g = TenantGuard {
        enabled: t.boolean(errs, "enabled").unwrap_or(true),
        ..TenantGuard::default()
    };
    let level = |t: &mut Table<'_>, errs: &mut Errors<'_>, key: &'static str, default: u8| match t
        .uint(errs, key, 4)
    {
        Some(0) => {
            errs.push(
                &t.child_path(key),
                t.value_span(key),
                "paranoia levels are 1 to 4",
            );
            default
        }
        Some(n) => n as u8,
        None => default,
    };
    g.policy.detection_paranoia = level(t, errs, "detection_paranoia", 2);
    g.policy.blocking_paranoia = level(t, errs, "blocking_paranoia", 1);
    if g.policy.blocking_paranoia > g.policy.detection_paranoia {
        errs.push(
            &t.child_path("blocking_paranoia"),
            t.value_span("blocking_paranoia"),
            format!(
                "must not exceed detection_paranoia ({}): rules that are not detected cannot block",
                g.policy.detection_paranoia
            ),
        );
    }
    match t.uint(errs, "threshold", 1000) {
        Some(0) => errs.push(
            &t.child_path("threshold"),
            t.value_span("threshold"),
            "must be at least 1",
        ),
        Some(n) => g.policy.threshold = n as u32,
        None => {}
    }
    g.policy.exclusions = exclusions(t, errs);
    g.policy.budget = budget(t, errs);
    if let Some(mut w) = t.table(errs, "role_weights") {
        let mut weights = DEFAULT_ROLE_WEIGHTS;
        for target in Target::ALL {
            if let Some(n) = w.uint(errs, target.name(), 100) {
                weights[target as usize] = n as u32;
            }
        }
        w.finish(errs);
        g.policy.role_weights = weights;
    }
    if let Some(mut routes) = t.table(errs, "routes") {
        for route in ROUTES {
            if let Some(mut r) = routes.table(errs, route) {
                g.routes.insert(route.to_string(), exclusions(&mut r, errs));
                r.finish(errs);
            }
        }
        routes.finish(errs);
    }
    g.system_prompt = t.string(errs, "system_prompt");
    match t.string(errs, "system_prompt_mode").as_deref() {
        None | Some("replace") => {}
        Some("prepend") => g.system_prompt_mode = SystemPromptMode::Prepend,
        Some(other) => errs.push(
            &t.child_path("system_prompt_mode"),
            t.value_span("system_prompt_mode"),
            format!("{other:?}: expected \"replace\" or \"prepend\""),
        ),
    }
    if g.system_prompt.is_none() && t.value_span("system_prompt_mode").is_some() {
        errs.push(
            &t.child_path("system_prompt_mode"),
            t.value_span("system_prompt_mode"),
            "has no effect without system_prompt",
        );
    }
    match t.string(errs, "output").as_deref() {
        None => {}
        Some(s) => match OutputMode::parse(s) {
            Some(mode) => g.output = mode,
            None => errs.push(
                &t.child_path("output"),
                t.value_span("output"),
                format!("{s:?}: expected \"enforce\", \"monitor\" or \"off\""),
            ),
        },
    }
    if let Some(c) = t.boolean(errs, "canary") {
        g.canary = c;
    }
    if let Some(list) = t.string_list(errs, "protected") {
        for (i, p) in list.iter().enumerate() {
            if p.trim().is_empty() {
                errs.push(
                    &format!("{}[{i}]", t.child_path("protected")),
                    t.value_span("protected"),
                    "must not be empty",
                );
            }
        }
        g.protected = list;
    }
    if let Some(b) = t.boolean(errs, "leak_paraphrase") {
        g.leak_paraphrase = b;
    }
    g.classifier = classifier_policy(t, errs);
    match t.string(errs, "classifier_mode") {
        None => {}
        Some(m) => match ClassifierMode::parse(&m) {
            Some(m) => g.classifier_mode = m,
            None => errs.push(
                &t.child_path("classifier_mode"),
                t.value_span("classifier_mode"),
                format!("{m:?}: expected {}", ClassifierMode::NAMES),
            ),
        },
    }
    match t.string(errs, "on_leak").as_deref() {
        None => {}
        Some("block") => g.on_leak = LeakAction::Block,
        Some("flag") => g.on_leak = LeakAction::Flag,
        Some(other) => errs.push(
            &t.child_path("on_leak"),
            t.value_span("on_leak"),
            format!("{other:?}: expected \"block\" or \"flag\""),
        ),
    }
    g.tools.allowed = t.string_list(errs, "allowed_tools");
    if let Some(mut schemas) = t.table(errs, "tool_schemas") {
        let names: Vec<String> = g.tools.allowed.clone().unwrap_or_default();
        for name in &names {
            let key = name.as_str();
            let Some(raw) = schemas.string(errs, key) else {
                continue;
            };
            let path = schemas.child_path(key);
            match serde_json::from_str::<Value>(&raw) {
                Ok(v) => match check_schema(&v, &path, 0) {
                    Ok(()) => {
                        g.tools.pinned.insert(name.clone(), v);
                    }
                    Err(e) => errs.push(&e.param, schemas.value_span(key), e.message),
                },
                Err(e) => errs.push(
                    &path,
                    schemas.value_span(key),
                    format!("not a JSON schema: {e}"),
                ),
            }
        }
        // Anything left is a schema for a tool that is not on the allowlist.
        schemas.finish(errs);
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(src: &str) -> Result<TenantGuard, Vec<String>> {
        let doc = toml_edit::ImDocument::parse(src.to_string()).unwrap();
        let mut errs = Errors::new(src);
        let mut root = Table::root(doc.as_table());
        let g = decode_tenant_guard(&mut root, &mut errs);
        root.finish(&mut errs);
        if errs.list.is_empty() {
            Ok(g)
        } else {
            Err(errs.list.iter().map(|e| e.to_string()).collect())
        }
    }

    #[test]
    fn the_guard_section_reports_every_problem_and_reads_the_encoder_keys() {
        let parse = |src: &str| {
            let doc = toml_edit::ImDocument::parse(src.to_string()).unwrap();
            let mut errs = Errors::new(src);
            let mut root = Table::root(doc.as_table());
            let g = decode_guard(&mut root, &mut errs);
            root.finish(&mut errs);
            (
                g,
                errs.list.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            )
        };
        let (g, errs) = parse("paraphrase = \"off\"\nencoder_dir = \"/m\"\nencoder_threads = 2\n");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(g.paraphrase, Paraphrase::Off);
        assert_eq!(g.encoder_dir.as_deref(), Some(std::path::Path::new("/m")));
        assert_eq!(g.encoder_threads, 2);
        assert_eq!(GuardConfig::default().paraphrase, Paraphrase::Auto);
        let (_, errs) = parse("paraphrase = \"maybe\"\nencoder_threads = 0\nworkers = 0\n");
        let all = errs.join("\n");
        for want in [
            "paraphrase: \"maybe\": expected \"auto\", \"on\" or \"off\"",
            "encoder_threads:",
            "workers:",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }

    #[test]
    fn a_full_policy_decodes() {
        let g = decode(
            r#"
detection_paranoia = 3
blocking_paranoia = 2
threshold = 8
exclude = ["PII-6002", "tag:pii/phone"]
role_weights = { tool = 3 }
routes = { embeddings = { exclude = ["tag:owasp-llm01"] } }
system_prompt = "You are the support bot."
system_prompt_mode = "prepend"
allowed_tools = ["get_weather"]
tool_schemas = { get_weather = '{"type":"object","properties":{"city":{"type":"string"}}}' }
max_scan_bytes = 65536
on_oversize = "block"
output = "monitor"
canary = false
protected = ["TRAM-32"]
on_leak = "flag"
"#,
        )
        .unwrap();
        assert_eq!(
            (g.output, g.canary, g.protected.as_slice(), g.on_leak),
            (
                OutputMode::Monitor,
                false,
                &["TRAM-32".to_string()][..],
                LeakAction::Flag
            )
        );
        assert_eq!(
            g.policy.budget,
            Budget {
                max_bytes: 65536,
                max_work: 65536 * DEFAULT_WORK_PER_BYTE,
                on_oversize: OnOversize::Block
            }
        );
        assert_eq!(
            (
                g.policy.detection_paranoia,
                g.policy.blocking_paranoia,
                g.policy.threshold
            ),
            (3, 2, 8)
        );
        assert!(
            g.policy.exclusions.ids.contains("PII-6002")
                && g.policy.exclusions.tags.contains("pii/phone")
        );
        assert_eq!(g.policy.role_weights, [1, 1, 1, 3, 1, 1, 1]);
        assert!(g.routes["embeddings"].tags.contains("owasp-llm01"));
        assert_eq!(g.system_prompt_mode, SystemPromptMode::Prepend);
        assert!(g.tools.pinned.contains_key("get_weather"));
    }

    #[test]
    fn every_problem_is_reported() {
        let errs = decode(
            r#"
detection_paranoia = 1
blocking_paranoia = 2
threshold = 0
routes = { chat = {} }
system_prompt_mode = "append"
allowed_tools = ["a"]
tool_schemas = { a = '{"type":"text"}', b = '{}' }
max_scan_bytes = 0
on_oversize = "skip"
output = "loud"
protected = ["ok", " "]
on_leak = "shout"
canary = "yes"
leak_paraphrase = 1
"#,
        )
        .unwrap_err();
        let all = errs.join("\n");
        for want in [
            "blocking_paranoia: must not exceed",
            "threshold: must be at least 1",
            "routes.chat: unknown key",
            "system_prompt_mode: \"append\"",
            "tool_schemas.a.type: must be one of",
            "tool_schemas.b: unknown key",
            "max_scan_bytes: must be greater than 0",
            "on_oversize: \"skip\": expected one of",
            "output: \"loud\": expected \"enforce\", \"monitor\" or \"off\"",
            "protected[1]: must not be empty",
            "on_leak: \"shout\": expected \"block\" or \"flag\"",
            "canary:",
            "leak_paraphrase:",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }
}
