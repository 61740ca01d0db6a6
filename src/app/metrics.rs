//! Prometheus metrics about the fleet, read from the registry and the run ledger (the book's
//! "Metrics"): what `GET /metrics`, `tenantctl metrics` and `--metrics-textfile` write.
//!
//! They follow Prometheus's conventions for batch jobs: gauges, base units (seconds),
//! last-run and last-success timestamps per command, and no per-tenant labels, so a
//! fleet of ten thousand tenants is a few dozen series. They are read from the
//! registry's cached columns (one scan of `tenants`, one of the ledger), never from the
//! tenants' schemas.

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
    /// Whether tenants live on several servers (then the tenant gauges carry `server`).
    pub several_servers: bool,
    /// The shared schema, when there is one: its files' head, and its revision on each
    /// server that could be read (0: nothing applied).
    pub shared: Option<(i32, BTreeMap<String, i32>)>,
}

impl Metrics {
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
/// `servers` the configured servers.
pub async fn gather<C: Reads + ?Sized>(
    client: &C,
    tables: &Tables,
    head: i32,
    servers: usize,
) -> Result<Metrics, Error> {
    let mut m = Metrics {
        head,
        several_servers: servers > 1,
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
                        count(*) FILTER (WHERE schema_provisioned AND coalesce(current_revision, 0) < $1)::bigint \
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
        *m.behind.entry(server).or_default() += behind;
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
    // written by hand) counts for nothing, and neither does a NULL command.
    let rows = db::read(
        client,
        "reading the run ledger for metrics",
        client.pg().query(
            &format!(
                "WITH runs AS (SELECT action, run_id, bool_or(status IS DISTINCT FROM 'ok') AS failed, \
                                      max(finished_at) FILTER (WHERE isfinite(finished_at)) AS at \
                               FROM {} WHERE action IS NOT NULL GROUP BY action, run_id) \
                 SELECT action, CASE WHEN failed THEN 'failed' ELSE 'ok' END, \
                        extract(epoch FROM max(at))::float8 \
                 FROM runs WHERE at IS NOT NULL GROUP BY 1, 2",
                tables.events
            ),
            &[],
        ),
    )
    .await?;
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
    for r in rows.iter().chain(runs.iter()) {
        let (Ok(command), Ok(result), Ok(at)) = (
            r.try_get::<_, String>(0),
            r.try_get::<_, String>(1),
            r.try_get::<_, f64>(2),
        ) else {
            continue;
        };
        if result == "ok" {
            let e = m.last_success.entry(command.clone()).or_insert(at);
            *e = e.max(at);
        }
        let e = m.last_run.entry((command, result)).or_insert(at);
        *e = e.max(at);
    }
    Ok(m)
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
    let m = gather(&client, registry.tables(), head, cx.servers.iter().count()).await?;
    Ok(render(&m.with_shared(cx).await))
}

/// Writes the fleet's metrics to `path` whole (see [`write_textfile`]).
pub async fn write(cx: &crate::app::context::Context, path: &Path) -> Result<(), Error> {
    write_textfile(path, &text(cx).await?)
}

/// The metrics in Prometheus's text format.
pub fn render(m: &Metrics) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        name.to_string()
    };
    let mut lines: Vec<String> = Vec::new();
    let n = family(
        "tenantctl_head_revision",
        "The highest migration version in the migrations directory.",
    );
    lines.push(format!("{n} {}", m.head));
    flush(&mut out, &mut lines);

