//! What is in the database: which tenant schemas exist and what their history tables
//! say, read for many tenants in a constant number of round trips.
//!
//! One catalog query finds every schema and history table; then each history table is
//! read with its own `COPY`, pipelined on a few connections (see [`observe_with`]). A
//! history table that cannot be read (wrong column types, a row that does not parse) is
//! reported for that tenant alone.

use std::collections::HashMap;

use futures::StreamExt;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_postgres::types::Type;

use crate::error::{Error, ErrorKind};
use crate::files::migrations::AppliedRow;
use crate::ident::qualified;
use crate::pg::db::{self, Reads};

/// History tables per connection: a fleet read opens one more connection (up to four in
/// all) for each this many tenants beyond the first.
pub const PER_CONNECTION: usize = 200;

/// What was found of one tenant's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaState {
    /// The schema exists.
    pub schema_exists: bool,
    /// The history table exists.
    pub history_exists: bool,
    /// Its rows by version, or why they could not be read.
    pub history: Result<Vec<AppliedRow>, String>,
    /// What the schema holds when it has no history table (nothing otherwise).
    pub untracked: Untracked,
    /// The history could not be read because its server could not be reached, went
    /// away or stopped answering during the read (`history` says which server and
    /// why): nothing is known of the schema, and nothing about it is drift.
    pub unreachable: bool,
    /// Whether the version index answered for the schema, and if not, why.
    pub index: IndexUse,
}

/// Whether a schema's state came from the version index (see
/// [`crate::registry::versions`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IndexUse {
    /// The read did not ask the index.
    #[default]
    NotAsked,
    /// The index vouched for the history: its rows are the files' first versions, with
    /// no `applied_on`.
    Trusted,
    /// The index could not vouch for it, and the schema was read in full: why.
    Bypassed(crate::registry::versions::Bypass),
}

/// What a schema without tenantctl's history table already holds: objects a first
/// migration would run over, perhaps under another tool's history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Untracked {
    /// Objects recorded as living in the schema, counted as `tenant create` counts them
    /// (tables, views, sequences, functions, types, extensions, ...).
    pub objects: i64,
    /// Another migration tool's history table found there, e.g. `alembic_version`.
    pub other_history: Option<String>,
}

/// History tables of other migration tools, and the tool each belongs to.
pub const OTHER_HISTORIES: &[(&str, &str)] = &[
    ("alembic_version", "Alembic"),
    ("flyway_schema_history", "Flyway"),
    ("databasechangelog", "Liquibase"),
    ("schema_migrations", "Rails, golang-migrate or dbmate"),
    ("django_migrations", "Django"),
    ("goose_db_version", "goose"),
    ("knex_migrations", "Knex"),
    ("__EFMigrationsHistory", "Entity Framework"),
];

impl SchemaState {
    /// A schema whose history the version index vouches for: these rows.
    pub fn indexed(history: Vec<AppliedRow>) -> SchemaState {
        SchemaState {
            schema_exists: true,
            history_exists: true,
            history: Ok(history),
            untracked: Untracked::default(),
            unreachable: false,
            index: IndexUse::Trusted,
        }
    }

    /// The highest applied version, when the history is readable and not empty.
    pub fn current(&self) -> Option<i32> {
        self.history
            .as_ref()
            .ok()
            .and_then(|h| h.iter().map(|r| r.version).max())
    }
}

/// Reads the state of every schema in `schemas`; `table` is the history table name.
pub async fn observe<C: Reads + ?Sized>(
    client: &C,
    schemas: &[String],
    table: &str,
) -> Result<HashMap<String, SchemaState>, Error> {
    observe_with(&[client], schemas, table).await
}

