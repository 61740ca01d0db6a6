//! `tenantctl metrics`: the fleet's Prometheus metrics, printed or written atomically to
//! a textfile for node_exporter (see [`crate::app::metrics`]).

use std::path::Path;

use crate::pg::db::Client;

use crate::cli::exit::Exit;
use crate::error::{Error, Result};
use crate::registry::Registry;

use super::Ctx;

pub use crate::cli::MetricsArgs as Args;

/// Prints the metrics, or writes them to --textfile.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    match &args.textfile {
        Some(path) => write(ctx, &client, &registry, path).await?,
        None => {
            let text = render(ctx, &client, &registry).await?;
            ctx.out.stream(|w| w.write_all(text.as_bytes()));
        }
    }
    Ok(Exit::Ok)
}

async fn render(ctx: &Ctx, client: &Client, registry: &Registry<'_>) -> Result<String, Error> {
    // Without a migrations directory, head is 0 and nothing counts as behind.
    let head = ctx.migrations().map(|s| s.head()).unwrap_or(0);
    let m =
        crate::app::metrics::gather(client, registry.tables(), head, ctx.servers.iter().count())
            .await?;
    Ok(crate::app::metrics::render(&m))
}

/// Writes the metrics to `path` atomically.
pub async fn write(
    ctx: &Ctx,
    client: &Client,
    registry: &Registry<'_>,
    path: &Path,
) -> Result<(), Error> {
    let text = render(ctx, client, registry).await?;
    crate::app::metrics::write_textfile(path, &text)
}
