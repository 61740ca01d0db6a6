//! Operations on tenants and the per-tenant work the scheduler runs for them.
//!
//! An [`Operation`] says what to do to one tenant inside the tenant's locked session.
//! [`OnTenant`] wraps any operation into the scheduler's [`Work`]: it opens the tenant's
//! session (connecting patiently, waiting for the tenant's advisory lock), hands it to the
//! operation, forwards the server's notices as events, and records the outcome in the
//! registry and the run ledger through the same session, or through the command's own
//! registry connection when the session died. A new operation (export, import, move)
//! implements [`Operation`] and gets sessions, locking, recording, canary, max failures,
//! interruption and progress from here and from [`crate::engine::scheduler`].
//!
//! [`Change`] is the operation behind `provision`, `upgrade`, `downgrade` and `stamp`: it
//! plans from the schema's state read under the lock ([`crate::engine::plan`]) and executes the
//! plan.
//!
//! # Connection trouble
//!
//! A session that cannot connect because of trouble that may pass by itself (see
//! [`db::transient`]) waits and tries again (see [`db::Target::for_run`]). A tenant whose
//! session never opened (no connection, no lock) was not touched: it is reported failed
//! with the error naming the server (never the password), and nothing is written about
//! it to the registry or the run ledger. Results of tenants whose session died are
//! recorded through the command's registry connection ([`RegistryConn`]), which
//! reconnects after a server restart.

use std::future::Future;
use std::time::Instant;

use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::config::Settings;
use crate::engine::plan::{Refusal, SchemaChange};
use crate::engine::pool::Pools;
use crate::engine::runner::{ExecError, LockHolder, LockWait, OpenError, Session};
use crate::engine::scheduler::{
    Cause, Events, Planned, ResultStatus, RunEvent, TenantResult, Work,
};
use crate::engine::target::Target;
use crate::error::{Error, ErrorKind};
use crate::files::migrations::{compare, MigrationSet};
use crate::pg::db;
use crate::pg::interrupt::Interrupt;
use crate::registry::conn::RegistryConn;
use crate::registry::state::{self, SchemaState};
use crate::registry::{self, Event, Outcome, Status, Tables, Tenant};

/// What to do to one tenant in its locked session.
pub trait Operation: Sync {
    /// The name recorded in the run ledger and shown in progress.
    fn name(&self) -> &'static str;

    /// Whether the tenant's status is left as it is whatever the outcome (a backup reads
    /// the tenant and changes nothing in it); the ledger still records the outcome.
    fn keeps_status(&self) -> bool {
        false
    }

    /// Whether [`Operation::apply`] reads the schema's state: it is then read while the
    /// session checks where the tenant is, in the same round trip.
    fn reads_state(&self) -> bool {
        false
    }

    /// Works on the tenant in `session` (connected, the tenant's lock held, `search_path`
    /// pinned) and fills in `result`: its status, revisions, applied versions, error and
    /// [`Cause`]. What is recorded follows from the result: a failure is written
    /// `failed`, a success `active`, a skip or a refusal changes nothing.
    fn apply(
        &self,
        session: &mut Session<'_>,
        tenant: &Tenant,
        result: &mut TenantResult,
    ) -> impl Future<Output = ()>;
}

/// How a run treats tenants whose schema does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unprovisioned {
    /// Report them as failed (they were named explicitly).
    Fail,
    /// Report them as skipped (they were swept up by a filter such as `--all`).
    Skip,
}

/// What every tenant's work needs from the run.
pub struct Env<'a> {
    /// Where to connect: the run's connections to each server, reused from tenant to
    /// tenant.
    pub pools: &'a Pools,
    /// The command's registry connection: outcomes of tenants on other servers are
    /// recorded through it, and those of tenants whose session died.
    pub registry: &'a RegistryConn<'a>,
    /// Effective settings.
    pub settings: &'a Settings,
    /// The registry's tables.
    pub tables: &'a Tables,
    /// This run's id in the ledger.
    pub run_id: &'a str,
    /// This machine's name, for the ledger.
    pub client_host: &'a str,
    /// The run's interruption: sessions register with it and stop when it asks.
    pub interrupt: &'a Interrupt,
}

