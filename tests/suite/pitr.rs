//! Point-in-time recovery of one tenant (`tenant restore --at`, `tenant export --at`)
//! against a real pgBackRest: a throwaway cluster archiving its WAL into a repository of
//! its own (`pgbackrest`, installed by scripts/install-test-deps), a full backup, then
//! writes to several tenants around a marked time. Checked: the tenant comes back with
//! exactly its rows as of the mark, every other tenant keeps every write made after it;
//! `--into` and `export --at` leave the tenant alone; what cannot be recovered is
//! refused with nothing changed; and a kill at each phase of the recovery leaves the
//! live tenant with every acknowledged write, no scratch instance running, and nothing
//! the next run does not clear.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::support::{bare, dir_with, Tenantctl};

const NOTES: (&str, &str) = (
    "V1__notes.sql",
    "CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL);\n",
);

/// The stanza every test repository holds.
const STANZA: &str = "test";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `pgbackrest` with the test repository's configuration, as the cluster's user.
fn pgbackrest(conf: &Path, args: &[&str]) -> std::process::Output {
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--", "pgbackrest"]);
        c
    } else {
        Command::new("pgbackrest")
    };
    c.arg(format!("--config={}", conf.display()))
        .arg(format!("--stanza={STANZA}"))
        .args(args)
        .current_dir("/tmp");
    let out = c.output().unwrap_or_else(|e| {
        panic!("cannot run pgbackrest ({e}): scripts/install-test-deps installs it")
    });
    assert!(
        out.status.success(),
        "pgbackrest {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A cluster archiving into a pgBackRest repository with one full backup, a registry
/// and tenantctl configured for point-in-time recovery.
struct Fleet {
    cluster: Cluster,
    /// `pitr.scratch_dir`.
    scratch: PathBuf,
    /// The config file's directory (tenantctl's working directory).
    dir: tempfile::TempDir,
    #[allow(dead_code)]
    migrations: tempfile::TempDir,
    t: Tenantctl,
}

fn fleet() -> Fleet {
    let cluster = Cluster::trusting("");
    let base = cluster.dir().to_path_buf();
    for d in ["repo", "lock", "spool", "log", "scratch"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    let conf = base.join("pgbackrest.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\nrepo1-path={b}/repo\nlock-path={b}/lock\nspool-path={b}/spool\nlog-path={b}/log\n\
             log-level-file=off\nlog-level-console=warn\nstart-fast=y\nrepo1-retention-full=9\narchive-timeout=60\n\
             [{STANZA}]\npg1-path={b}/data\npg1-port={port}\npg1-socket-path={b}\npg1-user=postgres\n",
            b = base.display(),
            port = cluster.url("").rsplit(':').next().unwrap().split('/').next().unwrap()
        ),
    )
    .unwrap();
    if is_root() {
        let s = Command::new("chown")
            .args(["-R", "nobody"])
            .arg(&base)
            .status()
            .unwrap();
        assert!(s.success());
    }
    {
        let mut c = postgres::Client::connect(&cluster.url(""), postgres::NoTls).unwrap();
        c.batch_execute("ALTER SYSTEM SET archive_mode = on")
            .unwrap();
        // The application uses two-phase commit: replaying it needs as many slots.
        c.batch_execute("ALTER SYSTEM SET max_prepared_transactions = 5")
            .unwrap();
        c.batch_execute(&format!(
            "ALTER SYSTEM SET archive_command = 'pgbackrest --config={} --stanza={STANZA} archive-push %p'",
            conf.display()
        ))
        .unwrap();
    }
    cluster.restart();
    let prepared: String = postgres::Client::connect(&cluster.url(""), postgres::NoTls)
        .unwrap()
        .query_one("SELECT current_setting('max_prepared_transactions')", &[])
        .unwrap()
        .get(0);
    assert_eq!(prepared, "5", "the restart took the settings");
    pgbackrest(&conf, &["stanza-create"]);
    pgbackrest(&conf, &["--type=full", "backup"]);
    // pgBackRest keeps the backup's end to the second: a mark taken in that same second
    // is before what it can reach (a test of its own below).
    std::thread::sleep(Duration::from_millis(1100));
    let migrations = dir_with(&[NOTES]);
    let dir = tempfile::tempdir().unwrap();
    let run_as = if is_root() {
        "run_as = \"nobody\"\n"
    } else {
        ""
    };
    std::fs::write(
        dir.path().join("tenants.toml"),
        format!(
            "[pitr]\nstanza = \"{STANZA}\"\npgbackrest_config = \"{}\"\nscratch_dir = \"{}\"\n{run_as}",
            conf.display(),
            base.join("scratch").display()
        ),
    )
    .unwrap();
    let t = bare()
        .url(&cluster.url(""))
        .migrations(migrations.path())
        .cwd(dir.path())
        .deadline(Duration::from_secs(300));
    t.run(&["init"]).expect(0);
    Fleet {
        scratch: base.join("scratch"),
        cluster,
        dir,
        migrations,
        t,
    }
}

impl Fleet {
    fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.cluster.url(""), postgres::NoTls).unwrap()
    }

    /// Registers and migrates `domain`, with rows `1..=n` written.
    fn tenant(&self, domain: &str, n: i64) {
        self.t
            .run(&["tenant", "create", domain, "--name", domain, "--migrate"])
            .expect(0);
        self.write(domain, 1..=n);
    }

    fn write(&self, domain: &str, ids: std::ops::RangeInclusive<i64>) {
        let schema = format!("tenant_{}", domain.replace('-', "_"));
        self.client()
            .execute(
                &format!("INSERT INTO {schema}.notes SELECT i, 'row ' || i FROM generate_series($1::bigint, $2::bigint) i"),
                &[ids.start(), ids.end()],
            )
            .unwrap();
    }

    /// The ids in `domain`'s notes, in order.
    fn ids(&self, domain: &str) -> Vec<i64> {
        let schema = format!("tenant_{}", domain.replace('-', "_"));
        self.client()
            .query(&format!("SELECT id FROM {schema}.notes ORDER BY id"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// The server's clock now, as RFC 3339, a moment after the last commit.
    fn mark(&self) -> String {
        std::thread::sleep(Duration::from_millis(300));
        let at: String = self
            .client()
            .query_one(
                "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
                &[],
            )
            .unwrap()
            .get(0);
        std::thread::sleep(Duration::from_millis(300));
        at
    }

    /// Switches to a new WAL segment and waits until the archive holds the old one.
    fn archive(&self) {
        let mut c = self.client();
        let wal: String = c
            .query_one("SELECT pg_walfile_name(pg_switch_wal())", &[])
            .unwrap()
            .get(0);
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let row = c
                .query_one(
                    "SELECT coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver",
                    &[],
                )
                .unwrap();
            let last: String = row.get(0);
            if last >= wal {
                return;
            }
            assert!(
                Instant::now() < until,
                "WAL {wal} was not archived in 60 s (last {last}, failed {} times, last failure {})",
                row.get::<_, i64>(1),
                row.get::<_, String>(2)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The scratch directory's entries.
    fn scratch_entries(&self) -> Vec<String> {
        std::fs::read_dir(&self.scratch)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Waits until no process runs in the scratch directory (a scratch instance or
    /// pgBackRest), failing after 20 s with what still runs.
    fn no_scratch_process(&self) {
        let needle = self.scratch.display().to_string();
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let running: Vec<String> = std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| {
                    let e = e.ok()?;
                    e.file_name().to_str()?.parse::<u32>().ok()?;
                    let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                    let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                    cmd.contains(&needle).then_some(cmd)
                })
                .collect();
            if running.is_empty() {
                return;
            }
            assert!(
                Instant::now() < until,
                "still running in the scratch directory: {running:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The ledger's actions and statuses for `domain`, oldest first.
    fn ledger(&self, domain: &str) -> Vec<(String, String)> {
        self.client()
            .query(
                "SELECT action, status FROM public.tenant_events WHERE domain = $1 ORDER BY id",
                &[&domain],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }
}

#[test]
fn a_tenant_comes_back_as_it_was_and_the_other_tenants_keep_every_later_write() {
    let f = fleet();
    f.tenant("acme", 100);
    f.tenant("other", 100);
    // A two-phase commit before the mark: recovery replays its PREPARE.
    let mut c = f.client();
    c.batch_execute(
        "BEGIN; INSERT INTO tenant_other.notes VALUES (1000, 'two-phase'); \
         PREPARE TRANSACTION 'pitr-2pc'",
    )
    .unwrap();
    c.batch_execute("COMMIT PREPARED 'pitr-2pc'").unwrap();
    let mark = f.mark();
    // After the mark: acme's customer deletes and rewrites; the other tenant goes on.
    f.client()
        .batch_execute("DELETE FROM tenant_acme.notes WHERE id <= 50")
        .unwrap();
    f.write("acme", 101..=150);
    f.write("other", 101..=200);
    f.archive();
    let run = f.t.run(&[
        "tenant", "restore", "acme", "--at", &mark, "--yes", "-o", "json",
    ]);
    run.expect(0);
    let doc: serde_json::Value = run.json();
    assert_eq!(doc["tenant"], "acme");
    assert_eq!(doc["tables"], 1);
    assert_eq!(doc["rows"], 100);
    assert!(doc["duration_ms"].as_u64().is_some());
    assert!(doc["write_block_ms"].as_u64().is_some());
    let recovered = doc["recovered_to"].as_str().expect("recovered_to");
    let before: bool = f
        .client()
        .query_one(
            "SELECT $1::text::timestamptz <= $2::text::timestamptz",
            &[&recovered, &mark],
        )
        .unwrap()
        .get(0);
    assert!(before, "recovery went past the mark: {recovered} > {mark}");
    assert_eq!(f.ids("acme"), (1..=100).collect::<Vec<_>>());
    assert_eq!(f.ids("other"), (1..=200).chain([1000]).collect::<Vec<_>>());
    assert_eq!(
        f.ledger("acme").last().unwrap(),
        &("restore --at".to_string(), "ok".to_string())
    );
    assert_eq!(f.ledger("other").len(), 2, "{:?}", f.ledger("other"));
    f.no_scratch_process();
    assert!(f.scratch_entries().is_empty(), "{:?}", f.scratch_entries());
    // The registry agrees with the schema, and check finds the stanza ready.
    let run = f.t.run(&["check", "-o", "json"]);
    run.expect(0);
    let doc: serde_json::Value = run.json();
    assert_eq!(doc["pitr"][0]["ok"], true, "{doc}");
    assert_eq!(doc["pitr"][0]["stanza"], STANZA);
    assert!(doc["pitr"][0]["backup"].as_str().is_some(), "{doc}");
}

#[test]
fn into_and_export_leave_the_tenant_alone_and_what_cannot_be_reached_is_refused() {
    let f = fleet();
    f.tenant("acme", 20);
    let mark = f.mark();
    f.write("acme", 21..=30);
    f.tenant("late", 5);
    f.archive();

    // A dry run checks and says; nothing is made.
    let run = f.t.run(&[
        "tenant",
        "restore",
        "acme",
        "--at",
        &mark,
        "--dry-run",
        "-o",
        "json",
    ]);
    run.expect(0);
    let plan: serde_json::Value = run.json();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["stanza"], STANZA);
    assert!(f.scratch_entries().is_empty());

    // --into: a new tenant of the data as at the mark; acme keeps its later writes.
    let run = f.t.run(&[
        "tenant",
        "restore",
        "acme",
        "--at",
        &mark,
        "--into",
        "acme-then",
        "--yes",
        "-o",
        "json",
    ]);
    run.expect(0);
    let doc: serde_json::Value = run.json();
    assert_eq!(doc["rows"], 20);
    assert_eq!(doc["imported"]["tenant"]["domain"], "acme-then");
    assert!(doc["imported"]["api_key"].as_str().is_some());
    assert_eq!(f.ids("acme-then"), (1..=20).collect::<Vec<_>>());
    assert_eq!(f.ids("acme"), (1..=30).collect::<Vec<_>>());

    // export --at: the archive of the tenant as at the mark.
    let file = f.dir.path().join("acme-then.tenant");
    let run = f.t.run(&[
        "tenant",
        "export",
        "acme",
        "--at",
        &mark,
        "-f",
        file.to_str().unwrap(),
        "-o",
        "json",
    ]);
    run.expect(0);
    let doc: serde_json::Value = run.json();
    assert_eq!(doc["rows"], 20);
    assert!(
        doc["at"].as_str().unwrap().starts_with(&mark[..19]),
        "{doc}"
    );
    f.t.run(&[
        "tenant",
        "import",
        file.to_str().unwrap(),
        "--as",
        "acme-file",
        "--name",
        "A",
    ])
    .expect(0);
    assert_eq!(f.ids("acme-file"), (1..=20).collect::<Vec<_>>());
    assert_eq!(f.ids("acme"), (1..=30).collect::<Vec<_>>());

    // Refusals, each with nothing changed and nothing left.
    let refused = |args: &[&str], code: i32, says: &str| {
        let run = f.t.run(args);
        run.expect(code);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
        assert_eq!(f.ids("acme"), (1..=30).collect::<Vec<_>>());
        assert!(f.scratch_entries().is_empty(), "{:?}", f.scratch_entries());
    };
    refused(
        &[
            "tenant",
            "restore",
            "acme",
            "--at",
            "2001-01-01T00:00:00Z",
            "--yes",
        ],
        1,
        "before the oldest backup",
    );
    refused(
        &[
            "tenant",
            "restore",
            "acme",
            "--at",
            "2099-01-01T00:00:00Z",
            "--yes",
        ],
        1,
        "after the last WAL",
    );
    refused(
        &[
            "tenant",
            "restore",
            "acme",
            "--at",
            "2026-12-07 14:05:00",
            "--yes",
        ],
        2,
        "with its zone",
    );
    refused(
        &["tenant", "restore", "late", "--at", &mark, "--yes"],
        1,
        "did not exist",
    );
    assert!(f.ids("late").len() == 5);
    refused(
        &[
            "tenant", "restore", "acme", "--at", &mark, "--into", "Bad Name", "--yes",
        ],
        2,
        "Bad Name",
    );
    // No [pitr]: a setup error.
    let unconfigured = tempfile::tempdir().unwrap();
    let run =
        f.t.clone()
            .cwd(unconfigured.path())
            .run(&["tenant", "restore", "acme", "--at", &mark, "--yes"]);
    run.expect(3);
    assert!(run.stderr.contains("[pitr] stanza"), "{}", run.stderr);
    // A stanza pgBackRest does not know: check says so (exit 5), restore fails.
    let wrong = tempfile::tempdir().unwrap();
    let conf = std::fs::read_to_string(f.dir.path().join("tenants.toml"))
        .unwrap()
        .replace(&format!("stanza = \"{STANZA}\""), "stanza = \"nosuch\"");
    std::fs::write(wrong.path().join("tenants.toml"), conf).unwrap();
    let t = f.t.clone().cwd(wrong.path());
    let run = t.run(&["check"]);
    run.expect(5);
    assert!(
        run.stdout
            .contains("point-in-time recovery on server default (stanza nosuch)"),
        "{}",
        run.stdout
    );
    let run = t.run(&["tenant", "restore", "acme", "--at", &mark, "--yes"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("nosuch"), "{}", run.stderr);
    // A scratch directory the instance's user cannot write: said before anything runs.
    use std::os::unix::fs::PermissionsExt;
    let locked = f.dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).unwrap();
    let conf = std::fs::read_to_string(f.dir.path().join("tenants.toml"))
        .unwrap()
        .replace(
            &format!("scratch_dir = \"{}\"", f.scratch.display()),
            &format!("scratch_dir = \"{}\"", locked.display()),
        );
    std::fs::write(wrong.path().join("tenants.toml"), conf).unwrap();
    let run = t.run(&["tenant", "restore", "acme", "--at", &mark, "--yes"]);
    run.expect(3);
    assert!(
        run.stderr.contains("cannot be written by"),
        "{}",
        run.stderr
    );
    let run = t.run(&["check"]);
    run.expect(5);
    assert!(
        run.stdout.contains("cannot be written by"),
        "{}",
        run.stdout
    );
    assert_eq!(f.ids("acme"), (1..=30).collect::<Vec<_>>());
    f.no_scratch_process();
}

/// Rows acknowledged by a writer inserting into `domain`'s notes from `from` up,
/// until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<i64>>>,
    handle: std::thread::JoinHandle<()>,
}

impl Writer {
    fn start(url: &str, domain: &str, from: i64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a, url) = (stop.clone(), acked.clone(), url.to_string());
        let schema = format!("tenant_{domain}");
        let handle = std::thread::spawn(move || {
            let mut id = from;
            let mut c: Option<postgres::Client> = None;
            while !s.load(Ordering::SeqCst) {
                if c.is_none() {
                    c = postgres::Client::connect(&url, postgres::NoTls).ok();
                }
                let Some(client) = c.as_mut() else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                match client.execute(
                    &format!("INSERT INTO {schema}.notes VALUES ($1, 'live')"),
                    &[&id],
                ) {
                    Ok(_) => {
                        a.lock().unwrap().push(id);
                        id += 1;
                    }
                    Err(_) => {
                        c = None;
                        id += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Writer {
            stop,
            acked,
            handle,
        }
    }

    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn stop(self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap();
        Arc::try_unwrap(self.acked).unwrap().into_inner().unwrap()
    }
}

/// `tenant restore --at` killed at `failpoint` while writers run on the tenant and on
/// another: nothing of the live fleet changed (every acknowledged write is there), no
/// scratch process survives the kill, and the next run clears the kill's directory and
/// restores.
fn killed_at(failpoint: &str) {
    let f = fleet();
    f.tenant("acme", 40);
    f.tenant("other", 40);
    let mark = f.mark();
    f.write("acme", 41..=60);
    f.archive();
    let url = f.cluster.url("");
    let on_acme = Writer::start(&url, "acme", 1_000);
    let on_other = Writer::start(&url, "other", 1_000);
    let args = ["tenant", "restore", "acme", "--at", &mark, "--yes"];
    let mut child =
        f.t.clone()
            .env("FAILPOINTS", &format!("{failpoint}=pause"))
            .spawn(&args);
    child.wait_for_stderr(&format!("failpoint {failpoint}"));
    let before = on_acme.count();
    child.wait_until("the writers go on while it is paused", || {
        on_acme.count() > before + 20
    });
    child.kill();
    f.no_scratch_process();
    let left = f.scratch_entries();
    let acked = on_acme.stop();
    let present = f.ids("acme");
    let lost: Vec<_> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged and lost by the cut run: {lost:?}"
    );
    assert!(present.starts_with(&(1..=60).collect::<Vec<_>>()));
    // The next run removes what the killed one left, and restores.
    let run = f.t.run(&args);
    run.expect(0);
    let now = f.scratch_entries();
    assert!(
        left.iter().all(|d| !now.contains(d)),
        "the killed run's {left:?} is still there: {now:?}"
    );
    assert!(now.is_empty(), "{now:?}");
    f.no_scratch_process();
    assert_eq!(f.ids("acme"), (1..=40).collect::<Vec<_>>());
    let acked = on_other.stop();
    let present = f.ids("other");
    let lost: Vec<_> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "another tenant's acknowledged writes lost: {lost:?}"
    );
}

#[test]
fn killed_after_restoring_the_backup_to_the_scratch_directory() {
    killed_at("pitr.restored");
}

#[test]
fn killed_with_the_scratch_instance_recovered() {
    killed_at("pitr.recovered");
}

#[test]
fn killed_after_exporting_from_the_scratch_instance() {
    killed_at("pitr.exported");
}

/// The configuration's hostile values are refused at load with exit 3, before any
/// connection.
#[test]
fn a_bad_pitr_configuration_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    for (conf, says) in [
        ("[pitr]\nstanza = \"a b\"\n", "not a pgBackRest stanza name"),
        (
            "[pitr]\nstanza = \"--config=/x\"\n",
            "not a pgBackRest stanza name",
        ),
        ("[pitr]\npgbackrest_config = \"x.conf\"\n", "without pitr.stanza"),
        (
            "[pitr]\nstanza = \"s\"\nrun_as = \"root; rm\"\n",
            "not a user name",
        ),
        (
            "[pitr]\nstanza = \"s\"\nscratch_dir = \"\"\n",
            "pitr.scratch_dir is empty",
        ),
        ("[pitr]\nstanza = \"s\"\nbogus = 1\n", "bogus"),
        (
            "[pitr]\nstanza = \"s\"\nscratch_dir = \"/tmp/$(id>/tmp/pwned)\"\n",
            "may hold only",
        ),
        (
            "[pitr]\nstanza = \"s\"\npgbackrest_config = \"/etc/pg br.conf\"\n",
            "may hold only",
        ),
        (
            "[servers.eu]\nurl = \"postgres://h/db\"\n[servers.eu.pitr]\npgbackrest_config = \"x\"\n",
            "needs a stanza",
        ),
    ] {
        std::fs::write(dir.path().join("tenants.toml"), conf).unwrap();
        let run = bare()
            .url("postgres://nobody@127.0.0.1:1/none")
            .cwd(dir.path())
            .run(&[
                "tenant",
                "restore",
                "acme",
                "--at",
                "2026-12-07T14:05:00Z",
                "--yes",
            ]);
        run.expect(3);
        assert!(run.stderr.contains(says), "{conf}: {}", run.stderr);
    }
}

/// Ctrl-C while the scratch instance recovers: the instance is stopped, its directory
/// removed, exit 130, and the tenant as it was.
#[test]
fn ctrl_c_during_the_recovery_stops_and_removes_the_scratch_instance() {
    let f = fleet();
    f.tenant("acme", 10);
    let mark = f.mark();
    f.write("acme", 11..=20);
    f.archive();
    let mut child =
        f.t.spawn(&["tenant", "restore", "acme", "--at", &mark, "--yes"]);
    // The scratch instance's log appears once the backup is restored and it starts.
    child.wait_until("the scratch instance starts", || {
        std::fs::read_dir(&f.scratch)
            .unwrap()
            .flatten()
            .any(|d| d.path().join("server.log").exists())
    });
    child.signal("INT");
    let run = child.finish();
    assert_eq!(run.code, 130, "{}", run.stderr);
    assert!(
        run.stderr.contains("stopping: the scratch instance"),
        "{}",
        run.stderr
    );
    f.no_scratch_process();
    assert!(f.scratch_entries().is_empty(), "{:?}", f.scratch_entries());
    assert_eq!(f.ids("acme"), (1..=20).collect::<Vec<_>>());
}

/// A stanza that holds another cluster's backups is refused before anything is made:
/// its data would replace the tenant with another cluster's.
#[test]
fn a_stanza_of_another_cluster_is_refused() {
    let a = fleet();
    let b = fleet();
    a.tenant("acme", 5);
    let mark = a.mark();
    a.archive();
    let conf = std::fs::read_to_string(a.dir.path().join("tenants.toml")).unwrap();
    let theirs = std::fs::read_to_string(b.dir.path().join("tenants.toml")).unwrap();
    let config_line = |c: &str| {
        c.lines()
            .find(|l| l.starts_with("pgbackrest_config ="))
            .unwrap()
            .to_string()
    };
    let crossed = conf.replace(&config_line(&conf), &config_line(&theirs));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tenants.toml"), crossed).unwrap();
    let t = a.t.clone().cwd(dir.path());
    let run = t.run(&["tenant", "restore", "acme", "--at", &mark, "--yes"]);
    run.expect(3);
    assert!(run.stderr.contains("another cluster"), "{}", run.stderr);
    assert_eq!(a.ids("acme"), (1..=5).collect::<Vec<_>>());
    let run = t.run(&["check"]);
    run.expect(5);
    assert!(run.stdout.contains("another cluster"), "{}", run.stdout);
}

/// A time in the second the backup ended, or before, is refused before anything is made:
/// pgBackRest starts only from a backup that ended in an earlier second.
#[test]
fn a_time_in_the_second_the_backup_ended_is_refused_with_the_window() {
    let f = fleet();
    f.tenant("acme", 3);
    f.archive();
    let stop: i64 = {
        let run = f.t.run(&["check", "-o", "json"]);
        run.expect(0);
        let doc: serde_json::Value = run.json();
        let oldest = doc["pitr"][0]["oldest"].as_str().unwrap().to_string();
        f.client()
            .query_one(
                "SELECT extract(epoch FROM $1::text::timestamptz)::bigint",
                &[&oldest],
            )
            .unwrap()
            .get(0)
    };
    // One second earlier than the oldest reachable: the backup's own last second.
    let inside: String = f
        .client()
        .query_one(
            "SELECT to_char(to_timestamp($1::bigint - 1) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.\"5Z\"')",
            &[&stop],
        )
        .unwrap()
        .get(0);
    let run =
        f.t.run(&["tenant", "restore", "acme", "--at", &inside, "--yes"]);
    run.expect(1);
    assert!(
        run.stderr.contains("before the oldest backup"),
        "{}",
        run.stderr
    );
    assert!(f.scratch_entries().is_empty());
}
