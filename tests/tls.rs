//! TLS against throwaway servers of the tests' own (the shared server is never
//! reconfigured): a server that accepts only `hostssl` connections with a certificate
//! signed by a test CA, and a server without TLS. Covers `sslmode` disable/prefer/require,
//! `sslrootcert` verification (the right CA, an unrelated one), the URL's query against the
//! config file's `[database]` settings, and `PGSSLMODE`.

mod checks;
mod cluster;
mod common_json;
mod support;

use std::path::Path;

use checks::expect_error;
use cluster::{Cluster, Setup};
use common_json::{FleetStatus, RunReport};
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
