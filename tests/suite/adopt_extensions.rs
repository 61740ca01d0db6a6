//! `tenantctl adopt alembic` where the tenants reach outside their schemas, and where the
//! shared schema has an Alembic history of its own.
//!
//! The fleet of tests/fixtures/alembic-uuid is built with real Alembic, per tenant schema,
//! the way such a service does it: the extension uuid-ossp installed once in `public`,
//! env.py's search_path `SCHEMA, public`, and a revision that turns integer ids into UUIDs
//! made by `uuid_generate_v4()`. It is taken over following the README's runbook step by
//! step; each tenant tenantctl brings to head must then equal the tenant Alembic itself
//! brought to head. The shared schema's own `alembic_version` is adopted through the map
//! file's `[shared]` table, with the fleet of tests/fixtures/alembic-original.
//!
//! Alembic lives in the virtualenv scripts/install-test-deps creates (see
//! adopt_alembic.rs); these tests fail (never skip) when it is missing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::adopt_alembic::{
    adopt, alembic_to_sql, alembic_upgrade, alembic_upgrade_in, build_registry, map_file,
    migrations_from_alembic, of_schema, original, repo, snapshot, Original, R1, R2, R3,
};
use crate::checks::{expect_error, history_versions};
use crate::common_json::{Adoption, SharedStatuses};
use crate::support::{tenantctl, Tenantctl, TestDb};

/// The revisions of tests/fixtures/alembic-uuid, oldest first; the third makes the UUIDs.
const U: [&str; 5] = [
    "5b0c3e1a7d21",
    "7e4d2a9f0c13",
    "a3f81c6b5e20",
    "c9d27e4b8f35",
    "e1b64f0a2c97",
];

/// The line the runbook adds to the config.
const SEARCH_PATH_LINE: &str = "extra_search_path = [\"public\"]";

fn project() -> PathBuf {
    repo().join("tests/fixtures/alembic-uuid")
}

/// The extension, installed once for the database in `public`, as the service's operators
/// did before its first tenant.
fn install_uuid_ossp(db: &TestDb) {
    db.client()
        .batch_execute("CREATE EXTENSION \"uuid-ossp\" SCHEMA public")
        .unwrap_or_else(|e| panic!("cannot install uuid-ossp (PostgreSQL's contrib): {e}"));
}

/// A tenant provisioned by the service: its schema made by the first revision, two users
/// and their items inserted, then upgraded to `rev` by Alembic.
fn provision(db: &TestDb, schema: &str, rev: &str) {
    alembic_upgrade_in(&project(), db, schema, U[0]);
    db.client()
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".\"user\" (email, full_name, is_active, is_superuser, hashed_password) \
             VALUES ('ada@example.org', 'Ada Lovelace', true, false, 'h1'), \
                    ('grace@example.org', NULL, true, true, 'h2'); \
             INSERT INTO \"{schema}\".item (title, description, owner_id) \
             SELECT 'notebook', 'of ' || email, id FROM \"{schema}\".\"user\"; \
             INSERT INTO \"{schema}\".item (title, owner_id) \
             SELECT 'compiler', id FROM \"{schema}\".\"user\" WHERE email LIKE 'grace%'"
        ))
        .unwrap();
    if rev != U[0] {
        alembic_upgrade_in(&project(), db, schema, rev);
    }
}

/// A config directory whose tenants.toml holds `text`.
fn config_dir(text: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("tenants.toml"), text).unwrap();
    d
}

