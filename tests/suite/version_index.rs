//! The version index against a real PostgreSQL: a fleet read answers from it only what
//! a full read of every history table would answer. Each way of getting around the
//! trigger (a hand edit of the history, a delete under `session_replication_role =
//! replica`, a table dropped and created again, the trigger disabled or dropped, the
//! trigger disabled and enabled again around a delete, the index row edited by hand, a
//! schema renamed, `VACUUM FULL`, a time the index does not vouch for) is reported as a
//! full read reports it (`check --deep` compares the two for every tenant), `check` says
//! why a tenant was read in full, and `init` brings it back. A tenant role can neither
//! write the index nor call its function. Create, import, clone, restore and a move to
//! another server leave the tenant indexed.

use serde_json::Value;

use crate::checks::create;
use crate::servers::{cluster, url_of};
use crate::support::{ready, Tenantctl, TestDb};

/// The example migrations' head.
const HEAD: i64 = 6;

/// An initialised registry with tenants `alpha`, `bravo` and `charlie` at head.
fn fleet() -> (TestDb, Tenantctl) {
    let (db, t) = ready();
    for d in ["alpha", "bravo", "charlie"] {
        create(&t, d, &["--migrate"]);
    }
    (db, t)
}

fn sql(db: &TestDb, text: &str) {
    db.client()
        .batch_execute(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"));
}

fn history(domain: &str) -> String {
    format!("tenant_{domain}.refinery_schema_history")
}

/// `check -o json` (exit 0 or 5).
fn check(t: &Tenantctl, deep: bool) -> Value {
    let mut args = vec!["check", "-o", "json"];
    if deep {
        args.push("--deep");
    }
    let run = t.run(&args);
    assert!(
        run.code == 0 || run.code == 5,
        "check: exit {}\n{}\n{}",
        run.code,
        run.stdout,
        run.stderr
    );
    run.json()
}

/// Why `check` says `domain` was read in full, if it says so.
fn read_in_full(report: &Value, domain: &str) -> Option<String> {
    report["index"]["read_in_full"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["domain"] == domain)
        .map(|s| s["reason"].as_str().unwrap().to_string())
}

/// The tenant's entry in `status --all -o json`.
fn status(t: &Tenantctl, domain: &str) -> Value {
    let run = t.run(&["status", "--all", "-o", "json"]);
    let doc: Value = run.json();
    doc["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["domain"] == domain)
        .unwrap_or_else(|| panic!("{domain} not in {doc}"))
        .clone()
}

/// What the status says of the tenant's history, as a full read says it.
fn said(s: &Value) -> (Value, usize, usize, bool) {
    (
        s["current_revision"].clone(),
        s["pending_migrations"].as_array().unwrap().len(),
        s["drift"].as_array().unwrap().len(),
        s["history_error"].is_null(),
    )
}

/// Disables the watch's event triggers, as a DBA might: the index is then checked
/// against the catalog for each tenant, and `check` says so.
fn unwatch(db: &TestDb, t: &Tenantctl) {
    sql(
        db,
        "DO $$ DECLARE e record; BEGIN \
           FOR e IN SELECT evtname FROM pg_event_trigger WHERE evtname LIKE 'tenantctl\\_versions\\_%' LOOP \
             EXECUTE format('ALTER EVENT TRIGGER %I DISABLE', e.evtname); \
           END LOOP; END $$",
    );
    let report = check(t, false);
    let why = report["index"]["unwatched"][0]["why"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("disabled, changed or not armed"), "{report:#}");
}

/// Sets the test up in one of the two ways the index is read: watched (its event
/// triggers armed, as `init` leaves them for a superuser), or checked against the
/// catalog (the event triggers disabled). Returns how a reason reads in that way:
/// the watch marks every row a DDL command touched as `changed`.
fn mode(db: &TestDb, t: &Tenantctl, watched: bool) -> impl Fn(&'static str) -> &'static str {
    if watched {
        let report = check(t, false);
        assert_eq!(
            report["index"]["unwatched"],
            serde_json::json!([]),
            "{report:#}"
        );
    } else {
        unwatch(db, t);
    }
    move |checked| if watched { "changed" } else { checked }
}

/// `check --deep` finds the index and the history tables in agreement for every tenant,
/// and trusts `trusted` tenants.
fn agree(t: &Tenantctl, trusted: usize) -> Value {
    let report = check(t, true);
    let mismatched: Vec<&Value> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "index_mismatch")
        .collect();
    assert!(mismatched.is_empty(), "{mismatched:#?}");
    assert_eq!(report["index"]["trusted"], trusted, "{report:#}");
    report
}

#[test]
fn a_fresh_fleet_is_answered_from_the_index_and_init_is_idempotent() {
    let (db, t) = fleet();
    let report = agree(&t, 3);
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["index"]["read_in_full"], serde_json::json!([]));
    let s = status(&t, "alpha");
    assert_eq!(said(&s), (Value::from(HEAD), 0, 0, true));
    // The index row as the trigger wrote it.
    let row = db
        .client()
        .query_one(
            "SELECT applied, highest FROM public.tenant_versions WHERE schema_name = 'tenant_alpha'",
            &[],
        )
        .unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i32>(1)), (6, 6));
    let again: Value = t.run(&["init", "-o", "json"]).expect(0).json();
    assert_eq!(again["index"][0]["installed"], false, "{again:#}");
    assert_eq!(again["index"][0]["attached"], 0, "{again:#}");
    agree(&t, 3);
}

