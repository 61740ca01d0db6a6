//! The README's and the book's quick start and the tutorial, run exactly as written, and
//! the book's command-line reference, checked against the binary's `--help`.
//!
//! Each ```` ```console ```` block of `README.md`, `docs/src/quickstart.md` and
//! `docs/src/tutorial.md`
//! is a terminal session: a line `$ COMMAND` is run by bash (lines `> ...` after it
//! continue it, as a terminal shows a heredoc), and the lines after it, up to the next
//! `$`, are what it prints (stdout and stderr together, as on a terminal). In what it
//! prints, `[..]` stands for any text within a line and a line `...` for any number of
//! lines; a first line `? N` says the command exits with N (else it must exit 0). A
//! command followed by no lines may print anything.
//!
//! Every page starts in an empty directory of its own, against a throwaway cluster the
//! libpq variables point at (`PGHOST`, `PGPORT`, `PGUSER`), with tenantctl and the
//! PostgreSQL client programs on `PATH`, so `createdb church` and `tenantctl init` reach
//! it as they reach a local server on a newcomer's machine. The variables a command
//! exports and the directory it changes to carry over to the next command, as in one
//! shell. A page that drifts from the tool fails here, naming the file and line.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;

use crate::cluster::Cluster;

/// One command of a page, with where it is and what it must print.
struct Step {
    line: usize,
    command: String,
    expected: Vec<String>,
    code: i32,
    checked: bool,
}

/// The commands of the ```` ```console ```` blocks of `text`.
fn steps(text: &str) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut in_console = false;
    for (i, line) in text.lines().enumerate() {
        if !in_console {
            in_console = line.trim_end() == "```console";
            continue;
        }
        if line.trim_end() == "```" {
            in_console = false;
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            out.push(Step {
                line: i + 1,
                command: command.to_string(),
                expected: Vec::new(),
                code: 0,
                checked: false,
            });
            continue;
        }
        let step = out
            .last_mut()
            .unwrap_or_else(|| panic!("line {}: output before any `$ ` command", i + 1));
        if let Some(more) = line
            .strip_prefix("> ")
            .or(if line == ">" { Some("") } else { None })
        {
            if step.expected.is_empty() && !step.checked {
                step.command.push('\n');
                step.command.push_str(more);
                continue;
            }
        }
        if !step.checked {
            step.checked = true;
            if let Some(code) = line.strip_prefix("? ") {
                step.code = code.trim().parse().unwrap_or_else(|_| {
                    panic!("line {}: `? N` needs an exit code, not {code:?}", i + 1)
                });
                continue;
            }
        }
        step.expected.push(line.to_string());
    }
    out
}

/// Whether `actual` is what `pattern` allows, `[..]` matching any text.
fn line_matches(pattern: &str, actual: &str) -> bool {
    let parts: Vec<&str> = pattern.split("[..]").collect();
    if parts.len() == 1 {
        return pattern == actual;
    }
    let Some(mut rest) = actual.strip_prefix(parts[0]) else {
        return false;
    };
    for (k, part) in parts.iter().enumerate().skip(1) {
        if k == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Whether `actual` is what the `expected` lines allow, a line `...` matching any
/// number of lines.
fn lines_match(expected: &[String], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((first, rest)) => match actual.split_first() {
            Some((a, more)) => line_matches(first, a) && lines_match(rest, more),
            None => false,
        },
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs every command of the page `relative` (to the repository) as written.
fn run_page(relative: &str) {
    let path = repo().join(relative);
    let text = std::fs::read_to_string(&path).unwrap();
    let steps = steps(&text);
    assert!(steps.len() >= 5, "{relative}: too few commands found");
    let cluster = Cluster::trusting("max_connections = 100");
    let work = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let env_file = state.path().join("env");
    let pwd_file = state.path().join("pwd");
    std::fs::write(&env_file, "").unwrap();
    std::fs::write(&pwd_file, work.path().display().to_string()).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_tenantctl"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path_var = format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        bin.display(),
        crate::cluster::server_bin_dir().display()
    );
    for step in &steps {
        // One shell's state carried from command to command: its exports and its
        // directory.
        let script = format!(
            "exec 2>&1\n. {env} && cd \"$(cat {pwd})\" && {{\n{command}\n}}\nrc=$?\nexport -p > {env}\npwd > {pwd}\nexit $rc\n",
            pwd = pwd_file.display(),
            env = env_file.display(),
            command = step.command,
        );
        let mut cmd = Command::new("bash");
        crate::support::scrub(&mut cmd);
        cmd.env_clear()
            .env("PATH", &path_var)
            .env("HOME", work.path())
            .env("LANG", "C.UTF-8")
            .env("PGHOST", cluster.dir())
            .env("PGPORT", cluster.port.to_string())
            .env("PGUSER", "postgres")
            .env("COLUMNS", "100")
            .arg("-c")
            .arg(&script)
            .stdin(std::process::Stdio::null());
        let out = cmd.output().expect("run bash");
        // Everything went to stdout (`exec 2>&1`); stderr holds only bash's own errors.
        let printed = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let code = out.status.code().unwrap_or(-1);
        let actual: Vec<&str> = printed.lines().collect();
        let place = format!("{}:{}", path.display(), step.line);
        assert_eq!(
            code, step.code,
            "{place}: `{}` exited with {code}, the page says {}; it printed:\n{printed}",
            step.command, step.code
        );
        assert!(
            !step.checked || lines_match(&step.expected, &actual),
            "{place}: `{}` printed what the page does not show.\n--- the page:\n{}\n--- printed:\n{printed}",
            step.command,
            step.expected.join("\n")
        );
    }
}

#[test]
fn the_harness_reads_commands_outputs_and_exit_codes_and_matches_wildcards() {
    let page = "text\n```console\n$ a\none [..] three\n...\nlast\n$ cat > f <<'X'\n> x\n> X\n$ false\n? 1\n```\n```sh\n$ not run\n```\n";
    let s = steps(page);
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].command, "a");
    assert_eq!(s[0].expected, ["one [..] three", "...", "last"]);
    assert!(s[0].checked);
    assert_eq!(s[1].command, "cat > f <<'X'\nx\nX");
    assert!(!s[1].checked);
    assert_eq!((s[2].code, s[2].checked), (1, true));
    assert!(lines_match(
        &s[0].expected,
        &["one two three", "a", "b", "last"]
    ));
    assert!(lines_match(&s[0].expected, &["one  three", "last"]));
    assert!(!lines_match(&s[0].expected, &["one two four", "last"]));
    assert!(!lines_match(&s[0].expected, &["one two three"]));
    assert!(!lines_match(&["a".to_string()], &["a", "b"]));
}

