//! `tenantctl tenant clone` (and `tenant create --from`): copy a tenant's data into a new
//! tenant, the export streamed straight into the import.

use crate::app::tenant_data;
use crate::cli::exit::Exit;
use crate::error::Result;

use super::super::Ctx;
use super::import::print_made;

pub use crate::cli::tenant::CloneArgs as Args;

/// Clones the tenant (or with --dry-run says what the clone would make).
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let new = super::import::new_from_data(&args.domain, &args.new);
    let cloned = super::super::single(ctx, "tenant clone", async |events| {
        tenant_data::clone(ctx, events, &args.tenant, &new, args.new.dry_run).await
    })
    .await?;
    print_made(ctx, &cloned.made);
    Ok(if cloned.upgrade_failed {
        Exit::Failed
    } else {
        Exit::Ok
    })
}
