//! What a hostile DBA tried against a tenant's data, and what must hold: an import
//! killed in any phase never leaves a registered tenant without its data (and the next
//! import into its schema clears what it left), a restore holds writers until the new
//! copy is in place and clears what an interrupted one left, export never writes through
//! a symlink or a FIFO, a FIFO imports in one pass, what killed exports and backups left
//! is removed once their process is gone, an unwritable backup directory is refused up
//! front, a manifest that contradicts itself is refused even when correctly signed,
//! `--keep` removes nothing that merely looks like a backup, and a symlink planted at a
//! temporary file's predictable name is never written through.

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::checks::{
    create, expect_error, history_versions, registry_row, schema_exists, seed_example,
    table_contents, tenant_count, user_schemas,
};
use crate::common_json::{Events, Imported, Restored};
use crate::support::{
    lock_tenant, lock_waiters, ready, wait_at, waits_for_tenantctl, Gate, Tenantctl, TestDb,
};

/// The comment an import puts on the schema it is building until the tenant is
/// registered.
const BUILDING: &str = "tenantctl: import in progress; not a registered tenant yet";

/// A migrated tenant seeded with `members` members; its schema.
fn tenant(db: &TestDb, t: &Tenantctl, domain: &str, members: i64) -> String {
    let schema = create(t, domain, &["--migrate"]).tenant.schema_name;
    seed_example(&mut db.client(), &schema, members);
    schema
}

fn export(t: &Tenantctl, domain: &str, file: &Path) {
    t.run(&["tenant", "export", domain, "-f", file.to_str().unwrap()])
        .expect(0);
}

fn import(t: &Tenantctl, file: &Path, domain: &str) -> crate::support::Run {
    t.run(&[
        "tenant",
        "import",
        file.to_str().unwrap(),
        "--as",
        domain,
        "--name",
        domain,
        "-o",
        "json",
    ])
}

/// The members of `schema`, or `None` when it has no members table.
fn members(db: &TestDb, schema: &str) -> Option<i64> {
    let mut c = db.client();
    let there: bool = c
        .query_one(
            "SELECT to_regclass(format('%I.members', $1::text)) IS NOT NULL",
            &[&schema],
        )
        .unwrap()
        .get(0);
    there.then(|| {
        c.query_one(&format!("SELECT count(*) FROM \"{schema}\".members"), &[])
            .unwrap()
            .get(0)
    })
}

/// The registry row of `domain` (schema and status), if there is one.
fn registered(db: &TestDb, domain: &str) -> Option<(String, String)> {
    db.client()
        .query_opt(
            "SELECT schema_name, status FROM public.tenants WHERE domain = $1",
            &[&domain],
        )
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
}

