//! `tenantctl lint`: squawk's rules on migration files. Every rule enabled by default
//! is found in a file made for it (the list checked against squawk's defaults), and in a
//! migrations directory each is reported at its file and line, with why and the safe
//! way; a clean directory exits 0, findings exit 5; `[lint] ignore` and a file's
//! `-- tenantctl: allow RULE` turn rules off, and an unknown rule in either is refused
//! naming where (exit 3); without files or `--all`, the migrations the fleet has still to
//! apply are linted (the registry's lowest revision); `check` includes that lint;
//! `revision` writes a file that passes; named files need no database.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::checks::expect_error;
use crate::support::{bare, dir_with, ready};

/// One file per rule: the rule, the file, and the line its finding is on.
const CASES: &[(&str, &str, &str, usize)] = &[
    (
        "adding-required-field",
        "V2__required.sql",
        "-- a required column\nALTER TABLE members ADD COLUMN email text NOT NULL;\n",
        2,
    ),
    (
        "require-concurrent-index-creation",
        "V3__index.sql",
        "CREATE INDEX members_name_idx ON members (name);\n",
        1,
    ),
    (
        "adding-foreign-key-constraint",
        "V4__fk.sql",
        "CREATE TABLE teams (id bigint PRIMARY KEY);\n\nALTER TABLE members ADD CONSTRAINT members_team_fk FOREIGN KEY (id) REFERENCES teams (id);\n",
        3,
    ),
    (
        "changing-column-type",
        "V5__type.sql",
        "ALTER TABLE members ALTER COLUMN name TYPE varchar(40);\n",
        1,
    ),
    (
        "renaming-column",
        "V6__rename.sql",
        "ALTER TABLE members RENAME COLUMN name TO full_name;\n",
        1,
    ),
    (
        "ban-drop-column",
        "V7__drop.sql",
        "ALTER TABLE members DROP COLUMN full_name;\n",
        1,
    ),
    (
        "prefer-bigint-over-int",
        "V8__int.sql",
        "CREATE TABLE notes (id bigint PRIMARY KEY, votes int);\n",
        1,
    ),
    (
        "adding-field-with-default",
        "V9__volatile.sql",
        "ALTER TABLE members ADD COLUMN token text DEFAULT gen_random_uuid()::text;\n",
        1,
    ),
];

const V1: &str = "CREATE TABLE members (id bigint PRIMARY KEY, name text);\n";

fn findings(doc: &Value) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for f in doc["files"].as_array().unwrap() {
        let file = f["file"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        for x in f["findings"].as_array().unwrap() {
            out.push((
                file.clone(),
                x["rule"].as_str().unwrap().to_string(),
                x["line"].as_u64().unwrap(),
            ));
            assert!(!x["message"].as_str().unwrap().is_empty(), "{x}");
        }
    }
    out
}

#[test]
fn each_rule_is_found_at_its_file_and_line_and_findings_exit_5() {
    let mut files: Vec<(&str, &str)> = vec![("V1__members.sql", V1)];
    files.extend(CASES.iter().map(|(_, f, sql, _)| (*f, *sql)));
    let dir = dir_with(&files);
    let t = bare().migrations(dir.path());

    let run = t.run(&["lint", "--all", "-o", "json"]);
    run.expect(5);
    crate::support::schemas::check(&["lint", "--all", "-o", "json"], &run);
    let doc: Value = run.json();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["selected"], "all");
    let found = findings(&doc);
    for (rule, file, _, line) in CASES {
        assert!(
            found
                .iter()
                .any(|(f, r, l)| f == file && r == rule && l == &(*line as u64)),
            "{rule} in {file} at line {line}: {found:?}"
        );
    }
    assert_eq!(doc["findings"], found.len());
    assert!(
        !found.iter().any(|(f, _, _)| f == "V1__members.sql"),
        "V1 is clean: {found:?}"
    );

    // Text: FILE:LINE:COLUMN: RULE: why, then the safe way.
    let text = t.run(&["lint", "--all"]);
    text.expect(5);
    assert!(
        text.stdout.contains("V2__required.sql:2:")
            && text.stdout.contains(": adding-required-field: "),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("\n  help: "), "{}", text.stdout);
    assert!(
        text.stdout.trim_end().ends_with("(every migration)"),
        "{}",
        text.stdout
    );

    // A named file needs no database (there is none here), and a clean one exits 0.
    let clean = t.run(&[
        "lint",
        &dir.path().join("V1__members.sql").display().to_string(),
    ]);
    clean.expect(0);
    assert!(
        clean.stdout.starts_with("lint: 0 findings in 1 file"),
        "{}",
        clean.stdout
    );
    let missing = t.run(&["lint", "/nonexistent/V1__x.sql"]);
    expect_error(&missing, 2, &["cannot read /nonexistent/V1__x.sql"]);
    // What PostgreSQL cannot parse is a finding; what is not a regular file is refused.
    let garbled = dir.path().join("garbled.sql");
    std::fs::write(&garbled, "SELECT 1;\nSELEC 2;\n").unwrap();
    let doc: Value = t
        .run(&["lint", &garbled.display().to_string(), "-o", "json"])
        .expect(5)
        .json();
    assert_eq!(
        findings(&doc),
        [("garbled.sql".to_string(), "syntax-error".to_string(), 2)]
    );
    let fifo = dir.path().join("fifo.sql");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for path in [fifo.display().to_string(), dir.path().display().to_string()] {
        expect_error(&t.run(&["lint", &path]), 2, &["not a regular file"]);
    }
    // FILE and --all together are a usage error.
    expect_error(&t.run(&["lint", "--all", "x.sql"]), 2, &[]);
}

