//! `tenantctl serve`: the REST service (see [`crate::serve`]).

use crate::cli::exit::Exit;
use crate::error::Result;
use crate::serve::auth::Token;

use super::Ctx;

pub use crate::cli::ServeArgs as Args;

/// Checks the token and the registry, then serves until SIGTERM or Ctrl-C.
pub async fn run(mut ctx: Ctx, args: &Args) -> Result<Exit> {
    // A request has REQUEST_TIMEOUT; a server that stops answering must be reported
    // within it, not time the whole request out.
    let limit = ctx.settings.read_timeout.min(crate::serve::READ_TIMEOUT);
    ctx.settings.read_timeout = limit;
    ctx.servers = ctx.servers.with_read_timeout(limit);
    ctx.target = ctx.servers.default_target().clone();
    let token = Token::load(
        std::env::var("TENANTCTL_API_TOKEN").ok(),
        ctx.settings.serve_token_file.as_deref(),
    )?;
    // The registry must be there before the service says it listens.
    {
        let client = ctx.connect().await?;
        crate::registry::Registry::open(&client, &ctx.settings.registry_schema).await?;
    }
    let listen = args.listen.unwrap_or(ctx.settings.serve_listen);
    crate::serve::serve(ctx, listen, token).await?;
    Ok(Exit::Ok)
}
