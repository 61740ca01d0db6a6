//! `tenant move --to SERVER`: copying a tenant to another server under a write fence and
//! switching the registry to it (README "Moving a tenant between servers").
//!
//! The protocol, and what an application sees at each step:
//! 1. A journal row (`tenant_moves`, phase `copying`) is written in the registry.
//! 2. On the source, in one transaction under the tenant's lock, every table is locked
//!    `EXCLUSIVE`: writes wait, reads go on. The snapshot is taken after the locks, so
//!    it holds every write that will ever reach this copy.
//! 3. The target schema is built by the migrations to the source's revision and the
//!    rows are streamed in (an export piped into a load, no file), in one transaction.
//! 4. The registry points the tenant at the target and the journal says `switched`, in
//!    one statement. From here the application, which re-reads the tenant's server on a
//!    connection error or per request, goes to the target.
//! 5. Still in the source transaction, the old schema is fenced: renamed (with
//!    `--keep-source`) or dropped (renamed instead when sessions reading it hold the
//!    drop back past its wait). Writers that were waiting now get an error (their table
//!    no longer exists under its name) instead of writing into a dead copy. The commit
//!    ends the write block.
//! 6. The journal row is deleted.
//!
//! A kill at any step leaves a state a rerun finishes or undoes: before step 4 the
//! source is untouched and still registered (the rerun drops the target's partial copy
//! and starts again); after it the target is registered and complete (the rerun fences
//! the source if that had not committed). There are never two registered copies and
//! never none.

use std::time::Instant;

use crate::db::Client;
use serde::Serialize;
use time::OffsetDateTime;

use crate::data::{self, export, load, stream};
use crate::error::Error;
use crate::ident::quote;
use crate::migrations::MigrationSet;
use crate::registry::{Event, MoveJournal, Registry, Tenant};
use crate::scheduler;
use crate::tenants::{self, Context};

/// What a move did.
#[derive(Debug, Serialize)]
pub struct Moved {
    /// The tenant's domain.
    pub tenant: String,
    /// The server it was on.
    pub from_server: String,
    /// The server it is on now.
    pub to_server: String,
    /// Tables copied.
    pub tables: usize,
    /// Rows copied; `null` for an online move, which does not count them (counting
    /// would lengthen the write block).
    pub rows: Option<u64>,
    /// How long the tenant's writes were blocked on the source (from the write locks to
    /// the commit that fenced the old copy).
    pub write_block_ms: u64,
    /// How long the whole move took.
    pub duration_ms: u64,
    /// Whether the old copy was kept (renamed) rather than dropped.
    pub source_kept: bool,
    /// An online move: how long the target took to copy and catch up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catchup_ms: Option<u64>,
    /// One sentence.
    pub message: String,
}

/// What a move would do, checked without changing anything.
#[derive(Debug, Serialize)]
pub struct MovePlan {
    /// Always true.
    pub dry_run: bool,
    /// The tenant's domain.
    pub tenant: String,
    /// The server it is on.
    pub from_server: String,
    /// The server it would go to.
    pub to_server: String,
    /// Whether an interrupted move would be finished or undone first.
    pub unfinished: Option<String>,
    /// Whether finishing or undoing that interrupted move is all the command would do.
    #[serde(skip)]
    pub settles_unfinished: bool,
    /// One sentence.
    pub message: String,
}

/// The name the old copy is kept under: `SCHEMA$moved_UNIXTIME`, at most 63 bytes ('$'
/// is in no tenant's schema name, so it never collides with a tenant's).
pub(crate) fn kept_name(schema: &str) -> String {
    let stamp = OffsetDateTime::now_utc().unix_timestamp();
    super::beside(schema, &format!("$moved_{stamp}"))
}

