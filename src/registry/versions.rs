//! The version index: one row per tenant schema on each server (the history table's oid,
//! how many versions it holds, the highest, and a digest of them in order), kept exact
//! by the database itself, so a fleet read is one query per server instead of one read
//! of every history table.
//!
//! A statement-level trigger on each tenant's history table (`AFTER INSERT OR UPDATE OR
//! DELETE OR TRUNCATE`, enabled `ALWAYS`, so `session_replication_role = replica` does
//! not skip it) recomputes the schema's row from the whole table in the writer's own
//! transaction; the trigger function runs with the index owner's rights and a pinned
//! `search_path`. With each row it records what only a write to the history table can
//! keep in step: the transaction that wrote the row (a hand edit of the row is another
//! transaction), the `xmin` of the trigger's catalog row (disabling and enabling the
//! trigger again changes it) and of the table's (an `ALTER TABLE` changes it).
//!
//! [`read`] trusts a row only when all of that still holds; any other tenant, and one
//! whose digest is not the digest the files give for that many versions, is read in
//! full, as before the index existed (see [`crate::registry::state`]).

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use tokio_postgres::types::Type;

use crate::error::{Error, ErrorKind};
use crate::files::migrations::{AppliedRow, MigrationSet};
use crate::ident::{literal, qualified, quote};
use crate::pg::db::{self, Reads};

/// The index table's name, in the index schema.
pub const TABLE: &str = "tenant_versions";
/// The trigger's name on each tenant's history table.
pub const TRIGGER: &str = "tenantctl_versions";
/// The schema that holds the index on a server other than the registry's.
pub const OTHER_SCHEMA: &str = "tenantctl";
/// The trigger function, in the index schema.
const REFRESH: &str = "tenant_versions_refresh";
/// The event trigger function that marks the rows of history tables, triggers and
/// schemas a DDL command touched, in the index schema.
const WATCH: &str = "tenant_versions_watch";
/// The table recording the event triggers as they were when the index was last made
/// whole under them (see [`arm`]), in the index schema.
pub const WATCH_TABLE: &str = "tenant_versions_watch";
/// The two events the watch listens to: the end of the DDL commands in [`WATCH_TAGS`],
/// and every drop.
const WATCH_EVENTS: [&str; 2] = ["ddl_command_end", "sql_drop"];
/// What [`prepare_watch`] marks every row with: written before the watch was armed.
const ARMED: &str = "armed";
/// The DDL commands whose end the watch sees: those that can change a history table
/// (its columns, triggers, owner, row-level security, inheritance, name or schema),
/// its trigger, or its schema's name, or that can make a table inherit from it. ALTER
/// INDEX, ALTER SEQUENCE, ALTER VIEW and ALTER MATERIALIZED VIEW among them, since
/// PostgreSQL lets them rename or move a table, and CREATE SCHEMA, whose own CREATE
/// TABLE can inherit. And those that can replace or rename a function of the index's
/// (CREATE FUNCTION, ALTER FUNCTION): a command that touches the index itself disarms
/// the watch. Not the others (CREATE INDEX, CREATE VIEW, COMMENT, GRANT...), which
/// cannot, and which a migration runs often.
const WATCH_TAGS: [&str; 17] = [
    "ALTER FOREIGN TABLE",
    "ALTER FUNCTION",
    "ALTER INDEX",
    "ALTER MATERIALIZED VIEW",
    "ALTER POLICY",
    "ALTER SCHEMA",
    "ALTER SEQUENCE",
    "ALTER TABLE",
    "ALTER TRIGGER",
    "ALTER VIEW",
    "CREATE FOREIGN TABLE",
    "CREATE FUNCTION",
    "CREATE POLICY",
    "CREATE RULE",
    "CREATE SCHEMA",
    "CREATE TABLE",
    "CREATE TRIGGER",
];

/// The tags the event trigger for `event` filters on, as SQL (`NULL`: every command).
fn watch_tags_sql(event: &str) -> String {
    if event == "sql_drop" {
        return "NULL".into();
    }
    format!("ARRAY[{}]::text[]", WATCH_TAGS.map(literal).join(", "))
}
/// The function that recomputes one history table's row, in the index schema.
const SYNC: &str = "tenant_versions_sync";
/// `pg_trigger.tgtype` of an `AFTER INSERT OR DELETE OR UPDATE OR TRUNCATE ... FOR EACH
/// STATEMENT` trigger (4 + 8 + 16 + 32).
const TGTYPE: i16 = 60;
/// The functions' pinned settings, as `pg_proc.proconfig` shows them: only the catalog's
/// functions and operators are found, and a row-level security policy (code the table's
/// owner wrote) is never run with the index owner's rights: a table it would apply to
/// is not read. And no sequential scan: the catalog lookups are by key, and a plan
/// cached while the fleet's `pg_trigger` or `pg_namespace` was small must not scan
/// them whole on every write once they are not (it made the trigger a fifth of an
/// upgrade's time). Nor JIT compilation: with sequential scans off, a table that has
/// no other way (a history table without its key) costs past `jit_above_cost`, and
/// the history is read by a statement planned anew on each write.
const PINNED: &str = "search_path=pg_catalog, pg_temp,row_security=off,enable_seqscan=off,jit=off";
/// The functions' settings as `CREATE FUNCTION` gives them.
const PINNED_SQL: &str =
    "SET search_path = pg_catalog, pg_temp SET row_security = off SET enable_seqscan = off SET jit = off";
/// The advisory lock space the trigger serializes one history table's recomputations
/// in (`'vers'`): two writers of one table recompute its row one after the other, the
/// second from a snapshot that sees the first's rows.
const LOCK_SPACE: i32 = 0x7665_7273;

/// The history table `rel`'s (an oid expression) four columns as the index depends on
/// them: `N:H`, where N counts those of the four that are there, not dropped, of the
/// types whose text tenantctl reads as the index does (`version` an `int4`, the others
/// `varchar` or `text`: a `char(n)` pads, a type of the owner's own runs the owner's
/// cast), and H sums a hash of each one's `pg_attribute.xmin`. N is 4 when the index
/// can read the table. A rename, a drop or a change of type rewrites the column's row
/// (while a rename changes neither the table's oid nor its `pg_class` row), so H
/// changes: the row records this, the reader compares it. One pass over the table's
/// columns in key order, and no sort: the reader does this for every tenant.
fn columns_signature(rel: &str) -> String {
    format!(
        "(SELECT pg_catalog.count(*)::text || ':' \
            || coalesce(pg_catalog.sum(pg_catalog.hashint8(a.xmin::text::bigint)), 0)::text \
          FROM pg_catalog.pg_attribute a \
          WHERE a.attrelid = {rel} AND a.attnum > 0 AND NOT a.attisdropped \
          AND ((a.attname = 'version' AND a.atttypid = 'pg_catalog.int4'::pg_catalog.regtype) \
            OR (a.attname IN ('name', 'applied_on', 'checksum') \
                AND a.atttypid IN ('pg_catalog.varchar'::pg_catalog.regtype, 'pg_catalog.text'::pg_catalog.regtype))))"
    )
}

/// Whether a [`columns_signature`] `sig` says the index can read the table.
fn columns_ok(sig: &str) -> String {
    format!("pg_catalog.starts_with({sig}, '4:')")
}

/// Where the index lives on server `server`: the registry schema on the registry's
/// server, [`OTHER_SCHEMA`] elsewhere.
pub fn schema_for<'a>(server: &str, registry_schema: &'a str) -> &'a str {
    if crate::registry::servers::is_default(server) {
        registry_schema
    } else {
        OTHER_SCHEMA
    }
}

/// Whether `applied_on` is, beyond doubt, a time tenantctl reads: an RFC 3339 time with
/// a four-digit year from 1000 to 2999, a day that exists in its month, at most nine
/// digits of fractions, no leap second. A history with any other value is not vouched
/// for by the index, and is read in full (where the full read decides).
fn applied_on_check(col: &str) -> String {
    let year = format!("substr({col}, 1, 4)::int");
    let month = format!("substr({col}, 6, 2)::int");
    let day = format!("substr({col}, 9, 2)::int");
    format!(
        "CASE WHEN {col} ~ '^[12][0-9]{{3}}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{{1,9}})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$' \
         THEN {day} <= CASE WHEN {month} IN (4, 6, 9, 11) THEN 30 \
           WHEN {month} = 2 THEN CASE WHEN ({year} % 4 = 0 AND {year} % 100 <> 0) OR {year} % 400 = 0 THEN 29 ELSE 28 END \
           ELSE 31 END \
         ELSE false END"
    )
}

