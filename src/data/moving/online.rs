//! `tenant move --to SERVER --online`: moving a tenant with logical replication, so its
//! writes are blocked only for the cutover, whatever its size (the book's "Online move").
//!
//! 1. Preflight, the same for `--dry-run`, refused (exit 3) before anything is created:
//!    the source is PostgreSQL 15 or newer with `wal_level = logical`, replication slots
//!    and WAL senders are free for the move and for each table copied at once, the target
//!    has logical replication workers and background processes to spare, the roles may
//!    publish (owning the tables) and subscribe, the tenant has tables and none is
//!    unlogged or foreign, every table has a primary key or a replica identity (and one
//!    matched by its whole row has types with equality), no publication, slot or
//!    subscription of the move's name is someone else's, the target has the extensions
//!    and shared types the schema uses, and the target can connect to the source.
//! 2. Build: the target schema is built by the migrations to the source's revision and
//!    emptied, and its triggers enabled ALWAYS or REPLICA are disabled (the subscription's
//!    workers run as replicas and would fire them); the source publishes the tenant's
//!    tables, makes the slot, and the target subscribes with an initial copy.
//!    Publication, subscription and slot are all named `tenantctl_move_ID` (ID: the
//!    tenant's registry id), so a rerun finds leftovers.
//! 3. Catch up: until every table is synchronised (`pg_subscription_rel` ready) and the
//!    slot's lag is small; progress (bytes copied, lag) goes to the terminal.
//! 4. Cut over: the source tables are locked against writes (the write fence), the
//!    target confirms it has received everything up to the source's WAL position (the
//!    subscription is then disabled), the sequences are set on the target and the
//!    target's triggers and rules are set as the source's are, and the publication is
//!    dropped in the source's transaction. From there the move's shared protocol
//!    ([`super`]) fences the old copy durably, switches the registry and removes the old
//!    copy. A move killed before the switch leaves a partial copy (its triggers perhaps
//!    disabled) that the rerun drops; a switched target's triggers are set.
//! 5. Clean up: subscription, slot and publication are removed on success, on failure,
//!    and by a rerun after a kill. A forgotten slot keeps WAL on the source forever, so
//!    the slot is dropped from the source's side even when the target is unreachable.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::pg::db::Client;

use super::copy;
use crate::data::{self, catalog};
use crate::engine::runner::Session;
use crate::engine::scheduler::RunEvent;
use crate::engine::tenant::{self, Context};
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::ident::{qualified, quote};
use crate::pg::db::query_error;
use crate::registry::{MoveJournal, Tenant};

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

/// Why an online move cannot run: exit 3, nothing created.
fn refuse(why: String) -> Error {
    Error::setup(format!(
        "an online move cannot run: {why}; nothing was created (a move without --online copies under a write fence instead)"
    ))
}

/// The backend types of `pg_stat_activity` that are not background workers (taken from
/// `max_worker_processes`).
const NOT_WORKERS: &str =
    "'autovacuum launcher', 'autovacuum worker', 'archiver', 'background writer', \
     'checkpointer', 'client backend', 'logger', 'standalone backend', 'startup', 'walreceiver', \
     'walsender', 'walwriter', 'slotsync worker', 'walsummarizer'";

/// Refuses (exit 3) the tables logical replication cannot carry, read before the
/// tenant's catalog (which refuses some of them with another message): unlogged and
/// foreign tables (a publication takes neither), and a schema without tables (nothing
/// to replicate; a move without `--online` copies it in no time).
async fn shapes(source: &Client, schema: &str, history_table: &str) -> Result<(), Error> {
    let rows = source
        .query(
            "SELECT c.relname::text, c.relkind::text, c.relpersistence::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'f') AND c.relname <> $2 ORDER BY 1",
            &[&schema, &history_table],
        )
        .await
        .map_err(query_error("reading the tenant's tables"))?;
    let named = |keep: &dyn Fn(&str, &str) -> bool| -> Vec<String> {
        rows.iter()
            .filter(|r| keep(r.get::<_, &str>(1), r.get::<_, &str>(2)))
            .map(|r| quote(r.get::<_, &str>(0)))
            .collect()
    };
    let unlogged = named(&|_, persistence| persistence == "u");
    if !unlogged.is_empty() {
        return Err(refuse(format!(
            "table(s) {} of schema {} are unlogged, and a publication cannot carry unlogged tables (ALTER TABLE ... SET LOGGED)",
            unlogged.join(", "),
            quote(schema)
        )));
    }
    let foreign = named(&|kind, _| kind == "f");
    if !foreign.is_empty() {
        return Err(refuse(format!(
            "{} of schema {} are foreign tables, whose rows live on another server and are not published",
            foreign.join(", "),
            quote(schema)
        )));
    }
    if named(&|kind, _| kind == "r").is_empty() {
        return Err(refuse(format!(
            "schema {} has no tables (other than its migration history) to replicate",
            quote(schema)
        )));
    }
    Ok(())
}

