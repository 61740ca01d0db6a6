//! `tenantctl stamp`: record migrations up to TARGET as applied without running them, to
//! adopt schemas built by hand or by another tool.

use crate::app::changes;
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
    if args.shared {
        let server = args.selection.server.as_deref();
        return Ok(super::shared_change(
            ctx,
            "stamp",
            &args.target,
            server,
            args.dry_run,
            args.yes,
            &args.bulk,
        )
        .await?);
    }
    let selection = super::selection(&args.selection);
    let (start, target) =
        changes::start(ctx, &args.target, Forms::Version, "stamp", &selection).await?;
    // Forms::Version admits nothing else.
    let Target::Version(target) = target else {
        return Err(
            crate::error::Error::usage(format!("stamp takes a version, not {target}")).into(),
        );
    };
    let change = SchemaChange::Stamp(target);
    if args.dry_run {
        return Ok(super::change(ctx, start, change, true, &args.bulk).await?);
    }
    // Stamping forgets the versions above the target: ask about the tenants that have
    // some.
    let forgetting = start.recording_above(ctx, target).await?;
    let what = format!(
        "stamp {} forgets the recorded versions above it (their tables stay; no down script runs; see --dry-run),",
        Target::Version(target)
    );
    super::confirm_tenants(ctx, &forgetting, &what, args.yes)?;
    Ok(super::change(ctx, start, change, false, &args.bulk).await?)
}
