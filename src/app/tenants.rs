//! One tenant's lifecycle as actions: registering it (and provisioning and migrating it;
//! the machinery is [`crate::engine::tenant`], which an import shares) and dropping it.
//! They return what happened as data; each face shows it.

pub use crate::engine::tenant::{
    change_one, create, locked, locked_schema, validate, Context, Created, NewTenantRequest,
};

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::engine::dependents::{self, Dependent};
use crate::engine::plan::{self};
use crate::engine::scheduler::{self};
use crate::error::Error;
use crate::ident::quote;
use crate::registry::{Event, Registry, Tenant};

/// What dropping a tenant would do, read without a lock and without changing anything.
#[derive(Debug, Serialize)]
pub struct DropPlan {
    /// Always true.
    pub dry_run: bool,
    /// The tenant.
    pub tenant: Tenant,
    /// Its schema.
    pub schema_name: String,
    /// Whether the schema exists.
    pub schema_exists: bool,
    /// Whether the schema would be dropped.
    pub would_drop_schema: bool,
    /// Objects in the schema.
    pub objects: i64,
    /// Objects outside the schema that depend on it (they block the drop).
    pub blocking: Vec<Dependent>,
    /// Why the drop would be refused.
    pub error: Option<String>,
    /// One sentence saying what would happen.
    pub message: String,
}

/// What `tenant drop` did.
#[derive(Debug, Serialize)]
pub struct Dropped {
    /// The registry row as it was.
    pub tenant: Tenant,
    /// Whether the schema was dropped.
    pub schema_dropped: bool,
    /// One sentence saying what happened.
    pub message: String,
}

/// What dropping `tenant` would do, and whether it would be refused.
pub async fn drop_plan(
    settings: &crate::config::Settings,
    client: &mut Client,
    tenant: &Tenant,
    keep_schema: bool,
) -> Result<DropPlan, Error> {
    let schema = &tenant.schema_name;
    let boundary = dependents::inspect(client, schema).await?;
    let exists = boundary.contents.exists;
    let (blocking, error) = if keep_schema || !exists {
        (Vec::new(), None)
    } else if let Some(role) = dependents::shared_role(settings, schema) {
        (
            Vec::new(),
            Some(plan::drop_shared(schema, role, &tenant.domain)),
        )
    } else if boundary.outside.is_empty() {
        (Vec::new(), None)
    } else {
        let e = plan::drop_blocked(schema, &boundary.outside, &tenant.domain);
        (boundary.outside, Some(e))
    };
    let would_drop = exists && !keep_schema && error.is_none();
    let d = &tenant.domain;
    let message = match (&error, keep_schema, exists) {
        (Some(e), _, _) => e.clone(),
        (None, true, _) => format!(
            "would remove tenant {d} from the registry and keep schema {}",
            quote(schema)
        ),
        (None, false, true) => format!(
            "would remove tenant {d} from the registry and drop schema {} with its {} objects; nothing outside it depends on it",
            quote(schema),
            boundary.contents.objects
        ),
        (None, false, false) => format!(
            "would remove tenant {d} from the registry; schema {} does not exist, so nothing would be dropped",
            quote(schema)
        ),
    };
    Ok(DropPlan {
        dry_run: true,
        tenant: tenant.clone(),
        schema_name: schema.clone(),
        schema_exists: exists,
        would_drop_schema: would_drop,
        objects: boundary.contents.objects,
        blocking,
        error,
        message,
    })
}

/// Removes the tenant from the registry and, unless `keep_schema`, drops its schema, in
/// its locked session and one transaction with its ledger entry. Refuses, changing
/// nothing, when the schema is shared or objects outside it depend on it.
pub async fn drop(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    keep_schema: bool,
) -> Result<Dropped, Error> {
    let started_at = OffsetDateTime::now_utc();
    crate::data::moving::refuse_unfinished(registry, tenant, "drop it").await?;
    let (_pool, mut session) = locked(cx, tenant).await?;
    // An upgrade or a move may have held the lock while this waited: read the row as it
    // is now.
    let tenant = crate::data::moving::still_here(registry, tenant, "drop it").await?;
    let run_id = scheduler::new_run_id()?;
    let host = scheduler::client_host();
    let event = Event {
        run_id: &run_id,
        action: if keep_schema {
            "drop (schema kept)"
        } else {
            "drop"
        },
        from_revision: tenant.current_revision,
        started_at,
        client_host: &host,
    };
    let schema_dropped = session
        .drop_tenant(
            registry.tables(),
            &tenant,
            keep_schema,
            &event,
            (!crate::registry::servers::is_default(&tenant.server)).then_some(registry.client()),
        )
        .await?;
    let (d, s) = (&tenant.domain, quote(&tenant.schema_name));
    let message = if keep_schema {
        format!("tenant {d} removed from the registry; schema {s} kept")
    } else if schema_dropped {
        format!("tenant {d} removed and schema {s} dropped")
    } else {
        format!(
            "tenant {d} removed from the registry; its schema {s} did not exist, so nothing was dropped"
        )
    };
    Ok(Dropped {
        tenant,
        schema_dropped,
        message,
    })
}
