//! Configuration: the `tenants.toml` file, and its merge with flags and environment.
//!
//! Precedence is flag > environment > file > default. [`resolve`] is a pure function of
//! its inputs (the environment is passed in), so the precedence rules are unit-tested.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ident;

/// The file name looked for in the current directory when no config is named.
pub const DEFAULT_CONFIG_FILE: &str = "tenants.toml";

/// Declares the config file's keys once. From this one list come the serde sections
/// (which refuse unknown keys), and [`KEYS`], from which [`resolve`] records where each
/// setting came from and [`describe`] lists it for `config show`. Each key names its type
/// in the file and how `config show` prints its effective value.
macro_rules! config_keys {
    ($($section:ident: $Section:ident {
        $($key:ident: $ty:ty => $shown:expr,)*
    })*) => {
        /// `tenants.toml` as written. Every key is optional; unknown keys are errors.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct FileConfig {
            $(#[serde(default)] $section: $Section,)*
            /// `[servers.NAME]` tables.
            #[serde(default)]
            servers: BTreeMap<String, ServerSection>,
        }

        $(
            /// One `[section]` of the file.
            #[derive(Debug, Default, Deserialize)]
            #[serde(deny_unknown_fields)]
            struct $Section {
                $($key: Option<$ty>,)*
            }
        )*

        /// Every config key, in `config show` order.
        const KEYS: &[Key] = &[$($(Key {
            name: concat!(stringify!($section), ".", stringify!($key)),
            in_file: |f| f.$section.$key.is_some(),
            shown: $shown,
        },)*)*];
    };
}

config_keys! {
    database: DatabaseSection {
        url: String => |_, shown| shown.database.to_string(),
        sslmode: String => |_, shown| shown.tls.sslmode.as_str().to_string(),
        sslrootcert: PathBuf => |_, shown| shown.tls.sslrootcert.clone(),
        connect_timeout: String => |s, _| duration_shown(s.connect_timeout),
    }
    registry: RegistrySection {
        schema: String => |s, _| s.registry_schema.clone(),
    }
    migrations: MigrationsSection {
        dir: PathBuf => |s, _| s.migrations_dir.display().to_string(),
        table: String => |s, _| s.history_table.clone(),
    }
    shared: SharedSection {
        dir: PathBuf => |s, _| s.shared.as_ref().map(|sh| sh.dir.display().to_string()).unwrap_or_else(|| "(none)".into()),
        schema: String => |s, _| s.shared.as_ref().map(|sh| sh.schema.clone()).unwrap_or_default(),
    }
    tenants: TenantsSection {
        schema_prefix: String => |s, _| s.schema_prefix.clone(),
        extra_search_path: Vec<String> => |s, _| format!("{:?}", s.extra_search_path),
        templates: BTreeMap<String, String> => |s, _| format!("{:?}", s.templates),
    }
    backup: BackupSection {
        dir: PathBuf => |s, _| s.backup_dir.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        policies: BTreeMap<String, PolicyFile> => |s, _| policies_shown(&s.backup_policies),
    }
    serve: ServeSection {
        listen: String => |s, _| s.serve_listen.to_string(),
        token_file: PathBuf => |s, _| s.serve_token_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        backups: bool => |s, _| s.serve_backups.to_string(),
        cookie_secure: bool => |s, _| s.serve_cookie_secure.to_string(),
    }
    lint: LintSection {
        ignore: Vec<String> => |s, _| format!("{:?}", s.lint_ignore),
    }
    pitr: PitrSection {
        stanza: String => |s, _| s.servers[0].pitr.as_ref().map(|p| p.stanza.clone()).unwrap_or_default(),
        pgbackrest_config: PathBuf => |s, _| s.servers[0].pitr.as_ref().and_then(|p| p.config.as_ref()).map(|p| p.display().to_string()).unwrap_or_default(),
        pgbackrest: PathBuf => |s, _| s.pitr.pgbackrest.display().to_string(),
        pg_bin: PathBuf => |s, _| s.pitr.pg_bin.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(the server's version's)".into()),
        scratch_dir: PathBuf => |s, _| s.pitr.scratch_dir.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        run_as: String => |s, _| s.pitr.run_as.clone().unwrap_or_default(),
    }
    run: RunSection {
        concurrency: usize => |s, _| s.concurrency.to_string(),
        lock_timeout: String => |s, _| duration_shown(s.lock_timeout),
        lock_retries: u64 => |s, _| s.lock_retries.to_string(),
        lock_retry_delay: String => |s, _| duration_shown(s.lock_retry_delay),
        statement_timeout: String => |s, _| duration_shown(s.statement_timeout),
        lock_wait: String => |s, _| duration_shown(s.lock_wait),
        read_timeout: String => |s, _| duration_shown(s.read_timeout),
        max_rewrite_bytes: SizeValue => |s, _| s.max_rewrite_bytes.map(|b| b.to_string()).unwrap_or_else(|| "off".into()),
    }
}

/// How many keys the file has, each listed once by `config show`.
pub const KEY_COUNT: usize = KEYS.len();

/// One `[backup.policies.TYPE]` table of the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    every: Option<String>,
    keep: Option<u32>,
    keep_within: Option<String>,
}

/// How often the tenants of one type are backed up, and which backups are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// A tenant is due when its last successful backup is older than this.
    pub every: Duration,
    /// The newest this many backups of each tenant are kept.
    pub keep: usize,
    /// Backups younger than this are kept too, however many there are.
    pub keep_within: Option<Duration>,
}

/// The policy name that covers every tenant type without a policy of its own.
pub const DEFAULT_POLICY: &str = "default";

/// The policy for tenants of `tenant_type`: its own, else `default`, else none.
pub fn policy_for<'a>(
    policies: &'a BTreeMap<String, Policy>,
    tenant_type: &str,
) -> Option<&'a Policy> {
    policies
        .get(tenant_type)
        .or_else(|| policies.get(DEFAULT_POLICY))
}

fn policies_shown(policies: &BTreeMap<String, Policy>) -> String {
    let shown: Vec<String> = policies
        .iter()
        .map(|(name, p)| {
            let within = p
                .keep_within
                .map(|d| format!(", keep_within {}", duration_shown(d)))
                .unwrap_or_default();
            format!(
                "{name}: every {}, keep {}{within}",
                duration_shown(p.every),
                p.keep
            )
        })
        .collect();
    if shown.is_empty() {
        "(none)".into()
    } else {
        shown.join("; ")
    }
}

/// `[backup.policies]`: each name a tenant type (or `default`), `every` from a minute to
/// a year, `keep` from 1 to 100000, `keep_within` (optional) up to ten years.
fn policies(file: &FileConfig) -> Result<BTreeMap<String, Policy>, Error> {
    let mut out = BTreeMap::new();
    for (name, p) in file.backup.policies.clone().unwrap_or_default() {
        ident::validate_tenant_type(&name)
            .map_err(|e| Error::setup(format!("config backup.policies: {e}")))?;
        let key = |k: &str| format!("backup.policies.{name}.{k}");
        let Some(every) = p.every.as_deref() else {
            return Err(Error::setup(format!(
                "config {} is missing: how often a tenant is backed up, such as \"1d\"",
                key("every")
            )));
        };
        let every = duration(
            Some(every),
            &key("every"),
            Duration::ZERO,
            DurationRange {
                zero: false,
                low: Duration::from_secs(60),
                high: Duration::from_secs(366 * 86_400),
                said: "1m to 366d",
            },
        )?;
        let keep = match p.keep {
            Some(k @ 1..=100_000) => k as usize,
            Some(_) => {
                return Err(Error::setup(format!(
                    "config {}: use 1 to 100000",
                    key("keep")
                )))
            }
            None => {
                return Err(Error::setup(format!(
                    "config {} is missing: how many backups of each tenant to keep",
                    key("keep")
                )))
            }
        };
        let keep_within = p
            .keep_within
            .as_deref()
            .map(|v| {
                duration(
                    Some(v),
                    &key("keep_within"),
                    Duration::ZERO,
                    DurationRange {
                        zero: false,
                        low: Duration::from_secs(60),
                        high: Duration::from_secs(3660 * 86_400),
                        said: "1m to 3660d",
                    },
                )
            })
            .transpose()?;
        out.insert(
            name,
            Policy {
                every,
                keep,
                keep_within,
            },
        );
    }
    Ok(out)
}

/// A size as the file writes it: a whole number of bytes, or text with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    /// `max_rewrite_bytes = 10737418240`.
    Bytes(i64),
    /// `max_rewrite_bytes = "10GB"`.
    Text(String),
}

/// A size: a whole number of bytes, or with a unit (`kB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`,
/// `TB`/`TiB`; `k`, `M`, `G`, `T` as powers of 1024), from 1 byte to 1 PiB.
pub fn bytes(value: &str, key: &str) -> Result<u64, Error> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" | "KiB" | "k" => 1 << 10,
        "MB" | "MiB" | "M" => 1 << 20,
        "GB" | "GiB" | "G" => 1 << 30,
        "TB" | "TiB" | "T" => 1 << 40,
        _ => 0,
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|_| factor > 0)
        .and_then(|n| n.checked_mul(factor))
        .filter(|b| (1..=1u64 << 50).contains(b))
        .ok_or_else(|| {
            Error::setup(format!(
                "config {key}: {} is not a size; use bytes or a number with kB, MB, GB or TB (powers of 1024), e.g. \"10GB\", from 1 byte to 1 PiB",
                ident::shown(value)
            ))
        })
}

