//! `tenantctl init`: create or upgrade the tenant registry.

use crate::app;
use crate::cli::exit::Exit;
use crate::error::Result;
use crate::ident::quote;

use super::Ctx;

pub use crate::cli::InitArgs as Args;

/// Creates the registry schema and table, or upgrades them, and the version index on
/// every server; idempotent. A registry newer than this binary is reported and left
/// unchanged (exit 0).
pub async fn run(ctx: &Ctx, _args: &Args) -> Result<Exit> {
    let done = app::init::init(ctx).await?;
    let report = &done.registry;
    if ctx.out.is_json() {
        ctx.out.json(&done);
        return Ok(Exit::Ok);
    }
    for i in &done.index {
        match &i.error {
            Some(e) => ctx.out.warn(&format!(
                "version index on server {}: not installed ({e}); its tenants are read in full",
                i.server
            )),
            None if i.attached > 0 => ctx.out.print(&format!(
                "version index on server {} in schema {}: {} indexed",
                i.server,
                quote(&i.schema),
                crate::show::count(i.attached, "tenant")
            )),
            None => {}
        }
        if let (None, Some(why)) = (&i.error, &i.unwatched) {
            ctx.out.warn(&format!(
                "version index on server {}: not watched, so each fleet read checks every tenant's row against the catalog (exact, slower): {why}",
                i.server
            ));
        }
    }
    if report.newer() {
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
