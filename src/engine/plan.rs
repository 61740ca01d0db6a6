//! What an operation does to one tenant, as data: the [`Step`]s it takes from the state
//! the tenant is in, or the [`Refusal`] that stops it before anything runs.
//!
//! One plan serves both ends: a locked session executes it ([`crate::engine::runner::Session::execute`])
//! and a dry run prints it ([`crate::engine::dryrun`]). Both send, or show, the SQL built here, so
//! a dry run shows exactly what would run.

use std::fmt;

use crate::config::{Settings, SHARED_HISTORY};
use crate::engine::dependents;
use crate::engine::target::{Beyond, Target};
use crate::files::migrations::{compare, AppliedRow, Drift, MigrationFile, MigrationSet, Script};
use crate::ident::{qualified, quote};
use crate::pg::db::{self, LockSpace};
use crate::registry::state::{SchemaState, Untracked};

/// Which way a migration file runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The up script; its history row is inserted.
    Up,
    /// The down script; its history row is deleted.
    Down,
}

impl Direction {
    /// The script that runs this way. A down step exists only for a file with a down
    /// script (see [`downgrade_steps`]).
    pub fn script(self, f: &MigrationFile) -> &Script {
        match self {
            Direction::Up => &f.up,
            Direction::Down => f.down.as_ref().unwrap_or(&f.up),
        }
    }

    /// The file's SQL as read, this way.
    pub fn sql(self, f: &MigrationFile) -> &str {
        match self {
            Direction::Up => &f.up_sql,
            Direction::Down => f.down_sql.as_deref().unwrap_or(""),
        }
    }

    /// `migration V1__a (path)` or `down script of V1__a (path)`.
    pub fn describe(self, f: &MigrationFile) -> String {
        match self {
            Direction::Up => format!(
                "migration V{}__{} ({})",
                f.version,
                f.name,
                f.up_path.display()
            ),
            Direction::Down => format!(
                "down script of V{}__{} ({})",
                f.version,
                f.name,
                f.down_path
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
        }
    }
}

/// One step of a tenant's plan, in the order it runs.
#[derive(Debug, Clone)]
pub enum Step<'s> {
    /// `CREATE SCHEMA`.
    CreateSchema,
    /// Drop the schema with its data and create it empty, in one transaction, unless
    /// objects outside it depend on it.
    RecreateSchema,
    /// Create the history table (refinery's layout).
    CreateHistoryTable,
    /// Run a migration file and record it, in one transaction unless it is a
    /// no-transaction file.
    Migrate {
        /// The file.
        file: &'s MigrationFile,
        /// Up or down.
        direction: Direction,
    },
    /// Record `insert` as applied and forget versions above `target`, in one transaction.
    Stamp {
        /// The target version.
        target: i32,
        /// Files to record as applied.
        insert: Vec<&'s MigrationFile>,
        /// Recorded versions to forget.
        forget: Vec<i32>,
    },
}

/// Why an operation will not run on a tenant; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The tenant's schema does not exist.
    NotProvisioned,
    /// The history table could not be read.
    Unreadable(String),
    /// The history does not match the files, or a down script is missing.
    Mismatch(String),
    /// The schema is shared (the registry's, or one on every tenant's search path) or
    /// objects outside it depend on it.
    Unsafe(String),
    /// The target is on the other side of the tenant's revision: an upgrade to a
    /// version below it, or a downgrade to one above it.
    WrongWay {
        /// Whether the change is an upgrade.
        up: bool,
        /// The tenant's revision.
        current: Option<i32>,
        /// The target.
        target: i32,
    },
    /// A relative target goes past head (`+N`) or past base (`-N`).
    Beyond(Beyond),
    /// The schema has no tenantctl history but holds objects (made by hand, or by another
    /// tool): an upgrade would run the first migration over them.
    Untracked(Untracked),
}

/// Why nothing is done to a tenant whose registry row names no schema (its `schema_name`
/// NULL or empty, a `NOT NULL` dropped by hand): there is no schema to lock or change.
pub const NO_SCHEMA_NAME: &str = "the registry gives this tenant no schema name (its schema_name is NULL or empty): set it, then run this again; nothing was changed";

