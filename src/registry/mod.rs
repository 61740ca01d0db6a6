//! The tenant registry: the `tenants` table, its embedded migrations, and every query
//! that reads or writes it.
//!
//! All SQL here quotes the registry schema and binds every value. The registry's cached
//! columns (`schema_provisioned`, `current_revision`, ...) are written from what was
//! observed in the database after each operation, never from what was intended.

pub mod browse;
pub mod conn;
pub mod inspect;
pub mod servers;
pub mod state;
pub mod versions;

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Row};

use crate::error::Error;
use crate::ident::{self, qualified, quote};
use crate::pg::db::{self, query_error, LockSpace};
use crate::timestamp::{self, Timestamp};

/// Marks the error raised when a tenant's row disappeared during an operation.
pub const REMOVED: &str = "tenant dropped";

/// The registry's own history table, in the registry schema.
pub const HISTORY_TABLE: &str = "tenantctl_registry_history";

/// Migrations that create and upgrade the registry, embedded in the binary.
const MIGRATIONS: &[(&str, &str)] = &[
    ("V1__tenants", include_str!("migrations/V1__tenants.sql")),
    (
        "V2__tenant_events",
        include_str!("migrations/V2__tenant_events.sql"),
    ),
    (
        "V3__tenant_server",
        include_str!("migrations/V3__tenant_server.sql"),
    ),
    (
        "V4__tenant_moves",
        include_str!("migrations/V4__tenant_moves.sql"),
    ),
    (
        "V5__tenant_runs",
        include_str!("migrations/V5__tenant_runs.sql"),
    ),
    (
        "V6__refusals_and_move_undo",
        include_str!("migrations/V6__refusals_and_move_undo.sql"),
    ),
];

/// The registry's first migration (the `tenants` table): its name and refinery's
/// checksum, for a registry adopted from another tool's table.
pub fn first_migration() -> (String, u64) {
    let (name, sql) = MIGRATIONS[0];
    let m = refinery::Migration::unapplied(name, sql)
        .expect("embedded registry migration names are valid");
    (m.name().to_string(), m.checksum())
}

/// The registry's migrations after the first, each as (version, name, refinery's
/// checksum, SQL), for an adoption that applies them in its own transaction. Their SQL
/// runs with `search_path` set to the registry schema.
pub fn later_migrations() -> Vec<(i32, String, u64, &'static str)> {
    MIGRATIONS[1..]
        .iter()
        .map(|(name, sql)| {
            let m = refinery::Migration::unapplied(name, sql)
                .expect("embedded registry migration names are valid");
            (m.version(), m.name().to_string(), m.checksum(), *sql)
        })
        .collect()
}

/// The registry version this binary needs.
pub fn latest_version() -> i32 {
    MIGRATIONS.len() as i32
}

/// A tenant's lifecycle state in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Registered; no operation on its schema has succeeded yet.
    Pending,
    /// The last operation on its schema succeeded.
    Active,
    /// The last operation on its schema failed; see `last_error`.
    Failed,
}

impl Status {
    /// The value stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Active => "active",
            Status::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Status {
        match s {
            "active" => Status::Active,
            "failed" => Status::Failed,
            _ => Status::Pending,
        }
    }
}

/// One row of the registry, as shown to users (never the key or its hash).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Tenant {
    /// Registry id.
    pub id: i64,
    /// The same as `id`: the key every JSON document names a tenant by.
    pub tenant_id: i64,
    /// Display name.
    pub tenant_name: String,
    /// Unique slug, e.g. `demo-church`.
    pub domain: String,
    /// Contact email.
    pub email: Option<String>,
    /// Free-form type, e.g. `church`.
    pub tenant_type: String,
    /// The tenant's PostgreSQL schema.
    pub schema_name: String,
    /// Whether the schema exists (as last observed).
    pub schema_provisioned: bool,
    /// Whether any migration is applied (as last observed).
    pub migrations_applied: bool,
    /// Highest applied version (as last observed).
    pub current_revision: Option<i32>,
    /// Lifecycle state.
    pub status: Status,
    /// The last operation's error, when it failed.
    pub last_error: Option<String>,
    /// The first characters of the API key, for recognising it.
    pub api_key_prefix: String,
    /// When the tenant was registered (`None`: NULL in the registry).
    pub created_at: Option<Timestamp>,
    /// When the row last changed (`None`: NULL in the registry).
    pub updated_at: Option<Timestamp>,
    /// The server its schema lives on (`default`: the registry's database).
    pub server: String,
}

const COLUMNS: &str = "id, tenant_name, domain, email, tenant_type, schema_name, schema_provisioned, \
     migrations_applied, current_revision, status, last_error, api_key_prefix, created_at, updated_at, server";

impl Tenant {
    /// A registry row. A NULL where tenantctl's registry has NOT NULL (a constraint
    /// dropped by hand, an adopted table an old application still writes to) reads as
    /// empty or false rather than failing the command; a time reads as what is stored
    /// (NULL, `infinity`, a year past 9999), never as another time.
    fn from_row(row: &Row) -> Tenant {
        fn text(row: &Row, c: &str) -> String {
            row.try_get::<_, Option<String>>(c)
                .ok()
                .flatten()
                .unwrap_or_default()
        }
        fn flag(row: &Row, c: &str) -> bool {
            row.try_get::<_, Option<bool>>(c)
                .ok()
                .flatten()
                .unwrap_or(false)
        }
        let id = row.try_get("id").unwrap_or_default();
        Tenant {
            id,
            tenant_id: id,
            tenant_name: text(row, "tenant_name"),
            domain: text(row, "domain"),
            email: row.try_get("email").ok().flatten(),
            tenant_type: text(row, "tenant_type"),
            schema_name: text(row, "schema_name"),
            schema_provisioned: flag(row, "schema_provisioned"),
            migrations_applied: flag(row, "migrations_applied"),
            current_revision: row.try_get("current_revision").ok().flatten(),
            status: Status::parse(&text(row, "status")),
            last_error: row.try_get("last_error").ok().flatten(),
            api_key_prefix: text(row, "api_key_prefix"),
            created_at: timestamp::column(row, "created_at"),
            updated_at: timestamp::column(row, "updated_at"),
            server: row
                .try_get::<_, Option<String>>("server")
                .ok()
                .flatten()
                .unwrap_or_else(|| crate::config::DEFAULT_SERVER.to_string()),
        }
    }
}

/// A handle on the registry in one schema, over one connection.
pub struct Registry<'a> {
    client: &'a Client,
    /// The same connection, for reads (bounded on a connection tenantctl opened).
    reads: &'a dyn db::Reads,
    schema: &'a str,
    tables: Tables,
}

