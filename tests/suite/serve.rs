//! `tenantctl serve` over real HTTP: every endpoint's answer, every refusal leaving the
//! database as it was, concurrent requests, the dashboard's cookie, secrets kept out of
//! the output, asynchronous fleet runs, a graceful stop in the middle of a run, and the
//! metrics in Prometheus's text format.
//!
//! Each test starts the binary on a free port (`--listen 127.0.0.1:0`, read back from
//! its first stderr line) against a database of its own; the child is killed when the
//! test ends, whether it passes or panics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{checks, common_json, support};
use checks::{assert_truth, create, history_versions, registry_row, schema_exists, user_schemas};
use common_json::{
    Changed, Created, Detail, Events, FleetStatus, Health, Listing, RunReport, RunStarted, RunView,
    TenantStatus,
};
use support::{
    dir_with, example_migrations, ready, wait_at, Gate, Spawned, Tenantctl, TestDb, DEADLINE,
};

/// The bearer token every test's service runs with.
pub(crate) const TOKEN: &str = "serve-test-token-5d1c9e7a40b2";

/// The head revision of a migrations directory: its highest `V<n>__` up script.
fn head_of(dir: &Path) -> i32 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".down.sql") || !name.ends_with(".sql") {
                return None;
            }
            name.strip_prefix('V')?.split("__").next()?.parse().ok()
        })
        .max()
        .expect("a migrations directory with up scripts")
}

/// `1..=n`.
fn upto(n: i32) -> Vec<i32> {
    (1..=n).collect()
}

/// One HTTP answer.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Resp {
    /// Asserts the status, showing the body when it differs.
    pub(crate) fn expect(&self, status: u16) -> &Resp {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.body
        );
        self
    }

    /// The body as exactly the given document.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is not the expected JSON ({e}): {} {}",
                self.status, self.body
            )
        })
    }

    /// A header's value (the first one).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running `tenantctl serve`, killed when dropped (its [`Spawned`] does that).
pub(crate) struct Server {
    child: Spawned,
    base: String,
    agent: ureq::Agent,
}

/// Starts `tenantctl serve --listen 127.0.0.1:0` with [`TOKEN`] and waits until it says
/// where it listens.
pub(crate) fn start(t: &Tenantctl) -> Server {
    let mut child =
        t.clone()
            .env("TENANTCTL_API_TOKEN", TOKEN)
            .spawn(&["serve", "--listen", "127.0.0.1:0"]);
    child.wait_for_stderr("listening on http://");
    let stderr = child.stderr();
    let first = stderr.lines().next().unwrap_or_default();
    let addr = first
        .split_once("listening on http://")
        .unwrap_or_else(|| panic!("the first stderr line does not say where: {stderr}"))
        .1
        .trim()
        .to_string();
    let port: u16 = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {first:?}"));
    assert_ne!(port, 0, "the service must say which port it bound");
    // A new connection per request: a response the service sends before reading a body
    // it refuses may close the connection, and a pooled one could then be reused in the
    // instant before the client sees it closed ("peer disconnected").
    let agent = ureq::Agent::config_builder()
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(DEADLINE))
        .build()
        .into();
    Server {
        child,
        base: format!("http://{addr}"),
        agent,
    }
}

