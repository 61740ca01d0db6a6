//! Warm sessions against a real PostgreSQL: a bulk run reuses its connections from one
//! tenant to the next, and each tenant still starts from a clean session: no temporary
//! table, setting, role, advisory lock or prepared statement of the previous tenant's
//! migrations reaches it; a connection that cannot be proven clean is not reused.

use crate::{checks, common_json, support};

use checks::create;
use common_json::RunReport;
use support::{dir_with, ready, TestDb};

/// What each tenant's first migration sees of the session it runs in, kept in a table,
/// followed by what it leaves behind for whoever uses the session next.
const PROBE: &str = "CREATE TABLE seen AS SELECT \
     pg_backend_pid() AS pid, \
     to_regclass('pg_temp.leftover') IS NOT NULL AS temp_table_leaked, \
     current_setting('work_mem') AS work_mem, \
     current_user::text = session_user::text AS own_role, \
     (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory_locks;\n\
     CREATE TEMP TABLE leftover (x int);\n\
     SET work_mem = '7MB';\n\
     SELECT pg_advisory_lock(42);\n";

fn seen(db: &TestDb, schema: &str) -> (i32, bool, String, bool, i64) {
    let row = db
        .client()
        .query_one(
            &format!(
                "SELECT pid, temp_table_leaked, work_mem, own_role, advisory_locks FROM \"{schema}\".seen"
            ),
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))
}

#[test]
fn one_connection_serves_tenant_after_tenant_each_from_a_clean_session() {
    let (db, t) = ready();
    let dir = dir_with(&[("V1__probe.sql", PROBE)]);
    let t = t.migrations(dir.path());
    let default_work_mem: String = db
        .client()
        .query_one("SELECT current_setting('work_mem')", &[])
        .unwrap()
        .get(0);
    for d in ["w1", "w2", "w3", "w4"] {
        create(&t, d, &["--provision"]);
    }
    let report: RunReport = t
        .run(&["upgrade", "--all", "--concurrency", "1", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(report.summary.ok, 4, "{report:?}");
    let seen: Vec<_> = ["w1", "w2", "w3", "w4"]
        .iter()
        .map(|d| seen(&db, &format!("tenant_{d}")))
        .collect();
    // The same backend ran every tenant: the connection was reused.
    assert!(seen.iter().all(|s| s.0 == seen[0].0), "{seen:?}");
    for s in &seen {
        assert!(
            !s.1,
            "a temporary table leaked into the next tenant: {seen:?}"
        );
        assert_eq!(s.2, default_work_mem, "a setting leaked: {seen:?}");
        assert!(s.3, "a role leaked: {seen:?}");
        assert_eq!(s.4, 1, "only the tenant's own lock is held: {seen:?}");
    }
}

#[test]
fn a_connection_left_with_a_prepared_statement_is_not_reused() {
    let (db, t) = ready();
    let probe = format!("{PROBE}PREPARE left_behind AS SELECT 1;\n");
    let dir = dir_with(&[("V1__probe.sql", probe.as_str())]);
    let t = t.migrations(dir.path());
    for d in ["p1", "p2", "p3"] {
        create(&t, d, &["--provision"]);
    }
    t.run(&["upgrade", "--all", "--concurrency", "1", "-o", "json"])
        .expect(0);
    let pids: std::collections::BTreeSet<i32> = ["p1", "p2", "p3"]
        .iter()
        .map(|d| seen(&db, &format!("tenant_{d}")).0)
        .collect();
    // Each tenant got a new backend: none of them saw the other's prepared statement.
    assert_eq!(pids.len(), 3, "{pids:?}");
}

#[test]
fn a_connection_serves_at_most_two_hundred_tenants() {
    let (db, t) = ready();
    let dir = dir_with(&[(
        "V1__pid.sql",
        "CREATE TABLE seen AS SELECT pg_backend_pid() AS pid;\n",
    )]);
    let t = t.migrations(dir.path());
    db.client()
        .batch_execute(
            "INSERT INTO tenants (tenant_name, domain, schema_name, api_key_hash, api_key_prefix) \
             SELECT 'T' || i, 'w-' || i, 'tenant_w_' || i, md5('k' || i) || md5('j' || i), 'tk_test' \
             FROM generate_series(1, 205) AS i",
        )
        .unwrap();
    t.run(&["provision", "--all", "-q"]).expect(0);
    let report: RunReport = t
        .run(&["upgrade", "--all", "--concurrency", "1", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(report.summary.ok, 205, "{:?}", report.summary);
    // Every backend that served the run, and how many tenants each served.
    let mut c = db.client();
    let mut served: std::collections::BTreeMap<i32, usize> = Default::default();
    for i in 1..=205 {
        let pid: i32 = c
            .query_one(&format!("SELECT pid FROM tenant_w_{i}.seen"), &[])
            .unwrap()
            .get(0);
        *served.entry(pid).or_default() += 1;
    }
    let counts: Vec<usize> = served.values().copied().collect();
    assert_eq!(counts, [200, 5], "tenants per connection: {served:?}");
}