/// Refuses (exit 3) what logical replication cannot do here, before anything is made.
/// `conninfo` is how the target will reach the source.
async fn preflight(
    source: &Client,
    target: &Client,
    tenant_id: i64,
    schema: &str,
    conninfo: &str,
    catalog: &catalog::Catalog,
    settled: bool,
) -> Result<(), Error> {
    let name = replication_name(tenant_id);
    let tables: Vec<String> = catalog.tables.iter().map(|t| t.name.clone()).collect();
    let row = source
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('wal_level'), \
                    current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_catalog.pg_replication_slots)::int, \
                    current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_catalog.pg_stat_replication)::int, \
                    (SELECT rolsuper OR rolreplication FROM pg_catalog.pg_roles WHERE rolname = current_user), \
                    pg_catalog.has_database_privilege(current_database(), 'CREATE'), \
                    (SELECT pg_catalog.array_agg(c.relname::text ORDER BY c.relname) FROM pg_catalog.pg_class c \
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = $1 AND c.relname = ANY($2) \
                       AND NOT pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE')), \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $3), \
                    EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $3)",
            &[&schema, &tables, &name],
        )
        .await
        .map_err(query_error("checking the source server for logical replication"))?;
    let version: i32 = row.get(0);
    let wal_level: String = row.get(1);
    let free_slots: i32 = row.get(2);
    let free_senders: i32 = row.get(3);
    let may_replicate: bool = row.get::<_, Option<bool>>(4).unwrap_or(false);
    let may_publish: bool = row.get(5);
    let not_owned: Option<Vec<String>> = row.get(6);
    let publication_taken: bool = row.get(7);
    let slot_taken: bool = row.get(8);
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
    if !may_publish {
        return Err(refuse(
            "the source role may not create a publication: it lacks CREATE on the source database (GRANT CREATE ON DATABASE ...)".into(),
        ));
    }
    if let Some(tables) = not_owned.filter(|t| !t.is_empty()) {
        let tables: Vec<String> = tables.iter().map(|t| quote(t)).collect();
        return Err(refuse(format!(
            "the source role does not own table(s) {} of schema {}, and only a table's owner may publish it",
            tables.join(", "),
            quote(schema)
        )));
    }
    // What an unfinished move of the tenant may still hold (its publication, slot,
    // subscription, the slots, senders and workers they take) is counted only once that
    // move is settled.
    for (taken, what) in [
        (publication_taken, "publication"),
        (slot_taken, "replication slot"),
    ] {
        if taken && settled {
            return Err(refuse(format!(
                "a {what} named {name} already exists on the source server and is not a leftover of this tenant's move (another registry's move of a tenant with id {tenant_id}?); drop it there if nothing uses it"
            )));
        }
    }
    let row = target
        .query_one(
            &format!(
                "SELECT current_setting('max_logical_replication_workers')::int - (SELECT count(*) FROM pg_catalog.pg_stat_subscription)::int, \
                        (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) \
                        OR (current_setting('server_version_num')::int >= 160000 \
                            AND pg_catalog.pg_has_role(current_user, 'pg_create_subscription', 'MEMBER')), \
                        current_setting('max_sync_workers_per_subscription')::int, \
                        current_setting('max_worker_processes')::int \
                            - (SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type NOT IN ({NOT_WORKERS}))::int, \
                        EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE backend_type = 'logical replication launcher'), \
                        EXISTS (SELECT 1 FROM pg_catalog.pg_subscription WHERE subname = $1 \
                                AND subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()))"
            ),
            &[&name],
        )
        .await
        .map_err(query_error("checking the target server for logical replication"))?;
    let free_workers: i32 = row.get(0);
    let may_subscribe: bool = row.get::<_, Option<bool>>(1).unwrap_or(false);
    let free_processes: i32 = row.get(3);
    let launcher: bool = row.get(4);
    let subscription_taken: bool = row.get(5);
    // The subscription's slot, plus one slot and one WAL sender for each table whose
    // initial copy runs at the same time (one per sync worker the target runs at once).
    let copied = i32::try_from(tables.len()).unwrap_or(i32::MAX);
    let needed = 1 + copied.min(row.get::<_, i32>(2).max(0));
    if free_slots < needed && settled {
        return Err(refuse(format!(
            "the source server has {} free replication slot(s) and the move needs {needed}: one to stream from and one for each table copied at once (the target's max_sync_workers_per_subscription); raise max_replication_slots",
            free_slots.max(0)
        )));
    }
    if free_senders < needed && settled {
        return Err(refuse(format!(
            "the source server has {} free WAL sender(s) and the move needs {needed}: one to stream from and one for each table copied at once (the target's max_sync_workers_per_subscription); raise max_wal_senders",
            free_senders.max(0)
        )));
    }
    if free_workers < 2 && settled {
        return Err(refuse(
            "the target server has fewer than 2 free logical replication workers (raise max_logical_replication_workers and max_worker_processes)".into(),
        ));
    }
    if !launcher || (free_processes < 2 && settled) {
        // The workers are background processes: without room for them the subscription
        // would wait forever.
        return Err(refuse(format!(
            "the target server has {} free background worker process(es){} and the move needs 2 (one to apply, one to copy a table); raise max_worker_processes (a restart)",
            free_processes.max(0),
            if launcher { "" } else { " and no logical replication launcher running" }
        )));
    }
    if !may_subscribe {
        return Err(refuse(
            "the target role may not create subscriptions (superuser, or pg_create_subscription on PostgreSQL 16+)".into(),
        ));
    }
    if subscription_taken && settled {
        return Err(refuse(format!(
            "a subscription named {name} already exists on the target server and is not a leftover of this tenant's move (another registry's move of a tenant with id {tenant_id}?); drop it there if nothing uses it"
        )));
    }
    let rows = source
        .query(
            "SELECT c.relname::text, c.relreplident = 'f' FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = ANY($2) \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
               AND NOT (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)) \
             ORDER BY 1",
            &[&schema, &tables],
        )
        .await
        .map_err(query_error("checking the tenant's tables for replica identities"))?;
    let unidentified: Vec<String> = rows
        .iter()
        .filter(|r| !r.get::<_, bool>(1))
        .map(|r| quote(&r.get::<_, String>(0)))
        .collect();
    if !unidentified.is_empty() {
        return Err(refuse(format!(
            "table(s) {} of schema {} have neither a primary key nor a replica identity, so their updates and deletes cannot be replicated (add a primary key, or ALTER TABLE ... REPLICA IDENTITY FULL)",
            unidentified.join(", "),
            quote(schema)
        )));
    }
    // A table found by its whole row (REPLICA IDENTITY FULL, no key) is matched on the
    // target column by column: each column's type needs an equality operator.
    let mut unmatched = Vec::new();
    for r in &rows {
        let table: String = r.get(0);
        let Some(t) = catalog.tables.iter().find(|t| t.name == table) else {
            continue;
        };
        if t.columns.is_empty() {
            continue;
        }
        let columns: Vec<String> = t.columns.iter().map(|c| quote(&c.name)).collect();
        let probe = format!(
            "SELECT DISTINCT {} FROM {}",
            columns.join(", "),
            qualified(schema, &table)
        );
        match source.prepare(&probe).await {
            Ok(_) => {}
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_FUNCTION) => {
                let why = e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_default();
                unmatched.push(format!("{} ({why})", quote(&table)));
            }
            Err(e) => return Err(query_error("checking the tenant's column types")(e)),
        }
    }
    if !unmatched.is_empty() {
        return Err(refuse(format!(
            "table(s) {} of schema {} have no key, so the target finds a row to update or delete by comparing every column, and a column type there has no equality operator; add a primary key (or a unique index and REPLICA IDENTITY USING INDEX)",
            unmatched.join(", "),
            quote(schema)
        )));
    }
    if !settled {
        return Ok(());
    }
    missing_on_target(source, target, schema).await?;
    probe_connection(target, &name, conninfo).await
}

