//! `tenantctl history`: the migrations, and for a tenant which are applied and when.

use crate::app::reads;
use crate::cli::exit::Exit;
use crate::error::Result;

use super::Ctx;

pub use crate::cli::HistoryArgs as Args;

/// Lists migrations; with a tenant, merges in its history table.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let history = reads::history(ctx, args.tenant.as_deref()).await?;
    if let Some(note) = &history.note {
        ctx.out.note(note);
    }
    let set = &history.set;
    if ctx.out.is_json() {
        ctx.out.json(&history);
        return Ok(Exit::Ok);
    }
    let verbose = ctx.out.verbose > 0;
    let mut header = vec!["version", "name", "state", "applied on"];
    if verbose {
        header.extend(["checksum", "file", "down"]);
    }
    let mut t = ctx.out.table(&header);
    for e in &history.migrations {
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
    if history.migrations.is_empty() {
        ctx.out
            .print(&format!("no migrations in {}", set.dir.display()));
    } else {
        ctx.out.print(&t.to_string());
    }
    Ok(Exit::Ok)
}
