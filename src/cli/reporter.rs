//! Reporters: the command line's consumers of a run's [`RunEvent`]s, on stderr.
//!
//! A run sends its events on a channel; [`start`] spawns a task that shows them as a
//! progress bar (a terminal), one line per tenant (logs and CI), nothing (`-q`), or, for
//! a command on one tenant, only a long lock wait and the server's notices. [`Reporting::finish`] waits
//! until every event has been shown, so the report printed after it never interleaves
//! with progress.

#![allow(clippy::print_stderr)]

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::task::JoinHandle;

use crate::cli::output::{notice_line, NoticeLevel, Output, ProgressMode};
use crate::engine::progress::{progress_line, waiting_line};
use crate::engine::scheduler::{Events, ResultStatus, RunEvent};

/// How a run is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A bulk run: a bar on a terminal, else one line per finished tenant.
    Bulk,
    /// A command on one tenant: only lock waits and notices.
    Single,
}

/// A running reporter.
pub struct Reporting {
    task: JoinHandle<()>,
}

impl Reporting {
    /// Waits until every event sent has been shown. Every [`Events`] handle of the run
    /// must have been dropped first (the run is over).
    pub async fn finish(self) {
        let _ = self.task.await;
    }
}

/// Starts a reporter for a run whose progress lines say `verb`; the run sends its events
/// to the returned [`Events`].
pub fn start(out: &Output, verb: &'static str, style: Style) -> (Events, Reporting) {
    let (tx, rx) = unbounded_channel();
    let level = out.notice_level();
    let display = match (style, out.progress_mode()) {
        (Style::Single, mode) => Display::Single {
            terminal: mode == ProgressMode::Bar,
            spin: None,
        },
        (Style::Bulk, ProgressMode::Lines) => Display::Lines,
        (Style::Bulk, ProgressMode::Quiet) => Display::Quiet,
        (Style::Bulk, ProgressMode::Bar) => Display::Bar(Bar::new(verb)),
    };
    let task = tokio::spawn(show(rx, verb, level, display));
    (Events::to(tx), Reporting { task })
}

enum Display {
    /// One tenant: on a terminal, a spinner once a long step reports progress.
    Single {
        terminal: bool,
        spin: Option<indicatif::ProgressBar>,
    },
    Lines,
    /// Nothing (`-q`).
    Quiet,
    Bar(Bar),
}

async fn show(
    mut rx: UnboundedReceiver<RunEvent>,
    verb: &'static str,
    level: NoticeLevel,
    mut display: Display,
) {
    while let Some(event) = rx.recv().await {
        let line = match &event {
            RunEvent::Waiting {
                domain,
                schema_name,
                holder,
            } => Some(waiting_line(verb, domain, schema_name, holder.as_ref())),
            RunEvent::Notice { domain, notice } => notice_line(level, domain, notice),
            RunEvent::Shared(r) => Some(crate::engine::progress::shared_line(verb, r)),
            RunEvent::Finished(r) => match &display {
                Display::Lines => Some(progress_line(verb, r)),
                Display::Bar(_) if r.status == ResultStatus::Failed => Some(progress_line(verb, r)),
                _ => None,
            },
            _ => None,
        };
        match &mut display {
            Display::Bar(bar) => {
                if let Some(line) = line {
                    bar.bar.println(line);
                }
                bar.event(&event);
            }
            Display::Single {
                terminal: true,
                spin,
            } => {
                if let RunEvent::Progress { domain, message } = &event {
                    let spin = spin.get_or_insert_with(|| spinner(verb));
                    spin.set_message(format!("{domain}: {message}"));
                }
                match (line, spin.as_ref()) {
                    (Some(line), Some(spin)) => spin.println(line),
                    (Some(line), None) => eprintln!("{line}"),
                    _ => {}
                }
            }
            Display::Single { .. } | Display::Lines => {
                if let Some(line) = line {
                    eprintln!("{line}");
                }
            }
            Display::Quiet => {}
        }
    }
    if let Display::Single {
        spin: Some(spin), ..
    } = &display
    {
        spin.finish_and_clear();
    }
}

/// A spinner for one tenant's long steps; cleared when the run's events end.
fn spinner(verb: &'static str) -> indicatif::ProgressBar {
    let spin =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix} {spinner} {wide_msg} [{elapsed_precise}]")
    {
        spin.set_style(style);
    }
    spin.set_prefix(verb);
    spin.enable_steady_tick(std::time::Duration::from_millis(200));
    spin
}

/// A progress bar with the tenants in flight and the failure count.
struct Bar {
    bar: indicatif::ProgressBar,
    failed: usize,
    running: Vec<String>,
}

impl Bar {
    fn new(verb: &'static str) -> Bar {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(0),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {wide_msg} [{elapsed_precise}, eta {eta}]",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(verb);
        Bar {
            bar,
            failed: 0,
            running: Vec::new(),
        }
    }

    fn event(&mut self, event: &RunEvent) {
        match event {
            RunEvent::Began { total } => self.bar.set_length(*total as u64),
            RunEvent::Answered { .. } => self.bar.inc(1),
            RunEvent::Started { domain } => {
                self.running.push(domain.clone());
                self.refresh();
            }
            RunEvent::Finished(r) => {
                self.running.retain(|d| d != &r.domain);
                if r.status == ResultStatus::Failed {
                    self.failed += 1;
                }
                self.refresh();
                self.bar.inc(1);
            }
            RunEvent::Ended => self.bar.finish_and_clear(),
            RunEvent::Waiting { .. }
            | RunEvent::Notice { .. }
            | RunEvent::Progress { .. }
            | RunEvent::Shared(_) => {}
        }
    }

    fn refresh(&self) {
        let shown: Vec<&str> = self.running.iter().take(4).map(String::as_str).collect();
        let more = self.running.len().saturating_sub(shown.len());
        let mut msg = format!("failed: {}", self.failed);
        if !shown.is_empty() {
            msg.push_str(&format!(" | {}", shown.join(", ")));
            if more > 0 {
                msg.push_str(&format!(" +{more}"));
            }
        }
        self.bar.set_message(msg);
    }
}
