//! Archive files on disk: written under a temporary name beside the final one and
//! renamed only when complete and synced, so a crash never leaves a half archive under
//! an archive's name; and the rotation of a tenant's backups.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// The temporary name an archive is written under beside `file`; refuses an existing
/// `file` without `force`, and a directory that does not exist.
pub fn prepare(file: &Path, force: bool) -> Result<PathBuf, Error> {
    if file.is_dir() {
        return Err(Error::usage(format!(
            "{} is a directory; name the archive file",
            file.display()
        )));
    }
    if let Ok(meta) = std::fs::symlink_metadata(file) {
        // A rename would replace a symlink, a device or a FIFO rather than write
        // through it.
        if !meta.file_type().is_file() {
            return Err(Error::usage(format!(
                "{} exists and is not a regular file (a symlink, device or FIFO); name a regular file, or write to standard output with -f - and redirect it",
                file.display()
            )));
        }
        if !force {
            return Err(Error::usage(format!(
                "{} already exists; pass --force to replace it",
                file.display()
            )));
        }
    }
    let name = file
        .file_name()
        .ok_or_else(|| Error::usage(format!("{} does not name a file", file.display())))?;
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::usage(format!(
            "cannot write {}: directory {} does not exist",
            file.display(),
            dir.display()
        )));
    }
    if let Some(name) = name.to_str() {
        remove_stale_partials(&dir, name);
    }
    let mut partial = std::ffi::OsString::from(".");
    partial.push(name);
    partial.push(format!(".{}.partial", std::process::id()));
    Ok(dir.join(partial))
}

