//! What the registry's tables may hold once they have been changed by hand, and what every
//! command and every route of the service does with it: NULLs where tenantctl has NOT
//! NULL (the constraint dropped), `infinity`, `-infinity` and years past 9999 in its
//! times, values at the edges of their types (int4's largest and smallest, a 1 MB text,
//! ids past 2^53, which JSON consumers in JavaScript cannot hold as numbers), in the
//! registry, the run ledger (`tenant_events`, `tenant_runs`) and the move journal
//! (`tenant_moves`). Each command answers with its documented exit code and each route
//! with its documented status; none panics (exit 101) or drops a connection, and a time
//! is shown as what is stored, never as another time.
//!
//! Another tool's tables (the original service's `tenants`, `alembic_version`) are
//! `adopt_alembic`'s.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common_json::{Events, Listing, RunReport, Shown};
use crate::serve::{start, Server};
use crate::support::{ready, tenantctl, Run, Tenantctl, TestDb, DEADLINE};

/// Runs a batch of SQL on the test database, failing loudly.
fn sql(db: &TestDb, batch: &str) {
    db.client()
        .batch_execute(batch)
        .unwrap_or_else(|e| panic!("{batch}: {e:?}"));
}

/// The first characters of a long output, for a failure message.
fn cut(s: &str) -> String {
    s.chars().take(3000).collect()
}

/// Asserts that a run answered as the README says it may: one of `codes`, never a panic,
/// and (with `-o json`, when it succeeded) exactly one JSON document on stdout.
fn answered(args: &[&str], run: &Run, codes: &[i32]) {
    assert!(
        run.code != 101 && !run.stderr.contains("panicked"),
        "{args:?} panicked:\n{}",
        cut(&run.stderr)
    );
    assert!(
        codes.contains(&run.code),
        "{args:?} exited {}, not one of {codes:?}\nstdout:\n{}\nstderr:\n{}",
        run.code,
        cut(&run.stdout),
        cut(&run.stderr)
    );
    if args.contains(&"json") && run.code == 0 {
        serde_json::from_str::<Value>(&run.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: stdout is not one JSON document ({e}):\n{}",
                cut(&run.stdout)
            )
        });
    }
}

/// Runs `args` and asserts it answered with one of `codes`.
fn check(t: &Tenantctl, args: &[&str], codes: &[i32]) -> Run {
    let run = t.run(args);
    answered(args, &run, codes);
    run
}

/// `GET path`, which must be answered (a dropped connection fails the test in
/// [`Server::get`]) with `status`.
fn route(server: &Server, path: &str, status: u16) -> String {
    let r = server.get(path);
    assert_eq!(
        r.status,
        status,
        "GET {path} answered {}: {}",
        r.status,
        cut(&r.body)
    );
    r.body
}

/// `POST path` with `body`, which must be answered with one of `statuses`.
fn post(server: &Server, path: &str, body: &Value, statuses: &[u16]) -> String {
    let r = server.post(path, body);
    assert!(
        statuses.contains(&r.status),
        "POST {path} {body} answered {}, not one of {statuses:?}: {}",
        r.status,
        cut(&r.body)
    );
    r.body
}