#[test]
fn rules_are_turned_off_by_config_and_by_a_files_directive_and_unknown_rules_are_refused() {
    let dir = dir_with(&[
        ("V1__members.sql", V1),
        (
            "V2__reviewed.sql",
            "-- Reviewed: members is small in every tenant.\n-- tenantctl: allow require-concurrent-index-creation, adding-required-field\n\
             CREATE INDEX members_name_idx ON members (name);\nALTER TABLE members ADD COLUMN email text NOT NULL;\n",
        ),
        ("V3__drop.sql", "ALTER TABLE members DROP COLUMN email;\n"),
    ]);
    let config = dir_with(&[("tenants.toml", "[lint]\nignore = [\"ban-drop-column\"]\n")]);
    let t = bare().migrations(dir.path());
    // Without the config: only V3's drop is found (V2 allows its own).
    let doc: Value = t.run(&["lint", "--all", "-o", "json"]).expect(5).json();
    let rules: BTreeSet<String> = findings(&doc).into_iter().map(|(_, r, _)| r).collect();
    assert_eq!(rules, BTreeSet::from(["ban-drop-column".to_string()]));
    // With it: nothing.
    let configured = t.clone().cwd(config.path());
    configured.run(&["lint", "--all"]).expect(0);

    // An unknown rule in the config: exit 3 naming it, before any file is read.
    let bad = dir_with(&[("tenants.toml", "[lint]\nignore = [\"no-such-rule\"]\n")]);
    expect_error(
        &t.clone().cwd(bad.path()).run(&["lint", "--all"]),
        3,
        &["lint.ignore", "no-such-rule"],
    );
    // In a file's directive, or a directive below the first statement: the file is
    // refused as every command refuses it, naming its line.
    for (sql, says) in [
        (
            "-- tenantctl: allow no-such-rule\nSELECT 1;\n",
            "no-such-rule",
        ),
        ("-- tenantctl: allow\nSELECT 1;\n", "needs the lint rules"),
        (
            "SELECT 1;\n-- tenantctl: allow ban-drop-column\n",
            "before the file's first statement",
        ),
    ] {
        let d = dir_with(&[("V1__members.sql", V1), ("V2__x.sql", sql)]);
        let run = bare().migrations(d.path()).run(&["lint", "--all"]);
        expect_error(&run, 3, &["V2__x.sql", says]);
    }
}

