//! How commands select tenants and report runs: `current` selects exactly like the bulk
//! commands, text-mode bulk runs print their run id, an active tenant whose schema has
//! gone is a failure of `upgrade --all` (not a skip), and `stamp` asks before it forgets
//! applied versions.

use crate::{checks, common_json, support};
use checks::{assert_truth, create, expect_error, history_versions, registry_row};
use common_json::{Currents, DryRun, EventRow, RunReport};
use support::ready;

fn domains(c: &Currents) -> Vec<String> {
    c.tenants.iter().map(|t| t.domain.clone()).collect()
}

#[test]
fn current_selects_exactly_like_the_bulk_commands() {
    let (_db, t) = ready();
    create(&t, "alpha", &["--type", "church", "--migrate"]);
    create(&t, "beta", &["--type", "church", "--provision"]);
    create(&t, "gamma", &["--type", "school", "--migrate"]);
    create(&t, "delta", &["--type", "church"]);

    let current = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["current", "-o", "json"];
        a.extend_from_slice(args);
        domains(&t.run(&a).expect(0).json())
    };
    // The reference: what `upgrade --dry-run` selects with the same flags.
    let selected = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["upgrade", "--dry-run", "-o", "json"];
        a.extend_from_slice(args);
        let run = t.run(&a);
        let d: DryRun = run.json();
        d.tenants.iter().map(|t| t.domain.clone()).collect()
    };

    assert_eq!(current(&[]), ["alpha", "beta", "gamma", "delta"]);
    assert_eq!(current(&["--all"]), ["alpha", "beta", "gamma", "delta"]);
    for args in [
        &["--type", "church"][..],
        &["--status", "active"][..],
        &["--status", "pending"][..],
        &["--type", "church", "--status", "active"][..],
        &["--all", "--exclude", "beta"][..],
        &["--type", "church", "--exclude", "alpha"][..],
        &["--tenant", "gamma", "--tenant", "alpha"][..],
        &["--tenant", "alpha", "--tenant", "gamma", "--type", "school"][..],
        &["--all", "--shard", "1/2"][..],
        &["--all", "--shard", "2/2"][..],
    ] {
        assert_eq!(current(args), selected(args), "{args:?}");
    }
    assert_eq!(current(&["--type", "church"]), ["alpha", "beta", "delta"]);
    assert_eq!(current(&["--status", "pending"]), ["delta"]);
    assert_eq!(
        current(&["--exclude", "beta", "--exclude", "delta"]),
        ["alpha", "gamma"]
    );
    // Shards alone split the whole fleet.
    let mut both = current(&["--shard", "1/2"]);
    both.extend(current(&["--shard", "2/2"]));
    both.sort();
    assert_eq!(both, ["alpha", "beta", "delta", "gamma"]);

    // The summary counts only the selection.
    let c: Currents = t
        .run(&["current", "--type", "school", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(c.summary.total, 1);
    // Unknown names are errors, as for the bulk commands.
    expect_error(&t.run(&["current", "--exclude", "nobody"]), 1, &["nobody"]);
    expect_error(&t.run(&["current", "--type", "Bad Type"]), 2, &[]);
}

#[test]
fn text_bulk_runs_print_their_run_id_for_the_ledger() {
    let (_db, t) = ready();
    create(&t, "alpha", &["--provision"]);
    create(&t, "beta", &["--provision"]);
    let run = t.run(&["upgrade", "--all"]);
    run.expect(0);
    let last = run.stdout.lines().next().unwrap_or("").to_string();
    assert!(last.starts_with("2 tenants: 2 ok"), "{}", run.stdout);
    let run_id = last
        .rsplit_once("(run ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no run id in the summary line: {last}"))
        .to_string();
    assert_eq!(run_id.len(), 36, "{last}");
    // The id is the one the ledger knows.
    let events: Vec<EventRow> = t
        .run(&["events", "--run", &run_id, "-o", "json"])
        .expect(0)
        .json::<common_json::Events>()
        .events;
    let mut seen: Vec<&str> = events.iter().map(|e| e.domain.as_str()).collect();
    seen.sort();
    assert_eq!(seen, ["alpha", "beta"]);
    assert!(events.iter().all(|e| e.run_id == run_id));
    // JSON has the same id in `run_id`, and nothing else on stdout.
    let r: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(r.run_id.len(), 36);
}

