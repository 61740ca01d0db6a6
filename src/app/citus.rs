//! Citus: where a tenant's schema lives on a cluster with schema-based sharding, and moving
//! it to another node.
//!
//! A tenant's server is a Citus coordinator when the `citus` extension is installed in its
//! database and `citus_is_coordinator()` says so. There, with
//! `citus.enable_schema_based_sharding` on, each tenant schema created through the
//! coordinator is a distributed schema (a row of `pg_dist_schema`): its tables are
//! colocated, all on one node. [`placement`] reads that node from the catalog
//! (`pg_dist_schema`, `pg_dist_partition`, `pg_dist_shard`, `pg_dist_placement`,
//! `pg_dist_node`); [`move_schema`] moves the schema with `citus_schema_move` under the
//! tenant's advisory lock and writes a `move` entry in the run ledger. Both return data and
//! never print.

use std::time::Instant;

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::error::Error;
use crate::ident::quote;
use crate::pg::db::{self, query_error, Reads};
use crate::registry::{Registry, Tenant};

use crate::engine::scheduler;
use crate::engine::tenant::Context;

/// A node of a Citus cluster, as `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddr {
    /// Host name or address, as `pg_dist_node.nodename` holds it.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for NodeAddr {
    type Err = String;

    /// Parses `HOST:PORT`: a non-empty host (an IPv6 address in brackets, `[::1]:5432`)
    /// and a port from 1 to 65535.
    fn from_str(s: &str) -> Result<NodeAddr, String> {
        let bad = || format!("expected HOST:PORT (e.g. 10.0.0.7:5432), not {s:?}");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host = match host.strip_prefix('[') {
            Some(inner) => inner.strip_suffix(']').ok_or_else(bad)?,
            None if host.contains(':') => return Err(bad()),
            None => host,
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(bad());
        }
        Ok(NodeAddr {
            host: host.to_string(),
            port,
        })
    }
}

/// Where a distributed tenant schema's tables are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Placement {
    /// The node holding them, `HOST:PORT` as `pg_dist_node` names it.
    pub node: String,
}

/// Whether the server `client` is connected to is a Citus coordinator: the `citus`
/// extension is installed in this database and `citus_is_coordinator()` is true.
pub async fn is_coordinator<C: Reads + ?Sized>(client: &C) -> Result<bool, Error> {
    let installed = db::read(
        client,
        "looking for the citus extension",
        client
            .pg()
            .query_opt("SELECT 1 FROM pg_extension WHERE extname = 'citus'", &[]),
    )
    .await?
    .is_some();
    if !installed {
        return Ok(false);
    }
    let row = db::read(
        client,
        "asking whether this is the Citus coordinator",
        client.pg().query_one("SELECT citus_is_coordinator()", &[]),
    )
    .await?;
    Ok(row.get(0))
}

/// The node holding `schema`'s tables: `None` unless the server is a Citus coordinator,
/// the schema is a distributed schema, and it holds at least one table.
pub async fn placement<C: Reads + ?Sized>(
    client: &C,
    schema: &str,
) -> Result<Option<Placement>, Error> {
    if !is_coordinator(client).await? {
        return Ok(None);
    }
    node_of(client, schema).await
}

/// The node holding `schema`'s tables, read from Citus's catalog (the server is known to
/// be a coordinator). Tables of a distributed schema are colocated, so there is one node;
/// should there be more for a moment, the first by name and port is returned.
async fn node_of<C: Reads + ?Sized>(client: &C, schema: &str) -> Result<Option<Placement>, Error> {
    let doing = format!("reading where schema {} is placed", quote(schema));
    let row = db::read(
        client,
        &doing,
        client.pg().query_opt(
            "SELECT n.nodename, n.nodeport \
             FROM pg_catalog.pg_dist_schema s \
             JOIN pg_catalog.pg_namespace ns ON ns.oid = s.schemaid \
             JOIN pg_catalog.pg_dist_partition p ON p.colocationid = s.colocationid \
             JOIN pg_catalog.pg_dist_shard sh ON sh.logicalrelid = p.logicalrelid \
             JOIN pg_catalog.pg_dist_placement pl ON pl.shardid = sh.shardid \
             JOIN pg_catalog.pg_dist_node n ON n.groupid = pl.groupid AND n.noderole = 'primary' \
             WHERE ns.nspname = $1 \
             ORDER BY n.nodename, n.nodeport LIMIT 1",
            &[&schema],
        ),
    )
    .await?;
    Ok(row.map(|r| {
        let host: String = r.get(0);
        let port: i32 = r.get(1);
        Placement {
            node: format!("{host}:{port}"),
        }
    }))
}

