//! `tenantctl tenant drop`: remove a tenant from the registry and drop its schema, never
//! anything outside it.

use crate::app::tenants::{self, DropPlan};
use crate::cli::exit::Exit;
use crate::cli::reporter::{self, Style};
use crate::error::{Error, Result};
use crate::ident::quote;
use crate::registry::Registry;

use super::super::Ctx;

pub use crate::cli::tenant::DropArgs as Args;

/// Drops the tenant under its lock, so it never races an upgrade of the same tenant.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let mut client = ctx.connect().await?;
    let tenant = {
        let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
        let tenant = registry.find(&args.tenant).await?;
        // Also for the dry run: the schema is half-copied or fenced until the move's
        // rerun settles it.
        crate::data::moving::refuse_unfinished(&registry, &tenant, "drop it").await?;
        tenant
    };
    // What the drop would do is read on the tenant's own server.
    let mut remote = if crate::registry::servers::is_default(&tenant.server) {
        None
    } else {
        Some(ctx.servers.target(&tenant.server)?.connect().await?)
    };
    let on_server = remote.as_mut().unwrap_or(&mut client);
    let plan = tenants::drop_plan(&ctx.settings, on_server, &tenant, args.keep_schema).await?;
    if args.dry_run {
        let exit = if plan.error.is_some() {
            Exit::Failed
        } else {
            Exit::Ok
        };
        print_plan(ctx, &plan);
        return Ok(exit);
    }
    // Refuse before asking: the same check runs again under the lock, in the transaction
    // that drops the schema.
    if let Some(e) = plan.error {
        return Err(Error::refused(e).into());
    }
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let what = if args.keep_schema {
        format!(
            "this removes tenant {} from the registry (its schema {} is kept).",
            tenant.domain,
            quote(&tenant.schema_name)
        )
    } else if plan.schema_exists {
        format!(
            "this removes tenant {} from the registry and DROPS its schema {} with ALL its data ({} objects).",
            tenant.domain,
            quote(&tenant.schema_name),
            plan.objects
        )
    } else {
        format!(
            "this removes tenant {} from the registry (its schema {} does not exist).",
            tenant.domain,
            quote(&tenant.schema_name)
        )
    };
    crate::cli::confirm::confirm(&what, args.yes)?;
    let (events, reporting) = reporter::start(&ctx.out, "tenant drop", Style::Single);
    let cx = ctx.one_tenant(&events);
    let dropped = tenants::drop(&cx, &registry, &tenant, args.keep_schema).await;
    drop(events);
    reporting.finish().await;
    let dropped = dropped?;
    ctx.out.outcome(&dropped, &dropped.message);
    Ok(Exit::Ok)
}

/// Prints what a drop would do.
fn print_plan(ctx: &Ctx, plan: &DropPlan) {
    if ctx.out.is_json() {
        ctx.out.json(plan);
        return;
    }
    ctx.out.pairs(&[
        ("tenant", plan.tenant.domain.clone()),
        ("schema", plan.schema_name.clone()),
        (
            "exists",
            crate::show::yes_no(plan.schema_exists).to_string(),
        ),
        ("objects", plan.objects.to_string()),
        (
            "drop schema",
            crate::show::yes_no(plan.would_drop_schema).to_string(),
        ),
    ]);
    if plan.blocking.is_empty() {
        ctx.out.print(&plan.message);
    } else {
        let n = plan.blocking.len();
        ctx.out.print(&format!(
            "refused: {n} {} outside schema {} {} on it (dropping it would remove {} too):",
            if n == 1 { "object" } else { "objects" },
            quote(&plan.schema_name),
            if n == 1 { "depends" } else { "depend" },
            if n == 1 { "it" } else { "them" },
        ));
        for d in &plan.blocking {
            ctx.out.print(&format!("  {d}"));
        }
        ctx.out.print(
            "nothing was changed; drop or change those objects first, or pass --keep-schema",
        );
    }
}
