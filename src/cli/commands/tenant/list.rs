//! `tenantctl tenant list`: the registry as a table.

use crate::app::status;
use crate::cli::exit::Exit;
use crate::error::Result;

use super::super::Ctx;

pub use crate::cli::tenant::ListArgs as Args;

/// Lists tenants, with provisioned/revision columns refreshed from the database.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let listing = status::list(ctx, args.tenant_type.as_deref(), args.status).await?;
    if ctx.out.is_json() {
        ctx.out.json(&listing);
    } else if listing.tenants.is_empty() && (args.tenant_type.is_some() || args.status.is_some()) {
        ctx.out.print("no tenant matches the filter");
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
            "{}: {}",
            crate::show::count(listing.summary.total, "tenant"),
            counts.join(", ")
        ));
    }
    Ok(Exit::Ok)
}
