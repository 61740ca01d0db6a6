//! `tenantctl tenant create`: register a tenant, optionally provision and migrate it, and
//! print its API key once.

use serde::Serialize;

use crate::apikey::ApiKey;
use crate::dependents;
use crate::error::{Error, Exit, Result};
use crate::fleet::{self, Action, ResultStatus, Unprovisioned};
use crate::ident;
use crate::inspect::{self, TenantStatus};
use crate::migrations::MigrationSet;
use crate::output::{revision, yes_no};
use crate::registry::{Event, NewTenant, Registry, Tenant};
use crate::state;
use time::OffsetDateTime;

use super::super::Ctx;

pub use crate::cli::tenant::CreateArgs as Args;

/// The JSON document `tenant create` prints.
#[derive(Debug, Serialize)]
pub struct Created {
    /// The registry row.
    pub tenant: Tenant,
    /// Whether this run created the schema.
    pub schema_created: bool,
    /// Whether the schema existed before this run (empty, or taken over with --adopt)
    /// and is now the tenant's.
    pub schema_adopted: bool,
    /// Whether this run applied migrations.
    pub migrations_applied: bool,
    /// Migration status after the run.
    pub migration_status: TenantStatus,
    /// The API key; shown only here, stored only as a hash.
    pub api_key: String,
    /// What happened, in a sentence.
    pub message: String,
}

