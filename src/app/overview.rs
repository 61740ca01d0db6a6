//! The operator's view of the fleet, as data for the dashboard: the overview (counts by
//! server, revision and status; failed tenants; recent and live runs; runs per day;
//! backups per type; each server's health with the tenantctl sessions waiting for a
//! lock and on whom), tenants searched and paged, the runs paged, one run with its
//! tenants paged, and one tenant with its history, pending migrations, backups, moves
//! and ledger. Every read is bounded: a page costs the same at 20,000 tenants as at 20.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::Serialize;
use time::OffsetDateTime;

use crate::app::context::Context;
use crate::app::metrics::Backups;
use crate::error::Error;
use crate::pg::db::{self, Client};
use crate::registry::browse::{self, Column, Count, Day, Progress, RunRow, Search};
use crate::registry::inspect::HistoryEntry;
use crate::registry::{EventRow, Registry, Tenant};

/// Rows on one page of tenants.
pub const TENANTS_PER_PAGE: i64 = 50;
/// Rows on one page of runs.
pub const RUNS_PER_PAGE: i64 = 50;
/// A run's tenants on one page.
pub const ENTRIES_PER_PAGE: i64 = 100;
/// The days the pictures of runs cover.
pub const DAYS: i32 = 30;
/// Failed tenants the overview lists (the rest are a search away).
const FAILED_SHOWN: i64 = 20;
/// Runs the overview lists.
const RECENT_RUNS: i64 = 10;
/// How long the overview waits for a server's health: a server that accepts
/// connections and never answers costs each page this, not the connect timeout.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The overview.
#[derive(Debug)]
pub struct Overview {
    /// When it was read.
    pub generated_at: OffsetDateTime,
    /// The migration files' head, when they can be read.
    pub head: Option<i32>,
    /// The fleet's counts by server, revision, status and provisioning.
    pub counts: Vec<Count>,
    /// The configured servers (each shown, with no tenant too).
    pub servers: Vec<String>,
    /// How many tenants failed, and the most recently changed of them.
    pub failed: (u64, Vec<Tenant>),
    /// The last bulk runs.
    pub recent: Vec<RunRow>,
    /// Runs still going.
    pub live: Vec<LiveRun>,
    /// Bulk runs per day, over the last [`DAYS`] days.
    pub days: Vec<Day>,
    /// Backups by tenant type, with each type's policy interval (seconds) when one applies.
    pub backups: Vec<(String, Backups, Option<f64>)>,
    /// Each server's health.
    pub health: Vec<ServerHealth>,
}

impl Overview {
    /// Tenants in the fleet.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.tenants).sum()
    }

    /// Provisioned tenants below head.
    pub fn behind(&self) -> u64 {
        let Some(head) = self.head else { return 0 };
        self.counts
            .iter()
            .filter(|c| c.provisioned && c.revision.unwrap_or(0) < head)
            .map(|c| c.tenants)
            .sum()
    }

    /// Tenants whose schema is not provisioned.
    pub fn unprovisioned(&self) -> u64 {
        self.counts
            .iter()
            .filter(|c| !c.provisioned)
            .map(|c| c.tenants)
            .sum()
    }

    /// Tenants by revision and server.
    pub fn by_revision(&self) -> BTreeMap<Option<i32>, BTreeMap<String, u64>> {
        let mut out: BTreeMap<Option<i32>, BTreeMap<String, u64>> = BTreeMap::new();
        for c in &self.counts {
            *out.entry(c.revision)
                .or_default()
                .entry(c.server.clone())
                .or_default() += c.tenants;
        }
        out
    }

    /// Per server: tenants, behind head, failed; every configured server is listed.
    pub fn by_server(&self) -> BTreeMap<String, (u64, u64, u64)> {
        let mut out: BTreeMap<String, (u64, u64, u64)> = self
            .servers
            .iter()
            .map(|s| (s.clone(), (0, 0, 0)))
            .collect();
        for c in &self.counts {
            let e = out.entry(c.server.clone()).or_default();
            e.0 += c.tenants;
            if self
                .head
                .is_some_and(|h| c.provisioned && c.revision.unwrap_or(0) < h)
            {
                e.1 += c.tenants;
            }
            if c.status == "failed" {
                e.2 += c.tenants;
            }
        }
        out
    }
}

