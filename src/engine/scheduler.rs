//! The scheduler: runs one piece of [`Work`] on many tenants with bounded concurrency and
//! the rollout controls every bulk command shares (canary, max failures, interruption),
//! reports what happens as [`RunEvent`]s on a channel, and summarises the run.
//!
//! It knows nothing of sessions, SQL or the registry: [`crate::engine::operation`] supplies the
//! work that opens a tenant's session and records its result. Tenants answered before
//! the run (from one batched observation) come in as [`Planned::Done`]; the others are
//! handed to the work, at most `concurrency` at once. Consumers of the events (a progress
//! bar, log lines, a server's run view) are the caller's.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::engine::runner::LockHolder;
use crate::error::Error;
use crate::pg::db::Notice;
use crate::registry::Summary;
use crate::registry::Tenant;

/// How one tenant came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
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

/// Why a tenant ended as it did, beyond its status (not printed; it decides what is
/// recorded and the run's outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cause {
    /// Nothing beyond the status.
    #[default]
    None,
    /// Its session could not connect to the server: nothing was touched.
    Unreachable,
    /// The wait for its lock ran out (`run.lock_wait`): nothing was touched.
    LockWait,
    /// Refused before anything changed; its registry row keeps what it said.
    Refused,
    /// Not started: the run stopped starting tenants first.
    NotStarted,
    /// Removed from the registry while the run waited for its lock.
    Removed,
    /// The work ended with this status, but recording it through the tenant's session
    /// failed; the result says failed until it is recorded otherwise.
    Unrecorded(ResultStatus),
}

/// One tenant's result, as printed.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TenantResult {
    /// The tenant's registry id (`tenant_id`, as in `status`, `current` and `events`).
    pub tenant_id: i64,
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
    /// The archive a backup wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Whether this run created the schema.
    #[serde(skip)]
    pub schema_created: bool,
    /// The registry row as recorded after the run, when it could be recorded (boxed: a
    /// fleet's results hold none once its cache is refreshed, and a row is large).
    #[serde(skip)]
    pub tenant: Option<Box<Tenant>>,
    /// Whether a session on the tenant was opened (connected, lock taken). Without one
    /// the tenant was not touched and nothing is recorded about it.
    #[serde(skip)]
    pub session_opened: bool,
    /// Why it ended as it did, beyond its status.
    #[serde(skip)]
    pub cause: Cause,
}

impl TenantResult {
    /// A result for `tenant` at its cached revision.
    pub fn new(tenant: &Tenant, status: ResultStatus) -> TenantResult {
        TenantResult {
            tenant_id: tenant.id,
            domain: tenant.domain.clone(),
            schema_name: tenant.schema_name.clone(),
            status,
            from_revision: tenant.current_revision,
            to_revision: tenant.current_revision,
            applied: Vec::new(),
            error: None,
            duration_ms: 0,
            file: None,
            schema_created: false,
            tenant: None,
            session_opened: false,
            cause: Cause::None,
        }
    }

    /// A tenant the run did not start, and why.
    pub fn not_started(tenant: &Tenant, why: &str) -> TenantResult {
        let mut r = TenantResult::new(tenant, ResultStatus::Skipped);
        r.error = Some(format!("not started: {why}"));
        r.cause = Cause::NotStarted;
        r
    }

    /// The result without its registry row, as events carry it.
    fn line(&self) -> TenantResult {
        TenantResult {
            tenant: None,
            ..self.clone()
        }
    }
}

/// How a run ended as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Nothing failed and nothing was held back.
    Complete,
    /// Interrupted before every tenant was started.
    Interrupted,
    /// Tenants needed a session and not one could connect: nothing was touched.
    Unreachable,
    /// Every attempted tenant failed (or the only tenant did).
    Failed,
    /// Some failed or were held back and others finished.
    Partial,
}

/// What one change did to one server's shared schema.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SharedResult {
    /// The server.
    pub server: String,
    /// The shared schema.
    pub schema: String,
    /// Its revision before (`null`: nothing applied).
    pub from: Option<i32>,
    /// Its revision after.
    pub to: Option<i32>,
    /// `ok`, `up_to_date`, `failed` or `skipped`.
    pub status: ResultStatus,
    /// Versions applied (up), reverted (down) or recorded (stamp), in order.
    pub applied: Vec<i32>,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// Wall time.
    pub duration_ms: u64,
}

