//! Lock waits: `run.lock_timeout` and `run.statement_timeout` apply to every migration; a
//! migration blocked by another session's lock fails after `lock_timeout` and is retried
//! with backoff (`run.lock_retries`, `run.lock_retry_delay`) instead of hanging.

use crate::{checks, common_json, support};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use checks::{assert_truth, history_versions};
use common_json::RunReport;
use support::{dir_with, TestDb};

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

fn tenantctl(db: &TestDb, dir: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantctl"));
    cmd.args(args)
        .current_dir(dir)
        .env("TENANTCTL_DATABASE_URL", &db.url)
        .env_remove("TENANTCTL_CONFIG")
        .env_remove("TENANTCTL_MIGRATIONS")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run_ok(db: &TestDb, dir: &std::path::Path, args: &[&str]) {
    let out = tenantctl(db, dir, args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tenant at V1, and a connection holding a lock on its `items` table that conflicts
/// with V2's ALTER TABLE, inside an open transaction.
fn blocked_tenant(db: &TestDb, dir: &std::path::Path) -> postgres::Client {
    run_ok(db, dir, &["init"]);
    run_ok(
        db,
        dir,
        &[
            "tenant",
            "create",
            "locked",
            "--name",
            "Locked",
            "--migrate",
            "--target",
            "1",
        ],
    );
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
    let started = Instant::now();
    let child = tenantctl(
        &db,
        dir.path(),
        &["upgrade", "--tenant", "locked", "-o", "json"],
    )
    .spawn()
    .unwrap();
    // Long enough for at least two timeouts and retries.
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(
        history_versions(&db, "tenant_locked"),
        [1],
        "V2 cannot have run while the lock is held"
    );
    drop(holder); // ends the blocking transaction
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: RunReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r.of("locked").applied, [2]);
    assert!(started.elapsed() >= Duration::from_millis(900));
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
    let _holder = blocked_tenant(&db, dir.path());
    let started = Instant::now();
    let out = tenantctl(
        &db,
        dir.path(),
        &["upgrade", "--tenant", "locked", "-o", "json"],
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Three attempts of 100 ms plus waits of 50 and 100 ms: it did wait, and did not hang.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(20),
        "{took:?}"
    );
    let r: RunReport = serde_json::from_slice(&out.stdout).unwrap();
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
        "CREATE TABLE slow (id int);\nSELECT pg_sleep(5);\n",
    );
    run_ok(&db, dir.path(), &["init"]);
    run_ok(
        &db,
        dir.path(),
        &[
            "tenant",
            "create",
            "slow",
            "--name",
            "Slow",
            "--migrate",
            "--target",
            "1",
        ],
    );
    let started = Instant::now();
    let out = tenantctl(
        &db,
        dir.path(),
        &["upgrade", "--tenant", "slow", "-o", "json"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the 5 s sleep was cut short"
    );
    let r: RunReport = serde_json::from_slice(&out.stdout).unwrap();
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
    let mut child = tenantctl(
        &db,
        dir.path(),
        &["upgrade", "--tenant", "locked", "-o", "json"],
    )
    .spawn()
    .unwrap();
    // Wait until the ALTER has been sent twice: its first attempt timed out, and the
    // retry resumed at it (CREATE TABLE before_it, already committed, is not re-run).
    let mut watcher = db.client();
    let mut starts = std::collections::BTreeSet::new();
    while starts.len() < 2 && child.try_wait().unwrap().is_none() {
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
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        starts.len(),
        2,
        "the run ended before its blocked statement was retried"
    );
    assert!(checks::relation_exists(&db, "tenant_locked", "before_it"));
    drop(holder);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: RunReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r.of("locked").applied, [2]);
    assert_eq!(history_versions(&db, "tenant_locked"), [1, 2]);
    assert_truth(&db, "locked", "active");
}
