//! Loading an archive's rows into a schema the migrations have just built to the
//! archive's revision, on that schema's locked session, in one transaction.
//!
//! What makes the data come out exact, as the schema's owner and without superuser:
//! - the schema's own enabled triggers are disabled for the load and enabled again as
//!   they were (`ALTER TABLE ... DISABLE TRIGGER name`), so no trigger fires;
//! - its foreign keys are dropped and added back after every row is in, so rows load in
//!   any order (self-referencing and circular keys) and every key is checked once; a
//!   key that was `NOT VALID` is added back `NOT VALID`, unchecked;
//! - its CHECK constraints that are `NOT VALID` (on tables and domains) are dropped and
//!   declared again `NOT VALID` after the rows: the source may hold rows older than
//!   such a rule, which the rule lets stand, and the load neither rejects nor validates
//!   them; validated ones stay, and stay validated;
//! - tables whose `FORCE ROW LEVEL SECURITY` subjects their owner to their policies
//!   have it lifted for the load (the owner's `COPY ... FROM` would be refused) and put
//!   back after; row-level security that applies to a role not owning the table is
//!   refused before any row is loaded;
//! - every table is emptied first (`TRUNCATE`, removing rows a migration seeded), which
//!   also lets `COPY ... FREEZE` write the rows already frozen;
//! - a big table's indexes (plain ones, and those of its primary key and unique
//!   constraints) are dropped before its rows go in and built once after, as
//!   `pg_restore` does, before the foreign keys are added back;
//! - generated columns are not carried: `COPY` computes them;
//! - partitioned tables are loaded through their leaf partitions;
//! - sequences take the archive's state, then move past the largest value of the column
//!   that owns them (serial and identity);
//! - materialized views that were populated are refreshed, in creation order.

use crate::pg::db::Client;
use bytes::Bytes;
use futures::SinkExt;

use crate::data::archive::{Item, Manifest, Table};
use crate::data::catalog::{self, Catalog};
use crate::data::export::{column_list, copy_options};
use crate::data::stream::Source;
use crate::error::Error;
use crate::ident::{qualified, quote};
use crate::pg::db::query_error;

/// A table with at least this many rows has its indexes dropped before the load and
/// built after it.
pub const REBUILD_FROM_ROWS: u64 = 10_000;

/// `maintenance_work_mem` for those builds, in the load's transaction only.
const REBUILD_MEMORY: &str = "128MB";

/// What a load did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded {
    /// Tables loaded.
    pub tables: usize,
    /// Rows loaded.
    pub rows: u64,
}

/// What the rows a load checks come from, as its messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsFrom {
    /// An archive (an import, a restore, a clone's stream).
    Archive,
    /// The source schema of a move.
    MoveSource,
}

/// Checks that the schema the migrations built holds the tables of `manifest` (from
/// `from`) with the same columns: an exit-3 error naming the differences when it does not.
pub async fn check_built(
    client: &Client,
    schema: &str,
    history_table: &str,
    manifest: &Manifest,
    from: RowsFrom,
) -> Result<Catalog, Error> {
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .map_err(query_error("reading the server's version"))?
        .get(0);
    let here = version.parse::<i32>().unwrap_or(0) / 10000;
    let there = manifest.server_version_num / 10000;
    if there > here {
        return Err(Error::setup(format!(
            "the archive was taken from PostgreSQL {there} and this server runs PostgreSQL {here}: binary COPY data is read by the same or a newer major version only; nothing was changed"
        )));
    }
    let built = catalog::read(client, schema, history_table).await?;
    let mut differences = catalog::differences(&manifest.tables, &built.tables);
    for s in &manifest.sequences {
        if !built.sequences.contains(&s.name) {
            differences.push(format!(
                "sequence {} is not built by the migrations",
                quote(&s.name)
            ));
        }
    }
    if differences.is_empty() {
        return Ok(built);
    }
    let shown: Vec<String> = differences.iter().take(10).cloned().collect();
    let (whose, why) = match from {
        RowsFrom::Archive => (
            "the archive's",
            "the archive was taken from a schema changed outside its migrations",
        ),
        RowsFrom::MoveSource => (
            "the source schema's",
            "the source schema was changed outside its migrations",
        ),
    };
    Err(Error::setup(format!(
        "{whose} tables differ from what the migrations build at revision {}: {}{}; {why}, or the migrations were edited",
        crate::show::revision(manifest.revision),
        shown.join("; "),
        if differences.len() > shown.len() {
            format!(" (and {} more)", differences.len() - shown.len())
        } else {
            String::new()
        }
    )))
}

