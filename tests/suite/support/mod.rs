//! Test support: a fresh PostgreSQL database per test, and a runner for the real binary.
//!
//! The server comes from `TENANTCTL_TEST_ADMIN_URL` (set by `scripts/with-postgres`),
//! else `postgres://postgres@127.0.0.1:5432/postgres`. A test that cannot create its
//! database panics with the reason: database tests never skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Parses stdout as exactly one JSON document.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not the expected JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts the exit code, showing both streams when it differs.
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
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

/// A configured invocation of the binary.
pub struct Tenantctl {
    url: Option<String>,
    migrations: Option<PathBuf>,
    cwd: PathBuf,
    env: Vec<(String, String)>,
    home: tempfile::TempDir,
}

/// `tenantctl` against `db` with the example migrations, run from an empty directory,
/// with no ambient configuration from the environment.
pub fn tenantctl(db: &TestDb) -> Tenantctl {
    let scratch = tempfile::tempdir().unwrap();
    Tenantctl {
        url: Some(db.url.clone()),
        migrations: Some(example_migrations()),
        cwd: scratch.path().to_path_buf(),
        env: Vec::new(),
        home: scratch,
    }
}

/// `tenantctl` with no database URL and no migrations directory set.
pub fn bare() -> Tenantctl {
    let scratch = tempfile::tempdir().unwrap();
    Tenantctl {
        url: None,
        migrations: None,
        cwd: scratch.path().to_path_buf(),
        env: Vec::new(),
        home: scratch,
    }
}

impl Tenantctl {
    /// Uses this migrations directory.
    pub fn migrations(mut self, dir: &Path) -> Self {
        self.migrations = Some(dir.to_path_buf());
        self
    }

    /// Runs from this directory (where ./tenants.toml is looked for).
    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = dir.to_path_buf();
        self
    }

    /// Sets an environment variable for the run.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs with these arguments and no stdin.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantctl"));
        cmd.args(args).current_dir(&self.cwd).stdin(Stdio::null());
        for key in [
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
            "PGSSLROOTCERT",
        ] {
            cmd.env_remove(key);
        }
        // libpq's default root certificate is ~/.postgresql/root.crt: a home of the run's
        // own keeps the developer's out of it (a test may set HOME itself).
        cmd.env("HOME", self.home.path());
        if let Some(url) = &self.url {
            cmd.env("TENANTCTL_DATABASE_URL", url);
        }
        if let Some(m) = &self.migrations {
            cmd.env("TENANTCTL_MIGRATIONS", m);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run tenantctl");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A database with an initialised registry, and its runner.
pub fn ready() -> (TestDb, Tenantctl) {
    let db = TestDb::new();
    let t = tenantctl(&db);
    t.run(&["init"]).expect(0);
    (db, t)
}