impl Refusal {
    /// The message for results, the ledger and dry runs.
    pub fn message(&self, schema: &str, domain: &str) -> String {
        if schema.is_empty() && *self == Refusal::NotProvisioned {
            return NO_SCHEMA_NAME.to_string();
        }
        let schema = quote(schema);
        let at = |current: Option<i32>| match current {
            Some(v) => format!("at revision {v}"),
            None => "at base (nothing applied)".to_string(),
        };
        match self {
            Refusal::NotProvisioned => format!(
                "schema {schema} does not exist; run `tenantctl provision --tenant {domain}` first"
            ),
            Refusal::Unreadable(m) | Refusal::Mismatch(m) | Refusal::Unsafe(m) => m.clone(),
            Refusal::WrongWay {
                up: true,
                current,
                target,
            } => format!(
                "schema {schema} is {}, above the target {}: an upgrade never goes down, so nothing was run; to run the down scripts to {}, use `tenantctl downgrade --tenant {domain} {}`",
                at(*current),
                Target::Version(*target),
                Target::Version(*target),
                Target::Version(*target)
            ),
            Refusal::WrongWay {
                up: false,
                current,
                target,
            } => format!(
                "schema {schema} is {}, below the target {target}: a downgrade never goes up, so nothing was run; to apply the migrations up to {target}, use `tenantctl upgrade --tenant {domain} {target}`",
                at(*current)
            ),
            Refusal::Beyond(b) => match b.target {
                Target::Down(n) => format!(
                    "cannot downgrade schema {schema} by -{n}: it is {} with {} applied, so -{n} goes past base; nothing was run (`tenantctl downgrade --tenant {domain} base` reverts them all)",
                    at(b.current),
                    plural(b.available as i64, "migration")
                ),
                t => format!(
                    "cannot upgrade schema {schema} by {t}: it is {} and {} above it, so {t} goes past head; nothing was run",
                    at(b.current),
                    match b.available {
                        0 => "no migration is".to_string(),
                        1 => "only 1 migration is".to_string(),
                        n => format!("only {n} migrations are"),
                    }
                ),
            },
            Refusal::Untracked(u) => {
                let holds = match u.other_history.as_deref() {
                    Some(table) => format!(
                        "{}, among them {table}, {}'s history",
                        plural(u.objects, "object"),
                        crate::registry::state::OTHER_HISTORIES
                            .iter()
                            .find(|(t, _)| *t == table)
                            .map_or("another tool", |(_, tool)| tool)
                    ),
                    None => format!(
                        "{} (made by hand, or by another tool)",
                        plural(u.objects, "object")
                    ),
                };
                let adopt = if u.other_history.as_deref() == Some("alembic_version") {
                    "if the fleet was run by Alembic, take it over with `tenantctl adopt alembic --map FILE` (it stamps each tenant at the version its alembic_version maps to, and lists the ones it leaves alone); otherwise, "
                } else {
                    ""
                };
                format!(
                    "schema {schema} has no tenantctl history but holds {holds}: the migrations would run from the first one over them, so nothing was run. To go on: {adopt}record the version the schema matches with `tenantctl stamp --tenant {domain} VERSION`, and upgrades continue from there (`tenantctl stamp --tenant {domain} base` runs every migration over what it holds)"
                )
            }
        }
    }

    /// Whether a tenant swept up by a filter (`--all`, `--type`, `--status`) is skipped
    /// rather than failed for this refusal: the target does not concern it (no schema
    /// yet, already past the target, no room for a relative step). Named, it fails.
    pub fn skippable(&self) -> bool {
        matches!(
            self,
            Refusal::NotProvisioned | Refusal::WrongWay { .. } | Refusal::Beyond(_)
        )
    }
}

/// `1 object`, `2 objects`.
fn plural(n: i64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A tenant's plan: the steps, and the revisions before and after.
#[derive(Debug, Clone, Default)]
pub struct TenantPlan<'s> {
    /// What runs, in order; empty when there is nothing to do.
    pub steps: Vec<Step<'s>>,
    /// Versions applied (up), reverted (down) or newly recorded (stamp), in order.
    pub versions: Vec<i32>,
    /// Recorded versions a stamp forgets.
    pub forgotten: Vec<i32>,
    /// The revision afterwards, when every step succeeds.
    pub to_revision: Option<i32>,
}

