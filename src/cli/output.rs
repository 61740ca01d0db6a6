//! The one place that writes to the terminal: results on stdout (text tables or one JSON
//! document), and progress, notices and warnings on stderr.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;

use crate::engine::progress::status_word;
use crate::engine::scheduler::ResultStatus;
use crate::engine::scheduler::{RunReport, SharedResult};
use crate::pg::db::Notice;
use crate::registry::Tenant;
use crate::show::{revision, yes_no};

/// Whether a JSON document has been written to stdout; held while one is written, so an
/// abort never adds a second document or interleaves with the first.
static DOCUMENT: Mutex<bool> = Mutex::new(false);

/// Whether a write to stdout found it closed (a broken pipe, e.g. `tenantctl ... | head`).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Stdout was closed by its reader before all results were written. Not a failure: `main`
/// ends quietly with exit 0 when a command ends with this error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokenPipe;

impl std::fmt::Display for BrokenPipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed before all results were written")
    }
}

impl std::error::Error for BrokenPipe {}

/// `Err(BrokenPipe)` once a write found stdout closed: the command's outcome to report
/// instead of its own, since its results did not all reach the reader.
pub fn stdout_closed() -> Result<(), BrokenPipe> {
    if closed() {
        Err(BrokenPipe)
    } else {
        Ok(())
    }
}

fn closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// Remembers a broken pipe from a write to stdout; other write errors are dropped, as a
/// result that cannot be written has nowhere else to go.
fn note_closed(res: std::io::Result<()>) {
    if let Err(e) = res {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        }
    }
}

/// How many tenants that did not end well a bulk run's text report lists (`-v`: all).
pub const LISTED: usize = 50;

/// A terminal narrower than this gets a fleet report's tenants as lines, not a table.
const NARROW: u16 = 120;

/// Text or JSON results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and sentences for people.
    Text,
    /// Exactly one JSON document on stdout.
    Json,
}

/// How progress is shown for a bulk run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// An updating bar on stderr.
    Bar,
    /// One plain line per finished tenant on stderr.
    Lines,
    /// Nothing while the run goes (`-q`): the report says what went wrong.
    Quiet,
}

/// Decides how to show progress: nothing when quiet; a bar only on a terminal, outside
/// CI, with text output; otherwise one line per tenant.
pub fn progress_mode(
    stderr_is_terminal: bool,
    ci: bool,
    quiet: bool,
    format: Format,
) -> ProgressMode {
    if quiet {
        ProgressMode::Quiet
    } else if stderr_is_terminal && !ci && format == Format::Text {
        ProgressMode::Bar
    } else {
        ProgressMode::Lines
    }
}

/// Output settings for this run.
#[derive(Debug, Clone)]
pub struct Output {
    /// Text or JSON.
    pub format: Format,
    /// Fewer notices on stderr.
    pub quiet: bool,
    /// More detail.
    pub verbose: u8,
    stdout_tty: bool,
    progress: ProgressMode,
}

impl Output {
    /// Output settings from the flags and the environment.
    pub fn new(format: Format, quiet: bool, verbose: u8) -> Output {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
        Output {
            format,
            quiet,
            verbose,
            stdout_tty: std::io::stdout().is_terminal(),
            progress: progress_mode(std::io::stderr().is_terminal(), ci, quiet, format),
        }
    }

    /// Whether results are JSON.
    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// Writes a result to stdout. Once stdout is closed (a broken pipe) nothing more is
    /// written; see [`stdout_closed`].
    pub fn print(&self, text: &str) {
        if closed() {
            return;
        }
        let mut out = std::io::stdout().lock();
        let res = out.write_all(text.as_bytes()).and_then(|_| {
            if text.ends_with('\n') {
                Ok(())
            } else {
                out.write_all(b"\n")
            }
        });
        note_closed(res.and_then(|_| out.flush()));
    }

    /// Writes a result to stdout piece by piece through `write`, for results too large to
    /// build in memory first. Once stdout is closed, nothing more is written.
    pub fn stream(&self, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) {
        if closed() {
            return;
        }
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
        note_closed(write(&mut out).and_then(|_| out.flush()));
    }

    /// Writes one JSON document to stdout, streamed rather than built in memory first.
    /// Once stdout is closed, nothing more is written.
    pub fn json<T: Serialize>(&self, value: &T) {
        let mut written = DOCUMENT.lock().unwrap_or_else(|e| e.into_inner());
        *written = true;
        if closed() {
            return;
        }
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
        let res = serde_json::to_writer_pretty(&mut out, value)
            .map_err(std::io::Error::from)
            .and_then(|_| out.write_all(b"\n"))
            .and_then(|_| out.flush());
        note_closed(res);
    }

