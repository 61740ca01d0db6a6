//! The registry outside the happy path: a registry upgraded by a newer tenantctl (a rolling
//! deploy), a registry damaged by hand, and tenant history tables with rows tenantctl
//! cannot read, which must never put a false revision into the registry.

use crate::{checks, common_json, support};
use checks::{create, expect_error, registry_row};
use common_json::{InitReport, RunReport, TenantStatus};
use support::{ready, TestDb};

/// The registry's history rows, as (version, checksum).
fn registry_history(db: &TestDb) -> Vec<(i32, String)> {
    db.client()
        .query(
            "SELECT version, checksum FROM public.tenantctl_registry_history ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[test]
fn a_registry_upgraded_by_a_newer_tenantctl_is_left_alone_and_still_works() {
    let (db, t) = ready();
    let fresh: InitReport = t.run(&["init", "-o", "json"]).expect(0).json();
    assert_eq!(fresh.version, fresh.binary_version);
    let binary = fresh.binary_version;
    create(&t, "before", &["--migrate"]);
    // A newer tenantctl applied a registry migration this binary does not know.
    db.client()
        .batch_execute(&format!(
            "ALTER TABLE public.tenants ADD COLUMN region text; \
             INSERT INTO public.tenantctl_registry_history (version, name, applied_on, checksum) \
             VALUES ({}, 'tenant_regions', '2030-01-01T00:00:00Z', '42')",
            binary + 1
        ))
        .unwrap();
    let history = registry_history(&db);

    let r: InitReport = t.run(&["init", "-o", "json"]).expect(0).json();
    assert_eq!((r.version, r.binary_version), (binary + 1, binary));
    assert!(r.applied.is_empty());
    let run = t.run(&["init"]);
    run.expect(0);
    assert!(
        run.stdout.contains(&format!("at version {}", binary + 1))
            && run.stdout.contains("newer than this tenantctl")
            && run.stdout.contains("left unchanged"),
        "{}",
        run.stdout
    );
    assert_eq!(registry_history(&db), history, "init changed the history");

    // Every command whose columns exist works.
    create(&t, "after", &["--provision"]);
    let r: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    assert_eq!((r.summary.ok, r.summary.up_to_date), (1, 1));
    t.run(&["status", "--all"]).expect(0);
    t.run(&["current"]).expect(0);
    t.run(&["tenant", "list"]).expect(0);
    t.run(&["tenant", "show", "after"]).expect(0);
    t.run(&["events"]).expect(0);
    t.run(&["check"]).expect(0);
    t.run(&["tenant", "drop", "after", "--yes"]).expect(0);
    assert_eq!(registry_row(&db, "before").current_revision, Some(6));
    assert_eq!(registry_history(&db), history);
}

#[test]
fn a_registry_damaged_by_hand_is_a_setup_error_naming_table_and_column() {
    let cases: &[(&str, &[&str])] = &[
        (
            "ALTER TABLE public.tenants DROP COLUMN last_error",
            &["tenants", "last_error", "is missing"],
        ),
        (
            "ALTER TABLE public.tenant_events DROP COLUMN client_host",
            &["tenant_events", "client_host", "is missing"],
        ),
        (
            "ALTER TABLE public.tenants ALTER COLUMN current_revision TYPE text",
            &["tenants", "current_revision", "is text", "integer"],
        ),
        (
            "DROP TABLE public.tenant_events",
            &["tenant_events", "missing"],
        ),
        ("DROP TABLE public.tenants CASCADE", &["tenants", "missing"]),
        (
            "ALTER TABLE public.tenantctl_registry_history RENAME COLUMN version TO v",
            &["tenantctl_registry_history", "version"],
        ),
        (
            "DROP TABLE public.tenantctl_registry_history",
            &["tenantctl_registry_history", "missing"],
        ),
    ];
    for (i, (damage, needles)) in cases.iter().enumerate() {
        let (db, t) = ready();
        create(&t, "demo", &["--migrate"]);
        db.client().batch_execute(damage).unwrap();
        let mut expected = vec!["damaged", "restore", "tenantctl init"];
        expected.extend_from_slice(needles);
        // Every command opens the registry the same way: all of them for one damage,
        // a few for the others.
        let commands: &[&[&str]] = &[
            &["status", "--all"],
            &["upgrade", "--all"],
            // init cannot repair it either, and says so rather than "up to date".
            &["init"],
            &["current"],
            &["tenant", "list"],
            &["tenant", "create", "other", "--name", "O"],
            &["events"],
            &["check"],
        ];
        let commands = if i == 0 { commands } else { &commands[..3] };
        for args in commands {
            let run = t.run(args);
            expect_error(&run, 3, &expected);
            assert!(
                !run.stderr.contains("panicked"),
                "{damage}: {args:?}: {}",
                run.stderr
            );
        }
    }
}

#[test]
fn an_unreadable_history_row_never_writes_a_false_revision() {
    let damages = [
        ("UPDATE {h} SET checksum = 'not-a-number' WHERE version = 3", "checksum"),
        ("UPDATE {h} SET applied_on = 'yesterday-ish' WHERE version = 2", "applied_on"),
        ("UPDATE {h} SET name = NULL WHERE version = 4", "name"),
        (
            "ALTER TABLE {h} DROP CONSTRAINT refinery_schema_history_pkey, ALTER COLUMN version DROP NOT NULL; \
             INSERT INTO {h} (version, name, applied_on, checksum) VALUES (NULL, 'x', '2030-01-01T00:00:00Z', '1')",
            "version",
        ),
    ];
    for (damage, needle) in damages {
        let (db, t) = ready();
        create(&t, "broken", &["--migrate", "--target", "5"]);
        create(&t, "fine", &["--migrate", "--target", "5"]);
        let h = "tenant_broken.refinery_schema_history";
        db.client()
            .batch_execute(&damage.replace("{h}", h))
            .unwrap();
        let before = registry_row(&db, "broken");
        assert_eq!(before.current_revision, Some(5));

        // status: reports the history error; the cached revision stays.
        let s: TenantStatus = t
            .run(&["status", "--tenant", "broken", "-o", "json"])
            .expect(0)
            .json();
        let err = s.history_error.unwrap_or_default();
        assert!(err.contains(needle), "{damage}: {err}");
        t.run(&["status", "--all"]).expect(0);
        t.run(&["current"]).expect(0);
        // tenant list shows the cached revision, not a made-up one.
        let listed: common_json::Listing =
            t.run(&["tenant", "list", "-o", "json"]).expect(0).json();
        let shown = listed
            .tenants
            .iter()
            .find(|x| x.domain == "broken")
            .unwrap();
        assert_eq!(shown.current_revision, Some(5), "{damage}");
        let row = registry_row(&db, "broken");
        assert_eq!(
            (row.current_revision, row.migrations_applied),
            (Some(5), true),
            "{damage}: a reading command wrote a false revision"
        );

        // upgrade: fails that tenant with the history error; the others go ahead.
        for args in [
            &["upgrade", "--all", "-o", "json"][..],
            &["upgrade", "--tenant", "broken", "-o", "json"][..],
        ] {
            let run = t.run(args);
            let r: RunReport = run.json();
            let b = r.of("broken");
            assert_eq!(b.status, "failed", "{damage}: {r:#?}");
            assert!(
                b.error.as_deref().unwrap_or("").contains(needle),
                "{damage}: {r:#?}"
            );
            let row = registry_row(&db, "broken");
            assert_eq!(
                (row.current_revision, row.migrations_applied),
                (Some(5), true),
                "{damage}: {args:?} wrote a false revision"
            );
            // Refused before anything ran: the status is left as it was, and the
            // refusal, with the history error, is in the ledger.
            assert_eq!((row.status.as_str(), row.last_error), ("active", None));
            let e = checks::ledger(&db, "broken").pop().unwrap();
            assert_eq!(
                (e.action.as_str(), e.status.as_str()),
                ("upgrade", "refused")
            );
            assert!(e.error.unwrap_or_default().contains(needle), "{damage}");
        }
        assert_eq!(registry_row(&db, "fine").current_revision, Some(6));
        // stamp and downgrade refuse it the same way.
        for args in [
            &["stamp", "--tenant", "broken", "4", "--yes"][..],
            &["downgrade", "--tenant", "broken", "4", "--yes"][..],
        ] {
            t.run(args).expect(1);
            assert_eq!(registry_row(&db, "broken").current_revision, Some(5));
        }
        t.run(&["check"]).expect(5);
    }
}

#[test]
fn history_rows_in_inheritance_children_count_and_a_view_in_its_place_is_no_history() {
    let (db, t) = ready();
    create(&t, "inherits", &["--migrate", "--target", "5"]);
    create(&t, "viewed", &["--migrate", "--target", "5"]);
    // Rows moved to a child table: a SELECT on the history table still returns them, so
    // the tenant is still at 5 and nothing runs again.
    db.client()
        .batch_execute(
            "CREATE TABLE tenant_inherits.history_archive () \
                 INHERITS (tenant_inherits.refinery_schema_history); \
             WITH moved AS (DELETE FROM ONLY tenant_inherits.refinery_schema_history \
                            WHERE version >= 4 RETURNING *) \
             INSERT INTO tenant_inherits.history_archive SELECT * FROM moved;",
        )
        .unwrap();
    let s: TenantStatus = t
        .run(&["status", "--tenant", "inherits", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(s.current_revision, Some(5), "{s:?}");
    let r: RunReport = t
        .run(&["upgrade", "--tenant", "inherits", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("inherits").status, "ok", "{r:#?}");
    let versions: Vec<i32> = db
        .client()
        .query(
            "SELECT version FROM tenant_inherits.refinery_schema_history ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        (1..=6).collect::<Vec<_>>(),
        "a migration ran twice"
    );

    // A view with the history table's name: the history cannot be read, so the tenant
    // fails without running anything and its cached revision stays.
    db.client()
        .batch_execute(
            "ALTER TABLE tenant_viewed.refinery_schema_history RENAME TO old_history; \
             CREATE VIEW tenant_viewed.refinery_schema_history AS SELECT * FROM tenant_viewed.old_history;",
        )
        .unwrap();
    let s: TenantStatus = t
        .run(&["status", "--tenant", "viewed", "-o", "json"])
        .expect(0)
        .json();
    let err = s.history_error.unwrap_or_default();
    assert!(err.contains("is a view, not a table"), "{err}");
    let r: RunReport = t
        .run(&["upgrade", "--tenant", "viewed", "-o", "json"])
        .expect(1)
        .json();
    let v = r.of("viewed");
    assert_eq!(v.status, "failed", "{r:#?}");
    assert!(
        v.error.as_deref().unwrap_or("").contains("a view"),
        "{r:#?}"
    );
    let row = registry_row(&db, "viewed");
    assert_eq!(
        (row.current_revision, row.migrations_applied),
        (Some(5), true),
        "a false revision was written"
    );
}

#[test]
fn a_history_with_thousands_of_unknown_versions_gives_bounded_errors_and_tables() {
    let (db, t) = ready();
    create(&t, "long", &["--migrate", "--target", "5"]);
    create(&t, "short", &["--migrate", "--target", "5"]);
    // 20,000 history rows for versions no file has: each is drift.
    db.client()
        .batch_execute(
            "INSERT INTO tenant_long.refinery_schema_history (version, name, applied_on, checksum) \
             SELECT v, 'gone_' || v, '2030-01-01T00:00:00Z', '1' FROM generate_series(1000, 20999) AS v",
        )
        .unwrap();
    let run = t.run(&["status", "--all"]);
    run.expect(0);
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains("long") && l.contains("more"))
        .unwrap_or_else(|| panic!("no bounded problem line for long:\n{}", run.stdout));
    assert!(line.len() < 1_000, "{line}");
    assert!(run.stdout.len() < 20_000, "{} bytes", run.stdout.len());
    // The full list stays available for the one tenant.
    let s: TenantStatus = t
        .run(&["status", "--tenant", "long", "-o", "json"])
        .expect(0)
        .json();
    assert!(s.drift.len() >= 20_000, "{}", s.drift.len());

    let r: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).json();
    let e = r.of("long").error.clone().unwrap_or_default();
    assert!(
        e.contains(&format!("(and {} more)", s.drift.len() - 10)) && e.len() < 5_000,
        "{}",
        &e[..e.len().min(500)]
    );
    let row = registry_row(&db, "long");
    assert!(row.last_error.unwrap_or_default().len() < 5_000);
    assert_eq!(r.of("short").status, "ok");
}
