//! TLS against throwaway servers of the tests' own (the shared server is never
//! reconfigured): a server that accepts only `hostssl` connections with a certificate
//! signed by a test CA, and a server without TLS. Covers `sslmode` disable/prefer/require/
//! verify-ca/verify-full, `sslrootcert` verification (the right CA, an unrelated one, a
//! certificate for another host name, libpq's default `~/.postgresql/root.crt`,
//! `sslrootcert=system`), the URL's query against the config file's `[database]`
//! settings, and `PGSSLMODE`/`PGSSLROOTCERT`.

use crate::{checks, cluster, common_json, support};
use std::path::Path;

use checks::expect_error;
use cluster::{Cluster, ServerCert, Setup};
use common_json::{ConfigShown, FleetStatus, RunReport};
use support::{bare, dir_with, Run, Tenantctl};

fn run(t: &Tenantctl, url: &str, args: &[&str]) -> Run {
    let mut all = vec!["--database-url", url];
    all.extend_from_slice(args);
    t.run(&all)
}

/// A TLS failure names the host and says what went wrong with TLS.
fn expect_tls_error(run: &Run, host_port: &str) {
    expect_error(run, 3, &[host_port]);
    let lower = run.stderr.to_lowercase();
    assert!(
        ["certificate", "tls", "ssl"]
            .iter()
            .any(|w| lower.contains(w)),
        "stderr should say the certificate / TLS is the problem:\n{}",
        run.stderr
    );
}

fn write_config(dir: &Path, body: &str) {
    std::fs::write(dir.join("tenants.toml"), body).unwrap();
}