/// A schema change ([`SchemaChange`]) as an operation.
pub struct Change<'s> {
    /// What to change.
    pub change: SchemaChange,
    /// The migration files (empty for provisioning).
    pub set: &'s MigrationSet,
    /// What to do with tenants without a schema.
    pub unprovisioned: Unprovisioned,
}

impl Operation for Change<'_> {
    fn name(&self) -> &'static str {
        self.change.name()
    }

    fn reads_state(&self) -> bool {
        true
    }

    async fn apply(&self, session: &mut Session<'_>, tenant: &Tenant, r: &mut TenantResult) {
        let fail = |r: &mut TenantResult, message: String| {
            r.status = ResultStatus::Failed;
            r.error = Some(message);
        };
        let before = match session.state().await {
            Ok(s) => s,
            Err(e) => return fail(r, e.to_string()),
        };
        r.from_revision = before.current();
        r.to_revision = before.current();
        let schema = &tenant.schema_name;
        let plan = match self
            .change
            .plan(schema, &before, self.set, session.settings())
        {
            Ok(plan) => plan,
            Err(refusal) => {
                let message = refusal.message(schema, &tenant.domain);
                r.error = Some(message);
                if refusal.skippable() && self.unprovisioned == Unprovisioned::Skip {
                    r.status = ResultStatus::Skipped;
                    // A tenant without a schema is simply not concerned: the ledger
                    // gets no entry. The others are refusals, which it records.
                    if refusal != Refusal::NotProvisioned {
                        r.cause = Cause::Refused;
                    }
                    return;
                }
                // Nothing was changed: the registry row stays as it was, the ledger
                // records the refusal, the result says failed.
                r.status = ResultStatus::Failed;
                r.cause = Cause::Refused;
                return;
            }
        };
        let up = matches!(self.change, SchemaChange::Upgrade { .. });
        match session.execute(&plan).await {
            Ok(done) => {
                // What the schema is at now, even if recording it fails below.
                r.to_revision = plan.to_revision;
                r.schema_created = done.schema_created;
                r.applied = done.versions;
                r.status = if done.changed {
                    ResultStatus::Ok
                } else {
                    ResultStatus::UpToDate
                };
            }
            Err(ExecError::Refused(message)) => {
                r.cause = Cause::Refused;
                fail(r, message);
            }
            Err(ExecError::Interrupted(done)) => {
                r.schema_created = done.schema_created;
                if !done.changed {
                    r.status = ResultStatus::Skipped;
                    r.cause = Cause::NotStarted;
                    r.error = Some(format!(
                        "not started: {}",
                        crate::engine::scheduler::INTERRUPTED
                    ));
                    return;
                }
                let down = matches!(self.change, SchemaChange::Downgrade(_));
                r.error = Some(match done.versions.last() {
                    Some(v) if down => format!("stopped early: the run was interrupted after reverting version {v}; a rerun goes on from there"),
                    Some(v) => format!("stopped early: the run was interrupted after version {v}; a rerun goes on from there"),
                    None => "stopped early: the run was interrupted before the first migration; a rerun goes on from there".into(),
                });
                if up {
                    r.to_revision = done.versions.last().copied().or(r.to_revision);
                }
                r.applied = done.versions;
                r.status = ResultStatus::Ok;
            }
            Err(ExecError::HeldBack { done, message }) => {
                // Not a failure: the tenant waits for its server's shared schema, its
                // registry status unchanged. What ran before the file stays done.
                r.schema_created = done.schema_created;
                r.error = Some(message);
                if done.changed {
                    r.to_revision = done.versions.last().copied().or(r.to_revision);
                    r.applied = done.versions;
                    r.status = ResultStatus::Ok;
                } else {
                    r.status = ResultStatus::Skipped;
                    r.cause = Cause::Refused;
                }
            }
            Err(ExecError::Failed { done, message }) => {
                r.schema_created = done.schema_created;
                if up && !done.versions.is_empty() {
                    r.to_revision = done.versions.last().copied();
                }
                r.applied = done.versions;
                fail(r, message);
            }
        }
    }
}

