//! tenantctl splits files into statements exactly as psql does. psql itself is the
//! reference: it runs every file inside an aborted transaction (so each statement is
//! sent and refused, nothing changes) with `-L`, which logs every query it sends; the
//! logged queries are compared, one by one, with tenantctl's split after normalising
//! whitespace and `--` comments. The corpus: every extension script installed with
//! PostgreSQL, the project's migrations, and the hand-written `tests/split_corpus/`.

use crate::support;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::TestDb;
use tenantctl::files::statements::{normalize, split};

const QUERY_START: &str = "********* QUERY **********\n";
const QUERY_END: &str = "\n**************************\n";

/// One file of the corpus: a name for messages and its text.
struct Source {
    name: String,
    text: String,
}

/// The queries psql sends for each file, in order, run in one psql session. Between
/// files a marker query names the next file.
fn psql_queries(db: &TestDb, sources: &[Source]) -> Vec<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("queries.log");
    let mut cmd = Command::new("psql");
    support::scrub(&mut cmd);
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=0", "-d", &db.url, "-L"])
        .arg(&log)
        .args(["-c", "BEGIN", "-c", "SELECT 1/0"]);
    for (i, s) in sources.iter().enumerate() {
        let path = dir.path().join(format!("{i}.sql"));
        std::fs::write(&path, &s.text).unwrap();
        cmd.arg("-c")
            .arg(format!("SELECT 'tenantctl corpus file {i}'"))
            .arg("-f")
            .arg(&path);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run psql ({e}); this test compares tenantctl's splitter with psql, so psql must be installed")
    });
    let log = std::fs::read_to_string(&log).unwrap_or_else(|e| {
        panic!(
            "psql wrote no query log ({e}); stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut queries = Vec::new();
    let mut rest = log.as_str();
    while let Some(start) = rest.find(QUERY_START) {
        let body = &rest[start + QUERY_START.len()..];
        let end = body.find(QUERY_END).expect("every logged query is closed");
        queries.push(body[..end].to_string());
        rest = &body[end + QUERY_END.len()..];
    }
    let mut per_file: Vec<Vec<String>> = Vec::new();
    for q in queries {
        if let Some(n) = q
            .strip_prefix("SELECT 'tenantctl corpus file ")
            .and_then(|r| r.strip_suffix('\''))
        {
            assert_eq!(n.parse::<usize>().unwrap(), per_file.len());
            per_file.push(Vec::new());
        } else if let Some(current) = per_file.last_mut() {
            current.push(q);
        }
    }
    assert_eq!(
        per_file.len(),
        sources.len(),
        "psql did not get through every file; stderr:\n{stderr}"
    );
    per_file
}

/// Compares tenantctl's split of every source with psql's; returns the problems.
fn compare(db: &TestDb, sources: &[Source]) -> Vec<String> {
    let psql = psql_queries(db, sources);
    let mut problems = Vec::new();
    for (s, sent) in sources.iter().zip(psql) {
        let ours: Vec<String> = match split(&s.text) {
            Ok(statements) => statements.iter().map(|st| normalize(&st.text)).collect(),
            Err(e) => {
                problems.push(format!("{}: line {}: {}", s.name, e.line, e.message));
                continue;
            }
        };
        // psql also sends statements that hold nothing but comments or a semicolon;
        // the server answers those with an empty response, so tenantctl drops them.
        let theirs: Vec<String> = sent
            .iter()
            .filter(|q| !split(q).is_ok_and(|st| st.is_empty()))
            .map(|q| normalize(q))
            .collect();
        if ours.len() != theirs.len() {
            problems.push(format!(
                "{}: tenantctl found {} statements, psql sent {}",
                s.name,
                ours.len(),
                theirs.len()
            ));
        }
        if let Some((i, (a, b))) = ours
            .iter()
            .zip(theirs.iter())
            .enumerate()
            .find(|(_, (a, b))| a != b)
        {
            problems.push(format!(
                "{}: statement {} differs:\n  tenantctl: {a}\n  psql:      {b}",
                s.name,
                i + 1
            ));
        }
    }
    problems
}

fn sources_in(dir: &Path, prepare: impl Fn(&str) -> String) -> Vec<Source> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| Source {
            name: p.display().to_string(),
            text: prepare(&std::fs::read_to_string(&p).unwrap()),
        })
        .collect()
}

/// Extension scripts begin with `\echo ... \quit`, a guard against running them by hand.
fn without_echo_lines(text: &str) -> String {
    text.lines()
        .map(|l| if l.starts_with("\\echo") { "" } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_splitter_agrees_with_psql_on_every_installed_extension_script() {
    let roots: Vec<PathBuf> = std::fs::read_dir("/usr/share/postgresql")
        .expect("PostgreSQL's extension scripts live in /usr/share/postgresql/*/extension")
        .map(|e| e.unwrap().path().join("extension"))
        .filter(|p| p.is_dir())
        .collect();
    let sources: Vec<Source> = roots
        .iter()
        .flat_map(|r| sources_in(r, without_echo_lines))
        .collect();
    assert!(
        sources.len() >= 50,
        "expected the extension scripts of a PostgreSQL installation, found {} files",
        sources.len()
    );
    let db = TestDb::new();
    let problems = compare(&db, &sources);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_splitter_agrees_with_psql_on_the_migrations_and_a_tricky_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = sources_in(&root.join("migrations"), str::to_string);
    sources.extend(sources_in(&root.join("tests/split_corpus"), str::to_string));
    assert!(sources.iter().any(|s| s.name.ends_with("tricky.sql")));
    assert!(sources.iter().any(|s| s.text.starts_with('\u{feff}')));
    let db = TestDb::new();
    let problems = compare(&db, &sources);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_comparison_notices_a_wrong_split() {
    // A file where a naive split on every semicolon goes wrong; tenantctl's split is
    // right, and psql's log, replayed against a deliberately wrong one, shows up.
    let db = TestDb::new();
    let text = "SELECT $$a;b$$;\nSELECT 2;\n".to_string();
    let sent = psql_queries(
        &db,
        &[Source {
            name: "probe".into(),
            text: text.clone(),
        }],
    );
    let naive: Vec<String> = text
        .split_inclusive(';')
        .map(normalize)
        .filter(|s| !s.is_empty())
        .collect();
    let theirs: Vec<String> = sent[0].iter().map(|q| normalize(q)).collect();
    assert_eq!(theirs, ["SELECT $$a;b$$;", "SELECT 2;"]);
    assert_ne!(naive, theirs);
    assert!(compare(
        &db,
        &[Source {
            name: "probe".into(),
            text
        }]
    )
    .is_empty());
}
