//! Fleet workflows the commands share: selecting tenants, observing their schemas in a
//! few round trips, refreshing the registry's cached columns, and running an operation
//! over the selected tenants as one run with an id in the ledger.

use std::collections::HashMap;

use crate::config::Settings;
use crate::engine::operation::{triage_one, Env, OnTenant, Operation, Unprovisioned};
use crate::engine::pool::Pools;
use crate::engine::scheduler::{self, Events, Planned, RunOptions, RunReport};
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::pg::db::{self, Client};
use crate::pg::interrupt::Interrupt;
use crate::registry::conn::RegistryConn;
use crate::registry::inspect::{self, TenantStatus};
use crate::registry::servers::Servers;
use crate::registry::state::{self, SchemaState};
use crate::registry::versions;
use crate::registry::{Observed, Registry, Status, Tenant};

/// Which tenants a bulk command works on. Filters combine; `exclude` and `shard` then
/// narrow any selection.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Tenants by domain, id or schema name.
    pub tenants: Vec<String>,
    /// Every registered tenant.
    pub all: bool,
    /// Only tenants of this type.
    pub tenant_type: Option<String>,
    /// Only tenants with this registry status.
    pub status: Option<Status>,
    /// Tenants left out.
    pub exclude: Vec<String>,
    /// Only shard I of N (1-based), a stable partition by schema name.
    pub shard: Option<(u32, u32)>,
    /// Only tenants on this server.
    pub server: Option<String>,
}

impl Selection {
    /// Whether anything selects tenants (as opposed to only narrowing).
    pub fn selects(&self) -> bool {
        self.all
            || !self.tenants.is_empty()
            || self.tenant_type.is_some()
            || self.status.is_some()
            || self.server.is_some()
    }

    /// How a bulk run treats tenants without a schema: named ones fail, ones swept up by
    /// a filter (`--all`, `--type`, `--status`) are skipped.
    pub fn unprovisioned(&self) -> Unprovisioned {
        if self.tenants.is_empty() {
            Unprovisioned::Skip
        } else {
            Unprovisioned::Fail
        }
    }
}

/// The tenants a selection names, in the order named (by id for filters), after
/// `exclude` and `shard`. An unknown name, included or excluded, is an error.
pub async fn select(registry: &Registry<'_>, selection: &Selection) -> Result<Vec<Tenant>, Error> {
    if !selection.selects() {
        return Err(Error::usage(
            "name the tenants with --tenant <TENANT> (repeatable), or select them with --all, --type, --status or --server",
        ));
    }
    if let Some(t) = &selection.tenant_type {
        crate::ident::validate_tenant_type(t)?;
    }
    let mut tenants = if selection.tenants.is_empty() {
        registry
            .list(selection.tenant_type.as_deref(), selection.status)
            .await?
    } else {
        let named = registry.find_many(&selection.tenants).await?;
        // `--server` with `--tenant`: a named tenant elsewhere is a mistake to say, not
        // one to drop silently.
        if let Some(server) = &selection.server {
            let elsewhere: Vec<String> = named
                .iter()
                .filter(|t| &t.server != server)
                .map(|t| {
                    format!(
                        "tenant {} is on server {}",
                        t.domain,
                        crate::ident::shown(&t.server)
                    )
                })
                .collect();
            if !elsewhere.is_empty() {
                return Err(Error::usage(format!(
                    "{}, not on server {} that --server names; drop --server, or name that server; nothing was done",
                    crate::error::listed(&elsewhere, 10),
                    crate::ident::shown(server)
                )));
            }
        }
        named
            .into_iter()
            .filter(|t| {
                selection
                    .tenant_type
                    .as_ref()
                    .is_none_or(|ty| &t.tenant_type == ty)
            })
            .filter(|t| selection.status.is_none_or(|st| t.status == st))
            .collect()
    };
    if !selection.exclude.is_empty() {
        let excluded: Vec<i64> = registry
            .find_many(&selection.exclude)
            .await?
            .iter()
            .map(|t| t.id)
            .collect();
        tenants.retain(|t| !excluded.contains(&t.id));
    }
    if let Some((i, n)) = selection.shard {
        tenants.retain(|t| in_shard(&t.schema_name, i, n));
    }
    if let Some(server) = &selection.server {
        tenants.retain(|t| &t.server == server);
    }
    Ok(tenants)
}

