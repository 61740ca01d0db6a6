//! The command line: clap definitions for the global options and every command, and the
//! confirmation prompt. Nothing here depends on `commands`, which runs what is parsed.
//!
//! The `///` comments here and in the submodules are the `--help` text:
//! [`selection`] holds the flags the bulk commands share, [`changes`] the commands that
//! change tenants in bulk, [`reports`] those that only look, [`tenant`] the `tenant`
//! subcommands and [`project`] the rest.

pub mod changes;
pub mod commands;
pub mod confirm;
pub mod exit;
pub mod output;
pub mod project;
pub mod reporter;
pub mod reports;
pub mod schemas;
pub mod selection;
pub mod tenant;

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::cli::output::Format;
pub use changes::{BackupArgs, DowngradeArgs, ProvisionArgs, StampArgs, UpgradeArgs};
pub use project::{
    AdoptAlembicArgs, AdoptCommand, CompletionsArgs, ConfigCommand, InitArgs, LintArgs,
    ManpagesArgs, MetricsArgs, RevisionArgs, ServeArgs,
};
pub use reports::{CheckArgs, CurrentArgs, EventsArgs, HistoryArgs, StatusArgs};
pub use selection::{BulkOpts, Fleet, Selection};
pub use tenant::TenantCommand;

/// `--version`: the release, the commit it was built from and that commit's date.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("TENANTCTL_COMMIT"),
    ", ",
    env!("TENANTCTL_COMMIT_DATE"),
    ")"
);

/// Migrate schema-per-tenant PostgreSQL: a tenant registry, one schema per tenant, and
/// versioned SQL migrations applied to every tenant in parallel.
///
/// Exit codes: 0 success (including nothing to do), 1 operation failed, 2 usage error,
/// 3 setup error (config, connection, registry not initialised, migration files),
/// 4 some tenants of a bulk run failed, 5 `check` found drift, 130 interrupted.
#[derive(Debug, Parser)]
#[command(
    name = "tenantctl",
    version = VERSION,
    propagate_version = true,
    max_term_width = 100,
    after_help = "Examples:\n  tenantctl init\n  tenantctl tenant create demo-church --name \"Demo Church\" --migrate\n  tenantctl upgrade --all\n  tenantctl status --all\n  tenantctl check\n\nThe book: docs/ in the source (mdbook serve docs); tenantctl COMMAND --help for each command."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,

    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted anywhere on the command line.
#[derive(Debug, Args)]
pub struct GlobalOpts {
    /// Config file [default: the first of ./tenants.toml,
    /// ~/.config/tenantctl/tenants.toml and /etc/tenantctl/tenants.toml that exists].
    #[arg(
        short = 'c',
        long,
        global = true,
        help_heading = "Connection",
        env = "TENANTCTL_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// PostgreSQL URL, e.g. postgres://user@host:5432/app. Falls back to DATABASE_URL,
    /// then database.url in the config, then the libpq PG* variables.
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "TENANTCTL_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,

    /// Migrations directory [default: migrations.dir from the config, else ./migrations].
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "TENANTCTL_MIGRATIONS",
        value_name = "DIR"
    )]
    pub migrations: Option<PathBuf>,

    /// Longest wait for an answer to one of tenantctl's own reads of a server (its
    /// registry, schemas and catalogs), e.g. 30s [default: run.read_timeout, 60s].
    #[arg(
        long,
        global = true,
        help_heading = "Connection",
        env = "TENANTCTL_READ_TIMEOUT",
        value_name = "DURATION"
    )]
    pub read_timeout: Option<String>,

    /// Output format for results on stdout.
    #[arg(short = 'o', long, global = true, help_heading = "Output", value_enum, default_value_t = Format::Text)]
    pub output: Format,

    /// Same as `-o json`.
    #[arg(long, global = true, help_heading = "Output")]
    pub json: bool,

    /// Quieter: no notices or progress on stderr; a bulk run prints nothing when every
    /// tenant is ok, and its failures on stderr (other results are unchanged).
    #[arg(short, long, global = true, help_heading = "Output")]
    pub quiet: bool,

    /// Print more detail (repeat for more).
    #[arg(short, long, global = true, help_heading = "Output", action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Whether `database_url` came from `TENANTCTL_DATABASE_URL` rather than the flag.
    #[arg(skip)]
    pub database_url_from_env: bool,

    /// Whether `migrations` came from `TENANTCTL_MIGRATIONS` rather than the flag.
    #[arg(skip)]
    pub migrations_from_env: bool,

    /// Whether `read_timeout` came from `TENANTCTL_READ_TIMEOUT` rather than the flag.
    #[arg(skip)]
    pub read_timeout_from_env: bool,
}

