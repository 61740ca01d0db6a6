//! Crash safety, failpoint by failpoint (`src/failpoint.rs`): every phase boundary of an
//! operation that moves, copies or replaces a tenant's data (moves, restores, imports and
//! clones, backups, the adoption of an Alembic fleet) is reached while writers run
//! through the registry as an application would (one single-statement writer, whose
//! foreign-key check locks the referenced table after its own, and one transactional
//! writer that updates the referenced table first, as an ORM does; a new tenant's
//! writers start as soon as the registry lists it); the process is killed there with
//! SIGKILL (armed with `pause`), or made to fail there (armed with `return`); then the
//! same command runs again, and:
//! - the tenant is registered once, on one server, where its schema is;
//! - no acknowledged write is lost or doubled, and no writer ever saw a deadlock;
//! - nothing is left behind: no scratch or fenced schema, schema marked as an import in
//!   progress, replication slot, publication, subscription, prepared transaction,
//!   partial file, or tenantctl session;
//! - the registry's cached columns and the move journal agree with the schemas.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::support::{dir_with, ready, Spawned, Tenantctl, TestDb};

/// Accounts referenced by the writes; an identity and an index to carry.
const SHOP: (&str, &str) = (
    "V1__shop.sql",
    "CREATE TABLE accounts (id int PRIMARY KEY, note text);\n\
     CREATE TABLE writes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, client_id bigint NOT NULL, \
         account_id int NOT NULL REFERENCES accounts (id), body text);\n\
     CREATE INDEX writes_client_id_idx ON writes (client_id);\n",
);

/// How many accounts the writers spread their writes over.
const ACCOUNTS: i64 = 50;

/// The writers' `application_name`, to find them in `pg_stat_activity`.
const APP: &str = "app-writer";

/// What an application's writers do on a tenant's tables (`{s}`: its quoted schema).
#[derive(Debug, Clone, Copy)]
struct App {
    /// Finds the tenant's server and schema by its domain (`$1`).
    lookup: &'static str,
    /// The single-statement writer's write, and the transactional writer's second one:
    /// `$1` the client-made id (bigint), `$2` the referenced row (int).
    insert: &'static str,
    /// The transactional writer's first statement, on the referenced table: `$1` a note,
    /// `$2` the row.
    update: &'static str,
    /// Client id to how many rows carry it, for the ids from `$1` up to `$2`.
    written: &'static str,
}

/// The application of [`SHOP`] tenants.
const SHOP_APP: App = App {
    lookup: "SELECT server, schema_name FROM public.tenants WHERE domain = $1",
    insert: "INSERT INTO {s}.writes (client_id, account_id, body) VALUES ($1, $2, 'written')",
    update: "UPDATE {s}.accounts SET note = $1 WHERE id = $2",
    written: "SELECT client_id, count(*) FROM {s}.writes WHERE client_id >= $1 AND client_id < $2 GROUP BY 1",
};

/// The original Alembic service's application (tests/fixtures/alembic-original): it
/// finds a tenant's schema in the original `tenants` table (which has no `server`: every
/// tenant is on the registry's server) and writes members of its households.
const PARISH_APP: App = App {
    lookup: "SELECT 'default'::text, schema_name::text FROM public.tenants WHERE domain = $1",
    insert: "INSERT INTO {s}.members (household_id, first_name, last_name) VALUES ($2, 'writer', ($1::bigint)::text)",
    update: "UPDATE {s}.households SET name = $1 WHERE id = $2",
    written: "SELECT c, count(*) FROM (SELECT CASE WHEN first_name = 'writer' THEN last_name::bigint END AS c FROM {s}.members) w \
              WHERE c >= $1 AND c < $2 GROUP BY 1",
};

/// How many client ids each writer may use: a writer set starting at `base` uses ids
/// from `base` up to `base + 2 * IDS`.
const IDS: i64 = 1_000_000_000;

/// Where the client ids of the writers of a tenant made by an import or a clone start
/// (those of its source's writers are below).
const NEW_TENANT_IDS: i64 = 10 * IDS;

/// `sql` with `{s}` replaced by `schema`, quoted.
fn on_schema(sql: &str, schema: &str) -> String {
    sql.replace("{s}", &format!("\"{}\"", schema.replace('"', "\"\"")))
}

