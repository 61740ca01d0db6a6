//! Test support: a fresh PostgreSQL database per test, migration directories, the one
//! runner for the real binary (`run`) and what the server shows while it runs (`probes`).
//!
//! Gates (`gates`) hold tenantctl at an exact point until the test lets it go.
//!
//! The server comes from `TENANTCTL_TEST_ADMIN_URL` (set by `scripts/with-postgres`),
//! else `postgres://postgres@127.0.0.1:5432/postgres`. A test that cannot create its
//! database panics with the reason: database tests never skip.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

mod gates;
mod probes;
mod proxy;
mod run;
pub mod schemas;

pub use gates::{wait_at, wait_at_except, Gate};

pub use probes::{
    backends_running, closed_port, eventually, lock_tenant, lock_waiters, unlock_tenant,
    waits_for_tenantctl,
};
pub use proxy::{Proxy, Then};
pub use run::{bare, scrub, tenantctl, Run, Spawned, Tenantctl, DEADLINE};

/// The maintenance connection used to create and drop test databases.
pub fn admin_url() -> String {
    std::env::var("TENANTCTL_TEST_ADMIN_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

fn admin_client() -> postgres::Client {
    let url = admin_url();
    postgres::Client::connect(&url, postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "cannot connect to the test PostgreSQL server at {} ({e}). Database tests need a server: \
             run them with `scripts/test`, which starts a throwaway one when none is reachable, \
             or set TENANTCTL_TEST_ADMIN_URL",
            redact(&url)
        )
    })
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if url[s + 3..at].contains(':') => {
            let colon = s + 3 + url[s + 3..at].find(':').unwrap();
            format!("{}:***{}", &url[..colon], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The shared server's logical replication workers, held by one test at a time: an
/// online move into the shared server needs two of its four, so tests that move online
/// into it take turns (the lock is a session advisory lock on the maintenance database,
/// so it holds across test processes too). Released when dropped.
pub struct SharedReplicationWorkers(#[allow(dead_code)] postgres::Client);

/// Waits for the shared server's logical replication workers; see
/// [`SharedReplicationWorkers`].
pub fn shared_replication_workers() -> SharedReplicationWorkers {
    let mut admin = admin_client();
    admin
        .batch_execute(
            "SELECT pg_advisory_lock(hashtext('tenantctl tests: logical replication workers'))",
        )
        .unwrap_or_else(|e| panic!("cannot take the replication workers' test lock: {e}"));
    SharedReplicationWorkers(admin)
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDb {
    /// Database name.
    pub name: String,
    /// URL to it.
    pub url: String,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl TestDb {
    /// Creates a fresh, empty database.
    pub fn new() -> TestDb {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("tenantctl_test_{}_{}_{}", std::process::id(), n, nanos);
        let mut admin = admin_client();
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let base = admin_url();
        let url = match base.rfind('/') {
            Some(i) if i > base.find("://").map_or(0, |p| p + 2) => {
                let (head, tail) = base.split_at(i);
                let query = tail.find('?').map(|q| &tail[q..]).unwrap_or("");
                format!("{head}/{name}{query}")
            }
            _ => format!("{base}/{name}"),
        };
        TestDb { name, url }
    }

    /// A plain client on the test database, for checking what tenantctl did.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to test database {}: {e}", self.name))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&admin_url(), postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// The example migrations shipped in the repository.
pub fn example_migrations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

/// A temporary directory holding the given files.
pub fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (name, body) in files {
        std::fs::write(d.path().join(name), body).unwrap();
    }
    d
}

/// Copies the example migrations into a temporary directory the test may change.
pub fn copy_of_example_migrations() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(example_migrations()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), d.path().join(entry.file_name())).unwrap();
    }
    d
}

/// A database with an initialised registry, and its runner.
pub fn ready() -> (TestDb, Tenantctl) {
    let db = TestDb::new();
    let t = tenantctl(&db);
    t.run(&["init"]).expect(0);
    (db, t)
}
