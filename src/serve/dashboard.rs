//! The dashboard: server-rendered HTML that works without JavaScript. `GET /` shows the
//! fleet from the registry's cached columns and the ledger (tenants per revision and per
//! server, tenants behind head, failed tenants with their errors, recent runs) and the
//! shared schema's revision on each server, read from its history; each tenant links to
//! `GET /tenants/{tenant}`, its status and its ledger entries.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{ApiError, Shared};
use crate::registry::{EventFilter, Registry, Status, Tenant};
use crate::timestamp::Timestamp;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.failed{color:#a40000}.ok{color:#1a6b1a}.muted{color:#777}\
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;min-width:8em}\
.card b{display:block;font-size:1.6em}";

fn page_html(title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{STYLE}</style></head>\
         <body>{body}</body></html>\n",
        esc(title)
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        html,
    )
        .into_response()
}

fn tenant_link(t: &Tenant) -> String {
    format!(
        "<a href=\"/tenants/{}\">{}</a>",
        seg(&t.id.to_string()),
        esc(&t.domain)
    )
}

/// A recent bulk run, from the runs table (one row per run, also one in which no tenant
/// needed work).
struct RecentRun {
    run_id: String,
    command: String,
    finished: String,
    host: String,
    total: i64,
    ok: i64,
    up_to_date: i64,
    failed: i64,
    skipped: i64,
    took: String,
}

