//! A run's events as one line of a log: the same words in the command line's log lines
//! and progress bar and in the service's run views. The engine makes the line; each face
//! writes it where it writes.

use crate::engine::runner::LockHolder;
use crate::engine::scheduler::{ResultStatus, TenantResult};
use crate::show::revision;

/// A tenant's result in one word or two.
pub fn status_word(s: ResultStatus) -> &'static str {
    match s {
        ResultStatus::Ok => "ok",
        ResultStatus::UpToDate => "up to date",
        ResultStatus::Failed => "FAILED",
        ResultStatus::Skipped => "skipped",
    }
}

/// A server's shared schema done, as one line of progress:
/// `upgrade shared schema "public" on default: ok (1 -> 2, applied 2, 8 ms)`.
pub fn shared_line(verb: &str, r: &crate::engine::scheduler::SharedResult) -> String {
    let what = format!(
        "shared schema {} on {}",
        crate::ident::quote(&r.schema),
        r.server
    );
    line(
        verb,
        &what,
        r.status,
        (r.from, r.to),
        &r.applied,
        r.duration_ms,
        None,
        r.error.as_deref(),
    )
}

/// One line per finished tenant, for logs and CI.
pub fn progress_line(verb: &str, r: &TenantResult) -> String {
    line(
        verb,
        &r.domain,
        r.status,
        (r.from_revision, r.to_revision),
        &r.applied,
        r.duration_ms,
        r.file.as_deref(),
        r.error.as_deref(),
    )
}

/// `VERB WHAT: STATUS (FROM -> TO, applied V,V, N ms) -> FILE: ERROR`.
#[allow(clippy::too_many_arguments)]
fn line(
    verb: &str,
    what: &str,
    status: ResultStatus,
    (from, to): (Option<i32>, Option<i32>),
    applied: &[i32],
    duration_ms: u64,
    file: Option<&str>,
    error: Option<&str>,
) -> String {
    let mut line = format!(
        "{verb} {what}: {} ({} -> {}",
        status_word(status),
        revision(from),
        revision(to)
    );
    if !applied.is_empty() {
        line.push_str(&format!(", applied {}", crate::show::versions(applied)));
    }
    line.push_str(&format!(", {duration_ms} ms)"));
    if let Some(f) = file {
        line.push_str(&format!(" -> {f}"));
    }
    if let Some(e) = error {
        line.push_str(&format!(": {e}"));
    }
    line
}

/// The line saying a tenant waits for its lock and who holds it.
pub fn waiting_line(verb: &str, domain: &str, schema: &str, holder: Option<&LockHolder>) -> String {
    let who = holder.map_or_else(
        || "another session that could not be identified".to_string(),
        |h| h.to_string(),
    );
    format!(
        "{verb} {domain}: waiting for the lock on schema {}, held by {who}",
        crate::ident::quote(schema)
    )
}