/// The body of the function that recomputes one history table's row (`relid`). It
/// writes nothing for a table without the trigger, and a digest only when every row
/// has all four columns and a time the index vouches for; a table it cannot read gets
/// a row that is never trusted. With the row it records the schema's and the trigger's
/// oids and the table's name (what the watch marks the row by, see [`watch_body`]), and,
/// in `unsound`, why the table as it is now cannot be vouched for (inheritance, its
/// columns, the trigger not enabled `ALWAYS` or not the one tenantctl installs); it
/// clears the watch's mark, since it has just read everything the mark stood for.
fn sync_body(index: &str) -> String {
    let table = qualified(index, TABLE);
    let valid = applied_on_check("h.applied_on");
    let signature = columns_signature("c.oid");
    let table_lit = literal(&table);
    let refresh_lit = literal(&format!("{}()", qualified(index, REFRESH)));
    let cols_ok = columns_ok("cols");
    format!(
        "
DECLARE
    nsp text;
    nsp_oid oid;
    rel_name text;
    class_x xid;
    trigger_x xid;
    trigger_o oid;
    trigger_on \"char\";
    trigger_ok boolean;
    kind \"char\";
    inherited boolean;
    n integer := 0;
    top integer;
    d text;
    readable boolean;
    cols text;
    unsound text;
    vs integer[];
    ns text[];
    ats text[];
    cs text[];
BEGIN
    IF pg_catalog.to_regclass({table_lit}) IS NULL THEN
        -- The index was dropped: nothing to keep, and no write may fail for it.
        RETURN;
    END IF;
    IF (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass({table_lit}))
       IS DISTINCT FROM (SELECT o.oid FROM pg_catalog.pg_roles o WHERE o.rolname = CURRENT_USER) THEN
        -- Another role's table in the index's place (its schema's owner may drop the
        -- index and make one): nothing is written into it with this function's rights.
        RETURN;
    END IF;
    PERFORM pg_catalog.pg_advisory_xact_lock({LOCK_SPACE},
        (relid::pg_catalog.oid::bigint - 2147483648)::integer);
    SELECT s.nspname, s.oid, c.relname::text, c.xmin, c.relkind,
        c.relhassubclass OR c.relispartition
            OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid),
        {signature}
    INTO nsp, nsp_oid, rel_name, class_x, kind, inherited, cols
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace
    WHERE c.oid = relid;
    readable := kind = 'r' AND {cols_ok};
    SELECT t.xmin, t.oid, t.tgenabled,
        t.tgfoid = pg_catalog.to_regprocedure({refresh_lit}) AND t.tgtype = {TGTYPE}
            AND t.tgqual IS NULL AND t.tgnargs = 0 AND t.tgattr::text = ''
    INTO trigger_x, trigger_o, trigger_on, trigger_ok
    FROM pg_catalog.pg_trigger t
    WHERE t.tgrelid = relid AND t.tgname = '{TRIGGER}';
    IF nsp IS NULL OR trigger_x IS NULL THEN
        RETURN;
    END IF;
    unsound := CASE WHEN kind <> 'r' OR inherited THEN 'inherited'
        WHEN NOT readable THEN 'columns'
        WHEN trigger_on <> 'A' THEN 'trigger_disabled'
        WHEN trigger_ok IS NOT TRUE THEN 'trigger_changed' END;
    IF readable THEN
    BEGIN
        -- The history is fetched by a statement as small as can be, since it is
        -- planned anew on each write; what is computed from it is planned once.
        EXECUTE 'SELECT pg_catalog.array_agg(version ORDER BY version), '
            || 'pg_catalog.array_agg(name::text ORDER BY version), '
            || 'pg_catalog.array_agg(applied_on::text ORDER BY version), '
            || 'pg_catalog.array_agg(checksum::text ORDER BY version) FROM ONLY ' || relid::text
        INTO vs, ns, ats, cs;
        SELECT count(*)::integer, max(h.version)::integer,
            CASE WHEN bool_and(h.version IS NOT NULL AND h.name IS NOT NULL
                               AND h.checksum IS NOT NULL AND h.applied_on IS NOT NULL
                               AND {valid}) IS NOT FALSE
            THEN pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
                coalesce(pg_catalog.string_agg(
                    h.version::text || ' ' || pg_catalog.length(h.name)::text || ' '
                    || h.name || ' ' || h.checksum,
                    E'\\n' ORDER BY h.version), ''), 'UTF8')), 'hex') END
        INTO n, top, d
        FROM ROWS FROM (pg_catalog.unnest(vs), pg_catalog.unnest(ns), pg_catalog.unnest(ats),
                        pg_catalog.unnest(cs)) AS h(version, name, applied_on, checksum);
    EXCEPTION WHEN OTHERS THEN
        n := 0;
        top := NULL;
        d := NULL;
    END;
    END IF;
    INSERT INTO {table} AS v
        (schema_name, history_oid, applied, highest, digest, trigger_xmin, class_xmin,
         written_xid, written_at, columns, schema_oid, trigger_oid, history_name, unsound,
         changed)
    VALUES (nsp, relid, n, top, d, trigger_x, class_x,
            (pg_catalog.txid_current() % 4294967296)::text::xid, pg_catalog.now(), cols,
            nsp_oid, trigger_o, rel_name, unsound, NULL)
    ON CONFLICT (schema_name) DO UPDATE SET
        history_oid = EXCLUDED.history_oid, applied = EXCLUDED.applied,
        highest = EXCLUDED.highest, digest = EXCLUDED.digest,
        trigger_xmin = EXCLUDED.trigger_xmin, class_xmin = EXCLUDED.class_xmin,
        written_xid = EXCLUDED.written_xid, written_at = EXCLUDED.written_at,
        columns = EXCLUDED.columns, schema_oid = EXCLUDED.schema_oid,
        trigger_oid = EXCLUDED.trigger_oid, history_name = EXCLUDED.history_name,
        unsound = EXCLUDED.unsound, changed = NULL;
END
"
    )
}

