//! libpq's conventions, proven against psql: with the same environment and files, psql
//! and tenantctl reach the same server, database and user on a throwaway cluster that
//! asks for SCRAM passwords: the password file (`~/.pgpass`, `PGPASSFILE`, `passfile=`,
//! and libpq's refusal of a file others may read), connection services (`PGSERVICE`,
//! `service=` in a URL and in a `key=value` string, `PGSERVICEFILE`, `PGSYSCONFDIR`),
//! `PGAPPNAME` (kept, with the run's tag after it) and `PGOPTIONS`; client certificates
//! (`cert` authentication: libpq's default files, `sslcert`/`sslkey`/`sslpassword`,
//! `PGSSLCERT`/`PGSSLKEY`, the key file's permissions); several hosts with
//! `target_session_attrs`; a libpq parameter tenantctl does not support is refused by name.

use std::path::Path;
use std::process::Command;

use crate::checks::expect_error;
use crate::cluster::{Cluster, ServerCert, Setup};
use crate::support::{bare, dir_with, scrub, Tenantctl};

const PASSWORD: &str = "s3cret-pw";

/// A cluster where `postgres` is trusted over TCP (for the test's own checks) and every
/// other role must give its SCRAM password; role `app` owns database `appdb`.
fn scram_cluster() -> Cluster {
    let c = Cluster::start(&Setup {
        server_cert: ServerCert::Localhost,
        ssl: false,
        hba: &[
            "local all all trust",
            "host all postgres 127.0.0.1/32 trust",
            "host all all 127.0.0.1/32 scram-sha-256",
        ],
    });
    let mut admin = postgres::Client::connect(&c.url("sslmode=disable"), postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!(
            "SET password_encryption = 'scram-sha-256'; \
             CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'"
        ))
        .unwrap();
    admin
        .batch_execute("CREATE DATABASE appdb OWNER app")
        .unwrap();
    c
}

/// What psql reaches with `env` (and nothing else from the test's environment):
/// `user|database|port`, or its error.
fn psql(env: &[(&str, String)], args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("psql");
    scrub(&mut cmd);
    cmd.env_remove("PGPASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args([
        "-X",
        "-w",
        "-tA",
        "-c",
        "SELECT current_user || '|' || current_database() || '|' || current_setting('port')",
    ]);
    cmd.args(args);
    let out = cmd.output().expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// tenantctl with `env`, and a migration that records who it ran as, where, and its
/// application_name and work_mem.
fn tenantctl_with(env: &[(&str, String)], migrations: &Path) -> Tenantctl {
    let mut t = bare().migrations(migrations);
    for (k, v) in env {
        t = t.env(k, v);
    }
    t
}

const SEEN: (&str, &str) = (
    "V1__seen.sql",
    "CREATE TABLE seen AS SELECT current_user::text AS usr, current_database()::text AS db, \
     current_setting('port') AS port, current_setting('application_name') AS app, \
     current_setting('work_mem') AS work_mem;\n",
);

