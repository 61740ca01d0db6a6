//! `tenantctl tenant restore`: replace a tenant's schema and data with an archive's.

use crate::cli::exit::Exit;
use crate::cli::reporter::{self, Style};
use crate::data::{self, ArchiveInput};
use crate::error::{Error, Result};
use crate::ident::quote;
use crate::registry::Registry;

use super::super::Ctx;

pub use crate::cli::tenant::RestoreArgs as Args;

/// Checks the archive whole and its migrations, asks, then restores.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let set = ctx.migrations()?;
    let stdin = args.file.as_os_str() == "-";
    if stdin && !args.yes && !args.dry_run {
        return Err(Error::usage(
            "restoring from standard input needs --yes: standard input carries the archive, so there is no answer to read",
        )
        .into());
    }
    let label = args.file.display().to_string();
    // A file is checked whole before the question is asked.
    let manifest = if stdin {
        None
    } else {
        let f = std::fs::File::open(&args.file)
            .map_err(|e| Error::usage(format!("cannot read archive {label}: {e}")))?;
        Some(data::stream::verify(Box::new(f), &label).await?)
    };
    if let Some(m) = &manifest {
        data::check_migrations(m, &set, &label)?;
    }
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenant = registry.find(&args.tenant).await?;
    crate::data::moving::refuse_unfinished(&registry, &tenant, "restore it").await?;
    if args.dry_run {
        // What the restore refuses before it changes anything, the dry run refuses too.
        let mut on_server = ctx.servers.target(&tenant.server)?.connect().await?;
        let boundary =
            crate::engine::dependents::inspect(&mut on_server, &tenant.schema_name).await?;
        if !boundary.outside.is_empty() {
            return Err(
                crate::error::Error::refused(crate::engine::plan::data_blocked(
                    &tenant.schema_name,
                    &boundary.outside,
                    "restore",
                ))
                .into(),
            );
        }
        let m = match manifest {
            Some(m) => m,
            None => data::stream::verify(Box::new(std::io::stdin()), "on standard input").await?,
        };
        data::check_migrations(&m, &set, &label)?;
        let (events, reporting) = reporter::start(&ctx.out, "tenant restore", Style::Single);
        let cx = ctx.one_tenant(&events);
        let tried = data::rehearse_restore(&cx, &tenant, &m, &set).await;
        drop(events);
        reporting.finish().await;
        let untried = tried?;
        let message = format!(
            "would replace tenant {}'s schema {} (revision {}) with {}'s data at revision {}: {} rows in {} tables{}; nothing was changed",
            tenant.domain,
            quote(&tenant.schema_name),
            crate::show::revision(tenant.current_revision),
            m.source.domain,
            crate::show::revision(m.revision),
            m.rows(),
            m.tables.len(),
            untried.map(|u| format!(" ({u})")).unwrap_or_default()
        );
        if ctx.out.is_json() {
            ctx.out.json(&serde_json::json!({
                "dry_run": true,
                "tenant": tenant,
                "file": label,
                "source": m.source,
                "from_revision": tenant.current_revision,
                "to_revision": m.revision,
                "tables": m.tables.len(),
                "rows": m.rows(),
                "message": message,
            }));
        } else {
            ctx.out.print(&message);
        }
        return Ok(Exit::Ok);
    }
    crate::cli::confirm::confirm(
        &format!(
            "this REPLACES tenant {}'s schema {} and ALL its data with the archive's.",
            tenant.domain,
            quote(&tenant.schema_name)
        ),
        args.yes,
    )?;
    let input = if stdin {
        ArchiveInput::Stdin
    } else {
        ArchiveInput::File(args.file.clone())
    };
    let (events, reporting) = reporter::start(&ctx.out, "tenant restore", Style::Single);
    let cx = ctx.one_tenant(&events);
    let restored = data::restore(&cx, &client, &tenant, input, &set).await;
    drop(events);
    reporting.finish().await;
    let restored = restored?;
    ctx.out.outcome(&restored, &restored.message);
    Ok(Exit::Ok)
}
