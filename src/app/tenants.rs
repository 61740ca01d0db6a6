//! One tenant's lifecycle as actions: registering it (and provisioning and migrating it;
//! the machinery is [`crate::engine::tenant`], which an import shares), a new API key,
//! and dropping it (checked first, [`prepare_drop`], so a face can ask).
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
use crate::files::migrations::MigrationSet;
use crate::ident::quote;
use crate::registry::{Registry, Tenant};

/// Runs `change` on the tenant `reference` names (its id, domain or schema) in its own
/// locked session, as a run of its own in the ledger, on a connection of the action's
/// own (it may wait for the tenant's lock as long as another run holds it). Returns the
/// tenant as found and its result, as a bulk run reports each tenant.
pub async fn change_tenant(
    cx: &crate::app::context::Context,
    events: &scheduler::Events,
    reference: &str,
    change: plan::SchemaChange,
    set: &MigrationSet,
) -> Result<(Tenant, scheduler::TenantResult), Error> {
    let client = cx.connect().await?;
    let registry = Registry::open(&client, &cx.settings.registry_schema).await?;
    let tenant = registry.find(reference).await?;
    let run_id = scheduler::new_run_id()?;
    let one = cx.one_tenant(events);
    let r = change_one(&one, &client, &registry, &tenant, change, set, &run_id).await;
    Ok((tenant, r))
}

/// What `tenant create` asks for.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// The registration; its type is `standard` when none was given.
    pub new: NewTenantRequest,
    /// Whether the type was given.
    pub type_given: bool,
    /// A tenant whose data the new one starts from (`--from`); without it, the template
    /// of the tenant's type in `[tenants.templates]`, if any.
    pub from: Option<String>,
    /// Provision the schema once registered.
    pub provision: bool,
    /// Upgrade the new tenant to `target` (head when `None`) once registered.
    pub migrate: bool,
    /// The version `migrate` goes to.
    pub target: Option<String>,
    /// Say what a tenant made from data would be; change nothing.
    pub dry_run: bool,
}

/// What `tenant create` made.
pub enum Made {
    /// A tenant registered (provisioned and migrated as asked).
    Registered(Box<Created>),
    /// A tenant made from another's data (or, dry, what would be made).
    Copied(crate::app::tenant_data::Cloned),
}

/// Registers the tenant `request` describes, then provisions and migrates it as asked;
/// from another tenant's data when `--from` or a template names one. Everything the user
/// typed is checked before any connection is made, and the migration files (and the
/// target) before the tenant is registered.
pub async fn create_tenant(
    cx: &crate::app::context::Context,
    events: &scheduler::Events,
    request: &CreateRequest,
) -> Result<Made, Error> {
    let mut req = request.new.clone();
    validate(&req, &cx.settings)?;
    let template = request
        .from
        .clone()
        .or_else(|| cx.settings.templates.get(&req.tenant_type).cloned());
    if let Some(from) = template {
        let set = cx.migrations()?;
        let client = cx.connect().await?;
        let registry = Registry::open(&client, &cx.settings.registry_schema).await?;
        let from = registry.find(&from).await.map_err(|e| {
            if request.from.is_some() {
                e
            } else {
                Error::setup(format!(
                    "tenants.templates.{} names tenant {from}, which is not registered: {e}",
                    req.tenant_type
                ))
            }
        })?;
        std::mem::drop(registry);
        // With --from and no --type, the new tenant takes the source's type.
        if request.from.is_some() && !request.type_given {
            req.tenant_type = from.tenant_type.clone();
        }
        // --migrate takes the copy on to --target (default head) after it is made.
        let upgrade = match request.migrate {
            true => Some(migrate_target(request.target.as_deref(), &set)?),
            false => None,
        };
        let cloned = crate::app::tenant_data::copy(
            cx,
            events,
            &client,
            &from,
            &req,
            &set,
            request.dry_run,
            upgrade,
        )
        .await?;
        return Ok(Made::Copied(cloned));
    }
    if request.dry_run {
        return Err(Error::usage(
            "--dry-run applies to a tenant made from another's data (--from, or a type in [tenants.templates])",
        ));
    }
    let set = if request.migrate {
        let set = cx.migrations()?;
        let target = migrate_target(request.target.as_deref(), &set)?;
        req.then = Some(plan::SchemaChange::Upgrade {
            target: crate::engine::target::Target::Version(target),
            provision: true,
        });
        set
    } else {
        if request.provision {
            req.then = Some(plan::SchemaChange::Provision);
        }
        cx.migrations()
            .unwrap_or_else(|_| MigrationSet::empty(cx.settings.migrations_dir.clone()))
    };
    let client = cx.connect().await?;
    let created = create(&cx.one_tenant(events), &client, &req, &set).await?;
    Ok(Made::Registered(Box::new(created)))
}

