//! Arguments of the commands that only look: `current`, `status`, `history`, `events`
//! and `check`.

use super::selection::Selection;

/// Arguments of `current`: the bulk commands' selection (default: every tenant).
#[derive(Debug, clap::Args)]
pub struct CurrentArgs {
    #[command(flatten)]
    pub selection: Selection,
}

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// One tenant: domain, id or schema name.
    #[arg(short, long, value_name = "TENANT", conflicts_with = "all")]
    pub tenant: Option<String>,

    /// Every registered tenant.
    #[arg(long)]
    pub all: bool,

    /// The shared schema on every server (or the one --server names).
    #[arg(long, conflicts_with_all = ["tenant", "all"])]
    pub shared: bool,

    /// With --shared: only this server.
    #[arg(long, value_name = "NAME", requires = "shared")]
    pub server: Option<String>,
}

/// Arguments of `history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// Show which migrations this tenant has applied (domain, id or schema name).
    #[arg(short = 't', long = "tenant", value_name = "TENANT")]
    pub tenant: Option<String>,

    /// The shared schema's migrations, and which each server has applied.
    #[arg(long, conflicts_with = "tenant")]
    pub shared: bool,

    /// With --shared: only this server.
    #[arg(long, value_name = "NAME", requires = "shared")]
    pub server: Option<String>,
}

/// Arguments of `events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Only this tenant (domain, id or schema name).
    #[arg(short = 't', long = "tenant", value_name = "TENANT")]
    pub tenant: Option<String>,

    /// Only this run (the run_id printed by upgrade and provision).
    #[arg(long = "run", value_name = "ID")]
    pub run: Option<String>,

    /// Only entries that did not succeed: failures and refusals.
    #[arg(long)]
    pub failed: bool,

    /// At most N entries, newest first.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
}

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Also read every history table in full and compare it with what the version
    /// index says: a tenant they disagree on is a problem (`index_mismatch`).
    #[arg(long)]
    pub deep: bool,
}
