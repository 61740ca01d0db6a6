//! `revision` as an action: the next migration file and its down script, named from a
//! message, written beside the others (never over one).

use std::path::Path;

use serde::Serialize;

use crate::error::Error;
use crate::files::migrations::MigrationSet;
use crate::ident;

/// The JSON document `revision` prints.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Written {
    /// The new version.
    pub version: i32,
    /// The name part of the file name.
    pub name: String,
    /// Path of the up script.
    pub up: String,
    /// Path of the down script.
    pub down: String,
}

/// Turns a message into a migration name: lowercase letters, digits and single `_`,
/// at most 80 characters.
pub fn name_from_message(message: &str) -> Result<String, Error> {
    let mut name = String::new();
    for c in message.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('_') && !name.is_empty() {
            name.push('_');
        }
    }
    let name: String = name.trim_end_matches('_').chars().take(80).collect();
    let name = name.trim_end_matches('_').to_string();
    if name.is_empty() {
        return Err(Error::usage(format!(
            "message {} has no letters or digits to name the migration with",
            ident::shown(message)
        )));
    }
    Ok(name)
}

/// The next migration of the tenants, or with `shared` of the shared schema (in its
/// directory, by default the migrations directory's `shared` folder), written as
/// [`write`] writes it.
pub fn next(
    cx: &crate::app::context::Context,
    message: &str,
    shared: bool,
) -> Result<Written, Error> {
    let dir = match (&cx.settings.shared, shared) {
        (_, false) => cx.settings.migrations_dir.clone(),
        (Some(s), true) => s.dir.clone(),
        (None, true) => cx.settings.migrations_dir.join("shared"),
    };
    write(&dir, message, shared)
}

/// Writes `V{head+1}__{name}.sql` and its `.down.sql` in `dir` (made if missing), `name`
/// from `message`, with a header for a tenant's migration (or the shared schema's);
/// neither is written when either cannot be.
pub fn write(dir: &Path, message: &str, shared: bool) -> Result<Written, Error> {
    let name = name_from_message(message)?;
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::setup(format!(
                "cannot create migrations directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    let set = MigrationSet::load(dir)?;
    let version = set
        .head()
        .checked_add(1)
        .ok_or_else(|| Error::failed("the highest version is already 2147483647"))?;
    let up = dir.join(format!("V{version}__{name}.sql"));
    let down = dir.join(format!("V{version}__{name}.down.sql"));
    let summary: String = message
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    let (runs, downgrade) = if shared {
        (
            "on every server, with search_path set to the shared schema",
            "tenantctl downgrade --shared",
        )
    } else {
        (
            "with search_path set to the tenant's schema",
            "tenantctl downgrade",
        )
    };
    let up_text = format!(
        "-- V{version}__{name}: {summary}\n-- Runs in its own transaction, {runs}\n-- (then tenants.extra_search_path). Do not add BEGIN/COMMIT.\n\n"
    );
    let down_text = format!("-- Undoes V{version}__{name}: {summary}\n-- Runs in its own transaction by `{downgrade}`.\n\n");
    write_new(&up, &up_text)?;
    if let Err(e) = write_new(&down, &down_text) {
        let _ = std::fs::remove_file(&up);
        return Err(e);
    }
    Ok(Written {
        version,
        name,
        up: up.display().to_string(),
        down: down.display().to_string(),
    })
}

fn write_new(path: &std::path::Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::failed(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_become_valid_names() {
        assert_eq!(
            name_from_message("Add volunteer rotas").unwrap(),
            "add_volunteer_rotas"
        );
        assert_eq!(
            name_from_message("  drop -- old; stuff!! ").unwrap(),
            "drop_old_stuff"
        );
        assert_eq!(
            name_from_message("x'); DROP TABLE t;--").unwrap(),
            "x_drop_table_t"
        );
        assert_eq!(name_from_message(&"a".repeat(300)).unwrap().len(), 80);
        assert!(name_from_message("!!! ---").is_err());
        assert!(name_from_message("").is_err());
        let n = name_from_message("émigré données").unwrap();
        assert!(
            crate::files::migrations::parse_file_name(&format!("V1__{n}.sql")).is_ok(),
            "{n}"
        );
    }
}
