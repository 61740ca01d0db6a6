//! Property tests for every parser that untrusted input reaches: names (domains, schema
//! names, identifier quoting), migration file names and directories, the config file,
//! durations and database URLs.
//!
//! Generated inputs lean towards hostile content: quotes, `;`, `--`, `$$`, backslashes,
//! NUL, unicode, uppercase, whitespace, `pg_` prefixes and names around PostgreSQL's
//! 63-byte limit. Names that validation accepts are round-tripped through a real
//! PostgreSQL server (one test database and one connection per test function). The
//! bodies of the cargo-fuzz targets in `fuzz/` live in `tenantctl::fuzzing` and run here
//! too, so the same checks run on stable in every `cargo test`.

use crate::support;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use tenantctl::config::{self, Overrides};
use tenantctl::files::migrations::{parse_file_name, ParsedName};
use tenantctl::fuzzing;
use tenantctl::ident::{self, quote, MAX_IDENT_BYTES};
use tenantctl::pg::db::Target;
use tenantctl::ErrorKind;

use support::TestDb;

/// `cases` cases per property, replaying first the seeds of past failures kept next to
/// this file in `props.proptest-regressions` (proptest's default would look for them in
/// a `proptest-regressions/` directory beside the one holding the suite's `main.rs`).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// Fragments that break naive quoting, validation or terminal output.
fn hostile_piece() -> impl Strategy<Value = String> {
    let fixed = select(vec![
        "\"",
        "\"\"",
        "'",
        "''",
        ";",
        "--",
        "/*",
        "*/",
        "$$",
        "$x$",
        "\\",
        "\\\"",
        "\0",
        " ",
        "\t",
        "\n",
        "\r",
        "\u{b}",
        "\u{7f}",
        "\u{85}",
        "\u{a0}",
        "\u{200b}",
        "\u{202e}",
        "\u{feff}",
        "pg_",
        "PG_",
        "public",
        "information_schema",
        "U&",
        "e'",
        "é",
        "ß",
        "İ",
        "K",
        "ſ",
        "😀",
        "Ω",
        "-",
        ".",
        "_",
        "0",
        "9",
        "A",
        "Z",
        "a",
        "z",
        "x;drop table t",
    ])
    .prop_map(str::to_string);
    prop_oneof![
        4 => fixed,
        2 => "[a-z0-9_]{1,8}",
        1 => "[A-Z]{1,3}",
        1 => any::<char>().prop_map(String::from),
    ]
}

/// Strings built from hostile fragments, or long runs around the 63-byte limit.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => vec(hostile_piece(), 0..8).prop_map(|v| v.concat()),
        1 => ("[a-z_0-9é\"]", 50usize..80).prop_map(|(c, n)| c.repeat(n)),
        1 => "[a-z_][a-z0-9_]{58,68}",
        1 => "(pg_|PG_|Pg_|pg)[a-z0-9_]{0,10}",
        1 => (1usize..20_000).prop_map(|n| "a".repeat(n)),
    ]
}

/// Candidate schema names: many valid ones, many hostile ones, and anything at all.
fn schema_names() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z_][a-z0-9_]{0,62}",
        3 => hostile(),
        1 => any::<String>(),
        1 => "\\PC{0,70}",
    ]
}

/// Candidate domains: many valid ones, many hostile ones, and anything at all.
fn domains() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9][a-z0-9-]{0,62}",
        1 => "[0-9]{1,10}",
        1 => "[a-z0-9-]{0,70}",
        3 => hostile(),
        1 => any::<String>(),
    ]
}

/// Any string that may be an identifier: no NUL, 0 to 63 bytes, hostile-biased.
fn quotable() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => hostile(),
        2 => any::<String>(),
        1 => "\\PC{0,63}",
    ]
    .prop_map(|s| truncate(&s.replace('\0', ""), MAX_IDENT_BYTES))
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// Runs `test` on `cases` generated values with a plain runner, so the test can hold one
/// database connection across cases; panics with the minimal failing input.
fn run_cases<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------
// Names against a real server
// ---------------------------------------------------------------------------------------

/// Every schema in the database, name as raw UTF-8 bytes.
fn schemas(client: &mut postgres::Client) -> BTreeSet<Vec<u8>> {
    client
        .query(
            "SELECT convert_to(nspname::text, 'UTF8') FROM pg_namespace",
            &[],
        )
        .expect("list schemas")
        .iter()
        .map(|r| r.get::<_, Vec<u8>>(0))
        .collect()
}

