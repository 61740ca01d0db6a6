//! Mirrors of every JSON document tenantctl prints, used to pin the shapes exactly.
//!
//! Each struct lists every field with its type and refuses unknown ones. Nullable fields
//! use [`nullable`], so a field that is missing (rather than `null`) is an error too.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// An `Option` that must be present in the document (as a value or `null`).
pub fn nullable<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}

/// `registry::Tenant`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    pub id: i64,
    pub tenant_id: i64,
    pub tenant_name: String,
    pub domain: String,
    #[serde(deserialize_with = "nullable")]
    pub email: Option<String>,
    pub tenant_type: String,
    pub schema_name: String,
    pub schema_provisioned: bool,
    pub migrations_applied: bool,
    #[serde(deserialize_with = "nullable")]
    pub current_revision: Option<i32>,
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub last_error: Option<String>,
    pub api_key_prefix: String,
    /// RFC 3339, else what is stored (`infinity`, a year past 9999); null for a NULL.
    #[serde(deserialize_with = "nullable")]
    pub created_at: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub updated_at: Option<String>,
    pub server: String,
}

/// `inspect::Pending`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    pub version: i32,
    pub name: String,
}

/// `migrations::Drift`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Drift {
    Divergent { version: i32, file: String },
    Missing { version: i32, name: String },
    OutOfOrder { version: i32, file: String },
}

/// `inspect::TenantStatus` (`status --tenant`).
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantStatus {
    pub tenant_id: i64,
    pub domain: String,
    pub schema_name: String,
    #[serde(deserialize_with = "nullable")]
    pub current_revision: Option<i32>,
    pub pending_migrations: Vec<Pending>,
    pub schema_provisioned: bool,
    pub migrations_applied: bool,
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub last_error: Option<String>,
    pub drift: Vec<Drift>,
    #[serde(deserialize_with = "nullable")]
    pub history_error: Option<String>,
    pub server: String,
    /// Only while a move of the tenant between servers is unfinished.
    #[serde(default)]
    pub moving: Option<String>,
    /// Only in `status --tenant` (where it is always present, `null` off Citus).
    #[serde(default)]
    pub placement: Option<Placement>,
}

/// `citus::Placement`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    pub node: String,
}

/// `citus::Moved` (`tenant move --node`).
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Moved {
    pub tenant: String,
    pub tenant_id: i64,
    pub domain: String,
    pub from_node: String,
    pub to_node: String,
    pub duration_ms: u64,
    pub message: String,
}

/// `data::moving::Moved` (`tenant move --to`).
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerMoved {
    pub tenant: String,
    pub tenant_id: i64,
    pub domain: String,
    pub from_server: String,
    pub to_server: String,
    pub tables: usize,
    pub rows: u64,
    pub write_block_ms: u64,
    pub duration_ms: u64,
    pub source_kept: bool,
    pub message: String,
}

/// `data::moving::MovePlan` (`tenant move --to --dry-run`).
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerMovePlan {
    pub dry_run: bool,
    pub tenant: String,
    pub tenant_id: i64,
    pub domain: String,
    pub from_server: String,
    pub to_server: String,
    #[serde(deserialize_with = "nullable")]
    pub unfinished: Option<String>,
    pub message: String,
}

impl TenantStatus {
    /// The pending versions.
    pub fn pending_versions(&self) -> Vec<i32> {
        self.pending_migrations.iter().map(|p| p.version).collect()
    }
}

/// `inspect::StatusSummary`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSummary {
    pub total: usize,
    pub head: i32,
    pub at_head: usize,
    pub behind: usize,
    pub unprovisioned: usize,
    pub failed: usize,
    pub drifted: usize,
    pub unreachable: usize,
    pub moving: usize,
    pub by_revision: BTreeMap<String, usize>,
    pub by_server: BTreeMap<String, ServerSummary>,
    /// Absent when there is no shared schema.
    #[serde(default)]
    pub shared: BTreeMap<String, Option<i32>>,
}

