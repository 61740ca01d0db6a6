//! A throwaway PostgreSQL cluster of a test's own, for what the shared server must never be
//! reconfigured for (TLS, pg_hba rules): `initdb` into a temporary directory, certificates
//! made with the `openssl` CLI, a free port on 127.0.0.1, and `pg_ctl -m immediate stop`
//! plus removal of the directory when dropped.
//!
//! [`citus`] builds a Citus cluster (a coordinator and two workers) out of three of them.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root (as in CI) `initdb`
//! and `pg_ctl` run as `nobody` through `runuser`, and the directory is created under
//! `/tmp` with mode 0755 and handed to `nobody`. Missing server binaries are a loud
//! failure, never a skip.

pub mod citus;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The certificates a cluster's tests use, all PEM, readable by anyone.
pub struct Certs {
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// A second, unrelated self-signed CA.
    pub other_ca: PathBuf,
}

/// Which names the server's certificate (signed by the test CA) is issued for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ServerCert {
    /// CN=localhost, SAN IP:127.0.0.1,DNS:localhost: right for the URLs tests use.
    Localhost,
    /// CN=wrong.example, SAN DNS:wrong.example: the right CA, the wrong host.
    WrongHost,
}

/// How to configure a cluster.
pub struct Setup<'a> {
    /// `ssl = on` with the server certificate `server_cert`.
    pub ssl: bool,
    /// The names the server's certificate is issued for.
    pub server_cert: ServerCert,
    /// The lines of pg_hba.conf.
    pub hba: &'a [&'a str],
}

/// A running throwaway cluster.
pub struct Cluster {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// CA certificates for clients.
    pub certs: Certs,
    bin: PathBuf,
    data: PathBuf,
    as_nobody: bool,
    // Dropped (removed) after `Drop::drop` has stopped the server.
    dir: tempfile::TempDir,
}

/// The directory holding `initdb` and `pg_ctl`: from PATH, else the newest
/// /usr/lib/postgresql/*/bin. Panics with a clear message when there is none.
pub fn server_bin_dir() -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return dir;
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "initdb/pg_ctl not found on PATH nor in /usr/lib/postgresql/*/bin: these tests start \
             a PostgreSQL cluster of their own and need the server binaries installed \
             (e.g. `apt-get install postgresql`)"
        ),
    }
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run `id -u`");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Runs a command, panicking with its output when it fails.
fn check(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    check(
        Command::new("openssl").args(args).current_dir(dir),
        &format!("openssl {}", args.join(" ")),
    );
}

/// A self-signed CA: `NAME.crt` and `NAME.key` in `dir`.
fn make_ca(dir: &Path, name: &str, cn: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    dir.join(format!("{name}.crt"))
}

/// `server.crt`/`server.key` in `dir`, signed by the CA `ca`, for the names `which` says.
fn make_server_cert(dir: &Path, ca: &str, which: ServerCert) {
    let (subject, san) = match which {
        ServerCert::Localhost => ("/CN=localhost", "IP:127.0.0.1,DNS:localhost"),
        ServerCert::WrongHost => ("/CN=wrong.example", "DNS:wrong.example"),
    };
    signed_cert(
        dir,
        "server",
        subject,
        &format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName={san}\n"
        ),
        &dir.join(ca),
    );
}

/// `NAME.key` (an unencrypted P-256 key) and `NAME.crt` in `dir` for `subject`, with the
/// extensions `ext` (openssl's extfile lines), signed by the CA whose `.crt` and `.key`
/// are at `ca` (a path without the extension).
fn signed_cert(dir: &Path, name: &str, subject: &str, ext: &str, ca: &Path) {
    let s = |p: PathBuf| p.display().to_string();
    let file = |suffix: &str| s(dir.join(format!("{name}.{suffix}")));
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &file("key"),
            "-out",
            &file("csr"),
            "-subj",
            subject,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &file("csr"),
            "-CA",
            &s(ca.with_extension("crt")),
            "-CAkey",
            &s(ca.with_extension("key")),
            "-CAcreateserial",
            "-out",
            &file("crt"),
            "-days",
            "2",
            "-extfile",
            &file("ext"),
        ],
    );
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

impl Cluster {
    /// Creates, configures and starts a cluster; panics with the server log on failure.
    pub fn start(setup: &Setup<'_>) -> Cluster {
        Cluster::start_with(setup, "")
    }

    /// As [`Cluster::start`], with `extra_conf` (lines of postgresql.conf, e.g.
    /// `shared_preload_libraries`) added after the test settings, so it may override them.
    /// A cluster on 127.0.0.1 without TLS that trusts every local connection, with
    /// `extra_conf` appended to its configuration (e.g. `wal_level = logical`).
    pub fn trusting(extra_conf: &str) -> Cluster {
        Cluster::start_with(
            &Setup {
                server_cert: ServerCert::Localhost,
                ssl: false,
                hba: &["host all all 127.0.0.1/32 trust", "local all all trust"],
            },
            extra_conf,
        )
    }

