//! Several servers: the registry on the shared test server (`default`) and two throwaway
//! clusters, `b` and `c`. Placement by weight, bulk runs over every server within each
//! server's own concurrency (held at a gate on every server until each is seen busy up
//! to its limit at the same moment), a server stopped in the middle (its tenants fail,
//! nothing is written about them, the others finish; a rerun after it is back finishes),
//! `status` and `check` across servers, and refusals for servers that are not configured.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::checks::registry_row;
use crate::cluster::{Cluster, ServerCert, Setup};
use crate::common_json::{ConfigShown, FleetStatus, RunReport};
use crate::support::{dir_with, ready, wait_at, Gate, Proxy, Tenantctl, TestDb, Then};

pub const PASSWORD: &str = "pw-never-shown";

pub fn cluster() -> Cluster {
    Cluster::start(&Setup {
        server_cert: ServerCert::Localhost,
        ssl: false,
        hba: &["host all all 127.0.0.1/32 trust", "local all all trust"],
    })
}

/// The URL of a cluster, with a password the server never asks for (trust), so that
/// output can be checked for it.
pub fn url_of(c: &Cluster) -> String {
    format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres?sslmode=disable",
        c.port
    )
}

/// A config naming servers `b` (concurrency 2) and `c` (concurrency 1).
fn config(b: &Cluster, c: &Cluster) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tenants.toml"),
        format!(
            "[servers.b]\nurl = \"{}\"\nconcurrency = 2\n\n[servers.c]\nurl = \"{}\"\nconcurrency = 1\n",
            url_of(b),
            url_of(c)
        ),
    )
    .unwrap();
    dir
}

pub fn client_of(c: &Cluster) -> postgres::Client {
    postgres::Client::connect(&c.url("sslmode=disable"), postgres::NoTls).unwrap()
}

pub fn schema_on(client: &mut postgres::Client, schema: &str) -> bool {
    client
        .query_one(
            "SELECT count(*) > 0 FROM pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .unwrap()
        .get(0)
}

/// Samples, until stopped, the most tenantctl run sessions seen at once on a cluster.
fn sample_sessions(c: &Cluster, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<i64> {
    let url = c.url("sslmode=disable");
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut most = 0;
        while !stop.load(Ordering::SeqCst) {
            let n: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'tenantctl %'",
                    &[],
                )
                .unwrap()
                .get(0);
            most = most.max(n);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        most
    })
}

struct Fleet {
    db: TestDb,
    t: Tenantctl,
    b: Cluster,
    c: Cluster,
    _config: tempfile::TempDir,
    _migrations: tempfile::TempDir,
}

/// The registry on the shared server, servers `b` and `c`, and `files` as migrations.
fn fleet(files: &[(&str, &str)]) -> Fleet {
    let (db, t) = ready();
    let (b, c) = (cluster(), cluster());
    let config = config(&b, &c);
    let migrations = dir_with(files);
    let t = t.cwd(config.path()).migrations(migrations.path());
    Fleet {
        db,
        t,
        b,
        c,
        _config: config,
        _migrations: migrations,
    }
}

fn created_on(f: &Fleet, domain: &str, extra: &[&str]) -> String {
    let mut args = vec!["tenant", "create", domain, "--name", domain, "--provision"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", "json"]);
    let run = f.t.run(&args);
    run.expect(0);
    assert!(!run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD));
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    v["tenant"]["server"].as_str().unwrap().to_string()
}

const V1: (&str, &str) = ("V1__one.sql", "CREATE TABLE one (id int);\n");
const V2: (&str, &str) = ("V2__two.sql", "CREATE TABLE two (id int);\n");

/// The gate a gated migration waits at, on each server (advisory locks are per
/// database: the test holds it on the servers whose tenants it keeps in flight).
const GATE: i64 = 7011;

/// V1, waiting at [`GATE`] once its table is made.
fn gated_v1() -> (&'static str, String) {
    (
        "V1__one.sql",
        format!("CREATE TABLE one (id int);\n{}", wait_at(GATE)),
    )
}

/// V2, waiting at [`GATE`] before it makes its table.
fn gated_v2() -> (&'static str, String) {
    (
        "V2__two.sql",
        format!("{}CREATE TABLE two (id int);\n", wait_at(GATE)),
    )
}