/// Refuses (exit 3) when the target lacks an extension that the tenant's objects use
/// (neither installed nor available to install), or a type of a column that lives in
/// a shared schema (not an extension's): the migrations could not build the schema there.
async fn missing_on_target(source: &Client, target: &Client, schema: &str) -> Result<(), Error> {
    let row = source
        .query_one(
            "WITH ns AS (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1), \
             objects(classid, objid) AS ( \
                 SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, c.oid FROM pg_catalog.pg_class c, ns WHERE c.relnamespace = ns.oid \
                 UNION ALL SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid FROM pg_catalog.pg_type t, ns WHERE t.typnamespace = ns.oid \
                 UNION ALL SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid FROM pg_catalog.pg_proc p, ns WHERE p.pronamespace = ns.oid \
                 UNION ALL SELECT 'pg_catalog.pg_constraint'::pg_catalog.regclass, o.oid FROM pg_catalog.pg_constraint o, ns WHERE o.connamespace = ns.oid \
                 UNION ALL SELECT 'pg_catalog.pg_attrdef'::pg_catalog.regclass, d.oid FROM pg_catalog.pg_attrdef d \
                     JOIN pg_catalog.pg_class c ON c.oid = d.adrelid, ns WHERE c.relnamespace = ns.oid \
                 UNION ALL SELECT 'pg_catalog.pg_trigger'::pg_catalog.regclass, g.oid FROM pg_catalog.pg_trigger g \
                     JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid, ns WHERE c.relnamespace = ns.oid \
                 UNION ALL SELECT 'pg_catalog.pg_rewrite'::pg_catalog.regclass, w.oid FROM pg_catalog.pg_rewrite w \
                     JOIN pg_catalog.pg_class c ON c.oid = w.ev_class, ns WHERE c.relnamespace = ns.oid) \
             SELECT (SELECT pg_catalog.array_agg(DISTINCT e.extname::text) FROM objects o \
                     JOIN pg_catalog.pg_depend d ON d.classid = o.classid AND d.objid = o.objid \
                     JOIN pg_catalog.pg_depend m ON m.classid = d.refclassid AND m.objid = d.refobjid AND m.deptype = 'e' \
                          AND m.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass \
                     JOIN pg_catalog.pg_extension e ON e.oid = m.refobjid), \
                    (SELECT pg_catalog.array_agg(DISTINCT pg_catalog.format('%I.%I', tn.nspname, t.typname)) \
                     FROM pg_catalog.pg_class c \
                     JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                     JOIN pg_catalog.pg_type at ON at.oid = a.atttypid \
                     JOIN pg_catalog.pg_type t ON t.oid = CASE WHEN at.typcategory = 'A' AND at.typelem <> 0 THEN at.typelem ELSE at.oid END \
                     JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace, ns \
                     WHERE c.relnamespace = ns.oid AND c.relkind IN ('r', 'p') \
                       AND tn.nspname NOT IN ('pg_catalog', 'information_schema') AND tn.oid <> ns.oid \
                       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend m WHERE m.classid = 'pg_catalog.pg_type'::pg_catalog.regclass \
                                       AND m.objid = t.oid AND m.deptype = 'e'))",
            &[&schema],
        )
        .await
        .map_err(query_error("reading what the tenant's schema uses outside it"))?;
    let extensions: Vec<String> = row.get::<_, Option<Vec<String>>>(0).unwrap_or_default();
    let types: Vec<String> = row.get::<_, Option<Vec<String>>>(1).unwrap_or_default();
    if extensions.is_empty() && types.is_empty() {
        return Ok(());
    }
    let row = target
        .query_one(
            "SELECT (SELECT pg_catalog.array_agg(x ORDER BY x) FROM pg_catalog.unnest($1::text[]) x \
                     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e WHERE e.extname = x) \
                       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions a WHERE a.name = x)), \
                    (SELECT pg_catalog.array_agg(x ORDER BY x) FROM pg_catalog.unnest($2::text[]) x \
                     WHERE pg_catalog.to_regtype(x) IS NULL)",
            &[&extensions, &types],
        )
        .await
        .map_err(query_error("looking for the tenant's extensions and types on the target"))?;
    let extensions: Vec<String> = row.get::<_, Option<Vec<String>>>(0).unwrap_or_default();
    if !extensions.is_empty() {
        return Err(refuse(format!(
            "schema {} uses extension(s) {}, which the target server neither has nor can install (its package is missing there)",
            quote(schema),
            extensions.join(", ")
        )));
    }
    let types: Vec<String> = row.get::<_, Option<Vec<String>>>(1).unwrap_or_default();
    if !types.is_empty() {
        return Err(refuse(format!(
            "columns of schema {} are of type(s) {}, which do not exist on the target server (create them there first)",
            quote(schema),
            types.join(", ")
        )));
    }
    Ok(())
}

