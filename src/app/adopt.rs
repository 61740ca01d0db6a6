//! Taking over a fleet run by the original FastAPI + Alembic service (the book's "Adopting a
//! running Alembic system").
//!
//! That service keeps `tenants` (created by SQLAlchemy from its model, API keys in plain
//! text in `api_key`) and an `alembic_version` table in each tenant schema. Adoption:
//! 1. the registry: the original table is upgraded in place, in one transaction: missing
//!    columns added, every plain API key hashed (and the plain column emptied), ids kept,
//!    everything else in the table left alone; then the registry's own migrations run;
//! 2. the shared schema: its own `alembic_version` (when it has one, on each server) is
//!    mapped by the map file's `[shared]` table and stamped as `stamp --shared` does;
//! 3. the histories: each registered tenant's `alembic_version` is mapped to a tenantctl
//!    version by the map file, and that version is stamped (recorded as applied with the
//!    local files' checksums) in the tenant's locked session;
//! 4. what the tenants use from other schemas (an extension's function in `public`) is
//!    reported, with the `tenants.extra_search_path` the config lacks.
//!
//! What cannot be mapped is reported and left untouched: schemas with an
//! `alembic_version` that no tenant is registered for, registered tenants without a
//! schema, revisions missing from the map, Alembic branches (several rows).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use tokio_postgres::Client;

use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::ident::{qualified, quote};
use crate::pg::db::query_error;
use crate::registry::{self, Registry};

/// The map file: Alembic revision id -> tenantctl version, for the tenants' revisions
/// and, in its `[shared]` table, for the shared schema's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevisionMap {
    /// The tenants' revisions (each tenant schema's `alembic_version`).
    pub tenants: BTreeMap<String, i32>,
    /// The shared schema's revisions (its own `alembic_version`), when the file has a
    /// `[shared]` table.
    pub shared: Option<BTreeMap<String, i32>>,
}

impl RevisionMap {
    /// Reads and checks a map file (`"3da2eb3bee79" = 6` per line, TOML, then maybe a
    /// `[shared]` table of the same form): exit 3 for an unreadable or malformed file, a
    /// revision id that is not an Alembic id, or a tenant version the migrations directory
    /// lacks. The shared versions are checked by [`RevisionMap::check_shared`].
    pub fn load(path: &Path, set: &MigrationSet) -> Result<RevisionMap, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::setup(format!("cannot read the map file {}: {e}", path.display()))
        })?;
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            Error::setup(format!(
                "the map file {} is not valid TOML: {}",
                path.display(),
                e.message()
            ))
        })?;
        // A revision could be called "shared": only a table is the shared schema's map.
        let shared = match table.remove("shared") {
            Some(toml::Value::Table(t)) => Some(revisions_of(path, t, "[shared] ")?),
            Some(other) => {
                table.insert("shared".to_string(), other);
                None
            }
            None => None,
        };
        let tenants = revisions_of(path, table, "")?;
        check_versions(path, &tenants, set, "")?;
        Ok(RevisionMap { tenants, shared })
    }

    /// Checks that every version of the `[shared]` table is in the shared migrations
    /// directory `set` (exit 3 otherwise).
    pub fn check_shared(&self, path: &Path, set: &MigrationSet) -> Result<(), Error> {
        match &self.shared {
            Some(shared) => check_versions(path, shared, set, "[shared] "),
            None => Ok(()),
        }
    }
}

/// The `"revision" = version` entries of one table of the map file; `table_name` is how
/// a message names the table (`""` or `"[shared] "`).
fn revisions_of(
    path: &Path,
    table: toml::Table,
    table_name: &str,
) -> Result<BTreeMap<String, i32>, Error> {
    let mut map = BTreeMap::new();
    for (rev, v) in table {
        if rev.is_empty()
            || rev.len() > 64
            || !rev.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::setup(format!(
                "map file {}: {table_name}{} is not an Alembic revision id (letters, digits and '_')",
                path.display(),
                crate::ident::shown(&rev)
            )));
        }
        let version = v
            .as_integer()
            .and_then(|i| i32::try_from(i).ok())
            .ok_or_else(|| {
                Error::setup(format!(
                    "map file {}: {table_name}revision {rev} must map to a tenantctl version (a whole number), e.g. \"{rev}\" = 6",
                    path.display()
                ))
            })?;
        if version <= 0 {
            return Err(Error::setup(format!(
                "map file {}: {table_name}revision {rev} maps to {version}: a schema stamped at base records nothing, and the next upgrade would run every migration over what Alembic made; map it to the version its schema matches",
                path.display()
            )));
        }
        map.insert(rev, version);
    }
    Ok(map)
}

/// Every version of `map` is a file of `set` (exit 3 otherwise).
fn check_versions(
    path: &Path,
    map: &BTreeMap<String, i32>,
    set: &MigrationSet,
    table_name: &str,
) -> Result<(), Error> {
    for (rev, &version) in map {
        if version > 0 && set.get(version).is_none() {
            return Err(Error::setup(format!(
                "map file {}: {table_name}revision {rev} maps to version {version}, which is not in {}",
                path.display(),
                set.dir.display()
            )));
        }
    }
    Ok(())
}

/// What adopting the registry did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct RegistryAdoption {
    /// `original` (the original service's table, upgraded now), `tenantctl` (already a
    /// tenantctl registry), or `none` (no registry: `tenantctl init` makes one).
    pub found: &'static str,
    /// Columns added to `tenants`.
    pub columns_added: Vec<String>,
    /// Plain API keys hashed (and removed from `api_key`).
    pub keys_hashed: u64,
    /// Tenants that had no API key: they got an unusable hash; give them a key with
    /// `tenantctl tenant rotate-key`.
    pub without_key: Vec<String>,
}

/// The columns of a tenantctl registry's `tenants` the original table may lack, with how
/// they are added. The original's own columns are kept; only their types and
/// constraints are brought in line where tenantctl needs it.
const ADDED: &[(&str, &str)] = &[
    ("email", "text"),
    ("tenant_type", "text NOT NULL DEFAULT 'standard'"),
    ("schema_provisioned", "boolean NOT NULL DEFAULT false"),
    ("migrations_applied", "boolean NOT NULL DEFAULT false"),
    ("current_revision", "integer"),
    ("status", "text NOT NULL DEFAULT 'pending'"),
    ("last_error", "text"),
    ("api_key_hash", "text"),
    ("api_key_prefix", "text"),
    ("created_at", "timestamptz NOT NULL DEFAULT now()"),
    ("updated_at", "timestamptz NOT NULL DEFAULT now()"),
];

