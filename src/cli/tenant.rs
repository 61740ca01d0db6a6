//! Arguments of `tenant create`, `list`, `show`, `rotate-key`, `drop` and `move`.

use clap::Subcommand;

use super::selection::status_parser;
use crate::app::citus::NodeAddr;
use crate::registry::Status;

/// The `tenant` subcommands.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Register a tenant; with --provision create its schema, with --migrate also upgrade
    /// it. Prints the tenant's API key once.
    #[command(
        after_help = "Examples:\n  tenantctl tenant create demo-church --name \"Demo Church\" --type church --migrate\n  tenantctl tenant create eu-parish --name \"EU Parish\" --server eu2 --migrate\n  tenantctl tenant create sandbox --name Sandbox --from demo-church   # a copy of its data"
    )]
    Create(CreateArgs),
    /// List registered tenants.
    #[command(
        after_help = "Examples:\n  tenantctl tenant list\n  tenantctl tenant list --type church --status failed -o json"
    )]
    List(ListArgs),
    /// Show one tenant with its migration status.
    #[command(
        after_help = "Examples:\n  tenantctl tenant show demo-church\n  tenantctl tenant show 42 -o json"
    )]
    Show(ShowArgs),
    /// Replace a tenant's API key; prints the new key once. The old key stops working.
    #[command(after_help = "Examples:\n  tenantctl tenant rotate-key demo-church")]
    RotateKey(RotateKeyArgs),
    /// Remove a tenant from the registry and drop its schema (unless --keep-schema).
    /// Asks first; without a terminal, refuses (exit 2) unless --yes is given.
    #[command(
        after_help = "Examples:\n  tenantctl tenant drop demo-church --dry-run   # what would be dropped, and what depends on it\n  tenantctl tenant drop demo-church --yes"
    )]
    Drop(DropArgs),
    /// Move a tenant to another server (--to: its data copied under a write fence, the
    /// registry switched, the old copy fenced), or its distributed schema to another
    /// worker of its Citus cluster (--node: citus_schema_move), under the tenant's lock.
    #[command(
        after_help = "Examples:\n  tenantctl tenant move demo-church --to eu2 --dry-run\n  tenantctl tenant move demo-church --to eu2 --online --yes\n  tenantctl tenant move demo-church --node worker-2:5432"
    )]
    Move(MoveArgs),
    /// Write the tenant's data to an archive (one compressed, checksummed file: its
    /// revision and every table's rows), from one snapshot under its lock.
    #[command(
        after_help = "Examples:\n  tenantctl tenant export demo-church -f demo-church.tenant\n  tenantctl tenant export demo-church -f - | ssh backup-host \"cat > demo-church.tenant\"\n  tenantctl tenant export demo-church --at 2026-12-07T13:05:00Z -f demo-church-1305.tenant"
    )]
    Export(ExportArgs),
    /// Register a new tenant from an archive: new API key (printed once), schema built by
    /// the migrations to the archive's revision, rows loaded. Exit 2 for a damaged
    /// archive, 3 when the migrations directory lacks or has changed its migrations.
    #[command(
        after_help = "Examples:\n  tenantctl tenant import demo-church.tenant --as demo-copy --name \"Demo copy\" --dry-run\n  tenantctl tenant import demo-church.tenant --as demo-copy --name \"Demo copy\" --server eu2"
    )]
    Import(ImportArgs),
    /// Copy a tenant's data into a new tenant (an export streamed into an import).
    #[command(
        after_help = "Examples:\n  tenantctl tenant clone demo-church demo-staging --name \"Demo staging\""
    )]
    Clone(CloneArgs),
    /// Replace a tenant's schema and data with an archive's. Asks first; without a
    /// terminal, refuses (exit 2) unless --yes is given.
    #[command(
        after_help = "Examples:\n  tenantctl tenant restore demo-church backups/demo-church/demo-church-20261130T021502Z.tenant --dry-run\n  tenantctl tenant restore demo-church backups/demo-church/demo-church-20261130T021502Z.tenant --yes\n  tenantctl tenant restore demo-church --latest --from backups --yes\n  tenantctl tenant restore demo-church --at \"2026-12-07 14:05:00+01\" --into demo-church-1405 --yes\n  tenantctl tenant restore demo-church --at 2026-12-07T13:05:00Z --yes"
    )]
    Restore(RestoreArgs),
}

