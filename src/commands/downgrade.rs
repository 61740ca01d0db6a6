//! `tenantctl downgrade`: run down scripts, newest first, until TARGET.

use crate::dryrun;
use crate::error::Result;
use crate::exit::Exit;
use crate::operation::Change;
use crate::plan::SchemaChange;
use crate::registry::Registry;
use crate::scheduler::Planned;

use super::{select, Ctx};

pub use crate::cli::DowngradeArgs as Args;

/// Downgrades the selected tenants. Each down script runs in a transaction with the
/// removal of its history row; a tenant whose needed down script is missing is refused
/// before anything runs.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let set = ctx.migrations()?;
    let target = set.resolve_target(&args.target)?;
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenants = select(&registry, &args.selection).await?;
    let unprovisioned = super::selection(&args.selection).unprovisioned();
    if args.dry_run {
        let states = super::observe(ctx, &client, &tenants).await?;
        let dry = dryrun::plan(
            &tenants,
            &states,
            &set,
            &ctx.settings,
            SchemaChange::Downgrade(target),
            unprovisioned,
        );
        return Ok(super::print_dry_run(ctx, &dry));
    }
    let what = format!(
        "downgrade runs down scripts, which can destroy data, down to {},",
        crate::output::revision(Some(target).filter(|t| *t > 0))
    );
    super::confirm_tenants(ctx, &tenants, &what, args.yes)?;
    let planned = tenants.into_iter().map(Planned::Work).collect();
    let op = Change {
        change: SchemaChange::Downgrade(target),
        set: &set,
        unprovisioned,
    };
    Ok(super::run_fleet(ctx, &client, &registry, planned, &op, &args.bulk).await?)
}
