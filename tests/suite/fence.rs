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
    _b: Cluster,
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
        _b: b,
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
