//! `tenantctl upgrade`: apply pending migrations to one, several or all tenants.

use crate::app::changes;
use crate::cli::exit::Exit;
use crate::engine::plan::SchemaChange;
use crate::engine::target::Forms;
use crate::error::Result;

use super::Ctx;

pub use crate::cli::UpgradeArgs as Args;

/// Upgrades the selected tenants to TARGET (a version, or `+N` above each tenant's own
/// revision). Only tenants that need work get a session; tenants whose schema does not
/// exist yet, or that the target does not fit (above it, or too few migrations above
/// them for `+N`), are skipped when selected by a filter and fail when named.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    if args.shared {
        let server = args.selection.server.as_deref();
        return Ok(super::shared_change(
            ctx,
            "upgrade",
            &args.target,
            server,
            args.dry_run,
            false,
            &args.bulk,
        )
        .await?);
    }
    let selection = super::selection(&args.selection);
    let (start, target) =
        changes::start(ctx, &args.target, Forms::Up, "upgrade", &selection).await?;
    let change = SchemaChange::Upgrade {
        target,
        provision: false,
    };
    Ok(super::change(ctx, start, change, args.dry_run, &args.bulk).await?)
}