#[test]
fn hostssl_only_server_verifies_the_ca_and_refuses_plaintext() {
    let c = Cluster::start(&Setup {
        server_cert: ServerCert::Localhost,
        ssl: true,
        hba: &["hostssl all all 127.0.0.1/32 trust"],
    });
    let host_port = format!("127.0.0.1:{}", c.port);
    let ca = c.certs.ca.display().to_string();
    let other = c.certs.other_ca.display().to_string();
    let migrations = dir_with(&[("V1__one.sql", "CREATE TABLE one (id int);\n")]);
    let t = bare().migrations(migrations.path());

    // (a) require + the CA that signed the server's certificate.
    let good = c.url(&format!("sslmode=require&sslrootcert={ca}"));
    let r = run(&t, &good, &["init"]);
    r.expect(0);
    assert!(r.stdout.contains("registry"), "{}", r.stdout);
    // Every connection of a run goes through TLS: the main one and each tenant's session
    // (the server accepts nothing else).
    run(
        &t,
        &good,
        &["tenant", "create", "tls-a", "--name", "A", "--migrate"],
    )
    .expect(0);
    run(
        &t,
        &good,
        &["tenant", "create", "tls-b", "--name", "B", "--provision"],
    )
    .expect(0);
    let r: RunReport = run(&t, &good, &["upgrade", "--all", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("tls-a").status, "up_to_date", "{r:#?}");
    assert_eq!(r.of("tls-b").status, "ok", "{r:#?}");
    assert_eq!(r.of("tls-b").applied, [1]);
    let s: FleetStatus = run(&t, &good, &["status", "--all", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!((s.summary.total, s.summary.at_head), (2, 2), "{s:#?}");

    // (b) an unrelated CA: the chain does not verify.
    let bad = c.url(&format!("sslmode=require&sslrootcert={other}"));
    expect_tls_error(&run(&t, &bad, &["init"]), &host_port);
    expect_tls_error(
        &run(&t, &bad, &["status", "--all", "-o", "json"]),
        &host_port,
    );

    // A missing or non-PEM sslrootcert is a setup error naming the file.
    let missing = c.dir().join("nope.pem");
    let r = run(
        &t,
        &c.url(&format!(
            "sslmode=require&sslrootcert={}",
            missing.display()
        )),
        &["init"],
    );
    expect_error(&r, 3, &["nope.pem"]);
    let garbage = c.dir().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let r = run(
        &t,
        &c.url(&format!(
            "sslmode=require&sslrootcert={}",
            garbage.display()
        )),
        &["init"],
    );
    expect_error(&r, 3, &["garbage.pem"]);

    // (c) plaintext against a hostssl-only server: pg_hba rejects it.
    let r = run(&t, &c.url("sslmode=disable"), &["init"]);
    expect_error(&r, 3, &[&host_port]);
    assert!(
        r.stderr.contains("no encryption") || r.stderr.contains("pg_hba"),
        "the server's reason should be shown:\n{}",
        r.stderr
    );

    // (d) prefer without a root certificate: encrypted (the server takes nothing else),
    // not verified. require without one: the same.
    for mode in ["prefer", "require"] {
        let url = c.url(&format!("sslmode={mode}"));
        run(&t, &url, &["init"]).expect(0);
        let r: RunReport = run(&t, &url, &["upgrade", "--all", "-o", "json"])
            .expect(0)
            .json();
        assert_eq!(r.summary.up_to_date, 2, "{mode}: {r:#?}");
    }
    // No sslmode at all defaults to prefer.
    run(&t, &c.url(""), &["tenant", "list"]).expect(0);

    // (f) the TLS settings through the config file, sslrootcert relative to its folder;
    // run from another directory so a path relative to the cwd would not be found.
    let cfg = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::copy(&c.certs.ca, cfg.path().join("ca.pem")).unwrap();
    std::fs::copy(&c.certs.other_ca, cfg.path().join("other.pem")).unwrap();
    let cfg_file = cfg.path().join("tenants.toml");
    let cfg_arg = cfg_file.display().to_string();
    let from_file = bare().migrations(migrations.path()).cwd(elsewhere.path());
    write_config(
        cfg.path(),
        &format!(
            "[database]\nurl = \"{}\"\nsslmode = \"require\"\nsslrootcert = \"ca.pem\"\n",
            c.url("")
        ),
    );
    let r = from_file.run(&["-c", &cfg_arg, "init"]);
    r.expect(0);
    from_file
        .run(&["-c", &cfg_arg, "upgrade", "--all"])
        .expect(0);
    // The file's sslrootcert is really used: an unrelated CA there fails.
    write_config(
        cfg.path(),
        &format!(
            "[database]\nurl = \"{}\"\nsslmode = \"require\"\nsslrootcert = \"other.pem\"\n",
            c.url("")
        ),
    );
    expect_tls_error(&from_file.run(&["-c", &cfg_arg, "init"]), &host_port);
    // ... unless the URL's query names another: the URL wins.
    write_config(
        cfg.path(),
        &format!(
            "[database]\nurl = \"{}\"\nsslmode = \"require\"\nsslrootcert = \"other.pem\"\n",
            c.url(&format!("sslrootcert={ca}"))
        ),
    );
    from_file.run(&["-c", &cfg_arg, "init"]).expect(0);
    // The file's sslmode = disable is refused by the server...
    write_config(
        cfg.path(),
        &format!(
            "[database]\nurl = \"{}\"\nsslmode = \"disable\"\n",
            c.url("")
        ),
    );
    expect_error(&from_file.run(&["-c", &cfg_arg, "init"]), 3, &[&host_port]);
    // ... and the URL's sslmode wins over it.
    write_config(
        cfg.path(),
        &format!(
            "[database]\nurl = \"{}\"\nsslmode = \"disable\"\n",
            c.url("sslmode=require")
        ),
    );
    from_file.run(&["-c", &cfg_arg, "init"]).expect(0);
    // A --database-url flag's own sslmode wins over the file too.
    write_config(
        cfg.path(),
        &format!(
            "[database]\nurl = \"{}\"\nsslmode = \"require\"\n",
            c.url("")
        ),
    );
    expect_error(
        &from_file.run(&[
            "-c",
            &cfg_arg,
            "--database-url",
            &c.url("sslmode=disable"),
            "init",
        ]),
        3,
        &[&host_port],
    );

    // PGSSLMODE applies without a URL (libpq variables) and is ignored with one.
    let pg = |mode: &str| {
        bare()
            .migrations(migrations.path())
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", &c.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", "postgres")
            .env("PGSSLMODE", mode)
    };
    expect_error(&pg("disable").run(&["init"]), 3, &[&host_port]);
    pg("require").run(&["init"]).expect(0);
    pg("disable")
        .env("TENANTCTL_DATABASE_URL", &c.url("sslmode=require"))
        .run(&["init"])
        .expect(0);
}

#[test]
fn server_without_tls_prefer_falls_back_and_require_fails() {
    let c = Cluster::start(&Setup {
        server_cert: ServerCert::Localhost,
        ssl: false,
        hba: &["host all all 127.0.0.1/32 trust"],
    });
    let host_port = format!("127.0.0.1:{}", c.port);
    let ca = c.certs.ca.display().to_string();
    let t = bare();

    // (e) prefer: the server says no to TLS, so plaintext.
    run(&t, &c.url("sslmode=prefer"), &["init"]).expect(0);
    run(&t, &c.url(""), &["tenant", "list", "-o", "json"]).expect(0);
    run(&t, &c.url("sslmode=disable"), &["init"]).expect(0);

    // require: never plaintext, with or without a root certificate.
    for query in [
        "sslmode=require".to_string(),
        format!("sslmode=require&sslrootcert={ca}"),
    ] {
        let r = run(&t, &c.url(&query), &["init"]);
        expect_tls_error(&r, &host_port);
    }
    // The config file's require holds as well.
    let cfg = tempfile::tempdir().unwrap();
    write_config(
        cfg.path(),
        &format!(
            "[database]\nurl = \"{}\"\nsslmode = \"require\"\n",
            c.url("")
        ),
    );
    expect_tls_error(&bare().cwd(cfg.path()).run(&["init"]), &host_port);
}

/// `postgres://postgres@HOST:PORT/postgres?QUERY`, for a host other than 127.0.0.1.
fn url_for(host: &str, c: &Cluster, query: &str) -> String {
    format!("postgres://postgres@{host}:{}/postgres?{query}", c.port)
}

#[test]
fn verify_full_checks_the_host_name_and_verify_ca_only_the_chain() {
    let hba: &[&str] = &["hostssl all all 127.0.0.1/32 trust"];
    let right = Cluster::start(&Setup {
        ssl: true,
        server_cert: ServerCert::Localhost,
        hba,
    });
    // Signed by its own test CA, issued for wrong.example only.
    let wrong = Cluster::start(&Setup {
        ssl: true,
        server_cert: ServerCert::WrongHost,
        hba,
    });
    let migrations = dir_with(&[("V1__one.sql", "CREATE TABLE one (id int);\n")]);
    let t = bare().migrations(migrations.path());
    let ca = right.certs.ca.display().to_string();
    let other = right.certs.other_ca.display().to_string();
    let wrong_ca = wrong.certs.ca.display().to_string();
    let right_hp = format!("127.0.0.1:{}", right.port);
    let wrong_hp = format!("127.0.0.1:{}", wrong.port);

    // The right certificate: verify-full by IP address (IP SAN) and by name (DNS SAN),
    // for the main connection and every tenant session.
    let full = right.url(&format!("sslmode=verify-full&sslrootcert={ca}"));
    run(&t, &full, &["init"]).expect(0);
    run(
        &t,
        &full,
        &["tenant", "create", "vf-a", "--name", "A", "--migrate"],
    )
    .expect(0);
    run(
        &t,
        &full,
        &["tenant", "create", "vf-b", "--name", "B", "--provision"],
    )
    .expect(0);
    let r: RunReport = run(&t, &full, &["upgrade", "--all", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(r.of("vf-b").applied, [1], "{r:#?}");
    let by_name = url_for(
        "localhost",
        &right,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    run(&t, &by_name, &["status", "--all"]).expect(0);
    run(
        &t,
        &right.url(&format!("sslmode=verify-ca&sslrootcert={ca}")),
        &["status", "--all"],
    )
    .expect(0);

    // A certificate from another CA fails both verify modes (and require with that root).
    for mode in ["verify-ca", "verify-full", "require"] {
        let r = run(
            &t,
            &right.url(&format!("sslmode={mode}&sslrootcert={other}")),
            &["status", "--all"],
        );
        expect_tls_error(&r, &right_hp);
        assert!(r.stderr.contains("trusted root"), "{mode}: {}", r.stderr);
    }

    // The right CA, the wrong host: verify-full refuses, naming the host, and changes
    // nothing; verify-ca and require (with or without the root) accept it.
    for host in ["127.0.0.1", "localhost"] {
        let url = url_for(
            host,
            &wrong,
            &format!("sslmode=verify-full&sslrootcert={wrong_ca}"),
        );
        for args in [&["init"][..], &["upgrade", "--all"][..]] {
            let r = run(&t, &url, args);
            expect_tls_error(&r, &format!(":{}", wrong.port));
            assert!(
                r.stderr.contains(&format!("not issued for host {host}"))
                    && r.stderr.contains("verify-full"),
                "the message should say the certificate is not for this host name:\n{}",
                r.stderr
            );
        }
    }
    let ca_only = wrong.url(&format!("sslmode=verify-ca&sslrootcert={wrong_ca}"));
    let r = run(&t, &ca_only, &["tenant", "list"]);
    expect_error(&r, 3, &["not initialised"]);
    run(&t, &ca_only, &["init"]).expect(0);
    run(
        &t,
        &ca_only,
        &["tenant", "create", "vc-a", "--name", "A", "--migrate"],
    )
    .expect(0);
    for query in [
        "sslmode=require".to_string(),
        format!("sslmode=require&sslrootcert={wrong_ca}"),
    ] {
        let r: RunReport = run(&t, &wrong.url(&query), &["upgrade", "--all", "-o", "json"])
            .expect(0)
            .json();
        assert_eq!(r.summary.up_to_date, 1, "{query}: {r:#?}");
    }
    // verify-ca still checks the chain.
    let r = run(
        &t,
        &wrong.url(&format!("sslmode=verify-ca&sslrootcert={other}")),
        &["init"],
    );
    expect_tls_error(&r, &wrong_hp);

    // verify-* without a root certificate is refused before connecting, naming the host
    // and where the certificate could come from.
    for mode in ["verify-ca", "verify-full"] {
        let r = run(&t, &right.url(&format!("sslmode={mode}")), &["init"]);
        expect_error(
            &r,
            3,
            &[&right_hp, mode, "root certificate", ".postgresql/root.crt"],
        );
    }

    // libpq's default root certificate, ~/.postgresql/root.crt: used when it exists, and
    // it makes require verify the chain.
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".postgresql")).unwrap();
    let root_crt = home.path().join(".postgresql/root.crt");
    let home_str = home.path().display().to_string();
    std::fs::copy(&right.certs.ca, &root_crt).unwrap();
    let with_home = |url: &str, args: &[&str]| {
        let mut all = vec!["--database-url", url];
        all.extend_from_slice(args);
        bare()
            .migrations(migrations.path())
            .env("HOME", &home_str)
            .run(&all)
    };
    with_home(&right.url("sslmode=verify-full"), &["status", "--all"]).expect(0);
    std::fs::copy(&right.certs.other_ca, &root_crt).unwrap();
    expect_tls_error(
        &with_home(&right.url("sslmode=require"), &["status", "--all"]),
        &right_hp,
    );
    // A root named in the URL wins over the default one.
    with_home(
        &right.url(&format!("sslmode=verify-full&sslrootcert={ca}")),
        &["status", "--all"],
    )
    .expect(0);

    // sslrootcert=system: the operating system's roots (which do not hold the test CA),
    // verify-full by default and required, as in libpq.
    for query in [
        "sslrootcert=system",
        "sslmode=verify-full&sslrootcert=system",
    ] {
        expect_tls_error(&run(&t, &right.url(query), &["init"]), &right_hp);
    }
    let r = run(
        &t,
        &right.url("sslmode=require&sslrootcert=system"),
        &["init"],
    );
    expect_error(&r, 3, &[&right_hp, "sslrootcert=system", "verify-full"]);

    // The libpq variables without a URL, and the config file.
    bare()
        .migrations(migrations.path())
        .env("PGHOST", "localhost")
        .env("PGPORT", &right.port.to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", "postgres")
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &ca)
        .run(&["status", "--all"])
        .expect(0);
    let cfg = tempfile::tempdir().unwrap();
    std::fs::copy(&wrong.certs.ca, cfg.path().join("ca.pem")).unwrap();
    let from_file = bare().migrations(migrations.path()).cwd(cfg.path());
    write_config(
        cfg.path(),
        &format!(
            "[database]\nurl = \"{}\"\nsslmode = \"verify-full\"\nsslrootcert = \"ca.pem\"\n",
            wrong.url("")
        ),
    );
    let r = from_file.run(&["status", "--all"]);
    expect_tls_error(&r, &wrong_hp);
    assert!(
        r.stderr.contains("not issued for host 127.0.0.1"),
        "{}",
        r.stderr
    );
    // config show says which mode and root are in force, and where they came from.
    let shown: ConfigShown = from_file
        .run(&["config", "show", "-o", "json"])
        .expect(0)
        .json();
    let get = |k: &str| {
        let e = shown.settings.iter().find(|e| e.key == k).unwrap();
        (e.value.clone(), e.source.clone())
    };
    assert_eq!(
        get("database.sslmode"),
        ("verify-full".into(), "file".into())
    );
    let (root, source) = get("database.sslrootcert");
    assert!(
        root.ends_with("ca.pem") && source == "file",
        "{root} {source}"
    );
    write_config(
        cfg.path(),
        &format!(
            "[database]\nurl = \"{}\"\nsslmode = \"verify-ca\"\nsslrootcert = \"ca.pem\"\n",
            wrong.url("")
        ),
    );
    from_file.run(&["status", "--all"]).expect(0);
    let shown: ConfigShown = from_file
        .run(&[
            "config",
            "show",
            "-o",
            "json",
            "--database-url",
            &wrong.url("sslmode=verify-full"),
        ])
        .expect(0)
        .json();
    let e = |k: &str| {
        let e = shown.settings.iter().find(|e| e.key == k).unwrap();
        (e.value.clone(), e.source.clone())
    };
    assert_eq!(e("database.sslmode"), ("verify-full".into(), "flag".into()));
}

#[test]
fn scram_over_tls_without_a_root_certificate_binds_the_channel() {
    // SCRAM's channel binding hashes the server's certificate from the TLS session, so
    // `channel_binding=require` succeeds only if the session offers it: over TLS that
    // verifies nothing (require, no root certificate) as well as over verified TLS, and
    // never without TLS.
    let c = Cluster::start(&Setup {
        server_cert: ServerCert::Localhost,
        ssl: true,
        hba: &[
            "local all all trust",
            "hostssl all all 127.0.0.1/32 scram-sha-256",
            "hostnossl all all 127.0.0.1/32 scram-sha-256",
        ],
    });
    let mut admin = postgres::Config::new()
        .host_path(c.dir())
        .port(c.port)
        .user("postgres")
        .dbname("postgres")
        .connect(postgres::NoTls)
        .expect("connect over the cluster's socket");
    admin
        .batch_execute(
            "SET password_encryption = 'scram-sha-256'; ALTER ROLE postgres PASSWORD 'bind-me-7'",
        )
        .unwrap();
    let ca = c.certs.ca.display().to_string();
    let url = |query: &str| {
        format!(
            "postgres://postgres:bind-me-7@127.0.0.1:{}/postgres?{query}",
            c.port
        )
    };
    let t = bare();
    for query in [
        "sslmode=require&channel_binding=require".to_string(),
        "sslmode=prefer&channel_binding=require".to_string(),
        format!("sslmode=verify-ca&sslrootcert={ca}&channel_binding=require"),
    ] {
        let r = run(&t, &url(&query), &["init"]);
        r.expect(0);
        run(&t, &url(&query), &["tenant", "list", "-o", "json"]).expect(0);
    }
    let r = run(
        &t,
        &url("sslmode=disable&channel_binding=require"),
        &["init"],
    );
    expect_error(&r, 3, &[&format!("127.0.0.1:{}", c.port)]);
    assert!(
        !r.stderr.contains("bind-me-7") && !r.stdout.contains("bind-me-7"),
        "the password was shown:\n{}",
        r.stderr
    );
}
