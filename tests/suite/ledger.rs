//! Every change to a tenant is in the run ledger: one table of every command that changes
//! a tenant (provision, recreate, upgrade, downgrade, stamp, register, rotate-key, import,
//! clone, restore, backup, move offline and online, drop, and the adoption of an Alembic
//! fleet), each run against a real server and followed by exactly the ledger rows it
//! must have written: action, status, from and to revision, the tenant's id, domain and
//! schema, and the run id the command printed (bulk runs). Reads and dry runs between
//! them write nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::adopt_alembic::{
    alembic_upgrade, build_registry, map_file, migrations_from_alembic, original, R1, R2,
};
use crate::checks::seed_example;
use crate::cluster::Cluster;
use crate::support::{ready, tenantctl, Run, Tenantctl, TestDb};

/// One ledger row as a command must have written it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Want {
    domain: &'static str,
    action: &'static str,
    status: &'static str,
    from: Option<i32>,
    to: Option<i32>,
}

fn ok(domain: &'static str, action: &'static str, from: Option<i32>, to: Option<i32>) -> Want {
    Want {
        domain,
        action,
        status: "ok",
        from,
        to,
    }
}

fn failed(domain: &'static str, action: &'static str, from: Option<i32>, to: Option<i32>) -> Want {
    Want {
        status: "failed",
        ..ok(domain, action, from, to)
    }
}

/// A ledger row as stored.
#[derive(Debug, Clone)]
struct Stored {
    id: i64,
    run_id: String,
    tenant_id: i64,
    domain: String,
    schema_name: String,
    action: String,
    from: Option<i32>,
    to: Option<i32>,
    status: String,
    error: Option<String>,
    in_order: bool,
    db_user: String,
    client_host: Option<String>,
}

/// The ledger rows after `after`, oldest first (none before there is a ledger).
fn rows_after(db: &TestDb, after: i64) -> Vec<Stored> {
    let mut c = db.client();
    let exists: bool = c
        .query_one(
            "SELECT to_regclass('public.tenant_events') IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    if !exists {
        return Vec::new();
    }
    c.query(
        "SELECT id, run_id::text, tenant_id, domain, schema_name, action, from_revision, \
             to_revision, status, error, started_at <= finished_at, db_user, client_host \
             FROM public.tenant_events WHERE id > $1 ORDER BY id",
        &[&after],
    )
    .unwrap()
    .iter()
    .map(|r| Stored {
        id: r.get(0),
        run_id: r.get(1),
        tenant_id: r.get(2),
        domain: r.get(3),
        schema_name: r.get(4),
        action: r.get(5),
        from: r.get(6),
        to: r.get(7),
        status: r.get(8),
        error: r.get(9),
        in_order: r.get(10),
        db_user: r.get(11),
        client_host: r.get(12),
    })
    .collect()
}

/// What the ledger is checked against, command after command.
struct Ledger<'a> {
    db: &'a TestDb,
    /// The newest row seen.
    last: i64,
    /// Each tenant's (id, schema) while it is registered, kept after it is dropped.
    known: BTreeMap<String, (i64, String)>,
    /// The run ids of the commands checked so far.
    runs: BTreeSet<String>,
    /// The role tenantctl connects as.
    me: String,
}

