//! Interruption: what Ctrl-C or SIGTERM asks of the work under way, shared by the signal
//! handler (in `main`) and the engine.
//!
//! The first signal during a bulk run is a graceful stop, a [`CancellationToken`]: no new
//! tenant starts, tenants waiting for their advisory lock stop waiting, and tenants in
//! flight stop after their current migration. Any further signal, or a signal outside a
//! bulk run, aborts: every open tenant session's running statement is cancelled on the
//! server (each session registers its cancel token here while it is open), then the
//! process exits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::pg::cancel::Canceller;

/// Shared between the signal handler and the run. Cloning shares the state.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    stop: CancellationToken,
    /// Set once an abort has begun: nothing more is recorded about tenants in flight.
    aborting: std::sync::atomic::AtomicBool,
    graceful_runs: AtomicUsize,
    sessions: Mutex<Sessions>,
    run_id: Mutex<Option<String>>,
    /// What the first signal does, when the graceful run under way says it.
    stopping: Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct Sessions {
    next: u64,
    open: HashMap<u64, Canceller>,
}

/// What cancelling the open sessions did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cancelled {
    /// Tenant sessions that were open.
    pub sessions: usize,
    /// Cancel requests the server received.
    pub delivered: usize,
    /// Why the others could not be delivered (one entry per distinct reason).
    pub errors: Vec<String>,
}

impl Interrupt {
    /// Nothing asked yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks running work to stop gracefully (the first signal during a bulk run).
    pub fn request(&self) {
        self.inner.stop.cancel();
    }

    /// Whether an abort has begun (the running statements are being cancelled): what a
    /// tenant in flight ends with then is not recorded, as the abort's message says.
    pub fn aborting(&self) -> bool {
        self.inner.aborting.load(Ordering::SeqCst)
    }

    /// Whether a stop was asked for.
    pub fn requested(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    /// The token cancelled by [`Interrupt::request`]: work races it or checks it between
    /// steps.
    pub fn stop_token(&self) -> CancellationToken {
        self.inner.stop.clone()
    }

    /// Whether a bulk run that can stop gracefully is under way (otherwise a signal
    /// should end the process at once).
    pub fn graceful(&self) -> bool {
        self.inner.graceful_runs.load(Ordering::SeqCst) > 0
    }

    /// Marks a graceful run as under way until the guard is dropped.
    pub fn graceful_guard(&self) -> GracefulGuard {
        self.inner.graceful_runs.fetch_add(1, Ordering::SeqCst);
        GracefulGuard {
            inner: self.inner.clone(),
        }
    }

    /// Marks a graceful run as under way until the guard is dropped, saying what the first
    /// signal makes it do (shown when it comes).
    pub fn graceful_guard_saying(&self, stopping: &str) -> GracefulGuard {
        *self.inner.stopping.lock().expect("stopping lock") = Some(stopping.to_string());
        self.graceful_guard()
    }

    /// What the first signal makes the graceful run under way do, if it said.
    pub fn stopping(&self) -> Option<String> {
        self.inner.stopping.lock().expect("stopping lock").clone()
    }

    /// Remembers the id of the run under way, for the message (and JSON document) an
    /// abort prints.
    pub fn set_run_id(&self, run_id: &str) {
        *self.inner.run_id.lock().expect("run id lock") = Some(run_id.to_string());
    }

    /// The id of the run under way, if one started.
    pub fn run_id(&self) -> Option<String> {
        self.inner.run_id.lock().expect("run id lock").clone()
    }

    /// Registers an open tenant session, so an abort can cancel its running statement;
    /// it is forgotten when the returned guard is dropped (with the session).
    pub fn register(&self, canceller: Canceller) -> Registration {
        let mut sessions = self.inner.sessions.lock().expect("sessions lock");
        let id = sessions.next;
        sessions.next += 1;
        sessions.open.insert(id, canceller);
        Registration {
            inner: self.inner.clone(),
            id,
        }
    }

    /// How many tenant sessions are open.
    pub fn open_sessions(&self) -> usize {
        self.inner
            .sessions
            .lock()
            .expect("sessions lock")
            .open
            .len()
    }

    /// Sends a cancel request for every open tenant session's running statement and
    /// waits up to `within` for the server to receive them.
    pub async fn cancel_sessions(&self, within: Duration) -> Cancelled {
        self.inner.aborting.store(true, Ordering::SeqCst);
        let all: Vec<Canceller> = self
            .inner
            .sessions
            .lock()
            .expect("sessions lock")
            .open
            .values()
            .cloned()
            .collect();
        let mut out = Cancelled {
            sessions: all.len(),
            ..Cancelled::default()
        };
        let sent = futures::future::join_all(all.iter().map(|c| c.cancel()));
        match tokio::time::timeout(within, sent).await {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(()) => out.delivered += 1,
                        Err(e) if !out.errors.contains(&e) => out.errors.push(e),
                        Err(_) => {}
                    }
                }
            }
            Err(_) => out.errors.push(format!(
                "the server did not answer the cancel requests within {} s",
                within.as_secs()
            )),
        }
        out
    }
}

/// Ends a graceful section when dropped.
#[derive(Debug)]
pub struct GracefulGuard {
    inner: Arc<Inner>,
}

impl Drop for GracefulGuard {
    fn drop(&mut self) {
        self.inner.graceful_runs.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An open session's place in the set an abort cancels; removes it when dropped.
#[derive(Debug)]
pub struct Registration {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut sessions) = self.inner.sessions.lock() {
            sessions.open.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_and_guard() {
        let i = Interrupt::new();
        assert!(!i.requested() && !i.graceful());
        {
            let _g = i.clone().graceful_guard();
            assert!(i.graceful());
        }
        assert!(!i.graceful());
        let token = i.stop_token();
        i.clone().request();
        assert!(i.requested() && token.is_cancelled());
    }

    #[test]
    fn run_id_is_shared_by_clones() {
        let i = Interrupt::new();
        assert_eq!(i.run_id(), None);
        i.clone().set_run_id("r1");
        assert_eq!(i.run_id().as_deref(), Some("r1"));
    }
}
