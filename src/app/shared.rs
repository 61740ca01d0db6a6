//! The application's shared schema as actions, for both faces: its status on every
//! server, its history, a dry run, and `upgrade`, `downgrade` and `stamp` of it on the
//! selected servers (each server's shared schema under its own lock). An upgrade of
//! tenants calls [`upgrade_first`] to bring the shared schema of each server it touches
//! to what the tenants' target needs ([`target_for`]: its head, for `upgrade` to head)
//! before that server's tenants.

use serde::Serialize;

use crate::app::context::Context;
use crate::config::Shared;
use crate::engine::dryrun::PlannedShared;
use crate::engine::plan::SchemaChange;
use crate::engine::pool::Pool;
use crate::engine::runner::Session;
use crate::engine::scheduler::{Events, RunEvent, SharedResult};
use crate::engine::shared;
use crate::engine::target::{self, Forms, Target};
use crate::error::Error;
use crate::files::migrations::{compare, MigrationSet};
use crate::ident::quote;
use crate::pg::db::Client;
use crate::registry::inspect::{self, HistoryEntry};
use crate::registry::state::SchemaState;
use crate::registry::Registry;

/// One server's shared schema, as `status --shared` shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SharedStatus {
    /// The server.
    pub server: String,
    /// The shared schema.
    pub schema: String,
    /// The highest applied version (`null`: nothing applied, or not read).
    pub current_revision: Option<i32>,
    /// Versions in the files not yet applied.
    pub pending_migrations: Vec<i32>,
    /// How the history differs from the files.
    pub drift: Vec<String>,
    /// Why the server's shared schema could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether that was because the server could not be reached (rather than a history
    /// that cannot be read, which is drift).
    #[serde(skip)]
    pub unreachable: bool,
}

impl SharedStatus {
    /// Whether it is at the files' head with no drift.
    pub fn at_head(&self) -> bool {
        self.error.is_none() && self.pending_migrations.is_empty() && self.drift.is_empty()
    }
}

/// One server's shared history, as `history --shared` shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SharedHistory {
    /// The server.
    pub server: String,
    /// The shared schema.
    pub schema: String,
    /// Every migration, shared file or history row, by version, as `history` shows a
    /// tenant's.
    pub migrations: Vec<HistoryEntry>,
    /// Why it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Context {
    /// The shared schema and its migrations; a setup error (exit 3) when there is none.
    pub fn shared(&self) -> Result<(&Shared, MigrationSet), Error> {
        let shared = self.settings.shared.as_ref().ok_or_else(|| {
            Error::setup(format!(
                "there is no shared schema: create {} for its migrations, or set [shared] dir in the config",
                self.settings.migrations_dir.join("shared").display()
            ))
        })?;
        if !shared.dir.is_dir() {
            return Err(Error::setup(format!(
                "the shared schema's migrations directory {} is not a directory: create it, or set [shared] dir in the config",
                shared.dir.display()
            )));
        }
        let set = MigrationSet::load(&shared.dir)?;
        set.refuse_requires()?;
        Ok((shared, set))
    }

    /// The configured servers `server` selects: that one (which must be configured), or
    /// every one.
    pub fn servers_named(&self, server: Option<&str>) -> Result<Vec<String>, Error> {
        match server {
            Some(name) => Ok(vec![self.servers.get(name)?.0.name.clone()]),
            None => Ok(self.servers.iter().map(|(s, _)| s.name.clone()).collect()),
        }
    }

    /// A connection to `server` for reads (the registry's own for `default`).
    pub async fn connect_server(&self, server: &str) -> Result<Client, Error> {
        if crate::registry::servers::is_default(server) {
            self.connect().await
        } else {
            Ok(self.servers.target(server)?.connect().await?)
        }
    }
}

/// Reads each selected server's shared schema (an unreachable server is reported with
/// its error, not as a failure of the whole read).
pub async fn status(cx: &Context, server: Option<&str>) -> Result<Vec<SharedStatus>, Error> {
    let (shared, set) = cx.shared()?;
    let servers = cx.servers_named(server)?;
    refuse_same_database(cx, &servers).await?;
    let set = &set;
    let reads = servers.iter().map(|name| async move {
        let state = read_state(cx, name, &shared.schema).await;
        status_of(name, shared, set, state)
    });
    Ok(futures::future::join_all(reads).await)
}