/// What `tenant move --node` did.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Moved {
    /// The tenant's domain.
    pub tenant: String,
    /// The tenant's registry id.
    pub tenant_id: i64,
    /// The tenant's domain (the same as `tenant`).
    pub domain: String,
    /// The node its schema was on.
    pub from_node: String,
    /// The node it is on now.
    pub to_node: String,
    /// How long the move took.
    pub duration_ms: u64,
    /// One sentence saying what happened.
    pub message: String,
}

/// Moves `tenant`'s distributed schema to the worker `to` with `citus_schema_move` (shard
/// transfer mode `block_writes`: writes to the tenant's tables wait while its shards are
/// copied; no logical replication is needed), under the tenant's advisory lock, and writes
/// a `move` entry in the run ledger (`failed` with the error when Citus refuses or fails).
/// Refuses, changing nothing, when the server is not a Citus coordinator or the schema is
/// not a distributed schema holding tables. A schema already on `to` is left alone.
pub async fn move_schema(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    to: &NodeAddr,
) -> Result<Moved, Error> {
    let started_at = OffsetDateTime::now_utc();
    let (pool, session) = crate::engine::tenant::locked(cx, tenant).await?;
    let moved = move_locked(session.client(), registry, tenant, to, started_at).await;
    session.close(&pool).await;
    moved
}

/// The move itself, on the session holding the tenant's lock.
async fn move_locked(
    client: &Client,
    registry: &Registry<'_>,
    tenant: &Tenant,
    to: &NodeAddr,
    started_at: OffsetDateTime,
) -> Result<Moved, Error> {
    let schema = &tenant.schema_name;
    let d = &tenant.domain;
    if !is_coordinator(client).await? {
        return Err(Error::refused(format!(
            "tenant {d}'s server is not a Citus coordinator (no citus extension in its database, or not the coordinator); nothing was changed"
        )));
    }
    let from = node_of(client, schema).await?.ok_or_else(|| {
        Error::refused(format!(
            "schema {} of tenant {d} is not a distributed schema holding tables (create it through the coordinator with citus.enable_schema_based_sharding on, or run citus_schema_distribute); nothing was changed",
            quote(schema)
        ))
    })?;
    let to_node = to.to_string();
    let start = Instant::now();
    if from.node == to_node {
        return Ok(Moved {
            tenant: d.clone(),
            tenant_id: tenant.id,
            domain: d.clone(),
            message: format!(
                "schema {} of tenant {d} is already on node {to_node}; nothing was changed",
                quote(schema)
            ),
            from_node: from.node,
            to_node,
            duration_ms: 0,
        });
    }
    let port = i32::from(to.port);
    let result = client
        .execute(
            "SELECT citus_schema_move(ns.oid::regnamespace, $2::text, $3::int4, 'block_writes') \
             FROM pg_catalog.pg_namespace ns WHERE ns.nspname = $1",
            &[schema, &to.host, &port],
        )
        .await
        .map_err(query_error(&format!(
            "moving schema {} of tenant {d} to node {to_node}",
            quote(schema)
        )));
    let duration_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let run = scheduler::OwnRun::new()?;
    let event = run.event("move", tenant.current_revision, started_at);
    if let Err(e) = result {
        let _ = registry.log(tenant, &event, Some(e.message())).await;
        return Err(e);
    }
    registry.log(tenant, &event, None).await?;
    Ok(Moved {
        tenant: d.clone(),
        tenant_id: tenant.id,
        domain: d.clone(),
        message: format!(
            "schema {} of tenant {d} moved from node {} to node {to_node}",
            quote(schema),
            from.node
        ),
        from_node: from.node,
        to_node,
        duration_ms,
    })
}

impl crate::app::context::Context {
    /// Where the Citus coordinator of `tenant`'s server places its schema (read on its
    /// server; `client` is the registry's). `None` when the tenant's server could not be
    /// reached or read (its status already says so) or stops answering now.
    pub async fn placement(
        &self,
        client: &crate::pg::db::Client,
        tenant: &Tenant,
        status: &crate::registry::inspect::TenantStatus,
    ) -> Result<Option<Placement>, Error> {
        if status.unreachable {
            return Ok(None);
        }
        let read = match self.connect_to(&tenant.server).await {
            Ok(Some(remote)) => placement(&remote, &tenant.schema_name).await,
            Ok(None) => placement(client, &tenant.schema_name).await,
            Err(_) => return Ok(None),
        };
        match read {
            Err(e) if e.kind() == crate::error::ErrorKind::Unavailable => Ok(None),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NodeAddr;

    #[test]
    fn node_addresses_parse_host_and_port() {
        let a: NodeAddr = "10.0.0.7:5432".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("10.0.0.7", 5432));
        let b: NodeAddr = "[::1]:6432".parse().unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", 6432));
        assert_eq!(b.to_string(), "::1:6432");
        for bad in [
            "",
            "host",
            ":5432",
            "host:",
            "host:0",
            "host:65536",
            "host:x",
            "::1:5432",
            "a b:1",
        ] {
            assert!(
                bad.parse::<NodeAddr>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