    /// A notice on stderr, unless quiet.
    pub fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    /// A warning on stderr, always.
    pub fn warn(&self, text: &str) {
        eprintln!("warning: {text}");
    }

    /// A table in the style for this terminal: fitted to its width (a width of 0 counts
    /// as none), or, off a terminal, plain ASCII unwrapped.
    pub fn table(&self, header: &[&str]) -> Table {
        let mut t = Table::new();
        if self.stdout_tty {
            t.load_preset(presets::UTF8_FULL_CONDENSED);
            // Fitted to the terminal's width, unless it reports none (0, as `script` and
            // some CI runners do): then one line per row, unwrapped.
            if t.width().is_some_and(|w| w > 0) {
                t.set_content_arrangement(ContentArrangement::Dynamic);
            }
        } else {
            t.load_preset(presets::ASCII_FULL_CONDENSED);
        }
        t.set_header(header.iter().copied());
        t
    }

    /// How progress is shown for a bulk run.
    pub fn progress_mode(&self) -> ProgressMode {
        self.progress
    }

    /// Which of the server's notices are shown.
    pub fn notice_level(&self) -> NoticeLevel {
        NoticeLevel {
            quiet: self.quiet,
            verbose: self.verbose > 0,
        }
    }

    /// Prints a run's results: a JSON document; or a summary line, the shared schema's
    /// results, and the tenants that did not end `ok` or `up_to_date` (every tenant with
    /// `-v`); with `-q`, nothing when all went well, else those on stderr.
    pub fn run_report(&self, verb: &str, report: &RunReport) {
        if self.is_json() {
            return self.json(report);
        }
        let s = &report.summary;
        let shared_failed = report
            .shared
            .iter()
            .filter(|r| r.status == ResultStatus::Failed)
            .count();
        let mut summary = format!(
            "{}: {} ok, {} up to date, {} failed, {} skipped in {} ms (run {})",
            crate::show::count(s.total, "tenant"),
            s.ok,
            s.up_to_date,
            s.failed,
            s.skipped,
            s.duration_ms,
            report.run_id
        );
        if shared_failed > 0 {
            summary.push_str(&format!(
                "; the shared schema failed on {}",
                crate::show::count(shared_failed, "server")
            ));
        }
        // What did not end well: failed and skipped tenants, and a shared schema that did
        // not come through.
        // Failures that changed something or broke first, then refusals and what
        // could not be reached, then what was skipped, so the one real failure among
        // fifty refusals is on the screen.
        let mut attention: Vec<&crate::engine::scheduler::TenantResult> = report
            .results
            .iter()
            .filter(|r| !matches!(r.status, ResultStatus::Ok | ResultStatus::UpToDate))
            .collect();
        attention.sort_by_key(|r| match (r.status, r.cause) {
            (ResultStatus::Failed, crate::engine::scheduler::Cause::None) => 0,
            (ResultStatus::Failed, _) => 1,
            _ => 2,
        });
        if self.quiet {
            // Nothing on success; what went wrong on stderr.
            if attention.is_empty() && shared_failed == 0 && report.stopped.is_none() {
                return;
            }
            for r in report
                .shared
                .iter()
                .filter(|r| r.status == ResultStatus::Failed)
            {
                eprintln!("{}", crate::engine::progress::shared_line(verb, r));
            }
            for r in &attention {
                eprintln!("{}", crate::engine::progress::progress_line(verb, r));
            }
            if let Some(why) = &report.stopped {
                eprintln!("stopped early: {why}; the tenants not started are listed as skipped");
            }
            eprintln!("{summary}");
            return;
        }
        self.print(&summary);
        if let Some(why) = &report.stopped {
            eprintln!("stopped early: {why}; the tenants not started are listed as skipped");
        }
        if !report.shared.is_empty() {
            self.print(&self.shared_table(&report.shared));
        }
        // Every tenant with -v; else only those that did not end well, the first
        // [`LISTED`] of them, so a fleet's report fits a screen.
        let verbose = self.verbose > 0;
        let shown: Vec<&crate::engine::scheduler::TenantResult> = if verbose {
            report.results.iter().collect()
        } else {
            attention.iter().take(LISTED).copied().collect()
        };
        if shown.is_empty() {
            return;
        }
        // A narrow terminal gets a line per tenant: a table of eight columns there
        // would give each cell a few characters and each error dozens of lines.
        if self.stdout_tty && Table::new().width().is_some_and(|w| w > 0 && w < NARROW) {
            for r in &shown {
                self.print(&crate::engine::progress::progress_line(verb, r));
            }
        } else {
            self.print(&self.results_table(&shown));
        }
        if !verbose && attention.len() > LISTED {
            self.print(&format!(
                "and {} more; -v lists every tenant",
                attention.len() - LISTED
            ));
        }
    }