async fn read_state(cx: &Context, server: &str, schema: &str) -> Result<SchemaState, String> {
    let client = cx.connect_server(server).await.map_err(|e| e.to_string())?;
    shared::observe(&client, schema, &cx.settings)
        .await
        .map_err(|e| e.to_string())
}

/// A server's shared status from its state (`Err`: it could not be read).
pub fn status_of(
    server: &str,
    shared: &Shared,
    set: &MigrationSet,
    state: Result<SchemaState, String>,
) -> SharedStatus {
    let mut s = SharedStatus {
        server: server.to_string(),
        schema: shared.schema.clone(),
        current_revision: None,
        pending_migrations: Vec::new(),
        drift: Vec::new(),
        error: None,
        unreachable: state.as_ref().map_or(true, |st| st.unreachable),
    };
    match state.and_then(|st| st.history) {
        Err(e) => s.error = Some(e),
        Ok(history) => {
            let cmp = compare(&history, set);
            s.current_revision = cmp.current;
            s.pending_migrations = cmp.pending;
            s.drift = cmp.drift.iter().map(|d| d.to_string()).collect();
        }
    }
    s
}

/// Each selected server's shared history.
pub async fn history(cx: &Context, server: Option<&str>) -> Result<Vec<SharedHistory>, Error> {
    let (shared, set) = cx.shared()?;
    let servers = cx.servers_named(server)?;
    let set = &set;
    let reads = servers.iter().map(|name| async move {
        let mut h = SharedHistory {
            server: name.clone(),
            schema: shared.schema.clone(),
            migrations: Vec::new(),
            error: None,
        };
        match read_state(cx, name, &shared.schema)
            .await
            .and_then(|s| s.history)
        {
            Ok(rows) => h.migrations = inspect::history(set, Some(&rows)),
            Err(e) => h.error = Some(e),
        }
        h
    });
    Ok(futures::future::join_all(reads).await)
}

/// A change of the shared schema begun: its files, the change and the servers.
pub struct SharedStart<'a> {
    /// The shared schema.
    pub shared: &'a Shared,
    /// Its files.
    pub set: MigrationSet,
    /// The change.
    pub change: SchemaChange,
    /// The servers it goes to.
    pub servers: Vec<String>,
}

/// Loads the shared files, parses `target` as `command` takes it and picks the servers:
/// a broken directory, a bad target or an unknown server is refused before any
/// connection.
pub fn start<'a>(
    cx: &'a Context,
    command: &str,
    target: &str,
    server: Option<&str>,
) -> Result<SharedStart<'a>, Error> {
    let (shared, set) = cx.shared()?;
    let change = match command {
        "upgrade" => SchemaChange::Upgrade {
            target: target::parse(target, &set, Forms::Up, "upgrade")?,
            provision: true,
        },
        "downgrade" => {
            SchemaChange::Downgrade(target::parse(target, &set, Forms::Down, "downgrade")?)
        }
        _ => match target::parse(target, &set, Forms::Version, "stamp")? {
            Target::Version(v) => SchemaChange::Stamp(v),
            other => {
                return Err(Error::usage(format!(
                    "stamp takes a version, head or base, not {other}"
                )))
            }
        },
    };
    Ok(SharedStart {
        shared,
        set,
        change,
        servers: cx.servers_named(server)?,
    })
}

