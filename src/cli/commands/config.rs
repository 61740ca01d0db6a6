//! `tenantctl config show`: the effective configuration, where each value came from, with
//! secrets redacted.

use serde::Serialize;

use crate::cli::exit::Exit;
use crate::config::{self, Entry};
use crate::error::Result;

use super::Ctx;

pub use crate::cli::ConfigCommand;

/// The JSON document `config show` prints.
#[derive(Debug, Serialize)]
pub struct Shown {
    /// The config file that was read, if any.
    pub config_file: Option<String>,
    /// Every setting.
    pub settings: Vec<Entry>,
    /// The servers tenants live on, `default` first; URLs without their passwords.
    pub servers: Vec<ServerShown>,
}

/// One server in `config show`.
#[derive(Debug, Serialize)]
pub struct ServerShown {
    /// Its name.
    pub name: String,
    /// Where it is, without the password.
    pub url: String,
    /// Its tenants worked on at once in a bulk run.
    pub concurrency: usize,
    /// Its placement weight.
    pub weight: u32,
}

/// Shows the configuration; connects to nothing.
pub async fn run(ctx: &Ctx, cmd: &ConfigCommand) -> Result<Exit> {
    match cmd {
        ConfigCommand::Show => {
            let shown = Shown {
                config_file: ctx
                    .settings
                    .config_file
                    .as_ref()
                    .map(|p| p.display().to_string()),
                settings: config::describe(
                    &ctx.settings,
                    ctx.target.display(),
                    ctx.target.tls_shown(),
                ),
                servers: ctx
                    .servers
                    .iter()
                    .map(|(s, t)| ServerShown {
                        name: s.name.clone(),
                        url: t.display().to_string(),
                        concurrency: s.concurrency,
                        weight: s.weight,
                    })
                    .collect(),
            };
            if ctx.out.is_json() {
                ctx.out.json(&shown);
            } else {
                let mut t = ctx.out.table(&["key", "value", "source"]);
                for e in &shown.settings {
                    t.add_row(vec![e.key.to_string(), e.value.clone(), e.source_shown()]);
                }
                ctx.out.print(&t.to_string());
                let mut servers = ctx.out.table(&["server", "url", "concurrency", "weight"]);
                for s in &shown.servers {
                    servers.add_row(vec![
                        s.name.clone(),
                        s.url.clone(),
                        s.concurrency.to_string(),
                        s.weight.to_string(),
                    ]);
                }
                ctx.out.print(&servers.to_string());
                ctx.out.print(&format!(
                    "config file: {}",
                    shown.config_file.as_deref().unwrap_or("none")
                ));
            }
            Ok(Exit::Ok)
        }
    }
}
