//! The write fence: a tenant's tables locked `EXCLUSIVE` in the open transaction of its
//! locked session, so that writes wait and reads go on (a restore, a move's copy, an
//! online move's cutover), taken so that it never makes an application's write fail.
//!
//! An application's transaction may hold a lock on one of the tenant's tables and then
//! need another that the fence already holds: an `INSERT` into `members` takes
//! `ROW SHARE` on `households` for its foreign key check after it has locked `members`;
//! an ORM may write `households`, then `members`, in one transaction. No fixed order of
//! the fence's locks avoids every such pattern, and PostgreSQL's deadlock detector then
//! aborts one of the two transactions, perhaps the application's. So the fence:
//! 1. locks in one statement, parents (partitioned and inheritance) before their
//!    children and tables that reference others before the tables they reference, which
//!    lets the single-statement pattern above through without a conflict; and
//! 2. while that statement waits, looks every [`WATCH`] from a second session for a
//!    transaction that waits (directly, or behind others) for a lock the fence holds or
//!    is queued for, while itself holding a conflicting lock on a table the fence has not
//!    got yet: a deadlock in the making. The fence then cancels its own statement,
//!    rolls back (releasing what it held, so that transaction goes on), and tries again
//!    after a short pause. This happens within tens of milliseconds of that transaction
//!    starting to wait, long before the server's `deadlock_timeout` (1 s by default)
//!    could pick a victim.
//!
//! A fence otherwise waits in the lock queue for as long as the transactions in flight
//! take, as any `LOCK TABLE` does; the run's interruption stops it, and `run.lock_wait`,
//! when set, bounds it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::error::{Error, ErrorKind};
use crate::ident::{qualified, quote};
use crate::pg::cancel::Canceller;
use crate::pg::db::query_error;
use crate::pg::interrupt::Interrupt;

/// How often a waiting fence looks for a deadlock in the making.
pub const WATCH: Duration = Duration::from_millis(25);

/// What a fence needs besides the session that takes it.
pub struct Watch<'a> {
    /// A second session on the same server, which looks at `pg_locks` while the fence
    /// waits.
    pub watcher: crate::pg::db::Client,
    /// Cancels the fence's `LOCK TABLE` when it must let a transaction through.
    pub canceller: Canceller,
    /// The run's interruption: stops the retries.
    pub interrupt: &'a Interrupt,
    /// How long to keep trying, `ZERO` for as long as it takes.
    pub lock_wait: Duration,
    /// How long one try may wait (holding back the tenant's writes meanwhile) before it
    /// gives way and tries again (`run.lock_timeout`), `ZERO` for no limit.
    pub attempt: Duration,
}

impl<'a> Watch<'a> {
    /// A watch for the fence `client` (a session of `target`) will take.
    pub async fn open(
        target: &crate::pg::db::Target,
        client: &Client,
        interrupt: &'a Interrupt,
        settings: &crate::config::Settings,
    ) -> Result<Watch<'a>, Error> {
        Ok(Watch {
            watcher: target.connect().await?,
            canceller: target.canceller(client),
            interrupt,
            lock_wait: settings.lock_wait,
            attempt: settings.lock_timeout,
        })
    }
}

/// How a fence was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// How many times the fence gave way (to a transaction, or after its attempt limit)
    /// and started again.
    pub retries: u32,
    /// When the try that took it began asking for the locks: from then on, writes to
    /// the tenant's tables wait.
    pub started: Instant,
}

