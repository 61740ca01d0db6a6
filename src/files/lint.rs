//! Migration lint: squawk's rules for PostgreSQL migrations, run on one file's text.
//! Each finding says where (line and column), which rule, why the statement is
//! dangerous and the safe way to write it (squawk's own words).
//!
//! What tenantctl changes from squawk's defaults: files run in a transaction (each
//! migration is one, with its history row), except a `-- tenantctl: no-transaction`
//! file; `prefer-robust-stmts` is off (a file runs once, recorded in its history: an `IF
//! NOT EXISTS` would hide drift rather than prevent a failure), and so are
//! `require-lock-timeout` and `require-statement-timeout` (tenantctl sets both on every
//! migration's session from `[run]`: `lock_timeout` is 10 s unless configured). Rules are turned off for
//! every file by `[lint] ignore`, and for one file by a reviewed exception on a line of
//! its own: `-- tenantctl: allow RULE[, RULE...]`. squawk's own `-- squawk-ignore`
//! comments work too.

use serde::Serialize;
use squawk_linter::{Linter, Rule};

use crate::error::Error;

/// The directive that allows rules in one file.
pub const ALLOW: &str = "-- tenantctl: allow";

/// Rules tenantctl turns off by default (see the module's header).
pub const OFF_BY_DEFAULT: &[&str] = &[
    "prefer-robust-stmts",
    "require-lock-timeout",
    "require-statement-timeout",
];

/// One thing the lint found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Finding {
    /// The line (from 1) where the statement's offending part starts.
    pub line: usize,
    /// Its column (from 1, in characters).
    pub column: usize,
    /// The rule, as squawk names it (`adding-not-nullable-field`, ...).
    pub rule: String,
    /// Why it is dangerous.
    pub message: String,
    /// The safe way, when the rule has one to give.
    pub help: Option<String>,
}

/// A rule by its name; an unknown name is an error naming where it was given (`what`).
pub fn rule(name: &str, what: &str) -> Result<Rule, Error> {
    name.trim().parse::<Rule>().map_err(|_| {
        Error::setup(format!(
            "{what}: {} is not a lint rule; the rules are squawk's (https://squawkhq.com/docs/rules), e.g. adding-not-nullable-field",
            crate::ident::shown(name.trim())
        ))
    })
}

/// The rules a file's `-- tenantctl: allow ...` lines name, among its header lines (the
/// blank and `--` comment lines before its first statement: a directive further down,
/// in a string or a block comment, is text, as the loader reads it) (`label` names the
/// file in errors).
fn allowed(sql: &str, label: &str) -> Result<Vec<Rule>, Error> {
    let mut out = Vec::new();
    let body = sql.strip_prefix('\u{feff}').unwrap_or(sql);
    for (i, line) in body.lines().enumerate() {
        let line = line.trim();
        if !(line.is_empty() || line.starts_with("--")) {
            break;
        }
        let Some(rest) = line.strip_prefix(ALLOW) else {
            continue;
        };
        let names: Vec<&str> = rest
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() || !rest.starts_with(char::is_whitespace) {
            return Err(Error::setup(format!(
                "{label}:{}: `{ALLOW}` needs the rules it allows, e.g. `{ALLOW} adding-not-nullable-field`",
                i + 1
            )));
        }
        for n in names {
            out.push(rule(n, &format!("{label}:{}", i + 1))?);
        }
    }
    Ok(out)
}

/// Lints one migration file's text: `label` names it in errors, `ignore` are the rules
/// turned off for every file, `no_transaction` whether it runs outside a transaction.
/// Findings are in the order of the text.
pub fn lint(
    sql: &str,
    label: &str,
    ignore: &[Rule],
    no_transaction: bool,
) -> Result<Vec<Finding>, Error> {
    let mut off: Vec<Rule> = OFF_BY_DEFAULT
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    off.extend_from_slice(ignore);
    off.extend(allowed(sql, label)?);
    let position = |offset: usize| {
        let at = offset.min(sql.len());
        let before = sql.get(..at).unwrap_or(sql);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    };
    // The parser recurses into every parenthesis: text nested deeper than this is
    // reported, never parsed (it would exhaust the stack).
    if let Some(offset) = too_deep(sql) {
        let (line, column) = position(offset);
        return Ok(vec![Finding {
            line,
            column,
            rule: SYNTAX.into(),
            message: format!("nested more than {MAX_DEPTH} parentheses deep: too deep to lint"),
            help: None,
        }]);
    }
    let text = sql.to_string();
    // Parsing recurses with the text's nesting: on a thread with room for it.
    let (errors, violations) = std::thread::Builder::new()
        .name("lint".into())
        .stack_size(LINT_STACK)
        .spawn(move || {
            let mut linter = Linter::with_rules(&[], &off);
            linter.settings.assume_in_transaction = !no_transaction;
            let parsed = squawk_syntax::SourceFile::parse(&text);
            let errors: Vec<(usize, String)> = parsed
                .errors()
                .iter()
                .map(|e| (usize::from(e.range().start()), e.message().to_string()))
                .collect();
            (errors, linter.lint(&parsed, &text))
        })
        .map_err(|e| Error::failed(format!("{label}: cannot start the lint: {e}")))?
        .join()
        .map_err(|_| Error::failed(format!("{label}: the lint failed on this file")))?;
    // One syntax finding per line: the parser's first complaint there.
    let mut seen = std::collections::BTreeSet::new();
    let mut findings: Vec<Finding> = errors
        .into_iter()
        .filter(|(offset, _)| seen.insert(position(*offset).0))
        .map(|(offset, message)| {
            let (line, column) = position(offset);
            Finding {
                line,
                column,
                rule: SYNTAX.into(),
                message: format!("PostgreSQL would not accept this: {message}"),
                help: Some(
                    "the rules cannot judge a statement they cannot parse; fix it first".into(),
                ),
            }
        })
        .collect();
    findings.extend(violations.into_iter().map(|v| {
        let (line, column) = position(usize::from(v.text_range.start()));
        Finding {
            line,
            column,
            rule: v.code.to_string(),
            message: v.message,
            help: v.help,
        }
    }));
    findings.sort_by(|a, b| (a.line, a.column, &a.rule).cmp(&(b.line, b.column, &b.rule)));
    Ok(findings)
}

