//! Prometheus metrics about the fleet, read from the registry and the run ledger (the book's
//! "Metrics"): what `GET /metrics`, `tenantctl metrics` and `--metrics-textfile` write.
//!
//! They follow Prometheus's conventions for batch jobs: gauges, base units (seconds),
//! last-run and last-success timestamps per command, a counter of ledger entries, and
//! no per-tenant labels, so a fleet of ten thousand tenants is a few dozen series. Every
//! tenant gauge carries `server`, also with one server, so a series keeps its identity
//! when a second server is added. They are read from the registry's cached columns and
//! the ledger, never from the tenants' schemas.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::error::Error;
use crate::pg::db::{self, Reads};
use crate::registry::Tables;

/// The fleet as metrics describe it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// The migration files' head version.
    pub head: i32,
    /// Tenants by (server, status).
    pub tenants: BTreeMap<(String, String), u64>,
    /// Provisioned tenants below head, by server.
    pub behind: BTreeMap<String, u64>,
    /// Tenants by current revision (`base`: none applied).
    pub by_revision: BTreeMap<String, u64>,
    /// When the last run of each command ended, by (command, result).
    pub last_run: BTreeMap<(String, String), f64>,
    /// When the last run of each command in which no tenant failed ended.
    pub last_success: BTreeMap<String, f64>,
    /// The last bulk run of each command (`tenant_runs`).
    pub last_bulk: BTreeMap<String, BulkRun>,
    /// Registered tenants whose schema is not provisioned, by server.
    pub unprovisioned: BTreeMap<String, u64>,
    /// Ledger entries by (action, status).
    pub events: BTreeMap<(String, String), u64>,
    /// Backups by tenant type.
    pub backups: BTreeMap<String, Backups>,
    /// The configured servers: each gets its tenant gauges, zero when it has no tenant.
    pub servers: Vec<String>,
    /// The shared schema, when there is one: its files' head, and its revision on each
    /// server that could be read (0: nothing applied).
    pub shared: Option<(i32, BTreeMap<String, i32>)>,
    /// Tenants whose applied history differs from the migration files, by server, when
    /// the fleet could be read.
    pub drifted: Option<BTreeMap<String, u64>>,
}

impl Metrics {
    /// Adds the tenants whose history differs from the files (a checksum or name edited,
    /// a file changed after it was applied, a version applied that no file has), by
    /// server: a fleet read as `status --all` does it (one query per server through the
    /// version index); nothing when the files or the fleet cannot be read.
    pub async fn with_drift(mut self, cx: &crate::app::context::Context) -> Metrics {
        let read = async {
            let set = cx.migrations()?;
            let client = cx.connect().await?;
            let registry =
                crate::registry::Registry::open(&client, &cx.settings.registry_schema).await?;
            let mut tenants = registry.list(None, None).await?;
            cx.statuses(&client, &registry, &mut tenants, &set).await
        };
        let Ok(statuses) = read.await else {
            return self;
        };
        let mut drifted: BTreeMap<String, u64> =
            self.servers.iter().map(|s| (s.clone(), 0)).collect();
        for st in statuses.iter().filter(|st| !st.drift.is_empty()) {
            *drifted.entry(st.server.clone()).or_default() += 1;
        }
        self.drifted = Some(drifted);
        self
    }

    /// Adds the shared schema's head and its revision on each server, read from each
    /// server's shared history (one query per server); nothing when there is no shared
    /// schema or its files cannot be read.
    pub async fn with_shared(mut self, cx: &crate::app::context::Context) -> Metrics {
        if cx.settings.shared.is_none() {
            return self;
        }
        let (Ok((_, set)), Ok(statuses)) =
            (cx.shared(), crate::app::shared::status(cx, None).await)
        else {
            return self;
        };
        let revisions = statuses
            .into_iter()
            .filter(|s| s.error.is_none())
            .map(|s| (s.server, s.current_revision.unwrap_or(0)))
            .collect();
        self.shared = Some((set.head(), revisions));
        self
    }
}

/// The last bulk run of one command, from `tenant_runs`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BulkRun {
    /// From its start to its end, in seconds.
    pub duration: f64,
    /// The tenants it selected.
    pub tenants: u64,
    /// Those that failed.
    pub failed: u64,
}

/// The backups of the tenants of one type, from the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backups {
    /// Registered tenants of the type.
    pub tenants: u64,
    /// Those with no successful backup in the ledger.
    pub never: u64,
    /// The oldest of their last successful backups (Unix seconds), among those with one.
    pub oldest: Option<f64>,
    /// Those a backup policy covers whose backup is due (`backup --due` would back them up).
    pub overdue: u64,
}