    pub fn start_with(setup: &Setup<'_>, extra_conf: &str) -> Cluster {
        let bin = server_bin_dir();
        let as_nobody = is_root();
        let dir = tempfile::Builder::new()
            .prefix("tenantctl-cluster-")
            .tempdir_in("/tmp")
            .expect("create a temporary directory under /tmp");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let certs_dir = dir.path().join("certs");
        std::fs::create_dir(&certs_dir).unwrap();
        let ca = make_ca(&certs_dir, "ca", "tenantctl test CA");
        let other_ca = make_ca(&certs_dir, "other-ca", "tenantctl unrelated CA");
        make_server_cert(&certs_dir, "ca", setup.server_cert);
        if as_nobody {
            check(
                Command::new("chown").args(["-R", "nobody"]).arg(dir.path()),
                "chown the cluster directory to nobody",
            );
        }
        let mut cluster = Cluster {
            port: 0,
            certs: Certs { ca, other_ca },
            bin,
            data: dir.path().join("data"),
            as_nobody,
            dir,
        };
        let mut initdb = cluster.server_command("initdb");
        initdb
            .arg("-D")
            .arg(&cluster.data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .arg("--locale=C");
        check(&mut initdb, "initdb");

        // The key must be 0600 and owned by the server's user, or the server refuses it.
        // ca.crt is there for `ssl_ca_file = 'ca.crt'` (client certificates).
        for f in ["server.crt", "server.key", "ca.crt"] {
            std::fs::copy(certs_dir.join(f), cluster.data.join(f)).unwrap();
        }
        std::fs::set_permissions(
            cluster.data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        if as_nobody {
            check(
                Command::new("chown")
                    .arg("nobody")
                    .arg(cluster.data.join("server.crt"))
                    .arg(cluster.data.join("server.key"))
                    .arg(cluster.data.join("ca.crt")),
                "chown the server key to nobody",
            );
        }
        let mut hba = setup.hba.join("\n");
        hba.push('\n');
        std::fs::write(cluster.data.join("pg_hba.conf"), hba).unwrap();

        // A port picked now may be taken before the server binds it: try a few.
        let mut last_log = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            let conf = format!(
                "\n# tenantctl test cluster\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
                 unix_socket_directories = '{sock}'\nssl = {ssl}\nssl_cert_file = 'server.crt'\n\
                 ssl_key_file = 'server.key'\nfsync = off\nmax_connections = 50\n{extra_conf}\n",
                port = cluster.port,
                sock = cluster.dir.path().display(),
                ssl = if setup.ssl { "on" } else { "off" },
            );
            std::fs::write(cluster.data.join("postgresql.auto.conf"), conf).unwrap();
            let log = cluster.dir.path().join("server.log");
            let _ = std::fs::remove_file(&log);
            let status = cluster
                .server_command("pg_ctl")
                .arg("-D")
                .arg(&cluster.data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "30", "start"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run pg_ctl start");
            if status.success() {
                return cluster;
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
            if !last_log.contains("could not bind") && !last_log.contains("already in use") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the throwaway PostgreSQL cluster did not start; server log:\n{last_log}");
    }

    /// `initdb`/`pg_ctl` from the server binaries, as `nobody` when running as root.
    fn server_command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_nobody {
            let runuser = ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
                .into_iter()
                .find(|p| Path::new(p).is_file())
                .unwrap_or("runuser");
            let mut c = Command::new(runuser);
            c.args(["-u", "nobody", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.current_dir(self.dir.path());
        cmd
    }

    /// A client certificate for role `cn`, signed by this cluster's CA (which the server
    /// trusts for clients with `ssl_ca_file = 'ca.crt'`): `NAME.crt` and `NAME.key`
    /// (mode 0600) in `dir`; with `passphrase`, the key is encrypted with it.
    pub fn client_cert(
        &self,
        dir: &Path,
        name: &str,
        cn: &str,
        passphrase: Option<&str>,
    ) -> (PathBuf, PathBuf) {
        signed_cert(
            dir,
            name,
            &format!("/CN={cn}"),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
            &self.dir.path().join("certs").join("ca"),
        );
        let key = dir.join(format!("{name}.key"));
        if let Some(pw) = passphrase {
            // "BEGIN ENCRYPTED PRIVATE KEY" (PKCS#8), which libpq decrypts with
            // sslpassword.
            let plain = dir.join(format!("{name}.plain.key"));
            std::fs::rename(&key, &plain).unwrap();
            let s = |p: &Path| p.display().to_string();
            openssl(
                dir,
                &[
                    "pkcs8",
                    "-topk8",
                    "-in",
                    &s(&plain),
                    "-out",
                    &s(&key),
                    "-v2",
                    "aes-256-cbc",
                    "-passout",
                    &format!("pass:{pw}"),
                ],
            );
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        (dir.join(format!("{name}.crt")), key)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`, with `?query` when not empty.
    pub fn url(&self, query: &str) -> String {
        let base = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        if query.is_empty() {
            base
        } else {
            format!("{base}?{query}")
        }
    }

    /// The cluster's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Restarts the server as an operator would (`pg_ctl restart -m fast`: sessions are
    /// terminated, transactions in flight roll back) and waits until it accepts
    /// connections again.
    pub fn restart(&self) {
        let status = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-m", "fast", "-w", "-t", "30", "restart"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run pg_ctl restart");
        assert!(status.success(), "pg_ctl restart failed");
    }
}

impl Cluster {
    /// Stops the server at once (`pg_ctl stop -m immediate`), as a crash would.
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }

    /// Starts a stopped server again and waits until it accepts connections.
    pub fn start_again(&self) {
        self.pg_ctl(&["-w", "-t", "30", "start"]);
    }

    fn pg_ctl(&self, args: &[&str]) {
        let status = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run pg_ctl");
        assert!(status.success(), "pg_ctl {args:?} failed");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.port != 0 {
            let _ = self
                .server_command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
