//! The one way the tests start the tenantctl binary: [`Tenantctl`] says what the run
//! sees (database URL, migrations directory, working directory, variables), with nothing
//! leaking in from the developer's shell; [`Tenantctl::run`] runs it to the end (killed,
//! and the test failed, past [`RUN_DEADLINE`]), and
//! [`Tenantctl::spawn`] starts it in the background (optionally under a pseudo-terminal
//! or a wrapper such as GNU time) as a [`Spawned`] child the test can watch, signal,
//! kill and wait for with a deadline.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{example_migrations, TestDb};

/// libpq's variables (and `DATABASE_URL`) that would otherwise reach the binary from the
/// shell running the tests; every `TENANTCTL_*` variable is removed too.
const SCRUBBED: &[&str] = &[
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGSERVICE",
    "PGPASSFILE",
    "PGCONNECT_TIMEOUT",
    "PGAPPNAME",
    "PGOPTIONS",
    "DATABASE_URL",
];

/// How long a background run may take before the test fails, unless told otherwise.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How long a run to the end ([`Tenantctl::run`]) may take before it is killed and the
/// test fails with what it printed: long enough for the largest run a test makes on a
/// busy machine, short enough that a hang fails instead of holding CI.
pub const RUN_DEADLINE: Duration = Duration::from_secs(300);

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

/// How the binary is started.
#[derive(Clone)]
enum Launch {
    /// Directly.
    Direct,
    /// As the last arguments of another program (`PROGRAM ARGS... tenantctl ...`).
    Wrapped(Vec<OsString>),
    /// Under a pseudo-terminal made by `script(1)`, whose stdin is the keyboard.
    Pty,
}

/// A configured invocation of the binary.
#[derive(Clone)]
pub struct Tenantctl {
    url: Option<String>,
    migrations: Option<PathBuf>,
    cwd: PathBuf,
    env: Vec<(String, String)>,
    launch: Launch,
    /// How long a run to the end may take.
    deadline: Duration,
    // The run's own HOME, and its working directory unless `cwd` is given.
    home: Arc<tempfile::TempDir>,
}

/// `tenantctl` against `db` with the example migrations, run from an empty directory,
/// with no ambient configuration from the environment.
pub fn tenantctl(db: &TestDb) -> Tenantctl {
    bare().url(&db.url).migrations(&example_migrations())
}

/// `tenantctl` with no database URL and no migrations directory set.
pub fn bare() -> Tenantctl {
    let scratch = tempfile::tempdir().unwrap();
    Tenantctl {
        url: None,
        migrations: None,
        cwd: scratch.path().to_path_buf(),
        env: Vec::new(),
        launch: Launch::Direct,
        deadline: RUN_DEADLINE,
        home: Arc::new(scratch),
    }
}

impl Tenantctl {
    /// Uses this database URL (`TENANTCTL_DATABASE_URL`).
    pub fn url(mut self, url: &str) -> Self {
        self.url = Some(url.to_string());
        self
    }

    /// Uses this migrations directory (`TENANTCTL_MIGRATIONS`).
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

    /// Gives a run to the end ([`Tenantctl::run`] and its kin) `limit` instead of
    /// [`RUN_DEADLINE`].
    pub fn deadline(mut self, limit: Duration) -> Self {
        self.deadline = limit;
        self
    }

    /// Starts the binary as `PROGRAM ARGS... tenantctl ...` (e.g. under GNU time).
    pub fn wrapped_in(mut self, program: &Path, args: &[&str]) -> Self {
        let mut all = vec![program.as_os_str().to_os_string()];
        all.extend(args.iter().map(OsString::from));
        self.launch = Launch::Wrapped(all);
        self
    }

    /// Starts the binary on a pseudo-terminal (so it may prompt); what is written with
    /// [`Spawned::type_keys`] is typed into it, and stdout is the screen.
    pub fn in_pty(mut self) -> Self {
        self.launch = Launch::Pty;
        self
    }

    /// The command, with the environment scrubbed and then set as configured.
    fn command(&self, args: &[&str]) -> Command {
        let bin = env!("CARGO_BIN_EXE_tenantctl");
        let mut cmd = match &self.launch {
            Launch::Direct => {
                let mut c = Command::new(bin);
                c.args(args);
                c
            }
            Launch::Wrapped(prefix) => {
                let mut c = Command::new(&prefix[0]);
                c.args(&prefix[1..]).arg(bin).args(args);
                c
            }
            Launch::Pty => {
                let mut line = format!("exec {}", shell_quote(bin));
                for a in args {
                    line.push(' ');
                    line.push_str(&shell_quote(a));
                }
                let mut c = Command::new("script");
                c.args(["-qec", &line, "/dev/null"]);
                c.env("TERM", "dumb");
                c
            }
        };
        cmd.current_dir(&self.cwd);
        scrub(&mut cmd);
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
        cmd
    }

    /// Runs with these arguments and no stdin, to the end; past its deadline
    /// ([`RUN_DEADLINE`] unless [`Tenantctl::deadline`] says otherwise) kills it and fails
    /// with what it printed.
    pub fn run(&self, args: &[&str]) -> Run {
        self.start(args, Stdio::null(), None)
            .finish_within(self.deadline)
    }

