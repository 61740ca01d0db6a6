//! What a tenant's schema holds that matters for carrying its data: the tables whose rows
//! are carried (with their columns and COPY format), sequences, materialized views, and
//! what loading must step around (the tenant's own triggers, foreign keys). Also the
//! objects an archive cannot carry, refused before anything is written.

use crate::data::archive::{Column, CopyFormat, Table};
use tokio_postgres::Client;

use crate::error::Error;
use crate::ident::{qualified, quote};
use crate::pg::db::{self, query_error, Reads};

/// The schema's carried content, as read in one snapshot (row counts are filled in by
/// the exporter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Tables with storage (plain tables and the leaf partitions of partitioned ones),
    /// by name.
    pub tables: Vec<Table>,
    /// Partitioned tables (no rows of their own), by name.
    pub partitioned: Vec<String>,
    /// Sequences, by name.
    pub sequences: Vec<String>,
    /// Populated materialized views, in creation order (so one built on another is
    /// refreshed after it).
    pub materialized_views: Vec<String>,
}

impl Catalog {
    /// Every table that a write fence must lock: plain tables, partitions and
    /// partitioned tables.
    pub fn lockable(&self) -> Vec<String> {
        let mut all: Vec<String> = self.tables.iter().map(|t| t.name.clone()).collect();
        all.extend(self.partitioned.iter().cloned());
        all.sort();
        all
    }
}

/// Reads what `schema` holds, leaving out `history_table` (rebuilt by the migrations).
/// Refuses (before anything is written) what an archive cannot carry: foreign tables,
/// columns that may point at large objects, partitions living in another schema.
pub async fn read<C: Reads + ?Sized>(
    client: &C,
    schema: &str,
    history_table: &str,
) -> Result<Catalog, Error> {
    let rows = db::read(
        client,
        "reading the schema's tables",
        client.pg().query(
            "SELECT c.relname::text, c.relkind::text, a.attname::text, \
                    pg_catalog.format_type(a.atttypid, a.atttypmod), a.attgenerated::text, \
                    (bt.typtype = 'c' OR (bt.typcategory = 'A' AND bt.typelem >= 16384)), \
                    (bt.oid = 'pg_catalog.oid'::pg_catalog.regtype OR bt.typname = 'lo'), \
                    c.relispopulated \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_catalog.pg_attribute a \
                    ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             LEFT JOIN LATERAL ( \
                 WITH RECURSIVE b(oid, depth) AS ( \
                     SELECT a.atttypid, 0 \
                     UNION ALL \
                     SELECT t.typbasetype, b.depth + 1 FROM pg_catalog.pg_type t \
                     JOIN b ON t.oid = b.oid WHERE t.typtype = 'd') \
                 SELECT oid FROM b ORDER BY depth DESC LIMIT 1) base ON true \
             LEFT JOIN pg_catalog.pg_type bt ON bt.oid = base.oid \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'm', 'f', 'S') \
               AND c.relname <> $2 \
             ORDER BY c.relkind = 'm', c.oid, a.attnum",
            &[&schema, &history_table],
        ),
    )
    .await?;
    let mut catalog = Catalog {
        tables: Vec::new(),
        partitioned: Vec::new(),
        sequences: Vec::new(),
        materialized_views: Vec::new(),
    };
    let mut refusals = Vec::new();
    for row in &rows {
        let name: String = row.get(0);
        let kind: String = row.get(1);
        match kind.as_str() {
            "f" => {
                if !refusals.iter().any(|r: &String| r.contains(&quote(&name))) {
                    refusals.push(format!(
                        "{} is a foreign table: its rows live on another server",
                        qualified(schema, &name)
                    ));
                }
                continue;
            }
            "S" => {
                if catalog.sequences.last() != Some(&name) {
                    catalog.sequences.push(name);
                }
                continue;
            }
            "m" => {
                let populated: bool = row.get(7);
                if populated && catalog.materialized_views.last() != Some(&name) {
                    catalog.materialized_views.push(name);
                }
                continue;
            }
            "p" => {
                if catalog.partitioned.last() != Some(&name) {
                    catalog.partitioned.push(name);
                }
                continue;
            }
            _ => {}
        }
        if catalog.tables.last().map(|t| &t.name) != Some(&name) {
            catalog.tables.push(Table {
                name: name.clone(),
                columns: Vec::new(),
                generated: Vec::new(),
                format: CopyFormat::Binary,
                rows: 0,
            });
        }
        let Some(column) = row.get::<_, Option<String>>(2) else {
            continue;
        };
        let type_name: String = row.get(3);
        let generated: String = row.get(4);
        let names_type_oids: bool = row.get::<_, Option<bool>>(5).unwrap_or(false);
        let large_object: bool = row.get::<_, Option<bool>>(6).unwrap_or(false);
        if large_object {
            refusals.push(format!(
                "column {} of {} is of type {type_name}, which points at large objects, and large objects are not carried",
                quote(&column),
                qualified(schema, &name)
            ));
        }
        let table = catalog.tables.last_mut().expect("pushed above");
        if !generated.is_empty() {
            table.generated.push(column);
            continue;
        }
        if names_type_oids {
            table.format = CopyFormat::Text;
        }
        table.columns.push(Column {
            name: column,
            type_name,
        });
    }
    catalog.tables.sort_by(|a, b| a.name.cmp(&b.name));
    catalog.partitioned.sort();
    catalog.sequences.sort();
    for (parent, child) in partitions_elsewhere(client, schema).await? {
        refusals.push(format!(
            "partition {child} of {} lives in another schema, so its rows would be left behind",
            qualified(schema, &parent)
        ));
    }
    if !refusals.is_empty() {
        let shown: Vec<&String> = refusals.iter().take(10).collect();
        let more = refusals.len().saturating_sub(shown.len());
        return Err(Error::refused(format!(
            "schema {} holds what an archive cannot carry: {}{}; nothing was written",
            quote(schema),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            }
        )));
    }
    Ok(catalog)
}

