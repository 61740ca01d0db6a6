//! `tenantctl tenant drop`: remove a tenant from the registry and drop its schema.

use serde::Serialize;
use time::OffsetDateTime;

use crate::error::{Exit, Result};
use crate::fleet;
use crate::ident::quote;
use crate::registry::{Event, Registry, Tenant};
use crate::runner::{LockHolder, LockWait, Session};

use super::super::Ctx;

/// Arguments of `tenant drop`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The tenant: domain, id or schema name.
    #[arg(value_name = "TENANT")]
    pub tenant: String,

    /// Keep the schema and its data; only remove the registry row.
    #[arg(long)]
    pub keep_schema: bool,

    /// Confirm without asking (needed without a terminal).
    #[arg(long)]
    pub yes: bool,
}

/// The JSON document `tenant drop` prints.
#[derive(Debug, Serialize)]
pub struct Dropped {
    /// The registry row as it was.
    pub tenant: Tenant,
    /// Whether the schema was dropped.
    pub schema_dropped: bool,
    /// What happened, in a sentence.
    pub message: String,
}

/// Drops the tenant under its lock, so it never races an upgrade of the same tenant.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenant = registry.find(&args.tenant).await?;
    let what = if args.keep_schema {
        format!(
            "this removes tenant {} from the registry (its schema {} is kept).",
            tenant.domain,
            quote(&tenant.schema_name)
        )
    } else {
        format!(
            "this removes tenant {} from the registry and DROPS its schema {} with ALL its data.",
            tenant.domain,
            quote(&tenant.schema_name)
        )
    };
    ctx.out.confirm(&what, args.yes)?;
    let started_at = OffsetDateTime::now_utc();
    let notices = ctx.out.lock_notices("tenant drop");
    let report = |holder: Option<&LockHolder>| notices.waiting(&tenant, holder);
    let wait = LockWait {
        interrupt: &ctx.interrupt,
        report: &report,
    };
    let mut session = Session::open(&ctx.target, &ctx.settings, &tenant.schema_name, &wait)
        .await
        .map_err(crate::error::Error::from)?;
    // An upgrade may have held the lock while this waited: read the row as it is now.
    let tenant = registry.find(&tenant.id.to_string()).await.map_err(|_| {
        crate::error::Error::failed(format!(
            "tenant {} was dropped by another command while this one waited for it",
            tenant.domain
        ))
    })?;
    let run_id = fleet::new_run_id()?;
    let host = fleet::client_host();
    let event = Event {
        run_id: &run_id,
        action: if args.keep_schema {
            "drop (schema kept)"
        } else {
            "drop"
        },
        from_revision: tenant.current_revision,
        started_at,
        client_host: &host,
    };
    session
        .drop_tenant(registry.tables(), &tenant, args.keep_schema, &event)
        .await?;
    let message = if args.keep_schema {
        format!(
            "tenant {} removed from the registry; schema {} kept",
            tenant.domain,
            quote(&tenant.schema_name)
        )
    } else {
        format!(
            "tenant {} removed and schema {} dropped",
            tenant.domain,
            quote(&tenant.schema_name)
        )
    };
    let dropped = Dropped {
        tenant,
        schema_dropped: !args.keep_schema,
        message,
    };
    if ctx.out.is_json() {
        ctx.out.json(&dropped);
    } else {
        ctx.out.print(&dropped.message);
    }
    Ok(Exit::Ok)
}
