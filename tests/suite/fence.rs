//! The write fence (a restore, a move's copy) never makes an application's write fail:
//! an application transaction that holds a lock on one of the tenant's tables and then
//! needs one the fence holds is let through, whether its need comes from a foreign key
//! check (an `INSERT` into the referencing table locks the referenced one after its own)
//! or from writing the referenced table first, as an ORM does; the fence then completes.

use crate::cluster::Cluster;
use crate::support::{dir_with, eventually, ready, Tenantctl, TestDb};

const SHOP: (&str, &str) = (
    "V1__shop.sql",
    "CREATE TABLE accounts (id int PRIMARY KEY, note text);\n\
     CREATE TABLE writes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
         account_id int NOT NULL REFERENCES accounts (id), body text);\n",
);

struct Setting {
    db: TestDb,
    t: Tenantctl,
    b: Cluster,
    dir: tempfile::TempDir,
    _migrations: tempfile::TempDir,
}

fn setting() -> Setting {
    let (db, t) = ready();
    // A deadlock would be resolved only after 10 s, so that a wait that long, against
    // the fraction of a second a fence takes to let a transaction through, tells the two
    // apart on a busy machine.
    db.client()
        .batch_execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET deadlock_timeout = %L', current_database(), '10s'); END $$",
        )
        .unwrap();
    let b = Cluster::trusting("");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tenants.toml"),
        format!("[servers.b]\nurl = \"{}\"\n", b.url("sslmode=disable")),
    )
    .unwrap();
    let migrations = dir_with(&[SHOP]);
    let t = t.cwd(dir.path()).migrations(migrations.path());
    Setting {
        db,
        t,
        b,
        dir,
        _migrations: migrations,
    }
}

/// A tenant on the registry's server with a few accounts and writes; its schema.
fn tenant(s: &Setting, domain: &str) -> String {
    let run = s.t.run(&[
        "tenant",
        "create",
        domain,
        "--name",
        domain,
        "--server",
        "default",
        "--migrate",
        "-o",
        "json",
    ]);
    let v: serde_json::Value = run.expect(0).json();
    let schema = v["tenant"]["schema_name"].as_str().unwrap().to_string();
    s.db.client()
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".accounts SELECT g, 'a' FROM generate_series(1, 10) g; \
             INSERT INTO \"{schema}\".writes (account_id, body) SELECT 1 + g % 10, 'seed' FROM generate_series(1, 100) g"
        ))
        .unwrap();
    schema
}

/// Whether a tenantctl session waits for a table lock: the fence is queued.
fn fence_waiting(db: &TestDb) -> bool {
    db.client()
        .query_one(
            "SELECT count(*) > 0 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'relation' AND NOT l.granted AND a.application_name LIKE 'tenantctl%'",
            &[],
        )
        .unwrap()
        .get(0)
}

/// The application holds `first` (a statement on one table, in an open transaction)
/// when the fence starts waiting, then runs `then`, which needs a table the fence may
/// hold: it must succeed, its commit too, without waiting as long as a deadlock check,
/// and the fenced operation (a restore, then a move) must finish.
fn let_through(first: &str, then: &str) {
    let s = setting();
    for op in ["restore", "move"] {
        let domain = format!("shop-{op}");
        let schema = tenant(&s, &domain);
        let archive = s.dir.path().join(format!("{domain}.tenant"));
        let archive = archive.to_str().unwrap().to_string();
        s.t.run(&["tenant", "export", &domain, "-f", &archive])
            .expect(0);
        let args: Vec<&str> = match op {
            "restore" => vec!["tenant", "restore", &domain, &archive, "--yes"],
            _ => vec!["tenant", "move", &domain, "--to", "b", "--yes"],
        };
        let mut app = s.db.client();
        app.batch_execute(&format!("SET search_path = \"{schema}\"; BEGIN; {first}"))
            .unwrap();
        let mut child = s.t.spawn(&args);
        child.wait_until("the fence waits for the application", || {
            fence_waiting(&s.db)
        });
        let started = std::time::Instant::now();
        app.batch_execute(then)
            .unwrap_or_else(|e| panic!("{op}: the application's statement failed: {e:?}"));
        app.batch_execute("COMMIT")
            .unwrap_or_else(|e| panic!("{op}: the application's commit failed: {e:?}"));
        let waited = started.elapsed();
        assert!(
            waited < std::time::Duration::from_secs(5),
            "{op}: the application waited {waited:?} for the fence: a deadlock, resolved by the server"
        );
        child.finish().expect(0);
        eventually("the fence is gone", || !fence_waiting(&s.db));
    }
}

#[test]
fn an_insert_whose_foreign_key_check_needs_a_fenced_table_is_let_through() {
    // The INSERT locks `writes`, then `accounts` for its foreign key check.
    let_through(
        "UPDATE writes SET body = 'held' WHERE id = 1",
        "INSERT INTO writes (account_id, body) VALUES (1, 'app')",
    );
}

