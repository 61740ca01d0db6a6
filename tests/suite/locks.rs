//! Lock waits: `run.lock_timeout` and `run.statement_timeout` apply to every migration; a
//! migration blocked by another session's lock fails after `lock_timeout` and is retried
//! with backoff (`run.lock_retries`, `run.lock_retry_delay`) instead of hanging.

use crate::{checks, common_json, support};
use std::collections::BTreeSet;

use checks::{assert_truth, history_versions};
use common_json::RunReport;
use support::{bare, dir_with, Tenantctl, TestDb};

/// A project folder: migrations V1 (a table) and V2 (an ALTER that needs an exclusive
/// lock on it), and a tenants.toml with these `[run]` settings.
fn project(run: &str, v2: &str) -> tempfile::TempDir {
    let d = dir_with(&[
        ("V1__items.sql", "CREATE TABLE items (id int);\n"),
        ("V2__change.sql", v2),
    ]);
    std::fs::write(
        d.path().join("tenants.toml"),
        format!("[migrations]\ndir = \".\"\n[run]\n{run}\n"),
    )
    .unwrap();
    d
}

/// tenantctl against `db`, run from the project folder `dir` (its tenants.toml names the
/// migrations directory).
fn runner(db: &TestDb, dir: &std::path::Path) -> Tenantctl {
    bare().url(&db.url).cwd(dir)
}

/// Every distinct start time of an `ALTER TABLE items` seen in pg_stat_activity, added to
/// `starts`: one per attempt of the blocked statement.
fn alter_attempts(watcher: &mut postgres::Client, starts: &mut BTreeSet<String>) {
    for row in watcher
        .query(
            "SELECT query_start::text FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'ALTER TABLE items%'",
            &[],
        )
        .unwrap()
    {
        starts.insert(row.get::<_, String>(0));
    }
}

/// A tenant at V1, and a connection holding a lock on its `items` table that conflicts
/// with V2's ALTER TABLE, inside an open transaction.
fn blocked_tenant(db: &TestDb, dir: &std::path::Path) -> postgres::Client {
    let t = runner(db, dir);
    t.run(&["init"]).expect(0);
    t.run(&[
        "tenant",
        "create",
        "locked",
        "--name",
        "Locked",
        "--migrate",
        "--target",
        "1",
    ])
    .expect(0);
    let mut holder = db.client();
    holder
        .batch_execute("BEGIN; LOCK TABLE tenant_locked.items IN ACCESS SHARE MODE")
        .unwrap();
    holder
}

#[test]
fn a_blocked_migration_is_retried_with_backoff_and_succeeds_once_the_lock_is_gone() {
    let db = TestDb::new();
    let dir = project(
        "lock_timeout = \"200ms\"\nlock_retries = 6\nlock_retry_delay = \"150ms\"",
        "ALTER TABLE items ADD COLUMN note text;\n",
    );
    let holder = blocked_tenant(&db, dir.path());
    let mut child = runner(&db, dir.path()).spawn(&["upgrade", "--tenant", "locked", "-o", "json"]);
    // The blocked ALTER timed out and was sent again, at least twice over.
    let mut watcher = db.client();
    let mut starts = BTreeSet::new();
    child.wait_until("the blocked ALTER has been retried twice", || {
        alter_attempts(&mut watcher, &mut starts);
        starts.len() >= 3
    });
    assert_eq!(
        history_versions(&db, "tenant_locked"),
        [1],
        "V2 cannot have run while the lock is held"
    );
    drop(holder); // ends the blocking transaction
    let run = child.finish();
    let r: RunReport = run.expect(0).json();
    assert_eq!(r.of("locked").applied, [2]);
    assert_eq!(history_versions(&db, "tenant_locked"), [1, 2]);
    assert_truth(&db, "locked", "active");
}

#[test]
fn a_migration_that_stays_blocked_gives_up_after_its_retries_with_a_clear_error() {
    let db = TestDb::new();
    let dir = project(
        "lock_timeout = \"100ms\"\nlock_retries = 2\nlock_retry_delay = \"50ms\"",
        "ALTER TABLE items ADD COLUMN note text;\n",
    );
    let mut holder = blocked_tenant(&db, dir.path());
    // It gives up on its own (within the run's deadline), while the lock is still held.
    let run = runner(&db, dir.path())
        .spawn(&["upgrade", "--tenant", "locked", "-o", "json"])
        .finish();
    run.expect(1);
    let still_held: bool = holder
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() AND granted \
             AND relation = 'tenant_locked.items'::regclass)",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(still_held, "the run ended only because the lock went away");
    let r: RunReport = run.json();
    let x = r.of("locked");
    assert_eq!(x.status, "failed");
    let err = x.error.as_deref().unwrap();
    for needle in [
        "V2__change",
        "lock timeout",
        "3 attempts",
        "lock_timeout 100 ms",
    ] {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
    assert_eq!(history_versions(&db, "tenant_locked"), [1]);
    let row = assert_truth(&db, "locked", "failed");
    assert!(row.last_error.unwrap().contains("lock timeout"));
}

