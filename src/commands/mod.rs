//! The command layer: one module per command, each with a `run` that takes its `Args`
//! (defined in [`crate::cli`]), calls the engine and hands the result to [`crate::output`].
//!
//! [`Ctx`] carries what every command needs: the effective settings, the connection
//! target and the output settings.

pub mod check;
pub mod completions;
pub mod config;
pub mod current;
pub mod downgrade;
pub mod events;
pub mod history;
pub mod init;
pub mod provision;
pub mod revision;
pub mod stamp;
pub mod status;
pub mod tenant;
pub mod upgrade;

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::cli::{BulkOpts, GlobalOpts, Selection};
use crate::config::{Overrides, Settings};
use crate::db;
use crate::error::Error;
use crate::fleet::{RunOptions, Unprovisioned};
use crate::inspect::{self, TenantStatus};
use crate::interrupt::Interrupt;
use crate::migrations::MigrationSet;
use crate::output::Output;
use crate::registry::{Registry, Tenant};
use crate::state;

/// What every command needs.
pub struct Ctx {
    /// Effective settings.
    pub settings: Settings,
    /// Where to connect.
    pub target: db::Target,
    /// Output settings.
    pub out: Output,
    /// Set by Ctrl-C or SIGTERM.
    pub interrupt: Interrupt,
    /// Whether the first connection has been checked for a transaction-pooling proxy.
    pooling_checked: std::sync::atomic::AtomicBool,
}

fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

impl Ctx {
    /// Loads the configuration and resolves the connection target; no connection yet.
    pub fn new(
        global: &GlobalOpts,
        concurrency: Option<usize>,
        interrupt: Interrupt,
    ) -> Result<Ctx, Error> {
        let out = Output::new(global.format(), global.quiet, global.verbose);
        let cwd = std::env::current_dir()
            .map_err(|e| Error::setup(format!("cannot read the current directory: {e}")))?;
        let overrides = Overrides {
            config: global.config.clone(),
            database_url: global.database_url.clone(),
            database_url_from_env: global.database_url_from_env,
            migrations: global.migrations.clone(),
            migrations_from_env: global.migrations_from_env,
            concurrency,
        };
        let settings = crate::config::load(&overrides, &env_var, &cwd)?;
        let target = db::Target::resolve(&settings, &env_var)?;
        Ok(Ctx {
            settings,
            target,
            out,
            interrupt,
            pooling_checked: Default::default(),
        })
    }

    /// Opens a connection for the command's own queries. The command's first connection
    /// is checked for a transaction-pooling proxy (see
    /// [`db::refuse_transaction_pooling`]) before anything else runs on it.
    pub async fn connect(&self) -> Result<Client, Error> {
        let client = self.target.connect().await?;
        if !self
            .pooling_checked
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            db::refuse_transaction_pooling(&self.target, &client).await?;
        }
        Ok(client)
    }

    /// Loads and validates the migrations directory.
    pub fn migrations(&self) -> Result<MigrationSet, Error> {
        MigrationSet::load(&self.settings.migrations_dir)
    }
}

/// The tenants a selection names, in the order named (by id for filters), after
/// `--exclude` and `--shard`. An unknown name, included or excluded, is an error.
pub async fn select(registry: &Registry<'_>, selection: &Selection) -> Result<Vec<Tenant>, Error> {
    if !selection.selects() {
        return Err(Error::usage(
            "name the tenants with --tenant <TENANT> (repeatable), or select them with --all, --type or --status",
        ));
    }
    if let Some(t) = &selection.tenant_type {
        crate::ident::validate_tenant_type(t)?;
    }
    let mut tenants = if selection.tenants.is_empty() {
        registry
            .list(selection.tenant_type.as_deref(), selection.status)
            .await?
    } else {
        let named = registry.find_many(&selection.tenants).await?;
        named
            .into_iter()
            .filter(|t| {
                selection
                    .tenant_type
                    .as_ref()
                    .is_none_or(|ty| &t.tenant_type == ty)
            })
            .filter(|t| selection.status.is_none_or(|st| t.status == st))
            .collect()
    };
    if !selection.exclude.is_empty() {
        let excluded: Vec<i64> = registry
            .find_many(&selection.exclude)
            .await?
            .iter()
            .map(|t| t.id)
            .collect();
        tenants.retain(|t| !excluded.contains(&t.id));
    }
    if let Some((i, n)) = selection.shard {
        tenants.retain(|t| crate::fleet::in_shard(&t.schema_name, i, n));
    }
    Ok(tenants)
}

impl Ctx {
    /// Run options from the bulk flags and the settings.
    pub fn run_options(&self, bulk: &BulkOpts, unprovisioned: Unprovisioned) -> RunOptions {
        RunOptions {
            concurrency: bulk
                .concurrency
                .map_or(self.settings.concurrency, usize::from),
            max_failures: bulk.max_failures(),
            canary: bulk.canary.map_or(0, |c| c as usize),
            unprovisioned,
        }
    }
}

