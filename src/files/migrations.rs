//! The migrations directory: a strict loader, targets, and the comparison of applied
//! history against the files.
//!
//! refinery's own loader skips files it cannot parse; this one refuses them. Every `.sql`
//! file must be `V{n}__{name}.sql` or `V{n}__{name}.down.sql`, versions are unique, and a
//! down file needs its up file. Other files (README, `.gitkeep`) are ignored.
//!
//! Every file is split into statements at load time (see [`crate::files::statements`]) and
//! refused, before anything runs, when it holds what tenantctl cannot run as psql would:
//! transaction control, `COPY ... FROM STDIN`, psql meta-commands, or a statement that
//! cannot run in a transaction without the `-- tenantctl: no-transaction` first line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;
use crate::files::statements::{self, Statement, NO_TRANSACTION};

/// A file's statements and how they run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The statements, in order, each sent to the server alone.
    pub statements: Vec<Statement>,
    /// Whether the file's first line is `-- tenantctl: no-transaction`: it runs outside a
    /// transaction, one statement at a time.
    pub no_transaction: bool,
    /// The shared schema's revision the file needs (`-- tenantctl: requires shared N`
    /// among its first lines): on a server whose shared schema is below it, a tenant stops
    /// before this file.
    pub requires_shared: Option<i32>,
}

/// Splits a file and checks that tenantctl can run it; the error names the file and line.
pub fn parse_script(path: &Path, sql: &str) -> Result<Script, String> {
    let at = |line: usize| format!("{}:{line}", path.display());
    if let Some(offset) = sql.find('\0') {
        let line = sql[..offset].matches('\n').count() + 1;
        return Err(format!(
            "{}: the file holds a NUL byte, which PostgreSQL cannot receive in a statement",
            at(line)
        ));
    }
    let copy_stdin = |s: &Statement| {
        s.copy_stdio().filter(|c| c.contains("STDIN")).map(|copy| {
            format!(
                "{}: {copy}: inline data is not supported (psql streams it from the file, the server cannot); load the rows with INSERT",
                at(s.line)
            )
        })
    };
    let statements = statements::split(sql).map_err(|e| {
        // Inline COPY data usually fails to split; name the COPY rather than its data.
        let before: String = sql.split_inclusive('\n').take(e.line - 1).collect();
        statements::split(&before)
            .ok()
            .and_then(|st| st.iter().find_map(copy_stdin))
            .unwrap_or_else(|| format!("{}: {}", at(e.line), e.message))
    })?;
    let no_transaction = statements::is_no_transaction(sql);
    let first_statement = statements.first().map_or(usize::MAX, |s| s.line);
    let requires_shared = statements::requires_shared(sql, first_statement)
        .map_err(|(line, message)| format!("{}: {message}", at(line)))?
        .map(|(v, _)| v);
    for s in &statements {
        if let Some(cmd) = s.transaction_control() {
            return Err(format!(
                "{}: {cmd} is transaction control, which a migration file must not contain: tenantctl runs each file in a transaction of its own (or, with `{NO_TRANSACTION}` as its first line, outside one)",
                at(s.line)
            ));
        }
        if let Some(message) = copy_stdin(s) {
            return Err(message);
        }
        if let Some(copy) = s.copy_stdio() {
            return Err(format!(
                "{}: {copy}: a migration has nowhere to send rows; use SELECT, or COPY ... TO a server file",
                at(s.line)
            ));
        }
        if !no_transaction {
            if let Some(cmd) = s.cannot_run_in_transaction() {
                return Err(format!(
                    "{}: {cmd} cannot run inside a transaction; put it in a file of its own whose first line is `{NO_TRANSACTION}` (see the book's \"How migration files run\" for what such a file leaves behind when it fails)",
                    at(s.line)
                ));
            }
        }
    }
    Ok(Script {
        statements,
        no_transaction,
        requires_shared,
    })
}

