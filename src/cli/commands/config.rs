//! `tenantctl config show`: the effective configuration, where each value came from, with
//! secrets redacted; for a configuration that does not load, what could be read of the
//! file and the error, with its place.

use serde::Serialize;

use crate::cli::exit::Exit;
use crate::cli::output::Output;
use crate::cli::GlobalOpts;
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

/// The JSON document `config show` prints when the configuration does not load (the
/// error itself goes to stderr, exit 3, as for every command).
#[derive(Debug, Serialize)]
pub struct Broken {
    /// The config file that was named or found, if any.
    pub config_file: Option<String>,
    /// Every key the file sets, as written (URLs without passwords); empty when the
    /// file is not TOML.
    pub read: Vec<config::ReadKey>,
    /// Why the configuration does not load, with the line and column or the key.
    pub error: String,
}

/// `config show` for a configuration that does not load: prints what could be read,
/// then fails with `error` (exit 3).
pub fn broken(global: &GlobalOpts, error: crate::error::Error) -> anyhow::Result<Exit> {
    let out = Output::new(global.format(), global.quiet, global.verbose);
    let cwd = std::env::current_dir().unwrap_or_default();
    let env = |k: &str| std::env::var(k).ok();
    let readable = config::readable(&super::overrides(global, None), &env, &cwd);
    let doc = Broken {
        config_file: readable.config_file.map(|p| p.display().to_string()),
        read: readable.keys,
        error: error.to_string(),
    };
    if out.is_json() {
        out.json(&doc);
    } else {
        let mut t = out.table(&["key", "value (as written)"]);
        for k in &doc.read {
            t.add_row(vec![k.key.clone(), k.value.clone()]);
        }
        if !doc.read.is_empty() {
            out.print(&t.to_string());
        }
        out.print(&format!(
            "config file: {} (does not load; the error follows)",
            doc.config_file.as_deref().unwrap_or("none")
        ));
    }
    Err(error.into())
}