/// Adopts a fleet the original service runs: its registry table taken over in place
/// (see [`adopt_registry`]), then the shared schema's `alembic_version` mapped through the
/// map file's `[shared]` table and stamped as `stamp --shared` does (see [`adopt_shared`]),
/// then each tenant's `alembic_version` mapped through the revision map file `map` and
/// stamped (see [`adopt_histories`]), each stamp a run of its own in the ledger; last,
/// what the tenants use from other schemas (see [`schema_dependencies`]). With `dry_run`,
/// says what would happen and changes nothing.
pub async fn adopt_alembic(
    cx: &crate::app::context::Context,
    events: &crate::engine::scheduler::Events,
    map_path: &Path,
    dry_run: bool,
) -> Result<Adoption, Error> {
    let set = cx.migrations()?;
    let map = RevisionMap::load(map_path, &set)?;
    if map.shared.is_some() {
        let (_, shared_set) = cx.shared().map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "the map file {} has a [shared] table, but {}; nothing was changed",
                    map_path.display(),
                    e.message()
                ),
            )
        })?;
        map.check_shared(map_path, &shared_set)?;
    }
    // Every server's schemas are read: two entries for one database would count each
    // of its schemas twice.
    let servers = cx.servers_named(None)?;
    crate::app::shared::refuse_same_database(cx, &servers).await?;
    let mut client = cx.connect().await?;
    let schema = cx.settings.registry_schema.clone();
    let original = crate::registry::is_original(&client, &schema).await?;
    let reg = adopt_registry(&mut client, &schema, dry_run, cx.settings.lock_timeout).await?;
    if reg.found == "none" {
        return Err(Error::setup(format!(
            "schema {} has no tenants table: there is no fleet to adopt (`tenantctl init` creates a registry)",
            crate::ident::quote(&schema)
        )));
    }
    if !dry_run {
        crate::failpoint!("adopt.registry-upgraded");
    }
    let shared = adopt_shared(cx, events, &map, dry_run).await?;
    let tenants = listed(&client, &schema, original && dry_run).await?;
    let registry = if dry_run {
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
    let one = cx.one_tenant(events);
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
            &one,
            &client,
            registry,
            tenant,
            crate::engine::plan::SchemaChange::Stamp(version),
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
    let mut adoption = adopt_histories(
        &tenants,
        &cx.servers,
        &map,
        &cx.settings,
        reg,
        dry_run,
        stamp,
    )
    .await?;
    adoption.shared = shared;
    adoption.depends_on_schemas = schema_dependencies(cx, &tenants, &set).await?;
    adoption.finish(&cx.settings.extra_search_path);
    Ok(adoption)
}

/// What adoption found in one server's shared schema.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SharedFound {
    /// The server.
    pub server: String,
    /// The shared schema.
    pub schema: String,
    /// The Alembic revisions in its `alembic_version` (several: a branch).
    pub alembic_revisions: Vec<String>,
    /// The shared version they map to.
    pub version: Option<i32>,
    /// `stamped` (or, in a dry run, would be), `already` (adopted before), or
    /// `left_alone`.
    pub status: &'static str,
    /// What adoption did or would do, or why it left the schema alone.
    pub outcome: String,
}

/// The `version_num` rows of `schema.alembic_version` (`None`: there is no such table;
/// a row's `None`: a NULL `version_num`).
async fn alembic_rows(client: &Client, schema: &str) -> Result<Option<Vec<Option<String>>>, Error> {
    let table = qualified(schema, "alembic_version");
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = 'alembic_version' AND c.relkind = 'r')",
            &[&schema],
        )
        .await
        .map_err(query_error(&format!("looking for {table}")))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let rows = client
        .query(
            &format!("SELECT version_num::text FROM {table} ORDER BY 1"),
            &[],
        )
        .await
        .map_err(query_error(&format!("reading {table}")))?;
    Ok(Some(
        rows.iter()
            .map(|r| r.try_get::<_, Option<String>>(0).ok().flatten())
            .collect(),
    ))
}

/// Adopts the shared schema's own Alembic history, on every configured server whose
/// shared schema has an `alembic_version`: its revision mapped through the map file's
/// `[shared]` table and stamped through [`crate::app::shared::start`], as `stamp --shared`
/// does (under the shared schema's lock). What cannot be mapped is left alone, with why;
/// so is the registry's server's shared schema when the map has a `[shared]` table and
/// it has no `alembic_version` (nor a tenantctl history). Nothing without a configured
/// shared schema.
pub async fn adopt_shared(
    cx: &crate::app::context::Context,
    events: &crate::engine::scheduler::Events,
    map: &RevisionMap,
    dry_run: bool,
) -> Result<Vec<SharedFound>, Error> {
    let Some(shared) = cx.settings.shared.as_ref() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (server, target) in cx.servers.iter() {
        let name = server.name.as_str();
        let (rows, state) = {
            let client = target.connect().await?;
            let rows = alembic_rows(&client, &shared.schema).await?;
            let state =
                crate::engine::shared::observe(&client, &shared.schema, &cx.settings).await?;
            (rows, state)
        };
        let current = state.current();
        let has_history = state.history_exists;
        let entry =
            |revs: Vec<String>, version: Option<i32>, status: &'static str, outcome: String| {
                SharedFound {
                    server: name.to_string(),
                    schema: shared.schema.clone(),
                    alembic_revisions: revs,
                    version,
                    status,
                    outcome,
                }
            };
        let table = qualified(&shared.schema, "alembic_version");
        let rows = match rows {
            Some(rows) if !rows.is_empty() => rows,
            _ => {
                // Only the registry's server is expected to have one.
                if crate::registry::servers::is_default(name) && map.shared.is_some() {
                    out.push(if has_history {
                        entry(
                            vec![],
                            current,
                            "already",
                            format!(
                                "no alembic_version; its tenantctl shared history is at revision {}",
                                crate::show::revision(current)
                            ),
                        )
                    } else {
                        entry(
                            vec![],
                            None,
                            "left_alone",
                            format!(
                                "the map file has a [shared] table, but there is no {table} (or it is empty) and no tenantctl shared history: nothing to stamp; left alone"
                            ),
                        )
                    });
                }
                continue;
            }
        };
        let revs = revisions(&rows);
        if revs.len() < rows.len() {
            out.push(entry(revs, None, "left_alone", format!(
                "its alembic_version has a row whose version_num is NULL, which Alembic never writes (see `SELECT * FROM {table}`): put the revision the schema is at there (or delete the row), then run this again; left alone"
            )));
            continue;
        }
        if revs.len() > 1 {
            out.push(entry(revs, None, "left_alone", "several Alembic heads (a branch); merge them with `alembic merge`, upgrade, then run this again; left alone".to_string()));
            continue;
        }
        let rev = revs[0].clone();
        let Some(shared_map) = &map.shared else {
            out.push(entry(revs, None, "left_alone", format!(
                "revision {rev}: the map file has no [shared] table for the shared schema's revisions; add one (`[shared]`, then `\"{rev}\" = N`), then run this again; left alone"
            )));
            continue;
        };
        let Some(&version) = shared_map.get(&rev) else {
            out.push(entry(revs, None, "left_alone", format!(
                "revision {rev} is not in the map file's [shared] table; add it, then run this again; left alone"
            )));
            continue;
        };
        if has_history {
            out.push(if current == Some(version) || (version == 0 && current.is_none()) {
                entry(revs, Some(version), "already", "already stamped at this version".to_string())
            } else if let Some(c) = current.filter(|c| *c > version) {
                entry(revs, Some(version), "already", format!(
                    "already adopted: its tenantctl shared history is at revision {c}, past the mapped version {version}"
                ))
            } else {
                entry(revs, Some(version), "left_alone", format!(
                    "it already has a tenantctl shared history at revision {}, not {version}; left alone",
                    crate::show::revision(current)
                ))
            });
            continue;
        }
        // The same start as `stamp --shared VERSION --server NAME`: the target is checked
        // against the shared files in a dry run too.
        let start = crate::app::shared::start(cx, "stamp", &version.to_string(), Some(name))?;
        if dry_run {
            out.push(entry(
                revs,
                Some(version),
                "stamped",
                format!("would stamp shared version {version}"),
            ));
            continue;
        }
        let results = start.run(cx, events).await?;
        out.push(match results.into_iter().next() {
            Some(r) if r.status != crate::engine::scheduler::ResultStatus::Failed => entry(
                revs,
                Some(version),
                "stamped",
                format!("stamped shared version {version}"),
            ),
            r => entry(
                revs,
                Some(version),
                "left_alone",
                format!(
                    "stamping failed: {}",
                    r.and_then(|r| r.error)
                        .unwrap_or_else(|| "no result".into())
                ),
            ),
        });
    }
    Ok(out)
}

