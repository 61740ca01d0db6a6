//! `tenantctl backup`: one archive per selected tenant, as a bulk run.

use crate::app::changes::Started;
use crate::cli::exit::Exit;
use crate::data::backup::{self, Backup};
use crate::error::Result;
use crate::files::migrations::MigrationSet;

use super::Ctx;

pub use crate::cli::BackupArgs as Args;

/// Backs up the selected tenants with the bulk run's concurrency, canary and ledger.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    backup::writable_dir(&args.out)?;
    // A backup reads the tenants as they are: it needs no migration files.
    let set = MigrationSet::empty(ctx.settings.migrations_dir.clone());
    let mut started = Started::open(ctx, set, &super::selection(&args.selection)).await?;
    let op = Backup {
        dir: args.out.clone(),
        keep: args.keep.map(|k| k as usize),
        unprovisioned: started.unprovisioned,
    };
    Ok(
        super::bulk_run(ctx, "backup", &args.bulk, async |opts, events| {
            started.run_op(ctx, &op, opts, events).await
        })
        .await?,
    )
}