/// tenantctl's sessions on a cluster now.
fn tenantctl_sessions(c: &Cluster) -> i64 {
    client_of(c)
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'tenantctl %'",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_fleet_over_three_servers_is_placed_run_within_each_limit_and_checked() {
    let v1 = gated_v1();
    let f = fleet(&[(v1.0, v1.1.as_str()), V2]);
    // Equal weights: each new tenant goes where there are fewest, ties by name with the
    // registry's server first.
    let placed: Vec<String> = (1..=6)
        .map(|i| created_on(&f, &format!("s{i}"), &[]))
        .collect();
    assert_eq!(placed, ["default", "b", "c", "default", "b", "c"]);
    assert_eq!(created_on(&f, "s7", &["--server", "c"]), "c");
    assert_eq!(created_on(&f, "s8", &["--server", "b"]), "b");
    assert!(schema_on(&mut client_of(&f.c), "tenant_s7"));
    assert!(schema_on(&mut client_of(&f.b), "tenant_s2"));
    assert!(!schema_on(&mut client_of(&f.b), "tenant_s3"));

    // Every server's V1 waits at a gate held on that server, until each server is seen
    // busy up to its own limit at the same moment: default (4) has 2 tenants, b (2) has
    // 3, c (1) has 3.
    let mut gates = [
        Gate::advisory(&f.db.url, GATE),
        Gate::advisory(&f.b.url("sslmode=disable"), GATE),
        Gate::advisory(&f.c.url("sslmode=disable"), GATE),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let on_b = sample_sessions(&f.b, stop.clone());
    let on_c = sample_sessions(&f.c, stop.clone());
    let mut run = f.t.spawn(&["upgrade", "--all", "-o", "json"]);
    run.wait_until(
        "default, b and c each work on as many tenants as they may",
        || {
            gates
                .iter_mut()
                .map(|g| g.blocked_tenantctl().len())
                .collect::<Vec<_>>()
                == [2, 2, 1]
        },
    );
    // No server has another tenant session waiting beside the ones at the gate.
    assert_eq!(
        (tenantctl_sessions(&f.b), tenantctl_sessions(&f.c)),
        (2, 1),
        "tenantctl's sessions on b and c while their limits are reached"
    );
    for g in gates {
        g.open();
    }
    let report: RunReport = run.finish().expect(0).json();
    stop.store(true, Ordering::SeqCst);
    let (most_b, most_c) = (on_b.join().unwrap(), on_c.join().unwrap());
    assert_eq!(report.summary.ok, 8, "{report:?}");
    assert_eq!(most_b, 2, "server b ran {most_b} sessions at once");
    assert_eq!(most_c, 1, "server c ran {most_c} sessions at once");

    let status: FleetStatus = f.t.run(&["status", "--all", "-o", "json"]).expect(0).json();
    let by_server: BTreeMap<&str, (usize, usize)> = status
        .summary
        .by_server
        .iter()
        .map(|(k, v)| (k.as_str(), (v.total, v.at_head)))
        .collect();
    assert_eq!(
        by_server,
        BTreeMap::from([("b", (3, 3)), ("c", (3, 3)), ("default", (2, 2))])
    );
    f.t.run(&["check"]).expect(0);
    let only_b: RunReport =
        f.t.run(&["upgrade", "--server", "b", "-o", "json"])
            .expect(0)
            .json();
    assert_eq!(only_b.results.len(), 3);
}

#[test]
fn a_server_that_goes_away_fails_only_its_tenants_and_writes_nothing_about_them() {
    let f = fleet(&[V1]);
    for i in 1..=6 {
        created_on(&f, &format!("g{i}"), &[]);
    }
    f.t.run(&["upgrade", "--all", "-o", "json"]).expect(0);
    let before: Vec<_> = ["g3", "g6"]
        .iter()
        .map(|d| registry_row(&f.db, d))
        .collect();
    // A new migration, with server c down.
    let more = dir_with(&[V1, V2]);
    let t = f.t.clone().migrations(more.path());
    f.c.stop();
    let run = t.run(&["upgrade", "--all", "-o", "json"]);
    run.expect(4);
    assert!(!run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD));
    let report: RunReport = run.json();
    for d in ["g1", "g2", "g4", "g5"] {
        assert_eq!(report.of(d).status, "ok", "{report:?}");
    }
    for d in ["g3", "g6"] {
        let r = report.of(d);
        assert_eq!(r.status, "failed");
        let e = r.error.as_deref().unwrap_or_default();
        assert!(e.contains(&format!("127.0.0.1:{}", f.c.port)), "{e}");
    }
    let after: Vec<_> = ["g3", "g6"]
        .iter()
        .map(|d| registry_row(&f.db, d))
        .collect();
    assert_eq!(
        before, after,
        "a tenant that was never reached was written about"
    );
    // Back up: a rerun finishes, and check is clean.
    f.c.start_again();
    let rerun: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(rerun.of("g3").status, "ok");
    assert_eq!(rerun.of("g1").status, "up_to_date");
    t.run(&["check"]).expect(0);
}

