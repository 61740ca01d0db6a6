//! What each pending statement locks and rewrites, as PostgreSQL itself says, measured
//! in a scratch database (`tenantctl_impact_<random>`, made from `template0` on the
//! registry's server and dropped at the end): the shared schema's migrations, then the
//! tenant's up to a revision, build an empty copy; then each pending statement runs in a
//! transaction of its own, after which the session's locks (`pg_locks`) and the tables
//! whose storage was replaced (`relfilenode` changed: a rewrite) are read, and the
//! transaction commits so the next statement sees what this one did. Everything a
//! migration does outside the tenant's schema happens in the scratch database too, never
//! in the real one; a statement that would change the whole cluster (roles, databases,
//! tablespaces, `ALTER SYSTEM`) is never run, and is reported as not measured.
//!
//! A statement of a `-- tenantctl: no-transaction` file runs alone, outside a
//! transaction: its rewrites are seen, its locks are gone before they can be read. A
//! statement that fails on the empty copy (it needs data, or the shared schema's state)
//! is reported as not measured, with the error, and the others go on. `TRUNCATE` replaces
//! a table's storage without copying it: it is never counted as a rewrite. A scratch
//! database left by a run that was killed (no session on it, made more than ten minutes
//! before: its name says when) is dropped by the next; its comment names the database it
//! measured for.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Settings;
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::files::statements::Statement;
use crate::ident::quote;
use crate::pg::db::{Client, Target};

/// The tenant's schema in the scratch database.
const SCHEMA: &str = "tenantctl_impact";

/// The longest one statement may run on the scratch copy.
const STATEMENT_TIMEOUT: &str = "30s";

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
    /// Why its locks (or all of it) were not measured, if they were not.
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

/// Measures every statement of the files above `from` up to `to`, on a scratch database
/// made through `admin` (a connection to `target`'s server) with the shared schema's
/// files (`shared`: its schema and files) and the tenant's up to `from`.
pub async fn measure(
    admin: &Client,
    target: &Target,
    settings: &Settings,
    set: &MigrationSet,
    shared: Option<(&str, &MigrationSet)>,
    from: i32,
    to: i32,
) -> Result<Vec<Measured>, Error> {
    // Scratch databases no session uses, made more than ten minutes ago (their name
    // says when), are what killed runs left.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let orphans = admin
        .query(
            "SELECT d.datname::text FROM pg_catalog.pg_database d \
             WHERE d.datname ~ '^tenantctl_impact_[0-9]+_' \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.datname = d.datname)",
            &[],
        )
        .await
        .map_err(failed("looking for scratch databases left behind"))?;
    for r in &orphans {
        let name: String = r.get(0);
        let made = name
            .trim_start_matches("tenantctl_impact_")
            .split('_')
            .next()
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(now);
        if now - made > 600 {
            let _ = admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote(&name)))
                .await;
        }
    }
    let random = crate::engine::scheduler::new_run_id()?.replace('-', "");
    let name = format!("tenantctl_impact_{now}_{}", &random[..12]);
    admin
        .batch_execute(&format!("CREATE DATABASE {} TEMPLATE template0", quote(&name)))
        .await
        .map_err(|e| {
            Error::setup(format!(
                "measuring the migrations' locks needs a scratch database on the registry's server, and it could not be made (the CREATEDB privilege is needed): {}",
                crate::pg::message::pg_message(&e)
            ))
        })?;
    // Whose it is, for whoever finds it.
    let _ = admin
        .batch_execute(&format!(
            "DO $$ BEGIN EXECUTE format('COMMENT ON DATABASE %I IS %L', {}, 'tenantctl upgrade --impact, for database ' || current_database()); END $$",
            crate::ident::literal(&name)
        ))
        .await;
    let result = async {
        let client = target.on_database(&name).connect().await?;
        let measured = measure_in(&client, settings, set, shared, from, to).await;
        drop(client);
        measured
    }
    .await;
    // Always gone afterwards, whatever happened.
    let dropped = admin
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote(&name)
        ))
        .await
        .map_err(failed("dropping the scratch database"));
    let measured = result?;
    dropped?;
    Ok(measured)
}

