//! Backup policies: `backup --due` backs up exactly the tenants their type's policy
//! says are due (by the ledger's last successful backup), rotates each by its policy
//! (`keep`, `keep_within`), lets one such run go at a time (an overlapping one backs up
//! nothing and exits 0), is refused without policies; `serve` with `serve.backups` runs
//! it itself; `tenant restore --latest` takes the newest backup; the overdue gauge.

use std::path::{Path, PathBuf};

use crate::checks::{create, expect_error, seed_example};
use crate::common_json::RunReport;
use crate::support::{ready, Tenantctl, TestDb};

/// A config file with `backup.dir` = `out` and the policies given (TOML tables).
fn configured(t: &Tenantctl, out: &Path, policies: &str) -> (Tenantctl, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.toml");
    std::fs::write(
        &file,
        format!("[backup]\ndir = {:?}\n{policies}", out.to_str().unwrap()),
    )
    .unwrap();
    (
        t.clone().env("TENANTCTL_CONFIG", file.to_str().unwrap()),
        dir,
    )
}

fn due(t: &Tenantctl) -> RunReport {
    t.run(&["backup", "--due", "-o", "json"]).expect(0).json()
}

/// The domains a run backed up.
fn backed_up(r: &RunReport) -> Vec<String> {
    let mut v: Vec<String> = r
        .results
        .iter()
        .filter(|x| x.status == "ok")
        .map(|x| x.domain.clone())
        .collect();
    v.sort();
    v
}

/// The backups of `domain` under `out` (in no particular order).
fn backups_of(out: &Path, domain: &str) -> Vec<PathBuf> {
    let dir = out.join(domain);
    let mut v: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(d) => d
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "tenant"))
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Makes the ledger say `domain`'s backups all ended `ago` (an interval) earlier.
fn age(db: &TestDb, domain: &str, ago: &str) {
    db.client()
        .execute(
            &format!(
                "UPDATE public.tenant_events SET started_at = started_at - interval '{ago}', \
                 finished_at = finished_at - interval '{ago}' \
                 WHERE action = 'backup' AND domain = $1"
            ),
            &[&domain],
        )
        .unwrap();
}

#[test]
fn due_backs_up_exactly_the_tenants_their_policy_says_and_rotates_each_by_it() {
    let (db, t) = ready();
    let out = tempfile::tempdir().unwrap();
    let (t, _cfg) = configured(
        &t,
        out.path(),
        "[backup.policies.standard]\nevery = \"1h\"\nkeep = 2\n\
         [backup.policies.premium]\nevery = \"10m\"\nkeep = 1\nkeep_within = \"1d\"\n",
    );
    for (d, kind) in [
        ("std-a", "standard"),
        ("std-b", "standard"),
        ("prem", "premium"),
        ("free", "free"),
    ] {
        let schema = create(&t, d, &["--migrate", "--type", kind])
            .tenant
            .schema_name;
        seed_example(&mut db.client(), &schema, 10);
    }
    create(&t, "bare", &["--type", "standard"]);
    // First tick: every tenant with a policy and a schema; `free` has no policy (and
    // there is no default), `bare` has no schema (skipped).
    let first = due(&t);
    assert_eq!(backed_up(&first), ["prem", "std-a", "std-b"], "{first:?}");
    assert!(backups_of(out.path(), "free").is_empty());
    // Right away, nothing is due.
    let again = due(&t);
    assert!(backed_up(&again).is_empty(), "{again:?}");
    // std-a's last backup 2 hours ago (due), prem's 20 minutes ago (due), std-b's 30
    // minutes ago (not due within its hour).
    age(&db, "std-a", "2 hours");
    age(&db, "prem", "20 minutes");
    age(&db, "std-b", "30 minutes");
    let third = due(&t);
    assert_eq!(backed_up(&third), ["prem", "std-a"], "{third:?}");
    // Rotation by policy: std-a keeps 2; prem keeps 1 but also every one within a day.
    age(&db, "std-a", "2 hours");
    assert_eq!(backed_up(&due(&t)), ["std-a"]);
    assert_eq!(backups_of(out.path(), "std-a").len(), 2);
    assert_eq!(backups_of(out.path(), "prem").len(), 2);
    assert_eq!(backups_of(out.path(), "std-b").len(), 1);
    // A failed backup is due again at the next tick: break std-b's directory.
    age(&db, "std-b", "2 hours");
    let blocked = out.path().join("std-b");
    std::fs::remove_dir_all(&blocked).unwrap();
    std::fs::write(&blocked, b"not a directory").unwrap();
    // Its only tenant with a schema failed (bare is skipped): exit 1, as any bulk run in
    // which no tenant succeeded.
    let failing = t.run(&["backup", "--due", "-o", "json"]);
    failing.expect(1);
    let failed: RunReport = failing.json();
    let b = failed.results.iter().find(|r| r.domain == "std-b").unwrap();
    assert_eq!(b.status, "failed", "{failed:?}");
    assert!(backed_up(&failed).is_empty(), "{failed:?}");
    std::fs::remove_file(&blocked).unwrap();
    assert_eq!(backed_up(&due(&t)), ["std-b"]);
}