/// A run that has not ended: seen as sessions named for it on a server, or started by
/// the service.
#[derive(Debug, Clone, Serialize)]
pub struct LiveRun {
    /// Its id.
    pub run_id: String,
    /// What its ledger entries so far record (empty before the first).
    pub action: String,
    /// Its ledger entries so far.
    pub progress: Option<Progress>,
    /// Its open sessions, over every server.
    pub sessions: u64,
}

/// One server's health.
#[derive(Debug, Clone, Serialize)]
pub struct ServerHealth {
    /// The server.
    pub server: String,
    /// Why it could not be reached or read, if it could not.
    pub error: Option<String>,
    /// Milliseconds to connect and read it.
    pub millis: u64,
    /// The shared schema there, when one is configured: its revision, pending files and
    /// drift, or why it could not be read.
    pub shared: Option<crate::app::shared::SharedStatus>,
    /// tenantctl sessions waiting for a lock, and on whom.
    pub waits: Vec<LockWait>,
}

/// A session waiting for a lock: tenantctl's own, or one waiting on tenantctl's.
#[derive(Debug, Clone, Serialize)]
pub struct LockWait {
    /// Its backend.
    pub pid: i32,
    /// Its `application_name` (`tenantctl RUN_ID` for a run's sessions).
    pub application: String,
    /// Its database user.
    pub user: String,
    /// The lock it waits for: its mode and what it is on (`AccessExclusiveLock on
    /// tenant_x.members`, `ExclusiveLock on advisory`).
    pub waiting_for: String,
    /// Seconds it has waited.
    pub seconds: f64,
    /// The sessions holding what it waits for.
    pub blockers: Vec<Blocker>,
}

/// A session another waits on.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Blocker {
    /// Its backend.
    pub pid: i32,
    /// Its `application_name`.
    pub application: Option<String>,
    /// Its user.
    pub user: Option<String>,
    /// Its client address.
    pub addr: Option<String>,
    /// `active`, `idle in transaction`, ...
    pub state: Option<String>,
    /// Seconds since it began its transaction.
    pub seconds: Option<f64>,
}

/// Reads the overview through the registry connection `client`; `started` are the runs
/// the caller knows to be going (the service's own).
pub async fn overview(
    cx: &Context,
    client: &Client,
    started: &[String],
) -> Result<Overview, Error> {
    let head = cx.migrations().ok().map(|s| s.head());
    let registry = Registry::open(client, &cx.settings.registry_schema).await?;
    let counts = registry.counts().await?;
    let failed = registry
        .search(
            &Search {
                status: Some("failed".into()),
                ..Default::default()
            },
            FAILED_SHOWN,
            0,
        )
        .await?;
    let (_, recent) = registry.runs(RECENT_RUNS, 0).await?;
    let days = registry.days(DAYS).await?;
    let policies = &cx.settings.backup_policies;
    let backups = crate::app::metrics::backups(client, registry.tables(), policies)
        .await?
        .into_iter()
        .map(|(kind, b)| {
            let every = crate::config::policy_for(policies, &kind).map(|p| p.every.as_secs_f64());
            (kind, b, every)
        })
        .collect();
    let servers = crate::app::metrics::server_names(cx);
    let probes = futures::future::join_all(servers.iter().map(|s| probe(cx, s))).await;
    let mut health = Vec::new();
    let mut sessions: BTreeMap<String, u64> = started.iter().map(|r| (r.clone(), 0)).collect();
    for (h, runs) in probes {
        health.push(h);
        for (run, n) in runs {
            *sessions.entry(run).or_default() += n;
        }
    }
    // A server tenants are registered on that the configuration does not name.
    let mut unknown: Vec<&str> = counts
        .iter()
        .map(|c| c.server.as_str())
        .filter(|s| !servers.iter().any(|n| n == s))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    for s in unknown {
        health.push(ServerHealth {
            server: s.to_string(),
            error: Some("not configured: no [servers] entry names it".into()),
            millis: 0,
            shared: None,
            waits: Vec::new(),
        });
    }
    let live = live_runs(&registry, sessions).await?;
    Ok(Overview {
        generated_at: OffsetDateTime::now_utc(),
        head,
        counts,
        servers,
        failed,
        recent,
        live,
        days,
        backups,
        health,
    })
}

