//! Revision targets as commands and the service name them, and what a relative one means
//! for one tenant.
//!
//! A target is a version (`head`, `base`, a version number) or, as Alembic has them,
//! relative to each tenant's own revision: `+N` (N migrations above it, for upgrades) and
//! `-N` (N applied migrations below it, for downgrades). The text is checked against the
//! migration files before anything connects ([`parse`]); a relative target is resolved
//! per tenant, from its history read under its lock ([`Target::up_from`],
//! [`Target::down_from`]), so a dry run and a run resolve it the same way.

use std::fmt;

use crate::error::Error;
use crate::files::migrations::{AppliedRow, MigrationSet};
use crate::ident;

/// A revision to go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A version; 0 is base (nothing applied).
    Version(i32),
    /// `+N`: N migrations above the tenant's revision.
    Up(u32),
    /// `-N`: N applied migrations below the tenant's revision.
    Down(u32),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Version(0) => f.write_str("base"),
            Target::Version(v) => write!(f, "{v}"),
            Target::Up(n) => write!(f, "+{n}"),
            Target::Down(n) => write!(f, "-{n}"),
        }
    }
}

/// Which forms a command takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forms {
    /// A version or `+N` (`upgrade`, `POST /api/fleet/upgrade`).
    Up,
    /// A version or `-N` (`downgrade`).
    Down,
    /// A version, `+N` or `-N` (`POST /api/tenants/run-migrations`, which goes either way).
    Either,
    /// A version only (`stamp`, `tenant create --target`).
    Version,
}

/// Parses a target as `command` takes it (`forms`), checked against the files: `head`,
/// `base`, a version number that is a file's (or 0, base), or a relative `+N` / `-N` with
/// N from 1 to the number of files. Anything else is a usage error (exit 2) that says
/// what would be accepted: another sign, spaces, a zero or too large a step, `head+1`.
pub fn parse(text: &str, set: &MigrationSet, forms: Forms, command: &str) -> Result<Target, Error> {
    let relative = |sign: char, digits: &str| -> Result<u32, Error> {
        let not_a_step = || {
            Error::usage(format!(
                "target {} is not a revision: a relative target is {sign}N, N a whole number from 1 to {} (the number of migrations)",
                ident::shown(text),
                set.files.len()
            ))
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(not_a_step());
        }
        let n: u32 = digits.parse().map_err(|_| not_a_step())?;
        if n == 0 || n as usize > set.files.len() {
            return Err(not_a_step());
        }
        Ok(n)
    };
    let target = match text.as_bytes().first() {
        Some(b'+') => Target::Up(relative('+', &text[1..])?),
        Some(b'-') => Target::Down(relative('-', &text[1..])?),
        _ => Target::Version(version(text, set)?),
    };
    match (forms, target) {
        (_, Target::Version(_)) | (Forms::Either, _) => Ok(target),
        (Forms::Up, Target::Up(_)) | (Forms::Down, Target::Down(_)) => Ok(target),
        (Forms::Up, Target::Down(n)) => Err(Error::usage(format!(
            "target -{n} goes down: {command} only goes up; `tenantctl downgrade ... -{n}` runs the down scripts"
        ))),
        (Forms::Down, Target::Up(n)) => Err(Error::usage(format!(
            "target +{n} goes up: {command} only goes down; `tenantctl upgrade ... +{n}` applies migrations"
        ))),
        (_, Target::Up(_) | Target::Down(_)) => Err(Error::usage(format!(
            "{command} takes a version (a number, head or base), not a relative target like {}",
            ident::shown(text)
        ))),
    }
}

/// `head`, `base` or a version number (ASCII digits only: no sign, no space) that is a
/// file's version, or 0 (base).
pub fn version(text: &str, set: &MigrationSet) -> Result<i32, Error> {
    match text {
        "head" => return Ok(set.head()),
        "base" => return Ok(0),
        _ => {}
    }
    let v = Some(text)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<i32>().ok())
        .ok_or_else(|| {
            Error::usage(format!(
                "target {} is not a revision; use head, base or a version number (upgrade also takes +N, downgrade -N, relative to each tenant's revision)",
                ident::shown(text)
            ))
        })?;
    if v == 0 || set.get(v).is_some() {
        return Ok(v);
    }
    let known: Vec<String> = set.files.iter().map(|f| f.version.to_string()).collect();
    Err(Error::usage(format!(
        "no migration has version {v} in {}; known versions: {}",
        set.dir.display(),
        if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        }
    )))
}

/// Why a relative target does not fit a tenant: it would go past head or past base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beyond {
    /// The relative target.
    pub target: Target,
    /// The tenant's revision.
    pub current: Option<i32>,
    /// How many steps there are that way.
    pub available: usize,
}

impl Target {
    /// The version an upgrade goes to from `history` (already checked against the files:
    /// no drift), or why `+N` does not fit.
    pub fn up_from(self, history: &[AppliedRow], set: &MigrationSet) -> Result<i32, Beyond> {
        let current = history.iter().map(|r| r.version).max();
        match self {
            Target::Version(v) => Ok(v),
            Target::Up(n) => {
                let above: Vec<i32> = set
                    .files
                    .iter()
                    .map(|f| f.version)
                    .filter(|v| current.is_none_or(|c| *v > c))
                    .collect();
                above.get(n as usize - 1).copied().ok_or(Beyond {
                    target: self,
                    current,
                    available: above.len(),
                })
            }
            // Refused when parsed (see `parse`); never planned.
            Target::Down(_) => Err(Beyond {
                target: self,
                current,
                available: 0,
            }),
        }
    }