fn schema_comment(db: &TestDb, schema: &str) -> Option<String> {
    db.client()
        .query_one(
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_schema_left_by_a_killed_import_is_replaced_and_no_other_schema_is_touched() {
    let (db, t) = ready();
    let src = tenant(&db, &t, "src", 12);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("src.tenant");
    export(&t, "src", &file);
    let data = table_contents(&mut db.client(), &src);

    // What a killed import left: killed once its rows were loaded and committed, before
    // registering the tenant: unregistered, marked, holding every row.
    let mut child = t.clone().env("FAILPOINTS", "import.loaded=pause").spawn(&[
        "tenant",
        "import",
        file.to_str().unwrap(),
        "--as",
        "x",
        "--name",
        "x",
    ]);
    child.wait_for_stderr("failpoint import.loaded");
    child.kill();
    assert_eq!(registered(&db, "x"), None);
    let mark = schema_comment(&db, "tenant_x");
    assert!(
        mark.as_deref().is_some_and(|m| m.starts_with(BUILDING)),
        "{mark:?}"
    );
    assert_eq!(table_contents(&mut db.client(), "tenant_x"), data);
    let left = schema_oid(&db, "tenant_x");
    let imported: Imported = import(&t, &file, "x").expect(0).json();
    assert_eq!(imported.tenant.schema_name, "tenant_x");
    assert_ne!(
        schema_oid(&db, "tenant_x"),
        left,
        "the schema the killed import left was removed and made again"
    );
    assert_eq!(table_contents(&mut db.client(), "tenant_x"), data);
    assert_eq!(schema_comment(&db, "tenant_x"), None, "the mark is gone");
    assert_eq!(registered(&db, "x").unwrap().1, "active");

    // A schema holding objects without the mark: refused, untouched.
    db.client()
        .batch_execute(
            "CREATE SCHEMA tenant_y; CREATE TABLE tenant_y.precious (i int); \
             INSERT INTO tenant_y.precious VALUES (42)",
        )
        .unwrap();
    let count = tenant_count(&db);
    let schemas = user_schemas(&db);
    expect_error(&import(&t, &file, "y"), 2, &["tenant_y"]);
    assert_eq!(
        (tenant_count(&db), user_schemas(&db)),
        (count, schemas.clone())
    );
    assert_eq!(registered(&db, "y"), None);
    let kept: i32 = db
        .client()
        .query_one("SELECT i FROM tenant_y.precious", &[])
        .unwrap()
        .get(0);
    assert_eq!(kept, 42);

    // A registered tenant's schema carrying the mark is never another import's. This
    // tenantctl never leaves that (once the rows are in, its mark says where from, and
    // the same import finishes it: `crash::import_killed_after_registering`); an older
    // one, killed after registering, left this plain mark; or someone set it by hand.
    let z = tenant(&db, &t, "z", 15);
    db.client()
        .batch_execute(&format!("COMMENT ON SCHEMA {z} IS '{BUILDING}'"))
        .unwrap();
    let z_data = table_contents(&mut db.client(), &z);
    let z_row = registry_row(&db, "z");
    let count = tenant_count(&db);
    let schemas = user_schemas(&db);
    let run = t.run(&[
        "tenant",
        "import",
        file.to_str().unwrap(),
        "--as",
        "other",
        "--name",
        "Other",
        "--schema",
        &z,
    ]);
    expect_error(&run, 2, &[&z]);
    expect_error(&import(&t, &file, "z"), 1, &["z"]);
    assert_eq!((tenant_count(&db), user_schemas(&db)), (count, schemas));
    assert_eq!(table_contents(&mut db.client(), &z), z_data);
    assert_eq!(registry_row(&db, "z"), z_row);
}

/// The oid of schema `schema`: a schema dropped and made again has another.
fn schema_oid(db: &TestDb, schema: &str) -> u32 {
    db.client()
        .query_one(
            "SELECT oid FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .unwrap()
        .get(0)
}

/// tenantctl's sessions on the test database.
fn tenantctl_sessions(db: &TestDb) -> Vec<i32> {
    db.client()
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name LIKE 'tenantctl%'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Where an import is killed: each a point the test holds it at, or a failpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Waiting for the new schema's lock, held by the test: nothing made yet.
    Locking,
    /// Building the schema: V7 waits at a gate.
    Building,
    /// Loading the rows: in the load's transaction, the rows of the last table made
    /// wait at a gate.
    Loading,
    /// Registering: the load committed, the INSERT into the registry waits for a lock.
    Registering,
    /// Registered, not yet marked active (the `import.registered` failpoint).
    Registered,
}

/// The gate V7 of [`an_import_killed_in_each_phase_never_leaves_a_registered_tenant_without_its_data`]
/// waits at.
const BUILD_GATE: i64 = 7021;

/// The gate every row of V7's table waits at when it is written (its CHECK).
const LOAD_GATE: i64 = 7022;

/// V7: waits at [`BUILD_GATE`], then makes the schema's last table, whose CHECK waits at
/// [`LOAD_GATE`] for each row written into it (a load's COPY included).
fn gated_v7() -> String {
    format!(
        "{}CREATE FUNCTION pass_gate(k bigint) RETURNS boolean LANGUAGE plpgsql AS $$\n\
         BEGIN\n\
             PERFORM set_config('lock_timeout', '0', true);\n\
             PERFORM pg_advisory_xact_lock_shared(k);\n\
             RETURN true;\n\
         END $$;\n\
         CREATE TABLE zz_gated (id int PRIMARY KEY CHECK (id IS NOT NULL AND pass_gate({LOAD_GATE})));\n",
        wait_at(BUILD_GATE)
    )
}

#[test]
fn an_import_killed_in_each_phase_never_leaves_a_registered_tenant_without_its_data() {
    let (db, t) = ready();
    // The example migrations, and a V7 that waits at gates the test may hold.
    let dir = crate::support::copy_of_example_migrations();
    std::fs::write(dir.path().join("V7__gates.sql"), gated_v7()).unwrap();
    let t = t.migrations(dir.path());
    // A killed import's session waiting for a lock would wait as long as the lock is
    // held: the server ends it once it sees its client gone.
    db.client()
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET client_connection_check_interval = '50ms'",
            db.name
        ))
        .unwrap();
    let src = tenant(&db, &t, "src", 5_000);
    db.client()
        .batch_execute(&format!(
            "INSERT INTO \"{src}\".zz_gated SELECT g FROM generate_series(1, 100) g"
        ))
        .unwrap();
    let want = table_contents(&mut db.client(), &src);
    let rows = members(&db, &src).unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("big.tenant");
    export(&t, "src", &file);
    let f = file.to_str().unwrap();

    for (round, phase) in [
        Phase::Locking,
        Phase::Building,
        Phase::Loading,
        Phase::Registering,
        Phase::Registered,
    ]
    .into_iter()
    .enumerate()
    {
        let domain = format!("k{round}");
        let schema = format!("tenant_{domain}");
        let what = format!("import {domain} killed while {phase:?}");
        let args = ["tenant", "import", f, "--as", &domain, "--name", &domain];
        // Each phase: the gates that hold the import there, and the import killed there.
        let mut gates: Vec<Gate> = Vec::new();
        let child = match phase {
            Phase::Locking => {
                let mut holder = db.client();
                lock_tenant(&mut holder, &schema);
                let mut child = t.spawn(&args);
                child.wait_until("the import waits for the schema's lock", || {
                    lock_waiters(&db, &schema) == 1
                });
                child.kill();
                drop(holder);
                child
            }
            Phase::Building => {
                let mut build = Gate::advisory(&db.url, BUILD_GATE);
                let mut child = t.spawn(&args);
                child.wait_until("the import's V7 waits at the gate", || {
                    !build.blocked_tenantctl().is_empty()
                });
                gates.push(build);
                child.kill();
                child
            }
            Phase::Loading => {
                let mut load = Gate::advisory(&db.url, LOAD_GATE);
                let mut child = t.spawn(&args);
                child.wait_until(
                    "the load's COPY into the last table waits at the gate",
                    || {
                        load.blocked_tenantctl()
                            .iter()
                            .any(|b| b.query.contains("COPY"))
                    },
                );
                gates.push(load);
                child.kill();
                child
            }
            Phase::Registering => {
                let mut register = Gate::table_lock(&db.url, "public.tenants", "SHARE");
                let mut child = t.spawn(&args);
                child.wait_until("the import waits to register the tenant", || {
                    !register.blocked_tenantctl().is_empty()
                });
                assert_eq!(
                    members(&db, &schema),
                    Some(rows),
                    "{what}: the load is not committed"
                );
                gates.push(register);
                child.kill();
                child
            }
            Phase::Registered => {
                let mut child = t
                    .clone()
                    .env("FAILPOINTS", "import.registered=pause")
                    .spawn(&args);
                child.wait_for_stderr("failpoint import.registered");
                child.kill();
                child
            }
        };
        // The killed import's sessions end (the server notices), then the gates open.
        crate::support::eventually("the killed import's sessions are gone", || {
            tenantctl_sessions(&db).is_empty()
        });
        gates.into_iter().for_each(Gate::open);
        drop(child.finish());

        let check = |when: &str| {
            if let Some((schema, status)) = registered(&db, &domain) {
                assert_eq!(
                    members(&db, &schema),
                    Some(rows),
                    "{what}, {when}: registered ({status}) without all its rows"
                );
            }
        };
        check("at once");
        // What the kill left, phase by phase.
        let exists = schema_exists(&db, &schema);
        // The mark: BUILDING, and once the rows are in, what they were loaded from.
        let comment = exists.then(|| schema_comment(&db, &schema)).flatten();
        let left = (
            registered(&db, &domain).is_some(),
            exists,
            comment.as_deref().map(|c| c.starts_with(BUILDING)),
        );
        let expected = match phase {
            Phase::Locking => (false, false, None),
            Phase::Building | Phase::Loading | Phase::Registering => (false, true, Some(true)),
            Phase::Registered => (true, true, Some(true)),
        };
        assert_eq!(
            left, expected,
            "{what}: (registered, schema, marked as an import in progress): {comment:?}"
        );
        t.run(&["upgrade", "--all"]).expect(0);
        check("after upgrade --all");
        for r in db
            .client()
            .query(
                "SELECT domain, schema_name FROM public.tenants WHERE status = 'active'",
                &[],
            )
            .unwrap()
        {
            let (d, s): (String, String) = (r.get(0), r.get(1));
            assert!(
                members(&db, &s).is_some_and(|n| n > 0),
                "{what}: upgrade --all left {d} active without data"
            );
        }

        if registered(&db, &domain).is_some() {
            t.run(&["tenant", "drop", &domain, "--yes"]).expect(0);
        }
        let imported: Imported = import(&t, &file, &domain).expect(0).json();
        assert_eq!(
            table_contents(&mut db.client(), &imported.tenant.schema_name),
            want,
            "{what}: the rerun"
        );
    }
}

/// Whether another session holds the write fence (an `EXCLUSIVE` lock) on `members`.
/// Whether the restore's own session holds the write fence on `members`: a table lock
/// (`locktype = 'relation'`; a writer adding a page to the table takes an `extend` lock
/// in the same mode, which is no fence) held by a tenantctl session.
fn fenced(c: &mut postgres::Client, schema: &str) -> bool {
    c.query_one(
        "SELECT count(*) > 0 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE n.nspname = $1 AND c.relname = 'members' AND l.mode = 'ExclusiveLock' \
         AND l.locktype = 'relation' AND l.granted AND a.application_name LIKE 'tenantctl%'",
        &[&schema],
    )
    .unwrap()
    .get(0)
}

/// One INSERT a writer made: its tag, when it was sent, when it returned, its error.
struct Write1 {
    tag: String,
    sent: Instant,
    back: Instant,
    error: Option<String>,
}

#[test]
fn a_restore_holds_writers_until_the_new_copy_is_in_place_and_loses_no_acknowledged_write() {
    let (db, t) = ready();
    let schema = tenant(&db, &t, "busy", 2_000);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("busy.tenant");
    export(&t, "busy", &file);

    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<Vec<Write1>>> = Arc::default();
    let (pid_tx, pid_rx) = std::sync::mpsc::channel();
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (url, schema, stop, log, pid_tx) = (
                db.url.clone(),
                schema.clone(),
                stop.clone(),
                log.clone(),
                pid_tx.clone(),
            );
            std::thread::spawn(move || {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                c.batch_execute(&format!("SET search_path = \"{schema}\""))
                    .unwrap();
                let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
                pid_tx.send(pid).unwrap();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let tag = format!("writer{w}-{n}");
                    n += 1;
                    let sent = Instant::now();
                    let r = c.execute(
                        "INSERT INTO members (first_name, last_name) VALUES ('late', $1)",
                        &[&tag],
                    );
                    log.lock().unwrap().push(Write1 {
                        tag,
                        sent,
                        back: Instant::now(),
                        error: r.err().map(|e| e.to_string()),
                    });
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    let pids: Vec<i32> = (0..2).map(|_| pid_rx.recv().unwrap()).collect();

    // The swap renames the tenant's schema in the fence's transaction: a gate holds the
    // rename, so the restore stays fenced until the test has seen the writers wait.
    let mut gate = Gate::schema_rename(&db.url, &schema);
    let mut child = t.spawn(&[
        "tenant",
        "restore",
        "busy",
        file.to_str().unwrap(),
        "--yes",
        "-o",
        "json",
    ]);
    let mut watch = db.client();
    child.wait_until("the restore fences the tenant's tables", || {
        fenced(&mut watch, &schema)
    });
    let fence_seen = Instant::now();
    child.wait_until("both writers wait for the fence", || {
        pids.iter().all(|p| waits_for_tenantctl(&mut watch, *p))
    });
    let writers_waiting = Instant::now();
    child.wait_until("the restore is loaded and waits to swap", || {
        gate.blocked_tenantctl()
            .iter()
            .any(|b| b.query.contains("RENAME"))
    });
    assert!(
        fenced(&mut watch, &schema),
        "the fence went before the swap"
    );
    assert!(
        pids.iter().all(|p| waits_for_tenantctl(&mut watch, *p)),
        "a writer got through the fence"
    );
    let opened = Instant::now();
    gate.open();
    let run = child.finish();
    let restored: Restored = run.expect(0).json();
    // Writes were held from the fence (seen here after it began) to the swap (after the
    // gate opened): at least that long, and no longer than the whole restore.
    let held = opened.duration_since(fence_seen).as_millis() as u64;
    assert!(
        restored.write_block_ms >= held && restored.write_block_ms <= restored.duration_ms,
        "write_block_ms {} (held at least {held} ms, restore {} ms)",
        restored.write_block_ms,
        restored.duration_ms
    );
    // The writers go on, in the restored data.
    let finished = Instant::now();
    crate::support::eventually("each writer has written after the restore", || {
        let log = log.lock().unwrap();
        (0..2).all(|w| {
            log.iter()
                .filter(|x| x.tag.starts_with(&format!("writer{w}-")) && x.sent > finished)
                .count()
                >= 3
        })
    });
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }

    let log = log.lock().unwrap();
    let errors: Vec<_> = log
        .iter()
        .filter_map(|w| w.error.as_ref().map(|e| (w.tag.clone(), e.clone())))
        .collect();
    assert!(errors.is_empty(), "writes failed: {errors:?}");
    // No write sent once the fence was seen was acknowledged before the swap could
    // commit (the gate held it until `opened`).
    for w in log.iter() {
        assert!(
            !(w.sent > fence_seen && w.back < opened),
            "{} was acknowledged while the restore held the tables ({restored:?})",
            w.tag,
        );
    }
    // Every write sent once the fence was seen, and the write each writer was seen
    // waiting with, landed in the restored data.
    let present: std::collections::HashSet<String> = db
        .client()
        .query(
            &format!("SELECT last_name FROM \"{schema}\".members WHERE first_name = 'late'"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let waited: Vec<&Write1> = log
        .iter()
        .filter(|w| w.sent < writers_waiting && w.back > writers_waiting)
        .collect();
    assert_eq!(
        waited.len(),
        2,
        "one write in flight per writer while both were seen waiting"
    );
    for w in log.iter().filter(|w| w.sent > fence_seen).chain(waited) {
        assert!(
            present.contains(&w.tag),
            "{} was acknowledged ({:?} after the fence was seen) but is not in the restored data",
            w.tag,
            w.back.saturating_duration_since(fence_seen)
        );
    }
}

#[test]
fn a_restore_rerun_after_a_kill_ends_the_session_the_killed_restore_left_loading() {
    let (db, t) = ready();
    // The example migrations, and a V7 that waits at a gate the test may hold.
    let dir = crate::support::copy_of_example_migrations();
    std::fs::write(dir.path().join("V7__gate.sql"), wait_at(BUILD_GATE)).unwrap();
    let t = t.migrations(dir.path());
    let schema = tenant(&db, &t, "big", 2_000);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("big.tenant");
    export(&t, "big", &file);
    let data = table_contents(&mut db.client(), &schema);
    let restoring = format!("{schema}$restoring");
    let args = ["tenant", "restore", "big", file.to_str().unwrap(), "--yes"];
    // The restore's build of the scratch schema waits at V7; another session then takes
    // a lock there, so the load that follows waits for it: a killed restore's session
    // stuck there never reads from its (gone) client, and would hold the scratch schema
    // for as long as that other session pleases.
    let mut build = Gate::advisory(&db.url, BUILD_GATE);
    let mut child = t.spawn(&args);
    child.wait_until("the scratch schema's V7 waits at the gate", || {
        !build.blocked_tenantctl().is_empty()
    });
    let mut other = Gate::table_lock(&db.url, &format!("\"{restoring}\".members"), "ACCESS SHARE");
    build.open();
    let stuck: Vec<i32> = child.wait_for("the load waits for the other session", || {
        let pids: Vec<i32> = other.blocked_tenantctl().iter().map(|b| b.pid).collect();
        (!pids.is_empty()).then_some(pids)
    });
    child.kill();
    let mut rerun = t.spawn(&args);
    rerun.wait_until("the killed restore's session is gone", || {
        let left: i64 = db
            .client()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY ($1)",
                &[&stuck],
            )
            .unwrap()
            .get(0);
        left == 0
    });
    other.open();
    rerun.finish().expect(0);
    assert_eq!(table_contents(&mut db.client(), &schema), data);
    assert!(
        !schema_exists(&db, &restoring),
        "the scratch schema is left"
    );
    assert!(!schema_exists(&db, &format!("{schema}$replaced")));
}

#[test]
fn what_an_interrupted_or_read_restore_leaves_is_removed_by_the_next_one() {
    let (db, t) = ready();
    let schema = tenant(&db, &t, "r", 30);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("r.tenant");
    let f = file.to_str().unwrap();
    export(&t, "r", &file);
    let data = table_contents(&mut db.client(), &schema);
    let restoring = format!("{schema}$restoring");
    let replaced = format!("{schema}$replaced");

    // An archive of another tenant, at a lower revision.
    create(&t, "low", &["--migrate", "--target", "5"]);
    let low = work.path().join("low.tenant");
    export(&t, "low", &low);
    t.run(&["tenant", "drop", "low", "--yes"]).expect(0);

    // The tenant's data changed since the export; a restore killed once the new copy is
    // loaded beside it, before the swap, leaves the tenant as it was and the copy behind.
    db.client()
        .batch_execute(&format!("DELETE FROM \"{schema}\".pastoral_notes"))
        .unwrap();
    let changed = table_contents(&mut db.client(), &schema);
    let mut child = t
        .clone()
        .env("FAILPOINTS", "restore.loaded=pause")
        .spawn(&["tenant", "restore", "r", f, "--yes"]);
    child.wait_for_stderr("failpoint restore.loaded");
    child.kill();
    assert!(schema_exists(&db, &restoring), "the kill left the new copy");
    assert_eq!(table_contents(&mut db.client(), &schema), changed);
    // The next restore, of the lower revision's archive, removes that copy rather than
    // building on it.
    t.run(&["tenant", "restore", "r", low.to_str().unwrap(), "--yes"])
        .expect(0);
    assert!(!schema_exists(&db, &restoring), "the leftover is gone");
    assert_eq!(history_versions(&db, &schema), [1, 2, 3, 4, 5]);
    assert_eq!(user_schemas(&db), ["public".to_string(), schema.clone()]);
    t.run(&["tenant", "restore", "r", f, "--yes"]).expect(0);
    assert_eq!(table_contents(&mut db.client(), &schema), data);

    // A transaction reading the old copy across the swap: the old copy is kept.
    let mut reader = db.client();
    reader
        .batch_execute(&format!("BEGIN; SELECT count(*) FROM \"{schema}\".members"))
        .unwrap();
    let restored: Restored = t
        .run(&["tenant", "restore", "r", f, "--yes", "-o", "json"])
        .expect(0)
        .json();
    assert!(
        restored.message.contains("kept") && restored.message.contains(&replaced),
        "{}",
        restored.message
    );
    assert!(schema_exists(&db, &replaced));
    reader.batch_execute("COMMIT").unwrap();
    assert_eq!(table_contents(&mut db.client(), &schema), data);

    let restored: Restored = t
        .run(&["tenant", "restore", "r", f, "--yes", "-o", "json"])
        .expect(0)
        .json();
    assert!(!restored.message.contains("kept"), "{}", restored.message);
    assert!(!schema_exists(&db, &replaced), "the kept copy is removed");
    assert_eq!(user_schemas(&db), ["public".to_string(), schema.clone()]);
    assert_eq!(table_contents(&mut db.client(), &schema), data);
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("this test needs mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn export_force_never_replaces_a_symlink_or_a_fifo() {
    let (db, t) = ready();
    tenant(&db, &t, "src", 12);
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("target.txt");
    std::fs::write(&target, "keep me\n").unwrap();
    let link = work.path().join("link.tenant");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let fifo = work.path().join("fifo.tenant");
    mkfifo(&fifo);

    for path in [&link, &fifo] {
        let run = t.run(&[
            "tenant",
            "export",
            "src",
            "-f",
            path.to_str().unwrap(),
            "--force",
        ]);
        expect_error(&run, 2, &["not a regular file"]);
    }
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_symlink(), "the symlink was replaced");
    assert_eq!(std::fs::read_link(&link).unwrap(), target);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
    let meta = std::fs::symlink_metadata(&fifo).unwrap();
    assert!(meta.file_type().is_fifo(), "the FIFO was replaced");
    let mut names: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["fifo.tenant", "link.tenant", "target.txt"]);
}

#[test]
fn an_archive_from_a_fifo_is_imported_in_one_pass() {
    let (db, t) = ready();
    let src = tenant(&db, &t, "src", 40);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("src.tenant");
    export(&t, "src", &file);
    let fifo = work.path().join("in.fifo");
    mkfifo(&fifo);
    let mut cat = std::process::Command::new("sh")
        .args(["-c", "cat \"$1\" > \"$2\"", "sh"])
        .arg(&file)
        .arg(&fifo)
        .spawn()
        .unwrap();
    // A second read of the FIFO would wait for a writer forever: `finish` fails the test
    // after its deadline.
    let run = t
        .spawn(&[
            "tenant",
            "import",
            fifo.to_str().unwrap(),
            "--as",
            "piped",
            "--name",
            "Piped",
            "-o",
            "json",
        ])
        .finish();
    let _ = cat.kill();
    let _ = cat.wait();
    let imported: Imported = run.expect(0).json();
    assert_eq!(
        table_contents(&mut db.client(), &imported.tenant.schema_name),
        table_contents(&mut db.client(), &src)
    );
}

/// The pid of a process that has ended.
fn gone_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} should be gone"
    );
    pid
}