/// Creates schema `name` through [`quote`] with the simple query protocol (which would
/// run a second statement if quoting let one through), checks that exactly one schema
/// named `name` byte for byte appeared, drops it and checks it is gone.
fn round_trip_schema(client: &mut postgres::Client, name: &str) -> Result<(), TestCaseError> {
    let before = schemas(client);
    let created = client.batch_execute(&format!("CREATE SCHEMA {}", quote(name)));
    let after = schemas(client);
    // Clean up before asserting, so one failure does not cascade into the next cases.
    let dropped = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {}", quote(name)));
    let after_drop = schemas(client);
    prop_assert!(
        created.is_ok(),
        "CREATE SCHEMA {}: {:?}",
        quote(name),
        created
    );
    let new: Vec<&Vec<u8>> = after.difference(&before).collect();
    let expected = name.as_bytes().to_vec();
    prop_assert_eq!(new, vec![&expected], "new schemas");
    prop_assert!(
        dropped.is_ok(),
        "DROP SCHEMA {}: {:?}",
        quote(name),
        dropped
    );
    prop_assert_eq!(after_drop, before, "schemas after DROP");
    Ok(())
}

#[test]
fn schema_names_are_refused_or_round_trip_through_postgres() {
    let db = TestDb::new();
    let client = RefCell::new(db.client());
    run_cases(400, schema_names(), |s| {
        match ident::validate_schema_name(&s, "public") {
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::Invalid, "{}", e),
            Ok(()) => round_trip_schema(&mut client.borrow_mut(), &s)?,
        }
        Ok(())
    });
}

#[test]
fn domains_are_refused_or_their_schema_round_trips_through_postgres() {
    let db = TestDb::new();
    let client = RefCell::new(db.client());
    run_cases(400, domains(), |d| {
        if let Err(e) = ident::validate_domain(&d) {
            prop_assert_eq!(e.kind(), ErrorKind::Invalid, "{}", e);
            return Ok(());
        }
        match ident::schema_for_domain("tenant_", &d, "public") {
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::Invalid, "{}", e),
            Ok(schema) => {
                prop_assert_eq!(&schema, &format!("tenant_{}", d.replace('-', "_")));
                round_trip_schema(&mut client.borrow_mut(), &schema)?;
            }
        }
        Ok(())
    });
}

#[test]
fn quoted_identifiers_are_exactly_one_identifier() {
    let db = TestDb::new();
    let client = RefCell::new(db.client());
    run_cases(400, quotable(), |s| {
        let client = &mut *client.borrow_mut();
        let q = quote(&s);
        if s.is_empty() {
            // PostgreSQL has no empty identifier: `""` must be a syntax error, not
            // something else.
            let err = client
                .query(&format!("SELECT 1 AS {q}"), &[])
                .expect_err("an empty quoted identifier is a syntax error");
            prop_assert_eq!(err.code(), Some(&postgres::error::SqlState::SYNTAX_ERROR));
            return Ok(());
        }
        // As an alias: one column, named exactly `s`.
        let rows = client
            .query(&format!("SELECT 1 AS {q}"), &[])
            .map_err(|e| TestCaseError::fail(format!("SELECT 1 AS {q}: {e}")))?;
        prop_assert_eq!(rows.len(), 1);
        prop_assert_eq!(rows[0].columns().len(), 1);
        prop_assert_eq!(rows[0].columns()[0].name(), s.as_str());
        // Followed by another column: still exactly two.
        let rows = client
            .query(&format!("SELECT 1 AS {q}, 2"), &[])
            .map_err(|e| TestCaseError::fail(format!("SELECT 1 AS {q}, 2: {e}")))?;
        let names: Vec<&str> = rows[0].columns().iter().map(|c| c.name()).collect();
        prop_assert_eq!(names, vec![s.as_str(), "?column?"]);
        // Through the simple protocol, which runs every statement it is given: one
        // statement, one row of two columns.
        let messages = client
            .simple_query(&format!("SELECT 1 AS {q}, 2"))
            .map_err(|e| TestCaseError::fail(format!("simple SELECT 1 AS {q}, 2: {e}")))?;
        let mut rows = 0;
        let mut completions = 0;
        for m in &messages {
            match m {
                postgres::SimpleQueryMessage::Row(r) => {
                    rows += 1;
                    prop_assert_eq!(r.columns().len(), 2);
                    prop_assert_eq!(r.columns()[0].name(), s.as_str());
                }
                postgres::SimpleQueryMessage::CommandComplete(_) => completions += 1,
                _ => {}
            }
        }
        prop_assert_eq!((rows, completions), (1, 1));
        // As a reference: `SELECT {q}` names the one column called `s`.
        let rows = client
            .query(&format!("SELECT {q} FROM (SELECT 7 AS {q}) AS t"), &[])
            .map_err(|e| TestCaseError::fail(format!("SELECT {q} FROM ...: {e}")))?;
        prop_assert_eq!(rows[0].columns().len(), 1);
        prop_assert_eq!(rows[0].get::<_, i32>(0), 7);
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// Names, pure
// ---------------------------------------------------------------------------------------

fn is_plain_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && s.len() <= MAX_IDENT_BYTES
}

fn any_name() -> impl Strategy<Value = String> {
    prop_oneof![schema_names(), domains()]
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn accepted_identifiers_and_schema_names_are_plain(s in any_name(), registry in any_name()) {
        match ident::validate_identifier(&s, "name") {
            Ok(()) => prop_assert!(is_plain_identifier(&s), "{:?}", s),
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::Invalid),
        }
        match ident::validate_schema_name(&s, &registry) {
            Ok(()) => {
                prop_assert!(is_plain_identifier(&s), "{:?}", s);
                prop_assert!(!s.starts_with("pg_"));
                prop_assert!(!["public", "information_schema", registry.as_str()].contains(&s.as_str()));
            }
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::Invalid),
        }
        match ident::validate_registry_schema(&s) {
            Ok(()) => {
                prop_assert!(is_plain_identifier(&s), "{:?}", s);
                prop_assert!(!s.starts_with("pg_") && s != "information_schema");
            }
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::Invalid),
        }
    }

    #[test]
    fn accepted_domains_are_plain(d in domains()) {
        match ident::validate_domain(&d) {
            Ok(()) => {
                let b = d.as_bytes();
                prop_assert!(b[0].is_ascii_lowercase() || b[0].is_ascii_digit(), "{:?}", d);
                prop_assert!(b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-'), "{:?}", d);
                prop_assert!(d.len() <= MAX_IDENT_BYTES);
                prop_assert!(!b.iter().all(u8::is_ascii_digit), "{:?}", d);
            }
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::Invalid),
        }
    }

    #[test]
    fn derived_schemas_are_valid_schema_names(prefix in prop_oneof!["[a-z_][a-z0-9_]{0,10}", hostile()], d in domains()) {
        if let Ok(schema) = ident::schema_for_domain(&prefix, &d, "public") {
            prop_assert!(ident::validate_schema_name(&schema, "public").is_ok());
            prop_assert_eq!(schema, format!("{prefix}{}", d.replace('-', "_")));
        }
    }

    #[test]
    fn shown_values_are_bounded_and_free_of_control_characters(s in prop_oneof![hostile(), any::<String>()]) {
        let out = ident::shown(&s);
        prop_assert!(!out.chars().any(char::is_control), "{:?}", out);
        // 80 characters, each escaped to at most 10 (`\u{10ffff}`), the quotes and `…`.
        prop_assert!(out.chars().count() <= 80 * 10 + 3, "{}", out.len());
    }
}

