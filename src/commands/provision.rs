//! `tenantctl provision`: create missing tenant schemas.

use crate::cli::{BulkOpts, Selection};
use crate::error::{Exit, Result};
use crate::fleet::{self, Action, Planned, Unprovisioned};
use crate::migrations::MigrationSet;
use crate::registry::Registry;

use super::{select, Ctx};

/// Arguments of `provision`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub selection: Selection,

    #[command(flatten)]
    pub bulk: BulkOpts,
}

/// Creates the schemas that are missing; existing ones are reported as up to date.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenants = select(&registry, &args.selection).await?;
    let set = MigrationSet {
        dir: ctx.settings.migrations_dir.clone(),
        files: Vec::new(),
    };
    let run_id = fleet::new_run_id()?;
    let host = fleet::client_host();
    let env = fleet::Env {
        target: &ctx.target,
        settings: &ctx.settings,
        set: &set,
        tables: registry.tables(),
        run_id: &run_id,
        client_host: &host,
    };
    let opts = ctx.run_options(&args.bulk, Unprovisioned::Fail);
    let progress = ctx.out.progress("provision");
    let planned = tenants.into_iter().map(Planned::Work).collect();
    let report = fleet::run(
        &env,
        &client,
        planned,
        Action::Provision,
        &opts,
        progress.as_ref(),
    )
    .await;
    ctx.out.run_report(&report);
    Ok(report.exit())
}
