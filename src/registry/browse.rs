//! What the dashboard browses in the registry, a page at a time: the fleet's counts in
//! one grouped query, tenants searched and paged, bulk runs paged, one run's ledger
//! entries paged, runs per day, and the live counts of runs still going. Every query
//! reads a bounded number of rows, so a page costs the same at 20,000 tenants as at 20.

use serde::Serialize;
use tokio_postgres::Row;

use super::{EventRow, Registry, Tenant, COLUMNS};
use crate::error::Error;
use crate::pg::db;
use crate::timestamp::Timestamp;

/// Which tenants a search keeps; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Text found in the domain, the schema or the name (case-insensitive, literally).
    pub text: Option<String>,
    /// On this server.
    pub server: Option<String>,
    /// Of this type.
    pub tenant_type: Option<String>,
    /// With this status (`unknown`: NULL in the registry).
    pub status: Option<String>,
    /// At this revision; `Some(None)`: none applied (`base`).
    pub revision: Option<Option<i32>>,
    /// Provisioned and below this head.
    pub behind: Option<i32>,
}

/// One group of the fleet's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    /// The server (`default` when NULL).
    pub server: String,
    /// The cached revision (`None`: none applied).
    pub revision: Option<i32>,
    /// The status (`unknown` when NULL).
    pub status: String,
    /// Whether the schema is provisioned.
    pub provisioned: bool,
    /// Tenants in the group.
    pub tenants: u64,
}

/// One bulk run, from the runs table.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    /// Its id.
    pub run_id: String,
    /// The command (`upgrade`, `backup`, ...).
    pub command: String,
    /// When it started and ended (`None`: NULL).
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// Seconds from start to end, when both are times and in order.
    pub seconds: Option<f64>,
    /// The database user of its ledger entries, when it wrote any.
    pub db_user: Option<String>,
    /// The machine it ran on.
    pub client_host: Option<String>,
    /// Its counts.
    pub total: i64,
    /// Tenants brought to the target.
    pub ok: i64,
    /// Tenants already there.
    pub up_to_date: i64,
    /// Tenants that failed.
    pub failed: i64,
    /// Tenants skipped.
    pub skipped: i64,
    /// `ok`, `failed` or `interrupted`.
    pub result: String,
}

/// The runs that ended on one day (UTC).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Runs that ended that day.
    pub runs: u64,
    /// Those that did not end `ok`.
    pub failed_runs: u64,
    /// Tenants that failed in them.
    pub failed_tenants: u64,
    /// The longest run's seconds.
    pub longest: f64,
}

/// A run's ledger entries so far, by action.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// The run.
    pub run_id: String,
    /// The action its entries record.
    pub action: String,
    /// Its first entry's start.
    pub started_at: Option<Timestamp>,
    /// Entries that ended `ok`.
    pub ok: u64,
    /// Entries that failed.
    pub failed: u64,
    /// Entries refused before anything changed.
    pub refused: u64,
}

