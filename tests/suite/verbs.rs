//! The migrator's other verbs: downgrade, stamp, revision, check, --dry-run, tenant drop,
//! tenant rotate-key, provision --force-recreate, completions and config show — each with
//! its refusals (no terminal and no --yes, missing down scripts, drift, bad input).

use crate::{checks, common_json, support};

use checks::{
    assert_truth, create, expect_error, history_versions, registry_row, relation_exists,
    schema_exists, tenant_count,
};
use common_json::*;
use support::{copy_of_example_migrations, lock_tenant, lock_waiters, ready, tenantctl, TestDb};

fn ledger_actions(db: &TestDb, domain: &str) -> Vec<String> {
    db.client()
        .query(
            "SELECT action FROM public.tenant_events WHERE domain = $1 ORDER BY id",
            &[&domain],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn tables_in(db: &TestDb, schema: &str) -> Vec<String> {
    db.client()
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind = 'r' ORDER BY 1",
            &[&schema],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn downgrade_runs_down_scripts_newest_first_and_refuses_without_confirmation() {
    let (db, t) = ready();
    create(&t, "demo", &["--migrate"]);
    let s = "tenant_demo";
    assert_eq!(history_versions(&db, s), [1, 2, 3, 4, 5, 6]);

    // No terminal and no --yes: refused, nothing changed.
    let run = t.run(&["downgrade", "--tenant", "demo", "4"]);
    expect_error(&run, 2, &["--yes"]);
    assert_eq!(history_versions(&db, s), [1, 2, 3, 4, 5, 6]);

    // Dry run: the down scripts, newest first, each with its history row removal.
    let run = t.run(&["downgrade", "--tenant", "demo", "4", "--dry-run"]);
    run.expect(0);
    let v6 = run
        .stdout
        .find("V6__ai_notes down")
        .expect("V6 down in the dry run");
    let v5 = run
        .stdout
        .find("V5__donations down")
        .expect("V5 down in the dry run");
    assert!(v6 < v5, "newest first:\n{}", run.stdout);
    assert!(run
        .stdout
        .contains("DELETE FROM \"tenant_demo\".\"refinery_schema_history\" WHERE version = 6;"));
    assert!(!run.stdout.contains("V4__events_attendance down"));
    assert_eq!(
        history_versions(&db, s),
        [1, 2, 3, 4, 5, 6],
        "a dry run changes nothing"
    );

    let r: RunReport = t
        .run(&["downgrade", "--tenant", "demo", "4", "--yes", "-o", "json"])
        .expect(0)
        .json();
    let x = r.of("demo");
    assert_eq!(
        (x.status.as_str(), x.from_revision, x.to_revision),
        ("ok", Some(6), Some(4))
    );
    assert_eq!(x.applied, [6, 5], "the versions reverted, newest first");
    assert_eq!(history_versions(&db, s), [1, 2, 3, 4]);
    assert!(
        !relation_exists(&db, s, "pastoral_notes")
            && !relation_exists(&db, s, "donations")
            && !relation_exists(&db, s, "funds")
    );
    assert!(relation_exists(&db, s, "events"));
    assert_truth(&db, "demo", "active");
    assert!(ledger_actions(&db, "demo").contains(&"downgrade".to_string()));

    // Down to base leaves only the history table; upgrading again restores everything.
    t.run(&["downgrade", "--tenant", "demo", "base", "--yes"])
        .expect(0);
    assert_eq!(history_versions(&db, s), Vec::<i32>::new());
    assert_eq!(tables_in(&db, s), ["refinery_schema_history"]);
    assert_truth(&db, "demo", "active");
    t.run(&["upgrade", "--tenant", "demo"]).expect(0);
    assert_eq!(history_versions(&db, s), [1, 2, 3, 4, 5, 6]);

    // Nothing to do above the current revision; an unknown target is a usage error.
    let r: RunReport = t
        .run(&["downgrade", "--tenant", "demo", "6", "--yes", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("demo").status, "up_to_date");
    expect_error(
        &t.run(&["downgrade", "--tenant", "demo", "99", "--yes"]),
        2,
        &["99"],
    );
    expect_error(&t.run(&["downgrade", "--tenant", "demo"]), 2, &[]);
}

#[test]
fn downgrade_refuses_a_missing_down_script_and_reports_a_failing_one_with_its_line() {
    let (db, t0) = ready();
    let dir = copy_of_example_migrations();
    let t = tenantctl(&db).migrations(dir.path());
    drop(t0);
    create(&t, "demo", &["--migrate"]);
    std::fs::remove_file(dir.path().join("V3__groups.down.sql")).unwrap();
    let run = t.run(&["downgrade", "--tenant", "demo", "2", "--yes", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    let x = r.of("demo");
    assert_eq!(x.status, "failed");
    assert!(
        x.error.as_deref().unwrap().contains("V3__groups.down.sql"),
        "{x:?}"
    );
    assert!(x.applied.is_empty());
    assert_eq!(
        history_versions(&db, "tenant_demo"),
        [1, 2, 3, 4, 5, 6],
        "refused before anything ran"
    );
    // A refusal leaves the tenant active; the ledger records it.
    assert_truth(&db, "demo", "active");
    assert_eq!(last_entry(&db, "demo").status, "refused");

    // A down script that fails: the ones before it stay reverted, the registry says failed.
    std::fs::write(
        dir.path().join("V5__donations.down.sql"),
        "-- broken on purpose\nSELECT no_such_column FROM funds;\n",
    )
    .unwrap();
    let run = t.run(&["downgrade", "--tenant", "demo", "4", "--yes", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    let x = r.of("demo");
    assert_eq!(x.applied, [6]);
    let err = x.error.as_deref().unwrap();
    assert!(
        err.contains("V5__donations.down.sql")
            && err.contains("line 2")
            && err.contains("no_such_column"),
        "{err}"
    );
    assert_eq!(history_versions(&db, "tenant_demo"), [1, 2, 3, 4, 5]);
    assert!(
        relation_exists(&db, "tenant_demo", "donations"),
        "the failed down script rolled back"
    );
    let row = assert_truth(&db, "demo", "failed");
    assert!(row.last_error.unwrap().contains("V5__donations"));
}

#[test]
fn stamp_adopts_a_schema_built_by_hand_and_later_upgrades_continue() {
    let (db, t) = ready();
    create(&t, "legacy", &["--provision"]);
    // Build V1..V3 by hand, as another tool would have.
    let mut c = db.client();
    for f in ["V1__members.sql", "V2__households.sql", "V3__groups.sql"] {
        let sql = std::fs::read_to_string(support::example_migrations().join(f)).unwrap();
        c.batch_execute(&format!(
            "SET search_path TO tenant_legacy; BEGIN; {sql}; COMMIT; RESET search_path"
        ))
        .unwrap();
    }
    let r: RunReport = t
        .run(&["stamp", "--tenant", "legacy", "3", "-o", "json"])
        .expect(0)
        .json();
    let x = r.of("legacy");
    assert_eq!((x.status.as_str(), x.to_revision), ("ok", Some(3)));
    assert_eq!(x.applied, [1, 2, 3]);
    assert_eq!(history_versions(&db, "tenant_legacy"), [1, 2, 3]);
    // The same checksums an upgrade stores: history sees them as applied, not divergent.
    let h: History = t
        .run(&["history", "--tenant", "legacy", "-o", "json"])
        .expect(0)
        .json();
    let states: Vec<(i32, String)> = h
        .migrations
        .iter()
        .map(|m| (m.version, m.state.clone()))
        .collect();
    assert_eq!(
        &states[..4],
        &[
            (1, "applied".into()),
            (2, "applied".into()),
            (3, "applied".into()),
            (4, "pending".into())
        ]
    );
    assert_truth(&db, "legacy", "active");
    // Upgrades continue from the stamp.
    let r: RunReport = t
        .run(&["upgrade", "--tenant", "legacy", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("legacy").applied, [4, 5, 6]);

    // Stamping lower forgets the versions above; base clears; tables are untouched.
    t.run(&["stamp", "--tenant", "legacy", "2", "--yes"])
        .expect(0);
    assert_eq!(history_versions(&db, "tenant_legacy"), [1, 2]);
    t.run(&["stamp", "--tenant", "legacy", "base", "--yes"])
        .expect(0);
    assert_eq!(history_versions(&db, "tenant_legacy"), Vec::<i32>::new());
    assert!(
        relation_exists(&db, "tenant_legacy", "members")
            && relation_exists(&db, "tenant_legacy", "pastoral_notes")
    );
    assert_truth(&db, "legacy", "active");
    assert!(
        ledger_actions(&db, "legacy")
            .iter()
            .filter(|a| *a == "stamp")
            .count()
            >= 3
    );
}

#[test]
fn stamp_refuses_a_divergent_file_and_an_unprovisioned_tenant() {
    let (db, t0) = ready();
    let dir = copy_of_example_migrations();
    let t = tenantctl(&db).migrations(dir.path());
    drop(t0);
    create(&t, "demo", &["--migrate", "--target", "2"]);
    create(&t, "bare", &[]);
    std::fs::write(
        dir.path().join("V1__members.sql"),
        "CREATE TABLE members (id int);\n",
    )
    .unwrap();
    let run = t.run(&["stamp", "--tenant", "demo", "3", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    assert!(r.of("demo").error.as_deref().unwrap().contains("divergent"));
    assert_eq!(history_versions(&db, "tenant_demo"), [1, 2]);
    let run = t.run(&["stamp", "--tenant", "bare", "3"]);
    run.expect(1);
    assert!(!schema_exists(&db, "tenant_bare"));
}

#[test]
fn revision_writes_the_next_files_with_a_safe_name() {
    let db = TestDb::new();
    let dir = copy_of_example_migrations();
    let t = tenantctl(&db).migrations(dir.path());
    let run = t.run(&["revision", "-m", "Add volunteer rotas; DROP TABLE x"]);
    run.expect(0);
    let up = dir.path().join("V7__add_volunteer_rotas_drop_table_x.sql");
    let down = dir
        .path()
        .join("V7__add_volunteer_rotas_drop_table_x.down.sql");
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        [up.display().to_string(), down.display().to_string()]
    );
    assert!(std::fs::read_to_string(&up).unwrap().starts_with(
        "-- V7__add_volunteer_rotas_drop_table_x: Add volunteer rotas; DROP TABLE x\n"
    ));
    assert!(std::fs::read_to_string(&down)
        .unwrap()
        .starts_with("-- Undoes V7__"));
    let h: History = t.run(&["history", "-o", "json"]).expect(0).json();
    assert_eq!(h.migrations.last().unwrap().version, 7);

    let w: Revision = t
        .run(&["revision", "-m", "second", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!((w.version, w.name.as_str()), (8, "second"));
    assert!(std::path::Path::new(&w.up).exists() && std::path::Path::new(&w.down).exists());

    // Into a directory that does not exist yet: it is created, starting at V1.
    let fresh = tempfile::tempdir().unwrap();
    let t2 = tenantctl(&db).migrations(&fresh.path().join("db/migrations"));
    let w: Revision = t2
        .run(&["revision", "-m", "init", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(w.version, 1);

    // A message with nothing to name the file with, and a broken directory, are refused.
    let before = std::fs::read_dir(dir.path()).unwrap().count();
    expect_error(&t.run(&["revision", "-m", "!!! ---"]), 2, &["message"]);
    std::fs::write(dir.path().join("notes.sql"), "").unwrap();
    expect_error(&t.run(&["revision", "-m", "third"]), 3, &["notes.sql"]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before + 1);
}

#[test]
fn check_is_a_read_only_gate_with_one_line_per_problem() {
    let (db, t0) = ready();
    let dir = copy_of_example_migrations();
    let t = tenantctl(&db).migrations(dir.path());
    drop(t0);
    create(&t, "alpha", &["--migrate"]);
    create(&t, "bravo", &["--migrate"]);
    let run = t.run(&["check"]);
    run.expect(0);
    assert!(run.stdout.contains("check: ok"), "{}", run.stdout);
    let c: CheckReport = t.run(&["check", "-o", "json"]).expect(0).json();
    assert!(c.ok && c.problems.is_empty());
    assert_eq!((c.head, c.tenants), (6, 2));

    // Check holds no locks: it answers while another session holds a tenant's lock.
    let mut locker = db.client();
    lock_tenant(&mut locker, "tenant_alpha");
    // Drift: a new file (both behind), an edited applied file, an unprovisioned tenant.
    std::fs::write(
        dir.path().join("V7__more.sql"),
        "CREATE TABLE more (id int);\n",
    )
    .unwrap();
    let edited =
        std::fs::read_to_string(dir.path().join("V2__households.sql")).unwrap() + "\n-- edited\n";
    std::fs::write(dir.path().join("V2__households.sql"), edited).unwrap();
    create(&t, "charlie", &[]);
    let updated_before: Vec<String> = db
        .client()
        .query(
            "SELECT updated_at::text FROM public.tenants ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let events_before: i64 = db
        .client()
        .query_one("SELECT count(*) FROM public.tenant_events", &[])
        .unwrap()
        .get(0);
    let run = t.run(&["check"]);
    run.expect(5);
    for needle in [
        "alpha (tenant_alpha): behind",
        "V7__more.sql",
        "alpha (tenant_alpha): divergent",
        "V2__households.sql",
        "charlie (tenant_charlie): unprovisioned",
        "check: ",
    ] {
        assert!(run.stdout.contains(needle), "{needle}:\n{}", run.stdout);
    }
    let c: CheckReport = t.run(&["check", "-o", "json"]).expect(5).json();
    assert!(!c.ok);
    assert_eq!(c.tenants_with_problems, 3);
    let kinds: Vec<(&str, &str)> = c
        .problems
        .iter()
        .map(|p| (p.tenant.as_str(), p.kind.as_str()))
        .collect();
    for k in [
        ("alpha", "divergent"),
        ("alpha", "behind"),
        ("bravo", "divergent"),
        ("bravo", "behind"),
        ("charlie", "unprovisioned"),
    ] {
        assert!(kinds.contains(&k), "{k:?} in {kinds:?}");
    }
    // The pending V7 is linted: its `int` column.
    assert!(
        c.lint.iter().any(|f| f.file.ends_with("V7__more.sql")
            && f.findings
                .iter()
                .any(|x| x.rule == "prefer-bigint-over-int")),
        "{:?}",
        c.lint
    );
    // Read-only: the registry and the ledger are untouched.
    let updated_after: Vec<String> = db
        .client()
        .query(
            "SELECT updated_at::text FROM public.tenants ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(updated_before, updated_after);
    let events_after: i64 = db
        .client()
        .query_one("SELECT count(*) FROM public.tenant_events", &[])
        .unwrap()
        .get(0);
    assert_eq!(events_before, events_after);
    drop(locker);

    // Setup problems come first, with exit 3.
    let fresh = TestDb::new();
    expect_error(&tenantctl(&fresh).run(&["check"]), 3, &["tenantctl init"]);
}

#[test]
fn dry_runs_print_the_sql_and_change_nothing() {
    let (db, t) = ready();
    create(&t, "ahead", &["--migrate"]);
    create(&t, "behind", &["--migrate", "--target", "4"]);
    create(&t, "fresh", &[]);
    let run = t.run(&["upgrade", "--all", "--dry-run"]);
    run.expect(0);
    let out = &run.stdout;
    assert!(
        out.contains("-- tenant ahead (schema \"tenant_ahead\"): nothing to do"),
        "{out}"
    );
    assert!(
        out.contains("-- tenant behind (schema \"tenant_behind\"): 4 -> 6"),
        "{out}"
    );
    assert!(out.contains("SET search_path TO \"tenant_behind\""));
    assert!(
        out.contains("CREATE TABLE funds"),
        "the file's own SQL is shown"
    );
    assert!(out.contains("INSERT INTO \"tenant_behind\".\"refinery_schema_history\" (version, name, applied_on, checksum) VALUES (5, 'donations'"));
    assert!(out.contains("-- tenant fresh (schema \"tenant_fresh\"): would be skipped: schema \"tenant_fresh\" does not exist"));
    assert_eq!(history_versions(&db, "tenant_behind"), [1, 2, 3, 4]);

    // Named explicitly, an unprovisioned tenant would fail: the dry run says so, exit 1.
    let d: DryRun = t
        .run(&["upgrade", "--tenant", "fresh", "--dry-run", "-o", "json"])
        .expect(1)
        .json();
    assert!(d.tenants[0]
        .error
        .as_deref()
        .unwrap()
        .contains("does not exist"));

    let d: DryRun = t
        .run(&["upgrade", "--tenant", "behind", "--dry-run", "-o", "json"])
        .expect(0)
        .json();
    assert!(d.dry_run);
    assert_eq!(d.tenants[0].versions, [5, 6]);
    assert_eq!(
        (d.tenants[0].from_revision, d.tenants[0].to_revision),
        (Some(4), Some(6))
    );

    let d: DryRun = t
        .run(&["provision", "--all", "--dry-run", "-o", "json"])
        .expect(0)
        .json();
    let fresh = d.tenants.iter().find(|x| x.domain == "fresh").unwrap();
    // What a real provision sends: the tenant's lock, the schema, the session's reset.
    let lines: Vec<&str> = fresh.sql.lines().collect();
    assert!(
        lines[0].starts_with(
            "SET lock_timeout = 0; SET statement_timeout = 0; SELECT pg_advisory_lock("
        ),
        "{}",
        fresh.sql
    );
    assert_eq!(lines[1], "CREATE SCHEMA \"tenant_fresh\";", "{}", fresh.sql);
    let last = lines.last().copied().unwrap_or_default();
    assert!(
        last.starts_with("SELECT pg_advisory_unlock_all();"),
        "{}",
        fresh.sql
    );
    assert!(d
        .tenants
        .iter()
        .find(|x| x.domain == "ahead")
        .unwrap()
        .sql
        .is_empty());
    assert!(!schema_exists(&db, "tenant_fresh"));
    let d: DryRun = t
        .run(&[
            "provision",
            "--tenant",
            "ahead",
            "--force-recreate",
            "--dry-run",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    assert!(d.tenants[0]
        .sql
        .contains("DROP SCHEMA IF EXISTS \"tenant_ahead\" CASCADE"));
    assert!(relation_exists(&db, "tenant_ahead", "members"));
}

#[test]
fn tenant_drop_asks_then_removes_row_and_schema_unless_kept() {
    let (db, t) = ready();
    create(&t, "gone", &["--migrate"]);
    create(&t, "kept", &["--migrate"]);
    expect_error(&t.run(&["tenant", "drop", "gone"]), 2, &["--yes"]);
    assert_eq!(tenant_count(&db), 2);
    assert!(schema_exists(&db, "tenant_gone"));

    let d: Dropped = t
        .run(&["tenant", "drop", "gone", "--yes", "-o", "json"])
        .expect(0)
        .json();
    assert!(d.schema_dropped);
    assert_eq!(d.tenant.domain, "gone");
    assert!(!schema_exists(&db, "tenant_gone"));
    assert_eq!(tenant_count(&db), 1);
    assert_eq!(ledger_actions(&db, "gone").last().unwrap(), "drop");

    t.run(&["tenant", "drop", "kept", "--keep-schema", "--yes"])
        .expect(0);
    assert!(schema_exists(&db, "tenant_kept") && relation_exists(&db, "tenant_kept", "members"));
    assert_eq!(tenant_count(&db), 0);
    expect_error(
        &t.run(&["tenant", "drop", "nosuch", "--yes"]),
        1,
        &["nosuch"],
    );
}

#[test]
fn tenant_drop_waits_for_an_upgrade_of_the_same_tenant() {
    let (db, t) = ready();
    create(&t, "busy", &["--migrate"]);
    let mut locker = db.client();
    lock_tenant(&mut locker, "tenant_busy");
    let mut child = t.spawn(&["tenant", "drop", "busy", "--yes"]);
    child.wait_until("the drop waits for the tenant's lock", || {
        lock_waiters(&db, "tenant_busy") == 1
    });
    assert!(child.running(), "drop must wait for the tenant's lock");
    assert!(schema_exists(&db, "tenant_busy"));
    drop(locker);
    child.finish().expect(0);
    assert!(!schema_exists(&db, "tenant_busy"));
    // An upgrade naming it afterwards finds no such tenant.
    expect_error(&t.run(&["upgrade", "--tenant", "busy"]), 1, &["busy"]);
}

#[test]
fn rotate_key_prints_a_new_key_once_and_stores_only_its_hash() {
    let (db, t) = ready();
    let c = create(&t, "keys", &[]);
    let old = c.api_key;
    let r: Rotated = t
        .run(&["tenant", "rotate-key", "keys", "-o", "json"])
        .expect(0)
        .json();
    assert_ne!(r.api_key, old);
    assert!(r.api_key.starts_with("tk_") && r.api_key.len() >= 43);
    let (hash, prefix, expected): (String, String, String) = {
        let row = db
            .client()
            .query_one(
                "SELECT api_key_hash, api_key_prefix, encode(sha256(convert_to($1, 'UTF8')), 'hex') FROM public.tenants WHERE domain = 'keys'",
                &[&r.api_key],
            )
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(hash, expected);
    assert!(r.api_key.starts_with(&prefix));
    assert_eq!(r.tenant.api_key_prefix, prefix);
    let run = t.run(&["tenant", "rotate-key", "keys"]);
    let text = &run.expect(0).stdout;
    assert_eq!(
        text.matches("tk_").count(),
        1,
        "the key is printed once:\n{text}"
    );
    assert!(ledger_actions(&db, "keys").contains(&"rotate-key".to_string()));
    expect_error(&t.run(&["tenant", "rotate-key", "nosuch"]), 1, &["nosuch"]);
}

#[test]
fn force_recreate_asks_then_empties_the_schema() {
    let (db, t) = ready();
    create(&t, "sandbox", &["--migrate"]);
    expect_error(
        &t.run(&["provision", "--tenant", "sandbox", "--force-recreate"]),
        2,
        &["--yes"],
    );
    assert!(relation_exists(&db, "tenant_sandbox", "members"));
    let r: RunReport = t
        .run(&[
            "provision",
            "--tenant",
            "sandbox",
            "--force-recreate",
            "--yes",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    assert_eq!(r.of("sandbox").status, "ok");
    assert!(schema_exists(&db, "tenant_sandbox"));
    assert!(tables_in(&db, "tenant_sandbox").is_empty());
    let row = assert_truth(&db, "sandbox", "active");
    assert_eq!(row.current_revision, None);
    t.run(&["upgrade", "--tenant", "sandbox"]).expect(0);
    assert_eq!(registry_row(&db, "sandbox").current_revision, Some(6));
}

#[test]
fn completions_and_config_show() {
    let db = TestDb::new();
    let t = tenantctl(&db).env("TENANTCTL_CONFIG", "/nonexistent/tenants.toml");
    let run = t.run(&["completions", "bash"]);
    run.expect(0);
    assert!(run.stdout.contains("tenantctl") && run.stdout.contains("upgrade"));
    expect_error(&t.run(&["completions", "tcsh"]), 2, &[]);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tenants.toml"),
        "[registry]\nschema = \"reg\"\n[run]\nconcurrency = 7\n",
    )
    .unwrap();
    let t = support::bare().cwd(dir.path());
    let run = t.run(&[
        "config",
        "show",
        "--database-url",
        "postgres://alice:s3cret-pw@db.example:6543/app",
        "-o",
        "json",
    ]);
    run.expect(0);
    assert!(!run.stdout.contains("s3cret-pw") && !run.stderr.contains("s3cret-pw"));
    let c: ConfigShown = run.json();
    let get = |k: &str| {
        c.settings
            .iter()
            .find(|e| e.key == k)
            .unwrap_or_else(|| panic!("{k}"))
            .clone()
    };
    assert_eq!(
        get("database.url").value,
        "postgres://alice@db.example:6543/app"
    );
    assert_eq!(get("database.url").source, "flag");
    assert_eq!(
        (
            get("registry.schema").value.as_str(),
            get("registry.schema").source.as_str()
        ),
        ("reg", "file")
    );
    assert_eq!(
        (
            get("run.concurrency").value.as_str(),
            get("run.concurrency").source.as_str()
        ),
        ("7", "file")
    );
    assert_eq!(get("migrations.table").source, "default");
    assert!(c.config_file.unwrap().ends_with("tenants.toml"));
    let t = support::bare()
        .cwd(dir.path())
        .env("DATABASE_URL", "postgres://bob:pw2@h/db");
    let c: ConfigShown = t.run(&["config", "show", "-o", "json"]).expect(0).json();
    let url = c.settings.iter().find(|e| e.key == "database.url").unwrap();
    assert_eq!(
        (url.value.as_str(), url.source.as_str()),
        ("postgres://bob@h:5432/db", "environment")
    );
    assert_eq!(url.origin.as_deref(), Some("DATABASE_URL"));

    // A value clap took from TENANTCTL_DATABASE_URL or TENANTCTL_MIGRATIONS is shown as
    // coming from that variable, not from the flag.
    let t = support::bare()
        .cwd(dir.path())
        .env("TENANTCTL_DATABASE_URL", "postgres://carol:pw3@h2/db2")
        .env("TENANTCTL_MIGRATIONS", "db/migrations");
    let c: ConfigShown = t.run(&["config", "show", "-o", "json"]).expect(0).json();
    let origin = |k: &str| {
        let e = c.settings.iter().find(|e| e.key == k).unwrap();
        (e.source.clone(), e.origin.clone())
    };
    assert_eq!(
        origin("database.url"),
        ("environment".into(), Some("TENANTCTL_DATABASE_URL".into()))
    );
    assert_eq!(
        origin("migrations.dir"),
        ("environment".into(), Some("TENANTCTL_MIGRATIONS".into()))
    );
    assert_eq!(
        origin("registry.schema"),
        ("file".into(), Some("registry.schema".into()))
    );
    assert_eq!(origin("migrations.table"), ("default".into(), None));
    let text = t.run(&["config", "show"]).expect(0).stdout.clone();
    let line = |k: &str| text.lines().find(|l| l.contains(k)).unwrap().to_string();
    assert!(
        line("database.url").contains("env TENANTCTL_DATABASE_URL"),
        "{text}"
    );
    assert!(
        line("migrations.dir").contains("env TENANTCTL_MIGRATIONS"),
        "{text}"
    );
    // The flag still wins over the variable, and says so.
    let text = t
        .run(&["config", "show", "--database-url", "postgres://dave@h3/db3"])
        .expect(0)
        .stdout
        .clone();
    let url = text.lines().find(|l| l.contains("database.url")).unwrap();
    assert!(
        url.contains("dave@h3") && url.contains("flag --database-url"),
        "{text}"
    );
    assert!(!text.contains("pw3"));
}

/// A dry run's plan for one domain.
fn planned<'d>(d: &'d DryRun, domain: &str) -> &'d PlannedTenant {
    d.tenants
        .iter()
        .find(|x| x.domain == domain)
        .unwrap_or_else(|| panic!("no plan for {domain} in {d:#?}"))
}

/// The last ledger entry of a domain.
fn last_entry(db: &TestDb, domain: &str) -> checks::LedgerEntry {
    checks::ledger(db, domain)
        .pop()
        .unwrap_or_else(|| panic!("{domain} has no ledger entry"))
}

#[test]
fn relative_targets_move_each_tenant_from_its_own_revision() {
    let (db, t) = ready();
    create(&t, "alpha", &["--migrate", "--target", "3"]);
    create(&t, "bravo", &["--migrate", "--target", "5"]);
    create(&t, "cobalt", &["--migrate", "--target", "1"]);

    // +1: one migration above each tenant's own revision, in the dry run as in the run.
    let d: DryRun = t
        .run(&[
            "upgrade",
            "--tenant",
            "alpha",
            "--tenant",
            "bravo",
            "+1",
            "--dry-run",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    let (a, b) = (planned(&d, "alpha"), planned(&d, "bravo"));
    assert_eq!(
        (a.from_revision, a.to_revision, a.versions.clone()),
        (Some(3), Some(4), vec![4])
    );
    assert_eq!(
        (b.from_revision, b.to_revision, b.versions.clone()),
        (Some(5), Some(6), vec![6])
    );
    let run = t.run(&["upgrade", "--tenant", "alpha", "+1", "--dry-run"]);
    run.expect(0);
    assert!(run.stdout.contains("3 -> 4"), "{}", run.stdout);
    assert_eq!(history_versions(&db, "tenant_alpha"), [1, 2, 3]);

    let r: RunReport = t
        .run(&[
            "upgrade", "--tenant", "alpha", "--tenant", "bravo", "+1", "-o", "json",
        ])
        .expect(0)
        .json();
    let (a, b) = (r.of("alpha"), r.of("bravo"));
    assert_eq!(
        (a.status.as_str(), a.from_revision, a.to_revision),
        ("ok", Some(3), Some(4))
    );
    assert_eq!(a.applied, [4]);
    assert_eq!(
        (b.from_revision, b.to_revision, b.applied.clone()),
        (Some(5), Some(6), vec![6])
    );
    assert_eq!(history_versions(&db, "tenant_alpha"), [1, 2, 3, 4]);
    // The ledger says where each tenant went, as absolute revisions.
    let e = last_entry(&db, "alpha");
    assert_eq!(
        (
            e.action.as_str(),
            e.status.as_str(),
            e.from_revision,
            e.to_revision
        ),
        ("upgrade", "ok", Some(3), Some(4))
    );
    assert_truth(&db, "alpha", "active");

    // -1: one below each tenant's own revision, as Alembic types it (no `--` needed).
    let d: DryRun = t
        .run(&[
            "downgrade",
            "--tenant",
            "alpha",
            "--tenant",
            "bravo",
            "-1",
            "--dry-run",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    let (a, b) = (planned(&d, "alpha"), planned(&d, "bravo"));
    assert_eq!(
        (a.from_revision, a.to_revision, a.versions.clone()),
        (Some(4), Some(3), vec![4])
    );
    assert_eq!(
        (b.from_revision, b.to_revision, b.versions.clone()),
        (Some(6), Some(5), vec![6])
    );
    let r: RunReport = t
        .run(&[
            "downgrade",
            "--tenant",
            "alpha",
            "--tenant",
            "bravo",
            "-1",
            "--yes",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    assert_eq!(
        (r.of("alpha").from_revision, r.of("alpha").to_revision),
        (Some(4), Some(3))
    );
    assert_eq!(
        (
            r.of("bravo").from_revision,
            r.of("bravo").to_revision,
            r.of("bravo").applied.clone()
        ),
        (Some(6), Some(5), vec![6])
    );
    let e = last_entry(&db, "bravo");
    assert_eq!(
        (
            e.action.as_str(),
            e.status.as_str(),
            e.from_revision,
            e.to_revision
        ),
        ("downgrade", "ok", Some(6), Some(5))
    );
    // -2, and after `--`.
    t.run(&["downgrade", "--tenant", "bravo", "-2", "--yes"])
        .expect(0);
    assert_eq!(history_versions(&db, "tenant_bravo"), [1, 2, 3]);
    t.run(&["downgrade", "--tenant", "bravo", "--yes", "--", "-1"])
        .expect(0);
    assert_eq!(history_versions(&db, "tenant_bravo"), [1, 2]);
    assert_truth(&db, "bravo", "active");

    // Past base or past head: refused for a named tenant (exit 1), nothing run, the
    // registry row as it was, the refusal in the ledger.
    let before = checks::stored_row(&db, "cobalt");
    let run = t.run(&[
        "downgrade",
        "--tenant",
        "cobalt",
        "-2",
        "--yes",
        "-o",
        "json",
    ]);
    run.expect(1);
    let r: RunReport = run.json();
    let x = r.of("cobalt");
    assert_eq!(x.status, "failed");
    assert!(x.applied.is_empty());
    let err = x.error.as_deref().unwrap();
    assert!(err.contains("-2") && err.contains("base"), "{err}");
    assert_eq!(history_versions(&db, "tenant_cobalt"), [1]);
    assert_eq!(checks::stored_row(&db, "cobalt"), before);
    let e = last_entry(&db, "cobalt");
    assert_eq!(
        (e.action.as_str(), e.status.as_str()),
        ("downgrade", "refused")
    );
    assert!(e.error.as_deref().unwrap().contains("base"), "{e:?}");

    let before = checks::stored_row(&db, "bravo");
    let run = t.run(&["upgrade", "--tenant", "bravo", "+5", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    let err = r.of("bravo").error.as_deref().unwrap();
    assert!(err.contains("+5") && err.contains("head"), "{err}");
    assert_eq!(history_versions(&db, "tenant_bravo"), [1, 2]);
    assert_eq!(checks::stored_row(&db, "bravo"), before);
    assert_eq!(last_entry(&db, "bravo").status, "refused");

    // Swept up by --all, a tenant the relative target does not fit is skipped (exit 0 as
    // for any skip); the others move.
    let before = checks::stored_row(&db, "alpha");
    let r: RunReport = t
        .run(&["upgrade", "--all", "+4", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("alpha").status, "skipped", "{r:#?}");
    assert!(r.of("alpha").error.as_deref().unwrap().contains("head"));
    assert_eq!(
        (r.of("bravo").from_revision, r.of("bravo").to_revision),
        (Some(2), Some(6))
    );
    assert_eq!(
        (r.of("cobalt").from_revision, r.of("cobalt").to_revision),
        (Some(1), Some(5))
    );
    assert_eq!(history_versions(&db, "tenant_alpha"), [1, 2, 3]);
    assert_eq!(checks::stored_row(&db, "alpha"), before);
    for d in ["alpha", "bravo", "cobalt"] {
        assert_truth(&db, d, "active");
    }
}

#[test]
fn wrong_way_and_malformed_targets_are_usage_errors_that_change_nothing() {
    let (db, t) = ready();
    create(&t, "demo", &["--migrate"]);
    let row = checks::stored_row(&db, "demo");
    let entries = checks::ledger(&db, "demo").len();
    let unchanged = |what: &str| {
        assert_eq!(
            checks::stored_row(&db, "demo"),
            row,
            "{what} changed the row"
        );
        assert_eq!(
            history_versions(&db, "tenant_demo"),
            [1, 2, 3, 4, 5, 6],
            "{what}"
        );
        assert_eq!(
            checks::ledger(&db, "demo").len(),
            entries,
            "{what} wrote to the ledger"
        );
    };

    // The wrong way: a usage error naming the command that goes that way.
    for (args, needle) in [
        (
            &["downgrade", "--tenant", "demo", "+1", "--dry-run"][..],
            "upgrade",
        ),
        (
            &["downgrade", "--tenant", "demo", "+1", "--yes"][..],
            "upgrade",
        ),
        (&["upgrade", "--tenant", "demo", "-1"][..], "downgrade"),
        (
            &["upgrade", "--tenant", "demo", "-1", "--dry-run"][..],
            "downgrade",
        ),
        (&["stamp", "--tenant", "demo", "+1", "--yes"][..], "stamp"),
        (&["stamp", "--tenant", "demo", "-1", "--yes"][..], "stamp"),
        (
            &["stamp", "--tenant", "demo", "-4", "--dry-run"][..],
            "stamp",
        ),
    ] {
        let run = t.run(args);
        expect_error(&run, 2, &[needle]);
        unchanged(&args.join(" "));
    }
    // Malformed, zero or out-of-range relative targets, for each command.
    let malformed = [
        "+0",
        "-0",
        "++1",
        "+-1",
        "-+1",
        "--1",
        "+99999999999",
        "-99999999999",
        "99999999999",
        "head+1",
        "head-1",
        "base+1",
        " +1",
        "+1 ",
        " 4",
        "4 ",
        "+",
        "-",
        "1.0",
        "0x1",
        "+1e3",
        "+７",
        "٣",
        "+7",
        "-7",
    ];
    for target in malformed {
        for args in [
            vec!["upgrade", "--tenant", "demo", target],
            vec!["upgrade", "--tenant", "demo", target, "--dry-run"],
            vec!["downgrade", "--tenant", "demo", target, "--yes"],
            vec!["downgrade", "--tenant", "demo", target, "--dry-run"],
            vec!["stamp", "--tenant", "demo", target, "--yes"],
        ] {
            let run = t.run(&args);
            expect_error(&run, 2, &[]);
            unchanged(&args.join(" "));
        }
    }
    // `tenant create --target` takes a version, never a relative one.
    for target in ["+1", "-1", "+0"] {
        let run = t.run(&[
            "tenant",
            "create",
            "fresh",
            "--name",
            "F",
            "--migrate",
            "--target",
            target,
        ]);
        expect_error(&run, 2, &[]);
        assert_eq!(
            checks::tenant_count(&db),
            1,
            "--target {target} registered a tenant"
        );
    }
    // What stays accepted: base, head, 0 (base) and a plain version.
    t.run(&["downgrade", "--tenant", "demo", "0", "--dry-run"])
        .expect(0);
    t.run(&["upgrade", "--tenant", "demo", "head", "--dry-run"])
        .expect(0);
    t.run(&["stamp", "--tenant", "demo", "6", "--dry-run"])
        .expect(0);
    unchanged("the accepted dry runs");
}

#[test]
fn an_upgrade_to_a_target_below_the_current_revision_is_refused_and_says_downgrade() {
    let (db, t) = ready();
    create(&t, "demo", &["--migrate"]);
    create(&t, "low", &["--migrate", "--target", "2"]);
    let row = checks::stored_row(&db, "demo");

    // Named: refused (exit 1), never "up to date"; nothing run, the row as it was.
    let run = t.run(&["upgrade", "--tenant", "demo", "4", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    let x = r.of("demo");
    assert_eq!(
        (x.status.as_str(), x.from_revision, x.to_revision),
        ("failed", Some(6), Some(6))
    );
    assert!(x.applied.is_empty());
    let err = x.error.as_deref().unwrap();
    assert!(
        err.contains("downgrade") && err.contains('4') && err.contains('6'),
        "{err}"
    );
    assert_eq!(history_versions(&db, "tenant_demo"), [1, 2, 3, 4, 5, 6]);
    assert_eq!(checks::stored_row(&db, "demo"), row);
    let e = last_entry(&db, "demo");
    assert_eq!(
        (e.action.as_str(), e.status.as_str()),
        ("upgrade", "refused")
    );
    assert!(e.error.as_deref().unwrap().contains("downgrade"), "{e:?}");
    // The metrics count that run as failed, never as the last successful upgrade.
    let m = t.run(&["metrics"]).expect(0).stdout.clone();
    assert!(
        m.contains("tenantctl_last_run_timestamp_seconds{command=\"upgrade\",result=\"failed\"}")
            && !m.contains("tenantctl_last_success_timestamp_seconds{command=\"upgrade\"}"),
        "{m}"
    );
    // In text, and in a dry run, the same refusal.
    let run = t.run(&["upgrade", "--tenant", "demo", "4"]);
    run.expect(1);
    assert!(
        run.stdout.contains("downgrade") || run.stderr.contains("downgrade"),
        "{run:?}"
    );
    let run = t.run(&[
        "upgrade",
        "--tenant",
        "demo",
        "4",
        "--dry-run",
        "-o",
        "json",
    ]);
    run.expect(1);
    let d: DryRun = run.json();
    assert!(planned(&d, "demo")
        .error
        .as_deref()
        .unwrap()
        .contains("downgrade"));
    assert_eq!(checks::stored_row(&db, "demo"), row);
    // At the target it is simply up to date.
    let r: RunReport = t
        .run(&["upgrade", "--tenant", "demo", "6", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("demo").status, "up_to_date");

    // Swept up by --all: skipped with the reason, the others go up; a skip fails no run.
    let r: RunReport = t
        .run(&["upgrade", "--all", "4", "-o", "json"])
        .expect(0)
        .json();
    let x = r.of("demo");
    assert_eq!(x.status, "skipped", "{r:#?}");
    assert!(x.error.as_deref().unwrap().contains("downgrade"), "{x:?}");
    assert_eq!(
        (r.of("low").status.as_str(), r.of("low").to_revision),
        ("ok", Some(4))
    );
    assert_eq!(checks::stored_row(&db, "demo"), row);
    assert_eq!(last_entry(&db, "demo").status, "refused");
    assert_truth(&db, "demo", "active");
    assert_truth(&db, "low", "active");

    // The other way round: a downgrade to a target above the revision says upgrade.
    let low = checks::stored_row(&db, "low");
    let run = t.run(&["downgrade", "--tenant", "low", "5", "--yes", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    assert!(
        r.of("low").error.as_deref().unwrap().contains("upgrade"),
        "{r:#?}"
    );
    assert_eq!(history_versions(&db, "tenant_low"), [1, 2, 3, 4]);
    assert_eq!(checks::stored_row(&db, "low"), low);
}
