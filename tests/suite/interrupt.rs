//! Ctrl-C and SIGTERM against the real binary and a real PostgreSQL: the first signal
//! stops tenants in flight after their current migration (upgrade and downgrade) and
//! ends lock waits on the server; a second signal cancels running statements on the
//! server and exits 130 at once; Ctrl-C at a confirmation prompt exits 130; and lock
//! waits name the session holding the lock, bounded by `run.lock_wait`.

use crate::{checks, common_json, support};

use checks::{assert_truth, create, history_versions, registry_row};
use common_json::{ConfigShown, Events, RunReport};
use support::{
    dir_with, eventually, lock_tenant, lock_waiters, ready, wait_at, Gate, Tenantctl, TestDb,
};

fn schema(domain: &str) -> String {
    format!("tenant_{}", domain.replace('-', "_"))
}

/// The advisory lock V`v`'s up script (`up`) or down script waits for: the test holds it
/// to keep the migration in flight.
fn gate_key(v: i32, up: bool) -> i64 {
    if up {
        100 + i64::from(v)
    } else {
        200 + i64::from(v)
    }
}

/// V1 is quick; V2..V5 and their down scripts each wait inside their transaction at
/// their own gate ([`gate_key`]), which is open unless the test holds it.
fn gated_set() -> Vec<(String, String)> {
    let mut files = vec![(
        "V1__one.sql".to_string(),
        "CREATE TABLE one (id int);\n".to_string(),
    )];
    for v in 2..=5 {
        files.push((
            format!("V{v}__step{v}.sql"),
            format!(
                "CREATE TABLE step{v} (id int);\n{}",
                wait_at(gate_key(v, true))
            ),
        ));
        files.push((
            format!("V{v}__step{v}.down.sql"),
            format!("DROP TABLE step{v};\n{}", wait_at(gate_key(v, false))),
        ));
    }
    files
}

fn setup(files: &[(String, String)]) -> (TestDb, Tenantctl, tempfile::TempDir) {
    let (db, t) = ready();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_str()))
        .collect();
    let dir = dir_with(&refs);
    let t = t.migrations(dir.path());
    (db, t, dir)
}

fn events(t: &Tenantctl, run_id: &str) -> Events {
    t.run(&["events", "--run", run_id, "-o", "json"])
        .expect(0)
        .json()
}

/// A connection that names itself `name` to the server, holding `schema`'s tenant lock.
fn hold_tenant_lock(db: &TestDb, schema: &str, name: &str) -> (postgres::Client, i32) {
    let mut config: postgres::Config = db.url.parse().unwrap();
    config.application_name(name);
    let mut c = config.connect(postgres::NoTls).unwrap();
    lock_tenant(&mut c, schema);
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    (c, pid)
}

/// With `gate` held: once s1's history is `history` and tenantctl waits at the gate, one
/// SIGINT; once tenantctl says it is stopping (the migration still waiting), the gate
/// opens. The run must end with exit 130.
fn interrupt_at(
    mut w: crate::support::Spawned,
    db: &TestDb,
    mut gate: Gate,
    history: &[i32],
    what: &str,
) -> crate::support::Run {
    w.wait_until(what, || {
        history_versions(db, &schema("s1")) == history
            && gate
                .blocked_tenantctl()
                .iter()
                .any(|b| b.query.contains("pg_advisory_xact_lock_shared"))
    });
    w.signal("INT");
    w.wait_for_stderr("stopping");
    // The signal arrived while the migration was in flight: it still waits.
    assert_eq!(history_versions(db, &schema("s1")), history);
    assert_eq!(gate.blocked_tenantctl().len(), 1, "{:?}", gate.blocked());
    gate.open();
    let run = w.finish();
    run.expect(130);
    run
}

