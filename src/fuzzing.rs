//! The bodies of the fuzz targets in `fuzz/`, shared with `tests/suite/props.rs`.
//!
//! cargo-fuzz needs a nightly compiler; the property tests run on stable in every
//! `cargo test`. Keeping each target's body here means both exercise exactly the same
//! code and the same invariants. Every function panics when an invariant breaks (that is
//! how a fuzzer reports a finding) and returns what it computed so a property test can
//! check more. Not part of tenantctl's supported API: built only with the `fuzzing`
//! feature, which fuzz/ and the crate's own tests turn on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{self, Overrides, Settings};
use crate::error::{Error, ErrorKind};
use crate::files::migrations::{self, MigrationSet, ParsedName};
use crate::ident;

/// Longest file name written by [`migration_dir`], in bytes (Linux `NAME_MAX`).
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// Target `migration_name`: [`migrations::parse_file_name`] on arbitrary text.
///
/// Whatever it accepts has a positive version and a name of ASCII letters, digits and
/// `_`; formats back to the same file name, except for leading zeros in the version; and
/// is a name refinery accepts (the loader's `expect` relies on that).
pub fn migration_name(file_name: &str) -> Option<ParsedName> {
    let parsed = migrations::parse_file_name(file_name).ok()?;
    assert!(
        parsed.version > 0,
        "{file_name:?}: version {}",
        parsed.version
    );
    assert!(
        !parsed.name.is_empty()
            && parsed
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "{file_name:?}: name {:?}",
        parsed.name
    );
    let suffix = if parsed.down { ".down.sql" } else { ".sql" };
    let formatted = format!("V{}__{}{suffix}", parsed.version, parsed.name);
    assert_eq!(
        formatted,
        without_leading_zeros(file_name),
        "{file_name:?} does not re-format to itself"
    );
    assert_eq!(
        migrations::parse_file_name(&formatted).as_ref(),
        Ok(&parsed),
        "{formatted:?} parses differently from {file_name:?}"
    );
    let refinery_name = format!("V{}__{}", parsed.version, parsed.name);
    if let Err(e) = refinery::Migration::unapplied(&refinery_name, "") {
        panic!("{file_name:?} was accepted but refinery refuses {refinery_name:?}: {e}");
    }
    Some(parsed)
}

/// `V0042__x.sql` as `V42__x.sql`; other text unchanged.
fn without_leading_zeros(file_name: &str) -> String {
    match file_name.strip_prefix('V') {
        Some(rest) => {
            let trimmed = rest.trim_start_matches('0');
            if trimmed.starts_with(|c: char| c.is_ascii_digit()) {
                format!("V{trimmed}")
            } else {
                // All zeros: keep one so the version stays visible.
                format!("V0{trimmed}")
            }
        }
        None => file_name.to_string(),
    }
}

/// Makes `name` a single path component a file can have: `/` and NUL become `_`, it is
/// cut to [`MAX_FILE_NAME_BYTES`] on a character boundary, and `""`, `.` and `..` give
/// `None`.
pub fn sanitize_file_name(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len().min(MAX_FILE_NAME_BYTES));
    for c in name
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
    {
        if out.len() + c.len_utf8() > MAX_FILE_NAME_BYTES {
            break;
        }
        out.push(c);
    }
    match out.as_str() {
        "" | "." | ".." => None,
        _ => Some(out),
    }
}

/// Target `migration_dir`: writes the files (names through [`sanitize_file_name`], later
/// duplicates win) into a fresh temporary directory and runs [`MigrationSet::load`].
///
/// Loading returns, never panics. An error is a setup error (exit 3). A loaded set has
/// ascending positive versions; one migration per up file, with the text that was
/// written; down scripts only beside their up file; and names refinery accepts.
pub fn migration_dir(files: &[(String, Vec<u8>)]) -> Result<MigrationSet, Error> {
    let written: BTreeMap<String, &[u8]> = files
        .iter()
        .filter_map(|(name, body)| Some((sanitize_file_name(name)?, body.as_slice())))
        .collect();
    let dir = scratch_dir();
    for (name, body) in &written {
        let path = dir.path().join(name);
        if let Err(e) = std::fs::write(&path, body) {
            panic!("cannot write {}: {e}", path.display());
        }
    }
    let result = MigrationSet::load(dir.path());
    match &result {
        Err(e) => assert_eq!(e.kind(), ErrorKind::Setup, "load failed with {e}"),
        Ok(set) => check_loaded(set, dir.path(), &written),
    }
    result
}

