//! `tenant move --to SERVER --online`: moving a tenant with logical replication, so its
//! writes are blocked only for the cutover, whatever its size (README "Online move").
//!
//! 1. Preflight, refused (exit 3) before anything is created: the source is PostgreSQL
//!    15 or newer with `wal_level = logical`, replication slots and WAL senders are free
//!    for the move and for each table copied at once, the target has logical replication
//!    workers to spare, the roles may publish and subscribe, and every table has a
//!    primary key or a replica identity.
//! 2. Build: the target schema is built by the migrations to the source's revision and
//!    emptied; the source publishes the tenant's tables and the target subscribes with an
//!    initial copy. Publication, subscription and slot are all named
//!    `tenantctl_move_ID` (ID: the tenant's registry id), so a rerun finds leftovers.
//! 3. Catch up: until every table is synchronised (`pg_subscription_rel` ready) and the
//!    slot's lag is small; progress (bytes copied, lag) goes to the terminal.
//! 4. Cut over, as the offline move fences: the source tables are locked against writes,
//!    the target confirms it has received everything up to the source's WAL position
//!    (the subscription is then disabled), the sequences are set on the target, the
//!    registry is switched, and the old schema is fenced (renamed or dropped) in the
//!    transaction whose commit ends the write block.
//! 5. Clean up: subscription, slot and publication are removed on success, on failure,
//!    and by a rerun after a kill. A forgotten slot keeps WAL on the source forever, so
//!    the slot is dropped from the source's side even when the target is unreachable.

use std::time::{Duration, Instant};

use crate::db::Client;
use time::OffsetDateTime;

use crate::data::{self, catalog, export, moving};
use crate::db::query_error;
use crate::error::Error;
use crate::ident::{qualified, quote};
use crate::migrations::MigrationSet;
use crate::registry::{Event, MoveJournal, Registry, Tenant};
use crate::scheduler::{self, RunEvent};
use crate::tenants::{self, Context};

/// How often the catch-up is looked at.
const POLL: Duration = Duration::from_millis(200);

/// The slot lag (bytes of WAL) under which the cutover starts.
const CUTOVER_LAG: i64 = 16 * 1024 * 1024;

/// The longest the cutover waits, writes blocked, for the target to confirm it has
/// everything; past it the cutover is abandoned and the move undone.
const CUTOVER_WAIT: Duration = Duration::from_secs(10);

/// How a move's publication comment records its subscription's oid.
const SUBSCRIPTION_OID: &str = "tenantctl move; subscription oid ";

/// The name of a tenant's publication, subscription and replication slot.
pub fn replication_name(tenant_id: i64) -> String {
    format!("tenantctl_move_{tenant_id}")
}