/// Upgrades the original service's `tenants` table in place and brings the registry to
/// this binary's version, in one transaction. A dry run makes the same checks and
/// rehearses the same transaction, then rolls it back: it fails exactly where the
/// adoption would, and changes nothing. `lock_timeout` (zero: none) bounds the wait for
/// the table's locks in both.
pub async fn adopt_registry(
    client: &mut Client,
    schema: &str,
    dry_run: bool,
    lock_timeout: std::time::Duration,
) -> Result<RegistryAdoption, Error> {
    // The registry's lock (init takes it too, on this same session): two adoptions at
    // once run one after the other, and the second finds a tenantctl registry.
    let (k1, k2) = crate::pg::db::lock_key(crate::pg::db::LockSpace::Registry, schema);
    client
        .execute("SELECT pg_advisory_lock($1, $2)", &[&k1, &k2])
        .await
        .map_err(query_error("taking the registry lock"))?;
    let result = adopt_registry_locked(client, schema, dry_run, lock_timeout).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1, $2)", &[&k1, &k2])
        .await;
    result
}

/// The first column of a query's rows, as text (NULLs left out); `doing` names the read
/// in an error.
async fn texts(client: &Client, sql: &str, doing: &str) -> Result<Vec<String>, Error> {
    Ok(client
        .query(sql, &[])
        .await
        .map_err(query_error(doing))?
        .iter()
        .filter_map(|r| r.try_get::<_, Option<String>>(0).ok().flatten())
        .collect())
}

