//! `tenantctl tenant drop`: remove a tenant from the registry and drop its schema, never
//! anything outside it.

use serde::Serialize;
use time::OffsetDateTime;

use crate::dependents::{self, Dependent};
use crate::error::{Error, Exit, Result};
use crate::fleet;
use crate::ident::quote;
use crate::registry::{Event, Registry, Tenant};
use crate::runner::{LockHolder, LockWait, Session};

use super::super::Ctx;

pub use crate::cli::tenant::DropArgs as Args;

/// The JSON document `tenant drop` prints.
#[derive(Debug, Serialize)]
pub struct Dropped {
    /// The registry row as it was.
    pub tenant: Tenant,
    /// Whether a schema was dropped: false with `--keep-schema`, and when the schema did
    /// not exist (a tenant never provisioned).
    pub schema_dropped: bool,
    /// What happened, in a sentence.
    pub message: String,
}

/// The JSON document `tenant drop --dry-run` prints.
#[derive(Debug, Serialize)]
pub struct DropPlan {
    /// Always true: nothing was changed.
    pub dry_run: bool,
    /// The registry row, which would be removed.
    pub tenant: Tenant,
    /// The tenant's schema.
    pub schema_name: String,
    /// Whether the schema exists.
    pub schema_exists: bool,
    /// Whether the schema would be dropped (it exists, `--keep-schema` is not given and
    /// nothing blocks the drop).
    pub would_drop_schema: bool,
    /// Objects in the schema (tables, views, sequences, functions, types, ...), not
    /// counting their parts (indexes, constraints, ...).
    pub objects: i64,
    /// Objects outside the schema that depend on objects in it; any of them refuses the
    /// drop. Empty with `--keep-schema`.
    pub blocking: Vec<Dependent>,
    /// Why the drop would be refused, if it would.
    pub error: Option<String>,
    /// What would happen, in a sentence.
    pub message: String,
}

/// Drops the tenant under its lock, so it never races an upgrade of the same tenant.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let mut client = ctx.connect().await?;
    let tenant = {
        let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
        registry.find(&args.tenant).await?
    };
    let plan = plan(ctx, &mut client, &tenant, args.keep_schema).await?;
    if args.dry_run {
        let exit = if plan.error.is_some() {
            Exit::Failed
        } else {
            Exit::Ok
        };
        print_plan(ctx, &plan);
        return Ok(exit);
    }
    // Refuse before asking: the same check runs again under the lock, in the transaction
    // that drops the schema.
    if let Some(e) = plan.error {
        return Err(Error::failed(e).into());
    }
    let registry = Registry::open(&client, &ctx.settings.registry_schema).await?;
    let what = if args.keep_schema {
        format!(
            "this removes tenant {} from the registry (its schema {} is kept).",
            tenant.domain,
            quote(&tenant.schema_name)
        )
    } else if plan.schema_exists {
        format!(
            "this removes tenant {} from the registry and DROPS its schema {} with ALL its data ({} objects).",
            tenant.domain,
            quote(&tenant.schema_name),
            plan.objects
        )
    } else {
        format!(
            "this removes tenant {} from the registry (its schema {} does not exist).",
            tenant.domain,
            quote(&tenant.schema_name)
        )
    };
    crate::cli::confirm::confirm(&what, args.yes)?;
    let started_at = OffsetDateTime::now_utc();
    let notices = ctx.out.notices("tenant drop");
    let report = |holder: Option<&LockHolder>| notices.waiting(&tenant, holder);
    let wait = LockWait {
        interrupt: &ctx.interrupt,
        report: &report,
    };
    let mut session = Session::open(&ctx.target, &ctx.settings, &tenant.schema_name, &wait)
        .await
        .map_err(crate::error::Error::from)?;
    // An upgrade may have held the lock while this waited: read the row as it is now.
    let tenant = registry.find(&tenant.id.to_string()).await.map_err(|_| {
        Error::failed(format!(
            "tenant {} was dropped by another command while this one waited for it",
            tenant.domain
        ))
    })?;
    let run_id = fleet::new_run_id()?;
    let host = fleet::client_host();
    let event = Event {
        run_id: &run_id,
        action: if args.keep_schema {
            "drop (schema kept)"
        } else {
            "drop"
        },
        from_revision: tenant.current_revision,
        started_at,
        client_host: &host,
    };
    let schema_dropped = session
        .drop_tenant(registry.tables(), &tenant, args.keep_schema, &event)
        .await?;
    let message = if args.keep_schema {
        format!(
            "tenant {} removed from the registry; schema {} kept",
            tenant.domain,
            quote(&tenant.schema_name)
        )
    } else if schema_dropped {
        format!(
            "tenant {} removed and schema {} dropped",
            tenant.domain,
            quote(&tenant.schema_name)
        )
    } else {
        format!(
            "tenant {} removed from the registry; its schema {} did not exist, so nothing was dropped",
            tenant.domain,
            quote(&tenant.schema_name)
        )
    };
    let dropped = Dropped {
        tenant,
        schema_dropped,
        message,
    };
    if ctx.out.is_json() {
        ctx.out.json(&dropped);
    } else {
        ctx.out.print(&dropped.message);
    }
    Ok(Exit::Ok)
}

