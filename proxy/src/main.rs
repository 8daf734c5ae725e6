//! The `warden` command.

use std::io::{Read, Write};
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
    /// API key utilities.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
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

fn check_config(path: PathBuf) -> ExitCode {
    match Config::load(&path) {
        Ok(c) => out(&format!(
            "{}: ok ({} upstream(s), {} tenant(s), proxy {}, admin {})\n",
            path.display(),
            c.upstreams.len(),
            c.tenants.len(),
            c.server.listen,
            c.admin.listen
        )),
        Err(e) => {
            err(&e.to_string());
            ExitCode::from(1)
        }
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
