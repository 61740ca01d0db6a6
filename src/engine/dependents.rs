//! The boundary of a tenant's schema in the catalog: what the schema holds, and which
//! objects outside it depend on objects inside it.
//!
//! `DROP SCHEMA ... CASCADE` removes everything that depends on the schema's objects,
//! wherever it lives: a view in another tenant's schema over one of its tables, a foreign
//! key pointing into it, a column of another schema typed with one of its types, an
//! extension whose objects it holds and everything using that extension. Before
//! `tenant drop` or `provision --force-recreate` drops a schema, [`outside`] lists those
//! objects from `pg_depend`, so the drop can be refused while nothing has changed yet.
//!
//! "Inside" means: the schema itself; every object whose namespace is the schema
//! (relations, types, functions, constraints, operators and their classes and families,
//! collations, conversions, text search objects, statistics objects, default privileges);
//! the parts of those objects that have no namespace of their own (TOAST tables, rewrite
//! rules, triggers, column defaults, policies, operator family members, casts and
//! transforms of its types); and extensions installed in the schema or with a member in
//! it. [`used_outside`] reads the other way: what the objects inside a set of schemas use
//! from other schemas (an extension's function in a column default, a type, a table a
//! foreign key points to). An internal dependency (`deptype = 'i'`, e.g. the triggers behind a foreign key of
//! another schema) is part of the object it depends on and is never reported.

use tokio_postgres::{Client, GenericClient, Transaction};

use crate::config::Settings;
use crate::error::Error;
use crate::ident::{qualified, quote};
use crate::pg::db::query_error;

/// How many dependents a refusal names; the rest are counted.
pub const SHOWN: usize = 10;

/// An object outside the schema that depends on an object inside it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct Dependent {
    /// The outside object, as PostgreSQL describes it, e.g. `view tenant_p2.v` (a view
    /// is named rather than its rewrite rule).
    pub object: String,
    /// An object of the schema it depends on, e.g. `table tenant_p1.t`.
    pub depends_on: String,
}

impl std::fmt::Display for Dependent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} depends on {}", self.object, self.depends_on)
    }
}

/// What a schema holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contents {
    /// The schema exists.
    pub exists: bool,
    /// Objects recorded as living in it (tables, views, sequences, functions, types,
    /// extensions, default privileges, ...), not counting their parts (indexes,
    /// constraints, ...). 0 when it does not exist.
    pub objects: i64,
}

impl Contents {
    /// The schema exists and holds at least one object.
    pub fn non_empty(&self) -> bool {
        self.exists && self.objects > 0
    }
}

/// Whether `schema` exists and how many objects it holds.
pub async fn contents<C: GenericClient>(client: &C, schema: &str) -> Result<Contents, Error> {
    let rows = about(
        client,
        schema,
        "SELECT n.oid IS NOT NULL, (SELECT count(*) FROM pg_catalog.pg_depend d \
         WHERE d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND d.refobjid = n.oid) \
         FROM (SELECT 1) AS one LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = $1",
        "reading what schema",
    )
    .await?;
    let exists: bool = rows[0].get(0);
    let objects: i64 = rows[0].get(1);
    Ok(Contents {
        exists,
        objects: if exists { objects } else { 0 },
    })
}

/// Why `schema` can never be a tenant's schema, and so is never dropped or recreated as
/// one: it is the registry schema, or a shared schema listed in
/// `tenants.extra_search_path`. `None` for any other schema.
pub fn shared_role(settings: &Settings, schema: &str) -> Option<&'static str> {
    if schema == settings.registry_schema {
        Some("the registry schema (registry.schema)")
    } else if settings.extra_search_path.iter().any(|s| s == schema) {
        Some("a shared schema listed in tenants.extra_search_path")
    } else if settings.shared.as_ref().is_some_and(|s| s.schema == schema) {
        Some("the application's shared schema (shared.schema)")
    } else {
        None
    }
}

/// Catalogs whose rows belong to a schema, with the column naming the schema: the
/// objects of these kinds inside it are the schema's own.
const OWNED: &[(&str, &str)] = &[
    ("pg_class", "relnamespace"),
    ("pg_type", "typnamespace"),
    ("pg_proc", "pronamespace"),
    ("pg_constraint", "connamespace"),
    ("pg_operator", "oprnamespace"),
    ("pg_opclass", "opcnamespace"),
    ("pg_opfamily", "opfnamespace"),
    ("pg_collation", "collnamespace"),
    ("pg_conversion", "connamespace"),
    ("pg_ts_config", "cfgnamespace"),
    ("pg_ts_dict", "dictnamespace"),
    ("pg_ts_parser", "prsnamespace"),
    ("pg_ts_template", "tmplnamespace"),
    ("pg_statistic_ext", "stxnamespace"),
    ("pg_default_acl", "defaclnamespace"),
];

