//! The `warden` command.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use warden_proxy::config::Config;
use warden_proxy::keys;

#[derive(Parser)]
#[command(
    name = "warden",
    version,
    about = "A sidecar that makes an LLM inference worker safe, observable and containable"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy and its admin listener.
    Serve {
        /// Path to the TOML config.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file offline: exit 0 when valid, 1 with every problem listed otherwise.
    CheckConfig {
        /// Path to the TOML config.
        file: PathBuf,
    },
    /// Run the OpenAI-compatible inference worker on an ONNX model directory.
    Worker {
        /// Model directory: model.onnx (Optimum decoder-with-past layout), tokenizer.json,
        /// config.json and a chat template.
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        /// Model name clients use (default: the directory name).
        #[arg(long)]
        served_model_name: Option<String>,
        /// libonnxruntime.so to load (default: $ORT_DYLIB_PATH, next to this binary, or
        /// inference/.ort/ as fetched by tests/scripts/setup.sh).
        #[arg(long)]
        ort_lib: Option<PathBuf>,
        /// ONNX Runtime intra-op threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// KV-cache budget in MiB (default: 512 on CPU, a quarter of free GPU memory with CUDA).
        #[arg(long)]
        kv_cache_mib: Option<usize>,
        /// Prefix-cache budget in MiB (0 disables prefix reuse).
        #[arg(long, default_value_t = 128)]
        prefix_cache_mib: usize,
        /// Requests allowed to wait for admission; more get 503 with Retry-After.
        #[arg(long, default_value_t = 256)]
        max_waiting: usize,
        /// Most sequences decoded together in one step.
        #[arg(long, default_value_t = 64)]
        max_batch: usize,
    },
    /// Start the worker with the bundled model and the proxy in front of it, on loopback.
    Up {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8081")]
        worker: SocketAddr,
        /// Model directory (default: the bundled inference/model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Where config, logs and the demo key go.
        #[arg(long, default_value = "warden-data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "warden-tiny")]
        model_name: String,
        /// The demo tenant's request rate limit (per minute).
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..))]
        requests_per_minute: u32,
        /// The demo tenant's token rate limit (per minute).
        #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=4_294_967_295))]
        tokens_per_minute: u64,
    },
    /// Rule-pack tools: run every rule's test cases, lint, or measure the guard on labelled data.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// The on-call client for the admin API: kill switches, status, the audit trail.
    Ctl {
        /// The admin listener.
        #[arg(long, default_value = "http://127.0.0.1:9090", global = true)]
        admin: String,
        /// A file holding the admin key (else `WARDEN_ADMIN_TOKEN`).
        #[arg(long, global = true)]
        token_file: Option<PathBuf>,
        /// Print the server's JSON instead of text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: CtlCommand,
    },
    /// Runbooks: validate them.
    Runbooks {
        #[command(subcommand)]
        command: RunbooksCommand,
    },
    /// The incident detectors: their delay and false-alarm rate on simulated traffic.
    Detect {
        #[command(subcommand)]
        command: DetectCommand,
    },
    /// Output-guard tools: measure the refusal and leak detectors on labelled data.
    Output {
        #[command(subcommand)]
        command: OutputCommand,
    },
    /// The audit lake: check the admin audit table's hash chain.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// API key utilities.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Kill switches.
    Switch {
        #[command(subcommand)]
        command: SwitchCommand,
    },
    /// Temporary request and token limits on a scope, on top of the config's quotas.
    Throttle {
        #[command(subcommand)]
        command: ThrottleCommand,
    },
    /// Switches in force, readiness, the rule-pack version and where the switches are kept.
    Status,
    /// The admin actions of this process (role auditor or admin).
    Audit {
        #[command(subcommand)]
        command: AuditTail,
    },
    /// The runbooks' alerts (detector alarms they took up), newest first.
    Alerts,
    /// Approve an alert of a runbook in `approve` mode: its actions are applied now.
    Approve {
        id: u64,
        /// Recorded with the approval (default: "approved with warden ctl").
        #[arg(long, default_value = "approved with warden ctl")]
        reason: String,
    },
}

