//! The actions both faces call, each taking a typed request and returning a typed,
//! serializable result: the fleet's status and listing ([`status`]), the bulk workflows
//! ([`fleet`]) and the schema changes run over them ([`changes`]), the reads (`check`,
//! `current`, `history`, `events`: [`reads`]), creating and dropping a tenant ([`tenants`]), adoption ([`adopt`]),
//! Citus placement ([`citus`]) and metrics ([`metrics`]), with the [`context::Context`]
//! every action takes. The data actions (export, import, clone, restore, backup, move)
//! are functions of [`crate::data`], one layer down, which the faces call the same way.

pub mod adopt;
pub mod changes;
pub mod citus;
pub mod context;
pub mod fleet;
pub mod metrics;
pub mod reads;
pub mod status;
pub mod tenants;