#[test]
fn partial_files_of_gone_processes_are_removed_by_the_next_export_or_backup() {
    let (db, t) = ready();
    tenant(&db, &t, "acme", 12);
    let alive = std::process::id();
    let dead = gone_pid();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();

    let stale = dir.join(format!(".acme.tenant.{dead}.partial"));
    let live = dir.join(format!(".acme.tenant.{alive}.partial"));
    let other = dir.join(format!(".other.tenant.{dead}.partial"));
    for p in [&stale, &live, &other] {
        std::fs::write(p, "half").unwrap();
    }
    export(&t, "acme", &dir.join("acme.tenant"));
    assert!(!stale.exists(), "a dead export's partial file is left");
    assert!(live.exists(), "a running export's partial file was removed");
    assert!(other.exists(), "another file's partial was removed");

    let out = dir.join("backups");
    let own = out.join("acme");
    std::fs::create_dir_all(&own).unwrap();
    let stale = own.join(format!(".acme-20200101T000000Z.tenant.{dead}.partial"));
    let live = own.join(format!(".acme-20200101T000000Z.tenant.{alive}.partial"));
    for p in [&stale, &live] {
        std::fs::write(p, "half").unwrap();
    }
    t.run(&["backup", "--tenant", "acme", "--out", out.to_str().unwrap()])
        .expect(0);
    assert!(!stale.exists(), "a dead backup's partial file is left");
    assert!(live.exists(), "a running backup's partial file was removed");
}