#[test]
fn the_quick_start_runs_as_written() {
    run_page("docs/src/quickstart.md");
}

#[test]
fn the_readmes_quick_start_runs_as_written() {
    run_page("README.md");
}

#[test]
fn the_tutorial_runs_as_written() {
    run_page("docs/src/tutorial.md");
}

/// Every command's path (`["tenant", "create"]`), root first, as clap defines them.
fn command_paths() -> Vec<Vec<String>> {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(path.clone());
        for sub in cmd.get_subcommands() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            path.push(sub.get_name().to_string());
            walk(sub, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(&tenantctl::cli::Cli::command(), &mut Vec::new(), &mut out);
    out
}

/// The command lines of a help's Examples section: from `tenantctl` to the end of the
/// line or a shell `#`, `|`, `>`, `&&`, `||`, split into words (double quotes kept
/// together).
fn examples(help: &str) -> Vec<Vec<String>> {
    let Some((_, section)) = help.split_once("\nExamples:\n") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in section.lines().take_while(|l| l.starts_with("  ")) {
        let Some(at) = line.find("tenantctl ") else {
            continue;
        };
        let mut command = &line[at..];
        for stop in [" #", " |", " >", " &&", " ||"] {
            if let Some(end) = command.find(stop) {
                command = &command[..end];
            }
        }
        let (mut words, mut word, mut quoted) = (Vec::new(), String::new(), false);
        for c in command.chars() {
            match c {
                '"' => quoted = !quoted,
                ' ' if !quoted => {
                    if !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                }
                c => word.push(c),
            }
        }
        if !word.is_empty() {
            words.push(word);
        }
        out.push(words);
    }
    out
}

/// `docs/src/reference/cli.md` is what the binary's `--help` says, command by command;
/// `TENANTCTL_BLESS=1` rewrites it. Every command's help has an Examples section, and
/// every example parses as the command line it shows.
#[test]
fn the_command_line_reference_is_the_binarys_help() {
    let mut page = String::from(
        "# Command-line help\n\nWhat `tenantctl COMMAND --help` prints, for every command. This page is \
         generated from the binary and checked against it by the test suite; the man pages \
         (`tenantctl manpages DIR`) come from the same definitions. [Commands](commands.md) \
         explains them.\n",
    );
    for path in command_paths() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let run = crate::support::bare().run(&args);
        run.expect(0);
        let help = run.stdout.as_str();
        assert!(
            help.contains("\nExamples:\n"),
            "`tenantctl {}` has no Examples section in its help",
            path.join(" ")
        );
        for example in examples(help) {
            let parsed = tenantctl::cli::Cli::try_parse_from(&example);
            assert!(
                parsed.is_ok(),
                "the example `{}` in the help of `tenantctl {}` does not parse: {}",
                example.join(" "),
                path.join(" "),
                parsed.err().map(|e| e.to_string()).unwrap_or_default()
            );
        }
        let title = if path.is_empty() {
            "tenantctl".to_string()
        } else {
            format!("tenantctl {}", path.join(" "))
        };
        page.push_str(&format!(
            "\n## `{title}`\n\n```text\n{}\n```\n",
            run.stdout.trim_end()
        ));
    }
    let file = repo().join("docs/src/reference/cli.md");
    if std::env::var("TENANTCTL_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&file, &page).unwrap();
    }
    let committed = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        committed == page,
        "docs/src/reference/cli.md is not what the binary's --help says; rewrite it with \
         TENANTCTL_BLESS=1 (cargo test --test suite -- docs_examples::the_command_line)"
    );
}

