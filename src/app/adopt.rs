//! Taking over a fleet run by the original FastAPI + Alembic service (README "Adopting a
//! running Alembic system").
//!
//! That service keeps `tenants` (created by SQLAlchemy from its model, API keys in plain
//! text in `api_key`) and an `alembic_version` table in each tenant schema. Adoption:
//! 1. the registry: the original table is upgraded in place, in one transaction: missing
//!    columns added, every plain API key hashed (and the plain column emptied), ids kept,
//!    everything else in the table left alone; then the registry's own migrations run;
//! 2. the histories: each registered tenant's `alembic_version` is mapped to a tenantctl
//!    version by the map file, and that version is stamped (recorded as applied with the
//!    local files' checksums) in the tenant's locked session.
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

/// The map file: Alembic revision id -> tenantctl version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionMap(pub BTreeMap<String, i32>);

impl RevisionMap {
    /// Reads and checks a map file (`"3da2eb3bee79" = 6` per line, TOML): exit 3 for an
    /// unreadable or malformed file, a revision id that is not an Alembic id, or a version
    /// the migrations directory lacks.
    pub fn load(path: &Path, set: &MigrationSet) -> Result<RevisionMap, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::setup(format!("cannot read the map file {}: {e}", path.display()))
        })?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            Error::setup(format!(
                "the map file {} is not valid TOML: {}",
                path.display(),
                e.message()
            ))
        })?;
        let mut map = BTreeMap::new();
        for (rev, v) in table {
            if rev.is_empty()
                || rev.len() > 64
                || !rev.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(Error::setup(format!(
                    "map file {}: {} is not an Alembic revision id (letters, digits and '_')",
                    path.display(),
                    crate::ident::shown(&rev)
                )));
            }
            let version = v
                .as_integer()
                .and_then(|i| i32::try_from(i).ok())
                .filter(|i| *i >= 0)
                .ok_or_else(|| {
                    Error::setup(format!(
                        "map file {}: revision {rev} must map to a tenantctl version (a whole number), e.g. \"{rev}\" = 6",
                        path.display()
                    ))
                })?;
            if version > 0 && set.get(version).is_none() {
                return Err(Error::setup(format!(
                    "map file {}: revision {rev} maps to version {version}, which is not in {}",
                    path.display(),
                    set.dir.display()
                )));
            }
            map.insert(rev, version);
        }
        Ok(RevisionMap(map))
    }
}

/// What adopting the registry did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
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
/// (see [`adopt_registry`]), then each tenant's `alembic_version` mapped through the
/// revision map file `map` and stamped (see [`adopt_histories`]), each stamp a run of its
/// own in the ledger. With `dry_run`, says what would happen and changes nothing.
pub async fn adopt_alembic(
    cx: &crate::app::context::Context,
    events: &crate::engine::scheduler::Events,
    map: &Path,
    dry_run: bool,
) -> Result<Adoption, Error> {
    let set = cx.migrations()?;
    let map = RevisionMap::load(map, &set)?;
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
    adopt_histories(
        &tenants,
        &cx.servers,
        &map,
        &cx.settings.history_table,
        reg,
        dry_run,
        stamp,
    )
    .await
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
                api_key_prefix = left(api_key, 10) \
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
#[derive(Debug, Clone, Serialize)]
pub struct Found {
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
#[derive(Debug, Clone, Serialize)]
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
    }
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
    history_table: &str,
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
        message: String::new(),
    };
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
            if !registered.contains(&(server.as_str(), schema.as_str())) {
                a.unregistered_schemas.push(Found {
                    domain: None,
                    schema_name: schema.clone(),
                    alembic_revisions: revisions(revs),
                    version: None,
                    outcome: format!(
                        "on server {server}: no tenant is registered for it; left alone (register it with `tenantctl tenant create DOMAIN --schema {schema} --adopt`, then run this again)"
                    ),
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
        let Some(&version) = map.0.get(&revs[0]) else {
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
    let verb = if dry_run { "would stamp" } else { "stamped" };
    let left = a.missing_schemas.len()
        + a.unmapped.len()
        + a.branches.len()
        + a.left_alone.len()
        + a.unregistered_schemas.len();
    a.message = format!(
        "{}{verb} {} tenants, {} already adopted, {left} left alone ({} unregistered schemas, {} missing schemas, {} unmapped revisions, {} branches, {} other){}",
        match (a.registry.found, dry_run) {
            ("original", true) => format!(
                "would upgrade the original tenants table ({} columns added, {} API keys hashed); ",
                a.registry.columns_added.len(),
                a.registry.keys_hashed
            ),
            ("original", false) => format!(
                "upgraded the original tenants table ({} columns added, {} API keys hashed); ",
                a.registry.columns_added.len(),
                a.registry.keys_hashed
            ),
            _ => String::new(),
        },
        a.stamped.len(),
        a.already.len(),
        a.unregistered_schemas.len(),
        a.missing_schemas.len(),
        a.unmapped.len(),
        a.branches.len(),
        a.left_alone.len(),
        if dry_run { "; nothing was changed" } else { "" }
    );
    Ok(a)
}

fn found(t: &Listed, revs: Vec<String>, version: Option<i32>, outcome: &str) -> Found {
    Found {
        domain: Some(t.domain.clone()),
        schema_name: t.schema_name.clone(),
        alembic_revisions: revs,
        version,
        outcome: outcome.to_string(),
    }
}
