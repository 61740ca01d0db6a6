//! The three workflows from the issue (full automatic setup, step by step, existing
//! tenants getting a new migration), plus how the registry tracks reality through failed
//! migrations, partial bulk failures, `--fail-fast`, unprovisioned tenants, provisioning
//! an existing schema, and tenant references by domain, id and schema name.

use crate::{checks, common_json, support};
use checks::{
    assert_truth, create, expect_error, history_versions, relation_exists, schema_exists,
};
use common_json::*;
use support::{copy_of_example_migrations, ready};

fn write(dir: &std::path::Path, name: &str, sql: &str) {
    std::fs::write(dir.join(name), sql).unwrap();
}

/// Pulls the `tk_...` key out of text output.
fn key_in(text: &str) -> String {
    let start = text.find("tk_").expect("an API key in the output");
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

#[test]
fn full_automatic_setup_provisions_migrates_and_stores_only_the_key_hash() {
    let (db, t) = ready();
    let run = t.run(&[
        "tenant",
        "create",
        "demo-church",
        "--name",
        "Demo Church",
        "--email",
        "admin@demo-church.com",
        "--type",
        "church",
        "--provision",
        "--migrate",
        "-o",
        "json",
    ]);
    run.expect(0);
    let c: Created = run.json();

    let tn = &c.tenant;
    assert_eq!(tn.domain, "demo-church");
    assert_eq!(tn.tenant_name, "Demo Church");
    assert_eq!(tn.email.as_deref(), Some("admin@demo-church.com"));
    assert_eq!(tn.tenant_type, "church");
    assert_eq!(tn.schema_name, "tenant_demo_church");
    assert!(tn.schema_provisioned);
    assert!(tn.migrations_applied);
    assert_eq!(tn.current_revision, Some(6));
    assert_eq!(tn.status, "active");
    assert_eq!(tn.last_error, None);
    assert!(c.schema_created);
    assert!(c.migrations_applied);
    let ms = &c.migration_status;
    assert_eq!(ms.tenant_id, tn.id);
    assert_eq!(ms.current_revision, Some(6));
    assert!(ms.pending_migrations.is_empty(), "{ms:?}");
    assert!(ms.schema_provisioned && ms.migrations_applied);
    assert!(ms.drift.is_empty() && ms.history_error.is_none());

    // The key: long, marked, shown once, never on stderr.
    let key = &c.api_key;
    assert!(key.starts_with("tk_"), "{key}");
    assert!(key.len() >= 43, "key too short: {key}");
    assert!(key.starts_with(&tn.api_key_prefix) && tn.api_key_prefix.len() < key.len() / 2);
    assert_eq!(run.stdout.matches(key.as_str()).count(), 1);
    assert!(!run.stderr.contains(key.as_str()));

    // The registry stores its SHA-256 and never the key (in any column).
    let mut client = db.client();
    let row = client
        .query_one(
            "SELECT api_key_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex'), api_key_hash \
             FROM public.tenants WHERE domain = 'demo-church'",
            &[key],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0), "api_key_hash is not sha256(key)");
    let hash: String = row.get(1);
    assert!(!run.stdout.contains(&hash), "the hash must not be printed");
    let leaks: i64 = client
        .query_one(
            "SELECT count(*) FROM public.tenants t WHERE strpos(row_to_json(t)::text, $1) > 0",
            &[key],
        )
        .unwrap()
        .get(0);
    assert_eq!(leaks, 0, "the API key is stored in the registry");
    assert_truth(&db, "demo-church", "active");
    assert_eq!(
        history_versions(&db, "tenant_demo_church"),
        [1, 2, 3, 4, 5, 6]
    );

    // Text mode prints the key exactly once, on stdout.
    let run = t.run(&[
        "tenant",
        "create",
        "second",
        "--name",
        "Second",
        "--migrate",
    ]);
    run.expect(0);
    let key = key_in(&run.stdout);
    assert!(key.len() >= 43, "{key}");
    assert_eq!(run.stdout.matches("tk_").count(), 1, "{}", run.stdout);
    assert!(!run.stderr.contains(&key));
    assert_ne!(&key, &c.api_key, "two tenants got the same key");
    let ok: bool = client
        .query_one(
            "SELECT api_key_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex') \
             FROM public.tenants WHERE domain = 'second'",
            &[&key],
        )
        .unwrap()
        .get(0);
    assert!(ok, "the printed key does not match the stored hash");
    assert_truth(&db, "second", "active");
}

