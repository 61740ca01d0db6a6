//! A tenant's schema is the boundary of what tenantctl changes for it: `tenant drop` and
//! `provision --force-recreate` never remove anything outside the schema (another
//! tenant's view, a foreign key into it, a column typed with one of its types, shared
//! extensions), and `tenant create` never gives a tenant a shared schema, another
//! tenant's schema, or an existing non-empty one without `--adopt`.

use crate::{checks, common_json, support};
use checks::{assert_truth, create, expect_error, relation_exists, schema_exists, tenant_count};
use common_json::*;
use support::{dir_with, ready, Run, Tenantctl, TestDb};

const V1: (&str, &str) = (
    "V1__things.sql",
    "CREATE TABLE things (id int PRIMARY KEY, label text NOT NULL);\n",
);

fn sql(db: &TestDb, batch: &str) {
    db.client()
        .batch_execute(batch)
        .unwrap_or_else(|e| panic!("{batch}: {e}"));
}

fn count(db: &TestDb, query: &str) -> i64 {
    db.client().query_one(query, &[]).unwrap().get(0)
}

fn extension_exists(db: &TestDb, name: &str) -> bool {
    count(
        db,
        &format!("SELECT count(*) FROM pg_extension WHERE extname = '{name}'"),
    ) == 1
}

fn registered(db: &TestDb, domain: &str) -> bool {
    count(
        db,
        &format!("SELECT count(*) FROM public.tenants WHERE domain = '{domain}'"),
    ) == 1
}

fn drop_events(db: &TestDb, domain: &str) -> i64 {
    count(
        db,
        &format!(
            "SELECT count(*) FROM public.tenant_events WHERE domain = '{domain}' AND action LIKE 'drop%'"
        ),
    )
}

/// Two migrated tenants, p1 and p2, each with a `things` table holding one row.
fn two_tenants() -> (TestDb, Tenantctl, tempfile::TempDir) {
    let (db, t) = ready();
    let dir = dir_with(&[V1]);
    let t = t.migrations(dir.path());
    create(&t, "p1", &["--migrate"]);
    create(&t, "p2", &["--migrate"]);
    sql(
        &db,
        "INSERT INTO tenant_p1.things VALUES (1, 'one'); INSERT INTO tenant_p2.things VALUES (2, 'two');",
    );
    (db, t, dir)
}

/// A config file listing `extensions` in `tenants.extra_search_path`.
fn extensions_config() -> (tempfile::TempDir, String) {
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("tenants.toml");
    std::fs::write(&path, "[tenants]\nextra_search_path = [\"extensions\"]\n").unwrap();
    let arg = path.to_str().unwrap().to_string();
    (conf, arg)
}

fn blocking_of(run: &Run) -> Vec<String> {
    let plan: DropPlan = run.json();
    assert!(plan.dry_run);
    plan.blocking
        .iter()
        .map(|d| format!("{} depends on {}", d.object, d.depends_on))
        .collect()
}

