//! `tenantctl upgrade`: apply pending migrations to one, several or all tenants.

use crate::dryrun;
use crate::error::{Exit, Result};
use crate::fleet::{self, Action};
use crate::registry::Registry;

use super::{select, Ctx};

pub use crate::cli::UpgradeArgs as Args;

/// Upgrades the selected tenants. Only tenants that need work get a session; tenants
/// whose schema does not exist yet are skipped when selected by a filter and fail when
/// named.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let set = ctx.migrations()?;
    let target = set.resolve_target(&args.target)?;
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenants = select(&registry, &args.selection).await?;
    let unprovisioned = super::unprovisioned_policy(&args.selection);
    let states = super::observe(ctx, &client, &tenants).await?;
    if args.dry_run {
        let dry = dryrun::plan(
            &tenants,
            &states,
            &set,
            &ctx.settings,
            dryrun::Plan::Upgrade(target),
            unprovisioned,
        );
        return Ok(super::print_dry_run(ctx, &dry));
    }
    let planned = fleet::plan_upgrade(tenants, &states, &set, target, unprovisioned);
    super::sync_observed(&registry, &states, &planned).await;
    drop(states);
    let action = Action::Upgrade(target);
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
