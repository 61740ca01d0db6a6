//! The dashboard's pages over HTTP, against a real registry on two servers: tenants
//! searched and paged (every filter, literal search text, hostile queries refused as a
//! page with the message escaped), the runs paged, a run's page with its tenants and
//! their errors, the pictures' numbers, and a run that is going: shown live with its
//! sessions, the lock its session waits for and who holds it, and the page refreshing
//! itself until the run ends. (`dashboard.rs` renders the same pages in Chromium.)

use crate::dashboard::{element, rows, strip_tags};
use crate::serve::{start, Server};
use crate::support::{dir_with, eventually, ready, Tenantctl, TestDb};

/// Migrations: V3 fails in a schema whose name holds `broken`, with markup in its error.
fn migrations() -> tempfile::TempDir {
    dir_with(&[
        ("V1__members.sql", "CREATE TABLE members (id int);\n"),
        (
            "V2__households.sql",
            "CREATE TABLE households (id int);\nALTER TABLE members ADD COLUMN household int;\n",
        ),
        (
            "V3__groups.sql",
            "DO $$ BEGIN IF current_schema() LIKE '%broken%' THEN RAISE EXCEPTION '<i>no</i> groups'; END IF; END $$;\n\
             CREATE TABLE groups (id int);\n",
        ),
    ])
}

/// A fleet on two servers (`default`, the registry's, and `b`): four tenants made by the
/// command line (one failed at V3, one at V1 on `b`), and `bulk` more registered by
/// hand into the registry, as an application writing it does.
struct Fleet {
    db: TestDb,
    _b: TestDb,
    t: Tenantctl,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn fleet(bulk: i32) -> Fleet {
    let (db, t) = ready();
    let b = TestDb::new();
    let config = dir_with(&[(
        "tenants.toml",
        &format!(
            "[servers.b]\nurl = \"{}\"\n\n[run]\nlock_timeout = \"0\"\n",
            b.url
        ),
    )]);
    let dir = migrations();
    let t = t.cwd(config.path()).migrations(dir.path());
    let create = |domain: &str, extra: &[&str]| {
        let mut args = vec![
            "tenant", "create", domain, "--name", domain, "--type", "church",
        ];
        args.extend_from_slice(extra);
        t.run(&args)
    };
    create("alpha", &["--server", "default", "--migrate"]).expect(0);
    create("beta", &["--server", "b", "--migrate", "--target", "1"]).expect(0);
    create("gamma", &["--server", "b", "--migrate"]).expect(0);
    let broken = create("broken", &["--server", "default", "--migrate"]);
    assert_ne!(broken.code, 0, "V3 fails in broken: {broken:?}");
    if bulk > 0 {
        db.client()
            .execute(
                "INSERT INTO tenants (tenant_name, domain, schema_name, api_key_hash, api_key_prefix) \
                 SELECT 'Bulk ' || i, 'bulk-' || i, 'tenant_bulk_' || i, \
                        encode(sha256(('key ' || i)::bytea), 'hex'), 'tk_' || i \
                 FROM generate_series(1, $1) AS i",
                &[&bulk],
            )
            .unwrap();
    }
    Fleet {
        db,
        _b: b,
        t,
        _dirs: (config, dir),
    }
}

/// `GET path` as HTML: its status and body.
fn page(s: &Server, path: &str) -> (u16, String) {
    let r = s.get(path);
    let html = r
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.starts_with("text/html"));
    assert!(html, "GET {path}: not HTML: {:?} {}", r.headers, r.body);
    (r.status, r.body)
}

fn ok(s: &Server, path: &str) -> String {
    let (status, body) = page(s, path);
    assert_eq!(status, 200, "GET {path}:\n{body}");
    assert!(
        !body.to_ascii_lowercase().contains("<script"),
        "a script in {path}:\n{body}"
    );
    body
}

/// The first cells (tenant domains) of a table's rows.
fn firsts(html: &str, id: &str) -> Vec<String> {
    rows(element(html, id))
        .into_iter()
        .map(|r| r[0].clone())
        .collect()
}

fn pager(html: &str) -> String {
    strip_tags(element(html, "pager"))
}

