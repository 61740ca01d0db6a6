//! Every JSON document a test makes the binary print is checked against its command's
//! published schema (`docs/src/reference/schemas/COMMAND.json`, generated from the printing types by
//! `tenantctl::cli::schemas::all`): [`check`] runs after each [`super::Tenantctl::run`].
//! A JSON document from a command without a schema, or one its schema does not admit,
//! fails the test that printed it.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::Run;

fn validators() -> &'static HashMap<&'static str, jsonschema::Validator> {
    static V: OnceLock<HashMap<&'static str, jsonschema::Validator>> = OnceLock::new();
    V.get_or_init(|| {
        tenantctl::cli::schemas::all()
            .into_iter()
            .map(|(name, schema)| {
                let value = serde_json::to_value(&schema).unwrap();
                let v = jsonschema::validator_for(&value)
                    .unwrap_or_else(|e| panic!("the schema of {name} is not a valid schema: {e}"));
                (name, v)
            })
            .collect()
    })
}

/// Whether the arguments ask for JSON.
fn asks_for_json(args: &[&str]) -> bool {
    args.iter().enumerate().any(|(i, a)| {
        matches!(*a, "--json" | "-ojson" | "--output=json" | "-o=json")
            || (matches!(*a, "-o" | "--output") && args.get(i + 1) == Some(&"json"))
    })
}

/// The schema name of the command in `args`, as clap parses them: its words joined with
/// `-` (`tenant list` is `tenant-list`); without a parse, the first word that is not a
/// flag.
fn command_of(args: &[&str]) -> Option<String> {
    use clap::CommandFactory;
    let parsed = tenantctl::cli::Cli::command()
        .try_get_matches_from(std::iter::once("tenantctl").chain(args.iter().copied()));
    if let Ok(matches) = parsed {
        let mut words = Vec::new();
        let mut at = &matches;
        while let Some((name, sub)) = at.subcommand() {
            words.push(name.to_string());
            at = sub;
        }
        return Some(words.join("-"));
    }
    args.iter()
        .find(|a| !a.starts_with('-'))
        .map(|a| a.to_string())
}

/// Validates `run`'s stdout against its command's schema when the arguments asked for
/// JSON and stdout holds one JSON document (a run cut short may print nothing).
pub fn check(args: &[&str], run: &Run) {
    if !asks_for_json(args) {
        return;
    }
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(&run.stdout) else {
        return;
    };
    let command = command_of(args).unwrap_or_default();
    let Some(validator) = validators().get(command.as_str()) else {
        panic!(
            "`{command}` printed a JSON document but has no published schema \
             (tenantctl::cli::schemas::all):\n{}",
            run.stdout
        );
    };
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("at {}: {e}", e.instance_path()))
        .take(10)
        .collect();
    assert!(
        errors.is_empty(),
        "the JSON that `tenantctl {}` printed does not match docs/src/reference/schemas/{command}.json:\n{}\n\ndocument:\n{}",
        args.join(" "),
        errors.join("\n"),
        run.stdout
    );
}
