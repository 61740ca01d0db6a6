//! `tenantctl lint`: squawk's rules on migration files, each finding as
//! `FILE:LINE:COLUMN: RULE: why` with the safe way beneath; exit 5 when something is
//! found.

use crate::app::lint::{self, LintRequest};
use crate::cli::exit::Exit;
use crate::error::Result;

use super::Ctx;

pub use crate::cli::LintArgs as Args;

/// Lints what the arguments select. Exit 0 when clean, 5 when something is found.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let report = lint::lint(
        ctx,
        &LintRequest {
            files: args.files.clone(),
            all: args.all,
        },
    )
    .await?;
    if ctx.out.is_json() {
        ctx.out.json(&report);
    } else {
        let mut text = String::new();
        for f in &report.files {
            for x in &f.findings {
                text.push_str(&format!(
                    "{}:{}:{}: {}: {}\n",
                    f.file, x.line, x.column, x.rule, x.message
                ));
                if let Some(help) = &x.help {
                    text.push_str(&format!("  help: {help}\n"));
                }
            }
        }
        let which = match report.selected {
            "pending" => match report.from_revision {
                Some(r) => format!(
                    "the migrations above revision {} (the fleet's lowest)",
                    crate::show::revision((r > 0).then_some(r))
                ),
                None => "every migration (no tenant is provisioned)".to_string(),
            },
            "all" => "every migration".to_string(),
            _ => "the files named".to_string(),
        };
        text.push_str(&format!(
            "lint: {} in {} ({which})",
            crate::show::count(report.findings, "finding"),
            crate::show::count(report.files.len(), "file"),
        ));
        ctx.out.print(&text);
    }
    Ok(if report.ok { Exit::Ok } else { Exit::Drift })
}