/// `inspect::ServerSummary`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSummary {
    pub total: usize,
    pub at_head: usize,
    pub behind: usize,
    pub failed: usize,
    pub unreachable: usize,
}

/// `app::status::FleetStatus` (`status --all`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetStatus {
    pub tenants: Vec<TenantStatus>,
    pub summary: StatusSummary,
    /// Absent when there is no shared schema.
    #[serde(default)]
    pub shared: Vec<SharedStatus>,
}

/// `app::reads::Current`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Current {
    pub tenant_id: i64,
    pub domain: String,
    pub schema_name: String,
    #[serde(deserialize_with = "nullable")]
    pub current_revision: Option<i32>,
    pub at_head: bool,
}

/// `app::reads::Currents`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Currents {
    pub tenants: Vec<Current>,
    pub summary: StatusSummary,
}

/// `app::tenants::Created`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Created {
    pub tenant: Tenant,
    pub schema_created: bool,
    pub schema_adopted: bool,
    pub migrations_applied: bool,
    pub migration_status: TenantStatus,
    pub api_key: String,
    pub message: String,
}

/// `app::status::ListSummary`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSummary {
    pub total: usize,
    pub by_status: BTreeMap<String, usize>,
}

/// `app::status::Listing`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listing {
    pub tenants: Vec<Tenant>,
    pub summary: ListSummary,
}

/// `app::status::Shown`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shown {
    pub tenant: Tenant,
    pub migration_status: TenantStatus,
    #[serde(deserialize_with = "nullable")]
    pub placement: Option<Placement>,
}

/// `inspect::HistoryEntry`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    pub version: i32,
    pub name: String,
    pub checksum: String,
    #[serde(deserialize_with = "nullable")]
    pub applied: Option<bool>,
    #[serde(deserialize_with = "nullable")]
    pub applied_on: Option<String>,
    pub state: String,
    #[serde(deserialize_with = "nullable")]
    pub file: Option<String>,
    pub has_down: bool,
}

/// `app::reads::History`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    pub migrations: Vec<HistoryEntry>,
}

/// `fleet::TenantResult` (its `#[serde(skip)]` fields are absent).
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantResult {
    pub tenant_id: i64,
    pub domain: String,
    pub schema_name: String,
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub from_revision: Option<i32>,
    #[serde(deserialize_with = "nullable")]
    pub to_revision: Option<i32>,
    pub applied: Vec<i32>,
    #[serde(deserialize_with = "nullable")]
    pub error: Option<String>,
    pub duration_ms: u64,
    /// Only in `backup`'s results, and only when an archive was written.
    #[serde(default)]
    pub file: Option<String>,
}

/// `fleet::Summary`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub total: usize,
    pub ok: usize,
    pub up_to_date: usize,
    pub failed: usize,
    pub skipped: usize,
    pub duration_ms: u64,
}

/// `fleet::RunReport` (`upgrade`, `provision`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunReport {
    pub run_id: String,
    pub results: Vec<TenantResult>,
    pub summary: Summary,
    /// Absent when there is no shared schema (and for runs other than an upgrade).
    #[serde(default)]
    pub shared: Vec<SharedResult>,
}

/// `scheduler::SharedResult`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedResult {
    pub server: String,
    pub schema: String,
    #[serde(deserialize_with = "nullable")]
    pub from: Option<i32>,
    #[serde(deserialize_with = "nullable")]
    pub to: Option<i32>,
    pub status: String,
    pub applied: Vec<i32>,
    #[serde(deserialize_with = "nullable")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// `{"shared": [...]}`: what `upgrade`, `downgrade` and `stamp` with `--shared` print.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedRun {
    pub shared: Vec<SharedResult>,
}

/// `app::shared::SharedStatus`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedStatus {
    pub server: String,
    pub schema: String,
    #[serde(deserialize_with = "nullable")]
    pub current_revision: Option<i32>,
    pub pending_migrations: Vec<i32>,
    pub drift: Vec<String>,
    /// Present only when the server's shared schema could not be read.
    #[serde(default)]
    pub error: Option<String>,
}

