//! `tenantctl manpages DIR`: a man page for tenantctl and for each of its commands,
//! generated with `clap_mangen` from the same definitions as `--help`.

use clap::CommandFactory;

use crate::cli::exit::Exit;
use crate::cli::schemas::Written;
use crate::cli::Cli;
use crate::error::{Error, Result};

pub use crate::cli::ManpagesArgs as Args;

/// Writes `tenantctl.1` and `tenantctl-COMMAND[-SUBCOMMAND].1` into the directory, and
/// prints their paths (in JSON, a [`Written`]).
pub fn run(args: &Args, global: &crate::cli::GlobalOpts) -> Result<Exit> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| Error::usage(format!("cannot create {}: {e}", args.dir.display())))?;
    let mut written = Vec::new();
    let mut cli = Cli::command();
    cli.build();
    write_all(&cli, "tenantctl", &args.dir, &mut written)?;
    let out = crate::cli::output::Output::new(global.format(), true, 0);
    if out.is_json() {
        out.json(&Written {
            dir: args.dir.display().to_string(),
            pages: written,
        });
    } else {
        out.print(&written.join("\n"));
    }
    Ok(Exit::Ok)
}

/// The page of `cmd`, named `name`, then those of its subcommands.
fn write_all(
    cmd: &clap::Command,
    name: &str,
    dir: &std::path::Path,
    written: &mut Vec<String>,
) -> Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name.to_string())
        .render(&mut page)
        .map_err(|e| Error::failed(format!("rendering {name}.1: {e}")))?;
    std::fs::write(&path, page)
        .map_err(|e| Error::usage(format!("cannot write {}: {e}", path.display())))?;
    written.push(path.display().to_string());
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_all(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
