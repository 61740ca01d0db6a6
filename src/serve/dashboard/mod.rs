//! The dashboard: server-rendered HTML that works without JavaScript, from templates
//! that escape every value (`maud`). It renders what [`crate::app::overview`] reads:
//! - `GET /`: the fleet at a glance (counts, each server's health with the tenantctl
//!   sessions waiting for a lock, runs going with live counts, recent runs, pictures of
//!   tenants per revision, runs and failures per day and backup age per type, failed
//!   tenants);
//! - `GET /tenants`: tenants searched (domain, schema, name, server, type, status,
//!   revision, behind head) and paged;
//! - `GET /tenants/{tenant}`: one tenant: its row, applied history, pending migrations,
//!   backups, moves and ledger;
//! - `GET /runs` and `GET /runs/{run_id}`: the bulk runs paged, and one run with its
//!   tenants paged and their errors.
//!
//! A page with a run going refreshes itself (`<meta http-equiv="refresh">`). Every page
//! says when it was generated and how long that took.

pub mod charts;

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use time::OffsetDateTime;

use super::{ApiError, Shared};
use crate::app::overview::{self, LiveRun, Overview, TenantQuery};
use crate::error::Error;
use crate::registry::browse::{RunRow, Search};
use crate::registry::{EventRow, Tenant};

/// Seconds between refreshes of a page showing a run that is going.
const REFRESH: u32 = 5;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em 2em;color:#222}\
nav{margin-bottom:1em}nav a{margin-right:1em}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}\
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.failed{color:#a40000}.ok{color:#1a6b1a}.muted{color:#777}\
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ccc;border-radius:6px;padding:.6em 1em;min-width:8em}\
.card b{display:block;font-size:1.6em}.pictures{display:flex;gap:2em;flex-wrap:wrap}\
form.search{display:flex;gap:.5em;flex-wrap:wrap;align-items:end}form.search label{display:flex;flex-direction:column;font-size:.85em}\
footer{margin-top:2em;color:#777;font-size:.9em}.error{max-width:60em;white-space:pre-wrap}";

/// A page as the dashboard answers it, with the headers every page has; `started` is
/// when the request began (for "generated in").
fn page(title: &str, refresh: Option<u32>, started: Instant, body: Markup) -> Response {
    let took = started.elapsed().as_millis();
    let now = crate::show::timestamp(OffsetDateTime::now_utc());
    let html = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(s) = refresh { meta http-equiv="refresh" content=(s); }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav { a href="/" { "Overview" } a href="/tenants" { "Tenants" } a href="/runs" { "Runs" } }
                (body)
                footer { "Generated at " time id="generated" datetime=(now) { (now) } " in " (took) " ms." }
            }
        }
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        html.into_string(),
    )
        .into_response()
}

/// An error as a dashboard page: the status the API would answer, with the message.
pub struct PageError(ApiError);

impl From<Error> for PageError {
    fn from(e: Error) -> PageError {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status;
        let mut r = page(
            &format!("tenantctl: {}", status.as_u16()),
            None,
            Instant::now(),
            html! {
                h1 { (status.canonical_reason().unwrap_or("Error")) }
                p.error id="error" { (self.0.detail) }
            },
        );
        *r.status_mut() = status;
        r
    }
}

/// What a path segment or query value keeps as it is: RFC 3986's unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A path segment or query value, percent-encoded.
fn enc(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

fn tenant_href(id: i64) -> String {
    format!("/tenants/{id}")
}

fn run_href(run_id: &str) -> String {
    format!("/runs/{}", enc(run_id))
}

fn tenant_link(t: &Tenant) -> Markup {
    html! { a href=(tenant_href(t.id)) { (t.domain) } }
}

fn status_class(status: &str) -> &'static str {
    match status {
        "failed" | "interrupted" => "failed",
        "refused" | "unknown" => "muted",
        _ => "ok",
    }
}

fn seconds(s: Option<f64>) -> String {
    s.filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| format!("{s:.1} s"))
        .unwrap_or_default()
}

fn millis(ms: Option<i64>) -> String {
    ms.map(|m| format!("{m} ms")).unwrap_or_default()
}