/// `{"shared": [...]}`: what `status --shared` prints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedStatuses {
    pub shared: Vec<SharedStatus>,
}

/// `app::shared::SharedHistory`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedHistory {
    pub server: String,
    pub schema: String,
    pub migrations: Vec<HistoryEntry>,
    #[serde(default)]
    pub error: Option<String>,
}

/// `{"shared": [...]}`: what `history --shared` prints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedHistories {
    pub shared: Vec<SharedHistory>,
}

/// `dryrun::PlannedShared`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedShared {
    pub server: String,
    pub schema: String,
    #[serde(deserialize_with = "nullable")]
    pub from_revision: Option<i32>,
    #[serde(deserialize_with = "nullable")]
    pub to_revision: Option<i32>,
    pub versions: Vec<i32>,
    pub sql: String,
    #[serde(deserialize_with = "nullable")]
    pub error: Option<String>,
}

impl RunReport {
    /// The result for one domain.
    pub fn of(&self, domain: &str) -> &TenantResult {
        self.results
            .iter()
            .find(|r| r.domain == domain)
            .unwrap_or_else(|| panic!("no result for {domain} in {self:#?}"))
    }
}

/// `app::init::Initialized`: `registry::InitReport` and the version index per server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitReport {
    pub schema: String,
    pub applied: Vec<i32>,
    pub version: i32,
    pub binary_version: i32,
    #[allow(dead_code, reason = "listed to pin the shape")]
    pub index: Vec<ServerIndex>,
}

/// `app::init::ServerIndex`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerIndex {
    pub server: String,
    pub schema: String,
    pub installed: bool,
    pub attached: usize,
    pub watched: bool,
    pub unwatched: Option<String>,
    pub error: Option<String>,
}

/// `registry::EventRow` (one run-ledger entry).
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRow {
    pub id: i64,
    pub run_id: String,
    pub tenant_id: i64,
    pub domain: String,
    pub schema_name: String,
    pub action: String,
    #[serde(deserialize_with = "nullable")]
    pub from_revision: Option<i32>,
    #[serde(deserialize_with = "nullable")]
    pub to_revision: Option<i32>,
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub error: Option<String>,
    /// RFC 3339, else what is stored (`infinity`, a year past 9999); null for a NULL.
    #[serde(deserialize_with = "nullable")]
    pub started_at: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub finished_at: Option<String>,
    /// Null unless both times are times.
    #[serde(deserialize_with = "nullable")]
    pub duration_ms: Option<i64>,
    pub db_user: String,
    #[serde(deserialize_with = "nullable")]
    pub client_host: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub client_addr: Option<String>,
}

/// `app::reads::Events`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Events {
    pub events: Vec<EventRow>,
}

/// `dryrun::PlannedTenant`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedTenant {
    pub tenant_id: i64,
    pub domain: String,
    pub schema_name: String,
    #[serde(deserialize_with = "nullable")]
    pub from_revision: Option<i32>,
    #[serde(deserialize_with = "nullable")]
    pub to_revision: Option<i32>,
    pub versions: Vec<i32>,
    pub forgotten: Vec<i32>,
    pub sql: String,
    #[serde(deserialize_with = "nullable")]
    pub error: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub skipped: Option<String>,
}

/// `dryrun::DryRun` (`--dry-run -o json`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryRun {
    pub dry_run: bool,
    /// Absent when there is no shared schema.
    #[serde(default)]
    pub shared: Vec<PlannedShared>,
    pub tenants: Vec<PlannedTenant>,
}

/// `inspect::Problem`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    pub tenant: String,
    pub tenant_id: i64,
    pub domain: String,
    pub schema_name: String,
    pub kind: String,
    pub message: String,
    pub files: Vec<String>,
}

