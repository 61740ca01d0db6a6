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
use crate::engine::runner::{ExecError, LockHolder, LockWait, Session};
use crate::engine::scheduler::{ResultStatus, RunEvent, SharedResult};
use crate::engine::tenant::Context;
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::pg::db::Client;
use crate::registry::state::{self, SchemaState};

/// A session on `server`'s shared schema holding its lock (a long wait is reported as
/// an event), on a connection of its own that is closed with the returned pool.
pub async fn locked<'a>(
    cx: &Context<'a>,
    server: &str,
    schema: &'a str,
) -> Result<(Pool, Session<'a>), Error> {
    let report = |holder: Option<&LockHolder>| {
        cx.events.send(RunEvent::Waiting {
            domain: format!("shared schema on {server}"),
            schema_name: schema.to_string(),
            holder: holder.cloned(),
        })
    };
    let wait = LockWait {
        interrupt: cx.interrupt,
        report: &report,
    };
    let pool = Pool::single(cx.servers.target(server)?.clone());
    let session = Session::open_shared(&pool, cx.settings, schema, &wait)
        .await
        .map_err(Error::from)?;
    Ok((pool, session))
}

/// The shared schema `schema` as `client`'s server has it, read without its lock.
pub async fn observe(client: &Client, schema: &str) -> Result<SchemaState, Error> {
    let mut map = state::observe(client, &[schema.to_string()], SHARED_HISTORY).await?;
    Ok(map
        .remove(schema)
        .map(tracked)
        .expect("observe returns every schema asked for"))
}

/// The shared schema holds objects that are not tenantctl's: they never make it
/// "untracked" (which would refuse its first upgrade).
fn tracked(mut state: SchemaState) -> SchemaState {
    state.untracked = Default::default();
    state
}

/// The plan of `change` on a shared schema in `state`: an upgrade creates the schema when
/// it is missing. A refusal is said as the shared schema's.
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
        .plan(schema, &tracked(state.clone()), set, settings)
        .map_err(|r| refusal(&r, schema))
}

/// A refusal on the shared schema, with the commands that apply to it.
fn refusal(r: &Refusal, schema: &str) -> String {
    r.message(schema, "DOMAIN")
        .replace("--tenant DOMAIN", "--shared")
        .replace(
            "`tenantctl provision --shared` first",
            "`tenantctl upgrade --shared` first",
        )
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
    let before = match session.observe().await {
        Ok(s) => tracked(s),
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
            if matches!(change, SchemaChange::Upgrade { .. }) {
                r.to = done.versions.last().copied().or(r.to);
            }
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
