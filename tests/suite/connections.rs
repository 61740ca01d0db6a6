//! Connection pressure: a role whose `CONNECTION LIMIT` leaves fewer slots than
//! `--concurrency` asks for. A bulk run waits for slots while its other sessions make
//! progress (two held inside a migration by a gate the test holds, with the role at its
//! limit, until a proxy in front of the server has seen the refused sessions keep asking
//! past their connect timeout) and finishes every tenant; tenant sessions that cannot connect at all are
//! reported failed in the results, and nothing is written about them to the registry or
//! the run ledger (they were never touched).

use crate::{checks, common_json, support};
use checks::{assert_truth, create, history_versions};
use common_json::RunReport;
use support::{admin_url, dir_with, tenantctl, wait_at, Gate, Proxy, Tenantctl, TestDb};

/// The gate the second migration waits at.
const GATE: i64 = 7003;

/// How many sessions `role` has on the server now.
fn connections_of(role: &Role) -> i64 {
    admin()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
            &[&role.name],
        )
        .unwrap()
        .get(0)
}

/// How many tenants have V2 applied (its table committed).
fn past_v2(db: &TestDb) -> i64 {
    db.client()
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = 'two' AND n.nspname LIKE 'tenant\\_%'",
            &[],
        )
        .unwrap()
        .get(0)
}

/// A login role of the test's own (roles are server-wide), dropped after its database;
/// not a superuser.
pub(crate) struct Role {
    pub(crate) name: String,
}

impl Role {
    pub(crate) fn create(limit: i32) -> Role {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("tenantctl_conn_{}_{n}", std::process::id());
        admin()
            .batch_execute(&format!(
                "CREATE ROLE \"{name}\" LOGIN PASSWORD 'pw-s3cret' CONNECTION LIMIT {limit}"
            ))
            .unwrap_or_else(|e| panic!("cannot create role {name}: {e}"));
        Role { name }
    }

    fn limit(&self, limit: i32) {
        admin()
            .batch_execute(&format!(
                "ALTER ROLE \"{}\" CONNECTION LIMIT {limit}",
                self.name
            ))
            .unwrap();
    }

    /// Makes the role own `db` (and so its `public` schema, where the registry goes).
    pub(crate) fn owns(&self, db: &TestDb) {
        admin()
            .batch_execute(&format!(
                "ALTER DATABASE \"{}\" OWNER TO \"{}\"",
                db.name, self.name
            ))
            .unwrap();
    }

    /// `db.url` with this role (and its password) as the user.
    pub(crate) fn url(&self, db: &TestDb) -> String {
        let scheme = db.url.find("://").unwrap() + 3;
        let at = db
            .url
            .find('@')
            .expect("the test database URL names a user");
        format!(
            "{}{}:pw-s3cret{}",
            &db.url[..scheme],
            self.name,
            &db.url[at..]
        )
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        if let Ok(mut a) = postgres::Client::connect(&admin_url(), postgres::NoTls) {
            let _ = a.batch_execute(&format!("DROP ROLE IF EXISTS \"{}\"", self.name));
        }
    }
}

fn admin() -> postgres::Client {
    postgres::Client::connect(&admin_url(), postgres::NoTls).expect("admin connection")
}

fn schema(domain: &str) -> String {
    format!("tenant_{domain}")
}

/// `tenantctl` as `role`, from a directory whose tenants.toml sets a 1 s connect timeout,
/// so a run that gave up on the first refusals would fail within the test.
fn as_role(
    db: &TestDb,
    role: &Role,
    migrations: &std::path::Path,
) -> (Tenantctl, tempfile::TempDir) {
    let cwd = dir_with(&[("tenants.toml", "[database]\nconnect_timeout = \"1s\"\n")]);
    let t = tenantctl(db)
        .migrations(migrations)
        .cwd(cwd.path())
        .env("TENANTCTL_DATABASE_URL", &role.url(db));
    (t, cwd)
}