impl TenantPlan<'_> {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// What to do to a tenant. The scheduler runs the same operation on every selected tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaChange {
    /// Create the schema if missing.
    Provision,
    /// Drop the schema with its data and create it empty (`provision --force-recreate`).
    Recreate,
    /// Apply migrations up to the target (a version, or `+N` from the tenant's revision);
    /// with `provision`, create the schema first if it is missing.
    Upgrade {
        /// The target: a version, or [`Target::Up`].
        target: Target,
        /// Create a missing schema first (`tenant create --migrate`).
        provision: bool,
    },
    /// Run down scripts until the target (a version, or `-N` from the tenant's revision)
    /// is the highest applied version.
    Downgrade(Target),
    /// Record migrations up to the version as applied without running them.
    Stamp(i32),
}

impl SchemaChange {
    /// The name recorded in the run ledger and shown in progress.
    pub fn name(self) -> &'static str {
        match self {
            SchemaChange::Provision => "provision",
            SchemaChange::Recreate => "recreate",
            SchemaChange::Upgrade {
                provision: false, ..
            } => "upgrade",
            SchemaChange::Upgrade {
                provision: true, ..
            } => "provision+upgrade",
            SchemaChange::Downgrade(_) => "downgrade",
            SchemaChange::Stamp(_) => "stamp",
        }
    }

    /// The plan for a tenant in `state`, or why the operation refuses it.
    pub fn plan<'s>(
        self,
        schema: &str,
        state: &SchemaState,
        set: &'s MigrationSet,
        settings: &Settings,
    ) -> Result<TenantPlan<'s>, Refusal> {
        let mut plan = TenantPlan {
            to_revision: state.current(),
            ..TenantPlan::default()
        };
        match self {
            SchemaChange::Provision => {
                if !state.schema_exists {
                    plan.steps.push(Step::CreateSchema);
                }
                return Ok(plan);
            }
            SchemaChange::Recreate => {
                if let Some(role) = dependents::shared_role(settings, schema) {
                    return Err(Refusal::Unsafe(recreate_shared(schema, role)));
                }
                plan.steps.push(if state.schema_exists {
                    plan.to_revision = None;
                    Step::RecreateSchema
                } else {
                    Step::CreateSchema
                });
                return Ok(plan);
            }
            _ => {}
        }
        if state.schema_exists {
            let history = state
                .history
                .as_deref()
                .map_err(|e| Refusal::Unreadable(e.clone()))?;
            // Objects but no history: the first migration would run over them.
            let untracked = !state.history_exists && state.untracked.objects > 0;
            if untracked && matches!(self, SchemaChange::Upgrade { .. }) {
                return Err(Refusal::Untracked(state.untracked.clone()));
            }
            self.plan_history(plan, history, state.history_exists, untracked, schema, set)
        } else if matches!(
            self,
            SchemaChange::Upgrade {
                provision: true,
                ..
            }
        ) {
            plan.steps.push(Step::CreateSchema);
            self.plan_history(plan, &[], false, false, schema, set)
        } else {
            Err(Refusal::NotProvisioned)
        }
    }

    /// The steps of a change that works on the history, after `plan`'s steps.
    /// `untracked`: the schema holds objects but no history table.
    fn plan_history<'s>(
        self,
        mut plan: TenantPlan<'s>,
        history: &[AppliedRow],
        history_exists: bool,
        untracked: bool,
        schema: &str,
        set: &'s MigrationSet,
    ) -> Result<TenantPlan<'s>, Refusal> {
        let migrate = |files: Vec<&'s MigrationFile>, direction| {
            files
                .into_iter()
                .map(move |file| Step::Migrate { file, direction })
        };
        match self {
            SchemaChange::Upgrade { target, .. } => {
                refuse_drift(&compare(history, set).drift, schema).map_err(Refusal::Mismatch)?;
                let target = target.up_from(history, set).map_err(Refusal::Beyond)?;
                let current = history.iter().map(|r| r.version).max();
                if current.is_some_and(|c| c > target) {
                    return Err(Refusal::WrongWay {
                        up: true,
                        current,
                        target,
                    });
                }
                let files =
                    upgrade_steps(history, set, target, schema).map_err(Refusal::Mismatch)?;
                if !files.is_empty() && !history_exists {
                    plan.steps.push(Step::CreateHistoryTable);
                }
                plan.versions = files.iter().map(|f| f.version).collect();
                plan.to_revision = files.last().map_or(plan.to_revision, |f| Some(f.version));
                plan.steps.extend(migrate(files, Direction::Up));
            }
            SchemaChange::Downgrade(target) => {
                refuse_drift(&compare(history, set).drift, schema).map_err(Refusal::Mismatch)?;
                let target = target.down_from(history).map_err(Refusal::Beyond)?;
                let current = history.iter().map(|r| r.version).max();
                if current.unwrap_or(0) < target {
                    return Err(Refusal::WrongWay {
                        up: false,
                        current,
                        target,
                    });
                }
                let files =
                    downgrade_steps(history, set, target, schema).map_err(Refusal::Mismatch)?;
                plan.versions = files.iter().map(|f| f.version).collect();
                if !files.is_empty() {
                    plan.to_revision = below(history, &[], target);
                }
                plan.steps.extend(migrate(files, Direction::Down));
            }
            SchemaChange::Stamp(target) => {
                let (insert, forget) =
                    stamp_plan(history, set, target, schema).map_err(Refusal::Mismatch)?;
                plan.versions = insert.iter().map(|f| f.version).collect();
                plan.forgotten = forget.clone();
                // A schema that holds objects but no history gets its history table even
                // at base: from then on it is tenantctl's, and upgrades run over it.
                if !insert.is_empty() || !forget.is_empty() || untracked {
                    plan.to_revision = below(history, &plan.versions, target);
                    plan.steps.push(Step::Stamp {
                        target,
                        insert,
                        forget,
                    });
                }
            }
            SchemaChange::Provision | SchemaChange::Recreate => {}
        }
        Ok(plan)
    }
}