#[test]
fn the_fleets_pending_migrations_are_linted_and_check_includes_them() {
    let (db, t) = ready();
    let dir = dir_with(&[
        ("V1__members.sql", V1),
        (
            "V2__required.sql",
            "ALTER TABLE members ADD COLUMN email text NOT NULL;\n",
        ),
    ]);
    let t = t.migrations(dir.path());
    // No tenant is provisioned: every file is pending.
    let doc: Value = t.run(&["lint", "-o", "json"]).expect(5).json();
    assert_eq!(doc["selected"], "pending");
    assert_eq!(doc["from_revision"], Value::Null);
    assert_eq!(doc["files"].as_array().unwrap().len(), 2);

    t.run(&[
        "tenant",
        "create",
        "alpha",
        "--name",
        "Alpha",
        "--migrate",
        "--target",
        "1",
    ])
    .expect(0);
    let doc: Value = t.run(&["lint", "-o", "json"]).expect(5).json();
    assert_eq!(doc["from_revision"], 1);
    assert_eq!(
        findings(&doc),
        [(
            "V2__required.sql".to_string(),
            "adding-required-field".to_string(),
            1
        )]
    );

    // check: behind head, and the pending file's finding.
    let check = t.run(&["check", "-o", "json"]);
    check.expect(5);
    crate::support::schemas::check(&["check", "-o", "json"], &check);
    let report: Value = check.json();
    assert_eq!(
        report["lint"][0]["findings"][0]["rule"],
        "adding-required-field"
    );
    let text = t.run(&["check"]);
    assert!(
        text.stdout.contains("V2__required.sql:1:")
            && text
                .stdout
                .contains("1 lint finding in the pending migrations"),
        "{}",
        text.stdout
    );

    // Once the fleet has applied it (here by a reviewed exception), nothing is pending.
    std::fs::write(
        dir.path().join("V2__required.sql"),
        "-- tenantctl: allow adding-required-field\nALTER TABLE members ADD COLUMN email text NOT NULL DEFAULT '';\n",
    )
    .unwrap();
    t.run(&["upgrade", "--all"]).expect(0);
    let doc: Value = t.run(&["lint", "-o", "json"]).expect(0).json();
    assert_eq!(doc["from_revision"], 2);
    assert_eq!(doc["files"].as_array().unwrap().len(), 0);
    t.run(&["check"]).expect(0);
    drop(db);
}

#[test]
fn revision_writes_a_file_that_passes() {
    let dir = dir_with(&[("V1__members.sql", V1)]);
    let t = bare().migrations(dir.path());
    t.run(&["revision", "-m", "add pledges"]).expect(0);
    let written = dir.path().join("V2__add_pledges.sql");
    assert!(written.is_file());
    t.run(&["lint", &written.display().to_string()]).expect(0);
    t.run(&["lint", "--all"]).expect(0);
}

