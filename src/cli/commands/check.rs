//! `tenantctl check`: the CI gate. Validates the configuration, the connection, the
//! migration files, the registry and every tenant; read-only, takes no locks.

use crate::app::reads;
use crate::cli::exit::Exit;
use crate::error::Result;

use super::Ctx;

pub use crate::cli::CheckArgs as Args;

/// Checks everything. Exit 0 when clean, 5 on drift; setup problems exit 3 before that.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let report = reads::check(ctx, args.deep).await?;
    if ctx.out.is_json() {
        ctx.out.json(&report);
    } else {
        let mut text = String::new();
        for p in &report.problems {
            let files: Vec<&str> = p
                .files
                .iter()
                .map(String::as_str)
                .filter(|f| !p.message.contains(f))
                .collect();
            let files = if files.is_empty() {
                String::new()
            } else {
                format!(" ({})", files.join(", "))
            };
            text.push_str(&format!(
                "{} ({}): {}: {}{files}\n",
                p.tenant, p.schema_name, p.kind, p.message
            ));
        }
        for sh in report.shared.iter().filter(|s| !s.at_head()) {
            let mut what = Vec::new();
            if !sh.pending_migrations.is_empty() {
                what.push(format!(
                    "behind: at {}, pending {}",
                    crate::show::revision(sh.current_revision),
                    sh.pending_migrations
                        .iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            what.extend(sh.drift.iter().map(|d| format!("drift: {d}")));
            if let Some(e) = &sh.error {
                what.push(format!("history unreadable: {e}"));
            }
            // Only a shared schema that is merely behind is fixed by an upgrade.
            let fix = if sh.drift.is_empty() && sh.error.is_none() {
                format!("`tenantctl upgrade --shared --server {}`", sh.server)
            } else {
                format!("`tenantctl status --shared --server {}`", sh.server)
            };
            text.push_str(&format!(
                "shared schema {} on server {}: {} ({fix})\n",
                sh.schema,
                sh.server,
                what.join("; ")
            ));
        }
        for u in &report.index.unwatched {
            text.push_str(&format!(
                "version index on server {}: checked against the catalog for each tenant, not watched: {}\n",
                u.server, u.why
            ));
        }
        if !report.index.read_in_full.is_empty() {
            let slow = &report.index.read_in_full;
            text.push_str(&format!(
                "version index: {} read in full, not from the index (`tenantctl init` indexes those it can):\n",
                crate::show::count(slow.len(), "tenant")
            ));
            for s in slow.iter().take(10) {
                text.push_str(&format!("  {} ({}): {}\n", s.domain, s.schema_name, s.why));
            }
            if slow.len() > 10 {
                text.push_str(&format!("  and {} more\n", slow.len() - 10));
            }
        }
        for f in &report.lint {
            for x in &f.findings {
                text.push_str(&format!(
                    "{}:{}:{}: lint: {}: {} (`tenantctl lint` says more)\n",
                    f.file, x.line, x.column, x.rule, x.message
                ));
            }
        }
        for p in &report.pitr {
            match &p.error {
                Some(e) => text.push_str(&format!(
                    "point-in-time recovery on server {} (stanza {}): {e}\n",
                    p.server, p.stanza
                )),
                None => text.push_str(&format!(
                    "point-in-time recovery on server {} (stanza {}): ready, from {} to {}\n",
                    p.server,
                    p.stanza,
                    p.oldest.as_deref().unwrap_or("?"),
                    p.newest.as_deref().unwrap_or("the last archived WAL")
                )),
            }
        }
        if report.ok {
            text.push_str(&format!(
                "check: ok: {} at head {}, migration files valid, registry consistent{}",
                crate::show::count(report.tenants, "tenant"),
                report.head,
                if report.shared.is_empty() {
                    ""
                } else {
                    ", shared schema at head on every server"
                }
            ));
        } else {
            let shared = report.shared.iter().filter(|s| !s.at_head()).count();
            let shared = if shared > 0 {
                format!(
                    ", shared schema not at head on {}",
                    crate::show::count(shared, "server")
                )
            } else {
                String::new()
            };
            let findings: usize = report.lint.iter().map(|f| f.findings.len()).sum();
            let lint = if findings > 0 {
                format!(
                    ", {} in the pending migrations",
                    crate::show::count(findings, "lint finding")
                )
            } else {
                String::new()
            };
            let pitr = report.pitr.iter().filter(|p| !p.ok).count();
            let pitr = if pitr > 0 {
                format!(
                    ", point-in-time recovery not ready on {}",
                    crate::show::count(pitr, "server")
                )
            } else {
                String::new()
            };
            text.push_str(&format!(
                "check: {} in {} of {} (head {}){shared}{lint}{pitr}",
                crate::show::count(report.problems.len(), "problem"),
                report.tenants_with_problems,
                crate::show::count(report.tenants, "tenant"),
                report.head
            ));
        }
        ctx.out.print(&text);
    }
    Ok(if report.ok { Exit::Ok } else { Exit::Drift })
}
