//! `backup`: one complete, importable archive per tenant under `DIR/DOMAIN/`, nothing
//! half-written left behind, `--keep` rotation that touches only the tenant's own
//! backups and never the one just written, names never given twice (runs within one
//! second, two processes at once), the registry status never changed by a backup (a failed one is recorded in
//! the ledger only), and the bulk run's canary and refusals.

use std::path::{Path, PathBuf};

use crate::checks::{create, expect_error, registry_row, seed_example, table_contents};
use crate::common_json::{Events, RunReport};
use crate::support::{ready, Tenantctl, TestDb};

/// A migrated, seeded tenant on the registry's database; its schema.
fn tenant(db: &TestDb, t: &Tenantctl, domain: &str) -> String {
    let schema = create(t, domain, &["--migrate"]).tenant.schema_name;
    seed_example(&mut db.client(), &schema, 12);
    schema
}

fn backup(t: &Tenantctl, out: &Path, extra: &[&str], code: i32) -> RunReport {
    let out = out.to_str().unwrap();
    let mut args = vec!["backup", "--out", out, "-o", "json"];
    args.extend_from_slice(extra);
    t.run(&args).expect(code).json()
}

/// Every file under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if !dir.exists() {
        return found;
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            found.extend(files_under(&p));
        } else {
            found.push(p);
        }
    }
    found.sort();
    found
}