#[test]
fn step_by_step_create_provision_upgrade_to_4_then_to_head() {
    let (db, t) = ready();
    let c = create(&t, "demo-church", &[]);
    assert!(!c.schema_created && !c.migrations_applied);
    assert_eq!(c.tenant.status, "pending");
    assert!(!c.tenant.schema_provisioned);
    assert_eq!(c.tenant.current_revision, None);
    assert_eq!(c.migration_status.pending_versions(), [1, 2, 3, 4, 5, 6]);
    assert!(c.message.contains("tenantctl provision"), "{}", c.message);
    assert!(!schema_exists(&db, "tenant_demo_church"));
    assert_truth(&db, "demo-church", "pending");

    let r: RunReport = t
        .run(&["provision", "--tenant", "demo-church", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.results.len(), 1);
    assert_eq!(r.results[0].status, "ok");
    assert_eq!(r.results[0].schema_name, "tenant_demo_church");
    assert_eq!((r.summary.total, r.summary.ok), (1, 1));
    assert!(schema_exists(&db, "tenant_demo_church"));
    assert!(history_versions(&db, "tenant_demo_church").is_empty());
    assert_truth(&db, "demo-church", "active");

    let r: RunReport = t
        .run(&["upgrade", "--tenant", "demo-church", "4", "-o", "json"])
        .expect(0)
        .json();
    let res = r.of("demo-church");
    assert_eq!(res.status, "ok");
    assert_eq!(res.applied, [1, 2, 3, 4]);
    assert_eq!((res.from_revision, res.to_revision), (None, Some(4)));
    assert_eq!(res.error, None);
    assert_eq!(history_versions(&db, "tenant_demo_church"), [1, 2, 3, 4]);
    assert_truth(&db, "demo-church", "active");

    let s: TenantStatus = t
        .run(&["status", "--tenant", "demo-church", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(s.current_revision, Some(4));
    assert_eq!(
        s.pending_migrations,
        [
            Pending {
                version: 5,
                name: "donations".into()
            },
            Pending {
                version: 6,
                name: "ai_notes".into()
            }
        ]
    );
    assert!(s.schema_provisioned && s.migrations_applied);
    assert!(s.drift.is_empty());

    let r: RunReport = t
        .run(&["upgrade", "--tenant", "demo-church", "head", "-o", "json"])
        .expect(0)
        .json();
    let res = r.of("demo-church");
    assert_eq!(res.applied, [5, 6]);
    assert_eq!((res.from_revision, res.to_revision), (Some(4), Some(6)));
    assert_eq!(
        history_versions(&db, "tenant_demo_church"),
        [1, 2, 3, 4, 5, 6]
    );
    assert_truth(&db, "demo-church", "active");

    // Nothing left to do is success.
    let r: RunReport = t
        .run(&["upgrade", "--tenant", "demo-church", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("demo-church").status, "up_to_date");
    assert!(r.of("demo-church").applied.is_empty());
    assert_eq!(r.summary.up_to_date, 1);

    // show and list agree.
    let shown: Shown = t
        .run(&["tenant", "show", "demo-church", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(shown.tenant.current_revision, Some(6));
    assert!(shown.migration_status.pending_migrations.is_empty());
    let list: Listing = t.run(&["tenant", "list", "-o", "json"]).expect(0).json();
    assert_eq!(list.summary.total, 1);
    assert_eq!(list.summary.by_status.get("active"), Some(&1));
    assert_eq!(list.tenants[0].domain, "demo-church");
    assert_eq!(list.tenants[0].current_revision, Some(6));
}

#[test]
fn existing_tenants_at_head_get_a_new_migration_with_upgrade_all() {
    let (db, t) = ready();
    let dir = copy_of_example_migrations();
    let t = t.migrations(dir.path());
    let domains = ["first-church", "second-church", "third-church"];
    for d in domains {
        assert_eq!(
            create(&t, d, &["--migrate"]).tenant.current_revision,
            Some(6)
        );
    }
    write(
        dir.path(),
        "V7__volunteers.sql",
        "-- V7: volunteers\nCREATE TABLE volunteers (\n    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n    member_id bigint NOT NULL REFERENCES members (id),\n    role text NOT NULL\n);\n",
    );

    let s: FleetStatus = t.run(&["status", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(s.tenants.len(), 3);
    for ts in &s.tenants {
        assert_eq!(ts.current_revision, Some(6), "{ts:?}");
        assert_eq!(
            ts.pending_migrations,
            [Pending {
                version: 7,
                name: "volunteers".into()
            }]
        );
    }
    assert_eq!((s.summary.total, s.summary.head), (3, 7));
    assert_eq!((s.summary.behind, s.summary.at_head), (3, 0));
    assert_eq!(s.summary.by_revision.get("6"), Some(&3));

    let r: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(
        r.results
            .iter()
            .map(|x| x.domain.as_str())
            .collect::<Vec<_>>(),
        domains
    );
    for res in &r.results {
        assert_eq!(res.status, "ok");
        assert_eq!(res.applied, [7]);
        assert_eq!((res.from_revision, res.to_revision), (Some(6), Some(7)));
    }
    assert_eq!((r.summary.total, r.summary.ok, r.summary.failed), (3, 3, 0));

    let cur: Currents = t.run(&["current", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(cur.tenants.len(), 3);
    for x in &cur.tenants {
        assert_eq!(x.current_revision, Some(7), "{x:?}");
        assert!(x.at_head);
    }
    assert_eq!(cur.summary.at_head, 3);

    for d in domains {
        let row = assert_truth(&db, d, "active");
        assert!(relation_exists(&db, &row.schema_name, "volunteers"));
    }
    let h: History = t
        .run(&["history", "--tenant", "second-church", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(
        h.migrations.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 7]
    );
    let v7 = h.migrations.last().unwrap();
    assert_eq!(
        (v7.name.as_str(), v7.state.as_str()),
        ("volunteers", "applied")
    );
    assert_eq!(v7.applied, Some(true));
    assert!(
        v7.applied_on.as_deref().is_some_and(|s| s.len() >= 20),
        "{v7:?}"
    );
    assert!(h.migrations.iter().all(|e| e.applied == Some(true)));

    // Without a tenant, history lists the files only.
    let h: History = t.run(&["history", "-o", "json"]).expect(0).json();
    assert_eq!(h.migrations.len(), 7);
    assert!(h
        .migrations
        .iter()
        .all(|e| e.applied.is_none() && e.applied_on.is_none() && e.state == "file"));
    assert!(h.migrations[..6].iter().all(|e| e.has_down));
    assert!(!h.migrations[6].has_down);
}

#[test]
fn a_failing_migration_rolls_back_and_the_registry_says_failed_until_fixed() {
    let (db, t) = ready();
    let dir = copy_of_example_migrations();
    let t = t.migrations(dir.path());
    create(&t, "demo-church", &["--migrate"]);
    let schema = "tenant_demo_church";
    write(
        dir.path(),
        "V7__broken.sql",
        "-- V7: bénévoles ✓ (volunteers), with a mistake on line 5\nCREATE TABLE volunteers (id int PRIMARY KEY);\nINSERT INTO volunteers VALUES (1);\n\nSELECT no_such_function(1);\n",
    );

    let run = t.run(&["upgrade", "--tenant", "demo-church", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    let res = r.of("demo-church");
    assert_eq!(res.status, "failed");
    let err = res.error.as_deref().unwrap();
    assert!(err.contains("V7__broken.sql"), "{err}");
    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains("no_such_function"), "{err}");
    assert!(res.applied.is_empty());
    assert_eq!(res.to_revision, Some(6));
    assert_eq!((r.summary.failed, r.summary.total), (1, 1));
    // Rolled back: still at 6, and the failing file's earlier statements left nothing.
    assert_eq!(history_versions(&db, schema), [1, 2, 3, 4, 5, 6]);
    assert!(!relation_exists(&db, schema, "volunteers"));
    let row = assert_truth(&db, "demo-church", "failed");
    assert!(row.last_error.unwrap().contains("V7__broken"));

    let s: TenantStatus = t
        .run(&["status", "--tenant", "demo-church", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(s.status, "failed");
    assert!(s.last_error.as_deref().unwrap().contains("V7__broken"));
    assert_eq!(s.pending_versions(), [7]);
    assert_eq!(s.current_revision, Some(6));

    // Text mode: same exit code, the tenant's error on stderr.
    let run = t.run(&["upgrade", "--tenant", "demo-church"]);
    run.expect(1);
    assert!(run.stderr.contains("V7__broken"), "{}", run.stderr);

    // Fix V7 and add a broken V8: V7 stays applied, V8 rolls back.
    write(
        dir.path(),
        "V7__broken.sql",
        "CREATE TABLE volunteers (id int PRIMARY KEY);\nINSERT INTO volunteers VALUES (1);\n",
    );
    write(
        dir.path(),
        "V8__worse.sql",
        "CREATE TABLE shifts (id int);\nINSERT INTO shifts (id, no_such_column) VALUES (1, 2);\n",
    );
    let run = t.run(&["upgrade", "--tenant", "demo-church", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    let res = r.of("demo-church");
    assert_eq!(res.applied, [7]);
    assert_eq!((res.from_revision, res.to_revision), (Some(6), Some(7)));
    assert!(res.error.as_deref().unwrap().contains("V8__worse"));
    assert!(res.error.as_deref().unwrap().contains("line 2"), "{res:?}");
    assert_eq!(history_versions(&db, schema), [1, 2, 3, 4, 5, 6, 7]);
    assert!(relation_exists(&db, schema, "volunteers"));
    assert!(!relation_exists(&db, schema, "shifts"));
    assert_truth(&db, "demo-church", "failed");

    // Fix V8: the rerun continues from 7 and clears the error.
    write(
        dir.path(),
        "V8__worse.sql",
        "CREATE TABLE shifts (id int);\n",
    );
    let r: RunReport = t
        .run(&["upgrade", "--tenant", "demo-church", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("demo-church").applied, [8]);
    assert_eq!(r.of("demo-church").error, None);
    let row = assert_truth(&db, "demo-church", "active");
    assert_eq!(row.last_error, None);
    assert_eq!(row.current_revision, Some(8));
}

#[test]
fn bulk_partial_failure_reports_every_tenant_and_fail_fast_skips_the_rest() {
    let (db, t) = ready();
    let dir = copy_of_example_migrations();
    let t = t.migrations(dir.path());
    let domains = ["alpha", "bravo", "charlie"];
    for d in domains {
        create(&t, d, &["--migrate"]);
    }
    // alpha already has a table V7 wants to create.
    db.client()
        .batch_execute("CREATE TABLE tenant_alpha.volunteers (id int)")
        .unwrap();
    write(
        dir.path(),
        "V7__volunteers.sql",
        "CREATE TABLE volunteers (id bigint PRIMARY KEY, name text NOT NULL);\n",
    );

    let run = t.run(&["upgrade", "--all", "-o", "json"]);
    run.expect(4);
    let r: RunReport = run.json();
    assert_eq!(
        r.results
            .iter()
            .map(|x| x.domain.as_str())
            .collect::<Vec<_>>(),
        domains
    );
    assert_eq!(
        (
            r.summary.total,
            r.summary.ok,
            r.summary.failed,
            r.summary.skipped
        ),
        (3, 2, 1, 0)
    );
    let a = r.of("alpha");
    assert_eq!(a.status, "failed");
    let err = a.error.as_deref().unwrap();
    assert!(
        err.contains("V7__volunteers") && err.contains("already exists"),
        "{err}"
    );
    for d in ["bravo", "charlie"] {
        assert_eq!(r.of(d).status, "ok");
        assert_eq!(r.of(d).applied, [7]);
    }
    assert_eq!(history_versions(&db, "tenant_alpha").last(), Some(&6));
    assert_truth(&db, "alpha", "failed");
    assert_truth(&db, "bravo", "active");
    assert_truth(&db, "charlie", "active");

    // With --fail-fast and one at a time, tenants after the failure are not started.
    write(
        dir.path(),
        "V8__more.sql",
        "CREATE TABLE more_things (id int);\n",
    );
    let run = t.run(&[
        "upgrade",
        "--all",
        "--fail-fast",
        "--concurrency",
        "1",
        "-o",
        "json",
    ]);
    assert_ne!(run.code, 0, "{run:?}");
    // A bulk run stopped early leaves the fleet partly migrated: exit 4, like a failed
    // canary (exit 1 is for a single tenant, or a run in which every tenant failed).
    run.expect(4);
    let r: RunReport = run.json();
    assert_eq!(r.results.len(), 3);
    assert_eq!(r.of("alpha").status, "failed");
    for d in ["bravo", "charlie"] {
        let x = r.of(d);
        assert_eq!(x.status, "skipped", "{x:?}");
        assert!(x.applied.is_empty());
        assert!(x.error.as_deref().unwrap().contains("fail-fast"), "{x:?}");
        let row = assert_truth(&db, d, "active");
        assert_eq!(
            row.current_revision,
            Some(7),
            "skipped tenants are untouched"
        );
    }
    assert_eq!(
        (r.summary.failed, r.summary.skipped, r.summary.ok),
        (1, 2, 0)
    );

    // Without it, the others go ahead.
    let run = t.run(&["upgrade", "--all", "--concurrency", "1", "-o", "json"]);
    run.expect(4);
    let r: RunReport = run.json();
    assert_eq!(r.of("bravo").applied, [8]);
    assert_eq!(r.of("charlie").applied, [8]);
    assert_eq!(r.of("alpha").status, "failed");
}

#[test]
fn unprovisioned_tenants_are_skipped_by_all_and_fail_when_named() {
    let (db, t) = ready();
    create(&t, "ready-one", &["--migrate"]);
    create(&t, "bare-one", &[]);

    let r: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    let b = r.of("bare-one");
    assert_eq!(b.status, "skipped");
    assert!(b.error.as_deref().unwrap().contains("provision"), "{b:?}");
    assert_eq!(r.of("ready-one").status, "up_to_date");
    assert_eq!(
        (r.summary.skipped, r.summary.up_to_date, r.summary.failed),
        (1, 1, 0)
    );
    assert!(!schema_exists(&db, "tenant_bare_one"));
    assert_truth(&db, "bare-one", "pending");

    let run = t.run(&["upgrade", "--tenant", "bare-one", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    let b = r.of("bare-one");
    assert_eq!(b.status, "failed");
    assert!(
        b.error.as_deref().unwrap().contains("tenantctl provision"),
        "{b:?}"
    );
    let run = t.run(&["upgrade", "--tenant", "bare-one"]);
    run.expect(1);
    assert!(run.stderr.contains("tenantctl provision"), "{}", run.stderr);
    assert!(!schema_exists(&db, "tenant_bare_one"));
    // A refusal, not a failure: still pending, the refusal in the ledger.
    assert_truth(&db, "bare-one", "pending");
    let e = checks::ledger(&db, "bare-one").pop().unwrap();
    assert_eq!(
        (e.action.as_str(), e.status.as_str()),
        ("upgrade", "refused")
    );
    assert!(e.error.unwrap().contains("tenantctl provision"));

    // provision --all creates it and leaves the other alone.
    let r: RunReport = t
        .run(&["provision", "--all", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("bare-one").status, "ok");
    assert_eq!(r.of("ready-one").status, "up_to_date");
    assert!(schema_exists(&db, "tenant_bare_one"));
    assert_truth(&db, "bare-one", "active");
}

#[test]
fn provision_leaves_an_existing_schema_and_its_data_alone() {
    let (db, t) = ready();
    create(&t, "demo", &["--migrate"]);
    let mut client = db.client();
    client
        .batch_execute(
            "INSERT INTO tenant_demo.members (first_name, last_name) VALUES ('Ada', 'Okafor')",
        )
        .unwrap();
    let r: RunReport = t
        .run(&["provision", "--tenant", "demo", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("demo").status, "up_to_date");
    assert_eq!((r.summary.up_to_date, r.summary.ok), (1, 0));
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM tenant_demo.members WHERE last_name = 'Okafor'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "provision touched the data");
    assert_eq!(history_versions(&db, "tenant_demo"), [1, 2, 3, 4, 5, 6]);
    assert_truth(&db, "demo", "active");

    // A schema made by hand for a registered tenant is adopted, not recreated.
    create(&t, "handmade", &[]);
    client
        .batch_execute(
            "CREATE SCHEMA tenant_handmade; CREATE TABLE tenant_handmade.keep (x int); \
             INSERT INTO tenant_handmade.keep VALUES (42);",
        )
        .unwrap();
    let r: RunReport = t
        .run(&["provision", "--tenant", "handmade", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("handmade").status, "up_to_date");
    let x: i32 = client
        .query_one("SELECT x FROM tenant_handmade.keep", &[])
        .unwrap()
        .get(0);
    assert_eq!(x, 42);
    let row = assert_truth(&db, "handmade", "active");
    assert!(row.schema_provisioned);
}

#[test]
fn tenants_are_found_by_domain_id_or_schema_and_unknown_ones_are_named() {
    let (db, t) = ready();
    let c = create(&t, "demo-church", &["--migrate"]);
    create(&t, "other", &[]);
    let id = c.tenant.id.to_string();
    for reference in ["demo-church", id.as_str(), "tenant_demo_church"] {
        let s: TenantStatus = t
            .run(&["status", "--tenant", reference, "-o", "json"])
            .expect(0)
            .json();
        assert_eq!(s.tenant_id, c.tenant.id, "{reference}");
        assert_eq!(s.domain, "demo-church", "{reference}");
        assert_eq!(s.current_revision, Some(6));
    }
    let shown: Shown = t
        .run(&["tenant", "show", &id, "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(shown.tenant.domain, "demo-church");
    let h: History = t
        .run(&["history", "--tenant", "tenant_demo_church", "-o", "json"])
        .expect(0)
        .json();
    assert!(h.migrations.iter().all(|e| e.state == "applied"));
    let cur: Currents = t
        .run(&["current", "--tenant", &id, "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(cur.tenants.len(), 1);
    assert_eq!(cur.tenants[0].domain, "demo-church");
    let r: RunReport = t
        .run(&["upgrade", "--tenant", "tenant_demo_church", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.results.len(), 1);
    assert_eq!(r.of("demo-church").status, "up_to_date");

    // Unknown references fail (exit 1) and are named; nothing is done to the others.
    expect_error(
        &t.run(&["status", "--tenant", "no-such-tenant"]),
        1,
        &["no-such-tenant"],
    );
    expect_error(&t.run(&["tenant", "show", "999999"]), 1, &["999999"]);
    expect_error(
        &t.run(&["history", "--tenant", "ghost", "-o", "json"]),
        1,
        &["ghost"],
    );
    expect_error(
        &t.run(&["provision", "--tenant", "other", "--tenant", "ghost"]),
        1,
        &["ghost"],
    );
    assert!(!schema_exists(&db, "tenant_other"));
    expect_error(
        &t.run(&["current", "--tenant", "ghost", "-o", "json"]),
        1,
        &["ghost"],
    );
}

#[test]
fn drift_divergent_missing_and_out_of_order_migrations_stop_upgrades() {
    let (db, t) = ready();
    let dir = copy_of_example_migrations();
    let t = t.migrations(dir.path());
    create(&t, "demo", &["--migrate"]);
    write(
        dir.path(),
        "V7__next.sql",
        "CREATE TABLE next_thing (id int);\n",
    );

    // Edit an applied file.
    let v3 = dir.path().join("V3__groups.sql");
    let original = std::fs::read_to_string(&v3).unwrap();
    std::fs::write(&v3, format!("{original}\n-- edited after it was applied\n")).unwrap();
    let run = t.run(&["upgrade", "--tenant", "demo", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    let err = r.of("demo").error.clone().unwrap();
    assert!(
        err.contains("version 3") && err.contains("divergent"),
        "{err}"
    );
    assert!(r.of("demo").applied.is_empty());
    assert_eq!(history_versions(&db, "tenant_demo").last(), Some(&6));
    assert!(!relation_exists(&db, "tenant_demo", "next_thing"));
    // Refused, not failed: the registry keeps the tenant active (the ledger has the
    // refusal; see refusals_leave_the_registry_row_as_it_was_and_are_recorded_in_the_ledger).
    assert_truth(&db, "demo", "active");
    let s: TenantStatus = t
        .run(&["status", "--tenant", "demo", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(s.drift.len(), 1, "{s:?}");
    match &s.drift[0] {
        Drift::Divergent { version, file } => {
            assert_eq!(*version, 3);
            assert!(file.ends_with("V3__groups.sql"), "{file}");
        }
        other => panic!("expected divergent, got {other:?}"),
    }
    assert_eq!(s.pending_versions(), [7]);
    let h: History = t
        .run(&["history", "--tenant", "demo", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(h.migrations[2].state, "divergent");
    let cur: Currents = t.run(&["current", "-o", "json"]).expect(0).json();
    assert!(!cur.tenants[0].at_head);
    assert_eq!(cur.summary.drifted, 1);

    // Restore it, then delete an applied migration (and its down script).
    std::fs::write(&v3, original).unwrap();
    std::fs::remove_file(dir.path().join("V6__ai_notes.sql")).unwrap();
    std::fs::remove_file(dir.path().join("V6__ai_notes.down.sql")).unwrap();
    let run = t.run(&["upgrade", "--tenant", "demo", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    let err = r.of("demo").error.clone().unwrap();
    assert!(
        err.contains("version 6") && err.contains("missing"),
        "{err}"
    );
    assert!(!relation_exists(&db, "tenant_demo", "next_thing"));
    let s: TenantStatus = t
        .run(&["status", "--tenant", "demo", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(
        s.drift,
        [Drift::Missing {
            version: 6,
            name: "ai_notes".into()
        }]
    );
    let h: History = t
        .run(&["history", "--tenant", "demo", "-o", "json"])
        .expect(0)
        .json();
    let v6 = h.migrations.iter().find(|e| e.version == 6).unwrap();
    assert_eq!((v6.state.as_str(), v6.file.as_deref()), ("missing", None));

    // A file older than the tenant's revision that was never applied.
    let late = support::dir_with(&[
        ("V10__a.sql", "CREATE TABLE a (id int);"),
        ("V20__b.sql", "CREATE TABLE b (id int);"),
    ]);
    let t2 = support::tenantctl(&db).migrations(late.path());
    create(&t2, "ordered", &["--migrate"]);
    write(late.path(), "V15__late.sql", "CREATE TABLE late (id int);");
    let s: TenantStatus = t2
        .run(&["status", "--tenant", "ordered", "-o", "json"])
        .expect(0)
        .json();
    assert!(
        matches!(s.drift.as_slice(), [Drift::OutOfOrder { version: 15, .. }]),
        "{s:?}"
    );
    let run = t2.run(&["upgrade", "--tenant", "ordered", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    assert!(r.of("ordered").error.as_deref().unwrap().contains("15"));
    assert!(!relation_exists(&db, "tenant_ordered", "late"));
}

#[test]
fn reading_commands_bring_the_registry_cache_back_in_line_with_the_database() {
    let (db, t) = ready();
    create(&t, "alpha", &["--migrate"]);
    create(&t, "bravo", &["--migrate"]);
    // Changed behind tenantctl's back.
    db.client()
        .batch_execute(
            "DROP SCHEMA tenant_alpha CASCADE;
             DELETE FROM tenant_bravo.refinery_schema_history WHERE version = 6;",
        )
        .unwrap();
    // charlie's history table is not one tenantctl can read.
    create(&t, "charlie", &["--provision"]);
    db.client()
        .batch_execute(
            "CREATE TABLE tenant_charlie.refinery_schema_history (version int, name text)",
        )
        .unwrap();
    let list: Listing = t.run(&["tenant", "list", "-o", "json"]).expect(0).json();
    let a = list.tenants.iter().find(|x| x.domain == "alpha").unwrap();
    assert!(!a.schema_provisioned && !a.migrations_applied);
    assert_eq!(a.current_revision, None);
    let b = list.tenants.iter().find(|x| x.domain == "bravo").unwrap();
    assert_eq!(b.current_revision, Some(5));
    assert_truth(&db, "alpha", "active");
    assert_truth(&db, "bravo", "active");

    let s: FleetStatus = t.run(&["status", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(
        (s.summary.unprovisioned, s.summary.behind, s.summary.at_head),
        (1, 1, 0)
    );
    assert_eq!(s.summary.drifted, 1);
    let ch = s.tenants.iter().find(|x| x.domain == "charlie").unwrap();
    assert!(ch.history_error.is_some(), "{ch:?}");
    let bravo = s.tenants.iter().find(|x| x.domain == "bravo").unwrap();
    assert!(bravo.history_error.is_none());
    assert_eq!(bravo.pending_versions(), [6]);
    let run = t.run(&["upgrade", "--tenant", "charlie", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    assert_eq!(r.of("charlie").status, "failed");
    assert_eq!(
        s.summary.by_revision.get("base"),
        Some(&2),
        "alpha (no schema) and charlie (unreadable history)"
    );
    assert_eq!(s.summary.by_revision.get("5"), Some(&1));

    // provision recreates the missing schema; upgrading it starts from base.
    let r: RunReport = t
        .run(&[
            "provision",
            "--tenant",
            "alpha",
            "--tenant",
            "bravo",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    assert_eq!(r.of("alpha").status, "ok");
    assert_eq!(r.of("bravo").status, "up_to_date");
    let r: RunReport = t
        .run(&["upgrade", "--tenant", "alpha", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("alpha").applied, [1, 2, 3, 4, 5, 6]);
    assert_truth(&db, "alpha", "active");
}

#[test]
fn refusals_leave_the_registry_row_as_it_was_and_are_recorded_in_the_ledger() {
    let (db, t) = ready();
    let dir = copy_of_example_migrations();
    let t = t.migrations(dir.path());
    create(&t, "demo", &["--migrate"]);
    // Below V3, which is edited below: the edit is no drift for it.
    create(&t, "calm", &["--migrate", "--target", "2"]);
    let refused_with = |domain: &str, action: &str, needle: &str| {
        let e = checks::ledger(&db, domain).pop().expect("a ledger entry");
        assert_eq!(
            (e.action.as_str(), e.status.as_str()),
            (action, "refused"),
            "{e:?}"
        );
        assert!(e.error.as_deref().unwrap_or("").contains(needle), "{e:?}");
        assert_eq!(
            (e.from_revision, e.to_revision),
            (Some(6), Some(6)),
            "{e:?}"
        );
    };

    // A file edited after it was applied: refused, the row byte for byte as it was
    // (status, last_error, cached columns, updated_at), the refusal in the ledger.
    write(
        dir.path(),
        "V7__next.sql",
        "CREATE TABLE next_thing (id int);\n",
    );
    let v3 = dir.path().join("V3__groups.sql");
    let original = std::fs::read_to_string(&v3).unwrap();
    std::fs::write(&v3, format!("{original}\n-- edited after it was applied\n")).unwrap();
    let row = checks::stored_row(&db, "demo");
    let run = t.run(&["upgrade", "--tenant", "demo", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    assert_eq!(r.of("demo").status, "failed");
    assert!(r.of("demo").error.as_deref().unwrap().contains("divergent"));
    assert_eq!(checks::stored_row(&db, "demo"), row);
    refused_with("demo", "upgrade", "divergent");
    // In a bulk run: the drifted tenant is reported failed (exit 4), the other goes on.
    let run = t.run(&["upgrade", "--all", "-o", "json"]);
    run.expect(4);
    let r: RunReport = run.json();
    assert_eq!(r.of("demo").status, "failed");
    assert_eq!(r.of("calm").applied, [3, 4, 5, 6, 7]);
    assert_eq!(checks::stored_row(&db, "demo"), row);
    refused_with("demo", "upgrade", "divergent");
    assert_truth(&db, "demo", "active");
    // Applications that skip failed tenants still find it.
    let found: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM public.tenants WHERE domain = 'demo' AND status <> 'failed'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(found, 1);
    std::fs::write(&v3, &original).unwrap();

    // A missing down script: refused the same way.
    std::fs::rename(
        dir.path().join("V3__groups.down.sql"),
        dir.path().join("V3.down.keep"),
    )
    .unwrap();
    let run = t.run(&["downgrade", "--tenant", "demo", "2", "--yes", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    assert!(r
        .of("demo")
        .error
        .as_deref()
        .unwrap()
        .contains("V3__groups.down.sql"));
    assert_eq!(history_versions(&db, "tenant_demo"), [1, 2, 3, 4, 5, 6]);
    assert_eq!(checks::stored_row(&db, "demo"), row);
    refused_with("demo", "downgrade", "V3__groups.down.sql");
    std::fs::rename(
        dir.path().join("V3.down.keep"),
        dir.path().join("V3__groups.down.sql"),
    )
    .unwrap();

    // A real failure still marks the tenant failed; a refusal afterwards keeps that
    // status and that error.
    std::fs::remove_file(dir.path().join("V7__next.sql")).unwrap();
    write(
        dir.path(),
        "V7__broken.sql",
        "SELECT no_such_column FROM members;\n",
    );
    let run = t.run(&["upgrade", "--tenant", "demo"]);
    run.expect(1);
    let failed = assert_truth(&db, "demo", "failed");
    assert!(failed
        .last_error
        .as_deref()
        .unwrap()
        .contains("no_such_column"));
    let row = checks::stored_row(&db, "demo");
    std::fs::write(&v3, format!("{original}\n-- edited again\n")).unwrap();
    t.run(&["upgrade", "--tenant", "demo"]).expect(1);
    assert_eq!(checks::stored_row(&db, "demo"), row);
    refused_with("demo", "upgrade", "divergent");
}

#[test]
fn a_schema_built_by_hand_or_by_another_tool_is_refused_rather_than_run_over() {
    let (db, t) = ready();
    let dir = support::dir_with(&[
        ("V1__members.sql", "CREATE TABLE members (id int);"),
        ("V2__notes.sql", "CREATE TABLE notes (id int);"),
    ]);
    let t = t.migrations(dir.path());
    db.client()
        .batch_execute(
            "CREATE SCHEMA by_hand; CREATE TABLE by_hand.members (id int);
             CREATE SCHEMA by_alembic; CREATE TABLE by_alembic.alembic_version (version_num varchar(32) PRIMARY KEY);
             INSERT INTO by_alembic.alembic_version VALUES ('3da2eb3bee79');
             CREATE TABLE by_alembic.members (id int);",
        )
        .unwrap();
    create(&t, "hand", &["--schema", "by_hand", "--adopt"]);
    create(&t, "alembic", &["--schema", "by_alembic", "--adopt"]);
    create(&t, "fresh", &["--provision"]);
    let hand = checks::stored_row(&db, "hand");
    let alembic = checks::stored_row(&db, "alembic");

    // Named: refused (exit 1) pointing at stamp; no history table is created, nothing runs.
    let run = t.run(&["upgrade", "--tenant", "hand", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    let err = r.of("hand").error.as_deref().unwrap();
    assert!(err.contains("tenantctl stamp"), "{err}");
    assert!(!relation_exists(&db, "by_hand", "refinery_schema_history"));
    assert_eq!(checks::stored_row(&db, "hand"), hand);

    // In a bulk run, the Alembic-built one points at adopt alembic; neither is failed.
    let run = t.run(&["upgrade", "--all", "-o", "json"]);
    run.expect(4);
    let r: RunReport = run.json();
    let err = r.of("alembic").error.as_deref().unwrap();
    assert!(
        err.contains("alembic_version")
            && err.contains("tenantctl adopt alembic")
            && err.contains("tenantctl stamp"),
        "{err}"
    );
    assert_eq!(r.of("alembic").status, "failed");
    assert_eq!(r.of("hand").status, "failed");
    assert_eq!(r.of("fresh").applied, [1, 2]);
    assert!(!relation_exists(
        &db,
        "by_alembic",
        "refinery_schema_history"
    ));
    assert!(!relation_exists(&db, "by_alembic", "notes"));
    assert_eq!(checks::stored_row(&db, "hand"), hand);
    assert_eq!(checks::stored_row(&db, "alembic"), alembic);
    for d in ["hand", "alembic"] {
        let e = checks::ledger(&db, d).pop().unwrap();
        assert_eq!(
            (e.action.as_str(), e.status.as_str()),
            ("upgrade", "refused")
        );
    }
    // A dry run says the same and changes nothing.
    let run = t.run(&["upgrade", "--tenant", "alembic", "--dry-run", "-o", "json"]);
    run.expect(1);
    let d: DryRun = run.json();
    assert!(d.tenants[0]
        .error
        .as_deref()
        .unwrap()
        .contains("tenantctl adopt alembic"));

    // Stamped at the version it matches, the upgrade goes on from there.
    t.run(&["stamp", "--tenant", "hand", "1"]).expect(0);
    let r: RunReport = t
        .run(&["upgrade", "--tenant", "hand", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("hand").applied, [2]);
    assert_truth(&db, "hand", "active");
    // `stamp base` says the schema is tenantctl's from the start: every migration then
    // runs over what it holds (here V1 meets its table and fails: a real failure).
    t.run(&["stamp", "--tenant", "alembic", "base"]).expect(0);
    assert!(relation_exists(
        &db,
        "by_alembic",
        "refinery_schema_history"
    ));
    t.run(&["upgrade", "--tenant", "alembic"]).expect(1);
    assert_truth(&db, "alembic", "failed");
}