#[test]
fn an_active_tenant_whose_schema_vanished_fails_upgrade_all_while_pending_ones_are_skipped() {
    let (db, t) = ready();
    create(&t, "alive", &["--migrate"]);
    create(&t, "vanished", &["--migrate"]);
    create(&t, "pending", &[]);
    db.client()
        .batch_execute("DROP SCHEMA tenant_vanished CASCADE")
        .unwrap();

    let run = t.run(&["upgrade", "--all", "-o", "json"]);
    run.expect(4);
    let r: RunReport = run.json();
    let v = r.of("vanished");
    assert_eq!(v.status, "failed", "{r:#?}");
    let err = v.error.as_deref().unwrap_or("");
    assert!(
        err.contains("tenant_vanished")
            && err.contains("active")
            && err.contains("missing")
            && err.contains("tenantctl provision --tenant vanished"),
        "{err}"
    );
    assert_eq!(r.of("pending").status, "skipped");
    assert_eq!(r.of("alive").status, "up_to_date");
    assert_eq!((r.summary.failed, r.summary.skipped), (1, 1));
    // Nothing was attempted: the status stays, the cache says what is true.
    assert_truth(&db, "vanished", "active");
    // Consistent on the next run (the cache now says unprovisioned), and with check.
    t.run(&["upgrade", "--all"]).expect(4);
    let check = t.run(&["check"]);
    check.expect(5);
    assert!(check.stdout.contains("vanished"), "{}", check.stdout);
    // The only tenant selected: exit 1.
    t.run(&["upgrade", "--status", "active", "--exclude", "alive"])
        .expect(1);
    // Failed beside skipped tenants only: skipped tenants do not change the exit code,
    // every tenant worked on failed, exit 1.
    let run = t.run(&["upgrade", "--all", "--exclude", "alive", "-o", "json"]);
    run.expect(1);
    let r: RunReport = run.json();
    assert_eq!((r.summary.failed, r.summary.skipped), (1, 1), "{r:#?}");
    // Pending tenants alone are still skipped (exit 0).
    t.run(&["upgrade", "--status", "pending"]).expect(0);
    // Recreated as the message says, it comes back.
    t.run(&["provision", "--tenant", "vanished"]).expect(0);
    t.run(&["upgrade", "--all"]).expect(0);
    assert_truth(&db, "vanished", "active");
    assert_eq!(registry_row(&db, "vanished").current_revision, Some(6));
}