/// What `init` did.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct InitReport {
    /// The registry schema.
    pub schema: String,
    /// Registry versions applied by this run.
    pub applied: Vec<i32>,
    /// The registry version now.
    pub version: i32,
    /// The registry version this tenantctl creates; lower than `version` when a newer
    /// tenantctl has upgraded the registry (it is then left unchanged).
    pub binary_version: i32,
}

impl InitReport {
    /// Whether the registry is newer than this binary (and `init` left it alone).
    pub fn newer(&self) -> bool {
        self.version > self.binary_version
    }
}

/// The columns this binary reads or writes, by table, with the types it needs
/// (`format_type` spelling). A newer registry may add columns; none of these may go.
const NEEDED: &[(&str, &[(&str, &str)])] = &[
    (
        "tenants",
        &[
            ("id", "bigint"),
            ("tenant_name", "text"),
            ("domain", "text"),
            ("email", "text"),
            ("tenant_type", "text"),
            ("schema_name", "text"),
            ("schema_provisioned", "boolean"),
            ("migrations_applied", "boolean"),
            ("current_revision", "integer"),
            ("status", "text"),
            ("last_error", "text"),
            ("api_key_hash", "text"),
            ("api_key_prefix", "text"),
            ("created_at", "timestamp with time zone"),
            ("updated_at", "timestamp with time zone"),
            ("server", "text"),
        ],
    ),
    (
        "tenant_events",
        &[
            ("id", "bigint"),
            ("run_id", "uuid"),
            ("tenant_id", "bigint"),
            ("domain", "text"),
            ("schema_name", "text"),
            ("action", "text"),
            ("from_revision", "integer"),
            ("to_revision", "integer"),
            ("status", "text"),
            ("error", "text"),
            ("started_at", "timestamp with time zone"),
            ("finished_at", "timestamp with time zone"),
            ("db_user", "text"),
            ("client_host", "text"),
            ("client_addr", "text"),
        ],
    ),
    (
        "tenant_moves",
        &[
            ("tenant_id", "bigint"),
            ("from_server", "text"),
            ("to_server", "text"),
            ("schema_name", "text"),
            ("keep_source", "boolean"),
            ("phase", "text"),
        ],
    ),
    (
        "tenant_runs",
        &[
            ("run_id", "uuid"),
            ("command", "text"),
            ("finished_at", "timestamp with time zone"),
            ("result", "text"),
        ],
    ),
    (HISTORY_TABLE, &[("version", "integer")]),
];

/// What one catalog query found of the registry's tables.
#[derive(Debug)]
struct Shape {
    dbname: String,
    /// Tables of [`NEEDED`] that do not exist.
    missing_tables: Vec<&'static str>,
    /// `table.column` that is missing or has another type, with what was found.
    bad_columns: Vec<String>,
}

impl Shape {
    fn has(&self, table: &str) -> bool {
        !self.missing_tables.contains(&table)
    }

    /// Whether the history table can be read for its version.
    fn history_readable(&self) -> bool {
        self.has(HISTORY_TABLE)
            && !self
                .bad_columns
                .iter()
                .any(|c| c.starts_with(&format!("table {HISTORY_TABLE}: ")))
    }

    fn problems(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .missing_tables
            .iter()
            .map(|t| format!("table {t} is missing"))
            .collect();
        out.extend(self.bad_columns.iter().cloned());
        out
    }
}

/// Reads, in one catalog query, which registry tables exist and which of the columns this
/// binary needs are missing or of another type.
async fn shape<C: db::Reads + ?Sized>(client: &C, schema: &str) -> Result<Shape, Error> {
    let mut rels = Vec::new();
    let mut tables = Vec::new();
    let mut columns = Vec::new();
    let mut types = Vec::new();
    for (table, cols) in NEEDED {
        for (col, ty) in *cols {
            rels.push(qualified(schema, table));
            tables.push(table.to_string());
            columns.push(col.to_string());
            types.push(ty.to_string());
        }
    }
    let row = db::read(
        client,
        "looking for the tenant registry",
        client.pg().query_one(
            "SELECT current_database(), \
             ARRAY(SELECT DISTINCT e.tbl FROM unnest($1::text[], $2::text[]) AS e(rel, tbl) \
                   WHERE to_regclass(e.rel) IS NULL), \
             ARRAY(SELECT format('table %I: column %I %s', e.tbl, e.col, \
                          CASE WHEN a.attnum IS NULL THEN 'is missing' \
                          ELSE format('is %s, tenantctl needs %s', format_type(a.atttypid, NULL), e.typ) END) \
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) \
                        WITH ORDINALITY AS e(rel, tbl, col, typ, n) \
                   LEFT JOIN pg_attribute a ON a.attrelid = to_regclass(e.rel) AND a.attname = e.col \
                        AND a.attnum > 0 AND NOT a.attisdropped \
                   WHERE to_regclass(e.rel) IS NOT NULL \
                     AND (a.attnum IS NULL OR format_type(a.atttypid, NULL) <> e.typ) \
                   ORDER BY e.n)",
            &[&rels, &tables, &columns, &types],
        ),
    )
    .await?;
    let missing: Vec<String> = row.get(1);
    Ok(Shape {
        dbname: row.get(0),
        missing_tables: NEEDED
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| missing.iter().any(|m| m == t))
            .collect(),
        bad_columns: row.get(2),
    })
}

/// The registry version recorded in its history table (0 when empty).
async fn recorded_version<C: db::Reads + ?Sized>(client: &C, schema: &str) -> Result<i32, Error> {
    let sql = format!(
        "SELECT max(version) FROM {}",
        qualified(schema, HISTORY_TABLE)
    );
    let version: Option<i32> = db::read(
        client,
        "reading the registry version",
        client.pg().query_one(&sql, &[]),
    )
    .await?
    .get(0);
    Ok(version.unwrap_or(0))
}

/// The error for the original service's table where the registry should be: it is not
/// damaged, it is to be adopted.
fn original_table(schema: &str) -> Error {
    Error::setup(format!(
        "schema {} holds the original service's tenants table (API keys in plain text, no tenantctl history); `tenantctl adopt alembic --map FILE` takes it over (see the book's \"Adopting a running Alembic system\"); nothing was changed",
        quote(schema)
    ))
}