/// How long the target's connection to the source may take to open.
const PROBE_CONNECT_TIMEOUT_S: u32 = 10;

/// Refuses (exit 3) when the target cannot open the connection its subscription would
/// (host and port reachable from there, TLS as the URL asks without this machine's root
/// certificate, the role allowed a replication connection): a subscription made and
/// rolled back in one transaction, which connects without making a slot.
async fn probe_connection(target: &Client, name: &str, conninfo: &str) -> Result<(), Error> {
    target.batch_execute("BEGIN").await.map_err(query_error(
        "checking the target's connection to the source",
    ))?;
    let probed = target
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION {n} CONNECTION {c} PUBLICATION {n} \
             WITH (connect = true, create_slot = false, enabled = false, slot_name = NONE, copy_data = false)",
            n = quote(name),
            c = crate::engine::plan::literal(&format!(
                "{conninfo} connect_timeout={PROBE_CONNECT_TIMEOUT_S}"
            )),
        ))
        .await;
    let rolled_back = target.batch_execute("ROLLBACK").await;
    match probed {
        Ok(()) => {}
        // Any refusal of the server (it could not connect, or would not subscribe this
        // way, e.g. without a password in the URL on PostgreSQL 16+); its message never
        // holds the connection string.
        Err(e) if e.as_db_error().is_some() => {
            let why = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_default();
            return Err(refuse(format!(
                "the target server could not subscribe to the source with the source's URL from tenants.toml, as the move would: it tried and rolled back ({why})"
            )));
        }
        Err(e) => {
            return Err(query_error(
                "checking the target's connection to the source",
            )(e))
        }
    }
    rolled_back.map_err(query_error(
        "checking the target's connection to the source",
    ))
}

/// Checks the prerequisites of an online move of `tenant` to `to` (exit 3 when one is
/// missing), creating nothing.
pub async fn check(cx: &Context<'_>, tenant: &Tenant, to: &str) -> Result<(), Error> {
    check_with(cx, tenant, to, true).await
}

/// [`check`] while an unfinished move of the tenant is not settled yet: what its
/// leftovers (publication, slot, subscription, the slots, senders and workers they take,
/// a source schema fenced under another name) would count against is left for [`check`]
/// once it is. What nothing the move left changes (the servers' versions and settings,
/// the roles' rights) is refused before the unfinished move is touched.
pub async fn check_standing(cx: &Context<'_>, tenant: &Tenant, to: &str) -> Result<(), Error> {
    check_with(cx, tenant, to, false).await
}

async fn check_with(
    cx: &Context<'_>,
    tenant: &Tenant,
    to: &str,
    settled: bool,
) -> Result<(), Error> {
    let source_target = cx.servers.target(&tenant.server)?;
    let source = source_target.connect().await?;
    let target = cx.servers.target(to)?.connect().await?;
    // Before the unfinished move is settled, the source schema may be fenced under
    // another name and the target hold the move's subscription: its tables and the
    // subscription's connection are checked once it is settled, the servers' settings
    // and the roles' rights now.
    let catalog = if settled {
        shapes(&source, &tenant.schema_name, &cx.settings.history_table).await?;
        catalog::read(&source, &tenant.schema_name, &cx.settings.history_table).await?
    } else {
        catalog::Catalog::default()
    };
    preflight(
        &source,
        &target,
        tenant.id,
        &tenant.schema_name,
        &source_target.conninfo(),
        &catalog,
        settled,
    )
    .await
}

/// Each column of the schema's tables with its type spelled the same whatever the
/// session's `search_path`: a built-in type as `format_type` spells it, any other one
/// qualified by its schema (`tenant_x.mood[]`, `public.citext`). Keyed by (table, column).
async fn column_types(
    client: &Client,
    schema: &str,
) -> Result<HashMap<(String, String), String>, Error> {
    let rows = client
        .query(
            "SELECT c.relname::text, a.attname::text, \
                    CASE WHEN tn.nspname = 'pg_catalog' THEN pg_catalog.regexp_replace(f.t, '^pg_catalog\\.', '') \
                         WHEN pg_catalog.starts_with(f.t, pg_catalog.quote_ident(tn.nspname) || '.') THEN f.t \
                         ELSE pg_catalog.quote_ident(tn.nspname) || '.' || f.t END \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             JOIN pg_catalog.pg_type at ON at.oid = a.atttypid \
             JOIN pg_catalog.pg_type t ON t.oid = CASE WHEN at.typcategory = 'A' AND at.typelem <> 0 THEN at.typelem ELSE at.oid END \
             JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace \
             CROSS JOIN LATERAL (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) AS t) f \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')",
            &[&schema],
        )
        .await
        .map_err(query_error("reading the types of the schema's columns"))?;
    Ok(rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect())
}

/// `tables` with each column's type as [`column_types`] spells it.
fn canonical(
    tables: &[crate::data::archive::Table],
    types: &HashMap<(String, String), String>,
) -> Vec<crate::data::archive::Table> {
    let mut tables = tables.to_vec();
    for t in &mut tables {
        for c in &mut t.columns {
            if let Some(spelled) = types.get(&(t.name.clone(), c.name.clone())) {
                c.type_name = spelled.clone();
            }
        }
    }
    tables
}

/// A user trigger or rule on one of the schema's tables, and how it is enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Switch {
    table: String,
    rule: bool,
    name: String,
    /// `pg_trigger.tgenabled` or `pg_rewrite.ev_enabled`: `O` (origin), `A` (always),
    /// `R` (replica) or `D` (disabled).
    enabled: String,
}

impl Switch {
    fn what(&self) -> String {
        format!(
            "{} {} on table {}",
            if self.rule { "rule" } else { "trigger" },
            quote(&self.name),
            quote(&self.table)
        )
    }