#[test]
fn a_transaction_that_wrote_the_referenced_table_first_is_let_through() {
    // An ORM's order: the account first, then a row that references it.
    let_through(
        "UPDATE accounts SET note = 'held' WHERE id = 1",
        "INSERT INTO writes (account_id, body) VALUES (1, 'app')",
    );
}

/// An application that holds the referenced table across some work before writing the
/// referencing one, again and again: the fence gives way to it, then locks the tables
/// in the order that transaction takes them, and completes; the application never
/// fails.
#[test]
fn a_fence_learns_the_order_of_a_transaction_it_gave_way_to_and_completes() {
    let s = setting();
    // Giving way alone would go on for minutes; learning the order takes a try or two.
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("tenants.toml"),
        format!(
            "[run]\nlock_wait = \"30s\"\n\n[servers.b]\nurl = \"{}\"\n",
            s.b.url("sslmode=disable")
        ),
    )
    .unwrap();
    let t = s.t.clone().cwd(config.path());
    for op in ["restore", "move"] {
        let domain = format!("loop-{op}");
        let schema = tenant(&s, &domain);
        let archive = s.dir.path().join(format!("{domain}.tenant"));
        let archive = archive.to_str().unwrap().to_string();
        s.t.run(&["tenant", "export", &domain, "-f", &archive])
            .expect(0);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let app = {
            let (url, schema, stop) = (s.db.url.clone(), schema.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                let (mut done, mut failed) = (0u32, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    // After a move the table is elsewhere: the application's next
                    // lookup would find it there; this one simply stops.
                    let r = c.transaction().and_then(|mut tx| {
                        tx.batch_execute(&format!(
                            "UPDATE \"{schema}\".accounts SET note = 'busy' WHERE id = 1; \
                             SELECT pg_sleep(0.2); \
                             INSERT INTO \"{schema}\".writes (account_id, body) VALUES (1, 'app')"
                        ))?;
                        tx.commit()
                    });
                    match r {
                        Ok(()) => done += 1,
                        Err(e) if e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) => {
                            break
                        }
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (done, failed)
            })
        };
        let args: Vec<&str> = match op {
            "restore" => vec!["tenant", "restore", &domain, &archive, "--yes"],
            _ => vec!["tenant", "move", &domain, "--to", "b", "--yes"],
        };
        let run = t.run(&args);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let (done, failed) = app.join().unwrap();
        run.expect(0);
        assert!(
            failed.is_empty(),
            "{op}: the application failed: {failed:?}"
        );
        assert!(done > 0, "{op}: the application never wrote");
    }
}

/// A transaction left open on one of the tenant's tables holds the fence back, but the
/// fence holds the tenant's writes back for at most `run.lock_timeout` at a time: between
/// its tries the writes to the other tables go through. Past `run.lock_wait` it gives up,
/// naming the session it waited for, and nothing is changed.
#[test]
fn a_transaction_left_open_holds_the_writes_back_only_a_try_at_a_time() {
    let s = setting();
    let domain = "idle";
    let schema = tenant(&s, domain);
    let archive = s.dir.path().join("idle.tenant");
    let archive = archive.to_str().unwrap().to_string();
    s.t.run(&["tenant", "export", domain, "-f", &archive])
        .expect(0);
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("tenants.toml"),
        "[run]\nlock_timeout = \"1s\"\nlock_wait = \"6s\"\n",
    )
    .unwrap();
    let t = s.t.clone().cwd(config.path());
    let mut idle = s.db.client();
    idle.batch_execute(&format!(
        "BEGIN; UPDATE \"{schema}\".accounts SET note = 'left open' WHERE id = 1"
    ))
    .unwrap();
    let idle_pid: i32 = idle
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let before = crate::checks::table_contents(&mut s.db.client(), &schema);
    let mut child = t.spawn(&["tenant", "restore", domain, &archive, "--yes"]);
    child.wait_until("the fence waits for the open transaction", || {
        fence_waiting(&s.db)
    });
    // While the fence keeps trying, a write to the table the fence takes first gets
    // through between two tries.
    let mut app = s.db.client();
    app.execute(
        &format!("INSERT INTO \"{schema}\".writes (account_id, body) VALUES (2, 'between tries')"),
        &[],
    )
    .expect("a write between the fence's tries");
    let run = child.finish();
    crate::checks::expect_error(&run, 1, &["run.lock_wait", &format!("pid {idle_pid}")]);
    idle.batch_execute("ROLLBACK").unwrap();
    let mut after = crate::checks::table_contents(&mut s.db.client(), &schema);
    let writes = after.get_mut("writes").unwrap();
    assert_ne!(
        *writes, before["writes"],
        "the write between tries is there"
    );
    after.remove("writes");
    let mut before = before;
    before.remove("writes");
    assert_eq!(after, before, "the restore changed nothing");
}