// ---------------------------------------------------------------------------------------
// Migration file names and directories
// ---------------------------------------------------------------------------------------

/// Candidate migration file names: near-misses of the rule and anything at all.
fn file_names() -> impl Strategy<Value = String> {
    let prefix = select(vec!["V", "V", "V", "v", "U", "", "VV", " V", "V-"]);
    let digits = prop_oneof![
        4 => "[0-9]{1,4}",
        1 => "0{1,30}[1-9]{1,3}",
        1 => "0{1,5}",
        1 => select(vec!["2147483647", "2147483648", "4294967296", "99999999999999999999", "-1", "+1", "１", "٣", " 1", "1 "]).prop_map(str::to_string),
    ];
    let sep = select(vec!["__", "__", "__", "_", "___", "", "--", "__ "]);
    let name = prop_oneof![
        4 => "[A-Za-z0-9_]{1,20}",
        1 => hostile(),
        1 => select(vec!["", "a.b", "é", "a b", "x.down", "a/b", "..", "a__b", "_"]).prop_map(str::to_string),
    ];
    let suffix = select(vec![
        ".sql",
        ".sql",
        ".down.sql",
        ".down.sql",
        ".SQL",
        ".Sql",
        ".down.SQL",
        ".DOWN.sql",
        ".sql.bak",
        "",
        ".sq",
        ".down",
        ".down.down.sql",
        "sql",
        ".sql ",
    ]);
    prop_oneof![
        6 => (prefix, digits, sep, name, suffix).prop_map(|(p, d, s, n, x)| format!("{p}{d}{s}{n}{x}")),
        1 => any::<String>(),
        1 => hostile(),
    ]
}

proptest! {
    #![proptest_config(config(3000))]

    /// The `migration_name` fuzz target: never panics; what it accepts formats back to
    /// the same file name, except for leading zeros in the version; version > 0.
    #[test]
    fn migration_file_names_parse_or_are_refused(name in file_names()) {
        fuzzing::migration_name(&name);
    }

    #[test]
    fn well_formed_names_always_parse(version in 1..=i32::MAX, zeros in 0usize..5, name in "[A-Za-z0-9_]{1,40}", down: bool) {
        let suffix = if down { ".down.sql" } else { ".sql" };
        let file = format!("V{}{version}__{name}{suffix}", "0".repeat(zeros));
        prop_assert_eq!(parse_file_name(&file), Ok(ParsedName { version, name, down }));
    }

    #[test]
    fn versions_outside_1_to_i32_max_are_refused(version in prop_oneof![Just(0u64), (i32::MAX as u64 + 1)..=u64::MAX], down: bool) {
        let suffix = if down { ".down.sql" } else { ".sql" };
        let file = format!("V{version}__x{suffix}");
        prop_assert!(parse_file_name(&file).is_err(), "{} accepted", file);
    }
}