/// Runs a statement for the copy: alone, its failure ignored (what it would have made
/// is missing, and a pending statement that needs it says so when it fails).
async fn build(client: &Client, s: &Statement) {
    if s.cluster_wide().is_some() || s.first_word() == Some("vacuum") {
        return;
    }
    let _ = client.batch_execute(&s.text).await;
}

async fn measure_in(
    client: &Client,
    settings: &Settings,
    set: &MigrationSet,
    shared: Option<(&str, &MigrationSet)>,
    from: i32,
    to: i32,
) -> Result<Vec<Measured>, Error> {
    client
        .batch_execute(&format!(
            "SET statement_timeout = '{STATEMENT_TIMEOUT}'; SET lock_timeout = '5s'"
        ))
        .await
        .map_err(failed("setting up the scratch database"))?;
    if let Some((schema, files)) = shared {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {s}; SET search_path TO {s}",
                s = quote(schema)
            ))
            .await
            .map_err(failed("making the shared schema"))?;
        for f in &files.files {
            for s in &f.up.statements {
                build(client, s).await;
            }
        }
    }
    let mut path = vec![quote(SCHEMA)];
    path.extend(settings.extra_search_path.iter().map(|s| quote(s)));
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {}; SET search_path TO {}",
            quote(SCHEMA),
            path.join(", ")
        ))
        .await
        .map_err(failed("making the tenant's schema"))?;
    for f in set.files.iter().filter(|f| f.version <= from) {
        for s in &f.up.statements {
            build(client, s).await;
        }
    }
    let mut out = Vec::new();
    for f in set
        .files
        .iter()
        .filter(|f| f.version > from && f.version <= to)
    {
        for s in &f.up.statements {
            out.push(one(client, f.version, &f.up_path, f.up.no_transaction, s).await?);
        }
    }
    Ok(out)
}

/// Measures one statement, then leaves its effect in the copy (when it succeeds).
async fn one(
    client: &Client,
    version: i32,
    path: &std::path::Path,
    no_transaction: bool,
    s: &Statement,
) -> Result<Measured, Error> {
    let mut m = Measured {
        version,
        file: path.display().to_string(),
        line: s.line,
        statement: one_line(&s.text),
        locks: Vec::new(),
        rewrites: Vec::new(),
        not_measured: None,
    };
    if let Some(cmd) = s.cluster_wide() {
        m.not_measured = Some(format!(
            "{cmd} changes the whole cluster, not one database: it is not run on the scratch copy"
        ));
        return Ok(m);
    }
    let before = storage(client).await?;
    if no_transaction {
        if let Err(e) = client.batch_execute(&s.text).await {
            m.not_measured = Some(format!(
                "it failed on the empty scratch copy: {}",
                crate::pg::message::pg_message(&e)
            ));
            return Ok(m);
        }
        m.not_measured = Some(
            "its file runs outside a transaction, so its locks are released before they can be read (its rewrites are measured)".into(),
        );
    } else {
        client
            .batch_execute("BEGIN")
            .await
            .map_err(failed("beginning"))?;
        if let Err(e) = client.batch_execute(&s.text).await {
            let _ = client.batch_execute("ROLLBACK").await;
            m.not_measured = Some(format!(
                "it failed on the empty scratch copy: {}",
                crate::pg::message::pg_message(&e)
            ));
            return Ok(m);
        }
        m.locks = locks(client).await?;
        client
            .batch_execute("COMMIT")
            .await
            .map_err(failed("committing"))?;
    }
    // TRUNCATE gives a table new, empty storage without copying it: no rewrite.
    if s.first_word() != Some("truncate") {
        let after = storage(client).await?;
        m.rewrites = before
            .iter()
            .filter(|(t, node)| after.get(*t).is_some_and(|n| n != *node))
            .map(|(t, _)| t.clone())
            .collect();
    }
    Ok(m)
}

/// The tenant schema's tables (and materialized views) by name, with their storage.
async fn storage(client: &Client) -> Result<BTreeMap<String, i64>, Error> {
    let rows = client
        .query(
            "SELECT c.relname::text, c.relfilenode::oid::int8 FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')",
            &[&SCHEMA],
        )
        .await
        .map_err(failed("reading the scratch tables"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The strongest lock this session holds on each table (the tenant schema's by name,
/// others qualified), strongest first.
async fn locks(client: &Client) -> Result<Vec<TableLock>, Error> {
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
        let tenant = schema == SCHEMA;
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