/// `lint.ignore`, each a rule squawk knows (exit 3 naming the first that is not).
fn lint_ignore(file: &FileConfig) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for name in file.lint.ignore.iter().flatten() {
        let rule: squawk_linter::Rule = name.trim().parse().map_err(|_| {
            Error::setup(format!(
                "config lint.ignore: {} is not a lint rule; the rules are squawk's (https://squawkhq.com/docs/rules), e.g. adding-not-nullable-field",
                ident::shown(name)
            ))
        })?;
        out.push(rule.to_string());
    }
    Ok(out)
}

/// One `[servers.NAME]` table of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    url: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<PathBuf>,
    connect_timeout: Option<String>,
    concurrency: Option<usize>,
    weight: Option<u32>,
    pitr: Option<ServerPitrSection>,
}

/// One `[servers.NAME.pitr]` table of the file: that server's pgBackRest stanza.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerPitrSection {
    stanza: Option<String>,
    pgbackrest_config: Option<PathBuf>,
}

/// `[pitr]`: how `tenant restore --at` and `tenant export --at` recover a server's
/// backup to a scratch instance (each server's stanza is in its [`Server`]).
#[derive(Debug, Clone, Default)]
pub struct Pitr {
    /// The `pgbackrest` command (a name looked up on PATH, or a path).
    pub pgbackrest: PathBuf,
    /// The PostgreSQL binaries the scratch instance runs (`postgres`); `None`: those of
    /// the server's major version in Debian's layout.
    pub pg_bin: Option<PathBuf>,
    /// Where scratch instances are made, one directory each.
    pub scratch_dir: Option<PathBuf>,
    /// The operating-system user pgBackRest and the scratch instance run as (when
    /// tenantctl runs as root, which PostgreSQL refuses to run as).
    pub run_as: Option<String>,
}

/// A server's pgBackRest stanza: `[pitr] stanza` for `default`, `[servers.NAME.pitr]`
/// for the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    /// The stanza's name.
    pub stanza: String,
    /// pgBackRest's configuration file (`--config`); `None`: pgBackRest's default.
    pub config: Option<PathBuf>,
}

/// The application's shared schema (`public` by default), migrated on every server
/// with files of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    /// Its migrations directory.
    pub dir: PathBuf,
    /// The schema.
    pub schema: String,
}

/// The shared schema's history table, in the shared schema (refinery's columns).
pub const SHARED_HISTORY: &str = "tenantctl_shared_history";

/// The name of the server the registry lives on.
pub const DEFAULT_SERVER: &str = "default";

/// One PostgreSQL server tenants live on: `default` (the registry's database, reached
/// through `database.url`) or a `[servers.NAME]` table.
#[derive(Debug, Clone)]
pub struct Server {
    /// Its name: `default`, or `^[a-z][a-z0-9_-]*$`, at most 63 bytes.
    pub name: String,
    /// Its URL; `None` for `default`, which uses the database settings.
    pub url: Option<DatabaseUrl>,
    /// TLS mode (a `sslmode` in the URL wins).
    pub sslmode: Option<SslMode>,
    /// Root certificate(s) (a `sslrootcert` in the URL wins).
    pub sslrootcert: Option<RootCert>,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// Tenants of this server worked on at once in a bulk run.
    pub concurrency: usize,
    /// Placement weight: new tenants go to the server with the fewest tenants per unit
    /// of weight; 0 receives none.
    pub weight: u32,
    /// Its pgBackRest stanza, for point-in-time recovery; `None` when not configured.
    pub pitr: Option<Stanza>,
}

impl Settings {
    /// The server named `name`, if it is configured.
    pub fn server(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// These settings with `server`'s connection settings in place of the database's
    /// (the same settings for `default`).
    pub fn for_server(&self, server: &Server) -> Settings {
        let mut s = self.clone();
        if let Some(url) = &server.url {
            s.database_url = Some(url.clone());
            s.sslmode = server.sslmode;
            s.sslrootcert = server.sslrootcert.clone();
            s.connect_timeout = server.connect_timeout;
        }
        s
    }
}

/// Reads and checks the `[servers.*]` tables: `default` first (it may set only
/// `concurrency` and `weight`), then the others by name, each with a `url`.
fn servers(
    file: &FileConfig,
    file_dir: &Path,
    concurrency: usize,
    connect_timeout: Duration,
) -> Result<Vec<Server>, Error> {
    let mut out = vec![Server {
        name: DEFAULT_SERVER.into(),
        url: None,
        sslmode: None,
        sslrootcert: None,
        connect_timeout,
        concurrency,
        weight: 1,
        pitr: match &file.pitr.stanza {
            Some(name) => Some(stanza(name, file.pitr.pgbackrest_config.as_ref(), file_dir, "pitr")?),
            None if file.pitr.pgbackrest_config.is_some() => {
                return Err(Error::setup(
                    "config pitr.pgbackrest_config is set without pitr.stanza: name the default server's pgBackRest stanza",
                ))
            }
            None => None,
        },
    }];
    for (name, section) in &file.servers {
        let key = |k: &str| format!("servers.{name}.{k}");
        ident::validate_server_name(name)
            .map_err(|e| Error::setup(format!("config [servers.{}]: {e}", ident::shown(name))))?;
        let server_concurrency = section.concurrency.unwrap_or(concurrency);
        if server_concurrency == 0 || server_concurrency > 1024 {
            return Err(Error::setup(format!(
                "config {} {server_concurrency} is out of range; use 1 to 1024",
                key("concurrency")
            )));
        }
        let weight = section.weight.unwrap_or(1);
        if name == DEFAULT_SERVER {
            if section.url.is_some()
                || section.sslmode.is_some()
                || section.sslrootcert.is_some()
                || section.connect_timeout.is_some()
                || section.pitr.is_some()
            {
                return Err(Error::setup(
                    "config [servers.default] may set only concurrency and weight: the default server is database.url's (its stanza is [pitr] stanza)",
                ));
            }
            out[0].concurrency = server_concurrency;
            out[0].weight = weight;
            continue;
        }
        let url = section
            .url
            .clone()
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| Error::setup(format!("config [servers.{name}] needs a url")))?;
        out.push(Server {
            name: name.clone(),
            url: Some(DatabaseUrl {
                value: url,
                origin: format!("{} in the config file", key("url")),
            }),
            sslmode: section.sslmode.as_deref().map(SslMode::parse).transpose()?,
            sslrootcert: section
                .sslrootcert
                .as_ref()
                .map(|p| RootCert::from_setting(p, file_dir)),
            connect_timeout: duration(
                section.connect_timeout.as_deref(),
                &key("connect_timeout"),
                connect_timeout,
                CONNECT_TIMEOUT_RANGE,
            )?,
            concurrency: server_concurrency,
            weight,
            pitr: match &section.pitr {
                Some(p) => {
                    let table = format!("servers.{name}.pitr");
                    let Some(st) = &p.stanza else {
                        return Err(Error::setup(format!(
                            "config [{table}] needs a stanza: the server's pgBackRest stanza"
                        )));
                    };
                    let config = p
                        .pgbackrest_config
                        .as_ref()
                        .or(file.pitr.pgbackrest_config.as_ref());
                    Some(stanza(st, config, file_dir, &table)?)
                }
                None => None,
            },
        });
    }
    Ok(out)
}

/// A pgBackRest stanza as configured in table `table`: its name checked (letters,
/// digits, `_`, `.`, `-`; what pgBackRest accepts and a command line cannot misread).
fn stanza(
    name: &str,
    config: Option<&PathBuf>,
    file_dir: &Path,
    table: &str,
) -> Result<Stanza, Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(Error::setup(format!(
            "config {table}.stanza {} is not a pgBackRest stanza name: use letters, digits, '_', '.' and '-', starting with a letter or digit, at most 64",
            ident::shown(name)
        )));
    }
    let config = config.map(|p| file_dir.join(p));
    if let Some(p) = &config {
        plain_path(p, &format!("{table}.pgbackrest_config"))?;
    }
    Ok(Stanza {
        stanza: name.to_string(),
        config,
    })
}

/// Refuses a path pgBackRest would write into the scratch instance's
/// `restore_command` (which a shell runs) unless it is made of letters, digits and
/// `/ . _ - + @ , = ~ :` only.
fn plain_path(p: &Path, key: &str) -> Result<(), Error> {
    let ok = p.to_str().is_some_and(|t| {
        t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+@,=~:".contains(c))
    });
    if ok {
        Ok(())
    } else {
        Err(Error::setup(format!(
            "config {key} {} may hold only letters, digits and / . _ - + @ , = ~ : (pgBackRest writes it into a shell command)",
            ident::shown(&p.display().to_string())
        )))
    }
}

