//! `otlp-sink`: an OTLP/gRPC trace collector that counts and discards, for benchmarks.
//!
//! Prints `listening on ADDR` once bound (pass port 0 and read the real port), serves until
//! SIGTERM or SIGINT, then prints `spans N bytes B` (what it received) and exits.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use warden_tests::otlp::Collector;

/// A trace collector that keeps nothing but counts.
#[derive(Debug, Parser)]
#[command(name = "otlp-sink")]
struct Args {
    /// Address to bind; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:4317")]
    listen: std::net::SocketAddr,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = warden_tests::runtime(1).and_then(|rt| rt.block_on(serve(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "otlp-sink: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> std::io::Result<()> {
    let collector = Collector::start(args.listen, false)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "listening on {}",
        collector.endpoint().trim_start_matches("http://")
    )?;
    out.flush()?;
    drop(out);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        res = tokio::signal::ctrl_c() => res?,
    }
    let (spans, bytes) = collector.counts();
    let mut out = std::io::stdout().lock();
    writeln!(out, "spans {spans} bytes {bytes}")?;
    out.flush()
}
