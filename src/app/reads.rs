//! The reading actions, for both faces: `check` (the CI gate), `current` (each tenant's
//! revision), `history` (the migrations, and a tenant's applied ones) and `events` (the
//! run ledger). Each takes a typed request, changes nothing, and returns the document the
//! faces print or serve.

use serde::Serialize;

use crate::app::changes;
use crate::app::context::Context;
use crate::app::fleet::{self, Selection};
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::ident;
use crate::registry::inspect::{self, HistoryEntry, Problem, StatusSummary};
use crate::registry::state::IndexUse;
use crate::registry::versions;
use crate::registry::{EventFilter, EventRow, Registry};

/// What `check` found: its JSON document.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct CheckReport {
    /// True when there is nothing to report.
    pub ok: bool,
    /// The head version of the files.
    pub head: i32,
    /// Tenants checked.
    pub tenants: usize,
    /// Tenants with at least one problem.
    pub tenants_with_problems: usize,
    /// Every problem, one per line in text output.
    pub problems: Vec<Problem>,
    /// The shared schema on each server, when there is one: behind its head or drifted
    /// is a problem too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<crate::app::shared::SharedStatus>,
    /// How the version index answered for the tenants.
    pub index: IndexCheck,
    /// The lint of the migrations the fleet has still to apply (those above the lowest
    /// revision of the provisioned tenants; every file when none is): the files with
    /// findings, as `lint` reports them. A finding is a problem too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lint: Vec<crate::app::lint::FileLint>,
    /// Point-in-time recovery on each server with a pgBackRest stanza configured: the
    /// stanza checked, its backups, and room in the scratch directory. One that is not
    /// ready is a problem.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pitr: Vec<crate::data::pitr::Readiness>,
}

/// What `check` says of the version index.
#[derive(Debug, Default, Serialize, schemars::JsonSchema)]
pub struct IndexCheck {
    /// Tenants the index answered for.
    pub trusted: usize,
    /// Tenants the index did not answer for, read in full instead, with why; not a
    /// problem (drift and pending versions out of order are reported as problems, not
    /// here).
    pub read_in_full: Vec<SlowRead>,
    /// Whether every history table was also read in full and compared (`--deep`).
    pub deep: bool,
    /// Servers whose index is not watched (its event triggers are not armed), with
    /// why: each tenant's row is then checked against the catalog, which is exact and
    /// slower. Not a problem.
    pub unwatched: Vec<Unwatched>,
}

/// A server whose version index is read without the watch.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Unwatched {
    /// The server.
    pub server: String,
    /// Why the watch is not armed there, and what arms it.
    pub why: String,
}

/// A tenant read in full because the version index could not vouch for it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct SlowRead {
    /// Registry id.
    pub tenant_id: i64,
    /// Domain.
    pub domain: String,
    /// Schema.
    pub schema_name: String,
    /// `no_index`, `no_row`, `recreated`, `no_trigger`, `trigger_disabled`,
    /// `trigger_changed`, `trigger_touched`, `table_altered`, `row_edited`,
    /// `unsettled`, `columns_changed` (`init` indexes these again), `inherited`,
    /// `columns` or `unvouched` (what the history table is or holds keeps the index
    /// out).
    pub reason: &'static str,
    /// Why, in words.
    pub why: String,
}

