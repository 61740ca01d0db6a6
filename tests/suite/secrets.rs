//! Secrets never leak: a database password given any way tenantctl accepts one (flag,
//! `TENANTCTL_DATABASE_URL`, `DATABASE_URL`, the config file, `PGPASSWORD`), or in
//! another server's `[servers.NAME]` URL, appears in no output of any command (the tenant
//! data commands, `metrics`, the service and `adopt alembic` included), succeeding or
//! failing, in no file written (archives, backups, metrics text files) and in no row of
//! the registry, the ledger or a tenant's tables; and an API key is printed exactly once,
//! by the command that made it, and stored nowhere.
//!
//! The shared server uses trust authentication, so it ignores the sentinel password and
//! every command works.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::adopt_alembic::{
    alembic_upgrade, build_registry, map_file, migrations_from_alembic, original, R1,
};
use crate::checks::seed_example;
use crate::cluster::Cluster;
use crate::{common_json, support};
use common_json::{Created, Rotated};
use support::{bare, closed_port, example_migrations, ready, Run, Tenantctl, TestDb, DEADLINE};

const PASSWORD: &str = "S3NTINEL-pw-7f3a";
const SENTINEL: &str = "S3NTINEL";

/// The parts of a `postgres://user[:pw]@host[:port]/db[?query]` URL.
struct Parts {
    user: String,
    host: String,
    port: String,
    db: String,
}

fn parts(url: &str) -> Parts {
    let rest = url.split_once("://").expect("a postgres:// URL").1;
    let rest = rest.split('?').next().unwrap();
    let (auth, rest) = rest.rsplit_once('@').unwrap_or(("postgres", rest));
    let user = auth.split(':').next().unwrap().to_string();
    let (hostport, db) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    Parts {
        user,
        host: host.to_string(),
        port: port.to_string(),
        db: db.to_string(),
    }
}

/// `postgres://USER:PASSWORD@HOST:PORT/DB` for the test database.
fn url_with(p: &Parts, host_port: &str, db: &str) -> String {
    format!("postgres://{}:{PASSWORD}@{host_port}/{db}", p.user)
}

/// Where the password comes from.
#[derive(Debug, Clone, Copy)]
enum Via {
    Flag,
    TenantctlEnv,
    DatabaseUrlEnv,
    ConfigFile,
    PgPassword,
}

/// A configured invocation that passes the database (and its password) one way.
struct Source {
    via: Via,
    t: Tenantctl,
    prefix: Vec<String>,
    _cfg: Option<tempfile::TempDir>,
}

impl Source {
    /// `url` for the URL ways; for `PgPassword`, `PGHOST`/`PGPORT`/... from `pg`.
    fn new(via: Via, url: &str, pg: &Parts) -> Source {
        Source::configured(via, url, pg, "")
    }

    /// As [`Source::new`], with `more` (TOML: `[servers.NAME]` tables) in a tenants.toml
    /// in the working directory.
    fn configured(via: Via, url: &str, pg: &Parts, more: &str) -> Source {
        let base = bare().migrations(&example_migrations());
        let mut prefix = Vec::new();
        let mut cfg = None;
        let mut toml = String::new();
        if let Via::ConfigFile = via {
            toml = format!("[database]\nurl = \"{url}\"\n");
        }
        if !more.is_empty() {
            // Servers that are down are given up on soon.
            if toml.is_empty() {
                toml.push_str("[database]\n");
            }
            toml.push_str("connect_timeout = \"2s\"\n\n");
            toml.push_str(more);
        }
        let base = if toml.is_empty() {
            base
        } else {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("tenants.toml"), toml).unwrap();
            let t = base.cwd(dir.path());
            cfg = Some(dir);
            t
        };
        let t = match via {
            Via::Flag => {
                prefix = vec!["--database-url".to_string(), url.to_string()];
                base
            }
            Via::TenantctlEnv => base.env("TENANTCTL_DATABASE_URL", url),
            Via::DatabaseUrlEnv => base.env("DATABASE_URL", url),
            Via::ConfigFile => base,
            Via::PgPassword => base
                .env("PGHOST", &pg.host)
                .env("PGPORT", &pg.port)
                .env("PGUSER", &pg.user)
                .env("PGDATABASE", &pg.db)
                .env("PGPASSWORD", PASSWORD),
        };
        Source {
            via,
            t,
            prefix,
            _cfg: cfg,
        }
    }

    /// Runs, asserts the exit code is one of `codes`, and that the password appears in
    /// neither stream.
    fn run(&self, args: &[&str], codes: &[i32]) -> Run {
        let mut all: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        let run = self.t.run(&all);
        assert!(
            codes.contains(&run.code),
            "{:?} {args:?}: exit {} (expected one of {codes:?})\nstdout:\n{}\nstderr:\n{}",
            self.via,
            run.code,
            run.stdout,
            run.stderr
        );
        assert_no_secret(&format!("{:?} {args:?}", self.via), &run);
        run
    }
}

