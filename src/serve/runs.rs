//! Fleet runs started through the API: their progress in memory while the service runs
//! (`GET /api/runs/{run_id}`), and the tasks the service waits for when it stops. A run
//! that is not in memory (an older one, or one from the command line) is read from the
//! ledger.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::registry::Summary;

/// The events kept per run (the oldest are dropped past this).
const KEPT_EVENTS: usize = 2000;

/// The finished runs kept in memory (older ones are read from the ledger).
const KEPT_RUNS: usize = 100;

/// A run as `GET /api/runs/{run_id}` shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RunView {
    /// Its id in the ledger.
    pub run_id: String,
    /// `running` or `finished`.
    pub state: &'static str,
    /// Its counts so far (final once finished).
    pub summary: Summary,
    /// What happened, one line per event, oldest first.
    pub events: Vec<String>,
    /// Why the run could not start or ended early, if it did.
    pub error: Option<String>,
}

/// The runs the service knows.
#[derive(Default)]
pub struct Runs {
    views: Mutex<HashMap<String, Arc<Mutex<RunView>>>>,
    tasks: tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Runs {
    /// Starts following a new run.
    pub fn begin(&self, run_id: &str) -> Arc<Mutex<RunView>> {
        let view = Arc::new(Mutex::new(RunView {
            run_id: run_id.to_string(),
            state: "running",
            summary: Summary::default(),
            events: Vec::new(),
            error: None,
        }));
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        if views.len() >= KEPT_RUNS {
            views.retain(|_, v| v.lock().unwrap_or_else(|p| p.into_inner()).state == "running");
        }
        views.insert(run_id.to_string(), view.clone());
        drop(views);
        view
    }

    /// A run's view, if the service started it.
    pub fn get(&self, run_id: &str) -> Option<RunView> {
        let views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        let view = views.get(run_id)?;
        let v = view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(v)
    }

    /// The runs still going, by id.
    pub fn running(&self) -> Vec<RunView> {
        let views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<RunView> = views
            .values()
            .map(|v| v.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .filter(|v| v.state == "running")
            .collect();
        out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        out
    }

    /// Keeps a run's task, so the service waits for it when it stops.
    pub async fn keep(&self, task: tokio::task::JoinHandle<()>) {
        let mut tasks = self.tasks.lock().await;
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Waits until every run has ended.
    pub async fn wait_all(&self) {
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock().await);
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Adds an event line to a run's view.
pub fn note(view: &Mutex<RunView>, line: String) {
    let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
    if v.events.len() >= KEPT_EVENTS {
        v.events.remove(0);
    }
    v.events.push(line);
}