    /// The statement that sets it to `enabled` (on this table only: a partition's clone
    /// of a trigger has a switch of its own).
    fn set(&self, schema: &str, enabled: &str) -> String {
        let how = match enabled {
            "A" => "ENABLE ALWAYS",
            "R" => "ENABLE REPLICA",
            "D" => "DISABLE",
            _ => "ENABLE",
        };
        format!(
            "ALTER TABLE ONLY {} {how} {} {}",
            qualified(schema, &self.table),
            if self.rule { "RULE" } else { "TRIGGER" },
            quote(&self.name)
        )
    }
}

/// The schema's user triggers and rules on tables, by table, kind and name; not the
/// version index's trigger, which each server puts on the history table itself (see
/// [`crate::registry::versions`]).
async fn switches(client: &Client, schema: &str) -> Result<Vec<Switch>, Error> {
    let rows = client
        .query(
            "SELECT c.relname::text, false, t.tgname::text, t.tgenabled::text FROM pg_catalog.pg_trigger t \
             JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND NOT t.tgisinternal AND c.relkind IN ('r', 'p') \
               AND t.tgname <> 'tenantctl_versions' \
             UNION ALL \
             SELECT c.relname::text, true, r.rulename::text, r.ev_enabled::text FROM pg_catalog.pg_rewrite r \
             JOIN pg_catalog.pg_class c ON c.oid = r.ev_class JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') \
             ORDER BY 1, 2, 3",
            &[&schema],
        )
        .await
        .map_err(query_error("reading the schema's triggers and rules"))?;
    Ok(rows
        .iter()
        .map(|r| Switch {
            table: r.get(0),
            rule: r.get(1),
            name: r.get(2),
            enabled: r.get(3),
        })
        .collect())
}

/// Disables the target's triggers that the subscription's workers would fire (they run
/// as replicas: triggers enabled ALWAYS or REPLICA fire there), so that a row copied or
/// applied is not processed a second time; [`carry_switches`] sets them back at the
/// cutover, before the registry is switched. Rules do not act on copied or applied rows.
async fn quiet_triggers(target: &Client, schema: &str) -> Result<(), Error> {
    let sql: Vec<String> = switches(target, schema)
        .await?
        .iter()
        .filter(|s| !s.rule && (s.enabled == "A" || s.enabled == "R"))
        .map(|s| s.set(schema, "D"))
        .collect();
    if sql.is_empty() {
        return Ok(());
    }
    target
        .batch_execute(&sql.join("; "))
        .await
        .map_err(query_error("disabling the target's triggers for the copy"))
}

/// The target's CHECK constraints that are `NOT VALID` (on tables and domains), taken
/// off for the copy as a load takes them off, and the names of those not validated
/// before.
struct Unbound {
    checks: Vec<catalog::Unvalidated>,
    before: Vec<(String, String)>,
}

/// Takes the target's `NOT VALID` CHECK constraints off for the copy: they bind new rows
/// only, and the source may hold rows older than them, which the initial copy (a `COPY`)
/// would be refused; [`bind_checks`] declares them again at the cutover, still not
/// validated.
async fn unbind_checks(target: &Client, schema: &str) -> Result<Unbound, Error> {
    let unbound = Unbound {
        checks: catalog::unvalidated_checks(target, schema).await?,
        before: catalog::unvalidated_check_names(target, schema).await?,
    };
    if !unbound.checks.is_empty() {
        let sql: Vec<String> = unbound.checks.iter().map(|c| c.drop(schema)).collect();
        target
            .batch_execute(&sql.join("; "))
            .await
            .map_err(query_error(
                "taking the target's constraints that are not validated off for the copy",
            ))?;
    }
    Ok(unbound)
}

/// With the subscription stopped: declares the constraints [`unbind_checks`] took off
/// again, not validated, as they were.
async fn bind_checks(target: &Client, schema: &str, unbound: &Unbound) -> Result<(), Error> {
    if unbound.checks.is_empty() {
        return Ok(());
    }
    let sql: Vec<String> = unbound.checks.iter().rev().map(|c| c.add(schema)).collect();
    target
        .batch_execute(&sql.join("; "))
        .await
        .map_err(query_error(
            "declaring the target's constraints that are not validated again",
        ))?;
    crate::data::load::validate_again(target, schema, &unbound.before).await
}