/// Arguments of `tenant create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The tenant's unique domain slug, e.g. demo-church (lowercase letters, digits, '-').
    pub domain: String,

    /// Display name, e.g. "Demo Church".
    #[arg(long)]
    pub name: String,

    /// Contact email.
    #[arg(long)]
    pub email: Option<String>,

    /// Tenant type, e.g. church [default: standard; with --from, the source tenant's].
    #[arg(long = "type", value_name = "TYPE")]
    pub tenant_type: Option<String>,

    /// Schema name [default: schema_prefix + domain with '-' turned into '_'].
    #[arg(long, value_name = "SCHEMA")]
    pub schema: Option<String>,

    /// Create the tenant's schema.
    #[arg(long)]
    pub provision: bool,

    /// Create the schema and apply migrations up to --target (implies --provision).
    #[arg(long)]
    pub migrate: bool,

    /// Revision for --migrate: a version, or head (not a relative +N or -N).
    #[arg(
        long,
        value_name = "REV",
        requires = "migrate",
        allow_negative_numbers = true
    )]
    pub target: Option<String>,

    /// Take over the schema although it already exists and holds objects: they become the
    /// tenant's, and `tenant drop` would drop them with it. Without it, such a schema is
    /// refused (exit 2); an existing empty schema is taken without it.
    #[arg(long)]
    pub adopt: bool,

    /// The server its schema goes on (a [servers.NAME] in the config, or default)
    /// [default: the server with the fewest tenants per unit of weight].
    #[arg(long, value_name = "NAME")]
    pub server: Option<String>,

    /// Start from this tenant's data (as `tenant clone`): the schema is built to its
    /// revision and its rows are copied (with --migrate, then upgraded to --target).
    /// Without it, a --type listed in [tenants.templates] starts from that template
    /// tenant.
    #[arg(long, value_name = "TENANT", conflicts_with_all = ["provision", "adopt"])]
    pub from: Option<String>,

    /// With --from (or a template): show what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Where a new tenant made from data goes, and what it is called.
#[derive(Debug, clap::Args)]
pub struct NewTenantArgs {
    /// Display name, e.g. "Demo Church".
    #[arg(long)]
    pub name: String,

    /// Contact email.
    #[arg(long)]
    pub email: Option<String>,

    /// Tenant type [default: the source tenant's].
    #[arg(long = "type", value_name = "TYPE")]
    pub tenant_type: Option<String>,

    /// Schema name [default: schema_prefix + domain with '-' turned into '_'].
    #[arg(long, value_name = "SCHEMA")]
    pub schema: Option<String>,

    /// The server its schema goes on [default: placed by weight].
    #[arg(long, value_name = "NAME")]
    pub server: Option<String>,

    /// Check everything that can be checked (names, the archive whole, its migrations)
    /// and show what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `tenant export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The tenant: domain, id or schema name.
    #[arg(value_name = "TENANT")]
    pub tenant: String,

    /// The archive to write (`-` for standard output). A file is written under a
    /// temporary name and renamed when complete.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: std::path::PathBuf,

    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,

    /// The tenant as it was at TIME (RFC 3339, or "YYYY-MM-DD HH:MM:SS" with a zone),
    /// from its server's pgBackRest backup recovered on a scratch instance ([pitr]).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

/// Arguments of `tenant import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The archive (`-` for standard input: read once, so damage found while loading
    /// rolls the new tenant back).
    #[arg(value_name = "FILE")]
    pub file: std::path::PathBuf,

    /// The new tenant's domain.
    #[arg(long = "as", value_name = "DOMAIN")]
    pub domain: String,

    #[command(flatten)]
    pub new: NewTenantArgs,
}

/// Arguments of `tenant clone`.
#[derive(Debug, clap::Args)]
pub struct CloneArgs {
    /// The tenant to copy: domain, id or schema name.
    #[arg(value_name = "TENANT")]
    pub tenant: String,

    /// The new tenant's domain.
    #[arg(value_name = "DOMAIN")]
    pub domain: String,

    #[command(flatten)]
    pub new: NewTenantArgs,
}

