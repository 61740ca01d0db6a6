//! Migration files run as psql would run them: split into statements, each sent alone in
//! the file's transaction (or outside one, with `-- tenantctl: no-transaction`); files
//! that cannot run that way are refused before anything runs; a migration's `SET ROLE`
//! does not reach tenantctl's bookkeeping; errors name the file and line; the server's
//! warnings reach stderr with the tenant's domain.

use crate::{checks, common_json, support};
use checks::{assert_truth, create, expect_error, history_versions, relation_exists};
use common_json::{Created, RunReport};
use support::{dir_with, ready, TestDb};

const V1: (&str, &str) = (
    "V1__items.sql",
    "CREATE TABLE items (id int PRIMARY KEY, label text);\n",
);

#[test]
fn transaction_control_in_a_file_is_refused_before_anything_runs_naming_file_and_line() {
    let (db, t) = ready();
    let dir = dir_with(&[V1]);
    let t = t.migrations(dir.path());
    create(&t, "first", &["--migrate"]);
    create(&t, "second", &["--migrate"]);
    for (body, needle) in [
        (
            "INSERT INTO items VALUES (1, 'a');\n-- make it stick\nCOMMIT;\nINSERT INTO items VALUES (2, 'b');\n",
            "V2__more.sql:3: COMMIT is transaction control",
        ),
        (
            "INSERT INTO items VALUES (1, 'a');\nROLLBACK;\n",
            "V2__more.sql:2: ROLLBACK",
        ),
        (
            "BEGIN;\nINSERT INTO items VALUES (1, 'a');\nEND;\n",
            "V2__more.sql:1: BEGIN",
        ),
        (
            "COPY items (id, label) FROM stdin;\n1\ta\n\\.\n",
            "V2__more.sql:1: COPY ... FROM STDIN: inline data is not supported",
        ),
        ("\\set ON_ERROR_STOP on\nSELECT 1;\n", "V2__more.sql:1: a psql meta-command"),
    ] {
        std::fs::write(dir.path().join("V2__more.sql"), body).unwrap();
        for args in [
            &["upgrade", "--all"][..],
            &["upgrade", "--all", "--dry-run"][..],
            &["upgrade", "--tenant", "first", "-o", "json"][..],
        ] {
            expect_error(&t.run(args), 3, &[needle, "nothing was run"]);
        }
        for schema in ["tenant_first", "tenant_second"] {
            assert_eq!(history_versions(&db, schema), [1], "{body}");
        }
        let rows: i64 = db
            .client()
            .query_one(
                "SELECT (SELECT count(*) FROM tenant_first.items) + (SELECT count(*) FROM tenant_second.items)",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(rows, 0, "{body}");
    }
    // BEGIN inside a DO body or a SQL-standard function body is not transaction control.
    std::fs::write(
        dir.path().join("V2__more.sql"),
        "DO $$ BEGIN INSERT INTO items VALUES (1, 'do'); END $$;\n\
         CREATE FUNCTION item_count() RETURNS bigint LANGUAGE sql\nBEGIN ATOMIC\n  SELECT count(*) FROM items;\nEND;\n",
    )
    .unwrap();
    let r: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(r.of("first").applied, [2]);
    let n: i64 = db
        .client()
        .query_one("SELECT tenant_second.item_count()", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    assert_truth(&db, "first", "active");
}

#[test]
fn a_file_with_a_byte_order_mark_applies() {
    let (db, t) = ready();
    let dir = dir_with(&[(
        "V1__bom.sql",
        "\u{feff}-- saved by an editor that writes a BOM\nCREATE TABLE marked (id int);\nINSERT INTO marked VALUES (1);\n",
    )]);
    let t = t.migrations(dir.path());
    let c = create(&t, "bom", &["--migrate"]);
    assert_eq!(c.tenant.current_revision, Some(1));
    assert!(relation_exists(&db, "tenant_bom", "marked"));
    // The history stores the checksum of the file as read, BOM included.
    let checksum: String = db
        .client()
        .query_one(
            "SELECT checksum FROM tenant_bom.refinery_schema_history WHERE version = 1",
            &[],
        )
        .unwrap()
        .get(0);
    let text = std::fs::read_to_string(dir.path().join("V1__bom.sql")).unwrap();
    assert_eq!(
        checksum,
        refinery::Migration::unapplied("V1__bom", &text)
            .unwrap()
            .checksum()
            .to_string()
    );
    t.run(&["check"]).expect(0);
}

/// A role for one test, dropped (with its grants) when the test ends.
struct TestRole<'a> {
    db: &'a TestDb,
    name: String,
}

impl<'a> TestRole<'a> {
    fn new(db: &'a TestDb) -> Self {
        let name = format!("r_{}", db.name);
        db.client()
            .batch_execute(&format!("CREATE ROLE \"{name}\" NOLOGIN"))
            .unwrap();
        TestRole { db, name }
    }
}

impl Drop for TestRole<'_> {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.db.url, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP OWNED BY \"{0}\"; DROP ROLE \"{0}\"",
                self.name
            ));
        }
    }
}