impl Server {
    /// A request with these headers (and a body, for a POST).
    fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let result = match body {
            Some(bytes) => self.agent.run(b.body(bytes.to_vec()).unwrap()),
            None => self.agent.run(b.body(()).unwrap()),
        };
        let mut r = result.unwrap_or_else(|e| {
            panic!(
                "{method} {path}: no answer ({e})\nstderr:\n{}",
                self.child.stderr()
            )
        });
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        Resp {
            status: r.status().as_u16(),
            headers,
            body: r.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    /// `GET path` with the token.
    pub(crate) fn get(&self, path: &str) -> Resp {
        let auth = format!("Bearer {TOKEN}");
        self.call("GET", path, &[("Authorization", &auth)], None)
    }

    /// `GET path` without credentials.
    pub(crate) fn get_anon(&self, path: &str) -> Resp {
        self.call("GET", path, &[], None)
    }

    /// `POST path` with the token and a JSON body.
    pub(crate) fn post(&self, path: &str, body: &Value) -> Resp {
        let auth = format!("Bearer {TOKEN}");
        self.call(
            "POST",
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some(body.to_string().as_bytes()),
        )
    }

    /// Polls `GET /api/runs/{run_id}` until the run is finished.
    fn finished_run(&self, run_id: &str) -> RunView {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let v: RunView = self.get(&format!("/api/runs/{run_id}")).expect(200).json();
            assert_eq!(v.run_id, run_id);
            assert!(
                v.state == "running" || v.state == "finished",
                "state {:?}",
                v.state
            );
            if v.state == "finished" {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} never finished: {v:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Everything a request could change: the registry's rows, the schemas, each tenant's
/// migration history and the run ledger.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    rows: Vec<String>,
    schemas: Vec<String>,
    histories: BTreeMap<String, Vec<i32>>,
    ledger: i64,
}

pub(crate) fn snapshot(db: &TestDb) -> Snapshot {
    let mut c = db.client();
    let rows = c
        .query("SELECT t::text FROM public.tenants t ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ledger = c
        .query_one("SELECT count(*) FROM public.tenant_events", &[])
        .unwrap()
        .get(0);
    let schemas = user_schemas(db);
    let histories = schemas
        .iter()
        .filter(|s| s.starts_with("tenant_"))
        .map(|s| (s.clone(), history_versions(db, s)))
        .collect();
    Snapshot {
        rows,
        schemas,
        histories,
        ledger,
    }
}

/// Whether `s` is a UUID in its usual text form.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[test]
fn every_endpoint_answers_with_its_documented_fields() {
    let (db, t) = ready();
    let head = head_of(&example_migrations());
    let s = start(&t);

    let h: Health = s.get_anon("/healthz").expect(200).json();
    assert_eq!(h.status, "ok");

    // A tenant with every field, provisioned and migrated (the defaults).
    let r = s.post(
        "/api/tenants/",
        &json!({"tenant_name": "Alpha Org", "domain": "alpha", "email": "ops@alpha.test",
                "tenant_type": "premium"}),
    );
    r.expect(201);
    let alpha: Created = r.json();
    assert_eq!(alpha.tenant.domain, "alpha");
    assert_eq!(alpha.tenant.tenant_name, "Alpha Org");
    assert_eq!(alpha.tenant.email.as_deref(), Some("ops@alpha.test"));
    assert_eq!(alpha.tenant.tenant_type, "premium");
    assert_eq!(alpha.tenant.schema_name, "tenant_alpha");
    assert_eq!(alpha.tenant.current_revision, Some(head));
    assert!(
        alpha.schema_created && alpha.migrations_applied,
        "{alpha:#?}"
    );
    assert!(!alpha.schema_adopted);
    assert_eq!(alpha.migration_status.current_revision, Some(head));
    assert!(alpha.migration_status.pending_migrations.is_empty());
    assert!(
        alpha.api_key.len() > alpha.tenant.api_key_prefix.len()
            && alpha.api_key.starts_with(&alpha.tenant.api_key_prefix),
        "the key and its prefix: {alpha:#?}"
    );
    let row = assert_truth(&db, "alpha", &alpha.tenant.status);
    assert_eq!(row.status, "active");
    assert_eq!(history_versions(&db, "tenant_alpha"), upto(head));

    // A tenant registered only, with the defaults for the optional fields.
    let beta: Created = s
        .post(
            "/api/tenants/",
            &json!({"tenant_name": "Beta", "domain": "beta", "provision_schema": false,
                    "run_migrations": false}),
        )
        .expect(201)
        .json();
    assert_eq!(beta.tenant.tenant_type, "standard");
    assert_eq!(beta.tenant.email, None);
    assert!(!beta.schema_created && !beta.migrations_applied);
    assert!(!beta.tenant.schema_provisioned);
    assert!(!schema_exists(&db, "tenant_beta"));
    assert_truth(&db, "beta", &beta.tenant.status);
    let beta_id = beta.tenant.id;

    // provision-schema by numeric id.
    let p: Changed = s
        .post(
            "/api/tenants/provision-schema",
            &json!({"tenant_id": beta_id}),
        )
        .expect(200)
        .json();
    assert_eq!(
        (p.tenant_id, p.domain.as_str(), p.schema_name.as_str()),
        (beta_id, "beta", "tenant_beta")
    );
    assert_eq!(p.status, "ok", "{p:#?}");
    assert!(p.applied.is_empty() && p.error.is_none(), "{p:#?}");
    assert!(p.message.contains("beta"), "{p:#?}");
    assert!(schema_exists(&db, "tenant_beta"));
    assert!(history_versions(&db, "tenant_beta").is_empty());

    // run-migrations by domain to a number, by schema name to "head", by numeric string.
    let m: Changed = s
        .post(
            "/api/tenants/run-migrations",
            &json!({"tenant_id": "beta", "target_revision": 3}),
        )
        .expect(200)
        .json();
    assert_eq!((m.tenant_id, m.status.as_str()), (beta_id, "ok"));
    assert_eq!(
        (m.to_revision, m.applied.clone()),
        (Some(3), upto(3)),
        "{m:#?}"
    );
    assert!(
        m.from_revision.unwrap_or(0) == 0 && m.error.is_none(),
        "{m:#?}"
    );
    assert_eq!(history_versions(&db, "tenant_beta"), upto(3));
    let m: Changed = s
        .post(
            "/api/tenants/run-migrations",
            &json!({"tenant_id": "tenant_beta", "target_revision": "head"}),
        )
        .expect(200)
        .json();
    assert_eq!(
        (m.from_revision, m.to_revision, m.applied.clone()),
        (Some(3), Some(head), (4..=head).collect::<Vec<_>>()),
        "{m:#?}"
    );
    let m: Changed = s
        .post(
            "/api/tenants/run-migrations",
            &json!({"tenant_id": beta_id.to_string()}),
        )
        .expect(200)
        .json();
    assert_eq!(m.status, "up_to_date", "{m:#?}");
    assert!(m.applied.is_empty(), "{m:#?}");
    // A downgrade with force, the target as a string.
    let m: Changed = s
        .post(
            "/api/tenants/run-migrations",
            &json!({"tenant_id": "beta", "target_revision": "2", "force": true}),
        )
        .expect(200)
        .json();
    assert_eq!(
        (m.status.as_str(), m.from_revision, m.to_revision),
        ("ok", Some(head), Some(2)),
        "{m:#?}"
    );
    assert_eq!(
        m.applied.iter().copied().collect::<BTreeSet<_>>(),
        (3..=head).collect::<BTreeSet<_>>(),
        "{m:#?}"
    );
    assert_eq!(history_versions(&db, "tenant_beta"), upto(2));
    assert_truth(&db, "beta", "active");

    // migration-status by domain, id and schema: the `status --tenant` document.
    let st = s.get("/api/tenants/beta/migration-status");
    st.expect(200);
    let raw: Value = st.json();
    assert!(
        raw.get("placement").is_some(),
        "placement is always there: {raw}"
    );
    let status: TenantStatus = st.json();
    assert_eq!(
        (status.tenant_id, status.current_revision),
        (beta_id, Some(2))
    );
    assert_eq!(status.pending_versions(), (3..=head).collect::<Vec<_>>());
    let cli: Value = t
        .run(&["status", "--tenant", "beta", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(raw, cli, "the API and the command line disagree");
    for by in [beta_id.to_string(), "tenant_beta".to_string()] {
        let again: Value = s
            .get(&format!("/api/tenants/{by}/migration-status"))
            .expect(200)
            .json();
        assert_eq!(again, raw, "by {by}");
    }

    // The tenant list and the fleet status, as the command line prints them.
    let list = s.get("/api/tenants");
    list.expect(200);
    let listing: Listing = list.json();
    assert_eq!(listing.summary.total, 2);
    let domains: Vec<&str> = listing.tenants.iter().map(|t| t.domain.as_str()).collect();
    assert_eq!(domains, ["alpha", "beta"]);
    assert_eq!(listing.summary.by_status.values().sum::<usize>(), 2);
    let cli: Value = t.run(&["tenant", "list", "-o", "json"]).expect(0).json();
    assert_eq!(list.json::<Value>(), cli);
    let fleet = s.get("/api/fleet/status");
    fleet.expect(200);
    let fs: FleetStatus = fleet.json();
    assert_eq!(
        (
            fs.summary.total,
            fs.summary.head,
            fs.summary.at_head,
            fs.summary.behind
        ),
        (2, head, 1, 1)
    );
    let cli: Value = t.run(&["status", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(fleet.json::<Value>(), cli);

    // A fleet upgrade: 202 with the run's id, then the run as it ends.
    let started = s.post("/api/fleet/upgrade", &json!({"concurrency": 2}));
    started.expect(202);
    let run: RunStarted = started.json();
    assert!(is_uuid(&run.run_id), "{run:?}");
    let v = s.finished_run(&run.run_id);
    assert_eq!(v.error, None, "{v:#?}");
    assert_eq!(
        (
            v.summary.total,
            v.summary.ok,
            v.summary.up_to_date,
            v.summary.failed,
            v.summary.skipped
        ),
        (2, 1, 1, 0, 0),
        "{v:#?}"
    );
    assert!(
        v.events.iter().any(|e| e.contains("beta")),
        "the events name the upgraded tenant: {v:#?}"
    );
    assert_eq!(history_versions(&db, "tenant_beta"), upto(head));

    // Metrics and the dashboard.
    let metrics = s.get_anon("/metrics");
    metrics.expect(200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{metrics:?}"
    );
    assert!(metrics.body.contains("tenantctl_head_revision"));
    let page = s.get("/");
    page.expect(200);
    assert!(
        page.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        page.headers
    );
    let listed = s.get("/tenants");
    listed.expect(200);
    assert!(listed.body.contains("alpha") && listed.body.contains("beta"));
    let one = s.get("/tenants/beta");
    one.expect(200);
    assert!(one.body.contains("tenant_beta"), "{}", one.body);
}

/// A request the service must refuse.
struct Case {
    label: String,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    status: u16,
}

fn case(
    label: impl Into<String>,
    method: &'static str,
    path: &str,
    body: Option<Vec<u8>>,
    status: u16,
) -> Case {
    Case {
        label: label.into(),
        method,
        path: path.to_string(),
        headers: vec![
            ("Authorization".into(), format!("Bearer {TOKEN}")),
            ("Content-Type".into(), "application/json".into()),
        ],
        body,
        status,
    }
}

/// A JSON body.
fn j(v: Value) -> Option<Vec<u8>> {
    Some(v.to_string().into_bytes())
}

/// `base` with `field` set to `value` (or removed, for `None`).
fn with(base: &Value, field: &str, value: Option<Value>) -> Value {
    let mut v = base.clone();
    let o = v.as_object_mut().unwrap();
    match value {
        Some(x) => {
            o.insert(field.into(), x);
        }
        None => {
            o.remove(field);
        }
    }
    v
}

/// Runs every case, asserting its status, a `{"detail"}` body (and the challenge on 401)
/// and that the database did not change.
fn refused(db: &TestDb, s: &Server, cases: &[Case]) {
    let before = snapshot(db);
    for c in cases {
        let headers: Vec<(&str, &str)> = c
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let r = s.call(c.method, &c.path, &headers, c.body.as_deref());
        assert_eq!(r.status, c.status, "{}: body {}", c.label, r.body);
        let d: Detail = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("{}: not a {{\"detail\"}} body ({e}): {}", c.label, r.body));
        assert!(!d.detail.is_empty(), "{}", c.label);
        assert!(
            r.header("content-type") == Some("application/json"),
            "{}: {:?}",
            c.label,
            r.headers
        );
        assert!(
            r.header("set-cookie").is_none(),
            "{}: a refusal set a cookie",
            c.label
        );
        assert_eq!(snapshot(db), before, "{}: the database changed", c.label);
    }
}

#[test]
fn refusals_answer_their_status_and_change_nothing() {
    let (db, t) = ready();
    let head = head_of(&example_migrations());
    create(&t, "gamma", &["--migrate"]);
    create(&t, "delta", &["--provision"]);
    create(&t, "other", &["--schema", "tenant_zeta"]);
    let s = start(&t);
    // The dashboard's cookie, to alter.
    let login = s.get_anon(&format!("/?token={TOKEN}"));
    login.expect(303);
    let session = login
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .and_then(|kv| kv.strip_prefix("tenantctl_session="))
        .expect("a session cookie")
        .to_string();

    let mut cases = Vec::new();

    // 401: every protected route, every wrong credential, with bodies that would work.
    let changed_token = {
        let mut b = TOKEN.as_bytes().to_vec();
        let last = b.len() - 1;
        b[last] = if b[last] == b'x' { b'y' } else { b'x' };
        String::from_utf8(b).unwrap()
    };
    let changed_session = {
        let mut b = session.as_bytes().to_vec();
        b[0] = if b[0] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).unwrap()
    };
    let protected: Vec<(&'static str, String, Option<Vec<u8>>)> = vec![
        ("GET", "/api/tenants".into(), None),
        ("GET", "/api/fleet/status".into(), None),
        ("GET", "/api/tenants/gamma/migration-status".into(), None),
        (
            "GET",
            "/api/runs/00000000-0000-4000-8000-000000000000".into(),
            None,
        ),
        ("GET", "/".into(), None),
        ("GET", "/tenants/gamma".into(), None),
        (
            "POST",
            "/api/tenants/".into(),
            j(json!({"tenant_name": "Eps", "domain": "eps"})),
        ),
        (
            "POST",
            "/api/tenants/provision-schema".into(),
            j(json!({"tenant_id": "gamma", "force_recreate": true})),
        ),
        (
            "POST",
            "/api/tenants/run-migrations".into(),
            j(json!({"tenant_id": "gamma", "target_revision": "base", "force": true})),
        ),
        (
            "POST",
            "/api/tenants/run-migrations".into(),
            j(json!({"tenant_id": "delta"})),
        ),
        ("POST", "/api/fleet/upgrade".into(), j(json!({}))),
    ];
    let credentials: Vec<(&str, Vec<(String, String)>)> = vec![
        ("no credentials", vec![]),
        (
            "a wrong token",
            vec![(
                "Authorization".into(),
                "Bearer not-the-token-at-all-0000".into(),
            )],
        ),
        (
            "the token with one character changed",
            vec![("Authorization".into(), format!("Bearer {changed_token}"))],
        ),
        (
            "the token without its last character",
            vec![(
                "Authorization".into(),
                format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
            )],
        ),
        (
            "the token in another scheme",
            vec![("Authorization".into(), format!("Basic {TOKEN}"))],
        ),
        (
            "an empty bearer",
            vec![("Authorization".into(), "Bearer ".into())],
        ),
        (
            "a cookie with a wrong value",
            vec![(
                "Cookie".into(),
                format!("tenantctl_session={changed_session}"),
            )],
        ),
        (
            "a cookie holding the token itself",
            vec![("Cookie".into(), format!("tenantctl_session={TOKEN}"))],
        ),
        (
            "a wrong bearer beside a good cookie",
            vec![
                ("Authorization".into(), format!("Bearer {changed_token}")),
                ("Cookie".into(), format!("tenantctl_session={session}")),
            ],
        ),
    ];
    for (method, path, body) in &protected {
        for (what, headers) in &credentials {
            let mut h = headers.clone();
            h.push(("Content-Type".into(), "application/json".into()));
            cases.push(Case {
                label: format!("{method} {path} with {what}"),
                method,
                path: path.clone(),
                headers: h,
                body: body.clone(),
                status: 401,
            });
        }
        // The token in the query string signs in on the dashboard's pages only (a GET
        // not under /api/); on the API it opens nothing.
        if path.starts_with("/api/") || *method != "GET" {
            cases.push(Case {
                label: format!("{method} {path}?token="),
                method,
                path: format!("{path}?token={TOKEN}"),
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: body.clone(),
                status: 401,
            });
        }
    }
    cases.push(Case {
        label: "GET /?token= with a wrong token".into(),
        method: "GET",
        path: format!("/?token={changed_token}"),
        headers: vec![],
        body: None,
        status: 401,
    });

    // 404: unknown tenants and runs.
    for r in ["nobody", "99999", "tenant_nobody", "-1"] {
        cases.push(case(
            format!("migration-status of {r}"),
            "GET",
            &format!("/api/tenants/{r}/migration-status"),
            None,
            404,
        ));
    }
    for id in [
        json!(99999),
        json!("nobody"),
        json!("tenant_nobody"),
        json!("99999"),
    ] {
        cases.push(case(
            format!("run-migrations of {id}"),
            "POST",
            "/api/tenants/run-migrations",
            j(json!({"tenant_id": id})),
            404,
        ));
        cases.push(case(
            format!("provision-schema of {id}"),
            "POST",
            "/api/tenants/provision-schema",
            j(json!({"tenant_id": id, "force_recreate": true})),
            404,
        ));
    }
    for run in [
        "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab",
        "not-a-uuid",
        "1",
        "%00",
    ] {
        cases.push(case(
            format!("run {run}"),
            "GET",
            &format!("/api/runs/{run}"),
            None,
            404,
        ));
    }
    cases.push(case("an unknown route", "GET", "/api/nothing", None, 404));
    cases.push(case(
        "a GET of a POST route",
        "GET",
        "/api/tenants/run-migrations",
        None,
        405,
    ));
    cases.push(case(
        "a DELETE of the tenant list",
        "DELETE",
        "/api/tenants",
        None,
        405,
    ));

    // 409: a taken domain, a taken schema (a downgrade without force: below).
    cases.push(case(
        "a taken domain",
        "POST",
        "/api/tenants/",
        j(json!({"tenant_name": "Again", "domain": "gamma"})),
        409,
    ));
    cases.push(case(
        "a taken schema",
        "POST",
        "/api/tenants/",
        j(json!({"tenant_name": "Zeta", "domain": "zeta"})),
        409,
    ));

    // 422: hostile input in every field of every body.
    let long = "x".repeat(10_000);
    let create_base = json!({"tenant_name": "Eps", "domain": "eps", "email": "a@eps.test",
                             "tenant_type": "standard", "provision_schema": true,
                             "run_migrations": true});
    let hostile_create: Vec<(&str, Vec<Option<Value>>)> = vec![
        (
            "domain",
            vec![
                None,
                Some(json!("Not A Domain")),
                Some(json!("eps.example.com")),
                Some(json!("EPS")),
                Some(json!("-eps")),
                Some(json!("12345")),
                Some(json!("")),
                Some(json!("eps\u{0}x")),
                Some(json!("eps\nx")),
                Some(json!("eps\u{1b}[31m")),
                Some(json!("épsilon")),
                Some(json!("eps'; DROP TABLE tenants; --")),
                Some(json!(long)),
                Some(json!(5)),
                Some(Value::Null),
                Some(json!(["eps"])),
                Some(json!({"domain": "eps"})),
                Some(json!(true)),
            ],
        ),
        (
            "tenant_name",
            vec![
                None,
                Some(json!("")),
                Some(json!("   ")),
                Some(json!("a\u{7}b")),
                Some(json!("line\r\nbreak")),
                Some(json!(long)),
                Some(json!(5)),
                Some(Value::Null),
                Some(json!(["Eps"])),
                Some(json!({})),
            ],
        ),
        (
            "email",
            vec![
                Some(json!("not-an-email")),
                Some(json!("a b@eps.test")),
                Some(json!("a@b\u{0}")),
                Some(json!("a@b@c")),
                Some(json!(format!("a@{long}"))),
                Some(json!(5)),
                Some(json!(["a@eps.test"])),
                Some(json!({})),
            ],
        ),
        (
            "tenant_type",
            vec![
                Some(json!("Premium!")),
                Some(json!("")),
                Some(json!("t\u{1b}[31m")),
                Some(json!(long)),
                Some(json!(5)),
                Some(json!(false)),
                Some(json!(["standard"])),
            ],
        ),
        (
            "provision_schema",
            vec![
                Some(json!("yes")),
                Some(json!("true")),
                Some(json!(1)),
                Some(Value::Null),
                Some(json!([true])),
            ],
        ),
        (
            "run_migrations",
            vec![
                Some(json!("no")),
                Some(json!(0)),
                Some(Value::Null),
                Some(json!({})),
            ],
        ),
    ];
    for (field, values) in &hostile_create {
        for v in values {
            let body = with(&create_base, field, v.clone());
            cases.push(case(
                format!("create with {field} = {}", shown(v)),
                "POST",
                "/api/tenants/",
                j(body),
                422,
            ));
        }
    }
    let tenant_ids = vec![
        None,
        Some(json!("")),
        Some(json!("gam\u{0}ma")),
        Some(json!("gamma\n")),
        Some(json!(long)),
        Some(Value::Null),
        Some(json!(["gamma"])),
        Some(json!({"id": 1})),
        Some(json!(true)),
        Some(json!(1.5)),
    ];
    let provision_base = json!({"tenant_id": "delta", "force_recreate": false});
    let migrate_base = json!({"tenant_id": "delta", "target_revision": "head", "force": false});
    for v in &tenant_ids {
        for (path, base) in [
            ("/api/tenants/provision-schema", &provision_base),
            ("/api/tenants/run-migrations", &migrate_base),
        ] {
            cases.push(case(
                format!("{path} with tenant_id = {}", shown(v)),
                "POST",
                path,
                j(with(base, "tenant_id", v.clone())),
                422,
            ));
        }
    }
    for v in [
        json!("yes"),
        json!("true"),
        json!(1),
        Value::Null,
        json!([]),
    ] {
        cases.push(case(
            format!("provision-schema with force_recreate = {v}"),
            "POST",
            "/api/tenants/provision-schema",
            j(with(&provision_base, "force_recreate", Some(v.clone()))),
            422,
        ));
        cases.push(case(
            format!("run-migrations with force = {v}"),
            "POST",
            "/api/tenants/run-migrations",
            j(with(&migrate_base, "force", Some(v))),
            422,
        ));
    }
    let targets = vec![
        json!("bogus"),
        json!(head + 1),
        json!((head + 1).to_string()),
        json!(99999),
        json!(-1),
        json!(1.5),
        json!(i64::MAX),
        json!("he\u{0}ad"),
        json!(long),
        json!(""),
        json!([]),
        json!({}),
        json!(true),
    ];
    for v in &targets {
        cases.push(case(
            format!(
                "run-migrations with target_revision = {}",
                shown(&Some(v.clone()))
            ),
            "POST",
            "/api/tenants/run-migrations",
            j(with(&migrate_base, "target_revision", Some(v.clone()))),
            422,
        ));
    }
    let upgrade_base = json!({"target_revision": "head", "concurrency": 2});
    for v in [
        json!(0),
        json!(1025),
        json!(-1),
        json!(70000),
        json!("4"),
        json!(1.5),
        json!([]),
    ] {
        cases.push(case(
            format!("fleet upgrade with concurrency = {v}"),
            "POST",
            "/api/fleet/upgrade",
            j(with(&upgrade_base, "concurrency", Some(v))),
            422,
        ));
    }
    for v in &targets {
        cases.push(case(
            format!(
                "fleet upgrade with target_revision = {}",
                shown(&Some(v.clone()))
            ),
            "POST",
            "/api/fleet/upgrade",
            j(with(&upgrade_base, "target_revision", Some(v.clone()))),
            422,
        ));
    }
    // Bodies that are not an object.
    let not_objects: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"tenant_name=x&domain=y".to_vec()),
        ("truncated JSON", b"{\"tenant_id\": \"gamma\"".to_vec()),
        ("an array", b"[]".to_vec()),
        (
            "an array holding an object",
            br#"[{"tenant_name": "Eps", "domain": "eps", "tenant_id": "delta"}]"#.to_vec(),
        ),
        (
            "an array of the fields in order",
            br#"["Eps", "eps"]"#.to_vec(),
        ),
        ("an array of one string", br#"["delta"]"#.to_vec()),
        ("null", b"null".to_vec()),
        ("a number", b"42".to_vec()),
        ("a string", b"\"gamma\"".to_vec()),
        ("invalid UTF-8", b"{\"tenant_id\": \"\xff\xfe\"}".to_vec()),
    ];
    for path in [
        "/api/tenants/",
        "/api/tenants/provision-schema",
        "/api/tenants/run-migrations",
    ] {
        cases.push(case(
            format!("{path} with an empty body"),
            "POST",
            path,
            Some(Vec::new()),
            422,
        ));
        for (what, body) in &not_objects {
            cases.push(case(
                format!("{path} with {what}"),
                "POST",
                path,
                Some(body.clone()),
                422,
            ));
        }
    }
    for (what, body) in &not_objects {
        cases.push(case(
            format!("fleet upgrade with {what}"),
            "POST",
            "/api/fleet/upgrade",
            Some(body.clone()),
            422,
        ));
    }
    // Hostile references in the path.
    for r in ["gam%00ma", "gamma%0A", &"y".repeat(10_000)] {
        cases.push(case(
            format!("migration-status of {}", &r[..r.len().min(20)]),
            "GET",
            &format!("/api/tenants/{r}/migration-status"),
            None,
            422,
        ));
    }

    // 413: bodies over 64 KiB, valid but for their size.
    let huge = "z".repeat(65 * 1024);
    for (path, body) in [
        (
            "/api/tenants/",
            json!({"tenant_name": huge, "domain": "eps"}),
        ),
        (
            "/api/tenants/provision-schema",
            json!({"tenant_id": "delta", "pad": huge}),
        ),
        (
            "/api/tenants/run-migrations",
            json!({"tenant_id": "delta", "pad": huge}),
        ),
        ("/api/fleet/upgrade", json!({"pad": huge})),
    ] {
        cases.push(case(
            format!("{path} with a body over 64 KiB"),
            "POST",
            path,
            j(body),
            413,
        ));
    }

    refused(&db, &s, &cases);

    // 409: a downgrade without force is refused as `upgrade` refuses a target below the
    // revision: nothing changed but the ledger, which records the refusal.
    for (label, body) in [
        ("to 2", json!({"tenant_id": "gamma", "target_revision": 2})),
        (
            "to base",
            json!({"tenant_id": "gamma", "target_revision": "base"}),
        ),
        (
            "with force false",
            json!({"tenant_id": "gamma", "target_revision": "1", "force": false}),
        ),
    ] {
        let before = snapshot(&db);
        let r = s.post("/api/tenants/run-migrations", &body);
        assert_eq!(
            r.status, 409,
            "a downgrade {label} without force: {}",
            r.body
        );
        let d: Detail = r.json();
        assert!(
            d.detail.contains("downgrade") && d.detail.contains("force"),
            "{label}: {}",
            d.detail
        );
        let after = snapshot(&db);
        assert_eq!(
            (&after.rows, &after.schemas, &after.histories),
            (&before.rows, &before.schemas, &before.histories),
            "a downgrade {label} without force changed the database"
        );
        assert_eq!(after.ledger, before.ledger + 1, "{label}");
        let e = checks::ledger(&db, "gamma").pop().unwrap();
        assert_eq!(
            (e.action.as_str(), e.status.as_str()),
            ("upgrade", "refused")
        );
    }
    // Still serving, and the tenants as they were.
    s.get("/api/tenants").expect(200);
    assert_truth(&db, "gamma", "active");
    assert_eq!(registry_row(&db, "delta").current_revision, None);
}

/// A JSON value for a test's label, short.
fn shown(v: &Option<Value>) -> String {
    match v {
        None => "(missing)".into(),
        Some(v) => {
            let s = v.to_string();
            if s.len() > 40 {
                format!("{}... ({} bytes)", &s[..20], s.len())
            } else {
                s
            }
        }
    }
}

#[test]
fn concurrent_requests_all_succeed_and_migrate_once() {
    let (db, t) = ready();
    let head = head_of(&example_migrations());
    let s = start(&t);

    let answers: Vec<Resp> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    s.post(
                        "/api/tenants/",
                        &json!({"tenant_name": format!("Many {i}"), "domain": format!("many-{i}")}),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, r) in answers.iter().enumerate() {
        r.expect(201);
        let c: Created = r.json();
        assert_eq!(c.tenant.domain, format!("many-{i}"));
        assert_eq!(c.tenant.current_revision, Some(head));
    }
    let fs: FleetStatus = s.get("/api/fleet/status").expect(200).json();
    assert_eq!(
        (fs.summary.total, fs.summary.at_head),
        (20, 20),
        "{:#?}",
        fs.summary
    );
    for i in 0..20 {
        let d = format!("many-{i}");
        assert_truth(&db, &d, "active");
        assert_eq!(
            history_versions(&db, &format!("tenant_many_{i}")),
            upto(head)
        );
    }

    // Ten migrations of one tenant at once: one applies everything, the others wait for
    // its lock and find nothing to do.
    let solo: Created = s
        .post(
            "/api/tenants/",
            &json!({"tenant_name": "Solo", "domain": "solo", "run_migrations": false}),
        )
        .expect(201)
        .json();
    assert!(solo.schema_created && !solo.migrations_applied, "{solo:#?}");
    assert!(history_versions(&db, "tenant_solo").is_empty());
    let answers: Vec<Resp> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10)
            .map(|_| {
                let s = &s;
                scope.spawn(move || {
                    s.post("/api/tenants/run-migrations", &json!({"tenant_id": "solo"}))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut applied = Vec::new();
    for r in &answers {
        r.expect(200);
        let c: Changed = r.json();
        assert_eq!(c.error, None, "{c:#?}");
        assert_eq!(c.to_revision, Some(head), "{c:#?}");
        match c.status.as_str() {
            "ok" => applied.push(c.applied.clone()),
            "up_to_date" => assert!(c.applied.is_empty(), "{c:#?}"),
            other => panic!("status {other}: {c:#?}"),
        }
    }
    assert_eq!(
        applied,
        vec![upto(head)],
        "exactly one request applies the migrations"
    );
    assert_eq!(history_versions(&db, "tenant_solo"), upto(head));
    let rows: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM tenant_solo.refinery_schema_history",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, i64::from(head));
    assert_truth(&db, "solo", "active");
}

/// The test database's URL with a password in it (the server trusts local connections,
/// so any works), and that password.
fn url_with_password(db: &TestDb) -> (String, String) {
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let (auth, host) = rest.rsplit_once('@').unwrap_or(("postgres", rest));
    match auth.split_once(':') {
        Some((_, pw)) if !pw.is_empty() => (db.url.clone(), pw.to_string()),
        _ => {
            let pw = "Pw-S3NTINEL-e81b".to_string();
            (format!("{scheme}://{auth}:{pw}@{host}"), pw)
        }
    }
}

#[test]
fn the_dashboard_cookie_works_and_no_secret_reaches_the_output() {
    let db = TestDb::new();
    let (url, password) = url_with_password(&db);
    let t = support::bare().url(&url).migrations(&example_migrations());
    t.run(&["init"]).expect(0);
    create(&t, "cli-made", &["--migrate"]);
    let s = start(&t);

    // Without anything, the dashboard is closed.
    let closed = s.get_anon("/");
    closed.expect(401);
    // A wrong token: 401 and no cookie.
    let wrong = s.get_anon("/?token=wrong-token-but-long-enough");
    wrong.expect(401);
    assert!(wrong.header("set-cookie").is_none(), "{wrong:?}");
    // The token: 303 to / with the session cookie, kept 12 hours, not only over HTTPS
    // (serve.cookie_secure is off).
    let login = s.get_anon(&format!("/?token={TOKEN}"));
    login.expect(303);
    assert_eq!(login.header("location"), Some("/"));
    let cookie = login.header("set-cookie").expect("a cookie").to_string();
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
    let (name, value) = attrs[0].split_once('=').expect("name=value");
    assert_eq!(name, "tenantctl_session");
    assert!(!value.contains(TOKEN) && !value.is_empty(), "{cookie}");
    for a in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(attrs.contains(&a), "the cookie lacks {a}: {cookie}");
    }
    assert!(!attrs.contains(&"Secure"), "{cookie}");
    // A deep link signs in too, and comes back to the same page without the token.
    let deep = s.get_anon(&format!("/tenants/cli-made?x=1&token={TOKEN}&y=2"));
    deep.expect(303);
    assert_eq!(deep.header("location"), Some("/tenants/cli-made?x=1&y=2"));
    assert!(deep.header("set-cookie").is_some(), "{deep:?}");
    s.get_anon("/tenants/cli-made?token=wrong-token-but-long-enough")
        .expect(401);
    // The API never takes the token from the query string.
    s.get_anon(&format!("/api/tenants?token={TOKEN}"))
        .expect(401);
    // The cookie alone opens the dashboard and the API.
    let c = format!("tenantctl_session={value}");
    s.call("GET", "/", &[("Cookie", &c)], None).expect(200);
    let page = s.call("GET", "/tenants", &[("Cookie", &c)], None);
    page.expect(200);
    assert!(page.body.contains("cli-made"), "{}", page.body);
    s.call("GET", "/tenants/cli-made", &[("Cookie", &c)], None)
        .expect(200);
    s.call("GET", "/api/tenants", &[("Cookie", &c)], None)
        .expect(200);
    // The token percent-encoded in the query works too.
    let encoded: String = TOKEN.bytes().map(|b| format!("%{b:02X}")).collect();
    s.get_anon(&format!("/?token={encoded}")).expect(303);

    // Every endpoint, collecting every API key handed out.
    let mut keys = Vec::new();
    for d in ["sec-one", "sec-two"] {
        let c: Created = s
            .post("/api/tenants/", &json!({"tenant_name": d, "domain": d}))
            .expect(201)
            .json();
        keys.push(c.api_key);
    }
    let c: Created = s
        .post(
            "/api/tenants/",
            &json!({"tenant_name": "Sec", "domain": "sec-three", "run_migrations": false,
                    "provision_schema": false}),
        )
        .expect(201)
        .json();
    keys.push(c.api_key);
    s.post(
        "/api/tenants/",
        &json!({"tenant_name": "Dup", "domain": "sec-one"}),
    )
    .expect(409);
    s.post(
        "/api/tenants/provision-schema",
        &json!({"tenant_id": "sec-three"}),
    )
    .expect(200);
    s.post(
        "/api/tenants/run-migrations",
        &json!({"tenant_id": "sec-three"}),
    )
    .expect(200);
    s.post(
        "/api/tenants/run-migrations",
        &json!({"tenant_id": "sec-three", "target_revision": "base"}),
    )
    .expect(409);
    s.get("/api/tenants/sec-one/migration-status").expect(200);
    s.get("/api/tenants/nobody/migration-status").expect(404);
    s.get("/api/tenants").expect(200);
    s.get("/api/fleet/status").expect(200);
    let run: RunStarted = s.post("/api/fleet/upgrade", &json!({})).expect(202).json();
    s.finished_run(&run.run_id);
    s.get("/healthz").expect(200);
    s.get("/metrics").expect(200);
    s.get("/").expect(200);
    s.call(
        "GET",
        "/api/tenants",
        &[("Authorization", "Bearer wrong-token-0000000000")],
        None,
    )
    .expect(401);
    s.post(
        "/api/tenants/",
        &json!({"tenant_name": TOKEN, "domain": format!("{TOKEN}!")}),
    )
    .expect(422);
    assert_eq!(keys.len(), 3);

    // The request log: one line per request, the path without its query.
    let stderr = s.child.stderr();
    assert!(
        stderr.lines().any(|l| l.contains("GET \"/\" 303 ")),
        "the login is logged without its query:\n{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("POST \"/api/tenants/\" 201 ")),
        "{stderr}"
    );
    s.child.signal("TERM");
    let Server { child, .. } = s;
    let run = child.finish();
    run.expect(0);
    let out = format!("{}\n{}", run.stdout, run.stderr);
    assert!(!out.contains(TOKEN), "the token is in the output:\n{out}");
    assert!(
        !out.contains(&encoded),
        "the encoded token is in the output:\n{out}"
    );
    assert!(
        !out.contains(value),
        "the session value is in the output:\n{out}"
    );
    assert!(
        !out.contains(&password),
        "the password is in the output:\n{out}"
    );
    for k in &keys {
        assert!(
            !out.contains(k.as_str()),
            "an API key is in the output:\n{out}"
        );
    }
}

#[test]
fn fleet_runs_are_followed_and_runs_of_the_command_line_come_from_the_ledger() {
    let (db, t) = ready();
    let dir = dir_with(&[
        ("V1__one.sql", "CREATE TABLE one (id int);\n"),
        ("V2__two.sql", "CREATE TABLE two (id int);\n"),
    ]);
    let t = t.migrations(dir.path());
    let domains = ["run-a", "run-b", "run-c"];
    for d in domains {
        create(&t, d, &["--provision"]);
    }
    let s = start(&t);
    // An empty body is the defaults: every tenant to head.
    let auth = format!("Bearer {TOKEN}");
    let started = s.call(
        "POST",
        "/api/fleet/upgrade",
        &[("Authorization", &auth)],
        Some(b""),
    );
    started.expect(202);
    let run: RunStarted = started.json();
    let v = s.finished_run(&run.run_id);
    assert_eq!(v.error, None, "{v:#?}");
    assert_eq!(
        (
            v.summary.total,
            v.summary.ok,
            v.summary.up_to_date,
            v.summary.failed,
            v.summary.skipped
        ),
        (3, 3, 0, 0, 0),
        "{v:#?}"
    );
    for d in domains {
        assert!(v.events.iter().any(|e| e.contains(d)), "{d} in {v:#?}");
        assert_eq!(
            history_versions(&db, &format!("tenant_{}", d.replace('-', "_"))),
            [1, 2]
        );
        assert_truth(&db, d, "active");
    }
    // The ledger has the run, one entry per tenant.
    let ev: Events = t
        .run(&["events", "--run", &run.run_id, "-o", "json"])
        .expect(0)
        .json();
    let ledger: BTreeSet<&str> = ev.events.iter().map(|e| e.domain.as_str()).collect();
    assert_eq!(ledger, domains.into_iter().collect());
    assert!(
        ev.events
            .iter()
            .all(|e| e.status == "ok" && e.run_id == run.run_id),
        "{ev:#?}"
    );

    // A run of the command line, served from the ledger.
    std::fs::write(
        dir.path().join("V3__three.sql"),
        "CREATE TABLE three (id int);\n",
    )
    .unwrap();
    let report: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    let v = s.finished_run(&report.run_id);
    assert_eq!(v.error, None);
    assert_eq!(
        (v.summary.total, v.summary.ok, v.summary.failed),
        (3, 3, 0),
        "{v:#?}"
    );
    assert_eq!(v.events.len(), 3, "{v:#?}");
    for d in domains {
        let line = v
            .events
            .iter()
            .find(|e| e.contains(d))
            .unwrap_or_else(|| panic!("{d} in {v:#?}"));
        assert!(line.contains("2 -> 3"), "{line}");
    }
    // Unknown and malformed runs.
    s.get("/api/runs/6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab")
        .expect(404);
    s.get("/api/runs/nope").expect(404);
}

#[test]
fn sigterm_lets_the_migrations_in_flight_finish_and_exits_zero() {
    // The gate V2 and V3 wait at.
    const GATE: i64 = 7015;
    let (db, t) = ready();
    let v2 = format!("CREATE TABLE two (id int);\n{}", wait_at(GATE));
    let v3 = format!("CREATE TABLE three (id int);\n{}", wait_at(GATE));
    let dir = dir_with(&[
        ("V1__one.sql", "CREATE TABLE one (id int);\n"),
        ("V2__slow.sql", &v2),
        ("V3__slow.sql", &v3),
    ]);
    let t = t.migrations(dir.path());
    let domains: Vec<String> = (0..6).map(|i| format!("stop-{i}")).collect();
    for d in &domains {
        create(&t, d, &["--provision"]);
    }
    let mut gate = Gate::advisory(&db.url, GATE);
    let mut s = start(&t);
    let run: RunStarted = s
        .post("/api/fleet/upgrade", &json!({"concurrency": 2}))
        .expect(202)
        .json();
    s.child
        .wait_until("two tenants wait at the gate inside V2", || {
            gate.blocked_tenantctl().len() == 2
        });
    // While it runs, the run says so and counts its tenants.
    let v: RunView = s
        .get(&format!("/api/runs/{}", run.run_id))
        .expect(200)
        .json();
    assert_eq!(v.state, "running", "{v:#?}");
    assert_eq!(v.summary.total, domains.len(), "{v:#?}");
    assert!(
        v.events
            .first()
            .is_some_and(|e| e.contains("started on 6 tenants")),
        "{v:#?}"
    );
    let Server { mut child, .. } = s;
    child.signal("TERM");
    // Once the service has the signal, the two migrations in flight still wait at the
    // gate: the stop lets them finish.
    child.wait_for_stderr("stopping:");
    assert_eq!(gate.blocked_tenantctl().len(), 2, "{:?}", gate.blocked());
    gate.open();
    let out = child.finish();
    out.expect(0);
    // The service's log says how the run ended: stopped, the rest skipped.
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains(&format!("run {} finished: ", run.run_id)))
        .unwrap_or_else(|| panic!("no end of the run in the log:\n{}", out.stderr));
    let counts: Vec<usize> = line
        .split_once("finished: ")
        .unwrap()
        .1
        .split(", ")
        .map(|part| part.split(' ').next().unwrap().parse().unwrap())
        .collect();
    let [ok, up_to_date, failed, skipped] = counts[..] else {
        panic!("{line}")
    };
    assert!(line.contains("interrupted"), "{line}");
    assert_eq!((failed, up_to_date), (0, 0), "{line}");
    assert!(skipped > 0, "the tenants not started are skipped: {line}");
    assert_eq!(ok + skipped, domains.len(), "{line}");
    // Exactly the two tenants in flight finished their migration; the rest never started.
    assert_eq!((ok, skipped), (2, 4), "{line}");
    let stop_at = out.stderr.find("stopping:").unwrap();
    assert!(
        out.stderr[stop_at..].contains(line),
        "the run ends after the signal:\n{}",
        out.stderr
    );

    // Every tenant at a revision that fully applied, the registry saying so: the tenants
    // in flight stopped after their current migration, the others did not start.
    let mut started = BTreeSet::new();
    for d in &domains {
        let schema = format!("tenant_{}", d.replace('-', "_"));
        let h = history_versions(&db, &schema);
        assert!(
            h.is_empty() || h == [1] || h == [1, 2] || h == [1, 2, 3],
            "{d}: history {h:?} is not a prefix of the files"
        );
        let row = registry_row(&db, d);
        assert_eq!(row.current_revision, h.last().copied(), "{d}: {row:?}");
        assert_ne!(row.status, "failed", "{d}: {row:?}");
        assert_truth(&db, d, &row.status);
        if !h.is_empty() {
            // In flight with V2 at the signal: stopped right after it.
            assert_eq!(h, [1, 2], "{d}: stopped after its current migration");
            started.insert(d.as_str());
        }
    }
    assert_eq!(started.len(), ok, "{line}: started {started:?}");
    // The ledger has the tenants that changed, and nothing failed in it.
    let ev: Events = t
        .run(&["events", "--run", &run.run_id, "-o", "json"])
        .expect(0)
        .json();
    let ledger: BTreeSet<&str> = ev.events.iter().map(|e| e.domain.as_str()).collect();
    assert_eq!(ledger, started, "{ev:#?}");
    assert!(ev.events.iter().all(|e| e.status != "failed"), "{ev:#?}");
    // A new service reports the stopped run from the ledger.
    let s = start(&t);
    let v = s.finished_run(&run.run_id);
    assert_eq!((v.summary.total, v.summary.failed), (ok, 0), "{v:#?}");
}

/// One sample of a metrics text: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses Prometheus's text format strictly: every family has HELP and TYPE before its
/// samples, and every sample belongs to a declared family.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut declared: BTreeSet<String> = BTreeSet::new();
    let mut helped: BTreeSet<String> = BTreeSet::new();
    let mut histograms: BTreeSet<String> = BTreeSet::new();
    let mut samples = Vec::new();
    assert!(text.ends_with('\n'), "the text ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.is_empty(), "{line}");
            helped.insert(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(helped.contains(name), "TYPE before HELP: {line}");
            assert!(
                ["gauge", "counter", "untyped", "histogram", "summary"].contains(&kind),
                "{line}"
            );
            assert!(declared.insert(name.to_string()), "declared twice: {line}");
            if kind == "histogram" {
                histograms.insert(name.to_string());
            }
        } else {
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "stray line {line:?}"
            );
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"));
                    let mut labels = BTreeMap::new();
                    for kv in body.split(',') {
                        let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or_else(|| panic!("unquoted label in {line:?}"));
                        assert!(
                            k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                            "{line:?}"
                        );
                        labels.insert(k.to_string(), v.to_string());
                    }
                    (n.to_string(), labels)
                }
                None => (series.to_string(), BTreeMap::new()),
            };
            // A histogram's samples are its name with `_bucket`, `_sum` or `_count`.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| histograms.contains(*base))
                })
                .unwrap_or(&name);
            assert!(
                declared.contains(family),
                "sample of an undeclared family: {line:?}"
            );
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
    }
    samples
}

