//! A tenant's data as a unit (the book's "Tenant data"): export to an archive, import one as
//! a new tenant, clone a tenant, restore one from an archive. An archive carries only
//! the revision and the rows; the schema is rebuilt by running the same migrations, so
//! it can land under any name and on any server.
//!
//! Every workflow returns what happened as data; the command line prints it.

pub mod archive;
pub mod backup;
pub mod catalog;
pub mod export;
pub mod fence;
pub mod files;
pub mod load;
pub mod moving;
pub mod pitr;
pub mod stream;

use std::io::Read;
use std::path::PathBuf;

use crate::pg::db::Client;
use serde::Serialize;
use time::OffsetDateTime;

use crate::data::archive::Manifest;
use crate::engine::plan::SchemaChange;
use crate::engine::runner::{ExecError, Session};
use crate::engine::scheduler;
use crate::engine::tenant::{self, Context, NewTenantRequest};
use crate::error::{Error, ErrorKind};
use crate::files::migrations::MigrationSet;
use crate::ident::quote;
use crate::registry::inspect::{self, TenantStatus};
use crate::registry::{self, Observed, Outcome, Registry, Tenant};
use stream::{PipeReader, Source};

/// Where an archive is read from.
pub enum ArchiveInput {
    /// A file: a regular one is read twice, once to check it whole before anything
    /// changes, then to load.
    File(PathBuf),
    /// Standard input, read once: damage found while loading rolls everything back.
    Stdin,
    /// Another tenant's export, in this process, and that tenant's registry id.
    Pipe(PipeReader, i64),
}

impl ArchiveInput {
    /// What names the archive in messages.
    pub fn label(&self) -> String {
        match self {
            ArchiveInput::File(p) => p.display().to_string(),
            ArchiveInput::Stdin => "on standard input".to_string(),
            ArchiveInput::Pipe(..) => "streamed from the source tenant".to_string(),
        }
    }

    fn open_file(path: &PathBuf) -> Result<Box<dyn Read + Send>, Error> {
        let f = std::fs::File::open(path)
            .map_err(|e| Error::usage(format!("cannot read archive {}: {e}", path.display())))?;
        if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(Error::usage(format!(
                "cannot read archive {}: it is a directory",
                path.display()
            )));
        }
        Ok(Box::new(f))
    }

    /// Opens the archive for loading; a regular file is checked whole first (a FIFO or
    /// a device is read once, as standard input is).
    pub async fn open(self) -> Result<Source, Error> {
        let label = self.label();
        match self {
            ArchiveInput::File(path) => {
                let first = Self::open_file(&path)?;
                let regular = std::fs::metadata(&path).is_ok_and(|m| m.is_file());
                if !regular {
                    return Source::open(first, &label).await;
                }
                let (_, checksum) = stream::verify_whole(first, &label).await?;
                Ok(Source::open(Self::open_file(&path)?, &label)
                    .await?
                    .checked_whole(checksum))
            }
            ArchiveInput::Stdin => Source::open(Box::new(std::io::stdin()), &label).await,
            ArchiveInput::Pipe(r, _) => Source::open(Box::new(r), &label).await,
        }
    }
}

/// Refuses (exit 3) an archive whose migrations the local directory lacks or has changed,
/// and (exit 2) one whose manifest contradicts itself.
pub fn check_migrations(manifest: &Manifest, set: &MigrationSet, label: &str) -> Result<(), Error> {
    if manifest.revision != manifest.migrations.iter().map(|m| m.version).max() {
        return Err(Error::usage(format!(
            "archive {label} is corrupt: its manifest's revision {} is not its highest applied migration",
            crate::show::revision(manifest.revision)
        )));
    }
    let mut problems = Vec::new();
    for m in &manifest.migrations {
        match set.get(m.version) {
            None => problems.push(format!(
                "V{}__{} is not in {}",
                m.version,
                m.name,
                set.dir.display()
            )),
            Some(f) if f.name != m.name || f.checksum.to_string() != m.checksum => {
                problems.push(format!(
                    "V{}__{} has changed since the archive was taken (its checksum differs)",
                    m.version, m.name
                ))
            }
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::setup(format!(
        "archive {label} was taken at revision {} with migrations this directory does not have: {}; nothing was changed",
        crate::show::revision(manifest.revision),
        problems.join("; ")
    )))
}

/// Refuses (exit 3) a tenant whose applied migrations, as its history records them, the
/// local directory lacks or has changed; returns its revision.
pub fn check_history(
    history: &[crate::files::migrations::AppliedRow],
    set: &MigrationSet,
    label: &str,
) -> Result<Option<i32>, Error> {
    let revision = history.iter().map(|r| r.version).max();
    let recorded = Manifest {
        migrations: history
            .iter()
            .map(|r| crate::data::archive::ArchivedMigration {
                version: r.version,
                name: r.name.clone(),
                checksum: r.checksum.to_string(),
            })
            .collect(),
        revision,
        ..crate::data::archive::empty_manifest()
    };
    check_migrations(&recorded, set, label)?;
    Ok(revision)
}

/// Checks that a new tenant's domain and `schema` are free, and picks its server (the
/// one asked for, or placed by weight).
async fn free_and_placed(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    req: &NewTenantRequest,
    schema: &str,
) -> Result<String, Error> {
    if registry.domain_taken(&req.domain).await? {
        return Err(Error::conflict(registry::domain_exists(&req.domain)));
    }
    if let Some(owner) = registry.schema_owner(schema).await? {
        return Err(Error::usage(format!(
            "schema {} already belongs to tenant {owner}; pass --schema to choose another. Nothing was registered.",
            quote(schema)
        )));
    }
    Ok(match &req.server {
        Some(name) => {
            cx.servers.get(name)?;
            name.clone()
        }
        None => cx
            .servers
            .place(&registry.count_by_server().await?)?
            .to_string(),
    })
}

/// What an export wrote.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ExportReport {
    /// The tenant's domain.
    pub tenant: String,
    /// The tenant's registry id.
    pub tenant_id: i64,
    /// The tenant's domain (the same as `tenant`).
    pub domain: String,
    /// Its schema.
    pub schema_name: String,
    /// Its server.
    pub server: String,
    /// The archive (`-` for standard output).
    pub file: String,
    /// Its revision.
    pub revision: Option<i32>,
    /// Tables carried.
    pub tables: usize,
    /// Rows carried.
    pub rows: u64,
    /// The archive's size, when written to a file.
    pub bytes: Option<u64>,
    /// How long it took.
    pub duration_ms: u64,
    /// One sentence.
    pub message: String,
}