#[test]
fn shared_extensions_schema_is_never_given_to_a_tenant_nor_dropped_as_one() {
    let (db, t, _dir) = two_tenants();
    sql(
        &db,
        "CREATE SCHEMA extensions; CREATE EXTENSION citext SCHEMA extensions; CREATE EXTENSION pg_trgm SCHEMA extensions;
         CREATE TABLE tenant_p1.emails (address extensions.citext);
         CREATE INDEX ON tenant_p2.things USING gin (label extensions.gin_trgm_ops);",
    );
    let (_conf, conf) = extensions_config();

    // A schema in extra_search_path is refused (exit 2), with or without --adopt.
    for extra in [&[][..], &["--adopt"][..]] {
        let mut args = vec![
            "-c",
            &conf,
            "tenant",
            "create",
            "shared-ext",
            "--name",
            "x",
            "--schema",
            "extensions",
            "--provision",
        ];
        args.extend_from_slice(extra);
        expect_error(
            &t.run(&args),
            2,
            &["extensions", "extra_search_path", "Nothing was registered"],
        );
    }
    assert!(!registered(&db, "shared-ext"));
    assert_eq!(tenant_count(&db), 2);

    // A row registered for it by other means (an older tenantctl, a hand-written INSERT)
    // is never dropped with its schema: refused as shared with the config...
    sql(
        &db,
        "INSERT INTO public.tenants (tenant_name, domain, schema_name, api_key_hash, api_key_prefix)
         VALUES ('x', 'shared-ext', 'extensions', repeat('a', 64), 'tk_aaaaaaa')",
    );
    expect_error(
        &t.run(&["-c", &conf, "tenant", "drop", "shared-ext", "--yes"]),
        1,
        &["extra_search_path", "--keep-schema"],
    );
    // ...and, without it, refused because the tenants' columns and indexes use its types.
    let run = t.run(&["tenant", "drop", "shared-ext", "--yes"]);
    expect_error(
        &run,
        1,
        &[
            "column address of table tenant_p1.emails depends on type extensions.citext",
            "depends on operator class extensions.gin_trgm_ops",
            "Nothing was changed",
        ],
    );
    let run = t.run(&["tenant", "drop", "shared-ext", "--dry-run", "-o", "json"]);
    run.expect(1);
    assert_eq!(blocking_of(&run).len(), 2, "{}", run.stdout);
    assert!(registered(&db, "shared-ext"));
    assert!(extension_exists(&db, "citext") && extension_exists(&db, "pg_trgm"));
    assert!(relation_exists(&db, "tenant_p1", "emails"));
    assert_eq!(drop_events(&db, "shared-ext"), 0);
    // Only the registry row can go.
    let d: Dropped = t
        .run(&[
            "tenant",
            "drop",
            "shared-ext",
            "--keep-schema",
            "--yes",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    assert!(!d.schema_dropped);
    assert!(schema_exists(&db, "extensions") && extension_exists(&db, "citext"));
    assert_truth(&db, "p1", "active");
    assert_truth(&db, "p2", "active");
}

#[test]
fn the_registry_schema_and_another_tenants_schema_are_refused_with_exit_2() {
    let (db, t, _dir) = two_tenants();
    // public is the registry schema here.
    expect_error(
        &t.run(&[
            "tenant",
            "create",
            "reg",
            "--name",
            "R",
            "--schema",
            "public",
            "--provision",
        ]),
        2,
        &["public"],
    );
    for extra in [&[][..], &["--adopt"][..]] {
        let mut args = vec![
            "tenant",
            "create",
            "thief",
            "--name",
            "T",
            "--schema",
            "tenant_p1",
            "--migrate",
        ];
        args.extend_from_slice(extra);
        expect_error(
            &t.run(&args),
            2,
            &[
                "tenant_p1",
                "already belongs to tenant p1",
                "Nothing was registered",
            ],
        );
    }
    assert_eq!(tenant_count(&db), 2);
    assert!(!registered(&db, "thief") && !registered(&db, "reg"));
    assert_eq!(
        count(&db, "SELECT count(*) FROM tenant_p1.things WHERE id = 1"),
        1
    );
    // A duplicate domain stays exit 1.
    expect_error(
        &t.run(&["tenant", "create", "p1", "--name", "Again"]),
        1,
        &["p1", "already exists"],
    );
    assert_truth(&db, "p1", "active");
}

#[test]
fn a_view_in_another_tenant_blocks_dropping_the_tenant_it_reads_and_nothing_changes() {
    let (db, t, _dir) = two_tenants();
    sql(
        &db,
        "CREATE VIEW tenant_p2.v AS SELECT id, label FROM tenant_p1.things",
    );
    let run = t.run(&["tenant", "drop", "p1", "--yes"]);
    expect_error(
        &run,
        1,
        &[
            "view tenant_p2.v depends on table tenant_p1.things",
            "Nothing was changed",
            "tenantctl tenant drop p1 --keep-schema",
        ],
    );
    let run = t.run(&["tenant", "drop", "p1", "--yes", "-o", "json"]);
    expect_error(&run, 1, &["view tenant_p2.v"]);
    assert!(schema_exists(&db, "tenant_p1") && schema_exists(&db, "tenant_p2"));
    assert!(relation_exists(&db, "tenant_p2", "v"));
    assert_eq!(count(&db, "SELECT count(*) FROM tenant_p2.v"), 1);
    assert_truth(&db, "p1", "active");
    assert_truth(&db, "p2", "active");
    assert_eq!(drop_events(&db, "p1"), 0);

    // The dry run lists what blocks it and changes nothing, in JSON and text.
    let run = t.run(&["tenant", "drop", "p1", "--dry-run", "-o", "json"]);
    run.expect(1);
    let plan: DropPlan = run.json();
    assert!(plan.dry_run && plan.schema_exists && !plan.would_drop_schema);
    assert!(plan.objects >= 1, "{plan:?}");
    assert_eq!(plan.schema_name, "tenant_p1");
    assert_eq!(
        blocking_of(&run),
        ["view tenant_p2.v depends on table tenant_p1.things"]
    );
    assert!(plan.error.unwrap().contains("view tenant_p2.v"));
    let run = t.run(&["tenant", "drop", "p1", "--dry-run"]);
    run.expect(1);
    assert!(
        run.stdout
            .contains("view tenant_p2.v depends on table tenant_p1.things"),
        "{}",
        run.stdout
    );
    // With --keep-schema nothing outside is touched, so nothing blocks.
    let plan: DropPlan = t
        .run(&[
            "tenant",
            "drop",
            "p1",
            "--keep-schema",
            "--dry-run",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    assert!(plan.blocking.is_empty() && !plan.would_drop_schema);
    assert!(registered(&db, "p1") && relation_exists(&db, "tenant_p1", "things"));
    assert_truth(&db, "p1", "active");

    // Once the view is gone, the dry run says it would go ahead, and the drop does.
    sql(&db, "DROP VIEW tenant_p2.v");
    let plan: DropPlan = t
        .run(&["tenant", "drop", "p1", "--dry-run", "-o", "json"])
        .expect(0)
        .json();
    assert!(plan.would_drop_schema && plan.blocking.is_empty() && plan.error.is_none());
    assert!(schema_exists(&db, "tenant_p1"));
    let d: Dropped = t
        .run(&["tenant", "drop", "p1", "--yes", "-o", "json"])
        .expect(0)
        .json();
    assert!(d.schema_dropped);
    assert!(!schema_exists(&db, "tenant_p1"));
    assert_eq!(count(&db, "SELECT count(*) FROM tenant_p2.things"), 1);
    assert_truth(&db, "p2", "active");
}

#[test]
fn foreign_keys_typed_columns_functions_and_extensions_elsewhere_block_the_drop() {
    let (db, t, _dir) = two_tenants();
    sql(
        &db,
        "CREATE TABLE tenant_p2.child (thing int REFERENCES tenant_p1.things (id));
         CREATE TYPE tenant_p1.mood AS ENUM ('calm', 'busy');
         CREATE TABLE tenant_p2.feelings (m tenant_p1.mood);
         CREATE FUNCTION tenant_p2.rate(m tenant_p1.mood) RETURNS int LANGUAGE sql AS 'SELECT 1';
         CREATE EXTENSION hstore SCHEMA tenant_p1;
         CREATE TABLE tenant_p2.bag (h tenant_p1.hstore);",
    );
    let run = t.run(&["tenant", "drop", "p1", "--dry-run", "-o", "json"]);
    run.expect(1);
    let blocking = blocking_of(&run);
    for expected in [
        "column h of table tenant_p2.bag depends on type tenant_p1.hstore",
        "column m of table tenant_p2.feelings depends on type tenant_p1.mood",
        "constraint child_thing_fkey on table tenant_p2.child depends on table tenant_p1.things",
        "function tenant_p2.rate(tenant_p1.mood) depends on type tenant_p1.mood",
    ] {
        assert!(
            blocking.iter().any(|b| b == expected),
            "{expected:?} not in {blocking:#?}"
        );
    }
    assert_eq!(blocking.len(), 4, "{blocking:#?}");
    expect_error(
        &t.run(&["tenant", "drop", "p1", "--yes"]),
        1,
        &[
            "4 objects outside it depend",
            "constraint child_thing_fkey on table tenant_p2.child",
            "column m of table tenant_p2.feelings",
        ],
    );
    assert!(extension_exists(&db, "hstore"));
    assert!(relation_exists(&db, "tenant_p2", "child") && relation_exists(&db, "tenant_p2", "bag"));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pg_constraint WHERE conname = 'child_thing_fkey'"
        ),
        1
    );
    assert_truth(&db, "p1", "active");

    // Dropping p2, which depends on p1 (and owns the foreign key), takes nothing of p1.
    let d: Dropped = t
        .run(&["tenant", "drop", "p2", "--yes", "-o", "json"])
        .expect(0)
        .json();
    assert!(d.schema_dropped && !schema_exists(&db, "tenant_p2"));
    assert_eq!(
        count(&db, "SELECT count(*) FROM tenant_p1.things WHERE id = 1"),
        1
    );
    assert!(extension_exists(&db, "hstore"));
    assert_truth(&db, "p1", "active");
    // Now nothing outside depends on p1, and its own extension goes with it.
    t.run(&["tenant", "drop", "p1", "--yes"]).expect(0);
    assert!(!schema_exists(&db, "tenant_p1") && !extension_exists(&db, "hstore"));
}

#[test]
fn force_recreate_is_refused_the_same_way_and_its_dry_run_says_so() {
    let (db, t, _dir) = two_tenants();
    sql(
        &db,
        "CREATE VIEW tenant_p2.v AS SELECT id FROM tenant_p1.things",
    );
    let run = t.run(&[
        "provision",
        "--tenant",
        "p1",
        "--force-recreate",
        "--dry-run",
        "-o",
        "json",
    ]);
    run.expect(1);
    let d: DryRun = run.json();
    let error = d.tenants[0].error.as_deref().unwrap();
    assert!(
        error.contains("view tenant_p2.v depends on table tenant_p1.things"),
        "{error}"
    );
    assert!(!d.tenants[0].sql.contains("DROP SCHEMA"));

    let run = t.run(&[
        "provision",
        "--tenant",
        "p1",
        "--force-recreate",
        "--yes",
        "-o",
        "json",
    ]);
    run.expect(1);
    let r: RunReport = run.json();
    let x = r.of("p1");
    assert_eq!(x.status, "failed");
    let error = x.error.as_deref().unwrap();
    assert!(
        error.contains("view tenant_p2.v depends on table tenant_p1.things")
            && error.contains("Nothing was changed"),
        "{error}"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM tenant_p1.things WHERE id = 1"),
        1
    );
    assert!(relation_exists(&db, "tenant_p2", "v"));
    assert_eq!(count(&db, "SELECT count(*) FROM tenant_p2.v"), 1);
    // Refused before anything changed: the registry row stays active (an application's
    // key lookup keeps finding the tenant) and the ledger records the refusal.
    let row = assert_truth(&db, "p1", "active");
    assert_eq!(row.current_revision, Some(1));
    assert_eq!(row.last_error, None);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM public.tenant_events WHERE domain = 'p1' AND action = 'recreate'"
        ),
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM public.tenant_events WHERE domain = 'p1' AND action = 'recreate' \
             AND status = 'refused' AND error LIKE '%view tenant_p2.v depends on table tenant_p1.things%'"
        ),
        1
    );
    assert_truth(&db, "p2", "active");

    // Without the view the recreate goes ahead.
    sql(&db, "DROP VIEW tenant_p2.v");
    t.run(&["provision", "--tenant", "p1", "--force-recreate", "--yes"])
        .expect(0);
    assert!(schema_exists(&db, "tenant_p1") && !relation_exists(&db, "tenant_p1", "things"));
    assert_truth(&db, "p1", "active");
    assert_eq!(count(&db, "SELECT count(*) FROM tenant_p2.things"), 1);
}

