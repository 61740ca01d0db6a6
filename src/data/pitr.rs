//! Point-in-time recovery of one server to a scratch instance, through pgBackRest, so
//! that one tenant can be read as it was at a given time (`tenant restore --at`,
//! `tenant export --at`).
//!
//! pgBackRest's repository and WAL archive are the source of truth and are only read:
//! the server's backup is restored into a directory of its own under `pitr.scratch_dir`
//! (`pgbackrest restore --type=time --target-action=promote --archive-mode=off`, every
//! tablespace mapped inside that directory), and a PostgreSQL of the same major version
//! is started on it with a configuration of tenantctl's: no TCP listener (a Unix socket
//! in the private directory only), no archiving, no TLS, no replication settings. It is
//! started through `setpriv --pdeathsig`, so that it stops with the process that started
//! it even when that process is killed; a directory left by a killed run is removed by
//! the next run (its owner's process is gone), and [`Instance::stop`] (or its `Drop`)
//! removes the rest.
//!
//! PostgreSQL itself says whether the target time was reached: recovery that runs out
//! of archived WAL before a commit after the target ends with "recovery ended before
//! configured recovery target was reached", which is reported as a refusal with the
//! window that can be reached.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::{Settings, Stanza};
use crate::engine::scheduler::{Events, RunEvent};
use crate::error::Error;
use crate::pg::db::{Client, Target};
use crate::pg::interrupt::Interrupt;

/// The prefix of every scratch directory's name under `pitr.scratch_dir`.
const RUN_PREFIX: &str = "tenantctl-pitr-";

/// The port in the scratch instance's socket name (it listens on no TCP port).
const SCRATCH_PORT: u16 = 5432;

/// Unix socket paths are limited to 107 bytes; the socket's name takes 16 of them.
const SOCKET_DIR_MAX: usize = 90;

/// Parses the time a recovery targets: RFC 3339 (`2026-12-07T14:05:00Z`,
/// `2026-12-07T14:05:00+01:00`), or `YYYY-MM-DD HH:MM:SS[.fff]` followed by a zone
/// (`Z`, `UTC`, `+01`, `+01:00`, `-0500`). A time without a zone is refused: 3 a.m. on
/// one server's clock is not 3 a.m. on the operator's.
pub fn parse_time(text: &str) -> Result<OffsetDateTime, Error> {
    use time::format_description::well_known::Rfc3339;
    let t = text.trim();
    let bad = |why: &str| {
        Error::usage(format!(
            "--at {}: {why}; give a time with its zone, e.g. 2026-12-07T14:05:00Z, 2026-12-07T14:05:00+01:00 or \"2026-12-07 14:05:00 UTC\"",
            crate::ident::shown(text)
        ))
    };
    if let Ok(at) = OffsetDateTime::parse(t, &Rfc3339) {
        return Ok(at);
    }
    // `YYYY-MM-DD HH:MM:SS[.fff]` then a zone, with or without a space before it.
    let t = t.replacen(' ', "T", 1);
    let (clock, zone) = match t
        .find(['Z', '+', ' '])
        .or_else(|| t.get(10..).and_then(|rest| rest.find('-')).map(|i| i + 10))
    {
        Some(i) => (&t[..i], t[i..].trim()),
        None if t.len() >= 16 && t.as_bytes()[..4].iter().all(u8::is_ascii_digit) => {
            return Err(bad("no time zone"))
        }
        None => return Err(bad("not a time tenantctl can read")),
    };
    let zone = match zone {
        "Z" | "UTC" | "utc" | "GMT" | "+00" | "+0000" | "+00:00" => "Z".to_string(),
        z if (z.starts_with('+') || z.starts_with('-')) && z.len() == 3 => format!("{z}:00"),
        z if (z.starts_with('+') || z.starts_with('-')) && z.len() == 5 && !z.contains(':') => {
            format!("{}:{}", &z[..3], &z[3..])
        }
        z => z.to_string(),
    };
    let clock = if clock.len() == 16 {
        format!("{clock}:00")
    } else {
        clock.to_string()
    };
    OffsetDateTime::parse(&format!("{clock}{zone}"), &Rfc3339)
        .map_err(|_| bad("not a time tenantctl can read"))
}

