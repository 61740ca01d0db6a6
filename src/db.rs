//! Database connections: building the libpq-style configuration, TLS, and error text.
//!
//! The URL comes from [`Settings`]; without one, the libpq `PG*` variables are used as
//! libpq would. Connection targets are only ever shown through [`Target::display`], which
//! never includes the password.

use std::path::Path;
use std::str::FromStr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::{AsyncMessage, Client, Config, Connection, NoTls};

use crate::config::{Settings, SslMode};
use crate::error::Error;
use crate::ident;

/// Everything needed to open a connection, resolved once per run.
#[derive(Clone)]
pub struct Target {
    config: Config,
    sslmode: SslMode,
    root_cert: Option<native_tls::Certificate>,
    display: String,
    /// Built on first use and shared by every connection: building one loads the
    /// system's trust store, which costs tens of milliseconds.
    tls: std::sync::Arc<std::sync::OnceLock<Result<postgres_native_tls::MakeTlsConnector, String>>>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({})", self.display)
    }
}

impl Target {
    /// Resolves the connection target from the settings and the environment.
    pub fn resolve(
        settings: &Settings,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let (mut config, url_sslmode, url_rootcert) = match &settings.database_url {
            Some(url) => {
                let (rest, sslmode, rootcert) = split_tls_params(&url.value);
                let config = Config::from_str(&rest).map_err(|e| {
                    Error::setup(format!(
                        "the database URL from {} is malformed: {e}; expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
                        url.origin
                    ))
                })?;
                (config, sslmode, rootcert)
            }
            None => (Config::new(), None, None),
        };
        apply_libpq_env(&mut config, env)?;
        config.application_name("tenantctl");
        config.connect_timeout(
            settings
                .connect_timeout
                .max(std::time::Duration::from_secs(1)),
        );
        config.keepalives(true);

        let sslmode = match url_sslmode
            .or_else(|| env("PGSSLMODE").filter(|_| settings.database_url.is_none()))
        {
            Some(mode) => SslMode::parse(&mode)?,
            None => settings.sslmode.unwrap_or(SslMode::Prefer),
        };
        config.ssl_mode(match sslmode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require => PgSslMode::Require,
        });
        let rootcert_path = url_rootcert
            .map(std::path::PathBuf::from)
            .or_else(|| settings.sslrootcert.clone());
        let root_cert = rootcert_path.as_deref().map(load_cert).transpose()?;
        let display = describe(&config);
        Ok(Target {
            config,
            sslmode,
            root_cert,
            display,
            tls: Default::default(),
        })
    }

    /// `postgres://user@host:port/dbname`, never with the password.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Opens a connection; its driver task runs on the current runtime.
    pub async fn connect(&self) -> Result<Client, Error> {
        self.try_connect(None)
            .await
            .map_err(|e| self.connect_error(e))
    }

    /// Like [`Target::connect`], but while the server cannot be reached, or says it is
    /// starting up or shutting down (a restart), keeps trying for up to `budget`. Used
    /// for tenant sessions, so a fleet run rides out a server restart instead of failing
    /// every remaining tenant in the moment the server is down.
    pub async fn connect_patiently(&self, budget: std::time::Duration) -> Result<Client, Error> {
        Ok(self.connect_patiently_with_notices(budget).await?.0)
    }

    /// Like [`Target::connect_patiently`], and keeps the notices and warnings the server
    /// sends on this connection (by default they are dropped).
    pub async fn connect_patiently_with_notices(
        &self,
        budget: std::time::Duration,
    ) -> Result<(Client, Notices), Error> {
        let deadline = tokio::time::Instant::now() + budget;
        let mut wait = std::time::Duration::from_millis(100);
        loop {
            let (tx, rx) = std::sync::mpsc::channel();
            match self.try_connect(Some(tx)).await {
                Ok(client) => return Ok((client, Notices(std::sync::Mutex::new(rx)))),
                Err(ConnectError::Pg(e))
                    if transient(&e) && tokio::time::Instant::now() + wait < deadline =>
                {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(2));
                }
                Err(e) => return Err(self.connect_error(e)),
            }
        }
    }

    fn connect_error(&self, e: ConnectError) -> Error {
        match e {
            ConnectError::Tls(msg) => Error::setup(format!("cannot set up TLS: {msg}")),
            ConnectError::Pg(e) => Error::setup(format!(
                "cannot connect to {}: {}",
                self.display,
                pg_message(&e)
            )),
        }
    }

    async fn try_connect(
        &self,
        notices: Option<std::sync::mpsc::Sender<Notice>>,
    ) -> Result<Client, ConnectError> {
        if self.sslmode == SslMode::Disable {
            let (client, conn) = self.config.connect(NoTls).await.map_err(ConnectError::Pg)?;
            drive(conn, notices);
            return Ok(client);
        }
        let tls = self
            .tls
            .get_or_init(|| self.build_tls())
            .clone()
            .map_err(ConnectError::Tls)?;
        let (client, conn) = self.config.connect(tls).await.map_err(ConnectError::Pg)?;
        drive(conn, notices);
        Ok(client)
    }
}