#[test]
fn ddl_while_the_watch_was_off_is_caught_and_init_arms_it_again() {
    let (db, t) = fleet();
    let names: Vec<String> = db
        .client()
        .query(
            "SELECT evtname FROM pg_event_trigger WHERE evtname LIKE 'tenantctl\\_versions\\_%' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // Off, the trigger disabled around a delete (no mark: the watch is off), and on
    // again: the catalog looks healthy, the watch's triggers as they were but for
    // their catalog rows.
    let (off, on): (Vec<String>, Vec<String>) = names
        .iter()
        .map(|n| {
            (
                format!("ALTER EVENT TRIGGER {n} DISABLE"),
                format!("ALTER EVENT TRIGGER {n} ENABLE ALWAYS"),
            )
        })
        .unzip();
    sql(&db, &off.join("; "));
    sql(
        &db,
        &format!(
            "ALTER TABLE {h} DISABLE TRIGGER tenantctl_versions; DELETE FROM {h} WHERE version = 6; \
             ALTER TABLE {h} ENABLE ALWAYS TRIGGER tenantctl_versions",
            h = history("alpha")
        ),
    );
    sql(&db, &on.join("; "));
    assert_eq!(said(&status(&t, "alpha")), (Value::from(5), 1, 0, true));
    let report = agree(&t, 2);
    assert_eq!(
        read_in_full(&report, "alpha").as_deref(),
        Some("trigger_touched")
    );
    let why = report["index"]["unwatched"][0]["why"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("`tenantctl init` arms it"), "{report:#}");
    // init writes every row anew under the watch, then arms it.
    let init: Value = t.run(&["init", "-o", "json"]).expect(0).json();
    assert_eq!(init["index"][0]["attached"], 3, "{init:#}");
    assert_eq!(init["index"][0]["watched"], true, "{init:#}");
    let report = agree(&t, 3);
    assert_eq!(report["index"]["unwatched"], serde_json::json!([]));
    assert_eq!(said(&status(&t, "alpha")), (Value::from(5), 1, 0, true));
    // Dropped, the watch is installed again by init.
    sql(&db, &format!("DROP EVENT TRIGGER {}", names[1]));
    assert_eq!(
        check(&t, false)["index"]["unwatched"][0]["server"],
        "default"
    );
    let init: Value = t.run(&["init", "-o", "json"]).expect(0).json();
    assert_eq!(init["index"][0]["watched"], true, "{init:#}");
    agree(&t, 3);
}

#[test]
fn hand_edits_of_the_history_are_seen_by_the_trigger() {
    let (db, t) = fleet();
    sql(
        &db,
        &format!(
            "UPDATE {} SET checksum = '1' WHERE version = 2",
            history("alpha")
        ),
    );
    sql(
        &db,
        &format!(
            "UPDATE {} SET name = 'renamed' WHERE version = 3",
            history("bravo")
        ),
    );
    // Under replica mode only ALWAYS triggers fire: this one does.
    sql(
        &db,
        &format!(
            "SET session_replication_role = replica; DELETE FROM {} WHERE version = 6; RESET session_replication_role",
            history("charlie")
        ),
    );
    let a = status(&t, "alpha");
    assert_eq!(said(&a).2, 1, "the changed checksum is drift: {a:#}");
    let b = status(&t, "bravo");
    assert_eq!(said(&b).2, 1, "the changed name is drift: {b:#}");
    let c = status(&t, "charlie");
    assert_eq!(said(&c), (Value::from(5), 1, 0, true), "{c:#}");
    // Alpha and bravo differ from the files: read in full by design, not listed.
    let report = agree(&t, 1);
    assert_eq!(read_in_full(&report, "alpha"), None);
    assert_eq!(report["ok"], false);
}

#[test]
fn a_trigger_disabled_dropped_or_disabled_and_enabled_again_is_not_trusted_watched() {
    trigger_cases(true);
}

#[test]
fn a_trigger_disabled_dropped_or_disabled_and_enabled_again_is_not_trusted_checked() {
    trigger_cases(false);
}

fn trigger_cases(watched: bool) {
    let (db, t) = ready();
    for d in ["alpha", "bravo", "charlie", "delta"] {
        create(&t, d, &["--migrate"]);
    }
    let reason = mode(&db, &t, watched);
    // Disabled, then a row deleted behind its back.
    sql(
        &db,
        &format!(
            "ALTER TABLE {h} DISABLE TRIGGER tenantctl_versions; DELETE FROM {h} WHERE version = 6",
            h = history("alpha")
        ),
    );
    // Dropped, then a row deleted.
    sql(
        &db,
        &format!(
            "DROP TRIGGER tenantctl_versions ON {h}; DELETE FROM {h} WHERE version = 6",
            h = history("bravo")
        ),
    );
    // Disabled, a row deleted, enabled again: the catalog looks healthy.
    sql(
        &db,
        &format!(
            "ALTER TABLE {h} DISABLE TRIGGER tenantctl_versions; DELETE FROM {h} WHERE version = 6; \
             ALTER TABLE {h} ENABLE ALWAYS TRIGGER tenantctl_versions",
            h = history("charlie")
        ),
    );
    // Enabled as an ordinary trigger: replica mode would skip it.
    sql(
        &db,
        &format!(
            "ALTER TABLE {h} ENABLE TRIGGER tenantctl_versions",
            h = history("delta")
        ),
    );
    for d in ["alpha", "bravo", "charlie"] {
        let s = status(&t, d);
        assert_eq!(said(&s), (Value::from(5), 1, 0, true), "{d}: {s:#}");
    }
    let report = agree(&t, 0);
    assert_eq!(
        read_in_full(&report, "alpha").as_deref(),
        Some(reason("trigger_disabled"))
    );
    assert_eq!(
        read_in_full(&report, "bravo").as_deref(),
        Some(reason("no_trigger"))
    );
    assert_eq!(
        read_in_full(&report, "charlie").as_deref(),
        Some(reason("trigger_touched"))
    );
    assert_eq!(
        read_in_full(&report, "delta").as_deref(),
        Some(reason("trigger_disabled"))
    );
    // The text report says why, and init brings every one back (and arms the watch).
    let text = t.run(&["check"]).stdout.clone();
    assert!(text.contains("4 tenants read in full"), "{text}");
    let why = if watched {
        "DROP TRIGGER touched the history table, its trigger or its schema"
    } else {
        "was disabled, enabled or recreated"
    };
    assert!(text.contains(why), "{text}");
    let init: Value = t.run(&["init", "-o", "json"]).expect(0).json();
    assert_eq!(init["index"][0]["attached"], 4, "{init:#}");
    assert_eq!(init["index"][0]["watched"], true, "{init:#}");
    let report = agree(&t, 4);
    assert_eq!(report["index"]["read_in_full"], serde_json::json!([]));
    assert_eq!(said(&status(&t, "charlie")), (Value::from(5), 1, 0, true));
}

#[test]
fn a_recreated_table_an_edited_row_a_renamed_schema_and_vacuum_full_are_read_in_full_watched() {
    recreated_cases(true);
}

#[test]
fn a_recreated_table_an_edited_row_a_renamed_schema_and_vacuum_full_are_read_in_full_checked() {
    recreated_cases(false);
}

fn recreated_cases(watched: bool) {
    let (db, t) = ready();
    for d in ["alpha", "bravo", "charlie", "delta", "echo"] {
        create(&t, d, &["--migrate"]);
    }
    let reason = mode(&db, &t, watched);
    // Alpha's history table dropped and created again without its last row.
    sql(
        &db,
        &format!(
            "CREATE TABLE keep AS SELECT * FROM {h} WHERE version < 6; DROP TABLE {h}; \
             CREATE TABLE {h} (version int4 PRIMARY KEY, name varchar(255), applied_on varchar(255), checksum varchar(255)); \
             INSERT INTO {h} SELECT * FROM keep; DROP TABLE keep",
            h = history("alpha")
        ),
    );
    // Bravo: a row deleted (the trigger keeps the index at 5), then the index row
    // edited by hand to claim head, copied from a tenant at head.
    sql(
        &db,
        &format!("DELETE FROM {} WHERE version = 6", history("bravo")),
    );
    sql(
        &db,
        "UPDATE public.tenant_versions v SET applied = o.applied, highest = o.highest, digest = o.digest \
         FROM public.tenant_versions o WHERE v.schema_name = 'tenant_bravo' AND o.schema_name = 'tenant_echo'",
    );
    // Charlie and delta swap schemas; delta was one behind.
    sql(
        &db,
        &format!(
            "DELETE FROM {} WHERE version = 6; \
             ALTER SCHEMA tenant_charlie RENAME TO swap; ALTER SCHEMA tenant_delta RENAME TO tenant_charlie; \
             ALTER SCHEMA swap RENAME TO tenant_delta",
            history("delta")
        ),
    );
    // Echo's history table rewritten.
    sql(&db, &format!("VACUUM FULL {}", history("echo")));
    assert_eq!(said(&status(&t, "alpha")), (Value::from(5), 1, 0, true));
    assert_eq!(said(&status(&t, "bravo")), (Value::from(5), 1, 0, true));
    assert_eq!(said(&status(&t, "charlie")), (Value::from(5), 1, 0, true));
    assert_eq!(said(&status(&t, "delta")), (Value::from(HEAD), 0, 0, true));
    assert_eq!(said(&status(&t, "echo")), (Value::from(HEAD), 0, 0, true));
    // VACUUM FULL rewrites the table's catalog row but not its rows: the watch (which
    // sees DDL, and VACUUM is not DDL) goes on trusting echo, rightly; the catalog
    // check cannot tell it from an ALTER TABLE.
    let report = agree(&t, usize::from(watched));
    assert_eq!(
        read_in_full(&report, "alpha").as_deref(),
        Some(reason("recreated"))
    );
    assert_eq!(
        read_in_full(&report, "bravo").as_deref(),
        Some("row_edited")
    );
    assert_eq!(
        read_in_full(&report, "charlie").as_deref(),
        Some(reason("recreated"))
    );
    assert_eq!(
        read_in_full(&report, "delta").as_deref(),
        Some(reason("recreated"))
    );
    let echo = if watched { None } else { Some("table_altered") };
    assert_eq!(read_in_full(&report, "echo").as_deref(), echo);
    t.run(&["init"]).expect(0);
    agree(&t, 5);
    assert_eq!(said(&status(&t, "bravo")), (Value::from(5), 1, 0, true));
    assert_eq!(said(&status(&t, "charlie")), (Value::from(5), 1, 0, true));
}

#[test]
fn a_time_the_index_does_not_vouch_for_is_read_in_full_and_reported_the_same() {
    let (db, t) = ready();
    create(&t, "alpha", &["--migrate"]);
    // Valid and invalid RFC 3339 times at the edges of what the index checks: whatever
    // it trusts, the full read must accept, and the two must agree on every one.
    let times = [
        ("2024-02-29T12:00:00Z", true),
        ("2023-02-29T12:00:00Z", false),
        ("2100-02-29T00:00:00Z", false),
        ("2000-02-29T00:00:00+05:30", true),
        ("2026-04-31T00:00:00Z", false),
        ("2026-12-31T23:59:60Z", false),
        ("2026-12-31T24:00:00Z", false),
        ("2026-01-01t00:00:00z", false),
        ("2026-01-01T00:00:00.1234567891Z", false),
        ("2026-01-01T00:00:00.123456789-23:59", true),
        ("2026-01-01T00:00:00+24:00", false),
        ("0999-01-01T00:00:00Z", false),
        ("2026-01-01 00:00:00Z", false),
        ("yesterday", false),
    ];
    for (time, vouched) in times {
        sql(
            &db,
            &format!(
                "UPDATE {} SET applied_on = '{time}' WHERE version = 3",
                history("alpha")
            ),
        );
        agree(&t, usize::from(vouched));
    }
    // A time the full read refuses is an unreadable history on both paths.
    let s = status(&t, "alpha");
    assert!(!s["history_error"].is_null(), "{s:#}");
}

#[test]
fn a_tenant_role_can_neither_write_the_index_nor_call_its_function() {
    let (db, t) = fleet();
    let role = format!("{}_owner", db.name);
    sql(
        &db,
        &format!(
            "CREATE ROLE \"{role}\" LOGIN; GRANT USAGE ON SCHEMA tenant_alpha TO \"{role}\"; \
             ALTER TABLE {} OWNER TO \"{role}\"",
            history("alpha")
        ),
    );
    let mut c = db.client();
    c.batch_execute(&format!("SET ROLE \"{role}\"")).unwrap();
    let write = c.batch_execute(
        "UPDATE public.tenant_versions SET applied = 99 WHERE schema_name = 'tenant_alpha'",
    );
    assert!(write.is_err(), "a tenant role wrote the index");
    let call = c.batch_execute(&format!(
        "SELECT public.tenant_versions_sync('{}'::regclass)",
        history("alpha")
    ));
    assert!(call.is_err(), "a tenant role called the index's function");
    let mut c = db.client();
    c.batch_execute(&format!("SET ROLE \"{role}\"")).unwrap();
    // What the owner of the table can do, it does: the trigger still records it.
    c.batch_execute(&format!(
        "DELETE FROM {} WHERE version = 6",
        history("alpha")
    ))
    .unwrap();
    // And skipping the trigger is seen.
    c.batch_execute(&format!(
        "ALTER TABLE {h} DISABLE TRIGGER tenantctl_versions; DELETE FROM {h} WHERE version = 5; \
         ALTER TABLE {h} ENABLE ALWAYS TRIGGER tenantctl_versions",
        h = history("alpha")
    ))
    .unwrap();
    drop(c);
    assert_eq!(said(&status(&t, "alpha")), (Value::from(4), 2, 0, true));
    agree(&t, 2);
    sql(
        &db,
        &format!(
            "ALTER TABLE {} OWNER TO CURRENT_USER; DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\"",
            history("alpha")
        ),
    );
}

#[test]
fn import_clone_and_restore_leave_the_tenant_indexed() {
    let (db, t) = fleet();
    sql(&db, "INSERT INTO tenant_alpha.members (first_name, last_name, email) VALUES ('A', 'B', 'a@example.org')");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alpha.tenant");
    let file = file.to_str().unwrap();
    t.run(&["tenant", "export", "alpha", "-f", file]).expect(0);
    t.run(&[
        "tenant", "import", file, "--as", "imported", "--name", "Imported",
    ])
    .expect(0);
    t.run(&["tenant", "clone", "alpha", "cloned", "--name", "Cloned"])
        .expect(0);
    t.run(&["tenant", "restore", "alpha", file, "--yes"])
        .expect(0);
    let report = agree(&t, 5);
    assert_eq!(
        report["index"]["read_in_full"],
        serde_json::json!([]),
        "{report:#}"
    );
    // No row is left for a scratch schema a restore or clone worked under that is gone
    // once init has tidied.
    t.run(&["init"]).expect(0);
    let names: Vec<String> = db
        .client()
        .query(
            "SELECT schema_name FROM public.tenant_versions ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        names,
        [
            "tenant_alpha",
            "tenant_bravo",
            "tenant_charlie",
            "tenant_cloned",
            "tenant_imported"
        ]
    );
}

#[test]
fn a_tenant_moved_to_another_server_is_indexed_there() {
    let (db, t) = fleet();
    let b = cluster();
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("tenants.toml"),
        format!("[servers.b]\nurl = \"{}\"\n", url_of(&b)),
    )
    .unwrap();
    let t = t.cwd(config.path());
    let init: Value = t.run(&["init", "-o", "json"]).expect(0).json();
    assert_eq!(init["index"][1]["server"], "b", "{init:#}");
    assert_eq!(init["index"][1]["schema"], "tenantctl", "{init:#}");
    assert_eq!(init["index"][1]["error"], Value::Null, "{init:#}");
    t.run(&["tenant", "move", "alpha", "--to", "b", "--yes"])
        .expect(0);
    create(&t, "delta", &["--migrate", "--server", "b"]);
    let report = agree(&t, 4);
    assert_eq!(
        report["index"]["read_in_full"],
        serde_json::json!([]),
        "{report:#}"
    );
    drop(db);
}

