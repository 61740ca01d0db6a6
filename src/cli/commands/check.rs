//! `tenantctl check`: the CI gate. Validates the configuration, the connection, the
//! migration files, the registry and every tenant; read-only, takes no locks.

use serde::Serialize;

use crate::cli::exit::Exit;
use crate::error::Result;
use crate::registry::inspect::{self, Problem};
use crate::registry::Registry;

use super::Ctx;

pub use crate::cli::CheckArgs as Args;

/// The JSON document `check` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    /// True when there is nothing to report.
    pub ok: bool,
    /// The head version of the files.
    pub head: i32,
    /// Tenants checked.
    pub tenants: usize,
    /// Tenants with at least one problem.
    pub tenants_with_problems: usize,
    /// Every problem, one per line in text output.
    pub problems: Vec<Problem>,
}

/// Checks everything. Exit 0 when clean, 5 on drift; setup problems exit 3 before that.
pub async fn run(ctx: &Ctx, _args: &Args) -> Result<Exit> {
    let set = ctx.migrations()?;
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenants = registry.list(None, None).await?;
    // Every server must answer, whether or not it holds tenants yet.
    // (A connection error names its server; so does a read it does not answer.)
    for (_, target) in ctx.servers.iter().skip(1) {
        let c = target.connect().await?;
        crate::pg::db::read(
            &c,
            "checking that the server answers",
            c.simple_query("SELECT 1"),
        )
        .await?;
    }
    let states = super::observe(ctx, &client, &tenants).await?;
    // A server that went away or stopped answering while its tenants were read cannot
    // be checked: that is not drift.
    if let Some(why) = states
        .values()
        .find(|s| s.unreachable)
        .and_then(|s| s.history.clone().err())
    {
        return Err(crate::error::Error::unavailable(why).into());
    }
    let problems = inspect::check(&tenants, &states, &set);
    let mut affected: Vec<&str> = problems.iter().map(|p| p.tenant.as_str()).collect();
    affected.dedup();
    let report = Report {
        ok: problems.is_empty(),
        head: set.head(),
        tenants: tenants.len(),
        tenants_with_problems: affected.len(),
        problems,
    };
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
        if report.ok {
            text.push_str(&format!(
                "check: ok: {} tenants at head {}, migration files valid, registry consistent",
                report.tenants, report.head
            ));
        } else {
            text.push_str(&format!(
                "check: {} problems in {} of {} tenants (head {})",
                report.problems.len(),
                report.tenants_with_problems,
                report.tenants,
                report.head
            ));
        }
        ctx.out.print(&text);
    }
    Ok(if report.ok { Exit::Ok } else { Exit::Drift })
}
