//! `tenantctl provision`: create missing tenant schemas.

use crate::cli::exit::Exit;
use crate::engine::dryrun;
use crate::engine::operation::{Change, Unprovisioned};
use crate::engine::plan::SchemaChange;
use crate::engine::scheduler::Planned;
use crate::error::Result;
use crate::files::migrations::MigrationSet;
use crate::registry::Registry;

use super::{select, Ctx};

pub use crate::cli::ProvisionArgs as Args;

/// Creates the schemas that are missing; existing ones are reported as up to date.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let mut client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenants = select(ctx, &registry, &args.selection).await?;
    // Provisioning needs no migration files.
    let set = MigrationSet::empty(ctx.settings.migrations_dir.clone());
    let change = if args.force_recreate {
        SchemaChange::Recreate
    } else {
        SchemaChange::Provision
    };
    if args.dry_run {
        let table = &ctx.settings.history_table;
        let (states, unreachable) =
            crate::app::fleet::observe_partial(&ctx.servers, &client, &tenants, table).await?;
        let mut dry = dryrun::plan(
            &tenants,
            &states,
            &unreachable,
            &set,
            &ctx.settings,
            change,
            Unprovisioned::Fail,
        );
        dryrun::refuse_blocked_recreates(&ctx.servers, &mut client, &mut dry).await?;
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
    let op = Change {
        change,
        set: &set,
        unprovisioned: Unprovisioned::Fail,
    };
    Ok(super::run_fleet(ctx, &client, &registry, planned, &op, &args.bulk).await?)
}