#[test]
fn a_backup_into_a_directory_that_cannot_be_written_is_refused_before_any_tenant() {
    let (db, t) = ready();
    tenant(&db, &t, "acme", 12);
    // Not even root can create a file in /proc.
    let out = Path::new("/proc");
    assert!(
        std::fs::write(out.join(".tenantctl-test-probe"), b"").is_err(),
        "precondition: /proc must refuse new files"
    );
    let run = t.run(&["backup", "--all", "--out", out.to_str().unwrap()]);
    expect_error(&run, 2, &["cannot write"]);
    let events: Events = t.run(&["events", "-o", "json"]).expect(0).json();
    let backups: Vec<_> = events
        .events
        .iter()
        .filter(|e| e.action == "backup")
        .collect();
    assert!(backups.is_empty(), "backups were started: {backups:?}");
}

/// Rewrites the archive `from` into `to` with its manifest changed by `edit`, signed
/// again as a writer would: the zstd stream after the magic is decompressed, the `M`
/// record's JSON edited, the SHA-256 in `Z` recomputed over every record before it, and
/// the stream compressed again.
fn forge(from: &Path, to: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let raw = std::fs::read(from).unwrap();
    let (magic, body) = raw.split_at(8);
    let data = zstd::decode_all(body).unwrap();
    let mut records: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let len = u32::from_be_bytes(data[i + 1..i + 5].try_into().unwrap()) as usize;
        records.push((data[i], data[i + 5..i + 5 + len].to_vec()));
        i += 5 + len;
    }
    assert_eq!(records[0].0, b'M', "the manifest comes first");
    assert_eq!(records.last().unwrap().0, b'Z', "the checksum comes last");
    let mut manifest: serde_json::Value = serde_json::from_slice(&records[0].1).unwrap();
    edit(&mut manifest);
    records[0].1 = serde_json::to_vec(&manifest).unwrap();
    let mut hash = Sha256::new();
    let mut out = Vec::new();
    for (tag, payload) in &mut records {
        if *tag == b'Z' {
            *payload = hash.clone().finalize().to_vec();
        } else {
            hash.update([*tag]);
            hash.update((payload.len() as u32).to_be_bytes());
            hash.update(&payload[..]);
        }
        out.push(*tag);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
    }
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    encoder.include_checksum(true).unwrap();
    encoder.write_all(&out).unwrap();
    let mut file = magic.to_vec();
    file.extend(encoder.finish().unwrap());
    std::fs::write(to, file).unwrap();
}

