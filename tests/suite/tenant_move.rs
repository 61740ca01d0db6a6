//! `tenant move --to SERVER`: the registry on the shared test server (`default`) and a
//! throwaway cluster `b`. The data arrives whole (every table's content hash, the
//! identities, the triggers), the registry row keeps its identity, the old copy is
//! dropped or kept renamed; writes on the source wait during the copy and then fail
//! rather than land in a dead copy, reads go on; a move killed during the copy, or after
//! building the target, or after its copy, is finished or undone by a rerun; the state an
//! earlier tenantctl left after its switch keeps the old copy; and every refusal changes
//! nothing.

use std::collections::BTreeMap;
use std::sync::mpsc;

use crate::checks::{create, expect_error, schema_exists, seed_example, table_contents};
use crate::cluster::Cluster;
use crate::common_json::{Events, ServerMovePlan, ServerMoved};
use crate::servers::{client_of, cluster, schema_on, url_of, PASSWORD};
use crate::support::{ready, waits_for_tenantctl, Gate, Tenantctl, TestDb};

/// The registry's database (`default`), server `b`, and the config naming `b`.
struct Two {
    db: TestDb,
    t: Tenantctl,
    b: Cluster,
    config: tempfile::TempDir,
}

fn two() -> Two {
    let (db, t) = ready();
    let b = cluster();
    let config = tempfile::tempdir().unwrap();
    write_config(config.path(), &[("b", &b)]);
    let t = t.cwd(config.path());
    Two { db, t, b, config }
}

fn write_config(dir: &std::path::Path, servers: &[(&str, &Cluster)]) {
    let text: String = servers
        .iter()
        .map(|(name, c)| format!("[servers.{name}]\nurl = \"{}\"\n\n", url_of(c)))
        .collect();
    std::fs::write(dir.join("tenants.toml"), text).unwrap();
}

/// A tenant on `default`, migrated and seeded.
fn tenant(f: &Two, domain: &str, members: i64) -> String {
    let created = create(&f.t, domain, &["--server", "default", "--migrate"]);
    let schema = created.tenant.schema_name;
    seed_example(&mut f.db.client(), &schema, members);
    schema
}

/// The registry row as stored, every column.
fn row_text(db: &TestDb, domain: &str) -> String {
    db.client()
        .query_one(
            "SELECT t::text FROM public.tenants t WHERE domain = $1",
            &[&domain],
        )
        .unwrap()
        .get(0)
}

