//! Connection poolers between tenantctl and PostgreSQL, for real: PgBouncer (Debian's
//! `pgbouncer` package, `/usr/sbin/pgbouncer`) started by the test on a free port, as
//! `nobody` when the tests run as root, with its own ini and user list in a temporary
//! directory, trusting every client and pointing at the test server. One database alias
//! pools by transaction, another by session: a transaction-pooling proxy breaks the
//! session advisory locks tenantctl relies on, so every command refuses it (exit 3,
//! nothing changed); a session-pooled one works like a direct connection.
//!
//! A missing PgBouncer is a loud failure, never a skip: `scripts/install-test-deps`
//! installs it.

use crate::{checks, common_json, support};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use checks::{
    create, expect_error, history_versions, relation_exists, schema_exists, tenant_count,
};
use common_json::RunReport;
use support::{bare, dir_with, tenantctl, Tenantctl, TestDb};

/// The PgBouncer binary: on PATH, else Debian's /usr/sbin/pgbouncer. Panics with what to
/// install when there is none.
fn pgbouncer_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("pgbouncer"));
    on_path
        .chain([PathBuf::from("/usr/sbin/pgbouncer")])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "pgbouncer not found on PATH nor at /usr/sbin/pgbouncer: this test runs tenantctl \
                 through a real PgBouncer. Install it with `scripts/install-test-deps` (as root) \
                 or `apt-get install pgbouncer`"
            )
        })
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run `id -u`");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A running PgBouncer in front of one test database, stopped (by the pid it wrote) when
/// dropped.
struct PgBouncer {
    port: u16,
    dir: tempfile::TempDir,
}

