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
    let mut line = format!(
        "{verb} shared schema {} on {}: {} ({} -> {}",
        crate::ident::quote(&r.schema),
        r.server,
        status_word(r.status),
        revision(r.from),
        revision(r.to)
    );
    if !r.applied.is_empty() {
        line.push_str(&format!(
            ", applied {}",
            r.applied
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    line.push_str(&format!(", {} ms)", r.duration_ms));
    if let Some(e) = &r.error {
        line.push_str(&format!(": {e}"));
    }
    line
}

/// One line per finished tenant, for logs and CI.
pub fn progress_line(verb: &str, r: &TenantResult) -> String {
    let mut line = format!(
        "{verb} {}: {} ({} -> {}",
        r.domain,
        status_word(r.status),
        revision(r.from_revision),
        revision(r.to_revision)
    );
    if !r.applied.is_empty() {
        line.push_str(&format!(
            ", applied {}",
            r.applied
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    line.push_str(&format!(", {} ms)", r.duration_ms));
    if let Some(f) = &r.file {
        line.push_str(&format!(" -> {f}"));
    }
    if let Some(e) = &r.error {
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
