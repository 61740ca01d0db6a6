//! The one way the tests start the tenantctl binary: [`Tenantctl`] says what the run
//! sees (database URL, migrations directory, working directory, variables), with nothing
//! leaking in from the developer's shell; [`Tenantctl::run`] runs it to the end, and
//! [`Tenantctl::spawn`] starts it in the background (optionally under a pseudo-terminal
//! or a wrapper such as GNU time) as a [`Spawned`] child the test can watch, signal,
//! kill and wait for with a deadline.
//!
//! Nothing here waits for the binary without a deadline: a run that does not end within
//! [`RUN_DEADLINE`] (or the one [`Tenantctl::deadline`] sets), and a wait for what a
//! background run shows that takes longer than [`DEADLINE`], kill it (with whatever it
//! started) and fail the test with what it printed. A hang fails the test; it never
//! hangs CI.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
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
    "PGTARGETSESSIONATTRS",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSERVICEFILE",
    "PGSYSCONFDIR",
    "DATABASE_URL",
];

/// How long a wait for something a background run shows (or for a server's state) may
/// take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How long one run of the binary may take, from its start to its exit, before it is
/// killed and the test fails, unless [`Tenantctl::deadline`] says otherwise.
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
    /// Under a pseudo-terminal made by `script(1)`, whose stdin is the keyboard; with a
    /// width, the terminal reports that many columns (`stty cols`).
    Pty(Option<u16>),
}

/// A configured invocation of the binary.
#[derive(Clone)]
pub struct Tenantctl {
    url: Option<String>,
    migrations: Option<PathBuf>,
    cwd: PathBuf,
    env: Vec<(String, String)>,
    launch: Launch,
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

    /// Gives each run at most `deadline` to end (default [`RUN_DEADLINE`]): past it, the
    /// run is killed and the test fails with what it printed.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
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
        self.launch = Launch::Pty(None);
        self
    }

    /// [`Tenantctl::in_pty`] on a terminal that reports `cols` columns (0: as `script`
    /// and some CI runners report).
    pub fn in_pty_of_width(mut self, cols: u16) -> Self {
        self.launch = Launch::Pty(Some(cols));
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
            Launch::Pty(cols) => {
                let mut line = match cols {
                    Some(n) => format!("stty cols {n} rows 40; exec {}", shell_quote(bin)),
                    None => format!("exec {}", shell_quote(bin)),
                };
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
        // A group of its own, so that a kill reaches whatever it runs under a wrapper.
        cmd.process_group(0);
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

    /// Runs with these arguments and no stdin, to the end (at most its deadline).
    pub fn run(&self, args: &[&str]) -> Run {
        let run = self.spawn(args).finish();
        super::schemas::check(args, &run);
        run
    }

    /// Runs with these arguments and `input` on stdin, to the end (at most its deadline).
    /// The child may exit before reading all of it (the rest is then dropped).
    pub fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        let (mut spawned, stdout) = self.start(args, Stdio::piped(), Stdio::piped());
        spawned.stdout_reader = stdout.map(|o| collect(o, spawned.stdout.clone()));
        let mut stdin = spawned.child.stdin.take().unwrap();
        let input = input.to_vec();
        // Not joined: a child that neither reads nor exits leaves it blocked until the
        // deadline kills the child and the pipe breaks.
        std::thread::spawn(move || {
            // A child that stops reading early closes the pipe: not the test's failure.
            let _ = stdin.write_all(&input);
        });
        let run = spawned.finish();
        super::schemas::check(args, &run);
        run
    }

    /// Runs to the end (at most its deadline) with stdout a pipe whose reader has already
    /// gone, so every write to it fails (`tenantctl ... | head -c0`); stdout comes back
    /// empty.
    pub fn run_into_closed_pipe(&self, args: &[&str]) -> Run {
        let (reader, writer) = std::io::pipe().expect("create a pipe");
        drop(reader);
        let (spawned, _) = self.start(args, Stdio::null(), Stdio::from(writer));
        spawned.finish()
    }

    /// Starts it in the background; stdout and stderr are collected as they come.
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        let stdin = match self.launch {
            Launch::Pty(_) => Stdio::piped(),
            _ => Stdio::null(),
        };
        let (mut spawned, stdout) = self.start(args, stdin, Stdio::piped());
        spawned.stdout_reader = stdout.map(|o| collect(o, spawned.stdout.clone()));
        spawned
    }

    /// Starts it in the background, handing its stdout to the caller (stderr is
    /// collected as it comes). The caller's reads have no deadline of their own: a
    /// watchdog kills the run once its deadline has passed, which ends them, and
    /// [`Spawned::finish`] then fails the test.
    pub fn spawn_reading_stdout(&self, args: &[&str]) -> (Spawned, ChildStdout) {
        let (mut spawned, stdout) = self.start(args, Stdio::null(), Stdio::piped());
        spawned.watchdog = Some(watchdog(
            spawned.child.id(),
            self.deadline,
            spawned.exited.clone(),
            spawned.timed_out.clone(),
        ));
        (spawned, stdout.unwrap())
    }

    /// Starts the binary with these streams; stderr is collected as it comes, stdout
    /// handed back when it is a pipe.
    fn start(&self, args: &[&str], stdin: Stdio, stdout: Stdio) -> (Spawned, Option<ChildStdout>) {
        let mut child = self
            .command(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tenantctl");
        let stdout = child.stdout.take();
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_reader = collect(child.stderr.take().unwrap(), stderr.clone());
        let spawned = Spawned {
            child,
            args: args.join(" "),
            deadline: self.deadline,
            stdout: Arc::new(Mutex::new(String::new())),
            stderr,
            stdout_reader: None,
            stderr_reader: Some(stderr_reader),
            exited: Arc::new(AtomicBool::new(false)),
            timed_out: Arc::new(AtomicBool::new(false)),
            watchdog: None,
            _home: self.home.clone(),
        };
        (spawned, stdout)
    }
}

