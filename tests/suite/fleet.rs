//! Fleet features of bulk runs against a real PostgreSQL: a partial failure and its retry
//! with `--status failed`, no-op runs that open no session (and so never wait on a
//! tenant's lock), `--canary`, `--shard`, `--max-failures`, tenant selection
//! (`--type`, `--exclude`, `--tenant` order), the run ledger (`events`), a SIGKILL in the
//! middle of a run followed by a rerun, a graceful SIGTERM (exit 130), and per-tenant
//! progress lines on stderr.

use crate::{checks, common_json, support};
use std::collections::BTreeSet;
use std::path::Path;

use checks::{assert_truth, create, expect_error, history_versions, registry_row, relation_exists};
use common_json::{Events, RunReport};
use support::{
    dir_with, lock_tenant, lock_waiters, ready, unlock_tenant, wait_at_except, Gate, Tenantctl,
    TestDb,
};

const V1: (&str, &str) = ("V1__one.sql", "CREATE TABLE one (id int);\n");
const V2: &str = "CREATE TABLE two (id int);\n";

/// The gate V2 of [`gated_set`] waits at.
const GATE: i64 = 7011;

/// The gated set: V2 waits inside its transaction at [`GATE`] in every tenant but
/// `first`, so a run with `--concurrency 1` finishes `first` and then stops inside V2 of
/// the next tenant until the test opens the gate: the test can stop it in the middle.
fn gated_set(first: &str) -> tempfile::TempDir {
    dir_with(&[
        ("V1__one.sql", "CREATE TABLE one (id int);\n"),
        (
            "V2__two.sql",
            &format!(
                "CREATE TABLE two (id int);\n{}",
                wait_at_except(GATE, &schema(first))
            ),
        ),
        ("V3__three.sql", "CREATE TABLE three (id int);\n"),
    ])
}

fn write(dir: &Path, name: &str, sql: &str) {
    std::fs::write(dir.join(name), sql).unwrap();
}

/// An initialised registry and a runner using a custom migrations directory.
fn setup(files: &[(&str, &str)]) -> (TestDb, Tenantctl, tempfile::TempDir) {
    let (db, t) = ready();
    let dir = dir_with(files);
    let t = t.migrations(dir.path());
    (db, t, dir)
}

fn schema(domain: &str) -> String {
    format!("tenant_{}", domain.replace('-', "_"))
}

/// The tenant's highest applied version (0 when nothing is applied).
fn at(db: &TestDb, domain: &str) -> i32 {
    history_versions(db, &schema(domain))
        .into_iter()
        .max()
        .unwrap_or(0)
}

/// Makes V2 (`CREATE TABLE two`) fail for this tenant alone.
fn break_v2(db: &TestDb, domain: &str) {
    db.client()
        .batch_execute(&format!("CREATE TABLE \"{}\".two (x text)", schema(domain)))
        .unwrap();
}

fn fix_v2(db: &TestDb, domain: &str) {
    db.client()
        .batch_execute(&format!("DROP TABLE \"{}\".two", schema(domain)))
        .unwrap();
}

fn domains(r: &RunReport) -> Vec<String> {
    r.results.iter().map(|x| x.domain.clone()).collect()
}