/// `app::reads::CheckReport`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckReport {
    pub ok: bool,
    pub head: i32,
    pub tenants: usize,
    pub tenants_with_problems: usize,
    pub problems: Vec<Problem>,
    /// Absent when there is no shared schema.
    #[serde(default)]
    pub shared: Vec<SharedStatus>,
    #[allow(dead_code, reason = "listed to pin the shape")]
    pub index: IndexCheck,
    /// The lint of the pending migrations: the files with findings (absent when none).
    #[serde(default)]
    pub lint: Vec<FileLint>,
}

/// `app::lint::FileLint`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLint {
    pub file: String,
    #[allow(dead_code, reason = "listed to pin the shape")]
    pub version: Option<i32>,
    pub findings: Vec<LintFinding>,
}

/// `files::lint::Finding`.
#[allow(dead_code, reason = "every field is listed to pin the shape")]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LintFinding {
    pub line: usize,
    pub column: usize,
    pub rule: String,
    pub message: String,
    pub help: Option<String>,
}

/// `app::reads::IndexCheck`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexCheck {
    pub trusted: usize,
    pub read_in_full: Vec<serde_json::Value>,
    pub deep: bool,
    pub unwatched: Vec<serde_json::Value>,
}

/// `app::revision::Written`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revision {
    pub version: i32,
    pub name: String,
    pub up: String,
    pub down: String,
}

/// `app::tenants::Dropped`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dropped {
    pub tenant: Tenant,
    pub schema_dropped: bool,
    pub message: String,
}

/// `dependents::Dependent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependent {
    pub object: String,
    pub depends_on: String,
}

/// `app::tenants::DropPlan` (`tenant drop --dry-run`).
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropPlan {
    pub dry_run: bool,
    pub tenant: Tenant,
    pub schema_name: String,
    pub schema_exists: bool,
    pub would_drop_schema: bool,
    pub objects: i64,
    pub blocking: Vec<Dependent>,
    #[serde(deserialize_with = "nullable")]
    pub error: Option<String>,
    pub message: String,
}

/// `app::tenants::Rotated`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotated {
    pub tenant: Tenant,
    pub api_key: String,
    pub message: String,
}

/// `config::Entry`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigEntry {
    pub key: String,
    pub value: String,
    pub source: String,
    #[serde(deserialize_with = "nullable")]
    pub origin: Option<String>,
}

/// `commands::config::Shown`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigShown {
    #[serde(deserialize_with = "nullable")]
    pub config_file: Option<String>,
    pub settings: Vec<ConfigEntry>,
    pub servers: Vec<ServerShown>,
}

/// `commands::config::ServerShown`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerShown {
    pub name: String,
    pub url: String,
    pub concurrency: usize,
    pub weight: u32,
}

/// `archive::Source`: the tenant an archive was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSource {
    pub domain: String,
    pub tenant_name: String,
    pub tenant_type: String,
    pub schema_name: String,
    pub server: String,
}

/// `data::ExportReport` (`tenant export -o json`).
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportReport {
    pub tenant: String,
    pub tenant_id: i64,
    pub domain: String,
    pub schema_name: String,
    pub server: String,
    pub file: String,
    #[serde(deserialize_with = "nullable")]
    pub revision: Option<i32>,
    pub tables: usize,
    pub rows: u64,
    #[serde(deserialize_with = "nullable")]
    pub bytes: Option<u64>,
    pub duration_ms: u64,
    pub message: String,
}

/// `data::Imported` (`tenant import`, `tenant clone`, `tenant create --from`).
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Imported {
    pub tenant: Tenant,
    pub schema_created: bool,
    pub schema_adopted: bool,
    pub migrations_applied: bool,
    pub migration_status: TenantStatus,
    pub api_key: String,
    pub source: ArchiveSource,
    pub tables: usize,
    pub rows: u64,
    pub duration_ms: u64,
    pub resumed: bool,
    pub message: String,
}

