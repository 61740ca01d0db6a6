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
use crate::engine::dependents;
use crate::engine::plan::{self, Direction, Sql, Step, TenantPlan};
use crate::engine::pool::{Conn, Pool};
use crate::error::Error;
use crate::files::migrations::{AppliedRow, MigrationFile};
use crate::ident::quote;
use crate::pg::db::{self, query_error};
use crate::pg::interrupt::{Interrupt, Registration};
use crate::registry::state::{self, SchemaState};
use crate::registry::{self, Event, Observed, Outcome, Tables, Tenant};

/// Where a session's notices go as each migration finishes.
type NoticeSink<'a> = Box<dyn Fn(&db::Notice) + Send + Sync + 'a>;

/// A locked session on one tenant.
pub struct Session<'a> {
    conn: Conn,
    sink: Option<NoticeSink<'a>>,
    schema: &'a str,
    settings: &'a Settings,
    /// The SQL this session sends for its tenant.
    sql: Sql,
    /// The last observation, kept until this session changes the schema, so one run on
    /// a tenant reads its state once before changing it and once after.
    known: std::sync::Mutex<Option<SchemaState>>,
    /// Whether the schema's history table is expected to be there (the registry says
    /// migrations were applied): its `COPY` is then sent with the catalog lookup.
    history_expected: bool,
    /// Cancelled when the run is asked to stop: upgrades and downgrades end between two
    /// migrations.
    stop: CancellationToken,
    /// Keeps this session in the set an abort cancels, while it is open.
    registration: Registration,
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

fn rehearsal_error(e: tokio_postgres::Error) -> Error {
    Error::failed(format!(
        "trying the migrations in a transaction: {}",
        db::pg_message(&e)
    ))
}

/// The first file of `plan` that runs outside a transaction (described), which a
/// rehearsal ([`Session::rehearse`]) cannot try.
pub fn outside_transaction(plan: &TenantPlan<'_>) -> Option<String> {
    plan.steps.iter().find_map(|s| match s {
        Step::Migrate { file, direction } if direction.script(file).no_transaction => {
            Some(direction.describe(file))
        }
        _ => None,
    })
}