#[test]
fn a_due_run_that_overlaps_another_backs_up_nothing_and_exits_zero() {
    let (db, t) = ready();
    let out = tempfile::tempdir().unwrap();
    let (t, _cfg) = configured(
        &t,
        out.path(),
        "[backup.policies.default]\nevery = \"1h\"\nkeep = 3\n",
    );
    create(&t, "alpha", &["--migrate"]);
    // Another run holds the lock of due backups.
    let (k1, k2) = tenantctl::pg::db::lock_key(
        tenantctl::pg::db::LockSpace::Registry,
        "public.backup --due",
    );
    let mut holder = db.client();
    holder
        .execute("SELECT pg_advisory_lock($1, $2)", &[&k1, &k2])
        .unwrap();
    let run = t.run(&["backup", "--due", "-o", "json"]);
    run.expect(0);
    assert!(
        run.stderr.contains("another `backup --due` run is going"),
        "{}",
        run.stderr
    );
    let report: RunReport = run.json();
    assert_eq!(report.summary.total, 0, "{report:?}");
    assert!(backups_of(out.path(), "alpha").is_empty());
    // Once it ends, the next tick backs up what is due.
    holder
        .execute("SELECT pg_advisory_unlock($1, $2)", &[&k1, &k2])
        .unwrap();
    assert_eq!(backed_up(&due(&t)), ["alpha"]);
}