/// Writes `tenant`'s archive to `out` from one snapshot taken under its lock.
pub async fn export(
    cx: &Context<'_>,
    tenant: &Tenant,
    out: Box<dyn std::io::Write + Send>,
    label: &str,
) -> Result<Manifest, Error> {
    let (pool, session) = tenant::locked(cx, tenant).await?;
    let result = export_in(&session, tenant, cx.settings, out, label).await;
    session.close(&pool).await;
    result
}

/// [`export`] on a session that already holds the tenant's lock.
pub async fn export_in(
    session: &Session<'_>,
    tenant: &Tenant,
    settings: &crate::config::Settings,
    out: Box<dyn std::io::Write + Send>,
    label: &str,
) -> Result<Manifest, Error> {
    let history = readable_history(session, tenant).await?;
    let client = session.client();
    let catalog = export::begin(
        client,
        &tenant.schema_name,
        &settings.history_table,
        export::Snapshot::Read,
    )
    .await?;
    let written = export::write(client, tenant, catalog, &history, out, label).await;
    let _ = client.batch_execute("COMMIT").await;
    Ok(written?.manifest)
}

/// The tenant's history as its locked session reads it; an error when the schema is
/// missing or its history unreadable.
pub(crate) async fn readable_history(
    session: &Session<'_>,
    tenant: &Tenant,
) -> Result<Vec<crate::files::migrations::AppliedRow>, Error> {
    let state = session.observe().await?;
    if !state.schema_exists {
        return Err(Error::failed(format!(
            "tenant {}'s schema {} does not exist; there is nothing to export",
            tenant.domain,
            quote(&tenant.schema_name)
        )));
    }
    state.history.map_err(|e| {
        Error::failed(format!(
            "tenant {}'s migration history cannot be read: {e}",
            tenant.domain
        ))
    })
}

/// What an import (or a clone) did: `tenant create`'s fields and the data's.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Imported {
    /// The registry row.
    pub tenant: Tenant,
    /// Whether this run made the schema (built by the migrations); false when it finished
    /// an interrupted import, whose run made it.
    pub schema_created: bool,
    /// Always false: an import never takes over an existing schema (one holding objects is
    /// refused). The field is `tenant create`'s, whose document an import's extends.
    pub schema_adopted: bool,
    /// Whether any migration was applied.
    pub migrations_applied: bool,
    /// The tenant's migration status.
    pub migration_status: TenantStatus,
    /// The new API key, shown once.
    pub api_key: String,
    /// The tenant the archive was taken from.
    pub source: crate::data::archive::Source,
    /// Tables loaded.
    pub tables: usize,
    /// Rows loaded.
    pub rows: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// Whether this run finished an import that an earlier run of the same command had
    /// loaded and registered before it was interrupted (the rows are the ones that run
    /// loaded; the API key is new).
    pub resumed: bool,
    /// One sentence.
    pub message: String,
}

/// The comment an import puts on the schema it builds until the tenant is registered and
/// active: an unregistered schema carrying it is what a killed import left, and the next
/// import into that schema removes it; a registered tenant's schema carrying it (with
/// what the rows were loaded from) is an import killed after registering, which the
/// same command finishes.
pub const BUILDING: &str = "tenantctl: import in progress; not a registered tenant yet";

/// What follows [`BUILDING`] in the mark once the rows are loaded.
const LOADED: &str = "; loaded ";

/// Where an import's rows come from, as the mark on its schema records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Origin {
    /// An archive, by its checksum (the SHA-256 of its records, in hex).
    Archive(String),
    /// A clone of the tenant with this registry id.
    Clone(i64),
}

/// What the mark on a loaded schema records (as JSON after [`BUILDING`] and [`LOADED`]):
/// enough for a rerun to prove it is the same import, and to report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct Mark {
    /// Where the rows came from.
    origin: Origin,
    /// Tables loaded.
    tables: usize,
    /// Rows loaded.
    rows: u64,
}

impl Mark {
    /// The schema comment that records it.
    fn comment(&self) -> String {
        let json = serde_json::to_string(self).expect("a mark is always serialisable");
        format!("{BUILDING}{LOADED}{json}")
    }

    /// The mark a schema comment records, when it is one.
    fn parse(comment: &str) -> Option<Mark> {
        let json = comment.strip_prefix(BUILDING)?.strip_prefix(LOADED)?;
        serde_json::from_str(json).ok()
    }
}

/// The comment on `schema`, if it has one.
async fn schema_comment(client: &Client, schema: &str) -> Result<Option<String>, Error> {
    Ok(client
        .query_opt(
            "SELECT pg_catalog.obj_description(oid, 'pg_namespace') FROM pg_catalog.pg_namespace WHERE nspname = $1",
            &[&schema],
        )
        .await
        .map_err(crate::pg::db::query_error("reading the schema's comment"))?
        .and_then(|r| r.get(0)))
}

/// The mark of an import killed after it registered `tenant`: the one its schema carries,
/// if any.
async fn interrupted(cx: &Context<'_>, tenant: &Tenant) -> Result<Option<Mark>, Error> {
    let on_server = cx.servers.target(&tenant.server)?.connect().await?;
    Ok(schema_comment(&on_server, &tenant.schema_name)
        .await?
        .as_deref()
        .and_then(Mark::parse))
}

/// The mark of the interrupted import a rerun may finish: `tenant` is registered (under
/// the request's domain) by an earlier run of the same command that was killed before
/// it marked the tenant active, when its schema carries that run's mark (`marked`), the
/// rows came from the same `origin` (the same archive, or a clone of the same tenant) and
/// the request names the tenant as it was registered. Anything else is a taken domain
/// (exit 1), saying what registered the tenant when an import did.
fn resumable(
    tenant: &Tenant,
    marked: Option<Mark>,
    origin: Option<&Origin>,
    req: &NewTenantRequest,
    schema: &str,
) -> Result<Mark, Error> {
    let taken = registry::domain_exists(&req.domain);
    let Some(mark) = marked else {
        return Err(Error::conflict(taken));
    };
    let same_request = tenant.tenant_name == req.name
        && tenant.email == req.email
        && tenant.tenant_type == req.tenant_type
        && tenant.schema_name == schema
        && req.server.as_ref().is_none_or(|s| *s == tenant.server);
    if origin != Some(&mark.origin) || !same_request {
        let by = match (&mark.origin, origin) {
            (m, Some(o)) if m == o => {
                "the same import with other names (--name, --email, --type, --schema or --server)"
                    .to_string()
            }
            (Origin::Archive(_), Some(Origin::Archive(_))) => {
                "an import of another archive".to_string()
            }
            (Origin::Archive(_), _) => "an import of an archive".to_string(),
            (Origin::Clone(id), _) => format!("a clone of the tenant with id {id}"),
        };
        return Err(Error::conflict(format!(
            "{taken}; it was registered by {by}, which was interrupted before it finished: run that command again to finish it, or `tenantctl tenant drop {}` to start over. Nothing was changed.",
            req.domain
        )));
    }
    Ok(mark)
}

