//! Database connections: building the libpq-style configuration, TLS, and error text.
//!
//! The URL comes from [`Settings`]; without one, the libpq `PG*` variables are used as
//! libpq would. Connection targets are only ever shown through [`Target::display`], which
//! never includes the password.
//!
//! TLS follows libpq's `sslmode`: `disable`, `prefer`, `require`, `verify-ca`,
//! `verify-full`. A root certificate (`sslrootcert`, else `~/.postgresql/root.crt` when it
//! exists) makes `prefer` and `require` verify the chain as `verify-ca` does; only
//! `verify-full` also checks the host name. `sslrootcert=system` trusts the operating
//! system's roots and, as in libpq, requires `verify-full`.
//!
//! Each target is named after its configured server (`server "eu2"`), and its errors
//! say so. A connection tenantctl opens for its own queries is a [`Client`]; its reads
//! go through [`read`], which waits at most `run.read_timeout` for an answer and then
//! closes the connection, so a server that stops answering once connected never holds
//! a command (migrations are not reads: `statement_timeout` and `lock_timeout` bound
//! them).
//!
//! Connection trouble that may pass by itself is recognised in one place,
//! [`transient`]; [`Target::connect_patiently`] retries it with jittered backoff. A
//! [`Target::for_run`] clone shares, between the sessions of one bulk run, how many of
//! them are connected, so a session refused for lack of connection slots waits for as
//! long as the run's other sessions make progress (see [`crate::app::fleet`]).

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::{AsyncMessage, Config, Connection, NoTls};
use tokio_util::sync::CancellationToken;

use crate::config::{RootCert, Settings, Source, SslMode, TlsShown};
use crate::error::Error;
use crate::ident;
use crate::pg::cancel::Canceller;
use crate::pg::interrupt::Interrupt;
use crate::pg::tls::Tls;

/// Everything needed to open a connection, resolved once per run.
#[derive(Clone)]
pub struct Target {
    config: Config,
    sslmode: SslMode,
    roots: Option<Roots>,
    tls_shown: TlsShown,
    display: String,
    /// Built on first use and shared by every connection.
    tls: std::sync::Arc<std::sync::OnceLock<Result<Tls, String>>>,
    /// Set on the clone a bulk run connects its sessions through ([`Target::for_run`]).
    run: Option<Arc<RunConnections>>,
    /// The configured name of the server this target reaches (`default` for the
    /// registry's), which its errors name; see [`Target::named`].
    server: Option<String>,
    /// Why the password file was not used, said when the server asks for a password.
    password_note: Option<String>,
    /// The client certificate presented when the server asks for one (`sslcert`).
    client_cert: Option<crate::pg::tls::ClientCert>,
    /// `run.read_timeout`: the longest one of tenantctl's own reads on a connection
    /// from this target waits for an answer (see [`read`]).
    read_timeout: Duration,
}

