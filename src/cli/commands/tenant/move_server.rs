//! `tenantctl tenant move --to SERVER`: copy a tenant to another server under a write
//! fence (or online) and switch the registry to it (see [`crate::app::moves`]).

use crate::app::moves::{Destination, MoveStart};
use crate::cli::exit::Exit;
use crate::error::{Error, Result};
use crate::ident::quote;

use super::super::Ctx;
use crate::cli::tenant::MoveArgs as Args;

/// Moves the tenant (or with --dry-run says what the move would do).
pub async fn run(ctx: &Ctx, args: &Args, start: &MoveStart) -> Result<Exit> {
    let how = Destination {
        to: args.to.clone().unwrap_or_default(),
        keep_source: args.keep_source,
        online: args.online,
    };
    let tenant = &start.tenant;
    if args.dry_run {
        let plan = super::super::single(ctx, "tenant move", async |events| {
            start.plan(ctx, events, &how, true).await
        })
        .await?;
        if plan.then_fails {
            return Err(Error::failed(plan.message).into());
        }
        ctx.out.outcome(&plan, &plan.message);
        return Ok(Exit::Ok);
    }
    let moved = super::super::single(ctx, "tenant move", async |events| {
        if !args.keep_source {
            // Checked before asking, so a move that would be refused asks nothing.
            let plan = start.plan(ctx, events, &how, false).await?;
            // Finishing or undoing an interrupted move was confirmed when it started.
            if plan.moves {
                crate::cli::confirm::confirm(
                    &format!(
                        "this moves tenant {} to server {} and then DROPS its old copy, schema {} on server {} (pass --keep-source to keep it renamed).",
                        tenant.domain,
                        how.to,
                        quote(&tenant.schema_name),
                        tenant.server
                    ),
                    args.yes,
                )?;
            }
        }
        start.to_server(ctx, events, &how).await
    })
    .await?;
    ctx.out.outcome(&moved, &moved.message);
    Ok(Exit::Ok)
}
