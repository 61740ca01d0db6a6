//! Work on many tenants: plans which tenants need a session, runs an action on them with
//! bounded concurrency and rollout controls (canary, max failures, interruption), and
//! summarises the run.
//!
//! Each tenant that needs work gets its own session (see [`crate::runner`]); at most
//! `concurrency` sessions are open at once. Tenants that need nothing are answered from
//! one batched observation (see [`crate::state`]) without a session.
//!
//! # Connection trouble
//!
//! A session that cannot connect because of trouble that may pass by itself (see
//! [`db::transient`]) waits and tries again, with jittered, doubling waits of at most
//! 1 s. The sessions of a run connect through one [`db::Target::for_run`], which counts
//! the run's open connections:
//! - refused for lack of slots (`too_many_connections`: a role's or database's
//!   `CONNECTION LIMIT`, or `max_connections`) while other sessions of the run are
//!   connected, a session waits with no deadline: those sessions will finish and free a
//!   slot, so the run goes on at the pace the server allows and finishes every tenant;
//! - otherwise (the server is down or restarting, or refuses the run entirely),
//!   `database.connect_timeout` applies, counted from the last moment a session of the
//!   run connected or ended.
//!
//! This is plain retrying rather than an adaptive limit (a run-wide semaphore that
//! shrinks on each refusal and grows back on success). A refusal says only that the
//! server is full at that instant, which also depends on every other client of the
//! server, and changes as they come and go; a shrunk limit would need a rule for growing
//! back, and a wrong one either leaves the run slower than the server allows or keeps it
//! hitting the limit. Retrying uses whatever capacity exists at each moment, costs the
//! server one refused connection per waiting session per second at most, and cannot
//! deadlock the run: a waiting session holds nothing.
//!
//! A tenant whose session never opened (no connection, no lock) was not touched: it is
//! reported failed in the run's results, with the error naming the server (never the
//! password), and nothing is written about it to the registry or the run ledger. Results
//! of tenants whose session died are recorded through the command's registry connection
//! ([`RegistryConn`]), which reconnects after a server restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures::stream::{self, StreamExt};
use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::config::Settings;
use crate::db;
use crate::error::{Error, Exit};
use crate::interrupt::Interrupt;
use crate::migrations::{compare, MigrationSet};
use crate::registry::{self, Event, Outcome, Status, Tables, Tenant};
use crate::registry_conn::RegistryConn;
use crate::runner::{self, LockHolder, LockWait, OpenError, RecreateError, Session, UpgradeError};
use crate::state::{self, SchemaState};

/// What to do to each tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create the schema if missing.
    Provision,
    /// Apply migrations up to the version.
    Upgrade(i32),
    /// Create the schema if missing, then apply migrations up to the version.
    ProvisionAndUpgrade(i32),
    /// Drop the schema with its data and create it empty.
    Recreate,
    /// Run down scripts until the version is the highest applied.
    Downgrade(i32),
    /// Record migrations up to the version as applied without running them.
    Stamp(i32),
}

impl Action {
    /// The name recorded in the run ledger.
    pub fn name(self) -> &'static str {
        match self {
            Action::Provision => "provision",
            Action::Upgrade(_) => "upgrade",
            Action::ProvisionAndUpgrade(_) => "provision+upgrade",
            Action::Recreate => "recreate",
            Action::Downgrade(_) => "downgrade",
            Action::Stamp(_) => "stamp",
        }
    }
}

/// How one tenant came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// Changed as asked.
    Ok,
    /// Nothing to do.
    UpToDate,
    /// Failed; see `error`.
    Failed,
    /// Not attempted; see `error` for why.
    Skipped,
}