/// The longest search text taken.
const MAX_SEARCH: usize = 200;

fn refused(detail: String) -> PageError {
    PageError(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, detail))
}

/// Refuses a query whose values hold a NUL (PostgreSQL's text cannot) or whose search
/// text is longer than [`MAX_SEARCH`] characters.
fn check_query(q: &HashMap<String, String>) -> Result<(), PageError> {
    if let Some((k, _)) = q.iter().find(|(_, v)| v.contains('\0')) {
        return Err(refused(format!(
            "{} holds a NUL character",
            crate::ident::shown(k)
        )));
    }
    if q.get("q").is_some_and(|v| v.chars().count() > MAX_SEARCH) {
        return Err(refused(format!(
            "the search text is longer than {MAX_SEARCH} characters"
        )));
    }
    Ok(())
}

/// A yes/no query parameter: absent, empty, `0`, `false`, `no` and `off` are no.
fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no" | "off"
        )
    })
}

/// A page number from the query (`1` when absent); anything else is refused.
fn page_number(q: &HashMap<String, String>) -> Result<i64, PageError> {
    match q.get("page").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(1),
        Some(p) => p
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| {
                PageError(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!(
                        "page must be a whole number from 1 to 1000000, not {}",
                        crate::ident::shown(p)
                    ),
                ))
            }),
    }
}

/// Links to the previous and next pages of `path`, keeping the other query parameters.
fn pager(path: &str, keep: &[(&str, String)], page: i64, pages: i64, what: String) -> Markup {
    let href = |p: i64| {
        let mut q: Vec<String> = keep
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect();
        q.push(format!("page={p}"));
        format!("{path}?{}", q.join("&"))
    };
    html! {
        p id="pager" {
            "Page " (page) " of " (pages) " (" (what) "). "
            @if page > 1 { a rel="prev" href=(href(page - 1)) { "← previous" } " " }
            @if page < pages { a rel="next" href=(href(page + 1)) { "next →" } }
        }
    }
}

fn runs_table(runs: &[RunRow]) -> Markup {
    html! {
        table id="runs" {
            tr { th { "finished" } th { "command" } th { "who" } th { "from" } th { "tenants" } th { "ok" }
                 th { "up to date" } th { "failed" } th { "skipped" } th { "took" } th { "run" } }
            @for r in runs {
                tr {
                    td { (crate::show::stored_time(r.finished_at.as_ref())) }
                    td { (r.command) }
                    td { (r.db_user.as_deref().unwrap_or("")) }
                    td { (r.client_host.as_deref().unwrap_or("")) }
                    td { (r.total) }
                    td { (r.ok) }
                    td { (r.up_to_date) }
                    td class=(if r.failed > 0 { "failed" } else { "ok" }) { (r.failed) }
                    td { (r.skipped) }
                    td { (seconds(r.seconds)) }
                    td { a href=(run_href(&r.run_id)) { code { (r.run_id) } } }
                }
            }
        }
    }
}

fn live_table(live: &[LiveRun], totals: &HashMap<String, usize>) -> Markup {
    html! {
        table id="live" {
            tr { th { "run" } th { "action" } th { "started" } th { "ok" } th { "failed" } th { "refused" } th { "of" } th { "sessions" } }
            @for l in live {
                @let p = l.progress.as_ref();
                tr {
                    td { a href=(run_href(&l.run_id)) { code { (l.run_id) } } }
                    td { (l.action) }
                    td { (p.map(|p| crate::show::stored_time(p.started_at.as_ref())).unwrap_or_default()) }
                    td { (p.map_or(0, |p| p.ok)) }
                    td class=(if p.is_some_and(|p| p.failed > 0) { "failed" } else { "ok" }) { (p.map_or(0, |p| p.failed)) }
                    td { (p.map_or(0, |p| p.refused)) }
                    td { (totals.get(&l.run_id).map(|n| n.to_string()).unwrap_or_default()) }
                    td { (l.sessions) }
                }
            }
        }
    }
}

