//! Work on one tenant: a dedicated session that holds the tenant's advisory lock, with
//! `search_path` pinned to the tenant's schema, to provision it and to apply migrations.
//!
//! The session's lock is a session-level advisory lock keyed by the schema name, so two
//! tenantctl processes never work on one tenant at once; the second waits, then finds
//! nothing left to do. Every migration starts from a clean session and runs in its own
//! transaction, its statements sent one at a time as psql would send them, with its
//! history row written as refinery writes it; so a failure leaves the tenant at the last
//! version that fully applied. A `-- tenantctl: no-transaction` file runs statement by
//! statement outside a transaction, and its history row is written after the last one.
//!
//! The wait for the lock answers to the run's interruption and to `run.lock_wait`, and
//! after [`REPORT_WAIT_AFTER`] names the session holding the lock. Upgrades and
//! downgrades stop between two migrations once the run is asked to stop.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::error::ErrorPosition;
use tokio_postgres::{Client, GenericClient};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::db::{self, query_error, LockSpace};
use crate::dependents;
use crate::error::Error;
use crate::ident::{qualified, quote};
use crate::interrupt::{Interrupt, Registration};
use crate::migrations::{compare, AppliedRow, MigrationFile, MigrationSet, Script};
use crate::registry::{self, Event, Observed, Outcome, Tables, Tenant};
use crate::state::{self, SchemaState};

/// Where a session's notices go as each migration finishes.
type NoticeSink<'a> = Box<dyn Fn(&db::Notice) + Send + Sync + 'a>;

/// A locked session on one tenant.
pub struct Session<'a> {
    client: Client,
    notices: db::Notices,
    sink: Option<NoticeSink<'a>>,
    schema: &'a str,
    settings: &'a Settings,
    /// The last observation, kept until this session changes the schema, so one run on
    /// a tenant reads its state once before changing it and once after.
    known: std::sync::Mutex<Option<SchemaState>>,
    /// Cancelled when the run is asked to stop: upgrades and downgrades end between two
    /// migrations.
    stop: CancellationToken,
    /// Keeps this session in the set an abort cancels, while it is open.
    _registration: Registration,
}

/// How long a session waits for its tenant's lock before it reports who holds it.
pub const REPORT_WAIT_AFTER: Duration = Duration::from_secs(3);

/// How long a session whose lock wait was given up waits for the server to confirm it.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// What a session's wait for its tenant's lock answers to.
pub struct LockWait<'w> {
    /// The run's interruption: a graceful stop ends the wait (the server-side wait is
    /// cancelled), and an abort cancels whatever the session runs.
    pub interrupt: &'w Interrupt,
    /// Told who holds the lock (when that could be found out) once the wait has lasted
    /// [`REPORT_WAIT_AFTER`].
    pub report: &'w (dyn Fn(Option<&LockHolder>) + Sync),
}

