//! `tenantctl events`: the run ledger — who changed which tenant, when, and how it ended.

use serde::Serialize;

use crate::cli::exit::Exit;
use crate::error::Result;
use crate::ident;
use crate::registry::{EventFilter, EventRow, Registry};
use crate::show::revision;

use super::Ctx;

pub use crate::cli::EventsArgs as Args;

/// The JSON document `events` prints.
#[derive(Debug, Serialize)]
pub struct Events {
    /// Ledger entries, newest first.
    pub events: Vec<EventRow>,
}

/// Shows the ledger.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    if let Some(run) = &args.run {
        let ok = run.len() == 36 && run.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if !ok {
            return Err(crate::error::Error::usage(format!(
                "run id {} is not a UUID",
                ident::shown(run)
            ))
            .into());
        }
    }
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenant_id = match &args.tenant {
        Some(t) => Some(registry.find(t).await?.id),
        None => None,
    };
    let filter = EventFilter {
        tenant_id,
        run_id: args.run.as_ref().map(|r| r.to_ascii_lowercase()),
        failed_only: args.failed,
        limit: i64::from(args.limit),
    };
    let events = Events {
        events: registry.events(&filter).await?,
    };
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