    /// Tenants' results as a table (with the archive each wrote, for a backup).
    fn results_table(&self, shown: &[&crate::engine::scheduler::TenantResult]) -> String {
        // A backup's results name the archive each one wrote.
        let files = shown.iter().any(|r| r.file.is_some());
        let mut header = vec![
            "tenant", "schema", "status", "from", "to", "applied", "ms", "error",
        ];
        if files {
            header.push("file");
        }
        let mut t = self.table(&header);
        for r in shown {
            let mut row = vec![
                r.domain.clone(),
                r.schema_name.clone(),
                status_word(r.status).to_string(),
                revision(r.from_revision),
                revision(r.to_revision),
                crate::show::versions(&r.applied),
                r.duration_ms.to_string(),
                r.error.clone().unwrap_or_default(),
            ];
            if files {
                row.push(r.file.clone().unwrap_or_default());
            }
            t.add_row(row);
        }
        t.to_string()
    }

    /// Prints what a change did to the shared schema of each server: `{"shared": [...]}`
    /// in JSON, else a table.
    pub fn shared_results(&self, results: &[SharedResult]) {
        if self.is_json() {
            return self.json(&crate::cli::schemas::SharedDoc { shared: results });
        }
        self.print(&self.shared_table(results));
    }

    fn shared_table(&self, results: &[SharedResult]) -> String {
        let mut t = self.table(&[
            "server",
            "shared schema",
            "status",
            "from",
            "to",
            "applied",
            "ms",
            "error",
        ]);
        for r in results {
            t.add_row(vec![
                r.server.clone(),
                r.schema.clone(),
                status_word(r.status).to_string(),
                revision(r.from),
                revision(r.to),
                crate::show::versions(&r.applied),
                r.duration_ms.to_string(),
                r.error.clone().unwrap_or_default(),
            ]);
        }
        t.to_string()
    }

    /// Prints registry rows as a table.
    pub fn tenant_table(&self, tenants: &[Tenant]) {
        let mut t = self.table(&[
            "id",
            "domain",
            "name",
            "type",
            "schema",
            "provisioned",
            "revision",
            "status",
            "key",
        ]);
        for x in tenants {
            t.add_row(vec![
                x.id.to_string(),
                x.domain.clone(),
                x.tenant_name.clone(),
                x.tenant_type.clone(),
                x.schema_name.clone(),
                yes_no(x.schema_provisioned).into(),
                revision(x.current_revision),
                x.status.as_str().into(),
                format!("{}…", x.api_key_prefix),
            ]);
        }
        self.print(&t.to_string());
    }

    /// Prints one action's result: its document with `--json`, else its sentence.
    pub fn outcome<T: Serialize>(&self, doc: &T, message: &str) {
        if self.is_json() {
            self.json(doc);
        } else {
            self.print(message);
        }
    }

    /// Prints `key: value` rows as a two-column table.
    pub fn pairs(&self, rows: &[(&str, String)]) {
        let mut t = self.table(&["field", "value"]);
        for (k, v) in rows {
            t.add_row(vec![k.to_string(), v.clone()]);
        }
        self.print(&t.to_string());
    }
}