/// The session holding a tenant's advisory lock, as `pg_locks` and `pg_stat_activity`
/// show it. Fields the server hides from roles without `pg_read_all_stats` are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// Its backend's process id (`pg_terminate_backend` takes it).
    pub pid: i32,
    /// Its `application_name`; tenantctl's sessions say `tenantctl RUN_ID`.
    pub application_name: Option<String>,
    /// The role it is logged in as.
    pub user: Option<String>,
    /// Its client's address; `None` also for a Unix-socket connection.
    pub client_addr: Option<String>,
    /// When it connected.
    pub backend_start: Option<OffsetDateTime>,
    /// `active`, `idle`, `idle in transaction`, ...
    pub state: Option<String>,
    /// Since when it has been in that state.
    pub state_change: Option<OffsetDateTime>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let when = |t: &OffsetDateTime| {
            t.to_offset(time::UtcOffset::UTC)
                .replace_nanosecond(0)
                .unwrap_or(*t)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| t.to_string())
        };
        let mut parts = Vec::new();
        if let Some(a) = &self.application_name {
            parts.push(format!("application_name {}", crate::ident::shown(a)));
        }
        if let Some(u) = &self.user {
            parts.push(format!("user {}", crate::ident::shown(u)));
        }
        match (&self.client_addr, &self.backend_start) {
            (Some(addr), _) => parts.push(format!("client {addr}")),
            (None, Some(_)) => parts.push("client on a local socket".into()),
            (None, None) => {}
        }
        if let Some(t) = &self.backend_start {
            parts.push(format!("connected since {}", when(t)));
        }
        match (&self.state, &self.state_change) {
            (Some(s), Some(t)) => parts.push(format!("{s} since {}", when(t))),
            (Some(s), None) => parts.push(s.clone()),
            _ => {}
        }
        write!(f, "pid {}", self.pid)?;
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// Why a session could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Connecting or setting up the session failed.
    Failed(Error),
    /// The run was asked to stop while the session waited for the tenant's lock; the
    /// tenant was not touched.
    Interrupted,
    /// `run.lock_wait` passed while another session held the tenant's lock; the tenant
    /// was not touched. The message names the holder.
    LockWait(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Failed(e) => e.fmt(f),
            OpenError::Interrupted => {
                f.write_str("interrupted while waiting for the tenant's lock; nothing was changed")
            }
            OpenError::LockWait(m) => f.write_str(m),
        }
    }
}

