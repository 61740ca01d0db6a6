//! `tenantctl stamp`: record migrations up to TARGET as applied without running them, to
//! adopt schemas built by hand or by another tool.

use crate::cli::exit::Exit;
use crate::engine::plan::SchemaChange;
use crate::engine::target::{Forms, Target};
use crate::error::Result;

use super::Ctx;

pub use crate::cli::StampArgs as Args;

/// Stamps the selected tenants: records the files up to TARGET with the checksums an
/// upgrade would store, and forgets recorded versions above it. Runs nothing else.
/// Forgetting applied versions asks first (or needs `--yes`), like `downgrade`.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let start = ctx
        .start_change(&args.target, Forms::Version, "stamp", &args.selection)
        .await?;
    // Forms::Version admits nothing else.
    let Target::Version(target) = start.target else {
        return Err(crate::error::Error::usage(format!(
            "stamp takes a version, not {}",
            start.target
        ))
        .into());
    };
    let change = SchemaChange::Stamp(target);
    if args.dry_run {
        return Ok(start.dry_run(ctx, change).await?);
    }
    // Stamping forgets the versions above the target: ask about the tenants that have
    // some.
    // Tenants of a server that cannot be reached fail in the run; nothing to ask there.
    let table = &ctx.settings.history_table;
    let (states, _) =
        crate::app::fleet::observe_partial(&ctx.servers, &start.client, &start.tenants, table)
            .await?;
    let forgetting: Vec<crate::registry::Tenant> = start
        .tenants
        .iter()
        .filter(|t| {
            states
                .get(&t.schema_name)
                .and_then(|s| s.history.as_ref().ok())
                .is_some_and(|h| h.iter().any(|r| r.version > target))
        })
        .cloned()
        .collect();
    drop(states);
    let what = format!(
        "stamp {} forgets the recorded versions above it (their tables stay; no down script runs; see --dry-run),",
        Target::Version(target)
    );
    super::confirm_tenants(ctx, &forgetting, &what, args.yes)?;
    Ok(start.run(ctx, change, &args.bulk).await?)
}