/// Who the migration ran as: `user|database|port`, its application_name and work_mem.
fn seen(c: &Cluster) -> (String, String, String) {
    let mut admin = postgres::Client::connect(
        &format!(
            "postgres://postgres@127.0.0.1:{}/appdb?sslmode=disable",
            c.port
        ),
        postgres::NoTls,
    )
    .unwrap();
    let row = admin
        .query_one(
            "SELECT usr || '|' || db || '|' || port, app, work_mem FROM tenant_t.seen",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

fn private_file(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_password_file_is_read_as_psql_reads_it() {
    let c = scram_cluster();
    let m = dir_with(&[SEEN]);
    let home = tempfile::tempdir().unwrap();
    let pgpass = home.path().join(".pgpass");
    private_file(
        &pgpass,
        &format!(
            "# a comment\nelsewhere:*:*:app:wrong\n127.0.0.1:{}:appdb:app:{PASSWORD}\n",
            c.port
        ),
        0o600,
    );
    let url = format!("postgres://app@127.0.0.1:{}/appdb?sslmode=disable", c.port);
    let env = vec![("HOME", home.path().display().to_string())];
    let reached = psql(&env, &[&url]).expect("psql reaches the server with ~/.pgpass");
    assert_eq!(reached, format!("app|appdb|{}", c.port));

    let t = tenantctl_with(&env, m.path()).url(&url);
    t.run(&["init"]).expect(0);
    t.run(&["tenant", "create", "t", "--name", "T", "--migrate"])
        .expect(0);
    let (who, app, _) = seen(&c);
    assert_eq!(who, reached, "tenantctl reached what psql reached");
    assert!(app.starts_with("tenantctl "), "{app}");

    // PGPASSFILE names another file; passfile= in the URL wins over it.
    let other = home.path().join("other-pgpass");
    private_file(&other, &format!("*:*:*:app:{PASSWORD}\n"), 0o600);
    std::fs::remove_file(&pgpass).unwrap();
    let env2 = vec![
        ("HOME", home.path().display().to_string()),
        ("PGPASSFILE", other.display().to_string()),
    ];
    assert!(psql(&env2, &[&url]).is_ok());
    tenantctl_with(&env2, m.path())
        .url(&url)
        .run(&["status", "--all"])
        .expect(0);
    let passfile_url = format!("{url}&passfile={}", other.display());
    tenantctl_with(&env, m.path())
        .url(&passfile_url)
        .run(&["status", "--all"])
        .expect(0);

    // A file others may read is not used, by psql or tenantctl; tenantctl says why.
    private_file(&other, &format!("*:*:*:app:{PASSWORD}\n"), 0o644);
    let e = psql(&env2, &[&url]).unwrap_err();
    assert!(e.contains("group or world access"), "{e}");
    let run = tenantctl_with(&env2, m.path())
        .url(&url)
        .run(&["status", "--all"]);
    expect_error(
        &run,
        3,
        &["password", "group or world access", "chmod 0600"],
    );
    assert!(!run.stderr.contains(PASSWORD));
}

#[test]
fn a_connection_service_reaches_what_psql_reaches() {
    let c = scram_cluster();
    let m = dir_with(&[SEEN]);
    let home = tempfile::tempdir().unwrap();
    private_file(
        &home.path().join(".pg_service.conf"),
        &format!(
            "[other]\nhost=nowhere.invalid\n\n[church]\nhost=127.0.0.1\nport={}\ndbname=appdb\nuser=app\npassword={PASSWORD}\nsslmode=disable\noptions=-c work_mem=7MB\n",
            c.port
        ),
        0o600,
    );
    let env = vec![
        ("HOME", home.path().display().to_string()),
        ("PGSERVICE", "church".to_string()),
    ];
    let reached = psql(&env, &[]).expect("psql reaches the service");
    assert_eq!(reached, format!("app|appdb|{}", c.port));
    // PGSERVICE alone.
    let t = tenantctl_with(&env, m.path());
    t.run(&["init"]).expect(0);
    t.run(&["tenant", "create", "t", "--name", "T", "--migrate"])
        .expect(0);
    let (who, _, work_mem) = seen(&c);
    assert_eq!(who, reached);
    assert_eq!(
        work_mem, "7MB",
        "the service's options are the session's defaults"
    );
    // service= in a key=value string and in a URL, with a system-wide file.
    let etc = tempfile::tempdir().unwrap();
    std::fs::rename(
        home.path().join(".pg_service.conf"),
        etc.path().join("pg_service.conf"),
    )
    .unwrap();
    let env = vec![
        ("HOME", home.path().display().to_string()),
        ("PGSYSCONFDIR", etc.path().display().to_string()),
    ];
    assert!(psql(&env, &["service=church"]).is_ok());
    for url in ["service=church", "postgres://?service=church"] {
        tenantctl_with(&env, m.path())
            .url(url)
            .run(&["status", "--all"])
            .expect(0);
    }
    // A service defined nowhere, and one with a parameter tenantctl cannot use.
    expect_error(
        &tenantctl_with(&env, m.path())
            .url("service=nope")
            .run(&["status", "--all"]),
        3,
        &["definition of service \"nope\" not found"],
    );
    private_file(
        &etc.path().join("pg_service.conf"),
        "[church]\nhost=127.0.0.1\nsslcrl=/c.pem\n",
        0o600,
    );
    expect_error(
        &tenantctl_with(&env, m.path())
            .url("service=church")
            .run(&["status", "--all"]),
        3,
        &["sslcrl", "not supported"],
    );
}

#[test]
fn the_users_application_name_and_options_are_kept() {
    let c = scram_cluster();
    let m = dir_with(&[SEEN]);
    let url = format!(
        "postgres://app:{PASSWORD}@127.0.0.1:{}/appdb?sslmode=disable",
        c.port
    );
    let env = vec![
        ("PGAPPNAME", "church-deploy".to_string()),
        ("PGOPTIONS", "-c work_mem=9MB".to_string()),
    ];
    let t = tenantctl_with(&env, m.path()).url(&url);
    t.run(&["init"]).expect(0);
    t.run(&["tenant", "create", "t", "--name", "T", "--provision"])
        .expect(0);
    t.run(&["upgrade", "--all"]).expect(0);
    let (_, app, work_mem) = seen(&c);
    assert!(app.starts_with("church-deploy tenantctl "), "{app}");
    assert_eq!(work_mem, "9MB");
    // Parameters tenantctl cannot use are refused by name, never ignored.
    for bad in ["sslcrl=/c.pem", "krbsrvname=pg", "gssencmode=require"] {
        expect_error(
            &bare()
                .migrations(m.path())
                .url(&format!("{url}&{bad}"))
                .run(&["status", "--all"]),
            3,
            &[bad.split('=').next().unwrap(), "not supported"],
        );
    }
}

/// A cluster that asks role `app` for a client certificate signed by its CA (`cert`
/// authentication over TLS only); `postgres` is trusted for the test's own checks.
fn cert_cluster() -> Cluster {
    let c = Cluster::start_with(
        &Setup {
            server_cert: ServerCert::Localhost,
            ssl: true,
            hba: &[
                "local all all trust",
                "host all postgres 127.0.0.1/32 trust",
                "hostssl all app 127.0.0.1/32 cert",
            ],
        },
        "ssl_ca_file = 'ca.crt'",
    );
    let mut admin = postgres::Client::connect(&c.url("sslmode=disable"), postgres::NoTls).unwrap();
    admin.batch_execute("CREATE ROLE app LOGIN").unwrap();
    admin
        .batch_execute("CREATE DATABASE appdb OWNER app")
        .unwrap();
    c
}

#[test]
fn a_client_certificate_reaches_what_psql_reaches() {
    let c = cert_cluster();
    let m = dir_with(&[SEEN]);
    let home = tempfile::tempdir().unwrap();
    let dotpg = home.path().join(".postgresql");
    std::fs::create_dir(&dotpg).unwrap();
    let url = format!("postgres://app@127.0.0.1:{}/appdb?sslmode=require", c.port);
    let home_env = ("HOME", home.path().display().to_string());

    // Without a certificate, neither gets in.
    let env = vec![home_env.clone()];
    let e = psql(&env, &[&url]).unwrap_err();
    assert!(e.contains("certificate"), "{e}");
    let run = tenantctl_with(&env, m.path())
        .url(&url)
        .run(&["status", "--all"]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("certificate"), "{}", run.stderr);

    // libpq's defaults: ~/.postgresql/postgresql.crt and postgresql.key.
    c.client_cert(&dotpg, "postgresql", "app", None);
    let reached = psql(&env, &[&url]).expect("psql reaches the server with ~/.postgresql");
    assert_eq!(reached, format!("app|appdb|{}", c.port));
    let t = tenantctl_with(&env, m.path()).url(&url);
    t.run(&["init"]).expect(0);
    t.run(&["tenant", "create", "t", "--name", "T", "--migrate"])
        .expect(0);
    let (who, _, _) = seen(&c);
    assert_eq!(who, reached, "tenantctl reached what psql reached");

    // Named in the URL, with an encrypted key and its sslpassword; and by PGSSLCERT and
    // PGSSLKEY. The defaults are gone, so only the named files can get in.
    std::fs::remove_dir_all(&dotpg).unwrap();
    let (crt, key) = c.client_cert(home.path(), "deploy", "app", Some("k3y-pass"));
    let named = format!(
        "{url}&sslcert={}&sslkey={}&sslpassword=k3y-pass",
        crt.display(),
        key.display()
    );
    assert_eq!(psql(&env, &[&named]).unwrap(), reached);
    let run = tenantctl_with(&env, m.path())
        .url(&named)
        .run(&["status", "--all"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("k3y-pass") && !run.stdout.contains("k3y-pass"));
    let (crt2, key2) = c.client_cert(home.path(), "env", "app", None);
    let by_env = vec![
        home_env.clone(),
        ("PGSSLCERT", crt2.display().to_string()),
        ("PGSSLKEY", key2.display().to_string()),
    ];
    assert_eq!(psql(&by_env, &[&url]).unwrap(), reached);
    tenantctl_with(&by_env, m.path())
        .url(&url)
        .run(&["status", "--all"])
        .expect(0);

    // An encrypted key without its passphrase: tenantctl never prompts.
    let no_pw = format!("{url}&sslcert={}&sslkey={}", crt.display(), key.display());
    expect_error(
        &tenantctl_with(&env, m.path())
            .url(&no_pw)
            .run(&["status", "--all"]),
        3,
        &["is encrypted", "sslpassword"],
    );
    let wrong_pw = format!("{no_pw}&sslpassword=nope");
    expect_error(
        &tenantctl_with(&env, m.path())
            .url(&wrong_pw)
            .run(&["status", "--all"]),
        3,
        &["cannot be decrypted"],
    );

    // A key that is not the certificate's is named as such, with or without a root
    // certificate to verify the server against.
    let mismatched = format!(
        "{url}&sslcert={}&sslkey={}&sslpassword=k3y-pass",
        crt2.display(),
        key.display()
    );
    for u in [
        mismatched.clone(),
        format!(
            "{}&sslrootcert={}",
            mismatched.replace("sslmode=require", "sslmode=verify-ca"),
            c.certs.ca.display()
        ),
    ] {
        expect_error(
            &tenantctl_with(&env, m.path())
                .url(&u)
                .run(&["status", "--all"]),
            3,
            &["does not belong to the client certificate"],
        );
    }

    // A key others may read is refused by both, and tenantctl says how to fix it.
    std::fs::set_permissions(&key2, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let e = psql(&by_env, &[&url]).unwrap_err();
    assert!(e.contains("group or world access"), "{e}");
    expect_error(
        &tenantctl_with(&by_env, m.path())
            .url(&url)
            .run(&["status", "--all"]),
        3,
        &["group or world access", "chmod 600"],
    );

    // A certificate named but missing is an error, not a quiet connection without it.
    let missing = format!("{url}&sslcert={}/nope.crt", home.path().display());
    expect_error(
        &tenantctl_with(&env, m.path())
            .url(&missing)
            .run(&["status", "--all"]),
        3,
        &["sslcert", "does not exist"],
    );
}

#[test]
fn several_hosts_and_target_session_attrs_reach_what_psql_reaches() {
    // The first host only serves reads (as a standby does for `SHOW
    // transaction_read_only`); the second takes writes.
    let read_only = Cluster::trusting("default_transaction_read_only = on");
    let primary = Cluster::trusting("");
    for c in [&read_only, &primary] {
        let mut admin =
            postgres::Client::connect(&c.url("sslmode=disable"), postgres::NoTls).unwrap();
        // Two calls: one string is one implicit transaction, already read-only.
        admin
            .batch_execute("SET default_transaction_read_only = off")
            .unwrap();
        admin.batch_execute("CREATE DATABASE appdb").unwrap();
    }
    let m = dir_with(&[SEEN]);
    let env: Vec<(&str, String)> = Vec::new();
    let hosts = |attrs: &str| {
        format!(
            "host=127.0.0.1,127.0.0.1 port={},{} dbname=appdb user=postgres sslmode=disable \
             target_session_attrs={attrs}",
            read_only.port, primary.port
        )
    };

    // read-write skips the read-only server, for psql and tenantctl alike.
    let rw = hosts("read-write");
    let reached = psql(&env, &[&rw]).unwrap();
    assert_eq!(reached, format!("postgres|appdb|{}", primary.port));
    let t = tenantctl_with(&env, m.path()).url(&rw);
    t.run(&["init"]).expect(0);
    t.run(&["tenant", "create", "t", "--name", "T", "--migrate"])
        .expect(0);
    let mut on_primary = postgres::Client::connect(
        &format!(
            "postgres://postgres@127.0.0.1:{}/appdb?sslmode=disable",
            primary.port
        ),
        postgres::NoTls,
    )
    .unwrap();
    let row = on_primary
        .query_one(
            "SELECT usr || '|' || db || '|' || port FROM tenant_t.seen",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), reached);

    // any takes the first that answers: the read-only one, where tenantctl's registry
    // is absent, so it says so rather than writing anywhere.
    let any = hosts("any");
    assert_eq!(
        psql(&env, &[&any]).unwrap(),
        format!("postgres|appdb|{}", read_only.port)
    );
    let run = tenantctl_with(&env, m.path())
        .url(&any)
        .run(&["status", "--all"]);
    assert_ne!(run.code, 0, "{}", run.stdout);

    // PGTARGETSESSIONATTRS and a PGPORT list, as libpq reads them.
    let by_env = vec![
        ("PGHOST", "127.0.0.1,127.0.0.1".to_string()),
        ("PGPORT", format!("{},{}", read_only.port, primary.port)),
        ("PGDATABASE", "appdb".to_string()),
        ("PGUSER", "postgres".to_string()),
        ("PGSSLMODE", "disable".to_string()),
        ("PGTARGETSESSIONATTRS", "read-write".to_string()),
    ];
    assert_eq!(psql(&by_env, &[]).unwrap(), reached);
    tenantctl_with(&by_env, m.path())
        .run(&["status", "--all"])
        .expect(0);

    // A first host that takes the connection and never answers: each host has the
    // whole connect_timeout, so both go on to the next.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let hung_first = format!(
        "host=127.0.0.1,127.0.0.1 port={silent_port},{} dbname=appdb user=postgres \
         sslmode=disable connect_timeout=2",
        primary.port
    );
    assert_eq!(psql(&env, &[&hung_first]).unwrap(), reached);
    tenantctl_with(&env, m.path())
        .url(&hung_first)
        .run(&["status", "--all"])
        .expect(0);
    drop(silent);

    // Every host failing: the error names each, and why.
    let all_down = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} dbname=appdb user=postgres sslmode=disable \
         target_session_attrs=read-write",
        read_only.port,
        crate::support::closed_port()
    );
    expect_error(
        &tenantctl_with(&env, m.path())
            .url(&all_down)
            .run(&["status", "--all"]),
        3,
        &[
            "cannot connect to any of the 2 hosts",
            &format!("127.0.0.1:{}:", read_only.port),
        ],
    );

    // Values and parameters tenantctl cannot use are named, never a bare "malformed".
    for (bad, named) in [
        (
            "target_session_attrs=standby",
            "target_session_attrs=standby",
        ),
        ("connect_timeout=abc", "connect_timeout"),
        ("fallback_application_name=x", "fallback_application_name"),
        ("client_encoding=LATIN1", "client_encoding"),
        ("foo=bar", "foo"),
    ] {
        expect_error(
            &tenantctl_with(&env, m.path())
                .url(&format!("{rw} {bad}"))
                .run(&["status", "--all"]),
            3,
            &[named],
        );
    }

    // The first host down: both go on to the second.
    read_only.stop();
    assert_eq!(psql(&env, &[&any]).unwrap(), reached);
    tenantctl_with(&env, m.path())
        .url(&any)
        .run(&["status", "--all"])
        .expect(0);
}