/// The objects inside the schema `$1` (see the module documentation), as
/// `(classid, objid)`: SQL common table expressions ending in `inside`, for `WITH`.
fn inside() -> String {
    inside_of("nspname = $1")
}

/// As [`inside`], for the schemas `condition` selects from `pg_namespace`.
fn inside_of(condition: &str) -> String {
    let own: Vec<String> = OWNED
        .iter()
        .map(|(catalog, column)| {
            format!(
                "  UNION ALL SELECT 'pg_catalog.{catalog}'::pg_catalog.regclass, x.oid FROM pg_catalog.{catalog} x JOIN ns ON x.{column} = ns.oid"
            )
        })
        .collect();
    format!(
        "ns AS (SELECT oid FROM pg_catalog.pg_namespace WHERE {condition}),
own AS (
  SELECT 'pg_catalog.pg_namespace'::pg_catalog.regclass::oid AS classid, ns.oid AS objid FROM ns
{}
),
{INSIDE_PARTS}",
        own.join("\n")
    )
}

/// What else belongs to the objects of `own` (see [`inside`]).
const INSIDE_PARTS: &str = "\
rels AS (SELECT objid AS oid FROM own WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass),
types AS (SELECT objid AS oid FROM own WHERE classid = 'pg_catalog.pg_type'::pg_catalog.regclass),
toast AS (SELECT c.reltoastrelid AS oid FROM pg_catalog.pg_class c JOIN rels ON c.oid = rels.oid WHERE c.reltoastrelid <> 0),
parts AS (
  SELECT 'pg_catalog.pg_class'::pg_catalog.regclass::oid AS classid, toast.oid AS objid FROM toast
  UNION ALL SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, i.indexrelid FROM pg_catalog.pg_index i JOIN toast ON i.indrelid = toast.oid
  UNION ALL SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid FROM pg_catalog.pg_type t JOIN toast ON t.typrelid = toast.oid
  UNION ALL SELECT 'pg_catalog.pg_rewrite'::pg_catalog.regclass, x.oid FROM pg_catalog.pg_rewrite x JOIN rels ON x.ev_class = rels.oid
  UNION ALL SELECT 'pg_catalog.pg_trigger'::pg_catalog.regclass, x.oid FROM pg_catalog.pg_trigger x JOIN rels ON x.tgrelid = rels.oid
  UNION ALL SELECT 'pg_catalog.pg_attrdef'::pg_catalog.regclass, x.oid FROM pg_catalog.pg_attrdef x JOIN rels ON x.adrelid = rels.oid
  UNION ALL SELECT 'pg_catalog.pg_policy'::pg_catalog.regclass, x.oid FROM pg_catalog.pg_policy x JOIN rels ON x.polrelid = rels.oid
  UNION ALL SELECT 'pg_catalog.pg_amop'::pg_catalog.regclass, x.oid FROM pg_catalog.pg_amop x
    JOIN own ON own.classid = 'pg_catalog.pg_opfamily'::pg_catalog.regclass AND x.amopfamily = own.objid
  UNION ALL SELECT 'pg_catalog.pg_amproc'::pg_catalog.regclass, x.oid FROM pg_catalog.pg_amproc x
    JOIN own ON own.classid = 'pg_catalog.pg_opfamily'::pg_catalog.regclass AND x.amprocfamily = own.objid
  UNION ALL SELECT 'pg_catalog.pg_cast'::pg_catalog.regclass, x.oid FROM pg_catalog.pg_cast x
    WHERE x.castsource IN (SELECT oid FROM types) OR x.casttarget IN (SELECT oid FROM types)
  UNION ALL SELECT 'pg_catalog.pg_transform'::pg_catalog.regclass, x.oid FROM pg_catalog.pg_transform x JOIN types ON x.trftype = types.oid
  UNION ALL SELECT 'pg_catalog.pg_extension'::pg_catalog.regclass, e.oid FROM pg_catalog.pg_extension e JOIN ns ON e.extnamespace = ns.oid
  UNION ALL SELECT 'pg_catalog.pg_extension'::pg_catalog.regclass, d.refobjid FROM pg_catalog.pg_depend d
    JOIN own ON (d.classid, d.objid) = (own.classid, own.objid)
    WHERE d.deptype = 'e' AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
),
inside AS (SELECT classid, objid FROM own UNION SELECT classid, objid FROM parts)";

