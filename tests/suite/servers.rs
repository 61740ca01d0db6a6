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
use crate::support::{dir_with, ready, wait_at, Gate, Tenantctl, TestDb};

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