/// Contents of a generated migrations directory: (file name, bytes).
fn migration_files() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop_oneof![
        6 => (1u8..5, select(vec!["a", "b", "init"]), select(vec![".sql", ".sql", ".down.sql", ".down.sql", ".SQL", ".sql.bak"]))
            .prop_map(|(v, n, s)| format!("V{v}__{n}{s}")),
        1 => select(vec!["README.md", ".gitkeep", "V1__a.sql/x", "../V1__a.sql", ".", "..", "", "a\0b.sql"]).prop_map(str::to_string),
        2 => file_names(),
        1 => any::<String>(),
    ];
    let body = prop_oneof![
        4 => select(vec!["", "CREATE TABLE t (id int);", "SELECT 1;\n", "-- é\n"]).prop_map(|s| s.as_bytes().to_vec()),
        1 => vec(any::<u8>(), 0..64),
        1 => Just(vec![0xff, 0xfe, b'x']),
    ];
    let noise = vec((name, body.clone()), 0..8);
    // Well-formed directories (distinct versions, downs beside their ups) with a little
    // noise, so that loading succeeds often enough to check what it returns.
    let consistent = (
        vec((1i32..40, "[A-Za-z0-9_]{1,8}", any::<bool>(), body), 0..6),
        vec((file_names(), Just(b"SELECT 1;".to_vec())), 0..2),
    )
        .prop_map(|(migrations, extra)| {
            let mut seen = BTreeSet::new();
            let mut files = Vec::new();
            for (v, name, down, body) in migrations {
                if seen.insert(v) {
                    files.push((format!("V{v}__{name}.sql"), body.clone()));
                    if down {
                        files.push((format!("V{v}__{name}.down.sql"), body));
                    }
                }
            }
            files.extend(extra);
            files
        });
    prop_oneof![1 => noise, 2 => consistent]
}

/// Whether the loader should accept these files: every `.sql` name parses, versions are
/// unique among ups and among downs, each down has its up with the same name, and every
/// `.sql` file is UTF-8 and splits into statements tenantctl can run.
fn loader_should_accept(files: &[(String, Vec<u8>)]) -> bool {
    let written: BTreeMap<String, &Vec<u8>> = files
        .iter()
        .filter_map(|(n, b)| Some((fuzzing::sanitize_file_name(n)?, b)))
        .collect();
    let mut ups = BTreeMap::new();
    let mut downs = BTreeMap::new();
    for (name, body) in &written {
        if !name.to_ascii_lowercase().ends_with(".sql") {
            continue;
        }
        let Ok(p) = parse_file_name(name) else {
            return false;
        };
        let Ok(text) = std::str::from_utf8(body) else {
            return false;
        };
        // The statements must be ones tenantctl can run (checked by the splitter's own
        // tests and against psql in tests/suite/psql_split.rs).
        if tenantctl::files::migrations::parse_script(Path::new(name), text).is_err() {
            return false;
        }
        let slot = if p.down { &mut downs } else { &mut ups };
        if slot.insert(p.version, p.name).is_some() {
            return false;
        }
    }
    downs.iter().all(|(v, n)| ups.get(v) == Some(n))
}

proptest! {
    #![proptest_config(config(400))]

    /// The `migration_dir` fuzz target, plus a model of which directories load.
    #[test]
    fn migration_directories_load_or_are_refused(files in migration_files()) {
        let result = fuzzing::migration_dir(&files);
        prop_assert_eq!(result.is_ok(), loader_should_accept(&files), "{:?}", result.err().map(|e| e.to_string()));
    }

    #[test]
    fn sanitized_file_names_are_one_path_component(name in prop_oneof![any::<String>(), hostile(), "[./\0a]{0,6}"]) {
        if let Some(s) = fuzzing::sanitize_file_name(&name) {
            let components: Vec<_> = Path::new(&s).components().collect();
            prop_assert_eq!(components.len(), 1, "{:?}", s);
            prop_assert!(matches!(components[0], std::path::Component::Normal(_)), "{:?}", s);
            prop_assert!(!s.contains('\0') && s.len() <= fuzzing::MAX_FILE_NAME_BYTES);
        }
    }
}