/// The objects outside `schema` that depend on objects inside it, sorted, one entry per
/// outside object. Empty when the schema does not exist.
///
/// Runs in the caller's transaction (so the answer holds for the `DROP SCHEMA` that
/// follows in it) and pins `search_path` to `pg_catalog` for the rest of that
/// transaction, so every name in the descriptions is schema-qualified.
pub async fn outside<C: GenericClient>(tx: &C, schema: &str) -> Result<Vec<Dependent>, Error> {
    let context = format!(
        "looking for objects outside schema {} that depend on it",
        quote(schema)
    );
    tx.batch_execute("SET LOCAL search_path TO pg_catalog")
        .await
        .map_err(query_error(&context))?;
    let sql = format!(
        "WITH {},
found AS (
  SELECT CASE WHEN r.rulename = '_RETURN' THEN 'pg_catalog.pg_class'::pg_catalog.regclass::oid ELSE d.classid END AS classid,
         CASE WHEN r.rulename = '_RETURN' THEN r.ev_class ELSE d.objid END AS objid,
         CASE WHEN r.rulename = '_RETURN' THEN 0 ELSE d.objsubid END AS objsubid,
         d.refclassid, d.refobjid
  FROM pg_catalog.pg_depend d
  JOIN inside i ON (d.refclassid, d.refobjid) = (i.classid, i.objid)
  LEFT JOIN pg_catalog.pg_rewrite r ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND r.oid = d.objid
  WHERE d.deptype <> 'i'
    AND NOT EXISTS (SELECT 1 FROM inside j WHERE (j.classid, j.objid) = (d.classid, d.objid))
),
described AS (
  SELECT pg_catalog.pg_describe_object(f.classid, f.objid, f.objsubid) AS object,
         pg_catalog.pg_describe_object(f.refclassid, f.refobjid, 0) AS depends_on,
         -- name a table rather than its index or column when both are involved
         CASE WHEN f.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
              AND (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = f.refobjid) IN ('i', 'I') THEN 1 ELSE 0 END AS rank
  FROM found f
)
SELECT DISTINCT ON (object) object, depends_on FROM described
WHERE object IS NOT NULL AND depends_on IS NOT NULL
ORDER BY object, rank, depends_on",
        inside()
    );
    let rows = tx
        .query(&sql, &[&schema])
        .await
        .map_err(query_error(&context))?;
    let mut found: Vec<Dependent> = rows
        .iter()
        .map(|r| Dependent {
            object: r.get(0),
            depends_on: r.get(1),
        })
        .collect();
    // Another tenantctl registry living in the schema (a second config's
    // `registry.schema`): its tenants and ledger belong to no tenant.
    let registry = tx
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &crate::registry::HISTORY_TABLE],
        )
        .await
        .map_err(query_error(&context))?;
    if registry.is_some() {
        found.insert(
            0,
            Dependent {
                object: "a tenantctl registry (its tenants, API key hashes and run ledger)"
                    .to_string(),
                depends_on: format!("table {}.{}", quote(schema), crate::registry::HISTORY_TABLE),
            },
        );
    }
    Ok(found)
}

/// A schema's contents and the objects outside it that depend on it, read together.
#[derive(Debug, Clone)]
pub struct Boundary {
    /// Whether the schema exists and how many objects it holds.
    pub contents: Contents,
    /// The objects outside it that a `DROP SCHEMA ... CASCADE` would also remove.
    pub outside: Vec<Dependent>,
}

/// Reads [`contents`] and [`outside`] in one read-only transaction, taking no lock and
/// changing nothing: for dry runs and for refusing before asking for confirmation. The
/// authoritative check runs again in the transaction that drops the schema.
pub async fn inspect(client: &mut Client, schema: &str) -> Result<Boundary, Error> {
    let context = format!("inspecting schema {}", quote(schema));
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(query_error(&context))?;
    let contents = contents(&tx, schema).await?;
    let outside = if contents.exists {
        outside(&tx, schema).await?
    } else {
        Vec::new()
    };
    tx.rollback().await.map_err(query_error(&context))?;
    Ok(Boundary { contents, outside })
}

/// An object of another schema that an object inside one of the schemas uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    /// The other schema.
    pub schema: String,
    /// The object used, as PostgreSQL describes it, e.g. `function public.uuid_generate_v4()`.
    pub object: String,
    /// The extension the object belongs to, if it does.
    pub extension: Option<String>,
    /// The object that uses it, e.g. `default value for column id of table tenant_a."user"`.
    pub used_by: String,
}