/// What a drop would do, read without a lock and without changing anything.
async fn plan(
    ctx: &Ctx,
    client: &mut tokio_postgres::Client,
    tenant: &Tenant,
    keep_schema: bool,
) -> Result<DropPlan, Error> {
    let schema = &tenant.schema_name;
    let boundary = dependents::inspect(client, schema).await?;
    let exists = boundary.contents.exists;
    let shared = dependents::shared_role(&ctx.settings, schema);
    let (blocking, error) = if keep_schema || !exists {
        (Vec::new(), None)
    } else if let Some(role) = shared {
        (
            Vec::new(),
            Some(format!(
                "refusing to drop schema {}: it is {role}, not a tenant's own schema; nothing was changed; `tenantctl tenant drop {} --keep-schema` removes only the registry row",
                quote(schema),
                tenant.domain
            )),
        )
    } else if boundary.outside.is_empty() {
        (Vec::new(), None)
    } else {
        let fix = format!(
            "Or keep the schema: `tenantctl tenant drop {} --keep-schema` removes only the registry row.",
            tenant.domain
        );
        let e = dependents::refusal(
            &format!("drop schema {}", quote(schema)),
            &boundary.outside,
            &fix,
        );
        (boundary.outside, Some(e))
    };
    let would_drop = exists && !keep_schema && error.is_none();
    let message = match (&error, keep_schema, exists) {
        (Some(e), _, _) => e.clone(),
        (None, true, _) => format!(
            "would remove tenant {} from the registry and keep schema {}",
            tenant.domain,
            quote(schema)
        ),
        (None, false, true) => format!(
            "would remove tenant {} from the registry and drop schema {} with its {} objects; nothing outside it depends on it",
            tenant.domain,
            quote(schema),
            boundary.contents.objects
        ),
        (None, false, false) => format!(
            "would remove tenant {} from the registry; schema {} does not exist, so nothing would be dropped",
            tenant.domain,
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

fn print_plan(ctx: &Ctx, plan: &DropPlan) {
    if ctx.out.is_json() {
        ctx.out.json(plan);
        return;
    }
    ctx.out.pairs(&[
        ("tenant", plan.tenant.domain.clone()),
        ("schema", plan.schema_name.clone()),
        (
            "exists",
            crate::output::yes_no(plan.schema_exists).to_string(),
        ),
        ("objects", plan.objects.to_string()),
        (
            "drop schema",
            crate::output::yes_no(plan.would_drop_schema).to_string(),
        ),
    ]);
    if plan.blocking.is_empty() {
        ctx.out.print(&plan.message);
    } else {
        let n = plan.blocking.len();
        ctx.out.print(&format!(
            "refused: {n} {} outside schema {} {} on it (dropping it would remove {} too):",
            if n == 1 { "object" } else { "objects" },
            quote(&plan.schema_name),
            if n == 1 { "depends" } else { "depend" },
            if n == 1 { "it" } else { "them" },
        ));
        for d in &plan.blocking {
            ctx.out.print(&format!("  {d}"));
        }
        ctx.out.print(
            "nothing was changed; drop or change those objects first, or pass --keep-schema",
        );
    }
}