/// The registry (and server `default`) on the shared test server, throwaway clusters
/// named in tenants.toml, and the migrations.
struct Fleet {
    db: TestDb,
    t: Tenantctl,
    clusters: Vec<(&'static str, Cluster)>,
    config: tempfile::TempDir,
    _migrations: tempfile::TempDir,
}

fn with_app(url: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={APP}")
}

/// A fleet with the registry's server and the named clusters (each with its extra
/// configuration).
fn fleet(servers: &[(&'static str, &str)]) -> Fleet {
    let (db, t) = ready();
    let clusters: Vec<(&'static str, Cluster)> = servers
        .iter()
        .map(|(name, conf)| (*name, Cluster::trusting(conf)))
        .collect();
    let config = tempfile::tempdir().unwrap();
    let toml: String = clusters
        .iter()
        .map(|(name, c)| {
            format!(
                "[servers.{name}]\nurl = \"{}\"\n\n",
                c.url("sslmode=disable")
            )
        })
        .collect();
    std::fs::write(config.path().join("tenants.toml"), toml).unwrap();
    let migrations = dir_with(&[SHOP]);
    let t = t.cwd(config.path()).migrations(migrations.path());
    // The version index on every server, as a fleet has it after `init`.
    t.run(&["init"]).expect(0);
    Fleet {
        db,
        t,
        clusters,
        config,
        _migrations: migrations,
    }
}

impl Fleet {
    /// Each server's URL, by name.
    fn urls(&self) -> HashMap<String, String> {
        let mut urls: HashMap<String, String> = self
            .clusters
            .iter()
            .map(|(n, c)| (n.to_string(), c.url("sslmode=disable")))
            .collect();
        urls.insert("default".into(), self.db.url.clone());
        urls
    }

    fn client(&self, server: &str) -> postgres::Client {
        postgres::Client::connect(&self.urls()[server], postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to server {server}: {e}"))
    }

    /// Creates a tenant on `server`, migrated, with `rows` seed writes (client_id 0).
    fn tenant(&self, domain: &str, server: &str, rows: i64) -> String {
        let run = self.t.run(&[
            "tenant",
            "create",
            domain,
            "--name",
            domain,
            "--server",
            server,
            "--migrate",
            "-o",
            "json",
        ]);
        run.expect(0);
        let v: serde_json::Value = run.json();
        let schema = v["tenant"]["schema_name"].as_str().unwrap().to_string();
        self.client(server)
            .batch_execute(&format!(
                "INSERT INTO \"{schema}\".accounts SELECT g, 'account ' || g FROM generate_series(1, {ACCOUNTS}) g; \
                 INSERT INTO \"{schema}\".writes (client_id, account_id, body) \
                     SELECT 0, 1 + g % {ACCOUNTS}, repeat('seed ', 20) FROM generate_series(1, {rows}) g"
            ))
            .unwrap();
        schema
    }

    /// The tenant's registry rows as (server, schema_name).
    fn registered(&self, domain: &str) -> Vec<(String, String)> {
        self.db
            .client()
            .query(
                "SELECT server, schema_name FROM public.tenants WHERE domain = $1",
                &[&domain],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    fn journal(&self) -> Vec<String> {
        self.db
            .client()
            .query("SELECT phase FROM public.tenant_moves", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Every server's name.
    fn servers(&self) -> Vec<String> {
        let mut names: Vec<String> = self.clusters.iter().map(|(n, _)| n.to_string()).collect();
        names.push("default".into());
        names
    }

    /// Whether `schema` exists on `server`.
    fn has_schema(&self, server: &str, schema: &str) -> bool {
        self.client(server)
            .query_one(
                "SELECT count(*) > 0 FROM pg_namespace WHERE nspname = $1",
                &[&schema],
            )
            .unwrap()
            .get(0)
    }

    /// Nothing an interrupted operation makes is left on any server: no fenced, kept,
    /// scratch or replaced schema, no schema carrying an import's mark (registered or
    /// not), no replication slot, publication, subscription or prepared transaction, and
    /// (once the killed process's sessions have gone) no tenantctl session. Only the
    /// fleet's own database counts: server `default` is shared with other tests.
    fn nothing_left(&self) {
        for server in self.servers() {
            let mut c = self.client(&server);
            let left: Vec<String> = c
                .query(
                    "SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname ~ '\\$(moving|moved_|restoring|replaced)' \
                     UNION ALL SELECT 'marked schema ' || nspname FROM pg_namespace \
                         WHERE obj_description(oid, 'pg_namespace') LIKE 'tenantctl: import in progress%' \
                     UNION ALL SELECT 'slot ' || slot_name FROM pg_replication_slots \
                         WHERE coalesce(database, current_database()) = current_database() \
                     UNION ALL SELECT 'publication ' || pubname FROM pg_publication \
                     UNION ALL SELECT 'subscription ' || subname FROM pg_subscription \
                         WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                     UNION ALL SELECT 'prepared ' || gid FROM pg_prepared_xacts WHERE database = current_database()",
                    &[],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert!(left.is_empty(), "left on server {server}: {left:?}");
            crate::support::eventually(&format!("no tenantctl session on {server}"), || {
                c.query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'tenantctl%' \
                     AND datname = current_database()",
                    &[],
                )
                .unwrap()
                .get::<_, i64>(0)
                    == 0
            });
        }
        assert_eq!(self.journal(), Vec::<String>::new(), "the move journal");
    }

    /// The registry row says what is true of the schema on its server: provisioned, at
    /// the revision its history says, active, no error.
    fn registry_true(&self, domain: &str) {
        let row = self
            .db
            .client()
            .query_one(
                "SELECT server, schema_name, schema_provisioned, current_revision, status, last_error \
                 FROM public.tenants WHERE domain = $1",
                &[&domain],
            )
            .unwrap();
        let (server, schema): (String, String) = (row.get(0), row.get(1));
        let revision: Option<i32> = self
            .client(&server)
            .query_one(
                &format!("SELECT max(version) FROM \"{schema}\".refinery_schema_history"),
                &[],
            )
            .unwrap()
            .get(0);
        assert!(row.get::<_, bool>(2), "{domain}: schema_provisioned");
        assert_eq!(
            row.get::<_, Option<i32>>(3),
            revision,
            "{domain}: current_revision"
        );
        assert_eq!(row.get::<_, String>(4), "active", "{domain}: status");
        assert_eq!(
            row.get::<_, Option<String>>(5),
            None,
            "{domain}: last_error"
        );
        // Whatever the cut left, the version index says what the history tables say.
        let check: serde_json::Value = self.t.run(&["check", "--deep", "-o", "json"]).json();
        let mismatched: Vec<&serde_json::Value> = check["problems"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["kind"] == "index_mismatch")
            .collect();
        assert!(mismatched.is_empty(), "{domain}: {mismatched:#?}");
    }

    /// The writers' rows on `server`: client_id to how many rows carry it.
    fn written(&self, server: &str, schema: &str) -> BTreeMap<i64, i64> {
        self.written_by(&SHOP_APP, server, schema, 0)
    }

    /// The rows of the writers of `app` whose ids start at `base`, in `schema` on
    /// `server`: client_id to how many rows carry it.
    fn written_by(&self, app: &App, server: &str, schema: &str, base: i64) -> BTreeMap<i64, i64> {
        self.client(server)
            .query(
                &on_schema(app.written, schema),
                &[&base.max(1), &(base + 2 * IDS)],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// How many writer sessions wait for a lock on `server`.
    fn writers_waiting(&self, server: &str) -> i64 {
        self.client(server)
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock' \
                 AND datname = current_database()",
                &[&APP],
            )
            .unwrap()
            .get(0)
    }
}

/// What one writer saw.
#[derive(Debug, Default)]
struct Written {
    /// Client ids whose write was acknowledged, and when.
    acked: BTreeMap<i64, Instant>,
    /// Client ids whose write returned an error at least once (it may or may not have
    /// committed when the error came from the commit itself).
    errored: BTreeSet<i64>,
    /// Acknowledged writes per server.
    acked_on: BTreeMap<String, usize>,
    /// Errors that were deadlocks: a fence must never cause one.
    deadlocks: Vec<String>,
    /// Set when a write found no server to take it for 90 s.
    gave_up: Option<String>,
    /// The last error seen.
    last_error: Option<String>,
}

/// Writers for one tenant: each looks the tenant's server up in the registry before
/// every write, connects to it (one cached connection per server), writes a row
/// carrying a client-made id, and on any error looks again and retries the same row.
struct Writers {
    stop: Arc<AtomicBool>,
    seen: Vec<Arc<Mutex<Written>>>,
    handles: Vec<JoinHandle<()>>,
}

impl Writers {
    fn start(f: &Fleet, domain: &str) -> Writers {
        Writers::of(f, domain, SHOP_APP, 0)
    }

    /// Writers of `app` for the tenant `domain`, with client ids from `base` on; they
    /// wait until the registry lists the tenant.
    fn of(f: &Fleet, domain: &str, app: App, base: i64) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut w = Writers {
            stop: stop.clone(),
            seen: Vec::new(),
            handles: Vec::new(),
        };
        for (transactional, first) in [(false, base + 1), (true, base + IDS)] {
            let seen = Arc::new(Mutex::new(Written::default()));
            let urls: HashMap<String, String> = f
                .urls()
                .into_iter()
                .map(|(k, v)| (k, with_app(&v)))
                .collect();
            let registry = with_app(&f.db.url);
            let domain = domain.to_string();
            let (stop, out) = (stop.clone(), seen.clone());
            w.handles.push(std::thread::spawn(move || {
                write(
                    &app,
                    &registry,
                    &urls,
                    &domain,
                    transactional,
                    first,
                    &stop,
                    &out,
                )
            }));
            w.seen.push(seen);
        }
        w
    }

    /// Acknowledged writes so far, on `server` (any server: `None`).
    fn acked_on(&self, server: Option<&str>) -> usize {
        self.seen
            .iter()
            .map(|s| {
                let s = s.lock().unwrap();
                match server {
                    Some(name) => s.acked_on.get(name).copied().unwrap_or(0),
                    None => s.acked.len(),
                }
            })
            .sum()
    }

    /// Waits until `n` more writes have been acknowledged on `server` (any: `None`)
    /// than now.
    fn wait_for_more(&self, n: usize, server: Option<&str>) {
        let start = self.acked_on(server);
        let deadline = Instant::now() + Duration::from_secs(90);
        while self.acked_on(server) < start + n {
            for s in &self.seen {
                if let Some(why) = &s.lock().unwrap().gave_up {
                    panic!("a writer gave up: {why}");
                }
            }
            if Instant::now() > deadline {
                let errors: Vec<Option<String>> = self
                    .seen
                    .iter()
                    .map(|s| s.lock().unwrap().last_error.clone())
                    .collect();
                panic!("fewer than {n} writes acknowledged on {server:?} in 90 s; last errors: {errors:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(self) -> Vec<Written> {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles {
            h.join().unwrap();
        }
        self.seen
            .into_iter()
            .map(|s| std::mem::take(&mut *s.lock().unwrap()))
            .collect()
    }
}

#[allow(clippy::too_many_arguments)]
fn write(
    app: &App,
    registry_url: &str,
    urls: &HashMap<String, String>,
    domain: &str,
    transactional: bool,
    first: i64,
    stop: &AtomicBool,
    out: &Mutex<Written>,
) {
    let mut registry = postgres::Client::connect(registry_url, postgres::NoTls).unwrap();
    let mut conns: HashMap<String, postgres::Client> = HashMap::new();
    let mut id = first;
    while !stop.load(Ordering::SeqCst) {
        id += 1;
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = String::new();
        loop {
            if Instant::now() > deadline {
                out.lock().unwrap().gave_up = Some(format!("write {id}: {last}"));
                return;
            }
            let row = match registry.query_opt(app.lookup, &[&domain]) {
                Ok(r) => r,
                Err(e) => {
                    last = format!("reading the registry: {e}");
                    if registry.is_closed() {
                        if let Ok(c) = postgres::Client::connect(registry_url, postgres::NoTls) {
                            registry = c;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            // Not registered (yet): an application has nothing to write to.
            let Some(row) = row else {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let (server, schema): (String, String) = (row.get(0), row.get(1));
            if conns.get(&server).is_none_or(|c| c.is_closed()) {
                match postgres::Client::connect(&urls[&server], postgres::NoTls) {
                    Ok(c) => {
                        conns.insert(server.clone(), c);
                    }
                    Err(e) => {
                        last = format!("connecting to {server}: {e}");
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                }
            }
            let client = conns.get_mut(&server).unwrap();
            let account = (1 + id % ACCOUNTS) as i32;
            let insert = on_schema(app.insert, &schema);
            let done = if transactional {
                client.transaction().and_then(|mut tx| {
                    tx.execute(
                        &on_schema(app.update, &schema),
                        &[&format!("by {id}"), &account],
                    )?;
                    tx.execute(&insert, &[&id, &account])?;
                    tx.commit()
                })
            } else {
                client.execute(&insert, &[&id, &account]).map(|_| ())
            };
            match done {
                Ok(()) => {
                    let mut o = out.lock().unwrap();
                    o.acked.insert(id, Instant::now());
                    *o.acked_on.entry(server).or_default() += 1;
                    break;
                }
                Err(e) => {
                    let mut o = out.lock().unwrap();
                    last = format!("writing on {server}: {e}");
                    if e.code() == Some(&postgres::error::SqlState::T_R_DEADLOCK_DETECTED) {
                        o.deadlocks.push(last.clone());
                    }
                    o.errored.insert(id);
                    o.last_error = Some(last.clone());
                    drop(o);
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Every acknowledged write is in `present` exactly once; nothing is there that was never
/// written; no writer saw a deadlock or gave up.
fn no_write_lost(written: &[Written], present: &BTreeMap<i64, i64>) {
    for w in written {
        assert_eq!(w.gave_up, None, "a writer gave up");
        assert!(w.deadlocks.is_empty(), "deadlocks: {:?}", w.deadlocks);
        let lost: Vec<_> = w
            .acked
            .keys()
            .filter(|id| !present.contains_key(id))
            .collect();
        assert!(lost.is_empty(), "acknowledged, then lost: {lost:?}");
    }
    let doubled: Vec<_> = present.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "written twice: {doubled:?}");
    let unexplained: Vec<_> = present
        .keys()
        .filter(|id| {
            !written
                .iter()
                .any(|w| w.acked.contains_key(id) || w.errored.contains(id))
        })
        .collect();
    assert!(
        unexplained.is_empty(),
        "present, never written: {unexplained:?}"
    );
}

/// How a failpoint is armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// The process stops there and is killed with SIGKILL.
    Kill,
    /// The operation fails there, as a lost connection would, and its own error path
    /// runs.
    Fail,
}

/// Starts `args` with `failpoint` armed; with [`Cut::Kill`], waits until it is reached
/// (and, when `writers_wait_on` names a server, until a writer waits there for the
/// fence), then kills it. Returns the run when it ended by itself.
fn cut(
    t: &Tenantctl,
    args: &[&str],
    failpoint: &str,
    how: Cut,
    mut writers_waiting: impl FnMut() -> bool,
) -> Option<crate::support::Run> {
    let action = match how {
        Cut::Kill => "pause",
        Cut::Fail => "return",
    };
    let mut child: Spawned = t
        .clone()
        .env("FAILPOINTS", &format!("{failpoint}={action}"))
        .spawn(args);
    match how {
        Cut::Kill => {
            child.wait_for_stderr(&format!("failpoint {failpoint}"));
            child.wait_until("a writer waits for the fence", &mut writers_waiting);
            child.kill();
            None
        }
        Cut::Fail => {
            let run = child.finish();
            assert!(
                run.stderr.contains(&format!("failpoint {failpoint}")),
                "the failpoint was not reached: {}",
                run.stderr
            );
            Some(run)
        }
    }
}

/// `tenant move` (offline, `default` to `b`; or online, `a` to `b`) cut at `failpoint`,
/// then run again.
fn move_cut(failpoint: &str, how: Cut, online: bool) {
    let (from, f) = if online {
        ("a", fleet(&[("a", "wal_level = logical\n"), ("b", "")]))
    } else {
        ("default", fleet(&[("b", "")]))
    };
    let schema = f.tenant("acme", from, 20_000);
    let writers = Writers::start(&f, "acme");
    writers.wait_for_more(50, Some(from));
    let mut args = vec!["tenant", "move", "acme", "--to", "b", "--yes", "-o", "json"];
    if online {
        args.push("--online");
    }
    // Between the fence and its durable commit, writers wait for it.
    let fenced = matches!(
        failpoint,
        "move.source-locked" | "move.copied" | "online.cutover-locked" | "online.caught-up"
    );
    let cut_run = cut(&f.t, &args, failpoint, how, || {
        !fenced || f.writers_waiting(from) > 0
    });
    if let Some(run) = &cut_run {
        assert_ne!(run.code, 0, "the cut move succeeded: {}", run.stdout);
    }
    // Registered once, wherever it is.
    assert_eq!(f.registered("acme").len(), 1);
    let run = f.t.run(&args);
    run.expect(0);
    writers.wait_for_more(50, Some("b"));
    let written = writers.stop();
    assert_eq!(
        f.registered("acme"),
        vec![("b".to_string(), schema.clone())]
    );
    assert!(f.has_schema("b", &schema));
    assert!(
        !f.has_schema(from, &schema),
        "the old copy is still on {from}"
    );
    no_write_lost(&written, &f.written("b", &schema));
    let seed: i64 = f
        .client("b")
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".writes WHERE client_id = 0"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(seed, 20_000, "the seed rows");
    f.nothing_left();
    f.registry_true("acme");
}

/// `tenant restore` of an archive taken before the writers started, cut at `failpoint`,
/// then run again. The restored data replaces what the writers wrote before the
/// restore that finished, so: every write acknowledged after the rerun is there, and the
/// writes there of each writer are all it had acknowledged from the first one there on
/// (nothing acknowledged after the restore took effect is missing).
fn restore_cut(failpoint: &str, how: Cut) {
    let f = fleet(&[]);
    let schema = f.tenant("acme", "default", 20_000);
    let archive = f.config.path().join("acme.tenant");
    f.t.run(&["tenant", "export", "acme", "-f", archive.to_str().unwrap()])
        .expect(0);
    let writers = Writers::start(&f, "acme");
    writers.wait_for_more(50, None);
    let args = [
        "tenant",
        "restore",
        "acme",
        archive.to_str().unwrap(),
        "--yes",
        "-o",
        "json",
    ];
    let fenced = matches!(
        failpoint,
        "restore.source-locked" | "restore.built" | "restore.loaded"
    );
    let cut_run = cut(&f.t, &args, failpoint, how, || {
        !fenced || f.writers_waiting("default") > 0
    });
    if let Some(run) = &cut_run {
        assert_ne!(run.code, 0, "the cut restore succeeded: {}", run.stdout);
    }
    let run = f.t.run(&args);
    run.expect(0);
    let after = Instant::now();
    writers.wait_for_more(50, None);
    let written = writers.stop();
    let present = f.written("default", &schema);
    for w in &written {
        assert_eq!(w.gave_up, None, "a writer gave up");
        assert!(w.deadlocks.is_empty(), "deadlocks: {:?}", w.deadlocks);
        let ids: Vec<i64> = w
            .acked
            .keys()
            .copied()
            .filter(|id| present.contains_key(id))
            .collect();
        let since = ids.first().copied().unwrap_or(i64::MAX);
        let lost: Vec<_> = w
            .acked
            .iter()
            .filter(|(id, at)| (**id >= since || **at > after) && !present.contains_key(id))
            .map(|(id, _)| id)
            .collect();
        assert!(
            lost.is_empty(),
            "acknowledged after the restore took effect, then lost: {lost:?}"
        );
    }
    let doubled: Vec<_> = present.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "written twice: {doubled:?}");
    let seed: i64 = f
        .client("default")
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".writes WHERE client_id = 0"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(seed, 20_000, "the archive's rows");
    f.nothing_left();
    f.registry_true("acme");
}

/// The ledger's entries for `domain`, oldest first, as (action, status).
fn ledger(f: &Fleet, domain: &str) -> Vec<(String, String)> {
    f.db.client()
        .query(
            "SELECT action, status FROM public.tenant_events WHERE domain = $1 ORDER BY id",
            &[&domain],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// `tenant import` of an archive of `acme` (taken before any write) as `copy` on server
/// `b`, or (`clone`) `tenant clone acme copy` while writers write to `acme`, cut at
/// `failpoint`, then run again. Writers of `copy` write to it as soon as the registry
/// lists it; when the cut left it registered, they have written to it before the rerun,
/// which then finishes the import rather than refusing the taken domain.
fn import_cut(failpoint: &str, how: Cut, clone: bool) {
    let f = fleet(&[("b", "")]);
    let source = f.tenant("acme", "default", 20_000);
    let archive = f.config.path().join("acme.tenant");
    let archive = archive.to_str().unwrap();
    f.t.run(&["tenant", "export", "acme", "-f", archive])
        .expect(0);
    let at_source = clone.then(|| {
        let w = Writers::start(&f, "acme");
        w.wait_for_more(50, None);
        w
    });
    let at_copy = Writers::of(&f, "copy", SHOP_APP, NEW_TENANT_IDS);
    let mut args = if clone {
        vec!["tenant", "clone", "acme", "copy"]
    } else {
        vec!["tenant", "import", archive, "--as", "copy"]
    };
    args.extend(["--name", "Copy", "--server", "b", "-o", "json"]);
    let cut_run = cut(&f.t, &args, failpoint, how, || true);
    if let Some(run) = &cut_run {
        assert_ne!(run.code, 0, "the cut import succeeded: {}", run.stdout);
    }
    let registered = failpoint == "import.registered";
    if registered {
        assert_eq!(f.registered("copy").len(), 1);
        // The application found the new tenant and wrote to it.
        at_copy.wait_for_more(50, Some("b"));
    } else {
        assert_eq!(f.registered("copy"), vec![], "registered before its rows");
        assert_eq!(at_copy.acked_on(None), 0, "written before registered");
    }
    // The dry run says what the rerun will do.
    let mut dry = args.clone();
    dry.push("--dry-run");
    let plan = f.t.run(&dry);
    plan.expect(0);
    let plan: serde_json::Value = plan.json();
    assert_eq!(plan["resumes"], registered, "{plan}");
    let run = f.t.run(&args);
    run.expect(0);
    let doc: serde_json::Value = run.json();
    assert_eq!(doc["resumed"], registered, "{}", run.stdout);
    if registered {
        assert!(
            doc["message"]
                .as_str()
                .unwrap()
                .contains("finished the interrupted import"),
            "{}",
            run.stdout
        );
    }
    let schema = doc["tenant"]["schema_name"].as_str().unwrap().to_string();
    at_copy.wait_for_more(50, Some("b"));
    if let Some(w) = &at_source {
        w.wait_for_more(50, None);
    }
    let written = at_copy.stop();
    let source_written = at_source.map(Writers::stop);

    assert_eq!(
        f.registered("copy"),
        vec![("b".to_string(), schema.clone())],
        "registered once, on b"
    );
    // The key printed is the tenant's.
    let key = doc["api_key"].as_str().unwrap();
    let matches: bool = f
        .db
        .client()
        .query_one(
            "SELECT api_key_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex') FROM public.tenants WHERE domain = 'copy'",
            &[&key],
        )
        .unwrap()
        .get(0);
    assert!(matches, "the API key printed is not the registered one");
    no_write_lost(
        &written,
        &f.written_by(&SHOP_APP, "b", &schema, NEW_TENANT_IDS),
    );
    // The archive's rows: the seed, the accounts, and (a clone's snapshot) writes of the
    // source's writers, each once, each one the source has.
    let mut b = f.client("b");
    let mut count = |sql: &str| -> i64 { b.query_one(sql, &[]).unwrap().get(0) };
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM \"{schema}\".writes WHERE client_id = 0"
        )),
        20_000,
        "the seed rows"
    );
    assert_eq!(
        count(&format!("SELECT count(*) FROM \"{schema}\".accounts")),
        ACCOUNTS,
        "the accounts"
    );
    let copied = f.written_by(&SHOP_APP, "b", &schema, 0);
    match &source_written {
        None => assert_eq!(copied, BTreeMap::new(), "rows the archive does not hold"),
        Some(w) => {
            let at_source = f.written("default", &source);
            no_write_lost(w, &at_source);
            let foreign: Vec<_> = copied
                .iter()
                .filter(|(id, n)| **n != 1 || !at_source.contains_key(id))
                .collect();
            assert!(
                foreign.is_empty(),
                "copied rows the source does not hold once: {foreign:?}"
            );
            assert!(
                !copied.is_empty(),
                "the clone's snapshot holds no write of the source's writers"
            );
        }
    }
    assert_eq!(
        ledger(&f, "copy"),
        vec![
            ("register".to_string(), "ok".to_string()),
            ("import".to_string(), "ok".to_string())
        ],
        "the ledger"
    );
    f.nothing_left();
    f.registry_true("copy");
    f.registry_true("acme");
}

/// An import killed after registering its tenant is finished only by the same import:
/// another archive, the same archive with other names, or a clone into that domain is
/// refused as a taken domain (exit 1), changing nothing; the same archive from standard
/// input finishes it.
#[test]
fn an_import_killed_after_registering_is_finished_only_by_the_same_import() {
    let f = fleet(&[]);
    f.tenant("acme", "default", 2_000);
    let dir = f.config.path();
    let (first, second) = (dir.join("first.tenant"), dir.join("second.tenant"));
    let (first, second) = (first.to_str().unwrap(), second.to_str().unwrap());
    f.t.run(&["tenant", "export", "acme", "-f", first])
        .expect(0);
    f.client("default")
        .batch_execute("INSERT INTO tenant_acme.accounts VALUES (1000, 'later')")
        .unwrap();
    f.t.run(&["tenant", "export", "acme", "-f", second])
        .expect(0);
    fn import<'a>(file: &'a str, name: &'a str) -> Vec<&'a str> {
        vec![
            "tenant", "import", file, "--as", "copy", "--name", name, "-o", "json",
        ]
    }
    cut(
        &f.t,
        &import(first, "Copy"),
        "import.registered",
        Cut::Kill,
        || true,
    );
    let state = |f: &Fleet| {
        let mut c = f.db.client();
        let row: String = c
            .query_one(
                "SELECT to_jsonb(t)::text FROM public.tenants t WHERE domain = 'copy'",
                &[],
            )
            .unwrap()
            .get(0);
        let mark: Option<String> = c
            .query_one(
                "SELECT obj_description('tenant_copy'::regnamespace, 'pg_namespace')",
                &[],
            )
            .unwrap()
            .get(0);
        (row, mark, ledger(f, "copy"))
    };
    let before = state(&f);
    assert!(
        before
            .1
            .as_deref()
            .is_some_and(|m| m.starts_with("tenantctl: import in progress")),
        "the mark: {:?}",
        before.1
    );
    for (args, why) in [
        (import(second, "Copy"), "another archive"),
        (import(first, "Another name"), "other names"),
        (
            vec![
                "tenant", "clone", "acme", "copy", "--name", "Copy", "-o", "json",
            ],
            "a clone",
        ),
    ] {
        let run = f.t.run(&args);
        run.expect(1);
        assert!(
            run.stderr.contains("already exists") && run.stderr.contains("interrupted"),
            "{why}: {}",
            run.stderr
        );
        assert_eq!(state(&f), before, "{why} changed something");
        let mut dry = args.clone();
        dry.push("--dry-run");
        f.t.run(&dry).expect(1);
    }
    let plan =
        f.t.run(&[import(first, "Copy"), vec!["--dry-run"]].concat());
    plan.expect(0);
    let plan: serde_json::Value = plan.json();
    assert_eq!(plan["resumes"], true, "{plan}");
    assert_eq!(state(&f), before, "the dry run changed something");
    let bytes = std::fs::read(first).unwrap();
    let run = f.t.run_with_stdin(&import("-", "Copy"), &bytes);
    run.expect(0);
    let doc: serde_json::Value = run.json();
    assert_eq!(doc["resumed"], true, "{}", run.stdout);
    assert_eq!(doc["rows"], 2_000 + ACCOUNTS, "{}", run.stdout);
    f.nothing_left();
    f.registry_true("copy");
    // Finished: the same command again is a taken domain.
    f.t.run(&import(first, "Copy")).expect(1);
}

/// The tenant's backups in `dir`, oldest first (by their names' order: second, then
/// counter).
fn backup_files(dir: &std::path::Path, domain: &str) -> Vec<String> {
    let mut found: Vec<(tenantctl::data::files::BackupKey, String)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            Some((tenantctl::data::files::backup_key(&name, domain)?, name))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, name)| name).collect()
}

/// Every file under `dir`, at any depth, whose name ends in `.partial`.
fn partial_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".partial") {
                found.push(path);
            }
        }
    }
    found
}

/// The same import started again while the first run is between registering the tenant
/// and finishing (paused there, alive): the second waits for the first (the schema's
/// lock) instead of finishing it under it and replacing the API key the first will
/// print; once the first is gone without finishing, the second finishes it.
#[test]
fn a_rerun_while_the_import_is_still_running_waits_for_it() {
    let f = fleet(&[]);
    f.tenant("acme", "default", 2_000);
    let archive = f.config.path().join("acme.tenant");
    let archive = archive.to_str().unwrap();
    f.t.run(&["tenant", "export", "acme", "-f", archive])
        .expect(0);
    let args = [
        "tenant", "import", archive, "--as", "copy", "--name", "Copy", "-o", "json",
    ];
    let mut first =
        f.t.clone()
            .env("FAILPOINTS", "import.registered=pause")
            .spawn(&args);
    first.wait_for_stderr("failpoint import.registered");
    let mut second = f.t.spawn(&args);
    let mut c = f.client("default");
    second.wait_until("the second run waits for the first one's lock", || {
        c.query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name LIKE 'tenantctl%' \
               AND a.datname = current_database()",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
            > 0
    });
    first.kill();
    let run = second.finish();
    run.expect(0);
    let doc: serde_json::Value = run.json();
    assert_eq!(doc["resumed"], true, "{}", run.stdout);
    let matches: bool = f
        .db
        .client()
        .query_one(
            "SELECT api_key_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex') FROM public.tenants WHERE domain = 'copy'",
            &[&doc["api_key"].as_str().unwrap()],
        )
        .unwrap()
        .get(0);
    assert!(matches, "the API key printed is not the registered one");
    f.nothing_left();
    f.registry_true("copy");
}

/// `backup --tenant acme --keep 2`, with three backups of `acme` there already and
/// writers writing to it all along, cut at `failpoint`, then run again: no partial file
/// anywhere, exactly the newest two backups left, each complete and importable, and the
/// ledger recording every backup run that finished.
fn backup_cut(failpoint: &str, how: Cut) {
    let f = fleet(&[]);
    let schema = f.tenant("acme", "default", 20_000);
    let out = f.config.path().join("backups");
    let dir = out.join("acme");
    let writers = Writers::start(&f, "acme");
    writers.wait_for_more(50, None);
    let backup = |keep: &'static str| {
        vec![
            "backup".to_string(),
            "--tenant".into(),
            "acme".into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--keep".into(),
            keep.into(),
            "-o".into(),
            "json".into(),
        ]
    };
    let run = |args: &[String]| {
        f.t.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    for _ in 0..3 {
        run(&backup("3")).expect(0);
        writers.wait_for_more(10, None);
    }
    let before = backup_files(&dir, "acme");
    assert_eq!(before.len(), 3, "{before:?}");
    let args = backup("2");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cut_run = cut(&f.t, &args, failpoint, how, || true);
    if let Some(run) = &cut_run {
        assert_ne!(run.code, 0, "the cut backup succeeded: {}", run.stdout);
    }
    let after_cut = backup_files(&dir, "acme");
    if failpoint == "backup.rotating" {
        // The cut backup is complete under its name; nothing rotated yet.
        assert_eq!(after_cut.len(), 4, "{after_cut:?}");
        assert_eq!(after_cut[..3], before[..]);
    } else {
        assert_eq!(after_cut, before);
        assert_eq!(
            partial_files(&out).len(),
            usize::from(how == Cut::Kill),
            "the archive under its temporary name"
        );
    }
    writers.wait_for_more(50, None);
    let rerun = f.t.run(&args);
    rerun.expect(0);
    let doc: serde_json::Value = rerun.json();
    let file = doc["results"][0]["file"].as_str().unwrap().to_string();
    writers.wait_for_more(50, None);
    let written = writers.stop();

    assert_eq!(partial_files(&out), Vec::<std::path::PathBuf>::new());
    let mut published = after_cut.clone();
    published.push(
        std::path::Path::new(&file)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string(),
    );
    let left = backup_files(&dir, "acme");
    assert_eq!(
        left,
        published[published.len() - 2..].to_vec(),
        "the newest two of {published:?}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        2,
        "only the two backups are left in {}",
        dir.display()
    );
    // Each one complete: checked whole by a dry run, and the oldest imported for real.
    for name in &left {
        let path = dir.join(name);
        f.t.run(&[
            "tenant",
            "import",
            path.to_str().unwrap(),
            "--as",
            "check",
            "--name",
            "Check",
            "--dry-run",
        ])
        .expect(0);
    }
    let oldest = dir.join(&left[0]);
    let imported = f.t.run(&[
        "tenant",
        "import",
        oldest.to_str().unwrap(),
        "--as",
        "restored",
        "--name",
        "Restored",
        "-o",
        "json",
    ]);
    imported.expect(0);
    let imported: serde_json::Value = imported.json();
    let restored = imported["tenant"]["schema_name"].as_str().unwrap();
    let seed: i64 = f
        .client("default")
        .query_one(
            &format!("SELECT count(*) FROM \"{restored}\".writes WHERE client_id = 0"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(seed, 20_000, "the seed rows in {}", left[0]);
    // Every backup run that finished is in the ledger; the cut one only when it failed
    // by itself.
    let backups: Vec<String> = ledger(&f, "acme")
        .into_iter()
        .filter(|(action, _)| action == "backup")
        .map(|(_, status)| status)
        .collect();
    let mut want = vec!["ok"; 3];
    if how == Cut::Fail {
        want.push("failed");
    }
    want.push("ok");
    assert_eq!(backups, want, "the ledger's backups");
    no_write_lost(&written, &f.written("default", &schema));
    f.nothing_left();
    f.registry_true("acme");
}

/// `adopt alembic` of a fleet the original service runs (three tenants, at the fixture's
/// three revisions, with writers on each that find its schema through the registry: the
/// original table until it is adopted), cut at `failpoint`, then run again: every tenant
/// registered once, with its id, name and original key (hashed); stamped exactly once
/// at its mapped version; the registry at this tenantctl's version; no write lost.
fn adopt_cut(failpoint: &str, how: Cut) {
    use crate::adopt_alembic::{self as alembic, R1, R2, R3};
    let db = TestDb::new();
    let originals = [
        alembic::original("first-church", "tenant_first_church"),
        alembic::original("grace-chapel", "tenant_grace_chapel"),
        alembic::original("st-marks", "tenant_st_marks"),
    ];
    alembic::build_registry(&db, &originals.iter().collect::<Vec<_>>());
    for (o, rev) in originals.iter().zip([R1, R2, R3]) {
        alembic::alembic_upgrade(&db, o.schema, rev);
        db.client()
            .batch_execute(&format!(
                "INSERT INTO \"{s}\".households (id, name) SELECT g, 'household ' || g FROM generate_series(1, {ACCOUNTS}) g; \
                 INSERT INTO \"{s}\".members (household_id, first_name, last_name) \
                     SELECT 1 + g % {ACCOUNTS}, 'seed', 'member ' || g FROM generate_series(1, 500) g",
                s = o.schema
            ))
            .unwrap();
    }
    let ids = alembic::registry_ids(&db);
    let (migrations, map_text) = alembic::migrations_from_alembic();
    let (_map_dir, map) = alembic::map_file(&map_text);
    let config = tempfile::tempdir().unwrap();
    let t = crate::support::tenantctl(&db)
        .migrations(migrations.path())
        .cwd(config.path());
    let f = Fleet {
        db,
        t,
        clusters: Vec::new(),
        config,
        _migrations: migrations,
    };
    let writers: Vec<Writers> = originals
        .iter()
        .map(|o| Writers::of(&f, o.domain, PARISH_APP, 0))
        .collect();
    for w in &writers {
        w.wait_for_more(20, None);
    }
    let args = [
        "adopt",
        "alembic",
        "--map",
        map.to_str().unwrap(),
        "-o",
        "json",
    ];
    let cut_run = cut(&f.t, &args, failpoint, how, || true);
    if let Some(run) = &cut_run {
        assert_ne!(run.code, 0, "the cut adoption succeeded: {}", run.stdout);
    }
    for w in &writers {
        w.wait_for_more(20, None);
    }
    let run = f.t.run(&args);
    run.expect(0);
    let doc: serde_json::Value = run.json();
    for w in &writers {
        w.wait_for_more(20, None);
    }
    let written: Vec<Vec<Written>> = writers.into_iter().map(Writers::stop).collect();

    let domains = |list: &str| -> Vec<String> {
        doc[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["domain"].as_str().unwrap().to_string())
            .collect()
    };
    let mut adopted = [domains("stamped"), domains("already")].concat();
    adopted.sort();
    let mut all: Vec<String> = originals.iter().map(|o| o.domain.to_string()).collect();
    all.sort();
    assert_eq!(adopted, all, "stamped or already adopted: {doc}");
    assert_eq!(
        alembic::registry_ids(&f.db),
        ids,
        "ids, domains and schemas are kept"
    );
    let mut c = f.db.client();
    let registry: Vec<(i32, i64)> = c
        .query(
            "SELECT version, count(*) FROM public.tenantctl_registry_history GROUP BY 1 ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        registry,
        (1..=tenantctl::registry::latest_version())
            .map(|v| (v, 1))
            .collect::<Vec<_>>(),
        "the registry's versions"
    );
    for ((o, mapped), written) in originals.iter().zip([1, 2, 3]).zip(&written) {
        let row = c
            .query_one(
                "SELECT tenant_name, email, api_key, \
                        api_key_hash = encode(sha256(convert_to($2, 'UTF8')), 'hex') \
                 FROM public.tenants WHERE domain = $1",
                &[&o.domain, &o.key],
            )
            .unwrap();
        assert_eq!(
            row.get::<_, String>(0),
            format!("{} congregation", o.domain)
        );
        assert_eq!(
            row.get::<_, Option<String>>(1),
            Some(format!("{}@example.org", o.domain))
        );
        assert_eq!(row.get::<_, Option<String>>(2), None, "a plain key is left");
        assert!(row.get::<_, bool>(3), "{}: its key's hash", o.domain);
        let stamped: Vec<(i32, i64)> = c
            .query(
                &format!(
                    "SELECT version, count(*) FROM \"{}\".refinery_schema_history GROUP BY 1 ORDER BY 1",
                    o.schema
                ),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            stamped,
            (1..=mapped).map(|v| (v, 1)).collect::<Vec<_>>(),
            "{}: its history",
            o.domain
        );
        let stamps: Vec<(String, String)> = ledger(&f, o.domain)
            .into_iter()
            .filter(|(action, _)| action == "stamp")
            .collect();
        assert_eq!(
            stamps,
            vec![("stamp".to_string(), "ok".to_string())],
            "{}: stamped once",
            o.domain
        );
        no_write_lost(written, &f.written_by(&PARISH_APP, "default", o.schema, 0));
        f.registry_true(o.domain);
    }
    f.nothing_left();
}

macro_rules! crash_tests {
    ($($name:ident: $body:expr;)*) => {
        $(
            #[test]
            fn $name() {
                $body
            }
        )*
    };
}

crash_tests! {
    move_killed_after_its_journal_is_written: move_cut("move.journal-written", Cut::Kill, false);
    move_killed_after_the_target_is_built: move_cut("move.target-built", Cut::Kill, false);
    move_killed_with_the_source_locked_and_writers_waiting: move_cut("move.source-locked", Cut::Kill, false);
    move_killed_after_the_copy_with_writers_waiting: move_cut("move.copied", Cut::Kill, false);
    move_killed_after_the_source_is_fenced: move_cut("move.source-fenced", Cut::Kill, false);
    move_failing_after_the_source_is_fenced: move_cut("move.source-fenced", Cut::Fail, false);
    move_killed_after_the_registry_switch: move_cut("move.switched", Cut::Kill, false);
    move_failing_after_the_registry_switch: move_cut("move.switched", Cut::Fail, false);
    move_killed_after_the_old_copy_is_removed: move_cut("move.old-copy-removed", Cut::Kill, false);
    online_move_killed_after_its_journal_is_written: move_cut("move.journal-written", Cut::Kill, true);
    online_move_killed_after_publishing: move_cut("online.published", Cut::Kill, true);
    online_move_killed_while_catching_up: move_cut("online.subscribed", Cut::Kill, true);
    online_move_killed_at_the_cutover_with_writers_waiting: move_cut("online.cutover-locked", Cut::Kill, true);
    online_move_killed_once_caught_up_with_writers_waiting: move_cut("online.caught-up", Cut::Kill, true);
    online_move_failing_once_caught_up: move_cut("online.caught-up", Cut::Fail, true);
    online_move_killed_after_the_source_is_fenced: move_cut("move.source-fenced", Cut::Kill, true);
    online_move_killed_after_the_registry_switch: move_cut("move.switched", Cut::Kill, true);
    online_move_killed_after_the_old_copy_is_removed: move_cut("move.old-copy-removed", Cut::Kill, true);
    restore_killed_after_removing_leftovers: restore_cut("restore.leftovers-removed", Cut::Kill);
    restore_killed_with_the_tables_locked_and_writers_waiting: restore_cut("restore.source-locked", Cut::Kill);
    restore_killed_after_building_the_new_schema: restore_cut("restore.built", Cut::Kill);
    restore_killed_after_loading_before_the_swap: restore_cut("restore.loaded", Cut::Kill);
    restore_failing_after_loading_before_the_swap: restore_cut("restore.loaded", Cut::Fail);
    restore_killed_after_the_swap: restore_cut("restore.swapped", Cut::Kill);
    import_killed_after_building_the_schema: import_cut("import.schema-built", Cut::Kill, false);
    clone_killed_after_building_the_schema: import_cut("import.schema-built", Cut::Kill, true);
    import_killed_after_loading_before_registering: import_cut("import.loaded", Cut::Kill, false);
    clone_killed_after_loading_before_registering: import_cut("import.loaded", Cut::Kill, true);
    import_failing_after_loading_before_registering: import_cut("import.loaded", Cut::Fail, false);
    import_killed_after_registering: import_cut("import.registered", Cut::Kill, false);
    clone_killed_after_registering: import_cut("import.registered", Cut::Kill, true);
    import_failing_after_registering: import_cut("import.registered", Cut::Fail, false);
    backup_killed_with_its_archive_complete_under_the_temporary_name: backup_cut("backup.written", Cut::Kill);
    backup_failing_with_its_archive_complete_under_the_temporary_name: backup_cut("backup.written", Cut::Fail);
    backup_killed_before_rotating_the_older_backups: backup_cut("backup.rotating", Cut::Kill);
    adoption_killed_after_upgrading_the_registry: adopt_cut("adopt.registry-upgraded", Cut::Kill);
    adoption_failing_after_upgrading_the_registry: adopt_cut("adopt.registry-upgraded", Cut::Fail);
    adoption_killed_after_stamping_a_tenant: adopt_cut("adopt.tenant-stamped", Cut::Kill);
}
