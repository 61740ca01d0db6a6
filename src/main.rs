//! The `tenantctl` binary: parse the command line, run it, map the outcome to an exit code.

use std::process::ExitCode;

use tenantctl::cli::Cli;
use tenantctl::error::{exit_for, Exit};
use tenantctl::interrupt::Interrupt;

fn main() -> ExitCode {
    // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
    let cli = Cli::parse_args();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let interrupt = Interrupt::new();
    let outcome = runtime.block_on(async {
        tokio::select! {
            result = tenantctl::run(cli, interrupt.clone()) => Some(result),
            _ = abort_on_signal(interrupt.clone()) => None,
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

/// Resolves when the process should stop at once: on a signal while no bulk run can stop
/// gracefully, or on a second signal. During a bulk run the first signal only asks it to
/// start no new tenants.
async fn abort_on_signal(interrupt: Interrupt) {
    loop {
        signal().await;
        if interrupt.graceful() && !interrupt.requested() {
            interrupt.request();
            report_notice("stopping: no new tenants will be started; tenants in flight finish and are recorded (signal again to abort them)");
        } else {
            return;
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
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

#[allow(clippy::print_stderr)]
fn report_notice(message: &str) {
    eprintln!("{message}");
}
