//! The layers of `src/` hold: reads every source file, follows each `crate::` and `super::`
//! path to the file it names, and fails, naming the line, when a path crosses a forbidden
//! boundary (a face into the other face, a lower layer into a higher one) or when files
//! import each other in a circle. It also checks that every module says what it is for in
//! a `//!` header. The allowed directions are [`LAYERS`], the same table as
//! `ARCHITECTURE.md`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top first; each names the first path segments (under `src/`) that belong to
/// it. A file may use its own folder and any layer below its own. The two faces share a
/// rank and may not use each other. The ground modules may use each other (no circle).
const LAYERS: &[(&str, &[&str])] = &[
    ("root", &["main", "lib", "fuzzing"]),
    ("face", &["cli", "serve"]),
    ("app", &["app"]),
    ("data", &["data"]),
    ("engine", &["engine"]),
    ("registry", &["registry"]),
    ("pg", &["pg"]),
    ("files", &["files"]),
    (
        "ground",
        &[
            "apikey",
            "config",
            "error",
            "failpoint",
            "ident",
            "show",
            "timestamp",
        ],
    ),
];

/// A source file: its path under `src/` and its text.
struct Source {
    path: String,
    text: String,
}

/// One use of another file: where (path, line), which file, and the text of the line.
#[derive(Debug, Clone)]
struct Use {
    from: String,
    line: usize,
    to: String,
    code: String,
}

fn src_files() -> Vec<Source> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<Source>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, root, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let path = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push(Source {
                    path,
                    text: std::fs::read_to_string(&p).unwrap(),
                });
            }
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out
}

/// The module path of a file: `data/online.rs` is `[data, online]`, `data/mod.rs` is
/// `[data]`, `lib.rs` and `main.rs` are the crate root.
fn module_of(path: &str) -> Vec<String> {
    let stem = path.strip_suffix(".rs").unwrap_or(path);
    let mut parts: Vec<String> = stem.split('/').map(String::from).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

/// The file that module path `m` (or the deepest module on it that is a file) lives in.
fn file_of(m: &[String], files: &BTreeSet<String>) -> Option<String> {
    (1..=m.len()).rev().find_map(|n| {
        let base = m[..n].join("/");
        [format!("{base}.rs"), format!("{base}/mod.rs")]
            .into_iter()
            .find(|f| files.contains(f))
    })
}

/// The text of a file without its comments and its `#[cfg(test)]` modules (whose
/// `super::` means the file itself), line by line.
fn code_lines(text: &str) -> Vec<String> {
    let cut = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..cut]
        .lines()
        .map(|l| {
            // A `//` inside a string (a URL) ends nothing; one after code or at the start
            // of the line does. Good enough for this crate's code, which keeps paths
            // out of strings.
            let mut in_str = false;
            let b = l.as_bytes();
            let mut end = l.len();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'\\' if in_str => i += 1,
                    b'"' => in_str = !in_str,
                    b'/' if !in_str && b.get(i + 1) == Some(&b'/') => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
                i += 1;
            }
            l[..end].to_string()
        })
        .collect()
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The module paths a line names, each resolved from `here` (the file's module path).
fn paths_in(line: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find(['c', 's', '$']) {
        let s = &rest[at..];
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let start: Option<(Vec<String>, &str)> = if preceded {
            None
        } else if let Some(tail) = s.strip_prefix("crate::").or(s.strip_prefix("$crate::")) {
            Some((Vec::new(), tail))
        } else if s.starts_with("super::") {
            let mut base = here.to_vec();
            let mut tail = s;
            while let Some(t) = tail.strip_prefix("super::") {
                base.pop();
                tail = t;
            }
            Some((base, tail))
        } else {
            None
        };
        let Some((mut base, mut tail)) = start else {
            rest = &rest[at + 1..];
            continue;
        };
        loop {
            if let Some(group) = tail.strip_prefix('{') {
                // `use crate::data::{self, catalog::Catalog, moving}`: the first name of
                // each item, at the top level of the braces.
                let (items, after) = top_level_items(group);
                for item in items {
                    let name = ident_at(item.trim());
                    if !name.is_empty() && name != "self" {
                        let mut p = base.clone();
                        p.push(name.to_string());
                        found.push(p);
                    }
                }
                tail = after;
                break;
            }
            let name = ident_at(tail);
            if name.is_empty() {
                break;
            }
            base.push(name.to_string());
            tail = &tail[name.len()..];
            match tail.strip_prefix("::") {
                Some(t) => tail = t,
                None => break,
            }
        }
        found.push(base);
        let used = s.len() - tail.len();
        rest = &s[used.max(1)..];
    }
    found
}

/// The items of a `{...}` group split at its top-level commas, and the text after its
/// closing brace.
fn top_level_items(group: &str) -> (Vec<&str>, &str) {
    let mut depth = 0;
    let mut items = Vec::new();
    let mut start = 0;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..i]);
                return (items, &group[i + 1..]);
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    (items, "")
}