/// Pending migrations for people: `VERSION NAME` joined by `, `, or `none`.
pub fn pending_list(pending: &[crate::registry::inspect::Pending]) -> String {
    if pending.is_empty() {
        return "none".into();
    }
    pending
        .iter()
        .map(|p| format!("{} {}", p.version, p.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Stdout held after an abort, so no other document reaches it; the caller ends the
/// process while holding it (`std::process::exit` runs no destructors).
pub struct Aborted(#[allow(dead_code)] MutexGuard<'static, bool>);

/// Reports an abort: `message` on stderr and, with JSON output during a run (`run_id`),
/// `{"interrupted": true, "run_id", "message"}` on stdout unless a document was already
/// written. Returns stdout held; the caller then ends the process.
pub fn abort(json: bool, run_id: Option<&str>, message: &str) -> Aborted {
    #[derive(Serialize, schemars::JsonSchema)]
    struct Doc<'a> {
        interrupted: bool,
        run_id: &'a str,
        message: &'a str,
    }
    let mut written = DOCUMENT.lock().unwrap_or_else(|e| e.into_inner());
    if let (true, false, Some(run_id)) = (json, *written, run_id) {
        let doc = Doc {
            interrupted: true,
            run_id,
            message,
        };
        if let Ok(text) = serde_json::to_string_pretty(&doc) {
            let mut out = std::io::stdout().lock();
            let _ = out
                .write_all(text.as_bytes())
                .and_then(|_| out.write_all(b"\n"))
                .and_then(|_| out.flush());
        }
        *written = true;
    }
    eprintln!("error: {message}");
    Aborted(written)
}

/// The rows that say who a tenant is, first in every view of one tenant.
pub fn identity_rows(t: &Tenant) -> Vec<(&'static str, String)> {
    vec![
        ("id", t.id.to_string()),
        ("domain", t.domain.clone()),
        ("name", t.tenant_name.clone()),
        ("type", t.tenant_type.clone()),
        ("email", t.email.clone().unwrap_or_default()),
        ("schema", t.schema_name.clone()),
        ("server", t.server.clone()),
    ]
}

/// Which of the server's notices are shown.
#[derive(Debug, Clone, Copy)]
pub struct NoticeLevel {
    /// `-q`: none.
    pub quiet: bool,
    /// `-v`: NOTICE and INFO too, not only warnings.
    pub verbose: bool,
}

/// The line shown on stderr for a server notice on a tenant, if it is shown:
/// `warning: DOMAIN: MESSAGE` for a WARNING or a truncated identifier (unless quiet),
/// `notice: DOMAIN: MESSAGE` for the others with `-v`.
pub fn notice_line(level: NoticeLevel, domain: &str, notice: &Notice) -> Option<String> {
    if level.quiet {
        None
    } else if notice.is_warning() {
        Some(format!("warning: {domain}: {}", notice.message))
    } else if level.verbose {
        Some(format!(
            "{}: {domain}: {}",
            notice.severity.to_ascii_lowercase(),
            notice.message
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::progress::progress_line;
    use crate::engine::scheduler::{ResultStatus, TenantResult};

    #[test]
    fn bar_only_on_a_quiet_free_terminal_outside_ci_with_text() {
        assert_eq!(
            progress_mode(true, false, false, Format::Text),
            ProgressMode::Bar
        );
        assert_eq!(
            progress_mode(false, false, false, Format::Text),
            ProgressMode::Lines
        );
        assert_eq!(
            progress_mode(true, true, false, Format::Text),
            ProgressMode::Lines
        );
        assert_eq!(
            progress_mode(true, false, true, Format::Text),
            ProgressMode::Quiet
        );
        assert_eq!(
            progress_mode(false, true, true, Format::Json),
            ProgressMode::Quiet
        );
        assert_eq!(
            progress_mode(true, false, false, Format::Json),
            ProgressMode::Lines
        );
    }

    #[test]
    fn warnings_show_unless_quiet_and_notices_only_when_verbose() {
        let n = |severity: &str, code: &str| Notice {
            severity: severity.into(),
            code: code.into(),
            message: "careful".into(),
        };
        let normal = NoticeLevel {
            quiet: false,
            verbose: false,
        };
        let verbose = NoticeLevel {
            quiet: false,
            verbose: true,
        };
        let quiet = NoticeLevel {
            quiet: true,
            verbose: true,
        };
        let warning = n("WARNING", "01000");
        let truncated = n("NOTICE", "42622");
        let notice = n("NOTICE", "00000");
        assert_eq!(
            notice_line(normal, "demo", &warning).as_deref(),
            Some("warning: demo: careful")
        );
        assert_eq!(
            notice_line(normal, "demo", &truncated).as_deref(),
            Some("warning: demo: careful")
        );
        assert_eq!(notice_line(normal, "demo", &notice), None);
        assert_eq!(
            notice_line(verbose, "demo", &notice).as_deref(),
            Some("notice: demo: careful")
        );
        for x in [&warning, &truncated, &notice] {
            assert_eq!(notice_line(quiet, "demo", x), None);
        }
    }

    #[test]
    fn progress_lines_name_the_tenant_and_the_error() {
        let r = TenantResult {
            tenant_id: 1,
            domain: "demo".into(),
            schema_name: "tenant_demo".into(),
            status: ResultStatus::Failed,
            from_revision: Some(2),
            to_revision: Some(3),
            applied: vec![3],
            error: Some("boom".into()),
            duration_ms: 12,
            file: None,
            schema_created: false,
            tenant: None,
            session_opened: true,
            cause: crate::engine::scheduler::Cause::None,
        };
        assert_eq!(
            progress_line("upgrade", &r),
            "upgrade demo: FAILED (2 -> 3, applied 3, 12 ms): boom"
        );
    }
}
