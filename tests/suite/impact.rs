//! `upgrade --impact`: what each pending statement locks and rewrites, as PostgreSQL
//! measures it on a scratch copy, and the selected tenants with the largest tables it
//! locks; one tenant far bigger than the others is listed first with its table's size;
//! nothing is changed and no scratch schema is left behind, also when a statement fails
//! on the copy.

use serde_json::Value;

use crate::checks::expect_error;
use crate::support::{dir_with, ready, TestDb};

fn fleet() -> (TestDb, crate::support::Tenantctl, tempfile::TempDir) {
    let (db, t) = ready();
    let dir = dir_with(&[
        (
            "V1__base.sql",
            "CREATE TABLE members (id bigint PRIMARY KEY, name text);\nCREATE TABLE notes (id bigint PRIMARY KEY, body text);\n",
        ),
        (
            "V2__changes.sql",
            "ALTER TABLE members ADD COLUMN email text;\n\
             ALTER TABLE members ADD COLUMN token text DEFAULT gen_random_uuid()::text;\n\
             CREATE INDEX notes_body_idx ON notes (body);\n",
        ),
    ]);
    let t = t.migrations(dir.path());
    for d in ["small", "big", "mid"] {
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
    }
    db.client()
        .batch_execute(
            "INSERT INTO tenant_big.members SELECT g, repeat('x', 100) FROM generate_series(1, 50000) g;\n\
             INSERT INTO tenant_mid.members SELECT g, 'y' FROM generate_series(1, 2000) g;\n\
             ANALYZE tenant_big.members; ANALYZE tenant_mid.members;",
        )
        .unwrap();
    (db, t, dir)
}

/// Scratch databases made for this test's database (their comment names it) and
/// scratch schemas in it, left behind. (Other tests measure at the same time on the same
/// server: theirs are not counted.)
fn scratch_schemas(db: &TestDb) -> i64 {
    db.client()
        .query_one(
            "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenantctl\\_impact%') \
                  + (SELECT count(*) FROM pg_database d WHERE datname LIKE 'tenantctl\\_impact\\_%' \
                     AND shobj_description(d.oid, 'pg_database') = 'tenantctl upgrade --impact, for database ' || current_database())",
            &[],
        )
        .unwrap()
        .get(0)
}

