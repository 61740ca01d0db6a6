//! Work on many tenants: runs an action on each selected tenant with bounded concurrency,
//! collects one result per tenant, and summarises the run.
//!
//! Each tenant gets its own session (see [`crate::runner`]); at most `concurrency`
//! sessions are open at once. Without `fail_fast` every tenant is tried and failures are
//! reported together; with it, tenants not yet started are skipped after the first failure.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::stream::{self, StreamExt};
use serde::Serialize;
use tokio_postgres::Client;

use crate::config::Settings;
use crate::db;
use crate::error::{Error, Exit};
use crate::migrations::MigrationSet;
use crate::registry::{self, Outcome, Tenant};
use crate::runner::{self, Session, UpgradeError};
use crate::state;

/// What to do to each tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create the schema if missing.
    Provision,
    /// Apply migrations up to the version.
    Upgrade(i32),
    /// Create the schema if missing, then apply migrations up to the version.
    ProvisionAndUpgrade(i32),
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
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// Wall time for this tenant.
    pub duration_ms: u64,
    /// Whether this run created the schema.
    #[serde(skip)]
    pub schema_created: bool,
    /// The registry row as recorded after the run, when it could be recorded.
    #[serde(skip)]
    pub tenant: Option<Tenant>,
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
    /// One per selected tenant, in selection order.
    pub results: Vec<TenantResult>,
    /// Counts.
    pub summary: Summary,
}

