//! Work on one tenant: a dedicated session that holds the tenant's advisory lock, with
//! `search_path` pinned to the tenant's schema, to provision it and to apply migrations
//! through refinery.
//!
//! The session's lock is a session-level advisory lock keyed by the schema name, so two
//! tenantctl processes never work on one tenant at once; the second waits, then finds
//! nothing left to do. Every migration runs in its own transaction (refinery's), so a
//! failure leaves the tenant at the last version that fully applied.

use std::time::Duration;

use tokio_postgres::error::ErrorPosition;
use tokio_postgres::Client;

use crate::config::Settings;
use crate::db::{self, query_error, LockSpace};
use crate::error::Error;
use crate::ident::{qualified, quote};
use crate::migrations::{compare, MigrationSet};
use crate::registry::{self, Event, Observed, Outcome, Tables, Tenant};
use crate::state::{self, SchemaState};

/// A locked session on one tenant.
pub struct Session<'a> {
    client: Client,
    schema: &'a str,
    settings: &'a Settings,
}

/// What an upgrade did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Versions applied, in order.
    pub versions: Vec<i32>,
}

impl<'a> Session<'a> {
    /// Connects, takes the tenant's lock (waiting for any other run on it), and pins
    /// `search_path`, `lock_timeout` and `statement_timeout`.
    pub async fn open(
        target: &db::Target,
        settings: &'a Settings,
        schema: &'a str,
    ) -> Result<Session<'a>, Error> {
        let client = target.connect().await?;
        let (k1, k2) = db::lock_key(LockSpace::Tenant, schema);
        let setup = format!(
            "SET lock_timeout = 0; SELECT pg_advisory_lock({k1}, {k2}); {}",
            session_settings(settings, schema)
        );
        client
            .batch_execute(&setup)
            .await
            .map_err(query_error(&format!(
                "opening a session on schema {}",
                quote(schema)
            )))?;
        Ok(Session {
            client,
            schema,
            settings,
        })
    }

    /// The session's connection (search_path pinned, lock held).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// What the schema and its history look like now.
    pub async fn observe(&self) -> Result<SchemaState, Error> {
        let mut map = state::observe(
            &self.client,
            &[self.schema.to_string()],
            &self.settings.history_table,
        )
        .await?;
        Ok(map
            .remove(self.schema)
            .expect("observe returns every schema asked for"))
    }

    /// Creates the schema unless it exists. Returns whether it was created.
    pub async fn provision(&self) -> Result<bool, Error> {
        if self.observe().await?.schema_exists {
            return Ok(false);
        }
        self.client
            .batch_execute(&format!("CREATE SCHEMA {}", quote(self.schema)))
            .await
            .map_err(query_error(&format!(
                "creating schema {}",
                quote(self.schema)
            )))?;
        Ok(true)
    }

    /// Applies pending migrations up to `target`. Refuses, before running anything, when
    /// the schema is missing or its history has drifted from the files.
    pub async fn upgrade(
        &mut self,
        set: &MigrationSet,
        target: i32,
    ) -> Result<Applied, UpgradeError> {
        let state = self.observe().await.map_err(UpgradeError::before)?;
        if !state.schema_exists {
            return Err(UpgradeError::NotProvisioned);
        }
        let history = state
            .history
            .clone()
            .map_err(|e| UpgradeError::before(Error::failed(e)))?;
        let cmp = compare(&history, set);
        if !cmp.drift.is_empty() {
            let lines: Vec<String> = cmp.drift.iter().map(|d| d.to_string()).collect();
            return Err(UpgradeError::before(Error::failed(format!(
                "history of schema {} does not match the migration files; nothing was applied: {}",
                quote(self.schema),
                lines.join("; ")
            ))));
        }
        let to_apply: Vec<i32> = cmp
            .pending
            .iter()
            .copied()
            .filter(|v| *v <= target)
            .collect();
        if to_apply.is_empty() {
            return Ok(Applied {
                versions: Vec::new(),
            });
        }
        let migrations: Vec<refinery::Migration> =
            set.files.iter().map(|f| f.to_refinery()).collect();
        let table = qualified(self.schema, &self.settings.history_table);
        let reset = session_settings(self.settings, self.schema);
        let mut applied: Vec<i32> = Vec::new();
        // One refinery run per migration, each after a fresh RESET ALL and the session's
        // settings: a `SET search_path` (or any SET) inside one migration must not carry
        // into the next.
        for version in to_apply {
            let result = match self.client.batch_execute(&reset).await {
                Ok(()) => {
                    let mut runner = refinery::Runner::new(&migrations)
                        .set_target(refinery::Target::Version(version))
                        .set_grouped(false)
                        .set_abort_divergent(true)
                        .set_abort_missing(true);
                    runner.set_migration_table_name(&table);
                    runner
                        .run_async(&mut self.client)
                        .await
                        .map_err(|e| describe_failure(set, Some(version), &e))
                }
                Err(e) => Err(format!(
                    "resetting the session before version {version}: {}",
                    db::pg_message(&e)
                )),
            };
            match result {
                Ok(report) => {
                    applied.extend(report.applied_migrations().iter().map(|m| m.version()))
                }
                Err(message) => return Err(UpgradeError::During { applied, message }),
            }
        }
        let _ = self.client.batch_execute(&reset).await;
        Ok(Applied { versions: applied })
    }

    /// Records in the registry what is true now, through this session, while the lock is
    /// still held, with a ledger entry when given. Returns the updated row.
    pub async fn record(
        &self,
        tables: &Tables,
        tenant_id: i64,
        outcome: Outcome<'_>,
        event: Option<&Event<'_>>,
    ) -> Result<Tenant, Error> {
        let state = self.observe().await?;
        registry::record_with(
            &self.client,
            tables,
            tenant_id,
            &observed(&state),
            outcome,
            event,
        )
        .await
    }
}

