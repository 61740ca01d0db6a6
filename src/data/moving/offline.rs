//! The offline way to copy a tenant for a move ([`super`]): the target built by the
//! migrations, then the source's snapshot streamed into it (an archive's stream, exported
//! and loaded at once) under the write fence, for the whole copy.

use super::copy;
use crate::data::{self, export, load, stream};
use crate::engine::runner::Session;
use crate::engine::tenant::Context;
use crate::error::{Error, ErrorKind};
use crate::files::migrations::MigrationSet;
use crate::pg::db::Client;
use crate::registry::{MoveJournal, Tenant};

/// The offline copy, as the protocol plugs it in. Its step 2: the target built by the
/// migrations, then the source's snapshot under the write fence streamed into it and
/// committed there.
pub(crate) struct Offline;

impl copy::Copier for Offline {
    fn action(&self) -> &'static str {
        "move"
    }

    async fn copy(
        &self,
        cx: &Context<'_>,
        tenant: &Tenant,
        journal: &MoveJournal,
        set: &MigrationSet,
        session: &Session<'_>,
    ) -> Result<copy::Copied, Error> {
        // The target is built before the fence: the source's revision cannot change while
        // its lock is held, and the write block covers only the rows' copy.
        let copy::Start {
            history,
            revision,
            target_pool,
            mut target,
        } = copy::begin(cx, tenant, journal, set, session).await?;
        let client = session.client();
        let schema = &tenant.schema_name;
        let copied = async {
            data::build_to(&mut target, schema, revision, set).await?;
            let differences = super::online::bound_alike(
                client,
                target.client(),
                schema,
                &cx.settings.history_table,
            )
            .await?;
            if !differences.is_empty() {
                return Err(super::online::differs(revision, &differences));
            }
            crate::failpoint!("move.target-built");
            copy::stop_requested(cx)?;
            crate::pg::db::notice_dead_client(target.client()).await;
            let (catalog, fenced_at) = copy::fence_source(cx, tenant, client).await?;
            crate::failpoint!("move.source-locked");
            let copying = copy(
                tenant,
                client,
                target.client(),
                catalog,
                &history,
                &cx.settings.history_table,
            );
            tokio::pin!(copying);
            let stop = cx.interrupt.stop_token();
            let loaded = tokio::select! {
                loaded = &mut copying => loaded?,
                () = stop.cancelled() => {
                    // Both ends' statements are cancelled on the server; the copy then ends
                    // with their errors, and the move is undone.
                    let _ = cx.servers.target(&tenant.server)?.canceller(client).cancel().await;
                    let _ = cx
                        .servers
                        .target(&journal.to_server)?
                        .canceller(target.client())
                        .cancel()
                        .await;
                    let _ = copying.await;
                    return Err(Error::new(
                        ErrorKind::Interrupted,
                        "interrupted while copying the tenant's rows",
                    ));
                }
            };
            crate::failpoint!("move.copied");
            Ok::<_, Error>(copy::Copied {
                tables: loaded.tables,
                rows: Some(loaded.rows),
                fenced_at,
                catchup_ms: None,
            })
        }
        .await;
        target.close(&target_pool).await;
        copied
    }

    fn moved(
        &self,
        tenant: &Tenant,
        journal: &MoveJournal,
        copied: &copy::Copied,
        write_block_ms: u64,
        old_copy: &str,
    ) -> String {
        format!(
            "tenant {} moved from server {} to server {}: {} rows in {} tables, writes blocked for {write_block_ms} ms; the old copy was {old_copy}",
            tenant.domain,
            journal.from_server,
            journal.to_server,
            copied.rows.unwrap_or(0),
            copied.tables,
        )
    }
}

/// Streams the source's snapshot into the schema the migrations built on the target.
async fn copy(
    tenant: &Tenant,
    client: &Client,
    target: &Client,
    catalog: data::catalog::Catalog,
    history: &[crate::files::migrations::AppliedRow],
    history_table: &str,
) -> Result<load::Loaded, Error> {
    let (w, r) = stream::pipe();
    let label = format!("of tenant {}", tenant.domain);
    let exporting = async move {
        export::write(client, tenant, catalog, history, Box::new(w), &label)
            .await
            .map(|_| ())
    };
    let importing = async {
        let mut source = stream::Source::open(Box::new(r), "streamed from the source").await?;
        let from = load::RowsFrom::MoveSource;
        load::check_built(
            target,
            &tenant.schema_name,
            history_table,
            &source.manifest,
            from,
        )
        .await?;
        load::load(target, &tenant.schema_name, &mut source).await
    };
    let (exported, imported) = tokio::join!(exporting, importing);
    match (exported, imported) {
        (Ok(()), Ok(l)) => Ok(l),
        (Err(e), Err(i)) if i.kind() == ErrorKind::Invalid => Err(e),
        (_, Err(i)) => Err(i),
        (Err(e), Ok(_)) => Err(e),
    }
}
