//! A server restart in the middle of a fleet run, on a throwaway server of the test's own
//! (the shared one is never restarted): tenants whose migration was in flight are reported
//! failed with a clear error and rolled back, tenants started after the restart wait for
//! the server and finish, and a rerun completes the job. Without a rerun, every registry
//! row says what is true: the failures of tenants in flight are recorded through the
//! command's registry connection, which reconnects after the restart.
//!
//! V2 waits at a gate the test holds on the same server, so the restart lands while the
//! tenants are inside V2; the restart ends the gate's session too, so tenants started
//! afterwards pass V2 freely.

use crate::{cluster, common_json, support};
use std::path::Path;

use cluster::{Cluster, ServerCert, Setup};
use common_json::RunReport;
use support::{bare, wait_at, wait_at_except, Gate, Tenantctl};

/// The gate V2 waits at.
const GATE: i64 = 7014;

/// tenantctl against the cluster at `url` with the migrations in `dir`, run from there.
fn runner(url: &str, dir: &Path) -> Tenantctl {
    bare().url(url).migrations(dir).cwd(dir)
}

fn ok(url: &str, dir: &Path, args: &[&str]) {
    runner(url, dir).run(args).expect(0);
}

/// (max history version, whether V2's table exists) for a tenant schema.
fn state(client: &mut postgres::Client, schema: &str) -> (Option<i32>, bool) {
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT max(version) FROM \"{schema}\".refinery_schema_history), \
                 to_regclass('\"{schema}\".t2') IS NOT NULL"
            ),
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// A throwaway plain-TCP cluster with a registry and six tenants, t1..t6, at V1, and
/// V2 (`V2__slow.sql`) waiting at [`GATE`] after its `CREATE TABLE` with the statement
/// `wait`.
fn six_tenants_at_v1(wait: &str) -> (Cluster, String, tempfile::TempDir, Vec<String>) {
    let cluster = Cluster::start(&Setup {
        server_cert: ServerCert::Localhost,
        ssl: false,
        hba: &["host all all 127.0.0.1/32 trust", "local all all trust"],
    });
    let url = cluster.url("sslmode=disable");
    let dir = support_dir(wait);
    ok(&url, dir.path(), &["init"]);
    let domains: Vec<String> = (1..=6).map(|i| format!("t{i}")).collect();
    for d in &domains {
        ok(
            &url,
            dir.path(),
            &[
                "tenant",
                "create",
                d,
                "--name",
                d,
                "--migrate",
                "--target",
                "1",
            ],
        );
    }
    (cluster, url, dir, domains)
}

#[test]
fn a_server_restart_fails_only_the_tenants_in_flight_and_a_rerun_finishes() {
    let (cluster, url, dir, domains) = six_tenants_at_v1(&wait_at(GATE));
    let mut gate = Gate::advisory(&url, GATE);
    let mut child =
        runner(&url, dir.path()).spawn(&["upgrade", "--all", "--concurrency", "2", "-o", "json"]);
    // Wait until two tenants wait at the gate inside V2, then restart the server under
    // them (which ends the gate's session too).
    child.wait_until("two tenants wait inside V2", || {
        gate.blocked_tenantctl().len() == 2
    });
    cluster.restart();
    drop(gate);
    let out = child.finish();
    let stderr = &out.stderr;
    let r: RunReport = out.json();
    let failed: Vec<&str> = r
        .results
        .iter()
        .filter(|x| x.status == "failed")
        .map(|x| x.domain.as_str())
        .collect();
    let finished: Vec<&str> = r
        .results
        .iter()
        .filter(|x| x.status == "ok")
        .map(|x| x.domain.as_str())
        .collect();
    assert!(
        !failed.is_empty(),
        "the restart must have hit a tenant in flight: {r:#?}"
    );
    assert!(
        failed.len() >= 2,
        "both tenants inside V2 were in flight at the restart: {r:#?}"
    );
    assert!(
        finished.len() >= 2,
        "tenants started after the restart wait for the server and finish: {r:#?}\n{stderr}"
    );
    assert_eq!(failed.len() + finished.len(), 6, "{r:#?}");
    assert_eq!(out.code, 4, "{stderr}");
    for x in r.results.iter().filter(|x| x.status == "failed") {
        let e = x.error.as_deref().unwrap();
        assert!(
            e.contains("V2__slow") || e.contains("cannot connect"),
            "a clear error: {e}"
        );
    }
    // Nothing half-applied: V2's table exists exactly where V2 is recorded.
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for d in &domains {
        let (v, t2) = state(&mut c, &format!("tenant_{d}"));
        assert_eq!(t2, v == Some(2), "{d}: history {v:?}, t2 exists {t2}");
        let expected = if finished.contains(&d.as_str()) {
            Some(2)
        } else {
            Some(1)
        };
        assert_eq!(v, expected, "{d}");
    }
    // A rerun completes the job and the registry says so.
    ok(&url, dir.path(), &["upgrade", "--all"]);
    for d in &domains {
        assert_eq!(
            state(&mut c, &format!("tenant_{d}")),
            (Some(2), true),
            "{d}"
        );
        let row = c
            .query_one(
                "SELECT status, current_revision, last_error FROM public.tenants WHERE domain = $1",
                &[d],
            )
            .unwrap();
        let (status, rev, err): (String, Option<i32>, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            (status.as_str(), rev, err),
            ("active", Some(2), None),
            "{d}"
        );
    }
}

