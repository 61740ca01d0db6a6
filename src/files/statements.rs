//! Splitting a migration file into statements the way psql does, so each can be sent to
//! the server alone, and checking what a file may contain before anything runs.
//!
//! The rules follow psql's own lexer (`src/fe_utils/psqlscan.l`): a semicolon ends a
//! statement unless it is inside single quotes (with `''`), an `E''` string (with
//! backslash escapes), a dollar quote (`$$`, `$tag$`; `$1` is a parameter), a quoted
//! identifier (with `""`), a `--` or nested `/* */` comment, parentheses, or the
//! `BEGIN ... END` body of a `CREATE [OR REPLACE] FUNCTION|PROCEDURE` (SQL-standard
//! `BEGIN ATOMIC` bodies). A leading UTF-8 byte-order mark is dropped, as psql drops it;
//! empty statements (`;;`, a lone comment) are dropped. Leading whitespace and `--`
//! comments before a statement are not part of its text; everything from its first
//! other character up to and including its semicolon is, comments included, so a
//! position the server reports inside a statement maps back to a line of the file.
//!
//! A psql meta-command (a backslash outside quotes and comments) and an unterminated
//! quote or comment are errors here: the server could not run the file as psql would.

/// The first line that marks a file to run outside a transaction, one statement at a time.
pub const NO_TRANSACTION: &str = "-- tenantctl: no-transaction";

/// One statement of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The text sent to the server: from its first character (comments before it
    /// excluded) up to and including its terminating semicolon, if any.
    pub text: String,
    /// The 1-based line of the file on which the text starts.
    pub line: usize,
    /// Identifiers (keywords included), lowercased, with their parenthesis depth, in
    /// order; quoted identifiers, strings and comments are not among them.
    words: Vec<(String, u32)>,
}

