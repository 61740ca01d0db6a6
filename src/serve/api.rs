//! The API's handlers: the original service's endpoints with their request and response
//! fields, the fleet endpoints, asynchronous fleet runs, `/healthz` and `/metrics`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{runs, ApiError, Shared};
use crate::app::tenants::{self, NewTenantRequest};
use crate::engine::plan::SchemaChange;
use crate::engine::scheduler::{Events, ResultStatus, RunEvent, TenantResult};
use crate::engine::target::{Forms, Target};
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::registry::{Registry, Tenant};

type ApiResult<T> = Result<T, ApiError>;

/// Runs a handler's body on a thread of the blocking pool, driven by the service's
/// runtime. The engine's futures borrow across their sessions in ways the compiler
/// cannot prove `Send` for every lifetime, which axum requires of a handler; on a
/// thread of its own a future need not be `Send`. The cost is a thread handoff per
/// request.
pub async fn on_thread<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    match tokio::task::spawn_blocking(move || handle.block_on(f())).await {
        Ok(t) => t,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Parses a JSON body; anything that is not the expected object is 422. It must be an
/// object: serde would otherwise take an array as the fields in order (`[]` as every
/// default).
fn body<T: DeserializeOwned>(bytes: &Bytes) -> ApiResult<T> {
    let invalid = |e: serde_json::Error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid request body: {e}"),
        )
    };
    let Checked(value) = serde_json::from_slice(bytes).map_err(invalid)?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid request body: expected a JSON object",
        ));
    }
    serde_json::from_value(value).map_err(invalid)
}

/// A JSON value whose objects were checked, at every depth, for a key given twice
/// (however it was escaped): JSON parsers disagree on which of the two counts, so the
/// service refuses the body rather than pick one.
struct Checked(serde_json::Value);

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor).map(Checked)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Checked(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(out.into())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate key {}",
                    crate::ident::shown(&key)
                )));
            }
            let Checked(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(out.into())
    }
}

/// A tenant reference as the original service took it: an id (a number, or a numeric
/// string), a domain or a schema name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TenantRef {
    /// A numeric id.
    Id(i64),
    /// A numeric string, a domain or a schema name.
    Name(String),
}

impl TenantRef {
    fn reference(&self) -> String {
        match self {
            TenantRef::Id(i) => i.to_string(),
            TenantRef::Name(s) => s.clone(),
        }
    }
}

/// Finds a tenant; 404 when none matches.
async fn find(registry: &Registry<'_>, reference: &str) -> ApiResult<Tenant> {
    checked(reference)?;
    registry.find(reference).await.map_err(ApiError::from)
}

/// A `tenant_id` in a path that could name a tenant (422 otherwise).
fn checked(reference: &str) -> ApiResult<()> {
    if reference.is_empty() || reference.len() > 255 || reference.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "tenant_id must be an id, a domain or a schema name",
        ));
    }
    Ok(())
}

fn migrations(state: &Shared) -> ApiResult<MigrationSet> {
    state.ctx.migrations().map_err(ApiError::from)
}

/// `POST /api/tenants/`: the original create request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    tenant_name: String,
    domain: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    tenant_type: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    provision_schema: Option<bool>,
    #[serde(default, deserialize_with = "flag")]
    run_migrations: Option<bool>,
}

/// A flag that may be left out (`None`) but not sent as anything but a boolean.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    bool::deserialize(d).map(Some)
}