/// Checks what a move of `tenant` to `to` needs, changing nothing; the refusals are the
/// move's own.
pub async fn plan(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    to: &str,
    keep_source: bool,
) -> Result<MovePlan, Error> {
    cx.servers.get(to)?;
    let journal = registry.move_journal(tenant.id).await?;
    let unfinished = journal
        .as_ref()
        .map(|j| describe_unfinished(j, &tenant.domain));
    // Moving a tenant with an unswitched move to the server it is on undoes that move.
    let undo_only = journal
        .as_ref()
        .is_some_and(|j| j.phase != "switched" && to == tenant.server);
    if journal.as_ref().is_none_or(|j| j.phase != "switched") && !undo_only {
        preflight(cx, tenant, to, journal.as_ref()).await?;
    }
    let message = match (&journal, &unfinished) {
        (Some(j), Some(u)) if j.phase == "switched" && j.to_server == to => {
            format!("would finish: {u}")
        }
        (Some(j), Some(u)) if j.phase == "switched" => format!(
            "would finish: {u}; the tenant would then be on server {}, not {to} (run the move again for that)",
            j.to_server
        ),
        (Some(_), Some(u)) if undo_only => format!("would undo: {u}; the tenant stays on server {to}"),
        (_, u) => format!(
            "{}would copy tenant {} from server {} to server {to} under a write fence, switch the registry, then {} the old copy; nothing was changed",
            u.as_ref().map(|u| format!("{u}; then ")).unwrap_or_default(),
            tenant.domain,
            tenant.server,
            if keep_source { "rename" } else { "drop" }
        ),
    };
    Ok(MovePlan {
        dry_run: true,
        tenant: tenant.domain.clone(),
        from_server: tenant.server.clone(),
        to_server: to.to_string(),
        unfinished,
        settles_unfinished: undo_only || journal.as_ref().is_some_and(|j| j.phase == "switched"),
        message,
    })
}

fn describe_unfinished(j: &MoveJournal, domain: &str) -> String {
    if j.phase == "switched" {
        format!(
            "an interrupted move of tenant {domain} from server {} to server {} switched the registry; its old copy on {} is fenced now",
            j.from_server, j.to_server, j.from_server
        )
    } else {
        format!(
            "an interrupted move of tenant {domain} from server {} to server {} did not switch the registry; its partial copy on {} is dropped first",
            j.from_server, j.to_server, j.to_server
        )
    }
}

/// The checks before anything is written: the servers differ and answer, the target
/// does not hold the schema (unless it is this tenant's own partial copy from an
/// interrupted move), and nothing outside the source schema depends on it when it is
/// to be dropped.
pub(crate) async fn preflight(
    cx: &Context<'_>,
    tenant: &Tenant,
    to: &str,
    journal: Option<&MoveJournal>,
) -> Result<(), Error> {
    if tenant.server == to {
        return Err(Error::usage(format!(
            "tenant {} is already on server {to}",
            tenant.domain
        )));
    }
    let schema = &tenant.schema_name;
    let mut source = cx.servers.target(&tenant.server)?.connect().await?;
    let target = cx.servers.target(to)?.connect().await?;
    let ours = journal.is_some_and(|j| j.to_server == to && j.phase == "copying");
    if !ours && crate::dependents::contents(&*target, schema).await?.exists {
        return Err(Error::refused(format!(
            "schema {} already exists on server {to}; a tenant's copy cannot go there; nothing was changed",
            quote(schema)
        )));
    }
    let boundary = crate::dependents::inspect(&mut source, schema).await?;
    if !boundary.contents.exists {
        return Err(Error::failed(format!(
            "tenant {}'s schema {} does not exist on server {}; there is nothing to move",
            tenant.domain,
            quote(schema),
            tenant.server
        )));
    }
    // An interrupted online move's publication still lists the tables; the move drops
    // it before anything else, so it does not count.
    let leftover = journal.map(|_| super::online::replication_name(tenant.id));
    let outside: Vec<_> = boundary
        .outside
        .into_iter()
        .filter(|d| !leftover.as_deref().is_some_and(|n| names(&d.object, n)))
        .collect();
    // Whether dropped or kept renamed, objects outside the schema would go on reading
    // and writing the old copy (a rename carries them along).
    if !outside.is_empty() {
        return Err(Error::refused(crate::plan::data_blocked(
            schema, &outside, "move",
        )));
    }
    Ok(())
}

/// Whether the object description `object` names `name` as a whole word.
fn names(object: &str, name: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    object.match_indices(name).any(|(at, _)| {
        !object[..at].ends_with(word) && !object[at + name.len()..].starts_with(word)
    })
}