/// The root certificates a server's certificate chain must lead to.
#[derive(Clone)]
enum Roots {
    /// The certificates of a PEM file; nothing else is trusted.
    File(Vec<native_tls::Certificate>),
    /// The operating system's trust store.
    System,
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
        let (mut config, split) = parse_url(settings)?;
        // A connection service (`service=` in the URL, else PGSERVICE) fills what the
        // URL leaves out, before the environment, as in libpq.
        let var = |k: &str| env(k).filter(|v| !v.is_empty());
        let mut from_service = Vec::new();
        if let Some(name) = split
            .get("service")
            .map(str::to_string)
            .or_else(|| var("PGSERVICE"))
        {
            from_service = crate::pg::libpq::service(&name, env)?;
            apply_service(&mut config, &from_service, &name)?;
        }
        let service_value = |key: &str| {
            from_service
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let url_sslmode = split
            .get("sslmode")
            .map(str::to_string)
            .or_else(|| service_value("sslmode"));
        let url_rootcert = split
            .get("sslrootcert")
            .map(str::to_string)
            .or_else(|| service_value("sslrootcert"))
            .filter(|v| !v.is_empty());
        apply_libpq_env(&mut config, env)?;
        // PGTARGETSESSIONATTRS counts when neither the string nor its service says.
        if let Some(attrs) = var("PGTARGETSESSIONATTRS") {
            let said = split.rest.contains("target_session_attrs")
                || service_value("target_session_attrs").is_some();
            if !said {
                config.target_session_attrs(session_attrs(&attrs).ok_or_else(|| {
                    Error::setup(format!(
                        "PGTARGETSESSIONATTRS={} is not supported by tenantctl: use any or read-write",
                        ident::shown(&attrs)
                    ))
                })?);
            }
        }
        // The user's application_name is kept (runs append their tag to it).
        if config.get_application_name().is_none() {
            config.application_name(var("PGAPPNAME").unwrap_or_else(|| "tenantctl".into()));
        }
        if config.get_connect_timeout().is_none() {
            let timeout = match var("PGCONNECT_TIMEOUT") {
                Some(t) => libpq_connect_timeout(&t)?,
                None => settings.connect_timeout,
            };
            config.connect_timeout(timeout.max(std::time::Duration::from_secs(1)));
        }
        if config.get_options().is_none() {
            if let Some(options) = var("PGOPTIONS") {
                config.options(options);
            }
        }
        let passfile = split
            .get("passfile")
            .map(str::to_string)
            .or_else(|| service_value("passfile"));
        let password_note = password_from_file(&mut config, passfile.as_deref(), env);
        config.keepalives(true);
        let display = describe(&config);

        // The URL's sslmode and sslrootcert win; the libpq variables count only without
        // a URL; then the config file.
        let source = |key| settings.source(key);
        let no_url = settings.database_url.is_none();
        let libpq_var = |k: &str| env(k).filter(|v| !v.is_empty() && no_url);
        let (explicit_mode, sslmode_source) = if let Some(mode) = url_sslmode {
            (Some(SslMode::parse(&mode)?), source("database.url"))
        } else if let Some(mode) = libpq_var("PGSSLMODE") {
            (Some(SslMode::parse(&mode)?), Source::Environment)
        } else {
            (settings.sslmode, source("database.sslmode"))
        };
        let (named_root, root_source) = if let Some(path) = url_rootcert {
            let root = RootCert::from_setting(Path::new(&path), Path::new(""));
            (Some(root), source("database.url"))
        } else if let Some(path) = libpq_var("PGSSLROOTCERT") {
            let root = RootCert::from_setting(Path::new(&path), Path::new(""));
            (Some(root), Source::Environment)
        } else {
            (settings.sslrootcert.clone(), source("database.sslrootcert"))
        };
        let sslmode = effective_sslmode(explicit_mode, named_root.as_ref(), &display)?;
        config.ssl_mode(match sslmode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        let (roots, rootcert_shown, root_source) =
            trusted_roots(sslmode, named_root, root_source, env, &display)?;
        let own = |key: &str| {
            split
                .get(key)
                .map(str::to_string)
                .or_else(|| service_value(key))
        };
        let client_cert = if sslmode == SslMode::Disable {
            None
        } else {
            client_certificate(&own, env).map_err(|e| Error::setup(format!("{display}: {e}")))?
        };
        let tls_shown = TlsShown {
            sslmode,
            sslmode_source,
            sslrootcert: rootcert_shown.unwrap_or_default(),
            sslrootcert_source: root_source,
        };
        Ok(Target {
            config,
            sslmode,
            roots,
            tls_shown,
            display,
            tls: Default::default(),
            run: None,
            server: None,
            read_timeout: settings.read_timeout,
            password_note,
            client_cert,
        })
    }

    /// This target with its connections' reads bounded by `limit` instead of
    /// `run.read_timeout`.
    pub fn with_read_timeout(mut self, limit: Duration) -> Target {
        self.read_timeout = limit;
        self
    }

    /// This target as the configured server `name`: its errors name the server.
    pub fn named(mut self, name: &str) -> Target {
        self.server = Some(name.to_string());
        self
    }

    /// The configured name of the server this target reaches, when it was named.
    pub fn server_name(&self) -> Option<&str> {
        self.server.as_deref()
    }

    /// How errors name this target: `server "NAME"` for a configured server, else its
    /// URL without the password.
    pub fn shown(&self) -> String {
        match &self.server {
            Some(name) => format!("server {}", ident::shown(name)),
            None => self.display.clone(),
        }
    }

    /// The TLS settings in force (for `config show`).
    pub fn tls_shown(&self) -> &TlsShown {
        &self.tls_shown
    }

    /// `postgres://user@host:port/dbname`, never with the password.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The target as a libpq connection string (`host=... port=... dbname=... user=...
    /// password=... sslmode=...`), for another server to connect here (a logical
    /// replication subscription). It holds the password: never print or log it.
    pub fn conninfo(&self) -> String {
        let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let c = &self.config;
        let mut parts = Vec::new();
        match c.get_hosts().first() {
            Some(Host::Tcp(h)) => parts.push(format!("host={}", quote(h))),
            Some(Host::Unix(p)) => parts.push(format!("host={}", quote(&p.display().to_string()))),
            None => {}
        }
        if let Some(port) = c.get_ports().first() {
            parts.push(format!("port={port}"));
        }
        if let Some(db) = c.get_dbname() {
            parts.push(format!("dbname={}", quote(db)));
        }
        if let Some(user) = c.get_user() {
            parts.push(format!("user={}", quote(user)));
        }
        if let Some(pw) = c.get_password() {
            parts.push(format!("password={}", quote(&String::from_utf8_lossy(pw))));
        }
        parts.push(format!("sslmode={}", self.sslmode.as_str()));
        parts.join(" ")
    }

    /// Opens a connection for tenantctl's own queries; its driver task runs on the
    /// current runtime, and its reads through [`read`] are bounded by `run.read_timeout`.
    pub async fn connect(&self) -> Result<Client, Error> {
        self.try_connect(None)
            .await
            .map_err(|e| self.connect_error(e))
    }

    /// A clone whose connections count as one bulk run's: [`Target::connect_patiently`]
    /// through it knows whether other sessions of the run are connected, and gives up
    /// waiting once `interrupt` is set.
    pub fn for_run(&self, interrupt: Interrupt) -> Target {
        let mut t = self.clone();
        t.run = Some(Arc::new(RunConnections {
            state: Mutex::new(RunState::default()),
            interrupt: Some(interrupt),
        }));
        t
    }

    /// Like [`Target::connect`], but rides out [`transient`] trouble with jittered,
    /// doubling waits (at most 1 s): the server not accepting connections (a restart), or
    /// refusing one for lack of slots (`too_many_connections`).
    ///
    /// Refused for lack of slots while other sessions of the same run (see
    /// [`Target::for_run`]) are connected, it waits without a deadline: they will finish
    /// and free a slot. Otherwise it gives up `budget` after the trouble began, counted
    /// from the last moment a session of the run connected or ended, so once the server
    /// has refused the run for longer than `budget`, a new session makes one attempt.
    pub async fn connect_patiently(
        &self,
        budget: Duration,
    ) -> Result<tokio_postgres::Client, Error> {
        Ok(self.connect_patiently_with_notices(budget).await?.0.inner)
    }

    /// Like [`Target::connect_patiently`], and keeps the notices and warnings the server
    /// sends on this connection (by default they are dropped).
    pub async fn connect_patiently_with_notices(
        &self,
        budget: Duration,
    ) -> Result<(Client, Notices), Error> {
        let solo;
        let run = match &self.run {
            Some(run) => run,
            None => {
                solo = RunConnections::default();
                &solo
            }
        };
        let mut attempt: u32 = 0;
        loop {
            let (tx, rx) = std::sync::mpsc::channel();
            let err = match self.try_connect(Some(tx)).await {
                Ok(client) => return Ok((client, Notices(std::sync::Mutex::new(rx)))),
                Err(e) => e,
            };
            let kind = err.transient();
            let Some(kind) = kind else {
                return Err(self.connect_error(err));
            };
            if run.interrupted() {
                return Err(self.connect_error(err));
            }
            let mut wait = jittered(backoff(attempt));
            attempt = attempt.saturating_add(1);
            {
                let now = tokio::time::Instant::now();
                let mut state = run.state.lock().unwrap_or_else(PoisonError::into_inner);
                if !(kind == Transient::Busy && state.live > 0) {
                    // The config bounds the budget; one past any instant waits forever.
                    let since = *state.trouble_since.get_or_insert(now);
                    if let Some(deadline) = since.checked_add(budget) {
                        if now >= deadline {
                            return Err(self.connect_error(err));
                        }
                        wait = wait.min(deadline - now);
                    }
                }
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Counts a new connection as live in this target's run, until the guard is dropped.
    fn live(&self) -> Option<Live> {
        let run = self.run.as_ref()?;
        let mut state = run.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.live += 1;
        state.trouble_since = None;
        Some(Live(run.clone()))
    }

    fn connect_error(&self, e: ConnectError) -> Error {
        let e = self.connect_error_unnamed(e);
        match &self.server {
            Some(name) => Error::new(
                e.kind(),
                format!("server {} could not be reached: {}", ident::shown(name), e),
            ),
            None => e,
        }
    }

    fn connect_error_unnamed(&self, e: ConnectError) -> Error {
        match e {
            ConnectError::Timeout(limit) => Error::unavailable(format!(
                "cannot connect to {}: the server did not answer within {} (connect_timeout)",
                self.display,
                humantime::format_duration(limit)
            )),
            ConnectError::Hosts(each) => {
                let count = each.len();
                let kind = if each.iter().all(|(_, e)| matches!(e, ConnectError::Tls(_))) {
                    crate::error::ErrorKind::Setup
                } else {
                    crate::error::ErrorKind::Unavailable
                };
                let why: Vec<String> = each
                    .into_iter()
                    .map(|(host, e)| {
                        let text = self.connect_error_unnamed(e).to_string();
                        // "cannot connect to URL: why" -> "host:port: why"
                        let why = text.split_once(": ").map_or(text.as_str(), |(_, w)| w);
                        format!("{host}: {why}")
                    })
                    .collect();
                Error::new(
                    kind,
                    format!(
                        "cannot connect to any of the {count} hosts of {}: {}",
                        self.display,
                        why.join("; ")
                    ),
                )
            }
            ConnectError::Tls(msg) => {
                Error::setup(format!("cannot set up TLS for {}: {msg}", self.display))
            }
            ConnectError::Pg(e) => {
                let text = pg_message(&e);
                let note = match &self.password_note {
                    Some(note) if text.contains("password") => format!(" ({note})"),
                    _ => String::new(),
                };
                let message = format!(
                    "cannot connect to {}: {text}{}{note}",
                    self.display,
                    self.tls_hint(&e)
                );
                Error::unavailable(message).with_source(e)
            }
        }
    }

    async fn try_connect(
        &self,
        notices: Option<std::sync::mpsc::Sender<Notice>>,
    ) -> Result<Client, ConnectError> {
        // libpq's connect_timeout covers the whole exchange, not only the socket: a
        // server that accepts the connection and then never answers must not hang us.
        let limit = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(10));
        let hosts = self.one_config_per_host();
        if hosts.is_empty() {
            return match tokio::time::timeout(
                limit,
                self.try_connect_unbounded(&self.config, notices),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(ConnectError::Timeout(limit)),
            };
        }
        // As libpq: each host in turn, each with the whole connect_timeout, so one that
        // takes the connection and never answers does not keep us from the next.
        let mut failed = Vec::new();
        for (shown, config) in hosts {
            match tokio::time::timeout(limit, self.try_connect_unbounded(&config, notices.clone()))
                .await
            {
                Ok(Ok(client)) => return Ok(client),
                Ok(Err(e)) => failed.push((shown, e)),
                Err(_) => failed.push((shown, ConnectError::Timeout(limit))),
            }
        }
        Err(ConnectError::Hosts(failed))
    }

    /// For a list of hosts, one configuration per host (`host:port` to show, and the
    /// configuration with that host alone); empty for a single host.
    fn one_config_per_host(&self) -> Vec<(String, Config)> {
        let all = &self.config;
        let hosts = all.get_hosts();
        if hosts.len() <= 1 {
            return Vec::new();
        }
        let (ports, addrs) = (all.get_ports(), all.get_hostaddrs());
        hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let mut c = Config::new();
                if let Some(v) = all.get_user() {
                    c.user(v);
                }
                if let Some(v) = all.get_password() {
                    c.password(v);
                }
                if let Some(v) = all.get_dbname() {
                    c.dbname(v);
                }
                if let Some(v) = all.get_options() {
                    c.options(v);
                }
                if let Some(v) = all.get_application_name() {
                    c.application_name(v);
                }
                if let Some(v) = all.get_connect_timeout() {
                    c.connect_timeout(*v);
                }
                if let Some(v) = all.get_tcp_user_timeout() {
                    c.tcp_user_timeout(*v);
                }
                if let Some(v) = all.get_keepalives_interval() {
                    c.keepalives_interval(v);
                }
                if let Some(v) = all.get_keepalives_retries() {
                    c.keepalives_retries(v);
                }
                c.ssl_mode(all.get_ssl_mode())
                    .ssl_negotiation(all.get_ssl_negotiation())
                    .keepalives(all.get_keepalives())
                    .keepalives_idle(all.get_keepalives_idle())
                    .target_session_attrs(all.get_target_session_attrs())
                    .channel_binding(all.get_channel_binding());
                let port = match ports {
                    [one] => *one,
                    many => many.get(i).copied().unwrap_or(5432),
                };
                c.port(port);
                if let Some(addr) = addrs.get(i) {
                    c.hostaddr(*addr);
                }
                let name = match host {
                    Host::Tcp(h) => {
                        c.host(h);
                        h.clone()
                    }
                    #[cfg(unix)]
                    Host::Unix(path) => {
                        c.host_path(path);
                        path.display().to_string()
                    }
                };
                (format!("{name}:{port}"), c)
            })
            .collect()
    }

    async fn try_connect_unbounded(
        &self,
        config: &Config,
        notices: Option<std::sync::mpsc::Sender<Notice>>,
    ) -> Result<Client, ConnectError> {
        let link = Arc::new(Link {
            server: self.shown(),
            read_timeout: self.read_timeout,
            abandon: CancellationToken::new(),
        });
        let abandon = link.abandon.clone();
        if self.sslmode == SslMode::Disable {
            let (client, conn) = config.connect(NoTls).await.map_err(ConnectError::Pg)?;
            drive(conn, notices, self.live(), abandon);
            return Ok(Client {
                inner: client,
                link,
            });
        }
        let tls = self
            .tls
            .get_or_init(|| self.build_tls())
            .clone()
            .map_err(ConnectError::Tls)?;
        let client = match tls {
            Tls::Verifying(tls) => {
                let (client, conn) = config.connect(tls).await.map_err(ConnectError::Pg)?;
                drive(conn, notices, self.live(), abandon);
                client
            }
            Tls::Encrypting(tls) => {
                let (client, conn) = config.connect(tls).await.map_err(ConnectError::Pg)?;
                drive(conn, notices, self.live(), abandon);
                client
            }
        };
        Ok(Client {
            inner: client,
            link,
        })
    }
}

/// A connection tenantctl opened for its own queries (a [`tokio_postgres::Client`], which
/// it derefs to), knowing which server it reaches, so that its reads can be bounded and
/// their errors name the server (see [`read`]).
pub struct Client {
    inner: tokio_postgres::Client,
    link: Arc<Link>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.link.server)
    }
}