#[test]
fn an_existing_schema_is_taken_when_empty_and_adopted_only_with_adopt_when_not() {
    let (db, t) = ready();
    sql(
        &db,
        "CREATE SCHEMA legacy; CREATE TABLE legacy.members (id int); INSERT INTO legacy.members VALUES (7);
         CREATE SCHEMA hollow;",
    );
    let run = t.run(&[
        "tenant",
        "create",
        "old",
        "--name",
        "Old",
        "--schema",
        "legacy",
        "--provision",
    ]);
    expect_error(
        &run,
        2,
        &[
            "legacy",
            "already exists",
            "--adopt",
            "Nothing was registered",
        ],
    );
    assert_eq!(tenant_count(&db), 0);

    let c = create(&t, "old", &["--schema", "legacy", "--provision", "--adopt"]);
    assert!(c.schema_adopted && !c.schema_created, "{c:?}");
    assert!(c.message.contains("adopted"), "{}", c.message);
    assert!(c.tenant.schema_provisioned);
    assert_eq!(count(&db, "SELECT count(*) FROM legacy.members"), 1);
    assert_truth(&db, "old", "active");

    // An empty schema is taken without --adopt, and said so.
    let c = create(&t, "empty", &["--schema", "hollow"]);
    assert!(c.schema_adopted && !c.schema_created, "{c:?}");
    assert!(
        c.message.contains("already existed, empty"),
        "{}",
        c.message
    );
    // Registered without --provision, it is recorded as provisioned: it exists.
    assert!(c.tenant.schema_provisioned, "{c:?}");
    assert_truth(&db, "empty", "pending");
    // In text too.
    sql(
        &db,
        "CREATE SCHEMA legacy2; CREATE TABLE legacy2.a (id int); CREATE TABLE legacy2.b (id int);",
    );
    let run = t.run(&[
        "tenant", "create", "text", "--name", "T", "--schema", "legacy2", "--adopt",
    ]);
    run.expect(0);
    assert!(
        run.stdout
            .contains("schema \"legacy2\" adopted (it already held 2 objects)"),
        "{}",
        run.stdout
    );
    // A new schema is neither.
    let c = create(&t, "fresh", &["--provision"]);
    assert!(c.schema_created && !c.schema_adopted, "{c:?}");
}