impl PgBouncer {
    /// Starts PgBouncer with two aliases for `db`: `tx` (pool_mode = transaction) and
    /// `session` (pool_mode = session). Panics with its log when it does not come up.
    fn start(db: &TestDb) -> PgBouncer {
        let bin = pgbouncer_binary();
        let server: postgres::Config = db.url.parse().expect("parse the test database URL");
        let host = match server.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "127.0.0.1".into(),
        };
        let port = server.get_ports().first().copied().unwrap_or(5432);
        let user = server.get_user().unwrap_or("postgres").to_string();
        let password = server
            .get_password()
            .map(|p| format!(" password={}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        let target = format!(
            "host={host} port={port} dbname={} user={user}{password}",
            db.name
        );

        let as_nobody = is_root();
        let dir = tempfile::Builder::new()
            .prefix("tenantctl-pgbouncer-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory under /tmp");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("userlist.txt"),
            format!("\"{user}\" \"\"\n"),
        )
        .unwrap();
        let mut bouncer = PgBouncer { port: 0, dir };
        let mut last_log = String::new();
        // A port picked now may be taken before PgBouncer binds it: try a few.
        for _ in 0..5 {
            bouncer.port = free_port();
            let ini = format!(
                "[databases]\n\
                 tx = {target} pool_mode=transaction\n\
                 session = {target} pool_mode=session\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {p}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {d}/userlist.txt\n\
                 logfile = {d}/pgbouncer.log\n\
                 pidfile = {d}/pgbouncer.pid\n\
                 pool_mode = session\n",
                p = bouncer.port
            );
            std::fs::write(bouncer.dir.path().join("pgbouncer.ini"), ini).unwrap();
            let _ = std::fs::remove_file(bouncer.log_path());
            if as_nobody {
                let status = Command::new("chown")
                    .args(["-R", "nobody"])
                    .arg(bouncer.dir.path())
                    .status()
                    .expect("run chown");
                assert!(status.success(), "chown the PgBouncer directory to nobody");
            }
            let mut cmd = if as_nobody {
                let mut c = Command::new("runuser");
                c.args(["-u", "nobody", "--"]).arg(&bin);
                c
            } else {
                Command::new(&bin)
            };
            let out = cmd
                .arg("-d")
                .arg(bouncer.dir.path().join("pgbouncer.ini"))
                .current_dir(bouncer.dir.path())
                .stdin(Stdio::null())
                .output()
                .expect("run pgbouncer");
            if out.status.success() && bouncer.wait_until_ready() {
                return bouncer;
            }
            last_log = format!(
                "{}{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(bouncer.log_path()).unwrap_or_default()
            );
            bouncer.stop();
            if !last_log.contains("in use") && !last_log.contains("bind") {
                break;
            }
        }
        panic!("PgBouncer did not start; its output and log:\n{last_log}");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("pgbouncer.log")
    }

    /// Waits until a connection through the `session` alias answers (true), or
    /// PgBouncer has logged a fatal error or exited (false). The deadline only turns a
    /// hang into a failure.
    fn wait_until_ready(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if postgres::Client::connect(&self.url("session"), postgres::NoTls)
                .and_then(|mut c| c.simple_query("SELECT 1"))
                .is_ok()
            {
                return true;
            }
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            if log.contains("FATAL") || self.exited() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn pid(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.pid"))
            .ok()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    }

    /// Whether the daemon wrote its pid file and is gone since (the file may appear a
    /// moment after `pgbouncer -d` returns).
    fn exited(&self) -> bool {
        self.pid()
            .is_some_and(|pid| !Path::new("/proc").join(pid).exists())
    }

    fn stop(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// `postgres://USER@127.0.0.1:PORT/ALIAS`.
    fn url(&self, alias: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{alias}", self.port)
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn through(url: &str, migrations: &Path) -> Tenantctl {
    bare()
        .migrations(migrations)
        .env("TENANTCTL_DATABASE_URL", url)
}

#[test]
fn a_transaction_pooling_proxy_is_refused_and_a_session_pooled_one_works() {
    let db = TestDb::new();
    let migrations = dir_with(&[("V1__one.sql", "CREATE TABLE one (id int);\n")]);
    let direct = tenantctl(&db).migrations(migrations.path());
    direct.run(&["init"]).expect(0);
    let a = create(&direct, "pool-a", &["--migrate"]).tenant.schema_name;
    std::fs::write(
        migrations.path().join("V2__two.sql"),
        "CREATE TABLE two (id int);\n",
    )
    .unwrap();
    let bouncer = PgBouncer::start(&db);

    // Transaction pooling: every command refuses before changing anything.
    let tx = through(&bouncer.url("tx"), migrations.path());
    for args in [
        &["init"][..],
        &["upgrade", "--all"][..],
        &["upgrade", "--all", "-o", "json"][..],
        &["tenant", "create", "pool-b", "--name", "B", "--migrate"][..],
        &["status", "--all"][..],
        &["tenant", "list"][..],
        &["check"][..],
    ] {
        let r = tx.run(args);
        expect_error(
            &r,
            3,
            &[
                "transaction-pooling proxy was detected",
                &format!("127.0.0.1:{}", bouncer.port),
                "direct connection",
                "session",
            ],
        );
    }
    assert_eq!(tenant_count(&db), 1);
    assert!(!schema_exists(&db, "tenant_pool_b"));
    assert_eq!(history_versions(&db, &a), [1]);
    assert!(!relation_exists(&db, &a, "two"));

    // Session pooling: the same commands work.
    let session = through(&bouncer.url("session"), migrations.path());
    let r: RunReport = session
        .run(&["upgrade", "--all", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("pool-a").applied, [2], "{r:#?}");
    let b = create(&session, "pool-b", &["--migrate"])
        .tenant
        .schema_name;
    assert_eq!(history_versions(&db, &b), [1, 2]);
    session.run(&["status", "--all"]).expect(0);
    session.run(&["check"]).expect(0);
    session.run(&["init"]).expect(0);
    assert_eq!(tenant_count(&db), 2);
    assert!(relation_exists(&db, &a, "two"));
}