impl SharedStart<'_> {
    /// What the change would do on each server; nothing changes and no lock is taken.
    pub async fn dry_run(&self, cx: &Context) -> Result<Vec<PlannedShared<'_>>, Error> {
        plan_shared(cx, self.shared, &self.set, self.change, &self.servers).await
    }

    /// Runs the change on every server, each under its shared schema's lock. Every
    /// server's lock is taken first, in order; a downgrade is then refused as a whole
    /// (nothing changed anywhere, an error naming the tenants) when a tenant on one of
    /// them has applied a migration that requires a shared revision above its target.
    pub async fn run(&self, cx: &Context, events: &Events) -> Result<Vec<SharedResult>, Error> {
        self.refuse_misconfigured(cx).await?;
        let one = cx.one_tenant(events);
        let mut sessions: Vec<(String, Pool, Session<'_>)> = Vec::new();
        let mut results = Vec::new();
        for name in &self.servers {
            match shared::locked(&one, name, &self.shared.schema).await {
                Ok((pool, mut session)) => {
                    let domain = format!("shared schema on {name}");
                    session.on_notice(move |notice| {
                        events.send(RunEvent::Notice {
                            domain: domain.clone(),
                            notice: notice.clone(),
                        })
                    });
                    sessions.push((name.clone(), pool, session))
                }
                Err(e) => {
                    let r = SharedResult::new(name, self.shared).failed(e);
                    events.send(RunEvent::Shared(Box::new(r.clone())));
                    results.push(r);
                }
            }
        }
        if let SchemaChange::Downgrade(_) | SchemaChange::Stamp(_) = self.change {
            if let Err(e) = self.refuse_blocked(cx, &sessions).await {
                for (_, pool, session) in sessions {
                    session.close(&pool).await;
                }
                return Err(e);
            }
        }
        for (name, pool, mut session) in sessions {
            let r = shared::apply(&mut session, &name, self.shared, &self.set, self.change).await;
            for notice in session.notices() {
                events.send(RunEvent::Notice {
                    domain: format!("shared schema on {name}"),
                    notice,
                });
            }
            session.close(&pool).await;
            events.send(RunEvent::Shared(Box::new(r.clone())));
            results.push(r);
        }
        results.sort_by_key(|r| order(cx, &r.server));
        Ok(results)
    }

    /// Refuses, before any lock is taken, a configuration the change would go wrong on:
    /// two configured servers that are one database (the second's lock would wait for
    /// the first's forever), and a shared schema that is a registered tenant's.
    async fn refuse_misconfigured(&self, cx: &Context) -> Result<(), Error> {
        refuse_same_database(cx, &self.servers).await?;
        self.refuse_tenant_schema(cx).await
    }

    /// Refuses a shared schema that is a registered tenant's schema.
    async fn refuse_tenant_schema(&self, cx: &Context) -> Result<(), Error> {
        let client = cx.connect().await?;
        let registry = Registry::open(&client, &cx.settings.registry_schema).await?;
        if let Some(owner) = registry.schema_owner(&self.shared.schema).await? {
            return Err(Error::setup(format!(
                "the shared schema {} (shared.schema) is tenant {owner}'s schema: choose another shared.schema; nothing was changed",
                quote(&self.shared.schema)
            )));
        }
        Ok(())
    }

    /// A downgrade's refusal (and a stamp's that forgets versions): the tenants that have
    /// applied a migration requiring a shared revision above what each server's shared
    /// schema would go down to.
    async fn refuse_blocked(
        &self,
        cx: &Context,
        sessions: &[(String, Pool, Session<'_>)],
    ) -> Result<(), Error> {
        let mut refusals = Vec::new();
        for (name, _, session) in sessions {
            let state =
                shared::observe(session.client(), &self.shared.schema, &cx.settings).await?;
            let Ok(plan) = shared::plan(
                self.change,
                &self.shared.schema,
                &state,
                &self.set,
                &cx.settings,
            ) else {
                // Refused for its own reason: apply says why.
                continue;
            };
            let forgets = match self.change {
                SchemaChange::Stamp(_) => !plan.forgotten.is_empty(),
                _ => !plan.is_empty(),
            };
            if !forgets {
                continue;
            }
            let below = plan.to_revision.unwrap_or(0);
            let blocking = blocking_tenants(cx, name, below).await?;
            if !blocking.is_empty() {
                refusals.push(refusal(
                    self.change,
                    name,
                    &self.shared.schema,
                    below,
                    &blocking,
                ));
            }
        }
        if refusals.is_empty() {
            return Ok(());
        }
        Err(Error::failed(format!(
            "{}; nothing was changed",
            refusals.join("; ")
        )))
    }
}

/// Refuses two of `servers` that are one database (the same database of the same
/// running server, however each is reached): a change would wait for its own lock, and
/// every read would count that database twice.
pub async fn refuse_same_database(cx: &Context, servers: &[String]) -> Result<(), Error> {
    if servers.len() < 2 {
        return Ok(());
    }
    let reads = servers.iter().map(|name| async move {
        let client = cx.connect_server(name).await.ok()?;
        let row = crate::pg::db::read(
            &client,
            "reading which database the server is",
            client.query_one(
                "SELECT current_database()::text, pg_postmaster_start_time()::text, current_setting('port')",
                &[],
            ),
        )
        .await
        .ok()?;
        let id: (String, String, String) = (row.get(0), row.get(1), row.get(2));
        Some((name.clone(), id))
    });
    let ids: Vec<(String, (String, String, String))> = futures::future::join_all(reads)
        .await
        .into_iter()
        .flatten()
        .collect();
    for (i, (a, id)) in ids.iter().enumerate() {
        if let Some((b, _)) = ids[i + 1..].iter().find(|(_, other)| other == id) {
            return Err(Error::setup(format!(
                "servers {a} and {b} are the same database ({} on the server listening on port {}): configure a database as one server only; nothing was changed",
                quote(&id.0),
                id.2
            )));
        }
    }
    Ok(())
}

/// What `change` would do to the shared schema of each of `servers`, read without a
/// lock; a downgrade that would be refused says so.
pub async fn plan_shared<'s>(
    cx: &Context,
    shared: &Shared,
    set: &'s MigrationSet,
    change: SchemaChange,
    servers: &[String],
) -> Result<Vec<PlannedShared<'s>>, Error> {
    refuse_same_database(cx, servers).await?;
    let reads = servers.iter().map(|name| async move {
        let state = read_state(cx, name, &shared.schema).await;
        PlannedShared::plan(
            name,
            &shared.schema,
            state.as_ref().map_err(Clone::clone),
            set,
            &cx.settings,
            change,
        )
    });
    let mut planned = futures::future::join_all(reads).await;
    if let SchemaChange::Downgrade(_) | SchemaChange::Stamp(_) = change {
        let mut refused: Option<String> = None;
        for p in planned.iter_mut().filter(|p| {
            p.error.is_none()
                && match change {
                    SchemaChange::Stamp(_) => p.from_revision > p.to_revision,
                    _ => !p.sql.is_empty(),
                }
        }) {
            let below = p.to_revision.unwrap_or(0);
            match blocking_tenants(cx, &p.server, below).await {
                Ok(blocking) if blocking.is_empty() => {}
                Ok(blocking) => {
                    p.error = Some(refusal(change, &p.server, &p.schema, below, &blocking));
                    p.sql = Default::default();
                    refused.get_or_insert_with(|| p.server.clone());
                }
                Err(e) => {
                    p.error = Some(e.to_string());
                    refused.get_or_insert_with(|| p.server.clone());
                }
            }
        }
        // The run is all or nothing: refused on one server, it changes none.
        if let Some(refused) = refused {
            for p in planned.iter_mut().filter(|p| p.error.is_none()) {
                p.error = Some(format!(
                    "not run: the change is refused on server {refused}, and a refused change changes no server"
                ));
                p.sql = Default::default();
            }
        }
    }
    Ok(planned)
}