#[test]
fn stamp_asks_before_forgetting_applied_versions_and_dry_run_shows_what_it_would_do() {
    let (db, t) = ready();
    create(&t, "high", &["--migrate"]);
    create(&t, "low", &["--migrate", "--target", "2"]);

    // Dry run: what would be recorded and forgotten, per tenant; nothing changes.
    let d: DryRun = t
        .run(&["stamp", "--all", "4", "--dry-run", "-o", "json"])
        .expect(0)
        .json();
    let high = d.tenants.iter().find(|x| x.domain == "high").unwrap();
    let low = d.tenants.iter().find(|x| x.domain == "low").unwrap();
    assert_eq!(
        (high.versions.clone(), high.forgotten.clone()),
        (vec![], vec![5, 6])
    );
    assert_eq!((high.from_revision, high.to_revision), (Some(6), Some(4)));
    assert!(high
        .sql
        .contains("DELETE FROM \"tenant_high\".\"refinery_schema_history\" WHERE version > 4"));
    assert_eq!(
        (low.versions.clone(), low.forgotten.clone()),
        (vec![3, 4], vec![])
    );
    assert!(low
        .sql
        .contains("INSERT INTO \"tenant_low\".\"refinery_schema_history\""));
    let text = t
        .run(&["stamp", "--all", "4", "--dry-run"])
        .expect(0)
        .stdout
        .clone();
    assert!(
        text.contains("-- tenant high (schema \"tenant_high\"): 6 -> 4 (forgets V5, V6)"),
        "{text}"
    );
    assert!(
        text.contains("-- tenant low (schema \"tenant_low\"): 2 -> 4"),
        "{text}"
    );
    assert_eq!(history_versions(&db, "tenant_high"), [1, 2, 3, 4, 5, 6]);
    assert_eq!(history_versions(&db, "tenant_low"), [1, 2]);

    // Forgetting without a terminal and without --yes: refused, exit 2, nothing changed
    // (not even the tenant that would only gain rows).
    expect_error(&t.run(&["stamp", "--all", "4"]), 2, &["--yes", "high"]);
    assert_eq!(history_versions(&db, "tenant_high"), [1, 2, 3, 4, 5, 6]);
    assert_eq!(history_versions(&db, "tenant_low"), [1, 2]);
    // Recording only (nothing forgotten) needs no confirmation.
    t.run(&["stamp", "--tenant", "low", "3"]).expect(0);
    assert_eq!(history_versions(&db, "tenant_low"), [1, 2, 3]);
    // With --yes it goes ahead.
    t.run(&["stamp", "--all", "4", "--yes"]).expect(0);
    assert_eq!(history_versions(&db, "tenant_high"), [1, 2, 3, 4]);
    assert_eq!(history_versions(&db, "tenant_low"), [1, 2, 3, 4]);
    assert_truth(&db, "high", "active");
    assert_truth(&db, "low", "active");
}

/// A bulk run's text report fits a fleet: the summary line first, then only the tenants
/// that did not end well, the first 50 and a count of the rest; `-v` lists every tenant;
/// `-q` prints nothing when all went well, and what went wrong on stderr. "1 tenant".
#[test]
fn a_fleets_report_is_a_summary_and_the_tenants_that_did_not_end_well() {
    let (_db, t) = ready();
    let dir = crate::support::dir_with(&[
        ("V1__one.sql", "CREATE TABLE one (id int);\n"),
        (
            "V2__two.sql",
            "DO $$ BEGIN IF current_schema() LIKE 'tenant_bad%' THEN RAISE EXCEPTION 'no'; END IF; END $$;\n",
        ),
    ]);
    let t = t.migrations(dir.path());
    for i in 0..53 {
        create(&t, &format!("bad{i:02}"), &["--provision"]);
    }
    for i in 0..3 {
        create(&t, &format!("good{i}"), &["--provision"]);
    }
    let run = t.run(&["upgrade", "--all"]);
    run.expect(4);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("56 tenants: 3 ok, 0 up to date, 53 failed, 0 skipped"),
        "{}",
        run.stdout
    );
    let listed = (0..53)
        .filter(|i| run.stdout.contains(&format!("bad{i:02} ")))
        .count();
    assert_eq!(listed, 50, "{}", run.stdout);
    assert!(!run.stdout.contains("good"), "{}", run.stdout);
    assert_eq!(
        lines.last().copied(),
        Some("and 3 more; -v lists every tenant"),
        "{}",
        run.stdout
    );
    // -q: nothing on stdout; the failures and the summary on stderr.
    let run = t.run(&["-q", "upgrade", "--all"]);
    run.expect(4);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(
        run.stderr
            .lines()
            .filter(|l| l.contains(": FAILED"))
            .count(),
        53,
        "{}",
        run.stderr
    );
    assert!(run
        .stderr
        .lines()
        .last()
        .unwrap_or("")
        .starts_with("56 tenants:"));
    // -v: every tenant.
    let run = t.run(&["-v", "upgrade", "--all"]);
    run.expect(4);
    assert!(run.stdout.contains("good0") && run.stdout.contains("bad52"));
    // All well and quiet: nothing at all.
    let run = t.run(&["-q", "upgrade", "--tenant", "good0"]);
    run.expect(0);
    assert!(run.stdout.is_empty() && run.stderr.is_empty(), "{run:?}");
    // One tenant is "1 tenant".
    let run = t.run(&["upgrade", "--tenant", "good1"]);
    run.expect(0);
    assert!(
        run.stdout.starts_with("1 tenant: 0 ok, 1 up to date"),
        "{}",
        run.stdout
    );
}

