//! `tenantctl upgrade`: apply pending migrations to one, several or all tenants.

use crate::dryrun;
use crate::error::Result;
use crate::exit::Exit;
use crate::fleet;
use crate::operation::Change;
use crate::plan::SchemaChange;
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
    let unprovisioned = super::selection(&args.selection).unprovisioned();
    if args.dry_run {
        let states = super::observe(ctx, &client, &tenants).await?;
        let change = SchemaChange::Upgrade {
            target,
            provision: false,
        };
        let dry = dryrun::plan(
            &tenants,
            &states,
            &set,
            &ctx.settings,
            change,
            unprovisioned,
        );
        return Ok(super::print_dry_run(ctx, &dry));
    }
    let table = &ctx.settings.history_table;
    let planned = fleet::plan_upgrade(
        &ctx.target,
        &client,
        &registry,
        tenants,
        &set,
        target,
        unprovisioned,
        table,
    )
    .await?;
    let op = Change {
        change: SchemaChange::Upgrade {
            target,
            provision: false,
        },
        set: &set,
        unprovisioned,
    };
    Ok(super::run_fleet(ctx, &client, &registry, planned, &op, &args.bulk).await?)
}
