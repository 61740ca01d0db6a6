//! `tenantctl tenant show`: one tenant with its migration status.

use serde::Serialize;

use crate::cli::exit::Exit;
use crate::cli::output::pending_list;
use crate::error::Result;
use crate::registry::inspect::TenantStatus;
use crate::registry::{Registry, Tenant};
use crate::show::{revision, yes_no};

use super::super::Ctx;

pub use crate::cli::tenant::ShowArgs as Args;

/// The JSON document `tenant show` prints.
#[derive(Debug, Serialize)]
pub struct Shown {
    /// The registry row.
    pub tenant: Tenant,
    /// Its migration status.
    pub migration_status: TenantStatus,
    /// The Citus node holding its schema; `null` unless the server is a Citus coordinator
    /// and the schema is a distributed schema holding tables.
    pub placement: Option<crate::app::citus::Placement>,
}

/// Shows the tenant.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let set = ctx.migrations()?;
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let mut tenants = vec![registry.find(&args.tenant).await?];
    let mut st = ctx.statuses(&client, &registry, &mut tenants, &set).await?;
    let placement = ctx.placement(&client, &tenants[0], &st[0]).await?;
    let shown = Shown {
        tenant: tenants.remove(0),
        migration_status: st.remove(0),
        placement,
    };
    if ctx.out.is_json() {
        ctx.out.json(&shown);
        return Ok(Exit::Ok);
    }
    let t = &shown.tenant;
    let s = &shown.migration_status;
    let mut rows = crate::cli::output::identity_rows(t);
    rows.extend([
        ("provisioned", yes_no(s.schema_provisioned).into()),
        ("revision", revision(s.current_revision)),
        ("head", set.head().to_string()),
        ("pending", pending_list(&s.pending_migrations)),
        (
            "drift",
            s.drift
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        ),
        ("status", t.status.as_str().into()),
        ("last error", t.last_error.clone().unwrap_or_default()),
        (
            "api key",
            format!("{}… (only the hash is stored)", t.api_key_prefix),
        ),
        ("created", crate::show::stored_time(t.created_at.as_ref())),
        ("updated", crate::show::stored_time(t.updated_at.as_ref())),
    ]);
    if let Some(p) = &shown.placement {
        rows.push(("placement", p.node.clone()));
    }
    ctx.out.pairs(&rows);
    Ok(Exit::Ok)
}