#[test]
fn a_table_owner_cannot_run_code_with_the_index_owners_rights() {
    let (db, t) = fleet();
    let role = format!("{}_evil", db.name);
    sql(
        &db,
        &format!(
            "CREATE ROLE \"{role}\" LOGIN; GRANT USAGE, CREATE ON SCHEMA tenant_alpha TO \"{role}\"; \
             ALTER TABLE {} OWNER TO \"{role}\"",
            history("alpha")
        ),
    );
    let mut c = db.client();
    // A type of the owner's own with a cast to text that tries to make the owner a
    // superuser: the trigger's function must never evaluate it.
    c.batch_execute(&format!(
        "SET ROLE \"{role}\";
         CREATE TYPE tenant_alpha.nm AS (v text);
         CREATE FUNCTION tenant_alpha.nm_text(e tenant_alpha.nm) RETURNS text LANGUAGE plpgsql AS $$
           BEGIN BEGIN EXECUTE 'ALTER ROLE \"{role}\" SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
           RETURN e.v; END $$;
         CREATE CAST (tenant_alpha.nm AS text) WITH FUNCTION tenant_alpha.nm_text(tenant_alpha.nm);
         ALTER TABLE {h} ALTER COLUMN name TYPE tenant_alpha.nm USING ROW(name)::tenant_alpha.nm;
         UPDATE {h} SET version = version WHERE false;
         DELETE FROM {h} WHERE version = 6;",
        h = history("alpha")
    ))
    .unwrap();
    drop(c);
    let superuser: bool = db
        .client()
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role])
        .unwrap()
        .get(0);
    assert!(!superuser, "the table's owner made itself a superuser");
    let report = agree(&t, 2);
    assert_eq!(read_in_full(&report, "alpha").as_deref(), Some("columns"));
    sql(
        &db,
        &format!(
            "DROP SCHEMA tenant_alpha CASCADE; DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\""
        ),
    );
}