/// Checks the files, the registry, every server and every tenant; read-only, takes no
/// locks. A server that does not answer is an error naming it, never drift.
///
/// The tenants are read through the version index; those it cannot vouch for are read
/// in full and listed. With `deep`, every history table is also read in full, and a
/// tenant on which the two disagree is a problem (`index_mismatch`).
pub async fn check(cx: &Context, deep: bool) -> Result<CheckReport, Error> {
    let set = cx.migrations()?;
    let client = cx.connect().await?;
    let registry = Registry::open(&client, &cx.settings.registry_schema).await?;
    let tenants = registry.list(None, None).await?;
    // Every server must answer, whether or not it holds tenants yet; the question it
    // answers is whether its version index is watched. (A connection error names its
    // server; so does a read it does not answer.)
    let mut unwatched = Vec::new();
    for (server, target) in cx.servers.iter() {
        let own;
        let c = if crate::registry::servers::is_default(&server.name) {
            &client
        } else {
            own = target.connect().await?;
            &own
        };
        let schema = versions::schema_for(&server.name, &cx.settings.registry_schema);
        let watch = versions::watch_state(c, schema).await?;
        if let versions::Watch::Unarmed(why) = watch {
            if tenants.iter().any(|t| t.server == server.name) {
                unwatched.push(Unwatched {
                    server: server.name.clone(),
                    why,
                });
            }
        }
    }
    let table = &cx.settings.history_table;
    let indexing = fleet::Indexing {
        registry_schema: &cx.settings.registry_schema,
        set: &set,
    };
    let states = fleet::observe(&cx.servers, &client, &tenants, table, Some(indexing)).await?;
    // A server that went away or stopped answering while its tenants were read cannot
    // be checked: that is not drift.
    if let Some(why) = states
        .values()
        .find(|s| s.unreachable)
        .and_then(|s| s.history.clone().err())
    {
        return Err(Error::unavailable(why));
    }
    let mut problems = inspect::check(&tenants, &states, &set);
    let mut index = IndexCheck {
        deep,
        unwatched,
        ..Default::default()
    };
    for t in &tenants {
        match states.get(&t.schema_name).map(|s| &s.index) {
            Some(IndexUse::Trusted) => index.trusted += 1,
            Some(IndexUse::Bypassed(why)) if why.listed() => index.read_in_full.push(SlowRead {
                tenant_id: t.id,
                domain: t.domain.clone(),
                schema_name: t.schema_name.clone(),
                reason: why.code(),
                why: why.why(),
            }),
            _ => {}
        }
    }
    if deep {
        let full = fleet::observe(&cx.servers, &client, &tenants, table, None).await?;
        for t in &tenants {
            let (Some(indexed), Some(read)) =
                (states.get(&t.schema_name), full.get(&t.schema_name))
            else {
                continue;
            };
            if indexed.index != IndexUse::Trusted {
                continue;
            }
            let a = said(&inspect::tenant_status(t, indexed, &set));
            let b = said(&inspect::tenant_status(t, read, &set));
            if a != b {
                problems.push(Problem {
                    tenant: t.domain.clone(),
                    tenant_id: t.id,
                    domain: t.domain.clone(),
                    schema_name: t.schema_name.clone(),
                    kind: "index_mismatch",
                    message: format!(
                        "the version index says {a}; the history table says {b}; any write to the history table rewrites the index row, e.g. `DELETE FROM {} WHERE false`",
                        crate::ident::qualified(&t.schema_name, table)
                    ),
                    files: Vec::new(),
                });
            }
        }
    }
    let mut affected: Vec<&str> = problems.iter().map(|p| p.tenant.as_str()).collect();
    affected.dedup();
    let shared = match cx.settings.shared {
        Some(_) => crate::app::shared::status(cx, None).await?,
        None => Vec::new(),
    };
    // A server that cannot be reached cannot be checked; a shared history that cannot be
    // read is drift, as a tenant's is.
    if let Some(e) = shared
        .iter()
        .filter(|s| s.unreachable)
        .find_map(|s| s.error.as_ref())
    {
        return Err(Error::unavailable(e.clone()));
    }
    // The files the fleet has still to apply, linted: those above the lowest cached
    // revision of the provisioned tenants (every file when none is provisioned).
    let lowest = tenants
        .iter()
        .filter(|t| t.schema_provisioned)
        .map(|t| t.current_revision.unwrap_or(0))
        .min();
    let lint: Vec<crate::app::lint::FileLint> = crate::app::lint::pending(cx, &set, lowest)?
        .into_iter()
        .filter(|f| !f.findings.is_empty())
        .collect();
    let mut pitr = Vec::new();
    for (server, target) in cx.servers.iter() {
        if server.pitr.is_none() {
            continue;
        }
        let r = match target.connect().await {
            Ok(live) => crate::data::pitr::readiness(&cx.settings, &server.name, &live).await,
            Err(e) => return Err(e),
        };
        pitr.push(r);
    }
    Ok(CheckReport {
        ok: problems.is_empty()
            && shared.iter().all(|s| s.at_head())
            && lint.is_empty()
            && pitr.iter().all(|p| p.ok),
        lint,
        pitr,
        shared,
        head: set.head(),
        tenants: tenants.len(),
        tenants_with_problems: affected.len(),
        problems,
        index,
    })
}

/// What a status says of a tenant's history, in words, for comparing two reads of it.
fn said(s: &inspect::TenantStatus) -> String {
    if let Some(e) = &s.history_error {
        return format!("the history cannot be read ({e})");
    }
    if !s.schema_provisioned {
        return "the schema does not exist".to_string();
    }
    format!(
        "revision {}, {} pending, {} drifted",
        crate::show::revision(s.current_revision),
        s.pending_migrations.len(),
        s.drift.len()
    )
}

/// One tenant's revision.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Current {
    /// Registry id.
    pub tenant_id: i64,
    /// Domain.
    pub domain: String,
    /// Schema.
    pub schema_name: String,
    /// Highest applied version; `null` when nothing is applied.
    pub current_revision: Option<i32>,
    /// Whether it is provisioned, clean and at head.
    pub at_head: bool,
}

