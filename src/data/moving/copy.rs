//! What both ways of copying a tenant share with the move's protocol ([`super`]): the
//! write fence on the source ([`fence_source`]) and what a finished copy hands back
//! ([`Copied`]). The protocol uses the copies; the copies use only this.

use std::time::Instant;

use crate::data::{catalog, export, fence};
use crate::engine::tenant::Context;
use crate::error::Error;
use crate::pg::db::Client;
use crate::registry::Tenant;

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