/// Why a file cannot be split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitError {
    /// The 1-based line where the problem starts.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl Statement {
    /// The line, 1-based, of a 1-based character position in the text (as the server
    /// reports an error position); the statement's own line when the position is not
    /// inside the text.
    pub fn line_of_position(&self, position: u32) -> usize {
        let Some(idx) = (position as usize).checked_sub(1) else {
            return self.line;
        };
        let mut newlines = 0;
        for (n, ch) in self.text.chars().enumerate() {
            if n == idx {
                return self.line + newlines;
            }
            if ch == '\n' {
                newlines += 1;
            }
        }
        self.line
    }

    /// The identifiers outside parentheses, lowercased.
    fn top_words(&self) -> impl Iterator<Item = &str> {
        self.words
            .iter()
            .filter(|(_, depth)| *depth == 0)
            .map(|(w, _)| w.as_str())
    }

    fn first_words(&self, n: usize) -> Vec<&str> {
        self.top_words().take(n).collect()
    }

    /// The transaction-control command this statement is (`BEGIN`, `COMMIT`, `SAVEPOINT`,
    /// `SET TRANSACTION`...), if it is one. Such a statement would end or change the
    /// transaction tenantctl runs each migration in.
    pub fn transaction_control(&self) -> Option<&'static str> {
        let w = self.first_words(2);
        let first = *w.first()?;
        let second = w.get(1).copied().unwrap_or("");
        Some(match (first, second) {
            ("begin", _) => "BEGIN",
            ("start", "transaction") => "START TRANSACTION",
            ("commit", "prepared") => "COMMIT PREPARED",
            ("commit", _) => "COMMIT",
            ("end", _) => "END",
            ("rollback", "prepared") => "ROLLBACK PREPARED",
            ("rollback", _) => "ROLLBACK",
            ("abort", _) => "ABORT",
            ("savepoint", _) => "SAVEPOINT",
            ("release", _) => "RELEASE",
            ("prepare", "transaction") => "PREPARE TRANSACTION",
            ("set", "transaction") => "SET TRANSACTION",
            _ => return None,
        })
    }

    /// `COPY ... FROM STDIN` or `COPY ... TO STDOUT`: data that psql would stream from or
    /// to the terminal, which a migration file cannot carry.
    pub fn copy_stdio(&self) -> Option<&'static str> {
        let words: Vec<&str> = self.top_words().collect();
        if words.first() != Some(&"copy") {
            return None;
        }
        words.windows(2).find_map(|pair| match pair {
            ["from", "stdin"] => Some("COPY ... FROM STDIN"),
            ["to", "stdout"] => Some("COPY ... TO STDOUT"),
            _ => None,
        })
    }

    /// The statement's first word, lowercased (`alter`, `truncate`, ...), if it has one.
    pub fn first_word(&self) -> Option<&str> {
        self.first_words(1).first().copied()
    }

    /// The command, when this statement changes the whole cluster rather than one
    /// database: roles, databases, tablespaces, server settings (`ALTER SYSTEM`).
    pub fn cluster_wide(&self) -> Option<String> {
        let top = self.first_words(3);
        let first = *top.first()?;
        let second = top.get(1).copied().unwrap_or("");
        let object = match (first, second) {
            (
                "create" | "alter" | "drop",
                "role" | "user" | "group" | "database" | "tablespace",
            ) => second,
            ("alter", "system") => "system",
            ("reassign", "owned") => "owned",
            _ => return None,
        };
        Some(format!(
            "{} {}",
            first.to_uppercase(),
            object.to_uppercase()
        ))
    }

    /// The command, when this statement cannot run inside a transaction block (such as
    /// `CREATE INDEX CONCURRENTLY` or `VACUUM`).
    pub fn cannot_run_in_transaction(&self) -> Option<String> {
        let top = self.first_words(5);
        let all: Vec<&str> = self.words.iter().map(|(w, _)| w.as_str()).collect();
        let first = *top.first()?;
        let at = |i: usize| top.get(i).copied().unwrap_or("");
        let found = match first {
            "create" | "drop" => {
                let mut i = 1;
                if first == "create" && at(i) == "unique" {
                    i += 1;
                }
                match at(i) {
                    "index" if at(i + 1) == "concurrently" => {
                        format!("{} INDEX CONCURRENTLY", first.to_uppercase())
                    }
                    "database" | "tablespace" | "subscription" => {
                        format!("{} {}", first.to_uppercase(), at(i).to_uppercase())
                    }
                    _ => return None,
                }
            }
            "reindex" => {
                let target = top.get(1).copied().unwrap_or("");
                if all.contains(&"concurrently") {
                    "REINDEX ... CONCURRENTLY".to_string()
                } else if matches!(target, "system" | "database") {
                    format!("REINDEX {}", target.to_uppercase())
                } else {
                    return None;
                }
            }
            "vacuum" => "VACUUM".to_string(),
            "alter" if at(1) == "system" => "ALTER SYSTEM".to_string(),
            // ALTER TABLE t DETACH PARTITION p CONCURRENTLY (the partition named between).
            "alter"
                if at(1) == "table"
                    && all.last() == Some(&"concurrently")
                    && all
                        .windows(2)
                        .position(|w| w == ["detach", "partition"])
                        .is_some_and(|i| i + 3 < all.len()) =>
            {
                "ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY".to_string()
            }
            "alter" if at(1) == "database" && top.contains(&"tablespace") => {
                "ALTER DATABASE ... SET TABLESPACE".to_string()
            }
            "cluster" if top.iter().skip(1).all(|w| *w == "verbose") => {
                "CLUSTER without a table".to_string()
            }
            "discard" if at(1) == "all" => "DISCARD ALL".to_string(),
            _ => return None,
        };
        Some(found)
    }
}

/// The directive a tenant migration starts with when it needs the shared schema at a
/// revision: `-- tenantctl: requires shared N`.
pub const REQUIRES_SHARED: &str = "-- tenantctl: requires shared";