impl Cli {
    /// Parses the process's command line (exiting on `--help` or a usage error, as clap
    /// does), noting which options clap filled from their environment variable.
    pub fn parse_args() -> Cli {
        Cli::from_matches(Cli::command().get_matches()).unwrap_or_else(|e| e.exit())
    }

    /// Like [`Cli::parse_args`], from the given arguments; errors are returned.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Cli::from_matches(Cli::command().try_get_matches_from(args)?)
    }

    fn from_matches(matches: clap::ArgMatches) -> Result<Cli, clap::Error> {
        let mut cli = Cli::from_arg_matches(&matches)?;
        let from_env =
            |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::EnvVariable);
        cli.global.database_url_from_env = from_env("database_url");
        cli.global.migrations_from_env = from_env("migrations");
        cli.global.read_timeout_from_env = from_env("read_timeout");
        Ok(cli)
    }
}

impl GlobalOpts {
    /// The output format, with `--json` taken into account.
    pub fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else {
            self.output
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the tenant registry (idempotent; safe to run on every deploy).
    #[command(
        after_help = "Examples:\n  tenantctl init\n  tenantctl --database-url postgres://migrator@db1/app init   # on every deploy"
    )]
    Init(InitArgs),
    /// Register, list, inspect, move and drop tenants.
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  tenantctl tenant create demo-church --name \"Demo Church\" --migrate\n  tenantctl tenant list --status failed\n  tenantctl tenant show demo-church"
    )]
    Tenant(TenantCommand),
    /// Create missing tenant schemas (an existing schema is left alone and reported).
    #[command(
        after_help = "Examples:\n  tenantctl provision --all\n  tenantctl provision --status pending\n  tenantctl provision --tenant sandbox --force-recreate --yes"
    )]
    #[command(
        override_usage = "tenantctl provision (--all | --tenant <TENANT>... | --type <TYPE> | --status <STATUS> | --server <NAME>) [OPTIONS]"
    )]
    Provision(ProvisionArgs),
    /// Apply pending migrations up to TARGET (default: head). Exit 4 when some tenants
    /// of a bulk run failed.
    #[command(
        after_help = "Examples:\n  tenantctl upgrade --all\n  tenantctl upgrade --all --dry-run\n  tenantctl upgrade --type church --canary 5 --max-failures 3\n  tenantctl upgrade --tenant demo-church 6\n  tenantctl -q upgrade --all --shard 1/4          # cron: quiet unless something fails\n  tenantctl upgrade --shared                       # the shared schema alone"
    )]
    #[command(
        override_usage = "tenantctl upgrade (--all | --tenant <TENANT>... | --type <TYPE> | --status <STATUS> | --server <NAME> | --shared) [OPTIONS] [TARGET]"
    )]
    Upgrade(UpgradeArgs),
    /// Show each tenant's current revision.
    #[command(
        after_help = "Examples:\n  tenantctl current --all\n  tenantctl current --tenant demo-church -o json"
    )]
    Current(CurrentArgs),
    /// List the migrations and, for a tenant, which are applied and when.
    #[command(
        after_help = "Examples:\n  tenantctl history                      # the migration files\n  tenantctl history --tenant demo-church  # with what the tenant applied, and when\n  tenantctl history --shared"
    )]
    History(HistoryArgs),
    /// Show migration status: current revision, pending migrations, provisioned/applied.
    #[command(
        after_help = "Examples:\n  tenantctl status --all\n  tenantctl status --tenant demo-church -o json\n  tenantctl status --shared"
    )]
    Status(StatusArgs),
    /// Run down scripts, newest first, until TARGET (a version, base, or -N below each
    /// tenant's own revision). Asks first; without a terminal, refuses (exit 2) unless
    /// --yes is given.
    #[command(mut_arg("target", |a| a.help(
        "Revision to go down to: a version number, base (nothing applied), or -N (N applied migrations below each tenant's own revision, as `alembic downgrade -N`)"
    )))]
    #[command(
        after_help = "Examples:\n  tenantctl downgrade --tenant demo-church -1 --yes\n  tenantctl downgrade --all 5 --dry-run"
    )]
    #[command(
        override_usage = "tenantctl downgrade (--all | --tenant <TENANT>... | --type <TYPE> | --status <STATUS> | --server <NAME> | --shared) [OPTIONS] <TARGET>"
    )]
    Downgrade(DowngradeArgs),
    /// Write one archive per selected tenant into --out DIR (each under a temporary name,
    /// renamed when complete); --keep N keeps the newest N per tenant; --due backs up
    /// only the tenants their [backup.policies] say are due. A backup changes no
    /// tenant's status; the ledger records it. Exit 4 when some tenants failed.
    #[command(
        after_help = "Examples:\n  tenantctl backup --all --out /var/backups/tenants --keep 7\n  tenantctl backup --due --out /var/backups/tenants   # from cron, every few minutes"
    )]
    #[command(
        override_usage = "tenantctl backup (--all | --tenant <TENANT>... | --type <TYPE> | --status <STATUS> | --server <NAME> | --due) [--out <DIR>] [OPTIONS]"
    )]
    Backup(BackupArgs),
    /// Record migrations up to TARGET as applied without running them (adopting schemas
    /// built by hand or by another tool); `stamp base` clears the history.
    #[command(
        mut_arg("target", |a| a.help(
            "Revision to record: a version number, head, or base (forget everything); not a relative +N or -N"
        )),
        mut_arg("yes", |a| a.help(
            "Confirm forgetting applied versions without asking (needed without a terminal)"
        )),
        mut_arg("dry_run", |a| a.help(
            "Print, per tenant, what would be recorded and forgotten, and the SQL; change nothing"
        ))
    )]
    #[command(
        after_help = "Examples:\n  tenantctl stamp --tenant legacy-parish 4 --yes\n  tenantctl stamp --shared 2 --yes"
    )]
    #[command(
        override_usage = "tenantctl stamp (--all | --tenant <TENANT>... | --type <TYPE> | --status <STATUS> | --server <NAME> | --shared) [OPTIONS] <TARGET>"
    )]
    Stamp(StampArgs),
    /// Write the next migration file, V<head+1>__<message>.sql, and its .down.sql.
    #[command(
        after_help = "Examples:\n  tenantctl revision -m \"add pledges\"    # writes V<head+1>__add_pledges.sql and .down.sql\n  tenantctl revision --shared -m \"add countries\""
    )]
    Revision(RevisionArgs),
    /// Lint migration files with squawk's rules: each finding with file:line, the rule,
    /// why it is dangerous and the safe way. Exit 0 when clean, 5 when something is found.
    #[command(after_help = "Examples:
  tenantctl lint                          # the migrations the fleet has still to apply
  tenantctl lint --all
  tenantctl lint migrations/V7__pledges.sql -o json