fn refusal(
    change: SchemaChange,
    server: &str,
    schema: &str,
    below: i32,
    blocking: &[String],
) -> String {
    let what = match change {
        SchemaChange::Stamp(_) => "stamp",
        _ => "downgrade",
    };
    format!(
        "refusing to {what} the shared schema {} on server {server} to {}: {} applied a migration that requires a higher shared revision ({}); downgrade those tenants first",
        quote(schema),
        crate::show::revision(Some(below).filter(|v| *v > 0)),
        if blocking.len() == 1 { "tenant" } else { "tenants" },
        crate::error::listed(blocking, 10)
    )
}

/// Servers in configuration order, `default` first.
fn order(cx: &Context, server: &str) -> usize {
    cx.servers
        .iter()
        .position(|(s, _)| s.name == server)
        .unwrap_or(usize::MAX)
}

/// The tenants of `server` whose history holds a migration that requires a shared
/// revision above `below`, each as `DOMAIN (VERSION requires shared N)`.
async fn blocking_tenants(cx: &Context, server: &str, below: i32) -> Result<Vec<String>, Error> {
    let set = cx.migrations()?;
    let requiring: Vec<(i32, i32)> = set
        .files
        .iter()
        .filter_map(|f| f.up.requires_shared.map(|n| (f.version, n)))
        .filter(|(_, n)| *n > below)
        .collect();
    if requiring.is_empty() {
        return Ok(Vec::new());
    }
    let client = cx.connect().await?;
    let registry = Registry::open(&client, &cx.settings.registry_schema).await?;
    let selection = crate::app::fleet::Selection {
        server: Some(server.to_string()),
        ..Default::default()
    };
    let tenants = crate::app::fleet::select(&registry, &selection).await?;
    drop(registry);
    let (states, unreachable) = crate::app::fleet::observe_partial(
        &cx.servers,
        &client,
        &tenants,
        &cx.settings.history_table,
        None,
    )
    .await?;
    if let Some((_, e)) = unreachable.first() {
        return Err(Error::failed(format!(
            "cannot check which tenants need the shared schema: {e}; nothing was changed"
        )));
    }
    let mut blocking = Vec::new();
    let needs = |v: i32, n: i32| format!("V{v} requires shared {n}");
    for t in &tenants {
        let state = states.get(&t.schema_name);
        match state {
            Some(st) if st.schema_exists && st.history_exists => match &st.history {
                Ok(history) => {
                    if let Some((v, n)) = requiring
                        .iter()
                        .find(|(v, _)| history.iter().any(|r| r.version == *v))
                    {
                        blocking.push(format!("{} ({})", t.domain, needs(*v, *n)));
                    } else if let Some((v, n)) = requiring
                        .iter()
                        .find(|(v, _)| t.current_revision.is_some_and(|r| r >= *v))
                    {
                        // A history emptied or edited by hand, while the registry last
                        // saw the tenant past such a file: not shown not to need it.
                        blocking.push(format!(
                            "{} (its history lacks V{v}, but the registry records revision {}, past {})",
                            t.domain,
                            crate::show::revision(t.current_revision),
                            needs(*v, *n)
                        ));
                    }
                }
                // What cannot be read cannot be shown not to need it.
                Err(e) => blocking.push(format!("{} (its history cannot be read: {e})", t.domain)),
            },
            // No schema or no history table where the registry may record one (renamed,
            // dropped by hand): the registry's revision says what it had.
            _ => {
                if let Some((v, n)) = requiring
                    .iter()
                    .find(|(v, _)| t.current_revision.is_some_and(|r| r >= *v))
                {
                    blocking.push(format!(
                        "{} (its history is missing; the registry records revision {}, past {})",
                        t.domain,
                        crate::show::revision(t.current_revision),
                        needs(*v, *n)
                    ));
                }
            }
        }
    }
    Ok(blocking)
}

