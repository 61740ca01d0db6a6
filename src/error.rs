//! The engine's error type: what kind of failure it is, a message that says how to fix it,
//! and the error that caused it.
//!
//! The engine never decides an exit code or an HTTP status: it says what kind of failure
//! happened ([`ErrorKind`]), and each client maps kinds at its own edge (the command line
//! in [`crate::cli::exit`]). Messages are complete sentences that already name their cause; the
//! cause is still kept as [`std::error::Error::source`] for callers that inspect it (for
//! example to ask [`crate::pg::db::transient`] whether a database error may pass by itself).

/// What kind of failure an [`Error`] is. Clients map kinds to their own codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The input is invalid: a flag, a name, a target, a refused confirmation.
    Invalid,
    /// A named tenant (or other named thing) does not exist.
    NotFound,
    /// The request conflicts with what exists (a domain already registered).
    Conflict,
    /// The setup is wrong: configuration, database URL, TLS, a registry that is missing or
    /// out of date, a broken migrations directory.
    Setup,
    /// The server could not be reached, or refused the connection.
    Unavailable,
    /// Refused for safety before anything changed (a drop that would reach outside the
    /// tenant's schema).
    Refused,
    /// The operation ran and failed.
    Failed,
    /// The work was asked to stop.
    Interrupted,
}

/// The cause of an [`Error`], when it has one.
type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An expected failure: its kind, a message that says how to fix it, and its cause.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Source>,
}

impl Error {
    /// A failure of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Keeps `source` as this error's cause (its text is expected in the message already).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message alone, without the cause.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The database error that caused this one, if one did.
    pub fn pg_source(&self) -> Option<&tokio_postgres::Error> {
        self.source.as_deref()?.downcast_ref()
    }
}

/// One constructor per kind: `Error::usage("...")` is `Error::new(ErrorKind::Invalid, "...")`.
macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $kind:ident;)*) => {
        impl Error {
            $(
                $(#[$doc])*
                pub fn $name(message: impl Into<String>) -> Self {
                    Error::new(ErrorKind::$kind, message)
                }
            )*
        }
    };
}

constructors! {
    /// Invalid input ([`ErrorKind::Invalid`]).
    usage => Invalid;
    /// A wrong setup ([`ErrorKind::Setup`]).
    setup => Setup;
    /// An operation that failed ([`ErrorKind::Failed`]).
    failed => Failed;
    /// A server that could not be reached ([`ErrorKind::Unavailable`]).
    unavailable => Unavailable;
    /// Something named that does not exist ([`ErrorKind::NotFound`]).
    not_found => NotFound;
    /// A conflict with what exists ([`ErrorKind::Conflict`]).
    conflict => Conflict;
    /// Refused for safety, nothing changed ([`ErrorKind::Refused`]).
    refused => Refused;
}

/// The first engine [`Error`] in an error chain, if there is one.
pub fn find(err: &anyhow::Error) -> Option<&Error> {
    err.chain().find_map(|cause| cause.downcast_ref::<Error>())
}

/// Shorthand for results whose error is an `anyhow` chain.
pub type Result<T, E = anyhow::Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_innermost_typed_error_is_found_even_under_context() {
        let err = Err::<(), _>(Error::setup("no registry"))
            .context("while listing tenants")
            .unwrap_err();
        assert_eq!(find(&err).map(Error::kind), Some(ErrorKind::Setup));
        assert!(find(&anyhow::anyhow!("boom")).is_none());
    }

    #[test]
    fn the_cause_is_kept_but_not_repeated_in_the_message() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::failed("writing the file failed: disk on fire").with_source(io);
        assert_eq!(e.to_string(), "writing the file failed: disk on fire");
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.to_string(), "disk on fire");
        assert!(e.pg_source().is_none());
    }
}

/// Problems for people, joined by `; `: the first `limit`, then how many more there are,
/// so a schema with thousands of them makes one readable line, and a bounded
/// `last_error` in the registry.
pub fn listed<T: std::fmt::Display>(items: &[T], limit: usize) -> String {
    let mut out = items
        .iter()
        .take(limit)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > limit {
        out.push_str(&format!(" (and {} more)", items.len() - limit));
    }
    out
}

#[cfg(test)]
mod listed_tests {
    #[test]
    fn lists_at_most_the_limit_and_counts_the_rest() {
        assert_eq!(super::listed(&[1, 2], 3), "1; 2");
        assert_eq!(super::listed(&[1, 2, 3], 3), "1; 2; 3");
        assert_eq!(super::listed(&[1, 2, 3, 4, 5], 3), "1; 2; 3 (and 2 more)");
        assert_eq!(super::listed::<i32>(&[], 3), "");
    }
}