/// The error for a registry whose tables were changed outside tenantctl.
fn damaged(schema: &str, version: Option<i32>, problems: &[String]) -> Error {
    let at = version.map_or(String::new(), |v| format!(" (at version {v})"));
    Error::setup(format!(
        "the tenant registry in schema {}{at} is damaged: {}. tenantctl cannot work with it: \
         restore the registry from a backup (or put back what is missing as the registry \
         migrations define it), then run `tenantctl init` to check it",
        quote(schema),
        problems.join("; ")
    ))
}

/// Creates or upgrades the registry in `schema`; safe to run at any time and concurrently.
pub async fn init(client: &mut Client, schema: &str) -> Result<InitReport, Error> {
    let (k1, k2) = db::lock_key(LockSpace::Registry, schema);
    client
        .execute("SELECT pg_advisory_lock($1, $2)", &[&k1, &k2])
        .await
        .map_err(query_error("taking the registry lock"))?;
    let result = init_locked(client, schema).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1, $2)", &[&k1, &k2])
        .await;
    result
}

async fn init_locked(client: &mut Client, schema: &str) -> Result<InitReport, Error> {
    // Not `CREATE SCHEMA IF NOT EXISTS`, which needs CREATE on the database even when
    // the schema is there.
    client
        .batch_execute(&format!(
            "DO $tenantctl$ BEGIN IF pg_catalog.to_regnamespace({lit}) IS NULL THEN CREATE SCHEMA {s}; END IF; END $tenantctl$; SET search_path TO {s}",
            s = quote(schema),
            lit = crate::ident::literal(&quote(schema)),
        ))
        .await
        .map_err(query_error(&format!(
            "creating registry schema {}",
            quote(schema)
        )))?;
    let found = shape(client, schema).await?;
    let before = if found.history_readable() {
        Some(recorded_version(client, schema).await?)
    } else {
        None
    };
    if before.is_none() && is_original(client, schema).await? {
        return Err(original_table(schema));
    }
    if before.is_none() && (found.has("tenants") || found.has(HISTORY_TABLE)) {
        // A registry without a readable history: not one init can build on.
        return Err(damaged(schema, None, &found.problems()));
    }
    if let Some(version) = before.filter(|v| *v > latest_version()) {
        // A newer tenantctl upgraded the registry (a rolling deploy): leave it alone,
        // as long as what this binary needs is still there.
        if !found.problems().is_empty() {
            return Err(damaged(schema, Some(version), &found.problems()));
        }
        client
            .batch_execute("RESET search_path")
            .await
            .map_err(query_error("resetting search_path"))?;
        return Ok(InitReport {
            schema: schema.to_string(),
            applied: Vec::new(),
            version,
            binary_version: latest_version(),
        });
    }
    let migrations: Vec<refinery::Migration> = MIGRATIONS
        .iter()
        .map(|(name, sql)| {
            refinery::Migration::unapplied(name, sql)
                .expect("embedded registry migration names are valid")
        })
        .collect();
    let mut runner = refinery::Runner::new(&migrations);
    runner.set_migration_table_name(qualified(schema, HISTORY_TABLE));
    let report = runner.run_async(client).await.map_err(|e| {
        Error::failed(format!(
            "upgrading the registry in schema {}: {}",
            quote(schema),
            db::find_pg_message(&e).unwrap_or_else(|| e.to_string())
        ))
    })?;
    client
        .batch_execute("RESET search_path")
        .await
        .map_err(query_error("resetting search_path"))?;
    let after = shape(client, schema).await?;
    if !after.problems().is_empty() {
        return Err(damaged(schema, Some(latest_version()), &after.problems()));
    }
    Ok(InitReport {
        schema: schema.to_string(),
        applied: report
            .applied_migrations()
            .iter()
            .map(|m| m.version())
            .collect(),
        version: latest_version(),
        binary_version: latest_version(),
    })
}