/// The highest of the recorded and newly recorded versions at or below `target`.
fn below(history: &[AppliedRow], added: &[i32], target: i32) -> Option<i32> {
    history
        .iter()
        .map(|r| r.version)
        .chain(added.iter().copied())
        .filter(|v| *v <= target)
        .max()
}

/// The refusal to recreate a shared schema.
pub fn recreate_shared(schema: &str, role: &str) -> String {
    format!(
        "refusing to drop and recreate schema {}: it is {role}, not a tenant's own schema; nothing was changed",
        quote(schema)
    )
}

/// The refusal to recreate a schema that objects outside it depend on.
pub fn recreate_blocked(schema: &str, blocking: &[dependents::Dependent]) -> String {
    dependents::refusal(
        &format!("drop and recreate schema {}", quote(schema)),
        blocking,
        "Or leave the schema as it is: `tenantctl provision` without --force-recreate keeps an existing schema.",
    )
}

/// The refusal to drop a shared schema with the tenant.
pub fn drop_shared(schema: &str, role: &str, domain: &str) -> String {
    format!(
        "refusing to drop schema {}: it is {role}, not a tenant's own schema; nothing was changed; `tenantctl tenant drop {domain} --keep-schema` removes only the registry row",
        quote(schema)
    )
}

/// The refusal to drop a schema that objects outside it depend on.
pub fn drop_blocked(schema: &str, blocking: &[dependents::Dependent], domain: &str) -> String {
    let fix = format!(
        "Or keep the schema: `tenantctl tenant drop {domain} --keep-schema` removes only the registry row."
    );
    dependents::refusal(&format!("drop schema {}", quote(schema)), blocking, &fix)
}

/// The refusal to restore or move a tenant whose schema objects outside it depend on:
/// they would go on reading and writing the old copy.
pub fn data_blocked(schema: &str, blocking: &[dependents::Dependent], what: &str) -> String {
    dependents::refusal(
        &format!("{what} schema {}", quote(schema)),
        blocking,
        "They would go on reading and writing the old copy: drop them or point them elsewhere first, and create them again afterwards.",
    )
}

/// What an upgrade to `target` would apply, in order; an error when the history has
/// drifted from the files.
pub fn upgrade_steps<'s>(
    history: &[AppliedRow],
    set: &'s MigrationSet,
    target: i32,
    schema: &str,
) -> Result<Vec<&'s MigrationFile>, String> {
    let cmp = compare(history, set);
    refuse_drift(&cmp.drift, schema)?;
    Ok(cmp
        .pending
        .iter()
        .filter(|v| **v <= target)
        .filter_map(|v| set.get(*v))
        .collect())
}

