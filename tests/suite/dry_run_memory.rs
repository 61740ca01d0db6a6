//! `--dry-run` streams its output tenant by tenant: the peak memory of the process stays
//! bounded by the migration files, not by files × tenants, in text and in JSON (which
//! stays one valid document).
//!
//! The child's peak RSS is measured by GNU time (`/usr/bin/time -f %M`); this bounds
//! memory, not time.

use crate::support;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use support::{tenantctl, TestDb};

/// The bound on the child's peak resident set, in KiB.
pub(crate) const PEAK_RSS_LIMIT_KIB: u64 = 50 * 1024;

/// A migrations directory with one ~5 MB migration.
fn big_migration() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let line = format!("-- {}\n", "x".repeat(76));
    let mut sql = String::from("CREATE TABLE big (id int);\n");
    sql.push_str(&line.repeat(5 * 1024 * 1024 / line.len()));
    std::fs::write(dir.path().join("V1__big.sql"), sql).unwrap();
    dir
}

/// Registers `n` tenants with empty schemas, straight in SQL (fast for many tenants).
fn fleet(db: &TestDb, n: i32) {
    db.client()
        .batch_execute(&format!(
            "INSERT INTO public.tenants (tenant_name, domain, schema_name, api_key_hash, api_key_prefix) \
             SELECT 't' || i, 't' || i, 'tenant_t' || i, encode(sha256(('key' || i)::bytea), 'hex'), 'tk_test' \
             FROM generate_series(1, {n}) AS i; \
             DO $$ BEGIN FOR i IN 1..{n} LOOP EXECUTE format('CREATE SCHEMA tenant_t%s', i); END LOOP; END $$"
        ))
        .unwrap();
}

/// Runs the binary under GNU time, hands its stdout to `read`, and returns the exit code
/// and the peak RSS in KiB (also used by the tenant data tests).
pub(crate) fn measured(
    db: &TestDb,
    migrations: &Path,
    args: &[&str],
    read: impl FnOnce(&mut dyn Read),
) -> (i32, u64) {
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "this test measures peak memory with GNU time: install it (Debian/Ubuntu: apt-get install time)"
    );
    let report = tempfile::NamedTempFile::new().unwrap();
    let report_path = report.path().to_str().unwrap();
    let (child, mut stdout) = tenantctl(db)
        .migrations(migrations)
        .wrapped_in(time, &["-o", report_path, "-f", "%M"])
        .spawn_reading_stdout(args);
    read(&mut stdout);
    // Whatever the reader left is drained so the child can finish.
    std::io::copy(&mut stdout, &mut std::io::sink()).unwrap();
    let run = child.finish();
    let text = std::fs::read_to_string(report.path()).unwrap();
    let kib: u64 = text
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no peak RSS in GNU time's report: {text:?}"));
    (run.code, kib)
}

/// Checks a dry-run document as it streams past: one valid JSON document; returns the
/// number of tenants and the total length of their SQL, without holding any of it.
struct DryRunShape;

impl<'de> Visitor<'de> for DryRunShape {
    type Value = (usize, usize);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a dry-run document")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(usize, usize), A::Error> {
        let mut out = (0, 0);
        while let Some(key) = map.next_key::<String>()? {
            if key == "tenants" {
                out = map.next_value_seed(Tenants)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for DryRunShape {
    type Value = (usize, usize);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(usize, usize), D::Error> {
        d.deserialize_map(self)
    }
}

struct Tenants;

impl<'de> serde::de::DeserializeSeed<'de> for Tenants {
    type Value = (usize, usize);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(usize, usize), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Tenants {
    type Value = (usize, usize);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the tenants")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(usize, usize), A::Error> {
        let (mut n, mut sql) = (0, 0);
        while let Some(len) = seq.next_element_seed(SqlLength)? {
            n += 1;
            sql += len;
        }
        Ok((n, sql))
    }
}

/// One tenant: the length of its `sql`.
struct SqlLength;

impl<'de> serde::de::DeserializeSeed<'de> for SqlLength {
    type Value = usize;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SqlLength {
    type Value = usize;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a tenant")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut len = 0;
        while let Some(key) = map.next_key::<String>()? {
            if key == "sql" {
                len = map.next_value::<std::borrow::Cow<'de, str>>()?.len();
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(len)
    }
}

#[test]
fn dry_run_memory_stays_bounded_whatever_the_tenant_count() {
    let db = TestDb::new();
    tenantctl(&db).run(&["init"]).expect(0);
    let dir = big_migration();
    let file_len = std::fs::metadata(dir.path().join("V1__big.sql"))
        .unwrap()
        .len() as usize;

    // Text: 100 tenants × 5 MB, about 500 MB of SQL on stdout.
    fleet(&db, 100);
    let mut headers = 0;
    let mut bytes = 0usize;
    let (code, kib) = measured(&db, dir.path(), &["upgrade", "--all", "--dry-run"], |out| {
        let mut lines = BufReader::new(out);
        let mut line = Vec::new();
        while lines.read_until(b'\n', &mut line).unwrap() > 0 {
            bytes += line.len();
            if line.starts_with(b"-- tenant t") && line.ends_with(b": base -> 1\n") {
                headers += 1;
            }
            line.clear();
        }
    });
    assert_eq!(code, 0);
    assert_eq!(headers, 100, "every tenant's SQL is printed");
    assert!(bytes > 100 * file_len, "{bytes} bytes");
    assert!(
        kib < PEAK_RSS_LIMIT_KIB,
        "text dry run of 100 tenants × 5 MB peaked at {kib} KiB (limit {PEAK_RSS_LIMIT_KIB} KiB)"
    );

    // JSON: one valid document, each tenant with the whole file, still bounded. (Fewer
    // tenants, as escaping is slow in a debug build: 15 × 5 MB is half again the bound.)
    let fifteen: Vec<String> = (1..=15).map(|i| format!("--tenant=t{i}")).collect();
    let mut args: Vec<&str> = vec!["upgrade", "--dry-run", "-o", "json"];
    args.extend(fifteen.iter().map(String::as_str));
    let mut shape = (0, 0);
    let (code, kib) = measured(&db, dir.path(), &args, |out| {
        let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(1 << 16, out));
        shape = de
            .deserialize_map(DryRunShape)
            .expect("one valid JSON document");
        de.end().expect("nothing after the document");
    });
    assert_eq!(code, 0);
    assert_eq!(shape.0, 15);
    assert!(shape.1 > 15 * file_len, "{shape:?}");
    assert!(
        kib < PEAK_RSS_LIMIT_KIB,
        "JSON dry run of 15 tenants × 5 MB peaked at {kib} KiB (limit {PEAK_RSS_LIMIT_KIB} KiB)"
    );
}