/// The body of the event trigger function, the watch: for every DDL command (at its
/// end) and every object dropped, it marks, in `changed`, the index rows of the history
/// tables it touched (the table itself, a column, a trigger, a rule, a policy, a
/// constraint or default on it, a table it inherits from or that inherits from it), of
/// the schema, or of the trigger, with the command's tag. A marked row is not trusted
/// until the table's trigger writes it again. With the watch armed, a fleet read needs
/// no catalog lookup per tenant: what a catalog lookup would find changed, a DDL
/// command changed, and the watch saw it.
fn watch_body(index: &str) -> String {
    let table = qualified(index, TABLE);
    let watch_table = qualified(index, WATCH_TABLE);
    let own_names = [TABLE, WATCH_TABLE, SYNC, REFRESH, WATCH]
        .map(literal)
        .join(", ");
    let fun = |name: &str, args: &str| literal(&format!("{}({args})", qualified(index, name)));
    format!(
        "
DECLARE
    r record;
    rel oid;
    t oid;
    ns oid;
    touched boolean := false;
    disarm boolean := false;
BEGIN
    -- Most DDL touches nothing of the index's: this is kept cheap for it.
    t := pg_catalog.to_regclass({table_lit});
    IF t IS NULL THEN
        -- No index table (dropped, or renamed away): nothing to mark. The index is
        -- made whole again when it is back (see `touched`) or installed anew.
        RETURN;
    END IF;
    SELECT c.relnamespace INTO ns
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace
    WHERE c.oid = t
    AND c.relowner = (SELECT o.oid FROM pg_catalog.pg_roles o WHERE o.rolname = CURRENT_USER)
    AND (s.nspowner = c.relowner OR coalesce((SELECT o.rolsuper FROM pg_catalog.pg_roles o
            WHERE o.oid = CASE WHEN s.nspowner = pg_catalog.to_regrole('pg_database_owner')
                THEN (SELECT d.datdba FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
                ELSE s.nspowner END), false));
    IF ns IS NULL THEN
        -- A table, or a schema, that a role other than this function's owner (or a
        -- superuser) owns could be replaced by that role with one whose triggers would
        -- run as this function's owner: nothing of it is touched. (The watch is not
        -- armed then, and every read checks the catalog.)
        RETURN;
    END IF;
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        -- This transaction's snapshot may not see a row written since it began, and
        -- a row it cannot see it cannot mark: the watch disarms itself instead.
        disarm := true;
    ELSE
    BEGIN
    IF TG_EVENT = 'sql_drop' THEN
        FOR r IN SELECT o.classid, o.objid, o.object_name, o.address_names
                 FROM pg_catalog.pg_event_trigger_dropped_objects() o LOOP
            IF (r.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND r.object_name = {schema_lit})
               OR (r.classid IN ('pg_catalog.pg_class'::pg_catalog.regclass, 'pg_catalog.pg_proc'::pg_catalog.regclass)
                   AND r.address_names[1] = {schema_lit} AND r.address_names[2] IN ({own_names})) THEN
                touched := true;
            ELSIF r.classid = 'pg_catalog.pg_class'::pg_catalog.regclass THEN
                UPDATE {table} SET changed = TG_TAG
                WHERE schema_name IN (SELECT v.schema_name FROM {table} v
                    WHERE v.history_oid = r.objid AND v.changed IS NULL FOR UPDATE NOWAIT);
            ELSIF r.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass THEN
                UPDATE {table} SET changed = TG_TAG
                WHERE schema_name IN (SELECT v.schema_name FROM {table} v
                    WHERE v.schema_oid = r.objid AND v.changed IS NULL FOR UPDATE NOWAIT);
            ELSIF r.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass THEN
                UPDATE {table} SET changed = TG_TAG
                WHERE schema_name IN (SELECT v.schema_name FROM {table} v
                    WHERE v.trigger_oid = r.objid AND v.changed IS NULL FOR UPDATE NOWAIT);
            END IF;
        END LOOP;
    ELSE
    FOR r IN SELECT c.classid, c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c LOOP
        IF r.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass THEN
            IF r.objid = ns THEN
                touched := true;
            ELSE
                UPDATE {table} SET changed = TG_TAG
                WHERE schema_name IN (SELECT v.schema_name FROM {table} v
                    WHERE v.schema_oid = r.objid AND v.changed IS NULL FOR UPDATE NOWAIT);
            END IF;
            CONTINUE;
        END IF;
        IF r.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass THEN
            IF r.objid IN (pg_catalog.to_regprocedure({sync_fn}), pg_catalog.to_regprocedure({refresh_fn}),
                           pg_catalog.to_regprocedure({watch_fn})) THEN
                touched := true;
            END IF;
            CONTINUE;
        END IF;
        rel := CASE r.classid
            WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN r.objid
            WHEN 'pg_catalog.pg_trigger'::pg_catalog.regclass THEN
                (SELECT g.tgrelid FROM pg_catalog.pg_trigger g WHERE g.oid = r.objid)
            WHEN 'pg_catalog.pg_rewrite'::pg_catalog.regclass THEN
                (SELECT w.ev_class FROM pg_catalog.pg_rewrite w WHERE w.oid = r.objid)
            WHEN 'pg_catalog.pg_policy'::pg_catalog.regclass THEN
                (SELECT p.polrelid FROM pg_catalog.pg_policy p WHERE p.oid = r.objid)
            WHEN 'pg_catalog.pg_constraint'::pg_catalog.regclass THEN
                (SELECT k.conrelid FROM pg_catalog.pg_constraint k WHERE k.oid = r.objid)
            WHEN 'pg_catalog.pg_attrdef'::pg_catalog.regclass THEN
                (SELECT a.adrelid FROM pg_catalog.pg_attrdef a WHERE a.oid = r.objid)
            END;
        IF rel = t OR rel = pg_catalog.to_regclass({watch_lit}) THEN
            touched := true;
            CONTINUE;
        END IF;
        IF r.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass THEN
            UPDATE {table} SET changed = TG_TAG
            WHERE schema_name IN (SELECT v.schema_name FROM {table} v
                WHERE v.trigger_oid = r.objid AND v.changed IS NULL FOR UPDATE NOWAIT);
        END IF;
        IF rel IS NOT NULL AND rel <> 0 AND (
            EXISTS (SELECT 1 FROM {table} v WHERE v.history_oid = rel)
            OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = rel)
            OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhparent = rel)) THEN
            UPDATE {table} SET changed = TG_TAG
            WHERE schema_name IN (SELECT v.schema_name FROM {table} v
                WHERE v.changed IS NULL AND v.history_oid IN (
                    SELECT rel
                    UNION ALL SELECT i.inhparent FROM pg_catalog.pg_inherits i WHERE i.inhrelid = rel
                    UNION ALL SELECT i.inhrelid FROM pg_catalog.pg_inherits i WHERE i.inhparent = rel)
                FOR UPDATE NOWAIT);
        END IF;
    END LOOP;
    END IF;
    EXCEPTION WHEN OTHERS THEN
        -- A row that could not be marked (a writer holds it: rows are taken NOWAIT, so
        -- the command never waits for one; a lock not granted in time; a table edited
        -- by hand...): the watch disarms itself instead of failing the command.
        disarm := true;
    END;
    END IF;
    IF touched THEN
        -- The index or the watch itself was changed: a write may have gone unrecorded
        -- meanwhile (e.g. with the index's function renamed away). Every row is
        -- marked (if the table can be written), and the watch disarmed.
        BEGIN
            UPDATE {table} SET changed = TG_TAG
            WHERE schema_name IN (SELECT v.schema_name FROM {table} v
                WHERE v.changed IS NULL FOR UPDATE NOWAIT);
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
        disarm := true;
    END IF;
    IF disarm THEN
        -- An upsert: under REPEATABLE READ, a record written since the snapshot is a
        -- serialization failure (the command is retried), never a record left armed.
        BEGIN
            INSERT INTO {watch_table} AS w (event, trigger_xmin, armed_at)
            VALUES ('ddl_command_end', '0', pg_catalog.now()), ('sql_drop', '0', pg_catalog.now())
            ON CONFLICT (event) DO UPDATE SET trigger_xmin = '0', armed_at = EXCLUDED.armed_at;
        EXCEPTION WHEN undefined_table OR undefined_column THEN
            -- No record: the watch is not armed.
            NULL;
        END;
    END IF;
END
",
        table_lit = literal(&table),
        watch_lit = literal(&watch_table),
        schema_lit = literal(index),
        sync_fn = fun(SYNC, "pg_catalog.regclass"),
        refresh_fn = fun(REFRESH, ""),
        watch_fn = fun(WATCH, ""),
    )
}

/// The body of the trigger function: only the trigger tenantctl installs, at statement
/// level, recomputes the row.
fn refresh_body(index: &str) -> String {
    let sync = qualified(index, SYNC);
    let sync_lit = literal(&format!("{sync}(pg_catalog.regclass)"));
    format!(
        "
BEGIN
    IF TG_NAME OPERATOR(pg_catalog.=) '{TRIGGER}' AND TG_LEVEL OPERATOR(pg_catalog.=) 'STATEMENT'
       AND pg_catalog.to_regprocedure({sync_lit}) IS NOT NULL
       -- Only the function its own owner wrote: the schema's owner could have put
       -- another in its place, which would then run with this owner's rights.
       AND (SELECT p.proowner FROM pg_catalog.pg_proc p
            WHERE p.oid OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure({sync_lit}))
           OPERATOR(pg_catalog.=) (SELECT r.oid FROM pg_catalog.pg_roles r
            WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER) THEN
        -- (A dropped index makes no write fail.)
        PERFORM {sync}(TG_RELID::pg_catalog.regclass);
    END IF;
    RETURN NULL;
END
"
    )
}

