//! `upgrade --impact`: before a rollout, what each pending statement locks and rewrites
//! (measured by PostgreSQL on a scratch copy: [`crate::engine::impact`]) and on which of
//! the selected tenants that matters most: the size of every table a statement locks, in
//! each tenant it will run in, read in one catalog query per server.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::app::context::Context;
use crate::engine::impact::Measured;
use crate::engine::scheduler::{Cause, Planned, ResultStatus, TenantResult};
use crate::engine::target::Target;
use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::pg::db;
use crate::registry::Tenant;

/// The speed a rewrite's estimate assumes: table and indexes written again, about
/// 100 MiB a second on a server with fast storage (a rough guide, not a promise).
pub const REWRITE_BYTES_PER_SECOND: f64 = 100.0 * 1024.0 * 1024.0;

/// Tenants listed per statement.
pub const TOP: usize = 10;

/// The report: its JSON document.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Impact {
    /// The revision the statements were measured from (the lowest of the selected
    /// tenants'); `null` when no selected tenant has anything pending.
    pub measured_from: Option<i32>,
    /// The target version.
    pub target: i32,
    /// Selected tenants with a schema.
    pub tenants: usize,
    /// Every pending statement, in the order it runs.
    pub statements: Vec<StatementImpact>,
}

/// One statement and where it matters.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct StatementImpact {
    /// What PostgreSQL said it does.
    #[serde(flatten)]
    pub measured: Measured,
    /// Selected tenants it will run in (those below its version).
    pub tenants: usize,
    /// The bytes of the tenant tables it locks or rewrites, over those tenants (tables
    /// and their indexes, `pg_total_relation_size`).
    pub total_bytes: u64,
    /// The tenants with the largest such table, largest first, at most [`TOP`].
    pub largest: Vec<TenantTable>,
}

/// A tenant's table a statement locks.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TenantTable {
    /// The tenant.
    pub domain: String,
    /// Its server.
    pub server: String,
    /// The table.
    pub table: String,
    /// Its size with its indexes.
    pub bytes: u64,
    /// Its estimated rows (`pg_class.reltuples`; -1: never analyzed).
    pub rows: i64,
    /// Whether the statement rewrites it.
    pub rewritten: bool,
    /// For a rewrite, the seconds it may take at [`REWRITE_BYTES_PER_SECOND`].
    pub rewrite_seconds: Option<f64>,
}

/// The tenant tables a statement locks or rewrites (a statement outside a transaction
/// rewrites without locks that could be read).
fn touched(m: &Measured) -> Vec<String> {
    let mut out: BTreeSet<String> = m
        .locks
        .iter()
        .filter(|l| l.tenant_table)
        .map(|l| l.table.clone())
        .collect();
    out.extend(m.rewrites.iter().cloned());
    out.into_iter().collect()
}

/// Measures the files above `from` up to `to` in a scratch database on the registry's
/// server, with the shared schema's files when there is a shared schema.
async fn measure(
    cx: &Context,
    set: &MigrationSet,
    from: i32,
    to: i32,
) -> Result<Vec<Measured>, Error> {
    let admin = cx.connect().await?;
    let shared = cx.shared().ok();
    let shared = shared.as_ref().map(|(s, files)| (s.schema.as_str(), files));
    crate::engine::impact::measure(&admin, &cx.target, &cx.settings, set, shared, from, to).await
}

/// Sizes of `tables` in each of `tenants`' schemas by (schema, table): one catalog query
/// per server, the servers at once.
async fn sizes_of<'t>(
    cx: &Context,
    tenants: impl Iterator<Item = &'t Tenant>,
    tables: &[String],
) -> Result<BTreeMap<(String, String), (u64, i64)>, Error> {
    if tables.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut by_server: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for t in tenants {
        by_server
            .entry(t.server.as_str())
            .or_default()
            .push(t.schema_name.clone());
    }
    let reads = by_server
        .iter()
        .map(|(server, schemas)| sizes(cx, server, schemas, tables));
    Ok(futures::future::try_join_all(reads)
        .await?
        .into_iter()
        .flatten()
        .collect())
}

/// Sizes of tables by (schema, table), read from `server`.
async fn sizes(
    cx: &Context,
    server: &str,
    schemas: &[String],
    tables: &[String],
) -> Result<BTreeMap<(String, String), (u64, i64)>, Error> {
    let client = cx.connect_server(server).await?;
    let rows = db::read(
        &client,
        "reading the sizes of the tables the migrations lock",
        client.query(
            "SELECT n.nspname::text, c.relname::text, pg_catalog.pg_total_relation_size(c.oid)::int8, \
                    c.reltuples::int8 \
             FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid \
             WHERE n.nspname = ANY($1) AND c.relname = ANY($2) AND c.relkind IN ('r', 'p', 'm')",
            &[&schemas, &tables],
        ),
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let bytes: i64 = r.get(2);
            (
                (r.get(0), r.get(1)),
                (u64::try_from(bytes).unwrap_or(0), r.get(3)),
            )
        })
        .collect())
}