#[test]
fn tenants_are_searched_and_paged_and_hostile_queries_change_nothing() {
    let f = fleet(116);
    let s = start(&f.t);

    f.db.client()
        .execute(
            "UPDATE tenants SET server = 'nowhere' WHERE domain = 'bulk-7'",
            &[],
        )
        .unwrap();
    let health = rows(element(&ok(&s, "/"), "health"));
    let nowhere = health
        .iter()
        .find(|r| r[0] == "nowhere")
        .expect("a row for it");
    assert!(nowhere[1].starts_with("no: not configured"), "{health:?}");
    assert_eq!(nowhere[4], "unknown", "{health:?}");

    // 120 tenants: three pages of 50, by id.
    let first = ok(&s, "/tenants");
    assert_eq!(firsts(&first, "tenants").len(), 50);
    assert_eq!(
        firsts(&first, "tenants")[..4],
        ["alpha", "beta", "gamma", "broken"]
    );
    assert!(
        pager(&first).starts_with("Page 1 of 3 (120 tenants)"),
        "{}",
        pager(&first)
    );
    assert!(first.contains("href=\"/tenants?page=2\""), "{first}");
    let last = ok(&s, "/tenants?page=3");
    assert_eq!(firsts(&last, "tenants").len(), 20);
    assert_eq!(firsts(&last, "tenants").last().unwrap(), "bulk-116");
    assert!(
        last.contains("rel=\"prev\"") && !last.contains("rel=\"next\""),
        "{last}"
    );
    // Past the end: an empty page that says where the end is.
    let past = ok(&s, "/tenants?page=9");
    assert!(past.contains("No tenant matches."), "{past}");
    assert!(pager(&past).starts_with("Page 9 of 3"), "{past}");

    // Each filter, alone and together, against what the registry holds.
    let cases: &[(&str, &[&str])] = &[
        ("/tenants?q=ALPH", &["alpha"]),
        (
            "/tenants?q=bulk-11",
            &[
                "bulk-11", "bulk-110", "bulk-111", "bulk-112", "bulk-113", "bulk-114", "bulk-115",
                "bulk-116",
            ],
        ),
        ("/tenants?q=tenant_gam", &["gamma"]),
        ("/tenants?server=b", &["beta", "gamma"]),
        ("/tenants?status=failed", &["broken"]),
        ("/tenants?type=church&server=default", &["alpha", "broken"]),
        ("/tenants?revision=1", &["beta"]),
        ("/tenants?revision=2", &["broken"]),
        ("/tenants?behind=1", &["beta", "broken"]),
        ("/tenants?behind=1&server=b", &["beta"]),
        ("/tenants?behind=yes&server=b", &["beta"]),
        ("/tenants?behind=0&server=b", &["beta", "gamma"]),
        ("/tenants?behind=false&server=b", &["beta", "gamma"]),
        ("/tenants?revision=3&q=a", &["alpha", "gamma"]),
    ];
    for (path, expected) in cases {
        let html = ok(&s, path);
        assert_eq!(&firsts(&html, "tenants"), expected, "{path}");
        assert!(
            pager(&html).starts_with(&format!(
                "Page 1 of 1 ({} tenant{})",
                expected.len(),
                if expected.len() == 1 { "" } else { "s" }
            )),
            "{path}: {}",
            pager(&html)
        );
    }
    // `base`: the 116 registered by hand have nothing applied.
    assert!(pager(&ok(&s, "/tenants?revision=base")).contains("(116 tenants)"));
    // Search text is literal: `%` and `_` are no wildcards.
    for q in ["%25", "bulk%5F%5F", "%5C"] {
        let html = ok(&s, &format!("/tenants?q={q}"));
        assert!(html.contains("No tenant matches."), "q={q}:\n{html}");
    }
    // The form keeps what was asked, escaped.
    let hostile = ok(&s, "/tenants?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E%22");
    assert!(
        hostile.contains("value=\"&lt;script&gt;alert(1)&lt;/script&gt;&quot;\""),
        "{hostile}"
    );

    // Broken queries: a page that says what is wrong (escaped), 422, nothing changed.
    let before = crate::serve::snapshot(&f.db);
    for (path, says) in [
        ("/tenants?page=0", "page must be a whole number"),
        ("/tenants?page=abc", "page must be a whole number"),
        (
            "/tenants?page=99999999999999999999",
            "page must be a whole number",
        ),
        ("/runs?page=-1", "page must be a whole number"),
        (
            "/tenants?revision=%3Cb%3E",
            "revision must be a number or base",
        ),
    ] {
        let (status, body) = page(&s, path);
        assert_eq!(status, 422, "{path}:\n{body}");
        assert!(
            strip_tags(element(&body, "error")).contains(says),
            "{path}:\n{body}"
        );
        assert!(!body.contains("<b>"), "{path}:\n{body}");
    }
    for path in [
        "/tenants/nobody",
        "/tenants/%3Cb%3E",
        "/runs/not-a-run",
        "/runs/00000000-0000-4000-8000-000000000000",
    ] {
        let (status, body) = page(&s, path);
        assert_eq!(status, 404, "{path}:\n{body}");
        assert!(!body.contains("<b>"), "{path}:\n{body}");
    }
    assert_eq!(
        crate::serve::snapshot(&f.db),
        before,
        "a page changed something"
    );
}