    /// The version a downgrade goes to from `history` (its highest remaining version, 0
    /// for base), or why `-N` does not fit.
    pub fn down_from(self, history: &[AppliedRow]) -> Result<i32, Beyond> {
        let mut applied: Vec<i32> = history.iter().map(|r| r.version).collect();
        applied.sort_unstable_by(|a, b| b.cmp(a));
        let current = applied.first().copied();
        match self {
            Target::Version(v) => Ok(v),
            Target::Down(n) => match (n as usize).cmp(&applied.len()) {
                std::cmp::Ordering::Less => Ok(applied[n as usize]),
                std::cmp::Ordering::Equal => Ok(0),
                std::cmp::Ordering::Greater => Err(Beyond {
                    target: self,
                    current,
                    available: applied.len(),
                }),
            },
            Target::Up(_) => Err(Beyond {
                target: self,
                current,
                available: 0,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A set of files with these versions (the files are read once, when loaded).
    fn set(versions: &[i32]) -> MigrationSet {
        let dir = tempfile::tempdir().unwrap();
        for v in versions {
            std::fs::write(dir.path().join(format!("V{v}__m{v}.sql")), "SELECT 1;").unwrap();
        }
        MigrationSet::load(dir.path()).unwrap()
    }

    fn rows(versions: &[i32]) -> Vec<AppliedRow> {
        versions
            .iter()
            .map(|v| AppliedRow {
                version: *v,
                name: format!("m{v}"),
                applied_on: "2026-01-01T00:00:00Z".into(),
                checksum: 0,
            })
            .collect()
    }

    #[test]
    fn every_form_parses_where_it_is_taken_and_nowhere_else() {
        let s = set(&[1, 2, 5]);
        let p = |t: &str, f: Forms| parse(t, &s, f, "cmd");
        assert_eq!(p("head", Forms::Up).unwrap(), Target::Version(5));
        assert_eq!(p("base", Forms::Down).unwrap(), Target::Version(0));
        assert_eq!(p("0", Forms::Down).unwrap(), Target::Version(0));
        assert_eq!(p("2", Forms::Version).unwrap(), Target::Version(2));
        assert_eq!(p("+1", Forms::Up).unwrap(), Target::Up(1));
        assert_eq!(p("+3", Forms::Either).unwrap(), Target::Up(3));
        assert_eq!(p("-2", Forms::Down).unwrap(), Target::Down(2));
        assert_eq!(p("-1", Forms::Either).unwrap(), Target::Down(1));
        for (t, f) in [
            ("-1", Forms::Up),
            ("+1", Forms::Down),
            ("+1", Forms::Version),
            ("-1", Forms::Version),
        ] {
            assert_eq!(
                p(t, f).unwrap_err().kind(),
                crate::ErrorKind::Invalid,
                "{t}"
            );
        }
        for bad in [
            "+0",
            "-0",
            "++1",
            "+-1",
            "-+1",
            "--1",
            "+4",
            "-4",
            "+99999999999",
            "+4294967297",
            "head+1",
            "head-1",
            "base+1",
            " +1",
            "+1 ",
            " 2",
            "2 ",
            "+",
            "-",
            "",
            "1.0",
            "0x1",
            "+1e3",
            "+７",
            "٣",
            "3",
            "99999999999",
            "-2147483648",
            "+ 1",
            "\u{0}1",
        ] {
            for f in [Forms::Up, Forms::Down, Forms::Either, Forms::Version] {
                let e = p(bad, f).unwrap_err();
                assert_eq!(e.kind(), crate::ErrorKind::Invalid, "{bad:?}");
            }
        }
    }

    #[test]
    fn relative_targets_count_files_above_and_applied_versions_below() {
        let s = set(&[1, 2, 5, 9]);
        assert_eq!(Target::Up(1).up_from(&rows(&[]), &s), Ok(1));
        assert_eq!(Target::Up(2).up_from(&rows(&[1, 2]), &s), Ok(9));
        assert_eq!(Target::Up(1).up_from(&rows(&[1, 2]), &s), Ok(5));
        let past = Target::Up(3).up_from(&rows(&[1, 2]), &s).unwrap_err();
        assert_eq!((past.current, past.available), (Some(2), 2));
        assert!(Target::Up(1).up_from(&rows(&[1, 2, 5, 9]), &s).is_err());
        assert_eq!(Target::Down(1).down_from(&rows(&[1, 2, 5])), Ok(2));
        assert_eq!(Target::Down(2).down_from(&rows(&[5, 1, 2])), Ok(1));
        assert_eq!(Target::Down(3).down_from(&rows(&[1, 2, 5])), Ok(0));
        let past = Target::Down(4).down_from(&rows(&[1, 2, 5])).unwrap_err();
        assert_eq!((past.current, past.available), (Some(5), 3));
        assert!(Target::Down(1).down_from(&rows(&[])).is_err());
        assert_eq!(Target::Version(4).down_from(&rows(&[1])), Ok(4));
    }
}