/// The run ids in the ledger.
fn ledger_runs(db: &TestDb) -> Vec<String> {
    db.client()
        .query(
            "SELECT DISTINCT run_id::text FROM public.tenant_events WHERE run_id IS NOT NULL ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The second server `b` (a database of its own) named in a tenants.toml, and tenantctl
/// run from the directory holding it.
fn with_server_b(db: &TestDb, b: &TestDb) -> (Tenantctl, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tenants.toml"),
        format!("[servers.b]\nurl = \"{}\"\n", b.url),
    )
    .unwrap();
    (tenantctl(db).cwd(dir.path()), dir)
}

/// A fleet of four tenants at head (`plain`, `odd`, `moving`, `spare`), one registered and
/// never provisioned (`bare`), and a ledger and run table with rows for all of them.
fn fleet(t: &Tenantctl) {
    t.run(&["init"]).expect(0);
    for d in ["plain", "odd", "moving", "spare"] {
        t.run(&[
            "tenant",
            "create",
            d,
            "--name",
            d,
            "--provision",
            "--migrate",
        ])
        .expect(0);
    }
    t.run(&["tenant", "create", "bare", "--name", "bare"])
        .expect(0);
    t.run(&["upgrade", "--all"]).expect(0);
}

/// NULL in every column of the registry, the ledger, the run table and the move journal
/// whose NOT NULL can be dropped by hand.
const NULLS: &str = "\
    ALTER TABLE public.tenants ALTER tenant_name DROP NOT NULL, ALTER domain DROP NOT NULL, \
        ALTER tenant_type DROP NOT NULL, ALTER schema_name DROP NOT NULL, \
        ALTER schema_provisioned DROP NOT NULL, ALTER migrations_applied DROP NOT NULL, \
        ALTER status DROP NOT NULL, ALTER api_key_hash DROP NOT NULL, \
        ALTER api_key_prefix DROP NOT NULL, ALTER created_at DROP NOT NULL, \
        ALTER updated_at DROP NOT NULL, ALTER server DROP NOT NULL; \
    UPDATE public.tenants SET tenant_name = NULL, tenant_type = NULL, schema_provisioned = NULL, \
        migrations_applied = NULL, status = NULL, api_key_prefix = NULL, created_at = NULL, \
        updated_at = NULL, server = NULL, email = NULL, last_error = NULL, current_revision = NULL \
        WHERE domain = 'odd'; \
    INSERT INTO public.tenants (tenant_name, domain, schema_name, api_key_hash) \
        VALUES (NULL, NULL, NULL, NULL); \
    ALTER TABLE public.tenant_events ALTER run_id DROP NOT NULL, ALTER tenant_id DROP NOT NULL, \
        ALTER domain DROP NOT NULL, ALTER schema_name DROP NOT NULL, ALTER action DROP NOT NULL, \
        ALTER status DROP NOT NULL, ALTER started_at DROP NOT NULL, \
        ALTER finished_at DROP NOT NULL, ALTER db_user DROP NOT NULL; \
    UPDATE public.tenant_events SET tenant_id = NULL, domain = NULL, schema_name = NULL, \
        action = NULL, status = NULL, started_at = NULL, finished_at = NULL, db_user = NULL, \
        client_host = NULL, client_addr = NULL, from_revision = NULL, to_revision = NULL \
        WHERE id = (SELECT max(id) FROM public.tenant_events WHERE domain = 'odd'); \
    INSERT INTO public.tenant_events (run_id, tenant_id, domain, schema_name, action, status, \
        started_at, finished_at, db_user, client_host, client_addr) \
        VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL); \
    ALTER TABLE public.tenant_runs ALTER command DROP NOT NULL, ALTER started_at DROP NOT NULL, \
        ALTER finished_at DROP NOT NULL, ALTER total DROP NOT NULL, ALTER ok DROP NOT NULL, \
        ALTER up_to_date DROP NOT NULL, ALTER failed DROP NOT NULL, ALTER skipped DROP NOT NULL, \
        ALTER result DROP NOT NULL; \
    UPDATE public.tenant_runs SET command = NULL, started_at = NULL, finished_at = NULL, \
        total = NULL, ok = NULL, up_to_date = NULL, failed = NULL, skipped = NULL, result = NULL, \
        client_host = NULL; \
    INSERT INTO public.tenant_runs (run_id) VALUES (gen_random_uuid()); \
    ALTER TABLE public.tenant_moves ALTER from_server DROP NOT NULL, \
        ALTER to_server DROP NOT NULL, ALTER schema_name DROP NOT NULL, \
        ALTER keep_source DROP NOT NULL, ALTER phase DROP NOT NULL, \
        ALTER started_at DROP NOT NULL, ALTER updated_at DROP NOT NULL; \
    INSERT INTO public.tenant_moves (tenant_id) SELECT id FROM public.tenants WHERE domain = 'moving';";

/// `infinity`, `-infinity` and the years at PostgreSQL's limits in every time; int4's
/// largest and smallest in every integer; 1 MB texts; ids past 2^53; a move journal in a
/// phase no tenantctl writes.
const EDGES: &str = "\
    UPDATE public.tenants SET created_at = 'infinity', updated_at = '-infinity', \
        current_revision = 2147483647, tenant_name = repeat('n', 1048576), \
        last_error = repeat('e', 1048576), email = repeat('m', 1048576) WHERE domain = 'odd'; \
    UPDATE public.tenants SET created_at = '294276-12-31 23:59:59.999999+00', \
        updated_at = '4713-01-01 00:00:00+00 BC', current_revision = -2147483648 \
        WHERE domain = 'spare'; \
    INSERT INTO public.tenants (id, tenant_name, domain, schema_name, api_key_hash, api_key_prefix, \
        current_revision, schema_provisioned, status) OVERRIDING SYSTEM VALUE \
        VALUES (9007199254740993, 'Big', 'big-id', 'tenant_big_id', repeat('a', 64), 'tk_big', \
                2147483647, true, 'failed'); \
    INSERT INTO public.tenant_events (id, run_id, tenant_id, domain, schema_name, action, \
        from_revision, to_revision, status, error, started_at, finished_at, client_host) \
        OVERRIDING SYSTEM VALUE \
        VALUES (9007199254740995, gen_random_uuid(), 9007199254740993, 'big-id', 'tenant_big_id', \
                'upgrade', 2147483647, -2147483648, 'failed', repeat('x', 1048576), '-infinity', \
                'infinity', repeat('h', 1048576)); \
    UPDATE public.tenant_events SET finished_at = '294276-12-31 23:59:59.999999+00', \
        started_at = '4714-11-24 00:00:00+00 BC' WHERE domain = 'spare'; \
    UPDATE public.tenant_events SET finished_at = 'infinity' WHERE domain = 'plain'; \
    UPDATE public.tenant_runs SET finished_at = 'infinity', started_at = '-infinity', \
        total = 2147483647, ok = 2147483647, up_to_date = -2147483648, failed = 2147483647, \
        skipped = 2147483647, command = repeat('c', 2000); \
    ALTER TABLE public.tenant_moves DROP CONSTRAINT tenant_moves_phase_check; \
    INSERT INTO public.tenant_moves (tenant_id, from_server, to_server, schema_name, keep_source, phase) \
        SELECT id, 'default', 'b', schema_name, false, 'paused' FROM public.tenants WHERE domain = 'moving';";

/// Every command that reads the registry, the ledger, the run table or the move journal,
/// and every route of the service, on a registry changed by `poison`; `odd` is the tenant
/// whose row it changed most, `id` a reference to a tenant by id, which has a schema name
/// unless `schemaless` (then every change to it is refused: exit 1, 409).
fn sweep(poison: &str, odd: &str, id: &str, schemaless: bool) {
    // What a change to the `id` tenant, a bulk run (which includes it) and a copy of `odd`
    // (whose type is NULL with the schemaless one) answer.
    let (refused, conflict, copy) = if schemaless { (1, 409, 2) } else { (0, 200, 0) };
    // A bulk run refuses `moving`, whose move journal row says a move is unfinished.
    let bulk = 4;
    let db = TestDb::new();
    let b = TestDb::new();
    // The fleet is made before server `b` is configured: every tenant is on `default`.
    fleet(&tenantctl(&db));
    let (t, _config) = with_server_b(&db, &b);
    sql(&db, poison);
    let runs = ledger_runs(&db);
    assert!(!runs.is_empty());
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("odd.tenant");
    let archive = archive.to_str().unwrap();
    let backups = work.path().join("backups");
    let backups = backups.to_str().unwrap();

    // What reads the cached columns and the ledger as they are, before any command
    // refreshes them: the metrics and the service's pages.
    check(&t, &["metrics"], &[0]);
    let server = start(&t.clone().env("TENANTCTL_READ_TIMEOUT", "30s"));
    for path in [
        "/metrics",
        "/healthz",
        "/",
        "/api/tenants",
        "/api/fleet/status",
    ] {
        route(&server, path, 200);
    }
    for reference in [odd, id, "plain", "moving"] {
        route(&server, &format!("/tenants/{reference}"), 200);
        route(
            &server,
            &format!("/api/tenants/{reference}/migration-status"),
            200,
        );
    }
    for run in &runs {
        route(&server, &format!("/api/runs/{run}"), 200);
    }

    // Reads.
    for args in [
        &["tenant", "list"][..],
        &["tenant", "list", "-o", "json"],
        &["tenant", "list", "--status", "pending"],
        &["tenant", "show", odd],
        &["tenant", "show", odd, "-o", "json"],
        &["tenant", "show", id, "-o", "json"],
        &["status", "--all"],
        &["status", "--all", "-o", "json"],
        &["status", "--tenant", odd, "-o", "json"],
        &["current"],
        &["current", "-o", "json"],
        &["history", "--tenant", odd],
        &["events"],
        &["events", "-o", "json"],
        &["events", "--tenant", odd, "-o", "json"],
        &["events", "--tenant", id],
        &["events", "--failed"],
        &["metrics"],
        &["config", "show"],
        &["init"],
    ] {
        check(&t, args, &[0]);
    }
    for run in &runs {
        check(&t, &["events", "--run", run, "-o", "json"], &[0]);
    }
    // The documents keep their shapes, and an id past 2^53 is written exactly.
    let listed = check(&t, &["tenant", "list", "-o", "json"], &[0]);
    let listing: Listing = listed.json();
    assert!(
        listing.tenants.iter().any(|x| x.id.to_string() == id),
        "{}",
        cut(&listed.stdout)
    );
    assert!(listed.stdout.contains(&format!("\"id\": {id},")));
    let _: Shown = check(&t, &["tenant", "show", id, "-o", "json"], &[0]).json();
    let _: Events = check(&t, &["events", "-o", "json"], &[0]).json();
    // Drift: the tenants that are not at head, the one without a schema.
    check(&t, &["check"], &[5]);

    // Dry runs: the tenant without a schema would be skipped, the others are planned.
    for args in [
        &["upgrade", "--all", "--dry-run"][..],
        &["provision", "--all", "--dry-run"],
        &["stamp", "--all", "head", "--dry-run"],
        &["downgrade", "--all", "base", "--dry-run"],
        &["tenant", "drop", odd, "--dry-run"],
        &["tenant", "drop", id, "--dry-run"],
    ] {
        check(&t, args, &[0]);
    }
    // The unreadable move journal is refused, naming the table.
    let run = check(
        &t,
        &["tenant", "move", "moving", "--to", "b", "--dry-run"],
        &[3],
    );
    assert!(run.stderr.contains("tenant_moves"), "{}", run.stderr);
    check(
        &t,
        &["tenant", "move", "moving", "--to", "b", "--yes"],
        &[3],
    );

    // Changes.
    check(&t, &["tenant", "export", odd, "-f", archive], &[0]);
    check(&t, &["backup", "--all", "--out", backups], &[bulk]);
    check(&t, &["provision", "--all"], &[bulk]);
    // An upgrade skips a tenant without a schema name, as one not provisioned, saying so.
    let upgraded: RunReport = check(&t, &["upgrade", "--all", "-o", "json"], &[bulk]).json();
    let without = upgraded.results.iter().find(|r| r.schema_name.is_empty());
    assert_eq!(without.is_some(), schemaless, "{upgraded:#?}");
    if let Some(r) = without {
        assert_eq!(r.status, "skipped");
        assert!(
            r.error.as_deref().unwrap_or("").contains("no schema name"),
            "{r:?}"
        );
    }
    check(&t, &["stamp", "--tenant", odd, "head", "--yes"], &[0]);
    check(&t, &["downgrade", "--tenant", odd, "-1", "--yes"], &[0]);
    check(&t, &["upgrade", "--tenant", odd], &[0]);
    check(&t, &["upgrade", "--tenant", id], &[refused]);
    check(&t, &["tenant", "rotate-key", odd], &[0]);
    check(&t, &["tenant", "rotate-key", id], &[0]);
    // A copy of a tenant whose type is NULL (empty) is refused as an invalid type.
    check(
        &t,
        &["tenant", "clone", odd, "cloned", "--name", "Cloned"],
        &[copy],
    );
    check(
        &t,
        &[
            "tenant", "import", archive, "--as", "imported", "--name", "Imported", "--type",
            "standard",
        ],
        &[0],
    );
    check(&t, &["tenant", "restore", odd, archive, "--yes"], &[0]);
    check(
        &t,
        &[
            "tenant",
            "create",
            "fresh",
            "--name",
            "Fresh",
            "--provision",
            "--migrate",
        ],
        &[0],
    );
    check(&t, &["tenant", "move", "spare", "--to", "b", "--yes"], &[0]);

    // The service's changes.
    post(
        &server,
        "/api/tenants/",
        &json!({"tenant_name": "Through the API", "domain": "api-made"}),
        &[201],
    );
    for (reference, status) in [
        (json!(odd), 200),
        (json!(id), conflict),
        (json!("plain"), 200),
    ] {
        post(
            &server,
            "/api/tenants/provision-schema",
            &json!({"tenant_id": reference}),
            &[status],
        );
        post(
            &server,
            "/api/tenants/run-migrations",
            &json!({"tenant_id": reference}),
            &[status],
        );
    }
    // An id as a JSON number, past 2^53 too.
    let number: i64 = id.parse().unwrap();
    post(
        &server,
        "/api/tenants/run-migrations",
        &json!({"tenant_id": number}),
        &[conflict],
    );
    let started: Value =
        serde_json::from_str(&post(&server, "/api/fleet/upgrade", &json!({}), &[202])).unwrap();
    let run_id = started["run_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let view: Value =
            serde_json::from_str(&route(&server, &format!("/api/runs/{run_id}"), 200)).unwrap();
        if view["state"] == "finished" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} never finished: {view}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for path in ["/metrics", "/", "/api/tenants", "/api/fleet/status"] {
        route(&server, path, 200);
    }
    for reference in [odd, id] {
        route(&server, &format!("/tenants/{reference}"), 200);
    }

    // Last, the drops.
    check(&t, &["tenant", "drop", odd, "--yes"], &[0]);
    check(&t, &["tenant", "drop", id, "--yes"], &[refused]);
    check(&t, &["events", "-o", "json"], &[0]);
    check(&t, &["metrics"], &[0]);
}

#[test]
fn nulls_where_tenantctl_has_not_null_never_crash_a_command_or_a_route() {
    sweep(NULLS, "odd", "6", true);
}

#[test]
fn infinite_times_and_values_at_the_edges_of_their_types_never_crash_a_command_or_a_route() {
    sweep(EDGES, "odd", "9007199254740993", false);
}

/// A time the ledger or the registry holds that is not one RFC 3339 writes (`infinity`,
/// a year past 9999 or before 1) or a NULL (its NOT NULL dropped by hand) is shown as it
/// is by `events`, `tenant list`/`show`, `GET /api/runs/{id}` and the dashboard, never as
/// another time, and the duration it would need is null.
#[test]
fn a_time_that_is_not_rfc_3339_or_null_is_shown_as_it_is_everywhere() {
    let (db, t) = ready();
    t.run(&[
        "tenant",
        "create",
        "demo",
        "--name",
        "Demo",
        "--provision",
        "--migrate",
    ])
    .expect(0);
    t.run(&["tenant", "create", "far", "--name", "Far"])
        .expect(0);
    sql(
        &db,
        "UPDATE public.tenant_events SET finished_at = 'infinity' \
             WHERE domain = 'demo' AND action = 'register'; \
         ALTER TABLE public.tenant_events ALTER started_at DROP NOT NULL; \
         UPDATE public.tenant_events SET started_at = NULL \
             WHERE domain = 'demo' AND action <> 'register'; \
         UPDATE public.tenant_events SET started_at = '0044-03-15 12:00:00+00 BC', \
             finished_at = '20000-01-02 03:04:05.5+00' WHERE domain = 'far'; \
         ALTER TABLE public.tenants ALTER updated_at DROP NOT NULL; \
         UPDATE public.tenants SET created_at = '-infinity', updated_at = NULL WHERE domain = 'demo'; \
         UPDATE public.tenants SET created_at = '20000-01-02 03:04:05.5+00', \
             updated_at = '0044-03-15 12:00:00+00 BC' WHERE domain = 'far';",
    );

    let run = t.run(&["events", "-o", "json"]);
    answered(&["events", "-o", "json"], &run, &[0]);
    let ev: Events = run.json();
    let entry = |domain: &str, register: bool| {
        ev.events
            .iter()
            .find(|e| e.domain == domain && (e.action == "register") == register)
            .unwrap_or_else(|| panic!("no entry for {domain}: {ev:#?}"))
            .clone()
    };
    let registered = entry("demo", true);
    assert_eq!(registered.finished_at.as_deref(), Some("infinity"));
    assert!(registered.started_at.is_some());
    assert_eq!(registered.duration_ms, None);
    let provisioned = entry("demo", false);
    assert_eq!(provisioned.started_at, None);
    assert!(provisioned.finished_at.is_some());
    assert_eq!(provisioned.duration_ms, None);
    let far = entry("far", true);
    assert_eq!(
        (far.started_at.as_deref(), far.finished_at.as_deref()),
        (
            Some("0044-03-15T12:00:00Z BC"),
            Some("20000-01-02T03:04:05.5Z")
        )
    );
    assert_eq!(far.duration_ms, None);
    assert!(!run.stdout.contains("1970-01-01"), "{}", run.stdout);
    let text = t.run(&["events"]);
    answered(&["events"], &text, &[0]);
    for shown in ["infinity", "20000-01-02T03:04:05Z"] {
        assert!(text.stdout.contains(shown), "{shown}: {}", text.stdout);
    }

    let listing: Listing = t.run(&["tenant", "list", "-o", "json"]).expect(0).json();
    let times = |domain: &str| {
        let x = listing.tenants.iter().find(|x| x.domain == domain).unwrap();
        (x.created_at.clone(), x.updated_at.clone())
    };
    assert_eq!(times("demo"), (Some("-infinity".into()), None));
    assert_eq!(
        times("far"),
        (
            Some("20000-01-02T03:04:05.5Z".into()),
            Some("0044-03-15T12:00:00Z BC".into())
        )
    );
    let shown = t.run(&["tenant", "show", "far"]).expect(0).stdout.clone();
    assert!(
        shown.contains("20000-01-02T03:04:05Z") && shown.contains("0044-03-15T12:00:00Z BC"),
        "{shown}"
    );
    let _: Shown = t
        .run(&["tenant", "show", "demo", "-o", "json"])
        .expect(0)
        .json();

    // The service: the run from the ledger, the tenant's page and the dashboard answer.
    let server = start(&t);
    for run in ledger_runs(&db) {
        let view: crate::common_json::RunView =
            serde_json::from_str(&route(&server, &format!("/api/runs/{run}"), 200)).unwrap();
        assert_eq!(view.state, "finished");
        assert!(!view.events.is_empty(), "{view:?}");
    }
    let page = route(&server, "/tenants/demo", 200);
    assert!(page.contains("infinity"), "{page}");
    let page = route(&server, "/tenants/far", 200);
    assert!(page.contains("20000-01-02T03:04:05Z"), "{page}");
    let home = route(&server, "/", 200);
    assert!(!home.contains("1970-01-01"), "{home}");
}

/// `metrics` and `GET /metrics` count a tenant whose status is NULL as `unknown` and one
/// whose server is NULL on `default` (as every command reads it); a run whose ledger
/// entries have a NULL status is no success, and one whose end is not a time (NULL,
/// `infinity`) or whose command is NULL counts for nothing.
#[test]
fn metrics_count_a_null_status_as_unknown_and_a_null_server_as_default() {
    let (db, t) = ready();
    for d in ["a", "b", "c"] {
        t.run(&[
            "tenant",
            "create",
            d,
            "--name",
            d,
            "--provision",
            "--migrate",
        ])
        .expect(0);
    }
    t.run(&["downgrade", "--tenant", "c", "-1", "--yes"])
        .expect(0);
    t.run(&["upgrade", "--all"]).expect(0);
    sql(
        &db,
        "ALTER TABLE public.tenants ALTER status DROP NOT NULL, ALTER server DROP NOT NULL; \
         UPDATE public.tenants SET status = NULL WHERE domain = 'a'; \
         UPDATE public.tenants SET server = NULL WHERE domain = 'b'; \
         ALTER TABLE public.tenant_events ALTER status DROP NOT NULL, ALTER action DROP NOT NULL; \
         UPDATE public.tenant_events SET status = NULL WHERE action = 'downgrade'; \
         UPDATE public.tenant_events SET finished_at = 'infinity' WHERE action = 'register'; \
         UPDATE public.tenant_events SET action = NULL WHERE action = 'provision+upgrade' AND domain = 'a'; \
         ALTER TABLE public.tenant_runs ALTER finished_at DROP NOT NULL, ALTER result DROP NOT NULL; \
         UPDATE public.tenant_runs SET finished_at = NULL WHERE command = 'downgrade'; \
         UPDATE public.tenant_runs SET result = NULL, finished_at = 'infinity' WHERE command = 'upgrade';",
    );
    let run = t.run(&["metrics"]);
    answered(&["metrics"], &run, &[0]);
    let server = start(&t);
    let served = route(&server, "/metrics", 200);
    for text in [&run.stdout, &served] {
        for line in [
            "tenantctl_tenants{server=\"default\",status=\"unknown\"} 1\n",
            "tenantctl_tenants{server=\"default\",status=\"active\"} 2\n",
            "tenantctl_tenants{server=\"default\",status=\"pending\"} 0\n",
            "tenantctl_tenants{server=\"default\",status=\"failed\"} 0\n",
            "tenantctl_tenants_behind_head{server=\"default\"} 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing:\n{text}");
        }
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        // Every value is a number Prometheus reads, never an infinity.
        for s in &samples {
            let value = s.rsplit(' ').next().unwrap();
            assert!(
                value.parse::<f64>().is_ok_and(f64::is_finite),
                "{s}\n{text}"
            );
        }
        let has = |prefix: &str| samples.iter().any(|s| s.starts_with(prefix));
        // The downgrade's entry has a NULL status and its run row no end: it ran, and
        // did not succeed.
        assert!(
            has("tenantctl_last_run_timestamp_seconds{command=\"downgrade\",result=\"failed\"}"),
            "{text}"
        );
        assert!(
            !has("tenantctl_last_success_timestamp_seconds{command=\"downgrade\"}"),
            "{text}"
        );
        // Registrations end at infinity: no time to report.
        assert!(
            !has("tenantctl_last_run_timestamp_seconds{command=\"register\""),
            "{text}"
        );
        // The upgrade run's row says nothing usable; its ledger entries still count.
        assert!(
            has("tenantctl_last_success_timestamp_seconds{command=\"provision+upgrade\"}"),
            "{text}"
        );
    }
}