#[derive(Subcommand)]
enum ThrottleCommand {
    /// The throttles in force.
    List,
    /// Limit a scope (same scopes as switches, rules excepted) for a while.
    Set {
        scope: String,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<u32>,
        /// Tokens per minute (prompt estimate + max_tokens, as the tenant quotas count).
        #[arg(long)]
        tpm: Option<u64>,
        /// How long (`90s`, `15m`, `2h`, `1d`): throttles always expire.
        #[arg(long)]
        ttl: String,
        #[arg(long)]
        reason: String,
    },
    /// Remove a throttle.
    Clear {
        scope: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditTail {
    /// The latest admin actions, oldest first.
    Tail,
}

#[derive(Subcommand)]
enum SwitchCommand {
    /// The switches in force.
    List,
    /// Set a switch: SCOPE is global, tenant:NAME, model:NAME, route:NAME, upstream:NAME,
    /// feature:streaming|tools|logprobs|n or rule:ID.
    Set {
        scope: String,
        #[arg(value_parser = ["on", "off", "degraded"])]
        state: String,
        /// A degraded parameter: `max_tokens=N` or `stream=false`.
        #[arg(long = "param")]
        params: Vec<String>,
        #[arg(long)]
        reason: String,
        /// Revert after this long (`90s`, `15m`, `2h`, `1d`).
        #[arg(long)]
        ttl: Option<String>,
        /// A global off also ends the streams in flight.
        #[arg(long)]
        cut_streams: bool,
    },
    /// Remove a switch (the scope is on again).
    Clear {
        scope: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum RunbooksCommand {
    /// Parse every runbook of DIR (default: the ones shipped in this binary), check that each
    /// page exists beside it and that ids are unique; exit 1 listing every problem.
    Test { dir: Option<PathBuf> },
}

#[derive(Subcommand)]
enum DetectCommand {
    /// Run a detector's real code on simulated requests: a baseline rate, then the rate times
    /// `--shift`; print the median and p90 delay (requests from the shift to the alarm) over
    /// `--runs` runs and the false alarms per million requests of a stationary run.
    Simulate {
        /// refusal, input_block, output_block, leak, hallucination, error, ttft_slo, tpot_slo.
        #[arg(long)]
        detector: String,
        /// The baseline rate (for an SLO detector: the share allowed over the SLO, e.g. 0.05).
        #[arg(long)]
        baseline: f64,
        /// The rate after the change, as a multiple of the baseline.
        #[arg(long)]
        shift: f64,
        #[arg(long, default_value_t = 2000)]
        runs: usize,
        /// Requests of the stationary run.
        #[arg(long, default_value_t = 10_000_000)]
        stationary: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The CUSUM threshold h (default: as `[detectors] threshold`).
        #[arg(long)]
        threshold: Option<f64>,
        /// Requests that learn the baseline (default: as `[detectors] warmup`).
        #[arg(long)]
        warmup: Option<u64>,
        /// `table` or `json`.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
}

#[derive(Subcommand)]
enum OutputCommand {
    /// Run the refusal and leak detectors over labelled JSONL
    /// `{"task":"refusal","text","label","source"?}` / `{"task":"leak","text","secret","label",
    /// "source"?}`; print tp/fp/tn/fn, precision, recall, F1 and accuracy per task and source.
    Eval {
        #[arg(long)]
        input: PathBuf,
        /// `table` or `json`.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// Also write every misjudged line to this JSONL file.
        #[arg(long)]
        errors: Option<PathBuf>,
        /// The paraphrase check of leaks (a sentence encoder): `auto` (on when the encoder is
        /// found), `on` (an error without it) or `off`; as `[guard] paraphrase`.
        #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
        paraphrase: String,
        /// The encoder's directory (default: as `[guard] encoder_dir`).
        #[arg(long)]
        encoder_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Compile the packs and run every rule's must_match / must_not_match cases.
    Test {
        /// Directory of *.toml packs (default: the packs embedded in this binary).
        dir: Option<PathBuf>,
    },
    /// Duplicate ids, patterns that never match, match the empty string or almost anything,
    /// missing tests. Exit 1 on errors; warnings are printed.
    Lint {
        /// Directory of *.toml packs (default: the embedded packs).
        dir: Option<PathBuf>,
    },
    /// Run the input guard (default policy, one message per line, `user` unless the line has a
    /// `role`) over labelled JSONL `{"text", "label": 0|1, "source"?, "role"?}`; print
    /// precision, recall, FPR and latency.
    Eval {
        #[arg(long)]
        input: PathBuf,
        /// Directory of *.toml packs (default: the embedded packs).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// `table` or `json`.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// Also write every misclassified line (missed attack or blocked benign text) to this
        /// JSONL file, with the ids of the rules that matched.
        #[arg(long)]
        errors: Option<PathBuf>,
        /// Which layers decide: the rules, the classifier, or both fused as the proxy fuses
        /// them (default; per-layer counts are printed beside).
        #[arg(long, default_value = "all", value_parser = ["rules", "classifier", "all"])]
        layers: String,
        /// Load the classifier as `[guard] classifier` would: `auto` (when found), `on` (fail
        /// without it) or `off`.
        #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
        classifier: String,
        /// The classifier's directory (default: the model the repository ships).
        #[arg(long)]
        classifier_dir: Option<PathBuf>,
        /// The policy's blocking paranoia level, 1 to 4 (default 1; detection follows it up):
        /// at 2 and above the classifier blocks on its own.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=4))]
        blocking_paranoia: Option<u8>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the admin audit table's hash chain; exit 1 and name the first broken link.
    Verify {
        /// The lake directory (`telemetry.dir`).
        #[arg(long, default_value = "warden-lake")]
        logs: PathBuf,
        /// The newest row hash you hold from outside the lake (the proxy logs it with every
        /// admin action): catches the newest rows being removed, which leaves a valid chain.
        #[arg(long)]
        expect_head: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Read an API key on stdin; print the hash to put in a tenant's `api_keys`.
    Hash,
    /// Print a new random API key and, on the next line, its hash.
    Generate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { file } => check_config(file),
        Command::Worker {
            model,
            listen,
            served_model_name,
            ort_lib,
            threads,
            kv_cache_mib,
            prefix_cache_mib,
            max_waiting,
            max_batch,
        } => worker(warden_inference::WorkerOptions {
            model_dir: model,
            listen,
            served_model_name,
            ort_lib,
            threads,
            kv_cache_bytes: kv_cache_mib.map(|m| m << 20),
            prefix_cache_bytes: prefix_cache_mib << 20,
            max_waiting,
            max_batch,
        }),
        Command::Up {
            listen,
            admin,
            worker,
            model,
            data_dir,
            model_name,
            requests_per_minute,
            tokens_per_minute,
        } => up(warden_proxy::up::UpOptions {
            listen,
            admin,
            worker,
            model_dir: model,
            data_dir,
            model_name,
            requests_per_minute,
            tokens_per_minute,
        }),
        Command::Rules { command } => {
            use warden_proxy::rules_cmd;
            let report = match command {
                RulesCommand::Test { dir } => rules_cmd::test(dir.as_deref()),
                RulesCommand::Lint { dir } => rules_cmd::lint_cmd(dir.as_deref()),
                RulesCommand::Eval {
                    input,
                    rules,
                    format,
                    errors,
                    layers,
                    classifier,
                    classifier_dir,
                    blocking_paranoia,
                } => rules_cmd::eval(
                    &input,
                    &rules_cmd::EvalOptions {
                        rules: rules.as_deref(),
                        json: format == "json",
                        errors: errors.as_deref(),
                        layers: warden_guards::eval::Layers::parse(&layers).unwrap_or_default(),
                        classifier: warden_proxy::config::Paraphrase::parse(&classifier)
                            .unwrap_or_default(),
                        classifier_dir,
                        blocking_paranoia,
                    },
                ),
            };
            report_exit(&report)
        }
        Command::Ctl {
            admin,
            token_file,
            json,
            command,
        } => {
            use warden_proxy::ctl::Target;
            let target = match Target::new(admin, token_file.as_deref(), json) {
                Ok(t) => t,
                Err(e) => {
                    err(&format!("warden ctl: {e}\n"));
                    return ExitCode::from(2);
                }
            };
            let o = match command {
                CtlCommand::Switch {
                    command: SwitchCommand::List,
                } => target.switch_list(),
                CtlCommand::Switch {
                    command:
                        SwitchCommand::Set {
                            scope,
                            state,
                            params,
                            reason,
                            ttl,
                            cut_streams,
                        },
                } => target.switch_set(
                    &scope,
                    &state,
                    &params,
                    &reason,
                    ttl.as_deref(),
                    cut_streams,
                ),
                CtlCommand::Switch {
                    command: SwitchCommand::Clear { scope, reason },
                } => target.switch_clear(&scope, &reason),
                CtlCommand::Throttle {
                    command: ThrottleCommand::List,
                } => target.throttle_list(),
                CtlCommand::Throttle {
                    command:
                        ThrottleCommand::Set {
                            scope,
                            rpm,
                            tpm,
                            ttl,
                            reason,
                        },
                } => target.throttle_set(&scope, rpm, tpm, &ttl, &reason),
                CtlCommand::Throttle {
                    command: ThrottleCommand::Clear { scope, reason },
                } => target.throttle_clear(&scope, reason.as_deref()),
                CtlCommand::Status => target.status(),
                CtlCommand::Audit {
                    command: AuditTail::Tail,
                } => target.audit_tail(),
                CtlCommand::Alerts => target.alerts(),
                CtlCommand::Approve { id, reason } => target.approve(id, &reason),
            };
            err(&o.stderr);
            let code = out(&o.stdout);
            if o.ok {
                code
            } else {
                ExitCode::from(1)
            }
        }
        Command::Output {
            command:
                OutputCommand::Eval {
                    input,
                    format,
                    errors,
                    paraphrase,
                    encoder_dir,
                },
        } => {
            let report = warden_proxy::rules_cmd::output_eval(
                &input,
                format == "json",
                errors.as_deref(),
                (&paraphrase, encoder_dir),
            );
            report_exit(&report)
        }
        Command::Runbooks {
            command: RunbooksCommand::Test { dir },
        } => match warden_runbooks::book::load(dir.as_deref()) {
            Ok(books) => {
                let mut s = String::new();
                for b in &books {
                    s.push_str(&format!(
                        "ok  {}  {} on {} ({}), {} action(s), cooldown {}s, revert after {}s, at most {} scope(s): {}\n",
                        b.id,
                        b.detector.name(),
                        b.scope.name(),
                        b.mode.name(),
                        b.actions.len(),
                        b.cooldown.as_secs(),
                        b.revert_after.as_secs(),
                        b.max_scopes,
                        b.source
                    ));
                }
                s.push_str(&format!("{} runbook(s) valid\n", books.len()));
                out(&s)
            }
            Err(errors) => {
                let mut s = format!("{} problem(s):\n", errors.len());
                for e in errors {
                    s.push_str(&format!("  {e}\n"));
                }
                err(&s);
                ExitCode::from(1)
            }
        },
        Command::Detect {
            command:
                DetectCommand::Simulate {
                    detector,
                    baseline,
                    shift,
                    runs,
                    stationary,
                    seed,
                    threshold,
                    warmup,
                    format,
                },
        } => detect_simulate(
            &detector,
            (baseline, shift, runs, stationary, seed),
            (threshold, warmup),
            format == "json",
        ),
        Command::Audit {
            command: AuditCommand::Verify { logs, expect_head },
        } => audit_verify(&logs, expect_head.as_deref()),
        Command::Keys {
            command: KeysCommand::Hash,
        } => keys_hash(),
        Command::Keys {
            command: KeysCommand::Generate,
        } => {
            let key = keys::generate();
            out(&format!("{key}\n{}\n", keys::KeyHash::of(&key)))
        }
    }
}

fn serve(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            err(&format!("warden: invalid config\n{e}"));
            return ExitCode::from(2);
        }
    };
    warden_proxy::logging::init(&config.logging);
    match warden_proxy::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "warden failed to start");
            err(&format!("warden: {e}\n"));
            ExitCode::from(1)
        }
    }
}

fn worker(opts: warden_inference::WorkerOptions) -> ExitCode {
    warden_proxy::logging::init(&warden_proxy::config::LoggingConfig::new(
        warden_proxy::config::LogFormat::Text,
        "info",
    ));
    match warden_inference::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            err(&format!("warden worker: {e}\n"));
            ExitCode::from(1)
        }
    }
}