async fn adopt_registry_locked(
    client: &mut Client,
    schema: &str,
    dry_run: bool,
    lock_timeout: std::time::Duration,
) -> Result<RegistryAdoption, Error> {
    let cols = registry::tenants_columns(client, schema).await?;
    if cols.is_empty() {
        return Ok(RegistryAdoption {
            found: "none",
            ..Default::default()
        });
    }
    if !registry::is_original(client, schema).await? {
        if !dry_run {
            registry::init(client, schema).await?;
        }
        return Ok(RegistryAdoption {
            found: "tenantctl",
            ..Default::default()
        });
    }
    let t = qualified(schema, "tenants");
    // Rows tenantctl cannot register are refused before anything changes.
    refuse_unusable_rows(client, &t, schema).await?;
    if let Some(ty) = cols
        .get("status")
        .filter(|ty| !ty.starts_with("character") && *ty != "text")
    {
        return Err(Error::setup(format!(
            "the original tenants table has a status column of type {ty}; tenantctl keeps its status there as text (pending, active, failed): rename that column first; nothing was changed"
        )));
    }
    if cols.contains_key("status") {
        // A status tenantctl does not know (`suspended`, say) would be lost: refused.
        let odd = texts(
            client,
            &format!(
                "SELECT 'id ' || id::text || ': ' || quote_literal(status) FROM {t} \
                 WHERE status IS NOT NULL AND status NOT IN ('pending', 'active', 'failed') ORDER BY id"
            ),
            "reading the tenants table",
        )
        .await?;
        if !odd.is_empty() {
            return Err(Error::setup(format!(
                "the original tenants table has statuses tenantctl does not keep ({}): tenantctl's statuses are pending, active and failed, so adopting would lose them (a suspended tenant would become active); change or move them first (for example into a column of your own); nothing was changed",
                crate::error::listed(&odd, 10)
            )));
        }
    }
    let added: Vec<String> = ADDED
        .iter()
        .filter(|(c, _)| !cols.contains_key(*c))
        .map(|(c, _)| c.to_string())
        .collect();
    let keyless = texts(
        client,
        &format!("SELECT domain::text FROM {t} WHERE api_key IS NULL OR api_key = '' ORDER BY id"),
        "reading the tenants table",
    )
    .await?;
    let keys: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {t} WHERE api_key IS NOT NULL AND api_key <> ''"),
            &[],
        )
        .await
        .map_err(query_error("reading the tenants table"))?
        .get(0);
    let report = RegistryAdoption {
        found: "original",
        columns_added: added.clone(),
        keys_hashed: keys as u64,
        without_key: keyless,
    };
    let mut sql = String::from("BEGIN;\n");
    if !lock_timeout.is_zero() {
        sql.push_str(&format!(
            "SET LOCAL lock_timeout = {};\n",
            lock_timeout.as_millis().min(i32::MAX as u128)
        ));
    }
    for (c, def) in ADDED {
        if !cols.contains_key(*c) {
            sql.push_str(&format!("ALTER TABLE {t} ADD COLUMN {} {def};\n", quote(c)));
        }
    }
    // The original's own columns, brought to the types and constraints tenantctl needs.
    sql.push_str(&format!(
        "ALTER TABLE {t} ALTER COLUMN domain SET NOT NULL, ALTER COLUMN tenant_name SET NOT NULL, ALTER COLUMN schema_name SET NOT NULL;\n"
    ));
    let fix_ts = |c: &str| {
        if cols
            .get(c)
            .is_some_and(|ty| ty == "timestamp without time zone")
        {
            format!(
                "ALTER TABLE {t} ALTER COLUMN {q} TYPE timestamptz USING {q} AT TIME ZONE 'UTC';\n",
                q = quote(c)
            )
        } else {
            String::new()
        }
    };
    // SQLAlchemy's String(n) is varchar(n); tenantctl reads and checks text.
    for c in [
        "tenant_name",
        "domain",
        "email",
        "tenant_type",
        "schema_name",
        "status",
        "last_error",
    ] {
        if cols
            .get(c)
            .is_some_and(|ty| ty == "character varying" || ty == "character")
        {
            sql.push_str(&format!(
                "ALTER TABLE {t} ALTER COLUMN {} TYPE text;\n",
                quote(c)
            ));
        }
    }
    sql.push_str(&fix_ts("created_at"));
    sql.push_str(&fix_ts("updated_at"));
    for (c, default) in [
        ("tenant_type", "'standard'"),
        ("schema_provisioned", "false"),
        ("migrations_applied", "false"),
        ("created_at", "now()"),
        ("updated_at", "now()"),
    ] {
        sql.push_str(&format!(
            "UPDATE {t} SET {q} = {default} WHERE {q} IS NULL;\n\
             ALTER TABLE {t} ALTER COLUMN {q} SET DEFAULT {default}, ALTER COLUMN {q} SET NOT NULL;\n",
            q = quote(c)
        ));
    }
    if cols.get("id").is_some_and(|ty| ty != "bigint") {
        sql.push_str(&format!("ALTER TABLE {t} ALTER COLUMN id TYPE bigint;\n"));
    }
    // The original's tenants are live: a provisioned one is active, the rest pending.
    let status_filter = if cols.contains_key("status") {
        "WHERE status IS NULL OR status NOT IN ('pending', 'active', 'failed')"
    } else {
        ""
    };
    sql.push_str(&format!(
        "UPDATE {t} SET status = CASE WHEN schema_provisioned THEN 'active' ELSE 'pending' END \
         {status_filter};\n\
         ALTER TABLE {t} ALTER COLUMN status SET DEFAULT 'pending', ALTER COLUMN status SET NOT NULL;\n\
         UPDATE {t} SET api_key_hash = encode(sha256(convert_to(api_key, 'UTF8')), 'hex'), \
                api_key_prefix = left(api_key, least(10, length(api_key) / 4)) \
         WHERE api_key IS NOT NULL AND api_key <> '';\n\
         UPDATE {t} SET api_key_hash = encode(sha256(convert_to(gen_random_uuid()::text || clock_timestamp()::text || id::text, 'UTF8')), 'hex'), \
                api_key_prefix = '' \
         WHERE api_key_hash IS NULL;\n\
         ALTER TABLE {t} ALTER COLUMN api_key DROP NOT NULL;\n\
         UPDATE {t} SET api_key = NULL WHERE api_key IS NOT NULL;\n\
         ALTER TABLE {t} ALTER COLUMN api_key_hash SET NOT NULL, ALTER COLUMN api_key_prefix SET NOT NULL;\n\
         ALTER TABLE {t} ADD CONSTRAINT tenants_status_check CHECK (status IN ('pending', 'active', 'failed'));\n\
         ALTER TABLE {t} ADD CONSTRAINT tenants_api_key_hash_check CHECK (api_key_hash ~ '^[0-9a-f]{{64}}$');\n\
         CREATE UNIQUE INDEX IF NOT EXISTS tenants_api_key_hash_key ON {t} (api_key_hash);\n\
         CREATE INDEX IF NOT EXISTS tenants_status_idx ON {t} (status);\n\
         CREATE INDEX IF NOT EXISTS tenants_tenant_type_idx ON {t} (tenant_type);\n"
    ));
    // Domains and schema names must be unique; the original's own unique indexes count.
    for c in ["domain", "schema_name"] {
        if !unique_on(client, &t, c).await? {
            sql.push_str(&format!(
                "CREATE UNIQUE INDEX {} ON {t} ({});\n",
                quote(&format!("tenants_{c}_key")),
                quote(c)
            ));
        }
    }
    // The registry's history, with its first migration (the table) recorded as applied,
    // then the registry's other migrations, in the same transaction: an adoption that
    // fails at any step leaves the original table as it was.
    let (name, v1) = registry::first_migration();
    let history = qualified(schema, registry::HISTORY_TABLE);
    let now = crate::engine::plan::refinery_now();
    let recorded = |version: i32, name: &str, checksum: u64| {
        format!(
            "INSERT INTO {history} (version, name, applied_on, checksum) VALUES ({version}, {}, {}, {});\n",
            crate::engine::plan::literal(name),
            crate::engine::plan::literal(&now),
            crate::engine::plan::literal(&checksum.to_string()),
        )
    };
    sql.push_str(&format!(
        "{};\n",
        crate::engine::plan::history_table_ddl(&history)
    ));
    sql.push_str(&recorded(1, &name, v1));
    sql.push_str(&format!("SET LOCAL search_path TO {};\n", quote(schema)));
    for (version, name, checksum, migration) in registry::later_migrations() {
        sql.push_str(migration);
        sql.push_str("\n;\n");
        sql.push_str(&recorded(version, &name, checksum));
    }
    sql.push_str(if dry_run { "ROLLBACK" } else { "COMMIT" });
    if let Err(e) = client.batch_execute(&sql).await {
        let _ = client.batch_execute("ROLLBACK").await;
        let e = query_error(&format!(
            "upgrading the original tenants table in schema {}",
            quote(schema)
        ))(e);
        let how = if dry_run {
            "the dry run rehearsed the upgrade in a transaction it rolled back, and the adoption would fail the same way"
        } else {
            "the upgrade is one transaction"
        };
        return Err(Error::failed(format!("{e}; nothing was changed ({how})")));
    }
    if !dry_run {
        registry::init(client, schema).await?;
    }
    Ok(report)
}