#[test]
fn columns_renamed_dropped_or_padded_are_read_in_full_watched() {
    column_cases(true);
}

#[test]
fn columns_renamed_dropped_or_padded_are_read_in_full_checked() {
    column_cases(false);
}

fn column_cases(watched: bool) {
    let (db, t) = ready();
    for d in ["alpha", "bravo", "charlie", "delta"] {
        create(&t, d, &["--migrate"]);
    }
    let reason = mode(&db, &t, watched);
    sql(
        &db,
        &format!("ALTER TABLE {} RENAME COLUMN name TO nm", history("alpha")),
    );
    sql(
        &db,
        &format!("ALTER TABLE {} DROP COLUMN checksum", history("bravo")),
    );
    sql(
        &db,
        &format!(
            "ALTER TABLE {} ALTER COLUMN name TYPE char(40)",
            history("charlie")
        ),
    );
    // A type whose text is the same is still read from the index.
    sql(
        &db,
        &format!(
            "ALTER TABLE {} ALTER COLUMN name TYPE text",
            history("delta")
        ),
    );
    for d in ["alpha", "bravo"] {
        let s = status(&t, d);
        assert!(!s["history_error"].is_null(), "{d}: {s:#}");
    }
    let s = status(&t, "charlie");
    assert_eq!(said(&s).2, 6, "padded names are drift: {s:#}");
    // Before init, even the harmless change is noticed: the index does not vouch for a
    // column it has not seen since it changed.
    let before = agree(&t, 0);
    assert_eq!(
        read_in_full(&before, "delta").as_deref(),
        Some(reason("columns_changed")),
        "{before:#}"
    );
    // init cannot make the index vouch for them: they stay read in full.
    t.run(&["init"]).expect(0);
    let report = agree(&t, 1);
    for d in ["alpha", "bravo", "charlie"] {
        assert_eq!(read_in_full(&report, d).as_deref(), Some("columns"), "{d}");
    }
}

