//! The dashboard of `tenantctl serve` in a real browser: headless Chromium
//! (`/usr/bin/chromium`, installed by `scripts/install-test-deps`; the tests fail when it
//! is missing) signs in with `/?token=`, follows the redirect with the session cookie and
//! renders the fleet: tenants per revision (a picture and a table) and per server, failed
//! tenants with their errors escaped (a migration error carrying `<script>` never runs),
//! recent runs, the pictures of runs and backups. The same page renders with JavaScript
//! disabled. Following links (the tenants page, a tenant's page, a run's page, the
//! tenants behind head) needs the cookie a second time, so that part drives one browser
//! over the DevTools protocol on a pipe.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common_json::Listing;
use crate::support::{dir_with, eventually, ready, Spawned, Tenantctl, TestDb};

const CHROMIUM: &str = "/usr/bin/chromium";
const TOKEN: &str = "dashboard-test-token-0123456789";

/// The error the `broken` tenant's V3 raises: markup that must arrive as text.
const HOSTILE: &str = "<script>document.title='pwned'</script><b>bold</b> & more";

/// [`HOSTILE`] as text in the rendered DOM.
const ESCAPED: &str =
    "&lt;script&gt;document.title='pwned'&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt; &amp; more";

fn chromium() -> &'static str {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: the dashboard tests need headless Chromium; \
         run scripts/install-test-deps as root (apt-get install chromium)"
    );
    CHROMIUM
}

/// Flags every browser run here gets.
const FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
];

/// A fleet on two servers (the registry's database, `default`, and a second database,
/// `b`) with `tenantctl serve` running on an ephemeral port.
struct Served {
    port: u16,
    t: Tenantctl,
    serve: Spawned,
    _db: TestDb,
    _db_b: TestDb,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Served {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn served() -> Served {
    let (db, t) = ready();
    let db_b = TestDb::new();
    let config = dir_with(&[(
        "tenants.toml",
        &format!("[servers.b]\nurl = \"{}\"\n", db_b.url),
    )]);
    let broken = format!(
        "DO $$ BEGIN IF current_schema() LIKE '%broken%' THEN RAISE EXCEPTION '{}'; END IF; END $$;\n\
         CREATE TABLE groups (id int);\n",
        HOSTILE.replace('\'', "''")
    );
    let migrations = dir_with(&[
        ("V1__members.sql", "CREATE TABLE members (id int);\n"),
        ("V2__households.sql", "CREATE TABLE households (id int);\n"),
        ("V3__groups.sql", &broken),
    ]);
    let t = t.cwd(config.path()).migrations(migrations.path());
    let create = |domain: &str, extra: &[&str]| {
        let mut args = vec!["tenant", "create", domain, "--name", domain];
        args.extend_from_slice(extra);
        t.run(&args)
    };
    create("at-head", &["--server", "default", "--migrate"]).expect(0);
    create("behind", &["--server", "b", "--migrate", "--target", "1"]).expect(0);
    create("waiting", &["--server", "default"]).expect(0);
    let failed = create("broken", &["--server", "b", "--migrate"]);
    assert_ne!(failed.code, 0, "V3 must fail for broken: {failed:?}");
    t.run(&["upgrade", "--tenant", "behind", "2"]).expect(0);
    // A bulk run with a failure: broken's V3 fails again.
    let again = t.run(&["upgrade", "--tenant", "broken"]);
    assert_ne!(again.code, 0, "V3 must fail for broken again: {again:?}");

    let mut serve =
        t.clone()
            .env("TENANTCTL_API_TOKEN", TOKEN)
            .spawn(&["serve", "--listen", "127.0.0.1:0"]);
    serve.wait_for_stderr("listening on http://127.0.0.1:");
    let stderr = serve.stderr();
    let port = stderr
        .split("listening on http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in: {stderr}"));
    Served {
        port,
        t,
        serve,
        _db: db,
        _db_b: db_b,
        _dirs: (config, migrations),
    }
}

/// `chromium --dump-dom URL` in a fresh profile: the DOM after the page loaded, with the
/// redirects and cookies of that one navigation.
fn dump_dom(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("<html"),
        "chromium --dump-dom {url} failed ({}):\n{dom}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// The outer HTML of the element with this id (elements of the same tag are not nested
/// in these pages). Fails when there is none.
pub(crate) fn element<'a>(html: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{html}"));
    let start = html[..at].rfind('<').unwrap();
    let tag: String = html[start + 1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let close = format!("</{tag}>");
    let end = html[at..]
        .find(&close)
        .unwrap_or_else(|| panic!("#{id} is not closed:\n{html}"));
    &html[start..at + end + close.len()]
}

/// The rows of a table, each as its cells' text with tags removed.
pub(crate) fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let body = &cell[cell.find('>').unwrap() + 1..];
                    let body = &body[..body.find("</td>").unwrap()];
                    strip_tags(body)
                })
                .collect::<Vec<_>>()
        })
        .filter(|cells| !cells.is_empty())
        .collect()
}

