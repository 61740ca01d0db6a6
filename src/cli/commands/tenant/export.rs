//! `tenantctl tenant export`: write a tenant's data to an archive file or to stdout.

use std::io::IsTerminal;

use crate::app::tenant_data::{self, ArchiveOut};
use crate::cli::exit::Exit;
use crate::error::{Error, Result};

use super::super::Ctx;

pub use crate::cli::tenant::ExportArgs as Args;

/// Exports the tenant; a file appears only when it is complete.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let to_stdout = args.file.as_os_str() == "-";
    if to_stdout && ctx.out.is_json() {
        return Err(Error::usage(
            "-f - writes the archive to standard output, which -o json needs for its report; write the archive to a file, or drop -o json",
        )
        .into());
    }
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(Error::usage(
            "refusing to write a binary archive to a terminal; redirect standard output (`> FILE`) or pass -f FILE",
        )
        .into());
    }
    let to = if to_stdout {
        ArchiveOut::Stream(Box::new(std::io::stdout()))
    } else {
        ArchiveOut::File {
            path: args.file.clone(),
            force: args.force,
        }
    };
    if let Some(at) = &args.at {
        let at = crate::data::pitr::parse_time(at)?;
        let report = super::super::single(ctx, "tenant export", async |events| {
            crate::app::pitr::export_at(ctx, events, &args.tenant, at, to).await
        })
        .await?;
        if ctx.out.is_json() {
            ctx.out.json(&report);
        } else if to_stdout {
            ctx.out.note(&report.export.message);
        } else {
            ctx.out.print(&report.export.message);
        }
        return Ok(Exit::Ok);
    }
    let report = super::super::single(ctx, "tenant export", async |events| {
        tenant_data::export(ctx, events, &args.tenant, to).await
    })
    .await?;
    if ctx.out.is_json() {
        ctx.out.json(&report);
    } else if to_stdout {
        ctx.out.note(&report.message);
    } else {
        ctx.out.print(&report.message);
    }
    Ok(Exit::Ok)
}
