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

/// The rules a file's `-- tenantctl: allow ...` lines name (`label` names the file in
/// errors).
fn allowed(sql: &str, label: &str) -> Result<Vec<Rule>, Error> {
    let mut out = Vec::new();
    for (i, line) in sql.lines().enumerate() {
        let Some(rest) = line.trim().strip_prefix(ALLOW) else {
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
    let mut linter = Linter::with_rules(&[], &off);
    linter.settings.assume_in_transaction = !no_transaction;
    let parsed = squawk_syntax::SourceFile::parse(sql);
    let mut findings: Vec<Finding> = linter
        .lint(&parsed, sql)
        .into_iter()
        .map(|v| {
            let at = usize::from(v.text_range.start()).min(sql.len());
            let before = sql.get(..at).unwrap_or(sql);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            Finding {
                line,
                column,
                rule: v.code.to_string(),
                message: v.message,
                help: v.help,
            }
        })
        .collect();
    findings.sort_by(|a, b| (a.line, a.column, &a.rule).cmp(&(b.line, b.column, &b.rule)));
    Ok(findings)
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
            "SELECT 1;\n-- tenantctl: allow no-such-rule\n",
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
    fn robust_statements_are_not_asked_for() {
        assert!(
            lint("CREATE TABLE t (id bigint PRIMARY KEY);\n", "f", &[], false)
                .unwrap()
                .is_empty()
        );
    }
}