/// The rows `sql` (the schema's name its `$1`) returns, each made into a `T` by `make`;
/// `what` names the read in errors.
async fn per_row<C: Reads + ?Sized, T>(
    client: &C,
    what: &str,
    sql: &str,
    schema: &str,
    make: impl Fn(&tokio_postgres::Row) -> T,
) -> Result<Vec<T>, Error> {
    let rows = db::read(client, what, client.pg().query(sql, &[&schema])).await?;
    Ok(rows.iter().map(make).collect())
}

/// Partitions (or inheritance children) in another schema of tables in `schema`.
async fn partitions_elsewhere<C: Reads + ?Sized>(
    client: &C,
    schema: &str,
) -> Result<Vec<(String, String)>, Error> {
    per_row(
        client,
        "reading the schema's partitions",
        "SELECT p.relname::text, pg_catalog.format('%I.%I', cn.nspname, c.relname) \
             FROM pg_catalog.pg_inherits i \
             JOIN pg_catalog.pg_class p ON p.oid = i.inhparent \
             JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace \
             JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid \
             JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace \
             WHERE pn.nspname = $1 AND cn.nspname <> $1 ORDER BY 1, 2",
        schema,
        |r| (r.get(0), r.get(1)),
    )
    .await
}

/// A user trigger of the schema that is enabled, with how it is enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Its table.
    pub table: String,
    /// Its name.
    pub name: String,
    /// `pg_trigger.tgenabled`: `O` (origin), `A` (always) or `R` (replica).
    pub enabled: String,
}

impl Trigger {
    /// Disables it.
    pub fn disable(&self, schema: &str) -> String {
        format!(
            "ALTER TABLE {} DISABLE TRIGGER {}",
            qualified(schema, &self.table),
            quote(&self.name)
        )
    }

    /// Enables it as it was.
    pub fn restore(&self, schema: &str) -> String {
        let how = match self.enabled.as_str() {
            "A" => "ENABLE ALWAYS TRIGGER",
            "R" => "ENABLE REPLICA TRIGGER",
            _ => "ENABLE TRIGGER",
        };
        format!(
            "ALTER TABLE {} {how} {}",
            qualified(schema, &self.table),
            quote(&self.name)
        )
    }
}

/// The schema's enabled user triggers on tables (not the internal ones behind foreign
/// keys), the ones that cloned to partitions left out (their parent's switch covers them),
/// and the version index's trigger left out (it only recomputes the schema's index row,
/// once per statement: see [`crate::registry::versions`]).
pub async fn triggers<C: Reads + ?Sized>(client: &C, schema: &str) -> Result<Vec<Trigger>, Error> {
    per_row(
        client,
        "reading the schema's triggers",
        "SELECT c.relname::text, t.tgname::text, t.tgenabled::text \
             FROM pg_catalog.pg_trigger t \
             JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND NOT t.tgisinternal AND t.tgenabled <> 'D' \
               AND c.relkind IN ('r', 'p') AND t.tgname <> 'tenantctl_versions' \
             ORDER BY 1, 2",
        schema,
        |r| Trigger {
            table: r.get(0),
            name: r.get(1),
            enabled: r.get(2),
        },
    )
    .await
}

