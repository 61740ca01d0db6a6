//! `tenantctl downgrade`: run down scripts, newest first, until TARGET.

use crate::cli::{BulkOpts, Selection};
use crate::dryrun;
use crate::error::{Exit, Result};
use crate::fleet::{self, Action, Planned, Unprovisioned};
use crate::registry::Registry;

use super::{select, Ctx};

/// Arguments of `downgrade`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub selection: Selection,

    /// Revision to go down to: a version number, or base (nothing applied).
    #[arg(value_name = "TARGET")]
    pub target: String,

    #[command(flatten)]
    pub bulk: BulkOpts,

    /// Confirm without asking (needed without a terminal).
    #[arg(long)]
    pub yes: bool,

    /// Print, per tenant, the exact SQL that would run; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Downgrades the selected tenants. Each down script runs in a transaction with the
/// removal of its history row; a tenant whose needed down script is missing is refused
/// before anything runs.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let set = ctx.migrations()?;
    let target = set.resolve_target(&args.target)?;
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenants = select(&registry, &args.selection).await?;
    let unprovisioned = if args.selection.tenants.is_empty() {
        Unprovisioned::Skip
    } else {
        Unprovisioned::Fail
    };
    if args.dry_run {
        let schemas: Vec<String> = tenants.iter().map(|t| t.schema_name.clone()).collect();
        let states = super::observe(ctx, &client, &schemas).await?;
        let dry = dryrun::plan(
            &tenants,
            &states,
            &set,
            &ctx.settings,
            dryrun::Plan::Downgrade(target),
            unprovisioned,
        );
        return Ok(super::print_dry_run(ctx, &dry));
    }
    if !tenants.is_empty() {
        let names: Vec<&str> = tenants.iter().map(|t| t.domain.as_str()).take(5).collect();
        let more = tenants.len().saturating_sub(names.len());
        ctx.out.confirm(
            &format!(
                "downgrade runs down scripts, which can destroy data, on {} tenant(s) ({}{}) down to {}.",
                tenants.len(),
                names.join(", "),
                if more > 0 { format!(" and {more} more") } else { String::new() },
                crate::output::revision(Some(target).filter(|t| *t > 0))
            ),
            args.yes,
        )?;
    }
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
    let opts = ctx.run_options(&args.bulk, unprovisioned);
    let progress = ctx.out.progress("downgrade");
    let planned = tenants.into_iter().map(Planned::Work).collect();
    let report = fleet::run(
        &env,
        &client,
        planned,
        Action::Downgrade(target),
        &opts,
        progress.as_ref(),
    )
    .await;
    ctx.out.run_report(&report);
    Ok(report.exit())
}
