//! tenantctl on a real Citus cluster with schema-based sharding (a coordinator and two
//! workers, see [`cluster::citus`]), everything through the coordinator: each tenant schema
//! becomes a distributed schema whose tables sit on one worker; `init`, `tenant create
//! --migrate`, `upgrade --all`, `check`, `downgrade`, `stamp`, `status --all` and `tenant
//! drop` work as on plain PostgreSQL (so do tenantctl's multi-statement session messages:
//! `BEGIN; RESET ...; SET ...` before each migration and `RESET SESSION AUTHORIZATION;
//! RESET ROLE; INSERT INTO history ...` after it); `tenant show` and `status --tenant`
//! name the node; `tenant move --node` moves the schema. Also pins what Citus 13.2.2 does
//! with the example migrations, that placement is `null` and `tenant move` is refused
//! off Citus, and that the shared schema is migrated through the coordinator (a
//! reference table the tenants' schemas reference by foreign key).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::{checks, cluster, common_json, support};

use checks::expect_error;
use cluster::citus::CitusCluster;
use common_json::{
    CheckReport, Created, Events, FleetStatus, Moved, RunReport, Shown, TenantStatus,
};
use support::{bare, copy_of_example_migrations, dir_with, ready, Tenantctl};

/// A migration set Citus accepts in a distributed schema: tables with identity keys,
/// named constraints (a constraint added with its column must be named), indexes, a view,
/// a foreign key between the schema's tables, and a trigger (allowed by the migration's
/// own `SET LOCAL citus.enable_unsafe_triggers`).
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "V1__members.sql",
        "CREATE TABLE members (\n\
         \x20   id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n\
         \x20   name text NOT NULL,\n\
         \x20   email text,\n\
         \x20   status text NOT NULL DEFAULT 'visitor'\n\
         \x20       CONSTRAINT members_status_check CHECK (status IN ('visitor', 'member')),\n\
         \x20   CONSTRAINT members_email_key UNIQUE (email)\n\
         );\n\
         CREATE INDEX members_name_idx ON members (name);\n",
    ),
    ("V1__members.down.sql", "DROP TABLE members;\n"),
    (
        "V2__households.sql",
        "CREATE TABLE households (\n\
         \x20   id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n\
         \x20   name text NOT NULL\n\
         );\n\
         ALTER TABLE members ADD COLUMN household_id bigint\n\
         \x20   CONSTRAINT members_household_id_fkey REFERENCES households (id) ON DELETE SET NULL;\n\
         ALTER TABLE members ADD COLUMN household_role text\n\
         \x20   CONSTRAINT members_household_role_check CHECK (household_role IN ('head', 'other'));\n\
         CREATE INDEX members_household_id_idx ON members (household_id);\n\
         CREATE VIEW household_directory AS\n\
         SELECT h.name AS household, m.name AS member\n\
         FROM members m LEFT JOIN households h ON h.id = m.household_id;\n",
    ),
    (
        "V2__households.down.sql",
        "DROP VIEW household_directory;\n\
         ALTER TABLE members DROP COLUMN household_role;\n\
         ALTER TABLE members DROP COLUMN household_id;\n\
         DROP TABLE households;\n",
    ),
    (
        "V3__notes.sql",
        "SET LOCAL citus.enable_unsafe_triggers = on;\n\
         CREATE TABLE notes (\n\
         \x20   id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n\
         \x20   member_id bigint NOT NULL\n\
         \x20       CONSTRAINT notes_member_id_fkey REFERENCES members (id) ON DELETE CASCADE,\n\
         \x20   body text NOT NULL,\n\
         \x20   edits int NOT NULL DEFAULT 0\n\
         );\n\
         CREATE FUNCTION count_edit() RETURNS trigger LANGUAGE plpgsql AS $$\n\
         BEGIN\n\
         \x20   NEW.edits := OLD.edits + 1;\n\
         \x20   RETURN NEW;\n\
         END;\n\
         $$;\n\
         CREATE TRIGGER notes_count_edit BEFORE UPDATE ON notes\n\
         \x20   FOR EACH ROW EXECUTE FUNCTION count_edit();\n",
    ),
    (
        "V3__notes.down.sql",
        "DROP TABLE notes;\nDROP FUNCTION count_edit();\n",
    ),
];

/// The tables of each tenant schema at head (tenantctl's history table included).
const TABLES_AT_HEAD: &[&str] = &["households", "members", "notes", "refinery_schema_history"];