/// One tenant's result, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct TenantResult {
    /// Tenant domain.
    pub domain: String,
    /// Tenant schema.
    pub schema_name: String,
    /// Outcome.
    pub status: ResultStatus,
    /// Revision before (`null`: nothing applied).
    pub from_revision: Option<i32>,
    /// Revision after.
    pub to_revision: Option<i32>,
    /// Versions applied by this run.
    pub applied: Vec<i32>,
    /// Why it failed or was skipped, or why it stopped short of the target (an
    /// interrupted run).
    pub error: Option<String>,
    /// Wall time for this tenant.
    pub duration_ms: u64,
    /// Whether this run created the schema.
    #[serde(skip)]
    pub schema_created: bool,
    /// The registry row as recorded after the run, when it could be recorded.
    #[serde(skip)]
    pub tenant: Option<Tenant>,
    /// Whether a session on the tenant was opened (connected, lock taken). Without one
    /// the tenant was not touched and nothing is recorded about it.
    #[serde(skip)]
    pub session_opened: bool,
    /// Whether the tenant failed because its session could not connect to the server
    /// (as opposed to a lock wait that ran out, or a refusal decided without a session).
    #[serde(skip)]
    pub unreachable: bool,
    /// Whether the tenant was refused before anything changed (a `--force-recreate` that
    /// would reach outside the schema): reported failed, but its registry row is left
    /// alone.
    #[serde(skip)]
    pub refused: bool,
    /// How the work on the tenant ended, when it was done but recording it through the
    /// tenant's session failed (the result says failed until it is recorded otherwise).
    #[serde(skip)]
    pub unrecorded: Option<ResultStatus>,
}

impl TenantResult {
    fn new(tenant: &Tenant, status: ResultStatus) -> TenantResult {
        TenantResult {
            domain: tenant.domain.clone(),
            schema_name: tenant.schema_name.clone(),
            status,
            from_revision: tenant.current_revision,
            to_revision: tenant.current_revision,
            applied: Vec::new(),
            error: None,
            duration_ms: 0,
            schema_created: false,
            tenant: None,
            session_opened: false,
            unreachable: false,
            refused: false,
            unrecorded: None,
        }
    }

    fn skipped(tenant: &Tenant, why: &str) -> TenantResult {
        let mut r = TenantResult::new(tenant, ResultStatus::Skipped);
        r.error = Some(why.to_string());
        r
    }
}

/// Counts for a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Tenants selected.
    pub total: usize,
    /// Changed.
    pub ok: usize,
    /// Nothing to do.
    pub up_to_date: usize,
    /// Failed.
    pub failed: usize,
    /// Not attempted.
    pub skipped: usize,
    /// Wall time of the whole run.
    pub duration_ms: u64,
}

/// Every tenant's result and the summary.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run's id in the ledger (`tenantctl events --run ID`).
    pub run_id: String,
    /// One per selected tenant, in selection order.
    pub results: Vec<TenantResult>,
    /// Counts.
    pub summary: Summary,
    /// Whether the run was interrupted before every tenant was started.
    #[serde(skip)]
    pub interrupted: bool,
    /// Why the run stopped starting tenants early, if it did.
    #[serde(skip)]
    pub stopped: Option<String>,
}

impl RunReport {
    /// The exit code: 130 when interrupted; 0 when nothing failed; 3 when tenants
    /// needed a session and not one could be opened (cannot connect: nothing was
    /// touched); 1 when every attempted tenant failed; 4 when some failed and others
    /// finished or were held back.
    pub fn exit(&self) -> Exit {
        let s = &self.summary;
        if self.interrupted {
            Exit::Interrupted
        } else if s.failed == 0 && self.stopped.is_none() {
            Exit::Ok
        } else if s.failed > 0
            && self.results.iter().all(|r| !r.session_opened)
            && self
                .results
                .iter()
                .filter(|r| r.status == ResultStatus::Failed)
                .all(|r| r.unreachable)
        {
            Exit::Setup
        } else if s.total == 1 || s.ok + s.up_to_date + s.skipped == 0 {
            Exit::Failed
        } else {
            Exit::Partial
        }
    }
}

/// Receives progress as tenants start and finish; implemented by the output layer.
pub trait Progress: Sync {
    /// The run is about to start on `total` tenants.
    fn begin(&self, _total: usize) {}
    /// Work on a tenant started.
    fn started(&self, _tenant: &Tenant) {}
    /// Work on a tenant finished.
    fn finished(&self, _result: &TenantResult) {}
    /// A tenant was answered from the batched observation, without a session.
    fn answered(&self, _result: &TenantResult) {}
    /// A tenant's session has been waiting for the tenant's lock for a while (see
    /// [`runner::REPORT_WAIT_AFTER`]); `holder` is the session holding it, when known.
    fn waiting(&self, _tenant: &Tenant, _holder: Option<&LockHolder>) {}
    /// The server sent a notice or warning while working on a tenant.
    fn notice(&self, _tenant: &Tenant, _notice: &db::Notice) {}
    /// The run is over.
    fn end(&self) {}
}