#[test]
fn due_without_policies_bad_policies_and_due_with_keep_are_refused_changing_nothing() {
    let (_db, t) = ready();
    let out = tempfile::tempdir().unwrap();
    create(&t, "alpha", &["--migrate"]);
    let (none, _c1) = configured(&t, out.path(), "");
    expect_error(&none.run(&["backup", "--due"]), 3, &["backup policies"]);
    for (policy, needle) in [
        ("[backup.policies.default]\nkeep = 3\n", "every"),
        ("[backup.policies.default]\nevery = \"1h\"\n", "keep"),
        (
            "[backup.policies.default]\nevery = \"1s\"\nkeep = 3\n",
            "out of range",
        ),
        (
            "[backup.policies.default]\nevery = \"1h\"\nkeep = 0\n",
            "keep",
        ),
        (
            "[backup.policies.default]\nevery = \"soon\"\nkeep = 3\n",
            "every",
        ),
        (
            "[backup.policies.default]\nevery = \"1h\"\nkeep = 3\nkeep = 4\n",
            "keep",
        ),
        (
            "[backup.policies.default]\nevery = \"1h\"\nkeep = 3\nretain = 4\n",
            "retain",
        ),
        (
            "[backup.policies.\"Bad Type\"]\nevery = \"1h\"\nkeep = 3\n",
            "backup.policies",
        ),
    ] {
        let (bad, _c) = configured(&t, out.path(), policy);
        expect_error(&bad.run(&["backup", "--due"]), 3, &[needle]);
    }
    // No policy and no directory either: the policy is what is missing (exit 3).
    expect_error(&t.run(&["backup", "--due"]), 3, &["backup policies"]);
    // An empty directory would mean the config file's own.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("tenants.toml");
    std::fs::write(
        &empty,
        "[backup]\ndir = \"\"\n[backup.policies.default]\nevery = \"1h\"\nkeep = 3\n",
    )
    .unwrap();
    expect_error(
        &t.clone()
            .env("TENANTCTL_CONFIG", empty.to_str().unwrap())
            .run(&["backup", "--due"]),
        3,
        &["backup.dir"],
    );
    assert!(std::fs::read_dir(dir.path()).unwrap().count() == 1);
    let (ok, _c2) = configured(
        &t,
        out.path(),
        "[backup.policies.default]\nevery = \"1h\"\nkeep = 3\n",
    );
    expect_error(&ok.run(&["backup", "--due", "--keep", "2"]), 2, &["--keep"]);
    // Without --out and without backup.dir.
    expect_error(&t.run(&["backup", "--all"]), 2, &["--out"]);
    assert!(std::fs::read_dir(out.path()).unwrap().next().is_none());
}