/// With the subscription stopped: sets each of the target's triggers and rules as the
/// source's is (`source`: the fenced transaction, so none changes meanwhile) and checks
/// that they now match.
async fn carry_switches(source: &Client, target: &Client, schema: &str) -> Result<(), Error> {
    let want = switches(source, schema).await?;
    let have = switches(target, schema).await?;
    let sql: Vec<String> = want
        .iter()
        .filter(|w| !have.contains(w))
        .map(|w| w.set(schema, &w.enabled))
        .collect();
    if !sql.is_empty() {
        target
            .batch_execute(&sql.join("; "))
            .await
            .map_err(query_error(
                "setting the target's triggers and rules as the source's",
            ))?;
    }
    let now = switches(target, schema).await?;
    if now != want {
        return Err(Error::failed(format!(
            "the target's triggers and rules could not be set as the source's: {}",
            now.iter()
                .filter(|n| !want.contains(n))
                .map(|n| format!("{} is {}", n.what(), n.enabled))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// A table's replica identity: `pg_class.relreplident`, the columns of its replica
/// identity index and of its primary key (sorted).
struct Identity {
    replident: String,
    index: Option<Vec<String>>,
    primary_key: Option<Vec<String>>,
}

async fn identities(client: &Client, schema: &str) -> Result<HashMap<String, Identity>, Error> {
    let rows = client
        .query(
            "SELECT c.relname::text, c.relreplident::text, \
                    (SELECT pg_catalog.array_agg(a.attname::text ORDER BY a.attname) FROM pg_catalog.pg_index i \
                     JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) \
                     WHERE i.indrelid = c.oid AND i.indisreplident), \
                    (SELECT pg_catalog.array_agg(a.attname::text ORDER BY a.attname) FROM pg_catalog.pg_index i \
                     JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) \
                     WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind = 'r'",
            &[&schema],
        )
        .await
        .map_err(query_error("reading the replica identities of the schema's tables"))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get(0),
                Identity {
                    replident: r.get(1),
                    index: r.get(2),
                    primary_key: r.get(3),
                },
            )
        })
        .collect())
}

/// The tables whose updates and deletes the target could not apply: it finds a row by
/// its replica identity index or else its primary key, whose columns the source must
/// send (all of them with REPLICA IDENTITY FULL), or, with neither, by the whole row,
/// which only a source with REPLICA IDENTITY FULL sends.
fn unappliable(
    source: &HashMap<String, Identity>,
    target: &HashMap<String, Identity>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut names: Vec<&String> = source.keys().collect();
    names.sort();
    for name in names {
        let (Some(s), Some(t)) = (source.get(name), target.get(name)) else {
            continue;
        };
        let needed = match (t.replident.as_str(), &t.index) {
            ("i", Some(cols)) => Some(cols),
            _ => t.primary_key.as_ref(),
        };
        let sent = match s.replident.as_str() {
            "f" => None,
            "i" => Some(s.index.clone().unwrap_or_default()),
            "d" => Some(s.primary_key.clone().unwrap_or_default()),
            _ => Some(Vec::new()),
        };
        let fine = match (needed, &sent) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(n), Some(sent)) => n.iter().all(|c| sent.contains(c)),
        };
        if !fine {
            out.push(format!(
                "table {} is found on the target by {} but the source's replica identity sends {}, so its updates and deletes could not be applied there (a key or REPLICA IDENTITY changed by hand; ALTER TABLE ... REPLICA IDENTITY FULL on the source carries it)",
                quote(name),
                needed.map_or("its whole row (no key as built)".to_string(), |c| format!("({})", c.join(", "))),
                sent.as_ref()
                    .filter(|c| !c.is_empty())
                    .map_or("no columns".to_string(), |c| format!("({})", c.join(", ")))
            ));
        }
    }
    out
}