/// tenantctl on the coordinator with [`MIGRATIONS`].
fn on(c: &CitusCluster, migrations: &tempfile::TempDir) -> Tenantctl {
    bare().url(&c.url()).migrations(migrations.path())
}

/// The distributed schemas, from the `citus_schemas` view.
fn distributed_schemas(c: &CitusCluster) -> BTreeSet<String> {
    c.client()
        .query("SELECT schema_name::text FROM citus_schemas", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Each table of `schema` that Citus knows, with its Citus table type and the node
/// (`HOST:PORT`) holding its shard, from the `citus_shards` view.
fn shards(c: &CitusCluster, schema: &str) -> Vec<(String, String, String)> {
    c.client()
        .query(
            "SELECT c.relname::text, s.citus_table_type, s.nodename || ':' || s.nodeport \
             FROM citus_shards s JOIN pg_class c ON c.oid = s.table_name \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 ORDER BY 1",
            &[&schema],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The one worker holding every table of `schema`; fails unless all of `tables` are
/// single-shard tables of the schema (`citus_table_type` = 'schema') on one worker.
fn worker_of(c: &CitusCluster, schema: &str, tables: &[&str]) -> String {
    let shards = shards(c, schema);
    let names: Vec<&str> = shards.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(names, tables, "tables of {schema} known to Citus");
    let nodes: BTreeSet<&str> = shards.iter().map(|s| s.2.as_str()).collect();
    assert_eq!(
        nodes.len(),
        1,
        "{schema}'s tables are colocated: {shards:?}"
    );
    for s in &shards {
        assert_eq!(s.1, "schema", "{} is a distributed-schema table", s.0);
    }
    let node = nodes.into_iter().next().unwrap().to_string();
    assert!(
        c.worker_nodes().contains(&node),
        "{schema} is on {node}, which is not a worker ({:?})",
        c.worker_nodes()
    );
    node
}

fn history_versions(c: &CitusCluster, schema: &str) -> Vec<i32> {
    c.client()
        .query(
            &format!("SELECT version FROM \"{schema}\".refinery_schema_history ORDER BY 1"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// How many sessions on the coordinator wait for `schema`'s tenant lock.
fn lock_waiters(c: &CitusCluster, schema: &str) -> i64 {
    let (k1, k2) = tenantctl::pg::db::lock_key(tenantctl::pg::db::LockSpace::Tenant, schema);
    c.client()
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 2",
            &[&i64::from(k1 as u32), &i64::from(k2 as u32)],
        )
        .unwrap()
        .get(0)
}

fn events(t: &Tenantctl, tenant: &str) -> Events {
    t.run(&["events", "--tenant", tenant, "-o", "json"])
        .expect(0)
        .json()
}

#[test]
fn tenants_are_distributed_schemas_and_every_command_works_through_the_coordinator() {
    let c = CitusCluster::start();
    let m = dir_with(MIGRATIONS);
    let t = on(&c, &m);
    t.run(&["init"]).expect(0);
    // The registry is not in a distributed schema: only tenant schemas are.
    assert!(distributed_schemas(&c).is_empty());

    let tenants = ["alpha", "beta", "gamma"];
    for d in tenants {
        let created: Created = t
            .run(&[
                "tenant",
                "create",
                d,
                "--name",
                d,
                "--migrate",
                "--target",
                "1",
                "-o",
                "json",
            ])
            .expect(0)
            .json();
        assert!(created.schema_created, "{}", created.message);
        assert_eq!(created.tenant.current_revision, Some(1));
    }
    let schemas: BTreeSet<String> = tenants.iter().map(|d| format!("tenant_{d}")).collect();
    assert_eq!(distributed_schemas(&c), schemas);

    let report: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(report.summary.ok, 3, "{report:?}");
    for r in &report.results {
        assert_eq!((r.applied.clone(), r.to_revision), (vec![2, 3], Some(3)));
    }
    let mut nodes = Vec::new();
    for s in &schemas {
        nodes.push(worker_of(&c, s, TABLES_AT_HEAD));
        // Each migration's history row was written after it, through the coordinator.
        assert_eq!(history_versions(&c, s), vec![1, 2, 3]);
    }
    let check: CheckReport = t.run(&["check", "-o", "json"]).expect(0).json();
    assert!(check.ok && check.tenants == 3, "{check:?}");

    // The schema works: a foreign key, the view and the trigger, on the worker.
    let mut db = c.client();
    db.batch_execute(
        "INSERT INTO tenant_alpha.households (name) VALUES ('Okafor'); \
         INSERT INTO tenant_alpha.members (name, household_id) VALUES ('Ada', 1); \
         INSERT INTO tenant_alpha.notes (member_id, body) VALUES (1, 'hello'); \
         UPDATE tenant_alpha.notes SET body = 'hello again'",
    )
    .unwrap();
    let row = db
        .query_one(
            "SELECT (SELECT household FROM tenant_alpha.household_directory), \
                    (SELECT edits FROM tenant_alpha.notes)",
            &[],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i32>(1)),
        ("Okafor".into(), 1)
    );

    // tenant show and status --tenant name the node, in JSON and in text.
    let shown: Shown = t
        .run(&["tenant", "show", "alpha", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(shown.placement.map(|p| p.node), Some(nodes[0].clone()));
    let st: TenantStatus = t
        .run(&["status", "--tenant", "alpha", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(st.placement.map(|p| p.node), Some(nodes[0].clone()));
    for args in [
        &["tenant", "show", "beta"][..],
        &["status", "--tenant", "beta"],
    ] {
        let out = t.run(args).expect(0).stdout.clone();
        let line = out.lines().find(|l| l.contains("placement")).unwrap_or("");
        assert!(line.contains(&nodes[1]), "{args:?}:\n{out}");
    }

    // downgrade, stamp and status --all, through the coordinator.
    let down: RunReport = t
        .run(&["downgrade", "--tenant", "beta", "1", "--yes", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(down.results[0].applied, vec![3, 2]);
    assert_eq!(history_versions(&c, "tenant_beta"), vec![1]);
    worker_of(&c, "tenant_beta", &["members", "refinery_schema_history"]);
    t.run(&["stamp", "--tenant", "gamma", "base", "--yes"])
        .expect(0);
    assert!(history_versions(&c, "tenant_gamma").is_empty());
    t.run(&["stamp", "--tenant", "gamma", "3", "--yes"])
        .expect(0);
    assert_eq!(history_versions(&c, "tenant_gamma"), vec![1, 2, 3]);
    let fleet: FleetStatus = t.run(&["status", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(fleet.summary.at_head, 2, "{fleet:?}");
    assert_eq!(fleet.summary.behind, 1, "{fleet:?}");
    t.run(&["upgrade", "--all"]).expect(0);
    t.run(&["check"]).expect(0);

    // tenant drop removes the distributed schema, on the worker too.
    t.run(&["tenant", "drop", "gamma", "--yes"]).expect(0);
    let left: BTreeSet<String> = ["tenant_alpha", "tenant_beta"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(distributed_schemas(&c), left);
    assert!(shards(&c, "tenant_gamma").is_empty());
    let worker = c
        .worker_nodes()
        .iter()
        .position(|n| *n == nodes[2])
        .unwrap();
    let on_worker: i64 = c
        .worker_client(worker)
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'tenant_gamma'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(on_worker, 0, "the worker still has schema tenant_gamma");
    t.run(&["check"]).expect(0);
}

#[test]
fn tenant_move_moves_the_schema_to_the_other_worker_under_the_tenants_lock() {
    let c = CitusCluster::start();
    let m = dir_with(MIGRATIONS);
    let t = on(&c, &m);
    t.run(&["init"]).expect(0);
    t.run(&["tenant", "create", "mover", "--name", "Mover", "--migrate"])
        .expect(0);
    c.client()
        .batch_execute("INSERT INTO tenant_mover.members (name) VALUES ('Ada'), ('Bo')")
        .unwrap();
    let from = worker_of(&c, "tenant_mover", TABLES_AT_HEAD);
    let to = c.worker_nodes().into_iter().find(|n| *n != from).unwrap();

    // The move waits for the tenant's lock, held here by another session.
    let mut holder = c.client();
    support::lock_tenant(&mut holder, "tenant_mover");
    let mut child = t.spawn(&["tenant", "move", "mover", "--node", &to, "-o", "json"]);
    child.wait_until("the move waits for the tenant's lock", || {
        lock_waiters(&c, "tenant_mover") == 1
    });
    assert_eq!(worker_of(&c, "tenant_mover", TABLES_AT_HEAD), from);
    assert!(support::unlock_tenant(&mut holder, "tenant_mover"));
    let moved: Moved = child.finish().expect(0).json();
    assert_eq!(
        (
            moved.tenant.as_str(),
            moved.from_node.as_str(),
            moved.to_node.as_str()
        ),
        ("mover", from.as_str(), to.as_str())
    );
    assert!(moved.message.contains("moved"), "{}", moved.message);
    assert_eq!(worker_of(&c, "tenant_mover", TABLES_AT_HEAD), to);
    let n: i64 = c
        .client()
        .query_one("SELECT count(*) FROM tenant_mover.members", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "the rows moved with the schema");
    let shown: Shown = t
        .run(&["tenant", "show", "mover", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(shown.placement.map(|p| p.node), Some(to.clone()));
    let ev = events(&t, "mover");
    let last = &ev.events[0];
    assert_eq!((last.action.as_str(), last.status.as_str()), ("move", "ok"));
    t.run(&["check"]).expect(0);

    // Already there: nothing to do, nothing recorded.
    let again: Moved = t
        .run(&["tenant", "move", "mover", "--node", &to, "-o", "json"])
        .expect(0)
        .json();
    assert!(again.message.contains("already"), "{}", again.message);
    assert_eq!(events(&t, "mover").events.len(), ev.events.len());

    // A node that is not in the cluster: Citus refuses, nothing moves, the ledger says so.
    let nowhere = format!("127.0.0.1:{}", support::closed_port());
    let r = t.run(&["tenant", "move", "mover", "--node", &nowhere]);
    expect_error(&r, 1, &[&nowhere, "mover"]);
    assert_eq!(worker_of(&c, "tenant_mover", TABLES_AT_HEAD), to);
    let failed = &events(&t, "mover").events[0];
    assert_eq!(
        (failed.action.as_str(), failed.status.as_str()),
        ("move", "failed")
    );

    // A malformed node is a usage error.
    for bad in ["nowhere", "127.0.0.1:", "127.0.0.1:99999"] {
        let r = t.run(&["tenant", "move", "mover", "--node", bad]);
        r.expect(2);
        assert!(r.stderr.contains("HOST:PORT"), "{}", r.stderr);
    }

    // A schema that is not distributed (created with schema-based sharding off, then
    // adopted) has no placement and is refused.
    c.client()
        .batch_execute(
            "SET citus.enable_schema_based_sharding = off; CREATE SCHEMA plain; \
             CREATE TABLE plain.t (id int)",
        )
        .unwrap();
    t.run(&[
        "tenant", "create", "plain", "--name", "Plain", "--schema", "plain", "--adopt",
    ])
    .expect(0);
    let shown: Shown = t
        .run(&["tenant", "show", "plain", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(shown.placement, None);
    let r = t.run(&["tenant", "move", "plain", "--node", &to]);
    expect_error(&r, 1, &["not a distributed schema", "nothing was changed"]);
    assert!(
        !distributed_schemas(&c).contains("plain"),
        "plain must stay a regular schema"
    );
}

/// Replaces `from` by `to` in `file` of `dir`, failing when `from` is not there.
fn edit(dir: &tempfile::TempDir, file: &str, from: &str, to: &str) {
    let path = dir.path().join(file);
    let body = std::fs::read_to_string(&path).unwrap();
    assert!(body.contains(from), "{file} no longer contains {from:?}");
    std::fs::write(&path, body.replace(from, to)).unwrap();
}

/// Waits until `node` accepts connections again (a crashed server restarts itself).
fn wait_for_recovery(c: &CitusCluster, worker: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = postgres::Client::connect(&c.workers[worker].url(""), postgres::NoTls)
            .and_then(|mut cl| cl.batch_execute("SELECT 1"))
            .is_ok();
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "worker {worker} did not recover");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `f`'s first success within a minute: the coordinator may hold a broken connection to
/// a worker that has just restarted.
fn retry<T, E: std::fmt::Debug>(mut f: impl FnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("still failing after a minute: {e:?}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

#[test]
fn example_migrations_on_citus_need_unsafe_triggers_and_a_split_v2() {
    let c = CitusCluster::start();
    let m = copy_of_example_migrations();
    let t = on(&c, &m);
    t.run(&["init"]).expect(0);

    // V1 creates a trigger: Citus refuses it on a distributed table, V1 rolls back.
    let r = t.run(&[
        "tenant",
        "create",
        "ex",
        "--name",
        "Ex",
        "--migrate",
        "-o",
        "json",
    ]);
    r.expect(1);
    let created: Created = r.json();
    assert_eq!(created.tenant.current_revision, None);
    let error = created.tenant.last_error.unwrap_or_default();
    assert!(
        error.contains("V1__members") && error.contains("triggers are not supported"),
        "{error}"
    );

    // With triggers allowed for the database, V1 applies; V2's single ALTER TABLE adding
    // a column with a foreign key and another with a check crashes the worker holding
    // the schema (Citus 13.2.2), and V2 rolls back.
    c.client()
        .batch_execute("ALTER DATABASE postgres SET citus.enable_unsafe_triggers = on")
        .unwrap();
    let r = t.run(&["upgrade", "--tenant", "ex", "-o", "json"]);
    r.expect(1);
    let report: RunReport = r.json();
    let res = &report.results[0];
    // (The revision after the failure is read from the crashed worker, so the report
    // may not know it: the history is checked below, once the worker is back.)
    assert_eq!(res.applied, vec![1]);
    let error = res.error.clone().unwrap_or_default();
    let node = worker_of(&c, "tenant_ex", &["members", "refinery_schema_history"]);
    assert!(
        error.contains("V2__households") && error.contains(&node),
        "V2 should fail on the worker {node}: {error}"
    );
    let worker = c.worker_nodes().iter().position(|n| *n == node).unwrap();
    let log = std::fs::read_to_string(c.workers[worker].dir().join("server.log")).unwrap();
    assert!(
        log.contains("was terminated by signal 11"),
        "the worker's log should show the crash:\n{log}"
    );
    wait_for_recovery(&c, worker);
    let history = retry(|| {
        c.client()
            .query("SELECT version FROM tenant_ex.refinery_schema_history", &[])
            .map(|rows| rows.iter().map(|r| r.get(0)).collect::<Vec<i32>>())
    });
    assert_eq!(history, vec![1], "V2 rolled back");

    // The same V2 as two ALTER TABLE statements applies, and so does the rest.
    edit(
        &m,
        "V2__households.sql",
        "ON DELETE SET NULL,\n    ADD COLUMN household_role",
        "ON DELETE SET NULL;\nALTER TABLE members\n    ADD COLUMN household_role",
    );
    retry(|| {
        let r = t.run(&["upgrade", "--tenant", "ex"]);
        if r.code == 0 {
            Ok(())
        } else {
            Err(r)
        }
    });
    assert_eq!(history_versions(&c, "tenant_ex"), vec![1, 2, 3, 4, 5, 6]);
    t.run(&["check"]).expect(0);
    t.run(&["downgrade", "--tenant", "ex", "base", "--yes"])
        .expect(0);
    assert!(history_versions(&c, "tenant_ex").is_empty());
}

#[test]
fn off_citus_placement_is_null_and_tenant_move_is_refused() {
    let (_db, t) = ready();
    t.run(&["tenant", "create", "solo", "--name", "Solo", "--migrate"])
        .expect(0);
    let shown: Shown = t
        .run(&["tenant", "show", "solo", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(shown.placement, None);
    let raw: serde_json::Value = t
        .run(&["status", "--tenant", "solo", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(raw.get("placement"), Some(&serde_json::Value::Null));
    let text = t.run(&["tenant", "show", "solo"]).expect(0).stdout.clone();
    assert!(!text.contains("placement"), "{text}");
    let before = events(&t, "solo").events.len();
    let r = t.run(&["tenant", "move", "solo", "--node", "127.0.0.1:5432"]);
    expect_error(&r, 1, &["not a Citus coordinator", "nothing was changed"]);
    assert_eq!(events(&t, "solo").events.len(), before);
    t.run(&["tenant", "move", "solo", "--node", "no-port"])
        .expect(2);
    t.run(&["tenant", "move", "solo"]).expect(2);
}

#[test]
fn a_check_added_with_its_column_must_be_named_on_citus_and_the_refusal_rolls_back() {
    let c = CitusCluster::start();
    let m = dir_with(&[
        (
            "V1__tables.sql",
            "CREATE TABLE parents (id bigint PRIMARY KEY);\n\
             CREATE TABLE kids (id bigint PRIMARY KEY);\n",
        ),
        (
            "V2__columns.sql",
            "ALTER TABLE kids ADD COLUMN note text;\n\
             ALTER TABLE kids ADD COLUMN age int CHECK (age > 0);\n",
        ),
    ]);
    let t = on(&c, &m);
    t.run(&["init"]).expect(0);
    let r = t.run(&[
        "tenant",
        "create",
        "kin",
        "--name",
        "Kin",
        "--migrate",
        "-o",
        "json",
    ]);
    r.expect(1);
    let created: Created = r.json();
    assert_eq!(created.tenant.current_revision, Some(1));
    let error = created.tenant.last_error.unwrap_or_default();
    assert!(
        error.contains("V2__columns") && error.contains("line 2"),
        "{error}"
    );
    assert!(
        error.contains("cannot execute ADD COLUMN command with PRIMARY KEY, UNIQUE, FOREIGN and CHECK constraints"),
        "{error}"
    );
    // The first statement of V2 rolled back with it.
    let note: i64 = c
        .client()
        .query_one(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_schema = 'tenant_kin' AND column_name = 'note'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(note, 0);

    // Named, the check applies; an unnamed foreign key added with its column is accepted,
    // and Citus names it <table>__fkey (PostgreSQL would say kids_parent_id_fkey).
    std::fs::write(
        m.path().join("V2__columns.sql"),
        "ALTER TABLE kids ADD COLUMN note text;\n\
         ALTER TABLE kids ADD COLUMN age int CONSTRAINT kids_age_check CHECK (age > 0);\n\
         ALTER TABLE kids ADD COLUMN parent_id bigint REFERENCES parents (id);\n",
    )
    .unwrap();
    t.run(&["upgrade", "--tenant", "kin"]).expect(0);
    let names: BTreeSet<String> = c
        .client()
        .query(
            "SELECT conname::text FROM pg_constraint WHERE conrelid = 'tenant_kin.kids'::regclass",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: BTreeSet<String> = ["kids__fkey", "kids_age_check", "kids_pkey"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, expected);
    t.run(&["check"]).expect(0);
}

/// On Citus the shared schema is migrated through the coordinator: a shared migration
/// makes `public.plans` a reference table (a copy on every node), and the tenants'
/// distributed schemas reference it by foreign key from their own worker.
#[test]
fn the_shared_schema_is_migrated_through_the_coordinator_with_a_reference_table() {
    let c = CitusCluster::start();
    let m = dir_with(&[
        (
            "V1__subscription.sql",
            "-- tenantctl: requires shared 1\n\
             CREATE TABLE subscription (\n\
             \x20   id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n\
             \x20   plan_id int NOT NULL CONSTRAINT subscription_plan_id_fkey REFERENCES public.plans (id)\n\
             );\n",
        ),
        ("V1__subscription.down.sql", "DROP TABLE subscription;\n"),
    ]);
    std::fs::create_dir(m.path().join("shared")).unwrap();
    std::fs::write(
        m.path().join("shared/V1__plans.sql"),
        "CREATE TABLE plans (id int PRIMARY KEY, name text NOT NULL);\n\
         SELECT create_reference_table('plans');\n\
         INSERT INTO plans VALUES (1, 'free'), (2, 'pro');\n",
    )
    .unwrap();
    let t = on(&c, &m);
    t.run(&["init"]).expect(0);
    for d in ["alpha", "beta"] {
        t.run(&["tenant", "create", d, "--name", d, "--provision"])
            .expect(0);
    }
    let report: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(report.shared.len(), 1, "{report:?}");
    assert_eq!(
        (report.shared[0].status.as_str(), report.shared[0].to),
        ("ok", Some(1))
    );
    assert_eq!(report.summary.ok, 2, "{report:?}");
    let kind: String = c
        .client()
        .query_one(
            "SELECT citus_table_type FROM citus_tables WHERE table_name = 'public.plans'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(kind, "reference");
    // The tenants' tables sit on a worker and reference the plans there.
    for s in ["tenant_alpha", "tenant_beta"] {
        worker_of(&c, s, &["refinery_schema_history", "subscription"]);
    }
    let mut db = c.client();
    db.batch_execute("INSERT INTO tenant_alpha.subscription (plan_id) VALUES (2)")
        .unwrap();
    let e = db
        .batch_execute("INSERT INTO tenant_beta.subscription (plan_id) VALUES (9)")
        .unwrap_err();
    assert!(
        e.as_db_error().unwrap().message().contains("foreign key"),
        "{e}"
    );
    let st: common_json::SharedStatuses = t
        .run(&["status", "--shared", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(st.shared[0].current_revision, Some(1));
    t.run(&["check"]).expect(0);
}
