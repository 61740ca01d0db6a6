//! `[serve] backups = true`: the service runs `backup --due` into `backup.dir` itself,
//! when it starts and then once a minute. One such run goes at a time across every
//! `serve` process and cron job (they share the lock of `backup --due`); a tick that
//! finds another going backs up nothing, and the next one sees what is still due.

use std::time::Duration;

use crate::app::backups;
use crate::engine::scheduler::Events;
use crate::error::Error;

use super::{log_line, Shared};

/// How long between two ticks.
pub const TICK: Duration = Duration::from_secs(60);

/// Ticks until `stop`; a tick in progress finishes its tenants first (the run stops
/// starting new ones when the service is asked to stop).
pub async fn ticks(state: Shared, stop: tokio_util::sync::CancellationToken) {
    loop {
        match tick(&state).await {
            Ok(Some(report)) => {
                let s = &report.summary;
                log_line(&format!(
                    "backups: {} due, {} backed up, {} failed, {} skipped (run {})",
                    s.total, s.ok, s.failed, s.skipped, report.run_id
                ));
            }
            Ok(None) => {}
            Err(e) => log_line(&format!("backups: {e}")),
        }
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            () = stop.cancelled() => break,
        }
    }
}

/// One tick: the run's report, or `None` when nothing was due or another run was going.
pub async fn tick(state: &Shared) -> Result<Option<crate::engine::scheduler::RunReport>, Error> {
    let ctx = &state.ctx;
    let selection = crate::app::fleet::Selection {
        all: true,
        ..Default::default()
    };
    let mut begun = backups::begin(ctx, &selection, None, None, true).await?;
    if begun.overlapped || begun.started.tenants.is_empty() {
        return Ok(None);
    }
    let opts = ctx.run_options(None, None, None);
    let op = &begun.op;
    let report = begun
        .started
        .run_op(ctx, op, &opts, &Events::none())
        .await?;
    Ok(Some(report))
}