/// SIGKILL to the process group `pgid` (the binary and whatever it runs under a wrapper).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// A thread that kills the process group `pgid` once `deadline` has passed, unless the
/// process has `exited` or the returned sender is dropped first; it sets `timed_out`
/// when it kills.
fn watchdog(
    pgid: u32,
    deadline: Duration,
    exited: Arc<AtomicBool>,
    timed_out: Arc<AtomicBool>,
) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(deadline) {
            if !exited.load(Ordering::SeqCst) {
                timed_out.store(true, Ordering::SeqCst);
                kill_group(pgid);
            }
        }
    });
    tx
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
    /// Its arguments, for the failure messages.
    args: String,
    /// How long it may run to its exit.
    deadline: Duration,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr_reader: Option<JoinHandle<()>>,
    /// Set once it has been waited for (its pid may then be another process's).
    exited: Arc<AtomicBool>,
    /// Set by the watchdog when it killed the run at its deadline.
    timed_out: Arc<AtomicBool>,
    /// Dropped to call the watchdog off (see [`Tenantctl::spawn_reading_stdout`]).
    watchdog: Option<mpsc::Sender<()>>,
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

    /// Its exit status, when it has exited (waiting for nothing).
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().unwrap();
        if status.is_some() {
            self.exited.store(true, Ordering::SeqCst);
        }
        status
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.exited().is_none()
    }

    /// Sends a signal by name (`INT`, `TERM`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGKILL (to it and whatever it runs under a wrapper), and waits until it is gone.
    pub fn kill(&mut self) {
        // The group outlives its first process while anything it started runs (and its
        // id is not given to another process meanwhile).
        kill_group(self.child.id());
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.exited.store(true, Ordering::SeqCst);
    }

    /// Types bytes into its pseudo-terminal (see [`Tenantctl::in_pty`]).
    pub fn type_keys(&mut self, keys: &[u8]) {
        let stdin = self.child.stdin.as_mut().expect("started with in_pty()");
        stdin.write_all(keys).unwrap();
        stdin.flush().unwrap();
    }

    /// Kills it and fails the test, saying what it waited for and what was printed.
    fn give_up(&mut self, waited: Duration, what: &str) -> ! {
        let pid = self.child.id();
        self.kill();
        // Whatever is still in the pipes, if they close.
        self.join_readers(Duration::from_secs(1));
        panic!(
            "timed out after {} s waiting until {what}: `tenantctl {}` (pid {pid}) was killed\nstdout:\n{}\nstderr:\n{}",
            waited.as_secs_f64(),
            self.args,
            self.stdout(),
            self.stderr()
        );
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
            if let Some(status) = self.exited() {
                let run = self.collect(status);
                panic!(
                    "tenantctl exited ({status}) before {what}\nstdout:\n{}\nstderr:\n{}",
                    run.stdout, run.stderr
                );
            }
            if Instant::now() > deadline {
                self.give_up(DEADLINE, what);
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

    /// Waits for the exit and returns what it did; after its deadline (counted from now,
    /// or from its start when a watchdog guards it) kills it and fails.
    pub fn finish(mut self) -> Run {
        let deadline = Instant::now() + self.deadline;
        loop {
            if self.timed_out.load(Ordering::SeqCst) {
                let waited = self.deadline;
                self.give_up(waited, "it exits (its deadline passed)");
            }
            if let Some(status) = self.exited() {
                return self.collect(status);
            }
            if Instant::now() > deadline {
                let waited = self.deadline;
                self.give_up(waited, "it exits");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits at most `patience` for the threads reading its pipes to reach their end;
    /// whether they did.
    fn join_readers(&mut self, patience: Duration) -> bool {
        let until = Instant::now() + patience;
        for slot in [&mut self.stdout_reader, &mut self.stderr_reader] {
            while slot.as_ref().is_some_and(|r| !r.is_finished()) {
                if Instant::now() > until {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Some(r) = slot.take() {
                r.join().unwrap();
            }
        }
        true
    }

    /// The output of an exited child, once its pipes are drained (something it left
    /// running that holds them open is killed, and fails the test, after its deadline).
    fn collect(&mut self, status: ExitStatus) -> Run {
        drop(self.child.stdin.take());
        self.watchdog.take();
        if !self.join_readers(self.deadline) {
            let waited = self.deadline;
            self.give_up(waited, "the pipes of the exited process close");
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
            kill_group(self.child.id());
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
