//! The test harness keeps its word: every way it waits for the binary (`support/run.rs`)
//! gives up at a deadline, kills the run and fails the test with what it printed, so a
//! hang fails a test instead of hanging CI. Proven with `tenantctl serve`, which never
//! ends by itself.

use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use crate::support::{ready, Run, Tenantctl};

/// The variable that marks the runs of this test, to find them among the processes.
const MARK: &str = "TENANTCTL_TEST_HARNESS_MARK";

/// A run that never ends by itself.
const SERVE: &[&str] = &["serve", "--listen", "127.0.0.1:0"];

/// The processes whose environment holds `MARK=mark`.
fn marked(mark: &str) -> Vec<u32> {
    let needle = format!("{MARK}={mark}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .collect()
}

/// The text of a caught panic.
fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

type Way = fn(&Tenantctl) -> Run;

#[test]
fn every_wait_for_the_binary_ends_at_its_deadline_killing_it_and_showing_its_output() {
    let (_db, t) = ready();
    let ways: [(&str, Way); 5] = [
        ("run", |t| t.run(SERVE)),
        ("run_with_stdin", |t| {
            t.run_with_stdin(SERVE, b"never read\n")
        }),
        ("run_into_closed_pipe", |t| t.run_into_closed_pipe(SERVE)),
        ("spawn, then finish", |t| t.spawn(SERVE).finish()),
        ("spawn_reading_stdout, read to the end, then finish", |t| {
            let (child, mut stdout) = t.spawn_reading_stdout(SERVE);
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            child.finish()
        }),
    ];
    for (round, (way, call)) in ways.into_iter().enumerate() {
        let mark = format!("{}-{round}", std::process::id());
        let hung = t
            .clone()
            .env("TENANTCTL_API_TOKEN", "harness-test-token")
            .env(MARK, &mark)
            .deadline(Duration::from_secs(2));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(|| call(&hung))));
        });
        let outcome = rx.recv_timeout(Duration::from_secs(60));
        let left = marked(&mark);
        let outcome = match outcome {
            Ok(o) => o,
            Err(_) => {
                // What the harness should have killed: killed here, by id, so that the
                // failure leaves nothing running.
                for pid in &left {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
                panic!("{way}: still waiting after 60 s for a run that never ends (its deadline was 2 s); processes {left:?} were left running");
            }
        };
        let text = match outcome {
            Ok(run) => panic!("{way}: a run that never ends came back as {run:?}"),
            Err(payload) => message(payload.as_ref()),
        };
        assert!(
            text.contains("was killed") && text.contains("tenantctl serve"),
            "{way}: the failure does not say what was killed: {text}"
        );
        assert!(
            text.contains("listening on http://"),
            "{way}: the failure does not show what the run printed: {text}"
        );
        assert_eq!(left, Vec::<u32>::new(), "{way}: the run is still there");
    }
}