#[test]
fn the_first_signal_stops_a_tenant_after_its_current_migration_in_upgrade_and_downgrade() {
    let (db, t, _dir) = setup(&gated_set());
    create(&t, "s1", &["--provision"]);
    create(&t, "s2", &["--provision"]);
    let s2_before = registry_row(&db, "s2");

    // Upgrade: s1 goes first (concurrency 1) and is interrupted while V2 waits at its
    // gate; the gates of V3..V5 are open, so nothing but the stop keeps s1 from them.
    let gate = Gate::advisory(&db.url, gate_key(2, true));
    let w = t.spawn(&["upgrade", "--all", "--concurrency", "1", "-o", "json"]);
    let run = interrupt_at(w, &db, gate, &[1], "s1 has V1 and waits inside V2");
    let r: RunReport = run.json();
    let s1 = r.of("s1");
    let history = history_versions(&db, &schema("s1"));
    assert_eq!(
        history,
        [1, 2],
        "s1 should stop right after V2, the migration in flight\n{r:#?}"
    );
    let reached = 2;
    assert_eq!(s1.status, "ok", "{s1:?}");
    assert_eq!(s1.applied, [1, 2], "{s1:?}");
    assert_eq!(s1.to_revision, Some(reached), "{s1:?}");
    let why = s1.error.as_deref().unwrap_or("");
    assert!(
        why.contains("stopped early") && why.contains("interrupted"),
        "{s1:?}"
    );
    assert_truth(&db, "s1", "active");
    let s2 = r.of("s2");
    assert_eq!(s2.status, "skipped", "{s2:?}");
    assert_eq!(
        s2.error.as_deref(),
        Some("not started: the run was interrupted")
    );
    assert!(history_versions(&db, &schema("s2")).is_empty());
    assert_eq!(registry_row(&db, "s2"), s2_before, "s2 was written");
    assert!(run.stderr.contains("stopping"), "{}", run.stderr);
    // The ledger says what happened to s1, and nothing about s2.
    let ev = events(&t, &r.run_id);
    assert_eq!(ev.events.len(), 1, "{ev:#?}");
    let e = &ev.events[0];
    assert_eq!(
        (e.domain.as_str(), e.status.as_str(), e.to_revision),
        ("s1", "ok", Some(reached))
    );

    // A rerun goes on from there.
    let r: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(r.summary.failed, 0, "{r:#?}");
    assert_eq!(history_versions(&db, &schema("s1")), [1, 2, 3, 4, 5]);

    // Downgrade: s1 is interrupted while the down script of V4 waits at its gate.
    let gate = Gate::advisory(&db.url, gate_key(4, false));
    let w = t.spawn(&["downgrade", "--tenant", "s1", "1", "--yes", "-o", "json"]);
    let run = interrupt_at(
        w,
        &db,
        gate,
        &[1, 2, 3, 4],
        "s1 reverted V5 and waits inside the down script of V4",
    );
    let r: RunReport = run.json();
    let s1 = r.of("s1");
    assert_eq!(
        history_versions(&db, &schema("s1")),
        [1, 2, 3],
        "s1 should stop right after the down script in flight\n{r:#?}"
    );
    assert_eq!(s1.status, "ok", "{s1:?}");
    assert_eq!(s1.applied, [5, 4], "{s1:?}");
    assert!(
        s1.error
            .as_deref()
            .is_some_and(|e| e.contains("stopped early") && e.contains("reverting")),
        "{s1:?}"
    );
    assert_truth(&db, "s1", "active");
}

#[test]
fn a_tenant_waiting_for_its_lock_stops_waiting_on_the_first_signal_and_is_not_marked_failed() {
    let files = vec![(
        "V1__one.sql".to_string(),
        "CREATE TABLE one (id int);\n".to_string(),
    )];
    let (db, t, _dir) = setup(&files);
    create(&t, "w1", &["--provision"]);
    let before = registry_row(&db, "w1");
    let (holder, _) = hold_tenant_lock(&db, &schema("w1"), "holder");

    let mut w = t.spawn(&["upgrade", "--tenant", "w1", "-o", "json"]);
    w.wait_for("tenantctl waits for the tenant's lock", || {
        (lock_waiters(&db, &schema("w1")) == 1).then_some(())
    });
    w.signal("INT");
    // The lock is still held, so this ends only because the wait was given up.
    let run = w.finish();
    run.expect(130);
    let r: RunReport = run.json();
    let w1 = r.of("w1");
    assert_eq!(w1.status, "skipped", "{w1:?}");
    assert_eq!(
        w1.error.as_deref(),
        Some("not started: the run was interrupted")
    );
    assert_eq!((r.summary.skipped, r.summary.failed), (1, 0), "{r:#?}");
    // The wait was cancelled on the server, not left behind.
    eventually("no session waits for the lock any more", || {
        lock_waiters(&db, &schema("w1")) == 0
    });
    assert_eq!(registry_row(&db, "w1"), before, "w1 was written");
    assert!(events(&t, &r.run_id).events.is_empty());
    assert!(history_versions(&db, &schema("w1")).is_empty());

    drop(holder);
    t.run(&["upgrade", "--tenant", "w1"]).expect(0);
    assert_eq!(history_versions(&db, &schema("w1")), [1]);
    assert_truth(&db, "w1", "active");
}

