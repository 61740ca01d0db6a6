//! The tenant registry: the `tenants` table, its embedded migrations, and every query
//! that reads or writes it.
//!
//! All SQL here quotes the registry schema and binds every value. The registry's cached
//! columns (`schema_provisioned`, `current_revision`, ...) are written from what was
//! observed in the database after each operation, never from what was intended.

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Row};

use crate::db::{self, query_error, LockSpace};
use crate::error::Error;
use crate::ident::{self, qualified, quote};

/// The registry's own history table, in the registry schema.
pub const HISTORY_TABLE: &str = "tenantctl_registry_history";

/// Migrations that create and upgrade the registry, embedded in the binary.
const MIGRATIONS: &[(&str, &str)] = &[(
    "V1__tenants",
    include_str!("registry_migrations/V1__tenants.sql"),
)];

/// The registry version this binary needs.
pub fn latest_version() -> i32 {
    MIGRATIONS.len() as i32
}

/// A tenant's lifecycle state in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
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
#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    /// Registry id.
    pub id: i64,
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
    /// When the tenant was registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the row last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str = "id, tenant_name, domain, email, tenant_type, schema_name, schema_provisioned, \
     migrations_applied, current_revision, status, last_error, api_key_prefix, created_at, updated_at";

impl Tenant {
    fn from_row(row: &Row) -> Tenant {
        Tenant {
            id: row.get("id"),
            tenant_name: row.get("tenant_name"),
            domain: row.get("domain"),
            email: row.get("email"),
            tenant_type: row.get("tenant_type"),
            schema_name: row.get("schema_name"),
            schema_provisioned: row.get("schema_provisioned"),
            migrations_applied: row.get("migrations_applied"),
            current_revision: row.get("current_revision"),
            status: Status::parse(row.get("status")),
            last_error: row.get("last_error"),
            api_key_prefix: row.get("api_key_prefix"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        }
    }
}

/// A handle on the registry in one schema, over one connection.
pub struct Registry<'a> {
    client: &'a Client,
    schema: &'a str,
    table: String,
}

/// What `init` did.
#[derive(Debug, Serialize)]
pub struct InitReport {
    /// The registry schema.
    pub schema: String,
    /// Registry versions applied by this run.
    pub applied: Vec<i32>,
    /// The registry version now.
    pub version: i32,
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
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {s}; SET search_path TO {s}",
            s = quote(schema)
        ))
        .await
        .map_err(query_error(&format!(
            "creating registry schema {}",
            quote(schema)
        )))?;
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
    Ok(InitReport {
        schema: schema.to_string(),
        applied: report
            .applied_migrations()
            .iter()
            .map(|m| m.version())
            .collect(),
        version: latest_version(),
    })
}

