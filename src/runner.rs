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
use crate::migrations::{compare, AppliedRow, MigrationFile, MigrationSet};
use crate::registry::{self, Event, Observed, Outcome, Tables, Tenant};
use crate::state::{self, SchemaState};

/// A locked session on one tenant.
pub struct Session<'a> {
    client: Client,
    schema: &'a str,
    settings: &'a Settings,
    /// The last observation, kept until this session changes the schema, so one run on
    /// a tenant reads its state once before changing it and once after.
    known: std::sync::Mutex<Option<SchemaState>>,
}

/// What an upgrade did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Versions applied (or reverted, or newly recorded), in order.
    pub versions: Vec<i32>,
    /// Whether the history changed.
    pub changed: bool,
}

impl Applied {
    fn of(versions: Vec<i32>) -> Applied {
        Applied {
            changed: !versions.is_empty(),
            versions,
        }
    }
}

impl<'a> Session<'a> {
    /// Connects, takes the tenant's lock (waiting for any other run on it), and pins
    /// `search_path`, `lock_timeout` and `statement_timeout`.
    pub async fn open(
        target: &db::Target,
        settings: &'a Settings,
        schema: &'a str,
    ) -> Result<Session<'a>, Error> {
        let client = target.connect_patiently(settings.connect_timeout).await?;
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
            known: std::sync::Mutex::new(None),
        })
    }

    /// The session's connection (search_path pinned, lock held).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// What the schema and its history look like now, read from the database.
    pub async fn observe(&self) -> Result<SchemaState, Error> {
        let mut map = state::observe(
            &self.client,
            &[self.schema.to_string()],
            &self.settings.history_table,
        )
        .await?;
        let state = map
            .remove(self.schema)
            .expect("observe returns every schema asked for");
        self.remember(Some(state.clone()));
        Ok(state)
    }

    /// The schema's state: the last observation if this session has changed nothing
    /// since (the tenant's lock keeps others out), else a fresh read.
    pub async fn state(&self) -> Result<SchemaState, Error> {
        let cached = self.known.lock().expect("session state lock").clone();
        match cached {
            Some(state) => Ok(state),
            None => self.observe().await,
        }
    }

    fn remember(&self, state: Option<SchemaState>) {
        *self.known.lock().expect("session state lock") = state;
    }

    /// Creates the schema unless it exists. Returns whether it was created.
    pub async fn provision(&self) -> Result<bool, Error> {
        if self.state().await?.schema_exists {
            return Ok(false);
        }
        self.remember(None);
        self.client
            .batch_execute(&format!("CREATE SCHEMA {}", quote(self.schema)))
            .await
            .map_err(query_error(&format!(
                "creating schema {}",
                quote(self.schema)
            )))?;
        self.remember(Some(SchemaState {
            schema_exists: true,
            history_exists: false,
            history: Ok(Vec::new()),
        }));
        Ok(true)
    }

    /// The schema's history, or why this operation cannot go on.
    async fn history(&self) -> Result<Vec<AppliedRow>, UpgradeError> {
        let state = self.state().await.map_err(UpgradeError::before)?;
        if !state.schema_exists {
            return Err(UpgradeError::NotProvisioned);
        }
        state
            .history
            .map_err(|e| UpgradeError::before(Error::failed(e)))
    }

    /// Applies pending migrations up to `target`. Refuses, before running anything, when
    /// the schema is missing or its history has drifted from the files.
    pub async fn upgrade(
        &mut self,
        set: &MigrationSet,
        target: i32,
    ) -> Result<Applied, UpgradeError> {
        let history = self.history().await?;
        // Whatever happens next may change the schema: read it afresh afterwards.
        self.remember(None);
        let to_apply: Vec<i32> = upgrade_steps(&history, set, target, self.schema)
            .map_err(|e| UpgradeError::before(Error::failed(e)))?
            .iter()
            .map(|f| f.version)
            .collect();
        if to_apply.is_empty() {
            return Ok(Applied::of(Vec::new()));
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
            let mut attempt: u32 = 0;
            let result = loop {
                let outcome = match self.client.batch_execute(&reset).await {
                    Ok(()) => {
                        let mut runner = refinery::Runner::new(&migrations)
                            .set_target(refinery::Target::Version(version))
                            .set_grouped(false)
                            .set_abort_divergent(true)
                            .set_abort_missing(true);
                        runner.set_migration_table_name(&table);
                        runner.run_async(&mut self.client).await.map_err(|e| {
                            let lock = is_lock_timeout(&e);
                            (describe_failure(set, Some(version), &e), lock)
                        })
                    }
                    Err(e) => Err((
                        format!(
                            "resetting the session before version {version}: {}",
                            db::pg_message(&e)
                        ),
                        false,
                    )),
                };
                match outcome {
                    Err((_, true)) if attempt < self.settings.lock_retries => {
                        // The transaction rolled back; wait for the other session, then retry.
                        tokio::time::sleep(retry_delay(self.settings.lock_retry_delay, attempt)).await;
                        attempt += 1;
                    }
                    Err((message, true)) => {
                        break Err(format!(
                            "{message} (gave up after {} attempts with lock_timeout {} ms: another session holds a lock this migration needs; see pg_locks and pg_stat_activity, or raise run.lock_timeout / run.lock_retries)",
                            attempt + 1,
                            self.settings.lock_timeout.as_millis()
                        ))
                    }
                    Err((message, false)) => break Err(message),
                    Ok(report) => break Ok(report),
                }
            };
            match result {
                Ok(report) => {
                    applied.extend(report.applied_migrations().iter().map(|m| m.version()))
                }
                Err(message) => return Err(UpgradeError::During { applied, message }),
            }
        }
        let _ = self.client.batch_execute(&reset).await;
        Ok(Applied::of(applied))
    }

    /// Runs down scripts, newest first, until `target` is the highest applied version.
    /// Each runs in a transaction with the removal of its history row. Refuses before
    /// anything runs when the history has drifted or a needed down script is missing.
    pub async fn downgrade(
        &mut self,
        set: &MigrationSet,
        target: i32,
    ) -> Result<Applied, UpgradeError> {
        let history = self.history().await?;
        // Whatever happens next may change the schema: read it afresh afterwards.
        self.remember(None);
        let steps = downgrade_steps(&history, set, target, self.schema)
            .map_err(|e| UpgradeError::before(Error::failed(e)))?;
        let table = qualified(self.schema, &self.settings.history_table);
        let reset = session_settings(self.settings, self.schema);
        let mut reverted = Vec::new();
        for f in steps {
            let down = f
                .down_sql
                .as_deref()
                .expect("downgrade_steps checked the down script");
            let mut attempt: u32 = 0;
            let result: Result<(), tokio_postgres::Error> = loop {
                let result: Result<(), tokio_postgres::Error> = async {
                    self.client.batch_execute(&reset).await?;
                    let tx = self.client.transaction().await?;
                    tx.batch_execute(down).await?;
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE version = $1"),
                        &[&f.version],
                    )
                    .await?;
                    tx.commit().await
                }
                .await;
                match result {
                    Err(e) if is_lock_timeout(&e) && attempt < self.settings.lock_retries => {
                        tokio::time::sleep(retry_delay(self.settings.lock_retry_delay, attempt))
                            .await;
                        attempt += 1;
                    }
                    other => break other,
                }
            };
            if let Err(e) = result {
                let line = find_position(&e)
                    .and_then(|p| line_of(down, p))
                    .map(|l| format!(" at line {l}"))
                    .unwrap_or_default();
                let path = f
                    .down_path
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                return Err(UpgradeError::During {
                    applied: reverted,
                    message: format!(
                        "down script of V{}__{} ({path}) failed{line}: {}",
                        f.version,
                        f.name,
                        db::pg_message(&e)
                    ),
                });
            }
            reverted.push(f.version);
        }
        let _ = self.client.batch_execute(&reset).await;
        Ok(Applied::of(reverted))
    }

    /// Records the migrations up to `target` as applied without running them (and forgets
    /// those above it), with the checksums an upgrade would store. Returns the versions
    /// newly recorded.
    pub async fn stamp(
        &mut self,
        set: &MigrationSet,
        target: i32,
    ) -> Result<Applied, UpgradeError> {
        let history = self.history().await?;
        // Whatever happens next may change the schema: read it afresh afterwards.
        self.remember(None);
        let plan = stamp_plan(&history, set, target, self.schema)
            .map_err(|e| UpgradeError::before(Error::failed(e)))?;
        let table = qualified(self.schema, &self.settings.history_table);
        let applied_on = refinery_now();
        let result: Result<(), tokio_postgres::Error> = async {
            let tx = self.client.transaction().await?;
            tx.batch_execute(&history_table_ddl(&table)).await?;
            tx.execute(&format!("DELETE FROM {table} WHERE version > $1"), &[&target]).await?;
            for f in &plan.insert {
                tx.execute(
                    &format!("INSERT INTO {table} (version, name, applied_on, checksum) VALUES ($1, $2, $3, $4)"),
                    &[&f.version, &f.name, &applied_on, &f.checksum.to_string()],
                )
                .await?;
            }
            tx.commit().await
        }
        .await;
        result.map_err(|e| UpgradeError::During {
            applied: Vec::new(),
            message: format!(
                "stamping schema {}: {}",
                quote(self.schema),
                db::pg_message(&e)
            ),
        })?;
        Ok(Applied {
            versions: plan.insert.iter().map(|f| f.version).collect(),
            changed: !plan.insert.is_empty() || !plan.delete.is_empty(),
        })
    }

    /// Drops the schema with everything in it and creates it empty, in one transaction.
    pub async fn recreate(&mut self) -> Result<(), Error> {
        self.remember(None);
        self.client
            .batch_execute(&recreate_sql(self.schema))
            .await
            .map_err(query_error(&format!(
                "recreating schema {}",
                quote(self.schema)
            )))
    }

    /// Removes the tenant from the registry and, unless `keep_schema`, drops its schema,
    /// in one transaction with its ledger entry.
    pub async fn drop_tenant(
        &mut self,
        tables: &Tables,
        tenant: &Tenant,
        keep_schema: bool,
        event: &Event<'_>,
    ) -> Result<(), Error> {
        let schema = self.schema;
        let result: Result<u64, tokio_postgres::Error> = async {
            let tx = self.client.transaction().await?;
            let n = tx.execute(&format!("DELETE FROM {} WHERE id = $1", tables.tenants), &[&tenant.id]).await?;
            if n == 0 {
                // Dropped by another command while this one waited for the lock: change nothing.
                return Ok(0);
            }
            if !keep_schema {
                tx.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", quote(schema))).await?;
            }
            tx.execute(
                &format!(
                    "INSERT INTO {} (run_id, tenant_id, domain, schema_name, action, from_revision, to_revision, status, started_at, client_host) \
                     VALUES ($1::text::uuid, $2, $3, $4, $5, $6, NULL, 'ok', $7, $8)",
                    tables.events
                ),
                &[&event.run_id, &tenant.id, &tenant.domain, &tenant.schema_name, &event.action, &event.from_revision, &event.started_at, &event.client_host],
            )
            .await?;
            tx.commit().await?;
            Ok(n)
        }
        .await;
        match result {
            Ok(0) => Err(Error::failed(format!(
                "tenant {} was already removed from the registry",
                tenant.domain
            ))),
            Ok(_) => Ok(()),
            Err(e) => Err(query_error(&format!("dropping tenant {}", tenant.domain))(
                e,
            )),
        }
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
        let state = self.state().await?;
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
    Observed::of(state)
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

/// What an upgrade to `target` would apply, in order; an error when the history has
/// drifted from the files.
pub fn upgrade_steps<'s>(
    history: &[AppliedRow],
    set: &'s MigrationSet,
    target: i32,
    schema: &str,
) -> Result<Vec<&'s MigrationFile>, String> {
    let cmp = compare(history, set);
    refuse_drift(&cmp, schema)?;
    Ok(cmp
        .pending
        .iter()
        .filter(|v| **v <= target)
        .filter_map(|v| set.get(*v))
        .collect())
}