fn health(o: &Overview) -> Markup {
    let waits: Vec<_> = o
        .health
        .iter()
        .flat_map(|h| h.waits.iter().map(move |w| (&h.server, w)))
        .collect();
    html! {
        h2 { "Health" }
        table id="health" {
            tr { th { "server" } th { "reachable" } th { "answered in" } th { "shared schema" } th { "lock waits" } }
            tr { td { "registry" } td.ok { "yes" } td {} td {} td {} }
            @for h in &o.health {
                tr {
                    td { (h.server) }
                    @match &h.error {
                        None => td.ok { "yes" },
                        Some(e) => td.failed { "no: " (e) },
                    }
                    td { (h.millis) " ms" }
                    td {
                        @match &h.shared {
                            None => "",
                            Some(s) if s.error.is_some() => span.failed { "unreadable" },
                            Some(s) => (crate::show::revision(s.current_revision)),
                        }
                    }
                    @if h.error.is_some() {
                        td.muted { "unknown" }
                    } @else {
                        td class=(if h.waits.is_empty() { "ok" } else { "failed" }) { (h.waits.len()) }
                    }
                }
            }
        }
        @let shared: Vec<&crate::app::shared::SharedStatus> = o.health.iter().filter_map(|h| h.shared.as_ref()).collect();
        @if !shared.is_empty() {
            h2 { "Shared schema" }
            table id="shared" {
                tr { th { "server" } th { "schema" } th { "revision" } th { "pending" } th { "problem" } }
                @for s in &shared {
                    @let problem = match &s.error {
                        Some(e) => format!("unreadable: {e}"),
                        None => s.drift.join("; "),
                    };
                    tr {
                        td { (s.server) } td { (s.schema) } td { (crate::show::revision(s.current_revision)) }
                        td { (s.pending_migrations.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")) }
                        td class=(if problem.is_empty() { "ok" } else { "failed" }) { (problem) }
                    }
                }
            }
        }
        @if !waits.is_empty() {
            h2 { "Sessions waiting for a lock" }
            p.muted { "tenantctl's sessions waiting for a lock, and any session waiting on one of tenantctl's." }
            table id="lock-waits" {
                tr { th { "server" } th { "pid" } th { "session" } th { "user" } th { "waiting for" } th { "for" } th { "blocked by" } }
                @for (server, w) in &waits {
                    tr {
                        td { (server) } td { (w.pid) } td { (w.application) } td { (w.user) } td { (w.waiting_for) }
                        td { (charts::age(w.seconds)) }
                        td {
                            @for b in &w.blockers {
                                div {
                                    "pid " (b.pid) " " (b.application.as_deref().unwrap_or(""))
                                    @if let Some(u) = &b.user { " (" (u) ")" }
                                    @if let Some(a) = &b.addr { " from " (a) }
                                    @if let Some(s) = &b.state { ", " (s) }
                                    @if let Some(s) = b.seconds { ", in transaction for " (charts::age(s)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /`: the fleet at a glance.
pub async fn overview_page(State(state): State<Shared>) -> Result<Response, PageError> {
    let started = Instant::now();
    let running = state.runs.running();
    let ids: Vec<String> = running.iter().map(|r| r.run_id.clone()).collect();
    let totals: HashMap<String, usize> = running
        .iter()
        .map(|r| (r.run_id.clone(), r.summary.total))
        .collect();
    let lease = state.pool.get().await?;
    let o = overview::overview(&state.ctx, lease.client(), &ids).await?;
    lease.done();
    let by_revision = o.by_revision();
    let by_server = o.by_server();
    let now = o.generated_at.unix_timestamp() as f64;
    let (failed_total, failed) = &o.failed;
    let body = html! {
        h1 { "tenantctl" }
        p.muted {
            "Head revision: " span id="head" {
                @match o.head { Some(h) => (h), None => "unknown (no migrations directory)" }
            }
            ". From the registry's cached columns, the run ledger and each server."
        }
        div.cards {
            div.card id="total" { b { (o.total()) } "tenants" }
            div.card id="behind-count" { b { a href="/tenants?behind=1" { (o.behind()) } } "behind head" }
            div.card id="failed-count" {
                b class=(if *failed_total == 0 { "ok" } else { "failed" }) { a href="/tenants?status=failed" { (failed_total) } }
                "failed"
            }
            div.card id="unprovisioned-count" { b { (o.unprovisioned()) } "unprovisioned" }
            div.card id="live-count" { b { (o.live.len()) } "runs going" }
        }
        (health(&o))
        h2 { "Runs in progress" }
        @if o.live.is_empty() {
            p id="live" class="muted" { "None." }
        } @else {
            (live_table(&o.live, &totals))
        }
        h2 { "Recent runs" }
        @if o.recent.is_empty() {
            p id="runs" class="muted" { "No bulk runs yet." }
        } @else {
            (runs_table(&o.recent))
            p { a href="/runs" { "All runs →" } }
        }
        h2 { "Tenants per revision" }
        div.pictures {
            (charts::revisions(&by_revision, &o.servers))
            table id="by-revision" {
                tr { th { "revision" } th { "tenants" } }
                @for (rev, per_server) in &by_revision {
                    tr {
                        td { a href={"/tenants?revision=" (crate::show::revision(*rev))} { (crate::show::revision(*rev)) } }
                        td { (per_server.values().sum::<u64>()) }
                    }
                }
            }
        }
        h2 { "Tenants per server" }
        table id="by-server" {
            tr { th { "server" } th { "tenants" } th { "behind" } th { "failed" } }
            @for (server, (n, behind, failed)) in &by_server {
                tr {
                    td { a href={"/tenants?server=" (enc(server))} { (server) } }
                    td { (n) } td { (behind) } td { (failed) }
                }
            }
        }
        h2 { "Runs over the last " (overview::DAYS) " days" }
        div.pictures { (charts::runs(&o.days, o.generated_at, overview::DAYS)) }
        h2 { "Backups" }
        div.pictures {
            (charts::backups(&o.backups, now))
            table id="backups" {
                tr { th { "type" } th { "tenants" } th { "never backed up" } th { "oldest last backup" } th { "overdue" } th { "policy" } }
                @for (kind, b, every) in &o.backups {
                    tr {
                        td { (kind) } td { (b.tenants) }
                        td class=(if b.never > 0 { "failed" } else { "ok" }) { (b.never) }
                        td { (b.oldest.map(|t| format!("{} ago", charts::age(now - t))).unwrap_or_default()) }
                        td class=(if b.overdue > 0 { "failed" } else { "ok" }) { (b.overdue) }
                        td { (every.map(|e| format!("every {}", charts::age(e))).unwrap_or_else(|| "none".into())) }
                    }
                }
            }
        }
        h2 { "Failed tenants" }
        @if failed.is_empty() {
            p id="failed" class="ok" { "None." }
        } @else {
            table id="failed" {
                tr { th { "tenant" } th { "schema" } th { "server" } th { "revision" } th { "error" } }
                @for t in failed {
                    tr {
                        td { (tenant_link(t)) } td { (t.schema_name) } td { (t.server) }
                        td { (crate::show::revision(t.current_revision)) }
                        td.failed { (t.last_error.as_deref().unwrap_or("")) }
                    }
                }
            }
            @if *failed_total > failed.len() as u64 {
                p { a href="/tenants?status=failed" { "All " (failed_total) " failed tenants →" } }
            }
        }
    };
    let refresh = (!o.live.is_empty()).then_some(REFRESH);
    Ok(page("tenantctl dashboard", refresh, started, body))
}

/// The search of `GET /tenants`, from its query; a revision that is no number or
/// `base` is refused.
fn search_of(q: &HashMap<String, String>, head: Option<i32>) -> Result<Search, PageError> {
    let get = |k: &str| {
        q.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let revision = match get("revision") {
        None => None,
        Some(r) if r == "base" => Some(None),
        Some(r) => Some(Some(r.parse::<i32>().map_err(|_| {
            PageError(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "revision must be a number or base, not {}",
                    crate::ident::shown(&r)
                ),
            ))
        })?)),
    };
    Ok(Search {
        text: get("q"),
        server: get("server"),
        tenant_type: get("type"),
        status: get("status"),
        revision,
        behind: if flag(q, "behind") { head } else { None },
    })
}

/// `GET /tenants`: tenants searched and paged.
pub async fn tenants_page(
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PageError> {
    let started = Instant::now();
    check_query(&q)?;
    let head = state.ctx.migrations().ok().map(|s| s.head());
    let query = TenantQuery {
        search: search_of(&q, head)?,
        page: page_number(&q)?,
    };
    let lease = state.pool.get().await?;
    let p = overview::tenants(&state.ctx, lease.client(), &query).await?;
    lease.done();
    let s = &query.search;
    let keep = [
        ("q", s.text.clone().unwrap_or_default()),
        ("server", s.server.clone().unwrap_or_default()),
        ("type", s.tenant_type.clone().unwrap_or_default()),
        ("status", s.status.clone().unwrap_or_default()),
        (
            "revision",
            s.revision.map(crate::show::revision).unwrap_or_default(),
        ),
        (
            "behind",
            if s.behind.is_some() {
                "1".into()
            } else {
                String::new()
            },
        ),
    ];
    let chosen = |k: &str| {
        keep.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let body = html! {
        h1 { "Tenants" }
        form.search method="get" action="/tenants" {
            label { "domain, schema or name" input type="search" name="q" value=(chosen("q")); }
            label { "server" select name="server" {
                option value="" { "any" }
                @for v in &p.servers { option value=(v) selected[chosen("server") == v] { (v) } }
            } }
            label { "type" select name="type" {
                option value="" { "any" }
                @for v in &p.types { option value=(v) selected[chosen("type") == v] { (v) } }
            } }
            label { "status" select name="status" {
                option value="" { "any" }
                @for v in ["active", "pending", "failed", "unknown"] { option value=(v) selected[chosen("status") == v] { (v) } }
            } }
            label { "revision" input type="text" name="revision" size="6" value=(chosen("revision")); }
            label { "behind head" input type="checkbox" name="behind" value="1" checked[!chosen("behind").is_empty()]; }
            button type="submit" { "Search" }
        }
        @if s.behind.is_none() && chosen("behind") == "1" {
            p.muted { "The head is unknown (no migrations directory): every tenant is shown." }
        }
        @if p.tenants.is_empty() {
            p id="tenants" class="muted" { "No tenant matches." }
        } @else {
            table id="tenants" {
                tr { th { "tenant" } th { "schema" } th { "type" } th { "server" } th { "revision" } th { "status" } th { "error" } }
                @for t in &p.tenants {
                    tr {
                        td { (tenant_link(t)) } td { (t.schema_name) } td { (t.tenant_type) } td { (t.server) }
                        td { (crate::show::revision(t.current_revision)) }
                        td class=(status_class(t.status.as_str())) { (t.status.as_str()) }
                        td.failed { (t.last_error.as_deref().map(|e| e.chars().take(160).collect::<String>()).unwrap_or_default()) }
                    }
                }
            }
        }
        (pager("/tenants", &keep, p.page, p.pages, crate::show::count(usize::try_from(p.matched).unwrap_or(usize::MAX), "tenant")))
    };
    Ok(page("tenants", None, started, body))
}

/// `GET /runs`: the bulk runs paged.
pub async fn runs_page(
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PageError> {
    let started = Instant::now();
    check_query(&q)?;
    let n = page_number(&q)?;
    let lease = state.pool.get().await?;
    let p = overview::runs(&state.ctx, lease.client(), n).await?;
    lease.done();
    let body = html! {
        h1 { "Runs" }
        @if p.runs.is_empty() {
            p id="runs" class="muted" { "No bulk runs yet." }
        } @else {
            (runs_table(&p.runs))
        }
        (pager("/runs", &[], p.page, p.pages, crate::show::count(usize::try_from(p.total).unwrap_or(usize::MAX), "run")))
    };
    Ok(page("runs", None, started, body))
}

fn entries_table(entries: &[EventRow]) -> Markup {
    html! {
        table id="entries" {
            tr { th { "tenant" } th { "action" } th { "from" } th { "to" } th { "status" } th { "error" } th { "took" } }
            @for e in entries {
                tr {
                    td { a href=(tenant_href(e.tenant_id)) { (e.domain) } }
                    td { (e.action) }
                    td { (crate::show::revision(e.from_revision)) }
                    td { (crate::show::revision(e.to_revision)) }
                    td class=(status_class(&e.status)) { (e.status) }
                    td.failed { (e.error.as_deref().unwrap_or("")) }
                    td { (millis(e.duration_ms)) }
                }
            }
        }
    }
}

/// `GET /runs/{run_id}`: one run with its tenants paged (`?failed=1`: only those that
/// did not succeed); it refreshes itself while the run is going.
pub async fn run_page(
    State(state): State<Shared>,
    Path(run_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PageError> {
    let started = Instant::now();
    check_query(&q)?;
    let n = page_number(&q)?;
    let failed_only = flag(&q, "failed");
    let view = state.runs.get(run_id.trim());
    let known = view.as_ref().is_some_and(|v| v.state == "running");
    let lease = state.pool.get().await?;
    let r = overview::run(&state.ctx, lease.client(), &run_id, failed_only, n, known).await?;
    lease.done();
    // Going: sessions of it are open, or the service runs it. A run with neither and no
    // row was stopped before it could record its end.
    let going = r.row.is_none() && (r.sessions > 0 || known);
    let body = html! {
        h1 { "Run " code { (r.run_id) } }
        @if let Some(row) = &r.row {
            table id="run" {
                tr { th { "command" } td { (row.command) } }
                tr { th { "result" } td class=(status_class(&row.result)) { (row.result) } }
                tr { th { "started" } td { (crate::show::stored_time(row.started_at.as_ref())) } }
                tr { th { "finished" } td { (crate::show::stored_time(row.finished_at.as_ref())) } }
                tr { th { "took" } td { (seconds(row.seconds)) } }
                tr { th { "who" } td { (row.db_user.as_deref().unwrap_or("")) } }
                tr { th { "from" } td { (row.client_host.as_deref().unwrap_or("")) } }
                tr { th { "tenants" } td { (row.total) } }
                tr { th { "ok" } td { (row.ok) } }
                tr { th { "up to date" } td { (row.up_to_date) } }
                tr { th { "failed" } td class=(if row.failed > 0 { "failed" } else { "ok" }) { (row.failed) } }
                tr { th { "skipped" } td { (row.skipped) } }
            }
        } @else {
            p id="state" {
                @if going {
                    "Going"
                    @if r.sessions > 0 { ", with " (r.sessions) " open sessions on the servers" }
                    ". This page refreshes every " (REFRESH) " s."
                } @else {
                    "Stopped before it recorded its end (killed, or its machine or the registry went away): the entries below are what it did."
                }
            }
            table id="run" {
                tr { th { "action" } th { "started" } th { "ok" } th { "failed" } th { "refused" } th { "of" } }
                @for p in &r.progress {
                    tr {
                        td { (p.action) } td { (crate::show::stored_time(p.started_at.as_ref())) }
                        td { (p.ok) } td { (p.failed) } td { (p.refused) }
                        td { (view.as_ref().map(|v| v.summary.total.to_string()).unwrap_or_default()) }
                    }
                }
            }
        }
        @if let Some(e) = view.as_ref().and_then(|v| v.error.as_ref()) {
            p.failed id="run-error" { (e) }
        }
        h2 { "Tenants" }
        p {
            @if failed_only {
                a href=(run_href(&r.run_id)) { "all" } " · failed only"
            } @else {
                "all · " a href={(run_href(&r.run_id)) "?failed=1"} { "failed only" }
            }
        }
        @if r.entries.is_empty() {
            p id="entries" class="muted" { "No entry." }
        } @else {
            (entries_table(&r.entries))
        }
        (pager(&run_href(&r.run_id), &[("failed", if failed_only { "1".into() } else { String::new() })],
            r.page, r.pages, if r.matched == 1 { "1 entry".to_string() } else { format!("{} entries", r.matched) }))
        p { a href={"/api/runs/" (enc(&r.run_id))} { "as JSON" } }
    };
    let refresh = going.then_some(REFRESH);
    Ok(page(&format!("run {}", r.run_id), refresh, started, body))
}

fn events_table(id: &str, events: &[EventRow]) -> Markup {
    html! {
        table id=(id) {
            tr { th { "finished" } th { "action" } th { "from" } th { "to" } th { "status" } th { "error" } th { "run" } }
            @for e in events {
                tr {
                    td { (crate::show::stored_time(e.finished_at.as_ref())) }
                    td { (e.action) }
                    td { (crate::show::revision(e.from_revision)) }
                    td { (crate::show::revision(e.to_revision)) }
                    td class=(status_class(&e.status)) { (e.status) }
                    td { (e.error.as_deref().unwrap_or("")) }
                    td { a href=(run_href(&e.run_id)) { "run" } }
                }
            }
        }
    }
}

/// `GET /tenants/{tenant}`: one tenant.
pub async fn tenant_page(
    State(state): State<Shared>,
    Path(reference): Path<String>,
) -> Result<Response, PageError> {
    let started = Instant::now();
    let lease = state.pool.get().await?;
    let d = overview::tenant(&state.ctx, lease.client(), &reference).await?;
    lease.done();
    let t = &d.tenant;
    let pending = d.pending();
    let body = html! {
        h1 { (t.domain) }
        table id="tenant" {
            @for (k, v) in [
                ("name", t.tenant_name.clone()),
                ("type", t.tenant_type.clone()),
                ("schema", t.schema_name.clone()),
                ("server", t.server.clone()),
                ("provisioned", crate::show::yes_no(t.schema_provisioned).into()),
                ("revision", crate::show::revision(t.current_revision)),
                ("status", t.status.as_str().into()),
                ("last error", t.last_error.clone().unwrap_or_default()),
            ] {
                tr { th { (k) } td { (v) } }
            }
        }
        p { a href={"/api/tenants/" (t.id) "/migration-status"} { "migration status (JSON)" } }
        h2 { "History" }
        @match &d.history {
            Err(e) => p.failed id="history" { "Its history could not be read: " (e) "." },
            Ok(h) if h.iter().all(|e| e.applied != Some(true)) => p id="history" class="muted" { "Nothing applied." },
            Ok(h) => table id="history" {
                tr { th { "version" } th { "name" } th { "state" } th { "applied" } }
                @for e in h.iter().filter(|e| e.applied == Some(true)) {
                    tr {
                        td { (e.version) } td { (e.name) }
                        td class=(if e.state == "applied" { "ok" } else { "failed" }) { (e.state) }
                        td { (e.applied_on.as_deref().unwrap_or("")) }
                    }
                }
            },
        }
        h2 { "Pending migrations" }
        @if d.history.is_err() {
            p id="pending" class="muted" { "Unknown: its history could not be read." }
        } @else if pending.is_empty() {
            p id="pending" class="muted" { "None." }
        } @else {
            table id="pending" {
                tr { th { "version" } th { "name" } th { "file" } }
                @for e in &pending {
                    @let file = e.file.as_deref().map(|f| {
                        std::path::Path::new(f).file_name().map_or(f.into(), |n| n.to_string_lossy())
                    });
                    tr { td { (e.version) } td { (e.name) } td { code { (file.unwrap_or_default()) } } }
                }
            }
        }
        h2 { "Backups" }
        @if d.backups.is_empty() {
            p id="backups" class="muted" { "None in the ledger." }
        } @else {
            (events_table("backups", &d.backups))
        }
        h2 { "Moves" }
        @if let Some(j) = &d.journal {
            p.failed id="move-journal" { (j) }
        }
        @if d.moves.is_empty() {
            p id="moves" class="muted" { "None." }
        } @else {
            (events_table("moves", &d.moves))
        }
        h2 { "Ledger" }
        @if d.events.is_empty() {
            p id="events" class="muted" { "No entries." }
        } @else {
            (events_table("events", &d.events))
        }
    };
    Ok(page(&format!("tenant {}", t.domain), None, started, body))
}