/// Finishes the import of `tenant`, registered (under the request's domain) by an earlier
/// run of the same command that was killed before it marked the tenant active (see
/// [`resumable`]). The rows that run loaded (and whatever the application wrote since)
/// are kept; the tenant is marked active with its ledger entry, given a new API key (the
/// first one was never shown), and the mark is cleared. Anything else is refused as a
/// taken domain, changing nothing.
#[allow(clippy::too_many_arguments)]
async fn resume(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    marked: Option<Mark>,
    origin: Option<Origin>,
    req: &NewTenantRequest,
    schema: &str,
    from: &crate::data::archive::Source,
    set: &MigrationSet,
    started: std::time::Instant,
) -> Result<Imported, Error> {
    let mark = resumable(tenant, marked, origin.as_ref(), req, schema)?;
    let taken = registry::domain_exists(&req.domain);
    let (pool, session) = tenant::locked(cx, tenant).await?;
    let finished = async {
        // Under the tenant's lock: another run may have finished it meanwhile.
        let now = schema_comment(session.client(), &tenant.schema_name).await?;
        if now.as_deref().and_then(Mark::parse).as_ref() != Some(&mark) {
            return Err(Error::conflict(taken.clone()));
        }
        let key = crate::apikey::ApiKey::generate()?;
        registry
            .rotate_key(tenant.id, &key.hash(), &key.prefix())
            .await?;
        let recorded = record_active(cx, registry, tenant, &tenant.server, "import").await?;
        session
            .client()
            .batch_execute(&format!(
                "COMMENT ON SCHEMA {} IS NULL",
                quote(&tenant.schema_name)
            ))
            .await
            .map_err(crate::pg::db::query_error("clearing the import's mark"))?;
        let state = session.observe().await?;
        Ok::<_, Error>((recorded, key, state))
    }
    .await;
    session.close(&pool).await;
    let (tenant, key, state) = finished?;
    let status = inspect::tenant_status(&tenant, &state, set);
    let message = format!(
        "finished the interrupted import of tenant {}: registered from {}'s {}, schema {} at revision {} with the {} rows in {} tables that run loaded; it is active now, with a new API key",
        tenant.domain,
        from.domain,
        match mark.origin {
            Origin::Archive(_) => "archive",
            Origin::Clone(_) => "data",
        },
        quote(&tenant.schema_name),
        crate::show::revision(tenant.current_revision),
        mark.rows,
        mark.tables
    );
    Ok(Imported {
        tenant,
        schema_created: false,
        schema_adopted: false,
        migrations_applied: false,
        migration_status: status,
        api_key: key.reveal().to_string(),
        source: from.clone(),
        tables: mark.tables,
        rows: mark.rows,
        duration_ms: started.elapsed().as_millis() as u64,
        resumed: true,
        message,
    })
}

/// Registers a new tenant from an archive. The archive and its migrations are checked,
/// then the schema is built by the migrations to the archive's revision and the rows are
/// loaded, under the schema's lock (held until the import has finished), before the
/// tenant is registered (new API key) and marked active: a tenant is never registered
/// without its data. A refusal registers and creates nothing; a failure before the
/// registration removes the schema it made. When the domain is registered already, the
/// import finishes the same import killed after registering it (the rows that run
/// loaded are kept; the tenant gets a new API key), or is refused as a taken domain.
pub async fn import(
    cx: &Context<'_>,
    client: &Client,
    req: &NewTenantRequest,
    input: ArchiveInput,
    set: &MigrationSet,
) -> Result<Imported, Error> {
    let started = std::time::Instant::now();
    let typed = |t: &str| NewTenantRequest {
        tenant_type: if req.tenant_type.is_empty() {
            t.to_string()
        } else {
            req.tenant_type.clone()
        },
        then: None,
        adopt: false,
        ..req.clone()
    };
    tenant::validate(&typed("standard"), cx.settings)?;
    let clone_of = match &input {
        ArchiveInput::Pipe(_, id) => Some(*id),
        _ => None,
    };
    let mut source = input.open().await?;
    if let Err(e) = check_migrations(&source.manifest, set, source.label()) {
        return Err(source.blame(e).await);
    }
    let mut req = typed(&source.manifest.source.tenant_type);
    let schema = tenant::validate(&req, cx.settings)?;
    let registry = Registry::open(client, &cx.settings.registry_schema).await?;
    if registry.domain_taken(&req.domain).await? {
        let tenant = registry.find(&req.domain).await?;
        let marked = interrupted(cx, &tenant).await?;
        let origin = match (&marked, clone_of) {
            (_, Some(id)) => Some(Origin::Clone(id)),
            // Only then is standard input read to its end, to learn its checksum.
            (
                Some(Mark {
                    origin: Origin::Archive(_),
                    ..
                }),
                None,
            ) => Some(Origin::Archive(source.read_through().await?)),
            _ => None,
        };
        let from = source.manifest.source.clone();
        return resume(
            cx, &registry, &tenant, marked, origin, &req, &schema, &from, set, started,
        )
        .await;
    }
    let server = free_and_placed(cx, &registry, &req, &schema).await?;
    let (pool, mut session) = tenant::locked_schema(cx, &server, &schema, &req.domain).await?;
    // The schema's lock is held until the import has finished: a rerun of the same
    // command started meanwhile waits for it, then finds the mark gone, rather than
    // finishing this import too (and replacing the API key this run prints).
    let imported = async {
        let made = prepare_schema(session.client(), &schema, &req.domain).await?;
        let filled = async {
            // A manifest damaged on standard input can name tables the migrations do
            // not build: damage (read to the end to tell) is what to report then.
            let applied = match build(&mut session, &schema, &source, set).await {
                Ok(applied) => applied,
                Err(e) => return Err(source.blame(e).await),
            };
            crate::failpoint!("import.schema-built");
            crate::pg::db::notice_dead_client(session.client()).await;
            let loaded = load::load(session.client(), &schema, &mut source).await?;
            // What was loaded, and from where, so that a rerun can finish this import
            // once it is registered.
            let origin = match clone_of {
                Some(id) => Origin::Clone(id),
                None => Origin::Archive(source.checksum().ok_or_else(|| {
                    Error::failed(format!(
                        "archive {}: its checksum was not read",
                        source.label()
                    ))
                })?),
            };
            let mark = Mark {
                origin,
                tables: loaded.tables,
                rows: loaded.rows,
            };
            session
                .client()
                .batch_execute(&format!(
                    "COMMENT ON SCHEMA {} IS {}",
                    quote(&schema),
                    crate::engine::plan::literal(&mark.comment())
                ))
                .await
                .map_err(crate::pg::db::query_error("marking the loaded schema"))?;
            crate::failpoint!("import.loaded");
            Ok::<_, Error>((applied, loaded))
        }
        .await;
        let drop_made = async || {
            session
                .client()
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", quote(&schema)))
                .await
                .map_err(crate::pg::db::query_error("dropping the schema"))
        };
        let (applied, loaded) = match filled {
            Ok(f) => f,
            Err(e) => {
                if made {
                    let _ = drop_made().await;
                }
                return Err(e);
            }
        };
        // The data is complete: register the tenant and take its schema as it is.
        req.server = Some(server.clone());
        req.adopt = true;
        let created = match tenant::create(cx, client, &req, set).await {
            Ok(c) => c,
            Err(e) => {
                let removed = drop_made().await;
                return Err(Error::new(
                    e.kind(),
                    format!(
                        "{e}; {}",
                        match removed {
                            Ok(()) => format!("schema {} that was built for it was removed again", quote(&schema)),
                            Err(u) => format!("removing schema {} that was built for it failed too ({u}); drop it by hand", quote(&schema)),
                        }
                    ),
                ));
            }
        };
        crate::failpoint!("import.registered");
        let tenant = record_active(cx, &registry, &created.tenant, &server, "import").await?;
        session
            .client()
            .batch_execute(&format!("COMMENT ON SCHEMA {} IS NULL", quote(&schema)))
            .await
            .map_err(crate::pg::db::query_error("clearing the import's mark"))?;
        let state = session.observe().await?;
        Ok((applied, loaded, created, tenant, state))
    }
    .await;
    session.close(&pool).await;
    let (applied, loaded, created, tenant, state) = imported?;
    let status = inspect::tenant_status(&tenant, &state, set);
    let m = &source.manifest;
    let message = format!(
        "tenant {} registered from {}'s {}, schema {} built to revision {} and {} rows loaded into {} tables",
        tenant.domain,
        m.source.domain,
        if clone_of.is_some() { "data" } else { "archive" },
        quote(&tenant.schema_name),
        crate::show::revision(tenant.current_revision),
        loaded.rows,
        loaded.tables
    );
    Ok(Imported {
        tenant,
        schema_created: true,
        schema_adopted: false,
        migrations_applied: applied,
        migration_status: status,
        api_key: created.api_key,
        source: m.source.clone(),
        tables: loaded.tables,
        rows: loaded.rows,
        duration_ms: started.elapsed().as_millis() as u64,
        resumed: false,
        message,
    })
}

