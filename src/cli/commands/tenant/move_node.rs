//! `tenantctl tenant move`: with `--node HOST:PORT`, move a tenant's distributed schema to
//! another worker of its Citus cluster (see [`crate::app::citus::move_schema`]); with `--to`,
//! see [`super::move_server`].

use crate::app::citus;
use crate::cli::exit::Exit;
use crate::cli::reporter::{self, Style};
use crate::error::Result;
use crate::registry::Registry;

use super::super::Ctx;

pub use crate::cli::tenant::MoveArgs as Args;

/// Moves the schema under the tenant's lock and prints what happened.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenant = registry.find(&args.tenant).await?;
    let Some(node) = &args.node else {
        return super::move_server::run(ctx, args, &registry, &tenant).await;
    };
    let (events, reporting) = reporter::start(&ctx.out, "tenant move", Style::Single);
    let cx = ctx.one_tenant(&events);
    let moved = citus::move_schema(&cx, &registry, &tenant, node).await;
    drop(events);
    reporting.finish().await;
    let moved = moved?;
    ctx.out.outcome(&moved, &moved.message);
    Ok(Exit::Ok)
}
