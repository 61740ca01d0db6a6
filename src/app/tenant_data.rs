//! The tenant data actions, for both faces: `export` (to a file written whole, or to a
//! stream), `import` and `clone` (a new tenant from data; `tenant create --from` is a
//! clone), and `restore` (a tenant's schema replaced by an archive's). Each checks what
//! it can before anything changes (names before any archive is read or connection made,
//! a file archive whole before the question is asked) and returns the document the faces
//! print; progress and lock waits go to the caller's [`Events`].
//!
//! An action that asks first comes in two calls: a `prepare` that checks and finds, whose
//! result the face shows in its question, then `run` (or `dry_run`).

use std::path::PathBuf;

use serde::Serialize;

use crate::app::context::Context;
use crate::data::archive::Manifest;
use crate::data::{self, ArchiveInput, ExportReport, ImportPlan, Imported, Restored};
use crate::engine::scheduler::Events;
use crate::engine::tenant::NewTenantRequest;
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::ident::quote;
use crate::pg::db::Client;
use crate::registry::{Registry, Tenant};

/// Where an export writes its archive.
pub enum ArchiveOut {
    /// A file, which appears only when complete; `force` replaces one that exists.
    File {
        /// The file.
        path: PathBuf,
        /// Whether an existing file may be replaced.
        force: bool,
    },
    /// A stream the face owns (standard output), labelled `-`.
    Stream(Box<dyn std::io::Write + Send>),
}

/// Writes the archive of the tenant `reference` names (its domain or id) from one
/// snapshot taken under its lock. A file is written under a temporary name and renamed
/// when complete; a failed export leaves no file.
pub async fn export(
    cx: &Context,
    events: &Events,
    reference: &str,
    to: ArchiveOut,
) -> Result<ExportReport, Error> {
    // The file is checked before any connection; its temporary file made once the
    // tenant is found.
    let to = prepare_out(to)?;
    let client = cx.connect().await?;
    let registry = Registry::open(&client, &cx.settings.registry_schema).await?;
    let tenant = registry.find(reference).await?;
    data::moving::refuse_unfinished(&registry, &tenant, "export it").await?;
    drop(registry);
    write_export(&cx.one_tenant(events), &tenant, to).await
}

/// Checks where an export writes before anything else (a file that exists without
/// `force` is refused).
pub fn prepare_out(to: ArchiveOut) -> Result<PreparedOut, Error> {
    Ok(PreparedOut(match to {
        ArchiveOut::File { path, force } => {
            let partial = data::files::prepare(&path, force)?;
            Prepared::File { path, partial }
        }
        ArchiveOut::Stream(w) => Prepared::Stream(w),
    }))
}

/// Where an export writes, checked by [`prepare_out`].
pub struct PreparedOut(Prepared);

