//! The book's promises point at tests that exist: every test the tables of "What
//! tenantctl guarantees" (`docs/src/explanation/guarantees.md`) cite (`MODULE::name` in this binary, `PATH::tests::name` unit
//! tests in `src/`, `MODULE::prefix_*` for several, a module by its name) is a
//! `#[test]` function there, and a helper they cite (`checks::assert_truth`) a function.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The names of the `#[test]` (and `#[tokio::test]`) functions in `text` (attributes may
/// follow), and
/// of those a macro of the file makes (`NAME: BODY;` in an invocation of a macro whose
/// expansion is `#[test] fn $name`, as `crash_tests!`).
fn tests_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("macro_rules! ") {
        let rest = &text[at + "macro_rules! ".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let body = &rest[..rest.find("\n}").unwrap_or(rest.len())];
        if !(body.contains("#[test]") && body.contains("fn $name")) {
            continue;
        }
        for (call, _) in text.match_indices(&format!("\n{name}! {{")) {
            let block = &text[call + 1..];
            let block = &block[..block.find("\n}").unwrap_or(block.len())];
            for line in block.lines().skip(1) {
                if let Some((test, _)) = line.trim().split_once(':') {
                    if !test.is_empty()
                        && test.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        found.insert(test.to_string());
                    }
                }
            }
        }
    }
    let mut armed = false;
    for line in text.lines().map(str::trim) {
        if line == "#[test]" || line.starts_with("#[tokio::test") {
            armed = true;
        } else if armed && line.starts_with("#[") {
            continue;
        } else if armed {
            let line = line.strip_prefix("async ").unwrap_or(line);
            if let Some(rest) = line.strip_prefix("fn ") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                found.insert(name);
            }
            armed = false;
        }
    }
    found
}

/// The names of every function (test or not) declared in `text`.
fn functions_in(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("fn ").map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            })
        })
        .collect()
}

/// The modules `tests/suite/main.rs` declares: (test modules, helper modules).
fn suite_modules() -> (BTreeSet<String>, BTreeSet<String>) {
    let main = std::fs::read_to_string(repo().join("tests/suite/main.rs")).unwrap();
    let (helpers, tests) = main
        .split_once("// The tests.")
        .expect("tests/suite/main.rs separates its helpers from its tests with `// The tests.`");
    let modules = |text: &str| -> BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("mod ")?.strip_suffix(';'))
            .map(str::to_string)
            .collect()
    };
    (modules(tests), modules(helpers))
}

/// The source of a suite module (`NAME.rs` or `NAME/mod.rs`).
fn suite_source(module: &str) -> Option<String> {
    let dir = repo().join("tests/suite");
    [
        dir.join(format!("{module}.rs")),
        dir.join(module).join("mod.rs"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
}

/// The source of the library module at `path` (`data::files` is `src/data/files.rs` or
/// `src/data/files/mod.rs`).
fn src_source(path: &[&str]) -> Option<String> {
    let mut file = repo().join("src");
    for p in path {
        file.push(p);
    }
    [file.with_extension("rs"), file.join("mod.rs")]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
}

/// Every backticked name in the last column of the tables of the book's page "What
/// tenantctl guarantees", with the first line citing it.
fn cited(page: &str) -> BTreeMap<String, usize> {
    assert!(
        page.starts_with("# What tenantctl guarantees"),
        "the page is \"What tenantctl guarantees\""
    );
    let first_line = 1;
    let mut names = BTreeMap::new();
    for (i, line) in page.lines().enumerate() {
        let Some(row) = line.strip_prefix('|') else {
            continue;
        };
        // Cells split at `|` outside backticks (a name never holds one; `\|` is text).
        let mut cells = Vec::new();
        let (mut cell, mut quoted, mut prev) = (String::new(), false, ' ');
        for c in row.chars() {
            match c {
                '`' => quoted = !quoted,
                '|' if !quoted && prev != '\\' => {
                    cells.push(std::mem::take(&mut cell));
                    prev = c;
                    continue;
                }
                _ => {}
            }
            cell.push(c);
            prev = c;
        }
        let Some(last) = cells.last() else { continue };
        for (j, part) in last.split('`').enumerate() {
            if j % 2 == 1 {
                names.entry(part.to_string()).or_insert(first_line + i);
            }
        }
    }
    names
}

/// Why `name` does not name a test (or a cited helper) that exists, if it does not;
/// `None` also for what is no test name at all (a variable, a path, a command).
fn missing(name: &str, tests: &BTreeSet<String>, helpers: &BTreeSet<String>) -> Option<String> {
    let is_path = |s: &str| {
        !s.is_empty()
            && s.split("::").all(|p| {
                !p.is_empty()
                    && p.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '*'
                    })
            })
    };
    if !is_path(name) {
        return None;
    }
    let parts: Vec<&str> = name.split("::").collect();
    if parts.len() == 1 {
        // A module by its name: one of this binary's test modules.
        return (!tests.contains(name)).then(|| format!("{name} is not a test module"));
    }
    if let Some(at) = parts.iter().position(|p| *p == "tests") {
        // A unit test in src/: PATH::tests, or PATH::tests::name.
        let path = parts[..at].join("/");
        let Some(text) = src_source(&parts[..at]) else {
            return Some(format!("no module src/{path}"));
        };
        let found = tests_in(&text);
        return match parts.get(at + 1) {
            _ if !text.contains("mod tests") || found.is_empty() => {
                Some(format!("src/{path} has no unit tests"))
            }
            None => None,
            Some(test) if matches(test, &found) => None,
            Some(test) => Some(format!("src/{path} has no unit test {test}")),
        };
    }
    let [module, item] = parts[..] else {
        return Some("a name in this binary is MODULE::name".into());
    };
    let Some(text) = suite_source(module) else {
        return Some(format!("no module tests/suite/{module}"));
    };
    if tests.contains(module) {
        if matches(item, &tests_in(&text)) {
            return None;
        }
        return Some(format!("tests/suite/{module}.rs has no #[test] fn {item}"));
    }
    if helpers.contains(module) && functions_in(&text).contains(item) {
        return None;
    }
    Some(format!("no fn {item} in the helper module {module}"))
}