/// `LIKE` text matching `text` literally anywhere.
fn contains(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

fn ts(r: &Row, i: usize) -> Option<Timestamp> {
    r.try_get::<_, Option<Timestamp>>(i).ok().flatten()
}

fn count(r: &Row, i: usize) -> u64 {
    r.try_get::<_, Option<i64>>(i)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

/// `text` when it is a run id (a UUID), so that a query by id can use the ledger's index
/// and a hostile id is never sent.
pub fn run_id(text: &str) -> Option<String> {
    uuid::Uuid::parse_str(text).ok().map(|u| u.to_string())
}

const RUN_COLUMNS: &str = "r.run_id::text, r.command, r.started_at, r.finished_at, \
     CASE WHEN isfinite(r.finished_at) AND isfinite(r.started_at) AND r.finished_at >= r.started_at \
       THEN extract(epoch FROM r.finished_at - r.started_at)::float8 END, \
     NULL::text, r.client_host, \
     r.total::bigint, r.ok::bigint, r.up_to_date::bigint, r.failed::bigint, r.skipped::bigint, r.result";

fn run_row(r: &Row) -> RunRow {
    let text = |i: usize| {
        r.try_get::<_, Option<String>>(i)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    let number = |i: usize| r.try_get::<_, Option<i64>>(i).ok().flatten().unwrap_or(0);
    RunRow {
        run_id: text(0),
        command: text(1),
        started_at: ts(r, 2),
        finished_at: ts(r, 3),
        seconds: r.try_get::<_, Option<f64>>(4).ok().flatten(),
        db_user: r.try_get(5).ok().flatten(),
        client_host: r.try_get(6).ok().flatten(),
        total: number(7),
        ok: number(8),
        up_to_date: number(9),
        failed: number(10),
        skipped: number(11),
        result: text(12),
    }
}

impl Registry<'_> {
    /// The fleet's counts by server, revision, status and provisioning: one grouped scan.
    pub async fn counts(&self) -> Result<Vec<Count>, Error> {
        let rows = db::read(
            self.reads,
            "counting the tenants",
            self.client.query(
                &format!(
                    "SELECT coalesce(server, $1), current_revision, coalesce(status, 'unknown'), \
                            coalesce(schema_provisioned, false), count(*)::bigint \
                     FROM {} GROUP BY 1, 2, 3, 4",
                    self.tables.tenants
                ),
                &[&crate::config::DEFAULT_SERVER],
            ),
        )
        .await?;
        Ok(rows
            .iter()
            .map(|r| Count {
                server: r.try_get(0).unwrap_or_default(),
                revision: r.try_get(1).ok().flatten(),
                status: r.try_get(2).unwrap_or_default(),
                provisioned: r.try_get(3).unwrap_or(false),
                tenants: count(r, 4),
            })
            .collect())
    }

    /// The tenants `search` keeps, by id: how many there are, and `limit` of them from
    /// `offset`.
    pub async fn search(
        &self,
        search: &Search,
        limit: i64,
        offset: i64,
    ) -> Result<(u64, Vec<Tenant>), Error> {
        let pattern = search.text.as_deref().map(contains);
        let base = matches!(search.revision, Some(None));
        let revision = search.revision.flatten();
        let filter = "($1::text IS NULL OR domain ILIKE $1 OR schema_name ILIKE $1 OR tenant_name ILIKE $1) \
             AND ($2::text IS NULL OR coalesce(server, 'default') = $2) \
             AND ($3::text IS NULL OR tenant_type = $3) \
             AND ($4::text IS NULL OR coalesce(status, 'unknown') = $4) \
             AND (NOT $5 OR current_revision IS NULL) \
             AND ($6::int4 IS NULL OR current_revision = $6) \
             AND ($7::int4 IS NULL OR (schema_provisioned AND coalesce(current_revision, 0) < $7))";
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
            &pattern,
            &search.server,
            &search.tenant_type,
            &search.status,
            &base,
            &revision,
            &search.behind,
        ];
        let total = db::read(
            self.reads,
            "searching the tenants",
            self.client.query_one(
                &format!(
                    "SELECT count(*)::bigint FROM {} WHERE {filter}",
                    self.tables.tenants
                ),
                &params,
            ),
        )
        .await?;
        let mut paged: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.to_vec();
        paged.push(&limit);
        paged.push(&offset);
        let rows = db::read(
            self.reads,
            "searching the tenants",
            self.client.query(
                &format!(
                    "SELECT {COLUMNS} FROM {} WHERE {filter} ORDER BY id LIMIT $8 OFFSET $9",
                    self.tables.tenants
                ),
                &paged,
            ),
        )
        .await?;
        Ok((
            count(&total, 0),
            rows.iter().map(Tenant::from_row).collect(),
        ))
    }

    /// The distinct values of a text column of the tenants (for the search's choices),
    /// at most `limit`, sorted.
    pub async fn values(&self, column: Column, limit: i64) -> Result<Vec<String>, Error> {
        let expr = match column {
            Column::Server => "coalesce(server, 'default')",
            Column::Type => "tenant_type",
        };
        let rows = db::read(
            self.reads,
            "reading the tenants' values",
            self.client.query(
                &format!(
                    "SELECT DISTINCT {expr} FROM {} WHERE {expr} IS NOT NULL ORDER BY 1 LIMIT $1",
                    self.tables.tenants
                ),
                &[&limit],
            ),
        )
        .await?;
        Ok(rows.iter().filter_map(|r| r.try_get(0).ok()).collect())
    }

    /// Bulk runs, newest first (those whose end is not a time last): how many there are,
    /// and `limit` from `offset`.
    pub async fn runs(&self, limit: i64, offset: i64) -> Result<(u64, Vec<RunRow>), Error> {
        let columns = RUN_COLUMNS;
        let total = db::read(
            self.reads,
            "reading the runs",
            self.client.query_one(
                &format!("SELECT count(*)::bigint FROM {}", self.tables.runs),
                &[],
            ),
        )
        .await?;
        let rows = db::read(
            self.reads,
            "reading the runs",
            self.client.query(
                &format!(
                    "SELECT {columns} FROM {} r \
                     ORDER BY CASE WHEN isfinite(r.finished_at) THEN r.finished_at END DESC NULLS LAST, r.run_id \
                     LIMIT $1 OFFSET $2",
                    self.tables.runs
                ),
                &[&limit, &offset],
            ),
        )
        .await?;
        let mut runs: Vec<RunRow> = rows.iter().map(run_row).collect();
        self.who(&mut runs).await?;
        Ok((count(&total, 0), runs))
    }

    /// Fills in who ran each run: the database user of its first ledger entry. One
    /// lookup per run, sent at once: each is planned for its own run id, so a run with no
    /// entry is an index probe, where one query for all of them would be planned for an
    /// average run and scan the ledger.
    async fn who(&self, runs: &mut [RunRow]) -> Result<(), Error> {
        let sql = format!(
            "SELECT db_user FROM {} WHERE run_id = $1::text::uuid LIMIT 1",
            self.tables.events
        );
        let sql = &sql;
        let lookups = runs.iter().map(|r| async move {
            db::read(
                self.reads,
                "reading who ran the runs",
                self.client.query_opt(sql, &[&r.run_id]),
            )
            .await
        });
        let found = futures::future::try_join_all(lookups).await?;
        for (run, row) in runs.iter_mut().zip(found) {
            run.db_user = row.and_then(|r| r.try_get(0).ok());
        }
        Ok(())
    }

    /// One bulk run's row, if it has ended (`run_id` must be a UUID: see [`run_id`]).
    pub async fn run(&self, run_id: &str) -> Result<Option<RunRow>, Error> {
        let columns = RUN_COLUMNS;
        let row = db::read(
            self.reads,
            "reading the run",
            self.client.query_opt(
                &format!(
                    "SELECT {columns} FROM {} r WHERE r.run_id = $1::text::uuid",
                    self.tables.runs
                ),
                &[&run_id],
            ),
        )
        .await?;
        let mut runs: Vec<RunRow> = row.as_ref().map(run_row).into_iter().collect();
        self.who(&mut runs).await?;
        Ok(runs.pop())
    }

    /// A run's ledger entries in the order they were written, only those that did not
    /// succeed when `failed_only`: how many there are, and `limit` from `offset`.
    pub async fn run_entries(
        &self,
        run_id: &str,
        failed_only: bool,
        limit: i64,
        offset: i64,
    ) -> Result<(u64, Vec<EventRow>), Error> {
        let filter = "run_id = $1::text::uuid AND (NOT $2 OR status IS DISTINCT FROM 'ok')";
        let total = db::read(
            self.reads,
            "reading the run's entries",
            self.client.query_one(
                &format!(
                    "SELECT count(*)::bigint FROM {} WHERE {filter}",
                    self.tables.events
                ),
                &[&run_id, &failed_only],
            ),
        )
        .await?;
        let rows = db::read(
            self.reads,
            "reading the run's entries",
            self.client.query(
                &format!(
                    "SELECT id, run_id::text, tenant_id, domain, schema_name, action, from_revision, to_revision, \
                            status, error, started_at, finished_at, db_user, client_host, client_addr \
                     FROM {} WHERE {filter} ORDER BY id LIMIT $3 OFFSET $4",
                    self.tables.events
                ),
                &[&run_id, &failed_only, &limit, &offset],
            ),
        )
        .await?;
        Ok((
            count(&total, 0),
            rows.iter().map(EventRow::from_row).collect(),
        ))
    }

    /// The ledger entries so far of these runs (UUIDs), by run and action.
    pub async fn progress(&self, run_ids: &[String]) -> Result<Vec<Progress>, Error> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = db::read(
            self.reads,
            "reading the runs in progress",
            self.client.query(
                &format!(
                    "SELECT run_id::text, action, min(started_at) FILTER (WHERE isfinite(started_at)), \
                            count(*) FILTER (WHERE status = 'ok')::bigint, \
                            count(*) FILTER (WHERE status = 'failed')::bigint, \
                            count(*) FILTER (WHERE status = 'refused')::bigint \
                     FROM {} WHERE run_id = ANY($1::text[]::uuid[]) GROUP BY 1, 2 ORDER BY 3",
                    self.tables.events
                ),
                &[&run_ids],
            ),
        )
        .await?;
        Ok(rows
            .iter()
            .map(|r| Progress {
                run_id: r.try_get(0).unwrap_or_default(),
                action: r
                    .try_get::<_, Option<String>>(1)
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
                started_at: ts(r, 2),
                ok: count(r, 3),
                failed: count(r, 4),
                refused: count(r, 5),
            })
            .collect())
    }

    /// Which of these runs (UUIDs) have recorded their end.
    pub async fn ended(&self, run_ids: &[String]) -> Result<Vec<String>, Error> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = db::read(
            self.reads,
            "reading the runs",
            self.client.query(
                &format!(
                    "SELECT run_id::text FROM {} WHERE run_id = ANY($1::text[]::uuid[])",
                    self.tables.runs
                ),
                &[&run_ids],
            ),
        )
        .await?;
        Ok(rows.iter().filter_map(|r| r.try_get(0).ok()).collect())
    }

    /// Bulk runs per day (UTC) over the last `days` days, oldest first; days without a
    /// run are absent.
    pub async fn days(&self, days: i32) -> Result<Vec<Day>, Error> {
        let rows = db::read(
            self.reads,
            "reading the runs per day",
            self.client.query(
                &format!(
                    "SELECT to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), count(*)::bigint, \
                            count(*) FILTER (WHERE result IS DISTINCT FROM 'ok')::bigint, \
                            coalesce(sum(greatest(failed, 0)), 0)::bigint, \
                            coalesce(max(extract(epoch FROM finished_at - started_at)) \
                              FILTER (WHERE isfinite(started_at) AND finished_at >= started_at), 0)::float8 \
                     FROM {} WHERE isfinite(finished_at) \
                       AND finished_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - make_interval(days => $1 - 1) \
                       AND finished_at <= now() + interval '1 day' \
                     GROUP BY 1 ORDER BY 1",
                    self.tables.runs
                ),
                &[&days],
            ),
        )
        .await?;
        Ok(rows
            .iter()
            .map(|r| Day {
                day: r.try_get(0).unwrap_or_default(),
                runs: count(r, 1),
                failed_runs: count(r, 2),
                failed_tenants: count(r, 3),
                longest: r.try_get(4).unwrap_or(0.0),
            })
            .collect())
    }

    /// One tenant's ledger entries of these actions, newest first, at most `limit`.
    pub async fn tenant_entries(
        &self,
        tenant_id: i64,
        actions: &[&str],
        limit: i64,
    ) -> Result<Vec<EventRow>, Error> {
        let rows = db::read(
            self.reads,
            "reading the run ledger",
            self.client.query(
                &format!(
                    "SELECT id, run_id::text, tenant_id, domain, schema_name, action, from_revision, to_revision, \
                            status, error, started_at, finished_at, db_user, client_host, client_addr \
                     FROM {} WHERE tenant_id = $1 AND action = ANY($2) ORDER BY id DESC LIMIT $3",
                    self.tables.events
                ),
                &[&tenant_id, &actions, &limit],
            ),
        )
        .await?;
        Ok(rows.iter().map(EventRow::from_row).collect())
    }
}

/// A text column of the tenants a search can choose from.
#[derive(Debug, Clone, Copy)]
pub enum Column {
    /// `server`.
    Server,
    /// `tenant_type`.
    Type,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_matches_literally() {
        assert_eq!(contains("a_b%c\\d"), "%a\\_b\\%c\\\\d%");
        assert_eq!(contains(""), "%%");
    }

    #[test]
    fn only_uuids_are_run_ids() {
        assert_eq!(
            run_id("6F9619FF-8B86-D011-B42D-00C04FC964FF").as_deref(),
            Some("6f9619ff-8b86-d011-b42d-00c04fc964ff")
        );
        assert_eq!(run_id("1; DROP TABLE x"), None);
        assert_eq!(run_id(""), None);
    }
}
