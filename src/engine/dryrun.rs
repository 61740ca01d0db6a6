//! Dry runs: for each tenant, the plan an `upgrade`, `downgrade`, `provision` or `stamp`
//! would execute ([`crate::engine::plan`]), made from one batched observation, and the exact SQL
//! that plan sends. Nothing is changed and no lock is taken.
//!
//! A tenant's SQL is never built as one string: [`PlannedTenant::sql`] refers to the
//! migration files and writes them out piece by piece when printed (text, or JSON
//! through `collect_str`), so memory stays bounded by the files, not by files × tenants.

use std::collections::HashMap;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::config::Settings;
use crate::engine::dependents;
use crate::engine::operation::Unprovisioned;
use crate::engine::plan::{self, SchemaChange, Sql, Step, TenantPlan};
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::registry::state::SchemaState;
use crate::registry::Tenant;

/// What a command would do to one tenant.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PlannedTenant<'s> {
    /// The tenant's registry id.
    pub tenant_id: i64,
    /// Domain.
    pub domain: String,
    /// Schema.
    pub schema_name: String,
    /// Revision now.
    pub from_revision: Option<i32>,
    /// Revision afterwards.
    pub to_revision: Option<i32>,
    /// Versions that would be applied (upgrade), reverted (downgrade) or newly recorded
    /// (stamp).
    pub versions: Vec<i32>,
    /// Recorded versions `stamp` would forget (empty for the other commands).
    pub forgotten: Vec<i32>,
    /// The SQL, in order, as it would be sent; empty when there is nothing to do.
    pub sql: Script<'s>,
    /// Why the command would refuse or fail for this tenant.
    pub error: Option<String>,
    /// Why the tenant would be skipped (a filter selected it, but it has no schema yet or
    /// the target does not fit its revision).
    pub skipped: Option<String>,
    /// The server the tenant lives on.
    #[serde(skip)]
    pub server: String,
}

/// What a command would do to one server's shared schema.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PlannedShared<'s> {
    /// The server.
    pub server: String,
    /// The shared schema.
    pub schema: String,
    /// Revision now.
    pub from_revision: Option<i32>,
    /// Revision afterwards.
    pub to_revision: Option<i32>,
    /// Versions that would be applied, reverted or newly recorded.
    pub versions: Vec<i32>,
    /// The SQL, in order, as it would be sent; empty when there is nothing to do.
    pub sql: Script<'s>,
    /// Why the command would refuse or fail on this server.
    pub error: Option<String>,
}

impl<'s> PlannedShared<'s> {
    /// The shared schema `schema` of `server` in `state` (`Err`: it could not be read),
    /// planned for `change`.
    pub fn plan(
        server: &str,
        schema: &str,
        state: Result<&SchemaState, String>,
        set: &'s MigrationSet,
        settings: &Settings,
        change: SchemaChange,
    ) -> PlannedShared<'s> {
        let mut p = PlannedShared {
            server: server.to_string(),
            schema: schema.to_string(),
            from_revision: None,
            to_revision: None,
            versions: Vec::new(),
            sql: Script::default(),
            error: None,
        };
        let state = match state {
            Ok(s) => s,
            Err(e) => {
                p.error = Some(e);
                return p;
            }
        };
        p.from_revision = state.current();
        p.to_revision = state.current();
        match crate::engine::shared::plan(change, schema, state, set, settings) {
            Err(message) => p.error = Some(message),
            Ok(plan) => {
                p.versions = plan.versions.clone();
                p.to_revision = plan.to_revision;
                if !plan.is_empty() {
                    let sql = Sql::shared(settings, schema);
                    p.sql = Script(Some((plan, sql, plan::refinery_now())));
                }
            }
        }
        p
    }
}

/// The whole dry run.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DryRun<'s> {
    /// Always true: nothing was changed.
    pub dry_run: bool,
    /// What an upgrade would do first to the shared schema of each server it touches
    /// (`upgrade --shared`: all there is).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<PlannedShared<'s>>,
    /// One entry per selected tenant.
    pub tenants: Vec<PlannedTenant<'s>>,
}

/// One tenant's SQL, written out when displayed or serialised (as one JSON string).
#[derive(Debug, Default)]
pub struct Script<'s>(Option<(TenantPlan<'s>, Sql, String)>);

impl Script<'_> {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl fmt::Display for Script<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => Ok(()),
            Some((plan, sql, now)) => plan::PlanSql { plan, sql, now }.fmt(f),
        }
    }
}

impl schemars::JsonSchema for Script<'_> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Script".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "The SQL the tenant's session would run, as one script"
        })
    }
}

impl Serialize for Script<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // serde_json escapes and writes the pieces as they come: no copy of the script.
        serializer.collect_str(self)
    }
}

