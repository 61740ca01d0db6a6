//! The `tenantctl` binary: parse the command line, run it, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use tenantctl::cli::Cli;
use tenantctl::error::{exit_for, Exit};

fn main() -> ExitCode {
    // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = tenantctl::run(cli) => Some(result),
            _ = interrupted() => None,
        }
    });
    // Open sessions are dropped here; the server rolls back any migration in flight.
    runtime.shutdown_background();
    match outcome {
        Some(Ok(exit)) => ExitCode::from(exit.code()),
        Some(Err(e)) => fail(&e),
        None => {
            report("interrupted; migrations in flight were rolled back, finished ones are kept");
            ExitCode::from(Exit::Interrupted.code())
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    report(&format!("{e:#}"));
    ExitCode::from(exit_for(e).code())
}

#[allow(clippy::print_stderr)]
fn report(message: &str) {
    eprintln!("error: {message}");
}