#[test]
fn two_writers_of_one_history_table_leave_the_row_of_the_last_to_commit() {
    let (db, t) = fleet();
    let mut first = db.client();
    let mut tx = first.transaction().unwrap();
    tx.batch_execute(&format!(
        "DELETE FROM {} WHERE version = 6",
        history("alpha")
    ))
    .unwrap();
    // The second writer's trigger waits for the first's transaction, then sees its delete.
    let url = db.url.clone();
    let h = history("alpha");
    let second = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.batch_execute(&format!(
            "UPDATE {h} SET applied_on = applied_on WHERE version = 1"
        ))
        .unwrap();
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    tx.commit().unwrap();
    second.join().unwrap();
    assert_eq!(said(&status(&t, "alpha")), (Value::from(5), 1, 0, true));
    agree(&t, 3);
}

#[test]
fn another_function_of_the_same_name_does_not_take_the_triggers_call() {
    let (db, t) = fleet();
    sql(
        &db,
        "CREATE FUNCTION public.tenant_versions_sync(relid oid) RETURNS void LANGUAGE sql AS $$ SELECT $$",
    );
    sql(
        &db,
        &format!("DELETE FROM {} WHERE version = 6", history("alpha")),
    );
    assert_eq!(said(&status(&t, "alpha")), (Value::from(5), 1, 0, true));
    agree(&t, 3);
}

#[test]
fn writes_through_a_parent_a_trigger_flipped_in_the_writing_transaction_and_swapped_columns_are_seen_watched(
) {
    parent_cases(true);
}

#[test]
fn writes_through_a_parent_a_trigger_flipped_in_the_writing_transaction_and_swapped_columns_are_seen_checked(
) {
    parent_cases(false);
}

fn parent_cases(watched: bool) {
    let (db, t) = fleet();
    create(&t, "delta", &["--migrate"]);
    let reason = mode(&db, &t, watched);
    // A parent: a write through it fires none of the history table's triggers.
    sql(
        &db,
        &format!(
            "CREATE TABLE tenant_alpha.par (LIKE {h}); ALTER TABLE {h} INHERIT tenant_alpha.par",
            h = history("alpha")
        ),
    );
    sql(&db, "DELETE FROM tenant_alpha.par WHERE version >= 5");
    // The trigger disabled and enabled again in the transaction that last wrote the row.
    sql(
        &db,
        &format!(
            "BEGIN; ALTER TABLE {h} DISABLE TRIGGER tenantctl_versions; \
             ALTER TABLE {h} ENABLE ALWAYS TRIGGER tenantctl_versions; \
             UPDATE {h} SET name = name WHERE version = 1; \
             ALTER TABLE {h} DISABLE TRIGGER tenantctl_versions; DELETE FROM {h} WHERE version = 6; \
             ALTER TABLE {h} ENABLE ALWAYS TRIGGER tenantctl_versions; COMMIT",
            h = history("bravo")
        ),
    );
    // Two columns of one type swapped by renames.
    sql(
        &db,
        &format!(
            "ALTER TABLE {h} RENAME COLUMN name TO x; ALTER TABLE {h} RENAME COLUMN checksum TO name; \
             ALTER TABLE {h} RENAME COLUMN x TO checksum",
            h = history("charlie")
        ),
    );
    // A child in another schema: its rows are the parent's to a full read, and a
    // write to it fires none of the history table's triggers.
    sql(
        &db,
        &format!(
            "CREATE TABLE public.{k} () INHERITS ({h}); \
             INSERT INTO public.{k} SELECT version + 100, name, applied_on, checksum FROM {h} WHERE version = 1",
            k = format!("kid_{}", db.name),
            h = history("delta")
        ),
    );
    assert_eq!(said(&status(&t, "alpha")), (Value::from(4), 2, 0, true));
    assert_eq!(said(&status(&t, "bravo")), (Value::from(5), 1, 0, true));
    assert!(!status(&t, "charlie")["history_error"].is_null());
    assert_ne!(
        said(&status(&t, "delta")),
        (Value::from(HEAD), 0, 0, true),
        "a full read sees the child's row"
    );
    let report = agree(&t, 0);
    assert_eq!(
        read_in_full(&report, "alpha").as_deref(),
        Some(reason("inherited"))
    );
    assert_eq!(
        read_in_full(&report, "bravo").as_deref(),
        Some(reason("unsettled"))
    );
    assert_eq!(
        read_in_full(&report, "charlie").as_deref(),
        Some(reason("columns_changed"))
    );
    assert_eq!(
        read_in_full(&report, "delta").as_deref(),
        Some(reason("inherited"))
    );
    // init settles bravo; the others stay read in full.
    t.run(&["init"]).expect(0);
    let report = agree(&t, 1);
    assert_eq!(read_in_full(&report, "bravo"), None);
    assert_eq!(read_in_full(&report, "delta").as_deref(), Some("inherited"));
    sql(&db, &format!("DROP TABLE public.kid_{}", db.name));
}