/// The index on one server, in schema `index`: its schema, table and functions.
/// Idempotent.
fn install_sql(index: &str) -> String {
    let s = quote(index);
    let table = qualified(index, TABLE);
    let sync = qualified(index, SYNC);
    let refresh = qualified(index, REFRESH);
    format!(
        "DO $tenantctl_schema$ BEGIN
    IF pg_catalog.to_regnamespace({s_lit}) IS NULL THEN CREATE SCHEMA {s}; END IF;
END $tenantctl_schema$;
CREATE TABLE IF NOT EXISTS {table} (
    schema_name text PRIMARY KEY,
    history_oid oid NOT NULL,
    applied integer NOT NULL,
    highest integer,
    digest text,
    trigger_xmin xid NOT NULL,
    class_xmin xid NOT NULL,
    written_xid xid NOT NULL,
    written_at timestamptz NOT NULL,
    columns text,
    schema_oid oid,
    trigger_oid oid,
    history_name text,
    unsound text,
    changed text
);
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS columns text,
    ADD COLUMN IF NOT EXISTS schema_oid oid, ADD COLUMN IF NOT EXISTS trigger_oid oid,
    ADD COLUMN IF NOT EXISTS history_name text, ADD COLUMN IF NOT EXISTS unsound text,
    ADD COLUMN IF NOT EXISTS changed text;
-- Half-full pages: a row's rewrite (one per write to a history table) then fits beside
-- it, a heap-only update that touches none of the table's indexes.
ALTER TABLE {table} SET (fillfactor = 50);
CREATE INDEX IF NOT EXISTS tenant_versions_history_oid ON {table} (history_oid);
CREATE INDEX IF NOT EXISTS tenant_versions_schema_oid ON {table} (schema_oid);
CREATE INDEX IF NOT EXISTS tenant_versions_trigger_oid ON {table} (trigger_oid);
REVOKE ALL ON {table} FROM PUBLIC;
CREATE TABLE IF NOT EXISTS {watch_table} (
    event text PRIMARY KEY,
    trigger_xmin xid NOT NULL,
    armed_at timestamptz NOT NULL
);
REVOKE ALL ON {watch_table} FROM PUBLIC;
COMMENT ON TABLE {watch_table} IS 'tenantctl: the event triggers the version index was last made whole under';
COMMENT ON TABLE {table} IS 'tenantctl: each tenant schema''s applied migrations, kept by the {TRIGGER} trigger on its history table; safe to drop (tenantctl init rebuilds it)';
CREATE OR REPLACE FUNCTION {sync}(relid pg_catalog.regclass) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER {PINNED_SQL}
    AS {body};
REVOKE ALL ON FUNCTION {sync}(pg_catalog.regclass) FROM PUBLIC;
CREATE OR REPLACE FUNCTION {refresh}() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER {PINNED_SQL}
    AS {trigger};
CREATE OR REPLACE FUNCTION {watch}() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER {PINNED_SQL}
    AS {watcher};
REVOKE ALL ON FUNCTION {watch}() FROM PUBLIC;
",
        s_lit = literal(&s),
        body = dollar(&sync_body(index)),
        trigger = dollar(&refresh_body(index)),
        watch = qualified(index, WATCH),
        watcher = dollar(&watch_body(index)),
        watch_table = qualified(index, WATCH_TABLE),
    )
}

/// `text` as a dollar-quoted literal.
fn dollar(text: &str) -> String {
    format!("$tenantctl_body${text}$tenantctl_body$")
}

/// What [`install`] did on one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// The index was already there as this tenantctl installs it.
    Present,
    /// It was created or brought up to date.
    Created,
}

/// Installs the index on `client`'s server in schema `index`, unless it is there as
/// this binary writes it; under an advisory lock, so concurrent runs do not race.
pub async fn install(client: &db::Client, index: &str) -> Result<Installed, Error> {
    if present(client, index).await? {
        return Ok(Installed::Present);
    }
    let (k1, k2) = db::lock_key(db::LockSpace::Registry, &format!("{index}.{TABLE}"));
    let doing = format!("installing the version index in schema {}", quote(index));
    let sql = format!(
        "BEGIN; SELECT pg_advisory_xact_lock({k1}, {k2}); {}; COMMIT",
        install_sql(index)
    );
    if let Err(e) = client.batch_execute(&sql).await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(Error::failed(format!("{doing}: {}", db::pg_message(&e))));
    }
    Ok(Installed::Created)
}

/// Whether the index's table and both functions are there, as this binary writes them.
async fn present(client: &db::Client, index: &str) -> Result<bool, Error> {
    let row = db::read(
        client,
        "looking for the version index",
        client.pg().query_typed(
            "SELECT to_regclass($1) IS NOT NULL AND to_regclass($7) IS NOT NULL AND \
             (SELECT count(*) FROM pg_catalog.pg_proc p \
              WHERE (p.oid = to_regprocedure($2) AND p.prosrc = $3 \
                  OR p.oid = to_regprocedure($4) AND p.prosrc = $5 \
                  OR p.oid = to_regprocedure($8) AND p.prosrc = $9) \
              AND p.prosecdef AND array_to_string(p.proconfig, ',') = $6) = 3",
            &[
                (&qualified(index, TABLE), Type::TEXT),
                (&format!("{}()", qualified(index, REFRESH)), Type::TEXT),
                (&refresh_body(index), Type::TEXT),
                (&format!("{}(regclass)", qualified(index, SYNC)), Type::TEXT),
                (&sync_body(index), Type::TEXT),
                (&PINNED, Type::TEXT),
                (&qualified(index, WATCH_TABLE), Type::TEXT),
                (&format!("{}()", qualified(index, WATCH)), Type::TEXT),
                (&watch_body(index), Type::TEXT),
            ],
        ),
    )
    .await?;
    Ok(row.first().is_some_and(|r| r.get::<_, bool>(0)))
}

/// The SQL that puts the trigger on `schema`'s history table `history` (unless it is
/// there as tenantctl installs it) and recomputes its row: nothing when the table or
/// the index is not there, or when the table cannot have the trigger (a Citus
/// distributed table): never an error that would fail the caller's work. Idempotent;
/// runs in the caller's transaction if there is one.
pub fn attach_sql(index: &str, schema: &str, history: &str) -> String {
    let table = qualified(schema, history);
    let refresh = format!("{}()", qualified(index, REFRESH));
    format!(
        "DO $tenantctl_attach$
DECLARE
    t pg_catalog.regclass := pg_catalog.to_regclass({table_lit});
    f pg_catalog.regprocedure := pg_catalog.to_regprocedure({refresh_lit});
BEGIN
    IF t IS NULL OR f IS NULL THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g WHERE g.tgrelid = t
                   AND g.tgname = '{TRIGGER}' AND g.tgfoid = f AND g.tgenabled = 'A'
                   AND g.tgtype = {TGTYPE} AND g.tgqual IS NULL AND g.tgnargs = 0
                   AND g.tgattr::text = '') THEN
        BEGIN
            -- Not DROP ... IF EXISTS, whose notice for every new table is noise.
            IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g WHERE g.tgrelid = t
                       AND g.tgname = '{TRIGGER}') THEN
                DROP TRIGGER {trigger} ON {table};
            END IF;
            CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
                FOR EACH STATEMENT EXECUTE PROCEDURE {refresh};
            ALTER TABLE {table} ENABLE ALWAYS TRIGGER {trigger};
        EXCEPTION WHEN OTHERS THEN
            -- A table that cannot have the trigger (a Citus distributed table, a role
            -- that may not create it): the tenant is read in full, nothing fails.
            RETURN;
        END;
    END IF;
    -- Outside the block above, so that the row is written by this transaction itself
    -- and not by a subtransaction the reader cannot tell from a hand edit.
    DELETE FROM {table} WHERE false;
END
$tenantctl_attach$",
        table_lit = literal(&table),
        refresh_lit = literal(&refresh),
        trigger = quote(TRIGGER),
    )
}

/// The name of the watch's event trigger for `event` (one of [`WATCH_EVENTS`]). Event
/// triggers belong to the database, not to a schema: the name carries a hash of the
/// index schema's, so two indexes in one database each have their own.
fn event_trigger(index: &str, event: &str) -> String {
    let short = if event == "sql_drop" { "drop" } else { "ddl" };
    let hash = hex::encode(Sha256::digest(index.as_bytes()));
    format!("tenantctl_versions_{short}_{}", &hash[..8])
}

/// Whether the watch is armed on a server: its two event triggers are there, enabled
/// `ALWAYS`, call the watch function as this tenantctl writes it, and have not been
/// touched (disabled and enabled again, recreated) since [`arm`] recorded them. An SQL
/// expression over parameters `$7` (the functions' settings), `$8` (the watch
/// function's signature), `$9` (its source), `$10` and `$11` (the event triggers'
/// names).
fn armed_expr(index: &str) -> String {
    format!(
        "({owned} AND (SELECT count(*) = 2 FROM pg_catalog.pg_event_trigger e \
           JOIN {watch_table} w ON w.event = e.evtevent::text \
           WHERE e.evtname IN ($10, $11) \
           AND (e.evtname = $10) = (e.evtevent = 'ddl_command_end') \
           AND e.evtenabled = 'A' AND e.xmin = w.trigger_xmin \
           AND (CASE WHEN e.evtevent = 'sql_drop' THEN e.evttags IS NULL \
             ELSE e.evttags @> {tags} AND e.evttags <@ {tags} END) \
           AND e.evtfoid = (SELECT p.oid FROM pg_catalog.pg_proc p \
             WHERE p.oid = to_regprocedure($8) AND p.prosrc = $9 AND p.prosecdef \
             AND array_to_string(p.proconfig, ',') = $7)))",
        owned = owned_expr(index),
        watch_table = qualified(index, WATCH_TABLE),
        tags = watch_tags_sql(WATCH_EVENTS[0]),
    )
}