/// The shared revision a file requires: `N` from a `-- tenantctl: requires shared N`
/// among its header lines (those before line `first_statement`, its first statement's),
/// with the line it is on. Every comment line of the header that is written as a
/// directive (`-- tenantctl:` in any case or spacing) must be one exactly:
/// `-- tenantctl: no-transaction` as the first line, one `-- tenantctl: requires shared
/// N`, or any number of `-- tenantctl: allow RULE[, RULE...]` naming lint rules that
/// exist; anything else is an error naming its line, so a misspelt directive is never
/// silently a comment.
pub fn requires_shared(
    sql: &str,
    first_statement: usize,
) -> Result<Option<(i32, usize)>, (usize, String)> {
    let body = sql.strip_prefix('\u{feff}').unwrap_or(sql);
    let known = format!(
        "the directives are `{NO_TRANSACTION}` (the first line), `{REQUIRES_SHARED} N` and `-- tenantctl: allow RULE[, RULE...]` (lint rules allowed in this file), written exactly so"
    );
    let mut found: Option<(i32, usize)> = None;
    for (i, raw) in body.lines().enumerate() {
        let number = i + 1;
        let line = raw.trim_matches(|c: char| c.is_ascii() && is_space(c as u8));
        let (comment, block) = match (line.strip_prefix("--"), line.strip_prefix("/*")) {
            (Some(c), _) => (c, false),
            (None, Some(c)) => (c, true),
            (None, None) => continue,
        };
        if !looks_like_directive(comment) {
            continue;
        }
        if block {
            return Err((
                number,
                format!("a tenantctl directive is a line comment: {known}"),
            ));
        }
        if number >= first_statement {
            return Err((
                number,
                "a tenantctl directive goes before the file's first statement, among its first comment lines".to_string(),
            ));
        }
        if line == NO_TRANSACTION {
            if number == 1 {
                continue;
            }
            return Err((
                number,
                format!("`{NO_TRANSACTION}` must be the file's first line"),
            ));
        }
        let Some(rest) = line.strip_prefix("-- tenantctl: ") else {
            return Err((number, format!("not a tenantctl directive: {known}")));
        };
        if let Some(names) = rest.strip_prefix("allow") {
            let names: Vec<&str> = names.split(',').map(str::trim).collect();
            if !rest["allow".len()..].starts_with(' ') || names.iter().any(|n| n.is_empty()) {
                return Err((
                    number,
                    "`-- tenantctl: allow` needs the lint rules it allows, separated by commas, e.g. `-- tenantctl: allow adding-field-with-default`".to_string(),
                ));
            }
            if let Some(bad) = names
                .iter()
                .find(|n| n.parse::<squawk_linter::Rule>().is_err())
            {
                return Err((
                    number,
                    format!(
                        "{} is not a lint rule; the rules are squawk's (https://squawkhq.com/docs/rules), e.g. adding-not-nullable-field",
                        crate::ident::shown(bad)
                    ),
                ));
            }
            continue;
        }
        let words: Vec<&str> = rest.split_ascii_whitespace().collect();
        let ["requires", "shared", n] = words[..] else {
            return Err((number, format!("not a tenantctl directive: {known}")));
        };
        let version = match n.parse::<i32>() {
            Ok(v) if v > 0 && !n.starts_with('+') => v,
            _ => {
                return Err((
                    number,
                    format!(
                        "`{REQUIRES_SHARED} N` needs N to be a shared migration's version (a positive whole number), not {}",
                        crate::ident::shown(n)
                    ),
                ))
            }
        };
        if let Some((_, first)) = found {
            return Err((
                number,
                format!("a second `{REQUIRES_SHARED}` (the first is on line {first}): a file requires one shared revision, the highest it needs"),
            ));
        }
        found = Some((version, number));
    }
    Ok(found)
}

/// Whether a comment's text (after `--` or `/*`) is written as a tenantctl directive, in
/// any case, spacing or punctuation: `tenantctl:`, `tenant-ctl :`, `tenantctl requires`.
fn looks_like_directive(comment: &str) -> bool {
    let c = comment
        .trim_start_matches(char::is_whitespace)
        .to_lowercase();
    let Some(rest) = c
        .strip_prefix("tenantctl")
        .or_else(|| c.strip_prefix("tenant-ctl"))
        .or_else(|| c.strip_prefix("tenant_ctl"))
    else {
        return false;
    };
    let rest = rest.trim_start_matches(char::is_whitespace);
    rest.starts_with(':')
        || rest.starts_with('\u{ff1a}')
        || rest.starts_with("requires")
        || rest.starts_with("no-transaction")
}

