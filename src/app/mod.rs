//! The actions: one function per thing a user asks of tenantctl, each taking a typed
//! request and returning a typed result (the JSON documents are defined here). The command
//! line and the service are two faces over these.

pub mod adopt;
pub mod citus;
pub mod context;
pub mod fleet;
pub mod metrics;
pub mod status;
pub mod tenants;