/// A time as PostgreSQL's `recovery_target_time` and pgBackRest's `--target` take it.
fn target_text(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

/// A time as messages show it (UTC, to the second or finer).
pub fn shown(at: OffsetDateTime) -> String {
    crate::timestamp::Timestamp::At(at).to_string()
}

/// What recovering a server needs, found and checked before anything is made.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The server's name.
    pub server: String,
    /// Its stanza.
    pub stanza: Stanza,
    /// The `pgbackrest` command.
    pgbackrest: PathBuf,
    /// The `postgres` binary of the server's major version.
    postgres: PathBuf,
    /// Where scratch directories are made.
    scratch_dir: PathBuf,
    /// Whom pgBackRest and the scratch instance run as, when not this process's user.
    run_as: Option<RunAs>,
    /// The server's `shared_preload_libraries`, which the data may need (Citus).
    preload: String,
    /// The server's settings that replaying its WAL needs at least as high.
    settings_kept: Vec<(&'static str, String)>,
}

/// An operating-system user to run as.
#[derive(Debug, Clone)]
struct RunAs {
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
}

/// Finds and checks what recovering `server` needs: its stanza, the scratch directory,
/// the user to run as, the PostgreSQL binaries of `live`'s major version. A missing
/// setting is a setup error (exit 3); nothing is run yet.
pub async fn tools(settings: &Settings, server: &str, live: &Client) -> Result<Tools, Error> {
    let Some(stanza) = settings.server(server).and_then(|s| s.pitr.clone()) else {
        return Err(Error::setup(
            if crate::registry::servers::is_default(server) {
                "point-in-time recovery needs the server's pgBackRest stanza: set [pitr] stanza (and scratch_dir) in the config file".to_string()
            } else {
                format!(
                "point-in-time recovery needs server {}'s pgBackRest stanza: set [servers.{server}.pitr] stanza in the config file",
                crate::ident::shown(server)
            )
            },
        ));
    };
    let pitr = &settings.pitr;
    let Some(scratch_dir) = pitr.scratch_dir.clone() else {
        return Err(Error::setup(
            "point-in-time recovery needs pitr.scratch_dir: a directory with room for a restore of the server's backup",
        ));
    };
    if !scratch_dir.is_dir() {
        return Err(Error::setup(format!(
            "pitr.scratch_dir {} is not a directory",
            scratch_dir.display()
        )));
    }
    let socket_dir_len = scratch_dir.as_os_str().len() + RUN_PREFIX.len() + 24 + "/sock".len();
    if socket_dir_len > SOCKET_DIR_MAX {
        return Err(Error::setup(format!(
            "pitr.scratch_dir {} is too long a path for the scratch instance's socket (at most {} bytes); choose a shorter one",
            scratch_dir.display(),
            SOCKET_DIR_MAX - RUN_PREFIX.len() - 24 - "/sock".len()
        )));
    }
    let root = nix::unistd::geteuid().is_root();
    let run_as = match &pitr.run_as {
        Some(name) => {
            let user = nix::unistd::User::from_name(name)
                .map_err(|e| Error::setup(format!("pitr.run_as {name}: {e}")))?
                .ok_or_else(|| {
                    Error::setup(format!("pitr.run_as {name}: there is no such user"))
                })?;
            if user.uid.is_root() {
                return Err(Error::setup(
                    "pitr.run_as is root, and PostgreSQL refuses to run as root: set it to the user that owns the pgBackRest repository (usually postgres)",
                ));
            } else if user.uid == nix::unistd::geteuid() {
                None
            } else if root {
                Some(RunAs {
                    uid: user.uid,
                    gid: user.gid,
                })
            } else {
                return Err(Error::setup(format!(
                    "pitr.run_as {name}: running pgBackRest and the scratch instance as another user needs root; run tenantctl as {name}, or as root"
                )));
            }
        }
        None if root => {
            return Err(Error::setup(
                "PostgreSQL refuses to run as root: set pitr.run_as to the user that owns the pgBackRest repository (usually postgres)",
            ))
        }
        None => None,
    };
    let row = crate::pg::db::read(
        live,
        "reading the server's version and preloaded libraries",
        live.query_one(
            "SELECT current_setting('server_version_num'), current_setting('shared_preload_libraries'), \
                    current_setting('max_prepared_transactions'), current_setting('max_locks_per_transaction')",
            &[],
        ),
    )
    .await?;
    let version: String = row.get(0);
    let major = version.parse::<u32>().unwrap_or(0) / 10000;
    let preload: String = row.get(1);
    // Replaying a PREPARE TRANSACTION needs as many prepared-transaction slots (and locks)
    // as the server has: the scratch instance takes the server's values.
    let settings_kept = vec![
        ("max_prepared_transactions", row.get::<_, String>(2)),
        ("max_locks_per_transaction", row.get::<_, String>(3)),
    ];
    let bin_dir = pitr
        .pg_bin
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
    let postgres = bin_dir.join("postgres");
    if !postgres.is_file() {
        return Err(Error::setup(format!(
            "there is no postgres in {} (the server is PostgreSQL {major}): set pitr.pg_bin to the directory of its binaries",
            bin_dir.display()
        )));
    }
    let tools = Tools {
        server: server.to_string(),
        stanza,
        pgbackrest: pitr.pgbackrest.clone(),
        postgres,
        scratch_dir,
        run_as,
        preload,
        settings_kept,
    };
    // The user the instance runs as must be able to make its directory there.
    let usable = tools
        .command(Path::new("/usr/bin/test"), "SIGTERM")
        .arg("-w")
        .arg(&tools.scratch_dir)
        .arg("-a")
        .arg("-x")
        .arg(&tools.scratch_dir)
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !usable {
        return Err(Error::setup(format!(
            "pitr.scratch_dir {} cannot be written by {} (the user pgBackRest and the scratch instance run as): give it that user, and every directory above it search permission",
            tools.scratch_dir.display(),
            pitr.run_as.as_deref().unwrap_or("tenantctl's user")
        )));
    }
    Ok(tools)
}

impl Tools {
    /// A command run as the configured user, stopped with its parent: through
    /// `setpriv`, which sets the parent-death signal after switching user and then
    /// execs the program itself.
    fn command(&self, program: &Path, death: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("setpriv");
        if let Some(u) = &self.run_as {
            c.arg(format!("--reuid={}", u.uid))
                .arg(format!("--regid={}", u.gid))
                .arg("--init-groups");
        }
        c.arg(format!("--pdeathsig={death}")).arg("--").arg(program);
        c.current_dir(&self.scratch_dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// `pgbackrest` with the stanza's options.
    fn pgbackrest(&self) -> tokio::process::Command {
        let mut c = self.command(&self.pgbackrest, "SIGTERM");
        if let Some(config) = &self.stanza.config {
            c.arg(format!("--config={}", config.display()));
        }
        c.arg(format!("--stanza={}", self.stanza.stanza));
        c
    }

    /// Runs a `pgbackrest` command to its end; its output, or an error with the end of
    /// what it said.
    async fn run(&self, args: &[String], what: &str) -> Result<String, Error> {
        self.run_until(args, what, None).await
    }

    /// [`Tools::run`], stopped when `stop` is cancelled: pgBackRest is sent SIGTERM
    /// (it ends its own worker processes) and waited for, then the interruption is the
    /// error.
    async fn run_until(
        &self,
        args: &[String],
        what: &str,
        stop: Option<&tokio_util::sync::CancellationToken>,
    ) -> Result<String, Error> {
        let mut c = self.pgbackrest();
        c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = c.spawn().map_err(|e| {
            Error::setup(format!(
                "cannot run {} ({what}): {e}",
                self.pgbackrest.display()
            ))
        })?;
        let pid = child.id();
        let out = child.wait_with_output();
        tokio::pin!(out);
        let never = tokio_util::sync::CancellationToken::new();
        let stop = stop.unwrap_or(&never);
        let out = tokio::select! {
            out = &mut out => out,
            _ = stop.cancelled() => {
                if let Some(pid) = pid {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                let _ = tokio::time::timeout(Duration::from_secs(30), &mut out).await;
                return Err(interrupted(&format!("pgbackrest {what} was interrupted; nothing was changed")));
            }
        };
        let out = out.map_err(|e| {
            Error::setup(format!(
                "cannot run {} ({what}): {e}",
                self.pgbackrest.display()
            ))
        })?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = if said.trim().is_empty() {
                String::from_utf8_lossy(&out.stdout).into_owned()
            } else {
                said.into_owned()
            };
            return Err(Error::failed(format!(
                "pgbackrest {what} for stanza {} failed ({}): {}",
                self.stanza.stanza,
                out.status,
                tail(&said, 6)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `pgbackrest check`: the stanza's configuration, archiving and repository work.
    pub async fn check(&self) -> Result<(), Error> {
        self.run(&["check".to_string()], "check").await.map(|_| ())
    }
}

/// The last `n` non-empty lines of `text`, on one line.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// `pgbackrest info --output=json`, the parts read.
#[derive(Deserialize)]
struct InfoStanza {
    #[serde(default)]
    backup: Vec<InfoBackup>,
    #[serde(default)]
    db: Vec<InfoDb>,
    status: InfoStatus,
}

#[derive(Deserialize)]
struct InfoDb {
    #[serde(rename = "system-id")]
    system_id: u64,
}

#[derive(Deserialize)]
struct InfoStatus {
    code: i64,
    message: String,
}

#[derive(Deserialize)]
struct InfoBackup {
    label: String,
    timestamp: InfoTimes,
    info: InfoSizes,
    #[serde(default)]
    error: bool,
}

#[derive(Deserialize)]
struct InfoTimes {
    stop: i64,
}

#[derive(Deserialize)]
struct InfoSizes {
    size: u64,
}

/// The times a recovery of the server can reach, and the backup it starts from.
#[derive(Debug, Clone)]
pub struct Window {
    /// The end of the oldest backup: nothing earlier can be reached.
    pub oldest: OffsetDateTime,
    /// The server's last archived WAL segment's time: nothing later can be reached.
    pub newest: Option<OffsetDateTime>,
    /// The backup the recovery starts from (the newest one ended before the target).
    pub backup: String,
    /// Its size once restored.
    pub bytes: u64,
}

impl Window {
    /// The window as a sentence's end.
    pub fn shown(&self) -> String {
        format!(
            "from {} to {}",
            shown(self.oldest),
            self.newest
                .map(shown)
                .unwrap_or_else(|| "the last archived WAL (none archived yet)".into())
        )
    }
}

/// The stanza's good backups, oldest first (pgbackrest info), once the stanza is found
/// to be `live`'s: a stanza of another cluster (its system identifier) is refused, as
/// its backups would put another cluster's data in the tenant.
async fn backups(tools: &Tools, live: &Client) -> Result<(Vec<InfoBackup>, String), Error> {
    let json = tools
        .run(&["--output=json".into(), "info".into()], "info")
        .await?;
    let stanzas: Vec<InfoStanza> = serde_json::from_str(&json).map_err(|e| {
        Error::failed(format!(
            "pgbackrest info for stanza {} answered what tenantctl cannot read: {e}",
            tools.stanza.stanza
        ))
    })?;
    let Some(info) = stanzas.into_iter().next() else {
        return Err(Error::setup(format!(
            "pgbackrest knows no stanza {}",
            tools.stanza.stanza
        )));
    };
    let system: String = crate::pg::db::read(
        live,
        "reading the server's system identifier",
        live.query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        ),
    )
    .await?
    .get(0);
    let known: Vec<String> = info.db.iter().map(|d| d.system_id.to_string()).collect();
    if !known.is_empty() && !known.contains(&system) {
        return Err(Error::setup(format!(
            "stanza {} holds the backups of another cluster (system identifier {}), not of server {} ({system}): check the stanza in [pitr] or [servers.{}.pitr]",
            tools.stanza.stanza,
            known.join(", "),
            crate::ident::shown(&tools.server),
            tools.server
        )));
    }
    let mut backups: Vec<InfoBackup> = info.backup.into_iter().filter(|b| !b.error).collect();
    backups.sort_by_key(|b| b.timestamp.stop);
    if info.status.code != 0 && backups.is_empty() {
        return Err(Error::failed(format!(
            "pgbackrest info for stanza {}: {}",
            tools.stanza.stanza, info.status.message
        )));
    }
    Ok((backups, info.status.message))
}

/// The server's last archived WAL segment's time.
async fn last_archived(live: &Client) -> Result<Option<OffsetDateTime>, Error> {
    Ok(crate::pg::db::read(
        live,
        "reading the server's archiver",
        live.query_one("SELECT last_archived_time FROM pg_stat_archiver", &[]),
    )
    .await?
    .try_get(0)
    .ok()
    .flatten())
}

/// The free bytes of the scratch directory's file system.
fn free_bytes(tools: &Tools) -> Result<u64, Error> {
    nix::sys::statvfs::statvfs(&tools.scratch_dir)
        .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
        .map_err(|e| {
            Error::setup(format!(
                "cannot read the free space of {}: {e}",
                tools.scratch_dir.display()
            ))
        })
}

/// The scratch directory's room for a restore.
struct Room {
    free: u64,
    needed: u64,
    /// Why it is not enough, in words; `None` when it is.
    short: Option<String>,
}

/// The scratch directory's free bytes against what restoring `backup` (of `bytes`)
/// needs there.
fn room(tools: &Tools, backup: &str, bytes: u64) -> Result<Room, Error> {
    let free = free_bytes(tools)?;
    let needed = needed_bytes(bytes);
    let short = (free < needed).then(|| {
        format!(
            "{} has {} free, and restoring backup {backup} needs about {}",
            tools.scratch_dir.display(),
            bytes_shown(free),
            bytes_shown(needed)
        )
    });
    Ok(Room {
        free,
        needed,
        short,
    })
}

/// What restoring a backup of `bytes` needs in the scratch directory: the backup, a
/// tenth more for the WAL replayed and the archive, and 64 MiB.
fn needed_bytes(bytes: u64) -> u64 {
    bytes + bytes / 10 + (64 << 20)
}

/// Reads the stanza's backups and the server's archiver, and refuses (nothing made) a
/// target outside what they can reach, or a scratch directory without room for the
/// restore.
pub async fn window(tools: &Tools, live: &Client, at: OffsetDateTime) -> Result<Window, Error> {
    let (backups, status) = backups(tools, live).await?;
    let Some(first) = backups.first() else {
        return Err(Error::refused(format!(
            "stanza {} has no backup to recover from ({status}); nothing was changed",
            tools.stanza.stanza
        )));
    };
    // pgBackRest keeps a backup's end to the second and starts from a backup that
    // ended before the target's second: the first reachable time is the second after.
    let oldest = OffsetDateTime::from_unix_timestamp(first.timestamp.stop + 1)
        .map_err(|e| Error::failed(format!("pgbackrest info: a backup's time: {e}")))?;
    let newest = last_archived(live).await?;
    let base = backups
        .iter()
        .rev()
        .find(|b| b.timestamp.stop < at.unix_timestamp())
        .unwrap_or(first);
    let w = Window {
        oldest,
        newest,
        backup: base.label.clone(),
        bytes: base.info.size,
    };
    let now = OffsetDateTime::now_utc();
    if at < oldest {
        return Err(Error::refused(format!(
            "{} is before the oldest backup of stanza {} ended; it can recover {}; nothing was changed",
            shown(at),
            tools.stanza.stanza,
            w.shown()
        )));
    }
    if at > now || w.newest.is_none_or(|n| at > n) {
        return Err(Error::refused(format!(
            "{} is after the last WAL server {} archived; it can recover {} (a later time needs its WAL archived: wait for archive_timeout, or run SELECT pg_switch_wal() on the server); nothing was changed",
            shown(at),
            crate::ident::shown(&tools.server),
            w.shown()
        )));
    }
    if let Some(short) = room(tools, &w.backup, w.bytes)?.short {
        return Err(Error::refused(format!(
            "{short}; free some space or point pitr.scratch_dir elsewhere; nothing was changed"
        )));
    }
    Ok(w)
}

/// What `check` says of a server's point-in-time recovery.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Readiness {
    /// The server.
    pub server: String,
    /// Its stanza.
    pub stanza: String,
    /// Whether `pgbackrest check` passed, there is a backup, and the scratch directory
    /// has room for the newest one.
    pub ok: bool,
    /// The newest backup.
    pub backup: Option<String>,
    /// The earliest time that can be recovered (RFC 3339, UTC).
    pub oldest: Option<String>,
    /// The last archived WAL's time (RFC 3339, UTC).
    pub newest: Option<String>,
    /// Free bytes in the scratch directory.
    pub scratch_free_bytes: Option<u64>,
    /// What restoring the newest backup needs there.
    pub needed_bytes: Option<u64>,
    /// What is wrong, when not ok.
    pub error: Option<String>,
}

/// Checks a server's point-in-time recovery as `check` does: the stanza
/// (`pgbackrest check`, which also checks archiving), a backup to start from, and room
/// in the scratch directory for the newest one. Read-only.
pub async fn readiness(settings: &Settings, server: &str, live: &Client) -> Readiness {
    let stanza = settings
        .server(server)
        .and_then(|s| s.pitr.as_ref())
        .map(|s| s.stanza.clone())
        .unwrap_or_default();
    let mut r = Readiness {
        server: server.to_string(),
        stanza,
        ok: false,
        backup: None,
        oldest: None,
        newest: None,
        scratch_free_bytes: None,
        needed_bytes: None,
        error: None,
    };
    let t = |at: OffsetDateTime| shown(at);
    let found = async {
        let tools = tools(settings, server, live).await?;
        tools.check().await?;
        let (backups, status) = backups(&tools, live).await?;
        r.oldest = backups
            .first()
            .and_then(|b| OffsetDateTime::from_unix_timestamp(b.timestamp.stop + 1).ok())
            .map(t);
        r.newest = last_archived(live).await?.map(t);
        let Some(last) = backups.last() else {
            return Err(Error::failed(format!(
                "stanza {} has no backup to recover from ({status})",
                tools.stanza.stanza
            )));
        };
        r.backup = Some(last.label.clone());
        let room = room(&tools, &last.label, last.info.size)?;
        r.scratch_free_bytes = Some(room.free);
        r.needed_bytes = Some(room.needed);
        if let Some(short) = room.short {
            return Err(Error::failed(short));
        }
        Ok(())
    }
    .await;
    match found {
        Ok(()) => r.ok = true,
        Err(e) => r.error = Some(e.message().to_string()),
    }
    r
}

/// An interruption's error.
fn interrupted(message: &str) -> Error {
    Error::new(crate::error::ErrorKind::Interrupted, message)
}

/// A size in MiB or GiB.
fn bytes_shown(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

/// Removes the scratch directories under `dir` whose owner process is gone (a killed
/// run's), stopping an instance still running in one. Returns how many were removed.
pub fn sweep(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(RUN_PREFIX) {
            continue;
        }
        let path = e.path();
        if owner_alive(&path) {
            continue;
        }
        end_processes_in(&path);
        if std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Ends every process still working in scratch directory `run` (a scratch postmaster,
/// found by its `postmaster.pid`, with SIGQUIT; pgBackRest and its workers, found by
/// the directory in their command line, with SIGTERM), waiting up to 10 s, then
/// SIGKILL for what is left.
fn end_processes_in(run: &Path) {
    use nix::sys::signal::{kill, Signal};
    let needle = run.display().to_string();
    let in_dir = || -> Vec<nix::unistd::Pid> {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        procs
            .flatten()
            .filter_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                String::from_utf8_lossy(&cmd)
                    .contains(&needle)
                    .then_some(nix::unistd::Pid::from_raw(pid))
            })
            .filter(|p| p.as_raw() != std::process::id() as i32)
            .collect()
    };
    if let Some(pid) = postmaster_pid(&run.join("data")) {
        let _ = kill(pid, Signal::SIGQUIT);
    }
    for pid in in_dir() {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let left = in_dir();
        let postmaster = postmaster_pid(&run.join("data"));
        if left.is_empty() && postmaster.is_none() {
            return;
        }
        if Instant::now() >= until {
            for pid in left.into_iter().chain(postmaster) {
                let _ = kill(pid, Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(200));
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the process that made scratch directory `run` is still running.
fn owner_alive(run: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(run.join("owner")) else {
        // Being made: the owner writes the file first thing; an old one without it is
        // a leftover.
        return std::fs::metadata(run)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60));
    };
    let mut parts = text.split_whitespace();
    let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    // The pid with the same start time: a reused pid is not the owner.
    process_start(pid).is_some_and(|s| s == start)
}

/// A process's start time (field 22 of `/proc/PID/stat`), to tell a reused pid apart.
fn process_start(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19).map(str::to_string)
}

/// The postmaster's pid from a data directory's `postmaster.pid`, when it runs.
fn postmaster_pid(data: &Path) -> Option<nix::unistd::Pid> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid = nix::unistd::Pid::from_raw(text.lines().next()?.trim().parse().ok()?);
    nix::sys::signal::kill(pid, None).ok().map(|_| pid)
}

/// A scratch instance recovered to a time, running until [`Instance::stop`] (or drop).
pub struct Instance {
    /// The scratch directory (data, socket, configuration, log).
    dir: PathBuf,
    /// The running postmaster.
    child: Option<tokio::process::Child>,
    /// Where to connect to it.
    target: Target,
    /// The time of the last transaction recovery replayed.
    pub recovered_to: Option<OffsetDateTime>,
}

impl Instance {
    /// Where to connect to it: the live server's database and user, over its socket.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The scratch directory, where a caller may keep a file until [`Instance::remove`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the instance (a fast shutdown, then an immediate one after 30 s); the
    /// directory stays until [`Instance::remove`].
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
        }
    }

    /// Stops the instance and removes its directory.
    pub async fn remove(mut self) {
        self.stop().await;
        let dir = std::mem::take(&mut self.dir);
        let _ = tokio::task::spawn_blocking(move || {
            end_processes_in(&dir);
            std::fs::remove_dir_all(dir)
        })
        .await;
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Some(pid) = child.id() {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
                let until = Instant::now() + Duration::from_secs(10);
                while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < until {
                    let _ = child.try_wait();
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        if !self.dir.as_os_str().is_empty() {
            end_processes_in(&self.dir);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Restores the server's backup to a new scratch directory and starts PostgreSQL on it,
/// recovering to `at`; returns once it has promoted (or refuses when the archive cannot
/// reach `at`). `live` is the live server's target, whose database and user the
/// scratch instance is reached with. Phases are reported on `events` for `domain`.
pub async fn recover(
    tools: &Tools,
    window: &Window,
    at: OffsetDateTime,
    live: &Target,
    events: &Events,
    domain: &str,
    interrupt: &Interrupt,
) -> Result<Instance, Error> {
    let progress = |message: String| {
        events.send(RunEvent::Progress {
            domain: domain.to_string(),
            message,
        })
    };
    let swept = {
        let dir = tools.scratch_dir.clone();
        tokio::task::spawn_blocking(move || sweep(&dir))
            .await
            .unwrap_or(0)
    };
    if swept > 0 {
        progress(format!(
            "removed {swept} scratch director{} a killed recovery left in {}",
            if swept == 1 { "y" } else { "ies" },
            tools.scratch_dir.display()
        ));
    }
    let dir = make_dir(tools)?;
    // From here on the directory is the instance's: dropped, it is removed.
    let mut instance = Instance {
        target: live.scratch_socket(&dir.join("sock"), SCRATCH_PORT, &tools.server),
        dir,
        child: None,
        recovered_to: None,
    };
    let dir = instance.dir.clone();
    let data = dir.join("data");
    progress(format!(
        "restoring backup {} of stanza {} to {} (about {})",
        window.backup,
        tools.stanza.stanza,
        data.display(),
        bytes_shown(window.bytes)
    ));
    let stop = interrupt.stop_token();
    let args = [
        format!("--pg1-path={}", data.display()),
        "--type=time".into(),
        format!("--target={}", target_text(at)),
        "--target-action=promote".into(),
        "--archive-mode=off".into(),
        format!("--tablespace-map-all={}", dir.join("tablespaces").display()),
        "--log-level-console=warn".into(),
        "restore".into(),
    ];
    tools.run_until(&args, "restore", Some(&stop)).await?;
    crate::failpoint!("pitr.restored");
    // Replication slots are the live server's business: a scratch instance keeps none
    // (pgBackRest leaves them out of backups; one there would stop it starting with
    // max_replication_slots = 0).
    if let Ok(slots) = std::fs::read_dir(data.join("pg_replslot")) {
        for slot in slots.flatten() {
            let _ = std::fs::remove_dir_all(slot.path());
        }
    }
    // The configuration is tenantctl's: the server's own files (Debian keeps them
    // outside the data directory) may name certificates, ports and archive commands of
    // the live server. What the command line sets wins over postgresql.auto.conf.
    let own = |name: &str, text: &str| -> Result<PathBuf, Error> {
        let p = dir.join(name);
        std::fs::write(&p, text)
            .and_then(|_| chown(&p, tools))
            .map_err(|e| Error::setup(format!("cannot write {}: {e}", p.display())))?;
        Ok(p)
    };
    let conf = own(
        "tenantctl.conf",
        "# The scratch instance of a point-in-time recovery.\n",
    )?;
    let hba = own("hba.conf", "local all all trust\n")?;
    let ident = own("ident.conf", "")?;
    let log = dir.join("server.log");
    let log_file = std::fs::File::create(&log)
        .map_err(|e| Error::setup(format!("cannot write {}: {e}", log.display())))?;
    let _ = chown(&log, tools);
    let mut cmd = tools.command(&tools.postgres, "SIGQUIT");
    let setting = |k: &str, v: &str| format!("--{k}={v}");
    cmd.arg("-D")
        .arg(&data)
        .arg(setting("config_file", &conf.display().to_string()))
        .arg(setting("hba_file", &hba.display().to_string()))
        .arg(setting("ident_file", &ident.display().to_string()))
        .arg(setting("listen_addresses", ""))
        .arg(setting(
            "unix_socket_directories",
            &dir.join("sock").display().to_string(),
        ))
        .arg(setting("port", &SCRATCH_PORT.to_string()))
        .arg(setting("archive_mode", "off"))
        .arg(setting("hot_standby", "off"))
        .arg(setting("ssl", "off"))
        .arg(setting("logging_collector", "off"))
        .arg(setting("log_destination", "stderr"))
        .arg(setting("primary_conninfo", ""))
        .arg(setting("synchronous_standby_names", ""))
        .arg(setting("shared_preload_libraries", &tools.preload))
        .arg(setting("max_connections", "20"))
        .arg(setting("max_wal_senders", "0"))
        .arg(setting("max_replication_slots", "0"))
        .arg(setting("wal_level", "replica"))
        .args(tools.settings_kept.iter().map(|(k, v)| setting(k, v)))
        .stdout(Stdio::null())
        .stderr(log_file);
    progress(format!("recovering to {} on a scratch instance", shown(at)));
    let child = cmd
        .spawn()
        .map_err(|e| Error::setup(format!("cannot start {}: {e}", tools.postgres.display())))?;
    instance.child = Some(child);
    let started = Instant::now();
    loop {
        if interrupt.requested() {
            return Err(interrupted(
                "the recovery was interrupted; nothing was changed",
            ));
        }
        if let Some(status) = instance
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            instance.child = None;
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            if said.contains("No space left on device") {
                return Err(Error::failed(format!(
                    "the scratch instance ran out of space in {} during recovery (replaying the WAL since the backup grows the data beyond the backup's size): free some space or point pitr.scratch_dir elsewhere; nothing was changed ({})",
                    tools.scratch_dir.display(),
                    tail(&said, 3)
                )));
            }
            // pgBackRest's archive-get says what went wrong fetching WAL (a segment not
            // archived yet is no error: it ends recovery).
            let fetch: Vec<&str> = said.lines().filter(|l| l.contains("ERROR: [")).collect();
            if !fetch.is_empty() {
                return Err(Error::failed(format!(
                    "the scratch instance could not fetch WAL from stanza {}: {}; nothing was changed",
                    tools.stanza.stanza,
                    tail(&fetch[fetch.len().saturating_sub(3)..].join("\n"), 3)
                )));
            }
            if said.contains("recovery ended before configured recovery target was reached") {
                let last = said
                    .lines()
                    .rev()
                    .find_map(|l| {
                        l.split("last completed transaction was at log time ")
                            .nth(1)
                    })
                    .map(|t| format!(" (its last transaction was at {})", t.trim()))
                    .unwrap_or_default();
                return Err(Error::refused(format!(
                    "the archived WAL of stanza {} ends before {}{last}: PostgreSQL found no commit after that time to stop at; it can recover {}, or a later time once more WAL is archived; nothing was changed",
                    tools.stanza.stanza,
                    shown(at),
                    window.shown()
                )));
            }
            return Err(Error::failed(format!(
                "the scratch instance stopped during recovery ({status}): {}",
                tail(&said, 6)
            )));
        }
        if let Ok(client) = instance.target.connect().await {
            let row = crate::pg::db::read(
                &client,
                "reading the scratch instance's recovery",
                client.query_one(
                    "SELECT pg_is_in_recovery(), pg_last_xact_replay_timestamp()",
                    &[],
                ),
            )
            .await?;
            if !row.get::<_, bool>(0) {
                instance.recovered_to = row.try_get(1).ok().flatten();
                break;
            }
        }
        if started.elapsed().as_secs() % 30 == 29 {
            progress(format!(
                "still recovering after {} s",
                started.elapsed().as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    progress(format!(
        "recovered to {} in {:.1} s",
        instance
            .recovered_to
            .map(shown)
            .unwrap_or_else(|| "the backup's end (no transaction replayed)".into()),
        started.elapsed().as_secs_f64()
    ));
    crate::failpoint!("pitr.recovered");
    Ok(instance)
}

/// Makes a new scratch directory, private to the user the instance runs as, with its
/// owner file (this process's pid and start time) written first.
fn make_dir(tools: &Tools) -> Result<PathBuf, Error> {
    use std::os::unix::fs::DirBuilderExt;
    let pid = std::process::id();
    let mut rand = [0u8; 4];
    getrandom::fill(&mut rand).map_err(|e| Error::setup(format!("no randomness: {e}")))?;
    let dir = tools
        .scratch_dir
        .join(format!("{RUN_PREFIX}{pid}-{}", hex::encode(rand)));
    let made = |p: &Path| -> Result<(), Error> {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(p)
            .and_then(|_| chown(p, tools))
            .map_err(|e| Error::setup(format!("cannot make {}: {e}", p.display())))
    };
    made(&dir)?;
    let start = process_start(pid as i32).unwrap_or_default();
    std::fs::write(dir.join("owner"), format!("{pid} {start}\n"))
        .map_err(|e| Error::setup(format!("cannot write in {}: {e}", dir.display())))?;
    made(&dir.join("sock"))?;
    Ok(dir)
}

/// Gives `path` to the user the instance runs as.
fn chown(path: &Path, tools: &Tools) -> std::io::Result<()> {
    match &tools.run_as {
        Some(u) => std::os::unix::fs::chown(path, Some(u.uid.as_raw()), Some(u.gid.as_raw())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_with_their_zone_and_refused_without() {
        let utc = |t: &str| parse_time(t).map(|t| t.unix_timestamp());
        let base = utc("2026-12-07T14:05:00Z").unwrap();
        assert_eq!(utc("2026-12-07 14:05:00 UTC").unwrap(), base);
        assert_eq!(utc("2026-12-07 14:05:00Z").unwrap(), base);
        assert_eq!(utc("2026-12-07 14:05:00+00").unwrap(), base);
        assert_eq!(utc("2026-12-07 15:05:00+01:00").unwrap(), base);
        assert_eq!(utc("2026-12-07 15:05:00+0100").unwrap(), base);
        assert_eq!(utc("2026-12-07 09:05:00-05").unwrap(), base);
        assert_eq!(utc("2026-12-07 14:05Z").unwrap(), base);
        assert_eq!(
            parse_time("2026-12-07 14:05:00.250+00")
                .unwrap()
                .millisecond(),
            250
        );
        for bad in [
            "2026-12-07 14:05:00",
            "yesterday",
            "",
            "2026-13-07 14:05:00Z",
            "2026-12-07 14:05:00 CET",
        ] {
            let e = parse_time(bad).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Invalid, "{bad}");
        }
        assert_eq!(
            target_text(parse_time("2026-12-07 15:05:00.5+01").unwrap()),
            "2026-12-07 14:05:00.500000+00"
        );
    }
}