/// Whether a file's first line is the `-- tenantctl: no-transaction` directive.
pub fn is_no_transaction(sql: &str) -> bool {
    let body = sql.strip_prefix('\u{feff}').unwrap_or(sql);
    body.lines().next().map(str::trim_end) == Some(NO_TRANSACTION)
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// A dollar-quote delimiter (`$$` or `$tag$`) starting at `i`, as its length.
fn dollar_delimiter(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if j < b.len() && is_ident_start(b[j]) {
        j += 1;
        while j < b.len() && (is_ident_start(b[j]) || b[j].is_ascii_digit()) {
            j += 1;
        }
    }
    (j < b.len() && b[j] == b'$').then_some(j + 1 - i)
}

struct Lines {
    newlines: Vec<usize>,
}

impl Lines {
    fn new(b: &[u8]) -> Lines {
        Lines {
            newlines: b
                .iter()
                .enumerate()
                .filter(|(_, c)| **c == b'\n')
                .map(|(i, _)| i)
                .collect(),
        }
    }

    /// The 1-based line of byte `i`.
    fn at(&self, i: usize) -> usize {
        self.newlines.partition_point(|n| *n < i) + 1
    }
}

/// Splits a file into its statements, as psql would send them.
///
/// Longer than most functions on purpose: it is one pass of psql's lexer over the bytes,
/// and every branch reads and updates the same state (the statement's start, its words,
/// the parenthesis and `BEGIN ... END` depths). Split into helpers, that state would have
/// to travel through each of them, and the rules would no longer read side by side as
/// psql's do.
pub fn split(sql: &str) -> Result<Vec<Statement>, SplitError> {
    let body = sql.strip_prefix('\u{feff}').unwrap_or(sql);
    let b = body.as_bytes();
    let lines = Lines::new(b);
    let err = |i: usize, message: String| SplitError {
        line: lines.at(i),
        message,
    };
    let mut out = Vec::new();
    // The current statement: where it starts, whether it holds more than comments, its
    // words, and psql's counters.
    let mut start: Option<usize> = None;
    let mut significant = false;
    let mut words: Vec<(String, u32)> = Vec::new();
    let mut paren: u32 = 0;
    let mut begin_depth: u32 = 0;
    let mut ident_count: usize = 0;
    let mut idents = [0u8; 4];
    let n = b.len();
    let mut i = 0;
    while i < n {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if is_space(c) {
            i += 1;
            continue;
        }
        if c == b'-' && next == Some(b'-') {
            while i < n && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        start.get_or_insert(i);
        if c == b'/' && next == Some(b'*') {
            let open = i;
            let mut depth = 0u32;
            i += 2;
            loop {
                if i >= n {
                    return Err(err(open, "unterminated /* comment".into()));
                }
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                } else {
                    i += 1;
                }
            }
            continue;
        }
        significant |= c != b';';
        match c {
            b'\'' => i = skip_quoted(b, i, b'\'', false).ok_or_else(|| err(i, "unterminated quoted string".into()))?,
            b'"' => i = skip_quoted(b, i, b'"', false).ok_or_else(|| err(i, "unterminated quoted identifier".into()))?,
            b'$' => {
                if let Some(len) = dollar_delimiter(b, i) {
                    let tag = &b[i..i + len];
                    let from = i + len;
                    match b[from..].windows(len).position(|w| w == tag) {
                        Some(p) => i = from + p + len,
                        None => {
                            return Err(err(
                                i,
                                format!(
                                    "unterminated dollar-quoted string (no closing {})",
                                    String::from_utf8_lossy(tag)
                                ),
                            ))
                        }
                    }
                } else {
                    i += 1;
                    while i < n && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            b'(' => {
                paren += 1;
                i += 1;
            }
            b')' => {
                paren = paren.saturating_sub(1);
                i += 1;
            }
            b';' => {
                i += 1;
                if paren == 0 && begin_depth == 0 {
                    if let Some(s) = start.take() {
                        if significant {
                            out.push(Statement {
                                text: body[s..i].to_string(),
                                line: lines.at(s),
                                words: std::mem::take(&mut words),
                            });
                        }
                    }
                    significant = false;
                    words.clear();
                    ident_count = 0;
                }
            }
            b'\\' => {
                return Err(err(
                    i,
                    "a psql meta-command (backslash command) is not SQL; tenantctl sends statements to the server as they are and cannot run it".into(),
                ))
            }
            b'0'..=b'9' => {
                while i < n && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            _ if is_ident_start(c) => {
                let lower = c.to_ascii_lowercase();
                if lower == b'e' && next == Some(b'\'') {
                    i = skip_quoted(b, i + 1, b'\'', true)
                        .ok_or_else(|| err(i, "unterminated quoted string".into()))?;
                    continue;
                }
                if matches!(lower, b'b' | b'x' | b'n') && next == Some(b'\'') {
                    // A bit, hex or national string: the prefix is not an identifier.
                    i += 1;
                    continue;
                }
                if lower == b'u'
                    && next == Some(b'&')
                    && matches!(b.get(i + 2), Some(b'\'') | Some(b'"'))
                {
                    i += 2;
                    continue;
                }
                let s = i;
                while i < n && is_ident_cont(b[i]) {
                    i += 1;
                }
                let word = body[s..i].to_ascii_lowercase();
                // psql's heuristic for SQL-standard function bodies: inside a statement
                // that starts CREATE [OR REPLACE] FUNCTION|PROCEDURE, outside
                // parentheses, BEGIN ... END (and CASE ... END within it) nest.
                if ident_count == 0 {
                    idents = [0; 4];
                }
                if matches!(
                    word.as_str(),
                    "create" | "function" | "procedure" | "or" | "replace"
                ) && ident_count < idents.len()
                {
                    idents[ident_count] = word.as_bytes()[0];
                }
                ident_count += 1;
                let routine = idents[0] == b'c'
                    && (idents[1] == b'f'
                        || idents[1] == b'p'
                        || (idents[1] == b'o'
                            && idents[2] == b'r'
                            && (idents[3] == b'f' || idents[3] == b'p')));
                if routine && paren == 0 {
                    match word.as_str() {
                        "begin" => begin_depth += 1,
                        "case" if begin_depth >= 1 => begin_depth += 1,
                        "end" => begin_depth = begin_depth.saturating_sub(1),
                        _ => {}
                    }
                }
                words.push((word, paren));
            }
            _ => i += 1,
        }
    }
    if let Some(s) = start {
        if significant {
            out.push(Statement {
                // psql's whitespace is ASCII's: a trailing U+2000 is part of the statement.
                text: body[s..]
                    .trim_end_matches(|c: char| c.is_ascii() && is_space(c as u8))
                    .to_string(),
                line: lines.at(s),
                words,
            });
        }
    }
    Ok(out)
}

/// The index just past a quoted run starting at `i` (the opening quote), where a doubled
/// quote stands for itself and, with `escapes`, a backslash escapes the next byte.
fn skip_quoted(b: &[u8], i: usize, quote: u8, escapes: bool) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        let c = b[j];
        if escapes && c == b'\\' {
            j += 2;
        } else if c == quote {
            if b.get(j + 1) == Some(&quote) {
                j += 2;
            } else {
                return Some(j + 1);
            }
        } else {
            j += 1;
        }
    }
    None
}

/// `text` without `--` comments, with runs of whitespace (outside quotes) as one space:
/// two statements that normalise alike are the same to the server.
pub fn normalize(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut pending_space = false;
    let push = |out: &mut String, piece: &str, pending: &mut bool| {
        if *pending && !out.is_empty() {
            out.push(' ');
        }
        *pending = false;
        out.push_str(piece);
    };
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        let end = if is_space(c) {
            pending_space = true;
            i += 1;
            continue;
        } else if c == b'-' && next == Some(b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            pending_space = true;
            continue;
        } else if c == b'\'' || c == b'"' {
            skip_quoted(b, i, c, false)
        } else if (c == b'e' || c == b'E')
            && next == Some(b'\'')
            && (i == 0 || !is_ident_cont(b[i - 1]))
        {
            skip_quoted(b, i + 1, b'\'', true)
        } else if c == b'$' && (i == 0 || !is_ident_cont(b[i - 1])) {
            dollar_delimiter(b, i).and_then(|len| {
                let tag = &b[i..i + len];
                b[i + len..]
                    .windows(len)
                    .position(|w| w == tag)
                    .map(|p| i + len + p + len)
            })
        } else {
            None
        };
        let end = end.unwrap_or(i + text[i..].chars().next().map_or(1, char::len_utf8));
        push(&mut out, &text[i..end], &mut pending_space);
        i = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<String> {
        split(sql).unwrap().into_iter().map(|s| s.text).collect()
    }

    fn lines(sql: &str) -> Vec<usize> {
        split(sql).unwrap().into_iter().map(|s| s.line).collect()
    }

    #[test]
    fn semicolons_end_statements_with_their_lines() {
        let sql = "CREATE TABLE a (id int);\n\nINSERT INTO a VALUES (1);  SELECT 1;\nSELECT\n  2";
        assert_eq!(
            texts(sql),
            [
                "CREATE TABLE a (id int);",
                "INSERT INTO a VALUES (1);",
                "SELECT 1;",
                "SELECT\n  2"
            ]
        );
        assert_eq!(lines(sql), [1, 3, 3, 4]);
    }

    #[test]
    fn quotes_and_escapes_hide_semicolons() {
        assert_eq!(
            texts("SELECT 'a;''b'; SELECT E'c\\';d\\\\'; SELECT \"x;\"\"y\" FROM t;"),
            [
                "SELECT 'a;''b';",
                "SELECT E'c\\';d\\\\';",
                "SELECT \"x;\"\"y\" FROM t;"
            ]
        );
        // A backslash is an ordinary character in a standard string.
        assert_eq!(
            texts("SELECT 'a\\'; SELECT 2;"),
            ["SELECT 'a\\';", "SELECT 2;"]
        );
        // e' after an identifier character is not an E string.
        assert_eq!(
            texts("SELECT name'x\\'; SELECT 2;"),
            ["SELECT name'x\\';", "SELECT 2;"]
        );
        assert_eq!(
            texts("SELECT B'01', X'ff;', N'n;', U&'u;', U&\"i;\"; SELECT 2"),
            ["SELECT B'01', X'ff;', N'n;', U&'u;', U&\"i;\";", "SELECT 2"]
        );
    }

    #[test]
    fn dollar_quotes_with_tags_and_parameters() {
        let sql = "CREATE FUNCTION f() RETURNS text AS $body$\nBEGIN RETURN $$a;b$$ || $x$;$x$; END;\n$body$ LANGUAGE plpgsql;\nPREPARE p AS SELECT $1; SELECT a$b$c FROM t$1;\nDO $$ BEGIN PERFORM 1; END $$;";
        let got = texts(sql);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got[0].ends_with("$body$ LANGUAGE plpgsql;"));
        assert_eq!(got[1], "PREPARE p AS SELECT $1;");
        assert_eq!(got[2], "SELECT a$b$c FROM t$1;");
        assert_eq!(lines(sql), [1, 4, 4, 5]);
        // $tag$ inside $$ does not end it; a near miss does not either.
        assert_eq!(
            texts("SELECT $$ $a$ ; $ab $$; SELECT $a$ $$;$ $b$ $a$;"),
            ["SELECT $$ $a$ ; $ab $$;", "SELECT $a$ $$;$ $b$ $a$;"]
        );
    }

    #[test]
    fn comments_nest_and_hide_everything() {
        let sql =
            "-- lead; comment 'x\n/* a /* b; */ c; ' */ SELECT 1; -- after; \"\nSELECT /* ; */ 2;";
        assert_eq!(
            texts(sql),
            ["/* a /* b; */ c; ' */ SELECT 1;", "SELECT /* ; */ 2;"]
        );
        assert_eq!(lines(sql), [2, 3]);
        // An operator running into -- or /* stops there.
        assert_eq!(
            texts("SELECT 1+--x;\n2; SELECT 3"),
            ["SELECT 1+--x;\n2;", "SELECT 3"]
        );
    }

    #[test]
    fn parentheses_hold_semicolons() {
        assert_eq!(
            texts("CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); DELETE FROM b); SELECT 1;"),
            [
                "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); DELETE FROM b);",
                "SELECT 1;"
            ]
        );
        // An unbalanced ) does not go below zero.
        assert_eq!(texts("SELECT 1); SELECT 2;"), ["SELECT 1);", "SELECT 2;"]);
    }

    #[test]
    fn begin_atomic_bodies_hold_semicolons() {
        let sql = "CREATE OR REPLACE FUNCTION f(a int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT CASE WHEN a > 0 THEN 1 ELSE 2 END;\n  SELECT a;\nEND;\nCREATE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END; SELECT 1;";
        let got = texts(sql);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].ends_with("SELECT a;\nEND;"));
        assert_eq!(
            got[1],
            "CREATE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END;"
        );
        // Outside CREATE FUNCTION/PROCEDURE, BEGIN is a statement of its own.
        assert_eq!(
            texts("BEGIN; SELECT 1; END;"),
            ["BEGIN;", "SELECT 1;", "END;"]
        );
        // Quoted words are not keywords.
        assert_eq!(
            texts("CREATE FUNCTION g() RETURNS int AS 'begin' LANGUAGE sql; SELECT 1;").len(),
            2
        );
    }

    #[test]
    fn bom_and_empty_statements_are_dropped() {
        let sql =
            "\u{feff}SELECT 1;;\n;\n/* only a comment */;\nSELECT 2; -- trailing\n/* tail */\n";
        assert_eq!(texts(sql), ["SELECT 1;", "SELECT 2;"]);
        assert_eq!(lines(sql), [1, 4]);
        assert!(texts("").is_empty());
        assert!(texts("-- nothing\n\n").is_empty());
    }

    #[test]
    fn unterminated_quotes_comments_and_meta_commands_are_errors() {
        for (sql, line, what) in [
            ("SELECT 1;\nSELECT 'abc;", 2, "quoted string"),
            ("SELECT 1;\n\nSELECT $f$ x", 3, "dollar-quoted"),
            ("/* a /* b */", 1, "comment"),
            ("SELECT \"x", 1, "quoted identifier"),
            ("SELECT E'\\'", 1, "quoted string"),
            ("SELECT 1;\n\\set x 1\n", 2, "meta-command"),
            ("SELECT 1 \\; SELECT 2;", 1, "meta-command"),
        ] {
            let e = split(sql).unwrap_err();
            assert_eq!(e.line, line, "{sql}");
            assert!(e.message.contains(what), "{sql}: {}", e.message);
        }
        // A backslash inside quotes or comments is just a character.
        assert_eq!(
            texts("SELECT '\\x'; -- \\q\n/* \\i */ SELECT $$\\$$;").len(),
            2
        );
    }

    #[test]
    fn positions_map_to_file_lines() {
        let s = &split("\n\nSELECT 1,\n  nope,\n  3;").unwrap()[0];
        assert_eq!(s.line, 3);
        let pos = s.text.find("nope").unwrap() as u32 + 1;
        assert_eq!(s.line_of_position(pos), 4);
        assert_eq!(s.line_of_position(1), 3);
        assert_eq!(s.line_of_position(0), 3);
        assert_eq!(s.line_of_position(999), 3);
        // Positions count characters, not bytes.
        let s = &split("SELECT 'é',\n x;").unwrap()[0];
        assert_eq!(s.line_of_position(14), 2);
    }

    #[test]
    fn transaction_control_is_recognised() {
        let kinds: Vec<Option<&str>> = split(
            "BEGIN; begin transaction; START TRANSACTION; COMMIT; END; ROLLBACK; ABORT; SAVEPOINT a; RELEASE a; \
             ROLLBACK TO a; PREPARE TRANSACTION 'x'; COMMIT PREPARED 'x'; ROLLBACK PREPARED 'x'; SET TRANSACTION READ ONLY; \
             PREPARE q AS SELECT 1; SET search_path TO x; DO $$ BEGIN COMMIT; END $$; \
             CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT 'BEGIN'; /* COMMIT */ SELECT 1;",
        )
        .unwrap()
        .iter()
        .map(|s| s.transaction_control())
        .collect();
        assert_eq!(
            kinds,
            [
                Some("BEGIN"),
                Some("BEGIN"),
                Some("START TRANSACTION"),
                Some("COMMIT"),
                Some("END"),
                Some("ROLLBACK"),
                Some("ABORT"),
                Some("SAVEPOINT"),
                Some("RELEASE"),
                Some("ROLLBACK"),
                Some("PREPARE TRANSACTION"),
                Some("COMMIT PREPARED"),
                Some("ROLLBACK PREPARED"),
                Some("SET TRANSACTION"),
                None,
                None,
                None,
                None,
                None,
                None
            ]
        );
    }

    #[test]
    fn statements_that_need_no_transaction_are_recognised() {
        let found: Vec<Option<String>> = split(
            "CREATE INDEX CONCURRENTLY i ON t (a); create unique index concurrently j on t (b); DROP INDEX CONCURRENTLY i; \
             REINDEX INDEX CONCURRENTLY i; REINDEX (VERBOSE, CONCURRENTLY) TABLE t; REINDEX SYSTEM; VACUUM t; \
             CREATE DATABASE d; DROP DATABASE d; CREATE TABLESPACE s LOCATION '/x'; DROP TABLESPACE s; ALTER SYSTEM SET x = 1; \
             CLUSTER; CLUSTER VERBOSE; DISCARD ALL; ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY; \
             CREATE INDEX i ON t (a); REINDEX TABLE t; CLUSTER t USING i; CREATE TABLE concurrently (a int); SELECT 'VACUUM'; \
             ALTER TABLE p DETACH PARTITION concurrently;",
        )
        .unwrap()
        .iter()
        .map(|s| s.cannot_run_in_transaction())
        .collect();
        let expected: Vec<Option<String>> = [
            Some("CREATE INDEX CONCURRENTLY"),
            Some("CREATE INDEX CONCURRENTLY"),
            Some("DROP INDEX CONCURRENTLY"),
            Some("REINDEX ... CONCURRENTLY"),
            Some("REINDEX ... CONCURRENTLY"),
            Some("REINDEX SYSTEM"),
            Some("VACUUM"),
            Some("CREATE DATABASE"),
            Some("DROP DATABASE"),
            Some("CREATE TABLESPACE"),
            Some("DROP TABLESPACE"),
            Some("ALTER SYSTEM"),
            Some("CLUSTER without a table"),
            Some("CLUSTER without a table"),
            Some("DISCARD ALL"),
            Some("ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY"),
            None,
            None,
            None,
            None,
            None,
            None,
        ]
        .iter()
        .map(|s| s.map(String::from))
        .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn copy_with_inline_data_is_recognised() {
        let s = split("COPY t (a, b) FROM STDIN; COPY (SELECT 1) TO STDOUT; COPY t FROM '/tmp/x'; SELECT 'from stdin';").unwrap();
        let found: Vec<Option<&str>> = s.iter().map(|s| s.copy_stdio()).collect();
        assert_eq!(
            found,
            [
                Some("COPY ... FROM STDIN"),
                Some("COPY ... TO STDOUT"),
                None,
                None
            ]
        );
    }

    #[test]
    fn a_requires_directive_is_read_in_the_header_only() {
        let all = usize::MAX;
        assert_eq!(
            requires_shared(
                "-- V3: invoices\n\n-- tenantctl: requires shared 2\nCREATE TABLE t ();",
                4
            ),
            Ok(Some((2, 3)))
        );
        assert_eq!(
            requires_shared(
                "-- tenantctl: no-transaction\n-- tenantctl: requires shared 7  \r\n",
                all
            ),
            Ok(Some((7, 2)))
        );
        assert_eq!(
            requires_shared("-- tenantctl: requires shared\t 3\n", all),
            Ok(Some((3, 1)))
        );
        // After the first statement, or in a block comment, it is an error, never a
        // comment.
        assert_eq!(
            requires_shared("CREATE TABLE t ();\n-- tenantctl: requires shared 2\n", 1)
                .map_err(|e| e.0),
            Err(2)
        );
        assert_eq!(
            requires_shared("/* tenantctl: requires shared 2 */\nSELECT 1;\n", 2).map_err(|e| e.0),
            Err(1)
        );
        assert_eq!(
            requires_shared("-- nothing here\n-- tenantctl handles this\n", all),
            Ok(None)
        );
        for bad in ["x", "0", "-1", "+2", "2.5", "", "99999999999", "2 -- note"] {
            let file = format!("-- tenantctl: requires shared {bad}\n");
            assert_eq!(
                requires_shared(&file, all).map_err(|e| e.0),
                Err(1),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_misspelt_directive_is_an_error_never_a_comment() {
        let all = usize::MAX;
        for bad in [
            "-- tenantctl:\trequires shared 2",
            "--tenantctl: requires shared 2",
            "-- tenantctl:requires shared 2",
            "--  tenantctl: requires shared 2",
            "-- TENANTCTL: REQUIRES SHARED 2",
            "-- tenantctl: require shared 2",
            "-- tenantctl: requires tenant 1",
            "-- tenantctl: frobnicate",
            "-- Tenantctl : no-transaction",
            "-- tenantctl: requires sharedness 2",
            "-- tenantctl requires shared 2",
            "--\u{a0}tenantctl: requires shared 2",
            "-- tenantctl\u{ff1a} requires shared 2",
            "-- tenant-ctl: requires shared 2",
        ] {
            let file = format!("-- header\n{bad}\nSELECT 1;\n");
            let e = requires_shared(&file, 3).unwrap_err();
            assert_eq!(e.0, 2, "{bad:?}: {e:?}");
        }
        // no-transaction anywhere but the first line.
        let e = requires_shared("-- x\n-- tenantctl: no-transaction\n", all).unwrap_err();
        assert!(e.1.contains("first line"), "{e:?}");
        // Two requires lines.
        let e = requires_shared(
            "-- tenantctl: requires shared 1\n-- tenantctl: requires shared 2\n",
            all,
        )
        .unwrap_err();
        assert_eq!(e.0, 2);
        assert!(e.1.contains("second"), "{e:?}");
    }

    #[test]
    fn the_directive_is_the_first_line() {
        assert!(is_no_transaction(
            "-- tenantctl: no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);"
        ));
        assert!(is_no_transaction(
            "\u{feff}-- tenantctl: no-transaction  \r\n"
        ));
        assert!(!is_no_transaction("\n-- tenantctl: no-transaction\n"));
        assert!(!is_no_transaction("-- tenantctl: no-transactions\n"));
    }

    #[test]
    fn only_psqls_whitespace_is_trimmed_from_a_last_statement() {
        // U+2000 is whitespace to Unicode, not to psql or the server: it stays, and the
        // server refuses it as psql would have it do.
        let alone = split("\u{2000}").unwrap();
        assert_eq!(alone.len(), 1);
        assert_eq!(alone[0].text, "\u{2000}");
        let after = split("SELECT 1\u{2000} \n\t").unwrap();
        assert_eq!(after[0].text, "SELECT 1\u{2000}");
    }

    #[test]
    fn normalising_drops_line_comments_and_extra_whitespace_only() {
        assert_eq!(
            normalize("SELECT  1, -- c\n  '  a  -- b',\n $$ x  y $$ /* k  */;"),
            "SELECT 1, '  a  -- b', $$ x  y $$ /* k */;"
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        for sql in [
            "\u{feff}",
            "$",
            "$a",
            "E'",
            "'",
            "/*",
            "-",
            "é$é$ é$é$;",
            "U&",
            "e",
            "(((",
            ")))",
            "\u{feff}\u{feff}x",
        ] {
            let _ = split(sql);
            let _ = normalize(sql);
        }
    }
}