/// What the objects inside `schemas` use from other schemas (not PostgreSQL's own), from
/// `pg_depend`, sorted by schema, object and user. Read in a read-only transaction with
/// `search_path` pinned to `pg_catalog`, so every name is schema-qualified; takes no lock.
pub async fn used_outside(client: &mut Client, schemas: &[String]) -> Result<Vec<Use>, Error> {
    let context = "looking for what the tenants' schemas use from other schemas";
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(query_error(context))?;
    tx.batch_execute("SET LOCAL search_path TO pg_catalog")
        .await
        .map_err(query_error(context))?;
    let sql = format!(
        "WITH {},
found AS (
  SELECT d.classid, d.objid, d.objsubid, d.refclassid, d.refobjid
  FROM pg_catalog.pg_depend d
  JOIN inside i ON (d.classid, d.objid) = (i.classid, i.objid)
  WHERE d.deptype IN ('n', 'a')
    AND NOT EXISTS (SELECT 1 FROM inside j WHERE (j.classid, j.objid) = (d.refclassid, d.refobjid))
),
described AS (
  SELECT (pg_catalog.pg_identify_object(f.refclassid, f.refobjid, 0)).schema AS schema,
         pg_catalog.pg_describe_object(f.refclassid, f.refobjid, 0) AS object,
         (SELECT e.extname::text FROM pg_catalog.pg_depend x
            JOIN pg_catalog.pg_extension e ON e.oid = x.refobjid
           WHERE (x.classid, x.objid) = (f.refclassid, f.refobjid) AND x.deptype = 'e'
             AND x.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
           LIMIT 1) AS extension,
         pg_catalog.pg_describe_object(f.classid, f.objid, f.objsubid) AS used_by
  FROM found f
)
SELECT DISTINCT schema, object, extension, used_by FROM described
WHERE schema IS NOT NULL AND object IS NOT NULL AND used_by IS NOT NULL
  AND schema NOT IN ('pg_catalog', 'information_schema') AND schema NOT LIKE 'pg\\_%'
  AND schema <> ALL($1::text[])
ORDER BY 1, 2, 4",
        inside_of("nspname::text = ANY($1::text[])")
    );
    let rows = tx
        .query(&sql, &[&schemas])
        .await
        .map_err(query_error(context))?;
    tx.rollback().await.map_err(query_error(context))?;
    Ok(rows
        .iter()
        .map(|r| Use {
            schema: r.get(0),
            object: r.get(1),
            extension: r.get(2),
            used_by: r.get(3),
        })
        .collect())
}

/// A function, or a type of an extension, in a schema other than `schemas` and
/// PostgreSQL's own, that SQL run in one of `schemas` can only reach by its name through
/// `search_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachable {
    /// Its schema.
    pub schema: String,
    /// Its name, as SQL writes it unquoted (lower case).
    pub name: String,
    /// Whether it is a function (else a type).
    pub function: bool,
    /// It as PostgreSQL describes it, e.g. `function public.uuid_generate_v4()`.
    pub object: String,
    /// The extension it belongs to, if it does.
    pub extension: Option<String>,
}

/// The functions (any) and extension types in schemas other than `schemas` and
/// PostgreSQL's own whose names neither `pg_catalog` nor one of `schemas` also has (those
/// would be found without the other schema), for looking for them in migration files.
/// Read in a read-only transaction with `search_path` pinned to `pg_catalog`.
pub async fn reachable_outside(
    client: &mut Client,
    schemas: &[String],
) -> Result<Vec<Reachable>, Error> {
    let context = "listing the functions and types of other schemas";
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(query_error(context))?;
    tx.batch_execute("SET LOCAL search_path TO pg_catalog")
        .await
        .map_err(query_error(context))?;
    let rows = tx
        .query(
            "WITH other AS (
  SELECT oid, nspname::text AS nspname FROM pg_catalog.pg_namespace
  WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_%'
    AND nspname::text <> ALL($1::text[])
),
own AS (
  SELECT oid FROM pg_catalog.pg_namespace
  WHERE nspname = 'pg_catalog' OR nspname::text = ANY($1::text[])
),
found AS (
  SELECT o.nspname, p.proname::text AS name, true AS function,
         'pg_catalog.pg_proc'::pg_catalog.regclass AS classid, p.oid AS objid
  FROM pg_catalog.pg_proc p JOIN other o ON o.oid = p.pronamespace
  WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc q JOIN own ON own.oid = q.pronamespace
                    WHERE q.proname = p.proname)
  UNION ALL
  SELECT o.nspname, t.typname::text, false, 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid
  FROM pg_catalog.pg_type t JOIN other o ON o.oid = t.typnamespace
  WHERE t.typrelid = 0 AND t.typcategory <> 'A'
    AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend x
                WHERE (x.classid, x.objid) = ('pg_catalog.pg_type'::pg_catalog.regclass, t.oid)
                  AND x.deptype = 'e')
    AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type u JOIN own ON own.oid = u.typnamespace
                    WHERE u.typname = t.typname)
)
SELECT f.nspname, f.name, f.function, pg_catalog.pg_describe_object(f.classid, f.objid, 0),
       (SELECT e.extname::text FROM pg_catalog.pg_depend x
          JOIN pg_catalog.pg_extension e ON e.oid = x.refobjid
         WHERE (x.classid, x.objid) = (f.classid, f.objid) AND x.deptype = 'e'
           AND x.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
         LIMIT 1)