/// Refuses (exit 3, before anything changes, in a dry run too) an original table
/// holding rows tenantctl could not register or would register wrongly: a missing id,
/// domain, name or schema name; an id, domain, schema name or API key that two rows
/// share; a schema name tenantctl may not give a tenant (`public`,
/// `information_schema`, `pg_*`, the registry schema, or longer than PostgreSQL's 63
/// bytes, which two tenants could then share).
async fn refuse_unusable_rows(client: &Client, t: &str, schema: &str) -> Result<(), Error> {
    let doing = "reading the tenants table";
    let listed = |rows: Vec<String>| {
        let mut shown: Vec<String> = rows.iter().take(10).cloned().collect();
        if rows.len() > 10 {
            shown.push(format!("and {} more", rows.len() - 10));
        }
        shown.join(", ")
    };
    // Each such row is named by the first of its id, domain, schema name and name that it
    // has, else by its place in the table (ctid), and the query that shows them is given.
    let incomplete = "id IS NULL OR domain IS NULL OR domain::text = '' \
                      OR tenant_name IS NULL OR schema_name IS NULL OR schema_name::text = ''";
    let rows = client
        .query(
            &format!(
                "SELECT id::text, domain::text, schema_name::text, tenant_name::text, ctid::text, \
                        count(*) OVER () \
                 FROM {t} WHERE {incomplete} ORDER BY id, ctid LIMIT 10"
            ),
            &[],
        )
        .await
        .map_err(query_error(doing))?;
    let total = rows
        .first()
        .and_then(|r| r.try_get::<_, i64>(5).ok())
        .unwrap_or(0);
    let mut missing: Vec<String> = rows
        .iter()
        .map(|r| {
            let col = |i: usize| {
                r.try_get::<_, Option<String>>(i)
                    .ok()
                    .flatten()
                    .filter(|v| !v.is_empty())
            };
            match (col(0), col(1), col(2), col(3)) {
                (Some(id), ..) => format!("id {id}"),
                (None, Some(d), ..) => format!("id NULL, domain {}", crate::ident::shown(&d)),
                (None, None, Some(s), _) => format!("id NULL, schema {}", crate::ident::shown(&s)),
                (None, None, None, Some(n)) => format!("id NULL, name {}", crate::ident::shown(&n)),
                (None, None, None, None) => {
                    format!("id NULL at ctid {}", col(4).unwrap_or_default())
                }
            }
        })
        .collect();
    if total > 10 {
        missing.push(format!("and {} more", total - 10));
    }
    if !missing.is_empty() {
        return Err(Error::setup(format!(
            "the original tenants table has rows without a domain, a name, a schema name or an id ({}; `SELECT ctid, * FROM {t} WHERE {incomplete}` shows them); give them one (or delete them), then adopt again; nothing was changed",
            missing.join(", ")
        )));
    }
    let mut shared = Vec::new();
    for (column, what) in [
        ("id::text", "id"),
        ("domain::text", "domain"),
        ("schema_name::text", "schema name"),
    ] {
        for v in texts(
            client,
            &format!(
                "SELECT {column} FROM {t} GROUP BY {column} HAVING count(*) > 1 ORDER BY 1 LIMIT 11"
            ),
            doing,
        )
        .await?
        {
            shared.push(format!("{what} {}", crate::ident::shown(&v)));
        }
    }
    // Keys are never shown: the rows that share one are named by id.
    for ids in texts(
        client,
        &format!(
            "SELECT string_agg(id::text, ' and ' ORDER BY id) FROM {t} \
             WHERE api_key IS NOT NULL AND api_key::text <> '' \
             GROUP BY api_key HAVING count(*) > 1 ORDER BY 1 LIMIT 11"
        ),
        doing,
    )
    .await?
    {
        shared.push(format!("the API key of ids {ids}"));
    }
    if !shared.is_empty() {
        return Err(Error::setup(format!(
            "the original tenants table has values that several rows share, which tenantctl keeps unique: {}; make each row's value its own (or delete the duplicates), then adopt again; nothing was changed",
            listed(shared)
        )));
    }
    let reserved = texts(
        client,
        &format!(
            "SELECT DISTINCT schema_name::text FROM {t} \
             WHERE schema_name::text IN ('public', 'information_schema', $1) \
                OR schema_name::text LIKE 'pg\\_%' OR octet_length(schema_name::text) > 63 \
             ORDER BY 1 LIMIT 11"
        )
        .replace("$1", &crate::engine::plan::literal(schema)),
        doing,
    )
    .await?;
    if !reserved.is_empty() {
        let names: Vec<String> = reserved.iter().map(|s| crate::ident::shown(s)).collect();
        return Err(Error::setup(format!(
            "the original tenants table gives tenants schemas tenantctl may not give a tenant ({}): public, information_schema, pg_*, the registry schema and names longer than 63 bytes are refused; register the tenant's schema under another name, then adopt again; nothing was changed",
            listed(names)
        )));
    }
    Ok(())
}

/// Whether `table` has a unique index (or constraint) on exactly `column`.
async fn unique_on(client: &Client, table: &str, column: &str) -> Result<bool, Error> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index x \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0] \
             WHERE x.indrelid = pg_catalog.to_regclass($1) AND x.indisunique AND x.indnatts = 1 \
               AND x.indpred IS NULL AND x.indexprs IS NULL AND a.attname = $2)",
            &[&table, &column],
        )
        .await
        .map_err(query_error("reading the tenants table's indexes"))?
        .get(0))
}

/// One tenant's history, as adoption found it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Found {
    /// The tenant's registry id (`null` for an unregistered schema).
    pub tenant_id: Option<i64>,
    /// The tenant's domain (`null` for an unregistered schema).
    pub domain: Option<String>,
    /// Its schema.
    pub schema_name: String,
    /// The Alembic revisions in its `alembic_version` (several: a branch).
    pub alembic_revisions: Vec<String>,
    /// The tenantctl version they map to.
    pub version: Option<i32>,
    /// What adoption did or would do, or why it left the schema alone.
    pub outcome: String,
}

/// What `adopt alembic` did.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Adoption {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// The registry.
    pub registry: RegistryAdoption,
    /// Tenants stamped (or that would be).
    pub stamped: Vec<Found>,
    /// Tenants already carrying a tenantctl history at the mapped version or past it
    /// (adopted earlier, upgraded since).
    pub already: Vec<Found>,
    /// Schemas with an `alembic_version` that no tenant is registered for.
    pub unregistered_schemas: Vec<Found>,
    /// Registered tenants whose schema does not exist.
    pub missing_schemas: Vec<Found>,
    /// Revisions the map does not name.
    pub unmapped: Vec<Found>,
    /// Several rows in `alembic_version` (Alembic branches).
    pub branches: Vec<Found>,
    /// Anything else left alone (no `alembic_version`, a tenantctl history at another
    /// version, a stamp that failed), with why.
    pub left_alone: Vec<Found>,
    /// The shared schema of each server that has an `alembic_version` in it (and the
    /// registry's server's when the map file has a `[shared]` table).
    pub shared: Vec<SharedFound>,
    /// The schemas other than their own whose objects the tenants use.
    pub depends_on_schemas: Vec<SchemaDependency>,
    /// The `tenants.extra_search_path` the tenants need (the configured one and the
    /// schemas it lacks); `null` when it lacks none.
    pub extra_search_path: Option<Vec<String>>,
    /// One sentence.
    pub message: String,
}