    /// Runs with these arguments and `input` on stdin, to the end, like [`Tenantctl::run`].
    /// The child may exit before reading all of it (the rest is then dropped).
    pub fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        let mut spawned = self.start(args, Stdio::piped(), None);
        let mut stdin = spawned.child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            // A child that stops reading early closes the pipe: not the test's failure.
            let _ = stdin.write_all(&input);
        });
        let run = spawned.finish_within(self.deadline);
        writer.join().unwrap();
        run
    }

    /// Runs to the end, like [`Tenantctl::run`], with stdout a pipe whose reader has
    /// already gone, so every write to it fails (`tenantctl ... | head -c0`); stdout comes
    /// back empty.
    pub fn run_into_closed_pipe(&self, args: &[&str]) -> Run {
        let (reader, writer) = std::io::pipe().expect("create a pipe");
        drop(reader);
        self.start(args, Stdio::null(), Some(Stdio::from(writer)))
            .finish_within(self.deadline)
    }

    /// Starts it with this stdin, and this stdout (else a pipe collected as it comes);
    /// stderr is collected as it comes.
    fn start(&self, args: &[&str], stdin: Stdio, stdout: Option<Stdio>) -> Spawned {
        let collected = stdout.is_none();
        let mut child = self
            .command(args)
            .stdin(stdin)
            .stdout(stdout.unwrap_or_else(Stdio::piped))
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tenantctl");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stdout_reader =
            collected.then(|| collect(child.stdout.take().unwrap(), stdout.clone()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_reader = collect(child.stderr.take().unwrap(), stderr.clone());
        Spawned {
            child,
            stdout,
            stderr,
            stdout_reader,
            stderr_reader: Some(stderr_reader),
            _home: self.home.clone(),
        }
    }

    /// Starts it in the background; stdout and stderr are collected as they come.
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        let (mut spawned, stdout) = self.spawn_reading_stdout(args);
        spawned.stdout_reader = Some(collect(stdout, spawned.stdout.clone()));
        spawned
    }

    /// Starts it in the background, handing its stdout to the caller (stderr is
    /// collected as it comes).
    pub fn spawn_reading_stdout(&self, args: &[&str]) -> (Spawned, ChildStdout) {
        let stdin = match self.launch {
            Launch::Pty => Stdio::piped(),
            _ => Stdio::null(),
        };
        let mut spawned = self.start(args, stdin, Some(Stdio::piped()));
        let stdout = spawned.child.stdout.take().unwrap();
        (spawned, stdout)
    }
}

/// Removes from `cmd`'s environment every `TENANTCTL_*` variable, libpq's connection
/// variables and `DATABASE_URL`, so nothing reaches it from the shell running the tests.
pub fn scrub(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("TENANTCTL_")) {
            cmd.env_remove(key);
        }
    }
    for key in SCRUBBED {
        cmd.env_remove(key);
    }
}

/// `s` quoted for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A thread appending everything read from `pipe` to `sink`, until end of file.
fn collect(mut pipe: impl Read + Send + 'static, sink: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
}

/// A tenantctl running in the background. Dropping it kills it.
pub struct Spawned {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr_reader: Option<JoinHandle<()>>,
    _home: Arc<tempfile::TempDir>,
}

impl Spawned {
    /// What it has written on stdout so far (the screen, on a pseudo-terminal).
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// What it has written on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends a signal by name (`INT`, `TERM`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGKILL, and waits until it is gone.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }

    /// Types bytes into its pseudo-terminal (see [`Tenantctl::in_pty`]).
    pub fn type_keys(&mut self, keys: &[u8]) {
        let stdin = self.child.stdin.as_mut().expect("started with in_pty()");
        stdin.write_all(keys).unwrap();
        stdin.flush().unwrap();
    }

    /// Polls `probe` every 20 ms until it answers and returns the answer. Fails loudly
    /// (with what the child printed) when the child exits first or after `DEADLINE`,
    /// killing it.
    pub fn wait_for<T>(&mut self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(v) = probe() {
                return v;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                let run = self.collect(status);
                panic!(
                    "tenantctl exited ({status}) before {what}\nstdout:\n{}\nstderr:\n{}",
                    run.stdout, run.stderr
                );
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "timed out after {} s waiting until {what}\nstdout:\n{}\nstderr:\n{}",
                    DEADLINE.as_secs(),
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `cond` until it holds, like [`Spawned::wait_for`].
    pub fn wait_until(&mut self, what: &str, mut cond: impl FnMut() -> bool) {
        self.wait_for(what, || cond().then_some(()));
    }

    /// Waits until its stderr contains `needle`, like [`Spawned::wait_for`].
    pub fn wait_for_stderr(&mut self, needle: &str) {
        let stderr = self.stderr.clone();
        self.wait_until(&format!("stderr shows {needle:?}"), || {
            stderr.lock().unwrap().contains(needle)
        });
    }

    /// Waits until its stdout (the screen, on a pseudo-terminal) contains `needle`.
    pub fn wait_for_stdout(&mut self, needle: &str) {
        let stdout = self.stdout.clone();
        self.wait_until(&format!("stdout shows {needle:?}"), || {
            stdout.lock().unwrap().contains(needle)
        });
    }

    /// Waits for the exit and returns what it did; after `DEADLINE` kills it and fails.
    pub fn finish(self) -> Run {
        self.finish_within(DEADLINE)
    }

    /// Waits for the exit and returns what it did; after `limit` kills it and fails with
    /// what it printed.
    fn finish_within(mut self, limit: Duration) -> Run {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return self.collect(status);
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "tenantctl did not finish within {} s\nstdout:\n{}\nstderr:\n{}",
                    limit.as_secs(),
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The output of an exited child, once its pipes are drained.
    fn collect(&mut self, status: std::process::ExitStatus) -> Run {
        drop(self.child.stdin.take());
        for reader in [self.stdout_reader.take(), self.stderr_reader.take()]
            .into_iter()
            .flatten()
        {
            reader.join().unwrap();
        }
        Run {
            code: status.code().unwrap_or(-1),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
