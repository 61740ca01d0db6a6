//! What the fleet looks like: the documents of `status --tenant`, `status --all`,
//! `tenant show` and `tenant list` (and of the service's routes that answer the same),
//! built once here.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::app::citus::Placement;
use crate::app::context::Context;
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::pg::db::Client;
use crate::registry::inspect::{self, StatusSummary, TenantStatus};
use crate::registry::{Registry, Tenant};

/// The JSON document `status --all` prints.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct FleetStatus {
    /// One status per tenant, by id.
    pub tenants: Vec<TenantStatus>,
    /// Fleet counts and the revision histogram.
    pub summary: StatusSummary,
    /// The shared schema on each server, when there is one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<crate::app::shared::SharedStatus>,
}

/// The JSON document `status --tenant` prints: the tenant's status and where its schema
/// is placed.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct OneStatus {
    /// The tenant's migration status.
    #[serde(flatten)]
    pub status: TenantStatus,
    /// The Citus node holding its schema; `null` unless the server is a Citus coordinator
    /// and the schema is a distributed schema holding tables.
    pub placement: Option<Placement>,
}

/// The JSON document `tenant show` prints.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Shown {
    /// The registry row.
    pub tenant: Tenant,
    /// Its migration status.
    pub migration_status: TenantStatus,
    /// The Citus node holding its schema; `null` unless the server is a Citus coordinator
    /// and the schema is a distributed schema holding tables.
    pub placement: Option<Placement>,
    /// The head version of the migration files.
    #[serde(skip)]
    pub head: i32,
}

/// The tenant `reference` names (its domain or id) with its status, observed now, and
/// where its schema is placed.
pub async fn show(ctx: &Context, reference: &str) -> Result<Shown, Error> {
    let set = ctx.migrations()?;
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let tenant = registry.find(reference).await?;
    let (tenant, migration_status) = of(ctx, &client, &registry, tenant, &set).await?;
    let placement = ctx.placement(&client, &tenant, &migration_status).await?;
    Ok(Shown {
        tenant,
        migration_status,
        placement,
        head: set.head(),
    })
}

/// The JSON document `tenant list` prints.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Listing {
    /// The tenants, by id.
    pub tenants: Vec<Tenant>,
    /// Counts.
    pub summary: ListSummary,
}

/// Counts for `tenant list`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ListSummary {
    /// Tenants listed.
    pub total: usize,
    /// Tenants per status.
    pub by_status: BTreeMap<&'static str, usize>,
}

impl Listing {
    /// The listing of these tenants, with its counts.
    pub fn of(tenants: Vec<Tenant>) -> Listing {
        let mut by_status = BTreeMap::new();
        for t in &tenants {
            *by_status.entry(t.status.as_str()).or_insert(0) += 1;
        }
        Listing {
            summary: ListSummary {
                total: tenants.len(),
                by_status,
            },
            tenants,
        }
    }
}

/// Every registered tenant's status, observed now (the registry's cache refreshed), and
/// the fleet's counts.
pub async fn fleet(
    ctx: &Context,
    client: &Client,
    registry: &Registry<'_>,
    set: &MigrationSet,
) -> Result<FleetStatus, Error> {
    let mut tenants = registry.list(None, None).await?;
    let tenants = ctx.statuses(client, registry, &mut tenants, set).await?;
    let mut summary = inspect::summarize(&tenants, set.head());
    let shared = match ctx.settings.shared {
        Some(_) => crate::app::shared::status(ctx, None).await?,
        None => Vec::new(),
    };
    summary.shared = shared
        .iter()
        .map(|s| (s.server.clone(), s.current_revision))
        .collect();
    Ok(FleetStatus {
        tenants,
        summary,
        shared,
    })
}

/// The registered tenants, of `tenant_type` and in `status` when given, with their
/// cached columns (schema provisioned, revision) refreshed from the databases first.
/// Pending counts are not part of a listing, so the migration files are optional.
pub async fn list(
    ctx: &Context,
    tenant_type: Option<&str>,
    status: Option<crate::registry::Status>,
) -> Result<Listing, Error> {
    if let Some(t) = tenant_type {
        crate::ident::validate_tenant_type(t)?;
    }
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let mut tenants = registry.list(tenant_type, status).await?;
    let set = ctx
        .migrations()
        .unwrap_or_else(|_| MigrationSet::empty(ctx.settings.migrations_dir.clone()));
    ctx.statuses(&client, &registry, &mut tenants, &set).await?;
    Ok(Listing::of(tenants))
}

/// Every registered tenant's status (see [`fleet`]), read through the action's own
/// connection.
pub async fn all(ctx: &Context) -> Result<FleetStatus, Error> {
    let set = ctx.migrations()?;
    let client = ctx.connect().await?;
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    fleet(ctx, &client, &registry, &set).await
}

/// One tenant's status, observed now (the registry's cache refreshed).
pub async fn of(
    ctx: &Context,
    client: &Client,
    registry: &Registry<'_>,
    tenant: Tenant,
    set: &MigrationSet,
) -> Result<(Tenant, TenantStatus), Error> {
    let mut tenants = vec![tenant];
    let st = ctx.statuses(client, registry, &mut tenants, set).await?;
    match (tenants.pop(), st.into_iter().next()) {
        (Some(t), Some(s)) => Ok((t, s)),
        _ => Err(Error::failed("the tenant's status could not be read")),
    }
}