#[test]
fn runs_are_paged_and_a_run_page_lists_its_tenants_with_their_errors() {
    let f = fleet(0);
    // A fleet run: beta goes to 3, broken fails again, alpha and gamma are up to date.
    let upgrade = f.t.run(&["upgrade", "--all"]);
    assert_ne!(upgrade.code, 0, "broken fails again: {upgrade:?}");
    // Runs of earlier days, written as a run writes its row: 55 more, two of them failed
    // three days ago, one that took 90 s.
    f.db.client()
        .batch_execute(
            "INSERT INTO tenant_runs (run_id, command, started_at, finished_at, total, ok, up_to_date, failed, skipped, result) \
             SELECT gen_random_uuid(), 'upgrade', ts - interval '2 s', ts, 4, 4, 0, 0, 0, 'ok' \
             FROM (SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '5 days' + i * interval '1 minute' AS ts \
                   FROM generate_series(1, 52) AS i) AS g; \
             INSERT INTO tenant_runs (run_id, command, started_at, finished_at, total, ok, up_to_date, failed, skipped, result) \
             SELECT gen_random_uuid(), 'upgrade', ts - interval '90 s', ts, 4, 1, 0, 3, 0, 'failed' \
             FROM (SELECT date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '3 days' + i * interval '1 hour' AS ts \
                   FROM generate_series(1, 2) AS i) AS g; \
             INSERT INTO tenant_runs (run_id, command, started_at, finished_at, total, ok, up_to_date, failed, skipped, result) \
             VALUES (gen_random_uuid(), 'backup', now() - interval '40 days', now() - interval '40 days', 1, 1, 0, 0, 0, 'ok');",
        )
        .unwrap();
    // A run killed before it recorded its end: entries, no row, no session.
    f.db.client()
        .batch_execute(
            "INSERT INTO tenant_events (run_id, tenant_id, domain, schema_name, action, from_revision, to_revision, status, started_at) \
             SELECT '11111111-2222-4333-8444-555555555555', id, domain, schema_name, 'upgrade', 1, 2, 'ok', now() \
             FROM tenants WHERE domain = 'alpha'",
        )
        .unwrap();
    let s = start(&f.t);
    let killed = ok(&s, "/runs/11111111-2222-4333-8444-555555555555");
    assert!(
        !killed.contains("http-equiv=\"refresh\""),
        "a stopped run does not refresh"
    );
    assert!(
        strip_tags(element(&killed, "state")).starts_with("Stopped before it recorded its end"),
        "{killed}"
    );
    assert_eq!(firsts(&killed, "entries"), ["alpha"]);

    let overview = ok(&s, "/");
    let recent = rows(element(&overview, "runs"));
    assert_eq!(recent.len(), 10, "the ten newest runs: {recent:?}");
    // finished, command, who, from, tenants, ok, up to date, failed, skipped, took, run
    let fleet_run = &recent[0];
    let run_id = fleet_run[10].clone();
    let who: String =
        f.db.client()
            .query_one(
                "SELECT DISTINCT db_user FROM tenant_events WHERE run_id = $1::text::uuid",
                &[&run_id],
            )
            .unwrap()
            .get(0);
    assert_eq!(
        fleet_run[1..9],
        [
            "upgrade",
            who.as_str(),
            fleet_run[3].as_str(),
            "4",
            "1",
            "2",
            "1",
            "0"
        ],
        "{fleet_run:?}"
    );

    // Pictures: today's bar and the failed day's, titled with their numbers.
    let days = element(&overview, "runs-chart");
    let today = time::OffsetDateTime::now_utc().date();
    let day = |back: i64| {
        let d = today - time::Duration::days(back);
        format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
    };
    for title in [
        format!(
            "<title>{}: 1 run, 1 failed, 1 tenant failed</title>",
            day(0)
        ),
        format!(
            "<title>{}: 52 runs, 0 failed, 0 tenants failed</title>",
            day(5)
        ),
        format!("<title>{}: 2 of 2 runs failed</title>", day(3)),
    ] {
        assert!(days.contains(&title), "no {title} in:\n{days}");
    }
    assert!(
        !days.contains("1 run, 0 failed"),
        "the 40-day-old run is out of range:\n{days}"
    );
    let durations = element(&overview, "durations-chart");
    assert!(
        durations.contains(&format!("<title>{}: longest run 90 s</title>", day(3))),
        "{durations}"
    );
    let revisions = element(&overview, "revisions-chart");
    for title in [
        "<title>revision 3 on default: 1 tenant</title>",
        "<title>revision 3 on b: 2 tenants</title>",
        "<title>revision 2 on default: 1 tenant</title>",
    ] {
        assert!(revisions.contains(title), "no {title} in:\n{revisions}");
    }

    // All runs: 56, two pages.
    let runs = ok(&s, "/runs");
    assert_eq!(rows(element(&runs, "runs")).len(), 50);
    assert!(
        pager(&runs).starts_with("Page 1 of 2 (56 runs)"),
        "{}",
        pager(&runs)
    );
    let second = ok(&s, "/runs?page=2");
    let older = rows(element(&second, "runs"));
    assert_eq!(older.len(), 6);
    assert_eq!(
        older.last().unwrap()[1],
        "backup",
        "the oldest last: {older:?}"
    );

    // The fleet run's page: its row, and its tenants with the error escaped.
    let run = ok(&s, &format!("/runs/{run_id}"));
    assert!(
        !run.contains("http-equiv=\"refresh\""),
        "an ended run does not refresh"
    );
    let summary = strip_tags(element(&run, "run"));
    for part in [
        "commandupgrade",
        "resultfailed",
        "tenants4",
        "ok1",
        "up to date2",
        "failed1",
    ] {
        assert!(summary.contains(part), "no {part} in {summary}");
    }
    let entries = rows(element(&run, "entries"));
    let mut tenants: Vec<&str> = entries.iter().map(|e| e[0].as_str()).collect();
    tenants.sort_unstable();
    assert_eq!(
        tenants,
        ["beta", "broken"],
        "the tenants with work: {entries:?}"
    );
    let broken = entries.iter().find(|e| e[0] == "broken").unwrap();
    assert_eq!(broken[4], "failed");
    assert!(
        element(&run, "entries").contains("&lt;i&gt;no&lt;/i&gt; groups"),
        "{run}"
    );
    let failed_only = ok(&s, &format!("/runs/{run_id}?failed=1"));
    assert_eq!(firsts(&failed_only, "entries"), ["broken"]);
    assert!(
        pager(&failed_only).contains("(1 entry)"),
        "{}",
        pager(&failed_only)
    );

    // The tenant page: history, pending, ledger.
    let id: i64 =
        f.db.client()
            .query_one("SELECT id FROM tenants WHERE domain = 'broken'", &[])
            .unwrap()
            .get(0);
    let broken = ok(&s, &format!("/tenants/{id}"));
    let history: Vec<Vec<String>> = rows(element(&broken, "history"));
    assert_eq!(
        history
            .iter()
            .map(|r| (r[0].as_str(), r[2].as_str()))
            .collect::<Vec<_>>(),
        [("1", "applied"), ("2", "applied")]
    );
    assert_eq!(firsts(&broken, "pending"), ["3"]);
    assert!(
        element(&broken, "events").contains("&lt;i&gt;no&lt;/i&gt;"),
        "{broken}"
    );
    assert!(
        broken.contains(&format!("href=\"/runs/{run_id}\"")),
        "{broken}"
    );
}