#[test]
fn servers_that_are_not_configured_are_refused() {
    let f = fleet(&[V1]);
    let run =
        f.t.run(&["tenant", "create", "x1", "--name", "x", "--server", "nope"]);
    run.expect(2);
    assert!(
        run.stderr.contains("\"nope\" is not configured"),
        "{}",
        run.stderr
    );
    f.t.run(&["upgrade", "--server", "nope"]).expect(2);
    // config show lists every server, never a password.
    let run = f.t.run(&["config", "show", "-o", "json"]);
    run.expect(0);
    assert!(!run.stdout.contains(PASSWORD), "{}", run.stdout);
    let shown: ConfigShown = run.json();
    let servers: Vec<(&str, usize)> = shown
        .servers
        .iter()
        .map(|s| (s.name.as_str(), s.concurrency))
        .collect();
    assert_eq!(servers, [("default", 4), ("b", 2), ("c", 1)]);
    assert!(shown.servers[1]
        .url
        .contains(&format!("127.0.0.1:{}", f.b.port)));
    // A bad server table is a setup error.
    let bad = tempfile::tempdir().unwrap();
    let write = |text: &str| {
        std::fs::write(bad.path().join("tenants.toml"), text).unwrap();
    };
    let t = f.t.clone().cwd(bad.path());
    write("[servers.Bad]\nurl = \"postgres://x@y/z\"\n");
    t.run(&["status", "--all"]).expect(3);
    write("[servers.default]\nurl = \"postgres://x@y/z\"\n");
    t.run(&["status", "--all"]).expect(3);
    write("[servers.e]\nconcurrency = 2\n");
    t.run(&["status", "--all"]).expect(3);
}

/// The postmaster's process id of a cluster.
fn postmaster_pid(c: &Cluster) -> String {
    let pid_file = std::fs::read_to_string(c.dir().join("data/postmaster.pid")).unwrap();
    pid_file.lines().next().unwrap().trim().to_string()
}

fn kill(signal: &str, pid: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), pid])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

#[test]
fn a_frozen_server_is_given_up_on_after_connect_timeout_and_reads_go_on() {
    let f = fleet(&[V1]);
    for i in 1..=3 {
        created_on(&f, &format!("z{i}"), &[]);
    }
    f.t.run(&["upgrade", "--all"]).expect(0);
    // Server c takes connections (the kernel does) but never answers.
    std::fs::write(
        f._config.path().join("tenants.toml"),
        format!(
            "[database]\nconnect_timeout = \"2s\"\n\n[servers.b]\nurl = \"{}\"\n\n[servers.c]\nurl = \"{}\"\n",
            url_of(&f.b),
            url_of(&f.c)
        ),
    )
    .unwrap();
    let pid = postmaster_pid(&f.c);
    kill("STOP", &pid);
    let status = f.t.spawn(&["status", "--all", "-o", "json"]).finish();
    let dry =
        f.t.spawn(&["upgrade", "--all", "--dry-run", "-o", "json"])
            .finish();
    kill("CONT", &pid);
    status.expect(0);
    let s: FleetStatus = status.json();
    let z3 = s.tenants.iter().find(|t| t.domain == "z3").unwrap();
    let e = z3.history_error.as_deref().unwrap_or_default();
    assert!(
        e.contains("could not be reached") && e.contains("did not answer"),
        "{e}"
    );
    // What the registry last saw stands for it, not "base".
    assert_eq!(z3.current_revision, Some(1));
    // A dry run plans the servers that answer and says which tenants it cannot reach.
    dry.expect(4);
    let plan: serde_json::Value = dry.json();
    let tenants = plan["tenants"].as_array().unwrap();
    let of = |d: &str| tenants.iter().find(|t| t["domain"] == d).unwrap().clone();
    assert!(of("z3")["error"]
        .as_str()
        .unwrap()
        .contains("could not be reached"));
    assert!(of("z1")["error"].is_null() && of("z2")["error"].is_null());
}

