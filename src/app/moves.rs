//! `tenant move` as an action, for both faces: to another configured server (the move's
//! protocol, [`crate::data::moving`], copying offline or by logical replication) or, on a
//! Citus cluster, to another worker ([`crate::app::citus::move_schema`]). [`prepare`]
//! finds the tenant; a move between servers is then checked ([`MoveStart::plan`], which
//! a face shows in its question or as a dry run) and run ([`MoveStart::to_server`]).

use crate::app::citus::{self, NodeAddr};
use crate::app::context::Context;
pub use crate::data::moving::Destination;
use crate::data::moving::{self, MovePlan, Moved};
use crate::engine::scheduler::Events;
use crate::error::Error;
use crate::pg::db::Client;
use crate::registry::{Registry, Tenant};

/// A move's tenant, found through the action's registry connection.
pub struct MoveStart {
    /// The action's registry connection.
    pub client: Client,
    /// The tenant, as the registry had it when found.
    pub tenant: Tenant,
}

/// Finds the tenant `reference` names (its domain or id).
pub async fn prepare(cx: &Context, reference: &str) -> Result<MoveStart, Error> {
    let client = cx.connect().await?;
    let tenant = Registry::open(&client, &cx.settings.registry_schema)
        .await?
        .find(reference)
        .await?;
    Ok(MoveStart { client, tenant })
}

impl MoveStart {
    /// What moving to `dest.to` would do, checked as the move checks it (an interrupted
    /// move of the tenant, its history, the target's schema name, and for an online move
    /// what replication needs); `dry_run` also tries the build on the target, rolled back.
    /// Nothing is changed. `then_fails` says the command would finish an interrupted move
    /// elsewhere and then fail.
    pub async fn plan(
        &self,
        cx: &Context,
        events: &Events,
        dest: &Destination,
        dry_run: bool,
    ) -> Result<MovePlan, Error> {
        cx.servers.get(&dest.to)?;
        let set = cx.migrations()?;
        let registry = Registry::open(&self.client, &cx.settings.registry_schema).await?;
        let one = cx.one_tenant(events);
        moving::plan(&one, &registry, &self.tenant, dest, &set, dry_run).await
    }

    /// Moves the tenant to `dest.to`, finishing or undoing an interrupted move of it first.
    pub async fn to_server(
        &self,
        cx: &Context,
        events: &Events,
        dest: &Destination,
    ) -> Result<Moved, Error> {
        cx.servers.get(&dest.to)?;
        let set = cx.migrations()?;
        let registry = Registry::open(&self.client, &cx.settings.registry_schema).await?;
        moving::move_to(&cx.one_tenant(events), &registry, &self.tenant, dest, &set).await
    }

    /// Moves the tenant's distributed schema to the Citus worker `node`.
    pub async fn to_node(
        &self,
        cx: &Context,
        events: &Events,
        node: &NodeAddr,
    ) -> Result<citus::Moved, Error> {
        let registry = Registry::open(&self.client, &cx.settings.registry_schema).await?;
        citus::move_schema(&cx.one_tenant(events), &registry, &self.tenant, node).await
    }
}
