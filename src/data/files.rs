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

/// A new backup's path in `dir` for `domain`: `DOMAIN-YYYYMMDDTHHMMSSZ.tenant`, with a
/// counter added when that name is taken (two backups within a second).
pub fn backup_path(dir: &Path, domain: &str, at: time::OffsetDateTime) -> PathBuf {
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    let mut path = dir.join(format!("{domain}-{stamp}.{EXTENSION}"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{domain}-{stamp}-{n}.{EXTENSION}"));
        n += 1;
    }
    path
}

/// `domain`'s backups in `dir`, oldest first (their names sort by time).
pub fn backups(dir: &Path, domain: &str) -> Result<Vec<PathBuf>, Error> {
    let prefix = format!("{domain}-");
    let suffix = format!(".{EXTENSION}");
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::failed(format!("reading {}: {e}", dir.display())))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.strip_prefix(&prefix)
                        .and_then(|rest| rest.strip_suffix(&suffix))
                        .is_some_and(|stamp| {
                            stamp.len() >= 16
                                && stamp.as_bytes()[..8].iter().all(u8::is_ascii_digit)
                        })
                })
        })
        .collect();
    found.sort_by_key(|p| sort_key(p));
    Ok(found)
}

/// Sorts `DOMAIN-STAMP.tenant` and `DOMAIN-STAMP-N.tenant` by stamp, then counter.
fn sort_key(p: &Path) -> (String, u64) {
    let name = p
        .file_stem()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    match name.rsplit_once('-') {
        Some((head, n))
            if n.len() < 6 && n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() =>
        {
            (head.to_string(), n.parse().unwrap_or(0))
        }
        _ => (name, 1),
    }
}

/// Keeps the newest `keep` of `domain`'s backups in `dir` and removes the rest; returns
/// what was removed.
pub fn rotate(dir: &Path, domain: &str, keep: usize) -> Result<Vec<PathBuf>, Error> {
    let all = backups(dir, domain)?;
    let excess = all.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for old in all.into_iter().take(excess) {
        std::fs::remove_file(&old)
            .map_err(|e| Error::failed(format!("removing old backup {}: {e}", old.display())))?;
        removed.push(old);
    }
    Ok(removed)
}