/// Like [`observe`], spreading the history tables over several connections, which read
/// concurrently: opening each table in a new session is the cost that bounds a fleet
/// read, and the server can do it on several cores at once.
pub async fn observe_with<C: Reads + ?Sized>(
    clients: &[&C],
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

/// Like [`observe_with`], handing each schema's state to `sink` as it arrives instead of
/// collecting them, so a fleet read holds only the histories in flight.
/// Every schema asked for is handed over exactly once.
///
/// Every read is one of tenantctl's own (see [`db::read`]): on a connection that stops
/// answering or goes away, the catalog read is an error, and each history read on it
/// gives a state marked [`SchemaState::unreachable`].
pub async fn observe_each<C: Reads + ?Sized>(
    clients: &[&C],
    schemas: &[String],
    table: &str,
    mut sink: impl FnMut(String, SchemaState),
) -> Result<(), Error> {
    // Whatever relation holds the history table's name: a view or a sequence there is a
    // history that cannot be read, not a missing one (creating the table would be skipped
    // or fail, and the migrations would run again).
    let other_histories: Vec<&str> = OTHER_HISTORIES.iter().map(|(t, _)| *t).collect();
    let rows = db::read(
        clients[0],
        "reading tenant schemas from the catalog",
        clients[0].pg().query_typed(
            // For a schema without a history table, also what it holds (see
            // `Untracked`): nothing is counted for the others.
            "SELECT s.name, n.oid IS NOT NULL, c.relkind::text, c.relhassubclass, \
             CASE WHEN n.oid IS NOT NULL AND c.oid IS NULL THEN \
               (SELECT count(*) FROM pg_catalog.pg_depend d \
                WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass \
                AND d.refobjid = n.oid) ELSE 0 END, \
             CASE WHEN n.oid IS NOT NULL AND c.oid IS NULL THEN \
               (SELECT min(o.relname::text) FROM pg_catalog.pg_class o \
                WHERE o.relnamespace = n.oid AND o.relkind IN ('r', 'p', 'v') \
                AND o.relname = ANY($3::text[])) END \
             FROM (SELECT pg_catalog.set_config('row_security', 'off', false)) AS rs(off), \
               unnest($1::text[]) AS s(name) \
             LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = s.name \
             LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = $2",
            &[
                (&schemas, Type::TEXT_ARRAY),
                (&table, Type::TEXT),
                (&other_histories, Type::TEXT_ARRAY),
            ],
        ),
    )
    .await?;
    let mut with_history = Vec::new();
    for row in rows {
        let (name, schema_exists, kind, inherited): (String, bool, Option<String>, Option<bool>) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let untracked = Untracked {
            objects: row.get(4),
            other_history: row.get(5),
        };
        let read = match kind.as_deref() {
            // A plain table: COPY reads it, unless it has inheritance children, whose
            // rows a SELECT includes and COPY does not.
            Some("r") if inherited != Some(true) => Read::Copy,
            Some("r" | "p") => Read::Select,
            Some(other) => {
                let why = format!(
                    "{} is {}, not a table",
                    qualified(&name, table),
                    relation_kind(other)
                );
                let state = SchemaState {
                    schema_exists,
                    history_exists: true,
                    history: Err(why),
                    untracked: Untracked::default(),
                    unreachable: false,
                    index: IndexUse::NotAsked,
                };
                sink(name, state);
                continue;
            }
            None => {
                let state = SchemaState {
                    schema_exists,
                    history_exists: false,
                    history: Ok(Vec::new()),
                    untracked,
                    unreachable: false,
                    index: IndexUse::NotAsked,
                };
                sink(name, state);
                continue;
            }
        };
        with_history.push((name, read));
    }
    if with_history.is_empty() {
        return Ok(());
    }
    // The owner of a history table writes its row-level security policies: reading the
    // table must never run them with tenantctl's rights. The catalog query above turned
    // `row_security` off on the first connection (no round trip of its own); the others
    // are set here. With it off, a table a policy would apply to is an error (that
    // tenant's history is unreadable), never a policy run. It is left off: tenantctl's
    // own reads need nothing else, and every migration starts with `RESET ALL`.
    // Bounded by the read timeout, as every read is (a server that stops answering is
    // found by the reads that follow).
    for client in clients.iter().skip(1) {
        let off = client.pg().batch_execute("SET row_security = off");
        let _ = db::read(*client, "reading history tables", off).await;
    }
    let lanes = clients.len().max(1);
    let per_lane = with_history.len().div_ceil(lanes).max(1);
    let mut copies =
        futures::stream::select_all(with_history.chunks(per_lane).enumerate().map(|(i, chunk)| {
            let client = clients[i % lanes];
            futures::stream::iter(chunk)
                .map(move |(name, read)| read_one(client, name, *read, table))
                .buffered(IN_FLIGHT)
                .boxed()
        }));
    while let Some((name, (history, unreachable))) = copies.next().await {
        let state = SchemaState {
            schema_exists: true,
            history_exists: true,
            history,
            untracked: Untracked::default(),
            unreachable,
            index: IndexUse::NotAsked,
        };
        sink(name, state);
    }
    Ok(())
}

/// The state of one schema, as a session holding the tenant's lock reads it before
/// its work. The usual case (the schema there with its history table, a plain table
/// without inheritance children) takes one round trip: `row_security` turned off, a
/// small catalog lookup and the table's `COPY` are sent together, and the connection
/// pipelines them (the `COPY` runs after the other two). Any other case, or a `COPY`
/// that fails, is read as [`observe`] reads it.
pub async fn observe_one<C: Reads + ?Sized>(
    client: &C,
    schema: &str,
    table: &str,
) -> Result<SchemaState, Error> {
    let off = db::read(
        client,
        "reading the tenant schema from the catalog",
        client.pg().batch_execute("SET row_security = off"),
    );
    let names: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 2] =
        [(&schema, Type::TEXT), (&table, Type::TEXT)];
    let lookup = db::read(
        client,
        "reading the tenant schema from the catalog",
        client.pg().query_typed(
            "SELECT c.relkind::text, c.relhassubclass FROM pg_catalog.pg_namespace n \
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = $2 \
             WHERE n.nspname = $1",
            &names,
        ),
    );
    let copy = copy_history(client, schema, table);
    let (off, found, copied) = futures::join!(off, lookup, copy);
    let plain = off.is_ok()
        && found.as_ref().is_ok_and(|rows| {
            rows.len() == 1 && rows[0].get::<_, String>(0) == "r" && !rows[0].get::<_, bool>(1)
        });
    if let (true, Ok(text)) = (plain, copied) {
        return Ok(SchemaState {
            schema_exists: true,
            history_exists: true,
            history: copied_history(&text).map_err(|why| unreadable(schema, table, &why)),
            untracked: Untracked::default(),
            unreachable: false,
            index: IndexUse::NotAsked,
        });
    }
    found?;
    let mut map = observe(client, &[schema.to_string()], table).await?;
    Ok(map
        .remove(schema)
        .expect("observe returns every schema asked for"))
}

