//! `fake-upstream`: serve [`warden_tests::upstream::FakeUpstream`] from the command line.
//!
//! Prints exactly one line, `listening on ADDR`, to stdout once bound (so scripts can pass
//! port 0 and read the real port), then serves until SIGTERM or SIGINT. Requests are counted
//! but not recorded, so memory stays flat during long benchmarks.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use warden_tests::upstream::{FakeOptions, FakeUpstream, Fault};

/// A fake OpenAI-compatible upstream with fault injection (see `x-fault`).
#[derive(Debug, Parser)]
#[command(name = "fake-upstream")]
struct Args {
    /// Address to bind; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: String,
    /// Model listed by /v1/models (repeatable); default "test-model".
    #[arg(long = "model")]
    models: Vec<String>,
    /// Fault for requests without an x-fault header, e.g. "slow-first-token=200".
    #[arg(long)]
    fault: Option<Fault>,
    /// Tokio worker threads (1 = current-thread runtime).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = warden_tests::runtime(args.threads);
    let result = runtime.and_then(|rt| rt.block_on(serve(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "fake-upstream: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let mut opts = FakeOptions {
        default_fault: args.fault,
        record_requests: false,
        ..FakeOptions::default()
    };
    if !args.models.is_empty() {
        opts.models = args.models;
    }
    let upstream = FakeUpstream::start(&args.listen, opts).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", upstream.addr())?;
        out.flush()?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        res = tokio::signal::ctrl_c() => res?,
    }
    drop(upstream);
    Ok(())
}