/// Observes the tenants' schemas in a few round trips, refreshes the registry's cached
/// columns where they were stale, and returns each tenant's status in input order.
pub async fn statuses(
    ctx: &Ctx,
    client: &Client,
    registry: &Registry<'_>,
    tenants: &mut [Tenant],
    set: &MigrationSet,
) -> Result<Vec<TenantStatus>, Error> {
    let mut states: HashMap<String, state::SchemaState> = observe(ctx, client, tenants).await?;
    let mut out = Vec::with_capacity(tenants.len());
    for t in tenants.iter_mut() {
        let st = states
            .remove(&t.schema_name)
            .expect("observed every schema");
        let status = inspect::tenant_status(t, &st, set);
        t.schema_provisioned = status.schema_provisioned;
        // An unreadable history says nothing about the revision: keep the cached one.
        if status.history_error.is_none() {
            t.current_revision = status.current_revision;
            t.migrations_applied = status.migrations_applied;
        }
        out.push(status);
    }
    let observed: Vec<(i64, crate::registry::Observed)> = out
        .iter()
        .filter(|s| s.history_error.is_none())
        .map(|s| (s.tenant_id, inspect::observed(s)))
        .collect();
    // Read-only users cannot refresh the cache; the status itself is still right.
    let _ = registry.sync(&observed).await;
    Ok(out)
}

/// Refreshes the registry's cached columns for tenants answered without a session.
pub async fn sync_observed(
    registry: &Registry<'_>,
    states: &HashMap<String, state::SchemaState>,
    planned: &[crate::fleet::Planned],
) {
    let observed: Vec<(i64, crate::registry::Observed)> = planned
        .iter()
        .filter_map(|p| match p {
            crate::fleet::Planned::Done(r) => r.tenant.as_ref().map(|t| (t.id, &t.schema_name)),
            crate::fleet::Planned::Work(_) => None,
        })
        .filter_map(|(id, schema)| {
            states
                .get(schema)
                .filter(|s| s.history.is_ok())
                .map(|s| (id, crate::runner::observed(s)))
        })
        .collect();
    if !observed.is_empty() {
        let _ = registry.sync(&observed).await;
    }
}

/// Prints a dry run and returns its exit code: 0 when every tenant could go ahead, 1 or 4
/// (as a real run would) when some would refuse or fail. The SQL is streamed tenant by
/// tenant (in JSON too), never built for the whole fleet in memory.
pub fn print_dry_run(ctx: &Ctx, dry: &crate::dryrun::DryRun<'_>) -> crate::error::Exit {
    use crate::error::Exit;
    use crate::output::revision;
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

/// Observes many tenants' schemas (keyed by schema name). Beyond one batch, up to three more connections read
/// history batches concurrently (see [`state::observe_with`]); if they cannot be opened,
/// the reads go through `client` alone.
pub async fn observe(
    ctx: &Ctx,
    client: &Client,
    tenants: &[Tenant],
) -> Result<HashMap<String, state::SchemaState>, Error> {
    let schemas: Vec<String> = tenants.iter().map(|t| t.schema_name.clone()).collect();
    let batches = schemas.len().div_ceil(state::BATCH);
    let extra = batches.saturating_sub(1).min(3);
    let opened = futures::future::join_all((0..extra).map(|_| ctx.connect())).await;
    let extra: Vec<Client> = opened.into_iter().filter_map(Result::ok).collect();
    let mut clients: Vec<&Client> = vec![client];
    clients.extend(extra.iter());
    state::observe_with(&clients, &schemas, &ctx.settings.history_table).await
}

/// How a bulk command treats tenants without a schema: named ones fail, ones swept up
/// by a filter (`--all`, `--type`, `--status`) are skipped.
pub fn unprovisioned_policy(selection: &Selection) -> Unprovisioned {
    if selection.tenants.is_empty() {
        Unprovisioned::Skip
    } else {
        Unprovisioned::Fail
    }
}

/// Runs `action` over the planned tenants with the bulk options (a new run id, progress
/// on stderr), prints the report, and returns its exit code.
#[allow(clippy::too_many_arguments)]
pub async fn run_fleet(
    ctx: &Ctx,
    client: &Client,
    registry: &Registry<'_>,
    set: &MigrationSet,
    planned: Vec<crate::fleet::Planned>,
    action: crate::fleet::Action,
    bulk: &BulkOpts,
    unprovisioned: Unprovisioned,
) -> Result<crate::error::Exit, Error> {
    let run_id = crate::fleet::new_run_id()?;
    let host = crate::fleet::client_host();
    ctx.interrupt.set_run_id(&run_id);
    let target = ctx.target.named_for_run(&run_id);
    let env = crate::fleet::Env {
        target: &target,
        settings: &ctx.settings,
        set,
        tables: registry.tables(),
        run_id: &run_id,
        client_host: &host,
        interrupt: &ctx.interrupt,
    };
    let opts = ctx.run_options(bulk, unprovisioned);
    let progress = ctx.out.progress(action.name());
    let main =
        crate::registry_conn::RegistryConn::new(&ctx.target, ctx.settings.connect_timeout, client);
    let report = crate::fleet::run(&env, &main, planned, action, &opts, progress.as_ref()).await;
    ctx.out.run_report(&report);
    Ok(report.exit())
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
