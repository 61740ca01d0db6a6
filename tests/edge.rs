//! The command line's edge: a reader that closes stdout early (`tenantctl ... | head -c1`)
//! ends tenantctl quietly with exit 0, whichever way the results were being written
//! (a printed block, one JSON document, or a streamed dry run).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What one run of the binary did; stdout went to a pipe nobody reads.
struct Run {
    code: Option<i32>,
    stderr: String,
}

/// A pipe whose reading end is already closed, so every write to it fails with EPIPE.
fn closed_stdout() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("create a pipe");
    drop(reader);
    writer.into()
}

/// `tenantctl ARGS` from `cwd` with an empty environment but `HOME=cwd` and `env`, so
/// nothing of the host's configuration leaks in, and no stdin.
fn tenantctl(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantctl"));
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .env("HOME", cwd)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd
}

/// Runs `tenantctl ARGS` (see [`tenantctl`]) with stdout closed before the first write.
fn run_into_closed_pipe(cwd: &Path, env: &[(&str, &str)], args: &[&str]) -> Run {
    let out = tenantctl(cwd, env, args)
        .stdout(closed_stdout())
        .stderr(Stdio::piped())
        .output()
        .expect("run tenantctl");
    Run {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts the quiet end a pipeline expects: exit 0, nothing on stderr.
fn assert_quiet_success(what: &str, run: &Run) {
    assert_eq!(
        run.code,
        Some(0),
        "{what}: exit code with stdout closed; stderr: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("panicked"),
        "{what}: panicked on a closed stdout: {}",
        run.stderr
    );
    assert_eq!(run.stderr, "", "{what}: stderr should stay quiet");
}

#[test]
fn printed_results_into_a_closed_pipe_end_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_into_closed_pipe(dir.path(), &[], &["completions", "bash"]);
    assert_quiet_success("completions bash", &run);
}

#[test]
fn a_json_document_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_into_closed_pipe(dir.path(), &[], &["config", "show", "--json"]);
    assert_quiet_success("config show --json", &run);
}

/// A database of its own, dropped at the end.
struct Db {
    admin: String,
    name: String,
    url: String,
}

impl Db {
    fn new() -> Db {
        let admin = std::env::var("TENANTCTL_TEST_ADMIN_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let name = format!("tenantctl_edge_{}", std::process::id());
        let mut client = postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to the test server ({e}); run under scripts/with-postgres or set TENANTCTL_TEST_ADMIN_URL"));
        for sql in [
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            format!("CREATE DATABASE \"{name}\""),
        ] {
            client
                .batch_execute(&sql)
                .unwrap_or_else(|e| panic!("cannot create database {name}: {e:?}"));
        }
        let slash = admin.rfind('/').expect("the admin URL names a database");
        let query = admin[slash..].find('?').map_or("", |q| &admin[slash + q..]);
        let url = format!("{}/{name}{query}", &admin[..slash]);
        Db { admin, name, url }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn example_migrations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

/// A streamed dry run that would exit 1 (a named tenant has no schema) ends with 0 when
/// its reader has gone: the closed pipe is the outcome, as for every other command.
#[test]
fn a_streamed_dry_run_into_a_closed_pipe_ends_quietly() {
    let db = Db::new();
    let dir = tempfile::tempdir().unwrap();
    let migrations = example_migrations();
    let env = [
        ("TENANTCTL_DATABASE_URL", db.url.as_str()),
        ("TENANTCTL_MIGRATIONS", migrations.to_str().unwrap()),
    ];
    let setup = |args: &[&str]| {
        let out = tenantctl(dir.path(), &env, args)
            .output()
            .expect("run tenantctl");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    setup(&["init"]);
    setup(&["tenant", "create", "edge-one", "--name", "Edge One"]);
    let run = run_into_closed_pipe(
        dir.path(),
        &env,
        &["upgrade", "--tenant", "edge-one", "--dry-run"],
    );
    assert_quiet_success("upgrade --dry-run", &run);
}