#[test]
fn dropping_a_never_provisioned_tenant_reports_that_no_schema_was_dropped() {
    let (db, t) = ready();
    create(&t, "never", &[]);
    create(&t, "kept", &["--provision"]);
    let plan: DropPlan = t
        .run(&["tenant", "drop", "never", "--dry-run", "-o", "json"])
        .expect(0)
        .json();
    assert!(!plan.schema_exists && !plan.would_drop_schema && plan.objects == 0);
    assert!(registered(&db, "never"));
    let d: Dropped = t
        .run(&["tenant", "drop", "never", "--yes", "-o", "json"])
        .expect(0)
        .json();
    assert!(!d.schema_dropped, "{d:?}");
    assert!(d.message.contains("did not exist"), "{}", d.message);
    assert!(!registered(&db, "never"));

    let d: Dropped = t
        .run(&[
            "tenant",
            "drop",
            "kept",
            "--keep-schema",
            "--yes",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    assert!(!d.schema_dropped);
    assert!(schema_exists(&db, "tenant_kept"));
}

#[test]
fn a_schema_holding_another_registry_is_never_dropped_as_a_tenants() {
    let (db, t, _dir) = two_tenants();
    // A second configuration keeps its registry in p1's schema.
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("tenants.toml");
    std::fs::write(&path, "[registry]\nschema = \"tenant_p1\"\n").unwrap();
    let other = path.to_str().unwrap();
    t.run(&["-c", other, "init"]).expect(0);
    t.run(&["-c", other, "tenant", "create", "elsewhere", "--name", "E"])
        .expect(0);

    let plan = t.run(&["tenant", "drop", "p1", "--dry-run", "-o", "json"]);
    plan.expect(1);
    let blocking = blocking_of(&plan);
    assert!(
        blocking.iter().any(|b| b.contains("tenantctl registry")),
        "{blocking:?}"
    );
    let run = t.run(&["tenant", "drop", "p1", "--yes"]);
    expect_error(&run, 1, &["tenantctl registry", "Nothing was changed"]);
    let run = t.run(&["provision", "--tenant", "p1", "--force-recreate", "--yes"]);
    run.expect(1);
    assert!(run.stdout.contains("tenantctl registry"), "{}", run.stdout);
    assert!(registered(&db, "p1"));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM tenant_p1.tenants WHERE domain = 'elsewhere'"
        ),
        1
    );
    t.run(&["-c", other, "tenant", "list"]).expect(0);
}

#[test]
fn a_reference_that_is_one_tenants_domain_and_anothers_schema_means_the_domain() {
    let (db, t) = ready();
    create(&t, "alpha", &["--schema", "beta", "--provision"]);
    create(&t, "beta", &["--provision"]);
    let run = t.run(&["tenant", "show", "beta", "-o", "json"]);
    run.expect(0);
    let shown: serde_json::Value = run.json();
    assert_eq!(shown["tenant"]["domain"], "beta", "{}", run.stdout);
    t.run(&["tenant", "drop", "beta", "--yes"]).expect(0);
    assert!(registered(&db, "alpha") && !registered(&db, "beta"));
    assert!(schema_exists(&db, "beta"));
    // The schema name still reaches alpha once no domain is spelled that way.
    let run = t.run(&["tenant", "show", "beta", "-o", "json"]);
    run.expect(0);
    let shown: serde_json::Value = run.json();
    assert_eq!(shown["tenant"]["domain"], "alpha", "{}", run.stdout);
}