#[test]
fn statement_timeout_stops_a_long_migration_and_it_is_not_retried() {
    let db = TestDb::new();
    let dir = project(
        "statement_timeout = \"300ms\"\nlock_retries = 5",
        "CREATE TABLE slow (id int);\nSELECT pg_sleep(600);\n",
    );
    let t = runner(&db, dir.path());
    t.run(&["init"]).expect(0);
    t.run(&[
        "tenant",
        "create",
        "slow",
        "--name",
        "Slow",
        "--migrate",
        "--target",
        "1",
    ])
    .expect(0);
    // Ending at all (within the run's deadline) means the ten-minute sleep was cut short.
    let run = t
        .spawn(&["upgrade", "--tenant", "slow", "-o", "json"])
        .finish();
    run.expect(1);
    let r: RunReport = run.json();
    let err = r.of("slow").error.clone().unwrap();
    assert!(
        err.contains("statement timeout") && err.contains("V2__change"),
        "{err}"
    );
    assert!(
        !err.contains("attempts"),
        "a statement timeout is not a lock wait: {err}"
    );
    assert_eq!(history_versions(&db, "tenant_slow"), [1]);
    assert!(
        !checks::relation_exists(&db, "tenant_slow", "slow"),
        "the migration rolled back"
    );
}

#[test]
fn a_blocked_statement_in_a_no_transaction_file_is_retried_from_that_statement() {
    let db = TestDb::new();
    let dir = project(
        "lock_timeout = \"100ms\"\nlock_retries = 100\nlock_retry_delay = \"50ms\"",
        "-- tenantctl: no-transaction\nCREATE TABLE before_it (id int);\nALTER TABLE items ADD COLUMN note text;\n",
    );
    let holder = blocked_tenant(&db, dir.path());
    let mut child = runner(&db, dir.path()).spawn(&["upgrade", "--tenant", "locked", "-o", "json"]);
    // Wait until the ALTER has been sent twice: its first attempt timed out, and the
    // retry resumed at it (CREATE TABLE before_it, already committed, is not re-run).
    let mut watcher = db.client();
    let mut starts = BTreeSet::new();
    child.wait_until("the blocked ALTER has been retried", || {
        alter_attempts(&mut watcher, &mut starts);
        starts.len() >= 2
    });
    assert!(checks::relation_exists(&db, "tenant_locked", "before_it"));
    drop(holder);
    let run = child.finish();
    let r: RunReport = run.expect(0).json();
    assert_eq!(r.of("locked").applied, [2]);
    assert_eq!(history_versions(&db, "tenant_locked"), [1, 2]);
    assert_truth(&db, "locked", "active");
}

/// The harness's own deadline: a run that never ends (here, waiting for a tenant's lock
/// the test holds, with no `run.lock_wait`) is killed at its deadline and fails the test
/// with what it printed, instead of holding CI.
#[test]
fn a_run_that_hangs_is_killed_at_its_deadline_and_fails_with_what_it_printed() {
    let (db, t) = support::ready();
    t.run(&[
        "tenant",
        "create",
        "demo",
        "--name",
        "Demo",
        "--provision",
        "--migrate",
        "--target",
        "1",
    ])
    .expect(0);
    let mut holder = db.client();
    support::lock_tenant(&mut holder, "tenant_demo");
    // Sees the run wait for the lock, until the run has ended.
    let ended = std::sync::atomic::AtomicBool::new(false);
    let (failure, waited) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen = false;
            while !seen && !ended.load(std::sync::atomic::Ordering::SeqCst) {
                seen = support::lock_waiters(&db, "tenant_demo") > 0;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            seen
        });
        let hung = t.clone().deadline(std::time::Duration::from_secs(3));
        let failure = std::panic::catch_unwind(|| hung.run(&["upgrade", "--tenant", "demo"]))
            .expect_err("a run waiting for a lock nobody releases returned");
        ended.store(true, std::sync::atomic::Ordering::SeqCst);
        (failure, watcher.join().unwrap())
    });
    assert!(waited, "the run never waited for the lock");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("timed out after 3 s")
            && message.contains("stdout:")
            && message.contains("stderr:"),
        "{message}"
    );
    // It was killed: once the lock is free, its backend (which learns of the closed
    // connection only then) ends without having changed anything.
    assert!(support::unlock_tenant(&mut holder, "tenant_demo"));
    support::eventually("the killed run's session is gone", || {
        holder
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name LIKE 'tenantctl%'",
                &[],
            )
            .unwrap()
            .get::<_, i64>(0)
            == 0
    });
    assert_eq!(history_versions(&db, "tenant_demo"), vec![1]);
}