/// SQL-ish text: keywords, quotes, dollar signs, comments, parentheses and semicolons.
fn sqlish() -> impl Strategy<Value = String> {
    let piece = select(vec![
        "SELECT ",
        "CREATE ",
        "FUNCTION ",
        "BEGIN ",
        "ATOMIC ",
        "END",
        "CASE ",
        "x ",
        "'",
        "''",
        "E'",
        "\\",
        "\"",
        "$$",
        "$a$",
        "$1",
        "--",
        "/*",
        "*/",
        "(",
        ")",
        ";",
        "\n",
        " ",
        "é",
        "\u{feff}",
    ]);
    prop_oneof![
        3 => vec(piece, 0..40).prop_map(|v| v.concat()),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    /// Splitting never panics; statements come from the file, in order, on ascending
    /// lines, never empty, and splitting one statement's text again gives it back.
    #[test]
    fn splitting_returns_pieces_of_the_file_in_order(text in sqlish()) {
        if let Ok(statements) = tenantctl::files::statements::split(&text) {
            let mut from = 0;
            let mut line = 1;
            for s in &statements {
                // The text occurs after the previous statement, starting on its line.
                let start = text[from..]
                    .match_indices(s.text.as_str())
                    .map(|(i, _)| from + i)
                    .find(|i| text[..*i].matches('\n').count() + 1 == s.line);
                prop_assert!(start.is_some(), "{:?} (line {}) not found after byte {} of {:?}", s.text, s.line, from, text);
                let start = start.unwrap();
                prop_assert!(s.line >= line);
                // Whitespace as psql knows it: U+2000 alone is a statement (the server
                // refuses it), as psql would send it.
                prop_assert!(!s.text.trim_matches([' ', '\t', '\n', '\r', '\x0c', '\x0b']).is_empty());
                line = s.line;
                from = start + s.text.len();
                if s.text.starts_with('\u{feff}') {
                    continue; // read again, it would be a byte-order mark
                }
                let again = tenantctl::files::statements::split(&s.text);
                prop_assert!(again.is_ok());
                let again = again.unwrap();
                prop_assert_eq!(again.len(), 1, "{:?} splits into {:?}", s.text, again);
                prop_assert_eq!(&again[0].text, &s.text);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Config file, durations, database URLs
// ---------------------------------------------------------------------------------------

/// The known sections and keys of `tenants.toml`, with the kind of value each takes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Text,
    TextList,
    Count,
}

const KNOWN: &[(&str, &[(&str, Kind)])] = &[
    (
        "database",
        &[
            ("url", Kind::Text),
            ("sslmode", Kind::Text),
            ("sslrootcert", Kind::Text),
            ("connect_timeout", Kind::Text),
        ],
    ),
    ("registry", &[("schema", Kind::Text)]),
    ("migrations", &[("dir", Kind::Text), ("table", Kind::Text)]),
    ("shared", &[("dir", Kind::Text), ("schema", Kind::Text)]),
    (
        "tenants",
        &[
            ("schema_prefix", Kind::Text),
            ("extra_search_path", Kind::TextList),
        ],
    ),
    (
        "run",
        &[
            ("concurrency", Kind::Count),
            ("lock_timeout", Kind::Text),
            ("lock_retries", Kind::Count),
            ("lock_retry_delay", Kind::Text),
            ("statement_timeout", Kind::Text),
            ("lock_wait", Kind::Text),
            ("read_timeout", Kind::Text),
        ],
    ),
];

/// Plausible and hostile values for the text settings.
fn setting_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => select(vec!["public", "tenant_", "disable", "prefer", "require", "10s", "0", "1m 30s", "migrations", "refinery_schema_history", "postgres://u@h/db", "", " "]).prop_map(str::to_string),
        1 => "[a-z_][a-z0-9_]{0,70}",
        1 => "[0-9]{1,25}(ns|ms|s|m|h|d|y)?",
        2 => hostile(),
        1 => any::<String>(),
    ]
}

/// A correctly typed value for a known key.
fn known_value(kind: Kind) -> BoxedStrategy<toml::Value> {
    match kind {
        Kind::Text => setting_text().prop_map(toml::Value::String).boxed(),
        Kind::TextList => vec(setting_text().prop_map(toml::Value::String), 0..4)
            .prop_map(toml::Value::Array)
            .boxed(),
        Kind::Count => prop_oneof![0i64..2000, 0..=i64::MAX]
            .prop_map(toml::Value::Integer)
            .boxed(),
    }
}

/// Any TOML value, for unknown keys.
fn any_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        any::<String>().prop_map(toml::Value::String),
        any::<i64>().prop_map(toml::Value::Integer),
        any::<bool>().prop_map(toml::Value::Boolean),
        (-1e9f64..1e9).prop_map(toml::Value::Float),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(toml::Value::Array),
            vec(("[a-z]{1,5}", inner), 0..3)
                .prop_map(|kv| toml::Value::Table(kv.into_iter().collect())),
        ]
    })
}