/// Whether the index schema and everything of the index and its watch in it (the two
/// tables, the three functions) are owned by superusers: the event triggers run the
/// watch function, as its owner, on every role's DDL, and it writes the index table by
/// name. A role that owned any of these (or the schema, whose owner can drop and
/// replace what is in it) could have a superuser run its code. The `public` schema's
/// owner `pg_database_owner` stands for the database's owner.
fn owned_expr(index: &str) -> String {
    let class = |name: &str| {
        format!(
            "((SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass({})))",
            literal(&qualified(index, name))
        )
    };
    let function = |name: &str, args: &str| {
        format!(
            "((SELECT p.proowner FROM pg_catalog.pg_proc p WHERE p.oid = pg_catalog.to_regprocedure({})))",
            literal(&format!("{}({args})", qualified(index, name)))
        )
    };
    format!(
        "(SELECT pg_catalog.bool_and(coalesce(owner_role.rolsuper, false)) FROM (VALUES \
           ((SELECT CASE WHEN n.nspowner = pg_catalog.to_regrole('pg_database_owner') \
               THEN (SELECT d.datdba FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()) \
               ELSE n.nspowner END FROM pg_catalog.pg_namespace n WHERE n.nspname = {schema})), \
           {table}, {watch_table}, {sync}, {refresh}, {watch}) AS o(owner) \
         LEFT JOIN pg_catalog.pg_roles owner_role ON owner_role.oid = o.owner)",
        schema = literal(index),
        table = class(TABLE),
        watch_table = class(WATCH_TABLE),
        sync = function(SYNC, "pg_catalog.regclass"),
        refresh = function(REFRESH, ""),
        watch = function(WATCH, ""),
    )
}

/// The watch's state on one server, as `check` and `init` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// Armed: a fleet read needs no catalog lookup per tenant.
    Armed,
    /// Not armed, and why: each tenant's row is checked against the catalog.
    Unarmed(String),
}

/// Reads the watch's state on `client`'s server (index in schema `index`).
pub async fn watch_state<C: Reads + ?Sized>(client: &C, index: &str) -> Result<Watch, Error> {
    let sql = format!(
        "SELECT {armed}, \
           (SELECT count(*) FROM pg_catalog.pg_event_trigger e WHERE e.evtname IN ($10, $11)), \
           current_setting('is_superuser') = 'on', \
           coalesce({owned}, false), \
           (SELECT r.rolname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles r ON r.oid = c.relowner \
            WHERE c.oid = to_regclass($2)) \
         FROM (SELECT $1::text[], $3::text, $4::text, $5::text, $6::text) AS unused",
        armed = armed_expr(index),
        owned = owned_expr(index),
    );
    let table = qualified(index, TABLE);
    let (none, table): (&[String], &str) = (&[], &table);
    let rest = index_params(index);
    let params = params(&none, &table, &rest, 11);
    let rows = match db::read(
        client,
        "reading the version index's watch",
        client.pg().query_typed(&sql, &params),
    )
    .await
    {
        Ok(rows) => rows,
        Err(e) if e.kind() == ErrorKind::Unavailable => return Err(e),
        Err(_) => {
            return Ok(Watch::Unarmed(
                "the version index is not installed as this tenantctl installs it; `tenantctl init` installs it".into(),
            ))
        }
    };
    let Some(row) = rows.first() else {
        return Ok(Watch::Unarmed("the watch could not be read".into()));
    };
    let (armed, present, superuser, owned): (Option<bool>, i64, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let owner: Option<String> = row.get(4);
    if armed == Some(true) {
        return Ok(Watch::Armed);
    }
    Ok(Watch::Unarmed(unarmed_why(
        present > 0,
        superuser,
        owned,
        owner.as_deref(),
    )))
}

/// Why the watch is not armed, in words.
fn unarmed_why(present: bool, superuser: bool, owned: bool, owner: Option<&str>) -> String {
    if !owned {
        return format!(
            "the version index (its schema, tables or functions) is not all owned by superusers (its table's owner is {}): its event triggers would run the watch on every role's DDL, so tenantctl arms them only over a schema and objects superusers own",
            owner.map(crate::ident::shown).unwrap_or_else(|| "unknown".into())
        );
    }
    let rerun = if superuser {
        "`tenantctl init` arms it"
    } else {
        "`tenantctl init` run as a superuser arms it (creating an event trigger takes one)"
    };
    if present {
        format!("the version index's event triggers were disabled, changed or not armed since they were installed: {rerun}")
    } else {
        format!("the version index's event triggers are not installed: {rerun}")
    }
}

/// What [`prepare_watch`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preparing {
    /// The watch is armed already.
    Armed,
    /// The event triggers were (re)created, with these `xmin`s: every row is to be
    /// written anew, then [`arm`] records them.
    Created(Vec<String>),
    /// The watch cannot be armed here, and why.
    Cannot(String),
}

/// The first step of arming the watch on `client`'s server, when it is not armed and
/// can be: its event triggers created anew (dropped first if they are there), enabled
/// `ALWAYS`. From then on every DDL command marks what it touches; the rows written
/// before may be stale (the watch was not there, or off), so the caller writes every
/// row anew ([`attach_all`] with `all`) before [`arm`] records the triggers.
pub async fn prepare_watch(client: &db::Client, index: &str) -> Result<Preparing, Error> {
    match watch_state(client, index).await? {
        Watch::Armed => return Ok(Preparing::Armed),
        Watch::Unarmed(why) => {
            let row = db::read(
                client,
                "reading who owns the version index",
                client.pg().query_typed(
                    &format!(
                        "SELECT current_setting('is_superuser') = 'on' AND coalesce({}, false)",
                        owned_expr(index)
                    ),
                    &[],
                ),
            )
            .await?;
            if !row.first().is_some_and(|r| r.get::<_, bool>(0)) {
                drop_watch(client, index).await;
                return Ok(Preparing::Cannot(why));
            }
        }
    }
    let watch = format!("{}()", qualified(index, WATCH));
    let mut sql = String::from("BEGIN");
    let (k1, k2) = db::lock_key(db::LockSpace::Registry, &format!("{index}.{WATCH_TABLE}"));
    sql.push_str(&format!("; SELECT pg_advisory_xact_lock({k1}, {k2})"));
    sql.push_str(&format!("; DELETE FROM {}", qualified(index, WATCH_TABLE)));
    for event in WATCH_EVENTS {
        let name = quote(&event_trigger(index, event));
        sql.push_str(&format!(
            "; DROP EVENT TRIGGER IF EXISTS {name}; \
             CREATE EVENT TRIGGER {name} ON {event} {when} EXECUTE FUNCTION {watch}; \
             ALTER EVENT TRIGGER {name} ENABLE ALWAYS; \
             COMMENT ON EVENT TRIGGER {name} IS {comment}",
            comment = literal(&format!(
                "tenantctl: marks the rows of the version index in schema {} that a DDL command touched",
                quote(index)
            )),
            when = if event == "sql_drop" {
                String::new()
            } else {
                format!("WHEN TAG IN ({})", WATCH_TAGS.map(literal).join(", "))
            },
        ));
    }
    // Every row marked: a row written while the watch was off may be stale; the caller
    // writes anew every row it can, and those it cannot stay marked (read in full).
    sql.push_str(&format!(
        "; UPDATE {} SET changed = {} WHERE changed IS NULL",
        qualified(index, TABLE),
        literal(ARMED)
    ));
    sql.push_str("; COMMIT");
    // Quietly: DROP ... IF EXISTS of a trigger that is not there says so.
    let quiet = format!("SET client_min_messages = warning; {sql}; RESET client_min_messages");
    if let Err(e) = client.batch_execute(&quiet).await {
        let _ = client
            .batch_execute("ROLLBACK; RESET client_min_messages")
            .await;
        return Err(Error::failed(format!(
            "creating the version index's event triggers: {}",
            db::pg_message(&e)
        )));
    }
    let names = [
        event_trigger(index, WATCH_EVENTS[0]),
        event_trigger(index, WATCH_EVENTS[1]),
    ];
    let rows = db::read(
        client,
        "reading the version index's event triggers",
        client.pg().query_typed(
            "SELECT e.xmin::text FROM pg_catalog.pg_event_trigger e WHERE e.evtname = ANY($1)",
            &[(&names.as_slice(), Type::TEXT_ARRAY)],
        ),
    )
    .await?;
    Ok(Preparing::Created(rows.iter().map(|r| r.get(0)).collect()))
}