fn check_loaded(set: &MigrationSet, dir: &Path, written: &BTreeMap<String, &[u8]>) {
    assert_eq!(set.dir, dir);
    let sql_files: Vec<&String> = written
        .keys()
        .filter(|n| n.to_ascii_lowercase().ends_with(".sql"))
        .collect();
    let ups = sql_files
        .iter()
        .filter(|n| !n.ends_with(".down.sql"))
        .count();
    assert_eq!(set.files.len(), ups, "one migration per up file");
    let downs = set.files.iter().filter(|f| f.down_path.is_some()).count();
    assert_eq!(ups + downs, sql_files.len(), "every .sql file is used");
    let mut previous = 0;
    for f in &set.files {
        assert!(
            f.version > previous,
            "versions ascend: {} after {previous}",
            f.version
        );
        previous = f.version;
        let up_name = file_name_of(&f.up_path);
        let parsed = migrations::parse_file_name(up_name).expect("loaded up file name parses");
        assert_eq!(
            (parsed.version, parsed.name.as_str(), parsed.down),
            (f.version, f.name.as_str(), false)
        );
        assert_eq!(
            f.up_sql.as_bytes(),
            written[up_name],
            "{up_name}: text as written"
        );
        if let Some(down_path) = &f.down_path {
            let down_name = file_name_of(down_path);
            let parsed =
                migrations::parse_file_name(down_name).expect("loaded down file name parses");
            assert_eq!(
                (parsed.version, parsed.name.as_str(), parsed.down),
                (f.version, f.name.as_str(), true)
            );
            let down_sql = f.down_sql.as_deref().expect("down text with down path");
            assert_eq!(
                down_sql.as_bytes(),
                written[down_name],
                "{down_name}: text as written"
            );
        } else {
            assert!(f.down_sql.is_none());
        }
        let migration = f.to_refinery();
        assert_eq!(migration.checksum(), f.checksum);
    }
}

fn file_name_of(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("loaded paths end in a UTF-8 file name")
}

/// A fresh directory under the system temporary directory, removed on drop.
fn scratch_dir() -> tempfile::TempDir {
    match tempfile::Builder::new().prefix("tenantctl-fuzz-").tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("cannot create a temporary directory: {e}"),
    }
}

/// Target `config`: [`config::parse_file`] on arbitrary text, then [`config::resolve`]
/// with no flags and an empty environment. `None` when the text does not parse.
///
/// Resolving either fails with a setup error (exit 3) or gives settings that pass the
/// same checks the commands rely on: valid registry schema, history table and search
/// path schemas, a prefix of at most 40 bytes, concurrency 1 to 1024; and `config show`
/// can describe them.
pub fn config(text: &str) -> Option<Result<Settings, Error>> {
    let file = match config::parse_file(text) {
        Ok(file) => file,
        Err(message) => {
            assert!(!message.is_empty(), "{text:?}: empty parse error");
            return None;
        }
    };
    let result = config::resolve(
        &Overrides::default(),
        &|_| None,
        Path::new("/fuzz"),
        Some((PathBuf::from("/fuzz/tenants.toml"), file)),
    );
    match &result {
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::Setup,
            "{text:?}: resolve failed with {e}"
        ),
        Ok(s) => {
            assert!(ident::validate_registry_schema(&s.registry_schema).is_ok());
            assert!(ident::validate_identifier(&s.history_table, "history table").is_ok());
            for schema in &s.extra_search_path {
                assert!(ident::validate_identifier(schema, "schema").is_ok());
            }
            assert!(s.schema_prefix.len() <= 40, "{:?}", s.schema_prefix);
            assert!((1..=1024).contains(&s.concurrency), "{}", s.concurrency);
            assert_eq!(
                config::describe(
                    s,
                    "postgres://x@h:5432/d",
                    &config::TlsShown::from_settings(s)
                )
                .len(),
                config::KEY_COUNT
            );
            if let Some(shared) = &s.shared {
                assert!(ident::validate_identifier(&shared.schema, "schema").is_ok());
                assert!(!shared.schema.starts_with("pg_"), "{:?}", shared.schema);
            }
            let (low, high) = config::READ_TIMEOUT_RANGE;
            assert!(
                (low..=high).contains(&s.read_timeout),
                "{:?}",
                s.read_timeout
            );
            // Every duration is in its range, which every instant can take.
            let mut durations = vec![
                (config::CONNECT_TIMEOUT_RANGE, s.connect_timeout),
                (config::PG_TIMEOUT_RANGE, s.lock_timeout),
                (config::PG_TIMEOUT_RANGE, s.statement_timeout),
                (config::PG_TIMEOUT_RANGE, s.lock_wait),
                (config::LOCK_RETRY_DELAY_RANGE, s.lock_retry_delay),
                (config::READ_TIMEOUT, s.read_timeout),
            ];
            for server in &s.servers {
                durations.push((config::CONNECT_TIMEOUT_RANGE, server.connect_timeout));
            }
            for (range, d) in durations {
                assert!(range.contains(d), "{text:?}: {d:?} is outside {range:?}");
                assert!(
                    std::time::Instant::now().checked_add(d).is_some(),
                    "{text:?}: {d:?} overflows an instant"
                );
            }
            for (tenant_type, tenant) in &s.templates {
                assert!(ident::validate_tenant_type(tenant_type).is_ok());
                assert!(!tenant.trim().is_empty());
            }
        }
    }
    Some(result)
}
