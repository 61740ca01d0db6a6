//! Dry runs: the exact SQL an `upgrade`, `downgrade`, `provision` or `stamp` would send for
//! each tenant, built from one batched observation. Nothing is changed and no lock is taken.
//!
//! A tenant's SQL is never built as one string: a [`Script`] refers to the migration files
//! and writes them out piece by piece when printed (text, or JSON through
//! `collect_str`), so memory stays bounded by the files, not by files × tenants.

use std::collections::HashMap;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::config::Settings;
use crate::db::{self, LockSpace};
use crate::ident::{qualified, quote};
use crate::migrations::{MigrationFile, MigrationSet};
use crate::registry::Tenant;
use crate::runner::{self, history_table_ddl, recreate_sql, session_settings};
use crate::state::SchemaState;

/// What a command would do to one tenant.
#[derive(Debug, Serialize)]
pub struct PlannedTenant<'s> {
    /// Domain.
    pub domain: String,
    /// Schema.
    pub schema_name: String,
    /// Revision now.
    pub from_revision: Option<i32>,
    /// Revision afterwards.
    pub to_revision: Option<i32>,
    /// Versions that would be applied (upgrade), reverted (downgrade) or newly recorded
    /// (stamp).
    pub versions: Vec<i32>,
    /// Recorded versions `stamp` would forget (empty for the other commands).
    pub forgotten: Vec<i32>,
    /// The SQL, in order, as it would be sent; empty when there is nothing to do.
    pub sql: Script<'s>,
    /// Why the command would refuse or fail for this tenant.
    pub error: Option<String>,
    /// Why the tenant would be skipped (a filter selected it but it has no schema yet).
    pub skipped: Option<String>,
}

/// The whole dry run.
#[derive(Debug, Serialize)]
pub struct DryRun<'s> {
    /// Always true: nothing was changed.
    pub dry_run: bool,
    /// One entry per selected tenant.
    pub tenants: Vec<PlannedTenant<'s>>,
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
    /// `stamp TARGET`.
    Stamp(i32),
}

/// One tenant's SQL, written out when displayed or serialised (as one JSON string).
#[derive(Debug, Default)]
pub struct Script<'s>(Body<'s>);

#[derive(Debug, Default)]
enum Body<'s> {
    #[default]
    Empty,
    /// Short SQL (provisioning).
    Text(String),
    /// A locked session applying, reverting or recording migration files.
    Session(Session<'s>),
}

#[derive(Debug)]
struct Session<'s> {
    /// The advisory lock keys.
    keys: (i32, i32),
    /// The history table, qualified and quoted.
    table: String,
    /// The session settings each migration starts from.
    reset: String,
    /// `applied_on` as it would be recorded.
    now: String,
    mode: Mode,
    steps: Vec<&'s MigrationFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    Down,
    /// Record `steps` and forget the versions above the target.
    Stamp(i32),
}

impl Script<'_> {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        matches!(self.0, Body::Empty)
    }

    /// Drops the SQL: the tenant would be refused, so nothing would be sent.
    pub fn clear(&mut self) {
        self.0 = Body::Empty;
    }
}

impl fmt::Display for Script<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Body::Empty => Ok(()),
            Body::Text(t) => f.write_str(t),
            Body::Session(s) => s.write(f),
        }
    }
}

impl Serialize for Script<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // serde_json escapes and writes the pieces as they come: no copy of the script.
        serializer.collect_str(self)
    }
}

impl Session<'_> {
    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = &self.table;
        let (k1, k2) = self.keys;
        writeln!(f, "SELECT pg_advisory_lock({k1}, {k2});")?;
        match self.mode {
            Mode::Up => writeln!(f, "{};", history_table_ddl(table))?,
            Mode::Down => {}
            Mode::Stamp(target) => {
                writeln!(f, "BEGIN;\n{};", history_table_ddl(table))?;
                writeln!(f, "DELETE FROM {table} WHERE version > {target};")?;
                for s in &self.steps {
                    writeln!(
                        f,
                        "INSERT INTO {table} (version, name, applied_on, checksum) VALUES ({}, '{}', '{}', '{}');",
                        s.version, s.name, self.now, s.checksum
                    )?;
                }
                writeln!(f, "COMMIT;")?;
            }
        }
        if !matches!(self.mode, Mode::Stamp(_)) {
            for s in &self.steps {
                let up = self.mode == Mode::Up;
                let script = if up {
                    &s.up
                } else {
                    s.down.as_ref().unwrap_or(&s.up)
                };
                write!(f, "\n{};\n", self.reset)?;
                if script.no_transaction {
                    writeln!(
                        f,
                        "-- no-transaction file: each statement commits on its own"
                    )?;
                } else {
                    writeln!(f, "BEGIN;")?;
                }
                if up {
                    writeln!(f, "-- V{}__{} ({})", s.version, s.name, s.up_path.display())?;
                    f.write_str(s.up_sql.trim_start_matches('\u{feff}').trim_end())?;
                    writeln!(
                        f,
                        "\nRESET SESSION AUTHORIZATION; RESET ROLE;\nINSERT INTO {table} (version, name, applied_on, checksum) VALUES ({}, '{}', '{}', '{}');",
                        s.version, s.name, self.now, s.checksum
                    )?;
                } else {
                    let path = s
                        .down_path
                        .as_deref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    writeln!(f, "-- V{}__{} down ({path})", s.version, s.name)?;
                    f.write_str(
                        s.down_sql
                            .as_deref()
                            .unwrap_or("")
                            .trim_start_matches('\u{feff}')
                            .trim_end(),
                    )?;
                    writeln!(
                        f,
                        "\nRESET SESSION AUTHORIZATION; RESET ROLE;\nDELETE FROM {table} WHERE version = {};",
                        s.version
                    )?;
                }
                if !script.no_transaction {
                    writeln!(f, "COMMIT;")?;
                }
            }
        }
        writeln!(f, "\nSELECT pg_advisory_unlock({k1}, {k2});")
    }
}

