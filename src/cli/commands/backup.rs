//! `tenantctl backup`: one archive per selected tenant, as a bulk run.

use crate::app::changes;
use crate::cli::exit::Exit;
use crate::data::backup::{self, Backup};
use crate::error::Result;
use crate::registry::Registry;

use super::Ctx;

pub use crate::cli::BackupArgs as Args;

/// Backs up the selected tenants with the bulk run's concurrency, canary and ledger.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    backup::writable_dir(&args.out)?;
    let selection = super::selection(&args.selection);
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenants = changes::select(ctx, &registry, &selection).await?;
    drop(registry);
    let op = Backup {
        dir: args.out.clone(),
        keep: args.keep.map(|k| k as usize),
        unprovisioned: selection.unprovisioned(),
    };
    Ok(
        super::bulk_run(ctx, "backup", &args.bulk, async |opts, events| {
            changes::run_planned(ctx, &client, tenants, &op, opts, events).await
        })
        .await?,
    )
}
