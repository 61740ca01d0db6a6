//! Arguments of the commands that change tenants in bulk: `provision`, `upgrade`,
//! `downgrade`, `stamp` and `backup`.
//!
//! Each flattens [`Fleet`] (which tenants, and how a bulk run goes) and reaches its fields
//! through `Deref`, so `args.selection` and `args.bulk` read as before.

use super::selection::Fleet;

/// Arguments of `provision`.
#[derive(Debug, clap::Args)]
pub struct ProvisionArgs {
    #[command(flatten)]
    pub fleet: Fleet,

    /// Drop existing schemas with all their data and create them empty (asks first).
    #[arg(long, help_heading = "Mode")]
    pub force_recreate: bool,

    /// Confirm --force-recreate without asking (needed without a terminal).
    #[arg(long, help_heading = "Mode")]
    pub yes: bool,

    /// Print, per tenant, the exact SQL that would run; change nothing.
    #[arg(long, help_heading = "Mode")]
    pub dry_run: bool,
}

/// Arguments of `upgrade`.
#[derive(Debug, clap::Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub fleet: Fleet,

    /// Revision to upgrade to: a version number, head, or +N (N migrations above each
    /// tenant's own revision, as `alembic upgrade +N`).
    #[arg(
        default_value = "head",
        value_name = "TARGET",
        allow_negative_numbers = true,
        help_heading = "Arguments"
    )]
    pub target: String,

    /// The shared schema (`public` by default) on every server, or on the one --server
    /// names, instead of tenants.
    #[arg(long, help_heading = "Mode", conflicts_with_all = ["tenants", "all", "tenant_type", "status", "exclude", "shard", "canary", "max_failures", "fail_fast"])]
    pub shared: bool,

    /// Print, per tenant, the exact SQL that would run; change nothing.
    #[arg(long, help_heading = "Mode")]
    pub dry_run: bool,

    /// Print what each pending statement locks and rewrites (measured on a scratch
    /// copy) and the selected tenants with the largest tables it locks; change nothing
    /// (with or without --dry-run).
    #[arg(long, help_heading = "Mode", conflicts_with = "shared")]
    pub impact: bool,
}

/// Arguments of `downgrade` and `stamp`: the same flags, whose help each command sets
/// for itself (`mut_arg` on its variant of [`super::Command`]).
#[derive(Debug, clap::Args)]
pub struct TargetedArgs {
    #[command(flatten)]
    pub fleet: Fleet,

    /// Revision. A negative number (`-1`) is taken as the target, not as a flag.
    #[arg(
        value_name = "TARGET",
        allow_negative_numbers = true,
        help_heading = "Arguments"
    )]
    pub target: String,

    /// The shared schema (`public` by default) on every server, or on the one --server
    /// names, instead of tenants.
    #[arg(long, help_heading = "Mode", conflicts_with_all = ["tenants", "all", "tenant_type", "status", "exclude", "shard", "canary", "max_failures", "fail_fast"])]
    pub shared: bool,

    /// Confirm without asking (needed without a terminal).
    #[arg(long, help_heading = "Mode")]
    pub yes: bool,

    /// Print, per tenant, the exact SQL that would run; change nothing.
    #[arg(long, help_heading = "Mode")]
    pub dry_run: bool,
}

/// Arguments of `downgrade`.
pub type DowngradeArgs = TargetedArgs;

/// Arguments of `stamp`.
pub type StampArgs = TargetedArgs;

/// Arguments of `backup`.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub fleet: Fleet,

    /// The directory the archives go to, one subdirectory per tenant:
    /// DIR/DOMAIN/DOMAIN-YYYYMMDDTHHMMSSZ.tenant [default: backup.dir].
    #[arg(long, value_name = "DIR", help_heading = "Mode")]
    pub out: Option<std::path::PathBuf>,

    /// Keep only the newest N backups of each tenant backed up (older ones are removed
    /// after the new one is complete).
    #[arg(long, value_name = "N", help_heading = "Mode", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,

    /// Only the selected tenants (alone: every tenant) whose policy in
    /// [backup.policies] says a backup is due: none succeeded within its `every`. Each
    /// keeps its policy's `keep` and `keep_within`. One such run at a time: a run that
    /// starts while another is going backs up nothing.
    #[arg(long, help_heading = "Mode", conflicts_with = "keep")]
    pub due: bool,
}

/// Lets each command's arguments read the shared [`Fleet`] fields directly.
macro_rules! deref_to_fleet {
    ($($args:ty),*) => {$(
        impl std::ops::Deref for $args {
            type Target = Fleet;
            fn deref(&self) -> &Fleet {
                &self.fleet
            }
        }
    )*};
}

deref_to_fleet!(ProvisionArgs, UpgradeArgs, TargetedArgs, BackupArgs);
