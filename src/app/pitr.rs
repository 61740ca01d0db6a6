//! One tenant as it was at a given time, for both faces: `tenant restore T --at TIME`
//! (the live tenant replaced by it, or with `--into` a new tenant made from it) and
//! `tenant export T --at TIME` (its archive written). The tenant's server is recovered
//! to that time on a scratch instance by pgBackRest ([`crate::data::pitr`]), the tenant
//! exported from it with the same export as `tenant export`, the instance removed, and
//! the archive restored (or imported) as `tenant restore FILE` (or `tenant import`)
//! does: under the tenant's lock and write fence, other tenants never touched.

use serde::Serialize;
use time::OffsetDateTime;

use crate::app::context::Context;
use crate::app::tenant_data::{self, ArchiveOut, NewFromData};
use crate::data::{self, pitr, ArchiveInput, ExportReport, Imported, Restored};
use crate::engine::scheduler::Events;
use crate::error::Error;
use crate::ident::quote;
use crate::registry::{Registry, Tenant};

/// What a point-in-time restore did.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PitrRestored {
    /// The tenant recovered (its domain).
    pub tenant: String,
    /// The time asked for (RFC 3339, UTC).
    pub at: String,
    /// The time of the last transaction recovery replayed (RFC 3339, UTC); null when
    /// none after the backup's end.
    pub recovered_to: Option<String>,
    /// The pgBackRest backup recovery started from.
    pub backup: String,
    /// Tables loaded.
    pub tables: usize,
    /// Rows loaded.
    pub rows: u64,
    /// The whole operation, recovery included.
    pub duration_ms: u64,
    /// How long the tenant's writes waited (0 with `--into`: the live tenant is not
    /// touched).
    pub write_block_ms: u64,
    /// The restore into the live tenant, without `--into`.
    pub restored: Option<Restored>,
    /// The new tenant, with `--into` (its API key is shown once).
    pub imported: Option<Box<Imported>>,
    /// One sentence.
    pub message: String,
}

/// What a dry run of a point-in-time restore found; nothing was made.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PitrPlan {
    /// Always true.
    pub dry_run: bool,
    /// The tenant (its domain).
    pub tenant: String,
    /// Its server.
    pub server: String,
    /// The server's pgBackRest stanza.
    pub stanza: String,
    /// The time asked for (RFC 3339, UTC).
    pub at: String,
    /// The backup recovery would start from.
    pub backup: String,
    /// Its size once restored, which the scratch directory has room for.
    pub backup_bytes: u64,
    /// The earliest time that can be recovered (RFC 3339, UTC).
    pub oldest: String,
    /// The latest (the last archived WAL's time), when the server has archived any.
    pub newest: Option<String>,
    /// One sentence.
    pub message: String,
}

/// What a point-in-time export wrote.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PitrExported {
    /// The time asked for (RFC 3339, UTC).
    pub at: String,
    /// The time of the last transaction recovery replayed (RFC 3339, UTC).
    pub recovered_to: Option<String>,
    /// The pgBackRest backup recovery started from.
    pub backup: String,
    /// The export, as `tenant export` reports it.
    #[serde(flatten)]
    pub export: ExportReport,
}

/// A time as the documents give it: RFC 3339 in UTC, to the microsecond.
fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| pitr::shown(at))
}

/// The tenant, its server's recovery tools and the window, checked; nothing made.
struct Checked {
    client: crate::pg::db::Client,
    tenant: Tenant,
    tools: pitr::Tools,
    window: pitr::Window,
}

/// Finds the tenant and checks everything that can be checked before a recovery: no
/// unfinished move, the server's pgBackRest stanza and tools, the time inside the
/// window, room in the scratch directory; and with `replace`, nothing of another schema
/// depending on the tenant's (which would make the final restore refuse).
async fn check(
    cx: &Context,
    reference: &str,
    at: OffsetDateTime,
    doing: &str,
    replace: bool,
    into: Option<&str>,
) -> Result<Checked, Error> {
    let client = cx.connect().await?;
    let registry = Registry::open(&client, &cx.settings.registry_schema).await?;
    let tenant = registry.find(reference).await?;
    data::moving::refuse_unfinished(&registry, &tenant, doing).await?;
    if let Some(domain) = into {
        if let Ok(taken) = registry.find(domain).await {
            return Err(Error::conflict(format!(
                "tenant {} already exists (id {}): --into needs a new domain; nothing was changed",
                taken.domain, taken.id
            )));
        }
    }
    drop(registry);
    let mut live = cx.connect_server(&tenant.server).await?;
    let tools = pitr::tools(&cx.settings, &tenant.server, &live).await?;
    let window = pitr::window(&tools, &live, at).await?;
    if replace {
        let exists: bool = crate::pg::db::read(
            &live,
            "looking for the tenant's schema",
            live.query_one(
                "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)",
                &[&tenant.schema_name],
            ),
        )
        .await?
        .get(0);
        if !exists {
            return Err(Error::refused(format!(
                "tenant {}'s schema {} does not exist on server {}: make it first with `tenantctl provision --tenant {}`, then restore it --at; nothing was changed",
                tenant.domain,
                quote(&tenant.schema_name),
                crate::ident::shown(&tenant.server),
                tenant.domain
            )));
        }
        let boundary = crate::engine::dependents::inspect(&mut live, &tenant.schema_name).await?;
        if !boundary.outside.is_empty() {
            return Err(Error::refused(crate::engine::plan::data_blocked(
                &tenant.schema_name,
                &boundary.outside,
                "restore",
            )));
        }
    }
    Ok(Checked {
        client,
        tenant,
        tools,
        window,
    })
}

