//! `lint` as an action: which migration files to lint (those the fleet has still to
//! apply, every file, or files named), each linted with squawk's rules as
//! [`crate::files::lint`] runs them, with `[lint] ignore` applied; `check` lints the
//! pending files too.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::app::context::Context;
use crate::error::Error;
use crate::files::lint::{self, Finding};
use crate::files::migrations::MigrationSet;
use crate::registry::Registry;

/// Which files to lint.
#[derive(Debug, Clone, Default)]
pub struct LintRequest {
    /// These files (any SQL file, in or out of the migrations directory).
    pub files: Vec<PathBuf>,
    /// Every file of the migrations directory.
    pub all: bool,
}

/// What `lint` prints: its JSON document.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct LintReport {
    /// True when nothing was found.
    pub ok: bool,
    /// Which files were linted: `pending` (those above the lowest revision of the
    /// provisioned tenants), `all` or `named`.
    pub selected: &'static str,
    /// The lowest revision of the provisioned tenants, for `pending` (`null`: no tenant
    /// is provisioned, so every file is pending).
    pub from_revision: Option<i32>,
    /// Each file linted, in order, with what was found in it.
    pub files: Vec<FileLint>,
    /// Findings in all.
    pub findings: usize,
}

/// One file's findings.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct FileLint {
    /// The file, as named or as found in the migrations directory.
    pub file: String,
    /// Its version, for a file of the migrations directory.
    pub version: Option<i32>,
    /// What was found, in the order of the text.
    pub findings: Vec<Finding>,
}

/// The rules `[lint] ignore` turns off.
fn ignored(cx: &Context) -> Result<Vec<squawk_linter::Rule>, Error> {
    cx.settings
        .lint_ignore
        .iter()
        .map(|n| lint::rule(n, "config lint.ignore"))
        .collect()
}

/// Lints the files of `set` above `from` (all of them for `None`).
pub fn pending(
    cx: &Context,
    set: &MigrationSet,
    from: Option<i32>,
) -> Result<Vec<FileLint>, Error> {
    let ignore = ignored(cx)?;
    set.files
        .iter()
        .filter(|f| from.is_none_or(|r| f.version > r))
        .map(|f| {
            let label = f.up_path.display().to_string();
            Ok(FileLint {
                findings: lint::lint(&f.up_sql, &label, &ignore, f.up.no_transaction)?,
                file: label,
                version: Some(f.version),
            })
        })
        .collect()
}

/// The largest file `lint` reads (a migration is far smaller).
const MAX_FILE: u64 = 16 * 1024 * 1024;

fn named(path: &Path, ignore: &[squawk_linter::Rule]) -> Result<FileLint, Error> {
    let label = path.display().to_string();
    let meta =
        std::fs::metadata(path).map_err(|e| Error::usage(format!("cannot read {label}: {e}")))?;
    if !meta.is_file() {
        return Err(Error::usage(format!(
            "cannot read {label}: it is not a regular file"
        )));
    }
    if meta.len() > MAX_FILE {
        return Err(Error::usage(format!(
            "cannot read {label}: {} bytes, more than the {MAX_FILE} a migration file may have",
            meta.len()
        )));
    }
    let sql = std::fs::read_to_string(path)
        .map_err(|e| Error::usage(format!("cannot read {label}: {e}")))?;
    let no_transaction = crate::files::statements::is_no_transaction(&sql);
    Ok(FileLint {
        findings: lint::lint(&sql, &label, ignore, no_transaction)?,
        file: label,
        version: None,
    })
}

/// Lints what `request` selects: named files (no connection), every file of the
/// directory (no connection), or the files the fleet has still to apply (the registry's
/// cached revisions).
pub async fn lint(cx: &Context, request: &LintRequest) -> Result<LintReport, Error> {
    let (selected, from_revision, files) = if !request.files.is_empty() {
        let ignore = ignored(cx)?;
        let files = request
            .files
            .iter()
            .map(|p| named(p, &ignore))
            .collect::<Result<Vec<_>, Error>>()?;
        ("named", None, files)
    } else {
        let set = cx.migrations()?;
        if request.all {
            ("all", None, pending(cx, &set, None)?)
        } else {
            let client = cx.connect().await?;
            let registry = Registry::open(&client, &cx.settings.registry_schema).await?;
            let from = registry.lowest_revision().await?;
            ("pending", from, pending(cx, &set, from)?)
        }
    };
    let findings = files.iter().map(|f| f.findings.len()).sum();
    Ok(LintReport {
        ok: findings == 0,
        selected,
        from_revision,
        files,
        findings,
    })
}
