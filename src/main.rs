//! The `tenantctl` binary: parse the command line, run it, map the outcome to an exit code,
//! and answer Ctrl-C and SIGTERM (see [`tenantctl::pg::interrupt`]).

use std::process::ExitCode;
use std::time::Duration;

use tenantctl::cli::exit::{self, Exit};
use tenantctl::cli::output::{BrokenPipe, Format};
use tenantctl::cli::Cli;
use tenantctl::pg::interrupt::{Cancelled, Interrupt};

/// How long an abort waits for the server to receive its cancel requests.
const CANCEL_WAIT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    // Crash tests only: the failpoints `FAILPOINTS` arms (a build without the feature has
    // none).
    #[cfg(feature = "failpoints")]
    let _failpoints = tenantctl::failpoint::arm();
    // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
    let cli = Cli::parse_args();
    let json = cli.global.format() == Format::Json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let interrupt = Interrupt::new();
    // The handlers are installed before any work starts, and watched on a worker thread,
    // so a signal is answered even while the command blocks (at a confirmation prompt).
    let signals = {
        let _entered = runtime.enter();
        match Signals::install() {
            Ok(s) => s,
            Err(e) => return fail(&anyhow::anyhow!("cannot watch for Ctrl-C: {e}")),
        }
    };
    runtime.spawn(watch(signals, interrupt.clone(), json));
    let outcome = runtime.block_on(tenantctl::run(cli, interrupt));
    runtime.shutdown_background();
    match outcome {
        Ok(exit) => ExitCode::from(exit.code()),
        // The reader of stdout went away (`tenantctl ... | head`): end quietly, as a
        // pipeline expects.
        Err(e) if e.downcast_ref::<BrokenPipe>().is_some() => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// The first signal during a bulk run asks it to stop gracefully; any other signal
/// aborts: the running statements of every open tenant session are cancelled on the
/// server, and the process exits 130.
async fn watch(mut signals: Signals, interrupt: Interrupt, json: bool) {
    loop {
        signals.next().await;
        if interrupt.graceful() && !interrupt.requested() {
            interrupt.request();
            notice(interrupt.stopping().as_deref().unwrap_or("stopping: no new tenants will be started, tenants waiting for their lock stop waiting, tenants in flight stop after their current migration and are recorded (signal again to cancel what is running)"));
            continue;
        }
        let cancelled = interrupt.cancel_sessions(CANCEL_WAIT).await;
        let run_id = interrupt.run_id();
        let message = abort_message(&cancelled, run_id.as_deref());
        let _stdout = tenantctl::cli::output::abort(json, run_id.as_deref(), &message);
        // `exit` runs no destructors: stdout stays held, so nothing else reaches it.
        std::process::exit(i32::from(Exit::Interrupted.code()));
    }
}

/// What an abort did, truthfully: whether the server was asked to cancel what ran.
fn abort_message(c: &Cancelled, run_id: Option<&str>) -> String {
    let mut m = if c.sessions == 0 {
        "interrupted; no tenant session was open".to_string()
    } else if c.delivered == c.sessions {
        format!(
            "interrupted: the server was asked to cancel the running statements of {} open tenant session(s); a transaction in flight rolls back (a migration, or a tenant drop), migrations that had finished are kept, and a no-transaction file keeps the statements it had completed",
            c.sessions
        )
    } else {
        format!(
            "interrupted: the server was asked to cancel the running statements of {} of {} open tenant session(s); the others could not be cancelled ({}) and roll back only when their statement ends and the server finds the connection closed; migrations that had finished are kept",
            c.delivered,
            c.sessions,
            c.errors.join("; ")
        )
    };
    if let Some(id) = run_id {
        if c.sessions > 0 {
            m.push_str(
                "; tenants in flight were not recorded in the registry, a rerun finishes them",
            );
        }
        m.push_str(&format!(
            "; `tenantctl events --run {id}` lists what the run recorded"
        ));
    }
    m
}

/// Ctrl-C (SIGINT) and SIGTERM.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; must run inside the runtime.
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// Resolves on the next signal.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    report(&exit::render(e));
    ExitCode::from(exit::for_error(e).code())
}

#[allow(clippy::print_stderr)]
fn report(message: &str) {
    eprintln!("error: {message}");
}

#[allow(clippy::print_stderr)]
fn notice(message: &str) {
    eprintln!("{message}");
}