/// Reads one history table with `COPY`, which the server answers without planning a
/// query: no index of the table is opened, and no plan is made. That is most of what a
/// cold session spends per table, and a fleet read opens every tenant's table once.
/// When the `COPY` fails, the table is read with a `SELECT` instead, so a table `COPY`
/// cannot read (a partitioned one) is still read, and an error is worded as before.
async fn read_one<C: Reads + ?Sized>(
    client: &C,
    name: &str,
    read: Read,
    table: &str,
) -> (String, (History, bool)) {
    if read == Read::Select {
        return (name.to_string(), read_selected(client, name, table).await);
    }
    let history = match copy_history(client, name, table).await {
        Ok(text) => (
            copied_history(&text).map_err(|why| unreadable(name, table, &why)),
            false,
        ),
        // The server stopped answering, or went away: a SELECT would not fare better.
        Err(e) if e.kind() == ErrorKind::Unavailable => (Err(e.to_string()), true),
        Err(_) => read_selected(client, name, table).await,
    };
    (name.to_string(), history)
}

/// The text of one history table's `COPY` (version, name, applied_on, checksum), as
/// one of tenantctl's own reads (see [`db::read`]).
async fn copy_history<C: Reads + ?Sized>(
    client: &C,
    schema: &str,
    table: &str,
) -> Result<Vec<u8>, Error> {
    let sql = format!(
        "COPY {} (version, name, applied_on, checksum) TO STDOUT",
        qualified(schema, table)
    );
    let copied = async {
        let mut rows = Vec::new();
        let stream = client.pg().copy_out(sql.as_str()).await?;
        futures::pin_mut!(stream);
        while let Some(chunk) = stream.next().await {
            rows.extend_from_slice(&chunk?);
        }
        Ok::<_, tokio_postgres::Error>(rows)
    };
    let doing = format!("reading history table {}", qualified(schema, table));
    db::read(client, &doing, copied).await
}