/// `POST /api/tenants/` for a type with a template: the new tenant is a copy of the
/// template's data, migrated to head when asked (`run_migrations`, default true);
/// `provision_schema: false` cannot apply, since the copy is a schema with data.
async fn create_from_template(
    state: &Shared,
    new: NewTenantRequest,
    provision: bool,
    migrate: bool,
) -> ApiResult<Response> {
    if !provision {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "tenants of type {} are made from their template's data (tenants.templates), \
                 which is a schema: provision_schema cannot be false",
                crate::ident::shown(&new.tenant_type)
            ),
        ));
    }
    let request = tenants::CreateRequest {
        new,
        type_given: true,
        from: None,
        provision: true,
        migrate,
        target: None,
        dry_run: false,
    };
    let events = Events::none();
    match tenants::create_tenant(&state.ctx, &events, &request).await? {
        // As for a tenant made without a template: 201 with the document, whose
        // migration status says where an upgrade that failed left it.
        tenants::Made::Copied(cloned) => {
            Ok((StatusCode::CREATED, Json(cloned.made)).into_response())
        }
        tenants::Made::Registered(created) => {
            Ok((StatusCode::CREATED, Json(created)).into_response())
        }
    }
}

/// See [`create_tenant_body`].
pub async fn create_tenant(State(state): State<Shared>, bytes: Bytes) -> ApiResult<Response> {
    on_thread(move || create_tenant_body(State(state), bytes)).await
}

/// `POST /api/tenants/`: registers a tenant (and provisions and migrates it as asked);
/// 201 with the `tenant create` document, whose `api_key` is shown this once.
async fn create_tenant_body(State(state): State<Shared>, bytes: Bytes) -> ApiResult<Response> {
    let b: CreateBody = body(&bytes)?;
    let set = migrations(&state)?;
    // Both default to true; migrating without a schema is a contradiction, not a guess.
    let provision = b.provision_schema.unwrap_or(true);
    let migrate = b.run_migrations.unwrap_or(provision);
    if migrate && !provision {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "run_migrations needs provision_schema: migrations run in the tenant's schema",
        ));
    }
    let then = if migrate {
        Some(SchemaChange::Upgrade {
            target: Target::Version(set.head()),
            provision: true,
        })
    } else if provision {
        Some(SchemaChange::Provision)
    } else {
        None
    };
    let req = NewTenantRequest {
        domain: b.domain,
        name: b.tenant_name,
        email: b.email.filter(|e| !e.is_empty()),
        tenant_type: b.tenant_type.unwrap_or_else(|| "standard".into()),
        schema: None,
        then,
        adopt: false,
        server: None,
    };
    let schema = tenants::validate(&req, &state.ctx.settings)?;
    // A type with a template in [tenants.templates]: the tenant starts from the
    // template's data, as `tenant create` makes it (the same action).
    if state.ctx.settings.templates.contains_key(&req.tenant_type) {
        return create_from_template(&state, req, provision, migrate).await;
    }
    let lease = state.pool.get().await?;
    // Another tenant's schema is a conflict here, as a taken domain is (the command line
    // reports it as a usage error, exit 2, since there the schema can be chosen).
    {
        let registry = Registry::open(lease.client(), &state.ctx.settings.registry_schema).await?;
        if let Some(owner) = registry.schema_owner(&schema).await? {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "schema {} already belongs to tenant {owner}. Nothing was registered.",
                    crate::ident::quote(&schema)
                ),
            ));
        }
    }
    let events = Events::none();
    let cx = state.ctx.one_tenant(&events);
    let created = tenants::create(&cx, lease.client(), &req, &set).await?;
    lease.done();
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `POST /api/tenants/provision-schema`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionBody {
    tenant_id: TenantRef,
    #[serde(default)]
    force_recreate: bool,
}

/// What a single-tenant change answers.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Changed {
    /// The result, as a bulk run reports each tenant (its `tenant_id` first).
    #[serde(flatten)]
    pub result: TenantResult,
    /// One sentence.
    pub message: String,
}