/// A terminal that reports a width of 0 gets tables one line per row, not one character
/// per column; a wide one gets them fitted.
#[test]
fn a_terminal_of_width_zero_gets_unwrapped_tables() {
    let (_db, t) = ready();
    create(&t, "a-long-church-domain", &[]);
    let run = t.clone().in_pty_of_width(0).run(&["tenant", "list"]);
    run.expect(0);
    assert!(
        run.stdout.contains("a-long-church-domain") && run.stdout.contains("provisioned"),
        "{}",
        run.stdout
    );
    let run = t.clone().in_pty_of_width(200).run(&["tenant", "list"]);
    run.expect(0);
    assert!(
        run.stdout.contains("a-long-church-domain"),
        "{}",
        run.stdout
    );
    // A narrow terminal gets a fleet report's failures as one line each, not a table
    // whose cells are a few characters wide.
    let dir = crate::support::dir_with(&[(
        "V1__one.sql",
        "DO $$ BEGIN RAISE EXCEPTION 'this migration fails with a long and descriptive message'; END $$;\n",
    )]);
    let t = t.migrations(dir.path());
    create(&t, "a-provisioned-parish", &["--provision"]);
    let run = t.in_pty_of_width(60).run(&["upgrade", "--all"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("upgrade a-provisioned-parish: FAILED"))
        .unwrap_or_else(|| panic!("no line for the tenant:\n{}", run.stdout));
    assert!(
        line.contains("fails with a long and descriptive message"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains('│'), "{}", run.stdout);
}

/// The capped list shows real failures before refusals: the one tenant whose migration
/// failed is on the screen even when fifty tenants that sort before it were refused.
#[test]
fn a_real_failure_is_listed_before_refusals() {
    let (db, t) = ready();
    let dir = crate::support::dir_with(&[
        ("V1__one.sql", "CREATE TABLE one (id int);\n"),
        (
            "V2__two.sql",
            "DO $$ BEGIN IF current_schema() = 'tenant_zzz' THEN RAISE EXCEPTION 'zzz breaks'; END IF; END $$;\n",
        ),
    ]);
    let t = t.migrations(dir.path());
    let mut admin = postgres::Client::connect(&db.url, postgres::NoTls).unwrap();
    for i in 0..52 {
        let d = format!("aaa{i:02}");
        create(&t, &d, &[]);
        // A schema of the tenant's name, made by hand, holding a table: refused.
        admin
            .batch_execute(&format!(
                "CREATE SCHEMA tenant_{d}; CREATE TABLE tenant_{d}.stray (id int)"
            ))
            .unwrap();
    }
    create(&t, "zzz", &["--provision"]);
    let run = t.run(&["upgrade", "--all"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    let rows: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("| aaa") || l.starts_with("| zzz"))
        .collect();
    assert_eq!(rows.len(), 50, "{}", run.stdout);
    assert!(rows[0].starts_with("| zzz"), "{}", run.stdout);
    assert!(rows[0].contains("zzz breaks"), "{}", run.stdout);
    // A filter that matches nothing says so, not that the registry is empty.
    let run = t.run(&["tenant", "list", "--type", "nosuch"]);
    run.expect(0);
    assert_eq!(run.stdout.trim(), "no tenant matches the filter");
}
