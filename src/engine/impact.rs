//! What each pending statement locks and rewrites, as PostgreSQL itself says, measured
//! on a scratch copy: a schema of its own (`tenantctl_impact_<random>`) built by the
//! migrations up to a revision, then each pending statement run in a transaction of its
//! own, after which the session's locks (`pg_locks`) and the tables whose storage was
//! replaced (`relfilenode` changed: a rewrite) are read; the transaction commits so the
//! next statement sees what this one did. The scratch schema is empty of data, so this
//! takes milliseconds, and it is dropped at the end, also on failure. A statement of a
//! `-- tenantctl: no-transaction` file runs outside a transaction, where its locks are
//! gone by the time they could be read: it is reported as not measured.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Settings;
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::ident::quote;
use crate::pg::db::Client;

/// What one pending statement does, as measured.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Measured {
    /// The migration's version.
    pub version: i32,
    /// Its file.
    pub file: String,
    /// The statement's first line in the file.
    pub line: usize,
    /// The statement, on one line, cut at 120 characters.
    pub statement: String,
    /// Each table it locked and the strongest mode it took (`AccessExclusiveLock`, ...):
    /// a table of the tenant's schema by its name, any other schema's qualified.
    pub locks: Vec<TableLock>,
    /// Tables of the tenant's schema whose storage it replaced (a rewrite: its time grows
    /// with the table's size).
    pub rewrites: Vec<String>,
    /// Why it was not measured, if it was not.
    pub not_measured: Option<String>,
}

/// A lock a statement took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct TableLock {
    /// The table (a tenant table by its name, another schema's qualified).
    pub table: String,
    /// The strongest lock mode taken on it.
    pub mode: String,
    /// Whether the table is in the tenant's schema (its size is then each tenant's own).
    pub tenant_table: bool,
}

/// The lock modes, weakest first.
const MODES: &[&str] = &[
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
];

fn strength(mode: &str) -> usize {
    MODES.iter().position(|m| *m == mode).unwrap_or(0)
}

fn one_line(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 120 {
        let cut: String = flat.chars().take(117).collect();
        format!("{cut}...")
    } else {
        flat
    }
}

fn failed(what: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
    move |e| {
        Error::failed(format!(
            "measuring the migrations' locks: {what}: {}",
            crate::pg::message::pg_message(&e)
        ))
    }
}

/// Measures every statement of the files above `from` up to `to` on a scratch copy at
/// `from` built on `client`'s server.
pub async fn measure(
    client: &Client,
    settings: &Settings,
    set: &MigrationSet,
    from: i32,
    to: i32,
) -> Result<Vec<Measured>, Error> {
    let scratch = format!(
        "tenantctl_impact_{}",
        crate::engine::scheduler::new_run_id()?.replace('-', "_")
    );
    let result = measure_in(client, settings, set, from, to, &scratch).await;
    // Always gone afterwards, whatever happened.
    let _ = client.batch_execute("ROLLBACK").await;
    let drop = client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote(&scratch)
        ))
        .await
        .map_err(failed("dropping the scratch schema"));
    let measured = result?;
    drop?;
    Ok(measured)
}