/// Runs one change on one tenant under its lock; a refusal is 409 and a failure 500,
/// with the tenant's error.
async fn change(
    state: &Shared,
    reference: &str,
    change: SchemaChange,
    set: &MigrationSet,
) -> ApiResult<Json<Changed>> {
    checked(reference)?;
    // On a connection of the action's own, not the pool's: this request may wait for the
    // tenant's lock as long as another run holds it, and must not starve the quick
    // requests.
    let events = Events::none();
    let (tenant, r) = tenants::change_tenant(&state.ctx, &events, reference, change, set).await?;
    if r.status == ResultStatus::Skipped && r.cause == crate::engine::scheduler::Cause::NotStarted {
        // The service is stopping: nothing ran.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            r.error.clone().unwrap_or_else(|| "not started".into()),
        ));
    }
    if r.status == ResultStatus::Failed {
        let status = if r.cause == crate::engine::scheduler::Cause::Refused {
            StatusCode::CONFLICT
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        return Err(ApiError::new(
            status,
            r.error.clone().unwrap_or_else(|| "failed".into()),
        ));
    }
    let message = format!(
        "tenant {}: {} ({} -> {})",
        tenant.domain,
        match r.status {
            ResultStatus::Ok => "done",
            ResultStatus::UpToDate => "nothing to do",
            _ => "skipped",
        },
        crate::show::revision(r.from_revision),
        crate::show::revision(r.to_revision)
    );
    Ok(Json(Changed { result: r, message }))
}

/// See [`provision_schema_body`].
pub async fn provision_schema(
    State(state): State<Shared>,
    bytes: Bytes,
) -> ApiResult<Json<Changed>> {
    on_thread(move || provision_schema_body(State(state), bytes)).await
}

/// `POST /api/tenants/provision-schema`: creates the tenant's schema (or, with
/// `force_recreate`, drops it with its data and creates it empty).
async fn provision_schema_body(
    State(state): State<Shared>,
    bytes: Bytes,
) -> ApiResult<Json<Changed>> {
    let b: ProvisionBody = body(&bytes)?;
    let set = MigrationSet::empty(state.ctx.settings.migrations_dir.clone());
    let c = if b.force_recreate {
        SchemaChange::Recreate
    } else {
        SchemaChange::Provision
    };
    change(&state, &b.tenant_id.reference(), c, &set).await
}

/// `POST /api/tenants/run-migrations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateBody {
    tenant_id: TenantRef,
    #[serde(default)]
    target_revision: Option<TargetRef>,
    #[serde(default)]
    force: bool,
}

/// A revision as a number or a string (`head`, `base`, `"7"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum TargetRef {
    /// A version.
    Number(i64),
    /// `head`, `base` or a version.
    Name(String),
}

/// The target a body names (head when it names none), as the command line parses it
/// for `command` (`forms`): a malformed one is 422, as it is exit 2 there. A JSON number
/// is a version; a relative target is a string (`"+1"`, `"-1"`).
fn parse_target(
    set: &MigrationSet,
    t: &Option<TargetRef>,
    forms: Forms,
    command: &str,
) -> ApiResult<Target> {
    let text = match t {
        None => "head".to_string(),
        Some(TargetRef::Number(n)) if *n < 0 => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("target_revision {n} is not a revision: a number is a version (0 or more); a relative target is a string, e.g. \"{n}\""),
            ))
        }
        Some(TargetRef::Number(n)) => n.to_string(),
        Some(TargetRef::Name(s)) => s.clone(),
    };
    crate::engine::target::parse(&text, set, forms, command).map_err(ApiError::from)
}

/// See [`run_migrations_body`].
pub async fn run_migrations(State(state): State<Shared>, bytes: Bytes) -> ApiResult<Json<Changed>> {
    on_thread(move || run_migrations_body(State(state), bytes)).await
}

