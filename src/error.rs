//! The error type for expected failures and the exit codes they map to.
//!
//! Every failure a user can cause or fix is an [`Error`] with a [`Exit`] code; anything
//! else bubbles up as an `anyhow` error and exits 1. `main` prints the whole cause chain.

use std::fmt;

/// The documented exit codes (README "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success, including nothing to do.
    Ok,
    /// The operation failed (one tenant, or an unexpected error).
    Failed,
    /// Usage error: bad flags or arguments, refused confirmation, invalid names.
    Usage,
    /// Setup error: config, database URL, connection, TLS, registry not initialised,
    /// or a broken migrations directory.
    Setup,
    /// A bulk run in which some tenants failed and the rest finished.
    Partial,
    /// `check` found drift.
    Drift,
    /// Interrupted by Ctrl-C or SIGTERM.
    Interrupted,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::Setup => 3,
            Exit::Partial => 4,
            Exit::Drift => 5,
            Exit::Interrupted => 130,
        }
    }
}

/// An expected failure with the exit code it maps to and a message that says how to fix it.
#[derive(Debug)]
pub struct Error {
    /// Which exit code this failure maps to.
    pub exit: Exit,
    message: String,
}

impl Error {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Error {
            exit: Exit::Usage,
            message: message.into(),
        }
    }
    /// A setup error (exit 3).
    pub fn setup(message: impl Into<String>) -> Self {
        Error {
            exit: Exit::Setup,
            message: message.into(),
        }
    }
    /// An operation failure (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Error {
            exit: Exit::Failed,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The exit code for an error chain: the first [`Error`] in it decides, otherwise 1.
pub fn exit_for(err: &anyhow::Error) -> Exit {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Error>())
        .map(|e| e.exit)
        .unwrap_or(Exit::Failed)
}

/// Shorthand for results whose error is an `anyhow` chain.
pub type Result<T, E = anyhow::Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn exit_codes_match_the_documented_table() {
        let table = [
            (Exit::Ok, 0),
            (Exit::Failed, 1),
            (Exit::Usage, 2),
            (Exit::Setup, 3),
            (Exit::Partial, 4),
            (Exit::Drift, 5),
            (Exit::Interrupted, 130),
        ];
        for (exit, code) in table {
            assert_eq!(exit.code(), code, "{exit:?}");
        }
    }

    #[test]
    fn the_innermost_typed_error_decides_even_under_context() {
        let err = Err::<(), _>(Error::setup("no registry"))
            .context("while listing tenants")
            .unwrap_err();
        assert_eq!(exit_for(&err), Exit::Setup);
        assert_eq!(exit_for(&anyhow::anyhow!("boom")), Exit::Failed);
    }
}