/// The runs of `sessions` (run id: open sessions) that have not recorded their end.
async fn live_runs(
    registry: &Registry<'_>,
    sessions: BTreeMap<String, u64>,
) -> Result<Vec<LiveRun>, Error> {
    let ids: Vec<String> = sessions.keys().cloned().collect();
    let ended: BTreeSet<String> = registry.ended(&ids).await?.into_iter().collect();
    let mut progress: BTreeMap<String, Progress> = BTreeMap::new();
    for p in registry.progress(&ids).await? {
        progress.entry(p.run_id.clone()).or_insert(p);
    }
    Ok(sessions
        .into_iter()
        .filter(|(id, _)| !ended.contains(id))
        .map(|(run_id, sessions)| {
            let progress = progress.remove(&run_id);
            LiveRun {
                action: progress
                    .as_ref()
                    .map(|p| p.action.clone())
                    .unwrap_or_default(),
                run_id,
                progress,
                sessions,
            }
        })
        .collect())
}

/// Connects to `server` and reads its health, and the runs with sessions open there
/// (run id, sessions).
async fn probe(cx: &Context, server: &str) -> (ServerHealth, Vec<(String, u64)>) {
    let started = Instant::now();
    let mut h = ServerHealth {
        server: server.to_string(),
        error: None,
        millis: 0,
        shared: None,
        waits: Vec::new(),
    };
    let mut runs = Vec::new();
    match tokio::time::timeout(PROBE_TIMEOUT, read_server(cx, server, &mut h)).await {
        Ok(Ok(r)) => runs = r,
        Ok(Err(e)) => h.error = Some(e.to_string()),
        Err(_) => h.error = Some(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    }
    h.millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    (h, runs)
}

/// The runs with sessions open on this server's database (`application_name`
/// `... tenantctl RUN_ID`), with how many each has; only `run_id`'s when given.
async fn run_sessions(client: &Client, run_id: Option<&str>) -> Result<Vec<(String, u64)>, Error> {
    let rows = db::read(
        client,
        "reading the server's sessions",
        client.query(
            "SELECT substring(application_name FROM 'tenantctl ([0-9a-f-]{36})$'), count(*)::bigint \
             FROM pg_catalog.pg_stat_activity \
             WHERE application_name ~ 'tenantctl [0-9a-f-]{36}$' AND datname = pg_catalog.current_database() \
               AND ($1::text IS NULL OR application_name LIKE '%tenantctl ' || $1) \
             GROUP BY 1",
            &[&run_id],
        ),
    )
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let id: String = r.try_get(0).ok()?;
            let n: i64 = r.try_get(1).ok()?;
            Some((id, u64::try_from(n).unwrap_or(0)))
        })
        .collect())
}