/// A message the server sent alongside a statement's result: a NOTICE, WARNING, INFO...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `WARNING`, `NOTICE`, `INFO`, `LOG` or `DEBUG` (not translated).
    pub severity: String,
    /// The SQLSTATE, e.g. `01000` for a warning, `42622` for a truncated identifier.
    pub code: String,
    /// The message, with its detail and hint when there are any.
    pub message: String,
}

impl Notice {
    /// Whether this is worth showing without `-v`: a WARNING, or an identifier the
    /// server truncated (SQLSTATE 42622, sent as a NOTICE but rarely intended).
    pub fn is_warning(&self) -> bool {
        self.severity == "WARNING" || self.code == "42622"
    }

    fn from_db(e: &tokio_postgres::error::DbError) -> Notice {
        let mut message = e.message().to_string();
        if let Some(d) = e.detail() {
            message.push_str(&format!(" (detail: {d})"));
        }
        if let Some(h) = e.hint() {
            message.push_str(&format!(" (hint: {h})"));
        }
        Notice {
            severity: e
                .parsed_severity()
                .map_or_else(|| e.severity().to_string(), |s| s.to_string()),
            code: e.code().code().to_string(),
            message,
        }
    }
}

/// The notices a connection has received and not yet taken, in order.
pub struct Notices(std::sync::Mutex<std::sync::mpsc::Receiver<Notice>>);

impl Notices {
    /// Takes the notices received so far. Every notice a statement caused has arrived by
    /// the time the statement's result has.
    pub fn take(&self) -> Vec<Notice> {
        match self.0.lock() {
            Ok(rx) => rx.try_iter().collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Drives a connection on the runtime, forwarding the server's notices when asked to.
fn drive<S, T>(mut conn: Connection<S, T>, notices: Option<std::sync::mpsc::Sender<Notice>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match futures::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notice(n))) => {
                    if let Some(tx) = &notices {
                        let _ = tx.send(Notice::from_db(&n));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    });
}

enum ConnectError {
    Tls(String),
    Pg(tokio_postgres::Error),
}

/// Whether a connection failure may pass by itself: the server is not accepting
/// connections (refused, reset, timed out), or says it is starting up or shutting down.
fn transient(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if let Some(db) = e.as_db_error() {
        return *db.code() == SqlState::CANNOT_CONNECT_NOW
            || *db.code() == SqlState::ADMIN_SHUTDOWN;
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::NotFound
            );
        }
        source = cause.source();
    }
    false
}

