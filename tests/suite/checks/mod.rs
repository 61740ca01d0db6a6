//! Shared checks for the integration tests: what is really in the database, the registry
//! row as stored, error-run assertions, and a few setup shortcuts.

use crate::common_json::Created;
use crate::support::{Run, Tenantctl, TestDb};

/// Asserts an error run: the exit code, nothing on stdout, stderr starting with `error: `
/// and containing every needle.
pub fn expect_error(run: &Run, code: i32, needles: &[&str]) {
    run.expect(code);
    assert!(
        run.stdout.is_empty(),
        "stdout must be empty on errors, got:\n{}",
        run.stdout
    );
    assert!(
        run.stderr.starts_with("error: "),
        "stderr must start with `error: `, got:\n{}",
        run.stderr
    );
    for n in needles {
        assert!(
            run.stderr.contains(n),
            "stderr should mention {n:?}:\n{}",
            run.stderr
        );
    }
}

/// Whether a schema exists.
pub fn schema_exists(db: &TestDb, schema: &str) -> bool {
    db.client()
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .unwrap()
        .get(0)
}

/// Whether a relation (table, view, ...) `schema.name` exists.
pub fn relation_exists(db: &TestDb, schema: &str, name: &str) -> bool {
    db.client()
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2)",
            &[&schema, &name],
        )
        .unwrap()
        .get(0)
}