A reviewed exception, on a line of its own in the file:
  -- tenantctl: allow adding-field-with-default
Rules turned off for every file: [lint] ignore = [\"ban-drop-column\"] in tenants.toml.")]
    Lint(LintArgs),
    /// CI gate: check config, connection, migration files, registry and every tenant.
    /// Exit 0 when all tenants are at head with no drift, 5 when something is off.
    #[command(
        after_help = "Examples:\n  tenantctl check || [ $? -eq 5 ]   # in CI: 5 is drift or a tenant behind head"
    )]
    Check(CheckArgs),
    /// Show the run ledger: every change made to a tenant, by whom, and how it ended.
    #[command(
        after_help = "Examples:\n  tenantctl events --tenant demo-church\n  tenantctl events --failed --limit 20\n  tenantctl events --run 0ff5d87a-a94f-432a-ac44-c3a08fe842e2 -o json"
    )]
    Events(EventsArgs),
    /// Run the REST service (the original API, fleet runs, a dashboard at /, Prometheus
    /// metrics at /metrics). Needs TENANTCTL_API_TOKEN or serve.token_file (exit 3
    /// without). Stops on SIGTERM after the runs in flight finish their migration.
    #[command(
        after_help = "Examples:\n  TENANTCTL_API_TOKEN=$(cat /etc/tenantctl/api-token) tenantctl serve --listen 127.0.0.1:8080"
    )]
    Serve(ServeArgs),
    /// Print the fleet's Prometheus metrics (from the registry and the ledger), or write
    /// them atomically to --textfile for node_exporter.
    #[command(
        after_help = "Examples:\n  tenantctl metrics\n  tenantctl metrics --textfile /var/lib/node_exporter/tenantctl.prom   # from cron"
    )]
    Metrics(MetricsArgs),
    /// Show the effective configuration.
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  tenantctl config show\n  tenantctl -c /etc/tenantctl/tenants.toml config show -o json"
    )]
    Config(ConfigCommand),
    /// Take over a fleet run by another tool (`adopt alembic --map FILE`).
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  tenantctl adopt alembic --map revisions.toml --dry-run\n  tenantctl adopt alembic --map revisions.toml"
    )]
    Adopt(AdoptCommand),
    /// Print a shell completion script, e.g. `tenantctl completions bash > /etc/bash_completion.d/tenantctl`.
    #[command(
        after_help = "Examples:\n  tenantctl completions bash > /etc/bash_completion.d/tenantctl\n  tenantctl completions zsh > \"${fpath[1]}/_tenantctl\""
    )]
    Completions(CompletionsArgs),
    /// Write a man page for tenantctl and each of its commands into DIR (made if
    /// missing), from the same definitions as --help; `just install` installs them.
    #[command(
        after_help = "Examples:\n  tenantctl manpages /usr/local/share/man/man1 && man tenantctl-upgrade"
    )]
    Manpages(ManpagesArgs),
}