/// What a downgrade to `target` would revert, newest first; an error when the history has
/// drifted or a down script is missing.
pub fn downgrade_steps<'s>(
    history: &[AppliedRow],
    set: &'s MigrationSet,
    target: i32,
    schema: &str,
) -> Result<Vec<&'s MigrationFile>, String> {
    refuse_drift(&compare(history, set).drift, schema)?;
    let mut versions: Vec<i32> = history
        .iter()
        .map(|r| r.version)
        .filter(|v| *v > target)
        .collect();
    versions.sort_unstable_by(|a, b| b.cmp(a));
    let steps: Vec<&MigrationFile> = versions.iter().filter_map(|v| set.get(*v)).collect();
    let missing: Vec<String> = steps
        .iter()
        .filter(|f| f.down.is_none())
        .map(|f| format!("V{}__{}.down.sql", f.version, f.name))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "cannot downgrade schema {} to {}: no down script {} in {}; nothing was run",
            quote(schema),
            Target::Version(target),
            missing.join(", "),
            set.dir.display()
        ));
    }
    Ok(steps)
}

/// What stamping `target` would record and forget; an error when a recorded version at or
/// below the target differs from its file.
pub fn stamp_plan<'s>(
    history: &[AppliedRow],
    set: &'s MigrationSet,
    target: i32,
    schema: &str,
) -> Result<(Vec<&'s MigrationFile>, Vec<i32>), String> {
    let kept: Vec<AppliedRow> = history
        .iter()
        .filter(|r| r.version <= target)
        .cloned()
        .collect();
    let drift: Vec<String> = compare(&kept, set)
        .drift
        .iter()
        .filter(|d| !matches!(d, Drift::OutOfOrder { .. }))
        .map(|d| d.to_string())
        .collect();
    if !drift.is_empty() {
        return Err(format!(
            "history of schema {} does not match the migration files at or below {target}; nothing was stamped: {}",
            quote(schema),
            crate::error::listed(&drift, SHOWN)
        ));
    }
    let insert = set
        .files
        .iter()
        .filter(|f| f.version <= target && !kept.iter().any(|r| r.version == f.version))
        .collect();
    let forget = history
        .iter()
        .map(|r| r.version)
        .filter(|v| *v > target)
        .collect();
    Ok((insert, forget))
}

fn refuse_drift(drift: &[Drift], schema: &str) -> Result<(), String> {
    if drift.is_empty() {
        return Ok(());
    }
    Err(format!(
        "history of schema {} does not match the migration files; nothing was run: {}",
        quote(schema),
        crate::error::listed(drift, SHOWN)
    ))
}

/// Drift entries named in an error; the rest are counted (`status --tenant` lists all).
const SHOWN: usize = 10;

/// The savepoint each file runs in during a rehearsal.
const REHEARSED: &str = "tenantctl_rehearsed";

/// The SQL a plan sends, built once per tenant: what the session executes and what a dry
/// run prints.
#[derive(Debug, Clone)]
pub struct Sql {
    schema: String,
    /// The history table's name.
    pub history: String,
    /// The history table, qualified and quoted.
    pub table: String,
    /// The session state every migration starts from.
    pub reset: String,
    /// The session state tenantctl's own reads and writes run in.
    pub bookkeeping: String,
    keys: (i32, i32),
    /// What the schema is, as messages say it: `schema`, or `the shared schema`.
    pub what: &'static str,
    /// A rehearsal: each file in a savepoint of one transaction the caller opened and
    /// rolls back, rather than in a transaction of its own.
    pub rehearsal: bool,
    /// The schema of the server's version index, for a tenant's schema (see
    /// [`crate::registry::versions`]): its history table gets the index's trigger when
    /// it is created.
    index: Option<String>,
}

impl Sql {
    /// The SQL for a tenant's schema under these settings.
    pub fn new(settings: &Settings, schema: &str) -> Sql {
        Sql {
            schema: schema.to_string(),
            history: settings.history_table.clone(),
            table: qualified(schema, &settings.history_table),
            reset: session_settings(settings, schema),
            bookkeeping: bookkeeping_settings(settings, schema),
            keys: db::lock_key(LockSpace::Tenant, schema),
            what: "schema",
            rehearsal: false,
            index: None,
        }
    }