fn assert_no_secret(label: &str, run: &Run) {
    assert!(
        !run.stdout.contains(SENTINEL),
        "{label}: the password is on stdout:\n{}",
        run.stdout
    );
    assert!(
        !run.stderr.contains(SENTINEL),
        "{label}: the password is on stderr:\n{}",
        run.stderr
    );
}

/// Every command, in text and JSON, succeeding and failing, against the test database
/// with the password given `via`; then connection failures with the password in reach.
fn exercise(via: Via) {
    let db = TestDb::new();
    let pg = parts(&db.url);
    let host_port = format!("{}:{}", pg.host, pg.port);
    let s = Source::new(via, &url_with(&pg, &host_port, &db.name), &pg);
    let scratch = tempfile::tempdir().unwrap();
    let revisions = scratch.path().display().to_string();

    // Before init: the registry is missing (exit 3).
    s.run(&["status", "--all"], &[3]);
    s.run(&["tenant", "list", "-o", "json"], &[3]);
    for (fmt, d) in [(&[][..], "sec-text"), (&["-o", "json"][..], "sec-json")] {
        let go = |args: &[&str], codes: &[i32]| {
            let mut all = args.to_vec();
            all.extend_from_slice(fmt);
            s.run(&all, codes)
        };
        go(&["init"], &[0]);
        go(&["init", "-v"], &[0]);
        go(
            &[
                "tenant",
                "create",
                d,
                "--name",
                "Sec",
                "--migrate",
                "--target",
                "3",
            ],
            &[0],
        );
        go(&["tenant", "list"], &[0]);
        go(&["tenant", "show", d], &[0]);
        go(&["tenant", "rotate-key", d], &[0]);
        go(&["provision", "--all"], &[0]);
        go(&["provision", "--all", "--dry-run"], &[0]);
        go(&["upgrade", "--tenant", d, "4"], &[0]);
        go(&["upgrade", "--all", "--dry-run"], &[0]);
        go(&["upgrade", "--all", "-v"], &[0]);
        go(
            &["downgrade", "--tenant", d, "4", "--dry-run", "--yes"],
            &[0],
        );
        go(&["downgrade", "--tenant", d, "5", "--yes"], &[0]);
        go(&["stamp", "--tenant", d, "6"], &[0]);
        go(&["current"], &[0]);
        go(&["current", "--all"], &[0]);
        go(&["history"], &[0]);
        go(&["history", "--tenant", d, "-v"], &[0]);
        go(&["status", "--tenant", d], &[0]);
        go(&["status", "--all"], &[0]);
        go(&["check"], &[0, 5]);
        go(&["events"], &[0]);
        go(&["events", "--failed"], &[0]);
        go(&["config", "show"], &[0]);
        go(&["config", "show", "-v"], &[0]);
        go(
            &["--migrations", &revisions, "revision", "-m", "note"],
            &[0],
        );
        // Failures with the connection working.
        go(&["tenant", "show", "nosuch"], &[1]);
        go(&["upgrade", "--tenant", "nosuch"], &[1]);
        go(&["upgrade", "--all", "99"], &[2]);
        go(&["downgrade", "--tenant", d, "nope", "--yes"], &[2]);
        go(&["downgrade", "--tenant", d, "3"], &[2]);
        go(&["tenant", "create", "Bad_Domain", "--name", "x"], &[2]);
        go(&["tenant", "create", d, "--name", "again"], &[1]);
        go(
            &["--migrations", "/nonexistent/dir", "upgrade", "--all"],
            &[3],
        );
        go(&["tenant", "drop", d, "--yes"], &[0]);
        go(&["tenant", "drop", d, "--yes"], &[1]);
    }
    s.run(&["--help"], &[0]);
    s.run(&["upgrade", "--help"], &[0]);
    s.run(&["tenant", "create", "--help"], &[0]);
    s.run(&["--bogus-flag"], &[2]);

    // Connection failures with the password in the configuration.
    let port = closed_port();
    let unreachable: Vec<Source> = match via {
        Via::PgPassword => {
            let dead = Parts {
                user: pg.user.clone(),
                host: "127.0.0.1".into(),
                port: port.to_string(),
                db: pg.db.clone(),
            };
            let bad = Parts {
                port: "notaport".into(),
                ..Parts {
                    user: pg.user.clone(),
                    host: pg.host.clone(),
                    port: String::new(),
                    db: pg.db.clone(),
                }
            };
            vec![Source::new(via, "", &dead), Source::new(via, "", &bad)]
        }
        _ => vec![
            Source::new(
                via,
                &url_with(&pg, &format!("127.0.0.1:{port}"), &db.name),
                &pg,
            ),
            Source::new(
                via,
                &format!("postgres://postgres:{PASSWORD}@127.0.0.1:notaport/x"),
                &pg,
            ),
            Source::new(
                via,
                &format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/x?sslmode=bogus"),
                &pg,
            ),
        ],
    };
    for bad in &unreachable {
        for args in [
            &["init"][..],
            &["upgrade", "--all", "-o", "json"][..],
            &["status", "--all", "-v"][..],
            &["tenant", "create", "x", "--name", "X", "--migrate"][..],
            &["check", "-o", "json"][..],
        ] {
            let run = bad.run(args, &[3]);
            assert!(run.stdout.is_empty(), "{via:?} {args:?}: {}", run.stdout);
            assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
        }
        // config show connects to nothing and shows the URL without its password.
        bad.run(&["config", "show"], &[0, 3]);
        bad.run(&["config", "show", "-o", "json"], &[0, 3]);
    }
}