/// tenantctl's backends (named `tenantctl RUN_ID`) that are running a statement.
fn tenantctl_backends_running(db: &TestDb) -> Vec<(i32, String)> {
    db.client()
        .query(
            "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name LIKE 'tenantctl %' AND state = 'active'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Whether some session holds an AccessExclusiveLock on `schema`.one.
fn one_is_locked(db: &TestDb, schema: &str) -> bool {
    db.client()
        .query_one(
            "SELECT count(*) > 0 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = 'one' AND l.mode = 'AccessExclusiveLock' AND l.granted",
            &[&schema],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_second_signal_cancels_the_running_statement_on_the_server_and_exits_130() {
    let files = vec![
        (
            "V1__one.sql".to_string(),
            "CREATE TABLE one (id int);\n".to_string(),
        ),
        (
            "V2__stuck.sql".to_string(),
            "LOCK TABLE one IN ACCESS EXCLUSIVE MODE;\nSELECT pg_sleep(600);\n".to_string(),
        ),
    ];
    let (db, t, _dir) = setup(&files);
    create(&t, "x1", &["--provision"]);
    t.run(&["upgrade", "--tenant", "x1", "1"]).expect(0);

    let mut w = t.spawn(&["upgrade", "--tenant", "x1", "-o", "json"]);
    let app: String = w.wait_for("V2 holds its lock and sleeps", || {
        let mut c = db.client();
        let row = c
            .query_opt(
                "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() \
                 AND state = 'active' AND strpos(query, 'pg_sleep(600)') > 0 AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap()?;
        one_is_locked(&db, &schema("x1")).then(|| row.get(0))
    });
    w.signal("INT");
    w.wait_for_stderr("stopping");
    // The migration in flight goes on after the first signal.
    assert!(!tenantctl_backends_running(&db).is_empty());
    w.signal("INT");
    let run = w.finish();
    run.expect(130);

    // pg_sleep(600) would hold the lock for ten minutes had it not been cancelled.
    eventually("no tenantctl backend runs a statement any more", || {
        tenantctl_backends_running(&db).is_empty()
    });
    eventually("the AccessExclusiveLock is gone", || {
        !one_is_locked(&db, &schema("x1"))
    });
    assert_eq!(history_versions(&db, &schema("x1")), [1]);
    // The abort says tenants in flight are not recorded: the registry still says what
    // it said before (active at 1), not the cancelled statement's failure.
    let row = crate::checks::registry_row(&db, "x1");
    assert_eq!(
        (row.status.as_str(), row.current_revision),
        ("active", Some(1)),
        "{row:?}"
    );

    // One JSON document that says the run was interrupted, with its id.
    let doc: serde_json::Value = run.json();
    let run_id = doc["run_id"].as_str().unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(doc["interrupted"], serde_json::Value::Bool(true), "{doc}");
    assert_eq!(app, format!("tenantctl {run_id}"));
    assert!(
        run.stderr.contains("cancel") && run.stderr.contains("1 open tenant session"),
        "{}",
        run.stderr
    );
    // A rerun is not blocked by anything left behind (V2 would sleep again: stop at 1).
    t.run(&["upgrade", "--tenant", "x1", "1"]).expect(0);
}

#[test]
fn ctrl_c_at_a_confirmation_prompt_exits_130_at_once() {
    let files = vec![
        (
            "V1__one.sql".to_string(),
            "CREATE TABLE one (id int);\n".to_string(),
        ),
        (
            "V1__one.down.sql".to_string(),
            "DROP TABLE one;\n".to_string(),
        ),
    ];
    let (db, t, _dir) = setup(&files);
    create(&t, "c1", &["--migrate"]);

    // A pseudo-terminal, so tenantctl asks; Ctrl-C is typed into it.
    let mut child = t
        .clone()
        .in_pty()
        .spawn(&["downgrade", "--tenant", "c1", "base"]);
    child.wait_for_stdout("[y/N]");
    child.type_keys(b"\x03");
    let run = child.finish();
    let screen = &run.stdout;
    assert_eq!(run.code, 130, "{screen}\n{}", run.stderr);
    assert!(screen.contains("error: interrupted"), "{screen}");
    assert_eq!(history_versions(&db, &schema("c1")), [1]);
    assert_truth(&db, "c1", "active");
}

#[test]
fn a_long_lock_wait_names_the_holder_and_run_lock_wait_bounds_it() {
    let files = vec![(
        "V1__one.sql".to_string(),
        "CREATE TABLE one (id int);\n".to_string(),
    )];
    let (db, t, dir) = setup(&files);
    create(&t, "h1", &["--provision"]);
    let (holder, pid) = hold_tenant_lock(&db, &schema("h1"), "lock-holder-for-test");

    let mut w = t.spawn(&["upgrade", "--tenant", "h1", "-o", "json"]);
    let waiting_as: String = w.wait_for("tenantctl waits for the lock", || {
        db.client()
            .query_opt(
                "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
                &[],
            )
            .unwrap()
            .map(|r| r.get(0))
    });
    w.wait_for_stderr("lock-holder-for-test");
    let stderr = w.stderr();
    let line = stderr
        .lines()
        .find(|l| l.contains("lock-holder-for-test"))
        .unwrap();
    assert!(
        line.contains("h1")
            && line.contains("waiting for the lock")
            && line.contains(&format!("pid {pid}"))
            && line.contains("connected since"),
        "{line}"
    );
    drop(holder);
    let run = w.finish();
    run.expect(0);
    let r: RunReport = run.json();
    assert_eq!(r.of("h1").status, "ok");
    assert_eq!(waiting_as, format!("tenantctl {}", r.run_id));

    // run.lock_wait: past it the tenant fails, naming the holder, and is not written.
    std::fs::write(
        dir.path().join("V2__two.sql"),
        "CREATE TABLE two (id int);\n",
    )
    .unwrap();
    let conf = tempfile::tempdir().unwrap();
    let conf_file = conf.path().join("tenants.toml");
    std::fs::write(&conf_file, "[run]\nlock_wait = \"1s\"\n").unwrap();
    let conf_arg = conf_file.to_str().unwrap();
    let shown: ConfigShown = t
        .run(&["config", "show", "-c", conf_arg, "-o", "json"])
        .expect(0)
        .json();
    let entry = shown
        .settings
        .iter()
        .find(|e| e.key == "run.lock_wait")
        .unwrap();
    assert_eq!(
        (entry.value.as_str(), entry.source.as_str()),
        ("1s", "file")
    );

    let (holder, pid) = hold_tenant_lock(&db, &schema("h1"), "lock-holder-for-test");
    let run = t.run(&["upgrade", "--tenant", "h1", "-c", conf_arg, "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    let h1 = r.of("h1");
    assert_eq!(h1.status, "failed", "{h1:?}");
    let why = h1.error.as_deref().unwrap_or("");
    for needle in [
        "run.lock_wait",
        "lock-holder-for-test",
        &format!("pid {pid}"),
        "nothing was changed",
    ] {
        assert!(why.contains(needle), "{needle:?} not in {why}");
    }
    let row = assert_truth(&db, "h1", "active");
    assert_eq!(row.current_revision, Some(1));
    assert!(events(&t, &r.run_id).events.is_empty());
    eventually("the lock wait was cancelled on the server", || {
        lock_waiters(&db, &schema("h1")) == 0
    });
    drop(holder);
    t.run(&["upgrade", "--tenant", "h1", "-c", conf_arg])
        .expect(0);
    assert_eq!(history_versions(&db, &schema("h1")), [1, 2]);
}