/// Arguments of `tenant restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The tenant: domain, id or schema name.
    #[arg(value_name = "TENANT")]
    pub tenant: String,

    /// The archive (`-` for standard input).
    #[arg(
        value_name = "FILE",
        required_unless_present_any = ["latest", "at"],
        conflicts_with_all = ["latest", "at"]
    )]
    pub file: Option<std::path::PathBuf>,

    /// The tenant's newest backup in --from DIR (as `backup` writes them), instead of FILE.
    #[arg(long, conflicts_with = "at")]
    pub latest: bool,

    /// Where --latest looks [default: backup.dir].
    #[arg(long, value_name = "DIR", conflicts_with_all = ["file", "at"])]
    pub from: Option<std::path::PathBuf>,

    /// The tenant as it was at TIME (RFC 3339, or "YYYY-MM-DD HH:MM:SS" with a zone),
    /// instead of FILE: its server's pgBackRest backup is recovered to TIME on a scratch
    /// instance ([pitr]) and the tenant exported from it.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,

    /// With --at: make a new tenant DOMAIN of that data (named as the tenant, of its
    /// type, placed by weight) instead of replacing the tenant, to compare first.
    #[arg(long, value_name = "DOMAIN", requires = "at")]
    pub into: Option<String>,

    /// Confirm without asking (needed without a terminal).
    #[arg(long)]
    pub yes: bool,

    /// Check the archive and its migrations and show what would be replaced; change
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `tenant list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only tenants of this type.
    #[arg(long = "type", value_name = "TYPE")]
    pub tenant_type: Option<String>,

    /// Only tenants with this status.
    #[arg(long, value_parser = status_parser())]
    pub status: Option<Status>,
}

/// Arguments of `tenant show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The tenant: domain, id or schema name.
    #[arg(value_name = "TENANT")]
    pub tenant: String,
}

/// Arguments of `tenant rotate-key`.
#[derive(Debug, clap::Args)]
pub struct RotateKeyArgs {
    /// The tenant: domain, id or schema name.
    #[arg(value_name = "TENANT")]
    pub tenant: String,
}

/// Arguments of `tenant drop`.
#[derive(Debug, clap::Args)]
pub struct DropArgs {
    /// The tenant: domain, id or schema name.
    #[arg(value_name = "TENANT")]
    pub tenant: String,

    /// Keep the schema and its data; only remove the registry row.
    #[arg(long)]
    pub keep_schema: bool,

    /// Confirm without asking (needed without a terminal).
    #[arg(long)]
    pub yes: bool,

    /// Show what would be dropped and what outside the schema would block it; change
    /// nothing. Exit 0 when the drop could go ahead, 1 when it would be refused.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `tenant move`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("destination").required(true).args(["node", "to"])))]
pub struct MoveArgs {
    /// The tenant: domain, id or schema name.
    #[arg(value_name = "TENANT")]
    pub tenant: String,

    /// Within a Citus cluster: the worker to move the schema to, as HOST:PORT exactly as
    /// the coordinator's pg_dist_node names it (see `tenant show`'s placement).
    #[arg(long, value_name = "HOST:PORT")]
    pub node: Option<NodeAddr>,

    /// The server to move the tenant to (a [servers.NAME] in the config, or default):
    /// its data is copied under a write fence, the registry switched, and the old copy
    /// dropped (or renamed with --keep-source). A rerun after a kill finishes or undoes
    /// an interrupted move.
    #[arg(long, value_name = "SERVER")]
    pub to: Option<String>,

    /// With --to: keep the old copy, renamed to SCHEMA$moved_UNIXTIME, instead of
    /// dropping it.
    #[arg(long, requires = "to")]
    pub keep_source: bool,

    /// With --to: confirm dropping the old copy without asking (needed without a
    /// terminal unless --keep-source).
    #[arg(long, requires = "to")]
    pub yes: bool,

    /// With --to: move with logical replication, so writes are blocked only for the
    /// cutover whatever the tenant's size (source PostgreSQL 15+ with wal_level =
    /// logical; see the book's "Online move").
    #[arg(long, requires = "to")]
    pub online: bool,

    /// With --to: check the move and say what it would do; change nothing.
    #[arg(long, requires = "to")]
    pub dry_run: bool,
}
