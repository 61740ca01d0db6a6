//! `tenantctl provision`: create missing tenant schemas.

use crate::cli::{BulkOpts, Selection};
use crate::dryrun;
use crate::error::{Exit, Result};
use crate::fleet::{self, Action, Planned, Unprovisioned};
use crate::migrations::MigrationSet;
use crate::registry::Registry;

use super::{select, Ctx};

/// Arguments of `provision`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub selection: Selection,

    #[command(flatten)]
    pub bulk: BulkOpts,

    /// Drop existing schemas with all their data and create them empty (asks first).
    #[arg(long)]
    pub force_recreate: bool,

    /// Confirm --force-recreate without asking (needed without a terminal).
    #[arg(long)]
    pub yes: bool,

    /// Print, per tenant, the exact SQL that would run; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Creates the schemas that are missing; existing ones are reported as up to date.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenants = select(&registry, &args.selection).await?;
    if args.dry_run {
        let schemas: Vec<String> = tenants.iter().map(|t| t.schema_name.clone()).collect();
        let states = super::observe(ctx, &client, &schemas).await?;
        let empty = MigrationSet {
            dir: ctx.settings.migrations_dir.clone(),
            files: Vec::new(),
        };
        let dry = dryrun::plan(
            &tenants,
            &states,
            &empty,
            &ctx.settings,
            dryrun::Plan::Provision {
                recreate: args.force_recreate,
            },
            crate::fleet::Unprovisioned::Fail,
        );
        return Ok(super::print_dry_run(ctx, &dry));
    }
    if args.force_recreate && !tenants.is_empty() {
        let names: Vec<&str> = tenants.iter().map(|t| t.domain.as_str()).take(5).collect();
        let more = tenants.len().saturating_sub(names.len());
        ctx.out.confirm(
            &format!(
                "--force-recreate drops the schemas of {} tenant(s) ({}{}) with ALL their data and creates them empty.",
                tenants.len(),
                names.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() }
            ),
            args.yes,
        )?;
    }
    let set = MigrationSet {
        dir: ctx.settings.migrations_dir.clone(),
        files: Vec::new(),
    };
    let run_id = fleet::new_run_id()?;
    let host = fleet::client_host();
    let env = fleet::Env {
        target: &ctx.target,
        settings: &ctx.settings,
        set: &set,
        tables: registry.tables(),
        run_id: &run_id,
        client_host: &host,
    };
    let opts = ctx.run_options(&args.bulk, Unprovisioned::Fail);
    let progress = ctx.out.progress("provision");
    let planned = tenants.into_iter().map(Planned::Work).collect();
    let action = if args.force_recreate {
        Action::Recreate
    } else {
        Action::Provision
    };
    let report = fleet::run(&env, &client, planned, action, &opts, progress.as_ref()).await;
    ctx.out.run_report(&report);
    Ok(report.exit())
}
