//! Read-only views of tenants: migration status, current revision and history, built
//! from one batched observation of their schemas (see [`crate::registry::state`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::files::migrations::{compare, Drift, MigrationSet};
use crate::registry::state::SchemaState;
use crate::registry::{Observed, Status, Tenant};

/// A pending migration.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Pending {
    /// Its version.
    pub version: i32,
    /// Its name.
    pub name: String,
}

/// One tenant's migration status (`status --tenant`).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TenantStatus {
    /// Registry id.
    pub tenant_id: i64,
    /// Domain.
    pub domain: String,
    /// Schema.
    pub schema_name: String,
    /// Highest applied version; `null` when nothing is applied.
    pub current_revision: Option<i32>,
    /// Migrations an upgrade to head would apply.
    pub pending_migrations: Vec<Pending>,
    /// The schema exists.
    pub schema_provisioned: bool,
    /// At least one migration is applied.
    pub migrations_applied: bool,
    /// Registry status (`pending`, `active`, `failed`).
    pub status: Status,
    /// The last operation's error.
    pub last_error: Option<String>,
    /// History that does not match the files (empty when clean).
    pub drift: Vec<Drift>,
    /// Why the history could not be read, when it could not.
    pub history_error: Option<String>,
    /// The server the tenant lives on.
    pub server: String,
    /// Its server could not be reached, or stopped answering while its history was read
    /// (`history_error` says which and why): its state is unknown, not drift.
    #[serde(skip)]
    pub unreachable: bool,
    /// A move of the tenant between servers is unfinished: what it is and what settles
    /// it. Its schema is then half-copied or fenced, so the status shows what the
    /// registry last saw, and `history_error` says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moving: Option<String>,
}

impl TenantStatus {
    /// Whether the tenant is provisioned, clean and at head.
    pub fn at_head(&self) -> bool {
        self.schema_provisioned
            && self.pending_migrations.is_empty()
            && self.drift.is_empty()
            && self.history_error.is_none()
    }
}

/// Builds a tenant's status from what was observed.
pub fn tenant_status(tenant: &Tenant, state: &SchemaState, set: &MigrationSet) -> TenantStatus {
    let (current, pending, drift, history_error) = match &state.history {
        Ok(rows) => {
            let cmp = compare(rows, set);
            let pending = cmp
                .pending
                .iter()
                .filter_map(|v| set.get(*v))
                .map(|f| Pending {
                    version: f.version,
                    name: f.name.clone(),
                })
                .collect();
            (cmp.current, pending, cmp.drift, None)
        }
        Err(e) => (None, Vec::new(), Vec::new(), Some(e.clone())),
    };
    TenantStatus {
        tenant_id: tenant.id,
        domain: tenant.domain.clone(),
        schema_name: tenant.schema_name.clone(),
        current_revision: current,
        pending_migrations: pending,
        schema_provisioned: state.schema_exists,
        migrations_applied: current.is_some(),
        status: tenant.status,
        last_error: tenant.last_error.clone(),
        drift,
        history_error,
        server: tenant.server.clone(),
        unreachable: state.unreachable,
        moving: None,
    }
}

/// Fleet-wide counts for `status --all`.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct StatusSummary {
    /// Tenants shown.
    pub total: usize,
    /// The head version of the migration files.
    pub head: i32,
    /// Provisioned, clean and at head.
    pub at_head: usize,
    /// Provisioned but with pending migrations.
    pub behind: usize,
    /// Schema missing.
    pub unprovisioned: usize,
    /// Registry status `failed`.
    pub failed: usize,
    /// History does not match the files, or cannot be read (its server answering).
    pub drifted: usize,
    /// Server not reached, or gone while the history was read: state unknown.
    pub unreachable: usize,
    /// In an unfinished move between servers: state as the registry last saw it.
    pub moving: usize,
    /// Tenants per current revision (`base` for none applied).
    pub by_revision: BTreeMap<String, usize>,
    /// Counts per server.
    pub by_server: BTreeMap<String, ServerSummary>,
    /// The shared schema's revision on each server (`null`: nothing applied, or not
    /// read), when there is a shared schema.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub shared: BTreeMap<String, Option<i32>>,
}

