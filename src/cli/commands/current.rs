//! `tenantctl current`: each tenant's current revision.

use crate::app::reads;
use crate::cli::exit::Exit;
use crate::error::Result;
use crate::show::revision;

use super::Ctx;

pub use crate::cli::CurrentArgs as Args;

/// Shows current revisions, read from the tenants' history tables.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let out = reads::current(ctx, &super::selection(&args.selection)).await?;
    if ctx.out.is_json() {
        ctx.out.json(&out);
        return Ok(Exit::Ok);
    }
    let mut t = ctx.out.table(&["tenant", "schema", "revision", "at head"]);
    for c in &out.tenants {
        t.add_row(vec![
            c.domain.clone(),
            c.schema_name.clone(),
            revision(c.current_revision),
            if c.at_head { "yes" } else { "no" }.to_string(),
        ]);
    }
    if !out.tenants.is_empty() {
        ctx.out.print(&t.to_string());
    }
    ctx.out.print(&format!(
        "{}, head {}: {} at head",
        crate::show::count(out.summary.total, "tenant"),
        out.summary.head,
        out.summary.at_head
    ));
    Ok(Exit::Ok)
}
