//! `tenantctl status`: migration status of one tenant, or of every tenant with a
//! fleet summary.

use crate::app::shared::SharedStatus;
use crate::app::status::{self, FleetStatus, OneStatus};
use crate::cli::exit::Exit;
use crate::cli::output::pending_list;
use crate::error::{Error, Result};
use crate::registry::inspect::TenantStatus;
use crate::show::{revision, yes_no};

use super::Ctx;

pub use crate::cli::StatusArgs as Args;

/// Shows status. Always exits 0 when it could look; `check` is the gate for CI.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    if args.shared {
        let shared = crate::app::shared::status(ctx, args.server.as_deref()).await?;
        print_shared(ctx, &shared);
        return Ok(Exit::Ok);
    }
    if args.tenant.is_none() && !args.all {
        return Err(Error::usage(
            "name a tenant with --tenant <TENANT>, or pass --all (or --shared for the shared schema)",
        )
        .into());
    }
    if let Some(reference) = &args.tenant {
        let shown = status::show(ctx, reference).await?;
        let one = OneStatus {
            status: shown.migration_status,
            placement: shown.placement,
        };
        print_one(ctx, one, shown.head);
        return Ok(Exit::Ok);
    }
    print_fleet(ctx, status::all(ctx).await?);
    Ok(Exit::Ok)
}

/// Prints the shared schema's status on each server: `{"shared": [...]}` in JSON.
fn print_shared(ctx: &Ctx, shared: &[SharedStatus]) {
    if ctx.out.is_json() {
        ctx.out.json(&crate::cli::schemas::SharedDoc { shared });
        return;
    }
    ctx.out.print(&shared_table(ctx, shared));
}

/// The shared schema's status per server, as a table.
fn shared_table(ctx: &Ctx, shared: &[SharedStatus]) -> String {
    let mut t = ctx
        .out
        .table(&["server", "shared schema", "revision", "pending", "drift"]);
    for s in shared {
        let pending = s
            .pending_migrations
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let drift = match &s.error {
            Some(e) => format!("unreadable: {e}"),
            None => s.drift.join("; "),
        };
        // A revision that could not be read is not `base`.
        let current = match &s.error {
            Some(_) => "?".to_string(),
            None => revision(s.current_revision),
        };
        t.add_row(vec![
            s.server.clone(),
            s.schema.clone(),
            current,
            pending,
            drift,
        ]);
    }
    t.to_string()
}

/// Prints one tenant's status.
fn print_one(ctx: &Ctx, one: OneStatus, head: i32) {
    if ctx.out.is_json() {
        ctx.out.json(&one);
    } else {
        let s = &one.status;
        let mut rows = vec![
            ("tenant", format!("{} (id {})", s.domain, s.tenant_id)),
            ("schema", s.schema_name.clone()),
            ("provisioned", yes_no(s.schema_provisioned).into()),
            ("current revision", revision(s.current_revision)),
            ("head", head.to_string()),
            ("pending", pending_list(&s.pending_migrations)),
            ("status", s.status.as_str().into()),
        ];
        if let Some(e) = &s.last_error {
            rows.push(("last error", e.clone()));
        }
        for d in &s.drift {
            rows.push(("drift", d.to_string()));
        }
        if let Some(e) = &s.history_error {
            rows.push(("history", e.clone()));
        }
        if let Some(p) = one.placement {
            rows.push(("placement", p.node));
        }
        ctx.out.pairs(&rows);
    }
}

/// Prints the fleet's status: the revision histogram, the tenants that need attention,
/// and a summary line.
fn print_fleet(ctx: &Ctx, fleet: FleetStatus) {
    if ctx.out.is_json() {
        ctx.out.json(&fleet);
        return;
    }
    let s = &fleet.summary;
    let mut hist = ctx.out.table(&["revision", "tenants"]);
    for (rev, n) in &s.by_revision {
        hist.add_row(vec![rev.clone(), n.to_string()]);
    }
    if s.total > 0 {
        ctx.out.print(&hist.to_string());
    }
    let attention: Vec<&TenantStatus> = fleet
        .tenants
        .iter()
        .filter(|t| !t.at_head() || t.status == crate::registry::Status::Failed)
        .collect();
    if !attention.is_empty() {
        let mut t = ctx.out.table(&[
            "tenant", "schema", "revision", "pending", "status", "problem",
        ]);
        for x in attention {
            let problem = if let Some(e) = x.history_error.as_ref().filter(|_| x.unreachable) {
                e.clone()
            } else if !x.schema_provisioned {
                "not provisioned".to_string()
            } else if let Some(e) = &x.history_error {
                e.clone()
            } else if !x.drift.is_empty() {
                crate::error::listed(&x.drift, 3)
            } else if let Some(e) = &x.last_error {
                e.clone()
            } else {
                format!("behind head {}", s.head)
            };
            // One line per tenant: the whole text is in `status --tenant` and the JSON.
            let problem = match problem.char_indices().nth(PROBLEM_CHARS) {
                Some((cut, _)) => format!("{}...", &problem[..cut]),
                None => problem,
            };
            t.add_row(vec![
                x.domain.clone(),
                x.schema_name.clone(),
                revision(x.current_revision),
                x.pending_migrations.len().to_string(),
                x.status.as_str().to_string(),
                problem,
            ]);
        }
        ctx.out.print(&t.to_string());
    }
    if !fleet.shared.is_empty() {
        ctx.out.print(&shared_table(ctx, &fleet.shared));
    }
    ctx.out.print(&format!(
        "{}, head {}: {} at head, {} behind, {} unprovisioned, {} drifted, {} unreachable, {} moving, {} failed",
        crate::show::count(s.total, "tenant"), s.head, s.at_head, s.behind, s.unprovisioned, s.drifted, s.unreachable, s.moving, s.failed
    ));
}

/// The longest problem shown in `status --all`'s table, in characters.
const PROBLEM_CHARS: usize = 300;
