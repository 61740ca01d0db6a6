//! The command line's edge: a reader that closes stdout early (`tenantctl ... | head -c1`)
//! ends tenantctl quietly with exit 0, whichever way the results were being written
//! (a printed block, one JSON document, or a streamed dry run).

use crate::support::{self, ready, Run};

/// Asserts the quiet end a pipeline expects: exit 0, nothing on stderr.
fn assert_quiet_success(what: &str, run: &Run) {
    assert_eq!(
        run.code, 0,
        "{what}: exit code with stdout closed; stderr: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("panicked"),
        "{what}: panicked on a closed stdout: {}",
        run.stderr
    );
    assert_eq!(run.stderr, "", "{what}: stderr should stay quiet");
}

#[test]
fn printed_results_into_a_closed_pipe_end_quietly() {
    let run = support::bare().run_into_closed_pipe(&["completions", "bash"]);
    assert_quiet_success("completions bash", &run);
}

#[test]
fn a_json_document_into_a_closed_pipe_ends_quietly() {
    let run = support::bare().run_into_closed_pipe(&["config", "show", "--json"]);
    assert_quiet_success("config show --json", &run);
}

/// A streamed dry run that would exit 1 (a named tenant has no schema) ends with 0 when
/// its reader has gone: the closed pipe is the outcome, as for every other command.
#[test]
fn a_streamed_dry_run_into_a_closed_pipe_ends_quietly() {
    let (_db, t) = ready();
    t.run(&["tenant", "create", "edge-one", "--name", "Edge One"])
        .expect(0);
    let run = t.run_into_closed_pipe(&["upgrade", "--tenant", "edge-one", "--dry-run"]);
    assert_quiet_success("upgrade --dry-run", &run);
}