/// Every use of another file in `sources`.
fn uses(sources: &[Source]) -> Vec<Use> {
    let files: BTreeSet<String> = sources.iter().map(|s| s.path.clone()).collect();
    let mut out = Vec::new();
    for s in sources {
        let here = module_of(&s.path);
        let lines = code_lines(&s.text);
        let mut n = 0;
        while n < lines.len() {
            // A group that rustfmt broke over lines is read as one line, its first.
            let mut line = lines[n].clone();
            let first = n;
            let open = |l: &str| l.matches('{').count() as i64 - l.matches('}').count() as i64;
            if line.contains("::{") {
                while open(&line) > 0 && n + 1 < lines.len() {
                    n += 1;
                    line.push(' ');
                    line.push_str(lines[n].trim());
                }
            }
            n += 1;
            for m in paths_in(&line, &here) {
                if let Some(to) = file_of(&m, &files) {
                    if to != s.path {
                        out.push(Use {
                            from: s.path.clone(),
                            line: first + 1,
                            to,
                            code: line.trim().to_string(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// The layer of a file and its rank (0 is the top), by its first path segment.
fn layer(path: &str) -> (&'static str, usize) {
    let first = path.split('/').next().unwrap_or(path);
    let first = first.strip_suffix(".rs").unwrap_or(first);
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, members))| members.contains(&first))
        .map(|(rank, (name, _))| (*name, rank))
        .unwrap_or_else(|| panic!("src/{path} is in no layer: add its folder to LAYERS"))
}

/// The uses that cross a forbidden boundary, as `src/FILE:LINE: why: code`.
fn forbidden(all: &[Use]) -> Vec<String> {
    let mut out = Vec::new();
    for u in all {
        let (from_layer, from_rank) = layer(&u.from);
        let (to_layer, to_rank) = layer(&u.to);
        let same_folder = u.from.split('/').next() == u.to.split('/').next();
        let why = if same_folder || from_layer == "root" {
            None
        } else if from_layer == "face" && to_layer == "face" {
            Some("a face uses the other face".to_string())
        } else if to_rank < from_rank {
            Some(format!(
                "the {from_layer} layer uses the {to_layer} layer above it"
            ))
        } else if to_rank == from_rank && from_layer != "ground" {
            Some(format!("{from_layer} uses another folder of its rank"))
        } else {
            None
        };
        if let Some(why) = why {
            out.push(format!(
                "src/{}:{}: {why} (src/{}): {}",
                u.from, u.line, u.to, u.code
            ));
        }
    }
    out
}

/// The groups of files that import each other in a circle, each with the uses that tie it.
fn circles(all: &[Use]) -> Vec<String> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for u in all {
        graph.entry(&u.from).or_default().insert(&u.to);
        graph.entry(&u.to).or_default();
    }
    // Tarjan's strongly connected components.
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(v: &'a str, g: &BTreeMap<&'a str, BTreeSet<&'a str>>, s: &mut State<'a>) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        for &w in &g[v] {
            if !s.index.contains_key(w) {
                visit(w, g, s);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.found.push(comp);
            }
        }
    }
    let mut s = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for &v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(v, &graph, &mut s);
        }
    }
    s.found
        .iter()
        .map(|comp| {
            let inside: BTreeSet<&str> = comp.iter().copied().collect();
            let mut ties: Vec<String> = all
                .iter()
                .filter(|u| inside.contains(u.from.as_str()) && inside.contains(u.to.as_str()))
                .map(|u| format!("  src/{}:{} uses src/{}: {}", u.from, u.line, u.to, u.code))
                .collect();
            ties.dedup();
            format!("circle of {}:\n{}", comp.join(", "), ties.join("\n"))
        })
        .collect()
}

/// The files whose first line is not a `//!` header.
fn headerless(sources: &[Source]) -> Vec<String> {
    sources
        .iter()
        .filter(|s| {
            !s.text
                .lines()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.starts_with("//!"))
        })
        .map(|s| format!("src/{} does not begin with a //! header", s.path))
        .collect()
}

#[test]
fn no_use_crosses_a_layer_boundary_upward_or_between_the_faces() {
    let sources = src_files();
    assert!(sources.len() > 40, "too few source files found");
    let all = uses(&sources);
    assert!(all.len() > 200, "too few uses found: {}", all.len());
    let bad = forbidden(&all);
    assert!(
        bad.is_empty(),
        "uses that cross a layer boundary (see ARCHITECTURE.md):\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_files_import_each_other_in_a_circle() {
    let found = circles(&uses(&src_files()));
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn every_module_says_what_it_is_for() {
    let missing = headerless(&src_files());
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// The checks find what they are for: a tree made to break each rule.
#[test]
fn the_architecture_checks_find_an_upward_use_a_face_crossing_and_a_circle() {
    let fake = |path: &str, text: &str| Source {
        path: path.into(),
        text: text.into(),
    };
    let sources = vec![
        fake("lib.rs", "//! root\npub mod cli;\n"),
        fake(
            "registry/mod.rs",
            "//! r\nuse crate::app::tenants::Context;\npub mod conn;\n",
        ),
        fake("registry/conn.rs", "//! c\nuse super::Registry;\n"),
        fake("app/tenants.rs", "//! t\nuse crate::data::moving;\n"),
        fake("app/mod.rs", "//! a\n"),
        fake("data/mod.rs", "//! d\n"),
        fake(
            "data/moving.rs",
            "//! m\n// crate::app::tenants in a comment is no use\nuse super::{online, fence};\n",
        ),
        fake("data/online.rs", "//! o\nfn f() { super::moving::g(); }\n"),
        fake("data/fence.rs", "//! f\n"),
        fake("serve/mod.rs", "//! s\nuse crate::cli::output::revision;\n"),
        fake("cli/mod.rs", "pub mod output;\n"),
        fake("cli/output.rs", "//! o\nuse crate::engine::plan;\n"),
        fake("engine/plan.rs", "//! p\n"),
    ];
    let all = uses(&sources);
    let bad = forbidden(&all);
    assert!(
        bad.iter()
            .any(|b| b.starts_with("src/registry/mod.rs:2: the registry layer uses the app layer")),
        "{bad:?}"
    );
    assert!(
        bad.iter()
            .any(|b| b.starts_with("src/serve/mod.rs:2: a face uses the other face")),
        "{bad:?}"
    );
    assert_eq!(bad.len(), 2, "only those two: {bad:?}");
    let found = circles(&all);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("circle of data/moving.rs, data/online.rs"),
        "{found:?}"
    );
    assert!(
        found[0].contains("src/data/online.rs:2 uses src/data/moving.rs"),
        "{found:?}"
    );
    assert_eq!(
        headerless(&sources),
        vec!["src/cli/mod.rs does not begin with a //! header".to_string()]
    );
}
