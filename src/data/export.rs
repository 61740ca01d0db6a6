//! Reading a tenant into an archive: its manifest and every table's rows, from one
//! snapshot, on the tenant's locked session.

use crate::pg::db::Client;
use bytes::Bytes;
use futures::{pin_mut, TryStreamExt};
use time::OffsetDateTime;

use crate::data::archive::{
    ArchivedMigration, CopyFormat, Manifest, Sequence, Source, Table, FORMAT,
};
use crate::data::catalog::{self, Catalog};
use crate::data::fence;
use crate::data::stream::Sink;
use crate::error::Error;
use crate::files::migrations::AppliedRow;
use crate::ident::{qualified, quote};
use crate::pg::db::query_error;
use crate::registry::Tenant;

/// How the snapshot is taken.
#[derive(Clone, Copy)]
pub enum Snapshot {
    /// A read-only snapshot; writers go on.
    Read,
}

/// What reading a tenant's rows is called in a refusal.
const EXPORT: &str = "an export of the tenant";

/// Opens the snapshot transaction on `client` (the tenant's locked session) and returns
/// the catalog as the snapshot sees it. Refuses, before any row is read, tables whose
/// row-level security applies to the session's role (their policies would hide rows
/// from the archive). A move's snapshot, under the write fence, is [`fenced`].
pub async fn begin(
    client: &Client,
    schema: &str,
    history_table: &str,
    snapshot: Snapshot,
) -> Result<Catalog, Error> {
    let err = query_error("starting the snapshot");
    match snapshot {
        Snapshot::Read => {
            client
                .batch_execute(
                    "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
                     SET LOCAL statement_timeout = 0; SET LOCAL row_security = off",
                )
                .await
                .map_err(err)?;
            let read = match catalog::read(client, schema, history_table).await {
                Ok(c) => catalog::refuse_row_security(client, schema, &c, EXPORT)
                    .await
                    .map(|()| c),
                Err(e) => Err(e),
            };
            if read.is_err() {
                let _ = client.batch_execute("ROLLBACK").await;
            }
            read
        }
    }
}

