//! `tenantctl adopt alembic`: take over a fleet run by the original FastAPI + Alembic
//! service (see [`crate::app::adopt`]).

use crate::app::adopt::{self, Adoption, RevisionMap};
use crate::cli::exit::Exit;
use crate::cli::reporter::{self, Style};
use crate::cli::AdoptCommand;
use crate::engine::plan::SchemaChange;
use crate::error::{Error, Result};
use crate::registry::Registry;

use super::Ctx;

/// Runs an `adopt` subcommand.
pub async fn run(ctx: &Ctx, cmd: &AdoptCommand) -> Result<Exit> {
    let AdoptCommand::Alembic(args) = cmd;
    let set = ctx.migrations()?;
    let map = RevisionMap::load(&args.map, &set)?;
    let mut client = ctx.connect().await?;
    let schema = ctx.settings.registry_schema.clone();
    let original = crate::registry::is_original(&client, &schema).await?;
    let reg = adopt::adopt_registry(
        &mut client,
        &schema,
        args.dry_run,
        ctx.settings.lock_timeout,
    )
    .await?;
    if reg.found == "none" {
        return Err(Error::setup(format!(
            "schema {} has no tenants table: there is no fleet to adopt (`tenantctl init` creates a registry)",
            crate::ident::quote(&schema)
        ))
        .into());
    }
    if !args.dry_run {
        crate::failpoint!("adopt.registry-upgraded", |e: Error| e.into());
    }
    let tenants = adopt::listed(&client, &schema, original && args.dry_run).await?;
    let registry = if args.dry_run {
        None
    } else {
        Some(Registry::open(&client, &schema).await?)
    };
    // Tenants are stamped by id: a domain may read as another tenant's id or schema.
    let by_id: std::collections::HashMap<i64, crate::registry::Tenant> = match &registry {
        Some(r) => r
            .list(None, None)
            .await?
            .into_iter()
            .map(|t| (t.id, t))
            .collect(),
        None => Default::default(),
    };
    let (events, reporting) = reporter::start(&ctx.out, "adopt", Style::Single);
    let cx = ctx.one_tenant(&events);
    let stamp = async |id: i64, version: i32| -> Option<String> {
        let registry = registry.as_ref()?;
        let Some(tenant) = by_id.get(&id) else {
            return Some(format!("tenant id {id} is no longer registered"));
        };
        let run_id = match crate::engine::scheduler::new_run_id() {
            Ok(id) => id,
            Err(e) => return Some(e.to_string()),
        };
        let r = crate::app::tenants::change_one(
            &cx,
            &client,
            registry,
            tenant,
            SchemaChange::Stamp(version),
            &set,
            &run_id,
        )
        .await;
        if r.status != crate::engine::scheduler::ResultStatus::Failed {
            crate::failpoint!(
                "adopt.tenant-stamped",
                return |e: Error| Some(e.to_string())
            );
        }
        (r.status == crate::engine::scheduler::ResultStatus::Failed)
            .then(|| r.error.unwrap_or_else(|| "failed".into()))
    };
    let adoption = adopt::adopt_histories(
        &tenants,
        &ctx.servers,
        &map,
        &ctx.settings.history_table,
        reg,
        args.dry_run,
        stamp,
    )
    .await;
    drop(events);
    reporting.finish().await;
    let adoption = adoption?;
    print(ctx, &adoption);
    Ok(if adoption.complete() {
        Exit::Ok
    } else {
        Exit::Partial
    })
}

fn print(ctx: &Ctx, a: &Adoption) {
    if ctx.out.is_json() {
        ctx.out.json(a);
        return;
    }
    let mut t = ctx
        .out
        .table(&["tenant", "schema", "alembic", "version", "outcome"]);
    let groups = [
        &a.stamped,
        &a.already,
        &a.unregistered_schemas,
        &a.missing_schemas,
        &a.unmapped,
        &a.branches,
        &a.left_alone,
    ];
    let mut any = false;
    for g in groups {
        for f in g.iter() {
            any = true;
            t.add_row(vec![
                f.domain.clone().unwrap_or_else(|| "(unregistered)".into()),
                f.schema_name.clone(),
                f.alembic_revisions.join(", "),
                f.version.map(|v| v.to_string()).unwrap_or_default(),
                f.outcome.clone(),
            ]);
        }
    }
    if any {
        ctx.out.print(&t.to_string());
    }
    for d in &a.registry.without_key {
        // Quoted for a shell when the domain is not one tenantctl would accept.
        let arg = if d
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            d.clone()
        } else {
            format!("'{}'", d.replace('\'', "'\\''"))
        };
        ctx.out.warn(&format!(
            "tenant {d} had no API key: give it one with `tenantctl tenant rotate-key {arg}`"
        ));
    }
    ctx.out.print(&a.message);
}
