//! `tenantctl tenant export`: write a tenant's data to an archive file or to stdout.

use std::io::IsTerminal;

use crate::cli::exit::Exit;
use crate::cli::reporter::{self, Style};
use crate::data::{self, ExportReport};
use crate::error::{Error, Result};
use crate::registry::Registry;

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
    let partial = if to_stdout {
        None
    } else {
        Some(data::files::prepare(&args.file, args.force)?)
    };
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenant = registry.find(&args.tenant).await?;
    crate::data::moving::refuse_unfinished(&registry, &tenant, "export it").await?;
    let started = std::time::Instant::now();
    let out: Box<dyn std::io::Write + Send> = match &partial {
        None => Box::new(std::io::stdout()),
        Some(p) => Box::new(data::files::create_partial(p).map_err(|e| {
            Error::usage(format!(
                "cannot write {}: {}",
                args.file.display(),
                e.message()
            ))
        })?),
    };
    let label = args.file.display().to_string();
    let (events, reporting) = reporter::start(&ctx.out, "tenant export", Style::Single);
    let cx = ctx.one_tenant(&events);
    let exported = data::export(&cx, &tenant, out, &label).await;
    drop(events);
    reporting.finish().await;
    let bytes = match (&partial, &exported) {
        (Some(p), Ok(_)) => Some(data::files::finish(p, &args.file)?),
        (Some(p), Err(_)) => {
            let _ = std::fs::remove_file(p);
            None
        }
        (None, _) => None,
    };
    let manifest = exported?;
    let rows = manifest.rows();
    let report = ExportReport {
        tenant: tenant.domain.clone(),
        schema_name: tenant.schema_name.clone(),
        server: tenant.server.clone(),
        file: label.clone(),
        revision: manifest.revision,
        tables: manifest.tables.len(),
        rows,
        bytes,
        duration_ms: started.elapsed().as_millis() as u64,
        message: format!(
            "tenant {} exported to {} at revision {}: {} rows in {} tables",
            tenant.domain,
            if to_stdout { "standard output" } else { &label },
            crate::show::revision(manifest.revision),
            rows,
            manifest.tables.len()
        ),
    };
    if ctx.out.is_json() {
        ctx.out.json(&report);
    } else if to_stdout {
        ctx.out.note(&report.message);
    } else {
        ctx.out.print(&report.message);
    }
    Ok(Exit::Ok)
}