impl<'a> Ledger<'a> {
    fn new(db: &'a TestDb) -> Ledger<'a> {
        let me = db
            .client()
            .query_one("SELECT current_user::text", &[])
            .unwrap()
            .get(0);
        let mut l = Ledger {
            db,
            last: 0,
            known: BTreeMap::new(),
            runs: BTreeSet::new(),
            me,
        };
        l.last = rows_after(db, 0).last().map_or(0, |r| r.id);
        l
    }

    /// The registry's (id, schema, current revision) of `domain`, if registered.
    fn registered(&self, domain: &str) -> Option<(i64, String, Option<i32>)> {
        self.db
            .client()
            .query_opt(
                "SELECT id, schema_name, current_revision FROM public.tenants WHERE domain = $1",
                &[&domain],
            )
            .unwrap()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
    }

    /// Runs `args` on `t` (with `stdin` on standard input when given) expecting exit
    /// `code`, then checks that the ledger got exactly the rows `want` (in any order),
    /// each naming its tenant as the registry does, and with the run id the command
    /// printed in JSON (`run_id`) when it prints one.
    fn step_fed(
        &mut self,
        t: &Tenantctl,
        args: &[&str],
        stdin: Option<&[u8]>,
        code: i32,
        want: &[Want],
    ) -> Run {
        let what = args.join(" ");
        let run = match stdin {
            Some(input) => t.run_with_stdin(args, input),
            None => t.run(args),
        };
        run.expect(code);
        let printed: Option<String> = serde_json::from_str::<Value>(&run.stdout)
            .ok()
            .and_then(|v| v.get("run_id").and_then(Value::as_str).map(str::to_string));
        let rows = rows_after(self.db, self.last);
        let mut got: Vec<Want> = Vec::new();
        let mut runs = BTreeSet::new();
        for r in &rows {
            let w = want
                .iter()
                .find(|w| w.domain == r.domain && w.action == r.action)
                .unwrap_or_else(|| {
                    panic!("{what}: an unexpected ledger row {r:?}\nwanted {want:?}")
                });
            got.push(Want {
                domain: w.domain,
                action: w.action,
                status: if r.status == w.status {
                    w.status
                } else {
                    "(other)"
                },
                from: r.from,
                to: r.to,
            });
            // The tenant, as the registry names it (or named it before a drop).
            let now = self.registered(&r.domain);
            if let Some((id, schema, _)) = &now {
                self.known
                    .entry(r.domain.clone())
                    .or_insert((*id, schema.clone()));
            }
            let (id, schema) = self
                .known
                .get(&r.domain)
                .unwrap_or_else(|| panic!("{what}: a row for a tenant never registered: {r:?}"));
            assert_eq!(
                (r.tenant_id, &r.schema_name),
                (*id, schema),
                "{what}: the row names another tenant than the registry: {r:?}"
            );
            // What the row says the tenant is at is what the registry says (when the row is
            // the tenant's last of this command, and the tenant is still registered).
            if let Some((_, _, current)) = now {
                let last_of_tenant = rows.iter().rev().find(|x| x.domain == r.domain).unwrap();
                if last_of_tenant.id == r.id {
                    assert_eq!(
                        r.to, current,
                        "{what}: the row's to_revision is not the registry's: {r:?}"
                    );
                }
            }
            assert_eq!(r.error.is_some(), r.status != "ok", "{what}: {r:?}");
            assert!(r.in_order, "{what}: started after it finished: {r:?}");
            assert_eq!(r.db_user, self.me, "{what}: {r:?}");
            assert!(
                r.client_host.as_deref().is_some_and(|h| !h.is_empty()),
                "{what}: no client host: {r:?}"
            );
            assert!(
                uuid::Uuid::parse_str(&r.run_id).is_ok(),
                "{what}: not a run id: {r:?}"
            );
            assert!(
                !self.runs.contains(&r.run_id),
                "{what}: the run id of an earlier command: {r:?}"
            );
            runs.insert(r.run_id.clone());
        }
        let mut sorted_got = got.clone();
        sorted_got.sort();
        let mut sorted_want = want.to_vec();
        sorted_want.sort();
        assert_eq!(
            sorted_got, sorted_want,
            "{what}: the ledger rows (stored: {rows:#?})\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        );
        if let (Some(id), false) = (&printed, rows.is_empty()) {
            assert_eq!(
                runs.iter().collect::<Vec<_>>(),
                vec![id],
                "{what}: every row carries the run id the command printed"
            );
        }
        self.runs.extend(runs);
        if let Some(r) = rows.last() {
            self.last = r.id;
        }
        run
    }
}

/// One command of the table: how it runs and the ledger rows it must write.
struct Step {
    args: Vec<String>,
    /// A failpoint armed to fail there (`FAILPOINTS=NAME=return`).
    failing_at: Option<&'static str>,
    stdin: Option<Vec<u8>>,
    code: i32,
    want: Vec<Want>,
}

/// A step running `args` (split at spaces) and expecting exit `code` and rows `want`.
fn step(args: &str, code: i32, want: &[Want]) -> Step {
    Step {
        args: args.split(' ').map(str::to_string).collect(),
        failing_at: None,
        stdin: None,
        code,
        want: want.to_vec(),
    }
}

impl Step {
    fn failing_at(self, failpoint: &'static str) -> Step {
        Step {
            failing_at: Some(failpoint),
            ..self
        }
    }

    fn fed(self, stdin: Vec<u8>) -> Step {
        Step {
            stdin: Some(stdin),
            ..self
        }
    }
}

/// Runs every step in order, checking the ledger after each.
fn run_table(l: &mut Ledger, t: &Tenantctl, steps: Vec<Step>) {
    for s in steps {
        // An online move into the shared server takes its turn at its replication workers.
        let _workers = (s.args.iter().any(|a| a == "--online")
            && s.args
                .windows(2)
                .any(|w| w[0] == "--to" && w[1] == "default"))
        .then(crate::support::shared_replication_workers);
        let t = match s.failing_at {
            Some(at) => t.clone().env("FAILPOINTS", &format!("{at}=return")),
            None => t.clone(),
        };
        let args: Vec<&str> = s.args.iter().map(String::as_str).collect();
        l.step_fed(&t, &args, s.stdin.as_deref(), s.code, &s.want);
    }
}

const N: Option<i32> = None;

fn v(version: i32) -> Option<i32> {
    Some(version)
}

#[test]
#[rustfmt::skip]
fn every_change_to_a_tenant_is_in_the_ledger_with_its_action_status_and_revisions() {
    let (db, t) = ready();
    // Server `b` takes logical replication, so that a tenant can move online from it.
    let b = Cluster::trusting("wal_level = logical\n");
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("tenants.toml"),
        format!("[servers.b]\nurl = \"{}\"\n", b.url("sslmode=disable")),
    )
    .unwrap();
    let t = t.cwd(config.path());
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("a.tenant");
    let f = file.to_str().unwrap();
    let out = work.path().join("backups");
    let out = out.to_str().unwrap();
    let mut l = Ledger::new(&db);

    // Registration, then every schema change of one tenant; a second tenant registered
    // and migrated in one command (one run).
    run_table(&mut l, &t, vec![
        step("tenant create la --name A -o json", 0, &[ok("la", "register", N, N)]),
        step("provision --tenant la -o json", 0, &[ok("la", "provision", N, N)]),
        // Up to date: nothing changed, nothing written.
        step("provision --tenant la -o json", 0, &[]),
        step("upgrade --tenant la 3 -o json", 0, &[ok("la", "upgrade", N, v(3))]),
        step("upgrade --all -o json", 0, &[ok("la", "upgrade", v(3), v(6))]),
        step("upgrade --all -o json", 0, &[]),
        step("downgrade --tenant la 4 --yes -o json", 0, &[ok("la", "downgrade", v(6), v(4))]),
        step("stamp --tenant la 5 -o json", 0, &[ok("la", "stamp", v(4), v(5))]),
        step("stamp --tenant la 3 --yes -o json", 0, &[ok("la", "stamp", v(5), v(3))]),
        step("provision --tenant la --force-recreate --yes -o json", 0, &[ok("la", "recreate", v(3), N)]),
        // A refusal is recorded as one: at base, there is nothing to downgrade to 2.
        step("downgrade --tenant la 2 --yes -o json", 1, &[Want { status: "refused", ..ok("la", "downgrade", N, N) }]),
        step("upgrade --tenant la -o json", 0, &[ok("la", "upgrade", N, v(6))]),
        step("tenant rotate-key la -o json", 0, &[ok("la", "rotate-key", v(6), v(6))]),
        step("tenant create lm --name M --migrate --target 2 -o json", 0, &[ok("lm", "register", N, N), ok("lm", "provision+upgrade", N, v(2))]),
    ]);

    // The tenant's data: reads and dry runs write nothing; every change is written, and
    // so is a change that failed once it had begun (it was undone).
    seed_example(&mut db.client(), "tenant_la", 2_000);
    let archive_once = |file: &std::path::Path| std::fs::read(file).unwrap();
    run_table(&mut l, &t, vec![
        step(&format!("tenant export la -f {f} -o json"), 0, &[]),
        step(&format!("tenant import {f} --as li --name I --dry-run -o json"), 0, &[]),
        step(&format!("tenant import {f} --as li --name I -o json"), 0, &[ok("li", "register", N, N), ok("li", "import", N, v(6))]),
        step("tenant clone la lc --name C --dry-run -o json", 0, &[]),
        step("tenant clone la lc --name C -o json", 0, &[ok("lc", "register", N, N), ok("lc", "import", N, v(6))]),
        step(&format!("tenant restore la {f} --dry-run -o json"), 0, &[]),
        step(&format!("tenant restore la {f} --yes -o json"), 0, &[ok("la", "restore", v(6), v(6))]),
    ]);
    // The archive cut short, read once from standard input: the restore has begun (the
    // tables fenced, the new schema built) when its load finds the damage.
    let whole = archive_once(&file);
    let cut_short = whole[..whole.len() * 3 / 4].to_vec();
    run_table(&mut l, &t, vec![
        step("tenant restore la - --yes -o json", 2, &[failed("la", "restore", v(6), v(6))]).fed(cut_short),
        step(&format!("backup --tenant la --tenant lm --out {out} -o json"), 0, &[ok("la", "backup", v(6), v(6)), ok("lm", "backup", v(2), v(2))]),
        step("tenant move la --to b --dry-run -o json", 0, &[]),
        step("tenant move la --to b --yes -o json", 3, &[failed("la", "move", v(6), v(6))]).failing_at("move.copied"),
        step("tenant move la --to b --yes -o json", 0, &[ok("la", "move", v(6), v(6))]),
        step("tenant move la --to default --online --yes -o json", 3, &[failed("la", "move (online)", v(6), v(6))]).failing_at("online.caught-up"),
        step("tenant move la --to default --online --yes -o json", 0, &[ok("la", "move (online)", v(6), v(6))]),
        // The end of tenants.
        step("tenant drop lc --dry-run -o json", 0, &[]),
        step("tenant drop lc --yes -o json", 0, &[ok("lc", "drop", v(6), N)]),
        step("tenant drop li --keep-schema --yes -o json", 0, &[ok("li", "drop (schema kept)", v(6), N)]),
        // Reading commands write nothing (check: lm is behind head, exit 5).
        step("status --all -o json", 0, &[]),
        step("current -o json", 0, &[]),
        step("tenant list -o json", 0, &[]),
        step("tenant show la -o json", 0, &[]),
        step("events -o json", 0, &[]),
        step("upgrade --all --dry-run -o json", 0, &[]),
        step("check -o json", 5, &[]),
    ]);

    // The adoption of an Alembic fleet stamps each tenant it adopts. The original
    // registry has no ledger until the adoption makes one.
    let db = TestDb::new();
    let one = original("first-church", "tenant_first_church");
    let two = original("grace-chapel", "tenant_grace_chapel");
    build_registry(&db, &[&one, &two]);
    alembic_upgrade(&db, one.schema, R1);
    alembic_upgrade(&db, two.schema, R2);
    let (migrations, map_text) = migrations_from_alembic();
    let (_m, map) = map_file(&map_text);
    let map = map.to_str().unwrap();
    let t = tenantctl(&db).migrations(migrations.path());
    let mut l = Ledger::new(&db);
    run_table(&mut l, &t, vec![
        step(&format!("adopt alembic --map {map} --dry-run -o json"), 0, &[]),
        step(&format!("adopt alembic --map {map} -o json"), 0, &[ok("first-church", "stamp", N, v(1)), ok("grace-chapel", "stamp", N, v(2))]),
        step(&format!("adopt alembic --map {map} -o json"), 0, &[]),
        step("upgrade --all -o json", 0, &[ok("first-church", "upgrade", v(1), v(3)), ok("grace-chapel", "upgrade", v(2), v(3))]),
    ]);
}