/// A stable shard for `--shard I/N`: whether `schema` falls in shard `index` (1-based)
/// of `count`. The partition depends only on the schema name.
pub fn in_shard(schema: &str, index: u32, count: u32) -> bool {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(schema.as_bytes());
    let h = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    h % u64::from(count) == u64::from(index - 1)
}

/// A fleet read through each server's version index (see [`versions`]): the schemas it
/// vouches for are answered from it, one query per server, and only the others are
/// read in full. Their histories have no `applied_on`: a read that shows it reads in
/// full.
#[derive(Debug, Clone, Copy)]
pub struct Indexing<'a> {
    /// The registry schema, where the index lives on the registry's server.
    pub registry_schema: &'a str,
    /// The files the index's digests are compared with.
    pub set: &'a MigrationSet,
}

/// Observes many tenants' schemas (keyed by schema name), each on its server. A server
/// that cannot be reached is an error naming it.
pub async fn observe(
    servers: &Servers,
    client: &Client,
    tenants: &[Tenant],
    history_table: &str,
    index: Option<Indexing<'_>>,
) -> Result<HashMap<String, SchemaState>, Error> {
    let (states, unreachable) =
        observe_partial(servers, client, tenants, history_table, index).await?;
    match unreachable.into_iter().next() {
        Some((_, e)) => Err(e),
        None => Ok(states),
    }
}

/// Like [`observe`], with the servers that could not be reached (and why) beside the
/// states of the tenants of the others.
pub async fn observe_partial(
    servers: &Servers,
    client: &Client,
    tenants: &[Tenant],
    history_table: &str,
    index: Option<Indexing<'_>>,
) -> Result<(HashMap<String, SchemaState>, Vec<(String, Error)>), Error> {
    let mut out = HashMap::with_capacity(tenants.len());
    let unreachable = observe_each(
        servers,
        client,
        tenants,
        history_table,
        index,
        |name, state| {
            out.insert(name, state);
        },
    )
    .await?;
    Ok((out, unreachable))
}

/// Like [`observe`], handing each schema's state to `sink` as it is read (see
/// [`state::observe_each`]), so a fleet read holds only the histories in flight.
/// Every server's tenants are read at once, each server's on up to four of its
/// connections (`client` for the registry's server). Returns the servers that could not
/// be reached, with why; their tenants are not handed to `sink`.
pub async fn observe_each(
    servers: &Servers,
    client: &Client,
    tenants: &[Tenant],
    history_table: &str,
    index: Option<Indexing<'_>>,
    sink: impl FnMut(String, SchemaState) + Send,
) -> Result<Vec<(String, Error)>, Error> {
    observe_grouped(
        servers,
        client,
        by_server(tenants),
        history_table,
        index,
        sink,
    )
    .await
}

/// Tenants' schema names grouped by server, in order of first appearance.
fn by_server(tenants: &[Tenant]) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for t in tenants {
        match groups.iter_mut().find(|(s, _)| *s == t.server) {
            Some((_, v)) => v.push(t.schema_name.clone()),
            None => groups.push((t.server.clone(), vec![t.schema_name.clone()])),
        }
    }
    groups
}

/// [`observe_each`] over schemas already grouped by server.
async fn observe_grouped(
    servers: &Servers,
    client: &Client,
    groups: Vec<(String, Vec<String>)>,
    history_table: &str,
    index: Option<Indexing<'_>>,
    sink: impl FnMut(String, SchemaState) + Send,
) -> Result<Vec<(String, Error)>, Error> {
    // A mutex rather than a cell, so a run's plan can be made in a task of a service.
    let sink = std::sync::Mutex::new(sink);
    let reads = groups.into_iter().map(|(server, schemas)| {
        let sink = &sink;
        async move {
            let server = server.as_str();
            let read = async {
                // A server the registry names but the config lacks is a setup problem.
                let target = servers
                    .target(server)
                    .map_err(|e| Error::setup(e.message().to_string()))?;
                let own;
                let first = if crate::registry::servers::is_default(server) {
                    client
                } else {
                    own = target.connect().await?;
                    &own
                };
                let index = index.map(|i| (versions::schema_for(server, i.registry_schema), i.set));
                observe_on(target, first, &schemas, history_table, index, |n, s| {
                    (sink.lock().unwrap_or_else(|p| p.into_inner()))(n, s)
                })
                .await
            };
            read.await.err().map(|e| (server.to_string(), e))
        }
    });
    Ok(futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect())
}