/// What a downgrade to `target` would revert, newest first; an error when the history has
/// drifted or a down script is missing.
pub fn downgrade_steps<'s>(
    history: &[AppliedRow],
    set: &'s MigrationSet,
    target: i32,
    schema: &str,
) -> Result<Vec<&'s MigrationFile>, String> {
    let cmp = compare(history, set);
    refuse_drift(&cmp, schema)?;
    let mut versions: Vec<i32> = history
        .iter()
        .map(|r| r.version)
        .filter(|v| *v > target)
        .collect();
    versions.sort_unstable_by(|a, b| b.cmp(a));
    let steps: Vec<&MigrationFile> = versions.iter().filter_map(|v| set.get(*v)).collect();
    let missing: Vec<String> = steps
        .iter()
        .filter(|f| f.down_sql.is_none())
        .map(|f| format!("V{}__{}.down.sql", f.version, f.name))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "cannot downgrade schema {} to {target}: no down script {} in {}; nothing was run",
            quote(schema),
            missing.join(", "),
            set.dir.display()
        ));
    }
    Ok(steps)
}

/// What `stamp` would change.
#[derive(Debug)]
pub struct StampPlan<'s> {
    /// Migrations to record as applied.
    pub insert: Vec<&'s MigrationFile>,
    /// Recorded versions above the target, to forget.
    pub delete: Vec<i32>,
}

