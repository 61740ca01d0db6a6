//! `tenantctl history`: the migrations, and for a tenant which are applied and when.

use crate::app::reads;
use crate::cli::exit::Exit;
use crate::error::Result;
use crate::registry::inspect::HistoryEntry;

use super::Ctx;

pub use crate::cli::HistoryArgs as Args;

/// Lists migrations; with a tenant, merges in its history table.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    if args.shared {
        let shared = crate::app::shared::history(ctx, args.server.as_deref()).await?;
        if ctx.out.is_json() {
            ctx.out.json(&crate::cli::schemas::SharedDoc { shared });
            return Ok(Exit::Ok);
        }
        let verbose = ctx.out.verbose > 0;
        for h in &shared {
            let head = format!("shared schema {} on server {}", h.schema, h.server);
            match &h.error {
                Some(e) => ctx.out.print(&format!("{head}: could not be read: {e}")),
                None => ctx
                    .out
                    .print(&format!("{head}\n{}", table(ctx, &h.migrations, verbose))),
            }
        }
        return Ok(Exit::Ok);
    }
    let history = reads::history(ctx, args.tenant.as_deref()).await?;
    if let Some(note) = &history.note {
        ctx.out.note(note);
    }
    let set = &history.set;
    if ctx.out.is_json() {
        ctx.out.json(&history);
        return Ok(Exit::Ok);
    }
    if history.migrations.is_empty() {
        ctx.out
            .print(&format!("no migrations in {}", set.dir.display()));
    } else {
        let verbose = ctx.out.verbose > 0;
        ctx.out.print(&table(ctx, &history.migrations, verbose));
    }
    Ok(Exit::Ok)
}

/// Migrations and their state as a table; `verbose` adds checksum, file and down script.
fn table(ctx: &Ctx, migrations: &[HistoryEntry], verbose: bool) -> String {
    let mut header = vec!["version", "name", "state", "applied on"];
    if verbose {
        header.extend(["checksum", "file", "down"]);
    }
    let mut t = ctx.out.table(&header);
    for e in migrations {
        let mut row = vec![
            e.version.to_string(),
            e.name.clone(),
            e.state.to_string(),
            e.applied_on.clone().unwrap_or_default(),
        ];
        if verbose {
            row.extend([
                e.checksum.clone(),
                e.file.clone().unwrap_or_else(|| "(missing)".into()),
                crate::show::yes_no(e.has_down).into(),
            ]);
        }
        t.add_row(row);
    }
    t.to_string()
}