fn up(opts: warden_proxy::up::UpOptions) -> ExitCode {
    match warden_proxy::up::run(opts, &mut |line| {
        let _ = out(&format!("{line}\n"));
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            err(&format!("warden up: {e}\n"));
            ExitCode::from(1)
        }
    }
}

fn check_config(path: PathBuf) -> ExitCode {
    match Config::load(&path) {
        Ok(c) => {
            // What `serve` checks before it starts: the packs, the lake's settings and key, the
            // switchboard's state file.
            let problems = warden_proxy::server::preflight(&c);
            if problems.is_empty() {
                check_config_ok(&path, &c)
            } else {
                err(&format!(
                    "{}: {} problem(s)\n",
                    path.display(),
                    problems.len()
                ));
                for p in problems {
                    err(&format!("  {p}\n"));
                }
                ExitCode::from(1)
            }
        }
        Err(e) => {
            err(&e.to_string());
            ExitCode::from(1)
        }
    }
}

fn check_config_ok(path: &std::path::Path, c: &Config) -> ExitCode {
    let rules = if !c.guard.enabled {
        "input guard off".to_string()
    } else {
        match &c.guard.rules_dir {
            Some(d) => format!("rules {}", d.display()),
            None => "embedded rules".to_string(),
        }
    };
    out(&format!(
        "{}: ok ({} upstream(s), {} tenant(s), proxy {}, admin {}, {rules})\n",
        path.display(),
        c.upstreams.len(),
        c.tenants.len(),
        c.server.listen,
        c.admin.listen
    ))
}

