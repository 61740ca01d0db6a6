//! `tenantctl tenant ...`: register, list and inspect tenants.

pub mod create;
pub mod drop;
pub mod list;
pub mod rotate_key;
pub mod show;

use clap::Subcommand;

use crate::error::Result;
use crate::exit::Exit;

use super::Ctx;

/// The `tenant` subcommands.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Register a tenant; with --provision create its schema, with --migrate also upgrade
    /// it. Prints the tenant's API key once.
    Create(create::Args),
    /// List registered tenants.
    List(list::Args),
    /// Show one tenant with its migration status.
    Show(show::Args),
    /// Replace a tenant's API key; prints the new key once. The old key stops working.
    RotateKey(rotate_key::Args),
    /// Remove a tenant from the registry and drop its schema (unless --keep-schema).
    /// Asks first; without a terminal, refuses (exit 2) unless --yes is given.
    Drop(drop::Args),
}

/// Runs a `tenant` subcommand.
pub async fn run(ctx: &Ctx, cmd: &TenantCommand) -> Result<Exit> {
    match cmd {
        TenantCommand::Create(a) => create::run(ctx, a).await,
        TenantCommand::List(a) => list::run(ctx, a).await,
        TenantCommand::Show(a) => show::run(ctx, a).await,
        TenantCommand::RotateKey(a) => rotate_key::run(ctx, a).await,
        TenantCommand::Drop(a) => drop::run(ctx, a).await,
    }
}
