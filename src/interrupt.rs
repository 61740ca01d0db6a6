//! Interruption: a flag that Ctrl-C or SIGTERM sets, which bulk runs check before they
//! start each tenant, so tenants in flight finish (commit or roll back) and are recorded.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Shared between the signal handler and the run. Cloning shares the flag.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    requested: AtomicBool,
    graceful_runs: AtomicUsize,
}

impl Interrupt {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks running work to stop starting tenants.
    pub fn request(&self) {
        self.inner.requested.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn requested(&self) -> bool {
        self.inner.requested.load(Ordering::SeqCst)
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
        i.clone().request();
        assert!(i.requested());
    }
}