pub(crate) fn strip_tags(s: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// A page with what differs between two renders taken apart removed: the times ("in 12
/// ms", "at 2026-...") become `#`.
fn timeless(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut digits = String::new();
    for c in html.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if !digits.is_empty() {
            out.push_str(
                if c == ' ' || c == '-' || c == ':' || c == 'T' || c == 'Z' {
                    "#"
                } else {
                    &digits
                },
            );
            digits.clear();
        }
        out.push(c);
    }
    out.push_str(&digits);
    out
}

/// The body of a page, which must be the same whether scripts run or not.
fn body(html: &str) -> &str {
    let start = html.find("<body>").expect("a body");
    let end = html.rfind("</body>").expect("a closed body");
    &html[start..end]
}

fn listing(t: &Tenantctl) -> Listing {
    t.run(&["tenant", "list", "-o", "json"]).expect(0).json()
}

/// Checks the dashboard as rendered; returns the tenant pages it links to.
fn check_dashboard(dom: &str, s: &Served) -> Vec<(String, String)> {
    let list = listing(&s.t);
    assert_eq!(list.tenants.len(), 4);
    assert!(
        dom.contains("<title>tenantctl dashboard</title>"),
        "the title is the page's own (no script from tenant data ran):\n{dom}"
    );
    assert!(
        !dom.to_ascii_lowercase().contains("<script"),
        "a script element in the page:\n{dom}"
    );
    assert!(!dom.contains(TOKEN), "the token is in the page");
    assert_eq!(strip_tags(element(dom, "head")), "3");

    let mut by_revision = rows(element(dom, "by-revision"));
    by_revision.sort();
    assert_eq!(
        by_revision,
        [["2", "2"], ["3", "1"], ["base", "1"]].map(|r| r.map(String::from).to_vec()),
        "{dom}"
    );
    let by_server = rows(element(dom, "by-server"));
    assert_eq!(
        by_server,
        [["b", "2", "2", "1"], ["default", "2", "0", "0"]].map(|r| r.map(String::from).to_vec()),
        "server, tenants, behind, failed:\n{dom}"
    );

    let failed = element(dom, "failed");
    let failed_rows = rows(failed);
    assert_eq!(failed_rows.len(), 1, "{failed}");
    assert_eq!(failed_rows[0][0], "broken");
    // The error is shown as text: its markup is escaped, not parsed.
    assert!(
        failed.contains(ESCAPED),
        "the failed tenant's error, escaped:\n{failed}"
    );
    assert!(!failed.contains("<b>bold"), "{failed}");

    // Bulk runs only, from the runs table, one row each (the tenants' registrations and
    // creations are on each tenant's page): finished, command, who, from, tenants, ok, up
    // to date, failed, skipped, took, run.
    let runs = rows(element(dom, "runs"));
    assert_eq!(runs.len(), 2, "the bulk runs:\n{runs:?}");
    assert!(
        runs.iter()
            .all(|r| r.len() == 11 && r[1] == "upgrade" && r[4] == "1"),
        "{runs:?}"
    );
    assert!(
        runs.iter().any(|r| r[5] == "1" && r[7] == "0"),
        "the upgrade of behind among the runs: {runs:?}"
    );
    assert!(
        runs.iter().any(|r| r[5] == "0" && r[7] == "1"),
        "broken's failed upgrade among the runs: {runs:?}"
    );
    assert!(runs.iter().all(|r| r[9].ends_with(" s")), "{runs:?}");

    // The pictures, each bar titled with its numbers.
    let revisions = element(dom, "revisions-chart");
    for title in [
        "<title>revision 3 on default: 1 tenant</title>",
        "<title>revision 2 on b: 2 tenants</title>",
        "<title>revision base on default: 1 tenant</title>",
    ] {
        assert!(revisions.contains(title), "no {title} in:\n{revisions}");
    }
    assert!(element(dom, "runs-chart").contains(" 2 runs, 1 failed, 1 tenant failed</title>"));
    assert!(element(dom, "backups-chart").contains("<title>standard: 4 tenants never backed up"));
    assert!(
        strip_tags(element(dom, "generated")).ends_with('Z'),
        "generated at"
    );

    let mut links = Vec::new();
    for tenant in &list.tenants {
        let href = format!("/tenants/{}", tenant.id);
        links.push((tenant.domain.clone(), href));
    }
    links
}