impl std::ops::Deref for Client {
    type Target = tokio_postgres::Client;

    fn deref(&self) -> &tokio_postgres::Client {
        &self.inner
    }
}

impl std::ops::DerefMut for Client {
    fn deref_mut(&mut self) -> &mut tokio_postgres::Client {
        &mut self.inner
    }
}

impl Client {
    /// Whether the connection was given up after a read that did not answer in time (or
    /// closed for any other reason): nothing more is sent on it.
    pub fn abandoned(&self) -> bool {
        self.link.abandon.is_cancelled() || self.inner.is_closed()
    }
}

/// What bounds the reads of one connection: how its errors name the server, the longest
/// a read waits, and the switch that closes the connection once a read waited that long.
#[derive(Debug)]
pub struct Link {
    server: String,
    read_timeout: Duration,
    abandon: CancellationToken,
}

impl Link {
    /// The error of a read that got no answer within `waited`; the connection is given
    /// up first, so no later query waits behind the one that hangs.
    fn timed_out(&self, doing: &str, waited: Duration) -> Error {
        self.abandon.cancel();
        Error::unavailable(format!(
            "{} did not answer within {} (run.read_timeout) while {doing}; its connection was given up",
            self.server,
            humantime::format_duration(waited)
        ))
    }

    /// A read's error: the server named when the connection is gone.
    fn query_error(&self, doing: &str, e: tokio_postgres::Error) -> Error {
        if e.is_closed() || transient(&e) == Some(Transient::Unavailable) {
            Error::unavailable(format!(
                "{} went away while {doing}: {}",
                self.server,
                pg_message(&e)
            ))
            .with_source(e)
        } else {
            query_error(doing)(e)
        }
    }
}

/// A connection tenantctl's own reads can go through (see [`read`]): one it opened
/// ([`Client`]), whose reads are bounded, or a bare [`tokio_postgres::Client`] (a tenant
/// session's, or the one a registry reconnection made), whose reads are not.
pub trait Reads: Sync {
    /// The connection itself.
    fn pg(&self) -> &tokio_postgres::Client;
    /// What bounds its reads, if anything does.
    fn link(&self) -> Option<&Link>;
}

