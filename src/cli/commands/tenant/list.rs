//! `tenantctl tenant list`: the registry as a table.

use crate::app::status::Listing;
use crate::cli::exit::Exit;
use crate::error::Result;
use crate::files::migrations::MigrationSet;
use crate::ident;
use crate::registry::Registry;

use super::super::Ctx;

pub use crate::cli::tenant::ListArgs as Args;

/// Lists tenants, with provisioned/revision columns refreshed from the database.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    if let Some(t) = &args.tenant_type {
        ident::validate_tenant_type(t)?;
    }
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let mut tenants = registry
        .list(args.tenant_type.as_deref(), args.status)
        .await?;
    // Refresh the cached columns; pending counts are not shown here, so files are optional.
    let set = ctx
        .migrations()
        .unwrap_or_else(|_| MigrationSet::empty(ctx.settings.migrations_dir.clone()));
    ctx.statuses(&client, &registry, &mut tenants, &set).await?;
    let listing = Listing::of(tenants);
    if ctx.out.is_json() {
        ctx.out.json(&listing);
    } else if listing.tenants.is_empty() {
        ctx.out
            .print("no tenants registered (add one with `tenantctl tenant create`)");
    } else {
        ctx.out.tenant_table(&listing.tenants);
        let counts: Vec<String> = listing
            .summary
            .by_status
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        ctx.out.print(&format!(
            "{} tenants: {}",
            listing.summary.total,
            counts.join(", ")
        ));
    }
    Ok(Exit::Ok)
}