/// `tables` of `schema` in the order a fence locks them: parents before their partitions
/// and inheritance children, tables that reference others (foreign keys) before the tables
/// they reference, and by name where nothing else decides (a cycle is broken by name).
pub async fn order(client: &Client, schema: &str, tables: &[String]) -> Result<Vec<String>, Error> {
    let rows = client
        .query(
            "SELECT a.relname::text, b.relname::text \
             FROM pg_catalog.pg_constraint k \
             JOIN pg_catalog.pg_class a ON a.oid = k.conrelid \
             JOIN pg_catalog.pg_class b ON b.oid = k.confrelid \
             JOIN pg_catalog.pg_namespace na ON na.oid = a.relnamespace \
             JOIN pg_catalog.pg_namespace nb ON nb.oid = b.relnamespace \
             WHERE k.contype = 'f' AND na.nspname = $1 AND nb.nspname = $1 \
             UNION ALL \
             SELECT p.relname::text, c.relname::text \
             FROM pg_catalog.pg_inherits i \
             JOIN pg_catalog.pg_class p ON p.oid = i.inhparent \
             JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid \
             JOIN pg_catalog.pg_namespace np ON np.oid = p.relnamespace \
             JOIN pg_catalog.pg_namespace nc ON nc.oid = c.relnamespace \
             WHERE np.nspname = $1 AND nc.nspname = $1",
            &[&schema],
        )
        .await
        .map_err(query_error(
            "reading how the tenant's tables depend on each other",
        ))?;
    let edges: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(before_after(tables, &edges))
}

/// Orders `nodes` so that for each `(a, b)` edge `a` comes before `b` where the edges
/// allow it: Kahn's algorithm, taking the smallest name first, and breaking a cycle at
/// the smallest name left.
fn before_after(nodes: &[String], edges: &[(String, String)]) -> Vec<String> {
    let known: BTreeSet<&String> = nodes.iter().collect();
    let mut incoming: BTreeMap<&String, usize> = known.iter().map(|n| (*n, 0)).collect();
    let mut out: BTreeMap<&String, Vec<&String>> = BTreeMap::new();
    for (a, b) in edges {
        if a == b || !known.contains(a) || !known.contains(b) {
            continue;
        }
        out.entry(a).or_default().push(b);
        *incoming.get_mut(b).expect("known node") += 1;
    }
    let mut order = Vec::with_capacity(nodes.len());
    let mut left: BTreeSet<&String> = known.clone();
    while !left.is_empty() {
        let next = left
            .iter()
            .find(|n| incoming[*n] == 0)
            .or_else(|| left.iter().next())
            .copied()
            .expect("a node is left");
        left.remove(next);
        order.push(next.clone());
        for b in out.get(next).into_iter().flatten() {
            if let Some(n) = incoming.get_mut(b) {
                *n = n.saturating_sub(1);
            }
        }
    }
    order
}

