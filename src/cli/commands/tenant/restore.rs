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
    if args.into.is_some() && args.at.is_none() {
        return Err(Error::usage(
            "--into needs --at: it makes a new tenant of the data as it was at a time (to make one from an archive, use `tenantctl tenant import FILE --as DOMAIN`)",
        )
        .into());
    }
    if let Some(at) = &args.at {
        return at_time(ctx, args, at).await;
    }
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

/// `--at TIME`: the tenant as it was then, recovered through pgBackRest, replacing the
/// tenant (or, with --into, as a new tenant).
async fn at_time(ctx: &Ctx, args: &Args, at: &str) -> Result<Exit> {
    let at = crate::data::pitr::parse_time(at)?;
    let into = match &args.into {
        Some(domain) => {
            // Named as the tenant and of its type: the action fills both in.
            let new = super::import::new_from_data(
                domain,
                &crate::cli::tenant::NewTenantArgs {
                    name: String::new(),
                    email: None,
                    tenant_type: None,
                    schema: None,
                    server: None,
                    dry_run: args.dry_run,
                },
            );
            Some(new)
        }
        None => None,
    };
    if !args.dry_run {
        let what = match &args.into {
            Some(d) => format!(
                "this recovers tenant {}'s server to {} on a scratch instance and makes the new tenant {d} of its data.",
                args.tenant,
                crate::data::pitr::shown(at)
            ),
            None => format!(
                "this REPLACES tenant {}'s schema and ALL its data with its data as at {}.",
                args.tenant,
                crate::data::pitr::shown(at)
            ),
        };
        crate::cli::confirm::confirm(&what, args.yes)?;
    }
    let done = super::super::single(ctx, "tenant restore", async |events| {
        crate::app::pitr::restore_at(ctx, events, &args.tenant, at, into.as_ref(), args.dry_run)
            .await
    })
    .await?;
    match done {
        Err(plan) => ctx.out.outcome(&plan, &plan.message),
        Ok(restored) => {
            ctx.out.outcome(&restored, &restored.message);
            if let (Some(i), false) = (&restored.imported, ctx.out.is_json()) {
                ctx.out.print(&format!(
                    "API key of {} (shown once, only its hash is stored): {}",
                    i.tenant.domain, i.api_key
                ));
            }
        }
    }
    Ok(Exit::Ok)
}