/// `[pitr]`'s tool settings, checked.
fn pitr(file: &FileConfig, file_dir: &Path) -> Result<Pitr, Error> {
    let p = &file.pitr;
    let nonempty = |v: Option<&PathBuf>, key: &str| -> Result<Option<PathBuf>, Error> {
        match v {
            Some(d)
                if d.as_os_str().is_empty() || d.to_str().is_some_and(|d| d.trim().is_empty()) =>
            {
                Err(Error::setup(format!("config {key} is empty")))
            }
            Some(d) => Ok(Some(file_dir.join(d))),
            None => Ok(None),
        }
    };
    let pgbackrest = match &p.pgbackrest {
        // A bare name is looked up on PATH, as a shell would.
        Some(c) if c.components().count() == 1 && !c.as_os_str().is_empty() => c.clone(),
        Some(c) => nonempty(Some(c), "pitr.pgbackrest")?.unwrap_or_default(),
        None => PathBuf::from("pgbackrest"),
    };
    if let Some(u) = &p.run_as {
        let ok = !u.is_empty()
            && u.len() <= 32
            && u.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && u.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'));
        if !ok {
            return Err(Error::setup(format!(
                "config pitr.run_as {} is not a user name: lowercase letters, digits, '_' and '-', at most 32",
                ident::shown(u)
            )));
        }
    }
    let scratch_dir = nonempty(p.scratch_dir.as_ref(), "pitr.scratch_dir")?;
    if let Some(d) = &scratch_dir {
        plain_path(d, "pitr.scratch_dir")?;
    }
    Ok(Pitr {
        pgbackrest,
        pg_bin: nonempty(p.pg_bin.as_ref(), "pitr.pg_bin")?,
        scratch_dir,
        run_as: p.run_as.clone(),
    })
}

/// One config key (see [`config_keys!`]).
struct Key {
    /// `section.key`, e.g. `run.lock_wait`.
    name: &'static str,
    /// Whether the file sets it.
    in_file: fn(&FileConfig) -> bool,
    /// Its effective value for `config show`, secrets redacted.
    shown: fn(&Settings, &Shown) -> String,
}

/// What `config show` prints for settings kept outside [`Settings`]: the connection
/// target and its TLS settings.
struct Shown<'a> {
    database: &'a str,
    tls: &'a TlsShown,
}

/// A duration for `config show`: `0`, or e.g. `1m 30s`.
fn duration_shown(d: Duration) -> String {
    if d.is_zero() {
        "0".to_string()
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// How TLS is used for database connections: libpq's `sslmode` values (all but `allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it, plaintext otherwise. With a root certificate
    /// the chain is verified as with `verify-ca`.
    Prefer,
    /// Fail unless TLS is used. The certificate is not verified unless a root
    /// certificate is present, in which case this is `verify-ca`.
    Require,
    /// Fail unless TLS is used and the server's certificate chain leads to the root
    /// certificate; the host name is not checked.
    VerifyCa,
    /// As `verify-ca`, and the certificate must also be issued for the host connected
    /// to (a DNS name or IP address in its subject alternative names, else its CN).
    VerifyFull,
}

impl SslMode {
    /// Parses `disable`, `prefer`, `require`, `verify-ca` or `verify-full`.
    pub fn parse(value: &str) -> Result<Self, Error> {
        match value {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(Error::setup(format!(
                "sslmode {} is not supported; use disable, prefer, require, verify-ca or verify-full",
                ident::shown(other)
            ))),
        }
    }

    /// The libpq spelling, e.g. `verify-full`.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the mode itself demands a verified certificate chain.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// Where the root certificates that verify the server come from (libpq's `sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of one or more CA certificates; only these are trusted.
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's trusted roots (requires `verify-full`).
    System,
}

impl RootCert {
    /// `system`, or a path taken relative to `base` (the config file's folder, or the
    /// working directory for a URL's `sslrootcert`).
    pub fn from_setting(value: &Path, base: &Path) -> RootCert {
        if value == Path::new("system") {
            RootCert::System
        } else {
            RootCert::File(base.join(value))
        }
    }
}

impl std::fmt::Display for RootCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootCert::File(p) => write!(f, "{}", p.display()),
            RootCert::System => f.write_str("system"),
        }
    }
}

/// The TLS settings in force for a connection target after the URL, the environment
/// and the file are merged, for `config show`.
#[derive(Debug, Clone)]
pub struct TlsShown {
    /// The effective `sslmode`.
    pub sslmode: SslMode,
    /// Where it came from.
    pub sslmode_source: Source,
    /// The root certificate file in use, `system`, or empty for none.
    pub sslrootcert: String,
    /// Where it came from.
    pub sslrootcert_source: Source,
}

impl TlsShown {
    /// What the settings alone say (no URL or environment applied).
    pub fn from_settings(settings: &Settings) -> TlsShown {
        let source = |key| settings.source(key);
        TlsShown {
            sslmode: settings.sslmode.unwrap_or(SslMode::Prefer),
            sslmode_source: source("database.sslmode"),
            sslrootcert: settings
                .sslrootcert
                .as_ref()
                .map_or(String::new(), ToString::to_string),
            sslrootcert_source: source("database.sslrootcert"),
        }
    }
}

/// Where a setting's value came from (shown by `config show`, used in messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Environment,
    /// The config file.
    File,
    /// The built-in default.
    Default,
}

/// Where the database URL came from; the URL itself may hold a password, so it is kept
/// out of `Debug` output.
#[derive(Clone)]
pub struct DatabaseUrl {
    /// The URL (or libpq key=value string) as given.
    pub value: String,
    /// Which input supplied it, e.g. `--database-url`, `DATABASE_URL`, the config file.
    pub origin: String,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl(<redacted> from {})", self.origin)
    }
}

/// The effective settings after merging flags, environment, file and defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// The database URL; `None` means "build one from the libpq `PG*` variables".
    pub database_url: Option<DatabaseUrl>,
    /// TLS mode from the file (a `sslmode` in the URL wins over it).
    pub sslmode: Option<SslMode>,
    /// Root certificate(s) to verify the server with (a `sslrootcert` in the URL wins).
    pub sslrootcert: Option<RootCert>,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// The schema holding the `tenants` table.
    pub registry_schema: String,
    /// The migrations directory.
    pub migrations_dir: PathBuf,
    /// Where the migrations directory setting came from.
    pub migrations_dir_source: Source,
    /// The per-tenant history table name.
    pub history_table: String,
    /// The shared schema and its migrations, when there are any (`[shared]`, or a
    /// `shared` folder in the migrations directory).
    pub shared: Option<Shared>,
    /// Prefix for schema names derived from domains.
    pub schema_prefix: String,
    /// Schemas searched after the tenant's own (shared extensions).
    pub extra_search_path: Vec<String>,
    /// `[tenants.templates]`: tenant type -> the tenant whose data a new tenant of that
    /// type starts from.
    pub templates: BTreeMap<String, String>,
    /// Where each setting came from, by config key.
    pub sources: BTreeMap<&'static str, Source>,
    /// Default number of tenants worked on at once.
    pub concurrency: usize,
    /// `lock_timeout` for migration sessions (zero: wait forever).
    pub lock_timeout: Duration,
    /// How many times a migration that hit `lock_timeout` is tried again.
    pub lock_retries: u32,
    /// The wait before the first retry; it doubles each time, up to 30 s.
    pub lock_retry_delay: Duration,
    /// `statement_timeout` for migration sessions (zero: no limit).
    pub statement_timeout: Duration,
    /// How long a tenant session waits for the tenant's advisory lock before the tenant
    /// is reported failed (zero: no limit).
    pub lock_wait: Duration,
    /// The longest tenantctl waits for the answer to one of its own reads of a server
    /// (the registry, the fleet's schemas and histories, catalogs) before it gives the
    /// connection up; never applied to migrations.
    pub read_timeout: Duration,
    /// The servers tenants live on, `default` first.
    pub servers: Vec<Server>,
    /// `backup.dir`: where `backup --due` (and `serve`'s backups) write, unless `--out`
    /// says otherwise.
    pub backup_dir: Option<PathBuf>,
    /// `[backup.policies]`, by tenant type (`default` for the rest).
    pub backup_policies: BTreeMap<String, Policy>,
    /// Where `tenantctl serve` listens.
    pub serve_listen: std::net::SocketAddr,
    /// A file holding `tenantctl serve`'s API token (`TENANTCTL_API_TOKEN` wins).
    pub serve_token_file: Option<PathBuf>,
    /// `serve.backups`: the service runs `backup --due` into `backup.dir` itself.
    pub serve_backups: bool,
    /// `serve.cookie_secure`: the dashboard's cookie is sent over HTTPS only (the service
    /// is behind a proxy that terminates TLS).
    pub serve_cookie_secure: bool,
    /// `lint.ignore`: lint rules turned off for every file (squawk's names, checked).
    pub lint_ignore: Vec<String>,
    /// `run.max_rewrite_bytes`: an upgrade skips a tenant in which a pending statement
    /// would rewrite a table (with its indexes) bigger than this; off when `None`.
    pub max_rewrite_bytes: Option<u64>,
    /// `[pitr]`: point-in-time recovery's tools and scratch directory.
    pub pitr: Pitr,
}

impl Settings {
    /// Where the setting with this config key came from ([`Source::Default`] when no
    /// source set it).
    pub fn source(&self, key: &str) -> Source {
        self.sources.get(key).copied().unwrap_or(Source::Default)
    }
}

/// What the command line said about configuration (flags, with their environment variables
/// merged in).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `-c/--config` or `TENANTCTL_CONFIG`.
    pub config: Option<PathBuf>,
    /// `--database-url` or `TENANTCTL_DATABASE_URL`.
    pub database_url: Option<String>,
    /// Whether `database_url` came from `TENANTCTL_DATABASE_URL` (the command line merges it).
    pub database_url_from_env: bool,
    /// `--migrations` or `TENANTCTL_MIGRATIONS`.
    pub migrations: Option<PathBuf>,
    /// Whether `migrations` came from `TENANTCTL_MIGRATIONS` (the command line merges it).
    pub migrations_from_env: bool,
    /// `--concurrency`, on bulk commands.
    pub concurrency: Option<usize>,
    /// `--read-timeout` or `TENANTCTL_READ_TIMEOUT`.
    pub read_timeout: Option<String>,
    /// Whether `read_timeout` came from `TENANTCTL_READ_TIMEOUT` (the command line merges it).
    pub read_timeout_from_env: bool,
}

