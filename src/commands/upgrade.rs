//! `tenantctl upgrade`: apply pending migrations to one, several or all tenants.

use crate::cli::{BulkOpts, Selection};
use crate::error::{Exit, Result};
use crate::fleet::{self, Action, RunOptions, Unprovisioned};
use crate::registry::Registry;

use super::{select, Ctx};

/// Arguments of `upgrade`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub selection: Selection,

    /// Revision to upgrade to: a version number, or head.
    #[arg(default_value = "head", value_name = "TARGET")]
    pub target: String,

    #[command(flatten)]
    pub bulk: BulkOpts,
}

/// Upgrades the selected tenants. With --all, tenants whose schema does not exist yet
/// are skipped; named ones fail.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let set = ctx.migrations()?;
    let target = set.resolve_target(&args.target)?;
    crate::fleet::require_selection(args.selection.all, &args.selection.tenants)?;
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenants = select(&registry, &args.selection).await?;
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
        unprovisioned: if args.selection.all {
            Unprovisioned::Skip
        } else {
            Unprovisioned::Fail
        },
    };
    let progress = ctx.out.progress("upgrade");
    let report = fleet::run(
        &env,
        &client,
        tenants,
        Action::Upgrade(target),
        opts,
        progress.as_ref(),
    )
    .await;
    ctx.out.run_report(&report);
    Ok(report.exit())
}