/// A move journal row that cannot be read (a NULL where it has NOT NULL, a phase no
/// tenantctl writes) is refused with exit 3, naming the table, the row and the column,
/// before anything changes: a move is finished or undone from what its row says, never
/// from a guess.
#[test]
fn an_unreadable_move_journal_is_refused_before_anything_changes() {
    let db = TestDb::new();
    let b = TestDb::new();
    let t = tenantctl(&db);
    t.run(&["init"]).expect(0);
    t.run(&[
        "tenant",
        "create",
        "demo",
        "--name",
        "Demo",
        "--provision",
        "--migrate",
    ])
    .expect(0);
    let (t, _config) = with_server_b(&db, &b);
    let journal = |db: &TestDb| -> Vec<String> {
        db.client()
            .query("SELECT m::text FROM public.tenant_moves m", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    for (poison, needles) in [
        (
            "ALTER TABLE public.tenant_moves ALTER phase DROP NOT NULL; \
             INSERT INTO public.tenant_moves (tenant_id, from_server, to_server, schema_name, keep_source, phase) \
                 SELECT id, 'default', 'b', schema_name, false, NULL FROM public.tenants",
            vec!["tenant_moves", "phase is NULL", "WHERE tenant_id = 1"],
        ),
        (
            "ALTER TABLE public.tenant_moves ALTER from_server DROP NOT NULL, ALTER keep_source DROP NOT NULL; \
             INSERT INTO public.tenant_moves (tenant_id, from_server, to_server, schema_name, keep_source, phase) \
                 SELECT id, NULL, 'b', schema_name, NULL, 'switched' FROM public.tenants",
            vec!["tenant_moves", "from_server, keep_source are NULL"],
        ),
        (
            "ALTER TABLE public.tenant_moves DROP CONSTRAINT tenant_moves_phase_check; \
             INSERT INTO public.tenant_moves (tenant_id, from_server, to_server, schema_name, keep_source, phase) \
                 SELECT id, 'default', 'b', schema_name, false, 'paused' FROM public.tenants",
            vec!["tenant_moves", "\"paused\""],
        ),
    ] {
        sql(&db, "DELETE FROM public.tenant_moves");
        sql(&db, poison);
        let before = (
            crate::checks::stored_row(&db, "demo"),
            journal(&db),
            crate::checks::user_schemas(&db),
            crate::checks::user_schemas(&b),
        );
        for extra in [&["--dry-run"][..], &["--yes"]] {
            let mut args = vec!["tenant", "move", "demo", "--to", "b"];
            args.extend_from_slice(extra);
            let run = t.run(&args);
            answered(&args, &run, &[3]);
            crate::checks::expect_error(&run, 3, &needles);
            assert!(run.stderr.contains("nothing was changed"), "{}", run.stderr);
            assert_eq!(
                (
                    crate::checks::stored_row(&db, "demo"),
                    journal(&db),
                    crate::checks::user_schemas(&db),
                    crate::checks::user_schemas(&b),
                ),
                before,
                "{args:?} changed something"
            );
        }
    }
}
