//! `tenantctl tenant create`: register a tenant, optionally provision and migrate it, and
//! print its API key once.

use crate::app::tenants::{self, NewTenantRequest};
use crate::cli::exit::Exit;
use crate::cli::reporter::{self, Style};
use crate::engine::plan::SchemaChange;
use crate::error::Result;
use crate::files::migrations::MigrationSet;
use crate::show::{revision, yes_no};

use super::super::Ctx;

pub use crate::cli::tenant::CreateArgs as Args;

/// Registers the tenant, then provisions and migrates it as asked.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let mut req = NewTenantRequest {
        domain: args.domain.clone(),
        name: args.name.clone(),
        email: args.email.clone(),
        tenant_type: args
            .tenant_type
            .clone()
            .unwrap_or_else(|| "standard".to_string()),
        schema: args.schema.clone(),
        then: None,
        adopt: args.adopt,
        server: args.server.clone(),
    };
    // Everything the user typed is checked before any connection is made.
    tenants::validate(&req, &ctx.settings)?;
    // From another tenant's data: --from, or the template of the tenant's type.
    let template = args
        .from
        .clone()
        .or_else(|| ctx.settings.templates.get(&req.tenant_type).cloned());
    if let Some(from) = template {
        let set = ctx.migrations()?;
        let client = ctx.connect().await?;
        let registry =
            crate::registry::Registry::open(&client, &ctx.settings.registry_schema).await?;
        let from = registry.find(&from).await.map_err(|e| {
            if args.from.is_some() {
                e
            } else {
                crate::error::Error::setup(format!(
                    "tenants.templates.{} names tenant {from}, which is not registered: {e}",
                    req.tenant_type
                ))
            }
        })?;
        // With --from and no --type, the new tenant takes the source's type.
        if args.from.is_some() && args.tenant_type.is_none() {
            req.tenant_type = from.tenant_type.clone();
        }
        // --migrate takes the copy on to --target (default head) after it is made.
        let upgrade = match args.migrate {
            true => Some(migrate_target(args.target.as_deref(), &set)?),
            false => None,
        };
        return super::clone::copy(ctx, &client, &from, &req, &set, args.dry_run, upgrade).await;
    }
    if args.dry_run {
        return Err(crate::error::Error::usage(
            "--dry-run applies to a tenant made from another's data (--from, or a type in [tenants.templates])",
        )
        .into());
    }
    // With --migrate the files must be valid before the tenant is registered.
    let set = if args.migrate {
        let set = ctx.migrations()?;
        let target = migrate_target(args.target.as_deref(), &set)?;
        req.then = Some(SchemaChange::Upgrade {
            target: crate::engine::target::Target::Version(target),
            provision: true,
        });
        set
    } else {
        if args.provision {
            req.then = Some(SchemaChange::Provision);
        }
        ctx.migrations()
            .unwrap_or_else(|_| MigrationSet::empty(ctx.settings.migrations_dir.clone()))
    };
    let client = ctx.connect().await?;
    let (events, reporting) = reporter::start(&ctx.out, "tenant create", Style::Single);
    let cx = ctx.one_tenant(&events);
    let created = tenants::create(&cx, &client, &req, &set).await;
    drop(events);
    reporting.finish().await;
    let created = created?;
    if ctx.out.is_json() {
        ctx.out.json(&created);
    } else {
        let t = &created.tenant;
        let mut rows = crate::cli::output::identity_rows(t);
        rows.extend([
            ("provisioned", yes_no(t.schema_provisioned).into()),
            ("revision", revision(t.current_revision)),
            (
                "pending",
                created
                    .migration_status
                    .pending_migrations
                    .len()
                    .to_string(),
            ),
            ("status", t.status.as_str().into()),
        ]);
        ctx.out.pairs(&rows);
        ctx.out.print(&created.message);
        ctx.out.print(&format!(
            "API key (shown once, only its hash is stored): {}",
            created.api_key
        ));
    }
    Ok(if created.failed {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

/// The version `--migrate` goes to: `--target` (head by default), a version only.
fn migrate_target(target: Option<&str>, set: &MigrationSet) -> Result<i32> {
    use crate::engine::target::{parse, Forms, Target};
    match parse(
        target.unwrap_or("head"),
        set,
        Forms::Version,
        "tenant create --target",
    )? {
        Target::Version(v) => Ok(v),
        other => Err(crate::error::Error::usage(format!(
            "tenant create --target takes a version, not {other}"
        ))
        .into()),
    }
}