#[test]
fn restore_latest_takes_the_newest_backup_and_says_which() {
    let (db, t) = ready();
    let out = tempfile::tempdir().unwrap();
    let (t, _cfg) = configured(
        &t,
        out.path(),
        "[backup.policies.default]\nevery = \"1h\"\nkeep = 5\n",
    );
    let schema = create(&t, "alpha", &["--migrate"]).tenant.schema_name;
    seed_example(&mut db.client(), &schema, 12);
    // No backup yet: not found, nothing changed.
    expect_error(
        &t.run(&["tenant", "restore", "alpha", "--latest", "--yes"]),
        1,
        &["no backup of tenant alpha"],
    );
    let count = |db: &TestDb| -> i64 {
        db.client()
            .query_one(&format!("SELECT count(*) FROM \"{schema}\".members"), &[])
            .unwrap()
            .get(0)
    };
    let forget = |db: &TestDb, n: i64| {
        db.client()
            .execute(
                &format!(
                    "DELETE FROM \"{schema}\".members WHERE id IN \
                     (SELECT id FROM \"{schema}\".members ORDER BY id LIMIT $1)"
                ),
                &[&n],
            )
            .unwrap();
    };
    t.run(&["backup", "--all"]).expect(0);
    forget(&db, 3);
    let second = count(&db);
    t.run(&["backup", "--all"]).expect(0);
    forget(&db, 4);
    assert!(count(&db) < second);
    let run = t.run(&["tenant", "restore", "alpha", "--latest", "--yes"]);
    run.expect(0);
    let said = run
        .stderr
        .lines()
        .find_map(|l| {
            l.split_once("restoring from ")
                .map(|(_, p)| p.trim().to_string())
        })
        .unwrap_or_else(|| panic!("which backup is not said: {}", run.stderr));
    assert!(
        Path::new(&said).starts_with(out.path().join("alpha")),
        "{said}"
    );
    assert_eq!(count(&db), second);
    // FILE and --latest together, and --from without --latest, are usage errors.
    let f = said.as_str();
    expect_error(
        &t.run(&["tenant", "restore", "alpha", f, "--latest", "--yes"]),
        2,
        &[],
    );
    expect_error(
        &t.run(&["tenant", "restore", "alpha", f, "--from", "x", "--yes"]),
        2,
        &[],
    );

    // Another tenant's archive put among alpha's backups, newest: refused, unchanged.
    create(&t, "beta", &["--migrate"]);
    // A later second than alpha's last backup, so that the planted copy is the newest.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    t.run(&["backup", "--tenant", "beta"]).expect(0);
    let theirs = std::fs::read_dir(out.path().join("beta"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .expect("beta's backup");
    let name = theirs.file_name().unwrap().to_string_lossy().to_string();
    let planted = out
        .path()
        .join("alpha")
        .join(name.replacen("beta", "alpha", 1));
    std::fs::copy(&theirs, &planted).unwrap();
    let before = count(&db);
    let refused = t.run(&["tenant", "restore", "alpha", "--latest", "--yes"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    for needle in [
        "holds the data of tenant \"beta\"",
        "nothing was changed",
        &planted.display().to_string(),
    ] {
        assert!(refused.stderr.contains(needle), "{}", refused.stderr);
    }
    assert_eq!(count(&db), before);
}

#[test]
fn serve_with_backups_on_backs_up_what_is_due_and_the_gauge_counts_what_is_overdue() {
    let (db, t) = ready();
    let out = tempfile::tempdir().unwrap();
    let (t, _cfg) = configured(
        &t,
        out.path(),
        "[serve]\nbackups = true\n[backup.policies.default]\nevery = \"1h\"\nkeep = 2\n",
    );
    create(&t, "alpha", &["--migrate"]);
    create(&t, "bravo", &["--migrate"]);
    let metrics = t.run(&["metrics"]).expect(0).stdout.clone();
    assert!(
        metrics.contains("tenantctl_backups_overdue{type=\"standard\"} 2\n"),
        "{metrics}"
    );
    let s = crate::serve::start(&t);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while backups_of(out.path(), "alpha").is_empty() || backups_of(out.path(), "bravo").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "serve backed nothing up in 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let text = s.get_anon("/metrics").expect(200).body.clone();
    assert!(
        text.contains("tenantctl_backups_overdue{type=\"standard\"} 0\n"),
        "{text}"
    );
    drop(s);
    let ok: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM public.tenant_events WHERE action = 'backup' AND status = 'ok'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(ok, 2);
}

#[test]
fn a_domain_edited_by_hand_into_a_path_never_leads_outside_the_backups_directory() {
    let (db, t) = ready();
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("a").join("b");
    std::fs::create_dir_all(&out).unwrap();
    let (t, _cfg) = configured(
        &t,
        &out,
        "[backup.policies.default]\nevery = \"1h\"\nkeep = 3\n",
    );
    let id = create(&t, "alpha", &["--migrate"]).tenant.id;
    for domain in ["..", "../../escape", "x/../.."] {
        db.client()
            .execute(
                "UPDATE public.tenants SET domain = $1 WHERE id = $2",
                &[&domain, &id],
            )
            .unwrap();
        let run = t.run(&["backup", "--due", "-o", "json"]);
        run.expect(1);
        let report: RunReport = run.json();
        assert_eq!(report.results[0].status, "failed", "{report:?}");
        let restore = t.run(&["tenant", "restore", &id.to_string(), "--latest", "--yes"]);
        assert_ne!(restore.code, 0, "{restore:?}");
        // Nothing was made anywhere under the root but the backups directory itself.
        let mut made = Vec::new();
        let mut stack = vec![root.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p.clone());
                }
                made.push(p);
            }
        }
        made.sort();
        assert_eq!(made, [root.path().join("a"), out.clone()], "{domain}");
    }
}

#[test]
fn a_run_that_ends_before_it_starts_has_no_duration_in_the_metrics() {
    let (db, t) = ready();
    db.client()
        .batch_execute(
            "INSERT INTO public.tenant_runs (run_id, command, started_at, finished_at, total, ok, up_to_date, failed, skipped, result) \
             VALUES (gen_random_uuid(), 'backup', now() + interval '1 hour', now(), 3, 3, 0, 0, 0, 'ok')",
        )
        .unwrap();
    let text = t.run(&["metrics"]).expect(0).stdout.clone();
    assert!(
        !text.contains("tenantctl_last_run_duration_seconds{command=\"backup\"}"),
        "{text}"
    );
}