impl Adoption {
    /// Whether every registered tenant was adopted (or already was).
    pub fn complete(&self) -> bool {
        self.missing_schemas.is_empty()
            && self.unmapped.is_empty()
            && self.branches.is_empty()
            && self.left_alone.is_empty()
            && self.unregistered_schemas.is_empty()
            && self.shared.iter().all(|s| s.status != "left_alone")
    }

    /// Sets [`Adoption::extra_search_path`] from the dependencies found and the
    /// configured `extra_search_path`, and writes the message.
    pub fn finish(&mut self, configured: &[String]) {
        let missing: Vec<&SchemaDependency> = self
            .depends_on_schemas
            .iter()
            .filter(|d| !d.configured)
            .collect();
        self.extra_search_path = (!missing.is_empty()).then(|| {
            configured
                .iter()
                .cloned()
                .chain(missing.iter().map(|d| d.schema.clone()))
                .collect()
        });
        let dry_run = self.dry_run;
        let verb = if dry_run { "would stamp" } else { "stamped" };
        let left = self.missing_schemas.len()
            + self.unmapped.len()
            + self.branches.len()
            + self.left_alone.len()
            + self.unregistered_schemas.len();
        let shared = match self.shared.len() {
            0 => String::new(),
            _ => {
                let count =
                    |status: &str| self.shared.iter().filter(|s| s.status == status).count();
                format!(
                    "shared schema: {verb} {}, {} already adopted, {} left alone; ",
                    count("stamped"),
                    count("already"),
                    count("left_alone")
                )
            }
        };
        let search_path = match &self.extra_search_path {
            Some(path) => format!(
                "; the tenants use objects of {} outside their schemas: add `extra_search_path = {}` to the config's [tenants] table",
                missing
                    .iter()
                    .map(|d| format!("schema {}", quote(&d.schema)))
                    .collect::<Vec<_>>()
                    .join(", "),
                search_path_toml(path)
            ),
            None => String::new(),
        };
        self.message = format!(
            "{}{shared}{verb} {} tenants, {} already adopted, {left} left alone ({} unregistered schemas, {} missing schemas, {} unmapped revisions, {} branches, {} other){}{search_path}",
            match (self.registry.found, dry_run) {
                ("original", true) => format!(
                    "would upgrade the original tenants table ({} columns added, {} API keys hashed); ",
                    self.registry.columns_added.len(),
                    self.registry.keys_hashed
                ),
                ("original", false) => format!(
                    "upgraded the original tenants table ({} columns added, {} API keys hashed); ",
                    self.registry.columns_added.len(),
                    self.registry.keys_hashed
                ),
                _ => String::new(),
            },
            self.stamped.len(),
            self.already.len(),
            self.unregistered_schemas.len(),
            self.missing_schemas.len(),
            self.unmapped.len(),
            self.branches.len(),
            self.left_alone.len(),
            if dry_run { "; nothing was changed" } else { "" }
        );
    }
}

/// `extra_search_path`'s value as the config file writes it, e.g. `["public"]`.
pub fn search_path_toml(path: &[String]) -> String {
    toml::Value::Array(path.iter().cloned().map(toml::Value::String).collect()).to_string()
}

/// The `alembic_version` rows of every schema of `client`'s database that has one
/// (`None`: a NULL `version_num`, which Alembic never writes).
pub async fn alembic_versions(
    client: &Client,
) -> Result<BTreeMap<String, Vec<Option<String>>>, Error> {
    let schemas = texts(
        client,
        "SELECT n.nspname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relname = 'alembic_version' AND c.relkind = 'r' ORDER BY 1",
        "looking for alembic_version tables",
    )
    .await?;
    let mut out = BTreeMap::new();
    for s in schemas {
        let rows = client
            .query(
                &format!(
                    "SELECT version_num::text FROM {} ORDER BY 1",
                    qualified(&s, "alembic_version")
                ),
                &[],
            )
            .await
            .map_err(query_error(&format!(
                "reading {}",
                qualified(&s, "alembic_version")
            )))?;
        out.insert(
            s,
            rows.iter()
                .map(|r| r.try_get::<_, Option<String>>(0).ok().flatten())
                .collect(),
        );
    }
    Ok(out)
}

/// One server as adoption reads it: each schema's `alembic_version` rows, and every
/// schema.
type ServerView = (BTreeMap<String, Vec<Option<String>>>, Vec<String>);

/// The revisions of `alembic_version` rows, without the NULLs.
fn revisions(rows: &[Option<String>]) -> Vec<String> {
    rows.iter().flatten().cloned().collect()
}

/// A registered tenant as adoption needs it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its registry id.
    pub id: i64,
    /// Its domain.
    pub domain: String,
    /// Its schema.
    pub schema_name: String,
    /// Its server.
    pub server: String,
}

/// The registered tenants: from a tenantctl registry, or (a dry run before the original
/// table is upgraded) straight from the original table.
pub async fn listed(client: &Client, schema: &str, original: bool) -> Result<Vec<Listed>, Error> {
    if original {
        let rows = client
            .query(
                &format!(
                    "SELECT id::bigint, domain::text, schema_name::text FROM {} ORDER BY id",
                    qualified(schema, "tenants")
                ),
                &[],
            )
            .await
            .map_err(query_error("reading the original tenants table"))?;
        return Ok(rows
            .iter()
            .map(|r| Listed {
                id: r.get(0),
                domain: r.get(1),
                schema_name: r.get(2),
                server: crate::config::DEFAULT_SERVER.to_string(),
            })
            .collect());
    }
    let registry = Registry::open(client, schema).await?;
    Ok(registry
        .list(None, None)
        .await?
        .into_iter()
        .map(|t| Listed {
            id: t.id,
            domain: t.domain,
            schema_name: t.schema_name,
            server: t.server,
        })
        .collect())
}

