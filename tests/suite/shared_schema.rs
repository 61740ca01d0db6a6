//! The application's shared schema (`public`), migrated with the tenants: its files in
//! `migrations/shared`, its history in `public.tenantctl_shared_history` under a lock of
//! its own; `upgrade --all` brings it to its head before the tenants (whose tables
//! reference its `plans` by foreign key); a tenant migration that says
//! `-- tenantctl: requires shared N` waits for it (held back, `skipped`, its registry
//! status untouched) and goes through once it is there; `downgrade --shared` is refused
//! while a tenant needs what it would remove; every configured server has its own; and
//! `status`, `check`, `history`, `revision` and the dry runs report it.

use std::path::Path;

use crate::checks::{expect_error, registry_row};
use crate::common_json::{
    CheckReport, DryRun, FleetStatus, Revision, RunReport, SharedHistories, SharedRun,
    SharedStatuses,
};
use crate::servers::{client_of, cluster, url_of};
use crate::support::{ready, wait_at, Gate, Tenantctl, TestDb};

const SHARED_V1: &str = "CREATE TABLE plans (id int PRIMARY KEY, name text NOT NULL);\n\
                         INSERT INTO plans VALUES (1, 'free'), (2, 'pro');\n";
const SHARED_V2: &str = "ALTER TABLE plans ADD COLUMN max_members int NOT NULL DEFAULT 50;\n";
const SHARED_V2_BROKEN: &str = "ALTER TABLE no_such_table ADD COLUMN x int;\n";

/// A migrations directory: tenant files at the top, shared files in `shared/`.
fn project(tenant: &[(&str, &str)], shared: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, body) in tenant {
        std::fs::write(d.path().join(name), body).unwrap();
    }
    if !shared.is_empty() {
        std::fs::create_dir(d.path().join("shared")).unwrap();
        for (name, body) in shared {
            std::fs::write(d.path().join("shared").join(name), body).unwrap();
        }
    }
    d
}

/// Tenant migrations: members, then a subscription whose plan is a shared plan (it
/// requires shared V2, the plan limits it copies).
fn tenant_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("V1__members.sql", "CREATE TABLE members (id serial PRIMARY KEY, name text);\n"),
        ("V1__members.down.sql", "DROP TABLE members;\n"),
        (
            "V2__subscription.sql",
            "-- the tenant's plan, one of the shared plans\n\
             -- tenantctl: requires shared 2\n\
             CREATE TABLE subscription (\n\
             \x20   plan_id int NOT NULL REFERENCES public.plans (id),\n\
             \x20   max_members int NOT NULL\n\
             );\n\
             INSERT INTO subscription SELECT id, max_members FROM public.plans WHERE name = 'free';\n",
        ),
        ("V2__subscription.down.sql", "DROP TABLE subscription;\n"),
    ]
}

fn shared_files(v2: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("V1__plans.sql", SHARED_V1),
        ("V1__plans.down.sql", "DROP TABLE plans;\n"),
        ("V2__plan_limits.sql", v2),
        (
            "V2__plan_limits.down.sql",
            "ALTER TABLE plans DROP COLUMN max_members;\n",
        ),
    ]
}

fn write(dir: &Path, file: &str, body: &str) {
    std::fs::write(dir.join(file), body).unwrap();
}