#[test]
fn a_signed_manifest_that_contradicts_itself_is_refused_with_nothing_registered() {
    let (db, t) = ready();
    let src = tenant(&db, &t, "src", 12);
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good.tenant");
    export(&t, "src", &good);
    let data = table_contents(&mut db.client(), &src);
    let at = |name: &str| -> PathBuf { work.path().join(name) };

    // Signed again unchanged, it imports: the forging itself is sound.
    forge(&good, &at("same.tenant"), |_| {});
    let imported: Imported = import(&t, &at("same.tenant"), "same").expect(0).json();
    assert_eq!(
        table_contents(&mut db.client(), &imported.tenant.schema_name),
        data
    );

    forge(&good, &at("rev.tenant"), |m| {
        let highest = m["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["version"].as_i64().unwrap())
            .max()
            .unwrap();
        assert!(highest > 1);
        m["revision"] = serde_json::json!(highest - 1);
    });
    forge(&good, &at("newer.tenant"), |m| {
        m["server_version_num"] = serde_json::json!(990000);
    });
    let count = tenant_count(&db);
    let schemas = user_schemas(&db);
    let unchanged = |what: &str| {
        assert_eq!(tenant_count(&db), count, "{what}: nothing registered");
        assert_eq!(user_schemas(&db), schemas, "{what}: no schema made");
        assert_eq!(table_contents(&mut db.client(), &src), data, "{what}");
    };
    expect_error(
        &import(&t, &at("rev.tenant"), "victim"),
        2,
        &["highest applied migration"],
    );
    unchanged("import of a revision below its migrations");
    let rev = at("rev.tenant");
    expect_error(
        &t.run(&["tenant", "restore", "src", rev.to_str().unwrap(), "--yes"]),
        2,
        &["highest applied migration"],
    );
    unchanged("restore of a revision below its migrations");
    expect_error(
        &import(&t, &at("newer.tenant"), "victim"),
        3,
        &["PostgreSQL 99"],
    );
    unchanged("import from a newer PostgreSQL");
}

#[test]
fn keep_removes_only_real_backups_of_the_tenant_whatever_else_is_named_like_one() {
    let (db, t) = ready();
    tenant(&db, &t, "acme", 12);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("acme.tenant");
    export(&t, "acme", &archive);
    let out = work.path().join("out");
    let own = out.join("acme");
    std::fs::create_dir_all(own.join("acme-20200101T000000Z.tenant")).unwrap();
    std::fs::write(
        own.join("acme-20200101T000000Z.tenant/inside"),
        "kept with its directory\n",
    )
    .unwrap();
    std::fs::write(own.join("acme-20200101T000001Z.tenant"), "my notes\n").unwrap();
    let outside = work.path().join("precious.tenant");
    std::fs::copy(&archive, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, own.join("acme-20200101T000002Z.tenant")).unwrap();
    // Named almost like a backup, holding a real archive.
    let lookalikes = [
        "acme-20200101garbage.tenant",
        "acme-20200101T000003Z-x.tenant",
        "acme-20200101T000003Z-02.tenant",
        "acme-20200101T000003Z-1.tenant",
        "acme-2020010lT000003Z.tenant",
        "acme-20200101T000003Z.tenant.old",
    ];
    for name in lookalikes {
        std::fs::copy(&archive, own.join(name)).unwrap();
    }
    // Backups older versions named, "-2" and "-10" in the same second.
    for name in [
        "acme-20200101T000004Z.tenant",
        "acme-20200101T000004Z-2.tenant",
        "acme-20200101T000004Z-10.tenant",
    ] {
        std::fs::copy(&archive, own.join(name)).unwrap();
    }
    let mut everything_else: Vec<String> = std::fs::read_dir(&own)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with("acme-20200101T000004Z"))
        .collect();
    everything_else.sort();

    let run = t.run(&[
        "backup",
        "--tenant",
        "acme",
        "--out",
        out.to_str().unwrap(),
        "--keep",
        "2",
        "-o",
        "json",
    ]);
    let report: crate::common_json::RunReport = run.expect(0).json();
    let written = report.of("acme").file.clone().unwrap();
    let written = Path::new(&written).file_name().unwrap().to_str().unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&own)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut want = everything_else.clone();
    want.push("acme-20200101T000004Z-10.tenant".to_string());
    want.push(written.to_string());
    want.sort();
    assert_eq!(left, want, "only the two oldest real backups were removed");
    assert_eq!(
        std::fs::read_to_string(own.join("acme-20200101T000001Z.tenant")).unwrap(),
        "my notes\n"
    );
    assert!(outside.is_file(), "the symlink's target is kept");
}