/// Maps every registered tenant's Alembic revision and stamps it (unless `dry_run`).
/// `stamp` stamps one tenant (by id) at a version under its lock and returns an error
/// message when that failed.
#[allow(clippy::too_many_arguments)]
pub async fn adopt_histories(
    tenants: &[Listed],
    servers: &crate::registry::servers::Servers,
    map: &RevisionMap,
    settings: &crate::config::Settings,
    registry_report: RegistryAdoption,
    dry_run: bool,
    stamp: impl AsyncFn(i64, i32) -> Option<String>,
) -> Result<Adoption, Error> {
    let mut a = Adoption {
        dry_run,
        registry: registry_report,
        stamped: Vec::new(),
        already: Vec::new(),
        unregistered_schemas: Vec::new(),
        missing_schemas: Vec::new(),
        unmapped: Vec::new(),
        branches: Vec::new(),
        left_alone: Vec::new(),
        shared: Vec::new(),
        depends_on_schemas: Vec::new(),
        extra_search_path: None,
        message: String::new(),
    };
    let history_table = settings.history_table.as_str();
    let shared_schema = settings.shared.as_ref().map(|s| s.schema.as_str());
    // Every server's alembic_version tables and schemas, read once.
    let mut per_server: BTreeMap<String, ServerView> = BTreeMap::new();
    for (server, target) in servers.iter() {
        let c = target.connect().await?;
        let versions = alembic_versions(&c).await?;
        let schemas = texts(
            &c,
            "SELECT nspname::text FROM pg_catalog.pg_namespace",
            "listing schemas",
        )
        .await?;
        per_server.insert(server.name.clone(), (versions, schemas));
    }
    let registered: std::collections::BTreeSet<(&str, &str)> = tenants
        .iter()
        .map(|t| (t.server.as_str(), t.schema_name.as_str()))
        .collect();
    for (server, (versions, _)) in &per_server {
        for (schema, revs) in versions {
            // The shared schema's own history is adopt_shared's.
            if Some(schema.as_str()) == shared_schema {
                continue;
            }
            if !registered.contains(&(server.as_str(), schema.as_str())) {
                let outcome = if *schema == settings.registry_schema || schema == "public" {
                    format!(
                        "on server {server}: not a tenant's schema; to adopt it as the shared schema, give its migrations a directory (migrations/shared, or [shared] dir in the config) and map its revision in the map file's [shared] table, then run this again; left alone"
                    )
                } else {
                    format!(
                        "on server {server}: no tenant is registered for it; left alone (register it with `tenantctl tenant create DOMAIN --schema {schema} --adopt`, then run this again)"
                    )
                };
                a.unregistered_schemas.push(Found {
                    tenant_id: None,
                    domain: None,
                    schema_name: schema.clone(),
                    alembic_revisions: revisions(revs),
                    version: None,
                    outcome,
                });
            }
        }
    }
    for t in tenants {
        let (versions, schemas) = match per_server.get(&t.server) {
            Some(v) => v,
            None => {
                a.left_alone
                    .push(found(t, vec![], None, "its server is not configured"));
                continue;
            }
        };
        if !schemas.contains(&t.schema_name) {
            a.missing_schemas.push(found(
                t,
                vec![],
                None,
                "its schema does not exist; left alone",
            ));
            continue;
        }
        let rows = versions.get(&t.schema_name).cloned().unwrap_or_default();
        let revs = revisions(&rows);
        if revs.len() < rows.len() {
            a.left_alone.push(found(
                t,
                revs,
                None,
                &format!(
                    "its alembic_version has a row whose version_num is NULL, which Alembic never writes (see `SELECT * FROM {}`): put the revision the schema is at there (or delete the row), then run this again; left alone",
                    qualified(&t.schema_name, "alembic_version")
                ),
            ));
            continue;
        }
        let on_server = servers.target(&t.server)?.connect().await?;
        let state = crate::registry::state::observe(
            &on_server,
            std::slice::from_ref(&t.schema_name),
            history_table,
        )
        .await?
        .remove(&t.schema_name);
        let current = state.as_ref().and_then(|s| s.current());
        let has_history = state.as_ref().is_some_and(|s| s.history_exists);
        if revs.is_empty() {
            let why = if has_history {
                format!(
                    "no alembic_version; it already has a tenantctl history at revision {}",
                    crate::show::revision(current)
                )
            } else {
                "no alembic_version table (or an empty one); left alone".to_string()
            };
            if has_history {
                a.already.push(found(t, revs, current, &why));
            } else {
                a.left_alone.push(found(t, revs, None, &why));
            }
            continue;
        }
        if revs.len() > 1 {
            a.branches.push(found(
                t,
                revs,
                None,
                "several Alembic heads (a branch); merge them with `alembic merge`, upgrade, then run this again; left alone",
            ));
            continue;
        }
        let Some(&version) = map.tenants.get(&revs[0]) else {
            a.unmapped.push(found(
                t,
                revs.clone(),
                None,
                &format!(
                    "revision {} is not in the map file; add it, then run this again; left alone",
                    revs[0]
                ),
            ));
            continue;
        };
        if has_history {
            if current == Some(version) || (version == 0 && current.is_none()) {
                a.already.push(found(
                    t,
                    revs,
                    Some(version),
                    "already stamped at this version",
                ));
            } else if let Some(c) = current.filter(|c| *c > version) {
                // Adopted earlier and upgraded by tenantctl since: alembic_version is stale.
                a.already.push(found(
                    t,
                    revs,
                    Some(version),
                    &format!(
                        "already adopted: its tenantctl history is at revision {c}, past the mapped version {version}"
                    ),
                ));
            } else {
                a.left_alone.push(found(
                    t,
                    revs,
                    Some(version),
                    &format!(
                        "it already has a tenantctl history at revision {}, not {version}; left alone",
                        crate::show::revision(current)
                    ),
                ));
            }
            continue;
        }
        if dry_run {
            a.stamped.push(found(
                t,
                revs,
                Some(version),
                &format!("would stamp version {version}"),
            ));
            continue;
        }
        match stamp(t.id, version).await {
            None => a.stamped.push(found(
                t,
                revs,
                Some(version),
                &format!("stamped version {version}"),
            )),
            Some(e) => a.left_alone.push(found(
                t,
                revs,
                Some(version),
                &format!("stamping failed: {e}"),
            )),
        }
    }
    Ok(a)
}

fn found(t: &Listed, revs: Vec<String>, version: Option<i32>, outcome: &str) -> Found {
    Found {
        tenant_id: Some(t.id),
        domain: Some(t.domain.clone()),
        schema_name: t.schema_name.clone(),
        alembic_revisions: revs,
        version,
        outcome: outcome.to_string(),
    }
}

/// How many users of one object the report names; the rest are counted.
pub const USERS_SHOWN: usize = 5;

/// An object of another schema that the tenants use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct UsedObject {
    /// It as PostgreSQL describes it, e.g. `function public.uuid_generate_v4()`.
    pub object: String,
    /// The extension it belongs to, if it does.
    pub extension: Option<String>,
    /// Up to [`USERS_SHOWN`] of what uses it: a tenant's object (e.g. `default value for
    /// column id of table tenant_a."user"`) or a migration file that names it.
    pub used_by: Vec<String>,
    /// How many uses were found in all.
    pub uses: usize,
}