/// How the source's tables (`catalog`, read on `source`) differ from what the target's
/// schema holds (empty: the same): tables, columns and their types (spelled alike on both
/// sides, whatever each session's `search_path`), triggers and rules, sequences,
/// materialized views.
async fn differ(
    source: &Client,
    catalog: &catalog::Catalog,
    target: &Client,
    schema: &str,
    history_table: &str,
) -> Result<Vec<String>, Error> {
    let built = catalog::read(target, schema, history_table).await?;
    let mut d = catalog::differences(
        &canonical(&catalog.tables, &column_types(source, schema).await?),
        &canonical(&built.tables, &column_types(target, schema).await?),
    );
    d.extend(unappliable(
        &identities(source, schema).await?,
        &identities(target, schema).await?,
    ));
    let (theirs, ours) = (
        switches(source, schema).await?,
        switches(target, schema).await?,
    );
    let key = |s: &Switch| (s.table.clone(), s.rule, s.name.clone());
    for s in &theirs {
        if !ours.iter().any(|o| key(o) == key(s)) {
            d.push(format!("{} is not built by the migrations", s.what()));
        }
    }
    for o in &ours {
        if !theirs.iter().any(|s| key(o) == key(s)) {
            d.push(format!(
                "{} is built by the migrations but not on the source",
                o.what()
            ));
        }
    }
    for s in &catalog.sequences {
        if !built.sequences.contains(s) {
            d.push(format!("sequence {} is not on the target", quote(s)));
        }
    }
    for m in &catalog.materialized_views {
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

/// An online move's dry run: the target's copy built by the migrations to the source's
/// `revision` in a transaction that is rolled back, and compared with the source as the
/// move compares it; `Some` says why the build was not tried.
pub(crate) async fn rehearse(
    cx: &Context<'_>,
    tenant: &Tenant,
    to: &str,
    revision: Option<i32>,
    set: &MigrationSet,
) -> Result<Option<String>, Error> {
    let schema = &tenant.schema_name;
    let source = cx.servers.target(&tenant.server)?.connect().await?;
    let catalog = catalog::read(&source, schema, &cx.settings.history_table).await?;
    let (pool, mut target) = tenant::locked_schema(cx, to, schema, &tenant.domain).await?;
    let tried = async {
        let state = target.observe().await?;
        if let Some(untried) =
            data::try_build(&mut target, &state, schema, revision, set, None).await?
        {
            return Ok(Some(untried));
        }
        let differences = async {
            let mut d = differ(
                &source,
                &catalog,
                target.client(),
                schema,
                &cx.settings.history_table,
            )
            .await?;
            d.extend(
                bound_alike(&source, target.client(), schema, &cx.settings.history_table).await?,
            );
            Ok::<_, Error>(d)
        }
        .await;
        target.end_rehearsal().await;
        let differences = differences?;
        if !differences.is_empty() {
            return Err(differs(revision, &differences));
        }
        Ok(None)
    }
    .await;
    target.close(&pool).await;
    tried
}

/// How the source's tables and the target's, as the migrations built them, differ in
/// their constraints, `NOT NULL` columns, indexes, triggers and policies
/// ([`catalog::shape`]).
pub(crate) async fn bound_alike(
    source: &Client,
    target: &Client,
    schema: &str,
    history_table: &str,
) -> Result<Vec<String>, Error> {
    Ok(catalog::shape_differences(
        &catalog::shape(source, schema, history_table).await?,
        &catalog::shape(target, schema, history_table).await?,
    ))
}

pub(crate) fn differs(revision: Option<i32>, differences: &[String]) -> Error {
    Error::setup(format!(
        "the tenant's schema differs from what the migrations build at revision {}: {}; a move rebuilds the schema by the migrations, so this would be lost; nothing was moved",
        crate::show::revision(revision),
        differences.join("; ")
    ))
}

/// Removes a move's subscription (target), slot and publication (source), whichever
/// exist. The slot is dropped from the source even when the target cannot be reached.
pub async fn cleanup(cx: &Context<'_>, j: &MoveJournal, tenant_id: i64) -> Result<(), Error> {
    match cleanup_parts(cx, j, tenant_id).await? {
        None => Ok(()),
        Some(target) => Err(target),
    }
}

/// [`cleanup`], telling apart what failed on the target (`Ok(Some)`: the target's
/// subscription was not dropped, because the target was not reached, is no longer
/// configured, or refused) from a failure on the source (`Err`).
pub(crate) async fn cleanup_parts(
    cx: &Context<'_>,
    j: &MoveJournal,
    tenant_id: i64,
) -> Result<Option<Error>, Error> {
    let name = replication_name(tenant_id);
    let by_hand = format!(
        "drop it there by hand if it exists: ALTER SUBSCRIPTION {name} DISABLE; ALTER SUBSCRIPTION {name} SET (slot_name = NONE); DROP SUBSCRIPTION {name}"
    );
    let target_problem = match cx.servers.target(&j.to_server) {
        Err(_) => Some(Error::setup(format!(
            "server {} is no longer in the configuration, so its subscription {name} was not looked for ({by_hand})",
            j.to_server
        ))),
        Ok(target) => match target.connect().await {
            Ok(target) => drop_subscription(&target, &name).await.err(),
            Err(e) => Some(Error::new(
                e.kind(),
                format!(
                    "the target server {} could not be reached to drop subscription {name} ({by_hand}): {e}",
                    j.to_server
                ),
            )),
        },
    };
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
                "SELECT slot_name::text FROM pg_catalog.pg_replication_slots WHERE slot_name LIKE $1 \
                 AND database = pg_catalog.current_database()",
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
    Ok(target_problem)
}

async fn drop_subscription(target: &Client, name: &str) -> Result<(), Error> {
    let exists = target
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_subscription WHERE subname = $1 \
             AND subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())",
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
                // A slot of that name for another database is another registry's move
                // (tenant ids are per registry): never this move's to drop.
                "SELECT active, active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = $1 \
                 AND database = pg_catalog.current_database()",
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

/// After the registry switch: removes the subscription, slot and publication, and
/// refreshes the target's populated materialized views (they are not replicated). An
/// error leaves the move switched and its journal open: a rerun removes what is left.
pub(crate) async fn after_switch(
    cx: &Context<'_>,
    j: &MoveJournal,
    tenant_id: i64,
) -> Result<(), Error> {
    cleanup(cx, j, tenant_id).await?;
    refresh_views(cx, j).await;
    Ok(())
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

/// Logical replication, as the protocol plugs it in. Its step 2, on `session`, the
/// source's locked session: the target built, subscribed and caught up; then the source's
/// tables fenced, the target confirmed level with them, the subscription stopped and the
/// sequences set. Returns with the source's transaction open and fenced.
pub(crate) struct Online;

impl copy::Copier for Online {
    fn action(&self) -> &'static str {
        "move (online)"
    }

    async fn check(&self, cx: &Context<'_>, tenant: &Tenant, to: &str) -> Result<(), Error> {
        check(cx, tenant, to).await
    }

    async fn check_unsettled(
        &self,
        cx: &Context<'_>,
        tenant: &Tenant,
        to: &str,
    ) -> Result<(), Error> {
        check_standing(cx, tenant, to).await
    }

    async fn copy(
        &self,
        cx: &Context<'_>,
        tenant: &Tenant,
        journal: &MoveJournal,
        set: &MigrationSet,
        session: &Session<'_>,
    ) -> Result<copy::Copied, Error> {
        let schema = &tenant.schema_name;
        let name = replication_name(tenant.id);
        let source_server = cx.servers.target(&tenant.server)?;
        let watch_source = source_server.connect().await?;
        // The target: built by the migrations, emptied of seeded rows, subscribed.
        let copy::Start {
            history: _,
            revision,
            target_pool,
            mut target,
        } = copy::begin(cx, tenant, journal, set, session).await?;
        let client = session.client();
        let read = async {
            let catalog = catalog::read(client, schema, &cx.settings.history_table).await?;
            Ok::<_, Error>((catalog, cx.servers.target(&journal.to_server)?))
        };
        let (catalog, target_server) = match read.await {
            Ok(read) => read,
            Err(e) => {
                target.close(&target_pool).await;
                return Err(e);
            }
        };
        let built = async {
            data::build_to(&mut target, schema, revision, set).await?;
            // The source as it is must be what the migrations build: a table or a column
            // made by hand would not be replicated.
            let mut differences = differ(
                client,
                &catalog,
                target.client(),
                schema,
                &cx.settings.history_table,
            )
            .await?;
            differences.extend(
                bound_alike(client, target.client(), schema, &cx.settings.history_table).await?,
            );
            if !differences.is_empty() {
                return Err(differs(revision, &differences));
            }
            let tables: Vec<String> = catalog
                .tables
                .iter()
                .map(|t| qualified(schema, &t.name))
                .collect();
            if !tables.is_empty() {
                target
                    .client()
                    .batch_execute(&format!("TRUNCATE ONLY {}", tables.join(", ")))
                    .await
                    .map_err(query_error("emptying the target's tables"))?;
            }
            quiet_triggers(target.client(), schema).await?;
            let checks = unbind_checks(target.client(), schema).await?;
            Ok::<_, Error>((tables, checks))
        }
        .await;
        target.close(&target_pool).await;
        let (tables, checks) = built?;
        let publish = if tables.is_empty() {
            format!("CREATE PUBLICATION {}", quote(&name))
        } else {
            format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                quote(&name),
                tables.join(", ")
            )
        };
        watch_source
            .batch_execute(&publish)
            .await
            .map_err(query_error("publishing the tenant's tables"))?;
        // The slot is made from the source's side: a CREATE SUBSCRIPTION that made it would
        // wait forever when the target is another database of the same cluster (the slot
        // waits for every running transaction, its own included).
        watch_source
            .execute(
                "SELECT pg_catalog.pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&name],
            )
            .await
            .map_err(query_error("making the move's replication slot"))?;
        crate::failpoint!("online.published");
        let target_client = target_server.connect().await?;
        let conninfo = source_server.conninfo();
        target_client
            .batch_execute(&format!(
                "CREATE SUBSCRIPTION {n} CONNECTION {c} PUBLICATION {n} WITH (copy_data = true, create_slot = false, slot_name = {n}, enabled = true)",
                n = quote(&name),
                c = crate::engine::plan::literal(&conninfo),
            ))
            .await
            // The server's message never holds the connection string.
            .map_err(query_error("subscribing the target to the source"))?;
        // The initial copy makes slots of its own on the source, named after the
        // subscription's oid; the publication's comment records it, so a cleanup finds them
        // even when the target cannot be reached.
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
                    crate::engine::plan::literal(&format!("{SUBSCRIPTION_OID}{oid}"))
                ))
                .await;
        }
        crate::failpoint!("online.subscribed");
        // Catch up.
        let catchup_started = Instant::now();
        loop {
            if cx.interrupt.requested() {
                return Err(Error::new(
                    crate::error::ErrorKind::Interrupted,
                    "interrupted while the target caught up",
                ));
            }
            let seen = look(&watch_source, &target_client, &name, schema).await?;
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
        let (fence_catalog, fenced_at) = copy::fence_source(cx, tenant, client).await?;
        crate::failpoint!("online.cutover-locked");
        // A table or column made on the source during the copy is not replicated: checked
        // with the tables locked, the move is undone rather than lose it.
        let changed = differ(
            client,
            &fence_catalog,
            &target_client,
            schema,
            &cx.settings.history_table,
        )
        .await?;
        if !changed.is_empty() {
            return Err(Error::failed(format!(
                "the tenant's tables changed during the move ({}), which logical replication does not carry",
                changed.join("; ")
            )));
        }
        cutover(
            client,
            &watch_source,
            &target_client,
            &fence_catalog,
            schema,
            &name,
            &checks,
        )
        .await?;
        crate::failpoint!("online.caught-up");
        Ok(copy::Copied {
            tables: fence_catalog.tables.len(),
            rows: None,
            fenced_at,
            catchup_ms: Some(catchup_ms),
        })
    }

    async fn after_switch(
        &self,
        cx: &Context<'_>,
        journal: &MoveJournal,
        tenant_id: i64,
    ) -> Result<(), Error> {
        after_switch(cx, journal, tenant_id).await
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
            "tenant {} moved online from server {} to server {}: caught up in {} ms, writes blocked for {write_block_ms} ms; the old copy was {old_copy}",
            tenant.domain,
            journal.from_server,
            journal.to_server,
            copied.catchup_ms.unwrap_or(0),
        )
    }
}