impl<'a> Registry<'a> {
    /// Opens the registry, failing with exit 3 and "run `tenantctl init`" when it is
    /// missing or older than this binary needs, and with exit 3 naming the table and
    /// column when a column this binary needs is missing or of another type (one catalog
    /// query). A registry newer than this binary is fine while those columns are there.
    pub async fn open<C: db::Reads>(client: &'a C, schema: &'a str) -> Result<Registry<'a>, Error> {
        let found = shape(client, schema).await?;
        if !found.has("tenants") && !found.has(HISTORY_TABLE) {
            return Err(Error::setup(format!(
                "the tenant registry is not initialised in schema {} of database {}; run `tenantctl init`",
                quote(schema),
                quote(&found.dbname)
            )));
        }
        if !found.history_readable() {
            if is_original(client.pg(), schema).await? {
                return Err(original_table(schema));
            }
            return Err(damaged(schema, None, &found.problems()));
        }
        let version = recorded_version(client, schema).await?;
        if version < latest_version() {
            return Err(Error::setup(format!(
                "the tenant registry in schema {} is at version {version}, this tenantctl needs {}; run `tenantctl init` to upgrade it",
                quote(schema),
                latest_version()
            )));
        }
        if !found.problems().is_empty() {
            return Err(damaged(schema, Some(version), &found.problems()));
        }
        Ok(Registry {
            client: client.pg(),
            reads: client,
            schema,
            tables: Tables::new(schema),
        })
    }

    /// The registry schema.
    pub fn schema(&self) -> &str {
        self.schema
    }

    /// The registry's quoted, qualified table names.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Whether a tenant with this domain is registered.
    pub async fn domain_taken(&self, domain: &str) -> Result<bool, Error> {
        Ok(self
            .domain_where("domain", domain, "looking up a domain")
            .await?
            .is_some())
    }

    /// The domain of the tenant whose schema is `schema`, if one is registered.
    pub async fn schema_owner(&self, schema: &str) -> Result<Option<String>, Error> {
        self.domain_where("schema_name", schema, "looking up the owner of a schema")
            .await
    }

    /// The domain of the tenant whose `column` is `value`, if there is one.
    async fn domain_where(
        &self,
        column: &str,
        value: &str,
        doing: &str,
    ) -> Result<Option<String>, Error> {
        // A row without a domain (a NOT NULL dropped by hand) is named by its id.
        let sql = format!(
            "SELECT coalesce(domain, '(no domain; id ' || id || ')') FROM {} WHERE {column} = $1 LIMIT 1",
            self.tables.tenants
        );
        let row = db::read(self.reads, doing, self.client.query_opt(&sql, &[&value])).await?;
        Ok(row.map(|r| r.try_get(0).unwrap_or_default()))
    }

    /// How many tenants each server has.
    pub async fn count_by_server(&self) -> Result<std::collections::HashMap<String, i64>, Error> {
        // A NULL server is `default`, as every command reads it.
        let sql = format!(
            "SELECT coalesce(server, $1), count(*) FROM {} GROUP BY 1",
            self.tables.tenants
        );
        let rows = db::read(
            self.reads,
            "counting tenants per server",
            self.client.query(&sql, &[&crate::config::DEFAULT_SERVER]),
        )
        .await?;
        let mut counts = std::collections::HashMap::new();
        for r in &rows {
            let server: String = r.try_get(0).unwrap_or_default();
            *counts.entry(server).or_default() += r.try_get::<_, i64>(1).unwrap_or_default();
        }
        Ok(counts)
    }

    /// The connection the registry is read and written through.
    pub fn client(&self) -> &Client {
        self.client
    }

    /// Registers a tenant. A taken domain is a failed operation (exit 1); a schema that
    /// belongs to another tenant is a usage error (exit 2).
    pub async fn insert(&self, new: &NewTenant<'_>) -> Result<Tenant, Error> {
        let sql = format!(
            "INSERT INTO {} (tenant_name, domain, email, tenant_type, schema_name, api_key_hash, api_key_prefix, server) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}",
            self.tables.tenants
        );
        let row = self
            .client
            .query_one(
                &sql,
                &[&new.name, &new.domain, &new.email, &new.tenant_type, &new.schema_name, &new.api_key_hash, &new.api_key_prefix, &new.server],
            )
            .await
            .map_err(|e| {
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    let constraint = e.as_db_error().and_then(|d| d.constraint()).unwrap_or("");
                    if constraint.contains("schema_name") {
                        return Error::usage(format!(
                            "schema {} already belongs to another tenant; pass --schema to choose another. Nothing was registered.",
                            quote(new.schema_name)
                        ));
                    }
                    if constraint.contains("domain") {
                        return Error::conflict(domain_exists(new.domain));
                    }
                }
                query_error("registering the tenant")(e)
            })?;
        Ok(Tenant::from_row(&row))
    }

    /// Finds one tenant by domain, numeric id or schema name.
    pub async fn find(&self, reference: &str) -> Result<Tenant, Error> {
        let mut found = self.find_many(&[reference.to_string()]).await?;
        Ok(found.remove(0))
    }

    /// Resolves several references at once, in the order given, without duplicates.
    /// Any reference that matches nothing is an error naming it, and nothing is returned.
    pub async fn find_many(&self, references: &[String]) -> Result<Vec<Tenant>, Error> {
        for r in references {
            if r.is_empty() || r.len() > 200 || r.contains('\0') {
                return Err(Error::usage(format!(
                    "tenant reference {} is not a domain, id or schema name",
                    ident::shown(r)
                )));
            }
        }
        let ids: Vec<i64> = references.iter().filter_map(|r| r.parse().ok()).collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE domain = ANY($1) OR schema_name = ANY($1) OR id = ANY($2)",
            self.tables.tenants
        );
        let rows = db::read(
            self.reads,
            "looking up tenants",
            self.client.query(&sql, &[&references, &ids]),
        )
        .await?;
        let tenants: Vec<Tenant> = rows.iter().map(Tenant::from_row).collect();
        let mut out: Vec<Tenant> = Vec::new();
        let mut unknown = Vec::new();
        for r in references {
            // A domain, else a schema name, else an id: each is unique, and a domain is
            // never all digits, so the first match is the only one the reference can mean.
            // All digits is an id first, also where a domain was set to digits by hand:
            // the dashboard's links, which name tenants by id, then open the right one.
            let by_id = || {
                let id = r.parse::<i64>().ok()?;
                tenants.iter().find(|t| t.id == id)
            };
            let found = (r.bytes().all(|b| b.is_ascii_digit()))
                .then(by_id)
                .flatten()
                .or_else(|| tenants.iter().find(|t| &t.domain == r))
                .or_else(|| tenants.iter().find(|t| &t.schema_name == r))
                .or_else(by_id);
            match found {
                None => unknown.push(ident::shown(r)),
                Some(t) => {
                    if !out.iter().any(|o| o.id == t.id) {
                        out.push(t.clone());
                    }
                }
            }
        }
        if !unknown.is_empty() {
            let near = self.near(references, &out).await;
            let hint = if near.is_empty() {
                String::new()
            } else {
                format!("; did you mean {}?", near.join(", "))
            };
            return Err(Error::not_found(format!(
                "no tenant matches {}{hint}; `tenantctl tenant list` shows the registered tenants",
                unknown.join(", ")
            )));
        }
        Ok(out)
    }

    /// The registered domains closest to the references that matched nothing (at most
    /// three, each within a few edits of one), for a "did you mean". Empty when the
    /// domains cannot be read: the error stands without it.
    async fn near(&self, references: &[String], found: &[Tenant]) -> Vec<String> {
        let sql = format!("SELECT domain FROM {}", self.tables.tenants);
        let Ok(rows) = db::read(
            self.reads,
            "looking for similar tenants",
            self.client.query(&sql, &[]),
        )
        .await
        else {
            return Vec::new();
        };
        let domains: Vec<String> = rows
            .iter()
            .filter_map(|r| r.try_get::<_, Option<String>>(0).ok().flatten())
            .collect();
        let mut near: Vec<(usize, String)> = Vec::new();
        for r in references.iter().filter(|r| {
            !found
                .iter()
                .any(|t| &t.domain == *r || &t.schema_name == *r || t.id.to_string() == **r)
        }) {
            let limit = (r.chars().count() / 4).clamp(1, 3);
            for d in &domains {
                let distance = strsim::osa_distance(r, d);
                if distance <= limit && !near.iter().any(|(_, n)| n == d) {
                    near.push((distance, d.clone()));
                }
            }
        }
        near.sort();
        near.into_iter()
            .take(3)
            .map(|(_, d)| ident::shown(&d))
            .collect()
    }

    /// All tenants, by id, optionally filtered by type and status.
    pub async fn list(
        &self,
        tenant_type: Option<&str>,
        status: Option<Status>,
    ) -> Result<Vec<Tenant>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE ($1::text IS NULL OR tenant_type = $1) AND ($2::text IS NULL OR status = $2) ORDER BY id",
            self.tables.tenants
        );
        let status = status.map(Status::as_str);
        // Streamed: each row becomes a tenant as it arrives, so the fleet is never held
        // twice (as rows and as tenants).
        use futures::TryStreamExt;
        use tokio_postgres::types::Type;
        let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 2] =
            [(&tenant_type, Type::TEXT), (&status, Type::TEXT)];
        let listed = async {
            let rows = self.client.query_typed_raw(&sql, params).await?;
            rows.map_ok(|row| Tenant::from_row(&row))
                .try_collect()
                .await
        };
        db::read(self.reads, "listing tenants", listed).await
    }

    /// The lowest revision among the provisioned tenants, from the cached columns (0:
    /// nothing applied); `None` when no tenant is provisioned.
    pub async fn lowest_revision(&self) -> Result<Option<i32>, Error> {
        let row = db::read(
            self.reads,
            "reading the fleet's lowest revision",
            self.client.query_one(
                &format!(
                    "SELECT min(coalesce(current_revision, 0)) FROM {} WHERE schema_provisioned",
                    self.tables.tenants
                ),
                &[],
            ),
        )
        .await?;
        Ok(row.try_get(0).ok().flatten())
    }

    /// Brings the cached columns of these tenants in line with what was observed, in one
    /// statement; rows that already agree are left alone. Returns how many changed.
    pub async fn sync(&self, observed: &[(i64, Observed)]) -> Result<u64, Error> {
        // An unreadable history says nothing about the revision: leave those rows alone.
        let observed: Vec<&(i64, Observed)> = observed
            .iter()
            .filter(|(_, o)| o.history_readable)
            .collect();
        if observed.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = observed.iter().map(|(id, _)| *id).collect();
        let exists: Vec<bool> = observed.iter().map(|(_, o)| o.schema_exists).collect();
        let current: Vec<Option<i32>> = observed.iter().map(|(_, o)| o.current).collect();
        let sql = format!(
            "UPDATE {t} AS t SET schema_provisioned = u.p, migrations_applied = u.r IS NOT NULL, current_revision = u.r, updated_at = now() \
             FROM unnest($1::bigint[], $2::bool[], $3::int4[]) AS u(id, p, r) \
             WHERE t.id = u.id AND (t.schema_provisioned IS DISTINCT FROM u.p OR t.current_revision IS DISTINCT FROM u.r \
             OR t.migrations_applied IS DISTINCT FROM (u.r IS NOT NULL))",
            t = self.tables.tenants
        );
        // Bounded as a read: a best-effort refresh of what was just observed must not
        // hold a reading command on a registry that stopped answering.
        db::read(
            self.reads,
            "refreshing the registry's cached columns",
            self.client.execute(&sql, &[&ids, &exists, &current]),
        )
        .await
    }

    /// Replaces a tenant's API key hash and prefix. Returns the updated row.
    pub async fn rotate_key(&self, id: i64, hash: &str, prefix: &str) -> Result<Tenant, Error> {
        let sql = format!(
            "UPDATE {} SET api_key_hash = $2, api_key_prefix = $3, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}",
            self.tables.tenants
        );
        let row = self
            .client
            .query_opt(&sql, &[&id, &hash, &prefix])
            .await
            .map_err(query_error("storing the new API key hash"))?
            .ok_or_else(|| Error::failed(format!("tenant id {id} is no longer registered")))?;
        Ok(Tenant::from_row(&row))
    }

    /// Writes a ledger entry that goes with no registry update (e.g. registration).
    pub async fn log(
        &self,
        tenant: &Tenant,
        ev: &Event<'_>,
        error: Option<&str>,
    ) -> Result<(), Error> {
        let status = if error.is_some() { "failed" } else { "ok" };
        self.insert_event(tenant, ev, status, error).await
    }

    /// Writes the ledger entry of an operation that failed, or was refused (an error of
    /// kind [`ErrorKind::Refused`](crate::error::ErrorKind::Refused)), once it had begun
    /// on the tenant, leaving the tenant's registry row as it is: the operation left the
    /// tenant as it was (a restore or a move that was undone).
    pub async fn log_failure(
        &self,
        tenant: &Tenant,
        ev: &Event<'_>,
        e: &Error,
    ) -> Result<(), Error> {
        let status = if e.kind() == crate::error::ErrorKind::Refused {
            "refused"
        } else {
            "failed"
        };
        self.insert_event(tenant, ev, status, Some(&e.to_string()))
            .await
    }

    /// Inserts one ledger entry for `tenant` as the registry row says it is.
    async fn insert_event(
        &self,
        tenant: &Tenant,
        ev: &Event<'_>,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), Error> {
        let sql = insert_event_sql(
            &self.tables.events,
            "VALUES ($1::text::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        );
        self.client
            .execute(
                &sql,
                &[
                    &ev.run_id,
                    &tenant.id,
                    &tenant.domain,
                    &tenant.schema_name,
                    &ev.action,
                    &ev.from_revision,
                    &tenant.current_revision,
                    &status,
                    &error,
                    &ev.started_at,
                    &ev.client_host,
                ],
            )
            .await
            .map_err(query_error("writing the run ledger"))?;
        Ok(())
    }

    /// Ledger entries, newest first.
    pub async fn events(&self, filter: &EventFilter) -> Result<Vec<EventRow>, Error> {
        let sql = format!(
            "SELECT id, run_id::text, tenant_id, domain, schema_name, action, from_revision, to_revision, status, error, \
             started_at, finished_at, db_user, client_host, client_addr FROM {} \
             WHERE ($1::bigint IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR run_id::text = $2) \
             AND (NOT $3 OR status <> 'ok') ORDER BY id DESC LIMIT $4",
            self.tables.events
        );
        let rows = db::read(
            self.reads,
            "reading the run ledger",
            self.client.query(
                &sql,
                &[
                    &filter.tenant_id,
                    &filter.run_id,
                    &filter.failed_only,
                    &filter.limit,
                ],
            ),
        )
        .await?;
        Ok(rows.iter().map(EventRow::from_row).collect())
    }
}

