//! `tenantctl config show`: the effective configuration, where each value came from, with
//! secrets redacted; for a configuration that does not load, what could be read of the
//! file and the error, with its place.

use crate::cli::exit::Exit;
use crate::cli::output::Output;
use crate::cli::schemas::{Broken, ServerShown, Shown};
use crate::cli::GlobalOpts;
use crate::config;
use crate::error::Result;

use super::Ctx;

pub use crate::cli::ConfigCommand;

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
                    t.add_row(vec![e.key.to_string(), cell(&e.value), e.source_shown()]);
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
        for k in doc.read.iter().take(SHOWN_KEYS) {
            t.add_row(vec![k.key.clone(), cell(&k.value)]);
        }
        if !doc.read.is_empty() {
            out.print(&t.to_string());
        }
        if doc.read.len() > SHOWN_KEYS {
            out.print(&format!(
                "and {} more keys; -o json shows every one",
                doc.read.len() - SHOWN_KEYS
            ));
        }
        out.print(&format!(
            "config file: {} (does not load; the error follows)",
            doc.config_file.as_deref().unwrap_or("none")
        ));
    }
    Err(error.into())
}

/// How many keys of a broken file the text table shows.
const SHOWN_KEYS: usize = 200;

/// The longest value the text table shows whole (a long `[tenants.templates]`, say);
/// `-o json` shows every value whole.
const CELL_CHARS: usize = 300;

/// A value for the text table: cut at [`CELL_CHARS`] characters, saying so.
fn cell(value: &str) -> String {
    match value.char_indices().nth(CELL_CHARS) {
        Some((at, _)) => format!(
            "{}… ({} characters; -o json shows it whole)",
            &value[..at],
            value.chars().count()
        ),
        None => value.to_string(),
    }
}