/// The version `--migrate` goes to: `target` (head by default), a version only.
fn migrate_target(target: Option<&str>, set: &MigrationSet) -> Result<i32, Error> {
    use crate::engine::target::{parse, Forms, Target};
    match parse(
        target.unwrap_or("head"),
        set,
        Forms::Version,
        "tenant create --target",
    )? {
        Target::Version(v) => Ok(v),
        other => Err(Error::usage(format!(
            "tenant create --target takes a version, not {other}"
        ))),
    }
}

/// What dropping a tenant would do, read without a lock and without changing anything.
#[derive(Debug, Serialize, schemars::JsonSchema)]
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
#[derive(Debug, Serialize, schemars::JsonSchema)]
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

/// A drop checked and ready to ask about: the tenant, and what the drop would do, read
/// on its own server.
pub struct DropStart {
    /// The action's registry connection.
    pub client: crate::pg::db::Client,
    /// The tenant.
    pub tenant: Tenant,
    /// What the drop would do; its `error` says why it would be refused.
    pub plan: DropPlan,
    keep_schema: bool,
}

/// Finds the tenant `reference` names (its domain or id) and reads what dropping it (or,
/// with `keep_schema`, only unregistering it) would do. Refuses a tenant an unfinished
/// move holds: its schema is half-copied or fenced until the move's rerun settles it.
pub async fn prepare_drop(
    cx: &crate::app::context::Context,
    reference: &str,
    keep_schema: bool,
) -> Result<DropStart, Error> {
    let mut client = cx.connect().await?;
    let tenant = {
        let registry = Registry::open(&client, &cx.settings.registry_schema).await?;
        let tenant = registry.find(reference).await?;
        crate::data::moving::refuse_unfinished(&registry, &tenant, "drop it").await?;
        tenant
    };
    // What the drop would do is read on the tenant's own server.
    let plan = match cx.connect_to(&tenant.server).await? {
        Some(mut remote) => drop_plan(&cx.settings, &mut remote, &tenant, keep_schema).await?,
        None => drop_plan(&cx.settings, &mut client, &tenant, keep_schema).await?,
    };
    Ok(DropStart {
        client,
        tenant,
        plan,
        keep_schema,
    })
}

impl DropStart {
    /// Drops the tenant (see [`drop`]); refused before anything when the plan says so
    /// (the same check runs again under the lock, in the transaction that drops).
    pub async fn run(
        self,
        cx: &crate::app::context::Context,
        events: &crate::engine::scheduler::Events,
    ) -> Result<Dropped, Error> {
        if let Some(e) = self.plan.error {
            return Err(Error::refused(e));
        }
        let registry = Registry::open(&self.client, &cx.settings.registry_schema).await?;
        drop(
            &cx.one_tenant(events),
            &registry,
            &self.tenant,
            self.keep_schema,
        )
        .await
    }
}

/// What `tenant rotate-key` did.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Rotated {
    /// The registry row after the change.
    pub tenant: Tenant,
    /// The new key; shown only here, stored only as a hash. The old key stops working.
    pub api_key: String,
    /// What happened, in a sentence.
    pub message: String,
}

/// Gives the tenant `reference` names a new API key, storing only its hash, with a
/// ledger entry; the old key no longer matches.
pub async fn rotate_key(
    cx: &crate::app::context::Context,
    reference: &str,
) -> Result<Rotated, Error> {
    let client = cx.connect().await?;
    let registry = Registry::open(&client, &cx.settings.registry_schema).await?;
    let tenant = registry.find(reference).await?;
    let key = crate::apikey::ApiKey::generate()?;
    let tenant = registry
        .rotate_key(tenant.id, &key.hash(), &key.prefix())
        .await?;
    let run = scheduler::OwnRun::new()?;
    let event = run.event(
        "rotate-key",
        tenant.current_revision,
        OffsetDateTime::now_utc(),
    );
    registry.log(&tenant, &event, None).await?;
    Ok(Rotated {
        message: format!(
            "new API key for tenant {}; the old key no longer works",
            tenant.domain
        ),
        tenant,
        api_key: key.reveal().to_string(),
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
    let run = scheduler::OwnRun::new()?;
    let action = if keep_schema {
        "drop (schema kept)"
    } else {
        "drop"
    };
    let event = run.event(action, tenant.current_revision, started_at);
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