#[test]
fn a_dropped_index_makes_no_command_fail() {
    let (db, t) = fleet();
    sql(&db, "DROP TABLE public.tenant_versions");
    t.run(&["downgrade", "--tenant", "alpha", "5", "--yes"])
        .expect(0);
    t.run(&["upgrade", "--all"]).expect(0);
    create(&t, "delta", &["--migrate"]);
    t.run(&["tenant", "clone", "alpha", "echo", "--name", "Echo"])
        .expect(0);
    sql(
        &db,
        &format!("DELETE FROM {} WHERE version = 6", history("bravo")),
    );
    assert_eq!(said(&status(&t, "bravo")), (Value::from(5), 1, 0, true));
    let report = check(&t, false);
    assert_eq!(report["index"]["trusted"], 0, "{report:#}");
    assert_eq!(read_in_full(&report, "alpha").as_deref(), Some("no_index"));
    // Without its functions too.
    sql(
        &db,
        "DROP FUNCTION public.tenant_versions_refresh() CASCADE; DROP FUNCTION public.tenant_versions_sync(regclass)",
    );
    t.run(&["downgrade", "--tenant", "alpha", "4", "--yes"])
        .expect(0);
    t.run(&["upgrade", "--tenant", "alpha"]).expect(0);
    // init brings it back for every tenant.
    t.run(&["init"]).expect(0);
    agree(&t, 5);
}

#[test]
fn a_full_read_never_runs_a_policy_the_tables_owner_wrote() {
    let db = TestDb::new();
    let app = crate::connections::Role::create(-1);
    app.owns(&db);
    let t = crate::support::tenantctl(&db).url(&app.url(&db));
    t.run(&["init"]).expect(0);
    create(&t, "alpha", &["--migrate"]);
    create(&t, "bravo", &["--migrate"]);
    let evil = crate::connections::Role::create(-1);
    sql(
        &db,
        &format!(
            "GRANT USAGE, CREATE ON SCHEMA tenant_alpha TO \"{e}\"; ALTER TABLE {h} OWNER TO \"{e}\"",
            e = evil.name,
            h = history("alpha")
        ),
    );
    let mut c = postgres::Client::connect(&evil.url(&db), postgres::NoTls).unwrap();
    c.batch_execute(&format!(
        "CREATE FUNCTION tenant_alpha.spy() RETURNS boolean LANGUAGE plpgsql AS $$
           BEGIN
             IF current_user <> '{e}' THEN
               UPDATE public.tenants SET tenant_name = 'taken' WHERE domain = 'bravo';
             END IF;
             RETURN true;
           END $$;
         ALTER TABLE {h} ENABLE ROW LEVEL SECURITY;
         ALTER TABLE {h} FORCE ROW LEVEL SECURITY;
         CREATE POLICY p ON {h} USING (tenant_alpha.spy());
         GRANT SELECT ON {h} TO \"{a}\"",
        e = evil.name,
        a = app.name,
        h = history("alpha")
    ))
    .unwrap();
    drop(c);
    // The ALTER TABLEs made alpha's row untrusted: every read below reads it in full.
    let s = status(&t, "alpha");
    assert!(!s["history_error"].is_null(), "{s:#}");
    t.run(&["current", "-o", "json"]);
    t.run(&["check", "-o", "json"]);
    t.run(&["tenant", "list", "-o", "json"]).expect(0);
    // A run's session reads the history under the tenant's lock, its `COPY` sent
    // ahead with the catalog lookup: still with `row_security` off.
    t.run(&["upgrade", "--all"]);
    t.run(&["upgrade", "--tenant", "alpha"]);
    let name: String = db
        .client()
        .query_one(
            "SELECT tenant_name FROM tenants WHERE domain = 'bravo'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(name, "bravo", "a policy ran with tenantctl's rights");
    sql(
        &db,
        &format!(
            "DROP SCHEMA tenant_alpha CASCADE; DROP OWNED BY \"{e}\"",
            e = evil.name
        ),
    );
}

#[test]
fn init_needs_no_create_on_the_database_when_the_schema_is_there() {
    let db = TestDb::new();
    let role = crate::connections::Role::create(-1);
    sql(
        &db,
        &format!("GRANT USAGE, CREATE ON SCHEMA public TO \"{}\"", role.name),
    );
    let t = crate::support::tenantctl(&db).url(&role.url(&db));
    let init: Value = t.run(&["init", "-o", "json"]).expect(0).json();
    assert_eq!(init["index"][0]["installed"], true, "{init:#}");
    assert_eq!(init["index"][0]["error"], Value::Null, "{init:#}");
    // Without a superuser there is no watch: the index is checked against the catalog.
    assert_eq!(init["index"][0]["watched"], false, "{init:#}");
    let why = init["index"][0]["unwatched"].as_str().unwrap_or_default();
    assert!(why.contains("owned by superusers"), "{init:#}");
    t.run(&["init"]).expect(0);
    // A superuser does not arm event triggers over objects another role owns: their
    // function would run on every role's DDL.
    let su: Value = crate::support::tenantctl(&db)
        .run(&["init", "-o", "json"])
        .expect(0)
        .json();
    assert_eq!(su["index"][0]["watched"], false, "{su:#}");
    let why = su["index"][0]["unwatched"].as_str().unwrap_or_default();
    assert!(why.contains("owned by superusers"), "{su:#}");
    sql(&db, &format!("DROP OWNED BY \"{}\"", role.name));
}

#[test]
fn a_history_table_without_a_key_is_still_indexed_exactly() {
    // The trigger's functions run with sequential scans off (their catalog lookups go by
    // key): a history table a sequential scan alone can read must still be read whole.
    let (db, t) = fleet();
    sql(
        &db,
        &format!(
            "ALTER TABLE {h} DROP CONSTRAINT refinery_schema_history_pkey; \
             DELETE FROM {h} WHERE version = 6",
            h = history("alpha")
        ),
    );
    t.run(&["init"]).expect(0);
    let s = status(&t, "alpha");
    assert_eq!(said(&s).0, HEAD - 1, "{s:#}");
    let report = agree(&t, 3);
    assert_eq!(read_in_full(&report, "alpha"), None, "{report:#}");
    // And a write after init keeps it exact.
    sql(
        &db,
        &format!("DELETE FROM {} WHERE version = 5", history("alpha")),
    );
    let s = status(&t, "alpha");
    assert_eq!(said(&s).0, HEAD - 2, "{s:#}");
    agree(&t, 3);
}

/// Whether `check` says the default server's index is not watched.
fn unwatched(t: &Tenantctl) -> bool {
    let report = check(t, false);
    report["index"]["unwatched"]
        .as_array()
        .is_some_and(|u| !u.is_empty())
}

#[test]
fn the_watch_disarms_itself_rather_than_leave_a_row_unmarked() {
    // DDL under REPEATABLE READ: a row written since the snapshot could not be marked.
    let (db, t) = fleet();
    sql(
        &db,
        &format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1; \
             ALTER TABLE {h} DISABLE TRIGGER tenantctl_versions; DELETE FROM {h} WHERE version = 6; \
             ALTER TABLE {h} ENABLE ALWAYS TRIGGER tenantctl_versions; COMMIT",
            h = history("alpha")
        ),
    );
    assert!(unwatched(&t), "DDL under REPEATABLE READ disarms the watch");
    assert_eq!(said(&status(&t, "alpha")), (Value::from(5), 1, 0, true));
    agree(&t, 2);
    let init: Value = t.run(&["init", "-o", "json"]).expect(0).json();
    assert_eq!(init["index"][0]["watched"], true, "{init:#}");
    agree(&t, 3);

    // A row that cannot be marked in time (the index table locked by someone else):
    // the command goes through, and the watch disarms itself.
    let mut holder = db.client();
    holder
        .batch_execute("BEGIN; LOCK public.tenant_versions IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    sql(
        &db,
        &format!(
            "SET lock_timeout = '300ms'; ALTER TABLE {h} DISABLE TRIGGER tenantctl_versions; \
             DELETE FROM {h} WHERE version = 6; RESET lock_timeout",
            h = history("bravo")
        ),
    );
    holder.batch_execute("ROLLBACK").unwrap();
    assert!(unwatched(&t), "a mark not made disarms the watch");
    assert_eq!(said(&status(&t, "bravo")), (Value::from(5), 1, 0, true));
    let report = agree(&t, 2);
    assert_eq!(
        read_in_full(&report, "bravo").as_deref(),
        Some("trigger_disabled")
    );
    t.run(&["init"]).expect(0);

    // The index's own function renamed away while the history is written, then back:
    // every row is marked and the watch disarmed.
    sql(
        &db,
        &format!(
            "ALTER FUNCTION public.tenant_versions_sync(regclass) RENAME TO tenant_versions_away; \
             DELETE FROM {h} WHERE version = 6; \
             ALTER FUNCTION public.tenant_versions_away(regclass) RENAME TO tenant_versions_sync",
            h = history("charlie")
        ),
    );
    assert!(unwatched(&t), "touching the index disarms the watch");
    assert_eq!(said(&status(&t, "charlie")), (Value::from(5), 1, 0, true));
    let report = agree(&t, 0);
    assert_eq!(read_in_full(&report, "alpha").as_deref(), Some("changed"));
    let init: Value = t.run(&["init", "-o", "json"]).expect(0).json();
    assert_eq!(init["index"][0]["watched"], true, "{init:#}");
    agree(&t, 3);
    assert_eq!(said(&status(&t, "charlie")), (Value::from(5), 1, 0, true));
}