/// Makes `schema` ready for an import on the session holding its lock: created with the
/// [`BUILDING`] mark, or, when it is what a killed import left (unregistered, marked),
/// dropped and created again. An existing schema that holds objects and is not such a
/// leftover is refused. Returns whether this import made the schema.
async fn prepare_schema(client: &Client, schema: &str, domain: &str) -> Result<bool, Error> {
    let contents = crate::engine::dependents::contents(&**client, schema).await?;
    let mark: Option<String> = if contents.exists {
        schema_comment(client, schema).await?
    } else {
        None
    };
    let leftover = mark.as_deref().is_some_and(|m| m.starts_with(BUILDING));
    if contents.non_empty() && !leftover {
        return Err(Error::usage(format!(
            "schema {} already exists and holds {} objects; pass --schema to choose another. Nothing was registered.",
            quote(schema),
            contents.objects
        )));
    }
    let q = quote(schema);
    let mut sql = String::from("BEGIN; ");
    if leftover {
        sql.push_str(&format!("DROP SCHEMA {q} CASCADE; "));
    }
    if !contents.exists || leftover {
        sql.push_str(&format!("CREATE SCHEMA {q}; "));
    }
    sql.push_str(&format!(
        "COMMENT ON SCHEMA {q} IS {}; COMMIT",
        crate::engine::plan::literal(BUILDING)
    ));
    client
        .batch_execute(&sql)
        .await
        .map_err(crate::pg::db::query_error(&format!(
            "creating schema {q} for tenant {domain}"
        )))?;
    Ok(!contents.exists || leftover)
}

/// Writes the ledger entry of an `action` on `tenant` that failed with `e` once it had
/// begun at `started_at`, in a run of its own; the registry row is left as it is.
pub(crate) async fn log_failure(
    registry: &Registry<'_>,
    tenant: &Tenant,
    action: &str,
    started_at: OffsetDateTime,
    e: &Error,
) -> Result<(), Error> {
    let run = scheduler::OwnRun::new()?;
    let event = run.event(action, tenant.current_revision, started_at);
    registry.log_failure(tenant, &event, e).await
}

/// Puts the version index's trigger on `schema`'s history table on `client`'s server
/// (`server`) and recomputes the schema's index row from the table, after the schema
/// was filled or replaced. Best effort: a tenant the index cannot vouch for is read in
/// full, and `check` says so.
pub(crate) async fn index_tenant(cx: &Context<'_>, client: &Client, server: &str, schema: &str) {
    let index = crate::registry::versions::schema_for(server, &cx.settings.registry_schema);
    let attach = crate::registry::versions::attach_sql(index, schema, &cx.settings.history_table);
    // Twice, in two transactions: a row written in the transaction that created the
    // trigger is not trusted until it is written again.
    for _ in 0..2 {
        if client.batch_execute(&attach).await.is_err() {
            return;
        }
    }
}

/// Records a tenant whose schema was just filled as observed and active, with a ledger
/// entry.
async fn record_active(
    cx: &Context<'_>,
    registry: &Registry<'_>,
    tenant: &Tenant,
    server: &str,
    action: &str,
) -> Result<Tenant, Error> {
    let on_server = cx.servers.target(server)?.connect().await?;
    index_tenant(cx, &on_server, server, &tenant.schema_name).await;
    let mut states = crate::registry::state::observe(
        &on_server,
        std::slice::from_ref(&tenant.schema_name),
        &cx.settings.history_table,
    )
    .await?;
    let state = states.remove(&tenant.schema_name).ok_or_else(|| {
        Error::failed(format!(
            "schema {} was not observed",
            quote(&tenant.schema_name)
        ))
    })?;
    let run = scheduler::OwnRun::new()?;
    let event = run.event(action, None, OffsetDateTime::now_utc());
    registry::record_with(
        registry.client(),
        registry.tables(),
        tenant.id,
        &Observed::of(&state),
        Outcome::Succeeded,
        Some(&event),
    )
    .await
}