/// Writes `tenant`'s archive to `to` from the server `one` reaches it on (the live one,
/// or a scratch instance recovered to a time).
pub async fn write_export(
    one: &crate::engine::tenant::Context<'_>,
    tenant: &Tenant,
    to: PreparedOut,
) -> Result<ExportReport, Error> {
    let to = to.0;
    let started = std::time::Instant::now();
    let (out, file): (Box<dyn std::io::Write + Send>, _) = match to {
        Prepared::Stream(w) => (w, None),
        Prepared::File { path, partial } => {
            let f = data::files::create_partial(&partial).map_err(|e| {
                Error::usage(format!("cannot write {}: {}", path.display(), e.message()))
            })?;
            (Box::new(f), Some((path, partial)))
        }
    };
    let label = file
        .as_ref()
        .map_or_else(|| "-".to_string(), |(path, _)| path.display().to_string());
    let exported = data::export(one, tenant, out, &label).await;
    let bytes = match (&file, &exported) {
        (Some((path, partial)), Ok(_)) => Some(data::files::finish(partial, path)?),
        (Some((_, partial)), Err(_)) => {
            let _ = std::fs::remove_file(partial);
            None
        }
        (None, _) => None,
    };
    let manifest = exported?;
    let rows = manifest.rows();
    Ok(ExportReport {
        tenant: tenant.domain.clone(),
        tenant_id: tenant.id,
        domain: tenant.domain.clone(),
        schema_name: tenant.schema_name.clone(),
        server: tenant.server.clone(),
        message: format!(
            "tenant {} exported to {} at revision {}: {} rows in {} tables",
            tenant.domain,
            if file.is_none() {
                "standard output"
            } else {
                &label
            },
            crate::show::revision(manifest.revision),
            rows,
            manifest.tables.len()
        ),
        file: label,
        revision: manifest.revision,
        tables: manifest.tables.len(),
        rows,
        bytes,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// An export's destination once checked.
enum Prepared {
    File { path: PathBuf, partial: PathBuf },
    Stream(Box<dyn std::io::Write + Send>),
}

/// A new tenant from data: the registration asked for, and whether its type was given
/// (without one, the new tenant takes its source's).
#[derive(Debug, Clone)]
pub struct NewFromData {
    /// The registration; its type is checked as given, or as `standard` when not.
    pub request: NewTenantRequest,
    /// Whether the type was given.
    pub type_given: bool,
}

impl NewFromData {
    /// The registration with the source's type when none was given.
    fn typed(&self, source_type: &str) -> NewTenantRequest {
        let mut req = self.request.clone();
        if !self.type_given {
            req.tenant_type = source_type.to_string();
        }
        req
    }
}

/// What an import or a clone made, or with a dry run would make.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Made {
    /// A dry run's plan: nothing was changed.
    Planned(Box<ImportPlan>),
    /// The new tenant, with its API key (shown once).
    Imported(Box<Imported>),
}

/// Imports the archive `input` as the new tenant `new` describes, or with `dry_run`
/// checks the archive whole and says what would happen. The names are checked before
/// the archive is read or any connection is made.
pub async fn import(
    cx: &Context,
    events: &Events,
    new: &NewFromData,
    input: ArchiveInput,
    dry_run: bool,
) -> Result<Made, Error> {
    let set = cx.migrations()?;
    crate::engine::tenant::validate(&new.request, &cx.settings)?;
    if dry_run {
        let label = input.label();
        let (manifest, checksum) = match input {
            ArchiveInput::File(p) => {
                let f = std::fs::File::open(&p)
                    .map_err(|e| Error::usage(format!("cannot read archive {label}: {e}")))?;
                data::stream::verify_whole(Box::new(f), &label).await?
            }
            _ => data::stream::verify_whole(Box::new(std::io::stdin()), &label).await?,
        };
        let req = new.typed(&manifest.source.tenant_type);
        let client = cx.connect().await?;
        let origin = data::Origin::Archive(checksum);
        let one = cx.one_tenant(events);
        let plan = data::plan_import(&one, &client, &req, &manifest, origin, &set, &label).await?;
        return Ok(Made::Planned(Box::new(plan)));
    }
    let client = cx.connect().await?;
    // Without a type, the archive's own (an empty type asks for it).
    let mut req = new.request.clone();
    if !new.type_given {
        req.tenant_type = String::new();
    }
    let imported = data::import(&cx.one_tenant(events), &client, &req, input, &set).await?;
    Ok(Made::Imported(Box::new(imported)))
}

/// What a clone made, and whether the upgrade it was to go on to failed (the tenant is
/// made and registered either way).
pub struct Cloned {
    /// The new tenant, or the dry run's plan.
    pub made: Made,
    /// Whether the upgrade after the copy failed.
    pub upgrade_failed: bool,
}

/// Clones the tenant `from` names into the new tenant `new` describes (the export
/// streamed straight into the import), then upgrades it to `upgrade` when given; or with
/// `dry_run` says what would be made.
pub async fn clone(
    cx: &Context,
    events: &Events,
    from: &str,
    new: &NewFromData,
    dry_run: bool,
) -> Result<Cloned, Error> {
    crate::engine::tenant::validate(&new.request, &cx.settings)?;
    let set = cx.migrations()?;
    let client = cx.connect().await?;
    let from = Registry::open(&client, &cx.settings.registry_schema)
        .await?
        .find(from)
        .await?;
    copy(
        cx,
        events,
        &client,
        &from,
        &new.typed(&from.tenant_type),
        &set,
        dry_run,
        None,
    )
    .await
}

/// Makes the tenant `req` describes from `from`'s data, then upgrades it to `upgrade`
/// when given; or with `dry_run` says what would be made. `tenant create --from` and
/// templates come here once they have found `from`.
#[allow(clippy::too_many_arguments)]
pub async fn copy(
    cx: &Context,
    events: &Events,
    client: &Client,
    from: &Tenant,
    req: &NewTenantRequest,
    set: &MigrationSet,
    dry_run: bool,
    upgrade: Option<i32>,
) -> Result<Cloned, Error> {
    {
        let registry = Registry::open(client, &cx.settings.registry_schema).await?;
        data::moving::refuse_unfinished(&registry, from, "copy its data").await?;
    }
    let one = cx.one_tenant(events);
    if dry_run {
        let manifest = data::peek(&one, from).await?;
        let label = format!("of tenant {}", from.domain);
        let origin = data::Origin::Clone(from.id);
        let plan = data::plan_import(&one, client, req, &manifest, origin, set, &label).await?;
        return Ok(Cloned {
            made: Made::Planned(Box::new(plan)),
            upgrade_failed: false,
        });
    }
    let mut made = data::clone(&one, client, from, req, set).await?;
    let Some(target) = upgrade else {
        return Ok(Cloned {
            made: Made::Imported(Box::new(made)),
            upgrade_failed: false,
        });
    };
    let registry = Registry::open(client, &cx.settings.registry_schema).await?;
    let change = crate::engine::plan::SchemaChange::Upgrade {
        target: crate::engine::target::Target::Version(target),
        provision: false,
    };
    let run_id = crate::engine::scheduler::new_run_id()?;
    let r = crate::engine::tenant::change_one(
        &one,
        client,
        &registry,
        &made.tenant,
        change,
        set,
        &run_id,
    )
    .await;
    if let Some(t) = r.tenant.as_deref().cloned() {
        let status = &mut made.migration_status;
        status.current_revision = t.current_revision;
        status.migrations_applied = t.migrations_applied;
        status.status = t.status;
        status.last_error = t.last_error.clone();
        status
            .pending_migrations
            .retain(|p| Some(p.version) > t.current_revision);
        made.tenant = t;
    }
    let upgrade_failed = match (&r.error, r.status) {
        (Some(e), crate::engine::scheduler::ResultStatus::Failed) => {
            made.message.push_str(&format!(
                "; upgrading it to revision {target} failed: {e}; fix it and run `tenantctl upgrade --tenant {}`",
                made.tenant.domain
            ));
            true
        }
        _ => {
            made.message.push_str(&format!(
                ", then upgraded to revision {}",
                crate::show::revision(made.tenant.current_revision)
            ));
            false
        }
    };
    made.migrations_applied |= !r.applied.is_empty();
    Ok(Cloned {
        made: Made::Imported(Box::new(made)),
        upgrade_failed,
    })
}

/// A restore checked and ready to ask about: the tenant, and the archive's manifest when
/// it is a file (read whole already).
pub struct RestoreStart {
    /// The migration files.
    pub set: MigrationSet,
    /// The action's registry connection.
    pub client: Client,
    /// The tenant whose schema the archive replaces.
    pub tenant: Tenant,
    /// The archive.
    pub input: ArchiveInput,
    /// What names it in messages.
    pub label: String,
    /// Its manifest, when it was a file checked whole.
    pub manifest: Option<Manifest>,
}

/// What a dry run of a restore found.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct RestorePlan {
    /// Always true.
    pub dry_run: bool,
    /// The tenant.
    pub tenant: Tenant,
    /// The archive.
    pub file: String,
    /// The tenant the archive's data comes from.
    pub source: crate::data::archive::Source,
    /// The tenant's revision now.
    pub from_revision: Option<i32>,
    /// The archive's revision.
    pub to_revision: Option<i32>,
    /// Tables that would be loaded.
    pub tables: usize,
    /// Rows that would be loaded.
    pub rows: u64,
    /// One sentence.
    pub message: String,
}

/// The newest backup of the tenant `reference` names in `dir` (as `backup` writes them:
/// `dir/DOMAIN/DOMAIN-STAMP.tenant`); refused (not found) when there is none.
pub async fn latest_backup(
    cx: &Context,
    reference: &str,
    dir: &std::path::Path,
) -> Result<std::path::PathBuf, Error> {
    let client = cx.connect().await?;
    let registry = Registry::open(&client, &cx.settings.registry_schema).await?;
    let tenant = registry.find(reference).await?;
    drop(registry);
    // The domain names a directory: one edited by hand into something `tenant create`
    // refuses must not lead outside DIR.
    crate::ident::validate_domain(&tenant.domain)?;
    let own = dir.join(&tenant.domain);
    let none = || {
        Error::new(
            crate::error::ErrorKind::NotFound,
            format!(
                "there is no backup of tenant {} in {}",
                tenant.domain,
                own.display()
            ),
        )
    };
    if !own.is_dir() {
        return Err(none());
    }
    let found = data::files::backups(&own, &tenant.domain)?;
    found.last().map(|(_, p)| p.clone()).ok_or_else(none)
}

/// Checks a restore of the tenant `reference` names from `input`: the archive whole when
/// it is a file (before any connection), its migrations, and no unfinished move. With
/// `own` (`--latest`: the file was found as the tenant's own backup), an archive taken
/// from another tenant is refused (exit 1), nothing changed.
pub async fn prepare_restore(
    cx: &Context,
    reference: &str,
    input: ArchiveInput,
    own: bool,
) -> Result<RestoreStart, Error> {
    let set = cx.migrations()?;
    let label = match &input {
        ArchiveInput::File(p) => p.display().to_string(),
        _ => "-".to_string(),
    };
    let manifest = match &input {
        ArchiveInput::File(p) => {
            let f = std::fs::File::open(p)
                .map_err(|e| Error::usage(format!("cannot read archive {label}: {e}")))?;
            Some(data::stream::verify(Box::new(f), &label).await?)
        }
        _ => None,
    };
    if let Some(m) = &manifest {
        data::check_migrations(m, &set, &label)?;
    }
    let client = cx.connect().await?;
    let registry = Registry::open(&client, &cx.settings.registry_schema).await?;
    let tenant = registry.find(reference).await?;
    if let Some(m) = manifest.as_ref().filter(|_| own) {
        if m.source.domain != tenant.domain {
            return Err(Error::refused(format!(
                "{label} is in tenant {}'s backups but holds the data of tenant {} (schema {}); nothing was changed. \
                 To restore another tenant's data on purpose, name the file: tenantctl tenant restore {} FILE",
                tenant.domain,
                crate::ident::shown(&m.source.domain),
                crate::ident::shown(&m.source.schema_name),
                tenant.domain
            )));
        }
    }
    data::moving::refuse_unfinished(&registry, &tenant, "restore it").await?;
    drop(registry);
    Ok(RestoreStart {
        set,
        client,
        tenant,
        input,
        label,
        manifest,
    })
}

impl RestoreStart {
    /// What the restore would do, refusing what it would refuse (another schema's
    /// objects depending on the tenant's, a damaged archive) and trying the build;
    /// nothing is changed.
    pub async fn dry_run(self, cx: &Context, events: &Events) -> Result<RestorePlan, Error> {
        let tenant = &self.tenant;
        let mut on_server = cx.servers.target(&tenant.server)?.connect().await?;
        let boundary =
            crate::engine::dependents::inspect(&mut on_server, &tenant.schema_name).await?;
        if !boundary.outside.is_empty() {
            return Err(Error::refused(crate::engine::plan::data_blocked(
                &tenant.schema_name,
                &boundary.outside,
                "restore",
            )));
        }
        let m = match self.manifest {
            Some(m) => m,
            None => data::stream::verify(Box::new(std::io::stdin()), "on standard input").await?,
        };
        data::check_migrations(&m, &self.set, &self.label)?;
        let untried = data::rehearse_restore(&cx.one_tenant(events), tenant, &m, &self.set).await?;
        let message = format!(
            "would replace tenant {}'s schema {} (revision {}) with {}'s data at revision {}: {} rows in {} tables{}; nothing was changed",
            tenant.domain,
            quote(&tenant.schema_name),
            crate::show::revision(tenant.current_revision),
            m.source.domain,
            crate::show::revision(m.revision),
            m.rows(),
            m.tables.len(),
            untried.map(|u| format!(" ({u})")).unwrap_or_default()
        );
        Ok(RestorePlan {
            dry_run: true,
            from_revision: tenant.current_revision,
            to_revision: m.revision,
            tables: m.tables.len(),
            rows: m.rows(),
            source: m.source,
            file: self.label,
            tenant: self.tenant,
            message,
        })
    }

    /// Replaces the tenant's schema and data with the archive's.
    pub async fn run(self, cx: &Context, events: &Events) -> Result<Restored, Error> {
        data::restore(
            &cx.one_tenant(events),
            &self.client,
            &self.tenant,
            self.input,
            &self.set,
            "restore",
        )
        .await
    }
}
