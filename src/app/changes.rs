//! The fleet's schema changes as actions, for both faces: `upgrade`, `downgrade`,
//! `stamp` and `provision` start from a selection ([`Started`]), answer a dry run without
//! changing anything, or run as one bulk run whose report they return. `backup` runs the
//! same way with its own operation ([`Started::run_op`]).

use crate::app::context::Context;
use crate::app::fleet::{self, Fleet, Selection};
use crate::engine::dryrun::{self, DryRun};
use crate::engine::operation::{Change, Operation, Unprovisioned};
use crate::engine::plan::SchemaChange;
use crate::engine::scheduler::{Events, Planned, RunOptions, RunReport};
use crate::engine::target::{self, Forms, Target};
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::pg::db::Client;
use crate::registry::{Registry, Tenant};

/// A change begun: the migration files, the action's registry connection and the
/// selected tenants.
pub struct Started {
    /// The migration files (none for `provision`).
    pub set: MigrationSet,
    /// The action's connection to the registry's server.
    pub client: Client,
    /// The selected tenants.
    pub tenants: Vec<Tenant>,
    /// What to do with selected tenants that have no schema.
    pub unprovisioned: Unprovisioned,
    /// The servers the selection touches, whose shared schema an upgrade brings to its
    /// head first: every configured server for `--all` (without `--server`), else the
    /// selected tenants' servers and the `--server` named.
    pub servers: Vec<String>,
    /// The shared schema's files, when there is a shared schema.
    pub shared: Option<MigrationSet>,
}

/// Loads the files, parses `target` as `command` takes it (`forms`), connects and
/// selects: in that order, so a broken directory or a bad target is refused before any
/// connection.
pub async fn start(
    cx: &Context,
    target: &str,
    forms: Forms,
    command: &str,
    selection: &Selection,
) -> Result<(Started, Target), Error> {
    let set = cx.migrations()?;
    let target = target::parse(target, &set, forms, command)?;
    Ok((Started::open(cx, set, selection).await?, target))
}

/// The tenants `selection` names; its `server` must be a configured server.
pub async fn select(
    cx: &Context,
    registry: &Registry<'_>,
    selection: &Selection,
) -> Result<Vec<Tenant>, Error> {
    if let Some(server) = &selection.server {
        cx.servers.get(server)?;
    }
    fleet::select(registry, selection).await
}

impl Started {
    /// Connects and selects the tenants a change of `set` will work on.
    pub async fn open(
        cx: &Context,
        set: MigrationSet,
        selection: &Selection,
    ) -> Result<Started, Error> {
        let client = cx.connect().await?;
        let registry = Registry::open(&client, &cx.settings.registry_schema).await?;
        let tenants = select(cx, &registry, selection).await?;
        drop(registry);
        let mut servers: Vec<String> = Vec::new();
        for (s, _) in cx.servers.iter() {
            let everywhere = selection.all && selection.server.is_none();
            let named = selection.server.as_deref() == Some(s.name.as_str());
            if everywhere || named || tenants.iter().any(|t| t.server == s.name) {
                servers.push(s.name.clone());
            }
        }
        let shared = match cx.settings.shared.is_some() {
            true => Some(cx.shared()?.1),
            false => None,
        };
        Ok(Started {
            set,
            client,
            tenants,
            unprovisioned: selection.unprovisioned(),
            servers,
            shared,
        })
    }

