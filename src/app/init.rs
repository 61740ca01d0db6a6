//! `init` as an action: the registry created or upgraded, then the version index (see
//! [`crate::registry::versions`]) installed on every server and its trigger put on every
//! tenant's history table it cannot vouch for, so a fleet made before the index, or by
//! hand, is brought in by running `init` once.

use serde::Serialize;

use crate::app::context::Context;
use crate::error::Error;
use crate::registry::{self, versions, InitReport, Registry};

/// What `init` did: its JSON document.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Initialized {
    /// The registry.
    #[serde(flatten)]
    pub registry: InitReport,
    /// The version index on each server.
    pub index: Vec<ServerIndex>,
}

/// The version index on one server.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ServerIndex {
    /// The server.
    pub server: String,
    /// The schema the index is in.
    pub schema: String,
    /// Whether this run created or updated the index (false: it was there).
    pub installed: bool,
    /// Tenants whose history table this run put the trigger on or whose index row it
    /// recomputed.
    pub attached: usize,
    /// Whether the index's watch is armed on this server (its event triggers mark what
    /// each DDL command touches, so a fleet read needs no catalog lookup per tenant).
    pub watched: bool,
    /// Why it is not, when it is not: the index is then checked against the catalog
    /// for each tenant, which is exact, only slower.
    pub unwatched: Option<String>,
    /// Why the index could not be installed or brought up to date on this server: its
    /// tenants are then read in full, as before the index. `init` still succeeds.
    pub error: Option<String>,
}

/// Creates or upgrades the registry, then indexes every server's tenants. A server
/// the index cannot be installed on is reported, not an error.
pub async fn init(cx: &Context) -> Result<Initialized, Error> {
    let mut client = cx.connect().await?;
    let report = registry::init(&mut client, &cx.settings.registry_schema).await?;
    let registry = Registry::open(&client, &cx.settings.registry_schema).await;
    let tenants = match registry {
        Ok(registry) => registry.list(None, None).await?,
        // A newer registry this binary cannot read: nothing more to do.
        Err(_) => Vec::new(),
    };
    let mut index = Vec::new();
    for (server, target) in cx.servers.iter() {
        let schema = versions::schema_for(&server.name, &cx.settings.registry_schema);
        let schemas: Vec<String> = tenants
            .iter()
            .filter(|t| t.server == server.name)
            .map(|t| t.schema_name.clone())
            .collect();
        let mut entry = ServerIndex {
            server: server.name.clone(),
            schema: schema.to_string(),
            installed: false,
            attached: 0,
            watched: false,
            unwatched: None,
            error: None,
        };
        let done = async {
            let own;
            let c = if crate::registry::servers::is_default(&server.name) {
                &client
            } else {
                own = target.connect().await?;
                &own
            };
            entry.installed = versions::install(c, schema).await? == versions::Installed::Created;
            // The watch's event triggers first, then every row written anew under them,
            // then the watch armed: no DDL command falls between (see `versions::arm`).
            let watch = versions::prepare_watch(c, schema).await?;
            let table = &cx.settings.history_table;
            let arming = matches!(watch, versions::Preparing::Created(_));
            if arming {
                crate::failpoint!("index.watch-prepared");
            }
            let all = entry.installed || arming;
            entry.attached = versions::attach_all(c, target, schema, &schemas, table, all).await?;
            if arming {
                crate::failpoint!("index.rows-written");
            }
            match watch {
                versions::Preparing::Armed => entry.watched = true,
                versions::Preparing::Created(xmins) => {
                    entry.watched = versions::arm(c, schema, &xmins).await?;
                    if !entry.watched {
                        entry.unwatched = Some(
                            "the version index's event triggers changed while it was being armed: run `tenantctl init` again".into(),
                        );
                    }
                }
                versions::Preparing::Cannot(why) => entry.unwatched = Some(why),
            }
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = done {
            entry.error = Some(e.to_string());
        }
        index.push(entry);
    }
    Ok(Initialized {
        registry: report,
        index,
    })
}
