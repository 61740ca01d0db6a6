//! `tenantctl provision`: create missing tenant schemas.

use crate::app::changes::Started;
use crate::cli::exit::Exit;
use crate::engine::operation::Unprovisioned;
use crate::engine::plan::SchemaChange;
use crate::error::Result;
use crate::files::migrations::MigrationSet;

use super::Ctx;

pub use crate::cli::ProvisionArgs as Args;

/// Creates the schemas that are missing; existing ones are reported as up to date.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    // Provisioning needs no migration files.
    let set = MigrationSet::empty(ctx.settings.migrations_dir.clone());
    let mut started = Started::open(ctx, set, &super::selection(&args.selection)).await?;
    // Provisioning is what a missing schema needs: it is never a reason to skip.
    started.unprovisioned = Unprovisioned::Fail;
    let change = if args.force_recreate {
        SchemaChange::Recreate
    } else {
        SchemaChange::Provision
    };
    if args.force_recreate && !args.dry_run {
        super::confirm_tenants(
            ctx,
            &started.tenants,
            "--force-recreate drops each schema with ALL its data and creates it empty,",
            args.yes,
        )?;
    }
    Ok(super::change(ctx, started, change, args.dry_run, &args.bulk).await?)
}