fn samples_of<'a>(samples: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    samples.iter().filter(|s| s.name == name).collect()
}

/// Asserts the metrics' counts against the registry itself.
fn assert_counts(db: &TestDb, head: i32, text: &str) -> Vec<Sample> {
    let samples = parse_metrics(text);
    let mut c = db.client();
    for d in c
        .query("SELECT domain, tenant_name FROM public.tenants", &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
    {
        assert!(
            !text.contains(&d),
            "the tenant {d} is named in the metrics:\n{text}"
        );
    }
    let h = samples_of(&samples, "tenantctl_head_revision");
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].value, f64::from(head));
    let by_status: BTreeMap<String, i64> = c
        .query(
            "SELECT status, count(*) FROM public.tenants GROUP BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let tenants = samples_of(&samples, "tenantctl_tenants");
    for s in &tenants {
        let status = &s.labels["status"];
        assert_eq!(
            s.value,
            by_status.get(status).copied().unwrap_or(0) as f64,
            "{status}: {text}"
        );
    }
    for status in by_status.keys() {
        assert!(
            tenants.iter().any(|s| &s.labels["status"] == status),
            "no sample for {status}: {text}"
        );
    }
    let behind: i64 = c
        .query_one(
            "SELECT count(*) FROM public.tenants WHERE schema_provisioned AND coalesce(current_revision, 0) < $1",
            &[&head],
        )
        .unwrap()
        .get(0);
    let b = samples_of(&samples, "tenantctl_tenants_behind_head");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].value, behind as f64);
    let by_revision: BTreeMap<String, i64> = c
        .query(
            "SELECT coalesce(current_revision::text, 'base'), count(*) FROM public.tenants GROUP BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let got: BTreeMap<String, i64> = samples_of(&samples, "tenantctl_tenants_by_revision")
        .iter()
        .map(|s| (s.labels["revision"].clone(), s.value as i64))
        .collect();
    assert_eq!(got, by_revision, "{text}");
    samples
}