/// One file per rule squawk enables by default (tenantctl's three off by default aside,
/// and `prefer-repack`, which applies from PostgreSQL 19 on), each a named file
/// tenantctl's loader would refuse or not: lint finds that rule in it. The list is
/// checked against squawk's own defaults, so a rule a new squawk adds fails here until
/// it has its file.
const EVERY_RULE: &[(&str, &str)] = &[
    ("adding-field-with-default", "ALTER TABLE t ADD COLUMN b text DEFAULT gen_random_uuid()::text;"),
    ("adding-foreign-key-constraint", "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES u (id);"),
    ("adding-not-nullable-field", "ALTER TABLE t ALTER COLUMN a SET NOT NULL;"),
    ("adding-required-field", "ALTER TABLE t ADD COLUMN b text NOT NULL;"),
    ("adding-serial-primary-key-field", "ALTER TABLE t ADD PRIMARY KEY (id);"),
    ("ban-alter-domain-with-add-constraint", "ALTER DOMAIN d ADD CONSTRAINT c CHECK (VALUE > 0);"),
    ("ban-alter-identity", "ALTER TABLE t ALTER COLUMN id DROP IDENTITY;"),
    ("ban-char-field", "CREATE TABLE n (id bigint PRIMARY KEY, a char(2));"),
    ("ban-concurrent-index-creation-in-transaction", "CREATE TABLE n (id bigint);\nCREATE INDEX CONCURRENTLY i ON t (a);"),
    ("ban-create-domain-with-constraint", "CREATE DOMAIN d AS int CHECK (VALUE > 0);"),
    ("ban-drop-column", "ALTER TABLE t DROP COLUMN a;"),
    ("ban-drop-constraint", "ALTER TABLE t DROP CONSTRAINT c;"),
    ("ban-drop-database", "DROP DATABASE d;"),
    ("ban-drop-default", "ALTER TABLE t ALTER COLUMN a DROP DEFAULT;"),
    ("ban-drop-domain", "DROP DOMAIN d;"),
    ("ban-drop-extension", "DROP EXTENSION e;"),
    ("ban-drop-function", "DROP FUNCTION f();"),
    ("ban-drop-generated-expression", "ALTER TABLE t ALTER COLUMN a DROP EXPRESSION;"),
    ("ban-drop-not-null", "ALTER TABLE t ALTER COLUMN a DROP NOT NULL;"),
    ("ban-drop-schema", "DROP SCHEMA s;"),
    ("ban-drop-sequence", "DROP SEQUENCE s;"),
    ("ban-drop-table", "DROP TABLE t;"),
    ("ban-drop-type", "DROP TYPE e;"),
    ("ban-drop-view", "DROP VIEW v;"),
    ("ban-duplicate-column-assignments", "UPDATE t SET a = 1, a = 2;"),
    ("ban-set-schema", "ALTER TABLE t SET SCHEMA s;"),
    ("ban-truncate-cascade", "TRUNCATE t CASCADE;"),
    ("ban-uncommitted-transaction", "BEGIN;\nCREATE TABLE n (id bigint);"),
    ("changing-column-type", "ALTER TABLE t ALTER COLUMN a TYPE bigint;"),
    ("constraint-missing-not-valid", "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0);"),
    ("disallowed-unique-constraint", "ALTER TABLE t ADD CONSTRAINT u UNIQUE (a);"),
    ("identifier-too-long", "CREATE TABLE aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa (id bigint);"),
    ("prefer-bigint-over-int", "CREATE TABLE n (id bigint PRIMARY KEY, a int);"),
    ("prefer-bigint-over-smallint", "CREATE TABLE n (id bigint PRIMARY KEY, a smallint);"),
    ("prefer-identity", "CREATE TABLE n (id bigserial PRIMARY KEY);"),
    ("prefer-text-field", "CREATE TABLE n (id bigint PRIMARY KEY, a varchar(20));"),
    ("prefer-timestamp-tz", "CREATE TABLE n (id bigint PRIMARY KEY, a timestamp);"),
    ("renaming-column", "ALTER TABLE t RENAME COLUMN a TO b;"),
    ("renaming-object", "ALTER FUNCTION f() RENAME TO g;"),
    ("renaming-table", "ALTER TABLE t RENAME TO t2;"),
    ("require-concurrent-index-creation", "CREATE INDEX i ON t (a);"),
    ("require-concurrent-index-deletion", "DROP INDEX i;"),
    ("require-concurrent-partition-detach", "ALTER TABLE t DETACH PARTITION p;"),
    ("require-concurrent-reindex", "REINDEX TABLE t;"),
    ("require-enum-value-ordering", "ALTER TYPE e ADD VALUE 'x';"),
    ("transaction-nesting", "BEGIN;\nCREATE TABLE n (id bigint);\nCOMMIT;"),
    ("unused-ignore", "-- squawk-ignore no-such-rule\nCREATE TABLE n (id bigint);"),
];

#[test]
fn every_rule_enabled_by_default_is_found_in_a_file_made_for_it() {
    let defaults: BTreeSet<String> = squawk_linter::Linter::with_default_rules()
        .rules
        .iter()
        .map(|r| r.to_string())
        .filter(|r| !tenantctl::files::lint::OFF_BY_DEFAULT.contains(&r.as_str()))
        .filter(|r| r != "prefer-repack")
        .collect();
    let covered: BTreeSet<String> = EVERY_RULE.iter().map(|(r, _)| r.to_string()).collect();
    assert_eq!(
        covered, defaults,
        "every default rule has its file, and only those"
    );
    let dir = tempfile::tempdir().unwrap();
    let t = bare();
    for (rule, sql) in EVERY_RULE {
        let file = dir.path().join(format!("{rule}.sql"));
        std::fs::write(&file, format!("{sql}\n")).unwrap();
        let path = file.display().to_string();
        let run = t.run(&["lint", &path, "-o", "json"]);
        run.expect(5);
        let doc: Value = run.json();
        let rules: Vec<String> = findings(&doc).into_iter().map(|(_, r, _)| r).collect();
        assert!(
            rules.iter().any(|r| r == rule),
            "{rule} not found in {sql:?}: {rules:?}"
        );
    }
}