impl SharedResult {
    /// A result for `server` that has not run yet.
    pub fn new(server: &str, shared: &crate::config::Shared) -> SharedResult {
        SharedResult {
            server: server.to_string(),
            schema: shared.schema.clone(),
            from: None,
            to: None,
            status: ResultStatus::Failed,
            applied: Vec::new(),
            error: None,
            duration_ms: 0,
        }
    }

    /// This result as a failure for `error`.
    pub fn failed(mut self, error: impl ToString) -> SharedResult {
        self.status = ResultStatus::Failed;
        self.error = Some(error.to_string());
        self
    }
}

/// Every tenant's result and the summary.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RunReport {
    /// The run's id in the ledger (`tenantctl events --run ID`).
    pub run_id: String,
    /// One per selected tenant, in selection order.
    pub results: Vec<TenantResult>,
    /// Counts.
    pub summary: Summary,
    /// An upgrade's changes to the shared schema of each server it touched, made before
    /// that server's tenants (none when there is no shared schema, and for other runs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<SharedResult>,
    /// Whether the run was interrupted before every tenant was started.
    #[serde(skip)]
    pub interrupted: bool,
    /// Why the run stopped starting tenants early, if it did.
    #[serde(skip)]
    pub stopped: Option<String>,
}

impl RunReport {
    /// How the run ended.
    pub fn outcome(&self) -> RunOutcome {
        let s = &self.summary;
        let failed = || {
            self.results
                .iter()
                .filter(|r| r.status == ResultStatus::Failed)
        };
        let shared_failed = self.shared.iter().any(|r| r.status == ResultStatus::Failed);
        if self.interrupted {
            RunOutcome::Interrupted
        } else if s.failed == 0 && self.stopped.is_none() && !shared_failed {
            RunOutcome::Complete
        } else if s.failed == 0 && self.stopped.is_none() {
            // Only a shared schema failed: the tenants that did not need it went on.
            if s.ok + s.up_to_date == 0 {
                RunOutcome::Failed
            } else {
                RunOutcome::Partial
            }
        } else if s.failed > 0
            && self.results.iter().all(|r| !r.session_opened)
            && failed().all(|r| r.cause == Cause::Unreachable)
        {
            RunOutcome::Unreachable
        } else if s.total == 1
            || s.ok + s.up_to_date + s.skipped == 0
            // Skipped tenants (refused when swept up by a filter) do not change the exit
            // code: when every other tenant failed, the run failed. Tenants held back by
            // a stop (`--canary`, `--max-failures`) make it partial.
            || (s.ok + s.up_to_date == 0 && self.stopped.is_none())
        {
            RunOutcome::Failed
        } else {
            RunOutcome::Partial
        }
    }
}

/// What happens during a run, in order per tenant.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// The run starts on `total` tenants.
    Began {
        /// Tenants selected.
        total: usize,
    },
    /// A tenant was answered without a session (before the run).
    Answered {
        /// Its domain.
        domain: String,
        /// How it came out.
        status: ResultStatus,
    },
    /// Work on a tenant started.
    Started {
        /// Its domain.
        domain: String,
    },
    /// A tenant's session has waited a while for the tenant's lock.
    Waiting {
        /// Its domain.
        domain: String,
        /// Its schema.
        schema_name: String,
        /// Who holds the lock, when that could be found out.
        holder: Option<LockHolder>,
    },
    /// The server sent a notice or warning while working on a tenant.
    Notice {
        /// Its domain.
        domain: String,
        /// The notice.
        notice: Notice,
    },
    /// A long step on one tenant moved on (an online move's copy and lag).
    Progress {
        /// Its domain.
        domain: String,
        /// What it is doing now.
        message: String,
    },
    /// A tenant is finished (or was not started).
    Finished(Box<TenantResult>),
    /// A server's shared schema is done: the first step of an upgrade, or the whole of
    /// a `--shared` change.
    Shared(Box<SharedResult>),
    /// The run is over.
    Ended,
}

/// Where a run's events go: a channel, or nowhere.
#[derive(Debug, Clone, Default)]
pub struct Events(Option<UnboundedSender<RunEvent>>);

impl Events {
    /// Events sent on `sender`; the receiver's end decides what to do with them.
    pub fn to(sender: UnboundedSender<RunEvent>) -> Events {
        Events(Some(sender))
    }