/// How a history table is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// `COPY`: a plain table without inheritance children.
    Copy,
    /// `SELECT`: a partitioned table, or one with inheritance children.
    Select,
}

/// One history table read with a `SELECT`, which includes the rows of partitions and
/// inheritance children; and whether it failed because the server could not be reached.
async fn read_selected<C: Reads + ?Sized>(client: &C, name: &str, table: &str) -> (History, bool) {
    match read_histories(client, std::slice::from_ref(&name.to_string()), table).await {
        Ok(mut m) => (m.remove(name).unwrap_or_else(|| Ok(Vec::new())), false),
        Err(e) => (Err(e.to_string()), e.kind() == ErrorKind::Unavailable),
    }
}

/// `pg_class.relkind` in words, for the relation that holds the history table's name.
fn relation_kind(kind: &str) -> &'static str {
    match kind {
        "v" => "a view",
        "m" => "a materialized view",
        "S" => "a sequence",
        "f" => "a foreign table",
        "i" | "I" => "an index",
        "c" => "a composite type",
        _ => "another kind of relation",
    }
}

/// Histories read at once on one connection: the `COPY`s are pipelined, so the
/// connection does not wait a round trip per table.
const IN_FLIGHT: usize = 16;

/// Why a history table's rows cannot be used.
fn unreadable(schema: &str, table: &str, why: &str) -> String {
    format!(
        "history table {} has a row tenantctl cannot read: {why}",
        qualified(schema, table)
    )
}

/// The rows of a text-format `COPY` of (version, name, applied_on, checksum), by
/// version.
fn copied_history(text: &[u8]) -> Result<Vec<AppliedRow>, String> {
    let mut rows = Vec::new();
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let fields: Vec<Option<String>> = line
            .split(|b| *b == b'\t')
            .map(copy_field)
            .collect::<Result<_, _>>()?;
        let [version, name, applied_on, checksum]: [Option<String>; 4] = fields
            .try_into()
            .map_err(|f: Vec<_>| format!("{} columns where 4 were asked for", f.len()))?;
        let version = version.ok_or("version is NULL")?;
        let version = version
            .parse::<i32>()
            .map_err(|e| format!("version {version:?}: {e}"))?;
        rows.push(applied_row(version, name, applied_on, checksum)?);
    }
    rows.sort_by_key(|r| r.version);
    Ok(rows)
}

