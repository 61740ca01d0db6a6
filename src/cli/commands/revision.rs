//! `tenantctl revision`: write the next migration file and its down script.

use crate::app::revision;
use crate::cli::exit::Exit;
use crate::error::Result;

use super::Ctx;

pub use crate::cli::RevisionArgs as Args;

/// Writes `V{head+1}__{name}.sql` and its `.down.sql` (creating the directory if needed):
/// in the migrations directory, or with `--shared` in the shared schema's (by default
/// the `shared` folder of the migrations directory).
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let written = revision::next(ctx, &args.message, args.shared)?;
    if ctx.out.is_json() {
        ctx.out.json(&written);
    } else {
        ctx.out.print(&format!("{}\n{}", written.up, written.down));
    }
    Ok(Exit::Ok)
}
