//! `tenantctl backup`: one archive per selected tenant (or per tenant due by its backup
//! policy, with `--due`), as a bulk run.

use crate::app::backups;
use crate::cli::exit::Exit;
use crate::error::Result;

use super::Ctx;

pub use crate::cli::BackupArgs as Args;

/// Backs up the selected tenants with the bulk run's concurrency, canary and ledger.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let mut begun = backups::begin(
        ctx,
        &super::selection(&args.selection),
        args.out.as_ref(),
        args.keep.map(|k| k as usize),
        args.due,
    )
    .await?;
    if begun.overlapped {
        ctx.out.warn(
            "another `backup --due` run is going: this one backs up nothing (the next tick will see what is still due)",
        );
    }
    let op = &begun.op;
    Ok(
        super::bulk_run(ctx, "backup", &args.bulk, async |opts, events| {
            begun.started.run_op(ctx, op, opts, events).await
        })
        .await?,
    )
}