/// Key names that are not in `known`: near-misses of known keys and anything else.
fn unknown_key(known: Vec<&'static str>) -> impl Strategy<Value = String> {
    let near_miss = (select(known.clone()), 0u8..6).prop_map(|(k, how)| match how {
        0 => k.to_uppercase(),
        1 => k.replace('_', "-"),
        2 => format!("{k} "),
        3 => format!("{k}s"),
        4 => format!("_{k}"),
        _ => k[..k.len() - 1].to_string(),
    });
    prop_oneof![
        2 => near_miss,
        1 => "[a-z_]{1,12}",
        1 => any::<String>(),
    ]
    .prop_filter("must not be a known key", move |k| {
        !known.contains(&k.as_str())
    })
}

/// One section: each known key absent or correctly typed, plus unknown keys.
fn section(
    keys: &'static [(&'static str, Kind)],
) -> impl Strategy<Value = (toml::Table, Vec<String>)> {
    let known: Vec<_> = keys
        .iter()
        .map(|&(k, kind)| proptest::option::of(known_value(kind)).prop_map(move |v| (k, v)))
        .collect();
    let names: Vec<&'static str> = keys.iter().map(|(k, _)| *k).collect();
    let unknown = prop_oneof![3 => Just(vec![]), 1 => vec((unknown_key(names), any_value()), 1..3)];
    (known, unknown).prop_map(|(known, unknown)| {
        let mut table = toml::Table::new();
        for (k, v) in known {
            if let Some(v) = v {
                table.insert(k.to_string(), v);
            }
        }
        let mut extra = Vec::new();
        for (k, v) in unknown {
            table.insert(k.clone(), v);
            extra.push(k);
        }
        (table, extra)
    })
}

/// A whole config: known sections (absent or generated) plus unknown top-level keys.
/// Returns the TOML text and the unknown keys it contains.
fn config_tables() -> impl Strategy<Value = (String, Vec<String>)> {
    let sections: Vec<_> = KNOWN
        .iter()
        .map(|&(name, keys)| proptest::option::of(section(keys)).prop_map(move |s| (name, s)))
        .collect();
    let section_names: Vec<&'static str> = KNOWN.iter().map(|(n, _)| *n).collect();
    let top_unknown =
        prop_oneof![3 => Just(vec![]), 1 => vec((unknown_key(section_names), any_value()), 1..3)];
    (sections, top_unknown).prop_map(|(sections, top_unknown)| {
        let mut root = toml::Table::new();
        let mut unknown = Vec::new();
        for (name, s) in sections {
            if let Some((table, extra)) = s {
                root.insert(name.to_string(), toml::Value::Table(table));
                unknown.extend(extra);
            }
        }
        for (k, v) in top_unknown {
            root.insert(k.clone(), v);
            unknown.push(k);
        }
        let text = toml::to_string(&root).expect("a table serialises");
        (text, unknown)
    })
}

/// Text that looks like TOML, to get past the first parse error now and then.
fn toml_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        select(vec![
            "[database]\n",
            "[run]\n",
            "[tenants]\n",
            "[[run]]\n",
            "[registry]\n",
            "[shared]\n",
            "[database.url]\n",
            "url = ",
            "concurrency = ",
            "extra_search_path = ",
            "schema = ",
            "\"",
            "'",
            "'''",
            "\"\"\"",
            "=",
            "[",
            "]",
            "{",
            "}",
            ",",
            "\n",
            "#",
            "1",
            "-1",
            "1e400",
            "9999999999999999999",
            "true",
            "1979-05-27T07:32:00Z",
            "\\u0000",
            "\\"
        ])
        .prop_map(str::to_string),
        hostile(),
    ];
    vec(piece, 0..20).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config(1500))]

    /// The `config` fuzz target on arbitrary and TOML-like text.
    #[test]
    fn config_text_parses_and_resolves_or_is_refused(text in prop_oneof![any::<String>(), toml_like(), hostile()]) {
        fuzzing::config(&text);
    }

    /// Unknown keys are always refused; correctly typed known keys alone always parse.
    #[test]
    fn unknown_config_keys_are_always_refused((text, unknown) in config_tables()) {
        match config::parse_file(&text) {
            Ok(_) => prop_assert!(unknown.is_empty(), "accepted unknown keys {:?} in:\n{}", unknown, text),
            Err(e) => {
                prop_assert!(!unknown.is_empty(), "refused only known keys: {}\n{}", e, text);
                prop_assert!(e.contains("unknown key"), "{}", e);
            }
        }
        // The fuzz target's checks on resolving hold for these too.
        fuzzing::config(&text);
    }

    #[test]
    fn durations_parse_or_are_refused(s in prop_oneof![
        any::<String>(),
        hostile(),
        "[0-9]{1,30} ?(nsec|ns|us|ms|s|sec|m|min|h|d|w|M|y|years)( [0-9]{1,25}[a-zA-Z]{1,5}){0,4}",
        select(vec!["18446744073709551615s", "18446744073709551616s", "584942417356y", "584942417355y 1s", "1000000000000000000000ns", "9223372036854775807d", " 0 ", "-1s", "+1s", "1.5s", "1e9s"]).prop_map(str::to_string),
    ]) {
        match config::parse_duration(&s) {
            Ok(d) => prop_assert!(s.trim() != "0" || d.is_zero()),
            Err(e) => prop_assert!(e.contains("is not a duration")),
        }
    }
}

