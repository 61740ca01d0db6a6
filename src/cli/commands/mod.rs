//! The command layer: one module per command, each with a `run` that takes its `Args`
//! (defined in [`crate::cli`]), calls the engine and hands the result to [`crate::cli::output`].
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
pub mod metrics;
pub mod provision;
pub mod revision;
pub mod stamp;
pub mod status;
pub mod tenant;
pub mod upgrade;

use std::collections::HashMap;

use crate::pg::db::Client;

use crate::app::context::Context;
use crate::app::fleet::{self, Fleet};
use crate::cli::exit::Exit;
use crate::cli::output::Output;
use crate::cli::reporter;
use crate::cli::{BulkOpts, GlobalOpts, Selection};
use crate::config::Overrides;
use crate::engine::operation::Operation;
use crate::engine::plan::SchemaChange;
use crate::engine::scheduler::{Planned, RunOptions};
use crate::engine::target::{Forms, Target};
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::pg::interrupt::Interrupt;
use crate::registry::state;
use crate::registry::{Registry, Tenant};

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
        let overrides = Overrides {
            config: global.config.clone(),
            database_url: global.database_url.clone(),
            database_url_from_env: global.database_url_from_env,
            migrations: global.migrations.clone(),
            migrations_from_env: global.migrations_from_env,
            read_timeout: global.read_timeout.clone(),
            read_timeout_from_env: global.read_timeout_from_env,
            concurrency,
        };
        Ok(Ctx {
            app: Context::new(&overrides, interrupt)?,
            out,
        })
    }

    /// Run options from the bulk flags and the settings (see [`Context::run_options`]).
    pub fn run_options(&self, bulk: &BulkOpts) -> RunOptions {
        self.app
            .run_options(bulk.concurrency, bulk.max_failures(), bulk.canary)
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

/// The tenants the selection flags name (see [`fleet::select`]); `--server` must name a
/// configured server.
pub async fn select(
    ctx: &Ctx,
    registry: &Registry<'_>,
    flags: &Selection,
) -> Result<Vec<Tenant>, Error> {
    if let Some(server) = &flags.server {
        ctx.servers.get(server)?;
    }
    fleet::select(registry, &selection(flags)).await
}

/// What `upgrade`, `downgrade` and `stamp` start from: the migration files, the target
/// they name, the command's connection, and the selected tenants.
pub struct ChangeStart {
    /// The migration files.
    pub set: MigrationSet,
    /// The target: a version, or one relative to each tenant's revision.
    pub target: Target,
    /// The command's connection.
    pub client: Client,
    /// The selected tenants.
    pub tenants: Vec<Tenant>,
    /// What to do with selected tenants that have no schema.
    pub unprovisioned: crate::engine::operation::Unprovisioned,
}

impl Ctx {
    /// Loads the files, parses `target` against them as `command` takes it (`forms`),
    /// connects, and selects the tenants: in that order, so a broken directory or a bad
    /// target is refused before any connection.
    pub async fn start_change(
        &self,
        target: &str,
        forms: Forms,
        command: &str,
        flags: &Selection,
    ) -> Result<ChangeStart, Error> {
        let set = self.migrations()?;
        let target = crate::engine::target::parse(target, &set, forms, command)?;
        let client = self.connect().await?;
        let registry = Registry::open(&client, &self.settings.registry_schema).await?;
        let tenants = select(self, &registry, flags).await?;
        drop(registry);
        Ok(ChangeStart {
            set,
            target,
            client,
            tenants,
            unprovisioned: selection(flags).unprovisioned(),
        })
    }
}

impl ChangeStart {
    /// A dry run of `change` on the selected tenants: observes them, plans each, prints
    /// the SQL.
    pub async fn dry_run(&self, ctx: &Ctx, change: SchemaChange) -> Result<Exit, Error> {
        let table = &ctx.settings.history_table;
        let (states, unreachable) =
            fleet::observe_partial(&ctx.servers, &self.client, &self.tenants, table).await?;
        let dry = crate::engine::dryrun::plan(
            &self.tenants,
            &states,
            &unreachable,
            &self.set,
            &ctx.settings,
            change,
            self.unprovisioned,
        );
        Ok(print_dry_run(ctx, &dry))
    }

    /// Runs `change` on the selected tenants as one bulk run and prints its report. An
    /// upgrade answers the tenants already at the target from one observation, without
    /// a session.
    pub async fn run(
        self,
        ctx: &Ctx,
        change: SchemaChange,
        bulk: &BulkOpts,
    ) -> Result<Exit, Error> {
        let registry = Registry::open(&self.client, &ctx.settings.registry_schema).await?;
        let planned = match change {
            SchemaChange::Upgrade { target, .. } => {
                fleet::plan_upgrade(
                    &ctx.servers,
                    &self.client,
                    &registry,
                    self.tenants,
                    &self.set,
                    target,
                    self.unprovisioned,
                    &ctx.settings.history_table,
                )
                .await?
            }
            _ => self.tenants.into_iter().map(Planned::Work).collect(),
        };
        let op = crate::engine::operation::Change {
            change,
            set: &self.set,
            unprovisioned: self.unprovisioned,
        };
        run_fleet(ctx, &self.client, &registry, planned, &op, bulk).await
    }
}

/// Prints a dry run and returns its exit code: 0 when every tenant could go ahead, 1 or 4
/// (as a real run would) when some would refuse or fail. The SQL is streamed tenant by
/// tenant (in JSON too), never built for the whole fleet in memory.
pub fn print_dry_run(ctx: &Ctx, dry: &crate::engine::dryrun::DryRun<'_>) -> Exit {
    use crate::show::revision;
    let refused = dry.tenants.iter().filter(|t| t.error.is_some()).count();
    if ctx.out.is_json() {
        ctx.out.json(dry);
    } else {
        ctx.out.stream(|w| {
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
                "-- dry run: nothing was changed ({} tenants, {} would change, {} would fail)",
                dry.tenants.len(),
                dry.tenants.iter().filter(|t| !t.sql.is_empty()).count(),
                refused
            )
        });
    }
    match refused {
        0 => Exit::Ok,
        n if n == dry.tenants.len() => Exit::Failed,
        _ => Exit::Partial,
    }
}