/// Which ledger entries to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this tenant.
    pub tenant_id: Option<i64>,
    /// Only this run.
    pub run_id: Option<String>,
    /// Only entries that did not succeed: failures and refusals.
    pub failed_only: bool,
    /// At most this many, newest first.
    pub limit: i64,
}

/// One ledger entry.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct EventRow {
    /// Ledger id.
    pub id: i64,
    /// The run (a UUID).
    pub run_id: String,
    /// The tenant's registry id.
    pub tenant_id: i64,
    /// Its domain at the time.
    pub domain: String,
    /// Its schema at the time.
    pub schema_name: String,
    /// What was done.
    pub action: String,
    /// Revision before.
    pub from_revision: Option<i32>,
    /// Revision after.
    pub to_revision: Option<i32>,
    /// `ok` or `failed`.
    pub status: String,
    /// The error, when it failed.
    pub error: Option<String>,
    /// When work on the tenant started (`None`: NULL in the ledger).
    pub started_at: Option<Timestamp>,
    /// When it was recorded (`None`: NULL in the ledger).
    pub finished_at: Option<Timestamp>,
    /// Milliseconds between the two, when both are times (not NULL, not `infinity`).
    pub duration_ms: Option<i64>,
    /// The database user that made the change.
    pub db_user: String,
    /// The machine tenantctl ran on.
    pub client_host: Option<String>,
    /// The client address the server saw (null over a Unix socket).
    pub client_addr: Option<String>,
}

