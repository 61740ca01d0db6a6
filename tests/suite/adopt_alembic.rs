//! `tenantctl adopt alembic` against the original system built with real Alembic: the
//! registry table created by SQLAlchemy from the original model, tenants with plain API
//! keys, and tenant schemas upgraded by `alembic -x tenant=SCHEMA upgrade REV` from the
//! fixture project in tests/fixtures/alembic-original. The migrations directory comes
//! from that project through scripts/alembic-to-sql.
//!
//! Alembic lives in the virtualenv scripts/install-test-deps creates:
//! `$TENANTCTL_TEST_ALEMBIC_VENV`, else `${XDG_CACHE_HOME:-$HOME/.cache}/tenantctl-test-alembic/venv`.
//! These tests fail (never skip) when it is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::checks::{expect_error, history_versions};
use crate::support::{scrub, tenantctl, Tenantctl, TestDb};

/// The fixture's three revisions, oldest first.
pub(crate) const R1: &str = "3da2eb3bee79";
pub(crate) const R2: &str = "8c1f0e2d4a57";
pub(crate) const R3: &str = "b7e4a9c2d1f0";

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn fixture() -> PathBuf {
    repo().join("tests/fixtures/alembic-original")
}

/// The virtualenv holding Alembic, SQLAlchemy and psycopg2; fails loudly when missing.
pub(crate) fn venv() -> PathBuf {
    let dir = match std::env::var_os("TENANTCTL_TEST_ALEMBIC_VENV").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME is not set")).join(".cache")
                });
            cache.join("tenantctl-test-alembic/venv")
        }
    };
    assert!(
        dir.join("bin/alembic").is_file() && dir.join("bin/python").is_file(),
        "no Alembic virtualenv at {}: run scripts/install-test-deps (it creates it), or set \
         TENANTCTL_TEST_ALEMBIC_VENV to a virtualenv holding alembic, SQLAlchemy and psycopg2-binary",
        dir.display()
    );
    dir
}

/// Runs a program of the virtualenv (or a script) with the test's environment scrubbed,
/// the fixture importable, and fails with its output unless it succeeds. Returns stdout.
pub(crate) fn run_ok(cmd: Command, what: &str) -> String {
    run_ok_with_stderr(cmd, what).0
}

/// As [`run_ok`], returning stdout and stderr.
pub(crate) fn run_ok_with_stderr(mut cmd: Command, what: &str) -> (String, String) {
    scrub(&mut cmd);
    cmd.env("PYTHONPATH", fixture())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `alembic -x tenant=SCHEMA upgrade REV`, as the original service provisioned a tenant.
pub(crate) fn alembic_upgrade(db: &TestDb, schema: &str, rev: &str) {
    alembic_upgrade_in(&fixture(), db, schema, rev);
}

/// `alembic -x tenant=SCHEMA upgrade REV` with the Alembic project in `project`.
pub(crate) fn alembic_upgrade_in(project: &Path, db: &TestDb, schema: &str, rev: &str) {
    let mut cmd = Command::new(venv().join("bin/alembic"));
    cmd.arg("-c")
        .arg(project.join("alembic.ini"))
        .args(["-x", &format!("url={}", db.url)])
        .args(["-x", &format!("tenant={schema}"), "upgrade", rev]);
    run_ok(cmd, &format!("alembic -x tenant={schema} upgrade {rev}"));
}

/// A tenant of the original service.
pub(crate) struct Original {
    pub(crate) domain: &'static str,
    pub(crate) schema: &'static str,
    pub(crate) key: String,
}

pub(crate) fn original(domain: &'static str, schema: &'static str) -> Original {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    Original {
        domain,
        schema,
        key: format!("sk_{}_{nanos:x}", domain.replace('-', "")),
    }
}

/// The original registry: `Base.metadata.create_all` from the original model, then the
/// tenants inserted through it (plain keys), with one more registered and deleted again
/// so the ids have a gap.
pub(crate) fn build_registry(db: &TestDb, tenants: &[&Original]) {
    let rows: Vec<Value> = tenants
        .iter()
        .map(|t| {
            serde_json::json!({"domain": t.domain, "schema": t.schema, "key": t.key,
                               "name": format!("{} congregation", t.domain)})
        })
        .collect();
    let script = r#"
import json, sys
from sqlalchemy import create_engine, delete
from sqlalchemy.orm import Session
from models import Base, Tenant

engine = create_engine("postgresql+psycopg2://" + sys.argv[1].split("://", 1)[1])
Base.metadata.create_all(engine)
with Session(engine) as s:
    s.add(Tenant(tenant_name="closed", domain="closed-church", schema_name="tenant_closed",
                 api_key="sk_closed_key"))
    s.commit()
    s.execute(delete(Tenant).where(Tenant.domain == "closed-church"))
    s.commit()
    for t in json.loads(sys.argv[2]):
        s.add(Tenant(tenant_name=t["name"], domain=t["domain"], email=t["domain"] + "@example.org",
                     tenant_type="standard", schema_name=t["schema"], schema_provisioned=True,
                     migrations_applied=True, api_key=t["key"]))
    s.commit()
"#;
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.args(["-c", script, &db.url, &Value::Array(rows).to_string()]);
    run_ok(cmd, "creating the original registry with SQLAlchemy");
}

/// A member in a tenant schema the fixture's first revision built.
fn add_member(db: &TestDb, schema: &str, last_name: &str) {
    db.client()
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".households (name) VALUES ('{last_name} household'); \
             INSERT INTO \"{schema}\".members (household_id, first_name, last_name) \
             SELECT id, 'Ada', '{last_name}' FROM \"{schema}\".households"
        ))
        .unwrap();
}