/// A progress sink that reports nothing.
pub struct Silent;
impl Progress for Silent {}

/// How a run treats tenants whose schema does not exist, for `upgrade`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unprovisioned {
    /// Report them as failed (they were named explicitly).
    Fail,
    /// Report them as skipped (they were swept up by a filter such as `--all`).
    Skip,
}

/// The inputs every tenant operation needs.
pub struct Env<'a> {
    /// Where to connect.
    pub target: &'a db::Target,
    /// Effective settings.
    pub settings: &'a Settings,
    /// The migration files (empty for provision-only runs).
    pub set: &'a MigrationSet,
    /// The registry's tables.
    pub tables: &'a Tables,
    /// This run's id in the ledger.
    pub run_id: &'a str,
    /// This machine's name, for the ledger.
    pub client_host: &'a str,
    /// The run's interruption: sessions register with it and stop when it asks.
    pub interrupt: &'a Interrupt,
}

/// Options for a bulk run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Tenants worked on at once.
    pub concurrency: usize,
    /// Start no new tenant once this many have failed (`--fail-fast` is 1).
    pub max_failures: Option<usize>,
    /// Work on this many tenants first; stop if any of them fails.
    pub canary: usize,
    /// What to do with unprovisioned tenants on upgrade.
    pub unprovisioned: Unprovisioned,
}

/// A tenant in a run: answered already, or needing a session.
#[derive(Debug)]
pub enum Planned {
    /// Answered from the batched observation.
    Done(TenantResult),
    /// Needs a session.
    Work(Tenant),
}

