//! `tenantctl events`: the run ledger — who changed which tenant, when, and how it ended.

use crate::app::reads::{self, EventsRequest};
use crate::cli::exit::Exit;
use crate::error::Result;
use crate::show::revision;

use super::Ctx;

pub use crate::cli::EventsArgs as Args;

/// Shows the ledger.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let request = EventsRequest {
        tenant: args.tenant.clone(),
        run: args.run.clone(),
        failed: args.failed,
        limit: args.limit,
    };
    let events = reads::events(ctx, &request).await?;
    if ctx.out.is_json() {
        ctx.out.json(&events);
        return Ok(Exit::Ok);
    }
    if events.events.is_empty() {
        ctx.out.print("no events");
        return Ok(Exit::Ok);
    }
    let mut t = ctx.out.table(&[
        "id", "when", "tenant", "action", "from", "to", "status", "ms", "by", "run", "error",
    ]);
    for e in &events.events {
        t.add_row(vec![
            e.id.to_string(),
            crate::show::stored_time(e.finished_at.as_ref()),
            e.domain.clone(),
            e.action.clone(),
            revision(e.from_revision),
            revision(e.to_revision),
            e.status.clone(),
            e.duration_ms.map(|ms| ms.to_string()).unwrap_or_default(),
            format!("{}@{}", e.db_user, e.client_host.as_deref().unwrap_or("?")),
            e.run_id.chars().take(8).collect(),
            e.error.clone().unwrap_or_default(),
        ]);
    }
    ctx.out.print(&t.to_string());
    Ok(Exit::Ok)
}