/// One server's part of [`observe_each`]: with `index` (the server's index schema and
/// the files), the schemas the version index vouches for first, in one query; then the
/// others in full. Beyond the first [`state::PER_CONNECTION`] tenants read in full, up to
/// three more connections read history tables concurrently (see
/// [`state::observe_with`]); if they cannot be opened, the reads go through `client`
/// alone.
async fn observe_on(
    target: &db::Target,
    client: &Client,
    schemas: &[String],
    history_table: &str,
    index: Option<(&str, &MigrationSet)>,
    mut sink: impl FnMut(String, SchemaState),
) -> Result<(), Error> {
    let mut bypassed: HashMap<String, versions::Bypass> = HashMap::new();
    let full: Vec<String> = match index {
        None => schemas.to_vec(),
        Some((index, set)) => {
            let mut digests = versions::Digests::new(set);
            let found = versions::read(client, index, schemas, history_table, &mut digests).await?;
            let mut full = Vec::new();
            for (name, found) in found {
                match found {
                    versions::Found::Exact(n) => {
                        sink(name, SchemaState::indexed(versions::exact_rows(set, n)))
                    }
                    versions::Found::Bypassed(why) => {
                        full.push(name.clone());
                        bypassed.insert(name, why);
                    }
                }
            }
            full
        }
    };
    if full.is_empty() {
        return Ok(());
    }
    let sink = |name: String, mut state: SchemaState| {
        if let Some(why) = bypassed.remove(&name) {
            state.index = state::IndexUse::Bypassed(why);
        }
        sink(name, state)
    };
    let schemas = &full;
    let shares = schemas.len().div_ceil(state::PER_CONNECTION);
    let extra = shares.saturating_sub(1).min(3);
    let opened = futures::future::join_all((0..extra).map(|_| target.connect())).await;
    let extra: Vec<Client> = opened.into_iter().filter_map(Result::ok).collect();
    let mut clients: Vec<&Client> = vec![client];
    clients.extend(extra.iter());
    state::observe_each(&clients, schemas, history_table, sink).await
}

/// Each tenant's slot in selection order, by schema name.
fn positions(tenants: &[Tenant]) -> HashMap<String, usize> {
    tenants
        .iter()
        .enumerate()
        .map(|(i, t)| (t.schema_name.clone(), i))
        .collect()
}

/// Plans an upgrade to `to` from one streamed observation: tenants at the target are
/// answered at once (see [`triage_upgrade`]) and their registry cache refreshed; the
/// others need a session. Only the plan is kept, never the fleet's histories.
#[allow(clippy::too_many_arguments)]
pub async fn plan_upgrade(
    servers: &Servers,
    client: &Client,
    registry: &Registry<'_>,
    tenants: Vec<Tenant>,
    set: &MigrationSet,
    to: crate::engine::target::Target,
    unprovisioned: Unprovisioned,
    history_table: &str,
) -> Result<Vec<Planned>, Error> {
    // A tenant with an unfinished move is not answered from what its server shows (a
    // fenced or half-copied schema): its session refuses it, under its lock.
    let moving = registry.unfinished_moves().await?;
    let at = positions(&tenants);
    let groups = by_server(&tenants);
    // Each tenant moves from here into its plan as its batch is read.
    let mut waiting: Vec<Option<Tenant>> = tenants.into_iter().map(Some).collect();
    let mut slots: Vec<Option<Planned>> = (0..waiting.len()).map(|_| None).collect();
    let mut observed: Vec<(i64, Observed)> = Vec::new();
    // Tenants of a server that cannot be reached stay to be worked on: their sessions
    // fail to connect, and the run reports them without touching the registry.
    let index = Some(Indexing {
        registry_schema: registry.schema(),
        set,
    });
    observe_grouped(
        servers,
        client,
        groups,
        history_table,
        index,
        |name, state| {
            let Some(&i) = at.get(&name) else { return };
            let Some(t) = waiting[i].take() else { return };
            let id = t.id;
            if moving.contains(&id) {
                slots[i] = Some(Planned::Work(t));
                return;
            }
            let mut planned = triage_one(t, Some(&state), set, to, unprovisioned);
            if let Planned::Done(r) = &mut planned {
                // The registry row is only needed to refresh its cache, below.
                if let Some(t) = r.tenant.take() {
                    let seen = Observed::of(&state);
                    // Only what differs from the cached columns goes to the registry.
                    if state.history.is_ok() && seen.differs_from(&t) {
                        observed.push((id, seen));
                    }
                }
            }
            slots[i] = Some(planned);
        },
    )
    .await?;
    drop(at);
    if !observed.is_empty() {
        // Read-only users cannot refresh the cache; the plan is still right.
        let _ = registry.sync(&observed).await;
    }
    Ok(slots
        .into_iter()
        .zip(waiting)
        .filter_map(|(slot, t)| slot.or(t.map(Planned::Work)))
        .collect())
}

