//! The application's shared schema (`public` by default) on one server: its session,
//! its state, and one change to it.
//!
//! The shared schema is migrated as a tenant's schema is (the same files' rules, the same
//! plans and `Session`), with two differences: its history is
//! [`crate::config::SHARED_HISTORY`] under an advisory lock of its own
//! ([`crate::engine::plan::shared_lock`]), and it is never "untracked": it holds what
//! is not tenantctl's (the registry, extensions), so a first upgrade runs over it.

use std::time::Instant;

use crate::config::{Shared, SHARED_HISTORY};
use crate::engine::plan::{Refusal, SchemaChange, TenantPlan};
use crate::engine::pool::Pool;
use crate::engine::runner::{ExecError, Session};
use crate::engine::scheduler::{ResultStatus, SharedResult};
use crate::engine::tenant::Context;
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::pg::db::Client;
use crate::registry::state::{self, SchemaState, Untracked};

/// A session on `server`'s shared schema holding its lock (a long wait is reported as
/// an event), on a connection of its own that is closed with the returned pool.
pub async fn locked<'a>(
    cx: &Context<'a>,
    server: &str,
    schema: &'a str,
) -> Result<(Pool, Session<'a>), Error> {
    let what = format!("shared schema on {server}");
    crate::engine::tenant::locked_as(cx, server, schema, &what, true).await
}

/// The shared schema `schema` as `client`'s server has it, read without its lock.
/// Without a shared history, what it holds that is neither tenantctl's registry nor an
/// extension's counts as untracked: an upgrade would run the first shared migration over
/// those tables, so it is refused (`stamp --shared` records what they match).
pub async fn observe(
    client: &Client,
    schema: &str,
    settings: &crate::config::Settings,
) -> Result<SchemaState, Error> {
    let mut map = state::observe(client, &[schema.to_string()], SHARED_HISTORY).await?;
    let mut state = map
        .remove(schema)
        .expect("observe returns every schema asked for");
    state.untracked = Default::default();
    if state.schema_exists && !state.history_exists && !state.unreachable {
        state.untracked = untracked(client, schema, &settings.registry_schema).await?;
    }
    Ok(state)
}

/// The tables, views and foreign tables of the shared schema that are neither the
/// registry's or the version index's (when they live there) nor an extension's.
async fn untracked(
    client: &Client,
    schema: &str,
    registry_schema: &str,
) -> Result<Untracked, Error> {
    let registry: Vec<String> = if schema == registry_schema {
        [
            "tenants",
            "tenant_events",
            "tenant_moves",
            "tenant_runs",
            crate::registry::HISTORY_TABLE,
            crate::registry::versions::TABLE,
            crate::registry::versions::WATCH_TABLE,
        ]
        .iter()
        .map(|t| t.to_string())
        .collect()
    } else if schema == crate::registry::versions::OTHER_SCHEMA {
        vec![
            crate::registry::versions::TABLE.to_string(),
            crate::registry::versions::WATCH_TABLE.to_string(),
        ]
    } else {
        Vec::new()
    };
    let others: Vec<&str> = state::OTHER_HISTORIES.iter().map(|(t, _)| *t).collect();
    let row = crate::pg::db::read(
        client,
        "reading what the shared schema holds",
        client.query_one(
            "SELECT count(*), min(c.relname::text) FILTER (WHERE c.relname = ANY($3::text[])) \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
             AND NOT c.relname = ANY($2::text[]) \
             AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d \
                             WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                             AND d.objid = c.oid AND d.deptype = 'e')",
            &[&schema, &registry, &others],
        ),
    )
    .await?;
    Ok(Untracked {
        objects: row.get(0),
        other_history: row.get(1),
    })
}

/// The plan of `change` on a shared schema in `state` (as [`observe`] reads it): an
/// upgrade creates the schema when it is missing. A refusal is said as the shared
/// schema's.
pub fn plan<'s>(
    change: SchemaChange,
    schema: &str,
    state: &SchemaState,
    set: &'s MigrationSet,
    settings: &crate::config::Settings,
) -> Result<TenantPlan<'s>, String> {
    let change = match change {
        SchemaChange::Upgrade { target, .. } => SchemaChange::Upgrade {
            target,
            provision: true,
        },
        other => other,
    };
    change
        .plan(schema, state, set, settings)
        .map_err(|r| refusal(&r, schema))
}

/// A refusal on the shared schema, with the commands that apply to it.
fn refusal(r: &Refusal, schema: &str) -> String {
    r.message(schema, "DOMAIN")
        .replace("`tenantctl stamp --tenant DOMAIN base` runs every migration over what it holds", "`tenantctl stamp --shared base` runs every shared migration over what it holds")
        .replace("--tenant DOMAIN", "--shared")
        .replace("`tenantctl provision --shared` first", "`tenantctl upgrade --shared` first")
        .replace("it stamps each tenant at the version its alembic_version maps to", "a `[shared]` table in its map file stamps the shared schema at the version public's alembic_version maps to")
}

/// Runs `change` on the shared schema the session holds (its lock taken): reads its
/// state, plans and executes.
pub async fn apply(
    session: &mut Session<'_>,
    server: &str,
    shared: &Shared,
    set: &MigrationSet,
    change: SchemaChange,
) -> SharedResult {
    let started = Instant::now();
    let mut r = SharedResult::new(server, shared);
    let finish = |mut r: SharedResult| {
        r.duration_ms = started.elapsed().as_millis() as u64;
        r
    };
    let before = match observe(session.client(), &shared.schema, session.settings()).await {
        Ok(s) => s,
        Err(e) => return finish(r.failed(e)),
    };
    r.from = before.current();
    r.to = before.current();
    let plan = match plan(change, &shared.schema, &before, set, session.settings()) {
        Ok(plan) => plan,
        Err(message) => return finish(r.failed(message)),
    };
    match session.execute(&plan).await {
        Ok(done) => {
            r.to = plan.to_revision;
            r.applied = done.versions;
            r.status = if done.changed {
                ResultStatus::Ok
            } else {
                ResultStatus::UpToDate
            };
        }
        Err(ExecError::Failed { done, message }) | Err(ExecError::HeldBack { done, message }) => {
            // Where it stopped, read back: a down script that failed after others
            // leaves the schema between the two revisions.
            r.to = match session.observe().await {
                Ok(now) => now.current(),
                Err(_) if matches!(change, SchemaChange::Upgrade { .. }) => {
                    done.versions.last().copied().or(r.to)
                }
                Err(_) => r.to,
            };
            r.applied = done.versions;
            r = r.failed(message);
        }
        Err(ExecError::Refused(message)) => r = r.failed(message),
        Err(ExecError::Interrupted(done)) => {
            r.applied = done.versions;
            if let Ok(now) = session.observe().await {
                r.to = now.current();
            }
            r.status = ResultStatus::Skipped;
            r.error = Some(format!(
                "stopped early: {}",
                crate::engine::scheduler::INTERRUPTED
            ));
        }
    }
    finish(r)
}
