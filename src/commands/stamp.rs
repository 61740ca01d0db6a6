//! `tenantctl stamp`: record migrations up to TARGET as applied without running them, to
//! adopt schemas built by hand or by another tool.

use crate::cli::{BulkOpts, Selection};
use crate::error::{Exit, Result};
use crate::fleet::{Action, Planned};
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
    let unprovisioned = super::unprovisioned_policy(&args.selection);
    let planned = tenants.into_iter().map(Planned::Work).collect();
    let action = Action::Stamp(target);
    Ok(super::run_fleet(
        ctx,
        &client,
        &registry,
        &set,
        planned,
        action,
        &args.bulk,
        unprovisioned,
    )
    .await?)
}