fn events(t: &Tenantctl, args: &[&str]) -> Events {
    let mut all = vec!["events"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    t.run(&all).expect(0).json()
}

/// Tenants `names` at V1, then V2 added to `dir`, failing for the tenants `broken`.
fn v2_breaks(db: &TestDb, t: &Tenantctl, dir: &Path, names: &[&str], broken: &[&str]) {
    for d in names {
        create(t, d, &["--migrate"]);
    }
    for d in broken {
        break_v2(db, d);
    }
    write(dir, "V2__two.sql", V2);
}

#[test]
fn one_failing_tenant_gives_exit_4_and_status_failed_selects_it_for_the_retry() {
    let (db, t, dir) = setup(&[V1]);
    let names = ["alpha", "bravo", "charlie", "delta"];
    v2_breaks(&db, &t, dir.path(), &names, &["charlie"]);

    let r: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(4).json();
    assert_eq!(domains(&r), names, "selection order is by id");
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
    for d in ["alpha", "bravo", "delta"] {
        let res = r.of(d);
        assert_eq!(res.status, "ok", "{res:?}");
        assert_eq!((res.from_revision, res.to_revision), (Some(1), Some(2)));
        assert_eq!(res.applied, [2]);
        assert_eq!(res.error, None);
        assert_eq!(history_versions(&db, &schema(d)), [1, 2]);
        assert_truth(&db, d, "active");
    }
    let res = r.of("charlie");
    assert_eq!(res.status, "failed");
    assert_eq!((res.from_revision, res.to_revision), (Some(1), Some(1)));
    assert!(res.applied.is_empty(), "{res:?}");
    assert!(res.error.as_deref().unwrap_or("").contains("V2"), "{res:?}");
    assert_eq!(history_versions(&db, "tenant_charlie"), [1]);
    let row = assert_truth(&db, "charlie", "failed");
    assert_eq!(row.current_revision, Some(1));
    let err = row.last_error.unwrap_or_default();
    assert!(err.contains("V2"), "last_error should name V2: {err}");

    // Fix the conflict; `--status failed` retries only the failed tenant.
    fix_v2(&db, "charlie");
    let r: RunReport = t
        .run(&["upgrade", "--status", "failed", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(domains(&r), ["charlie"], "{r:#?}");
    let res = r.of("charlie");
    assert_eq!(res.status, "ok");
    assert_eq!(res.applied, [2]);
    assert_eq!((res.from_revision, res.to_revision), (Some(1), Some(2)));
    assert_eq!(history_versions(&db, "tenant_charlie"), [1, 2]);
    let row = assert_truth(&db, "charlie", "active");
    assert_eq!(row.last_error, None);
    for d in names {
        assert_truth(&db, d, "active");
    }
}

#[test]
fn no_op_runs_open_no_session_and_real_work_waits_for_the_tenant_lock() {
    let (db, t, dir) = setup(&[V1]);
    let names = ["one", "two", "three"];
    for d in names {
        create(&t, d, &["--migrate"]);
        assert_truth(&db, d, "active");
    }
    let mut locker = db.client();
    lock_tenant(&mut locker, "tenant_two");

    // Everyone is at head and active: answered without a session, so the lock held on
    // tenant_two does not matter.
    let run = t.spawn(&["upgrade", "--all", "-o", "json"]).finish();
    run.expect(0);
    let r: RunReport = run.json();
    assert_eq!(domains(&r), names);
    for res in &r.results {
        assert_eq!(res.status, "up_to_date", "{res:?}");
        assert_eq!((res.from_revision, res.to_revision), (Some(1), Some(1)));
        assert!(res.applied.is_empty() && res.error.is_none(), "{res:?}");
    }
    assert_eq!((r.summary.total, r.summary.up_to_date), (3, 3));
    let ev = events(&t, &["--run", &r.run_id]);
    assert!(
        ev.events.is_empty(),
        "a no-op run wrote ledger rows: {ev:#?}"
    );

    // With a pending migration the run needs a session on tenant_two and must wait for
    // the lock; the other tenants proceed meanwhile.
    write(dir.path(), "V2__two.sql", V2);
    let mut child = t.spawn(&["upgrade", "--all", "-o", "json"]);
    child.wait_until("the unlocked tenants are at 2", || {
        at(&db, "one") == 2 && at(&db, "three") == 2
    });
    child.wait_until("the run waits for tenant_two's lock", || {
        lock_waiters(&db, "tenant_two") == 1
    });
    assert!(
        child.running(),
        "upgrade finished while tenant_two's lock was held by another session"
    );
    assert_eq!(
        at(&db, "two"),
        1,
        "tenant_two was migrated without its lock"
    );
    assert!(unlock_tenant(&mut locker, "tenant_two"));
    let run = child.finish();
    run.expect(0);
    let r: RunReport = run.json();
    for d in names {
        let res = r.of(d);
        assert_eq!(res.status, "ok", "{res:?}");
        assert_eq!(res.applied, [2]);
        assert_eq!(history_versions(&db, &schema(d)), [1, 2]);
        assert_truth(&db, d, "active");
    }
}

#[test]
fn canary_failure_holds_back_the_rest_and_a_clean_canary_lets_everyone_through() {
    let (db, t, dir) = setup(&[V1]);
    let names = ["t1", "t2", "t3", "t4"];
    v2_breaks(&db, &t, dir.path(), &names, &["t1"]);

    let r: RunReport = t
        .run(&[
            "upgrade",
            "--all",
            "--canary",
            "1",
            "--concurrency",
            "1",
            "-o",
            "json",
        ])
        .expect(4)
        .json();
    assert_eq!(domains(&r), names);
    assert_eq!(r.of("t1").status, "failed", "{r:#?}");
    for d in ["t2", "t3", "t4"] {
        let res = r.of(d);
        assert_eq!(res.status, "skipped", "{res:?}");
        assert!(
            res.error.as_deref().unwrap_or("").contains("canary"),
            "{res:?}"
        );
        assert!(res.applied.is_empty());
        assert_eq!(history_versions(&db, &schema(d)), [1], "{d} was changed");
        let row = assert_truth(&db, d, "active");
        assert_eq!(row.current_revision, Some(1));
    }
    assert_eq!(
        (r.summary.failed, r.summary.skipped, r.summary.ok),
        (1, 3, 0)
    );
    assert_eq!(history_versions(&db, "tenant_t1"), [1]);
    assert_truth(&db, "t1", "failed");

    fix_v2(&db, "t1");
    let r: RunReport = t
        .run(&["upgrade", "--all", "--canary", "2", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.summary.ok, 4, "{r:#?}");
    for d in names {
        assert_eq!(r.of(d).status, "ok");
        assert_eq!(history_versions(&db, &schema(d)), [1, 2]);
        assert_truth(&db, d, "active");
    }
}

#[test]
fn shards_split_the_fleet_into_disjoint_parts_that_cover_it() {
    let (db, t, _dir) = setup(&[V1]);
    let names: Vec<String> = (1..=8).map(|i| format!("s{i}")).collect();
    for d in &names {
        create(&t, d, &["--provision"]);
    }
    let all: BTreeSet<String> = names.iter().cloned().collect();

    let r1: RunReport = t
        .run(&["upgrade", "--all", "--shard", "1/2", "-o", "json"])
        .expect(0)
        .json();
    let a: BTreeSet<String> = domains(&r1).into_iter().collect();
    assert_eq!(a.len(), r1.results.len(), "duplicates in {r1:#?}");
    for d in &names {
        // Only shard 1 was touched.
        assert_eq!(at(&db, d), i32::from(a.contains(d)), "{d}");
    }
    let r2: RunReport = t
        .run(&["upgrade", "--all", "--shard", "2/2", "-o", "json"])
        .expect(0)
        .json();
    let b: BTreeSet<String> = domains(&r2).into_iter().collect();
    assert_eq!(b.len(), r2.results.len(), "duplicates in {r2:#?}");
    assert!(a.is_disjoint(&b), "shards overlap: {a:?} {b:?}");
    assert_eq!(a.union(&b).cloned().collect::<BTreeSet<_>>(), all);
    for res in r1.results.iter().chain(&r2.results) {
        assert_eq!(res.status, "ok", "{res:?}");
    }
    for d in &names {
        assert_eq!(at(&db, d), 1, "{d}");
    }
    // Stable: the same shard selects the same tenants again.
    let again: RunReport = t
        .run(&["upgrade", "--all", "--shard", "1/2", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(domains(&again).into_iter().collect::<BTreeSet<_>>(), a);

    for bad in ["0/2", "3/2", "x"] {
        let run = t.run(&["upgrade", "--all", "--shard", bad]);
        run.expect(2);
        assert!(run.stdout.is_empty(), "{bad}: {}", run.stdout);
    }
}

#[test]
fn max_failures_stops_starting_tenants_and_conflicts_with_fail_fast() {
    let (db, t, dir) = setup(&[V1]);
    let names = ["m1", "m2", "m3", "m4", "m5", "m6"];
    v2_breaks(&db, &t, dir.path(), &names, &["m1", "m2", "m3"]);

    let run = t.run(&["upgrade", "--all", "--fail-fast", "--max-failures", "2"]);
    run.expect(2);
    for d in names {
        assert_eq!(at(&db, d), 1, "{d} changed by a refused command");
    }

    let r: RunReport = t
        .run(&[
            "upgrade",
            "--all",
            "--max-failures",
            "2",
            "--concurrency",
            "1",
            "-o",
            "json",
        ])
        .expect(4)
        .json();
    assert_eq!(domains(&r), names);
    assert_eq!(r.of("m1").status, "failed", "{r:#?}");
    assert_eq!(r.of("m2").status, "failed", "{r:#?}");
    for d in ["m3", "m4", "m5", "m6"] {
        let res = r.of(d);
        assert_eq!(res.status, "skipped", "{res:?}");
        assert!(
            res.error.as_deref().unwrap_or("").contains("max-failures"),
            "{res:?}"
        );
        assert_eq!(at(&db, d), 1, "{d} was changed");
    }
    assert_eq!(
        (r.summary.failed, r.summary.skipped, r.summary.ok),
        (2, 4, 0)
    );
    assert_truth(&db, "m1", "failed");
    assert_truth(&db, "m2", "failed");
    // m3 was never tried: still active.
    assert_truth(&db, "m3", "active");
}

#[test]
fn selection_by_type_exclude_and_named_order() {
    let (db, t, _dir) = setup(&[V1]);
    create(&t, "a", &["--provision", "--type", "church"]);
    create(&t, "b", &["--provision", "--type", "church"]);
    create(&t, "c", &["--provision"]);
    create(&t, "d", &["--provision"]);

    // Nothing selects tenants: a usage error, nothing changed.
    for args in [
        &["upgrade"][..],
        &["upgrade", "--exclude", "a"][..],
        &["upgrade", "--shard", "1/2"][..],
    ] {
        let run = t.run(args);
        run.expect(2);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    for d in ["a", "b", "c", "d"] {
        assert_eq!(at(&db, d), 0, "{d}");
    }

    let r: RunReport = t
        .run(&["upgrade", "--type", "church", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(domains(&r), ["a", "b"]);
    assert_eq!((at(&db, "a"), at(&db, "b")), (1, 1));
    assert_eq!((at(&db, "c"), at(&db, "d")), (0, 0));

    // An unknown --exclude is an error before anything runs.
    let run = t.run(&["upgrade", "--all", "--exclude", "nosuch"]);
    expect_error(&run, 1, &["nosuch"]);
    assert_eq!((at(&db, "c"), at(&db, "d")), (0, 0));

    let r: RunReport = t
        .run(&["upgrade", "--all", "--exclude", "c", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(domains(&r), ["a", "b", "d"]);
    assert_eq!(r.of("a").status, "up_to_date");
    assert_eq!(r.of("d").status, "ok");
    assert_eq!(at(&db, "c"), 0, "excluded tenant was changed");
    assert_eq!(at(&db, "d"), 1);
    let row = registry_row(&db, "c");
    assert_eq!(
        (row.current_revision, row.status.as_str()),
        (None, "active")
    );

    let r: RunReport = t
        .run(&[
            "upgrade", "--tenant", "c", "--tenant", "b", "--tenant", "a", "-o", "json",
        ])
        .expect(0)
        .json();
    assert_eq!(domains(&r), ["c", "b", "a"], "named order is kept");
    assert_eq!(r.of("c").status, "ok");
    assert_eq!(at(&db, "c"), 1);
}

#[test]
fn the_run_ledger_records_who_changed_what_in_each_run() {
    let (db, t, dir) = setup(&[V1]);
    let names = ["la", "lb", "lc", "ld"];
    for d in names {
        create(&t, d, &["--migrate"]);
    }
    write(dir.path(), "V2__two.sql", V2);
    t.run(&["upgrade", "--tenant", "ld", "-o", "json"])
        .expect(0);
    break_v2(&db, "lc");

    let r: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(4).json();
    assert_eq!(r.of("ld").status, "up_to_date");
    assert_eq!(r.of("lc").status, "failed");
    let me: String = db
        .client()
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0);

    let ev = events(&t, &["--run", &r.run_id]);
    let mut logged: Vec<String> = ev.events.iter().map(|e| e.domain.clone()).collect();
    logged.sort();
    assert_eq!(logged, ["la", "lb", "lc"], "{ev:#?}");
    let ids: Vec<i64> = ev.events.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    for e in &ev.events {
        let res = r.of(&e.domain);
        assert_eq!(e.run_id, r.run_id);
        assert_eq!(e.action, "upgrade");
        assert_eq!(e.schema_name, schema(&e.domain));
        assert_eq!(e.tenant_id, registry_row(&db, &e.domain).id);
        assert_eq!(
            (e.from_revision, e.to_revision),
            (res.from_revision, res.to_revision),
            "{e:?} vs {res:?}"
        );
        let failed = e.domain == "lc";
        assert_eq!(e.status, if failed { "failed" } else { "ok" }, "{e:?}");
        assert_eq!(e.error.is_some(), failed, "{e:?}");
        assert_eq!(e.db_user, me);
        assert!(
            e.client_host.as_deref().is_some_and(|h| !h.is_empty()),
            "{e:?}"
        );
        assert!(e.duration_ms.is_some_and(|ms| ms >= 0), "{e:?}");
        assert!(
            e.started_at.as_deref().is_some_and(|t| !t.is_empty())
                && e.finished_at.as_deref().is_some_and(|t| !t.is_empty()),
            "{e:?}"
        );
    }
    let lc = ev.events.iter().find(|e| e.domain == "lc").unwrap();
    assert!(lc.error.as_deref().unwrap().contains("V2"), "{lc:?}");
    assert_eq!((lc.from_revision, lc.to_revision), (Some(1), Some(1)));

    let failed = events(&t, &["--failed"]);
    assert_eq!(failed.events.len(), 1, "{failed:#?}");
    assert!(failed.events.iter().all(|e| e.status == "failed"));
    assert_eq!(failed.events[0].domain, "lc");
    assert_eq!(failed.events[0].run_id, r.run_id);

    let last = events(&t, &["--tenant", "la", "--limit", "1"]);
    assert_eq!(last.events.len(), 1, "{last:#?}");
    assert_eq!(last.events[0].domain, "la");
    assert_eq!(last.events[0].run_id, r.run_id, "not the newest: {last:#?}");
    assert_eq!(last.events[0].action, "upgrade");
    let history = events(&t, &["--tenant", "la"]);
    assert!(history.events.len() >= 2, "{history:#?}");
    assert!(history.events.iter().all(|e| e.domain == "la"));
    assert_eq!(history.events.last().unwrap().action, "register");

    create(&t, "le", &[]);
    let reg = events(&t, &["--tenant", "le"]);
    assert_eq!(reg.events.len(), 1, "{reg:#?}");
    let e = &reg.events[0];
    assert_eq!((e.action.as_str(), e.status.as_str()), ("register", "ok"));
    assert_eq!((e.error.as_deref(), e.from_revision), (None, None));
    assert_eq!(e.db_user, me);

    expect_error(&t.run(&["events", "--run", "not-a-uuid"]), 2, &["UUID"]);
}

#[test]
fn sigkill_in_the_middle_leaves_no_half_applied_migration_and_a_rerun_finishes() {
    let names = ["k1", "k2", "k3", "k4", "k5", "k6"];
    let dir = gated_set(names[0]);
    let (db, t) = ready();
    let t = t.migrations(dir.path());
    for d in names {
        create(&t, d, &["--provision"]);
    }
    let mut gate = Gate::advisory(&db.url, GATE);
    let mut child = t.spawn(&["upgrade", "--all", "--concurrency", "1"]);
    child.wait_until("k1 is done and k2 waits at the gate inside V2", || {
        at(&db, "k1") == 3 && at(&db, "k2") == 1 && gate.blocked_tenantctl().len() == 1
    });
    child.kill(); // SIGKILL

    let mut done = 0;
    for d in names {
        let v = at(&db, d);
        let s = schema(d);
        assert_eq!(relation_exists(&db, &s, "one"), v >= 1, "{d} at {v}");
        assert_eq!(relation_exists(&db, &s, "two"), v >= 2, "{d} at {v}");
        assert_eq!(relation_exists(&db, &s, "three"), v >= 3, "{d} at {v}");
        done += usize::from(v == 3);
    }
    assert!(
        done >= 1 && done < names.len(),
        "the kill did not land mid-run"
    );
    // k1 finished, k2 keeps V1 alone (its V2 never committed), the rest never started.
    let reached: Vec<i32> = names.iter().map(|d| at(&db, d)).collect();
    assert_eq!(reached, [3, 1, 0, 0, 0, 0], "{names:?}");

    // The killed run's backend still waits at the gate, holding k2's lock (its COMMIT may
    // already be queued: V2 is all or nothing either way); the rerun needs that lock.
    gate.open();
    let r: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(r.summary.failed, 0, "{r:#?}");
    for d in names {
        assert_eq!(history_versions(&db, &schema(d)), [1, 2, 3], "{d}");
        let row = assert_truth(&db, d, "active");
        assert_eq!(row.current_revision, Some(3));
    }
}

#[test]
fn sigterm_finishes_tenants_in_flight_skips_the_rest_and_exits_130() {
    let names = ["g1", "g2", "g3", "g4", "g5", "g6"];
    let dir = gated_set(names[0]);
    let (db, t) = ready();
    let t = t.migrations(dir.path());
    for d in names {
        create(&t, d, &["--provision"]);
    }
    let mut gate = Gate::advisory(&db.url, GATE);
    let mut child = t.spawn(&["upgrade", "--all", "--concurrency", "1", "-o", "json"]);
    child.wait_until("g1 is done and g2 waits at the gate inside V2", || {
        at(&db, "g1") == 3 && at(&db, "g2") == 1 && gate.blocked_tenantctl().len() == 1
    });
    child.signal("TERM");
    child.wait_for_stderr("stopping");
    // The signal arrived while g2's V2 was in flight: it still waits, and is let finish.
    assert_eq!(gate.blocked_tenantctl().len(), 1, "{:?}", gate.blocked());
    gate.open();
    let run = child.finish();
    run.expect(130);
    let r: RunReport = run.json();
    assert_eq!(domains(&r), names);
    let ok: Vec<&str> = r
        .results
        .iter()
        .filter(|x| x.status == "ok")
        .map(|x| x.domain.as_str())
        .collect();
    let skipped: Vec<&str> = r
        .results
        .iter()
        .filter(|x| x.status == "skipped")
        .map(|x| x.domain.as_str())
        .collect();
    assert!(
        ok.len() >= 2,
        "the tenant in flight should have been recorded: {r:#?}"
    );
    assert!(!skipped.is_empty(), "{r:#?}");
    assert_eq!(ok.len() + skipped.len(), names.len(), "{r:#?}");
    // Exactly: g1 finished before the signal, g2 was in flight, the rest never started.
    assert_eq!(ok, ["g1", "g2"], "{r:#?}");
    assert_eq!(skipped, ["g3", "g4", "g5", "g6"], "{r:#?}");
    assert_eq!(history_versions(&db, &schema("g2")), [1, 2]);
    assert_eq!(r.summary.failed, 0);
    for res in &r.results {
        if res.status == "skipped" {
            assert!(
                res.error.as_deref().unwrap_or("").contains("interrupted"),
                "{res:?}"
            );
            assert_eq!(at(&db, &res.domain), 0, "{} was changed", res.domain);
        }
    }
    // The tenant in flight stopped after its current migration (V2): the history and
    // the registry agree on where it stopped, and the result says it stopped early.
    for res in r.results.iter().filter(|x| x.status == "ok") {
        let d = res.domain.as_str();
        let history = history_versions(&db, &schema(d));
        assert_eq!(res.applied, history, "{res:?}");
        let row = assert_truth(&db, d, "active");
        assert_eq!(row.current_revision, history.last().copied(), "{d}");
        if history != [1, 2, 3] {
            assert!(
                res.error.as_deref().unwrap_or("").contains("stopped early"),
                "{res:?}"
            );
        }
    }
    assert!(
        run.stderr.to_lowercase().contains("stopping"),
        "{}",
        run.stderr
    );
}

#[test]
fn text_runs_print_one_progress_line_per_tenant_worked_on_to_stderr() {
    let (db, t, dir) = setup(&[V1]);
    for d in ["p1", "p2", "p3"] {
        create(&t, d, &["--migrate"]);
    }
    write(dir.path(), "V2__two.sql", V2);
    t.run(&["upgrade", "--tenant", "p2"]).expect(0);

    let run = t.run(&["upgrade", "--all"]);
    run.expect(0);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "one line per tenant worked on:\n{}",
        run.stderr
    );
    for d in ["p1", "p3"] {
        assert_eq!(
            lines.iter().filter(|l| l.contains(d)).count(),
            1,
            "{d}:\n{}",
            run.stderr
        );
    }
    assert!(!run.stderr.contains("p2"), "{}", run.stderr);
    assert!(!run.stderr.contains("tenants:"), "{}", run.stderr);

    // stdout: the summary line, and no table: every tenant ended well; no progress lines.
    let first = run.stdout.lines().next().unwrap_or("");
    assert!(
        first.starts_with("3 tenants: 2 ok, 1 up to date, 0 failed, 0 skipped"),
        "{}",
        run.stdout
    );
    for d in ["p1", "p2", "p3"] {
        assert!(!run.stdout.contains(d), "{}", run.stdout);
    }
    for l in run.stdout.lines() {
        assert!(!l.starts_with("upgrade "), "progress on stdout: {l}");
    }
    // -v: the table of every tenant after the summary.
    let run = t.run(&["-v", "upgrade", "--all"]);
    run.expect(0);
    for d in ["p1", "p2", "p3"] {
        assert!(run.stdout.contains(d), "{}", run.stdout);
    }
    assert_eq!(at(&db, "p1"), 2);
}