impl<'a> Registry<'a> {
    /// Opens the registry, failing with exit 3 and "run `tenantctl init`" when it is
    /// missing or older than this binary needs.
    pub async fn open(client: &'a Client, schema: &'a str) -> Result<Registry<'a>, Error> {
        let row = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL, current_database()",
                &[&qualified(schema, "tenants"), &qualified(schema, HISTORY_TABLE)],
            )
            .await
            .map_err(query_error("looking for the tenant registry"))?;
        let (has_tenants, has_history, dbname): (bool, bool, String) =
            (row.get(0), row.get(1), row.get(2));
        if !has_tenants || !has_history {
            return Err(Error::setup(format!(
                "the tenant registry is not initialised in schema {} of database {}; run `tenantctl init`",
                quote(schema),
                quote(&dbname)
            )));
        }
        let version: Option<i32> = client
            .query_one(
                &format!(
                    "SELECT max(version) FROM {}",
                    qualified(schema, HISTORY_TABLE)
                ),
                &[],
            )
            .await
            .map_err(query_error("reading the registry version"))?
            .get(0);
        let version = version.unwrap_or(0);
        if version < latest_version() {
            return Err(Error::setup(format!(
                "the tenant registry in schema {} is at version {version}, this tenantctl needs {}; run `tenantctl init` to upgrade it",
                quote(schema),
                latest_version()
            )));
        }
        Ok(Registry {
            client,
            schema,
            table: qualified(schema, "tenants"),
        })
    }

    /// The registry schema.
    pub fn schema(&self) -> &str {
        self.schema
    }

    /// The quoted, qualified `tenants` table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Registers a tenant. A taken domain or schema is a failed operation (exit 1).
    pub async fn insert(&self, new: &NewTenant<'_>) -> Result<Tenant, Error> {
        let sql = format!(
            "INSERT INTO {} (tenant_name, domain, email, tenant_type, schema_name, api_key_hash, api_key_prefix) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}",
            self.table
        );
        let row = self
            .client
            .query_one(
                &sql,
                &[&new.name, &new.domain, &new.email, &new.tenant_type, &new.schema_name, &new.api_key_hash, &new.api_key_prefix],
            )
            .await
            .map_err(|e| {
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    let constraint = e.as_db_error().and_then(|d| d.constraint()).unwrap_or("");
                    if constraint.contains("schema_name") {
                        return Error::failed(format!(
                            "schema {} already belongs to another tenant; pass --schema to choose another",
                            quote(new.schema_name)
                        ));
                    }
                    if constraint.contains("domain") {
                        return Error::failed(format!("a tenant with domain \"{}\" already exists", new.domain));
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
            if r.is_empty() || r.len() > 200 {
                return Err(Error::usage(format!(
                    "tenant reference {} is not a domain, id or schema name",
                    ident::shown(r)
                )));
            }
        }
        let ids: Vec<i64> = references.iter().filter_map(|r| r.parse().ok()).collect();
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE domain = ANY($1) OR schema_name = ANY($1) OR id = ANY($2)",
            self.table
        );
        let rows = self
            .client
            .query(&sql, &[&references, &ids])
            .await
            .map_err(query_error("looking up tenants"))?;
        let tenants: Vec<Tenant> = rows.iter().map(Tenant::from_row).collect();
        let mut out: Vec<Tenant> = Vec::new();
        let mut unknown = Vec::new();
        for r in references {
            let matches: Vec<&Tenant> = tenants
                .iter()
                .filter(|t| {
                    &t.domain == r || &t.schema_name == r || r.parse::<i64>().ok() == Some(t.id)
                })
                .collect();
            match matches.as_slice() {
                [] => unknown.push(ident::shown(r)),
                [t] => {
                    if !out.iter().any(|o| o.id == t.id) {
                        out.push((*t).clone());
                    }
                }
                many => {
                    let names: Vec<String> = many
                        .iter()
                        .map(|t| format!("{} (id {})", t.domain, t.id))
                        .collect();
                    return Err(Error::usage(format!(
                        "tenant reference {} is ambiguous: it matches {}; use the domain",
                        ident::shown(r),
                        names.join(" and ")
                    )));
                }
            }
        }
        if !unknown.is_empty() {
            return Err(Error::failed(format!(
                "no tenant matches {}; `tenantctl tenant list` shows the registered tenants",
                unknown.join(", ")
            )));
        }
        Ok(out)
    }

    /// All tenants, by id, optionally filtered by type and status.
    pub async fn list(
        &self,
        tenant_type: Option<&str>,
        status: Option<Status>,
    ) -> Result<Vec<Tenant>, Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM {} WHERE ($1::text IS NULL OR tenant_type = $1) AND ($2::text IS NULL OR status = $2) ORDER BY id",
            self.table
        );
        let status = status.map(Status::as_str);
        let rows = self
            .client
            .query(&sql, &[&tenant_type, &status])
            .await
            .map_err(query_error("listing tenants"))?;
        Ok(rows.iter().map(Tenant::from_row).collect())
    }

    /// Brings the cached columns of these tenants in line with what was observed, in one
    /// statement; rows that already agree are left alone. Returns how many changed.
    pub async fn sync(&self, observed: &[(i64, Observed)]) -> Result<u64, Error> {
        let ids: Vec<i64> = observed.iter().map(|(id, _)| *id).collect();
        let exists: Vec<bool> = observed.iter().map(|(_, o)| o.schema_exists).collect();
        let current: Vec<Option<i32>> = observed.iter().map(|(_, o)| o.current).collect();
        let sql = format!(
            "UPDATE {t} AS t SET schema_provisioned = u.p, migrations_applied = u.r IS NOT NULL, current_revision = u.r, updated_at = now() \
             FROM unnest($1::bigint[], $2::bool[], $3::int4[]) AS u(id, p, r) \
             WHERE t.id = u.id AND (t.schema_provisioned IS DISTINCT FROM u.p OR t.current_revision IS DISTINCT FROM u.r \
             OR t.migrations_applied IS DISTINCT FROM (u.r IS NOT NULL))",
            t = self.table
        );
        self.client
            .execute(&sql, &[&ids, &exists, &current])
            .await
            .map_err(query_error("refreshing the registry's cached columns"))
    }

    /// Writes what was observed of a tenant's schema, and the outcome of the operation.
    pub async fn record(
        &self,
        id: i64,
        observed: &Observed,
        outcome: Outcome<'_>,
    ) -> Result<Tenant, Error> {
        record_with(self.client, &self.table, id, observed, outcome).await
    }
}

/// What was seen of a tenant's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// The schema exists.
    pub schema_exists: bool,
    /// The highest applied version, if any.
    pub current: Option<i32>,
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
}

/// Writes an observation and outcome through any connection (a tenant's own, while it
/// holds the tenant's lock, or the main one).
pub async fn record_with(
    client: &Client,
    table: &str,
    id: i64,
    observed: &Observed,
    outcome: Outcome<'_>,
) -> Result<Tenant, Error> {
    let (status, error): (Option<&str>, Option<&str>) = match outcome {
        Outcome::Succeeded => (Some("active"), None),
        Outcome::Failed(e) => (Some("failed"), Some(e)),
        Outcome::Unchanged => (None, None),
    };
    let sql = format!(
        "UPDATE {table} SET schema_provisioned = $2, migrations_applied = $3, current_revision = $4, \
         status = COALESCE($5, status), \
         last_error = CASE WHEN $5::text IS NULL THEN last_error ELSE $6 END, \
         updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    );
    let row = client
        .query_opt(
            &sql,
            &[
                &id,
                &observed.schema_exists,
                &observed.current.is_some(),
                &observed.current,
                &status,
                &error,
            ],
        )
        .await
        .map_err(query_error("updating the registry"))?
        .ok_or_else(|| {
            Error::failed(format!(
                "tenant id {id} was removed from the registry while it was being changed"
            ))
        })?;
    Ok(Tenant::from_row(&row))
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
}
