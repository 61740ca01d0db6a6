//! `tenantctl config show`: the effective configuration, where each value came from, with
//! secrets redacted.

use serde::Serialize;

use crate::config::{self, Entry};
use crate::error::Result;
use crate::exit::Exit;

use super::Ctx;

pub use crate::cli::ConfigCommand;

/// The JSON document `config show` prints.
#[derive(Debug, Serialize)]
pub struct Shown {
    /// The config file that was read, if any.
    pub config_file: Option<String>,
    /// Every setting.
    pub settings: Vec<Entry>,
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
            };
            if ctx.out.is_json() {
                ctx.out.json(&shown);
            } else {
                let mut t = ctx.out.table(&["key", "value", "source"]);
                for e in &shown.settings {
                    t.add_row(vec![e.key.to_string(), e.value.clone(), e.source_shown()]);
                }
                ctx.out.print(&t.to_string());
                ctx.out.print(&format!(
                    "config file: {}",
                    shown.config_file.as_deref().unwrap_or("none")
                ));
            }
            Ok(Exit::Ok)
        }
    }
}