#[test]
fn set_role_inside_a_migration_does_not_reach_the_history_or_the_next_file() {
    let (db, t) = ready();
    let role = TestRole::new(&db);
    let dir = dir_with(&[
        (
            "V1__as_reader.sql",
            &format!(
                "CREATE TABLE items (id int);\nGRANT USAGE ON SCHEMA tenant_roles TO \"{0}\";\nGRANT SELECT ON items TO \"{0}\";\nSET ROLE \"{0}\";\nSELECT count(*) FROM items;\n",
                role.name
            ),
        ),
        (
            "V2__as_owner.sql",
            "CREATE TABLE owned (id int);\nCREATE TABLE who (name text DEFAULT current_user);\nINSERT INTO who DEFAULT VALUES;\n",
        ),
        (
            "V3__no_tx.sql",
            &format!(
                "-- tenantctl: no-transaction\nSET ROLE \"{}\";\nSELECT count(*) FROM items;\n",
                role.name
            ),
        ),
    ]);
    let t = t.migrations(dir.path());
    let c = create(&t, "roles", &["--migrate"]);
    assert_eq!(c.tenant.current_revision, Some(3), "{}", c.message);
    assert_eq!(history_versions(&db, "tenant_roles"), [1, 2, 3]);
    let mut client = db.client();
    let who: String = client
        .query_one("SELECT name FROM tenant_roles.who", &[])
        .unwrap()
        .get(0);
    assert_ne!(who, role.name, "V2 ran with V1's role");
    let owner: String = client
        .query_one(
            "SELECT tableowner::text FROM pg_tables WHERE schemaname = 'tenant_roles' AND tablename = 'owned'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, who);
    assert_truth(&db, "roles", "active");
}

#[test]
fn a_no_transaction_file_creates_an_index_concurrently_and_is_recorded() {
    let (db, t) = ready();
    let dir = dir_with(&[
        V1,
        (
            "V2__index.sql",
            "-- tenantctl: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS items_label ON items (label);\n",
        ),
    ]);
    let t = t.migrations(dir.path());
    let c = create(&t, "indexed", &["--migrate"]);
    assert_eq!(c.tenant.current_revision, Some(2), "{}", c.message);
    let valid: bool = db
        .client()
        .query_one(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'tenant_indexed.items_label'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(valid);
    assert_eq!(history_versions(&db, "tenant_indexed"), [1, 2]);
    assert_truth(&db, "indexed", "active");
    t.run(&["check"]).expect(0);

    // Its down script runs outside a transaction too; a dry run shows no BEGIN for it.
    std::fs::write(
        dir.path().join("V2__index.down.sql"),
        "-- tenantctl: no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS items_label;\n",
    )
    .unwrap();
    let dry = t.run(&["downgrade", "--tenant", "indexed", "1", "--dry-run"]);
    dry.expect(0);
    assert!(
        dry.stdout.contains("-- no-transaction file"),
        "{}",
        dry.stdout
    );
    assert!(!dry.stdout.contains("BEGIN;"), "{}", dry.stdout);
    let r: RunReport = t
        .run(&[
            "downgrade",
            "--tenant",
            "indexed",
            "1",
            "--yes",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    assert_eq!(r.of("indexed").applied, [2]);
    assert!(!relation_exists(&db, "tenant_indexed", "items_label"));
    assert_eq!(history_versions(&db, "tenant_indexed"), [1]);
    assert_truth(&db, "indexed", "active");
}

#[test]
fn create_index_concurrently_without_the_directive_is_refused_at_load_and_by_dry_run() {
    let (db, t) = ready();
    let dir = dir_with(&[V1]);
    let t = t.migrations(dir.path());
    create(&t, "plain", &["--migrate"]);
    std::fs::write(
        dir.path().join("V2__index.sql"),
        "-- an index on a big table\n\nCREATE INDEX CONCURRENTLY items_label ON items (label);\n",
    )
    .unwrap();
    for args in [
        &["upgrade", "--all"][..],
        &["upgrade", "--tenant", "plain", "--dry-run"][..],
        &["downgrade", "--tenant", "plain", "base", "--dry-run"][..],
    ] {
        expect_error(
            &t.run(args),
            3,
            &[
                "V2__index.sql:3: CREATE INDEX CONCURRENTLY cannot run inside a transaction",
                "-- tenantctl: no-transaction",
            ],
        );
    }
    expect_error(
        &t.run(&["tenant", "create", "later", "--name", "Later", "--migrate"]),
        3,
        &["V2__index.sql:3"],
    );
    assert_eq!(history_versions(&db, "tenant_plain"), [1]);
    assert!(!relation_exists(&db, "tenant_plain", "items_label"));
}

#[test]
fn a_failing_statement_names_its_line_and_leaves_nothing_of_its_file() {
    let (db, t) = ready();
    let dir = dir_with(&[
        V1,
        (
            "V2__broken.sql",
            "CREATE TABLE notes (id int);\nINSERT INTO notes VALUES (1);\n\n-- the mistake is two lines into the next statement\nSELECT id,\n  label,\n  no_such_column\nFROM items;\nCREATE TABLE after_it (id int);\n",
        ),
    ]);
    let t = t.migrations(dir.path());
    let run = t.run(&[
        "tenant",
        "create",
        "broken",
        "--name",
        "Broken",
        "--migrate",
        "-o",
        "json",
    ]);
    run.expect(1);
    let c: Created = run.json();
    assert_eq!(c.tenant.current_revision, Some(1));
    assert!(
        c.message.contains("V2__broken.sql) failed at line 7"),
        "{}",
        c.message
    );
    assert!(c.message.contains("no_such_column"), "{}", c.message);
    assert_eq!(history_versions(&db, "tenant_broken"), [1]);
    assert!(!relation_exists(&db, "tenant_broken", "notes"));
    assert!(!relation_exists(&db, "tenant_broken", "after_it"));
    let row = assert_truth(&db, "broken", "failed");
    assert!(row.last_error.unwrap().contains("failed at line 7"));

    // A no-transaction file that fails half-way keeps what ran before the failure, says
    // so, and is not recorded; fixed so that it can be rerun, it completes.
    std::fs::write(
        dir.path().join("V2__broken.sql"),
        "CREATE TABLE notes (id int);\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("V3__half.sql"),
        "-- tenantctl: no-transaction\nCREATE TABLE IF NOT EXISTS kept (id int);\nSELECT 1/0;\n",
    )
    .unwrap();
    let r: RunReport = t
        .run(&["upgrade", "--tenant", "broken", "-o", "json"])
        .expect(1)
        .json();
    let err = r.of("broken").error.clone().unwrap();
    assert!(err.contains("V3__half.sql) failed at line 3"), "{err}");
    assert!(err.contains("stay applied"), "{err}");
    assert_eq!(r.of("broken").applied, [2]);
    assert_eq!(history_versions(&db, "tenant_broken"), [1, 2]);
    assert!(relation_exists(&db, "tenant_broken", "kept"));
    std::fs::write(
        dir.path().join("V3__half.sql"),
        "-- tenantctl: no-transaction\nCREATE TABLE IF NOT EXISTS kept (id int);\nSELECT 1;\n",
    )
    .unwrap();
    let r: RunReport = t
        .run(&["upgrade", "--tenant", "broken", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("broken").applied, [3]);
    assert_truth(&db, "broken", "active");
}

const LONG_NAME: &str = "a_table_name_that_is_much_longer_than_postgres_allows_for_identifiers_72";

#[test]
fn server_warnings_reach_stderr_with_the_tenant_domain_and_json_stays_one_document() {
    assert_eq!(LONG_NAME.len(), 72);
    let (db, t) = ready();
    let dir = dir_with(&[
        V1,
        (
            "V2__noisy.sql",
            &format!(
                "DO $$ BEGIN RAISE WARNING 'careful'; END $$;\nDO $$ BEGIN RAISE NOTICE 'just so you know'; END $$;\nCREATE TABLE {LONG_NAME} (id int);\n"
            ),
        ),
    ]);
    let t = t.migrations(dir.path());
    for domain in ["loud", "verbose", "quiet"] {
        create(&t, domain, &["--migrate", "--target", "1"]);
    }
    // A bulk run in JSON: one document on stdout, the warnings on stderr.
    let run = t.run(&["upgrade", "--tenant", "loud", "-o", "json"]);
    run.expect(0);
    let r: RunReport = run.json();
    assert_eq!(r.of("loud").applied, [2]);
    assert!(
        run.stderr.contains("warning: loud: careful"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "warning: loud: identifier \"{LONG_NAME}\" will be truncated"
        )),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("just so you know"), "{}", run.stderr);
    assert!(!run.stdout.contains("careful"));
    // -v adds the notices; -q shows none.
    let run = t.run(&["-v", "upgrade", "--tenant", "verbose"]);
    run.expect(0);
    assert!(
        run.stderr.contains("warning: verbose: careful"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("notice: verbose: just so you know"),
        "{}",
        run.stderr
    );
    assert!(!run.stdout.contains("careful"));
    let run = t.run(&["-q", "upgrade", "--tenant", "quiet"]);
    run.expect(0);
    assert!(!run.stderr.contains("careful"), "{}", run.stderr);
    // A single-tenant create shows them too.
    let run = t.run(&[
        "tenant",
        "create",
        "created",
        "--name",
        "Created",
        "--migrate",
        "-o",
        "json",
    ]);
    run.expect(0);
    let c: Created = run.json();
    assert_eq!(c.tenant.current_revision, Some(2));
    assert!(
        run.stderr.contains("warning: created: careful"),
        "{}",
        run.stderr
    );
    assert!(relation_exists(&db, "tenant_created", &LONG_NAME[..63]));
}