    /// Events dropped.
    pub fn none() -> Events {
        Events(None)
    }

    /// Sends an event; a receiver that has gone away is not the run's problem.
    pub fn send(&self, event: RunEvent) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(event);
        }
    }
}

/// Options for a bulk run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Tenants worked on at once, in each lane without a limit of its own.
    pub concurrency: usize,
    /// Tenants worked on at once, by lane (see [`Work::lane`]): each server's own limit.
    pub lanes: std::collections::BTreeMap<String, usize>,
    /// Start no new tenant once this many have failed (`--fail-fast` is 1).
    pub max_failures: Option<usize>,
    /// Work on this many tenants first; stop if any of them fails.
    pub canary: usize,
}

/// A tenant in a run: answered already, or needing work.
#[derive(Debug)]
pub enum Planned {
    /// Answered from the batched observation.
    Done(TenantResult),
    /// Needs work.
    Work(Tenant),
}

/// The work a run does on each tenant that needs it.
pub trait Work: Sync {
    /// Works on one tenant and says how it came out. The run's stop token is cancelled
    /// when the run is asked to stop: work in flight should stop at its next safe point.
    fn run(&self, tenant: &Tenant) -> impl Future<Output = TenantResult>;

    /// The lane a tenant's work runs in: lanes run side by side, each within its own
    /// limit ([`RunOptions::lanes`]). One lane per server.
    fn lane<'t>(&self, tenant: &'t Tenant) -> &'t str {
        &tenant.server
    }

    /// Why no further tenant should be started, once the work itself knows it (the
    /// registry can no longer record what is done, say); `None` while all is well.
    fn halted(&self) -> Option<String> {
        None
    }
}

/// Runs `work` on every planned tenant that needs it, at most `opts.concurrency` at once:
/// first the canary tenants (if any fails, no other starts), then the rest, starting none
/// once `opts.max_failures` have failed or `stop` is cancelled.
pub async fn schedule(
    work: &impl Work,
    run_id: &str,
    planned: Vec<Planned>,
    opts: &RunOptions,
    stop: &CancellationToken,
    events: &Events,
) -> RunReport {
    let started = Instant::now();
    let total = planned.len();
    events.send(RunEvent::Began { total });
    let mut results: Vec<Option<TenantResult>> = Vec::with_capacity(total);
    let mut todo: Vec<(usize, Tenant)> = Vec::new();
    for (i, p) in planned.into_iter().enumerate() {
        match p {
            Planned::Done(r) => {
                events.send(RunEvent::Answered {
                    domain: r.domain.clone(),
                    status: r.status,
                });
                results.push(Some(r));
            }
            Planned::Work(t) => {
                results.push(None);
                todo.push((i, t));
            }
        }
    }
    let failures = AtomicUsize::new(0);
    let canary = opts.canary.min(todo.len());
    let rest = todo.split_off(canary);
    let mut stopped: Option<String> = None;
    for (stage, batch_tenants) in [(true, todo), (false, rest)] {
        if let Some(why) = &stopped {
            for (i, t) in batch_tenants {
                let r = TenantResult::not_started(&t, why);
                events.send(RunEvent::Finished(Box::new(r.line())));
                results[i] = Some(r);
            }
            continue;
        }
        let batch = Batch {
            work,
            opts,
            stop,
            events,
            failures: &failures,
        };
        for (i, r) in batch.run(batch_tenants).await {
            results[i] = Some(r);
        }
        stopped = stop_reason(stage, canary, opts, failures.load(Ordering::SeqCst), stop)
            .or_else(|| work.halted());
    }
    events.send(RunEvent::Ended);
    report(run_id, results, started, stop.is_cancelled(), stopped)
}

/// One stage of a run (the canary tenants, or the rest).
struct Batch<'a, W> {
    work: &'a W,
    opts: &'a RunOptions,
    stop: &'a CancellationToken,
    events: &'a Events,
    failures: &'a AtomicUsize,
}

