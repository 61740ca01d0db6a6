//! `tenantctl serve`: the REST service the command line replaces, with a dashboard and
//! Prometheus metrics (the book's "Serve").
//!
//! One axum router on the command's tokio runtime. Every `/api` route and the dashboard
//! need the bearer token (or the dashboard's cookie, set by `GET /?token=`); `/healthz`
//! and `/metrics` need none and name no tenant. Handlers call the same engine the
//! command line does: requests on one tenant serialise on its advisory lock, as two
//! commands would. Errors are `{"detail": ...}` with the status the engine's error kind
//! maps to. Nothing here prints the token, an API key or a password.

pub mod api;
pub mod auth;
pub mod backups;
pub mod dashboard;
pub mod runs;
pub mod traffic;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pg::db::Client;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::Semaphore;

use crate::app::context::Context;
use crate::error::{Error, ErrorKind};

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// How long a request that is not a migration may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest the service waits for one of its own reads of a server (when
/// `run.read_timeout` is not shorter): a third of [`REQUEST_TIMEOUT`], so that a request
/// reports a server that stopped answering rather than time out as a whole.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client has to send a request's headers (also the longest a kept-alive
/// connection waits idle for its next request).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open connections may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Registry connections kept for requests.
const REGISTRY_CONNECTIONS: usize = 16;

/// What every handler shares.
pub struct AppState {
    /// The settings, servers and interruption, as a command has them.
    pub ctx: Context,
    /// The token requests must present.
    pub token: auth::Token,
    /// Fleet runs started through the API.
    pub runs: runs::Runs,
    /// Registry connections.
    pub pool: Clients,
    /// The requests answered, for `GET /metrics`.
    pub traffic: traffic::Traffic,
}

/// Shared state.
pub type Shared = Arc<AppState>;

/// An error as the API answers it: `{"detail": ...}` with a status.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The message.
    pub detail: String,
}

impl ApiError {
    /// An error with this status.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            detail: detail.into(),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let status = match e.kind() {
            ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict | ErrorKind::Refused => StatusCode::CONFLICT,
            ErrorKind::Setup | ErrorKind::Unavailable | ErrorKind::Interrupted => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "detail": self.detail })),
        )
            .into_response()
    }
}

/// Registry connections for requests: at most [`REGISTRY_CONNECTIONS`] at once (a
/// request waits for one rather than fail), kept open between requests.
pub struct Clients {
    target: crate::pg::db::Target,
    idle: std::sync::Mutex<Vec<Client>>,
    limit: Arc<Semaphore>,
}

/// A registry connection lent to a request. It goes back to the pool only through
/// [`Lease::done`]; a request that fails or is cancelled half-way closes it instead, so
/// no connection in an unknown state is lent again.
pub struct Lease<'a> {
    client: Option<Client>,
    pool: &'a Clients,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Clients {
    /// A pool connecting to `target`.
    pub fn new(target: crate::pg::db::Target) -> Clients {
        Clients {
            target,
            idle: Default::default(),
            limit: Arc::new(Semaphore::new(REGISTRY_CONNECTIONS)),
        }
    }

    /// A connection: an idle one that is still open, or a new one.
    pub async fn get(&self) -> Result<Lease<'_>, Error> {
        let permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| Error::unavailable("the service is shutting down"))?;
        let reused = loop {
            let next = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match next {
                Some(c) if !c.abandoned() => break Some(c),
                Some(_) => continue,
                None => break None,
            }
        };
        let client = match reused {
            Some(c) => c,
            None => self.target.connect().await?,
        };
        Ok(Lease {
            client: Some(client),
            pool: self,
            _permit: permit,
        })
    }
}

impl Lease<'_> {
    /// The connection.
    pub fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("a lease holds its client until done")
    }

    /// Gives the connection back for the next request.
    pub fn done(mut self) {
        // A connection given up after a read that hung is never lent again.
        if let Some(c) = self.client.take().filter(|c| !c.abandoned()) {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(c);
        }
    }
}

/// The router with every route and layer.
pub fn router(state: Shared) -> Router {
    let quick = Router::new()
        .route("/api/tenants", get(api::list_tenants))
        .route("/api/tenants/", post(api::create_tenant))
        .route(
            "/api/tenants/{tenant_id}/migration-status",
            get(api::migration_status),
        )
        .route("/api/fleet/status", get(api::fleet_status))
        .route("/api/fleet/upgrade", post(api::fleet_upgrade))
        .route("/api/runs/{run_id}", get(api::run_status))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    // Migrations and provisioning wait for the tenant's lock as long as it takes.
    let long = Router::new()
        .route("/api/tenants/provision-schema", post(api::provision_schema))
        .route("/api/tenants/run-migrations", post(api::run_migrations));
    let protected = quick
        .merge(long)
        .route("/", get(dashboard::overview_page))
        .route("/tenants", get(dashboard::tenants_page))
        .route("/tenants/{tenant}", get(dashboard::tenant_page))
        .route("/runs", get(dashboard::runs_page))
        .route("/runs/{run_id}", get(dashboard::run_page))
        .layer(middleware::from_fn_with_state(state.clone(), auth::require));
    Router::new()
        .merge(protected)
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), log))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found")
}