    let mut family = |name: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        name.to_string()
    };
    let n = family(
        "tenantctl_tenants",
        "Registered tenants by registry status (unknown: a NULL status), and by server where there are several.",
    );
    let mut by_status: BTreeMap<(Option<&str>, &str), u64> = BTreeMap::new();
    for ((server, status), count) in &m.tenants {
        let key = (
            m.several_servers.then_some(server.as_str()),
            status.as_str(),
        );
        *by_status.entry(key).or_default() += count;
    }
    for status in ["pending", "active", "failed"] {
        by_status.entry((None, status)).or_default();
    }
    if m.several_servers {
        by_status.retain(|(server, _), n| server.is_some() || *n > 0);
    }
    for ((server, status), count) in &by_status {
        match server {
            Some(s) => lines.push(format!(
                "{n}{{server=\"{}\",status=\"{}\"}} {count}",
                label(s),
                label(status)
            )),
            None => lines.push(format!("{n}{{status=\"{}\"}} {count}", label(status))),
        }
    }
    flush(&mut out, &mut lines);

    let n = family_line(
        &mut out,
        "tenantctl_tenants_behind_head",
        "Provisioned tenants whose cached revision is below head.",
    );
    if m.several_servers {
        for (server, count) in &m.behind {
            lines.push(format!("{n}{{server=\"{}\"}} {count}", label(server)));
        }
    } else {
        lines.push(format!("{n} {}", m.behind.values().sum::<u64>()));
    }
    flush(&mut out, &mut lines);

    let n = family_line(
        &mut out,
        "tenantctl_tenants_by_revision",
        "Registered tenants by cached current revision (base: none applied).",
    );
    for (rev, count) in &m.by_revision {
        lines.push(format!("{n}{{revision=\"{}\"}} {count}", label(rev)));
    }
    flush(&mut out, &mut lines);

    let n = family_line(
        &mut out,
        "tenantctl_last_run_timestamp_seconds",
        "When the last run of a command ended, by result (failed: at least one tenant failed; interrupted), from the run ledger.",
    );
    for ((command, result), at) in &m.last_run {
        lines.push(format!(
            "{n}{{command=\"{}\",result=\"{}\"}} {at:.3}",
            label(command),
            label(result)
        ));
    }
    flush(&mut out, &mut lines);

    let n = family_line(
        &mut out,
        "tenantctl_last_success_timestamp_seconds",
        "When the last run of a command in which no tenant failed ended (a bulk run in which no tenant needed work counts), from the run ledger.",
    );
    for (command, at) in &m.last_success {
        lines.push(format!("{n}{{command=\"{}\"}} {at:.3}", label(command)));
    }
    flush(&mut out, &mut lines);

    if let Some((head, revisions)) = &m.shared {
        let n = family_line(
            &mut out,
            "tenantctl_shared_head_revision",
            "The highest version in the shared schema's migrations directory.",
        );
        lines.push(format!("{n} {head}"));
        flush(&mut out, &mut lines);
        let n = family_line(
            &mut out,
            "tenantctl_shared_revision",
            "The shared schema's revision on each server (0: nothing applied), read from its history; absent for a server that could not be read.",
        );
        for (server, revision) in revisions {
            lines.push(format!("{n}{{server=\"{}\"}} {revision}", label(server)));
        }
        flush(&mut out, &mut lines);
    }
    out
}

fn family_line(out: &mut String, name: &str, help: &str) -> String {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    name.to_string()
}

fn flush(out: &mut String, lines: &mut Vec<String>) {
    for l in lines.drain(..) {
        out.push_str(&l);
        out.push('\n');
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
    fn one_server_has_no_server_label_and_every_status_appears() {
        let mut m = Metrics {
            head: 7,
            ..Default::default()
        };
        m.tenants.insert(("default".into(), "active".into()), 3);
        m.behind.insert("default".into(), 1);
        m.by_revision.insert("7".into(), 2);
        m.by_revision.insert("base".into(), 1);
        m.last_run
            .insert(("upgrade".into(), "ok".into()), 1_700_000_000.5);
        m.last_success.insert("upgrade".into(), 1_700_000_000.5);
        let text = render(&m);
        assert!(text.contains("tenantctl_head_revision 7\n"), "{text}");
        assert!(
            text.contains("tenantctl_tenants{status=\"active\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("tenantctl_tenants{status=\"failed\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("tenantctl_tenants_behind_head 1\n"), "{text}");
        assert!(text.contains("tenantctl_tenants_by_revision{revision=\"base\"} 1\n"));
        assert!(text.contains(
            "tenantctl_last_success_timestamp_seconds{command=\"upgrade\"} 1700000000.500\n"
        ));
        assert!(!text.contains("server="), "{text}");
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
    fn several_servers_label_the_tenant_gauges_and_escape_values() {
        let mut m = Metrics {
            several_servers: true,
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