/// Moves `tenant` to server `to`, finishing or undoing an interrupted move of it first.
pub async fn move_to(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    to: &str,
    keep_source: bool,
    set: &MigrationSet,
) -> Result<Moved, Error> {
    let started = Instant::now();
    cx.servers.get(to)?;
    if let Some(settled) = recover(cx, registry, tenant, to, started).await? {
        return Ok(settled);
    }
    preflight(cx, tenant, to, None).await?;
    let journal = MoveJournal {
        from_server: tenant.server.clone(),
        to_server: to.to_string(),
        schema_name: tenant.schema_name.clone(),
        keep_source,
        phase: "copying".into(),
    };
    registry.begin_move(tenant.id, &journal).await?;
    let moved = copy_and_switch(cx, registry, tenant, &journal, set, started).await;
    match moved {
        Ok(m) => Ok(m),
        Err((e, switched)) => {
            if switched {
                return Err(e);
            }
            // Not switched: the source is untouched; remove the partial copy.
            let undone = match undo_copy(cx, &journal).await {
                Ok(()) => registry.end_move(tenant.id).await,
                Err(u) => Err(u),
            };
            Err(match undone {
                Ok(()) => Error::new(
                    e.kind(),
                    format!(
                        "{e}; the move was undone: tenant {} stays on server {} as it was",
                        tenant.domain, tenant.server
                    ),
                ),
                Err(u) => Error::new(
                    e.kind(),
                    format!(
                        "{e}; undoing the move failed too ({u}): the tenant is still registered on server {} and intact there; run the same `tenant move` again to clean up and retry",
                        tenant.server
                    ),
                ),
            })
        }
    }
}

/// Deals with an interrupted move of `tenant` before a move to `to` starts: removes
/// replication leftovers of an online move; finishes a move whose registry switch
/// committed (an error when it went elsewhere than `to`: the tenant is not moved on in
/// the same command); undoes one that had not switched. `Some` when that settles the
/// command: the finished move, or an undo asked for by moving the tenant to the server
/// it is on.
pub(crate) async fn recover(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    to: &str,
    started: Instant,
) -> Result<Option<Moved>, Error> {
    let Some(j) = registry.move_journal(tenant.id).await? else {
        return Ok(None);
    };
    super::online::cleanup(cx, &j, tenant.id).await?;
    if j.phase == "switched" {
        let finished = finish_switched(cx, registry, tenant, &j, started).await?;
        if j.to_server == to {
            return Ok(Some(finished));
        }
        return Err(Error::failed(format!(
            "{}; tenant {} was not moved on to server {to}: run the command again for that",
            finished.message, tenant.domain
        )));
    }
    undo_copy(cx, &j).await?;
    registry.end_move(tenant.id).await?;
    if to != tenant.server {
        return Ok(None);
    }
    Ok(Some(Moved {
        tenant: tenant.domain.clone(),
        from_server: tenant.server.clone(),
        to_server: tenant.server.clone(),
        tables: 0,
        rows: Some(0),
        write_block_ms: 0,
        duration_ms: started.elapsed().as_millis() as u64,
        source_kept: true,
        catchup_ms: None,
        message: format!(
            "undid the interrupted move of tenant {} to server {}: its partial copy there was dropped, and the tenant stays on server {} as it was",
            tenant.domain, j.to_server, tenant.server
        ),
    }))
}

/// Drops the target's partial copy of an interrupted move.
pub(crate) async fn undo_copy(cx: &Context<'_>, j: &MoveJournal) -> Result<(), Error> {
    let target = cx.servers.target(&j.to_server)?.connect().await?;
    target
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote(&j.schema_name)
        ))
        .await
        .map_err(crate::db::query_error(&format!(
            "dropping the partial copy of schema {} on server {}",
            quote(&j.schema_name),
            j.to_server
        )))
}