/// What stamping `target` would record and forget; an error when a recorded version at or
/// below the target differs from its file.
pub fn stamp_plan<'s>(
    history: &[AppliedRow],
    set: &'s MigrationSet,
    target: i32,
    schema: &str,
) -> Result<StampPlan<'s>, String> {
    let kept: Vec<AppliedRow> = history
        .iter()
        .filter(|r| r.version <= target)
        .cloned()
        .collect();
    let cmp = compare(&kept, set);
    let drift: Vec<String> = cmp
        .drift
        .iter()
        .filter(|d| !matches!(d, crate::migrations::Drift::OutOfOrder { .. }))
        .map(|d| d.to_string())
        .collect();
    if !drift.is_empty() {
        return Err(format!(
            "history of schema {} does not match the migration files at or below {target}; nothing was stamped: {}",
            quote(schema),
            drift.join("; ")
        ));
    }
    Ok(StampPlan {
        insert: set
            .files
            .iter()
            .filter(|f| f.version <= target && !kept.iter().any(|r| r.version == f.version))
            .collect(),
        delete: history
            .iter()
            .map(|r| r.version)
            .filter(|v| *v > target)
            .collect(),
    })
}

fn refuse_drift(cmp: &crate::migrations::Comparison, schema: &str) -> Result<(), String> {
    if cmp.drift.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = cmp.drift.iter().map(|d| d.to_string()).collect();
    Err(format!(
        "history of schema {} does not match the migration files; nothing was run: {}",
        quote(schema),
        lines.join("; ")
    ))
}

