//! `tenantctl backup`: one archive per selected tenant, as a bulk run.

use crate::cli::exit::Exit;
use crate::data::backup::Backup;
use crate::engine::scheduler::Planned;
use crate::error::{Error, Result};
use crate::registry::Registry;

use super::{select, selection, Ctx};

pub use crate::cli::BackupArgs as Args;

/// Backs up the selected tenants with the bulk run's concurrency, canary and ledger.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let dir = &args.out;
    if dir.exists() && !dir.is_dir() {
        return Err(Error::usage(format!("--out {} is not a directory", dir.display())).into());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::usage(format!("cannot create --out {}: {e}", dir.display())))?;
    // A directory that cannot be written is refused before any tenant is started.
    let probe = dir.join(format!(".tenantctl-write-check.{}", std::process::id()));
    std::fs::write(&probe, b"")
        .map_err(|e| Error::usage(format!("cannot write into --out {}: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenants = select(ctx, &registry, &args.selection).await?;
    let op = Backup {
        dir: dir.clone(),
        keep: args.keep.map(|k| k as usize),
        unprovisioned: selection(&args.selection).unprovisioned(),
    };
    let planned = tenants.into_iter().map(Planned::Work).collect();
    Ok(super::run_fleet(ctx, &client, &registry, planned, &op, &args.bulk).await?)
}