/// The impact of bringing the selected tenants to `target` (a version; `+N` and `-N`
/// are refused: the statements would differ per tenant).
pub async fn impact(
    cx: &Context,
    set: &MigrationSet,
    selected: &[Tenant],
    target: &Target,
) -> Result<Impact, Error> {
    let to = match target {
        Target::Version(v) => *v,
        _ => {
            return Err(Error::usage(
                "--impact takes a version or head as the target, not +N or -N: the statements would differ per tenant",
            ))
        }
    };
    let tenants: Vec<_> = selected
        .iter()
        .filter(|t| t.schema_provisioned && t.current_revision.unwrap_or(0) < to)
        .collect();
    let from = tenants
        .iter()
        .map(|t| t.current_revision.unwrap_or(0))
        .min();
    let provisioned = selected.iter().filter(|t| t.schema_provisioned).count();
    let Some(from) = from else {
        return Ok(Impact {
            measured_from: None,
            target: to,
            tenants: provisioned,
            statements: Vec::new(),
        });
    };
    let measured = measure(cx, set, from, to).await?;
    // Every tenant table any statement locks or rewrites, read per server in one query.
    let tables: BTreeSet<String> = measured.iter().flat_map(touched).collect();
    let tables: Vec<String> = tables.into_iter().collect();
    let size = sizes_of(cx, tenants.iter().copied(), &tables).await?;
    let statements = measured
        .into_iter()
        .map(|m| {
            let runs_in: Vec<_> = tenants
                .iter()
                .filter(|t| t.current_revision.unwrap_or(0) < m.version)
                .collect();
            let mut rows: Vec<TenantTable> = Vec::new();
            let mut total = 0u64;
            for t in &runs_in {
                let mut own: Vec<TenantTable> = touched(&m)
                    .into_iter()
                    .filter_map(|table| {
                        let (bytes, rows) = *size.get(&(t.schema_name.clone(), table.clone()))?;
                        let rewritten = m.rewrites.contains(&table);
                        Some(TenantTable {
                            domain: t.domain.clone(),
                            server: t.server.clone(),
                            table,
                            bytes,
                            rows,
                            rewritten,
                            rewrite_seconds: rewritten
                                .then(|| bytes as f64 / REWRITE_BYTES_PER_SECOND),
                        })
                    })
                    .collect();
                total += own.iter().map(|x| x.bytes).sum::<u64>();
                // The tenant's largest locked table stands for it (a rewritten one first).
                own.sort_by_key(|x| std::cmp::Reverse((x.rewritten, x.bytes)));
                rows.extend(own.into_iter().next());
            }
            rows.sort_by(|a, b| {
                (b.rewritten, b.bytes)
                    .cmp(&(a.rewritten, a.bytes))
                    .then(a.domain.cmp(&b.domain))
            });
            rows.truncate(TOP);
            StatementImpact {
                tenants: runs_in.len(),
                total_bytes: total,
                largest: rows,
                measured: m,
            }
        })
        .collect();
    Ok(Impact {
        measured_from: Some(from),
        target: to,
        tenants: provisioned,
        statements,
    })
}

/// The version an upgrade to `target` brings a tenant at `revision` to.
fn version_for(target: &Target, set: &MigrationSet, revision: i32) -> i32 {
    match target {
        Target::Version(v) => *v,
        Target::Up(n) => set
            .files
            .iter()
            .map(|f| f.version)
            .filter(|v| *v > revision)
            .take(usize::try_from(*n).unwrap_or(usize::MAX))
            .last()
            .unwrap_or(revision),
        Target::Down(_) => revision,
    }
}

/// `run.max_rewrite_bytes`: the tenants of `planned` in which a pending statement would
/// rewrite a table (with its indexes) bigger than `limit` are answered skipped, saying
/// which statement, which table and how big; the others are left as planned. What a
/// statement rewrites is measured as `upgrade --impact` measures it.
pub async fn guard(
    cx: &Context,
    set: &MigrationSet,
    target: &Target,
    planned: Vec<Planned>,
    limit: u64,
) -> Result<Vec<Planned>, Error> {
    let work: Vec<(i32, i32)> = planned
        .iter()
        .filter_map(|p| match p {
            Planned::Work(t) => {
                let r = t.current_revision.unwrap_or(0);
                Some((r, version_for(target, set, r)))
            }
            Planned::Done(_) => None,
        })
        .filter(|(r, to)| to > r)
        .collect();
    let (Some(from), Some(to)) = (
        work.iter().map(|(r, _)| *r).min(),
        work.iter().map(|(_, to)| *to).max(),
    ) else {
        return Ok(planned);
    };
    let measured = measure(cx, set, from, to).await?;
    let rewritten: Vec<String> = measured
        .iter()
        .flat_map(|m| m.rewrites.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if rewritten.is_empty() {
        return Ok(planned);
    }
    let working = planned.iter().filter_map(|p| match p {
        Planned::Work(t) => Some(t),
        Planned::Done(_) => None,
    });
    let size = sizes_of(cx, working, &rewritten).await?;
    Ok(planned
        .into_iter()
        .map(|p| {
            let Planned::Work(t) = p else { return p };
            let r = t.current_revision.unwrap_or(0);
            let to = version_for(target, set, r);
            let over = measured
                .iter()
                .filter(|m| m.version > r && m.version <= to)
                .find_map(|m| {
                    m.rewrites.iter().find_map(|table| {
                        let (bytes, _) = *size.get(&(t.schema_name.clone(), table.clone()))?;
                        (bytes > limit).then_some((m, table, bytes))
                    })
                });
            match over {
                None => Planned::Work(t),
                Some((m, table, bytes)) => {
                    let file = std::path::Path::new(&m.file)
                        .file_name()
                        .map_or(m.file.clone(), |n| n.to_string_lossy().into_owned());
                    let mut result = TenantResult::new(&t, ResultStatus::Skipped);
                    result.error = Some(format!(
                        "not started: {file}:{} would rewrite table {} of {} ({bytes} bytes), over run.max_rewrite_bytes ({limit} bytes); upgrade it in a maintenance window, with a configuration without the limit",
                        m.line,
                        crate::ident::quote(table),
                        crate::show::size(bytes),
                    ));
                    result.cause = Cause::NotStarted;
                    Planned::Done(result)
                }
            }
        })
        .collect())
}