/// Observes many tenants' schemas, keyed by schema name (see [`fleet::observe`]).
pub async fn observe(
    ctx: &Ctx,
    client: &Client,
    tenants: &[Tenant],
) -> Result<HashMap<String, state::SchemaState>, Error> {
    fleet::observe(&ctx.servers, client, tenants, &ctx.settings.history_table).await
}

/// Runs `op` over the planned tenants with the bulk options (a new run id, progress on
/// stderr), prints the report, and returns its exit code.
pub async fn run_fleet(
    ctx: &Ctx,
    client: &Client,
    registry: &Registry<'_>,
    planned: Vec<Planned>,
    op: &impl Operation,
    bulk: &BulkOpts,
) -> Result<Exit, Error> {
    let fleet = Fleet {
        target: &ctx.target,
        servers: &ctx.servers,
        settings: &ctx.settings,
        client,
        registry,
        interrupt: &ctx.interrupt,
    };
    let opts = ctx.run_options(bulk);
    let (events, reporting) = reporter::start(&ctx.out, op.name(), reporter::Style::Bulk);
    let report = fleet.run(op, planned, &opts, &events).await;
    drop(events);
    reporting.finish().await;
    let report = report?;
    ctx.out.run_report(&report);
    if let Some(path) = &bulk.metrics_textfile {
        metrics::write(ctx, client, registry, path).await?;
    }
    Ok(crate::cli::exit::for_run(report.outcome()))
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
            "{what} on {} tenant(s) ({}{more}).",
            tenants.len(),
            names.join(", ")
        ),
        yes,
    )
}