FROM found f ORDER BY 1, 2, 4",
            &[&schemas],
        )
        .await
        .map_err(query_error(context))?;
    tx.rollback().await.map_err(query_error(context))?;
    Ok(rows
        .iter()
        .map(|r| Reachable {
            schema: r.get(0),
            name: r.get(1),
            function: r.get(2),
            object: r.get(3),
            extension: r.get(4),
        })
        .collect())
}

/// Takes `ACCESS EXCLUSIVE` locks on the schema's tables (`ONLY` each: never on a child
/// or partition elsewhere) in the caller's transaction, so no other session can add a
/// view, foreign key, inheritance child or rule over them between [`outside`] and the
/// `DROP SCHEMA` that follows (which takes the same locks anyway). Views are not locked:
/// `LOCK` on a view also locks the tables it reads, which may live in other schemas.
/// Waits at most the session's `lock_timeout`.
pub async fn lock_relations(tx: &Transaction<'_>, schema: &str) -> Result<(), Error> {
    let rows = about(
        tx,
        schema,
        "SELECT c.relname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.oid",
        "listing the tables of schema",
    )
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = rows
        .iter()
        .map(|r| qualified(schema, &r.get::<_, String>(0)))
        .collect();
    let lock = format!(
        "LOCK TABLE ONLY {} IN ACCESS EXCLUSIVE MODE",
        names.join(", ONLY ")
    );
    tx.batch_execute(&lock).await.map_err(query_error(&format!(
        "locking the tables of schema {}",
        quote(schema)
    )))
}

/// The refusal for a drop blocked by outside dependents: names up to [`SHOWN`] of
/// them, counts the rest, says nothing was changed, then `how_to_fix`. `what` is the
/// operation, e.g. `drop schema "tenant_a"`.
pub fn refusal(what: &str, dependents: &[Dependent], how_to_fix: &str) -> String {
    let n = dependents.len();
    let shown: Vec<String> = dependents
        .iter()
        .take(SHOWN)
        .map(|d| d.to_string())
        .collect();
    let more = match n.saturating_sub(SHOWN) {
        0 => String::new(),
        k => format!("; and {k} more"),
    };
    let (objects, depend, them) = if n == 1 {
        ("object", "depends", "it")
    } else {
        ("objects", "depend", "them")
    };
    format!(
        "refusing to {what}: {n} {objects} outside it {depend} on objects in it, and DROP SCHEMA ... CASCADE would remove {them} too: {}{more}. Nothing was changed. {how_to_fix}",
        shown.join("; "),
    )
}

/// Runs a catalog query about one schema (its only parameter); `doing` names the schema
/// in the error.
async fn about<C: GenericClient>(
    client: &C,
    schema: &str,
    sql: &str,
    doing: &str,
) -> Result<Vec<tokio_postgres::Row>, Error> {
    client
        .query(sql, &[&schema])
        .await
        .map_err(|e| query_error(&format!("{doing} {}", quote(schema)))(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(i: usize) -> Dependent {
        Dependent {
            object: format!("view tenant_b.v{i}"),
            depends_on: "table tenant_a.t".into(),
        }
    }

    #[test]
    fn a_refusal_names_at_most_ten_and_counts_the_rest() {
        let deps: Vec<Dependent> = (0..13).map(dep).collect();
        let m = refusal("drop schema \"tenant_a\"", &deps, "");
        assert!(m.contains("13 objects outside it depend"), "{m}");
        assert!(
            m.contains("view tenant_b.v9 depends on table tenant_a.t"),
            "{m}"
        );
        assert!(!m.contains("v10 "), "{m}");
        assert!(m.contains("and 3 more"), "{m}");
        assert!(m.contains("Nothing was changed"), "{m}");
        let one = refusal("drop schema \"tenant_a\"", &deps[..1], "");
        assert!(one.contains("1 object outside it depends on"), "{one}");
        assert!(!one.contains("more"), "{one}");
    }
}
