//! Commands racing each other on one fleet: two bulk upgrades and a `tenant create` at
//! once, and `tenant drop` against an upgrade of the same tenant, in both orders. The
//! per-tenant lock must make every migration run exactly once, every command end with a
//! clear outcome, and the registry and ledger say only what is true.

use crate::{checks, common_json, support};
use std::collections::BTreeMap;

use checks::{assert_truth, create, history_versions, schema_exists};
use common_json::{Created, Dropped, Events, RunReport};
use support::{
    backends_running, dir_with, lock_tenant, lock_waiters, ready, unlock_tenant, wait_at, Gate,
    TestDb,
};

/// The gate x's V2 waits at.
const GATE: i64 = 7013;

fn schema(domain: &str) -> String {
    format!("tenant_{}", domain.replace('-', "_"))
}

fn registered(db: &TestDb, domain: &str) -> bool {
    db.client()
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM public.tenants WHERE domain = $1)",
            &[&domain],
        )
        .unwrap()
        .get(0)
}

#[test]
fn two_bulk_upgrades_and_a_tenant_create_at_once_apply_each_migration_once() {
    let (db, t) = ready();
    let names = ["r1", "r2", "r3", "r4", "r5"];
    for d in names {
        t.run(&[
            "tenant",
            "create",
            d,
            "--name",
            d,
            "--migrate",
            "--target",
            "1",
        ])
        .expect(0);
        assert_eq!(history_versions(&db, &schema(d)), [1]);
    }
    let a = t.spawn(&["upgrade", "--all", "-o", "json"]);
    let b = t.spawn(&["upgrade", "--all", "-o", "json"]);
    let c = t.spawn(&[
        "tenant",
        "create",
        "newbie",
        "--name",
        "N",
        "--migrate",
        "-o",
        "json",
    ]);
    let (ra, rb, rc) = (a.finish(), b.finish(), c.finish());
    ra.expect(0);
    rb.expect(0);
    rc.expect(0);
    let runs: [RunReport; 2] = [ra.json(), rb.json()];
    let created: Created = rc.json();
    assert_eq!(
        created.migration_status.current_revision,
        Some(6),
        "{created:#?}"
    );
    assert!(created.migration_status.pending_migrations.is_empty());
    assert_eq!(created.tenant.current_revision, Some(6), "{created:#?}");

    let mut applied: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for r in &runs {
        assert_eq!(r.summary.failed, 0, "{r:#?}");
        for res in &r.results {
            assert!(
                ["ok", "up_to_date"].contains(&res.status.as_str())
                    || (res.domain == "newbie" && res.status == "skipped"),
                "{res:?}"
            );
            applied
                .entry(res.domain.clone())
                .or_default()
                .extend(&res.applied);
        }
        for d in names {
            assert_eq!(r.of(d).to_revision, Some(6), "{r:#?}");
        }
    }
    for d in names {
        let mut versions = applied.get(d).cloned().unwrap_or_default();
        versions.sort();
        assert_eq!(
            versions,
            [2, 3, 4, 5, 6],
            "{d}: across both bulk runs each pending version is applied exactly once"
        );
    }
    for d in names.iter().copied().chain(["newbie"]) {
        assert_eq!(history_versions(&db, &schema(d)), [1, 2, 3, 4, 5, 6], "{d}");
        let dup: i64 = db
            .client()
            .query_one(
                &format!(
                    "SELECT count(*) - count(DISTINCT version) FROM \"{}\".refinery_schema_history",
                    schema(d)
                ),
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(dup, 0, "{d}: a version recorded twice");
        let row = assert_truth(&db, d, "active");
        assert_eq!(row.current_revision, Some(6));
    }

    // The ledger agrees: the ok upgrade entries of each tenant cover 1 -> 6 once, with no
    // overlapping ranges, and nothing failed.
    for d in names {
        let ev: Events = t
            .run(&["events", "--tenant", d, "-o", "json"])
            .expect(0)
            .json();
        assert!(ev.events.iter().all(|e| e.status == "ok"), "{ev:#?}");
        let mut ranges: Vec<(i32, i32)> = ev
            .events
            .iter()
            .filter(|e| e.action == "upgrade")
            .map(|e| (e.from_revision.unwrap_or(0), e.to_revision.unwrap_or(0)))
            .collect();
        ranges.sort();
        let chained = ranges.first().is_some_and(|r| r.0 == 1)
            && ranges.last().is_some_and(|r| r.1 == 6)
            && ranges.iter().all(|r| r.0 < r.1)
            && ranges.windows(2).all(|w| w[0].1 == w[1].0);
        assert!(
            chained,
            "{d}: the ok upgrade entries (from, to) should chain 1 -> 6 without overlap: {ranges:?}"
        );
    }
}

#[test]
fn tenant_drop_waits_for_an_upgrade_in_flight_then_drops() {
    let (db, t) = ready();
    let dir = dir_with(&[("V1__one.sql", "CREATE TABLE one (id int);\n")]);
    let t = t.migrations(dir.path());
    create(&t, "x", &["--migrate"]);
    create(&t, "bystander", &["--migrate"]);
    // V2 waits at a gate the test holds: the upgrade stays in flight until it opens.
    std::fs::write(
        dir.path().join("V2__two.sql"),
        format!("CREATE TABLE two (id int);\n{}", wait_at(GATE)),
    )
    .unwrap();

    let mut gate = Gate::advisory(&db.url, GATE);
    let mut up = t.spawn(&["upgrade", "--tenant", "x", "-o", "json"]);
    up.wait_for("x's upgrade waits at the gate inside V2", || {
        backends_running(&db, "pg_advisory_xact_lock_shared")
            .into_iter()
            .find(|(_, s)| s.as_deref() == Some("tenant_x"))
            .filter(|_| gate.blocked_tenantctl().len() == 1)
    });
    let mut drop = t.spawn(&["tenant", "drop", "x", "--yes", "-o", "json"]);
    drop.wait_until("the drop waits for x's lock", || {
        lock_waiters(&db, "tenant_x") == 1
    });
    assert!(
        drop.running(),
        "tenant drop did not wait for the upgrade in flight"
    );
    assert!(registered(&db, "x") && schema_exists(&db, "tenant_x"));
    // The upgrade is still in flight: it waits at the gate, the drop behind it.
    assert_eq!(gate.blocked_tenantctl().len(), 1, "{:?}", gate.blocked());
    gate.open();

    let up_run = up.finish();
    up_run.expect(0);
    let r: RunReport = up_run.json();
    let res = r.of("x");
    assert_eq!(res.status, "ok", "{res:?}");
    assert_eq!(res.applied, [2], "{res:?}");
    assert_eq!((res.from_revision, res.to_revision), (Some(1), Some(2)));

    let drop_run = drop.finish();
    drop_run.expect(0);
    let dropped: Dropped = drop_run.json();
    assert!(dropped.schema_dropped, "{dropped:#?}");
    assert!(!registered(&db, "x"), "x's registry row survived the drop");
    assert!(
        !schema_exists(&db, "tenant_x"),
        "x's schema survived the drop"
    );
    // The other tenant was not touched.
    assert_eq!(history_versions(&db, "tenant_bystander"), [1]);
    assert_truth(&db, "bystander", "active");

    // The ledger's drop entry says what was dropped: the tenant at revision 2, as the
    // upgrade left it before the drop got the lock.
    let drops: Vec<(String, Option<i32>)> = db
        .client()
        .query(
            "SELECT action, from_revision FROM public.tenant_events \
             WHERE domain = 'x' AND action LIKE 'drop%'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        drops,
        [("drop".to_string(), Some(2))],
        "the drop's ledger entry should record the revision the tenant was dropped at"
    );
}

#[test]
fn tenant_drop_and_upgrade_queued_on_one_lock_both_end_with_a_clear_outcome() {
    let (db, t) = ready();
    let dir = dir_with(&[("V1__one.sql", "CREATE TABLE one (id int);\n")]);
    let t = t.migrations(dir.path());
    create(&t, "y", &["--migrate"]);
    std::fs::write(
        dir.path().join("V2__two.sql"),
        "CREATE TABLE two (id int);\n",
    )
    .unwrap();

    let mut locker = db.client();
    lock_tenant(&mut locker, "tenant_y");
    let mut drop = t.spawn(&["tenant", "drop", "y", "--yes", "-o", "json"]);
    drop.wait_until("the drop waits for y's lock", || {
        lock_waiters(&db, "tenant_y") == 1
    });
    let mut up = t.spawn(&["upgrade", "--tenant", "y", "-o", "json"]);
    up.wait_until("the upgrade waits for y's lock too", || {
        lock_waiters(&db, "tenant_y") == 2
    });
    assert!(drop.running());
    assert!(unlock_tenant(&mut locker, "tenant_y"));

    let drop_run = drop.finish();
    let up_run = up.finish();
    // Whichever got the lock first, the drop succeeds.
    drop_run.expect(0);
    let dropped: Dropped = drop_run.json();
    assert!(dropped.schema_dropped, "{dropped:#?}");
    match up_run.code {
        0 | 1 if up_run.stdout.trim_start().starts_with('{') => {
            let r: RunReport = up_run.json();
            let res = r.of("y");
            let error = res.error.clone().unwrap_or_default();
            let upgraded_first = res.status == "ok" && res.applied == [2] && up_run.code == 0;
            let found_it_dropped = res.status == "skipped" && error.contains("dropped");
            assert!(
                upgraded_first || found_it_dropped,
                "the upgrade should either have run first or report y as dropped: {r:#?}"
            );
            assert!(res.applied.is_empty() || upgraded_first, "{res:?}");
        }
        1 => {
            assert!(up_run.stdout.is_empty(), "{}", up_run.stdout);
            assert!(
                up_run.stderr.starts_with("error: ") && up_run.stderr.contains('y'),
                "the upgrade should name the unknown tenant:\n{}",
                up_run.stderr
            );
        }
        code => panic!(
            "upgrade racing a drop exited {code}\nstdout:\n{}\nstderr:\n{}",
            up_run.stdout, up_run.stderr
        ),
    }
    assert!(!registered(&db, "y"), "y's registry row survived the drop");
    assert!(
        !schema_exists(&db, "tenant_y"),
        "y's schema survived the drop"
    );
    let leftover: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_y'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(leftover, 0);
}
