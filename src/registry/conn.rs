//! The registry connection of a bulk command, which survives a server restart.
//!
//! A fleet run records through this connection the results its tenants' own sessions
//! could not record (a session that died mid-run). A server restart closes it along with
//! those sessions; a write through a closed connection would lose the result, and the
//! registry would go on saying what is no longer true. [`RegistryConn::run`] therefore
//! notices a closed connection, reconnects (patiently, within
//! `database.connect_timeout`) and runs the operation once more on the new connection.

use std::sync::Arc;
use std::time::Duration;

use futures::lock::Mutex;
use tokio_postgres::Client;

use crate::error::Error;
use crate::pg::db::Target;

/// The command's registry connection, and the means to replace it when it is closed.
pub struct RegistryConn<'a> {
    target: Target,
    budget: Duration,
    first: &'a Client,
    /// The connection opened after `first` was found closed, if one was.
    replacement: Mutex<Option<Arc<Client>>>,
}

impl<'a> RegistryConn<'a> {
    /// Wraps the command's connection `first`; reconnections go to `target` and wait for
    /// the server for at most `budget` (`database.connect_timeout`).
    pub fn new(target: &Target, budget: Duration, first: &'a Client) -> RegistryConn<'a> {
        RegistryConn {
            target: target.clone(),
            budget,
            first,
            replacement: Mutex::new(None),
        }
    }

    /// Runs `op` on the registry connection. When it fails and the connection turns out
    /// to be closed, reconnects and runs `op` once more on the new connection; the
    /// operation must therefore be safe to repeat after a failure (one statement, or one
    /// transaction).
    pub async fn run<T>(&self, op: impl AsyncFn(&Client) -> Result<T, Error>) -> Result<T, Error> {
        let current = self.replacement.lock().await.clone();
        let client: &Client = current.as_deref().unwrap_or(self.first);
        let err = match op(client).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !closed(client).await {
            return Err(err);
        }
        let fresh = self.reconnect().await.map_err(|again| {
            Error::setup(format!(
                "{err}; the registry connection was closed and reconnecting failed: {again}"
            ))
        })?;
        op(&fresh).await
    }

    /// An open replacement connection: the one another caller opened already, or a new one.
    async fn reconnect(&self) -> Result<Arc<Client>, Error> {
        let mut slot = self.replacement.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Arc::new(self.target.connect_patiently(self.budget).await?);
        *slot = Some(c.clone());
        Ok(c)
    }
}

/// Whether a connection that just failed an operation is closed: the server may have
/// sent its last error (e.g. "terminating connection") before the connection is seen
/// to end, so an open-looking one is asked an empty query.
async fn closed(client: &Client) -> bool {
    client.is_closed() || client.batch_execute("").await.is_err()
}
