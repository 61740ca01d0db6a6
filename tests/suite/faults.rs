//! Faults from outside: a tenant's backend terminated in the middle of its migration, a
//! server that is not there, and a SIGKILL in the middle of a run. In every case the
//! tenants are at a revision that fully applied, the registry says nothing false, and a
//! rerun finishes the job.

use crate::{checks, common_json, support};
use std::collections::BTreeMap;

use checks::{
    assert_truth, create, expect_error, history_versions, registry_row, relation_exists,
    schema_exists,
};
use common_json::{Events, FleetStatus, RunReport};
use support::{
    backends_running, bare, closed_port, dir_with, ready, wait_at, wait_at_except, Gate, TestDb,
};

/// The gate V2 waits at.
const GATE: i64 = 7012;

fn schema(domain: &str) -> String {
    format!("tenant_{}", domain.replace('-', "_"))
}

/// Asserts that the registry's cached columns (`schema_provisioned`, `current_revision`,
/// `migrations_applied`) for `domain` match the database, whatever its status says.
fn assert_cache_truth(db: &TestDb, domain: &str) {
    let row = registry_row(db, domain);
    let exists = schema_exists(db, &row.schema_name);
    let current = history_versions(db, &row.schema_name).into_iter().max();
    assert_eq!(
        (
            row.schema_provisioned,
            row.current_revision,
            row.migrations_applied
        ),
        (exists, current, current.is_some()),
        "{domain}: the registry's (schema_provisioned, current_revision, migrations_applied) \
         disagree with the database: {row:?}"
    );
}

#[test]
fn a_backend_terminated_mid_migration_fails_only_its_tenant_and_a_rerun_finishes() {
    let (db, t) = ready();
    let dir = dir_with(&[("V1__one.sql", "CREATE TABLE t1 (id int);\n")]);
    let t = t.migrations(dir.path());
    let names = ["f1", "f2", "f3", "f4"];
    for d in names {
        create(&t, d, &["--migrate"]);
        assert_eq!(history_versions(&db, &schema(d)), [1]);
    }
    // V2 waits at a gate the test holds, after creating t2.
    std::fs::write(
        dir.path().join("V2__two.sql"),
        format!("CREATE TABLE t2 (id int);\n{}", wait_at(GATE)),
    )
    .unwrap();

    let mut gate = Gate::advisory(&db.url, GATE);
    let mut child = t.spawn(&["upgrade", "--all", "--concurrency", "4", "-o", "json"]);
    child.wait_until("every tenant waits at the gate inside V2", || {
        gate.blocked_tenantctl().len() == names.len()
    });
    // A backend inside V2, and the tenant whose schema it is creating t2 in.
    let (pid, victim_schema) = backends_running(&db, "pg_advisory_xact_lock_shared")
        .into_iter()
        .find_map(|(pid, s)| s.map(|s| (pid, s)))
        .expect("a backend waiting at the gate holds its tenant's schema");
    let victim = names
        .iter()
        .copied()
        .find(|d| schema(d) == victim_schema)
        .unwrap_or_else(|| panic!("backend {pid} works in an unknown schema {victim_schema}"));
    let terminated: bool = db
        .client()
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(terminated, "could not terminate backend {pid}");
    // The other tenants go on only once the victim's backend is gone.
    child.wait_until("the victim's backend is gone", || {
        gate.blocked_tenantctl().len() == names.len() - 1
    });
    gate.open();

    let run = child.finish();
    run.expect(4);
    let r: RunReport = run.json();
    assert_eq!(
        (
            r.summary.total,
            r.summary.ok,
            r.summary.failed,
            r.summary.skipped
        ),
        (4, 3, 1, 0),
        "{r:#?}"
    );
    let res = r.of(victim);
    assert_eq!(res.status, "failed", "{res:?}");
    assert!(res.applied.is_empty(), "{res:?}");
    assert_eq!(
        (res.from_revision, res.to_revision),
        (Some(1), Some(1)),
        "{res:?}"
    );
    let error = res.error.clone().unwrap_or_default();
    assert!(
        error.contains("V2"),
        "the error should name the migration: {res:?}"
    );
    let lower = error.to_lowercase();
    assert!(
        lower.contains("terminat"),
        "the error should say the connection was terminated: {res:?}"
    );
    assert_eq!(history_versions(&db, &victim_schema), [1]);
    assert!(
        !relation_exists(&db, &victim_schema, "t2"),
        "{victim}: t2 of the terminated V2 survived"
    );
    let row = assert_truth(&db, victim, "failed");
    assert_eq!(row.current_revision, Some(1));
    let last_error = row.last_error.unwrap_or_default();
    assert!(last_error.contains("V2"), "last_error: {last_error}");

    for d in names.iter().filter(|d| **d != victim) {
        let res = r.of(d);
        assert_eq!(res.status, "ok", "{res:?}");
        assert_eq!(res.applied, [2], "{res:?}");
        assert_eq!((res.from_revision, res.to_revision), (Some(1), Some(2)));
        assert_eq!(history_versions(&db, &schema(d)), [1, 2], "{d}");
        assert!(relation_exists(&db, &schema(d), "t2"), "{d}");
        assert_truth(&db, d, "active");
    }

    // The ledger has the failure, for the victim only.
    let ev: Events = t
        .run(&["events", "--run", &r.run_id, "-o", "json"])
        .expect(0)
        .json();
    let failed: Vec<&str> = ev
        .events
        .iter()
        .filter(|e| e.status == "failed")
        .map(|e| e.domain.as_str())
        .collect();
    assert_eq!(failed, [victim], "{ev:#?}");
    assert_eq!(
        ev.events.len(),
        4,
        "one entry per tenant worked on: {ev:#?}"
    );

    let r: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(r.of(victim).status, "ok", "{r:#?}");
    assert_eq!(r.of(victim).applied, [2]);
    for d in names {
        assert_eq!(history_versions(&db, &schema(d)), [1, 2], "{d}");
        let row = assert_truth(&db, d, "active");
        assert_eq!(row.current_revision, Some(2));
    }
}