#[test]
fn the_dashboard_signs_in_with_the_cookie_and_renders_the_fleet_escaped_without_javascript() {
    let s = served();
    let sign_in = s.url(&format!("/?token={TOKEN}"));

    // One navigation: 303 with the cookie, then `/` authenticated by the cookie alone.
    let dom = dump_dom(&sign_in, &[]);
    check_dashboard(&dom, &s);
    let log = s.serve.stderr();
    assert!(
        log.contains("GET \"/\" 303") && log.contains("GET \"/\" 200"),
        "the redirect, then the page:\n{log}"
    );

    // The same page with JavaScript disabled (`--dump-dom` itself needs scripts, so this
    // browser is driven over the DevTools protocol).
    let mut browser = Browser::launch(&["--blink-settings=scriptEnabled=false"]);
    browser.assert_scripts(false);
    let no_js = browser.open(&sign_in);
    browser.close();
    check_dashboard(&no_js, &s);
    assert_eq!(
        timeless(body(&no_js)),
        timeless(body(&dom)),
        "the page differs without JavaScript"
    );

    // Without the token, or with a wrong one, there is no dashboard.
    for url in [s.url("/"), s.url("/?token=not-the-token-0123456789")] {
        let refused = dump_dom(&url, &[]);
        assert!(
            refused.contains("token") && !refused.contains("id=\"tenants\""),
            "{url} without the token:\n{refused}"
        );
    }

    eventually("both refusals are logged", || {
        s.serve.stderr().matches(" 401 ").count() >= 2
    });
    let log = s.serve.stderr();
    assert!(!log.contains(TOKEN), "the token is in the log:\n{log}");
}