/// Plans every tenant from the observed states.
pub fn plan<'s>(
    tenants: &[Tenant],
    states: &HashMap<String, SchemaState>,
    set: &'s MigrationSet,
    settings: &Settings,
    what: Plan,
    unprovisioned: crate::fleet::Unprovisioned,
) -> DryRun<'s> {
    let tenants = tenants
        .iter()
        .map(|t| {
            plan_one(
                t,
                states.get(&t.schema_name),
                set,
                settings,
                what,
                unprovisioned,
            )
        })
        .collect();
    DryRun {
        dry_run: true,
        tenants,
    }
}

fn plan_one<'s>(
    t: &Tenant,
    st: Option<&SchemaState>,
    set: &'s MigrationSet,
    settings: &Settings,
    what: Plan,
    unprovisioned: crate::fleet::Unprovisioned,
) -> PlannedTenant<'s> {
    let current = st.and_then(SchemaState::current);
    let mut p = PlannedTenant {
        domain: t.domain.clone(),
        schema_name: t.schema_name.clone(),
        from_revision: current,
        to_revision: current,
        versions: Vec::new(),
        forgotten: Vec::new(),
        sql: Script::default(),
        error: None,
        skipped: None,
    };
    let exists = st.is_some_and(|s| s.schema_exists);
    let target = match what {
        Plan::Provision { recreate } => {
            if !exists {
                p.sql = Script(Body::Text(format!(
                    "CREATE SCHEMA {};\n",
                    quote(&t.schema_name)
                )));
            } else if recreate {
                p.sql = Script(Body::Text(format!("{};\n", recreate_sql(&t.schema_name))));
                p.to_revision = None;
            }
            return p;
        }
        Plan::Upgrade(target) | Plan::Downgrade(target) | Plan::Stamp(target) => target,
    };
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
        Some(Ok(h)) => h.as_slice(),
        Some(Err(e)) => {
            p.error = Some(e.clone());
            return p;
        }
        None => &[],
    };
    let (mode, steps) = match what {
        Plan::Upgrade(_) => (
            Mode::Up,
            runner::upgrade_steps(history, set, target, &t.schema_name),
        ),
        Plan::Downgrade(_) => (
            Mode::Down,
            runner::downgrade_steps(history, set, target, &t.schema_name),
        ),
        _ => match runner::stamp_plan(history, set, target, &t.schema_name) {
            Ok(plan) => {
                p.forgotten = plan.delete;
                (Mode::Stamp(target), Ok(plan.insert))
            }
            Err(e) => (Mode::Stamp(target), Err(e)),
        },
    };
    let steps = match steps {
        Ok(steps) => steps,
        Err(e) => {
            p.error = Some(e);
            return p;
        }
    };
    if steps.is_empty() && p.forgotten.is_empty() {
        return p;
    }
    p.versions = steps.iter().map(|f| f.version).collect();
    p.to_revision = match mode {
        Mode::Up => steps.last().map(|f| f.version),
        Mode::Down | Mode::Stamp(_) => history
            .iter()
            .map(|r| r.version)
            .chain(p.versions.iter().copied())
            .filter(|v| *v <= target)
            .max(),
    };
    p.sql = Script(Body::Session(Session {
        keys: db::lock_key(LockSpace::Tenant, &t.schema_name),
        table: qualified(&t.schema_name, &settings.history_table),
        reset: session_settings(settings, &t.schema_name),
        now: runner::refinery_now(),
        mode,
        steps,
    }));
    p
}