/// Decides whether an upgrade to `target` must open a session for a tenant: when it is
/// behind, drifted, unreadable, above the target (refused under its lock, and recorded),
/// or not `active` in the registry (so a success can clear a stale `failed`); always
/// for a relative target, which is resolved under the lock. Otherwise it is answered
/// from `state` at once; a tenant whose schema existed (status `active`, or
/// `schema_provisioned`) and is gone has failed.
pub fn triage_one(
    t: Tenant,
    state: Option<&SchemaState>,
    set: &MigrationSet,
    target: Target,
    unprovisioned: Unprovisioned,
) -> Planned {
    let Some(st) = state else {
        return Planned::Work(t);
    };
    if !st.schema_exists {
        return triage_missing(t, unprovisioned);
    }
    let Ok(history) = &st.history else {
        return Planned::Work(t);
    };
    let Target::Version(target) = target else {
        return Planned::Work(t);
    };
    let cmp = compare(history, set);
    let behind = cmp.pending.iter().any(|v| *v <= target);
    let above = cmp.current.is_some_and(|c| c > target);
    if behind || above || !cmp.drift.is_empty() || t.status != Status::Active {
        return Planned::Work(t);
    }
    let mut r = TenantResult::new(&t, ResultStatus::UpToDate);
    r.from_revision = cmp.current;
    r.to_revision = cmp.current;
    r.tenant = Some(Box::new(t));
    Planned::Done(r)
}

/// A tenant whose schema does not exist, in an upgrade.
fn triage_missing(t: Tenant, unprovisioned: Unprovisioned) -> Planned {
    let existed = t.status == Status::Active || t.schema_provisioned;
    match unprovisioned {
        // Named: it fails in its session, with the message a session gives.
        Unprovisioned::Fail => Planned::Work(t),
        // Swept up by a filter, its schema existed and was dropped outside tenantctl:
        // drift, not a skip.
        Unprovisioned::Skip if existed => {
            let mut r = TenantResult::new(&t, ResultStatus::Failed);
            r.error = Some(vanished(&t));
            r.to_revision = None;
            r.tenant = Some(Box::new(t));
            Planned::Done(r)
        }
        Unprovisioned::Skip => {
            let mut r = TenantResult::new(&t, ResultStatus::Skipped);
            r.error = Some(Refusal::NotProvisioned.message(&t.schema_name, &t.domain));
            r.from_revision = None;
            r.to_revision = None;
            r.tenant = Some(Box::new(t));
            Planned::Done(r)
        }
    }
}

/// The error for a tenant whose schema existed and is gone.
fn vanished(t: &Tenant) -> String {
    format!(
        "schema {} of {} tenant {} is missing: it was dropped outside tenantctl. Recreate it \
         empty with `tenantctl provision --tenant {d}` then `tenantctl upgrade --tenant {d}` \
         (or restore it from a backup), or remove the tenant with `tenantctl tenant drop {d}`",
        crate::ident::quote(&t.schema_name),
        t.status.as_str(),
        t.domain,
        d = t.domain
    )
}

/// The scheduler's work for an operation: each tenant in its own locked session, its
/// outcome recorded in the registry and the ledger.
pub struct OnTenant<'a, O> {
    /// The run's inputs.
    pub env: &'a Env<'a>,
    /// The operation.
    pub op: &'a O,
    /// Set when a result could not be recorded at all: no tenant is started after it.
    pub halt: std::sync::Mutex<Option<String>>,
    /// Where the run's events go.
    pub events: &'a Events,
}