    /// What `change` would do to each selected tenant, read from one observation of the
    /// fleet; nothing is changed. A recreate also tries each drop, to refuse the schemas
    /// another schema's objects depend on.
    pub async fn dry_run(
        &mut self,
        cx: &Context,
        change: SchemaChange,
    ) -> Result<DryRun<'_>, Error> {
        let table = &cx.settings.history_table;
        let (states, unreachable) =
            fleet::observe_partial(&cx.servers, &self.client, &self.tenants, table, None).await?;
        let mut dry = dryrun::plan(
            &self.tenants,
            &states,
            &unreachable,
            &self.set,
            &cx.settings,
            change,
            self.unprovisioned,
        );
        if matches!(change, SchemaChange::Recreate) {
            dryrun::refuse_blocked_recreates(&cx.servers, &mut self.client, &mut dry).await?;
        }
        if let (SchemaChange::Upgrade { target, .. }, Some(set), Some(shared)) =
            (change, &self.shared, &cx.settings.shared)
        {
            if let Some(to) = crate::app::shared::target_for(&self.set, target, set) {
                let first = SchemaChange::Upgrade {
                    target: crate::engine::target::Target::Version(to),
                    provision: true,
                };
                dry.shared =
                    crate::app::shared::plan_shared(cx, shared, set, first, &self.servers).await?;
            }
        }
        Ok(dry)
    }

    /// The selected tenants that record versions above `version`: what a stamp to it
    /// forgets. Tenants of a server that cannot be reached are not among them (they fail
    /// in the run).
    pub async fn recording_above(&self, cx: &Context, version: i32) -> Result<Vec<Tenant>, Error> {
        let table = &cx.settings.history_table;
        let (states, _) =
            fleet::observe_partial(&cx.servers, &self.client, &self.tenants, table, None).await?;
        Ok(self
            .tenants
            .iter()
            .filter(|t| {
                states
                    .get(&t.schema_name)
                    .and_then(|s| s.history.as_ref().ok())
                    .is_some_and(|h| h.iter().any(|r| r.version > version))
            })
            .cloned()
            .collect())
    }

    /// Runs `change` on the selected tenants as one bulk run (a new run id unless `run_id`
    /// names one), its events sent to `events`. An upgrade answers the tenants already at
    /// the target from one observation, without a session. The tenants are handed to the
    /// run; the connection stays for what the face does after it.
    pub async fn run(
        &mut self,
        cx: &Context,
        change: SchemaChange,
        run_id: Option<&str>,
        opts: &RunOptions,
        events: &Events,
    ) -> Result<RunReport, Error> {
        // An upgrade brings the shared schema of each server it touches to what its
        // target needs (for head, the shared head) first.
        let shared = match (change, &self.shared) {
            (SchemaChange::Upgrade { target, .. }, Some(set)) => {
                let to = crate::app::shared::target_for(&self.set, target, set);
                crate::app::shared::upgrade_first(cx, &self.servers, to, events).await?
            }
            _ => Vec::new(),
        };
        let registry = Registry::open(&self.client, &cx.settings.registry_schema).await?;
        let tenants = std::mem::take(&mut self.tenants);
        let planned = match change {
            SchemaChange::Upgrade { target, .. } => {
                fleet::plan_upgrade(
                    &cx.servers,
                    &self.client,
                    &registry,
                    tenants,
                    &self.set,
                    target,
                    self.unprovisioned,
                    &cx.settings.history_table,
                )
                .await?
            }
            _ => tenants.into_iter().map(Planned::Work).collect(),
        };
        // run.max_rewrite_bytes: tenants a pending statement would rewrite a table too
        // big in are skipped, measured before any tenant starts.
        let planned = match (change, cx.settings.max_rewrite_bytes) {
            (SchemaChange::Upgrade { target, .. }, Some(limit)) => {
                crate::app::impact::guard(cx, &self.set, &target, planned, limit).await?
            }
            _ => planned,
        };
        let op = Change {
            change,
            set: &self.set,
            unprovisioned: self.unprovisioned,
        };
        let fleet = cx.fleet(&self.client, &registry);
        let mut report = match run_id {
            Some(id) => fleet.run_as(id, &op, planned, opts, events).await,
            None => fleet.run(&op, planned, opts, events).await,
        }?;
        report.shared = shared;
        Ok(report)
    }

    /// Runs `op` (a backup, say) on every selected tenant as one bulk run with a new id
    /// (see [`Fleet::run`]).
    pub async fn run_op(
        &mut self,
        cx: &Context,
        op: &impl Operation,
        opts: &RunOptions,
        events: &Events,
    ) -> Result<RunReport, Error> {
        let registry = Registry::open(&self.client, &cx.settings.registry_schema).await?;
        let planned = std::mem::take(&mut self.tenants)
            .into_iter()
            .map(Planned::Work)
            .collect();
        cx.fleet(&self.client, &registry)
            .run(op, planned, opts, events)
            .await
    }
}

impl Context {
    /// A run over the fleet from this context, on the action's `client` and `registry`.
    pub fn fleet<'a>(&'a self, client: &'a Client, registry: &'a Registry<'a>) -> Fleet<'a> {
        Fleet {
            target: &self.target,
            servers: &self.servers,
            settings: &self.settings,
            client,
            registry,
            interrupt: &self.interrupt,
        }
    }
}
