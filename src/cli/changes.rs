//! Arguments of the commands that change tenants in bulk: `provision`, `upgrade`,
//! `downgrade` and `stamp`.
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
    #[arg(long)]
    pub force_recreate: bool,

    /// Confirm --force-recreate without asking (needed without a terminal).
    #[arg(long)]
    pub yes: bool,

    /// Print, per tenant, the exact SQL that would run; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `upgrade`.
#[derive(Debug, clap::Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub fleet: Fleet,

    /// Revision to upgrade to: a version number, or head.
    #[arg(default_value = "head", value_name = "TARGET")]
    pub target: String,

    /// Print, per tenant, the exact SQL that would run; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `downgrade`.
#[derive(Debug, clap::Args)]
pub struct DowngradeArgs {
    #[command(flatten)]
    pub fleet: Fleet,

    /// Revision to go down to: a version number, or base (nothing applied).
    #[arg(value_name = "TARGET")]
    pub target: String,

    /// Confirm without asking (needed without a terminal).
    #[arg(long)]
    pub yes: bool,

    /// Print, per tenant, the exact SQL that would run; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `stamp`.
#[derive(Debug, clap::Args)]
pub struct StampArgs {
    #[command(flatten)]
    pub fleet: Fleet,

    /// Revision to record: a version number, head, or base (forget everything).
    #[arg(value_name = "TARGET")]
    pub target: String,

    /// Confirm forgetting applied versions without asking (needed without a terminal).
    #[arg(long)]
    pub yes: bool,

    /// Print, per tenant, what would be recorded and forgotten, and the SQL; change nothing.
    #[arg(long)]
    pub dry_run: bool,
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

deref_to_fleet!(ProvisionArgs, UpgradeArgs, DowngradeArgs, StampArgs);