/// Steps 2 to 6. The error says whether the registry was switched.
async fn copy_and_switch(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    journal: &MoveJournal,
    set: &MigrationSet,
    started: Instant,
) -> Result<Moved, (Error, bool)> {
    let started_at = OffsetDateTime::now_utc();
    let not_switched = |e: Error| (e, false);
    let (source_pool, source) = tenants::locked(cx, tenant).await.map_err(not_switched)?;
    let result = async {
        let history = data::readable_history(&source, tenant)
            .await
            .map_err(not_switched)?;
        let revision =
            data::check_history(&history, set, &format!("of tenant {}", tenant.domain))
                .map_err(not_switched)?;
        let client = source.client();
        let schema = &tenant.schema_name;
        // The target is built before the fence: the source's revision cannot change while
        // its lock is held, and the write block covers only the rows' copy.
        let (target_pool, mut target) =
            tenants::locked_schema(cx, &journal.to_server, schema, &tenant.domain)
                .await
                .map_err(not_switched)?;
        let copied = async {
            data::build_to(&mut target, schema, revision, set).await?;
            let catalog = export::begin(
                client,
                schema,
                &cx.settings.history_table,
                export::Snapshot::Fenced,
            )
            .await?;
            let fenced_at = Instant::now();
            let loaded = copy(
                tenant,
                client,
                target.client(),
                catalog,
                &history,
                &cx.settings.history_table,
            )
            .await;
            if loaded.is_err() {
                let _ = client.batch_execute("ROLLBACK").await;
            }
            loaded.map(|l| (l, fenced_at))
        }
        .await;
        target.close(&target_pool).await;
        let (loaded, fenced_at) = copied.map_err(not_switched)?;
        let run_id = scheduler::new_run_id().map_err(not_switched)?;
        let host = scheduler::client_host();
        let event = Event {
            run_id: &run_id,
            action: "move",
            from_revision: tenant.current_revision,
            started_at,
            client_host: &host,
        };
        // Something outside the schema that came to depend on it during the copy would
        // go on using the old copy: the move is undone instead.
        if let Err(e) = refuse_dependents(client, schema).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err((e, false));
        }
        if let Err(e) = registry.switch_server(tenant.id, journal, &event).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err((e, false));
        }
        let fenced = match fence(client, schema, journal.keep_source).await {
            Ok(kept) => client.batch_execute("COMMIT").await.map(|()| kept),
            Err(e) => Err(e),
        };
        let kept = match fenced {
            Ok(kept) => kept,
            Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            let e = crate::db::query_error(&format!(
                "fencing the old copy of schema {} on server {}",
                quote(schema),
                journal.from_server
            ))(e);
                return Err((
                    Error::new(
                        e.kind(),
                        format!(
                            "tenant {} now lives on server {} (the registry was switched), but {e}; run the same `tenant move` again to fence the old copy",
                            tenant.domain, journal.to_server
                        ),
                    ),
                    true,
                ));
            }
        };
        let write_block_ms = fenced_at.elapsed().as_millis() as u64;
        registry.end_move(tenant.id).await.map_err(|e| (e, true))?;
        Ok((loaded, write_block_ms, kept))
    }
    .await;
    source.close(&source_pool).await;
    let (loaded, write_block_ms, kept) = result?;
    let message = format!(
        "tenant {} moved from server {} to server {}: {} rows in {} tables, writes blocked for {write_block_ms} ms; the old copy was {}",
        tenant.domain,
        journal.from_server,
        journal.to_server,
        loaded.rows,
        loaded.tables,
        match &kept {
            Some(k) if journal.keep_source => format!("renamed to {}", quote(k)),
            Some(k) => format!(
                "renamed to {} instead of dropped, as sessions were reading it; drop it once they are done",
                quote(k)
            ),
            None => "dropped".to_string(),
        }
    );
    Ok(Moved {
        tenant: tenant.domain.clone(),
        from_server: journal.from_server.clone(),
        to_server: journal.to_server.clone(),
        tables: loaded.tables,
        rows: Some(loaded.rows),
        write_block_ms,
        duration_ms: started.elapsed().as_millis() as u64,
        source_kept: kept.is_some(),
        catchup_ms: None,
        message,
    })
}

/// Refuses, in the source's transaction, when objects outside `schema` depend on it.
pub(crate) async fn refuse_dependents(client: &Client, schema: &str) -> Result<(), Error> {
    let blocking = crate::dependents::outside(&**client, schema).await?;
    if blocking.is_empty() {
        return Ok(());
    }
    Err(Error::refused(crate::plan::data_blocked(
        schema, &blocking, "move",
    )))
}

/// The SQL that fences the old copy: a rename to `kept`, or a drop.
pub(crate) fn fence_sql(schema: &str, kept: Option<&str>) -> String {
    match kept {
        Some(k) => format!("ALTER SCHEMA {} RENAME TO {}", quote(schema), quote(k)),
        None => crate::plan::guarded_drop(&format!("DROP SCHEMA {} CASCADE", quote(schema))),
    }
}