/// Decides which tenants an upgrade to `target` must open a session for: those behind,
/// drifted, unreadable, or not `active` in the registry (so a success can clear a stale
/// `failed`). The others are answered from `states` at once; among them, a tenant whose
/// schema existed (status `active`, or `schema_provisioned`) and is gone has failed.
pub fn plan_upgrade(
    tenants: Vec<Tenant>,
    states: &HashMap<String, SchemaState>,
    set: &MigrationSet,
    target: i32,
    unprovisioned: Unprovisioned,
) -> Vec<Planned> {
    tenants
        .into_iter()
        .map(|t| {
            let Some(st) = states.get(&t.schema_name) else {
                return Planned::Work(t);
            };
            if !st.schema_exists {
                let existed = t.status == Status::Active || t.schema_provisioned;
                if existed && unprovisioned == Unprovisioned::Skip {
                    // Swept up by a filter, its schema existed and was dropped outside
                    // tenantctl: drift, not a skip. (A named tenant fails in its session.)
                    let mut r = TenantResult::new(&t, ResultStatus::Failed);
                    r.error = Some(vanished(&t));
                    r.to_revision = None;
                    r.tenant = Some(t);
                    return Planned::Done(r);
                }
                return match unprovisioned {
                    Unprovisioned::Skip => {
                        let mut r = TenantResult::skipped(
                            &t,
                            &UpgradeError::NotProvisioned.message(&t.schema_name, &t.domain),
                        );
                        r.from_revision = None;
                        r.to_revision = None;
                        r.tenant = Some(t);
                        Planned::Done(r)
                    }
                    Unprovisioned::Fail => Planned::Work(t),
                };
            }
            let Ok(history) = &st.history else {
                return Planned::Work(t);
            };
            let cmp = compare(history, set);
            let behind = cmp.pending.iter().any(|v| *v <= target);
            if behind || !cmp.drift.is_empty() || t.status != Status::Active {
                return Planned::Work(t);
            }
            let mut r = TenantResult::new(&t, ResultStatus::UpToDate);
            r.from_revision = cmp.current;
            r.to_revision = cmp.current;
            r.tenant = Some(t);
            Planned::Done(r)
        })
        .collect()
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

/// Runs `action` on every planned tenant. `main` is the caller's registry connection,
/// used to record results for tenants whose own session died.
pub async fn run(
    env: &Env<'_>,
    main: &RegistryConn<'_>,
    planned: Vec<Planned>,
    action: Action,
    opts: &RunOptions,
    progress: &dyn Progress,
) -> RunReport {
    let started = Instant::now();
    // The run's sessions connect through one target that counts their connections.
    let run_target = env.target.for_run(env.interrupt.clone());
    let env = &Env {
        target: &run_target,
        settings: env.settings,
        set: env.set,
        tables: env.tables,
        run_id: env.run_id,
        client_host: env.client_host,
        interrupt: env.interrupt,
    };
    let _graceful = env.interrupt.graceful_guard();
    let total = planned.len();
    progress.begin(total);
    let mut results: Vec<Option<TenantResult>> = Vec::with_capacity(total);
    let mut work: Vec<(usize, Tenant)> = Vec::new();
    for (i, p) in planned.into_iter().enumerate() {
        match p {
            Planned::Done(r) => {
                progress.answered(&r);
                results.push(Some(r));
            }
            Planned::Work(t) => {
                results.push(None);
                work.push((i, t));
            }
        }
    }
    let failures = AtomicUsize::new(0);
    let canary = opts.canary.min(work.len());
    let rest = work.split_off(canary);
    let mut stopped: Option<String> = None;
    for (stage, batch) in [(true, work), (false, rest)] {
        if batch.is_empty() {
            continue;
        }
        if stopped.is_some() {
            for (i, t) in batch {
                let r = TenantResult::skipped(
                    &t,
                    &format!("not started: {}", stopped.as_deref().unwrap_or("")),
                );
                progress.finished(&r);
                results[i] = Some(r);
            }
            continue;
        }
        let done = run_batch(env, main, batch, action, opts, &failures, progress).await;
        for (i, r) in done {
            results[i] = Some(r);
        }
        let failed = failures.load(Ordering::SeqCst);
        if env.interrupt.requested() {
            stopped = Some("the run was interrupted".into());
        } else if stage && canary > 0 && failed > 0 {
            stopped = Some(format!("{failed} of the {canary} canary tenants failed"));
        } else if opts.max_failures.is_some_and(|k| failed >= k) {
            stopped = Some(limit_reason(opts.max_failures));
        }
    }
    progress.end();
    let results: Vec<TenantResult> = results
        .into_iter()
        .map(|r| r.expect("every tenant has a result"))
        .collect();
    let mut summary = Summary {
        total,
        duration_ms: started.elapsed().as_millis() as u64,
        ..Summary::default()
    };
    for r in &results {
        match r.status {
            ResultStatus::Ok => summary.ok += 1,
            ResultStatus::UpToDate => summary.up_to_date += 1,
            ResultStatus::Failed => summary.failed += 1,
            ResultStatus::Skipped => summary.skipped += 1,
        }
    }
    let held_back = results.iter().any(|r| {
        r.status == ResultStatus::Skipped
            && r.error
                .as_deref()
                .is_some_and(|e| e.starts_with("not started"))
    });
    RunReport {
        run_id: env.run_id.to_string(),
        results,
        summary,
        interrupted: env.interrupt.requested(),
        stopped: stopped.filter(|_| held_back),
    }
}

fn limit_reason(max_failures: Option<usize>) -> String {
    match max_failures {
        Some(1) => "an earlier tenant failed and --fail-fast (or --max-failures 1) is set".into(),
        Some(k) => format!("{k} tenants failed, the --max-failures limit"),
        None => String::new(),
    }
}

async fn run_batch(
    env: &Env<'_>,
    main: &RegistryConn<'_>,
    batch: Vec<(usize, Tenant)>,
    action: Action,
    opts: &RunOptions,
    failures: &AtomicUsize,
    progress: &dyn Progress,
) -> Vec<(usize, TenantResult)> {
    stream::iter(batch)
        .map(|(i, tenant)| async move {
            let limit_hit = opts
                .max_failures
                .is_some_and(|k| failures.load(Ordering::SeqCst) >= k);
            if env.interrupt.requested() || limit_hit {
                let why = if env.interrupt.requested() {
                    "the run was interrupted".to_string()
                } else {
                    limit_reason(opts.max_failures)
                };
                let r = TenantResult::skipped(&tenant, &format!("not started: {why}"));
                progress.finished(&r);
                return (i, r);
            }
            progress.started(&tenant);
            let mut r = run_one(env, &tenant, action, opts.unprovisioned, progress).await;
            if !r.session_opened && env.interrupt.requested() {
                // It was still waiting for a connection: not started, nothing touched.
                r.status = ResultStatus::Skipped;
                r.error = Some("not started: the run was interrupted".into());
            }
            // A tenant whose session never opened was not touched: record nothing.
            if r.session_opened && r.tenant.is_none() && r.status != ResultStatus::Skipped {
                r.tenant = record_fallback(env, main, &tenant, &r, action).await;
                // The work was done and is now recorded: connection trouble after it
                // does not make it a failure.
                if let (Some(row), Some(status)) = (&r.tenant, r.unrecorded) {
                    r.status = status;
                    r.error = None;
                    r.to_revision = row.current_revision;
                }
            }
            if r.status == ResultStatus::Failed {
                failures.fetch_add(1, Ordering::SeqCst);
            }
            progress.finished(&r);
            (i, r)
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await
}

/// Runs one action on one tenant in its own locked session and records the outcome
/// (and a ledger entry when something changed or failed) through that session. A long
/// wait for the tenant's lock, and the server's notices and warnings, go to `progress`.
pub async fn run_one(
    env: &Env<'_>,
    tenant: &Tenant,
    action: Action,
    unprovisioned: Unprovisioned,
    progress: &dyn Progress,
) -> TenantResult {
    let started = Instant::now();
    let started_at = OffsetDateTime::now_utc();
    let mut result = TenantResult::new(tenant, ResultStatus::Failed);
    let report = |holder: Option<&LockHolder>| progress.waiting(tenant, holder);
    let wait = LockWait {
        interrupt: env.interrupt,
        report: &report,
    };
    let mut session =
        match Session::open(env.target, env.settings, &tenant.schema_name, &wait).await {
            Ok(s) => s,
            Err(e) => {
                match e {
                    OpenError::Interrupted => {
                        result.status = ResultStatus::Skipped;
                        result.error = Some(NOT_STARTED_INTERRUPTED.into());
                    }
                    OpenError::LockWait(message) => {
                        result.error = Some(message);
                    }
                    OpenError::Failed(e) => {
                        result.unreachable = e.exit == Exit::Setup;
                        result.error = Some(e.to_string());
                    }
                }
                result.duration_ms = started.elapsed().as_millis() as u64;
                return result;
            }
        };
    result.session_opened = true;
    session.on_notice(|notice| progress.notice(tenant, notice));
    let outcome = work(
        &mut session,
        env,
        tenant,
        action,
        unprovisioned,
        &mut result,
    )
    .await;
    for notice in session.notices() {
        progress.notice(tenant, &notice);
    }
    let error = result.error.clone();
    let registry_outcome = match (&outcome, error.as_deref()) {
        // Refused before anything changed: the registry keeps what it said.
        _ if result.refused => Outcome::Unchanged,
        (Ok(()), _) if result.status == ResultStatus::Skipped => Outcome::Unchanged,
        (Ok(()), _) => Outcome::Succeeded,
        (Err(()), Some(e)) => Outcome::Failed(e),
        (Err(()), None) => Outcome::Failed("unknown error"),
    };
    let event = Event {
        run_id: env.run_id,
        action: action.name(),
        from_revision: result.from_revision,
        started_at,
        client_host: env.client_host,
    };
    let log = matches!(result.status, ResultStatus::Ok | ResultStatus::Failed) && !result.refused;
    match session
        .record(
            env.tables,
            tenant.id,
            registry_outcome,
            log.then_some(&event),
        )
        .await
    {
        Ok(row) => {
            result.to_revision = row.current_revision;
            result.tenant = Some(row);
        }
        Err(e) if e.to_string().starts_with(registry::REMOVED) => {
            // Dropped by `tenant drop` while this run waited for its lock.
            result.status = ResultStatus::Skipped;
            result.applied.clear();
            result.error = Some(format!("not changed: {e}"));
        }
        Err(e) => {
            // The session may be gone; the caller records through its own connection.
            if result.error.is_none() {
                result.error = Some(format!(
                    "the tenant was changed but the registry could not be updated: {e}"
                ));
                result.unrecorded = Some(result.status);
                result.status = ResultStatus::Failed;
            }
        }
    }
    result.duration_ms = started.elapsed().as_millis() as u64;
    result
}

async fn work(
    session: &mut Session<'_>,
    env: &Env<'_>,
    tenant: &Tenant,
    action: Action,
    unprovisioned: Unprovisioned,
    r: &mut TenantResult,
) -> Result<(), ()> {
    let fail = |r: &mut TenantResult, msg: String| {
        r.status = ResultStatus::Failed;
        r.error = Some(msg);
        Err(())
    };
    let before = match session.state().await {
        Ok(s) => s,
        Err(e) => return fail(r, e.to_string()),
    };
    r.from_revision = before.current();
    r.to_revision = before.current();
    let mut changed = false;
    if matches!(action, Action::Provision | Action::ProvisionAndUpgrade(_)) {
        match session.provision().await {
            Ok(created) => {
                r.schema_created = created;
                changed |= created;
            }
            Err(e) => return fail(r, e.to_string()),
        }
    }
    if action == Action::Recreate {
        match session.recreate().await {
            Ok(()) => {}
            Err(RecreateError::Refused(e)) => {
                r.refused = true;
                return fail(r, e.to_string());
            }
            Err(RecreateError::Failed(e)) => return fail(r, e.to_string()),
        }
        r.schema_created = true;
        changed = true;
    }
    let step = match action {
        Action::Upgrade(t) | Action::ProvisionAndUpgrade(t) => Some((t, 0)),
        Action::Downgrade(t) => Some((t, 1)),
        Action::Stamp(t) => Some((t, 2)),
        Action::Provision | Action::Recreate => None,
    };
    if let Some((target, kind)) = step {
        let outcome = match kind {
            0 => session.upgrade(env.set, target).await,
            1 => session.downgrade(env.set, target).await,
            _ => session.stamp(env.set, target).await,
        };
        match outcome {
            Ok(applied) => {
                changed |= applied.changed;
                r.applied = applied.versions;
            }
            Err(UpgradeError::NotProvisioned) if unprovisioned == Unprovisioned::Skip => {
                r.status = ResultStatus::Skipped;
                r.error =
                    Some(UpgradeError::NotProvisioned.message(&tenant.schema_name, &tenant.domain));
                return Ok(());
            }
            Err(UpgradeError::Interrupted { done }) => {
                if done.is_empty() && !changed {
                    r.status = ResultStatus::Skipped;
                    r.error = Some(NOT_STARTED_INTERRUPTED.into());
                    return Ok(());
                }
                r.error = Some(match (done.last(), kind) {
                    (Some(v), 1) => format!("stopped early: the run was interrupted after reverting version {v}; a rerun goes on from there"),
                    (Some(v), _) => format!("stopped early: the run was interrupted after version {v}; a rerun goes on from there"),
                    (None, _) => "stopped early: the run was interrupted before the first migration; a rerun goes on from there".into(),
                });
                r.applied = done;
                r.status = ResultStatus::Ok;
                return Ok(());
            }
            Err(e) => {
                if let UpgradeError::During { applied, .. } = &e {
                    r.applied = applied.clone();
                }
                return fail(r, e.message(&tenant.schema_name, &tenant.domain));
            }
        }
    }
    r.status = if changed {
        ResultStatus::Ok
    } else {
        ResultStatus::UpToDate
    };
    Ok(())
}

/// Why a tenant the run never got to work on was skipped after an interruption.
const NOT_STARTED_INTERRUPTED: &str = "not started: the run was interrupted";

/// Records a result through the main connection when the tenant's session could not
/// (it died after the session opened), reconnecting if the server closed that one too.
async fn record_fallback(
    env: &Env<'_>,
    main: &RegistryConn<'_>,
    tenant: &Tenant,
    r: &TenantResult,
    action: Action,
) -> Option<Tenant> {
    let outcome = match (&r.status, r.error.as_deref()) {
        _ if r.unrecorded == Some(ResultStatus::Skipped) => Outcome::Unchanged,
        _ if r.unrecorded.is_some() => Outcome::Succeeded,
        (ResultStatus::Failed, Some(e)) => Outcome::Failed(e),
        (ResultStatus::Failed, None) => Outcome::Failed("unknown error"),
        _ => Outcome::Succeeded,
    };
    let event = Event {
        run_id: env.run_id,
        action: action.name(),
        from_revision: r.from_revision,
        started_at: OffsetDateTime::now_utc() - time::Duration::milliseconds(r.duration_ms as i64),
        client_host: env.client_host,
    };
    // As through the session: the ledger gets changes and failures.
    let log = !matches!(
        r.unrecorded,
        Some(ResultStatus::UpToDate | ResultStatus::Skipped)
    );
    main.run(async |client: &Client| {
        let states = state::observe(
            client,
            std::slice::from_ref(&tenant.schema_name),
            &env.settings.history_table,
        )
        .await?;
        let observed = runner::observed(states.get(&tenant.schema_name).ok_or_else(|| {
            Error::failed(format!("schema {} was not observed", tenant.schema_name))
        })?);
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

/// A new run id: a random (version 4) UUID from the operating system's CSPRNG.
pub fn new_run_id() -> Result<String, Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| Error::failed(format!("the operating system's random source failed: {e}")))?;
    Ok(uuid::Builder::from_random_bytes(b)
        .into_uuid()
        .hyphenated()
        .to_string())
}

/// This machine's host name, for the ledger.
pub fn client_host() -> String {
    Some(
        gethostname::gethostname()
            .to_string_lossy()
            .trim()
            .to_string(),
    )
    .filter(|s| !s.is_empty())
    .or_else(|| std::env::var("HOSTNAME").ok())
    .unwrap_or_else(|| "unknown".into())
}

/// A stable shard for `--shard I/N`: whether `schema` falls in shard `index` (1-based)
/// of `count`. The partition depends only on the schema name.
pub fn in_shard(schema: &str, index: u32, count: u32) -> bool {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(schema.as_bytes());
    let h = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    h % u64::from(count) == u64::from(index - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_uuid_v4() {
        let a = new_run_id().unwrap();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, new_run_id().unwrap());
    }

    fn report(results: Vec<TenantResult>) -> RunReport {
        let mut summary = Summary {
            total: results.len(),
            ..Summary::default()
        };
        for r in &results {
            match r.status {
                ResultStatus::Ok => summary.ok += 1,
                ResultStatus::UpToDate => summary.up_to_date += 1,
                ResultStatus::Failed => summary.failed += 1,
                ResultStatus::Skipped => summary.skipped += 1,
            }
        }
        RunReport {
            run_id: String::new(),
            results,
            summary,
            interrupted: false,
            stopped: None,
        }
    }

    fn result(status: ResultStatus, session_opened: bool) -> TenantResult {
        TenantResult {
            domain: "d".into(),
            schema_name: "tenant_d".into(),
            status,
            from_revision: None,
            to_revision: None,
            applied: Vec::new(),
            error: None,
            duration_ms: 0,
            schema_created: false,
            tenant: None,
            session_opened,
            unreachable: !session_opened && status == ResultStatus::Failed,
            refused: false,
            unrecorded: None,
        }
    }

    #[test]
    fn a_run_no_session_could_reach_is_a_setup_error_else_failed_or_partial() {
        use ResultStatus::*;
        let unreached = || result(Failed, false);
        // Nothing could connect: exit 3, whatever was answered without a session.
        assert_eq!(report(vec![unreached()]).exit(), Exit::Setup);
        assert_eq!(report(vec![unreached(), unreached()]).exit(), Exit::Setup);
        assert_eq!(
            report(vec![
                unreached(),
                result(UpToDate, false),
                result(Skipped, false)
            ])
            .exit(),
            Exit::Setup
        );
        // A session opened somewhere: the usual codes.
        assert_eq!(
            report(vec![unreached(), result(Ok, true)]).exit(),
            Exit::Partial
        );
        assert_eq!(
            report(vec![unreached(), result(Failed, true)]).exit(),
            Exit::Failed
        );
        assert_eq!(report(vec![result(Failed, true)]).exit(), Exit::Failed);
        assert_eq!(report(vec![result(Ok, true)]).exit(), Exit::Ok);
        assert_eq!(report(vec![result(UpToDate, false)]).exit(), Exit::Ok);
        // A failure decided without a connection problem (a lock wait that ran out, a
        // vanished schema) is not a setup error.
        let mut waited = result(Failed, false);
        waited.unreachable = false;
        assert_eq!(report(vec![waited.clone()]).exit(), Exit::Failed);
        assert_eq!(
            report(vec![waited, unreached(), result(UpToDate, false)]).exit(),
            Exit::Partial
        );
    }

    #[test]
    fn shards_partition_every_schema_exactly_once() {
        let names: Vec<String> = (0..1000).map(|i| format!("tenant_{i}")).collect();
        let mut sizes = [0usize; 4];
        for n in &names {
            let hits: Vec<u32> = (1..=4).filter(|i| in_shard(n, *i, 4)).collect();
            assert_eq!(hits.len(), 1, "{n}");
            sizes[(hits[0] - 1) as usize] += 1;
        }
        assert!(sizes.iter().all(|s| *s > 150), "{sizes:?}");
        assert!(in_shard("x", 1, 1));
    }
}
