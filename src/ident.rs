//! Names: validation of domains, schema and table names, and identifier quoting.
//!
//! Every name that reaches SQL passes through here first. Validation happens before any
//! connection is made, so a refused name changes nothing (exit 2). Quoting is applied even
//! to validated names, so the SQL stays correct if the rules are ever loosened.

use crate::error::Error;

/// PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
pub const MAX_IDENT_BYTES: usize = 63;

/// Checks a tenant domain: lowercase letters, digits and `-`, at most 63 bytes, starting
/// with a letter or digit, and not all digits (so it never reads as a tenant id).
pub fn validate_domain(domain: &str) -> Result<(), Error> {
    let shown = shown(domain);
    if domain.is_empty() {
        return Err(Error::usage("the tenant domain is empty"));
    }
    if domain.len() > MAX_IDENT_BYTES {
        return Err(Error::usage(format!(
            "domain {shown} is {} bytes long; the limit is {MAX_IDENT_BYTES}",
            domain.len()
        )));
    }
    if !domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(Error::usage(format!(
            "domain {shown} may contain only lowercase letters, digits and '-'"
        )));
    }
    if domain.starts_with('-') {
        return Err(Error::usage(format!(
            "domain {shown} must start with a letter or digit"
        )));
    }
    if domain.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::usage(format!(
            "domain {shown} is all digits, which would read as a tenant id; add a letter"
        )));
    }
    Ok(())
}

/// Checks that `name` is a plain lowercase SQL identifier: `^[a-z_][a-z0-9_]*$`, at most
/// 63 bytes. `what` names the thing in the error ("schema name", "history table").
pub fn validate_identifier(name: &str, what: &str) -> Result<(), Error> {
    let shown = shown(name);
    if name.is_empty() {
        return Err(Error::usage(format!("the {what} is empty")));
    }
    if name.len() > MAX_IDENT_BYTES {
        return Err(Error::usage(format!(
            "{what} {shown} is {} bytes long; PostgreSQL's limit is {MAX_IDENT_BYTES}",
            name.len()
        )));
    }
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    if !first_ok || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(Error::usage(format!(
            "{what} {shown} must match ^[a-z_][a-z0-9_]*$ (lowercase letters, digits, '_', not starting with a digit)"
        )));
    }
    Ok(())
}

/// Checks a tenant schema name: a plain identifier, not `pg_*`, not `public`,
/// `information_schema` or the registry schema.
pub fn validate_schema_name(name: &str, registry_schema: &str) -> Result<(), Error> {
    validate_identifier(name, "schema name")?;
    if name.starts_with("pg_") {
        return Err(Error::usage(format!(
            "schema name \"{name}\" starts with pg_, which PostgreSQL reserves"
        )));
    }
    if name == "public" || name == "information_schema" || name == registry_schema {
        return Err(Error::usage(format!(
            "schema name \"{name}\" is reserved (public, information_schema and the registry schema cannot hold a tenant)"
        )));
    }
    Ok(())
}

/// Checks the registry schema name: a plain identifier, not `pg_*` or `information_schema`
/// (`public` is allowed and is the default).
pub fn validate_registry_schema(name: &str) -> Result<(), Error> {
    validate_identifier(name, "registry schema")?;
    if name.starts_with("pg_") || name == "information_schema" {
        return Err(Error::usage(format!(
            "registry schema \"{name}\" is reserved by PostgreSQL"
        )));
    }
    Ok(())
}

/// The default schema for a domain: `prefix` + domain with `-` turned into `_`, validated.
pub fn schema_for_domain(
    prefix: &str,
    domain: &str,
    registry_schema: &str,
) -> Result<String, Error> {
    let schema = format!("{prefix}{}", domain.replace('-', "_"));
    validate_schema_name(&schema, registry_schema).map_err(|e| {
        Error::usage(format!(
            "{e}; it was derived from domain \"{domain}\" with prefix \"{prefix}\"; pass --schema NAME to choose one"
        ))
    })?;
    Ok(schema)
}

/// Checks a tenant's display name: 1 to 200 characters, no control characters.
pub fn validate_display_name(name: &str) -> Result<(), Error> {
    if name.trim().is_empty() {
        return Err(Error::usage("the tenant name (--name) is empty"));
    }
    if name.chars().count() > 200 {
        return Err(Error::usage(
            "the tenant name (--name) is longer than 200 characters",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::usage(format!(
            "the tenant name {} contains control characters",
            shown(name)
        )));
    }
    Ok(())
}

/// Checks an email address loosely: one `@` with text on both sides, no spaces or control
/// characters, at most 254 bytes.
pub fn validate_email(email: &str) -> Result<(), Error> {
    let ok = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, host)) if !local.is_empty() && !host.is_empty() && !host.contains('@'));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "email {} is not an email address",
            shown(email)
        )))
    }
}

/// Checks a server name: `^[a-z][a-z0-9_-]*$`, at most 63 bytes.
pub fn validate_server_name(name: &str) -> Result<(), Error> {
    let ok = name.len() <= MAX_IDENT_BYTES
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "server name {} must start with a lowercase letter and hold only lowercase letters, digits, '-' and '_' (at most 63)",
            shown(name)
        )))
    }
}