/// Loads the config file (if any) and merges everything. `env` reads an environment
/// variable; `cwd` is where relative flag paths and `./tenants.toml` are looked up.
pub fn load(
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Settings, Error> {
    let (path, explicit) = which_file(overrides, env, cwd);
    let file = match &path {
        Some(p) => Some((p.clone(), read_file(p, explicit)?)),
        None => None,
    };
    resolve(overrides, env, cwd, file)
}

/// The config file [`load`] reads, and whether it was named (`--config`,
/// `TENANTCTL_CONFIG`) rather than found.
fn which_file(
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> (Option<PathBuf>, bool) {
    match &overrides.config {
        Some(p) => (Some(cwd.join(p)), true),
        // The first that exists; one that is not a file (a directory of that name) is
        // then an error naming it, never quietly skipped.
        None => (candidates(env, cwd).into_iter().find(|p| p.exists()), false),
    }
}

/// What can be read of a configuration that does not load, for `config show`: the file
/// [`load`] reads and every key its TOML holds, in the file's order, as `section.key`
/// (`servers.NAME.key`) with its value as written (a URL without its password). Empty
/// when the file cannot be read or is not TOML at all.
#[derive(Debug, Default, Serialize, schemars::JsonSchema)]
pub struct Readable {
    /// The config file, if one was named or found.
    pub config_file: Option<PathBuf>,
    /// Each key the file sets, with its value as written.
    pub keys: Vec<ReadKey>,
}

/// One key of [`Readable`].
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ReadKey {
    /// `section.key`, e.g. `run.concurrency`.
    pub key: String,
    /// As written in the file (TOML), a URL without its password.
    pub value: String,
}

/// See [`Readable`].
pub fn readable(
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Readable {
    let (config_file, _) = which_file(overrides, env, cwd);
    let mut keys = Vec::new();
    let table = config_file
        .as_deref()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() <= MAX_CONFIG_BYTES))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| text.parse::<toml::Table>().ok());
    if let Some(table) = table {
        flatten("", &toml::Value::Table(table), &mut keys);
    }
    Readable { config_file, keys }
}

fn flatten(prefix: &str, value: &toml::Value, out: &mut Vec<ReadKey>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), item, out);
            }
        }
        other => {
            let value = match other {
                // Whatever key it sits under (a misspelt `url`, a wrong type), a value
                // that may be a secret is never shown as written.
                _ if looks_secret(prefix) => "****".to_string(),
                toml::Value::String(s) => format!("{:?}", without_password(s)),
                v => v.to_string(),
            };
            out.push(ReadKey {
                key: prefix.to_string(),
                value,
            });
        }
    }
}

/// Whether a key's name says its value is a secret (`password`, `sslpassword`,
/// `token`, `secret`, ... anywhere in its path).
fn looks_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passwd", "token", "secret", "credential"]
        .iter()
        .any(|s| key.contains(s))
}

/// A message that may quote a value from the file (toml's "invalid type: string
/// \"...\", expected usize"), with every quoted value that could hold a secret (a URL,
/// an `@`, a `password=`) replaced by `"…"`.
fn without_quoted_secrets(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('"') {
        let Some(close) = rest[open + 1..].find('"') else {
            break;
        };
        let quoted = &rest[open + 1..open + 1 + close];
        out.push_str(&rest[..=open]);
        let lower = quoted.to_ascii_lowercase();
        if quoted.contains("://") || quoted.contains('@') || lower.contains("password") {
            out.push('…');
        } else {
            out.push_str(quoted);
        }
        out.push('"');
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    out
}

/// A connection string as written, with any password replaced by `****`: the
/// `user:PASSWORD@` of a URL and every `password=` of libpq's `key=value` form. Works
/// on text that does not parse, which is when it is needed.
pub fn without_password(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let mut out = url[..scheme_end + 3].to_string();
                out.push_str(&rest[..colon]);
                out.push_str(":****");
                out.push_str(&rest[at..]);
                return hide_keyword_passwords(&out);
            }
        }
        return hide_keyword_passwords(url);
    }
    hide_keyword_passwords(url)
}