/// A tenant schema's structure and rows, with the schema's name written `S` and the
/// tables of the migration tools (alembic_version, refinery_schema_history) left out.
/// The UUIDs Alembic and tenantctl make differ, so rows are compared through what they
/// mean: each user without its id, each item with its owner's email; and the ids are
/// checked to be distinct version-4 UUIDs.
fn structure_and_rows(db: &TestDb, schema: &str) -> BTreeMap<String, Vec<String>> {
    let mut c = db.client();
    let tools = "('alembic_version', 'refinery_schema_history')";
    let mut out = BTreeMap::new();
    for (what, sql) in [
        (
            "relations",
            format!(
                "SELECT concat_ws(' ', relname, relkind) FROM pg_class \
                 WHERE relnamespace = $1::text::regnamespace AND relkind <> 'i' \
                   AND relname NOT IN {tools} AND relname NOT LIKE 'alembic\\_version\\_%' \
                   AND relname NOT LIKE 'refinery\\_schema\\_history\\_%'"
            ),
        ),
        (
            "columns",
            format!(
                "SELECT concat_ws(' ', table_name, ordinal_position, column_name, data_type, \
                        character_maximum_length, is_nullable, column_default, is_identity, \
                        datetime_precision) \
                 FROM information_schema.columns WHERE table_schema::text = $1::text AND table_name NOT IN {tools}"
            ),
        ),
        (
            "constraints",
            format!(
                "SELECT concat_ws(' ', r.relname, c.conname, c.contype, pg_get_constraintdef(c.oid)) \
                 FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid \
                 WHERE c.connamespace = $1::text::regnamespace AND r.relname NOT IN {tools}"
            ),
        ),
        (
            "indexes",
            format!(
                "SELECT concat_ws(' ', indexname, indexdef) FROM pg_indexes \
                 WHERE schemaname::text = $1::text AND tablename NOT IN {tools}"
            ),
        ),
        (
            "users",
            format!(
                "SELECT concat_ws(' ', email, full_name, is_active, is_superuser, hashed_password, \
                        created_at) FROM \"{schema}\".\"user\""
            ),
        ),
        (
            "items",
            format!(
                "SELECT concat_ws(' ', i.title, i.description, u.email, i.created_at) \
                 FROM \"{schema}\".item i JOIN \"{schema}\".\"user\" u ON u.id = i.owner_id"
            ),
        ),
        (
            "ids",
            format!(
                "SELECT concat_ws(' ', count(*), count(DISTINCT id), \
                        count(*) FILTER (WHERE id::text ~ '^[0-9a-f]{{8}}-[0-9a-f]{{4}}-4')) \
                 FROM (SELECT id FROM \"{schema}\".\"user\" UNION ALL SELECT id FROM \"{schema}\".item) x"
            ),
        ),
    ] {
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
            if sql.contains("$1") { vec![&schema] } else { vec![] };
        let mut rows: Vec<String> = c
            .query(&format!("SELECT x FROM ({sql}) s(x)"), &params)
            .unwrap_or_else(|e| panic!("reading the {what} of {schema}: {e}"))
            .iter()
            .map(|r| r.get::<_, String>(0).replace(schema, "S"))
            .collect();
        rows.sort();
        out.insert(what.to_string(), rows);
    }
    out
}

/// The tenants of the fleet, and the revision Alembic brought each to.
fn fleet() -> Vec<(Original, &'static str)> {
    vec![
        (original("at-first", "tenant_at_first"), U[0]),
        (original("at-lengths", "tenant_at_lengths"), U[1]),
        (original("at-uuids", "tenant_at_uuids"), U[2]),
        (original("at-cascade", "tenant_at_cascade"), U[3]),
        (original("at-head", "tenant_at_head"), U[4]),
    ]
}