/// The fleet's metrics in the service's `/metrics`: what comes before its own requests.
fn fleet_part(text: &str) -> &str {
    let own = text
        .find("# HELP tenantctl_http_requests_total")
        .unwrap_or_else(|| panic!("the service's own requests are missing:\n{text}"));
    &text[..own]
}

/// The metric names a text names: every `tenantctl_...` word.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tenantctl_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + word.len()..];
        out.insert(word);
    }
    out
}

#[test]
fn the_grafana_dashboard_and_the_alert_rules_name_only_metrics_tenantctl_writes() {
    let (db, t) = ready();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("V1__one.sql"),
        "CREATE TABLE one (id int);\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("shared")).unwrap();
    std::fs::write(
        dir.path().join("shared").join("V1__plans.sql"),
        "CREATE TABLE plans (id int);\n",
    )
    .unwrap();
    let t = t.migrations(dir.path());
    t.run(&["upgrade", "--shared"]).expect(0);
    create(&t, "mon-a", &["--migrate"]);
    create(&t, "mon-b", &["--provision"]);
    create(&t, "mon-c", &[]);
    t.run(&["upgrade", "--all"]).expect(0);
    let out = tempfile::tempdir().unwrap();
    t.run(&["backup", "--all", "--out", out.path().to_str().unwrap()])
        .expect(0);
    let s = start(&t);
    s.get_anon("/healthz").expect(200);
    s.get_anon("/metrics").expect(200);
    let text = s.get_anon("/metrics").expect(200).body.clone();
    let samples = parse_metrics(&text);
    let written: BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    // Each tenant gauge carries `server`, also with one server.
    for name in [
        "tenantctl_tenants",
        "tenantctl_tenants_behind_head",
        "tenantctl_tenants_unprovisioned",
    ] {
        let of = samples_of(&samples, name);
        assert!(!of.is_empty(), "{name}: {text}");
        assert!(
            of.iter()
                .all(|s| s.labels.get("server").map(String::as_str) == Some("default")),
            "{name}: {text}"
        );
    }
    let unprovisioned = samples_of(&samples, "tenantctl_tenants_unprovisioned");
    assert_eq!(unprovisioned[0].value, 1.0, "{text}");
    let without: f64 = samples_of(&samples, "tenantctl_tenants_without_backup")
        .iter()
        .map(|s| s.value)
        .sum();
    let backed_up: i64 = db
        .client()
        .query_one(
            "SELECT count(DISTINCT tenant_id) FROM public.tenant_events WHERE action = 'backup' AND status = 'ok'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(backed_up > 0, "the backup backed up nothing");
    assert_eq!(without, (3 - backed_up) as f64, "{text}");
    let runs = samples_of(&samples, "tenantctl_last_run_tenants");
    assert!(
        runs.iter()
            .any(|s| s.labels["command"] == "upgrade" && s.value == 3.0),
        "{text}"
    );
    for (file, parsed) in [
        ("docs/src/monitoring/grafana-dashboard.json", true),
        ("docs/src/monitoring/alerts.yml", false),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let body = std::fs::read_to_string(&path).unwrap();
        if parsed {
            let doc: Value = serde_json::from_str(&body).expect(file);
            let panels = doc["panels"].as_array().expect("panels");
            assert!(!panels.is_empty());
            for p in panels {
                let targets = p["targets"].as_array().expect("targets");
                assert!(!targets.is_empty(), "{p}");
                for target in targets {
                    assert!(
                        target["expr"]
                            .as_str()
                            .is_some_and(|e| e.contains("tenantctl_")),
                        "{target}"
                    );
                }
            }
        }
        let named = metric_names_in(&body);
        assert!(named.len() > 5, "{file}: {named:?}");
        for name in &named {
            assert!(
                written.contains(name.as_str()),
                "{file} names {name}, which tenantctl does not write:\n{text}"
            );
        }
    }
}

/// The files in a directory.
fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn metrics_parse_match_the_registry_and_textfiles_are_written_whole() {
    let (db, t) = ready();
    let dir = dir_with(&[
        ("V1__one.sql", "CREATE TABLE one (id int);\n"),
        ("V2__two.sql", "CREATE TABLE two (id int);\n"),
    ]);
    let t = t.migrations(dir.path());
    create(&t, "met-done", &["--migrate"]);
    create(&t, "met-prov", &["--provision"]);
    create(&t, "met-bare", &[]);
    let s = start(&t);
    let text = s.get_anon("/metrics").expect(200).body.clone();
    let samples = assert_counts(&db, 2, &text);
    assert!(
        samples_of(&samples, "tenantctl_last_success_timestamp_seconds")
            .iter()
            .all(|s| s.labels["command"] != "upgrade"),
        "no upgrade has run yet: {text}"
    );
    // The command prints the same text; the service adds its own requests after it.
    let printed = t.run(&["metrics"]).expect(0).stdout.clone();
    assert_eq!(printed, fleet_part(&text));
    let text = fleet_part(&text).to_string();
    // --textfile writes it, and nothing else, into the directory.
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("tenantctl.prom");
    t.run(&["metrics", "--textfile", file.to_str().unwrap()])
        .expect(0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    assert_eq!(files_in(out.path()), ["tenantctl.prom"]);

    // An upgrade that writes the textfile after its run.
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let up_file = out.path().join("upgrade.prom");
    t.run(&[
        "upgrade",
        "--all",
        "--metrics-textfile",
        up_file.to_str().unwrap(),
    ])
    .expect(0);
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(files_in(out.path()), ["tenantctl.prom", "upgrade.prom"]);
    let up_text = std::fs::read_to_string(&up_file).unwrap();
    let samples = assert_counts(&db, 2, &up_text);
    let success: Vec<&Sample> = samples_of(&samples, "tenantctl_last_success_timestamp_seconds")
        .into_iter()
        .filter(|s| s.labels["command"] == "upgrade")
        .collect();
    assert_eq!(success.len(), 1, "{up_text}");
    assert!(
        success[0].value >= before - 1.0 && success[0].value <= after + 1.0,
        "the upgrade's success time {} is not between {before} and {after}",
        success[0].value
    );
    let last_run: Vec<&Sample> = samples_of(&samples, "tenantctl_last_run_timestamp_seconds")
        .into_iter()
        .filter(|s| s.labels["command"] == "upgrade")
        .collect();
    assert_eq!(last_run.len(), 1, "{up_text}");
    assert_eq!(last_run[0].labels["result"], "ok");
    assert_eq!(last_run[0].value, success[0].value);
    // Rewriting the textfile replaces it whole, leaving nothing beside it.
    t.run(&["metrics", "--textfile", file.to_str().unwrap()])
        .expect(0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), up_text);
    assert_eq!(files_in(out.path()), ["tenantctl.prom", "upgrade.prom"]);
    // The service sees the same registry and ledger.
    assert_eq!(
        fleet_part(&s.get_anon("/metrics").expect(200).body),
        up_text
    );
    assert_truth(&db, "met-prov", "active");
}

/// `GET /healthz` when the registry does not answer.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Unhealthy {
    status: String,
    detail: String,
}

