//! Realistic SQL lands as psql would run it: the example set (functions, triggers, views,
//! a materialized view, DO blocks, comments with semicolons) is created in the tenant's
//! schema and nowhere else; custom files with dollar-quoted bodies work; migrations see
//! only the tenant schema and `tenants.extra_search_path` on their `search_path`.

use crate::{checks, common_json, support};
use std::collections::BTreeSet;

use checks::{assert_truth, create, history_versions, relation_exists};
use common_json::Created;
use support::{dir_with, ready, TestDb};

/// Every table/view/sequence/index, function and type in a schema, tagged by kind.
fn objects_in(db: &TestDb, schema: &str) -> BTreeSet<String> {
    let rows = db
        .client()
        .query(
            "SELECT 'rel:' || c.relkind::text || ':' || c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 \
             UNION ALL SELECT 'fn:' || p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 \
             UNION ALL SELECT 'type:' || t.typname::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = $1",
            &[&schema],
        )
        .unwrap();
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

fn relkind(db: &TestDb, schema: &str, name: &str) -> Option<String> {
    db.client()
        .query_opt(
            "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &name],
        )
        .unwrap()
        .map(|r| r.get(0))
}

fn function_exists(db: &TestDb, schema: &str, name: &str) -> bool {
    db.client()
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 AND p.proname = $2)",
            &[&schema, &name],
        )
        .unwrap()
        .get(0)
}

