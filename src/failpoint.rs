//! Named failpoints at the phase boundaries of the operations that move or replace a
//! tenant's data (restore, import, clone, backup, moves, adoption) or the version
//! index's watch, so that the crash
//! tests can stop the process at exactly those points (the book's "What tenantctl
//! guarantees", crash safety).
//!
//! They exist only in a build with the `failpoints` feature, which the test suite turns
//! on; in any other build [`failpoint!`](crate::failpoint!) expands to nothing. A test
//! arms one through the `FAILPOINTS` environment variable, in the `fail` crate's syntax
//! (`FAILPOINTS='move.switched=pause'`):
//! - `pause` blocks the process there; the test then kills it with SIGKILL, which is what
//!   a crash or `kill -9` at that point does;
//! - `return` makes the operation fail there, as a lost connection would, so its own
//!   error path runs.
//!
//! An armed failpoint that is reached first writes `failpoint NAME` on stderr, so a test
//! knows the process got there (and fails if it never does).

/// Every failpoint, in the order an operation reaches them. The crash tests have one
/// test per name, and a unit test checks that every `failpoint!` in `src/` is listed.
pub const ALL: &[&str] = &[
    // tenant move --to (offline), and the steps an online move shares with it.
    "move.journal-written",
    "move.target-built",
    "move.source-locked",
    "move.copied",
    "move.source-fenced",
    "move.switched",
    "move.old-copy-removed",
    // tenant move --online, before it joins the steps above.
    "online.published",
    "online.subscribed",
    "online.cutover-locked",
    "online.caught-up",
    // tenant restore.
    "restore.leftovers-removed",
    "restore.source-locked",
    "restore.built",
    "restore.loaded",
    "restore.swapped",
    // tenant restore --at and tenant export --at: the scratch recovery, before the
    // restore's own steps above.
    "pitr.restored",
    "pitr.recovered",
    "pitr.exported",
    // tenant import and clone (an import fed by an export).
    "import.schema-built",
    "import.loaded",
    "import.registered",
    // backup (one tenant's archive, then --keep's rotation).
    "backup.written",
    "backup.rotating",
    // init arming the version index's watch: the event triggers made and every row
    // marked, then every row written anew, before the watch is recorded as armed.
    "index.watch-prepared",
    "index.rows-written",
    // adopt alembic.
    "adopt.registry-upgraded",
    "adopt.tenant-stamped",
];

/// Marks a phase boundary called `$name` (listed in [`ALL`]). When armed with `return`,
/// it returns `Err` from the enclosing function (or `async` block) with an error that
/// says so, mapped by `$map` when given; with `return $value`, it returns `$value(error)`
/// itself (for a function that does not return a `Result`).
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        $crate::failpoint!($name, |e| e)
    };
    ($name:literal, return $value:expr) => {
        #[cfg(feature = "failpoints")]
        {
            if let Some(e) = $crate::failpoint::reached($name) {
                #[allow(clippy::redundant_closure_call)]
                return ($value)(e);
            }
        }
    };
    ($name:literal, $map:expr) => {
        #[cfg(feature = "failpoints")]
        {
            if let Some(e) = $crate::failpoint::reached($name) {
                #[allow(clippy::redundant_closure_call)]
                return Err(($map)(e));
            }
        }
    };
}

/// Arms the failpoints the `FAILPOINTS` environment variable names, for the life of the
/// returned guard.
#[cfg(feature = "failpoints")]
pub fn arm() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}

/// Evaluates failpoint `name`: `None` to go on (unarmed, or after a pause that was
/// lifted), `Some(error)` when armed with `return`.
#[cfg(feature = "failpoints")]
pub fn reached(name: &'static str) -> Option<crate::error::Error> {
    debug_assert!(ALL.contains(&name), "failpoint {name} is not listed in ALL");
    if fail::list().iter().any(|(n, _)| n == name) {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("failpoint {name}");
        }
    }
    fail::eval(name, |_| {
        crate::error::Error::new(
            crate::error::ErrorKind::Unavailable,
            format!("failpoint {name}: the operation was cut off here"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::ALL;

    /// Every `failpoint!("...")` in `src/` is listed in [`ALL`], and every listed name is
    /// used.
    #[test]
    fn every_failpoint_in_the_source_is_listed_once() {
        let mut used: Vec<String> = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("failpoint.rs")
                {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (at, _) in text.match_indices("failpoint!(") {
                        let rest = text[at + "failpoint!(".len()..].trim_start();
                        if let Some(name) = rest.strip_prefix('"') {
                            used.push(name[..name.find('"').unwrap()].to_string());
                        }
                    }
                }
            }
        }
        used.sort();
        used.dedup();
        let mut listed: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(
            used, listed,
            "failpoint!() uses in src/ against failpoint::ALL"
        );
    }
}