/// Drops the watch's event triggers where they cannot be armed, if this role may (a
/// superuser): an event trigger calls its function on every role's DDL, and a function
/// a role other than a superuser owns must never be called that way. Best effort.
async fn drop_watch(client: &db::Client, index: &str) {
    let drops: Vec<String> = WATCH_EVENTS
        .iter()
        .map(|e| {
            format!(
                "DROP EVENT TRIGGER IF EXISTS {}",
                quote(&event_trigger(index, e))
            )
        })
        .collect();
    let sql = format!(
        "DO $tenantctl_unwatch$ BEGIN IF current_setting('is_superuser') = 'on' THEN \
         SET LOCAL client_min_messages = warning; {}; END IF; END $tenantctl_unwatch$",
        drops.join("; ")
    );
    let _ = client.batch_execute(&sql).await;
}

/// Arms the watch: records its event triggers as [`prepare_watch`] created them
/// (`xmins`), once every row has been written anew under them. If they were changed
/// meanwhile, nothing is recorded and the watch stays unarmed. Returns whether it is
/// armed.
pub async fn arm(client: &db::Client, index: &str, xmins: &[String]) -> Result<bool, Error> {
    let names = [
        event_trigger(index, WATCH_EVENTS[0]),
        event_trigger(index, WATCH_EVENTS[1]),
    ];
    let (k1, k2) = db::lock_key(db::LockSpace::Registry, &format!("{index}.{WATCH_TABLE}"));
    let sql = format!(
        "WITH l AS (SELECT pg_advisory_xact_lock({k1}, {k2})), \
         d AS (DELETE FROM {t}) \
         INSERT INTO {t} (event, trigger_xmin, armed_at) \
         SELECT e.evtevent::text, e.xmin, now() FROM pg_catalog.pg_event_trigger e, l \
         WHERE e.evtname = ANY($1) AND e.xmin::text = ANY($2) RETURNING 1",
        t = qualified(index, WATCH_TABLE)
    );
    let xmins = xmins.to_vec();
    let done = client
        .pg()
        .query_typed(
            &sql,
            &[
                (&names.as_slice(), Type::TEXT_ARRAY),
                (&xmins, Type::TEXT_ARRAY),
            ],
        )
        .await
        .map_err(db::query_error("arming the version index's watch"))?;
    Ok(done.len() == 2 && watch_state(client, index).await? == Watch::Armed)
}

/// Why a tenant's row was not trusted, and its schema was read in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bypass {
    /// The server has no index (or not as this tenantctl installs it).
    NoIndex(String),
    /// The schema or its history table does not exist (or is not a plain table).
    NoHistory,
    /// The history table has inheritance children, whose rows the trigger does not see.
    Inherited,
    /// The history table's columns are not the ones the index reads (renamed, dropped,
    /// or of another type).
    Columns,
    /// No row: a tenant from before the index, or a renamed schema.
    NoRow,
    /// The history table is not the one the row was written for: recreated.
    Recreated,
    /// The trigger is missing.
    NoTrigger,
    /// The trigger is not enabled `ALWAYS`.
    TriggerDisabled,
    /// The trigger is not the one tenantctl installs.
    TriggerChanged,
    /// The trigger's catalog row changed since the row was written: disabled and
    /// enabled again, or recreated.
    TriggerTouched,
    /// The history table was altered since the row was written.
    TableAltered,
    /// The row was not written by the trigger: edited by hand.
    RowEdited,
    /// The history table's columns were renamed, moved or retyped since the row was
    /// written (to columns the index can read: `init` writes the row anew).
    ColumnsChanged,
    /// The trigger or the table was changed in the transaction that last wrote the row,
    /// which their `xmin` cannot tell apart from before or after the write.
    Unsettled,
    /// The row vouches for nothing: the history holds a value the index does not
    /// check (a NULL, an unusual time), or could not be read by the trigger.
    Unvouched,
    /// The history is not the files' first versions: drift, or versions out of order.
    Differs,
    /// The watch saw a DDL command (its tag) touch the history table, its trigger or
    /// its schema since the row was written.
    Changed(String),
}

impl Bypass {
    /// A short code, as `check -o json` gives it.
    pub fn code(&self) -> &'static str {
        match self {
            Bypass::NoIndex(_) => "no_index",
            Bypass::NoHistory => "no_history",
            Bypass::Inherited => "inherited",
            Bypass::Columns => "columns",
            Bypass::NoRow => "no_row",
            Bypass::Recreated => "recreated",
            Bypass::NoTrigger => "no_trigger",
            Bypass::TriggerDisabled => "trigger_disabled",
            Bypass::TriggerChanged => "trigger_changed",
            Bypass::TriggerTouched => "trigger_touched",
            Bypass::TableAltered => "table_altered",
            Bypass::RowEdited => "row_edited",
            Bypass::Unsettled => "unsettled",
            Bypass::ColumnsChanged => "columns_changed",
            Bypass::Unvouched => "unvouched",
            Bypass::Differs => "differs",
            Bypass::Changed(_) => "changed",
        }
    }

    /// Whether `init` can make the index vouch for the tenant: the trigger or the row
    /// is what stands in the way, not what the history table holds.
    pub fn needs_repair(&self) -> bool {
        !matches!(
            self,
            Bypass::NoHistory
                | Bypass::Differs
                | Bypass::Unvouched
                | Bypass::Inherited
                | Bypass::Columns
        )
    }

    /// Whether `check` lists it: every tenant read in full, but for a schema without a
    /// history table and a history that differs from the files, which `check` reports
    /// as problems of their own.
    pub fn listed(&self) -> bool {
        !matches!(self, Bypass::NoHistory | Bypass::Differs)
    }

    /// One line saying why.
    pub fn why(&self) -> String {
        match self {
            Bypass::NoIndex(why) => why.clone(),
            Bypass::NoHistory => "the schema has no history table".into(),
            Bypass::Inherited => "the history table has inheritance parents or children (a write through a parent fires none of its triggers)".into(),
            Bypass::Columns => "the history table's columns are not version int4 and name, applied_on, checksum as varchar or text".into(),
            Bypass::NoRow => "the version index has no row for the schema (a tenant from before the index, or a renamed schema)".into(),
            Bypass::Recreated => "the history table was dropped and created again since its index row was written".into(),
            Bypass::NoTrigger => format!("the history table has no {TRIGGER} trigger"),
            Bypass::TriggerDisabled => format!("the {TRIGGER} trigger is not enabled ALWAYS"),
            Bypass::TriggerChanged => format!("the {TRIGGER} trigger is not the one tenantctl installs"),
            Bypass::TriggerTouched => format!("the {TRIGGER} trigger was disabled, enabled or recreated since the index row was written"),
            Bypass::TableAltered => "the history table was altered since its index row was written".into(),
            Bypass::RowEdited => "the index row was last written by another transaction than its trigger recorded (edited by hand, or the history written inside a savepoint)".into(),
            Bypass::Unvouched => "the history holds a value the index does not vouch for".into(),
            Bypass::ColumnsChanged => "the history table's columns were renamed or retyped since the index row was written".into(),
            Bypass::Unsettled => "the trigger or the history table was changed in the transaction that last wrote the index row (the next write or `tenantctl init` settles it)".into(),
            Bypass::Differs => "the history is not the migration files' first versions".into(),
            Bypass::Changed(tag) if tag == ARMED => "the index's watch was armed after the index row was written, and the row could not be written anew".into(),
            Bypass::Changed(tag) => format!(
                "{} touched the history table, its trigger or its schema since the index row was written (the next write to the table, or `tenantctl init`, writes it anew)",
                if tag.is_empty() { "a DDL command".to_string() } else { tag.clone() }
            ),
        }
    }
}

/// One schema as the index read found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Trusted: the history is exactly the files' first this many versions (see
    /// [`exact_rows`]).
    Exact(usize),
    /// Not trusted: read the schema in full.
    Bypassed(Bypass),
}

/// The history rows of a schema the index found at the first `n` files of `set`, with
/// no `applied_on` (the index does not keep it). Made one schema at a time, as a fleet
/// read hands them on: a fleet's worth at once would hold every history in memory.
pub fn exact_rows(set: &MigrationSet, n: usize) -> Vec<AppliedRow> {
    set.files[..n.min(set.files.len())]
        .iter()
        .map(|f| AppliedRow {
            version: f.version,
            name: f.name.clone(),
            applied_on: String::new(),
            checksum: f.checksum,
        })
        .collect()
}

/// The files' digests by number of versions, as the trigger computes them.
pub struct Digests<'a> {
    set: &'a MigrationSet,
    known: HashMap<usize, String>,
}

