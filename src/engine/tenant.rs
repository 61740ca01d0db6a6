//! One tenant outside a bulk run: what a one-tenant workflow needs ([`Context`]), a
//! session holding the tenant's lock on a connection of its own ([`locked`]), one schema
//! change in such a session ([`change_one`]), and registering a tenant ([`create`]:
//! register, then provision or migrate it), which `tenant create`, the service and an
//! import share.

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::apikey::ApiKey;
use crate::engine::dependents::{self};
use crate::engine::operation::{run_one, Change, Env, Unprovisioned};
use crate::engine::plan::SchemaChange;
use crate::engine::pool::{Pool, Pools};
use crate::engine::runner::{LockHolder, LockWait, Session};
use crate::engine::scheduler::{self, Events, ResultStatus, RunEvent, TenantResult};
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::ident::{self, quote};
use crate::registry::conn::RegistryConn;
use crate::registry::inspect::{self, TenantStatus};
use crate::registry::state;
use crate::registry::{NewTenant, Observed, Registry, Tenant};

/// What a one-tenant workflow (a registration, a drop, an import, a move) needs: where
/// to connect, the settings, the interruption, and where the events of the tenant's
/// session go.
pub struct Context<'a> {
    /// Where to connect: the registry's server.
    pub target: &'a crate::pg::db::Target,
    /// Every server tenants live on.
    pub servers: &'a crate::registry::servers::Servers,
    /// Effective settings.
    pub settings: &'a crate::config::Settings,
    /// Ctrl-C and SIGTERM.
    pub interrupt: &'a crate::pg::interrupt::Interrupt,
    /// A long lock wait and the server's notices.
    pub events: &'a Events,
}

/// A tenant to register.
#[derive(Debug, Clone)]
pub struct NewTenantRequest {
    /// Unique slug.
    pub domain: String,
    /// Display name.
    pub name: String,
    /// Contact email.
    pub email: Option<String>,
    /// Tenant type.
    pub tenant_type: String,
    /// The schema, when not derived from the domain.
    pub schema: Option<String>,
    /// What to do after registering: nothing, provision, or provision and migrate.
    pub then: Option<SchemaChange>,
    /// Take over an existing schema that holds objects.
    pub adopt: bool,
    /// The server its schema goes on; `None`: placed by weight (see
    /// [`crate::registry::servers::Servers::place`]).
    pub server: Option<String>,
}

/// What `tenant create` did.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Created {
    /// The registry row.
    pub tenant: Tenant,
    /// Whether the schema was created.
    pub schema_created: bool,
    /// Whether an existing schema was taken over.
    pub schema_adopted: bool,
    /// Whether any migration was applied.
    pub migrations_applied: bool,
    /// The tenant's migration status.
    pub migration_status: TenantStatus,
    /// The API key, shown once.
    pub api_key: String,
    /// One sentence saying what happened.
    pub message: String,
    /// Whether provisioning or migrating failed (the tenant is registered, `failed`).
    #[serde(skip)]
    pub failed: bool,
}

/// Checks a registration before any connection: the names, and a schema that can never
/// hold a tenant. Returns the schema the tenant gets.
pub fn validate(
    req: &NewTenantRequest,
    settings: &crate::config::Settings,
) -> Result<String, Error> {
    ident::validate_domain(&req.domain)?;
    ident::validate_display_name(&req.name)?;
    if let Some(e) = &req.email {
        ident::validate_email(e)?;
    }
    ident::validate_tenant_type(&req.tenant_type)?;
    let registry_schema = &settings.registry_schema;
    let schema = match &req.schema {
        Some(s) => {
            ident::validate_schema_name(s, registry_schema)?;
            s.clone()
        }
        None => ident::schema_for_domain(&settings.schema_prefix, &req.domain, registry_schema)?,
    };
    if let Some(role) = dependents::shared_role(settings, &schema) {
        return Err(Error::usage(format!(
            "schema {} is {role}; it can never hold a tenant; pass --schema to choose another. Nothing was registered.",
            quote(&schema)
        )));
    }
    Ok(schema)
}