impl Checked {
    /// The dry run's document.
    fn plan(&self, at: OffsetDateTime, would: &str) -> PitrPlan {
        PitrPlan {
            dry_run: true,
            tenant: self.tenant.domain.clone(),
            server: self.tenant.server.clone(),
            stanza: self.tools.stanza.stanza.clone(),
            at: rfc3339(at),
            backup: self.window.backup.clone(),
            backup_bytes: self.window.bytes,
            oldest: rfc3339(self.window.oldest),
            newest: self.window.newest.map(rfc3339),
            message: format!(
                "would recover server {}'s backup {} (stanza {}) to {} on a scratch instance and {would}; it can recover {}; nothing was changed",
                crate::ident::shown(&self.tenant.server),
                self.window.backup,
                self.tools.stanza.stanza,
                rfc3339(at),
                self.window.shown()
            ),
        }
    }

    /// Recovers the tenant's server to `at` on a scratch instance and writes the
    /// tenant's archive from it to `to`; returns the instance (stopped, its directory
    /// kept until removed) and the export's report.
    async fn recover_and_export(
        &self,
        cx: &Context,
        events: &Events,
        at: OffsetDateTime,
        to: impl FnOnce(&std::path::Path) -> Result<tenant_data::PreparedOut, Error>,
    ) -> Result<(pitr::Instance, ExportReport), Error> {
        let tenant = &self.tenant;
        let live = cx.servers.target(&tenant.server)?;
        // Ctrl-C stops the recovery and removes the scratch instance (a second one exits
        // at once; the next --at run removes what is left).
        let _graceful = cx.interrupt.graceful_guard_saying(
            "stopping: the scratch instance is being stopped and its directory removed; nothing was changed (signal again to exit at once: the next --at run removes what is left)",
        );
        let mut instance = pitr::recover(
            &self.tools,
            &self.window,
            at,
            live,
            events,
            &tenant.domain,
            &cx.interrupt,
        )
        .await?;
        let scratch = instance.target().clone();
        let exists = {
            let c = scratch.connect().await?;
            crate::pg::db::read(
                &c,
                "looking for the tenant's schema on the scratch instance",
                c.query_one(
                    "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)",
                    &[&tenant.schema_name],
                ),
            )
            .await?
            .get::<_, bool>(0)
        };
        if !exists {
            instance.remove().await;
            return Err(Error::refused(format!(
                "tenant {}'s schema {} did not exist on server {} at {} (made later, or on another server then); nothing was changed",
                tenant.domain,
                quote(&tenant.schema_name),
                crate::ident::shown(&tenant.server),
                rfc3339(at)
            )));
        }
        let servers = cx.servers.replacing(&tenant.server, scratch.clone());
        let registry_target = if crate::registry::servers::is_default(&tenant.server) {
            scratch.clone()
        } else {
            cx.target.clone()
        };
        let one = crate::engine::tenant::Context {
            target: &registry_target,
            servers: &servers,
            settings: &cx.settings,
            interrupt: &cx.interrupt,
            events,
        };
        let out = to(instance.dir())?;
        let exported = tenant_data::write_export(&one, tenant, out).await;
        let exported = match exported {
            Ok(e) => e,
            Err(e) => {
                instance.remove().await;
                return Err(e);
            }
        };
        crate::failpoint!("pitr.exported");
        if cx.interrupt.requested() {
            instance.remove().await;
            return Err(Error::new(
                crate::error::ErrorKind::Interrupted,
                "interrupted: the scratch instance was stopped and removed; nothing was changed",
            ));
        }
        instance.stop().await;
        Ok((instance, exported))
    }
}

/// Writes the archive of the tenant `reference` names as it was at `at` to `to`.
pub async fn export_at(
    cx: &Context,
    events: &Events,
    reference: &str,
    at: OffsetDateTime,
    to: ArchiveOut,
) -> Result<PitrExported, Error> {
    // The file is checked before anything else.
    let to = tenant_data::prepare_out(to)?;
    let checked = check(cx, reference, at, "export it", false, None).await?;
    let (instance, export) = checked
        .recover_and_export(cx, events, at, |_| Ok(to))
        .await?;
    let recovered_to = instance.recovered_to.map(rfc3339);
    instance.remove().await;
    let mut export = export;
    export.message = format!(
        "{} as at {} (recovered to {})",
        export.message,
        rfc3339(at),
        recovered_to.as_deref().unwrap_or("the backup's end")
    );
    Ok(PitrExported {
        at: rfc3339(at),
        recovered_to,
        backup: checked.window.backup.clone(),
        export,
    })
}