impl<'a> Digests<'a> {
    /// For the files of `set`.
    pub fn new(set: &'a MigrationSet) -> Digests<'a> {
        Digests {
            set,
            known: HashMap::new(),
        }
    }

    /// The digest of the first `n` files, or `None` when there are fewer.
    pub fn of(&mut self, n: usize) -> Option<&str> {
        if n > self.set.files.len() {
            return None;
        }
        let files = &self.set.files[..n];
        Some(self.known.entry(n).or_insert_with(|| {
            digest(
                files
                    .iter()
                    .map(|f| (f.version, f.name.as_str(), f.checksum.to_string())),
            )
        }))
    }
}

/// The digest of (version, name, checksum) rows in version order, byte for byte as the
/// trigger computes it.
pub fn digest<'n>(rows: impl Iterator<Item = (i32, &'n str, String)>) -> String {
    let mut hasher = Sha256::new();
    for (i, (version, name, checksum)) in rows.enumerate() {
        if i > 0 {
            hasher.update(b"\n");
        }
        hasher.update(format!("{version} {} {name} {checksum}", name.chars().count()).as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Reads the index rows of `schemas` on one server (index in schema `index`), joined
/// with the catalog: one query. Each schema asked for is in the answer. A server
/// without the index gives [`Bypass::NoIndex`] for every schema; a server that does
/// not answer is an error.
pub async fn read<C: Reads + ?Sized>(
    client: &C,
    index: &str,
    schemas: &[String],
    history: &str,
    digests: &mut Digests<'_>,
) -> Result<Vec<(String, Found)>, Error> {
    // JIT compilation would cost more than the query (its estimate counts every
    // tenant's lookups); left off like `row_security`: every migration starts with
    // `RESET ALL`.
    // Bounded by the read timeout, as every read is: a server that stops answering
    // must not hang the command here.
    let jit_off = client.pg().batch_execute("SET jit = off");
    if let Err(e) = db::read(client, "reading the version index", jit_off).await {
        if e.kind() == ErrorKind::Unavailable {
            return Err(e);
        }
    }
    match read_watched(client, index, schemas, history, digests).await? {
        Some(found) => Ok(found),
        None => read_checked(client, index, schemas, history, digests).await,
    }
}

/// Parameters `$3` to `$11` of the readers' queries: the trigger function's and the
/// sync function's signatures and sources, their settings, the watch function's
/// signature and source, and the event triggers' names.
fn index_params(index: &str) -> [String; 9] {
    [
        format!("{}()", qualified(index, REFRESH)),
        refresh_body(index),
        format!("{}(regclass)", qualified(index, SYNC)),
        sync_body(index),
        PINNED.to_string(),
        format!("{}()", qualified(index, WATCH)),
        watch_body(index),
        event_trigger(index, WATCH_EVENTS[0]),
        event_trigger(index, WATCH_EVENTS[1]),
    ]
}

/// A reader's first `n` parameters: `$1` the schemas, `$2` the history table's name
/// (or the index table's, for [`watch_state`]), then [`index_params`].
fn params<'a>(
    schemas: &'a &'a [String],
    second: &'a &'a str,
    rest: &'a [String; 9],
    n: usize,
) -> Vec<(&'a (dyn tokio_postgres::types::ToSql + Sync), Type)> {
    let mut out: Vec<(&(dyn tokio_postgres::types::ToSql + Sync), Type)> =
        vec![(schemas, Type::TEXT_ARRAY), (second, Type::TEXT)];
    out.extend(
        rest.iter()
            .map(|p| (p as &(dyn tokio_postgres::types::ToSql + Sync), Type::TEXT)),
    );
    out.truncate(n);
    out
}

/// The query's check that the index's two functions are there as this tenantctl
/// writes them (parameters `$3` to `$7`), as a `WITH` item `f` of `refresh` and `sync`
/// (NULL when not).
const FUNCTIONS_OK: &str = "(SELECT p.oid FROM pg_catalog.pg_proc p WHERE p.oid = to_regprocedure($3) \
              AND p.prosrc = $4 AND p.prosecdef AND array_to_string(p.proconfig, ',') = $7) AS refresh, \
           (SELECT p.oid FROM pg_catalog.pg_proc p WHERE p.oid = to_regprocedure($5) \
              AND p.prosrc = $6 AND p.prosecdef AND array_to_string(p.proconfig, ',') = $7) AS sync";

/// The read with the watch armed (see [`watch_body`]): each row is trusted on what it
/// says of itself (not marked by the watch, written by its trigger, for the schema of
/// that name and a table of the history's name, sound when written, a digest) with no
/// catalog lookup but the schema's by name. `None` when the watch is not armed on this
/// server: the caller reads with [`read_checked`].
async fn read_watched<C: Reads + ?Sized>(
    client: &C,
    index: &str,
    schemas: &[String],
    history: &str,
    digests: &mut Digests<'_>,
) -> Result<Option<Vec<(String, Found)>>, Error> {
    let sql = format!(
        "WITH f AS MATERIALIZED (SELECT {FUNCTIONS_OK}, {armed} AS watched) \
         SELECT s.name, \
           CASE WHEN f.refresh IS NULL OR f.sync IS NULL THEN 'no_index' \
             WHEN NOT f.watched THEN 'unwatched' \
             WHEN n.oid IS NULL THEN 'no_history' \
             WHEN v.schema_name IS NULL THEN CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
               WHERE c.relnamespace = n.oid AND c.relname = $2) THEN 'no_row' ELSE 'no_history' END \
             WHEN v.changed IS NOT NULL THEN 'changed' \
             WHEN NOT (v.xmin = v.written_xid) THEN 'row_edited' \
             WHEN v.history_name IS DISTINCT FROM $2 OR v.schema_oid IS DISTINCT FROM n.oid THEN 'recreated' \
             WHEN v.unsound IS NOT NULL THEN v.unsound \
             WHEN v.digest IS NULL THEN 'unvouched' \
           END, v.applied, v.digest, v.changed \
         FROM unnest($1::text[]) AS s(name) CROSS JOIN f \
         LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = s.name \
         LEFT JOIN {table} v ON v.schema_name = s.name",
        armed = armed_expr(index),
        table = qualified(index, TABLE),
    );
    let rest = index_params(index);
    let params = params(&schemas, &history, &rest, 11);
    let query = client.pg().query_typed(&sql, &params);
    let rows = match db::read(client, "reading the version index", query).await {
        Ok(rows) => rows,
        Err(e) if e.kind() == ErrorKind::Unavailable => return Err(e),
        // An index from before the watch (its table, or a column, is missing): the
        // checked read says what is wrong.
        Err(_) => return Ok(None),
    };
    if rows
        .first()
        .is_some_and(|r| r.get::<_, Option<&str>>(1) == Some("unwatched"))
    {
        return Ok(None);
    }
    Ok(Some(decode(index, rows, digests)))
}

/// What a reader's rows say: name, why not trusted (NULL: trusted), applied, digest,
/// and for the watched read the mark.
fn decode(
    index: &str,
    rows: Vec<tokio_postgres::Row>,
    digests: &mut Digests<'_>,
) -> Vec<(String, Found)> {
    let no_index = Bypass::NoIndex(format!(
        "this server has no version index as this tenantctl installs it (in schema {}); `tenantctl init` installs it",
        quote(index)
    ));
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.get(0);
        let why: Option<&str> = row.get(1);
        let found = match why {
            Some("no_index") => Found::Bypassed(no_index.clone()),
            Some("no_history") => Found::Bypassed(Bypass::NoHistory),
            Some("inherited") => Found::Bypassed(Bypass::Inherited),
            Some("columns") => Found::Bypassed(Bypass::Columns),
            Some("no_row") => Found::Bypassed(Bypass::NoRow),
            Some("recreated") => Found::Bypassed(Bypass::Recreated),
            Some("no_trigger") => Found::Bypassed(Bypass::NoTrigger),
            Some("trigger_disabled") => Found::Bypassed(Bypass::TriggerDisabled),
            Some("trigger_changed") => Found::Bypassed(Bypass::TriggerChanged),
            Some("trigger_touched") => Found::Bypassed(Bypass::TriggerTouched),
            Some("table_altered") => Found::Bypassed(Bypass::TableAltered),
            Some("row_edited") => Found::Bypassed(Bypass::RowEdited),
            Some("unsettled") => Found::Bypassed(Bypass::Unsettled),
            Some("columns_changed") => Found::Bypassed(Bypass::ColumnsChanged),
            Some("changed") => {
                let tag: Option<String> = row.get(4);
                Found::Bypassed(Bypass::Changed(tag.unwrap_or_default()))
            }
            Some(_) => Found::Bypassed(Bypass::Unvouched),
            None => {
                let applied: i32 = row.get(2);
                let recorded: String = row.get(3);
                let n = usize::try_from(applied).ok();
                match n.and_then(|n| digests.of(n).map(|d| (n, d == recorded))) {
                    Some((n, true)) => Found::Exact(n),
                    _ => Found::Bypassed(Bypass::Differs),
                }
            }
        };
        out.push((name, found));
    }
    out
}

