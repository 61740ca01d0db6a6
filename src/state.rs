//! What is in the database: which tenant schemas exist and what their history tables
//! say, read for many tenants in a constant number of round trips.
//!
//! One catalog query finds every schema and history table; then the history tables are
//! read in batches of [`BATCH`] with `UNION ALL`. A history table that cannot be read
//! (wrong column types, a row refinery could not parse) is reported for that tenant alone.

use std::collections::HashMap;

use futures::StreamExt;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::db::query_error;
use crate::error::Error;
use crate::ident::qualified;
use crate::migrations::AppliedRow;

/// History tables read per query.
pub const BATCH: usize = 200;

/// What was found of one tenant's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaState {
    /// The schema exists.
    pub schema_exists: bool,
    /// The history table exists.
    pub history_exists: bool,
    /// Its rows by version, or why they could not be read.
    pub history: Result<Vec<AppliedRow>, String>,
}

impl SchemaState {
    /// The highest applied version, when the history is readable and not empty.
    pub fn current(&self) -> Option<i32> {
        self.history
            .as_ref()
            .ok()
            .and_then(|h| h.iter().map(|r| r.version).max())
    }
}

/// Reads the state of every schema in `schemas`; `table` is the history table name.
pub async fn observe(
    client: &Client,
    schemas: &[String],
    table: &str,
) -> Result<HashMap<String, SchemaState>, Error> {
    observe_with(&[client], schemas, table).await
}

/// Like [`observe`], spreading the history batches over several connections, which read
/// concurrently: planning a query over hundreds of tables is the cost that bounds a fleet
/// read, and the server can plan on several cores at once.
pub async fn observe_with(
    clients: &[&Client],
    schemas: &[String],
    table: &str,
) -> Result<HashMap<String, SchemaState>, Error> {
    let mut out = HashMap::with_capacity(schemas.len());
    observe_each(clients, schemas, table, |name, state| {
        out.insert(name, state);
    })
    .await?;
    Ok(out)
}

/// Like [`observe_with`], handing each schema's state to `sink` as its batch arrives
/// instead of collecting them, so a fleet read holds one batch of histories at a time.
/// Every schema asked for is handed over exactly once.
pub async fn observe_each(
    clients: &[&Client],
    schemas: &[String],
    table: &str,
    mut sink: impl FnMut(String, SchemaState),
) -> Result<(), Error> {
    let rows = clients[0]
        .query_typed(
            "SELECT s.name, n.oid IS NOT NULL, c.oid IS NOT NULL \
             FROM unnest($1::text[]) AS s(name) \
             LEFT JOIN pg_namespace n ON n.nspname = s.name \
             LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[(&schemas, Type::TEXT_ARRAY), (&table, Type::TEXT)],
        )
        .await
        .map_err(query_error("reading tenant schemas from the catalog"))?;
    let mut with_history = Vec::new();
    for row in rows {
        let (name, schema_exists, history_exists): (String, bool, bool) =
            (row.get(0), row.get(1), row.get(2));
        if history_exists {
            with_history.push(name);
        } else {
            let state = SchemaState {
                schema_exists,
                history_exists,
                history: Ok(Vec::new()),
            };
            sink(name, state);
        }
    }
    let lanes = clients.len().max(1);
    let mut batches = futures::stream::iter(with_history.chunks(BATCH).enumerate())
        .map(|(i, chunk)| read_batch(clients[i % lanes], chunk, table))
        .buffer_unordered(lanes);
    while let Some(found) = batches.next().await {
        for (name, history) in found {
            let state = SchemaState {
                schema_exists: true,
                history_exists: true,
                history,
            };
            sink(name, state);
        }
    }
    Ok(())
}

/// One history, or why it could not be read.
type History = Result<Vec<AppliedRow>, String>;

type Histories = HashMap<String, History>;

/// Reads one batch of history tables; when one of them cannot be read (which fails the
/// whole `UNION`), reads the batch table by table so only that tenant gets the error.
async fn read_batch(client: &Client, chunk: &[String], table: &str) -> Vec<(String, History)> {
    match read_histories(client, chunk, table).await {
        Ok(mut found) => chunk
            .iter()
            .map(|name| {
                let history = found.remove(name).unwrap_or_else(|| Ok(Vec::new()));
                (name.clone(), history)
            })
            .collect(),
        Err(_) => {
            let mut all = Vec::with_capacity(chunk.len());
            for name in chunk {
                let one = read_histories(client, std::slice::from_ref(name), table)
                    .await
                    .map(|mut m| m.remove(name).unwrap_or_else(|| Ok(Vec::new())))
                    .unwrap_or_else(|e| Err(e.to_string()));
                all.push((name.clone(), one));
            }
            all
        }
    }
}

async fn read_histories(
    client: &Client,
    schemas: &[String],
    table: &str,
) -> Result<Histories, Error> {
    let sql = schemas
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "SELECT ${}::text, version, name, applied_on, checksum FROM {}",
                i + 1,
                qualified(s, table)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let params: Vec<(&(dyn tokio_postgres::types::ToSql + Sync), Type)> = schemas
        .iter()
        .map(|s| (s as &(dyn tokio_postgres::types::ToSql + Sync), Type::TEXT))
        .collect();
    let rows = client
        .query_typed(&format!("{sql} ORDER BY 1, 2"), &params)
        .await
        .map_err(query_error(&format!(
            "reading history table {}",
            qualified(&schemas[0], table)
        )))?;
    let mut out: Histories = HashMap::new();
    for row in rows {
        let schema: String = row.get(0);
        let parsed = parse_row(&row).map_err(|why| {
            format!(
                "history table {} has a row tenantctl cannot read: {why}",
                qualified(&schema, table)
            )
        });
        let entry = out.entry(schema).or_insert_with(|| Ok(Vec::new()));
        match (entry.as_mut(), parsed) {
            (Ok(list), Ok(r)) => list.push(r),
            (Ok(_), Err(e)) => *entry = Err(e),
            (Err(_), _) => {}
        }
    }
    Ok(out)
}

fn parse_row(row: &tokio_postgres::Row) -> Result<AppliedRow, String> {
    let version: i32 = row.try_get(1).map_err(|e| format!("version: {e}"))?;
    let name: Option<String> = row
        .try_get(2)
        .map_err(|e| format!("version {version}: name: {e}"))?;
    let applied_on: Option<String> = row
        .try_get(3)
        .map_err(|e| format!("version {version}: applied_on: {e}"))?;
    let checksum: Option<String> = row
        .try_get(4)
        .map_err(|e| format!("version {version}: checksum: {e}"))?;
    let name = name.ok_or_else(|| format!("version {version}: name is NULL"))?;
    let applied_on = applied_on.ok_or_else(|| format!("version {version}: applied_on is NULL"))?;
    OffsetDateTime::parse(&applied_on, &Rfc3339).map_err(|_| {
        format!("version {version}: applied_on {applied_on:?} is not an RFC 3339 time")
    })?;
    let checksum = checksum
        .as_deref()
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or_else(|| format!("version {version}: checksum {checksum:?} is not a number"))?;
    Ok(AppliedRow {
        version,
        name,
        applied_on,
        checksum,
    })
}
