//! The actions both faces call, each taking a typed request and returning a typed,
//! serializable result: the fleet's status and listing ([`status`]), the bulk workflows
//! ([`fleet`]) and the schema changes run over them ([`changes`], `backup` too), the
//! reads (`check`, `current`, `history`, `events`: [`reads`]), `init` with the version
//! index on every server ([`init`]), creating and dropping a
//! tenant ([`tenants`]), a tenant's data (export, import, clone, restore:
//! [`tenant_data`]), adoption ([`adopt`]), Citus placement ([`citus`]) and metrics
//! ([`metrics`]), moving a tenant to another server or Citus node ([`moves`]), and the
//! application's shared schema on every server ([`shared`]), with the
//! [`context::Context`] every action takes.

pub mod adopt;
pub mod backups;
pub mod changes;
pub mod citus;
pub mod context;
pub mod fleet;
pub mod impact;
pub mod init;
pub mod lint;
pub mod metrics;
pub mod moves;
pub mod overview;
pub mod pitr;
pub mod reads;
pub mod revision;
pub mod shared;
pub mod status;
pub mod tenant_data;
pub mod tenants;