#[test]
fn after_a_server_restart_mid_run_every_registry_row_says_what_is_true() {
    // V2 passes straight through in t1 alone.
    let (cluster, url, dir, domains) = six_tenants_at_v1(&wait_at_except(GATE, "tenant_t1"));
    let mut gate = Gate::advisory(&url, GATE);
    let mut child =
        runner(&url, dir.path()).spawn(&["upgrade", "--all", "--concurrency", "2", "-o", "json"]);
    // Once t1 has finished and the next two tenants wait inside V2, restart the server:
    // the command's registry connection is closed along with the tenant sessions (and
    // the gate's).
    let mut watcher = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    child.wait_until("t1 has finished V2 while two others wait in it", || {
        let done: i64 = watcher
            .query_one(
                "SELECT count(*) FROM public.tenants WHERE current_revision = 2",
                &[],
            )
            .unwrap()
            .get(0);
        done == 1 && gate.blocked_tenantctl().len() == 2
    });
    drop(watcher);
    cluster.restart();
    drop(gate);
    let out = child.finish();
    let stderr = &out.stderr;
    let r: RunReport = out.json();
    assert_eq!(out.code, 4, "{r:#?}\n{stderr}");

    // Without a rerun, each registry row says what is true, with a ledger entry for the
    // run: finished tenants are active at 2; a tenant whose migration the restart rolled
    // back is failed at 1 with the error, recorded through the reconnected registry
    // connection; a tenant that never got a session is untouched (active at 1).
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut in_flight = 0;
    for d in &domains {
        let res = r
            .results
            .iter()
            .find(|x| &x.domain == d)
            .unwrap_or_else(|| panic!("no result for {d}: {r:#?}"));
        let (v, t2) = state(&mut c, &format!("tenant_{d}"));
        assert_eq!(t2, v == Some(2), "{d}: history {v:?}, t2 exists {t2}");
        let row = c
            .query_one(
                "SELECT status, current_revision, last_error FROM public.tenants WHERE domain = $1",
                &[d],
            )
            .unwrap();
        let (status, rev, err): (String, Option<i32>, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        let ledger: Vec<String> = c
            .query(
                "SELECT status FROM public.tenant_events WHERE domain = $1 AND run_id::text = $2",
                &[d, &r.run_id],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let error = res.error.clone().unwrap_or_default();
        match res.status.as_str() {
            "ok" => {
                assert_eq!(v, Some(2), "{d}");
                assert_eq!(
                    (status.as_str(), rev, err),
                    ("active", Some(2), None),
                    "{d}"
                );
                assert_eq!(ledger, ["ok"], "{d}");
            }
            "failed" if error.contains("cannot connect") => {
                assert_eq!(v, Some(1), "{d}");
                assert_eq!(
                    (status.as_str(), rev, err),
                    ("active", Some(1), None),
                    "{d}"
                );
                assert!(ledger.is_empty(), "{d}: {ledger:?}");
            }
            "failed" => {
                in_flight += 1;
                assert!(error.contains("V2__slow"), "{d}: {error}");
                assert_eq!(v, Some(1), "{d}: rolled back");
                assert_eq!(
                    (status.as_str(), rev, err.as_deref()),
                    ("failed", Some(1), Some(error.as_str())),
                    "{d}: the failure is recorded although the registry connection was closed"
                );
                assert_eq!(ledger, ["failed"], "{d}");
            }
            other => panic!("{d}: unexpected status {other}: {res:?}"),
        }
    }
    assert!(
        in_flight >= 1,
        "the restart hit no tenant in flight: {r:#?}"
    );
    assert_eq!(
        in_flight, 2,
        "both tenants waiting inside V2 were in flight at the restart: {r:#?}"
    );
}

fn support_dir(wait: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("V1__one.sql"), "CREATE TABLE t1 (id int);\n").unwrap();
    std::fs::write(
        d.path().join("V2__slow.sql"),
        format!("CREATE TABLE t2 (id int);\n{wait}"),
    )
    .unwrap();
    d
}