async fn read_server(
    cx: &Context,
    server: &str,
    h: &mut ServerHealth,
) -> Result<Vec<(String, u64)>, Error> {
    let client = cx.connect_server(server).await?;
    // Sessions on this server's database waiting for a lock that are tenantctl's
    // (named `tenantctl` or `... tenantctl RUN_ID`) or that wait on one of tenantctl's
    // (application traffic queued behind a migration), each with the lock it waits for
    // and the sessions holding it. No statement text: another session's statement may
    // carry a literal (a password) the dashboard's readers must not see.
    let rows = db::read(
        &client,
        "reading the server's sessions",
        client.query(
            "WITH w AS ( \
               SELECT a.pid, coalesce(a.application_name, '') AS app, a.usename::text AS usr, \
                      coalesce(extract(epoch FROM now() - coalesce(a.state_change, a.query_start)), 0)::float8 AS secs, \
                      pg_catalog.pg_blocking_pids(a.pid) AS blockers \
               FROM pg_catalog.pg_stat_activity a \
               WHERE a.wait_event_type = 'Lock' AND a.datname = pg_catalog.current_database() \
                 AND a.pid <> pg_catalog.pg_backend_pid()) \
             SELECT w.pid, w.app, \
                    coalesce((SELECT l.mode || ' on ' || coalesce(l.relation::regclass::text, l.locktype) \
                              FROM pg_catalog.pg_locks l WHERE l.pid = w.pid AND NOT l.granted LIMIT 1), ''), \
                    w.secs, coalesce(w.usr, ''), \
                    (SELECT coalesce(json_agg(json_build_object('pid', b.pid, 'application', b.application_name, \
                              'user', b.usename, 'addr', b.client_addr::text, 'state', b.state, \
                              'seconds', extract(epoch FROM now() - b.xact_start)::float8)), '[]') \
                     FROM pg_catalog.pg_stat_activity b WHERE b.pid = ANY (w.blockers))::text \
             FROM w \
             WHERE w.app ~ '(^| )tenantctl( |$)' \
                OR EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity b \
                           WHERE b.pid = ANY (w.blockers) AND b.application_name ~ '(^| )tenantctl( |$)') \
             ORDER BY 4 DESC LIMIT 50",
            &[],
        ),
    )
    .await?;
    for r in &rows {
        let blockers: Vec<Blocker> = r
            .try_get::<_, String>(5)
            .ok()
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default();
        h.waits.push(LockWait {
            pid: r.try_get(0).unwrap_or_default(),
            application: r.try_get(1).unwrap_or_default(),
            waiting_for: r.try_get(2).unwrap_or_default(),
            seconds: r.try_get(3).unwrap_or_default(),
            user: r.try_get(4).unwrap_or_default(),
            blockers,
        });
    }
    let runs = run_sessions(&client, None).await?;
    if let Ok((shared, set)) = cx.shared() {
        let state = crate::engine::shared::observe(&client, &shared.schema, &cx.settings)
            .await
            .map_err(|e| e.to_string());
        h.shared = Some(crate::app::shared::status_of(server, shared, &set, state));
    }
    Ok(runs)
}

/// What a search of the tenants asks, as the dashboard's form gives it.
#[derive(Debug, Clone, Default)]
pub struct TenantQuery {
    /// The filters.
    pub search: Search,
    /// The page, from 1.
    pub page: i64,
}

/// One page of tenants.
#[derive(Debug, Serialize)]
pub struct TenantsPage {
    /// Tenants the search keeps.
    pub matched: u64,
    /// This page's, by id.
    pub tenants: Vec<Tenant>,
    /// The page, from 1.
    pub page: i64,
    /// Pages in all (at least 1).
    pub pages: i64,
    /// The servers and types to choose from.
    pub servers: Vec<String>,
    /// The tenant types to choose from.
    pub types: Vec<String>,
    /// The head, for "behind".
    pub head: Option<i32>,
}

fn pages(matched: u64, per_page: i64) -> i64 {
    let matched = i64::try_from(matched).unwrap_or(i64::MAX);
    ((matched + per_page - 1) / per_page).max(1)
}

fn offset(page: i64, per_page: i64) -> i64 {
    page.max(1).saturating_sub(1).saturating_mul(per_page)
}