impl EventRow {
    /// A ledger row, read as tolerantly as [`Tenant`]s are: a NULL where the ledger has
    /// NOT NULL (a constraint dropped by hand) reads as empty text or 0, and a time as
    /// what is stored (NULL, `infinity`, a year past 9999), never as another time.
    fn from_row(r: &Row) -> EventRow {
        let text = |c: &str| {
            r.try_get::<_, Option<String>>(c)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let started_at = timestamp::column(r, "started_at");
        let finished_at = timestamp::column(r, "finished_at");
        EventRow {
            id: r.try_get("id").unwrap_or_default(),
            run_id: text("run_id"),
            tenant_id: r
                .try_get::<_, Option<i64>>("tenant_id")
                .ok()
                .flatten()
                .unwrap_or_default(),
            domain: text("domain"),
            schema_name: text("schema_name"),
            action: text("action"),
            from_revision: r.try_get("from_revision").ok().flatten(),
            to_revision: r.try_get("to_revision").ok().flatten(),
            status: text("status"),
            error: r.try_get("error").ok().flatten(),
            duration_ms: started_at
                .zip(finished_at)
                .and_then(|(s, f)| s.millis_until(&f)),
            started_at,
            finished_at,
            db_user: text("db_user"),
            client_host: r.try_get("client_host").ok().flatten(),
            client_addr: r.try_get("client_addr").ok().flatten(),
        }
    }
}

/// What was seen of a tenant's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// The schema exists.
    pub schema_exists: bool,
    /// The highest applied version, if any.
    pub current: Option<i32>,
    /// Whether the history table could be read. When it could not, `current` says
    /// nothing, and the cached `current_revision` and `migrations_applied` are kept.
    pub history_readable: bool,
}

impl Observed {
    /// Whether the registry row `tenant` caches something else than this observation
    /// (and so [`Registry::sync`] would change it).
    pub fn differs_from(&self, tenant: &Tenant) -> bool {
        tenant.schema_provisioned != self.schema_exists
            || (self.history_readable
                && (tenant.current_revision != self.current
                    || tenant.migrations_applied != self.current.is_some()))
    }

    /// Nothing observed: the cached columns of `tenant` stay as they are.
    pub fn unread(tenant: &Tenant) -> Observed {
        Observed {
            schema_exists: tenant.schema_provisioned,
            current: tenant.current_revision,
            history_readable: false,
        }
    }

    /// Summarises a schema state for the registry.
    pub fn of(state: &crate::registry::state::SchemaState) -> Observed {
        Observed {
            schema_exists: state.schema_exists,
            current: state.current(),
            history_readable: state.history.is_ok(),
        }
    }
}