/// Plans every tenant from the observed states.
pub fn plan<'s>(
    tenants: &[Tenant],
    states: &HashMap<String, SchemaState>,
    unreachable: &[(String, Error)],
    set: &'s MigrationSet,
    settings: &Settings,
    change: SchemaChange,
    unprovisioned: Unprovisioned,
) -> DryRun<'s> {
    let now = plan::refinery_now();
    let tenants = tenants
        .iter()
        .map(|t| {
            if let Some((_, e)) = unreachable.iter().find(|(s, _)| *s == t.server) {
                return unreachable_tenant(t, &e.to_string());
            }
            let state = states.get(&t.schema_name).cloned().unwrap_or(SchemaState {
                schema_exists: false,
                history_exists: false,
                history: Ok(Vec::new()),
                untracked: Default::default(),
                unreachable: false,
                index: Default::default(),
            });
            if state.unreachable {
                // Its server went away or stopped answering while it was read.
                let e = state.history.clone().err().unwrap_or_default();
                return unreachable_tenant(t, &e);
            }
            plan_one(t, &state, set, settings, change, unprovisioned, &now)
        })
        .collect();
    DryRun {
        dry_run: true,
        shared: Vec::new(),
        tenants,
    }
}

/// A tenant whose server could not be reached: it would fail. `e` names the server.
fn unreachable_tenant<'s>(t: &Tenant, e: &str) -> PlannedTenant<'s> {
    PlannedTenant {
        tenant_id: t.id,
        domain: t.domain.clone(),
        schema_name: t.schema_name.clone(),
        from_revision: t.current_revision,
        to_revision: t.current_revision,
        versions: Vec::new(),
        forgotten: Vec::new(),
        sql: Script::default(),
        error: Some(e.to_string()),
        skipped: None,
        server: t.server.clone(),
    }
}

fn plan_one<'s>(
    t: &Tenant,
    state: &SchemaState,
    set: &'s MigrationSet,
    settings: &Settings,
    change: SchemaChange,
    unprovisioned: Unprovisioned,
    now: &str,
) -> PlannedTenant<'s> {
    let current = state.current();
    let mut p = PlannedTenant {
        tenant_id: t.id,
        domain: t.domain.clone(),
        schema_name: t.schema_name.clone(),
        from_revision: current,
        to_revision: current,
        versions: Vec::new(),
        forgotten: Vec::new(),
        sql: Script::default(),
        error: None,
        skipped: None,
        server: t.server.clone(),
    };
    match change.plan(&t.schema_name, state, set, settings) {
        Err(refusal) => {
            let message = refusal.message(&t.schema_name, &t.domain);
            if refusal.skippable() && unprovisioned == Unprovisioned::Skip {
                p.skipped = Some(message);
            } else {
                p.error = Some(message);
            }
        }
        Ok(plan) => {
            p.versions = plan.versions.clone();
            p.forgotten = plan.forgotten.clone();
            p.to_revision = plan.to_revision;
            if !plan.is_empty() {
                let sql = Sql::new(settings, &t.schema_name);
                p.sql = Script(Some((plan, sql, now.to_string())));
            }
        }
    }
    p
}

/// Refuses, in the plan, the recreations a real run would refuse because objects outside
/// the schema depend on it (a real run checks again, in its transaction). `client` is the
/// registry's server's connection; other servers get one of their own.
pub async fn refuse_blocked_recreates(
    servers: &crate::registry::servers::Servers,
    client: &mut tokio_postgres::Client,
    dry: &mut DryRun<'_>,
) -> Result<(), Error> {
    let mut others: Vec<(String, crate::pg::db::Client)> = Vec::new();
    for p in dry.tenants.iter_mut().filter(|p| p.error.is_none()) {
        let recreates =
            p.sql.0.as_ref().is_some_and(|(plan, ..)| {
                plan.steps.iter().any(|s| matches!(s, Step::RecreateSchema))
            });
        if !recreates {
            continue;
        }
        let on_server: &mut tokio_postgres::Client =
            if crate::registry::servers::is_default(&p.server) {
                client
            } else {
                if !others.iter().any(|(s, _)| *s == p.server) {
                    let c = servers.target(&p.server)?.connect().await?;
                    others.push((p.server.clone(), c));
                }
                match others.iter_mut().find(|(s, _)| *s == p.server) {
                    Some((_, c)) => c,
                    None => continue,
                }
            };
        let boundary = dependents::inspect(on_server, &p.schema_name).await?;
        if !boundary.outside.is_empty() {
            p.error = Some(plan::recreate_blocked(&p.schema_name, &boundary.outside));
            p.sql = Script::default();
        }
    }
    Ok(())
}
