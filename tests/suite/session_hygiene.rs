//! What a migration can do to the session it runs in, and what tenantctl does about it:
//! a migration that releases the tenant's lock, one that leaves the session read-only,
//! connections carrying per-session state no reset can clear (dblink), a schema drop that
//! would cascade into objects another session is creating, and a file tenantctl cannot
//! send (a NUL byte).

use crate::checks::{create, history_versions, registry_row, relation_exists, schema_exists};
use crate::common_json::RunReport;
use crate::support::{dir_with, lock_tenant, ready, Gate, TestDb};

fn sql(db: &TestDb, batch: &str) {
    db.client()
        .batch_execute(batch)
        .unwrap_or_else(|e| panic!("{batch}: {e}"));
}

/// Whether anyone holds `schema`'s tenant lock.
fn tenant_lock_held(db: &TestDb, schema: &str) -> bool {
    let (k1, k2) = tenantctl::pg::db::lock_key(tenantctl::pg::db::LockSpace::Tenant, schema);
    db.client()
        .query_one(
            "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND objsubid = 2 AND classid::bigint = $1 AND objid::bigint = $2",
            &[&i64::from(k1 as u32), &i64::from(k2 as u32)],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_migration_that_leaves_the_session_read_only_does_not_reach_the_next_one() {
    let (db, t) = ready();
    let dir = dir_with(&[
        ("V1__a.sql", "SET default_transaction_read_only = on;\nSET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE;\n"),
        ("V2__b.sql", "CREATE TABLE two AS SELECT current_setting('transaction_isolation') AS isolation;\n"),
    ]);
    let t = t.migrations(dir.path());
    for d in ["r1", "r2"] {
        create(&t, d, &["--provision"]);
    }
    let report: RunReport = t
        .run(&["upgrade", "--all", "--concurrency", "1", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(report.summary.ok, 2, "{report:?}");
    let default: String = db
        .client()
        .query_one("SELECT current_setting('transaction_isolation')", &[])
        .unwrap()
        .get(0);
    for d in ["r1", "r2"] {
        let isolation: String = db
            .client()
            .query_one(&format!("SELECT isolation FROM tenant_{d}.two"), &[])
            .unwrap()
            .get(0);
        assert_eq!(
            isolation, default,
            "V2 of {d} ran with V1's characteristics"
        );
    }
}

#[test]
fn a_migration_that_releases_the_tenant_lock_to_another_session_is_not_recorded() {
    let (db, t) = ready();
    // The file's second statement waits at a gate the test holds, once its first has let
    // go of the tenant's lock (each statement is its own transaction).
    let dir = dir_with(&[(
        "V1__lets_go.sql",
        "-- tenantctl: no-transaction\nSELECT pg_advisory_unlock_all();\n\
         SET lock_timeout = 0;\nSELECT pg_advisory_xact_lock(7001);\n",
    )]);
    let t = t.migrations(dir.path());
    create(&t, "l1", &["--provision"]);
    let mut gate = Gate::advisory(&db.url, 7001);
    let mut run = t.spawn(&["upgrade", "--tenant", "l1", "-o", "json"]);
    run.wait_until(
        "the migration waits at the gate, after releasing the lock",
        || !gate.blocked_tenantctl().is_empty(),
    );
    assert!(!tenant_lock_held(&db, "tenant_l1"));
    // Another session takes the lock while the migration is still in flight.
    let mut other = db.client();
    lock_tenant(&mut other, "tenant_l1");
    gate.open();
    let done = run.finish();
    done.expect(1);
    let report: RunReport = done.json();
    let error = report.of("l1").error.clone().unwrap_or_default();
    assert!(
        error.contains("released the tenant's advisory lock") && error.contains("not recorded"),
        "{error}"
    );
    assert!(history_versions(&db, "tenant_l1").is_empty());
}

#[test]
fn a_migration_that_releases_the_tenant_lock_takes_it_back_when_nobody_else_did() {
    let (db, t) = ready();
    let dir = dir_with(&[
        (
            "V1__a.sql",
            "SELECT pg_advisory_unlock_all();\nCREATE TABLE one (id int);\n",
        ),
        ("V2__b.sql", "CREATE TABLE two (id int);\n"),
    ]);
    let t = t.migrations(dir.path());
    create(&t, "k1", &["--provision"]);
    t.run(&["upgrade", "--tenant", "k1", "-o", "json"])
        .expect(0);
    assert_eq!(history_versions(&db, "tenant_k1"), [1, 2]);
}

#[test]
fn connections_are_not_reused_where_dblink_can_keep_connections_open() {
    let (db, t) = ready();
    sql(&db, "CREATE EXTENSION IF NOT EXISTS dblink SCHEMA public");
    let probe = "CREATE TABLE seen AS SELECT pg_backend_pid() AS pid, \
                 coalesce(array_length(public.dblink_get_connections(), 1), 0) AS open_links;\n\
                 SELECT public.dblink_connect('link_' || current_schema(), format('host=127.0.0.1 port=%s user=%s dbname=%s', inet_server_port(), current_user, current_database()));\n";
    let dir = dir_with(&[("V1__probe.sql", probe)]);
    let t = t.migrations(dir.path());
    for d in ["d1", "d2", "d3"] {
        create(&t, d, &["--provision"]);
    }
    t.run(&["upgrade", "--all", "--concurrency", "1", "-o", "json"])
        .expect(0);
    let mut pids = std::collections::BTreeSet::new();
    for d in ["d1", "d2", "d3"] {
        let row = db
            .client()
            .query_one(&format!("SELECT pid, open_links FROM tenant_{d}.seen"), &[])
            .unwrap();
        let (pid, links): (i32, i32) = (row.get(0), row.get(1));
        assert_eq!(
            links, 0,
            "tenant {d} saw another tenant's dblink connection"
        );
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 3, "a connection was reused: {pids:?}");
}

#[test]
fn a_drop_that_would_reach_objects_another_session_is_creating_is_refused() {
    let (db, t) = ready();
    let dir = dir_with(&[("V1__a.sql", "CREATE TABLE things (id int PRIMARY KEY);\n")]);
    let t = t.migrations(dir.path());
    create(&t, "x1", &["--migrate"]);
    sql(
        &db,
        "CREATE FUNCTION tenant_x1.f() RETURNS int LANGUAGE sql AS 'SELECT 42'; \
         CREATE TYPE tenant_x1.ty AS (a int); \
         CREATE SCHEMA other; CREATE TABLE other.orders (id int PRIMARY KEY, amount int); \
         INSERT INTO other.orders VALUES (1, 100), (2, 200);",
    );
    // Another session starts making other.orders depend on the tenant's type and
    // function, and keeps its transaction open.
    let mut other = db.client();
    other
        .batch_execute(
            "BEGIN; ALTER TABLE other.orders ADD COLUMN tag tenant_x1.ty; \
             UPDATE other.orders SET tag = ROW(7); \
             ALTER TABLE other.orders ALTER COLUMN amount SET DEFAULT tenant_x1.f();",
        )
        .unwrap();
    let run = t.run(&["tenant", "drop", "x1", "--yes", "-o", "json"]);
    other.batch_execute("COMMIT").unwrap();
    run.expect(1);
    assert!(
        run.stderr.contains("another session holds a lock")
            && run.stderr.contains("nothing was changed"),
        "{}",
        run.stderr
    );
    assert!(schema_exists(&db, "tenant_x1"));
    assert!(relation_exists(&db, "tenant_x1", "things"));
    assert_eq!(registry_row(&db, "x1").schema_name, "tenant_x1");
    let tags: i64 = db
        .client()
        .query_one("SELECT count(tag) FROM other.orders", &[])
        .unwrap()
        .get(0);
    assert_eq!(tags, 2, "the other session's column lost its data");
    // With the other session done, the drop is refused for what now depends on the
    // schema, as always.
    t.run(&["tenant", "drop", "x1", "--yes"]).expect(1);
}

#[test]
fn a_file_holding_a_nul_byte_is_refused_when_the_migrations_are_loaded() {
    let (db, t) = ready();
    let dir = dir_with(&[(
        "V1__nul.sql",
        "CREATE TABLE one (id int);\nSELECT 'a\0b';\n",
    )]);
    let t = t.migrations(dir.path());
    create(&t, "n1", &["--provision"]);
    let run = t.run(&["upgrade", "--all"]);
    run.expect(3);
    assert!(
        run.stderr.contains("V1__nul.sql:2") && run.stderr.contains("NUL byte"),
        "{}",
        run.stderr
    );
    assert!(!relation_exists(&db, "tenant_n1", "one"));
}
