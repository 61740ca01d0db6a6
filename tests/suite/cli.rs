//! The command line's contract outside the happy path: `--help`/`--version`, usage errors
//! (exit 2), setup errors (exit 3: registry not initialised, bad config files, malformed
//! or unreachable database URLs, broken migrations directories), configuration
//! precedence end to end, and secrets never showing up in output.

use crate::{checks, common_json, support};
use checks::{create, expect_error, history_versions, relation_exists, tenant_count};
use common_json::{InitReport, RunReport};
use support::{bare, dir_with, ready, tenantctl, wait_at, Gate, TestDb};

const UNREACHABLE: &str = "postgres://postgres@127.0.0.1:1/nowhere";
const SECRET: &str = "s3ntinel-pw";

#[test]
fn help_and_version_go_to_stdout_and_unknown_flags_exit_2() {
    let t = bare();
    let run = t.run(&["--help"]);
    run.expect(0);
    assert!(run.stdout.contains("Usage: tenantctl"), "{}", run.stdout);
    assert!(run.stdout.contains("upgrade") && run.stdout.contains("Exit codes"));
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    let run = t.run(&["upgrade", "--help"]);
    run.expect(0);
    assert!(run.stdout.contains("--fail-fast") && run.stdout.contains("--concurrency"));
    // Options under headings, examples, and a usage line that shows the selection.
    for heading in [
        "\nSelection:\n",
        "\nRollout:\n",
        "\nConnection:\n",
        "\nOutput:\n",
        "\nExamples:\n",
    ] {
        assert!(run.stdout.contains(heading), "{heading:?}:\n{}", run.stdout);
    }
    assert!(
        run.stdout
            .contains("Usage: tenantctl upgrade (--all | --tenant <TENANT>..."),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("  tenantctl upgrade --all --dry-run\n"));
    let run = t.run(&["--version"]);
    run.expect(0);
    // The release, the commit and its date (`unknown` outside a git checkout).
    let version = run.stdout.trim();
    let prefix = format!("tenantctl {} (commit ", env!("CARGO_PKG_VERSION"));
    let rest = version
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{version}"));
    let (commit, date) = rest.split_once(", ").unwrap_or_else(|| panic!("{version}"));
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{version}"
    );
    assert!(
        date == "unknown" || (date.len() == 10 && date.as_bytes()[4] == b'-'),
        "{version}"
    );
    assert!(run.stderr.is_empty());

    for args in [
        &["--bogus"][..],
        &["upgrade", "--all", "--bogus"][..],
        &["frobnicate"][..],
        &["-o", "yaml", "current"][..],
        &["upgrade", "--all", "--concurrency", "0"][..],
        &["upgrade", "--all", "--tenant", "x"][..],
        &["tenant", "create", "demo"][..],
        &["tenant", "create", "demo", "--name", "D", "--target", "3"][..],
    ] {
        expect_error(&t.run(args), 2, &[]);
    }
    let run = t.run(&[]);
    run.expect(2);
    assert!(run.stdout.is_empty());
}

#[test]
fn the_revision_help_names_the_file_on_one_line() {
    let t = bare();
    for args in [
        &["revision", "--help"][..],
        &["revision", "-h"][..],
        &["--help"][..],
    ] {
        let run = t.run(args);
        run.expect(0);
        let line = run
            .stdout
            .lines()
            .find(|l| l.contains("Write the next migration file"))
            .unwrap_or_else(|| panic!("{args:?}: no description:\n{}", run.stdout));
        assert!(
            line.contains("V<head+1>__<message>.sql, and its .down.sql"),
            "{args:?}: the file name is broken up:\n{}",
            run.stdout
        );
    }
}