/// Database URLs: URL and key=value forms with hostile parts and a recognisable password.
fn database_urls() -> impl Strategy<Value = String> {
    // Parts never hold the characters that end a URL part or a key=value pair, so a
    // `SECRET` in the output can only be the password.
    let part = || {
        prop_oneof![3 => "[a-z0-9._-]{0,12}", 1 => hostile()]
            .prop_map(|s| s.replace(['@', ':', '/', '?', '#'], ""))
    };
    let kv_part = || {
        prop_oneof![3 => "[a-z0-9._-]{1,12}", 1 => hostile()].prop_map(|s| {
            let s = s.replace(|c: char| c.is_whitespace() || "'\\=".contains(c), "");
            if s.is_empty() {
                "x".to_string()
            } else {
                s
            }
        })
    };
    let param = select(vec![
        "sslmode=disable",
        "sslmode=require",
        "sslmode=verify-full",
        "sslmode=",
        "sslrootcert=",
        "sslrootcert=/nonexistent/ca.pem",
        "application_name=x",
        "connect_timeout=-1",
        "connect_timeout=99999999999999999999",
        "host=",
        "port=0",
        "port=70000",
        "options=-c%20x",
        "&",
        "=",
        "%",
        "%zz",
        "target_session_attrs=read-write",
    ]);
    let password = "SECRET[A-Z0-9]{8}";
    prop_oneof![
        4 => (select(vec!["postgres://", "postgresql://", "postgres:/", "postgres://@", "mysql://", ""]),
              part(), password, part(), select(vec!["", ":5432", ":0", ":99999", ":x", ":"]), part(),
              vec(param.clone(), 0..4))
            .prop_map(|(scheme, user, pw, host, port, db, params)| {
                let query = if params.is_empty() { String::new() } else { format!("?{}", params.join("&")) };
                format!("{scheme}{user}:{pw}@{host}{port}/{db}{query}")
            }),
        2 => (kv_part(), password, kv_part(), kv_part())
            .prop_map(|(user, pw, host, db)| format!("host={host} user={user} password={pw} dbname={db}")),
        1 => any::<String>(),
        1 => hostile(),
    ]
}

proptest! {
    #![proptest_config(config(1500))]

    /// Resolving a connection target from any URL returns, never panics, and what it
    /// shows never includes the password.
    #[test]
    fn database_urls_resolve_or_are_refused_and_never_show_the_password(url in database_urls()) {
        let overrides = Overrides { database_url: Some(url.clone()), ..Overrides::default() };
        let settings = config::resolve(&overrides, &|_| None, Path::new("/nonexistent"), None)
            .expect("no file: resolve succeeds");
        match Target::resolve(&settings, &|_| None) {
            Ok(target) => {
                prop_assert!(!target.display().contains("SECRET"), "{} shows the password of {:?}", target.display(), url);
                let debug = format!("{target:?}");
                prop_assert!(!debug.contains("SECRET"), "{}", debug);
            }
            Err(e) => {
                prop_assert_eq!(e.kind(), ErrorKind::Setup, "{}", e);
                prop_assert!(!e.to_string().contains("SECRET"), "the error shows the password: {}", e);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Timeouts as PostgreSQL sees them
// ---------------------------------------------------------------------------------------

/// `run.lock_timeout` / `run.statement_timeout` values as a config file may say them.
fn timeouts() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "0",
            "10s",
            "1ms",
            "1ns",
            "500us",
            "999us",
            "24d",
            "25d",
            "1y",
            "2147483647ms",
            "2147483648ms",
        ])
        .prop_map(str::to_string),
        "[1-9][0-9]{0,3}(ns|us|ms|s|m|h|d)",
    ]
}

