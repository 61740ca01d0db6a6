//! `tenantctl stamp`: record migrations up to TARGET as applied without running them, to
//! adopt schemas built by hand or by another tool.

use crate::cli::{BulkOpts, Selection};
use crate::error::{Exit, Result};
use crate::fleet::{self, Action, Planned, Unprovisioned};
use crate::registry::Registry;

use super::{select, Ctx};

/// Arguments of `stamp`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub selection: Selection,

    /// Revision to record: a version number, head, or base (forget everything).
    #[arg(value_name = "TARGET")]
    pub target: String,

    #[command(flatten)]
    pub bulk: BulkOpts,
}

/// Stamps the selected tenants: records the files up to TARGET with the checksums an
/// upgrade would store, and forgets recorded versions above it. Runs nothing else.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let set = ctx.migrations()?;
    let target = set.resolve_target(&args.target)?;
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenants = select(&registry, &args.selection).await?;
    let unprovisioned = if args.selection.tenants.is_empty() {
        Unprovisioned::Skip
    } else {
        Unprovisioned::Fail
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
    let opts = ctx.run_options(&args.bulk, unprovisioned);
    let progress = ctx.out.progress("stamp");
    let planned = tenants.into_iter().map(Planned::Work).collect();
    let report = fleet::run(
        &env,
        &client,
        planned,
        Action::Stamp(target),
        &opts,
        progress.as_ref(),
    )
    .await;
    ctx.out.run_report(&report);
    Ok(report.exit())
}