fn audit_verify(lake: &std::path::Path, expect_head: Option<&str>) -> ExitCode {
    match warden_telemetry::verify(lake) {
        Ok(report) => match &report.first_break {
            None if expect_head.is_some_and(|want| {
                !report
                    .head
                    .as_ref()
                    .is_some_and(|h| h.row_hash == want || h.row_hash.ends_with(want))
            }) =>
            {
                err(&format!(
                    "{}: chain intact but its head is {} (seq {}), not the expected {}: rows are missing at the end\n",
                    lake.display(),
                    report.head.as_ref().map_or("(empty)", |h| h.row_hash.as_str()),
                    report.head.as_ref().map_or(0, |h| h.seq),
                    expect_head.unwrap_or("")
                ));
                ExitCode::from(1)
            }
            None => out(&format!(
                "{}: ok, {} admin action(s) in {} file(s), chain intact{}\n",
                lake.display(),
                report.rows,
                report.files,
                report.head.as_ref().map_or(String::new(), |h| format!(
                    ", head #{} {}",
                    h.seq, h.row_hash
                ))
            )),
            Some(b) => {
                err(&format!(
                    "{}: BROKEN at {} row {} (seq {:?}): {:?}: expected {}, found {}\n",
                    lake.display(),
                    b.file.display(),
                    b.row,
                    b.seq,
                    b.kind,
                    b.expected,
                    b.found
                ));
                ExitCode::from(1)
            }
        },
        Err(e) => {
            err(&format!("warden audit verify: {e}\n"));
            ExitCode::from(1)
        }
    }
}