/// Fences the old copy inside the transaction open on `client`: renames it (with
/// `keep_source`) or drops it. The drop needs every table's strongest lock, which a
/// session reading the old copy (an open transaction) holds back; when it cannot have
/// them within the drop's wait, the copy is renamed instead (a rename waits for no
/// reader), so the fence never fails for a reader and the writers held back by the copy
/// never reach the old copy. Returns the name the old copy was kept under.
pub(crate) async fn fence(
    client: &Client,
    schema: &str,
    keep_source: bool,
) -> Result<Option<String>, tokio_postgres::Error> {
    // Something outside the schema that came to depend on it during the copy would go
    // with a drop: the copy is kept, renamed, instead.
    let blocking = match crate::dependents::outside(&**client, schema).await {
        Ok(b) => !b.is_empty(),
        Err(_) => true,
    };
    if keep_source || blocking {
        let kept = kept_name(schema);
        client
            .batch_execute(&fence_sql(schema, Some(&kept)))
            .await?;
        return Ok(Some(kept));
    }
    let dropped = client
        .batch_execute(&format!("SAVEPOINT fence; {}", fence_sql(schema, None)))
        .await;
    match dropped {
        Ok(()) => Ok(None),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            let kept = kept_name(schema);
            client
                .batch_execute(&format!(
                    "ROLLBACK TO SAVEPOINT fence; {}",
                    fence_sql(schema, Some(&kept))
                ))
                .await?;
            Ok(Some(kept))
        }
        Err(e) => Err(e),
    }
}

/// Streams the source's snapshot into the schema the migrations built on the target.
async fn copy(
    tenant: &Tenant,
    client: &Client,
    target: &Client,
    catalog: data::catalog::Catalog,
    history: &[crate::migrations::AppliedRow],
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
        load::check_built(target, &tenant.schema_name, history_table, &source.manifest).await?;
        load::load(target, &tenant.schema_name, &mut source).await
    };
    let (exported, imported) = tokio::join!(exporting, importing);
    match (exported, imported) {
        (Ok(()), Ok(l)) => Ok(l),
        (Err(e), Err(i)) if i.kind() == crate::error::ErrorKind::Invalid => Err(e),
        (_, Err(i)) => Err(i),
        (Err(e), Ok(_)) => Err(e),
    }
}

/// Finishes a move whose registry switch committed: fences the old copy if it is still
/// there, and closes the journal.
pub(crate) async fn finish_switched(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    j: &MoveJournal,
    started: Instant,
) -> Result<Moved, Error> {
    let source = cx.servers.target(&j.from_server)?.connect().await?;
    let exists = crate::dependents::contents(&*source, &j.schema_name)
        .await?
        .exists;
    let mut kept = None;
    if exists {
        source
            .batch_execute("BEGIN")
            .await
            .map_err(crate::db::query_error("starting the fence"))?;
        let fenced = match fence(&source, &j.schema_name, j.keep_source).await {
            Ok(k) => source.batch_execute("COMMIT").await.map(|()| k),
            Err(e) => Err(e),
        };
        kept = match fenced {
            Ok(k) => k,
            Err(e) => {
                let _ = source.batch_execute("ROLLBACK").await;
                return Err(crate::db::query_error(&format!(
                    "fencing the old copy of schema {} on server {}",
                    quote(&j.schema_name),
                    j.from_server
                ))(e));
            }
        };
    }
    registry.end_move(tenant.id).await?;
    let message = format!(
        "finished the interrupted move of tenant {} from server {} to server {}: {}",
        tenant.domain,
        j.from_server,
        j.to_server,
        match (&kept, exists) {
            (Some(k), _) if j.keep_source => format!("the old copy was renamed to {}", quote(k)),
            (Some(k), _) => format!(
                "the old copy was renamed to {} instead of dropped, as sessions were reading it; drop it once they are done",
                quote(k)
            ),
            (None, true) => "the old copy was dropped".to_string(),
            (None, false) => "the old copy had already been fenced".to_string(),
        }
    );
    Ok(Moved {
        tenant: tenant.domain.clone(),
        from_server: j.from_server.clone(),
        to_server: j.to_server.clone(),
        tables: 0,
        rows: Some(0),
        write_block_ms: 0,
        duration_ms: started.elapsed().as_millis() as u64,
        source_kept: j.keep_source || kept.is_some(),
        catchup_ms: None,
        message,
    })
}