/// `password=...` (bare or quoted, in a `key=value` string or a URL's query) as
/// `password=****`.
fn hide_keyword_passwords(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("password") {
        let after = &rest[i + "password".len()..];
        let trimmed = after.trim_start();
        if let Some(value) = trimmed.strip_prefix('=') {
            let value = value.trim_start();
            let skipped = after.len() - value.len();
            let end = if let Some(quoted) = value.strip_prefix('\'') {
                let mut j = 0;
                let b = quoted.as_bytes();
                while j < b.len() && b[j] != b'\'' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                (j + 2).min(value.len())
            } else {
                value.find([' ', '\t', '&']).unwrap_or(value.len())
            };
            out.push_str(&rest[..i]);
            out.push_str("password=****");
            rest = &after[skipped + end..];
        } else {
            out.push_str(&rest[..i + "password".len()]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Where the config file is looked for without `--config` or `TENANTCTL_CONFIG` (which
/// the command line merges into `--config`), in order: `./tenants.toml`, then
/// `$XDG_CONFIG_HOME/tenantctl/tenants.toml` (`~/.config/...` without it), then
/// `/etc/tenantctl/tenants.toml`. The first that exists is read.
pub fn candidates(env: &dyn Fn(&str) -> Option<String>, cwd: &Path) -> Vec<PathBuf> {
    let mut out = vec![cwd.join(DEFAULT_CONFIG_FILE)];
    let xdg = env("XDG_CONFIG_HOME")
        .filter(|v| Path::new(v).is_absolute())
        .map(PathBuf::from)
        .or_else(|| {
            env("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        });
    if let Some(dir) = xdg {
        out.push(dir.join("tenantctl").join(DEFAULT_CONFIG_FILE));
    }
    out.push(PathBuf::from("/etc/tenantctl").join(DEFAULT_CONFIG_FILE));
    out
}

/// The largest config file read: far above any real one, and small enough that a file
/// that is not a config (a log, a dump) is refused at once rather than parsed.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

fn read_file(path: &Path, explicit: bool) -> Result<FileConfig, Error> {
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.is_file() && meta.len() > MAX_CONFIG_BYTES {
            return Err(Error::setup(format!(
                "config file {} is {} bytes; a config file holds at most {MAX_CONFIG_BYTES} bytes (1 MiB)",
                path.display(),
                meta.len()
            )));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        let hint = if explicit {
            " (named by --config or TENANTCTL_CONFIG)"
        } else {
            ""
        };
        Error::setup(format!(
            "cannot read config file {}{hint}: {e}",
            path.display()
        ))
    })?;
    parse_file(&text).map_err(|e| Error::setup(format!("config file {}: {e}", path.display())))
}

/// Parses the text of a config file.
///
/// The error names the line and column and says what is wrong, but never quotes the
/// line: it may hold a URL with a password.
pub fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let message = without_quoted_secrets(&did_you_mean(e.message().trim_end()));
        match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: {message}")
            }
            None => message,
        }
    })
}

/// toml's "unknown field `concurency`, expected one of `url`, `concurrency`, ..." with the
/// nearest expected name first: "unknown key `concurency`: did you mean `concurrency`?
/// (expected one of ...)". Other messages are returned as they are.
fn did_you_mean(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    // Near: a letter or two off (a swap counts as one), or a close Jaro-Winkler score.
    let nearest = names
        .iter()
        .map(|n| {
            (
                strsim::osa_distance(unknown, n),
                strsim::jaro_winkler(unknown, n),
                *n,
            )
        })
        .filter(|(edits, score, _)| *edits <= 1 + unknown.len() / 6 || *score >= 0.85)
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
    match nearest {
        Some((_, _, name)) => format!(
            "unknown key `{unknown}`: did you mean `{name}`?{}",
            expected.trim_start_matches(',')
        ),
        None => match KEYS.iter().find(|k| {
            k.name
                .split_once('.')
                .is_some_and(|(_, key)| key == unknown)
        }) {
            // A key written outside its section (`url` at the top, for `[database] url`).
            Some(k) => format!(
                "unknown key `{unknown}` here: did you mean `{}`, in its section `[{}]`?{}",
                k.name,
                k.name.split_once('.').map_or("", |(section, _)| section),
                expected.trim_start_matches(',')
            ),
            None => format!("unknown key `{unknown}`{expected}"),
        },
    }
}

/// Merges overrides, environment and file into [`Settings`] and validates the result.
pub fn resolve(
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
    file: Option<(PathBuf, FileConfig)>,
) -> Result<Settings, Error> {
    let (config_file, file) = match file {
        Some((p, f)) => (Some(p), f),
        None => (None, FileConfig::default()),
    };
    let file_dir = config_file
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cwd.to_path_buf());
    let database_url = database_url(overrides, env, &file);
    let sslmode = file
        .database
        .sslmode
        .as_deref()
        .map(SslMode::parse)
        .transpose()?;
    let sslrootcert = file
        .database
        .sslrootcert
        .as_ref()
        .map(|p| RootCert::from_setting(p, &file_dir));
    let connect_timeout = duration(
        file.database.connect_timeout.as_deref(),
        "database.connect_timeout",
        Duration::from_secs(10),
        CONNECT_TIMEOUT_RANGE,
    )?;

    let registry_schema = file
        .registry
        .schema
        .clone()
        .unwrap_or_else(|| "public".into());
    ident::validate_registry_schema(&registry_schema).map_err(as_setup("registry.schema"))?;
    let (migrations_dir, migrations_dir_source) = migrations_dir(overrides, &file, cwd, &file_dir);
    let history_table = history_table(&file)?;
    let shared = shared(&file, &file_dir, &migrations_dir)?;
    let schema_prefix = schema_prefix(&file)?;
    let extra_search_path = extra_search_path(&file)?;
    let templates = templates(&file)?;
    if file.backup.dir.as_ref().is_some_and(|d| {
        d.as_os_str().is_empty() || d.to_str().is_some_and(|d| d.trim().is_empty())
    }) {
        return Err(Error::setup(
            "config backup.dir is empty: name the directory the backups go to",
        ));
    }
    let backup_dir = file.backup.dir.as_ref().map(|p| file_dir.join(p));
    let backup_policies = policies(&file)?;
    let serve_listen = match &file.serve.listen {
        Some(l) => l.parse().map_err(|e| {
            Error::setup(format!(
                "config serve.listen {} is not an address and port such as 127.0.0.1:8080: {e}",
                ident::shown(l)
            ))
        })?,
        None => std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
    };
    let serve_token_file = file.serve.token_file.as_ref().map(|p| file_dir.join(p));
    let serve_backups = file.serve.backups.unwrap_or(false);
    let serve_cookie_secure = file.serve.cookie_secure.unwrap_or(false);
    if serve_backups && (backup_dir.is_none() || backup_policies.is_empty()) {
        return Err(Error::setup(
            "config serve.backups = true needs backup.dir (where the backups go) and at least one [backup.policies.TYPE] (or default)",
        ));
    }
    let lint_ignore = lint_ignore(&file)?;
    let max_rewrite_bytes = match &file.run.max_rewrite_bytes {
        None => None,
        Some(SizeValue::Text(v)) => Some(bytes(v, "run.max_rewrite_bytes")?),
        Some(SizeValue::Bytes(n)) => Some(bytes(&n.to_string(), "run.max_rewrite_bytes")?),
    };
    let run = run_limits(overrides, &file)?;
    let servers = servers(&file, &file_dir, run.concurrency, connect_timeout)?;
    let pitr = pitr(&file, &file_dir)?;
    let sources = sources(
        &file,
        overrides,
        database_url.as_ref(),
        migrations_dir_source,
    );
    Ok(Settings {
        sources,
        config_file,
        database_url,
        sslmode,
        sslrootcert,
        connect_timeout,
        registry_schema,
        migrations_dir,
        migrations_dir_source,
        history_table,
        shared,
        schema_prefix,
        extra_search_path,
        templates,
        concurrency: run.concurrency,
        lock_timeout: run.lock_timeout,
        lock_retries: run.lock_retries,
        lock_retry_delay: run.lock_retry_delay,
        statement_timeout: run.statement_timeout,
        lock_wait: run.lock_wait,
        read_timeout: run.read_timeout,
        servers,
        backup_dir,
        backup_policies,
        serve_listen,
        serve_token_file,
        serve_backups,
        serve_cookie_secure,
        lint_ignore,
        max_rewrite_bytes,
        pitr,
    })
}

/// The database URL: `--database-url` (or `TENANTCTL_DATABASE_URL`), then `DATABASE_URL`,
/// then `database.url` in the file; blank values count as unset.
fn database_url(
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    file: &FileConfig,
) -> Option<DatabaseUrl> {
    let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    if let Some(url) = nonempty(overrides.database_url.clone()) {
        Some(DatabaseUrl {
            value: url,
            origin: if overrides.database_url_from_env {
                "TENANTCTL_DATABASE_URL".into()
            } else {
                "--database-url".into()
            },
        })
    } else if let Some(url) = nonempty(env("DATABASE_URL")) {
        Some(DatabaseUrl {
            value: url,
            origin: "DATABASE_URL".into(),
        })
    } else {
        nonempty(file.database.url.clone()).map(|url| DatabaseUrl {
            value: url,
            origin: "database.url in the config file".into(),
        })
    }
}

/// The migrations directory and where it came from: a relative flag or environment value
/// is taken from `cwd`, a relative file value from the file's folder.
fn migrations_dir(
    overrides: &Overrides,
    file: &FileConfig,
    cwd: &Path,
    file_dir: &Path,
) -> (PathBuf, Source) {
    match (&overrides.migrations, &file.migrations.dir) {
        (Some(dir), _) if overrides.migrations_from_env => (cwd.join(dir), Source::Environment),
        (Some(flag), _) => (cwd.join(flag), Source::Flag),
        (None, Some(dir)) => (file_dir.join(dir), Source::File),
        (None, None) => (cwd.join("migrations"), Source::Default),
    }
}

/// `migrations.table`, checked as an identifier.
fn history_table(file: &FileConfig) -> Result<String, Error> {
    let table = file
        .migrations
        .table
        .clone()
        .unwrap_or_else(|| "refinery_schema_history".into());
    ident::validate_identifier(&table, "history table").map_err(as_setup("migrations.table"))?;
    Ok(table)
}

/// `[shared]`: its `dir` (from the file's folder; by default the `shared` folder of the
/// migrations directory) and `schema` (`public`), checked. `None` when `[shared]` sets
/// nothing and there is no such folder: no shared schema.
fn shared(
    file: &FileConfig,
    file_dir: &Path,
    migrations_dir: &Path,
) -> Result<Option<Shared>, Error> {
    let schema = file
        .shared
        .schema
        .clone()
        .unwrap_or_else(|| "public".into());
    ident::validate_identifier(&schema, "shared schema").map_err(as_setup("shared.schema"))?;
    if schema.starts_with("pg_") || schema == "information_schema" {
        return Err(Error::setup(format!(
            "config shared.schema \"{schema}\" is reserved by PostgreSQL"
        )));
    }
    let dir = match &file.shared.dir {
        Some(dir) if dir.as_os_str().is_empty() => {
            return Err(Error::setup(
                "config shared.dir is empty: name the shared schema's migrations directory, or leave the key out for the migrations directory's `shared` folder",
            ))
        }
        Some(dir) => file_dir.join(dir),
        None => {
            let default = migrations_dir.join("shared");
            if !default.is_dir() && file.shared.schema.is_none() {
                return Ok(None);
            }
            default
        }
    };
    if dir == migrations_dir {
        return Err(Error::setup(format!(
            "config shared.dir {} is the tenants' migrations directory: the shared schema needs a directory of its own (by default the migrations directory's `shared` folder)",
            dir.display()
        )));
    }
    Ok(Some(Shared { dir, schema }))
}

/// `tenants.schema_prefix`, checked: what it adds to a domain must keep the schema name safe.
fn schema_prefix(file: &FileConfig) -> Result<String, Error> {
    let prefix = file
        .tenants
        .schema_prefix
        .clone()
        .unwrap_or_else(|| "tenant_".into());
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        || prefix.starts_with(|c: char| c.is_ascii_digit())
        || prefix.len() > 40
    {
        return Err(Error::setup(format!(
            "tenants.schema_prefix {} must be lowercase letters, digits and '_', not start with a digit, at most 40 bytes",
            ident::shown(&prefix)
        )));
    }
    Ok(prefix)
}

/// `[tenants.templates]`: each key a valid tenant type, each value a tenant reference.
fn templates(file: &FileConfig) -> Result<BTreeMap<String, String>, Error> {
    let templates = file.tenants.templates.clone().unwrap_or_default();
    for (tenant_type, tenant) in &templates {
        ident::validate_tenant_type(tenant_type).map_err(as_setup("tenants.templates"))?;
        if tenant.trim().is_empty() || tenant.len() > 255 || tenant.chars().any(char::is_control) {
            return Err(Error::setup(format!(
                "tenants.templates.{tenant_type} must name a tenant (domain, id or schema name)"
            )));
        }
    }
    Ok(templates)
}

/// `tenants.extra_search_path`, each schema name checked.
fn extra_search_path(file: &FileConfig) -> Result<Vec<String>, Error> {
    let path = file.tenants.extra_search_path.clone().unwrap_or_default();
    for s in &path {
        ident::validate_identifier(s, "schema in tenants.extra_search_path")
            .map_err(as_setup("tenants.extra_search_path"))?;
    }
    Ok(path)
}

/// The `[run]` settings, with `--concurrency` taken into account.
struct RunLimits {
    concurrency: usize,
    lock_timeout: Duration,
    lock_retries: u32,
    lock_retry_delay: Duration,
    statement_timeout: Duration,
    lock_wait: Duration,
    read_timeout: Duration,
}

/// The shortest and longest `run.read_timeout`.
pub const READ_TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(3600));

/// `run.read_timeout` from `--read-timeout`, `TENANTCTL_READ_TIMEOUT` or the file: a
/// duration from 1 s to 1 h (default 60 s).
fn read_timeout(overrides: &Overrides, file: &FileConfig) -> Result<Duration, Error> {
    let (value, from) = match (&overrides.read_timeout, &file.run.read_timeout) {
        (Some(v), _) if overrides.read_timeout_from_env => (v.as_str(), "TENANTCTL_READ_TIMEOUT"),
        (Some(v), _) => (v.as_str(), "--read-timeout"),
        (None, Some(v)) => (v.as_str(), "config run.read_timeout"),
        (None, None) => return Ok(Duration::from_secs(60)),
    };
    let (low, high) = READ_TIMEOUT_RANGE;
    let d = parse_duration(value)
        .map_err(|e| Error::setup(format!("run.read_timeout from {from}: {e}")))?;
    if d < low || d > high {
        return Err(Error::setup(format!(
            "run.read_timeout from {from}: {} is out of range; use 1s to 1h",
            ident::shown(value)
        )));
    }
    Ok(d)
}