impl Target {
    fn build_tls(&self) -> Result<postgres_native_tls::MakeTlsConnector, String> {
        let mut builder = native_tls::TlsConnector::builder();
        match &self.root_cert {
            // Like libpq's sslrootcert: the chain must lead to this CA.
            Some(cert) => {
                builder.add_root_certificate(cert.clone());
                builder.danger_accept_invalid_hostnames(true);
            }
            // Like libpq's prefer/require without a root certificate: encrypt, don't verify.
            None => {
                builder.danger_accept_invalid_certs(true);
                builder.danger_accept_invalid_hostnames(true);
            }
        }
        let connector = builder.build().map_err(|e| e.to_string())?;
        Ok(postgres_native_tls::MakeTlsConnector::new(connector))
    }
}

fn load_cert(path: &Path) -> Result<native_tls::Certificate, Error> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::setup(format!("cannot read sslrootcert {}: {e}", path.display())))?;
    native_tls::Certificate::from_pem(&bytes).map_err(|e| {
        Error::setup(format!(
            "sslrootcert {} is not a PEM certificate: {e}",
            path.display()
        ))
    })
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query string, since tenantctl handles
/// TLS itself (and accepts libpq URLs that carry them).
fn split_tls_params(url: &str) -> (String, Option<String>, Option<String>) {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return (url.to_string(), None, None);
    };
    let (mut sslmode, mut rootcert) = (None, None);
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some(("sslmode", v)) => {
                sslmode = Some(v.to_string());
                false
            }
            Some(("sslrootcert", v)) => {
                rootcert = Some(v.to_string());
                false
            }
            _ => true,
        })
        .collect();
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, sslmode, rootcert)
}