async fn measure_in(
    client: &Client,
    settings: &Settings,
    set: &MigrationSet,
    from: i32,
    to: i32,
    scratch: &str,
) -> Result<Vec<Measured>, Error> {
    let mut path = vec![quote(scratch)];
    path.extend(settings.extra_search_path.iter().map(|s| quote(s)));
    client
        .batch_execute(&format!(
            "RESET ALL; SET search_path TO {}; SET lock_timeout = '5s'; SET statement_timeout = '60s'; CREATE SCHEMA {}",
            path.join(", "),
            quote(scratch)
        ))
        .await
        .map_err(failed("creating the scratch schema"))?;
    // The copy at `from`: each file in a transaction of its own, as a tenant got it.
    for f in set.files.iter().filter(|f| f.version <= from) {
        let mut sql = String::new();
        if !f.up.no_transaction {
            sql.push_str("BEGIN;\n");
        }
        for s in &f.up.statements {
            sql.push_str(&s.text);
            sql.push('\n');
        }
        if !f.up.no_transaction {
            sql.push_str("COMMIT;");
        }
        client.batch_execute(&sql).await.map_err(|e| {
            Error::failed(format!(
                "measuring the migrations' locks: building a scratch copy at revision {from}: {} failed: {}",
                f.up_path.display(),
                crate::pg::message::pg_message(&e)
            ))
        })?;
    }
    let mut out = Vec::new();
    for f in set
        .files
        .iter()
        .filter(|f| f.version > from && f.version <= to)
    {
        for s in &f.up.statements {
            let mut m = Measured {
                version: f.version,
                file: f.up_path.display().to_string(),
                line: s.line,
                statement: one_line(&s.text),
                locks: Vec::new(),
                rewrites: Vec::new(),
                not_measured: None,
            };
            if f.up.no_transaction {
                m.not_measured = Some(
                    "its file runs outside a transaction, so its locks are released before they can be read".into(),
                );
                client
                    .batch_execute(&s.text)
                    .await
                    .map_err(failed("running a statement outside a transaction"))?;
                out.push(m);
                continue;
            }
            let before = storage(client, scratch).await?;
            client
                .batch_execute("BEGIN")
                .await
                .map_err(failed("beginning"))?;
            if let Err(e) = client.batch_execute(&s.text).await {
                return Err(Error::failed(format!(
                    "measuring the migrations' locks: {}:{} failed on a scratch copy: {}",
                    f.up_path.display(),
                    s.line,
                    crate::pg::message::pg_message(&e)
                )));
            }
            m.locks = locks(client, scratch).await?;
            client
                .batch_execute("COMMIT")
                .await
                .map_err(failed("committing"))?;
            let after = storage(client, scratch).await?;
            m.rewrites = before
                .iter()
                .filter(|(t, node)| after.get(*t).is_some_and(|n| n != *node))
                .map(|(t, _)| t.clone())
                .collect();
            out.push(m);
        }
    }
    Ok(out)
}

/// The scratch schema's tables (and materialized views) by name, with their storage.
async fn storage(client: &Client, scratch: &str) -> Result<BTreeMap<String, u32>, Error> {
    let rows = client
        .query(
            "SELECT c.relname::text, c.relfilenode::oid::int8 FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')",
            &[&scratch],
        )
        .await
        .map_err(failed("reading the scratch tables"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let node: i64 = r.get(1);
            (r.get(0), u32::try_from(node).unwrap_or(0))
        })
        .collect())
}

/// The strongest lock this session holds on each table (tables of the scratch schema by
/// name, others qualified), strongest first.
async fn locks(client: &Client, scratch: &str) -> Result<Vec<TableLock>, Error> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, l.mode FROM pg_catalog.pg_locks l \
             JOIN pg_catalog.pg_class c ON c.oid = l.relation \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE l.pid = pg_catalog.pg_backend_pid() AND l.granted AND l.locktype = 'relation' \
               AND c.relkind IN ('r', 'p', 'm') AND n.nspname <> 'pg_catalog'",
            &[],
        )
        .await
        .map_err(failed("reading the locks"))?;
    let mut strongest: BTreeMap<(bool, String), String> = BTreeMap::new();
    for r in &rows {
        let (schema, table, mode): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let tenant = schema == scratch;
        let name = if tenant {
            table
        } else {
            format!("{}.{}", quote(&schema), quote(&table))
        };
        let e = strongest
            .entry((tenant, name))
            .or_insert_with(|| mode.clone());
        if strength(&mode) > strength(e) {
            *e = mode;
        }
    }
    let mut out: Vec<TableLock> = strongest
        .into_iter()
        .map(|((tenant_table, table), mode)| TableLock {
            table,
            mode,
            tenant_table,
        })
        .collect();
    out.sort_by(|a, b| {
        strength(&b.mode)
            .cmp(&strength(&a.mode))
            .then(a.table.cmp(&b.table))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_shown_on_one_line_and_cut() {
        assert_eq!(
            one_line("ALTER TABLE t\n  ADD COLUMN c int;"),
            "ALTER TABLE t ADD COLUMN c int;"
        );
        let long = "x ".repeat(100);
        assert!(one_line(&long).ends_with("...") && one_line(&long).chars().count() == 120);
        assert!(strength("AccessExclusiveLock") > strength("ShareLock"));
    }
}
