//! `tenantctl tenant import`: register a new tenant from an archive.

use crate::app::tenants::NewTenantRequest;
use crate::cli::exit::Exit;
use crate::cli::reporter::{self, Style};
use crate::cli::tenant::NewTenantArgs;
use crate::data::{self, ArchiveInput, ImportPlan, Imported};
use crate::error::Result;

use super::super::Ctx;

pub use crate::cli::tenant::ImportArgs as Args;

/// Imports the archive as a new tenant, or with --dry-run checks it and says what would
/// happen.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let set = ctx.migrations()?;
    let mut req = request(&args.domain, &args.new, None);
    // Names are checked before the archive is read or any connection is made.
    crate::app::tenants::validate(&req, &ctx.settings)?;
    let stdin = args.file.as_os_str() == "-";
    let input = if stdin {
        ArchiveInput::Stdin
    } else {
        ArchiveInput::File(args.file.clone())
    };
    if args.new.dry_run {
        let label = input.label();
        let (manifest, checksum) = match input {
            ArchiveInput::File(p) => {
                let f = std::fs::File::open(&p).map_err(|e| {
                    crate::error::Error::usage(format!("cannot read archive {label}: {e}"))
                })?;
                data::stream::verify_whole(Box::new(f), &label).await?
            }
            _ => data::stream::verify_whole(Box::new(std::io::stdin()), &label).await?,
        };
        fill_type(&mut req, &args.new, &manifest.source.tenant_type);
        let client = ctx.connect().await?;
        let (events, reporting) = reporter::start(&ctx.out, "tenant import", Style::Single);
        let cx = ctx.one_tenant(&events);
        let origin = data::Origin::Archive(checksum);
        let plan = data::plan_import(&cx, &client, &req, &manifest, origin, &set, &label).await;
        drop(events);
        reporting.finish().await;
        print_plan(ctx, &plan?);
        return Ok(Exit::Ok);
    }
    let client = ctx.connect().await?;
    let (events, reporting) = reporter::start(&ctx.out, "tenant import", Style::Single);
    let cx = ctx.one_tenant(&events);
    let typed = args.new.tenant_type.clone();
    let imported = data::import(&cx, &client, &req_with(&mut req, typed), input, &set).await;
    drop(events);
    reporting.finish().await;
    print_imported(ctx, &imported?);
    Ok(Exit::Ok)
}

fn req_with(req: &mut NewTenantRequest, tenant_type: Option<String>) -> NewTenantRequest {
    // Without --type the archive's own type is used (an empty type asks for it).
    req.tenant_type = tenant_type.unwrap_or_default();
    req.clone()
}

/// The registration a data command asks for. The tenant type is `source_type` when
/// --type is not given (an empty type when not yet known).
pub fn request(domain: &str, new: &NewTenantArgs, source_type: Option<&str>) -> NewTenantRequest {
    NewTenantRequest {
        domain: domain.to_string(),
        name: new.name.clone(),
        email: new.email.clone(),
        tenant_type: new
            .tenant_type
            .clone()
            .or(source_type.map(str::to_string))
            .unwrap_or_else(|| "standard".to_string()),
        schema: new.schema.clone(),
        then: None,
        adopt: false,
        server: new.server.clone(),
    }
}

/// Sets the request's type to the source's when --type was not given.
pub fn fill_type(req: &mut NewTenantRequest, new: &NewTenantArgs, source_type: &str) {
    if new.tenant_type.is_none() {
        req.tenant_type = source_type.to_string();
    }
}

/// Prints what a dry run found.
pub fn print_plan(ctx: &Ctx, plan: &ImportPlan) {
    if ctx.out.is_json() {
        ctx.out.json(plan);
    } else {
        ctx.out.print(&plan.message);
    }
}

/// Prints a tenant made from data, with its API key once.
pub fn print_imported(ctx: &Ctx, imported: &Imported) {
    if ctx.out.is_json() {
        ctx.out.json(imported);
        return;
    }
    let t = &imported.tenant;
    let mut rows = crate::cli::output::identity_rows(t);
    rows.extend([
        ("revision", crate::show::revision(t.current_revision)),
        ("tables", imported.tables.to_string()),
        ("rows", imported.rows.to_string()),
        ("status", t.status.as_str().into()),
    ]);
    ctx.out.pairs(&rows);
    ctx.out.print(&imported.message);
    ctx.out.print(&format!(
        "API key (shown once, only its hash is stored): {}",
        imported.api_key
    ));
}