/// The `status` label of tenants whose registry status is NULL.
pub const UNKNOWN_STATUS: &str = "unknown";

/// A `count(*)` column.
fn count(r: &tokio_postgres::Row, i: usize) -> u64 {
    r.try_get::<_, i64>(i)
        .ok()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

/// Reads the metrics from the registry; `head` is the migration files' head and
/// `servers` the configured servers' names.
pub async fn gather<C: Reads + ?Sized>(
    client: &C,
    tables: &Tables,
    head: i32,
    servers: Vec<String>,
    policies: &BTreeMap<String, crate::config::Policy>,
) -> Result<Metrics, Error> {
    let mut m = Metrics {
        head,
        servers,
        ..Default::default()
    };
    // A NULL server or status (a NOT NULL dropped by hand): the tenant is on `default`,
    // as every command reads it, and its status is `unknown`.
    let rows = db::read(
        client,
        "reading the registry for metrics",
        client.pg().query(
            &format!(
                "SELECT coalesce(server, $2), coalesce(status, $3), count(*)::bigint, \
                        count(*) FILTER (WHERE schema_provisioned AND coalesce(current_revision, 0) < $1)::bigint, \
                        count(*) FILTER (WHERE schema_provisioned IS NOT TRUE)::bigint \
                 FROM {} GROUP BY 1, 2",
                tables.tenants
            ),
            &[&head, &crate::config::DEFAULT_SERVER, &UNKNOWN_STATUS],
        ),
    )
    .await?;
    for r in &rows {
        let server: String = r.try_get(0).unwrap_or_default();
        let status: String = r.try_get(1).unwrap_or_default();
        let n = count(r, 2);
        let behind = count(r, 3);
        *m.tenants.entry((server.clone(), status)).or_default() += n;
        *m.behind.entry(server.clone()).or_default() += behind;
        *m.unprovisioned.entry(server).or_default() += count(r, 4);
    }
    let rows = db::read(
        client,
        "reading the registry for metrics",
        client.pg().query(
            &format!(
                "SELECT coalesce(current_revision::text, 'base'), count(*)::bigint FROM {} GROUP BY 1",
                tables.tenants
            ),
            &[],
        ),
    )
    .await?;
    for r in &rows {
        let revision: String = r.try_get(0).unwrap_or_default();
        *m.by_revision.entry(revision).or_default() += count(r, 1);
    }
    // A run with a refused entry is no success either (bulk runs' own rows, below, say
    // how they ended), nor is one with an entry whose status is NULL. A run counts from
    // its last end time that is a time: one with none (NULL, `infinity`, `-infinity`:
    // written by hand) counts for nothing, and neither does a NULL command. One pass over
    // the ledger gives both each command's last runs and the entries counted by action
    // and status (`kind` 'run' and 'count').
    let ledger = db::read(
        client,
        "reading the run ledger for metrics",
        client.pg().query(
            &format!(
                "WITH g AS (SELECT action, run_id, status, count(*) AS n, \
                                   max(finished_at) FILTER (WHERE isfinite(finished_at)) AS at \
                            FROM {} WHERE action IS NOT NULL GROUP BY action, run_id, status), \
                      runs AS (SELECT action, run_id, bool_or(status IS DISTINCT FROM 'ok') AS failed, \
                                      max(at) AS at \
                               FROM g GROUP BY action, run_id) \
                 SELECT 'run', action, CASE WHEN failed THEN 'failed' ELSE 'ok' END, \
                        extract(epoch FROM max(at))::float8, 0::bigint \
                 FROM runs WHERE at IS NOT NULL GROUP BY 2, 3 \
                 UNION ALL \
                 SELECT 'count', action, coalesce(status, $1), NULL::float8, sum(n)::bigint \
                 FROM g GROUP BY 2, 3",
                tables.events
            ),
            &[&UNKNOWN_STATUS],
        ),
    )
    .await?;
    // (command, result, when) of the ledger's runs, then of the runs table's.
    let mut ended: Vec<(String, String, f64)> = Vec::new();
    for r in &ledger {
        let (Ok(kind), Ok(action), Ok(status)) = (
            r.try_get::<_, &str>(0),
            r.try_get::<_, String>(1),
            r.try_get::<_, String>(2),
        ) else {
            continue;
        };
        if kind == "count" {
            let n = count(r, 4);
            *m.events.entry((action, status)).or_default() += n;
        } else if let Ok(at) = r.try_get::<_, f64>(3) {
            ended.push((action, status, at));
        }
    }
    // Bulk runs have a row of their own, even when no tenant needed work.
    let runs = db::read(
        client,
        "reading the runs for metrics",
        client.pg().query(
            &format!(
                "SELECT command, result, extract(epoch FROM max(finished_at))::float8 \
                 FROM {} WHERE command IS NOT NULL AND result IS NOT NULL AND isfinite(finished_at) \
                 GROUP BY 1, 2",
                tables.runs
            ),
            &[],
        ),
    )
    .await?;
    for r in &runs {
        if let (Ok(command), Ok(result), Ok(at)) = (
            r.try_get::<_, String>(0),
            r.try_get::<_, String>(1),
            r.try_get::<_, f64>(2),
        ) {
            ended.push((command, result, at));
        }
    }
    for (command, result, at) in ended {
        if result == "ok" {
            let e = m.last_success.entry(command.clone()).or_insert(at);
            *e = e.max(at);
        }
        let e = m.last_run.entry((command, result)).or_insert(at);
        *e = e.max(at);
    }
    let last = db::read(
        client,
        "reading the runs for metrics",
        client.pg().query(
            &format!(
                "SELECT DISTINCT ON (command) command, \
                        extract(epoch FROM finished_at - started_at)::float8, \
                        greatest(total, 0)::bigint, greatest(failed, 0)::bigint \
                 FROM {} WHERE command IS NOT NULL AND isfinite(finished_at) AND isfinite(started_at) \
                   AND finished_at >= started_at \
                 ORDER BY command, finished_at DESC",
                tables.runs
            ),
            &[],
        ),
    )
    .await?;
    for r in &last {
        let (Ok(command), Ok(duration)) = (r.try_get::<_, String>(0), r.try_get::<_, f64>(1))
        else {
            continue;
        };
        m.last_bulk.insert(
            command,
            BulkRun {
                duration,
                tenants: count(r, 2),
                failed: count(r, 3),
            },
        );
    }
    m.backups = backups(client, tables, policies).await?;
    Ok(m)
}

/// The backups of each tenant type, from the ledger and the backup policies: each
/// tenant's last successful backup (by tenant id: a tenant registered again under the
/// same domain has backed up nothing yet), and whether its policy (its type's, else
/// `default`) says one is due.
pub async fn backups<C: Reads + ?Sized>(
    client: &C,
    tables: &Tables,
    policies: &BTreeMap<String, crate::config::Policy>,
) -> Result<BTreeMap<String, Backups>, Error> {
    let mut out = BTreeMap::new();
    let kinds: Vec<&str> = policies.keys().map(String::as_str).collect();
    let every: Vec<f64> = policies.values().map(|p| p.every.as_secs_f64()).collect();
    let default_every: Option<f64> = policies
        .get(crate::config::DEFAULT_POLICY)
        .map(|p| p.every.as_secs_f64());
    let backups = db::read(
        client,
        "reading the backups in the run ledger",
        client.pg().query(
            &format!(
                "SELECT coalesce(t.tenant_type, $1), count(*)::bigint, \
                        count(*) FILTER (WHERE b.at IS NULL)::bigint, \
                        extract(epoch FROM min(b.at))::float8, \
                        count(*) FILTER (WHERE coalesce(p.secs, $4) IS NOT NULL \
                          AND (b.at IS NULL OR extract(epoch FROM now() - b.at) >= coalesce(p.secs, $4)))::bigint \
                 FROM {tenants} t LEFT JOIN ( \
                   SELECT tenant_id, max(finished_at) AS at FROM {events} \
                   WHERE action = 'backup' AND status = 'ok' AND isfinite(finished_at) \
                   GROUP BY tenant_id) b ON b.tenant_id = t.id \
                 LEFT JOIN unnest($2::text[], $3::float8[]) AS p(kind, secs) ON p.kind = t.tenant_type \
                 GROUP BY 1",
                tenants = tables.tenants,
                events = tables.events
            ),
            &[&UNKNOWN_STATUS, &kinds, &every, &default_every],
        ),
    )
    .await?;
    for r in &backups {
        let Ok(kind) = r.try_get::<_, String>(0) else {
            continue;
        };
        out.insert(
            kind,
            Backups {
                tenants: count(r, 1),
                never: count(r, 2),
                oldest: r.try_get::<_, Option<f64>>(3).ok().flatten(),
                overdue: count(r, 4),
            },
        );
    }
    Ok(out)
}

/// A label value, escaped as the text format wants.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The fleet's metrics as Prometheus text, read through the action's own connection.
/// Without a migrations directory, head is 0 and nothing counts as behind.
pub async fn text(cx: &crate::app::context::Context) -> Result<String, Error> {
    let client = cx.connect().await?;
    let registry = crate::registry::Registry::open(&client, &cx.settings.registry_schema).await?;
    let head = cx.migrations().map(|s| s.head()).unwrap_or(0);
    let m = gather(
        &client,
        registry.tables(),
        head,
        server_names(cx),
        &cx.settings.backup_policies,
    )
    .await?;
    Ok(render(&m.with_shared(cx).await.with_drift(cx).await))
}

/// The configured servers' names.
pub fn server_names(cx: &crate::app::context::Context) -> Vec<String> {
    cx.servers.iter().map(|(s, _)| s.name.clone()).collect()
}

/// Writes the fleet's metrics to `path` whole (see [`write_textfile`]).
pub async fn write(cx: &crate::app::context::Context, path: &Path) -> Result<(), Error> {
    write_textfile(path, &text(cx).await?)
}

/// The metrics in Prometheus's text format.
pub fn render(m: &Metrics) -> String {
    let mut out = Text::default();
    out.family(
        "tenantctl_build_info",
        Kind::Gauge,
        "Always 1; the tenantctl that wrote these metrics.",
    );
    out.sample(
        "tenantctl_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    out.family(
        "tenantctl_head_revision",
        Kind::Gauge,
        "The highest migration version in the migrations directory.",
    );
    out.sample("tenantctl_head_revision", &[], m.head);

    // Every configured server has its series, also before its first tenant.
    let mut servers: std::collections::BTreeSet<&str> =
        m.servers.iter().map(String::as_str).collect();
    servers.extend(m.tenants.keys().map(|(s, _)| s.as_str()));
    if servers.is_empty() {
        servers.insert(crate::config::DEFAULT_SERVER);
    }
    out.family(
        "tenantctl_tenants",
        Kind::Gauge,
        "Registered tenants by server and registry status (unknown: a NULL status).",
    );
    let mut by_status: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for server in &servers {
        for status in ["pending", "active", "failed"] {
            by_status.insert((server, status), 0);
        }
    }
    for ((server, status), count) in &m.tenants {
        *by_status.entry((server, status)).or_default() += count;
    }
    for ((server, status), count) in &by_status {
        out.sample(
            "tenantctl_tenants",
            &[("server", server), ("status", status)],
            count,
        );
    }
    for (name, help, values) in [
        (
            "tenantctl_tenants_behind_head",
            "Provisioned tenants whose cached revision is below head, by server.",
            &m.behind,
        ),
        (
            "tenantctl_tenants_unprovisioned",
            "Registered tenants whose schema is not provisioned, by server.",
            &m.unprovisioned,
        ),
    ] {
        out.family(name, Kind::Gauge, help);
        for server in &servers {
            let n = values.get(*server).copied().unwrap_or(0);
            out.sample(name, &[("server", server)], n);
        }
    }
    // Only when the fleet could be read: an absent series, not a 0, says "unknown".
    if let Some(drifted) = &m.drifted {
        let name = "tenantctl_tenants_drifted";
        out.family(
            name,
            Kind::Gauge,
            "Tenants whose applied history differs from the migration files (as status --all reports drift), by server.",
        );
        let mut all = servers.clone();
        all.extend(drifted.keys().map(String::as_str));
        for server in all {
            let n = drifted.get(server).copied().unwrap_or(0);
            out.sample(name, &[("server", server)], n);
        }
    }

    out.family(
        "tenantctl_tenants_by_revision",
        Kind::Gauge,
        "Registered tenants by cached current revision (base: none applied).",
    );
    for (rev, count) in &m.by_revision {
        out.sample("tenantctl_tenants_by_revision", &[("revision", rev)], count);
    }

    out.family(
        "tenantctl_last_run_timestamp_seconds",
        Kind::Gauge,
        "When the last run of a command ended, by result (failed: at least one tenant failed; interrupted), from the run ledger.",
    );
    for ((command, result), at) in &m.last_run {
        out.sample(
            "tenantctl_last_run_timestamp_seconds",
            &[("command", command), ("result", result)],
            format!("{at:.3}"),
        );
    }
    out.family(
        "tenantctl_last_success_timestamp_seconds",
        Kind::Gauge,
        "When the last run of a command in which no tenant failed ended (a bulk run in which no tenant needed work counts), from the run ledger.",
    );
    for (command, at) in &m.last_success {
        out.sample(
            "tenantctl_last_success_timestamp_seconds",
            &[("command", command)],
            format!("{at:.3}"),
        );
    }
    type Field = fn(&BulkRun) -> String;
    let bulk: [(&str, &str, Field); 3] = [
        (
            "tenantctl_last_run_duration_seconds",
            "How long the last bulk run of a command took, from its start to its end.",
            |r| format!("{:.3}", r.duration),
        ),
        (
            "tenantctl_last_run_tenants",
            "The tenants the last bulk run of a command selected.",
            |r| r.tenants.to_string(),
        ),
        (
            "tenantctl_last_run_failed_tenants",
            "The tenants that failed in the last bulk run of a command.",
            |r| r.failed.to_string(),
        ),
    ];
    for (name, help, value) in bulk {
        out.family(name, Kind::Gauge, help);
        for (command, run) in &m.last_bulk {
            out.sample(name, &[("command", command)], value(run));
        }
    }

    out.family(
        "tenantctl_ledger_events_total",
        Kind::Counter,
        "Entries in the run ledger, by action and status: one per change tenantctl made to a tenant, or tried to.",
    );
    for ((action, status), n) in &m.events {
        out.sample(
            "tenantctl_ledger_events_total",
            &[("action", action), ("status", status)],
            n,
        );
    }

    out.family(
        "tenantctl_tenants_without_backup",
        Kind::Gauge,
        "Registered tenants with no successful backup in the run ledger, by tenant type.",
    );
    for (kind, b) in &m.backups {
        out.sample(
            "tenantctl_tenants_without_backup",
            &[("type", kind)],
            b.never,
        );
    }
    out.family(
        "tenantctl_backups_overdue",
        Kind::Gauge,
        "Tenants of a type whose backup policy says a backup is due (backup --due would back them up); 0 for a type no policy covers.",
    );
    for (kind, b) in &m.backups {
        out.sample("tenantctl_backups_overdue", &[("type", kind)], b.overdue);
    }
    out.family(
        "tenantctl_backup_oldest_timestamp_seconds",
        Kind::Gauge,
        "The oldest of the last successful backups of the tenants of a type that have one (time() minus this is the worst backup age).",
    );
    for (kind, b) in &m.backups {
        if let Some(at) = b.oldest {
            out.sample(
                "tenantctl_backup_oldest_timestamp_seconds",
                &[("type", kind)],
                format!("{at:.3}"),
            );
        }
    }

    if let Some((head, revisions)) = &m.shared {
        out.family(
            "tenantctl_shared_head_revision",
            Kind::Gauge,
            "The highest version in the shared schema's migrations directory.",
        );
        out.sample("tenantctl_shared_head_revision", &[], head);
        out.family(
            "tenantctl_shared_revision",
            Kind::Gauge,
            "The shared schema's revision on each server (0: nothing applied), read from its history; absent for a server that could not be read.",
        );
        for (server, revision) in revisions {
            out.sample("tenantctl_shared_revision", &[("server", server)], revision);
        }
    }
    out.0
}

/// A metric family's type.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A count that only goes up (until the process, or the ledger, starts again).
    Counter,
    /// Observations counted into buckets, with their sum and count.
    Histogram,
}