#[test]
fn a_tenant_in_flight_when_its_server_dies_keeps_what_the_registry_knew() {
    let f = fleet(&[V1]);
    for i in 1..=3 {
        created_on(&f, &format!("k{i}"), &[]);
    }
    f.t.run(&["upgrade", "--all"]).expect(0);
    let v2 = gated_v2();
    let more = dir_with(&[V1, (v2.0, v2.1.as_str())]);
    let t = f.t.clone().migrations(more.path());
    // k3's V2 waits on server c at a gate held there; the server stops under it.
    let mut gate = Gate::advisory(&f.c.url("sslmode=disable"), GATE);
    let mut run = t.spawn(&["upgrade", "--all", "-o", "json"]);
    run.wait_until("k3's V2 waits at the gate on server c", || {
        gate.blocked_tenantctl().len() == 1
    });
    // Stopped with the gate still held: the server goes away under the waiting V2.
    f.c.stop();
    drop(gate);
    let done = run.finish();
    done.expect(4);
    let report: RunReport = done.json();
    assert_eq!(report.of("k3").status, "failed");
    let row = registry_row(&f.db, "k3");
    assert!(row.schema_provisioned, "{row:?}");
    assert_eq!(row.current_revision, Some(1), "{row:?}");
    f.c.start_again();
    t.run(&["upgrade", "--all"]).expect(0);
}

#[test]
fn when_the_registry_goes_away_no_new_tenant_is_started() {
    let (registry, b) = (cluster(), cluster());
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("tenants.toml"),
        format!(
            "[database]\nurl = \"{}\"\nconnect_timeout = \"2s\"\n\n[servers.default]\nweight = 0\n\n\
             [servers.b]\nurl = \"{}\"\nconcurrency = 1\n",
            registry.url("sslmode=disable"),
            url_of(&b)
        ),
    )
    .unwrap();
    let first = dir_with(&[V1]);
    let t = crate::support::bare()
        .cwd(config.path())
        .migrations(first.path());
    t.run(&["init"]).expect(0);
    for i in 1..=4 {
        let run = t.run(&[
            "tenant",
            "create",
            &format!("r{i}"),
            "--name",
            "r",
            "--migrate",
        ]);
        run.expect(0);
    }
    let v2 = gated_v2();
    let more = dir_with(&[V1, (v2.0, v2.1.as_str())]);
    let t = t.migrations(more.path());
    // The first tenant's V2 waits on server b at a gate held there while the registry
    // stops; then it is let through.
    let mut gate = Gate::advisory(&b.url("sslmode=disable"), GATE);
    let mut run = t.spawn(&["upgrade", "--all", "-o", "json"]);
    run.wait_until(
        "the first tenant's V2 waits at the gate on server b",
        || gate.blocked_tenantctl().len() == 1,
    );
    registry.stop();
    gate.open();
    let mut on_b = client_of(&b);
    let done = run.finish();
    done.expect(4);
    let report: RunReport = done.json();
    let not_started: Vec<&str> = report
        .results
        .iter()
        .filter(|r| {
            r.error
                .as_deref()
                .is_some_and(|e| e.contains("not started: the registry could not be reached"))
        })
        .map(|r| r.domain.as_str())
        .collect();
    assert!(!not_started.is_empty(), "{report:?}");
    // Those were not touched on their server.
    for d in &not_started {
        let two: bool = on_b
            .query_one(
                &format!("SELECT to_regclass('tenant_{d}.two') IS NOT NULL"),
                &[],
            )
            .unwrap()
            .get(0);
        assert!(!two, "{d} was migrated after the registry went away");
    }
    registry.start_again();
    t.run(&["upgrade", "--all"]).expect(0);
}

/// Writes the fleet's tenants.toml again: server b as before, server c at `c_url`, and
/// `extra` first (a `[database]` or `[run]` table).
fn reconfigure(f: &Fleet, c_url: &str, extra: &str) {
    std::fs::write(
        f._config.path().join("tenants.toml"),
        format!(
            "{extra}\n[servers.b]\nurl = \"{}\"\n\n[servers.c]\nurl = \"{c_url}\"\n",
            url_of(&f.b)
        ),
    )
    .unwrap();
}

/// Server c's URL through a proxy on `port`, with the password the server never asks for.
fn through(port: u16) -> String {
    format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/postgres?sslmode=disable")
}

fn status_of<'a>(s: &'a FleetStatus, domain: &str) -> &'a crate::common_json::TenantStatus {
    s.tenants.iter().find(|t| t.domain == domain).unwrap()
}