/// A schema other than the tenants' own whose objects the tenants use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SchemaDependency {
    /// The schema.
    pub schema: String,
    /// What the tenants use from it.
    pub objects: Vec<UsedObject>,
    /// Whether `tenants.extra_search_path` lists it (the migrations find its objects).
    pub configured: bool,
}

/// What the tenants use from other schemas, on every server: what their objects depend
/// on (`pg_depend`: a column default calling an extension's function, a column of an
/// extension's type, a foreign key to a shared table, ...), and the functions and
/// extension types of other schemas that the migration files call by a bare name (a
/// tenant behind head reaches them in a later migration, a new tenant on creation). Each
/// schema is marked configured when `tenants.extra_search_path` lists it. Reads only.
pub async fn schema_dependencies(
    cx: &crate::app::context::Context,
    tenants: &[Listed],
    set: &MigrationSet,
) -> Result<Vec<SchemaDependency>, Error> {
    let mut by_server: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for t in tenants {
        by_server
            .entry(t.server.as_str())
            .or_default()
            .push(t.schema_name.clone());
    }
    let files = names_in_files(set);
    // schema -> object -> (extension, the first users, every user)
    type Users = (
        Option<String>,
        Vec<String>,
        std::collections::HashSet<String>,
    );
    let mut found: BTreeMap<String, BTreeMap<String, Users>> = BTreeMap::new();
    let mut add = |schema: String, object: String, extension: Option<String>, user: String| {
        let entry = found
            .entry(schema)
            .or_default()
            .entry(object)
            .or_insert_with(|| (extension, Vec::new(), Default::default()));
        if entry.2.insert(user.clone()) && entry.1.len() < USERS_SHOWN {
            entry.1.push(user);
        }
    };
    for (server, target) in cx.servers.iter() {
        let schemas = by_server
            .get(server.name.as_str())
            .cloned()
            .unwrap_or_default();
        if schemas.is_empty() && server.name != crate::config::DEFAULT_SERVER {
            continue;
        }
        let mut client = target.connect().await?;
        // The files first: they say which migration needs the schema.
        for r in crate::engine::dependents::reachable_outside(&mut client, &schemas).await? {
            for (file, calls, words) in &files {
                let named = if r.function {
                    calls.contains(&r.name)
                } else {
                    words.contains(&r.name)
                };
                if named {
                    add(
                        r.schema.clone(),
                        r.object.clone(),
                        r.extension.clone(),
                        file.clone(),
                    );
                }
            }
        }
        for u in crate::engine::dependents::used_outside(&mut client, &schemas).await? {
            add(u.schema, u.object, u.extension, u.used_by);
        }
    }
    Ok(found
        .into_iter()
        .map(|(schema, objects)| SchemaDependency {
            configured: cx.settings.extra_search_path.contains(&schema),
            schema,
            objects: objects
                .into_iter()
                .map(|(object, (extension, shown, all))| UsedObject {
                    object,
                    extension,
                    uses: all.len(),
                    used_by: shown,
                })
                .collect(),
        })
        .collect())
}

/// Each migration file (up and down) of `set` with the bare names it calls as functions
/// and every bare name it has (see [`bare_names`]).
fn names_in_files(
    set: &MigrationSet,
) -> Vec<(
    String,
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
)> {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for f in &set.files {
        let (calls, words) = bare_names(&f.up_sql);
        out.push((name(&f.up_path), calls, words));
        if let (Some(path), Some(sql)) = (&f.down_path, &f.down_sql) {
            let (calls, words) = bare_names(sql);
            out.push((name(path), calls, words));
        }
    }
    out
}

/// The unqualified, unquoted names in `sql` (lower case): those followed by `(` (a
/// call; not a name that a keyword such as `TABLE`, `INTO`, `ON`, `REFERENCES` or
/// `FUNCTION` introduces, whose parentheses are columns or parameters), and all of them.
/// Comments, string literals and quoted identifiers are skipped; a name after `.` is
/// qualified and left out.
pub fn bare_names(
    sql: &str,
) -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let mut calls = std::collections::BTreeSet::new();
    let mut words = std::collections::BTreeSet::new();
    let b = sql.as_bytes();
    let mut i = 0;
    // The last significant byte before the current one (not whitespace), and the last
    // word.
    let mut before = b' ';
    let mut last_word = String::new();
    const NOT_CALLS: &[&str] = &[
        "table",
        "into",
        "on",
        "references",
        "exists",
        "index",
        "view",
        "type",
        "function",
        "procedure",
        "aggregate",
        "only",
    ];
    while i < b.len() {
        let c = b[i];
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                i += 1;
            }
            i += 2;
            before = b' ';
            continue;
        }
        if c == b'\'' || c == b'"' {
            i += 1;
            while i < b.len() {
                if b[i] == c {
                    if b.get(i + 1) == Some(&c) {
                        i += 2;
                        continue;
                    }
                    break;
                }
                i += 1;
            }
            i += 1;
            before = c;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            let start = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            let word = sql[start..i].to_ascii_lowercase();
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if before != b'.' {
                if b.get(j) == Some(&b'(') && !NOT_CALLS.contains(&last_word.as_str()) {
                    calls.insert(word.clone());
                }
                words.insert(word.clone());
            }
            last_word = word;
            before = b'a';
            continue;
        }
        if !c.is_ascii_whitespace() {
            before = c;
        }
        i += 1;
    }
    (calls, words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_are_unqualified_unquoted_and_outside_comments_and_literals() {
        let (calls, words) = bare_names(
            "-- uuid_generate_v1() in a comment\n\
             UPDATE \"user\" SET new_id = uuid_generate_v4 (), b = public.gen_x(), \
             c = 'lit_call()' /* hidden() */, d = \"quoted\"(1), e = 'it''s(' || Upper(x);\n\
             CREATE TABLE t (e citext); INSERT INTO t (e) VALUES (lower('A')); \
             CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql AS 'SELECT 1';",
        );
        for call in ["lower", "upper", "uuid_generate_v4"] {
            assert!(calls.contains(call), "{call}: {calls:?}");
        }
        // Tables and a function being defined are not calls.
        for not_called in ["t", "f", "citext", "gen_x"] {
            assert!(!calls.contains(not_called), "{not_called}: {calls:?}");
        }
        assert!(words.contains("citext") && words.contains("update"));
        for absent in [
            "gen_x",
            "lit_call",
            "hidden",
            "quoted",
            "user",
            "uuid_generate_v1",
        ] {
            assert!(!words.contains(absent), "{absent}: {words:?}");
        }
    }
}
