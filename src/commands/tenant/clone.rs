//! `tenantctl tenant clone` (and `tenant create --from`): copy a tenant's data into a new
//! tenant, the export streamed straight into the import.

use crate::data;
use crate::error::Result;
use crate::exit::Exit;
use crate::registry::{Registry, Tenant};
use crate::reporter::{self, Style};
use crate::tenants::NewTenantRequest;

use super::super::Ctx;
use super::import::{print_imported, print_plan};

pub use crate::cli::tenant::CloneArgs as Args;

/// Clones the tenant.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let req = super::import::request(&args.domain, &args.new, None);
    crate::tenants::validate(&req, &ctx.settings)?;
    let set = ctx.migrations()?;
    let client = ctx.connect().await?;
    let from = Registry::open(&client, &ctx.settings.registry_schema)
        .await?
        .find(&args.tenant)
        .await?;
    let mut req = req;
    super::import::fill_type(&mut req, &args.new, &from.tenant_type);
    copy(ctx, &client, &from, &req, &set, args.new.dry_run).await
}

/// Makes the tenant `req` describes from `from`'s data, or with `dry_run` says what
/// would be made.
pub async fn copy(
    ctx: &Ctx,
    client: &tokio_postgres::Client,
    from: &Tenant,
    req: &NewTenantRequest,
    set: &crate::migrations::MigrationSet,
    dry_run: bool,
) -> Result<Exit> {
    let (events, reporting) = reporter::start(&ctx.out, "tenant clone", Style::Single);
    let cx = ctx.one_tenant(&events);
    if dry_run {
        let plan = async {
            let manifest = data::peek(&cx, from).await?;
            let label = format!("of tenant {}", from.domain);
            data::plan_import(&cx, client, req, &manifest, set, &label).await
        }
        .await;
        drop(events);
        reporting.finish().await;
        print_plan(ctx, &plan?);
        return Ok(Exit::Ok);
    }
    let imported = data::clone(&cx, client, from, req, set).await;
    drop(events);
    reporting.finish().await;
    print_imported(ctx, &imported?);
    Ok(Exit::Ok)
}