/// A foreign key of one of the schema's tables, as its definition reads in the session
/// that read it (names outside the session's `search_path` are qualified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// The table it is on.
    pub table: String,
    /// Its name.
    pub name: String,
    /// `pg_get_constraintdef`.
    pub definition: String,
    /// Its comment.
    pub comment: Option<String>,
}

impl ForeignKey {
    /// Drops it.
    pub fn drop(&self, schema: &str) -> String {
        format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            qualified(schema, &self.table),
            quote(&self.name)
        )
    }

    /// Adds it again (checking every row), with its comment.
    pub fn add(&self, schema: &str) -> String {
        let mut sql = format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {}",
            qualified(schema, &self.table),
            quote(&self.name),
            self.definition
        );
        if let Some(c) = &self.comment {
            sql.push_str(&format!(
                "; COMMENT ON CONSTRAINT {} ON {} IS {}",
                quote(&self.name),
                qualified(schema, &self.table),
                crate::engine::plan::literal(c)
            ));
        }
        sql
    }
}

/// The foreign keys declared on the schema's tables (on a partitioned table, the
/// parent's only: its partitions' copies follow it).
pub async fn foreign_keys<C: Reads + ?Sized>(
    client: &C,
    schema: &str,
) -> Result<Vec<ForeignKey>, Error> {
    per_row(
        client,
        "reading the schema's foreign keys",
        "SELECT t.relname::text, c.conname::text, pg_catalog.pg_get_constraintdef(c.oid), \
                    pg_catalog.obj_description(c.oid, 'pg_constraint') \
             FROM pg_catalog.pg_constraint c \
             JOIN pg_catalog.pg_class t ON t.oid = c.conrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
             WHERE n.nspname = $1 AND c.contype = 'f' AND c.conparentid = 0 \
             ORDER BY 1, 2",
        schema,
        |r| ForeignKey {
            table: r.get(0),
            name: r.get(1),
            definition: r.get(2),
            comment: r.get(3),
        },
    )
    .await
}

/// A sequence owned by a column (serial or identity), whose next value must come after
/// the column's largest value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedSequence {
    /// The sequence.
    pub sequence: String,
    /// The table.
    pub table: String,
    /// The column.
    pub column: String,
}

/// The schema's ascending sequences owned by a column of one of its tables.
pub async fn owned_sequences<C: Reads + ?Sized>(
    client: &C,
    schema: &str,
) -> Result<Vec<OwnedSequence>, Error> {
    per_row(
        client,
        "reading the schema's owned sequences",
        "SELECT s.relname::text, t.relname::text, a.attname::text \
             FROM pg_catalog.pg_depend d \
             JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
             JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace \
             JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid \
             JOIN pg_catalog.pg_class t ON t.oid = d.refobjid AND t.relkind IN ('r', 'p') \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid \
             WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
               AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
               AND d.deptype IN ('a', 'i') AND n.nspname = $1 AND q.seqincrement > 0 \
               AND t.relnamespace = n.oid \
             ORDER BY 1",
        schema,
        |r| OwnedSequence {
            sequence: r.get(0),
            table: r.get(1),
            column: r.get(2),
        },
    )
    .await
}