/// Refuses (exit 3) what logical replication cannot do here, before anything is made.
async fn preflight(
    source: &Client,
    target: &Client,
    schema: &str,
    catalog: &catalog::Catalog,
) -> Result<(), Error> {
    let refuse = |why: String| {
        Error::setup(format!(
            "an online move cannot run: {why}; nothing was created (a move without --online copies under a write fence instead)"
        ))
    };
    let row = source
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('wal_level'), \
                    current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_catalog.pg_replication_slots)::int, \
                    current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_catalog.pg_stat_replication)::int, \
                    (SELECT rolsuper OR rolreplication FROM pg_catalog.pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await
        .map_err(query_error("checking the source server for logical replication"))?;
    let version: i32 = row.get(0);
    let wal_level: String = row.get(1);
    let free_slots: i32 = row.get(2);
    let free_senders: i32 = row.get(3);
    let may_replicate: bool = row.get::<_, Option<bool>>(4).unwrap_or(false);
    if version < 150000 {
        return Err(refuse(format!(
            "the source server runs PostgreSQL {}.{}; publishing a tenant's tables this way needs 15 or newer",
            version / 10000,
            version % 10000 / 100
        )));
    }
    if wal_level != "logical" {
        return Err(refuse(format!(
            "the source server has wal_level = {wal_level}; set wal_level = logical (a restart) first"
        )));
    }
    if !may_replicate {
        return Err(refuse(
            "the source role has neither REPLICATION nor superuser, so the target cannot stream from it (ALTER ROLE ... REPLICATION)".into(),
        ));
    }
    let row = target
        .query_one(
            "SELECT current_setting('max_logical_replication_workers')::int - (SELECT count(*) FROM pg_catalog.pg_stat_subscription)::int, \
                    (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) \
                    OR (current_setting('server_version_num')::int >= 160000 \
                        AND pg_catalog.pg_has_role(current_user, 'pg_create_subscription', 'MEMBER')), \
                    current_setting('max_sync_workers_per_subscription')::int",
            &[],
        )
        .await
        .map_err(query_error("checking the target server for logical replication"))?;
    let free_workers: i32 = row.get(0);
    let may_subscribe: bool = row.get::<_, Option<bool>>(1).unwrap_or(false);
    // The subscription's slot, plus one slot and one WAL sender for each table whose
    // initial copy runs at the same time (one per sync worker the target runs at once).
    let tables = i32::try_from(catalog.tables.len()).unwrap_or(i32::MAX);
    let needed = 1 + tables.min(row.get::<_, i32>(2).max(0));
    if free_slots < needed {
        return Err(refuse(format!(
            "the source server has {} free replication slot(s) and the move needs {needed}: one to stream from and one for each table copied at once (the target's max_sync_workers_per_subscription); raise max_replication_slots",
            free_slots.max(0)
        )));
    }
    if free_senders < needed {
        return Err(refuse(format!(
            "the source server has {} free WAL sender(s) and the move needs {needed}: one to stream from and one for each table copied at once (the target's max_sync_workers_per_subscription); raise max_wal_senders",
            free_senders.max(0)
        )));
    }
    if free_workers < 2 {
        return Err(refuse(
            "the target server has fewer than 2 free logical replication workers (raise max_logical_replication_workers and max_worker_processes)".into(),
        ));
    }
    if !may_subscribe {
        return Err(refuse(
            "the target role may not create subscriptions (superuser, or pg_create_subscription on PostgreSQL 16+)".into(),
        ));
    }
    let names: Vec<String> = catalog.tables.iter().map(|t| t.name.clone()).collect();
    let rows = source
        .query(
            "SELECT c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = ANY($2) AND NOT ( \
                 c.relreplident = 'f' \
                 OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)) \
                 OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))) \
             ORDER BY 1",
            &[&schema, &names],
        )
        .await
        .map_err(query_error("checking the tenant's tables for replica identities"))?;
    if !rows.is_empty() {
        let tables: Vec<String> = rows.iter().map(|r| quote(&r.get::<_, String>(0))).collect();
        return Err(refuse(format!(
            "table(s) {} of schema {} have neither a primary key nor a replica identity, so their updates and deletes cannot be replicated (add a primary key, or ALTER TABLE ... REPLICA IDENTITY FULL)",
            tables.join(", "),
            quote(schema)
        )));
    }
    Ok(())
}

/// Checks the prerequisites of an online move of `tenant` to `to` (exit 3 when one is
/// missing), creating nothing.
pub async fn check(cx: &Context<'_>, tenant: &Tenant, to: &str) -> Result<(), Error> {
    let source = cx.servers.target(&tenant.server)?.connect().await?;
    let target = cx.servers.target(to)?.connect().await?;
    let catalog = catalog::read(&source, &tenant.schema_name, &cx.settings.history_table).await?;
    preflight(&source, &target, &tenant.schema_name, &catalog).await
}

/// How `source`'s tables differ from what the target's schema holds (empty: the same).
async fn differ(
    source: &catalog::Catalog,
    target: &Client,
    schema: &str,
    history_table: &str,
) -> Result<Vec<String>, Error> {
    let built = catalog::read(target, schema, history_table).await?;
    let mut d = catalog::differences(&source.tables, &built.tables);
    for s in &source.sequences {
        if !built.sequences.contains(s) {
            d.push(format!("sequence {} is not on the target", quote(s)));
        }
    }
    for m in &source.materialized_views {
        if !built.materialized_views.contains(m) && !built.tables.iter().any(|t| &t.name == m) {
            // A view not populated on the target yet is refreshed after the move.
            let exists = target
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'm'",
                    &[&schema, m],
                )
                .await
                .map_err(query_error("reading the target's materialized views"))?
                .is_some();
            if !exists {
                d.push(format!(
                    "materialized view {} is not on the target",
                    quote(m)
                ));
            }
        }
    }
    Ok(d)
}

