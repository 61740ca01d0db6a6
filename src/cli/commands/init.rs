//! `tenantctl init`: create or upgrade the tenant registry.

use crate::cli::exit::Exit;
use crate::error::Result;
use crate::ident::quote;
use crate::registry;

use super::Ctx;

pub use crate::cli::InitArgs as Args;

/// Creates the registry schema and table, or upgrades them; idempotent. A registry newer
/// than this binary is reported and left unchanged (exit 0).
pub async fn run(ctx: &Ctx, _args: &Args) -> Result<Exit> {
    let mut client = ctx.connect().await?;
    let report = registry::init(&mut client, &ctx.settings.registry_schema).await?;
    if ctx.out.is_json() {
        ctx.out.json(&report);
    } else if report.newer() {
        ctx.out.print(&format!(
            "registry in schema {} is at version {}, newer than this tenantctl knows ({}): a newer tenantctl upgraded it; left unchanged",
            quote(&report.schema),
            report.version,
            report.binary_version
        ));
    } else if report.applied.is_empty() {
        ctx.out.print(&format!(
            "registry in schema {} is up to date (version {})",
            quote(&report.schema),
            report.version
        ));
    } else {
        ctx.out.print(&format!(
            "registry in schema {} is ready at version {} (applied {})",
            quote(&report.schema),
            report.version,
            report
                .applied
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(Exit::Ok)
}