/// A page of the tenants a search keeps.
pub async fn tenants(cx: &Context, client: &Client, q: &TenantQuery) -> Result<TenantsPage, Error> {
    let registry = Registry::open(client, &cx.settings.registry_schema).await?;
    let page = q.page.max(1);
    let (matched, tenants) = registry
        .search(&q.search, TENANTS_PER_PAGE, offset(page, TENANTS_PER_PAGE))
        .await?;
    let mut servers = crate::app::metrics::server_names(cx);
    for s in registry.values(Column::Server, 100).await? {
        if !servers.contains(&s) {
            servers.push(s);
        }
    }
    Ok(TenantsPage {
        matched,
        tenants,
        page,
        pages: pages(matched, TENANTS_PER_PAGE),
        servers,
        types: registry.values(Column::Type, 100).await?,
        head: cx.migrations().ok().map(|s| s.head()),
    })
}

/// One page of the bulk runs.
#[derive(Debug, Serialize)]
pub struct RunsPage {
    /// Runs recorded.
    pub total: u64,
    /// This page's, newest first.
    pub runs: Vec<RunRow>,
    /// The page, from 1.
    pub page: i64,
    /// Pages in all.
    pub pages: i64,
}

/// A page of the bulk runs.
pub async fn runs(cx: &Context, client: &Client, page: i64) -> Result<RunsPage, Error> {
    let registry = Registry::open(client, &cx.settings.registry_schema).await?;
    let page = page.max(1);
    let (total, runs) = registry
        .runs(RUNS_PER_PAGE, offset(page, RUNS_PER_PAGE))
        .await?;
    Ok(RunsPage {
        total,
        runs,
        page,
        pages: pages(total, RUNS_PER_PAGE),
    })
}

/// One run, with a page of its tenants' ledger entries.
#[derive(Debug, Serialize)]
pub struct RunDetail {
    /// Its id.
    pub run_id: String,
    /// Its row, once it has ended.
    pub row: Option<RunRow>,
    /// Its entries so far, by action (for a run going on).
    pub progress: Vec<Progress>,
    /// Its sessions open on the servers, when it has not recorded its end.
    pub sessions: u64,
    /// Entries the page's filter keeps.
    pub matched: u64,
    /// This page's entries, in the order written.
    pub entries: Vec<EventRow>,
    /// Only entries that did not succeed.
    pub failed_only: bool,
    /// The page, from 1.
    pub page: i64,
    /// Pages in all.
    pub pages: i64,
}

/// A run and a page of its entries; not found when it is no run id, or neither its row,
/// nor any entry of it, nor a session of it on a server exists (and the caller does not
/// `know` it is going: the service's own runs).
pub async fn run(
    cx: &Context,
    client: &Client,
    run_id: &str,
    failed_only: bool,
    page: i64,
    know: bool,
) -> Result<RunDetail, Error> {
    let not_found = || Error::not_found(format!("no run {}", crate::ident::shown(run_id)));
    let run_id = browse::run_id(run_id).ok_or_else(not_found)?;
    let registry = Registry::open(client, &cx.settings.registry_schema).await?;
    let row = registry.run(&run_id).await?;
    let page = page.max(1);
    let (matched, entries) = registry
        .run_entries(
            &run_id,
            failed_only,
            ENTRIES_PER_PAGE,
            offset(page, ENTRIES_PER_PAGE),
        )
        .await?;
    let progress = registry.progress(std::slice::from_ref(&run_id)).await?;
    let mut sessions = 0;
    if row.is_none() {
        // Only its sessions, on each server at once (a server that cannot be reached
        // counts none), bounded as the overview's probes are.
        let run_id = &run_id;
        let counts =
            futures::future::join_all(crate::app::metrics::server_names(cx).into_iter().map(
                |s| async move {
                    let read = async {
                        let client = cx.connect_server(&s).await?;
                        run_sessions(&client, Some(run_id)).await
                    };
                    match tokio::time::timeout(PROBE_TIMEOUT, read).await {
                        Ok(Ok(runs)) => runs.into_iter().map(|(_, n)| n).sum(),
                        _ => 0u64,
                    }
                },
            ))
            .await;
        sessions = counts.into_iter().sum();
        if progress.is_empty() && sessions == 0 && !know {
            return Err(not_found());
        }
    }
    Ok(RunDetail {
        run_id,
        row,
        progress,
        sessions,
        matched,
        entries,
        failed_only,
        page,
        pages: pages(matched, ENTRIES_PER_PAGE),
    })
}