/// Opens a snapshot transaction on `client` with every table of `schema` locked against
/// writes first (readers go on), by the write fence ([`fence::take`]): the snapshot sees
/// every write that will ever be made to this copy. The transaction is left open for the
/// caller to finish (a move's copy, an online move's cutover). Returns the catalog as the
/// snapshot sees it, and how the fence was taken.
pub async fn fenced(
    client: &Client,
    schema: &str,
    history_table: &str,
    watch: &fence::Watch<'_>,
) -> Result<(Catalog, fence::Taken), Error> {
    let before = catalog::read(client, schema, history_table).await?;
    catalog::refuse_row_security(client, schema, &before, EXPORT).await?;
    let tables = fence::order(client, schema, &before.lockable()).await?;
    // Neither statement takes a snapshot: it is taken after the locks.
    let taken = fence::take(
        client,
        watch,
        "BEGIN ISOLATION LEVEL REPEATABLE READ; \
         SET LOCAL statement_timeout = 0; SET LOCAL row_security = off",
        schema,
        &tables,
    )
    .await?;
    let after = catalog::read(client, schema, history_table).await;
    match after {
        Ok(c) if c.lockable() == before.lockable() => Ok((c, taken)),
        Ok(_) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(Error::failed(format!(
                "the tables of schema {} changed while they were being locked; nothing was changed, run it again",
                quote(schema)
            )))
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The manifest as written.
    pub manifest: Manifest,
}

/// Writes the archive of `tenant` to `sink_out`, inside the snapshot [`begin`] opened on
/// `client`. The caller ends the transaction.
pub async fn write(
    client: &Client,
    tenant: &Tenant,
    catalog: Catalog,
    history: &[AppliedRow],
    out: Box<dyn std::io::Write + Send>,
    label: &str,
) -> Result<Exported, Error> {
    let schema = &tenant.schema_name;
    let mut tables = catalog.tables;
    count_rows(client, schema, &mut tables).await?;
    let sequences = sequences(client, schema, &catalog.sequences).await?;
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .map_err(query_error("reading the server's version"))?
        .get(0);
    let manifest = Manifest {
        format: FORMAT,
        written_by: format!("tenantctl {}", env!("CARGO_PKG_VERSION")),
        created_at: OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or_else(|_| OffsetDateTime::now_utc())
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        source: Source {
            domain: tenant.domain.clone(),
            tenant_name: tenant.tenant_name.clone(),
            tenant_type: tenant.tenant_type.clone(),
            schema_name: schema.clone(),
            server: tenant.server.clone(),
        },
        server_version_num: version.parse().unwrap_or(0),
        revision: history.iter().map(|r| r.version).max(),
        migrations: history
            .iter()
            .map(|r| ArchivedMigration {
                version: r.version,
                name: r.name.clone(),
                checksum: r.checksum.to_string(),
            })
            .collect(),
        tables,
        sequences,
        materialized_views: catalog.materialized_views,
    };
    let mut sink = Sink::start(out, manifest.clone(), label);
    for (i, table) in manifest.tables.iter().enumerate() {
        if !table.columns.is_empty() {
            copy_out(client, schema, table, i, &mut sink).await?;
        }
        sink.end_table(i, table.rows).await?;
    }
    sink.finish().await?;
    Ok(Exported { manifest })
}

/// The `COPY` column list of a table.
pub fn column_list(table: &Table) -> String {
    table
        .columns
        .iter()
        .map(|c| quote(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `COPY` options for a table's format.
pub fn copy_options(format: CopyFormat) -> &'static str {
    match format {
        CopyFormat::Binary => "FORMAT binary",
        CopyFormat::Text => "FORMAT text",
    }
}

/// Streams one table's rows into the archive in pieces of about [`crate::data::archive::CHUNK`].
async fn copy_out(
    client: &Client,
    schema: &str,
    table: &Table,
    index: usize,
    sink: &mut Sink,
) -> Result<(), Error> {
    let sql = format!(
        "COPY {} ({}) TO STDOUT ({})",
        qualified(schema, &table.name),
        column_list(table),
        copy_options(table.format)
    );
    let doing = format!("reading the rows of {}", qualified(schema, &table.name));
    let stream = client.copy_out(&sql).await.map_err(query_error(&doing))?;
    pin_mut!(stream);
    let mut piece: Vec<u8> = Vec::with_capacity(crate::data::archive::CHUNK);
    while let Some(bytes) = stream.try_next().await.map_err(query_error(&doing))? {
        let bytes: Bytes = bytes;
        piece.extend_from_slice(&bytes);
        if piece.len() >= crate::data::archive::CHUNK {
            let full =
                std::mem::replace(&mut piece, Vec::with_capacity(crate::data::archive::CHUNK));
            sink.rows(index, full).await?;
        }
    }
    if !piece.is_empty() {
        sink.rows(index, piece).await?;
    }
    Ok(())
}

/// Counts every table's own rows in the snapshot, in one query: `ONLY`, as `COPY ... TO`
/// reads a table without its inheritance children, whose rows are carried as their own
/// tables'.
async fn count_rows(client: &Client, schema: &str, tables: &mut [Table]) -> Result<(), Error> {
    if tables.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = tables
        .iter()
        .map(|t| format!("(SELECT count(*) FROM ONLY {})", qualified(schema, &t.name)))
        .collect();
    // One row, one column per table; a wide SELECT is limited to 1664 columns, so count
    // in batches.
    let mut at = 0;
    for batch in parts.chunks(1000) {
        let row = client
            .query_one(&format!("SELECT {}", batch.join(", ")), &[])
            .await
            .map_err(query_error("counting the tenant's rows"))?;
        for i in 0..batch.len() {
            let n: i64 = row.get(i);
            tables[at].rows = n as u64;
            at += 1;
        }
    }
    Ok(())
}

/// Every sequence's state in the snapshot.
pub(crate) async fn sequences(
    client: &Client,
    schema: &str,
    names: &[String],
) -> Result<Vec<Sequence>, Error> {
    let mut out = Vec::with_capacity(names.len());
    // One round trip per batch, not per sequence.
    for batch in names.chunks(500) {
        let parts: Vec<String> = batch
            .iter()
            .enumerate()
            .map(|(i, name)| {
                format!(
                    "SELECT {i}, last_value, is_called FROM {}",
                    qualified(schema, name)
                )
            })
            .collect();
        let rows = client
            .query(&parts.join(" UNION ALL "), &[])
            .await
            .map_err(query_error(&format!(
                "reading the sequences of schema {}",
                quote(schema)
            )))?;
        let mut read: Vec<(i32, i64, bool)> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        read.sort_by_key(|r| r.0);
        for (i, last_value, is_called) in read {
            out.push(Sequence {
                name: batch[i as usize].clone(),
                last_value,
                is_called,
            });
        }
    }
    Ok(out)
}