#[test]
fn the_watch_never_runs_for_a_schema_a_role_other_than_a_superuser_owns() {
    let (db, t) = fleet();
    // Armed while the database (and so `public`) is a superuser's.
    assert!(!unwatched(&t));
    let m = crate::connections::Role::create(-1);
    m.owns(&db);
    // The owner of `public` could now replace the index table with one whose trigger
    // runs its code: the watch must no longer touch it, even for a superuser's DDL.
    let report = check(&t, false);
    let why = report["index"]["unwatched"][0]["why"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("superusers own"), "{report:#}");
    let mut c = postgres::Client::connect(&m.url(&db), postgres::NoTls).unwrap();
    c.batch_execute(&format!(
        "DROP TABLE public.tenant_versions; \
         CREATE TABLE public.tenant_versions (schema_name text, history_oid oid, schema_oid oid, \
           trigger_oid oid, changed text); \
         CREATE FUNCTION public.take() RETURNS trigger LANGUAGE plpgsql AS $$ \
           BEGIN EXECUTE 'ALTER ROLE \"{m}\" SUPERUSER'; RETURN NULL; END $$; \
         CREATE TRIGGER take AFTER INSERT OR UPDATE OR DELETE ON public.tenant_versions \
           FOR EACH STATEMENT EXECUTE FUNCTION public.take()",
        m = m.name
    ))
    .unwrap_or_else(|e| panic!("{e:?}"));
    drop(c);
    // A superuser's DDL on a history table, and a write to one.
    sql(
        &db,
        &format!(
            "ALTER TABLE {h} DISABLE TRIGGER tenantctl_versions; ALTER TABLE {h} ENABLE ALWAYS TRIGGER tenantctl_versions; \
             DELETE FROM {h} WHERE version = 6",
            h = history("alpha")
        ),
    );
    let superuser: bool = db
        .client()
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = $1",
            &[&m.name],
        )
        .unwrap()
        .get(0);
    assert!(!superuser, "the owner of public ran code as a superuser");
    sql(
        &db,
        &format!(
            "DROP TABLE public.tenant_versions; DROP FUNCTION public.take(); \
             ALTER DATABASE \"{}\" OWNER TO CURRENT_USER",
            db.name
        ),
    );
    // Back with a superuser's schema, init builds the index again and arms the watch.
    let init: Value = t.run(&["init", "-o", "json"]).expect(0).json();
    assert_eq!(init["index"][0]["watched"], true, "{init:#}");
    agree(&t, 3);
    assert_eq!(said(&status(&t, "alpha")), (Value::from(5), 1, 0, true));
}