/// The shared revision an upgrade of tenants to `target` brings each server's shared
/// schema to first: the shared head for `head` (and for a relative target, which each
/// tenant resolves from its own revision); for a version below the tenants' head, the
/// highest shared revision the tenant files up to it require; `None` when that is
/// nothing: the shared schema is then left as it is.
pub fn target_for(tenants: &MigrationSet, target: Target, shared: &MigrationSet) -> Option<i32> {
    match target {
        Target::Version(v) if v < tenants.head() => tenants
            .files
            .iter()
            .filter(|f| f.version <= v)
            .filter_map(|f| f.up.requires_shared)
            .max(),
        _ => Some(shared.head()).filter(|h| *h > 0),
    }
}

/// Before an upgrade of tenants: brings the shared schema of each of `servers` to
/// `target` (see [`target_for`]), each under its lock. Nothing when there is no shared
/// schema or no target. A server whose shared schema fails is reported; its tenants still
/// run, and those that require what it lacks are held back.
pub async fn upgrade_first(
    cx: &Context,
    servers: &[String],
    target: Option<i32>,
    events: &Events,
) -> Result<Vec<SharedResult>, Error> {
    let Some(target) = target else {
        return Ok(Vec::new());
    };
    if cx.settings.shared.is_none() || servers.is_empty() {
        return Ok(Vec::new());
    }
    let (shared, set) = cx.shared()?;
    let start = SharedStart {
        shared,
        change: SchemaChange::Upgrade {
            target: Target::Version(target),
            provision: true,
        },
        set,
        servers: servers.to_vec(),
    };
    start.run(cx, events).await
}