#[test]
fn status_all_counts_the_tenants_of_a_stopped_server_unreachable_not_drifted() {
    let f = fleet(&[V1]);
    for i in 1..=6 {
        created_on(&f, &format!("u{i}"), &[]);
    }
    f.t.run(&["upgrade", "--all"]).expect(0);
    f.c.stop();
    let run = f.t.run(&["status", "--all", "-o", "json"]);
    run.expect(0);
    assert!(!run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD));
    let s: FleetStatus = run.json();
    let sum = &s.summary;
    assert_eq!(
        (sum.total, sum.at_head, sum.unreachable, sum.drifted),
        (6, 4, 2, 0),
        "{sum:?}"
    );
    assert_eq!(sum.by_server["c"].unreachable, 2, "{sum:?}");
    assert_eq!(sum.by_server["b"].unreachable, 0, "{sum:?}");
    for d in ["u3", "u6"] {
        let e = status_of(&s, d).history_error.clone().unwrap_or_default();
        assert!(e.contains("server \"c\""), "{e}");
    }
    let text = f.t.run(&["status", "--all"]);
    text.expect(0);
    assert!(
        text.stdout.contains("0 drifted") && text.stdout.contains("2 unreachable"),
        "{}",
        text.stdout
    );
    let current: crate::common_json::Currents =
        f.t.run(&["current", "-o", "json"]).expect(0).json();
    assert_eq!(
        (current.summary.unreachable, current.summary.drifted),
        (2, 0)
    );
    f.c.start_again();
}

#[test]
fn a_server_that_goes_away_in_the_middle_of_status_or_check_is_unreachable_not_drift() {
    let f = fleet(&[V1]);
    for i in 1..=3 {
        created_on(&f, &format!("m{i}"), &["--server", "c"]);
    }
    created_on(&f, "m0", &["--server", "b"]);
    f.t.run(&["upgrade", "--all"]).expect(0);
    let proxy = Proxy::to(f.c.port);
    reconfigure(&f, &through(proxy.port), "");
    // Each connection to c has its catalog read answered; then the server is gone.
    proxy.after(1, Then::Cut);
    let run = f.t.run(&["status", "--all", "-o", "json"]);
    run.expect(0);
    assert!(proxy.withheld() > 0, "the proxy never cut a connection");
    let s: FleetStatus = run.json();
    assert_eq!(
        (s.summary.unreachable, s.summary.drifted, s.summary.at_head),
        (3, 0, 1),
        "{:?}",
        s.summary
    );
    for d in ["m1", "m2", "m3"] {
        let e = status_of(&s, d).history_error.clone().unwrap_or_default();
        assert!(e.contains("server \"c\""), "{e}");
        assert!(!e.contains(PASSWORD), "{e}");
    }
    // check: a server that cannot be read is a setup error naming it, not drift.
    let run = f.t.run(&["check"]);
    crate::checks::expect_error(&run, 3, &["server \"c\""]);
    assert!(!run.stderr.contains(PASSWORD), "{}", run.stderr);
    // Nothing false was written: the registry still says what it knew.
    assert_eq!(registry_row(&f.db, "m1").current_revision, Some(1));
    proxy.forward_all();
    f.t.run(&["check"]).expect(0);
}

#[test]
fn a_tenant_named_with_another_server_is_refused_naming_the_server_it_is_on() {
    let f = fleet(&[V1]);
    created_on(&f, "p1", &["--server", "b"]);
    created_on(&f, "p2", &["--server", "c"]);
    let out = tempfile::tempdir().unwrap();
    let out = out.path().to_str().unwrap().to_string();
    let before = (registry_row(&f.db, "p1"), registry_row(&f.db, "p2"));
    let cases: Vec<Vec<&str>> = vec![
        vec!["upgrade"],
        vec!["upgrade", "--dry-run"],
        vec!["provision"],
        vec!["downgrade", "0", "--yes"],
        vec!["stamp", "1", "--yes"],
        vec!["current"],
        vec!["backup", "--out", &out],
    ];
    for case in &cases {
        let mut args = case.clone();
        args.extend_from_slice(&["--server", "b", "--tenant", "p1", "--tenant", "p2"]);
        let run = f.t.run(&args);
        crate::checks::expect_error(&run, 2, &["p2", "server \"c\"", "\"b\""]);
    }
    assert_eq!(
        (registry_row(&f.db, "p1"), registry_row(&f.db, "p2")),
        before,
        "a refused selection changed the registry"
    );
    assert!(std::fs::read_dir(&out).unwrap().next().is_none());
    // The tenant on the named server alone is fine.
    f.t.run(&["upgrade", "--server", "b", "--tenant", "p1"])
        .expect(0);
}

