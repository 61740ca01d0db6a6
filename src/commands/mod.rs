//! The command layer: one module per command, each with its clap `Args` and a `run` that
//! calls the engine and hands the result to [`crate::output`].
//!
//! [`Ctx`] carries what every command needs: the effective settings, the connection
//! target and the output settings.

pub mod current;
pub mod history;
pub mod init;
pub mod provision;
pub mod status;
pub mod tenant;
pub mod upgrade;

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::cli::{GlobalOpts, Selection};
use crate::config::{self, Overrides, Settings};
use crate::db;
use crate::error::Error;
use crate::inspect::{self, TenantStatus};
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
}

fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

impl Ctx {
    /// Loads the configuration and resolves the connection target; no connection yet.
    pub fn new(global: &GlobalOpts, concurrency: Option<usize>) -> Result<Ctx, Error> {
        let out = Output::new(global.format(), global.quiet, global.verbose);
        let cwd = std::env::current_dir()
            .map_err(|e| Error::setup(format!("cannot read the current directory: {e}")))?;
        let overrides = Overrides {
            config: global.config.clone(),
            database_url: global.database_url.clone(),
            migrations: global.migrations.clone(),
            concurrency,
        };
        let settings = config::load(&overrides, &env_var, &cwd)?;
        let target = db::Target::resolve(&settings, &env_var)?;
        Ok(Ctx {
            settings,
            target,
            out,
        })
    }

    /// Opens a connection for the command's own queries.
    pub async fn connect(&self) -> Result<Client, Error> {
        self.target.connect().await
    }

    /// Loads and validates the migrations directory.
    pub fn migrations(&self) -> Result<MigrationSet, Error> {
        MigrationSet::load(&self.settings.migrations_dir)
    }
}

/// The tenants a bulk command works on, in the order named (or by id for `--all`).
pub async fn select(registry: &Registry<'_>, selection: &Selection) -> Result<Vec<Tenant>, Error> {
    crate::fleet::require_selection(selection.all, &selection.tenants)?;
    if selection.all {
        registry.list(None, None).await
    } else {
        registry.find_many(&selection.tenants).await
    }
}

/// Observes the tenants' schemas in a few round trips, refreshes the registry's cached
/// columns where they were stale, and returns each tenant's status in input order.
pub async fn statuses(
    client: &Client,
    registry: &Registry<'_>,
    settings: &Settings,
    tenants: &mut [Tenant],
    set: &MigrationSet,
) -> Result<Vec<TenantStatus>, Error> {
    let schemas: Vec<String> = tenants.iter().map(|t| t.schema_name.clone()).collect();
    let mut states: HashMap<String, state::SchemaState> =
        state::observe(client, &schemas, &settings.history_table).await?;
    let mut out = Vec::with_capacity(tenants.len());
    for t in tenants.iter_mut() {
        let st = states
            .remove(&t.schema_name)
            .expect("observed every schema");
        let status = inspect::tenant_status(t, &st, set);
        t.schema_provisioned = status.schema_provisioned;
        t.current_revision = status.current_revision;
        t.migrations_applied = status.migrations_applied;
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
