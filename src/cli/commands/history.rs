//! `tenantctl history`: the migrations, and for a tenant which are applied and when.

use serde::Serialize;

use crate::cli::exit::Exit;
use crate::error::{Error, Result};
use crate::registry::inspect::{self, HistoryEntry};
use crate::registry::Registry;

use super::Ctx;

pub use crate::cli::HistoryArgs as Args;

/// The JSON document `history` prints.
#[derive(Debug, Serialize)]
pub struct History {
    /// Every migration, by version.
    pub migrations: Vec<HistoryEntry>,
}

/// Lists migrations; with a tenant, merges in its history table.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let set = ctx.migrations()?;
    let entries = match &args.tenant {
        None => inspect::history(&set, None),
        Some(reference) => {
            let client = ctx.connect().await?;
            let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
            let tenant = registry.find(reference).await?;
            let tenants = std::slice::from_ref(&tenant);
            let table = &ctx.settings.history_table;
            let mut states =
                crate::app::fleet::observe(&ctx.servers, &client, tenants, table).await?;
            let st = states.remove(&tenant.schema_name).ok_or_else(|| {
                Error::failed(format!("schema {} was not observed", tenant.schema_name))
            })?;
            if !st.schema_exists {
                ctx.out.note(&format!(
                    "schema \"{}\" of tenant {} does not exist yet",
                    tenant.schema_name, tenant.domain
                ));
            }
            let rows = st.history.map_err(Error::failed)?;
            inspect::history(&set, Some(&rows))
        }
    };
    let history = History {
        migrations: entries,
    };
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
