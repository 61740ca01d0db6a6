//! `tenantctl tenant rotate-key`: replace a tenant's API key; the new key is printed once.

use serde::Serialize;
use time::OffsetDateTime;

use crate::apikey::ApiKey;
use crate::cli::exit::Exit;
use crate::error::Result;
use crate::registry::{Event, Registry, Tenant};

use super::super::Ctx;

pub use crate::cli::tenant::RotateKeyArgs as Args;

/// The JSON document `tenant rotate-key` prints.
#[derive(Debug, Serialize)]
pub struct Rotated {
    /// The registry row after the change.
    pub tenant: Tenant,
    /// The new key; shown only here, stored only as a hash. The old key stops working.
    pub api_key: String,
    /// What happened, in a sentence.
    pub message: String,
}

/// Generates a new key and stores its hash; the old key no longer matches.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenant = registry.find(&args.tenant).await?;
    let key = ApiKey::generate()?;
    let tenant = registry
        .rotate_key(tenant.id, &key.hash(), &key.prefix())
        .await?;
    let run_id = crate::engine::scheduler::new_run_id()?;
    let host = crate::engine::scheduler::client_host();
    let event = Event {
        run_id: &run_id,
        action: "rotate-key",
        from_revision: tenant.current_revision,
        started_at: OffsetDateTime::now_utc(),
        client_host: &host,
    };
    registry.log(&tenant, &event, None).await?;
    let rotated = Rotated {
        message: format!(
            "new API key for tenant {}; the old key no longer works",
            tenant.domain
        ),
        tenant,
        api_key: key.reveal().to_string(),
    };
    if ctx.out.is_json() {
        ctx.out.json(&rotated);
    } else {
        ctx.out.print(&rotated.message);
        ctx.out.print(&format!(
            "API key (shown once, only its hash is stored): {}",
            rotated.api_key
        ));
    }
    Ok(Exit::Ok)
}