/// One versioned migration with its optional down script.
#[derive(Debug, Clone)]
pub struct MigrationFile {
    /// The version, a positive integer that fits PostgreSQL's `int4`.
    pub version: i32,
    /// The name part of the file name.
    pub name: String,
    /// Path of the up script.
    pub up_path: PathBuf,
    /// The up script's SQL, as read.
    pub up_sql: String,
    /// The up script's statements.
    pub up: Script,
    /// Path of the down script, if there is one.
    pub down_path: Option<PathBuf>,
    /// The down script's SQL, if there is one, as read.
    pub down_sql: Option<String>,
    /// The down script's statements, if there is one.
    pub down: Option<Script>,
    /// The checksum refinery stores for this migration.
    pub checksum: u64,
}

impl MigrationFile {
    /// `V{version}__{name}`, the name refinery records.
    pub fn refinery_name(&self) -> String {
        format!("V{}__{}", self.version, self.name)
    }

    /// The migration as refinery runs it.
    pub fn to_refinery(&self) -> refinery::Migration {
        // The name was validated by the loader, so refinery's parser accepts it.
        refinery::Migration::unapplied(&self.refinery_name(), &self.up_sql)
            .expect("validated migration names parse")
    }
}

fn empty_script() -> Script {
    Script {
        statements: Vec::new(),
        no_transaction: false,
        requires_shared: None,
    }
}

/// The loaded, validated contents of a migrations directory, sorted by version.
#[derive(Debug, Clone)]
pub struct MigrationSet {
    /// The directory they came from.
    pub dir: PathBuf,
    /// The migrations, by ascending version.
    pub files: Vec<MigrationFile>,
}

/// A parsed `.sql` file name.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedName {
    /// The version number.
    pub version: i32,
    /// The name part.
    pub name: String,
    /// Whether it is a `.down.sql` file.
    pub down: bool,
}

/// Parses a `.sql` file name; the error says what rule it breaks.
pub fn parse_file_name(file_name: &str) -> Result<ParsedName, String> {
    const RULE: &str = "migration files must be named V{n}__{name}.sql or V{n}__{name}.down.sql, with n a positive integer and name of letters, digits and '_'";
    let lower = file_name.to_ascii_lowercase();
    if !lower.ends_with(".sql") {
        return Err(RULE.into());
    }
    if !file_name.ends_with(".sql") {
        return Err(format!("the extension must be lowercase .sql; {RULE}"));
    }
    let stem = &file_name[..file_name.len() - 4];
    let (stem, down) = match stem.strip_suffix(".down") {
        Some(s) => (s, true),
        None => (stem, false),
    };
    let rest = stem.strip_prefix('V').ok_or_else(|| RULE.to_string())?;
    let (digits, name) = rest.split_once("__").ok_or_else(|| RULE.to_string())?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RULE.into());
    }
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(RULE.into());
    }
    let version: i32 = digits.parse().map_err(|_| {
        format!(
            "version {digits} does not fit in a 32-bit integer (at most {})",
            i32::MAX
        )
    })?;
    if version == 0 {
        return Err("version 0 is reserved for `base` (nothing applied); start at 1".into());
    }
    Ok(ParsedName {
        version,
        name: name.to_string(),
        down,
    })
}

/// A migration's name and path, by version.
type ByVersion = BTreeMap<i32, (String, PathBuf)>;

/// The `.sql` files of `dir`, sorted by name. A `.sql` entry that is not a regular file,
/// or whose name is not UTF-8, is added to `problems`; other files are ignored.
fn sql_file_names(dir: &Path, problems: &mut Vec<String>) -> Result<Vec<(String, PathBuf)>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::setup(format!(
            "cannot read migrations directory {}: {e}; pass --migrations DIR or set migrations.dir in the config",
            dir.display()
        ))
    })?;
    let mut names: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            Error::setup(format!(
                "cannot list migrations directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = entry.path();
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            if path
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("sql"))
            {
                problems.push(format!(
                    "{}: the file name is not valid UTF-8",
                    path.display()
                ));
            }
            continue;
        };
        if !file_name.to_ascii_lowercase().ends_with(".sql") {
            continue;
        }
        if !path.is_file() {
            problems.push(format!("{}: is not a regular file", path.display()));
            continue;
        }
        names.push((file_name.to_string(), path));
    }
    names.sort();
    Ok(names)
}

