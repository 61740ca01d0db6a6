//! `tenantctl upgrade`: apply pending migrations to one, several or all tenants.

use crate::app::changes;
use crate::cli::exit::Exit;
use crate::engine::plan::SchemaChange;
use crate::engine::target::Forms;
use crate::error::Result;

use super::Ctx;

pub use crate::cli::UpgradeArgs as Args;

/// Upgrades the selected tenants to TARGET (a version, or `+N` above each tenant's own
/// revision). Only tenants that need work get a session; tenants whose schema does not
/// exist yet, or that the target does not fit (above it, or too few migrations above
/// them for `+N`), are skipped when selected by a filter and fail when named.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    if args.shared {
        let server = args.selection.server.as_deref();
        return Ok(super::shared_change(
            ctx,
            "upgrade",
            &args.target,
            server,
            args.dry_run,
            false,
            &args.bulk,
        )
        .await?);
    }
    let selection = super::selection(&args.selection);
    let (start, target) =
        changes::start(ctx, &args.target, Forms::Up, "upgrade", &selection).await?;
    if args.impact {
        let report = crate::app::impact::impact(ctx, &start.set, &start.tenants, &target).await?;
        if ctx.out.is_json() {
            ctx.out.json(&report);
        } else {
            ctx.out.print(&impact_text(&report));
        }
        return Ok(Exit::Ok);
    }
    let change = SchemaChange::Upgrade {
        target,
        provision: false,
    };
    Ok(super::change(ctx, start, change, args.dry_run, &args.bulk).await?)
}

/// The impact report in text: per statement, its locks, its rewrites and where they
/// weigh most.
fn impact_text(r: &crate::app::impact::Impact) -> String {
    let mut text = String::new();
    for s in &r.statements {
        let file = std::path::Path::new(&s.measured.file)
            .file_name()
            .map_or(s.measured.file.clone(), |n| {
                n.to_string_lossy().into_owned()
            });
        text.push_str(&format!(
            "{file}:{}: {}\n",
            s.measured.line, s.measured.statement
        ));
        if let Some(why) = &s.measured.not_measured {
            text.push_str(&format!("  not measured: {why}\n"));
            if !s.measured.rewrites.is_empty() {
                text.push_str(&format!("  rewrites {}\n", s.measured.rewrites.join(", ")));
            }
        } else if s.measured.locks.is_empty() {
            text.push_str("  locks no table\n");
        } else {
            let locks: Vec<String> = s
                .measured
                .locks
                .iter()
                .map(|l| {
                    let rewrite = if s.measured.rewrites.contains(&l.table) {
                        " (rewritten)"
                    } else {
                        ""
                    };
                    format!("{} on {}{rewrite}", l.mode, l.table)
                })
                .collect();
            text.push_str(&format!("  {}\n", locks.join("; ")));
        }
        text.push_str(&format!(
            "  runs in {}; the tables it locks or rewrites there: {}\n",
            crate::show::count(s.tenants, "tenant"),
            crate::show::size(s.total_bytes)
        ));
        for t in &s.largest {
            let rewrite = t
                .rewrite_seconds
                .map(|secs| {
                    if secs < 10.0 {
                        format!(", rewrite about {secs:.1} s")
                    } else {
                        format!(", rewrite about {secs:.0} s")
                    }
                })
                .unwrap_or_default();
            // reltuples is -1 for a table never vacuumed or analyzed.
            let rows = if t.rows < 0 {
                "rows unknown (never analyzed)".to_string()
            } else {
                format!("{} rows", t.rows)
            };
            text.push_str(&format!(
                "    {} ({}): {} {}, {rows}{rewrite}\n",
                t.domain,
                t.server,
                t.table,
                crate::show::size(t.bytes),
            ));
        }
    }
    match r.measured_from {
        None => text.push_str(&format!(
            "impact: nothing pending for the {} selected (target {})",
            crate::show::count(r.tenants, "tenant"),
            r.target
        )),
        Some(from) => text.push_str(&format!(
            "impact: {} from revision {} to {}, measured on a scratch copy; nothing was changed",
            crate::show::count(r.statements.len(), "statement"),
            crate::show::revision((from > 0).then_some(from)),
            r.target
        )),
    }
    text
}
