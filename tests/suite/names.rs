//! Name safety: invalid domains, schema names, emails and tenant types are refused with
//! exit 2 before any SQL runs (no registry row, no schema); hostile but valid values are
//! bound, not spliced; duplicate domains and schemas fail with exit 1.

use crate::{checks, common_json, support};
use checks::{create, expect_error, tenant_count, user_schemas};
use common_json::Created;
use support::ready;

#[test]
fn invalid_domains_schemas_emails_and_types_are_refused_before_any_sql() {
    let (db, t) = ready();
    let before = user_schemas(&db);
    let long_domain = "a".repeat(64);
    for domain in [
        "x; drop table tenants",
        "Demo",
        "a\"b",
        "-lead",
        "123",
        long_domain.as_str(),
        "demo church",
        "demo_church",
        "café",
        "",
    ] {
        let run = t.run(&[
            "tenant",
            "create",
            "--name",
            "X",
            "--provision",
            "--",
            domain,
        ]);
        expect_error(&run, 2, &["domain"]);
    }
    let long_schema = "s".repeat(64);
    for schema in [
        "public",
        "pg_evil",
        "information_schema",
        "bad-name",
        "\"quoted\"",
        long_schema.as_str(),
        "Upper",
        "1abc",
        "x;drop table tenants",
    ] {
        let run = t.run(&[
            "tenant",
            "create",
            "fine-domain",
            "--name",
            "X",
            "--provision",
            "--schema",
            schema,
        ]);
        expect_error(&run, 2, &["schema"]);
    }
    for email in ["not-an-email", "a b@c.d", "@example.com", "x@", "a@b@c"] {
        let run = t.run(&[
            "tenant",
            "create",
            "fine-domain",
            "--name",
            "X",
            "--email",
            email,
            "--provision",
        ]);
        expect_error(&run, 2, &["email"]);
    }
    for ty in ["Church", "a b", "x;y", "", "t'ype"] {
        let run = t.run(&[
            "tenant",
            "create",
            "fine-domain",
            "--name",
            "X",
            "--type",
            ty,
            "--provision",
        ]);
        expect_error(&run, 2, &["type"]);
    }
    expect_error(
        &t.run(&["tenant", "create", "fine-domain", "--name", "   "]),
        2,
        &["name"],
    );

    // A 60-character domain is valid, but "tenant_" + it is too long for a schema name.
    let sixty = "d".repeat(60);
    expect_error(
        &t.run(&["tenant", "create", &sixty, "--name", "Long", "--provision"]),
        2,
        &["--schema"],
    );

    // Names are checked before connecting: an unreachable server does not change the answer.
    let offline = support::bare();
    for args in [
        &["tenant", "create", "Bad", "--name", "X"][..],
        &["tenant", "create", "ok", "--name", "X", "--schema", "pg_x"][..],
        &["tenant", "create", "ok", "--name", "X", "--email", "nope"][..],
    ] {
        let mut full = vec!["--database-url", "postgres://postgres@127.0.0.1:1/x"];
        full.extend_from_slice(args);
        expect_error(&offline.run(&full), 2, &[]);
    }

    assert_eq!(tenant_count(&db), 0, "a refused name left a registry row");
    assert_eq!(user_schemas(&db), before, "a refused name created a schema");

    // ...and with --schema it is accepted.
    let c = create(&t, &sixty, &["--schema", "long_one", "--provision"]);
    assert_eq!(c.tenant.schema_name, "long_one");
    assert_eq!(c.tenant.domain, sixty);
    assert!(checks::schema_exists(&db, "long_one"));
}

#[test]
fn hostile_but_valid_values_are_stored_verbatim() {
    let (db, t) = ready();
    let name = "Robert'); DROP TABLE tenants;--";
    let email = "o'brien);drop_table_tenants;--@example.com";
    let c: Created = t
        .run(&[
            "tenant",
            "create",
            "bobby-tables",
            "--name",
            name,
            "--email",
            email,
            "--type",
            "church",
            "-o",
            "json",
        ])
        .expect(0)
        .json();
    assert_eq!(c.tenant.tenant_name, name);
    assert_eq!(c.tenant.email.as_deref(), Some(email));
    let mut client = db.client();
    let row = client
        .query_one(
            "SELECT tenant_name, email, to_regclass('public.tenants') IS NOT NULL FROM public.tenants WHERE domain = 'bobby-tables'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), name);
    assert_eq!(row.get::<_, String>(1), email);
    assert!(row.get::<_, bool>(2), "the tenants table is gone");
    assert_eq!(tenant_count(&db), 1);

    // Unicode and quotes in a display name too.
    let fancy = "Église \"Saint-Jean\" & Co; \\ '";
    let c: Created = t
        .run(&["tenant", "create", "eglise", "--name", fancy, "--json"])
        .expect(0)
        .json();
    assert_eq!(c.tenant.tenant_name, fancy);
    let stored: String = client
        .query_one(
            "SELECT tenant_name FROM public.tenants WHERE domain = 'eglise'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(stored, fancy);
}

#[test]
fn a_duplicate_domain_fails_with_exit_1_a_taken_schema_with_exit_2_and_nothing_is_created() {
    let (db, t) = ready();
    create(&t, "demo", &["--provision"]);
    let before = user_schemas(&db);
    expect_error(
        &t.run(&["tenant", "create", "demo", "--name", "Again", "--provision"]),
        1,
        &["demo", "already exists"],
    );
    expect_error(
        &t.run(&[
            "tenant",
            "create",
            "other",
            "--name",
            "Other",
            "--schema",
            "tenant_demo",
            "--provision",
        ]),
        2,
        &["tenant_demo", "already belongs to tenant demo"],
    );
    // The same with JSON output: still nothing on stdout.
    expect_error(
        &t.run(&["tenant", "create", "demo", "--name", "Again", "-o", "json"]),
        1,
        &["demo"],
    );
    assert_eq!(tenant_count(&db), 1);
    assert_eq!(user_schemas(&db), before);
    let name: String = db
        .client()
        .query_one(
            "SELECT tenant_name FROM public.tenants WHERE domain = 'demo'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(name, "demo", "the first registration was changed");
}

/// A mistyped tenant or server gets the nearest names it may have meant.
#[test]
fn a_mistyped_tenant_or_server_gets_a_did_you_mean() {
    let (_db, t) = crate::support::ready();
    for d in ["demo-church", "grace-chapel", "alpha"] {
        t.run(&["tenant", "create", d, "--name", d]).expect(0);
    }
    // Two letters swapped count as one slip, even in a short name.
    let run = t.run(&["tenant", "show", "alpah"]);
    crate::checks::expect_error(&run, 1, &["did you mean \"alpha\"?"]);
    let run = t.run(&["tenant", "show", "demo-chruch"]);
    crate::checks::expect_error(
        &run,
        1,
        &["no tenant matches \"demo-chruch\"; did you mean \"demo-church\"?"],
    );
    let run = t.run(&["tenant", "show", "zzzzzzzzzz"]);
    assert!(!run.stderr.contains("did you mean"), "{}", run.stderr);
    let run = t.run(&["provision", "--server", "defualt"]);
    assert!(
        run.stderr.contains("did you mean default?"),
        "{}",
        run.stderr
    );
}