/// `POST /api/tenants/run-migrations`: upgrades the tenant to `target_revision` (default
/// head; `"+N"` above its revision). A target below its revision (or `"-N"`) is a
/// downgrade, run only with `force`; without it, the request is refused as `upgrade`
/// refuses it on the command line (409, recorded in the ledger).
async fn run_migrations_body(
    State(state): State<Shared>,
    bytes: Bytes,
) -> ApiResult<Json<Changed>> {
    let b: MigrateBody = body(&bytes)?;
    let set = migrations(&state)?;
    let target = parse_target(&set, &b.target_revision, Forms::Either, "run-migrations")?;
    let reference = b.tenant_id.reference();
    let force_hint = "; send \"force\": true to run it as a downgrade";
    let upgrade = SchemaChange::Upgrade {
        target,
        provision: false,
    };
    // Whether the target was below the revision when looked at, without force.
    let mut below = false;
    let c = match target {
        Target::Up(_) => upgrade,
        Target::Down(_) if b.force => SchemaChange::Downgrade(target),
        Target::Down(n) => {
            // Known to be a downgrade before anything is looked at: nothing is tried.
            find_tenant(&state, &reference).await?;
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("target -{n} is a downgrade, which runs down scripts{force_hint}"),
            ));
        }
        Target::Version(v) => {
            // Which way, from the schema as it is now. The change itself decides again
            // under the tenant's lock: should the schema move meanwhile, a downgrade
            // above it, or an upgrade below it, is refused rather than run.
            let current = current_revision(&state, &reference).await?;
            below = v < current && !b.force;
            if v < current && b.force {
                SchemaChange::Downgrade(target)
            } else {
                upgrade
            }
        }
    };
    change(&state, &reference, c, &set).await.map_err(|mut e| {
        // The command line's refusal, and how to ask for the downgrade here.
        if below && e.status == StatusCode::CONFLICT {
            e.detail.push_str(force_hint);
        }
        e
    })
}

/// The tenant a reference names, from the registry; 404 when none.
async fn find_tenant(state: &Shared, reference: &str) -> ApiResult<Tenant> {
    let lease = state.pool.get().await?;
    let registry = Registry::open(lease.client(), &state.ctx.settings.registry_schema).await?;
    let t = find(&registry, reference).await?;
    drop(registry);
    lease.done();
    Ok(t)
}

/// The tenant's revision as its schema says now (0 for base), read without its lock.
async fn current_revision(state: &Shared, reference: &str) -> ApiResult<i32> {
    let t = find_tenant(state, reference).await?;
    let lease = state.pool.get().await?;
    let states = crate::app::fleet::observe(
        &state.ctx.servers,
        lease.client(),
        std::slice::from_ref(&t),
        &state.ctx.settings.history_table,
        None,
    )
    .await?;
    lease.done();
    Ok(states
        .get(&t.schema_name)
        .and_then(|s| s.current())
        .or(t.current_revision)
        .unwrap_or(0))
}

/// See [`migration_status_body`].
pub async fn migration_status(
    State(state): State<Shared>,
    Path(tenant_id): Path<String>,
) -> ApiResult<Response> {
    on_thread(move || migration_status_body(State(state), Path(tenant_id))).await
}

/// `GET /api/tenants/{tenant_id}/migration-status`: the `status --tenant` document.
async fn migration_status_body(
    State(state): State<Shared>,
    Path(tenant_id): Path<String>,
) -> ApiResult<Response> {
    let set = migrations(&state)?;
    let lease = state.pool.get().await?;
    let registry = Registry::open(lease.client(), &state.ctx.settings.registry_schema).await?;
    let tenant = find(&registry, &tenant_id).await?;
    let (tenant, status) =
        crate::app::status::of(&state.ctx, lease.client(), &registry, tenant, &set).await?;
    let placement = state
        .ctx
        .placement(lease.client(), &tenant, &status)
        .await
        .ok()
        .flatten();
    let doc = serde_json::to_value(crate::app::status::OneStatus { status, placement })
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    drop(registry);
    lease.done();
    Ok(Json(doc).into_response())
}

/// `GET /api/tenants`: the `tenant list` document.
pub async fn list_tenants(State(state): State<Shared>) -> ApiResult<Response> {
    let lease = state.pool.get().await?;
    let registry = Registry::open(lease.client(), &state.ctx.settings.registry_schema).await?;
    let doc = crate::app::status::Listing::of(registry.list(None, None).await?);
    drop(registry);
    lease.done();
    Ok(Json(doc).into_response())
}