#[test]
fn a_symlink_planted_at_the_temporary_name_is_never_written_through() {
    let (db, t) = ready();
    tenant(&db, &t, "acme", 12);
    let work = tempfile::tempdir().unwrap();
    let victim = work.path().join("victim.txt");
    std::fs::write(&victim, "keep me\n").unwrap();
    let out = work.path().join("out");
    std::fs::create_dir_all(out.join("acme")).unwrap();
    // The temporary names are predictable: `.FILE.PID.partial` for an export,
    // `.DOMAIN-STAMP.tenant.PID.partial` for a backup. The wrapper plants symlinks under
    // them for its own pid, which `exec` hands on to tenantctl, and every second ahead.
    let plant = r#"
        now=$(date -u +%s)
        ln -s "$VICTIM" "$WORK/.acme.tenant.$$.partial"
        for i in $(seq -2 120); do
            stamp=$(date -u -d "@$((now + i))" +%Y%m%dT%H%M%SZ)
            ln -s "$VICTIM" "$OUT/acme/.acme-$stamp.tenant.$$.partial"
        done
        exec "$@"
    "#;
    let trapped = t
        .clone()
        .env("VICTIM", victim.to_str().unwrap())
        .env("WORK", work.path().to_str().unwrap())
        .env("OUT", out.to_str().unwrap())
        .wrapped_in(Path::new("/bin/sh"), &["-c", plant, "sh"]);
    let file = work.path().join("acme.tenant");
    trapped
        .run(&["tenant", "export", "acme", "-f", file.to_str().unwrap()])
        .expect(0);
    let report: crate::common_json::RunReport = trapped
        .run(&[
            "backup",
            "--tenant",
            "acme",
            "--out",
            out.to_str().unwrap(),
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "keep me\n",
        "a planted symlink was written through"
    );
    let backup = PathBuf::from(report.of("acme").file.clone().unwrap());
    let want = table_contents(&mut db.client(), "tenant_acme");
    for (i, archive) in [&file, &backup].into_iter().enumerate() {
        let meta = std::fs::symlink_metadata(archive).unwrap();
        assert!(
            meta.file_type().is_file(),
            "{} is not a regular file",
            archive.display()
        );
        let imported: Imported = import(&t, archive, &format!("copy{i}")).expect(0).json();
        assert_eq!(
            table_contents(&mut db.client(), &imported.tenant.schema_name),
            want
        );
    }
}