impl RunReport {
    /// The exit code for this run: 0 when nothing failed, 1 when every attempted tenant
    /// failed (or the only one), 4 when some failed and others finished.
    pub fn exit(&self) -> Exit {
        let s = &self.summary;
        if s.failed == 0 {
            Exit::Ok
        } else if s.failed + s.skipped == s.total {
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
    /// Report them as skipped (they were swept up by `--all`).
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
    /// The quoted, qualified registry table.
    pub registry_table: &'a str,
}

/// Options for a bulk run.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Tenants worked on at once.
    pub concurrency: usize,
    /// Stop starting tenants after the first failure.
    pub fail_fast: bool,
    /// What to do with unprovisioned tenants on upgrade.
    pub unprovisioned: Unprovisioned,
}

/// Runs `action` on every tenant. `main` is the caller's registry connection, used to
/// record results for tenants whose own session died.
pub async fn run(
    env: &Env<'_>,
    main: &Client,
    tenants: Vec<Tenant>,
    action: Action,
    opts: RunOptions,
    progress: &dyn Progress,
) -> RunReport {
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    progress.begin(tenants.len());
    let total = tenants.len();
    let mut results: Vec<(usize, TenantResult)> = stream::iter(tenants.into_iter().enumerate())
        .map(|(i, tenant)| {
            let stop = &stop;
            async move {
                if stop.load(Ordering::SeqCst) {
                    let r = skipped(
                        &tenant,
                        "not started: an earlier tenant failed and --fail-fast is set",
                    );
                    progress.finished(&r);
                    return (i, r);
                }
                progress.started(&tenant);
                let mut r = run_one(env, &tenant, action, opts.unprovisioned).await;
                if r.tenant.is_none() && r.status != ResultStatus::Skipped {
                    r.tenant = record_fallback(env, main, &tenant, &r).await;
                }
                if r.status == ResultStatus::Failed && opts.fail_fast {
                    stop.store(true, Ordering::SeqCst);
                }
                progress.finished(&r);
                (i, r)
            }
        })
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    let results: Vec<TenantResult> = results.into_iter().map(|(_, r)| r).collect();
    progress.end();
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
    RunReport { results, summary }
}

fn skipped(tenant: &Tenant, why: &str) -> TenantResult {
    TenantResult {
        domain: tenant.domain.clone(),
        schema_name: tenant.schema_name.clone(),
        status: ResultStatus::Skipped,
        from_revision: tenant.current_revision,
        to_revision: tenant.current_revision,
        applied: Vec::new(),
        error: Some(why.to_string()),
        duration_ms: 0,
        schema_created: false,
        tenant: None,
    }
}

/// Runs one action on one tenant in its own locked session and records the outcome
/// through that session.
pub async fn run_one(
    env: &Env<'_>,
    tenant: &Tenant,
    action: Action,
    unprovisioned: Unprovisioned,
) -> TenantResult {
    let started = Instant::now();
    let mut result = TenantResult {
        domain: tenant.domain.clone(),
        schema_name: tenant.schema_name.clone(),
        status: ResultStatus::Failed,
        from_revision: None,
        to_revision: None,
        applied: Vec::new(),
        error: None,
        duration_ms: 0,
        schema_created: false,
        tenant: None,
    };
    let mut session = match Session::open(env.target, env.settings, &tenant.schema_name).await {
        Ok(s) => s,
        Err(e) => {
            result.error = Some(e.to_string());
            result.duration_ms = started.elapsed().as_millis() as u64;
            return result;
        }
    };
    let outcome = work(
        &mut session,
        env,
        tenant,
        action,
        unprovisioned,
        &mut result,
    )
    .await;
    let error = result.error.clone();
    let registry_outcome = match (&outcome, error.as_deref()) {
        (Ok(()), _) if result.status == ResultStatus::Skipped => Outcome::Unchanged,
        (Ok(()), _) => Outcome::Succeeded,
        (Err(()), Some(e)) => Outcome::Failed(e),
        (Err(()), None) => Outcome::Failed("unknown error"),
    };
    match session
        .record(env.registry_table, tenant.id, registry_outcome)
        .await
    {
        Ok(row) => {
            result.to_revision = row.current_revision;
            result.tenant = Some(row);
        }
        Err(e) => {
            // The session may be gone; the caller records through its own connection.
            if result.error.is_none() {
                result.error = Some(format!(
                    "the tenant was changed but the registry could not be updated: {e}"
                ));
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
    let before = match session.observe().await {
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
    if let Action::Upgrade(target) | Action::ProvisionAndUpgrade(target) = action {
        match session.upgrade(env.set, target).await {
            Ok(applied) => {
                changed |= !applied.versions.is_empty();
                r.to_revision = applied.versions.last().copied().or(r.from_revision);
                r.applied = applied.versions;
            }
            Err(UpgradeError::NotProvisioned) if unprovisioned == Unprovisioned::Skip => {
                r.status = ResultStatus::Skipped;
                r.error =
                    Some(UpgradeError::NotProvisioned.message(&tenant.schema_name, &tenant.domain));
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

/// Records a result through the main connection when the tenant's session could not.
async fn record_fallback(
    env: &Env<'_>,
    main: &Client,
    tenant: &Tenant,
    r: &TenantResult,
) -> Option<Tenant> {
    let states = state::observe(
        main,
        std::slice::from_ref(&tenant.schema_name),
        &env.settings.history_table,
    )
    .await
    .ok()?;
    let observed = runner::observed(states.get(&tenant.schema_name)?);
    let outcome = match (&r.status, r.error.as_deref()) {
        (ResultStatus::Failed, Some(e)) => Outcome::Failed(e),
        (ResultStatus::Failed, None) => Outcome::Failed("unknown error"),
        _ => Outcome::Succeeded,
    };
    registry::record_with(main, env.registry_table, tenant.id, &observed, outcome)
        .await
        .ok()
}

/// Fails with a usage error when a bulk selection is empty in a way the user should hear
/// about (an explicit list that resolved to nothing cannot happen: unknown names fail).
pub fn require_selection(all: bool, tenants: &[String]) -> Result<(), Error> {
    if !all && tenants.is_empty() {
        return Err(Error::usage(
            "name the tenants with --tenant <TENANT> (repeatable) or pass --all",
        ));
    }
    Ok(())
}