#[test]
fn usage_errors_exit_2_and_change_nothing() {
    let (db, t) = ready();
    create(&t, "demo", &["--provision"]);
    expect_error(&t.run(&["upgrade", "--tenant", "demo", "99"]), 2, &["99"]);
    expect_error(&t.run(&["upgrade", "--tenant", "demo", "abc"]), 2, &["abc"]);
    expect_error(&t.run(&["upgrade", "--tenant", "demo", "-5"]), 2, &[]);
    expect_error(&t.run(&["upgrade"]), 2, &["--all"]);
    expect_error(&t.run(&["provision"]), 2, &["--all"]);
    expect_error(&t.run(&["status"]), 2, &["--all"]);
    expect_error(&t.run(&["status", "-o", "json"]), 2, &[]);
    expect_error(
        &t.run(&[
            "tenant",
            "create",
            "x",
            "--name",
            "X",
            "--migrate",
            "--target",
            "42",
        ]),
        2,
        &["42"],
    );
    assert!(history_versions(&db, "tenant_demo").is_empty());
    assert_eq!(tenant_count(&db), 1);
}

#[test]
fn an_uninitialised_registry_is_a_setup_error_pointing_at_init() {
    let db = TestDb::new();
    let t = tenantctl(&db);
    for args in [
        &["tenant", "list"][..],
        &["status", "--all"][..],
        &["upgrade", "--all", "-o", "json"][..],
        &["current"][..],
        &["tenant", "create", "demo", "--name", "Demo", "--provision"][..],
    ] {
        expect_error(&t.run(args), 3, &["tenantctl init"]);
    }
    let mut c = db.client();
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'tenant%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let r: InitReport = t.run(&["init", "-o", "json"]).expect(0).json();
    assert_eq!(
        (r.schema.as_str(), r.applied.as_slice(), r.version),
        ("public", &[1, 2, 3, 4, 5, 6][..], 6)
    );
    // init is idempotent.
    let r: InitReport = t.run(&["init", "--json"]).expect(0).json();
    assert!(r.applied.is_empty());
    assert_eq!(r.version, 6);
    t.run(&["tenant", "list"]).expect(0);
}