/// Every timeout the config accepts means the same to PostgreSQL: the session settings
/// a migration starts with are accepted, and a timeout is off ("0", wait forever) exactly
/// when the config said zero, as tenants.example.toml documents.
#[test]
fn accepted_timeouts_mean_the_same_to_postgres() {
    let db = TestDb::new();
    let client = RefCell::new(db.client());
    run_cases(200, (timeouts(), timeouts()), |(lock, statement)| {
        let text =
            format!("[run]\nlock_timeout = \"{lock}\"\nstatement_timeout = \"{statement}\"\n");
        let Some(Ok(settings)) = fuzzing::config(&text) else {
            return Ok(());
        };
        let client = &mut *client.borrow_mut();
        let sql = tenantctl::engine::plan::session_settings(&settings, "tenant_x");
        client
            .batch_execute(&sql)
            .map_err(|e| TestCaseError::fail(format!("{text}gives {sql:?}: {e:?}")))?;
        // A statement_timeout of a few milliseconds may cancel the read itself on a busy
        // machine: that shows it is in force; it is then lifted to read the rest.
        let read = |c: &mut postgres::Client, name: &str| -> Result<String, postgres::Error> {
            Ok(c.query_one("SELECT current_setting($1)", &[&name])?.get(0))
        };
        let statement = match read(client, "statement_timeout") {
            Ok(value) => value,
            Err(e) if e.code() == Some(&postgres::error::SqlState::QUERY_CANCELED) => {
                "in force".to_string()
            }
            Err(e) => panic!("read setting: {e:?}"),
        };
        // Lifted before the next case too, whose first statement would be subject to it.
        let lifted = (0..1000).any(|_| client.batch_execute("SET statement_timeout = 0").is_ok());
        assert!(lifted, "statement_timeout could not be lifted");
        let lock = read(client, "lock_timeout").expect("read setting");
        for (name, configured, value) in [
            ("lock_timeout", settings.lock_timeout, lock),
            ("statement_timeout", settings.statement_timeout, statement),
        ] {
            prop_assert_eq!(
                value == "0",
                configured.is_zero(),
                "{}{} = {:?} is {} in PostgreSQL",
                text,
                name,
                configured,
                value
            );
        }
        Ok(())
    });
}

/// Durations as a config file may say them, around every setting's limits and far past
/// any instant.
fn any_durations() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "0",
            "1ns",
            "999us",
            "1ms",
            "999ms",
            "1s",
            "30s",
            "31s",
            "1h",
            "1h 1ns",
            "24d",
            "2147483647ms",
            "2147483648ms",
            "1y",
            "300000000000y",
            "584942417355y",
            "18446744073709551615s",
        ])
        .prop_map(str::to_string),
        "[1-9][0-9]{0,12}(ns|us|ms|s|m|h|d|y)",
    ]
}

/// Every value the config accepts for every duration setting is in the range the README
/// gives it, can be added to any instant (a connection retried for
/// `database.connect_timeout` computes its deadline so), and means what it says to
/// PostgreSQL where it is sent there (a whole number of milliseconds in an `int4`).
#[test]
fn every_accepted_duration_is_in_its_range_and_survives_any_instant() {
    type Got = fn(&config::Settings) -> std::time::Duration;
    let ms = std::time::Duration::from_millis;
    let s = std::time::Duration::from_secs;
    // (section, key, the setting read back, zero accepted, lowest and highest other)
    let settings: [(
        &str,
        &str,
        Got,
        bool,
        std::time::Duration,
        std::time::Duration,
    ); 7] = [
        (
            "database",
            "connect_timeout",
            |x| x.connect_timeout,
            false,
            s(1),
            s(3600),
        ),
        (
            "servers.eu2",
            "connect_timeout",
            |x| x.server("eu2").expect("server eu2").connect_timeout,
            false,
            s(1),
            s(3600),
        ),
        (
            "run",
            "lock_timeout",
            |x| x.lock_timeout,
            true,
            ms(1),
            ms(i32::MAX as u64),
        ),
        (
            "run",
            "statement_timeout",
            |x| x.statement_timeout,
            true,
            ms(1),
            ms(i32::MAX as u64),
        ),
        (
            "run",
            "lock_wait",
            |x| x.lock_wait,
            true,
            ms(1),
            ms(i32::MAX as u64),
        ),
        (
            "run",
            "lock_retry_delay",
            |x| x.lock_retry_delay,
            true,
            ms(0),
            s(30),
        ),
        (
            "run",
            "read_timeout",
            |x| x.read_timeout,
            false,
            s(1),
            s(3600),
        ),
    ];
    let started = std::time::Instant::now();
    run_cases(400, (0..settings.len(), any_durations()), |(i, value)| {
        let (section, key, got, zero, low, high) = settings[i];
        let url = if section.starts_with("servers.") {
            "url = \"postgres://u@h/d\"\n"
        } else {
            ""
        };
        let text = format!("[{section}]\n{url}{key} = \"{value}\"\n");
        let Some(result) = fuzzing::config(&text) else {
            return Ok(());
        };
        let Ok(settings) = result else {
            return Ok(());
        };
        let d = got(&settings);
        prop_assert!(
            (zero && d.is_zero()) || (low..=high).contains(&d),
            "{}{section}.{key} = {:?} was accepted, outside its range",
            text,
            d
        );
        prop_assert!(
            started.checked_add(d).is_some() && std::time::Instant::now().checked_add(d).is_some(),
            "{}{section}.{key} = {:?} cannot be added to an instant",
            text,
            d
        );
        prop_assert!(
            d.as_millis() <= i32::MAX as u128,
            "{}{section}.{key} = {:?} does not fit PostgreSQL's int4 milliseconds",
            text,
            d
        );
        Ok(())
    });
}
