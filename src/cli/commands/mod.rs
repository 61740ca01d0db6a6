//! The command layer: one module per command, each with a `run` that takes its `Args`
//! (defined in [`crate::cli`]), calls the application's action ([`crate::app`]) and
//! hands the result to [`crate::cli::output`].
//!
//! [`Ctx`] carries what every command needs: the effective settings, the connection
//! target and the output settings.

pub mod adopt;
pub mod backup;
pub mod check;
pub mod completions;
pub mod config;
pub mod current;
pub mod downgrade;
pub mod events;
pub mod history;
pub mod init;
pub mod lint;
pub mod manpages;
pub mod metrics;
pub mod provision;
pub mod revision;
pub mod stamp;
pub mod status;
pub mod tenant;
pub mod upgrade;

use crate::app::changes;
use crate::app::context::Context;
use crate::app::fleet;
use crate::cli::exit::Exit;
use crate::cli::output::Output;
use crate::cli::reporter;
use crate::cli::{BulkOpts, GlobalOpts, Selection};
use crate::config::Overrides;
use crate::engine::plan::SchemaChange;
use crate::engine::scheduler::{Events, RunOptions, RunReport};
use crate::error::Error;
use crate::pg::interrupt::Interrupt;
use crate::registry::Tenant;

/// What every command needs: the application's context and where output goes.
pub struct Ctx {
    /// The settings, servers and stop token every action takes.
    pub app: Context,
    /// Output settings.
    pub out: Output,
}

impl std::ops::Deref for Ctx {
    type Target = Context;
    fn deref(&self) -> &Context {
        &self.app
    }
}

impl Ctx {
    /// Loads the configuration and resolves the connection target; no connection yet.
    pub fn new(
        global: &GlobalOpts,
        concurrency: Option<usize>,
        interrupt: Interrupt,
    ) -> Result<Ctx, Error> {
        let out = Output::new(global.format(), global.quiet, global.verbose);
        Ok(Ctx {
            app: Context::new(&overrides(global, concurrency), interrupt)?,
            out,
        })
    }

    /// Run options from the bulk flags and the settings (see [`Context::run_options`]).
    pub fn run_options(&self, bulk: &BulkOpts) -> RunOptions {
        self.app
            .run_options(bulk.concurrency, bulk.max_failures(), bulk.canary)
    }
}

/// What the global flags (and `--concurrency`) override in the configuration.
pub fn overrides(global: &GlobalOpts, concurrency: Option<usize>) -> Overrides {
    Overrides {
        config: global.config.clone(),
        database_url: global.database_url.clone(),
        database_url_from_env: global.database_url_from_env,
        migrations: global.migrations.clone(),
        migrations_from_env: global.migrations_from_env,
        read_timeout: global.read_timeout.clone(),
        read_timeout_from_env: global.read_timeout_from_env,
        concurrency,
    }
}

/// The engine's selection from the selection flags.
pub fn selection(flags: &Selection) -> fleet::Selection {
    fleet::Selection {
        tenants: flags.tenants.clone(),
        all: flags.all,
        tenant_type: flags.tenant_type.clone(),
        status: flags.status,
        exclude: flags.exclude.clone(),
        shard: flags.shard,
        server: flags.server.clone(),
    }
}

