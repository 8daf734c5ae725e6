//! `warden-audit`: SQL over Warden's audit lake.
//!
//! ```text
//! warden-audit sql "SELECT tenant, count(*) FROM events GROUP BY tenant" [--logs DIR] [--format table|csv|json]
//! warden-audit questions [--logs DIR]      # the documented questions, with their SQL and answers
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use warden_audit::{query, render, Format, QUESTIONS};

#[derive(Parser)]
#[command(
    name = "warden-audit",
    version,
    about = "SQL over Warden's audit lake (tables: events, audit)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one SQL statement.
    Sql {
        sql: String,
        /// The lake directory (`telemetry.dir`).
        #[arg(long, default_value = "warden-lake")]
        logs: PathBuf,
        #[arg(long, default_value = "table", value_parser = ["table", "csv", "json"])]
        format: String,
    },
    /// Print every documented auditor question with its SQL and its answer on this lake.
    Questions {
        #[arg(long, default_value = "warden-lake")]
        logs: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start a runtime: {e}")),
    };
    match cli.command {
        Command::Sql { sql, logs, format } => {
            let format = match format.as_str() {
                "csv" => Format::Csv,
                "json" => Format::Json,
                _ => Format::Table,
            };
            match rt
                .block_on(query(&logs, &sql))
                .and_then(|b| render(&b, format))
            {
                Ok(text) => out(&format!("{text}\n")),
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Questions { logs } => {
            for (q, sql) in QUESTIONS {
                if sql.contains('$') {
                    let _ = out(&format!(
                        "## {q}\n{sql}\n(needs a value for its placeholder)\n\n"
                    ));
                    continue;
                }
                match rt
                    .block_on(query(&logs, sql))
                    .and_then(|b| render(&b, Format::Table))
                {
                    Ok(text) => {
                        let _ = out(&format!("## {q}\n{sql}\n{text}\n\n"));
                    }
                    Err(e) => return fail(&format!("{q}: {e}")),
                }
            }
            ExitCode::SUCCESS
        }
    }
}

fn out(s: &str) -> ExitCode {
    let mut o = std::io::stdout().lock();
    match o.write_all(s.as_bytes()).and_then(|()| o.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}

fn fail(msg: &str) -> ExitCode {
    let _ = std::io::stderr().write_all(format!("warden-audit: {msg}\n").as_bytes());
    ExitCode::from(1)
}