#[test]
fn bad_config_files_are_setup_errors() {
    let db = TestDb::new();
    for (body, needle) in [
        ("[database]\nurll = \"postgres://x\"\n", "urll"),
        ("[bogus]\nkey = 1\n", "bogus"),
        ("this is = = not toml\n", "tenants.toml"),
        ("[run]\nconcurrency = 0\n", "concurrency"),
        ("[registry]\nschema = \"Bad-Name\"\n", "registry.schema"),
        (
            "[tenants]\nextra_search_path = [\"x;y\"]\n",
            "extra_search_path",
        ),
    ] {
        let dir = dir_with(&[("tenants.toml", body)]);
        let run = tenantctl(&db).cwd(dir.path()).run(&["init"]);
        expect_error(&run, 3, &[needle]);
    }
    // An explicit --config or TENANTCTL_CONFIG that does not exist.
    expect_error(
        &tenantctl(&db).run(&["--config", "/nonexistent/tenants.toml", "init"]),
        3,
        &["/nonexistent/tenants.toml"],
    );
    expect_error(
        &tenantctl(&db)
            .env("TENANTCTL_CONFIG", "/nonexistent/other.toml")
            .run(&["init"]),
        3,
        &["/nonexistent/other.toml"],
    );
    // Nothing ran.
    let exists: bool = db
        .client()
        .query_one("SELECT to_regclass('public.tenants') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!exists);
}

#[test]
fn malformed_and_unreachable_database_urls_are_setup_errors_without_passwords() {
    for url in [
        "postgres://postgres@127.0.0.1:notaport/x",
        "postgres://postgres@127.0.0.1:99999/x",
        "postgres://postgres@127.0.0.1/x?sslmode=verify-full",
    ] {
        expect_error(&bare().run(&["--database-url", url, "init"]), 3, &[]);
    }
    let run = bare().run(&["--database-url", UNREACHABLE, "init"]);
    expect_error(&run, 3, &["127.0.0.1:1"]);
    let run = bare().run(&[
        "tenant",
        "list",
        "-o",
        "json",
        "--database-url",
        UNREACHABLE,
    ]);
    expect_error(&run, 3, &["127.0.0.1"]);

    // Secrets: a password in the URL never appears, however the URL was given.
    let with_pw = format!("postgres://postgres:{SECRET}@127.0.0.1:1/x");
    let bad_with_pw = format!("postgres://postgres:{SECRET}@127.0.0.1:notaport/x");
    let create = ["tenant", "create", "demo", "--name", "Demo", "--provision"];
    let mut runs = vec![
        bare().run(&[&["--database-url", with_pw.as_str()][..], &create[..]].concat()),
        bare()
            .env("TENANTCTL_DATABASE_URL", &with_pw)
            .run(&[&create[..], &["-o", "json", "-v"][..]].concat()),
        bare().env("DATABASE_URL", &with_pw).run(&create),
        bare().run(&[&["--database-url", bad_with_pw.as_str()][..], &create[..]].concat()),
    ];
    let conf = dir_with(&[(
        "tenants.toml",
        &format!("[database]\nurl = \"{with_pw}\"\n"),
    )]);
    runs.push(bare().cwd(conf.path()).run(&create));
    for run in &runs {
        expect_error(run, 3, &[]);
        assert!(
            !run.stderr.contains(SECRET) && !run.stdout.contains(SECRET),
            "the password leaked:\n{}",
            run.stderr
        );
    }
    assert!(runs[0].stderr.contains("127.0.0.1"), "{}", runs[0].stderr);

    // --help shows that the variable is set, never its value.
    for args in [
        &["--help"][..],
        &["upgrade", "--help"][..],
        &["tenant", "create", "--help"][..],
    ] {
        let run = bare()
            .env("TENANTCTL_DATABASE_URL", &with_pw)
            .env("DATABASE_URL", &with_pw)
            .run(args);
        run.expect(0);
        assert!(!run.stdout.contains(SECRET), "{}", run.stdout);
        assert!(!run.stderr.contains(SECRET));
    }
}

/// (user, password, host, port, database) of a `postgres://` URL.
fn url_parts(url: &str) -> (String, Option<String>, String, String, String) {
    let rest = url.strip_prefix("postgres://").expect("a postgres:// URL");
    let rest = rest.split('?').next().unwrap();
    let (auth, rest) = rest.rsplit_once('@').expect("a user in the test URL");
    let (user, password) = match auth.split_once(':') {
        Some((u, p)) => (u.to_string(), Some(p.to_string())),
        None => (auth.to_string(), None),
    };
    let (hostport, name) = rest.split_once('/').unwrap();
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
    (user, password, host.into(), port.into(), name.into())
}

#[test]
fn database_url_precedence_is_flag_then_env_then_file() {
    let db = TestDb::new();
    // The flag beats TENANTCTL_DATABASE_URL...
    let t = tenantctl(&db).env("TENANTCTL_DATABASE_URL", UNREACHABLE);
    expect_error(&t.run(&["init"]), 3, &["127.0.0.1:1"]);
    t.run(&["--database-url", &db.url, "init"]).expect(0);
    // ...which beats DATABASE_URL...
    bare()
        .env("TENANTCTL_DATABASE_URL", &db.url)
        .env("DATABASE_URL", UNREACHABLE)
        .run(&["tenant", "list"])
        .expect(0);
    // ...which is used when nothing else is set...
    let r: InitReport = bare()
        .env("DATABASE_URL", &db.url)
        .run(&["init", "-o", "json"])
        .expect(0)
        .json();
    assert!(r.applied.is_empty(), "init ran against another database");
    // ...and the libpq variables are the last resort.
    let (user, password, host, port, name) = url_parts(&db.url);
    let mut libpq = bare()
        .env("PGHOST", &host)
        .env("PGPORT", &port)
        .env("PGUSER", &user)
        .env("PGDATABASE", &name);
    if let Some(pw) = &password {
        libpq = libpq.env("PGPASSWORD", pw);
    }
    libpq.run(&["tenant", "list"]).expect(0);
    expect_error(
        &bare()
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", "1")
            .run(&["tenant", "list"]),
        3,
        &["127.0.0.1:1"],
    );
    // DATABASE_URL also beats the config file.
    let conf = dir_with(&[(
        "tenants.toml",
        &format!("[database]\nurl = \"{}\"\n", db.url),
    )]);
    bare().cwd(conf.path()).run(&["tenant", "list"]).expect(0);
    expect_error(
        &bare()
            .cwd(conf.path())
            .env("DATABASE_URL", UNREACHABLE)
            .run(&["tenant", "list"]),
        3,
        &["127.0.0.1:1"],
    );
}

#[test]
fn the_config_file_in_the_cwd_or_named_is_used_with_paths_relative_to_it() {
    let db = TestDb::new();
    let conf = dir_with(&[(
        "tenants.toml",
        "[registry]\nschema = \"reg\"\n\n[migrations]\ndir = \"migs\"\n\n[tenants]\nschema_prefix = \"t_\"\n",
    )]);
    std::fs::create_dir(conf.path().join("migs")).unwrap();
    std::fs::write(
        conf.path().join("migs").join("V1__only.sql"),
        "CREATE TABLE only_one (id int);",
    )
    .unwrap();
    // Picked up from the working directory (no TENANTCTL_MIGRATIONS: bare()).
    let t = bare().env("DATABASE_URL", &db.url).cwd(conf.path());
    let r: InitReport = t.run(&["init", "-o", "json"]).expect(0).json();
    assert_eq!(r.schema, "reg");
    assert!(relation_exists(&db, "reg", "tenants"));
    assert!(!relation_exists(&db, "public", "tenants"));
    let c = create(&t, "demo", &["--migrate"]);
    assert_eq!(c.tenant.schema_name, "t_demo");
    assert_eq!(c.tenant.current_revision, Some(1));
    assert!(relation_exists(&db, "t_demo", "only_one"));
    // The registry schema cannot hold a tenant.
    expect_error(
        &t.run(&["tenant", "create", "x", "--name", "X", "--schema", "reg"]),
        2,
        &["reg"],
    );
    // TENANTCTL_MIGRATIONS beats migrations.dir from the file.
    let h: common_json::History = t
        .env(
            "TENANTCTL_MIGRATIONS",
            support::example_migrations().to_str().unwrap(),
        )
        .run(&["history", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(h.migrations.len(), 6);
    let t = bare().env("DATABASE_URL", &db.url).cwd(conf.path());
    let h: common_json::History = t.run(&["history", "-o", "json"]).expect(0).json();
    assert_eq!(h.migrations.len(), 1);
    // Named with -c from elsewhere: same registry, same migrations.
    let conf_file = conf.path().join("tenants.toml");
    let elsewhere = bare().env("DATABASE_URL", &db.url);
    let r: RunReport = elsewhere
        .run(&[
            "-c",
            conf_file.to_str().unwrap(),
            "upgrade",
            "--all",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    assert_eq!(r.of("demo").status, "up_to_date");
    let r: RunReport = elsewhere
        .env("TENANTCTL_CONFIG", conf_file.to_str().unwrap())
        .run(&["upgrade", "--tenant", "t_demo", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("demo").status, "up_to_date");
    let elsewhere = bare().env("DATABASE_URL", &db.url);
    // Without it, the default registry (public) is not initialised.
    expect_error(&elsewhere.run(&["tenant", "list"]), 3, &["tenantctl init"]);
}

#[test]
fn broken_migrations_directories_are_setup_errors_before_anything_runs() {
    let (db, t) = ready();
    create(&t, "demo", &["--provision"]);
    let cases: Vec<(tempfile::TempDir, &str)> = vec![
        (
            dir_with(&[
                ("V1__ok.sql", "CREATE TABLE a (id int);"),
                ("V2_bad_name.sql", "SELECT 1;"),
            ]),
            "V2_bad_name.sql",
        ),
        (
            dir_with(&[
                ("V1__ok.sql", "CREATE TABLE a (id int);"),
                ("setup.sql", "SELECT 1;"),
            ]),
            "setup.sql",
        ),
        (
            dir_with(&[
                ("V1__ok.sql", "CREATE TABLE a (id int);"),
                ("V2__one.sql", "SELECT 1;"),
                ("V2__two.sql", "SELECT 2;"),
            ]),
            "V2__two.sql",
        ),
        (
            dir_with(&[
                ("V1__ok.sql", "CREATE TABLE a (id int);"),
                ("V3__orphan.down.sql", "SELECT 1;"),
            ]),
            "V3__orphan.down.sql",
        ),
        (
            dir_with(&[
                ("V1__ok.sql", "CREATE TABLE a (id int);"),
                ("V2__upper.SQL", "SELECT 1;"),
            ]),
            "V2__upper.SQL",
        ),
    ];
    for (dir, file) in &cases {
        let t = support::tenantctl(&db).migrations(dir.path());
        expect_error(&t.run(&["upgrade", "--all"]), 3, &[file]);
        expect_error(&t.run(&["status", "--all", "-o", "json"]), 3, &[file]);
        expect_error(
            &t.run(&["tenant", "create", "new-one", "--name", "N", "--migrate"]),
            3,
            &[file],
        );
    }
    let missing = db.name.clone() + "-no-such-dir";
    let t2 = support::tenantctl(&db)
        .migrations(std::path::Path::new(&format!("/nonexistent/{missing}")));
    expect_error(&t2.run(&["upgrade", "--all"]), 3, &[&missing]);
    // Nothing was applied or registered.
    assert!(history_versions(&db, "tenant_demo").is_empty());
    assert!(!relation_exists(&db, "tenant_demo", "a"));
    assert_eq!(tenant_count(&db), 1);
    // Other files are ignored.
    let fine = dir_with(&[
        ("V1__ok.sql", "CREATE TABLE a (id int);"),
        ("README.md", "notes"),
        (".gitkeep", ""),
    ]);
    let r: RunReport = support::tenantctl(&db)
        .migrations(fine.path())
        .run(&["upgrade", "--all", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("demo").applied, [1]);
}

#[test]
fn history_table_and_statement_timeout_come_from_the_config() {
    // V2 waits at a gate held for the whole run: only the statement timeout ends it.
    const GATE: i64 = 7016;
    let (db, t) = ready();
    let slow = format!("CREATE TABLE slow (id int);\n{}", wait_at(GATE));
    let migs = dir_with(&[
        ("V1__quick.sql", "CREATE TABLE quick (id int);"),
        ("V2__slow.sql", &slow),
    ]);
    let conf = dir_with(&[(
        "tenants.toml",
        "[migrations]\ntable = \"schema_versions\"\n\n[run]\nstatement_timeout = \"1s\"\n",
    )]);
    let t = t.migrations(migs.path()).cwd(conf.path());
    let mut gate = Gate::advisory(&db.url, GATE);
    let run = t.run(&[
        "tenant",
        "create",
        "demo",
        "--name",
        "Demo",
        "--migrate",
        "-o",
        "json",
    ]);
    run.expect(1);
    // The timeout ended the wait: nothing of the run waits at the gate any more.
    assert!(gate.blocked().is_empty(), "{:?}", gate.blocked());
    gate.open();
    let c: common_json::Created = run.json();
    assert_eq!(c.tenant.current_revision, Some(1));
    assert_eq!(c.tenant.status, "failed");
    assert!(c.message.contains("statement timeout"), "{}", c.message);
    assert!(relation_exists(&db, "tenant_demo", "schema_versions"));
    assert!(!relation_exists(
        &db,
        "tenant_demo",
        "refinery_schema_history"
    ));
    assert!(!relation_exists(&db, "tenant_demo", "slow"));
    let s: common_json::TenantStatus = t
        .run(&["status", "--tenant", "demo", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(s.current_revision, Some(1));
    assert_eq!(s.pending_versions(), [2]);
}

/// Every duration setting out of its range is refused with exit 3, naming the key and
/// the range, before anything connects: a `connect_timeout` far past any instant made a
/// run panic at its first refused connection ("overflow when adding duration to
/// instant"). The longest value of each is accepted and used.
#[test]
fn a_duration_setting_out_of_its_range_is_refused_naming_the_key_and_the_range() {
    let (db, t) = ready();
    // A tenant on a server that refuses connections: its session's connection is retried
    // for `connect_timeout`.
    let gone = format!(
        "postgres://postgres@127.0.0.1:{}/nowhere",
        support::closed_port()
    );
    db.client()
        .batch_execute(
            "INSERT INTO public.tenants (tenant_name, domain, schema_name, api_key_hash, api_key_prefix, server) \
             VALUES ('Gone', 'gone', 'tenant_gone', repeat('0', 64), 'tk_gone', 'gone')",
        )
        .unwrap();
    let far = "300000000000y";
    for (section, key, value, range) in [
        ("database", "connect_timeout", far, "1s to 1h"),
        ("database", "connect_timeout", "0", "1s to 1h"),
        ("database", "connect_timeout", "61m", "1s to 1h"),
        ("servers.gone", "connect_timeout", far, "1s to 1h"),
        ("servers.gone", "connect_timeout", "999ms", "1s to 1h"),
        ("run", "lock_timeout", far, "between 1ms and 2147483647ms"),
        (
            "run",
            "statement_timeout",
            "2147483648ms",
            "between 1ms and 2147483647ms",
        ),
        ("run", "lock_wait", far, "between 1ms and 2147483647ms"),
        ("run", "lock_wait", "500us", "between 1ms and 2147483647ms"),
        ("run", "lock_retry_delay", "31s", "0 to 30s"),
        ("run", "lock_retry_delay", far, "0 to 30s"),
        ("run", "read_timeout", far, "1s to 1h"),
    ] {
        let setting = format!("{key} = \"{value}\"\n");
        let (servers, other) = if section == "servers.gone" {
            (setting, String::new())
        } else {
            (String::new(), format!("[{section}]\n{setting}"))
        };
        let conf = dir_with(&[(
            "tenants.toml",
            &format!("{other}\n[servers.gone]\nurl = \"{gone}\"\n{servers}"),
        )]);
        let run = t.clone().cwd(conf.path()).run(&["upgrade", "--all"]);
        assert!(
            run.code != 101 && !run.stderr.contains("panicked"),
            "{section}.{key} = {value:?} panicked:\n{}",
            run.stderr
        );
        expect_error(&run, 3, &[&format!("{section}.{key}"), range]);
    }

    // The longest of each is taken, and PostgreSQL takes what it is sent of them.
    let conf = dir_with(&[(
        "tenants.toml",
        "[database]\nconnect_timeout = \"1h\"\n\n\
         [run]\nlock_timeout = \"2147483647ms\"\nstatement_timeout = \"2147483647ms\"\n\
         lock_wait = \"2147483647ms\"\nlock_retry_delay = \"30s\"\nread_timeout = \"1h\"\n",
    )]);
    let t = t.cwd(conf.path());
    create(&t, "longest", &["--provision", "--migrate"]);
    assert_eq!(history_versions(&db, "tenant_longest").len(), 6);
    t.run(&["downgrade", "--tenant", "longest", "-1", "--yes"])
        .expect(0);
    t.run(&["upgrade", "--tenant", "longest"]).expect(0);
}

/// Without --config, TENANTCTL_CONFIG or ./tenants.toml, the user's config folder is
/// read (XDG_CONFIG_HOME, else ~/.config), so a command run elsewhere knows the servers.
#[test]
fn the_users_config_folder_is_read_from_any_directory() {
    let (_db, t) = crate::support::ready();
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join(".config/tenantctl");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("tenants.toml"),
        "[servers.eu2]\nurl = \"postgres://u@eu2.invalid/app\"\nweight = 0\n",
    )
    .unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let t = t
        .env("HOME", &home.path().display().to_string())
        .cwd(elsewhere.path());
    let shown: serde_json::Value = t.run(&["config", "show", "-o", "json"]).expect(0).json();
    assert_eq!(
        shown["config_file"].as_str(),
        Some(dir.join("tenants.toml").display().to_string().as_str())
    );
    assert!(shown["servers"].to_string().contains("eu2"), "{shown}");
    // A directory named tenants.toml is an error naming it, never quietly skipped.
    std::fs::create_dir(elsewhere.path().join("tenants.toml")).unwrap();
    let run = t.run(&["config", "show"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("tenants.toml"), "{}", run.stderr);
    std::fs::remove_dir(elsewhere.path().join("tenants.toml")).unwrap();
    // ./tenants.toml wins over it.
    std::fs::write(elsewhere.path().join("tenants.toml"), "").unwrap();
    let shown: serde_json::Value = t.run(&["config", "show", "-o", "json"]).expect(0).json();
    assert!(!shown["servers"].to_string().contains("eu2"), "{shown}");
}

/// `config show` on a configuration that does not load shows what it could read (a
/// URL without its password), the file, and the error with its place; exit 3. Other
/// commands name the nearest key for a misspelt one.
#[test]
fn config_show_on_a_broken_configuration_shows_what_it_could_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tenants.toml"),
        "[database]\nurl = \"postgres://app:hunter2@db1/app\"\n\n[run]\nconcurency = 4\n",
    )
    .unwrap();
    let t = crate::support::bare().cwd(dir.path());
    let run = t.run(&["config", "show", "-o", "json"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        doc["config_file"].as_str(),
        Some(
            dir.path()
                .join("tenants.toml")
                .display()
                .to_string()
                .as_str()
        )
    );
    assert_eq!(doc["read"][0]["key"], "database.url");
    assert_eq!(doc["read"][0]["value"], "\"postgres://app:****@db1/app\"");
    assert_eq!(doc["read"][1]["key"], "run.concurency");
    let error = doc["error"].as_str().unwrap();
    assert!(error.contains("line 5, column 1"), "{error}");
    assert!(error.contains("did you mean `concurrency`?"), "{error}");
    assert!(
        run.stderr.contains("did you mean `concurrency`?"),
        "{}",
        run.stderr
    );
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains("hunter2"), "{text}");
    }
    let run = t.run(&["config", "show"]);
    assert_eq!(run.code, 3);
    assert!(run.stdout.contains("run.concurency"), "{}", run.stdout);
    assert!(run.stdout.contains("does not load"), "{}", run.stdout);
    assert!(!run.stdout.contains("hunter2"));
    let run = t.run(&["status", "--all"]);
    assert_eq!(run.code, 3);
    assert!(
        run.stderr.contains("did you mean `concurrency`?"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

/// A config file of thousands of templates is shown at once, each long value cut in
/// the text table (whole in JSON); a file over 1 MiB is refused at once, naming its size.
#[test]
fn a_huge_config_file_is_shown_quickly_or_refused_by_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("[tenants.templates]\n");
    for i in 0..5000 {
        text.push_str(&format!("type{i} = \"tpl-{i}\"\n"));
    }
    std::fs::write(dir.path().join("tenants.toml"), &text).unwrap();
    let t = crate::support::bare()
        .cwd(dir.path())
        .deadline(std::time::Duration::from_secs(20));
    let run = t.run(&["config", "show"]);
    run.expect(0);
    assert!(
        run.stdout.contains("-o json shows it whole"),
        "{}",
        run.stdout
    );
    let shown: serde_json::Value = t.run(&["config", "show", "-o", "json"]).expect(0).json();
    assert!(shown.to_string().contains("tpl-4999"));
    text.push_str(&"# padding\n".repeat(120_000));
    std::fs::write(dir.path().join("tenants.toml"), &text).unwrap();
    let run = t.run(&["status", "--all"]);
    expect_error(&run, 3, &["a config file holds at most 1048576 bytes"]);
}

/// tenants.example.toml, copied as it is, works against a local server (its URL and
/// migrations directory overridden by the environment, as a newcomer would set them).
#[test]
fn the_example_config_works_as_copied() {
    let (_db, t) = crate::support::ready();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tenants.example.toml"),
        dir.path().join("tenants.toml"),
    )
    .unwrap();
    let t = t.cwd(dir.path());
    t.run(&["config", "show"]).expect(0);
    t.run(&[
        "tenant",
        "create",
        "copied",
        "--name",
        "Copied",
        "--migrate",
    ])
    .expect(0);
    t.run(&["status", "--all"]).expect(0);
    t.run(&["check"]).expect(0);
}

/// `manpages DIR` writes a page for tenantctl and each command, from the same definitions
/// as --help, with the same headings.
#[test]
fn man_pages_are_written_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let run = crate::support::bare().run(&["manpages", out.to_str().unwrap()]);
    run.expect(0);
    for page in [
        "tenantctl.1",
        "tenantctl-upgrade.1",
        "tenantctl-tenant-create.1",
    ] {
        let text =
            std::fs::read_to_string(out.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH "), "{page}");
    }
    let upgrade = std::fs::read_to_string(out.join("tenantctl-upgrade.1")).unwrap();
    assert!(
        upgrade.contains(".SH SELECTION") && upgrade.contains("\\-\\-canary"),
        "{upgrade}"
    );
    assert_eq!(
        run.stdout.lines().count(),
        std::fs::read_dir(&out).unwrap().count()
    );
}
