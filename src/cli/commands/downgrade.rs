//! `tenantctl downgrade`: run down scripts, newest first, until TARGET.

use crate::app::changes;
use crate::cli::exit::Exit;
use crate::engine::plan::SchemaChange;
use crate::engine::target::{Forms, Target};
use crate::error::Result;

use super::Ctx;

pub use crate::cli::DowngradeArgs as Args;

/// Downgrades the selected tenants to TARGET (a version, or `-N` below each tenant's own
/// revision). Each down script runs in a transaction with the
/// removal of its history row; a tenant whose needed down script is missing is refused
/// before anything runs.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    if args.shared {
        let server = args.selection.server.as_deref();
        return Ok(super::shared_change(
            ctx,
            "downgrade",
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
        changes::start(ctx, &args.target, Forms::Down, "downgrade", &selection).await?;
    let change = SchemaChange::Downgrade(target);
    if args.dry_run {
        return Ok(super::change(ctx, start, change, true, &args.bulk).await?);
    }
    let what = match target {
        Target::Down(n) => format!(
            "downgrade runs down scripts, which can destroy data: the last {} applied to each tenant,",
            if n == 1 { "one".to_string() } else { n.to_string() }
        ),
        _ => format!("downgrade runs down scripts, which can destroy data, down to {target},"),
    };
    super::confirm_tenants(ctx, &start.tenants, &what, args.yes)?;
    Ok(super::change(ctx, start, change, false, &args.bulk).await?)
}
