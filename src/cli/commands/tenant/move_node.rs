//! `tenantctl tenant move`: with `--node HOST:PORT`, move a tenant's distributed schema to
//! another worker of its Citus cluster (see [`crate::app::citus::move_schema`]); with `--to`,
//! see [`super::move_server`].

use crate::app::moves;
use crate::cli::exit::Exit;
use crate::error::Result;

use super::super::Ctx;

pub use crate::cli::tenant::MoveArgs as Args;

/// Moves the schema under the tenant's lock and prints what happened.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let start = moves::prepare(ctx, &args.tenant).await?;
    let Some(node) = &args.node else {
        return super::move_server::run(ctx, args, &start).await;
    };
    let moved = super::super::single(ctx, "tenant move", async |events| {
        start.to_node(ctx, events, node).await
    })
    .await?;
    ctx.out.outcome(&moved, &moved.message);
    Ok(Exit::Ok)
}
