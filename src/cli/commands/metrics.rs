//! `tenantctl metrics`: the fleet's Prometheus metrics, printed or written atomically to
//! a textfile for node_exporter (see [`crate::app::metrics`]).

use crate::app::metrics;
use crate::cli::exit::Exit;
use crate::error::Result;

use super::Ctx;

pub use crate::cli::MetricsArgs as Args;

/// Prints the metrics (as `{"metrics": [{"name", "labels", "value"}]}` with `-o json`),
/// or writes them to --textfile (always Prometheus's text).
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    match &args.textfile {
        Some(path) => metrics::write(ctx, path).await?,
        None => {
            let text = metrics::text(ctx).await?;
            if ctx.out.is_json() {
                ctx.out.json(&crate::cli::schemas::MetricsDoc {
                    metrics: metrics::samples(&text),
                });
            } else {
                ctx.out.stream(|w| w.write_all(text.as_bytes()));
            }
        }
    }
    Ok(Exit::Ok)
}
