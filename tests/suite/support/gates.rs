//! Gates a test holds to stop tenantctl at an exact point, and opens once it has seen
//! what it waits for there, so that nothing depends on how fast the machine is:
//! - an advisory lock ([`Gate::advisory`]) that a migration file waits for with the
//!   statement [`wait_at`] gives (or [`wait_at_except`], in every tenant but one), or the
//!   lock `init` takes on the registry ([`Gate::registry_lock`]);
//! - an open transaction holding a table lock ([`Gate::table_lock`]);
//! - an open transaction that has changed a schema's catalog row ([`Gate::schema_rename`]):
//!   `ALTER SCHEMA ... RENAME` of that schema waits for it (a move's fence and a restore's
//!   swap rename the tenant's schema just before they commit).
//!
//! [`Gate::blocked`] lists the sessions waiting for the gate, as `pg_blocking_pids` sees
//! them.

/// A session of the test's own that holds something tenantctl will wait for.
pub struct Gate {
    client: postgres::Client,
    pid: i32,
    open: &'static str,
}

/// A session waiting for a [`Gate`].
#[derive(Debug, Clone)]
pub struct Blocked {
    /// Its backend's process id.
    pub pid: i32,
    /// Its `application_name` (`tenantctl RUN_ID` for tenantctl's own sessions).
    pub application_name: String,
    /// The statement it runs.
    pub query: String,
}

/// The statement a migration file (run in a transaction) uses to wait at the gate
/// [`Gate::advisory`] holds with `key`; it does not time out. Several tenants pass it at
/// once when the gate opens.
pub fn wait_at(key: i64) -> String {
    format!("SET LOCAL lock_timeout = 0;\nSELECT pg_advisory_xact_lock_shared({key});\n")
}

/// [`wait_at`] for every tenant but the one whose schema is `schema`: a migration runs
/// with `search_path` set to its tenant's schema, so in that tenant it passes straight
/// through, and that tenant can finish while the others wait at the gate.
pub fn wait_at_except(key: i64, schema: &str) -> String {
    format!(
        "SET LOCAL lock_timeout = 0;\nSELECT pg_advisory_xact_lock_shared({key}) WHERE current_schema() <> '{}';\n",
        schema.replace('\'', "''")
    )
}

impl Gate {
    /// Takes the advisory lock `key` (one `bigint` key) on a session of its own to `url`.
    pub fn advisory(url: &str, key: i64) -> Gate {
        let mut gate = Gate::connect(url, "SELECT pg_advisory_unlock_all()");
        gate.client
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .unwrap_or_else(|e| panic!("cannot take advisory lock {key}: {e}"));
        gate
    }

    /// Takes the lock tenantctl's `init` takes on the registry in `schema` (the key
    /// tenantctl computes, `tenantctl::pg::db::lock_key`) on a session of its own to `url`.
    pub fn registry_lock(url: &str, schema: &str) -> Gate {
        let (k1, k2) = tenantctl::pg::db::lock_key(tenantctl::pg::db::LockSpace::Registry, schema);
        let mut gate = Gate::connect(url, "SELECT pg_advisory_unlock_all()");
        gate.client
            .execute("SELECT pg_advisory_lock($1, $2)", &[&k1, &k2])
            .unwrap_or_else(|e| panic!("cannot take the registry lock of {schema}: {e}"));
        gate
    }

    /// Opens a transaction on a session of its own to `url` that locks `table` (qualified
    /// and quoted as it must be) in `mode` (`SHARE`, ...): whatever needs a conflicting lock
    /// on it waits. Opening the gate rolls the transaction back.
    pub fn table_lock(url: &str, table: &str, mode: &str) -> Gate {
        let mut gate = Gate::connect(url, "ROLLBACK");
        gate.client
            .batch_execute(&format!("BEGIN; LOCK TABLE {table} IN {mode} MODE"))
            .unwrap_or_else(|e| panic!("cannot lock {table} in {mode} mode: {e}"));
        gate
    }

    /// Opens a transaction on a session of its own to `url` that changes the catalog row of
    /// `schema` (a `GRANT` on it) and stays open: renaming the schema waits until it ends.
    /// Opening the gate rolls the transaction back, so the rename then goes ahead.
    pub fn schema_rename(url: &str, schema: &str) -> Gate {
        let mut gate = Gate::connect(url, "ROLLBACK");
        let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
        gate.client
            .batch_execute(&format!("BEGIN; GRANT USAGE ON SCHEMA {quoted} TO PUBLIC"))
            .unwrap_or_else(|e| panic!("cannot hold schema {schema}'s catalog row: {e}"));
        gate
    }

    fn connect(url: &str, open: &'static str) -> Gate {
        let mut config: postgres::Config = url.parse().unwrap();
        config.application_name("test gate");
        let mut client = config
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect a gate: {e}"));
        let pid: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0);
        Gate { client, pid, open }
    }

    /// The sessions waiting for this gate now.
    pub fn blocked(&mut self) -> Vec<Blocked> {
        // Inside the gate's own transaction, pg_stat_activity would answer from the
        // snapshot of its first look.
        self.client
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .unwrap();
        self.client
            .query(
                "SELECT pid, coalesce(application_name, ''), coalesce(query, '') \
                 FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid)) ORDER BY pid",
                &[&self.pid],
            )
            .unwrap()
            .iter()
            .map(|r| Blocked {
                pid: r.get(0),
                application_name: r.get(1),
                query: r.get(2),
            })
            .collect()
    }

    /// The sessions of tenantctl waiting for this gate now.
    pub fn blocked_tenantctl(&mut self) -> Vec<Blocked> {
        self.blocked()
            .into_iter()
            .filter(|b| b.application_name.starts_with("tenantctl"))
            .collect()
    }

    /// Lets whatever waits for the gate through.
    pub fn open(mut self) {
        self.client
            .batch_execute(self.open)
            .unwrap_or_else(|e| panic!("cannot open the gate: {e}"));
    }
}
