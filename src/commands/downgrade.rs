//! `tenantctl downgrade`: run down scripts, newest first, until TARGET.

use crate::dryrun;
use crate::error::{Exit, Result};
use crate::fleet::{Action, Planned};
use crate::registry::Registry;

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
    let unprovisioned = super::unprovisioned_policy(&args.selection);
    if args.dry_run {
        let states = super::observe(ctx, &client, &tenants).await?;
        let dry = dryrun::plan(
            &tenants,
            &states,
            &set,
            &ctx.settings,
            dryrun::Plan::Downgrade(target),
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
    let action = Action::Downgrade(target);
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