/// Sorts the files into up and down scripts by version. Misnamed files, duplicate
/// versions, and down scripts without a matching up file are added to `problems`.
fn pair_ups_and_downs(
    names: Vec<(String, PathBuf)>,
    problems: &mut Vec<String>,
) -> (ByVersion, ByVersion) {
    let mut ups = ByVersion::new();
    let mut downs = ByVersion::new();
    for (file_name, path) in names {
        match parse_file_name(&file_name) {
            Err(why) => problems.push(format!("{}: {why}", path.display())),
            Ok(parsed) => {
                let slot = if parsed.down { &mut downs } else { &mut ups };
                if let Some((_, other)) = slot.get(&parsed.version) {
                    problems.push(format!(
                        "{} and {} both have version {}; versions must be unique",
                        other.display(),
                        path.display(),
                        parsed.version
                    ));
                } else {
                    slot.insert(parsed.version, (parsed.name, path));
                }
            }
        }
    }
    for (version, (name, path)) in &downs {
        match ups.get(version) {
            None => problems.push(format!(
                "{}: down script without its up file V{version}__{name}.sql",
                path.display()
            )),
            Some((up_name, _)) if up_name != name => problems.push(format!(
                "{}: its name does not match the up file V{version}__{up_name}.sql",
                path.display()
            )),
            Some(_) => {}
        }
    }
    (ups, downs)
}

/// Reads one migration and its down script. A file that cannot be read is an error at
/// once; one that cannot run as psql would is added to `problems`, so every such file is
/// reported together.
fn read_migration(
    version: i32,
    name: String,
    up_path: PathBuf,
    down_path: Option<PathBuf>,
    problems: &mut Vec<String>,
) -> Result<MigrationFile, Error> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map_err(|e| Error::setup(format!("cannot read {} as UTF-8 text: {e}", p.display())))
    };
    let up_sql = read(&up_path)?;
    let down_sql = down_path.as_deref().map(read).transpose()?;
    let checksum = refinery::Migration::unapplied(&format!("V{version}__{name}"), &up_sql)
        .map_err(|e| Error::setup(format!("{}: {e}", up_path.display())))?
        .checksum();
    let mut parsed = |p: &Path, sql: &str| {
        parse_script(p, sql).unwrap_or_else(|e| {
            problems.push(e);
            empty_script()
        })
    };
    let up = parsed(&up_path, &up_sql);
    let down = match (&down_path, &down_sql) {
        (Some(p), Some(sql)) => Some(parsed(p, sql)),
        _ => None,
    };
    if let (Some(p), Some(down)) = (&down_path, &down) {
        if down.requires_shared.is_some() {
            problems.push(format!(
                "{}: `{}` belongs in the up file: a down script always runs",
                p.display(),
                statements::REQUIRES_SHARED
            ));
        }
    }
    Ok(MigrationFile {
        version,
        name,
        up_path,
        up_sql,
        up,
        down_path,
        down_sql,
        down,
        checksum,
    })
}

impl MigrationSet {
    /// A set with no migrations, for commands that need none (provisioning, listing).
    pub fn empty(dir: PathBuf) -> MigrationSet {
        MigrationSet {
            dir,
            files: Vec::new(),
        }
    }