    /// This tenant's SQL on a server whose version index is in schema `index`.
    pub fn indexed(mut self, index: &str) -> Sql {
        self.index = Some(index.to_string());
        self
    }

    /// What puts the version index's trigger on the history table and recomputes the
    /// schema's row (nothing for a schema without an index, e.g. the shared one).
    pub fn attach(&self) -> Option<String> {
        self.index
            .as_deref()
            .map(|index| crate::registry::versions::attach_sql(index, &self.schema, &self.history))
    }

    /// The SQL for the shared schema `schema`: its own history table
    /// ([`SHARED_HISTORY`]) and its own lock, `search_path` the shared schema and the
    /// extra schemas.
    pub fn shared(settings: &Settings, schema: &str) -> Sql {
        Sql {
            history: SHARED_HISTORY.to_string(),
            table: qualified(schema, SHARED_HISTORY),
            keys: shared_lock(schema),
            what: "the shared schema",
            ..Sql::new(settings, schema)
        }
    }

    /// Takes the tenant's advisory lock, waiting with no timeout, then puts the session in
    /// its bookkeeping state: one round trip.
    pub fn lock(&self) -> String {
        format!(
            "SET lock_timeout = 0; SET statement_timeout = 0; SELECT pg_advisory_lock({}, {}); {}",
            self.keys.0, self.keys.1, self.bookkeeping
        )
    }

    /// Releases the tenant's advisory lock.
    pub fn unlock(&self) -> String {
        format!(
            "SELECT pg_advisory_unlock({}, {})",
            self.keys.0, self.keys.1
        )
    }

    /// The lock's keys.
    pub fn keys(&self) -> (i32, i32) {
        self.keys
    }

    /// The tenant's schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// `CREATE SCHEMA`.
    pub fn create_schema(&self) -> String {
        format!("CREATE SCHEMA {}", quote(&self.schema))
    }

    /// Drops the schema and creates it empty (in the caller's transaction).
    pub fn recreate_schema(&self) -> String {
        format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}",
            s = quote(&self.schema)
        )
    }

    /// The history table as refinery creates it, with the version index's trigger.
    pub fn create_history_table(&self) -> String {
        match self.attach() {
            Some(attach) => format!("{}; {attach}", history_table_ddl(&self.table)),
            None => history_table_ddl(&self.table),
        }
    }

    /// Opens a migration's transaction from a clean session (`transaction` false: only
    /// the clean session, for a no-transaction file).
    pub fn begin(&self, transaction: bool) -> String {
        match (transaction, self.rehearsal) {
            (true, false) => format!("BEGIN; {}", self.reset),
            (true, true) => format!("SAVEPOINT {REHEARSED}; {}", self.reset),
            (false, _) => self.reset.clone(),
        }
    }

    /// Undoes a rehearsed migration that failed, back to its savepoint.
    pub fn undo_rehearsed(&self) -> String {
        format!("ROLLBACK TO SAVEPOINT {REHEARSED}")
    }

    /// Ends a migration's transaction (in a rehearsal, its savepoint).
    pub fn commit(&self) -> String {
        if self.rehearsal {
            format!("RELEASE SAVEPOINT {REHEARSED}")
        } else {
            "COMMIT".into()
        }
    }

    /// Records a step's history change, in one message: back to the bookkeeping state
    /// (the connecting user's identity, every setting reset, so the next migration's
    /// transaction starts from the server's defaults), a check that the session still
    /// holds the tenant's lock, then the row inserted after an up script (as refinery
    /// writes it) or removed after a down script.
    pub fn record(&self, f: &MigrationFile, direction: Direction, applied_on: &str) -> String {
        let change = match direction {
            Direction::Up => self.insert_row(f, applied_on),
            Direction::Down => format!("DELETE FROM {} WHERE version = {}", self.table, f.version),
        };
        format!("{}; {}; {change}", self.bookkeeping, self.lock_check())
    }

    /// Fails with SQLSTATE 22012 ([`LOCK_LOST`]) when another session holds the
    /// tenant's lock, which a migration can have released (`pg_advisory_unlock_all()`);
    /// otherwise holds it (again).
    pub fn lock_check(&self) -> String {
        format!(
            "SELECT 1 / pg_try_advisory_lock({}, {})::int",
            self.keys.0, self.keys.1
        )
    }

    /// A history row as refinery writes it: version, name, RFC 3339 time, checksum as text.
    pub fn insert_row(&self, f: &MigrationFile, applied_on: &str) -> String {
        format!(
            "INSERT INTO {} (version, name, applied_on, checksum) VALUES ({}, {}, {}, {})",
            self.table,
            f.version,
            literal(&f.name),
            literal(applied_on),
            literal(&f.checksum.to_string())
        )
    }

    /// A stamp's transaction, up to its `COMMIT`: the history table, the forgotten
    /// versions, the rows.
    pub fn stamp(&self, target: i32, insert: &[&MigrationFile], applied_on: &str) -> String {
        let mut sql = format!(
            "BEGIN; {}; DELETE FROM {} WHERE version > {target}",
            self.create_history_table(),
            self.table
        );
        for f in insert {
            sql.push_str("; ");
            sql.push_str(&self.insert_row(f, applied_on));
        }
        sql
    }
}