/// Prints a dry run and returns its exit code: 0 when every tenant could go ahead, 1 or 4
/// (as a real run would) when some would refuse or fail. The SQL is streamed tenant by
/// tenant (in JSON too), never built for the whole fleet in memory.
pub fn print_dry_run(ctx: &Ctx, dry: &crate::engine::dryrun::DryRun<'_>) -> Exit {
    use crate::show::revision;
    let refused = dry.tenants.iter().filter(|t| t.error.is_some()).count();
    let shared_refused = dry.shared.iter().filter(|s| s.error.is_some()).count();
    if ctx.out.is_json() {
        ctx.out.json(dry);
    } else {
        ctx.out.stream(|w| {
            for s in &dry.shared {
                let head = format!(
                    "-- shared schema {} on server {}",
                    crate::ident::quote(&s.schema),
                    s.server
                );
                if let Some(e) = &s.error {
                    writeln!(w, "{head}: would fail: {e}\n")?;
                } else if s.sql.is_empty() {
                    writeln!(w, "{head}: nothing to do\n")?;
                } else {
                    writeln!(
                        w,
                        "{head}: {} -> {}\n{}",
                        revision(s.from_revision),
                        revision(s.to_revision),
                        s.sql
                    )?;
                }
            }
            if dry.tenants.is_empty() && !dry.shared.is_empty() {
                return writeln!(
                    w,
                    "-- dry run: nothing was changed ({}, {} would change, {} would fail)",
                    crate::show::count(dry.shared.len(), "server"),
                    dry.shared.iter().filter(|s| !s.sql.is_empty()).count(),
                    shared_refused
                );
            }
            for t in &dry.tenants {
                let head = format!(
                    "-- tenant {} (schema {})",
                    t.domain,
                    crate::ident::quote(&t.schema_name)
                );
                if let Some(e) = &t.error {
                    writeln!(w, "{head}: would fail: {e}\n")?;
                } else if let Some(why) = &t.skipped {
                    writeln!(w, "{head}: would be skipped: {why}\n")?;
                } else if t.sql.is_empty() {
                    writeln!(w, "{head}: nothing to do\n")?;
                } else {
                    let forgets = if t.forgotten.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (forgets {})",
                            t.forgotten
                                .iter()
                                .map(|v| format!("V{v}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    writeln!(
                        w,
                        "{head}: {} -> {}{forgets}\n{}",
                        revision(t.from_revision),
                        revision(t.to_revision),
                        t.sql
                    )?;
                }
            }
            writeln!(
                w,
                "-- dry run: nothing was changed ({}, {} would change, {} would fail)",
                crate::show::count(dry.tenants.len(), "tenant"),
                dry.tenants.iter().filter(|t| !t.sql.is_empty()).count(),
                refused
            )
        });
    }
    let total = dry.tenants.len() + dry.shared.len();
    match refused + shared_refused {
        0 => Exit::Ok,
        n if n == total => Exit::Failed,
        _ => Exit::Partial,
    }
}

/// A change of the shared schema (`upgrade`, `downgrade` or `stamp` with `--shared`) on
/// the servers `server` selects: its dry run; or, a downgrade and a stamp that forgets
/// versions asked about first (`yes` answers), run, and printed.
pub async fn shared_change(
    ctx: &Ctx,
    verb: &'static str,
    target: &str,
    server: Option<&str>,
    dry_run: bool,
    yes: bool,
    bulk: &BulkOpts,
) -> Result<Exit, Error> {
    let start = crate::app::shared::start(ctx, verb, target, server)?;
    if dry_run || verb != "upgrade" {
        let planned = start.dry_run(ctx).await?;
        if dry_run {
            let dry = crate::engine::dryrun::DryRun {
                dry_run: true,
                shared: planned,
                tenants: Vec::new(),
            };
            return Ok(print_dry_run(ctx, &dry));
        }
        let affected = |p: &&crate::engine::dryrun::PlannedShared<'_>| match verb {
            "stamp" => p.from_revision > p.to_revision,
            _ => !p.sql.is_empty(),
        };
        let servers: Vec<&str> = planned
            .iter()
            .filter(affected)
            .map(|p| p.server.as_str())
            .collect();
        // A refusal is the run's to report, before anything is asked.
        let refused = planned.iter().any(|p| p.error.is_some());
        if !servers.is_empty() && !refused {
            let what = match verb {
                "stamp" => format!(
                    "stamp --shared {target} forgets the shared schema's recorded versions above it (no down script runs)"
                ),
                _ => format!(
                    "downgrade --shared runs the shared schema's down scripts, which can destroy data every tenant uses, down to {target}"
                ),
            };
            crate::cli::confirm::confirm(
                &format!("{what}, on server(s) {}.", servers.join(", ")),
                yes,
            )?;
        }
    }
    let results = single(ctx, verb, async |events| start.run(ctx, events).await).await?;
    ctx.out.shared_results(&results);
    if let Some(path) = &bulk.metrics_textfile {
        crate::app::metrics::write(ctx, path).await?;
    }
    let failed = results
        .iter()
        .filter(|r| r.status == crate::engine::scheduler::ResultStatus::Failed)
        .count();
    Ok(match failed {
        0 => Exit::Ok,
        n if n == results.len() => Exit::Failed,
        _ => Exit::Partial,
    })
}

/// Shows a bulk run's progress on stderr while `run` goes (under the bulk flags' run
/// options), prints its report, writes the metrics text file when asked, and returns the
/// exit code.
pub async fn bulk_run(
    ctx: &Ctx,
    verb: &'static str,
    bulk: &BulkOpts,
    run: impl AsyncFnOnce(&RunOptions, &Events) -> Result<RunReport, Error>,
) -> Result<Exit, Error> {
    let opts = ctx.run_options(bulk);
    let (events, reporting) = reporter::start(&ctx.out, verb, reporter::Style::Bulk);
    let report = run(&opts, &events).await;
    drop(events);
    reporting.finish().await;
    let report = report?;
    ctx.out.run_report(verb, &report);
    if let Some(path) = &bulk.metrics_textfile {
        crate::app::metrics::write(ctx, path).await?;
    }
    Ok(crate::cli::exit::for_run(report.outcome()))
}

/// Runs an action on one tenant with its lock waits and the server's notices shown on
/// stderr as they come; returns when every one has been shown.
pub async fn single<T>(
    ctx: &Ctx,
    verb: &'static str,
    action: impl AsyncFnOnce(&Events) -> Result<T, Error>,
) -> Result<T, Error> {
    let (events, reporting) = reporter::start(&ctx.out, verb, reporter::Style::Single);
    let result = action(&events).await;
    drop(events);
    reporting.finish().await;
    result
}

/// A dry run or a run of `change` on a change begun (see [`changes::Started`]), as the
/// bulk flags say.
pub async fn change(
    ctx: &Ctx,
    mut started: changes::Started,
    change: SchemaChange,
    dry_run: bool,
    bulk: &BulkOpts,
) -> Result<Exit, Error> {
    if dry_run {
        let dry = started.dry_run(ctx, change).await?;
        return Ok(print_dry_run(ctx, &dry));
    }
    bulk_run(ctx, change.name(), bulk, async |opts, events| {
        started.run(ctx, change, None, opts, events).await
    })
    .await
}

/// Asks before a destructive change to these tenants (see [`Output::confirm`]).
pub fn confirm_tenants(_ctx: &Ctx, tenants: &[Tenant], what: &str, yes: bool) -> Result<(), Error> {
    if tenants.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = tenants.iter().map(|t| t.domain.as_str()).take(5).collect();
    let more = tenants.len().saturating_sub(names.len());
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    crate::cli::confirm::confirm(
        &format!(
            "{what} on {} ({}{more}).",
            crate::show::count(tenants.len(), "tenant"),
            names.join(", ")
        ),
        yes,
    )
}