/// The rule name a statement the parser cannot read is reported under.
pub const SYNTAX: &str = "syntax-error";

/// The deepest nesting of parentheses linted.
const MAX_DEPTH: usize = 500;

/// The lint thread's stack.
const LINT_STACK: usize = 256 * 1024 * 1024;

/// Where the text first goes deeper than [`MAX_DEPTH`] parentheses (counting every
/// parenthesis, in strings and comments too: an overestimate is only a refusal).
fn too_deep(sql: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in sql.bytes().enumerate() {
        match b {
            b'(' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(i);
                }
            }
            b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_not_null_column_without_a_default_is_found_where_it_is() {
        let sql = "CREATE TABLE t (id bigint);\n\nALTER TABLE t ADD COLUMN n text NOT NULL;\n";
        let f = lint(sql, "V2__n.sql", &[], false).unwrap();
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(
            (f[0].line, f[0].rule.as_str()),
            (3, "adding-required-field")
        );
        assert!(!f[0].message.is_empty());
    }

    #[test]
    fn rules_are_allowed_per_file_and_ignored_everywhere() {
        let sql = "ALTER TABLE t ADD COLUMN n text NOT NULL;\n";
        let allowed = format!("{ALLOW} adding-required-field\n{sql}");
        assert!(lint(&allowed, "f", &[], false).unwrap().is_empty());
        let ignored = [rule("adding-required-field", "config").unwrap()];
        assert!(lint(sql, "f", &ignored, false).unwrap().is_empty());
    }

    #[test]
    fn an_unknown_or_empty_allow_is_an_error_naming_the_line() {
        let e = lint(
            "-- V1\n-- tenantctl: allow no-such-rule\nSELECT 1;\n",
            "V1__x.sql",
            &[],
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("V1__x.sql:2"), "{e}");
        assert!(e.to_string().contains("no-such-rule"), "{e}");
        let e = lint("-- tenantctl: allow\n", "V1__x.sql", &[], false).unwrap_err();
        assert!(e.to_string().contains("needs the rules"), "{e}");
    }

    #[test]
    fn what_cannot_be_parsed_is_a_finding_and_deep_nesting_is_refused() {
        let f = lint("SELECT 1;\nSELEC 1;\n", "f", &[], false).unwrap();
        assert!(f.iter().any(|x| x.rule == SYNTAX && x.line == 2), "{f:?}");
        let deep = format!("SELECT {}1{};", "(".repeat(5000), ")".repeat(5000));
        let f = lint(&deep, "f", &[], false).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].rule, SYNTAX);
        // A long chain of operators parses on the lint's own stack.
        let chain = format!("SELECT {}'a';\n", "'a' || ".repeat(10_000));
        assert!(lint(&chain, "f", &[], false).is_ok());
    }

    #[test]
    fn an_allow_below_the_header_or_in_a_string_is_text() {
        let sql = "SELECT '\n-- tenantctl: allow adding-required-field\n';\nALTER TABLE t ADD COLUMN n text NOT NULL;\n";
        let f = lint(sql, "f", &[], false).unwrap();
        assert!(f.iter().any(|x| x.rule == "adding-required-field"), "{f:?}");
    }

    #[test]
    fn robust_statements_are_not_asked_for() {
        assert!(
            lint("CREATE TABLE t (id bigint PRIMARY KEY);\n", "f", &[], false)
                .unwrap()
                .is_empty()
        );
    }
}