/// The advisory lock of the shared schema `schema`: held exclusively while it changes,
/// shared while a tenant migration that requires a shared revision runs.
pub fn shared_lock(schema: &str) -> (i32, i32) {
    db::lock_key(LockSpace::Shared, schema)
}

/// What resets a connection between two tenants, then says whether it is clean: `t` when
/// no transaction was left open (the implicit transaction of this query started with it),
/// no SQL-level prepared statement exists, and the database has nothing that keeps
/// per-connection state no reset clears: `dblink` (named connections to other servers),
/// a foreign-data wrapper (its connection cache), or a procedural language other than
/// SQL and PL/pgSQL (PL/Python's `GD`, PL/Perl's `%_SHARED`). Where it has, connections
/// are not reused at all.
pub const RELEASE: &str = "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; DISCARD TEMP; \
     DISCARD SEQUENCES; RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL; \
     SELECT now() = statement_timestamp() \
     AND NOT EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE from_sql) \
     AND NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'dblink') \
     AND NOT EXISTS (SELECT FROM pg_catalog.pg_foreign_data_wrapper) \
     AND NOT EXISTS (SELECT FROM pg_catalog.pg_language \
                     WHERE lanname NOT IN ('internal', 'c', 'sql', 'plpgsql'))";

/// The SQLSTATE [`Sql::lock_check`] fails with (`division_by_zero`) when the session
/// no longer holds the tenant's lock and another session does.
pub const LOCK_LOST: &str = "22012";

/// How long a schema drop may wait for a lock once the schema's tables are locked and
/// nothing outside the schema was found to depend on it. Such a wait means another
/// session is changing an object the drop reaches (DDL that makes an object elsewhere
/// depend on the schema's types or functions is not visible until it commits), so the
/// drop gives up rather than cascade into what that session creates.
pub const DROP_WAIT_MS: u64 = 500;

/// `drop` (a `DROP SCHEMA ... CASCADE`) allowed to wait at most [`DROP_WAIT_MS`] for a
/// lock, in the caller's transaction.
pub fn guarded_drop(drop: &str) -> String {
    format!("SET LOCAL lock_timeout = {DROP_WAIT_MS}; {drop}; SET LOCAL lock_timeout = 0")
}

pub use crate::ident::literal;

/// The history table as refinery creates it.
pub fn history_table_ddl(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (version int4 PRIMARY KEY, name VARCHAR(255), applied_on VARCHAR(255), checksum VARCHAR(255))"
    )
}

/// Now, as refinery writes `applied_on`.
pub fn refinery_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc().unix_timestamp().to_string())
}

/// The session state every migration starts from: the connecting user's identity and
/// defaults (`RESET SESSION AUTHORIZATION`, `RESET ROLE`, `RESET ALL`), then
/// `search_path` = the tenant's schema and the extra schemas, and the timeouts.
pub fn session_settings(settings: &Settings, schema: &str) -> String {
    pinned(
        settings,
        schema,
        settings.lock_timeout.as_millis(),
        settings.statement_timeout.as_millis(),
    )
}