fn columns(db: &TestDb) -> i64 {
    db.client()
        .query_one(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'members'",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn each_statements_locks_and_rewrites_are_measured_and_the_biggest_tenant_comes_first() {
    let (db, t, _dir) = fleet();
    let before = columns(&db);
    let args = ["upgrade", "--all", "--impact", "-o", "json"];
    let run = t.run(&args);
    run.expect(0);
    crate::support::schemas::check(&args, &run);
    let doc: Value = run.json();
    assert_eq!(
        (doc["measured_from"].as_i64(), doc["target"].as_i64()),
        (Some(1), Some(2))
    );
    let s = doc["statements"].as_array().unwrap();
    assert_eq!(s.len(), 3, "{doc:#}");
    let lock = |i: usize| {
        (
            s[i]["locks"][0]["table"].clone(),
            s[i]["locks"][0]["mode"].clone(),
        )
    };
    // A nullable column: catalog only. A volatile default: the table is rewritten. A
    // plain index build: ShareLock, no rewrite.
    assert_eq!(
        lock(0),
        (Value::from("members"), Value::from("AccessExclusiveLock"))
    );
    assert_eq!(s[0]["rewrites"], serde_json::json!([]));
    assert_eq!(
        lock(1),
        (Value::from("members"), Value::from("AccessExclusiveLock"))
    );
    assert_eq!(s[1]["rewrites"], serde_json::json!(["members"]));
    assert_eq!(lock(2), (Value::from("notes"), Value::from("ShareLock")));
    assert_eq!(s[2]["rewrites"], serde_json::json!([]));

    // The big tenant first, with its table's size as PostgreSQL reports it.
    let big: i64 = db
        .client()
        .query_one("SELECT pg_total_relation_size('tenant_big.members')", &[])
        .unwrap()
        .get(0);
    let largest = s[1]["largest"].as_array().unwrap();
    let order: Vec<&str> = largest
        .iter()
        .map(|x| x["domain"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["big", "mid", "small"]);
    assert_eq!(largest[0]["bytes"].as_i64(), Some(big));
    assert_eq!(largest[0]["rewritten"], true);
    assert!(largest[0]["rewrite_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(s[1]["tenants"], 3);
    assert!(s[1]["total_bytes"].as_i64().unwrap() >= big);

    // Text: the statement, its locks, and the tenants.
    let text = t.run(&["upgrade", "--all", "--impact"]);
    text.expect(0);
    assert!(
        text.stdout
            .contains("V2__changes.sql:2: ALTER TABLE members ADD COLUMN token")
            && text
                .stdout
                .contains("AccessExclusiveLock on members (rewritten)")
            && text.stdout.contains("    big (default): members "),
        "{}",
        text.stdout
    );

    // Nothing changed, nothing left behind.
    assert_eq!(columns(&db), before);
    assert_eq!(scratch_schemas(&db), 0);
    let doc: Value = t.run(&["status", "--all", "-o", "json"]).json();
    assert!(
        doc["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["current_revision"] == 1),
        "{doc:#}"
    );
}

#[test]
fn a_statement_that_fails_on_the_copy_is_said_and_a_relative_target_is_refused() {
    let (db, t, dir) = fleet();
    std::fs::write(
        dir.path().join("V3__broken.sql"),
        "ALTER TABLE no_such_table ADD COLUMN x int;\n",
    )
    .unwrap();
    // Said, and the others measured.
    let doc: Value = t
        .run(&["upgrade", "--all", "--impact", "-o", "json"])
        .expect(0)
        .json();
    let last = doc["statements"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["version"], 3);
    assert!(
        last["not_measured"]
            .as_str()
            .unwrap()
            .contains("no_such_table"),
        "{last:#}"
    );
    assert_eq!(scratch_schemas(&db), 0);
    expect_error(
        &t.run(&["upgrade", "--all", "--impact", "+1"]),
        2,
        &["--impact takes a version or head"],
    );
    // --impact with --shared is a usage error; with --dry-run it is the same report.
    expect_error(
        &t.run(&["upgrade", "--all", "--impact", "--shared"]),
        2,
        &[],
    );
    let with: Value = t
        .run(&[
            "upgrade",
            "--all",
            "--impact",
            "--dry-run",
            "2",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    assert_eq!(with["statements"].as_array().unwrap().len(), 3);
    // Up to V2 only: what V2 does, and V3 is not run.
    let doc: Value = t
        .run(&["upgrade", "--all", "--impact", "2", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(doc["statements"].as_array().unwrap().len(), 3);
    // A no-transaction file is not measured, and says why.
    std::fs::write(
        dir.path().join("V3__broken.sql"),
        "-- tenantctl: no-transaction\nCREATE INDEX CONCURRENTLY notes_id_idx ON notes (id);\n",
    )
    .unwrap();
    let doc: Value = t
        .run(&["upgrade", "--all", "--impact", "-o", "json"])
        .expect(0)
        .json();
    let last = doc["statements"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        last["not_measured"]
            .as_str()
            .unwrap()
            .contains("outside a transaction"),
        "{last:#}"
    );
    assert_eq!(scratch_schemas(&db), 0);
}

#[test]
fn max_rewrite_bytes_skips_the_tenants_whose_rewrite_is_too_big_and_runs_the_others() {
    let (db, t, _dir) = fleet();
    let config = dir_with(&[("tenants.toml", "[run]\nmax_rewrite_bytes = \"1MB\"\n")]);
    let limited = t.clone().cwd(config.path());
    let run = limited.run(&["upgrade", "--all", "-o", "json"]);
    run.expect(0);
    let doc: Value = run.json();
    let by: std::collections::BTreeMap<String, Value> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["domain"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    // big's members (several MiB) and mid's (over 1 MiB? only if it is) are over; small's is not.
    assert_eq!(by["big"]["status"], "skipped", "{doc:#}");
    let why = by["big"]["error"].as_str().unwrap();
    assert!(
        why.contains("V2__changes.sql:2 would rewrite table \"members\"")
            && why.contains("over run.max_rewrite_bytes (1048576 bytes)"),
        "{why}"
    );
    assert_eq!(by["small"]["status"], "ok", "{doc:#}");
    let revision = |schema: &str| -> Option<i32> {
        db.client()
            .query_one(
                &format!("SELECT max(version) FROM \"{schema}\".refinery_schema_history"),
                &[],
            )
            .unwrap()
            .get(0)
    };
    assert_eq!(revision("tenant_big"), Some(1), "big was not touched");
    assert_eq!(revision("tenant_small"), Some(2));
    assert_eq!(scratch_schemas(&db), 0);
    // Without the limit, big goes ahead.
    t.run(&["upgrade", "--tenant", "big"]).expect(0);
    assert_eq!(revision("tenant_big"), Some(2));
    // A size that is no size: exit 3 naming the key.
    let bad = dir_with(&[("tenants.toml", "[run]\nmax_rewrite_bytes = \"lots\"\n")]);
    expect_error(
        &t.clone().cwd(bad.path()).run(&["upgrade", "--all"]),
        3,
        &["run.max_rewrite_bytes", "lots"],
    );
}

/// Migrations that reach outside their schema (the shared schema, the registry, a role,
/// an extension) are measured in the scratch database and change nothing in the real one
/// or in the cluster; a statement that needs data fails there alone, said, and the others
/// are measured; a rewrite outside a transaction is seen; a TRUNCATE is no rewrite.
#[test]
fn nothing_a_migration_does_outside_its_schema_reaches_the_real_database() {
    let (db, t, dir) = fleet();
    std::fs::write(
        dir.path().join("V3__outside.sql"),
        "CREATE TABLE public.impact_leak (id bigint);\n\
         INSERT INTO public.impact_leak VALUES (1);\n\
         UPDATE public.tenants SET last_error = 'impact was here';\n\
         CREATE ROLE tenantctl_impact_test_role;\n\
         DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM members) THEN RAISE EXCEPTION 'needs members'; END IF; END $$;\n\
         TRUNCATE notes;\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("V4__vacuum.sql"),
        "-- tenantctl: no-transaction\nVACUUM FULL members;\n",
    )
    .unwrap();
    let snapshot = |db: &TestDb| -> (i64, i64, i64, i64) {
        let mut c = db.client();
        let one =
            |c: &mut postgres::Client, sql: &str| -> i64 { c.query_one(sql, &[]).unwrap().get(0) };
        (
            one(
                &mut c,
                "SELECT count(*) FROM pg_tables WHERE tablename = 'impact_leak'",
            ),
            one(
                &mut c,
                "SELECT count(*) FROM pg_roles WHERE rolname = 'tenantctl_impact_test_role'",
            ),
            one(
                &mut c,
                "SELECT count(*) FROM public.tenants WHERE last_error IS NOT NULL",
            ),
            one(
                &mut c,
                "SELECT count(*) FROM pg_database WHERE datname LIKE 'tenantctl\\_impact\\_%'",
            ),
        )
    };
    let before = snapshot(&db);
    assert_eq!(before, (0, 0, 0, 0));
    let doc: Value = t
        .run(&["upgrade", "--all", "--impact", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(
        snapshot(&db),
        before,
        "nothing reached the real database or the cluster"
    );
    let s = doc["statements"].as_array().unwrap();
    let at = |version: i64, line: i64| {
        s.iter()
            .find(|x| x["version"] == version && x["line"] == line)
            .unwrap_or_else(|| panic!("V{version} line {line} in {doc:#}"))
            .clone()
    };
    assert_eq!(at(3, 1)["locks"][0]["table"], "\"public\".\"impact_leak\"");
    assert_eq!(at(3, 1)["locks"][0]["tenant_table"], false);
    assert!(at(3, 4)["not_measured"]
        .as_str()
        .unwrap()
        .contains("whole cluster"));
    assert!(at(3, 5)["not_measured"]
        .as_str()
        .unwrap()
        .contains("needs members"));
    assert_eq!(at(3, 6)["locks"][0]["mode"], "AccessExclusiveLock");
    assert_eq!(
        at(3, 6)["rewrites"],
        serde_json::json!([]),
        "TRUNCATE is no rewrite"
    );
    let vacuum = at(4, 2);
    assert!(vacuum["not_measured"]
        .as_str()
        .unwrap()
        .contains("outside a transaction"));
    assert_eq!(vacuum["rewrites"], serde_json::json!(["members"]));
    assert_eq!(vacuum["largest"][0]["domain"], "big");

    // The guard sees the rewrite outside a transaction too.
    let config = dir_with(&[("tenants.toml", "[run]\nmax_rewrite_bytes = \"1MB\"\n")]);
    let doc: Value = t
        .clone()
        .cwd(config.path())
        .run(&["upgrade", "--tenant", "big", "-o", "json"])
        .json();
    assert_eq!(doc["results"][0]["status"], "skipped", "{doc:#}");
    assert_eq!(snapshot(&db), before);
}