/// `GET /`: the fleet at a glance.
pub async fn page(State(state): State<Shared>) -> Result<Response, ApiError> {
    let head = state.ctx.migrations().map(|s| s.head()).ok();
    let lease = state.pool.get().await?;
    let registry = Registry::open(lease.client(), &state.ctx.settings.registry_schema).await?;
    let tenants = registry.list(None, None).await?;
    let client = lease.client();
    // The runs whose end is a time come first, newest first; a row written by hand with
    // none (NULL or infinite) comes last, shown as what it holds.
    let rows = crate::pg::db::read(
        client,
        "reading recent runs",
        client.query(
            &format!(
                "SELECT run_id::text, command, finished_at, client_host, \
                        total::bigint, ok::bigint, up_to_date::bigint, failed::bigint, skipped::bigint, \
                        CASE WHEN isfinite(finished_at) AND isfinite(started_at) \
                          THEN extract(epoch FROM finished_at - started_at)::float8 END \
                 FROM {} \
                 ORDER BY CASE WHEN isfinite(finished_at) THEN finished_at END DESC NULLS LAST LIMIT 20",
                registry.tables().runs
            ),
            &[],
        ),
    )
    .await?;
    let runs: Vec<RecentRun> = rows
        .iter()
        .map(|r| {
            let text = |i: usize| {
                r.try_get::<_, Option<String>>(i)
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            };
            let number = |i: usize| {
                r.try_get::<_, Option<i64>>(i)
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            };
            let took = r
                .try_get::<_, Option<f64>>(9)
                .ok()
                .flatten()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_default();
            RecentRun {
                run_id: text(0),
                command: text(1),
                finished: crate::show::stored_time(
                    r.try_get::<_, Option<Timestamp>>(2).ok().flatten().as_ref(),
                ),
                host: text(3),
                total: number(4),
                ok: number(5),
                up_to_date: number(6),
                failed: number(7),
                skipped: number(8),
                took,
            }
        })
        .collect();
    drop(registry);
    lease.done();

    let mut by_revision: BTreeMap<Option<i32>, usize> = BTreeMap::new();
    let mut by_server: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for t in &tenants {
        *by_revision.entry(t.current_revision).or_default() += 1;
        let e = by_server.entry(t.server.as_str()).or_default();
        e.0 += 1;
        if t.status == Status::Failed {
            e.2 += 1;
        }
        if is_behind(t, head) {
            e.1 += 1;
        }
    }
    let behind: Vec<&Tenant> = tenants.iter().filter(|t| is_behind(t, head)).collect();
    // The shared schema on each server, read from each server's history (one query per
    // server); files that cannot be read show as a note.
    let shared = match state.ctx.settings.shared {
        None => None,
        Some(_) => Some(
            crate::app::shared::status(&state.ctx, None)
                .await
                .unwrap_or_else(|e| {
                    vec![crate::app::shared::SharedStatus {
                        server: "(all)".into(),
                        schema: String::new(),
                        current_revision: None,
                        pending_migrations: Vec::new(),
                        drift: Vec::new(),
                        error: Some(e.to_string()),
                        unreachable: false,
                    }]
                }),
        ),
    };
    let failed: Vec<&Tenant> = tenants
        .iter()
        .filter(|t| t.status == Status::Failed)
        .collect();

    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>tenantctl</h1><p class=\"muted\">Head revision: <span id=\"head\">{}</span>. \
         From the registry's cached columns and the run ledger.</p>",
        head.map(|h| h.to_string())
            .unwrap_or_else(|| "unknown (no migrations directory)".into())
    );
    let _ = write!(
        b,
        "<div class=\"cards\"><div class=\"card\" id=\"total\"><b>{}</b>tenants</div>\
         <div class=\"card\" id=\"behind-count\"><b>{}</b>behind head</div>\
         <div class=\"card\" id=\"failed-count\"><b class=\"{}\">{}</b>failed</div></div>",
        tenants.len(),
        behind.len(),
        if failed.is_empty() { "ok" } else { "failed" },
        failed.len()
    );
    b.push_str("<h2>Recent runs</h2>");
    if runs.is_empty() {
        b.push_str("<p id=\"runs\" class=\"muted\">No bulk runs yet.</p>");
    } else {
        b.push_str("<table id=\"runs\"><tr><th>finished</th><th>command</th><th>from</th><th>tenants</th><th>ok</th><th>up to date</th><th>failed</th><th>skipped</th><th>took</th><th>run</th></tr>");
        for r in &runs {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td><a href=\"/api/runs/{}\"><code>{}</code></a></td></tr>",
                esc(&r.finished),
                esc(&r.command),
                esc(&r.host),
                r.total,
                r.ok,
                r.up_to_date,
                if r.failed > 0 { "failed" } else { "ok" },
                r.failed,
                r.skipped,
                esc(&r.took),
                seg(&r.run_id),
                esc(&r.run_id)
            );
        }
        b.push_str("</table>");
    }
    b.push_str("<h2>Tenants per revision</h2><table id=\"by-revision\"><tr><th>revision</th><th>tenants</th></tr>");
    for (rev, n) in &by_revision {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{n}</td></tr>",
            esc(&crate::show::revision(*rev))
        );
    }
    b.push_str("</table><h2>Tenants per server</h2><table id=\"by-server\"><tr><th>server</th><th>tenants</th><th>behind</th><th>failed</th></tr>");
    for (server, (n, behind, failed)) in &by_server {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{n}</td><td>{behind}</td><td>{failed}</td></tr>",
            esc(server)
        );
    }
    b.push_str("</table>");
    if let Some(shared) = &shared {
        b.push_str("<h2>Shared schema</h2><table id=\"shared\"><tr><th>server</th><th>schema</th><th>revision</th><th>pending</th><th>problem</th></tr>");
        for s in shared {
            let problem = match &s.error {
                Some(e) => format!("unreadable: {e}"),
                None => s.drift.join("; "),
            };
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                esc(&s.server),
                esc(&s.schema),
                esc(&crate::show::revision(s.current_revision)),
                esc(&s
                    .pending_migrations
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")),
                if problem.is_empty() { "ok" } else { "failed" },
                esc(&problem)
            );
        }
        b.push_str("</table>");
    }
    b.push_str("<h2>Failed tenants</h2>");
    if failed.is_empty() {
        b.push_str("<p id=\"failed\" class=\"ok\">None.</p>");
    } else {
        b.push_str("<table id=\"failed\"><tr><th>tenant</th><th>schema</th><th>revision</th><th>error</th></tr>");
        for t in &failed {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"failed\">{}</td></tr>",
                tenant_link(t),
                esc(&t.schema_name),
                esc(&crate::show::revision(t.current_revision)),
                esc(t.last_error.as_deref().unwrap_or(""))
            );
        }
        b.push_str("</table>");
    }
    b.push_str("<h2>Tenants behind head</h2>");
    if behind.is_empty() {
        b.push_str("<p id=\"behind\" class=\"ok\">None.</p>");
    } else {
        b.push_str("<table id=\"behind\"><tr><th>tenant</th><th>server</th><th>revision</th><th>status</th></tr>");
        for t in behind.iter().take(500) {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                tenant_link(t),
                esc(&t.server),
                esc(&crate::show::revision(t.current_revision)),
                esc(t.status.as_str())
            );
        }
        b.push_str("</table>");
        if behind.len() > 500 {
            let _ = write!(b, "<p class=\"muted\">and {} more</p>", behind.len() - 500);
        }
    }
    b.push_str("<h2>All tenants</h2><table id=\"tenants\"><tr><th>tenant</th><th>server</th><th>revision</th><th>status</th></tr>");
    for t in tenants.iter().take(1000) {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            tenant_link(t),
            esc(&t.server),
            esc(&crate::show::revision(t.current_revision)),
            if t.status == Status::Failed {
                "failed"
            } else {
                ""
            },
            esc(t.status.as_str())
        );
    }
    b.push_str("</table>");
    if tenants.len() > 1000 {
        let _ = write!(
            b,
            "<p class=\"muted\">and {} more</p>",
            tenants.len() - 1000
        );
    }
    Ok(page_html("tenantctl dashboard", &b))
}

