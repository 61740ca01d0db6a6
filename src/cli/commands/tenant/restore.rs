//! `tenantctl tenant restore`: replace a tenant's schema and data with an archive's.

use crate::app::tenant_data;
use crate::cli::exit::Exit;
use crate::data::ArchiveInput;
use crate::error::{Error, Result};
use crate::ident::quote;

use super::super::Ctx;

pub use crate::cli::tenant::RestoreArgs as Args;

/// Checks the archive whole and its migrations, asks, then restores.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let file = match &args.file {
        Some(f) => f.clone(),
        None => {
            let dir = crate::app::backups::dir(ctx, args.from.as_ref(), "--from")?;
            let path = tenant_data::latest_backup(ctx, &args.tenant, &dir).await?;
            ctx.out.note(&format!("restoring from {}", path.display()));
            path
        }
    };
    let stdin = file.as_os_str() == "-";
    if stdin && !args.yes && !args.dry_run {
        return Err(Error::usage(
            "restoring from standard input needs --yes: standard input carries the archive, so there is no answer to read",
        )
        .into());
    }
    let input = if stdin {
        ArchiveInput::Stdin
    } else {
        ArchiveInput::File(file)
    };
    let start = tenant_data::prepare_restore(ctx, &args.tenant, input, args.file.is_none()).await?;
    if args.dry_run {
        let plan = super::super::single(ctx, "tenant restore", async |events| {
            start.dry_run(ctx, events).await
        })
        .await?;
        ctx.out.outcome(&plan, &plan.message);
        return Ok(Exit::Ok);
    }
    let tenant = &start.tenant;
    crate::cli::confirm::confirm(
        &format!(
            "this REPLACES tenant {}'s schema {} and ALL its data with the archive's.",
            tenant.domain,
            quote(&tenant.schema_name)
        ),
        args.yes,
    )?;
    let restored = super::super::single(ctx, "tenant restore", async |events| {
        start.run(ctx, events).await
    })
    .await?;
    ctx.out.outcome(&restored, &restored.message);
    Ok(Exit::Ok)
}
