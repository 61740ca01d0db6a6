//! [`Canceller`]: how to cancel one connection's running statement, over TLS when the
//! connection may have used it, as the server expects. The stop token keeps one per open
//! session ([`crate::pg::interrupt`]); connections make them ([`crate::pg::db`]).

use tokio_postgres::NoTls;

use crate::pg::tls::Tls;

/// Sends a cancel request for one connection's running statement (see
/// [`crate::pg::db::Target::canceller`]).
#[derive(Clone)]
pub struct Canceller {
    token: tokio_postgres::CancelToken,
    tls: Option<Tls>,
}

impl std::fmt::Debug for Canceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Canceller(tls: {})", self.tls.is_some())
    }
}

impl Canceller {
    /// A canceller for the connection `token` belongs to, over `tls` when the connection
    /// may have used it.
    pub fn new(token: tokio_postgres::CancelToken, tls: Option<Tls>) -> Canceller {
        Canceller { token, tls }
    }

    /// Asks the server to cancel the statement the connection is running, if any. Ok
    /// means the server received the request, not that a statement was running.
    pub async fn cancel(&self) -> Result<(), String> {
        let sent = match &self.tls {
            Some(Tls::Verifying(tls)) => self.token.cancel_query(tls.clone()).await,
            Some(Tls::Encrypting(tls)) => self.token.cancel_query(tls.clone()).await,
            None => self.token.cancel_query(NoTls).await,
        };
        sent.map_err(|e| crate::pg::message::pg_message(&e))
    }
}