    /// Loads and validates a migrations directory. Errors are setup errors (exit 3) that
    /// name the file and the rule.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let mut problems = Vec::new();
        let names = sql_file_names(dir, &mut problems)?;
        let (ups, mut downs) = pair_ups_and_downs(names, &mut problems);
        if !problems.is_empty() {
            return Err(Error::setup(format!(
                "the migrations directory {} is invalid; nothing was run:\n  {}",
                dir.display(),
                problems.join("\n  ")
            )));
        }
        let mut files = Vec::with_capacity(ups.len());
        for (version, (name, up_path)) in ups {
            let down_path = downs.remove(&version).map(|(_, p)| p);
            files.push(read_migration(
                version,
                name,
                up_path,
                down_path,
                &mut problems,
            )?);
        }
        if !problems.is_empty() {
            return Err(Error::setup(format!(
                "migration files that tenantctl cannot run as psql would; nothing was run:\n  {}",
                problems.join("\n  ")
            )));
        }
        Ok(MigrationSet {
            dir: dir.to_path_buf(),
            files,
        })
    }

    /// Checks this (tenant) set's `-- tenantctl: requires shared N` directives against
    /// the shared migrations: each `N` must be one of them. A setup error (exit 3) names
    /// every file that fails.
    pub fn check_requires(&self, shared: Option<&MigrationSet>) -> Result<(), Error> {
        let mut problems = Vec::new();
        for f in &self.files {
            let Some(n) = f.up.requires_shared else {
                continue;
            };
            match shared {
                None => problems.push(format!(
                    "{}: requires shared revision {n}, but there is no shared schema: create the folder `shared` in the migrations directory, or set [shared] dir in the config",
                    f.up_path.display()
                )),
                Some(set) if set.get(n).is_none() => problems.push(format!(
                    "{}: requires shared revision {n}, which {} does not have (its head is {})",
                    f.up_path.display(),
                    set.dir.display(),
                    crate::show::revision(Some(set.head()).filter(|h| *h > 0))
                )),
                Some(_) => {}
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::setup(format!(
            "the migrations' shared requirements cannot be met; nothing was run:\n  {}",
            problems.join("\n  ")
        )))
    }

    /// Refuses a (shared) set whose files carry `-- tenantctl: requires shared N`: a
    /// shared migration is ordered by its version alone.
    pub fn refuse_requires(&self) -> Result<(), Error> {
        let problems: Vec<String> = self
            .files
            .iter()
            .filter(|f| f.up.requires_shared.is_some())
            .map(|f| {
                format!(
                    "{}: `{}` is for tenant migrations; a shared migration is ordered by its version",
                    f.up_path.display(),
                    statements::REQUIRES_SHARED
                )
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::setup(format!(
            "shared migrations that tenantctl cannot run; nothing was run:\n  {}",
            problems.join("\n  ")
        )))
    }

    /// The highest version, or 0 when there are no migrations.
    pub fn head(&self) -> i32 {
        self.files.last().map_or(0, |f| f.version)
    }

    /// The migration with this version.
    pub fn get(&self, version: i32) -> Option<&MigrationFile> {
        self.files.iter().find(|f| f.version == version)
    }
}

/// One row of a tenant's history table, as read (not yet trusted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRow {
    /// The applied version.
    pub version: i32,
    /// The recorded name.
    pub name: String,
    /// When it was applied (RFC 3339, as refinery writes it).
    pub applied_on: String,
    /// The recorded checksum.
    pub checksum: u64,
}

/// A problem between a tenant's history and the files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Drift {
    /// An applied migration whose file has since changed (name or content).
    Divergent {
        /// The version.
        version: i32,
        /// The file it no longer matches.
        file: String,
    },
    /// An applied version that no longer has a file.
    Missing {
        /// The version.
        version: i32,
        /// The recorded name.
        name: String,
    },
    /// A file older than the tenant's current revision that was never applied.
    OutOfOrder {
        /// The version.
        version: i32,
        /// The file.
        file: String,
    },
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Drift::Divergent { version, file } => write!(f, "version {version} is divergent: {file} was changed after it was applied"),
            Drift::Missing { version, name } => write!(f, "version {version} (V{version}__{name}) is applied but its file is missing"),
            Drift::OutOfOrder { version, file } => write!(f, "version {version} ({file}) was never applied but is older than the current revision"),
        }
    }
}

/// A tenant's history compared with the files.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The highest applied version, `None` when nothing is applied.
    pub current: Option<i32>,
    /// Files newer than `current`, in order: what an upgrade to head would apply.
    pub pending: Vec<i32>,
    /// Divergent, missing and out-of-order migrations.
    pub drift: Vec<Drift>,
}