#[test]
fn a_history_table_renamed_by_alter_index_or_made_in_create_schema_is_seen() {
    let (db, t) = fleet();
    // PostgreSQL lets ALTER INDEX rename a table: alpha's history is put aside and a
    // shorter copy takes its name.
    sql(
        &db,
        &format!(
            "ALTER INDEX {h} RENAME TO h_old; \
             CREATE TABLE {h} (LIKE tenant_alpha.h_old INCLUDING ALL); \
             INSERT INTO {h} SELECT * FROM tenant_alpha.h_old WHERE version <= 3",
            h = history("alpha")
        ),
    );
    // A child of bravo's history made by CREATE SCHEMA's own CREATE TABLE.
    let kid = format!("kid_{}", db.name);
    sql(
        &db,
        &format!(
            "CREATE SCHEMA {kid} CREATE TABLE k () INHERITS ({h}); \
             INSERT INTO {kid}.k SELECT version + 100, name, applied_on, checksum FROM {h} WHERE version = 1",
            h = history("bravo")
        ),
    );
    assert_eq!(said(&status(&t, "alpha")), (Value::from(3), 3, 0, true));
    assert_ne!(said(&status(&t, "bravo")), (Value::from(HEAD), 0, 0, true));
    let report = agree(&t, 1);
    assert_eq!(read_in_full(&report, "alpha").as_deref(), Some("changed"));
    assert_eq!(read_in_full(&report, "bravo").as_deref(), Some("changed"));
    sql(&db, &format!("DROP SCHEMA {kid} CASCADE"));
}

#[test]
fn a_watch_function_given_to_another_role_is_never_called_again() {
    let (db, t) = fleet();
    let m = crate::connections::Role::create(-1);
    sql(
        &db,
        &format!(
            "ALTER FUNCTION public.tenant_versions_watch() OWNER TO \"{}\"",
            m.name
        ),
    );
    assert!(unwatched(&t));
    // init, as a superuser, drops the event triggers that would call it.
    let init: Value = t.run(&["init", "-o", "json"]).expect(0).json();
    assert_eq!(init["index"][0]["watched"], false, "{init:#}");
    let left: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM pg_event_trigger WHERE evtfoid = 'public.tenant_versions_watch()'::regprocedure",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        left, 0,
        "an event trigger still calls a function another role owns"
    );
    // Given back, init arms the watch again.
    sql(
        &db,
        "ALTER FUNCTION public.tenant_versions_watch() OWNER TO CURRENT_USER",
    );
    let init: Value = t.run(&["init", "-o", "json"]).expect(0).json();
    assert_eq!(init["index"][0]["watched"], true, "{init:#}");
    agree(&t, 3);
}

/// `init` re-arming the watch, killed at `failpoint` while a writer keeps writing
/// bravo's history and, while it lies dead, alpha's trigger is switched off around a
/// delete: every read stays what a full read says, nothing but the index is changed,
/// and the rerun arms the watch.
fn arming_killed_at(failpoint: &str) {
    let (db, t) = fleet();
    // Off and on again: the next init must arm the watch anew.
    sql(
        &db,
        "DO $$ DECLARE e record; BEGIN \
           FOR e IN SELECT evtname FROM pg_event_trigger WHERE evtname LIKE 'tenantctl\\_versions\\_%' LOOP \
             EXECUTE format('ALTER EVENT TRIGGER %I DISABLE', e.evtname); \
             EXECUTE format('ALTER EVENT TRIGGER %I ENABLE ALWAYS', e.evtname); \
           END LOOP; END $$",
    );
    assert!(unwatched(&t));
    let registry_before: Vec<String> = db
        .client()
        .query(
            "SELECT row(t.*)::text FROM public.tenants t ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (url, stop, h) = (db.url.clone(), stop.clone(), history("bravo"));
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut acked = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Each write acknowledged leaves version 6 there or not, in turn.
                let sql = if acked.is_multiple_of(2) {
                    format!("DELETE FROM {h} WHERE version = 6")
                } else {
                    format!(
                        "INSERT INTO {h} SELECT version, name, applied_on, checksum \
                         FROM tenant_charlie.refinery_schema_history WHERE version = 6"
                    )
                };
                if c.batch_execute(&sql).is_ok() {
                    acked += 1;
                }
            }
            acked
        })
    };
    let mut child = t
        .clone()
        .env("FAILPOINTS", &format!("{failpoint}=pause"))
        .spawn(&["init"]);
    child.wait_for_stderr(&format!("failpoint {failpoint}"));
    child.kill();
    // Nothing but the index was changed by the killed init: the registry is as it was.
    let registry_after: Vec<String> = db
        .client()
        .query(
            "SELECT row(t.*)::text FROM public.tenants t ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(registry_before, registry_after);
    sql(
        &db,
        &format!(
            "ALTER TABLE {h} DISABLE TRIGGER tenantctl_versions; DELETE FROM {h} WHERE version = 6; \
             ALTER TABLE {h} ENABLE ALWAYS TRIGGER tenantctl_versions",
            h = history("alpha")
        ),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(acked > 0, "the writer wrote nothing");
    // Half armed: not trusted as armed, and every answer a full read's.
    assert!(unwatched(&t), "a killed init left the watch armed");
    let bravo = if acked.is_multiple_of(2) {
        HEAD
    } else {
        HEAD - 1
    };
    assert_eq!(said(&status(&t, "alpha")), (Value::from(5), 1, 0, true));
    assert_eq!(said(&status(&t, "bravo")).0, Value::from(bravo));
    let deep = check(&t, true);
    let mismatched: Vec<&Value> = deep["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["kind"] == "index_mismatch")
        .collect();
    assert!(mismatched.is_empty(), "{mismatched:#?}");
    // The rerun arms it, every row written anew.
    let init: Value = t.run(&["init", "-o", "json"]).expect(0).json();
    assert_eq!(init["index"][0]["watched"], true, "{init:#}");
    agree(&t, 3);
    assert_eq!(said(&status(&t, "alpha")), (Value::from(5), 1, 0, true));
}

#[test]
fn init_killed_after_making_the_watch_leaves_every_read_exact() {
    arming_killed_at("index.watch-prepared");
}

#[test]
fn init_killed_after_writing_the_rows_before_arming_leaves_every_read_exact() {
    arming_killed_at("index.rows-written");
}
