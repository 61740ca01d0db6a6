//! `tenantctl revision`: write the next migration file and its down script.

use crate::app::revision;
use crate::cli::exit::Exit;
use crate::error::Result;

use super::Ctx;

pub use crate::cli::RevisionArgs as Args;

/// Writes `V{head+1}__{name}.sql` and its `.down.sql` (creating the directory if needed).
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let written = revision::write(&ctx.settings.migrations_dir, &args.message)?;
    if ctx.out.is_json() {
        ctx.out.json(&written);
    } else {
        ctx.out.print(&format!("{}\n{}", written.up, written.down));
    }
    Ok(Exit::Ok)
}