/// Answers every error as `{"detail": ...}`, also those axum and tower-http make as
/// plain text or with no body (a body over the limit, a timeout, a wrong method), keeping
/// their status and headers.
async fn json_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    // The API's errors are JSON already, and the dashboard's are pages of their own.
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"application/json") || v.as_bytes().starts_with(b"text/html")
        });
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut r = ApiError::new(status, detail).into_response();
    for (k, v) in &parts.headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            r.headers_mut().insert(k.clone(), v.clone());
        }
    }
    r
}

/// One line per request on stderr: method, path (never the query, which may carry the
/// token), status and time; and the request counted for `GET /metrics` under its route.
async fn log(
    axum::extract::State(state): axum::extract::State<Shared>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or(traffic::UNMATCHED, |m| m.as_str())
        .to_string();
    let response = next.run(req).await;
    let took = started.elapsed();
    state
        .traffic
        .record(&route, response.status().as_u16(), took);
    log_line(&format!(
        "{method} {} {} {} ms",
        crate::ident::shown(&path),
        response.status().as_u16(),
        took.as_millis()
    ));
    response
}

/// Serves connections from `listener` until `stop`, each with [`HEADER_TIMEOUT`] to send
/// its request headers (so a client that opens connections and sends nothing cannot hold
/// them); then stops accepting and gives open connections [`SHUTDOWN_GRACE`] to finish.
async fn accept(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: tokio_util::sync::CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                // Out of file descriptors and the like: wait, then go on accepting.
                Err(e) => {
                    log_line(&format!("accepting a connection failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = watched.await;
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => log_line(&format!(
            "stopping: connections still open after {} s are closed",
            SHUTDOWN_GRACE.as_secs()
        )),
    }
}

/// Runs the service on `listen` until the first SIGTERM or Ctrl-C: then it stops
/// accepting requests, lets requests in flight finish, and waits for the fleet runs it
/// started (they stop after their current migration, as a command's would).
/// `tenantctl serve`: checks the token and the registry, then serves on `listen` (else
/// the configured address) until SIGTERM or Ctrl-C.
pub async fn run(mut ctx: Context, listen: Option<SocketAddr>) -> Result<(), Error> {
    // A request has REQUEST_TIMEOUT; a server that stops answering must be reported
    // within it, not time the whole request out.
    let limit = ctx.settings.read_timeout.min(READ_TIMEOUT);
    ctx.settings.read_timeout = limit;
    ctx.servers = ctx.servers.with_read_timeout(limit);
    ctx.target = ctx.servers.default_target().clone();
    let token = auth::Token::load(
        std::env::var("TENANTCTL_API_TOKEN").ok(),
        ctx.settings.serve_token_file.as_deref(),
    )?;
    // The registry must be there before the service says it listens.
    {
        let client = ctx.connect().await?;
        crate::registry::Registry::open(&client, &ctx.settings.registry_schema).await?;
    }
    let listen = listen.unwrap_or(ctx.settings.serve_listen);
    serve(ctx, listen, token).await
}

/// Serves on `listen` until SIGTERM or Ctrl-C.
pub async fn serve(ctx: Context, listen: SocketAddr, token: auth::Token) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::setup(format!("cannot listen on {listen}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::setup(format!("cannot listen on {listen}: {e}")))?;
    let state = Arc::new(AppState {
        pool: Clients::new(ctx.target.clone()),
        token,
        runs: runs::Runs::default(),
        traffic: traffic::Traffic::default(),
        ctx,
    });
    // The service is a run that stops gracefully: the first signal asks it to stop.
    let _graceful = state.ctx.interrupt.graceful_guard();
    let stop = state.ctx.interrupt.stop_token();
    log_line(&format!("listening on http://{bound}"));
    // A run's future is not Send: the ticks run on a thread of their own, driven by the
    // service's runtime, as the API's fleet runs do.
    let ticks = state.ctx.settings.serve_backups.then(|| {
        let (handle, tick_state, tick_stop) = (
            tokio::runtime::Handle::current(),
            state.clone(),
            stop.clone(),
        );
        tokio::task::spawn_blocking(move || handle.block_on(backups::ticks(tick_state, tick_stop)))
    });
    accept(listener, router(state.clone()), stop).await;
    log_line("stopping: waiting for the fleet runs in flight");
    state.runs.wait_all().await;
    if let Some(ticks) = ticks {
        let _ = ticks.await;
    }
    log_line("stopped");
    Ok(())
}

/// One line of the service's log on stderr, with the time (UTC): the service's only
/// writer.
#[allow(clippy::print_stderr)]
pub(crate) fn log_line(text: &str) {
    eprintln!("{}", crate::show::log_line(text));
}