#[test]
fn a_registry_that_does_not_answer_is_503_and_the_service_recovers() {
    let db = TestDb::new();
    let (url, password) = url_with_password(&db);
    let t = support::bare().url(&url).migrations(&example_migrations());
    t.run(&["init"]).expect(0);
    create(&t, "down-one", &["--migrate"]);
    let s = start(&t);
    s.get("/api/tenants").expect(200);
    s.get_anon("/healthz").expect(200);

    // No new connections, and the service's own ones closed.
    let before = snapshot(&db);
    let mut c = postgres::Client::connect(&support::admin_url(), postgres::NoTls).unwrap();
    c.batch_execute(&format!(
        "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS false",
        db.name
    ))
    .unwrap();
    c.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
        &[&db.name],
    )
    .unwrap();
    let h = s.get_anon("/healthz");
    h.expect(503);
    let u: Unhealthy = h.json();
    assert_eq!(u.status, "unavailable");
    assert!(!u.body_names_a_tenant(&["down-one"]), "{u:?}");
    for path in [
        "/api/tenants",
        "/api/fleet/status",
        "/api/tenants/down-one/migration-status",
    ] {
        let r = s.get(path);
        r.expect(503);
        r.json::<Detail>();
    }
    let r = s.post(
        "/api/tenants/",
        &json!({"tenant_name": "Later", "domain": "later"}),
    );
    r.expect(503);
    r.json::<Detail>();
    s.get_anon("/metrics").expect(503);

    // Back: nothing changed meanwhile, and the same service answers again.
    c.batch_execute(&format!(
        "ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true",
        db.name
    ))
    .unwrap();
    assert_eq!(snapshot(&db), before);
    s.get_anon("/healthz").expect(200);
    let listing: Listing = s.get("/api/tenants").expect(200).json();
    assert_eq!(listing.summary.total, 1);
    let stderr = s.child.stderr();
    assert!(!stderr.contains(&password), "{stderr}");
    assert!(!h.body.contains(&password), "{}", h.body);
}