/// See [`fleet_status_body`].
pub async fn fleet_status(State(state): State<Shared>) -> ApiResult<Response> {
    on_thread(move || fleet_status_body(State(state))).await
}

/// `GET /api/fleet/status`: the `status --all` document.
async fn fleet_status_body(State(state): State<Shared>) -> ApiResult<Response> {
    let set = migrations(&state)?;
    let lease = state.pool.get().await?;
    let registry = Registry::open(lease.client(), &state.ctx.settings.registry_schema).await?;
    let doc = crate::app::status::fleet(&state.ctx, lease.client(), &registry, &set).await?;
    drop(registry);
    lease.done();
    Ok(Json(doc).into_response())
}

/// `POST /api/fleet/upgrade`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeBody {
    #[serde(default)]
    target_revision: Option<TargetRef>,
    #[serde(default)]
    concurrency: Option<u16>,
}

/// `POST /api/fleet/upgrade`: starts upgrading every tenant and answers 202 with the
/// run's id at once; `GET /api/runs/{run_id}` follows it.
pub async fn fleet_upgrade(State(state): State<Shared>, bytes: Bytes) -> ApiResult<Response> {
    let b: UpgradeBody = if bytes.is_empty() {
        UpgradeBody {
            target_revision: None,
            concurrency: None,
        }
    } else {
        body(&bytes)?
    };
    if let Some(c) = b.concurrency {
        if !(1..=1024).contains(&c) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "concurrency must be 1 to 1024",
            ));
        }
    }
    if state.ctx.interrupt.requested() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is stopping",
        ));
    }
    let set = migrations(&state)?;
    let target = parse_target(&set, &b.target_revision, Forms::Up, "a fleet upgrade")?;
    let run_id = crate::engine::scheduler::new_run_id()?;
    let view = state.runs.begin(&run_id);
    let task_state = state.clone();
    let id = run_id.clone();
    // A run's future is not Send (its sessions share borrowed state); it runs to its end
    // on a thread of its own, driven by the service's runtime.
    let handle = tokio::runtime::Handle::current();
    let task = tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            let outcome = upgrade_all(&task_state, &id, &view, set, target, b.concurrency).await;
            let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = outcome {
                v.error = Some(e.to_string());
            }
            v.state = "finished";
            // The service's log keeps how each run ended (counts only, no tenant), also
            // when the service stops after it and its view is gone.
            let s = &v.summary;
            super::log_line(&format!(
                "run {id} finished: {} ok, {} up to date, {} failed, {} skipped{}",
                s.ok,
                s.up_to_date,
                s.failed,
                s.skipped,
                v.error
                    .as_deref()
                    .map(|e| format!(" ({})", crate::ident::shown(e)))
                    .unwrap_or_default()
            ));
        })
    });
    state.runs.keep(task).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "run_id": run_id })),
    )
        .into_response())
}

