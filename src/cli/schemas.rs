//! The JSON documents the commands print with `-o json`, one per command, and their JSON
//! Schemas, generated with `schemars` from the same types that print them.
//!
//! The documents the command line itself defines (`config show`, `manpages`, `--shared`,
//! `metrics`) live here too. A command that prints one of several documents (a dry run
//! or a result, one tenant or the fleet, `--shared`) has a schema that is any of them. [`all`] lists every command's
//! schema; `docs/src/reference/schemas/COMMAND.json` holds them as published files, and the test suite
//! checks those files against [`all`] and validates every JSON document a test makes the
//! binary print against its command's schema.

use schemars::{JsonSchema, Schema};
use serde::Serialize;

use crate::app::{adopt, citus, metrics, reads, revision, shared, status, tenant_data, tenants};
use crate::data::moving;
use crate::engine::{dryrun, scheduler};

/// `{"shared": [...]}`: what `--shared` prints (one entry per server).
#[derive(Debug, Serialize, JsonSchema)]
pub struct SharedDoc<T> {
    /// One entry per server.
    pub shared: T,
}

/// What `metrics -o json` prints.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MetricsDoc {
    /// Every sample of the Prometheus text, in its order.
    pub metrics: Vec<metrics::Sample>,
}

/// The JSON document `config show` prints.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Shown {
    /// The config file that was read, if any.
    pub config_file: Option<String>,
    /// Every setting.
    pub settings: Vec<crate::config::Entry>,
    /// The servers tenants live on, `default` first; URLs without their passwords.
    pub servers: Vec<ServerShown>,
}

/// One server in `config show`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ServerShown {
    /// Its name.
    pub name: String,
    /// Where it is, without the password.
    pub url: String,
    /// Its tenants worked on at once in a bulk run.
    pub concurrency: usize,
    /// Its placement weight.
    pub weight: u32,
}

/// The JSON document `config show` prints when the configuration does not load (the
/// error itself goes to stderr, exit 3, as for every command).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Broken {
    /// The config file that was named or found, if any.
    pub config_file: Option<String>,
    /// Every key the file sets, as written (URLs without passwords); empty when the
    /// file is not TOML.
    pub read: Vec<crate::config::ReadKey>,
    /// Why the configuration does not load, with the line and column or the key.
    pub error: String,
}

/// The JSON document `manpages -o json` prints.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Written {
    /// The directory the pages were written into.
    pub dir: String,
    /// Each page written, by path.
    pub pages: Vec<String>,
}

/// The documents a command that changes schemas prints: a run, a dry run, or what a
/// `--shared` change did.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
enum Change {
    Run(scheduler::RunReport),
    DryRun(dryrun::DryRun<'static>),
    Shared(SharedDoc<Vec<scheduler::SharedResult>>),
}

/// What `upgrade` prints: a change, or with `--impact` the lock impact report.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
enum UpgradeDoc {
    Change(Change),
    Impact(crate::app::impact::Impact),
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
enum StatusDoc {
    Fleet(status::FleetStatus),
    One(status::OneStatus),
    Shared(SharedDoc<Vec<shared::SharedStatus>>),
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
enum HistoryDoc {
    Tenant(reads::History),
    Shared(SharedDoc<Vec<shared::SharedHistory>>),
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
enum MadeFromData {
    Planned(crate::data::ImportPlan),
    Imported(crate::data::Imported),
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
enum CreateDoc {
    Created(crate::engine::tenant::Created),
    FromData(MadeFromData),
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
enum DropDoc {
    Plan(tenants::DropPlan),
    Dropped(tenants::Dropped),
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
enum MoveDoc {
    Plan(moving::MovePlan),
    Moved(moving::Moved),
    ToNode(citus::Moved),
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
enum RestoreDoc {
    Plan(tenant_data::RestorePlan),
    Restored(crate::data::Restored),
    AtPlan(crate::app::pitr::PitrPlan),
    At(crate::app::pitr::PitrRestored),
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
enum ExportDoc {
    Exported(crate::data::ExportReport),
    At(crate::app::pitr::PitrExported),
}

#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
enum ConfigDoc {
    Shown(Shown),
    Broken(Broken),
}

/// Every command that prints JSON, by the name of its schema file (the command's words
/// joined with `-`), with its schema.
pub fn all() -> Vec<(&'static str, Schema)> {
    // The serialize contract: what the types print (a key skipped when empty is not
    // required), not what they would accept.
    fn of<T: JsonSchema>() -> Schema {
        schemars::generate::SchemaSettings::draft2020_12()
            .for_serialize()
            .into_generator()
            .into_root_schema_for::<T>()
    }
    vec![
        ("adopt-alembic", of::<adopt::Adoption>()),
        ("backup", of::<Change>()),
        ("check", of::<reads::CheckReport>()),
        ("config-show", of::<ConfigDoc>()),
        ("current", of::<reads::Currents>()),
        ("downgrade", of::<Change>()),
        ("events", of::<reads::Events>()),
        ("history", of::<HistoryDoc>()),
        ("init", of::<crate::app::init::Initialized>()),
        ("lint", of::<crate::app::lint::LintReport>()),
        ("manpages", of::<Written>()),
        ("metrics", of::<MetricsDoc>()),
        ("provision", of::<Change>()),
        ("revision", of::<revision::Written>()),
        ("stamp", of::<Change>()),
        ("status", of::<StatusDoc>()),
        ("tenant-clone", of::<MadeFromData>()),
        ("tenant-create", of::<CreateDoc>()),
        ("tenant-drop", of::<DropDoc>()),
        ("tenant-export", of::<ExportDoc>()),
        ("tenant-import", of::<MadeFromData>()),
        ("tenant-list", of::<status::Listing>()),
        ("tenant-move", of::<MoveDoc>()),
        ("tenant-restore", of::<RestoreDoc>()),
        ("tenant-rotate-key", of::<tenants::Rotated>()),
        ("tenant-show", of::<status::Shown>()),
        ("upgrade", of::<UpgradeDoc>()),
    ]
}