impl Unhealthy {
    /// Whether the answer names one of these tenants.
    fn body_names_a_tenant(&self, domains: &[&str]) -> bool {
        domains.iter().any(|d| self.detail.contains(d))
    }
}

#[test]
fn serve_refuses_to_start_without_a_usable_token_or_address() {
    let (_db, t) = ready();
    let listen = ["serve", "--listen", "127.0.0.1:0"];
    let r = t.run(&listen);
    checks::expect_error(&r, 3, &["TENANTCTL_API_TOKEN"]);
    for bad in ["short-token", "with a space inside it", "   "] {
        let r = t.clone().env("TENANTCTL_API_TOKEN", bad).run(&listen);
        r.expect(3);
        assert!(
            bad.trim().is_empty() || !r.stderr.contains(bad),
            "the refused token is printed: {}",
            r.stderr
        );
    }
    // A port that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let r = t
        .clone()
        .env("TENANTCTL_API_TOKEN", TOKEN)
        .run(&["serve", "--listen", &addr]);
    checks::expect_error(&r, 3, &[&addr]);
    assert!(!r.stderr.contains(TOKEN), "{}", r.stderr);
}

/// What another page of the same site can make a browser send: the dashboard's cookie,
/// on a POST without the bearer header. It opens pages and reads, and changes nothing.
#[test]
fn the_dashboard_cookie_reads_but_never_changes_anything() {
    let (db, t) = ready();
    let s = start(&t);
    let signed_in = s.call("GET", &format!("/?token={TOKEN}"), &[], None);
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let cookie = signed_in
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a cookie")
        .to_string();
    assert_eq!(s.call("GET", "/", &[("Cookie", &cookie)], None).status, 200);
    assert_eq!(
        s.call("GET", "/api/tenants", &[("Cookie", &cookie)], None)
            .status,
        200
    );
    let before = snapshot(&db);
    for (path, body) in [
        ("/api/tenants/", r#"{"tenant_name":"Csrf","domain":"csrf"}"#),
        ("/api/fleet/upgrade", "{}"),
        ("/api/tenants/run-migrations", r#"{"tenant_id":"csrf"}"#),
    ] {
        for content_type in ["application/json", "text/plain"] {
            let r = s.call(
                "POST",
                path,
                &[
                    ("Cookie", &cookie),
                    ("Content-Type", content_type),
                    ("Origin", "http://evil.example"),
                ],
                Some(body.as_bytes()),
            );
            assert_eq!(r.status, 401, "{path} with the cookie only: {}", r.body);
        }
    }
    assert_eq!(snapshot(&db), before, "nothing changed");
    // The bearer scheme is case-insensitive (RFC 7235).
    let lower = format!("bearer {TOKEN}");
    assert_eq!(
        s.call("GET", "/api/tenants", &[("Authorization", &lower)], None)
            .status,
        200
    );
    // Migrating without a schema is refused, not guessed.
    let r = s.post(
        "/api/tenants/",
        &serde_json::json!({"tenant_name": "N", "domain": "n", "provision_schema": false, "run_migrations": true}),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(snapshot(&db), before, "nothing changed");
}

/// A bulk run in which no tenant needed work still counts as the command's last success,
/// so "no successful upgrade in N hours" does not fire on a quiet fleet.
#[test]
fn a_run_with_nothing_to_do_is_the_last_success() {
    let (db, t) = ready();
    t.run(&["tenant", "create", "quiet", "--name", "Quiet", "--migrate"])
        .expect(0);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let run = t.run(&["upgrade", "--all", "-o", "json"]);
    run.expect(0);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["summary"]["up_to_date"], 1, "{}", run.stdout);
    let row = db
        .client()
        .query_one(
            "SELECT command, result, up_to_date FROM public.tenant_runs WHERE run_id::text = $1",
            &[&report["run_id"].as_str().unwrap()],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, i32>(2)
        ),
        ("upgrade".to_string(), "ok".to_string(), 1)
    );
    let text = t.run(&["metrics"]).expect(0).stdout.clone();
    let at: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("tenantctl_last_success_timestamp_seconds{command=\"upgrade\"} ")
        })
        .unwrap_or_else(|| panic!("no last success for upgrade:\n{text}"))
        .parse()
        .unwrap();
    assert!(at >= before - 1.0, "{at} is before the run ({before})");
}