/// Builds the session's (empty or missing) schema by the migrations up to the archive's
/// revision and checks it holds the archive's tables; whether any migration ran.
pub(crate) async fn build(
    session: &mut Session<'_>,
    schema: &str,
    source: &Source,
    set: &MigrationSet,
) -> Result<bool, Error> {
    let applied = build_to(session, schema, source.manifest.revision, set).await?;
    load::check_built(
        session.client(),
        schema,
        &session.settings().history_table,
        &source.manifest,
        load::RowsFrom::Archive,
    )
    .await?;
    Ok(applied)
}

/// What builds a schema by the migrations up to `revision`.
fn build_change(revision: Option<i32>) -> SchemaChange {
    match revision {
        Some(target) => SchemaChange::Upgrade {
            target: crate::engine::target::Target::Version(target),
            provision: true,
        },
        None => SchemaChange::Provision,
    }
}

/// Builds the session's (empty or missing) schema by the migrations up to `revision`;
/// whether any migration ran.
pub(crate) async fn build_to(
    session: &mut Session<'_>,
    schema: &str,
    revision: Option<i32>,
    set: &MigrationSet,
) -> Result<bool, Error> {
    let state = session.observe().await?;
    let plan = build_change(revision)
        .plan(schema, &state, set, session.settings())
        .map_err(|r| Error::failed(r.message(schema, schema)))?;
    let executed = session.execute(&plan).await.map_err(|e| match e {
        ExecError::Refused(m) | ExecError::HeldBack { message: m, .. } => Error::refused(m),
        ExecError::Failed { message, .. } => Error::failed(format!(
            "building schema {} by the migrations: {message}",
            quote(schema)
        )),
        ExecError::Interrupted(_) => Error::new(
            ErrorKind::Interrupted,
            format!("interrupted while building schema {}", quote(schema)),
        ),
    })?;
    Ok(!executed.versions.is_empty())
}

/// A dry run's try of [`build`]: builds the session's (empty, missing, or left by an
/// interrupted import: `replace`) schema by the migrations up to `manifest`'s revision
/// and checks it holds the archive's tables, in one transaction that is rolled back, so
/// that the dry run finds what the run would and changes nothing. `Some` says why it was
/// not tried (a migration that runs outside a transaction).
pub(crate) async fn rehearse_build(
    session: &mut Session<'_>,
    schema: &str,
    manifest: &Manifest,
    set: &MigrationSet,
    replace: bool,
) -> Result<Option<String>, Error> {
    let state = session.observe().await?;
    let state = if replace {
        // The import drops the leftover first: planned from an empty start.
        crate::registry::state::SchemaState {
            schema_exists: false,
            history_exists: false,
            history: Ok(Vec::new()),
            untracked: Default::default(),
            unreachable: false,
            index: Default::default(),
        }
    } else {
        state
    };
    let drop_first = replace.then(|| format!("DROP SCHEMA IF EXISTS {} CASCADE", quote(schema)));
    if let Some(untried) = try_build(
        session,
        &state,
        schema,
        manifest.revision,
        set,
        drop_first.as_deref(),
    )
    .await?
    {
        return Ok(Some(untried));
    }
    let checked = load::check_built(
        session.client(),
        schema,
        &session.settings().history_table,
        manifest,
        load::RowsFrom::Archive,
    )
    .await;
    session.end_rehearsal().await;
    checked?;
    Ok(None)
}

/// Builds the session's schema (as `state` finds it) by the migrations up to `revision`
/// in a transaction left open for the caller to look at, then roll back with
/// [`Session::end_rehearsal`] (`Ok(None)`); or tries nothing and says why (`Ok(Some)`: a
/// migration that runs outside a transaction). A failure is the build's, rolled back.
pub(crate) async fn try_build(
    session: &mut Session<'_>,
    state: &crate::registry::state::SchemaState,
    schema: &str,
    revision: Option<i32>,
    set: &MigrationSet,
    first: Option<&str>,
) -> Result<Option<String>, Error> {
    let plan = build_change(revision)
        .plan(schema, state, set, session.settings())
        .map_err(|r| Error::failed(r.message(schema, schema)))?;
    if let Some(file) = crate::engine::runner::outside_transaction(&plan) {
        return Ok(Some(format!(
            "the migrations were not tried: {file} runs outside a transaction"
        )));
    }
    session.rehearse(&plan, first).await.map_err(|e| {
        Error::new(
            e.kind(),
            format!(
                "building schema {} by the migrations: {}",
                quote(schema),
                e.message()
            ),
        )
    })?;
    Ok(None)
}

/// A restore's dry run: the new copy built beside `tenant`'s schema by the migrations to
/// `manifest`'s revision and checked against the archive's tables, in a transaction that
/// is rolled back ([`rehearse_build`]); `Some` says why it was not tried.
pub async fn rehearse_restore(
    cx: &Context<'_>,
    tenant: &Tenant,
    manifest: &Manifest,
    set: &MigrationSet,
) -> Result<Option<String>, Error> {
    let fresh = beside(&tenant.schema_name, "$restoring");
    let (pool, mut side) =
        tenant::locked_schema(cx, &tenant.server, &fresh, &tenant.domain).await?;
    let tried = rehearse_build(&mut side, &fresh, manifest, set, true).await;
    side.close(&pool).await;
    tried
}

/// Copies `from` into a new tenant described by `req`: its export streamed into an
/// import, no file in between. A clone of `from` killed after registering the new tenant
/// is finished, as [`import`] finishes one, without exporting again.
pub async fn clone(
    cx: &Context<'_>,
    client: &Client,
    from: &Tenant,
    req: &NewTenantRequest,
    set: &MigrationSet,
) -> Result<Imported, Error> {
    let mut checked = req.clone();
    if checked.tenant_type.is_empty() {
        checked.tenant_type = from.tenant_type.clone();
    }
    let schema = tenant::validate(&checked, cx.settings)?;
    // A clone of `from` killed after registering the new tenant is finished, not
    // exported again.
    let registry = Registry::open(client, &cx.settings.registry_schema).await?;
    if registry.domain_taken(&req.domain).await? {
        let tenant = registry.find(&req.domain).await?;
        let marked = interrupted(cx, &tenant).await?;
        let source = crate::data::archive::Source {
            domain: from.domain.clone(),
            tenant_name: from.tenant_name.clone(),
            tenant_type: from.tenant_type.clone(),
            schema_name: from.schema_name.clone(),
            server: from.server.clone(),
        };
        return resume(
            cx,
            &registry,
            &tenant,
            marked,
            Some(Origin::Clone(from.id)),
            &checked,
            &schema,
            &source,
            set,
            std::time::Instant::now(),
        )
        .await;
    }
    let (w, r) = stream::pipe();
    let label = format!("of tenant {}", from.domain);
    let exporting = export(cx, from, Box::new(w), &label);
    let importing = import(cx, client, req, ArchiveInput::Pipe(r, from.id), set);
    let (exported, imported) = tokio::join!(exporting, importing);
    match (exported, imported) {
        (Ok(_), Ok(i)) => Ok(i),
        // The export's failure is what ended the stream the import was reading.
        (Err(e), Err(i)) if i.kind() == ErrorKind::Invalid => Err(e),
        (_, Err(i)) => Err(i),
        (Err(e), Ok(_)) => Err(e),
    }
}

