//! The engine: what a change does to one tenant ([`plan`]), revision targets
//! ([`target`]), the tenant's locked session that executes it ([`runner`]), the
//! connections a run lends from tenant to tenant ([`pool`]), what outside a schema depends
//! on it ([`dependents`]), operations inside a locked session ([`operation`]), work over
//! many tenants ([`scheduler`]), dry runs ([`dryrun`]), what pending statements lock and
//! rewrite, measured on a scratch copy ([`impact`]), and the shared schema on one
//! server ([`shared`]). It returns data and events; it
//! never prints.

pub mod dependents;
pub mod dryrun;
pub mod impact;
pub mod operation;
pub mod plan;
pub mod pool;
pub mod progress;
pub mod runner;
pub mod scheduler;
pub mod shared;
pub mod target;
pub mod tenant;