/// (id, domain, schema_name, api_key_hash, server) of the registry row.
fn identity(db: &TestDb, domain: &str) -> (i64, String, String, String, String) {
    let r = db
        .client()
        .query_one(
            "SELECT id, domain, schema_name, api_key_hash, server FROM public.tenants WHERE domain = $1",
            &[&domain],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

/// The move journal: (to_server, phase) of each row.
fn journal(db: &TestDb) -> Vec<(String, String)> {
    db.client()
        .query(
            "SELECT to_server, phase FROM public.tenant_moves ORDER BY tenant_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Every schema on a server that is not PostgreSQL's own.
fn schemas(c: &mut postgres::Client) -> Vec<String> {
    c.query(
        "SELECT nspname::text FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' \
         AND nspname <> 'information_schema' ORDER BY 1",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn versions(c: &mut postgres::Client, schema: &str) -> Vec<i32> {
    c.query(
        &format!("SELECT version FROM \"{schema}\".refinery_schema_history ORDER BY version"),
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// The last value the identity of `members` handed out.
fn members_identity(c: &mut postgres::Client, schema: &str) -> i64 {
    c.query_one(
        &format!("SELECT last_value FROM \"{schema}\".members_id_seq"),
        &[],
    )
    .unwrap()
    .get(0)
}

/// Everything a refused move must leave as it was.
#[derive(Debug, PartialEq)]
struct World {
    row: String,
    journal: Vec<(String, String)>,
    on_default: Vec<String>,
    on_b: Vec<String>,
    data: BTreeMap<String, (i64, String)>,
}

fn world(f: &Two, domain: &str, schema: &str) -> World {
    World {
        row: row_text(&f.db, domain),
        journal: journal(&f.db),
        on_default: schemas(&mut f.db.client()),
        on_b: schemas(&mut client_of(&f.b)),
        data: table_contents(&mut f.db.client(), schema),
    }
}

fn moved(run: &crate::support::Run) -> ServerMoved {
    assert!(
        !run.stdout.contains(PASSWORD) && !run.stderr.contains(PASSWORD),
        "{}{}",
        run.stdout,
        run.stderr
    );
    run.json()
}

#[test]
fn a_tenant_moves_with_its_data_identity_and_triggers_and_the_old_copy_is_dropped_or_kept() {
    let f = two();
    let schema = tenant(&f, "mv", 40);
    tenant(&f, "stay", 10);
    let (id, domain, schema_name, key_hash, server) = identity(&f.db, "mv");
    assert_eq!(server, "default");
    let before = table_contents(&mut f.db.client(), &schema);
    let history = versions(&mut f.db.client(), &schema);
    let last_id = members_identity(&mut f.db.client(), &schema);
    let stay = table_contents(&mut f.db.client(), "tenant_stay");

    let m = moved(
        f.t.run(&["tenant", "move", "mv", "--to", "b", "--yes", "-o", "json"])
            .expect(0),
    );
    assert_eq!(
        (
            m.tenant.as_str(),
            m.from_server.as_str(),
            m.to_server.as_str()
        ),
        ("mv", "default", "b")
    );
    assert!(!m.source_kept);
    assert_eq!(m.tables, before.len(), "{m:?}");
    assert_eq!(
        m.rows,
        before.values().map(|(n, _)| *n as u64).sum::<u64>(),
        "{m:?}"
    );
    assert!(m.write_block_ms <= m.duration_ms, "{m:?}");

    // The registry row is the same tenant, now on b; the journal is closed.
    assert_eq!(
        identity(&f.db, "mv"),
        (id, domain, schema_name, key_hash.clone(), "b".to_string())
    );
    assert!(journal(&f.db).is_empty());
    // The data on b is the data the source had; the source copy is gone.
    let mut on_b = client_of(&f.b);
    assert_eq!(table_contents(&mut on_b, &schema), before);
    assert_eq!(versions(&mut on_b, &schema), history);
    assert!(!schema_exists(&f.db, &schema));
    // Another tenant on the source was not touched.
    assert_eq!(table_contents(&mut f.db.client(), "tenant_stay"), stay);
    // The identity goes on where it was (not at the highest id left), and the trigger that
    // keeps the funds' totals works on the new copy.
    let new_id: i64 = on_b
        .query_one(
            &format!(
                "INSERT INTO \"{schema}\".members (first_name, last_name) VALUES ('new', 'member') RETURNING id"
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(new_id, last_id + 1);
    let total = |c: &mut postgres::Client| -> String {
        c.query_one(
            &format!("SELECT total_received::text FROM \"{schema}\".funds WHERE id = 1"),
            &[],
        )
        .unwrap()
        .get(0)
    };
    let was = total(&mut on_b);
    on_b.batch_execute(&format!(
        "INSERT INTO \"{schema}\".donations (fund_id, amount) VALUES (1, 1000)"
    ))
    .unwrap();
    let now = total(&mut on_b);
    assert_eq!(
        now.parse::<f64>().unwrap() - was.parse::<f64>().unwrap(),
        1000.0
    );
    // The registry sees it on b, at head, without drift; the ledger has the move.
    f.t.run(&["check"]).expect(0);
    let events: Events =
        f.t.run(&["events", "-t", "mv", "-o", "json"])
            .expect(0)
            .json();
    assert!(
        events
            .events
            .iter()
            .any(|e| e.action == "move" && e.status == "ok"),
        "{events:?}"
    );

    // Back to default, keeping the old copy on b under another name.
    let on_b_before = table_contents(&mut on_b, &schema);
    let m = moved(
        f.t.run(&[
            "tenant",
            "move",
            "mv",
            "--to",
            "default",
            "--keep-source",
            "-o",
            "json",
        ])
        .expect(0),
    );
    assert!(m.source_kept);
    assert_eq!(identity(&f.db, "mv").4, "default");
    assert_eq!(identity(&f.db, "mv").3, key_hash);
    assert!(journal(&f.db).is_empty());
    assert_eq!(table_contents(&mut f.db.client(), &schema), on_b_before);
    let kept: Vec<String> = schemas(&mut on_b)
        .into_iter()
        .filter(|s| s.starts_with(&format!("{schema}$moved_")))
        .collect();
    assert_eq!(kept.len(), 1, "{:?}", schemas(&mut on_b));
    assert!(!schema_on(&mut on_b, &schema));
    assert_eq!(table_contents(&mut on_b, &kept[0]), on_b_before);
    assert!(m.message.contains(&kept[0]), "{}", m.message);
}

/// Members for the tenant killed during its copy: enough for the copy to take a moment.
const BIG: i64 = 300_000;

/// Members for the tenants whose move a gate holds between its fence and its commit.
const SOME: i64 = 2_000;

/// A writer on `db` inserting one member into `schema` on a thread: its backend's pid,
/// and the thread, which answers with the error's SQLSTATE and message.
#[allow(clippy::type_complexity)]
fn late_writer(
    db: &TestDb,
    schema: &str,
) -> (
    i32,
    std::thread::JoinHandle<Result<u64, (Option<String>, String)>>,
) {
    let (pid_tx, pid_rx) = mpsc::channel();
    let url = db.url.clone();
    let insert = format!(
        "INSERT INTO \"{schema}\".members (first_name, last_name) VALUES ('late', 'writer')"
    );
    let writer = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        pid_tx.send(pid).unwrap();
        c.execute(&insert, &[]).map_err(|e| {
            (
                e.as_db_error().map(|d| d.code().code().to_string()),
                e.to_string(),
            )
        })
    });
    (pid_rx.recv().unwrap(), writer)
}

/// Whether another session holds the write fence (an `EXCLUSIVE` lock) on `members`.
fn fenced(c: &mut postgres::Client, schema: &str) -> bool {
    c.query_one(
        "SELECT count(*) > 0 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = 'members' AND l.mode = 'ExclusiveLock' \
         AND l.granted AND l.pid <> pg_backend_pid()",
        &[&schema],
    )
    .unwrap()
    .get(0)
}

#[test]
fn writes_on_the_source_wait_during_the_copy_then_fail_and_reads_go_on() {
    let f = two();
    let schema = tenant(&f, "busy", SOME);
    let before = table_contents(&mut f.db.client(), &schema);
    let mut watch = f.db.client();
    // The move's fence holds until the old copy's rename commits: a gate holds the rename.
    let mut gate = Gate::schema_rename(&f.db.url, &schema);
    let mut child =
        f.t.spawn(&["tenant", "move", "busy", "--to", "b", "--yes", "-o", "json"]);
    child.wait_until("the source's tables are fenced", || {
        fenced(&mut watch, &schema)
    });

    // A writer on the source: it waits for the fence.
    let (writer_pid, writer) = late_writer(&f.db, &schema);
    child.wait_until("the writer waits for the move's fence", || {
        waits_for_tenantctl(&mut watch, writer_pid)
    });
    // A reader on the source: it answers while the move still runs and the writer waits.
    let mut reader = f.db.client();
    reader
        .batch_execute("SET statement_timeout = '20s'")
        .unwrap();
    let seen: i64 = reader
        .query_one(&format!("SELECT count(*) FROM \"{schema}\".members"), &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, before["members"].0);
    // The copy is done and the move waits to rename the old copy, the writer still held.
    child.wait_until("the move waits at the gate to rename the old copy", || {
        gate.blocked_tenantctl()
            .iter()
            .any(|b| b.query.contains("RENAME"))
    });
    assert!(!writer.is_finished(), "the writer was not held back");
    assert!(waits_for_tenantctl(&mut watch, writer_pid));
    gate.open();

    let run = child.finish();
    run.expect(0);
    let m = moved(&run);
    assert!(
        m.write_block_ms > 0 && m.write_block_ms <= m.duration_ms,
        "{m:?}"
    );
    // The waiting write failed: its table is gone; it landed nowhere.
    let (code, message) = writer
        .join()
        .unwrap()
        .expect_err("the late write succeeded");
    assert_eq!(code.as_deref(), Some("42P01"), "{message}");
    let mut on_b = client_of(&f.b);
    assert_eq!(table_contents(&mut on_b, &schema), before);
    assert!(!schema_exists(&f.db, &schema));
    assert_eq!(identity(&f.db, "busy").4, "b");
}

#[test]
fn a_move_killed_during_the_copy_leaves_the_source_registered_and_a_rerun_finishes_it() {
    let f = two();
    let schema = tenant(&f, "cut", BIG);
    let row = row_text(&f.db, "cut");
    let before = table_contents(&mut f.db.client(), &schema);
    let mut watch = f.db.client();
    let mut child = f.t.spawn(&["tenant", "move", "cut", "--to", "b", "--yes"]);
    child.wait_until("the source's tables are fenced", || {
        fenced(&mut watch, &schema)
    });
    // One registered copy while the copy runs: the source's.
    assert_eq!(row_text(&f.db, "cut"), row);
    assert_eq!(journal(&f.db), [("b".to_string(), "copying".to_string())]);
    child.kill();

    // Still registered on the source, intact, with the move journalled as not switched.
    assert_eq!(row_text(&f.db, "cut"), row);
    assert_eq!(journal(&f.db), [("b".to_string(), "copying".to_string())]);
    assert_eq!(table_contents(&mut f.db.client(), &schema), before);
    // The fence went with the killed session: the source takes writes again.
    let mut writer = f.db.client();
    writer
        .batch_execute("SET statement_timeout = '30s'")
        .unwrap();
    writer
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".members (first_name, last_name) VALUES ('after', 'kill')"
        ))
        .unwrap();
    let source = table_contents(&mut f.db.client(), &schema);

    let plan: ServerMovePlan =
        f.t.run(&[
            "tenant",
            "move",
            "cut",
            "--to",
            "b",
            "--dry-run",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    let unfinished = plan.unfinished.expect("the interrupted move is reported");
    assert!(unfinished.contains("did not switch"), "{unfinished}");
    assert_eq!(row_text(&f.db, "cut"), row);
    assert_eq!(journal(&f.db).len(), 1);

    let m = moved(
        f.t.run(&["tenant", "move", "cut", "--to", "b", "--yes", "-o", "json"])
            .expect(0),
    );
    assert_eq!(m.to_server, "b");
    assert!(journal(&f.db).is_empty());
    assert_eq!(identity(&f.db, "cut").4, "b");
    assert_eq!(table_contents(&mut client_of(&f.b), &schema), source);
    assert!(!schema_exists(&f.db, &schema));
}

/// Writes the journal row of a move of `domain` from default to `to` in `phase`.
fn journal_row(db: &TestDb, domain: &str, to: &str, keep_source: bool, phase: &str) {
    let (id, _, schema, _, _) = identity(db, domain);
    db.client()
        .execute(
            "INSERT INTO public.tenant_moves (tenant_id, from_server, to_server, schema_name, keep_source, phase) \
             VALUES ($1, 'default', $2, $3, $4, $5)",
            &[&id, &to, &schema, &keep_source, &phase],
        )
        .unwrap();
}

#[test]
fn a_move_left_switched_by_an_earlier_version_keeps_its_old_copy_renamed_never_dropped() {
    let f = two();
    // The state an earlier tenantctl, which switched the registry before fencing the
    // old copy, left when killed in between: the tenant registered on b with its complete
    // copy there, the old schema still on the source under its own name (where writes
    // may have landed after the switch), the journal saying `switched`. It is made by a
    // move that keeps the old copy, whose rename is then undone, and the journal row
    // written back. (This tenantctl's own kills are in `crash`.)
    for (domain, keep) in [("sw", false), ("swk", true)] {
        let schema = tenant(&f, domain, 20);
        f.t.run(&["tenant", "move", domain, "--to", "b", "--keep-source"])
            .expect(0);
        let mut source = f.db.client();
        let kept: String = source
            .query_one(
                "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1 || '$moved\\_%'",
                &[&schema],
            )
            .unwrap()
            .get(0);
        source
            .batch_execute(&format!("ALTER SCHEMA \"{kept}\" RENAME TO \"{schema}\""))
            .unwrap();
        journal_row(&f.db, domain, "b", keep, "switched");
        let on_b = table_contents(&mut client_of(&f.b), &schema);
        let row = row_text(&f.db, domain);

        let plan: ServerMovePlan =
            f.t.run(&[
                "tenant",
                "move",
                domain,
                "--to",
                "b",
                "--dry-run",
                "-o",
                "json",
            ])
            .expect(0)
            .json();
        assert!(plan.message.starts_with("would finish"), "{plan:?}");
        assert!(schema_exists(&f.db, &schema));

        let m = moved(
            f.t.run(&["tenant", "move", domain, "--to", "b", "--yes", "-o", "json"])
                .expect(0),
        );
        assert!(m.message.contains("finished the interrupted move"), "{m:?}");
        assert!(
            m.message.contains("writes may have reached it"),
            "the old copy must be kept and said to be suspect: {m:?}"
        );
        assert!(m.source_kept, "{m:?}");
        assert!(journal(&f.db).is_empty());
        assert_eq!(row_text(&f.db, domain), row, "the registry row changed");
        assert!(
            !schema_exists(&f.db, &schema),
            "the old copy was not fenced"
        );
        let renamed: i64 =
            f.db.client()
                .query_one(
                    "SELECT count(*) FROM pg_namespace WHERE nspname LIKE $1 || '$moved\\_%'",
                    &[&schema],
                )
                .unwrap()
                .get(0);
        assert_eq!(renamed, 1, "{domain}: the old copy must be kept, renamed");
        assert_eq!(table_contents(&mut client_of(&f.b), &schema), on_b);
        // A second rerun has nothing left to do, and says so with success (a script that
        // reruns a move it saw die does not fail once it has finished).
        let again = f.t.run(&["tenant", "move", domain, "--to", "b", "--yes"]);
        again.expect(0);
        assert!(
            again.stdout.contains("already on server b; nothing to do"),
            "{}",
            again.stdout
        );
        assert_eq!(table_contents(&mut client_of(&f.b), &schema), on_b);
    }
}

/// Starts `tenant move DOMAIN --to TO` with `failpoint` armed to pause, waits until it is
/// there, and kills it (SIGKILL).
fn kill_move_at(f: &Two, domain: &str, to: &str, failpoint: &str) {
    let mut child =
        f.t.clone()
            .env("FAILPOINTS", &format!("{failpoint}=pause"))
            .spawn(&["tenant", "move", domain, "--to", to, "--yes"]);
    child.wait_for_stderr(&format!("failpoint {failpoint}"));
    child.kill();
}

/// An interrupted move undone while its target is down: the source is put back first
/// (the tenant is available again at once), the command says what is left and exits 3,
/// and the rerun once the target answers removes it. With the target taken out of the
/// configuration, the undo is done on the source alone and says what is left there.
#[test]
fn an_interrupted_move_is_undone_on_the_source_when_its_target_is_down_or_gone() {
    let f = two();
    let mut before = BTreeMap::new();
    for domain in ["down", "gone"] {
        let schema = tenant(&f, domain, 20);
        before.insert(domain, table_contents(&mut f.db.client(), &schema));
        // Killed with the old copy fenced: the tenant is unavailable until the rerun.
        kill_move_at(&f, domain, "b", "move.source-fenced");
        assert!(!schema_exists(&f.db, &schema), "{domain}: not fenced");
    }
    f.b.stop();
    let run =
        f.t.run(&["tenant", "move", "down", "--to", "default", "--yes"]);
    expect_error(
        &run,
        3,
        &[
            "tenant down is back on server default and available",
            "partial copy on server b",
            "once server b answers",
        ],
    );
    assert_eq!(
        table_contents(&mut f.db.client(), "tenant_down"),
        before["down"],
        "the source is back whole"
    );
    assert_eq!(identity(&f.db, "down").4, "default");
    // The undo is unfinished: other commands still leave the tenant alone.
    let archive = f.config.path().join("down.tenant");
    expect_error(
        &f.t.run(&["tenant", "export", "down", "-f", archive.to_str().unwrap()]),
        1,
        &["unfinished move"],
    );
    assert!(!archive.exists());
    f.b.start_again();
    let run =
        f.t.run(&["tenant", "move", "down", "--to", "default", "--yes"]);
    run.expect(0);
    assert!(
        run.stdout.contains("undid the interrupted move"),
        "{}",
        run.stdout
    );
    assert!(!schema_on(&mut client_of(&f.b), "tenant_down"));

    // Server b taken out of the configuration: nothing can be done there from here.
    std::fs::write(f.config.path().join("tenants.toml"), "").unwrap();
    let run =
        f.t.run(&["tenant", "move", "gone", "--to", "default", "--yes"]);
    run.expect(0);
    for part in [
        "tenant gone is back on server default and available",
        "partial copy on server b (schema \"tenant_gone\") is left",
        "no longer in the configuration",
    ] {
        assert!(run.stdout.contains(part), "{part}: {}", run.stdout);
    }
    assert_eq!(
        table_contents(&mut f.db.client(), "tenant_gone"),
        before["gone"]
    );
    assert_eq!(identity(&f.db, "gone").4, "default");
    assert!(journal(&f.db).is_empty());
    // What was left on b is left alone: it is not this command's to drop.
    assert!(schema_on(&mut client_of(&f.b), "tenant_gone"));
}

/// A journal and a registry that disagree (one edited by hand: the registry pointed at
/// the target while the move is still `copying`, and the application writing there) are
/// refused by every way of settling the move, dry or not, with nothing changed; once
/// the journal is put in step as the message says, the rerun finishes the move and
/// keeps what was written. A move asked to go on elsewhere after finishing an
/// interrupted one fails, and its dry run says so with the same exit code.
#[test]
fn a_move_whose_journal_and_registry_disagree_is_refused_and_changes_nothing() {
    let f = two();
    let schema = tenant(&f, "hx", 20);
    kill_move_at(&f, "hx", "b", "move.source-fenced");
    f.db.client()
        .batch_execute("UPDATE public.tenants SET server = 'b' WHERE domain = 'hx'")
        .unwrap();
    client_of(&f.b)
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".members (first_name, last_name, email) VALUES ('Late', 'Writer', 'late@example.com')"
        ))
        .unwrap();
    let on_b = table_contents(&mut client_of(&f.b), &schema);
    let state = || {
        (
            row_text(&f.db, "hx"),
            journal(&f.db),
            schemas(&mut f.db.client()),
            schemas(&mut client_of(&f.b)),
        )
    };
    let before = state();
    for to in ["default", "b"] {
        for extra in [
            &["--dry-run"][..],
            &["--yes"][..],
            &["--yes", "--keep-source"][..],
        ] {
            let mut args = vec!["tenant", "move", "hx", "--to", to];
            args.extend_from_slice(extra);
            let run = f.t.run(&args);
            expect_error(&run, 3, &["changed by hand", "phase = 'switched'"]);
            assert_eq!(state(), before, "{args:?} changed something");
        }
    }
    assert_eq!(table_contents(&mut client_of(&f.b), &schema), on_b);
    // The registry is right: the journal is put in step, and the rerun finishes.
    f.db.client()
        .batch_execute("UPDATE public.tenant_moves SET phase = 'switched'")
        .unwrap();
    // Asked to go elsewhere, it would finish the move and fail there: the dry run says so.
    let dry =
        f.t.run(&["tenant", "move", "hx", "--to", "default", "--dry-run"]);
    expect_error(&dry, 1, &["would finish", "not default"]);
    assert_eq!(journal(&f.db), [("b".to_string(), "switched".to_string())]);
    let run =
        f.t.run(&["tenant", "move", "hx", "--to", "default", "--yes"]);
    expect_error(&run, 1, &["not moved on to server default"]);
    assert!(journal(&f.db).is_empty());
    assert_eq!(identity(&f.db, "hx").4, "b");
    assert_eq!(table_contents(&mut client_of(&f.b), &schema), on_b);
    assert!(!schema_exists(&f.db, &format!("{schema}$moving")));
}

#[test]
fn a_partial_copy_of_an_interrupted_move_is_dropped_whichever_server_the_rerun_names() {
    let f = two();
    let c = cluster();
    write_config(f.config.path(), &[("b", &f.b), ("c", &c)]);
    // Two moves to b killed before their switch: one once the target is built (no row
    // copied), one once its copy is loaded and committed there (the source fenced until
    // the kill). Each leaves its copy on b and the journal saying `copying`.
    for (domain, at) in [("same", "move.target-built"), ("other", "move.copied")] {
        let schema = tenant(&f, domain, 20);
        let before = table_contents(&mut f.db.client(), &schema);
        let row = row_text(&f.db, domain);
        kill_move_at(&f, domain, "b", at);
        assert!(
            schema_on(&mut client_of(&f.b), &schema),
            "{domain}: killed at {at}, the copy on b is there"
        );
        assert_eq!(
            row_text(&f.db, domain),
            row,
            "{domain}: still registered as it was"
        );
        assert_eq!(table_contents(&mut f.db.client(), &schema), before);
    }
    assert_eq!(
        journal(&f.db),
        [
            ("b".to_string(), "copying".to_string()),
            ("b".to_string(), "copying".to_string())
        ]
    );
    // Rerun online from a source without `wal_level = logical` (the shared server): the
    // dry run and the move refuse it (exit 3) before the unfinished move is settled,
    // which stays as it was: its journal and its copy on b.
    let wal_level: String =
        f.db.client()
            .query_one("SHOW wal_level", &[])
            .unwrap()
            .get(0);
    assert_ne!(
        wal_level, "logical",
        "this test needs a shared server without wal_level = logical"
    );
    for extra in [&["--dry-run"][..], &["--yes"]] {
        let mut args = vec!["tenant", "move", "same", "--to", "b", "--online"];
        args.extend_from_slice(extra);
        let run = f.t.run(&args);
        expect_error(&run, 3, &["wal_level"]);
        assert_eq!(
            journal(&f.db).len(),
            2,
            "{extra:?}: the journal is as it was"
        );
        assert!(
            schema_on(&mut client_of(&f.b), "tenant_same"),
            "{extra:?}: the partial copy on b is still there"
        );
    }
    // Rerun to the same server: the partial copy is replaced by a whole one.
    let before = table_contents(&mut f.db.client(), "tenant_same");
    let plan: ServerMovePlan =
        f.t.run(&[
            "tenant",
            "move",
            "same",
            "--to",
            "b",
            "--dry-run",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    assert!(
        plan.unfinished
            .as_deref()
            .is_some_and(|u| u.contains("partial copy")),
        "{plan:?}"
    );
    moved(
        f.t.run(&["tenant", "move", "same", "--to", "b", "--yes", "-o", "json"])
            .expect(0),
    );
    let mut on_b = client_of(&f.b);
    assert_eq!(table_contents(&mut on_b, "tenant_same"), before);
    assert_eq!(identity(&f.db, "same").4, "b");
    // Rerun to another server: the copy on b goes, the tenant lands on c.
    let before = table_contents(&mut f.db.client(), "tenant_other");
    let m = moved(
        f.t.run(&[
            "tenant", "move", "other", "--to", "c", "--yes", "-o", "json",
        ])
        .expect(0),
    );
    assert_eq!(m.to_server, "c");
    assert!(!schema_on(&mut on_b, "tenant_other"));
    assert_eq!(table_contents(&mut client_of(&c), "tenant_other"), before);
    assert_eq!(identity(&f.db, "other").4, "c");
    assert!(journal(&f.db).is_empty());
    assert!(!schema_exists(&f.db, "tenant_other"));
}

#[test]
fn refused_moves_change_nothing() {
    let f = two();
    let schema = tenant(&f, "rf", 20);
    let start = world(&f, "rf", &schema);
    let same = |what: &str| assert_eq!(world(&f, "rf", &schema), start, "{what}");

    let run = f.t.run(&["tenant", "move", "rf", "--to", "nope", "--yes"]);
    expect_error(&run, 2, &["nope"]);
    same("unknown server");

    // Moving a tenant to the server it is on changes nothing and succeeds, dry or not,
    // with or without --online, without asking.
    for extra in [
        &[][..],
        &["--dry-run"],
        &["--online"],
        &["--online", "--dry-run"],
    ] {
        let mut args = vec!["tenant", "move", "rf", "--to", "default"];
        args.extend_from_slice(extra);
        let run = f.t.run(&args);
        run.expect(0);
        assert!(
            run.stdout
                .contains("tenant rf is already on server default; nothing to do"),
            "{extra:?}: {}",
            run.stdout
        );
        same("already there");
    }

    let mut on_b = client_of(&f.b);
    on_b.batch_execute(&format!("CREATE SCHEMA \"{schema}\""))
        .unwrap();
    let taken = world(&f, "rf", &schema);
    let run = f.t.run(&["tenant", "move", "rf", "--to", "b", "--yes"]);
    expect_error(&run, 1, &["already exists on server b"]);
    assert_eq!(
        world(&f, "rf", &schema),
        taken,
        "schema taken on the target"
    );
    on_b.batch_execute(&format!("DROP SCHEMA \"{schema}\""))
        .unwrap();

    f.db.client()
        .batch_execute(&format!(
            "CREATE SCHEMA reports; CREATE VIEW reports.names AS SELECT first_name FROM \"{schema}\".members"
        ))
        .unwrap();
    let viewed = world(&f, "rf", &schema);
    let run = f.t.run(&["tenant", "move", "rf", "--to", "b", "--yes"]);
    expect_error(&run, 1, &["reports", "old copy"]);
    assert_eq!(world(&f, "rf", &schema), viewed, "a view depends on it");
    // Kept renamed, the old copy would still be read and written through the view.
    let run =
        f.t.run(&["tenant", "move", "rf", "--to", "b", "--keep-source"]);
    expect_error(&run, 1, &["reports", "old copy"]);
    assert_eq!(world(&f, "rf", &schema), viewed, "a view depends on it");
    f.db.client()
        .batch_execute("DROP SCHEMA reports CASCADE")
        .unwrap();
    same("after the view is gone");

    let run = f.t.run(&["tenant", "move", "rf", "--to", "b"]);
    expect_error(&run, 2, &[]);
    same("no --yes without a terminal");

    // A schema under the name the fence renames the old copy to, which no unfinished
    // move of the tenant accounts for: refused, dry run and move alike, nothing touched.
    let moving = format!("{schema}$moving");
    f.db.client()
        .batch_execute(&format!("CREATE SCHEMA \"{moving}\""))
        .unwrap();
    let squatted = world(&f, "rf", &schema);
    for args in [&["--dry-run"][..], &["--yes"][..]] {
        let mut argv = vec!["tenant", "move", "rf", "--to", "b"];
        argv.extend_from_slice(args);
        let run = f.t.run(&argv);
        expect_error(&run, 1, &[&moving, "drop or rename it first"]);
        assert_eq!(
            world(&f, "rf", &schema),
            squatted,
            "{args:?}: the fence's name taken"
        );
    }
    f.db.client()
        .batch_execute(&format!("DROP SCHEMA \"{moving}\""))
        .unwrap();

    // A history the local migrations do not account for: the copy could not be built
    // by them. Refused alike by the dry run and the move.
    f.db.client()
        .batch_execute(&format!(
            "INSERT INTO \"{schema}\".refinery_schema_history (version, name, applied_on, checksum) \
             VALUES (99, 'elsewhere', '2026-01-01T00:00:00Z', '1')"
        ))
        .unwrap();
    let drifted = world(&f, "rf", &schema);
    for args in [&["--dry-run"][..], &["--yes"][..]] {
        let mut argv = vec!["tenant", "move", "rf", "--to", "b"];
        argv.extend_from_slice(args);
        let run = f.t.run(&argv);
        expect_error(&run, 3, &["99"]);
        assert_eq!(
            world(&f, "rf", &schema),
            drifted,
            "{args:?}: drifted history"
        );
    }
    f.db.client()
        .batch_execute(&format!(
            "DELETE FROM \"{schema}\".refinery_schema_history WHERE version = 99"
        ))
        .unwrap();

    // A column made by hand, which the copy (built by the migrations) would not have:
    // the dry run tries the build on the target, rolled back, and refuses as the move
    // does, with or without --keep-source.
    f.db.client()
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".members ADD COLUMN by_hand text"
        ))
        .unwrap();
    let by_hand = world(&f, "rf", &schema);
    for args in [&["--dry-run"][..], &["--yes"][..], &["--keep-source"][..]] {
        let mut argv = vec!["tenant", "move", "rf", "--to", "b"];
        argv.extend_from_slice(args);
        let run = f.t.run(&argv);
        expect_error(&run, 3, &["by_hand"]);
        assert_eq!(
            world(&f, "rf", &schema),
            by_hand,
            "{args:?}: a column by hand"
        );
    }
    f.db.client()
        .batch_execute(&format!(
            "ALTER TABLE \"{schema}\".members DROP COLUMN by_hand"
        ))
        .unwrap();
    // A constraint of the migrations dropped by hand, an index and a trigger made by
    // hand: the copy would not be the tenant's, so refused alike.
    for (change, undo, named) in [
        (
            format!("ALTER TABLE \"{schema}\".members DROP CONSTRAINT members_membership_status_check"),
            format!(
                "ALTER TABLE \"{schema}\".members ADD CONSTRAINT members_membership_status_check \
                 CHECK (membership_status IN ('visitor', 'regular', 'member', 'inactive', 'deceased'))"
            ),
            "members_membership_status_check",
        ),
        (
            format!("CREATE INDEX by_hand_idx ON \"{schema}\".members (last_name)"),
            format!("DROP INDEX \"{schema}\".by_hand_idx"),
            "by_hand_idx",
        ),
        (
            format!(
                "CREATE FUNCTION \"{schema}\".touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; \
                 CREATE TRIGGER by_hand_trg BEFORE INSERT ON \"{schema}\".members FOR EACH ROW EXECUTE FUNCTION \"{schema}\".touch()"
            ),
            format!("DROP TRIGGER by_hand_trg ON \"{schema}\".members; DROP FUNCTION \"{schema}\".touch()"),
            "by_hand_trg",
        ),
    ] {
        f.db.client().batch_execute(&change).unwrap();
        let changed = world(&f, "rf", &schema);
        for args in [&["--dry-run"][..], &["--yes"][..], &["--keep-source"][..]] {
            let mut argv = vec!["tenant", "move", "rf", "--to", "b"];
            argv.extend_from_slice(args);
            let run = f.t.run(&argv);
            expect_error(&run, 3, &[named]);
            assert_eq!(world(&f, "rf", &schema), changed, "{args:?}: {named}");
        }
        f.db.client().batch_execute(&undo).unwrap();
    }

    f.b.stop();
    let run = f.t.run(&["tenant", "move", "rf", "--to", "b", "--yes"]);
    f.b.start_again();
    expect_error(&run, 3, &[&format!("127.0.0.1:{}", f.b.port)]);
    assert!(!run.stderr.contains(PASSWORD), "{}", run.stderr);
    // Refused before the journal was written: nothing to clean up.
    same("target server down");

    // None of it left anything in the way.
    moved(
        f.t.run(&["tenant", "move", "rf", "--to", "b", "--yes", "-o", "json"])
            .expect(0),
    );
    assert_eq!(table_contents(&mut client_of(&f.b), &schema), start.data);
}

#[test]
fn a_session_reading_the_old_copy_at_the_fence_never_lets_a_waiting_write_into_it() {
    let f = two();
    let schema = tenant(&f, "rd", SOME);
    let before = table_contents(&mut f.db.client(), &schema);
    let mut watch = f.db.client();
    // The move's fence holds until the old copy's rename commits: a gate holds the rename.
    let mut gate = Gate::schema_rename(&f.db.url, &schema);
    let mut child =
        f.t.spawn(&["tenant", "move", "rd", "--to", "b", "--yes", "-o", "json"]);
    child.wait_until("the source's tables are fenced", || {
        fenced(&mut watch, &schema)
    });
    // A reader whose transaction stays open across the fence: dropping the old copy
    // would have to wait for it.
    let mut reader = f.db.client();
    reader
        .batch_execute(&format!("BEGIN; SELECT count(*) FROM \"{schema}\".members"))
        .unwrap();
    // A write that waits for the fence, seen waiting before the move may go on.
    let (writer_pid, writer) = late_writer(&f.db, &schema);
    child.wait_until("the writer waits for the move's fence", || {
        waits_for_tenantctl(&mut watch, writer_pid)
    });
    child.wait_until("the move waits at the gate to rename the old copy", || {
        gate.blocked_tenantctl()
            .iter()
            .any(|b| b.query.contains("RENAME"))
    });
    assert!(
        waits_for_tenantctl(&mut watch, writer_pid),
        "the waiting write was let through before the old copy was renamed: {:?}",
        writer.is_finished().then(|| writer.join().unwrap())
    );
    gate.open();
    let run = child.finish();
    run.expect(0);
    let m = moved(&run);
    // The old copy was renamed rather than dropped, and the waiting write failed while
    // the reader was still there.
    assert!(m.source_kept, "{m:?}");
    assert!(m.message.contains("instead of dropped"), "{}", m.message);
    let (code, message) = writer
        .join()
        .unwrap()
        .expect_err("the late write succeeded");
    assert_eq!(code.as_deref(), Some("42P01"), "{message}");
    reader.batch_execute("COMMIT").unwrap();
    assert_eq!(identity(&f.db, "rd").4, "b");
    assert!(journal(&f.db).is_empty());
    assert!(!schema_exists(&f.db, &schema));
    let kept: String =
        f.db.client()
            .query_one(
                "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1 || '$moved\\_%'",
                &[&schema],
            )
            .unwrap()
            .get(0);
    assert_eq!(table_contents(&mut f.db.client(), &kept), before);
    assert_eq!(table_contents(&mut client_of(&f.b), &schema), before);
}

/// Ctrl-C while a move waits at its fence (a transaction left open holds one of the
/// tenant's tables) undoes the move: exit 130, the tenant registered on the source as it
/// was, no journal row, nothing on the target.
#[test]
fn ctrl_c_during_a_move_undoes_it() {
    let f = two();
    let schema = tenant(&f, "cc", 20);
    let start = world(&f, "cc", &schema);
    let mut open = f.db.client();
    open.batch_execute(&format!(
        "BEGIN; UPDATE \"{schema}\".households SET name = name WHERE id = (SELECT min(id) FROM \"{schema}\".households)"
    ))
    .unwrap();
    let mut child = f.t.spawn(&["tenant", "move", "cc", "--to", "b", "--yes"]);
    child.wait_until("the move's fence waits", || {
        f.db.client()
            .query_one(
                "SELECT count(*) > 0 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'relation' AND NOT l.granted AND a.application_name LIKE 'tenantctl%'",
                &[],
            )
            .unwrap()
            .get(0)
    });
    child.signal("INT");
    let run = child.finish();
    open.batch_execute("ROLLBACK").unwrap();
    assert_eq!(run.code, 130, "{}", run.stderr);
    assert!(run.stderr.contains("the move was undone"), "{}", run.stderr);
    assert_eq!(world(&f, "cc", &schema), start, "the tenant as it was");
}

/// While a move is unfinished (killed with its old copy fenced, before the registry
/// switch), nothing else touches the tenant's schema: provision and upgrade refuse it
/// (and create nothing on the old server), drop, export and restore refuse it, dry runs
/// included; the move's rerun then finishes it and the registry's cache is true.
#[test]
fn commands_leave_a_tenant_alone_while_its_move_is_unfinished() {
    let f = two();
    let schema = tenant(&f, "um", 20);
    let archive = f.config.path().join("um.tenant");
    let archive = archive.to_str().unwrap().to_string();
    f.t.run(&["tenant", "export", "um", "-f", &archive])
        .expect(0);
    let data = table_contents(&mut f.db.client(), &schema);
    let mut child =
        f.t.clone()
            .env("FAILPOINTS", "move.source-fenced=pause")
            .spawn(&["tenant", "move", "um", "--to", "b", "--yes"]);
    child.wait_for_stderr("failpoint move.source-fenced");
    child.kill();
    let state = || {
        (
            row_text(&f.db, "um"),
            journal(&f.db),
            schemas(&mut f.db.client()),
            schemas(&mut client_of(&f.b)),
        )
    };
    let fenced = state();
    assert!(!schema_exists(&f.db, &schema), "the old copy is fenced");
    for (args, code) in [
        (vec!["provision", "--tenant", "um"], 1),
        (vec!["provision", "--all"], 1),
        (vec!["upgrade", "--tenant", "um"], 1),
        (vec!["upgrade", "--all"], 1),
        (vec!["tenant", "drop", "um", "--yes", "--dry-run"], 1),
        (vec!["tenant", "drop", "um", "--yes"], 1),
        (vec!["tenant", "export", "um", "-f", "-"], 1),
        (
            vec!["tenant", "restore", "um", &archive, "--yes", "--dry-run"],
            1,
        ),
        (vec!["tenant", "restore", "um", &archive, "--yes"], 1),
    ] {
        let run = f.t.run(&args);
        assert_eq!(run.code, code, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stdout.contains("unfinished move") || run.stderr.contains("unfinished move"),
            "{args:?}: {}{}",
            run.stdout,
            run.stderr
        );
        assert_eq!(state(), fenced, "{args:?} changed something");
    }
    // The reads say the move is unfinished and how to settle it, show what the registry
    // last saw (not a missing schema), and cache nothing from the fenced source.
    let one: serde_json::Value =
        f.t.run(&["status", "--tenant", "um", "-o", "json"])
            .expect(0)
            .json();
    let moving = one["moving"].as_str().unwrap_or_default();
    assert!(
        moving.contains("unfinished move from server default to server b")
            && moving.contains("tenant move um --to b"),
        "{one}"
    );
    assert_eq!(one["schema_provisioned"], true, "{one}");
    let shown: serde_json::Value =
        f.t.run(&["tenant", "show", "um", "-o", "json"])
            .expect(0)
            .json();
    assert!(shown["migration_status"]["moving"].is_string(), "{shown}");
    let all: serde_json::Value = f.t.run(&["status", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(all["summary"]["moving"], 1, "{all}");
    assert_eq!(all["summary"]["unprovisioned"], 0, "{all}");
    let text = f.t.run(&["status", "--tenant", "um"]);
    text.expect(0);
    assert!(text.stdout.contains("unfinished move"), "{}", text.stdout);
    assert_eq!(state(), fenced, "the reads changed something");
    moved(
        f.t.run(&["tenant", "move", "um", "--to", "b", "--yes", "-o", "json"])
            .expect(0),
    );
    assert_eq!(table_contents(&mut client_of(&f.b), &schema), data);
    let row = f
        .db
        .client()
        .query_one(
            "SELECT server, schema_provisioned, current_revision FROM public.tenants WHERE domain = 'um'",
            &[],
        )
        .unwrap();
    let on_b: i32 = client_of(&f.b)
        .query_one(
            &format!("SELECT max(version) FROM \"{schema}\".refinery_schema_history"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, bool>(1),
            row.get::<_, Option<i32>>(2)
        ),
        ("b".to_string(), true, Some(on_b))
    );
}

/// A view and a function in another schema that come to depend on the tenant's schema
/// during the copy undo the move (exit 1): they are never dropped with the old copy, and
/// the tenant stays where it was, whole.
#[test]
fn objects_elsewhere_made_during_the_copy_undo_the_move_and_are_never_dropped() {
    let f = two();
    let schema = tenant(&f, "dep", 20);
    let data = table_contents(&mut f.db.client(), &schema);
    let mut child =
        f.t.clone()
            .env("FAILPOINTS", "move.source-locked=sleep(3000)")
            .spawn(&["tenant", "move", "dep", "--to", "b", "--yes"]);
    child.wait_for_stderr("failpoint move.source-locked");
    f.db.client()
        .batch_execute(&format!(
            "CREATE SCHEMA reports; \
             CREATE VIEW reports.names AS SELECT first_name FROM \"{schema}\".members; \
             CREATE FUNCTION reports.everyone() RETURNS SETOF \"{schema}\".members \
                 LANGUAGE sql AS 'SELECT * FROM \"{schema}\".members'"
        ))
        .unwrap();
    let run = child.finish();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("reports.names") && run.stderr.contains("the move was undone"),
        "{}",
        run.stderr
    );
    let left: i64 =
        f.db.client()
            .query_one(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'reports' AND c.relname = 'names'",
                &[],
            )
            .unwrap()
            .get(0);
    assert_eq!(left, 1, "the view was dropped");
    f.db.client()
        .query_one("SELECT count(*) FROM reports.everyone()", &[])
        .expect("the function is still there");
    assert_eq!(identity(&f.db, "dep").4, "default");
    assert_eq!(table_contents(&mut f.db.client(), &schema), data);
    assert!(journal(&f.db).is_empty());
    assert!(!schemas(&mut client_of(&f.b)).contains(&schema));
}