/// What a restore did.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Restored {
    /// The registry row as it is now.
    pub tenant: Tenant,
    /// The archive.
    pub file: String,
    /// The tenant the archive was taken from.
    pub source: crate::data::archive::Source,
    /// The revision before.
    pub from_revision: Option<i32>,
    /// The revision now (the archive's).
    pub to_revision: Option<i32>,
    /// Tables loaded.
    pub tables: usize,
    /// Rows loaded.
    pub rows: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// How long the tenant's writes waited: from its tables' locks to the swap's commit.
    pub write_block_ms: u64,
    /// One sentence.
    pub message: String,
}

/// The name of a schema an operation keeps beside the tenant's (a restore's new copy and
/// the one it replaces, a move's fenced and kept old copies): `SCHEMA` followed by
/// `suffix` (which starts with `$`, in no tenant's schema name), at most 63 bytes. When
/// that is too long, the schema name is cut and followed by `~` and 8 hex digits of its
/// SHA-256, so two tenants whose names share a long prefix never share these names.
pub(crate) fn beside(schema: &str, suffix: &str) -> String {
    if schema.len() + suffix.len() <= 63 {
        return format!("{schema}{suffix}");
    }
    use sha2::Digest;
    let digest = hex::encode(&sha2::Sha256::digest(schema.as_bytes())[..4]);
    let keep = 63usize.saturating_sub(suffix.len() + 1 + digest.len());
    let mut cut = schema.len().min(keep);
    while !schema.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{digest}{suffix}", &schema[..cut])
}

/// Replaces `tenant`'s schema and data with the archive's. The new schema is built and
/// loaded beside the old one, then the two are swapped and the old one dropped in one
/// transaction under the tenant's lock: until that commit, the tenant is as it was.
/// `action` names the run in the ledger (`restore`, or `restore --at`).
pub async fn restore(
    cx: &Context<'_>,
    client: &Client,
    tenant: &Tenant,
    input: ArchiveInput,
    set: &MigrationSet,
    action: &str,
) -> Result<Restored, Error> {
    let started = std::time::Instant::now();
    let started_at = OffsetDateTime::now_utc();
    let file = input.label();
    let mut source = input.open().await?;
    if let Err(e) = check_migrations(&source.manifest, set, source.label()) {
        return Err(source.blame(e).await);
    }
    let registry = Registry::open(client, &cx.settings.registry_schema).await?;
    let schema = tenant.schema_name.clone();
    // '$' is in no tenant's schema name: these names are only ever a restore's.
    let fresh = beside(&schema, "$restoring");
    let old = beside(&schema, "$replaced");
    moving::refuse_unfinished(&registry, tenant, "restore it").await?;
    let (pool, main) = tenant::locked(cx, tenant).await?;
    // A move may have held the lock while this waited.
    if let Err(e) = moving::still_here(&registry, tenant, "restore it").await {
        main.close(&pool).await;
        return Err(e);
    }
    // Whether this restore made the schema beside the tenant's (and must remove it if
    // it does not finish).
    let made = std::sync::atomic::AtomicBool::new(false);
    // When the tenant's writes began to wait.
    let fenced_at = std::sync::OnceLock::new();
    let result = async {
        let before = main.observe().await?;
        let mut on_server = cx.servers.target(&tenant.server)?.connect().await?;
        let boundary = crate::engine::dependents::inspect(&mut on_server, &schema).await?;
        if !boundary.outside.is_empty() {
            return Err(Error::refused(crate::engine::plan::data_blocked(
                &schema,
                &boundary.outside,
                "restore",
            )));
        }
        // What an interrupted restore of this tenant left (its lock is held: no other
        // restore of it runs). A killed restore's session may still be loading or
        // indexing the scratch schema: it is ended first, so the drop neither waits for
        // it nor deadlocks with it.
        end_orphans(&on_server, &fresh).await?;
        drop(on_server);
        // The scratch schema's lock: held by nothing now but a session that could not be
        // ended, which is waited for.
        let (side_pool, mut side) =
            tenant::locked_schema(cx, &tenant.server, &fresh, &tenant.domain).await?;
        let loaded = async {
            side.client()
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE; DROP SCHEMA IF EXISTS {} CASCADE",
                    quote(&fresh),
                    quote(&old)
                ))
                .await
                .map_err(crate::pg::db::query_error(
                    "removing what an interrupted restore left",
                ))?;
            crate::failpoint!("restore.leftovers-removed");
            // Writes wait from here until the swap commits, then go to the restored
            // data: none is acknowledged into the copy being replaced.
            let current = catalog::read(main.client(), &schema, &cx.settings.history_table).await?;
            let tables = fence::order(main.client(), &schema, &current.lockable()).await?;
            let watch = fence::Watch::open(
                cx.servers.target(&tenant.server)?,
                main.client(),
                cx.interrupt,
                cx.settings,
            )
            .await?;
            let _ = fenced_at.set(std::time::Instant::now());
            fence::take(
                main.client(),
                &watch,
                "BEGIN; SET LOCAL statement_timeout = 0",
                &schema,
                &tables,
            )
            .await?;
            crate::failpoint!("restore.source-locked");
            made.store(true, std::sync::atomic::Ordering::SeqCst);
            if let Err(e) = build(&mut side, &fresh, &source, set).await {
                // As for an import: damage, when that is what explains it.
                return Err(source.blame(e).await);
            }
            crate::failpoint!("restore.built");
            crate::pg::db::notice_dead_client(side.client()).await;
            load::load(side.client(), &fresh, &mut source).await
        }
        .await;
        side.close(&side_pool).await;
        let loaded = loaded?;
        crate::failpoint!("restore.loaded");
        let index =
            crate::registry::versions::schema_for(&tenant.server, &cx.settings.registry_schema);
        let attach =
            crate::registry::versions::attach_sql(index, &schema, &cx.settings.history_table);
        let kept = swap(main.client(), &schema, &fresh, &old, &attach).await?;
        let blocked = fenced_at
            .get()
            .map_or(0, |t| t.elapsed().as_millis() as u64);
        crate::failpoint!("restore.swapped");
        let state = main.observe().await?;
        let run = scheduler::OwnRun::new()?;
        let event = run.event(action, before.current(), started_at);
        let recorded = registry::record_with(
            registry.client(),
            registry.tables(),
            tenant.id,
            &Observed::of(&state),
            Outcome::Succeeded,
            Some(&event),
        )
        .await?;
        Ok((recorded, before.current(), loaded, kept, blocked))
    }
    .await;
    if let Err(e) = &result {
        let _ = main.client().batch_execute("ROLLBACK").await;
        if made.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = main
                .client()
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", quote(&fresh)))
                .await;
            // It had begun (the tables fenced, the new schema made): the attempt is in
            // the ledger, the tenant as it was. The error is the command's either way.
            let _ = log_failure(&registry, tenant, action, started_at, e).await;
        }
    }
    main.close(&pool).await;
    let (recorded, from, loaded, kept, write_block_ms) = result?;
    let m = &source.manifest;
    let mut message = format!(
        "tenant {} restored from {}'s archive: schema {} rebuilt at revision {} with {} rows in {} tables",
        recorded.domain,
        m.source.domain,
        quote(&schema),
        crate::show::revision(m.revision),
        loaded.rows,
        loaded.tables
    );
    if kept {
        message.push_str(&format!(
            "; the replaced copy is kept as schema {} because open transactions still read it (the next restore removes it)",
            quote(&old)
        ));
    }
    Ok(Restored {
        to_revision: recorded.current_revision,
        tenant: recorded,
        file,
        source: m.source.clone(),
        from_revision: from,
        tables: loaded.tables,
        rows: loaded.rows,
        duration_ms: started.elapsed().as_millis() as u64,
        write_block_ms,
        message,
    })
}