#[test]
fn a_run_going_is_live_with_the_lock_it_waits_for_and_who_holds_it() {
    let f = fleet(0);
    // beta (on b) is at 1; V2 alters its members table, which a session of ours holds in
    // a transaction whose last statement carries a secret literal.
    let b_url = f._b.url.clone();
    let mut config: postgres::Config = b_url.parse().unwrap();
    config.application_name("holder");
    let mut holder = config.connect(postgres::NoTls).unwrap();
    holder
        .batch_execute(
            "BEGIN; LOCK TABLE tenant_beta.members IN ACCESS SHARE MODE; SELECT 'hunter2-secret'",
        )
        .unwrap();
    let holder_pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let s = start(&f.t);
    let mut run = f.t.spawn(&["upgrade", "--tenant", "beta"]);
    let mut watch = postgres::Client::connect(&b_url, postgres::NoTls).unwrap();
    let (waiting_pid, waiting_app): (i32, String) =
        run.wait_for("the upgrade waits for the holder", || {
            watch
                .query_opt(
                    "SELECT pid, application_name FROM pg_stat_activity \
                     WHERE datname = current_database() AND application_name LIKE 'tenantctl %' \
                       AND $1 = ANY (pg_blocking_pids(pid))",
                    &[&holder_pid],
                )
                .unwrap()
                .map(|r| (r.get(0), r.get(1)))
        });
    // An application's read queued behind the migration's lock.
    let reader_url = b_url.clone();
    let reader = std::thread::spawn(move || {
        let mut config: postgres::Config = reader_url.parse().unwrap();
        config.application_name("app reader");
        let mut c = config.connect(postgres::NoTls).unwrap();
        c.query_one("SELECT count(*) FROM tenant_beta.members", &[])
            .map(|r| r.get::<_, i64>(0))
    });
    eventually("the reader waits on tenantctl", || {
        watch
            .query_opt(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'app reader' \
                 AND wait_event_type = 'Lock'",
                &[],
            )
            .unwrap()
            .is_some()
    });

    let overview = ok(&s, "/");
    assert!(
        overview.contains("<meta http-equiv=\"refresh\" content=\"5\">"),
        "{overview}"
    );
    assert!(
        !overview.contains("hunter2"),
        "another session's statement is shown"
    );
    let live = rows(element(&overview, "live"));
    assert_eq!(live.len(), 1, "{live:?}");
    let run_id = waiting_app.rsplit(' ').next().unwrap().to_string();
    assert_eq!(live[0][0], run_id, "{live:?}");
    assert!(
        live[0][7].parse::<u64>().unwrap() >= 1,
        "its sessions: {live:?}"
    );
    // server, pid, session, user, waiting for, for, blocked by
    let waits = rows(element(&overview, "lock-waits"));
    assert_eq!(
        waits.len(),
        2,
        "tenantctl's session and the reader: {waits:?}"
    );
    let mine = waits
        .iter()
        .find(|w| w[1] == waiting_pid.to_string())
        .unwrap_or_else(|| panic!("tenantctl's wait: {waits:?}"));
    assert_eq!(
        (mine[0].as_str(), mine[2].as_str()),
        ("b", waiting_app.as_str())
    );
    assert_eq!(
        mine[4], "AccessExclusiveLock on tenant_beta.members",
        "{waits:?}"
    );
    assert!(
        mine[6].starts_with(&format!("pid {holder_pid} holder")),
        "who holds it: {waits:?}"
    );
    let queued = waits
        .iter()
        .find(|w| w[2] == "app reader")
        .unwrap_or_else(|| panic!("the reader's wait: {waits:?}"));
    assert_eq!(
        queued[4], "AccessShareLock on tenant_beta.members",
        "{waits:?}"
    );
    assert!(
        queued[6].contains(&format!("pid {waiting_pid} {waiting_app}")),
        "the reader waits on tenantctl: {waits:?}"
    );
    let health = rows(element(&overview, "health"));
    let b = health.iter().find(|r| r[0] == "b").unwrap();
    assert_eq!((b[1].as_str(), b[4].as_str()), ("yes", "2"), "{health:?}");

    // Its page, while it goes: no row yet, and it refreshes itself.
    let going = ok(&s, &format!("/runs/{run_id}"));
    assert!(going.contains("id=\"state\""), "{going}");
    assert!(going.contains("http-equiv=\"refresh\""), "{going}");

    holder.batch_execute("ROLLBACK").unwrap();
    let done = run.finish();
    assert_eq!(reader.join().unwrap().unwrap(), 0);
    assert_eq!(done.code, 0, "{done:?}");
    eventually("the run is no longer live", || {
        let html = ok(&s, "/");
        html.contains("<p id=\"live\" class=\"muted\">None.</p>")
            && !html.contains("http-equiv=\"refresh\"")
            && !html.contains("id=\"lock-waits\"")
    });
    let ended = ok(&s, &format!("/runs/{run_id}"));
    assert!(!ended.contains("http-equiv=\"refresh\""), "{ended}");
    assert_eq!(firsts(&ended, "entries"), ["beta"]);
}