impl<W: Work> Batch<'_, W> {
    /// Works on the tenants, each lane (server) side by side and at most its own limit
    /// at once within it; a tenant whose turn comes after the run was stopped or hit its
    /// failure limit is not started.
    async fn run(&self, tenants: Vec<(usize, Tenant)>) -> Vec<(usize, TenantResult)> {
        let mut lanes: Vec<(String, Vec<(usize, Tenant)>)> = Vec::new();
        for (i, t) in tenants {
            let lane = self.work.lane(&t).to_string();
            match lanes.iter_mut().find(|(l, _)| *l == lane) {
                Some((_, v)) => v.push((i, t)),
                None => lanes.push((lane, vec![(i, t)])),
            }
        }
        let runs = lanes.into_iter().map(|(lane, tenants)| {
            let limit = self
                .opts
                .lanes
                .get(&lane)
                .copied()
                .unwrap_or(self.opts.concurrency);
            stream::iter(tenants)
                .map(|(i, tenant)| self.one(i, tenant))
                .buffer_unordered(limit.max(1))
                .collect::<Vec<_>>()
        });
        futures::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// One tenant's turn.
    async fn one(&self, i: usize, tenant: Tenant) -> (usize, TenantResult) {
        let failed = self.failures.load(Ordering::SeqCst);
        let limit_hit = self.opts.max_failures.is_some_and(|k| failed >= k);
        let halted = self.work.halted();
        if self.stop.is_cancelled() || limit_hit || halted.is_some() {
            let why = if self.stop.is_cancelled() {
                INTERRUPTED.to_string()
            } else if let Some(why) = halted {
                why
            } else {
                limit_reason(self.opts.max_failures)
            };
            let r = TenantResult::not_started(&tenant, &why);
            self.events.send(RunEvent::Finished(Box::new(r.line())));
            return (i, r);
        }
        self.events.send(RunEvent::Started {
            domain: tenant.domain.clone(),
        });
        let r = self.work.run(&tenant).await;
        if r.status == ResultStatus::Failed {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
        self.events.send(RunEvent::Finished(Box::new(r.line())));
        (i, r)
    }
}

/// Why a run interrupted before a tenant's turn did not start it.
pub const INTERRUPTED: &str = "the run was interrupted";

/// Why the run starts no more tenants after a stage, if it does not.
fn stop_reason(
    canary_stage: bool,
    canary: usize,
    opts: &RunOptions,
    failed: usize,
    stop: &CancellationToken,
) -> Option<String> {
    if stop.is_cancelled() {
        Some(INTERRUPTED.into())
    } else if canary_stage && canary > 0 && failed > 0 {
        Some(format!("{failed} of the {canary} canary tenants failed"))
    } else if opts.max_failures.is_some_and(|k| failed >= k) {
        Some(limit_reason(opts.max_failures))
    } else {
        None
    }
}

fn limit_reason(max_failures: Option<usize>) -> String {
    match max_failures {
        Some(1) => "an earlier tenant failed and --fail-fast (or --max-failures 1) is set".into(),
        Some(k) => format!("{k} tenants failed, the --max-failures limit"),
        None => String::new(),
    }
}

/// The run's report from every tenant's result.
fn report(
    run_id: &str,
    results: Vec<Option<TenantResult>>,
    started: Instant,
    interrupted: bool,
    stopped: Option<String>,
) -> RunReport {
    let results: Vec<TenantResult> = results.into_iter().flatten().collect();
    let mut summary = Summary {
        total: results.len(),
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
    let held_back = results.iter().any(|r| r.cause == Cause::NotStarted);
    RunReport {
        run_id: run_id.to_string(),
        results,
        summary,
        shared: Vec::new(),
        interrupted,
        stopped: stopped.filter(|_| held_back),
    }
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

/// The ledger identity of an action that is a run of its own (one tenant, outside a bulk
/// run): a new run id and this machine's name, from which its entries are made.
pub struct OwnRun {
    /// The run's id.
    pub run_id: String,
    /// This machine's host name.
    pub host: String,
}

impl OwnRun {
    /// A new run.
    pub fn new() -> Result<OwnRun, Error> {
        Ok(OwnRun {
            run_id: new_run_id()?,
            host: client_host(),
        })
    }

    /// The ledger entry of `action`, begun at `started_at` on a tenant at `from_revision`.
    pub fn event<'a>(
        &'a self,
        action: &'a str,
        from_revision: Option<i32>,
        started_at: time::OffsetDateTime,
    ) -> crate::registry::Event<'a> {
        crate::registry::Event {
            run_id: &self.run_id,
            action,
            from_revision,
            started_at,
            client_host: &self.host,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The rollout logic with fake work: no database, so every rule is checked exactly.

    use std::collections::HashSet;
    use std::sync::Mutex;

    use super::*;
    use crate::registry::Status;

    fn tenant(i: usize) -> Tenant {
        let now = Some(crate::timestamp::Timestamp::At(
            time::OffsetDateTime::UNIX_EPOCH,
        ));
        Tenant {
            id: i as i64,
            tenant_id: i as i64,
            tenant_name: format!("T{i}"),
            domain: format!("t{i}"),
            email: None,
            tenant_type: "standard".into(),
            schema_name: format!("tenant_t{i}"),
            schema_provisioned: true,
            migrations_applied: true,
            current_revision: Some(1),
            status: Status::Active,
            last_error: None,
            api_key_prefix: String::new(),
            created_at: now,
            updated_at: now,
            server: "default".into(),
        }
    }

    /// Fails the tenants named in `fail`, cancels `stop` when it reaches `cancel_at`,
    /// and counts how many tenants are in flight at once.
    #[derive(Default)]
    struct Fake {
        fail: HashSet<String>,
        cancel_at: Option<(String, CancellationToken)>,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
        ran: Mutex<Vec<String>>,
    }

    impl Work for Fake {
        async fn run(&self, t: &Tenant) -> TenantResult {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            self.ran.lock().unwrap().push(t.domain.clone());
            if let Some((at, stop)) = &self.cancel_at {
                if at == &t.domain {
                    stop.cancel();
                }
            }
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let mut r = TenantResult::new(t, ResultStatus::Ok);
            r.session_opened = true;
            if self.fail.contains(&t.domain) {
                r.status = ResultStatus::Failed;
                r.error = Some("boom".into());
            }
            r
        }
    }

    fn work(n: usize) -> Vec<Planned> {
        (0..n).map(|i| Planned::Work(tenant(i))).collect()
    }

    fn opts(concurrency: usize, max_failures: Option<usize>, canary: usize) -> RunOptions {
        RunOptions {
            concurrency,
            lanes: Default::default(),
            max_failures,
            canary,
        }
    }

    async fn go(fake: &Fake, planned: Vec<Planned>, o: &RunOptions) -> (RunReport, Vec<RunEvent>) {
        let stop = fake
            .cancel_at
            .as_ref()
            .map_or_else(CancellationToken::new, |(_, s)| s.clone());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let report = schedule(fake, "run", planned, o, &stop, &Events::to(tx)).await;
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        (report, events)
    }

    fn statuses(r: &RunReport) -> Vec<ResultStatus> {
        r.results.iter().map(|r| r.status).collect()
    }

    #[tokio::test]
    async fn every_tenant_runs_in_selection_order_within_the_concurrency() {
        let fake = Fake::default();
        let mut planned = work(12);
        planned.insert(
            3,
            Planned::Done(TenantResult::new(&tenant(99), ResultStatus::UpToDate)),
        );
        let (report, events) = go(&fake, planned, &opts(3, None, 0)).await;
        assert_eq!(report.results.len(), 13);
        assert_eq!(report.results[3].domain, "t99");
        assert_eq!(report.results[4].domain, "t3");
        assert_eq!(report.summary.ok, 12);
        assert_eq!(report.summary.up_to_date, 1);
        assert_eq!(report.outcome(), RunOutcome::Complete);
        let most = fake.most_in_flight.load(Ordering::SeqCst);
        assert!((1..=3).contains(&most), "{most} in flight at once");
        assert!(matches!(
            events.first(),
            Some(RunEvent::Began { total: 13 })
        ));
        assert!(matches!(events.last(), Some(RunEvent::Ended)));
        let count = |f: fn(&RunEvent) -> bool| events.iter().filter(|e| f(e)).count();
        assert_eq!(count(|e| matches!(e, RunEvent::Answered { .. })), 1);
        assert_eq!(count(|e| matches!(e, RunEvent::Started { .. })), 12);
        assert_eq!(count(|e| matches!(e, RunEvent::Finished(_))), 12);
    }

    #[tokio::test]
    async fn a_failed_canary_starts_no_other_tenant() {
        let fake = Fake {
            fail: HashSet::from(["t1".to_string()]),
            ..Fake::default()
        };
        let (report, _) = go(&fake, work(6), &opts(4, None, 2)).await;
        assert_eq!(fake.ran.lock().unwrap().len(), 2, "only the canaries ran");
        use ResultStatus::*;
        assert_eq!(
            statuses(&report),
            [Ok, Failed, Skipped, Skipped, Skipped, Skipped]
        );
        assert!(report.results[2..]
            .iter()
            .all(|r| r.cause == Cause::NotStarted));
        assert_eq!(
            report.stopped.as_deref(),
            Some("1 of the 2 canary tenants failed")
        );
        assert_eq!(report.outcome(), RunOutcome::Partial);
    }

    #[tokio::test]
    async fn passing_canaries_let_the_rest_run() {
        let fake = Fake::default();
        let (report, _) = go(&fake, work(5), &opts(2, None, 2)).await;
        assert_eq!(report.summary.ok, 5);
        assert_eq!(report.stopped, None);
    }

    #[tokio::test]
    async fn no_tenant_starts_once_max_failures_have_failed() {
        let fake = Fake {
            fail: (0..10).map(|i| format!("t{i}")).collect(),
            ..Fake::default()
        };
        // One at a time, so the count is exact: two fail, the rest are not started.
        let (report, _) = go(&fake, work(10), &opts(1, Some(2), 0)).await;
        assert_eq!(fake.ran.lock().unwrap().as_slice(), ["t0", "t1"]);
        assert_eq!(report.summary.failed, 2);
        assert_eq!(report.summary.skipped, 8);
        assert_eq!(
            report.stopped.as_deref(),
            Some("2 tenants failed, the --max-failures limit")
        );
        assert_eq!(report.outcome(), RunOutcome::Partial);
    }

    #[tokio::test]
    async fn an_interrupted_run_starts_no_new_tenant_and_says_so() {
        let fake = Fake {
            cancel_at: Some(("t2".into(), CancellationToken::new())),
            ..Fake::default()
        };
        let (report, _) = go(&fake, work(8), &opts(1, None, 0)).await;
        assert_eq!(fake.ran.lock().unwrap().as_slice(), ["t0", "t1", "t2"]);
        assert_eq!(report.summary.ok, 3);
        assert!(report.results[3..]
            .iter()
            .all(|r| r.error.as_deref() == Some("not started: the run was interrupted")));
        assert_eq!(report.outcome(), RunOutcome::Interrupted);
    }

    #[test]
    fn a_run_no_session_could_reach_is_unreachable_else_failed_or_partial() {
        let result = |status: ResultStatus, opened: bool| {
            let mut r = TenantResult::new(&tenant(0), status);
            r.session_opened = opened;
            if !opened && status == ResultStatus::Failed {
                r.cause = Cause::Unreachable;
            }
            r
        };
        let outcome = |results: Vec<TenantResult>| {
            report(
                "r",
                results.into_iter().map(Some).collect(),
                Instant::now(),
                false,
                None,
            )
            .outcome()
        };
        use ResultStatus::*;
        let unreached = || result(Failed, false);
        assert_eq!(outcome(vec![unreached()]), RunOutcome::Unreachable);
        assert_eq!(
            outcome(vec![
                unreached(),
                result(UpToDate, false),
                result(Skipped, false)
            ]),
            RunOutcome::Unreachable
        );
        assert_eq!(
            outcome(vec![unreached(), result(Ok, true)]),
            RunOutcome::Partial
        );
        assert_eq!(
            outcome(vec![unreached(), result(Failed, true)]),
            RunOutcome::Failed
        );
        assert_eq!(outcome(vec![result(Ok, true)]), RunOutcome::Complete);
        // Tenants skipped beside tenants that all failed: the run failed.
        assert_eq!(
            outcome(vec![
                result(Failed, true),
                result(Failed, true),
                result(Skipped, false)
            ]),
            RunOutcome::Failed
        );
        assert_eq!(
            outcome(vec![
                result(Failed, true),
                result(Skipped, false),
                result(UpToDate, false)
            ]),
            RunOutcome::Partial
        );
        // A failure decided without a connection problem (a lock wait that ran out) is
        // not an unreachable server.
        let mut waited = result(Failed, false);
        waited.cause = Cause::LockWait;
        assert_eq!(outcome(vec![waited.clone()]), RunOutcome::Failed);
        assert_eq!(
            outcome(vec![waited, unreached(), result(UpToDate, false)]),
            RunOutcome::Partial
        );
    }

    #[test]
    fn run_ids_are_uuid_v4() {
        let a = new_run_id().unwrap();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, new_run_id().unwrap());
    }
}
