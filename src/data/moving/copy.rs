//! What both ways of copying a tenant share with the move's protocol ([`super`]): the
//! [`Copier`] a way of copying is to the protocol, which plugs it in, how a copy begins
//! ([`begin`]: the source's history checked, the target's schema locked), the write fence
//! on the source ([`fence_source`]) and what a finished copy hands back ([`Copied`]). The
//! protocol uses the copies through [`Copier`]; the copies use only this.

use std::time::Instant;

use crate::data::{self, catalog, export, fence};
use crate::engine::pool::Pool;
use crate::engine::runner::Session;
use crate::engine::tenant::Context;
use crate::error::{Error, ErrorKind};
use crate::files::migrations::{AppliedRow, MigrationSet};
use crate::pg::db::Client;
use crate::registry::MoveJournal;
use crate::registry::Tenant;

/// A way of copying a tenant, plugged into the move's protocol: the offline copy
/// ([`super::offline::Offline`]) and logical replication ([`super::online::Online`]).
/// The protocol claims the journal, holds the locks, switches the registry, cleans up and
/// settles a rerun; a copier does step 2 and what only it knows.
pub(crate) trait Copier: Sync {
    /// The move's action in the run ledger.
    fn action(&self) -> &'static str;

    /// What this way of copying refuses before anything is created (the preflight the
    /// protocol runs for every move comes after).
    async fn check(&self, _cx: &Context<'_>, _tenant: &Tenant, _to: &str) -> Result<(), Error> {
        Ok(())
    }

    /// What this way of copying refuses whatever an unfinished move of the tenant left,
    /// checked before that move is settled, so a refusal leaves it as it is.
    async fn check_unsettled(
        &self,
        _cx: &Context<'_>,
        _tenant: &Tenant,
        _to: &str,
    ) -> Result<(), Error> {
        Ok(())
    }

    /// Step 2: the target built and filled, the source's transaction left open on
    /// `session` with its tables fenced. Its error says nothing was switched.
    async fn copy(
        &self,
        cx: &Context<'_>,
        tenant: &Tenant,
        journal: &MoveJournal,
        set: &MigrationSet,
        session: &Session<'_>,
    ) -> Result<Copied, Error>;

    /// What only this copy leaves to remove once the registry is switched.
    async fn after_switch(
        &self,
        _cx: &Context<'_>,
        _journal: &MoveJournal,
        _tenant_id: i64,
    ) -> Result<(), Error> {
        Ok(())
    }

    /// The sentence a finished move is reported with.
    fn moved(
        &self,
        tenant: &Tenant,
        journal: &MoveJournal,
        copied: &Copied,
        write_block_ms: u64,
        old_copy: &str,
    ) -> String;
}

/// What step 2 hands to the rest of the protocol: the source session's transaction is
/// open with the tables fenced, and the target's copy is complete and committed.
pub(crate) struct Copied {
    /// Tables copied.
    pub tables: usize,
    /// Rows copied, when counted.
    pub rows: Option<u64>,
    /// When the source's writes were blocked.
    pub fenced_at: Instant,
    /// An online move's copy and catch-up.
    pub catchup_ms: Option<u64>,
}

/// Locks the source's tables against writes in a snapshot transaction opened on
/// `client`, the tenant's locked session on its server (the write fence, [`fence`]):
/// the catalog as that snapshot sees it, and when the writes began to wait (the fence's
/// successful try began asking for its locks).
pub(crate) async fn fence_source(
    cx: &Context<'_>,
    tenant: &Tenant,
    client: &Client,
) -> Result<(catalog::Catalog, Instant), Error> {
    let server = cx.servers.target(&tenant.server)?;
    let watch = fence::Watch::open(server, client, cx.interrupt, cx.settings).await?;
    let (catalog, taken) = export::fenced(
        client,
        &tenant.schema_name,
        &cx.settings.history_table,
        &watch,
    )
    .await?;
    Ok((catalog, taken.started))
}

/// What both copies begin with, before anything is built.
pub(crate) struct Start<'a> {
    /// The source's history, as its locked session reads it.
    pub history: Vec<AppliedRow>,
    /// The source's revision, checked against the migration files.
    pub revision: Option<i32>,
    /// The target's pool, closed when the copy is done.
    pub target_pool: Pool,
    /// The target schema's locked session on the target server (the schema not built).
    pub target: Session<'a>,
}

/// Reads the source's history in `session` (its locked session), checks it against
/// `set`, and locks the tenant's schema name on the journal's target server.
pub(crate) async fn begin<'a>(
    cx: &Context<'a>,
    tenant: &'a Tenant,
    journal: &MoveJournal,
    set: &MigrationSet,
    session: &Session<'_>,
) -> Result<Start<'a>, Error> {
    let history = data::readable_history(session, tenant).await?;
    let revision = data::check_history(&history, set, &format!("of tenant {}", tenant.domain))?;
    let (target_pool, target) = crate::engine::tenant::locked_schema(
        cx,
        &journal.to_server,
        &tenant.schema_name,
        &tenant.domain,
    )
    .await?;
    Ok(Start {
        history,
        revision,
        target_pool,
        target,
    })
}

/// An interruption error when a stop was asked for: the move is then undone.
pub(crate) fn stop_requested(cx: &Context<'_>) -> Result<(), Error> {
    if cx.interrupt.requested() {
        return Err(Error::new(
            ErrorKind::Interrupted,
            "interrupted: the move was stopped before its old copy was fenced",
        ));
    }
    Ok(())
}