/// The runbook, as the README writes it, on a fleet built by Alembic at every revision:
/// alembic-to-sql (which warns about the tenant migration's CREATE EXTENSION), the dry run
/// (which names `public` and the config line), the line added, the adoption, `upgrade
/// --all` and `check`. Every tenant then equals the one Alembic brought to head, in
/// structure and rows, and so does a tenant created afterwards (in structure).
#[test]
fn a_fleet_using_an_extension_in_public_is_taken_over_by_the_runbook_and_matches_alembic() {
    let db = TestDb::new();
    install_uuid_ossp(&db);
    let tenants = fleet();
    build_registry(&db, &tenants.iter().map(|(t, _)| t).collect::<Vec<_>>());
    for (t, rev) in &tenants {
        provision(&db, t.schema, rev);
    }
    let alembic_head = structure_and_rows(&db, "tenant_at_head");
    assert_eq!(
        alembic_head["ids"],
        vec!["5 5 5".to_string()],
        "{alembic_head:?}"
    );

    // 1. The SQL files, and the warning about the extension.
    let migrations = tempfile::tempdir().unwrap();
    let (map_text, stderr) = alembic_to_sql(&project(), migrations.path(), &[]);
    let expected_map: String = U
        .iter()
        .enumerate()
        .map(|(i, r)| format!("\"{r}\" = {}\n", i + 1))
        .collect();
    assert_eq!(map_text, expected_map);
    assert!(
        stderr.contains("warning:")
            && stderr.contains("V3__uuid_ids_for_users_and_items.sql")
            && stderr.contains("CREATE EXTENSION")
            && stderr.contains("extra_search_path"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("warning:").count(),
        1,
        "only the revision that creates the extension is warned about: {stderr}"
    );
    let (_m, map) = map_file(&map_text);
    let config = config_dir("");
    let t = tenantctl(&db)
        .migrations(migrations.path())
        .cwd(config.path());

    // 2. The dry run names public, what the tenants use there, and the line to add.
    let before = snapshot(&db);
    let dry: Adoption = adopt(&t, &map, &["--dry-run"]).expect(0).json();
    assert_eq!(snapshot(&db), before, "the dry run changed the database");
    assert_eq!(dry.stamped.len(), 5);
    assert_eq!(dry.depends_on_schemas.len(), 1, "{dry:?}");
    let public = &dry.depends_on_schemas[0];
    assert_eq!(
        (public.schema.as_str(), public.configured),
        ("public", false)
    );
    let f = public
        .objects
        .iter()
        .find(|o| o.object == "function public.uuid_generate_v4()")
        .unwrap_or_else(|| panic!("uuid_generate_v4 is not named: {public:?}"));
    assert_eq!(f.extension.as_deref(), Some("uuid-ossp"));
    // The migration file that calls it, and the column defaults of the tenants past it.
    assert!(
        f.used_by
            .iter()
            .any(|u| u == "V3__uuid_ids_for_users_and_items.sql"),
        "{f:?}"
    );
    assert!(
        f.used_by
            .iter()
            .any(|u| u.starts_with("default value for column id of table tenant_at_")),
        "{f:?}"
    );
    // 3 tenants past the revision, 2 tables each, and the file.
    assert_eq!(f.uses, 7, "{f:?}");
    assert_eq!(dry.extra_search_path, Some(vec!["public".to_string()]));
    assert!(dry.message.contains(SEARCH_PATH_LINE), "{}", dry.message);
    // In text, the line is shown as it goes in the file.
    let text = t.run(&[
        "adopt",
        "alembic",
        "--map",
        map.to_str().unwrap(),
        "--dry-run",
    ]);
    text.expect(0);
    assert!(
        text.stderr
            .contains(&format!("[tenants]\n{SEARCH_PATH_LINE}")),
        "{}",
        text.stderr
    );
    assert!(text.stderr.contains("uuid-ossp"), "{}", text.stderr);

    // 3. The line added; the dry run now finds it configured.
    std::fs::write(
        config.path().join("tenants.toml"),
        format!("[tenants]\n{SEARCH_PATH_LINE}\n"),
    )
    .unwrap();
    let dry: Adoption = adopt(&t, &map, &["--dry-run"]).expect(0).json();
    assert!(dry.depends_on_schemas[0].configured, "{dry:?}");
    assert_eq!(dry.extra_search_path, None);
    assert!(
        !dry.message.contains("extra_search_path"),
        "{}",
        dry.message
    );

    // 4. Adopt, upgrade, check.
    let done: Adoption = adopt(&t, &map, &[]).expect(0).json();
    let stamped: Vec<(String, Option<i32>)> = done
        .stamped
        .iter()
        .map(|f| (f.schema_name.clone(), f.version))
        .collect();
    let expected: Vec<(String, Option<i32>)> = tenants
        .iter()
        .enumerate()
        .map(|(i, (t, _))| (t.schema.to_string(), Some(i as i32 + 1)))
        .collect();
    assert_eq!(stamped, expected);
    t.run(&["upgrade", "--all"]).expect(0);
    t.run(&["check"]).expect(0);

    // Every tenant now equals the one Alembic brought to head.
    for (tenant, _) in &tenants {
        assert_eq!(history_versions(&db, tenant.schema), vec![1, 2, 3, 4, 5]);
        assert_eq!(
            structure_and_rows(&db, tenant.schema),
            alembic_head,
            "{} differs from the tenant Alembic brought to head",
            tenant.schema
        );
    }
    // A tenant created now gets the same structure (and no rows).
    t.run(&[
        "tenant",
        "create",
        "newcomer",
        "--name",
        "Newcomer",
        "--migrate",
    ])
    .expect(0);
    let new = structure_and_rows(&db, "tenant_newcomer");
    for part in ["relations", "columns", "constraints", "indexes"] {
        assert_eq!(new[part], alembic_head[part], "{part}");
    }
    assert_eq!(new["ids"], vec!["0 0 0".to_string()]);
}

/// Without the config line, a tenant behind the revision that uses the extension fails
/// there (the migrations after it never run), and so does a new tenant; with it, both
/// succeed. The adoption's own report already names the schema.
#[test]
fn without_extra_search_path_a_tenant_behind_the_uuid_revision_and_a_new_tenant_fail() {
    let db = TestDb::new();
    install_uuid_ossp(&db);
    let behind = original("behind", "tenant_behind");
    build_registry(&db, &[&behind]);
    provision(&db, behind.schema, U[1]);
    let migrations = tempfile::tempdir().unwrap();
    let (map_text, _) = alembic_to_sql(&project(), migrations.path(), &[]);
    let (_m, map) = map_file(&map_text);
    let config = config_dir("");
    let t = tenantctl(&db)
        .migrations(migrations.path())
        .cwd(config.path());
    // No tenant has the dependency in its catalog yet: the migration file names it.
    let report: Adoption = adopt(&t, &map, &[]).expect(0).json();
    assert_eq!(report.depends_on_schemas.len(), 1, "{report:?}");
    assert_eq!(
        report.depends_on_schemas[0].objects[0].used_by,
        vec!["V3__uuid_ids_for_users_and_items.sql".to_string()]
    );
    assert_eq!(report.extra_search_path, Some(vec!["public".to_string()]));
    assert_eq!(history_versions(&db, behind.schema), vec![1, 2]);

    let run = t.run(&["upgrade", "--tenant", behind.domain]);
    run.expect(1);
    assert!(
        run.stderr.contains("uuid_generate_v4") && run.stderr.contains("does not exist"),
        "{}",
        run.stderr
    );
    assert_eq!(history_versions(&db, behind.schema), vec![1, 2]);
    let created = t.run(&[
        "tenant",
        "create",
        "newcomer",
        "--name",
        "Newcomer",
        "--migrate",
    ]);
    created.expect(1);
    assert!(
        created.stdout.contains("uuid_generate_v4"),
        "{}{}",
        created.stdout,
        created.stderr
    );
    assert_eq!(history_versions(&db, "tenant_newcomer"), vec![1, 2]);

    std::fs::write(
        config.path().join("tenants.toml"),
        format!("[tenants]\n{SEARCH_PATH_LINE}\n"),
    )
    .unwrap();
    t.run(&["upgrade", "--all"]).expect(0);
    assert_eq!(history_versions(&db, behind.schema), vec![1, 2, 3, 4, 5]);
    assert_eq!(
        history_versions(&db, "tenant_newcomer"),
        vec![1, 2, 3, 4, 5]
    );
    t.run(&["check"]).expect(0);
}

/// `status --shared` as JSON: (current revision, pending) of the default server.
fn shared_status(t: &Tenantctl) -> (Option<i32>, Vec<i32>) {
    let s: SharedStatuses = t
        .run(&["status", "--shared", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(s.shared.len(), 1, "{s:?}");
    (
        s.shared[0].current_revision,
        s.shared[0].pending_migrations.clone(),
    )
}

fn shared_history_exists(db: &TestDb) -> bool {
    db.client()
        .query_one(
            "SELECT to_regclass('public.tenantctl_shared_history') IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0)
}

/// The shared schema's own Alembic history (here the fixture project run in `public`) is
/// mapped by the map file's `[shared]` table and stamped as `stamp --shared` does. A
/// `[shared]` table without a shared schema exits 3 and changes nothing; a shared revision
/// the table does not map is left alone (exit 4) while the tenants are adopted.
#[test]
fn the_shared_schemas_alembic_history_is_adopted_through_the_maps_shared_table() {
    let db = TestDb::new();
    let a = original("first-church", "tenant_first_church");
    let b = original("grace-chapel", "tenant_grace_chapel");
    build_registry(&db, &[&a, &b]);
    alembic_upgrade(&db, a.schema, R1);
    alembic_upgrade(&db, b.schema, R2);
    // The service's shared tables, with their own alembic_version in public.
    alembic_upgrade(&db, "public", R2);
    let (tenant_migrations, tenant_map) = migrations_from_alembic();
    // The runbook: the shared project's files in migrations/shared, its map under [shared].
    let (shared_map, _) = alembic_to_sql(
        &crate::adopt_alembic::fixture(),
        &tenant_migrations.path().join("shared"),
        &["--shared"],
    );
    assert_eq!(
        shared_map,
        format!("\"{R1}\" = 1\n\"{R2}\" = 2\n\"{R3}\" = 3\n")
    );
    let (_m, map) = map_file(&format!("{tenant_map}\n[shared]\n{shared_map}"));

    // A [shared] table without a shared schema: exit 3, nothing changed.
    let no_shared = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(tenant_migrations.path()).unwrap() {
        let f = f.unwrap();
        if f.file_type().unwrap().is_file() {
            std::fs::copy(f.path(), no_shared.path().join(f.file_name())).unwrap();
        }
    }
    let t = tenantctl(&db).migrations(no_shared.path());
    let before = snapshot(&db);
    for extra in [&[][..], &["--dry-run"][..]] {
        let run = adopt(&t, &map, extra);
        expect_error(
            &run,
            3,
            &[
                "has a [shared] table",
                "no shared schema",
                "nothing was changed",
            ],
        );
        assert_eq!(snapshot(&db), before, "{extra:?} changed the database");
    }
    // A [shared] version the shared directory lacks: exit 3 too.
    let t = tenantctl(&db).migrations(tenant_migrations.path());
    let (_b, bad) = map_file(&format!("{tenant_map}\n[shared]\n\"{R2}\" = 7\n"));
    expect_error(
        &adopt(&t, &bad, &[]),
        3,
        &["[shared] revision", "version 7"],
    );
    assert_eq!(snapshot(&db), before);

    // The shared revision unmapped: the tenants are adopted, the shared schema left alone.
    let (_p, partial) = map_file(&format!("{tenant_map}\n[shared]\n\"{R1}\" = 1\n"));
    let dry: Adoption = adopt(&t, &partial, &["--dry-run"]).expect(4).json();
    assert_eq!(snapshot(&db), before, "the dry run changed the database");
    assert_eq!(dry.shared.len(), 1, "{dry:?}");
    assert_eq!(dry.shared[0].status, "left_alone");
    assert!(
        dry.shared[0]
            .outcome
            .contains("not in the map file's [shared] table"),
        "{}",
        dry.shared[0].outcome
    );
    let run = adopt(&t, &partial, &[]);
    let report: Adoption = run.expect(4).json();
    assert_eq!(report.stamped.len(), 2);
    assert_eq!(
        (
            report.shared[0].status.as_str(),
            &report.shared[0].alembic_revisions
        ),
        ("left_alone", &vec![R2.to_string()])
    );
    assert!(!shared_history_exists(&db), "the shared schema was stamped");
    assert!(report.unregistered_schemas.is_empty(), "{report:?}");

    // Mapped: the dry run says so, the adoption stamps it, status --shared shows it.
    let dry: Adoption = adopt(&t, &map, &["--dry-run"]).expect(0).json();
    assert_eq!(
        (dry.shared[0].status.as_str(), dry.shared[0].version),
        ("stamped", Some(2))
    );
    assert!(!shared_history_exists(&db));
    let done: Adoption = adopt(&t, &map, &[]).expect(0).json();
    assert_eq!(done.shared.len(), 1, "{done:?}");
    let s = &done.shared[0];
    assert_eq!(
        (
            s.server.as_str(),
            s.schema.as_str(),
            s.status.as_str(),
            s.version
        ),
        ("default", "public", "stamped", Some(2))
    );
    assert_eq!(done.already.len(), 2, "{done:?}");
    assert!(done.depends_on_schemas.is_empty(), "{done:?}");
    assert_eq!(shared_status(&t), (Some(2), vec![3]));
    let public_before = of_schema(&snapshot(&db), "public");
    assert!(!public_before.is_empty());

    // A rerun finds it adopted; upgrade --all brings it and the tenants to head.
    let again: Adoption = adopt(&t, &map, &[]).expect(0).json();
    assert_eq!(again.shared[0].status, "already");
    t.run(&["upgrade", "--all"]).expect(0);
    assert_eq!(shared_status(&t), (Some(3), vec![]));
    for s in [a.schema, b.schema] {
        assert_eq!(history_versions(&db, s), vec![1, 2, 3]);
    }
    let phone: bool = db
        .client()
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = 'members' AND column_name = 'phone')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(phone, "the shared schema's revision 3 ran in public");
    t.run(&["check"]).expect(0);
}

/// Every configured server whose shared schema has an `alembic_version` is stamped at its
/// own mapped version; a server without one is left out of the report.
#[test]
fn the_shared_schema_is_stamped_on_every_server_that_has_an_alembic_version() {
    let db = TestDb::new();
    let east = TestDb::new();
    let west = TestDb::new();
    let a = original("first-church", "tenant_first_church");
    build_registry(&db, &[&a]);
    alembic_upgrade(&db, a.schema, R1);
    alembic_upgrade(&db, "public", R2);
    alembic_upgrade(&east, "public", R1);
    let (migrations, tenant_map) = migrations_from_alembic();
    let (shared_map, _) = alembic_to_sql(
        &crate::adopt_alembic::fixture(),
        &migrations.path().join("shared"),
        &["--shared"],
    );
    let (_m, map) = map_file(&format!("{tenant_map}\n[shared]\n{shared_map}"));
    let config = config_dir(&format!(
        "[servers.east]\nurl = \"{}\"\n\n[servers.west]\nurl = \"{}\"\n",
        east.url, west.url
    ));
    let t = tenantctl(&db)
        .migrations(migrations.path())
        .cwd(config.path());
    let dry: Adoption = adopt(&t, &map, &["--dry-run"]).expect(0).json();
    let done: Adoption = adopt(&t, &map, &[]).expect(0).json();
    for (report, status) in [(&dry, "stamped"), (&done, "stamped")] {
        let got: Vec<(&str, &str, Option<i32>)> = report
            .shared
            .iter()
            .map(|s| (s.server.as_str(), s.status.as_str(), s.version))
            .collect();
        assert_eq!(
            got,
            vec![("default", status, Some(2)), ("east", status, Some(1))],
            "{report:?}"
        );
    }
    let s: SharedStatuses = t
        .run(&["status", "--shared", "-o", "json"])
        .expect(0)
        .json();
    let got: Vec<(&str, Option<i32>)> = s
        .shared
        .iter()
        .map(|s| (s.server.as_str(), s.current_revision))
        .collect();
    assert_eq!(
        got,
        vec![("default", Some(2)), ("east", Some(1)), ("west", None)]
    );
}