/// Reads and checks the `[run]` settings, in the order their errors are reported.
fn run_limits(overrides: &Overrides, file: &FileConfig) -> Result<RunLimits, Error> {
    let run = &file.run;
    let concurrency = overrides.concurrency.or(run.concurrency).unwrap_or(4);
    if concurrency == 0 || concurrency > 1024 {
        return Err(Error::setup(format!(
            "concurrency {concurrency} is out of range; use 1 to 1024"
        )));
    }
    let lock_timeout = duration(
        run.lock_timeout.as_deref(),
        "run.lock_timeout",
        Duration::from_secs(10),
        PG_TIMEOUT_RANGE,
    )?;
    let lock_retries = run.lock_retries.unwrap_or(3);
    let Ok(lock_retries @ 0..=100) = u32::try_from(lock_retries) else {
        return Err(Error::setup(format!(
            "config run.lock_retries {lock_retries} is out of range; use 0 to 100"
        )));
    };
    Ok(RunLimits {
        concurrency,
        lock_timeout,
        lock_retries,
        lock_retry_delay: duration(
            run.lock_retry_delay.as_deref(),
            "run.lock_retry_delay",
            Duration::from_secs(1),
            LOCK_RETRY_DELAY_RANGE,
        )?,
        statement_timeout: duration(
            run.statement_timeout.as_deref(),
            "run.statement_timeout",
            Duration::ZERO,
            PG_TIMEOUT_RANGE,
        )?,
        lock_wait: duration(
            run.lock_wait.as_deref(),
            "run.lock_wait",
            Duration::ZERO,
            PG_TIMEOUT_RANGE,
        )?,
        read_timeout: read_timeout(overrides, file)?,
    })
}

/// Where each setting came from: the file or the default, except for the settings a flag
/// or the environment can give.
fn sources(
    file: &FileConfig,
    overrides: &Overrides,
    database_url: Option<&DatabaseUrl>,
    migrations_dir_source: Source,
) -> BTreeMap<&'static str, Source> {
    let mut sources: BTreeMap<&'static str, Source> = KEYS
        .iter()
        .map(|k| {
            let source = if (k.in_file)(file) {
                Source::File
            } else {
                Source::Default
            };
            (k.name, source)
        })
        .collect();
    sources.insert(
        "database.url",
        match database_url.map(|u| u.origin.as_str()) {
            Some("--database-url") => Source::Flag,
            Some("TENANTCTL_DATABASE_URL" | "DATABASE_URL") | None => Source::Environment,
            Some(_) => Source::File,
        },
    );
    sources.insert("migrations.dir", migrations_dir_source);
    if overrides.concurrency.is_some() {
        sources.insert("run.concurrency", Source::Flag);
    }
    if overrides.read_timeout.is_some() {
        let source = if overrides.read_timeout_from_env {
            Source::Environment
        } else {
            Source::Flag
        };
        sources.insert("run.read_timeout", source);
    }
    sources
}

fn as_setup(key: &'static str) -> impl Fn(Error) -> Error {
    move |e| Error::setup(format!("config {key}: {e}"))
}

/// Parses a duration such as `10s`, `1m 30s`, `500ms` or `0`.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let v = value.trim();
    if v == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(v).map_err(|e| {
        // humantime lists its units as "ns, us/µs, ms, sec, min, hours, ... (and few
        // variations)"; say ours instead.
        let why = match e {
            humantime::DurationError::UnknownUnit { unit, .. } => format!(
                "unknown unit {}; units are ms, s, m, h, d (and their long names)",
                ident::shown(&unit)
            ),
            other => other.to_string(),
        };
        format!(
            "{} is not a duration ({why}); write e.g. \"10s\", \"1m 30s\" or \"500ms\"",
            ident::shown(value)
        )
    })
}

/// The values a duration setting takes: `"0"` when `zero` is true, else from `low` to
/// `high`. Every one that bounds a wait is short enough to add to any instant (the
/// longest is about 24.8 days), and what PostgreSQL is sent fits its own limits; the
/// backup policies' longer ones are only compared with the ledger's times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// Whether `"0"` is accepted (no limit, or no wait).
    pub zero: bool,
    /// The shortest value other than zero.
    pub low: Duration,
    /// The longest value.
    pub high: Duration,
    /// The range as an error says it.
    pub said: &'static str,
}

impl DurationRange {
    /// Whether `d` is in the range.
    pub fn contains(&self, d: Duration) -> bool {
        (self.zero && d.is_zero()) || (self.low..=self.high).contains(&d)
    }
}

/// `database.connect_timeout` and `servers.*.connect_timeout`: the longest wait for a
/// connection, and for how long a run rides out a server that refuses them.
pub const CONNECT_TIMEOUT_RANGE: DurationRange = DurationRange {
    zero: false,
    low: Duration::from_secs(1),
    high: Duration::from_secs(3600),
    said: "1s to 1h",
};

/// A timeout PostgreSQL takes in whole milliseconds, as an `int4` (`run.lock_timeout`,
/// `run.statement_timeout`), and `run.lock_wait`: `0` (no limit), or between 1 ms and
/// 2147483647 ms (about 24.8 days). Anything else would change meaning on the way (below
/// 1 ms rounds to "no limit") or be refused by the server.
pub const PG_TIMEOUT_RANGE: DurationRange = DurationRange {
    zero: true,
    low: Duration::from_millis(1),
    high: Duration::from_millis(i32::MAX as u64),
    said: "\"0\" (no limit) or between 1ms and 2147483647ms (about 24 days)",
};

/// `run.lock_retry_delay`: the first wait before a retry, which doubles up to 30 s.
pub const LOCK_RETRY_DELAY_RANGE: DurationRange = DurationRange {
    zero: true,
    low: Duration::ZERO,
    high: Duration::from_secs(30),
    said: "0 to 30s",
};

/// `run.read_timeout`.
pub const READ_TIMEOUT: DurationRange = DurationRange {
    zero: false,
    low: READ_TIMEOUT_RANGE.0,
    high: READ_TIMEOUT_RANGE.1,
    said: "1s to 1h",
};

/// The duration setting `key` from the file (`default` when absent), refused (exit 3,
/// naming the key and the range) when it is not a duration or is out of `range`.
fn duration(
    value: Option<&str>,
    key: &str,
    default: Duration,
    range: DurationRange,
) -> Result<Duration, Error> {
    let Some(v) = value else {
        return Ok(default);
    };
    let d = parse_duration(v).map_err(|e| Error::setup(format!("config {key}: {e}")))?;
    if !range.contains(d) {
        return Err(Error::setup(format!(
            "config {key}: {} is out of range; use {}",
            ident::shown(v),
            range.said
        )));
    }
    Ok(d)
}

/// One effective setting, for `config show`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Entry {
    /// The config key, e.g. `run.concurrency`.
    pub key: &'static str,
    /// The effective value, secrets redacted.
    pub value: String,
    /// Where it came from.
    pub source: Source,
    /// Which flag or environment variable (`--database-url`, `TENANTCTL_DATABASE_URL`,
    /// `PG*` for the libpq variables); the config key for the file; `null` for a default.
    pub origin: Option<String>,
}

impl Entry {
    /// The source for people: `flag --database-url`, `env TENANTCTL_DATABASE_URL`,
    /// `file`, `default`.
    pub fn source_shown(&self) -> String {
        match (self.source, self.origin.as_deref()) {
            (Source::Flag, Some(o)) => format!("flag {o}"),
            (Source::Flag, None) => "flag".into(),
            (Source::Environment, Some(o)) => format!("env {o}"),
            (Source::Environment, None) => "env".into(),
            (Source::File, _) => "file".into(),
            (Source::Default, _) => "default".into(),
        }
    }
}

/// Which flag or variable gave a setting (see [`Entry::origin`]).
fn origin(settings: &Settings, key: &str, source: Source) -> Option<String> {
    match (key, source) {
        (_, Source::Default) => None,
        (_, Source::File) => Some(key.to_string()),
        ("database.url", _) => Some(
            settings
                .database_url
                .as_ref()
                .map_or("PG*".to_string(), |u| u.origin.clone()),
        ),
        ("migrations.dir", Source::Environment) => Some("TENANTCTL_MIGRATIONS".into()),
        ("migrations.dir", _) => Some("--migrations".into()),
        ("run.concurrency", _) => Some("--concurrency".into()),
        ("run.read_timeout", Source::Environment) => Some("TENANTCTL_READ_TIMEOUT".into()),
        ("run.read_timeout", _) => Some("--read-timeout".into()),
        _ => None,
    }
}