/// Ends the sessions a killed tenantctl left holding the lock of `scratch`, a schema that
/// only one tenant's restore uses while it holds that tenant's lock (which the caller
/// holds): any such session is a leftover of a killed restore, still loading or
/// indexing. Waits (up to 30 s) until they are gone; a session that is not tenantctl's,
/// or that cannot be ended (the role may not signal it), is waited for by the lock
/// instead.
async fn end_orphans(client: &Client, scratch: &str) -> Result<(), Error> {
    let key = crate::pg::db::lock_key(crate::pg::db::LockSpace::Tenant, scratch);
    let holders = "SELECT l.pid FROM pg_catalog.pg_locks l \
         JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
           AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) \
           AND l.classid::bigint = $1 AND l.objid::bigint = $2 \
           AND a.application_name LIKE '%tenantctl%' AND l.pid <> pg_catalog.pg_backend_pid()";
    let keys = [i64::from(key.0 as u32), i64::from(key.1 as u32)];
    let pids: Vec<i32> = client
        .query(holders, &[&keys[0], &keys[1]])
        .await
        .map_err(crate::pg::db::query_error(
            "looking for sessions an interrupted restore left",
        ))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for pid in &pids {
        let _ = client
            .execute("SELECT pg_catalog.pg_terminate_backend($1)", &[pid])
            .await;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !pids.is_empty() && std::time::Instant::now() < deadline {
        let left = client
            .query_one(
                "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE pid = ANY ($1)",
                &[&pids],
            )
            .await
            .map_err(crate::pg::db::query_error(
                "waiting for the sessions an interrupted restore left",
            ))?
            .get::<_, i64>(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// In the transaction open on `client` (holding the tenant's tables against writes):
/// checks nothing outside `schema` came to depend on it, renames it to `old`, gives
/// `fresh` its name, drops `old`, and commits.
/// `attach` (the version index's trigger and row for the schema under its own name) runs
/// in the same transaction.
async fn swap(
    client: &Client,
    schema: &str,
    fresh: &str,
    old: &str,
    attach: &str,
) -> Result<bool, Error> {
    let doing = format!("swapping the restored schema in for {}", quote(schema));
    let blocking = crate::engine::dependents::outside(&**client, schema).await?;
    if !blocking.is_empty() {
        return Err(Error::refused(crate::engine::plan::data_blocked(
            schema, &blocking, "restore",
        )));
    }
    // The new copy was built under the scratch name: a routine whose migration declared
    // `SET search_path FROM CURRENT` recorded that name, and would look for its tables
    // there. It is given the tenant's name back in the same transaction.
    let search_paths = format!(
        "DO $tenantctl$ DECLARE r record; BEGIN \
           FOR r IN SELECT p.oid::pg_catalog.regprocedure AS routine, c.setting \
                    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace, \
                         pg_catalog.unnest(p.proconfig) c(setting) \
                    WHERE n.nspname = {s_lit} AND c.setting LIKE 'search\\_path=%' \
                      AND pg_catalog.strpos(c.setting, {f_lit}) > 0 LOOP \
             EXECUTE pg_catalog.format('ALTER ROUTINE %s SET search_path = %s', r.routine, \
               pg_catalog.replace(pg_catalog.substr(r.setting, 13), {f_lit}, {s_ident})); \
           END LOOP; \
         END $tenantctl$",
        s_lit = crate::engine::plan::literal(schema),
        f_lit = crate::engine::plan::literal(&quote(fresh)),
        s_ident = crate::engine::plan::literal(&quote(schema)),
    );
    client
        .batch_execute(&format!(
            "ALTER SCHEMA {s} RENAME TO {o}; ALTER SCHEMA {f} RENAME TO {s}; {search_paths}; {attach}; SAVEPOINT replaced",
            s = quote(schema),
            o = quote(old),
            f = quote(fresh),
        ))
        .await
        .map_err(crate::pg::db::query_error(&doing))?;
    let drop = crate::engine::plan::guarded_drop(&format!("DROP SCHEMA {} CASCADE", quote(old)));
    // Readers of the replaced copy (open transactions) hold its drop back: it is then
    // kept under its own name, and the next restore removes it.
    let kept = match client.batch_execute(&drop).await {
        Ok(()) => false,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            client
                .batch_execute("ROLLBACK TO SAVEPOINT replaced")
                .await
                .map_err(crate::pg::db::query_error(&doing))?;
            true
        }
        Err(e) => return Err(crate::pg::db::query_error(&doing)(e)),
    };
    client
        .batch_execute("COMMIT")
        .await
        .map_err(crate::pg::db::query_error(&doing))?;
    Ok(kept)
}

/// What an import (or a clone) would do, checked without changing anything.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ImportPlan {
    /// Always true.
    pub dry_run: bool,
    /// The new tenant's domain.
    pub domain: String,
    /// Its schema.
    pub schema_name: String,
    /// Its server.
    pub server: String,
    /// The tenant the data comes from.
    pub source: crate::data::archive::Source,
    /// The revision its schema would be built to.
    pub revision: Option<i32>,
    /// Tables that would be loaded.
    pub tables: usize,
    /// Rows that would be loaded.
    pub rows: u64,
    /// Whether the import would finish an interrupted one (see [`import`]) rather than
    /// register a tenant; `tables` and `rows` are then what that one loaded.
    pub resumes: bool,
    /// One sentence.
    pub message: String,
}

/// Checks a registration from `manifest`'s data (from `origin`) as [`import`] would,
/// changing nothing: the names, the domain and schema free (or a schema an interrupted
/// import left, which the import replaces), the migrations present; or that the import
/// would finish an interrupted one.
pub async fn plan_import(
    cx: &Context<'_>,
    client: &Client,
    req: &NewTenantRequest,
    manifest: &Manifest,
    origin: Origin,
    set: &MigrationSet,
    label: &str,
) -> Result<ImportPlan, Error> {
    let schema = tenant::validate(req, cx.settings)?;
    check_migrations(manifest, set, label)?;
    let registry = Registry::open(client, &cx.settings.registry_schema).await?;
    if registry.domain_taken(&req.domain).await? {
        let tenant = registry.find(&req.domain).await?;
        let marked = interrupted(cx, &tenant).await?;
        let mark = resumable(&tenant, marked, Some(&origin), req, &schema)?;
        let message = format!(
            "would finish the interrupted import of tenant {}: mark it active and give it a new API key, keeping schema {} on server {} with the {} rows in {} tables that import loaded; nothing was changed",
            tenant.domain,
            quote(&tenant.schema_name),
            tenant.server,
            mark.rows,
            mark.tables
        );
        return Ok(ImportPlan {
            dry_run: true,
            domain: tenant.domain,
            schema_name: tenant.schema_name,
            server: tenant.server,
            source: manifest.source.clone(),
            revision: manifest.revision,
            tables: mark.tables,
            rows: mark.rows,
            resumes: true,
            message,
        });
    }
    let server = free_and_placed(cx, &registry, req, &schema).await?;
    let on_server = cx.servers.target(&server)?.connect().await?;
    let leftover = schema_comment(&on_server, &schema)
        .await?
        .is_some_and(|c| c.starts_with(BUILDING));
    if !leftover
        && crate::engine::dependents::contents(&*on_server, &schema)
            .await?
            .non_empty()
    {
        return Err(Error::usage(format!(
            "schema {} already exists on server {server} and holds objects; pass --schema to choose another",
            quote(&schema)
        )));
    }
    // The build tried, and rolled back: what the migrations make must hold the
    // archive's tables, as the import checks once it has registered the tenant.
    let (pool, mut session) = tenant::locked_schema(cx, &server, &schema, &req.domain).await?;
    let tried = rehearse_build(&mut session, &schema, manifest, set, leftover).await;
    session.close(&pool).await;
    let untried = tried?;
    let message = format!(
        "would {}register tenant {} on server {server} and build schema {} to revision {} with {} rows in {} tables from {}'s data{}; nothing was changed",
        if leftover {
            "remove what an interrupted import left in its schema, "
        } else {
            ""
        },
        req.domain,
        quote(&schema),
        crate::show::revision(manifest.revision),
        manifest.rows(),
        manifest.tables.len(),
        manifest.source.domain,
        untried.map(|u| format!(" ({u})")).unwrap_or_default()
    );
    Ok(ImportPlan {
        dry_run: true,
        domain: req.domain.clone(),
        schema_name: schema,
        server,
        source: manifest.source.clone(),
        revision: manifest.revision,
        tables: manifest.tables.len(),
        rows: manifest.rows(),
        resumes: false,
        message,
    })
}

/// The manifest `tenant` would export now, read under its lock without writing any rows
/// (for dry runs of clones).
pub async fn peek(cx: &Context<'_>, tenant: &Tenant) -> Result<Manifest, Error> {
    let (w, r) = stream::pipe();
    let label = format!("of tenant {}", tenant.domain);
    let reading = async move {
        let source = Source::open(Box::new(r), &label).await?;
        Ok::<_, Error>(source.manifest)
    };
    let (_, manifest) = tokio::join!(export(cx, tenant, Box::new(w), "a dry run"), reading);
    manifest
}

#[cfg(test)]
mod tests {

    #[test]
    fn names_beside_a_schema_fit_and_never_collide_for_long_names() {
        use super::beside;
        assert_eq!(beside("tenant_acme", "$moving"), "tenant_acme$moving");
        let a = format!("{}aaa", "q".repeat(60));
        let b = format!("{}bbb", "q".repeat(60));
        for suffix in ["$moving", "$restoring", "$replaced", "$moved_1765000000"] {
            let (x, y) = (beside(&a, suffix), beside(&b, suffix));
            assert!(x.len() <= 63 && y.len() <= 63, "{x} {y}");
            assert_ne!(x, y, "{suffix}");
            assert!(x.ends_with(suffix) && y.ends_with(suffix));
        }
        // Multi-byte characters are cut on a boundary.
        let c = "é".repeat(31);
        assert!(beside(&c, "$restoring").len() <= 63);
    }

    use super::{Mark, Origin, BUILDING};

    #[test]
    fn a_mark_is_read_back_from_its_comment_and_nothing_else_is_one() {
        for origin in [Origin::Archive("ab".repeat(32)), Origin::Clone(7)] {
            let mark = Mark {
                origin,
                tables: 3,
                rows: 20_050,
            };
            let comment = mark.comment();
            assert!(comment.starts_with(BUILDING), "{comment}");
            assert_eq!(Mark::parse(&comment), Some(mark));
        }
        for other in [
            BUILDING.to_string(),
            format!("{BUILDING}; loaded"),
            format!("{BUILDING}; loaded {{\"origin\":{{\"clone\":1}}}}"),
            format!(
                "{BUILDING}; loaded {{\"origin\":{{\"clone\":1}},\"tables\":1,\"rows\":1,\"x\":1}}"
            ),
            "a schema for the members".to_string(),
        ] {
            assert_eq!(Mark::parse(&other), None, "{other}");
        }
    }
}