#[test]
fn the_password_never_appears_given_by_flag() {
    exercise(Via::Flag);
}

#[test]
fn the_password_never_appears_given_by_tenantctl_database_url() {
    exercise(Via::TenantctlEnv);
}

#[test]
fn the_password_never_appears_given_by_database_url() {
    exercise(Via::DatabaseUrlEnv);
}

#[test]
fn the_password_never_appears_given_by_the_config_file() {
    exercise(Via::ConfigFile);
}

#[test]
fn the_password_never_appears_given_by_pgpassword() {
    exercise(Via::PgPassword);
}

/// The `tk_...` keys in a text.
fn keys_in(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("tk_") {
        let tail = &rest[i..];
        let len = tail
            .char_indices()
            .skip(3)
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            .map_or(tail.len(), |(j, _)| j);
        if len == 3 + 43 {
            keys.push(tail[..len].to_string());
        }
        rest = &tail[3..];
    }
    keys
}

/// How many rows of every table of every non-system schema contain `needle` in any column.
fn rows_containing(db: &TestDb, needle: &str) -> Vec<(String, i64)> {
    let mut c = db.client();
    let tables: Vec<(String, String)> = c
        .query(
            "SELECT table_schema::text, table_name::text FROM information_schema.tables \
             WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        tables
            .iter()
            .any(|(s, t)| s == "public" && t == "tenant_events"),
        "{tables:?}"
    );
    let mut hits = Vec::new();
    for (schema, table) in tables {
        let n: i64 = c
            .query_one(
                &format!(
                    "SELECT count(*) FROM \"{schema}\".\"{table}\" AS t WHERE strpos(t::text, $1) > 0"
                ),
                &[&needle],
            )
            .unwrap()
            .get(0);
        if n > 0 {
            hits.push((format!("{schema}.{table}"), n));
        }
    }
    hits
}