/// `data::ImportPlan` (the dry run of an import, a clone or `tenant create --from`).
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportPlan {
    pub dry_run: bool,
    pub domain: String,
    pub schema_name: String,
    pub server: String,
    pub source: ArchiveSource,
    #[serde(deserialize_with = "nullable")]
    pub revision: Option<i32>,
    pub tables: usize,
    pub rows: u64,
    pub resumes: bool,
    pub message: String,
}

/// `data::Restored` (`tenant restore -o json`).
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restored {
    pub tenant: Tenant,
    pub file: String,
    pub source: ArchiveSource,
    #[serde(deserialize_with = "nullable")]
    pub from_revision: Option<i32>,
    #[serde(deserialize_with = "nullable")]
    pub to_revision: Option<i32>,
    pub tables: usize,
    pub rows: u64,
    pub duration_ms: u64,
    pub write_block_ms: u64,
    pub message: String,
}

/// `serve::api::Changed`: what `POST /api/tenants/provision-schema` and
/// `POST /api/tenants/run-migrations` answer (a `TenantResult` with the tenant's id and a
/// sentence).
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changed {
    pub tenant_id: i64,
    pub domain: String,
    pub schema_name: String,
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub from_revision: Option<i32>,
    #[serde(deserialize_with = "nullable")]
    pub to_revision: Option<i32>,
    pub applied: Vec<i32>,
    #[serde(deserialize_with = "nullable")]
    pub error: Option<String>,
    pub duration_ms: u64,
    pub message: String,
}

/// `POST /api/fleet/upgrade`'s answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunStarted {
    pub run_id: String,
}

/// `serve::runs::RunView` (`GET /api/runs/{run_id}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunView {
    pub run_id: String,
    pub state: String,
    pub summary: Summary,
    pub events: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub error: Option<String>,
}

/// Every error the service answers: `{"detail": ...}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detail {
    pub detail: String,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub status: String,
}

/// `app::adopt::RegistryAdoption`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAdoption {
    pub found: String,
    pub columns_added: Vec<String>,
    pub keys_hashed: u64,
    pub without_key: Vec<String>,
}

/// `app::adopt::Found`: one tenant's (or schema's) history as adoption found it.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Found {
    #[serde(deserialize_with = "nullable")]
    pub tenant_id: Option<i64>,
    #[serde(deserialize_with = "nullable")]
    pub domain: Option<String>,
    pub schema_name: String,
    pub alembic_revisions: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub version: Option<i32>,
    pub outcome: String,
}

/// `app::adopt::SharedFound`: one server's shared schema as adoption found it.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedFound {
    pub server: String,
    pub schema: String,
    pub alembic_revisions: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub version: Option<i32>,
    /// `stamped`, `already` or `left_alone`.
    pub status: String,
    pub outcome: String,
}

/// `app::adopt::UsedObject`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsedObject {
    pub object: String,
    #[serde(deserialize_with = "nullable")]
    pub extension: Option<String>,
    pub used_by: Vec<String>,
    pub uses: usize,
}

/// `app::adopt::SchemaDependency`.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaDependency {
    pub schema: String,
    pub objects: Vec<UsedObject>,
    pub configured: bool,
}

/// `app::adopt::Adoption`: what `adopt alembic` prints.
#[allow(
    dead_code,
    reason = "every field is listed to pin the shape; not every one is read"
)]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adoption {
    pub dry_run: bool,
    pub registry: RegistryAdoption,
    pub stamped: Vec<Found>,
    pub already: Vec<Found>,
    pub unregistered_schemas: Vec<Found>,
    pub missing_schemas: Vec<Found>,
    pub unmapped: Vec<Found>,
    pub branches: Vec<Found>,
    pub left_alone: Vec<Found>,
    pub shared: Vec<SharedFound>,
    pub depends_on_schemas: Vec<SchemaDependency>,
    #[serde(deserialize_with = "nullable")]
    pub extra_search_path: Option<Vec<String>>,
    pub message: String,
}