impl From<OpenError> for Error {
    fn from(e: OpenError) -> Error {
        match e {
            OpenError::Failed(e) => e,
            other => Error::failed(other.to_string()),
        }
    }
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
    /// Connects, takes the tenant's lock (waiting for any other run on it, as `wait`
    /// says), and pins `search_path`, `lock_timeout` and `statement_timeout`. While open,
    /// the session is registered with the run's interruption, so an abort cancels it.
    pub async fn open(
        target: &db::Target,
        settings: &'a Settings,
        schema: &'a str,
        wait: &LockWait<'_>,
    ) -> Result<Session<'a>, OpenError> {
        if wait.interrupt.requested() {
            return Err(OpenError::Interrupted);
        }
        let (client, notices) = target
            .connect_patiently_with_notices(settings.connect_timeout)
            .await
            .map_err(OpenError::Failed)?;
        let registration = wait.interrupt.register(target.canceller(&client));
        // Takes the lock and pins the session's settings (one round trip).
        take_lock(&client, target, settings, schema, wait).await?;
        Ok(Session {
            client,
            notices,
            sink: None,
            schema,
            settings,
            known: std::sync::Mutex::new(None),
            stop: wait.interrupt.stop_token(),
            _registration: registration,
        })
    }

    /// Ends an upgrade or downgrade between two migrations once the run is asked to
    /// stop; `done` is what this session applied or reverted so far.
    fn check_stop(&self, done: &[i32]) -> Result<(), UpgradeError> {
        if self.stop.is_cancelled() {
            return Err(UpgradeError::Interrupted {
                done: done.to_vec(),
            });
        }
        Ok(())
    }

    /// The SQL that puts the session back in its state between migrations.
    fn bookkeeping(&self) -> String {
        bookkeeping_settings(self.settings, self.schema)
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
        let state = self.state().await.map_err(UpgradeError::before)?;
        let history = self.history().await?;
        // Whatever happens next may change the schema: read it afresh afterwards.
        self.remember(None);
        let steps = upgrade_steps(&history, set, target, self.schema)
            .map_err(|e| UpgradeError::before(Error::failed(e)))?;
        if steps.is_empty() {
            return Ok(Applied::of(Vec::new()));
        }
        let table = qualified(self.schema, &self.settings.history_table);
        let reset = session_settings(self.settings, self.schema);
        if !state.history_exists {
            self.client
                .batch_execute(&format!("{reset}; {}", history_table_ddl(&table)))
                .await
                .map_err(query_error(&format!("creating the history table {table}")))
                .map_err(UpgradeError::before)?;
        }
        let mut applied: Vec<i32> = Vec::new();
        for f in steps {
            self.check_stop(&applied)?;
            let result = self.apply(f, Direction::Up, &table, &reset).await;
            self.forward_notices();
            if let Err(message) = result {
                let _ = self.client.batch_execute(&self.bookkeeping()).await;
                return Err(UpgradeError::During { applied, message });
            }
            applied.push(f.version);
        }
        let _ = self.client.batch_execute(&self.bookkeeping()).await;
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
            self.check_stop(&reverted)?;
            let result = self.apply(f, Direction::Down, &table, &reset).await;
            self.forward_notices();
            if let Err(message) = result {
                let _ = self.client.batch_execute(&self.bookkeeping()).await;
                return Err(UpgradeError::During {
                    applied: reverted,
                    message,
                });
            }
            reverted.push(f.version);
        }
        let _ = self.client.batch_execute(&self.bookkeeping()).await;
        Ok(Applied::of(reverted))
    }

    /// The server's notices and warnings received on this session and not yet handed
    /// to the sink (see [`Session::on_notice`]).
    pub fn notices(&self) -> Vec<db::Notice> {
        self.notices.take()
    }

    /// Hands the server's notices and warnings to `sink` as each migration finishes.
    pub fn on_notice(&mut self, sink: impl Fn(&db::Notice) + Send + Sync + 'a) {
        self.sink = Some(Box::new(sink));
    }

    fn forward_notices(&self) {
        if let Some(sink) = &self.sink {
            for n in self.notices.take() {
                sink(&n);
            }
        }
    }

    /// Runs one file and records it, retrying after a `lock_timeout` as configured.
    async fn apply(
        &mut self,
        f: &MigrationFile,
        direction: Direction,
        table: &str,
        reset: &str,
    ) -> Result<(), String> {
        let script = direction.script(f);
        let mut attempt: u32 = 0;
        let mut from = 0;
        loop {
            match self.attempt(f, direction, table, reset, from).await {
                Ok(()) => return Ok(()),
                Err(failure) if failure.lock_timeout && attempt < self.settings.lock_retries => {
                    // Wait for the other session, then retry: a transaction rolled back
                    // whole; outside one, the statements before the blocked one stay
                    // applied and the retry resumes at it.
                    tokio::time::sleep(retry_delay(self.settings.lock_retry_delay, attempt)).await;
                    attempt += 1;
                    if script.no_transaction {
                        from = failure.statement;
                    }
                }
                Err(failure) if failure.lock_timeout => {
                    return Err(format!(
                        "{} (gave up after {} attempts with lock_timeout {} ms: another session holds a lock this migration needs; see pg_locks and pg_stat_activity, or raise run.lock_timeout / run.lock_retries)",
                        failure.message,
                        attempt + 1,
                        self.settings.lock_timeout.as_millis()
                    ))
                }
                Err(failure) => return Err(failure.message),
            }
        }
    }

    /// One attempt at a file, from statement `from` on: in a transaction with its history
    /// change, or, for a no-transaction file, statement by statement and then the history
    /// change. Each statement is sent alone.
    async fn attempt(
        &mut self,
        f: &MigrationFile,
        direction: Direction,
        table: &str,
        reset: &str,
        from: usize,
    ) -> Result<(), Failure> {
        let script = direction.script(f);
        let done = script.statements.len();
        let bookkeeping = |e: tokio_postgres::Error| Failure {
            message: format!(
                "{} ran, but recording it in {table} failed: {}",
                direction.describe(f),
                db::pg_message(&e)
            ),
            lock_timeout: is_lock_timeout(&e),
            statement: done,
        };
        if from == 0 {
            self.client
                .batch_execute(reset)
                .await
                .map_err(|e| Failure {
                    message: format!(
                        "resetting the session before {}: {}",
                        direction.describe(f),
                        db::pg_message(&e)
                    ),
                    lock_timeout: false,
                    statement: 0,
                })?;
        }
        if script.no_transaction {
            for (i, s) in script.statements.iter().enumerate().skip(from) {
                self.client
                    .batch_execute(&s.text)
                    .await
                    .map_err(|e| statement_failure(f, direction, i, &e))?;
            }
            self.client
                .batch_execute(RESTORE_IDENTITY)
                .await
                .map_err(bookkeeping)?;
            record_step(&self.client, f, direction, table)
                .await
                .map_err(bookkeeping)?;
            return Ok(());
        }
        let tx = self.client.transaction().await.map_err(bookkeeping)?;
        for (i, s) in script.statements.iter().enumerate() {
            tx.batch_execute(&s.text)
                .await
                .map_err(|e| statement_failure(f, direction, i, &e))?;
        }
        tx.batch_execute(RESTORE_IDENTITY)
            .await
            .map_err(bookkeeping)?;
        record_step(&tx, f, direction, table)
            .await
            .map_err(bookkeeping)?;
        tx.commit().await.map_err(bookkeeping)
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
            tx.execute(
                &format!("DELETE FROM {table} WHERE version > $1"),
                &[&target],
            )
            .await?;
            for f in &plan.insert {
                insert_history_row(&tx, &table, f, &applied_on).await?;
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
    /// Refuses, changing nothing, when the schema is shared (the registry schema or one in
    /// `tenants.extra_search_path`) or when objects outside it depend on objects in it.
    ///
    /// A refusal (a shared schema, or objects outside it that depend on it) changes
    /// nothing and is [`RecreateError::Refused`], so the caller leaves the registry alone.
    pub async fn recreate(&mut self) -> Result<(), RecreateError> {
        self.remember(None);
        let schema = self.schema;
        let what = format!("drop and recreate schema {}", quote(schema));
        let fix = "Or leave the schema as it is: `tenantctl provision` without --force-recreate keeps an existing schema.";
        refuse_shared(self.settings, schema, &what).map_err(RecreateError::Refused)?;
        let context = format!("recreating schema {}", quote(schema));
        let failed = |e| RecreateError::Failed(query_error(&context)(e));
        let tx = self.client.transaction().await.map_err(failed)?;
        let blocking = check_outside(&tx, schema)
            .await
            .map_err(RecreateError::Failed)?;
        if !blocking.is_empty() {
            let _ = tx.rollback().await;
            return Err(RecreateError::Refused(Error::failed(dependents::refusal(
                &what, &blocking, fix,
            ))));
        }
        tx.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}",
            s = quote(schema)
        ))
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)
    }

    /// Removes the tenant from the registry and, unless `keep_schema`, drops its schema,
    /// in one transaction with its ledger entry. Refuses, changing nothing, when the schema
    /// is shared or objects outside it depend on objects in it. Returns whether a schema
    /// was dropped (false with `keep_schema`, or when it never existed).
    pub async fn drop_tenant(
        &mut self,
        tables: &Tables,
        tenant: &Tenant,
        keep_schema: bool,
        event: &Event<'_>,
    ) -> Result<bool, Error> {
        let schema = self.schema;
        let what = format!("drop schema {}", quote(schema));
        if !keep_schema {
            refuse_shared(self.settings, schema, &what).map_err(|e| {
                Error::failed(format!(
                    "{e}; `tenantctl tenant drop {} --keep-schema` removes only the registry row",
                    tenant.domain
                ))
            })?;
        }
        let context = format!("dropping tenant {}", tenant.domain);
        let err = query_error(&context);
        let tx = self.client.transaction().await.map_err(&err)?;
        let n = tx
            .execute(
                &format!("DELETE FROM {} WHERE id = $1", tables.tenants),
                &[&tenant.id],
            )
            .await
            .map_err(&err)?;
        if n == 0 {
            // Dropped by another command while this one waited for the lock: change nothing.
            let _ = tx.rollback().await;
            return Err(Error::failed(format!(
                "tenant {} was already removed from the registry",
                tenant.domain
            )));
        }
        let mut dropped = false;
        if !keep_schema {
            let blocking = check_outside(&tx, schema).await?;
            if !blocking.is_empty() {
                let _ = tx.rollback().await;
                let fix = format!(
                    "Or keep the schema: `tenantctl tenant drop {} --keep-schema` removes only the registry row.",
                    tenant.domain
                );
                return Err(Error::failed(dependents::refusal(&what, &blocking, &fix)));
            }
            dropped = dependents::contents(&tx, schema).await?.exists;
            if dropped {
                tx.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", quote(schema)))
                    .await
                    .map_err(&err)?;
            }
        }
        tx.execute(
            &registry::insert_event_sql(
                &tables.events,
                "VALUES ($1::text::uuid, $2, $3, $4, $5, $6, NULL, 'ok', NULL, $7, $8)",
            ),
            &[
                &event.run_id,
                &tenant.id,
                &tenant.domain,
                &tenant.schema_name,
                &event.action,
                &event.from_revision,
                &event.started_at,
                &event.client_host,
            ],
        )
        .await
        .map_err(&err)?;
        tx.commit().await.map_err(&err)?;
        Ok(dropped)
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

/// Refuses (exit 1) to drop a schema that can never be a tenant's.
fn refuse_shared(settings: &Settings, schema: &str, what: &str) -> Result<(), Error> {
    match dependents::shared_role(settings, schema) {
        Some(role) => Err(Error::failed(format!(
            "refusing to {what}: it is {role}, not a tenant's own schema; nothing was changed"
        ))),
        None => Ok(()),
    }
}

/// In the caller's transaction: locks the schema's tables, then lists the objects outside
/// it that a `DROP SCHEMA ... CASCADE` would also remove.
async fn check_outside(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
) -> Result<Vec<dependents::Dependent>, Error> {
    dependents::lock_relations(tx, schema).await?;
    dependents::outside(tx, schema).await
}

enum GaveUp {
    Interrupted,
    LockWait,
}

/// Takes the tenant's advisory lock on `client`. The wait is raced against the run's
/// stop and `run.lock_wait`; giving up cancels the wait on the server. After
/// [`REPORT_WAIT_AFTER`] the holder is reported, once. Then, in the same round trip, pins
/// the session's settings ([`bookkeeping_settings`]).
async fn take_lock(
    client: &Client,
    target: &db::Target,
    settings: &Settings,
    schema: &str,
    wait: &LockWait<'_>,
) -> Result<(), OpenError> {
    let key = db::lock_key(LockSpace::Tenant, schema);
    let failed = |e| {
        OpenError::Failed(query_error(&format!(
            "taking the lock on schema {}",
            quote(schema)
        ))(e))
    };
    let stop = wait.interrupt.stop_token();
    // The session's settings go in the same round trip, right after the lock.
    let sql = format!(
        "SET lock_timeout = 0; SET statement_timeout = 0; SELECT pg_advisory_lock({}, {}); {}",
        key.0,
        key.1,
        bookkeeping_settings(settings, schema)
    );
    let lock = client.batch_execute(&sql);
    tokio::pin!(lock);
    let report = async {
        tokio::time::sleep(REPORT_WAIT_AFTER).await;
        lock_holder(target, key).await
    };
    tokio::pin!(report);
    let mut reported = false;
    let limit = settings.lock_wait;
    let expiry = async {
        if limit.is_zero() {
            std::future::pending::<()>().await
        } else {
            tokio::time::sleep(limit).await
        }
    };
    tokio::pin!(expiry);
    let gave_up = loop {
        tokio::select! {
            done = &mut lock => return done.map_err(failed),
            holder = &mut report, if !reported => {
                reported = true;
                (wait.report)(holder.as_ref());
            }
            _ = &mut expiry => break GaveUp::LockWait,
            _ = stop.cancelled() => break GaveUp::Interrupted,
        }
    };
    let holder = match gave_up {
        GaveUp::LockWait => lock_holder(target, key).await,
        GaveUp::Interrupted => None,
    };
    // End the wait on the server, and see it end, so the lock is never taken behind the
    // run's back. Should the lock be granted in the meantime, closing the session
    // releases it.
    if target.canceller(client).cancel().await.is_ok() {
        let _ = tokio::time::timeout(CANCEL_GRACE, &mut lock).await;
    }
    Err(match gave_up {
        GaveUp::Interrupted => OpenError::Interrupted,
        GaveUp::LockWait => OpenError::LockWait(format!(
            "gave up waiting for the lock on schema {} after {} (run.lock_wait): it is held by {}; nothing was changed",
            quote(schema),
            humantime::format_duration(limit),
            holder.map_or_else(
                || "another session that could not be identified".to_string(),
                |h| h.to_string()
            )
        )),
    })
}

/// Who holds the tenant lock `key`, read on a connection of its own (the session's is
/// busy waiting). `None` when nobody holds it any more, or it could not be read.
async fn lock_holder(target: &db::Target, key: (i32, i32)) -> Option<LockHolder> {
    let client = target.connect().await.ok()?;
    let row = client
        .query_opt(
            "SELECT a.pid, a.application_name, a.usename::text, host(a.client_addr), a.backend_start, a.state, a.state_change \
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND l.classid::bigint = $1 AND l.objid::bigint = $2 \
             LIMIT 1",
            &[&i64::from(key.0 as u32), &i64::from(key.1 as u32)],
        )
        .await
        .ok()??;
    Some(LockHolder {
        pid: row.get(0),
        application_name: row.get(1),
        user: row.get(2),
        client_addr: row.get(3),
        backend_start: row.get(4),
        state: row.get(5),
        state_change: row.get(6),
    })
}

/// Summarises a schema state for the registry.
pub fn observed(state: &SchemaState) -> Observed {
    Observed::of(state)
}

/// Why `provision --force-recreate` did not recreate a schema.
#[derive(Debug)]
pub enum RecreateError {
    /// Refused before anything changed: the schema is shared, or objects outside it
    /// depend on it.
    Refused(Error),
    /// The drop or the creation failed (and rolled back).
    Failed(Error),
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
    /// The run was asked to stop; the session stopped between two migrations.
    Interrupted {
        /// Versions applied (or reverted) before it stopped, in order; they are kept.
        done: Vec<i32>,
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
            UpgradeError::Interrupted { .. } => "the run was interrupted".into(),
        }
    }
}