/// Drift is a gauge by server, the same from the service and the command line: a
/// tenant whose applied history was edited by hand counts once, on its server; without
/// readable migration files the series is absent (unknown), not 0.
#[test]
fn drifted_tenants_are_counted_by_server() {
    let (db, t) = ready();
    for domain in ["kept", "edited"] {
        t.run(&["tenant", "create", domain, "--name", domain, "--migrate"])
            .expect(0);
    }
    let drifted = |text: &str| -> Vec<(String, f64)> {
        parse_metrics(text)
            .into_iter()
            .filter(|s| s.name == "tenantctl_tenants_drifted")
            .map(|s| (s.labels["server"].clone(), s.value))
            .collect()
    };
    let s = start(&t);
    assert_eq!(
        drifted(&s.get_anon("/metrics").body),
        [("default".to_string(), 0.0)]
    );
    db.client()
        .execute(
            "UPDATE tenant_edited.refinery_schema_history SET checksum = '1' WHERE version = 1",
            &[],
        )
        .unwrap();
    let served = s.get_anon("/metrics");
    served.expect(200);
    assert_eq!(drifted(&served.body), [("default".to_string(), 1.0)]);
    let printed = t.run(&["metrics"]).expect(0).stdout.clone();
    assert_eq!(drifted(&printed), [("default".to_string(), 1.0)]);
    let unknown = t
        .clone()
        .env("TENANTCTL_MIGRATIONS", "/nonexistent/migrations")
        .run(&["metrics"]);
    unknown.expect(0);
    assert!(drifted(&unknown.stdout).is_empty(), "{}", unknown.stdout);
}

/// A client that opens a connection and never finishes its request headers is cut off,
/// unanswered, and does not keep the service from stopping: another connection that never
/// sent anything is open at the SIGTERM, and the service stops without waiting out its
/// grace for it. Nothing here is timed but the hang guards ([`DEADLINE`], the run's own).
#[test]
fn a_connection_that_never_finishes_its_headers_is_closed() {
    use std::io::{Read, Write};
    let (_db, t) = ready();
    let s = start(&t);
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut stuck = std::net::TcpStream::connect(&addr).unwrap();
    stuck
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A hang guard: the service closes the connection at its header timeout.
    stuck.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut answer = Vec::new();
    let read = stuck.read_to_end(&mut answer);
    assert!(
        read.is_ok(),
        "the connection was not closed within {} s: {read:?}",
        DEADLINE.as_secs()
    );
    assert!(
        !answer.starts_with(b"HTTP/1.1 2"),
        "the unfinished request was served: {}",
        String::from_utf8_lossy(&answer)
    );
    // Other clients are served meanwhile, and a stuck connection does not hold the stop.
    // The service accepts connections in order: `other` is one of its open connections
    // by the time /healthz is answered.
    let other = std::net::TcpStream::connect(&addr).unwrap();
    assert_eq!(s.get_anon("/healthz").status, 200);
    let Server { child, .. } = s;
    child.signal("TERM");
    let out = child.finish();
    out.expect(0);
    // The service's last log line says it stopped. The command line's note on the
    // signal comes from another task and may be written before or after it.
    assert!(
        out.stderr
            .lines()
            .rfind(|l| !l.starts_with("stopping: no new tenants"))
            .is_some_and(|l| l.ends_with(" stopped")),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("connections still open"),
        "the stop waited out its grace for a connection that never sent a request:\n{}",
        out.stderr
    );
    drop(other);
}