/// Every text-like column of the registry's tables, searched column by column.
fn registry_columns_containing(db: &TestDb, needle: &str) -> Vec<String> {
    let mut c = db.client();
    let cols: Vec<(String, String)> = c
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name IN ('tenants', 'tenant_events') \
             AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        cols.iter()
            .any(|(t, c)| t == "tenants" && c == "api_key_hash"),
        "{cols:?}"
    );
    let mut hits = Vec::new();
    for (table, col) in cols {
        let n: i64 = c
            .query_one(
                &format!(
                    "SELECT count(*) FROM public.\"{table}\" WHERE strpos(\"{col}\"::text, $1) > 0"
                ),
                &[&needle],
            )
            .unwrap()
            .get(0);
        if n > 0 {
            hits.push(format!("{table}.{col}"));
        }
    }
    hits
}

fn assert_key_shown_once(label: &str, run: &Run, key: &str) {
    assert_eq!(
        run.stdout.matches(key).count(),
        1,
        "{label}: the key should be on stdout exactly once:\n{}",
        run.stdout
    );
    assert!(
        !run.stderr.contains(key),
        "{label}: the key is on stderr:\n{}",
        run.stderr
    );
}

#[test]
fn api_keys_are_printed_once_and_stored_nowhere() {
    let (db, t) = ready();
    let mut keys: Vec<String> = Vec::new();

    let run = t.run(&["tenant", "create", "key-text", "--name", "K", "--migrate"]);
    run.expect(0);
    let found = keys_in(&run.stdout);
    assert_eq!(
        found.len(),
        1,
        "one key in the text output:\n{}",
        run.stdout
    );
    assert_key_shown_once("create (text)", &run, &found[0]);
    keys.push(found[0].clone());

    let run = t.run(&[
        "tenant",
        "create",
        "key-json",
        "--name",
        "K",
        "--provision",
        "-o",
        "json",
    ]);
    run.expect(0);
    let created: Created = run.json();
    assert_eq!(
        keys_in(&created.api_key),
        std::slice::from_ref(&created.api_key)
    );
    assert_key_shown_once("create (json)", &run, &created.api_key);
    keys.push(created.api_key.clone());

    let run = t.run(&["tenant", "rotate-key", "key-text"]);
    run.expect(0);
    let found = keys_in(&run.stdout);
    assert_eq!(found.len(), 1, "{}", run.stdout);
    assert_key_shown_once("rotate-key (text)", &run, &found[0]);
    keys.push(found[0].clone());

    let run = t.run(&["tenant", "rotate-key", "key-json", "-o", "json"]);
    run.expect(0);
    let rotated: Rotated = run.json();
    assert_key_shown_once("rotate-key (json)", &run, &rotated.api_key);
    keys.push(rotated.api_key.clone());

    let mut all = keys.clone();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "keys must differ: {keys:?}");

    // A create whose migration fails still prints its key once, on stdout only (exit 1).
    db.client()
        .batch_execute("CREATE SCHEMA taken; CREATE TABLE taken.members (x int)")
        .unwrap();
    let run = t.run(&[
        "tenant",
        "create",
        "key-fail",
        "--name",
        "F",
        "--schema",
        "taken",
        "--adopt",
        "--migrate",
    ]);
    run.expect(1);
    let found = keys_in(&run.stdout);
    assert_eq!(found.len(), 1, "{}\n{}", run.stdout, run.stderr);
    assert_key_shown_once("create with a failing migration", &run, &found[0]);
    keys.push(found[0].clone());

    let readers: &[&[&str]] = &[
        &["tenant", "list"],
        &["tenant", "list", "-o", "json"],
        &["tenant", "show", "key-text"],
        &["tenant", "show", "key-text", "-o", "json"],
        &["tenant", "show", "key-json", "-o", "json"],
        &["events"],
        &["events", "-o", "json"],
        &["status", "--all"],
        &["status", "--all", "-o", "json"],
        &["status", "--tenant", "key-json", "-o", "json"],
        &["current", "-o", "json"],
        &["check", "-o", "json"],
        &["upgrade", "--all", "-o", "json"],
        &["provision", "--all", "-o", "json"],
    ];
    for args in readers {
        let run = t.run(args);
        assert!(
            [0, 4, 5].contains(&run.code),
            "{args:?}: exit {}\n{}\n{}",
            run.code,
            run.stdout,
            run.stderr
        );
        for key in &keys {
            assert!(
                !run.stdout.contains(key.as_str()) && !run.stderr.contains(key.as_str()),
                "{args:?} shows an API key:\nstdout:\n{}\nstderr:\n{}",
                run.stdout,
                run.stderr
            );
            // Not even the secret part without its `tk_` marker.
            assert!(
                !run.stdout.contains(&key[3..]) && !run.stderr.contains(&key[3..]),
                "{args:?} shows an API key's secret part"
            );
        }
        assert!(
            keys_in(&run.stdout).is_empty() && keys_in(&run.stderr).is_empty(),
            "{args:?} shows something shaped like an API key:\n{}",
            run.stdout
        );
    }

    // Stored nowhere: neither the key nor its secret part, in any column of any table.
    for key in &keys {
        for needle in [key.as_str(), &key[3..]] {
            assert_eq!(
                registry_columns_containing(&db, needle),
                Vec::<String>::new(),
                "an API key is stored in the registry"
            );
            assert_eq!(
                rows_containing(&db, needle),
                Vec::<(String, i64)>::new(),
                "an API key is stored in the database"
            );
        }
    }
    // Only the newest keys match their hashes (the rotated-away ones no longer do).
    let matches = |key: &str| -> i64 {
        db.client()
            .query_one(
                "SELECT count(*) FROM public.tenants \
                 WHERE api_key_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex')",
                &[&key],
            )
            .unwrap()
            .get(0)
    };
    assert_eq!(
        keys.iter().map(|k| matches(k)).collect::<Vec<_>>(),
        [0, 0, 1, 1, 1]
    );
}