#[test]
fn tenant_and_run_links_open_with_the_session_cookie() {
    let s = served();
    for scripts in [true, false] {
        let extra: &[&str] = if scripts {
            &[]
        } else {
            &["--blink-settings=scriptEnabled=false"]
        };
        let mut browser = Browser::launch(extra);
        browser.assert_scripts(scripts);
        let dom = browser.open(&s.url(&format!("/?token={TOKEN}")));
        let links = check_dashboard(&dom, &s);
        let (_, href) = links
            .iter()
            .find(|(domain, _)| domain == "broken")
            .expect("a link to broken");

        // The link, in the same browser: only the cookie authenticates it.
        let page = browser.open(&s.url(href));
        assert!(
            page.contains("<title>tenant broken</title>"),
            "broken's page:\n{page}"
        );
        assert!(!page.to_ascii_lowercase().contains("<script"), "{page}");
        let tenant = element(&page, "tenant");
        for expected in [
            "<th>schema</th><td>tenant_broken</td>",
            "<th>server</th><td>b</td>",
            "<th>revision</th><td>2</td>",
            "<th>status</th><td>failed</td>",
        ] {
            assert!(tenant.contains(expected), "no {expected} in:\n{tenant}");
        }
        assert!(tenant.contains(ESCAPED), "{tenant}");
        let events = rows(element(&page, "events"));
        assert!(
            events
                .iter()
                .any(|e| e[1].contains("upgrade") && e[4] == "failed" && e[5].contains(ESCAPED)),
            "the failed migration in broken's ledger: {events:?}"
        );

        // The tenants page links every tenant; the tenants behind head are a search.
        let tenants = browser.open(&s.url("/tenants"));
        let all = element(&tenants, "tenants");
        assert_eq!(rows(all).len(), 4, "{all}");
        for (domain, href) in &links {
            let anchor = format!("<a href=\"{href}\">{domain}</a>");
            assert!(all.contains(&anchor), "no {anchor} in #tenants:\n{all}");
        }
        let behind = browser.open(&s.url("/tenants?behind=1"));
        let behind: Vec<String> = rows(element(&behind, "tenants"))
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
        assert_eq!(behind, ["behind", "broken"]);

        // A run's link opens its page: its row, and its tenant with the error escaped.
        let failed_run = rows(element(&dom, "runs"))
            .into_iter()
            .find(|r| r[7] == "1")
            .expect("the failed run");
        let href = format!("/runs/{}", failed_run[10]);
        assert!(dom.contains(&format!("<a href=\"{href}\">")), "{dom}");
        let page = browser.open(&s.url(&href));
        assert!(!page.to_ascii_lowercase().contains("<script"), "{page}");
        let summary = strip_tags(element(&page, "run"));
        for part in ["resultfailed", "tenants1", "ok0", "failed1"] {
            assert!(summary.contains(part), "no {part} in {summary}");
        }
        let entries = rows(element(&page, "entries"));
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(
            (entries[0][0].as_str(), entries[0][4].as_str()),
            ("broken", "failed")
        );
        assert!(element(&page, "entries").contains(ESCAPED), "{page}");
        browser.close();
    }
}