/// One field of a text-format `COPY` line: `\N` is NULL, backslash escapes undone.
fn copy_field(raw: &[u8]) -> Result<Option<String>, String> {
    if raw == b"\\N" {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' || i == raw.len() {
            out.push(b);
            continue;
        }
        let c = raw[i];
        i += 1;
        match c {
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u32;
                for _ in 0..2 {
                    match raw.get(i).and_then(|d| char::from(*d).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                        }
                        None => break,
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out)
        .map(Some)
        .map_err(|_| "a value that is not UTF-8".to_string())
}

/// One history, or why it could not be read.
type History = Result<Vec<AppliedRow>, String>;

type Histories = HashMap<String, History>;

/// Reads history tables with one `SELECT ... UNION ALL ...`, by schema.
async fn read_histories<C: Reads + ?Sized>(
    client: &C,
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
    let sql = format!("{sql} ORDER BY 1, 2");
    let rows = db::read(
        client,
        &format!("reading history table {}", qualified(&schemas[0], table)),
        client.pg().query_typed(&sql, &params),
    )
    .await?;
    let mut out: Histories = HashMap::new();
    for row in rows {
        let schema: String = row.get(0);
        let parsed = parse_row(&row).map_err(|why| unreadable(&schema, table, &why));
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
    applied_row(version, name, applied_on, checksum)
}

/// One history row from its columns, however they were read.
fn applied_row(
    version: i32,
    name: Option<String>,
    applied_on: Option<String>,
    checksum: Option<String>,
) -> Result<AppliedRow, String> {
    let name = name.ok_or_else(|| format!("version {version}: name is NULL"))?;
    let applied_on = applied_on.ok_or_else(|| format!("version {version}: applied_on is NULL"))?;
    OffsetDateTime::parse(&applied_on, &Rfc3339).map_err(|_| {
        format!("version {version}: applied_on {applied_on:?} is not an RFC 3339 time")
    })?;
    let checksum = checksum
        .as_deref()
        .and_then(|c| c.parse::<u64>().ok())
        .ok_or_else(|| match &checksum {
            Some(c) => format!(
                "version {version}: checksum {} is not a number",
                crate::ident::shown(c)
            ),
            None => format!("version {version}: checksum is NULL"),
        })?;
    Ok(AppliedRow {
        version,
        name,
        applied_on,
        checksum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_fields_are_unescaped_and_null_is_none() {
        assert_eq!(copy_field(b"\\N").unwrap(), None);
        assert_eq!(copy_field(b"plain").unwrap().as_deref(), Some("plain"));
        assert_eq!(
            copy_field(b"a\\tb\\nc\\\\d\\re\\bf\\fg\\vh")
                .unwrap()
                .as_deref(),
            Some("a\tb\nc\\d\re\u{8}f\u{c}g\u{b}h")
        );
        // Octal and hex escapes, which COPY FROM accepts (COPY TO does not write them).
        assert_eq!(
            copy_field(b"\\101\\x42\\7").unwrap().as_deref(),
            Some("AB\u{7}")
        );
        // A backslash before any other character stands for that character.
        assert_eq!(copy_field(b"\\q\\N!").unwrap().as_deref(), Some("qN!"));
        // An escaped "\N" inside a value is text, not NULL.
        assert_eq!(copy_field(b"\\\\N").unwrap().as_deref(), Some("\\N"));
        assert_eq!(copy_field("é".as_bytes()).unwrap().as_deref(), Some("é"));
        assert!(copy_field(b"\\377").is_err(), "not UTF-8");
    }

    #[test]
    fn a_copied_history_is_sorted_by_version_and_checked_row_by_row() {
        let text = b"2\tsecond\t2026-01-02T00:00:00Z\t22\n1\tfirst\t2026-01-01T00:00:00Z\t11\n";
        let rows = copied_history(text).unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.version, r.name.as_str(), r.checksum))
                .collect::<Vec<_>>(),
            [(1, "first", 11), (2, "second", 22)]
        );
        assert_eq!(copied_history(b"").unwrap(), Vec::new());
        let bad: [(&[u8], &str); 7] = [
            (b"\\N\tx\t2026-01-01T00:00:00Z\t1\n", "version is NULL"),
            (b"x\tx\t2026-01-01T00:00:00Z\t1\n", "version \"x\":"),
            (
                b"3000000000\tx\t2026-01-01T00:00:00Z\t1\n",
                "version \"3000000000\":",
            ),
            (b"1\t\\N\t2026-01-01T00:00:00Z\t1\n", "name is NULL"),
            (b"1\tx\tyesterday\t1\n", "applied_on"),
            (b"1\tx\t2026-01-01T00:00:00Z\tnot-a-number\n", "checksum"),
            (b"1\tx\t2026-01-01T00:00:00Z\n", "3 columns"),
        ];
        for (text, needle) in bad {
            let e = copied_history(text).unwrap_err();
            assert!(e.contains(needle), "{e}");
        }
    }
}
