//! Dry runs: the exact SQL an `upgrade`, `downgrade` or `provision` would send for each
//! tenant, built from one batched observation. Nothing is changed and no lock is taken.

use std::collections::HashMap;

use serde::Serialize;

use crate::config::Settings;
use crate::db::{self, LockSpace};
use crate::ident::{qualified, quote};
use crate::migrations::MigrationSet;
use crate::registry::Tenant;
use crate::runner::{self, history_table_ddl, recreate_sql, session_settings};
use crate::state::SchemaState;

/// What a command would do to one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedTenant {
    /// Domain.
    pub domain: String,
    /// Schema.
    pub schema_name: String,
    /// Revision now.
    pub from_revision: Option<i32>,
    /// Revision afterwards.
    pub to_revision: Option<i32>,
    /// Versions that would be applied (upgrade) or reverted (downgrade).
    pub versions: Vec<i32>,
    /// The SQL, in order, as it would be sent; empty when there is nothing to do.
    pub sql: String,
    /// Why the command would refuse or fail for this tenant.
    pub error: Option<String>,
    /// Why the tenant would be skipped (a filter selected it but it has no schema yet).
    pub skipped: Option<String>,
}

/// The whole dry run.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// Always true: nothing was changed.
    pub dry_run: bool,
    /// One entry per selected tenant.
    pub tenants: Vec<PlannedTenant>,
}

/// What to plan.
#[derive(Debug, Clone, Copy)]
pub enum Plan {
    /// `provision`, optionally `--force-recreate`.
    Provision {
        /// Drop and recreate existing schemas.
        recreate: bool,
    },
    /// `upgrade TARGET`.
    Upgrade(i32),
    /// `downgrade TARGET`.
    Downgrade(i32),
}

/// Plans every tenant from the observed states.
pub fn plan(
    tenants: &[Tenant],
    states: &HashMap<String, SchemaState>,
    set: &MigrationSet,
    settings: &Settings,
    what: Plan,
    unprovisioned: crate::fleet::Unprovisioned,
) -> DryRun {
    let tenants = tenants
        .iter()
        .map(|t| {
            let st = states.get(&t.schema_name);
            let current = st.and_then(SchemaState::current);
            let mut p = PlannedTenant {
                domain: t.domain.clone(),
                schema_name: t.schema_name.clone(),
                from_revision: current,
                to_revision: current,
                versions: Vec::new(),
                sql: String::new(),
                error: None,
                skipped: None,
            };
            let exists = st.is_some_and(|s| s.schema_exists);
            match what {
                Plan::Provision { recreate } => {
                    if !exists {
                        p.sql = format!("CREATE SCHEMA {};\n", quote(&t.schema_name));
                    } else if recreate {
                        p.sql = format!("{};\n", recreate_sql(&t.schema_name));
                        p.to_revision = None;
                    }
                }
                Plan::Upgrade(target) | Plan::Downgrade(target) => {
                    if !exists {
                        let why = format!(
                            "schema {} does not exist; provision it first",
                            quote(&t.schema_name)
                        );
                        match unprovisioned {
                            crate::fleet::Unprovisioned::Skip => p.skipped = Some(why),
                            crate::fleet::Unprovisioned::Fail => p.error = Some(why),
                        }
                        return p;
                    }
                    let history = match st.map(|s| &s.history) {
                        Some(Ok(h)) => h.clone(),
                        Some(Err(e)) => {
                            p.error = Some(e.clone());
                            return p;
                        }
                        None => Vec::new(),
                    };
                    let steps = match what {
                        Plan::Upgrade(_) => {
                            runner::upgrade_steps(&history, set, target, &t.schema_name)
                        }
                        _ => runner::downgrade_steps(&history, set, target, &t.schema_name),
                    };
                    match steps {
                        Err(e) => p.error = Some(e),
                        Ok(steps) if steps.is_empty() => {}
                        Ok(steps) => {
                            p.versions = steps.iter().map(|f| f.version).collect();
                            p.to_revision = match what {
                                Plan::Upgrade(_) => steps.last().map(|f| f.version),
                                _ => history
                                    .iter()
                                    .map(|r| r.version)
                                    .filter(|v| *v <= target)
                                    .max(),
                            };
                            p.sql =
                                session_sql(t, &steps, settings, matches!(what, Plan::Upgrade(_)));
                        }
                    }
                }
            }
            p
        })
        .collect();
    DryRun {
        dry_run: true,
        tenants,
    }
}

fn session_sql(
    t: &Tenant,
    steps: &[&crate::migrations::MigrationFile],
    settings: &Settings,
    up: bool,
) -> String {
    let table = qualified(&t.schema_name, &settings.history_table);
    let reset = session_settings(settings, &t.schema_name);
    let (k1, k2) = db::lock_key(LockSpace::Tenant, &t.schema_name);
    let mut out = format!("SELECT pg_advisory_lock({k1}, {k2});\n");
    if up {
        out.push_str(&format!("{};\n", history_table_ddl(&table)));
    }
    let now = runner::refinery_now();
    for f in steps {
        let script = if up {
            &f.up
        } else {
            f.down.as_ref().unwrap_or(&f.up)
        };
        out.push_str(&format!("\n{reset};\n"));
        if script.no_transaction {
            out.push_str("-- no-transaction file: each statement commits on its own\n");
        } else {
            out.push_str("BEGIN;\n");
        }
        if up {
            out.push_str(&format!(
                "-- V{}__{} ({})\n",
                f.version,
                f.name,
                f.up_path.display()
            ));
            out.push_str(f.up_sql.trim_start_matches('\u{feff}').trim_end());
            out.push_str(&format!(
                "\nRESET SESSION AUTHORIZATION; RESET ROLE;\nINSERT INTO {table} (version, name, applied_on, checksum) VALUES ({}, '{}', '{now}', '{}');\n",
                f.version, f.name, f.checksum
            ));
        } else {
            let path = f
                .down_path
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            out.push_str(&format!("-- V{}__{} down ({path})\n", f.version, f.name));
            out.push_str(
                f.down_sql
                    .as_deref()
                    .unwrap_or("")
                    .trim_start_matches('\u{feff}')
                    .trim_end(),
            );
            out.push_str(&format!(
                "\nRESET SESSION AUTHORIZATION; RESET ROLE;\nDELETE FROM {table} WHERE version = {};\n",
                f.version
            ));
        }
        if !script.no_transaction {
            out.push_str("COMMIT;\n");
        }
    }
    out.push_str(&format!("\nSELECT pg_advisory_unlock({k1}, {k2});\n"));
    out
}