/// Creates the temporary file `partial` (a name from [`prepare`] or [`backup_partial`])
/// as a new file: whatever is already at that name (what an earlier process with the same
/// id left, or a symlink planted there) is removed first, never written through, so a
/// symlink at a predictable name cannot make a run overwrite another file.
pub fn create_partial(partial: &Path) -> Result<std::fs::File, Error> {
    let fail = |e: std::io::Error| Error::failed(format!("creating {}: {e}", partial.display()));
    if std::fs::symlink_metadata(partial).is_ok_and(|m| !m.is_dir()) {
        std::fs::remove_file(partial).map_err(fail)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(partial)
        .map_err(fail)
}

/// Makes a complete archive durable under its final name; returns its size.
pub fn finish(partial: &Path, file: &Path) -> Result<u64, Error> {
    let fail = |e: std::io::Error| Error::failed(format!("writing {}: {e}", file.display()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .open(partial)
        .map_err(fail)?;
    f.sync_all().map_err(fail)?;
    let size = f.metadata().map_err(fail)?.len();
    std::fs::rename(partial, file).map_err(fail)?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(size)
}

/// Removes `.PREFIX*.PID.partial` files in `dir` whose writer (process PID) is gone: what
/// a killed export or backup left.
pub fn remove_stale_partials(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name
            .strip_prefix('.')
            .filter(|r| r.starts_with(prefix))
            .and_then(|r| r.strip_suffix(".partial"))
        else {
            continue;
        };
        let Some(pid) = rest
            .rsplit_once('.')
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The file extension of archives.
pub const EXTENSION: &str = "tenant";

/// Where a backup stands among a tenant's backups: the second its name gives, then its
/// counter (1 for a name without one). Names are given in this order and never twice, so
/// it is the order they were written in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BackupKey {
    /// `YYYYMMDDTHHMMSSZ`.
    stamp: String,
    /// 1, or the `N` of `-N`.
    counter: u64,
}

impl BackupKey {
    fn file_name(&self, domain: &str) -> String {
        if self.counter == 1 {
            format!("{domain}-{}.{EXTENSION}", self.stamp)
        } else {
            format!("{domain}-{}-{}.{EXTENSION}", self.stamp, self.counter)
        }
    }
}

/// The `YYYYMMDDTHHMMSSZ` of a moment, in UTC.
fn stamp(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// The key of a file named as one of `domain`'s backups, `DOMAIN-YYYYMMDDTHHMMSSZ.tenant`
/// or `DOMAIN-YYYYMMDDTHHMMSSZ-N.tenant` (N from 2, no leading zero: as every version
/// named them), with a real date and time; `None` for any other name.
pub fn backup_key(name: &str, domain: &str) -> Option<BackupKey> {
    let rest = name
        .strip_prefix(domain)?
        .strip_prefix('-')?
        .strip_suffix(EXTENSION)?
        .strip_suffix('.')?;
    let (stamp, counter) = match rest.split_at_checked(16)? {
        (stamp, "") => (stamp, 1),
        (stamp, tail) => {
            let n = tail.strip_prefix('-')?;
            if n.is_empty()
                || n.len() > 20
                || n.starts_with('0')
                || !n.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let n: u64 = n.parse().ok()?;
            if n < 2 {
                return None;
            }
            (stamp, n)
        }
    };
    // A real date and time.
    stamp_time(stamp)?;
    Some(BackupKey {
        stamp: stamp.to_string(),
        counter,
    })
}

/// Whether `path` is a regular file (not a symlink) that starts as an archive does.
fn is_archive_file(path: &Path) -> bool {
    use std::io::Read;
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file()) {
        return false;
    }
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == crate::data::archive::MAGIC)
}

/// `domain`'s backups in `dir`, oldest first: regular files named as its backups that
/// are archives. Anything else there (other names, directories, symlinks, files that
/// are not archives) is not one of its backups, and rotation never touches it.
pub fn backups(dir: &Path, domain: &str) -> Result<Vec<(BackupKey, PathBuf)>, Error> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::failed(format!("reading {}: {e}", dir.display())))?;
    let mut found: Vec<(BackupKey, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let key = backup_key(e.file_name().to_str()?, domain)?;
            let path = e.path();
            is_archive_file(&path).then_some((key, path))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// A complete backup published under its name, and the rotation after it.
#[derive(Debug)]
pub struct Published {
    /// The backup's file.
    pub path: PathBuf,
    /// The older backups removed (`--keep`), or why removing them failed.
    pub rotated: Result<Vec<PathBuf>, Error>,
}

/// Which of a tenant's backups rotation keeps: the newest `newest` (`None`: all), and
/// every one younger than `within` (by the time in its name).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keep {
    /// How many of the newest are kept.
    pub newest: Option<usize>,
    /// How young a backup is kept however many newer ones there are.
    pub within: Option<std::time::Duration>,
}

/// Makes the complete archive `partial` (in `dir`) `domain`'s newest backup, then keeps
/// what `keep` says of its backups. The name is
/// `DOMAIN-YYYYMMDDTHHMMSSZ.tenant` for the second `at`, with `-N` added, one past the
/// highest counter of that second, when a backup of that second is there already; and
/// it always sorts after every backup already there (a clock behind the newest one's
/// second takes that second, with the next counter). Naming, renaming and rotating hold
/// an exclusive lock on `dir`, so backups written at once, by any process, get distinct
/// names in the order they were published; rotation never removes the one just
/// published.
pub fn publish_backup(
    partial: &Path,
    dir: &Path,
    domain: &str,
    at: time::OffsetDateTime,
    keep: Keep,
) -> Result<Published, Error> {
    let fail =
        |e: std::io::Error| Error::failed(format!("writing a backup into {}: {e}", dir.display()));
    std::fs::OpenOptions::new()
        .read(true)
        .open(partial)
        .and_then(|f| f.sync_all())
        .map_err(fail)?;
    let guard = std::fs::File::open(dir).map_err(fail)?;
    guard.lock().map_err(fail)?;
    let existing = backups(dir, domain)?;
    let now = stamp(at);
    let mut key = match existing.last() {
        Some((newest, _)) if newest.stamp >= now => BackupKey {
            stamp: newest.stamp.clone(),
            counter: newest
                .counter
                .checked_add(1)
                .ok_or_else(|| exhausted(dir))?,
        },
        _ => BackupKey {
            stamp: now,
            counter: 1,
        },
    };
    // A name taken by something that is not a backup (another file, a directory, a
    // symlink) is skipped, never replaced.
    let mut path = dir.join(key.file_name(domain));
    while std::fs::symlink_metadata(&path).is_ok() {
        key.counter = key.counter.checked_add(1).ok_or_else(|| exhausted(dir))?;
        path = dir.join(key.file_name(domain));
    }
    std::fs::rename(partial, &path).map_err(fail)?;
    let _ = guard.sync_all();
    crate::failpoint!("backup.rotating");
    let rotated = match keep.newest {
        Some(newest) => rotate(existing, newest.saturating_sub(1), keep.within, at),
        None => Ok(Vec::new()),
    };
    drop(guard);
    Ok(Published { path, rotated })
}

fn exhausted(dir: &Path) -> Error {
    Error::failed(format!(
        "no backup name is left after the newest in {}: a backup there is named with the highest counter; move it away",
        dir.display()
    ))
}

/// Removes all but the newest `keep` of `older` (sorted oldest first), sparing those
/// younger than `within` at `now`; returns what was removed.
fn rotate(
    older: Vec<(BackupKey, PathBuf)>,
    keep: usize,
    within: Option<std::time::Duration>,
    now: time::OffsetDateTime,
) -> Result<Vec<PathBuf>, Error> {
    let excess = older.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for (key, old) in older.into_iter().take(excess) {
        // Spared when younger than `within`: taken at or before now (a name in the
        // future, from a clock that jumped or a file copied in, is not young: it
        // would be spared forever), and less than `within` ago.
        if let (Some(within), Some(taken)) = (within, stamp_time(&key.stamp)) {
            let age = now - taken;
            if !age.is_negative() && age < within {
                continue;
            }
        }
        std::fs::remove_file(&old)
            .map_err(|e| Error::failed(format!("removing old backup {}: {e}", old.display())))?;
        removed.push(old);
    }
    Ok(removed)
}

/// The time a backup's name gives (`YYYYMMDDTHHMMSSZ`, UTC); `None` unless it names a
/// real date and time.
fn stamp_time(stamp: &str) -> Option<time::OffsetDateTime> {
    let b = stamp.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        stamp
            .get(r)
            .filter(|d| d.bytes().all(|c| c.is_ascii_digit()))?
            .parse()
            .ok()
    };
    let month = time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(num(0..4)?).ok()?,
        month,
        u8::try_from(num(6..8)?).ok()?,
    )
    .ok()?;
    let at = time::Time::from_hms(
        u8::try_from(num(9..11)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(13..15)?).ok()?,
    )
    .ok()?;
    Some(time::PrimitiveDateTime::new(date, at).assume_utc())
}

