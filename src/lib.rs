//! tenantctl: a migrator for schema-per-tenant PostgreSQL.
//!
//! The crate is a library with a thin binary, in folders that are its layers
//! (`ARCHITECTURE.md` has the table; `tests/suite/architecture.rs` holds the code to it):
//! - two faces: [`cli`] (clap, one module per command, stdout, progress, exit codes) and
//!   [`serve`] (the REST service and dashboard), neither using the other;
//! - [`app`]: the actions both faces call, with the documents they return;
//! - [`data`]: a tenant's data as a unit (archives, export, import, clone, restore, the
//!   move's protocol);
//! - [`engine`]: plans, a tenant's locked session, runs over many tenants, dry runs;
//! - [`registry`]: the registry's tables, the ledger, fleet state reads, servers;
//! - [`pg`]: connections, TLS, cancellation and the stop token;
//! - [`files`]: the migration files and the statement splitter;
//! - the ground: [`config`], [`error`], [`ident`], [`show`], [`timestamp`], [`apikey`],
//!   [`failpoint`].

pub mod apikey;
pub mod app;
pub mod cli;
pub mod config;
pub mod data;
pub mod engine;
pub mod error;
pub mod failpoint;
pub mod files;
/// The fuzz targets' bodies, shared by `fuzz/` and `tests/props.rs`; not a supported API.
/// Built only with the `fuzzing` feature (which `cargo test` turns on).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod ident;
pub mod pg;
pub mod registry;
pub mod serve;
pub mod show;
pub mod timestamp;

use cli::commands::{self, Ctx};
use cli::exit::Exit;
use cli::output;
use cli::{Cli, Command};
pub use error::{Error, ErrorKind};
use pg::interrupt;

/// Runs a parsed command line and returns the exit code to use; [`output::BrokenPipe`]
/// when stdout was closed before all results were written.
pub async fn run(cli: Cli, interrupt: interrupt::Interrupt) -> anyhow::Result<Exit> {
    let outcome = dispatch(cli, interrupt).await;
    output::stdout_closed()?;
    outcome
}

/// Runs the command.
async fn dispatch(cli: Cli, interrupt: interrupt::Interrupt) -> anyhow::Result<Exit> {
    let concurrency = cli.command.concurrency();
    // Completions need no configuration: they work anywhere, even with a broken config.
    if let Command::Completions(a) = &cli.command {
        return commands::completions::run(a, &cli.global);
    }
    // `-o json` is JSON on stdout or refused: the service prints no document (its log
    // lines go to stderr).
    if matches!(cli.command, Command::Serve(_)) && cli.global.format() == output::Format::Json {
        return Err(Error::usage(
            "serve prints no JSON document (it logs a line per request on stderr); drop -o json",
        )
        .into());
    }
    if let Command::Manpages(a) = &cli.command {
        return commands::manpages::run(a, &cli.global);
    }
    let ctx = match Ctx::new(&cli.global, concurrency.map(usize::from), interrupt) {
        Ok(ctx) => ctx,
        // `config show` is for debugging exactly such a configuration: it shows what it
        // could read before the error.
        Err(e) if matches!(cli.command, Command::Config(_)) => {
            return commands::config::broken(&cli.global, e)
        }
        Err(e) => return Err(e.into()),
    };
    match &cli.command {
        Command::Init(a) => commands::init::run(&ctx, a).await,
        Command::Tenant(c) => commands::tenant::run(&ctx, c).await,
        Command::Provision(a) => commands::provision::run(&ctx, a).await,
        Command::Upgrade(a) => commands::upgrade::run(&ctx, a).await,
        Command::Current(a) => commands::current::run(&ctx, a).await,
        Command::History(a) => commands::history::run(&ctx, a).await,
        Command::Status(a) => commands::status::run(&ctx, a).await,
        Command::Events(a) => commands::events::run(&ctx, a).await,
        Command::Serve(a) => {
            // The service is the second face: it takes the application's context, not
            // the command line's output settings.
            serve::run(ctx.app, a.listen).await?;
            Ok(Exit::Ok)
        }
        Command::Metrics(a) => commands::metrics::run(&ctx, a).await,
        Command::Downgrade(a) => commands::downgrade::run(&ctx, a).await,
        Command::Stamp(a) => commands::stamp::run(&ctx, a).await,
        Command::Backup(a) => commands::backup::run(&ctx, a).await,
        Command::Revision(a) => commands::revision::run(&ctx, a).await,
        Command::Lint(a) => commands::lint::run(&ctx, a).await,
        Command::Check(a) => commands::check::run(&ctx, a).await,
        Command::Config(c) => commands::config::run(&ctx, c).await,
        Command::Adopt(c) => commands::adopt::run(&ctx, c).await,
        Command::Completions(a) => commands::completions::run(a, &cli.global),
        Command::Manpages(a) => commands::manpages::run(a, &cli.global),
    }
}