/// The outcome of an operation, as the registry records it.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'e> {
    /// The operation succeeded: status becomes `active`, `last_error` is cleared.
    Succeeded,
    /// It failed: status becomes `failed` with this error.
    Failed(&'e str),
    /// Nothing was attempted: status and error stay as they are.
    Unchanged,
    /// An operation that does not change the tenant (a backup) failed: status and error
    /// stay as they are, the ledger entry says it failed with this error.
    Noted(&'e str),
    /// The operation was refused before it changed anything (drift, a missing down
    /// script, a target on the other side of the revision, ...): status and error stay
    /// as they are, the ledger entry says `refused` with this reason.
    Refused(&'e str),
}

/// A ledger entry to write with a registry update.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    /// The run this change belongs to.
    pub run_id: &'a str,
    /// What was done: `register`, `provision`, `upgrade`, ...
    pub action: &'a str,
    /// The revision before.
    pub from_revision: Option<i32>,
    /// When work on the tenant started.
    pub started_at: OffsetDateTime,
    /// The machine tenantctl runs on.
    pub client_host: &'a str,
}

/// The ledger's columns, in the order every INSERT into it gives them.
const EVENT_COLUMNS: &str = "run_id, tenant_id, domain, schema_name, action, from_revision, \
                             to_revision, status, error, started_at, client_host";

/// An INSERT into the ledger table `events` (quoted, qualified) of `rows`: a `VALUES`
/// list or a `SELECT` giving every column of the ledger in the order run id, tenant id,
/// domain, schema, action, from and to revision, status, error, start time, host.
pub fn insert_event_sql(events: &str, rows: &str) -> String {
    format!("INSERT INTO {events} ({EVENT_COLUMNS}) {rows}")
}

/// Writes an observation and outcome through any connection (a tenant's own, while it
/// holds the tenant's lock, or the main one), and the ledger entry when given, in one
/// statement.
pub async fn record_with(
    client: &Client,
    tables: &Tables,
    id: i64,
    observed: &Observed,
    outcome: Outcome<'_>,
    event: Option<&Event<'_>>,
) -> Result<Tenant, Error> {
    let (status, error): (Option<&str>, Option<&str>) = match outcome {
        Outcome::Succeeded => (Some("active"), None),
        Outcome::Failed(e) => (Some("failed"), Some(e)),
        Outcome::Unchanged => (None, None),
        Outcome::Noted(e) | Outcome::Refused(e) => (None, Some(e)),
    };
    // $7: whether the history was readable; when it was not, the cached revision stays.
    // Without a new status, `updated_at` moves only when a cached column changes: a
    // refusal or a skip leaves the row exactly as it was.
    let update = format!(
        "UPDATE {t} SET schema_provisioned = $2, \
         migrations_applied = CASE WHEN $7 THEN $3 ELSE migrations_applied END, \
         current_revision = CASE WHEN $7 THEN $4 ELSE current_revision END, \
         status = COALESCE($5, status), \
         last_error = CASE WHEN $5::text IS NULL THEN last_error ELSE $6 END, \
         updated_at = CASE WHEN $5::text IS NULL AND schema_provisioned = $2 \
           AND (NOT $7 OR (migrations_applied = $3 AND current_revision IS NOT DISTINCT FROM $4)) \
           THEN updated_at ELSE now() END \
         WHERE id = $1 RETURNING {COLUMNS}",
        t = tables.tenants
    );
    let has_revision = observed.current.is_some();
    use tokio_postgres::types::Type;
    // Typed parameters: one round trip, no prepared statement.
    let mut params: Vec<(&(dyn tokio_postgres::types::ToSql + Sync), Type)> = vec![
        (&id, Type::INT8),
        (&observed.schema_exists, Type::BOOL),
        (&has_revision, Type::BOOL),
        (&observed.current, Type::INT4),
        (&status, Type::TEXT),
        (&error, Type::TEXT),
        (&observed.history_readable, Type::BOOL),
    ];
    let event_status = match outcome {
        Outcome::Failed(_) | Outcome::Noted(_) => "failed",
        Outcome::Refused(_) => "refused",
        Outcome::Succeeded | Outcome::Unchanged => "ok",
    };
    let sql = match event {
        None => update,
        Some(ev) => {
            let insert = insert_event_sql(
                &tables.events,
                "SELECT $8::text::uuid, u.id, u.domain, u.schema_name, $9, $10, u.current_revision, $11, $6, $12, $13 FROM u",
            );
            params.extend([
                (
                    &ev.run_id as &(dyn tokio_postgres::types::ToSql + Sync),
                    Type::TEXT,
                ),
                (&ev.action, Type::TEXT),
                (&ev.from_revision, Type::INT4),
                (&event_status, Type::TEXT),
                (&ev.started_at, Type::TIMESTAMPTZ),
                (&ev.client_host, Type::TEXT),
            ]);
            format!("WITH u AS ({update}), e AS ({insert}) SELECT {COLUMNS} FROM u")
        }
    };
    let row = client.query_typed_opt(&sql, &params).await;
    let row = row
        .map_err(query_error("updating the registry"))?
        .ok_or_else(|| {
            Error::not_found(format!(
                "{REMOVED}: tenant id {id} was dropped from the registry while this command waited for it"
            ))
        })?;
    Ok(Tenant::from_row(&row))
}

/// The error for registering a domain that is taken.
pub fn domain_exists(domain: &str) -> String {
    format!("a tenant with domain \"{domain}\" already exists")
}

/// The registry's quoted, qualified table names.
#[derive(Debug, Clone)]
pub struct Tables {
    /// `"schema"."tenants"`.
    pub tenants: String,
    /// `"schema"."tenant_events"`, the run ledger.
    pub events: String,
    /// `"schema"."tenant_moves"`, moves between servers in progress.
    pub moves: String,
    /// `"schema"."tenant_runs"`, one row per bulk run.
    pub runs: String,
}

impl Tables {
    /// The tables in a registry schema.
    pub fn new(schema: &str) -> Tables {
        Tables {
            tenants: qualified(schema, "tenants"),
            events: qualified(schema, "tenant_events"),
            moves: qualified(schema, "tenant_moves"),
            runs: qualified(schema, "tenant_runs"),
        }
    }
}

/// Records that a bulk run ended, with its counts and result (`ok`, `failed` or
/// `interrupted`).
#[allow(clippy::too_many_arguments)]
pub async fn record_run(
    client: &Client,
    tables: &Tables,
    run_id: &str,
    command: &str,
    started_at: OffsetDateTime,
    summary: &Summary,
    result: &str,
    client_host: &str,
) -> Result<(), Error> {
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    client
        .execute(
            &format!(
                "INSERT INTO {} (run_id, command, started_at, total, ok, up_to_date, failed, skipped, result, client_host) \
                 VALUES ($1::text::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (run_id) DO NOTHING",
                tables.runs
            ),
            &[
                &run_id,
                &command,
                &started_at,
                &count(summary.total),
                &count(summary.ok),
                &count(summary.up_to_date),
                &count(summary.failed),
                &count(summary.skipped),
                &result,
                &client_host,
            ],
        )
        .await
        .map_err(query_error("recording the run"))?;
    Ok(())
}

/// A move of a tenant between servers that has started and not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveJournal {
    /// The server it was on.
    pub from_server: String,
    /// The server it is going to.
    pub to_server: String,
    /// Its schema (the same name on both).
    pub schema_name: String,
    /// Whether the old copy is kept (renamed) rather than dropped.
    pub keep_source: bool,
    /// `copying` (the registry still names `from_server`), `undoing` (it does, and the
    /// move is being undone: it will never switch) or `switched` (it names `to_server`;
    /// the old copy may still need removing).
    pub phase: String,
}