impl Reads for tokio_postgres::Client {
    fn pg(&self) -> &tokio_postgres::Client {
        self
    }

    fn link(&self) -> Option<&Link> {
        None
    }
}

impl Reads for Client {
    fn pg(&self) -> &tokio_postgres::Client {
        &self.inner
    }

    fn link(&self) -> Option<&Link> {
        Some(&self.link)
    }
}

/// Runs one of tenantctl's own reads (`fut`, a query on `on`'s connection): on a
/// connection tenantctl opened it waits at most `run.read_timeout`, after which the
/// connection is given up (closed: never used again) and the error names the server and
/// how long it waited; a connection that went away is named too. `doing` says what was
/// being read ("reading the registry").
pub async fn read<T>(
    on: &(impl Reads + ?Sized),
    doing: &str,
    fut: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Error> {
    let Some(link) = on.link() else {
        return fut.await.map_err(query_error(doing));
    };
    if link.abandon.is_cancelled() {
        return Err(Error::unavailable(format!(
            "{} did not answer an earlier read in time, so its connection was given up before {doing}",
            link.server
        )));
    }
    match tokio::time::timeout(link.read_timeout, fut).await {
        Ok(result) => result.map_err(|e| link.query_error(doing, e)),
        Err(_) => Err(link.timed_out(doing, link.read_timeout)),
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
/// Once `abandon` is cancelled the connection is closed: every later query on its client
/// fails at once, and nothing more is read from or sent to the server.
fn drive<S, T>(
    mut conn: Connection<S, T>,
    notices: Option<std::sync::mpsc::Sender<Notice>>,
    live: Option<Live>,
    abandon: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        // Counts as one of the run's open connections until the connection ends.
        let _live = live;
        loop {
            let message = tokio::select! {
                biased;
                () = abandon.cancelled() => break,
                m = futures::future::poll_fn(|cx| conn.poll_message(cx)) => m,
            };
            match message {
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
    /// The server took the connection but did not finish the startup exchange in time
    /// (a frozen or black-holed server).
    Timeout(Duration),
    /// Every host of a list failed: each with how (`host:port`, error), in order.
    Hosts(Vec<(String, ConnectError)>),
}

impl ConnectError {
    /// Whether it may pass by itself, and how (see [`transient`]); for several hosts,
    /// the first of theirs that may.
    fn transient(&self) -> Option<Transient> {
        match self {
            ConnectError::Pg(e) => transient(e),
            ConnectError::Tls(_) => None,
            ConnectError::Timeout(_) => Some(Transient::Unavailable),
            ConnectError::Hosts(each) => each.iter().find_map(|(_, e)| e.transient()),
        }
    }
}

/// What the connections of one bulk run share (see [`Target::for_run`]).
#[derive(Debug, Default)]
struct RunConnections {
    state: Mutex<RunState>,
    interrupt: Option<Interrupt>,
}

impl RunConnections {
    fn interrupted(&self) -> bool {
        self.interrupt.as_ref().is_some_and(Interrupt::requested)
    }
}

#[derive(Debug, Default)]
struct RunState {
    /// Connections of the run that are open now.
    live: usize,
    /// When the run's current connection trouble began; cleared whenever one of its
    /// connections opens or ends (progress: a slot was taken or freed).
    trouble_since: Option<tokio::time::Instant>,
}

/// Held by a connection's driver task: the connection counts as live until it ends.
struct Live(Arc<RunConnections>);

impl Drop for Live {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.live = state.live.saturating_sub(1);
        state.trouble_since = None;
    }
}

/// The connection settings the database URL gives (none without a URL), with the URL's
/// `sslmode` and `sslrootcert`, which tokio-postgres does not read itself.
fn parse_url(settings: &Settings) -> Result<(Config, crate::pg::libpq::Split), Error> {
    let Some(url) = &settings.database_url else {
        return Ok((Config::new(), Default::default()));
    };
    let malformed = |e: String| {
        Error::setup(format!(
            "the database URL from {} is malformed: {e}; expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE or libpq's key=value form",
            url.origin
        ))
    };
    let split = crate::pg::libpq::split(&url.value).map_err(malformed)?;
    let config = Config::from_str(&split.rest).map_err(|e| malformed(e.to_string()))?;
    Ok((config, split))
}

/// Fills what the connection string left out from service `name`'s parameters (sslmode,
/// sslrootcert, sslcert, sslkey, sslpassword and passfile are read by the caller); one tenantctl cannot use is refused.
fn apply_service(
    config: &mut Config,
    params: &[(String, String)],
    name: &str,
) -> Result<(), Error> {
    let bad = |key: &str, v: &str| {
        Error::setup(format!(
            "service {}: {key} {} is not valid",
            ident::shown(name),
            ident::shown(v)
        ))
    };
    for (k, v) in params {
        match k.as_str() {
            "host" if config.get_hosts().is_empty() => {
                for h in v.split(',') {
                    config.host(h);
                }
            }
            "hostaddr" if config.get_hostaddrs().is_empty() => {
                for a in v.split(',') {
                    config.hostaddr(a.parse().map_err(|_| bad(k, a))?);
                }
            }
            "port" if config.get_ports().is_empty() => {
                for p in v.split(',') {
                    config.port(p.parse().map_err(|_| bad(k, p))?);
                }
            }
            "dbname" if config.get_dbname().is_none() => {
                config.dbname(v);
            }
            "user" if config.get_user().is_none() => {
                config.user(v);
            }
            "password" if config.get_password().is_none() => {
                config.password(v.as_bytes());
            }
            "application_name" if config.get_application_name().is_none() => {
                config.application_name(v);
            }
            "options" if config.get_options().is_none() => {
                config.options(v);
            }
            "connect_timeout" if config.get_connect_timeout().is_none() => {
                config.connect_timeout(libpq_connect_timeout(v)?);
            }
            "target_session_attrs" => {
                config.target_session_attrs(session_attrs(v).ok_or_else(|| bad(k, v))?);
            }
            "host" | "hostaddr" | "port" | "dbname" | "user" | "password" | "application_name"
            | "options" | "connect_timeout" | "sslmode" | "sslrootcert" | "passfile"
            | "sslcert" | "sslkey" | "sslpassword" => {}
            other => {
                return Err(Error::setup(format!(
                    "service {}: the parameter {other} is not supported by tenantctl",
                    ident::shown(name)
                )))
            }
        }
    }
    Ok(())
}

/// The `target_session_attrs` values tenantctl takes (libpq's others are refused).
fn session_attrs(value: &str) -> Option<tokio_postgres::config::TargetSessionAttrs> {
    use tokio_postgres::config::TargetSessionAttrs;
    match value {
        "any" => Some(TargetSessionAttrs::Any),
        "read-write" => Some(TargetSessionAttrs::ReadWrite),
        _ => None,
    }
}

/// libpq's `connect_timeout`: whole seconds, 0 or less for none (then tenantctl's
/// `database.connect_timeout` bounds it), and at least 2.
fn libpq_connect_timeout(value: &str) -> Result<Duration, Error> {
    let secs: i64 = value.trim().parse().map_err(|_| {
        Error::setup(format!(
            "connect_timeout {} is not a whole number of seconds",
            ident::shown(value)
        ))
    })?;
    Ok(Duration::from_secs(match secs {
        s if s <= 0 => 3600,
        s => s.clamp(2, 3600) as u64,
    }))
}

/// Takes the password from the password file when none was given (see
/// [`crate::pg::libpq::password_in`]); returns why the file was not used, if it was not.
fn password_from_file(
    config: &mut Config,
    passfile: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    if config.get_password().is_some() {
        return None;
    }
    let path = crate::pg::libpq::password_file(passfile, env)?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or_default().to_string();
    let db = config
        .get_dbname()
        .map_or_else(|| user.clone(), str::to_string);
    match crate::pg::libpq::password_in(&path, &host, port, &db, &user) {
        crate::pg::libpq::FromFile::Password(pw) => {
            config.password(pw.as_bytes());
            None
        }
        crate::pg::libpq::FromFile::None => None,
        crate::pg::libpq::FromFile::Unused(why) => Some(why),
    }
}

/// The client certificate libpq would present: `sslcert` (the connection string or its
/// service, else `PGSSLCERT`, else `~/.postgresql/postgresql.crt` when it exists) with
/// `sslkey` (likewise, default `~/.postgresql/postgresql.key`) and `sslpassword`. A
/// certificate that is named but missing is refused (libpq would quietly go without).
fn client_certificate(
    own: &dyn Fn(&str) -> Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<crate::pg::tls::ClientCert>, String> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    let home = var("HOME").map(|h| Path::new(&h).join(".postgresql"));
    let named_cert = own("sslcert")
        .filter(|v| !v.is_empty())
        .or_else(|| var("PGSSLCERT"));
    let cert = match named_cert {
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            if !path.exists() {
                return Err(format!(
                    "the client certificate sslcert {} does not exist",
                    path.display()
                ));
            }
            path
        }
        None => match home.as_ref().map(|h| h.join("postgresql.crt")) {
            Some(path) if path.exists() => path,
            _ => return Ok(None),
        },
    };
    let key = own("sslkey")
        .filter(|v| !v.is_empty())
        .or_else(|| var("PGSSLKEY"))
        .map(std::path::PathBuf::from)
        .or_else(|| home.map(|h| h.join("postgresql.key")));
    let Some(key) = key else {
        return Err(format!(
            "the client certificate sslcert {} has no private key: name it with sslkey",
            cert.display()
        ));
    };
    if !key.exists() {
        return Err(format!(
            "the private key sslkey {} of the client certificate {} does not exist",
            key.display(),
            cert.display()
        ));
    }
    let password = own("sslpassword");
    crate::pg::tls::ClientCert::load(&cert, &key, password.as_deref()).map(Some)
}

/// The sslmode in force. As in libpq, sslrootcert=system makes verify-full the default
/// and refuses anything weaker.
fn effective_sslmode(
    explicit: Option<SslMode>,
    named_root: Option<&RootCert>,
    display: &str,
) -> Result<SslMode, Error> {
    Ok(match (explicit, named_root) {
        (Some(mode), Some(RootCert::System)) if mode != SslMode::VerifyFull => {
            return Err(Error::setup(format!(
                "sslmode={} cannot be used with sslrootcert=system for {display}: the \
                 operating system's roots vouch for host names, so use sslmode=verify-full",
                mode.as_str()
            )))
        }
        (Some(mode), _) => mode,
        (None, Some(RootCert::System)) => SslMode::VerifyFull,
        (None, _) => SslMode::Prefer,
    })
}

/// The roots the server's certificate is checked against, how `config show` names them
/// and where they came from: the named ones, else libpq's default
/// `~/.postgresql/root.crt` when it exists. A verifying sslmode without roots is refused.
fn trusted_roots(
    sslmode: SslMode,
    named_root: Option<RootCert>,
    root_source: Source,
    env: &dyn Fn(&str) -> Option<String>,
    display: &str,
) -> Result<(Option<Roots>, Option<String>, Source), Error> {
    let default_root = env("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| Path::new(&h).join(".postgresql").join("root.crt"));
    let found = match (sslmode, named_root) {
        (SslMode::Disable, named) => (None, named.map(|r| r.to_string()), root_source),
        (_, Some(RootCert::System)) => (Some(Roots::System), Some("system".into()), root_source),
        (_, Some(RootCert::File(path))) => (
            Some(Roots::File(load_certs(&path)?)),
            Some(path.display().to_string()),
            root_source,
        ),
        // libpq's default root certificate, used only when it exists.
        (_, None) => match default_root.filter(|p| p.exists()) {
            Some(path) => (
                Some(Roots::File(load_certs(&path)?)),
                Some(path.display().to_string()),
                Source::Default,
            ),
            None => (None, None, Source::Default),
        },
    };
    if sslmode.verifies() && found.0.is_none() {
        let default_root = env("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| format!("{h}/.postgresql/root.crt"))
            .unwrap_or_else(|| "~/.postgresql/root.crt".into());
        return Err(Error::setup(format!(
            "sslmode={} for {display} needs a root certificate to verify the server \
             against, and there is none: name the CA file with sslrootcert (in the URL, \
             database.sslrootcert in the config file, or PGSSLROOTCERT without a URL), put \
             it at {default_root}, or use sslrootcert=system for the operating system's \
             trusted roots",
            sslmode.as_str()
        )));
    }
    Ok(found)
}

/// The wait before retry number `attempt` (0-based): 100 ms, doubling, at most 1 s.
///
/// Written out rather than taken from a retry crate such as `backon`: its jitter adds up
/// to a whole delay on top (so waits pass the 1 s cap), and its retry loop cannot express
/// [`Target::connect_patiently`]'s rules (no deadline while the run's other sessions are
/// connected, a deadline shared by the run otherwise, stopping when interrupted).
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1u32 << attempt.min(10))
        .min(Duration::from_secs(1))
}

/// `wait` scaled by a random factor in [0.5, 1], so sessions refused together do not
/// all come back at the same moment.
fn jittered(wait: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = match getrandom::fill(&mut b) {
        Ok(()) => u16::from_le_bytes(b),
        Err(_) => u16::MAX,
    };
    wait.mul_f64(0.5 + f64::from(r) / f64::from(u16::MAX) / 2.0)
}

/// Connection trouble that may pass by itself, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transient {
    /// The server is up but has no connection slot for this role, database or server
    /// now (`too_many_connections`, 53300); a session that ends frees one.
    Busy,
    /// The server cannot be reached (refused, reset, aborted, closed), or is starting
    /// up, shutting down, crashing or in recovery (57P01, 57P02, 57P03, class 08).
    Unavailable,
}

/// Whether a connection or query error is connection trouble that may pass by itself,
/// and of which kind; `None` for every other error. The one place that decides.
pub fn transient(e: &tokio_postgres::Error) -> Option<Transient> {
    if let Some(db) = e.as_db_error() {
        return classify_server(db.code().code(), db.message());
    }
    if e.is_closed() {
        return Some(Transient::Unavailable);
    }
    causes(e)
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .and_then(|io| classify_io(io.kind()))
}

/// [`transient`] for an error the server sent: its SQLSTATE and message.
fn classify_server(code: &str, message: &str) -> Option<Transient> {
    match code {
        "53300" => Some(Transient::Busy),
        "57P01" | "57P02" | "57P03" => Some(Transient::Unavailable),
        // A protocol violation does not pass by itself.
        "08P01" => None,
        c if c.starts_with("08") => Some(Transient::Unavailable),
        // "the database system is starting up / shutting down / in recovery mode /
        // not yet accepting connections", whatever code a proxy put on it.
        _ if message.starts_with("the database system is ") => Some(Transient::Unavailable),
        _ => None,
    }
}

/// [`transient`] for an error of the socket.
fn classify_io(kind: std::io::ErrorKind) -> Option<Transient> {
    use std::io::ErrorKind as K;
    matches!(
        kind,
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::UnexpectedEof
            | K::BrokenPipe
            | K::NotConnected
            // A Unix socket that is not there while the server restarts.
            | K::NotFound
    )
    .then_some(Transient::Unavailable)
}

impl Target {
    fn build_tls(&self) -> Result<Tls, String> {
        let mut builder = native_tls::TlsConnector::builder();
        match &self.roots {
            // libpq's sslrootcert file: the chain must lead to one of its certificates and
            // nothing else is trusted; only verify-full checks the host name.
            Some(Roots::File(certs)) => {
                builder.disable_built_in_roots(true);
                for cert in certs {
                    builder.add_root_certificate(cert.clone());
                }
                builder.danger_accept_invalid_hostnames(self.sslmode != SslMode::VerifyFull);
            }
            // sslrootcert=system: the operating system's roots, always with verify-full.
            Some(Roots::System) => {}
            // prefer/require without a root certificate: encrypt, don't verify (libpq).
            None => {
                return crate::pg::tls::Encrypting::new(self.client_cert.as_ref())
                    .map(Tls::Encrypting)
            }
        }
        if let Some(client) = &self.client_cert {
            builder.identity(client.identity()?);
        }
        let connector = builder.build().map_err(|e| e.to_string())?;
        Ok(Tls::Verifying(postgres_native_tls::MakeTlsConnector::new(
            connector,
        )))
    }

    /// What a failed TLS handshake means in terms of `sslmode` and `sslrootcert`, as a
    /// suffix for the connection error (empty when the failure was not about that).
    fn tls_hint(&self, e: &tokio_postgres::Error) -> String {
        // OpenSSL's verify results, e.g. "(hostname mismatch)", "(IP address mismatch)".
        let text = pg_message(e).to_lowercase();
        if text.contains("hostname mismatch") || text.contains("ip address mismatch") {
            let host = match self.config.get_hosts().first() {
                Some(Host::Tcp(h)) => h.clone(),
                _ => "localhost".into(),
            };
            format!(
                "; the server's certificate is not issued for host {host}: sslmode=verify-full \
                 checks that the host connected to is among the certificate's names (DNS or IP \
                 subject alternative names); connect by a name it lists, or use \
                 sslmode=verify-ca to check the chain only"
            )
        } else if text.contains("certificate verify failed") && self.roots.is_some() {
            format!(
                "; the server's certificate does not lead to a trusted root certificate \
                 (sslrootcert: {})",
                self.tls_shown.sslrootcert
            )
        } else {
            String::new()
        }
    }
}

/// Refuses a connection that goes through a transaction-pooling proxy (PgBouncer with
/// `pool_mode = transaction`): tenantctl holds session advisory locks across
/// transactions, and such a proxy runs each transaction in whichever server session is
/// free, so the locks would neither protect anything nor be released by their holder.
///
/// Checked once per command, on its first connection. Two transactions on `client` must
/// run in the same server session (`pg_backend_pid()`). A lone client would get its idle
/// server session back from the pool anyway, so a second connection holds a transaction
/// open in between: through a transaction pooler it is handed `client`'s server session,
/// or `client` is handed another one; directly or through a session pooler it has a
/// session of its own and `client`'s never changes.
pub async fn refuse_transaction_pooling(target: &Target, client: &Client) -> Result<(), Error> {
    let doing = "checking for a transaction-pooling proxy";
    let first = read(
        client,
        doing,
        backend_pid(client, "SELECT pg_backend_pid()"),
    )
    .await?;
    // The waits below are themselves the sign of a pool, so they are not errors; none
    // is longer than a read may be.
    let patience = target
        .config
        .get_connect_timeout()
        .copied()
        .unwrap_or_default()
        .min(target.read_timeout);
    // Without the second connection (no connection slots left, or a session pool with
    // no session to spare), the check is weaker but still catches a pool that hands out
    // another session.
    let probe = target.try_connect(None).await.ok();
    let held = match &probe {
        Some(p) => tokio::time::timeout(patience, backend_pid(p, "BEGIN; SELECT pg_backend_pid()"))
            .await
            .ok()
            .and_then(Result::ok)
            .filter(|&pid| pid != 0),
        None => None,
    };
    let second = if held == Some(first) {
        Some(Ok(first))
    } else {
        // Directly, this cannot wait; a transaction pool with no free session would wait
        // for the probe's, so waiting that long is itself the sign.
        tokio::time::timeout(patience, backend_pid(client, "SELECT pg_backend_pid()"))
            .await
            .ok()
    };
    // The probe's transaction ends; a server that does not answer that either has
    // stopped answering altogether, which is no sign of a pool.
    let mut answering = held.is_some();
    if let (Some(p), Some(_)) = (&probe, held) {
        answering = tokio::time::timeout(patience, p.simple_query("ROLLBACK"))
            .await
            .is_ok();
    }
    drop(probe);
    let seen = match second {
        Some(Ok(second)) if second == first && held != Some(first) => return Ok(()),
        Some(Ok(_)) if held == Some(first) => format!(
            "another connection was handed this connection's server session (backend pid {first}) between two of its transactions"
        ),
        Some(Ok(second)) => format!(
            "two transactions on one connection ran in different server sessions (backend pid {first}, then {second})"
        ),
        Some(Err(e)) => return Err(client.link.query_error(doing, e)),
        None if !answering => return Err(client.link.timed_out(doing, patience)),
        None => "a second transaction on one connection waited for a server session while another connection held one".to_string(),
    };
    Err(Error::setup(format!(
        "a transaction-pooling proxy was detected at {}: {seen}. tenantctl holds session \
         advisory locks across transactions, which such a proxy (e.g. PgBouncer with \
         pool_mode = transaction) hands to other clients; use a direct connection to \
         PostgreSQL or a session-pooled one (pool_mode = session)",
        target.display
    )))
}

/// The backend pid the last statement of `sql` returns, read with the simple protocol
/// (no prepared statement, which a pooler could run in another session).
async fn backend_pid(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<i32, tokio_postgres::Error> {
    let mut pid = 0;
    for message in client.simple_query(sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            pid = row.get(0).and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    Ok(pid)
}

/// Reads a PEM file of one or more certificates (a CA bundle, as libpq accepts).
impl Target {
    /// A target for a scratch instance this process started, listening only on the Unix
    /// socket in `socket_dir` on `port`: the same database and user as this target,
    /// no password, no TLS (a socket in a private directory needs neither).
    pub fn scratch_socket(&self, socket_dir: &std::path::Path, port: u16, name: &str) -> Target {
        let mut config = Config::new();
        config.host_path(socket_dir).port(port);
        if let Some(user) = self.config.get_user() {
            config.user(user);
        }
        if let Some(db) = self.config.get_dbname() {
            config.dbname(db);
        }
        if let Some(app) = self.config.get_application_name() {
            config.application_name(app);
        }
        config.connect_timeout(Duration::from_secs(10));
        let mut t = self.clone();
        t.display = format!(
            "postgres://{}@[{}]:{port}/{}",
            config.get_user().unwrap_or_default(),
            socket_dir.display(),
            config.get_dbname().unwrap_or_default()
        );
        t.config = config;
        t.sslmode = SslMode::Disable;
        t.roots = None;
        t.client_cert = None;
        t.password_note = None;
        t.tls = Default::default();
        t.run = None;
        t.server = Some(name.to_string());
        t
    }

    /// A copy that connects to database `dbname` of the same server, as the same user.
    pub fn on_database(&self, dbname: &str) -> Target {
        let mut t = self.clone();
        t.config.dbname(dbname);
        t
    }

    /// A copy that names itself `tenantctl RUN_ID` to the server (`application_name`),
    /// after the user's own name when one was given (`PGAPPNAME`, `application_name=`), so
    /// the sessions of a run can be recognised in `pg_stat_activity` and `pg_locks`.
    pub fn named_for_run(&self, run_id: &str) -> Target {
        let mut t = self.clone();
        let tag = format!("tenantctl {run_id}");
        let name = match self.config.get_application_name() {
            None | Some("tenantctl") => tag,
            // The user's name first, cut so that the tag fits the server's 63 bytes.
            Some(own) => {
                let room = 63usize.saturating_sub(tag.len() + 1);
                let mut cut = own.len().min(room);
                while !own.is_char_boundary(cut) {
                    cut -= 1;
                }
                format!("{} {tag}", &own[..cut])
            }
        };
        t.config.application_name(name);
        t
    }

    /// How to cancel the running statement of `client`, a connection from this target:
    /// over TLS whenever the connection may have used it, as the server expects.
    pub fn canceller(&self, client: &tokio_postgres::Client) -> Canceller {
        let tls = match self.sslmode {
            SslMode::Disable => None,
            _ => self.tls.get().and_then(|t| t.as_ref().ok()).cloned(),
        };
        Canceller::new(client.cancel_token(), tls)
    }
}

fn load_certs(path: &Path) -> Result<Vec<native_tls::Certificate>, Error> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::setup(format!("cannot read sslrootcert {}: {e}", path.display())))?;
    match native_tls::Certificate::stack_from_pem(&bytes) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(Error::setup(format!(
            "sslrootcert {} is not a PEM certificate: it holds no BEGIN CERTIFICATE block",
            path.display()
        ))),
        Err(e) => Err(Error::setup(format!(
            "sslrootcert {} is not a PEM certificate: {e}",
            path.display()
        ))),
    }
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
        // One port, or one per host of PGHOST, as libpq reads it.
        if let Some(p) = var("PGPORT") {
            for one in p.split(',') {
                let port = one.trim().parse::<u16>().map_err(|_| {
                    Error::setup(format!("PGPORT {} is not a port number", ident::shown(&p)))
                })?;
                config.port(port);
            }
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
        // An IPv6 address in brackets, as in a URL.
        Some(Host::Tcp(h)) if h.contains(':') => format!("[{h}]"),
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{db}")
}

pub use crate::pg::message::{causes, pg_message};

/// The first PostgreSQL error in any error's cause chain, formatted by [`pg_message`].
pub fn find_pg_message(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    causes(e)
        .find_map(|c| c.downcast_ref::<tokio_postgres::Error>())
        .map(pg_message)
}

/// Wraps a query error with what was being done: a failed operation, or an unavailable
/// server when the connection itself is gone. The database error is kept as its source.
pub fn query_error(doing: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| {
        let msg = format!("{doing}: {}", pg_message(&e));
        let error = if e.is_closed() {
            Error::unavailable(msg)
        } else {
            Error::failed(msg)
        };
        error.with_source(e)
    }
}

/// Makes the server notice within a second that this session's client is gone, even in
/// the middle of a long statement (`client_connection_check_interval`, PostgreSQL 14 and
/// newer; nothing on older servers): the load or index build of a killed tenantctl then
/// stops at once, instead of holding its locks until it ends and getting in the way of
/// the rerun. Lasts until the session's settings are reset; a failure is ignored.
pub async fn notice_dead_client(client: &Client) {
    let _ = client
        .batch_execute(
            "SELECT pg_catalog.set_config('client_connection_check_interval', '1000', false) \
             WHERE pg_catalog.current_setting('server_version_num')::int >= 140000",
        )
        .await;
}

/// Advisory-lock key spaces, so tenant locks never collide with the registry's.
#[derive(Debug, Clone, Copy)]
#[repr(i32)]
pub enum LockSpace {
    /// Per-tenant locks, keyed by schema name.
    Tenant = 0x7465_6e74,
    /// The registry's own migrations, keyed by registry schema.
    Registry = 0x7265_6769,
    /// The shared schema's migrations, keyed by the shared schema's name: taken
    /// exclusively to change it, shared by a tenant migration that requires it.
    Shared = 0x7368_6172,
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
        let t = Target::resolve(
            &settings(Some("postgres://alice:pw@[::1]:6543/app")),
            &|_| None,
        )
        .unwrap();
        assert_eq!(t.display(), "postgres://alice@[::1]:6543/app");
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
        let split = crate::pg::libpq::split(
            "postgres://u@h/db?sslmode=require&application_name=x&sslrootcert=/ca.pem",
        )
        .unwrap();
        assert_eq!(split.rest, "postgres://u@h/db?application_name=x");
        assert_eq!(split.get("sslmode"), Some("require"));
        assert_eq!(split.get("sslrootcert"), Some("/ca.pem"));
        let t = Target::resolve(
            &settings(Some("postgres://u@h/db?sslmode=disable")),
            &|_| None,
        )
        .unwrap();
        assert_eq!(t.sslmode, SslMode::Disable);
    }

    #[test]
    fn transient_server_errors_are_recognised_by_code_and_message() {
        let busy = Some(Transient::Busy);
        let down = Some(Transient::Unavailable);
        for (code, message, expected) in [
            ("53300", "too many connections for role \"app\"", busy),
            ("53300", "sorry, too many clients already", busy),
            (
                "53300",
                "remaining connection slots are reserved for roles with the SUPERUSER attribute",
                busy,
            ),
            (
                "57P01",
                "terminating connection due to administrator command",
                down,
            ),
            (
                "57P02",
                "terminating connection because of crash of another server process",
                down,
            ),
            ("57P03", "the database system is starting up", down),
            ("57P03", "the database system is shutting down", down),
            ("57P03", "the database system is in recovery mode", down),
            ("08006", "connection failure", down),
            ("08001", "could not connect", down),
            ("08000", "connection exception", down),
            (
                "XX000",
                "the database system is not yet accepting connections",
                down,
            ),
            ("08P01", "invalid startup packet layout", None),
            (
                "28P01",
                "password authentication failed for user \"app\"",
                None,
            ),
            ("3D000", "database \"nope\" does not exist", None),
            ("42P01", "relation \"t\" does not exist", None),
            ("40P01", "deadlock detected", None),
            ("55P03", "canceling statement due to lock timeout", None),
            (
                "57014",
                "canceling statement due to statement timeout",
                None,
            ),
            ("53200", "out of memory", None),
        ] {
            assert_eq!(classify_server(code, message), expected, "{code} {message}");
        }
    }

    #[test]
    fn transient_socket_errors_are_recognised_by_kind() {
        use std::io::ErrorKind as K;
        for kind in [
            K::ConnectionRefused,
            K::ConnectionReset,
            K::ConnectionAborted,
            K::UnexpectedEof,
            K::BrokenPipe,
            K::NotFound,
        ] {
            assert_eq!(classify_io(kind), Some(Transient::Unavailable), "{kind:?}");
        }
        for kind in [
            K::PermissionDenied,
            K::InvalidData,
            K::InvalidInput,
            K::TimedOut,
        ] {
            assert_eq!(classify_io(kind), None, "{kind:?}");
        }
    }

    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_and_patience_ends_with_the_budget() {
        let port = closed_port();
        let config = format!("host=127.0.0.1 port={port} user=u dbname=d connect_timeout=5");
        let Err(err) = tokio_postgres::connect(&config, NoTls).await else {
            panic!("something listens on 127.0.0.1:{port}");
        };
        assert_eq!(transient(&err), Some(Transient::Unavailable), "{err}");

        let url = format!("postgres://u:secret@127.0.0.1:{port}/d?sslmode=disable");
        let t = Target::resolve(&settings(Some(&url)), &|_| None).unwrap();
        let err = t
            .connect_patiently(Duration::from_millis(300))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert_eq!(err.kind(), crate::error::ErrorKind::Unavailable);
        assert!(
            text.contains(&format!(
                "cannot connect to postgres://u@127.0.0.1:{port}/d"
            )),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");

        // A run that was interrupted stops waiting after its first attempt.
        let interrupt = Interrupt::new();
        interrupt.request();
        let err = t
            .for_run(interrupt)
            .connect_patiently(Duration::from_secs(3600))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cannot connect"), "{err}");
    }

    #[test]
    fn retry_waits_double_to_a_cap_and_jitter_stays_in_range() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(4), Duration::from_secs(1));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(1));
        let base = Duration::from_millis(1000);
        let waits: Vec<Duration> = (0..200).map(|_| jittered(base)).collect();
        assert!(
            waits.iter().all(|w| *w >= base / 2 && *w <= base),
            "{waits:?}"
        );
        assert!(
            waits.iter().any(|w| *w != waits[0]),
            "jitter varies the waits"
        );
    }

    #[test]
    fn malformed_urls_and_modes_are_setup_errors() {
        for url in [
            "postgres://u@h:notaport/db",
            "postgres://u@h/db?sslmode=allow",
            "postgres://u@h/db?sslmode=verify-fully",
            // verify-* without a root certificate (no HOME, so no ~/.postgresql/root.crt).
            "postgres://u@h/db?sslmode=verify-full",
            "postgres://u@h/db?sslmode=verify-ca",
            // The system's roots need verify-full.
            "postgres://u@h/db?sslmode=require&sslrootcert=system",
            "postgres://u@h/db?sslmode=disable&sslrootcert=system",
            "postgres://u@h/db?bogus=1",
        ] {
            let err = Target::resolve(&settings(Some(url)), &|_| None).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Setup, "{url}");
        }
    }

    #[test]
    fn tls_modes_follow_libpq() {
        let dir = std::env::temp_dir().join(format!("tenantctl-db-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".postgresql")).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, TEST_CERT).unwrap();
        let home = dir.display().to_string();
        let with_home = move |k: &str| (k == "HOME").then(|| home.clone());
        let url = |q: &str| settings(Some(&format!("postgres://u@h/db?{q}")));

        // sslrootcert=system alone means verify-full.
        let t = Target::resolve(&url("sslrootcert=system"), &|_| None).unwrap();
        assert_eq!(t.sslmode, SslMode::VerifyFull);
        assert!(matches!(t.roots, Some(Roots::System)));
        assert_eq!(t.tls_shown().sslrootcert, "system");
        // A named file, percent-encoded in the URL.
        let encoded = ca.display().to_string().replace('/', "%2F");
        let t = Target::resolve(
            &url(&format!("sslmode=verify-ca&sslrootcert={encoded}")),
            &|_| None,
        )
        .unwrap();
        assert_eq!(t.sslmode, SslMode::VerifyCa);
        assert!(matches!(&t.roots, Some(Roots::File(c)) if c.len() == 1));
        // No root certificate: require does not verify; the default root.crt is used
        // when it exists and makes verify-full possible.
        let t = Target::resolve(&url("sslmode=require"), &with_home).unwrap();
        assert!(t.roots.is_none());
        std::fs::copy(&ca, dir.join(".postgresql/root.crt")).unwrap();
        let t = Target::resolve(&url("sslmode=verify-full"), &with_home).unwrap();
        assert!(t.roots.is_some());
        assert!(t.tls_shown().sslrootcert.ends_with(".postgresql/root.crt"));
        // disable never reads a root certificate.
        let t =
            Target::resolve(&url("sslmode=disable&sslrootcert=/nonexistent"), &|_| None).unwrap();
        assert!(t.roots.is_none());
        // PGSSLMODE and PGSSLROOTCERT count only without a URL.
        let ca_path = ca.display().to_string();
        let env = move |k: &str| match k {
            "PGSSLMODE" => Some("verify-full".to_string()),
            "PGSSLROOTCERT" => Some(ca_path.clone()),
            "PGHOST" => Some("h".to_string()),
            _ => None,
        };
        let t = Target::resolve(&settings(None), &env).unwrap();
        assert_eq!(t.sslmode, SslMode::VerifyFull);
        assert_eq!(t.tls_shown().sslmode_source, Source::Environment);
        let t = Target::resolve(&settings(Some("postgres://u@h/db")), &env).unwrap();
        assert_eq!(t.sslmode, SslMode::Prefer);
        // A key=value string's sslmode is not lost.
        let t =
            Target::resolve(&settings(Some("host=h user=u sslmode=require")), &|_| None).unwrap();
        assert_eq!(t.sslmode, SslMode::Require);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A self-signed CA certificate; nothing connects with it.
    const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBkzCCATmgAwIBAgIUbsXOGmvz5sDsoEHcd71TK6qDokswCgYIKoZIzj0EAwIw
HjEcMBoGA1UEAwwTdGVuYW50Y3RsLXVuaXQtdGVzdDAgFw0yNjExMzAxNzUwNDBa
GA8yMTI2MTEwNjE3NTA0MFowHjEcMBoGA1UEAwwTdGVuYW50Y3RsLXVuaXQtdGVz
dDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABHAPriPSimMDihjOM7bh68cEXvk+
xWnCup+HDc1/CHZawj2YBP0485YfQOvv6zevnesDcPbPcGAwSUgVZigk8EajUzBR
MB0GA1UdDgQWBBQL9HM8eqPROAB3qaMBvPM55JOVQDAfBgNVHSMEGDAWgBQL9HM8
eqPROAB3qaMBvPM55JOVQDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gA
MEUCIQDS5dc3USqio/tNcKYCcIb+ZKg3dOrvwK5Xj3qT9l/0kAIgKc0ejEA2xYu+
Ys6rUPLwZ3beyyXHO7DKXtyi1xusKiY=
-----END CERTIFICATE-----
";
}
