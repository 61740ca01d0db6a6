//! `tenantctl events`: the run ledger — who changed which tenant, when, and how it ended.

use serde::Serialize;

use crate::error::Result;
use crate::exit::Exit;
use crate::ident;
use crate::output::revision;
use crate::registry::{EventFilter, EventRow, Registry};

use super::Ctx;

/// Arguments of `events`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this tenant (domain, id or schema name).
    #[arg(short = 't', long = "tenant", value_name = "TENANT")]
    pub tenant: Option<String>,

    /// Only this run (the run_id printed by upgrade and provision).
    #[arg(long = "run", value_name = "ID")]
    pub run: Option<String>,

    /// Only failures.
    #[arg(long)]
    pub failed: bool,

    /// At most N entries, newest first.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
}

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
            crate::output::timestamp(e.finished_at),
            e.domain.clone(),
            e.action.clone(),
            revision(e.from_revision),
            revision(e.to_revision),
            e.status.clone(),
            e.duration_ms.to_string(),
            format!("{}@{}", e.db_user, e.client_host.as_deref().unwrap_or("?")),
            e.run_id[..8].to_string(),
            e.error.clone().unwrap_or_default(),
        ]);
    }
    ctx.out.print(&t.to_string());
    Ok(Exit::Ok)
}