/// Every ledger entry's (domain, status) for a run, or for all runs with `None`.
fn ledger(db: &TestDb, run_id: Option<&str>) -> Vec<(String, String)> {
    db.client()
        .query(
            "SELECT domain, status FROM public.tenant_events \
             WHERE $1::text IS NULL OR run_id::text = $1 ORDER BY id",
            &[&run_id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Each registry row as stored, in full (status, error, cached columns, updated_at).
fn registry_rows(db: &TestDb) -> Vec<String> {
    db.client()
        .query(
            "SELECT format('%s %s %s %s %s %s %s', domain, status, last_error, schema_provisioned, \
             migrations_applied, current_revision, updated_at) FROM public.tenants ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn a_role_limited_to_3_connections_upgrades_12_tenants_at_concurrency_8_and_marks_none_failed() {
    let role = Role::create(3);
    let db = TestDb::new();
    role.owns(&db);
    let dir = dir_with(&[("V1__one.sql", "CREATE TABLE one (id int);\n")]);
    let (t, _cwd) = as_role(&db, &role, dir.path());
    t.run(&["init"]).expect(0);
    let names: Vec<String> = (1..=12).map(|i| format!("c{i:02}")).collect();
    for d in &names {
        create(&t, d, &["--migrate"]);
    }
    // V2 waits at a gate the test holds: the tenants that got a slot keep it.
    std::fs::write(
        dir.path().join("V2__two.sql"),
        format!("CREATE TABLE two (id int);\n{}", wait_at(GATE)),
    )
    .unwrap();
    let mut gate = Gate::advisory(&db.url, GATE);

    // The run goes through a proxy (which reads the protocol in the clear), and the proxy
    // sees every attempt to connect, refused or not.
    let port: i32 = db
        .client()
        .query_one("SELECT current_setting('port')::int", &[])
        .unwrap()
        .get(0);
    let proxy = Proxy::to(u16::try_from(port).unwrap());
    let proxied = format!(
        "postgres://{}:pw-s3cret@127.0.0.1:{}/{}?sslmode=disable",
        role.name, proxy.port, db.name
    );
    let t = t.env("TENANTCTL_DATABASE_URL", &proxied);

    // The registry connection takes one of the 3 slots: 2 are left for 8 sessions.
    let mut child = t.spawn(&["upgrade", "--all", "--concurrency", "8", "-o", "json"]);
    child.wait_until(
        "two tenants hold the role's last two slots, inside V2",
        || gate.blocked_tenantctl().len() == 2 && connections_of(&role) == 3,
    );
    // From here on, while the gate is held, the server refuses every new connection of
    // the role. The other sessions of the run are refused for as long as it is held: it
    // stays held until the proxy has seen more attempts than the run has tenants, all of
    // them later than the first refusal by twice the 1 s connect timeout. A run that gave
    // up on its refusals after the timeout would make at most one more attempt per
    // tenant by then (a new session makes one). Throughout, the run goes on, the role is
    // at its limit and no other tenant gets through.
    let at_limit = std::time::Instant::now();
    let timeout = std::time::Duration::from_secs(1);
    let late_attempts = || {
        let accepted = proxy.accepted();
        let Some(first) = accepted.iter().find(|a| **a > at_limit) else {
            return 0;
        };
        let late = *first + 2 * timeout;
        accepted.iter().filter(|a| **a > late).count()
    };
    child.wait_until(
        "the refused sessions keep asking for a slot past their connect timeout",
        || {
            assert_eq!(
                (gate.blocked_tenantctl().len(), connections_of(&role)),
                (2, 3),
                "the role's slots changed while the gate was held"
            );
            assert_eq!(past_v2(&db), 0, "a tenant got past the gate");
            late_attempts() > names.len()
        },
    );
    assert_eq!(
        (gate.blocked_tenantctl().len(), connections_of(&role)),
        (2, 3),
        "the role's slots changed while the gate was held"
    );
    assert!(
        child.running(),
        "the run ended while its tenants waited for slots"
    );
    gate.open();
    let run = child.finish();
    run.expect(0);
    let r: RunReport = run.json();
    assert_eq!(
        (r.summary.total, r.summary.ok, r.summary.failed),
        (12, 12, 0),
        "{r:#?}"
    );
    for d in &names {
        let res = r.of(d);
        assert_eq!(
            (res.status.as_str(), res.applied.as_slice()),
            ("ok", &[2][..]),
            "{res:?}"
        );
        assert_eq!(history_versions(&db, &schema(d)), [1, 2], "{d}");
        let row = assert_truth(&db, d, "active");
        assert_eq!(row.current_revision, Some(2), "{d}");
    }
    // Nothing was ever written `failed`: every registry write leaves a ledger entry.
    let entries = ledger(&db, None);
    assert!(
        entries.iter().all(|(_, status)| status == "ok"),
        "{entries:?}"
    );
    assert_eq!(
        ledger(&db, Some(&r.run_id)).len(),
        12,
        "one entry per tenant"
    );
    assert!(!run.stderr.contains("pw-s3cret") && !run.stdout.contains("pw-s3cret"));
}

#[test]
fn tenant_sessions_refused_every_connection_are_reported_failed_and_leave_the_registry_untouched() {
    let role = Role::create(3);
    let db = TestDb::new();
    role.owns(&db);
    let dir = dir_with(&[("V1__one.sql", "CREATE TABLE one (id int);\n")]);
    let (t, _cwd) = as_role(&db, &role, dir.path());
    t.run(&["init"]).expect(0);
    for d in ["r1", "r2", "r3"] {
        create(&t, d, &["--migrate"]);
    }
    create(&t, "r4", &[]); // registered, never provisioned: skipped by --all
    std::fs::write(
        dir.path().join("V2__two.sql"),
        "CREATE TABLE two (id int);\n",
    )
    .unwrap();
    let rows_before = registry_rows(&db);
    let ledger_before = ledger(&db, None);

    // The registry connection takes the only slot; no tenant session can connect.
    role.limit(1);
    let run = t.run(&["upgrade", "--all", "--concurrency", "4", "-o", "json"]);
    run.expect(3);
    let r: RunReport = run.json();
    assert_eq!(
        (r.summary.total, r.summary.failed, r.summary.skipped),
        (4, 3, 1),
        "{r:#?}"
    );
    let server = format!("cannot connect to postgres://{}@", role.name);
    for d in ["r1", "r2", "r3"] {
        let res = r.of(d);
        assert_eq!(res.status, "failed", "{res:?}");
        let e = res.error.as_deref().unwrap_or_default();
        assert!(
            e.contains(&server) && e.contains(&db.name) && e.contains("too many connections"),
            "the error names the server and the reason: {e}"
        );
        assert!(res.applied.is_empty(), "{res:?}");
        assert_eq!(history_versions(&db, &schema(d)), [1], "{d}");
    }
    assert_eq!(r.of("r4").status, "skipped", "{r:#?}");

    // A named tenant: the same, one result.
    let one = t.run(&["upgrade", "--tenant", "r1", "-o", "json"]);
    one.expect(3);
    let r1: RunReport = one.json();
    assert_eq!(r1.of("r1").status, "failed", "{r1:#?}");

    for out in [&run.stdout, &run.stderr, &one.stdout, &one.stderr] {
        assert!(!out.contains("pw-s3cret"), "the password leaked:\n{out}");
    }
    // Not touched, so nothing recorded: not a status, not a cached column, not a ledger row.
    role.limit(3);
    assert_eq!(registry_rows(&db), rows_before);
    assert_eq!(ledger(&db, None), ledger_before);
    for d in ["r1", "r2", "r3"] {
        assert_truth(&db, d, "active");
    }

    // Once the server has slots again, a rerun finishes.
    let r: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    assert_eq!((r.summary.ok, r.summary.failed), (3, 0), "{r:#?}");
    for d in ["r1", "r2", "r3"] {
        assert_eq!(history_versions(&db, &schema(d)), [1, 2], "{d}");
        assert_truth(&db, d, "active");
    }
}