/// Undoes a migration's `SET ROLE` or `SET SESSION AUTHORIZATION` before tenantctl
/// writes its own rows, so they are written as the user tenantctl connected as. Any user
/// may run these.
const RESTORE_IDENTITY: &str = "RESET SESSION AUTHORIZATION; RESET ROLE";

/// Which way a file runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// The up script; its history row is inserted.
    Up,
    /// The down script; its history row is deleted.
    Down,
}

impl Direction {
    fn script(self, f: &MigrationFile) -> &Script {
        match self {
            Direction::Up => &f.up,
            Direction::Down => f
                .down
                .as_ref()
                .expect("downgrade_steps checked the down script"),
        }
    }

    /// `migration V1__a (path)` or `down script of V1__a (path)`.
    fn describe(self, f: &MigrationFile) -> String {
        match self {
            Direction::Up => format!(
                "migration V{}__{} ({})",
                f.version,
                f.name,
                f.up_path.display()
            ),
            Direction::Down => format!(
                "down script of V{}__{} ({})",
                f.version,
                f.name,
                f.down_path
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
        }
    }
}

/// Why one attempt at a file failed.
struct Failure {
    message: String,
    /// A `lock_timeout` expired: worth retrying.
    lock_timeout: bool,
    /// The statement it failed at (the count of statements when the bookkeeping failed).
    statement: usize,
}

/// A failed statement, named by file and line: the statement's line, moved on by the
/// position the server reports inside it.
fn statement_failure(
    f: &MigrationFile,
    direction: Direction,
    index: usize,
    e: &tokio_postgres::Error,
) -> Failure {
    let script = direction.script(f);
    let statement = &script.statements[index];
    let line = match e.as_db_error().and_then(|d| d.position()) {
        Some(ErrorPosition::Original(p)) => statement.line_of_position(*p),
        _ => statement.line,
    };
    let mut message = format!(
        "{} failed at line {line}: {}",
        direction.describe(f),
        db::pg_message(e)
    );
    if script.no_transaction && index > 0 {
        message.push_str(&format!(
            "; the file runs outside a transaction, so the {index} statement(s) before line {line} stay applied and a rerun starts the file again from its first statement"
        ));
    }
    Failure {
        message,
        lock_timeout: is_lock_timeout(e),
        statement: index,
    }
}

/// Writes a file's history change as refinery does: the row inserted after an up script
/// (version, name, RFC 3339 time, checksum as text), removed after a down script.
async fn record_step(
    client: &impl GenericClient,
    f: &MigrationFile,
    direction: Direction,
    table: &str,
) -> Result<u64, tokio_postgres::Error> {
    match direction {
        Direction::Up => insert_history_row(client, table, f, &refinery_now()).await,
        Direction::Down => {
            client
                .execute(
                    &format!("DELETE FROM {table} WHERE version = $1"),
                    &[&f.version],
                )
                .await
        }
    }
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

/// Inserts `f`'s history row as refinery writes it: version, name, `applied_on` (RFC 3339
/// text) and the checksum as text.
async fn insert_history_row(
    client: &impl GenericClient,
    table: &str,
    f: &MigrationFile,
    applied_on: &str,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            &format!(
                "INSERT INTO {table} (version, name, applied_on, checksum) VALUES ($1, $2, $3, $4)"
            ),
            &[&f.version, &f.name, &applied_on, &f.checksum.to_string()],
        )
        .await
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
fn is_lock_timeout(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}

/// The wait before retry number `attempt` (0-based): `base`, doubling, at most 30 s.
pub fn retry_delay(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.min(16))
        .min(Duration::from_secs(30))
}

/// The session state every migration starts from: the connecting user's identity and
/// defaults (`RESET SESSION AUTHORIZATION`, `RESET ROLE`, `RESET ALL`), then
/// `search_path` = the tenant's schema and the extra schemas, and the timeouts.
pub fn session_settings(settings: &Settings, schema: &str) -> String {
    let mut path = vec![quote(schema)];
    path.extend(settings.extra_search_path.iter().map(|s| quote(s)));
    format!(
        "RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL; SET search_path TO {}; SET lock_timeout = {}; SET statement_timeout = {}",
        path.join(", "),
        millis(settings.lock_timeout),
        millis(settings.statement_timeout),
    )
}

/// The session state tenantctl's own reads and writes run in, between migrations: as
/// [`session_settings`], but with no `lock_timeout` or `statement_timeout` (which are for
/// migrations), so a short timeout never cancels reading the catalog or the registry.
pub fn bookkeeping_settings(settings: &Settings, schema: &str) -> String {
    let mut path = vec![quote(schema)];
    path.extend(settings.extra_search_path.iter().map(|s| quote(s)));
    format!(
        "RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL; SET search_path TO {}; SET lock_timeout = 0; SET statement_timeout = 0",
        path.join(", "),
    )
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookkeeping_runs_without_the_migration_timeouts() {
        let mut settings = crate::config::resolve(
            &crate::config::Overrides::default(),
            &|_| None,
            std::path::Path::new("/"),
            None,
        )
        .unwrap();
        settings.lock_timeout = Duration::from_millis(1);
        settings.statement_timeout = Duration::from_millis(1);
        let migration = session_settings(&settings, "tenant_a");
        assert!(migration.ends_with("SET lock_timeout = 1; SET statement_timeout = 1"));
        let bookkeeping = bookkeeping_settings(&settings, "tenant_a");
        assert!(bookkeeping.ends_with("SET lock_timeout = 0; SET statement_timeout = 0"));
        assert!(bookkeeping.contains("SET search_path TO \"tenant_a\""));
    }

    #[test]
    fn retry_delays_double_up_to_a_cap() {
        let base = Duration::from_millis(500);
        assert_eq!(retry_delay(base, 0), Duration::from_millis(500));
        assert_eq!(retry_delay(base, 1), Duration::from_secs(1));
        assert_eq!(retry_delay(base, 2), Duration::from_secs(2));
        assert_eq!(retry_delay(base, 40), Duration::from_secs(30));
    }
}
