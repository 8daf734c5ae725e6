//! `warden rules test | lint | eval`: what security engineers run on a pack before shipping it;
//! `warden output eval`: the same for the output guard's refusal and leak detectors.
//! Each returns the text to print and whether it succeeded; `main` only prints and sets the exit code.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use warden_guards::classifier::ClassifierPolicy;
use warden_guards::engine::Engine;
use warden_guards::eval::{evaluate, parse_jsonl, Layers};
use warden_guards::lint::{lint, Finding, Level};
use warden_guards::{Policy, RuleSet};

/// Output of a subcommand.
#[derive(Debug)]
pub struct Report {
    pub stdout: String,
    pub stderr: String,
    pub ok: bool,
}

fn load(dir: Option<&Path>) -> Result<Engine, Report> {
    let set = match dir {
        Some(d) => RuleSet::load_dir(d),
        None => RuleSet::embedded(),
    };
    let set = set.map_err(|errs| {
        failed(
            "rule packs do not parse",
            errs.iter().map(ToString::to_string),
        )
    })?;
    Engine::compile(set).map_err(|errs| {
        failed(
            "rule packs do not compile",
            errs.iter().map(ToString::to_string),
        )
    })
}

fn failed(what: &str, lines: impl Iterator<Item = String>) -> Report {
    let lines: Vec<String> = lines.collect();
    let mut stderr = format!("{what}: {} problem(s)\n", lines.len());
    for l in lines {
        let _ = writeln!(stderr, "  {l}");
    }
    Report {
        stdout: String::new(),
        stderr,
        ok: false,
    }
}

/// The labelled examples of `input`, read and parsed by `parse`; every bad line listed.
fn read_examples<T>(
    input: &Path,
    parse: fn(&str) -> Result<Vec<T>, Vec<String>>,
) -> Result<Vec<T>, Report> {
    let text = std::fs::read_to_string(input).map_err(|e| {
        failed(
            "cannot read the input",
            std::iter::once(format!("{}: {e}", input.display())),
        )
    })?;
    parse(&text)
        .map_err(|errs| failed(&format!("{}: bad lines", input.display()), errs.into_iter()))
}

/// Writes `--errors` (when given) with what `lines` makes.
fn write_errors(path: Option<&Path>, lines: impl FnOnce() -> String) -> Result<(), Report> {
    let Some(path) = path else {
        return Ok(());
    };
    std::fs::write(path, lines()).map_err(|e| {
        failed(
            "cannot write the errors file",
            std::iter::once(format!("{}: {e}", path.display())),
        )
    })
}

fn summary(engine: &Engine) -> String {
    let set = engine.set();
    format!(
        "{} rule(s) in {} pack(s) from {}, version {}, compiled in {:.1} ms",
        set.rules.len(),
        set.packs.len(),
        set.source,
        set.version,
        engine.compile_time.as_secs_f64() * 1e3
    )
}

/// `warden rules test [DIR]`.
pub fn test(dir: Option<&Path>) -> Report {
    let engine = match load(dir) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let cases: usize = engine
        .rules()
        .iter()
        .map(|r| r.must_match.len() + r.must_not_match.len())
        .sum();
    let failures = engine.self_test();
    if failures.is_empty() {
        return Report {
            stdout: format!("ok: {cases} case(s) passed; {}\n", summary(&engine)),
            stderr: String::new(),
            ok: true,
        };
    }
    let mut r = failed(
        &format!("{} of {cases} case(s) failed", failures.len()),
        failures.iter().map(ToString::to_string),
    );
    r.stdout = format!("{}\n", summary(&engine));
    r
}

/// `warden rules lint [DIR]`: errors fail, warnings are printed. A pack that parses but does not
/// compile is still linted (the compile errors are findings too).
pub fn lint_cmd(dir: Option<&Path>) -> Report {
    let set = match dir {
        Some(d) => RuleSet::load_dir(d),
        None => RuleSet::embedded(),
    };
    let set = match set {
        Ok(s) => s,
        Err(errs) => {
            return failed(
                "rule packs do not parse",
                errs.iter().map(ToString::to_string),
            )
        }
    };
    let compiled = Engine::compile(set.clone());
    let mut findings = lint(&set, compiled.as_ref().ok());
    if let Err(errs) = &compiled {
        findings.extend(errs.iter().map(|e| Finding {
            level: Level::Error,
            rule: "-".into(),
            origin: e.file.clone(),
            message: format!("does not compile: {e}"),
        }));
    }
    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    let warnings = findings.len() - errors;
    let mut stdout = String::new();
    for f in &findings {
        let _ = writeln!(stdout, "{f}");
    }
    let summary = match &compiled {
        Ok(engine) => summary(engine),
        Err(_) => format!(
            "{} rule(s) from {}, version {}",
            set.rules.len(),
            set.source,
            set.version
        ),
    };
    let _ = writeln!(
        stdout,
        "{errors} error(s), {warnings} warning(s); {summary}"
    );
    Report {
        stdout,
        stderr: String::new(),
        ok: errors == 0,
    }
}