#[test]
fn example_migrations_land_in_the_tenant_schema_and_behave() {
    let (db, t) = ready();
    let public_before = objects_in(&db, "public");
    let public_tables: Vec<&String> = public_before
        .iter()
        .filter(|o| o.starts_with("rel:r:"))
        .collect();
    assert_eq!(
        public_tables,
        [
            "rel:r:tenant_events",
            "rel:r:tenant_moves",
            "rel:r:tenant_runs",
            "rel:r:tenant_versions",
            "rel:r:tenant_versions_watch",
            "rel:r:tenantctl_registry_history",
            "rel:r:tenants"
        ],
        "public holds only the registry's own tables and the version index"
    );

    create(&t, "demo-church", &["--migrate"]);
    let s = "tenant_demo_church";
    assert_eq!(
        objects_in(&db, "public"),
        public_before,
        "migrations created objects in public"
    );
    for (name, kind) in [
        ("members", "r"),
        ("households", "r"),
        ("small_groups", "r"),
        ("group_memberships", "r"),
        ("events", "r"),
        ("attendance", "r"),
        ("funds", "r"),
        ("donations", "r"),
        ("pastoral_notes", "r"),
        ("household_directory", "v"),
        ("weekly_attendance", "m"),
        ("weekly_attendance_week_kind_key", "i"),
        ("members_email_lower_key", "i"),
        ("refinery_schema_history", "r"),
    ] {
        assert_eq!(relkind(&db, s, name).as_deref(), Some(kind), "{s}.{name}");
    }
    for f in [
        "set_updated_at",
        "group_member_count",
        "donations_maintain_fund_total",
    ] {
        assert!(function_exists(&db, s, f), "function {s}.{f}");
    }
    let objects = objects_in(&db, s);
    assert!(objects.contains("type:event_kind"), "{objects:?}");

    let mut c = db.client();
    let comment: Option<String> = c
        .query_one(
            "SELECT obj_description(format('%I.small_groups', $1::text)::regclass, 'pg_class')",
            &[&s],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        comment.as_deref(),
        Some("Small groups; bible studies; the pastor's list")
    );
    let triggers: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'tenant_demo_church.donations'::regclass \
             AND tgname = 'donations_maintain_fund_total'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(triggers, 1);

    // The objects work, from a session whose search_path is the tenant's.
    c.batch_execute(
        "SET search_path TO tenant_demo_church;
         INSERT INTO members (first_name, last_name, email) VALUES ('Ada', 'Okafor', 'ada@example.com');
         INSERT INTO funds (name) VALUES ('General'), ('Missions');
         INSERT INTO donations (fund_id, member_id, amount) SELECT f.id, m.id, 10.00 FROM funds f, members m WHERE f.name = 'General';
         INSERT INTO donations (fund_id, amount, method) SELECT id, 5.50, 'cash' FROM funds WHERE name = 'General';
         INSERT INTO donations (fund_id, amount) SELECT id, 7.25 FROM funds WHERE name = 'Missions';",
    )
    .unwrap();
    let totals = |c: &mut postgres::Client| -> Vec<(String, String)> {
        c.query(
            "SELECT name, total_received::text FROM tenant_demo_church.funds ORDER BY name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    assert_eq!(
        totals(&mut c),
        [
            ("General".to_string(), "15.50".to_string()),
            ("Missions".to_string(), "7.25".to_string())
        ]
    );
    c.batch_execute(
        "UPDATE tenant_demo_church.donations SET refunded_at = now() WHERE amount = 5.50;
         DELETE FROM tenant_demo_church.donations WHERE amount = 7.25;",
    )
    .unwrap();
    assert_eq!(
        totals(&mut c),
        [
            ("General".to_string(), "10.00".to_string()),
            ("Missions".to_string(), "0.00".to_string())
        ]
    );
    // A function pinned with SET search_path FROM CURRENT works from any search_path.
    c.batch_execute(
        "SET search_path TO tenant_demo_church;
         INSERT INTO small_groups (name) VALUES ('Youth');
         INSERT INTO group_memberships (group_id, member_id) SELECT g.id, m.id FROM small_groups g, members m;
         INSERT INTO events (title, starts_at) VALUES ('Sunday service', now());
         INSERT INTO attendance (event_id, member_id) SELECT e.id, m.id FROM events e, members m;
         REFRESH MATERIALIZED VIEW weekly_attendance;
         SET search_path TO public;",
    )
    .unwrap();
    let n: i32 = c
        .query_one(
            "SELECT tenant_demo_church.group_member_count(id) FROM tenant_demo_church.small_groups",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let row = c
        .query_one(
            "SELECT check_ins, distinct_people FROM tenant_demo_church.weekly_attendance",
            &[],
        )
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (1, 1));
    let name: String = c
        .query_one(
            "SELECT display_first_name FROM tenant_demo_church.household_directory",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(name, "Ada");
    assert_truth(&db, "demo-church", "active");
}

#[test]
fn custom_migrations_with_do_blocks_dollar_tags_and_semicolon_comments() {
    let (db, t) = ready();
    let dir = dir_with(&[
        (
            "V1__things.sql",
            "-- a comment; with semicolons; and a 'quote\n\
             CREATE TABLE things (id int PRIMARY KEY, label text NOT NULL); -- trailing; comment\n\
             /* block comment; with ; semicolons */\n\
             DO $$\n\
             BEGIN\n\
                 INSERT INTO things VALUES (1, 'from a DO; block');\n\
                 IF NOT EXISTS (SELECT 1 FROM things) THEN\n\
                     RAISE EXCEPTION 'nothing inserted; odd';\n\
                 END IF;\n\
             END\n\
             $$;\n",
        ),
        (
            "V2__functions_and_views.sql",
            "CREATE FUNCTION label_of(p_id int) RETURNS text\n\
             LANGUAGE plpgsql\n\
             SET search_path FROM CURRENT\n\
             AS $body$\n\
             DECLARE\n\
                 result text;\n\
             BEGIN\n\
                 SELECT label INTO result FROM things WHERE id = p_id; -- a ; in a comment\n\
                 RETURN result || ';' || $$nested; dollar$$;\n\
             END;\n\
             $body$;\n\
             \n\
             CREATE VIEW thing_labels AS SELECT id, label_of(id) AS full_label FROM things;\n\
             COMMENT ON VIEW thing_labels IS 'labels; with; semicolons';\n",
        ),
        ("README.md", "not a migration; ignored"),
    ]);
    let t = t.migrations(dir.path());
    let c = create(&t, "custom", &["--migrate"]);
    assert_eq!(c.tenant.current_revision, Some(2));
    let s = "tenant_custom";
    assert_eq!(history_versions(&db, s), [1, 2]);
    assert_eq!(relkind(&db, s, "things").as_deref(), Some("r"));
    assert_eq!(relkind(&db, s, "thing_labels").as_deref(), Some("v"));
    assert!(function_exists(&db, s, "label_of"));
    assert!(!relation_exists(&db, "public", "things"));
    assert!(!function_exists(&db, "public", "label_of"));
    let mut client = db.client();
    let full: String = client
        .query_one(
            "SELECT full_label FROM tenant_custom.thing_labels WHERE id = 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(full, "from a DO; block;nested; dollar");
    let comment: Option<String> = client
        .query_one(
            "SELECT obj_description('tenant_custom.thing_labels'::regclass, 'pg_class')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(comment.as_deref(), Some("labels; with; semicolons"));
}

const SEARCH_PATH_GUARD: &str = "-- fails when public is on the search_path during migrations\n\
DO $$\n\
BEGIN\n\
    IF current_setting('search_path') LIKE '%public%' THEN\n\
        RAISE EXCEPTION 'public on path: %', current_setting('search_path');\n\
    END IF;\n\
    IF current_schema() NOT LIKE 'tenant%' THEN\n\
        RAISE EXCEPTION 'wrong current schema: %', current_schema();\n\
    END IF;\n\
END\n\
$$;\n";

const USES_SHARED: &str = "CREATE TABLE slugs (\n\
    id int PRIMARY KEY,\n\
    slug text NOT NULL DEFAULT slugify('A B')\n\
);\n\
INSERT INTO slugs (id) VALUES (1);\n\
DO $$\n\
BEGIN\n\
    IF slugify('A B') <> 'a-b' THEN\n\
        RAISE EXCEPTION 'unexpected slugify: %', slugify('A B');\n\
    END IF;\n\
END\n\
$$;\n";

#[test]
fn extra_search_path_reaches_shared_schemas_and_public_is_never_on_the_path() {
    let (db, t) = ready();
    // The helper lives in a shared schema; a decoy in public must never be picked up.
    db.client()
        .batch_execute(
            "CREATE SCHEMA shared_ext;
             CREATE FUNCTION shared_ext.slugify(text) RETURNS text LANGUAGE sql IMMUTABLE
                 AS $$ SELECT lower(replace($1, ' ', '-')) $$;
             CREATE FUNCTION public.slugify(text) RETURNS text LANGUAGE sql IMMUTABLE
                 AS $$ SELECT 'from-public'::text $$;",
        )
        .unwrap();
    let migrations = dir_with(&[
        ("V1__search_path_guard.sql", SEARCH_PATH_GUARD),
        ("V2__slugs.sql", USES_SHARED),
    ]);
    let conf = tempfile::tempdir().unwrap();
    let conf_file = conf.path().join("tenants.toml");
    std::fs::write(
        &conf_file,
        format!(
            "[migrations]\ndir = \"{}\"\n\n[tenants]\nextra_search_path = [\"shared_ext\"]\n",
            migrations.path().display()
        ),
    )
    .unwrap();
    let t = t.migrations(migrations.path());
    let conf_arg = conf_file.to_str().unwrap();

    let c: Created = t
        .run(&[
            "-c",
            conf_arg,
            "tenant",
            "create",
            "with-ext",
            "--name",
            "With",
            "--migrate",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    assert_eq!(c.tenant.current_revision, Some(2));
    let slug: String = db
        .client()
        .query_one("SELECT slug FROM tenant_with_ext.slugs WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(slug, "a-b");
    assert!(!relation_exists(&db, "shared_ext", "slugs"));
    assert!(!relation_exists(&db, "public", "slugs"));
    assert_truth(&db, "with-ext", "active");

    // Without the config: the guard (V1) passes, V2 cannot find slugify.
    let run = t.run(&[
        "tenant",
        "create",
        "no-ext",
        "--name",
        "Without",
        "--migrate",
        "-o",
        "json",
    ]);
    run.expect(1);
    let c: Created = run.json();
    assert_eq!(c.tenant.current_revision, Some(1), "{c:?}");
    assert_eq!(c.tenant.status, "failed");
    assert!(c.message.contains("slugify"), "{}", c.message);
    assert!(c.schema_created);
    assert_eq!(c.migration_status.pending_versions(), [2]);
    assert_eq!(history_versions(&db, "tenant_no_ext"), [1]);
    assert!(!relation_exists(&db, "tenant_no_ext", "slugs"));
    let row = assert_truth(&db, "no-ext", "failed");
    assert!(row.last_error.unwrap().contains("slugify"));

    // Adding the config later lets the same tenant continue.
    let r: common_json::RunReport = t
        .run(&[
            "-c", conf_arg, "upgrade", "--tenant", "no-ext", "-o", "json",
        ])
        .expect(0)
        .json();
    assert_eq!(r.of("no-ext").applied, [2]);
    assert_truth(&db, "no-ext", "active");
}

#[test]
fn a_search_path_change_inside_one_migration_does_not_leak_into_the_next() {
    let (db, t) = ready();
    // V1 ends with a session-level SET, as a psql preamble or a copy-pasted snippet might.
    let dir = dir_with(&[
        (
            "V1__preamble.sql",
            "CREATE TABLE first_table (id int);\nSET search_path TO public;\n",
        ),
        ("V2__guard.sql", SEARCH_PATH_GUARD),
        ("V3__second.sql", "CREATE TABLE second_table (id int);\n"),
    ]);
    let t = t.migrations(dir.path());
    let run = t.run(&[
        "tenant",
        "create",
        "leak",
        "--name",
        "Leak",
        "--migrate",
        "-o",
        "json",
    ]);
    let c: Created = run.json();
    // Each migration starts with search_path pinned to the tenant's schema again.
    assert_eq!(
        c.tenant.current_revision,
        Some(3),
        "a later migration ran with V1's search_path: {}",
        c.message
    );
    run.expect(0);
    assert!(relation_exists(&db, "tenant_leak", "first_table"));
    assert!(relation_exists(&db, "tenant_leak", "second_table"));
    assert!(
        !relation_exists(&db, "public", "second_table"),
        "V3 created its table in public"
    );
}