/// Observes the tenants' schemas in a few round trips, refreshes the registry's cached
/// columns where they were stale, and returns each tenant's status in input order.
pub async fn statuses(
    servers: &Servers,
    client: &Client,
    registry: &Registry<'_>,
    tenants: &mut [Tenant],
    set: &MigrationSet,
    history_table: &str,
) -> Result<Vec<TenantStatus>, Error> {
    let moving = registry.unfinished_moves().await?;
    let at = positions(tenants);
    let mut out: Vec<Option<TenantStatus>> = (0..tenants.len()).map(|_| None).collect();
    let index = Some(Indexing {
        registry_schema: registry.schema(),
        set,
    });
    let unreachable = observe_each(
        servers,
        client,
        tenants,
        history_table,
        index,
        |name, st| {
            if let Some(&i) = at.get(&name) {
                out[i] = Some(inspect::tenant_status(&tenants[i], &st, set));
            }
        },
    )
    .await?;
    let mut statuses = Vec::with_capacity(tenants.len());
    let mut observed: Vec<(i64, Observed)> = Vec::new();
    for (t, status) in tenants.iter_mut().zip(out) {
        let status = match status {
            Some(status) => status,
            None => {
                // Its server could not be reached: what the registry last saw, and why
                // (the error names the server).
                let why = unreachable
                    .iter()
                    .find(|(s, _)| *s == t.server)
                    .map_or_else(
                        || {
                            format!(
                                "the schema on server {} was not observed",
                                crate::ident::shown(&t.server)
                            )
                        },
                        |(_, e)| e.to_string(),
                    );
                let unknown = SchemaState {
                    schema_exists: t.schema_provisioned,
                    history_exists: false,
                    history: Err(why),
                    unreachable: true,
                    untracked: Default::default(),
                    index: Default::default(),
                };
                let mut status = inspect::tenant_status(t, &unknown, set);
                // Nothing was read: what the registry last saw stands.
                status.current_revision = t.current_revision;
                status.migrations_applied = t.migrations_applied;
                status
            }
        };
        if moving.contains(&t.id) {
            // A half-copied or fenced schema says nothing of the tenant: what the
            // registry last saw stands, and nothing is cached from it.
            let why = match registry.move_journal(t.id).await {
                Ok(Some(j)) => crate::data::moving::describe_journal(&j, &t.domain),
                Ok(None) => "a move of the tenant finished while this was read".to_string(),
                Err(e) => e.to_string(),
            };
            let mut status = status;
            status.current_revision = t.current_revision;
            status.migrations_applied = t.migrations_applied;
            status.schema_provisioned = t.schema_provisioned;
            // Unknown while the schema is half-copied or fenced, as for a server that
            // cannot be reached.
            status.pending_migrations = Vec::new();
            status.drift = Vec::new();
            status.history_error = Some(why.clone());
            status.moving = Some(why);
            statuses.push(status);
            continue;
        }
        if status.history_error.is_none() {
            let seen = inspect::observed(&status);
            // Only what differs from the cached columns goes to the registry.
            if seen.differs_from(t) {
                observed.push((t.id, seen));
            }
        }
        t.schema_provisioned = status.schema_provisioned;
        // An unreadable history says nothing about the revision: keep the cached one.
        if status.history_error.is_none() {
            t.current_revision = status.current_revision;
            t.migrations_applied = status.migrations_applied;
        }
        statuses.push(status);
    }
    // Read-only users cannot refresh the cache; the status itself is still right.
    let _ = registry.sync(&observed).await;
    Ok(statuses)
}