impl<'a> Session<'a> {
    /// Borrows a connection from `pool` (or opens one), takes the tenant's lock (waiting
    /// for any other run on it, as `wait` says), and pins `search_path`, `lock_timeout`
    /// and `statement_timeout`. While open, the session is registered with the run's
    /// interruption, so an abort cancels it. A borrowed connection the server has closed
    /// meanwhile is replaced by a new one.
    pub async fn open(
        pool: &Pool,
        settings: &'a Settings,
        schema: &'a str,
        wait: &LockWait<'_>,
    ) -> Result<Session<'a>, OpenError> {
        let sql = Sql::new(settings, schema);
        let sql = match pool.target().server_name() {
            Some(server) => sql.indexed(crate::registry::versions::schema_for(
                server,
                &settings.registry_schema,
            )),
            None => sql,
        };
        Session::open_with(pool, settings, schema, sql, wait).await
    }

    /// A session on the shared schema `schema` of `pool`'s server, as [`Session::open`]
    /// opens one on a tenant, holding the shared schema's own lock and working on its
    /// own history table ([`crate::config::SHARED_HISTORY`]).
    pub async fn open_shared(
        pool: &Pool,
        settings: &'a Settings,
        schema: &'a str,
        wait: &LockWait<'_>,
    ) -> Result<Session<'a>, OpenError> {
        Session::open_with(pool, settings, schema, Sql::shared(settings, schema), wait).await
    }

    async fn open_with(
        pool: &Pool,
        settings: &'a Settings,
        schema: &'a str,
        sql: Sql,
        wait: &LockWait<'_>,
    ) -> Result<Session<'a>, OpenError> {
        if wait.interrupt.requested() {
            return Err(OpenError::Interrupted);
        }
        if schema.is_empty() {
            return Err(OpenError::Failed(Error::refused(
                crate::engine::plan::NO_SCHEMA_NAME,
            )));
        }
        let target = pool.target();
        let mut conn = pool.take(settings).await.map_err(OpenError::Failed)?;
        let registration = loop {
            let registration = wait.interrupt.register(target.canceller(&conn.client));
            // Takes the lock and pins the session's settings (one round trip).
            match take_lock(&conn.client, target, &sql, settings.lock_wait, wait).await {
                Ok(()) => break registration,
                Err(OpenError::Failed(_)) if conn.reused && conn.client.is_closed() => {
                    conn = pool.connect(settings).await.map_err(OpenError::Failed)?;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Session {
            conn,
            sink: None,
            schema,
            settings,
            sql,
            known: std::sync::Mutex::new(None),
            history_expected: false,
            stop: wait.interrupt.stop_token(),
            registration,
        })
    }

    /// Runs `plan`, a build or an upgrade whose files all run in a transaction, as
    /// [`Session::execute`] would, but in one transaction (each file in a savepoint,
    /// after `first`, when given) that stays open for the caller to look at the result on
    /// this session's connection, and that [`Session::end_rehearsal`] rolls back: a dry
    /// run that finds what the run would, changing nothing. On an error the transaction
    /// is rolled back at once. Refused for a plan with a no-transaction file, which
    /// cannot run in a transaction.
    pub async fn rehearse(
        &mut self,
        plan: &TenantPlan<'_>,
        first: Option<&str>,
    ) -> Result<(), Error> {
        if let Some(file) = outside_transaction(plan) {
            return Err(Error::failed(format!(
                "{file} runs outside a transaction, so it cannot be tried and rolled back"
            )));
        }
        self.conn
            .client
            .batch_execute("BEGIN")
            .await
            .map_err(rehearsal_error)?;
        if let Some(first) = first {
            if let Err(e) = self.conn.client.batch_execute(first).await {
                self.end_rehearsal().await;
                return Err(rehearsal_error(e));
            }
        }
        self.sql.rehearsal = true;
        let executed = self.execute(plan).await;
        self.sql.rehearsal = false;
        let executed = match executed {
            Ok(_) => return Ok(()),
            Err(ExecError::Refused(m)) | Err(ExecError::HeldBack { message: m, .. }) => {
                Error::refused(m)
            }
            Err(ExecError::Failed { message, .. }) => Error::failed(message),
            Err(ExecError::Interrupted(_)) => Error::new(
                crate::error::ErrorKind::Interrupted,
                "interrupted while trying the migrations",
            ),
        };
        self.end_rehearsal().await;
        Err(executed)
    }

    /// Rolls a [`Session::rehearse`] back, and puts the session back in its bookkeeping
    /// state. A failure to roll back leaves nothing either: the connection is then
    /// broken, and the pool does not take it back.
    pub async fn end_rehearsal(&mut self) {
        let _ = self.conn.client.batch_execute("ROLLBACK").await;
        self.remember(None);
        let _ = self.conn.client.batch_execute(&self.sql.bookkeeping).await;
    }

    /// Ends the session: its connection goes back to `pool` for the next tenant if it can
    /// be made clean (the tenant's lock released, the session reset), else it is closed.
    pub async fn close(self, pool: &Pool) {
        drop(self.registration);
        pool.give_back(self.conn).await;
    }

    /// The effective settings this session runs with.
    pub fn settings(&self) -> &Settings {
        self.settings
    }

    /// The session's connection (search_path pinned, lock held); tenantctl's own reads
    /// on it go through [`crate::pg::db::read`], bounded by `run.read_timeout`.
    pub fn client(&self) -> &crate::pg::db::Client {
        &self.conn.client
    }

    /// Says whether the schema's history table is expected to be there (see
    /// [`Session::observe`]); either way the state read is the same.
    pub fn expect_history(&mut self, expected: bool) {
        self.history_expected = expected;
    }

    /// What the schema and its history look like now, read from the database.
    pub async fn observe(&self) -> Result<SchemaState, Error> {
        let client = &self.conn.client;
        let history = &self.sql.history;
        let state = if self.history_expected {
            state::observe_one(client, self.schema, history).await?
        } else {
            // A new schema: a `COPY` sent ahead would fail, and the server would log it.
            let mut map = state::observe(client, &[self.schema.to_string()], history).await?;
            map.remove(self.schema)
                .expect("observe returns every schema asked for")
        };
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

    /// Executes a tenant's plan, step by step, as [`crate::engine::plan`] describes each step.
    /// Upgrades and downgrades stop between two migrations once the run is asked to stop.
    /// The session's idea of the schema's state follows each step that succeeds, so the
    /// history is read once per tenant.
    pub async fn execute(&mut self, plan: &TenantPlan<'_>) -> Result<Executed, ExecError> {
        let mut done = Executed::default();
        for step in &plan.steps {
            if matches!(step, Step::Migrate { .. }) && self.stop.is_cancelled() {
                return Err(ExecError::Interrupted(done));
            }
            // Each history row says when its own migration was applied.
            let now = plan::refinery_now();
            let result = self.step(step, &now, &mut done).await;
            self.forward_notices();
            if let Err(e) = result {
                // Whatever failed may have changed the schema: read it afresh afterwards.
                self.remember(None);
                let _ = self.conn.client.batch_execute(&self.sql.bookkeeping).await;
                return Err(match e {
                    StepError::Refused(message) => ExecError::Refused(message),
                    StepError::Failed(message) => ExecError::Failed { done, message },
                    StepError::HeldBack(message) => ExecError::HeldBack { done, message },
                });
            }
            self.follow(step, &now);
        }
        // Each migration's history write put the session back in its bookkeeping state.
        Ok(done)
    }

    async fn step(
        &mut self,
        step: &Step<'_>,
        now: &str,
        done: &mut Executed,
    ) -> Result<(), StepError> {
        let failed = |doing: String| {
            move |e: tokio_postgres::Error| {
                StepError::Failed(format!("{doing}: {}", db::pg_message(&e)))
            }
        };
        match step {
            Step::CreateSchema => {
                self.conn
                    .client
                    .batch_execute(&self.sql.create_schema())
                    .await
                    .map_err(failed(format!("creating schema {}", quote(self.schema))))?;
                done.schema_created = true;
            }
            Step::RecreateSchema => {
                self.recreate().await?;
                done.schema_created = true;
            }
            Step::CreateHistoryTable => self
                .conn
                .client
                .batch_execute(&self.sql.create_history_table())
                .await
                .map_err(failed(format!(
                    "creating the history table {}",
                    self.sql.table
                )))?,
            Step::Migrate { file, direction } => {
                let requires = match direction {
                    Direction::Up => file.up.requires_shared,
                    Direction::Down => None,
                };
                if let Some(n) = requires {
                    self.require_shared(file, n).await?;
                }
                let applied = self.apply(file, *direction, now).await;
                if requires.is_some() {
                    let (k1, k2) = self.shared_keys();
                    let _ = self
                        .conn
                        .client
                        .batch_execute(&format!("SELECT pg_advisory_unlock_shared({k1}, {k2})"))
                        .await;
                }
                applied.map_err(StepError::Failed)?;
                done.versions.push(file.version);
            }
            Step::Stamp { target, insert, .. } => {
                let doing = format!("stamping schema {}", quote(self.schema));
                if let Err(e) = self
                    .conn
                    .client
                    .batch_execute(&self.sql.stamp(*target, insert, now))
                    .await
                {
                    let _ = self.conn.client.batch_execute("ROLLBACK").await;
                    return Err(failed(doing)(e));
                }
                self.conn
                    .client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(failed(doing))?;
                done.versions = insert.iter().map(|f| f.version).collect();
            }
        }
        done.changed = true;
        Ok(())
    }

    /// The shared schema's lock keys (of the configured shared schema; `public` when
    /// none is configured, where no file can require one).
    fn shared_keys(&self) -> (i32, i32) {
        let schema = self
            .settings
            .shared
            .as_ref()
            .map_or("public", |s| &s.schema);
        plan::shared_lock(schema)
    }

    /// Before `file`, which requires the shared schema at revision `n`: takes the shared
    /// schema's lock in shared mode (so it cannot be downgraded while the file runs; the
    /// caller releases it) and reads its revision on this server. Below `n`, the tenant
    /// is held back before the file, which does not run.
    async fn require_shared(&self, file: &MigrationFile, n: i32) -> Result<(), StepError> {
        let failed = |e: tokio_postgres::Error| {
            StepError::Failed(format!(
                "reading the shared schema's revision before {}: {}",
                file.refinery_name(),
                db::pg_message(&e)
            ))
        };
        let Some(shared) = &self.settings.shared else {
            return Err(StepError::HeldBack(format!(
                "{} requires shared revision {n}, and no shared schema is configured",
                file.refinery_name()
            )));
        };
        let (k1, k2) = self.shared_keys();
        let client = &self.conn.client;
        let table = crate::ident::qualified(&shared.schema, crate::config::SHARED_HISTORY);
        // The lock and whether the history exists, in one round trip.
        let exists: bool = client
            .query_one(
                "SELECT to_regclass($3) IS NOT NULL FROM pg_advisory_lock_shared($1, $2)",
                &[&k1, &k2, &table],
            )
            .await
            .map_err(failed)?
            .get(0);
        // Version N itself must be applied: a higher revision with N missing (a branch
        // merged out of order, a row written by hand) does not have what N made.
        let (current, applied): (Option<i32>, bool) = if exists {
            let row = client
                .query_one(
                    &format!(
                        "SELECT max(version), coalesce(bool_or(version = $1), false) FROM {table}"
                    ),
                    &[&n],
                )
                .await
                .map_err(failed)?;
            (row.get(0), row.get(1))
        } else {
            (None, false)
        };
        if applied {
            return Ok(());
        }
        let _ = client
            .batch_execute(&format!("SELECT pg_advisory_unlock_shared({k1}, {k2})"))
            .await;
        Err(StepError::HeldBack(held_back(
            file,
            n,
            &shared.schema,
            current,
        )))
    }

    /// Brings the remembered state up to date with a step that succeeded.
    fn follow(&self, step: &Step<'_>, now: &str) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = known.as_mut() else {
            return;
        };
        let row = |f: &MigrationFile| AppliedRow {
            version: f.version,
            name: f.name.clone(),
            applied_on: now.to_string(),
            checksum: f.checksum,
        };
        match step {
            Step::CreateSchema | Step::RecreateSchema => {
                *state = SchemaState {
                    schema_exists: true,
                    history_exists: false,
                    history: Ok(Vec::new()),
                    untracked: Default::default(),
                    unreachable: false,
                    index: Default::default(),
                }
            }
            Step::CreateHistoryTable => {
                state.history_exists = true;
                state.untracked = Default::default();
            }
            Step::Migrate { file, direction } => {
                state.history_exists = true;
                state.untracked = Default::default();
                if let Ok(h) = state.history.as_mut() {
                    h.retain(|r| r.version != file.version);
                    if *direction == Direction::Up {
                        h.push(row(file));
                    }
                }
            }
            Step::Stamp { target, insert, .. } => {
                state.history_exists = true;
                state.untracked = Default::default();
                if let Ok(h) = state.history.as_mut() {
                    h.retain(|r| r.version <= *target);
                    h.extend(insert.iter().map(|f| row(f)));
                }
            }
        }
    }

    /// Drops the schema with everything in it and creates it empty, in one transaction,
    /// unless objects outside it depend on objects in it (then nothing changes).
    async fn recreate(&mut self) -> Result<(), StepError> {
        let schema = self.schema;
        let context = format!("recreating schema {}", quote(schema));
        let failed = |e| StepError::Failed(query_error(&context)(e).to_string());
        let tx = self.conn.client.transaction().await.map_err(failed)?;
        let blocking = check_outside(&tx, schema)
            .await
            .map_err(|e| StepError::Failed(e.to_string()))?;
        if !blocking.is_empty() {
            let _ = tx.rollback().await;
            return Err(StepError::Refused(plan::recreate_blocked(
                schema, &blocking,
            )));
        }
        guarded_drop(&tx, &self.sql.recreate_schema(), schema)
            .await
            .map_err(|e| match e.kind() {
                crate::error::ErrorKind::Refused => StepError::Refused(e.to_string()),
                _ => StepError::Failed(e.to_string()),
            })?;
        tx.commit().await.map_err(failed)
    }

    /// The server's notices and warnings received on this session and not yet handed
    /// to the sink (see [`Session::on_notice`]).
    pub fn notices(&self) -> Vec<db::Notice> {
        self.conn.notices.take()
    }

    /// Hands the server's notices and warnings to `sink` as each step finishes.
    pub fn on_notice(&mut self, sink: impl Fn(&db::Notice) + Send + Sync + 'a) {
        self.sink = Some(Box::new(sink));
    }

    fn forward_notices(&self) {
        if let Some(sink) = &self.sink {
            for n in self.conn.notices.take() {
                sink(&n);
            }
        }
    }

    /// Runs one file and records it, retrying after a `lock_timeout` as configured.
    async fn apply(
        &mut self,
        f: &MigrationFile,
        direction: Direction,
        now: &str,
    ) -> Result<(), String> {
        let script = direction.script(f);
        let mut attempt: u32 = 0;
        let mut from = 0;
        loop {
            match self.attempt(f, direction, now, from).await {
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

    /// One attempt at a file, from statement `from` on, from a clean session: in a
    /// transaction with its history change, or, for a no-transaction file, statement by
    /// statement and then the history change. Each statement is sent alone.
    async fn attempt(
        &mut self,
        f: &MigrationFile,
        direction: Direction,
        now: &str,
        from: usize,
    ) -> Result<(), Failure> {
        let script = direction.script(f);
        let transaction = !script.no_transaction;
        let count = script.statements.len();
        let bookkeeping = |e: tokio_postgres::Error| Failure {
            message: if e.code().map(|c| c.code()) == Some(plan::LOCK_LOST) {
                format!(
                    "{} released the tenant's advisory lock (pg_advisory_unlock or pg_advisory_unlock_all) and another session took it; {}: a migration must not release advisory locks it did not take",
                    direction.describe(f),
                    if transaction {
                        "the migration was rolled back and is not recorded"
                    } else {
                        "its statements ran outside a transaction and stay applied, but it is not recorded"
                    }
                )
            } else {
                format!(
                    "{} ran, but recording it in {} failed: {}",
                    direction.describe(f),
                    self.sql.table,
                    db::pg_message(&e)
                )
            },
            lock_timeout: is_lock_timeout(&e),
            statement: count,
        };
        if transaction {
            let tried = self
                .pipelined(f, direction, now)
                .await
                .map_err(|(at, e)| match at {
                    At::Begin => reset_failure(f, direction, &e),
                    At::Statement(i) => statement_failure(f, direction, i, &e),
                    At::Record => bookkeeping(e),
                });
            if tried.is_err() && self.sql.rehearsal {
                // In a rehearsal the file ran in a savepoint: undone, so that the
                // rehearsal's transaction can go on (a retry after a lock timeout).
                let _ = self
                    .conn
                    .client
                    .batch_execute(&self.sql.undo_rehearsed())
                    .await;
            }
            return tried;
        }
        if from == 0 {
            self.conn
                .client
                .batch_execute(&self.sql.begin(false))
                .await
                .map_err(|e| reset_failure(f, direction, &e))?;
        }
        for (i, s) in script.statements.iter().enumerate().skip(from) {
            self.conn
                .client
                .batch_execute(&s.text)
                .await
                .map_err(|e| statement_failure(f, direction, i, &e))?;
        }
        let record = self.sql.record(f, direction, now);
        self.conn
            .client
            .batch_execute(&record)
            .await
            .map_err(bookkeeping)
    }

    /// A file in its transaction, sent in one go: `BEGIN` with the session reset, each
    /// statement alone, the history write, `COMMIT`, all queued on the connection at once
    /// (pipelined), so the file costs about one round trip whatever its length. Nothing
    /// runs outside the transaction: once a statement fails the server aborts the
    /// transaction, ignores what follows, and the `COMMIT` rolls it back. Returns where
    /// the first error came from.
    async fn pipelined(
        &self,
        f: &MigrationFile,
        direction: Direction,
        now: &str,
    ) -> Result<(), (At, tokio_postgres::Error)> {
        let client = &self.conn.client;
        let script = direction.script(f);
        let begin = self.sql.begin(true);
        let record = self.sql.record(f, direction, now);
        let commit = self.sql.commit();
        let mut sent = Vec::with_capacity(script.statements.len() + 3);
        sent.push(client.batch_execute(&begin));
        sent.extend(
            script
                .statements
                .iter()
                .map(|s| client.batch_execute(&s.text)),
        );
        sent.push(client.batch_execute(&record));
        sent.push(client.batch_execute(&commit));
        let results = futures::future::join_all(sent).await;
        let last = results.len() - 1;
        for (i, result) in results.into_iter().enumerate() {
            if let Err(e) = result {
                let at = match i {
                    0 => At::Begin,
                    i if i < last - 1 => At::Statement(i - 1),
                    _ => At::Record,
                };
                return Err((at, e));
            }
        }
        Ok(())
    }

    /// Removes the tenant from the registry and, unless `keep_schema`, drops its schema,
    /// with its ledger entry. Refuses, changing nothing, when the schema is shared or
    /// objects outside it depend on objects in it. Returns whether a schema was dropped
    /// (false with `keep_schema`, or when it never existed).
    ///
    /// With `registry` `None` the registry lives on this session's server and all of it is
    /// one transaction. Otherwise the registry row is deleted in a transaction on
    /// `registry` that commits after the schema's drop has committed on this server: if
    /// that last commit fails, the row stays and a second `tenant drop` finishes.
    pub async fn drop_tenant(
        &mut self,
        tables: &Tables,
        tenant: &Tenant,
        keep_schema: bool,
        event: &Event<'_>,
        registry: Option<&Client>,
    ) -> Result<bool, Error> {
        let schema = self.schema;
        if !keep_schema {
            if let Some(role) = dependents::shared_role(self.settings, schema) {
                return Err(Error::refused(plan::drop_shared(
                    schema,
                    role,
                    &tenant.domain,
                )));
            }
        }
        let context = format!("dropping tenant {}", tenant.domain);
        let err = query_error(&context);
        let Some(registry) = registry else {
            let tx = self.conn.client.transaction().await.map_err(&err)?;
            unregister(&tx, tables, tenant).await?;
            let dropped = drop_checked(&tx, schema, tenant, keep_schema).await?;
            log_drop(&tx, tables, tenant, event).await?;
            tx.commit().await.map_err(&err)?;
            return Ok(dropped);
        };
        registry.batch_execute("BEGIN").await.map_err(&err)?;
        let ended = async {
            unregister(registry, tables, tenant).await?;
            let tx = self.conn.client.transaction().await.map_err(&err)?;
            let dropped = drop_checked(&tx, schema, tenant, keep_schema).await?;
            tx.commit().await.map_err(&err)?;
            log_drop(registry, tables, tenant, event).await?;
            Ok::<bool, Error>(dropped)
        }
        .await;
        let end = if ended.is_ok() { "COMMIT" } else { "ROLLBACK" };
        registry.batch_execute(end).await.map_err(&err)?;
        ended
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
            &self.conn.client,
            tables,
            tenant_id,
            &observed(&state),
            outcome,
            event,
        )
        .await
    }
}

/// Deletes the tenant's registry row; an error, changing nothing, when another command
/// removed it first.
async fn unregister(
    client: &impl GenericClient,
    tables: &Tables,
    tenant: &Tenant,
) -> Result<(), Error> {
    let n = client
        .execute(
            &format!("DELETE FROM {} WHERE id = $1", tables.tenants),
            &[&tenant.id],
        )
        .await
        .map_err(query_error(&format!("dropping tenant {}", tenant.domain)))?;
    if n == 0 {
        // Dropped by another command while this one waited for the lock.
        return Err(Error::failed(format!(
            "tenant {} was already removed from the registry",
            tenant.domain
        )));
    }
    Ok(())
}

/// Unless `keep_schema`, drops the tenant's schema in the caller's transaction after
/// checking nothing outside it depends on it; whether there was a schema to drop.
async fn drop_checked(
    tx: &tokio_postgres::Transaction<'_>,
    schema: &str,
    tenant: &Tenant,
    keep_schema: bool,
) -> Result<bool, Error> {
    if keep_schema {
        return Ok(false);
    }
    let blocking = check_outside(tx, schema).await?;
    if !blocking.is_empty() {
        let refusal = plan::drop_blocked(schema, &blocking, &tenant.domain);
        return Err(Error::refused(refusal));
    }
    let exists = dependents::contents(tx, schema).await?.exists;
    if exists {
        let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", quote(schema));
        guarded_drop(tx, &drop, schema).await?;
    }
    Ok(exists)
}

/// The ledger entry of a drop.
async fn log_drop(
    client: &impl GenericClient,
    tables: &Tables,
    tenant: &Tenant,
    event: &Event<'_>,
) -> Result<(), Error> {
    client
        .execute(
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
        .map_err(query_error(&format!("dropping tenant {}", tenant.domain)))?;
    Ok(())
}

/// Runs `drop` (a `DROP SCHEMA ... CASCADE`) in the caller's transaction, refusing when
/// it would have to wait for a lock (see [`plan::DROP_WAIT_MS`]).
async fn guarded_drop(
    tx: &tokio_postgres::Transaction<'_>,
    drop: &str,
    schema: &str,
) -> Result<(), Error> {
    match tx.batch_execute(&plan::guarded_drop(drop)).await {
        Ok(()) => Ok(()),
        Err(e) if is_lock_timeout(&e) => Err(Error::refused(format!(
            "refusing to drop schema {}: another session holds a lock on an object the drop reaches (it may be creating objects that depend on the schema); nothing was changed; try again when it has finished",
            quote(schema)
        ))),
        Err(e) => Err(query_error(&format!("dropping schema {}", quote(schema)))(e)),
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
    sql: &Sql,
    limit: Duration,
    wait: &LockWait<'_>,
) -> Result<(), OpenError> {
    let key = sql.keys();
    let schema = sql.schema();
    let what = sql.what;
    let failed = |e| {
        OpenError::Failed(query_error(&format!(
            "taking the lock on {what} {}",
            quote(schema)
        ))(e))
    };
    let stop = wait.interrupt.stop_token();
    // The session's settings go in the same round trip, right after the lock.
    let sql = sql.lock();
    let lock = client.batch_execute(&sql);
    tokio::pin!(lock);
    let report = async {
        tokio::time::sleep(REPORT_WAIT_AFTER).await;
        lock_holder(target, key).await
    };
    tokio::pin!(report);
    let mut reported = false;
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
            "gave up waiting for the lock on {what} {} after {} (run.lock_wait): it is held by {}; nothing was changed",
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

/// What executing a plan did, so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Executed {
    /// Versions applied (or reverted, or newly recorded), in order.
    pub versions: Vec<i32>,
    /// Whether anything changed.
    pub changed: bool,
    /// Whether the schema was created (or recreated empty).
    pub schema_created: bool,
}

/// Why a plan did not execute to its end.
#[derive(Debug)]
pub enum ExecError {
    /// Refused before anything changed (objects outside the schema depend on it).
    Refused(String),
    /// A step failed; the steps before it stayed done.
    Failed {
        /// What was done before the failure.
        done: Executed,
        /// What failed, with the database's message.
        message: String,
    },
    /// The run was asked to stop; the session stopped between two migrations.
    Interrupted(Executed),
    /// A migration requires a shared revision this server's shared schema has not
    /// reached: the session stopped before it; the steps before it stayed done.
    HeldBack {
        /// What was done before it.
        done: Executed,
        /// Which file, and the revisions.
        message: String,
    },
}

/// Where in a pipelined file the first error came from.
enum At {
    Begin,
    Statement(usize),
    Record,
}

/// Why one step failed.
enum StepError {
    Refused(String),
    Failed(String),
    HeldBack(String),
}

/// Why a tenant stops before `file`: its server's shared schema is below the revision
/// the file requires.
pub fn held_back(file: &MigrationFile, n: i32, schema: &str, current: Option<i32>) -> String {
    let at = match current {
        Some(c) if c > n => format!("is at {c} without version {n} applied"),
        c => format!("is at {}", crate::show::revision(c)),
    };
    format!(
        "held back before {}: it requires the shared schema at revision {n} or later, and this server's shared schema {} {at}; run `tenantctl upgrade --shared` first (nothing from {} on was run)",
        file.refinery_name(),
        quote(schema),
        file.refinery_name()
    )
}

/// Why one attempt at a file failed.
struct Failure {
    message: String,
    /// A `lock_timeout` expired: worth retrying.
    lock_timeout: bool,
    /// The statement it failed at (the count of statements when the bookkeeping failed).
    statement: usize,
}

/// The session could not be reset before a file.
fn reset_failure(f: &MigrationFile, direction: Direction, e: &tokio_postgres::Error) -> Failure {
    Failure {
        message: format!(
            "resetting the session before {}: {}",
            direction.describe(f),
            db::pg_message(e)
        ),
        lock_timeout: false,
        statement: 0,
    }
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

/// Whether an error is PostgreSQL's `lock_not_available` (a `lock_timeout` expired).
fn is_lock_timeout(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}

/// The wait before retry number `attempt` (0-based): `base`, doubling, at most 30 s.
pub fn retry_delay(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.min(16))
        .min(Duration::from_secs(30))
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
}
