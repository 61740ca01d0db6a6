//! Running the binary in the background: start it with the same clean environment as
//! `support::tenantctl`, wait for it with a deadline, and poll the database meanwhile.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Run, TestDb};

/// The variables `support::tenantctl` clears so the host's environment never leaks in.
pub const AMBIENT: &[&str] = &[
    "TENANTCTL_CONFIG",
    "TENANTCTL_DATABASE_URL",
    "TENANTCTL_MIGRATIONS",
    "DATABASE_URL",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSSLMODE",
];

/// Starts `tenantctl ARGS` against `db` with this migrations directory, run from `cwd`
/// (which must hold no tenants.toml), stdout and stderr captured.
pub fn spawn(db: &TestDb, migrations: &Path, cwd: &Path, args: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantctl"));
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for key in AMBIENT {
        cmd.env_remove(key);
    }
    cmd.env("TENANTCTL_DATABASE_URL", &db.url)
        .env("TENANTCTL_MIGRATIONS", migrations);
    cmd.spawn().expect("start tenantctl")
}

fn to_run(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Waits for the child to exit; after `secs` seconds kills it and fails the test.
pub fn finish(mut child: Child, secs: u64) -> Run {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if child.try_wait().unwrap().is_some() {
            return to_run(child.wait_with_output().unwrap());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let run = to_run(child.wait_with_output().unwrap());
            panic!(
                "tenantctl did not finish within {secs} s\nstdout:\n{}\nstderr:\n{}",
                run.stdout, run.stderr
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What an exited child left in its captured stdout and stderr.
fn drain(child: &mut Child) -> (String, String) {
    use std::io::Read;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    (out, err)
}

/// Whether the child is still running.
pub fn running(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

/// Polls `probe` until it returns something, failing after `secs` seconds or when the
/// child exits first (killing it on timeout).
pub fn wait_for<T>(
    child: &mut Child,
    secs: u64,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let (stdout, stderr) = drain(child);
            panic!(
                "tenantctl exited ({status}) before {what}\nstdout:\n{stdout}\nstderr:\n{stderr}"
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("timed out after {secs} s waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Backends of other sessions on the test database running a statement that contains
/// `needle`, with the tenant schema they hold a lock on (the namespace lock every
/// `CREATE` in a schema takes until its transaction ends), when they hold one.
pub fn backends_running(db: &TestDb, needle: &str) -> Vec<(i32, Option<String>)> {
    db.client()
        .query(
            "SELECT a.pid, (SELECT n.nspname::text FROM pg_locks l JOIN pg_namespace n ON n.oid = l.objid \
               WHERE l.pid = a.pid AND l.locktype = 'object' AND l.classid = 'pg_namespace'::regclass \
               AND l.granted AND n.nspname LIKE 'tenant\\_%' LIMIT 1) \
             FROM pg_stat_activity a \
             WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() \
               AND a.state = 'active' AND strpos(a.query, $1) > 0",
            &[&needle],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Locks a tenant's schema the way tenantctl does: space 0x74656e74 and the first four
/// bytes of SHA-256(schema) as a big-endian i32; `$1` is the schema name.
pub const LOCK_KEY: &str =
    "1952804468, ('x' || substr(encode(sha256(convert_to($1, 'UTF8')), 'hex'), 1, 8))::bit(32)::int";

/// How many sessions wait (not granted) for the tenant lock of `schema`.
pub fn lock_waiters(db: &TestDb, schema: &str) -> i64 {
    db.client()
        .query_one(
            &format!(
                "SELECT count(*) FROM pg_locks l WHERE l.locktype = 'advisory' AND NOT l.granted \
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND l.classid::bigint = 1952804468 AND l.objsubid = 2 \
                 AND l.objid::bigint = (({k2})::bigint & 4294967295)",
                k2 = "('x' || substr(encode(sha256(convert_to($1, 'UTF8')), 'hex'), 1, 8))::bit(32)::int"
            ),
            &[&schema],
        )
        .unwrap()
        .get(0)
}

/// A TCP port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}