/// Removes a move's subscription (target), slot and publication (source), whichever
/// exist. The slot is dropped from the source even when the target cannot be reached.
pub async fn cleanup(cx: &Context<'_>, j: &MoveJournal, tenant_id: i64) -> Result<(), Error> {
    let name = replication_name(tenant_id);
    let mut problems = Vec::new();
    match cx.servers.target(&j.to_server)?.connect().await {
        Ok(target) => {
            if let Err(e) = drop_subscription(&target, &name).await {
                problems.push(e.to_string());
            }
        }
        Err(e) => problems.push(format!(
            "the target server {} could not be reached to drop subscription {name} (drop it there by hand: ALTER SUBSCRIPTION {name} DISABLE; ALTER SUBSCRIPTION {name} SET (slot_name = NONE); DROP SUBSCRIPTION {name}): {e}",
            j.to_server
        )),
    }
    let source = cx.servers.target(&j.from_server)?.connect().await?;
    drop_slot(&source, &name).await?;
    // The initial copy's own slots (`pg_OID_sync_...`), left when the target went away
    // during the copy.
    let recorded: Option<String> = source
        .query_opt(
            "SELECT pg_catalog.obj_description(oid, 'pg_publication') FROM pg_catalog.pg_publication WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(query_error("reading the move's publication"))?
        .and_then(|r| r.get(0));
    if let Some(oid) = recorded
        .as_deref()
        .and_then(|c| c.strip_prefix(SUBSCRIPTION_OID))
        .and_then(|o| o.parse::<u32>().ok())
    {
        let sync: Vec<String> = source
            .query(
                "SELECT slot_name::text FROM pg_catalog.pg_replication_slots WHERE slot_name LIKE $1",
                &[&format!("pg\\_{oid}\\_sync\\_%")],
            )
            .await
            .map_err(query_error("looking for the initial copy's slots"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for slot in sync {
            drop_slot(&source, &slot).await?;
        }
    }
    source
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote(&name)))
        .await
        .map_err(query_error("dropping the move's publication"))?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::failed(problems.join("; ")))
    }
}

async fn drop_subscription(target: &Client, name: &str) -> Result<(), Error> {
    let exists = target
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_subscription WHERE subname = $1",
            &[&name],
        )
        .await
        .map_err(query_error("looking for the move's subscription"))?
        .is_some();
    if exists {
        let n = quote(name);
        target
            .batch_execute(&format!(
                "ALTER SUBSCRIPTION {n} DISABLE; ALTER SUBSCRIPTION {n} SET (slot_name = NONE); DROP SUBSCRIPTION {n}"
            ))
            .await
            .map_err(query_error("dropping the move's subscription"))?;
    }
    Ok(())
}