/// A registry of 20,000 tenants on two servers with 30 days of runs and a week of
/// backups (`bench/dashboard-fleet.sql`, as the benchmark of the pages uses it): every
/// page renders in Chromium with the fleet's numbers, paged. With
/// `TENANTCTL_SCREENSHOTS=DIR`, each page is also saved as a PNG there
/// (`scripts/dashboard-screenshot` writes the book's pictures so).
#[test]
fn the_dashboard_holds_twenty_thousand_tenants() {
    const TENANTS: i64 = 20_000;
    let (db, t) = ready();
    let eu2 = TestDb::new();
    let config = dir_with(&[(
        "tenants.toml",
        &format!(
            "[servers.eu2]\nurl = \"{}\"\n\n[backup.policies.church]\nevery = \"1d\"\nkeep = 7\n\n\
             [backup.policies.school]\nevery = \"7d\"\nkeep = 4\n\n[backup.policies.ministry]\nevery = \"1d\"\nkeep = 7\n",
            eu2.url
        ),
    )]);
    let migrations = dir_with(&[
        ("V1__members.sql", "CREATE TABLE members (id int);\n"),
        ("V2__households.sql", "CREATE TABLE households (id int);\n"),
        ("V3__groups.sql", "CREATE TABLE groups (id int);\n"),
    ]);
    let t = t.cwd(config.path()).migrations(migrations.path());
    let fleet = include_str!("../../bench/dashboard-fleet.sql")
        .replace("__TENANTS__", &TENANTS.to_string());
    db.client().batch_execute(&fleet).unwrap();
    let mut serve =
        t.clone()
            .env("TENANTCTL_API_TOKEN", TOKEN)
            .spawn(&["serve", "--listen", "127.0.0.1:0"]);
    serve.wait_for_stderr("listening on http://127.0.0.1:");
    let port: u16 = serve
        .stderr()
        .split("listening on http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let shots = std::env::var_os("TENANTCTL_SCREENSHOTS").map(std::path::PathBuf::from);
    let mut browser = Browser::launch(&[]);
    // Pages with an empty name are checked and not saved.
    let mut open = |path: &str, shot: &str| {
        let html = browser.open(&url(path));
        assert!(!html.to_ascii_lowercase().contains("<script"), "{path}");
        let footer = strip_tags(&html[html.find("<footer>").expect("a footer")..]);
        let took = footer
            .rsplit_once(" in ")
            .and_then(|(_, ms)| ms.trim().strip_suffix(" ms."))
            .and_then(|ms| ms.parse::<u64>().ok());
        assert!(took.is_some(), "{path}: no time in the footer: {footer}");
        if let Some(dir) = shots.as_ref().filter(|_| !shot.is_empty()) {
            browser.screenshot(&dir.join(format!("dashboard-{shot}.png")));
        }
        html
    };

    let mut c = db.client();
    let count =
        |c: &mut postgres::Client, sql: &str| -> i64 { c.query_one(sql, &[]).unwrap().get(0) };
    let overview = open(&format!("/?token={TOKEN}"), "overview");
    assert_eq!(
        strip_tags(element(&overview, "total")),
        format!("{TENANTS}tenants")
    );
    let failed = count(
        &mut c,
        "SELECT count(*) FROM tenants WHERE status = 'failed'",
    );
    assert_eq!(failed, TENANTS / 200);
    assert_eq!(
        strip_tags(element(&overview, "failed-count")),
        format!("{failed}failed")
    );
    assert_eq!(rows(element(&overview, "failed")).len(), 20, "the first 20");
    assert!(
        overview.contains(&format!("All {failed} failed tenants")),
        "a link to the rest"
    );
    let by_server = rows(element(&overview, "by-server"));
    let on_eu2 = count(&mut c, "SELECT count(*) FROM tenants WHERE server = 'eu2'");
    assert_eq!(
        by_server[1][..2],
        ["eu2".to_string(), on_eu2.to_string()],
        "{by_server:?}"
    );
    let at_3_eu2 = count(
        &mut c,
        "SELECT count(*) FROM tenants WHERE server = 'eu2' AND current_revision = 3",
    );
    let revisions = element(&overview, "revisions-chart");
    let title = format!("<title>revision 3 on eu2: {at_3_eu2} tenants</title>");
    assert!(revisions.contains(&title), "no {title} in {revisions}");
    let backups = element(&overview, "backups-chart");
    let ministries = count(
        &mut c,
        "SELECT count(*) FROM tenants WHERE tenant_type = 'ministry'",
    );
    assert!(
        backups.contains(&format!("<title>ministry: {ministries} tenants never backed up, policy every 24.0 h, {ministries} overdue</title>")),
        "{backups}"
    );
    let health = rows(element(&overview, "health"));
    assert_eq!(health.len(), 3, "registry, default, eu2: {health:?}");
    assert!(health.iter().all(|r| r[1] == "yes"), "{health:?}");

    // The last page of tenants, a search, a filter.
    let last = open("/tenants?page=400", "tenants");
    assert_eq!(rows(element(&last, "tenants")).len(), 50);
    assert!(
        strip_tags(element(&last, "pager"))
            .starts_with(&format!("Page 400 of 400 ({TENANTS} tenants)")),
        "{}",
        strip_tags(element(&last, "pager"))
    );
    let found = open("/tenants?q=parish-19999.", "");
    assert_eq!(
        rows(element(&found, "tenants"))[0][0],
        "parish-19999.example.org"
    );
    let behind = open("/tenants?behind=1&server=eu2&type=school", "");
    let expected = count(
        &mut c,
        "SELECT count(*) FROM tenants WHERE server = 'eu2' AND tenant_type = 'school' \
         AND schema_provisioned AND coalesce(current_revision, 0) < 3",
    );
    assert!(
        strip_tags(element(&behind, "pager")).contains(&format!("({expected} tenants)")),
        "{}",
        strip_tags(element(&behind, "pager"))
    );

    // The fleet upgrade's page: a page of its entries deep in the run.
    let run = open("/runs/6a1d3f0e-0000-4000-8000-000000000001?page=150", "run");
    let summary = strip_tags(element(&run, "run"));
    assert!(
        summary.contains("commandupgrade") && summary.contains("resultfailed"),
        "{summary}"
    );
    assert_eq!(rows(element(&run, "entries")).len(), 100);
    let failed_only = open("/runs/6a1d3f0e-0000-4000-8000-000000000001?failed=1", "");
    assert_eq!(rows(element(&failed_only, "entries")).len() as i64, failed);
    let runs = open("/runs?page=2", "");
    assert_eq!(rows(element(&runs, "runs")).len(), 50);

    // A failed tenant's page (its schema was never made: its history says so).
    let id = count(
        &mut c,
        "SELECT min(id) FROM tenants WHERE status = 'failed'",
    );
    let tenant = open(&format!("/tenants/{id}"), "tenant");
    assert!(
        strip_tags(element(&tenant, "tenant")).contains("statusfailed"),
        "{tenant}"
    );
    let events = rows(element(&tenant, "events"));
    assert!(
        events.iter().any(|e| e[1] == "upgrade" && e[4] == "failed"),
        "{events:?}"
    );
    browser.close();
    drop(serve);
}

/// One headless Chromium driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: requests in on fd 3, answers out on fd 4, each a JSON
/// message ending with a NUL), so that several navigations share its cookies.
struct Browser {
    child: Child,
    input: ChildStdin,
    messages: Receiver<Value>,
    pending: Vec<Value>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

/// How long one browser step may take.
const STEP: Duration = Duration::from_secs(30);

impl Browser {
    fn launch(extra: &[&str]) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        // The shell moves the pipes to fds 3 and 4, where Chromium expects them.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 3<&0 4>&1 </dev/null >/dev/null 2>/dev/null")
            .arg(chromium())
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--remote-debugging-pipe")
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let input = child.stdin.take().unwrap();
        let mut output = BufReader::new(child.stdout.take().unwrap());
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || loop {
            let mut buf = Vec::new();
            match output.read_until(0, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    buf.pop();
                    let Ok(v) = serde_json::from_slice::<Value>(&buf) else {
                        continue;
                    };
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            input,
            messages,
            pending: Vec::new(),
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = b.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        let session = b.session.clone();
        b.call(Some(&session), "Page.enable", json!({}));
        b
    }

    fn next(&mut self, deadline: Instant, what: &str) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.messages.recv_timeout(left) {
            Ok(v) => v,
            Err(e) => panic!("chromium did not answer {what} within {STEP:?}: {e}"),
        }
    }

    /// Sends a command and returns its result; fails on an error answer.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.input.write_all(&bytes).expect("write to chromium");
        self.input.flush().unwrap();
        let deadline = Instant::now() + STEP;
        loop {
            let v = self.next(deadline, method);
            if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{method} failed: {v}");
                return v["result"].clone();
            }
            self.pending.push(v);
        }
    }

    /// Navigates the page and returns its HTML once it has loaded.
    fn open(&mut self, url: &str) -> String {
        let session = self.session.clone();
        self.pending.clear();
        let nav = self.call(Some(&session), "Page.navigate", json!({"url": url}));
        assert!(nav.get("errorText").is_none(), "opening {url}: {nav}");
        let deadline = Instant::now() + STEP;
        let is_load = |v: &Value| v["method"] == "Page.loadEventFired";
        if !self.pending.iter().any(is_load) {
            loop {
                let v = self.next(deadline, "Page.loadEventFired");
                if is_load(&v) {
                    break;
                }
            }
        }
        let doc = self.call(Some(&session), "DOM.getDocument", json!({}));
        let node = doc["root"]["nodeId"].clone();
        let html = self.call(Some(&session), "DOM.getOuterHTML", json!({"nodeId": node}));
        html["outerHTML"].as_str().unwrap().to_string()
    }

    /// Saves the page, whole, as a PNG 1280 pixels wide.
    fn screenshot(&mut self, path: &Path) {
        use base64::Engine as _;
        let session = self.session.clone();
        self.call(
            Some(&session),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        let shot = self.call(
            Some(&session),
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64");
        std::fs::write(path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Checks that a page's scripts run, or do not, in this browser.
    fn assert_scripts(&mut self, run: bool) {
        let page = self.open(
            "data:text/html,<p id=\"probe\">static</p><script>document.getElementById('probe').textContent='scripted'</script>",
        );
        let shown = strip_tags(element(&page, "probe"));
        assert_eq!(shown, if run { "scripted" } else { "static" }, "{page}");
    }

    fn close(mut self) {
        // The browser may exit before it answers.
        let mut bytes = serde_json::to_vec(&json!({"id": 0, "method": "Browser.close"})).unwrap();
        bytes.push(0);
        self.input.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + STEP;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("chromium did not exit after Browser.close");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