/// Opens a transaction on `client` with `begin` (e.g. `BEGIN ISOLATION LEVEL REPEATABLE
/// READ; SET LOCAL ...`, which must take no snapshot) and locks `tables` of `schema`
/// `EXCLUSIVE`, starting in the given order ([`order`]), letting through any transaction
/// that would otherwise deadlock with it and then locking the tables that transaction
/// held first (see the module header). An attempt that waits longer than the watch's
/// `attempt` limit is given up too, so that a transaction left open elsewhere holds the
/// tenant's writes back for that long at most, not for as long as it stays open. On
/// success the transaction is open with every lock held; on failure it has been rolled
/// back.
pub async fn take(
    client: &Client,
    watch: &Watch<'_>,
    begin: &str,
    schema: &str,
    tables: &[String],
) -> Result<Taken, Error> {
    let started = Instant::now();
    let pid: i32 = client
        .query_one("SELECT pg_catalog.pg_backend_pid()", &[])
        .await
        .map_err(query_error("starting the write fence"))?
        .get(0);
    let oid_of: BTreeMap<String, u32> = client
        .query(
            "SELECT c.relname::text, c.oid FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = ANY ($2)",
            &[&schema, &tables],
        )
        .await
        .map_err(query_error("starting the write fence"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let oids: Vec<u32> = oid_of.values().copied().collect();
    let mut order: Vec<String> = tables.to_vec();
    let mut retries = 0u32;
    let mut last_wait = String::new();
    loop {
        let lock = (!order.is_empty()).then(|| {
            let list: Vec<String> = order.iter().map(|t| qualified(schema, t)).collect();
            format!("LOCK TABLE {} IN EXCLUSIVE MODE", list.join(", "))
        });
        let this_try = Instant::now();
        let outcome = attempt(client, watch, begin, lock.as_deref(), pid, &oids).await;
        let gave_way = match outcome {
            Attempt::Locked => {
                return Ok(Taken {
                    retries,
                    started: this_try,
                })
            }
            Attempt::Yielded(why) => why,
            Attempt::Failed(e) => {
                let again = matches!(
                    e.code(),
                    Some(c) if *c == SqlState::QUERY_CANCELED
                        || *c == SqlState::T_R_DEADLOCK_DETECTED
                        || *c == SqlState::LOCK_NOT_AVAILABLE
                );
                if !again {
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err(query_error(&format!(
                        "locking the tables of schema {} against writes",
                        quote(schema)
                    ))(e));
                }
                GaveWay::No
            }
        };
        let _ = client.batch_execute("ROLLBACK").await;
        if watch.interrupt.requested() {
            return Err(Error::new(
                ErrorKind::Interrupted,
                "interrupted while locking the tenant's tables against writes; nothing was changed",
            ));
        }
        match gave_way {
            GaveWay::To(theirs) => {
                // Next time, first the tables that transaction held: it (and any like
                // it) then finishes before the fence holds what it needs.
                let (first, rest): (Vec<String>, Vec<String>) = order
                    .into_iter()
                    .partition(|t| oid_of.get(t).is_some_and(|o| theirs.contains(o)));
                order = first.into_iter().chain(rest).collect();
            }
            GaveWay::Waited(who) => last_wait = who,
            GaveWay::No => {}
        }
        if !watch.lock_wait.is_zero() && started.elapsed() >= watch.lock_wait {
            return Err(Error::failed(format!(
                "the tables of schema {} could not be locked against writes within run.lock_wait ({} ms) after {} attempt(s){}; nothing was changed",
                quote(schema),
                watch.lock_wait.as_millis(),
                retries + 1,
                if last_wait.is_empty() {
                    String::new()
                } else {
                    format!(": the last one waited for {last_wait}")
                }
            )));
        }
        retries += 1;
        tokio::time::sleep(pause(retries)).await;
    }
}

/// The pause before the fence tries again: growing from 10 ms to 200 ms, with jitter so
/// that it does not meet the same transactions at the same moment.
fn pause(retries: u32) -> Duration {
    let base = 10u64.saturating_mul(1 << retries.min(5)).min(200);
    let mut byte = [0u8; 1];
    let jitter = match getrandom::fill(&mut byte) {
        Ok(()) => u64::from(byte[0]) % base.max(1),
        Err(_) => 0,
    };
    Duration::from_millis(base / 2 + jitter / 2)
}

/// How one try ended.
enum Attempt {
    /// Every table is locked.
    Locked,
    /// The watch cancelled it, for this reason (whatever the statement then returned:
    /// one that got its locks just before the cancel is tried again too, so that a cancel
    /// arriving late never hits a later statement of the operation).
    Yielded(GaveWay),
    /// It failed by itself.
    Failed(tokio_postgres::Error),
}

/// Why the watch cancelled a try.
enum GaveWay {
    /// It did not.
    No,
    /// To let through transactions that held these tables (oids).
    To(Vec<u32>),
    /// It waited past the attempt limit, for these sessions (described).
    Waited(String),
}

/// One try: `begin`, then the `LOCK TABLE` raced against the watch, which cancels it
/// when a deadlock is in the making or the try has waited past its limit.
async fn attempt(
    client: &Client,
    watch: &Watch<'_>,
    begin: &str,
    lock: Option<&str>,
    pid: i32,
    oids: &[u32],
) -> Attempt {
    if let Err(e) = client.batch_execute(begin).await {
        return Attempt::Failed(e);
    }
    let Some(lock) = lock else {
        return Attempt::Locked;
    };
    let began = Instant::now();
    let locking = client.batch_execute(lock);
    tokio::pin!(locking);
    let mut gave_way = None;
    loop {
        tokio::select! {
            done = &mut locking => {
                return match (done, gave_way) {
                    (_, Some(why)) => Attempt::Yielded(why),
                    (Ok(()), None) => Attempt::Locked,
                    (Err(e), None) => Attempt::Failed(e),
                };
            }
            () = tokio::time::sleep(WATCH), if gave_way.is_none() => {
                let theirs = in_the_way(&watch.watcher, pid, oids).await;
                let why = if !theirs.is_empty() {
                    Some(GaveWay::To(theirs))
                } else if !watch.attempt.is_zero() && began.elapsed() >= watch.attempt {
                    Some(GaveWay::Waited(blockers(&watch.watcher, pid).await))
                } else if watch.interrupt.requested() {
                    Some(GaveWay::No)
                } else {
                    None
                };
                if why.is_some() {
                    // The statement ends with "canceling statement due to user request".
                    let _ = watch.canceller.cancel().await;
                    gave_way = why;
                }
            }
        }
    }
}

/// The relations (oids) among `oids` that some transaction holds in a mode conflicting
/// with `EXCLUSIVE`, which the fence (session `pid`) has not got yet, while that
/// transaction waits, directly or behind others, for the fence: the fence would wait for
/// it while it waits for the fence. Empty when there is none (or the look failed).
async fn in_the_way(watcher: &Client, pid: i32, oids: &[u32]) -> Vec<u32> {
    let rows = watcher
        .query(
            "WITH RECURSIVE waiting(pid) AS ( \
                 SELECT a.pid FROM pg_catalog.pg_stat_activity a \
                 WHERE a.wait_event_type = 'Lock' AND $1 = ANY (pg_catalog.pg_blocking_pids(a.pid)) \
               UNION \
                 SELECT a.pid FROM pg_catalog.pg_stat_activity a JOIN waiting w \
                   ON w.pid = ANY (pg_catalog.pg_blocking_pids(a.pid)) \
                 WHERE a.wait_event_type = 'Lock') \
             SELECT DISTINCT l.relation FROM pg_catalog.pg_locks l JOIN waiting w ON w.pid = l.pid \
             WHERE l.granted AND l.locktype = 'relation' AND l.relation = ANY ($2) \
               AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) \
               AND l.mode <> 'AccessShareLock' AND l.pid <> $1 \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_locks f \
                               WHERE f.pid = $1 AND f.granted AND f.locktype = 'relation' \
                                 AND f.relation = l.relation AND f.mode = 'ExclusiveLock')",
            &[&pid, &oids],
        )
        .await;
    rows.map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}

/// The sessions the fence (session `pid`) waits for, described for an error: pid,
/// `application_name`, state and how long their transaction has been open.
async fn blockers(watcher: &Client, pid: i32) -> String {
    let rows = watcher
        .query(
            "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''), \
                    coalesce(extract(epoch FROM now() - a.xact_start)::float8, 0) \
             FROM pg_catalog.pg_stat_activity a WHERE a.pid = ANY (pg_catalog.pg_blocking_pids($1)) \
             ORDER BY a.pid LIMIT 5",
            &[&pid],
        )
        .await;
    let described: Vec<String> = rows
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    format!(
                        "pid {} ({:?}, {}, its transaction open for {:.0} s)",
                        r.get::<_, i32>(0),
                        r.get::<_, String>(1),
                        r.get::<_, String>(2),
                        r.get::<_, f64>(3)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    if described.is_empty() {
        "other sessions".to_string()
    } else {
        described.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::before_after;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn edges(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn referencing_tables_come_before_the_tables_they_reference() {
        // members -> households, attendance -> members, attendance -> events
        let order = before_after(
            &names(&["attendance", "events", "households", "members"]),
            &edges(&[
                ("members", "households"),
                ("attendance", "members"),
                ("attendance", "events"),
            ]),
        );
        let at = |n: &str| order.iter().position(|o| o == n).unwrap();
        assert!(at("members") < at("households"), "{order:?}");
        assert!(at("attendance") < at("members"), "{order:?}");
        assert!(at("attendance") < at("events"), "{order:?}");
        assert_eq!(order.len(), 4);
    }

    #[test]
    fn cycles_self_references_and_unknown_tables_still_give_every_table_once() {
        let order = before_after(
            &names(&["a", "b", "c"]),
            &edges(&[("a", "b"), ("b", "a"), ("c", "c"), ("c", "elsewhere")]),
        );
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, names(&["a", "b", "c"]));
    }
}
