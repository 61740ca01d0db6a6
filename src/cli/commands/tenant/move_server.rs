//! `tenantctl tenant move --to SERVER`: copy a tenant to another server under a write
//! fence and switch the registry to it (see [`crate::data::moving`]).

use crate::cli::exit::Exit;
use crate::cli::reporter::{self, Style};
use crate::data::moving;
use crate::error::Result;
use crate::ident::quote;
use crate::registry::{Registry, Tenant};

use super::super::Ctx;
use crate::cli::tenant::MoveArgs as Args;

/// Moves the tenant (or with --dry-run says what the move would do).
pub async fn run(ctx: &Ctx, args: &Args, registry: &Registry<'_>, tenant: &Tenant) -> Result<Exit> {
    let to = args.to.as_deref().unwrap_or_default();
    ctx.servers.get(to)?;
    let set = ctx.migrations()?;
    let (events, reporting) = reporter::start(&ctx.out, "tenant move", Style::Single);
    let cx = ctx.one_tenant(&events);
    // The move's checks (a dry run's also tries the build on the target, rolled back).
    let plan = |dry_run| {
        moving::plan(
            &cx,
            registry,
            tenant,
            to,
            args.keep_source,
            args.online,
            &set,
            dry_run,
        )
    };
    if args.dry_run {
        let plan = plan(true).await;
        drop(events);
        reporting.finish().await;
        let mut plan = plan?;
        if plan.then_fails {
            return Err(crate::error::Error::failed(plan.message).into());
        }
        if args.online {
            plan.message = plan.message.replace(
                "under a write fence",
                "online, with logical replication (writes blocked only for the cutover)",
            );
        }
        ctx.out.outcome(&plan, &plan.message);
        return Ok(Exit::Ok);
    }
    if !args.keep_source {
        // Checked before asking, so a move that would be refused asks nothing.
        let plan = plan(false).await?;
        // Finishing or undoing an interrupted move was confirmed when it started.
        if plan.moves {
            crate::cli::confirm::confirm(
            &format!(
                "this moves tenant {} to server {to} and then DROPS its old copy, schema {} on server {} (pass --keep-source to keep it renamed).",
                tenant.domain,
                quote(&tenant.schema_name),
                tenant.server
            ),
            args.yes,
        )?;
        }
    }
    let moved = moving::move_to(
        &cx,
        registry,
        tenant,
        to,
        args.keep_source,
        args.online,
        &set,
    )
    .await;
    drop(events);
    reporting.finish().await;
    let moved = moved?;
    ctx.out.outcome(&moved, &moved.message);
    Ok(Exit::Ok)
}
