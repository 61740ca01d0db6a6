//! `tenantctl tenant rotate-key`: replace a tenant's API key; the new key is printed once.

use crate::app::tenants;
use crate::cli::exit::Exit;
use crate::error::Result;

use super::super::Ctx;

pub use crate::cli::tenant::RotateKeyArgs as Args;

/// Generates a new key and stores its hash; the old key no longer matches.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let rotated = tenants::rotate_key(ctx, &args.tenant).await?;
    if ctx.out.is_json() {
        ctx.out.json(&rotated);
    } else {
        ctx.out.print(&rotated.message);
        ctx.out.print(&format!(
            "API key (shown once, only its hash is stored): {}",
            rotated.api_key
        ));
    }
    Ok(Exit::Ok)
}