/// The migrations directory scripts/alembic-to-sql makes from the fixture, and the map it
/// prints.
pub(crate) fn migrations_from_alembic() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let (map, _) = alembic_to_sql(&fixture(), dir.path(), &[]);
    (dir, map)
}

/// `scripts/alembic-to-sql -c PROJECT/alembic.ini [EXTRA...] OUT`: the map it prints, and
/// its stderr.
pub(crate) fn alembic_to_sql(project: &Path, out: &Path, extra: &[&str]) -> (String, String) {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts/alembic-to-sql"))
        .arg("-c")
        .arg(project.join("alembic.ini"))
        .arg("--alembic")
        .arg(venv().join("bin/alembic"))
        .args(extra)
        .arg(out);
    run_ok_with_stderr(cmd, "scripts/alembic-to-sql")
}

/// A map file holding `text`, in a directory of its own.
pub(crate) fn map_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("map.toml");
    std::fs::write(&p, text).unwrap();
    (d, p)
}

/// Everything in the database outside PostgreSQL's own schemas: schemas, relations,
/// columns, indexes, constraints, and every table's rows.
pub(crate) fn snapshot(db: &TestDb) -> BTreeMap<String, String> {
    let mut c = db.client();
    let user = "NOT LIKE 'pg\\_%' AND {n} <> 'information_schema'";
    let filter = |n: &str| format!("{n} {}", user.replace("{n}", n));
    let mut snap = BTreeMap::new();
    for (what, sql) in [
        (
            "schemas",
            format!(
                "SELECT concat_ws(' ', nspname, nspowner::regrole) FROM pg_namespace WHERE {}",
                filter("nspname")
            ),
        ),
        (
            "relations",
            format!(
                "SELECT concat_ws(' ', n.nspname || '.' || c.relname, c.relkind) FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {}",
                filter("n.nspname")
            ),
        ),
        (
            "columns",
            format!(
                "SELECT concat_ws(' ', table_schema, table_name, column_name, data_type, \
                 is_nullable, column_default) FROM information_schema.columns WHERE {}",
                filter("table_schema")
            ),
        ),
        (
            "indexes",
            format!(
                "SELECT indexdef FROM pg_indexes WHERE {}",
                filter("schemaname")
            ),
        ),
        (
            "constraints",
            format!(
                "SELECT concat_ws(' ', conrelid::regclass, conname, pg_get_constraintdef(c.oid)) \
                 FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE {}",
                filter("n.nspname")
            ),
        ),
    ] {
        let rows: Vec<String> = c
            .query(&format!("SELECT x FROM ({sql}) s(x) ORDER BY 1"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        snap.insert(what.to_string(), rows.join("\n"));
    }
    let tables: Vec<(String, String)> = c
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND {}",
                filter("n.nspname")
            ),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (s, t) in tables {
        let rows: String = c
            .query_one(
                &format!(
                    "SELECT coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '') FROM \"{s}\".\"{t}\" x"
                ),
                &[],
            )
            .unwrap()
            .get(0);
        snap.insert(format!("rows {s}.{t}"), rows);
    }
    snap
}

/// The part of a snapshot about one schema.
pub(crate) fn of_schema(snap: &BTreeMap<String, String>, schema: &str) -> Vec<String> {
    let prefix = format!("{schema}.");
    let alone = format!("{schema} ");
    let mut out = Vec::new();
    for (k, v) in snap {
        let rows = k.starts_with(&format!("rows {prefix}"));
        for l in v.lines() {
            if rows
                || l.contains(&prefix)
                || l.starts_with(&alone)
                || l.contains(&format!(" {alone}"))
            {
                out.push(format!("{k}: {l}"));
            }
        }
    }
    out
}

/// `(domain, version)` of each entry of one list of the adoption report.
pub(crate) fn entries(report: &Value, list: &str) -> Vec<(Option<String>, String, Option<i64>)> {
    report[list]
        .as_array()
        .unwrap_or_else(|| panic!("the report has no list {list}: {report}"))
        .iter()
        .map(|e| {
            (
                e["domain"].as_str().map(str::to_string),
                e["schema_name"].as_str().unwrap().to_string(),
                e["version"].as_i64(),
            )
        })
        .collect()
}

pub(crate) fn adopt(t: &Tenantctl, map: &Path, extra: &[&str]) -> crate::support::Run {
    let mut args = vec!["adopt", "alembic", "--map", map.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", "json"]);
    t.run(&args)
}

/// The registry rows as (id, domain, schema_name).
pub(crate) fn registry_ids(db: &TestDb) -> Vec<(i64, String, String)> {
    db.client()
        .query(
            "SELECT id::bigint, domain::text, schema_name::text FROM public.tenants ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[test]
fn a_fleet_upgraded_by_alembic_to_three_revisions_is_adopted_upgraded_and_checks_clean() {
    let db = TestDb::new();
    let a = original("first-church", "tenant_first_church");
    let b = original("grace-chapel", "tenant_grace_chapel");
    let c = original("st-marks", "tenant_st_marks");
    build_registry(&db, &[&a, &b, &c]);
    for (t, rev) in [(&a, R1), (&b, R2), (&c, R3)] {
        alembic_upgrade(&db, t.schema, rev);
        add_member(&db, t.schema, t.domain);
    }
    let ids = registry_ids(&db);
    assert_eq!(ids.len(), 3);
    assert_ne!(
        ids[0].0, 1,
        "the deleted tenant leaves a gap in the ids: {ids:?}"
    );

    let (migrations, map_text) = migrations_from_alembic();
    assert_eq!(
        map_text,
        format!("\"{R1}\" = 1\n\"{R2}\" = 2\n\"{R3}\" = 3\n")
    );
    let (_m, map) = map_file(&map_text);
    let t = tenantctl(&db).migrations(migrations.path());

    // The dry run reports what it would do and changes nothing.
    let before = snapshot(&db);
    let dry: Value = adopt(&t, &map, &["--dry-run"]).expect(0).json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["registry"]["found"], "original");
    assert_eq!(dry["registry"]["keys_hashed"], 3);
    let would = entries(&dry, "stamped");
    assert_eq!(
        would,
        vec![
            (Some(a.domain.into()), a.schema.into(), Some(1)),
            (Some(b.domain.into()), b.schema.into(), Some(2)),
            (Some(c.domain.into()), c.schema.into(), Some(3)),
        ]
    );
    assert!(dry["message"]
        .as_str()
        .unwrap()
        .contains("nothing was changed"));
    assert_eq!(snapshot(&db), before, "the dry run changed the database");

    // The adoption.
    let done: Value = adopt(&t, &map, &[]).expect(0).json();
    assert_eq!(done["dry_run"], false);
    assert_eq!(entries(&done, "stamped"), would);
    for list in [
        "already",
        "unregistered_schemas",
        "missing_schemas",
        "unmapped",
        "branches",
        "left_alone",
    ] {
        assert_eq!(entries(&done, list), vec![], "{list}: {done}");
    }
    let added: Vec<&str> = done["registry"]["columns_added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        added.contains(&"api_key_hash") && added.contains(&"api_key_prefix"),
        "{added:?}"
    );
    assert_eq!(registry_ids(&db), ids, "ids, domains and schemas are kept");
    let mut client = db.client();
    let plain: i64 = client
        .query_one(
            "SELECT count(*) FROM public.tenants WHERE api_key IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(plain, 0, "no plain key is left in api_key");
    for (t, (id, _, _)) in [&a, &b, &c].into_iter().zip(&ids) {
        let found: Vec<i64> = client
            .query(
                "SELECT id::bigint FROM public.tenants \
                 WHERE api_key_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex')",
                &[&t.key],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            found,
            vec![*id],
            "tenant {} is found by its original key",
            t.domain
        );
    }
    assert_eq!(history_versions(&db, a.schema), vec![1]);
    assert_eq!(history_versions(&db, b.schema), vec![1, 2]);
    assert_eq!(history_versions(&db, c.schema), vec![1, 2, 3]);

    // tenantctl now runs the fleet: the SQL files Alembic produced bring all to head.
    t.run(&["upgrade", "--all"]).expect(0);
    for t in [&a, &b, &c] {
        assert_eq!(
            history_versions(&db, t.schema),
            vec![1, 2, 3],
            "{}",
            t.schema
        );
        let row: (String, Option<String>) = client
            .query_one(
                &format!(
                    "SELECT last_name::text, phone::text FROM \"{}\".members",
                    t.schema
                ),
                &[],
            )
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!(
            row,
            (t.domain.to_string(), None),
            "the member in {} is kept",
            t.schema
        );
        let index: bool = client
            .query_one(
                "SELECT to_regclass(format('%I.ix_members_last_name_first_name', $1::text)) IS NOT NULL",
                &[&t.schema],
            )
            .unwrap()
            .get(0);
        assert!(index, "{} has the revision-2 index", t.schema);
    }
    t.run(&["check"]).expect(0);

    // A rerun finds everything adopted and changes nothing.
    let after = snapshot(&db);
    let again: Value = adopt(&t, &map, &[]).expect(0).json();
    assert_eq!(again["registry"]["found"], "tenantctl");
    assert_eq!(entries(&again, "stamped"), vec![]);
    assert_eq!(entries(&again, "already").len(), 3, "{again}");
    assert_eq!(snapshot(&db), after, "a rerun changed the database");
}

#[test]
fn what_cannot_be_mapped_is_listed_and_left_alone_while_the_rest_is_adopted() {
    let db = TestDb::new();
    let good = original("good-news", "tenant_good_news");
    let newer = original("newer-rev", "tenant_newer_rev");
    let branched = original("branched", "tenant_branched");
    let gone = original("gone-away", "tenant_gone_away");
    build_registry(&db, &[&good, &newer, &branched, &gone]);
    alembic_upgrade(&db, good.schema, R2);
    alembic_upgrade(&db, newer.schema, R3);
    alembic_upgrade(&db, branched.schema, R2);
    // A second head, as an unmerged Alembic branch leaves it.
    db.client()
        .batch_execute(&format!(
            "INSERT INTO \"{}\".alembic_version VALUES ('f00dfeed1234')",
            branched.schema
        ))
        .unwrap();
    // A schema Alembic upgraded for a tenant that is not registered.
    alembic_upgrade(&db, "tenant_orphan", R1);
    for s in [good.schema, newer.schema, branched.schema, "tenant_orphan"] {
        add_member(&db, s, s);
    }
    let (migrations, full_map) = migrations_from_alembic();
    // The map written before revision 3 existed.
    let (_m, map) = map_file(&format!("\"{R1}\" = 1\n\"{R2}\" = 2\n"));
    let t = tenantctl(&db).migrations(migrations.path());

    let before = snapshot(&db);
    let report: Value = adopt(&t, &map, &[]).expect(4).json();
    assert_eq!(
        entries(&report, "stamped"),
        vec![(Some(good.domain.into()), good.schema.into(), Some(2))]
    );
    assert_eq!(
        entries(&report, "unmapped"),
        vec![(Some(newer.domain.into()), newer.schema.into(), None)]
    );
    assert_eq!(
        report["unmapped"][0]["alembic_revisions"],
        serde_json::json!([R3])
    );
    assert_eq!(
        entries(&report, "branches"),
        vec![(Some(branched.domain.into()), branched.schema.into(), None)]
    );
    assert_eq!(
        report["branches"][0]["alembic_revisions"],
        serde_json::json!(["8c1f0e2d4a57", "f00dfeed1234"])
    );
    assert_eq!(
        entries(&report, "unregistered_schemas"),
        vec![(None, "tenant_orphan".into(), None)]
    );
    assert_eq!(
        entries(&report, "missing_schemas"),
        vec![(Some(gone.domain.into()), gone.schema.into(), None)]
    );
    assert_eq!(history_versions(&db, good.schema), vec![1, 2]);
    let after = snapshot(&db);
    for s in [newer.schema, branched.schema, "tenant_orphan"] {
        assert_eq!(
            of_schema(&after, s),
            of_schema(&before, s),
            "{s} was changed"
        );
        assert!(!of_schema(&before, s).is_empty());
    }
    // The registry was adopted all the same: no plain key is left.
    let plain: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM public.tenants WHERE api_key IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(plain, 0);

    // With the revision added to the map, a rerun adopts that tenant too; the rest stays.
    let (_m2, map2) = map_file(&full_map);
    let rerun: Value = adopt(&t, &map2, &[]).expect(4).json();
    assert_eq!(
        entries(&rerun, "stamped"),
        vec![(Some(newer.domain.into()), newer.schema.into(), Some(3))]
    );
    assert_eq!(entries(&rerun, "already").len(), 1, "{rerun}");
    assert_eq!(entries(&rerun, "branches").len(), 1);
    assert_eq!(entries(&rerun, "unregistered_schemas").len(), 1);
    assert_eq!(entries(&rerun, "missing_schemas").len(), 1);
    assert_eq!(history_versions(&db, newer.schema), vec![1, 2, 3]);
}

#[test]
fn a_bad_map_file_and_init_on_the_original_table_exit_3_and_change_nothing() {
    let db = TestDb::new();
    let a = original("first-church", "tenant_first_church");
    build_registry(&db, &[&a]);
    alembic_upgrade(&db, a.schema, R1);
    let (migrations, _) = migrations_from_alembic();
    let t = tenantctl(&db).migrations(migrations.path());
    let before = snapshot(&db);
    for (text, needles) in [
        (
            format!("\"{R1}\" = 9\n"),
            vec!["map file", "version 9", "not in"],
        ),
        (
            format!("\"{R1}'; DROP TABLE public.tenants; --\" = 1\n"),
            vec!["map file", "not an Alembic revision id"],
        ),
        (format!("{R1} => 1\n"), vec!["not valid TOML"]),
        (
            format!("\"{R1}\" = \"one\"\n"),
            vec!["must map to a tenantctl version"],
        ),
        (
            format!("\"{R1}\" = 0\n"),
            vec!["maps to 0", "records nothing"],
        ),
    ] {
        let (_d, map) = map_file(&text);
        for extra in [&[][..], &["--dry-run"][..]] {
            let run = adopt(&t, &map, extra);
            expect_error(&run, 3, &needles);
            assert_eq!(
                snapshot(&db),
                before,
                "map {text:?} {extra:?} changed the database"
            );
        }
    }
    let run = t.run(&["init"]);
    expect_error(&run, 3, &["adopt alembic"]);
    assert_eq!(snapshot(&db), before, "init changed the original table");
}

/// Rows tenantctl could not register (the original model lets domain and name be NULL)
/// are refused before anything changes; after adoption, a NULL an old application writes
/// where tenantctl's registry has NOT NULL never crashes a command.
#[test]
fn rows_tenantctl_cannot_register_are_refused_and_nulls_never_crash_a_command() {
    let db = TestDb::new();
    let a = original("first-church", "tenant_first_church");
    let b = original("second-church", "tenant_second_church");
    build_registry(&db, &[&a, &b]);
    alembic_upgrade(&db, a.schema, R1);
    alembic_upgrade(&db, b.schema, R1);
    let (migrations, map_text) = migrations_from_alembic();
    let (_d, map) = map_file(&map_text);
    let t = tenantctl(&db).migrations(migrations.path());
    db.client()
        .batch_execute(
            "ALTER TABLE public.tenants ALTER COLUMN domain DROP NOT NULL; \
             UPDATE public.tenants SET domain = NULL WHERE domain = 'second-church'",
        )
        .unwrap();
    let before = snapshot(&db);
    let run = adopt(&t, &map, &[]);
    expect_error(&run, 3, &["without a domain", "nothing was changed"]);
    assert_eq!(
        snapshot(&db),
        before,
        "a refused adoption changed the database"
    );
    db.client()
        .batch_execute("UPDATE public.tenants SET domain = 'second-church' WHERE domain IS NULL")
        .unwrap();

    // A row with neither id nor domain is refused too, named by what it has, with the
    // query that finds it.
    db.client()
        .batch_execute(
            "ALTER TABLE public.tenants DROP CONSTRAINT tenants_pkey; \
             ALTER TABLE public.tenants ALTER COLUMN id DROP NOT NULL, \
                 ALTER COLUMN tenant_name DROP NOT NULL, ALTER COLUMN schema_name DROP NOT NULL; \
             INSERT INTO public.tenants (id, tenant_name, domain, schema_name, api_key, tenant_type, \
                                         schema_provisioned, migrations_applied) \
                 VALUES (NULL, 'Ghost', NULL, 'tenant_ghost', 'sk_ghost', 'standard', false, false), \
                        (NULL, NULL, NULL, NULL, NULL, 'standard', false, false)",
        )
        .unwrap();
    let before = snapshot(&db);
    for extra in [&[][..], &["--dry-run"][..]] {
        let run = adopt(&t, &map, extra);
        expect_error(
            &run,
            3,
            &[
                "without a domain",
                "id NULL, schema \"tenant_ghost\"",
                "id NULL at ctid",
                "SELECT ctid, * FROM \"public\".\"tenants\" WHERE id IS NULL",
                "nothing was changed",
            ],
        );
        assert_eq!(snapshot(&db), before, "{extra:?} changed the database");
    }
    db.client()
        .batch_execute(
            "DELETE FROM public.tenants WHERE id IS NULL; \
             ALTER TABLE public.tenants ADD PRIMARY KEY (id)",
        )
        .unwrap();
    adopt(&t, &map, &[]).expect(0);
    // An old application still inserting the way it used to, with constraints relaxed by
    // hand to let it.
    db.client()
        .batch_execute(
            "ALTER TABLE public.tenants ALTER COLUMN api_key_prefix DROP NOT NULL, \
                                        ALTER COLUMN api_key_hash DROP NOT NULL; \
             INSERT INTO public.tenants (tenant_name, domain, schema_name, api_key) \
                 VALUES ('late', 'late-church', 'tenant_late_church', 'sk_late')",
        )
        .unwrap();
    // Every command that reads the registry and the ledger, and every route: each with
    // its documented answer (`registry_values` does this for every NULL and edge value).
    for (args, code) in [
        (&["tenant", "list"][..], 0),
        (&["tenant", "list", "-o", "json"][..], 0),
        (&["tenant", "show", "late-church"][..], 0),
        (&["tenant", "show", "late-church", "-o", "json"][..], 0),
        (&["status", "--all"][..], 0),
        (&["status", "--all", "-o", "json"][..], 0),
        (&["current"][..], 0),
        (&["events", "-o", "json"][..], 0),
        (&["metrics"][..], 0),
        (&["upgrade", "--all", "--dry-run"][..], 0),
        (&["check"][..], 5),
        (&["provision", "--all"][..], 0),
        (&["upgrade", "--all"][..], 0),
        (&["tenant", "rotate-key", "late-church"][..], 0),
        (&["check"][..], 0),
    ] {
        let run = t.run(args);
        assert!(
            run.code != 101 && !run.stderr.contains("panicked"),
            "{args:?} crashed: {}",
            run.stderr
        );
        assert_eq!(run.code, code, "{args:?}: {}", run.stderr);
    }
    let server = crate::serve::start(&t);
    for path in [
        "/api/tenants",
        "/api/tenants/late-church/migration-status",
        "/api/fleet/status",
        "/metrics",
        "/",
        "/tenants/late-church",
    ] {
        server.get(path).expect(200);
    }
}

/// A schema whose `alembic_version` holds a NULL `version_num` (its primary key dropped
/// by hand; Alembic never writes one) is left alone with that reason, in a dry run and a
/// real one (exit 4), and the other tenants are adopted.
#[test]
fn a_null_version_num_is_left_alone_with_its_reason_and_the_others_are_adopted() {
    let db = TestDb::new();
    let a = original("first-church", "tenant_first_church");
    let b = original("second-church", "tenant_second_church");
    build_registry(&db, &[&a, &b]);
    alembic_upgrade(&db, a.schema, R1);
    alembic_upgrade(&db, b.schema, R1);
    db.client()
        .batch_execute(&format!(
            "DO $$ DECLARE c text; BEGIN \
               SELECT conname INTO c FROM pg_constraint \
                 WHERE conrelid = '{s}.alembic_version'::regclass AND contype = 'p'; \
               EXECUTE format('ALTER TABLE {s}.alembic_version DROP CONSTRAINT %I', c); \
             END $$; \
             ALTER TABLE {s}.alembic_version ALTER COLUMN version_num DROP NOT NULL; \
             UPDATE {s}.alembic_version SET version_num = NULL;",
            s = a.schema
        ))
        .unwrap();
    // The other tenant's row at the edges of its types: int4's largest id, times that
    // are not RFC 3339 (kept as they are by the adoption, shown as they are after it).
    db.client()
        .batch_execute(&format!(
            "UPDATE public.tenants SET id = 2147483647, created_at = 'infinity', \
                 updated_at = '-infinity' WHERE domain = '{}'",
            b.domain
        ))
        .unwrap();
    let (migrations, map_text) = migrations_from_alembic();
    let (_d, map) = map_file(&map_text);
    let t = tenantctl(&db).migrations(migrations.path());
    let before = snapshot(&db);
    let dry = adopt(&t, &map, &["--dry-run"]);
    assert!(
        dry.code != 101 && !dry.stderr.contains("panicked"),
        "{}",
        dry.stderr
    );
    dry.expect(4);
    assert_eq!(snapshot(&db), before, "the dry run changed the database");
    let report: Value = dry.json();
    assert_eq!(
        entries(&report, "stamped"),
        vec![(Some(b.domain.to_string()), b.schema.to_string(), Some(1))]
    );
    let reason = |report: &Value| {
        let left = report["left_alone"].as_array().unwrap();
        assert_eq!(left.len(), 1, "{report}");
        assert_eq!(left[0]["domain"], a.domain, "{report}");
        left[0]["outcome"].as_str().unwrap().to_string()
    };
    let why = reason(&report);
    assert!(
        why.contains("version_num is NULL")
            && why.contains(&format!("\"{}\".\"alembic_version\"", a.schema)),
        "{why}"
    );

    let run = adopt(&t, &map, &[]);
    run.expect(4);
    let report: Value = run.json();
    assert_eq!(reason(&report), why);
    assert_eq!(history_versions(&db, b.schema), vec![1]);
    assert_eq!(history_versions(&db, a.schema), Vec::<i32>::new());
    let listing: crate::common_json::Listing =
        t.run(&["tenant", "list", "-o", "json"]).expect(0).json();
    let row = listing
        .tenants
        .iter()
        .find(|x| x.domain == b.domain)
        .unwrap();
    assert_eq!(row.id, 2147483647);
    assert_eq!(row.created_at.as_deref(), Some("infinity"));
    assert_eq!(
        of_schema(&snapshot(&db), a.schema),
        of_schema(&before, a.schema),
        "the schema left alone was changed"
    );
}

#[test]
fn a_tenant_adoption_left_alone_is_refused_by_upgrade_and_never_marked_failed() {
    let db = TestDb::new();
    let good = original("good-news", "tenant_good_news");
    let newer = original("newer-rev", "tenant_newer_rev");
    build_registry(&db, &[&good, &newer]);
    alembic_upgrade(&db, good.schema, R2);
    alembic_upgrade(&db, newer.schema, R3);
    add_member(&db, newer.schema, "Lovelace");
    let (migrations, full_map) = migrations_from_alembic();
    // The map written before revision 3 existed: newer-rev is left alone.
    let (_m, map) = map_file(&format!("\"{R1}\" = 1\n\"{R2}\" = 2\n"));
    let t = tenantctl(&db).migrations(migrations.path());
    let report: Value = adopt(&t, &map, &[]).expect(4).json();
    assert_eq!(entries(&report, "unmapped").len(), 1, "{report}");

    let before = snapshot(&db);
    let row = crate::checks::registry_row(&db, newer.domain);
    // `upgrade --all` brings the adopted tenant to head and refuses the one left alone:
    // nothing runs over its Alembic-built schema, it is not marked failed, and the
    // refusal, which names the way out, is in the ledger.
    let run = t.run(&["upgrade", "--all", "-o", "json"]);
    run.expect(4);
    let r: Value = run.json();
    let result = |domain: &str| {
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["domain"] == domain)
            .unwrap_or_else(|| panic!("no result for {domain}: {r}"))
            .clone()
    };
    assert_eq!(result(good.domain)["status"], "ok", "{r}");
    assert_eq!(history_versions(&db, good.schema), vec![1, 2, 3]);
    let x = result(newer.domain);
    assert_eq!(x["status"], "failed", "{r}");
    assert!(x["applied"].as_array().unwrap().is_empty());
    let err = x["error"].as_str().unwrap();
    assert!(
        err.contains("alembic_version")
            && err.contains("tenantctl adopt alembic")
            && err.contains("tenantctl stamp"),
        "{err}"
    );
    assert_eq!(
        of_schema(&snapshot(&db), newer.schema),
        of_schema(&before, newer.schema),
        "the Alembic-built schema was changed"
    );
    // Its status and error as they were; its cached columns say what is there (no
    // tenantctl history), as after any command.
    let after = crate::checks::registry_row(&db, newer.domain);
    assert_eq!(
        (&after.status, &after.last_error),
        (&row.status, &row.last_error)
    );
    assert_eq!(row.status, "active");
    crate::checks::assert_truth(&db, newer.domain, "active");
    let e = crate::checks::ledger(&db, newer.domain).pop().unwrap();
    assert_eq!(
        (e.action.as_str(), e.status.as_str()),
        ("upgrade", "refused")
    );
    assert!(e.error.unwrap().contains("adopt alembic"));
    // Named alone: exit 1, the same refusal; the row, true already, stays byte for byte.
    let stored = crate::checks::stored_row(&db, newer.domain);
    let run = t.run(&["upgrade", "--tenant", newer.domain]);
    run.expect(1);
    assert!(
        run.stderr.contains("tenantctl adopt alembic"),
        "{}",
        run.stderr
    );
    assert_eq!(crate::checks::stored_row(&db, newer.domain), stored);

    // Adopted with the full map, it is upgraded like the others.
    let (_m2, map2) = map_file(&full_map);
    adopt(&t, &map2, &[]).expect(0);
    t.run(&["upgrade", "--all"]).expect(0);
    assert_eq!(history_versions(&db, newer.schema), vec![1, 2, 3]);
    t.run(&["check"]).expect(0);
}

/// Drops every unique index and constraint of the original table but its primary key,
/// as a table created by an older model (or edited by hand) may lack them.
const NO_UNIQUES: &str = "DO $$ DECLARE r record; BEGIN \
     FOR r IN SELECT i.relname::text AS idx, c.conname::text AS con FROM pg_index x \
              JOIN pg_class i ON i.oid = x.indexrelid \
              LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid \
              WHERE x.indrelid = 'public.tenants'::regclass AND x.indisunique AND NOT x.indisprimary LOOP \
       IF r.con IS NOT NULL THEN EXECUTE format('ALTER TABLE public.tenants DROP CONSTRAINT %I', r.con); \
       ELSE EXECUTE format('DROP INDEX public.%I', r.idx); END IF; \
     END LOOP; END $$;";

/// Every way the original table can make an adoption fail: the dry run gives the real
/// run's verdict and exit code, and neither changes anything when it fails.
#[test]
fn a_dry_run_gives_the_verdict_and_exit_code_of_the_adoption_and_changes_nothing() {
    let (migrations, map_text) = migrations_from_alembic();
    let (_d, map) = map_file(&map_text);
    let no_pkey = "ALTER TABLE public.tenants DROP CONSTRAINT tenants_pkey;";
    let cases: Vec<(&str, String, i32, Vec<&str>)> = vec![
        (
            "two rows share a domain",
            format!("{NO_UNIQUES} UPDATE public.tenants SET domain = 'first-church'"),
            3,
            vec!["domain \"first-church\"", "nothing was changed"],
        ),
        (
            "two rows share an API key",
            format!("{NO_UNIQUES} UPDATE public.tenants SET api_key = 'sk_shared_secret_key'"),
            3,
            vec!["the API key of ids", "nothing was changed"],
        ),
        (
            "two rows share a schema name",
            format!("{NO_UNIQUES} UPDATE public.tenants SET schema_name = 'tenant_first_church'"),
            3,
            vec!["schema name \"tenant_first_church\""],
        ),
        (
            "two rows share an id",
            format!(
                "{no_pkey} UPDATE public.tenants SET id = (SELECT min(id) FROM public.tenants)"
            ),
            3,
            vec!["id \""],
        ),
        (
            "a row without an id",
            format!(
                "{no_pkey} ALTER TABLE public.tenants ALTER COLUMN id DROP NOT NULL; \
                 UPDATE public.tenants SET id = NULL WHERE domain = 'second-church'"
            ),
            3,
            vec!["or an id", "second-church"],
        ),
        (
            "a tenant whose schema is public",
            "UPDATE public.tenants SET schema_name = 'public' WHERE domain = 'second-church'"
                .to_string(),
            3,
            vec!["\"public\"", "may not give a tenant"],
        ),
        (
            "a schema name longer than PostgreSQL keeps",
            format!(
                "ALTER TABLE public.tenants ALTER COLUMN schema_name TYPE text; \
                 UPDATE public.tenants SET schema_name = '{}' WHERE domain = 'second-church'",
                "s".repeat(70)
            ),
            3,
            vec!["longer than 63 bytes"],
        ),
        (
            "a view reads the columns the adoption retypes",
            "CREATE VIEW public.tenant_domains AS SELECT id, domain FROM public.tenants"
                .to_string(),
            1,
            vec!["cannot alter type", "nothing was changed"],
        ),
        (
            "a trigger refuses updates of the table",
            "CREATE FUNCTION public.no_updates() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'tenants are read-only'; END $$; \
             CREATE TRIGGER no_updates BEFORE UPDATE ON public.tenants \
             FOR EACH ROW EXECUTE FUNCTION public.no_updates()"
                .to_string(),
            1,
            vec!["tenants are read-only", "nothing was changed"],
        ),
        (
            "an id that is text",
            "ALTER TABLE public.tenants ALTER COLUMN id DROP DEFAULT, ALTER COLUMN id TYPE text"
                .to_string(),
            1,
            vec!["cannot be cast", "nothing was changed"],
        ),
        (
            "a table of the application named like the run ledger",
            "CREATE TABLE public.tenant_events (note text)".to_string(),
            1,
            vec!["tenant_events", "nothing was changed"],
        ),
        (
            "a column of the application named like the registry's server column",
            "ALTER TABLE public.tenants ADD COLUMN server text".to_string(),
            1,
            vec!["server", "nothing was changed"],
        ),
        (
            "a domain longer than tenantctl looks up",
            format!(
                "UPDATE public.tenants SET domain = '{}' WHERE domain = 'second-church'",
                "x".repeat(250)
            ),
            0,
            vec![],
        ),
        (
            "a domain that is all digits",
            "UPDATE public.tenants SET domain = '12' WHERE domain = 'second-church'".to_string(),
            0,
            vec![],
        ),
    ];
    for (label, sql, code, needles) in cases {
        let db = TestDb::new();
        let a = original("first-church", "tenant_first_church");
        let b = original("second-church", "tenant_second_church");
        build_registry(&db, &[&a, &b]);
        alembic_upgrade(&db, a.schema, R1);
        alembic_upgrade(&db, b.schema, R2);
        db.client()
            .batch_execute(&sql)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let t = tenantctl(&db).migrations(migrations.path());
        let before = snapshot(&db);
        let dry = adopt(&t, &map, &["--dry-run"]);
        assert_eq!(
            snapshot(&db),
            before,
            "{label}: the dry run changed the database"
        );
        let real = adopt(&t, &map, &[]);
        assert_eq!(
            (dry.code, real.code),
            (code, code),
            "{label}: exit codes of the dry and the real run\ndry: {}{}\nreal: {}{}",
            dry.stdout,
            dry.stderr,
            real.stdout,
            real.stderr
        );
        for run in [&dry, &real] {
            assert!(
                !run.stdout.contains("sk_") && !run.stderr.contains("sk_"),
                "{label}: an API key was shown: {}{}",
                run.stdout,
                run.stderr
            );
        }
        if code == 0 {
            let (d, r): (Value, Value) = (dry.json(), real.json());
            for list in [
                "stamped",
                "left_alone",
                "missing_schemas",
                "unregistered_schemas",
            ] {
                assert_eq!(entries(&d, list), entries(&r, list), "{label}: {list}");
            }
            assert_eq!(history_versions(&db, b.schema), vec![1, 2], "{label}");
            t.run(&["status", "--all"]).expect(0);
        } else {
            expect_error(&dry, code, &needles);
            expect_error(&real, code, &needles);
            assert_eq!(
                snapshot(&db),
                before,
                "{label}: the refused adoption changed the database"
            );
            // Other commands point at the adoption, not at a backup.
            let run = t.run(&["status", "--all"]);
            expect_error(&run, 3, &["adopt alembic"]);
        }
    }
}

/// An original table the application holds a lock on: the dry run and the adoption
/// both give up after `run.lock_timeout` with the same error, and change nothing.
#[test]
fn a_table_the_application_holds_is_given_up_on_after_lock_timeout_by_both_runs() {
    let db = TestDb::new();
    let a = original("first-church", "tenant_first_church");
    build_registry(&db, &[&a]);
    alembic_upgrade(&db, a.schema, R1);
    let (migrations, map_text) = migrations_from_alembic();
    let (_d, map) = map_file(&map_text);
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("tenants.toml"),
        "[run]\nlock_timeout = \"1s\"\n",
    )
    .unwrap();
    let t = tenantctl(&db)
        .migrations(migrations.path())
        .cwd(config.path());
    let mut app = db.client();
    app.batch_execute("BEGIN; LOCK TABLE public.tenants IN ACCESS SHARE MODE")
        .unwrap();
    let before = snapshot(&db);
    let args = ["adopt", "alembic", "--map", map.to_str().unwrap()];
    let dry = t.spawn(&[&args[..], &["--dry-run"]].concat()).finish();
    let real = t.spawn(&args).finish();
    for run in [&dry, &real] {
        expect_error(run, 1, &["lock timeout", "nothing was changed"]);
    }
    app.batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        snapshot(&db),
        before,
        "a run that gave up changed the database"
    );
    adopt(&t, &map, &[]).expect(0);
}

/// A status tenantctl does not keep (`suspended`) is refused before anything changes, not
/// turned into `active`; a short plain key leaves at most a quarter of itself as the
/// prefix tenantctl shows.
#[test]
fn statuses_tenantctl_cannot_keep_are_refused_and_short_keys_keep_their_secret() {
    let db = TestDb::new();
    let mut a = original("first-church", "tenant_first_church");
    a.key = "Zq7PaSS12x".to_string();
    let b = original("second-church", "tenant_second_church");
    build_registry(&db, &[&a, &b]);
    alembic_upgrade(&db, a.schema, R1);
    alembic_upgrade(&db, b.schema, R1);
    let (migrations, _) = migrations_from_alembic();
    let t = tenantctl(&db).migrations(migrations.path());
    let (_d, map) = map_file(&format!("\"{R1}\" = 1\n"));
    db.client()
        .batch_execute(
            "ALTER TABLE public.tenants ADD COLUMN status varchar(20) DEFAULT 'active'; \
             UPDATE public.tenants SET status = 'suspended' WHERE domain = 'second-church'",
        )
        .unwrap();
    let before = snapshot(&db);
    for extra in [&[][..], &["--dry-run"][..]] {
        let run = adopt(&t, &map, extra);
        expect_error(&run, 3, &["'suspended'", "would lose them"]);
        assert_eq!(snapshot(&db), before, "{extra:?} changed the database");
    }
    db.client()
        .batch_execute("UPDATE public.tenants SET status = 'active' WHERE domain = 'second-church'")
        .unwrap();
    adopt(&t, &map, &[]).expect(0);
    let prefix: String = db
        .client()
        .query_one(
            "SELECT api_key_prefix FROM public.tenants WHERE domain = 'first-church'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        prefix, "Zq",
        "a 10-character key keeps at most a quarter as its prefix"
    );
    let listed = t.run(&["tenant", "list", "-o", "json"]);
    listed.expect(0);
    assert!(!listed.stdout.contains("Zq7PaSS12x"), "{}", listed.stdout);
}
