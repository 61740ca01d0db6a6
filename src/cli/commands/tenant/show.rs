//! `tenantctl tenant show`: one tenant with its migration status.

use crate::cli::exit::Exit;
use crate::cli::output::pending_list;
use crate::error::Result;
use crate::show::{revision, yes_no};

use super::super::Ctx;

pub use crate::cli::tenant::ShowArgs as Args;

/// Shows the tenant.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let shown = crate::app::status::show(ctx, &args.tenant).await?;
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
        ("head", shown.head.to_string()),
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