/// Compares applied rows with the files, with refinery's rules.
pub fn compare(applied: &[AppliedRow], set: &MigrationSet) -> Comparison {
    let current = applied.iter().map(|r| r.version).max();
    let mut drift = Vec::new();
    for row in applied {
        match set.get(row.version) {
            None => drift.push(Drift::Missing {
                version: row.version,
                name: row.name.clone(),
            }),
            Some(f) if f.name != row.name || f.checksum != row.checksum => {
                drift.push(Drift::Divergent {
                    version: row.version,
                    file: f.up_path.display().to_string(),
                })
            }
            Some(_) => {}
        }
    }
    let mut pending = Vec::new();
    for f in &set.files {
        if applied.iter().any(|r| r.version == f.version) {
            continue;
        }
        if current.is_some_and(|c| f.version < c) {
            drift.push(Drift::OutOfOrder {
                version: f.version,
                file: f.up_path.display().to_string(),
            });
        } else {
            pending.push(f.version);
        }
    }
    Comparison {
        current,
        pending,
        drift,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, sql) in files {
            fs::write(d.path().join(name), sql).unwrap();
        }
        d
    }

    #[test]
    fn parses_valid_names() {
        assert_eq!(
            parse_file_name("V12__add_members.sql").unwrap(),
            ParsedName {
                version: 12,
                name: "add_members".into(),
                down: false
            }
        );
        assert!(parse_file_name("V3__x.down.sql").unwrap().down);
    }

    #[test]
    fn refuses_misnamed_files() {
        for bad in [
            "V1_x.sql",
            "v1__x.sql",
            "V__x.sql",
            "V1__.sql",
            "V1__a-b.sql",
            "V1__a b.sql",
            "V0__zero.sql",
            "U1__x.sql",
            "V1.5__x.sql",
            "V99999999999__big.sql",
            "init.sql",
            "V1__x.SQL",
            "V1__x.up.sql",
            "V1__é.sql",
        ] {
            assert!(parse_file_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loads_sorted_with_downs_and_ignores_other_files() {
        let d = dir_with(&[
            ("V2__b.sql", "select 2;"),
            ("V10__c.sql", "select 10;"),
            ("V1__a.sql", "select 1;"),
            ("V1__a.down.sql", "select -1;"),
            ("README.md", "notes"),
            (".gitkeep", ""),
        ]);
        let set = MigrationSet::load(d.path()).unwrap();
        let versions: Vec<i32> = set.files.iter().map(|f| f.version).collect();
        assert_eq!(versions, [1, 2, 10]);
        assert!(set.files[0].down_path.is_some());
        assert!(set.files[1].down_path.is_none());
        assert_eq!(set.head(), 10);
        // Checksums are refinery's, so histories written by refinery compare equal.
        assert_eq!(
            set.files[0].checksum,
            refinery::Migration::unapplied("V1__a", "select 1;")
                .unwrap()
                .checksum()
        );
    }

    #[test]
    fn every_broken_directory_is_refused_with_all_problems_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("V1__a.sql", ""), ("V1__b.sql", "")],
                "both have version 1",
            ),
            (
                &[("V1__a.sql", ""), ("V01__a.sql", "")],
                "both have version 1",
            ),
            (&[("V2__a.down.sql", "")], "without its up file"),
            (
                &[("V2__a.sql", ""), ("V2__b.down.sql", "")],
                "does not match",
            ),
            (&[("create_members.sql", "")], "must be named"),
            (&[("V1__x.SQL", "")], "lowercase"),
        ];
        for (files, expected) in cases {
            let d = dir_with(files);
            let err = MigrationSet::load(d.path()).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Setup);
            assert!(
                err.to_string().contains(expected),
                "{err} should mention {expected}"
            );
        }
        let d = dir_with(&[]);
        fs::write(d.path().join("V1__bin.sql"), [0xff, 0xfe, 0x00]).unwrap();
        assert!(MigrationSet::load(d.path())
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));
        assert!(MigrationSet::load(&d.path().join("nope")).is_err());
    }

    #[test]
    fn files_that_cannot_run_as_psql_would_are_refused_with_file_and_line() {
        for (sql, expected) in [
            (
                "CREATE TABLE a ();\nCOMMIT;\n",
                "V1__a.sql:2: COMMIT is transaction control",
            ),
            ("SELECT 1;\n\nBEGIN;", "V1__a.sql:3: BEGIN"),
            ("start transaction;", "START TRANSACTION"),
            ("ROLLBACK;", "V1__a.sql:1: ROLLBACK"),
            ("SAVEPOINT s;", "SAVEPOINT"),
            (
                "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE;",
                "SET TRANSACTION",
            ),
            (
                "COPY t FROM STDIN;\n1\n\\.\n",
                "inline data is not supported",
            ),
            (
                "SELECT 1;\n\\i other.sql\n",
                "V1__a.sql:2: a psql meta-command",
            ),
            (
                "CREATE INDEX CONCURRENTLY i ON t (a);",
                "-- tenantctl: no-transaction",
            ),
            ("VACUUM t;", "VACUUM cannot run inside a transaction"),
            ("SELECT 'x", "unterminated quoted string"),
            (
                "-- tenantctl: no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);\nCOMMIT;",
                "V1__a.sql:3: COMMIT",
            ),
        ] {
            let d = dir_with(&[("V1__a.sql", sql)]);
            let err = MigrationSet::load(d.path()).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Setup, "{sql}");
            assert!(err.to_string().contains(expected), "{sql}: {err}");
        }
        // Down scripts are checked too, and every bad file is named.
        let d = dir_with(&[
            ("V1__a.sql", "SELECT 1;"),
            ("V1__a.down.sql", "DROP TABLE x;\nEND;"),
            ("V2__b.sql", "ABORT;"),
        ]);
        let err = MigrationSet::load(d.path()).unwrap_err().to_string();
        assert!(err.contains("V1__a.down.sql:2: END"), "{err}");
        assert!(err.contains("V2__b.sql:1: ABORT"), "{err}");
    }

    #[test]
    fn statements_are_stored_and_the_checksum_is_over_the_text_as_read() {
        let up = "\u{feff}-- tenantctl: no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);\n\nDO $$ BEGIN COMMIT; END $$;\n";
        let body = "CREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\nEND;\nSELECT 2;";
        let d = dir_with(&[
            ("V1__a.sql", up),
            ("V2__b.sql", body),
            ("V2__b.down.sql", "DROP FUNCTION f;"),
        ]);
        let set = MigrationSet::load(d.path()).unwrap();
        let a = &set.files[0];
        assert!(a.up.no_transaction);
        let lines: Vec<usize> = a.up.statements.iter().map(|s| s.line).collect();
        assert_eq!(lines, [2, 4]);
        assert_eq!(a.up_sql, up);
        assert_eq!(
            a.checksum,
            refinery::Migration::unapplied("V1__a", up)
                .unwrap()
                .checksum()
        );
        let b = &set.files[1];
        assert!(!b.up.no_transaction);
        assert_eq!(b.up.statements.len(), 2);
        assert_eq!(b.down.as_ref().unwrap().statements.len(), 1);
    }

    #[test]
    fn comparison_finds_pending_and_drift() {
        let d = dir_with(&[
            ("V1__a.sql", "1"),
            ("V2__b.sql", "2"),
            ("V3__c.sql", "3"),
            ("V4__d.sql", "4"),
        ]);
        let set = MigrationSet::load(d.path()).unwrap();
        let row = |v: i32| AppliedRow {
            version: v,
            name: set.get(v).unwrap().name.clone(),
            applied_on: "2026-01-01T00:00:00Z".into(),
            checksum: set.get(v).unwrap().checksum,
        };
        let clean = compare(&[row(1), row(2)], &set);
        assert_eq!(clean.current, Some(2));
        assert_eq!(clean.pending, [3, 4]);
        assert!(clean.drift.is_empty());

        let mut edited = row(1);
        edited.checksum ^= 1;
        let gone = AppliedRow {
            version: 9,
            name: "gone".into(),
            applied_on: String::new(),
            checksum: 0,
        };
        let c = compare(&[edited, row(3), gone], &set);
        assert_eq!(c.current, Some(9));
        assert!(c.pending.is_empty());
        assert!(matches!(c.drift[0], Drift::Divergent { version: 1, .. }));
        assert!(matches!(c.drift[1], Drift::Missing { version: 9, .. }));
        assert!(c
            .drift
            .iter()
            .any(|d| matches!(d, Drift::OutOfOrder { version: 2, .. })));

        let empty = compare(&[], &set);
        assert_eq!(empty.current, None);
        assert_eq!(empty.pending, [1, 2, 3, 4]);
    }
}