/// `warden rules eval` options beside the input.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions<'a> {
    /// `--rules DIR`: the packs (default: the embedded packs).
    pub rules: Option<&'a Path>,
    /// `--format json`.
    pub json: bool,
    /// `--errors OUT.jsonl`.
    pub errors: Option<&'a Path>,
    /// `--layers rules|classifier|all`.
    pub layers: Layers,
    /// `--classifier auto|on|off` and `--classifier-dir DIR`, as `[guard]` reads them.
    pub classifier: crate::config::Paraphrase,
    pub classifier_dir: Option<PathBuf>,
    /// `--blocking-paranoia N`: the policy's blocking level (detection follows it up, never
    /// below the default 2); `None`: the default policy.
    pub blocking_paranoia: Option<u8>,
}

/// `warden rules eval --input FILE.jsonl [--rules DIR] [--format json] [--errors OUT.jsonl]
/// [--layers rules|classifier|all] [--classifier auto|on|off] [--classifier-dir DIR]`, under
/// the default policy: the whole guard as the proxy runs it (the classifier when it loads).
pub fn eval(input: &Path, opts: &EvalOptions<'_>) -> Report {
    let engine = match load(opts.rules) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let examples = match read_examples(input, parse_jsonl) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let classifier = if opts.layers == Layers::Rules {
        None
    } else {
        let mode = match (opts.layers, opts.classifier) {
            (Layers::Classifier, crate::config::Paraphrase::Auto) => crate::config::Paraphrase::On,
            (_, m) => m,
        };
        let config = crate::config::GuardConfig {
            classifier: mode,
            classifier_dir: opts.classifier_dir.clone(),
            ..crate::config::GuardConfig::default()
        };
        match crate::guard::load_classifier(&config) {
            Ok(c) => c,
            Err(e) => return failed("cannot load the classifier", std::iter::once(e)),
        }
    };
    if opts.layers == Layers::Classifier && classifier.is_none() {
        return failed(
            "--layers classifier",
            std::iter::once("the classifier is off (--classifier off)".to_string()),
        );
    }
    let policy = ClassifierPolicy {
        // No deadline in an evaluation: every text is scored whole.
        deadline: std::time::Duration::from_secs(3600),
        ..ClassifierPolicy::default()
    };
    let run = classifier.as_deref().map(|c| (c, &policy));
    let mut rules_policy = Policy::default();
    if let Some(n) = opts.blocking_paranoia {
        rules_policy.blocking_paranoia = n;
        rules_policy.detection_paranoia = rules_policy.detection_paranoia.max(n);
    }
    let report = evaluate(&engine, &rules_policy, &examples, run, opts.layers);
    if let Err(r) = write_errors(opts.errors, || report.errors_jsonl(&examples)) {
        return r;
    }
    let layers = match (&classifier, opts.layers) {
        (None, Layers::All) => "rules (the classifier is not loaded)",
        _ => opts.layers.name(),
    };
    Report {
        stdout: if opts.json {
            let mut v = report.to_json();
            v["classifier"] = serde_json::Value::Bool(classifier.is_some());
            format!("{v}\n")
        } else {
            format!(
                "{}{}\nlayers: {layers}\n",
                report.to_table(),
                summary(&engine)
            )
        },
        stderr: String::new(),
        ok: true,
    }
}

/// `warden output eval --input FILE.jsonl [--format json] [--errors OUT.jsonl]
/// [--paraphrase auto|on|off] [--encoder-dir DIR]`.
pub fn output_eval(
    input: &Path,
    json: bool,
    errors: Option<&Path>,
    (paraphrase, encoder_dir): (&str, Option<PathBuf>),
) -> Report {
    use warden_guards::output_eval;
    let examples = match read_examples(input, output_eval::parse_jsonl) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let guard = crate::config::GuardConfig {
        paraphrase: crate::config::Paraphrase::parse(paraphrase).unwrap_or_default(),
        encoder_dir,
        ..Default::default()
    };
    let paraphraser = match crate::guard::load_paraphraser(&guard) {
        Ok(p) => p,
        Err(e) => return failed("--paraphrase on", std::iter::once(e)),
    };
    let report = match output_eval::evaluate(&examples, paraphraser.as_deref()) {
        Ok(r) => r,
        Err(e) => return failed(&format!("{}", input.display()), std::iter::once(e)),
    };
    if let Err(r) = write_errors(errors, || report.errors_jsonl(&examples)) {
        return r;
    }
    Report {
        stdout: if json {
            format!("{}\n", report.to_json())
        } else {
            report.to_table()
        },
        stderr: String::new(),
        ok: true,
    }
}