#[test]
fn revision_targets_answer_as_the_command_line_does() {
    let (db, t) = ready();
    create(&t, "high", &["--migrate"]);
    create(&t, "mid", &["--migrate", "--target", "3"]);
    create(&t, "base-one", &["--migrate", "--target", "1"]);
    let head = head_of(&example_migrations());
    let s = start(&t);
    let post = |body: Value| s.post("/api/tenants/run-migrations", &body);
    let refused_entry = |domain: &str| {
        let e = checks::ledger(&db, domain).pop().expect("a ledger entry");
        assert_eq!(e.status, "refused", "{e:?}");
        e.error.unwrap()
    };

    // An upgrade to a target below the revision: the command line's refusal, as a 409,
    // the row as it was and the refusal in the ledger.
    let row = checks::stored_row(&db, "high");
    let cli = t.run(&["upgrade", "--tenant", "high", "4", "-o", "json"]);
    cli.expect(1);
    let cli: RunReport = cli.json();
    let cli_error = cli.of("high").error.clone().unwrap();
    let d: Detail = post(json!({"tenant_id": "high", "target_revision": 4}))
        .expect(409)
        .json();
    assert!(d.detail.contains(&cli_error), "{} vs {cli_error}", d.detail);
    assert!(d.detail.contains("force"), "{}", d.detail);
    assert_eq!(checks::stored_row(&db, "high"), row);
    assert!(refused_entry("high").contains("downgrade"));
    assert_eq!(history_versions(&db, "tenant_high"), upto(head));

    // "+1": one above the tenant's own revision.
    let m: Changed = post(json!({"tenant_id": "mid", "target_revision": "+1"}))
        .expect(200)
        .json();
    assert_eq!(
        (m.from_revision, m.to_revision, m.applied.clone()),
        (Some(3), Some(4), vec![4])
    );
    // "-1" is a downgrade: 409 without force, one below the revision with it.
    let row = checks::stored_row(&db, "mid");
    let d: Detail = post(json!({"tenant_id": "mid", "target_revision": "-1"}))
        .expect(409)
        .json();
    assert!(d.detail.contains("force"), "{}", d.detail);
    assert_eq!(checks::stored_row(&db, "mid"), row);
    let m: Changed = post(json!({"tenant_id": "mid", "target_revision": "-1", "force": true}))
        .expect(200)
        .json();
    assert_eq!(
        (m.from_revision, m.to_revision, m.applied.clone()),
        (Some(4), Some(3), vec![4])
    );
    assert_eq!(history_versions(&db, "tenant_mid"), upto(3));
    // Past head or past base: the command line's refusal, 409, nothing changed.
    let row = checks::stored_row(&db, "high");
    post(json!({"tenant_id": "high", "target_revision": "+1"})).expect(409);
    assert_eq!(checks::stored_row(&db, "high"), row);
    assert!(refused_entry("high").contains("head"));
    let row = checks::stored_row(&db, "base-one");
    post(json!({"tenant_id": "base-one", "target_revision": "-2", "force": true})).expect(409);
    assert_eq!(checks::stored_row(&db, "base-one"), row);
    assert!(refused_entry("base-one").contains("base"));
    assert_eq!(history_versions(&db, "tenant_base_one"), [1]);

    // Malformed targets are 422 on both endpoints, as they are exit 2 on the command line.
    let before = snapshot(&db);
    for v in [
        json!("+0"),
        json!("-0"),
        json!("++1"),
        json!("+-1"),
        json!("+99999999999"),
        json!("-99999999999"),
        json!("head+1"),
        json!("head-1"),
        json!(" +1"),
        json!("+1 "),
        json!("+"),
        json!("-"),
        json!(format!("+{}", head + 1)),
        json!(-1),
        json!(-4),
    ] {
        let r = post(json!({"tenant_id": "mid", "target_revision": v, "force": true}));
        assert_eq!(r.status, 422, "run-migrations {v}: {}", r.body);
        let r = s.post("/api/fleet/upgrade", &json!({"target_revision": v}));
        assert_eq!(r.status, 422, "fleet upgrade {v}: {}", r.body);
    }
    // A fleet upgrade never goes down.
    let r = s.post("/api/fleet/upgrade", &json!({"target_revision": "-1"}));
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("downgrade"), "{}", r.body);
    assert_eq!(snapshot(&db), before);

    // A fleet upgrade by +1: each tenant one above its own revision; the one at head is
    // skipped, as `upgrade --all +1` skips it.
    let started: RunStarted = s
        .post("/api/fleet/upgrade", &json!({"target_revision": "+1"}))
        .expect(202)
        .json();
    let v = s.finished_run(&started.run_id);
    assert_eq!(v.error, None, "{v:#?}");
    assert_eq!(
        (
            v.summary.total,
            v.summary.ok,
            v.summary.skipped,
            v.summary.failed
        ),
        (3, 2, 1, 0),
        "{v:#?}"
    );
    assert_eq!(history_versions(&db, "tenant_mid"), upto(4));
    assert_eq!(history_versions(&db, "tenant_base_one"), upto(2));
    assert_eq!(history_versions(&db, "tenant_high"), upto(head));
    for d in ["high", "mid", "base-one"] {
        assert_truth(&db, d, "active");
    }
}

#[test]
fn a_body_with_a_duplicate_key_is_refused_on_every_route_that_takes_one() {
    let (db, t) = ready();
    create(&t, "gamma", &["--provision"]);
    create(&t, "delta", &["--migrate"]);
    let s = start(&t);
    let raw = |text: &str| Some(text.as_bytes().to_vec());
    let cases = vec![
        case(
            "create: domain twice",
            "POST",
            "/api/tenants/",
            raw(r#"{"tenant_name": "Dup", "domain": "dup-one", "domain": "dup-two"}"#),
            422,
        ),
        case(
            "create: the second spelled with an escape",
            "POST",
            "/api/tenants/",
            raw(r#"{"tenant_name": "Dup", "domain": "dup-one", "\u0064omain": "dup-two"}"#),
            422,
        ),
        case(
            "create: a flag twice",
            "POST",
            "/api/tenants/",
            raw(
                r#"{"tenant_name": "Dup", "domain": "dup-three", "provision_schema": false, "provision_schema": true}"#,
            ),
            422,
        ),
        case(
            "provision: tenant_id twice",
            "POST",
            "/api/tenants/provision-schema",
            raw(r#"{"tenant_id": "gamma", "tenant_id": "delta", "force_recreate": true}"#),
            422,
        ),
        case(
            "run-migrations: force twice",
            "POST",
            "/api/tenants/run-migrations",
            raw(r#"{"tenant_id": "delta", "target_revision": 0, "force": false, "force": true}"#),
            422,
        ),
        case(
            "run-migrations: target twice",
            "POST",
            "/api/tenants/run-migrations",
            raw(r#"{"tenant_id": "gamma", "target_revision": 1, "target_revision": "head"}"#),
            422,
        ),
        case(
            "fleet upgrade: concurrency twice",
            "POST",
            "/api/fleet/upgrade",
            raw(r#"{"concurrency": 1, "concurrency": 2}"#),
            422,
        ),
        case(
            "a duplicate key nested in a value",
            "POST",
            "/api/tenants/run-migrations",
            raw(r#"{"tenant_id": "gamma", "target_revision": {"v": 1, "v": 2}}"#),
            422,
        ),
        case(
            "a duplicate key deep in an array",
            "POST",
            "/api/fleet/upgrade",
            raw(r#"{"target_revision": [[{"a": {"b": 1, "b": 1}}]]}"#),
            422,
        ),
    ];
    refused(&db, &s, &cases);
    // Each says which key was given twice.
    for c in &cases {
        let r = s.call(
            c.method,
            &c.path,
            &[
                ("Authorization", &format!("Bearer {TOKEN}")),
                ("Content-Type", "application/json"),
            ],
            c.body.as_deref(),
        );
        assert!(r.body.contains("duplicate"), "{}: {}", c.label, r.body);
    }
    // The same bodies without the duplicate still work.
    s.post(
        "/api/tenants/",
        &json!({"tenant_name": "Dup", "domain": "dup-one", "provision_schema": false}),
    )
    .expect(201);
}

#[test]
fn with_cookie_secure_the_dashboards_cookie_is_sent_over_https_only() {
    let (_db, t) = ready();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.toml");
    std::fs::write(&file, "[serve]\ncookie_secure = true\n").unwrap();
    let t = t.env("TENANTCTL_CONFIG", file.to_str().unwrap());
    let s = start(&t);
    let login = s.get_anon(&format!("/?token={TOKEN}"));
    login.expect(303);
    let cookie = login.header("set-cookie").expect("a cookie").to_string();
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
    assert!(attrs.contains(&"Secure"), "{cookie}");
    assert!(attrs.contains(&"Max-Age=43200"), "{cookie}");
}