/// Whether `pattern` (a name, or a prefix ending in `*`) matches one of `names`.
fn matches(pattern: &str, names: &BTreeSet<String>) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => names.iter().any(|n| n.starts_with(prefix)),
        None => names.contains(pattern),
    }
}

#[test]
fn every_test_the_guarantees_table_cites_exists() {
    let page = "docs/src/explanation/guarantees.md";
    let readme = std::fs::read_to_string(repo().join(page)).unwrap();
    let (tests, helpers) = suite_modules();
    assert!(tests.contains("tidy") && helpers.contains("support"));
    let cited = cited(&readme);
    assert!(cited.len() > 100, "too few names found: {cited:?}");
    let problems: Vec<String> = cited
        .into_iter()
        .filter_map(|(name, line)| {
            missing(&name, &tests, &helpers).map(|why| format!("{page}:{line}: `{name}`: {why}"))
        })
        .collect();
    assert!(
        problems.is_empty(),
        "the guarantees cite tests that do not exist:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_tidy_check_finds_a_name_that_does_not_exist() {
    let (tests, helpers) = suite_modules();
    for (name, exists) in [
        ("ledger::every_change_to_a_tenant_is_in_the_ledger_with_its_action_status_and_revisions", true),
        ("ledger::every_change_to_a_tenant_is_in_the_ledger", false),
        ("ledger::rows_after", false),
        ("secrets::the_password_never_appears_given_by_*", true),
        ("secrets::the_password_is_*", false),
        ("crash::*", true),
        ("crash::move_killed_after_the_target_is_built", true),
        ("crash::move_killed_after_the_target_is_rebuilt", false),
        ("nosuch::*", false),
        ("checks::assert_truth", true),
        ("checks::assert_lies", false),
        ("pg::db::tests::transient_socket_errors_are_recognised_by_kind", true),
        ("pg::db::tests::no_such_unit_test", false),
        ("pg::db::tests::a_refused_connection_is_transient_and_patience_ends_with_the_budget", true),
        ("data::files::tests::backup_names_of_every_version_are_recognised_and_nothing_else", true),
        ("engine::scheduler::tests", true),
        ("nosuch::tests", false),
        ("props", true),
        ("checks", false),
        ("fleet::a::b", false),
        ("PGPASSWORD", true),
        ("src/engine/scheduler.rs", true),
        ("cargo test --lib", true),
    ] {
        assert_eq!(
            missing(name, &tests, &helpers).is_none(),
            exists,
            "{name}: {:?}",
            missing(name, &tests, &helpers)
        );
    }
    let table = "# What tenantctl guarantees\n\n| promise | proven by |\n|---|---|\n\
                 | a `x \\| y` thing | `fleet::one`, `two::three` (and `four`) |\n";
    let names: Vec<String> = cited(table).into_keys().collect();
    assert_eq!(names, ["fleet::one", "four", "two::three"]);
}