impl Command {
    /// `--concurrency`, for the commands that take it.
    pub fn concurrency(&self) -> Option<u16> {
        match self {
            Command::Upgrade(a) => a.bulk.concurrency,
            Command::Provision(a) => a.bulk.concurrency,
            Command::Downgrade(a) => a.bulk.concurrency,
            Command::Stamp(a) => a.bulk.concurrency,
            Command::Backup(a) => a.bulk.concurrency,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::selection::parse_shard;
    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = Cli::try_parse_from([
            "tenantctl",
            "status",
            "--all",
            "-o",
            "json",
            "--database-url",
            "postgres://x",
        ])
        .unwrap();
        assert_eq!(cli.global.format(), Format::Json);
        let cli = Cli::try_parse_from(["tenantctl", "--json", "current"]).unwrap();
        assert_eq!(cli.global.format(), Format::Json);
    }

    #[test]
    fn shards_parse() {
        assert_eq!(parse_shard("1/4").unwrap(), (1, 4));
        assert_eq!(parse_shard("4/4").unwrap(), (4, 4));
        for bad in ["0/4", "5/4", "1/0", "x/2", "1", "1/2/3", "-1/2"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
        assert!(Cli::try_parse_from(["tenantctl", "upgrade", "--all", "--shard", "3/2"]).is_err());
        assert!(Cli::try_parse_from([
            "tenantctl",
            "upgrade",
            "--all",
            "--fail-fast",
            "--max-failures",
            "2"
        ])
        .is_err());
    }

    #[test]
    fn tenant_and_all_conflict() {
        assert!(Cli::try_parse_from(["tenantctl", "upgrade", "--all", "--tenant", "a"]).is_err());
        assert!(
            Cli::try_parse_from(["tenantctl", "upgrade", "--concurrency", "0", "--all"]).is_err()
        );
    }
}
