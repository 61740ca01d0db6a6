//! `tenantctl tenant import`: register a new tenant from an archive.

use crate::app::tenant_data::{self, Made, NewFromData};
use crate::app::tenants::NewTenantRequest;
use crate::cli::exit::Exit;
use crate::cli::tenant::NewTenantArgs;
use crate::data::ArchiveInput;
use crate::error::Result;

use super::super::Ctx;

pub use crate::cli::tenant::ImportArgs as Args;

/// Imports the archive as a new tenant, or with --dry-run checks it and says what would
/// happen.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let new = new_from_data(&args.domain, &args.new);
    let input = if args.file.as_os_str() == "-" {
        ArchiveInput::Stdin
    } else {
        ArchiveInput::File(args.file.clone())
    };
    let made = super::super::single(ctx, "tenant import", async |events| {
        tenant_data::import(ctx, events, &new, input, args.new.dry_run).await
    })
    .await?;
    print_made(ctx, &made);
    Ok(Exit::Ok)
}

/// The new tenant a data command asks for.
pub fn new_from_data(domain: &str, new: &NewTenantArgs) -> NewFromData {
    NewFromData {
        request: request(domain, new, None),
        type_given: new.tenant_type.is_some(),
    }
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

/// Prints what a dry run found, or the tenant made from data with its API key once.
pub fn print_made(ctx: &Ctx, made: &Made) {
    let imported = match made {
        Made::Planned(plan) => return ctx.out.outcome(plan, &plan.message),
        Made::Imported(imported) => imported,
    };
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