/// Replaces the tenant `reference` names with its data as it was at `at`, or with
/// `into` makes a new tenant of it; with `dry_run` checks what can be checked and says
/// what would be done.
pub async fn restore_at(
    cx: &Context,
    events: &Events,
    reference: &str,
    at: OffsetDateTime,
    into: Option<&NewFromData>,
    dry_run: bool,
) -> Result<Result<PitrRestored, PitrPlan>, Error> {
    let started = std::time::Instant::now();
    let set = cx.migrations()?;
    if let Some(new) = into {
        // The name is the tenant's when not given (found below): checked as some name.
        let mut req = new.request.clone();
        if req.name.is_empty() {
            req.name = "-".into();
        }
        crate::engine::tenant::validate(&req, &cx.settings)?;
    }
    let checked = check(
        cx,
        reference,
        at,
        "restore it",
        into.is_none(),
        into.map(|n| n.request.domain.as_str()),
    )
    .await?;
    if dry_run {
        let would = match into {
            Some(new) => format!("import it as the new tenant {}", new.request.domain),
            None => format!(
                "replace tenant {}'s schema {} with it",
                checked.tenant.domain,
                quote(&checked.tenant.schema_name)
            ),
        };
        return Ok(Err(checked.plan(at, &would)));
    }
    let (instance, export) = checked
        .recover_and_export(cx, events, at, |dir| {
            tenant_data::prepare_out(ArchiveOut::File {
                path: dir.join("tenant.archive"),
                force: true,
            })
        })
        .await?;
    let archive = instance.dir().join("tenant.archive");
    let archive_label = archive.display().to_string();
    let one = cx.one_tenant(events);
    let tenant = &checked.tenant;
    let done = match into {
        None => data::restore(
            &one,
            &checked.client,
            tenant,
            ArchiveInput::File(archive),
            &set,
            "restore --at",
        )
        .await
        .map(|r| (Some(r), None)),
        Some(new) => {
            let mut req = new.request.clone();
            if !new.type_given {
                req.tenant_type = tenant.tenant_type.clone();
            }
            if req.name.is_empty() {
                req.name = tenant.tenant_name.clone();
            }
            data::import(
                &one,
                &checked.client,
                &req,
                ArchiveInput::File(archive),
                &set,
            )
            .await
            .map(|i| (None, Some(Box::new(i))))
        }
    };
    let recovered_to = instance.recovered_to.map(rfc3339);
    instance.remove().await;
    // The archive was the scratch instance's, removed with it: messages name where its
    // data came from instead.
    let origin = format!(
        "stanza {} backup {} recovered to {}",
        checked.tools.stanza.stanza,
        checked.window.backup,
        rfc3339(at)
    );
    let (mut restored, imported) = done.map_err(|e| {
        Error::new(
            e.kind(),
            e.message()
                .replace(&archive_label, &format!("the data of {origin}")),
        )
    })?;
    if let Some(r) = restored.as_mut() {
        r.file = origin.clone();
    }
    let (tables, rows, write_block_ms) = match (&restored, &imported) {
        (Some(r), _) => (r.tables, r.rows, r.write_block_ms),
        _ => (export.tables, export.rows, 0),
    };
    let reached = recovered_to
        .clone()
        .unwrap_or_else(|| "the backup's end".into());
    let message = match (&restored, &imported) {
        (Some(r), _) => format!(
            "tenant {} restored as at {} (recovery reached {}): schema {} rebuilt at revision {}{} with {rows} rows in {tables} tables, writes blocked for {write_block_ms} ms",
            tenant.domain,
            rfc3339(at),
            reached,
            quote(&tenant.schema_name),
            crate::show::revision(r.to_revision),
            if r.to_revision != r.from_revision {
                format!(
                    " (it was at {}: `tenantctl upgrade --tenant {}` brings it back to head)",
                    crate::show::revision(r.from_revision),
                    tenant.domain
                )
            } else {
                String::new()
            }
        ),
        (_, Some(i)) => format!(
            "tenant {} as at {} (recovery reached {}) imported as the new tenant {}: {rows} rows in {tables} tables",
            tenant.domain,
            rfc3339(at),
            reached,
            i.tenant.domain
        ),
        _ => String::new(),
    };
    Ok(Ok(PitrRestored {
        tenant: tenant.domain.clone(),
        at: rfc3339(at),
        recovered_to,
        backup: checked.window.backup.clone(),
        tables,
        rows,
        duration_ms: started.elapsed().as_millis() as u64,
        write_block_ms,
        restored,
        imported,
        message,
    }))
}