/// Registers the tenant, then provisions and migrates it as asked.
pub async fn run(ctx: &Ctx, args: &Args) -> Result<Exit> {
    // Everything the user typed is checked before any connection is made.
    ident::validate_domain(&args.domain)?;
    ident::validate_display_name(&args.name)?;
    if let Some(e) = &args.email {
        ident::validate_email(e)?;
    }
    ident::validate_tenant_type(&args.tenant_type)?;
    let registry_schema = &ctx.settings.registry_schema;
    let schema = match &args.schema {
        Some(s) => {
            ident::validate_schema_name(s, registry_schema)?;
            s.clone()
        }
        None => {
            ident::schema_for_domain(&ctx.settings.schema_prefix, &args.domain, registry_schema)?
        }
    };
    if let Some(role) = dependents::shared_role(&ctx.settings, &schema) {
        return Err(Error::usage(format!(
            "schema {} is {role}; it can never hold a tenant; pass --schema to choose another. Nothing was registered.",
            ident::quote(&schema)
        ))
        .into());
    }
    // With --migrate the files must be valid before the tenant is registered.
    let (set, target) = if args.migrate {
        let set = ctx.migrations()?;
        let target = set.resolve_target(args.target.as_deref().unwrap_or("head"))?;
        (Some(set), target)
    } else {
        (ctx.migrations().ok(), 0)
    };

    let client = ctx.connect().await?;
    let registry = Registry::open(&client, registry_schema).await?;
    if registry.domain_taken(&args.domain).await? {
        return Err(Error::failed(crate::registry::domain_exists(&args.domain)).into());
    }
    if let Some(owner) = registry.schema_owner(&schema).await? {
        return Err(Error::usage(format!(
            "schema {} already belongs to tenant {owner}; pass --schema to choose another. Nothing was registered.",
            ident::quote(&schema)
        ))
        .into());
    }
    let existing = dependents::contents(&client, &schema).await?;
    if existing.non_empty() && !args.adopt {
        return Err(Error::usage(format!(
            "schema {} already exists and holds {}; pass --adopt to make its contents tenant {}'s (`tenant drop` would then drop them with it), or --schema to choose another. Nothing was registered.",
            ident::quote(&schema),
            objects(existing.objects),
            args.domain
        ))
        .into());
    }
    let adopted = existing.exists;
    let key = ApiKey::generate()?;
    let tenant = registry
        .insert(&NewTenant {
            name: &args.name,
            domain: &args.domain,
            email: args.email.as_deref(),
            tenant_type: &args.tenant_type,
            schema_name: &schema,
            api_key_hash: &key.hash(),
            api_key_prefix: &key.prefix(),
        })
        .await?;
    let run_id = fleet::new_run_id()?;
    let host = fleet::client_host();
    let registered = Event {
        run_id: &run_id,
        action: "register",
        from_revision: None,
        started_at: OffsetDateTime::now_utc(),
        client_host: &host,
    };
    registry.log(&tenant, &registered, None).await?;

    let action = if args.migrate {
        Some(Action::ProvisionAndUpgrade(target))
    } else if args.provision {
        Some(Action::Provision)
    } else {
        None
    };
    let empty = MigrationSet::empty(ctx.settings.migrations_dir.clone());
    let set_ref = set.as_ref().unwrap_or(&empty);
    let result = match action {
        Some(action) => {
            ctx.interrupt.set_run_id(&run_id);
            let target = ctx.target.named_for_run(&run_id);
            let env = fleet::Env {
                target: &target,
                settings: &ctx.settings,
                set: set_ref,
                tables: registry.tables(),
                run_id: &run_id,
                client_host: &host,
                interrupt: &ctx.interrupt,
            };
            let notices = ctx.out.notices("tenant create");
            let r =
                fleet::run_one(&env, &tenant, action, Unprovisioned::Fail, notices.as_ref()).await;
            Some(r)
        }
        None => None,
    };
    let states = state::observe(
        &client,
        std::slice::from_ref(&tenant.schema_name),
        &ctx.settings.history_table,
    )
    .await?;
    let tenant = match result.as_ref().and_then(|r| r.tenant.clone()) {
        Some(t) => t,
        None => {
            // Registered without provisioning: an existing schema taken over is recorded
            // as provisioned (and at its revision) from what is observed.
            if adopted {
                let seen = crate::runner::observed(&states[&tenant.schema_name]);
                let _ = registry.sync(&[(tenant.id, seen)]).await;
            }
            registry
                .find(&tenant.id.to_string())
                .await
                .unwrap_or(tenant)
        }
    };
    let status = inspect::tenant_status(&tenant, &states[&tenant.schema_name], set_ref);

    let failed = result
        .as_ref()
        .is_some_and(|r| r.status == ResultStatus::Failed);
    let schema_created = result.as_ref().is_some_and(|r| r.schema_created);
    let applied: Vec<i32> = result
        .as_ref()
        .map(|r| r.applied.clone())
        .unwrap_or_default();
    let taken = if existing.non_empty() {
        format!("adopted (it already held {})", objects(existing.objects))
    } else {
        "taken over (it already existed, empty)".to_string()
    };
    let schema_outcome = |created: bool| {
        if created {
            "created".to_string()
        } else if adopted {
            taken.clone()
        } else {
            "already existed".to_string()
        }
    };
    let message = match &result {
        None if adopted => format!(
            "tenant {} registered, schema {} {}",
            tenant.domain,
            ident::quote(&tenant.schema_name),
            taken
        ),
        None => format!(
            "tenant {} registered; provision it with `tenantctl provision --tenant {}`",
            tenant.domain, tenant.domain
        ),
        Some(r) if failed => format!(
            "tenant {} registered, but {}: {}; fix it and run `tenantctl upgrade --tenant {}`",
            tenant.domain,
            if r.applied.is_empty() && !r.schema_created {
                "setting up its schema failed"
            } else {
                "a migration failed"
            },
            r.error.as_deref().unwrap_or("unknown error"),
            tenant.domain
        ),
        Some(r) if args.migrate => format!(
            "tenant {} registered, schema {} {}, at revision {}",
            tenant.domain,
            ident::quote(&tenant.schema_name),
            schema_outcome(r.schema_created),
            revision(tenant.current_revision)
        ),
        Some(r) => format!(
            "tenant {} registered, schema {} {}",
            tenant.domain,
            ident::quote(&tenant.schema_name),
            schema_outcome(r.schema_created)
        ),
    };
    let created = Created {
        tenant,
        schema_created,
        schema_adopted: adopted && !schema_created,
        migrations_applied: !applied.is_empty(),
        migration_status: status,
        api_key: key.reveal().to_string(),
        message,
    };
    if ctx.out.is_json() {
        ctx.out.json(&created);
    } else {
        let t = &created.tenant;
        ctx.out.pairs(&[
            ("id", t.id.to_string()),
            ("domain", t.domain.clone()),
            ("name", t.tenant_name.clone()),
            ("type", t.tenant_type.clone()),
            ("email", t.email.clone().unwrap_or_default()),
            ("schema", t.schema_name.clone()),
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
        ctx.out.print(&created.message);
        ctx.out.print(&format!(
            "API key (shown once, only its hash is stored): {}",
            created.api_key
        ));
    }
    Ok(if failed { Exit::Failed } else { Exit::Ok })
}

/// "1 object", "2 objects".
fn objects(n: i64) -> String {
    format!("{n} {}", if n == 1 { "object" } else { "objects" })
}
