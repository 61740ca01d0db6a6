//! `tenantctl stamp`: record migrations up to TARGET as applied without running them, to
//! adopt schemas built by hand or by another tool.

use crate::dryrun;
use crate::error::Result;
use crate::exit::Exit;
use crate::operation::Change;
use crate::plan::SchemaChange;
use crate::registry::Registry;
use crate::scheduler::Planned;

use super::{select, Ctx};

pub use crate::cli::StampArgs as Args;

/// Stamps the selected tenants: records the files up to TARGET with the checksums an
/// upgrade would store, and forgets recorded versions above it. Runs nothing else.
/// Forgetting applied versions asks first (or needs `--yes`), like `downgrade`.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let set = ctx.migrations()?;
    let target = set.resolve_target(&args.target)?;
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenants = select(&registry, &args.selection).await?;
    let unprovisioned = super::selection(&args.selection).unprovisioned();
    let states = super::observe(ctx, &client, &tenants).await?;
    let dry = dryrun::plan(
        &tenants,
        &states,
        &set,
        &ctx.settings,
        SchemaChange::Stamp(target),
        unprovisioned,
    );
    if args.dry_run {
        return Ok(super::print_dry_run(ctx, &dry));
    }
    let forgetting: Vec<crate::registry::Tenant> = tenants
        .iter()
        .zip(&dry.tenants)
        .filter(|(_, p)| !p.forgotten.is_empty())
        .map(|(t, _)| t.clone())
        .collect();
    drop(dry);
    drop(states);
    let what = format!(
        "stamp {} forgets the recorded versions above it (their tables stay; no down script runs; see --dry-run),",
        crate::output::revision(Some(target).filter(|t| *t > 0))
    );
    super::confirm_tenants(ctx, &forgetting, &what, args.yes)?;
    let planned = tenants.into_iter().map(Planned::Work).collect();
    let op = Change {
        change: SchemaChange::Stamp(target),
        set: &set,
        unprovisioned,
    };
    Ok(super::run_fleet(ctx, &client, &registry, planned, &op, &args.bulk).await?)
}
