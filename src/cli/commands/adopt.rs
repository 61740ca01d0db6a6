//! `tenantctl adopt alembic`: take over a fleet run by the original FastAPI + Alembic
//! service (see [`crate::app::adopt`]).

use crate::app::adopt::{self, Adoption};
use crate::cli::exit::Exit;
use crate::cli::AdoptCommand;
use crate::error::Result;

use super::Ctx;

/// Runs an `adopt` subcommand.
pub async fn run(ctx: &Ctx, cmd: &AdoptCommand) -> Result<Exit> {
    let AdoptCommand::Alembic(args) = cmd;
    let adoption = super::single(ctx, "adopt", async |events| {
        adopt::adopt_alembic(ctx, events, &args.map, args.dry_run).await
    })
    .await;
    let adoption = adoption?;
    print(ctx, &adoption);
    Ok(if adoption.complete() {
        Exit::Ok
    } else {
        Exit::Partial
    })
}

fn print(ctx: &Ctx, a: &Adoption) {
    if ctx.out.is_json() {
        ctx.out.json(a);
        return;
    }
    let mut t = ctx
        .out
        .table(&["tenant", "schema", "alembic", "version", "outcome"]);
    let groups = [
        &a.stamped,
        &a.already,
        &a.unregistered_schemas,
        &a.missing_schemas,
        &a.unmapped,
        &a.branches,
        &a.left_alone,
    ];
    let mut any = false;
    for g in groups {
        for f in g.iter() {
            any = true;
            t.add_row(vec![
                f.domain.clone().unwrap_or_else(|| "(unregistered)".into()),
                f.schema_name.clone(),
                f.alembic_revisions.join(", "),
                f.version.map(|v| v.to_string()).unwrap_or_default(),
                f.outcome.clone(),
            ]);
        }
    }
    for s in &a.shared {
        any = true;
        t.add_row(vec![
            format!("(shared, server {})", s.server),
            s.schema.clone(),
            s.alembic_revisions.join(", "),
            s.version.map(|v| v.to_string()).unwrap_or_default(),
            s.outcome.clone(),
        ]);
    }
    if any {
        ctx.out.print(&t.to_string());
    }
    for d in a.depends_on_schemas.iter().filter(|d| !d.configured) {
        let objects: Vec<String> = d
            .objects
            .iter()
            .map(|o| {
                let ext = o
                    .extension
                    .as_ref()
                    .map(|e| format!(" of extension {e}"))
                    .unwrap_or_default();
                let more = match o.uses.saturating_sub(o.used_by.len()) {
                    0 => String::new(),
                    n => format!(" and {n} more"),
                };
                format!("{}{ext}, used by {}{more}", o.object, o.used_by.join(", "))
            })
            .collect();
        ctx.out.warn(&format!(
            "the tenants use objects of schema {} that their search_path does not reach: {}",
            d.schema,
            objects.join("; ")
        ));
    }
    if let Some(path) = &a.extra_search_path {
        ctx.out.warn(&format!(
            "add to the config file, or a tenant behind head fails in the migration that uses them, and so does every new tenant:\n[tenants]\nextra_search_path = {}",
            adopt::search_path_toml(path)
        ));
    }
    for d in &a.registry.without_key {
        // Quoted for a shell when the domain is not one tenantctl would accept.
        let arg = if d
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            d.clone()
        } else {
            format!("'{}'", d.replace('\'', "'\\''"))
        };
        ctx.out.warn(&format!(
            "tenant {d} had no API key: give it one with `tenantctl tenant rotate-key {arg}`"
        ));
    }
    ctx.out.print(&a.message);
}
