//! Two `upgrade --all` runs at once on the same fleet: both succeed, and between them
//! every migration is applied exactly once per tenant (the per-tenant advisory lock); and
//! two `init` runs at once on a fresh database both succeed.

use crate::{checks, common_json, support};

use checks::{assert_truth, create, history_versions};
use common_json::InitReport;
use common_json::RunReport;
use support::{ready, tenantctl, TestDb};

#[test]
fn two_simultaneous_upgrade_all_runs_apply_each_migration_once() {
    let (db, t) = ready();
    let domains = ["one", "two", "three", "four"];
    for d in domains {
        create(&t, d, &["--provision"]);
    }
    let args = ["upgrade", "--all", "-o", "json"];
    let a = t.spawn(&args);
    let b = t.spawn(&args);
    let outs = [a.finish(), b.finish()];

    let mut applied: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
    for out in &outs {
        let r: RunReport = out.expect(0).json();
        assert_eq!(r.results.len(), 4);
        assert_eq!(r.summary.failed, 0, "{r:?}");
        for res in &r.results {
            assert!(res.status == "ok" || res.status == "up_to_date", "{res:?}");
            assert_eq!(res.to_revision, Some(6), "{res:?}");
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
            [1, 2, 3, 4, 5, 6],
            "{d}: applied across both runs"
        );
        let schema = format!("tenant_{d}");
        assert_eq!(history_versions(&db, &schema), [1, 2, 3, 4, 5, 6]);
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
    let args = ["init", "-o", "json"];
    let a = t.spawn(&args);
    let b = t.spawn(&args);
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
