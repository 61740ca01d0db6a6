//! What the server sees while tenantctl runs: backends running a statement, sessions
//! waiting for a tenant's lock or for a lock tenantctl holds, tenant locks taken by the test itself (with the key
//! tenantctl computes, `tenantctl::pg::db::lock_key`), and a poll with a deadline for
//! conditions that do not depend on a running child.

use std::time::{Duration, Instant};

use tenantctl::pg::db::{lock_key, LockSpace};

use super::{TestDb, DEADLINE};

/// Polls `cond` every 20 ms until it holds, failing with `what` after `DEADLINE`.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {} s waiting until {what}",
            DEADLINE.as_secs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Backends of other sessions on the test database running a statement that contains
/// `needle`, with the tenant schema they hold a lock on (the namespace lock every
/// `CREATE` in a schema takes until its transaction ends), when they hold one.
pub fn backends_running(db: &TestDb, needle: &str) -> Vec<(i32, Option<String>)> {
    db.client()
        .query(
            "SELECT a.pid, (SELECT n.nspname::text FROM pg_locks l JOIN pg_namespace n ON n.oid = l.objid \
               WHERE l.pid = a.pid AND l.locktype = 'object' AND l.classid = 'pg_namespace'::regclass \
               AND l.granted AND n.nspname LIKE 'tenant\\_%' LIMIT 1) \
             FROM pg_stat_activity a \
             WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() \
               AND a.state = 'active' AND strpos(a.query, $1) > 0",
            &[&needle],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Whether session `pid` waits for a lock that a tenantctl session holds (or waits for
/// ahead of it), as `pg_blocking_pids` sees it; `c` is any session on the same server.
pub fn waits_for_tenantctl(c: &mut postgres::Client, pid: i32) -> bool {
    c.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity w JOIN pg_stat_activity t \
             ON t.pid = ANY (pg_blocking_pids(w.pid)) \
         WHERE w.pid = $1 AND w.wait_event_type = 'Lock' AND t.application_name LIKE 'tenantctl%')",
        &[&pid],
    )
    .unwrap()
    .get(0)
}

/// The two keys of `schema`'s tenant lock, as tenantctl takes it.
fn tenant_key(schema: &str) -> (i32, i32) {
    lock_key(LockSpace::Tenant, schema)
}

/// Takes `schema`'s tenant lock on the session `c` (waiting for it if need be).
pub fn lock_tenant(c: &mut postgres::Client, schema: &str) {
    let (k1, k2) = tenant_key(schema);
    c.execute("SELECT pg_advisory_lock($1, $2)", &[&k1, &k2])
        .unwrap_or_else(|e| panic!("cannot take the tenant lock of {schema}: {e}"));
}

/// Releases `schema`'s tenant lock held by the session `c`; whether it held it.
pub fn unlock_tenant(c: &mut postgres::Client, schema: &str) -> bool {
    let (k1, k2) = tenant_key(schema);
    c.query_one("SELECT pg_advisory_unlock($1, $2)", &[&k1, &k2])
        .unwrap()
        .get(0)
}

/// How many sessions wait (not granted) for the tenant lock of `schema`.
pub fn lock_waiters(db: &TestDb, schema: &str) -> i64 {
    let (k1, k2) = tenant_key(schema);
    // pg_locks shows a two-key advisory lock as classid = key 1, objid = key 2 (as oids).
    db.client()
        .query_one(
            "SELECT count(*) FROM pg_locks l WHERE l.locktype = 'advisory' AND NOT l.granted \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 2",
            &[&i64::from(k1 as u32), &i64::from(k2 as u32)],
        )
        .unwrap()
        .get(0)
}

/// A TCP port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}
