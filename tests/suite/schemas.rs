//! The published JSON Schemas (`docs/src/reference/schemas/COMMAND.json`) are the ones generated from
//! the types that print the documents; `TENANTCTL_BLESS=1` rewrites them. Every JSON
//! document the suite makes the binary print is validated against them
//! (`support::schemas`); here, a tour of commands whose documents other tests read only
//! in part, so each is validated whole at least once.

use std::path::Path;

use crate::support::{self, tenantctl, TestDb};

fn published() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/reference/schemas")
}

#[test]
fn the_published_schemas_are_the_generated_ones() {
    let dir = published();
    let bless = std::env::var("TENANTCTL_BLESS").is_ok_and(|v| v == "1");
    let generated = tenantctl::cli::schemas::all();
    if bless {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut stale = Vec::new();
    for (name, schema) in &generated {
        let path = dir.join(format!("{name}.json"));
        let text = serde_json::to_string_pretty(schema).unwrap() + "\n";
        if bless {
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "these published schemas differ from the generated ones (run the test with \
         TENANTCTL_BLESS=1 to rewrite them): {stale:?}"
    );
    // No schema of a command that no longer prints one.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let command = name.trim_end_matches(".json");
        assert!(
            generated.iter().any(|(n, _)| *n == command),
            "docs/src/reference/schemas/{name} is not the schema of any command"
        );
    }
}

/// A schema that admits anything would make the validation pointless: a document with
/// a wrong type, or without a required key, is refused.
#[test]
fn a_schema_refuses_what_its_command_never_prints() {
    let all = tenantctl::cli::schemas::all();
    let schema = |name: &str| {
        let s = &all.iter().find(|(n, _)| *n == name).unwrap().1;
        jsonschema::validator_for(&serde_json::to_value(s).unwrap()).unwrap()
    };
    let list = schema("tenant-list");
    assert!(!list.is_valid(&serde_json::json!({})));
    assert!(!list.is_valid(&serde_json::json!({"tenants": "x", "summary": {}})));
    let check = schema("check");
    assert!(!check.is_valid(&serde_json::json!({"ok": "yes"})));
}

fn create(t: &support::Tenantctl, domain: &str) {
    t.run(&[
        "tenant",
        "create",
        domain,
        "--name",
        domain,
        "--migrate",
        "-o",
        "json",
    ])
    .expect(0);
}

/// Every command's document, printed for real and validated whole (the validation
/// is in `support::schemas::check`, which every run goes through).
#[test]
fn every_commands_json_matches_its_schema() {
    let db = TestDb::new();
    let migrations = support::copy_of_example_migrations();
    let t = tenantctl(&db).migrations(migrations.path());
    let json = |args: &[&str], code: i32| {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let run = t.run(&all);
        run.expect(code);
        assert!(
            serde_json::from_str::<serde_json::Value>(&run.stdout).is_ok(),
            "`{}` printed no JSON document:\n{}",
            all.join(" "),
            run.stdout
        );
    };
    json(&["init"], 0);
    create(&t, "alpha");
    create(&t, "beta");
    json(&["tenant", "list"], 0);
    json(&["tenant", "show", "alpha"], 0);
    json(&["status", "--all"], 0);
    json(&["status", "--tenant", "alpha"], 0);
    json(&["current", "--all"], 0);
    json(&["history"], 0);
    json(&["history", "--tenant", "alpha"], 0);
    json(&["check"], 0);
    json(&["downgrade", "--all", "-1", "--yes", "--dry-run"], 0);
    json(&["downgrade", "--all", "-1", "--yes"], 0);
    json(&["upgrade", "--all", "--dry-run"], 0);
    json(&["upgrade", "--all"], 0);
    json(&["stamp", "--tenant", "alpha", "head", "--yes"], 0);
    json(&["provision", "--all"], 0);
    json(&["events"], 0);
    json(&["metrics"], 0);
    json(&["config", "show"], 0);
    json(&["tenant", "rotate-key", "alpha"], 0);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("alpha.tenant");
    let archive = archive.to_str().unwrap();
    json(&["tenant", "export", "alpha", "-f", archive], 0);
    json(
        &[
            "tenant",
            "import",
            archive,
            "--as",
            "gamma",
            "--name",
            "G",
            "--dry-run",
        ],
        0,
    );
    json(
        &["tenant", "import", archive, "--as", "gamma", "--name", "G"],
        0,
    );
    json(
        &[
            "tenant",
            "clone",
            "alpha",
            "delta",
            "--name",
            "D",
            "--dry-run",
        ],
        0,
    );
    json(&["tenant", "clone", "alpha", "delta", "--name", "D"], 0);
    json(&["tenant", "restore", "alpha", archive, "--dry-run"], 0);
    json(&["tenant", "restore", "alpha", archive, "--yes"], 0);
    let backups = dir.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    json(&["backup", "--all", "--out", backups.to_str().unwrap()], 0);
    json(&["tenant", "drop", "delta", "--dry-run"], 0);
    json(&["tenant", "drop", "delta", "--yes"], 0);
    json(&["revision", "-m", "add pledges"], 0);
    json(&["manpages", dir.path().join("man").to_str().unwrap()], 0);
}

/// `-o json` is one JSON document on stdout, or refused: a completion script and the
/// service have no JSON form (exit 2, nothing on stdout).
#[test]
fn commands_without_a_json_document_refuse_json() {
    for args in [
        &["completions", "bash", "-o", "json"][..],
        &["serve", "-o", "json"][..],
    ] {
        let run = support::bare().run(args);
        run.expect(2);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
        assert!(run.stderr.contains("drop -o json"), "{}", run.stderr);
    }
}