/// Every file under `dir`, recursively, whose bytes contain the password; an archive
/// (`\x89TNTCTL\n`, then a zstd stream) is searched in its records too, as far as they
/// decompress (a partial file's included).
fn files_with_secret(dir: &Path) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    let mut seen = 0;
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path);
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            seen += 1;
            let bytes = std::fs::read(&path).unwrap();
            let mut text = bytes.clone();
            if let Some(stream) = bytes.strip_prefix(b"\x89TNTCTL\n") {
                let mut records = Vec::new();
                let mut decoder = zstd::stream::read::Decoder::new(stream).unwrap();
                let _ = decoder.read_to_end(&mut records);
                assert!(
                    !records.is_empty(),
                    "{}: an archive whose records cannot be read",
                    path.display()
                );
                text.extend_from_slice(&records);
            }
            if text
                .windows(SENTINEL.len())
                .any(|w| w == SENTINEL.as_bytes())
            {
                hits.push(path);
            }
        }
    }
    assert!(seen > 0, "no file was written under {}", dir.display());
    hits
}

/// The text of a GET of `path` from a service at `base`: (status, body).
fn get(base: &str, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(DEADLINE))
        .build()
        .into();
    let mut r = agent
        .get(format!("{base}{path}"))
        .header("Authorization", format!("Bearer {SERVE_TOKEN}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: no answer ({e})"));
    (
        r.status().as_u16(),
        r.body_mut().read_to_string().unwrap_or_default(),
    )
}

const SERVE_TOKEN: &str = "secrets-serve-token-0b6e";

