//! `tenantctl tenant clone` (and `tenant create --from`): copy a tenant's data into a new
//! tenant, the export streamed straight into the import.

use crate::app::tenants::NewTenantRequest;
use crate::cli::exit::Exit;
use crate::cli::reporter::{self, Style};
use crate::data;
use crate::error::Result;
use crate::pg::db::Client;
use crate::registry::{Registry, Tenant};

use super::super::Ctx;
use super::import::{print_imported, print_plan};

pub use crate::cli::tenant::CloneArgs as Args;

/// Clones the tenant.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let req = super::import::request(&args.domain, &args.new, None);
    crate::app::tenants::validate(&req, &ctx.settings)?;
    let set = ctx.migrations()?;
    let client = ctx.connect().await?;
    let from = Registry::open(&client, &ctx.settings.registry_schema)
        .await?
        .find(&args.tenant)
        .await?;
    let mut req = req;
    super::import::fill_type(&mut req, &args.new, &from.tenant_type);
    copy(ctx, &client, &from, &req, &set, args.new.dry_run, None).await
}

/// Makes the tenant `req` describes from `from`'s data, then upgrades it to `upgrade`
/// when given; or with `dry_run` says what would be made.
pub async fn copy(
    ctx: &Ctx,
    client: &Client,
    from: &Tenant,
    req: &NewTenantRequest,
    set: &crate::files::migrations::MigrationSet,
    dry_run: bool,
    upgrade: Option<i32>,
) -> Result<Exit> {
    {
        let registry = Registry::open(client, &ctx.settings.registry_schema).await?;
        crate::data::moving::refuse_unfinished(&registry, from, "copy its data").await?;
    }
    let (events, reporting) = reporter::start(&ctx.out, "tenant clone", Style::Single);
    let cx = ctx.one_tenant(&events);
    if dry_run {
        let plan = async {
            let manifest = data::peek(&cx, from).await?;
            let label = format!("of tenant {}", from.domain);
            let origin = data::Origin::Clone(from.id);
            data::plan_import(&cx, client, req, &manifest, origin, set, &label).await
        }
        .await;
        drop(events);
        reporting.finish().await;
        print_plan(ctx, &plan?);
        return Ok(Exit::Ok);
    }
    let imported = data::clone(&cx, client, from, req, set).await;
    let mut failed = false;
    let imported = match (imported, upgrade) {
        (Ok(mut i), Some(target)) => {
            let registry =
                crate::registry::Registry::open(client, &ctx.settings.registry_schema).await?;
            let change = crate::engine::plan::SchemaChange::Upgrade {
                target: crate::engine::target::Target::Version(target),
                provision: false,
            };
            let run_id = crate::engine::scheduler::new_run_id()?;
            let r = crate::app::tenants::change_one(
                &cx, client, &registry, &i.tenant, change, set, &run_id,
            )
            .await;
            if let Some(t) = r.tenant.clone() {
                i.migration_status.current_revision = t.current_revision;
                i.migration_status.migrations_applied = t.migrations_applied;
                i.migration_status.status = t.status;
                i.migration_status.last_error = t.last_error.clone();
                i.migration_status
                    .pending_migrations
                    .retain(|p| Some(p.version) > t.current_revision);
                i.tenant = t;
            }
            match (&r.error, r.status) {
                (Some(e), crate::engine::scheduler::ResultStatus::Failed) => {
                    failed = true;
                    i.message.push_str(&format!(
                        "; upgrading it to revision {target} failed: {e}; fix it and run `tenantctl upgrade --tenant {}`",
                        i.tenant.domain
                    ));
                }
                _ => i.message.push_str(&format!(
                    ", then upgraded to revision {}",
                    crate::show::revision(i.tenant.current_revision)
                )),
            }
            i.migrations_applied |= !r.applied.is_empty();
            Ok(i)
        }
        (other, _) => other,
    };
    drop(events);
    reporting.finish().await;
    print_imported(ctx, &imported?);
    Ok(if failed { Exit::Failed } else { Exit::Ok })
}