/// Refreshes the registry's cached columns for tenants answered without a session.
pub async fn sync_observed(
    registry: &Registry<'_>,
    states: &HashMap<String, SchemaState>,
    planned: &[Planned],
) {
    let observed: Vec<(i64, Observed)> = planned
        .iter()
        .filter_map(|p| match p {
            Planned::Done(r) => r.tenant.as_ref().map(|t| (t.id, &t.schema_name)),
            Planned::Work(_) => None,
        })
        .filter_map(|(id, schema)| {
            states
                .get(schema)
                .filter(|s| s.history.is_ok())
                .map(|s| (id, Observed::of(s)))
        })
        .collect();
    if !observed.is_empty() {
        let _ = registry.sync(&observed).await;
    }
}

/// What a run over the fleet needs: where to connect, the settings, the command's own
/// registry connection, and the interruption.
pub struct Fleet<'a> {
    /// Where to connect: the registry's server.
    pub target: &'a db::Target,
    /// Every server tenants live on.
    pub servers: &'a crate::registry::servers::Servers,
    /// Effective settings.
    pub settings: &'a Settings,
    /// The command's registry connection.
    pub client: &'a Client,
    /// The registry.
    pub registry: &'a Registry<'a>,
    /// Ctrl-C and SIGTERM.
    pub interrupt: &'a Interrupt,
}

impl Fleet<'_> {
    /// Runs `op` over the planned tenants as one run with a new id: each tenant that
    /// needs work in its own locked session (at most `opts.concurrency` at once, named
    /// `tenantctl RUN_ID` on the server), its outcome recorded in the registry and the
    /// ledger. Events go to `events` as the run goes.
    pub async fn run(
        &self,
        op: &impl Operation,
        planned: Vec<Planned>,
        opts: &RunOptions,
        events: &Events,
    ) -> Result<RunReport, Error> {
        let run_id = scheduler::new_run_id()?;
        self.run_as(&run_id, op, planned, opts, events).await
    }

    /// [`Fleet::run`] under a run id chosen by the caller (a service that answers with
    /// the id before the run starts).
    pub async fn run_as(
        &self,
        run_id: &str,
        op: &impl Operation,
        planned: Vec<Planned>,
        opts: &RunOptions,
        events: &Events,
    ) -> Result<RunReport, Error> {
        let run_id = run_id.to_string();
        let host = scheduler::client_host();
        self.interrupt.set_run_id(&run_id);
        // Each server's sessions connect through one target that counts their
        // connections, named `tenantctl RUN_ID` on the server.
        let pools = Pools::new(self.servers.iter().map(|(s, t)| {
            let target = t.named_for_run(&run_id).for_run(self.interrupt.clone());
            (s.name.clone(), target)
        }));
        let registry = RegistryConn::new(self.target, self.settings.connect_timeout, self.client);
        let env = Env {
            pools: &pools,
            registry: &registry,
            settings: self.settings,
            tables: self.registry.tables(),
            run_id: &run_id,
            client_host: &host,
            interrupt: self.interrupt,
        };
        let work = OnTenant {
            env: &env,
            op,
            events,
            halt: Default::default(),
        };
        let _graceful = self.interrupt.graceful_guard();
        let stop = self.interrupt.stop_token();
        let started_at = time::OffsetDateTime::now_utc();
        let report = scheduler::schedule(&work, &run_id, planned, opts, &stop, events).await;
        // The run's own row, even when no tenant needed work: monitoring's "last
        // successful upgrade". A registry that cannot take it does not fail the run.
        let result = match report.outcome() {
            scheduler::RunOutcome::Complete => "ok",
            scheduler::RunOutcome::Interrupted => "interrupted",
            _ => "failed",
        };
        if !self.interrupt.aborting() {
            let _ = crate::registry::record_run(
                self.client,
                self.registry.tables(),
                &run_id,
                op.name(),
                started_at,
                &report.summary,
                result,
                &host,
            )
            .await;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