/// With the source's writes blocked in `client`'s transaction: waits until the target
/// has received everything up to the source's WAL position, stops the subscription,
/// sets the target's sequences, and drops the publication in the source's transaction
/// (it lists the old copy's tables; it comes back if the move is undone before the fence
/// commits).
async fn cutover(
    client: &Client,
    watch_source: &Client,
    target: &Client,
    fenced: &catalog::Catalog,
    schema: &str,
    name: &str,
    checks: &Unbound,
) -> Result<(), Error> {
    let lsn: String = client
        .query_one("SELECT pg_catalog.pg_current_wal_lsn()::text", &[])
        .await
        .map_err(query_error("reading the source's WAL position"))?
        .get(0);
    // A commit of its own flushes the WAL up to here, so the WAL sender can send it.
    watch_source
        .batch_execute("SELECT pg_catalog.txid_current()")
        .await
        .map_err(query_error("flushing the source's WAL"))?;
    let deadline = Instant::now() + CUTOVER_WAIT;
    loop {
        let done: Option<bool> = watch_source
            .query_opt(
                "SELECT confirmed_flush_lsn >= $2::text::pg_lsn FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&name, &lsn],
            )
            .await
            .map_err(query_error("following the target's replay"))?
            .and_then(|r| r.get(0));
        if done == Some(true) {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::failed(format!(
                "the target did not confirm the source's last writes within {} s of blocking them",
                CUTOVER_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    target
        .batch_execute(&format!("ALTER SUBSCRIPTION {} DISABLE", quote(name)))
        .await
        .map_err(query_error("stopping the subscription"))?;
    // Sequences are not replicated: the source's, final while its writes are blocked,
    // read in one round trip (the write block is waiting).
    let setvals: Vec<String> = crate::data::export::sequences(client, schema, &fenced.sequences)
        .await?
        .iter()
        .map(|s| {
            format!(
                "SELECT pg_catalog.setval({}, {}, {})",
                crate::engine::plan::literal(&qualified(schema, &s.name)),
                s.last_value,
                s.is_called
            )
        })
        .collect();
    if !setvals.is_empty() {
        target
            .batch_execute(&setvals.join("; "))
            .await
            .map_err(query_error("setting the target's sequences"))?;
    }
    carry_switches(client, target, schema).await?;
    bind_checks(target, schema, checks).await?;
    // The publication lists the old copy's tables: left in place, it would count as an
    // object depending on them.
    client
        .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote(name)))
        .await
        .map_err(query_error("dropping the move's publication"))?;
    Ok(())
}