/// Checks a tenant type: lowercase letters, digits, `-` and `_`, 1 to 63 bytes.
pub fn validate_tenant_type(t: &str) -> Result<(), Error> {
    let ok = !t.is_empty()
        && t.len() <= MAX_IDENT_BYTES
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "tenant type {} may contain only lowercase letters, digits, '-' and '_' (at most 63)",
            shown(t)
        )))
    }
}

/// Quotes an identifier for SQL: wraps it in double quotes and doubles any inside (libpq's
/// `PQescapeIdentifier`, as `postgres-protocol` implements it).
pub fn quote(ident: &str) -> String {
    postgres_protocol::escape::escape_identifier(ident)
}

/// A quoted, schema-qualified name: `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote(schema), quote(name))
}

/// A SQL string literal, safe whatever `standard_conforming_strings` says.
pub fn literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// A user-supplied value as it may appear in an error: quoted, control characters
/// escaped, and cut at 80 characters so a hostile value cannot flood the terminal.
pub fn shown(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(80)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if value.chars().count() > 80 {
        out.push('…');
    }
    format!("\"{out}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_domains() {
        for d in [
            "demo-church",
            "a",
            "st-marys-2",
            "9lives",
            "x".repeat(63).as_str(),
        ] {
            assert!(validate_domain(d).is_ok(), "{d}");
        }
    }

    #[test]
    fn refuses_hostile_domains() {
        let long = "x".repeat(64);
        for d in [
            "",
            "Demo",
            "demo church",
            "demo_church",
            "-demo",
            "123",
            "demo;drop",
            "demo\"x",
            "démo",
            "demo\n",
            &long,
        ] {
            let err = validate_domain(d).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::Invalid, "{d}");
        }
    }

    #[test]
    fn schema_names_follow_the_safety_rules() {
        for ok in ["tenant_demo", "_x", "a1", &"s".repeat(63)] {
            assert!(validate_schema_name(ok, "public").is_ok(), "{ok}");
        }
        for bad in [
            "public",
            "information_schema",
            "pg_temp",
            "pg_x",
            "registry",
            "1abc",
            "Tenant",
            "a-b",
            "a\"b",
            "a;b",
            "",
            "é",
            &"s".repeat(64),
        ] {
            assert!(validate_schema_name(bad, "registry").is_err(), "{bad}");
        }
    }

    #[test]
    fn registry_schema_may_be_public_but_not_a_system_schema() {
        assert!(validate_registry_schema("public").is_ok());
        assert!(validate_registry_schema("tenantctl").is_ok());
        assert!(validate_registry_schema("pg_catalog").is_err());
        assert!(validate_registry_schema("information_schema").is_err());
    }

    #[test]
    fn derives_schema_from_domain() {
        assert_eq!(
            schema_for_domain("tenant_", "demo-church", "public").unwrap(),
            "tenant_demo_church"
        );
        // A domain starting with a digit needs a prefix to become a valid schema name.
        assert!(schema_for_domain("", "9lives", "public").is_err());
        // Too long once prefixed.
        let err = schema_for_domain("tenant_", &"a".repeat(60), "public").unwrap_err();
        assert!(err.to_string().contains("--schema"));
    }

    #[test]
    fn free_text_fields_are_checked() {
        assert!(validate_display_name("Demo Church; DROP TABLE x").is_ok());
        assert!(validate_display_name(" ").is_err());
        assert!(validate_display_name("a\u{0}b").is_err());
        assert!(validate_email("admin@demo-church.com").is_ok());
        for bad in ["admin", "@x", "a@", "a b@c", "a@b@c", "a@b\n"] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
        assert!(validate_tenant_type("church").is_ok());
        assert!(validate_tenant_type("Church").is_err());
        assert!(validate_tenant_type("").is_err());
    }

    #[test]
    fn quoting_doubles_embedded_quotes() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(qualified("s", "t"), "\"s\".\"t\"");
    }

    /// `quote` gives exactly what the hand-written quoting it replaced gave: double quotes
    /// around, embedded double quotes doubled, everything else (backslashes included)
    /// verbatim.
    #[test]
    fn quoting_matches_the_hand_written_rule_on_tricky_names() {
        let by_hand = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let long = "x".repeat(200);
        let tricky = [
            "",
            "\"",
            "\"\"",
            "a\"b",
            "\"leading",
            "trailing\"",
            "back\\slash",
            "\\\"",
            "it's",
            "spa ce",
            "semi;colon",
            "new\nline",
            "tab\tand\rcr",
            "UPPER_lower",
            "ünïcödé",
            "日本語",
            "emoji🦀\"",
            "dollar$$tag",
            "--comment",
            "/*c*/",
            "\u{0}nul",
            &long,
        ];
        for name in tricky {
            assert_eq!(quote(name), by_hand(name), "{name:?}");
        }
    }

    #[test]
    fn shown_escapes_and_truncates() {
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        assert!(shown(&"x".repeat(200)).ends_with("…\""));
    }
}