/// Metrics text being written: families, each declared before its samples.
#[derive(Debug, Default)]
pub struct Text(pub String);

impl Text {
    /// Declares a family.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// Writes one sample, its label values escaped.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// One sample of the metrics, as `metrics -o json` gives it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct Sample {
    /// The metric's name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// The samples of metrics text as [`render`] writes it (`name{k="v",...} value`, label
/// values escaped as the text format escapes them); comment lines are skipped.
pub fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((head, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            None => (head.to_string(), BTreeMap::new()),
            Some((name, rest)) => (
                name.to_string(),
                labels(rest.strip_suffix('}').unwrap_or(rest)),
            ),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// `k="v",k2="v2"` with `\\`, `\"` and `\n` escapes in the values.
fn labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => {}
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

/// Writes `text` to `path` atomically (a temporary file beside it, then a rename), as
/// node_exporter's textfile collector needs: it never reads a half-written file.
pub fn write_textfile(path: &Path, text: &str) -> Result<(), Error> {
    let fail = |e: std::io::Error| {
        Error::usage(format!("cannot write metrics to {}: {e}", path.display()))
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if path.is_dir() {
        return Err(Error::usage(format!(
            "cannot write metrics to {}: it is a directory",
            path.display()
        )));
    }
    let name = path
        .file_name()
        .ok_or_else(|| Error::usage(format!("{} does not name a file", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_read_back_what_render_writes() {
        let text = "# HELP x y\n# TYPE x gauge\nx 3\ny{server=\"eu\\\"2\",status=\"a\\\\b\"} 1.5\n";
        let s = samples(text);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].name.as_str(), s[0].value), ("x", 3.0));
        assert_eq!(s[1].labels.get("server").map(String::as_str), Some("eu\"2"));
        assert_eq!(s[1].labels.get("status").map(String::as_str), Some("a\\b"));
        assert_eq!(s[1].value, 1.5);
    }

    #[test]
    fn one_server_labels_its_gauges_too_and_every_status_appears() {
        let mut m = Metrics {
            head: 7,
            servers: vec!["default".into()],
            ..Default::default()
        };
        m.tenants.insert(("default".into(), "active".into()), 3);
        m.behind.insert("default".into(), 1);
        m.by_revision.insert("7".into(), 2);
        m.by_revision.insert("base".into(), 1);
        m.last_run
            .insert(("upgrade".into(), "ok".into()), 1_700_000_000.5);
        m.last_success.insert("upgrade".into(), 1_700_000_000.5);
        m.last_bulk.insert(
            "upgrade".into(),
            BulkRun {
                duration: 12.25,
                tenants: 3,
                failed: 1,
            },
        );
        m.events.insert(("upgrade".into(), "ok".into()), 5);
        m.backups.insert(
            "standard".into(),
            Backups {
                tenants: 3,
                never: 1,
                oldest: Some(1_700_000_100.0),
                overdue: 2,
            },
        );
        let text = render(&m);
        for line in [
            "tenantctl_build_info{version=\"",
            "tenantctl_head_revision 7\n",
            "tenantctl_tenants{server=\"default\",status=\"active\"} 3\n",
            "tenantctl_tenants{server=\"default\",status=\"failed\"} 0\n",
            "tenantctl_tenants_behind_head{server=\"default\"} 1\n",
            "tenantctl_tenants_unprovisioned{server=\"default\"} 0\n",
            "tenantctl_tenants_by_revision{revision=\"base\"} 1\n",
            "tenantctl_last_success_timestamp_seconds{command=\"upgrade\"} 1700000000.500\n",
            "tenantctl_last_run_duration_seconds{command=\"upgrade\"} 12.250\n",
            "tenantctl_last_run_tenants{command=\"upgrade\"} 3\n",
            "tenantctl_last_run_failed_tenants{command=\"upgrade\"} 1\n",
            "# TYPE tenantctl_ledger_events_total counter\n",
            "tenantctl_ledger_events_total{action=\"upgrade\",status=\"ok\"} 5\n",
            "tenantctl_tenants_without_backup{type=\"standard\"} 1\n",
            "tenantctl_backups_overdue{type=\"standard\"} 2\n",
            "tenantctl_backup_oldest_timestamp_seconds{type=\"standard\"} 1700000100.000\n",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        // Every sample belongs to a family declared before it.
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(declared.last().map(String::as_str), Some(name), "{line}");
            }
        }
    }

    #[test]
    fn a_server_without_tenants_has_its_series_at_zero() {
        let m = Metrics {
            servers: vec!["default".into(), "eu".into()],
            ..Default::default()
        };
        let text = render(&m);
        for line in [
            "tenantctl_tenants{server=\"eu\",status=\"pending\"} 0\n",
            "tenantctl_tenants_behind_head{server=\"eu\"} 0\n",
            "tenantctl_tenants_unprovisioned{server=\"default\"} 0\n",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[test]
    fn several_servers_label_the_tenant_gauges_and_escape_values() {
        let mut m = Metrics {
            servers: vec!["default".into()],
            ..Default::default()
        };
        m.tenants.insert(("eu\"2".into(), "failed".into()), 1);
        m.behind.insert("eu\"2".into(), 0);
        let text = render(&m);
        assert!(
            text.contains("tenantctl_tenants{server=\"eu\\\"2\",status=\"failed\"} 1"),
            "{text}"
        );
        assert!(text.contains("tenantctl_tenants_behind_head{server=\"eu\\\"2\"} 0"));
    }
}
