//! `tenantctl current`: each tenant's current revision.

use serde::Serialize;

use crate::cli::exit::Exit;
use crate::error::Result;
use crate::registry::inspect::{self, StatusSummary};
use crate::registry::Registry;
use crate::show::revision;

use super::{select, Ctx};

pub use crate::cli::CurrentArgs as Args;

/// One tenant's revision.
#[derive(Debug, Serialize)]
pub struct Current {
    /// Registry id.
    pub tenant_id: i64,
    /// Domain.
    pub domain: String,
    /// Schema.
    pub schema_name: String,
    /// Highest applied version; `null` when nothing is applied.
    pub current_revision: Option<i32>,
    /// Whether it is provisioned, clean and at head.
    pub at_head: bool,
}

/// The JSON document `current` prints.
#[derive(Debug, Serialize)]
pub struct Currents {
    /// One entry per tenant.
    pub tenants: Vec<Current>,
    /// Fleet counts.
    pub summary: StatusSummary,
}

/// Shows current revisions, read from the tenants' history tables.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let set = ctx.migrations()?;
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    // Selects exactly like the bulk commands; with nothing that selects, every tenant.
    let mut selection = args.selection.clone();
    if !super::selection(&selection).selects() {
        selection.all = true;
    }
    let mut tenants = select(ctx, &registry, &selection).await?;
    let st = ctx.statuses(&client, &registry, &mut tenants, &set).await?;
    let summary = inspect::summarize(&st, set.head());
    let out = Currents {
        tenants: st
            .iter()
            .map(|s| Current {
                tenant_id: s.tenant_id,
                domain: s.domain.clone(),
                schema_name: s.schema_name.clone(),
                current_revision: s.current_revision,
                at_head: s.at_head(),
            })
            .collect(),
        summary,
    };
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
        "{} tenants, head {}: {} at head",
        out.summary.total, out.summary.head, out.summary.at_head
    ));
    Ok(Exit::Ok)
}