/// Registers a tenant with a new API key, then provisions (and migrates) it as asked, in
/// its own locked session. Refusals (a taken domain or schema, a schema holding objects
/// without `adopt`) register nothing.
pub async fn create(
    cx: &Context<'_>,
    client: &Client,
    req: &NewTenantRequest,
    set: &MigrationSet,
) -> Result<Created, Error> {
    let schema = validate(req, cx.settings)?;
    if let Some(name) = &req.server {
        cx.servers.get(name)?;
    }
    let registry = Registry::open(client, &cx.settings.registry_schema).await?;
    let server = match &req.server {
        Some(name) => name.clone(),
        None => cx
            .servers
            .place(&registry.count_by_server().await?)?
            .to_string(),
    };
    // The schema's server, where its schema is looked at and made.
    let remote;
    let on_server: &Client = if crate::registry::servers::is_default(&server) {
        client
    } else {
        remote = cx.servers.target(&server)?.connect().await?;
        &remote
    };
    if registry.domain_taken(&req.domain).await? {
        return Err(Error::conflict(crate::registry::domain_exists(&req.domain)));
    }
    if let Some(owner) = registry.schema_owner(&schema).await? {
        return Err(Error::usage(format!(
            "schema {} already belongs to tenant {owner}; pass --schema to choose another. Nothing was registered.",
            quote(&schema)
        )));
    }
    let existing = dependents::contents(on_server, &schema).await?;
    if existing.non_empty() && !req.adopt {
        return Err(Error::usage(format!(
            "schema {} already exists and holds {}; pass --adopt to make its contents tenant {}'s (`tenant drop` would then drop them with it), or --schema to choose another. Nothing was registered.",
            quote(&schema),
            objects(existing.objects),
            req.domain
        )));
    }
    let key = ApiKey::generate()?;
    let tenant = registry
        .insert(&NewTenant {
            name: &req.name,
            domain: &req.domain,
            email: req.email.as_deref(),
            tenant_type: &req.tenant_type,
            schema_name: &schema,
            api_key_hash: &key.hash(),
            api_key_prefix: &key.prefix(),
            server: &server,
        })
        .await?;
    let run = scheduler::OwnRun::new()?;
    let registered = run.event("register", None, OffsetDateTime::now_utc());
    registry.log(&tenant, &registered, None).await?;
    let result = match req.then {
        Some(change) => {
            Some(change_one(cx, client, &registry, &tenant, change, set, &run.run_id).await)
        }
        None => None,
    };
    let adopted = Adopted {
        exists: existing.exists,
        objects: existing.non_empty().then_some(existing.objects),
    };
    let migrate = matches!(req.then, Some(SchemaChange::Upgrade { .. }));
    // The schema is observed where it lives, not on the registry's server.
    created(
        on_server, &registry, cx, tenant, result, adopted, migrate, set, key,
    )
    .await
}

/// Runs one schema change on one registered tenant in its own locked session, as a run
/// `run_id` in the ledger, and records the outcome.
pub async fn change_one(
    cx: &Context<'_>,
    client: &Client,
    registry: &Registry<'_>,
    tenant: &Tenant,
    change: SchemaChange,
    set: &MigrationSet,
    run_id: &str,
) -> TenantResult {
    let host = scheduler::client_host();
    cx.interrupt.set_run_id(run_id);
    let target = match cx.servers.target(&tenant.server) {
        Ok(t) => t.named_for_run(run_id),
        Err(e) => {
            let mut r = TenantResult::new(tenant, ResultStatus::Failed);
            r.error = Some(e.to_string());
            return r;
        }
    };
    let pools = Pools::single(&tenant.server, target);
    let registry_conn = RegistryConn::new(cx.target, cx.settings.connect_timeout, client);
    let env = Env {
        pools: &pools,
        registry: &registry_conn,
        settings: cx.settings,
        tables: registry.tables(),
        run_id,
        client_host: &host,
        interrupt: cx.interrupt,
    };
    let op = Change {
        change,
        set,
        unprovisioned: Unprovisioned::Fail,
    };
    run_one(&env, &op, tenant, cx.events).await
}

/// What was in the schema before the tenant was registered.
struct Adopted {
    /// The schema existed.
    exists: bool,
    /// It held this many objects.
    objects: Option<i64>,
}