/// The id mdBook and GitHub give a heading: lower case, spaces as `-`, only letters,
/// digits, `-` and `_` kept.
fn heading_id(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            c if c.is_whitespace() => Some('-'),
            _ => None,
        })
        .collect()
}

/// The ids of the headings of a Markdown text (outside code blocks).
fn heading_ids(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut ids = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            ids.push(heading_id(line.trim_start_matches('#')));
        }
    }
    ids
}

/// Every relative link of the README, CONTRIBUTING.md and the book leads to a file that
/// exists, and to a heading that exists when it names one.
#[test]
fn every_link_of_the_docs_leads_somewhere() {
    let mut pages = vec![repo().join("README.md"), repo().join("CONTRIBUTING.md")];
    let mut dirs = vec![repo().join("docs/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                pages.push(path);
            }
        }
    }
    assert!(pages.len() > 20, "too few pages: {pages:?}");
    let mut broken = Vec::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let mut in_code = false;
        for (n, line) in text.lines().enumerate() {
            if line.starts_with("```") {
                in_code = !in_code;
            }
            if in_code {
                continue;
            }
            for (at, _) in line.match_indices("](") {
                let rest = &line[at + 2..];
                let Some(end) = rest.find(')') else { continue };
                let target = &rest[..end];
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
                let dest = if file.is_empty() {
                    page.clone()
                } else {
                    page.parent().unwrap().join(file)
                };
                let place = format!("{}:{}: {target}", page.display(), n + 1);
                if !dest.exists() {
                    broken.push(format!("{place}: no such file"));
                } else if !anchor.is_empty() && dest.extension().is_some_and(|e| e == "md") {
                    let ids = heading_ids(&std::fs::read_to_string(&dest).unwrap());
                    if !ids.iter().any(|id| id == anchor) {
                        broken.push(format!("{place}: no such heading"));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The reference names everything the binary has: every JSON Schema is linked from
/// `reference/json.md`, every setting `config show` lists is in
/// `reference/configuration.md`, every metric `metrics` prints is in
/// `how-to/monitoring.md`, and every exit code is in `reference/exit-codes.md`.
#[test]
fn the_reference_names_every_schema_setting_metric_and_exit_code() {
    let read = |p: &str| std::fs::read_to_string(repo().join("docs/src").join(p)).unwrap();
    let json = read("reference/json.md");
    for (name, _) in tenantctl::cli::schemas::all() {
        assert!(
            json.contains(&format!("(schemas/{name}.json)")),
            "reference/json.md does not link the schema of {name}"
        );
    }
    let (_db, t) = crate::support::ready();
    let shown: serde_json::Value = t.run(&["config", "show", "-o", "json"]).expect(0).json();
    let configuration = read("reference/configuration.md");
    let keys = shown["settings"].as_array().unwrap();
    assert!(keys.len() > 15, "{shown}");
    for entry in keys {
        let key = entry["key"].as_str().unwrap();
        assert!(
            configuration.contains(&format!("`{key}`")),
            "reference/configuration.md does not name the setting `{key}`"
        );
    }
    t.run(&["tenant", "create", "a", "--name", "A", "--migrate"])
        .expect(0);
    t.run(&["upgrade", "--all"]).expect(0);
    let metrics: serde_json::Value = t.run(&["metrics", "-o", "json"]).expect(0).json();
    let monitoring = read("how-to/monitoring.md");
    let samples = metrics["metrics"].as_array().unwrap();
    assert!(samples.len() > 5, "{metrics}");
    for sample in samples {
        let name = sample["name"].as_str().unwrap();
        assert!(
            monitoring.contains(name),
            "how-to/monitoring.md does not name the metric {name}"
        );
    }
    let exit_codes = read("reference/exit-codes.md");
    for code in [0, 1, 2, 3, 4, 5, 130] {
        assert!(
            exit_codes.contains(&format!("\n| {code} |")),
            "reference/exit-codes.md does not explain exit code {code}"
        );
    }
}