/// Prints a subcommand's report; exit 1 when it failed.
/// `warden detect simulate`.
fn detect_simulate(
    detector: &str,
    (baseline, shift, runs, stationary, seed): (f64, f64, usize, u64, u64),
    (threshold, warmup): (Option<f64>, Option<u64>),
    json: bool,
) -> ExitCode {
    use warden_runbooks::detect::{Kind, RateParams};
    use warden_runbooks::simulate::{simulate, SimSpec};
    let Some(kind) = Kind::parse(detector) else {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        err(&format!(
            "--detector {detector:?}: expected one of {}\n",
            names.join(", ")
        ));
        return ExitCode::from(2);
    };
    let defaults = RateParams::default();
    let spec = SimSpec {
        detector: kind,
        baseline,
        shift,
        runs,
        stationary,
        seed,
        params: RateParams {
            threshold: threshold.unwrap_or(defaults.threshold),
            warmup: warmup.unwrap_or(defaults.warmup),
            ..defaults
        },
    };
    match simulate(&spec) {
        Ok(r) if json => out(&format!("{}\n", r.to_json(&spec))),
        Ok(r) => out(&format!(
            "detector {} baseline {} shift {}x, threshold h = {}, warm-up {} requests\n\
             delay (requests from the change to the alarm, {} runs): median {}, p90 {}{}\n\
             false alarms: {} in {} stationary requests = {:.3} per million\n",
            kind.name(),
            baseline,
            shift,
            spec.params.threshold,
            spec.params.warmup,
            runs,
            r.median_delay_requests,
            r.p90_delay_requests,
            if r.missed > 0 {
                format!(" ({} runs never alarmed)", r.missed)
            } else {
                String::new()
            },
            r.false_alarms,
            stationary,
            r.false_alarms_per_million
        )),
        Err(e) => {
            err(&format!("{e}\n"));
            ExitCode::from(2)
        }
    }
}

fn report_exit(report: &warden_proxy::rules_cmd::Report) -> ExitCode {
    err(&report.stderr);
    let code = out(&report.stdout);
    if report.ok {
        code
    } else {
        ExitCode::from(1)
    }
}

fn keys_hash() -> ExitCode {
    let mut raw = String::new();
    if let Err(e) = std::io::stdin().take(64 * 1024).read_to_string(&mut raw) {
        err(&format!("warden: cannot read stdin: {e}\n"));
        return ExitCode::from(1);
    }
    let key = raw.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        err("warden: expected one API key on stdin (no spaces)\n");
        return ExitCode::from(1);
    }
    out(&format!("{}\n", keys::KeyHash::of(key)))
}

fn out(s: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(s.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}

fn err(s: &str) {
    let _ = std::io::stderr().write_all(s.as_bytes());
}
