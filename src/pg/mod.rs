//! PostgreSQL plumbing: connections and their targets ([`db`]), TLS ([`tls`]), and the
//! stop token with the set of open sessions an abort cancels ([`interrupt`]). Nothing here
//! knows tenants, the registry or migrations.

pub mod cancel;
pub mod db;
pub mod interrupt;
pub mod libpq;
pub mod message;
pub mod tls;