/// How two catalogs' carried tables differ: what an archive holds that the schema built
/// by the migrations does not, and the reverse. Empty when they match.
pub fn differences(archived: &[Table], built: &[Table]) -> Vec<String> {
    let mut out = Vec::new();
    for a in archived {
        match built.iter().find(|b| b.name == a.name) {
            None => out.push(format!(
                "table {} is not built by the migrations",
                quote(&a.name)
            )),
            Some(b) => {
                for c in &a.columns {
                    match b.columns.iter().find(|x| x.name == c.name) {
                        None => out.push(format!(
                            "column {}.{} ({}) is not built by the migrations",
                            quote(&a.name),
                            quote(&c.name),
                            c.type_name
                        )),
                        Some(x) if x.type_name != c.type_name => out.push(format!(
                            "column {}.{} is {} in the archive but {} here",
                            quote(&a.name),
                            quote(&c.name),
                            c.type_name,
                            x.type_name
                        )),
                        Some(_) => {}
                    }
                }
                let mut ag = a.generated.clone();
                let mut bg = b.generated.clone();
                ag.sort();
                bg.sort();
                if ag != bg {
                    out.push(format!(
                        "table {} has generated columns {:?} in the archive but {:?} here",
                        quote(&a.name),
                        ag,
                        bg
                    ));
                }
                for x in &b.columns {
                    if !a.columns.iter().any(|c| c.name == x.name) {
                        out.push(format!(
                            "column {}.{} ({}) is built by the migrations but not in the archive",
                            quote(&b.name),
                            quote(&x.name),
                            x.type_name
                        ));
                    }
                }
            }
        }
    }
    for b in built {
        if !archived.iter().any(|a| a.name == b.name) {
            out.push(format!(
                "table {} is built by the migrations but not in the archive",
                quote(&b.name)
            ));
        }
    }
    out
}

/// An index that loading drops before the rows go in and builds again after, once:
/// cheaper than inserting every row into it (a plain index, or the one behind a primary
/// key or unique constraint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// The table.
    pub table: String,
    /// The index (the constraint's name, for a constraint).
    pub name: String,
    /// For a constraint, `pg_get_constraintdef`; `None` for a plain index.
    pub constraint: Option<String>,
    /// For a plain index, `pg_get_indexdef`.
    pub definition: String,
    /// The index's or the constraint's comment.
    pub comment: Option<String>,
}

impl Rebuilt {
    /// Drops it.
    pub fn drop(&self, schema: &str) -> String {
        match &self.constraint {
            Some(_) => format!(
                "ALTER TABLE {} DROP CONSTRAINT {}",
                qualified(schema, &self.table),
                quote(&self.name)
            ),
            None => format!("DROP INDEX {}", qualified(schema, &self.name)),
        }
    }

    /// Builds it again, with its comment.
    pub fn build(&self, schema: &str) -> String {
        let mut sql = match &self.constraint {
            Some(def) => format!(
                "ALTER TABLE {} ADD CONSTRAINT {} {def}",
                qualified(schema, &self.table),
                quote(&self.name)
            ),
            None => self.definition.clone(),
        };
        if let Some(c) = &self.comment {
            let on = match &self.constraint {
                Some(_) => format!(
                    "CONSTRAINT {} ON {}",
                    quote(&self.name),
                    qualified(schema, &self.table)
                ),
                None => format!("INDEX {}", qualified(schema, &self.name)),
            };
            sql.push_str(&format!(
                "; COMMENT ON {on} IS {}",
                crate::engine::plan::literal(c)
            ));
        }
        sql
    }
}

/// The indexes of `tables` (plain tables, not partitions) that can be dropped and built
/// again without losing anything: plain indexes and primary key or unique constraints
/// whose index carries the constraint's name, none of them a replica identity, a
/// clustering index, in a tablespace of its own, with storage options, or attached to a
/// partitioned index, nor one a foreign key from another schema points at (the schema's
/// own foreign keys are dropped first and added back after).
pub async fn rebuildable<C: Reads + ?Sized>(
    client: &C,
    schema: &str,
    tables: &[String],
) -> Result<Vec<Rebuilt>, Error> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db::read(
        client,
        "reading the schema's indexes",
        client.pg().query(
            "SELECT t.relname::text, i.relname::text, \
                    CASE WHEN c.oid IS NULL THEN NULL ELSE pg_catalog.pg_get_constraintdef(c.oid) END, \
                    pg_catalog.pg_get_indexdef(i.oid), \
                    CASE WHEN c.oid IS NULL THEN pg_catalog.obj_description(i.oid, 'pg_class') \
                         ELSE pg_catalog.obj_description(c.oid, 'pg_constraint') END \
             FROM pg_catalog.pg_index x \
             JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid \
             JOIN pg_catalog.pg_class t ON t.oid = x.indrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
             LEFT JOIN pg_catalog.pg_constraint c ON c.conindid = i.oid AND c.conrelid = t.oid \
                    AND c.contype IN ('p', 'u', 'x') \
             WHERE n.nspname = $1 AND t.relname = ANY($2) AND t.relkind = 'r' AND NOT t.relispartition \
               AND NOT x.indisreplident AND NOT x.indisclustered AND x.indisvalid \
               AND i.reltablespace = 0 AND i.reloptions IS NULL \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.oid) \
               AND (c.oid IS NULL OR (c.contype IN ('p', 'u') AND c.conname = i.relname)) \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint o WHERE o.conindid = i.oid AND o.contype NOT IN ('p', 'u')) \
             ORDER BY c.oid IS NOT NULL, 1, 2",
            &[&schema, &tables],
        ),
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| Rebuilt {
            table: r.get(0),
            name: r.get(1),
            constraint: r.get(2),
            definition: r.get(3),
            comment: r.get(4),
        })
        .collect())
}

