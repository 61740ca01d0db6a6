//! `tenantctl tenant create`: register a tenant, optionally provision and migrate it, and
//! print its API key once.

use crate::app::tenants::{self, CreateRequest, Made, NewTenantRequest};
use crate::cli::exit::Exit;
use crate::error::Result;
use crate::show::{revision, yes_no};

use super::super::Ctx;

pub use crate::cli::tenant::CreateArgs as Args;

/// Registers the tenant, then provisions and migrates it as asked.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    let request = CreateRequest {
        new: NewTenantRequest {
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
        },
        type_given: args.tenant_type.is_some(),
        from: args.from.clone(),
        provision: args.provision,
        migrate: args.migrate,
        target: args.target.clone(),
        dry_run: args.dry_run,
    };
    let made = super::super::single(ctx, "tenant create", async |events| {
        tenants::create_tenant(ctx, events, &request).await
    })
    .await?;
    let created = match made {
        Made::Copied(cloned) => {
            super::import::print_made(ctx, &cloned.made);
            return Ok(if cloned.upgrade_failed {
                Exit::Failed
            } else {
                Exit::Ok
            });
        }
        Made::Registered(created) => created,
    };
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
