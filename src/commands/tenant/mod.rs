//! `tenantctl tenant ...`: register, list, inspect, move and drop tenants.

pub mod create;
pub mod drop;
pub mod list;
pub mod move_node;
pub mod rotate_key;
pub mod show;

use crate::error::Result;
use crate::exit::Exit;

use super::Ctx;

pub use crate::cli::TenantCommand;

/// Runs a `tenant` subcommand.
pub async fn run(ctx: &Ctx, cmd: &TenantCommand) -> Result<Exit> {
    match cmd {
        TenantCommand::Create(a) => create::run(ctx, a).await,
        TenantCommand::List(a) => list::run(ctx, a).await,
        TenantCommand::Show(a) => show::run(ctx, a).await,
        TenantCommand::RotateKey(a) => rotate_key::run(ctx, a).await,
        TenantCommand::Drop(a) => drop::run(ctx, a).await,
        TenantCommand::Move(a) => move_node::run(ctx, a).await,
    }
}