/// What a constraint is declared on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConstraintOn {
    /// A table of the schema.
    Table(String),
    /// A domain of the schema.
    Domain(String),
}

impl ConstraintOn {
    fn alter(&self, schema: &str) -> String {
        match self {
            ConstraintOn::Table(t) => format!("ALTER TABLE {}", qualified(schema, t)),
            ConstraintOn::Domain(d) => format!("ALTER DOMAIN {}", qualified(schema, d)),
        }
    }

    fn comment_target(&self, schema: &str) -> String {
        match self {
            ConstraintOn::Table(t) => qualified(schema, t),
            ConstraintOn::Domain(d) => format!("DOMAIN {}", qualified(schema, d)),
        }
    }
}

/// What a schema's tables are bound by beyond their columns, one line an item, with the
/// schema's own name taken out of the definitions (so that two connections with other
/// `search_path`s read the same text): constraints (validated or not alike: a move keeps
/// rows, not validations),
/// `NOT NULL` columns, indexes, triggers, and row-level security policies. A move
/// rebuilds the schema by the migrations: an item made or dropped by hand on the source
/// would be lost or would refuse its rows, so the source and the build must agree.
pub async fn shape(
    client: &Client,
    schema: &str,
    history_table: &str,
) -> Result<std::collections::BTreeSet<String>, Error> {
    // Names outside the schema are shown qualified whatever the connection's
    // `search_path` (it is put back after).
    let before: String = client
        .query_one("SELECT pg_catalog.current_setting('search_path')", &[])
        .await
        .map_err(query_error("reading the search_path"))?
        .get(0);
    client
        .execute(
            "SELECT pg_catalog.set_config('search_path', 'pg_catalog', false)",
            &[],
        )
        .await
        .map_err(query_error("setting the search_path"))?;
    let rows = client
        .query(
            "WITH t AS (SELECT c.oid, c.relname FROM pg_catalog.pg_class c \
                        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relname <> $2), \
                  q AS (SELECT pg_catalog.quote_ident($1) || '.' AS prefix) \
             SELECT format('constraint %I on table %I: %s', k.conname, t.relname, \
                           replace(replace(pg_catalog.pg_get_constraintdef(k.oid), q.prefix, ''), ' NOT VALID', '')) \
             FROM pg_catalog.pg_constraint k JOIN t ON t.oid = k.conrelid, q \
             UNION ALL \
             SELECT format('NOT NULL on column %I.%I', t.relname, a.attname) \
             FROM pg_catalog.pg_attribute a JOIN t ON t.oid = a.attrelid \
             WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attnotnull \
             UNION ALL \
             SELECT format('index %I: %s', i.relname, replace(pg_catalog.pg_get_indexdef(x.indexrelid), q.prefix, '')) \
             FROM pg_catalog.pg_index x JOIN t ON t.oid = x.indrelid \
             JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid, q \
             UNION ALL \
             SELECT format('trigger %I on table %I: %s', g.tgname, t.relname, \
                           replace(pg_catalog.pg_get_triggerdef(g.oid), q.prefix, '')) \
             FROM pg_catalog.pg_trigger g JOIN t ON t.oid = g.tgrelid, q WHERE NOT g.tgisinternal \
               AND g.tgname <> 'tenantctl_versions' \
             UNION ALL \
             SELECT format('policy %I on table %I (%s, %s)', p.polname, t.relname, p.polcmd, \
                           coalesce(replace(pg_catalog.pg_get_expr(p.polqual, p.polrelid), q.prefix, ''), '')) \
             FROM pg_catalog.pg_policy p JOIN t ON t.oid = p.polrelid, q",
            &[&schema, &history_table],
        )
        .await;
    let restored = client
        .execute(
            "SELECT pg_catalog.set_config('search_path', $1, false)",
            &[&before],
        )
        .await;
    let rows = rows.map_err(query_error(
        "reading the schema's constraints, indexes, triggers and policies",
    ))?;
    restored.map_err(query_error("setting the search_path back"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// What differs between the source's [`shape`] and the build's, in the words of a
/// refusal.
pub fn shape_differences(
    source: &std::collections::BTreeSet<String>,
    built: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    source
        .difference(built)
        .map(|s| format!("{s} is on the source but not built by the migrations"))
        .chain(
            built
                .difference(source)
                .map(|b| format!("{b} is built by the migrations but not on the source")),
        )
        .collect()
}

/// A CHECK constraint that is not validated (`NOT VALID`), declared on one of the
/// schema's tables or domains. It binds new rows only, so the source may hold rows older
/// than it that break it: loading takes it off before the rows go in and declares it
/// again after, still `NOT VALID` (its definition says so), so nothing validates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unvalidated {
    /// Where it is declared.
    pub on: ConstraintOn,
    /// Its name.
    pub name: String,
    /// `pg_get_constraintdef`, ending in `NOT VALID`.
    pub definition: String,
    /// Its comment.
    pub comment: Option<String>,
}

impl Unvalidated {
    /// Drops it (from the inheritance children too, where they have it only from here).
    pub fn drop(&self, schema: &str) -> String {
        format!(
            "{} DROP CONSTRAINT {}",
            self.on.alter(schema),
            quote(&self.name)
        )
    }

    /// Declares it again, not validated, with its comment.
    pub fn add(&self, schema: &str) -> String {
        let mut sql = format!(
            "{} ADD CONSTRAINT {} {}",
            self.on.alter(schema),
            quote(&self.name),
            self.definition
        );
        if let Some(c) = &self.comment {
            sql.push_str(&format!(
                "; COMMENT ON CONSTRAINT {} ON {} IS {}",
                quote(&self.name),
                self.on.comment_target(schema),
                crate::engine::plan::literal(c)
            ));
        }
        sql
    }
}

/// The schema's CHECK constraints that are not validated and declared on their table or
/// domain itself (not only inherited), ancestors before descendants: the order they are
/// dropped in (a table's inherited copy goes with its parent's), and, reversed, declared
/// again in (a parent's then merges with a child's own copy, as before).
pub async fn unvalidated_checks(client: &Client, schema: &str) -> Result<Vec<Unvalidated>, Error> {
    let rows = client
        .query(
            "SELECT coalesce(t.relname, d.typname)::text, d.oid IS NOT NULL, c.conname::text, \
                    pg_catalog.pg_get_constraintdef(c.oid), \
                    pg_catalog.obj_description(c.oid, 'pg_constraint'), \
                    (WITH RECURSIVE up(rel) AS ( \
                         SELECT t.oid \
                         UNION SELECT i.inhparent FROM pg_catalog.pg_inherits i JOIN up ON i.inhrelid = up.rel) \
                     SELECT count(*) FROM up) AS ancestors \
             FROM pg_catalog.pg_constraint c \
             LEFT JOIN pg_catalog.pg_class t ON t.oid = c.conrelid \
             LEFT JOIN pg_catalog.pg_type d ON d.oid = c.contypid \
             JOIN pg_catalog.pg_namespace n ON n.oid = coalesce(t.relnamespace, d.typnamespace) \
             WHERE n.nspname = $1 AND c.contype = 'c' AND NOT c.convalidated AND c.conislocal \
             ORDER BY ancestors, 1, 3",
            &[&schema],
        )
        .await
        .map_err(query_error("reading the schema's constraints that are not validated"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let owner: String = r.get(0);
            Unvalidated {
                on: if r.get::<_, bool>(1) {
                    ConstraintOn::Domain(owner)
                } else {
                    ConstraintOn::Table(owner)
                },
                name: r.get(2),
                definition: r.get(3),
                comment: r.get(4),
            }
        })
        .collect())
}

/// The schema's CHECK constraints that are not validated, each as `(table, name)`, the
/// inherited copies included (domains' constraints are never inherited and left out).
pub async fn unvalidated_check_names(
    client: &Client,
    schema: &str,
) -> Result<Vec<(String, String)>, Error> {
    let rows = client
        .query(
            "SELECT t.relname::text, c.conname::text FROM pg_catalog.pg_constraint c \
             JOIN pg_catalog.pg_class t ON t.oid = c.conrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
             WHERE n.nspname = $1 AND c.contype = 'c' AND NOT c.convalidated \
             ORDER BY 1, 2",
            &[&schema],
        )
        .await
        .map_err(query_error(
            "reading the schema's constraints that are not validated",
        ))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Row-level security that applies to the session's role on the schema's tables: what
/// it reads through them is filtered by their policies, and `COPY ... FROM` into them is
/// refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowSecurity {
    /// The role.
    pub role: String,
    /// Tables the role owns whose `FORCE ROW LEVEL SECURITY` subjects their owner to
    /// their policies.
    pub forced: Vec<String>,
    /// Tables with row-level security the role does not own.
    pub not_owned: Vec<String>,
}

impl RowSecurity {
    /// Whether it applies to no table.
    pub fn is_empty(&self) -> bool {
        self.forced.is_empty() && self.not_owned.is_empty()
    }

    /// The refusal of reading every row of these tables: what applies and what to do.
    pub fn refusal(&self, schema: &str, doing: &str) -> Error {
        let list = |names: &[String]| {
            names
                .iter()
                .map(|n| qualified(schema, n))
                .collect::<Vec<_>>()
        };
        let mut what = Vec::new();
        if !self.forced.is_empty() {
            let (verb, their) = if self.forced.len() == 1 {
                ("has", "its")
            } else {
                ("have", "their")
            };
            what.push(format!(
                "{} {verb} FORCE ROW LEVEL SECURITY, so {their} policies apply to {their} owner {} too",
                crate::error::listed(&list(&self.forced), 10),
                quote(&self.role)
            ));
        }
        if !self.not_owned.is_empty() {
            what.push(format!(
                "{} {} row-level security and {} not owned by {}",
                crate::error::listed(&list(&self.not_owned), 10),
                if self.not_owned.len() == 1 {
                    "has"
                } else {
                    "have"
                },
                if self.not_owned.len() == 1 {
                    "is"
                } else {
                    "are"
                },
                quote(&self.role)
            ));
        }
        let mut todo = format!(
            "run it as a role with BYPASSRLS (ALTER ROLE {} BYPASSRLS, as a superuser) or as a superuser",
            quote(&self.role)
        );
        if !self.forced.is_empty() {
            todo.push_str(
                ", or lift the FORCE for the time of it (ALTER TABLE ... NO FORCE ROW LEVEL SECURITY, then FORCE ROW LEVEL SECURITY again)",
            );
        }
        Error::refused(format!(
            "{doing} must read every row, but row-level security applies to role {}: {}; {todo}. Nothing was written",
            quote(&self.role),
            what.join("; ")
        ))
    }
}

/// The row-level security that applies to the session's role on `tables` of `schema`
/// (by `row_security_active`: not for a superuser or a role with `BYPASSRLS`, nor for a
/// table's owner unless the table forces it).
pub async fn row_security(
    client: &Client,
    schema: &str,
    tables: &[String],
) -> Result<RowSecurity, Error> {
    let rows = client
        .query(
            "SELECT c.relname::text, pg_catalog.pg_has_role(c.relowner, 'USAGE'), current_user::text \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = ANY($2) AND c.relrowsecurity \
               AND pg_catalog.row_security_active(c.oid) \
             ORDER BY 1",
            &[&schema, &tables],
        )
        .await
        .map_err(query_error("reading the row-level security of the schema's tables"))?;
    let mut out = RowSecurity::default();
    for r in &rows {
        out.role = r.get(2);
        if r.get::<_, bool>(1) {
            out.forced.push(r.get(0));
        } else {
            out.not_owned.push(r.get(0));
        }
    }
    Ok(out)
}

/// Refuses (before anything is read) reading `catalog`'s tables when row-level security
/// applies to the session's role on any of them: the archive would silently miss rows.
pub async fn refuse_row_security(
    client: &Client,
    schema: &str,
    catalog: &Catalog,
    doing: &str,
) -> Result<(), Error> {
    let names: Vec<String> = catalog.tables.iter().map(|t| t.name.clone()).collect();
    let rls = row_security(client, schema, &names).await?;
    if rls.is_empty() {
        return Ok(());
    }
    Err(rls.refusal(schema, doing))
}