/// One server's counts in a [`StatusSummary`].
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct ServerSummary {
    /// Its tenants.
    pub total: usize,
    /// Provisioned, clean and at head.
    pub at_head: usize,
    /// Provisioned but with pending migrations.
    pub behind: usize,
    /// Registry status `failed`.
    pub failed: usize,
    /// Server not reached, or gone while the history was read.
    pub unreachable: usize,
}

/// Counts statuses.
pub fn summarize(statuses: &[TenantStatus], head: i32) -> StatusSummary {
    let mut s = StatusSummary {
        total: statuses.len(),
        head,
        ..Default::default()
    };
    for t in statuses {
        if t.moving.is_some() {
            s.moving += 1;
        } else if t.unreachable {
            s.unreachable += 1;
        } else if !t.schema_provisioned {
            s.unprovisioned += 1;
        } else if !t.drift.is_empty() || t.history_error.is_some() {
            s.drifted += 1;
        } else if t.pending_migrations.is_empty() {
            s.at_head += 1;
        } else {
            s.behind += 1;
        }
        if t.status == Status::Failed {
            s.failed += 1;
        }
        let server = s.by_server.entry(t.server.clone()).or_default();
        server.total += 1;
        server.at_head += usize::from(t.at_head());
        server.behind += usize::from(
            t.schema_provisioned
                && t.drift.is_empty()
                && t.history_error.is_none()
                && !t.pending_migrations.is_empty(),
        );
        server.failed += usize::from(t.status == Status::Failed);
        server.unreachable += usize::from(t.unreachable);
        let key = t
            .current_revision
            .map_or_else(|| "base".to_string(), |v| v.to_string());
        *s.by_revision.entry(key).or_default() += 1;
    }
    s
}

/// The observation in the registry's terms, for syncing its cached columns.
pub fn observed(status: &TenantStatus) -> Observed {
    Observed {
        schema_exists: status.schema_provisioned,
        current: status.current_revision,
        history_readable: status.history_error.is_none(),
    }
}

/// One migration in `history`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct HistoryEntry {
    /// Version.
    pub version: i32,
    /// Name (the file's, or the recorded one when the file is gone).
    pub name: String,
    /// refinery's checksum, as a decimal string.
    pub checksum: String,
    /// Whether it is applied to the tenant; `null` when no tenant was named.
    pub applied: Option<bool>,
    /// When it was applied (RFC 3339), if it was.
    pub applied_on: Option<String>,
    /// `pending`, `applied`, `divergent`, `missing` (applied, file gone) or `out_of_order`;
    /// `file` when no tenant was named.
    pub state: &'static str,
    /// The up file, when it exists.
    pub file: Option<String>,
    /// Whether a down script exists.
    pub has_down: bool,
}

/// The migrations, merged with a tenant's history when one is given.
pub fn history(
    set: &MigrationSet,
    applied: Option<&[crate::files::migrations::AppliedRow]>,
) -> Vec<HistoryEntry> {
    let mut out: Vec<HistoryEntry> = Vec::new();
    let current = applied.and_then(|rows| rows.iter().map(|r| r.version).max());
    for f in &set.files {
        let row = applied.and_then(|rows| rows.iter().find(|r| r.version == f.version));
        let state = match (applied, row) {
            (None, _) => "file",
            (Some(_), Some(r)) if r.checksum != f.checksum || r.name != f.name => "divergent",
            (Some(_), Some(_)) => "applied",
            (Some(_), None) if current.is_some_and(|c| f.version < c) => "out_of_order",
            (Some(_), None) => "pending",
        };
        out.push(HistoryEntry {
            version: f.version,
            name: f.name.clone(),
            checksum: f.checksum.to_string(),
            applied: applied.map(|_| row.is_some()),
            applied_on: row.map(|r| r.applied_on.clone()),
            state,
            file: Some(f.up_path.display().to_string()),
            has_down: f.down_path.is_some(),
        });
    }
    for r in applied.unwrap_or(&[]) {
        if set.get(r.version).is_none() {
            out.push(HistoryEntry {
                version: r.version,
                name: r.name.clone(),
                checksum: r.checksum.to_string(),
                applied: Some(true),
                applied_on: Some(r.applied_on.clone()),
                state: "missing",
                file: None,
                has_down: false,
            });
        }
    }
    out.sort_by_key(|e| e.version);
    out
}