/// Drops the slot, waiting (up to 10 s) for its WAL sender to let go of it.
async fn drop_slot(source: &Client, name: &str) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let row = source
            .query_opt(
                "SELECT active, active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await
            .map_err(query_error("looking for the move's replication slot"))?;
        let Some(row) = row else {
            return Ok(());
        };
        let active: bool = row.get(0);
        if !active {
            return source
                .execute("SELECT pg_catalog.pg_drop_replication_slot($1)", &[&name])
                .await
                .map(|_| ())
                .map_err(query_error("dropping the move's replication slot"));
        }
        if Instant::now() > deadline {
            // The subscriber still streams from it (its server could not be told to
            // stop): end that WAL sender so the slot can go.
            let pid: Option<i32> = row.get(1);
            if let Some(pid) = pid {
                let _ = source
                    .execute("SELECT pg_catalog.pg_terminate_backend($1)", &[&pid])
                    .await;
            }
        }
        if Instant::now() > deadline + Duration::from_secs(10) {
            return Err(Error::failed(format!(
                "replication slot {name} on the source is still in use; drop it with SELECT pg_drop_replication_slot('{name}') once its subscriber has stopped"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the catch-up saw last.
struct CatchUp {
    ready: i64,
    tables: i64,
    bytes: i64,
    lag: Option<i64>,
}

async fn look(
    source: &Client,
    target: &Client,
    name: &str,
    schema: &str,
) -> Result<CatchUp, Error> {
    let row = target
        .query_one(
            "SELECT (SELECT count(*) FILTER (WHERE r.srsubstate = 'r') FROM pg_catalog.pg_subscription_rel r \
                     JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid WHERE s.subname = $1), \
                    (SELECT count(*) FROM pg_catalog.pg_subscription_rel r \
                     JOIN pg_catalog.pg_subscription s ON s.oid = r.srsubid WHERE s.subname = $1), \
                    (SELECT coalesce(sum(pg_catalog.pg_total_relation_size(c.oid)), 0)::bigint FROM pg_catalog.pg_class c \
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $2 AND c.relkind = 'r'), \
                    (SELECT coalesce(sum(e.sync_error_count + e.apply_error_count), 0)::bigint \
                     FROM pg_catalog.pg_stat_subscription_stats e WHERE e.subname = $1)",
            &[&name, &schema],
        )
        .await
        .map_err(query_error("following the move's subscription"))?;
    let errors: i64 = row.get(3);
    if errors > 0 {
        return Err(Error::failed(format!(
            "the target server's subscription {name} reported {errors} error(s) while copying; its server log says why"
        )));
    }
    let lag: Option<i64> = source
        .query_opt(
            "SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), confirmed_flush_lsn)::bigint \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(query_error("reading the move's replication lag"))?
        .and_then(|r| r.get(0));
    Ok(CatchUp {
        ready: row.get(0),
        tables: row.get(1),
        bytes: row.get(2),
        lag,
    })
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Moves `tenant` to `to` with logical replication; see the module header.
pub async fn move_online(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    to: &str,
    keep_source: bool,
    set: &MigrationSet,
) -> Result<moving::Moved, Error> {
    let started = Instant::now();
    cx.servers.get(to)?;
    if let Some(settled) = moving::recover(cx, registry, tenant, to, started).await? {
        return Ok(settled);
    }
    moving::preflight(cx, tenant, to, None).await?;
    let journal = MoveJournal {
        from_server: tenant.server.clone(),
        to_server: to.to_string(),
        schema_name: tenant.schema_name.clone(),
        keep_source,
        phase: "copying".into(),
    };
    {
        let source = cx.servers.target(&tenant.server)?.connect().await?;
        let target = cx.servers.target(to)?.connect().await?;
        let catalog =
            catalog::read(&source, &tenant.schema_name, &cx.settings.history_table).await?;
        preflight(&source, &target, &tenant.schema_name, &catalog).await?;
    }
    registry.begin_move(tenant.id, &journal).await?;
    let moved = replicate_and_switch(cx, registry, tenant, &journal, set, started).await;
    match moved {
        Ok(m) => {
            // Everything after the switch is cleanup; a failure there is reported, and a
            // rerun finishes it.
            cleanup(cx, &journal, tenant.id).await.map_err(|e| {
                Error::failed(format!(
                    "tenant {} moved to server {}, but cleaning up failed: {e}; run the same `tenant move` again to finish",
                    tenant.domain, to
                ))
            })?;
            refresh_views(cx, &journal).await;
            registry.end_move(tenant.id).await?;
            Ok(m)
        }
        Err((e, true)) => Err(e),
        Err((e, false)) => {
            let undone = async {
                cleanup(cx, &journal, tenant.id).await?;
                moving::undo_copy(cx, &journal).await?;
                registry.end_move(tenant.id).await
            }
            .await;
            Err(match undone {
                Ok(()) => Error::new(
                    e.kind(),
                    format!(
                        "{e}; the move was undone: tenant {} stays on server {} as it was, and no replication slot is left",
                        tenant.domain, tenant.server
                    ),
                ),
                Err(u) => Error::new(
                    e.kind(),
                    format!(
                        "{e}; undoing the move failed too ({u}): the tenant is still registered on server {} and intact there; run the same `tenant move` again to clean up",
                        tenant.server
                    ),
                ),
            })
        }
    }
}

/// Refreshes the target's populated materialized views (they are not replicated).
async fn refresh_views(cx: &Context<'_>, j: &MoveJournal) {
    let Ok(target) = cx.servers.target(&j.to_server) else {
        return;
    };
    let Ok(client) = target.connect().await else {
        return;
    };
    if let Ok(c) = catalog::read(&client, &j.schema_name, &cx.settings.history_table).await {
        for m in c.materialized_views {
            let _ = client
                .batch_execute(&format!(
                    "REFRESH MATERIALIZED VIEW {}",
                    qualified(&j.schema_name, &m)
                ))
                .await;
        }
    }
}

/// Steps 2 to 4. The error says whether the registry was switched.
async fn replicate_and_switch(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    journal: &MoveJournal,
    set: &MigrationSet,
    started: Instant,
) -> Result<moving::Moved, (Error, bool)> {
    let not_switched = |e: Error| (e, false);
    let started_at = OffsetDateTime::now_utc();
    let schema = &tenant.schema_name;
    let name = replication_name(tenant.id);
    let (source_pool, source) = tenants::locked(cx, tenant).await.map_err(not_switched)?;
    let watch_source = cx
        .servers
        .target(&tenant.server)
        .map_err(not_switched)?
        .connect()
        .await
        .map_err(not_switched)?;
    let result = async {
        let history = data::readable_history(&source, tenant).await.map_err(not_switched)?;
        let revision =
            data::check_history(&history, set, &format!("of tenant {}", tenant.domain))
                .map_err(not_switched)?;
        let client = source.client();
        let catalog = catalog::read(client, schema, &cx.settings.history_table)
            .await
            .map_err(not_switched)?;
        // The target: built by the migrations, emptied of seeded rows, subscribed.
        let target_server = cx.servers.target(&journal.to_server).map_err(not_switched)?;
        let (target_pool, mut target) =
            tenants::locked_schema(cx, &journal.to_server, schema, &tenant.domain)
                .await
                .map_err(not_switched)?;
        let built = async {
            data::build_to(&mut target, schema, revision, set).await?;
            // The source as it is must be what the migrations build: a table or a column
            // made by hand would not be replicated.
            let differences = differ(&catalog, target.client(), schema, &cx.settings.history_table).await?;
            if !differences.is_empty() {
                return Err(Error::setup(format!(
                    "the tenant's schema differs from what the migrations build at revision {}: {}; a move rebuilds the schema by the migrations, so this would be lost; nothing was moved",
                    crate::output::revision(revision),
                    differences.join("; ")
                )));
            }
            let tables: Vec<String> = catalog.tables.iter().map(|t| qualified(schema, &t.name)).collect();
            if !tables.is_empty() {
                target
                    .client()
                    .batch_execute(&format!("TRUNCATE ONLY {}", tables.join(", ")))
                    .await
                    .map_err(query_error("emptying the target's tables"))?;
            }
            Ok::<_, Error>(tables)
        }
        .await;
        target.close(&target_pool).await;
        let tables = built.map_err(not_switched)?;
        let publish = if tables.is_empty() {
            format!("CREATE PUBLICATION {}", quote(&name))
        } else {
            format!("CREATE PUBLICATION {} FOR TABLE {}", quote(&name), tables.join(", "))
        };
        watch_source
            .batch_execute(&publish)
            .await
            .map_err(|e| not_switched(query_error("publishing the tenant's tables")(e)))?;
        let target_client = target_server.connect().await.map_err(not_switched)?;
        let conninfo = cx
            .servers
            .target(&tenant.server)
            .map_err(not_switched)?
            .conninfo();
        target_client
            .batch_execute(&format!(
                "CREATE SUBSCRIPTION {n} CONNECTION {c} PUBLICATION {n} WITH (copy_data = true, create_slot = true, slot_name = {n}, enabled = true)",
                n = quote(&name),
                c = crate::plan::literal(&conninfo),
            ))
            .await
            // The server's message never holds the connection string.
            .map_err(|e| not_switched(query_error("subscribing the target to the source")(e)))?;
        // The initial copy makes slots of its own on the source, named after the
        // subscription's oid; the publication's comment records it, so a cleanup finds
        // them even when the target cannot be reached.
        let suboid: Option<u32> = target_client
            .query_opt(
                "SELECT oid FROM pg_catalog.pg_subscription WHERE subname = $1",
                &[&name],
            )
            .await
            .ok()
            .flatten()
            .map(|r| r.get(0));
        if let Some(oid) = suboid {
            let _ = watch_source
                .batch_execute(&format!(
                    "COMMENT ON PUBLICATION {} IS {}",
                    quote(&name),
                    crate::plan::literal(&format!("{SUBSCRIPTION_OID}{oid}"))
                ))
                .await;
        }
        // Catch up.
        let catchup_started = Instant::now();
        loop {
            if cx.interrupt.requested() {
                return Err(not_switched(Error::new(
                    crate::error::ErrorKind::Interrupted,
                    "interrupted while the target caught up",
                )));
            }
            let seen = look(&watch_source, &target_client, &name, schema)
                .await
                .map_err(not_switched)?;
            cx.events.send(RunEvent::Progress {
                domain: tenant.domain.clone(),
                message: format!(
                    "copying: {}/{} tables ready, {} on the target, lag {}",
                    seen.ready,
                    seen.tables,
                    mib(seen.bytes),
                    seen.lag.map(mib).unwrap_or_else(|| "unknown".into())
                ),
            });
            if seen.ready == seen.tables && seen.lag.is_some_and(|l| l < CUTOVER_LAG) {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let catchup_ms = catchup_started.elapsed().as_millis() as u64;
        cx.events.send(RunEvent::Progress {
            domain: tenant.domain.clone(),
            message: "cutting over: writes blocked".into(),
        });
        // Cut over: block writes, wait until the target has everything.
        let fence_catalog = export::begin(
            client,
            schema,
            &cx.settings.history_table,
            export::Snapshot::Fenced,
        )
        .await
        .map_err(not_switched)?;
        let blocked_at = Instant::now();
        // A table or column made on the source during the copy is not replicated:
        // checked with the tables locked, the move is undone rather than lose it.
        let changed = differ(&fence_catalog, &target_client, schema, &cx.settings.history_table)
            .await
            .map_err(not_switched)?;
        if !changed.is_empty() {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(not_switched(Error::failed(format!(
                "the tenant's tables changed during the move ({}), which logical replication does not carry",
                changed.join("; ")
            ))));
        }
        let switched = cutover(
            registry,
            tenant,
            journal,
            client,
            &watch_source,
            &target_client,
            &fence_catalog,
            &name,
            started_at,
        )
        .await;
        if let Err((_, false)) = &switched {
            let _ = client.batch_execute("ROLLBACK").await;
        }
        let kept = switched?;
        Ok((blocked_at.elapsed().as_millis() as u64, catchup_ms, kept, fence_catalog))
    }
    .await;
    source.close(&source_pool).await;
    let (write_block_ms, catchup_ms, kept, fence_catalog) = result?;
    let rows = fence_catalog.tables.len();
    let message = format!(
        "tenant {} moved online from server {} to server {}: caught up in {catchup_ms} ms, writes blocked for {write_block_ms} ms; the old copy was {}",
        tenant.domain,
        journal.from_server,
        journal.to_server,
        match &kept {
            Some(k) => format!("renamed to {}", quote(k)),
            None => "dropped".to_string(),
        }
    );
    Ok(moving::Moved {
        tenant: tenant.domain.clone(),
        from_server: journal.from_server.clone(),
        to_server: journal.to_server.clone(),
        tables: rows,
        rows: None,
        write_block_ms,
        duration_ms: started.elapsed().as_millis() as u64,
        source_kept: kept.is_some(),
        catchup_ms: Some(catchup_ms),
        message,
    })
}

/// With the source's writes blocked in `client`'s transaction: waits until the target
/// has received everything up to the source's WAL position, stops the subscription, sets
/// the target's sequences, switches the registry, fences the old copy and commits.
/// Returns the name the old copy was kept under.
#[allow(clippy::too_many_arguments)]
async fn cutover(
    registry: &Registry<'_>,
    tenant: &Tenant,
    journal: &MoveJournal,
    client: &Client,
    watch_source: &Client,
    target: &Client,
    fenced: &catalog::Catalog,
    name: &str,
    started_at: OffsetDateTime,
) -> Result<Option<String>, (Error, bool)> {
    let not_switched = |e: Error| (e, false);
    let schema = &tenant.schema_name;
    let lsn: String = client
        .query_one("SELECT pg_catalog.pg_current_wal_lsn()::text", &[])
        .await
        .map_err(|e| not_switched(query_error("reading the source's WAL position")(e)))?
        .get(0);
    // A commit of its own flushes the WAL up to here, so the WAL sender can send it.
    watch_source
        .batch_execute("SELECT pg_catalog.txid_current()")
        .await
        .map_err(|e| not_switched(query_error("flushing the source's WAL")(e)))?;
    let deadline = Instant::now() + CUTOVER_WAIT;
    loop {
        let done: Option<bool> = watch_source
            .query_opt(
                "SELECT confirmed_flush_lsn >= $2::text::pg_lsn FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&name, &lsn],
            )
            .await
            .map_err(|e| not_switched(query_error("following the target's replay")(e)))?
            .and_then(|r| r.get(0));
        if done == Some(true) {
            break;
        }
        if Instant::now() > deadline {
            return Err(not_switched(Error::failed(format!(
                "the target did not confirm the source's last writes within {} s of blocking them",
                CUTOVER_WAIT.as_secs()
            ))));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    target
        .batch_execute(&format!("ALTER SUBSCRIPTION {} DISABLE", quote(name)))
        .await
        .map_err(|e| not_switched(query_error("stopping the subscription")(e)))?;
    // Sequences are not replicated: the source's, final while its writes are blocked,
    // read in one round trip (the write block is waiting).
    let setvals: Vec<String> = crate::data::export::sequences(client, schema, &fenced.sequences)
        .await
        .map_err(not_switched)?
        .iter()
        .map(|s| {
            format!(
                "SELECT pg_catalog.setval({}, {}, {})",
                crate::plan::literal(&qualified(schema, &s.name)),
                s.last_value,
                s.is_called
            )
        })
        .collect();
    if !setvals.is_empty() {
        target
            .batch_execute(&setvals.join("; "))
            .await
            .map_err(|e| not_switched(query_error("setting the target's sequences")(e)))?;
    }
    // The publication lists the old copy's tables: left in place, it would count as an
    // object depending on them and keep the old copy from being dropped. Dropped in the
    // source transaction, it comes back if the cutover is undone.
    client
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote(name)))
        .await
        .map_err(|e| not_switched(query_error("dropping the move's publication")(e)))?;
    let run_id = scheduler::new_run_id().map_err(not_switched)?;
    let host = scheduler::client_host();
    let event = Event {
        run_id: &run_id,
        action: "move (online)",
        from_revision: tenant.current_revision,
        started_at,
        client_host: &host,
    };
    moving::refuse_dependents(client, schema)
        .await
        .map_err(not_switched)?;
    registry
        .switch_server(tenant.id, journal, &event)
        .await
        .map_err(not_switched)?;
    let fenced = match moving::fence(client, schema, journal.keep_source).await {
        Ok(kept) => client.batch_execute("COMMIT").await.map(|()| kept),
        Err(e) => Err(e),
    };
    match fenced {
        Ok(kept) => Ok(kept),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            let e = query_error(&format!(
                "fencing the old copy of schema {} on server {}",
                quote(schema),
                journal.from_server
            ))(e);
            Err((
                Error::new(
                    e.kind(),
                    format!(
                        "tenant {} now lives on server {} (the registry was switched), but {e}; run the same `tenant move` again to fence the old copy",
                        tenant.domain, journal.to_server
                    ),
                ),
                true,
            ))
        }
    }
}