/// The shared history's versions on a database.
fn shared_versions(c: &mut postgres::Client) -> Vec<i32> {
    c.query(
        "SELECT version FROM public.tenantctl_shared_history ORDER BY version",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn tenant_versions(db: &TestDb, schema: &str) -> Vec<i32> {
    db.client()
        .query(
            &format!("SELECT version FROM \"{schema}\".refinery_schema_history ORDER BY version"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn created(t: &Tenantctl, domain: &str) {
    t.run(&["tenant", "create", domain, "--name", domain, "--provision"])
        .expect(0);
}

#[test]
fn shared_tables_are_migrated_first_and_tenant_tables_reference_them() {
    let m = project(&tenant_files(), &shared_files(SHARED_V2));
    let (db, t) = ready();
    let t = t.migrations(m.path());
    created(&t, "alpha");
    created(&t, "beta");

    // Before: the shared schema is at base with both files pending.
    let st: SharedStatuses = t
        .run(&["status", "--shared", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(st.shared.len(), 1);
    let s = &st.shared[0];
    assert_eq!(
        (s.server.as_str(), s.schema.as_str()),
        ("default", "public")
    );
    assert_eq!(
        (s.current_revision, s.pending_migrations.clone()),
        (None, vec![1, 2])
    );
    // check fails on a shared schema behind its head, and says how to fix it.
    let check = t.run(&["check"]);
    check.expect(5);
    assert!(
        check
            .stdout
            .contains("shared schema public on server default: behind"),
        "{}",
        check.stdout
    );

    // The dry run shows the shared schema's SQL first, and changes nothing.
    let dry: DryRun = t
        .run(&["upgrade", "--all", "--dry-run", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(dry.shared.len(), 1);
    assert_eq!(dry.shared[0].versions, vec![1, 2]);
    assert!(dry.shared[0].sql.contains("CREATE TABLE plans"));
    assert!(dry.shared[0].sql.contains("tenantctl_shared_history"));
    let exists: bool = db
        .client()
        .query_one("SELECT to_regclass('public.plans') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!exists, "a dry run created the shared table");

    // The run: shared first, then the tenants, whose tables reference public.plans.
    let run = t.run(&["upgrade", "--all", "-o", "json"]);
    run.expect(0);
    // Progress says so on stderr, the shared schema's line before the tenants'.
    let shared_line = run
        .stderr
        .find("upgrade shared schema \"public\" on default: ok (base -> 2, applied 1,2,");
    let tenant_line = run.stderr.find("upgrade alpha: ok");
    assert!(
        shared_line.is_some() && shared_line < tenant_line,
        "{}",
        run.stderr
    );
    let report: RunReport = run.json();
    assert_eq!(report.shared.len(), 1, "{report:?}");
    let sh = &report.shared[0];
    assert_eq!(
        (sh.status.as_str(), sh.from, sh.to, sh.applied.clone()),
        ("ok", None, Some(2), vec![1, 2])
    );
    assert_eq!(report.summary.ok, 2, "{report:?}");
    assert_eq!(shared_versions(&mut db.client()), vec![1, 2]);
    for schema in ["tenant_alpha", "tenant_beta"] {
        assert_eq!(tenant_versions(&db, schema), vec![1, 2]);
    }
    let mut c = db.client();
    c.batch_execute("INSERT INTO tenant_alpha.subscription VALUES (2, 10)")
        .unwrap();
    let e = c
        .batch_execute("INSERT INTO tenant_alpha.subscription VALUES (99, 10)")
        .unwrap_err();
    assert!(
        e.as_db_error().unwrap().message().contains("foreign key"),
        "{e}"
    );
    let copied: i32 = c
        .query_one("SELECT max_members FROM tenant_beta.subscription", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        copied, 50,
        "the tenant migration read the shared V2's column"
    );
    // The shared history is refinery's layout, written as a tenant's is.
    let row = c
        .query_one(
            "SELECT name, checksum FROM public.tenantctl_shared_history WHERE version = 1",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "plans");
    assert!(row.get::<_, String>(1).parse::<u64>().is_ok());

    // A second run has nothing to do, in the shared schema as in the tenants.
    let again: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(again.shared[0].status, "up_to_date");
    assert_eq!(again.summary.up_to_date, 2);

    // status --all and check include it.
    let fleet: FleetStatus = t.run(&["status", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(fleet.summary.shared.get("default"), Some(&Some(2)));
    assert_eq!(fleet.shared.len(), 1);
    let current: crate::common_json::Currents = t.run(&["current", "-o", "json"]).expect(0).json();
    assert_eq!(current.summary.shared.get("default"), Some(&Some(2)));
    let check: CheckReport = t.run(&["check", "-o", "json"]).expect(0).json();
    assert!(
        check.ok && check.shared[0].pending_migrations.is_empty(),
        "{check:?}"
    );

    // history --shared merges the files with the server's history.
    let h: SharedHistories = t
        .run(&["history", "--shared", "-o", "json"])
        .expect(0)
        .json();
    let states: Vec<&str> = h.shared[0]
        .migrations
        .iter()
        .map(|e| e.state.as_str())
        .collect();
    assert_eq!(states, ["applied", "applied"]);

    // revision --shared writes the next shared file; the schema is behind again.
    let written: Revision = t
        .run(&["revision", "--shared", "-m", "Add regions", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!((written.version, written.name.as_str()), (3, "add_regions"));
    assert!(Path::new(&written.up).starts_with(m.path().join("shared")));
    let header = std::fs::read_to_string(&written.up).unwrap();
    assert!(
        header.contains("search_path set to the shared schema"),
        "{header}"
    );
    let header = std::fs::read_to_string(&written.down).unwrap();
    assert!(header.contains("tenantctl downgrade --shared"), "{header}");
    write(
        &m.path().join("shared"),
        "V3__add_regions.sql",
        "CREATE TABLE regions (code text PRIMARY KEY);\n",
    );
    let check: CheckReport = t.run(&["check", "-o", "json"]).expect(5).json();
    assert_eq!(check.shared[0].pending_migrations, vec![3]);
    assert!(check.problems.is_empty(), "the tenants are fine: {check:?}");
    // upgrade --shared alone changes only the shared schema.
    let run: SharedRun = t
        .run(&["upgrade", "--shared", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(run.shared[0].applied, vec![3]);
    t.run(&["check"]).expect(0);
}

#[test]
fn a_requires_directive_holds_a_tenant_back_until_the_shared_schema_has_that_revision() {
    let m = project(&tenant_files(), &shared_files(SHARED_V2_BROKEN));
    let (db, t) = ready();
    let t = t.migrations(m.path());
    created(&t, "alpha");
    created(&t, "beta");
    // The tenants' files up to 1 require nothing shared: an upgrade to 1 leaves the
    // shared schema alone (its broken V2 is not tried).
    let first: RunReport = t
        .run(&["upgrade", "--all", "1", "-o", "json"])
        .expect(0)
        .json();
    assert!(first.shared.is_empty(), "{first:?}");
    assert_eq!(first.summary.ok, 2);
    t.run(&["upgrade", "--shared", "1"]).expect(0);

    // Shared V2 fails: the shared schema stays at 1, so the tenants stop before their
    // V2, which requires it: skipped with the reason, not failed.
    let run = t.run(&["upgrade", "--all", "-o", "json"]);
    run.expect(1);
    let report: RunReport = run.json();
    let sh = &report.shared[0];
    assert_eq!((sh.status.as_str(), sh.to), ("failed", Some(1)));
    assert!(
        sh.error.as_deref().unwrap().contains("no_such_table"),
        "{sh:?}"
    );
    for r in &report.results {
        assert_eq!(r.status, "skipped", "{r:?}");
        let e = r.error.as_deref().unwrap();
        assert!(
            e.contains("held back before V2__subscription")
                && e.contains("shared schema at revision 2")
                && e.contains("is at 1"),
            "{e}"
        );
    }
    for (domain, schema) in [("alpha", "tenant_alpha"), ("beta", "tenant_beta")] {
        assert_eq!(tenant_versions(&db, schema), vec![1]);
        let row = registry_row(&db, domain);
        assert_eq!(row.status, "active", "a held-back tenant is not failed");
        assert_eq!(row.last_error, None);
        assert_eq!(row.current_revision, Some(1));
    }
    // A tenant created meanwhile gets what it can: V1, then held back.
    let run = t.run(&[
        "tenant",
        "create",
        "gamma",
        "--name",
        "gamma",
        "--migrate",
        "-o",
        "json",
    ]);
    assert!(
        run.stdout.contains("held back") || run.stderr.contains("held back"),
        "{run:?}"
    );
    assert_eq!(tenant_versions(&db, "tenant_gamma"), vec![1]);

    // Fixed, the next run takes the shared schema to 2 and then lets the tenants through.
    write(&m.path().join("shared"), "V2__plan_limits.sql", SHARED_V2);
    let report: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(report.shared[0].applied, vec![2]);
    assert_eq!(report.summary.ok, 3, "{report:?}");
    for schema in ["tenant_alpha", "tenant_beta", "tenant_gamma"] {
        assert_eq!(tenant_versions(&db, schema), vec![1, 2]);
    }
}

#[test]
fn downgrading_the_shared_schema_is_refused_while_a_tenant_needs_what_it_removes() {
    let m = project(&tenant_files(), &shared_files(SHARED_V2));
    let (db, t) = ready();
    let t = t.migrations(m.path());
    created(&t, "alpha");
    created(&t, "beta");
    t.run(&["upgrade", "--all"]).expect(0);
    t.run(&["downgrade", "--tenant", "alpha", "1", "--yes"])
        .expect(0);

    // beta has applied V2, which requires shared 2: refused, naming it, nothing changed.
    let dry = t.run(&["downgrade", "--shared", "1", "--dry-run"]);
    dry.expect(1);
    assert!(
        dry.stdout.contains("beta (V2 requires shared 2)"),
        "{}",
        dry.stdout
    );
    let refused = t.run(&["downgrade", "--shared", "1", "--yes"]);
    expect_error(
        &refused,
        1,
        &["beta (V2 requires shared 2)", "nothing was changed"],
    );
    assert!(!refused.stderr.contains("alpha"), "{}", refused.stderr);
    assert_eq!(shared_versions(&mut db.client()), vec![1, 2]);
    let column: bool = db
        .client()
        .query_one(
            "SELECT count(*) = 1 FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = 'plans' AND column_name = 'max_members'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(column);
    // base goes below shared 1 too: the same refusal.
    expect_error(
        &t.run(&["downgrade", "--shared", "base", "--yes"]),
        1,
        &["beta"],
    );

    // Without a terminal, a downgrade that would run asks for --yes.
    t.run(&["downgrade", "--tenant", "beta", "1", "--yes"])
        .expect(0);
    expect_error(&t.run(&["downgrade", "--shared", "1"]), 2, &["--yes"]);
    assert_eq!(shared_versions(&mut db.client()), vec![1, 2]);
    let run: SharedRun = t
        .run(&["downgrade", "--shared", "1", "--yes", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(
        (
            run.shared[0].from,
            run.shared[0].to,
            run.shared[0].applied.clone()
        ),
        (Some(2), Some(1), vec![2])
    );
    assert_eq!(shared_versions(&mut db.client()), vec![1]);

    // stamp --shared records without running; going down it asks, as a stamp of
    // tenants does.
    t.run(&["stamp", "--shared", "2", "--yes"]).expect(0);
    assert_eq!(shared_versions(&mut db.client()), vec![1, 2]);
    expect_error(&t.run(&["stamp", "--shared", "1"]), 2, &["--yes"]);
}

#[test]
fn broken_shared_setups_are_refused_before_anything_runs() {
    let (db, t) = ready();
    let requiring = tenant_files();
    // A directive with no shared schema at all.
    let m = project(&requiring, &[]);
    let t2 = t.clone().migrations(m.path());
    expect_error(
        &t2.run(&["upgrade", "--all"]),
        3,
        &["V2__subscription.sql", "no shared schema"],
    );
    expect_error(
        &t2.run(&["upgrade", "--shared"]),
        3,
        &["there is no shared schema"],
    );
    // A directive above the shared head.
    let m = project(&requiring, &shared_files(SHARED_V2)[..2]);
    let t3 = t.clone().migrations(m.path());
    expect_error(
        &t3.run(&["upgrade", "--all"]),
        3,
        &["requires shared revision 2", "its head is 1"],
    );
    // A directive that is not a version, and one in a shared file.
    let mut bad = tenant_files();
    bad[2].1 = "-- tenantctl: requires shared two\nSELECT 1;\n";
    let m = project(&bad, &shared_files(SHARED_V2));
    expect_error(
        &t.clone().migrations(m.path()).run(&["status", "--all"]),
        3,
        &["V2__subscription.sql:1", "positive whole number"],
    );
    let mut shared = shared_files(SHARED_V2);
    shared[2].1 = "-- tenantctl: requires shared 1\nSELECT 1;\n";
    let m = project(&tenant_files()[..2], &shared);
    expect_error(
        &t.clone().migrations(m.path()).run(&["upgrade", "--shared"]),
        3,
        &["is for tenant migrations"],
    );
    // --shared selects servers, not tenants.
    let m = project(&tenant_files(), &shared_files(SHARED_V2));
    let t = t.migrations(m.path());
    for args in [
        &["upgrade", "--shared", "--all"][..],
        &["upgrade", "--shared", "--tenant", "x"],
        &["downgrade", "--shared", "1", "--type", "church"],
        &["status", "--shared", "--all"],
        &["history", "--shared", "--tenant", "x"],
    ] {
        let run = t.run(args);
        run.expect(2);
        assert!(
            run.stderr.contains("cannot be used with"),
            "{args:?}: {}",
            run.stderr
        );
    }
    expect_error(
        &t.run(&["upgrade", "--shared", "--server", "nowhere"]),
        2,
        &["nowhere"],
    );
    expect_error(&t.run(&["upgrade", "--shared", "7"]), 2, &["7"]);
    // Nothing of it reached the database.
    let exists: bool = db
        .client()
        .query_one(
            "SELECT to_regclass('public.tenantctl_shared_history') IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!exists);
}

/// The shared schema's lock is its own: a run waiting on a shared migration holds it,
/// and a second `upgrade --shared` waits for it (and gives up at `run.lock_wait`), while
/// tenants' own locks are free.
#[test]
fn the_shared_schema_has_a_lock_of_its_own() {
    const GATE: i64 = 7241;
    let gated = format!("{}{SHARED_V1}", wait_at(GATE));
    let m = project(&tenant_files()[..2], &[("V1__plans.sql", gated.as_str())]);
    let (db, t) = ready();
    let config = tempfile::tempdir().unwrap();
    write(config.path(), "tenants.toml", "[run]\nlock_wait = \"1s\"\n");
    let t = t.migrations(m.path()).cwd(config.path());
    created(&t, "alpha");
    let mut gate = Gate::advisory(&db.url, GATE);
    let mut first = t.spawn(&["upgrade", "--shared"]);
    first.wait_until("the first run waits at the gate in shared V1", || {
        gate.blocked_tenantctl().len() == 1
    });
    let second = t.run(&["upgrade", "--shared", "-o", "json"]);
    second.expect(1);
    let run: SharedRun = second.json();
    let e = run.shared[0].error.as_deref().unwrap();
    assert!(
        e.contains("gave up waiting for the lock on the shared schema \"public\""),
        "{e}"
    );
    // A tenant's lock is not the shared schema's: a change that does not touch the
    // shared schema goes ahead. (An upgrade would wait for it first: it brings the
    // shared schema to its head before the tenants.)
    t.run(&["stamp", "--tenant", "alpha", "1", "--yes"])
        .expect(0);
    assert_eq!(tenant_versions(&db, "tenant_alpha"), vec![1]);
    gate.open();
    first.finish().expect(0);
    assert_eq!(shared_versions(&mut db.client()), vec![1]);
}

/// Tenant tables can only reference shared tables in their own database: every server
/// has its own shared schema, migrated before its tenants; `--server` picks one.
#[test]
fn every_server_has_its_own_shared_schema() {
    let (db, t) = ready();
    let b = cluster();
    let m = project(&tenant_files(), &shared_files(SHARED_V2));
    let config = tempfile::tempdir().unwrap();
    write(
        config.path(),
        "tenants.toml",
        &format!("[servers.b]\nurl = \"{}\"\n", url_of(&b)),
    );
    let t = t.migrations(m.path()).cwd(config.path());
    t.run(&[
        "tenant",
        "create",
        "on-default",
        "--name",
        "d",
        "--provision",
        "--server",
        "default",
    ])
    .expect(0);

    // Only server b's shared schema, by --server.
    let run: SharedRun = t
        .run(&["upgrade", "--shared", "--server", "b", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(run.shared.len(), 1);
    assert_eq!(
        (run.shared[0].server.as_str(), run.shared[0].to),
        ("b", Some(2))
    );
    assert_eq!(shared_versions(&mut client_of(&b)), vec![1, 2]);
    let st: SharedStatuses = t
        .run(&["status", "--shared", "-o", "json"])
        .expect(0)
        .json();
    let revisions: Vec<(String, Option<i32>)> = st
        .shared
        .iter()
        .map(|s| (s.server.clone(), s.current_revision))
        .collect();
    assert_eq!(
        revisions,
        [("default".to_string(), None), ("b".to_string(), Some(2))]
    );

    // A tenant on b only: upgrade --tenant touches b's shared schema (up to date), not
    // default's.
    t.run(&[
        "tenant",
        "create",
        "on-b",
        "--name",
        "b",
        "--provision",
        "--server",
        "b",
    ])
    .expect(0);
    let report: RunReport = t
        .run(&["upgrade", "--tenant", "on-b", "-o", "json"])
        .expect(0)
        .json();
    let servers: Vec<(&str, &str)> = report
        .shared
        .iter()
        .map(|s| (s.server.as_str(), s.status.as_str()))
        .collect();
    assert_eq!(servers, [("b", "up_to_date")]);
    let tables_on_b: i64 = client_of(&b)
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conname LIKE 'subscription_plan_id_fkey' \
             AND connamespace = 'tenant_on_b'::regnamespace",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        tables_on_b, 1,
        "on-b's subscription references b's public.plans"
    );

    // --all takes every server's shared schema first, default's included.
    let report: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    let servers: Vec<(&str, Option<i32>)> = report
        .shared
        .iter()
        .map(|s| (s.server.as_str(), s.to))
        .collect();
    assert_eq!(servers, [("default", Some(2)), ("b", Some(2))]);
    assert_eq!(shared_versions(&mut db.client()), vec![1, 2]);
    let fleet: FleetStatus = t.run(&["status", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(fleet.summary.shared.len(), 2);
    assert!(fleet.summary.shared.values().all(|v| *v == Some(2)));
}

/// The service reports the shared schema as the command line does: in
/// `GET /api/fleet/status`, on the dashboard and as `tenantctl_shared_revision{server}`
/// (also from `tenantctl metrics`).
#[test]
fn the_service_and_the_metrics_show_each_servers_shared_revision() {
    let m = project(&tenant_files(), &shared_files(SHARED_V2));
    let (_db, t) = ready();
    let t = t.migrations(m.path());
    created(&t, "alpha");
    t.run(&["upgrade", "--shared", "1"]).expect(0);
    let text = t.run(&["metrics"]).expect(0).stdout.clone();
    assert!(
        text.contains("tenantctl_shared_head_revision 2\n"),
        "{text}"
    );
    assert!(
        text.contains("tenantctl_shared_revision{server=\"default\"} 1\n"),
        "{text}"
    );
    // -o json: the same samples as one JSON document.
    let json: serde_json::Value = t.run(&["metrics", "-o", "json"]).expect(0).json();
    let sample = json["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tenantctl_shared_revision")
        .cloned()
        .unwrap_or_default();
    assert_eq!(sample["labels"]["server"], "default", "{json}");
    assert_eq!(sample["value"], 1.0, "{json}");

    let s = crate::serve::start(&t);
    let fleet: FleetStatus = s.get("/api/fleet/status").expect(200).json();
    assert_eq!(fleet.summary.shared.get("default"), Some(&Some(1)));
    assert_eq!(fleet.shared[0].pending_migrations, vec![2]);
    let page = s.get("/").expect(200).body.clone();
    assert!(page.contains("<h2>Shared schema</h2>"), "{page}");
    assert!(
        page.contains("<td>default</td><td>public</td><td>1</td><td>2</td>"),
        "{page}"
    );
    let metrics = s.get("/metrics").expect(200).body.clone();
    assert!(
        metrics.contains("tenantctl_shared_revision{server=\"default\"} 1\n"),
        "{metrics}"
    );
    // Once an upgrade has run, the shared schema is at its head there too.
    t.run(&["upgrade", "--all"]).expect(0);
    let metrics = s.get("/metrics").expect(200).body.clone();
    assert!(
        metrics.contains("tenantctl_shared_revision{server=\"default\"} 2\n"),
        "{metrics}"
    );
}

/// A shared schema of another name is created by its first upgrade, and can never
/// become a tenant's schema.
#[test]
fn a_shared_schema_of_its_own_name_is_created_and_never_given_to_a_tenant() {
    let (db, t) = ready();
    let m = project(&tenant_files()[..2], &[]);
    let shared = tempfile::tempdir().unwrap();
    write(shared.path(), "V1__plans.sql", SHARED_V1);
    let config = tempfile::tempdir().unwrap();
    write(
        config.path(),
        "tenants.toml",
        &format!(
            "[shared]\ndir = \"{}\"\nschema = \"common\"\n",
            shared.path().display()
        ),
    );
    let t = t.migrations(m.path()).cwd(config.path());
    let run: SharedRun = t
        .run(&["upgrade", "--shared", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(
        (run.shared[0].schema.as_str(), run.shared[0].to),
        ("common", Some(1))
    );
    let rows: i64 = db
        .client()
        .query_one("SELECT count(*) FROM common.plans", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 2);
    let versions: i64 = db
        .client()
        .query_one("SELECT count(*) FROM common.tenantctl_shared_history", &[])
        .unwrap()
        .get(0);
    assert_eq!(versions, 1);
    expect_error(
        &t.run(&["tenant", "create", "x", "--name", "x", "--schema", "common"]),
        2,
        &["shared schema", "Nothing was registered"],
    );
}

/// Two server entries that are one database would have the second shared lock wait for
/// the first forever: refused before any lock is taken, with nothing changed.
#[test]
fn two_servers_that_are_one_database_are_refused_not_hung() {
    let (db, t) = ready();
    let m = project(&tenant_files()[..2], &shared_files(SHARED_V2));
    let config = tempfile::tempdir().unwrap();
    // The same database, once by 127.0.0.1 and once by localhost.
    let alias = db.url.replace("127.0.0.1", "localhost");
    assert_ne!(alias, db.url, "the test database URL names 127.0.0.1");
    write(
        config.path(),
        "tenants.toml",
        &format!("[servers.b]\nurl = \"{alias}\"\n"),
    );
    let t = t.migrations(m.path()).cwd(config.path());
    for args in [
        &["upgrade", "--shared"][..],
        &["upgrade", "--all"],
        &["stamp", "--shared", "1", "--yes"],
        &["downgrade", "--shared", "base", "--yes"],
        &["upgrade", "--shared", "--dry-run"],
        &["status", "--shared"],
        &["check"],
    ] {
        expect_error(
            &t.run(args),
            3,
            &["servers default and b are the same database"],
        );
    }
    let exists: bool = db
        .client()
        .query_one(
            "SELECT to_regclass('public.tenantctl_shared_history') IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!exists);
}

/// What cannot be shown not to need the shared schema keeps it: a tenant whose history
/// cannot be read, or is gone while the registry records a requiring revision, refuses
/// a downgrade and a stamp below it; a refused downgrade's dry run shows every server
/// not run.
#[test]
fn a_tenant_that_cannot_be_read_keeps_the_shared_schema_from_going_down() {
    let m = project(&tenant_files(), &shared_files(SHARED_V2));
    let (db, t) = ready();
    let t = t.migrations(m.path());
    created(&t, "alpha");
    t.run(&["upgrade", "--all"]).expect(0);
    let mut c = db.client();
    c.batch_execute(
        "UPDATE tenant_alpha.refinery_schema_history SET checksum = 'garbage' WHERE version = 1",
    )
    .unwrap();
    let refused = t.run(&["downgrade", "--shared", "1", "--yes"]);
    expect_error(
        &refused,
        1,
        &["alpha (its history cannot be read", "nothing was changed"],
    );
    c.batch_execute(
        "UPDATE tenant_alpha.refinery_schema_history SET checksum = '1' WHERE version = 1; \
         ALTER TABLE tenant_alpha.refinery_schema_history RENAME TO hidden",
    )
    .unwrap();
    let refused = t.run(&["downgrade", "--shared", "1", "--yes"]);
    expect_error(
        &refused,
        1,
        &["alpha (its history is missing; the registry records revision 2, past V2 requires shared 2)"],
    );
    // A stamp that forgets shared V2 is refused the same way.
    expect_error(
        &t.run(&["stamp", "--shared", "1", "--yes"]),
        1,
        &["refusing to stamp"],
    );
    // A history emptied by hand, while the registry records revision 2: refused too.
    c.batch_execute(
        "ALTER TABLE tenant_alpha.hidden RENAME TO refinery_schema_history; \
         DELETE FROM tenant_alpha.refinery_schema_history",
    )
    .unwrap();
    expect_error(
        &t.run(&["downgrade", "--shared", "1", "--yes"]),
        1,
        &["alpha (its history lacks V2, but the registry records revision 2"],
    );
    let dry: DryRun = t
        .run(&["downgrade", "--shared", "1", "--dry-run", "-o", "json"])
        .expect(1)
        .json();
    assert!(dry.shared[0].error.as_deref().unwrap().contains("alpha"));
    assert_eq!(shared_versions(&mut db.client()), vec![1, 2]);
}

/// A requires directive needs version N itself: a shared schema at a higher revision
/// that lacks N (a branch merged out of order) holds the tenant back.
#[test]
fn a_shared_version_missing_below_the_head_holds_back_the_tenants_that_require_it() {
    let (db, t) = ready();
    let m = project(
        &tenant_files()[..2],
        &[
            ("V1__plans.sql", SHARED_V1),
            ("V3__other.sql", "CREATE TABLE other (id int);\n"),
        ],
    );
    let t = t.migrations(m.path());
    created(&t, "alpha");
    t.run(&["upgrade", "--all"]).expect(0);
    write(&m.path().join("shared"), "V2__plan_limits.sql", SHARED_V2);
    for (name, body) in &tenant_files()[2..] {
        write(m.path(), name, body);
    }
    // The shared upgrade refuses V2 below its head; the tenant is held back, not failed.
    let report: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(1).json();
    assert_eq!(report.shared[0].status, "failed");
    let r = &report.results[0];
    assert_eq!(r.status, "skipped", "{r:?}");
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("is at 3 without version 2 applied"),
        "{r:?}"
    );
    assert_eq!(registry_row(&db, "alpha").status, "active");
    assert_eq!(tenant_versions(&db, "tenant_alpha"), vec![1]);
}

/// A shared schema without tenantctl's history that already holds the application's
/// tables is not migrated over them: the upgrade is refused, pointing at stamp --shared
/// (or adopt alembic), and nothing runs.
#[test]
fn shared_migrations_never_run_over_tables_without_a_shared_history() {
    let (db, t) = ready();
    let m = project(&tenant_files()[..2], &shared_files(SHARED_V2));
    let t = t.migrations(m.path());
    let mut c = db.client();
    // The application's own table, made before tenantctl knew the shared schema.
    c.batch_execute(
        "CREATE TABLE public.plans (id int PRIMARY KEY, name text NOT NULL); \
         INSERT INTO public.plans VALUES (1, 'free'), (2, 'pro')",
    )
    .unwrap();
    let run = t.run(&["upgrade", "--shared", "-o", "json"]);
    run.expect(1);
    let out: SharedRun = run.json();
    let e = out.shared[0].error.as_deref().unwrap();
    assert!(
        e.contains("no tenantctl history but holds 1 object")
            && e.contains("tenantctl stamp --shared VERSION"),
        "{e}"
    );
    let rows: i64 = c
        .query_one("SELECT count(*) FROM public.plans", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 2);
    // Stamped at what it matches, the rest runs.
    t.run(&["stamp", "--shared", "1", "--yes"]).expect(0);
    t.run(&["upgrade", "--shared"]).expect(0);
    assert_eq!(shared_versions(&mut c), vec![1, 2]);
    // The history dropped by hand: the same refusal, not a second run of V1.
    c.batch_execute("DROP TABLE public.tenantctl_shared_history")
        .unwrap();
    t.run(&["upgrade", "--shared"]).expect(1);
    let rows: i64 = c
        .query_one("SELECT count(*) FROM public.plans", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 2);
}

/// A header line written as a directive must be one exactly; a misspelt one is refused
/// before anything runs, never taken for a comment.
#[test]
fn a_misspelt_directive_is_refused_before_anything_runs() {
    let (_db, t) = ready();
    let mut files = tenant_files();
    files[2].1 = "-- TENANTCTL: requires shared 2\nSELECT 1;\n";
    let m = project(&files, &shared_files(SHARED_V2));
    expect_error(
        &t.migrations(m.path()).run(&["upgrade", "--all"]),
        3,
        &["V2__subscription.sql:1", "not a tenantctl directive"],
    );
}

/// A failed shared downgrade says where it stopped; --metrics-textfile works with
/// --shared; a shared schema that is a tenant's is refused; an unreadable shared history
/// is drift.
#[test]
fn shared_runs_report_where_they_stopped_and_write_their_metrics() {
    let (db, t) = ready();
    let m = project(
        &[
            (
                "V1__subs.sql",
                "CREATE TABLE subs (plan_id int REFERENCES public.plans (id));\n",
            ),
            ("V1__subs.down.sql", "DROP TABLE subs;\n"),
        ],
        &shared_files(SHARED_V2),
    );
    let t = t.migrations(m.path());
    created(&t, "alpha");
    t.run(&["upgrade", "--all"]).expect(0);
    // V2's down script runs; V1's fails on the tenant's foreign key.
    let prom = tempfile::tempdir().unwrap();
    let file = prom.path().join("tenantctl.prom");
    let out: SharedRun = t
        .run(&[
            "downgrade",
            "--shared",
            "base",
            "--yes",
            "-o",
            "json",
            "--metrics-textfile",
            file.to_str().unwrap(),
        ])
        .expect(1)
        .json();
    let r = &out.shared[0];
    assert_eq!(
        (r.from, r.to, r.applied.clone()),
        (Some(2), Some(1), vec![2])
    );
    assert!(
        r.error.as_deref().unwrap().contains("subs_plan_id_fkey"),
        "{r:?}"
    );
    let metrics = std::fs::read_to_string(&file).unwrap();
    assert!(
        metrics.contains("tenantctl_shared_revision{server=\"default\"} 1\n"),
        "{metrics}"
    );
    // An unreadable shared history is drift (5), not an unreachable server (3).
    db.client()
        .batch_execute("ALTER TABLE public.tenantctl_shared_history ALTER COLUMN checksum DROP NOT NULL; UPDATE public.tenantctl_shared_history SET checksum = NULL")
        .unwrap();
    let check = t.run(&["check"]);
    check.expect(5);
    assert!(
        check.stdout.contains("history unreadable"),
        "{}",
        check.stdout
    );
    // A shared schema that is a tenant's.
    let config = tempfile::tempdir().unwrap();
    write(
        config.path(),
        "tenants.toml",
        "[shared]\nschema = \"tenant_alpha\"\n",
    );
    expect_error(
        &t.clone().cwd(config.path()).run(&["upgrade", "--shared"]),
        3,
        &["is tenant alpha's schema"],
    );
}
