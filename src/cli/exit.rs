//! The command line's exit codes (the book's "Exit codes"), and the one place that maps the
//! engine's error kinds and run outcomes to them. Nothing below the command line knows
//! an exit code.

use crate::engine::scheduler::RunOutcome;
use crate::error::{self, ErrorKind};

/// The documented exit codes.
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

/// The exit code for an error kind.
pub fn for_kind(kind: ErrorKind) -> Exit {
    match kind {
        ErrorKind::Invalid => Exit::Usage,
        ErrorKind::Setup | ErrorKind::Unavailable => Exit::Setup,
        ErrorKind::NotFound | ErrorKind::Conflict | ErrorKind::Refused | ErrorKind::Failed => {
            Exit::Failed
        }
        ErrorKind::Interrupted => Exit::Interrupted,
    }
}

/// The exit code for an error chain: the first engine error in it decides, otherwise 1.
pub fn for_error(err: &anyhow::Error) -> Exit {
    error::find(err).map_or(Exit::Failed, |e| for_kind(e.kind()))
}

/// The exit code for a bulk run's outcome.
pub fn for_run(outcome: RunOutcome) -> Exit {
    match outcome {
        RunOutcome::Complete => Exit::Ok,
        RunOutcome::Interrupted => Exit::Interrupted,
        RunOutcome::Unreachable => Exit::Setup,
        RunOutcome::Failed => Exit::Failed,
        RunOutcome::Partial => Exit::Partial,
    }
}

/// An error chain as one line: each context, then the engine error's own message, whose
/// text already names its cause (so the cause is not repeated).
pub fn render(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<error::Error>() {
            parts.push(e.message().to_string());
            break;
        }
        parts.push(cause.to_string());
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
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
    fn the_innermost_engine_error_decides_even_under_context() {
        let err = Err::<(), _>(Error::setup("no registry"))
            .context("while listing tenants")
            .unwrap_err();
        assert_eq!(for_error(&err), Exit::Setup);
        assert_eq!(for_error(&anyhow::anyhow!("boom")), Exit::Failed);
        assert_eq!(for_kind(ErrorKind::NotFound), Exit::Failed);
        assert_eq!(for_kind(ErrorKind::Unavailable), Exit::Setup);
    }

    #[test]
    fn a_rendered_chain_names_the_cause_once() {
        let io = std::io::Error::other("refused");
        let err =
            Err::<(), _>(Error::unavailable("cannot connect to db:5432: refused").with_source(io))
                .context("opening the registry")
                .unwrap_err();
        assert_eq!(
            render(&err),
            "opening the registry: cannot connect to db:5432: refused"
        );
    }
}
