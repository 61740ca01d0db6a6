//! Two `upgrade --all` runs at once on the same fleet: both succeed, and between them
//! every migration is applied exactly once per tenant (the per-tenant advisory lock); and
//! two `init` runs at once on a fresh database both succeed. Each test holds a gate until
//! it has seen both runs in flight at once, so the overlap is observed, not hoped for.

use crate::{checks, common_json, support};

use checks::{assert_truth, create, history_versions};
use common_json::InitReport;
use common_json::RunReport;
use support::{copy_of_example_migrations, lock_waiters, ready, tenantctl, wait_at, Gate, TestDb};

/// The gate V7 waits at.
const GATE: i64 = 7007;

#[test]
fn two_simultaneous_upgrade_all_runs_apply_each_migration_once() {
    let (db, t) = ready();
    // The example migrations, and a V7 that waits at a gate the test holds.
    let dir = copy_of_example_migrations();
    std::fs::write(dir.path().join("V7__gate.sql"), wait_at(GATE)).unwrap();
    let t = t.migrations(dir.path());
    let domains = ["one", "two", "three", "four"];
    for d in domains {
        create(&t, d, &["--provision"]);
    }
    let mut gate = Gate::advisory(&db.url, GATE);
    let args = ["upgrade", "--all", "-o", "json"];
    let mut a = t.spawn(&args);
    let b = t.spawn(&args);
    // Both runs are in flight on every tenant at once: one run's session holds the
    // tenant's lock and waits inside V7, the other run's waits for that lock.
    a.wait_until(
        "each tenant is inside V7 in one run and waited for by the other",
        || {
            gate.blocked_tenantctl().len() == domains.len()
                && domains
                    .iter()
                    .all(|d| lock_waiters(&db, &format!("tenant_{d}")) == 1)
        },
    );
    gate.open();
    let outs = [a.finish(), b.finish()];

    let mut applied: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
    for out in &outs {
        let r: RunReport = out.expect(0).json();
        assert_eq!(r.results.len(), 4);
        assert_eq!(r.summary.failed, 0, "{r:?}");
        for res in &r.results {
            assert!(res.status == "ok" || res.status == "up_to_date", "{res:?}");
            assert_eq!(res.to_revision, Some(7), "{res:?}");
            applied
                .entry(res.domain.clone())
                .or_default()
                .extend(&res.applied);
        }
    }
    for d in domains {
        let mut versions = applied.get(d).cloned().unwrap_or_default();
        versions.sort();
        assert_eq!(
            versions,
            [1, 2, 3, 4, 5, 6, 7],
            "{d}: applied across both runs"
        );
        let schema = format!("tenant_{d}");
        assert_eq!(history_versions(&db, &schema), [1, 2, 3, 4, 5, 6, 7]);
        let dup: i64 = db
            .client()
            .query_one(
                &format!(
                    "SELECT count(*) - count(DISTINCT version) FROM \"{schema}\".refinery_schema_history"
                ),
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(dup, 0);
        assert_truth(&db, d, "active");
    }
}

#[test]
fn two_simultaneous_inits_both_succeed_and_create_the_registry_once() {
    let db = TestDb::new();
    let t = tenantctl(&db);
    // Both inits wait for the registry's lock, held here, before either creates anything.
    let mut gate = Gate::registry_lock(&db.url, "public");
    let args = ["init", "-o", "json"];
    let mut a = t.spawn(&args);
    let b = t.spawn(&args);
    a.wait_until("both inits wait for the registry's lock", || {
        gate.blocked_tenantctl().len() == 2
    });
    gate.open();
    let mut applied = Vec::new();
    for out in [a.finish(), b.finish()] {
        let r: InitReport = out.expect(0).json();
        assert_eq!(r.version, 6);
        applied.extend(r.applied);
    }
    applied.sort();
    assert_eq!(
        applied,
        [1, 2, 3, 4, 5, 6],
        "each registry migration ran once in total"
    );
    let rows: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM public.tenantctl_registry_history",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 6);
}