/// What `current` prints.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Currents {
    /// One entry per tenant.
    pub tenants: Vec<Current>,
    /// Fleet counts.
    pub summary: StatusSummary,
}

/// The current revisions of the tenants `selection` names, read from their history
/// tables; a selection that selects nothing means every tenant, as for the bulk
/// commands.
pub async fn current(cx: &Context, selection: &Selection) -> Result<Currents, Error> {
    let set = cx.migrations()?;
    let client = cx.connect().await?;
    let registry = Registry::open(&client, &cx.settings.registry_schema).await?;
    let mut selection = selection.clone();
    if !selection.selects() {
        selection.all = true;
    }
    let mut tenants = changes::select(cx, &registry, &selection).await?;
    let st = cx.statuses(&client, &registry, &mut tenants, &set).await?;
    let mut summary = inspect::summarize(&st, set.head());
    // The shared schema's revision on each server, as `status --all` gives it.
    if cx.settings.shared.is_some() {
        summary.shared = crate::app::shared::status(cx, None)
            .await?
            .into_iter()
            .map(|s| (s.server, s.current_revision))
            .collect();
    }
    Ok(Currents {
        tenants: st
            .iter()
            .map(|s| Current {
                tenant_id: s.tenant_id,
                domain: s.domain.clone(),
                schema_name: s.schema_name.clone(),
                current_revision: s.current_revision,
                at_head: s.at_head(),
            })
            .collect(),
        summary,
    })
}

/// What `history` prints.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct History {
    /// Every migration, by version.
    pub migrations: Vec<HistoryEntry>,
    /// The migration files read.
    #[serde(skip)]
    pub set: MigrationSet,
    /// When a tenant was named whose schema does not exist yet, a note saying so.
    #[serde(skip)]
    pub note: Option<String>,
}

/// The migrations; with a tenant (`reference`: its domain or id), merged with its
/// history table.
pub async fn history(cx: &Context, reference: Option<&str>) -> Result<History, Error> {
    let set = cx.migrations()?;
    let Some(reference) = reference else {
        return Ok(History {
            migrations: inspect::history(&set, None),
            set,
            note: None,
        });
    };
    let client = cx.connect().await?;
    let registry = Registry::open(&client, &cx.settings.registry_schema).await?;
    let tenant = registry.find(reference).await?;
    let tenants = std::slice::from_ref(&tenant);
    let table = &cx.settings.history_table;
    // The history shows when each version was applied, which the index does not keep.
    let mut states = fleet::observe(&cx.servers, &client, tenants, table, None).await?;
    let st = states
        .remove(&tenant.schema_name)
        .ok_or_else(|| Error::failed(format!("schema {} was not observed", tenant.schema_name)))?;
    let note = (!st.schema_exists).then(|| {
        format!(
            "schema \"{}\" of tenant {} does not exist yet",
            tenant.schema_name, tenant.domain
        )
    });
    let rows = st.history.map_err(Error::failed)?;
    Ok(History {
        migrations: inspect::history(&set, Some(&rows)),
        set,
        note,
    })
}

/// Which ledger entries `events` reads.
#[derive(Debug, Clone, Default)]
pub struct EventsRequest {
    /// One tenant's (its domain or id).
    pub tenant: Option<String>,
    /// One run's (its UUID).
    pub run: Option<String>,
    /// Failed ones only.
    pub failed: bool,
    /// At most this many, newest first.
    pub limit: u32,
}

/// What `events` prints.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Events {
    /// Ledger entries, newest first.
    pub events: Vec<EventRow>,
}

/// The ledger entries `request` names; a run id that is not a UUID is refused before
/// any connection.
pub async fn events(cx: &Context, request: &EventsRequest) -> Result<Events, Error> {
    if let Some(run) = &request.run {
        let ok = run.len() == 36 && run.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if !ok {
            return Err(Error::usage(format!(
                "run id {} is not a UUID",
                ident::shown(run)
            )));
        }
    }
    let client = cx.connect().await?;
    let registry = Registry::open(&client, &cx.settings.registry_schema).await?;
    let tenant_id = match &request.tenant {
        Some(t) => Some(registry.find(t).await?.id),
        None => None,
    };
    let filter = EventFilter {
        tenant_id,
        run_id: request.run.as_ref().map(|r| r.to_ascii_lowercase()),
        failed_only: request.failed,
        limit: i64::from(request.limit),
    };
    Ok(Events {
        events: registry.events(&filter).await?,
    })
}