/// One problem `check` found.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Problem {
    /// The tenant's domain.
    pub tenant: String,
    /// The tenant's registry id.
    pub tenant_id: i64,
    /// The tenant's domain (the same as `tenant`).
    pub domain: String,
    /// Its schema.
    pub schema_name: String,
    /// `unprovisioned`, `registry_mismatch`, `history_unreadable`, `divergent`, `missing`,
    /// `out_of_order`, `behind` or `failed`.
    pub kind: &'static str,
    /// One line saying what is wrong and how to fix it.
    pub message: String,
    /// The migration files concerned.
    pub files: Vec<String>,
}

/// Everything wrong with these tenants against the files: read-only.
pub fn check(
    tenants: &[Tenant],
    states: &std::collections::HashMap<String, SchemaState>,
    set: &MigrationSet,
) -> Vec<Problem> {
    let mut out = Vec::new();
    for t in tenants {
        if let Some(st) = states.get(&t.schema_name) {
            tenant_problems(t, st, set, &mut out);
        }
    }
    out
}

/// Adds what is wrong with one tenant to `out`.
fn tenant_problems(t: &Tenant, st: &SchemaState, set: &MigrationSet, out: &mut Vec<Problem>) {
    let p = |kind: &'static str, message: String, files: Vec<String>| Problem {
        tenant: t.domain.clone(),
        tenant_id: t.id,
        domain: t.domain.clone(),
        schema_name: t.schema_name.clone(),
        kind,
        message,
        files,
    };
    if st.schema_exists != t.schema_provisioned {
        out.push(p(
            "registry_mismatch",
            format!(
                "the registry says schema_provisioned = {} but the schema {}; any tenantctl command on this tenant refreshes the registry",
                t.schema_provisioned,
                if st.schema_exists { "exists" } else { "does not exist" }
            ),
            Vec::new(),
        ));
    }
    if t.status == Status::Failed {
        out.push(p(
            "failed",
            format!(
                "its last operation failed: {}",
                t.last_error.as_deref().unwrap_or("no error recorded")
            ),
            Vec::new(),
        ));
    }
    if !st.schema_exists {
        out.push(p(
            "unprovisioned",
            format!(
                "schema {} does not exist; run `tenantctl provision --tenant {}`",
                crate::ident::quote(&t.schema_name),
                t.domain
            ),
            Vec::new(),
        ));
        return;
    }
    let rows = match &st.history {
        Ok(rows) => rows,
        Err(e) => {
            out.push(p("history_unreadable", e.clone(), Vec::new()));
            return;
        }
    };
    let cmp = compare(rows, set);
    for d in &cmp.drift {
        let (kind, files) = match d {
            Drift::Divergent { file, .. } => ("divergent", vec![file.clone()]),
            Drift::Missing { version, name } => {
                ("missing", vec![format!("V{version}__{name}.sql")])
            }
            Drift::OutOfOrder { file, .. } => ("out_of_order", vec![file.clone()]),
        };
        out.push(p(kind, d.to_string(), files));
    }
    if !cmp.pending.is_empty() {
        let files: Vec<String> = cmp
            .pending
            .iter()
            .filter_map(|v| set.get(*v))
            .map(|f| f.up_path.display().to_string())
            .collect();
        out.push(p(
            "behind",
            format!(
                "at revision {}, head is {}: {} pending; run `tenantctl upgrade --tenant {}`",
                cmp.current.map_or("base".to_string(), |c| c.to_string()),
                set.head(),
                cmp.pending.len(),
                t.domain
            ),
            files,
        ));
    }
}