/// One tenant, for its page.
#[derive(Debug)]
pub struct TenantDetail {
    /// Its registry row.
    pub tenant: Tenant,
    /// The migrations merged with its history, or why they could not be read.
    pub history: Result<Vec<HistoryEntry>, String>,
    /// Its last backups.
    pub backups: Vec<EventRow>,
    /// Its moves, and an unfinished one.
    pub moves: Vec<EventRow>,
    /// A move that has started and not finished, in a sentence with the commands that
    /// finish and undo it (or why its journal row cannot be read).
    pub journal: Option<String>,
    /// Its last ledger entries.
    pub events: Vec<EventRow>,
}

impl TenantDetail {
    /// The migrations not applied yet.
    pub fn pending(&self) -> Vec<&HistoryEntry> {
        match &self.history {
            Ok(h) => h.iter().filter(|e| e.state == "pending").collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// A tenant (its domain or id) with its history read from its server now.
pub async fn tenant(cx: &Context, client: &Client, reference: &str) -> Result<TenantDetail, Error> {
    let registry = Registry::open(client, &cx.settings.registry_schema).await?;
    let tenant = registry.find(reference).await?;
    let history = async {
        let set = cx.migrations()?;
        let tenants = std::slice::from_ref(&tenant);
        let mut states = crate::app::fleet::observe(
            &cx.servers,
            client,
            tenants,
            &cx.settings.history_table,
            None,
        )
        .await?;
        let state = states.remove(&tenant.schema_name);
        if state
            .as_ref()
            .is_some_and(|st| !st.schema_exists && !st.unreachable)
        {
            return Err(Error::not_found(format!(
                "schema {} does not exist on server {}",
                crate::ident::quote(&tenant.schema_name),
                tenant.server
            )));
        }
        let rows = state
            .map(|st| st.history)
            .unwrap_or_else(|| Ok(Vec::new()))
            .map_err(Error::failed)?;
        Ok::<_, Error>(crate::registry::inspect::history(&set, Some(&rows)))
    }
    .await
    .map_err(|e| e.to_string());
    let events = registry
        .events(&crate::registry::EventFilter {
            tenant_id: Some(tenant.id),
            run_id: None,
            failed_only: false,
            limit: 50,
        })
        .await?;
    Ok(TenantDetail {
        backups: registry.tenant_entries(tenant.id, &["backup"], 10).await?,
        moves: registry.tenant_entries(tenant.id, &["move"], 10).await?,
        // A journal row that cannot be read (edited by hand) is said, not a failed page.
        journal: match registry.move_journal(tenant.id).await {
            Ok(j) => j.map(|j| {
                format!(
                    "This tenant has {}.",
                    crate::data::moving::describe_journal(&j, &tenant.domain)
                )
            }),
            Err(e) => Some(e.to_string()),
        },
        history,
        events,
        tenant,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_round_up_and_start_at_one() {
        assert_eq!(pages(0, 50), 1);
        assert_eq!(pages(50, 50), 1);
        assert_eq!(pages(51, 50), 2);
        assert_eq!(offset(0, 50), 0);
        assert_eq!(offset(1, 50), 0);
        assert_eq!(offset(3, 50), 100);
        assert_eq!(offset(i64::MAX, 50), i64::MAX);
    }
}