fn is_behind(t: &Tenant, head: Option<i32>) -> bool {
    match head {
        Some(h) => t.schema_provisioned && t.current_revision.unwrap_or(0) < h,
        None => false,
    }
}

/// `GET /tenants/{tenant}`: one tenant's status and its ledger entries.
pub async fn tenant(
    State(state): State<Shared>,
    Path(reference): Path<String>,
) -> Result<Response, ApiError> {
    let lease = state.pool.get().await?;
    let registry = Registry::open(lease.client(), &state.ctx.settings.registry_schema).await?;
    let t = registry.find(&reference).await?;
    let events = registry
        .events(&EventFilter {
            tenant_id: Some(t.id),
            run_id: None,
            failed_only: false,
            limit: 100,
        })
        .await?;
    drop(registry);
    lease.done();
    let mut b = String::new();
    let _ = write!(
        b,
        "<p><a href=\"/\">&larr; dashboard</a></p><h1>{}</h1><table id=\"tenant\">",
        esc(&t.domain)
    );
    for (k, v) in [
        ("name", t.tenant_name.clone()),
        ("type", t.tenant_type.clone()),
        ("schema", t.schema_name.clone()),
        ("server", t.server.clone()),
        (
            "provisioned",
            crate::show::yes_no(t.schema_provisioned).into(),
        ),
        ("revision", crate::show::revision(t.current_revision)),
        ("status", t.status.as_str().into()),
        ("last error", t.last_error.clone().unwrap_or_default()),
    ] {
        let _ = write!(b, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    let _ = write!(
        b,
        "</table><p><a href=\"/api/tenants/{}/migration-status\">migration status (JSON)</a></p><h2>Ledger</h2>",
        seg(&t.id.to_string())
    );
    if events.is_empty() {
        b.push_str("<p id=\"events\" class=\"muted\">No entries.</p>");
    } else {
        b.push_str("<table id=\"events\"><tr><th>finished</th><th>action</th><th>from</th><th>to</th><th>status</th><th>error</th></tr>");
        for e in &events {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                esc(&crate::show::stored_time(e.finished_at.as_ref())),
                esc(&e.action),
                esc(&crate::show::revision(e.from_revision)),
                esc(&crate::show::revision(e.to_revision)),
                match e.status.as_str() {
                    "failed" => "failed",
                    // Refused before anything changed: not a failure of the tenant.
                    "refused" => "muted",
                    _ => "ok",
                },
                esc(&e.status),
                esc(e.error.as_deref().unwrap_or(""))
            );
        }
        b.push_str("</table>");
    }
    Ok(page_html(&format!("tenant {}", t.domain), &b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_and_paths_are_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(seg("a b/<c>"), "a%20b%2F%3Cc%3E");
    }
}