/// The body of an API fleet upgrade: as `upgrade --all`, its events kept in `view`.
async fn upgrade_all(
    state: &Shared,
    run_id: &str,
    view: &std::sync::Arc<std::sync::Mutex<runs::RunView>>,
    set: MigrationSet,
    target: Target,
    concurrency: Option<u16>,
) -> Result<(), Error> {
    let ctx = &state.ctx;
    let selection = crate::app::fleet::Selection {
        all: true,
        ..Default::default()
    };
    let mut started = crate::app::changes::Started::open(ctx, set, &selection).await?;
    let change = SchemaChange::Upgrade {
        target,
        provision: false,
    };
    let opts = ctx.run_options(concurrency, None, None);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let events = Events::to(tx);
    let follow_view = view.clone();
    let follower = tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            let line = match &e {
                RunEvent::Began { total } => {
                    follow_view
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .summary
                        .total = *total;
                    Some(format!("started on {total} tenants"))
                }
                RunEvent::Finished(r) => {
                    let mut v = follow_view.lock().unwrap_or_else(|p| p.into_inner());
                    match r.status {
                        ResultStatus::Ok => v.summary.ok += 1,
                        ResultStatus::UpToDate => v.summary.up_to_date += 1,
                        ResultStatus::Failed => v.summary.failed += 1,
                        ResultStatus::Skipped => v.summary.skipped += 1,
                    }
                    drop(v);
                    Some(crate::engine::progress::progress_line("upgrade", r))
                }
                RunEvent::Waiting {
                    domain,
                    schema_name,
                    holder,
                } => Some(crate::engine::progress::waiting_line(
                    "upgrade",
                    domain,
                    schema_name,
                    holder.as_ref(),
                )),
                RunEvent::Shared(r) => Some(crate::engine::progress::shared_line("upgrade", r)),
                RunEvent::Ended => Some("ended".into()),
                _ => None,
            };
            if let Some(line) = line {
                runs::note(&follow_view, line);
            }
        }
    });
    let report = started.run(ctx, change, Some(run_id), &opts, &events).await;
    drop(events);
    let _ = follower.await;
    let report = report?;
    let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
    v.summary = report.summary.clone();
    if let Some(why) = &report.stopped {
        v.error = Some(why.clone());
    }
    Ok(())
}

/// `GET /api/runs/{run_id}`: a run the service started (as it goes), or any run in the
/// ledger (finished).
pub async fn run_status(
    State(state): State<Shared>,
    Path(run_id): Path<String>,
) -> ApiResult<Response> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no run {}", crate::ident::shown(&run_id)),
        )
    };
    if uuid::Uuid::parse_str(&run_id).is_err() {
        return Err(not_found());
    }
    if let Some(v) = state.runs.get(&run_id) {
        return Ok(Json(v).into_response());
    }
    let lease = state.pool.get().await?;
    let registry = Registry::open(lease.client(), &state.ctx.settings.registry_schema).await?;
    let rows = registry
        .events(&crate::registry::EventFilter {
            tenant_id: None,
            run_id: Some(run_id.clone()),
            failed_only: false,
            limit: 100_000,
        })
        .await?;
    drop(registry);
    lease.done();
    if rows.is_empty() {
        return Err(not_found());
    }
    // The summary counts tenants, as a run's report does: a tenant may have several
    // entries in one run (`tenant create --migrate` registers, then provisions and
    // upgrades); it failed when any of them did, and was skipped when one was refused
    // (nothing was changed) and none failed.
    let mut by_tenant: std::collections::BTreeMap<i64, (bool, bool)> = Default::default();
    for r in &rows {
        let (failed, refused) = by_tenant.entry(r.tenant_id).or_default();
        *failed |= r.status == "failed";
        *refused |= r.status == "refused";
    }
    let failed = by_tenant.values().filter(|(f, _)| *f).count();
    let skipped = by_tenant.values().filter(|(f, r)| !*f && *r).count();
    let summary = crate::registry::Summary {
        total: by_tenant.len(),
        ok: by_tenant.len() - failed - skipped,
        failed,
        skipped,
        ..Default::default()
    };
    let mut events = Vec::with_capacity(rows.len());
    for r in rows.iter().rev() {
        events.push(format!(
            "{} {}: {} ({} -> {}){}",
            r.action,
            r.domain,
            r.status,
            crate::show::revision(r.from_revision),
            crate::show::revision(r.to_revision),
            r.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
    }
    Ok(Json(runs::RunView {
        run_id,
        state: "finished",
        summary,
        events,
        error: None,
    })
    .into_response())
}

/// `GET /healthz`: 200 when the registry answers, 503 when it does not; never a tenant's
/// name.
pub async fn healthz(State(state): State<Shared>) -> Response {
    let ok = tokio::time::timeout(HEALTH_TIMEOUT, async {
        let lease = state.pool.get().await?;
        lease
            .client()
            .simple_query("SELECT 1")
            .await
            .map_err(crate::pg::db::query_error("checking the registry"))?;
        lease.done();
        Ok::<(), Error>(())
    })
    .await;
    match ok {
        Ok(Ok(())) => (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response(),
        other => {
            // Why goes to the log: the answer needs no token, so it names no server.
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {} s", HEALTH_TIMEOUT.as_secs()),
            };
            super::log_line(&format!("health check failed: {why}"));
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({
                    "status": "unavailable",
                    "detail": "the registry's database does not answer (the service's log says why)"
                })),
            )
                .into_response()
        }
    }
}

