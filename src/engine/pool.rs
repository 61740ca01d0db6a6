//! Warm sessions: the connections of a run, reused from one tenant to the next.
//!
//! A fresh backend costs more than a small tenant's DDL: connection setup, authentication,
//! and cold catalog caches on its first statements. A run therefore keeps the
//! connections its tenants finish with (at most one per concurrent tenant) and lends them
//! to the next tenants. A tenant's session takes its lock on a borrowed connection and
//! pins its settings; when the tenant is done, [`Pool::give_back`] releases every advisory
//! lock and resets everything a migration can leave in a session (temporary tables,
//! cursors, `LISTEN`, sequences' cached values, settings, role), and returns the
//! connection only when it is provably clean: no transaction left open, no prepared
//! statement a migration created, and nothing in the database that keeps state per
//! connection beyond a reset's reach (see [`crate::engine::plan::RELEASE`]). Anything else (an error, a closed
//! connection, a session that was cancelled) closes the connection; it is never reused.

use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_postgres::SimpleQueryMessage;

use crate::pg::db::Client;

use crate::config::Settings;
use crate::engine::plan::RELEASE;
use crate::error::Error;
use crate::pg::db::{self, Notices};

/// A connection with the notices it receives.
pub struct Conn {
    /// The connection.
    pub client: Client,
    /// Its notices and warnings.
    pub notices: Notices,
    /// Whether it served a tenant before.
    pub reused: bool,
    /// How many tenants it has served.
    served: usize,
}

/// The most tenants one connection serves before it is closed and a new one opened.
/// A backend keeps what it compiled for every table whose trigger fired in it (the
/// version index's trigger is compiled once per table it is on), and every later change
/// to a table's definition in that backend is checked against all of it: a connection
/// that served thousands of tenants makes each migration's DDL slower than the last. A
/// new connection every this many tenants keeps that bounded, for a connection's cost
/// spread over as many tenants.
pub const SESSION_TENANTS: usize = 200;

/// A run's idle connections to one server.
pub struct Pool {
    target: db::Target,
    idle: Mutex<Vec<Conn>>,
    /// Signalled when a connection is given back, so a session waiting for the server
    /// to accept a new connection can take it instead.
    returned: Notify,
    keep: bool,
}

impl Pool {
    /// A pool for a run's sessions on `target`.
    pub fn new(target: db::Target) -> Pool {
        Pool {
            target,
            idle: Mutex::new(Vec::new()),
            returned: Notify::new(),
            keep: true,
        }
    }

    /// A pool that keeps nothing: every session gets a new connection (a command on one
    /// tenant).
    pub fn single(target: db::Target) -> Pool {
        Pool {
            keep: false,
            ..Pool::new(target)
        }
    }

    /// Where its connections go.
    pub fn target(&self) -> &db::Target {
        &self.target
    }

    /// An idle connection, or a new one (connecting patiently, see
    /// [`db::Target::connect_patiently_with_notices`]). While it waits for the server to
    /// accept a new connection (a full server, or a restart), a connection another
    /// session gives back is taken instead: the run's own idle connections never keep
    /// one of its sessions waiting for a slot.
    pub async fn take(&self, settings: &Settings) -> Result<Conn, Error> {
        if let Some(conn) = self.pop_open() {
            return Ok(conn);
        }
        let connect = self.connect(settings);
        tokio::pin!(connect);
        loop {
            tokio::select! {
                conn = &mut connect => return conn,
                _ = self.returned.notified() => {
                    if let Some(conn) = self.pop_open() {
                        return Ok(conn);
                    }
                }
            }
        }
    }

    /// An idle connection that is still open.
    fn pop_open(&self) -> Option<Conn> {
        while let Some(conn) = self.pop() {
            if !conn.client.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    /// A new connection.
    pub async fn connect(&self, settings: &Settings) -> Result<Conn, Error> {
        let (client, notices) = self
            .target
            .connect_patiently_with_notices(settings.connect_timeout)
            .await?;
        Ok(Conn {
            client,
            notices,
            reused: false,
            served: 0,
        })
    }

    fn pop(&self) -> Option<Conn> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Resets a connection a tenant is done with and keeps it for the next tenant, if it
    /// is clean and has served fewer than [`SESSION_TENANTS`] tenants; otherwise closes
    /// it.
    pub async fn give_back(&self, mut conn: Conn) {
        conn.served += 1;
        if !self.keep
            || conn.served >= SESSION_TENANTS
            || conn.client.is_closed()
            || !clean(&conn.client).await
        {
            return;
        }
        // What the reset itself said is nobody's business.
        conn.notices.take();
        conn.reused = true;
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        self.returned.notify_one();
    }
}

/// Runs [`RELEASE`]; whether the connection came out clean.
async fn clean(client: &Client) -> bool {
    let Ok(messages) = client.simple_query(RELEASE).await else {
        return false;
    };
    messages.iter().any(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0) == Some("t"),
        _ => false,
    })
}

/// A run's pools, one per server, by server name.
#[derive(Default)]
pub struct Pools(Vec<(String, Pool)>);

impl Pools {
    /// One pool per `(server name, target)`.
    pub fn new(targets: impl IntoIterator<Item = (String, db::Target)>) -> Pools {
        Pools(
            targets
                .into_iter()
                .map(|(n, t)| (n, Pool::new(t)))
                .collect(),
        )
    }

    /// One pool that keeps nothing, for the server `name` (a command on one tenant).
    pub fn single(name: &str, target: db::Target) -> Pools {
        Pools(vec![(name.to_string(), Pool::single(target))])
    }

    /// The pool of the server named `name`.
    pub fn get(&self, name: &str) -> Option<&Pool> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }
}