/// The session state tenantctl's own reads and writes run in, between migrations: as
/// [`session_settings`], but with no `lock_timeout` or `statement_timeout` (which are for
/// migrations), so a short timeout never cancels reading the catalog or the registry.
pub fn bookkeeping_settings(settings: &Settings, schema: &str) -> String {
    pinned(settings, schema, 0, 0)
}

fn pinned(
    settings: &Settings,
    schema: &str,
    lock_timeout: u128,
    statement_timeout: u128,
) -> String {
    let mut path = vec![quote(schema)];
    path.extend(settings.extra_search_path.iter().map(|s| quote(s)));
    format!(
        "RESET SESSION AUTHORIZATION; RESET ROLE; RESET ALL; SET search_path TO {}; SET lock_timeout = {lock_timeout}; SET statement_timeout = {statement_timeout}",
        path.join(", "),
    )
}

/// A plan written out as the SQL it sends, piece by piece (a dry run prints it; nothing
/// is built for the whole fleet in memory).
pub struct PlanSql<'p, 's> {
    /// The plan.
    pub plan: &'p TenantPlan<'s>,
    /// Its SQL.
    pub sql: &'p Sql,
    /// `applied_on` as it would be recorded.
    pub now: &'p str,
}

impl fmt::Display for PlanSql<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sql = self.sql;
        writeln!(f, "{};", sql.lock())?;
        for step in &self.plan.steps {
            match step {
                Step::CreateSchema => writeln!(f, "{};", sql.create_schema())?,
                Step::RecreateSchema => writeln!(
                    f,
                    "BEGIN;\n-- LOCK TABLE on each table of the schema, then a check that nothing outside it depends on it\n{};\nCOMMIT;",
                    guarded_drop(&sql.recreate_schema())
                )?,
                Step::CreateHistoryTable => writeln!(f, "{};", sql.create_history_table())?,
                Step::Stamp { target, insert, .. } => {
                    writeln!(f, "{};\nCOMMIT;", sql.stamp(*target, insert, self.now))?
                }
                Step::Migrate { file, direction } => self.migrate(f, file, *direction)?,
            }
        }
        writeln!(f, "\n-- the session ends: its connection is reset for the next tenant (or closed)\n{RELEASE};")
    }
}

impl PlanSql<'_, '_> {
    fn migrate(
        &self,
        f: &mut fmt::Formatter<'_>,
        file: &MigrationFile,
        direction: Direction,
    ) -> fmt::Result {
        let transaction = !direction.script(file).no_transaction;
        writeln!(f, "\n{};", self.sql.begin(transaction))?;
        if !transaction {
            writeln!(
                f,
                "-- no-transaction file: each statement commits on its own"
            )?;
        }
        let which = match direction {
            Direction::Up => String::new(),
            Direction::Down => " down".to_string(),
        };
        let path = match direction {
            Direction::Up => file.up_path.display().to_string(),
            Direction::Down => file
                .down_path
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        };
        writeln!(f, "-- V{}__{}{which} ({path})", file.version, file.name)?;
        f.write_str(
            direction
                .sql(file)
                .trim_start_matches('\u{feff}')
                .trim_end(),
        )?;
        writeln!(f, "\n{};", self.sql.record(file, direction, self.now))?;
        if transaction {
            writeln!(f, "COMMIT;")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_survive_quotes_and_backslashes() {
        assert_eq!(literal("add_users"), "'add_users'");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\b'c"), r"E'a\\b''c'");
    }

    #[test]
    fn bookkeeping_runs_without_the_migration_timeouts() {
        let mut settings = crate::config::resolve(
            &crate::config::Overrides::default(),
            &|_| None,
            std::path::Path::new("/"),
            None,
        )
        .expect("default settings");
        settings.lock_timeout = std::time::Duration::from_millis(1);
        settings.statement_timeout = std::time::Duration::from_millis(1);
        let migration = session_settings(&settings, "tenant_a");
        assert!(migration.ends_with("SET lock_timeout = 1; SET statement_timeout = 1"));
        let bookkeeping = bookkeeping_settings(&settings, "tenant_a");
        assert!(bookkeeping.ends_with("SET lock_timeout = 0; SET statement_timeout = 0"));
        assert!(bookkeeping.contains("SET search_path TO \"tenant_a\""));
    }
}