/// The outcome of a registration, from the tenant as it is now.
#[allow(clippy::too_many_arguments)]
async fn created(
    on_server: &Client,
    registry: &Registry<'_>,
    cx: &Context<'_>,
    tenant: Tenant,
    result: Option<TenantResult>,
    adopted: Adopted,
    migrate: bool,
    set: &MigrationSet,
    key: ApiKey,
) -> Result<Created, Error> {
    let schemas = std::slice::from_ref(&tenant.schema_name);
    let mut states = state::observe(on_server, schemas, &cx.settings.history_table).await?;
    let st = states.remove(&tenant.schema_name).ok_or_else(|| {
        Error::failed(format!(
            "schema {} was not observed",
            quote(&tenant.schema_name)
        ))
    })?;
    let tenant = match result.as_ref().and_then(|r| r.tenant.as_deref().cloned()) {
        Some(t) => t,
        None => {
            // Registered without provisioning: an existing schema taken over is recorded
            // as provisioned (and at its revision) from what is observed.
            if adopted.exists {
                let _ = registry.sync(&[(tenant.id, Observed::of(&st))]).await;
            }
            registry
                .find(&tenant.id.to_string())
                .await
                .unwrap_or(tenant)
        }
    };
    let status = inspect::tenant_status(&tenant, &st, set);
    let failed = result
        .as_ref()
        .is_some_and(|r| r.status == ResultStatus::Failed);
    let schema_created = result.as_ref().is_some_and(|r| r.schema_created);
    let applied = result.as_ref().is_some_and(|r| !r.applied.is_empty());
    let message = message(&tenant, result.as_ref(), &adopted, migrate);
    Ok(Created {
        tenant,
        schema_created,
        schema_adopted: adopted.exists && !schema_created,
        migrations_applied: applied,
        migration_status: status,
        api_key: key.reveal().to_string(),
        message,
        failed,
    })
}

/// The sentence saying what a registration did.
fn message(
    tenant: &Tenant,
    result: Option<&TenantResult>,
    adopted: &Adopted,
    migrate: bool,
) -> String {
    let taken = match adopted.objects {
        Some(n) => format!("adopted (it already held {})", objects(n)),
        None => "taken over (it already existed, empty)".to_string(),
    };
    let schema = quote(&tenant.schema_name);
    let outcome = |created: bool| {
        if created {
            "created".to_string()
        } else if adopted.exists {
            taken.clone()
        } else {
            "already existed".to_string()
        }
    };
    let d = &tenant.domain;
    match result {
        None if adopted.exists => format!("tenant {d} registered, schema {schema} {taken}"),
        None => {
            format!("tenant {d} registered; provision it with `tenantctl provision --tenant {d}`")
        }
        Some(r) if r.status == ResultStatus::Failed => format!(
            "tenant {d} registered, but {}: {}; fix it and run `tenantctl upgrade --tenant {d}`",
            if r.applied.is_empty() && !r.schema_created {
                "setting up its schema failed"
            } else {
                "a migration failed"
            },
            r.error.as_deref().unwrap_or("unknown error"),
        ),
        Some(r) if migrate => format!(
            "tenant {d} registered, schema {schema} {}, at revision {}{}",
            outcome(r.schema_created),
            crate::show::revision(tenant.current_revision),
            // Held back before a file that needs a newer shared schema: say so.
            r.error
                .as_deref()
                .map(|e| format!("; {e}"))
                .unwrap_or_default()
        ),
        Some(r) => format!(
            "tenant {d} registered, schema {schema} {}",
            outcome(r.schema_created)
        ),
    }
}

fn objects(n: i64) -> String {
    format!("{n} {}", if n == 1 { "object" } else { "objects" })
}

/// A session on `tenant`'s server holding its lock (a long wait is reported as an
/// event), on a connection of its own that is closed with the returned pool.
pub async fn locked<'a>(
    cx: &Context<'a>,
    tenant: &'a Tenant,
) -> Result<(Pool, Session<'a>), Error> {
    locked_schema(cx, &tenant.server, &tenant.schema_name, &tenant.domain).await
}

/// A session on schema `schema` of server `server` holding that schema's lock (a long
/// wait is reported as an event for `domain`), on a connection of its own that is
/// closed with the returned pool: for a schema not (or not yet) registered there, such
/// as a copy being built.
pub async fn locked_schema<'a>(
    cx: &Context<'a>,
    server: &str,
    schema: &'a str,
    domain: &str,
) -> Result<(Pool, Session<'a>), Error> {
    locked_as(cx, server, schema, domain, false).await
}

/// [`locked_schema`], or with `shared` a session on the shared schema `schema` under its
/// own lock ([`Session::open_shared`]).
pub async fn locked_as<'a>(
    cx: &Context<'a>,
    server: &str,
    schema: &'a str,
    domain: &str,
    shared: bool,
) -> Result<(Pool, Session<'a>), Error> {
    let report = |holder: Option<&LockHolder>| {
        cx.events.send(RunEvent::Waiting {
            domain: domain.to_string(),
            schema_name: schema.to_string(),
            holder: holder.cloned(),
        })
    };
    let wait = LockWait {
        interrupt: cx.interrupt,
        report: &report,
    };
    let pool = Pool::single(cx.servers.target(server)?.clone());
    let session = if shared {
        Session::open_shared(&pool, cx.settings, schema, &wait).await
    } else {
        Session::open(&pool, cx.settings, schema, &wait).await
    }
    .map_err(Error::from)?;
    Ok((pool, session))
}