impl Registry<'_> {
    /// The unfinished move of tenant `id`, if there is one.
    pub async fn move_journal(&self, id: i64) -> Result<Option<MoveJournal>, Error> {
        let sql = format!(
            "SELECT from_server, to_server, schema_name, keep_source, phase FROM {} WHERE tenant_id = $1",
            self.tables.moves
        );
        let row = db::read(
            self.reads,
            "reading the tenant's unfinished move",
            self.client.query_opt(&sql, &[&id]),
        )
        .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        // A move is finished or undone from what its row says: a row with a NULL (a
        // constraint dropped by hand) or a phase no tenantctl writes is not guessed at.
        let text = |i: usize| r.try_get::<_, Option<String>>(i).ok().flatten();
        let keep_source = r.try_get::<_, Option<bool>>(3).ok().flatten();
        let columns = [
            "from_server",
            "to_server",
            "schema_name",
            "keep_source",
            "phase",
        ];
        let nulls: Vec<&str> = columns
            .iter()
            .enumerate()
            .filter(|(i, _)| match i {
                3 => keep_source.is_none(),
                _ => text(*i).is_none(),
            })
            .map(|(_, c)| *c)
            .collect();
        let phase = text(4).unwrap_or_default();
        let known = ["copying", "switched", "undoing"].contains(&phase.as_str());
        match (nulls.is_empty(), known) {
            (true, true) => Ok(Some(MoveJournal {
                from_server: text(0).unwrap_or_default(),
                to_server: text(1).unwrap_or_default(),
                schema_name: text(2).unwrap_or_default(),
                keep_source: keep_source.unwrap_or_default(),
                phase,
            })),
            _ => {
                let (what, fix) = if nulls.is_empty() {
                    (
                        format!(
                            "its phase is {}, which this tenantctl does not write (copying, switched, undoing)",
                            ident::shown(&phase)
                        ),
                        "finish it with the tenantctl that started it",
                    )
                } else {
                    (
                        format!(
                            "{} {} NULL",
                            nulls.join(", "),
                            if nulls.len() == 1 { "is" } else { "are" }
                        ),
                        "find which server holds the tenant's copy, put back what is missing, then run the move again",
                    )
                };
                Err(Error::setup(format!(
                    "the unfinished move of tenant id {id} cannot be read from {m} ({what}), so it can be neither finished nor undone: \
                     see `SELECT * FROM {m} WHERE tenant_id = {id}`, {fix}; nothing was changed",
                    m = self.tables.moves
                )))
            }
        }
    }

    /// The ids of the tenants with an unfinished move.
    pub async fn unfinished_moves(&self) -> Result<std::collections::HashSet<i64>, Error> {
        let sql = format!("SELECT tenant_id FROM {}", self.tables.moves);
        let rows = db::read(
            self.reads,
            "reading the unfinished moves",
            self.client.query(&sql, &[]),
        )
        .await?;
        Ok(rows.iter().filter_map(|r| r.try_get(0).ok()).collect())
    }

    /// Records that a move of tenant `id` starts (phase `copying`).
    pub async fn begin_move(&self, id: i64, journal: &MoveJournal) -> Result<(), Error> {
        self.client
            .execute(
                &format!(
                    "INSERT INTO {} (tenant_id, from_server, to_server, schema_name, keep_source, phase) \
                     VALUES ($1, $2, $3, $4, $5, 'copying')",
                    self.tables.moves
                ),
                &[
                    &id,
                    &journal.from_server,
                    &journal.to_server,
                    &journal.schema_name,
                    &journal.keep_source,
                ],
            )
            .await
            .map_err(query_error("recording the move's start"))?;
        Ok(())
    }

    /// Points tenant `id` at `to_server` and marks its move `switched`, with a ledger
    /// entry, in one transaction; refused when the tenant is no longer on the journal's
    /// `from_server` or its move is not `copying`.
    pub async fn switch_server(
        &self,
        id: i64,
        journal: &MoveJournal,
        event: &Event<'_>,
    ) -> Result<Tenant, Error> {
        let t = &self.tables;
        let insert = insert_event_sql(
            &t.events,
            "SELECT $4::text::uuid, u.id, u.domain, u.schema_name, $5, u.current_revision, u.current_revision, 'ok', NULL, $6, $7 FROM u",
        );
        // The journal row is locked first, and only a move still `copying` switches: an
        // undo that claimed the move (`undoing`, [`Registry::claim_undo`]) first, even
        // while this statement was on its way, makes it switch nothing.
        let sql = format!(
            "WITH j AS (SELECT tenant_id FROM {moves} WHERE tenant_id = $1 AND phase = 'copying' FOR UPDATE), \
                  u AS (UPDATE {tenants} SET server = $3, updated_at = now() \
                        WHERE id = (SELECT tenant_id FROM j) AND server = $2 \
                        RETURNING {COLUMNS}), \
                  m AS (UPDATE {moves} SET phase = 'switched', updated_at = now() \
                        WHERE tenant_id = (SELECT id FROM u)), \
                  e AS ({insert}) \
             SELECT {COLUMNS} FROM u",
            moves = t.moves,
            tenants = t.tenants,
        );
        let row = self
            .client
            .query_opt(
                &sql,
                &[
                    &id,
                    &journal.from_server,
                    &journal.to_server,
                    &event.run_id,
                    &event.action,
                    &event.started_at,
                    &event.client_host,
                ],
            )
            .await
            .map_err(query_error("pointing the tenant at its new server"))?;
        row.map(|r| Tenant::from_row(&r)).ok_or_else(|| {
            Error::failed(format!(
                "tenant id {id} is no longer on server {} with a move in progress (another command changed it); nothing was switched",
                journal.from_server
            ))
        })
    }

    /// Claims tenant `id`'s unswitched move for undoing (phase `undoing`), so that a
    /// registry switch still on its way can no longer apply. `Ok(false)` when the move
    /// has switched: it must be finished, not undone. `Ok(true)` also when there is no
    /// move left to claim.
    pub async fn claim_undo(&self, id: i64) -> Result<bool, Error> {
        let claimed = self
            .client
            .execute(
                &format!(
                    "UPDATE {} SET phase = 'undoing', updated_at = now() WHERE tenant_id = $1 AND phase <> 'switched'",
                    self.tables.moves
                ),
                &[&id],
            )
            .await
            .map_err(query_error("claiming the unfinished move for undoing"))?;
        if claimed == 1 {
            return Ok(true);
        }
        Ok(self
            .move_journal(id)
            .await?
            .is_none_or(|j| j.phase != "switched"))
    }

    /// Forgets tenant `id`'s move (finished or undone).
    pub async fn end_move(&self, id: i64) -> Result<(), Error> {
        self.client
            .execute(
                &format!("DELETE FROM {} WHERE tenant_id = $1", self.tables.moves),
                &[&id],
            )
            .await
            .map_err(query_error("closing the move's record"))?;
        Ok(())
    }
}

/// A tenant about to be registered.
#[derive(Debug)]
pub struct NewTenant<'a> {
    /// Display name.
    pub name: &'a str,
    /// Validated domain.
    pub domain: &'a str,
    /// Contact email.
    pub email: Option<&'a str>,
    /// Tenant type.
    pub tenant_type: &'a str,
    /// Validated schema name.
    pub schema_name: &'a str,
    /// SHA-256 of the API key, hex.
    pub api_key_hash: &'a str,
    /// Display prefix of the API key.
    pub api_key_prefix: &'a str,
    /// The server its schema goes on.
    pub server: &'a str,
}

/// The columns `schema.tenants` has now, with their types.
pub async fn tenants_columns(
    client: &Client,
    schema: &str,
) -> Result<std::collections::BTreeMap<String, String>, Error> {
    let rows = client
        .query(
            "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, NULL) \
             FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[&qualified(schema, "tenants")],
        )
        .await
        .map_err(query_error("reading the tenants table"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Whether `schema` holds the original service's `tenants` table (plain `api_key`, no
/// tenantctl history).
pub async fn is_original(client: &Client, schema: &str) -> Result<bool, Error> {
    let cols = tenants_columns(client, schema).await?;
    let history: bool = client
        .query_one(
            "SELECT pg_catalog.to_regclass($1) IS NOT NULL",
            &[&qualified(schema, HISTORY_TABLE)],
        )
        .await
        .map_err(query_error("looking for the registry's history"))?
        .get(0);
    Ok(!history
        && cols.contains_key("api_key")
        && cols.contains_key("domain")
        && cols.contains_key("schema_name")
        && !cols.contains_key("api_key_hash"))
}

/// Counts for a run, as the run table keeps them.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct Summary {
    /// Tenants selected.
    pub total: usize,
    /// Changed.
    pub ok: usize,
    /// Nothing to do.
    pub up_to_date: usize,
    /// Failed.
    pub failed: usize,
    /// Not attempted.
    pub skipped: usize,
    /// Wall time of the whole run.
    pub duration_ms: u64,
}