/// Summarises a schema state for the registry.
pub fn observed(state: &SchemaState) -> Observed {
    Observed {
        schema_exists: state.schema_exists,
        current: state.current(),
    }
}

/// Why an upgrade did not complete.
#[derive(Debug)]
pub enum UpgradeError {
    /// The tenant's schema does not exist.
    NotProvisioned,
    /// Refused or failed before any migration ran.
    Before(Error),
    /// A migration failed; those before it stayed applied.
    During {
        /// Versions applied before the failure.
        applied: Vec<i32>,
        /// What failed, with the database's message.
        message: String,
    },
}

impl UpgradeError {
    fn before(e: Error) -> Self {
        UpgradeError::Before(e)
    }

    /// The error text for results and the registry.
    pub fn message(&self, schema: &str, domain: &str) -> String {
        match self {
            UpgradeError::NotProvisioned => format!(
                "schema {} does not exist; run `tenantctl provision --tenant {domain}` first",
                quote(schema)
            ),
            UpgradeError::Before(e) => e.to_string(),
            UpgradeError::During { message, .. } => message.clone(),
        }
    }
}

fn describe_failure(set: &MigrationSet, failing: Option<i32>, e: &refinery::Error) -> String {
    let pg = db::find_pg_message(e);
    let position = find_position(e);
    match failing.and_then(|v| set.get(v)) {
        Some(f) => {
            let line = position
                .and_then(|p| line_of(&f.up_sql, p))
                .map(|l| format!(" at line {l}"))
                .unwrap_or_default();
            format!(
                "migration V{}__{} ({}) failed{line}: {}",
                f.version,
                f.name,
                f.up_path.display(),
                pg.unwrap_or_else(|| e.to_string())
            )
        }
        None => format!("migration failed: {}", pg.unwrap_or_else(|| e.to_string())),
    }
}

fn find_position(e: &(dyn std::error::Error + 'static)) -> Option<u32> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(pg) = err.downcast_ref::<tokio_postgres::Error>() {
            return match pg.as_db_error()?.position()? {
                ErrorPosition::Original(p) => Some(*p),
                ErrorPosition::Internal { .. } => None,
            };
        }
        current = err.source();
    }
    None
}

/// The 1-based line of a 1-based character position in `sql`.
fn line_of(sql: &str, position: u32) -> Option<usize> {
    let idx = (position as usize).checked_sub(1)?;
    let before: String = sql.chars().take(idx).collect();
    (before.chars().count() == idx).then(|| before.matches('\n').count() + 1)
}

/// The session state every migration starts from: defaults (`RESET ALL`), then
/// `search_path` = the tenant's schema and the extra schemas, and the timeouts.
fn session_settings(settings: &Settings, schema: &str) -> String {
    let mut path = vec![quote(schema)];
    path.extend(settings.extra_search_path.iter().map(|s| quote(s)));
    format!(
        "RESET ALL; SET search_path TO {}; SET lock_timeout = {}; SET statement_timeout = {}",
        path.join(", "),
        millis(settings.lock_timeout),
        millis(settings.statement_timeout),
    )
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_map_to_lines() {
        let sql = "-- header\nCREATE TABLE a ();\nSELEC 1;\n";
        let pos = sql.find("SELEC").unwrap() as u32 + 1;
        assert_eq!(line_of(sql, pos), Some(3));
        assert_eq!(line_of(sql, 1), Some(1));
        assert_eq!(line_of(sql, 0), None);
        assert_eq!(line_of("ab", 99), None);
    }
}