/// The history table as refinery creates it.
pub fn history_table_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (version int4 PRIMARY KEY, name VARCHAR(255), applied_on VARCHAR(255), checksum VARCHAR(255))"
    )
}

/// The SQL that recreates a schema empty.
pub fn recreate_sql(schema: &str) -> String {
    format!(
        "BEGIN; DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}; COMMIT",
        s = quote(schema)
    )
}

/// Now, as refinery writes `applied_on`.
pub fn refinery_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("the current time formats as RFC 3339")
}

/// Whether an error is PostgreSQL's `lock_not_available` (a `lock_timeout` expired).
fn is_lock_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(pg) = err.downcast_ref::<tokio_postgres::Error>() {
            return pg.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE);
        }
        current = err.source();
    }
    false
}

/// The wait before retry number `attempt` (0-based): `base`, doubling, at most 30 s.
pub fn retry_delay(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.min(16))
        .min(Duration::from_secs(30))
}

/// The session state every migration starts from: defaults (`RESET ALL`), then
/// `search_path` = the tenant's schema and the extra schemas, and the timeouts.
pub fn session_settings(settings: &Settings, schema: &str) -> String {
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
    fn retry_delays_double_up_to_a_cap() {
        let base = Duration::from_millis(500);
        assert_eq!(retry_delay(base, 0), Duration::from_millis(500));
        assert_eq!(retry_delay(base, 1), Duration::from_secs(1));
        assert_eq!(retry_delay(base, 2), Duration::from_secs(2));
        assert_eq!(retry_delay(base, 40), Duration::from_secs(30));
    }

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