/// How long `/healthz` waits for the registry.
const HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /metrics`: Prometheus's text format.
pub async fn metrics(State(state): State<Shared>) -> ApiResult<Response> {
    let head = state.ctx.migrations().map(|s| s.head()).unwrap_or(0);
    let gathered = async {
        let lease = state.pool.get().await?;
        let registry = Registry::open(lease.client(), &state.ctx.settings.registry_schema).await?;
        let m = crate::app::metrics::gather(
            lease.client(),
            registry.tables(),
            head,
            crate::app::metrics::server_names(&state.ctx),
            &state.ctx.settings.backup_policies,
        )
        .await?;
        drop(registry);
        lease.done();
        Ok::<_, Error>(m.with_shared(&state.ctx).await.with_drift(&state.ctx).await)
    };
    let m = match gathered.await {
        Ok(m) => m,
        Err(e) => {
            // Why goes to the log: the answer needs no token, so it names no server
            // or database.
            super::log_line(&format!("metrics failed: {e}"));
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the registry could not be read (the service's log says why)",
            ));
        }
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = crate::app::metrics::Text(crate::app::metrics::render(&m));
            state.traffic.render(&mut text);
            text.0
        },
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_must_be_an_object() {
        for text in [
            &b"[]"[..],
            br#"["Eps", "eps"]"#,
            b"null",
            b"3",
            b"\"x\"",
            b"",
        ] {
            let e = body::<UpgradeBody>(&Bytes::copy_from_slice(text)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{text:?}");
        }
        assert!(body::<CreateBody>(&Bytes::from_static(br#"["Eps", "eps"]"#)).is_err());
        assert!(body::<MigrateBody>(&Bytes::from_static(br#"["eps"]"#)).is_err());
        assert!(body::<UpgradeBody>(&Bytes::from_static(b"{}")).is_ok());
        assert!(body::<MigrateBody>(&Bytes::from_static(br#"{"tenant_id": 3}"#)).is_ok());
    }

    #[test]
    fn a_key_given_twice_is_refused_at_any_depth() {
        for text in [
            &br#"{"concurrency": 1, "concurrency": 2}"#[..],
            br#"{"concurrency": 1, "\u0063oncurrency": 2}"#,
            br#"{"target_revision": {"a": 1, "a": 1}}"#,
            br#"{"target_revision": [1, [{"b": {"c": null, "c": null}}]]}"#,
        ] {
            let e = body::<UpgradeBody>(&Bytes::copy_from_slice(text)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{text:?}");
            assert!(e.detail.contains("duplicate key"), "{}", e.detail);
        }
        assert!(body::<UpgradeBody>(&Bytes::from_static(br#"{"concurrency": 2}"#)).is_ok());
    }

    #[test]
    fn a_misspelled_field_is_refused_rather_than_ignored() {
        // Ignored, `target_revison` would migrate to head.
        let e = body::<MigrateBody>(&Bytes::from_static(
            br#"{"tenant_id": 3, "target_revison": 2}"#,
        ))
        .unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.detail.contains("target_revison"), "{}", e.detail);
        assert!(body::<UpgradeBody>(&Bytes::from_static(br#"{"concurency": 2}"#)).is_err());
    }
}