/// Loads every row of `source` into `schema` in one transaction on `client` (the
/// schema's locked session, `search_path` pinned). On any error the transaction is
/// rolled back and the schema is as the migrations left it.
pub async fn load(client: &Client, schema: &str, source: &mut Source) -> Result<Loaded, Error> {
    let triggers = catalog::triggers(client, schema).await?;
    let keys = catalog::foreign_keys(client, schema).await?;
    let checks = catalog::unvalidated_checks(client, schema).await?;
    let unvalidated = catalog::unvalidated_check_names(client, schema).await?;
    let owned = catalog::owned_sequences(client, schema).await?;
    let loaded_tables: Vec<String> = source
        .manifest
        .tables
        .iter()
        .map(|t| t.name.clone())
        .collect();
    let rls = catalog::row_security(client, schema, &loaded_tables).await?;
    if !rls.not_owned.is_empty() {
        return Err(Error::refused(format!(
            "the rows cannot be loaded: row-level security applies to role {} on {}, which it does not own; load as the tables' owner, a role with BYPASSRLS or a superuser",
            quote(&rls.role),
            crate::error::listed(
                &rls.not_owned
                    .iter()
                    .map(|t| qualified(schema, t))
                    .collect::<Vec<_>>(),
                10
            )
        )));
    }
    let around = Around {
        triggers: &triggers,
        keys: &keys,
        checks: &checks,
        unvalidated: &unvalidated,
        forced: &rls.forced,
    };
    // Big tables get their indexes built once after the rows, not row by row.
    let big: Vec<String> = source
        .manifest
        .tables
        .iter()
        .filter(|t| t.rows >= REBUILD_FROM_ROWS)
        .map(|t| t.name.clone())
        .collect();
    let rebuilt = catalog::rebuildable(client, schema, &big).await?;
    client
        .batch_execute("BEGIN; SET LOCAL statement_timeout = 0")
        .await
        .map_err(query_error("starting the load"))?;
    let loaded = load_in_transaction(client, schema, source, &around, &owned, &rebuilt).await;
    match loaded {
        Ok(l) => {
            client
                .batch_execute("COMMIT")
                .await
                .map_err(query_error("committing the load"))?;
            Ok(l)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// What the load steps around while the rows go in, and puts back after.
struct Around<'a> {
    triggers: &'a [catalog::Trigger],
    keys: &'a [catalog::ForeignKey],
    checks: &'a [catalog::Unvalidated],
    /// Every CHECK constraint not validated before the load, as `(table, name)`.
    unvalidated: &'a [(String, String)],
    /// Tables whose `FORCE ROW LEVEL SECURITY` is lifted for the load.
    forced: &'a [String],
}

fn force_row_security(schema: &str, table: &str, on: bool) -> String {
    format!(
        "ALTER TABLE {} {}FORCE ROW LEVEL SECURITY",
        qualified(schema, table),
        if on { "" } else { "NO " }
    )
}

async fn load_in_transaction(
    client: &Client,
    schema: &str,
    source: &mut Source,
    around: &Around<'_>,
    owned: &[catalog::OwnedSequence],
    rebuilt: &[catalog::Rebuilt],
) -> Result<Loaded, Error> {
    let manifest = source.manifest.clone();
    let Around {
        triggers,
        keys,
        checks,
        unvalidated,
        forced,
    } = *around;
    let mut prepare: Vec<String> = triggers.iter().map(|t| t.disable(schema)).collect();
    prepare.extend(forced.iter().map(|t| force_row_security(schema, t, false)));
    prepare.extend(keys.iter().map(|k| k.drop(schema)));
    prepare.extend(checks.iter().map(|c| c.drop(schema)));
    prepare.extend(rebuilt.iter().map(|r| r.drop(schema)));
    if !manifest.tables.is_empty() {
        let all: Vec<String> = manifest
            .tables
            .iter()
            .map(|t| qualified(schema, &t.name))
            .collect();
        prepare.push(format!("TRUNCATE ONLY {}", all.join(", ")));
    }
    if !prepare.is_empty() {
        client
            .batch_execute(&prepare.join(";\n"))
            .await
            .map_err(query_error("preparing the tables for loading"))?;
    }
    let rows = async {
        let mut rows_total = 0u64;
        let mut current: Option<(usize, std::pin::Pin<Box<tokio_postgres::CopyInSink<Bytes>>>)> = None;
        loop {
            match source.next().await? {
                Item::Rows { table, data } => {
                    if current.as_ref().map(|(t, _)| *t) != Some(table) {
                        let t = &manifest.tables[table];
                        current = Some((table, Box::pin(copy_in(client, schema, t).await?)));
                    }
                    let (_, sink) = current.as_mut().expect("set above");
                    sink.send(Bytes::from(data))
                        .await
                        .map_err(query_error(&loading(schema, &manifest.tables[table])))?;
                }
                Item::End { table, rows } => {
                    let t = &manifest.tables[table];
                    let loaded = match current.take() {
                        Some((i, mut sink)) if i == table => sink
                            .as_mut()
                            .finish()
                            .await
                            .map_err(query_error(&loading(schema, t)))?,
                        _ if t.columns.is_empty() => {
                            // No carried column: the rows are all defaults and generated
                            // values.
                            client
                                .execute(
                                    &format!(
                                        "INSERT INTO {} SELECT FROM pg_catalog.generate_series(1, $1::bigint)",
                                        qualified(schema, &t.name)
                                    ),
                                    &[&(rows as i64)],
                                )
                                .await
                                .map_err(query_error(&loading(schema, t)))?
                        }
                        _ => 0,
                    };
                    if loaded != rows || rows != t.rows {
                        return Err(Error::usage(format!(
                            "archive {}: table {} holds {loaded} rows, but the archive records {rows} (manifest: {}); it is corrupt",
                            source.label(),
                            quote(&t.name),
                            t.rows
                        )));
                    }
                    rows_total += loaded;
                }
                Item::Done => break,
            }
        }
        Ok(rows_total)
    }
    .await;
    let rows_total = match rows {
        Ok(n) => n,
        Err(e) => return Err(source.blame(e).await),
    };
    // Indexes (and the keys foreign keys point at) first, then the foreign keys.
    let mut finish: Vec<String> = Vec::new();
    if !rebuilt.is_empty() {
        finish.push(format!(
            "SET LOCAL maintenance_work_mem = '{REBUILD_MEMORY}'"
        ));
    }
    finish.extend(rebuilt.iter().map(|r| r.build(schema)));
    finish.extend(keys.iter().map(|k| k.add(schema)));
    for s in &manifest.sequences {
        finish.push(format!(
            "SELECT pg_catalog.setval({}, {}, {})",
            crate::engine::plan::literal(&qualified(schema, &s.name)),
            s.last_value,
            s.is_called
        ));
    }
    for o in owned {
        // Past the column's largest value, when the archive's state is not already.
        let seq = qualified(schema, &o.sequence);
        finish.push(format!(
            "SELECT pg_catalog.setval({lit}, m) FROM (SELECT max({col})::bigint AS m FROM {table}) AS x \
             WHERE m IS NOT NULL AND m >= (SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM {seq})",
            lit = crate::engine::plan::literal(&seq),
            col = quote(&o.column),
            table = qualified(schema, &o.table),
        ));
    }
    for m in &manifest.materialized_views {
        finish.push(format!(
            "REFRESH MATERIALIZED VIEW {}",
            qualified(schema, m)
        ));
    }
    // After the refreshes: a domain's rule not validated binds what a refresh computes.
    finish.extend(checks.iter().rev().map(|c| c.add(schema)));
    finish.extend(triggers.iter().map(|t| t.restore(schema)));
    finish.extend(forced.iter().map(|t| force_row_security(schema, t, true)));
    if !finish.is_empty() {
        client
            .batch_execute(&finish.join(";\n"))
            .await
            .map_err(query_error(
            "restoring the foreign keys, constraints, sequences, materialized views, triggers and row-level security after loading",
        ))?;
    }
    if !checks.is_empty() {
        validate_again(client, schema, unvalidated).await?;
    }
    Ok(Loaded {
        tables: manifest.tables.len(),
        rows: rows_total,
    })
}

/// After the CHECK constraints that were `NOT VALID` were declared again: an inherited
/// copy validated on its own table came back with its parent's, not validated; validates
/// it again, as it was (`before`: the constraints not validated before they were taken
/// off; the rows passed the others at the source).
pub(crate) async fn validate_again(
    client: &Client,
    schema: &str,
    before: &[(String, String)],
) -> Result<(), Error> {
    let now = catalog::unvalidated_check_names(client, schema).await?;
    let again: Vec<String> = now
        .iter()
        .filter(|c| !before.contains(c))
        .map(|(table, name)| {
            format!(
                "ALTER TABLE {} VALIDATE CONSTRAINT {}",
                qualified(schema, table),
                quote(name)
            )
        })
        .collect();
    if again.is_empty() {
        return Ok(());
    }
    client
        .batch_execute(&again.join(";\n"))
        .await
        .map_err(query_error(
            "validating again the constraints that were validated",
        ))
}

fn loading(schema: &str, table: &Table) -> String {
    format!("loading the rows of {}", qualified(schema, &table.name))
}

async fn copy_in(
    client: &Client,
    schema: &str,
    table: &Table,
) -> Result<tokio_postgres::CopyInSink<Bytes>, Error> {
    let sql = format!(
        "COPY {} ({}) FROM STDIN ({}, FREEZE)",
        qualified(schema, &table.name),
        column_list(table),
        copy_options(table.format)
    );
    client
        .copy_in(&sql)
        .await
        .map_err(query_error(&loading(schema, table)))
}
