//! `tenantctl provision`: create missing tenant schemas.

use crate::cli::{BulkOpts, Selection};
use crate::error::{Exit, Result};
use crate::fleet::{self, Action, RunOptions, Unprovisioned};
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
    let env = fleet::Env {
        target: &ctx.target,
        settings: &ctx.settings,
        set: &set,
        registry_table: registry.table(),
    };
    let opts = RunOptions {
        concurrency: args
            .bulk
            .concurrency
            .map_or(ctx.settings.concurrency, usize::from),
        fail_fast: args.bulk.fail_fast,
        unprovisioned: Unprovisioned::Fail,
    };
    let progress = ctx.out.progress("provision");
    let report = fleet::run(
        &env,
        &client,
        tenants,
        Action::Provision,
        opts,
        progress.as_ref(),
    )
    .await;
    ctx.out.run_report(&report);
    Ok(report.exit())
}