/// Whether `name` is `DOMAIN-YYYYMMDDTHHMMSSZ.tenant`, or that with `-N` before `.tenant`.
fn is_backup_name(name: &str, domain: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix(&format!("{domain}-"))
        .and_then(|r| r.strip_suffix(".tenant"))
    else {
        return false;
    };
    let (stamp, counter) = match stamp.split_once('-') {
        Some((s, n)) => (s, Some(n)),
        None => (stamp, None),
    };
    let b = stamp.as_bytes();
    b.len() == 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && counter.is_none_or(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
}

/// The tenant's own backups in its directory, by name.
fn own_backups(out: &Path, domain: &str) -> Vec<PathBuf> {
    files_under(&out.join(domain))
        .into_iter()
        .filter(|p| is_backup_name(p.file_name().unwrap().to_str().unwrap(), domain))
        .collect()
}

#[test]
fn backup_all_writes_one_importable_archive_per_tenant_and_keep_rotates_only_its_own() {
    let (db, t) = ready();
    let domains = ["acme", "acme-west", "bravo"];
    for d in domains {
        tenant(&db, &t, d);
    }
    let out = tempfile::tempdir().unwrap();
    let out = out.path();
    // Files that are not acme's backups, where acme's backups go.
    let unrelated = [
        (out.join("README.txt"), "the backups of every tenant\n"),
        (out.join("acme/README.txt"), "acme's backups\n"),
        (
            out.join("acme/acme-west-20200101T000000Z.tenant"),
            "another tenant's archive\n",
        ),
        (
            out.join("acme/acme-20200101T000000Z.tenant.bak"),
            "a copy an operator made\n",
        ),
    ];
    std::fs::create_dir_all(out.join("acme")).unwrap();
    for (p, body) in &unrelated {
        std::fs::write(p, body).unwrap();
    }

    let report = backup(&t, out, &["--all"], 0);
    assert_eq!(report.summary.ok, 3, "{report:?}");
    for d in domains {
        let r = report.of(d);
        assert_eq!(r.status, "ok");
        let file = PathBuf::from(r.file.as_deref().expect("the result names the archive"));
        assert_eq!(file.parent().unwrap(), out.join(d));
        assert!(
            is_backup_name(file.file_name().unwrap().to_str().unwrap(), d),
            "{}",
            file.display()
        );
        assert!(file.is_file());
        assert_eq!(own_backups(out, d), std::slice::from_ref(&file));
        // The archive is whole: a new tenant made from it has the same data.
        let copy = format!("copy-{d}");
        t.run(&[
            "tenant",
            "import",
            file.to_str().unwrap(),
            "--as",
            &copy,
            "--name",
            &copy,
        ])
        .expect(0);
        let schema = registry_row(&db, &copy).schema_name;
        assert_eq!(
            table_contents(&mut db.client(), &schema),
            table_contents(&mut db.client(), &registry_row(&db, d).schema_name),
            "{d}"
        );
    }
    let partial: Vec<_> = files_under(out)
        .into_iter()
        .filter(|p| p.to_str().unwrap().ends_with(".partial"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");

    // Three more runs keeping two: the two newest of each tenant remain.
    let mut written: Vec<Vec<PathBuf>> = Vec::new();
    for _ in 0..3 {
        let report = backup(
            &t,
            out,
            &["--tenant", "acme", "--tenant", "acme-west", "--keep", "2"],
            0,
        );
        assert!(
            report.results.iter().all(|r| r.error.is_none()),
            "{report:?}"
        );
        written.push(
            report
                .results
                .iter()
                .map(|r| PathBuf::from(r.file.clone().unwrap()))
                .collect(),
        );
    }
    for d in ["acme", "acme-west"] {
        let mut newest: Vec<PathBuf> = written[1..]
            .iter()
            .flatten()
            .filter(|p| p.parent().unwrap() == out.join(d))
            .cloned()
            .collect();
        newest.sort();
        assert_eq!(own_backups(out, d), newest, "{d}");
    }
    for (p, body) in &unrelated {
        assert_eq!(
            std::fs::read_to_string(p).unwrap(),
            *body,
            "{}",
            p.display()
        );
    }
    // bravo was not in those runs: its one backup stays.
    assert_eq!(own_backups(out, "bravo").len(), 1);
}

#[test]
fn a_backup_never_changes_a_tenant_status_and_the_ledger_records_each() {
    let (db, t) = ready();
    tenant(&db, &t, "fine");
    let bad = tenant(&db, &t, "blob");
    tenant(&db, &t, "broken");
    // Large objects are not carried: blob's export is refused.
    db.client()
        .batch_execute(&format!(
            "CREATE TABLE \"{bad}\".attachments (id int PRIMARY KEY, body oid)"
        ))
        .unwrap();
    db.client()
        .batch_execute(
            "UPDATE public.tenants SET status = 'failed', last_error = 'V7 failed earlier' WHERE domain = 'broken'",
        )
        .unwrap();
    let rows: Vec<_> = ["fine", "blob", "broken"]
        .iter()
        .map(|d| registry_row(&db, d))
        .collect();

    let out = tempfile::tempdir().unwrap();
    let report = backup(&t, out.path(), &["--all"], 4);
    assert_eq!(report.of("fine").status, "ok");
    assert_eq!(report.of("broken").status, "ok");
    let failed = report.of("blob");
    assert_eq!(failed.status, "failed");
    assert!(failed.file.is_none());
    let e = failed.error.as_deref().unwrap_or_default();
    assert!(e.contains("large objects"), "{e}");
    // Nothing half-written is left for the failed one.
    assert_eq!(files_under(&out.path().join("blob")), Vec::<PathBuf>::new());
    assert_eq!(own_backups(out.path(), "broken").len(), 1);

    let after: Vec<_> = ["fine", "blob", "broken"]
        .iter()
        .map(|d| registry_row(&db, d))
        .collect();
    assert_eq!(after, rows, "a backup changed a registry row");
    assert_eq!(after[2].status, "failed");

    let events: Events = t.run(&["events", "-o", "json"]).expect(0).json();
    let of = |d: &str| {
        events
            .events
            .iter()
            .filter(|e| e.domain == d && e.action == "backup")
            .map(|e| (e.run_id.as_str(), e.status.as_str()))
            .collect::<Vec<_>>()
    };
    assert_eq!(of("fine"), [(report.run_id.as_str(), "ok")]);
    assert_eq!(of("broken"), [(report.run_id.as_str(), "ok")]);
    assert_eq!(of("blob"), [(report.run_id.as_str(), "failed")]);
}

#[test]
fn a_failed_canary_starts_no_other_backup_and_an_out_that_is_a_file_is_refused() {
    let (db, t) = ready();
    // The first tenant (by id) cannot be backed up.
    let first = tenant(&db, &t, "c1");
    db.client()
        .batch_execute(&format!("CREATE TABLE \"{first}\".attachments (body oid)"))
        .unwrap();
    tenant(&db, &t, "c2");
    tenant(&db, &t, "c3");
    let out = tempfile::tempdir().unwrap();
    let report = backup(&t, out.path(), &["--all", "--canary", "1"], 4);
    assert_eq!(report.of("c1").status, "failed");
    for d in ["c2", "c3"] {
        let r = report.of(d);
        assert_eq!(r.status, "skipped", "{r:?}");
        assert!(
            r.error
                .as_deref()
                .is_some_and(|e| e.contains("not started")),
            "{r:?}"
        );
    }
    assert_eq!(files_under(out.path()), Vec::<PathBuf>::new());
    let events: Events = t.run(&["events", "-o", "json"]).expect(0).json();
    assert!(
        events
            .events
            .iter()
            .all(|e| e.domain == "c1" || e.action != "backup"),
        "{events:?}"
    );

    let file = out.path().join("not-a-dir");
    std::fs::write(&file, "keep me\n").unwrap();
    let run = t.run(&["backup", "--all", "--out", file.to_str().unwrap()]);
    expect_error(&run, 2, &["not a directory"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me\n");
}

/// The order of `DOMAIN-STAMP.tenant` and `DOMAIN-STAMP-N.tenant` (the first of a second
/// counts as 1).
fn backup_order(p: &Path) -> (String, u64) {
    let stem = p.file_stem().unwrap().to_str().unwrap();
    let (_, rest) = stem.split_at(stem.find('-').unwrap() + 1);
    match rest.split_once('-') {
        Some((stamp, n)) => (stamp.to_string(), n.parse().unwrap()),
        None => (rest.to_string(), 1),
    }
}

/// `own_backups`, oldest first.
fn backups_in_order(out: &Path, domain: &str) -> Vec<PathBuf> {
    let mut found = own_backups(out, domain);
    found.sort_by_key(|p| backup_order(p));
    found
}

/// One `backup --keep 2` of `acme`; the file it reports.
fn keep_two(t: &Tenantctl, out: &Path) -> PathBuf {
    let report = backup(t, out, &["--tenant", "acme", "--keep", "2"], 0);
    let r = report.of("acme");
    assert!(r.error.is_none(), "{r:?}");
    PathBuf::from(r.file.clone().expect("the result names the archive"))
}

#[test]
fn backup_names_are_never_issued_twice_and_keep_never_removes_the_backup_just_written() {
    let (db, t) = ready();
    tenant(&db, &t, "acme");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("acme.tenant");
    t.run(&["tenant", "export", "acme", "-f", archive.to_str().unwrap()])
        .expect(0);
    let out = work.path().join("out");
    let own = out.join("acme");
    std::fs::create_dir_all(&own).unwrap();
    // What three backups within one second leave with --keep 2, for every second of the
    // next minutes: the second and third, the first one's name free again.
    let now = time::OffsetDateTime::now_utc();
    for s in -1..240 {
        let at = now + time::Duration::seconds(s);
        let stamp = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        );
        for n in [2, 3] {
            std::fs::copy(&archive, own.join(format!("acme-{stamp}-{n}.tenant"))).unwrap();
        }
    }
    let newest_seeded = backups_in_order(&out, "acme").pop().unwrap();

    let mut reported: Vec<PathBuf> = Vec::new();
    fn check(reported: &mut Vec<PathBuf>, file: PathBuf) {
        assert!(
            file.is_file(),
            "{} was reported but is gone",
            file.display()
        );
        assert!(
            !reported.contains(&file),
            "{} was reported twice",
            file.display()
        );
        reported.push(file);
    }
    // Runs one after the other, many within one second.
    for _ in 0..6 {
        let file = keep_two(&t, &out);
        check(&mut reported, file.clone());
        let kept = backups_in_order(&out, "acme");
        let want = match reported.len() {
            1 => vec![newest_seeded.clone(), file],
            n => reported[n - 2..].to_vec(),
        };
        assert_eq!(
            kept, want,
            "the newest two remain, the last one written newest"
        );
    }

    // Two at once: the same domain in two registries, backed up into the same directory,
    // which holds no backup yet.
    let out = work.path().join("shared");
    reported.clear();
    let db2 = crate::support::TestDb::new();
    let t2 = crate::support::tenantctl(&db2);
    t2.run(&["init"]).expect(0);
    tenant(&db2, &t2, "acme");
    for _ in 0..4 {
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| keep_two(&t, &out));
            let b = s.spawn(|| keep_two(&t2, &out));
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_ne!(a, b, "two runs at once were given one name");
        check(&mut reported, a.clone());
        check(&mut reported, b.clone());
        let mut both = vec![a, b];
        both.sort_by_key(|p| backup_order(p));
        assert_eq!(
            backups_in_order(&out, "acme"),
            both,
            "the two newest remain"
        );
    }
}
