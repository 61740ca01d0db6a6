//! `tenantctl provision`: create missing tenant schemas.

use crate::dependents;
use crate::dryrun;
use crate::error::{Exit, Result};
use crate::fleet::{Action, Planned, Unprovisioned};
use crate::ident::quote;
use crate::migrations::MigrationSet;
use crate::registry::Registry;

use super::{select, Ctx};

pub use crate::cli::ProvisionArgs as Args;

/// Creates the schemas that are missing; existing ones are reported as up to date.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let mut client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenants = select(&registry, &args.selection).await?;
    // Provisioning needs no migration files.
    let set = MigrationSet::empty(ctx.settings.migrations_dir.clone());
    if args.dry_run {
        let states = super::observe(ctx, &client, &tenants).await?;
        let mut dry = dryrun::plan(
            &tenants,
            &states,
            &set,
            &ctx.settings,
            dryrun::Plan::Provision {
                recreate: args.force_recreate,
            },
            Unprovisioned::Fail,
        );
        if args.force_recreate {
            refuse_blocked_recreates(ctx, &mut client, &mut dry).await?;
        }
        return Ok(super::print_dry_run(ctx, &dry));
    }
    if args.force_recreate {
        super::confirm_tenants(
            ctx,
            &tenants,
            "--force-recreate drops each schema with ALL its data and creates it empty,",
            args.yes,
        )?;
    }
    let planned = tenants.into_iter().map(Planned::Work).collect();
    let action = if args.force_recreate {
        Action::Recreate
    } else {
        Action::Provision
    };
    Ok(super::run_fleet(
        ctx,
        &client,
        &registry,
        &set,
        planned,
        action,
        &args.bulk,
        Unprovisioned::Fail,
    )
    .await?)
}

/// Marks, in a `--force-recreate` dry run, the tenants whose schema could not be dropped:
/// shared schemas, and schemas that objects outside them depend on.
async fn refuse_blocked_recreates(
    ctx: &Ctx,
    client: &mut tokio_postgres::Client,
    dry: &mut dryrun::DryRun<'_>,
) -> Result<()> {
    for p in dry.tenants.iter_mut().filter(|p| p.error.is_none()) {
        let what = format!("drop and recreate schema {}", quote(&p.schema_name));
        if let Some(role) = dependents::shared_role(&ctx.settings, &p.schema_name) {
            p.error = Some(format!(
                "refusing to {what}: it is {role}, not a tenant's own schema"
            ));
            p.sql.clear();
            continue;
        }
        let boundary = dependents::inspect(client, &p.schema_name).await?;
        if !boundary.outside.is_empty() {
            p.error = Some(dependents::refusal(
                &what,
                &boundary.outside,
                "Or leave the schema as it is: `tenantctl provision` without --force-recreate keeps an existing schema.",
            ));
            p.sql.clear();
        }
    }
    Ok(())
}