#[test]
fn nothing_listening_is_a_setup_error_naming_host_and_port() {
    let port = closed_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/app");
    let host_port = format!("127.0.0.1:{port}");
    let migrations = dir_with(&[("V1__one.sql", "CREATE TABLE one (id int);\n")]);
    let t = bare().migrations(migrations.path());
    for args in [
        &["init"][..],
        &["upgrade", "--all"][..],
        &["upgrade", "--all", "-o", "json"][..],
        &["status", "--all", "-o", "json"][..],
        &["tenant", "create", "x", "--name", "X", "--migrate"][..],
        &["check"][..],
    ] {
        let mut all = vec!["--database-url", url.as_str()];
        all.extend_from_slice(args);
        let run = t.run(&all);
        expect_error(&run, 3, &["cannot connect", &host_port]);
    }
}

#[test]
fn after_sigkill_the_registry_says_nothing_false_and_a_rerun_finishes() {
    let (db, t) = ready();
    // V2 waits at a gate the test holds in every tenant but c1.
    let dir = dir_with(&[
        ("V1__one.sql", "CREATE TABLE one (id int);\n"),
        (
            "V2__two.sql",
            &format!(
                "CREATE TABLE two (id int);\n{}",
                wait_at_except(GATE, &schema("c1"))
            ),
        ),
    ]);
    let t = t.migrations(dir.path());
    let names = ["c1", "c2", "c3"];
    for d in names {
        create(&t, d, &["--provision"]);
    }
    let mut gate = Gate::advisory(&db.url, GATE);
    let mut child = t.spawn(&["upgrade", "--all", "--concurrency", "1"]);
    // c1 is done and another tenant (c2) has committed V1 and waits inside V2.
    let inside = child.wait_for("one tenant is at 2 and another waits inside V2", || {
        let done = names
            .iter()
            .any(|d| history_versions(&db, &schema(d)).last() == Some(&2));
        if !done || gate.blocked_tenantctl().len() != 1 {
            return None;
        }
        backends_running(&db, "pg_advisory_xact_lock_shared")
            .into_iter()
            .find_map(|(_, s)| s)
    });
    child.kill(); // SIGKILL
    assert_eq!(inside, schema("c2"), "c2 follows c1");

    let mut at: BTreeMap<&str, Option<i32>> = BTreeMap::new();
    for d in names {
        let v = history_versions(&db, &schema(d)).into_iter().max();
        assert_eq!(
            relation_exists(&db, &schema(d), "two"),
            v == Some(2),
            "{d} at {v:?}"
        );
        at.insert(d, v);
    }
    assert!(
        at.values().any(|v| *v == Some(2)) && at.values().any(|v| *v != Some(2)),
        "the kill did not land mid-run: {at:?} (inside V2: {inside})"
    );
    assert_eq!(
        at.values().copied().collect::<Vec<_>>(),
        [Some(2), Some(1), None],
        "c1 done, c2 inside V2, c3 not started"
    );

    // Without a rerun: status looks at the database, reports it, and refreshes the
    // registry's cached columns; nothing in the registry may be false afterwards.
    let s: FleetStatus = t.run(&["status", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(s.tenants.len(), names.len(), "{s:#?}");
    for st in &s.tenants {
        let real = at[st.domain.as_str()];
        assert_eq!(st.current_revision, real, "status --all: {st:?}");
        assert_eq!(st.migrations_applied, real.is_some(), "{st:?}");
        assert!(st.schema_provisioned, "{st:?}");
    }
    for d in names {
        assert_cache_truth(&db, d);
    }

    // The killed run's backend still waits at the gate, holding c2's lock (its COMMIT may
    // already be queued: V2 is all or nothing either way); the rerun needs that lock.
    gate.open();
    let r: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(r.summary.failed, 0, "{r:#?}");
    for d in names {
        assert_eq!(history_versions(&db, &schema(d)), [1, 2], "{d}");
        assert!(relation_exists(&db, &schema(d), "two"), "{d}");
        let row = assert_truth(&db, d, "active");
        assert_eq!(row.current_revision, Some(2));
    }
}
