//! `tenantctl tenant drop`: remove a tenant from the registry and drop its schema, never
//! anything outside it.

use crate::app::tenants::{self, DropPlan};
use crate::cli::exit::Exit;
use crate::error::{Error, Result};
use crate::ident::quote;

use super::super::Ctx;

pub use crate::cli::tenant::DropArgs as Args;

/// Drops the tenant under its lock, so it never races an upgrade of the same tenant.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let start = tenants::prepare_drop(ctx, &args.tenant, args.keep_schema).await?;
    let (tenant, plan) = (&start.tenant, &start.plan);
    if args.dry_run {
        print_plan(ctx, plan);
        return Ok(if plan.error.is_some() {
            Exit::Failed
        } else {
            Exit::Ok
        });
    }
    // Refuse before asking.
    if let Some(e) = &plan.error {
        return Err(Error::refused(e.clone()).into());
    }
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
    let dropped = super::super::single(ctx, "tenant drop", async |events| {
        start.run(ctx, events).await
    })
    .await?;
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