impl Source {
    /// Starts `serve` on a free port, asks for `/metrics`, `/healthz` and `/api/tenants`,
    /// stops it, and asserts the password is in no answer and not in its log; the status
    /// of `/metrics` (`None` when the service would not start: its output is checked
    /// all the same).
    fn serve_metrics(&self) -> Option<u16> {
        let mut args: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        args.extend_from_slice(&["serve", "--listen", "127.0.0.1:0"]);
        let mut child = self
            .t
            .clone()
            .env("TENANTCTL_API_TOKEN", SERVE_TOKEN)
            .spawn(&args);
        let label = format!("{:?} serve", self.via);
        let until = std::time::Instant::now() + DEADLINE;
        let addr = loop {
            let stderr = child.stderr();
            if let Some((_, rest)) = stderr.split_once("listening on http://") {
                if let Some(line) = rest.lines().next().filter(|_| rest.contains('\n')) {
                    break line.trim().to_string();
                }
            }
            if !child.running() {
                // It would not start: what it said is checked all the same.
                assert_no_secret(&label, &child.finish());
                return None;
            }
            assert!(
                std::time::Instant::now() < until,
                "{label}: neither listening nor gone: {stderr}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let base = format!("http://{addr}");
        let mut status = None;
        for path in ["/metrics", "/healthz", "/api/tenants"] {
            let (code, body) = get(&base, path);
            if path == "/metrics" {
                status = Some(code);
            }
            assert!(
                !body.contains(SENTINEL),
                "{label}: GET {path} ({code}) shows the password:\n{body}"
            );
        }
        child.kill();
        let stderr = child.stderr();
        assert!(
            !stderr.contains(SENTINEL) && !child.stdout().contains(SENTINEL),
            "{label}: the service's log shows the password:\n{stderr}"
        );
        status
    }
}

/// A cluster's URL with the password in it (the cluster trusts every local connection,
/// so it never asks for it).
fn cluster_url(c: &Cluster) -> String {
    format!(
        "postgres://postgres:{PASSWORD}@127.0.0.1:{}/postgres?sslmode=disable",
        c.port
    )
}

/// The tenant data commands, `metrics` and the service's `/metrics`, succeeding and
/// failing (a server that is down, a refused operation, a registry that cannot be
/// reached), with the registry's password given `via` and server `b`'s in its
/// `[servers.b]` URL: the password is in no output, no file written (archives, backups,
/// metrics text files), and no row of the registry, the ledger or a tenant's tables.
fn exercise_data(via: Via) {
    let db = TestDb::new();
    let pg = parts(&db.url);
    let host_port = format!("{}:{}", pg.host, pg.port);
    // b takes logical replication: a tenant moves online from it.
    let b = Cluster::trusting("wal_level = logical\n");
    let b_client =
        || postgres::Client::connect(&b.url("sslmode=disable"), postgres::NoTls).unwrap();
    let servers = format!(
        "[servers.b]\nurl = \"{}\"\nconnect_timeout = \"2s\"\n",
        cluster_url(&b)
    );
    let s = Source::configured(via, &url_with(&pg, &host_port, &db.name), &pg, &servers);
    let work = tempfile::tempdir().unwrap();
    let at = |name: &str| work.path().join(name).to_str().unwrap().to_string();
    let (da, db1, junk, out) = (
        at("da.tenant"),
        at("db1.tenant"),
        at("junk.tenant"),
        at("backups"),
    );
    std::fs::write(&junk, "not an archive").unwrap();
    // A command line, its words split at spaces, and the exit codes it may end with.
    let go = |s: &Source, line: &str, codes: &[i32]| {
        let args: Vec<&str> = line.split(' ').collect();
        s.run(&args, codes);
    };

    go(&s, "init", &[0]);
    go(
        &s,
        "tenant create da --name A --server default --migrate",
        &[0],
    );
    go(&s, "tenant create db1 --name B --server b --migrate", &[0]);
    seed_example(&mut db.client(), "tenant_da", 30);
    seed_example(&mut b_client(), "tenant_db1", 30);

    // Succeeding, in text and in JSON.
    for (round, fmt) in ["", " -o json"].into_iter().enumerate() {
        let run = |line: &str| go(&s, &format!("{line}{fmt}"), &[0]);
        run(&format!("tenant export da -f {da} --force"));
        run(&format!("tenant export db1 -f {db1} --force"));
        run(&format!(
            "tenant import {da} --as ia{round} --name I --dry-run"
        ));
        run(&format!("tenant import {da} --as ia{round} --name I"));
        run(&format!(
            "tenant import {db1} --as ib{round} --name I --server b"
        ));
        run(&format!(
            "tenant clone da ca{round} --name C --server b --dry-run"
        ));
        run(&format!("tenant clone da ca{round} --name C --server b"));
        run(&format!(
            "tenant clone db1 cb{round} --name C --server default"
        ));
        run(&format!("tenant restore da {da} --dry-run"));
        run(&format!("tenant restore da {da} --yes"));
        run(&format!("tenant restore db1 {db1} --yes"));
        run(&format!(
            "backup --all --out {out} --keep 3 --metrics-textfile {}",
            at("backup.prom")
        ));
        run("tenant move da --to b --dry-run");
        run("tenant move da --to b --yes");
        run("tenant move da --to default --yes");
        {
            let _workers = crate::support::shared_replication_workers();
            run("tenant move db1 --to default --online --dry-run");
            run("tenant move db1 --to default --online --yes");
        }
        run("tenant move db1 --to b --yes");
        run("metrics");
        run(&format!("metrics --textfile {}", at("metrics.prom")));
        run("events");
        for d in ["ia", "ib", "ca", "cb"] {
            run(&format!("tenant drop {d}{round} --yes"));
        }
    }
    assert_eq!(s.serve_metrics(), Some(200));

    // Refused: a schema of the tenant's name on the target, a view elsewhere depending
    // on the tenant, a taken domain, an archive that is not one; and a move that fails
    // once it has begun (undone, in the ledger with its error).
    b_client().batch_execute("CREATE SCHEMA tenant_da").unwrap();
    go(&s, "tenant move da --to b --yes", &[1]);
    go(&s, "tenant move da --to b --yes -o json", &[1]);
    b_client().batch_execute("DROP SCHEMA tenant_da").unwrap();
    db.client()
        .batch_execute(
            "CREATE SCHEMA reports; CREATE VIEW reports.v AS SELECT id FROM tenant_da.members",
        )
        .unwrap();
    go(&s, &format!("tenant restore da {da} --yes"), &[1]);
    go(&s, "tenant move da --to b --yes -o json", &[1]);
    db.client()
        .batch_execute("DROP SCHEMA reports CASCADE")
        .unwrap();
    go(&s, &format!("tenant import {da} --as da --name A"), &[1]);
    go(&s, "tenant clone da db1 --name A -o json", &[1]);
    go(
        &s,
        &format!("tenant import {junk} --as junk --name J"),
        &[2],
    );
    go(&s, &format!("tenant restore da {junk} --yes -o json"), &[2]);
    let failing = Source {
        via,
        t: s.t.clone().env("FAILPOINTS", "move.copied=return"),
        prefix: s.prefix.clone(),
        _cfg: None,
    };
    go(&failing, "tenant move da --to b --yes", &[3]);

    // Server b is down: its tenants fail, the errors naming the server.
    b.stop();
    go(
        &s,
        &format!("tenant export db1 -f {}", at("down.tenant")),
        &[3],
    );
    go(
        &s,
        &format!("tenant import {da} --as down --name D --server b"),
        &[3],
    );
    go(&s, "tenant clone db1 down --name D", &[3]);
    go(&s, "tenant clone da down --name D --server b -o json", &[3]);
    go(&s, &format!("tenant restore db1 {db1} --yes"), &[1, 3]);
    go(&s, &format!("backup --all --out {out} -o json"), &[4]);
    go(&s, &format!("backup --all --out {out}"), &[4]);
    go(&s, "tenant move da --to b --yes", &[3]);
    go(&s, "tenant move db1 --to default --yes -o json", &[1, 3]);
    go(&s, "tenant move db1 --to default --online --yes", &[1, 3]);
    go(&s, "metrics", &[0]);
    assert_eq!(s.serve_metrics(), Some(200));
    b.start_again();

    // The registry cannot be reached.
    let port = closed_port();
    let dead = match via {
        Via::PgPassword => {
            let gone = Parts {
                user: pg.user.clone(),
                host: "127.0.0.1".into(),
                port: port.to_string(),
                db: pg.db.clone(),
            };
            Source::configured(via, "", &gone, &servers)
        }
        _ => {
            let url = url_with(&pg, &format!("127.0.0.1:{port}"), &db.name);
            Source::configured(via, &url, &pg, &servers)
        }
    };
    for line in [
        format!("tenant export da -f {}", at("dead.tenant")),
        format!("tenant import {da} --as dead --name D"),
        "tenant clone da dead --name D".to_string(),
        format!("tenant restore da {da} --yes"),
        format!("backup --all --out {out}"),
        "tenant move da --to b --yes".to_string(),
        "metrics".to_string(),
        "metrics -o json".to_string(),
    ] {
        go(&dead, &line, &[3]);
    }
    let _ = dead.serve_metrics();

    // Nothing written anywhere holds it: files (archives' records included), the
    // registry and the ledger (`last_error`, the ledger's `error`: a failed entry is
    // there), and every table of either server.
    assert_eq!(files_with_secret(work.path()), Vec::<PathBuf>::new());
    assert_eq!(
        registry_columns_containing(&db, SENTINEL),
        Vec::<String>::new()
    );
    assert_eq!(rows_containing(&db, SENTINEL), Vec::<(String, i64)>::new());
    let errors: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM public.tenant_events WHERE status = 'failed' AND error <> ''",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        errors > 0,
        "the ledger should hold the failed move, with its error"
    );
    let on_b: i64 = b_client()
        .query_one(
            "SELECT count(*) FROM tenant_db1.members m WHERE strpos(m::text, $1) > 0",
            &[&SENTINEL],
        )
        .unwrap()
        .get(0);
    assert_eq!(on_b, 0);

    // Adopting an Alembic fleet, with the password in the adopted registry's URL.
    let fleet = TestDb::new();
    let one = original("first-church", "tenant_first_church");
    build_registry(&fleet, &[&one]);
    alembic_upgrade(&fleet, one.schema, R1);
    let (migrations, map_text) = migrations_from_alembic();
    let (_m, map) = map_file(&map_text);
    let (_b, bad_map) = map_file("\"nosuchrev\" = 99\n");
    let (map, bad_map) = (map.to_str().unwrap(), bad_map.to_str().unwrap());
    let fp = parts(&fleet.url);
    let a = Source::new(via, &url_with(&fp, &host_port, &fleet.name), &fp);
    let m = migrations.path().to_str().unwrap();
    go(
        &a,
        &format!("--migrations {m} adopt alembic --map {bad_map}"),
        &[3],
    );
    go(
        &a,
        &format!("--migrations {m} adopt alembic --map {map} --dry-run"),
        &[0],
    );
    go(
        &a,
        &format!("--migrations {m} adopt alembic --map {map} --dry-run -o json"),
        &[0],
    );
    go(
        &a,
        &format!("--migrations {m} adopt alembic --map {map} -o json"),
        &[0],
    );
    go(
        &a,
        &format!("--migrations {m} adopt alembic --map {map}"),
        &[0],
    );
    go(
        &dead,
        &format!("--migrations {m} adopt alembic --map {map}"),
        &[3],
    );
    assert_eq!(
        rows_containing(&fleet, SENTINEL),
        Vec::<(String, i64)>::new()
    );
}

#[test]
fn the_data_commands_metrics_and_adoption_never_show_the_password_given_by_flag() {
    exercise_data(Via::Flag);
}

#[test]
fn the_data_commands_metrics_and_adoption_never_show_the_password_given_by_tenantctl_database_url()
{
    exercise_data(Via::TenantctlEnv);
}

#[test]
fn the_data_commands_metrics_and_adoption_never_show_the_password_given_by_database_url() {
    exercise_data(Via::DatabaseUrlEnv);
}

#[test]
fn the_data_commands_metrics_and_adoption_never_show_the_password_given_by_the_config_file() {
    exercise_data(Via::ConfigFile);
}

#[test]
fn the_data_commands_metrics_and_adoption_never_show_the_password_given_by_pgpassword() {
    exercise_data(Via::PgPassword);
}