/// Every effective setting with its source. `database` is the connection target as
/// [`crate::pg::db::Target::display`] shows it (never with a password), `tls` its TLS
/// settings as [`crate::pg::db::Target::tls_shown`] gives them.
pub fn describe(settings: &Settings, database: &str, tls: &TlsShown) -> Vec<Entry> {
    let shown = Shown { database, tls };
    KEYS.iter()
        .map(|k| {
            let source = match k.name {
                "database.sslmode" => tls.sslmode_source,
                "database.sslrootcert" => tls.sslrootcert_source,
                _ => settings.source(k.name),
            };
            Entry {
                key: k.name,
                value: (k.shown)(settings, &shown),
                source,
                origin: origin(settings, k.name, source),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// Resolves with these overrides, no environment, and a config file holding `text`.
    fn from_file(overrides: &Overrides, cwd: &Path, text: &str) -> Result<Settings, Error> {
        resolve(overrides, &env_of(&[]), cwd, file(text))
    }

    fn file(text: &str) -> Option<(PathBuf, FileConfig)> {
        Some((
            PathBuf::from("/etc/app/tenants.toml"),
            parse_file(text).unwrap(),
        ))
    }

    #[test]
    fn an_unknown_key_gets_the_nearest_known_one() {
        let e = parse_file("[run]\nconcurency = 4\n").unwrap_err();
        assert!(
            e.starts_with(
                "line 2, column 1: unknown key `concurency`: did you mean `concurrency`?"
            ),
            "{e}"
        );
        let e = parse_file("[rnu]\nx = 1\n").unwrap_err();
        assert!(e.contains("did you mean `run`?"), "{e}");
        let e = parse_file("[servers.eu2]\nurll = \"x\"\n").unwrap_err();
        assert!(e.contains("did you mean `url`?"), "{e}");
        // A key outside its section is pointed to its section.
        let e = parse_file("url = \"postgres://h/db\"\n").unwrap_err();
        assert!(
            e.contains("did you mean `database.url`, in its section `[database]`?"),
            "{e}"
        );
        // Nothing near: no guess, the list of known keys.
        let e = parse_file("[run]\nzebra = 1\n").unwrap_err();
        assert!(!e.contains("did you mean"), "{e}");
        assert!(e.contains("unknown key `zebra`, expected one of"), "{e}");
    }

    #[test]
    fn a_broken_file_never_shows_a_secret_whatever_key_it_sits_under() {
        for text in [
            "[database]\nurll = \"postgres://app:Sup3rS3cret@h/x\"\n",
            "[run]\nconcurrency = \"postgres://app:Sup3rS3cret@h/x\"\n",
            "[database]\npassword = \"Sup3rS3cret\"\n",
            "[database]\nsslpassword = \"Sup3rS3cret\"\n",
            "[serve]\ntoken = \"Sup3rS3cret\"\n",
            "[database.url]\npassword = \"Sup3rS3cret\"\n",
            "[database]\nurl = [\"postgres://app:Sup3rS3cret@h/x\"]\n",
            "[database]\nurl = \"host=h password=Sup3rS3cret\"\nx = 1\n",
        ] {
            let e = parse_file(text).unwrap_err();
            assert!(!e.contains("Sup3rS3cret"), "{text}: {e}");
            let mut keys = Vec::new();
            flatten("", &toml::Value::Table(text.parse().unwrap()), &mut keys);
            let shown = format!("{keys:?}");
            assert!(!shown.contains("Sup3rS3cret"), "{text}: {shown}");
        }
    }

    #[test]
    fn passwords_are_hidden_in_connection_strings_that_do_not_parse() {
        assert_eq!(
            without_password("postgres://app:hunter2@db/app?password=x&sslmode=require"),
            "postgres://app:****@db/app?password=****&sslmode=require"
        );
        assert_eq!(
            without_password("host=h password='a \\' b' dbname=x"),
            "host=h password=**** dbname=x"
        );
        assert_eq!(
            without_password("postgres://app@db/app"),
            "postgres://app@db/app"
        );
        assert_eq!(
            without_password("postgres://a:b:c@@d"),
            "postgres://a:****@d"
        );
        assert_eq!(without_password("password"), "password");
        assert_eq!(without_password("password = s3"), "password=****");
    }

    #[test]
    fn a_parse_error_names_the_place_but_never_quotes_the_line() {
        for text in [
            "[servers.x]\nurl=\"postgres://x:hunter2@h/db\n",
            "[servers.x]\nurl=postgres://x:hunter2@h/db\n",
            "[database]\nurl = \"postgres://x:hunter2@h/db\"\nurl = \"postgres://x:hunter2@h/db\"\n",
        ] {
            let e = parse_file(text).unwrap_err();
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.starts_with("line "), "{e}");
        }
    }

    #[test]
    fn defaults_apply_without_file_or_flags() {
        let s = resolve(&Overrides::default(), &env_of(&[]), Path::new("/w"), None).unwrap();
        assert!(s.database_url.is_none());
        assert_eq!(s.registry_schema, "public");
        assert_eq!(s.migrations_dir, PathBuf::from("/w/migrations"));
        assert_eq!(s.history_table, "refinery_schema_history");
        assert_eq!(s.schema_prefix, "tenant_");
        assert_eq!(s.concurrency, 4);
        assert_eq!(s.lock_timeout, Duration::from_secs(10));
        assert_eq!(s.lock_retries, 3);
        assert_eq!(s.lock_retry_delay, Duration::from_secs(1));
        assert_eq!(s.statement_timeout, Duration::ZERO);
        assert_eq!(s.connect_timeout, Duration::from_secs(10));
        assert_eq!(s.lock_wait, Duration::ZERO);
        // No `shared` folder in /w/migrations and no [shared]: no shared schema.
        assert_eq!(s.shared, None);
    }

    #[test]
    fn the_config_file_is_looked_for_here_then_in_the_users_then_the_systems_folder() {
        let env = |k: &str| match k {
            "HOME" => Some("/home/dba".to_string()),
            _ => None,
        };
        assert_eq!(
            candidates(&env, Path::new("/work")),
            [
                PathBuf::from("/work/tenants.toml"),
                PathBuf::from("/home/dba/.config/tenantctl/tenants.toml"),
                PathBuf::from("/etc/tenantctl/tenants.toml"),
            ]
        );
        let xdg = |k: &str| match k {
            "XDG_CONFIG_HOME" => Some("/xdg".to_string()),
            "HOME" => Some("/home/dba".to_string()),
            _ => None,
        };
        assert_eq!(
            candidates(&xdg, Path::new("/work"))[1],
            PathBuf::from("/xdg/tenantctl/tenants.toml")
        );
        // A relative XDG_CONFIG_HOME is ignored, as the XDG spec says.
        let relative = |k: &str| match k {
            "XDG_CONFIG_HOME" => Some("rel".to_string()),
            _ => None,
        };
        assert_eq!(candidates(&relative, Path::new("/w")).len(), 2);
    }

    #[test]
    fn the_shared_schema_is_checked_and_defaults_to_public() {
        let s = from_file(
            &Overrides::default(),
            Path::new("/"),
            "[shared]\ndir = \"s\"\n",
        )
        .unwrap();
        assert_eq!(
            s.shared,
            Some(Shared {
                dir: PathBuf::from("/etc/app/s"),
                schema: "public".into()
            })
        );
        for bad in ["Public", "pg_shared", "information_schema", "a b", ""] {
            let text = format!("[shared]\nschema = \"{bad}\"\n");
            let e = from_file(&Overrides::default(), Path::new("/"), &text).unwrap_err();
            assert!(e.to_string().contains("shared.schema"), "{bad}: {e}");
        }
        for bad in ["", "migrations", "./migrations"] {
            let text = format!("[migrations]\ndir = \"migrations\"\n[shared]\ndir = \"{bad}\"\n");
            let e = from_file(&Overrides::default(), Path::new("/"), &text).unwrap_err();
            assert!(e.to_string().contains("shared.dir"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn sizes_parse_with_units_and_refuse_the_rest() {
        assert_eq!(bytes("1024", "k").unwrap(), 1024);
        assert_eq!(bytes("10GB", "k").unwrap(), 10 << 30);
        assert_eq!(bytes(" 500 MiB", "k").unwrap(), 500 << 20);
        let s = from_file(
            &Overrides::default(),
            Path::new("/"),
            "[run]\nmax_rewrite_bytes = 1048576\n",
        )
        .unwrap();
        assert_eq!(s.max_rewrite_bytes, Some(1 << 20));
        assert!(from_file(
            &Overrides::default(),
            Path::new("/"),
            "[run]\nmax_rewrite_bytes = -1\n"
        )
        .is_err());
        for bad in ["", "0", "-1", "1.5GB", "10XB", "99999999999TB", "GB", "2PB"] {
            let e = bytes(bad, "run.max_rewrite_bytes").unwrap_err();
            assert!(
                e.to_string().contains("run.max_rewrite_bytes"),
                "{bad}: {e}"
            );
        }
    }

    /// Every key of the file is read, its source recorded and listed by `config show`,
    /// once and in order, from the one list in `config_keys!`.
    #[test]
    fn every_key_in_the_file_is_read_and_shown_as_from_the_file() {
        let text = "[database]\nurl = \"postgres://h/db\"\nsslmode = \"require\"\nsslrootcert = \"ca.pem\"\nconnect_timeout = \"3s\"\n\
                    [registry]\nschema = \"reg\"\n[migrations]\ndir = \"m\"\ntable = \"hist\"\n\
                    [shared]\ndir = \"m/common\"\nschema = \"common\"\n\
                    [tenants]\nschema_prefix = \"t_\"\nextra_search_path = [\"ext\"]\n\
                    [tenants.templates]\nchurch = \"template-church\"\n\
                    [backup]\ndir = \"backups\"\n\
                    [backup.policies.default]\nevery = \"1d\"\nkeep = 7\nkeep_within = \"30d\"\n\
                    [serve]\nlisten = \"127.0.0.1:9090\"\ntoken_file = \"token\"\nbackups = true\ncookie_secure = true\n\
                    [lint]\nignore = [\"ban-drop-column\"]\n\
                    [pitr]\nstanza = \"main\"\npgbackrest_config = \"pgbackrest.conf\"\npgbackrest = \"/usr/bin/pgbackrest\"\npg_bin = \"/usr/lib/postgresql/15/bin\"\nscratch_dir = \"/var/tmp/pitr\"\nrun_as = \"postgres\"\n\
                    [run]\nconcurrency = 7\nlock_timeout = \"2s\"\nlock_retries = 5\nlock_retry_delay = \"3s\"\nstatement_timeout = \"4s\"\nlock_wait = \"5s\"\nread_timeout = \"6s\"\nmax_rewrite_bytes = \"10GB\"\n";
        let s = from_file(&Overrides::default(), Path::new("/"), text).unwrap();
        let shown = describe(&s, "postgres://h:5432/db", &TlsShown::from_settings(&s));
        let keys: Vec<&str> = shown.iter().map(|e| e.key).collect();
        let expected: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        assert_eq!(keys, expected);
        assert_eq!(keys.len(), 33);
        for e in &shown {
            assert_eq!(e.source, Source::File, "{}", e.key);
        }
        let value = |key: &str| shown.iter().find(|e| e.key == key).unwrap().value.clone();
        assert_eq!(value("migrations.table"), "hist");
        assert_eq!(value("shared.dir"), "/etc/app/m/common");
        assert_eq!(value("shared.schema"), "common");
        assert_eq!(value("run.lock_retries"), "5");
        assert_eq!(
            s.templates.get("church").map(String::as_str),
            Some("template-church")
        );
        assert_eq!(value("run.lock_wait"), "5s");
        assert_eq!(value("run.read_timeout"), "6s");
        assert_eq!(value("backup.dir"), "/etc/app/backups");
        assert_eq!(
            value("backup.policies"),
            "default: every 1day, keep 7, keep_within 30days"
        );
        assert_eq!(value("serve.backups"), "true");
        assert_eq!(value("tenants.extra_search_path"), "[\"ext\"]");
    }

    #[test]
    fn read_timeout_comes_from_flag_environment_or_file_within_its_range() {
        let cwd = Path::new("/");
        let file = "[run]\nread_timeout = \"30s\"\n";
        let s = from_file(&Overrides::default(), cwd, file).unwrap();
        assert_eq!(s.read_timeout, Duration::from_secs(30));
        assert_eq!(s.source("run.read_timeout"), Source::File);
        let s = from_file(&Overrides::default(), cwd, "").unwrap();
        assert_eq!(s.read_timeout, Duration::from_secs(60));
        let flag = Overrides {
            read_timeout: Some("2m".into()),
            ..Default::default()
        };
        let s = from_file(&flag, cwd, file).unwrap();
        assert_eq!(s.read_timeout, Duration::from_secs(120));
        assert_eq!(s.source("run.read_timeout"), Source::Flag);
        let env = Overrides {
            read_timeout: Some("5s".into()),
            read_timeout_from_env: true,
            ..Default::default()
        };
        let s = from_file(&env, cwd, file).unwrap();
        assert_eq!(s.source("run.read_timeout"), Source::Environment);
        for bad in ["0", "999ms", "1h 1s", "forever", ""] {
            let e = from_file(
                &Overrides {
                    read_timeout: Some(bad.into()),
                    ..Default::default()
                },
                cwd,
                "",
            )
            .unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Setup, "{bad}");
            assert!(e.to_string().contains("read_timeout"), "{e}");
        }
        assert!(from_file(&Overrides::default(), cwd, "[run]\nread_timeout = \"1h\"\n").is_ok());
    }

    #[test]
    fn lock_wait_is_a_duration_listed_by_config_show() {
        let cwd = Path::new("/");
        let s = from_file(
            &Overrides::default(),
            cwd,
            "[run]\nlock_wait = \"1m 30s\"\n",
        )
        .unwrap();
        assert_eq!(s.lock_wait, Duration::from_secs(90));
        let shown = describe(&s, "postgres://u@h:5432/db", &TlsShown::from_settings(&s));
        let entry = shown.iter().find(|e| e.key == "run.lock_wait").unwrap();
        assert_eq!(
            (entry.value.as_str(), entry.source),
            ("1m 30s", Source::File)
        );
        let err = from_file(
            &Overrides::default(),
            cwd,
            "[run]\nlock_wait = \"a while\"\n",
        )
        .unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Setup);
        assert!(err.to_string().contains("run.lock_wait"), "{err}");
    }

    #[test]
    fn database_url_precedence_is_flag_then_env_then_file() {
        let f = || file("[database]\nurl = \"postgres://file/db\"\n");
        let flag = Overrides {
            database_url: Some("postgres://flag/db".into()),
            ..Default::default()
        };
        let env = env_of(&[("DATABASE_URL", "postgres://env/db")]);
        let cwd = Path::new("/w");
        assert_eq!(
            resolve(&flag, &env, cwd, f())
                .unwrap()
                .database_url
                .unwrap()
                .value,
            "postgres://flag/db"
        );
        assert_eq!(
            resolve(&Overrides::default(), &env, cwd, f())
                .unwrap()
                .database_url
                .unwrap()
                .value,
            "postgres://env/db"
        );
        assert_eq!(
            resolve(&Overrides::default(), &env_of(&[]), cwd, f())
                .unwrap()
                .database_url
                .unwrap()
                .value,
            "postgres://file/db"
        );
        // An empty variable counts as unset.
        let empty = env_of(&[("DATABASE_URL", "")]);
        assert_eq!(
            resolve(&Overrides::default(), &empty, cwd, f())
                .unwrap()
                .database_url
                .unwrap()
                .value,
            "postgres://file/db"
        );
    }

    #[test]
    fn relative_paths_in_the_file_resolve_against_its_folder() {
        let s = from_file(
            &Overrides::default(),
            Path::new("/w"),
            "[migrations]\ndir = \"db/migrations\"\n[database]\nsslrootcert = \"ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(s.migrations_dir, PathBuf::from("/etc/app/db/migrations"));
        assert_eq!(s.migrations_dir_source, Source::File);
        assert_eq!(
            s.sslrootcert,
            Some(RootCert::File(PathBuf::from("/etc/app/ca.pem")))
        );
        let s = from_file(
            &Overrides::default(),
            Path::new("/w"),
            "[database]\nsslmode = \"verify-full\"\nsslrootcert = \"system\"\n",
        )
        .unwrap();
        assert_eq!(s.sslrootcert, Some(RootCert::System));
        assert_eq!(s.sslmode, Some(SslMode::VerifyFull));
        // The flag wins and is relative to the working directory.
        let flag = Overrides {
            migrations: Some("m".into()),
            ..Default::default()
        };
        let s = from_file(&flag, Path::new("/w"), "[migrations]\ndir = \"x\"\n").unwrap();
        assert_eq!(s.migrations_dir, PathBuf::from("/w/m"));
    }

    #[test]
    fn concurrency_flag_beats_file() {
        let flag = Overrides {
            concurrency: Some(9),
            ..Default::default()
        };
        let s = from_file(&flag, Path::new("/"), "[run]\nconcurrency = 2\n").unwrap();
        assert_eq!(s.concurrency, 9);
        let s = from_file(
            &Overrides::default(),
            Path::new("/"),
            "[run]\nconcurrency = 2\n",
        )
        .unwrap();
        assert_eq!(s.concurrency, 2);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_setup_errors() {
        assert!(parse_file("[database]\nuri = \"x\"\n").is_err());
        assert!(parse_file("[databse]\n").is_err());
        assert!(parse_file("not toml at all [").is_err());
        let cwd = Path::new("/");
        for text in [
            "[database]\nsslmode = \"verify-full-ish\"\n",
            "[run]\nlock_timeout = \"ten seconds\"\n",
            "[run]\nlock_retries = 1000\n",
            "[run]\nlock_retry_delay = \"soon\"\n",
            "[run]\nconcurrency = 0\n",
            "[registry]\nschema = \"Public; drop\"\n",
            "[migrations]\ntable = \"x\\\"y\"\n",
            "[tenants]\nschema_prefix = \"t-\"\n",
            "[tenants]\nextra_search_path = [\"ext\", \"bad name\"]\n",
        ] {
            let err = from_file(&Overrides::default(), cwd, text).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Setup, "{text}");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn timeouts_must_survive_the_trip_to_postgres() {
        let cwd = Path::new("/");
        for ok in ["0", "1ms", "10s", "24d", "2147483647ms"] {
            let text = format!("[run]\nlock_timeout = \"{ok}\"\nstatement_timeout = \"{ok}\"\n");
            assert!(
                resolve(&Overrides::default(), &env_of(&[]), cwd, file(&text)).is_ok(),
                "{ok}"
            );
        }
        for bad in ["1ns", "500us", "999us", "25d", "2147483648ms", "1y"] {
            for key in ["lock_timeout", "statement_timeout"] {
                let text = format!("[run]\n{key} = \"{bad}\"\n");
                let err =
                    resolve(&Overrides::default(), &env_of(&[]), cwd, file(&text)).unwrap_err();
                assert_eq!(err.kind(), crate::error::ErrorKind::Setup, "{key} = {bad}");
                assert!(err.to_string().contains(key), "{err}");
            }
        }
    }

    #[test]
    fn debug_output_never_shows_the_url() {
        let s = resolve(
            &Overrides {
                database_url: Some("postgres://u:sekrit@h/db".into()),
                ..Default::default()
            },
            &env_of(&[]),
            Path::new("/"),
            None,
        )
        .unwrap();
        assert!(!format!("{s:?}").contains("sekrit"));
    }
}