/// Fills what the URL left unset from the libpq variables, with libpq's defaults.
fn apply_libpq_env(config: &mut Config, env: &dyn Fn(&str) -> Option<String>) -> Result<(), Error> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        match var("PGHOST") {
            Some(h) => {
                for host in h.split(',') {
                    config.host(host);
                }
            }
            None => {
                let socket = ["/var/run/postgresql", "/tmp"].into_iter().find(|d| {
                    Path::new(d).join(".s.PGSQL.5432").exists()
                        || Path::new(d)
                            .join(format!(".s.PGSQL.{}", var("PGPORT").unwrap_or_default()))
                            .exists()
                });
                match socket {
                    Some(dir) => config.host_path(dir),
                    None => config.host("localhost"),
                };
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(p) = var("PGPORT") {
            let port = p.parse::<u16>().map_err(|_| {
                Error::setup(format!("PGPORT {} is not a port number", ident::shown(&p)))
            })?;
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        let user = var("PGUSER")
            .or_else(|| var("USER"))
            .or_else(|| var("LOGNAME"))
            .unwrap_or_else(|| "postgres".into());
        config.user(user);
    }
    if config.get_password().is_none() {
        if let Some(pw) = var("PGPASSWORD") {
            config.password(pw);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(db) = var("PGDATABASE") {
            config.dbname(db);
        }
    }
    Ok(())
}

/// `postgres://user@host:port/dbname` for messages; the password is never included.
fn describe(config: &Config) -> String {
    let user = config.get_user().unwrap_or("?");
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{db}")
}

/// A PostgreSQL error as one line: the server's message with detail and hint, or the
/// client-side cause chain.
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_string();
        if let Some(d) = db.detail() {
            s.push_str(&format!(" (detail: {d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!(" (hint: {h})"));
        }
        if let Some(w) = db.where_() {
            s.push_str(&format!(" (where: {})", w.replace('\n', "; ")));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

/// The first PostgreSQL error in any error's cause chain, formatted by [`pg_message`].
pub fn find_pg_message(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(pg) = err.downcast_ref::<tokio_postgres::Error>() {
            return Some(pg_message(pg));
        }
        current = err.source();
    }
    None
}

/// Wraps a query error with what was being done, as a failed operation (exit 1), or as a
/// setup error (exit 3) when the connection itself is gone.
pub fn query_error(doing: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| {
        let msg = format!("{doing}: {}", pg_message(&e));
        if e.is_closed() {
            Error::setup(msg)
        } else {
            Error::failed(msg)
        }
    }
}

/// Advisory-lock key spaces, so tenant locks never collide with the registry's.
#[derive(Debug, Clone, Copy)]
#[repr(i32)]
pub enum LockSpace {
    /// Per-tenant locks, keyed by schema name.
    Tenant = 0x7465_6e74,
    /// The registry's own migrations, keyed by registry schema.
    Registry = 0x7265_6769,
}

/// The two-int advisory lock key for `name` in `space`: the first 4 bytes of SHA-256.
pub fn lock_key(space: LockSpace, name: &str) -> (i32, i32) {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    (
        space as i32,
        i32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{resolve, DatabaseUrl, Overrides};

    fn settings(url: Option<&str>) -> Settings {
        let mut s = resolve(&Overrides::default(), &|_| None, Path::new("/"), None).unwrap();
        s.database_url = url.map(|u| DatabaseUrl {
            value: u.into(),
            origin: "test".into(),
        });
        s
    }

    #[test]
    fn lock_keys_are_stable_and_spaced() {
        assert_eq!(
            lock_key(LockSpace::Tenant, "a"),
            lock_key(LockSpace::Tenant, "a")
        );
        assert_ne!(
            lock_key(LockSpace::Tenant, "a"),
            lock_key(LockSpace::Tenant, "b")
        );
        assert_ne!(
            lock_key(LockSpace::Tenant, "a").0,
            lock_key(LockSpace::Registry, "a").0
        );
    }

    #[test]
    fn display_never_contains_the_password() {
        let t = Target::resolve(
            &settings(Some("postgres://alice:hunter2@db.example:6543/app")),
            &|_| None,
        )
        .unwrap();
        assert_eq!(t.display(), "postgres://alice@db.example:6543/app");
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn libpq_variables_fill_what_the_url_leaves_out() {
        let env = |k: &str| match k {
            "PGHOST" => Some("pg.internal".to_string()),
            "PGPORT" => Some("6000".to_string()),
            "PGUSER" => Some("migrator".to_string()),
            "PGDATABASE" => Some("app".to_string()),
            "PGPASSWORD" => Some("pw".to_string()),
            _ => None,
        };
        let t = Target::resolve(&settings(None), &env).unwrap();
        assert_eq!(t.display(), "postgres://migrator@pg.internal:6000/app");
        assert_eq!(t.config.get_password(), Some(&b"pw"[..]));
        // The URL wins where it says something; a URL with a host takes its port (5432
        // by default) with it, as tokio-postgres parses it.
        let t = Target::resolve(&settings(Some("postgres://bob@h/db")), &env).unwrap();
        assert_eq!(t.display(), "postgres://bob@h:5432/db");
        assert_eq!(t.config.get_password(), Some(&b"pw"[..]));
    }

    #[test]
    fn tls_params_are_taken_from_the_url() {
        let (rest, mode, cert) = split_tls_params(
            "postgres://u@h/db?sslmode=require&application_name=x&sslrootcert=/ca.pem",
        );
        assert_eq!(rest, "postgres://u@h/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(cert.as_deref(), Some("/ca.pem"));
        let t = Target::resolve(
            &settings(Some("postgres://u@h/db?sslmode=disable")),
            &|_| None,
        )
        .unwrap();
        assert_eq!(t.sslmode, SslMode::Disable);
    }

    #[test]
    fn malformed_urls_and_modes_are_setup_errors() {
        for url in [
            "postgres://u@h:notaport/db",
            "postgres://u@h/db?sslmode=verify-full",
            "postgres://u@h/db?bogus=1",
        ] {
            let err = Target::resolve(&settings(Some(url)), &|_| None).unwrap_err();
            assert_eq!(err.exit, crate::error::Exit::Setup, "{url}");
        }
    }
}