#[test]
fn a_server_that_hangs_once_connected_is_given_up_on_after_read_timeout() {
    let f = fleet(&[V1]);
    for i in 1..=2 {
        created_on(&f, &format!("h{i}"), &["--server", "c"]);
    }
    created_on(&f, "h0", &["--server", "b"]);
    f.t.run(&["upgrade", "--all"]).expect(0);
    let proxy = Proxy::to(f.c.port);
    reconfigure(&f, &through(proxy.port), "[run]\nread_timeout = \"2s\"\n");
    // Server c answers the startup, then never answers a query.
    proxy.after(0, Then::Freeze);
    let waited = "did not answer within 2s";
    let run = f.t.spawn(&["status", "--all", "-o", "json"]).finish();
    run.expect(0);
    assert!(proxy.withheld() > 0, "no connection was frozen");
    let s: FleetStatus = run.json();
    assert_eq!(
        (s.summary.unreachable, s.summary.at_head),
        (2, 1),
        "{:?}",
        s.summary
    );
    let e = status_of(&s, "h1")
        .history_error
        .clone()
        .unwrap_or_default();
    assert!(e.contains("server \"c\"") && e.contains(waited), "{e}");
    assert!(!e.contains(PASSWORD), "{e}");
    let run = f.t.spawn(&["check"]).finish();
    crate::checks::expect_error(&run, 3, &["server \"c\"", waited]);
    let run =
        f.t.spawn(&["status", "--tenant", "h1", "-o", "json"])
            .finish();
    run.expect(0);
    let one: serde_json::Value = run.json();
    assert!(one["history_error"]
        .as_str()
        .is_some_and(|e| e.contains("server \"c\"") && e.contains(waited)));
    let run =
        f.t.spawn(&["upgrade", "--all", "--dry-run", "-o", "json"])
            .finish();
    run.expect(4);
    let plan: serde_json::Value = run.json();
    let h1 = plan["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["domain"] == "h1")
        .unwrap()
        .clone();
    assert!(
        h1["error"]
            .as_str()
            .is_some_and(|e| e.contains("server \"c\"") && e.contains(waited)),
        "{h1}"
    );
    // A tenant data command: its session locks the tenant, then the server stops
    // answering the catalog read.
    proxy.on_query("attgenerated", Then::Freeze);
    let backup = tempfile::tempdir().unwrap();
    let run =
        f.t.spawn(&[
            "tenant",
            "export",
            "h1",
            "-f",
            backup.path().join("h1.tenant").to_str().unwrap(),
        ])
        .finish();
    crate::checks::expect_error(&run, 3, &["server \"c\"", waited]);
    assert!(!run.stderr.contains(PASSWORD), "{}", run.stderr);
    // Nothing false was written about the tenants that could not be read.
    assert_eq!(registry_row(&f.db, "h1").current_revision, Some(1));
    proxy.forward_all();
    f.t.run(&["check"]).expect(0);
}

#[test]
fn a_registry_that_hangs_once_connected_is_given_up_on_and_read_timeout_is_validated() {
    let registry = cluster();
    let proxy = Proxy::to(registry.port);
    let migrations = dir_with(&[V1]);
    let t = crate::support::bare()
        .url(&registry.url("sslmode=disable"))
        .migrations(migrations.path());
    t.run(&["init"]).expect(0);
    crate::checks::create(&t, "fr1", &["--migrate"]);
    let frozen = t
        .clone()
        .url(&through(proxy.port))
        .env("TENANTCTL_READ_TIMEOUT", "2s");
    // Frozen at each of the first requests a command makes: the pooler check, the
    // registry's shape and version, the registry's rows, the fleet's schemas and
    // histories, the refresh of the registry's cache.
    for requests in 0..12 {
        proxy.after(requests, Then::Freeze);
        for args in [
            &["status", "--all"][..],
            &["tenant", "list"][..],
            &["check"][..],
            &["tenant", "show", "fr1"][..],
        ] {
            let run = frozen.spawn(args).finish();
            assert!(
                run.code == 3 || run.code == 0,
                "{args:?} after {requests} requests: exit {}: {}{}",
                run.code,
                run.stdout,
                run.stderr
            );
            if run.code == 3 {
                assert!(
                    run.stderr.contains("server \"default\"")
                        && run.stderr.contains("did not answer within 2s"),
                    "{args:?} after {requests} requests: {}",
                    run.stderr
                );
            }
        }
    }
    proxy.forward_all();
    frozen.run(&["status", "--all"]).expect(0);
    // The setting: flag, environment, file; out of range or malformed is exit 3.
    for bad in ["0s", "500ms", "2h", "soon", "-1s", ""] {
        if !bad.is_empty() {
            let run = t
                .clone()
                .env("TENANTCTL_READ_TIMEOUT", bad)
                .run(&["status", "--all"]);
            crate::checks::expect_error(&run, 3, &["read_timeout"]);
        }
        let flag = format!("--read-timeout={bad}");
        let run = t.run(&["status", "--all", &flag]);
        crate::checks::expect_error(&run, 3, &["read_timeout"]);
    }
    let dir = tempfile::tempdir().unwrap();
    for bad in ["\"0s\"", "\"61m\"", "\"x\"", "5"] {
        std::fs::write(
            dir.path().join("tenants.toml"),
            format!("[run]\nread_timeout = {bad}\n"),
        )
        .unwrap();
        let run = t.clone().cwd(dir.path()).run(&["status", "--all"]);
        // A value of the wrong type is named by its place in the file.
        let needle = if bad == "5" { "line 2" } else { "read_timeout" };
        crate::checks::expect_error(&run, 3, &[needle]);
    }
    let shown: crate::common_json::ConfigShown = t
        .run(&["config", "show", "-o", "json", "--read-timeout", "90s"])
        .expect(0)
        .json();
    let setting = shown
        .settings
        .iter()
        .find(|s| s.key == "run.read_timeout")
        .expect("config show lists run.read_timeout");
    assert_eq!(setting.value, "1m 30s");
    assert_eq!(setting.source, "flag");
}

#[test]
fn every_command_names_a_server_that_cannot_be_reached_by_its_configured_name() {
    let f = fleet(&[V1]);
    created_on(&f, "n1", &["--server", "b"]);
    created_on(&f, "n2", &["--server", "c"]);
    f.t.run(&["upgrade", "--all"]).expect(0);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("n1.tenant");
    let archive = archive.to_str().unwrap();
    f.t.run(&["tenant", "export", "n1", "-f", archive])
        .expect(0);
    let before = registry_row(&f.db, "n2");
    f.c.stop();
    let named = |what: &str, text: &str| {
        assert!(text.contains("server \"c\""), "{what}: {text}");
        assert!(!text.contains(PASSWORD), "{what}: {text}");
    };
    // Bulk runs: the tenant's result.
    let out = dir.path().join("backups");
    let out = out.to_str().unwrap();
    // (n1 needs no session to upgrade: no session could be opened, exit 3; its backup
    // needs one: some finished, exit 4.)
    for (args, code) in [
        (&["upgrade", "--all", "-o", "json"][..], 3),
        (&["backup", "--all", "--out", out, "-o", "json"][..], 4),
    ] {
        let run = f.t.run(args);
        run.expect(code);
        let report: RunReport = run.json();
        named(
            args[0],
            report.of("n2").error.as_deref().unwrap_or_default(),
        );
        assert_eq!(report.of("n2").status, "failed", "{report:?}");
    }
    // Reads: the tenant's status says why it could not be read.
    let s: FleetStatus = f.t.run(&["status", "--all", "-o", "json"]).expect(0).json();
    named(
        "status --all",
        &status_of(&s, "n2")
            .history_error
            .clone()
            .unwrap_or_default(),
    );
    for args in [
        &["status", "--tenant", "n2", "-o", "json"][..],
        &["tenant", "show", "n2", "-o", "json"][..],
    ] {
        let v: serde_json::Value = f.t.run(args).expect(0).json();
        let e = v["history_error"]
            .as_str()
            .or(v["migration_status"]["history_error"].as_str())
            .unwrap_or_default()
            .to_string();
        named(&args.join(" "), &e);
    }
    // Commands that stop: the error names the server.
    for args in [
        &["check"][..],
        &["tenant", "export", "n2", "-f", &format!("{out}/n2.tenant")][..],
        &[
            "tenant", "import", archive, "--as", "n3", "--name", "N3", "--server", "c",
        ][..],
        &["tenant", "move", "n1", "--to", "c", "--yes"][..],
        &["tenant", "drop", "n2", "--yes"][..],
    ] {
        let run = f.t.run(args);
        crate::checks::expect_error(&run, 3, &[]);
        named(&args.join(" "), &run.stderr);
    }
    // The service.
    let s = crate::serve::start(&f.t.clone().env("TENANTCTL_API_TOKEN", crate::serve::TOKEN));
    let r = s.get("/api/tenants/n2/migration-status");
    r.expect(200);
    let v: serde_json::Value = r.json();
    named(
        "GET migration-status",
        v["history_error"].as_str().unwrap_or_default(),
    );
    let r = s.post(
        "/api/tenants/run-migrations",
        &serde_json::json!({"tenant_id": "n2"}),
    );
    assert!(r.status >= 500, "{} {}", r.status, r.body);
    let v: serde_json::Value = r.json();
    named(
        "POST run-migrations",
        v["detail"].as_str().unwrap_or_default(),
    );
    drop(s);
    assert_eq!(registry_row(&f.db, "n2"), before, "n2's row was written");
    f.c.start_again();
}

#[test]
fn the_service_reports_a_server_that_stops_answering_within_its_request_time() {
    let f = fleet(&[V1]);
    created_on(&f, "w1", &["--server", "b"]);
    created_on(&f, "w2", &["--server", "c"]);
    f.t.run(&["upgrade", "--all"]).expect(0);
    let proxy = Proxy::to(f.c.port);
    // run.read_timeout stays at its default, longer than a request may take.
    reconfigure(&f, &through(proxy.port), "");
    proxy.after(0, Then::Freeze);
    let s = crate::serve::start(&f.t.clone().env("TENANTCTL_API_TOKEN", crate::serve::TOKEN));
    let r = s.get("/api/fleet/status");
    r.expect(200);
    let st: FleetStatus = r.json();
    assert_eq!(
        (st.summary.unreachable, st.summary.at_head),
        (1, 1),
        "{:?}",
        st.summary
    );
    let e = status_of(&st, "w2")
        .history_error
        .clone()
        .unwrap_or_default();
    assert!(
        e.contains("server \"c\"") && e.contains("did not answer within 10s"),
        "{e}"
    );
    let r = s.get("/api/tenants/w2/migration-status");
    r.expect(200);
    let v: serde_json::Value = r.json();
    assert!(
        v["history_error"]
            .as_str()
            .is_some_and(|e| e.contains("server \"c\"")),
        "{v}"
    );
    assert!(proxy.withheld() > 0);
}

#[test]
fn metrics_name_no_server_or_database_when_the_registry_is_down() {
    let registry = cluster();
    let migrations = dir_with(&[V1]);
    let t = crate::support::bare()
        .url(&registry.url("sslmode=disable"))
        .migrations(migrations.path());
    t.run(&["init"]).expect(0);
    crate::checks::create(&t, "mx1", &["--migrate"]);
    let s = crate::serve::start(&t.clone().env("TENANTCTL_API_TOKEN", crate::serve::TOKEN));
    s.get("/metrics").expect(200);
    registry.stop();
    for path in ["/metrics", "/healthz"] {
        let r = s.get(path);
        assert_eq!(r.status, 503, "{path}: {}", r.body);
        let port = registry.port.to_string();
        for leak in [
            "127.0.0.1",
            "postgres://",
            "server \"",
            "default",
            port.as_str(),
        ] {
            assert!(!r.body.contains(leak), "{path} names {leak:?}: {}", r.body);
        }
    }
    registry.start_again();
    s.get("/metrics").expect(200);
}

#[test]
fn check_fails_naming_a_server_without_tenants_that_stops_answering() {
    let f = fleet(&[V1]);
    created_on(&f, "e1", &["--server", "b"]);
    f.t.run(&["upgrade", "--all"]).expect(0);
    let proxy = Proxy::to(f.c.port);
    reconfigure(&f, &through(proxy.port), "[run]\nread_timeout = \"2s\"\n");
    f.t.run(&["check"]).expect(0);
    // Server c holds no tenant; it takes connections and then answers nothing.
    proxy.after(0, Then::Freeze);
    let run = f.t.spawn(&["check"]).finish();
    crate::checks::expect_error(&run, 3, &["server \"c\"", "did not answer within 2s"]);
    assert!(!run.stderr.contains(PASSWORD), "{}", run.stderr);
}

/// A tenant created and migrated on another server than the registry's is reported as
/// that server sees it: at head with nothing pending (its schema was once observed on
/// the registry's server, where it does not exist, and reported every migration pending).
#[test]
fn a_tenant_created_on_another_server_reports_its_own_migration_status() {
    let f = fleet(&[V1, V2]);
    let run = f.t.run(&[
        "tenant",
        "create",
        "far",
        "--name",
        "Far",
        "--server",
        "b",
        "--migrate",
        "-o",
        "json",
    ]);
    run.expect(0);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["tenant"]["server"], "b");
    assert_eq!(v["migration_status"]["current_revision"], 2, "{v}");
    assert_eq!(v["migration_status"]["schema_provisioned"], true, "{v}");
    assert_eq!(
        v["migration_status"]["pending_migrations"],
        serde_json::json!([]),
        "{v}"
    );
}