/// The read with the watch not armed: each tenant's row joined with the catalog (its
/// schema, history table, trigger and columns), in one query.
async fn read_checked<C: Reads + ?Sized>(
    client: &C,
    index: &str,
    schemas: &[String],
    history: &str,
    digests: &mut Digests<'_>,
) -> Result<Vec<(String, Found)>, Error> {
    // Each tenant's catalog rows are looked up by key (`LIMIT 1` keeps the planner from
    // turning a lookup into a scan of the whole `pg_class`, which on a fleet of many
    // tables per tenant costs more than all the lookups), and its columns' signature is
    // computed once (`OFFSET 0` keeps the inner query as it is written).
    let sql = format!(
        "WITH f AS (SELECT {FUNCTIONS_OK}) \
         SELECT x.name, \
           CASE WHEN x.refresh IS NULL OR x.sync IS NULL THEN 'no_index' \
             WHEN x.coid IS NULL THEN 'no_history' \
             WHEN x.relhassubclass OR x.relispartition OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i \
               WHERE i.inhrelid = x.coid) THEN 'inherited' \
             WHEN NOT {columns} THEN 'columns' \
             WHEN x.vname IS NULL THEN 'no_row' \
             WHEN x.changed IS NOT NULL THEN 'changed' \
             WHEN x.history_oid <> x.coid THEN 'recreated' \
             WHEN x.toid IS NULL THEN 'no_trigger' \
             WHEN x.tgenabled <> 'A' THEN 'trigger_disabled' \
             WHEN x.tgfoid <> x.refresh OR x.tgtype <> {TGTYPE} OR x.tgqual IS NOT NULL \
               OR x.tgnargs <> 0 OR x.tgattr::text <> '' THEN 'trigger_changed' \
             WHEN NOT (x.txmin = x.trigger_xmin) THEN 'trigger_touched' \
             WHEN x.columns IS DISTINCT FROM x.sig THEN 'columns_changed' \
             WHEN x.txmin = x.written_xid OR x.cxmin = x.written_xid THEN 'unsettled' \
             WHEN NOT (x.cxmin = x.class_xmin) THEN 'table_altered' \
             WHEN NOT (x.vxmin = x.written_xid) THEN 'row_edited' \
             WHEN x.digest IS NULL THEN 'unvouched' \
           END, x.applied, x.digest, x.changed \
         FROM (SELECT s.name, f.refresh, f.sync, \
             c.oid AS coid, c.xmin AS cxmin, c.relhassubclass, c.relispartition, {signature} AS sig, \
             v.schema_name AS vname, v.history_oid, v.applied, v.digest, v.trigger_xmin, \
             v.class_xmin, v.written_xid, v.columns, v.xmin AS vxmin, v.changed, \
             t.oid AS toid, t.xmin AS txmin, t.tgenabled, t.tgfoid, t.tgtype, t.tgqual, t.tgnargs, t.tgattr \
           FROM unnest($1::text[]) AS s(name) CROSS JOIN f \
           LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = s.name \
           LEFT JOIN LATERAL (SELECT c.oid, c.xmin, c.relhassubclass, c.relispartition \
             FROM pg_catalog.pg_class c \
             WHERE c.relnamespace = n.oid AND c.relname = $2 AND c.relkind = 'r' LIMIT 1) c ON true \
           LEFT JOIN LATERAL (SELECT t.oid, t.xmin, t.tgenabled, t.tgfoid, t.tgtype, t.tgqual, \
               t.tgnargs, t.tgattr \
             FROM pg_catalog.pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = '{TRIGGER}' LIMIT 1) t ON true \
           LEFT JOIN {table} v ON v.schema_name = s.name \
           OFFSET 0) x",
        table = qualified(index, TABLE),
        columns = columns_ok("x.sig"),
        signature = columns_signature("c.oid"),
    );
    let rest = index_params(index);
    let params = params(&schemas, &history, &rest, 7);
    let query = client.pg().query_typed(&sql, &params);
    let rows = match db::read(client, "reading the version index", query).await {
        Ok(rows) => rows,
        Err(e) if e.kind() == ErrorKind::Unavailable => return Err(e),
        Err(e) => {
            let why = if e.to_string().contains("does not exist") {
                format!(
                    "this server has no version index (in schema {}); `tenantctl init` installs it",
                    quote(index)
                )
            } else {
                format!("the version index could not be read: {e}")
            };
            return Ok(schemas
                .iter()
                .map(|s| (s.clone(), Found::Bypassed(Bypass::NoIndex(why.clone()))))
                .collect());
        }
    };
    Ok(decode(index, rows, digests))
}

/// Tenants attached to the index in one transaction by [`attach_all`].
const ATTACH_BATCH: usize = 100;
/// Tenants attached on one connection by [`attach_all`]: a backend keeps what it
/// compiled for each table whose trigger fired in it, and every trigger it creates
/// afterwards is checked against all of that, so one backend for a whole fleet would
/// take time in the square of its size.
const ATTACH_PER_CONNECTION: usize = 200;

/// Puts the index's trigger on the history table of each of `schemas` the index cannot
/// vouch for (every one with `all`: after the index's functions were replaced, each row
/// is recomputed by the new ones) on `client`'s server, index in schema `index`, and
/// recomputes their rows from their history tables; forgets the rows of schemas that no
/// longer exist. Returns how many tenants were attached. `client` reads and tidies; the
/// tenants are attached on connections of their own to `target`, the same server. The
/// index must be installed ([`install`]).
pub async fn attach_all(
    client: &db::Client,
    target: &db::Target,
    index: &str,
    schemas: &[String],
    history: &str,
    all: bool,
) -> Result<usize, Error> {
    let none = MigrationSet {
        dir: std::path::PathBuf::new(),
        files: Vec::new(),
    };
    let found = read(client, index, schemas, history, &mut Digests::new(&none)).await?;
    let repair: Vec<String> = found
        .into_iter()
        .filter_map(|(name, found)| match found {
            Found::Bypassed(Bypass::NoHistory) => None,
            Found::Bypassed(Bypass::Inherited) if !all => None,
            Found::Bypassed(why) if why.needs_repair() && !matches!(why, Bypass::NoIndex(_)) => {
                Some(name)
            }
            _ if all => Some(name),
            _ => None,
        })
        .collect();
    for share in repair.chunks(ATTACH_PER_CONNECTION) {
        let own = target.connect().await?;
        for batch in share.chunks(ATTACH_BATCH) {
            let mut sql = String::from("BEGIN");
            for schema in batch {
                sql.push_str(";\n");
                sql.push_str(&attach_sql(index, schema, history));
            }
            sql.push_str(";\nCOMMIT");
            // Twice: a row written in the transaction that created the trigger is not
            // trusted (see `Bypass::Unsettled`); the second pass writes it anew.
            let sql = format!("{sql};\n{sql}");
            if let Err(e) = own.batch_execute(&sql).await {
                let _ = own.batch_execute("ROLLBACK").await;
                return Err(Error::failed(format!(
                    "putting the version index's trigger on the tenants' history tables: {}",
                    db::pg_message(&e)
                )));
            }
        }
    }
    // Only on the index table this role owns: another role's table in its place (its
    // schema's owner may put one there) could have triggers that would run as this
    // role.
    let forget = format!(
        "DELETE FROM {t} v WHERE NOT EXISTS \
         (SELECT 1 FROM pg_catalog.pg_namespace n WHERE n.nspname = v.schema_name) \
         AND (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = {lit}::pg_catalog.regclass) \
             = (SELECT o.oid FROM pg_catalog.pg_roles o WHERE o.rolname = CURRENT_USER)",
        t = qualified(index, TABLE),
        lit = literal(&qualified(index, TABLE))
    );
    client
        .batch_execute(&forget)
        .await
        .map_err(db::query_error(
            "forgetting the index rows of schemas that are gone",
        ))?;
    if !repair.is_empty() {
        // Thousands of rows may just have been written: the next fleet read is planned
        // with their statistics, not with those of an empty table.
        let _ = client
            .batch_execute(&format!("ANALYZE {}", qualified(index, TABLE)))
            .await;
    }
    Ok(repair.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_the_rows_in_order_with_the_name_length_prefixed() {
        let empty = digest(std::iter::empty());
        assert_eq!(empty, hex::encode(Sha256::digest(b"")));
        let two = digest([(1, "a b", "7".to_string()), (2, "é", "8".to_string())].into_iter());
        assert_eq!(
            two,
            hex::encode(Sha256::digest("1 3 a b 7\n2 1 é 8".as_bytes()))
        );
    }
}
