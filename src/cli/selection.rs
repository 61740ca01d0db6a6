//! Which tenants a command works on, and how a bulk run over them goes: the flags that
//! `provision`, `upgrade`, `downgrade`, `stamp` and `current` share.

use clap::builder::{EnumValueParser, TypedValueParser};
use clap::{Args, ValueEnum};

use crate::registry::Status;

/// The flags of every command that changes tenants in bulk: which tenants, and how the
/// run over them goes.
#[derive(Debug, Clone, Args)]
pub struct Fleet {
    #[command(flatten)]
    pub selection: Selection,

    #[command(flatten)]
    pub bulk: BulkOpts,
}

/// Selecting tenants for a bulk command. Filters combine: `--type church --status failed`
/// is the failed churches; `--exclude` and `--shard` then narrow any selection.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Selection")]
pub struct Selection {
    /// A tenant by domain, id or schema name (repeatable).
    #[arg(
        short = 't',
        long = "tenant",
        value_name = "TENANT",
        conflicts_with = "all"
    )]
    pub tenants: Vec<String>,

    /// Every registered tenant.
    #[arg(long)]
    pub all: bool,

    /// Only tenants of this type (alone, it selects all tenants of the type).
    #[arg(long = "type", value_name = "TYPE")]
    pub tenant_type: Option<String>,

    /// Only tenants with this registry status, e.g. `--status failed` to retry failures.
    #[arg(long, value_name = "STATUS", value_parser = status_parser())]
    pub status: Option<Status>,

    /// Leave this tenant out (repeatable).
    #[arg(long, value_name = "TENANT")]
    pub exclude: Vec<String>,

    /// Only shard I of N (1-based), a stable partition by schema name, so N jobs can
    /// split one fleet: `--shard 1/4` ... `--shard 4/4`.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<(u32, u32)>,

    /// Only tenants on this server (alone, it selects all of them).
    #[arg(long, value_name = "NAME")]
    pub server: Option<String>,
}

/// Parses `I/N` with 1 <= I <= N.
pub fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s.split_once('/').ok_or("expected I/N, e.g. 1/4")?;
    let i: u32 = i.trim().parse().map_err(|_| "I must be a whole number")?;
    let n: u32 = n.trim().parse().map_err(|_| "N must be a whole number")?;
    if n == 0 || i == 0 || i > n {
        return Err(format!(
            "shard {i}/{n} is out of range: I must be between 1 and N"
        ));
    }
    Ok((i, n))
}

/// Options for commands that work on many tenants.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Rollout")]
pub struct BulkOpts {
    /// Tenants worked on at once, each on its own connection [default: run.concurrency, 4].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: Option<u16>,

    /// Stop starting new tenants after the first failure (same as --max-failures 1).
    #[arg(long, conflicts_with = "max_failures")]
    pub fail_fast: bool,

    /// Start no new tenant once K tenants have failed; exit 4.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_failures: Option<u32>,

    /// Work on N tenants first (of those that need work); if any of them fails, start no
    /// others and exit 4.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub canary: Option<u32>,

    /// After the run, write the fleet's Prometheus metrics to PATH atomically (for
    /// node_exporter's textfile collector).
    #[arg(long, value_name = "PATH")]
    pub metrics_textfile: Option<std::path::PathBuf>,
}

impl BulkOpts {
    /// The failure limit: 1 with --fail-fast, K with --max-failures, else none.
    pub fn max_failures(&self) -> Option<usize> {
        if self.fail_fast {
            Some(1)
        } else {
            self.max_failures.map(|k| k as usize)
        }
    }
}

/// A registry status as the command line spells it; the engine's [`Status`] stays free of
/// clap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StatusArg {
    /// Registered; no operation on its schema has succeeded yet.
    Pending,
    /// The last operation on its schema succeeded.
    Active,
    /// The last operation on its schema failed; see `last_error`.
    Failed,
}

impl From<StatusArg> for Status {
    fn from(s: StatusArg) -> Status {
        match s {
            StatusArg::Pending => Status::Pending,
            StatusArg::Active => Status::Active,
            StatusArg::Failed => Status::Failed,
        }
    }
}

/// Parses `--status` into the engine's [`Status`], offering the same values (with their
/// help) as a `value_enum` would.
pub fn status_parser() -> impl TypedValueParser<Value = Status> {
    EnumValueParser::<StatusArg>::new().map(Status::from)
}