/// The temporary name a backup of `domain` started at `at` is written under in `dir`.
pub fn backup_partial(dir: &Path, domain: &str, at: time::OffsetDateTime) -> PathBuf {
    dir.join(format!(
        ".{domain}-{}.{EXTENSION}.{}.partial",
        stamp(at),
        std::process::id()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_within_spares_young_backups_but_never_one_named_in_the_future() {
        let dir = tempfile::tempdir().unwrap();
        let now = stamp_time("20261207T120000Z").unwrap();
        let mut older = Vec::new();
        for stamp in ["20261101T000000Z", "20261207T110000Z", "20991231T000001Z"] {
            let key = backup_key(&format!("d-{stamp}.{EXTENSION}"), "d").unwrap();
            let path = dir.path().join(format!("d-{stamp}.{EXTENSION}"));
            std::fs::write(&path, b"x").unwrap();
            older.push((key, path));
        }
        older.sort();
        let removed = rotate(older, 0, Some(std::time::Duration::from_secs(86_400)), now).unwrap();
        let names: Vec<String> = removed
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["d-20261101T000000Z.tenant", "d-20991231T000001Z.tenant"],
            "the month-old and the future-named go; the hour-old stays"
        );
        assert_eq!(stamp_time("20260230T000000Z"), None);
        assert_eq!(stamp_time("2026-12-07"), None);
    }

    #[test]
    fn backup_names_of_every_version_are_recognised_and_nothing_else() {
        let key = |n: &str| backup_key(n, "acme");
        let k = |stamp: &str, counter| {
            Some(BackupKey {
                stamp: stamp.to_string(),
                counter,
            })
        };
        assert_eq!(
            key("acme-20200101T000000Z.tenant"),
            k("20200101T000000Z", 1)
        );
        assert_eq!(
            key("acme-20200101T000000Z-2.tenant"),
            k("20200101T000000Z", 2)
        );
        assert_eq!(
            key("acme-20200101T000000Z-10.tenant"),
            k("20200101T000000Z", 10)
        );
        for other in [
            "acme-20200101T000000Z-1.tenant",
            "acme-20200101T000000Z-02.tenant",
            "acme-20200101T000000Z-x.tenant",
            "acme-20200101T000000Z-.tenant",
            "acme-20200101garbage.tenant",
            "acme-20201301T000000Z.tenant",
            "acme-20200101T250000Z.tenant",
            "acme-20200101T000000Z.tenant.old",
            "acme-20200101T000000Z.tnt",
            "acme-west-20200101T000000Z.tenant",
            "acme20200101T000000Z.tenant",
            "acme-20200101T000000Z-18446744073709551616.tenant",
        ] {
            assert_eq!(key(other), None, "{other}");
        }
        assert_eq!(
            key("acme-20200101T000000Z-18446744073709551615.tenant"),
            k("20200101T000000Z", u64::MAX)
        );
        assert!(k("20200101T000000Z", 10) > k("20200101T000000Z", 2));
        assert!(k("20200101T000001Z", 1) > k("20200101T000000Z", 10));
    }
}