/// The versions in a tenant's history table, ascending (empty when it has none).
pub fn history_versions(db: &TestDb, schema: &str) -> Vec<i32> {
    let mut c = db.client();
    let exists: bool = c
        .query_one(
            "SELECT to_regclass(format('%I.refinery_schema_history', $1::text)) IS NOT NULL",
            &[&schema],
        )
        .unwrap()
        .get(0);
    if !exists {
        return Vec::new();
    }
    c.query(
        &format!("SELECT version FROM \"{schema}\".refinery_schema_history ORDER BY version"),
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// A registry row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: i64,
    pub schema_name: String,
    pub schema_provisioned: bool,
    pub migrations_applied: bool,
    pub current_revision: Option<i32>,
    pub status: String,
    pub last_error: Option<String>,
}

/// The registry row of a domain (registry in `public`).
pub fn registry_row(db: &TestDb, domain: &str) -> Row {
    let r = db
        .client()
        .query_one(
            "SELECT id, schema_name, schema_provisioned, migrations_applied, current_revision, status, last_error \
             FROM public.tenants WHERE domain = $1",
            &[&domain],
        )
        .unwrap_or_else(|e| panic!("no registry row for {domain}: {e}"));
    Row {
        id: r.get(0),
        schema_name: r.get(1),
        schema_provisioned: r.get(2),
        migrations_applied: r.get(3),
        current_revision: r.get(4),
        status: r.get(5),
        last_error: r.get(6),
    }
}

/// Asserts that the registry's cached columns for `domain` match the database, and that
/// its status is `status` (with `last_error` set exactly when it is `failed`). Returns it.
pub fn assert_truth(db: &TestDb, domain: &str, status: &str) -> Row {
    let row = registry_row(db, domain);
    let exists = schema_exists(db, &row.schema_name);
    let current = history_versions(db, &row.schema_name).into_iter().max();
    assert_eq!(
        row.schema_provisioned, exists,
        "{domain}: schema_provisioned vs reality: {row:?}"
    );
    assert_eq!(
        row.current_revision, current,
        "{domain}: current_revision vs history table: {row:?}"
    );
    assert_eq!(
        row.migrations_applied,
        current.is_some(),
        "{domain}: migrations_applied vs history table: {row:?}"
    );
    assert_eq!(row.status, status, "{domain}: status: {row:?}");
    assert_eq!(
        row.last_error.is_some(),
        status == "failed",
        "{domain}: last_error should be set exactly when failed: {row:?}"
    );
    row
}

/// Number of registered tenants.
pub fn tenant_count(db: &TestDb) -> i64 {
    db.client()
        .query_one("SELECT count(*) FROM public.tenants", &[])
        .unwrap()
        .get(0)
}

/// Every schema that is not PostgreSQL's own, sorted.
pub fn user_schemas(db: &TestDb) -> Vec<String> {
    db.client()
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' \
             AND nspname <> 'information_schema' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `tenant create DOMAIN --name DOMAIN <extra...> -o json`, expected to succeed.
pub fn create(t: &Tenantctl, domain: &str, extra: &[&str]) -> Created {
    let mut args = vec!["tenant", "create", domain, "--name", domain];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", "json"]);
    t.run(&args).expect(0).json()
}

/// Every table of `schema` but the migration history, with its row count and a hash of
/// its rows in a fixed order: two schemas hold the same data exactly when these are equal.
pub fn table_contents(
    c: &mut postgres::Client,
    schema: &str,
) -> std::collections::BTreeMap<String, (i64, String)> {
    let tables: Vec<String> = c
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') \
             AND c.relname <> 'refinery_schema_history' ORDER BY 1",
            &[&schema],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!tables.is_empty(), "schema {schema} has no tables");
    tables
        .into_iter()
        .map(|table| {
            let r = c
                .query_one(
                    &format!(
                        "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') \
                         FROM \"{schema}\".\"{table}\" t"
                    ),
                    &[],
                )
                .unwrap();
            (table, (r.get(0), r.get(1)))
        })
        .collect()
}

/// Fills a tenant schema built by the example migrations (through V6) with a little of
/// everything: `members` members (the last one deleted again, so the identity is ahead of
/// the highest id), households, a group, events and attendance, funds with donations
/// (whose trigger keeps the funds' totals) and a pastoral note.
pub fn seed_example(c: &mut postgres::Client, schema: &str, members: i64) {
    assert!(members >= 10, "seed at least 10 members");
    c.batch_execute(&format!(
        "BEGIN;
         SET LOCAL search_path = \"{schema}\";
         INSERT INTO households (name, city) VALUES ('The Okafor Family', 'Lagos'), ('The Lee Family', NULL);
         INSERT INTO members (first_name, last_name, email, membership_status, household_id, household_role)
           SELECT 'first' || g, 'last' || g, CASE WHEN g % 2 = 0 THEN 'm' || g || '@example.org' END, 'member',
                  CASE WHEN g % 3 = 0 THEN (SELECT min(id) FROM households) END,
                  CASE WHEN g % 3 = 0 THEN 'head' END
           FROM generate_series(1, {members}) g;
         INSERT INTO small_groups (name, leader_id, meeting_day) VALUES ('Youth', 1, 3);
         INSERT INTO group_memberships (group_id, member_id) SELECT 1, id FROM members WHERE id <= 5;
         INSERT INTO events (title, starts_at) VALUES ('Sunday service', '2024-01-07 10:00+00');
         INSERT INTO attendance (event_id, member_id) VALUES (1, 1), (1, 3);
         INSERT INTO funds (name) VALUES ('general'), ('missions');
         INSERT INTO donations (fund_id, member_id, amount, method)
           SELECT 1 + id % 2, id, 10.25 * id, 'cash' FROM members WHERE id <= 6;
         INSERT INTO pastoral_notes (member_id, author, body, embedding, embedding_model)
           VALUES (1, 'pastor', 'visited in hospital', '{{0.5,1.5}}', 'm1');
         DELETE FROM members WHERE id = {members};
         COMMIT;"
    ))
    .unwrap_or_else(|e| panic!("seeding {schema}: {e}"));
}

/// A registry row exactly as stored, every column, as PostgreSQL prints the row: equal
/// strings mean nothing in the row changed (`updated_at` included).
pub fn stored_row(db: &TestDb, domain: &str) -> String {
    db.client()
        .query_one(
            "SELECT t::text FROM public.tenants t WHERE domain = $1",
            &[&domain],
        )
        .unwrap_or_else(|e| panic!("no registry row for {domain}: {e}"))
        .get(0)
}

/// One entry of the run ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub action: String,
    pub status: String,
    pub from_revision: Option<i32>,
    pub to_revision: Option<i32>,
    pub error: Option<String>,
}

/// A tenant's ledger entries, oldest first.
pub fn ledger(db: &TestDb, domain: &str) -> Vec<LedgerEntry> {
    db.client()
        .query(
            "SELECT action, status, from_revision, to_revision, error FROM public.tenant_events \
             WHERE domain = $1 ORDER BY id",
            &[&domain],
        )
        .unwrap()
        .iter()
        .map(|r| LedgerEntry {
            action: r.get(0),
            status: r.get(1),
            from_revision: r.get(2),
            to_revision: r.get(3),
            error: r.get(4),
        })
        .collect()
}
