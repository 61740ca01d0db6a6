//! `tenantctl tenant ...`: register, list, inspect, move and drop tenants.

pub mod clone;
pub mod create;
pub mod drop;
pub mod export;
pub mod import;
pub mod list;
pub mod move_node;
pub mod move_server;
pub mod restore;
pub mod rotate_key;
pub mod show;

use crate::cli::exit::Exit;
use crate::error::Result;

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
        TenantCommand::Export(a) => export::run(ctx, a).await,
        TenantCommand::Import(a) => import::run(ctx, a).await,
        TenantCommand::Clone(a) => clone::run(ctx, a).await,
        TenantCommand::Restore(a) => restore::run(ctx, a).await,
    }
}