impl<O: Operation> Work for OnTenant<'_, O> {
    async fn run(&self, tenant: &Tenant) -> TenantResult {
        let env = self.env;
        let mut r = run_one(env, self.op, tenant, self.events).await;
        if !r.session_opened && env.interrupt.requested() {
            // It was still waiting for a connection: not started, nothing touched.
            r.status = ResultStatus::Skipped;
            r.cause = Cause::NotStarted;
            r.error = Some(format!(
                "not started: {}",
                crate::engine::scheduler::INTERRUPTED
            ));
        }
        // A tenant whose session never opened was not touched: record nothing.
        let noted = r.status != ResultStatus::Skipped || r.cause == Cause::Refused;
        if r.session_opened && r.tenant.is_none() && noted {
            r.tenant = record_fallback(
                env,
                env.registry,
                tenant,
                &r,
                self.op.name(),
                self.op.keeps_status(),
            )
            .await
            .map(Box::new);
            // The work was done and is now recorded: connection trouble after it does not
            // make it a failure.
            if let (Some(row), Cause::Unrecorded(status)) = (&r.tenant, r.cause) {
                r.status = status;
                r.error = None;
                r.cause = Cause::None;
                r.to_revision = row.current_revision;
            }
            // Nothing reaches the registry: a change started now could not be recorded
            // either, so none is started.
            if r.tenant.is_none() && !env.interrupt.aborting() {
                let mut halt = self.halt.lock().unwrap_or_else(|p| p.into_inner());
                halt.get_or_insert_with(|| {
                    format!(
                        "the registry could not be reached to record tenant {}'s result",
                        tenant.domain
                    )
                });
            }
        }
        r
    }

    fn halted(&self) -> Option<String> {
        self.halt.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs one operation on one tenant in its own locked session and records the outcome
/// (and a ledger entry when something changed or failed) through that session. A long
/// wait for the tenant's lock, and the server's notices and warnings, become events.
pub async fn run_one(
    env: &Env<'_>,
    op: &impl Operation,
    tenant: &Tenant,
    events: &Events,
) -> TenantResult {
    let started = Instant::now();
    let started_at = OffsetDateTime::now_utc();
    let mut result = TenantResult::new(tenant, ResultStatus::Failed);
    let report = |holder: Option<&LockHolder>| {
        events.send(RunEvent::Waiting {
            domain: tenant.domain.clone(),
            schema_name: tenant.schema_name.clone(),
            holder: holder.cloned(),
        })
    };
    let wait = LockWait {
        interrupt: env.interrupt,
        report: &report,
    };
    let Some(pool) = env.pools.get(&tenant.server) else {
        result.cause = Cause::Unreachable;
        result.error = Some(format!(
            "tenant {} is on server {}, which is not configured (add a [servers.NAME] table to tenants.toml); nothing was changed",
            tenant.domain,
            crate::ident::shown(&tenant.server)
        ));
        return result;
    };
    let opened = Session::open(pool, env.settings, &tenant.schema_name, &wait).await;
    let mut session = match opened {
        Ok(s) => s,
        Err(e) => {
            not_opened(&mut result, e);
            result.duration_ms = started.elapsed().as_millis() as u64;
            return result;
        }
    };
    result.session_opened = true;
    // The tenant may have moved, or be in the middle of a move, while this run waited
    // for its lock: its schema on this server is then not (or no longer) the tenant's.
    session.expect_history(tenant.schema_provisioned && tenant.current_revision.is_some());
    let where_now = elsewhere(env, tenant, &session);
    let elsewhere = if op.reads_state() {
        // The schema's state is read at the same time, on the same connection, which
        // pipelines the two: a round trip fewer for each tenant. The session keeps what
        // it read (the tenant's lock keeps others out), and an error is met again when
        // the operation asks for the state.
        let (why, _) = futures::join!(where_now, session.observe());
        why
    } else {
        where_now.await
    };
    if let Some(why) = elsewhere {
        match why {
            // Nothing is recorded: what this session sees of the schema (fenced, or
            // half-copied) is not the tenant's state, and the move's rerun records it.
            Elsewhere::Moving(message) => {
                result.cause = Cause::Refused;
                result.error = Some(message);
            }
            Elsewhere::Gone(status, message) => {
                result.status = status;
                result.cause = Cause::Removed;
                result.error = Some(message);
            }
        }
        // Touched nothing, and recorded as such: nothing is written about it.
        result.session_opened = false;
        session.close(pool).await;
        result.duration_ms = started.elapsed().as_millis() as u64;
        return result;
    }
    let notice = |notice: &db::Notice| {
        events.send(RunEvent::Notice {
            domain: tenant.domain.clone(),
            notice: notice.clone(),
        })
    };
    session.on_notice(notice);
    op.apply(&mut session, tenant, &mut result).await;
    for n in session.notices() {
        notice(&n);
    }
    let event = Event {
        run_id: env.run_id,
        action: op.name(),
        from_revision: result.from_revision,
        started_at,
        client_host: env.client_host,
    };
    // An abort cancelled what ran: the process is ending, and the abort says that
    // tenants in flight are not recorded (a rerun finishes them).
    if !env.interrupt.aborting() {
        record(
            &session,
            env,
            tenant,
            &mut result,
            &event,
            op.keeps_status(),
        )
        .await;
    }
    session.close(pool).await;
    result.duration_ms = started.elapsed().as_millis() as u64;
    result
}

/// Why a tenant's session, once its lock is held, must not touch the schema it opened.
enum Elsewhere {
    /// An unfinished move: refused until it is finished or undone.
    Moving(String),
    /// Moved to another server, or dropped, while this run waited for its lock.
    Gone(ResultStatus, String),
}

/// Reads the tenant's registry row and move journal as they are now (its lock is held,
/// so no move of it can start or end meanwhile): `None` when the tenant is still on the
/// server this run found it on, with no move of it unfinished.
async fn elsewhere(env: &Env<'_>, tenant: &Tenant, session: &Session<'_>) -> Option<Elsewhere> {
    let sql = format!(
        "SELECT coalesce(t.server, 'default'), m.tenant_id IS NOT NULL, coalesce(m.to_server, '(unknown)'), \
                coalesce(m.phase, '(unknown)') \
         FROM {} t LEFT JOIN {} m ON m.tenant_id = t.id WHERE t.id = $1",
        env.tables.tenants, env.tables.moves
    );
    // One round trip (an unnamed statement with its parameter's type given), not a
    // statement prepared and executed anew for every tenant.
    let read = async |client: &Client| {
        client
            .query_typed(&sql, &[(&tenant.id, tokio_postgres::types::Type::INT8)])
            .await
            .map(|rows| rows.into_iter().next())
            .map_err(db::query_error("reading where the tenant is now"))
    };
    let row = if crate::registry::servers::is_default(&tenant.server) {
        read(session.client()).await
    } else {
        env.registry.run(read).await
    };
    let row = match row {
        Ok(row) => row,
        // Unknown: the work goes on as before (its outcome is recorded by id).
        Err(_) => return None,
    };
    let Some(row) = row else {
        return Some(Elsewhere::Gone(
            ResultStatus::Skipped,
            format!(
                "not changed: tenant {} was dropped while this run waited for it",
                tenant.domain
            ),
        ));
    };
    let (server, moving, to, phase): (String, bool, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if moving {
        return Some(Elsewhere::Moving(format!(
            "tenant {} has an unfinished move to server {to} ({phase}): run `tenantctl tenant move {} --to {to}` to finish it (or `--to {server}` to undo it) first; nothing was changed",
            tenant.domain, tenant.domain
        )));
    }
    (server != tenant.server).then(|| {
        Elsewhere::Gone(
            ResultStatus::Skipped,
            format!(
                "not changed: tenant {} moved to server {server} while this run waited for it; run the command again for it",
                tenant.domain
            ),
        )
    })
}

/// A result for a tenant whose session did not open.
fn not_opened(result: &mut TenantResult, e: OpenError) {
    match e {
        OpenError::Interrupted => {
            result.status = ResultStatus::Skipped;
            result.cause = Cause::NotStarted;
            result.error = Some(format!(
                "not started: {}",
                crate::engine::scheduler::INTERRUPTED
            ));
        }
        OpenError::LockWait(message) => {
            result.cause = Cause::LockWait;
            result.error = Some(message);
        }
        OpenError::Failed(e) => {
            match e.kind() {
                ErrorKind::Unavailable | ErrorKind::Setup => result.cause = Cause::Unreachable,
                ErrorKind::Refused => result.cause = Cause::Refused,
                _ => {}
            }
            result.error = Some(e.to_string());
        }
    }
}

/// What the registry is told of a result: a failure is `failed`, a success `active`, a
/// skip changes nothing, and a refusal changes nothing but is written to the ledger.
fn outcome(r: &TenantResult, keeps_status: bool) -> Outcome<'_> {
    if r.cause == Cause::Refused {
        return Outcome::Refused(r.error.as_deref().unwrap_or("refused"));
    }
    if keeps_status {
        return match (r.status, r.error.as_deref()) {
            (ResultStatus::Failed, e) => Outcome::Noted(e.unwrap_or("unknown error")),
            _ => Outcome::Unchanged,
        };
    }
    match (r.status, r.error.as_deref()) {
        (ResultStatus::Skipped, _) => Outcome::Unchanged,
        (ResultStatus::Failed, Some(e)) => Outcome::Failed(e),
        (ResultStatus::Failed, None) => Outcome::Failed("unknown error"),
        _ => Outcome::Succeeded,
    }
}

/// Records a result while the tenant's lock is held, with a ledger entry for changes and
/// failures: through the tenant's session when the tenant lives on the registry's server,
/// else through the command's registry connection.
async fn record(
    session: &Session<'_>,
    env: &Env<'_>,
    tenant: &Tenant,
    result: &mut TenantResult,
    event: &Event<'_>,
    keeps_status: bool,
) {
    let log = matches!(result.status, ResultStatus::Ok | ResultStatus::Failed)
        || result.cause == Cause::Refused;
    let outcome = outcome(result, keeps_status);
    let event = log.then_some(event);
    let recorded = if crate::registry::servers::is_default(&tenant.server) {
        session.record(env.tables, tenant.id, outcome, event).await
    } else {
        match session.state().await {
            Ok(state) => {
                let observed = registry::Observed::of(&state);
                env.registry
                    .run(async |client: &Client| {
                        registry::record_with(
                            client, env.tables, tenant.id, &observed, outcome, event,
                        )
                        .await
                    })
                    .await
            }
            Err(e) => Err(e),
        }
    };
    match recorded {
        Ok(row) => {
            result.to_revision = row.current_revision;
            result.tenant = Some(Box::new(row));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // Dropped by `tenant drop` while this run waited for its lock.
            result.status = ResultStatus::Skipped;
            result.cause = Cause::Removed;
            result.applied.clear();
            result.error = Some(format!("not changed: {e}"));
        }
        Err(e) => {
            // The session may be gone; the caller records through its own connection.
            if result.error.is_none() {
                result.error = Some(format!(
                    "the tenant was changed but the registry could not be updated: {e}"
                ));
                result.cause = Cause::Unrecorded(result.status);
                result.status = ResultStatus::Failed;
            }
        }
    }
}

/// Records a result through the main connection when the tenant's session could not
/// (it died after the session opened), reconnecting if the server closed that one too.
async fn record_fallback(
    env: &Env<'_>,
    main: &RegistryConn<'_>,
    tenant: &Tenant,
    r: &TenantResult,
    action: &str,
    keeps_status: bool,
) -> Option<Tenant> {
    let outcome = match r.cause {
        Cause::Unrecorded(ResultStatus::Skipped) => Outcome::Unchanged,
        Cause::Unrecorded(_) if keeps_status => Outcome::Unchanged,
        Cause::Unrecorded(_) => Outcome::Succeeded,
        _ => outcome(r, keeps_status),
    };
    let event = Event {
        run_id: env.run_id,
        action,
        from_revision: r.from_revision,
        started_at: OffsetDateTime::now_utc() - time::Duration::milliseconds(r.duration_ms as i64),
        client_host: env.client_host,
    };
    // As through the session: the ledger gets changes and failures.
    let log = !matches!(
        r.cause,
        Cause::Unrecorded(ResultStatus::UpToDate | ResultStatus::Skipped)
    );
    if env.interrupt.aborting() {
        return None;
    }
    main.run(async |client: &Client| {
        // The schema lives on the tenant's server, which may be the one that went away:
        // there, what the registry last saw of it stays (only the status is written).
        let observed = if crate::registry::servers::is_default(&tenant.server) {
            let states = state::observe(
                client,
                std::slice::from_ref(&tenant.schema_name),
                &env.settings.history_table,
            )
            .await?;
            registry::Observed::of(states.get(&tenant.schema_name).ok_or_else(|| {
                Error::failed(format!("schema {} was not observed", tenant.schema_name))
            })?)
        } else {
            registry::Observed::unread(tenant)
        };
        registry::record_with(
            client,
            env.tables,
            tenant.id,
            &observed,
            outcome,
            log.then_some(&event),
        )
        .await
    })
    .await
    .ok()
}
